"""What a study writes to ``--output``: the trials table, parameter importances, the history figure,
``best.toml`` and ``report.md`` (with the refit's test numbers and what they mean, when there is one).

Everything is rebuilt from the study's storage after every trial and written atomically, so processes
sharing a study may each rewrite it and a reader never sees half a file. Importances are Optuna's
PED-ANOVA (:class:`optuna.importance.PedAnovaImportanceEvaluator`): it needs no scikit-learn (Optuna 4's
default, fANOVA, does) and handles parameters that only some trials have (``num_negatives`` when
negatives are mixed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tomllib
import warnings
from pathlib import Path
from typing import Any

from ssmrec.config import TrainConfig, build_config, upgrade_legacy
from ssmrec.errors import SsmrecError
from ssmrec.rundir import CONFIG, DATA, atomic_write_bytes
from ssmrec.tuning.study import TRIALS, TuneSpec

BEST = "best.toml"
REFIT = "refit.toml"
DROPPED_RUN_KEYS = ("output", "name", "progress")
"""Run settings a reproduced run chooses for itself (where it is written, whether bars are drawn)."""


def trial_config(spec: TuneSpec, trial: Any) -> TrainConfig:
    """The config a trial ran with, read from its run directory's ``config.json``."""
    path = spec.output / TRIALS / trial.user_attrs["run_dir_name"] / CONFIG
    return build_config(upgrade_legacy(json.loads(path.read_text())), f"{path}: ")


# --------------------------------------------------------------------------------------------- TOML


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML has no {value!r} in a config")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise ValueError(f"cannot write {value!r} to TOML")


def config_toml(config: TrainConfig, header: list[str]) -> str:
    """``config`` as a TOML config file (one table per part, unset values left out) that
    ``ssmrec train --config`` resolves to the same config; checked by reading it back."""
    values = config.to_dict()
    lines = [f"# {line}" if line else "#" for line in header]
    if values.get("preset") is not None:
        lines.append(f"preset = {_toml_value(values['preset'])}")
    for section, table in values.items():
        if not isinstance(table, dict):
            continue
        lines += ["", f"[{section}]"]
        for key, value in table.items():
            if value is None or (section == "run" and key in DROPPED_RUN_KEYS):
                continue
            lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    again = build_config(tomllib.loads(text))
    if _comparable(again) != _comparable(config):
        raise SsmrecError("internal error: the written config does not read back to the same settings")
    return text


def _comparable(config: TrainConfig) -> dict[str, Any]:
    values = config.to_dict()
    values["run"] = {k: v for k, v in values["run"].items() if k not in DROPPED_RUN_KEYS}
    return values


# ------------------------------------------------------------------------------------------- tables


def trial_rows(study: Any, metric: str) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per trial (number, state, validation metric, epochs, why it stopped, time, parameters)."""
    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(name for trial in trials for name in trial.params))
    rows = []
    for trial in trials:
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        row: dict[str, Any] = {
            "trial": trial.number,
            "state": trial.state.name,
            f"valid_{metric}": trial.value if trial.state.name == "COMPLETE" else _last(trial),
            "best_epoch": trial.user_attrs.get("best_epoch"),
            "epochs_run": trial.user_attrs.get("epochs_run"),
            "stopped_by": trial.user_attrs.get("stopped_by"),
            "seconds": round(duration) if duration is not None else None,
        }
        row.update({name: trial.params.get(name) for name in names})
        row["note"] = _note(trial)
        rows.append(row)
    return rows, names


def _last(trial: Any) -> float | None:
    """A pruned trial's best reported validation value (what the pruner compared)."""
    values = list(trial.intermediate_values.values())
    return max(values) if values else None


def _note(trial: Any) -> str:
    if "resumes" in trial.user_attrs:
        return f"continues trial {trial.user_attrs['resumes']}'s run directory"
    return str(trial.user_attrs.get("error", ""))


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(no trials yet)"]
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(row[key]) for key in headers) + " |" for row in rows]
    return lines


# ------------------------------------------------------------------------------ importance, figure


