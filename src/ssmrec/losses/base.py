"""What a training objective receives, and the pieces every objective shares.

An objective sees final representations only: ``users`` (B×d), ``positives`` (B×d) and, when it asks
the sampler for them (``num_negatives > 0``), ``negatives`` (B×M×d). Keeping the model out of the loss
is what lets any model train with any loss.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["sum", "mean"]
Similarity = Literal["cosine", "dot"]


def reduce(per_row: Tensor, reduction: Reduction) -> Tensor:
    """Sum (the official SSM code) or mean (LightGCN-PyTorch's BPR) over the batch."""
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.mean()
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def l2_penalty(reg: float, tensors: tuple[Tensor, ...], batch_size: int, reduction: Reduction) -> Tensor:
    """``reg/2 · Σ‖e‖²`` over the batch's ego embeddings, divided by B when the loss is a mean.

    This is TensorFlow's ``reg * l2_loss(...)`` of the official SSM code (sum reduction) and
    LightGCN-PyTorch's ``weight_decay * ½(‖u‖²+‖p‖²+‖n‖²)/B`` (mean reduction).
    """
    total = sum(t.pow(2).sum() for t in tensors)
    penalty = reg / 2 * total
    return penalty / batch_size if reduction == "mean" else penalty


def similarity(a: Tensor, b: Tensor, kind: Similarity, pairwise: bool) -> Tensor:
    """Row-wise (``pairwise=False``, matching shapes) or all-pairs (``a @ bᵀ``) similarity.

    Cosine normalises each representation to unit length first (ε = 1e-12 as in ``F.normalize``),
    which is why cosine SSM cannot learn magnitudes.
    """
    if kind == "cosine":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    elif kind != "dot":
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {kind!r}")
    if pairwise:
        return a @ b.transpose(-1, -2)
    return (a * b).sum(dim=-1)


class Objective(torch.nn.Module):
    """Base class of the training losses. ``num_negatives`` tells the sampler what to draw."""

    num_negatives: int = 0

    def __init__(self, reduction: Reduction = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction: Reduction = reduction

    def forward(self, users: Tensor, positives: Tensor, negatives: Tensor | None) -> Tensor:
        raise NotImplementedError
