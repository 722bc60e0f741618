"""Cosine contrastive loss (CCL) of SimpleX (Mao et al., CIKM 2021).

With cosine scores, margin m and negative weight w:

    L_CCL = Σ_b ( (1 − cos(u_b, p_b)) + (w / |N_b|) · Σ_{j ∈ N_b} max(0, cos(u_b, j) − m) )

(mean over the batch by default, as the authors' ``CosineContrastiveLoss``,
github.com/reczoo/RecBox ``deem/pytorch/losses/cosine_contrastive_loss.py``; ``negative_weight=None``
sums the negative terms instead). Since a cosine is at most 1, ``relu(1 − cos)`` is ``1 − cos``.
Only negatives more similar than m are pushed away, and w balances the many negatives against the one
positive: SimpleX's MF-CCL on Gowalla uses m = 0.9, w = 150, M = 800.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssmrec.losses.base import Reduction
from ssmrec.losses.pointwise import PointwiseLoss


class CosineContrastiveLoss(PointwiseLoss):
    """CCL (formula in the module docstring)."""

    similarity = "cosine"

    def __init__(
        self,
        margin: float = 0.9,
        negative_weight: float | None = 150.0,
        num_negatives: int = 800,
        reduction: Reduction = "mean",
        exclude: str = "none",
    ) -> None:
        super().__init__(num_negatives, reduction, negative_weight, exclude)
        if not -1.0 <= margin < 1.0:
            raise ValueError(f"margin must be a cosine in [-1, 1), got {margin}")
        self.margin = margin

    def positive_term(self, scores: Tensor) -> Tensor:
        return torch.relu(1.0 - scores)

    def negative_term(self, scores: Tensor) -> Tensor:
        return torch.relu(scores - self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin:g}, {super().extra_repr()}"
