"""Search spaces of ``ssmrec tune``: the defaults table's entries for a model and loss, a ``--space`` file.

A space is a list of :class:`Parameter` named by flat config keys (``temperature``, ``reg``,
``layers`` …), each a range (float or integer, by the key's type in :mod:`ssmrec.config`), a list of
choices or a fixed value, optionally conditional on another key (``num_negatives`` only ``when``
``negatives`` is ``mixed``). The defaults come from :data:`ssmrec.defaults.LOSS_SEARCH_SPACES` and
:data:`ssmrec.defaults.MODEL_SEARCH_SPACES` (their sources are there); a TOML file of the same shape
replaces entries or adds keys, and ``inherit = false`` at its top starts from an empty space::

    [temperature]
    low = 0.05
    high = 0.3
    log = true

    [negatives]
    choices = ["in-batch", "mixed"]

    [num_negatives]
    low = 64
    high = 512
    when = { negatives = ["mixed"] }

Everything is checked before the first trial: unknown keys (with the closest valid one), keys that do
not apply to the model or loss, bad bounds, and every bound and choice against the config's own rules
(a τ range starting at 0 is refused as the config refuses ``temperature = 0``).

Nothing here imports Optuna: :meth:`SearchSpace.sample` only calls a trial's ``suggest_*`` methods.
"""

from __future__ import annotations

import difflib
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmrec.config import FLAT_KEYS, PRESETS, SECTIONS, TrainConfig, merge_layers, resolve_config
from ssmrec.defaults import LOSS_DEFAULTS, LOSS_SEARCH_SPACES, MODEL_DEFAULTS, MODEL_SEARCH_SPACES
from ssmrec.errors import ConfigError

OPTIM_KEYS = ("lr", "reg", "batch_size")
"""The optimisation settings a space may search (epochs, patience and seeds are not hyperparameters)."""
ENTRY_KEYS = ("low", "high", "log", "choices", "value", "when")


