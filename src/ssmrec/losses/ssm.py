"""The sampled softmax (SSM) loss exactly as the official SSM code computes it.

For a batch of B (user, positive item) pairs with final representations ``u_b``, ``p_b``:

    s(u, i) = cos(u, i) = uᵀi / (‖u‖‖i‖)        (or uᵀi with ``similarity="dot"``)

    L_SSM = Σ_b −log [ exp(s(u_b, p_b)/τ) / Σ_{j ∈ C_b} exp(s(u_b, j)/τ) ]
          = Σ_b ( logsumexp_{j ∈ C_b} s(u_b, j)/τ − s(u_b, p_b)/τ )

With in-batch negatives (the default) the candidate set ``C_b`` is every positive of the batch,
``{p_1, …, p_B}``: row b's own positive is in its denominator and the other B−1 positives are its
negatives, duplicates included (the official code does not mask them). When the sampler supplies
explicit negatives ``n_{b,1..M}``, ``C_b = {p_b, n_{b,1}, …, n_{b,M}}`` instead.
The log-sum-exp form is the numerically stable evaluation of the same quantity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmrec.losses.base import Objective, Reduction, Similarity, reduce, similarity


class SampledSoftmaxLoss(Objective):
    """SSM with in-batch negatives (``num_negatives=0``) or M sampled negatives per positive."""

    def __init__(
        self,
        temperature: float = 0.1,
        similarity: Similarity = "cosine",
        num_negatives: int = 0,
        reduction: Reduction = "sum",
    ) -> None:
        super().__init__(reduction)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
        self.temperature = temperature
        self.similarity: Similarity = similarity
        self.num_negatives = num_negatives

    def logits(self, users: Tensor, positives: Tensor, negatives: Tensor | None) -> tuple[Tensor, Tensor]:
        """Logits ``s/τ`` over each row's candidates and the column of each row's positive."""
        if negatives is None:
            logits = similarity(users, positives, self.similarity, pairwise=True)
            target = torch.arange(len(users), device=users.device)
        else:
            pos = similarity(users, positives, self.similarity, pairwise=False).unsqueeze(1)
            neg = similarity(users.unsqueeze(1), negatives, self.similarity, pairwise=True).squeeze(1)
            logits = torch.cat([pos, neg], dim=1)
            target = torch.zeros(len(users), dtype=torch.long, device=users.device)
        return logits / self.temperature, target

    def forward(self, users: Tensor, positives: Tensor, negatives: Tensor | None) -> Tensor:
        logits, target = self.logits(users, positives, negatives)
        return reduce(F.cross_entropy(logits, target, reduction="none"), self.reduction)
