"""Configuration layering, validation and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssmrec.config import PRESETS, TrainConfig, read_config_file, resolve_config
from ssmrec.errors import ConfigError


def test_defaults_follow_official_ssm_settings() -> None:
    config = TrainConfig()
    assert (config.optim.batch_size, config.model.dim, config.optim.lr, config.optim.patience) == (
        2048,
        64,
        1e-3,
        15,
    )
    assert (config.loss.name, config.loss.similarity, config.evaluation.rank_by, config.protocol) == (
        "ssm",
        "cosine",
        "dot",
        "standard",
    )
    assert config.selection_split == "valid"


def test_presets_carry_the_papers_settings() -> None:
    gowalla = resolve_config(flag_values={"preset": "ssm-gowalla"})
    assert (gowalla.data.dataset, gowalla.model.name, gowalla.model.layers) == ("gowalla", "lightgcn", 1)
    assert (gowalla.loss.temperature, gowalla.optim.reg) == (0.12, 1e-5)
    yelp = resolve_config(flag_values={"preset": "ssm-yelp2018"})
    assert (yelp.model.layers, yelp.loss.temperature, yelp.optim.reg) == (1, 0.14, 1e-5)
    book = resolve_config(flag_values={"preset": "ssm-amazon-book"})
    assert (book.model.layers, book.loss.temperature, book.optim.reg) == (3, 0.1, 1e-1)
    assert set(PRESETS) >= {"ssm-gowalla", "ssm-yelp2018", "ssm-amazon-book"}
    bsl = resolve_config(flag_values={"preset": "bsl-gowalla"})
    assert (bsl.loss.name, bsl.model.layers, bsl.optim.batch_size) == ("bsl", 1, 2048)
    # the authors' form: one τ on both sides and a free weight on the negatives' log-sum
    loss = bsl.loss
    assert (loss.temperature, loss.positive_temperature, loss.negative_weight) == (0.12, 0.12, 0.84)
    bsl_yelp = resolve_config(flag_values={"preset": "bsl-yelp2018"})
    yelp_bsl = (bsl_yelp.model.layers, bsl_yelp.optim.batch_size, bsl_yelp.loss.negative_weight)
    assert yelp_bsl == (3, 1024, 1.12)
    adap = resolve_config(flag_values={"preset": "adap-tau-gowalla"})
    adap_setting = (adap.loss.name, adap.model.layers, adap.loss.adaptive_warmup, adap.loss.adaptive_scale)
    assert adap_setting == ("adap-tau", 3, 100, 0.6)
    assert (adap.optim.reg, adap.optim.batch_size, adap.loss.negatives) == (1e-5, 2048, "in-batch")


def test_layering_file_over_preset_flags_over_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('preset = "ssm-gowalla"\ntemperature = 0.2\nepochs = 7\n[data]\nvalid_ratio = 0.05\n')
    config = resolve_config(read_config_file(path), {"epochs": 3, "data": {"split_seed": 9}})
    assert config.loss.temperature == 0.2  # file beats preset
    assert config.optim.epochs == 3  # flag beats file
    assert config.model.layers == 1 and config.data.dataset == "gowalla"  # preset fills the rest
    assert (config.data.valid_ratio, config.data.split_seed) == (0.05, 9)


def test_yaml_config(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: mf\nks: [5, 20]\nloss: bpr\ndata:\n  dataset: ml-100k\n")
    config = resolve_config(read_config_file(path))
    assert (config.model.name, config.evaluation.ks, config.loss.name, config.data.dataset) == (
        "mf",
        (5, 20),
        "bpr",
        "ml-100k",
    )


def test_unknown_key_names_the_closest_valid_one(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("temprature = 0.2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'temprature'.*did you mean 'temperature'"):
        resolve_config(read_config_file(path), where=f"{path}: ")
    with pytest.raises(ConfigError, match=r"unknown key 'data\.valid_ration'.*'valid_ratio'"):
        resolve_config({"data": {"valid_ration": 0.1}}, where="")
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config(flag_values={"preset": "ssm-gowala"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature": "hot"}, "expected a number"),
        ({"layers": 1.5}, "expected an integer"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"protocol": "leaky"}, "protocol must be one of"),
        ({"metric": "recall@30"}, "K in ks"),
        ({"progress": "yes"}, "true or false"),
    ],
)
def test_invalid_values_are_rejected(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(values)


def test_bad_config_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        read_config_file(broken)
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.toml")
    other = tmp_path / "run.ini"
    other.write_text("[x]\n")
    with pytest.raises(ConfigError, match=r"\.toml, \.yaml or \.yml"):
        read_config_file(other)


def test_paper_protocol_selects_on_test_and_does_not_carve_validation() -> None:
    config = resolve_config({"protocol": "paper", "data": {"dataset": "gowalla"}})
    assert config.selection_split == config.evaluated_split == "test"
    assert config.data.valid_ratio == 0.0  # the record says what ran, not the unused default 0.1
    with pytest.raises(ConfigError, match="the paper protocol carves no validation split"):
        resolve_config({"protocol": "paper", "data": {"dataset": "gowalla", "valid_ratio": 0.2}})
