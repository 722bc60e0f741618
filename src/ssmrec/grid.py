"""``ssmrec grid``: train every model × loss combination, one after another, and tabulate the results.

Each cell is an ordinary :func:`ssmrec.experiment.train` run in ``<output>/<model>-<loss>/``. A cell
whose
``final_metrics.json`` exists is finished and is skipped when the grid runs again (after checking that
its recorded config is the one the grid would use now: a changed setting is an error, not a silently
stale row). A cell that was interrupted (Ctrl-C, ``kill -9``, a crash) is continued from its last
checkpoint with :func:`ssmrec.experiment.resume`, which gives the result an uninterrupted run would
have; a cell directory too incomplete to resume (no ``config.json``) is moved aside to
``<output>/interrupted/<model>-<loss>-<timestamp>/`` (kept for its log, never deleted) and restarts.
After every cell, ``grid.md`` and ``grid.csv`` are rewritten atomically with Recall/NDCG@20 on
valid and test, epochs, why the cell stopped (early stop,
time budget, max epochs) and wall time per cell.

Settings of a cell, later layers winning:

1. :class:`ssmrec.config.TrainConfig` defaults;
2. the loss's row of :data:`ssmrec.defaults.LOSS_DEFAULTS` (each default with its source);
3. the loss's dataset preset, when one exists (``ssm-gowalla``: τ = 0.12 …; ``softmax`` uses SSM's),
   without its model keys;
4. the model's row of :data:`ssmrec.defaults.MODEL_DEFAULTS`;
5. the ``--config`` file: its top-level keys, then ``[models.<model>]``, ``[losses.<loss>]`` and
   ``[cells."<model>-<loss>"]`` tables;
6. command-line flags (``--dataset``, ``--protocol``, ``--epochs`` …);
7. the cell itself (model, loss, run directory).

This module imports no torch at import time, so ``ssmrec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ssmrec.config import (
    PRESETS,
    PROTOCOLS,
    TrainConfig,
    applicable_only,
    build_config,
    merge_layers,
    read_config_file,
    upgrade_legacy,
)
from ssmrec.defaults import LOSS_DEFAULTS, LOSSES, MODEL_DEFAULTS, MODELS
from ssmrec.errors import ConfigError, SsmrecError

logger = logging.getLogger("ssmrec")

DEFAULT_MODELS = ("mf", "lightgcn")
DEFAULT_LOSSES = ("bpr", "bce", "mse", "ccl", "ssm", "softmax")
FINAL = "final_metrics.json"
CONFIG = "config.json"
INTERRUPTED = "interrupted"
IGNORED_WHEN_RESUMING = ("run",)
"""Config parts that may differ between the run that finished a cell and the grid run that skips it."""
MODEL_KEYS = ("data", "preset", "model", "layers", "dim", "propagation", "side", "alpha", "message_dropout")
"""Keys of a dataset preset that describe the model or data, not the loss: not taken from presets."""
COLUMNS = (
    "model",
    "loss",
    "valid_recall@20",
    "valid_ndcg@20",
    "test_recall@20",
    "test_ndcg@20",
    "best_epoch",
    "epochs_run",
    "stopped_by",
    "wall_seconds",
    "status",
)


@dataclass(frozen=True)
class GridSpec:
    """What to run: the combinations, where, and the settings layered into every cell."""

    models: tuple[str, ...]
    losses: tuple[str, ...]
    output: Path
    flags: dict[str, Any] = field(default_factory=dict)
    """Command-line settings (TrainConfig keys; ``data`` a dict of DataSpec keys)."""
    file: dict[str, Any] = field(default_factory=dict)
    """The parsed ``--config`` file."""
    where: str = ""


@dataclass
class CellResult:
    """One cell's outcome: ``done`` (trained now), ``finished`` (skipped: done before) or ``failed``."""

    model: str
    loss: str
    status: str
    run_dir: Path
    final: dict[str, Any] | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return cell_name(self.model, self.loss)


def cell_name(model: str, loss: str) -> str:
    return f"{model}-{loss}"


def _names(text: str | None, default: tuple[str, ...], known: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = default if text is None else tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} listed twice: {','.join(names)}")
    return names


