"""``ssmrec grid``: per-loss defaults, the layering of settings, tables, and resuming."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
from conftest import write_clustered

import ssmrec.experiment
from ssmrec.cli import main
from ssmrec.errors import ConfigError
from ssmrec.grid import GridSpec, cell_config, validate_grid_file


def test_cells_take_each_papers_defaults_and_the_file_overrides(tmp_path: Path) -> None:
    spec = GridSpec(
        ("mf", "lightgcn"), ("ssm",), tmp_path, flags={"data": {"dataset": "gowalla"}, "epochs": 5}
    )
    ssm = cell_config(spec, "lightgcn", "ssm")
    assert (ssm.loss.temperature, ssm.optim.reg, ssm.optim.batch_size, ssm.loss.negative_source()) == (
        0.12,
        1e-5,
        2048,
        ("in-batch", 0, None),
    )
    assert cell_config(spec, "mf", "softmax").loss.temperature == 0.12  # the full softmax takes SSM's
    ccl = cell_config(spec, "mf", "ccl")
    assert (ccl.loss.margin, ccl.loss.negative_weight, ccl.optim.batch_size, ccl.optim.lr) == (
        0.9,
        150.0,
        256,
        1e-4,
    )
    assert ccl.loss.negative_source() == ("uniform", 800, None) and ccl.optim.epochs == 5
    bpr = cell_config(spec, "lightgcn", "bpr")
    assert (bpr.optim.reg, bpr.loss.reduction, bpr.loss.num_negatives, bpr.model.layers) == (
        1e-4,
        "mean",
        1,
        1,
    )
    assert cell_config(spec, "ngcf", "bpr").model.layers == 3
    shared = GridSpec(
        ("mf",), ("bpr", "ssm"), tmp_path, flags={"data": {"path": "x"}}, file={"temperature": 0.3}
    )
    assert cell_config(shared, "mf", "ssm").loss.temperature == 0.3  # a shared key applies where it can
    assert cell_config(shared, "mf", "bpr").loss.temperature is None

    file = {
        "lr": 0.5,
        "losses": {"bpr": {"lr": 0.01}},
        "models": {"mf": {"dim": 16}},
        "cells": {"mf-bpr": {"reg": 0.0}},
    }
    spec = GridSpec(("mf",), ("bpr", "ccl"), tmp_path, flags={"data": {"path": "x"}}, file=file)
    mf_bpr = cell_config(spec, "mf", "bpr")
    assert (mf_bpr.optim.lr, mf_bpr.model.dim, mf_bpr.optim.reg) == (
        0.01,
        16,
        0.0,
    )  # cell > loss > model > file
    assert cell_config(spec, "mf", "ccl").optim.lr == 0.5  # the file's top level beats the loss defaults
    with pytest.raises(ConfigError, match="unknown key 'temprature'"):
        cell_config(GridSpec(("mf",), ("ssm",), tmp_path, file={"temprature": 1}), "mf", "ssm")
    with pytest.raises(ConfigError, match=r"models\.gcn"):
        validate_grid_file({"models": {"gcn": {}}})
    with pytest.raises(ConfigError, match="cells are named"):
        validate_grid_file({"cells": {"mf+ssm": {}}})


def _grid(data: Path, output: Path, config: Path, *extra: str) -> int:
    return main(["grid", "--data", str(data), "--models", "mf,lightgcn", "--losses", "bpr,ssm",
                 "--epochs", "1", "--output", str(output), "--config", str(config), "--no-progress",
                 *extra])  # fmt: skip


def test_grid_runs_tabulates_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    write_clustered(tmp_path / "data", 50, 4, 2)
    config = tmp_path / "grid.toml"
    config.write_text("dim = 8\n[losses.bpr]\nlr = 0.01\n[data]\nvalid_ratio = 0.2\n")
    output = tmp_path / "grid"
    assert _grid(tmp_path / "data", output, config) == 0

    rows = list(csv.DictReader((output / "grid.csv").open()))
    assert [(r["model"], r["loss"], r["status"]) for r in rows] == [
        ("mf", "bpr", "done"), ("mf", "ssm", "done"), ("lightgcn", "bpr", "done"), ("lightgcn", "ssm", "done")
    ]  # fmt: skip
    for row in rows:
        for key in ("valid_recall@20", "valid_ndcg@20", "test_recall@20", "test_ndcg@20"):
            assert 0.0 <= float(row[key]) <= 1.0
        assert (
            row["epochs_run"] == "1" and row["stopped_by"] == "max epochs" and float(row["wall_seconds"]) > 0
        )
    markdown = (output / "grid.md").read_text()
    assert "| mf | bpr |" in markdown and "| lightgcn | ssm |" in markdown and "valid R@20" in markdown
    recorded = json.loads((output / "mf-bpr" / "config.json").read_text())
    assert (recorded["optim"]["lr"], recorded["model"]["dim"], recorded["optim"]["reg"]) == (0.01, 8, 1e-4)
    assert not list(output.glob("**/.*.tmp"))  # tables are written atomically

    calls: list[str] = []
    real_train = ssmrec.experiment.train

    def counting(config, data=None):
        calls.append(config.run.name)
        return real_train(config, data)

    monkeypatch.setattr(ssmrec.experiment, "train", counting)
    assert _grid(tmp_path / "data", output, config) == 0
    assert calls == []  # every cell was finished: nothing retrains
    assert {r["status"] for r in csv.DictReader((output / "grid.csv").open())} == {"finished"}

    (output / "lightgcn-bpr").rename(tmp_path / "aside")  # a cell that never started
    (tmp_path / "aside" / "config.json").unlink()
    (tmp_path / "aside" / "final_metrics.json").unlink()
    (tmp_path / "aside").rename(output / "lightgcn-bpr")
    assert _grid(tmp_path / "data", output, config) == 0
    assert calls == ["lightgcn-bpr"]  # too incomplete to resume: moved aside and trained again
    moved = list((output / "interrupted").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("lightgcn-bpr-")
    assert (output / "lightgcn-bpr" / "final_metrics.json").is_file()

    capsys.readouterr()
    assert _grid(tmp_path / "data", output, config, "--patience", "3") == 2  # settings changed: refuse
    assert "finished with other settings (optim.patience differ" in capsys.readouterr().err


def test_grid_keeps_going_after_a_failing_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    write_clustered(tmp_path / "data", 50, 4, 2)
    config = tmp_path / "grid.toml"
    config.write_text("dim = 8\n[data]\nvalid_ratio = 0.25\n")

    def failing(config, data=None):
        if config.loss.name == "bpr":
            raise RuntimeError("out of memory")
        return real_train(config, data)

    real_train = ssmrec.experiment.train
    monkeypatch.setattr(ssmrec.experiment, "train", failing)
    argv = ["grid", "--data", str(tmp_path / "data"), "--models", "mf", "--losses", "bpr,ssm",
            "--epochs", "1", "--output", str(tmp_path / "g"), "--config", str(config),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    rows = {r["loss"]: r["status"] for r in csv.DictReader((tmp_path / "g" / "grid.csv").open())}
    assert rows == {"bpr": "failed: RuntimeError: out of memory", "ssm": "done"}
    assert "failed cells" in capsys.readouterr().err


def test_grid_cli_errors(tmp_path: Path, capsys) -> None:
    assert main(["grid", "--models", "mf"]) == 2
    assert "no data" in capsys.readouterr().err
    assert main(["grid", "--dataset", "gowalla", "--losses", "ssm,hinge"]) == 2
    assert "unknown losses hinge" in capsys.readouterr().err


def test_ctrl_c_stops_the_grid_and_the_interrupted_cell_is_resumed_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssmrec.trainer as trainer_module

    write_clustered(tmp_path / "data", 50, 4, 2)
    config = tmp_path / "grid.toml"
    config.write_text("dim = 8\nbatch_size = 32\n[data]\nvalid_ratio = 0.25\n")
    real_step = trainer_module.Trainer._step

    def interrupt_second_epoch(self, batch, epoch, index):
        if epoch == 2 and index == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, batch, epoch, index)

    monkeypatch.setattr(trainer_module.Trainer, "_step", interrupt_second_epoch)
    argv = ["grid", "--data", str(tmp_path / "data"), "--models", "mf", "--losses", "ssm,bpr",
            "--epochs", "3", "--output", str(tmp_path / "g"), "--config", str(config),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 130
    final = json.loads((tmp_path / "g" / "mf-ssm" / "final_metrics.json").read_text())
    assert final["interrupted"] is True  # train() kept the run ...
    assert not (tmp_path / "g" / "mf-bpr").exists()  # ... and the grid stopped instead of going on

    monkeypatch.setattr(trainer_module.Trainer, "_step", real_step)
    assert main(argv) == 0
    rows = {r["loss"]: r["status"] for r in csv.DictReader((tmp_path / "g" / "grid.csv").open())}
    assert rows == {"ssm": "done", "bpr": "done"}
    resumed = json.loads((tmp_path / "g" / "mf-ssm" / "final_metrics.json").read_text())
    assert resumed["interrupted"] is False and resumed["epochs_run"] == 3
    straight = main([*argv[:-3], "--output", str(tmp_path / "straight"), "--config", str(config),
                     "--no-progress"])  # fmt: skip
    assert straight == 0
    uninterrupted = json.loads((tmp_path / "straight" / "mf-ssm" / "final_metrics.json").read_text())
    assert resumed["test"] == uninterrupted["test"] and resumed["valid"] == uninterrupted["valid"]
