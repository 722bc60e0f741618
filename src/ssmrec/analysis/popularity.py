"""Claim 1 — SSM mitigates popularity bias: who gets recommended, and where the hits come from.

Everything here is a function of the top-K lists (computed by the one ranking engine,
:func:`ssmrec.evaluate.top_k`, exactly as evaluation ranks), the held-out truth of the evaluated
split and the *training* popularity of every item.

Definitions (``U`` = evaluated users, those with at least one held-out item; ``L_u`` = user u's top-K
list without padding; ``T_u`` = u's held-out items; ``pop(i)`` = training interactions of item i;
``I`` = all items):

- **Equal-mass popularity groups** (:func:`equal_mass_groups`, the official SSM code's protocol):
  sort items by ``pop`` ascending (ties by item index), let ``c_i`` be the cumulative training
  interactions up to and including item i in that order and ``T = Σ pop``. Item i is in group
  ``g ∈ 1..G`` iff ``(g−1)·T/G < c_i ≤ g·T/G`` (items with ``c_i = 0`` are in group 1). So every group
  holds about ``T/G`` interactions; group 1 is the long tail (many rarely seen items), group G the
  head. An item that straddles a cut (its interactions start below ``g·T/G`` and end above it) goes to
  the *upper* group, the one in which its cumulative count ends; an item ending exactly on a cut stays
  in the lower group. A single item holding more than ``T/G`` interactions leaves the groups it skips
  empty.
- **Per-group Recall@K** (the official code's decomposition):
  ``recall_g = (1/|U|) Σ_u |L_u ∩ T_u ∩ G_g| / |T_u|``; ``Σ_g recall_g = Recall@K``.
- **Per-group share of hits**: ``share_g = Σ_u |L_u ∩ T_u ∩ G_g| / Σ_u |L_u ∩ T_u|``, the fraction of
  all correct recommendations (pooled over users) that are items of group g; ``Σ_g share_g = 1``.
- **ARP** (average recommendation popularity): ``(1/|U|) Σ_u (1/|L_u|) Σ_{i ∈ L_u} pop(i)``.
- **Coverage@K**: ``|∪_u L_u| / |I|``.
- **Tail share**: fraction of all recommended slots ``Σ_u |L_u|`` that hold an item of the tail
  group(s) ``1..tail_groups`` (default: group 1 only).
- **Gini of exposure**: with ``e_i = #{u : i ∈ L_u}`` over *all* items (unexposed items count with
  ``e_i = 0``) sorted ascending ``e_(1) ≤ … ≤ e_(n)``:
  ``Gini = Σ_k (2k − n − 1) e_(k) / (n Σ_k e_(k))``; 0 when every item is recommended equally often,
  ``(n−1)/n`` when one item gets all exposure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from matplotlib.figure import Figure
from torch import Tensor

from ssmrec.analysis.plotting import new_figure, run_colors
from ssmrec.evaluate import top_k

N_GROUPS = 10
"""Popularity groups of the official SSM protocol."""


def equal_mass_groups(popularity: np.ndarray, n_groups: int = N_GROUPS) -> np.ndarray:
    """0-based group of every item (0 = tail, ``n_groups − 1`` = head); see the module docstring.

    Integer arithmetic: ``(g−1)·T/G < c ≤ g·T/G`` ⇔ ``g = clip(⌈G·c/T⌉, 1, G)``, computed as
    ``(G·c − 1) // T + 1`` so no float rounding decides a boundary.
    """
    popularity = np.asarray(popularity, dtype=np.int64)
    if popularity.ndim != 1:
        raise ValueError(f"popularity must be a vector, got shape {popularity.shape}")
    if (popularity < 0).any():
        raise ValueError("popularity must be non-negative")
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    total = int(popularity.sum())
    groups = np.zeros(len(popularity), dtype=np.int64)
    if total == 0:
        return groups
    order = np.argsort(popularity, kind="stable")
    cumulative = np.cumsum(popularity[order])
    groups[order] = np.clip((n_groups * cumulative - 1) // total, 0, n_groups - 1)
    return groups


def recommend(
    users_repr: Tensor,
    items_repr: Tensor,
    users: np.ndarray,
    k: int,
    exclude: Sequence[sp.csr_matrix],
    score: str,
) -> np.ndarray:
    """Top-``k`` lists of ``users`` (``(len(users), k)`` int64, ``-1`` padded) by the evaluation engine."""
    top = top_k(users_repr, items_repr, users, k, exclude=exclude, score=score)  # type: ignore[arg-type]
    return top.cpu().numpy()


def hit_matrix(top: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """``hits[r, j]``: item ``top[r, j]`` is in row r of ``truth`` (rows already aligned with ``top``).

    Truth pairs become sorted keys ``row · n_items + item`` (CSR with sorted indices), so membership of
    every slot is one ``searchsorted``; ``-1`` slots are misses.
    """
    truth = sp.csr_matrix(truth)
    truth.sort_indices()
    n_rows, n_items = truth.shape
    if top.shape[0] != n_rows:
        raise ValueError(f"top has {top.shape[0]} rows, truth {n_rows}")
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(truth.indptr))
    keys = rows * n_items + truth.indices.astype(np.int64)
    if len(keys) == 0:
        return np.zeros(top.shape, dtype=bool)
    query = np.arange(n_rows, dtype=np.int64)[:, None] * n_items + np.clip(top, 0, None)
    position = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return (keys[position] == query) & (top >= 0)


def gini(exposure: np.ndarray) -> float:
    """Gini index of a non-negative vector: ``Σ_k (2k − n − 1) x_(k) / (n Σ x)``, ascending order."""
    x = np.sort(np.asarray(exposure, dtype=np.float64))
    n, total = len(x), float(x.sum())
    if n == 0 or total == 0:
        return float("nan")
    k = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * k - n - 1) * x).sum() / (n * total))


@dataclass(frozen=True)
class PopularityResult:
    """Popularity-bias metrics of one run's top-K lists on one split (formulas in the module docstring)."""

    k: int
    users: int
    group_recall: np.ndarray
    """Per-group Recall@K contribution, length G; sums to ``recall``."""
    group_share: np.ndarray
    """Per-group share of hits, length G; sums to 1 (NaN without any hit)."""
    recall: float
    arp: float
    coverage: float
    tail_share: float
    tail_groups: int
    gini: float


