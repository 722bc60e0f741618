"""The trainer: one loop for every model and loss, with explicit state that can be saved and restored.

A :class:`Trainer` owns a model, its objective, Adam, the negative sampler and the run's random
generator, plus a :class:`TrainerState` (epoch, position inside an epoch, early stopping, history,
elapsed seconds). Its steps are public so other drivers (benchmarks, tuning, several processes) reuse
them: :meth:`Trainer.train_epoch`, :meth:`Trainer.evaluate`, :meth:`Trainer.checkpoint_state` /
:meth:`Trainer.restore`, and :meth:`Trainer.fit`, the early-stopping loop.

Resuming is exact: everything a later step reads is in the checkpoint (weights, Adam moments and
step counts, the loss's own state such as Adap-τ's per-user temperatures or a learnable τ, every
RNG state, the shuffled order and position of an epoch in progress), so a run stopped at any point
and resumed gives the same losses and metrics to the last digit as one that never stopped.

A stop request (Ctrl-C, SIGTERM: see :mod:`ssmrec.experiment`) is honoured after the current
step, never inside one, so the state saved is always between two steps.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ssmrec import faults
from ssmrec.batch import Batch
from ssmrec.data import Interactions
from ssmrec.errors import SsmrecError
from ssmrec.losses import EpochContext, Objective, l2_penalty
from ssmrec.models import Recommender
from ssmrec.sampling import NegativeSampler, TrainingPairs

logger = logging.getLogger("ssmrec")


class StopRun(Exception):
    """Raised by a hook's ``evaluated`` to end the run after this evaluation (a tuner pruning a poor
    trial); the run finishes normally with ``stopped_by = reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NonFiniteError(SsmrecError):
    """A loss term, gradient or parameter became NaN or ±inf: training cannot continue from here."""

    def __init__(self, message: str, epoch: int, batch: int, term: str) -> None:
        super().__init__(message)
        self.epoch, self.batch, self.term = epoch, batch, term


@dataclass(frozen=True)
class TrainingSetup:
    """What a training run steps with; :func:`ssmrec.experiment.build_training` builds it."""

    model: Recommender
    objective: Objective
    optimizer: torch.optim.Optimizer
    sampler: NegativeSampler


@dataclass(frozen=True)
class Schedule:
    """The settings the loop itself reads (from :class:`ssmrec.config.TrainConfig`'s parts)."""

    batch_size: int
    reg: float
    epochs: int
    eval_every: int
    patience: int
    metric: str
    max_minutes: float | None = None
    checkpoint_every: int = 1
    progress: bool = False
    precision: str = "fp32"
    """``bf16``: the forward and loss run under bf16 autocast (weights, gradients and Adam stay fp32)."""


@dataclass(frozen=True)
class StepLoss:
    """One batch's loss, by term, so a non-finite value can be traced to the objective or the regulariser."""

    objective: Tensor
    penalty: Tensor | None

    @property
    def total(self) -> Tensor:
        return self.objective if self.penalty is None else self.objective + self.penalty


