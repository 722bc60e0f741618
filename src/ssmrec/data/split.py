"""Per-user hold-out splits, vectorised (no Python loop over users).

Each function returns a boolean mask over the input rows marking the held-out ones, so callers can
split any parallel arrays (ids, ratings, timestamps) the same way. Users always keep at least one
training interaction: a user with a single interaction is never held out, because a user with no
training data can be neither trained nor evaluated.
"""

from __future__ import annotations

import numpy as np

from ssmrec.data import _ids

# Independent random streams per purpose, so changing valid_ratio never changes the test split.
TEST_STREAM, VALID_STREAM = 0, 1


def rng_for(seed: int, stream: int) -> np.random.Generator:
    """The generator for one purpose (test split or validation carve) of one seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def user_codes(users: np.ndarray) -> np.ndarray:
    """Contiguous codes ``0..U-1`` for any id array (ints or strings), in natural id order."""
    return _ids.encode(users)[1]


def rank_within_user(codes: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's 0-based rank among its user's rows, given ``order`` sorting rows by (user, key).

    Returns ``(rank, size)`` where ``size`` is the number of rows of the row's user.
    """
    n = len(codes)
    counts = np.bincount(codes)
    group_start = np.cumsum(counts) - counts
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64) - group_start[codes[order]]
    return rank, counts[codes]


def holdout_count(size: np.ndarray, ratio: float) -> np.ndarray:
    """How many of a user's ``size`` interactions to hold out: ``ratio * size`` rounded half up,
    at most ``size - 1`` (so single-interaction users keep theirs in train)."""
    wanted = np.floor(ratio * size + 0.5).astype(np.int64)
    return np.clip(wanted, 0, np.maximum(size - 1, 0))


def ratio_holdout(users: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Mask holding out a random ``ratio`` of each user's rows (see ``holdout_count`` for rounding).

    One sort by (user, random 32-bit key), packed into a single int64, replaces a per-user shuffle;
    the result depends only on the rows' order and the generator's seed.
    """
    codes = user_codes(users)
    keys = (codes << 32) | rng.integers(0, 1 << 32, size=len(codes), dtype=np.int64)
    rank, size = rank_within_user(codes, np.argsort(keys, kind="stable"))
    return rank < holdout_count(size, ratio)


def last_holdout(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Mask holding out each user's latest row (users with at least two rows).

    Ties on the timestamp go to the row that comes later in the input, as a log is written in time order.
    """
    codes = user_codes(users)
    rows = np.arange(len(codes), dtype=np.int64)
    order = np.lexsort((rows, np.asarray(timestamps, dtype=np.float64), codes))  # last key is primary
    rank, size = rank_within_user(codes, order)
    return (rank == size - 1) & (size >= 2)
