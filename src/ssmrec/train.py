"""The training loop: one loop for every model and loss, with early stopping on a held-out split.

Model selection looks at the validation split unless ``protocol="paper"``, which selects on the test
split as the SSM paper and its anchors do; such runs say so in every output, because test-selected
numbers are optimistic.
"""

from __future__ import annotations

import copy
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ssmrec.config import TrainConfig
from ssmrec.data import Interactions, load_dataset
from ssmrec.errors import ConfigError
from ssmrec.evaluate import evaluate_ranking
from ssmrec.losses import Objective, build_loss, l2_penalty
from ssmrec.models import Recommender, build_model
from ssmrec.rundir import CONFIG, DATA, ENVIRONMENT, FINAL, LOG, RunDir, data_fingerprint, environment
from ssmrec.sampling import TrainingPairs, UniformNegativeSampler

logger = logging.getLogger("ssmrec")

PAPER_PROTOCOL_NOTE = (
    "paper protocol: the best epoch was chosen on the TEST split, as the SSM paper and its baselines "
    "do; these test numbers are optimistic and not a held-out estimate"
)


@dataclass
class TrainResult:
    """What a finished run reports; the same content is in the run directory."""

    run_dir: Path
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return the generator that drives all sampling of a run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def default_run_name(config: TrainConfig) -> str:
    data_name = config.data.dataset or Path(config.data.path or "data").name
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{data_name}-{config.model}{config.layers}-{config.loss}-{stamp}"


def build_objective(config: TrainConfig) -> Objective:
    return build_loss(
        config.loss,
        temperature=config.temperature,
        similarity=config.similarity,
        num_negatives=config.num_negatives,
        reduction=config.reduction,
    )


def build_model_for(config: TrainConfig, data: Interactions) -> Recommender:
    return build_model(
        config.model, data.train, dim=config.dim, n_layers=config.layers, propagation=config.propagation
    )


def exclusions(data: Interactions, split: str) -> list:
    """Items never to recommend when evaluating ``split``: training items, and validation items for test."""
    if split == "test" and data.valid is not None:
        return [data.train, data.valid]
    return [data.train]


def evaluate_split(
    model: Recommender, data: Interactions, split: str, config: TrainConfig
) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on ``split`` (``valid`` or ``test``)."""
    truth = data.valid if split == "valid" else data.test
    if truth is None:
        raise ValueError(f"the data has no {split} split")
    users, items = model.representations()
    return evaluate_ranking(
        users,
        items,
        truth,
        exclude=exclusions(data, split),
        ks=config.ks,
        score=config.rank_by,
        chunk_size=config.eval_chunk_size,
        progress=_show_progress(config),
    )


def _show_progress(config: TrainConfig) -> bool:
    return config.progress and sys.stderr.isatty()


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def train_one_epoch(
    model: Recommender,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    pairs: TrainingPairs,
    sampler: UniformNegativeSampler | None,
    rng: np.random.Generator,
    config: TrainConfig,
    description: str,
) -> float:
    """One pass over the training pairs; returns the mean batch loss (regulariser included)."""
    model.train()
    total, batches = 0.0, 0
    iterator = pairs.batches(config.batch_size, rng)
    bar = tqdm(
        iterator,
        total=pairs.n_batches(config.batch_size),
        desc=description,
        leave=False,
        disable=not _show_progress(config),
    )
    for users, positives in bar:
        size = len(users)
        items = positives
        if objective.num_negatives > 0:
            assert sampler is not None
            negatives = sampler.sample(users, objective.num_negatives, rng)
            items = torch.cat([positives, negatives.reshape(-1)])
        user_repr, item_repr = model.encode(users, items)
        negative_repr = (
            item_repr[size:].reshape(size, objective.num_negatives, -1) if len(items) > size else None
        )
        loss = objective(user_repr, item_repr[:size], negative_repr)
        if config.reg > 0:
            loss = loss + l2_penalty(config.reg, model.ego(users, items), size, objective.reduction)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        batches += 1
    return total / max(1, batches)


def train(config: TrainConfig, data: Interactions | None = None) -> TrainResult:
    """Train ``config``'s model on its data and write a complete run directory."""
    if config.threads:
        torch.set_num_threads(config.threads)
    run = RunDir.create(config.output or Path("runs") / (config.name or default_run_name(config)))
    handler = _attach_log(run.path / LOG)
    try:
        return _train(config, data, run)
    finally:
        logger.removeHandler(handler)
        handler.close()


