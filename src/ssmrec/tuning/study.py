"""The study: Optuna's TPE sampler and median pruner over ordinary run directories, resumable and shared.

Each trial is a normal :func:`ssmrec.experiment.train` run in ``<output>/trials/trial-NNNN/``, selected
on the validation split (the tuner refuses the paper protocol) and never evaluated on test: its final
evaluation reports the validation split only (:class:`ssmrec.experiment.RunWatch`). After every
evaluation the trial reports the validation metric to Optuna at step = epoch, and the median pruner
may stop it there (``stopped_by: pruned``).

The study lives in an Optuna storage (SQLite by default, ``<output>/study.db``), so

* a killed ``ssmrec tune`` continues where it stopped: a trial left ``RUNNING`` by a dead process is
  marked failed and re-enqueued with its parameters as a new trial that **resumes the old trial's run
  directory** from its last checkpoint (mid-trial), with the old trial's evaluations reported again so
  the pruner sees the whole curve;
* several ``ssmrec tune`` processes on one storage and one ``--output`` share the study: each asks for
  the next trial under an exclusive lock on ``<output>/.study.lock`` and holds a lock on its trial's
  folder while it runs, which is how a process tells a dead trial from one another process is running
  (the kernel drops a killed process's locks). Every process samples with its own seed (the sampler
  seed plus its order of joining), so their first random trials differ.

The trial count (``--trials``) is the study's total, across processes and restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ssmrec.config import TrainConfig, resolve_config
from ssmrec.errors import ConfigError, SsmrecError
from ssmrec.tuning.space import SearchSpace, given_settings

logger = logging.getLogger("ssmrec")

TRIALS = "trials"
STUDY_LOCK = ".study.lock"
LOCKS = ".locks"
REFIT_LOCK = "refit.lock"
MAX_FAILURES = 3
"""Consecutive failed trials after which a process stops: a setting every trial shares is wrong."""
ATTRIBUTE = "ssmrec"
"""Study user attribute holding what the study searches (compared when a study is continued)."""


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError as error:
        raise SsmrecError('ssmrec tune needs Optuna: pip install "ssmrec[tune]"') from error
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass(frozen=True)
class TuneSpec:
    """What to tune and where: the space, the fixed settings (config file and flags), the study."""

    output: Path
    space: SearchSpace
    file_values: dict[str, Any] = field(default_factory=dict)
    flag_values: dict[str, Any] = field(default_factory=dict)
    where: str = ""
    trials: int | None = None
    budget_minutes: float | None = None
    storage: str | None = None
    study_name: str | None = None
    sampler_seed: int = 0
    prune: bool = True
    prune_startup: int = 5
    prune_warmup: int = 5
    refit: bool = False
    baseline_first: bool = False

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.output / 'study.db').absolute()}"

    @property
    def name(self) -> str:
        if self.study_name:
            return self.study_name
        base = self.base_config()
        data = base.data.dataset or Path(base.data.path or "data").name
        return f"{data}-{self.space.model}-{self.space.loss}"

    def trial_config(self, params: dict[str, Any], run_dir: Path) -> TrainConfig:
        """The config of one trial: the fixed settings, the trial's parameters, its run directory."""
        flags = {**self.flag_values, **params, "output": str(run_dir), "name": run_dir.name}
        return resolve_config(self.file_values, flags, self.where)

    def base_config(self) -> TrainConfig:
        """The fixed settings alone, resolved (checks them before any trial, refuses the paper protocol)."""
        config = resolve_config(self.file_values, self.flag_values, self.where)
        if config.protocol != "standard":
            raise ConfigError(
                f"ssmrec tune selects on a validation split carved from train and never sees the test "
                f"split; --protocol {config.protocol} is refused (use --refit to train the best setting on "
                "train + validation and evaluate it on test once)"
            )
        if not config.data.dataset and not config.data.path:
            raise SsmrecError("no data: give --dataset NAME, --data PATH, or a --preset")
        return config

    def recorded(self) -> dict[str, Any]:
        """What the study searches and holds fixed: a study continued later must search the same."""
        base = self.base_config().to_dict()
        base["run"] = {}
        return json.loads(json.dumps({"space": self.space.to_dict(), "base": base}))


