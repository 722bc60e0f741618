"""The objective and model options of TrainConfig: defaults per loss, and the errors users see."""

from __future__ import annotations

import pytest

from ssmrec.cli import main
from ssmrec.config import LossSpec, ModelSpec, build_config, resolve_config, upgrade_legacy
from ssmrec.errors import ConfigError


@pytest.mark.parametrize(
    ("values", "source"),
    [
        ({}, ("in-batch", 0, None)),  # the official SSM default
        ({"num_negatives": 5}, ("uniform", 5, None)),  # SSM with sampled negatives, as before
        ({"negatives": "shared", "num_negatives": 64, "beta": 0.5}, ("shared", 64, 0.5)),
        ({"negatives": "popularity", "num_negatives": 8}, ("popularity", 8, 1.0)),  # beta resolved
        ({"loss": "bpr"}, ("uniform", 1, None)),
        ({"loss": "bce", "negatives": "popularity"}, ("popularity", 4, 1.0)),
        ({"loss": "ccl"}, ("uniform", 800, None)),
        ({"loss": "softmax"}, ("none", 0, None)),
        ({"loss": "adap-tau"}, ("in-batch", 0, None)),
    ],
)
def test_negative_source_defaults(values: dict, source: tuple) -> None:
    assert resolve_config(values).loss.negative_source() == source


def test_loss_options_are_resolved_once_from_the_table() -> None:
    assert LossSpec().reduction == "sum"
    assert LossSpec("bpr").reduction == "mean"
    assert LossSpec("bsl").positive_in_denominator is False
    assert LossSpec("bsl", temperature=0.2).positive_temperature == 0.2  # BSL with tau1 = tau2 is SL
    assert LossSpec("ssm").positive_in_denominator is True
    assert (LossSpec("ccl").margin, LossSpec("ccl").negative_weight) == (0.9, 150.0)
    assert LossSpec("bce").negative_weight is None  # each negative one term
    assert LossSpec("ssm", reduction="mean").reduction == "mean"
    assert LossSpec("bpr").temperature is None and LossSpec("ssm").margin is None  # do not apply
    assert LossSpec(**vars(LossSpec("ccl"))) == LossSpec("ccl")  # resolving twice changes nothing
    assert ModelSpec("mf").layers is None and ModelSpec("ngcf").layers == 3


def test_old_flat_config_json_still_loads() -> None:
    old = {"model": "mf", "layers": 1, "loss": "bpr", "temperature": 0.1, "reduction": None, "margin": None,
           "alpha": [0.5, 0.5], "lr": 0.01, "output": "x", "data": {"dataset": "ml-100k"}}  # fmt: skip
    config = build_config(upgrade_legacy(old))
    assert (config.model.name, config.model.layers, config.loss.temperature) == ("mf", None, None)
    assert (config.loss.reduction, config.optim.lr, config.run.output) == ("mean", 0.01, "x")


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
        ({"loss": "bpr", "logq": "standard"}, "logq applies to ssm, bsl, adap-tau, not to loss 'bpr'"),
        ({"loss": "bpr", "temperature": 0.2}, "temperature applies to .*not to loss 'bpr'"),
        ({"model": "mf", "layers": 2}, "layers applies to lightgcn, history, ngcf, not to model 'mf'"),
        ({"lr": float("inf")}, "lr: expected a finite number"),
        ({"alpha": [float("nan"), 0.5]}, "alpha: expected a finite number"),
        ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*63 - 1\]"),
        ({"seed": 2**70}, "seed must be an integer"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"eval_chunk_size": 0}, "eval_chunk_size must be > 0"),
        ({"logq": "yes"}, "logq must be one of"),
        ({"exclude": "all"}, "exclude must be one of"),
        ({"loss": "softmax", "num_negatives": 5}, "num_negatives applies to .*not to loss 'softmax'"),
        ({"loss": "bpr", "learn_temperature": True}, "learn_temperature applies"),
        ({"margin": 0.5}, "margin applies to ccl, not to loss 'ssm'"),
        ({"positive_temperature": 0.5}, "positive_temperature applies to bsl, not"),
        ({"loss": "bsl", "positive_temperature": 0.0}, "positive_temperature must be > 0"),
        ({"loss": "bsl", "negative_weight": 0.0}, "BSL's negative_weight .* must be > 0"),
        (
            {"loss": "bpr", "positive_in_denominator": False},
            "positive_in_denominator applies to ssm, softmax",
        ),
        ({"loss": "ccl", "margin": 1.5}, "margin must be a cosine"),
        ({"loss": "bce", "negative_weight": -1.0}, "negative_weight must be >= 0"),
        ({"alpha": [0.5]}, "alpha must be two exponents"),
        ({"model": "mf", "side": "user"}, "side applies to lightgcn, history, not to model 'mf'"),
        ({"model": "lightgcn", "side": "user", "layers": 2}, "exactly one layer"),
        ({"model": "history", "layers": 3}, "exactly one layer"),
        ({"model": "history", "side": "item"}, "history is the side=user encoder"),
        ({"model": "ngcf", "message_dropout": 1.0}, "message_dropout must be in"),
        ({"positive_in_denominator": "no"}, "true or false"),
        ({"loss": "softmax", "softmax_chunk_size": 0}, "softmax_chunk_size must be > 0"),
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
    assert "logq applies" in capsys.readouterr().err  # refused before any data is read
