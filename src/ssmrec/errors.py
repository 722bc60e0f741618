"""Errors that ssmrec reports to users as one clear message instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class SsmrecError(Exception):
    """Base class: the CLI prints ``str(error)`` and exits with status 2."""


class DataFormatError(SsmrecError):
    """A data file does not match its declared format.

    Carries the file and 1-based line number so a user can open the file at the fault.
    """

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class ConfigError(SsmrecError):
    """A configuration key or value is invalid (unknown key, wrong type, out of range)."""


class DatasetNotFoundError(SsmrecError):
    """A dataset name or path cannot be resolved to files."""


class ChecksumError(SsmrecError):
    """A downloaded file does not match its registered checksum (the file is deleted)."""


class PeerLostError(SsmrecError):
    """A collective of a several-process run failed or timed out: another rank died, hung, or the network
    between them broke (``ssmrec train`` exits with status 4)."""