@dataclass
class TrainerState:
    """Everything about a run's progress that is not a tensor (saved as JSON in a checkpoint)."""

    epoch: int = 0
    """Completed epochs."""
    step: int = 0
    """Batches done in the epoch in progress (0: none in progress)."""
    epoch_loss_sum: float = 0.0
    """Sum of the batch losses of the epoch in progress (float64, exact across a resume)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    evaluations_without_gain: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    stopped_by: str | None = None
    """Why the loop ended: early stop, max epochs, time budget, interrupted, non-finite loss."""

    @property
    def elapsed_seconds(self) -> float:
        return self.train_seconds + self.eval_seconds


class Hooks(Protocol):
    """What the trainer tells its run (the experiment layer writes the run directory from these)."""

    def evaluated(self, history: list[dict[str, Any]]) -> None: ...
    def improved(self, best: dict[str, Tensor]) -> None: ...
    def checkpoint(self, trainer: Trainer) -> None: ...


def batch_loss(model: Recommender, objective: Objective, batch: Batch, reg: float) -> StepLoss:
    """The loss of one batch: the objective on the batch's representations plus the L2 regulariser.

    The regulariser covers the ego embeddings of the batch's users, positives and sampled negatives
    (a shared negative once). Representations come from :func:`encode_batch`.
    """
    user_repr, positive_repr, negative_repr, batch = encode_batch(model, objective, batch)
    loss = objective(user_repr, positive_repr, negative_repr, batch)
    penalty = None
    if reg > 0:
        ego = model.ego(batch.users, batch.items())
        penalty = l2_penalty(reg, ego, len(batch.users), objective.reduction)
    return StepLoss(loss, penalty)


def encode_batch(
    model: Recommender, objective: Objective, batch: Batch
) -> tuple[Tensor, Tensor, Tensor | None, Batch]:
    """(users, positives, negatives) representations of ``batch`` as ``objective`` takes them, and the
    batch with what the objective must know about them (``all_items``, ``normalized``).

    Objectives that score all items (``needs_all_items``) get one full forward, whose item table
    ``batch.all_items`` returns.

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
        if items.device.type == "cpu":
            distinct, rows = torch.unique(items, return_inverse=True)
        else:  # unique's output size would cost a host sync per step; gathering duplicates is cheap there
            distinct, rows = items, torch.arange(len(items), device=items.device)
        user_repr, item_table = model.encode(batch.users, distinct)
        if objective.similarity == "cosine":
            user_repr, item_table = F.normalize(user_repr, dim=-1), F.normalize(item_table, dim=-1)
            batch = dataclasses.replace(batch, normalized=True)
    positive_repr = item_table.index_select(0, rows[:size])
    negative_repr = None
    if batch.negatives is not None:
        negative_repr = item_table.index_select(0, rows[size:]).reshape(*batch.negatives.shape, -1)
    return user_repr, positive_repr, negative_repr, batch


class Replicas(Protocol):
    """How a step is shared among processes: one (:class:`SingleProcess`) or several
    (:class:`ssmrec.parallel.DataParallel`). Every rank holds the same replicated state and calls
    these at the same points, so each is free to be a collective."""

    def batch_loss(self, model: Recommender, objective: Objective, batch: Batch, reg: float) -> StepLoss:
        """This process's part of the loss of the (global) ``batch``; the parts sum to its loss."""
        ...

    def loss_value(self, loss: StepLoss) -> float:
        """The batch's whole loss (the sum of every process's part)."""
        ...

    def sum_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Make each gradient the gradient of the whole batch's loss."""
        ...

    def agree(self, flag: bool) -> bool:
        """One process's decision (stop, time budget) for all."""
        ...


class SingleProcess:
    """The plain run: the whole batch here, nothing to combine."""

    def batch_loss(self, model: Recommender, objective: Objective, batch: Batch, reg: float) -> StepLoss:
        return batch_loss(model, objective, batch, reg)

    def loss_value(self, loss: StepLoss) -> float:
        return float(loss.total.detach())

    def sum_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        return None

    def agree(self, flag: bool) -> bool:
        return flag


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


def gradient_norm(optimizer: torch.optim.Optimizer) -> Tensor | None:
    """One fused norm over every gradient (NaN or inf propagate into it); ``None`` without gradients."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, foreach=True) if grads else None


def gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient is finite."""
    norm = gradient_norm(optimizer)
    return norm is None or bool(torch.isfinite(norm))


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return the generator that drives all sampling of a run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


