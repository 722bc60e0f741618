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
from ssmrec.defaults import (
    EXCLUDE,
    LOGQ,
    LOSSES,
    MODELS,
    NEGATIVES,
    SAMPLED_SOFTMAX,
    SOFTMAX_CHUNK,
    SOFTMAX_FAMILY,
    loss_option,
)
from ssmrec.errors import ConfigError

PROTOCOLS = ("standard", "paper")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. Defaults follow the official SSM code.

    Loss options left ``None`` (negatives, num_negatives, reduction, positive_in_denominator, margin,
    negative_weight, beta, positive_temperature) take the loss's own default from
    :mod:`ssmrec.defaults`; :meth:`option` and :meth:`negative_source` resolve them.
    """

    data: DataSpec = field(default_factory=DataSpec)
    preset: str | None = None
    model: str = "lightgcn"
    layers: int = 1
    dim: int = 64
    propagation: str = "auto"
    side: str | None = None
    alpha: tuple[float, ...] = (0.5, 0.5)
    message_dropout: float = 0.1
    loss: str = "ssm"
    temperature: float = 0.1
    similarity: str = "cosine"
    num_negatives: int | None = None
    reduction: str | None = None
    negatives: str | None = None
    beta: float | None = None
    exclude: str = "none"
    positive_in_denominator: bool | None = None
    logq: str = "none"
    learn_temperature: bool = False
    positive_temperature: float | None = None
    margin: float | None = None
    negative_weight: float | None = None
    softmax_chunk_size: int | None = SOFTMAX_CHUNK
    adaptive_warmup: int = 10
    adaptive_scale: float = 1.0
    reg: float = 1e-5
    lr: float = 1e-3
    batch_size: int = 2048
    epochs: int = 1000
    eval_every: int = 1
    patience: int = 15
    max_minutes: float | None = None
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
            (self.max_minutes is None or self.max_minutes > 0, "max_minutes must be > 0"),
            (len(self.ks) > 0 and all(k > 0 for k in self.ks), "ks must be positive integers"),
            (self.protocol in PROTOCOLS, f"protocol must be one of {', '.join(PROTOCOLS)}"),
            (self.rank_by in ("dot", "cosine"), "rank_by must be dot or cosine"),
            (self.similarity in ("dot", "cosine"), "similarity must be dot or cosine"),
            (self.propagation in ("auto", "full", "local"), "propagation must be auto, full or local"),
            (self.reduction in (None, "sum", "mean"), "reduction must be sum or mean"),
            (self.model in MODELS, f"model must be one of {', '.join(MODELS)}"),
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}"),
            (self.exclude in EXCLUDE, f"exclude must be one of {', '.join(EXCLUDE)}"),
            (self.logq in LOGQ, f"logq must be one of {', '.join(LOGQ)}"),
            (self.negatives in (None, *NEGATIVES), f"negatives must be one of {', '.join(NEGATIVES)}"),
            (self.side in (None, "both", "user", "item"), "side must be both, user or item"),
            (len(self.alpha) == 2, "alpha must be two exponents: left, right"),
            (0 <= self.message_dropout < 1, "message_dropout must be in [0, 1)"),
            (
                self.softmax_chunk_size is None or self.softmax_chunk_size > 0,
                "softmax_chunk_size must be > 0",
            ),
            (self.adaptive_warmup >= 0, "adaptive_warmup must be >= 0"),
            (self.adaptive_scale > 0, "adaptive_scale must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self._check_loss_options()
        self._check_model_options()
        metric_name, _, k = self.metric.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise ConfigError(f"metric {self.metric!r} must be NAME@K with K in ks {list(self.ks)}")
        if metric_name not in ("recall", "ndcg", "precision", "hit", "mrr", "map"):
            raise ConfigError(f"unknown metric {metric_name!r} in {self.metric!r}")

    def _check_loss_options(self) -> None:
        """Options that only some losses have: reject the others with the reason, not silently."""
        loss = self.loss

        def only(key: str, losses: tuple[str, ...], what: str) -> None:
            if getattr(self, key) is not None and loss not in losses:
                raise ConfigError(f"{key} applies to {what} ({', '.join(losses)}), not to loss {loss!r}")

        only("positive_in_denominator", SOFTMAX_FAMILY, "the softmax losses")
        only("positive_temperature", ("bsl",), "BSL")
        only("margin", ("ccl",), "CCL")
        only("negative_weight", ("bce", "mse", "ccl"), "the pointwise losses")
        if self.logq != "none" and loss not in SAMPLED_SOFTMAX:
            raise ConfigError(f"logq applies to the sampled softmax losses ({', '.join(SAMPLED_SOFTMAX)})")
        if self.learn_temperature and loss not in ("ssm", "bsl", "softmax"):
            raise ConfigError("learn_temperature applies to ssm, bsl and softmax")
        if self.positive_temperature is not None and not self.positive_temperature > 0:
            raise ConfigError("positive_temperature must be > 0")
        if self.margin is not None and not -1 <= self.margin < 1:
            raise ConfigError("margin must be a cosine in [-1, 1)")
        if self.negative_weight is not None and self.negative_weight < 0:
            raise ConfigError("negative_weight must be >= 0")
        if self.num_negatives is not None and self.num_negatives < 0:
            raise ConfigError("num_negatives must be >= 0")
        if loss == "softmax":
            for key in ("negatives", "num_negatives", "beta"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"the full softmax scores every item: {key} does not apply")
            return
        name, count, beta = self.negative_source()
        if name == "in-batch" and count:
            raise ConfigError("in-batch negatives draw nothing: leave num_negatives unset or 0")
        if name != "in-batch" and count < 1:
            raise ConfigError(f"{name} negatives need num_negatives >= 1")
        if self.beta is not None and name not in ("popularity", "shared", "mixed"):
            raise ConfigError("beta applies to popularity, shared and mixed negatives")
        if beta is not None and beta < 0:
            raise ConfigError("beta must be >= 0")

    def _check_model_options(self) -> None:
        if self.side is not None and self.model not in ("lightgcn", "history"):
            raise ConfigError(f"side applies to lightgcn and history, not to model {self.model!r}")
        if self.model == "history" and self.side not in (None, "user"):
            raise ConfigError("history is the side=user encoder")
        one_sided = self.model == "history" or self.side in ("user", "item")
        if one_sided and self.layers != 1:
            raise ConfigError(
                "one-sided propagation (history, side=user|item) has exactly one layer: set layers = 1"
            )

    def option(self, key: str) -> Any:
        """A loss option: this config's value, or the loss's default when unset."""
        value = getattr(self, key)
        return loss_option(self.loss, key) if value is None else value

    def negative_source(self) -> tuple[str, int, float | None]:
        """(sampler, M, beta) of this config: ``none`` for the full softmax, else a name of NEGATIVES.

        Unset, the sampled softmax losses use in-batch negatives, or uniform ones when num_negatives
        is given (the official SSM code's two modes); the other losses use their table default.
        ``beta=None`` means the sampler's own default.
        """
        if self.loss == "softmax":
            return "none", 0, None
        name = self.negatives
        if name is None:
            given = self.num_negatives or 0
            if self.loss in SAMPLED_SOFTMAX:
                name = "uniform" if given > 0 else "in-batch"
            else:
                name = loss_option(self.loss, "negatives")
        count = self.num_negatives
        if count is None:
            count = 0 if name == "in-batch" else loss_option(self.loss, "num_negatives")
        return name, count, self.beta

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
        out["alpha"] = list(self.alpha)
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
