"""Where a run computes: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, resolved once, checked early.

:func:`resolve_device` turns the setting into a :class:`torch.device` or refuses it with a
:class:`DeviceError` (CLI exit 2) naming what is available, and it is called before a run directory is
created, so asking for a GPU that is not there never leaves a half-written run. :func:`describe_device`
names the device, its model and memory for ``environment.json`` and the log.

:func:`deterministic_mode` switches torch to its deterministic algorithms (``--deterministic``). On the
CPU every kernel ssmrec uses is deterministic already for a fixed thread count; on CUDA the backwards of
``index_select``, ``index_add`` and gathers (atomic float adds in arrival order) are not, so two runs with
the same seed drift apart in the last bits and then further. torch documents a deterministic version of
each of those; the deterministic mode trades some speed for run-to-run equality
(``benchmarks/bench_device.py`` measures both).

Nothing here calls a CUDA function unless the device asked for is a CUDA device: a CPU run never
initialises CUDA (``tests/core/test_device.py`` checks it).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ssmrec.errors import SsmrecError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_PATTERN = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")
CUBLAS_WORKSPACE = ":4096:8"
"""``CUBLAS_WORKSPACE_CONFIG`` that cuBLAS needs for reproducible GEMMs (torch's documentation)."""


class DeviceError(SsmrecError):
    """The device asked for is malformed or not present on this machine."""


def parse_device(text: str) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ``("cuda", 1)``; refuses anything that is not one of :data:`DEVICE_CHOICES`."""
    match = _PATTERN.match(text.strip().lower()) if isinstance(text, str) else None
    if match is None:
        raise DeviceError(f"device must be {DEVICE_CHOICES}, got {text!r}")
    kind, index = match.group(1), match.group(2)
    if index is not None and kind != "cuda":
        raise DeviceError(f"only cuda devices take an index (cuda:N), got {text!r}")
    return kind, None if index is None else int(index)


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(text: str = "auto") -> torch.device:
    """The :class:`torch.device` of a ``--device`` setting; ``auto`` is CUDA when available, else CPU.

    Raises :class:`DeviceError` for a device that is not present (``cuda`` without a GPU, ``cuda:3`` on a
    machine with two, ``mps`` off Apple silicon).
    """
    kind, index = parse_device(text)
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "auto":
        return torch.device("cuda") if _cuda_available() else torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError("device mps asked for, but torch's MPS backend is not available here")
        return torch.device("mps")
    if not _cuda_available():
        reason = (
            "this torch was built without CUDA"
            if torch.version.cuda is None
            else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
        )
        raise DeviceError(f"device {text} asked for, but {reason}; use --device cpu or auto")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise DeviceError(
            f"device {text} asked for, but this machine has {count} CUDA device(s): 0..{count - 1}"
        )
    return torch.device("cuda", index if index is not None else torch.cuda.current_device())


def describe_device(device: torch.device) -> dict[str, Any]:
    """Name, model and memory of ``device``, for ``environment.json`` and the run's log."""
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        return {
            "device": str(device),
            "type": "cuda",
            "model": properties.name,
            "total_memory_bytes": int(total),
            "free_memory_bytes": int(free),
            "capability": f"{properties.major}.{properties.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    if device.type == "mps":
        return {"device": "mps", "type": "mps", "model": "Apple MPS"}
    return {"device": "cpu", "type": "cpu", "model": _cpu_model(), "total_memory_bytes": _host_memory()}


def device_summary(description: dict[str, Any]) -> str:
    """One line for the log: ``cuda:0 (NVIDIA H200, 139.8 GiB, 139.1 GiB free)``."""
    parts = [str(description.get("model"))]
    if description.get("total_memory_bytes"):
        parts.append(f"{description['total_memory_bytes'] / 2**30:.1f} GiB")
    if description.get("free_memory_bytes"):
        parts.append(f"{description['free_memory_bytes'] / 2**30:.1f} GiB free")
    return f"{description['device']} ({', '.join(parts)})"


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Torch's deterministic algorithms inside the block when ``enabled`` (restored after it).

    Sets ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN's deterministic flags and,
    for CUDA, ``CUBLAS_WORKSPACE_CONFIG`` (read at the first cuBLAS call; an existing value is kept). An
    operation without a deterministic implementation warns (torch's ``warn_only``) rather than stopping a
    run hours in; such a warning in the log means that run is not guaranteed to repeat.
    """
    if not enabled:
        yield
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def is_cpu(device: torch.device | str) -> bool:
    return torch.device(device).type == "cpu"


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` (on the CPU) on ``device`` without stalling it: itself on the CPU; on CUDA copied
    asynchronously from pinned memory (the copy is queued behind the device's work, the host goes on)."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
