"""Bayesian personalised ranking (Rendle et al., UAI 2009).

With one negative ``n_b`` drawn uniformly from the items user b has not interacted with in training:

    L_BPR = Σ_b −log σ(u_bᵀp_b − u_bᵀn_b) = Σ_b softplus(u_bᵀn_b − u_bᵀp_b)

(mean instead of sum with ``reduction="mean"``, as LightGCN-PyTorch). With M > 1 negatives each
(user, positive, negative) triple contributes one term, averaged over the M negatives of a row.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ssmrec.losses.base import Objective, Reduction, reduce


class BPRLoss(Objective):
    """Pairwise BPR with inner-product scores."""

    def __init__(self, num_negatives: int = 1, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        if num_negatives < 1:
            raise ValueError(f"BPR needs at least one negative per positive, got {num_negatives}")
        self.num_negatives = num_negatives

    def forward(self, users: Tensor, positives: Tensor, negatives: Tensor | None) -> Tensor:
        if negatives is None:
            raise ValueError("BPR needs sampled negatives")
        pos = (users * positives).sum(-1, keepdim=True)
        neg = (users.unsqueeze(1) * negatives).sum(-1)
        return reduce(F.softplus(neg - pos).mean(dim=1), self.reduction)
