"""Experiments: build a run from a config, own its run directory, train, resume, finish, reload.

This is the layer between the trainer (:mod:`ssmrec.trainer`, which knows nothing of files) and the
commands. It builds the model, loss, Adam and sampler from a :class:`ssmrec.config.TrainConfig`
(:func:`build_training`), writes and checkpoints the run directory, handles stop requests, and
reopens finished runs for evaluation and analysis (:func:`load_run`).

Model selection looks at the validation split unless ``protocol="paper"``, which selects on the test
split as the SSM paper and its anchors do; such runs say so in every output, because test-selected
numbers are optimistic. ``protocol="refit"`` (``ssmrec tune --refit``) trains on train + validation for a
number of epochs chosen on validation before, and evaluates the test split once, after the last epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssmrec import checkpoint, distributed, faults
from ssmrec.config import TrainConfig, build_config, upgrade_legacy
from ssmrec.data import Interactions, load_dataset
from ssmrec.device import describe_device, deterministic_mode, device_summary, resolve_device
from ssmrec.errors import ConfigError, SsmrecError, StorageError, describe_os_error
from ssmrec.evaluate import metric_means, ranking_sums
from ssmrec.losses import Objective, build_loss
from ssmrec.models import Recommender, build_model
from ssmrec.parallel import DataParallel
from ssmrec.rundir import (
    CONFIG,
    DATA,
    ENVIRONMENT,
    FINAL,
    ID_MAPS,
    LOG,
    METRICS,
    WEIGHTS,
    RunDir,
    data_fingerprint,
    environment,
    id_maps,
)
from ssmrec.sampling import NegativeSampler, TrainingSet, build_sampler
from ssmrec.trainer import NonFiniteError, Schedule, Trainer, TrainerState, TrainingSetup, seed_everything

logger = logging.getLogger("ssmrec")

PAPER_PROTOCOL_NOTE = (
    "paper protocol: the best epoch was chosen on the TEST split, as the SSM paper and its baselines "
    "do; these test numbers are optimistic and not a held-out estimate"
)

REFIT_PROTOCOL_NOTE = (
    "refit protocol: trained on train + validation for a fixed number of epochs chosen on the validation "
    "split; the test split was evaluated once, after the last epoch"
)

EXIT_CODES = {"interrupted": 130, "non-finite loss": 3}
"""Exit status of ``ssmrec train`` by ``stopped_by`` (0 for a run that finished its schedule)."""

CONTINUABLE_STOPS = ("interrupted", "non-finite loss", "time budget")
"""Why a run ended when it keeps its last checkpoint without ``--keep-checkpoint``: it was stopped
by a person or a fault, or by its time budget (the limit of a machine, not of the experiment; a
long run on a small machine is continued with ``--resume RUN --max-minutes M``)."""

RESUMABLE_CHANGES = {
    ("optim", "epochs"),
    ("optim", "max_minutes"),
    ("optim", "patience"),
    ("run", "progress"),
    ("run", "threads"),
    ("run", "keep_checkpoint"),
    ("run", "checkpoint_every"),
    ("run", "device"),
    ("run", "deterministic"),
    ("run", "dist_timeout"),
}
"""Settings ``--resume`` may change: they extend or report a run, never change what it computed."""


@dataclass
class TrainResult:
    """What a finished run reports; the same content is in the run directory."""

    run_dir: Path
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    primary: bool = True
    """This process reports the run (false on ranks other than 0 of a several-process run)."""

    @property
    def stopped_by(self) -> str:
        return str(self.final.get("stopped_by"))

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.stopped_by, 0)


@dataclass(frozen=True)
class RunWatch:
    """How a driver (the tuner) follows a run; nothing here changes what the run computes.

    ``evaluated(history)`` is called after each evaluation has been written to the run directory and may
    raise :class:`ssmrec.trainer.StopRun` to end the run there (a pruned trial). ``final_splits`` are
    the splits the final evaluation reports: tuning trials leave the test split out, so nothing a tuner
    reads holds a test number.
    """

    evaluated: Callable[[list[dict[str, Any]]], None] | None = None
    final_splits: tuple[str, ...] = ("valid", "test")


def default_run_name(config: TrainConfig) -> str:
    data_name = config.data.dataset or Path(config.data.path or "data").name
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    layers = "" if config.model.layers is None else config.model.layers
    return f"{data_name}-{config.model.name}{layers}-{config.loss.name}-{stamp}"


# ------------------------------------------------------------------------------------------ building


def build_objective(config: TrainConfig) -> Objective:
    """The loss of ``config`` with exactly the options its resolved spec holds."""
    return build_loss(config.loss.name, **config.loss.objective_options())


def build_optimizer(model: Recommender, objective: Objective, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the model's parameters and the loss's own (a learnable temperature), one update rule."""
    parameters = [*model.parameters(), *objective.parameters()]
    return torch.optim.Adam(parameters, lr=config.optim.lr, fused=True)  # same update, one kernel


