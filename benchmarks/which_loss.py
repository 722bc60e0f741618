"""Which loss for which data: tuned SSM against tuned BPR and BCE under the same trial budget.

For every dataset × model × loss cell, one ``ssmrec tune`` study with the same budget (``--trials`` and
``--budget-minutes``), selected on the validation split only. The test split is then used once per cell:
``--refit`` (best setting on train + validation for its selected epochs, test once) where the data has
no shipped validation file, else the best trial's saved weights evaluated on test once
(``ssmrec evaluate --splits test``). A cell whose study is stopped continues when this script runs again
(the studies live in SQLite under ``--output``).

    python benchmarks/which_loss.py --datasets ml-100k,lastfm --budget-minutes 3 --output ../runs/which-loss
Writes benchmarks/results/which_loss.json and which_loss.md (with the command line; ``--results-name``
chooses another name).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _results import write_results

REPO = Path(__file__).resolve().parents[1]


def tune_cell(args: argparse.Namespace, dataset: str, model: str, loss: str, refit: bool) -> Path:
    output = Path(args.output) / f"{dataset}-{model}-{loss}"
    command = [
        sys.executable, "-m", "ssmrec", "tune", "--dataset", dataset, "--model", model, "--loss", loss,
        "--trials", str(args.trials), "--budget-minutes", str(args.budget_minutes),
        "--epochs", str(args.epochs), "--patience", str(args.patience), "--threads", str(args.threads),
        "--no-progress", "--output", str(output),
    ]  # fmt: skip
    if refit:
        command.append("--refit")
    if args.baseline_first:
        command.append("--baseline-first")
    if args.max_minutes is not None:
        command += ["--max-minutes", str(args.max_minutes)]
    print(f"== {dataset} {model} {loss}: {' '.join(command[2:])}", flush=True)
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    return output


def cell_result(output: Path, refit: bool, threads: int) -> dict[str, Any]:
    """The cell's validation-selected trial and its test numbers (measured once, never selected on)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{output / 'study.db'}")
    best = study.best_trial
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    row: dict[str, Any] = {
        "trials": len(finished),
        "best_trial": best.number,
        "params": best.params,
        "valid": best.value,
        "best_epoch": best.user_attrs.get("best_epoch"),
        "epochs_run": best.user_attrs.get("epochs_run"),
        "stopped_by": best.user_attrs.get("stopped_by"),
    }
    if refit:
        final = json.loads((output / f"refit-trial-{best.number:04d}" / "final_metrics.json").read_text())
        row["test"], row["test_from"] = final["test"], "refit on train + validation, test once"
    else:
        run_dir = output / "trials" / (best.user_attrs.get("run_dir_name") or f"trial-{best.number:04d}")
        shown = subprocess.run(
            [sys.executable, "-m", "ssmrec", "evaluate", str(run_dir), "--splits", "test"],
            check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )  # fmt: skip
        row["test"], row["test_from"] = json.loads(shown.stdout)["test"], "best trial's weights, test once"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="ml-100k,lastfm")
    parser.add_argument("--models", default="mf,lightgcn")
    parser.add_argument("--losses", default="ssm,bpr,bce")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--budget-minutes", type=float, default=3.0, help="per study and run of this script")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--baseline-first",
        action="store_true",
        help="each study's first trial is the loss's defaults-table setting (with --trials 1: only that)",
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="wall-clock cap of each trial (equal time per cell)"
    )
    parser.add_argument(
        "--no-refit",
        action="store_true",
        help="test the best trial's weights once instead of refitting on train + validation (half the cost)",
    )
    parser.add_argument("--output", default=str(REPO.parent / "runs" / "which-loss"))
    parser.add_argument(
        "--results-name",
        default="which_loss",
        help="file name under benchmarks/results/ (another name keeps an earlier table of other datasets)",
    )
    args = parser.parse_args()

    from ssmrec.data import DataSpec, load_dataset

    rows = []
    started = time.perf_counter()
    for dataset in args.datasets.split(","):
        shipped_valid = load_dataset(DataSpec(dataset=dataset, valid_ratio=0.0)).valid is not None
        refit = not shipped_valid and not args.no_refit  # a shipped split cannot be merged into train
        for model in args.models.split(","):
            for loss in args.losses.split(","):
                output = tune_cell(args, dataset, model, loss, refit)
                result = cell_result(output, refit, args.threads)
                row = {"dataset": dataset, "model": model, "loss": loss, **result}
                print(json.dumps(row), flush=True)
                rows.append(row)
    lines = [
        f"`python benchmarks/which_loss.py {' '.join(sys.argv[1:])}`",
        "",
        "| dataset | model | loss | trials | best epoch | epochs run (stopped by) | valid R@20 | test R@20 "
        "| test N@20 | test from | best params |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        params = ", ".join(
            f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in row["params"].items()
        )
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['loss']} | {row['trials']} | {row['best_epoch']} | "
            f"{row['epochs_run']} ({row['stopped_by']}) | "
            f"{row['valid']:.4f} | "
            f"{row['test']['recall@20']:.4f} | {row['test']['ndcg@20']:.4f} | {row['test_from']} | {params} |"
        )
    write_results(
        args.results_name,
        {"rows": rows, "settings": vars(args), "wall_seconds": time.perf_counter() - started},
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
