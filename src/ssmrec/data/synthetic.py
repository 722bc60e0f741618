"""Synthetic implicit feedback with power-law popularity and activity and planted cluster structure.

Used to test that models learn (a planted signal a popularity ranking cannot find) and to measure
scale far beyond the public datasets (1 M users × 1 M items × 20 M interactions) without shipping data.

Generative process, vectorised end to end:
- every user and every item belongs to one of ``n_clusters`` clusters (uniformly at random);
- user activity and item popularity weights follow Zipf laws, ``w_r ∝ r^{-exponent}`` over a random
  permutation of ranks;
- each interaction picks its user with probability ∝ activity weight; with probability ``affinity`` its
  item comes from the user's own cluster, otherwise from all items, in both cases ∝ popularity weight.
Repeated (user, item) draws are dropped, then the usual per-user ratio split applies.
"""

from __future__ import annotations

import numpy as np

from ssmrec.data.build import build_interactions
from ssmrec.data.interactions import Interactions
from ssmrec.data.readers import RawData, RawSplit


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return weights[rng.permutation(n)]


def _draw(cdf: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, uniforms, side="right"), len(cdf) - 1)


def synthetic_interactions(
    n_users: int,
    n_items: int,
    n_interactions: int,
    *,
    n_clusters: int = 50,
    affinity: float = 0.8,
    user_exponent: float = 0.8,
    item_exponent: float = 0.9,
    test_ratio: float = 0.2,
    valid_ratio: float = 0.0,
    seed: int = 0,
) -> Interactions:
    """A dataset drawn from the process in the module docstring (``n_interactions`` draws before dedup)."""
    if min(n_users, n_items, n_interactions, n_clusters) <= 0:
        raise ValueError("sizes and n_clusters must be positive")
    if not 0 <= affinity <= 1:
        raise ValueError(f"affinity must be in [0, 1], got {affinity}")
    rng = np.random.default_rng(seed)
    user_cluster = rng.integers(0, n_clusters, n_users)
    item_cluster = rng.integers(0, n_clusters, n_items)
    user_cdf = np.cumsum(_zipf_weights(n_users, user_exponent, rng))
    users = _draw(user_cdf, rng.random(n_interactions) * user_cdf[-1])

    popularity = _zipf_weights(n_items, item_exponent, rng)
    global_cdf = np.cumsum(popularity)
    items = _draw(global_cdf, rng.random(n_interactions) * global_cdf[-1])

    # In-cluster draws: items sorted by cluster; each cluster's CDF scaled into [c, c + 1) so that one
    # searchsorted over the concatenation draws from the right cluster for every interaction at once.
    order = np.argsort(item_cluster, kind="stable")
    sorted_cluster = item_cluster[order]
    weights = popularity[order]
    cluster_totals = np.bincount(sorted_cluster, weights=weights, minlength=n_clusters)
    within = np.cumsum(weights) - np.repeat(np.cumsum(cluster_totals) - cluster_totals, np.bincount(
        sorted_cluster, minlength=n_clusters))  # fmt: skip
    scaled_cdf = sorted_cluster + within / cluster_totals[sorted_cluster]
    in_cluster = rng.random(n_interactions) < affinity
    wanted = user_cluster[users[in_cluster]]
    has_items = cluster_totals[wanted] > 0
    position = _draw(scaled_cdf, wanted + rng.random(len(wanted)) * (1 - 1e-12))
    chosen = np.where(has_items, order[position], items[in_cluster])
    items[in_cluster] = chosen

    raw = RawData(format="synthetic", splits={"all": RawSplit(users=users, items=items)})
    options = {"n_users": n_users, "n_items": n_items, "n_interactions": n_interactions, "seed": seed,
               "n_clusters": n_clusters, "affinity": affinity}  # fmt: skip
    return build_interactions(
        "synthetic", raw, test_ratio=test_ratio, valid_ratio=valid_ratio, seed=seed, options=options
    )
