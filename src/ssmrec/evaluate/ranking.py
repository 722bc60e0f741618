"""Exact full-ranking top-K over all items: the one ranking engine behind evaluation and recommendation.

What "exact" means here
-----------------------
The score of user ``u`` and item ``i`` is the **canonical fp32 score** ``c(u, i)``: the products
``u_j * i_j`` rounded to fp32, then summed by a fixed pairwise tree (halves added elementwise, see
:func:`canonical_scores`). Every operation is one IEEE fp32 operation in an order that does not depend
on the BLAS library, the chunk size, the number of threads or the batch an item is scored in, so the
same embeddings always give the same ranking. ``score="cosine"`` applies the same to the
L2-normalised embeddings. The top-K list is ordered by (canonical score descending, item index
ascending): **among equal scores the lower item index ranks first**. Items excluded for a user get
``-inf`` and never appear; a user with fewer than K rankable items gets a shorter list, padded with ``-1``.

How it is computed fast
-----------------------
A full score matrix is only used to find *candidates*. It is a GEMM, fp32 or bf16 (``precision``), and
every coarse score ``g(u, i)`` it gives has a proven bound ``|g - c| <= e(u, i) <= E(u)`` (see
:class:`_ErrorModel`). Per user:

1. The items are split into G groups (``Ranker._screen``); the m groups with the largest maxima are taken
   (m = K plus a margin). Every item outside them has ``g <= t``, the m-th largest group maximum.
2. The K best group maxima are K distinct items with ``c >= g - e``, so the K-th largest canonical score
   is ``c_(K) >= L = min over them of (g - e)``.
3. An item can be in the canonical top K (or tie with its last entry) only if ``g + e >= L``. If
   ``t + rel |t| + E < L`` (``rel``: rounding of the GEMM output) no item outside the taken groups can;
   the candidates are the items of the taken groups with ``g + e >= L``, usually K plus a few.
4. The candidates are rescored canonically and sorted by (score desc, index asc): the exact top K.

A row that fails the test of step 3 (a near-tie wider than the margin) is retried with 4x more groups,
then with an fp32 GEMM (tighter bound), and finally by rescoring every item of the row with
``g + E >= L`` (many exact ties). So the result never depends on ``precision`` or ``chunk_size``; they only
change the work done. Every rescored pair is also checked against its bound: a violation (a matmul that
does not accumulate in fp32 as oneDNN / MKL document) makes the call warn and redo the work in fp32.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

Score = Literal["dot", "cosine"]
Precision = Literal["auto", "bf16", "fp32"]

SCORE_BUDGET_BYTES = 256 * 2**20
"""Memory cap for one chunk's coarse score matrix (``chunk_size * n_items * 4`` bytes, fp32)."""

DEFAULT_MAX_CHUNK = 128
"""Default chunks stay small: less memory, and the scores are scanned while mostly still cached."""

DEVICE_MAX_CHUNK = 8192
"""Largest default chunk on an accelerator (Gowalla's 29,858 users in 4 chunks)."""
DEVICE_BYTES_PER_SCORE = 16
"""Worst-case bytes per (user, item) entry of a chunk: 4 of fp32 coarse scores, up to 12 more when
many rows tie (see :func:`ssmrec.evaluate.evaluate_ranking`)."""

AUTO_BF16_MIN_ITEMS = 4096
"""``precision="auto"`` considers bf16 candidates only from this many items on."""

_U_FP32 = 2.0**-24  # unit roundoff of fp32, round to nearest (our own elementwise operations)
_U_FP32_ANY = 2.0**-23  # covers any faithful rounding, for accumulations inside kernels we do not own
_U_BF16 = 2.0**-8  # unit roundoff of bf16 (8 significand bits), round to nearest even
_TINY = 2.0**-126  # smallest normal fp32 / bf16: flushing a subnormal loses less than this
_SLACK = 2.0**-30  # relative margin for the float64 arithmetic of the bounds themselves
_RESCORE_ELEMENTS = 1 << 22  # gathered (pair x dim) fp32 elements per rescoring batch: 16 MiB
_MAX_SCORE_SCALE = 1e36  # |u| |i| above this could overflow fp32 / bf16 scores
_BLOCK = 16  # items per group, and groups per super-group (fewer when there are too few groups)
_PAD = _BLOCK * _BLOCK  # the catalogue is padded to a multiple of this, so both levels tile it
_GROUPS_PER_TAKEN = 4  # groups (super-groups) are made smaller until there are this many per taken one
_BLOCK_MIN_ITEMS = 2048  # smaller catalogues: one item per group (a plain top-m)
_MARGIN = {"fp32": 8, "bf16": 32}  # groups taken beyond K; bf16 near-ties are wider


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, restoring the previous count afterwards.

    The ranking runs its many small per-chunk operations on one thread: an OpenMP parallel region
    costs microseconds on an idle machine but a scheduler time slice (~10 ms, measured: a 230k-element
    elementwise op took 16 ms on 2 threads vs 0.16 ms on 1) when another process occupies a core.
    Only the GEMM uses torch's thread count (the group-maximum pass, memory-bound, lost 6x on two
    threads under load and gains little without).
    The setting is process-wide: do not run torch work in other Python threads meanwhile.
    """
    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != previous:
            torch.set_num_threads(previous)


def _gamma(n: int, unit: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): bound on the relative error of n rounded operations."""
    if n * unit >= 0.5:
        raise ValueError(f"embedding dimension {n} too large for the fp32 error bound")
    return n * unit / (1.0 - n * unit)