@dataclass
class TrialOutcome:
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    seconds: float
    run_dir: Path
    final: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# ------------------------------------------------------------------------------------------ locking


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created) for the block, waiting for it if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def study_lock(output: Path) -> contextlib.AbstractContextManager[None]:
    """Exclusive across the processes sharing ``output``: asking for trials, adopting dead ones."""
    return exclusive(output / STUDY_LOCK)


def try_trial_lock(output: Path, run_name: str) -> TextIO | None:
    """Hold the lock of a trial's folder (``None``: a live process holds it)."""
    folder = output / LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / f"{run_name}.lock", "a")  # noqa: SIM115 (held while the trial runs)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def release(handle: TextIO) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def run_by_live_process(output: Path, frozen: Any) -> bool:
    """Whether a live process holds the folder lock of this ``RUNNING`` trial (the kernel drops a killed
    process's lock; a trial not yet named is locked under its default folder name)."""
    lock = try_trial_lock(output, frozen.user_attrs.get("run_dir_name") or f"trial-{frozen.number:04d}")
    if lock is None:
        return True
    release(lock)
    return False


def refit_lock(output: Path) -> contextlib.AbstractContextManager[None]:
    """Exclusive across the processes sharing ``output`` for the refit: the first process trains it,
    the others wait and then read it back (two would write one run directory at once)."""
    return exclusive(output / LOCKS / REFIT_LOCK)


def wait_for_live_trials(
    study: Any, spec: TuneSpec, note: Callable[[str], None], poll_seconds: float = 5.0
) -> None:
    """Return once no trial of the study is being run by a live process.

    The refit trains the study's best trial, which is only known once the trials other processes are
    still running have ended; a trial left running by a dead process (its folder lock is free) is not
    waited for."""
    optuna = import_optuna()
    announced = False
    while True:
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        live = [frozen.number for frozen in running if run_by_live_process(spec.output, frozen)]
        if not live:
            return
        if not announced:
            note(f"the refit waits for trial(s) {', '.join(map(str, live))}, run by other processes")
            announced = True
        time.sleep(poll_seconds)


# -------------------------------------------------------------------------------------------- study


def open_study(spec: TuneSpec) -> tuple[Any, int]:
    """Create or load the study; returns it and this process's worker index (its order of joining)."""
    optuna = import_optuna()
    recorded = spec.recorded()
    with study_lock(spec.output):
        # processes sharing a SQLite file wait for each other's writes (sqlite3's default is 5 s)
        sqlite = {"connect_args": {"timeout": 120}} if spec.storage_url.startswith("sqlite") else {}
        storage = optuna.storages.RDBStorage(spec.storage_url, engine_kwargs=sqlite)
        study = optuna.create_study(
            storage=storage, study_name=spec.name, direction="maximize", load_if_exists=True
        )
        before = study.user_attrs.get(ATTRIBUTE)
        if before is None and all(trial.state.name == "WAITING" for trial in study.trials):
            study.set_user_attr(ATTRIBUTE, recorded)  # a new study (maybe with enqueued trials)
            given = given_settings(spec.file_values, spec.flag_values)
            baseline = spec.space.baseline(spec.base_config(), given) if spec.baseline_first else {}
            if baseline and not study.trials:
                study.enqueue_trial(baseline, user_attrs={"baseline": True})
                logger.info("first trial: the fixed settings' own %s", _listed(baseline))
        elif before != recorded:
            raise SsmrecError(
                f"study {spec.name!r} in {spec.storage_url} searches {_difference(before, recorded)} "
                "differently from this command; give the same settings, or another --study-name"
            )
        worker = int(study.user_attrs.get("workers", 0))
        study.set_user_attr("workers", worker + 1)
    sampler = optuna.samplers.TPESampler(seed=spec.sampler_seed + worker)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=spec.prune_startup, n_warmup_steps=spec.prune_warmup)
        if spec.prune
        else optuna.pruners.NopPruner()
    )
    return optuna.load_study(storage=storage, study_name=spec.name, sampler=sampler, pruner=pruner), worker


def _listed(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_short(value)}" for key, value in params.items())


def _difference(before: Any, now: dict[str, Any]) -> str:
    if not isinstance(before, dict):
        return "(no ssmrec settings recorded)"
    changed = [
        f"{part}.{key}"
        for part in ("space", "base")
        for key in sorted(set(before.get(part, {})) | set(now.get(part, {})))
        if before.get(part, {}).get(key) != now.get(part, {}).get(key)
    ]
    return ", ".join(changed) or "(its recorded settings)"