def importances(study: Any) -> tuple[dict[str, float], str | None]:
    """PED-ANOVA importances of the completed trials, or why there are none yet."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}, f"{len(complete)} completed trial(s): importances need at least 2"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return {}, f"not computable yet ({error})"
    cautions = "; ".join(dict.fromkeys(str(warning.message) for warning in caught))
    return {name: float(value) for name, value in values.items()}, cautions or None


def history_png(study: Any, metric: str) -> bytes:
    """Each trial's validation metric (pruned ones at their best reported value) and the best so far."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, no pyplot: headless-safe
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.0, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    best, xs, ys = -math.inf, [], []
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name == "COMPLETE" and trial.value is not None:
            axes.scatter([trial.number], [trial.value], color="C0", s=18, zorder=3)
            best = max(best, trial.value)
        elif trial.state.name == "PRUNED" and _last(trial) is not None:
            axes.scatter([trial.number], [_last(trial)], color="C3", marker="x", s=22, zorder=3)
        if best > -math.inf:
            xs.append(trial.number)
            ys.append(best)
    if xs:
        axes.step(xs, ys, where="post", color="C1", label="best so far")
    axes.scatter([], [], color="C0", s=18, label="completed")
    axes.scatter([], [], color="C3", marker="x", s=22, label="pruned (best reported)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title(f"{study.study_name}: optimisation history")
    axes.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ outputs


def write_outputs(study: Any, spec: TuneSpec, refit: dict[str, Any] | None = None) -> None:
    """Rewrite every output of the study in ``spec.output`` from its storage."""
    base = spec.base_config()
    metric = base.evaluation.metric
    rows, _ = trial_rows(study, metric)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    atomic_write_bytes(spec.output / "trials.csv", buffer.getvalue().encode())
    atomic_write_bytes(spec.output / "trials.md", ("\n".join(markdown_table(rows)) + "\n").encode())
    scores, reason = importances(study)
    importance = {"evaluator": "PedAnovaImportanceEvaluator", "importances": scores, "note": reason}
    atomic_write_bytes(spec.output / "importances.json", (json.dumps(importance, indent=2) + "\n").encode())
    atomic_write_bytes(spec.output / "history.png", history_png(study, metric))
    best = _best(study)
    if best is not None:
        config = trial_config(spec, best)
        header = [
            f"The best trial ({best.number}) of study {study.study_name!r}: validation {metric} "
            f"{best.value:.4f} at epoch {best.user_attrs.get('best_epoch')}.",
            "Reproduce it with: ssmrec train --config best.toml",
        ]
        atomic_write_bytes(spec.output / BEST, config_toml(config, header).encode())
    report = report_text(study, spec, rows, scores, reason, refit)
    atomic_write_bytes(spec.output / "report.md", report.encode())


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:
        return None


def report_text(
    study: Any,
    spec: TuneSpec,
    rows: list[dict[str, Any]],
    scores: dict[str, float],
    reason: str | None,
    refit: dict[str, Any] | None,
) -> str:
    base = spec.base_config()
    metric = base.evaluation.metric
    data = base.data.dataset or base.data.path
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    pruning = "off"
    if spec.prune:
        pruning = f"median pruner from epoch {spec.prune_warmup} after {spec.prune_startup} trials"
    lines = [
        f"# ssmrec tune: {data}, {spec.space.model} + {spec.space.loss}",
        "",
        f"Study `{study.study_name}` in `{spec.storage_url}`: "
        + ", ".join(f"{count} {state.lower()}" for state, count in sorted(states.items())) + ".",
        "",
        f"**Selection:** every trial picks its best epoch by validation {metric} on a validation split "
        f"carved from train (valid_ratio {base.data.valid_ratio:g}, split seed {base.data.split_seed}), "
        "and the best trial is the one with the highest such value. Trials never evaluate the test "
        f"split (their run directories hold validation metrics only). Sampler: TPE; pruning: {pruning}.",
        "",
        "## Search space",
        "",
        *[f"- {line}" for line in spec.space.describe()],
    ]
    shown = {k: v for k, v in spec.space.fixed.items() if k not in ("model", "loss", "progress")}
    if shown:
        fixed = ", ".join(f"{key}={value}" for key, value in shown.items())
        lines += ["", f"Fixed by the command: {fixed}."]
    best = _best(study)
    lines += ["", "## Best trial", ""]
    if best is None:
        lines.append("No completed trial yet.")
    else:
        params = ", ".join(f"{key}={_cell(value)}" for key, value in best.params.items())
        lines += [
            f"Trial {best.number}: validation {metric} **{best.value:.4f}** at epoch "
            f"{best.user_attrs.get('best_epoch')} ({params}); `{BEST}` holds its whole config: "
            f"`ssmrec train --config {spec.output / BEST}` reproduces it.",
        ]
    lines += ["", "## Parameter importance (PED-ANOVA)", ""]
    if scores:
        lines += [f"- {name}: {value:.3f}" for name, value in scores.items()]
        if reason:
            lines += ["", f"Optuna's caution: {reason}"]
    else:
        lines.append(f"Not yet: {reason}.")
    if refit is not None:
        test = refit.get("test", {})
        lines += [
            "",
            "## Refit on train + validation, test evaluated once",
            "",
            f"The best setting was trained again on train + validation for {refit['epochs']} epochs (the "
            f"best trial's selected epoch) and the test split was evaluated once, after the last epoch "
            f"(protocol `refit`; run directory `{refit['run_dir']}`, config `{REFIT}`). Nothing was "
            f"selected on test: test Recall@20 **{test.get('recall@20', float('nan')):.4f}**, "
            f"NDCG@20 **{test.get('ndcg@20', float('nan')):.4f}**.",
        ]
        difference = data_difference(refit.get("trial_counts"), refit.get("counts"))
        if difference:
            lines += ["", difference]
    lines += ["", "## Trials", "", *markdown_table(rows), "", "![history](history.png)", ""]
    return "\n".join(lines)


def data_difference(trial_counts: dict[str, Any] | None, refit_counts: dict[str, Any] | None) -> str | None:
    """Why the refit's test numbers are over slightly other data than the trials saw, or ``None``.

    The refit trains on train + validation, so an item (or user) whose only training pairs fell into the
    carved validation split is known to the refit but was dropped from the trials' data as unseen in
    training, and so were its test pairs: the refit ranks a larger catalogue and evaluates those pairs
    too. The numbers stay comparable with other refits of the same data, not exactly with the trials'."""
    if not trial_counts or not refit_counts:
        return None
    keys = (("users", "users"), ("items", "items"), ("test_interactions", "test pairs"))
    changed = [
        f"{refit_counts[key]:,} {name} against {trial_counts[key]:,}"
        for key, name in keys
        if key in trial_counts and key in refit_counts and refit_counts[key] != trial_counts[key]
    ]
    if not changed:
        return None
    return (
        "**Data:** the refit's data holds " + ", ".join(changed) + " in the trials' data: users and items "
        "whose only training pairs fell into the carved validation split are known to the refit, and "
        "their test pairs are evaluated, while the trials' data dropped them as unseen in training."
    )


# -------------------------------------------------------------------------------------------- refit


def refit_best(study: Any, spec: TuneSpec, note: Any) -> dict[str, Any] | None:
    """Train the best trial's config on train + validation for its selected number of epochs and
    evaluate on test once (protocol ``refit``); a refit done before is read back, not evaluated again."""
    from ssmrec import experiment
    from ssmrec.data import load_dataset
    from ssmrec.rundir import FINAL

    best = _best(study)
    if best is None:
        note("no completed trial: nothing to refit")
        return None
    epochs = int(best.user_attrs.get("best_epoch") or 0)
    run_dir = spec.output / f"refit-trial-{best.number:04d}"
    config = trial_config(spec, best).replace(
        evaluation={"protocol": "refit"},
        optim={"epochs": epochs, "eval_every": max(1, epochs), "max_minutes": None},
        run={"output": str(run_dir), "name": run_dir.name},
    )
    header = [
        f"Refit of trial {best.number}: train + validation, {epochs} epochs, test evaluated once at the end.",
        "Run it with: ssmrec train --config refit.toml",
    ]
    atomic_write_bytes(spec.output / REFIT, config_toml(config, header).encode())
    final_path = run_dir / FINAL
    if final_path.is_file() and json.loads(final_path.read_text()).get("stopped_by") != "interrupted":
        note(f"refit of trial {best.number} done before ({run_dir}): read back, test not evaluated again")
        final = json.loads(final_path.read_text())
    elif (run_dir / CONFIG).is_file() and (run_dir / DATA).is_file():
        note(f"refit of trial {best.number}: resuming {run_dir}")
        final = experiment.resume(run_dir).final
    else:
        data = load_dataset(config.data)
        if data.valid is not None:
            raise SsmrecError(
                f"{data.name} ships its own validation split: --refit trains on train + a validation split "
                "carved from train, which this data does not have; run without --refit"
            )
        note(f"refit of trial {best.number}: {epochs} epochs on train + validation -> {run_dir}")
        final = experiment.train(config, data).final
    test = final.get("test", {})
    note(
        f"refit of trial {best.number}: test recall@20 {test.get('recall@20', float('nan')):.4f}, ndcg@20 "
        f"{test.get('ndcg@20', float('nan')):.4f} (trained on train + validation for {epochs} epochs; "
        "the test split evaluated once, nothing selected on it)"
    )
    return {
        "trial": best.number,
        "epochs": epochs,
        "run_dir": str(run_dir),
        "test": test,
        "counts": _data_counts(run_dir),
        "trial_counts": _data_counts(spec.output / TRIALS / best.user_attrs["run_dir_name"]),
    }


def _data_counts(run_dir: Path) -> dict[str, Any] | None:
    """A run directory's data counts (``data.json``), ``None`` where it cannot be read."""
    try:
        return json.loads((run_dir / DATA).read_text())["counts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