def validate_grid_file(values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Check the shape of a grid config file: tables ``models``, ``losses``, ``cells`` name real cells."""
    for table, known in (("models", MODELS), ("losses", LOSSES), ("cells", None)):
        entries = values.get(table, {})
        if not isinstance(entries, dict):
            raise ConfigError(f"{where}{table}: expected a table of tables")
        for name, settings in entries.items():
            if not isinstance(settings, dict):
                raise ConfigError(f"{where}{table}.{name}: expected a table of settings")
            if known is not None and name not in known:
                raise ConfigError(f"{where}{table}.{name}: unknown name; choose from {', '.join(known)}")
            if table == "cells":
                model, _, loss = name.partition("-")
                if model not in MODELS or loss not in LOSSES:
                    raise ConfigError(
                        f"{where}cells.{name}: cells are named <model>-<loss>, e.g. lightgcn-ssm"
                    )
    return values


def _dataset_preset(loss: str, dataset: str | None) -> dict[str, Any]:
    """The loss keys of the ``<loss>-<dataset>`` preset (the full softmax uses SSM's)."""
    if not dataset:
        return {}
    preset = PRESETS.get(f"{'ssm' if loss == 'softmax' else loss}-{dataset}", {})
    return {key: value for key, value in preset.items() if key not in MODEL_KEYS and key != "loss"}


def cell_config(spec: GridSpec, model: str, loss: str) -> TrainConfig:
    """The resolved config of one cell (layers in the module docstring)."""
    file = dict(spec.file)
    per_model = file.pop("models", {}).get(model, {})
    per_loss = file.pop("losses", {}).get(loss, {})
    per_cell = file.pop("cells", {}).get(cell_name(model, loss), {})
    dataset = (spec.flags.get("data") or {}).get("dataset") or (file.get("data") or {}).get("dataset")
    identity = {
        "model": model,
        "loss": loss,
        "output": str(spec.output / cell_name(model, loss)),
        "name": cell_name(model, loss),
    }
    layers = [
        LOSS_DEFAULTS.get(loss, {}),
        _dataset_preset(loss, dataset),
        MODEL_DEFAULTS.get(model, {}),
        applicable_only(file, model, loss),
        per_model,
        per_loss,
        per_cell,
        spec.flags,
        identity,
    ]
    where = f"{spec.where}cell {cell_name(model, loss)}: "
    return build_config(merge_layers(*layers), where)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in IGNORED_WHEN_RESUMING}


def _differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``part.key`` of every setting whose value differs between two config dicts."""
    out = []
    for section in sorted(set(recorded) | set(wanted)):
        old, new = recorded.get(section), wanted.get(section)
        if isinstance(old, dict) and isinstance(new, dict):
            out += [f"{section}.{key}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        elif old != new:
            out.append(section)
    return out


def _check_finished(directory: Path, config: TrainConfig) -> None:
    recorded_path = directory / CONFIG
    if not recorded_path.is_file():
        return
    recorded_config = build_config(
        upgrade_legacy(json.loads(recorded_path.read_text())), f"{recorded_path}: "
    )
    recorded = _comparable(json.loads(json.dumps(recorded_config.to_dict())))
    wanted = _comparable(json.loads(json.dumps(config.to_dict())))
    changed = _differences(recorded, wanted)
    if changed:
        raise SsmrecError(
            f"{directory} finished with other settings ({', '.join(changed)} differ from this grid's); "
            "use another --output, or delete that cell's directory to rerun it"
        )


def _move_aside(directory: Path, output: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = output / INTERRUPTED / f"{directory.name}-{stamp}"
    suffix = 1
    while target.exists():
        suffix += 1
        target = output / INTERRUPTED / f"{directory.name}-{stamp}-{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    directory.rename(target)
    return target


def run_grid(spec: GridSpec, note: Any = None) -> list[CellResult]:
    """Run every cell of ``spec`` that is not finished; write the tables after each; return all cells.

    ``note(message)`` reports progress (default: the ``ssmrec`` logger). Every cell's config is
    resolved (and validated) before the first one trains.
    """
    from ssmrec import experiment as training  # torch is imported only when a grid actually runs

    say = note or logger.info
    cells = [(model, loss, cell_config(spec, model, loss)) for model in spec.models for loss in spec.losses]
    spec.output.mkdir(parents=True, exist_ok=True)
    results: list[CellResult] = []
    for index, (model, loss, config) in enumerate(cells, start=1):
        directory = spec.output / cell_name(model, loss)
        label = f"[{index}/{len(cells)}] {cell_name(model, loss)}"
        if (directory / FINAL).is_file() and not _was_interrupted(directory):
            _check_finished(directory, config)
            say(f"{label}: finished before, skipped")
            final = json.loads((directory / FINAL).read_text())
            results.append(CellResult(model, loss, "finished", directory, final))
            write_tables(spec, results, cells)
            continue
        resumable = (directory / CONFIG).is_file() and (directory / "data.json").is_file()
        if resumable:
            _check_finished(directory, config)
        elif directory.exists():
            moved = _move_aside(directory, spec.output)
            say(f"{label}: unfinished run moved to {moved}")
        say(f"{label}: {'resuming from its checkpoint' if resumable else 'training'}")
        try:
            placement = {key: getattr(config.run, key) for key in ("device", "deterministic")}
            result = training.resume(directory, placement) if resumable else training.train(config)
            if result.final.get("interrupted"):  # Ctrl-C: train() kept the run; the grid stops here
                raise KeyboardInterrupt
            results.append(CellResult(model, loss, "done", directory, result.final))
        except KeyboardInterrupt:
            write_tables(spec, results, cells)
            raise
        except Exception as error:  # one failing cell must not cost the others
            say(f"{label}: FAILED: {error}")
            logger.debug("%s", traceback.format_exc())
            results.append(
                CellResult(model, loss, "failed", directory, error=f"{type(error).__name__}: {error}")
            )
        write_tables(spec, results, cells)
    return results


def _was_interrupted(directory: Path) -> bool:
    """A cell stopped by Ctrl-C has final metrics but did not finish its schedule: it is re-run."""
    return bool(json.loads((directory / FINAL).read_text()).get("interrupted"))


def _metric(final: dict[str, Any] | None, split: str, name: str) -> float | None:
    if not final or split not in final:
        return None
    value = final[split].get(name)
    return None if value is None else float(value)


def table_rows(results: list[CellResult], cells: list[tuple[str, str, TrainConfig]]) -> list[dict[str, Any]]:
    """One row per cell (pending cells included), in grid order."""
    by_name = {result.name: result for result in results}
    rows = []
    for model, loss, _ in cells:
        result = by_name.get(cell_name(model, loss))
        final = result.final if result else None
        rows.append(
            {
                "model": model,
                "loss": loss,
                "valid_recall@20": _metric(final, "valid", "recall@20"),
                "valid_ndcg@20": _metric(final, "valid", "ndcg@20"),
                "test_recall@20": _metric(final, "test", "recall@20"),
                "test_ndcg@20": _metric(final, "test", "ndcg@20"),
                "best_epoch": final.get("best_epoch") if final else None,
                "epochs_run": final.get("epochs_run") if final else None,
                "stopped_by": _stopped_by(final),
                "wall_seconds": final.get("wall_seconds") if final else None,
                "status": (result.status if result.status != "failed" else f"failed: {result.error}")
                if result
                else "pending",
            }
        )
    return rows


def _stopped_by(final: dict[str, Any] | None) -> str | None:
    """Why a cell ended: early stop, time budget, max epochs or interrupted (older runs: from the flags)."""
    if not final:
        return None
    if "stopped_by" in final:
        return str(final["stopped_by"])
    return "early stop" if final.get("stopped_early") else "max epochs"


def _markdown_cell(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key == "wall_seconds":
        minutes, seconds = divmod(round(value), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def write_tables(
    spec: GridSpec, results: list[CellResult], cells: list[tuple[str, str, TrainConfig]]
) -> None:
    """Rewrite ``grid.md`` and ``grid.csv`` (atomically) from the cells known so far."""
    from ssmrec.experiment import PAPER_PROTOCOL_NOTE
    from ssmrec.rundir import atomic_write_bytes

    rows = table_rows(results, cells)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    atomic_write_bytes(spec.output / "grid.csv", buffer.getvalue().encode())

    config = cells[0][2]
    dataset = config.data.dataset or config.data.path
    headers = ("model", "loss", "valid R@20", "valid N@20", "test R@20", "test N@20", "best epoch",
               "epochs", "stopped by", "wall time", "status")  # fmt: skip
    lines = [
        f"# ssmrec grid: {dataset}",
        "",
        f"Protocol `{config.protocol}`: model selection on the {config.selection_split} split by "
        f"{config.evaluation.metric}. Each cell is a run directory `<model>-<loss>/` under this folder "
        "(its `config.json` holds every setting).",
    ]
    if config.protocol == "paper":
        lines += ["", f"**Note:** {PAPER_PROTOCOL_NOTE}."]
    lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_cell(key, row[key]) for key in COLUMNS) + " |")
    atomic_write_bytes(spec.output / "grid.md", ("\n".join(lines) + "\n").encode())


# ---------------------------------------------------------------------------------------------- CLI


def add_grid_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ssmrec grid`` (called by :func:`ssmrec.cli.build_parser`)."""
    parser = subparsers.add_parser(
        "grid",
        help="train every model x loss combination and tabulate Recall/NDCG@20",
        description="Train each MODEL x LOSS cell in turn (resumable: finished cells are skipped), each "
        "with its loss's defaults from the papers (ssmrec.defaults), then write grid.md and grid.csv.",
    )
    parser.add_argument("--dataset", help="registered dataset name, e.g. gowalla")
    parser.add_argument("--data", help="path to a data folder or file instead of a registered name")
    parser.add_argument(
        "--models", help=f"comma-separated, from {','.join(MODELS)} (default {','.join(DEFAULT_MODELS)})"
    )
    parser.add_argument(
        "--losses", help=f"comma-separated, from {','.join(LOSSES)} (default {','.join(DEFAULT_LOSSES)})"
    )
    parser.add_argument(
        "--config",
        help='TOML/YAML: top-level keys for every cell, [models.NAME], [losses.NAME], [cells."MODEL-LOSS"]',
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, help="standard (select on valid) or paper (on test)")
    parser.add_argument("--epochs", type=int, help="maximum epochs per cell")
    parser.add_argument("--patience", type=int, help="evaluations without gain before a cell stops")
    parser.add_argument("--eval-every", dest="eval_every", type=int, help="evaluate every N epochs")
    parser.add_argument(
        "--max-minutes",
        dest="max_minutes",
        type=float,
        help="time budget per cell: it stops (and evaluates) at the end of the epoch that passes it",
    )
    parser.add_argument("--seed", type=int, help="seed of every cell")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--device", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--deterministic", action="store_const", const=True, default=None, help="deterministic algorithms"
    )
    parser.add_argument("--output", help="grid folder (default runs/grid-<dataset>)")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bars"
    )
    parser.set_defaults(handler=_grid_command)


