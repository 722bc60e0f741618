"""Where one training step spends its time (sampling, forward, backward, Adam; torch.profiler).

Complements bench_train.py, which only reports whole epochs: this shows which operators the epoch is
made of, so speed work goes where the time is. Default: the ssm-gowalla preset (LightGCN-1L + SSM);
``--loss``/``--model`` profile any other cell with that loss's defaults (as ``ssmrec grid`` runs it).

    python benchmarks/profile_step.py [--data ../shared/data/gowalla] [--steps 40]
    python benchmarks/profile_step.py --loss ccl --model mf
    python benchmarks/profile_step.py --loss softmax --model mf --set softmax_chunk_size=4096
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.profiler import profile

from ssmrec.batch import Batch
from ssmrec.config import resolve_config
from ssmrec.data import DataSpec, load_dataset
from ssmrec.defaults import LOSS_DEFAULTS
from ssmrec.experiment import build_training
from ssmrec.models import LightGCN
from ssmrec.sampling import TrainingPairs
from ssmrec.trainer import batch_loss, optimizer_step, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/gowalla"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--loss", help="profile this loss with its grid defaults instead of the preset")
    parser.add_argument("--model", default="lightgcn")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--no-table", action="store_true", help="only the per-phase times")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = load_dataset(DataSpec(path=args.data, valid_ratio=0.0))
    flags: dict[str, Any] = {"preset": "ssm-gowalla", "progress": False}
    if args.loss:
        flags = {**LOSS_DEFAULTS[args.loss], "loss": args.loss, "model": args.model}
        if args.model != "mf":
            flags["layers"] = 1
        flags["progress"] = False
    for item in args.set:
        key, _, value = item.partition("=")
        flags[key] = yaml.safe_load(value)
    config = resolve_config(flag_values=flags)
    rng = seed_everything(0)
    setup = build_training(config, data)
    model, objective, optimizer, sampler = setup.model, setup.objective, setup.optimizer, setup.sampler
    batches = TrainingPairs(data.train).batches(config.optim.batch_size, rng)

    def step() -> tuple[float, float, float, float]:
        start = time.perf_counter()
        users, positives = next(batches)
        batch = Batch.build(
            users, positives, sampler.sample(users, positives, rng), training=sampler.training
        )
        tick = time.perf_counter()
        loss = batch_loss(model, objective, batch, config.optim.reg).total
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward = time.perf_counter()
        optimizer_step(optimizer)
        return tick - start, forward - tick, backward - forward, time.perf_counter() - backward

    for _ in range(5):  # warm-up
        step()
    times = np.array([step() for _ in range(args.steps)]) * 1000
    sample, forward, backward, adam = times.mean(axis=0)
    total = times.sum(axis=1).mean()
    epoch = total / 1000 * TrainingPairs(data.train).n_batches(config.optim.batch_size)
    print(
        f"{config.model.name} + {config.loss.name}, batch {config.optim.batch_size}: "
        f"per batch ms: sample {sample:.1f} "
        f"forward {forward:.1f} backward {backward:.1f} adam {adam:.1f} total {total:.1f} "
        f"(epoch of steps ≈ {epoch:.0f} s)"
    )
    if isinstance(model, LightGCN):  # the batch-local propagation's share of the graph, over 20 batches
        degree = np.concatenate([data.user_activity, data.item_popularity])  # = non-zeros in a node's row
        touched = []
        for _ in range(20):
            users, positives = next(batches)
            items = Batch.build(users, positives, sampler.sample(users, positives, rng)).items()
            nodes = np.union1d(users.numpy(), items.numpy() + data.n_users)
            touched.append((len(nodes), degree[nodes].sum() / degree.sum()))
        nodes, share = np.array(touched).mean(axis=0)
        print(f"a batch touches {nodes:.0f} of {len(degree)} graph nodes, {share:.1%} of Â's non-zeros")
    if args.no_table:
        return
    with profile() as profiler:
        for _ in range(10):
            step()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
