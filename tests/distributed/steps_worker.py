"""K training steps of several configs, and a sharded evaluation, in one process of a torchrun run.

Run as ``python -m torch.distributed.run --nproc-per-node 2 steps_worker.py DATA OUT`` (each rank
writes ``OUT/rank<r>.pt``) or imported by the tests, which call :func:`run_cases` in one plain process
for the reference. One torch thread per process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from ssmrec import distributed
from ssmrec.config import resolve_config
from ssmrec.data import load_dataset
from ssmrec.evaluate import ranking_sums
from ssmrec.experiment import build_trainer, evaluate_split, exclusions

CASES: dict[str, dict[str, Any]] = {
    "ssm-inbatch-cosine-lightgcn": {
        "model": "lightgcn", "layers": 1, "loss": "ssm", "similarity": "cosine", "exclude": "duplicates",
    },
    "ssm-inbatch-dot-learned-tau-mean": {
        "model": "mf", "loss": "ssm", "similarity": "dot", "learn_temperature": True, "reduction": "mean",
        "temperature": 0.5,
    },
    "ssm-sampled-uniform": {"model": "mf", "loss": "ssm", "negatives": "uniform", "num_negatives": 4},
    "ssm-shared": {
        "model": "lightgcn", "layers": 1, "loss": "ssm", "negatives": "shared", "num_negatives": 6,
    },
    "ssm-mixed-exclude-train": {
        "model": "mf", "loss": "ssm", "negatives": "mixed", "num_negatives": 5, "exclude": "train",
    },
    "bpr-mean": {"model": "lightgcn", "layers": 2, "loss": "bpr", "reduction": "mean"},
    "softmax-full": {"model": "mf", "loss": "softmax", "learn_temperature": True},
    "adap-tau": {"model": "mf", "loss": "adap-tau"},
}  # fmt: skip
"""Loss settings per case; every case trains 2 epochs of 8 batches of 51 (26 + 25 rows) and one of 40."""

COMMON = {"dim": 8, "batch_size": 51, "epochs": 2, "lr": 0.01, "reg": 0.01, "seed": 3, "threads": 1}


def run_cases(data_path: str, cases: list[str] | None = None) -> dict[str, Any]:
    """Per case: the loss of every step, the final weights, Adam's state and the validation sums."""
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    for name in cases or list(CASES):
        config = resolve_config({}, {**COMMON, **CASES[name], "data": {"path": data_path}, "progress": False})
        data = load_dataset(config.data)
        trainer = build_trainer(config, data)
        losses: list[float] = []
        value_of = trainer.replicas.loss_value

        def recorded(loss: Any, value_of: Any = value_of, losses: list[float] = losses) -> float:
            value = value_of(loss)
            losses.append(value)
            return value

        trainer.replicas.loss_value = recorded  # type: ignore[method-assign]
        for _ in range(config.optim.epochs):
            trainer.train_epoch()
        _, tensors = trainer.checkpoint_state()
        results[name] = {
            "losses": losses,
            "model": {k: v.clone() for k, v in trainer.model.state_dict().items()},
            "objective": {k: v.clone() for k, v in trainer.objective.checkpoint_tensors().items()},
            "optimizer": {k: v.clone() for k, v in tensors.items() if k.startswith("optimizer.")},
            "valid": evaluate_split(trainer.model, data, "valid", config),
        }
    return results


def sharded_evaluation(data_path: str) -> dict[str, Any]:
    """Test-split metrics of a freshly initialised model, merged over ranks, and this rank's own shard
    (its float64 sums and user count, unmerged)."""
    config = resolve_config({}, {**COMMON, **CASES["ssm-sampled-uniform"], "data": {"path": data_path}})
    data = load_dataset(config.data)
    trainer = build_trainer(config, data)
    users, items = trainer.model.representations()
    context = distributed.current()
    sums, count = ranking_sums(
        users, items, data.test, exclusions(data, "test"), config.evaluation.ks,
        shard=(context.rank, context.world_size),
    )  # fmt: skip
    merged = evaluate_split(trainer.model, data, "test", config)
    return {"merged": merged, "shard_sums": sums, "shard_users": count}


def main(data_path: str, out: str) -> None:
    with distributed.session(timeout=60) as context:
        results = {"cases": run_cases(data_path), "evaluation": sharded_evaluation(data_path)}
        results["world_size"] = context.world_size
    torch.save(results, Path(out) / f"rank{context.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