def build_sampler_for(config: TrainConfig, data: Interactions) -> NegativeSampler:
    """The negative source of ``config`` (see :meth:`ssmrec.config.LossSpec.negative_source`)."""
    name, num_negatives, beta = config.loss.negative_source()
    try:
        return build_sampler(name, TrainingSet(data.train), num_negatives, beta)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def build_model_for(config: TrainConfig, data: Interactions) -> Recommender:
    spec = config.model
    options: dict[str, Any] = {"dim": spec.dim, "n_layers": spec.layers}
    if spec.propagation is not None:
        options["propagation"] = spec.propagation
    if spec.alpha is not None:
        options["alpha"] = (spec.alpha[0], spec.alpha[1])
    if spec.side is not None:
        options["side"] = spec.side
    if spec.message_dropout is not None:
        options["dropout"] = spec.message_dropout
    return build_model(spec.name, data.train, **options)


def build_training(
    config: TrainConfig, data: Interactions, device: torch.device | None = None
) -> TrainingSetup:
    """Model, loss, Adam and negative sampler of ``config`` (built in this order: the model's random
    initialisation comes first, so a seed gives the same weights whatever the loss). The model and the
    loss are initialised on the CPU, then moved to ``device`` (default CPU): the same weights anywhere."""
    model = build_model_for(config, data)
    objective = build_objective(config)
    if device is not None and device.type != "cpu":
        model, objective = model.to(device), objective.to(device)
    optimizer = build_optimizer(model, objective, config)
    return TrainingSetup(model, objective, optimizer, build_sampler_for(config, data))


def schedule_of(config: TrainConfig) -> Schedule:
    """The loop settings of ``config``."""
    optim = config.optim
    return Schedule(
        batch_size=optim.batch_size,
        reg=optim.reg,
        epochs=optim.epochs,
        eval_every=optim.eval_every,
        patience=optim.patience,
        metric=config.evaluation.metric,
        max_minutes=optim.max_minutes,
        checkpoint_every=config.run.checkpoint_every,
        progress=_show_progress(config),
        precision=optim.precision,
    )


def build_trainer(
    config: TrainConfig,
    data: Interactions,
    should_stop: Any = lambda: False,
    device: torch.device | None = None,
) -> Trainer:
    """A fresh trainer for ``config``: seeds everything, then builds (the order fixes the weights).
    ``device``: where it trains (default: ``config.run.device`` resolved)."""
    rng = seed_everything(config.optim.seed)
    setup = build_training(config, data, device or resolve_device(config.run.device))
    split = config.evaluated_split
    context = distributed.current()  # several processes: every rank builds the same replica
    trainer = Trainer(
        setup,
        data,
        schedule_of(config),
        rng,
        evaluate=lambda model: evaluate_split(model, data, split, config),
        should_stop=should_stop,
        replicas=DataParallel(context) if context.active else None,
    )
    trainer.record_fields = {"protocol": config.protocol}
    return trainer


# --------------------------------------------------------------------------------------- evaluation


