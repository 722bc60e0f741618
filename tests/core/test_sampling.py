"""Pair batching and negative sampling: coverage, exclusion, uniformity and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ssmrec.sampling import TrainingPairs, UniformNegativeSampler


def _train() -> sp.csr_matrix:
    dense = np.zeros((3, 6), dtype=np.float32)
    dense[0, [0, 1, 2]] = 1
    dense[1, [5]] = 1
    dense[2, [0, 2, 4]] = 1
    return sp.csr_matrix(dense)


def test_epoch_covers_every_pair_once() -> None:
    pairs = TrainingPairs(_train())
    assert len(pairs) == 7 and pairs.n_batches(3) == 3
    seen = []
    for users, items in pairs.batches(3, np.random.default_rng(0)):
        assert len(users) <= 3
        seen += list(zip(users.tolist(), items.tolist(), strict=True))
    assert sorted(seen) == [(0, 0), (0, 1), (0, 2), (1, 5), (2, 0), (2, 2), (2, 4)]


def test_negatives_exclude_training_items_and_are_uniform() -> None:
    sampler = UniformNegativeSampler(_train())
    users = torch.tensor([0] * 3000 + [2] * 3000)
    negatives = sampler.sample(users, 2, np.random.default_rng(5))
    assert negatives.shape == (6000, 2)
    user0, user2 = negatives[:3000].flatten().numpy(), negatives[3000:].flatten().numpy()
    assert set(user0.tolist()) == {3, 4, 5}
    assert set(user2.tolist()) == {1, 3, 5}
    # uniform over the 3 allowed items: each count ~ 2000 ± 3 sd (sd = sqrt(6000/3 * 2/3) ≈ 36.5)
    counts = np.bincount(user0, minlength=6)[[3, 4, 5]]
    assert np.all(np.abs(counts - 2000) < 110)


def test_sampling_is_reproducible() -> None:
    sampler = UniformNegativeSampler(_train())
    users = torch.tensor([0, 1, 2, 1])
    first = sampler.sample(users, 4, np.random.default_rng(11))
    second = sampler.sample(users, 4, np.random.default_rng(11))
    torch.testing.assert_close(first, second)


def test_user_with_every_item_is_rejected() -> None:
    train = sp.csr_matrix(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="every item"):
        UniformNegativeSampler(train)
