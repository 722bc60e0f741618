"""What a training objective receives, and the pieces every objective shares.

An objective sees final representations: ``users`` (B×d), ``positives`` (B×d) and ``negatives``
(B×M×d per row, M×d shared by the batch, or ``None``), plus an optional :class:`ssmrec.batch.Batch`
with the ids and side information some objectives need (masking accidental hits, logQ, all items,
per-user temperatures). Keeping the model out of the loss is what lets any model train with any loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from ssmrec.batch import Batch

if TYPE_CHECKING:
    from ssmrec.models.base import Recommender

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


def masked_logsumexp(values: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Row-wise ``log Σ_{keep} exp(values)`` and which rows keep anything (``None``: all entries kept).

    Rows that keep nothing get 0 with zero gradient instead of −inf (whose gradient is NaN); callers
    zero those rows' losses.
    """
    if keep is None:
        return torch.logsumexp(values, dim=1), None
    nonempty = keep.any(dim=1)
    masked = values.masked_fill(~keep, float("-inf"))
    masked = torch.where(nonempty.unsqueeze(1), masked, torch.zeros_like(masked))
    return torch.logsumexp(masked, dim=1), nonempty


def masked_mean(values: Tensor, keep: Tensor | None) -> Tensor:
    """Row-wise mean over the kept entries (0 for a row that keeps nothing)."""
    if keep is None:
        return values.mean(dim=1)
    kept = keep.to(values.dtype)
    return (values * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1.0)


@dataclass(frozen=True)
class EpochContext:
    """What an objective may look at before an epoch (Adap-τ derives its temperatures from it)."""

    epoch: int
    """1-based index of the epoch about to start."""
    model: Recommender
    train: sp.csr_matrix


class Objective(torch.nn.Module):
    """Base class of the training losses.

    ``num_negatives`` is the number of sampled negatives the loss was built for (the sampler decides
    what is drawn; this is kept for callers that build a sampler from the loss). Subclasses with
    learnable parameters register them as ``nn.Parameter``: the trainer optimises
    ``model.parameters()`` and ``objective.parameters()`` together.
    """

    num_negatives: int = 0
    similarity: Similarity = "dot"
    """How representations are compared; with ``"cosine"`` the trainer normalises each distinct row once."""
    needs_all_items: bool = False
    """The objective reads ``batch.all_items()`` (the trainer then runs one full forward per step)."""
    carries_batch_state: bool = False
    """``forward`` updates state from every row it sees (Adap-τ's per-user loss sums): with several
    processes each must then see the whole batch (:mod:`ssmrec.parallel`)."""

    def __init__(self, reduction: Reduction = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction: Reduction = reduction

    def forward(
        self, users: Tensor, positives: Tensor, negatives: Tensor | None, batch: Batch | None = None
    ) -> Tensor:
        raise NotImplementedError

    def begin_epoch(self, context: EpochContext) -> None:
        """Called by the trainer before every epoch; stateless objectives ignore it."""

    def scoring(self) -> tuple[str, float] | None:
        """(similarity, temperature) of the softmax this loss trains, for analyses that score runs the
        way they were trained; ``None`` for losses that are not a softmax over candidates."""
        return None

    def checkpoint_tensors(self) -> dict[str, Tensor]:
        """The objective's tensors a resumed run needs: its parameters (a learnable τ), and in
        subclasses any state carried between steps (Adap-τ's per-user temperatures and loss sums)."""
        return dict(self.state_dict())

    def checkpoint_values(self) -> dict[str, Any]:
        """Non-tensor state a resumed run needs (JSON); none for stateless objectives."""
        return {}

    def restore_checkpoint(self, tensors: dict[str, Tensor], values: dict[str, Any]) -> None:
        """Inverse of :meth:`checkpoint_tensors` and :meth:`checkpoint_values`."""
        self.load_state_dict(tensors)
