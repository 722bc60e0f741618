"""``ssmrec tune`` end to end on tiny planted data: outputs, reproduction, refit, pruning, kill -9 and
resume, two processes on one study, and the refusal of the paper protocol.

The data has 200 users whose items come from one of four clusters of 10 items; MF with 8 dimensions and
Adam at lr 0.05 learns it in a few epochs (validation NDCG@10 far above a random ranking), while lr 1e-5
does not move from the random initialisation: that is the deliberately bad trial the pruner must stop.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import write_clustered

from ssmrec.cli import main
from ssmrec.config import build_config
from ssmrec.experiment import train
from ssmrec.tuning.report import config_toml

optuna = pytest.importorskip("optuna", reason="the tune extra (optuna) is not installed")

TIMING = ("train_seconds", "eval_seconds")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clustered(tmp_path_factory.mktemp("tune") / "data", 200, 8, 2)


def fixed(data: Path, *extra: str, epochs: int = 4) -> list[str]:
    return ["--data", str(data), "--model", "mf", "--dim", "8", "--loss", "ssm", "--epochs", str(epochs),
            "--batch-size", "64", "--lr", "0.05", "--metric", "ndcg@10", "--threads", "1", "--no-progress",
            *extra]  # fmt: skip


def tune(*args: str, fault: str | None = None, wait: bool = True) -> Any:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SSMREC_FAULT", None)
    if fault:
        env["SSMREC_FAULT"] = fault
    command = [sys.executable, "-m", "ssmrec", "tune", *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def load(output: Path):
    storage = f"sqlite:///{(output / 'study.db').absolute()}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(storage=storage, study_name=summary.study_name)


def history(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in record.items() if k not in TIMING} for record in records]


def final(run: Path) -> dict:
    return json.loads((run / "final_metrics.json").read_text())


def test_paper_protocol_is_refused_before_anything_is_written(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "tune"
    assert main(["tune", *fixed(data, "--protocol", "paper"), "--trials", "1", "--output", str(output)]) == 2
    assert "never sees the test split; --protocol paper is refused" in capsys.readouterr().err
    assert not output.exists()


@pytest.fixture(scope="module")
def study_dir(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("study") / "tune"
    assert main(["tune", *fixed(data), "--trials", "3", "--output", str(output)]) == 0
    return output


def test_a_three_trial_study_writes_its_outputs_from_validation_only(study_dir: Path) -> None:
    study = load(study_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    assert [int(row["trial"]) for row in rows] == [0, 1, 2]
    for row, trial in zip(rows, study.trials, strict=True):
        run = study_dir / "trials" / f"trial-{trial.number:04d}"
        recorded = final(run)
        assert "test" not in recorded  # a trial never evaluates the test split
        assert float(row["valid_ndcg@10"]) == pytest.approx(recorded["valid"]["ndcg@10"], abs=0)
        assert trial.value == recorded["valid"]["ndcg@10"]
        assert int(row["best_epoch"]) == recorded["best_epoch"]
        recorded_config = json.loads((run / "config.json").read_text())
        assert recorded_config["loss"]["temperature"] == trial.params["temperature"]
    best = max(study.trials, key=lambda t: t.value)
    assert study.best_trial.number == best.number
    assert (study_dir / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    importance = json.loads((study_dir / "importances.json").read_text())
    assert importance["evaluator"] == "PedAnovaImportanceEvaluator"
    assert set(importance["importances"]) <= {"temperature", "reg", "negatives", "num_negatives", "logq"}
    report = (study_dir / "report.md").read_text()
    assert f"Trial {best.number}: validation ndcg@10 **{best.value:.4f}**" in report
    assert "Trials never evaluate the test split" in report


def test_best_toml_reproduces_the_best_trial(study_dir: Path, tmp_path: Path) -> None:
    study = load(study_dir)
    best_run = study_dir / "trials" / f"trial-{study.best_trial.number:04d}"
    again = tmp_path / "again"
    assert main(["train", "--config", str(study_dir / "best.toml"), "--output", str(again)]) == 0
    assert history(again) == history(best_run)
    assert final(again)["valid"] == final(best_run)["valid"]
    assert final(again)["best_epoch"] == study.best_trial.user_attrs["best_epoch"]


def test_refit_trains_on_train_plus_validation_and_evaluates_test_once(
    study_dir: Path, data: Path, capsys: pytest.CaptureFixture
) -> None:
    study = load(study_dir)
    best = study.best_trial
    assert main(["tune", *fixed(data), "--trials", "3", "--output", str(study_dir), "--refit"]) == 0
    assert len(load(study_dir).trials) == 3  # the study had its trials: only the refit ran
    refit = study_dir / f"refit-trial-{best.number:04d}"
    config = json.loads((refit / "config.json").read_text())
    assert config["evaluation"]["protocol"] == "refit"
    assert config["optim"]["epochs"] == config["optim"]["eval_every"] == best.user_attrs["best_epoch"]
    outcome = final(refit)
    assert "valid" not in outcome and set(outcome["test"]) >= {"recall@20", "ndcg@20"}
    # the epochs were chosen on validation by the trial; test was only evaluated, once
    assert outcome["selection_split"] == "valid" and outcome["evaluated_split"] == "test"
    assert len(history(refit)) == 1 and history(refit)[0]["split"] == "test"  # one test evaluation
    trial_run = study_dir / "trials" / f"trial-{best.number:04d}"
    before = json.loads((trial_run / "data.json").read_text())["counts"]
    after = json.loads((refit / "data.json").read_text())["counts"]
    assert after["train_interactions"] == before["train_interactions"] + before["valid_interactions"]
    assert after["test_interactions"] == before["test_interactions"]
    report = (study_dir / "report.md").read_text()
    assert after["items"] == before["items"] and "**Data:**" not in report  # same data: nothing to say
    assert "test evaluated once" in report and f"{outcome['test']['recall@20']:.4f}" in report
    capsys.readouterr()
    assert main(["tune", *fixed(data), "--trials", "3", "--output", str(study_dir), "--refit"]) == 0
    assert "read back, test not evaluated again" in capsys.readouterr().err
    assert final(refit) == outcome


def test_the_pruner_stops_a_deliberately_bad_trial(data: Path, tmp_path: Path) -> None:
    output = tmp_path / "tune"
    output.mkdir()
    space = tmp_path / "space.toml"
    space.write_text("inherit = false\n[lr]\nlow = 1e-5\nhigh = 0.1\nlog = true\n")
    storage = f"sqlite:///{output / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="prune", direction="maximize")
    for lr in (0.05, 0.03, 1e-5):  # two good settings, then one that cannot learn in 4 epochs
        study.enqueue_trial({"lr": lr})
    args = [*[a for a in fixed(data) if a not in ("--lr", "0.05")], "--space", str(space), "--trials", "3",
            "--study-name", "prune", "--output", str(output), "--prune-startup", "2", "--prune-warmup", "1"]
    assert main(["tune", *args]) == 0
    study = load(output)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = study.trials[2]
    assert bad.params == {"lr": 1e-5}
    assert bad.user_attrs["stopped_by"] == "pruned" and bad.user_attrs["epochs_run"] < 4
    run = final(output / "trials" / "trial-0002")
    assert run["stopped_by"] == "pruned" and "test" not in run
    assert max(bad.intermediate_values.values()) < min(t.value for t in study.trials[:2])


def test_a_killed_tune_continues_the_dead_trial_mid_run(data: Path, tmp_path: Path) -> None:
    """23 batches an epoch, 4 epochs a trial: step 130 is inside epoch 2 of trial 1, after its first
    checkpoint. Running the command again resumes that run directory from the checkpoint."""
    output = tmp_path / "tune"
    args = [*fixed(data), "--trials", "3", "--output", str(output), "--no-prune"]
    killed = tune(*args, fault="step:130")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    study = load(output)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    again = tune(*args)
    assert again.returncode == 0, again.stderr
    assert "trial 1 was left running by a stopped process: continuing it" in again.stderr
    study = load(output)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # trial 2 continues trial 1
    continued = study.trials[2]
    assert continued.user_attrs["resumes"] == 1 and continued.params == study.trials[1].params
    assert continued.user_attrs["run_dir_name"] == "trial-0001"
    run = output / "trials" / "trial-0001"
    assert "resumed from checkpoint" in (run / "train.log").read_text()
    assert continued.value == final(run)["valid"]["ndcg@10"]
    assert sorted(continued.intermediate_values) == [1, 2, 3, 4]  # the whole curve, old epochs included
    straight = tmp_path / "straight"  # the same config, never interrupted: the same numbers
    config = build_config(json.loads((run / "config.json").read_text()))
    (tmp_path / "trial1.toml").write_text(config_toml(config, []))
    assert main(["train", "--config", str(tmp_path / "trial1.toml"), "--output", str(straight)]) == 0
    assert history(straight) == history(run)
    rows = list(csv.DictReader((output / "trials.csv").open()))
    assert "continues trial 1's run directory" in rows[2]["note"]


def test_a_trial_stopped_by_its_time_budget_keeps_no_checkpoint(data: Path, tmp_path: Path) -> None:
    """A plain run stopped by its time budget keeps its checkpoint (to be continued); a trial never is
    continued once Optuna has its value, so the study removes it instead of keeping one per trial."""
    output = tmp_path / "tune"
    done = tune(*fixed(data, "--max-minutes", "0.00001"), "--trials", "1", "--output", str(output))
    assert done.returncode == 0, done.stderr[-2000:]
    (trial,) = load(output).trials
    assert trial.state.name == "COMPLETE"
    assert (trial.user_attrs["stopped_by"], trial.user_attrs["epochs_run"]) == ("time budget", 1)
    run = output / "trials" / "trial-0000"
    assert trial.value == final(run)["valid"]["ndcg@10"]
    assert not (run / "checkpoint").exists()


def test_two_processes_share_one_study(data: Path, tmp_path: Path) -> None:
    output = tmp_path / "tune"
    args = [*fixed(data, epochs=2), "--trials", "4", "--output", str(output), "--no-prune"]
    first, second = tune(*args, wait=False), tune(*args, wait=False)
    outs = [process.communicate(timeout=300) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    study = load(output)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    ran = [{int(line.split()[1].rstrip(":")) for line in err.splitlines() if line.startswith("trial ")}
           for _, err in outs]  # fmt: skip
    assert ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == {0, 1, 2, 3}
    workers = sorted(int(err.split("(worker ")[1].split(")")[0]) for _, err in outs)
    assert workers == [0, 1]  # each process sampled with its own seed
    assert len({t.user_attrs["run_dir_name"] for t in study.trials}) == 4
    for trial in study.trials:
        assert trial.value == final(output / "trials" / trial.user_attrs["run_dir_name"])["valid"]["ndcg@10"]


def test_torchrun_processes_are_independent_workers_of_one_study(data: Path, tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m ssmrec tune``: each process trains its own trials and joins no
    process group. Before, the two processes' first trials (different settings) trained together as the
    replicas of one model, both reporting the same wrong value, and later trials failed to join. Each
    trial's curve must be that of a single process trained with its config; the refit runs once."""
    output = tmp_path / "tune"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    dropped = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SSMREC_FAULT")
    env = {**{k: v for k, v in os.environ.items() if k not in dropped}, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
               "-m", "ssmrec", "tune", *fixed(data, epochs=2), "--trials", "4", "--output", str(output),
               "--no-prune", "--refit"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("joins no process group") == 2
    study = load(output)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert study.user_attrs["workers"] == 2
    for trial in study.trials:
        run = output / "trials" / trial.user_attrs["run_dir_name"]
        alone = tmp_path / f"alone-{trial.number}"
        config = build_config(json.loads((run / "config.json").read_text()))
        train(config.replace(run={"output": str(alone), "name": alone.name}))
        assert history(alone) == history(run), trial.number  # not trained as another trial's replica
    refits = sorted(path.name for path in output.iterdir() if path.name.startswith("refit-trial-"))
    assert refits == [f"refit-trial-{study.best_trial.number:04d}"]
    assert done.stderr.count("read back, test not evaluated again") == 1  # the other process waited


def test_a_setting_every_trial_shares_stops_the_study_with_its_reason(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """No validation split (valid_ratio 0): every trial fails the same way, so tune stops after three."""
    output = tmp_path / "tune"
    assert main(["tune", *fixed(data, "--valid-ratio", "0"), "--trials", "10", "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert "3 trials in a row failed" in error
    assert "selects on a validation split, but the data has none" in error
    assert [t.state.name for t in load(output).trials] == ["FAIL"] * 3


def test_tune_needs_a_trial_count_or_a_budget(data: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["tune", *fixed(data)]) == 2
    assert "give --trials N" in capsys.readouterr().err


def test_baseline_first_runs_the_fixed_settings_before_sampling(data: Path, tmp_path: Path) -> None:
    """Trial 0 is the defaults table's SSM setting (τ 0.1, in-batch, no logQ) with the flags' reg; the
    next trial is sampled."""
    output = tmp_path / "tune"
    done = tune(
        *fixed(data, "--reg", "0.001", epochs=2), "--trials", "2", "--baseline-first", "--output", str(output)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = load(output).trials
    assert first.params == {"temperature": 0.1, "negatives": "in-batch", "logq": "none"}
    assert first.user_attrs["baseline"] is True and "baseline" not in second.user_attrs
    recorded = json.loads((output / "trials" / "trial-0000" / "config.json").read_text())
    assert recorded["loss"]["temperature"] == 0.1 and recorded["optim"]["reg"] == 0.001
    assert (
        "first trial: the fixed settings' own temperature=0.1, negatives=in-batch, logq=none" in done.stderr
    )