class Trainer:
    """Trains ``setup`` on ``data`` with ``schedule``; ``evaluate(model)`` gives selection metrics.

    ``pairs`` (default: every training pair) is what one epoch visits. ``should_stop()`` is polled
    after every step; when it returns true the epoch pauses at that step and :meth:`fit` returns with
    ``stopped_by = "interrupted"`` (the state then resumes inside the epoch). ``replicas`` shares each
    step among processes (default: this one alone); stop requests and the time budget are then rank 0's.
    """

    def __init__(
        self,
        setup: TrainingSetup,
        data: Interactions,
        schedule: Schedule,
        rng: np.random.Generator,
        evaluate: Callable[[Recommender], dict[str, float]] | None = None,
        pairs: TrainingPairs | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        replicas: Replicas | None = None,
    ) -> None:
        self.model, self.objective = setup.model, setup.objective
        self.optimizer, self.sampler = setup.optimizer, setup.sampler
        self.data = data
        self.schedule = schedule
        self.rng = rng
        self._evaluate = evaluate
        self.pairs = pairs if pairs is not None else TrainingPairs(data.train)
        self.replicas: Replicas = replicas if replicas is not None else SingleProcess()
        self.should_stop = lambda: self.replicas.agree(should_stop())
        self.state = TrainerState()
        self.record_fields: dict[str, Any] = {}
        """Constant fields added to every history record (the experiment adds the protocol)."""
        self.best_weights: dict[str, Tensor] = copy.deepcopy(self.model.state_dict())
        self._order: np.ndarray | None = None
        self.device = next(self.model.parameters()).device
        """Where the model lives; batches are built on the host and copied there (:meth:`Batch.to`)."""
        self.sync_free = self.device.type != "cpu" and isinstance(self.replicas, SingleProcess)
        """Steps without a host synchronisation (:class:`DeferredChecks`): on for accelerators. The CPU
        path reads and checks each loss at once (tests turn this on there to check the deferred path).
        Several processes synchronise at every step anyway (the gradient all-reduce, the loss value
        summed over ranks), so they take the checked path."""
        self._deferred: DeferredChecks | None = None

    # --------------------------------------------------------------------------------------- steps

    def train_epoch(self, description: str = "") -> float | None:
        """Run (the rest of) the current epoch; its mean batch loss, or ``None`` if a stop was requested.

        Raises :class:`NonFiniteError` at the first non-finite loss term or gradient.
        """
        state, size = self.state, self.schedule.batch_size
        epoch = state.epoch + 1
        if state.step == 0:
            self.objective.begin_epoch(EpochContext(epoch, self.model, self.data.train))
            self._order = self.pairs.epoch_order(self.rng)
        assert self._order is not None
        self.model.train()
        total_batches = self.pairs.n_batches(size)
        bar = tqdm(
            total=total_batches,
            initial=state.step,
            desc=description or f"epoch {epoch}",
            leave=False,
            disable=not self.schedule.progress,
        )
        tick = time.perf_counter()
        try:
            while state.step < total_batches:
                users, positives = self.pairs.batch(self._order, state.step, size)
                negatives = self.sampler.sample(users, positives, self.rng)
                batch = Batch.build(users, positives, negatives, training=self.sampler.training)
                if not self.sync_free:
                    state.epoch_loss_sum += self._step(batch, epoch, state.step + 1)
                else:
                    self._device_step(batch.to(self.device), epoch, state.step + 1, total_batches)
                state.step += 1
                bar.update()
                faults.point("step")
                if state.step < total_batches and self.should_stop():
                    self._settle(epoch)
                    return None
            self._settle(epoch)
        finally:
            state.train_seconds += time.perf_counter() - tick
            bar.close()
        self._check_parameters(epoch)
        mean = state.epoch_loss_sum / max(1, total_batches)
        state.epoch, state.step, state.epoch_loss_sum, self._order = epoch, 0, 0.0, None
        return mean

    def _loss(self, batch: Batch) -> StepLoss:
        """This process's part of the batch loss (all of it in a single process), in the precision."""
        if self.schedule.precision == "fp32":
            return self.replicas.batch_loss(self.model, self.objective, batch, self.schedule.reg)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return self.replicas.batch_loss(self.model, self.objective, batch, self.schedule.reg)

    def _step(self, batch: Batch, epoch: int, index: int) -> float:
        loss = self._loss(batch)
        value = self.replicas.loss_value(loss)
        if not math.isfinite(value):
            term = "objective" if not torch.isfinite(loss.objective.detach()) else "regulariser"
            raise NonFiniteError(f"non-finite {term} ({value})", epoch, index, term)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        self.replicas.sum_gradients(self.optimizer)
        if not gradients_finite(self.optimizer):
            raise NonFiniteError("non-finite gradient", epoch, index, "gradient")
        optimizer_step(self.optimizer)
        return value

    def _device_step(self, batch: Batch, epoch: int, index: int, total_batches: int) -> None:
        """:meth:`_step` without a host synchronisation: the loss is summed and its finiteness recorded
        on the device (:class:`DeferredChecks`), looked at every ``DeferredChecks.every`` steps."""
        if self._deferred is None:
            self._deferred = DeferredChecks(self.device, self.state.epoch_loss_sum, index, total_batches)
        loss = self._loss(batch)
        self._deferred.record_loss(index, loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        norm = gradient_norm(self.optimizer)
        if norm is not None:
            self._deferred.record_gradient(index, norm)
        optimizer_step(self.optimizer)
        if index % DeferredChecks.every == 0:
            self._deferred.raise_if_non_finite(epoch)

    def _settle(self, epoch: int) -> None:
        """Bring the device's loss sum into the state (before it is reported or checkpointed), after
        checking the steps not yet checked; nothing to do on the CPU."""
        if self._deferred is None:
            return
        deferred, self._deferred = self._deferred, None
        deferred.raise_if_non_finite(epoch)
        self.state.epoch_loss_sum = deferred.total()

    def _check_parameters(self, epoch: int) -> None:
        for name, tensor in [*self.model.named_parameters(), *self.objective.named_parameters()]:
            if not torch.isfinite(tensor.detach()).all():
                raise NonFiniteError(f"non-finite parameter {name}", epoch, 0, "parameter")

    def evaluate(self) -> dict[str, float]:
        """Selection metrics of the current weights, recorded in the history with the epoch's loss."""
        if self._evaluate is None:
            raise ValueError("this trainer was built without an evaluation function")
        faults.point("evaluate")
        tick = time.perf_counter()
        metrics = self._evaluate(self.model)
        self.state.eval_seconds += time.perf_counter() - tick
        return metrics

    def out_of_time(self) -> bool:
        budget = self.schedule.max_minutes
        return budget is not None and self.replicas.agree(self.state.elapsed_seconds >= 60 * budget)

    # ---------------------------------------------------------------------------------------- loop

    def fit(self, hooks: Hooks, split: str = "valid") -> TrainerState:
        """Train until early stopping, the epoch limit, the time budget or a stop request.

        After each evaluation ``hooks.evaluated(history)`` (and ``hooks.improved(best)`` on a gain; a
        :class:`StopRun` raised by ``evaluated`` ends the loop there); every
        ``checkpoint_every`` epochs, and when a stop is requested, ``hooks.checkpoint(self)``.
        """
        state, schedule = self.state, self.schedule
        while state.stopped_by is None:
            if state.epoch >= schedule.epochs:
                state.stopped_by = "max epochs"
                break
            if self.should_stop():
                state.stopped_by = "interrupted"
                hooks.checkpoint(self)
                break
            epoch_started = state.train_seconds
            loss = self.train_epoch()
            if loss is None:
                state.stopped_by = "interrupted"
                hooks.checkpoint(self)
                break
            epoch, epoch_seconds = state.epoch, state.train_seconds - epoch_started
            out_of_time = self.out_of_time()
            if epoch % schedule.eval_every and epoch != schedule.epochs and not out_of_time:
                logger.info("epoch %d loss %.4f (%.1f s)", epoch, loss, epoch_seconds)
            else:
                evaluated_before = state.eval_seconds
                metrics = self.evaluate()
                try:
                    self._record(
                        metrics, loss, epoch_seconds, state.eval_seconds - evaluated_before, split, hooks
                    )
                except StopRun as stop:
                    state.stopped_by = stop.reason
                    logger.info("stopped after epoch %d: %s", epoch, stop.reason)
                if state.stopped_by is not None:
                    pass
                elif state.evaluations_without_gain >= schedule.patience:
                    state.stopped_by = "early stop"
                    logger.info(
                        "early stop: %d evaluations without gain in %s", schedule.patience, schedule.metric
                    )
                elif out_of_time:
                    state.stopped_by = "time budget"
                    logger.info(
                        "time budget of %g minutes reached after epoch %d", schedule.max_minutes, epoch
                    )
            if epoch % schedule.checkpoint_every == 0 or state.stopped_by is not None:
                hooks.checkpoint(self)
        return state

    def _record(
        self,
        metrics: dict[str, float],
        loss: float,
        epoch_seconds: float,
        eval_seconds: float,
        split: str,
        hooks: Hooks,
    ) -> None:
        state = self.state
        record = {
            "epoch": state.epoch,
            "loss": loss,
            "train_seconds": epoch_seconds,
            "eval_seconds": eval_seconds,
            "split": split,
            **self.record_fields,
            **metrics,
        }
        state.history.append(record)
        value = metrics[self.schedule.metric]
        if not math.isfinite(value):
            raise NonFiniteError(f"non-finite {self.schedule.metric} ({value})", state.epoch, 0, "metric")
        improved = state.best_value is None or value > state.best_value
        if improved:
            state.best_value, state.best_epoch, state.evaluations_without_gain = value, state.epoch, 0
            self.best_weights = copy.deepcopy(self.model.state_dict())
            hooks.improved(self.best_weights)
        else:
            state.evaluations_without_gain += 1
        hooks.evaluated(state.history)
        logger.info(
            "epoch %d loss %.4f %s %s %.4f ndcg@20 %.4f (train %.1f s, eval %.1f s)%s",
            state.epoch,
            loss,
            split,
            self.schedule.metric,
            value,
            metrics.get("ndcg@20", float("nan")),
            epoch_seconds,
            eval_seconds,
            " *" if improved else "",
        )

    # ------------------------------------------------------------------------------ checkpointing

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """(JSON state, tensors) from which :meth:`restore` rebuilds this trainer exactly."""
        tensors: dict[str, Tensor] = {}
        tensors.update({f"model.{k}": v for k, v in self.model.state_dict().items()})
        tensors.update({f"best.{k}": v for k, v in self.best_weights.items()})
        tensors.update({f"objective.{k}": v for k, v in self.objective.checkpoint_tensors().items()})
        optimizer = self.optimizer.state_dict()
        for index, values in optimizer["state"].items():
            for key, value in values.items():
                if not isinstance(value, Tensor):
                    raise TypeError(f"optimizer state {key} is not a tensor")  # Adam's are all tensors
                tensors[f"optimizer.{index}.{key}"] = value
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":  # dropout draws on the GPU (NGCF); resumes exactly on the same kind
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        if self._order is not None:
            tensors["epoch.order"] = torch.from_numpy(self._order)
        python_state = random.getstate()
        json_state = {
            "trainer": dataclasses.asdict(self.state),
            "optimizer_groups": optimizer["param_groups"],
            "rng": {
                "numpy_generator": self.rng.bit_generator.state,
                "numpy_legacy": _legacy_numpy_state(),
                "python": [python_state[0], list(python_state[1]), python_state[2]],
            },
            "objective": self.objective.checkpoint_values(),
        }
        return json_state, tensors

    def restore(self, state: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """Continue exactly where :meth:`checkpoint_state` was taken."""

        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        try:
            self.model.load_state_dict(part("model."))
            self.best_weights = {k: v.clone() for k, v in part("best.").items()}
            self.objective.restore_checkpoint(part("objective."), state.get("objective", {}))
            optimizer_state: dict[int, dict[str, Tensor]] = {}
            for key, value in part("optimizer.").items():
                index, _, name = key.partition(".")
                optimizer_state.setdefault(int(index), {})[name] = value
            self.optimizer.load_state_dict(
                {"state": optimizer_state, "param_groups": state["optimizer_groups"]}
            )
        except (KeyError, RuntimeError, ValueError) as error:
            raise SsmrecError(
                f"the checkpoint does not fit this run's model, loss or optimiser: {error}"
            ) from error
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        rng = state["rng"]
        self.rng.bit_generator.state = rng["numpy_generator"]
        _set_legacy_numpy_state(rng["numpy_legacy"])
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        self.state = TrainerState(**state["trainer"])
        self._deferred = None
        order = tensors.get("epoch.order")
        self._order = None if order is None else order.numpy().copy()
        if self.state.step and self._order is None:
            raise SsmrecError("the checkpoint stops inside an epoch but lacks that epoch's order")


class DeferredChecks:
    """The epoch's loss sum and per-step finiteness, kept on the device so no step waits for the host.

    On the CPU the trainer reads every loss as a float and checks it before the backward, stopping at
    the first non-finite term with the weights still finite. Doing that on a GPU costs a host round
    trip per step (the GPU idles while Python waits for one number). Here the loss is added to a
    float64 device scalar (the same IEEE float64 additions as the CPU's ``float`` sum, so a checkpoint
    holds the same value) and each step's finiteness of the objective, the total and the gradient norm
    goes into a per-step flag table; every :attr:`every` steps, and before the epoch's loss is read or
    checkpointed, one synchronisation looks at the flags. The trade-off: up to ``every - 1`` optimiser
    steps may run after the first non-finite value (the weights are then NaN), but the error names the
    same epoch, batch and term as on the CPU, and the last good checkpoint and best weights are untouched.
    """

    every = 64

    def __init__(self, device: torch.device, start: float, first_step: int, total_batches: int) -> None:
        self.sum = torch.tensor(start, dtype=torch.float64, device=device)
        self.first = first_step  # 1-based index of the first step not yet checked
        self.last = first_step - 1
        # per step (1-based index): objective, total and gradient norm are finite
        self.finite = torch.ones((total_batches + 1, 3), dtype=torch.bool, device=device)

    def record_loss(self, index: int, loss: StepLoss) -> None:
        total = loss.total.detach()
        self.sum += total.double()
        self.finite[index, 0] = torch.isfinite(loss.objective.detach())
        self.finite[index, 1] = torch.isfinite(total)
        self.last = index

    def record_gradient(self, index: int, norm: Tensor) -> None:
        self.finite[index, 2] = torch.isfinite(norm)

    def raise_if_non_finite(self, epoch: int) -> None:
        """Raise :class:`NonFiniteError` for the first step since the last check with a non-finite value."""
        window = self.finite[self.first : self.last + 1]
        self.first = self.last + 1
        if bool(window.all()):
            return
        bad = (~window).nonzero()[0].tolist()
        index, column = self.first - len(window) + bad[0], bad[1]
        if column < 2:
            term = "objective" if not bool(window[bad[0], 0]) else "regulariser"
            raise NonFiniteError(f"non-finite {term}", epoch, index, term)
        raise NonFiniteError("non-finite gradient", epoch, index, "gradient")

    def total(self) -> float:
        return float(self.sum)


def _legacy_numpy_state() -> dict[str, Any]:
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": position, "has_gauss": has_gauss, "cached": cached}


def _set_legacy_numpy_state(state: dict[str, Any]) -> None:
    np.random.set_state(
        (
            state["name"],
            np.asarray(state["keys"], dtype=np.uint32),
            state["pos"],
            state["has_gauss"],
            state["cached"],
        )
    )
