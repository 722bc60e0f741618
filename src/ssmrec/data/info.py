"""Human-readable summary of a loaded dataset (``ssmrec data info``).

Shows what a reader of a results table needs to judge the numbers: split sizes, sparsity, what
cleaning removed, and how skewed popularity is (a popularity-biased loss behaves very differently on
a long-tailed dataset than on a flat one).
"""

from __future__ import annotations

import numpy as np

from ssmrec.data.interactions import Interactions


def popularity_stats(interactions: Interactions) -> dict[str, float]:
    """Skew of training item popularity and user activity (Gini, head share, quantiles)."""
    popularity = np.sort(interactions.item_popularity)
    activity = interactions.user_activity
    total = max(1, int(popularity.sum()))
    n_items = len(popularity)
    head = max(1, round(0.2 * n_items))
    return {
        "item_pop_min": float(popularity[0]) if n_items else 0.0,
        "item_pop_median": float(np.median(popularity)) if n_items else 0.0,
        "item_pop_mean": float(popularity.mean()) if n_items else 0.0,
        "item_pop_max": float(popularity[-1]) if n_items else 0.0,
        "item_gini": gini(popularity),
        "top20_item_share": float(popularity[-head:].sum() / total),
        "user_act_min": float(activity.min()) if len(activity) else 0.0,
        "user_act_median": float(np.median(activity)) if len(activity) else 0.0,
        "user_act_mean": float(activity.mean()) if len(activity) else 0.0,
        "user_act_max": float(activity.max()) if len(activity) else 0.0,
    }


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = all equal, ->1 = all mass on one item)."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(values)
    if n == 0 or values.sum() == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * ranks - n - 1).dot(values) / (n * values.sum()))


def describe(interactions: Interactions) -> str:
    """Multi-line summary: counts per split, sparsity, cleaning report, popularity, source files."""
    counts = interactions.counts()
    lines = [
        f"dataset {interactions.name}",
        f"  users {interactions.n_users:,}   items {interactions.n_items:,}   "
        f"interactions {counts['interactions']:,}   density {counts['density']:.4%}",
    ]
    for split_name, matrix in interactions.splits().items():
        users_with = int((np.diff(matrix.indptr) > 0).sum())
        lines.append(
            f"  {split_name:<5} {matrix.nnz:>12,} interactions   {users_with:>9,} users   "
            f"{matrix.nnz / max(1, users_with):8.2f} per user"
        )
    report = interactions.report
    dups = ", ".join(f"{k} {v:,}" for k, v in report.duplicates_dropped.items()) or "none"
    dropped = ", ".join(f"{k} {v:,}" for k, v in report.dropped_eval_pairs.items()) or "none"
    lines += [
        f"  duplicates dropped: {dups}",
        f"  held-out pairs dropped (user or item not in train): {dropped}",
        f"  cold held-out users {report.cold_test_users:,}   cold held-out items {report.cold_test_items:,}",
    ]
    stats = popularity_stats(interactions)
    lines += [
        f"  item popularity (train): min {stats['item_pop_min']:.0f}  median {stats['item_pop_median']:.0f}  "
        f"mean {stats['item_pop_mean']:.1f}  max {stats['item_pop_max']:.0f}  gini {stats['item_gini']:.3f}  "
        f"top 20% items hold {stats['top20_item_share']:.1%}",
        f"  user activity (train):   min {stats['user_act_min']:.0f}  median {stats['user_act_median']:.0f}  "
        f"mean {stats['user_act_mean']:.1f}  max {stats['user_act_max']:.0f}",
    ]
    for note in report.notes:
        lines.append(f"  note: {note}")
    if interactions.options:
        shown = ", ".join(f"{k}={v}" for k, v in interactions.options.items() if k != "fingerprint")
        lines.append(f"  read as {shown}")
    for file_name, digest in interactions.source.items():
        lines.append(f"  file {file_name}  sha256 {digest}")
    if "fingerprint" in interactions.options:
        lines.append(f"  fingerprint {interactions.options['fingerprint']}")
    return "\n".join(lines)
