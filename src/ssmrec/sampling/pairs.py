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

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled (users, items) batches covering each pair once; the last batch may be smaller."""
        order = rng.permutation(len(self.users))
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            yield torch.from_numpy(self.users[chosen]), torch.from_numpy(self.items[chosen])

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.users) // batch_size)
