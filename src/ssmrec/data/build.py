"""Raw reader output -> cleaned, indexed ``Interactions``.

The rules every format shares live here so that a dataset means the same thing whatever file it came
from: duplicates dropped per split (and counted), unsplit data split per user, validation carved from
train when absent, one id map built from train only, and held-out pairs whose user or item never
occurs in train dropped (and counted) because no model can score them honestly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ssmrec.data import _ids
from ssmrec.data import split as splitting
from ssmrec.data.interactions import DataReport, Interactions, pairs_to_csr
from ssmrec.data.readers import RawData, RawSplit
from ssmrec.errors import ConfigError, DataFormatError

SPLIT_METHODS = ("ratio", "leave-last-out")


def dedupe(raw: RawSplit) -> tuple[RawSplit, int]:
    """Drop repeated (user, item) pairs; returns the kept rows (in input order) and how many were dropped.

    With timestamps the latest occurrence of a pair is kept (its most recent interaction is what a
    temporal split should see); otherwise the first.
    """
    if len(raw) == 0:
        return raw, 0
    user_code = _ids.encode(raw.users)[1]
    item_code = _ids.encode(raw.items)[1]
    n_users, n_items = int(user_code.max()) + 1, int(item_code.max()) + 1
    # Cheap check first: most files have no duplicates, and a CSR build is much faster than a sort.
    ones = np.ones(len(raw), dtype=np.int8)
    if sp.csr_matrix((ones, (user_code, item_code)), shape=(n_users, n_items)).nnz == len(raw):
        return raw, 0
    key = user_code * n_items + item_code
    if raw.timestamps is None:
        _, first = np.unique(key, return_index=True)
        kept = np.sort(first)
    else:
        order = np.lexsort((-raw.timestamps, key))  # stable: equal times keep the earliest row
        sorted_key = key[order]
        is_first = np.ones(len(order), dtype=bool)
        is_first[1:] = sorted_key[1:] != sorted_key[:-1]
        kept = np.sort(order[is_first])
    if len(kept) == len(raw):
        return raw, 0
    return raw.take(kept), len(raw) - len(kept)


def split_unsplit(
    raw: RawSplit, method: str, test_ratio: float, seed: int, source_name: str = "input"
) -> tuple[RawSplit, RawSplit]:
    """Train/test split of data that came as one file: per-user ``ratio`` (seeded) or ``leave-last-out``."""
    held = _holdout(raw, method, test_ratio, splitting.rng_for(seed, splitting.TEST_STREAM), source_name)
    return raw.take(~held), raw.take(held)


def carve_validation(
    train: RawSplit, method: str, valid_ratio: float, seed: int, source_name: str = "train"
) -> tuple[RawSplit, RawSplit]:
    """Validation rows taken out of ``train`` per user, with its own random stream (see ``split.py``)."""
    held = _holdout(train, method, valid_ratio, splitting.rng_for(seed, splitting.VALID_STREAM), source_name)
    return train.take(~held), train.take(held)


def _holdout(
    raw: RawSplit, method: str, ratio: float, rng: np.random.Generator, source_name: str
) -> np.ndarray:
    if method == "ratio":
        return splitting.ratio_holdout(raw.users, ratio, rng)
    if method == "leave-last-out":
        if raw.timestamps is None:
            raise ConfigError(
                f"split 'leave-last-out' needs timestamps, and {source_name} has no time column"
            )
        return splitting.last_holdout(raw.users, raw.timestamps)
    raise ConfigError(f"unknown split method {method!r}; expected one of {SPLIT_METHODS}")


def build_interactions(
    name: str,
    raw: RawData,
    *,
    split: str = "ratio",
    test_ratio: float = 0.2,
    valid_ratio: float = 0.1,
    seed: int = 2024,
    source: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
) -> Interactions:
    """Clean, split and index ``raw`` (see the module docstring for the rules).

    Data that comes split keeps its split; ``split``/``test_ratio`` only apply to unsplit data.
    A validation split is carved from train (``valid_ratio`` per user, or each user's latest
    remaining item under ``leave-last-out``) when the data has none and ``valid_ratio > 0``.
    """
    duplicates: dict[str, int] = {}
    notes: list[str] = list(raw.notes)
    if raw.is_split:
        splits: dict[str, RawSplit] = {}
        for role, part in raw.splits.items():
            splits[role], duplicates[role] = dedupe(part)
        carve_method = "ratio"
    else:
        where = str(raw.files.get("all", "input"))
        everything, duplicates["all"] = dedupe(raw.splits["all"])
        train, test = split_unsplit(everything, split, test_ratio, seed, where)
        splits = {"train": train, "test": test}
        carve_method = split
        notes.append(
            f"split {split}" + (f" test_ratio={test_ratio}" if split == "ratio" else "") + f" seed={seed}"
        )
    if "valid" not in splits and valid_ratio > 0:
        splits["train"], splits["valid"] = carve_validation(splits["train"], carve_method, valid_ratio, seed)
        what = f"{valid_ratio:g} per user" if carve_method == "ratio" else "each user's latest"
        notes.append(f"validation carved from train ({what}, seed={seed})")

    train = splits["train"]
    if len(train) == 0:
        source = raw.files.get("train", raw.files.get("all"))
        if source is None:
            raise ConfigError(f"dataset {name!r} has no training interactions")
        what = "no line has an item" if raw.format == "lightgcn" else "none is left after cleaning"
        raise DataFormatError(source, None, f"no training interactions ({what})")
    user_ids, train_users = _ids.encode(train.users)
    item_ids, train_items = _ids.encode(train.items)
    matrices = {"train": pairs_to_csr(train_users, train_items, len(user_ids), len(item_ids))[0]}
    cold_users: list[np.ndarray] = []
    cold_items: list[np.ndarray] = []
    dropped: dict[str, int] = {}
    for role in ("valid", "test"):
        if role not in splits:
            continue
        part = splits[role]
        users, items = _ids.lookup(user_ids, part.users), _ids.lookup(item_ids, part.items)
        known = (users >= 0) & (items >= 0)
        cold_users.append(part.users[users < 0])
        cold_items.append(part.items[items < 0])
        dropped[role] = int(len(part) - known.sum())
        matrices[role], _ = pairs_to_csr(users[known], items[known], len(user_ids), len(item_ids))

    for role in ("valid", "test"):
        if role in matrices:
            overlap = int(matrices[role].multiply(matrices["train"]).nnz)
            if overlap:
                notes.append(f"{overlap} {role} pairs also occur in train (kept)")
    if "valid" in matrices:
        overlap = int(matrices["valid"].multiply(matrices["test"]).nnz)
        if overlap:
            notes.append(f"{overlap} valid pairs also occur in test (kept)")

    report = DataReport(
        duplicates_dropped=duplicates,
        cold_test_users=_n_distinct(cold_users),
        cold_test_items=_n_distinct(cold_items),
        dropped_eval_pairs=dropped,
        notes=tuple(notes),
    )
    return Interactions(
        name=name,
        train=matrices["train"],
        valid=matrices.get("valid"),
        test=matrices["test"],
        user_ids=user_ids,
        item_ids=item_ids,
        report=report,
        source=dict(source or {}),
        options=dict(options or {}),
    )


def _n_distinct(parts: list[np.ndarray]) -> int:
    parts = [part for part in parts if len(part)]
    if not parts:
        return 0
    if len({part.dtype.kind for part in parts}) > 1:
        parts = [part.astype(str) for part in parts]
    return len(np.unique(np.concatenate(parts)))
