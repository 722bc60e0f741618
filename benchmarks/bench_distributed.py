"""Per-step time of a 2-process data-parallel run against one process, and the collectives' volume.

Both runs train the same thing (Gowalla, the ``ssm-gowalla`` preset: LightGCN-1L + in-batch SSM,
batch 2048, dim 64) for ``--steps`` steps after ``--warmup`` steps, one torch thread per process, each
started by torchrun (``--nproc-per-node 1`` then ``2``) so both pay the same launcher. The 2-process
worker also times bare gloo collectives of this step's sizes: the all-reduce of the gradient of both
embedding tables, and the all-gather of the batch's user and positive rows. The printed ratio is
measured in this one invocation; on a machine with fewer free cores than processes it says how much
the processes slow each other down, not what more devices would gain.

    python benchmarks/bench_distributed.py [--data ../shared/data/gowalla] [--steps 20]
Writes benchmarks/results/distributed.json and distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from _results import write_results

from ssmrec import distributed
from ssmrec.config import resolve_config
from ssmrec.data import load_dataset
from ssmrec.experiment import build_trainer
from ssmrec.rundir import environment

HERE = Path(__file__).resolve()


def worker(data: str, steps: int, warmup: int, out: Path) -> None:
    torch.set_num_threads(1)
    with distributed.session(timeout=600) as context:
        config = resolve_config({}, {"preset": "ssm-gowalla", "data": {"path": data}, "threads": 1})
        loaded = load_dataset(config.data)
        target = {"steps": warmup}
        trainer = build_trainer(config, loaded, should_stop=lambda: trainer.state.step >= target["steps"])
        trainer.train_epoch()  # warm-up steps
        target["steps"] = warmup + steps
        tick = time.perf_counter()
        trainer.train_epoch()
        step_seconds = (time.perf_counter() - tick) / steps
        report = {"world_size": context.world_size, "step_seconds": step_seconds}
        if context.active:
            report.update(_collectives(loaded.n_users + loaded.n_items, config.optim.batch_size, 64))
    if context.is_main:
        out.write_text(json.dumps(report))


def _collectives(rows: int, batch: int, dim: int, repeats: int = 5) -> dict[str, float]:
    """Median seconds of a bare all-reduce of both tables' gradient, and of the batch's two gathers."""
    table = torch.randn(rows * dim)
    share = torch.randn(batch // 2, dim)
    parts = [torch.empty_like(share) for _ in range(dist.get_world_size())]

    def timed(action) -> float:
        samples = []
        for _ in range(repeats):
            dist.barrier()
            tick = time.perf_counter()
            action()
            samples.append(time.perf_counter() - tick)
        return statistics.median(samples)

    return {
        "allreduce_tables_seconds": timed(lambda: dist.all_reduce(table)),
        "allgather_batch_seconds": timed(lambda: [dist.all_gather(parts, share) for _ in range(2)]),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(processes: int, data: str, steps: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--master-port", str(_free_port()), str(HERE), "--worker", "--data", data,
            "--steps", str(steps), "--warmup", str(warmup), "--out", str(out),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(command, check=True, env=env)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parents[2] / "shared" / "data" / "gowalla"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.data, args.steps, args.warmup, Path(args.out))
        return
    one = launch(1, args.data, args.steps, args.warmup)
    two = launch(2, args.data, args.steps, args.warmup)
    ratio = two["step_seconds"] / one["step_seconds"]
    tables = (29858 + 40981) * 64 * 4
    report = {"one": one, "two": two, "ratio": ratio, "table_gradient_bytes": tables, "env": environment()}
    markdown = (
        "# 2 processes vs 1 (gloo, CPU, one thread each): Gowalla, LightGCN-1L + in-batch SSM, B = 2048\n\n"
        f"`python benchmarks/bench_distributed.py --steps {args.steps}` on {os.cpu_count()} cores.\n\n"
        "| processes | seconds per step |\n|---|---|\n"
        f"| 1 | {one['step_seconds']:.4f} |\n| 2 | {two['step_seconds']:.4f} |\n\n"
        f"Ratio 2 / 1: **{ratio:.2f}** (same global batch: each process encodes half of it).\n\n"
        f"Bare gloo collectives between the 2 processes: all-reduce of both tables' gradient "
        f"({tables / 1e6:.1f} MB) {two['allreduce_tables_seconds'] * 1e3:.1f} ms; the step's two "
        f"all-gathers of 1024 x 64 rows per rank {two['allgather_batch_seconds'] * 1e3:.2f} ms.\n"
    )
    write_results("distributed", report, markdown)


if __name__ == "__main__":
    main()
