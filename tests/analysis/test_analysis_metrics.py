"""Magnitude, hard-negative and bound metrics on constructed inputs with hand-computed expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import spearmanr

from ssmrec.analysis.bound import bound_analysis, loss_metric_relation, softmax_dcg
from ssmrec.analysis.curves import training_curve
from ssmrec.analysis.hardness import hardness_analysis, negative_weight_shares, sample_training_pairs
from ssmrec.analysis.magnitude import binned_means, degree_bin, elasticity, magnitude_analysis, spearman


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    users = [u for u, items in enumerate(rows) for _ in items]
    items = [i for row in rows for i in row]
    return sp.csr_matrix((np.ones(len(items)), (users, items)), shape=(len(rows), n_items))


# ------------------------------------------------------------------------------------------ magnitude


def test_spearman_sign_on_constructed_examples() -> None:
    degree = np.array([1, 2, 3, 5, 8, 13, 21, 34])
    assert spearman(np.sqrt(degree), degree) == pytest.approx(1.0)
    assert spearman(1.0 / degree, degree) == pytest.approx(-1.0)
    noise = np.random.default_rng(0).normal(0, 0.1, 1000)
    base = np.random.default_rng(1).integers(1, 100, 1000)
    assert spearman(np.log(base) + noise, base) > 0.9
    assert abs(spearman(noise, base)) < 0.1
    assert math.isnan(spearman(np.ones(5), np.arange(5)))
    ties = np.array([1, 1, 2, 2, 3, 7, 7])
    values = np.array([0.3, 0.1, 0.2, 0.5, 0.4, 0.9, 0.6])
    assert spearman(values, ties) == pytest.approx(spearmanr(values, ties).statistic)


def test_binned_means_by_hand() -> None:
    degree = np.array([0, 1, 1, 2, 3, 4, 8])
    norms = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0])
    assert degree_bin(degree).tolist() == [0, 1, 1, 2, 2, 3, 4]
    bins = binned_means(degree, norms)
    assert bins.lo.tolist() == [0, 1, 2, 4, 8] and bins.hi.tolist() == [1, 2, 4, 8, 16]
    assert bins.count.tolist() == [1, 2, 2, 1, 1]
    assert bins.mean_norm.tolist() == [5.0, 2.0, 3.0, 6.0, 7.0]
    assert bins.mean_degree.tolist() == [0.0, 1.0, 2.5, 4.0, 8.0]
    assert bins.relative == pytest.approx(bins.mean_norm / 4.0)  # mean of all norms = 28 / 7


def test_magnitude_analysis_on_representations_whose_norm_is_the_degree() -> None:
    item_degree = np.array([1, 4, 2, 8])
    user_degree = np.array([3, 1, 2])
    items = torch.tensor([[1.0, 0.0], [0.0, 4.0], [2.0, 0.0], [0.0, 8.0]])
    users = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])  # norms 1, 3, 2 against degrees 3, 1, 2
    result = magnitude_analysis(users, items, user_degree, item_degree)
    assert result.item_spearman == pytest.approx(1.0)
    assert result.user_spearman == pytest.approx(-1.0)
    assert result.item_mean_norm == pytest.approx(15 / 4)
    assert result.item_elasticity == pytest.approx(1.0)  # norm = degree exactly: slope 1 in log-log


def test_elasticity_is_the_log_log_slope() -> None:
    degree = np.array([1, 10, 100, 1000, 0])  # degree 0 is left out
    assert elasticity(degree, 3.0 * degree.clip(min=1) ** 0.25) == pytest.approx(0.25)
    assert elasticity(degree, np.full(5, 2.0)) == pytest.approx(0.0)
    # a tiny monotone trend: Spearman ρ is 1, the elasticity shows how small it is
    tiny = 1.0 + 1e-3 * np.log10(degree.clip(min=1))
    assert spearman(tiny[:4], degree[:4]) == pytest.approx(1.0)
    assert elasticity(degree, tiny) < 1e-3
    assert np.isnan(elasticity(np.array([5, 5]), np.array([1.0, 2.0])))


# ------------------------------------------------------------------------------------------ hard negatives


def test_ssm_and_bpr_shares_on_a_constructed_score_vector() -> None:
    # 100 negatives: one scored ln 99, 99 scored 0; tau = 1. SSM weights exp(s): 99 and 99 x 1.
    scores = np.zeros((1, 100))
    scores[0, 37] = math.log(99)
    fractions = [0.01, 0.1, 1.0]
    ssm = negative_weight_shares(scores, np.zeros(1), None, "ssm", 1.0, fractions)[0]
    assert ssm == pytest.approx([99 / 198, (99 + 9) / 198, 1.0])
    # BPR weights sigma(s_n - s_p) with s_p = 0: sigma(ln 99) = 0.99 and 99 x 0.5.
    bpr = negative_weight_shares(scores, np.zeros(1), None, "bpr", 1.0, fractions)[0]
    total = 0.99 + 99 * 0.5
    assert bpr == pytest.approx([0.99 / total, (0.99 + 9 * 0.5) / total, 1.0])
    # Equal scores: every negative carries the same weight, so share(q) = ceil(q n) / n for both.
    flat = np.zeros((1, 30))
    for loss in ("ssm", "bpr"):
        shares = negative_weight_shares(flat, np.zeros(1), None, loss, 0.1, [0.01, 0.1, 0.5])[0]
        assert shares == pytest.approx([1 / 30, 3 / 30, 15 / 30])


def test_temperature_sharpens_ssm_and_masked_items_are_not_negatives() -> None:
    scores = np.array([[0.9, 0.5, 0.1, -0.3, 0.95]])
    negative = np.array([[True, True, True, True, False]])  # item 4 is a training item: not a negative
    sharp = negative_weight_shares(scores, np.array([0.2]), negative, "ssm", 0.05, [0.25])[0, 0]
    soft = negative_weight_shares(scores, np.array([0.2]), negative, "ssm", 1.0, [0.25])[0, 0]
    weights = np.exp(np.array([0.9, 0.5, 0.1, -0.3]) / 0.05)
    assert sharp == pytest.approx(weights[0] / weights.sum())
    assert sharp > soft > 0.25


def test_hardness_analysis_uses_only_negatives_and_sampled_pairs_are_training_pairs() -> None:
    train = _csr([[0, 1], [2], [1, 3, 4]], 6)
    users, items = sample_training_pairs(train, 4, np.random.default_rng(0))
    assert len(users) == 4 and all(train[u, i] == 1 for u, i in zip(users, items, strict=True))
    assert len(sample_training_pairs(train, 100, np.random.default_rng(0))[0]) == train.nnz
    generator = torch.Generator().manual_seed(0)
    user_repr, item_repr = torch.randn(3, 4, generator=generator), torch.randn(6, 4, generator=generator)
    result = hardness_analysis(user_repr, item_repr, train, users, items, "ssm", "cosine", 0.1)
    negatives = {0: 4, 1: 5, 2: 3}
    assert result.mean_negatives == pytest.approx(np.mean([negatives[u] for u in users]))
    assert result.share_at(1.0) == pytest.approx(1.0)
    assert result.share_at(0.01) >= 1 / 5 - 1e-12  # the top negative alone carries the most of at most 5


# ------------------------------------------------------------------------------------------ bound


def test_softmax_dcg_by_hand() -> None:
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    loss, dcg, count = softmax_dcg(scores, _csr([[1]], 3), [], temperature=1.0)
    assert loss[0] == pytest.approx(math.log(math.e + 1 + math.exp(-1)))  # log sum_j exp(s_j - s_1)
    assert dcg[0] == pytest.approx(1 / math.log2(3))  # item 1 ranked second
    assert count[0] == 1
    # Excluding item 0 moves item 1 to rank 1 but leaves the loss (over all items) unchanged.
    loss_ex, dcg_ex, _ = softmax_dcg(scores, _csr([[1]], 3), [_csr([[0]], 3)], temperature=1.0)
    assert dcg_ex[0] == pytest.approx(1.0) and loss_ex[0] == pytest.approx(loss[0])
    # Ties rank the lower item index first: item 2 is third among three equal scores.
    _, tied, _ = softmax_dcg(torch.zeros(1, 3), _csr([[2]], 3), [], temperature=0.5)
    assert tied[0] == pytest.approx(1 / math.log2(4))
    # Two held-out items: losses average, DCG adds; temperature 0.5 doubles the score gaps.
    loss2, dcg2, count2 = softmax_dcg(scores, _csr([[0, 2]], 3), [], temperature=0.5)
    l0 = math.log(1 + math.exp(-2) + math.exp(-4))
    l2 = math.log(math.exp(4) + math.exp(2) + 1)
    assert loss2[0] == pytest.approx((l0 + l2) / 2)
    assert dcg2[0] == pytest.approx(1 + 1 / math.log2(4)) and count2[0] == 2


def test_bound_holds_for_random_scores() -> None:
    generator = torch.Generator().manual_seed(3)
    users, items = torch.randn(40, 8, generator=generator), torch.randn(300, 8, generator=generator)
    rng = np.random.default_rng(3)
    dense = rng.random((40, 300)) < 0.03
    dense[np.arange(40), rng.integers(0, 300, 40)] = True  # every user has a held-out item
    truth = sp.csr_matrix(dense.astype(np.float32))
    train = sp.csr_matrix(((rng.random((40, 300)) < 0.05) & ~dense).astype(np.float32))
    for similarity, tau in (("cosine", 0.1), ("dot", 1.0), ("cosine", 2.0)):
        result = bound_analysis(users, items, truth, [train], np.arange(0, 40, 2), similarity, tau, chunk=7)
        assert len(result.loss) == 20
        assert result.holds == 1.0 and result.holds_tight == 1.0
        assert np.all(result.neg_log_dcg + np.log(result.n_test) <= result.loss + 1e-9)


def test_loss_metric_relation_and_curves_from_a_history() -> None:
    history = [
        {"epoch": 1, "loss": 9.0, "ndcg@20": 0.10, "recall@20": 0.2, "split": "test"},
        {"epoch": 2, "loss": 7.0, "ndcg@20": 0.15, "recall@20": 0.3, "split": "test"},
        {"epoch": 3, "loss": 6.0, "ndcg@20": 0.14, "recall@20": 0.25, "split": "test"},
        {"epoch": 4, "loss": 5.0, "ndcg@20": 0.20, "recall@20": 0.35, "split": "test"},
    ]
    relation = loss_metric_relation(history)
    # Loss ranks 4, 3, 2, 1 against NDCG ranks 1, 3, 2, 4: d = 3, 0, 0, -3, rho = 1 - 6*18/(4*15) = -0.8.
    assert relation.spearman == pytest.approx(-0.8)
    assert relation.spearman == pytest.approx(spearmanr([9, 7, 6, 5], [0.10, 0.15, 0.14, 0.20]).statistic)
    assert relation.split == "test" and relation.epochs.tolist() == [1, 2, 3, 4]
    assert math.isnan(loss_metric_relation(history[:2]).spearman)
    curve = training_curve(history)
    assert curve.best("recall@20") == (4, 0.35) and curve.evaluations == 4
    assert curve.best("mrr@20")[0] == 0
