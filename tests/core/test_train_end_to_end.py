"""End to end through the CLI on synthetic data with planted structure, plus the run directory contract."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_lightgcn_folder
from safetensors.torch import load_file

from ssmrec.cli import main
from ssmrec.data import DataSpec, load_dataset
from ssmrec.evaluate import evaluate_ranking

N_USERS, N_CLUSTERS, ITEMS_PER_CLUSTER = 240, 8, 20


def _write_planted(folder: Path) -> None:
    """Users each like one cluster of items: 10 train and 3 test items from it, plus 1 random train item."""
    rng = np.random.default_rng(0)
    n_items = N_CLUSTERS * ITEMS_PER_CLUSTER
    train, test = [], []
    for user in range(N_USERS):
        chosen = (user % N_CLUSTERS) * ITEMS_PER_CLUSTER + rng.choice(ITEMS_PER_CLUSTER, 13, replace=False)
        noise = int(rng.integers(n_items))
        train.append(sorted({*chosen[:10].tolist(), noise}))
        test.append(sorted(set(chosen[10:].tolist()) - set(train[-1])))
    write_lightgcn_folder(folder, train, test)


SSM = ("--model", "lightgcn", "--layers", "1", "--loss", "ssm", "--temperature", "0.2")


def _train(data: Path, output: Path, *extra: str, model: tuple[str, ...] = SSM, status: int = 0) -> dict:
    argv = ["train", "--data", str(data), "--output", str(output), *model, "--batch-size", "256",
            "--epochs", "12", "--lr", "0.01", "--seed", "7", "--no-progress", *extra]  # fmt: skip
    assert main(argv) == status
    return json.loads((output / "final_metrics.json").read_text())


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("planted") / "data"
    _write_planted(folder)
    return folder


def test_lightgcn_ssm_beats_popularity_and_writes_a_complete_run(planted: Path, tmp_path: Path) -> None:
    final = _train(planted, tmp_path / "run")
    data = load_dataset(DataSpec(path=str(planted), valid_ratio=0.1))
    popularity = torch.from_numpy(data.item_popularity.astype(np.float32)).unsqueeze(1)
    baseline = evaluate_ranking(
        torch.ones(data.n_users, 1), popularity, data.test, exclude=[data.train, data.valid], ks=[20]
    )
    assert final["test"]["recall@20"] > baseline["recall@20"] + 0.3, (final["test"], baseline)
    assert final["protocol"] == "standard" and final["selection_split"] == "valid"
    assert final["evaluated_split"] == "valid"
    assert set(final) >= {"valid", "test", "best_epoch", "epochs_run", "train_seconds"}

    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert names == {
        "config.json",
        "data.json",
        "environment.json",
        "metrics.jsonl",
        "final_metrics.json",
        "model.safetensors",
        "id_maps.json",
        "train.log",
    }  # fmt: skip; no temp files left behind
    maps = json.loads((run / "id_maps.json").read_text())
    assert maps["users"] == data.user_ids.tolist() and maps["items"] == data.item_ids.tolist()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    for record in records:
        assert {"epoch", "loss", "train_seconds", "eval_seconds", "recall@20", "ndcg@20", "mrr@50"} <= set(
            record
        )
    umask = os.umask(0)
    os.umask(umask)
    for path in run.iterdir():  # created like any file the user writes, not mkstemp's private 0600
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    weights = load_file(str(run / "model.safetensors"))
    assert weights["user_embedding.weight"].shape == (data.n_users, 64)
    config = json.loads((run / "config.json").read_text())
    assert config["loss"]["temperature"] == 0.2 and config["model"]["layers"] == 1
    fingerprint = json.loads((run / "data.json").read_text())
    assert fingerprint["counts"]["users"] == N_USERS
    assert all(len(digest) == 64 for digest in fingerprint["source"].values())


def test_same_seed_reproduces_metrics_exactly(planted: Path, tmp_path: Path) -> None:
    first = _train(planted, tmp_path / "a", "--epochs", "3")
    second = _train(planted, tmp_path / "b", "--epochs", "3")
    assert first["test"] == second["test"] and first["valid"] == second["valid"]
    other = _train(planted, tmp_path / "c", "--epochs", "3", "--seed", "8")
    assert other["test"] != first["test"]


def test_evaluate_command_reproduces_final_metrics(planted: Path, tmp_path: Path, capsys) -> None:
    final = _train(planted, tmp_path / "run", "--epochs", "2", "--protocol", "paper")
    assert final["selection_split"] == final["evaluated_split"] == "test" and "TEST" in final["note"]
    assert "valid" not in final  # the paper protocol trains on the full train split
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["test"] == pytest.approx(final["test"], rel=1e-6)
    assert "TEST" in printed["note"]


def test_bpr_and_mf_train_through_the_same_loop(planted: Path, tmp_path: Path) -> None:
    bpr = ("--loss", "bpr", "--model", "mf")
    final = _train(planted, tmp_path / "bpr", "--epochs", "2", "--reg", "1e-4", model=bpr)
    assert 0.0 <= final["test"]["recall@20"] <= 1.0


def test_cli_errors_are_one_line(planted: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("earlier results")
    assert main(["train", "--data", str(planted), "--output", str(tmp_path / "busy"), "--epochs", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "busy" / "keep.txt").read_text() == "earlier results"
    assert main(["train", "--data", str(planted), "--temperature", "-1"]) == 2
    assert "temperature must be > 0" in capsys.readouterr().err
    assert (
        main(["train", "--data", str(planted), "--valid-ratio", "0.01", "--output", str(tmp_path / "v")]) == 2
    )
    assert "carved split is empty" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()  # a refused run leaves nothing behind
    assert main(["train", "--epochs", "1"]) == 2
    assert "no data" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a complete run directory" in capsys.readouterr().err


def _signal_during_epoch(monkeypatch: pytest.MonkeyPatch, signum: int, epoch: int) -> None:
    """Send ``signum`` to this process in the middle of epoch ``epoch`` (after its first step)."""
    import ssmrec.trainer as trainer_module

    real_step = trainer_module.Trainer._step

    def step(self, batch, epoch_number, index):
        if epoch_number == epoch and index == 2:
            os.kill(os.getpid(), signum)
        return real_step(self, batch, epoch_number, index)

    monkeypatch.setattr(trainer_module.Trainer, "_step", step)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_request_finishes_the_run_with_the_best_weights(
    planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    assert threading.current_thread() is threading.main_thread()  # else train() leaves signals alone
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _signal_during_epoch(monkeypatch, signum, 3)
    final = _train(planted, tmp_path / "run", "--epochs", "10", "--protocol", "paper", status=130)
    assert final["interrupted"] is True and final["stopped_by"] == "interrupted"
    assert final["epochs_run"] == 2  # epoch 3 paused after its second step
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: r["recall@20"])
    assert final["best_epoch"] == best["epoch"]
    assert final["test"]["recall@20"] == pytest.approx(best["recall@20"], rel=1e-9)
    assert (tmp_path / "run" / "checkpoint").is_dir()  # kept: the run can be resumed
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_time_budget_stops_after_the_epoch_that_passes_it_and_evaluates_it(
    planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssmrec.trainer as trainer_module

    real_epoch = trainer_module.Trainer.train_epoch

    def fifty_second_epoch(self, *args, **kwargs):  # every epoch "takes" 50 s more than it does
        self.state.train_seconds += 50.0
        return real_epoch(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", fifty_second_epoch)
    final = _train(planted, tmp_path / "run", "--epochs", "10", "--eval-every", "5", "--max-minutes", "2")
    assert final["epochs_run"] == 3 and final["stopped_by"] == "time budget"  # 150 s >= 120 s after epoch 3
    assert final["stopped_early"] is False and final["interrupted"] is False
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [3]  # epoch 3 is evaluated although eval_every is 5
    unbounded = _train(planted, tmp_path / "full", "--epochs", "2")
    assert unbounded["stopped_by"] == "max epochs"


def test_a_run_that_overflows_stops_at_once_with_a_clear_message(planted: Path, tmp_path: Path) -> None:
    """Dot scores over τ = 1e-6 after an Adam step of 1e30 overflow float32: the run must stop there."""
    overflow = ("--model", "mf", "--loss", "ssm", "--similarity", "dot", "--temperature", "1e-6")
    final = _train(planted, tmp_path / "run", "--epochs", "3", "--lr", "1e30", model=overflow, status=3)
    assert final["stopped_by"] == "non-finite loss" and "test" not in final and "valid" not in final
    assert "epoch 1, batch 2" in final["error"] and "temperature=1e-06" in final["error"]
    assert "lr=1e+30" in final["error"]
    assert "training stopped: non-finite" in (tmp_path / "run" / "train.log").read_text()
    text = (tmp_path / "run" / "final_metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_an_empty_test_split_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    from conftest import write_lightgcn_folder

    write_lightgcn_folder(tmp_path / "data", [[0, 1, 2], [1, 2, 3]], [[9], [8]])  # test items never trained
    argv = ["train", "--data", str(tmp_path / "data"), "--protocol", "paper", "--output", str(tmp_path / "r")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "the test split of" in error and "is empty" in error and "nothing to evaluate" in error
    assert not (tmp_path / "r").exists()