def popularity_metrics(
    top: np.ndarray,
    truth: sp.csr_matrix,
    popularity: np.ndarray,
    groups: np.ndarray,
    n_groups: int = N_GROUPS,
    tail_groups: int = 1,
) -> PopularityResult:
    """Metrics of the lists ``top`` (one row per evaluated user, ``-1`` padded) against ``truth``.

    ``truth`` holds the same rows as ``top`` (every row with at least one item); ``popularity`` and
    ``groups`` (0-based, from :func:`equal_mass_groups`) are per item.
    """
    top = np.asarray(top, dtype=np.int64)
    n_users, k = top.shape
    n_items = len(popularity)
    n_relevant = np.diff(sp.csr_matrix(truth).indptr).astype(np.float64)
    if len(n_relevant) != n_users or (n_relevant == 0).any():
        raise ValueError("truth must have one non-empty row per row of top")
    valid = top >= 0
    items = np.where(valid, top, 0)
    hits = hit_matrix(top, truth)
    group_of_slot = groups[items]

    per_user_group = np.zeros((n_users, n_groups), dtype=np.float64)  # hits per user and group
    rows = np.broadcast_to(np.arange(n_users)[:, None], top.shape)
    np.add.at(per_user_group, (rows[hits], group_of_slot[hits]), 1.0)
    group_recall = (per_user_group / n_relevant[:, None]).mean(axis=0)
    group_hits = per_user_group.sum(axis=0)
    total_hits = group_hits.sum()
    group_share = group_hits / total_hits if total_hits > 0 else np.full(n_groups, np.nan)

    list_length = valid.sum(axis=1)
    pop_sum = np.where(valid, np.asarray(popularity, dtype=np.float64)[items], 0.0).sum(axis=1)
    has_list = list_length > 0
    arp = float((pop_sum[has_list] / list_length[has_list]).mean()) if has_list.any() else float("nan")
    exposure = np.bincount(top[valid], minlength=n_items)
    slots = int(valid.sum())
    tail = int((valid & (group_of_slot < tail_groups)).sum())
    return PopularityResult(
        k=k,
        users=n_users,
        group_recall=group_recall,
        group_share=group_share,
        recall=float(group_recall.sum()),
        arp=arp,
        coverage=float((exposure > 0).sum() / n_items),
        tail_share=tail / slots if slots else float("nan"),
        tail_groups=tail_groups,
        gini=gini(exposure),
    )


@dataclass(frozen=True)
class GroupSummary:
    """What the popularity groups of a dataset look like (for the report's group table)."""

    items: np.ndarray
    interactions: np.ndarray
    min_popularity: np.ndarray
    max_popularity: np.ndarray
    held_out: np.ndarray
    """Held-out (evaluated split) interactions on each group's items."""


def summarize_groups(
    popularity: np.ndarray, groups: np.ndarray, truth: sp.csr_matrix, n_groups: int = N_GROUPS
) -> GroupSummary:
    """Item count, training interactions, popularity range and held-out interactions per group."""
    popularity = np.asarray(popularity, dtype=np.int64)
    items = np.bincount(groups, minlength=n_groups)
    interactions = np.bincount(groups, weights=popularity, minlength=n_groups).astype(np.int64)
    lo = np.full(n_groups, -1, dtype=np.int64)
    hi = np.full(n_groups, -1, dtype=np.int64)
    for g in range(n_groups):  # G = 10 iterations, each vectorised over items
        members = popularity[groups == g]
        if len(members):
            lo[g], hi[g] = members.min(), members.max()
    held = np.bincount(groups[sp.csr_matrix(truth).indices], minlength=n_groups).astype(np.int64)
    return GroupSummary(items, interactions, lo, hi, held)


def evaluated_users(truth: sp.csr_matrix) -> np.ndarray:
    """Users with at least one held-out item: the users every metric averages over."""
    return np.flatnonzero(np.diff(truth.indptr) > 0)


def plot_groups(labels: Sequence[str], results: Sequence[PopularityResult]) -> Figure:
    """Per-group Recall@K contribution and share of hits: one bar per run in every group."""
    n_groups = len(results[0].group_recall) if results else N_GROUPS
    figure = new_figure(11, 4.2)
    left, right = figure.subplots(1, 2)
    width = 0.8 / max(1, len(results))
    x = np.arange(1, n_groups + 1)
    for n, (label, result, color) in enumerate(zip(labels, results, run_colors(len(results)), strict=True)):
        offset = (n - (len(results) - 1) / 2) * width
        left.bar(x + offset, result.group_recall, width, label=label, color=color)
        right.bar(x + offset, 100 * result.group_share, width, label=label, color=color)
    k = results[0].k if results else 20
    left.set_title(f"Recall@{k} contributed by each popularity group")
    left.set_ylabel(f"recall@{k} from group (sums to Recall@{k})")
    right.set_title("Share of all hits falling in each group")
    right.set_ylabel("share of hits (%)")
    for axis in (left, right):
        axis.set_xlabel("item popularity group (1 = tail, 10 = head; equal training interactions)")
        axis.set_xticks(x)
        axis.legend(fontsize="small")
        axis.grid(axis="y", alpha=0.3)
    return figure
