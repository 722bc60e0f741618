"""Batches of training pairs and negative items, vectorised and drawn from one seeded generator.

One epoch visits every training (user, item) pair once in a random order, as the official SSM code
does. Negatives are rejection-sampled: draw uniformly, look every draw up in the sorted flat keys
``user * n_items + item`` of the training matrix with ``searchsorted``, redraw only the hits.
The loop runs over rejection rounds (a handful), never over samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


class TrainingPairs:
    """The (user, item) pairs of a training matrix and the epoch order over them."""

    def __init__(self, train: sp.csr_matrix) -> None:
        self.users = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr))
        self.items = train.indices.astype(np.int64)

    def __len__(self) -> int:
        return len(self.users)

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled (users, items) batches covering each pair once; the last batch may be smaller."""
        order = rng.permutation(len(self.users))
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            yield torch.from_numpy(self.users[chosen]), torch.from_numpy(self.items[chosen])

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.users) // batch_size)


class UniformNegativeSampler:
    """Items drawn uniformly from those a user has no training interaction with."""

    MAX_ROUNDS = 1000

    def __init__(self, train: sp.csr_matrix) -> None:
        train = train.tocsr()
        train.sort_indices()
        self.n_items = train.shape[1]
        counts = np.diff(train.indptr)
        if np.any(counts >= self.n_items):
            full = int(np.flatnonzero(counts >= self.n_items)[0])
            raise ValueError(f"user {full} interacted with every item: no negative can be sampled")
        rows = np.repeat(np.arange(train.shape[0], dtype=np.int64), counts)
        self._keys = rows * self.n_items + train.indices.astype(np.int64)  # sorted: CSR is row-major

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        position = np.searchsorted(self._keys, keys)
        position = np.minimum(position, len(self._keys) - 1)
        return self._keys[position] == keys if len(self._keys) else np.zeros(keys.shape, dtype=bool)

    def sample(self, users: Tensor, num: int, rng: np.random.Generator) -> Tensor:
        """``len(users) × num`` negatives (int64), none of them a training item of its row's user."""
        user_array = np.repeat(users.numpy().astype(np.int64), num)
        items = rng.integers(0, self.n_items, size=len(user_array), dtype=np.int64)
        redraw = np.flatnonzero(self._is_positive(user_array, items))
        rounds = 0
        while len(redraw):
            rounds += 1
            if rounds > self.MAX_ROUNDS:
                raise RuntimeError("negative sampling did not converge; a user has almost every item")
            items[redraw] = rng.integers(0, self.n_items, size=len(redraw), dtype=np.int64)
            redraw = redraw[self._is_positive(user_array[redraw], items[redraw])]
        return torch.from_numpy(items.reshape(len(users), num))
