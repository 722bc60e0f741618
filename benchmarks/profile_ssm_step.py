"""Where one LightGCN-1L + SSM training step spends its time (forward, backward, Adam; torch.profiler).

Complements bench_train.py, which only reports whole epochs: this shows which operators the epoch is
made of, so speed work goes where the time is.

    python benchmarks/profile_ssm_step.py [--data ../shared/data/gowalla] [--steps 40]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from torch.profiler import profile

from ssmrec.batch import Batch
from ssmrec.config import resolve_config
from ssmrec.data import DataSpec, load_dataset
from ssmrec.sampling import TrainingPairs
from ssmrec.train import (
    batch_loss,
    build_model_for,
    build_objective,
    build_optimizer,
    build_sampler_for,
    seed_everything,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/gowalla"))
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    data = load_dataset(DataSpec(path=args.data, valid_ratio=0.0))
    config = resolve_config(flag_values={"preset": "ssm-gowalla", "progress": False})
    rng = seed_everything(0)
    model, objective = build_model_for(config, data), build_objective(config)
    optimizer, sampler = build_optimizer(model, objective, config), build_sampler_for(config, data)
    batches = TrainingPairs(data.train).batches(config.batch_size, rng)

    def step() -> tuple[float, float, float]:
        users, positives = next(batches)
        batch = Batch.build(
            users, positives, sampler.sample(users, positives, rng), training=sampler.training
        )
        tick = time.perf_counter()
        loss = batch_loss(model, objective, batch, config.reg)
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        return forward - tick, backward - forward, time.perf_counter() - backward

    for _ in range(5):  # warm-up
        step()
    times = np.array([step() for _ in range(args.steps)]) * 1000
    forward, backward, adam = times.mean(axis=0)
    total = times.sum(axis=1).mean()
    print(f"per batch ms: forward {forward:.1f} backward {backward:.1f} adam {adam:.1f} total {total:.1f}")
    with profile() as profiler:
        for _ in range(10):
            step()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
