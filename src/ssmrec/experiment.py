"""The training loop: one loop for every model and loss, with early stopping on a held-out split.

Model selection looks at the validation split unless ``protocol="paper"``, which selects on the test
split as the SSM paper and its anchors do; such runs say so in every output, because test-selected
numbers are optimistic.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ssmrec.batch import Batch
from ssmrec.config import TrainConfig, build_config
from ssmrec.data import Interactions, load_dataset
from ssmrec.errors import ConfigError, SsmrecError
from ssmrec.evaluate import evaluate_ranking
from ssmrec.losses import EpochContext, Objective, build_loss, l2_penalty
from ssmrec.models import Recommender, build_model
from ssmrec.rundir import (
    CONFIG,
    DATA,
    ENVIRONMENT,
    FINAL,
    ID_MAPS,
    LOG,
    WEIGHTS,
    RunDir,
    data_fingerprint,
    environment,
    id_maps,
)
from ssmrec.sampling import (
    NegativeSampler,
    TrainingPairs,
    TrainingSet,
    build_sampler,
)

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
    """The loss of ``config``; options it leaves unset take the loss's defaults."""
    _, num_negatives, _ = config.negative_source()
    return build_loss(
        config.loss,
        temperature=config.temperature,
        similarity=config.similarity,
        num_negatives=num_negatives,
        reduction=config.reduction,
        exclude=config.exclude,
        positive_in_denominator=config.positive_in_denominator,
        logq=config.logq,
        learn_temperature=config.learn_temperature,
        positive_temperature=config.positive_temperature,
        margin=config.margin,
        negative_weight=config.negative_weight,
        chunk_size=config.softmax_chunk_size,
        adaptive_warmup=config.adaptive_warmup,
        adaptive_scale=config.adaptive_scale,
    )


