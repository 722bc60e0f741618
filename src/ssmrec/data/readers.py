"""Readers: files on disk -> raw arrays of original ids, with the files they came from.

Readers do no cleaning (duplicates, cold ids, splitting): that is ``build.py``'s job, so every format
goes through the same rules and the same report. Integer formats (LightGCN, pair files) give int64
ids; header formats (RecBole atomic, CSV/TSV) give int64 ids when every token is a canonical integer
and strings otherwise, so ids sort naturally either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssmrec.data import _text
from ssmrec.errors import DataFormatError, DatasetNotFoundError

LIGHTGCN_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass(frozen=True, eq=False)
class RawSplit:
    """One split (or a whole unsplit file) as parallel arrays, one entry per input interaction."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: np.ndarray) -> RawSplit:
        """The rows selected by ``index`` (a boolean mask or positions)."""
        return RawSplit(
            users=self.users[index],
            items=self.items[index],
            ratings=None if self.ratings is None else self.ratings[index],
            timestamps=None if self.timestamps is None else self.timestamps[index],
            path=self.path,
        )


@dataclass(frozen=True, eq=False)
class RawData:
    """What a reader found: ``splits`` has ``train``/``test`` (and maybe ``valid``), or just ``all``."""

    format: str
    splits: dict[str, RawSplit]
    files: dict[str, Path] = field(default_factory=dict)
    """Role (``train``, ``test``, ``valid``, ``all``) -> file read; these are hashed into the fingerprint."""
    notes: tuple[str, ...] = ()
    """What the reader itself did (e.g. rows removed by a rating threshold), for ``DataReport.notes``."""

    @property
    def is_split(self) -> bool:
        return "train" in self.splits


# --- LightGCN: "user item item ..." -------------------------------------------------------------------


def read_lightgcn_file(path: str | Path) -> RawSplit:
    """One LightGCN file: each line is ``user item item ...``; a line with only a user has no items."""
    path = Path(path)
    values, counts = _text.parse_int_lines(path, _text.read_bytes(path))
    line_starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    user_positions = line_starts[counts > 0]
    users = np.repeat(values[user_positions], counts[counts > 0] - 1)
    is_item = np.ones(len(values), dtype=bool)
    is_item[user_positions] = False
    return RawSplit(users=users, items=values[is_item], path=path)


def read_lightgcn(folder: str | Path) -> RawData:
    """A LightGCN split folder: ``train.txt`` and ``test.txt`` required, ``valid.txt`` optional."""
    folder = Path(folder)
    files = _split_files(folder, "LightGCN")
    return RawData("lightgcn", {role: read_lightgcn_file(path) for role, path in files.items()}, files)


def _split_files(folder: Path, what: str) -> dict[str, Path]:
    """Role -> existing ``train.txt``/``valid.txt``/``test.txt``; train and test are required."""
    files = {role: folder / name for role, name in LIGHTGCN_FILES.items() if (folder / name).is_file()}
    missing = [LIGHTGCN_FILES[role] for role in ("train", "test") if role not in files]
    if missing:
        raise DatasetNotFoundError(f"{folder}: {what} folder lacks {' and '.join(missing)}")
    return files


# --- pair files: "user,item" / "user<TAB>item" (extra columns ignored) -----------------------------------
# --- triples: "user item rating" (SELFRec / RecBole-style train.txt, the third field a constant or a rating)


def read_pairs_file(path: str | Path, delimiter: str | None = None, *, data: bytes | None = None) -> RawSplit:
    """One pair file (e.g. SSM's ``gowalla.train``): integer ``user,item`` per line, extra columns ignored.

    ``delimiter`` ``None`` picks ``,`` or TAB from the first line, else runs of whitespace. ``data`` is
    the content when the caller has read it already (a stream can be read only once).
    """
    path = Path(path)
    users, items, _ = _read_id_columns(path, data, delimiter, triples=False)
    return RawSplit(users=users, items=items, path=path)


def read_triples_file(
    path: str | Path, delimiter: str | None = None, *, data: bytes | None = None
) -> RawSplit:
    """One triples file: exactly ``user item rating`` per line (integer ids; the rating any number).

    The rating is kept (``RawSplit.ratings``) so a rating threshold can use it; a constant third
    field (SELFRec's ``u i 1``) just reads as rating 1. Delimiters as in ``read_pairs_file``.
    """
    path = Path(path)
    users, items, ratings = _read_id_columns(path, data, delimiter, triples=True)
    return RawSplit(users=users, items=items, ratings=ratings, path=path)


def sniff_pair_delimiter(data: bytes) -> str | None:
    """``,`` when the first non-blank line has one, else ``None`` (runs of whitespace, TAB included)."""
    first = next((line for line in data.split(b"\n") if line.strip()), b"")
    return "," if b"," in first else None  # TAB is whitespace: "u<TAB>i" splits the same either way


