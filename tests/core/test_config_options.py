"""The objective and model options of TrainConfig: defaults per loss, and the errors users see."""

from __future__ import annotations

import pytest

from ssmrec.cli import main
from ssmrec.config import TrainConfig, resolve_config
from ssmrec.errors import ConfigError


@pytest.mark.parametrize(
    ("values", "source"),
    [
        ({}, ("in-batch", 0, None)),  # the official SSM default
        ({"num_negatives": 5}, ("uniform", 5, None)),  # SSM with sampled negatives, as before
        ({"negatives": "shared", "num_negatives": 64, "beta": 0.5}, ("shared", 64, 0.5)),
        ({"loss": "bpr"}, ("uniform", 1, None)),
        ({"loss": "bce", "negatives": "popularity"}, ("popularity", 4, None)),
        ({"loss": "ccl"}, ("uniform", 800, None)),
        ({"loss": "softmax"}, ("none", 0, None)),
        ({"loss": "adap-tau"}, ("in-batch", 0, None)),
    ],
)
def test_negative_source_defaults(values: dict, source: tuple) -> None:
    assert resolve_config(values).negative_source() == source


def test_loss_options_default_per_loss() -> None:
    assert TrainConfig().option("reduction") == "sum"
    assert TrainConfig(loss="bpr").option("reduction") == "mean"
    assert TrainConfig(loss="bsl").option("positive_in_denominator") is False
    assert TrainConfig(loss="ssm").option("positive_in_denominator") is True
    assert (TrainConfig(loss="ccl").option("margin"), TrainConfig(loss="ccl").option("negative_weight")) == (
        0.9,
        150.0,
    )
    assert TrainConfig(loss="bce").option("negative_weight") is None  # each negative one term
    assert TrainConfig(loss="ssm", reduction="mean").option("reduction") == "mean"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"loss": "hinge"}, "loss must be one of"),
        ({"model": "gcn"}, "model must be one of"),
        ({"negatives": "hard"}, "negatives must be one of"),
        ({"negatives": "in-batch", "num_negatives": 3}, "in-batch negatives draw nothing"),
        ({"negatives": "shared"}, "shared negatives need num_negatives >= 1"),
        ({"beta": 0.5}, "beta applies to popularity, shared and mixed"),
        ({"negatives": "popularity", "num_negatives": 2, "beta": -1.0}, "beta must be >= 0"),
        ({"loss": "bpr", "logq": "standard"}, "logq applies to the sampled softmax losses"),
        ({"logq": "yes"}, "logq must be one of"),
        ({"exclude": "all"}, "exclude must be one of"),
        ({"loss": "softmax", "num_negatives": 5}, "full softmax scores every item"),
        ({"loss": "bpr", "learn_temperature": True}, "learn_temperature applies"),
        ({"margin": 0.5}, "margin applies to CCL"),
        ({"positive_temperature": 0.5}, "positive_temperature applies to BSL"),
        ({"loss": "bsl", "positive_temperature": 0.0}, "positive_temperature must be > 0"),
        ({"loss": "bpr", "positive_in_denominator": False}, "applies to the softmax losses"),
        ({"loss": "ccl", "margin": 1.5}, "margin must be a cosine"),
        ({"loss": "bce", "negative_weight": -1.0}, "negative_weight must be >= 0"),
        ({"alpha": [0.5]}, "alpha must be two exponents"),
        ({"model": "mf", "side": "user"}, "side applies to lightgcn and history"),
        ({"model": "lightgcn", "side": "user", "layers": 2}, "exactly one layer"),
        ({"model": "history", "layers": 3}, "exactly one layer"),
        ({"model": "history", "side": "item"}, "history is the side=user encoder"),
        ({"message_dropout": 1.0}, "message_dropout must be in"),
        ({"positive_in_denominator": "no"}, "true or false"),
        ({"softmax_chunk_size": 0}, "softmax_chunk_size must be > 0"),
    ],
)
def test_inconsistent_options_are_rejected_with_the_reason(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(values)


def test_new_flags_parse_and_bad_values_are_argparse_errors(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "x", "--alpha", "a,b"])
    assert "two numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "x", "--learn-temperature", "maybe"])
    assert "true or false" in capsys.readouterr().err
    assert main(["train", "--data", "nowhere", "--loss", "bpr", "--logq", "standard"]) == 2
    assert "logq applies" in capsys.readouterr().err
