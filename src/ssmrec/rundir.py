"""The run directory: everything needed to trust, reproduce and re-evaluate a run.

Layout (all JSON written atomically: temp file in the same folder, then ``os.replace``, so a crash
leaves either the previous complete file or the new complete file, never half of one)::

    config.json          resolved TrainConfig
    data.json            data fingerprint: source file hashes, counts, cleaning report
    environment.json     package versions, platform, threads
    metrics.jsonl        one record per evaluation (rewritten whole on each evaluation)
    final_metrics.json   best-epoch metrics on valid and test
    model.safetensors    best weights (tensors only; loading never unpickles objects)
    id_maps.json         original user and item ids of every index ({"users": [...], "items": [...]})
    train.log            human-readable log
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from ssmrec.data import Interactions
from ssmrec.errors import SsmrecError, os_errors_name

CONFIG = "config.json"
DATA = "data.json"
ENVIRONMENT = "environment.json"
METRICS = "metrics.jsonl"
FINAL = "final_metrics.json"
WEIGHTS = "model.safetensors"
LOG = "train.log"
ID_MAPS = "id_maps.json"
CLAIM = ".claim"
"""Created exclusively (O_EXCL) by the run that takes a folder, so two runs started at once with the same
``--output`` cannot both write into it."""


def _file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask); mkstemp's 0o600 is for secrets."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so readers see the old or the new content, nothing in between."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, _file_mode())
        with os_errors_name(path), os.fdopen(handle, "wb") as temp:
            temp.write(payload)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or ±inf float replaced by ``null``: JSON has no such numbers (Python's
    ``NaN`` token is not JSON and other readers reject it); a metric without a value is ``null``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def atomic_write_json(path: Path, value: Any) -> None:
    text = json.dumps(json_safe(value), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def read_json(path: Path) -> Any:
    """A JSON file of a run; an unreadable, empty or truncated one is one ``SsmrecError`` naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SsmrecError(f"{path}: not a readable JSON file ({error})") from error


def environment() -> dict[str, Any]:
    """Versions and machine facts that can change a run's numbers or speed."""
    versions = {}
    for package in ("ssmrec", "torch", "numpy", "scipy", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def data_fingerprint(data: Interactions) -> dict[str, Any]:
    """What identifies the data a run saw: source hashes, counts and the cleaning report."""
    return {
        "name": data.name,
        "source": dict(data.source),
        "options": dict(data.options),
        "counts": data.counts(),
        "report": dataclasses.asdict(data.report),
    }


def id_maps(data: Interactions) -> dict[str, list[Any]]:
    """Index -> original id of every user and item, as JSON lists (ints stay ints, strings strings).

    A run that keeps them can speak the dataset's own ids (export, recommendations) without the data
    layer's reading options; the index of ``users[u]`` is ``u``.
    """
    return {"users": data.user_ids.tolist(), "items": data.item_ids.tolist()}


class RunDir:
    """A run directory being written by a training run, or read back by ``ssmrec evaluate``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """A new run directory; refuses to mix a new run into an existing one's files."""
        run = cls(path)
        cls.check_available(run.path)
        existed = run.path.is_dir()
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            claim = os.open(run.path / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError as error:  # another run claimed it between our check and our claim
            raise FileExistsError(f"run directory {run.path} is being written by another run") from error
        except OSError as error:
            if not existed and run.path.is_dir():  # leave nothing behind: the folder is ours and empty
                run.path.rmdir()
            raise FileExistsError(f"cannot create run directory {run.path}: {error.strerror}") from error
        os.close(claim)
        return run

    @staticmethod
    def check_available(path: Path) -> None:
        """Refuse a ``path`` that a new run cannot take: a file, a folder with files, or one claimed."""
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"output {path} exists and is not a folder; choose another --output")
        entries = [entry.name for entry in path.iterdir()] if path.is_dir() else []
        if entries == [CLAIM]:
            raise FileExistsError(f"run directory {path} is being written by another run")
        if entries:
            raise FileExistsError(
                f"run directory {path} already exists and is not empty; choose another --output, "
                f"or continue it with: ssmrec train --resume {path}"
            )

    def release_claim(self) -> None:
        """Drop the claim once the run has files of its own (a non-empty folder is refused anyway)."""
        (self.path / CLAIM).unlink(missing_ok=True)

    def write_json(self, name: str, value: Any) -> None:
        atomic_write_json(self.path / name, value)

    def read_json(self, name: str) -> Any:
        return read_json(self.path / name)

    def write_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(json_safe(record), allow_nan=False) + "\n" for record in records)
        atomic_write_bytes(self.path / METRICS, lines.encode())

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def save_weights(self, state: dict[str, torch.Tensor]) -> None:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        atomic_write_bytes(self.path / WEIGHTS, save(tensors))

    def load_weights(self) -> dict[str, torch.Tensor]:
        """The saved weights; a damaged or foreign file is one ``SsmrecError`` naming it."""
        path = self.path / WEIGHTS
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own types for truncated or invalid files
            raise SsmrecError(f"{path}: not a readable safetensors file ({error})") from error