def exclusions(data: Interactions, split: str) -> list:
    """Items never to recommend when evaluating ``split``: training items, and validation items for test."""
    if split == "test" and data.valid is not None:
        return [data.train, data.valid]
    return [data.train]


def evaluate_split(
    model: Recommender, data: Interactions, split: str, config: TrainConfig
) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on ``split`` (``valid`` or ``test``).

    With several processes each ranks its shard of the users and the float64 metric sums and user
    counts are added over ranks before the one division: the single-process metrics, never a mean of
    per-rank means.
    """
    truth = data.valid if split == "valid" else data.test
    if truth is None:
        raise ValueError(f"the data has no {split} split")
    users, items = model.representations()
    context = distributed.current()
    sums, count = ranking_sums(
        users,
        items,
        truth,
        exclude=exclusions(data, split),
        ks=config.evaluation.ks,
        score=config.evaluation.rank_by,
        chunk_size=config.evaluation.eval_chunk_size,
        progress=_show_progress(config),
        shard=(context.rank, context.world_size),
    )
    if context.active:
        names = list(sums)
        total = context.sum(torch.tensor([*(sums[n] for n in names), count], dtype=torch.float64))
        sums, count = dict(zip(names, total[:-1].tolist(), strict=True)), int(total[-1])
    return metric_means(sums, count)


def _show_progress(config: TrainConfig) -> bool:
    return config.run.progress and sys.stderr.isatty() and distributed.current().is_main


def check_evaluable(config: TrainConfig, data: Interactions) -> None:
    """Refuse a run whose selection or test split has nothing to evaluate (it would write NaN metrics)."""
    for split in dict.fromkeys((config.evaluated_split, "test")):
        matrix = data.valid if split == "valid" else data.test
        if matrix is None or matrix.nnz == 0:
            if split == "valid":
                raise ConfigError(
                    "the standard protocol selects on a validation split, but the data has none"
                    + ("" if matrix is None else " (the carved split is empty: users have too few items)")
                    + "; set a larger --valid-ratio or use --protocol paper"
                )
            dropped = data.report.dropped_eval_pairs
            reason = (
                f" after dropping pairs of users or items unseen in training ({dropped})" if dropped else ""
            )
            raise ConfigError(
                f"the test split of {data.name} is empty{reason}: nothing to evaluate; give data with "
                "held-out interactions, or unsplit data to split (--split, --test-ratio)"
            )


# ---------------------------------------------------------------------------------- run directory


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class NoHooks:
    """The hooks of ranks other than 0: they compute everything and write nothing."""

    def evaluated(self, history: list[dict[str, Any]]) -> None:
        return None

    def improved(self, best: dict[str, Tensor]) -> None:
        return None

    def checkpoint(self, trainer: Trainer) -> None:
        return None


class RunHooks:
    """The trainer's hooks for one run directory: metrics, best weights, checkpoints."""

    def __init__(self, run: RunDir, config: TrainConfig, watch: RunWatch | None = None) -> None:
        self.run, self.config, self.watch = run, config, watch or RunWatch()

    def evaluated(self, history: list[dict[str, Any]]) -> None:
        self.run.write_metrics(history)
        if self.watch.evaluated is not None:
            self.watch.evaluated(history)

    def improved(self, best: dict[str, Tensor]) -> None:
        faults.point("weights.write")
        self.run.save_weights(best)

    def checkpoint(self, trainer: Trainer) -> None:
        state, tensors = trainer.checkpoint_state()
        report = checkpoint.write(self.run.path, state, tensors)
        logger.info("checkpoint %s: %.1f MB in %.2f s", report.path.name, report.bytes / 1e6, report.seconds)


