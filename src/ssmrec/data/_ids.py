"""Id arrays -> contiguous codes, fast for the common case of smallish non-negative integer ids.

``np.unique``/``searchsorted`` sort, which dominates loading a million-row file; when ids are
non-negative integers no larger than a few times the row count (every LightGCN/RecBole dataset),
a dense lookup table gives the same answer in linear time.
"""

from __future__ import annotations

import numpy as np

_DENSE_SLACK = 1 << 20


def _dense_ok(values: np.ndarray, n: int) -> bool:
    if values.dtype.kind not in "iu" or len(values) == 0:
        return False
    return int(values.min()) >= 0 and int(values.max()) < 4 * n + _DENSE_SLACK


def encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(uniques, codes)`` with ``uniques`` sorted naturally and ``uniques[codes] == values``."""
    if _dense_ok(values, len(values)):
        present = np.zeros(int(values.max()) + 1, dtype=bool)
        present[values] = True
        uniques = np.flatnonzero(present).astype(values.dtype)
        table = np.cumsum(present, dtype=np.int64) - 1
        return uniques, table[values]
    uniques, codes = np.unique(values, return_inverse=True)
    return uniques, codes.reshape(-1).astype(np.int64)


def lookup(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in the sorted unique array ``sorted_ids``, or -1 where absent."""
    if len(values) == 0 or len(sorted_ids) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    if sorted_ids.dtype.kind != values.dtype.kind:
        # e.g. integer ids in train but a string token elsewhere: compare as text.
        as_text, order = np.unique(sorted_ids.astype(str), return_index=True)
        found = lookup(as_text, values.astype(str))
        return np.where(found >= 0, order[np.maximum(found, 0)], -1)
    if _dense_ok(sorted_ids, len(values)):
        size = int(sorted_ids[-1]) + 1
        table = np.full(size, -1, dtype=np.int64)
        table[sorted_ids] = np.arange(len(sorted_ids), dtype=np.int64)
        inside = (values >= 0) & (values < size)
        return np.where(inside, table[np.where(inside, values, 0)], -1)
    position = np.searchsorted(sorted_ids, values)
    clipped = np.minimum(position, len(sorted_ids) - 1)
    return np.where(sorted_ids[clipped] == values, clipped, -1).astype(np.int64)
