"""Row-wise ``log Σ_j exp(u_b · v_j / τ)`` of a product, in column chunks: the kernel of the softmax losses.

The full softmax takes it over all items, in-batch SSM over the batch's positives (and shared
negatives). One autograd function with a hand-written backward does it chunk by chunk: the forward
keeps only each row's running log-sum, and the backward recomputes a chunk's B × chunk logits and
turns them into the softmax weights in place (``∂L/∂s_bj = g_b · exp(s_bj − lse_b)``), so memory stays
at one chunk while values and gradients are those of the unchunked computation. (row, column) pairs
can be dropped from the sum (masked accidental hits, the positive in the SL form); a row with every
column dropped gets −inf and no gradient. τ is folded into the user rows before the product (one
B × d division instead of one per logit), which also carries a learnable τ's gradient through autograd.
A constant per-column offset can be subtracted from every logit (the sampler's log q, for the logQ
correction of in-batch negatives); it takes no gradient.

A chunk of 512 columns keeps a B × 512 block of logits in cache: one MF full-softmax step on Gowalla
(B = 2048) took 280 ms with it against 568 ms with 4096-column chunks
(``python benchmarks/profile_step.py --loss softmax --model mf [--set softmax_chunk_size=4096]``), and
the in-batch SSM loss of a 2048-row batch runs faster chunked than as one 2048 × 2048 log-softmax
(see :mod:`ssmrec.losses.ssm`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssmrec.device import to_device

Temperature = float | Tensor


def _drop_indices(
    drop_rows: np.ndarray, drop_items: np.ndarray, n_items: int, chunk: int, device: torch.device
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
            else (
                to_device(torch.from_numpy(drop_rows[low:high]), device),
                to_device(torch.from_numpy(drop_items[low:high] - start), device),
            )
        )
    return pieces


class _ChunkedLogSumExp(torch.autograd.Function):
    """``log Σ_j exp(users_b · items_j)`` over item chunks, dropped pairs left out; see the module doc."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        users: Tensor,
        items: Tensor,
        drops: list[tuple[Tensor, Tensor] | None],
        chunk: int,
        offsets: Tensor | None,
    ) -> Tensor:
        log_sum = torch.full((users.shape[0],), float("-inf"), dtype=users.dtype, device=users.device)
        for index, start in enumerate(range(0, items.shape[0], chunk)):
            logits = _chunk_logits(users, items, start, chunk, drops[index], offsets)
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(logits, dim=1))
        ctx.save_for_backward(users, items, log_sum)
        ctx.drops, ctx.chunk, ctx.offsets = drops, chunk, offsets
        return log_sum

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:  # type: ignore[override]
        users, items, log_sum = ctx.saved_tensors
        # a row with every item dropped has log-sum −inf and, as in the masked softmax, no gradient
        finite = torch.isfinite(log_sum)
        shift = torch.where(finite, log_sum, torch.zeros_like(log_sum)).unsqueeze(1)
        scale = torch.where(finite, grad, torch.zeros_like(grad)).unsqueeze(1)
        grad_users = torch.zeros_like(users) if ctx.needs_input_grad[0] else None
        grad_items = torch.empty_like(items) if ctx.needs_input_grad[1] else None
        for index, start in enumerate(range(0, items.shape[0], ctx.chunk)):
            block = items[start : start + ctx.chunk]
            logits = _chunk_logits(users, items, start, ctx.chunk, ctx.drops[index], ctx.offsets)
            weights = logits.sub_(shift).exp_().mul_(scale)
            if grad_users is not None:
                grad_users.addmm_(weights, block)
            if grad_items is not None:
                torch.mm(weights.T, users, out=grad_items[start : start + ctx.chunk])
        return grad_users, grad_items, None, None, None


def _chunk_logits(
    users: Tensor,
    items: Tensor,
    start: int,
    chunk: int,
    drop: tuple[Tensor, Tensor] | None,
    offsets: Tensor | None,
) -> Tensor:
    """The logits of columns ``start:start + chunk``, offsets subtracted, dropped pairs at −inf."""
    logits = users @ items[start : start + chunk].T
    if offsets is not None:
        logits -= offsets[start : start + chunk]
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
    offsets: Tensor | None = None,
) -> Tensor:
    """Row-wise ``log Σ_j exp(users_b · items_j / τ − offsets_j)`` over all items except the (row, item)
    pairs dropped; ``offsets`` (n_items,) are constants (no gradient reaches them)."""
    n_items = items.shape[0]
    if offsets is not None:
        if offsets.shape != (n_items,):
            raise ValueError(f"offsets must have shape ({n_items},), got {tuple(offsets.shape)}")
        offsets = offsets.detach().to(users.dtype)
    chunk = n_items if chunk_size is None or chunk_size >= n_items else chunk_size
    rows, items_dropped = drop_rows.astype(np.int64), drop_items.astype(np.int64)
    drops = _drop_indices(rows, items_dropped, n_items, chunk, users.device)
    return _ChunkedLogSumExp.apply(users / tau, items, drops, chunk, offsets)
