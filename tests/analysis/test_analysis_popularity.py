"""Popularity-bias metrics on hand-made lists: every expected value below is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ssmrec.analysis.popularity import (
    equal_mass_groups,
    gini,
    hit_matrix,
    popularity_metrics,
    summarize_groups,
)


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    users = [u for u, items in enumerate(rows) for _ in items]
    items = [i for row in rows for i in row]
    return sp.csr_matrix((np.ones(len(items)), (users, items)), shape=(len(rows), n_items))


def test_equal_mass_groups_on_a_known_popularity_vector() -> None:
    # Ascending (stable): item1 (1), item3 (1), item2 (3), item0 (5), item4 (10); cumulative 1, 2, 5, 10, 20.
    # Cuts at 2, 4, ..., 18: c=1 and c=2 (on the cut) -> group 1; c=5 -> 3; c=10 -> 5; c=20 -> 10.
    groups = equal_mass_groups(np.array([5, 1, 3, 1, 10]))
    assert groups.tolist() == [4, 0, 2, 0, 9]


def test_equal_mass_groups_one_item_per_group_when_popularity_is_flat() -> None:
    assert equal_mass_groups(np.ones(10, dtype=int)).tolist() == list(range(10))
    # Five items of 2 over ten groups: cumulative 2, 4, ..., 10 end in groups 2, 4, 6, 8, 10 (others empty).
    assert equal_mass_groups(np.full(5, 2)).tolist() == [1, 3, 5, 7, 9]


def test_straddling_item_goes_to_the_upper_group_and_zero_popularity_to_the_tail() -> None:
    # Two groups, T = 10, cut at 5. Ascending: item0 (3, c=3), item2 (3, c=6: straddles 5), item1 (4, c=10).
    assert equal_mass_groups(np.array([3, 4, 3]), n_groups=2).tolist() == [0, 1, 1]
    # An item ending exactly on the cut stays in the lower group.
    assert equal_mass_groups(np.array([5, 5]), n_groups=2).tolist() == [0, 1]
    assert equal_mass_groups(np.array([0, 0, 4]), n_groups=2).tolist() == [0, 0, 1]
    # Every group holds about T/G interactions on a long-tailed vector.
    popularity = np.random.default_rng(0).zipf(1.6, 5000).clip(max=2000)
    groups = equal_mass_groups(popularity)
    mass = np.bincount(groups, weights=popularity, minlength=10)
    assert np.all(np.abs(mass - popularity.sum() / 10) <= popularity.max())
    assert popularity[groups == 0].max() <= popularity[groups == 9].min()


def test_only_the_most_popular_item_recommended() -> None:
    popularity = np.array([1, 2, 3, 4, 10])  # item 4 is the most popular, alone in group 10
    truth = _csr([[4], [0], [1, 2]], 5)
    result = popularity_metrics(np.array([[4], [4], [4]]), truth, popularity, equal_mass_groups(popularity))
    assert result.arp == 10.0
    assert result.coverage == pytest.approx(1 / 5)
    assert result.gini == pytest.approx(4 / 5)  # (n - 1) / n: one item gets all exposure
    assert result.tail_share == 0.0
    assert result.recall == pytest.approx(1 / 3)  # user 0 finds its one item; users 1 and 2 nothing
    assert result.group_recall[9] == pytest.approx(1 / 3)
    assert result.group_share.tolist() == [0.0] * 9 + [1.0]


def test_group_recall_share_arp_tail_share_by_hand() -> None:
    # Ten items with popularity 1..10 (T = 55); cumulative 1, 3, 6, 10, 15, 21, 28, 36, 45, 55.
    # Group ceil(10 c / 55): items 0-1 -> 1 (tail), 2-3 -> 2, 4 -> 3, 5 -> 4, 6 -> 6, 7 -> 7, 8 -> 9, 9 -> 10
    popularity = np.arange(1, 11)
    groups = equal_mass_groups(popularity)
    assert (groups + 1).tolist() == [1, 1, 2, 2, 3, 4, 6, 7, 9, 10]
    top = np.array([[0, 9, 5], [1, 2, -1]])  # user 1 has only two rankable items: -1 padding
    truth = _csr([[0, 5, 7], [2, 4]], 10)
    result = popularity_metrics(top, truth, popularity, groups)
    # User 0 hits items 0 (group 1) and 5 (group 4) of its 3; user 1 hits item 2 (group 2) of its 2.
    expected = np.zeros(10)
    expected[0] = (1 / 3) / 2
    expected[1] = (1 / 2) / 2
    expected[3] = (1 / 3) / 2
    assert result.group_recall == pytest.approx(expected)
    assert result.recall == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert result.group_share[[0, 1, 3]] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert result.group_share.sum() == pytest.approx(1.0)
    assert result.arp == pytest.approx(((1 + 10 + 6) / 3 + (2 + 3) / 2) / 2)
    assert result.coverage == pytest.approx(5 / 10)
    assert result.tail_share == pytest.approx(2 / 5)  # items 0 and 1 of 5 filled slots
    # Exposure: items 0, 1, 2, 5, 9 once each, five items never: sorted 0,0,0,0,0,1,1,1,1,1.
    assert result.gini == pytest.approx(sum(2 * k - 11 for k in range(6, 11)) / (10 * 5))
    assert result.users == 2 and result.k == 3


def test_gini_and_hit_matrix_by_hand() -> None:
    assert gini(np.array([1, 1, 1, 1])) == 0.0
    assert gini(np.array([0, 0, 1, 1])) == pytest.approx(0.5)  # (1*1 + 3*1) / (4*2)
    assert np.isnan(gini(np.zeros(3)))
    hits = hit_matrix(np.array([[2, 0, -1], [1, 3, 0]]), _csr([[0, 1], [3]], 4))
    assert hits.tolist() == [[False, True, False], [False, True, False]]


def test_group_summary() -> None:
    popularity = np.array([5, 1, 3, 1, 10])
    summary = summarize_groups(popularity, equal_mass_groups(popularity), _csr([[4, 1], [4]], 5))
    assert summary.items.tolist() == [2, 0, 1, 0, 1, 0, 0, 0, 0, 1]
    assert summary.interactions.tolist() == [2, 0, 3, 0, 5, 0, 0, 0, 0, 10]
    assert summary.min_popularity[0] == 1 and summary.max_popularity[9] == 10
    assert summary.held_out.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