def _train(config: TrainConfig, data: Interactions | None, run: RunDir) -> TrainResult:
    rng = seed_everything(config.seed)
    if config.protocol == "paper":
        logger.warning("%s", PAPER_PROTOCOL_NOTE)
    started = time.perf_counter()
    if data is None:
        data = load_dataset(config.data_spec())
    logger.info("data %s: %s (loaded in %.2f s)", data.name, data.counts(), time.perf_counter() - started)
    run.write_json(CONFIG, config.to_dict())
    run.write_json(DATA, data_fingerprint(data))
    run.write_json(ENVIRONMENT, environment())

    selection = config.selection_split
    if selection == "valid" and data.valid is None:
        raise ConfigError(
            "the standard protocol selects on a validation split, but the data has none; "
            "set data.valid_ratio > 0 or use --protocol paper"
        )
    torch.manual_seed(config.seed)
    model = build_model_for(config, data)
    objective = build_objective(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)  # same update, one kernel
    pairs = TrainingPairs(data.train)
    sampler = UniformNegativeSampler(data.train) if objective.num_negatives > 0 else None
    logger.info(
        "model %s (%d layers), loss %s, %d training pairs, %d batches of %d per epoch",
        config.model,
        config.layers,
        config.loss,
        len(pairs),
        pairs.n_batches(config.batch_size),
        config.batch_size,
    )

    history: list[dict[str, Any]] = []
    best_value, best_epoch, best_state = -float("inf"), 0, copy.deepcopy(model.state_dict())
    evaluations_without_gain, stopped_early, epoch = 0, False, 0
    train_seconds = 0.0
    for epoch in range(1, config.epochs + 1):
        tick = time.perf_counter()
        loss = train_one_epoch(
            model, objective, optimizer, pairs, sampler, rng, config, f"epoch {epoch}/{config.epochs}"
        )
        epoch_seconds = time.perf_counter() - tick
        train_seconds += epoch_seconds
        if epoch % config.eval_every and epoch != config.epochs:
            logger.info("epoch %d loss %.4f (%.1f s)", epoch, loss, epoch_seconds)
            continue
        tick = time.perf_counter()
        metrics = evaluate_split(model, data, selection, config)
        eval_seconds = time.perf_counter() - tick
        record = {
            "epoch": epoch,
            "loss": loss,
            "train_seconds": epoch_seconds,
            "eval_seconds": eval_seconds,
            "split": selection,
            "protocol": config.protocol,
            **metrics,
        }
        history.append(record)
        run.write_metrics(history)
        value = metrics[config.metric]
        improved = value > best_value
        if improved:
            best_value, best_epoch, evaluations_without_gain = value, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            run.save_weights(best_state)
        else:
            evaluations_without_gain += 1
        logger.info(
            "epoch %d loss %.4f %s %s %.4f ndcg@20 %.4f (train %.1f s, eval %.1f s)%s",
            epoch,
            loss,
            selection,
            config.metric,
            value,
            metrics.get("ndcg@20", float("nan")),
            epoch_seconds,
            eval_seconds,
            " *" if improved else "",
        )
        if evaluations_without_gain >= config.patience:
            stopped_early = True
            logger.info("early stop: %d evaluations without gain in %s", config.patience, config.metric)
            break
    if not history:
        run.save_weights(best_state)
    model.load_state_dict(best_state)
    final: dict[str, Any] = {
        "protocol": config.protocol,
        "selection_split": selection,
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "stopped_early": stopped_early,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    if config.protocol == "paper":
        final["note"] = PAPER_PROTOCOL_NOTE
    for split in ("valid", "test"):
        if split == "valid" and data.valid is None:
            continue
        final[split] = evaluate_split(model, data, split, config)
    run.write_json(FINAL, final)
    logger.info(
        "best epoch %d; test %s",
        best_epoch,
        {k: round(v, 4) for k, v in final["test"].items() if k in ("recall@20", "ndcg@20")},
    )
    return TrainResult(run.path, best_epoch, epoch, stopped_early, history, final)
