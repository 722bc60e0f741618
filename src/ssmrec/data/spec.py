"""What to load (``DataSpec``) and the one entry point that loads it (``load_dataset``).

``load_dataset`` resolves a registry name or a path, detects the format, and returns the cached
result when the source files and every result-changing option are unchanged; otherwise it reads,
cleans and caches. The fingerprint it records in ``Interactions.source`` (file sha256s, options,
cache key) is what a training run stores to say exactly which data it saw.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssmrec.data import _text, cache, readers, registry
from ssmrec.data.build import SPLIT_METHODS, build_interactions
from ssmrec.data.interactions import Interactions
from ssmrec.data.readers import RawData
from ssmrec.errors import ConfigError, DataFormatError, DatasetNotFoundError

FORMATS = ("auto", "lightgcn", "triples", "pairs", "atomic", "csv")
SPLIT_FOLDER_FORMATS = ("lightgcn", "triples")
"""Formats read from a folder holding train.txt and test.txt (and maybe valid.txt)."""

RATING_LIKE_VALUES = 10
"""A third column with at most this many distinct values reads as a rating (1-5, 0.5-5) or a constant."""
LIGHTGCN_FIELDS_HEAD = 1 << 16
"""Bytes of train.txt examined first: one line without exactly 3 fields settles LightGCN at once."""
_TABLE_SUFFIXES = (".csv", ".tsv", ".tab")


@dataclass(frozen=True)
class DataSpec:
    """What to load: a ``dataset`` (registry name) or a ``path`` (file or folder), not both.

    ``split``/``test_ratio`` apply only to unsplit data (one atomic/CSV file); ``valid_ratio`` carves
    a validation split from train when the data has none (0 disables). Column names apply to the
    header formats; ``rating_col``/``time_col`` are used when present and ``None`` ignores them.
    """

    dataset: str | None = None
    path: str | None = None
    format: str = "auto"
    user_col: str = "user_id"
    item_col: str = "item_id"
    rating_col: str | None = "rating"
    time_col: str | None = "timestamp"
    rating_threshold: float | None = None
    split: str = "ratio"
    test_ratio: float = 0.2
    valid_ratio: float = 0.1
    split_seed: int = 2024

    def __post_init__(self) -> None:
        # Neither is allowed here so configs can be layered (a default TrainConfig, then the CLI sets
        # one); load_dataset refuses a spec that still names no data.
        if self.dataset is not None and self.path is not None:
            raise ConfigError("data: set only one of 'dataset' (a registry name) and 'path'")
        for key in ("dataset", "path"):
            value = getattr(self, key)
            if value is not None:
                if isinstance(value, Path):
                    object.__setattr__(self, key, str(value))
                elif not isinstance(value, str) or not value.strip():
                    raise ConfigError(f"data.{key} must be a non-empty string, got {value!r}")
        if self.format not in FORMATS:
            raise ConfigError(f"data.format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.split not in SPLIT_METHODS:
            raise ConfigError(f"data.split must be one of {', '.join(SPLIT_METHODS)}, got {self.split!r}")
        for key, optional in (
            ("user_col", False),
            ("item_col", False),
            ("rating_col", True),
            ("time_col", True),
        ):
            value = getattr(self, key)
            if (value is None and not optional) or (
                value is not None and (not isinstance(value, str) or not value)
            ):
                raise ConfigError(f"data.{key} must be a non-empty column name, got {value!r}")
        _check_fraction("test_ratio", self.test_ratio, allow_zero=False)
        _check_fraction("valid_ratio", self.valid_ratio, allow_zero=True)
        if self.rating_threshold is not None:
            if isinstance(self.rating_threshold, bool) or not isinstance(self.rating_threshold, int | float):
                raise ConfigError(f"data.rating_threshold must be a number, got {self.rating_threshold!r}")
            if not math.isfinite(self.rating_threshold):
                raise ConfigError(f"data.rating_threshold must be finite, got {self.rating_threshold!r}")
            if self.rating_col is None:
                raise ConfigError("data.rating_threshold needs data.rating_col")
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int) or self.split_seed < 0:
            raise ConfigError(f"data.split_seed must be a non-negative integer, got {self.split_seed!r}")
        if self.split == "leave-last-out" and self.time_col is None:
            raise ConfigError("data.split 'leave-last-out' needs data.time_col")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataSpec:
        """From a config mapping; unknown keys are a ``ConfigError`` naming the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"unknown data key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
        return cls(**values)

    @classmethod
    def for_target(cls, target: str | Path, **options: Any) -> DataSpec:
        """Spec for a CLI argument that is either a path or a registry name (``ssmrec data info X``).

        An existing file or folder wins over a registry name of the same spelling.
        """
        if _exists(Path(target).expanduser()):
            return cls(path=str(target), **options)
        registry.get_entry(str(target))  # raises DatasetNotFoundError listing the known names
        return cls(dataset=str(target), **options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_fraction(key: str, value: object, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"data.{key} must be a number, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        bounds = "0 <= x < 1" if allow_zero else "0 < x < 1"
        raise ConfigError(f"data.{key} must satisfy {bounds}, got {value!r}")


def _exists(path: Path) -> bool:
    """``Path.exists`` that turns the errors it does not swallow (EACCES, ENAMETOOLONG) into a message."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        if error.errno in (errno.ELOOP,):
            return False
        raise DatasetNotFoundError(f"{path}: cannot access: {error.strerror or error}") from None
    return True


def _listing(path: Path) -> list[str]:
    try:
        return sorted(p.name for p in path.iterdir())
    except OSError as error:
        raise DatasetNotFoundError(f"{path}: cannot list folder: {error.strerror or error}") from None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as error:  # e.g. a folder without search (x) permission
        raise DatasetNotFoundError(f"{path}: cannot access: {error.strerror or error}") from None


def detect_format(path: Path, requested: str = "auto") -> tuple[str, Path]:
    """Reader format and the path the reader opens (a folder for lightgcn/triples, else a file).

    Auto rules: a folder with ``train.txt`` + ``test.txt`` is LightGCN, or triples when its content says
    so (see ``lightgcn_or_triples``); a ``.inter`` file (or a folder with exactly one) is RecBole atomic;
    ``NAME.train``/``NAME.test`` are pair files; ``.csv``/``.tsv`` is CSV. An explicit ``requested``
    format only decides what to look for in a folder. A FIFO or ``/dev/fd/N`` is read (once) and
    detected from its content: ``load_dataset`` does that itself, so it can still read the bytes.
    """
    if not _exists(path):
        raise DatasetNotFoundError(f"{path} does not exist")
    if _text.is_stream(path):
        return format_of_content(path, _text.read_bytes(path), requested), path
    if path.is_file():
        return _format_of_file(path, requested)
    names = _listing(path)
    candidates: list[tuple[str, Path]] = []
    if _is_file(path / "train.txt") and _is_file(path / "test.txt"):
        if requested in SPLIT_FOLDER_FORMATS:
            candidates.append((requested, path))
        elif requested == "auto":
            candidates.append((lightgcn_or_triples(path), path))
    inter = [path / name for name in names if name.endswith(".inter")]
    if len(inter) == 1:
        candidates.append(("atomic", inter[0]))
    trains = [path / name for name in names if name.endswith(".train")]
    trains = [p for p in trains if _is_file(p.with_suffix(".test"))]
    if len(trains) == 1:
        candidates.append(("pairs", trains[0]))
    tables = [path / name for name in names if Path(name).suffix.lower() in _TABLE_SUFFIXES]
    tables = [p for p in tables if _is_file(p)]
    if len(tables) == 1:
        candidates.append(("csv", tables[0]))
    if requested != "auto":
        candidates = [c for c in candidates if c[0] == requested]
    if candidates:
        return candidates[0]
    # A trailing "/" marks folders, so "train.txt/" shows why a train.txt was not taken as a file.
    listing = ", ".join(name + "/" * (path / name).is_dir() for name in names[:20]) or "nothing"
    if len(names) > 20:
        listing += f" and {len(names) - 20} more"
    what = "data files" if requested == "auto" else f"{requested} data"
    raise DatasetNotFoundError(
        f"{path}: no {what} found (expected train.txt+test.txt, one *.inter, NAME.train+NAME.test or one "
        f".csv/.tsv); it holds: {listing}"
    )


def _format_of_file(path: Path, requested: str) -> tuple[str, Path]:
    suffix = path.suffix.lower()
    in_split_folder = path.name in readers.LIGHTGCN_FILES.values()
    if requested == "lightgcn" or (requested == "triples" and in_split_folder):
        return requested, path.parent
    if requested == "auto" and in_split_folder:
        folder = path.parent
        both = _is_file(folder / "train.txt") and _is_file(folder / "test.txt")
        return (lightgcn_or_triples(folder) if both else "lightgcn"), folder  # else: "lacks test.txt"
    if requested != "auto":
        return requested, path
    if suffix == ".inter":
        return "atomic", path
    if suffix in (".train", ".test", ".valid"):
        return "pairs", path.with_suffix(".train")
    if suffix in _TABLE_SUFFIXES:
        return "csv", path
    raise ConfigError(
        f"{path}: cannot tell the format from the name; set data.format "
        "(lightgcn, triples, pairs, atomic or csv)"
    )


# --- LightGCN or triples: the same file names, told apart by content -------------------------------------


def lightgcn_or_triples(folder: Path) -> str:
    """``lightgcn`` or ``triples`` for a folder with train.txt + test.txt, or a ``DataFormatError``.

    A LightGCN line is ``user item item ...``; a triples line is ``user item rating``. A file whose lines
    do not all have exactly 3 fields can only be LightGCN (train.txt's first lines usually settle that
    without reading further). When every line has 3 fields, triples is chosen only if the LightGCN reading
    is contradicted (a non-integer third field; a user on several lines of one file, which LightGCN never
    writes; or a third column with few distinct values, each then an "item" nearly every line holds) and
    the triples reading is not (the third column looks like a rating or a constant). Anything else, e.g. a
    real LightGCN file in which every user has exactly 2 items, is refused naming both readings.
    """
    files = [folder / name for name in ("train.txt", "valid.txt", "test.txt") if (folder / name).is_file()]
    head = _head(files[0], LIGHTGCN_FIELDS_HEAD)
    if _odd_line(head) is not None:
        return "lightgcn"
    contents = []
    for path in files:
        data = _text.read_bytes(path)
        odd = _odd_line(data)
        if odd is not None:
            # Not triples, strictly. But the lines before looked like triples: if they also contradict
            # LightGCN, the odd line is more likely a broken triple than a LightGCN user, so refuse.
            line, found = odd
            before = [*contents, (path, _lines_before(data, line))]
            against, _ = _three_field_evidence([(p, d) for p, d in before if d.strip()])
            if not against:
                return "lightgcn"
            where = f"{path.name}:{line} has {found}" if line else f"{path.name} has no data lines"
            raise DataFormatError(
                folder,
                None,
                f"ambiguous format: the lines before look like triples (user item rating: "
                f"{'; '.join(against)}), but {where}. If this is LightGCN data (user item item ...) "
                "choose --format lightgcn; if it is triples, --format triples reports the bad line",
            )
        contents.append((path, data))
    against_lightgcn, for_triples = _three_field_evidence(contents)
    if against_lightgcn and not for_triples[1]:
        return "triples"
    names = " and ".join(path.name for path, _ in contents)
    evidence = "; ".join([*against_lightgcn, for_triples[0]] if for_triples[0] else against_lightgcn)
    raise DataFormatError(
        folder,
        None,
        f"ambiguous format: every line of {names} has 3 fields, which reads either as LightGCN "
        "(user item item: 2 items per user) or as triples (user item rating: one item per line, the "
        f"third field a rating){'; ' + evidence if evidence else ''}. Choose the reading with --format "
        "lightgcn or --format triples (data.format in a config)",
    )


def _head(path: Path, size: int) -> bytes:
    """The first complete lines within ``size`` bytes of ``path`` (the whole file when shorter)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(size)
    except OSError as error:
        raise DataFormatError(path, None, f"cannot read file: {error.strerror or error}") from None
    if len(data) == size and b"\n" in data:
        data = data[: data.rindex(b"\n") + 1]
    return data


def _lines_before(data: bytes, line: int) -> bytes:
    """The bytes of lines ``1 .. line-1`` (all of ``data`` for ``line`` 0)."""
    if line <= 1:
        return data if line == 0 else b""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    return data[: int(newlines[line - 2]) + 1]


def _odd_line(data: bytes) -> tuple[int, str] | None:
    """The first non-blank line without exactly 3 fields (split as the pair/triples readers do), or
    ``None``; ``(0, "no fields")`` for a file without data lines."""
    counts = _text.field_counts(data, readers.sniff_pair_delimiter(data))
    odd = (counts != 3) & (counts > 0)
    if odd.any():
        line = int(np.argmax(odd))
        return line + 1, f"{int(counts[line])} fields"
    return None if (counts > 0).any() else (0, "no fields")


def _three_field_evidence(contents: list[tuple[Path, bytes]]) -> tuple[list[str], tuple[str, bool]]:
    """What contradicts LightGCN (a list of reasons) and what speaks about triples (reason, contradicts)."""
    against: list[str] = []
    thirds: list[np.ndarray] = []
    for path, data in contents:
        sep = readers.sniff_pair_delimiter(data)
        if _text.only_int_bytes(data, sep):  # the common case: integers, counted as integers (fast)
            fields = _text.parse_int_lines(path, data, sep)[0].reshape(-1, 3)
            user_column, third_column = fields[:, 0], fields[:, 2]
        else:
            _, fields, _ = _text.read_table(path, sep, header=False, quoting=False, data=data)
            if fields.shape[1] != 3:
                raise DataFormatError(path, 1, f"expected 3 fields a line, found {fields.shape[1]}")
            user_column, third_column = np.char.strip(fields[:, 0]), np.char.strip(fields[:, 2])
        users, counts = np.unique(user_column, return_counts=True)
        if len(users) and counts.max() > 1:
            top = int(np.argmax(counts))
            against.append(
                f"user {_text.shown(str(users[top]))} is on {int(counts[top])} lines of {path.name} "
                "(LightGCN has one line per user)"
            )
        thirds.append(third_column)
    if len({part.dtype.kind for part in thirds}) > 1:
        thirds = [part.astype(str) for part in thirds]
    third = np.concatenate(thirds)
    values, counts = np.unique(third, return_counts=True)
    values = values.astype(str)
    non_integer = ~(np.char.isdigit(values) & _text.ascii_mask(values))
    if non_integer.any():
        against.insert(0, f"the third field {_text.shown(str(values[np.argmax(non_integer)]))} is no item id")
    if len(values) > RATING_LIKE_VALUES:
        return against, (f"the third field takes {len(values):,} distinct values (not a rating)", True)
    if not all(_is_number(value) for value in values[non_integer].tolist()):
        return against, ("the third field is not always a number", True)
    if len(third) >= 4 * len(values):
        top = int(np.argmax(counts))
        against.append(
            f"the third field takes only {len(values)} distinct value(s), so read as LightGCN item "
            f"{_text.shown(str(values[top]))} would be held on {int(counts[top]) / len(third):.0%} of lines"
        )
    return against, ("", False)


# --- a stream (FIFO, /dev/fd/N): one file, read once, detected from its content ---------------------------


def format_of_content(path: Path, data: bytes, requested: str = "auto") -> str:
    """The format of a stream's bytes: atomic (typed header), csv (named header), pairs or triples.

    Folder formats cannot come from a stream; LightGCN lines (varying field counts) are refused saying so.
    """
    text = _text.decode(path, data)
    if not text.strip():
        raise DataFormatError(path, None, "file is empty")
    if requested == "lightgcn":
        raise DataFormatError(
            path, None, "LightGCN data is a folder (train.txt and test.txt); a stream holds one file"
        )
    if requested != "auto":
        return requested
    first = next(line for line in text.split("\n") if line.strip()).strip()
    tab_fields = first.split("\t")
    if len(tab_fields) > 1 and all(f.partition(":")[2] in readers.ATOMIC_TYPES for f in tab_fields):
        return "atomic"
    delimiter = readers.sniff_pair_delimiter(data)
    fields = [f.strip() for f in (first.split(delimiter) if delimiter else first.split())]
    if not all(_is_number(field) for field in fields):
        return "csv"  # a header line names the columns
    per_line = _text.field_counts(data, delimiter)
    width = int(per_line[per_line > 0][0])
    odd = (per_line != width) & (per_line > 0)
    if odd.any():
        line = int(np.argmax(odd)) + 1
        raise DataFormatError(
            path,
            line,
            f"{int(per_line[line - 1])} fields where the first line has {width}: LightGCN lines "
            "(user item item ...) need a folder with train.txt and test.txt, which a stream cannot be; "
            "pairs, triples, atomic or CSV data must have the same number of fields on every line",
        )
    if width == 3:
        third = np.asarray(text.replace(",", " ").split(), dtype=str)[2::3]
        if len(np.unique(third)) <= RATING_LIKE_VALUES:
            return "triples"
    return "pairs"


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _source_files(fmt: str, target: Path) -> dict[str, Path]:
    """The files a reader will open, by role, checked to exist (they are hashed before reading)."""
    if fmt == "lightgcn" or (fmt == "triples" and target.is_dir()):
        files = {role: target / name for role, name in readers.LIGHTGCN_FILES.items()}
        required = ("train", "test")
    elif fmt == "pairs" and _is_split_pairs(target):
        files = {role: target.with_suffix(f".{role}") for role in ("train", "valid", "test")}
        required = ("train", "test")
    else:
        files = {"all": target}
        required = ("all",)
    missing = [str(files[role]) for role in required if not _is_file(files[role])]
    if missing:
        raise DatasetNotFoundError(f"missing data file(s): {', '.join(missing)}")
    return {role: path for role, path in files.items() if _is_file(path)}


def _is_split_pairs(target: Path) -> bool:
    """``NAME.train`` (with siblings) rather than one unsplit pair file named on its own."""
    return target.suffix in (".train", ".test", ".valid")


def _is_unsplit(fmt: str, target: Path) -> bool:
    return (
        fmt in ("atomic", "csv")
        or (fmt == "pairs" and not _is_split_pairs(target))
        or (fmt == "triples" and not target.is_dir())
    )


def _options(spec: DataSpec, fmt: str, unsplit: bool) -> dict[str, Any]:
    """Every option that can change the result for this format (part of the cache key and fingerprint)."""
    options: dict[str, Any] = {"valid_ratio": spec.valid_ratio, "split_seed": spec.split_seed}
    if fmt in ("atomic", "csv"):
        options.update(
            user_col=spec.user_col,
            item_col=spec.item_col,
            rating_col=spec.rating_col,
            time_col=spec.time_col,
        )
    if fmt in ("atomic", "csv", "triples"):
        options["rating_threshold"] = spec.rating_threshold
    if unsplit:
        options.update(split=spec.split, test_ratio=spec.test_ratio)
    return options


def _read(fmt: str, target: Path, spec: DataSpec, data: bytes | None) -> RawData:
    if fmt == "lightgcn":
        return readers.read_lightgcn(target)
    if fmt == "triples" and data is None and target.is_dir():
        return readers.read_triples(target, spec.rating_threshold)
    if fmt == "pairs" and data is None and _is_split_pairs(target):
        return readers.read_pairs(target)
    if fmt in ("pairs", "triples"):
        return readers.read_single(fmt, target, data=data, rating_threshold=spec.rating_threshold)
    columns = dict(
        user_col=spec.user_col,
        item_col=spec.item_col,
        rating_col=spec.rating_col,
        time_col=spec.time_col,
        rating_threshold=spec.rating_threshold,
    )
    if fmt == "atomic":
        return readers.read_atomic(target, **columns, data=data)
    return readers.read_csv(target, **columns, data=data)


def load_dataset(
    spec: DataSpec, *, use_cache: bool = True, mirror: str | None = None, download: bool = True
) -> Interactions:
    """Load, clean and index the data ``spec`` describes, via the cache when possible.

    ``mirror`` overrides the download base (see ``registry.mirror_url``); ``download=False`` fails
    instead of fetching a registry dataset that is not on disk. A stream (FIFO, ``<(cat file)``) is
    read once; its fingerprint is the sha256 of the bytes read, which also keys the cache.
    """
    extra_notes: tuple[str, ...] = ()
    if spec.dataset is None and spec.path is None:
        raise ConfigError("no data given: set data.dataset (a registry name) or data.path")
    if spec.dataset is not None:
        resolved = registry.resolve(spec.dataset, mirror=mirror, download=download)
        name, location, extra_notes = resolved.entry.name, resolved.path, resolved.notes
        requested = resolved.entry.format if spec.format == "auto" else spec.format
    else:
        location = Path(spec.path).expanduser()  # type: ignore[arg-type]
        requested = spec.format
        name = ""
    data: bytes | None = None
    if _exists(location) and _text.is_stream(location):
        data = _text.read_bytes(location)
        fmt, target = format_of_content(location, data, requested), location
        if fmt not in ("pairs", "triples", "atomic", "csv"):
            raise DataFormatError(location, None, f"{fmt} data is a folder; a stream holds one file")
        files = {"all": location}
        hashes = {"all": hashlib.sha256(data).hexdigest()}
    else:
        fmt, target = detect_format(location, requested)
        files = _source_files(fmt, target)
        hashes = {role: cache.file_sha256(path) for role, path in files.items()}
    if not name and data is not None:
        # /dev/fd/63 is named by a number that changes between shells: call every such stream "stream".
        name = "stream" if target.name.isdigit() else target.name
    elif not name:
        name = target.name if target.is_dir() else target.stem
    if fmt in ("lightgcn", "pairs") and spec.rating_threshold is not None:
        raise ConfigError(f"data.rating_threshold needs ratings, but {fmt} files have none ({target})")
    options = _options(spec, fmt, _is_unsplit(fmt, target))
    key = cache.cache_key({"name": name, "format": fmt, "files": hashes, "options": options})
    interactions = cache.load_cached(key, name) if use_cache else None
    if interactions is None:
        source = {path.name: hashes[role] for role, path in files.items()}
        raw = _read(fmt, target, spec, data)
        interactions = build_interactions(
            name,
            raw,
            split=spec.split,
            test_ratio=spec.test_ratio,
            valid_ratio=spec.valid_ratio,
            seed=spec.split_seed,
            source=source,
            options={"format": fmt, **options, "fingerprint": key},
        )
        if use_cache:
            cache.save_cached(key, interactions)
    if extra_notes:
        report = dataclasses.replace(interactions.report, notes=interactions.report.notes + extra_notes)
        interactions = dataclasses.replace(interactions, report=report)
    return interactions


def load_dataset_name(name: str, **options: Any) -> Interactions:
    """``load_dataset(DataSpec(dataset=name, **options))``."""
    return load_dataset(DataSpec(dataset=name, **options))


def load_dataset_path(path: str | Path, **options: Any) -> Interactions:
    """``load_dataset(DataSpec(path=path, **options))``."""
    return load_dataset(DataSpec(path=str(path), **options))
