"""What every recommender model in ssmrec provides to the losses, the trainer and the evaluator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Recommender(nn.Module):
    """Ego (layer-0) embedding tables plus an encoder that turns them into final representations.

    Two entry points, because training and ranking need different amounts of work:
    ``encode(users, items)`` returns the final representations of just the rows a batch needs
    (models may compute them without touching the rest of the graph), while ``forward()`` returns
    all final representations at once for full ranking.
    The paper's L2 regulariser acts on the ego embeddings, hence ``ego(users, items)``.
    """

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        if n_users <= 0 or n_items <= 0 or dim <= 0:
            raise ValueError(f"n_users, n_items and dim must be positive, got {n_users}, {n_items}, {dim}")
        self.n_users = n_users
        self.n_items = n_items
        self.dim = dim
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        # Xavier-uniform, as the official SSM and LightGCN code initialise their tables.
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    def ego(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """Layer-0 embeddings of the given users and items (what the regulariser penalises).

        Gathered with sparse gradients: the regulariser touches a few thousand rows, and a sparse
        gradient is added into the encoder's dense table gradient row by row, where a dense one would
        zero-fill and add both full tables every step (LightGCN-1L+SSM on Gowalla: backward 16 → 12.7 ms
        per batch, ``benchmarks/profile_step.py``). Not for encoding: an optimiser needs a dense gradient,
        which the encoder provides (the trainer densifies a table that got only this one).
        """
        return (
            F.embedding(users, self.user_embedding.weight, sparse=True),
            F.embedding(items, self.item_embedding.weight, sparse=True),
        )

    def forward(self) -> tuple[Tensor, Tensor]:
        """Final representations of all users and all items."""
        raise NotImplementedError

    def encode(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """Final representations of the given users and items (default: index the full forward)."""
        all_users, all_items = self()
        return all_users[users], all_items[items]

    @torch.no_grad()
    def representations(self) -> tuple[Tensor, Tensor]:
        """Final representations without autograd, for evaluation and analysis."""
        was_training = self.training
        self.eval()
        try:
            users, items = self()
        finally:
            self.train(was_training)
        return users.detach(), items.detach()
