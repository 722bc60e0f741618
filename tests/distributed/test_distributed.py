"""Two processes (gloo, one thread each) against one: steps, evaluation, lost ranks, two "machines", resume.

The single-process reference is the plain trainer on the same global batch; the two-process run must
equal it to float summation order (the gradient sums and the per-step loss sums are added in another
order), and its two replicas must be bit-identical.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO_ROOT, write_clustered
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("steps_worker.py")
SRC = REPO_ROOT / "src"


def _worker_module() -> Any:
    spec = importlib.util.spec_from_file_location("steps_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    dropped = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SSMREC_FAULT")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clustered(tmp_path_factory.mktemp("dist") / "data", n_users=65, n_train=8, n_test=2)


@pytest.fixture(scope="module")
def two_and_one(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, dict]:
    """(rank 0's results, rank 1's, the single process's) of the worker's cases."""
    out = tmp_path_factory.mktemp("two")
    cache = tmp_path_factory.mktemp("cache")
    port = str(free_port())
    command = [*TORCHRUN, "--nproc-per-node", "2", "--master-port", port, str(WORKER), str(data), str(out)]
    env = child_env(SSMREC_CACHE=str(cache))
    log = out / "torchrun.err"
    launched = subprocess.Popen(command, env=env, stderr=log.open("w"))
    worker = _worker_module()  # meanwhile the reference, in this process
    single = {"cases": worker.run_cases(str(data)), "evaluation": worker.sharded_evaluation(str(data))}
    launched.wait(timeout=240)
    assert launched.returncode == 0, log.read_text()[-3000:]
    return torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt"), single


def test_two_processes_step_like_one_with_the_global_batch(two_and_one: tuple) -> None:
    """Every case of the worker (one test, so that the one torchrun launch is shared under xdist)."""
    rank0, rank1, single = two_and_one
    assert rank0["world_size"] == 2
    assert set(rank0["cases"]) == set(single["cases"]) == set(_worker_module().CASES)
    for case, want in single["cases"].items():
        got, other = rank0["cases"][case], rank1["cases"][case]
        assert len(got["losses"]) == len(want["losses"]) == 18, case  # 2 epochs of 9 batches
        torch.testing.assert_close(
            torch.tensor(got["losses"]),
            torch.tensor(want["losses"]),
            rtol=2e-6,
            atol=1e-6,
            check_dtype=False,
            msg=lambda text, case=case: f"{case} losses: {text}",
        )
        for part, rtol, atol in (("model", 1e-5, 1e-6), ("objective", 1e-5, 1e-6), ("optimizer", 1e-3, 1e-7)):
            assert got[part].keys() == want[part].keys(), case
            for name in want[part]:
                torch.testing.assert_close(
                    got[part][name], want[part][name], rtol=rtol, atol=atol, msg=f"{case} {part} {name}"
                )
                assert torch.equal(got[part][name], other[part][name]), f"{case}: replicas differ in {name}"
        for metric, value in want["valid"].items():
            assert got["valid"][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), (case, metric)

    # sharded evaluation: each rank ranked every other user; merged sums equal one process's
    want = single["evaluation"]["merged"]
    assert want["users"] == 65
    shards = [rank0["evaluation"], rank1["evaluation"]]
    assert [shard["shard_users"] for shard in shards] == [33, 32]  # uneven: a mean of means would differ
    mean_of_means_differs = False
    for got in (shard["merged"] for shard in shards):
        assert got["users"] == want["users"]
        for metric, value in want.items():
            assert got[metric] == pytest.approx(value, rel=1e-12, abs=1e-15), metric
    for metric in shards[0]["shard_sums"]:
        means = [shard["shard_sums"][metric] / shard["shard_users"] for shard in shards]
        mean_of_means_differs |= abs(sum(means) / 2 - want[metric]) > 1e-9
    assert mean_of_means_differs  # the check above can tell the exact merge from RecBole's averaging


def _train_flags(data: Path, output: Path, epochs: int) -> list[str]:
    return [
        "train", "--data", str(data), "--model", "lightgcn", "--layers", "1", "--dim", "8", "--loss", "ssm",
        "--batch-size", "40", "--epochs", str(epochs), "--reg", "0.01", "--seed", "5", "--threads", "1",
        "--output", str(output), "--no-progress", "--dist-timeout", "30",
    ]  # fmt: skip


def test_lost_rank_makes_the_other_exit_within_the_timeout(data: Path, tmp_path: Path) -> None:
    """Rank 1 killed (SIGKILL) in one run, hung (SIGSTOP) in another, both at its third step: rank 0
    of each must exit with status 4 and the error, no later than the collective timeout after it."""
    timeout = 4.0
    runs = {}
    for how, fault in (("killed", "step:3"), ("hung", "step:3:stop")):
        port = str(free_port())
        flags = [*_train_flags(data, tmp_path / how, 3)[:-1], str(timeout)]
        common = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        common["SSMREC_CACHE"] = str(tmp_path / f"cache-{how}")
        procs = []
        for rank in (0, 1):
            env = child_env(**common, RANK=str(rank), LOCAL_RANK=str(rank))
            if rank == 1:
                env["SSMREC_FAULT"] = fault
            command = [sys.executable, "-m", "ssmrec", *flags]
            pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
            procs.append(subprocess.Popen(command, env=env, **pipes))
        runs[how] = procs
    try:
        lost_at = {}
        deadline = time.monotonic() + 180
        while len(lost_at) < 2 and time.monotonic() < deadline:
            for how, (_, rank1) in runs.items():
                if how not in lost_at and (rank1.poll() is not None or _stopped(rank1.pid)):
                    lost_at[how] = time.monotonic()
            time.sleep(0.05)
        assert len(lost_at) == 2, "rank 1 never reached its fault"
        for how, (rank0, _) in runs.items():
            _, errors = rank0.communicate(timeout=timeout + 60)
            waited = time.monotonic() - lost_at[how]
            assert rank0.returncode == 4, (how, errors[-2000:])
            assert "another process died or hung" in errors, errors[-2000:]
            if how == "hung":  # waited out the timeout, and not much longer (plus interpreter exit)
                assert "Timed out" in errors or "timed out" in errors.lower(), errors[-2000:]
            assert waited < timeout + 30, (how, waited)
    finally:
        for procs in runs.values():
            for proc in procs:
                proc.kill()
                proc.wait()
    assert runs["killed"][1].returncode == -9  # the fault, not something else, ended rank 1


def _stopped(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state == "T"


def _outputs(procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> list[tuple[str, str]]:
    """(stdout, stderr) of processes writing to ``<log>.out`` / ``.err``; on a timeout all are killed
    and their stderr shown (files, not pipes: a full pipe would block a rank)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(proc.poll() is None for proc in procs):
        time.sleep(0.1)
    hung = [proc for proc in procs if proc.poll() is None]
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    outputs = [(Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text()) for log in logs]
    assert not hung, "\n---\n".join(errors[-2000:] for _, errors in outputs)
    return outputs


def _history(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def single_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one plain process, 3 epochs, through the CLI."""
    one = tmp_path_factory.mktemp("single") / "one"
    env = child_env(SSMREC_CACHE=str(tmp_path_factory.mktemp("cache-single")))
    single = subprocess.run(
        [sys.executable, "-m", "ssmrec", *_train_flags(data, one, 3)], env=env, capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr[-3000:]
    return one


def test_two_machines_on_localhost_train_like_one_and_resume_with_one(
    data: Path, tmp_path: Path, single_run: Path
) -> None:
    """Two torchrun invocations (--nnodes 2, one process each, rendezvous on 127.0.0.1) train 2 epochs
    through the real CLI; the run then resumes with a single process to 3 epochs. Every epoch's metrics
    and the final weights equal those of one process trained 3 epochs straight."""
    port = str(free_port())
    env = child_env(SSMREC_CACHE=str(tmp_path / "cache"))
    two = tmp_path / "two"
    nodes = [
        subprocess.Popen(
            [
                *TORCHRUN, "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
                "--master-addr", "127.0.0.1", "--master-port", port, "-m", "ssmrec",
                *_train_flags(data, two, 2), "--keep-checkpoint", "true",
            ],
            env=env, stdout=(tmp_path / f"node{node}.out").open("w"),
            stderr=(tmp_path / f"node{node}.err").open("w"),
        )
        for node in (0, 1)
    ]  # fmt: skip
    logs = [tmp_path / f"node{node}" for node in (0, 1)]
    one = single_run
    outputs = _outputs(nodes, logs, timeout=240)
    for node, (_, errors) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, errors[-3000:]
    summary = json.loads(outputs[0][0][outputs[0][0].index("{") :])  # rank 0 reports the run
    assert outputs[1][0].strip() == ""  # rank 1 prints nothing
    assert summary["epochs_run"] == 2
    assert json.loads((two / "environment.json").read_text())["world_size"] == 2
    reference = _history(one)
    for got, want in zip(_history(two), reference[:2], strict=True):
        assert got["recall@20"] == pytest.approx(want["recall@20"], abs=1e-12)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)

    resumed = subprocess.run(
        [sys.executable, "-m", "ssmrec", "train", "--resume", str(two), "--epochs", "3"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint" in resumed.stderr and "(1 process)" in resumed.stderr
    for got, want in zip(_history(two), reference, strict=True):
        assert got["epoch"] == want["epoch"]
        assert got["ndcg@20"] == pytest.approx(want["ndcg@20"], abs=1e-12)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    weights, expected = load_file(two / "model.safetensors"), load_file(one / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(weights[name], expected[name], rtol=1e-5, atol=1e-6)


def test_torchrun_restart_after_a_lost_rank_resumes_the_run(
    data: Path, tmp_path: Path, single_run: Path
) -> None:
    """``torchrun --max-restarts 1`` with both ranks killed at their 18th step (epoch 2 of 12-step
    epochs): the
    restarted command resumes from the epoch-1 checkpoint and ends like one uninterrupted process."""
    env = child_env(SSMREC_CACHE=str(tmp_path / "cache"), SSMREC_FAULT="step:18")
    run = tmp_path / "restarted"
    command = [
        *TORCHRUN, "--nproc-per-node", "2", "--max-restarts", "1", "--master-port", str(free_port()),
        "-m", "ssmrec", *_train_flags(data, run, 2),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr and "resumed from checkpoint" in done.stderr
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["epochs_run"] == 2
    for got, want in zip(_history(run), _history(single_run)[:2], strict=True):
        assert got["recall@20"] == pytest.approx(want["recall@20"], abs=1e-12)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_a_resume_under_torchrun_never_moves_a_run_to_another_kind_of_device() -> None:
    """The group is joined before the config is read; a run configured for the CPU that meets a GPU
    group (``--device`` left out on a GPU machine) is refused with the flag that keeps it where it ran."""
    from ssmrec.distributed import Context, group_device
    from ssmrec.errors import SsmrecError

    gloo = Context(rank=1, world_size=2, device=torch.device("cpu"))
    nccl = Context(rank=1, world_size=2, local_rank=1, device=torch.device("cuda", 1))
    single = Context()
    assert group_device(torch.device("cpu"), gloo, "runs/a") == torch.device("cpu")
    # each rank computes on its own GPU (LOCAL_RANK), whatever index the config named
    assert group_device(torch.device("cuda", 0), nccl, "runs/a") == torch.device("cuda", 1)
    # one process: the config's own device, no group involved
    assert group_device(torch.device("cuda", 0), single, "runs/a") == torch.device("cuda", 0)
    with pytest.raises(SsmrecError, match=r"runs/a: the run's config computes on cpu.*NCCL.*--device cpu"):
        group_device(torch.device("cpu"), nccl, "runs/a")
    with pytest.raises(SsmrecError, match=r"computes on cuda.*gloo.*--device cuda to keep it"):
        group_device(torch.device("cuda", 0), gloo, "runs/a")
