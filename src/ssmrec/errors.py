"""Errors that ssmrec reports to users as one clear message instead of a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SsmrecError(Exception):
    """Base class: the CLI prints ``str(error)`` and exits with :attr:`exit_code`."""

    exit_code = 2
    """2: bad input or config (the README's exit-code table lists the others)."""


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


class StorageError(SsmrecError):
    """The disk refused a read or write (full, read-only, permissions): not the input's fault.

    Its own exit status (74, ``EX_IOERR`` of sysexits.h) lets a script retry after freeing space,
    where exit 2 would say the command itself is wrong.
    """

    exit_code = 74


def describe_os_error(error: OSError) -> str:
    """``/path/file: No space left on device``: the file and the OS's reason, without a traceback."""
    where = error.filename if error.filename is not None else "a file"
    return f"{where}: {error.strerror or error}"


@contextmanager
def os_errors_name(path: str | Path) -> Iterator[None]:
    """Give an ``OSError`` raised while writing ``path`` that path when the OS did not (``write`` and
    ``fsync`` on a full disk say only "No space left on device"), so the message can name the file."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise


class PeerLostError(SsmrecError):
    """A collective of a several-process run failed or timed out: another rank died, hung, or the network
    between them broke (``ssmrec train`` exits with status 4)."""

    exit_code = 4
