"""``ssmrec tune``: the command line of the tuner (registered by :func:`ssmrec.cli.build_parser`).

It takes the train flags for the settings it holds fixed (``--epochs``, ``--dim``, ``--seed`` …) and its
own for the study. This module imports neither torch nor Optuna at import time, so ``ssmrec --help``
stays fast and works without the ``tune`` extra.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

NOT_FIXED = ("--output", "--name")
"""Train flags tune does not take: each trial's run directory is chosen by the tuner."""


def add_tune_parser(
    subparsers: argparse._SubParsersAction,
    train_flags: list[tuple[str, str, Callable[[str], Any], str]],
    flag_values: Callable[[argparse.Namespace], dict[str, Any]],
    add_switches: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``ssmrec tune``; ``train_flags``, ``flag_values`` and ``add_switches`` are ``ssmrec
    train``'s flag table, its reader and its bare switches, so a fixed setting is spelled the same in
    both commands."""
    parser = subparsers.add_parser(
        "tune",
        help="tune a model and loss with Optuna (TPE, pruning) on the validation split",
        description="Search the loss's and model's hyperparameters (space: ssmrec.defaults, or --space) "
        "with Optuna's TPE sampler and median pruner; every trial is a run directory selected on a "
        "validation split carved from train. The study is stored (SQLite) and continues when run again; "
        "several processes on one --storage and --output share it. Writes trials.csv/.md, "
        "importances.json, history.png, best.toml and report.md to --output.",
    )
    parser.add_argument("--config", help="TOML or YAML config file of fixed settings; flags override it")
    parser.add_argument("--preset", help="named fixed settings (as for ssmrec train)")
    parser.add_argument("--space", help="TOML search space: replaces or adds entries of the default one")
    parser.add_argument("--trials", type=int, help="trials of the study in total (all processes)")
    parser.add_argument(
        "--budget-minutes", type=float, help="this process starts no trial after this many minutes"
    )
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUTPUT/study.db)")
    parser.add_argument("--study-name", help="study name (default DATA-MODEL-LOSS)")
    parser.add_argument(
        "--output", dest="tune_output", help="tuning folder (default runs/tune-DATA-MODEL-LOSS)"
    )
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    parser.add_argument("--no-prune", action="store_true", help="never prune a trial")
    parser.add_argument(
        "--prune-startup", type=int, default=5, help="trials completed before pruning starts (default 5)"
    )
    parser.add_argument(
        "--prune-warmup", type=int, default=5, help="epochs a trial runs before it can be pruned (default 5)"
    )
    parser.add_argument(
        "--refit",
        action="store_true",
        help="finally train the best setting on train + validation for its selected epochs, test once",
    )
    parser.add_argument(
        "--baseline-first",
        action="store_true",
        help="a new study's first trial runs the fixed settings' own values of the searched keys "
        "(the preset's, or the defaults table's), so the best trial is never worse than them on validation",
    )
    for flag, key, kind, text in train_flags:
        if flag not in NOT_FIXED:
            parser.add_argument(
                flag, dest=key, type=kind, default=None, help=text, metavar=key.split(".")[-1].upper()
            )
    add_switches(parser)
    for flag, key, *_ in train_flags:
        if flag in NOT_FIXED:
            parser.set_defaults(**{key: None})
    parser.set_defaults(handler=lambda args: tune_command(args, flag_values))


def tune_command(
    args: argparse.Namespace, flag_values: Callable[[argparse.Namespace], dict[str, Any]]
) -> int:
    from ssmrec import distributed
    from ssmrec.config import read_config_file, resolve_config
    from ssmrec.errors import ConfigError
    from ssmrec.tuning.report import refit_best, write_outputs
    from ssmrec.tuning.space import build_space
    from ssmrec.tuning.study import TuneSpec, import_optuna, refit_lock, run_study, wait_for_live_trials

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    import_optuna()
    for name in ("trials", "prune_startup", "prune_warmup"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "trials" else 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be {'>= 1' if name == 'trials' else '>= 0'}")
    if args.budget_minutes is not None and not args.budget_minutes > 0:
        raise ConfigError("--budget-minutes must be > 0")
    if args.trials is None and args.budget_minutes is None:
        raise ConfigError("give --trials N (the study's total) and/or --budget-minutes M, or tune never ends")
    file_values = read_config_file(args.config) if args.config else {}
    where = f"{args.config}: " if args.config else ""
    flags = flag_values(args)
    base = resolve_config(file_values, flags, where)
    space = build_space(base.model.name, base.loss.name, args.space, file_values, flags)
    data_name = base.data.dataset or Path(base.data.path or "data").name
    output = Path(args.tune_output or Path("runs") / f"tune-{data_name}-{base.model.name}-{base.loss.name}")
    spec = TuneSpec(
        output=output,
        space=space,
        file_values=file_values,
        flag_values=flags,
        where=where,
        trials=args.trials,
        budget_minutes=args.budget_minutes,
        storage=args.storage,
        study_name=args.study_name,
        sampler_seed=args.sampler_seed,
        prune=not args.no_prune,
        prune_startup=args.prune_startup,
        prune_warmup=args.prune_warmup,
        refit=args.refit,
        baseline_first=args.baseline_first,
    )
    spec.base_config()  # refuses the paper protocol before anything is written

    def note(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with distributed.independent_workers() as local_rank:  # under torchrun: one worker per process
        if local_rank is not None:
            note(
                f"torchrun: this process (local rank {local_rank}) is one worker of the study; it trains "
                "its own trials and joins no process group"
            )
        study = run_study(spec, note, lambda study: write_outputs(study, spec))
        refit = None
        if spec.refit:
            wait_for_live_trials(study, spec, note)
            with refit_lock(output):
                refit = refit_best(study, spec, note)
    write_outputs(study, spec, refit)
    print(f"report written to {output / 'report.md'}; best config in {output / 'best.toml'}")
    return 0
