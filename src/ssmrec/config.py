"""Typed training configuration, one spec per part, resolved once: defaults < preset < file < flags.

A run is described by a :class:`TrainConfig` made of one small frozen spec per component, in the
manner of LensKit's component configs:

* :class:`ssmrec.data.DataSpec` (``data``): what to load and how to split it;
* :class:`ModelSpec` (``model``): the encoder;
* :class:`LossSpec` (``loss``): the objective and its negatives;
* :class:`OptimSpec` (``optim``): Adam, the regulariser, batches, epochs, early stopping, the seed;
* :class:`EvalSpec` (``evaluation``): metrics, cut-offs, ranking rule, protocol;
* :class:`RunSpec` (``run``): where and how the run is written (nothing here changes a number).

Settings are resolved **once**, when the config is built: every option a loss or model leaves unset
takes its default from :mod:`ssmrec.defaults`, an option that does not apply to the chosen loss or
model is refused with the reason, and ``config.json`` records the values that actually ran. Adding
an option means one field here, one entry in the defaults table, and its use in one class.

Config files (TOML or YAML) and old ``config.json`` files are *flat* (``temperature = 0.15``) or use
one table per part (``[loss] temperature = 0.15``); both are read. Unknown keys are rejected with the
closest valid name, because a silently ignored typo (``temprature = 0.2``) gives a run that looks right
and is not.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssmrec.data import DataSpec
from ssmrec.defaults import (
    BETA_DEFAULTS,
    EXCLUDE,
    LOGQ,
    LOSS_DEFAULTS,
    LOSSES,
    MODEL_DEFAULTS,
    MODELS,
    NEGATIVES,
    SAMPLED_SOFTMAX,
)
from ssmrec.device import DeviceError, parse_device
from ssmrec.errors import ConfigError

PROTOCOLS = ("standard", "paper", "refit")
NO_VALIDATION_PROTOCOLS = ("paper", "refit")
"""Protocols that train on all of train: paper selects on test, refit trains a chosen setting for a
chosen number of epochs and evaluates test once."""
PRECISIONS = ("fp32", "bf16")
METRICS = ("recall", "ndcg", "precision", "hit", "mrr", "map")
MAX_SEED = 2**63 - 1
"""Seeds are non-negative and fit int64 (torch's generators take at most 64 bits)."""

BETA_SAMPLERS = tuple(BETA_DEFAULTS)
"""Negative sources drawn from ``popularity ** beta``: the only ones ``beta`` applies to."""
BETA_NAMES = f"{', '.join(BETA_SAMPLERS[:-1])} and {BETA_SAMPLERS[-1]}"


def _require(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _one_of(value: Any, choices: tuple[Any, ...]) -> bool:
    return value in choices


@dataclass(frozen=True)
class ModelSpec:
    """The encoder. ``None`` means "the model's default" (:data:`ssmrec.defaults.MODEL_DEFAULTS`), and
    an option the model does not have (``layers`` for MF) must stay unset."""

    name: str = "lightgcn"
    layers: int | None = None
    dim: int = 64
    propagation: str | None = None
    side: str | None = None
    alpha: tuple[float, ...] | None = None
    message_dropout: float | None = None

    def __post_init__(self) -> None:
        _require([(self.name in MODELS, f"model must be one of {', '.join(MODELS)}")])
        row = MODEL_DEFAULTS[self.name]
        for key in ("layers", "propagation", "side", "alpha", "message_dropout"):
            value = getattr(self, key)
            if value is not None and key not in row:
                users = ", ".join(name for name in MODELS if key in MODEL_DEFAULTS[name])
                raise ConfigError(f"{key} applies to {users}, not to model {self.name!r}")
            if value is None and row.get(key) is not None:
                object.__setattr__(self, key, tuple(row[key]) if key == "alpha" else row[key])
        _require(
            [
                (self.layers is None or self.layers >= 0, "layers must be >= 0"),
                (self.dim > 0, "dim must be > 0"),
                (
                    self.propagation in (None, "auto", "full", "local"),
                    "propagation must be auto, full or local",
                ),
                (self.side in (None, "both", "user", "item"), "side must be both, user or item"),
                (self.alpha is None or len(self.alpha) == 2, "alpha must be two exponents: left, right"),
                (
                    self.message_dropout is None or 0 <= self.message_dropout < 1,
                    "message_dropout must be in [0, 1)",
                ),
            ]
        )
        if self.name == "history" and self.side not in (None, "user"):
            raise ConfigError("history is the side=user encoder")
        one_sided = self.name == "history" or self.side in ("user", "item")
        if one_sided and self.layers != 1:
            raise ConfigError(
                "one-sided propagation (history, side=user|item) has exactly one layer: set layers = 1"
            )

    def describe(self) -> str:
        return self.name if self.layers is None else f"{self.name} ({self.layers} layers)"


@dataclass(frozen=True)
class LossSpec:
    """The objective. Every option but ``name`` may be left ``None`` and then takes the loss's default
    from :data:`ssmrec.defaults.LOSS_DEFAULTS`; the loss's row there also says which options it has,
    and setting one it does not have is an error (``margin`` with SSM, ``temperature`` with BPR).

    ``negatives``/``num_negatives``/``beta`` choose the negative source: unset, the sampled softmax
    losses use in-batch negatives, or uniform ones when ``num_negatives`` is given (the official SSM
    code's two modes); ``beta`` applies to the popularity-based sources only.
    """

    name: str = "ssm"
    temperature: float | None = None
    similarity: str | None = None
    negatives: str | None = None
    num_negatives: int | None = None
    beta: float | None = None
    reduction: str | None = None
    exclude: str | None = None
    positive_in_denominator: bool | None = None
    logq: str | None = None
    learn_temperature: bool | None = None
    positive_temperature: float | None = None
    margin: float | None = None
    negative_weight: float | None = None
    softmax_chunk_size: int | None = None
    adaptive_warmup: int | None = None
    adaptive_scale: float | None = None

    def __post_init__(self) -> None:
        _require([(self.name in LOSSES, f"loss must be one of {', '.join(LOSSES)}")])
        row = LOSS_DEFAULTS[self.name]
        for key in OPTIONAL_LOSS_KEYS:
            if getattr(self, key) is not None and key not in row and key != "beta":
                raise ConfigError(_not_applicable(key, self.name))
        if self.name != "softmax":
            self._resolve_negatives(row)
        for key in OPTIONAL_LOSS_KEYS:
            if getattr(self, key) is None and key in row and key not in ("negatives", "num_negatives"):
                object.__setattr__(self, key, row[key])
        if self.name == "bsl" and self.positive_temperature is None:
            object.__setattr__(self, "positive_temperature", self.temperature)  # BSL with τ1 = τ2 is SL
        self._check_values()

    def _resolve_negatives(self, row: dict[str, Any]) -> None:
        name, count = self.negatives, self.num_negatives
        if name is None:
            name = (
                ("uniform" if (count or 0) > 0 else "in-batch")
                if self.name in SAMPLED_SOFTMAX
                else row["negatives"]
            )
        _require([(name in NEGATIVES, f"negatives must be one of {', '.join(NEGATIVES)}")])
        if count is None:
            count = 0 if name == "in-batch" else row["num_negatives"]
        _require(
            [
                (count >= 0, "num_negatives must be >= 0"),
                (
                    not (name == "in-batch" and count),
                    "in-batch negatives draw nothing: leave num_negatives unset or 0",
                ),
                (name == "in-batch" or count >= 1, f"{name} negatives need num_negatives >= 1"),
                (self.beta is None or name in BETA_SAMPLERS, f"beta applies to {BETA_NAMES} negatives"),
                (self.beta is None or self.beta >= 0, "beta must be >= 0"),
            ]
        )
        object.__setattr__(self, "negatives", name)
        object.__setattr__(self, "num_negatives", count)
        if self.beta is None and name in BETA_SAMPLERS:
            object.__setattr__(self, "beta", BETA_DEFAULTS[name])

    def _check_values(self) -> None:
        _require(
            [
                (self.temperature is None or self.temperature > 0, "temperature must be > 0"),
                (self.similarity in (None, "dot", "cosine"), "similarity must be dot or cosine"),
                (self.reduction in (None, "sum", "mean"), "reduction must be sum or mean"),
                (
                    self.exclude is None or self.exclude in EXCLUDE,
                    f"exclude must be one of {', '.join(EXCLUDE)}",
                ),
                (self.logq is None or self.logq in LOGQ, f"logq must be one of {', '.join(LOGQ)}"),
                (
                    self.positive_temperature is None or self.positive_temperature > 0,
                    "positive_temperature must be > 0",
                ),
                (self.margin is None or -1 <= self.margin < 1, "margin must be a cosine in [-1, 1)"),
                (self.negative_weight is None or self.negative_weight >= 0, "negative_weight must be >= 0"),
                (
                    self.name != "bsl" or self.negative_weight is None or self.negative_weight > 0,
                    "BSL's negative_weight (the weight of the negatives' log-sum) must be > 0",
                ),
                (
                    self.softmax_chunk_size is None or self.softmax_chunk_size > 0,
                    "softmax_chunk_size must be > 0",
                ),
                (self.adaptive_warmup is None or self.adaptive_warmup >= 0, "adaptive_warmup must be >= 0"),
                (self.adaptive_scale is None or self.adaptive_scale > 0, "adaptive_scale must be > 0"),
            ]
        )

    def negative_source(self) -> tuple[str, int, float | None]:
        """(sampler, M, beta): ``none`` for the full softmax, else a name of NEGATIVES."""
        if self.name == "softmax":
            return "none", 0, None
        return str(self.negatives), int(self.num_negatives or 0), self.beta

    def objective_options(self) -> dict[str, Any]:
        """The keyword arguments of the loss class: the options this loss has, less the sampler's."""
        return {
            key: getattr(self, key)
            for key in OPTIONAL_LOSS_KEYS
            if key in LOSS_DEFAULTS[self.name] and key not in ("negatives", "beta")
        }


OPTIONAL_LOSS_KEYS = tuple(f.name for f in dataclasses.fields(LossSpec) if f.name != "name")


def _not_applicable(key: str, loss: str) -> str:
    users = [name for name in LOSSES if key in LOSS_DEFAULTS[name]]
    return f"{key} applies to {', '.join(users) or 'no loss'}, not to loss {loss!r}"


@dataclass(frozen=True)
class OptimSpec:
    """How the model is optimised: Adam, the L2 regulariser, batches, epochs and early stopping."""

    lr: float = 1e-3
    reg: float = 1e-5
    batch_size: int = 2048
    epochs: int = 1000
    eval_every: int = 1
    patience: int = 15
    max_minutes: float | None = None
    seed: int = 2024
    precision: str = "fp32"
    """Training arithmetic: ``fp32``, or ``bf16`` autocast of the forward (weights and Adam stay fp32)."""

    def __post_init__(self) -> None:
        _require(
            [
                (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
                (self.lr > 0, "lr must be > 0"),
                (self.reg >= 0, "reg must be >= 0"),
                (self.batch_size > 0, "batch_size must be > 0"),
                (self.epochs >= 0, "epochs must be >= 0"),
                (self.eval_every > 0, "eval_every must be > 0"),
                (self.patience > 0, "patience must be > 0"),
                (self.max_minutes is None or self.max_minutes > 0, "max_minutes must be > 0"),
                (0 <= self.seed <= MAX_SEED, f"seed must be an integer in [0, 2**63 - 1], got {self.seed}"),
            ]
        )


@dataclass(frozen=True)
class EvalSpec:
    """How runs are evaluated and selected: full ranking, metrics at ``ks``, ``metric`` for selection.

    ``protocol="paper"`` selects the best epoch on the test split, as the SSM paper and its anchors do;
    every output of such a run says so, because test-selected numbers are optimistic. ``"refit"`` trains
    on train + validation for a number of epochs chosen beforehand on validation (``ssmrec tune --refit``)
    and evaluates the test split once, at the end: nothing is selected on test.
    """

    metric: str = "recall@20"
    ks: tuple[int, ...] = (10, 20, 50)
    rank_by: str = "dot"
    eval_chunk_size: int | None = None
    protocol: str = "standard"

    def __post_init__(self) -> None:
        _require(
            [
                (len(self.ks) > 0 and all(k > 0 for k in self.ks), "ks must be positive integers"),
                (self.protocol in PROTOCOLS, f"protocol must be one of {', '.join(PROTOCOLS)}"),
                (self.rank_by in ("dot", "cosine"), "rank_by must be dot or cosine"),
                (self.eval_chunk_size is None or self.eval_chunk_size > 0, "eval_chunk_size must be > 0"),
            ]
        )
        metric_name, _, k = self.metric.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise ConfigError(f"metric {self.metric!r} must be NAME@K with K in ks {list(self.ks)}")
        if metric_name not in METRICS:
            raise ConfigError(f"unknown metric {metric_name!r} in {self.metric!r}")

    @property
    def evaluated_split(self) -> str:
        """The split evaluated while training: early stopping and the best epoch look at it (under
        ``refit`` it is evaluated once, after the last epoch, and nothing is chosen on it)."""
        return "valid" if self.protocol == "standard" else "test"

    @property
    def selection_split(self) -> str:
        """The split the setting and the number of epochs were chosen on: the test split only under
        the paper protocol (a refit's epochs were chosen on the validation split by its tuning trial),
        which is why a refit records it apart from :attr:`evaluated_split`."""
        return "test" if self.protocol == "paper" else "valid"


@dataclass(frozen=True)
class RunSpec:
    """Where the run is written, where it computes and how it reports; nothing here changes a trained
    number beyond float rounding (``threads`` and ``device`` can change the summation order; the device
    used is recorded in ``environment.json``). ``device`` is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps`` (:mod:`ssmrec.device`); ``deterministic`` turns on torch's deterministic algorithms."""

    output: str | None = None
    name: str | None = None
    threads: int | None = None
    progress: bool = True
    checkpoint_every: int = 1
    keep_checkpoint: bool = False
    device: str = "auto"
    deterministic: bool = False
    dist_timeout: float = 300.0
    """Seconds a collective of a several-process run may wait before the run fails (a lost rank)."""

    def __post_init__(self) -> None:
        try:
            parse_device(self.device)
        except DeviceError as error:
            raise ConfigError(str(error)) from error
        _require(
            [
                (self.threads is None or self.threads >= 1, "threads must be >= 1"),
                (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
                (self.dist_timeout > 0, "dist_timeout must be > 0 seconds"),
            ]
        )


SECTIONS: dict[str, type] = {
    "data": DataSpec,
    "model": ModelSpec,
    "loss": LossSpec,
    "optim": OptimSpec,
    "evaluation": EvalSpec,
    "run": RunSpec,
}
"""The parts of a config, by the table name config files and ``config.json`` use."""

ALIASES: dict[str, tuple[str, str]] = {
    "model": ("model", "name"),
    "loss": ("loss", "name"),
    "name": ("run", "name"),
}
"""Flat keys whose name differs from their field (``model = "mf"`` is ``[model] name = "mf"``)."""

FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{
        f.name: (section, f.name)
        for section, spec in SECTIONS.items()
        if section != "data"
        for f in dataclasses.fields(spec)
        if f.name != "name"
    },
    **ALIASES,
}
"""Every flat key of a config file (and of old ``config.json`` files) -> (section, field)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run, one resolved spec per part (module docstring)."""

    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    run: RunSpec = field(default_factory=RunSpec)
    preset: str | None = None

    def __post_init__(self) -> None:
        # The paper and refit protocols carve no validation split (paper selects on test, refit trains
        # on all of train): record what is used, not the unused default ratio. An explicit
        # --valid-ratio with them is refused in resolve_config.
        if self.protocol in NO_VALIDATION_PROTOCOLS and self.data.valid_ratio != 0.0:
            object.__setattr__(self, "data", dataclasses.replace(self.data, valid_ratio=0.0))
        if self.protocol == "refit" and self.optim.eval_every < self.optim.epochs:
            raise ConfigError(
                "protocol refit evaluates the test split once, after the last epoch: set eval_every >= "
                f"epochs (got eval_every={self.optim.eval_every}, epochs={self.optim.epochs})"
            )

    @property
    def selection_split(self) -> str:
        return self.evaluation.selection_split

    @property
    def evaluated_split(self) -> str:
        return self.evaluation.evaluated_split

    @property
    def protocol(self) -> str:
        return self.evaluation.protocol

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-ready tables (what ``config.json`` holds)."""
        out: dict[str, Any] = {"preset": self.preset}
        for section in SECTIONS:
            values = dataclasses.asdict(getattr(self, section))
            out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out

    def replace(self, **changes: dict[str, Any]) -> TrainConfig:
        """A copy with some fields of some parts changed: ``config.replace(optim={"epochs": 3})``."""
        parts = {
            section: dataclasses.replace(getattr(self, section), **values)
            for section, values in changes.items()
        }
        return dataclasses.replace(self, **parts)


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
    # The BSL authors' best LightGCN logs (github.com/junkangwu/BSL, BEST/gowalla_…_t1_0.12_t2_0.84_…
    # _HOPS_1_2048 and BEST/yelp2018_…_t1_0.15_t2_1.12_…_HOPS_3_1024): one τ (their t1) and the
    # negatives' log-sum weight (their t2), L2 1e-5, Adam lr 1e-3, in-batch negatives.
    "bsl-gowalla": {
        "data": {"dataset": "gowalla"},
        "model": "lightgcn",
        "layers": 1,
        "loss": "bsl",
        "temperature": 0.12,
        "negative_weight": 0.84,
        "reg": 1e-5,
    },
    "bsl-yelp2018": {
        "data": {"dataset": "yelp2018"},
        "model": "lightgcn",
        "layers": 3,
        "loss": "bsl",
        "temperature": 0.15,
        "negative_weight": 1.12,
        "reg": 1e-5,
        "batch_size": 1024,
    },
    # The Adap-τ authors' Gowalla LightGCN log (github.com/junkangwu/Adap_tau,
    # outputs/gowalla_LGN_mode_weight_mean_no_sample_…_lr_1e-3_l2_1e-5_t1_0.8_t2_0.6_nodrop.log):
    # 3 hops, mean pooling, in-batch negatives, tau_mode weight_mean, Lambert-W scale temperature_2 = 0.6,
    # cnt_lr = 100 warm-up epochs (their best epoch, 59, falls inside it), L2 1e-5, Adam lr 1e-3, batch 2048.
    "adap-tau-gowalla": {
        "data": {"dataset": "gowalla"},
        "model": "lightgcn",
        "layers": 3,
        "loss": "adap-tau",
        "adaptive_warmup": 100,
        "adaptive_scale": 0.6,
        "reg": 1e-5,
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

PRESET_DATA_KEYS = ("dataset", "path")
"""A preset names its dataset; one's own ``--data`` replaces it (a preset applies to one's own data)."""


def _closest(name: object, valid: list[str]) -> str:
    """A suggestion for a mistyped key (a YAML key can be any value: ``? x``, ``1: 2``)."""
    match = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type, converting only lossless cases (int->float, list->tuple).

    Numbers must be finite: no setting of ssmrec is meaningful at ±inf or NaN, and accepting one lets a
    run train on garbage (``--lr inf``) or write NaN metrics.
    """
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
            raise ConfigError(f"{key}: expected a list, got {_short(value)}")
        (item_type, *_rest) = typing.get_args(annotation)
        return tuple(_coerce(v, item_type, key) for v in value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_short(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_short(value)}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_short(value)}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_short(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` capped, so a pasted megabyte is not echoed back whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _validated(cls: type, values: dict[str, Any], where: str, prefix: str) -> dict[str, Any]:
    """Check every key exists and every value has its field's type; ``where`` names the file."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}unknown key {prefix + key!r}{_closest(key, names)}")
        out[key] = _coerce(value, hints[key], f"{where}{prefix}{key}")
    return out


def nest(values: dict[str, Any], where: str = "") -> dict[str, dict[str, Any]]:
    """A flat, nested or mixed config mapping as ``{section: {field: value}}`` (keys checked)."""
    nested: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in values.items():
        if key == "preset":
            nested.setdefault("_", {})["preset"] = value
        elif key in SECTIONS and isinstance(value, dict):
            nested[key].update(value)
        elif key == "data":
            raise ConfigError(f"{where}data: expected a table of data keys, got {_short(value)}")
        elif key in FLAT_KEYS:
            section, name = FLAT_KEYS[key]
            nested[section][name] = value
        else:
            raise ConfigError(f"{where}unknown key {key!r}{_closest(key, [*FLAT_KEYS, *SECTIONS, 'preset'])}")
    return nested


def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers override earlier ones, key by key within each part; returns a nested mapping.

    A layer that names its data (``dataset`` or ``path``) replaces the other's: a preset's
    ``dataset = "gowalla"`` gives way to one's own ``--data DIR``.
    """
    merged: dict[str, Any] = {section: {} for section in SECTIONS}
    for layer in layers:
        nested = nest(layer)
        if "_" in nested:
            merged["preset"] = nested.pop("_")["preset"]
        data = nested["data"]
        if any(data.get(key) is not None for key in PRESET_DATA_KEYS):
            for key in PRESET_DATA_KEYS:
                merged["data"].pop(key, None)
        for section, values in nested.items():
            merged[section].update(values)
    return merged


def applicable_only(layer: dict[str, Any], model: str, loss: str) -> dict[str, Any]:
    """The flat keys of a shared layer (a preset, a grid file's top level) that apply to ``model`` and
    ``loss``: ``--preset ssm-gowalla --model mf`` means the preset's settings that MF has (not its
    ``layers``). Settings given for the run itself are not filtered: there an option that does not
    apply is an error."""
    out = {}
    for key, value in layer.items():
        section, name = FLAT_KEYS.get(key, (None, key))
        if section == "loss" and name not in ("name", "beta") and name not in LOSS_DEFAULTS.get(loss, {}):
            continue
        if section == "model" and name not in ("name", "dim") and name not in MODEL_DEFAULTS.get(model, {}):
            continue
        out[key] = value
    return out


def upgrade_legacy(values: dict[str, Any]) -> dict[str, Any]:
    """An old flat ``config.json`` (every field, unset ones ``null``) as a loadable layer.

    Those files recorded every field whether it applied or not (``layers = 1`` for MF, the unused
    ``temperature`` of BPR); their values are the defaults of that version, so the ones that do not
    apply to the run's loss and model are dropped instead of refused.
    """
    if isinstance(values.get("model"), dict) or isinstance(values.get("loss"), dict):
        return values
    given = {key: value for key, value in values.items() if value is not None}
    out = applicable_only(given, str(given.get("model", "lightgcn")), str(given.get("loss", "ssm")))
    if "beta" in out and out.get("negatives") not in BETA_SAMPLERS:
        out.pop("beta")
    return out


def build_config(values: dict[str, Any], where: str = "") -> TrainConfig:
    """A validated, resolved :class:`TrainConfig` from a flat or nested mapping."""
    try:
        nested = merge_layers(values)
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from error
    parts: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        prefix = "" if section != "data" else "data."
        checked = _validated(cls, nested.get(section, {}), where, prefix)
        try:
            parts[section] = cls(**checked)
        except ConfigError as error:
            raise ConfigError(f"{where}{error}") from error
    preset = nested.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ConfigError(f"{where}preset: expected a string, got {_short(preset)}")
    return TrainConfig(**parts, preset=preset)


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
        if not isinstance(preset_name, str):
            raise ConfigError(f"{where}preset: expected a preset name, got {_short(preset_name)}")
        if preset_name not in PRESETS:
            raise ConfigError(
                f"unknown preset {preset_name!r}{_closest(preset_name, list(PRESETS))}".replace(
                    "valid keys", "presets"
                )
            )
        preset = PRESETS[preset_name]
    try:
        file_layer = merge_layers(file_values) if file_values else {}
    except ConfigError as error:  # the file's own keys: name the file
        raise ConfigError(f"{where}{error}") from error
    chosen = merge_layers(preset, file_layer, flag_values)
    model, loss = chosen["model"].get("name", "lightgcn"), chosen["loss"].get("name", "ssm")
    if isinstance(model, str) and isinstance(loss, str):  # else build_config names the bad value
        preset = applicable_only(preset, model, loss)
    _refuse_unused_valid_ratio(chosen, file_layer, flag_values, where)
    try:
        return build_config(merge_layers(preset, file_layer, flag_values), where)
    except ConfigError as error:
        text = str(error)
        raise ConfigError(text if text.startswith(where) else f"{where}{text}") from error


def _refuse_unused_valid_ratio(
    chosen: dict[str, Any], file_layer: dict[str, Any], flag_values: dict[str, Any], where: str
) -> None:
    """``--valid-ratio`` with ``--protocol paper`` would be silently unused: that protocol selects on the
    test split and trains on all of train, so a ratio the user gave is an error, not a no-op."""
    protocol = chosen["evaluation"].get("protocol")
    if protocol not in NO_VALIDATION_PROTOCOLS:
        return
    given = [layer["data"].get("valid_ratio") for layer in (file_layer, merge_layers(flag_values)) if layer]
    if any(ratio not in (None, 0, 0.0) for ratio in given):
        raise ConfigError(
            f"{where}valid_ratio: the {protocol} protocol carves no validation split (it trains on all of "
            "train); drop --valid-ratio or use --protocol standard"
        )
