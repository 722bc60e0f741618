"""Top-K ranking metrics from a hit matrix, with the definitions of the LightGCN evaluator.

Everything here works on a whole chunk of users at once: ``hits[u, r]`` says whether the item at
rank ``r + 1`` of user ``u``'s list is relevant, ``n_relevant[u]`` is ``|relevant(u)|``. Per-user
values are computed in float64 and summed, so the caller can accumulate sums over chunks and divide
once by the number of users (a mean over users, as in the LightGCN / NGCF evaluators).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ssmrec.evaluate.ranking import Precision, Score, as_csr, iter_top_k, pair_source, torch_threads

METRICS: tuple[str, ...] = ("recall", "ndcg", "precision", "hit", "mrr", "map")
"""Metric families reported for every cutoff K, in report order (keys are ``f"{name}@{K}"``)."""


def metric_names(ks: Sequence[int]) -> list[str]:
    """Keys of :func:`metric_sums` for cutoffs ``ks``, family-major (``recall@10, recall@20, ...``)."""
    return [f"{name}@{k}" for name in METRICS for k in ks]


def metric_sums(hits: Tensor, n_relevant: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Sums over users of every metric at every cutoff.

    ``hits`` is ``(users, K_max)`` bool with ``K_max >= max(ks)`` columns; a position without an item
    (a user with fewer than K rankable items) must be ``False``: it counts as a miss, so precision
    still divides by K. ``n_relevant`` is ``(users,)`` with every entry ``>= 1``.

    Per user, with ``hit_r`` = 1 if the item at rank ``r`` is relevant, ``R = |relevant|``, ``K`` the cutoff:

    - ``recall@K    = Σ_{r≤K} hit_r / R``
    - ``precision@K = Σ_{r≤K} hit_r / K``
    - ``hit@K       = 1 if Σ_{r≤K} hit_r > 0 else 0``
    - ``ndcg@K      = DCG / IDCG`` with binary gains, ``DCG = Σ_{r≤K} hit_r / log2(r + 1)`` and
      ``IDCG = Σ_{r ≤ min(R, K)} 1 / log2(r + 1)`` (the best possible list for this user at this K)
    - ``mrr@K       = 1 / r*`` for the rank ``r*`` of the first hit within K, 0 without a hit
    - ``map@K       = Σ_{r≤K, hit_r} precision@r / min(R, K)``
    """
    if hits.dim() != 2 or hits.shape[0] != n_relevant.shape[0]:
        raise ValueError(f"hits {tuple(hits.shape)} and n_relevant {tuple(n_relevant.shape)} do not match")
    if ks and max(ks) > hits.shape[1]:
        raise ValueError(f"cutoff {max(ks)} exceeds the {hits.shape[1]} ranked positions given")
    device = hits.device
    h = hits.to(torch.float64)
    k_max = h.shape[1]
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64, device=device)
    discount = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = h.cumsum(1)  # hits within the first r positions, r = 1..K_max
    cum_dcg = (h * discount).cumsum(1)
    ideal = discount.cumsum(0)  # IDCG for min(R, K) = 1..K_max
    cum_ap = (h * cum_hits / ranks).cumsum(1)  # Σ precision@r over hit positions
    any_hit = hits.any(1)
    first_rank = torch.where(any_hit, hits.to(torch.int8).argmax(1) + 1, k_max + 1).to(torch.float64)
    n_rel = n_relevant.to(device=device, dtype=torch.float64)

    out: dict[str, float] = {}
    for name in METRICS:
        for k in ks:
            hits_k = cum_hits[:, k - 1]
            capped = torch.clamp(n_rel, max=k)
            if name == "recall":
                values = hits_k / n_rel
            elif name == "precision":
                values = hits_k / k
            elif name == "hit":
                values = (hits_k > 0).to(torch.float64)
            elif name == "ndcg":
                values = cum_dcg[:, k - 1] / ideal[capped.long() - 1]
            elif name == "mrr":
                values = torch.where(first_rank <= k, 1.0 / first_rank, 0.0)
            else:  # map
                values = cum_ap[:, k - 1] / capped
            out[f"{name}@{k}"] = float(values.sum())
    return out


@torch.no_grad()
def evaluate_ranking(
    user_emb: Tensor,
    item_emb: Tensor,
    truth: sp.csr_matrix,
    exclude: Sequence[sp.csr_matrix] = (),
    ks: Sequence[int] = (10, 20, 50),
    score: Score = "dot",
    chunk_size: int | None = None,
    progress: bool = False,
    *,
    precision: Precision = "auto",
) -> dict[str, float]:
    """Exact full-ranking metrics of every user with at least one relevant item in ``truth``
    (the means of :func:`ranking_sums`, whose docstring has the details)."""
    sums, users = ranking_sums(
        user_emb, item_emb, truth, exclude, ks, score, chunk_size, progress, precision=precision
    )
    return metric_means(sums, users)


def metric_means(sums: dict[str, float], users: int) -> dict[str, float]:
    """``{metric: sum / users}`` plus ``"users"`` (NaN metrics for 0 users): sums over all users first,
    one division last, so shards of users merge exactly (never a mean of means)."""
    if users == 0:
        return {**dict.fromkeys(sums, math.nan), "users": 0}
    return {**{name: value / users for name, value in sums.items()}, "users": users}


