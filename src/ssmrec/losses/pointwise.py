"""Pointwise losses on a positive and M sampled negatives, and the piece they share with CCL.

Every row is a positive with target 1 and its negatives with target 0:

    L = Σ_b ( φ₊(s(u_b, p_b)) + w · mean_{j ∈ N_b} φ₋(s(u_b, j)) )

with ``w = |N_b|`` (each negative one term, the default: ``negative_weight=None``) or a fixed weight w.

* BCE, the pointwise log loss of NCF (He et al., WWW 2017): s = uᵀi, φ₊(s) = −log σ(s) = softplus(−s),
  φ₋(s) = −log(1 − σ(s)) = softplus(s).
* MSE with targets 1/0: s = uᵀi, φ₊(s) = (s − 1)², φ₋(s) = s².
* CCL is the same shape with cosine scores and hinge terms (:mod:`ssmrec.losses.ccl`).

Masked accidental hits (``exclude``) are left out of the sum or mean.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ssmrec.batch import Batch
from ssmrec.losses.base import Objective, Reduction, Similarity, masked_mean, reduce
from ssmrec.losses.candidates import EXCLUDE, score_candidates


class PointwiseLoss(Objective):
    """``φ₊(positive) + w · mean φ₋(negatives)`` per row; subclasses define φ₊, φ₋ and the score."""

    similarity: Similarity = "dot"

    def __init__(
        self,
        num_negatives: int = 1,
        reduction: Reduction = "mean",
        negative_weight: float | None = None,
        exclude: str = "none",
    ) -> None:
        super().__init__(reduction)
        if num_negatives < 1:
            raise ValueError(
                f"{type(self).__name__} needs at least one negative per positive, got {num_negatives}"
            )
        if negative_weight is not None and negative_weight < 0:
            raise ValueError(f"negative_weight must be >= 0, got {negative_weight}")
        if exclude not in EXCLUDE:
            raise ValueError(f"exclude must be one of {', '.join(EXCLUDE)}, got {exclude!r}")
        self.num_negatives = num_negatives
        self.negative_weight = negative_weight
        self.exclude = exclude

    def positive_term(self, scores: Tensor) -> Tensor:
        raise NotImplementedError

    def negative_term(self, scores: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self, users: Tensor, positives: Tensor, negatives: Tensor | None, batch: Batch | None = None
    ) -> Tensor:
        if negatives is None and (batch is None or not batch.in_batch):
            raise ValueError(
                f"{type(self).__name__} needs sampled negatives (or in-batch ones through a Batch)"
            )
        candidates = score_candidates(users, positives, negatives, batch, self.similarity, self.exclude)
        scores, keep = candidates.negatives()
        terms = self.negative_term(scores)
        if self.negative_weight is None:
            negative = terms.sum(dim=1) if keep is None else (terms * keep).sum(dim=1)
        else:
            negative = self.negative_weight * masked_mean(terms, keep)
        return reduce(self.positive_term(candidates.positive) + negative, self.reduction)

    def extra_repr(self) -> str:
        return (
            f"num_negatives={self.num_negatives}, negative_weight={self.negative_weight}, "
            f"exclude={self.exclude}, reduction={self.reduction}"
        )


class BCELoss(PointwiseLoss):
    """Binary cross-entropy on inner products: softplus(−s₊) + Σ softplus(s₋)."""

    def positive_term(self, scores: Tensor) -> Tensor:
        return F.softplus(-scores)

    def negative_term(self, scores: Tensor) -> Tensor:
        return F.softplus(scores)


class MSELoss(PointwiseLoss):
    """Squared error to targets 1 (positive) and 0 (negatives) on inner products."""

    def positive_term(self, scores: Tensor) -> Tensor:
        return (scores - 1.0).pow(2)

    def negative_term(self, scores: Tensor) -> Tensor:
        return scores.pow(2)