def _grid_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    file = validate_grid_file(read_config_file(args.config), f"{args.config}: ") if args.config else {}
    flags: dict[str, Any] = {}
    keys = ("protocol", "epochs", "patience", "eval_every", "max_minutes", "seed", "threads", "progress")
    for key in (*keys, "device", "deterministic"):
        value = getattr(args, key)
        if value is not None:
            flags[key] = value
    data = {key: value for key, value in (("dataset", args.dataset), ("path", args.data)) if value}
    if data:
        flags["data"] = data
    file_data = file.get("data") or {}
    if not (data or file_data.get("dataset") or file_data.get("path")):
        raise SsmrecError("no data: give --dataset NAME or --data PATH (or data in --config)")
    name = (
        data.get("dataset")
        or Path(data.get("path") or file_data.get("dataset") or file_data.get("path")).name
    )
    spec = GridSpec(
        models=_names(args.models, DEFAULT_MODELS, MODELS, "models"),
        losses=_names(args.losses, DEFAULT_LOSSES, LOSSES, "losses"),
        output=Path(args.output) if args.output else Path("runs") / f"grid-{name}",
        flags=flags,
        file=file,
        where=f"{args.config}: " if args.config else "",
    )

    def note(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = run_grid(spec, note)
    failed = [result.name for result in results if result.status == "failed"]
    print(f"table written to {spec.output / 'grid.md'} and grid.csv")
    if failed:
        print(f"failed cells (rerun the same command to retry them): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
