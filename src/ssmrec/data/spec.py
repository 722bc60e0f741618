"""What to load (``DataSpec``) and the one entry point that loads it (``load_dataset``).

``load_dataset`` resolves a registry name or a path, detects the format, and returns the cached
result when the source files and every result-changing option are unchanged; otherwise it reads,
cleans and caches. The fingerprint it records in ``Interactions.source`` (file sha256s, options,
cache key) is what a training run stores to say exactly which data it saw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmrec.data import cache, readers, registry
from ssmrec.data.build import SPLIT_METHODS, build_interactions
from ssmrec.data.interactions import Interactions
from ssmrec.data.readers import RawData
from ssmrec.errors import ConfigError, DatasetNotFoundError

FORMATS = ("auto", "lightgcn", "pairs", "atomic", "csv")
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
        if Path(target).expanduser().exists():
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


def detect_format(path: Path, requested: str = "auto") -> tuple[str, Path]:
    """Reader format and the path the reader opens (a folder for lightgcn, else a file).

    Auto rules: a folder with ``train.txt`` + ``test.txt`` is LightGCN; a ``.inter`` file (or a folder
    with exactly one) is RecBole atomic; ``NAME.train``/``NAME.test`` are pair files; ``.csv``/``.tsv``
    is CSV. An explicit ``requested`` format only decides what to look for in a folder.
    """
    if not path.exists():
        raise DatasetNotFoundError(f"{path} does not exist")
    if path.is_file():
        return _format_of_file(path, requested)
    candidates: list[tuple[str, Path]] = []
    if (path / "train.txt").is_file() and (path / "test.txt").is_file():
        candidates.append(("lightgcn", path))
    inter = sorted(path.glob("*.inter"))
    if len(inter) == 1:
        candidates.append(("atomic", inter[0]))
    trains = [p for p in sorted(path.glob("*.train")) if p.with_suffix(".test").is_file()]
    if len(trains) == 1:
        candidates.append(("pairs", trains[0]))
    tables = [p for p in sorted(path.iterdir()) if p.suffix.lower() in _TABLE_SUFFIXES and p.is_file()]
    if len(tables) == 1:
        candidates.append(("csv", tables[0]))
    if requested != "auto":
        candidates = [c for c in candidates if c[0] == requested]
    if candidates:
        return candidates[0]
    listing = ", ".join(sorted(p.name for p in path.iterdir())[:20]) or "nothing"
    what = "data files" if requested == "auto" else f"{requested} data"
    raise DatasetNotFoundError(
        f"{path}: no {what} found (expected train.txt+test.txt, one *.inter, NAME.train+NAME.test or one "
        f".csv/.tsv); it holds: {listing}"
    )


def _format_of_file(path: Path, requested: str) -> tuple[str, Path]:
    suffix = path.suffix.lower()
    if requested == "lightgcn" or (requested == "auto" and path.name in readers.LIGHTGCN_FILES.values()):
        return "lightgcn", path.parent
    if requested != "auto":
        return requested, path
    if suffix == ".inter":
        return "atomic", path
    if suffix in (".train", ".test", ".valid"):
        return "pairs", path.with_suffix(".train")
    if suffix in _TABLE_SUFFIXES:
        return "csv", path
    raise ConfigError(
        f"{path}: cannot tell the format from the name; set data.format (lightgcn, pairs, atomic or csv)"
    )


def _source_files(fmt: str, target: Path) -> dict[str, Path]:
    """The files a reader will open, by role, checked to exist (they are hashed before reading)."""
    if fmt == "lightgcn":
        files = {role: target / name for role, name in readers.LIGHTGCN_FILES.items()}
        required = ("train", "test")
    elif fmt == "pairs":
        files = {role: target.with_suffix(f".{role}") for role in ("train", "valid", "test")}
        required = ("train", "test")
    else:
        files = {"all": target}
        required = ("all",)
    missing = [str(files[role]) for role in required if not files[role].is_file()]
    if missing:
        raise DatasetNotFoundError(f"missing data file(s): {', '.join(missing)}")
    return {role: path for role, path in files.items() if path.is_file()}


def _options(spec: DataSpec, fmt: str) -> dict[str, Any]:
    """Every option that can change the result for this format (part of the cache key and fingerprint)."""
    options: dict[str, Any] = {"valid_ratio": spec.valid_ratio, "split_seed": spec.split_seed}
    if fmt in ("atomic", "csv"):
        options.update(
            user_col=spec.user_col,
            item_col=spec.item_col,
            rating_col=spec.rating_col,
            time_col=spec.time_col,
            rating_threshold=spec.rating_threshold,
            split=spec.split,
            test_ratio=spec.test_ratio,
        )
    return options


def _read(fmt: str, target: Path, spec: DataSpec) -> RawData:
    if fmt == "lightgcn":
        return readers.read_lightgcn(target)
    if fmt == "pairs":
        return readers.read_pairs(target)
    columns = dict(
        user_col=spec.user_col,
        item_col=spec.item_col,
        rating_col=spec.rating_col,
        time_col=spec.time_col,
        rating_threshold=spec.rating_threshold,
    )
    if fmt == "atomic":
        return readers.read_atomic(target, **columns)
    return readers.read_csv(target, **columns)


def load_dataset(
    spec: DataSpec, *, use_cache: bool = True, mirror: str | None = None, download: bool = True
) -> Interactions:
    """Load, clean and index the data ``spec`` describes, via the cache when possible.

    ``mirror`` overrides the download base (see ``registry.mirror_url``); ``download=False`` fails
    instead of fetching a registry dataset that is not on disk.
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
    fmt, target = detect_format(location, requested)
    if not name:
        name = target.name if target.is_dir() else target.stem
    if fmt in ("lightgcn", "pairs") and spec.rating_threshold is not None:
        raise ConfigError(f"data.rating_threshold needs ratings, but {fmt} files have none ({target})")
    files = _source_files(fmt, target)
    hashes = {role: cache.file_sha256(path) for role, path in files.items()}
    options = _options(spec, fmt)
    key = cache.cache_key({"name": name, "format": fmt, "files": hashes, "options": options})
    interactions = cache.load_cached(key, name) if use_cache else None
    if interactions is None:
        source = {path.name: hashes[role] for role, path in files.items()}
        raw = _read(fmt, target, spec)
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
