"""The synthetic generator: reproducible, skewed popularity, and a planted cluster signal."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ssmrec.data.synthetic import synthetic_interactions


def test_same_seed_same_data_other_seed_other_data() -> None:
    first = synthetic_interactions(300, 200, 6000, n_clusters=5, seed=3)
    second = synthetic_interactions(300, 200, 6000, n_clusters=5, seed=3)
    third = synthetic_interactions(300, 200, 6000, n_clusters=5, seed=4)
    assert (first.train != second.train).nnz == 0 and (first.test != second.test).nnz == 0
    assert first.train.shape != third.train.shape or (first.train != third.train).nnz > 0


def test_popularity_is_skewed_and_splits_are_disjoint() -> None:
    data = synthetic_interactions(2000, 1000, 40000, n_clusters=10, seed=0)
    popularity = np.sort(data.item_popularity)[::-1]
    top_decile_share = popularity[: len(popularity) // 10].sum() / popularity.sum()
    assert top_decile_share > 0.3  # uniform popularity would give about 0.1
    assert data.train.multiply(data.test).nnz == 0


def test_affinity_one_keeps_every_interaction_inside_the_users_cluster() -> None:
    data = synthetic_interactions(400, 300, 8000, n_clusters=4, affinity=1.0, seed=1)
    # Recover clusters from co-occurrence: with affinity 1 the user-item graph splits into exactly
    # n_clusters connected components (every cluster has users and items at these sizes).
    graph = sp.bmat([[None, data.train], [data.train.T, None]])
    n_components, _ = connected_components(graph, directed=False)
    assert n_components == 4
    mixed = synthetic_interactions(400, 300, 8000, n_clusters=4, affinity=0.0, seed=1)
    graph = sp.bmat([[None, mixed.train], [mixed.train.T, None]])
    assert connected_components(graph, directed=False)[0] == 1