@contextlib.contextmanager
def stop_requests() -> Iterator[Any]:
    """Make Ctrl-C and SIGTERM *request* a stop: the trainer finishes its step, checkpoints, and the
    run is finalised (best weights evaluated, ``stopped_by: interrupted``). A second signal aborts at
    once (``KeyboardInterrupt``). Yields the ``should_stop()`` callable; handlers are restored after.

    Installed for the whole run, set-up and final evaluation included, so a stop request at any moment
    ends in a finalised run. Handlers can only be installed from the main thread; elsewhere the
    signals keep their meaning and ``should_stop`` is always false.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def request(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        logger.warning("stop requested (%s): finishing the current step", signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def train(
    config: TrainConfig, data: Interactions | None = None, watch: RunWatch | None = None
) -> TrainResult:
    """Train ``config``'s model on its data and write a complete run directory.

    Everything that can be rejected (the config, the data, an empty evaluation split, an occupied output
    folder) is checked before the run directory is created, so a refused run leaves nothing behind.
    Under torchrun the ranks train one model together (:mod:`ssmrec.parallel`) and rank 0 alone writes;
    when torchrun restarts the command (``--max-restarts``) and ``output`` holds the run, it resumes.
    """
    device = resolve_device(config.run.device)  # a missing GPU is refused before anything is written
    output = Path(config.run.output or Path("runs") / (config.run.name or default_run_name(config)))
    with distributed.session(config.run.dist_timeout, prefer_cuda=device.type == "cuda") as context:
        device = _rank_device(device, context)
        main = context.is_main
        # torchrun --max-restarts started this command again after a lost rank: continue the run
        restarts = distributed.restart_count()
        if context.agree(main and restarts > 0 and (output / CONFIG).is_file()):
            if main:
                logger.warning("restart %d of a torchrun run: resuming %s", restarts, output)
            return resume(output, watch=watch)
        # before the data is loaded: a refused run costs nothing
        context.together(lambda: RunDir.check_available(output) if main else None)
        given_path = config.data.path
        if given_path is not None and not Path(given_path).is_absolute():  # the run must not need the cwd
            config = config.replace(data={"path": str(Path(given_path).absolute())})
        if main and given_path is not None and _is_stream(Path(given_path)):
            logger.warning(
                "warning: --data %s is a pipe or device, read once as a stream; the run records that path, "
                "which cannot be read again, so `ssmrec evaluate` and `--resume` will not work on this run; "
                "save the data to a file and give that to --data for a run you can re-evaluate",
                given_path,
            )
        with stop_requests() as should_stop, deterministic_mode(config.run.deterministic, device):
            if config.run.threads:
                torch.set_num_threads(config.run.threads)
            started = time.perf_counter()
            given = data

            def load() -> Interactions:
                loaded = given if given is not None else load_dataset(config.data)
                check_evaluable(config, loaded)
                return loaded

            data = context.together(load)
            context.same_everywhere(sorted(data.source.values()), "data files")
            load_seconds = time.perf_counter() - started
            run = context.together(lambda: RunDir.create(output) if main else None)
            handler = _attach_log(run.path / LOG) if run is not None else None
            try:
                if run is not None:
                    if config.protocol == "paper":
                        logger.warning("%s", PAPER_PROTOCOL_NOTE)
                    logger.info("data %s: %s (loaded in %.2f s)", data.name, data.counts(), load_seconds)
                    run.write_json(CONFIG, config.to_dict())
                    run.release_claim()
                    run.write_json(DATA, {**data_fingerprint(data), "path_as_given": given_path})
                    placement = {**_placement(device, config), "world_size": context.world_size}
                    run.write_json(ENVIRONMENT, {**environment(), **placement})
                    run.write_json(ID_MAPS, id_maps(data))
                trainer = build_trainer(config, data, should_stop, device)
                with _disk_faults(output):
                    return _run(trainer, config, data, run, started, output, watch)
            finally:
                if handler is not None:
                    logger.removeHandler(handler)
                    handler.close()


@contextlib.contextmanager
def _disk_faults(output: Path) -> Iterator[None]:
    """A full or read-only disk mid-run becomes one :class:`StorageError` that says how to go on.

    Every file of the run is written atomically (temp file, then rename; a failed write removes its
    temp file), so what is on disk is whole: the last checkpoint resumes once there is room.
    """
    try:
        yield
    except OSError as error:
        raise StorageError(
            f"{describe_os_error(error)}; the run in {output} stopped there (each of its files is "
            f"whole: they are written atomically); once the disk has room, continue it with: "
            f"ssmrec train --resume {output}"
        ) from error


def _rank_device(device: torch.device, context: distributed.Context) -> torch.device:
    """The run's device for this process: under torchrun a GPU run gives each rank its own GPU
    (``cuda:LOCAL_RANK``), whatever index ``--device`` named."""
    if context.world_size > 1:
        return distributed.rank_device(device.type == "cuda")
    return device


def _is_stream(path: Path) -> bool:
    """A FIFO, process substitution (``<(cat f)``) or device: it exists but is no file or folder."""
    return path.exists() and not path.is_file() and not path.is_dir()


def resume(
    path: str | Path, changes: dict[str, Any] | None = None, watch: RunWatch | None = None
) -> TrainResult:
    """Continue the run in ``path`` from its last checkpoint, with the run's own config.

    ``changes`` (flat keys, as from flags) may only raise the schedule or change reporting
    (:data:`RESUMABLE_CHANGES`); anything that would change the result is refused. The dataset's
    files must be the ones the run saw. A run that died before its first checkpoint starts again
    from the beginning in the same directory, which gives the same result. Under torchrun rank 0 reads
    the run directory and hands its config and checkpoint to the other ranks; the checkpoint does not
    depend on how many processes wrote it, so a run resumes with any number of them.
    """
    changes = changes or {}
    run = RunDir(path)
    requested = changes.get("device")
    wants_cuda = torch.cuda.is_available() and not str(requested or "auto").startswith(("cpu", "mps"))
    timeout = float(changes.get("dist_timeout", _recorded_dist_timeout(run)))
    with distributed.session(timeout, prefer_cuda=wants_cuda) as context:
        main = context.is_main

        def read() -> dict[str, Any] | None:
            if not main:
                return None
            for needed in (CONFIG, DATA):
                if not (run.path / needed).is_file():
                    raise SsmrecError(
                        f"{run.path}: not a run directory ({needed} is missing); nothing to resume"
                    )
            return _with_changes(_read_config(run), changes, run.path).to_dict()

        config = build_config(context.broadcast(context.together(read)))
        # before any write; under torchrun the group's backend fixed where the ranks compute
        device = context.together(
            lambda: distributed.group_device(resolve_device(config.run.device), context, run.path)
        )
        with stop_requests() as should_stop, deterministic_mode(config.run.deterministic, device):
            if config.run.threads:
                torch.set_num_threads(config.run.threads)
            started = time.perf_counter()

            def load() -> Interactions:
                loaded = load_dataset(config.data)
                if main:
                    _check_same_data(run, loaded)
                return loaded

            data = context.together(load)
            context.same_everywhere(sorted(data.source.values()), "data files")

            def latest() -> tuple[list[str], Any]:
                if not main:
                    return [], None
                removed = checkpoint.clean_stale(run.path)
                saved = checkpoint.latest(run.path)
                if saved is None and (run.path / FINAL).is_file():
                    _refuse_finished_without_checkpoint(run)
                return removed, saved

            removed, saved = context.together(latest)
            restored = context.broadcast(
                None if saved is None else (saved.path.name, saved.state, saved.tensors)
            )
            handler = _attach_log(run.path / LOG) if main else None
            try:
                for entry in removed:
                    logger.info("removed %s left by an interrupted write", entry)
                if main:
                    (run.path / FINAL).unlink(missing_ok=True)  # the run is unfinished again until it ends
                    run.write_json(CONFIG, config.to_dict())
                    recorded = run.read_json(ENVIRONMENT) if (run.path / ENVIRONMENT).is_file() else {}
                    placement = {**_placement(device, config), "world_size": context.world_size}
                    recorded.setdefault("resumed_on", []).append(placement)
                    run.write_json(ENVIRONMENT, recorded)
                trainer = build_trainer(config, data, should_stop, device)
                if restored is None:
                    logger.warning("%s has no checkpoint: training again from the start", run.path)
                    for name in (METRICS, WEIGHTS):
                        if main:
                            (run.path / name).unlink(missing_ok=True)
                else:
                    name, state, tensors = restored
                    trainer.restore(state, tensors)
                    position = trainer.state
                    logger.info(
                        "resumed from checkpoint %s: epoch %d%s (%d process%s)",
                        name,
                        position.epoch,
                        f", batch {position.step} of epoch {position.epoch + 1}" if position.step else "",
                        context.world_size,
                        "es" if context.world_size > 1 else "",
                    )
                    trainer.state.stopped_by = None
                    if main:
                        run.write_metrics(trainer.state.history)
                with _disk_faults(run.path):
                    return _run(trainer, config, data, run if main else None, started, run.path, watch)
            finally:
                if handler is not None:
                    logger.removeHandler(handler)
                    handler.close()


def _refuse_finished_without_checkpoint(run: RunDir) -> None:
    """A finished run whose checkpoint was removed cannot continue: say so, and touch nothing.

    Training it again from the start (what a run that died before its first checkpoint does) would
    delete the finished run's metrics and best weights, which is never what ``--resume`` asks for.
    """
    try:
        final = run.read_json(FINAL)
    except (OSError, ValueError):
        final = {}
    stopped = final.get("stopped_by") if isinstance(final, dict) else None
    epochs = final.get("epochs_run") if isinstance(final, dict) else None
    raise SsmrecError(
        f"{run.path}: this run finished ({stopped or 'stopped'}"
        f"{f' after epoch {epochs}' if epochs is not None else ''}) and removed its checkpoint, so it "
        "cannot be continued; its results are left as they are. Train it again with "
        "--keep-checkpoint true to be able to extend it later (a run stopped by its time budget "
        "keeps its checkpoint by itself)"
    )


def _placement(device: torch.device, config: TrainConfig) -> dict[str, Any]:
    """Where the run computes, logged and returned for ``environment.json``."""
    description = describe_device(device)
    logger.info(
        "device %s%s%s",
        device_summary(description),
        ", deterministic algorithms" if config.run.deterministic else "",
        ", bf16 autocast" if config.optim.precision == "bf16" else "",
    )
    return {"device": description, "deterministic": config.run.deterministic}


def _recorded_dist_timeout(run: RunDir) -> float:
    """The run's own ``--dist-timeout``, read before the process group exists.

    The group is joined before rank 0 reads (and checks) the config, and its timeout cannot change
    afterwards, so each rank reads the value here, where it can. A rank that cannot (no such directory
    on its machine, an unreadable or invalid config) joins with the default; rank 0's read then reports
    the config's error with its file.
    """
    try:
        return _read_config(run).run.dist_timeout
    except SsmrecError:
        return distributed.DEFAULT_TIMEOUT


def _read_config(run: RunDir) -> TrainConfig:
    where = f"{run.path / CONFIG}: "
    try:
        values = run.read_json(CONFIG)
    except (OSError, ValueError) as error:
        raise SsmrecError(f"{run.path / CONFIG}: unreadable ({error})") from error
    if not isinstance(values, dict):
        raise SsmrecError(f"{run.path / CONFIG}: expected a JSON object")
    return build_config(upgrade_legacy(values), where)


def _with_changes(config: TrainConfig, changes: dict[str, Any], path: Path) -> TrainConfig:
    """``config`` with ``changes`` applied, refusing any that would change the result."""
    if not changes:
        return config
    changed = build_config({**_flat_without_output(config), **changes})
    before, after = config.to_dict(), changed.to_dict()
    refused = sorted(
        f"{section}.{key}"
        for section in after
        if isinstance(after[section], dict)
        for key in after[section]
        if after[section][key] != before[section][key]
        and (section, key) not in RESUMABLE_CHANGES
        and not (section == "run" and key in ("output", "name"))
    )
    if refused:
        raise ConfigError(
            f"--resume {path} continues that run with its own settings; these would change its result: "
            f"{', '.join(refused)} (only epochs, max_minutes, patience, threads, progress, "
            "checkpoint_every, keep_checkpoint, device and deterministic may be given)"
        )
    return changed


def _flat_without_output(config: TrainConfig) -> dict[str, Any]:
    values = config.to_dict()
    values["run"] = {k: v for k, v in values["run"].items() if k not in ("output", "name")}
    return values


def _check_same_data(run: RunDir, data: Interactions) -> None:
    recorded = run.read_json(DATA)
    if recorded.get("source") != data_fingerprint(data)["source"]:
        raise SsmrecError(f"{run.path}: the dataset's files changed since the run (source hashes differ)")


def _run(
    trainer: Trainer,
    config: TrainConfig,
    data: Interactions,
    run: RunDir | None,
    started: float,
    output: Path,
    watch: RunWatch | None = None,
) -> TrainResult:
    """Fit, then finish the run directory whatever ended the loop (module docstring); ``run`` is
    ``None`` on ranks other than 0, which compute the same and write nothing."""
    logger.info(
        "model %s, loss %s, %d training pairs, %d batches of %d per epoch",
        config.model.describe(),
        config.loss.name,
        len(trainer.pairs),
        trainer.pairs.n_batches(config.optim.batch_size),
        config.optim.batch_size,
    )
    logger.info("objective %r, negatives %r", trainer.objective, trainer.sampler)
    hooks: RunHooks | NoHooks = RunHooks(run, config, watch) if run is not None else NoHooks()
    fault: NonFiniteError | None = None
    try:
        state = trainer.fit(hooks, config.evaluated_split)
    except NonFiniteError as error:
        fault, state = error, trainer.state
        state.stopped_by = "non-finite loss"
        logger.error("%s", _non_finite_message(error, config))
    splits = watch.final_splits if watch is not None else RunWatch().final_splits
    return _finish(trainer, state, config, data, run, started, fault, output, splits)


def _non_finite_message(error: NonFiniteError, config: TrainConfig) -> str:
    loss, optim = config.loss, config.optim
    suspects = [f"lr={optim.lr:g}", f"reg={optim.reg:g}"]
    if loss.temperature is not None:
        suspects.insert(0, f"temperature={loss.temperature:g}")
    if loss.similarity is not None:
        suspects.insert(1, f"similarity={loss.similarity}")
    return (
        f"training stopped: {error} at epoch {error.epoch}, batch {error.batch} (term: {error.term}); "
        f"settings most likely responsible: {', '.join(suspects)}; the last good checkpoint is kept"
    )


def _finish(
    trainer: Trainer,
    state: TrainerState,
    config: TrainConfig,
    data: Interactions,
    run: RunDir | None,
    started: float,
    fault: NonFiniteError | None,
    output: Path,
    splits: tuple[str, ...] = ("valid", "test"),
) -> TrainResult:
    model = trainer.model
    if not state.history and fault is None:
        trainer.best_weights = {k: v.clone() for k, v in model.state_dict().items()}
        if run is not None:
            run.save_weights(trainer.best_weights)
    model.load_state_dict(trainer.best_weights)
    final: dict[str, Any] = {
        "protocol": config.protocol,
        "selection_split": config.selection_split,
        "evaluated_split": config.evaluated_split,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_by == "early stop",
        "interrupted": state.stopped_by == "interrupted",
        "stopped_by": state.stopped_by,
        "train_seconds": state.train_seconds,
        "eval_seconds": state.eval_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    if config.protocol in ("paper", "refit"):
        final["note"] = PAPER_PROTOCOL_NOTE if config.protocol == "paper" else REFIT_PROTOCOL_NOTE
    if fault is not None:
        final["error"] = _non_finite_message(fault, config)
    scoring = trainer.objective.scoring()
    if scoring is not None:  # what analyses score the run with (a learned τ is known only here)
        final["scoring"] = {"similarity": scoring[0], "temperature": scoring[1]}
    if fault is None or state.history:  # never NaN metrics written as if valid: only evaluated weights
        for split in splits:
            if split == "valid" and data.valid is None:
                continue
            final[split] = evaluate_split(model, data, split, config)  # every rank: a collective
    if run is None:
        stopped_early = state.stopped_by == "early stop"
        return TrainResult(output, state.best_epoch, state.epoch, stopped_early, state.history, final, False)
    if fault is None or state.history:
        final["weights_sha256"] = _sha256(run.path / WEIGHTS)
    final["config_sha256"] = _sha256(run.path / CONFIG)
    run.write_json(FINAL, final)
    if state.stopped_by not in CONTINUABLE_STOPS and not config.run.keep_checkpoint:
        checkpoint.remove(run.path)
    if "test" in final:
        logger.info(
            "best epoch %d; test %s",
            state.best_epoch,
            {k: round(v, 4) for k, v in final["test"].items() if k in ("recall@20", "ndcg@20")},
        )
    stopped_early = state.stopped_by == "early stop"
    return TrainResult(run.path, state.best_epoch, state.epoch, stopped_early, state.history, final)


# ------------------------------------------------------------------------------------- reopening


def verify_run(run: RunDir, data: Interactions) -> list[str]:
    """What no longer matches between a finished run directory and what it recorded, in words.

    The run recorded the sha256 of its weights and config (``final_metrics.json``) and the split options
    of its data (``data.json``): flipped bytes in the weights, an edited model or loss, or another split
    seed would otherwise change the numbers silently (or score training items as test items).
    """
    problems = []
    final = run.read_json(FINAL) if (run.path / FINAL).is_file() else {}
    for key, name in (("weights_sha256", WEIGHTS), ("config_sha256", CONFIG)):
        if final.get(key) and final[key] != _sha256(run.path / name):
            problems.append(
                f"{run.path / name} changed after the run (its sha256 differs from {FINAL}'s {key})"
            )
    recorded = run.read_json(DATA).get("options", {})
    options = json.loads(json.dumps(data.options))
    changed = sorted(
        k for k in set(recorded) | set(options) if k != "fingerprint" and recorded.get(k) != options.get(k)
    )
    if changed:
        problems.append(
            f"the data is read with other options than the run's ({', '.join(changed)} differ from {DATA})"
        )
    return problems


def load_run(
    path: str | Path,
    data: Interactions | None = None,
    force: bool = False,
    warnings: list[str] | None = None,
    device: torch.device | None = None,
) -> tuple[TrainConfig, Interactions, Recommender]:
    """Open a finished run directory: its config, its dataset and its best weights, ready to rank.

    Only what the run directory holds is used (``config.json``, ``data.json``, ``model.safetensors``)
    plus the dataset files, which must be the ones the run saw: their sha256s are compared with
    ``data.json`` so a changed file cannot silently give different numbers, and :func:`verify_run`
    checks the weights, config and split options; a mismatch is an error unless ``force`` (then a
    warning, also appended to ``warnings``). ``data`` may pass an already loaded dataset (several runs
    on the same data share one load). ``device``: where the model is placed (default CPU).
    """
    run = RunDir(path)
    for needed in (CONFIG, DATA, WEIGHTS):
        if not (run.path / needed).is_file():
            raise SsmrecError(f"{run.path}: not a complete run directory ({needed} is missing)")
    config = _read_config(run)
    if data is None:
        data = load_dataset(config.data)
    _check_same_data(run, data)
    for problem in verify_run(run, data):
        if not force:
            raise SsmrecError(f"{problem}; give --force to use it anyway")
        logger.warning("warning (--force): %s", problem)
        if warnings is not None:
            warnings.append(f"--force: {problem}")
    model = build_model_for(config, data)
    try:
        model.load_state_dict(run.load_weights())
    except RuntimeError as error:  # missing or unexpected tensors, wrong shapes
        first = str(error).strip().splitlines()[0][:300]
        raise SsmrecError(
            f"{run.path / WEIGHTS}: does not fit this run's model and data ({first})"
        ) from error
    if device is not None and device.type != "cpu":
        model = model.to(device)
    return config, data, model