@torch.no_grad()
def ranking_sums(
    user_emb: Tensor,
    item_emb: Tensor,
    truth: sp.csr_matrix,
    exclude: Sequence[sp.csr_matrix] = (),
    ks: Sequence[int] = (10, 20, 50),
    score: Score = "dot",
    chunk_size: int | None = None,
    progress: bool = False,
    *,
    precision: Precision = "auto",
    shard: tuple[int, int] = (0, 1),
) -> tuple[dict[str, float], int]:
    """Exact full-ranking metrics of every user with at least one relevant item in ``truth``.

    Each such user's items are ranked over the whole catalogue by ``score`` (``"dot"`` or ``"cosine"``
    of the embeddings), ties broken by lower item index; items in any ``exclude`` matrix (the user's
    training items, and validation items when testing) score ``-inf`` and are never recommended. A user
    with fewer than K rankable items gets a shorter list: the missing positions count as misses. Users
    without relevant items are not counted. ``truth`` and ``exclude`` are user x item sparse matrices
    (any stored nonzero is an interaction). A relevant item that is also excluded still counts in
    ``|relevant|`` but can never be hit (a warning says how many such pairs there are).

    Returns ``({f"{metric}@{K}": float64 sum over evaluated users}, number of evaluated users)`` for
    ``metric`` in recall, ndcg, precision, hit, mrr, map (formulas in :func:`metric_sums`, those of the
    LightGCN evaluator) and every K in ``ks``; :func:`metric_means` turns them into the means.
    ``shard=(i, n)`` evaluates only every n-th such user from the i-th on: the n shards' sums and counts
    add up to the whole (each user's ranking does not depend on which others are ranked with it).

    The ranking is exact and independent of ``chunk_size`` and ``precision`` (see
    :mod:`ssmrec.evaluate.ranking`); ``precision`` only picks the GEMM that proposes candidates
    (``"auto"``: bf16 for >= 4096 items on CPUs where bf16 GEMMs beat fp32, i.e. with AMX; else fp32).

    Memory: users are ranked in chunks of ``chunk_size`` (default ``min(128, 256 MiB / (4 n_items))``:
    128 users for Gowalla's 40,981 items; 64 to 256 were within 15% of each other in
    benchmarks/bench_evaluate.py, 128 fastest, as the scores are scanned right after the GEMM while
    mostly still cached). The transient peak is one coarse score matrix, ``chunk_size x n_items x 4``
    bytes (21 MB for Gowalla; plus 2 bytes per entry with bf16 candidates), plus candidate buffers of
    ``O(chunk_size x (K + 32) x 16)`` entries. Only when many rows of a chunk have more items tied at
    their K-th score than there are candidate slots, up to ``chunk_size x n_items x 12`` bytes more (a
    copy of those rows, a mask, wider candidate buffers). Add the fp32 (and bf16) embeddings of the
    evaluated users and of the items, and the row-selected ``truth`` / ``exclude`` matrices.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cutoffs, got {ks}")
    n_users, n_items = user_emb.shape[0], item_emb.shape[0]
    truth = as_csr(truth, (n_users, n_items), "truth")
    excl = [as_csr(m, (n_users, n_items), "exclude") for m in exclude]
    for m in excl:
        both = int(truth.multiply(m).nnz)
        if both:
            warnings.warn(
                f"{both} relevant (user, item) pairs are also excluded: they count as relevant but can "
                "never be recommended",
                RuntimeWarning,
                stacklevel=2,
            )
    n_relevant = np.diff(truth.indptr).astype(np.int64)
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    users = np.flatnonzero(n_relevant > 0)[index::count]
    names = metric_names(ks)
    if len(users) == 0:
        return dict.fromkeys(names, 0.0), 0

    truth_pairs = pair_source(truth[users], user_emb.device)
    excl_users = [m[users] for m in excl]
    selected = user_emb[torch.from_numpy(users).to(user_emb.device)]
    sums = dict.fromkeys(names, 0.0)
    for start, stop, top in iter_top_k(
        selected, item_emb, ks[-1], excl_users, score, chunk_size, precision, progress, desc="evaluate"
    ):
        with torch_threads(1):  # small tensors: see torch_threads
            # the sums on the CPU whatever the device: the same float64 order, so the same metrics as
            # the CPU evaluator on the same embeddings (one small copy per chunk, no sync per metric)
            hits = _hits(top, truth_pairs, start, stop, n_items).cpu()
            chunk_sums = metric_sums(hits, torch.from_numpy(n_relevant[users[start:stop]]), ks)
        for name, value in chunk_sums.items():
            sums[name] += value
    return sums, len(users)


def _hits(
    top: Tensor, truth: Callable[[int, int], tuple[Tensor, Tensor]], start: int, stop: int, n_items: int
) -> Tensor:
    """``hits[u, r]``: the item ranked ``r + 1`` for chunk row ``u`` is in ``truth`` (``-1`` is a miss).

    Truth pairs of the chunk become sorted keys ``row * n_items + item`` (CSR rows in order, sorted
    indices), so membership of all ``(u, top[u, r])`` is one ``searchsorted``.
    """
    rows, cols = truth(start, stop)
    if len(rows) == 0:
        return torch.zeros(top.shape, dtype=torch.bool, device=top.device)
    keys = rows * n_items + cols
    query = torch.arange(stop - start, device=top.device).unsqueeze(1) * n_items + top.clamp(min=0)
    position = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
    return (keys[position] == query) & (top >= 0)
