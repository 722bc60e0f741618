"""Batches of training pairs: one epoch visits every training (user, item) pair once, in a random order.

This is the order the official SSM code uses (a shuffled pass over all interactions).
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

    def epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """One epoch's shuffled order of the pairs (one draw from ``rng``)."""
        return rng.permutation(len(self.users))

    def batch(self, order: np.ndarray, index: int, batch_size: int) -> tuple[Tensor, Tensor]:
        """Batch ``index`` (0-based) of an epoch in ``order``: the (users, items) at those positions.

        Addressing a batch by its index lets a trainer stop after any batch and resume at the next.
        """
        chosen = order[index * batch_size : (index + 1) * batch_size]
        return torch.from_numpy(self.users[chosen]), torch.from_numpy(self.items[chosen])

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled (users, items) batches covering each pair once; the last batch may be smaller."""
        order = self.epoch_order(rng)
        for index in range(self.n_batches(batch_size)):
            yield self.batch(order, index, batch_size)

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.users) // batch_size)
