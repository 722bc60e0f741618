"""The immutable interaction set every other part of ssmrec consumes.

Splits are stored as binary user×item CSR matrices (scipy) over one shared index space,
so the trainer, the samplers and the evaluator never have to agree on id maps themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class DataReport:
    """What loading and cleaning did to the raw data; printed by ``ssmrec data info`` and kept in runs."""

    duplicates_dropped: dict[str, int] = field(default_factory=dict)
    """Per split: repeated (user, item) pairs removed."""
    cold_test_users: int = 0
    """Users with held-out items but no training item: left out of evaluation."""
    cold_test_items: int = 0
    """Held-out items never seen in training: their pairs are left out of evaluation."""
    dropped_eval_pairs: dict[str, int] = field(default_factory=dict)
    """Per held-out split: pairs removed because their user or item is unseen in training."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Interactions:
    """Train / valid / test interactions over contiguous indices ``0..n_users-1`` and ``0..n_items-1``.

    ``user_ids[u]`` / ``item_ids[i]`` give the original id (as it appeared in the source) of index
    ``u`` / ``i``. ``valid`` is ``None`` when the data has no validation split.
    Held-out splits only contain users and items that occur in ``train`` (see ``report``).
    All matrices are ``float32`` CSR with sorted indices and values 1.
    """

    name: str
    train: sp.csr_matrix
    test: sp.csr_matrix
    valid: sp.csr_matrix | None
    user_ids: np.ndarray
    item_ids: np.ndarray
    report: DataReport = field(default_factory=DataReport)
    source: dict[str, str] = field(default_factory=dict)
    """Fingerprint of the source: file name -> sha256 of its content (only that: every value is a digest)."""
    options: dict[str, Any] = field(default_factory=dict)
    """How the source was read: ``format``, every result-changing option (``valid_ratio``, ``split_seed``,
    columns, threshold, split ...) and ``fingerprint``, the sha256 over files + options + cache version
    that ``load_dataset`` uses as its cache key. With ``source`` it identifies the data a run saw."""

    def __post_init__(self) -> None:
        shape = (len(self.user_ids), len(self.item_ids))
        for split_name, matrix in self.splits().items():
            if matrix.shape != shape:
                raise ValueError(f"{split_name} has shape {matrix.shape}, expected {shape}")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def splits(self) -> dict[str, sp.csr_matrix]:
        """The splits that exist, by name (``train``, ``valid``, ``test``)."""
        out = {"train": self.train}
        if self.valid is not None:
            out["valid"] = self.valid
        out["test"] = self.test
        return out

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Training interactions per item (int64, length ``n_items``)."""
        return np.bincount(self.train.indices, minlength=self.n_items).astype(np.int64)

    @cached_property
    def user_activity(self) -> np.ndarray:
        """Training interactions per user (int64, length ``n_users``)."""
        return np.diff(self.train.indptr).astype(np.int64)

    def user_index(self) -> dict[object, int]:
        """Original user id -> index."""
        return {uid: index for index, uid in enumerate(self.user_ids.tolist())}

    def item_index(self) -> dict[object, int]:
        """Original item id -> index."""
        return {iid: index for index, iid in enumerate(self.item_ids.tolist())}

    def counts(self) -> dict[str, int | float]:
        """Counts and sparsity for reports and run fingerprints."""
        out: dict[str, int | float] = {"users": self.n_users, "items": self.n_items}
        for split_name, matrix in self.splits().items():
            out[f"{split_name}_interactions"] = int(matrix.nnz)
        total = sum(int(m.nnz) for m in self.splits().values())
        out["interactions"] = total
        out["density"] = total / max(1, self.n_users * self.n_items)
        return out


def pairs_to_csr(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> tuple[sp.csr_matrix, int]:
    """Binary CSR from index pairs; returns the matrix and how many duplicate pairs were dropped."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items), dtype=np.float32
    )
    matrix.sum_duplicates()
    duplicates = len(users) - int(matrix.nnz)
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix, duplicates
