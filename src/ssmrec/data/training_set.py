"""The training interactions as lookups: (user, item) membership and per-user rows.

It belongs to the data layer because both the negative samplers (rejection of training items) and
the losses (masking accidental hits) read it; neither should import the other for it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class TrainingSet:
    """The training interactions as lookups: membership of (user, item) pairs and per-user rows."""

    def __init__(self, train: sp.csr_matrix) -> None:
        matrix = sp.csr_matrix(train, dtype=np.float32, copy=False)
        if not matrix.has_sorted_indices:
            matrix = matrix.copy()
            matrix.sort_indices()
        self.matrix = matrix
        self.n_users, self.n_items = matrix.shape
        self.user_counts = np.diff(matrix.indptr).astype(np.int64)
        self.item_counts = np.bincount(matrix.indices, minlength=self.n_items).astype(np.int64)
        self.pair_users = np.repeat(np.arange(self.n_users, dtype=np.int64), self.user_counts)
        self._keys = self.pair_users * self.n_items + matrix.indices.astype(
            np.int64
        )  # sorted: CSR is row-major

    @property
    def n_pairs(self) -> int:
        return len(self._keys)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Elementwise: is ``items`` a training item of ``users`` (arrays of one shape)."""
        keys = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        if not len(self._keys):
            return np.zeros(keys.shape, dtype=bool)
        position = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return self._keys[position] == keys

    def hits(self, users: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """(B, K) bool: ``columns[k]`` is a training item of ``users[b]`` (columns shared by all rows).

        Reads the small dense block ``train[unique users][:, unique columns]`` instead of B·K lookups.
        """
        unique_users, user_index = np.unique(users, return_inverse=True)
        unique_items, item_index = np.unique(columns, return_inverse=True)
        block = self.matrix[unique_users][:, unique_items].toarray() != 0
        return block[user_index][:, item_index]

    def entries(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) of every training item of every row's user: rows index ``users``."""
        users = np.asarray(users, dtype=np.int64)
        starts = self.matrix.indptr[users].astype(np.int64)
        lengths = self.user_counts[users]
        rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
        offsets = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(lengths) - lengths, lengths
        )
        items = self.matrix.indices[np.repeat(starts, lengths) + offsets].astype(np.int64)
        return rows, items