def build_optimizer(model: Recommender, objective: Objective, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the model's parameters and the loss's own (a learnable temperature), one update rule."""
    parameters = [*model.parameters(), *objective.parameters()]
    return torch.optim.Adam(parameters, lr=config.lr, fused=True)  # same update, one kernel


def build_sampler_for(config: TrainConfig, data: Interactions) -> NegativeSampler:
    """The negative source of ``config`` (see :meth:`TrainConfig.negative_source`)."""
    name, num_negatives, beta = config.negative_source()
    try:
        return build_sampler(name, TrainingSet(data.train), num_negatives, beta)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def build_model_for(config: TrainConfig, data: Interactions) -> Recommender:
    return build_model(
        config.model,
        data.train,
        dim=config.dim,
        n_layers=config.layers,
        propagation=config.propagation,
        side=config.side,
        alpha=(config.alpha[0], config.alpha[1]),
        dropout=config.message_dropout,
    )


@dataclass(frozen=True)
class TrainingSetup:
    """What a training run steps with; :func:`build_training` is the one way to build it."""

    model: Recommender
    objective: Objective
    optimizer: torch.optim.Optimizer
    sampler: NegativeSampler


def build_training(config: TrainConfig, data: Interactions) -> TrainingSetup:
    """Model, loss, Adam and negative sampler of ``config`` (built in this order: the model's random
    initialisation comes first, so a seed gives the same weights whatever the loss)."""
    model = build_model_for(config, data)
    objective = build_objective(config)
    optimizer = build_optimizer(model, objective, config)
    return TrainingSetup(model, objective, optimizer, build_sampler_for(config, data))


def load_run(
    path: str | Path, data: Interactions | None = None
) -> tuple[TrainConfig, Interactions, Recommender]:
    """Open a finished run directory: its config, its dataset and its best weights, ready to rank.

    Only what the run directory holds is used (``config.json``, ``data.json``, ``model.safetensors``)
    plus the dataset files, which must be the ones the run saw: their sha256s are compared with
    ``data.json`` so a changed file cannot silently give different numbers. ``data`` may pass an
    already loaded dataset (several runs on the same data share one load); it is checked the same way.
    """
    run = RunDir(path)
    for needed in (CONFIG, DATA, WEIGHTS):
        if not (run.path / needed).is_file():
            raise SsmrecError(f"{run.path}: not a complete run directory ({needed} is missing)")
    config = build_config(run.read_json(CONFIG), f"{run.path / CONFIG}: ")
    if data is None:
        data = load_dataset(config.data_spec())
    recorded = run.read_json(DATA)
    if recorded.get("source") != data_fingerprint(data)["source"]:
        raise SsmrecError(f"{run.path}: the dataset's files changed since the run (source hashes differ)")
    model = build_model_for(config, data)
    model.load_state_dict(run.load_weights())
    return config, data, model


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


def batch_loss(model: Recommender, objective: Objective, batch: Batch, reg: float) -> Tensor:
    """The loss of one batch: the objective on the batch's representations plus the L2 regulariser.

    The regulariser covers the ego embeddings of the batch's users, positives and sampled negatives
    (a shared negative once). Objectives that score all items (``needs_all_items``) get one full
    forward, whose item table ``batch.all_items`` returns.

    Otherwise each distinct item of the batch is encoded once and gathered after: with many negatives
    per row most ids repeat (CCL's 256 × 800 draws hit ~40 k distinct Gowalla items), so encoding and,
    for cosine objectives, normalising the distinct rows is far cheaper than normalising B × M gathered
    copies and back-propagating through them (``batch.normalized`` then tells the objective).
    Positives and negatives are gathered separately with ``index_select``, whose backward is one
    ``index_add`` (slicing one gathered tensor would zero-fill and copy all of it in the backward).
    """
    size = len(batch.users)
    items = batch.items()
    if objective.needs_all_items:
        all_users, item_table = model()
        user_repr, rows = all_users[batch.users], items
        batch = dataclasses.replace(batch, all_items=lambda: item_table)
    else:
        distinct, rows = torch.unique(items, return_inverse=True)
        user_repr, item_table = model.encode(batch.users, distinct)
        if objective.similarity == "cosine":
            user_repr, item_table = F.normalize(user_repr, dim=-1), F.normalize(item_table, dim=-1)
            batch = dataclasses.replace(batch, normalized=True)
    positive_repr = item_table.index_select(0, rows[:size])
    negative_repr = None
    if batch.negatives is not None:
        negative_repr = item_table.index_select(0, rows[size:]).reshape(*batch.negatives.shape, -1)
    loss = objective(user_repr, positive_repr, negative_repr, batch)
    if reg > 0:
        loss = loss + l2_penalty(reg, model.ego(batch.users, items), size, objective.reduction)
    return loss


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` after densifying any sparse gradient.

    The regulariser's gradient is sparse (:meth:`ssmrec.models.base.Recommender.ego`) and normally
    lands in the encoder's dense gradient; a table that got no dense gradient this step (an encoder that
    does not read it) would otherwise stop Adam, which needs dense gradients.
    """
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is not None and parameter.grad.is_sparse:
                parameter.grad = parameter.grad.to_dense()
    optimizer.step()


def train_one_epoch(
    model: Recommender,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    pairs: TrainingPairs,
    sampler: NegativeSampler,
    rng: np.random.Generator,
    config: TrainConfig,
    description: str,
) -> float:
    """One pass over the training pairs; returns the mean batch loss (regulariser included).

    ``sampler`` gives every batch its negatives (:mod:`ssmrec.sampling.negatives`); the objective gets
    them, with the batch's ids, through one :class:`ssmrec.batch.Batch`.
    """
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
        batch = Batch.build(
            users, positives, sampler.sample(users, positives, rng), training=sampler.training
        )
        loss = batch_loss(model, objective, batch, config.reg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(optimizer)
        total += float(loss.detach())
        batches += 1
    return total / max(1, batches)


def train(config: TrainConfig, data: Interactions | None = None) -> TrainResult:
    """Train ``config``'s model on its data and write a complete run directory.

    Everything that can be rejected (the config, the data, an empty selection split, an occupied output
    folder) is checked before the run directory is created, so a refused run leaves nothing behind.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    if data is None:
        data = load_dataset(config.data_spec())
    load_seconds = time.perf_counter() - started
    if config.selection_split == "valid" and (data.valid is None or data.valid.nnz == 0):
        raise ConfigError(
            "the standard protocol selects on a validation split, but the data has none"
            + ("" if data.valid is None else " (the carved split is empty: users have too few items)")
            + "; set a larger --valid-ratio or use --protocol paper"
        )
    run = RunDir.create(config.output or Path("runs") / (config.name or default_run_name(config)))
    handler = _attach_log(run.path / LOG)
    try:
        if config.protocol == "paper":
            logger.warning("%s", PAPER_PROTOCOL_NOTE)
        logger.info("data %s: %s (loaded in %.2f s)", data.name, data.counts(), load_seconds)
        return _train(config, data, run, started)
    finally:
        logger.removeHandler(handler)
        handler.close()


def _sigterm_interrupts() -> tuple[bool, Any]:
    """Make SIGTERM raise ``KeyboardInterrupt``; returns whether it did, and the handler to restore.

    So ``kill`` or a job scheduler's stop request finalises a run (best weights, final metrics) as
    Ctrl-C does, instead of leaving it without them. Handlers can only be installed from the main
    thread; elsewhere SIGTERM keeps its meaning.
    """
    if threading.current_thread() is not threading.main_thread():
        return False, None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return True, signal.SIG_DFL if previous is None else previous  # None: a handler not set from Python


def _stop_reason(stopped_early: bool, interrupted: bool, out_of_time: bool) -> str:
    """Why training ended, for final_metrics.json and the grid table."""
    if interrupted:
        return "interrupted"
    if stopped_early:
        return "early stop"
    return "time budget" if out_of_time else "max epochs"


def _train(config: TrainConfig, data: Interactions, run: RunDir, started: float) -> TrainResult:
    rng = seed_everything(config.seed)
    run.write_json(CONFIG, config.to_dict())
    run.write_json(DATA, data_fingerprint(data))
    run.write_json(ENVIRONMENT, environment())
    run.write_json(ID_MAPS, id_maps(data))
    selection = config.selection_split
    torch.manual_seed(config.seed)
    setup = build_training(config, data)
    model, objective, optimizer, sampler = setup.model, setup.objective, setup.optimizer, setup.sampler
    pairs = TrainingPairs(data.train)
    logger.info(
        "model %s, loss %s, %d training pairs, %d batches of %d per epoch",
        config.model if config.model == "mf" else f"{config.model} ({config.layers} layers)",
        config.loss,
        len(pairs),
        pairs.n_batches(config.batch_size),
        config.batch_size,
    )
    logger.info("objective %r, negatives %r", objective, sampler)

    history: list[dict[str, Any]] = []
    best_value, best_epoch, best_state = -float("inf"), 0, copy.deepcopy(model.state_dict())
    evaluations_without_gain, stopped_early, epoch = 0, False, 0
    train_seconds = 0.0
    interrupted, completed, out_of_time = False, 0, False
    budget = None if config.max_minutes is None else time.perf_counter() + 60 * config.max_minutes
    sigterm_installed, previous_sigterm = _sigterm_interrupts()
    try:  # Ctrl-C or SIGTERM ends training but still finalises the run with the best weights so far
        for epoch in range(1, config.epochs + 1):
            tick = time.perf_counter()
            objective.begin_epoch(EpochContext(epoch, model, data.train))
            loss = train_one_epoch(
                model, objective, optimizer, pairs, sampler, rng, config, f"epoch {epoch}/{config.epochs}"
            )
            epoch_seconds = time.perf_counter() - tick
            train_seconds += epoch_seconds
            completed = epoch
            out_of_time = budget is not None and time.perf_counter() >= budget
            if epoch % config.eval_every and epoch != config.epochs and not out_of_time:
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
            if out_of_time:
                logger.info("time budget of %g minutes reached after epoch %d", config.max_minutes, epoch)
                break
    except KeyboardInterrupt:
        interrupted, epoch = True, completed
        logger.warning("interrupted: finishing the run with the best weights so far (epoch %d)", best_epoch)
    finally:
        if sigterm_installed:
            signal.signal(signal.SIGTERM, previous_sigterm)
    if not history:
        run.save_weights(best_state)
    model.load_state_dict(best_state)
    final: dict[str, Any] = {
        "protocol": config.protocol,
        "selection_split": selection,
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "stopped_early": stopped_early,
        "interrupted": interrupted,
        "stopped_by": _stop_reason(stopped_early, interrupted, out_of_time),
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
