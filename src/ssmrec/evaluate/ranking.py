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
A full score matrix is only used to find *candidates*; it is a GEMM, either fp32 or bf16 (``precision``).
For each coarse score ``g(u, i)`` there is a proven bound ``|g(u, i) - c(u, i)| <= e(u, i)`` (see
:class:`_ErrorModel` for the derivation). Let ``g_1 >= ... >= g_M`` be the M largest coarse scores of
a row (M a little above K). The K items ranked first by ``g`` each have ``c >= g - e``, hence the
K-th largest canonical score satisfies ``c_(K) >= L = min_{r<=K} (g_r - e_r)``. Any item outside the
top M has ``c <= g + e <= g_M + rel*|g_M| + E_max`` (``E_max`` bounds ``e`` over all items); if that is
``< L`` no item outside the top M can reach, or tie with, ``c_(K)``. Then the M candidates are rescored
canonically and sorted with the tie-break, which gives exactly the canonical top K. Rows where the test
fails (a wide near-tie at the K-th score) are redone with an fp32 GEMM (tighter bound) and, if that still
fails (many exact ties), every item with ``g >= L - E_max`` of that row is rescored. So the result never
depends on ``precision``: bf16 only changes how much work is spent.

Every rescored pair is also checked against its bound; a violation (a matmul kernel that does not
accumulate in fp32 as documented by oneDNN / MKL) makes the call warn and redo the work in fp32.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
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
"""Default memory for one chunk's coarse score matrix (``chunk_size * n_items * 4`` bytes, fp32)."""

AUTO_BF16_MIN_ITEMS = 4096
"""``precision="auto"`` uses bf16 candidates only from this many items on: below it the GEMM is cheap."""

_U_FP32 = 2.0**-24  # unit roundoff of fp32, round to nearest (our own elementwise operations)
_U_FP32_ANY = 2.0**-23  # covers any faithful rounding, for accumulations inside kernels we do not own
_U_BF16 = 2.0**-8  # unit roundoff of bf16 (8 significand bits), round to nearest even
_TINY = 2.0**-126  # smallest normal fp32 / bf16: flushing a subnormal loses less than this
_SLACK = 2.0**-30  # relative margin for the float64 arithmetic of the bounds themselves
_RESCORE_ELEMENTS = 1 << 22  # gathered (pair x dim) fp32 elements per rescoring batch: 16 MiB
_MAX_SCORE_SCALE = 1e36  # |u| |i| above this could overflow fp32 / bf16 scores


