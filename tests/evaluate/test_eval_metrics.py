"""Metric values on hand-made rankings; every expected number is worked out by hand in the test.

Embeddings of dimension 1 make the ranking explicit: with user embedding ``[1]`` the score of item
``i`` is the item's value, so items listed in decreasing value are ranked 1, 2, 3, ...
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ssmrec.evaluate import METRICS, evaluate_ranking, metric_names

# Item i has score 6 - i: the ranking is item 0, 1, 2, 3, 4, 5 (ranks 1..6).
ITEMS = torch.tensor([[6.0], [5.0], [4.0], [3.0], [2.0], [1.0]])


def csr(rows: list[list[int]], n_items: int = 6) -> sp.csr_matrix:
    data = np.zeros((len(rows), n_items), dtype=np.float32)
    for u, items in enumerate(rows):
        data[u, items] = 1.0
    return sp.csr_matrix(data)


def one_user(relevant: list[int], ks: tuple[int, ...], **kwargs: object) -> dict[str, float]:
    return evaluate_ranking(torch.ones(1, 1), ITEMS, csr([relevant]), ks=ks, **kwargs)


def test_hits_at_ranks_1_and_3() -> None:
    out = one_user([0, 2], ks=(1, 2, 3))
    assert out["users"] == 1
    # K = 3: both relevant items retrieved, at ranks 1 and 3.
    assert out["recall@3"] == pytest.approx(2 / 2)
    assert out["precision@3"] == pytest.approx(2 / 3)
    assert out["hit@3"] == pytest.approx(1.0)
    assert out["ndcg@3"] == pytest.approx(
        (1 / math.log2(2) + 1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3))
    )
    assert out["mrr@3"] == pytest.approx(1 / 1)
    assert out["map@3"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    # K = 2: only rank 1 is a hit.
    assert out["recall@2"] == pytest.approx(1 / 2)
    assert out["precision@2"] == pytest.approx(1 / 2)
    assert out["ndcg@2"] == pytest.approx((1 / math.log2(2)) / (1 / math.log2(2) + 1 / math.log2(3)))
    assert out["map@2"] == pytest.approx((1 / 1) / 2)
    # K = 1: IDCG over min(|R|, 1) = 1 position.
    assert out["recall@1"] == pytest.approx(1 / 2)
    assert out["precision@1"] == pytest.approx(1.0)
    assert out["ndcg@1"] == pytest.approx(1.0)
    assert out["map@1"] == pytest.approx(1.0)


def test_hits_at_ranks_2_and_5_of_three_relevant() -> None:
    out = one_user([1, 4, 5], ks=(5,))
    assert out["recall@5"] == pytest.approx(2 / 3)
    assert out["precision@5"] == pytest.approx(2 / 5)
    assert out["hit@5"] == pytest.approx(1.0)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert out["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / idcg)
    assert out["mrr@5"] == pytest.approx(1 / 2)
    assert out["map@5"] == pytest.approx((1 / 2 + 2 / 5) / 3)


def test_fewer_relevant_than_k_uses_min_in_idcg_and_map() -> None:
    out = one_user([1], ks=(5,))
    # One relevant item at rank 2: IDCG = 1/log2(2) (one position), MAP divides by min(1, 5) = 1.
    assert out["ndcg@5"] == pytest.approx((1 / math.log2(3)) / 1.0)
    assert out["map@5"] == pytest.approx(1 / 2)
    assert out["recall@5"] == pytest.approx(1.0)
    assert out["precision@5"] == pytest.approx(1 / 5)


def test_miss_gives_zeros() -> None:
    out = one_user([5], ks=(3,))
    for name in METRICS:
        assert out[f"{name}@3"] == 0.0


def test_mean_over_users_and_users_without_relevant_items_are_not_counted() -> None:
    users = torch.tensor([[1.0], [1.0], [1.0], [-1.0]])  # the last user ranks items in reverse: 5, 4, ..., 0
    truth = csr([[0, 2], [], [5], [0]])
    out = evaluate_ranking(users, ITEMS, truth, ks=(2,))
    assert out["users"] == 3
    # user 0: hit at rank 1 of 2 relevant; user 2: item 5 at rank 6 (miss); user 3: item 0 at rank 6 (miss).
    assert out["recall@2"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert out["hit@2"] == pytest.approx(1 / 3)
    assert out["ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3))) / 3)
    # The reversed user would hit item 5 at rank 1.
    out = evaluate_ranking(users, ITEMS, csr([[], [], [], [5]]), ks=(1,))
    assert out["users"] == 1
    assert out["hit@1"] == 1.0


def test_masked_training_items_are_never_recommended_and_short_lists_count_misses() -> None:
    # The top item 0 is excluded: item 1 moves to rank 1.
    out = evaluate_ranking(torch.ones(1, 1), ITEMS, csr([[1]]), exclude=[csr([[0]])], ks=(1,))
    assert out["hit@1"] == 1.0
    # Exclude 4 of 6 items: only items 4 and 5 can be ranked; the list at K = 4 has 2 entries.
    out = evaluate_ranking(
        torch.ones(1, 1), ITEMS, csr([[5]]), exclude=[csr([[0, 1]]), csr([[2, 3]])], ks=(4,)
    )
    assert out["recall@4"] == pytest.approx(1.0)
    assert out["precision@4"] == pytest.approx(1 / 4)  # missing positions are misses, not dropped
    assert out["mrr@4"] == pytest.approx(1 / 2)


def test_relevant_and_excluded_pair_warns_and_counts_as_relevant() -> None:
    with pytest.warns(RuntimeWarning, match="also excluded"):
        out = evaluate_ranking(torch.ones(1, 1), ITEMS, csr([[0, 1]]), exclude=[csr([[0]])], ks=(1,))
    assert out["recall@1"] == pytest.approx(1 / 2)  # item 1 found, item 0 can never be


def test_ties_rank_lower_index_first() -> None:
    items = torch.tensor([[1.0], [3.0], [3.0], [2.0], [3.0]])  # order: 1, 2, 4, 3, 0
    truth = csr([[4]], n_items=5)
    out = evaluate_ranking(torch.ones(1, 1), items, truth, ks=(2, 3))
    assert out["hit@2"] == 0.0
    assert out["mrr@3"] == pytest.approx(1 / 3)


def test_keys_values_and_empty_truth() -> None:
    out = one_user([0], ks=(3, 1, 3))
    assert list(out) == [*metric_names([1, 3]), "users"]
    empty = evaluate_ranking(torch.ones(1, 1), ITEMS, csr([[]]), ks=(2,))
    assert empty["users"] == 0
    assert all(math.isnan(empty[name]) for name in metric_names([2]))
    with pytest.raises(ValueError, match="ks"):
        one_user([0], ks=(0,))
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(torch.ones(2, 1), ITEMS, csr([[0]]))


def test_cutoff_larger_than_catalogue() -> None:
    out = one_user([2, 5], ks=(10,))
    assert out["recall@10"] == pytest.approx(1.0)
    assert out["precision@10"] == pytest.approx(2 / 10)
    assert out["map@10"] == pytest.approx((1 / 3 + 2 / 6) / 2)


def test_padding_of_short_lists_never_counts_as_a_hit() -> None:
    # Items 0-3 excluded: the K = 4 list is [4, 5, -, -]. Item 0 is relevant but can never be listed.
    with pytest.warns(RuntimeWarning, match="also excluded"):
        out = evaluate_ranking(torch.ones(1, 1), ITEMS, csr([[0, 5]]), exclude=[csr([[0, 1, 2, 3]])], ks=(4,))
    assert out["recall@4"] == pytest.approx(1 / 2)
    assert out["precision@4"] == pytest.approx(1 / 4)
    assert out["map@4"] == pytest.approx((1 / 2) / 2)