def _read_id_columns(
    path: Path, data: bytes | None, delimiter: str | None, *, triples: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Users, items and (for triples) the third column of an integer pair/triple file.

    All-integer files take ``parse_int_lines`` (vectorised); anything else (a rating like 4.5, a
    stray letter) the table path, which names the first bad field.
    """
    if data is None:
        data = _text.read_bytes(path)
    text = _text.decode(path, data)
    if not text.strip():
        raise DataFormatError(path, None, "file is empty")
    if delimiter is None:
        delimiter = sniff_pair_delimiter(data)
    split_on = None if delimiter is None or delimiter.isspace() else delimiter
    what = "3 columns (user, item, rating)" if triples else "at least 2 columns (user, item)"
    if _text.only_int_bytes(data, split_on):
        values, counts = _text.parse_int_lines(path, data, split_on)
        width = int(counts[counts > 0][0])
        bad = (counts != width) & (counts > 0)
        if bad.any():
            line = int(np.argmax(bad)) + 1
            raise DataFormatError(path, line, f"expected {width} columns, found {int(counts[line - 1])}")
        if width < 2 or (triples and width != 3):
            raise DataFormatError(path, int(np.argmax(counts > 0)) + 1, f"expected {what}, found {width}")
        table = values.reshape(-1, width)
        third = table[:, 2].astype(np.float64) if triples else None
        return table[:, 0].copy(), table[:, 1].copy(), third
    _, rows, lines = _text.read_table(path, split_on, header=False, quoting=False, data=data)
    if rows.shape[1] < 2 or (triples and rows.shape[1] != 3):
        raise DataFormatError(path, int(lines[0]), f"expected {what}, found {rows.shape[1]}")
    users = _text.as_int_ids(path, rows[:, 0], lines, "user id")
    items = _text.as_int_ids(path, rows[:, 1], lines, "item id")
    third = _text.as_floats(path, rows[:, 2], lines, "rating") if triples else None
    if third is not None and not np.isfinite(third).all():
        bad = int(np.argmax(~np.isfinite(third)))
        raise DataFormatError(path, int(lines[bad]), f"rating {_text.shown(str(rows[bad, 2]))} is not finite")
    return users, items, third


def read_pairs(train_path: str | Path, delimiter: str | None = None) -> RawData:
    """``NAME.train`` with its sibling ``NAME.test`` (required) and ``NAME.valid`` (optional)."""
    train_path = Path(train_path)
    if train_path.suffix in (".test", ".valid"):
        train_path = train_path.with_suffix(".train")
    files = {role: train_path.with_suffix(f".{role}") for role in ("train", "valid", "test")}
    files = {role: path for role, path in files.items() if path.is_file()}
    missing = [f"{train_path.stem}.{role}" for role in ("train", "test") if role not in files]
    if missing:
        raise DatasetNotFoundError(f"{train_path.parent}: pair files lack {' and '.join(missing)}")
    return RawData("pairs", {role: read_pairs_file(path, delimiter) for role, path in files.items()}, files)


def read_triples(folder: str | Path, rating_threshold: float | None = None) -> RawData:
    """A triples split folder: ``train.txt``, ``test.txt`` (+ ``valid.txt``), ``user item rating`` lines.

    The same file names as LightGCN, which is why ``auto`` inspects the content (see ``spec.py``).
    ``rating_threshold`` keeps only rows rated at least that, in every split.
    """
    folder = Path(folder)
    files = _split_files(folder, "triples")
    splits: dict[str, RawSplit] = {}
    notes: list[str] = []
    for role, path in files.items():
        splits[role], note = apply_threshold(path, read_triples_file(path), rating_threshold)
        notes += [f"{role}: {text}" for text in note]
    return RawData("triples", splits, files, tuple(notes))


def read_single(
    fmt: str, path: str | Path, *, data: bytes | None = None, rating_threshold: float | None = None
) -> RawData:
    """One unsplit pairs or triples file (a stream, or a file named on its own): split per user later."""
    path = Path(path)
    if fmt == "pairs":
        split, notes = read_pairs_file(path, data=data), ()
    elif fmt == "triples":
        split, notes = apply_threshold(path, read_triples_file(path, data=data), rating_threshold)
    else:
        raise ValueError(f"read_single reads pairs or triples, not {fmt!r}")
    return RawData(fmt, {"all": split}, {"all": path}, notes)


# --- header formats: RecBole atomic .inter and CSV/TSV ---------------------------------------------------


def read_atomic(
    path: str | Path,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = "rating",
    time_col: str | None = "timestamp",
    rating_threshold: float | None = None,
    *,
    data: bytes | None = None,
) -> RawData:
    """A RecBole atomic ``.inter`` file: TAB-separated, header fields ``name:type``.

    Columns are found by name (the part before ``:``). ``rating_col``/``time_col`` are read when
    present; a missing rating column is an error only when ``rating_threshold`` needs it.
    """
    path = Path(path)
    header, rows, lines = _text.read_table(path, "\t", header=True, quoting=False, data=data)
    assert header is not None
    names: list[str] = []
    for raw in header:
        name, colon, kind = raw.partition(":")
        if not colon:
            raise DataFormatError(
                path, 1, f"header field {_text.shown(raw)} lacks a type (RecBole: 'user_id:token')"
            )
        if kind not in ATOMIC_TYPES:
            raise DataFormatError(
                path,
                1,
                f"header field {_text.shown(raw)} has unknown type {_text.shown(kind)} "
                f"(expected one of {ATOMIC_TYPES})",
            )
        names.append(name)
    for role, name in (("user", user_col), ("item", item_col)):
        if name in names and header[names.index(name)].endswith("_seq"):
            raise DataFormatError(
                path, 1, f"{role} column {_text.shown(header[names.index(name)])} is a sequence type"
            )
    split, notes = _columns(
        path, names, rows, lines, user_col, item_col, rating_col, time_col, rating_threshold
    )
    return RawData("atomic", {"all": split}, {"all": path}, notes)


def read_csv(
    path: str | Path,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = "rating",
    time_col: str | None = "timestamp",
    rating_threshold: float | None = None,
    delimiter: str | None = None,
    *,
    data: bytes | None = None,
) -> RawData:
    """A CSV/TSV file with a header row naming its columns (quoted fields allowed).

    ``delimiter`` ``None``: TAB for ``.tsv``/``.tab``, comma for ``.csv``, otherwise whichever of TAB,
    comma, semicolon first appears in the header line.
    """
    path = Path(path)
    if data is None:
        data = _text.read_bytes(path)
    if delimiter is None:
        delimiter = sniff_table_delimiter(path, data)
    header, rows, lines = _text.read_table(path, delimiter, header=True, quoting=True, data=data)
    assert header is not None
    split, notes = _columns(
        path, header, rows, lines, user_col, item_col, rating_col, time_col, rating_threshold
    )
    return RawData("csv", {"all": split}, {"all": path}, notes)


def sniff_table_delimiter(path: Path, data: bytes) -> str:
    """TAB for ``.tsv``/``.tab``, comma for ``.csv``, else whichever of TAB, comma, semicolon comes first."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    first = _text.decode(path, data).split("\n", 1)[0]
    positions = {d: first.find(d) for d in ("\t", ",", ";") if d in first}
    return min(positions, key=positions.__getitem__) if positions else ","


def _columns(
    path: Path,
    names: list[str],
    rows: np.ndarray,
    lines: np.ndarray,
    user_col: str,
    item_col: str,
    rating_col: str | None,
    time_col: str | None,
    rating_threshold: float | None,
) -> tuple[RawSplit, tuple[str, ...]]:
    """Pick the named columns out of a parsed table and apply the rating threshold."""

    def index(name: str, why: str) -> int:
        if name not in names:
            listed = ", ".join(_text.shown(column)[1:-1] for column in names[:30])
            more = f" and {len(names) - 30} more" if len(names) > 30 else ""
            raise DataFormatError(path, 1, f"no column {name!r} in header{why} (columns: {listed}{more})")
        return names.index(name)

    users = _text.as_ids(path, rows[:, index(user_col, " (user_col)")], lines, "user id")
    items = _text.as_ids(path, rows[:, index(item_col, " (item_col)")], lines, "item id")
    ratings = timestamps = None
    if rating_col is not None and (rating_col in names or rating_threshold is not None):
        column = rows[:, index(rating_col, ", needed by rating_threshold")]
        ratings = _text.as_floats(path, column, lines, "rating")
    if time_col is not None and time_col in names:
        timestamps = _as_times(path, rows[:, names.index(time_col)], lines)
    split = RawSplit(users=users, items=items, ratings=ratings, timestamps=timestamps, path=path)
    if rating_threshold is not None and ratings is None:
        raise DataFormatError(path, 1, "rating_threshold is set but rating_col is None")
    return apply_threshold(path, split, rating_threshold)


def apply_threshold(
    path: Path, split: RawSplit, rating_threshold: float | None
) -> tuple[RawSplit, tuple[str, ...]]:
    """Rows rated at least ``rating_threshold`` (all rows when ``None``), with a note saying how many."""
    if rating_threshold is None:
        return split, ()
    assert split.ratings is not None
    kept = split.take(split.ratings >= rating_threshold)
    if len(kept) == 0:
        raise DataFormatError(path, None, f"no interaction has rating >= {rating_threshold:g}")
    return kept, (f"rating >= {rating_threshold:g} kept {len(kept)} of {len(split)} rows",)


def _as_times(path: Path, column: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Numeric timestamps as float64; ISO-8601 date strings are accepted as seconds since the epoch."""
    try:
        return np.char.strip(column).astype(np.float64)
    except ValueError:
        pass
    try:
        stamps = np.char.strip(column).astype("datetime64[s]")
    except ValueError:
        return _text.as_floats(path, column, lines, "timestamp")  # raises, naming the first bad line
    return stamps.astype(np.int64).astype(np.float64)
