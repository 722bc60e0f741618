"""Typed training configuration: defaults < preset < config file < command-line flags.

A config file (TOML or YAML) holds top-level training keys plus an optional ``[data]`` table with
the keys of :class:`ssmrec.data.DataSpec`. Unknown keys are rejected with the closest valid name,
because a silently ignored typo (``temprature = 0.2``) produces a run that looks right and is not.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssmrec.data import DataSpec
from ssmrec.errors import ConfigError

PROTOCOLS = ("standard", "paper")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. Defaults follow the official SSM code."""

    data: DataSpec = field(default_factory=DataSpec)
    preset: str | None = None
    model: str = "lightgcn"
    layers: int = 1
    dim: int = 64
    propagation: str = "auto"
    loss: str = "ssm"
    temperature: float = 0.1
    similarity: str = "cosine"
    num_negatives: int | None = None
    reduction: str | None = None
    reg: float = 1e-5
    lr: float = 1e-3
    batch_size: int = 2048
    epochs: int = 1000
    eval_every: int = 1
    patience: int = 15
    metric: str = "recall@20"
    ks: tuple[int, ...] = (10, 20, 50)
    rank_by: str = "dot"
    eval_chunk_size: int | None = None
    protocol: str = "standard"
    seed: int = 2024
    threads: int | None = None
    output: str | None = None
    name: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.layers >= 0, "layers must be >= 0"),
            (self.dim > 0, "dim must be > 0"),
            (self.temperature > 0, "temperature must be > 0"),
            (self.reg >= 0, "reg must be >= 0"),
            (self.lr > 0, "lr must be > 0"),
            (self.batch_size > 0, "batch_size must be > 0"),
            (self.epochs >= 0, "epochs must be >= 0"),
            (self.eval_every > 0, "eval_every must be > 0"),
            (self.patience > 0, "patience must be > 0"),
            (len(self.ks) > 0 and all(k > 0 for k in self.ks), "ks must be positive integers"),
            (self.protocol in PROTOCOLS, f"protocol must be one of {', '.join(PROTOCOLS)}"),
            (self.rank_by in ("dot", "cosine"), "rank_by must be dot or cosine"),
            (self.similarity in ("dot", "cosine"), "similarity must be dot or cosine"),
            (self.propagation in ("auto", "full", "local"), "propagation must be auto, full or local"),
            (self.reduction in (None, "sum", "mean"), "reduction must be sum or mean"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        metric_name, _, k = self.metric.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise ConfigError(f"metric {self.metric!r} must be NAME@K with K in ks {list(self.ks)}")
        if metric_name not in ("recall", "ndcg", "precision", "hit", "mrr", "map"):
            raise ConfigError(f"unknown metric {metric_name!r} in {self.metric!r}")

    @property
    def selection_split(self) -> str:
        """The split early stopping and model selection look at."""
        return "test" if self.protocol == "paper" else "valid"

    def data_spec(self) -> DataSpec:
        """The data to load; the paper protocol trains on the full train split (no validation carve)."""
        if self.protocol == "paper":
            return dataclasses.replace(self.data, valid_ratio=0.0)
        return self.data

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ks"] = list(self.ks)
        return out


PRESETS: dict[str, dict[str, Any]] = {
    # Official SSM settings (Wu et al., TOIS 2024; github.com/wujcan/SSM): batch 2048, dim 64,
    # Adam lr 1e-3, Xavier init, early stop after 15 evaluations without gain.
    "ssm-gowalla": {
        "data": {"dataset": "gowalla"},
        "model": "lightgcn",
        "layers": 1,
        "loss": "ssm",
        "temperature": 0.12,
        "reg": 1e-5,
    },
    "ssm-yelp2018": {
        "data": {"dataset": "yelp2018"},
        "model": "lightgcn",
        "layers": 1,
        "loss": "ssm",
        "temperature": 0.14,
        "reg": 1e-5,
    },
    "ssm-amazon-book": {
        "data": {"dataset": "amazon-book"},
        "model": "lightgcn",
        "layers": 3,
        "loss": "ssm",
        "temperature": 0.1,
        "reg": 1e-1,
    },
    # LightGCN-PyTorch's BPR setting (He et al., SIGIR 2020): 3 layers, weight decay 1e-4, mean reduction.
    "bpr-gowalla": {
        "data": {"dataset": "gowalla"},
        "model": "lightgcn",
        "layers": 3,
        "loss": "bpr",
        "reg": 1e-4,
        "reduction": "mean",
    },
}


def _closest(name: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type, converting only lossless cases (int->float, list->tuple)."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type, *_rest) = typing.get_args(annotation)
        return tuple(_coerce(v, item_type, key) for v in value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def _validated(cls: type, values: dict[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """Check every key exists and every value has its field's type; ``where`` names the file."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}unknown key {prefix + key!r}{_closest(key, names)}")
        out[key] = _coerce(value, hints[key], f"{where}{prefix}{key}") if key != "data" else value
    return out


def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers override earlier ones; the ``data`` table merges key by key."""
    merged: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "data":
                if not isinstance(value, dict):
                    raise ConfigError(f"data: expected a table of data keys, got {value!r}")
                data.update(value)
            else:
                merged[key] = value
    merged["data"] = data
    return merged


def build_config(values: dict[str, Any], where: str = "") -> TrainConfig:
    """A validated :class:`TrainConfig` from a merged dict (``data`` holds :class:`DataSpec` keys)."""
    values = dict(values)
    data_values = _validated(DataSpec, values.pop("data", {}) or {}, where, "data.")
    top = _validated(TrainConfig, values, where)
    try:
        return TrainConfig(data=DataSpec(**data_values), **top)
    except TypeError as error:  # pragma: no cover - guarded by _validated
        raise ConfigError(str(error)) from error


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_bytes()
    try:
        if path.suffix == ".toml":
            content = tomllib.loads(text.decode("utf-8"))
        elif path.suffix in (".yaml", ".yml"):
            content = yaml.safe_load(text.decode("utf-8")) or {}
        else:
            raise ConfigError(f"{path}: config files must end in .toml, .yaml or .yml")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a table of keys at the top level")
    return content


def resolve_config(
    file_values: dict[str, Any] | None = None, flag_values: dict[str, Any] | None = None, where: str = ""
) -> TrainConfig:
    """Defaults < preset (named by a flag or the file) < file < flags."""
    file_values = file_values or {}
    flag_values = flag_values or {}
    preset_name = flag_values.get("preset") or file_values.get("preset")
    preset: dict[str, Any] = {}
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise ConfigError(
                f"unknown preset {preset_name!r}{_closest(preset_name, list(PRESETS))}".replace(
                    "valid keys", "presets"
                )
            )
        preset = PRESETS[preset_name]
    return build_config(merge_layers(preset, file_values, flag_values), where)
