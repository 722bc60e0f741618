"""The ``ssmrec`` command line: ``train``, ``evaluate``, ``analyze``, ``compare``, ``tune`` and ``data info``.

Flags default to ``None`` so that only flags the user typed override the config file and preset.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ssmrec import __version__
from ssmrec.config import PRESETS, PROTOCOLS, read_config_file, resolve_config
from ssmrec.data.spec import FORMATS
from ssmrec.errors import SsmrecError, StorageError, describe_os_error
from ssmrec.grid import add_grid_parser
from ssmrec.runtime import retain_freed_memory
from ssmrec.serving.commands import add_serving_parsers
from ssmrec.tuning.commands import add_tune_parser


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _pair(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected two numbers like 0.5,0.5, got {text!r}") from error


# flag, config key ("data." prefix: a DataSpec key), type, help
TRAIN_FLAGS: list[tuple[str, str, Callable[[str], Any], str]] = [
    (
        "--dataset",
        "data.dataset",
        str,
        "registered dataset name (gowalla, yelp2018, amazon-book, ml-100k, ...)",
    ),
    ("--data", "data.path", str, "path to a data folder or file instead of a registered name"),
    ("--format", "data.format", str, "data format: auto, lightgcn, triples, pairs, atomic, csv"),
    ("--rating-threshold", "data.rating_threshold", float, "keep interactions with rating >= this"),
    ("--split", "data.split", str, "how to split unsplit data: ratio or leave-last-out"),
    ("--test-ratio", "data.test_ratio", float, "test share per user when splitting unsplit data"),
    ("--valid-ratio", "data.valid_ratio", float, "validation share carved from train when there is none"),
    ("--split-seed", "data.split_seed", int, "seed of the data split"),
    ("--model", "model", str, "mf, lightgcn, history (LightGCN side=user, 1 layer) or ngcf"),
    ("--layers", "layers", int, "LightGCN / NGCF propagation layers"),
    ("--dim", "dim", int, "embedding size"),
    ("--propagation", "propagation", str, "LightGCN batch encoding: auto, full or local"),
    ("--side", "side", str, "LightGCN graph: both, user (users aggregate items) or item"),
    ("--alpha", "alpha", _pair, "LightGCN normalisation exponents LEFT,RIGHT of D^-left A D^-right"),
    ("--dropout", "message_dropout", float, "NGCF message dropout"),
    ("--loss", "loss", str, "ssm, softmax, bpr, bce, mse, ccl, bsl or adap-tau"),
    ("--temperature", "temperature", float, "softmax temperature tau (BSL: the negatives' tau2)"),
    ("--learn-temperature", "learn_temperature", _boolean, "true: learn tau as one scalar"),
    ("--positive-temperature", "positive_temperature", float, "BSL: tau1 of the positive term"),
    ("--similarity", "similarity", str, "softmax losses' similarity: cosine or dot"),
    ("--negatives", "negatives", str, "in-batch, uniform, popularity, shared or mixed (default: the loss's)"),
    ("--num-negatives", "num_negatives", int, "sampled negatives M per positive (or per batch if shared)"),
    ("--beta", "beta", float, "popularity^beta of popularity, shared and mixed negatives"),
    ("--exclude", "exclude", str, "mask accidental hits: none, duplicates (of the positive) or train"),
    ("--positive-in-denominator", "positive_in_denominator", _boolean, "true (SSM) or false (SL form)"),
    ("--logq", "logq", str, "none, standard or corrected (sampled softmax losses)"),
    ("--margin", "margin", float, "CCL margin"),
    (
        "--negative-weight",
        "negative_weight",
        float,
        "CCL/BCE/MSE: weight of the mean negative term; BSL: weight of the negatives' log-sum (tau2/tau1)",
    ),
    ("--softmax-chunk-size", "softmax_chunk_size", int, "items per chunk of the full softmax"),
    ("--adaptive-warmup", "adaptive_warmup", int, "Adap-tau: epochs with the fixed warm-up gap"),
    ("--adaptive-scale", "adaptive_scale", float, "Adap-tau: Lambert-W scale t2 of the user losses"),
    ("--reduction", "reduction", str, "sum or mean over the batch (default: the loss's own)"),
    ("--reg", "reg", float, "L2 weight on the batch's ego embeddings: reg/2 * sum ||e||^2"),
    ("--lr", "lr", float, "Adam learning rate"),
    ("--batch-size", "batch_size", int, "training pairs per batch"),
    ("--epochs", "epochs", int, "maximum epochs"),
    ("--eval-every", "eval_every", int, "evaluate every N epochs"),
    ("--patience", "patience", int, "stop after this many evaluations without gain"),
    ("--max-minutes", "max_minutes", float, "time budget: stop and evaluate after the epoch that passes it"),
    ("--metric", "metric", str, "model-selection metric, e.g. recall@20"),
    ("--ks", "ks", lambda text: [int(k) for k in text.split(",")], "cut-offs, e.g. 10,20,50"),
    ("--rank-by", "rank_by", str, "ranking score: dot (paper default) or cosine"),
    ("--eval-chunk-size", "eval_chunk_size", int, "users scored at once during evaluation"),
    ("--protocol", "protocol", str, f"{' or '.join(PROTOCOLS)}: paper selects the best epoch on TEST"),
    ("--seed", "seed", int, "seed of initialisation and sampling"),
    ("--threads", "threads", int, "torch intra-op threads"),
    ("--device", "device", str, "auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps"),
    ("--precision", "precision", str, "training arithmetic: fp32 (default) or bf16 autocast"),
    ("--output", "output", str, "run directory (default runs/<name>)"),
    ("--checkpoint-every", "checkpoint_every", int, "write a resumable checkpoint every N epochs"),
    ("--keep-checkpoint", "keep_checkpoint", _boolean, "true: a finished run keeps its last checkpoint"),
    ("--name", "name", str, "run name under runs/"),
    ("--dist-timeout", "dist_timeout", float, "under torchrun: seconds a collective waits for a lost rank"),
]


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model and write a run directory",
        description="Train a model with one objective; evaluate by full ranking; write runs/<name>/.",
        epilog=f"presets: {', '.join(PRESETS)}",
    )
    parser.add_argument("--config", help="TOML or YAML config file; flags override it")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpoint with its own settings "
        "(only --epochs, --max-minutes, --patience, --threads, --no-progress may be given)",
    )
    parser.add_argument("--preset", help=f"named settings: {', '.join(PRESETS)}")
    for flag, key, kind, text in TRAIN_FLAGS:
        parser.add_argument(
            flag, dest=key, type=kind, default=None, help=text, metavar=key.split(".")[-1].upper()
        )
    add_switches(parser)
    parser.set_defaults(handler=_train)


SWITCH_KEYS = ("progress", "deterministic")
"""The settings :func:`add_switches` sets (their ``dest``), read back by ``_flag_values``."""


def add_switches(parser: argparse.ArgumentParser) -> None:
    """The train settings given as bare switches (no value); ``_flag_values`` reads them."""
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bars"
    )
    parser.add_argument(
        "--deterministic",
        action="store_const",
        const=True,
        default=None,
        help="torch's deterministic algorithms (run-to-run equal on one GPU; slower on CUDA)",
    )


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    keys = [key for _, key, _, _ in TRAIN_FLAGS] + ["preset", *SWITCH_KEYS]
    for key in keys:
        value = getattr(args, key)
        if value is None:
            continue
        if key.startswith("data."):
            values.setdefault("data", {})[key.removeprefix("data.")] = value
        else:
            values[key] = value
    return values


def _train(args: argparse.Namespace) -> int:
    from ssmrec.experiment import resume, train

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.resume:
        if args.config or args.preset:
            raise SsmrecError("--resume continues a run with its own settings: give no --config or --preset")
        result = resume(args.resume, _flag_values(args))
    else:
        file_values = read_config_file(args.config) if args.config else {}
        where = f"{args.config}: " if args.config else ""
        config = resolve_config(file_values, _flag_values(args), where)
        if not config.data.dataset and not config.data.path:
            raise SsmrecError("no data: give --dataset NAME, --data PATH, or a --preset")
        result = train(config)
    if result.primary:  # rank 0 of a several-process run reports it
        summary = {"run_dir": str(result.run_dir), **result.final}
        print(json.dumps(summary, indent=2))
    return result.exit_code


def _evaluate(args: argparse.Namespace) -> int:
    from ssmrec.device import resolve_device
    from ssmrec.experiment import PAPER_PROTOCOL_NOTE, evaluate_split, load_run

    device = resolve_device(args.device)
    warnings: list[str] = []
    config, data, model = load_run(args.run_dir, force=args.force, warnings=warnings, device=device)
    for warning in warnings:
        print(f"ssmrec: warning: {warning}", file=sys.stderr)
    splits = [s for s in args.splits.split(",") if s]
    out: dict[str, Any] = {"run_dir": str(Path(args.run_dir)), "protocol": config.protocol}
    if warnings:
        out["warnings"] = warnings
    if config.protocol == "paper":
        out["note"] = PAPER_PROTOCOL_NOTE
    for split in splits:
        if split not in ("valid", "test"):
            raise SsmrecError(f"unknown split {split!r}; choose valid and/or test")
        if split == "valid" and data.valid is None:
            continue
        out[split] = evaluate_split(model, data, split, config)
    print(json.dumps(out, indent=2))
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from ssmrec.analysis import analyze_runs, default_output, write_report
    from ssmrec.analysis.report import command_line
    from ssmrec.device import resolve_device

    device = resolve_device(args.device)  # before anything is written
    output = Path(args.output) if args.output else default_output(args.run_dirs[0])
    if output.exists() and (not output.is_dir() or any(output.iterdir())):  # fail before the work
        raise SsmrecError(f"output {output} already exists and is not empty; choose another")
    analysis = analyze_runs(args.run_dirs, args.sample_users, args.seed, progress=_note, device=device)
    written = write_report(analysis, output, command_line())
    print(f"report written to {written / 'report.md'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ssmrec.analysis import analyze_runs, text_report
    from ssmrec.device import resolve_device

    analysis = analyze_runs(
        args.run_dirs, args.sample_users, args.seed, progress=_note, device=resolve_device(args.device)
    )
    print(text_report(analysis), end="")
    return 0


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _add_analysis_parsers(subparsers: argparse._SubParsersAction) -> None:
    for name, handler, text in (
        ("analyze", _analyze, "write a report (Markdown + PNG figures) checking the SSM paper's claims"),
        ("compare", _compare, "print the analysis report's tables for runs in the terminal"),
    ):
        parser = subparsers.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}: popularity bias per equal-mass popularity group, "
            "representation norm vs degree, hard-negative gradient shares, the softmax loss vs -log DCG "
            "bound, training curves. Reads only the run directories and their dataset; never retrains.",
        )
        parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories on one dataset")
        if name == "analyze":
            parser.add_argument("--output", help="report folder (default: RUN_DIR/../analysis-<timestamp>)")
        parser.add_argument(
            "--sample-users",
            type=int,
            default=2000,
            help="users sampled for the bound, and training pairs for hard negatives (default 2000)",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of those samples (default 0)")
        _add_device_flag(parser)
        parser.set_defaults(handler=handler)


def _add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps"
    )


def _data_info(args: argparse.Namespace) -> int:
    from ssmrec.data import DataSpec, describe, load_dataset

    spec = DataSpec.for_target(args.target, valid_ratio=0.0, format=args.format)
    print(describe(load_dataset(spec)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssmrec",
        description="Item recommendation with the sampled softmax loss: train, evaluate, inspect data.",
    )
    parser.add_argument("--version", action="version", version=f"ssmrec {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(subparsers)
    evaluate = subparsers.add_parser(
        "evaluate",
        help="re-evaluate a run directory's saved weights",
        description="Load RUN_DIR's config and best weights; print metrics.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--splits", default="valid,test", help="comma-separated: valid,test")
    evaluate.add_argument(
        "--force", action="store_true", help="evaluate although the run's files or data no longer match"
    )
    _add_device_flag(evaluate)
    evaluate.set_defaults(handler=_evaluate)
    _add_analysis_parsers(subparsers)
    add_grid_parser(subparsers)
    add_serving_parsers(subparsers)
    add_tune_parser(subparsers, TRAIN_FLAGS, _flag_values, add_switches)
    data = subparsers.add_parser("data", help="inspect datasets", description="Inspect datasets.")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    info = data_commands.add_parser(
        "info",
        help="counts and sparsity of a dataset",
        description="Print counts, sparsity and cleaning report of NAME or PATH.",
    )
    info.add_argument("target", metavar="NAME|PATH")
    info.add_argument("--format", default="auto", choices=FORMATS, help="data format (default: detect)")
    info.set_defaults(handler=_data_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()  # large-table steps reuse freed memory instead of faulting in fresh pages
    try:
        return args.handler(args)
    except SsmrecError as error:
        print(f"ssmrec: error: {error}", file=sys.stderr)
        return error.exit_code
    except FileExistsError as error:  # an occupied --output: the command line must change
        print(f"ssmrec: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ssmrec data info X | head -1`: the reader left, which is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 0
    except OSError as error:  # the disk or the OS refused (full, read-only): say which file, no traceback
        print(f"ssmrec: error: {describe_os_error(error)}", file=sys.stderr)
        return StorageError.exit_code
    except KeyboardInterrupt:
        print("ssmrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