def counted_trials(study: Any) -> int:
    """Trials that count towards ``--trials``: all asked ones, less dead ones resumed as another."""
    trials = study.get_trials(deepcopy=False)
    resumed = {t.user_attrs["resumes"] for t in trials if "resumes" in t.user_attrs}
    return sum(1 for t in trials if t.state.name != "WAITING" and t.number not in resumed)


@dataclass
class Claim:
    trial: Any
    run_dir: Path
    lock: TextIO


def claim_trial(study: Any, spec: TuneSpec) -> Claim | None:
    """The next trial this process runs: a dead process's trial first (re-enqueued to resume its
    folder), else a new one; ``None`` once the study has its ``--trials``. Call under :func:`study_lock`."""
    optuna = import_optuna()
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if run_by_live_process(spec.output, frozen):
            continue
        run_name = frozen.user_attrs.get("run_dir_name")
        study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
        attrs = {"resumes": frozen.number}
        if run_name:
            attrs["run_dir_name"] = run_name
        study.enqueue_trial(frozen.params, user_attrs=attrs, skip_if_exists=False)
        logger.info("trial %d was left running by a stopped process: continuing it", frozen.number)
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    resuming = any("resumes" in t.user_attrs for t in waiting)  # replaces a counted trial: always runs
    if spec.trials is not None and counted_trials(study) >= spec.trials and not resuming:
        return None
    trial = study.ask()
    run_name = trial.user_attrs.get("run_dir_name") or f"trial-{trial.number:04d}"
    lock = try_trial_lock(spec.output, run_name)
    if lock is None:  # cannot happen under the study lock unless a folder is shared by mistake
        raise SsmrecError(f"{spec.output / TRIALS / run_name} is locked by another process")
    trial.set_user_attr("run_dir_name", run_name)
    return Claim(trial, spec.output / TRIALS / run_name, lock)


# ---------------------------------------------------------------------------------------- one trial


def run_trial(claim: Claim, spec: TuneSpec) -> TrialOutcome:
    """Train (or resume, or read back) one trial's run directory and tell Optuna the outcome."""
    from ssmrec import checkpoint, experiment
    from ssmrec.rundir import CONFIG, DATA, FINAL, RunDir
    from ssmrec.trainer import StopRun

    optuna = import_optuna()
    trial, run_dir = claim.trial, claim.run_dir
    params = spec.space.sample(trial)
    metric = spec.base_config().evaluation.metric
    reported: set[int] = set()

    def report(history: list[dict[str, Any]]) -> None:
        for record in history:
            if record["epoch"] not in reported:
                reported.add(record["epoch"])
                trial.report(float(record[metric]), int(record["epoch"]))

    def evaluated(history: list[dict[str, Any]]) -> None:
        report(history)
        if trial.should_prune():
            raise StopRun("pruned")

    watch = experiment.RunWatch(evaluated=evaluated, final_splits=("valid",))
    started = time.perf_counter()
    outcome = TrialOutcome(trial.number, "RUNNING", params, None, 0.0, run_dir)
    try:
        config = spec.trial_config(params, run_dir)
        final_path = run_dir / FINAL
        previous = json.loads(final_path.read_text()) if final_path.is_file() else None
        if previous is not None and previous.get("stopped_by") not in (None, "interrupted"):
            final = previous  # finished before its process died: read back, not retrained
        elif (run_dir / CONFIG).is_file() and (run_dir / DATA).is_file():
            final = experiment.resume(run_dir, watch=watch).final
        else:
            if run_dir.exists():
                _move_aside(run_dir)
            final = experiment.train(config, watch=watch).final
        report(RunDir(run_dir).read_metrics())  # evaluations a resumed run did not repeat
    except (SsmrecError, FileExistsError, ValueError, RuntimeError) as error:
        outcome.error = f"{type(error).__name__}: {error}"
        outcome.state = "FAIL"
        trial.set_user_attr("error", outcome.error[:500])
        study_tell(trial, optuna.trial.TrialState.FAIL)
        outcome.seconds = time.perf_counter() - started
        return outcome
    outcome.final, outcome.seconds = final, time.perf_counter() - started
    stopped_by = final.get("stopped_by")
    for key in ("best_epoch", "epochs_run", "stopped_by", "wall_seconds"):
        trial.set_user_attr(key, final.get(key))
    if stopped_by == "interrupted":
        outcome.state = "INTERRUPTED"  # left RUNNING: the next `ssmrec tune` resumes it
        return outcome
    if stopped_by == "non-finite loss" or "valid" not in final:
        outcome.state = "FAIL"
        outcome.error = str(final.get("error", stopped_by))
        trial.set_user_attr("error", outcome.error[:500])
        study_tell(trial, optuna.trial.TrialState.FAIL)
        return outcome
    outcome.value = float(final["valid"][metric])
    checkpoint.remove(run_dir)  # a told trial is never continued (one its time budget stopped keeps one)
    if stopped_by == "pruned":
        outcome.state = "PRUNED"
        study_tell(trial, optuna.trial.TrialState.PRUNED)
    else:
        outcome.state = "COMPLETE"
        study_tell(trial, optuna.trial.TrialState.COMPLETE, outcome.value)
    return outcome


