"""Low-level text parsing shared by the readers.

Every parser here has a vectorised fast path for well-formed files and falls back to a slow,
line-by-line pass only when the fast path sees something unexpected; the slow pass either accepts
the file (a benign irregularity such as a blank line) or raises ``DataFormatError`` naming the exact
1-based line. That way a 5 MB file parses in about 0.1 s and a broken one still gets a precise message.
"""

from __future__ import annotations

import csv
import io
import os
import select
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ssmrec.errors import DataFormatError

# Every 18-digit number fits int64, so the vectorised paths take those; a longer token is checked
# exactly (by value) on the slow path, so 9223372036854775807 is accepted and 2**63 is refused.
MAX_ID_DIGITS = 18
INT64_MAX = np.iinfo(np.int64).max
_INT64_MAX_TEXT = str(INT64_MAX)

SHOWN_CHARS = 40
"""Longest token an error message echoes in full: a 1 MB token must not become a 1 MB message."""

STREAM_WAIT_S = 30.0
"""How long reading a FIFO waits for a process to start writing, so a FIFO nobody feeds cannot hang us."""

_DIGIT, _SPACE, _NEWLINE, _DELIM = 1, 2, 3, 4
_INT_CLASSES = np.zeros(256, dtype=np.uint8)
_INT_CLASSES[ord("0") : ord("9") + 1] = _DIGIT
_INT_CLASSES[[ord(" "), ord("\t"), ord("\r")]] = _SPACE
_INT_CLASSES[ord("\n")] = _NEWLINE


def shown(token: str) -> str:
    """``repr(token)``, cut to ``SHOWN_CHARS`` characters with the full size appended when longer."""
    if len(token) <= SHOWN_CHARS:
        return repr(token)
    return f"{token[:SHOWN_CHARS]!r}\u2026 ({len(token.encode('utf-8', 'surrogatepass')):,} bytes)"


