"""Kill -9 at any moment, resume, and get the uninterrupted run's numbers to the last digit.

Each run is a real ``python -m ssmrec train`` process; ``SSMREC_FAULT=POINT:N`` (:mod:`ssmrec.faults`)
makes it SIGKILL itself at the N-th pass of a point: during an epoch, during an evaluation, between the
files of a checkpoint write, before the checkpoint's rename, before the weights are saved. Then
``--resume`` continues it, and metrics.jsonl (losses and metrics) and final_metrics.json must equal
those of a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from ssmrec import checkpoint

TIMING = ("train_seconds", "eval_seconds", "wall_seconds", "config_sha256")
"""Fields that may differ: times, and the hash of config.json (which names the run's own folder)."""


def _data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """ml-100k when ../shared is beside the repo (MF, dim 8), else a generated folder of the same shape."""
    if (SHARED_DATA / "ml-100k").is_dir():
        return str(SHARED_DATA / "ml-100k"), ["--batch-size", "2048"]
    from conftest import write_clustered

    folder = write_clustered(tmp_path_factory.mktemp("resume") / "data", 200, 6, 2)
    print("ml-100k not available (../shared absent): resuming on generated data instead")
    return str(folder), ["--batch-size", "64"]


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    data, batch = _data(tmp_path_factory)
    return ["--data", data, "--model", "mf", "--dim", "8", "--loss", "ssm", "--epochs", "4", "--lr", "0.01",
            "--threads", "1", "--no-progress", *batch]  # fmt: skip


def _ssmrec(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SSMREC_FAULT", None)
    if fault:
        env["SSMREC_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "ssmrec", "train", *args], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _outcome(run: Path) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = json.loads((run / "final_metrics.json").read_text())
    strip = lambda record: {k: v for k, v in record.items() if k not in TIMING}  # noqa: E731
    return [strip(r) for r in records], strip(final)


@pytest.fixture(scope="module")
def uninterrupted(setting: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict]:
    run = tmp_path_factory.mktemp("straight") / "run"
    done = _ssmrec([*setting, "--output", str(run)])
    assert done.returncode == 0, done.stderr
    assert not (run / "checkpoint").exists()  # a finished run keeps only what evaluation needs
    return _outcome(run)


@pytest.mark.parametrize(
    "faults",
    [
        ["step:5"],  # during epoch 1 (before any checkpoint: the run starts again from the beginning)
        ["step:30"],  # during a later epoch
        ["evaluate:2"],  # during the second evaluation
        ["checkpoint.between_files:2"],  # tensors written, state not yet: the half checkpoint is ignored
        ["checkpoint.before_rename:3"],
        ["checkpoint.before_cleanup:2"],  # two complete checkpoints on disk: the newer one is used
        ["weights.write:2", "step:10", "evaluate:1"],  # killed again and again while resuming
    ],
    ids=lambda faults: "+".join(faults),
)
def test_kill_9_anywhere_then_resume_gives_identical_results(
    setting: list[str], uninterrupted: tuple[list[dict], dict], tmp_path: Path, faults: list[str]
) -> None:
    run = tmp_path / "run"
    first = _ssmrec([*setting, "--output", str(run)], faults[0])
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert not (run / "final_metrics.json").exists()
    for fault in [*faults[1:], None]:
        resumed = _ssmrec(["--resume", str(run)], fault)
        if fault is not None:
            assert resumed.returncode == -signal.SIGKILL, resumed.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert _outcome(run) == uninterrupted
    assert not list(run.glob("**/.*.tmp"))  # stale temporary files of the killed writes were removed


def test_stop_request_mid_epoch_then_resume_is_identical(
    setting: list[str], uninterrupted: tuple[list[dict], dict], tmp_path: Path
) -> None:
    """SIGTERM inside an epoch checkpoints *inside* the epoch; resuming continues at the next batch."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "ssmrec", "train", *setting, "--output", str(run)],
                               env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:  # wait until the second epoch is under way
        if line.startswith("epoch 1 "):
            process.send_signal(signal.SIGTERM)
            break
    process.communicate(timeout=300)
    assert process.returncode == 130
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["stopped_by"] == "interrupted"
    saved = checkpoint.latest(run)
    assert saved is not None and saved.state["trainer"]["epoch"] >= 1
    resumed = _ssmrec(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr
    assert _outcome(run) == uninterrupted


def test_resume_refuses_settings_that_change_the_result(setting: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _ssmrec([*setting, "--output", str(run)], "step:5").returncode == -signal.SIGKILL
    refused = _ssmrec(["--resume", str(run), "--lr", "0.5", "--seed", "3"])
    assert refused.returncode == 2
    assert "optim.lr, optim.seed" in refused.stderr and "would change its result" in refused.stderr
    raised = _ssmrec(["--resume", str(run), "--epochs", "5", "--patience", "20"])
    assert raised.returncode == 0, raised.stderr
    assert json.loads((run / "final_metrics.json").read_text())["epochs_run"] == 5
    assert json.loads((run / "config.json").read_text())["optim"]["epochs"] == 5  # what actually ran


def test_time_budget_keeps_the_checkpoint_and_a_finished_run_is_never_retrained(
    setting: list[str], uninterrupted: tuple[list[dict], dict], tmp_path: Path
) -> None:
    """A budget-stopped run continues with a larger budget; a run that removed its checkpoint is refused.

    The time budget is the machine's limit, so the run keeps its checkpoint and ``--resume
    --max-minutes`` ends where a run that was never stopped ends. Once it has finished (all epochs) the
    checkpoint is gone, and a further ``--resume`` must fail with a clear message, leaving the metrics,
    final metrics and weights byte for byte as they were (training again from scratch would erase them).
    """
    run = tmp_path / "run"
    first = _ssmrec([*setting, "--output", str(run), "--max-minutes", "0.00001"])
    assert first.returncode == 0, first.stderr
    final = json.loads((run / "final_metrics.json").read_text())
    assert (final["stopped_by"], final["epochs_run"]) == ("time budget", 1)
    assert checkpoint.latest(run) is not None
    resumed = _ssmrec(["--resume", str(run), "--max-minutes", "600"])
    assert resumed.returncode == 0, resumed.stderr
    assert _outcome(run) == uninterrupted
    assert not (run / "checkpoint").exists()  # finished by its epoch limit: nothing left to continue

    files = ("metrics.jsonl", "final_metrics.json", "model.safetensors", "config.json")
    before = {name: (run / name).read_bytes() for name in files}
    refused = _ssmrec(["--resume", str(run), "--epochs", "6"])
    assert refused.returncode == 2
    assert "finished (max epochs after epoch 4) and removed its checkpoint" in refused.stderr
    assert "--keep-checkpoint true" in refused.stderr
    assert {name: (run / name).read_bytes() for name in files} == before


class _JoinedWith(Exception):
    """Raised by the stand-in process group so that the test sees the timeout resume joined it with."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout


@pytest.mark.parametrize(
    ("config_text", "changes", "expected"),
    [
        ('{"run": {"dist_timeout": 45.0}}', {}, 45.0),  # the run's own value
        ('{"run": {"dist_timeout": 45.0}}', {"dist_timeout": 12.0}, 12.0),  # a flag on resume wins
        ('{"run": {"dist_timeout": -3}}', {}, 300.0),  # an invalid value: rank 0's config check reports it
        ('{"run": {"dist_timeout": true}}', {}, 300.0),
        ('{"run": {}}', {}, 300.0),  # a config of a version without the key
        ("{not json", {}, 300.0),
        (None, {}, 300.0),  # no config here (another machine's rank): the default
    ],
)
def test_resume_joins_the_process_group_with_the_runs_recorded_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_text: str | None, changes: dict, expected: float
) -> None:
    from ssmrec import experiment

    def joined(timeout: float, prefer_cuda: bool = False) -> None:
        raise _JoinedWith(timeout)

    monkeypatch.setattr(experiment.distributed, "session", joined)
    if config_text is not None:
        (tmp_path / "config.json").write_text(config_text)
    with pytest.raises(_JoinedWith) as joined_with:
        experiment.resume(tmp_path, changes)
    assert joined_with.value.timeout == expected
