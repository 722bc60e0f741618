"""Property-based fuzzing of the config layer (hypothesis).

Whatever a config file or the flags hold (unknown keys, wrong types, NaN, huge or negative numbers,
nested junk, random bytes as TOML or YAML) the only outcomes allowed are a resolved ``TrainConfig`` or a
``ConfigError`` (an ``SsmrecError``: one message, exit 2) — never another exception. A config that
resolves must survive its own record: ``config.json`` read back gives the same config. Bounded like
the readers' fuzzing (``SSMREC_FUZZ_EXAMPLES``, ``SSMREC_FUZZ_RANDOM=1``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e .[test])")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ssmrec.config import FLAT_KEYS, SECTIONS, TrainConfig, build_config, read_config_file, resolve_config  # noqa: E402
from ssmrec.defaults import LOSS_DEFAULTS, MODEL_DEFAULTS  # noqa: E402
from ssmrec.errors import ConfigError, SsmrecError  # noqa: E402

EXAMPLES = int(os.environ.get("SSMREC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("SSMREC_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from([*LOSS_DEFAULTS, *MODEL_DEFAULTS, "paper", "standard", "cosine", "dot", "in-batch",
                     "uniform", "popularity", "mixed", "sum", "mean", "recall@20", "ndcg@10"]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
KEYS = st.sampled_from([*FLAT_KEYS, "preset", "nonsense", "temperatur"])
FLAT_LAYER = st.dictionaries(KEYS, VALUES, max_size=6)
FIELD_NAMES = sorted({field.name for cls in SECTIONS.values() for field in dataclasses.fields(cls)})
SECTION_TABLE = st.dictionaries(st.sampled_from([*FIELD_NAMES, "nonsense"]), VALUES, max_size=4)
NESTED_LAYER = st.dictionaries(st.sampled_from(list(SECTIONS)), st.one_of(VALUES, SECTION_TABLE), max_size=3)


def _resolves_or_refuses(build: Any) -> TrainConfig | None:
    try:
        return build()
    except ConfigError as error:
        assert str(error) and "Traceback" not in str(error)
        return None


def _round_trips(config: TrainConfig) -> None:
    """``config.json`` (the record) rebuilds the same config: what ran is what is recorded."""
    record = json.loads(json.dumps(config.to_dict(), allow_nan=False))
    assert build_config(record).to_dict() == config.to_dict()


@FUZZ
@given(FLAT_LAYER)
def test_any_flat_layer_resolves_or_is_one_config_error(layer: dict[str, Any]) -> None:
    config = _resolves_or_refuses(lambda: build_config(layer))
    if config is not None:
        _round_trips(config)


@FUZZ
@given(NESTED_LAYER)
def test_any_nested_layer_resolves_or_is_one_config_error(layer: dict[str, Any]) -> None:
    config = _resolves_or_refuses(lambda: build_config(layer))
    if config is not None:
        _round_trips(config)


@FUZZ
@given(FLAT_LAYER, FLAT_LAYER, st.sampled_from([None, "ssm-gowalla", "bpr-gowalla", "ssm-yelp2018"]))
def test_file_and_flags_with_a_preset_resolve_or_are_one_config_error(
    file_layer: dict[str, Any], flags: dict[str, Any], preset: str | None
) -> None:
    if preset is not None:
        flags = {**flags, "preset": preset}
    config = _resolves_or_refuses(lambda: resolve_config(file_layer, flags, "config.toml: "))
    if config is not None:
        _round_trips(config)


# Valid settings drawn per loss and model from the defaults table: these must always resolve.
@st.composite
def valid_layers(draw: st.DrawFn) -> dict[str, Any]:
    loss = draw(st.sampled_from(list(LOSS_DEFAULTS)))
    model = draw(st.sampled_from(list(MODEL_DEFAULTS)))
    layer: dict[str, Any] = {
        "loss": loss,
        "model": model,
        "dim": draw(st.integers(1, 512)),
        "lr": draw(st.floats(1e-6, 1.0)),
        "reg": draw(st.floats(0.0, 1.0)),
        "batch_size": draw(st.integers(1, 8192)),
        "seed": draw(st.integers(0, 2**63 - 1)),
        "protocol": draw(st.sampled_from(["standard", "paper"])),
    }
    if "temperature" in LOSS_DEFAULTS[loss]:
        layer["temperature"] = draw(st.floats(1e-3, 10.0))
    if "layers" in MODEL_DEFAULTS[model]:  # history is LightGCN with one one-sided layer
        layer["layers"] = 1 if model == "history" else draw(st.integers(1, 4))
    return layer


@FUZZ
@given(valid_layers())
def test_valid_settings_always_resolve_and_round_trip(layer: dict[str, Any]) -> None:
    config = build_config(layer)
    chosen = (config.loss.name, config.model.name, config.optim.seed)
    assert chosen == (layer["loss"], layer["model"], layer["seed"])
    if "temperature" in layer:
        assert config.loss.temperature == layer["temperature"]
    _round_trips(config)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([".toml", ".yaml"]))
def test_random_bytes_as_a_config_file_parse_or_are_one_error(
    tmp_path: Path, payload: bytes, suffix: str
) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(payload)
    try:
        values = read_config_file(path)
    except ConfigError as error:
        assert str(error).startswith(str(path))
        return
    try:
        resolve_config(values, {}, f"{path}: ")
    except SsmrecError as error:
        assert str(error).startswith(f"{path}: ")