def default_chunk_size(n_items: int, budget_bytes: int = SCORE_BUDGET_BYTES) -> int:
    """Users per chunk: ``DEFAULT_MAX_CHUNK``, fewer if a chunk's fp32 scores exceed ``budget_bytes``."""
    return max(1, min(DEFAULT_MAX_CHUNK, budget_bytes // (4 * max(1, n_items))))


def device_chunk_size(n_items: int, free_bytes: int, max_chunk: int = DEVICE_MAX_CHUNK) -> int:
    """Users per chunk on an accelerator with ``free_bytes`` free: a GPU wants large chunks (fewer,
    larger kernels), bounded so the worst case of a chunk, ``DEVICE_BYTES_PER_SCORE`` bytes per
    (user, item) entry (coarse scores plus the tie fallback's copies), uses at most half the free memory.
    A 1 M-item catalogue on a GPU with 100 GiB free gets 3,355 users per chunk."""
    budget = free_bytes // 2
    return max(1, min(max_chunk, budget // (DEVICE_BYTES_PER_SCORE * max(1, n_items))))


def chunk_size_for(device: torch.device, n_items: int) -> int:
    """The default chunk size on ``device``: :func:`default_chunk_size` on the CPU, from the free
    memory (``torch.cuda.mem_get_info``) on CUDA."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return device_chunk_size(n_items, int(free))
    return default_chunk_size(n_items)


def canonical_scores(users: Tensor, items: Tensor) -> Tensor:
    """The canonical fp32 scores ``c(u, i)`` of broadcastable ``(..., d)`` fp32 tensors, reduced over ``d``.

    Products are rounded to fp32, then summed pairwise: the first half of the remaining terms is added
    elementwise to the second half (an odd last term is carried) until one is left. Elementwise torch
    ops are single IEEE operations, so the value of a pair never depends on how many pairs are scored
    together — unlike a GEMM or ``torch.sum``, whose blocking may change with the shape. With
    ``t = 1 + ceil(log2 d)`` rounded operations per result, ``|c - u.i| <= gamma_t * sum_j |u_j i_j|``.
    """
    terms = users * items
    while terms.shape[-1] > 1:
        half = terms.shape[-1] // 2
        summed = terms[..., :half] + terms[..., half : 2 * half]
        terms = torch.cat([summed, terms[..., 2 * half :]], dim=-1) if terms.shape[-1] % 2 else summed
    return terms[..., 0]


@dataclass(frozen=True)
class _ErrorModel:
    """``|g(u, i) - c(u, i)| <= sum_f user_factors[f, u] item_factors[f, i] + rel |g(u, i)| + absolute``.

    ``g`` is the coarse GEMM score and ``c`` the canonical score. Write ``S = sum_j |u_j i_j| <= |u| |i|``
    (Cauchy–Schwarz, 2-norms), ``gamma_c = gamma_{1+ceil(log2 d)}`` (canonical, round to nearest) and
    ``gamma_a = gamma_d`` with unit 2^-23 (any fp32 accumulation order, with or without FMA, any
    faithful rounding: we do not control the kernel's order).

    fp32 GEMM (``torch.get_float32_matmul_precision() == "highest"``): both are fp32 dot products of the
    same vectors, so ``|g - c| <= (gamma_a + gamma_c) |u| |i|``.

    bf16 GEMM: inputs are rounded to bf16 by us (``û = bf16(u)``, subnormals flushed to 0 as the
    AVX512-BF16 / AMX instructions do), products of two bf16 numbers are exact in fp32, and oneDNN's
    bf16 matmul accumulates in fp32 (its default "strict" accumulation mode; measured: a sum that
    would stall in a bf16 accumulator comes out right), then rounds the result to bf16. With
    ``du = u - û`` and ``di = i - î`` (exact in fp32): ``u.i - û.î = û.di + du.î + du.di``, so

        |g - c| <= |g - acc| + |acc - û.î| + |û.î - u.i| + |u.i - c|
                <= 2^-8 |g| + gamma_a |û||î| + (|û||di| + |du||î| + |du||di|) + gamma_c |u||i|

    (the bf16 output rounding is relative to the rounded value: ``acc = g (1 + d), |d| <= 2^-8``).
    Using the actual residual norms ``|du|``, ``|di|`` instead of ``2^-8 |u|`` makes the bound about
    1.5x tighter. If fp32 matmul may run in reduced precision (``set_float32_matmul_precision`` "high" /
    "medium", or the mkldnn ``fp32_precision`` settings: bf16 or tf32 inputs inside the kernel) the fp32
    model takes the bf16 input terms with ``|du| <= 2^-8 |u| + sqrt(d) 2^-126``. ``absolute`` covers
    flush-to-zero of subnormal products, sums and inputs (< 2^-126 each). Norms are computed in float64;
    the callers add a ``_SLACK`` margin for that arithmetic.
    """

    user_factors: Tensor  # (F, n_rows) float64, >= 0
    item_factors: Tensor  # (F, n_items padded) float64, >= 0
    item_max: Tensor  # (F,) row maxima of item_factors
    rel: float
    absolute: float

    def pair_bound(self, rows: Tensor, items: Tensor, coarse: Tensor) -> Tensor:
        """Bound for the pairs ``(rows, items)`` (broadcastable index tensors); ``coarse`` is float64."""
        terms = self.user_factors[0][rows] * self.item_factors[0][items]
        for f in range(1, self.user_factors.shape[0]):
            terms = terms + self.user_factors[f][rows] * self.item_factors[f][items]
        if self.rel:  # excluded pairs (-inf) get a finite bound; they are never candidates anyway
            terms = terms + self.rel * _finite(coarse).abs()
        return terms + self.absolute

    def outside_bound(self, rows: Tensor) -> Tensor:
        """Bound of the ``user . item`` part over every item, per row (``rel |g|`` left to the caller)."""
        return self.item_max @ self.user_factors[:, rows] + self.absolute


class _BoundViolation(RuntimeError):
    """A coarse score was farther from its canonical score than the error model allows."""


def _fp32_matmul_reduced() -> bool:
    """Whether fp32 matmuls may run with bf16 / tf32 inputs internally (then they get the bf16 bound)."""
    mkldnn, cuda = torch.backends.mkldnn, torch.backends.cuda  # reading a setting does not touch a GPU
    owners = (torch.backends, mkldnn, getattr(mkldnn, "matmul", None), getattr(cuda, "matmul", None))
    for owner in owners:  # the torch >= 2.9 settings (cuda: TF32 GEMMs)
        if getattr(owner, "fp32_precision", "none") not in ("none", "ieee"):
            return True
    try:
        return torch.get_float32_matmul_precision() != "highest"
    except RuntimeError:  # legacy and new settings mixed: torch refuses to say, so assume reduced
        return True


def _to_bf16_flushed(x: Tensor) -> Tensor:
    """``x`` rounded to bf16 (nearest even) with subnormals set to 0, as bf16 dot instructions read them."""
    rounded = x.to(torch.bfloat16)
    return rounded.masked_fill(rounded.abs() < _TINY, 0)


def _bf16_gemm_is_fast() -> bool:
    """Whether bf16 GEMMs should beat fp32 here: only with AMX tiles.

    Measured on AVX512-BF16 without AMX (benchmarks/results): oneDNN's bf16 matmul took 1.7x the time
    of MKL's fp32 one for Gowalla-sized chunks, and the bf16 path of ``evaluate_ranking`` 1.5x the fp32
    path. With AMX the bf16 GEMM has several times the fp32 throughput (not measured here).
    """
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return native and bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: Precision, device: torch.device, n_items: int) -> Literal["bf16", "fp32"]:
    """``"auto"`` -> bf16 candidates on CPUs where bf16 GEMM is faster (AMX) for >= 4096 items, else fp32."""
    if precision in ("bf16", "fp32"):
        return precision
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if device.type != "cpu" or n_items < AUTO_BF16_MIN_ITEMS:
        return "fp32"
    return "bf16" if _bf16_gemm_is_fast() else "fp32"


@dataclass
class _Screened:
    """Outcome of screening the rows of one coarse matrix (see :meth:`Ranker._screen`)."""

    ok: Tensor  # (p,) bool: rows whose candidates provably contain the canonical top K
    lower: Tensor  # (p,) float64: lower bound of the K-th canonical score, already minus the slack
    row: Tensor  # (P,) candidate pairs of the ok rows: local row, item, coarse score (float64)
    item: Tensor
    coarse: Tensor


class Ranker:
    """Exact top-K for the rows of ``users`` against all ``items`` (see the module docstring)."""

    def __init__(self, users: Tensor, items: Tensor, score: Score, precision: Precision) -> None:
        if score not in ("dot", "cosine"):
            raise ValueError(f"score must be 'dot' or 'cosine', got {score!r}")
        if users.dim() != 2 or items.dim() != 2 or users.shape[1] != items.shape[1]:
            raise ValueError(
                f"embeddings must be (n, d) with the same d: users {tuple(users.shape)}, "
                f"items {tuple(items.shape)}"
            )
        if users.shape[1] == 0:
            raise ValueError("embedding dimension is 0")
        if users.device != items.device:
            raise ValueError(f"user embeddings on {users.device}, item embeddings on {items.device}")
        with torch.no_grad():
            u = users.detach().to(torch.float32)
            i = items.detach().to(torch.float32)
            if not (bool(torch.isfinite(u).all()) and bool(torch.isfinite(i).all())):
                raise ValueError("embeddings contain NaN or infinity")
            if score == "cosine":
                u, i = F.normalize(u, dim=1), F.normalize(i, dim=1)
            self.users = u.contiguous()
            n_items = i.shape[0]
            # Pad the catalogue with zero items to a multiple of _PAD: their coarse scores are set to
            # -inf, and every item-side tensor is indexed by padded item ids.
            self.max_block = _BLOCK if n_items >= _BLOCK_MIN_ITEMS else 1
            n_padded = -(-n_items // _PAD) * _PAD if self.max_block > 1 else n_items
            self.items = F.pad(i, (0, 0, 0, n_padded - n_items)).contiguous()
        self.device = self.items.device
        self.n_items = n_items
        self.dim = self.items.shape[1]
        self.kind = resolve_precision(precision, self.device, self.n_items)
        self._local = threading.local()  # per-thread score buffers (chunks may run in worker threads)
        self.threads = torch.get_num_threads()  # for the GEMM (1 when chunks run in parallel workers)

        d = self.dim
        u_norm = self.users.double().norm(dim=1)
        i_norm = self.items.double().norm(dim=1)
        max_u = float(u_norm.max()) if len(u_norm) else 0.0
        max_i = float(i_norm.max()) if len(i_norm) else 0.0
        if max_u * max_i > _MAX_SCORE_SCALE:
            raise ValueError(f"embedding norms too large for fp32 scores (|u| |i| up to {max_u * max_i:.3g})")
        gamma_c = _gamma(1 + math.ceil(math.log2(d)) if d > 1 else 1, _U_FP32)
        gamma_a = _gamma(d, _U_FP32_ANY)
        self._absolute = _TINY * (8 * d + 2 * math.sqrt(d) * (max_u + max_i))
        self.models: dict[str, _ErrorModel] = {}
        if _fp32_matmul_reduced():
            du = _U_BF16 * u_norm + math.sqrt(d) * _TINY
            di = _U_BF16 * i_norm + math.sqrt(d) * _TINY
            self.models["fp32"] = self._model(
                [u_norm + du, du, u_norm],
                [gamma_a * (i_norm + di) + di, i_norm + 2 * di, gamma_c * i_norm],
                rel=0.0,
            )
        else:
            self.models["fp32"] = self._model([u_norm], [(gamma_a + gamma_c) * i_norm], rel=0.0)
        if self.kind == "bf16":
            self._init_bf16(u_norm, i_norm, gamma_a, gamma_c)

    def _model(self, user_factors: list[Tensor], item_factors: list[Tensor], rel: float) -> _ErrorModel:
        items = torch.stack(item_factors)
        item_max = items.max(1).values if items.shape[1] else torch.zeros(len(items), dtype=torch.float64)
        return _ErrorModel(torch.stack(user_factors), items, item_max.to(self.device), rel, self._absolute)

    def _init_bf16(self, u_norm: Tensor, i_norm: Tensor, gamma_a: float, gamma_c: float) -> None:
        self.users_bf16 = _to_bf16_flushed(self.users)
        self.items_bf16 = _to_bf16_flushed(self.items)
        ub_norm = self.users_bf16.double().norm(dim=1)
        ib_norm = self.items_bf16.double().norm(dim=1)
        du_norm = (self.users - self.users_bf16.float()).double().norm(dim=1)
        di_norm = (self.items - self.items_bf16.float()).double().norm(dim=1)
        self.models["bf16"] = self._model(
            [ub_norm, du_norm, u_norm],
            [gamma_a * ib_norm + di_norm, ib_norm + di_norm, gamma_c * i_norm],
            rel=_U_BF16,
        )

    # ------------------------------------------------------------------ one chunk

    def top_k(self, start: int, stop: int, excl_rows: Tensor, excl_cols: Tensor, k: int) -> Tensor:
        """Exact top-``k`` item indices of rows ``start:stop``, ``(stop - start, k)`` int64, ``-1`` padded.

        ``excl_rows`` (chunk-local row) / ``excl_cols`` (item) are the pairs scored ``-inf``.
        """
        try:
            with torch_threads(1):
                return self._top_k(start, stop, excl_rows, excl_cols, k)
        except _BoundViolation as err:
            if self.kind != "bf16":
                raise RuntimeError(f"fp32 matmul outside its error model: {err}") from err
            warnings.warn(
                f"bf16 candidate scores outside the proven bound ({err}); using fp32 candidates from now on",
                RuntimeWarning,
                stacklevel=3,
            )
            self.kind = "fp32"
            with torch_threads(1):
                return self._top_k(start, stop, excl_rows, excl_cols, k)

    def _top_k(self, start: int, stop: int, excl_rows: Tensor, excl_cols: Tensor, k: int) -> Tensor:
        n_rows = stop - start
        out = torch.full((n_rows, k), -1, dtype=torch.long, device=self.device)
        if n_rows == 0 or self.n_items == 0 or k == 0:
            return out
        pending = torch.arange(n_rows, device=self.device)  # chunk-local rows not decided yet
        stages = ("bf16", "fp32") if self.kind == "bf16" else ("fp32",)
        for stage in stages:
            model = self.models[stage]
            coarse = self._coarse(pending + start, stage)
            _mask_pairs(coarse, pending, n_rows, excl_rows, excl_cols)
            for taken in (k + _MARGIN[stage], _GROUPS_PER_TAKEN * (k + _MARGIN[stage])):
                screened = self._screen(coarse, pending + start, k, model, taken)
                self._finish(out, pending, start, screened.row, screened.item, screened.coarse, model)
                failed = ~screened.ok
                if not bool(failed.any()):
                    return out
                pending, coarse, lower = pending[failed], coarse[failed], screened.lower[failed]
        # Still undecided with fp32 candidates: many (near-)exact ties around the K-th score.
        self._rescore_all_above(out, pending, coarse, lower, start, self.models["fp32"])
        return out

    def _coarse(self, rows: Tensor, stage: str) -> Tensor:
        """Coarse scores of ``rows`` against every (padded) item: bf16 or fp32 GEMM, padding at -inf.

        Written into a buffer kept across chunks: a fresh multi-MB tensor per chunk costs page faults.
        The result is a view of that buffer, valid until the next call for the same stage.
        """
        users, items = (self.users_bf16, self.items_bf16) if stage == "bf16" else (self.users, self.items)
        buffers: dict[str, Tensor] = self._local.__dict__.setdefault("buffers", {})
        buffer = buffers.get(stage)
        if buffer is None or buffer.shape[0] < len(rows):
            buffer = torch.empty((len(rows), items.shape[0]), dtype=items.dtype, device=self.device)
            buffers[stage] = buffer
        out = buffer[: len(rows)]
        with torch_threads(self.threads):
            torch.matmul(users[rows], items.T, out=out)
        out[:, self.n_items :] = -math.inf
        return out

    def _screen(self, coarse: Tensor, rows: Tensor, k: int, model: _ErrorModel, taken: int) -> _Screened:
        """Steps 1-3 of the module docstring for every row of ``coarse`` (global row ids ``rows``)."""
        p, n = coarse.shape
        block = _group_size(n, self.max_block, taken)
        groups = n // block
        taken = min(taken, groups)
        group_max = coarse.view(p, block, groups).amax(dim=1) if block > 1 else coarse
        best, group = _top_groups(group_max, taken, _group_size(groups, self.max_block, taken))
        # Items of the taken groups: group g holds items g, g + G, g + 2G, ... (a strided tiling).
        items = group.unsqueeze(2) + torch.arange(0, n, groups, device=self.device)  # (p, taken, block)
        values = coarse.gather(1, items.view(p, -1)).view(p, taken, block)
        kk = min(k, taken)
        if block > 1:
            top_items = items[:, :kk].gather(2, values[:, :kk].argmax(2, keepdim=True)).squeeze(2)
        else:
            top_items = items[:, :kk, 0]
        best64 = best.double()
        top = best64[:, :kk]
        top_bound = model.pair_bound(rows.unsqueeze(1), top_items, top)
        lower = (top - top_bound).min(1).values  # -inf when fewer than kk finite group maxima
        outside = model.outside_bound(rows)
        t = best64[:, taken - 1]
        magnitude = _finite(best64[:, 0]).abs() + _finite(t).abs() + outside + top_bound.max(1).values
        slack = _SLACK * magnitude
        lower = lower - slack
        if taken == groups:  # every group taken: nothing is outside
            ok = torch.ones(p, dtype=torch.bool, device=self.device)
        else:
            ok = torch.isneginf(t) | (t + model.rel * t.abs() + outside + slack < lower)
        # Candidates of the ok rows. First the row-wide bound, g + rel |g| + E >= lower, solved for g
        # (g + rel |g| is increasing) and rounded down to fp32 so the coarse values compare directly.
        need = lower - outside - slack
        floor = _round_down_f32(torch.where(need >= 0, need / (1 + model.rel), need / (1 - model.rel)))
        flat = values.view(p, -1)
        keep = ok.unsqueeze(1) & (flat >= floor.unsqueeze(1))
        if bool(torch.isneginf(floor).any()):  # rows with fewer than K items: drop the excluded ones
            keep &= ~torch.isneginf(flat)
        row, col = keep.nonzero(as_tuple=True)
        item, v = items.view(p, -1)[row, col], flat[row, col].double()
        # Then the per-pair bound.
        pair_ok = v + model.pair_bound(rows[row], item, v) + slack[row] >= lower[row]
        return _Screened(ok, lower, row[pair_ok], item[pair_ok], v[pair_ok])

    def _finish(
        self,
        out: Tensor,
        pending: Tensor,
        start: int,
        row: Tensor,
        item: Tensor,
        coarse: Tensor,
        model: _ErrorModel,
    ) -> None:
        """Step 4: rescore candidate pairs (``row`` indexes ``pending``) and write each row's exact top K.

        ``row`` is non-decreasing (pairs come from ``nonzero`` in row-major order). Every pair's coarse
        score is checked against its bound (raises :class:`_BoundViolation`).
        """
        if len(row) == 0:
            return
        k = out.shape[1]
        users = pending[row] + start
        canon = torch.empty(len(row), dtype=torch.float32, device=self.device)
        step = max(1, _RESCORE_ELEMENTS // self.dim)
        for lo in range(0, len(row), step):  # batches of pairs, bounded memory
            hi = lo + step
            canon[lo:hi] = canonical_scores(self.users[users[lo:hi]], self.items[item[lo:hi]])
        bound = model.pair_bound(users, item, coarse)
        error = (canon.double() - coarse).abs()
        bad = error > bound * (1 + _SLACK) + _SLACK * coarse.abs()
        if bool(bad.any()):
            where = int(bad.nonzero()[0, 0])
            raise _BoundViolation(
                f"|coarse - canonical| = {float(error[where]):.3g} > bound {float(bound[where]):.3g}"
            )
        # Lay each row's candidates out in a padded matrix, then sort rows by (score desc, item asc).
        counts = torch.bincount(row, minlength=len(pending))
        position = torch.arange(len(row), device=self.device) - (torch.cumsum(counts, 0) - counts)[row]
        shape = (len(pending), int(counts.max()))
        scores = torch.full(shape, -math.inf, dtype=torch.float32, device=self.device)
        scores[row, position] = canon
        items = torch.full(shape, self.items.shape[0], dtype=torch.long, device=self.device)
        items[row, position] = item
        has = counts > 0  # the others are decided elsewhere (or have no rankable item)
        out[pending[has]] = _ordered_top(items[has], scores[has], k)

    def _rescore_all_above(
        self, out: Tensor, pending: Tensor, coarse: Tensor, lower: Tensor, start: int, model: _ErrorModel
    ) -> None:
        """Rescore every item of the fp32-coarse rows with ``g + E >= lower`` (rows with many ties).

        Rows are processed in groups holding at most ``_RESCORE_ELEMENTS / d`` candidate pairs (or one
        row), so memory stays bounded even when a whole row is tied.
        """
        assert model.rel == 0.0  # an fp32 GEMM output is not rounded again
        rows = pending + start
        threshold = lower - model.outside_bound(rows)
        mask = coarse >= _round_down_f32(threshold).unsqueeze(1)
        ends = torch.cumsum(mask.sum(1), 0).tolist()
        budget = max(1, _RESCORE_ELEMENTS // self.dim)
        lo = 0
        while lo < len(rows):
            base = ends[lo - 1] if lo else 0
            hi = max(lo + 1, int(np.searchsorted(ends, base + budget, side="right")))
            row, item = mask[lo:hi].nonzero(as_tuple=True)
            v = coarse[lo:hi][row, item].double()
            self._finish(out, pending[lo:hi], start, row, item, v, model)
            lo = hi


def _group_size(n: int, largest: int, taken: int) -> int:
    """Largest power of two ``<= largest`` dividing ``n`` leaving ``>= _GROUPS_PER_TAKEN * taken`` groups."""
    size = largest
    while size > 1 and (n % size or n // size < _GROUPS_PER_TAKEN * taken):
        size //= 2
    return size


def _top_groups(group_max: Tensor, taken: int, size: int) -> tuple[Tensor, Tensor]:
    """The ``taken`` largest group maxima of each row (ties in any order), sorted, with their group ids.

    With ``size > 1`` a second level does the same to the groups that ``Ranker._screen`` does to the
    items: super-groups ``{s, s + S, s + 2S, ...}`` of ``size`` groups, the ``taken`` super-groups with
    the largest maxima expanded, and the top ``taken`` taken among their groups. That is a valid top
    ``taken`` by the same argument (every group left out is ``<=`` the smallest taken super-group
    maximum, which is ``<=`` the ``taken``-th largest expanded value), and ``torch.topk`` then reads
    ``S + taken * size`` values per row instead of all ``G`` group maxima.
    """
    rows, groups = group_max.shape
    if size <= 1:
        return torch.topk(group_max, taken, dim=1, sorted=True)
    supers = groups // size
    top_super = torch.topk(group_max.view(rows, size, supers).amax(dim=1), taken, dim=1, sorted=False).indices
    expanded = (top_super.unsqueeze(2) + torch.arange(0, groups, supers, device=group_max.device)).view(
        rows, -1
    )
    best, position = torch.topk(group_max.gather(1, expanded), taken, dim=1, sorted=True)
    return best, expanded.gather(1, position)


def _ordered_top(items: Tensor, scores: Tensor, k: int) -> Tensor:
    """Top ``k`` of each row by (score desc, item index asc); ``-inf`` entries and missing places are ``-1``.

    Two stable sorts, least significant key first: by item, then by score. Items are distinct within
    a row (padding entries share one out-of-range id and score ``-inf``).
    """
    by_item = items.argsort(dim=1, stable=True)
    items, scores = items.gather(1, by_item), scores.gather(1, by_item)
    by_score = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    top = items.gather(1, by_score).masked_fill(torch.isneginf(scores.gather(1, by_score)), -1)
    if top.shape[1] < k:
        top = F.pad(top, (0, k - top.shape[1]), value=-1)
    return top


def _round_down_f32(x: Tensor) -> Tensor:
    """The largest fp32 values ``<= x`` (float64): thresholds that never exclude a value they should keep."""
    y = x.float()
    return torch.where(y.double() > x, torch.nextafter(y, y.new_tensor(-math.inf)), y)


def _finite(x: Tensor) -> Tensor:
    """``x`` with infinities replaced by 0 (for magnitudes in a slack term)."""
    return torch.where(torch.isfinite(x), x, 0.0)


def _mask_pairs(coarse: Tensor, pending: Tensor, n_rows: int, excl_rows: Tensor, excl_cols: Tensor) -> None:
    """Set the excluded pairs of the ``pending`` chunk rows (the rows of ``coarse``) to ``-inf``."""
    if excl_rows.numel() == 0:
        return
    neg_inf = torch.tensor(-math.inf, dtype=coarse.dtype, device=coarse.device)
    if len(pending) == n_rows:  # all rows, in order
        coarse.index_put_((excl_rows, excl_cols), neg_inf)
        return
    position = torch.full((n_rows,), -1, dtype=torch.long, device=coarse.device)
    position[pending] = torch.arange(len(pending), device=coarse.device)
    mapped = position[excl_rows]
    keep = mapped >= 0
    coarse.index_put_((mapped[keep], excl_cols[keep]), neg_inf)


# ---------------------------------------------------------------------- CSR helpers and the chunk loop


def as_csr(matrix: sp.spmatrix | sp.sparray, shape: tuple[int, int], name: str) -> sp.csr_matrix:
    """``matrix`` as CSR, sorted indices, no stored zeros, checked against ``shape``; never mutates it."""
    if not sp.issparse(matrix):
        raise TypeError(f"{name} must be a scipy sparse matrix, got {type(matrix).__name__}")
    csr = sp.csr_matrix(matrix)  # may share its arrays with ``matrix``: copy before changing anything
    if csr.shape != shape:
        raise ValueError(f"{name} has shape {csr.shape}, expected {shape}")
    has_zeros = bool((csr.data == 0).any())
    if has_zeros or not csr.has_sorted_indices:
        csr = csr.copy()
        if has_zeros:
            csr.eliminate_zeros()
        csr.sort_indices()
    return csr


def chunk_pairs(matrix: sp.csr_matrix, start: int, stop: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(chunk-local row, column) of the stored entries of rows ``start:stop``, without a loop over rows."""
    lo, hi = matrix.indptr[start], matrix.indptr[stop]
    lengths = np.diff(matrix.indptr[start : stop + 1])
    rows = np.repeat(np.arange(stop - start, dtype=np.int64), lengths)
    cols = matrix.indices[lo:hi].astype(np.int64)
    return torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)


class DevicePairs:
    """A CSR matrix whose per-chunk (row, column) pairs are built on an accelerator.

    The column indices and row pointers are copied to the device once; a chunk's pairs are then a
    slice and a ``repeat_interleave`` there, its size known from the host's copy of the row pointers,
    so no chunk copies ids from the host or waits for the device. Same pairs as :func:`chunk_pairs`.
    """

    def __init__(self, matrix: sp.csr_matrix, device: torch.device) -> None:
        self.device = device
        self.indptr = matrix.indptr.astype(np.int64)
        self.indptr_device = torch.from_numpy(self.indptr).to(device)
        self.indices = torch.from_numpy(matrix.indices.astype(np.int64)).to(device)

    def pairs(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        lengths = self.indptr_device[start + 1 : stop + 1] - self.indptr_device[start:stop]
        local = torch.arange(stop - start, device=self.device)
        return torch.repeat_interleave(local, lengths, output_size=hi - lo), self.indices[lo:hi]


def pair_source(matrix: sp.csr_matrix, device: torch.device) -> Callable[[int, int], tuple[Tensor, Tensor]]:
    """``pairs(start, stop)`` of ``matrix`` on ``device``: :func:`chunk_pairs` on the CPU (as built
    there), :class:`DevicePairs` elsewhere."""
    if device.type == "cpu":
        return lambda start, stop: chunk_pairs(matrix, start, stop, device)
    return DevicePairs(matrix, device).pairs


def iter_top_k(
    user_emb: Tensor,
    item_emb: Tensor,
    k: int,
    exclude: Sequence[sp.csr_matrix] = (),
    score: Score = "dot",
    chunk_size: int | None = None,
    precision: Precision = "auto",
    progress: bool = False,
    desc: str = "ranking",
) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, stop, top)`` per chunk of rows of ``user_emb``: ``top`` is the exact top-``k``.

    ``exclude`` matrices have one row per row of ``user_emb`` (already selected). The shared engine of
    :func:`top_k` and :func:`ssmrec.evaluate.evaluate_ranking`.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    ranker = Ranker(user_emb, item_emb, score, precision)
    n_rows, n_items = ranker.users.shape[0], ranker.n_items
    excl = [as_csr(m, (n_rows, n_items), "exclude") for m in exclude]
    if chunk_size is None:
        chunk_size = chunk_size_for(ranker.device, n_items)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    starts = range(0, n_rows, chunk_size)
    sources = [pair_source(m, ranker.device) for m in excl]

    def rank(start: int) -> Tensor:
        stop = min(n_rows, start + chunk_size)
        pairs = [source(start, stop) for source in sources]
        if pairs:
            rows = torch.cat([p[0] for p in pairs])
            cols = torch.cat([p[1] for p in pairs])
        else:
            rows = cols = torch.empty(0, dtype=torch.long, device=ranker.device)
        return ranker.top_k(start, stop, rows, cols, k)

    workers = min(ranker.threads, len(starts)) if ranker.device.type == "cpu" else 1
    with tqdm(total=len(starts), desc=desc, unit="chunk", disable=not progress) as bar:
        if workers <= 1:
            for start in starts:
                yield start, min(n_rows, start + chunk_size), rank(start)
                bar.update(1)
            return
        # Chunks in parallel, one per worker thread, each single-threaded (GEMM included). torch
        # releases the GIL inside operators, so every core stays busy through the many small
        # per-chunk operations instead of idling while one thread runs them (see torch_threads).
        ranker.threads = 1
        with torch_threads(1), ThreadPoolExecutor(workers, thread_name_prefix="ssmrec-rank") as pool:
            queue: deque[tuple[int, Future[Tensor]]] = deque()
            upcoming = iter(starts)
            try:
                for start in upcoming:
                    queue.append((start, pool.submit(rank, start)))
                    if len(queue) >= 2 * workers:
                        break
                while queue:
                    start, future = queue.popleft()
                    top = future.result()
                    for following in upcoming:  # keep the window full
                        queue.append((following, pool.submit(rank, following)))
                        break
                    yield start, min(n_rows, start + chunk_size), top
                    bar.update(1)
            finally:
                for _, future in queue:
                    future.cancel()


@torch.no_grad()
def top_k(
    user_emb: Tensor,
    item_emb: Tensor,
    users: Sequence[int] | np.ndarray | Tensor | None,
    k: int,
    exclude: Sequence[sp.csr_matrix] = (),
    score: Score = "dot",
    chunk_size: int | None = None,
    *,
    precision: Precision = "auto",
    progress: bool = False,
) -> Tensor:
    """Exact top-``k`` items for ``users`` (``None``: every row of ``user_emb``), ``(len(users), k)`` int64.

    Ordered by score descending, ties broken by lower item index; items in any ``exclude`` matrix
    (user x item over all users, e.g. the training interactions) are never returned. A user with
    fewer than ``k`` rankable items gets ``-1`` in the missing trailing positions. ``precision``
    chooses the candidate GEMM only (``"auto"``, ``"bf16"``, ``"fp32"``); the result is the same for
    all three (see the module docstring). Memory: see :func:`ssmrec.evaluate.evaluate_ranking`.
    """
    n_users = user_emb.shape[0]
    if users is None:
        rows = np.arange(n_users, dtype=np.int64)
    else:
        rows = np.asarray(users.cpu() if isinstance(users, Tensor) else users, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= n_users):
            raise IndexError(f"user index out of range 0..{n_users - 1}")
    n_items = item_emb.shape[0]
    excl = [as_csr(m, (n_users, n_items), "exclude")[rows] for m in exclude]
    selected = user_emb[torch.from_numpy(rows).to(user_emb.device)]
    parts = [
        top
        for _, _, top in iter_top_k(
            selected, item_emb, k, excl, score, chunk_size, precision, progress, desc="top_k"
        )
    ]
    if not parts:
        return torch.empty((0, k), dtype=torch.long, device=item_emb.device)
    return torch.cat(parts)
