"""Checkpoints: a training run's whole state as one folder, written atomically, read back verified.

A checkpoint is ``<run>/checkpoint/<sequence>/`` with two files:

* ``tensors.safetensors``: every tensor (model, optimiser moments, best weights, the loss's own
  state, torch's RNG state, the shuffled order of an epoch in progress);
* ``state.json``: everything else (epoch, position in the epoch, early-stopping state, metrics
  history, elapsed seconds, python and numpy RNG states) and the sha256 of the tensor file.

Nothing is ever unpickled. A checkpoint is written into a hidden temporary folder, each file fsynced,
``state.json`` last, then renamed to its sequence number (a rename within one folder is atomic) and
the folder fsynced; older checkpoints are removed only after that. A crash at any instant therefore
leaves the previous complete checkpoint, the new complete one, or both; :func:`latest` picks the
newest whose files are whole and whose hash matches, and :func:`clean_stale` removes temporary
folders a crash left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from ssmrec import faults
from ssmrec.errors import SsmrecError, os_errors_name

FOLDER = "checkpoint"
TENSORS = "tensors.safetensors"
STATE = "state.json"
FORMAT = 1
"""Version of the layout; a checkpoint of another version is refused with that reason."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back: its JSON state and its tensors (CPU), and where it was."""

    path: Path
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]


@dataclass(frozen=True)
class WriteReport:
    """Size and time of one checkpoint write, for the log."""

    path: Path
    bytes: int
    seconds: float


def _fsync_dir(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _write_synced(path: Path, payload: bytes) -> None:
    with os_errors_name(path), open(path, "wb") as file:
        file.write(payload)
        file.flush()
        os.fsync(file.fileno())


def _sequence(path: Path) -> int | None:
    return int(path.name) if path.name.isdigit() else None


def write(run_path: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> WriteReport:
    """Write a new checkpoint of ``run_path`` atomically and drop the older ones (module docstring)."""
    started = time.perf_counter()
    folder = run_path / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    existing = [p for p in folder.iterdir() if _sequence(p) is not None]
    number = max((_sequence(p) or 0 for p in existing), default=0) + 1
    temporary = folder / f".{number:08d}.tmp"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    try:
        payload = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
        _write_synced(temporary / TENSORS, payload)
        faults.point("checkpoint.between_files")
        record = {**state, "format": FORMAT, "tensors_sha256": hashlib.sha256(payload).hexdigest()}
        _write_synced(temporary / STATE, (json.dumps(record, allow_nan=False) + "\n").encode())
        _fsync_dir(temporary)
        final = folder / f"{number:08d}"
        faults.point("checkpoint.before_rename")
        os.rename(temporary, final)
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    faults.point("checkpoint.before_cleanup")
    for older in existing:
        shutil.rmtree(older, ignore_errors=True)
    return WriteReport(final, len(payload), time.perf_counter() - started)


def _read(path: Path) -> Checkpoint:
    """One checkpoint folder, verified; raises ``SsmrecError`` naming the file and what is wrong."""
    state_path, tensor_path = path / STATE, path / TENSORS
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError) as error:
        raise SsmrecError(f"{state_path}: unreadable checkpoint state ({error})") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SsmrecError(f"{state_path}: not a checkpoint of format {FORMAT}")
    try:
        payload = tensor_path.read_bytes()
    except OSError as error:
        raise SsmrecError(f"{tensor_path}: unreadable ({error})") from error
    if hashlib.sha256(payload).hexdigest() != state.get("tensors_sha256"):
        raise SsmrecError(f"{tensor_path}: damaged (its sha256 differs from the one in {STATE})")
    try:
        tensors = load(payload)
    except Exception as error:  # safetensors raises its own error types
        raise SsmrecError(f"{tensor_path}: not a safetensors file ({error})") from error
    return Checkpoint(path, state, tensors)


def latest(run_path: Path) -> Checkpoint | None:
    """The newest complete checkpoint of ``run_path`` (``None`` when it has none).

    A damaged newer one (a disk that lost a write) falls back to an older complete one; if every one
    is damaged, the error of the newest is raised.
    """
    folder = run_path / FOLDER
    if not folder.is_dir():
        return None
    candidates = sorted(
        (p for p in folder.iterdir() if _sequence(p) is not None), key=_sequence, reverse=True
    )
    first_error: SsmrecError | None = None
    for candidate in candidates:
        try:
            return _read(candidate)
        except SsmrecError as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error
    return None


def clean_stale(run_path: Path) -> list[Path]:
    """Remove temporary files and folders a crash left in the run (``.NAME.*.tmp``); return them."""
    removed = []
    for folder in (run_path, run_path / FOLDER):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def remove(run_path: Path) -> None:
    """Delete the run's checkpoints (a finished run keeps only what evaluation needs)."""
    shutil.rmtree(run_path / FOLDER, ignore_errors=True)