def is_stream(path: Path) -> bool:
    """Whether ``path`` exists but is neither a regular file nor a folder (a FIFO, ``/dev/fd/N``, a device).

    Such a path has no stable content: it can be read once, and only as a whole.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def read_bytes(path: Path) -> bytes:
    """The whole file; a missing or unreadable file becomes a ``DataFormatError`` (not a traceback).

    A FIFO or pipe (``<(cat file)``) is read to its end, waiting at most ``STREAM_WAIT_S`` for a writer;
    a device is read only if it is empty at once (``/dev/null``), since ``/dev/zero`` never ends.
    """
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise DataFormatError(path, None, "is a directory, expected a file")
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            return _read_fifo(path)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return _read_device(path)
        return path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, "file does not exist") from None
    except IsADirectoryError:
        raise DataFormatError(path, None, "is a directory, expected a file") from None
    except OSError as error:
        raise DataFormatError(path, None, f"cannot read file: {error.strerror or error}") from None


def _read_fifo(path: Path) -> bytes:
    # A blocking open would wait forever for a writer; non-blocking open plus poll waits a bounded time.
    # (Linux reports no hang-up on a FIFO that never had a writer, so poll waits for the first one.)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        if not poller.poll(STREAM_WAIT_S * 1000):
            raise DataFormatError(
                path, None, f"no process wrote to this FIFO within {STREAM_WAIT_S:g} s (nothing to read)"
            )
        os.set_blocking(fd, True)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_device(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        first = os.read(fd, 1)
    except BlockingIOError:
        first = b"?"  # e.g. a terminal with nothing typed: still a device, not a data file
    finally:
        os.close(fd)
    if not first:
        return b""
    raise DataFormatError(
        path, None, "is a device, not a data file; to read what a program prints, use --data <(program)"
    )


def decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a leading BOM is dropped); invalid bytes are reported with their line number."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataFormatError(
            path, line, f"not valid UTF-8 (byte 0x{data[error.start]:02x} at file offset {error.start})"
        ) from None
    return text.removeprefix("\ufeff")


def only_int_bytes(data: bytes, delimiter: str | None = None) -> bool:
    """Whether the file holds nothing but digits, whitespace and ``delimiter`` (cheap, vectorised)."""
    classes = _int_classes(delimiter)[np.frombuffer(data, dtype=np.uint8)]
    return not (classes == 0).any()


def _int_classes(delimiter: str | None) -> np.ndarray:
    if delimiter is None or delimiter.isspace():
        return _INT_CLASSES
    table = _INT_CLASSES.copy()
    table[ord(delimiter)] = _DELIM
    return table


def parse_int_lines(path: Path, data: bytes, delimiter: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative integers separated by whitespace (or by ``delimiter``), one record per line.

    Returns ``(values, counts)``: all integers in file order (int64) and the number of integers on
    each line (one entry per line, blank lines give 0). Never loops over lines unless the file has
    a fault, in which case the faulty line is found and reported.
    """
    if delimiter is not None and (len(delimiter) != 1 or not delimiter.isascii()):
        raise ValueError(f"delimiter must be one ASCII character, got {delimiter!r}")
    if not data.strip():
        raise DataFormatError(path, None, "file is empty")
    text = decode(path, data)  # report non-UTF-8 bytes as such, before calling them bad characters
    buf = np.frombuffer(data, dtype=np.uint8)
    classes = _int_classes(delimiter)[buf]
    if (classes == 0).any():
        return _parse_int_lines_slow(path, text, delimiter)
    is_digit = classes == _DIGIT
    edges = np.diff(is_digit.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if len(starts) and int((ends - starts).max()) > MAX_ID_DIGITS:
        return _parse_int_lines_slow(path, text, delimiter)
    newlines = np.flatnonzero(classes == _NEWLINE)
    n_lines = len(newlines) + (0 if data.endswith(b"\n") else 1)
    counts = np.bincount(np.searchsorted(newlines, starts), minlength=n_lines)
    delimiters = np.flatnonzero(classes == _DELIM)
    if len(delimiters):
        # "1,2" has one delimiter per gap; "1,,2", ",1,2" and "1,2," do not, and go to the slow path.
        per_line = np.bincount(np.searchsorted(newlines, delimiters), minlength=n_lines)
        if not np.array_equal(per_line, np.maximum(counts - 1, 0)):
            return _parse_int_lines_slow(path, text, delimiter)
        text = text.replace(delimiter, " ")  # type: ignore[arg-type]
    elif delimiter is not None and not delimiter.isspace() and (counts > 1).any():
        return _parse_int_lines_slow(path, text, delimiter)
    # Only digits and whitespace remain, so the C text parser cannot stop early; the length check
    # guards against any disagreement anyway.
    values = np.fromstring(text, dtype=np.int64, sep=" ")
    if len(values) != len(starts):
        return _parse_int_lines_slow(path, text, delimiter)
    return values, counts.astype(np.int64)


def _parse_int_lines_slow(path: Path, text: str, delimiter: str | None) -> tuple[np.ndarray, np.ndarray]:
    values: list[int] = []
    counts: list[int] = []
    split_on = None if delimiter is None or delimiter.isspace() else delimiter
    for number, line in enumerate(text.split("\n"), start=1):
        if split_on is None or not line.strip():
            tokens = line.split()
        else:
            tokens = [token.strip() for token in line.split(split_on)]
        for token in tokens:
            check_int_token(path, number, token)
        values.extend(int(token) for token in tokens)
        counts.append(len(tokens))
    if text.endswith("\n"):
        counts.pop()
    return np.asarray(values, dtype=np.int64), np.asarray(counts, dtype=np.int64)


def check_int_token(path: Path, line: int, token: str, what: str = "id") -> None:
    """Raise a precise error unless ``token`` is a plain non-negative integer that fits int64."""
    if token.isascii() and token.isdigit():
        if len(token) > MAX_ID_DIGITS and int(token) > INT64_MAX:
            raise DataFormatError(
                path, line, f"{what} {shown(token)} is too large (ids must be at most {INT64_MAX}, int64)"
            )
        return
    if token.startswith("-") and token[1:].isascii() and token[1:].isdigit():
        raise DataFormatError(
            path, line, f"negative {what} {shown(token)}; ids must be non-negative integers"
        )
    raise DataFormatError(path, line, f"{what} {shown(token)} is not a non-negative integer")


def fits_int64(column: np.ndarray) -> np.ndarray:
    """Per token of an all-digit string array: whether its value is at most int64's maximum."""
    lengths = np.char.str_len(column)
    fits = lengths <= MAX_ID_DIGITS
    if not fits.all():
        long = ~fits
        digits = np.char.lstrip(column[long], "0")  # leading zeros do not change the value
        digit_lengths = np.char.str_len(digits)
        # Same-length digit strings compare like their values.
        fits[long] = (digit_lengths < len(_INT64_MAX_TEXT)) | (
            (digit_lengths == len(_INT64_MAX_TEXT)) & (digits <= _INT64_MAX_TEXT)
        )
    return fits


def field_counts(data: bytes, delimiter: str | None = None) -> np.ndarray:
    """Fields on each ``\n``-terminated line (0 for a blank line), counted on the bytes, without parsing.

    ``delimiter`` ``None`` counts runs of non-whitespace; otherwise a non-blank line has one field more
    than it has delimiters. Used to tell formats apart before choosing a reader.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    blank = np.isin(buf, np.frombuffer(b" \t\r\x0b\x0c\n", dtype=np.uint8))
    newlines = np.flatnonzero(buf == ord("\n"))
    n_lines = len(newlines) + (0 if data.endswith(b"\n") or not data else 1)
    starts = np.flatnonzero(np.diff((~blank).view(np.int8), prepend=np.int8(0)) == 1)
    tokens = np.bincount(np.searchsorted(newlines, starts), minlength=n_lines)[:n_lines]
    if delimiter is None or delimiter.isspace():
        return tokens
    separators = np.flatnonzero(buf == ord(delimiter))
    per_line = np.bincount(np.searchsorted(newlines, separators), minlength=n_lines)[:n_lines]
    return np.where((tokens > 0) | (per_line > 0), per_line + 1, 0)


def read_table(
    path: Path, delimiter: str | None, *, header: bool, quoting: bool, data: bytes | None = None
) -> tuple[list[str] | None, np.ndarray, np.ndarray]:
    """A delimited text table as a 2-D unicode array of fields.

    ``delimiter=None`` splits on runs of whitespace. Returns ``(header_fields, rows, lines)`` where
    ``lines[k]`` is the 1-based file line of ``rows[k]`` (for error messages). The fast path needs no
    quotes, no blank lines and the same column count on every line; otherwise the slow path (``csv``
    module, which also handles quoted fields) parses the file and reports the first bad line.
    ``data`` is the file's content when the caller has read it already (a stream can be read once).
    """
    if data is None:
        data = read_bytes(path)
    text = decode(path, data)
    if not text.strip():
        raise DataFormatError(path, None, "file is empty")
    text = text.replace("\r\n", "\n").rstrip("\n")
    first_line = 1
    header_fields: list[str] | None = None
    if header:
        first, _, text = text.partition("\n")
        try:
            header_fields = [field.strip() for field in _split_line(first, delimiter, quoting)]
        except csv.Error as error:
            raise DataFormatError(path, 1, f"malformed header line: {_csv_message(error)}") from None
        if not any(header_fields):
            raise DataFormatError(path, 1, "header line is empty")
        first_line = 2
        if not text.strip():
            raise DataFormatError(path, None, "file has a header but no data lines")
    n_cols = len(header_fields) if header_fields is not None else None
    rows = _table_fast(text, delimiter, n_cols, quoting)
    if rows is not None:
        return header_fields, rows, np.arange(first_line, first_line + len(rows), dtype=np.int64)
    rows, lines = _table_slow(path, text, delimiter, n_cols, quoting, first_line)
    return header_fields, rows, lines


def _split_line(line: str, delimiter: str | None, quoting: bool) -> list[str]:
    if delimiter is None:
        return line.split()
    if quoting:
        return next(csv.reader([line], delimiter=delimiter), [])
    return line.split(delimiter)


def _table_fast(text: str, delimiter: str | None, n_cols: int | None, quoting: bool) -> np.ndarray | None:
    if delimiter is not None and (len(delimiter) != 1 or not delimiter.isascii()):
        return None
    if (quoting and '"' in text) or "\n\n" in text or text.startswith("\n") or "\r" in text:
        return None
    n_lines = text.count("\n") + 1
    fields = text.split() if delimiter is None else text.replace("\n", delimiter).split(delimiter)
    if n_cols is None:
        if len(fields) % n_lines:
            return None
        n_cols = len(fields) // n_lines
    if n_cols == 0 or len(fields) != n_lines * n_cols:
        return None
    # Equal totals can hide one short and one long line: check the count on every line too.
    buf = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    if delimiter is None:
        is_token = ~np.isin(buf, np.frombuffer(b" \t\n\x0b\x0c\x1c\x1d\x1e\x1f", dtype=np.uint8))
        starts = np.flatnonzero(np.diff(is_token.view(np.int8), prepend=np.int8(0)) == 1)
        per_line = np.bincount(np.searchsorted(newlines, starts), minlength=n_lines)
        if (per_line != n_cols).any() or not text.isascii():
            return None  # non-ASCII whitespace would make str.split disagree with this byte count
    else:
        separators = np.flatnonzero(buf == ord(delimiter))
        per_line = np.bincount(np.searchsorted(newlines, separators), minlength=n_lines)
        if (per_line != n_cols - 1).any():
            return None
    return np.asarray(fields, dtype=str).reshape(n_lines, n_cols)


def _table_slow(
    path: Path, text: str, delimiter: str | None, n_cols: int | None, quoting: bool, first_line: int
) -> tuple[np.ndarray, np.ndarray]:
    rows: list[list[str]] = []
    lines: list[int] = []
    if delimiter is None:
        numbered = ((number, line.split()) for number, line in enumerate(text.split("\n"), start=first_line))
    else:
        reader = csv.reader(
            # Lines end at "\n" only (CRLF was normalised), as every other parser here counts them,
            # so a lone "\r" is reported on the line it sits in rather than shifting later lines.
            io.StringIO(text, newline="\n"),
            delimiter=delimiter,
            quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
            strict=True,
        )
        numbered = _numbered_rows(path, reader, first_line)
    for number, fields in numbered:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if n_cols is None:
            n_cols = len(fields)
        if len(fields) != n_cols:
            raise DataFormatError(path, number, f"expected {n_cols} columns, found {len(fields)}")
        rows.append(fields)
        lines.append(number)
    if not rows:
        raise DataFormatError(path, None, "file has no data lines")
    return np.asarray(rows, dtype=str), np.asarray(lines, dtype=np.int64)


def _numbered_rows(
    path: Path, reader: Iterator[list[str]], first_line: int
) -> Iterator[tuple[int, list[str]]]:
    """csv rows with the 1-based file line on which each starts."""
    previous_end = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            line = first_line + reader.line_num - 1  # type: ignore[attr-defined]
            raise DataFormatError(path, line, f"malformed line: {_csv_message(error)}") from None
        yield first_line + previous_end, fields
        previous_end = reader.line_num  # type: ignore[attr-defined]


def _csv_message(error: csv.Error) -> str:
    """The csv module's message, with its field-size limit spelled out (it names no unit)."""
    message = str(error)
    if message.startswith("new-line character seen in unquoted field"):
        return "a carriage return (\\r) inside an unquoted field (lines must end with \\n or \\r\\n)"
    if message.startswith("field larger than field limit"):
        return f"a field is longer than {csv.field_size_limit():,} characters (the CSV field limit)"
    return message


def as_ids(path: Path, column: np.ndarray, lines: np.ndarray, what: str) -> np.ndarray:
    """Token ids as int64 when every token is a canonical non-negative integer, else as strings.

    Canonical means ``str(int(token)) == token``, so ``"007"`` and ``"7"`` stay distinct ids and the
    conversion never merges two tokens; natural sorting then orders integer ids numerically.
    """
    column = np.char.strip(column)
    lengths = np.char.str_len(column)
    if (lengths == 0).any():
        raise DataFormatError(path, int(lines[np.argmax(lengths == 0)]), f"empty {what}")
    if bool(np.char.isdigit(column).all()) and _all_ascii(column):
        leading_zero = np.char.startswith(column, "0") & (lengths > 1)
        if not leading_zero.any() and fits_int64(column).all():
            return column.astype(np.int64)
    return column


def ascii_mask(column: np.ndarray) -> np.ndarray:
    """Per string: all code points < 128. ``str.isdigit`` accepts non-ASCII digits ('\u0663', '\u00b2')
    that ``int()`` and ``astype`` reject, so digit checks are combined with this one."""
    column = np.ascontiguousarray(column, dtype=str)
    width = column.dtype.itemsize // 4
    if width == 0 or len(column) == 0:
        return np.ones(len(column), dtype=bool)
    return (column.view(np.uint32).reshape(len(column), width) < 128).all(axis=1)


def _all_ascii(column: np.ndarray) -> bool:
    return bool(ascii_mask(column).all())


def as_int_ids(path: Path, column: np.ndarray, lines: np.ndarray, what: str) -> np.ndarray:
    """Non-negative int64 ids for integer-only formats; the first bad token is reported with its line."""
    column = np.char.strip(column)
    good = np.char.isdigit(column) & ascii_mask(column)
    if good.all():
        good = fits_int64(column)
    if not good.all():
        bad = int(np.argmax(~good))
        check_int_token(path, int(lines[bad]), str(column[bad]), what)
    return column.astype(np.int64)


def as_floats(path: Path, column: np.ndarray, lines: np.ndarray, what: str) -> np.ndarray:
    """Float64 values; the first non-numeric field is reported with its line."""
    try:
        return np.char.strip(column).astype(np.float64)
    except ValueError:
        for offset, value in enumerate(column.tolist()):
            try:
                float(value)
            except ValueError:
                raise DataFormatError(
                    path, int(lines[offset]), f"{what} {shown(value)} is not a number"
                ) from None
        raise
