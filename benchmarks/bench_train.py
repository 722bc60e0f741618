"""Training-epoch speed against the floor it is bound by, measured in one process.

Workloads (Gowalla, the paper's settings): LightGCN-3L + BPR, LightGCN-1L + SSM, MF + SSM.
The floor of a LightGCN epoch is full-graph propagation: per batch, L forward and L backward products
of the normalised adjacency (1.62 M non-zeros) with the 71 k × 64 embedding table, times the number of
batches. It is timed here, with the same torch build and threads, right before the epochs, so the
printed ratios compare like with like on a noisy machine. MF has no propagation: its line reports the
epoch time only.

    python benchmarks/bench_train.py [--data ../shared/data/gowalla] [--workloads lightgcn1-ssm,...]
Writes benchmarks/results/train.json and train.md.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_results

from ssmrec.config import resolve_config
from ssmrec.data import DataSpec, load_dataset
from ssmrec.experiment import build_training, schedule_of
from ssmrec.models.graph import SparseOperator, normalized_adjacency, sparse_product
from ssmrec.rundir import environment
from ssmrec.runtime import retain_freed_memory
from ssmrec.trainer import Trainer, seed_everything

WORKLOADS = {
    "lightgcn3-bpr": {"preset": "bpr-gowalla"},
    "lightgcn1-ssm": {"preset": "ssm-gowalla"},
    "mf-ssm": {"preset": "ssm-gowalla", "model": "mf"},
}


def propagation_floor(train, layers: int, n_batches: int, fastest: bool, repeats: int = 5) -> float:
    """Seconds per epoch of bare full-graph propagation: L forward + L backward products per batch.

    ``fastest=False``: each product is ``torch.sparse.mm`` (the issue's definition of the floor);
    ``True``: the library's own ``sparse_product`` (addmm into a reused buffer, no zero-fill or copy),
    the fastest bare product we know, so the ratio to it is the overhead of everything else.
    """
    operator = SparseOperator.from_scipy(normalized_adjacency(train), symmetric=True)
    table = torch.randn(sum(train.shape), 64)
    out = torch.empty_like(table)

    def product() -> None:
        if fastest:
            sparse_product(operator.matrix, table, out=out)
        else:
            torch.sparse.mm(operator.matrix, table)

    product()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        for _ in range(2 * layers):  # backward of a symmetric product is the same product
            product()
        best = min(best, time.perf_counter() - tick)
    return best * n_batches


def time_epoch(name: str, overrides: dict, data, epochs: int) -> dict:
    config = resolve_config(flag_values={**overrides, "progress": False})
    rng = seed_everything(config.optim.seed)
    setup = build_training(config, data)
    model = setup.model
    trainer = Trainer(setup, data, schedule_of(config), rng)
    pairs = trainer.pairs
    seconds = []
    for epoch in range(epochs):
        tick = time.perf_counter()
        trainer.train_epoch(f"{name} {epoch}")
        seconds.append(time.perf_counter() - tick)
    n_batches = pairs.n_batches(config.optim.batch_size)
    graph = config.model.name == "lightgcn"
    layers = config.model.layers or 0
    floor = propagation_floor(data.train, layers, n_batches, fastest=False) if graph else None
    fastest = propagation_floor(data.train, layers, n_batches, fastest=True) if graph else None
    epoch_seconds = min(seconds)
    return {
        "workload": name,
        "epoch_seconds": epoch_seconds,
        "all_epoch_seconds": seconds,
        "floor_seconds": floor,
        "ratio_to_floor": None if floor is None else epoch_seconds / floor,
        "fastest_floor_seconds": fastest,
        "ratio_to_fastest_floor": None if fastest is None else epoch_seconds / fastest,
        "batches": n_batches,
        "propagation": "—" if config.model.name != "lightgcn" else ("local" if model.local else "full"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/gowalla"))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--epochs", type=int, default=1, help="epochs per workload (the fastest is reported)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()  # as the command-line tool does
    np.random.seed(0)
    data = load_dataset(DataSpec(path=args.data, valid_ratio=0.0))
    rows = [time_epoch(name, WORKLOADS[name], data, args.epochs) for name in args.workloads.split(",")]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {"environment": environment(), "data": args.data, "peak_rss_mb": peak_mb, "results": rows}
    lines = [
        "| workload | propagation | epoch s | floor s (torch.sparse.mm) | epoch / floor "
        "| floor s (sparse_product) | epoch / that floor |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(value: float | None, digits: int) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    for row in rows:
        lines.append(
            f"| {row['workload']} | {row['propagation']} | {row['epoch_seconds']:.1f} "
            f"| {cell(row['floor_seconds'], 1)} | {cell(row['ratio_to_floor'], 2)} "
            f"| {cell(row['fastest_floor_seconds'], 1)} | {cell(row['ratio_to_fastest_floor'], 2)} |"
        )
    lines.append(f"\npeak RSS {peak_mb:.0f} MB, torch threads {torch.get_num_threads()}")
    markdown = "\n".join(lines) + "\n"
    write_results("train", report, markdown)


if __name__ == "__main__":
    main()