def _gamma(n: int, unit: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): bound on the relative error of n rounded operations."""
    if n * unit >= 0.5:
        raise ValueError(f"embedding dimension {n} too large for the fp32 error bound")
    return n * unit / (1.0 - n * unit)


def default_chunk_size(n_items: int, budget_bytes: int = SCORE_BUDGET_BYTES) -> int:
    """Users per chunk so that one fp32 score matrix ``chunk x n_items`` fits ``budget_bytes``."""
    return max(1, budget_bytes // (4 * max(1, n_items)))


def candidate_width(k: int, n_items: int) -> int:
    """How many coarse-top items per row are kept for exact rescoring (K plus a margin for near-ties)."""
    return min(n_items, k + max(k, 32))


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
    """``|g(u, i) - c(u, i)| <= user_factors[u] . item_factors[i] + rel * |g(u, i)| + absolute``.

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
    1.5x tighter. If fp32 matmul runs in reduced precision (``set_float32_matmul_precision`` "high" or
    "medium": bf16 or tf32 inputs inside the kernel) the fp32 model takes the bf16 input terms with
    ``|du| <= 2^-8 |u| + sqrt(d) 2^-126``. ``absolute`` covers flush-to-zero of subnormal products,
    sums and inputs (< 2^-126 each). Norms are computed in float64; the callers add a ``_SLACK`` margin
    for that arithmetic.
    """

    user_factors: Tensor  # (n_rows, F) float64, >= 0
    item_factors: Tensor  # (n_items, F) float64, >= 0
    item_max: Tensor  # (F,) column maxima of item_factors
    rel: float
    absolute: float

    def pair_bound(self, rows: Tensor, items: Tensor, coarse: Tensor) -> Tensor:
        """Bound for the pairs ``(rows[p], items[p, m])``; ``coarse`` is ``(p, m)`` float64."""
        terms = (self.user_factors[rows].unsqueeze(1) * self.item_factors[items]).sum(-1)
        return terms + self.rel * coarse.abs() + self.absolute

    def outside_bound(self, rows: Tensor) -> Tensor:
        """Bound of the ``user . item`` part over every item, per row (``rel`` handled by the caller)."""
        return self.user_factors[rows] @ self.item_max + self.absolute


class _BoundViolation(RuntimeError):
    """A coarse score was farther from its canonical score than the error model allows."""


def _fp32_matmul_reduced() -> bool:
    """Whether fp32 matmuls may run with bf16 / tf32 inputs internally (then they get the bf16 bound)."""
    mkldnn = torch.backends.mkldnn
    for owner in (torch.backends, mkldnn, getattr(mkldnn, "matmul", None)):  # the torch >= 2.9 settings
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


def resolve_precision(precision: Precision, device: torch.device, n_items: int) -> Literal["bf16", "fp32"]:
    """``"auto"`` -> bf16 candidates on CPUs with native bf16 (oneDNN) and catalogs of >= 4096 items."""
    if precision in ("bf16", "fp32"):
        return precision
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if device.type != "cpu" or n_items < AUTO_BF16_MIN_ITEMS:
        return "fp32"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


class _Ranker:
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
            self.items = i.contiguous()
        self.device = self.items.device
        self.n_items = self.items.shape[0]
        self.dim = self.items.shape[1]
        self.kind = resolve_precision(precision, self.device, self.n_items)

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
                torch.stack([u_norm + du, du, u_norm], 1),
                torch.stack([gamma_a * (i_norm + di) + di, i_norm + 2 * di, gamma_c * i_norm], 1),
                rel=0.0,
            )
        else:
            fp32_items = ((gamma_a + gamma_c) * i_norm)[:, None]
            self.models["fp32"] = self._model(u_norm[:, None], fp32_items, rel=0.0)
        if self.kind == "bf16":
            self._init_bf16(u_norm, i_norm, gamma_a, gamma_c)

    def _model(self, user_factors: Tensor, item_factors: Tensor, rel: float) -> _ErrorModel:
        item_max = (
            item_factors.max(0).values
            if len(item_factors)
            else torch.zeros(item_factors.shape[1], dtype=torch.float64, device=self.device)
        )
        return _ErrorModel(user_factors, item_factors, item_max, rel, self._absolute)

    def _init_bf16(self, u_norm: Tensor, i_norm: Tensor, gamma_a: float, gamma_c: float) -> None:
        self.users_bf16 = _to_bf16_flushed(self.users)
        self.items_bf16 = _to_bf16_flushed(self.items)
        ub_norm = self.users_bf16.double().norm(dim=1)
        ib_norm = self.items_bf16.double().norm(dim=1)
        du_norm = (self.users - self.users_bf16.float()).double().norm(dim=1)
        di_norm = (self.items - self.items_bf16.float()).double().norm(dim=1)
        self.models["bf16"] = self._model(
            torch.stack([ub_norm, du_norm, u_norm], 1),
            torch.stack([gamma_a * ib_norm + di_norm, ib_norm + di_norm, gamma_c * i_norm], 1),
            rel=_U_BF16,
        )

    # ------------------------------------------------------------------ one chunk

    def top_k(self, start: int, stop: int, excl_rows: Tensor, excl_cols: Tensor, k: int) -> Tensor:
        """Exact top-``k`` item indices of rows ``start:stop``, ``(stop - start, k)`` int64, ``-1`` padded.

        ``excl_rows`` (chunk-local row) / ``excl_cols`` (item) are the pairs scored ``-inf``.
        """
        try:
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
            return self._top_k(start, stop, excl_rows, excl_cols, k)

    def _top_k(self, start: int, stop: int, excl_rows: Tensor, excl_cols: Tensor, k: int) -> Tensor:
        n_rows = stop - start
        out = torch.full((n_rows, k), -1, dtype=torch.long, device=self.device)
        if n_rows == 0 or self.n_items == 0 or k == 0:
            return out
        pending = torch.arange(n_rows, device=self.device)
        stages = ("bf16", "fp32") if self.kind == "bf16" else ("fp32",)
        for stage in stages:
            rows = pending + start
            coarse = self._coarse(rows, stage)
            _mask_pairs(coarse, pending, n_rows, excl_rows, excl_cols)
            model = self.models[stage]
            ok, idx, vals, lower = self._screen(coarse, rows, k, model)
            if bool(ok.all()):
                out[pending] = self._rescore(rows, idx, vals, k, model)
                return out
            if bool(ok.any()):
                out[pending[ok]] = self._rescore(rows[ok], idx[ok], vals[ok], k, model)
            failed = ~ok
            pending, coarse, lower = pending[failed], coarse[failed], lower[failed]
        # Still undecided after fp32 candidates: many (near-)exact ties around the K-th score.
        out[pending] = self._rescore_all_above(coarse, pending + start, lower, k, self.models["fp32"])
        return out

    def _coarse(self, rows: Tensor, stage: str) -> Tensor:
        """Coarse score matrix of ``rows`` against every item (bf16 or fp32 GEMM)."""
        if stage == "bf16":
            return self.users_bf16[rows] @ self.items_bf16.T
        return self.users[rows] @ self.items.T

    def _screen(
        self, coarse: Tensor, rows: Tensor, k: int, model: _ErrorModel
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Top-M coarse candidates per row and whether they provably contain the canonical top K.

        Returns ``ok`` (rows decided), the candidate ``idx`` / coarse ``vals`` ``(p, M)`` sorted by coarse
        score, and ``lower``, a lower bound of the K-th canonical score (rows with M finite candidates).
        """
        m = candidate_width(k, coarse.shape[1])
        vals, idx = torch.topk(coarse, m, dim=1, sorted=True)
        v = vals.double()
        if m == coarse.shape[1]:  # every item is a candidate
            ok = torch.ones(len(rows), dtype=torch.bool, device=self.device)
            return ok, idx, vals, torch.full_like(v[:, 0], -math.inf)
        kk = min(k, m)
        top_bound = model.pair_bound(rows, idx[:, :kk], v[:, :kk])
        lower = (v[:, :kk] - top_bound).min(1).values
        last = v[:, m - 1]
        outside = model.outside_bound(rows)
        upper = last + model.rel * last.abs() + outside
        slack = _SLACK * (v[:, 0].abs() + last.abs() + outside + top_bound.max(1).values)
        # last == -inf: fewer than M rankable items, all of them are candidates.
        ok = torch.isneginf(last) | (upper + slack < lower)
        return ok, idx, vals, lower - slack

    def _rescore(self, rows: Tensor, idx: Tensor, vals: Tensor, k: int, model: _ErrorModel) -> Tensor:
        """Canonical scores of the candidates ``idx`` and their exact top K (bound checked on every pair)."""
        m = idx.shape[1]
        canon = torch.empty(idx.shape, dtype=torch.float32, device=self.device)
        step = max(1, _RESCORE_ELEMENTS // (m * self.dim))
        for lo in range(0, len(rows), step):  # batches of rows, bounded memory
            hi = lo + step
            canon[lo:hi] = canonical_scores(self.users[rows[lo:hi]].unsqueeze(1), self.items[idx[lo:hi]])
        excluded = torch.isneginf(vals)
        canon.masked_fill_(excluded, -math.inf)
        v = vals.double()
        bound = model.pair_bound(rows, idx, v)
        error = (canon.double() - v).abs()
        bad = ~excluded & (error > bound * (1 + _SLACK) + _SLACK * v.abs())
        if bool(bad.any()):
            where = bad.nonzero()[0]
            raise _BoundViolation(
                f"|coarse - canonical| = {float(error[where[0], where[1]]):.3g} > "
                f"bound {float(bound[where[0], where[1]]):.3g}"
            )
        return _ordered_top(idx, canon, k)

    def _rescore_all_above(
        self, coarse: Tensor, rows: Tensor, lower: Tensor, k: int, model: _ErrorModel
    ) -> Tensor:
        """Exact top K of fp32-coarse rows by rescoring every item with ``g >= lower - E_max``.

        Used only for rows with more near-ties at the K-th score than candidate slots. Candidates are
        processed in groups of whole rows so that at most ``_RESCORE_ELEMENTS / d`` pairs (plus one row)
        are held at once.
        """
        assert model.rel == 0.0  # fp32 GEMM output is not rounded again
        threshold = lower - model.outside_bound(rows)
        thr32 = threshold.float()
        below = torch.nextafter(thr32, thr32.new_tensor(-math.inf))
        thr32 = torch.where(thr32.double() > threshold, below, thr32)  # round the threshold down
        mask = coarse >= thr32[:, None]
        counts = mask.sum(1)
        out = torch.full((len(rows), k), -1, dtype=torch.long, device=self.device)
        budget = max(1, _RESCORE_ELEMENTS // self.dim)
        ends = torch.cumsum(counts, 0).tolist()
        lo = 0
        while lo < len(rows):
            base = ends[lo - 1] if lo else 0
            hi = max(lo + 1, int(np.searchsorted(ends, base + budget, side="right")))
            local, items = mask[lo:hi].nonzero(as_tuple=True)  # row-major: items ascending in a row
            canon = torch.empty(len(items), dtype=torch.float32, device=self.device)
            for s in range(0, len(items), budget):
                e = s + budget
                canon[s:e] = canonical_scores(self.users[rows[lo:hi][local[s:e]]], self.items[items[s:e]])
            order = canon.argsort(descending=True, stable=True)
            order = order[local[order].argsort(stable=True)]  # by row, then score desc, then item asc
            local, items = local[order], items[order]
            group_counts = counts[lo:hi]
            starts = torch.cumsum(group_counts, 0) - group_counts
            position = torch.arange(len(items), device=self.device) - starts[local]
            keep = position < k
            out[lo + local[keep], position[keep]] = items[keep]
            lo = hi
        return out


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


def _ordered_top(idx: Tensor, scores: Tensor, k: int) -> Tensor:
    """Top ``k`` of each row ordered by (score desc, item index asc); ``-inf`` entries become ``-1``.

    Two stable sorts: by index, then by score. ``(p, min(k, m))`` columns padded to ``k`` with ``-1``.
    """
    by_index = idx.argsort(dim=1)
    idx, scores = idx.gather(1, by_index), scores.gather(1, by_index)
    by_score = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    top = idx.gather(1, by_score).masked_fill(torch.isneginf(scores.gather(1, by_score)), -1)
    if top.shape[1] < k:
        top = F.pad(top, (0, k - top.shape[1]), value=-1)
    return top


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
    ranker = _Ranker(user_emb, item_emb, score, precision)
    n_rows, n_items = ranker.users.shape[0], ranker.n_items
    excl = [as_csr(m, (n_rows, n_items), "exclude") for m in exclude]
    if chunk_size is None:
        chunk_size = default_chunk_size(n_items)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    starts = range(0, n_rows, chunk_size)
    with tqdm(total=len(starts), desc=desc, unit="chunk", disable=not progress) as bar:
        for start in starts:
            stop = min(n_rows, start + chunk_size)
            pairs = [chunk_pairs(m, start, stop, ranker.device) for m in excl]
            if pairs:
                rows = torch.cat([p[0] for p in pairs])
                cols = torch.cat([p[1] for p in pairs])
            else:
                rows = cols = torch.empty(0, dtype=torch.long, device=ranker.device)
            yield start, stop, ranker.top_k(start, stop, rows, cols, k)
            bar.update(1)


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
