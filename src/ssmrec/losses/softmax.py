"""The full softmax over all items, computed exactly in item chunks: the oracle of the sampled versions.

    L = Σ_b ( log Σ_{j=1..n_items} exp(s(u_b, j)/τ) − s(u_b, p_b)/τ )

with the SSM family's similarity, temperature (fixed or learnable), reduction and denominator option
(``positive_in_denominator=False`` removes p_b from the sum) and ``exclude="train"`` (the user's other
training items leave the sum; ``duplicates`` is a no-op here: every item is one column).

The log-sum over items is taken chunk by chunk (``chunk_size`` items at a time) by one autograd
function with a hand-written backward: the forward keeps only each row's running log-sum, and the
backward recomputes a chunk's B × chunk logits and turns them into the softmax weights in place
(``∂L/∂s_bj = g_b · exp(s_bj − lse_b)``), so memory stays at one chunk while values and gradients are
those of the unchunked computation. τ is folded into the user rows before the product (one B × d
division instead of one per logit), which also carries a learnable τ's gradient through autograd.
The default chunk of 512 items keeps a B × 512 block of logits in cache: one MF step on Gowalla
(B = 2048) took 280 ms with it against 568 ms with 4096-item chunks
(``python benchmarks/profile_step.py --loss softmax --model mf [--set softmax_chunk_size=4096]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssmrec.batch import Batch
from ssmrec.losses.base import Reduction, Similarity, reduce
from ssmrec.losses.ssm import SampledSoftmaxLoss, Temperature


def _drop_indices(
    drop_rows: np.ndarray, drop_items: np.ndarray, n_items: int, chunk: int
) -> list[tuple[Tensor, Tensor] | None]:
    """Per item chunk, the (row, column-in-chunk) pairs to leave out of the log-sum (``None``: none)."""
    order = np.argsort(drop_items, kind="stable")
    drop_rows, drop_items = drop_rows[order], drop_items[order]
    bounds = np.searchsorted(drop_items, np.arange(0, n_items + chunk, chunk).clip(max=n_items))
    pieces: list[tuple[Tensor, Tensor] | None] = []
    for index, start in enumerate(range(0, n_items, chunk)):
        low, high = bounds[index], bounds[index + 1]
        pieces.append(
            None
            if high == low
            else (torch.from_numpy(drop_rows[low:high]), torch.from_numpy(drop_items[low:high] - start))
        )
    return pieces


class _ChunkedLogSumExp(torch.autograd.Function):
    """``log Σ_j exp(users_b · items_j)`` over item chunks, dropped pairs left out; see the module doc."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, users: Tensor, items: Tensor, drops: list[tuple[Tensor, Tensor] | None], chunk: int
    ) -> Tensor:
        log_sum = torch.full((users.shape[0],), float("-inf"), dtype=users.dtype, device=users.device)
        for index, start in enumerate(range(0, items.shape[0], chunk)):
            logits = _chunk_logits(users, items[start : start + chunk], drops[index])
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(logits, dim=1))
        ctx.save_for_backward(users, items, log_sum)
        ctx.drops, ctx.chunk = drops, chunk
        return log_sum

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        users, items, log_sum = ctx.saved_tensors
        # a row with every item dropped has log-sum −inf and, as in the masked softmax, no gradient
        finite = torch.isfinite(log_sum)
        shift = torch.where(finite, log_sum, torch.zeros_like(log_sum)).unsqueeze(1)
        scale = torch.where(finite, grad, torch.zeros_like(grad)).unsqueeze(1)
        grad_users = torch.zeros_like(users) if ctx.needs_input_grad[0] else None
        grad_items = torch.empty_like(items) if ctx.needs_input_grad[1] else None
        for index, start in enumerate(range(0, items.shape[0], ctx.chunk)):
            block = items[start : start + ctx.chunk]
            weights = _chunk_logits(users, block, ctx.drops[index]).sub_(shift).exp_().mul_(scale)
            if grad_users is not None:
                grad_users.addmm_(weights, block)
            if grad_items is not None:
                torch.mm(weights.T, users, out=grad_items[start : start + ctx.chunk])
        return grad_users, grad_items, None, None


def _chunk_logits(users: Tensor, items: Tensor, drop: tuple[Tensor, Tensor] | None) -> Tensor:
    logits = users @ items.T
    if drop is not None:
        logits[drop] = float("-inf")
    return logits


def chunked_logsumexp(
    users: Tensor,
    items: Tensor,
    tau: Temperature,
    drop_rows: np.ndarray,
    drop_items: np.ndarray,
    chunk_size: int | None,
) -> Tensor:
    """Row-wise ``log Σ_j exp(users_b · items_j / τ)`` over all items except the (row, item) pairs dropped."""
    n_items = items.shape[0]
    chunk = n_items if chunk_size is None or chunk_size >= n_items else chunk_size
    drops = _drop_indices(drop_rows.astype(np.int64), drop_items.astype(np.int64), n_items, chunk)
    return _ChunkedLogSumExp.apply(users / tau, items, drops, chunk)


class FullSoftmaxLoss(SampledSoftmaxLoss):
    """Softmax cross-entropy over every item (formula in the module docstring); needs all items."""

    needs_all_items = True

    def __init__(
        self,
        temperature: float = 0.1,
        similarity: Similarity = "cosine",
        reduction: Reduction = "sum",
        exclude: str = "none",
        positive_in_denominator: bool = True,
        learn_temperature: bool = False,
        chunk_size: int | None = 512,
    ) -> None:
        super().__init__(
            temperature=temperature,
            similarity=similarity,
            reduction=reduction,
            exclude=exclude,
            positive_in_denominator=positive_in_denominator,
            learn_temperature=learn_temperature,
        )
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

    def forward(
        self, users: Tensor, positives: Tensor, negatives: Tensor | None, batch: Batch | None = None
    ) -> Tensor:
        if batch is None or batch.all_items is None:
            raise ValueError("the full softmax needs all item representations (batch.all_items)")
        items = batch.all_items()
        if self.similarity == "cosine":
            users, positives, items = (F.normalize(t, dim=-1) for t in (users, positives, items))
        tau = self.temperature
        positive_logit = (users * positives).sum(dim=-1) / tau
        drop_rows, drop_items = self._dropped(batch)
        log_sum = chunked_logsumexp(users, items, tau, drop_rows, drop_items, self.chunk_size)
        return reduce(log_sum - positive_logit, self.reduction)

    def _dropped(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) pairs left out of the log-sum: other training items, and the positive in SL form."""
        positives = batch.positives.numpy().astype(np.int64)
        rows = [np.empty(0, dtype=np.int64)]
        items = [np.empty(0, dtype=np.int64)]
        if self.exclude == "train":
            if batch.training is None:
                raise ValueError("exclude='train' needs the training set in the batch")
            train_rows, train_items = batch.training.entries(batch.users.numpy())
            other = train_items != positives[train_rows]
            rows.append(train_rows[other])
            items.append(train_items[other])
        if not self.positive_in_denominator:
            rows.append(np.arange(len(positives), dtype=np.int64))
            items.append(positives)
        return np.concatenate(rows), np.concatenate(items)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk_size={self.chunk_size}"
