"""Matrix factorisation: the final representation is the ego embedding itself."""

from __future__ import annotations

from torch import Tensor

from ssmrec.models.base import Recommender


class MF(Recommender):
    """Plain MF. Under cosine SSM its representation magnitudes carry no signal (the paper's point)."""

    def forward(self) -> tuple[Tensor, Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight

    def encode(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        return self.user_embedding(users), self.item_embedding(items)