def study_tell(trial: Any, state: Any, value: float | None = None) -> None:
    trial.study.tell(trial, value, state=state)


def _move_aside(run_dir: Path) -> None:
    """A trial folder too incomplete to resume (no config yet) is kept for its log, never deleted."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}-incomplete-{stamp}")
    run_dir.rename(target)
    logger.info("%s could not be resumed (no config.json): moved to %s", run_dir, target)


# ------------------------------------------------------------------------------------------- driver


def run_study(spec: TuneSpec, note: Callable[[str], None], after_trial: Callable[[Any], None]) -> Any:
    """Run trials until the study has ``spec.trials``, the budget is spent, or a stop is requested.

    ``note`` gets one line per trial and the best so far; ``after_trial(study)`` rewrites the outputs.
    """
    spec.base_config()
    study, worker = open_study(spec)
    metric = spec.base_config().evaluation.metric
    note(
        f"study {study.study_name!r} in {spec.storage_url} (worker {worker}); {len(spec.space.parameters)} "
        f"parameters: " + "; ".join(spec.space.describe())
    )
    started = time.monotonic()
    failures = 0
    while True:
        if spec.budget_minutes is not None and time.monotonic() - started >= 60 * spec.budget_minutes:
            note(f"time budget of {spec.budget_minutes:g} minutes spent: no new trial")
            break
        with study_lock(spec.output):
            claim = claim_trial(study, spec)
        if claim is None:
            note(f"the study has its {spec.trials} trials")
            break
        try:
            outcome = run_trial(claim, spec)
        finally:
            release(claim.lock)
        note(trial_line(outcome, metric, study))
        after_trial(study)
        failures = failures + 1 if outcome.state == "FAIL" else 0
        if failures >= MAX_FAILURES:
            raise SsmrecError(
                f"{failures} trials in a row failed; the last: {outcome.error} (fix the settings, then run "
                "the same command again to continue the study)"
            )
        if outcome.state == "INTERRUPTED":
            note("stopped: the interrupted trial resumes when the same command runs again")
            raise KeyboardInterrupt
    return study


def trial_line(outcome: TrialOutcome, metric: str, study: Any) -> str:
    """One line per trial: parameters, best validation metric, pruned or not, time; then the best so far."""
    params = " ".join(f"{key}={_short(value)}" for key, value in outcome.params.items())
    epochs = outcome.final.get("epochs_run")
    if outcome.state in ("COMPLETE", "PRUNED"):
        what = (
            f"valid {metric} {outcome.value:.4f} (epoch {outcome.final.get('best_epoch')} of {epochs})"
            + (" PRUNED" if outcome.state == "PRUNED" else "")
        )
    elif outcome.state == "INTERRUPTED":
        what = f"interrupted after {epochs} epochs"
    else:
        what = f"FAILED: {outcome.error}"
    line = f"trial {outcome.number}: {params}: {what}, {outcome.seconds:.0f} s"
    try:
        best = study.best_trial
        line += f" | best so far: trial {best.number} valid {metric} {best.value:.4f}"
    except ValueError:
        line += " | no completed trial yet"
    return line


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
