"""Bayesian personalised ranking (Rendle et al., UAI 2009).

With one negative ``n_b`` drawn uniformly from the items user b has not interacted with in training:

    L_BPR = Σ_b −log σ(u_bᵀp_b − u_bᵀn_b) = Σ_b softplus(u_bᵀn_b − u_bᵀp_b)

(mean instead of sum with ``reduction="mean"``, as LightGCN-PyTorch). With M > 1 negatives each
(user, positive, negative) triple contributes one term, averaged over the row's negatives (masked
accidental hits left out of the average). Scores are inner products, as in BPR-MF and LightGCN.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ssmrec.batch import Batch
from ssmrec.losses.base import Objective, Reduction, masked_mean, reduce
from ssmrec.losses.candidates import EXCLUDE, score_candidates


class BPRLoss(Objective):
    """Pairwise BPR with inner-product scores."""

    def __init__(self, num_negatives: int = 1, reduction: Reduction = "mean", exclude: str = "none") -> None:
        super().__init__(reduction)
        if num_negatives < 1:
            raise ValueError(f"BPR needs at least one negative per positive, got {num_negatives}")
        if exclude not in EXCLUDE:
            raise ValueError(f"exclude must be one of {', '.join(EXCLUDE)}, got {exclude!r}")
        self.num_negatives = num_negatives
        self.exclude = exclude

    def forward(
        self, users: Tensor, positives: Tensor, negatives: Tensor | None, batch: Batch | None = None
    ) -> Tensor:
        if negatives is None and (batch is None or not batch.in_batch):
            raise ValueError("BPR needs sampled negatives (or in-batch ones through a Batch)")
        candidates = score_candidates(users, positives, negatives, batch, "dot", self.exclude)
        scores, keep = candidates.negatives()
        per_pair = F.softplus(scores - candidates.positive.unsqueeze(1))
        return reduce(masked_mean(per_pair, keep), self.reduction)

    def extra_repr(self) -> str:
        return f"num_negatives={self.num_negatives}, exclude={self.exclude}, reduction={self.reduction}"