@dataclass(frozen=True)
class Parameter:
    """One searched (or fixed) setting: ``kind`` is ``float``, ``int``, ``categorical`` or ``fixed``."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def suggest(self, trial: Any) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        return self.value

    def contains(self, value: Any) -> bool:
        """Whether the sampler could give ``value`` (a range or a list; a fixed entry samples nothing)."""
        if self.kind == "categorical":
            return value in self.choices
        if self.kind == "fixed" or isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and value != int(value):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def describe(self) -> str:
        if self.kind in ("float", "int"):
            text = f"{self.kind} [{self.low:g}, {self.high:g}]{' log' if self.log else ''}"
        elif self.kind == "categorical":
            text = "one of " + ", ".join(str(choice) for choice in self.choices)
        else:
            text = f"fixed {self.value!r}"
        if self.when:
            text += " when " + "; ".join(f"{k} in {list(v)}" for k, v in self.when.items())
        return text

    def to_dict(self) -> dict[str, Any]:
        """The entry as the space file writes it (recorded in the study, compared when it continues)."""
        out: dict[str, Any] = {}
        if self.kind in ("float", "int"):
            out = {"low": self.low, "high": self.high, "log": self.log}
        elif self.kind == "categorical":
            out = {"choices": list(self.choices)}
        else:
            out = {"value": self.value}
        if self.when:
            out["when"] = {key: list(values) for key, values in self.when.items()}
        return out


@dataclass(frozen=True)
class SearchSpace:
    """The parameters one trial samples, unconditional ones first."""

    model: str
    loss: str
    parameters: tuple[Parameter, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    """Flat settings given by flags or the config file: a space entry of the same key is dropped."""

    def sample(self, trial: Any) -> dict[str, Any]:
        """The flat settings of one trial (the suggested values and the space's fixed ones)."""
        values: dict[str, Any] = {}
        for parameter in self.in_order():
            if self.applies(parameter, values):
                values[parameter.name] = parameter.suggest(trial)
        return values

    def in_order(self) -> list[Parameter]:
        """Unconditional parameters first, so a condition is decided before what depends on it."""
        return sorted(self.parameters, key=lambda p: bool(p.when))

    def applies(self, parameter: Parameter, values: dict[str, Any]) -> bool:
        """Whether ``parameter``'s conditions hold for a trial's ``values`` so far."""
        return all(self.current(key, values) in allowed for key, allowed in parameter.when.items())

    def current(self, key: str, values: dict[str, Any]) -> Any:
        """A condition's key in this trial: sampled, else fixed by the user, else the table's default."""
        if key in values:
            return values[key]
        if key in self.fixed:
            return self.fixed[key]
        return LOSS_DEFAULTS[self.loss].get(key, MODEL_DEFAULTS[self.model].get(key))

    def baseline(self, config: TrainConfig, given: frozenset[str] = frozenset()) -> dict[str, Any]:
        """``config``'s own values of the searched keys, for a first trial that runs the setting the
        study starts from (``ssmrec tune --baseline-first``): with it the best trial is never worse on
        validation than the preset or defaults it tunes around. An optimisation key that nobody set
        (not in ``given``: the preset's, file's and flags' keys) takes the loss's row of the defaults
        table, as ``ssmrec grid`` runs that loss (BPR's L2 1e-4 from LightGCN-PyTorch, not the config's
        generic 1e-5), so a study of a loss starts from its paper's setting. A value outside its range
        or choices, or a key whose conditions ``config`` does not meet, is left to the sampler."""
        values: dict[str, Any] = {}
        row = LOSS_DEFAULTS[self.loss]
        for parameter in self.in_order():
            if not self.applies(parameter, values):
                continue
            section, name = FLAT_KEYS[parameter.name]
            value = getattr(getattr(config, section), name)
            if parameter.name in OPTIM_KEYS and parameter.name in row and parameter.name not in given:
                value = row[parameter.name]
            if parameter.contains(value):
                values[parameter.name] = value
        return values

    def to_dict(self) -> dict[str, Any]:
        return {parameter.name: parameter.to_dict() for parameter in self.parameters}

    def describe(self) -> list[str]:
        return [f"{parameter.name}: {parameter.describe()}" for parameter in self.parameters]


def tunable_keys(model: str, loss: str) -> list[str]:
    """The flat keys a space for ``model`` and ``loss`` may search."""
    keys = [*OPTIM_KEYS, "dim", *MODEL_DEFAULTS[model]]
    keys += [key for key in LOSS_DEFAULTS[loss] if FLAT_KEYS.get(key, ("", ""))[0] == "loss"]
    if "negatives" in LOSS_DEFAULTS[loss]:
        keys.append("beta")
    return [key for key in dict.fromkeys(keys) if key not in ("alpha",)]


def _field_type(key: str) -> type:
    section, name = FLAT_KEYS[key]
    hint = typing.get_type_hints(SECTIONS[section])[name]
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    return args[0]


def _check_key(key: str, model: str, loss: str, where: str) -> None:
    valid = tunable_keys(model, loss)
    if key in valid:
        return
    if key in FLAT_KEYS:
        raise ConfigError(
            f"{where}[{key}]: not a searchable setting of model {model!r} with loss {loss!r}; "
            f"searchable: {', '.join(valid)}"
        )
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {match[0]!r}?" if match else f"; searchable: {', '.join(valid)}"
    raise ConfigError(f"{where}[{key}]: unknown parameter{hint}")


def _number(value: Any, kind: type, label: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{label}: expected a finite number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"{label}: expected an integer (the setting is an integer), got {value!r}")
    return value


def parse_entry(key: str, entry: Any, model: str, loss: str, where: str) -> Parameter:
    """One space entry as a :class:`Parameter`, its shape checked (its values are checked later)."""
    label = f"{where}[{key}]"
    _check_key(key, model, loss, where)
    if not isinstance(entry, dict):
        raise ConfigError(f"{label}: expected a table (low/high/log, choices or value), got {entry!r}")
    unknown = [name for name in entry if name not in ENTRY_KEYS]
    if unknown:
        raise ConfigError(f"{label}: unknown entry key {unknown[0]!r}; entries have {', '.join(ENTRY_KEYS)}")
    forms = [form for form in (("low", "high"), ("choices",), ("value",)) if any(k in entry for k in form)]
    if len(forms) != 1:
        raise ConfigError(f"{label}: give exactly one of low + high, choices, or value")
    when = _parse_when(entry.get("when", {}), key, model, loss, label, where)
    kind = _field_type(key)
    if forms[0] == ("choices",):
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{label}.choices: expected a non-empty list, got {choices!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{label}.choices: a choice is listed twice: {choices!r}")
        return Parameter(key, "categorical", choices=tuple(choices), when=when)
    if forms[0] == ("value",):
        return Parameter(key, "fixed", value=entry["value"], when=when)
    if "low" not in entry or "high" not in entry:
        raise ConfigError(f"{label}: a range needs both low and high")
    if kind not in (int, float):
        raise ConfigError(f"{label}: {key} is not a number; give choices = [...] instead of a range")
    low, high = _number(entry["low"], kind, f"{label}.low"), _number(entry["high"], kind, f"{label}.high")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{label}.log: expected true or false, got {log!r}")
    if not low < high:
        raise ConfigError(f"{label}: low ({low!r}) must be below high ({high!r})")
    if log and low <= 0:
        raise ConfigError(f"{label}: a log-scale range needs low > 0, got low = {low!r}")
    return Parameter(key, "int" if kind is int else "float", low=low, high=high, log=log, when=when)


def _parse_when(
    when: Any, key: str, model: str, loss: str, label: str, where: str
) -> dict[str, tuple[Any, ...]]:
    if not isinstance(when, dict):
        raise ConfigError(f"{label}.when: expected a table like {{ negatives = [\"mixed\"] }}, got {when!r}")
    out = {}
    for other, allowed in when.items():
        _check_key(other, model, loss, f"{label}.when ")
        if other == key:
            raise ConfigError(f"{label}.when: a parameter cannot depend on itself")
        values = allowed if isinstance(allowed, list) else [allowed]
        out[other] = tuple(values)
    return out


def read_space_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.suffix != ".toml":
        raise ConfigError(f"{path}: a search space file is TOML (.toml)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: search space file not found") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error


def fixed_settings(file_values: dict[str, Any], flag_values: dict[str, Any]) -> dict[str, Any]:
    """The flat settings the user fixed in the config file and flags (by flat key)."""
    merged = merge_layers(file_values, flag_values)
    by_field = {target: key for key, target in FLAT_KEYS.items()}
    return {
        by_field[(section, name)]: value
        for section, values in merged.items()
        if isinstance(values, dict) and section != "data"
        for name, value in values.items()
        if (section, name) in by_field
    }


def given_settings(file_values: dict[str, Any], flag_values: dict[str, Any]) -> frozenset[str]:
    """The flat keys the preset (named by a flag or the file), the config file and the flags set."""
    name = flag_values.get("preset") or file_values.get("preset")
    preset = PRESETS.get(name, {}) if isinstance(name, str) else {}
    return frozenset(fixed_settings(preset, {})) | frozenset(fixed_settings(file_values, flag_values))


def build_space(
    model: str,
    loss: str,
    space_file: str | Path | None = None,
    file_values: dict[str, Any] | None = None,
    flag_values: dict[str, Any] | None = None,
) -> SearchSpace:
    """The space of ``model`` and ``loss``: the defaults table, then ``space_file``; keys the user fixed
    with flags or the config file are not searched. Every bound and choice is checked against the config."""
    file_values, flag_values = file_values or {}, flag_values or {}
    entries: dict[str, tuple[Any, str]] = {}
    default_where = f"the default space of {model}/{loss} "
    for key, entry in {**MODEL_SEARCH_SPACES.get(model, {}), **LOSS_SEARCH_SPACES.get(loss, {})}.items():
        entries[key] = (entry, default_where)
    if space_file is not None:
        values = read_space_file(space_file)
        where = f"{space_file}: "
        inherit = values.pop("inherit", True)
        if not isinstance(inherit, bool):
            raise ConfigError(f"{where}inherit: expected true or false, got {inherit!r}")
        if not inherit:
            entries = {}
        for key, entry in values.items():
            entries[key] = (entry, where)
    fixed = fixed_settings(file_values, flag_values)
    parameters = [
        parse_entry(key, entry, model, loss, where)
        for key, (entry, where) in entries.items()
        if key not in fixed
    ]
    space = SearchSpace(model, loss, tuple(parameters), fixed)
    names = {parameter.name for parameter in parameters}
    for parameter, (_, where) in zip(parameters, [entries[p.name] for p in parameters], strict=True):
        for other in parameter.when:
            if other not in names and other not in fixed and space.current(other, {}) is None:
                raise ConfigError(f"{where}[{parameter.name}].when: {other} is neither searched nor set")
        _check_values(space, parameter, file_values, flag_values, where)
    return space


def _check_values(
    space: SearchSpace,
    parameter: Parameter,
    file_values: dict[str, Any],
    flag_values: dict[str, Any],
    where: str,
) -> None:
    """Resolve a config at each bound and choice of ``parameter``, with its conditions met and the
    entries that then apply at their first value: the config's own checks refuse what no trial could run
    (``temperature`` low = 0, a ``logq`` choice that does not exist, mixed negatives without a count)."""
    if parameter.kind in ("float", "int"):
        candidates = [parameter.low, parameter.high]
    elif parameter.kind == "categorical":
        candidates = list(parameter.choices)
    else:
        candidates = [parameter.value]
    for value in candidates:
        values = {other: allowed[0] for other, allowed in parameter.when.items()}
        values[parameter.name] = value
        for other in space.parameters:
            if other.when and other.name not in values and space.applies(other, values):
                values[other.name] = _representative(other)
        flags = {**flag_values, "model": space.model, "loss": space.loss, **values}
        try:
            resolve_config(file_values, flags)
        except ConfigError as error:
            raise ConfigError(f"{where}[{parameter.name}]: {value!r} cannot run: {error}") from error


def _representative(parameter: Parameter) -> Any:
    if parameter.kind in ("float", "int"):
        return parameter.low
    if parameter.kind == "categorical":
        return parameter.choices[0]
    return parameter.value

