"""Negative samplers: exclusion, distributions (within statistical tolerance), log q, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ssmrec.sampling import (
    AliasTable,
    InBatchSampler,
    MixedSampler,
    PopularitySampler,
    SharedSampler,
    TrainingSet,
    UniformSampler,
    build_sampler,
)

# 4 users × 8 items; item counts: item0 3, item1 2, item2 2, item3 1, item4 1, item5 1, items 6, 7 none
DENSE = np.zeros((4, 8), dtype=np.float32)
DENSE[0, [0, 1, 2]] = 1
DENSE[1, [0, 3]] = 1
DENSE[2, [0, 1, 4]] = 1
DENSE[3, [2, 5]] = 1
COUNTS = np.array([3, 2, 2, 1, 1, 1, 0, 0])


def _training() -> TrainingSet:
    return TrainingSet(sp.csr_matrix(DENSE))


def test_training_set_lookups_match_the_dense_matrix() -> None:
    training = _training()
    users, items = np.meshgrid(np.arange(4), np.arange(8), indexing="ij")
    np.testing.assert_array_equal(training.contains(users, items), DENSE.astype(bool))
    batch_users = np.array([2, 0, 2])
    columns = np.array([1, 7, 0, 0])
    np.testing.assert_array_equal(
        training.hits(batch_users, columns), DENSE.astype(bool)[batch_users][:, columns]
    )
    rows, entries = training.entries(np.array([3, 1]))
    assert list(zip(rows.tolist(), entries.tolist(), strict=True)) == [(0, 2), (0, 5), (1, 0), (1, 3)]
    np.testing.assert_array_equal(training.item_counts, COUNTS)


def _chi_square(observed: np.ndarray, expected: np.ndarray) -> float:
    return float(((observed - expected) ** 2 / expected).sum())


def test_alias_table_draws_its_weights() -> None:
    weights = np.array([5.0, 0.0, 1.0, 3.0, 1.0])
    table = AliasTable(weights)
    draws = table.sample(200_000, np.random.default_rng(0))
    counts = np.bincount(draws, minlength=5)
    assert counts[1] == 0  # zero weight: never drawn
    keep = weights > 0
    expected = 200_000 * weights[keep] / weights.sum()
    assert _chi_square(counts[keep], expected) < 16.3  # χ² with 3 dof, p = 0.001
    with pytest.raises(ValueError, match="zero"):
        AliasTable(np.zeros(3))


def test_uniform_sampler_excludes_training_items_and_reports_log_q() -> None:
    training = _training()
    sampler = UniformSampler(training, 3)
    users = torch.tensor([0, 1, 3, 3])
    out = sampler.sample(users, torch.tensor([0, 0, 2, 5]), np.random.default_rng(1))
    assert out.ids.shape == (4, 3) and not out.in_batch and out.rejects_training
    assert not training.contains(np.repeat(users.numpy(), 3), out.ids.flatten().numpy()).any()
    # q_u(j) = 1/(8 − |I_u|): expected count 3/(8 − |I_u|), the same for every column of a row
    expected = np.log(3 / (8 - np.array([3, 2, 2, 2])))
    np.testing.assert_allclose(out.log_q.squeeze(1).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_popularity_sampler_follows_count_power_beta_outside_training_items(beta: float) -> None:
    training = _training()
    sampler = PopularitySampler(training, 50, beta)
    users = torch.full((2000,), 1)  # user 1 trained items 0, 3: allowed items 1, 2, 4, 5 (6, 7 weigh 0)
    out = sampler.sample(users, torch.zeros(2000, dtype=torch.long), np.random.default_rng(2))
    draws = out.ids.flatten().numpy()
    counts = np.bincount(draws, minlength=8)
    assert counts[[0, 3, 6, 7]].sum() == 0
    weights = COUNTS[[1, 2, 4, 5]] ** beta
    expected = len(draws) * weights / weights.sum()
    assert _chi_square(counts[[1, 2, 4, 5]], expected) < 16.3  # χ² with 3 dof, p = 0.001
    # log expected count of column j: log(M · w_j / (W − W_u)), W − W_u = the allowed items' weight
    column = out.ids[0, 0].item()
    assert out.log_q[0, 1].item() == pytest.approx(
        math.log(50 * COUNTS[column] ** beta / weights.sum()), rel=1e-5
    )


def test_popularity_sampler_refuses_a_user_with_nothing_left() -> None:
    dense = np.zeros((2, 3), dtype=np.float32)
    dense[0, [0, 1]] = 1
    dense[1, 2] = 1  # user 0's only untrained item is item 2 (count 1): fine; beta > 0 and counts 0 are not
    PopularitySampler(TrainingSet(sp.csr_matrix(dense)), 2, 1.0)
    dense[1] = 0
    dense[0, 2] = 0
    dense[1, 0] = 1  # now item 2 has count 0 and user 0 trained items 0 and 1
    with pytest.raises(ValueError, match="no item of positive probability"):
        PopularitySampler(TrainingSet(sp.csr_matrix(dense)), 2, 1.0)


def test_shared_sampler_draws_one_set_per_batch_from_popularity() -> None:
    training = _training()
    sampler = SharedSampler(training, 30_000, beta=1.0)
    out = sampler.sample(torch.arange(4), torch.tensor([0, 3, 1, 5]), np.random.default_rng(3))
    assert out.ids.shape == (30_000,) and not out.rejects_training
    counts = np.bincount(out.ids.numpy(), minlength=8)
    keep = COUNTS > 0
    assert counts[~keep].sum() == 0
    assert _chi_square(counts[keep], 30_000 * COUNTS[keep] / COUNTS.sum()) < 20.5  # 5 dof, p = 0.001
    assert out.log_q.shape == (4, 30_001)
    assert out.log_q[1, 0].item() == pytest.approx(math.log(30_000 * 1 / 10), rel=1e-6)  # positive item 3


def test_in_batch_and_mixed_log_expected_counts() -> None:
    training = _training()  # 10 training pairs: f(j) = count(j) / 10
    positives = torch.tensor([0, 3, 1])
    in_batch = InBatchSampler(training).sample(torch.arange(3), positives, np.random.default_rng(0))
    assert in_batch.ids is None and in_batch.in_batch
    np.testing.assert_allclose(in_batch.log_q.numpy(), np.log(2 * COUNTS[[0, 3, 1]] / 10)[None], rtol=1e-6)
    mixed = MixedSampler(training, 4, beta=0.0).sample(torch.arange(3), positives, np.random.default_rng(0))
    assert mixed.in_batch and mixed.ids.shape == (4,)
    columns = np.concatenate([positives.numpy(), mixed.ids.numpy()])
    expected = np.log(2 * COUNTS[columns] / 10 + 4 / 8)  # (B−1) f(j) + M · 1/n_items
    np.testing.assert_allclose(mixed.log_q.squeeze(0).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["uniform", "popularity", "shared", "mixed"])
def test_samplers_are_reproducible(name: str) -> None:
    sampler = build_sampler(name, _training(), 5)
    users, positives = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([0, 0, 1, 2, 1])
    first = sampler.sample(users, positives, np.random.default_rng(42))
    second = sampler.sample(users, positives, np.random.default_rng(42))
    torch.testing.assert_close(first.ids, second.ids)
    torch.testing.assert_close(first.log_q, second.log_q)
    other = sampler.sample(users, positives, np.random.default_rng(43))
    assert not torch.equal(first.ids, other.ids)


def test_build_sampler_rejects_inconsistent_options() -> None:
    training = _training()
    with pytest.raises(ValueError, match="num_negatives must be 0"):
        build_sampler("in-batch", training, 3)
    with pytest.raises(ValueError, match="num_negatives >= 1"):
        build_sampler("shared", training, 0)
    with pytest.raises(ValueError, match="beta applies"):
        build_sampler("uniform", training, 2, beta=0.5)
    with pytest.raises(ValueError, match="unknown negatives"):
        build_sampler("hard", training, 2)
    assert build_sampler("shared", training, 2).beta == 1.0  # the official SSM code's beta
    assert build_sampler("mixed", training, 2).beta == 0.0  # MNS: uniform
