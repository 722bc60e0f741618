"""On-disk cache of parsed datasets, as plain ``.npz`` files (no pickle).

A cache entry is keyed by the sha256 of the source files' contents, every option that changes the
result and ``CACHE_VERSION``; editing a data file, changing an option or changing the cleaning code
(bump the version) therefore never returns stale data. Entries are written atomically (temp file +
``os.replace``) so a crash or a concurrent run cannot leave half a file, and an unreadable entry is
ignored and rebuilt rather than trusted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ssmrec.data.interactions import DataReport, Interactions
from ssmrec.errors import DataFormatError

CACHE_VERSION = 3
"""Bump whenever reading or cleaning changes what a given input produces."""

_SPLITS = ("train", "valid", "test")
_hash_memo: dict[tuple[str, int, int, int, int], str] = {}


def cache_root() -> Path:
    """``$SSMREC_CACHE``, else ``$XDG_CACHE_HOME/ssmrec``, else ``~/.cache/ssmrec``."""
    if os.environ.get("SSMREC_CACHE"):
        return Path(os.environ["SSMREC_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "ssmrec"
    return Path.home() / ".cache" / "ssmrec"


def datasets_dir() -> Path:
    """Where parsed datasets are cached."""
    return cache_root() / "datasets"


def downloads_dir() -> Path:
    """Where registry downloads are kept (one folder per dataset)."""
    return cache_root() / "downloads"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's content, memoised per (path, inode, size, mtime, ctime) within the process."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
        memo_key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if memo_key not in _hash_memo:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
            _hash_memo[memo_key] = digest.hexdigest()
    except OSError as error:  # hashed before parsing, so this is where an unreadable file shows first
        raise DataFormatError(path, None, f"cannot read file: {error.strerror or error}") from None
    return _hash_memo[memo_key]


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts`` plus the cache format version."""
    payload = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cache_path(key: str, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "dataset"
    return datasets_dir() / f"{safe}-{key[:32]}.npz"


def load_cached(key: str, name: str) -> Interactions | None:
    """The cached dataset for ``key``, or ``None`` when absent or unreadable (then it is deleted)."""
    path = cache_path(key, name)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return _from_arrays(archive)
    except Exception as error:  # any corruption (bad zip, CRC, missing key, bad shape) means rebuild
        warnings.warn(f"ignoring unreadable dataset cache {path} ({error!r}); rebuilding it", stacklevel=2)
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def save_cached(key: str, interactions: Interactions) -> Path | None:
    """Write the cache entry atomically; returns its path, or ``None`` (with a warning) if not writable."""
    path = cache_path(key, interactions.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **_to_arrays(interactions))
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
    except OSError as error:
        warnings.warn(f"could not write dataset cache {path}: {error}", stacklevel=2)
        return None
    return path


def _to_arrays(interactions: Interactions) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "cache_version": np.asarray(CACHE_VERSION, dtype=np.int64),
        "name": np.asarray(interactions.name, dtype=str),
        "user_ids": _plain_ids(interactions.user_ids),
        "item_ids": _plain_ids(interactions.item_ids),
        "report": np.asarray(json.dumps(dataclasses.asdict(interactions.report)), dtype=str),
        "source": np.asarray(json.dumps(interactions.source), dtype=str),
        "options": np.asarray(json.dumps(interactions.options), dtype=str),
    }
    for split_name, matrix in interactions.splits().items():
        arrays[f"{split_name}_indptr"] = matrix.indptr.astype(np.int64)
        arrays[f"{split_name}_indices"] = matrix.indices.astype(np.int32)
    return arrays


def _plain_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as int64 or a unicode array: never object arrays, which would need pickle."""
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str)


def _from_arrays(archive: Any) -> Interactions:
    version = int(archive["cache_version"])
    if version != CACHE_VERSION:
        raise ValueError(f"cache version {version}, expected {CACHE_VERSION}")
    user_ids, item_ids = archive["user_ids"], archive["item_ids"]
    shape = (len(user_ids), len(item_ids))
    matrices: dict[str, sp.csr_matrix] = {}
    for split_name in _SPLITS:
        if f"{split_name}_indptr" not in archive.files:
            continue
        indptr = archive[f"{split_name}_indptr"]
        indices = archive[f"{split_name}_indices"]
        if len(indptr) != shape[0] + 1 or indptr[-1] != len(indices):
            raise ValueError(f"{split_name} matrix does not match the id arrays")
        if len(indices) and (indices.min() < 0 or indices.max() >= shape[1]):
            raise ValueError(f"{split_name} item index out of range")
        data = np.ones(len(indices), dtype=np.float32)
        matrices[split_name] = sp.csr_matrix((data, indices, indptr), shape=shape)
    report = json.loads(str(archive["report"]))
    report["notes"] = tuple(report.get("notes", ()))
    return Interactions(
        name=str(archive["name"]),
        train=matrices["train"],
        valid=matrices.get("valid"),
        test=matrices["test"],
        user_ids=user_ids,
        item_ids=item_ids,
        report=DataReport(**report),
        source=json.loads(str(archive["source"])),
        options=json.loads(str(archive["options"])),
    )
