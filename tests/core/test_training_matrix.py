"""Every model trains with every loss, every negative source with every option, through the one loop."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import write_clustered

from ssmrec.cli import main
from ssmrec.config import TrainConfig, build_config
from ssmrec.defaults import LOSSES, MODELS
from ssmrec.experiment import build_model_for, build_optimizer, build_training, schedule_of
from ssmrec.trainer import Trainer, seed_everything


def _tiny_train(n_users: int = 30, n_items: int = 25, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = np.zeros((n_users, n_items), dtype=np.float32)
    for user in range(n_users):
        dense[user, rng.choice(n_items, size=int(rng.integers(2, 8)), replace=False)] = 1
    return sp.csr_matrix(dense)


TRAIN = _tiny_train()


def _one_epoch(config: TrainConfig) -> tuple[float, torch.nn.Module, torch.nn.Module]:
    data = SimpleNamespace(train=TRAIN)
    rng = seed_everything(config.optim.seed)
    setup = build_training(config, data)  # type: ignore[arg-type]
    model, objective = setup.model, setup.objective
    before = [p.detach().clone() for p in model.parameters()]
    loss = Trainer(setup, data, schedule_of(config), rng).train_epoch()  # type: ignore[arg-type]
    assert loss is not None and math.isfinite(loss), config
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)]
    assert changed[0] and changed[1], "the user and item tables must be updated"
    for parameter in model.parameters():
        assert torch.isfinite(parameter).all()
    return loss, model, objective


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_with_every_loss(model: str, loss: str) -> None:
    settings = {"layers": 2} if model == "ngcf" else {}
    _one_epoch(
        build_config({"model": model, "loss": loss, "dim": 8, "batch_size": 64, "lr": 0.01, **settings})
    )


@pytest.mark.parametrize("logq", ["none", "standard", "corrected"])
@pytest.mark.parametrize("exclude", ["none", "duplicates", "train"])
@pytest.mark.parametrize("negatives", ["in-batch", "uniform", "popularity", "shared", "mixed"])
def test_every_negative_source_with_every_option(negatives: str, exclude: str, logq: str) -> None:
    count = 0 if negatives == "in-batch" else 6
    config = build_config(
        {
            "model": "mf",
            "loss": "ssm",
            "negatives": negatives,
            "num_negatives": count,
            "exclude": exclude,
            "logq": logq,
            "positive_in_denominator": logq != "corrected",
            "dim": 8,
            "batch_size": 64,
        }
    )
    _one_epoch(config)


def test_a_learnable_temperature_reaches_the_optimizer_and_moves() -> None:
    config = build_config(
        {"model": "mf", "loss": "ssm", "learn_temperature": True, "temperature": 0.5, "dim": 8,
         "batch_size": 32, "lr": 0.05}
    )  # fmt: skip
    _, _, objective = _one_epoch(config)
    assert objective.temperature.item() != pytest.approx(0.5, abs=1e-6)
    model = build_model_for(config, SimpleNamespace(train=TRAIN))  # type: ignore[arg-type]
    optimizer = build_optimizer(model, objective, config)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(objective.log_temperature) in optimized


def test_cli_flags_reach_the_run(tmp_path: Path) -> None:
    write_clustered(tmp_path / "data", 60, 5, 2)
    argv = ["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--epochs", "2",
            "--model", "lightgcn", "--alpha", "0.4,0.6", "--loss", "ssm", "--negatives", "mixed",
            "--num-negatives", "8", "--beta", "0.5", "--exclude", "train", "--logq", "corrected",
            "--positive-in-denominator", "false", "--learn-temperature", "true", "--batch-size", "64",
            "--dim", "8", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    loss = config["loss"]
    assert config["model"]["alpha"] == [0.4, 0.6] and loss["negatives"] == "mixed" and loss["beta"] == 0.5
    assert loss["positive_in_denominator"] is False and loss["learn_temperature"] is True
    assert loss["reduction"] == "sum" and loss["temperature"] == 0.1  # resolved: what actually ran
    assert loss["margin"] is None and config["model"]["message_dropout"] is None  # do not apply
    assert "SampledSoftmaxLoss" in (tmp_path / "run" / "train.log").read_text()


def test_adaptive_temperature_trains_end_to_end(tmp_path: Path) -> None:
    write_clustered(tmp_path / "data", 60, 5, 2)
    argv = ["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--epochs", "3",
            "--model", "mf", "--loss", "adap-tau", "--adaptive-warmup", "1", "--batch-size", "64",
            "--dim", "8", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("adap-tau epoch") == 3
