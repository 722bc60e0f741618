"""Scale: one LightGCN-1L + SSM epoch and one full-ranking evaluation on synthetic data, 1 M × 1 M.

For each interaction count (default 5 M, 10 M, 20 M draws over 1 M users × 1 M items, power-law
activity and popularity with planted clusters: :mod:`ssmrec.data.synthetic`) a fresh process
generates the data, builds the model with the ssm-gowalla settings (batch 2048, d = 64, Adam,
in-batch SSM) and reports, each timed separately:

* data generation and graph construction;
* training: ``--batches`` batches timed through the library's own epoch loop
  (:meth:`ssmrec.trainer.Trainer.train_epoch` over a random sample of that many batches of training pairs;
  the model, optimiser and graph are the full-size ones), and the per-batch time × the epoch's batch
  count as the projected full epoch (``--batches 0``: the whole epoch, measured);
* evaluation: exact full ranking (all 1 M items) for ``--eval-users`` random test users, and the
  projection to every test user (``--eval-users 0``: all of them, measured);
* peak resident memory of the process (``ru_maxrss``), which includes data generation.

Projections are labelled as such in the output; they are per-batch / per-user rates × counts, valid
because every batch (user chunk) does the same work against full-size tables.

    python benchmarks/bench_scale.py [--interactions 5000000,10000000,20000000] [--batches 200]
        [--eval-users 20000] [--name scale]
Writes benchmarks/results/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n_users: int, n_items: int, n_interactions: int, batches: int, eval_users: int) -> dict:
    """One size, in this process (the parent runs each size in a fresh one for its own peak memory)."""
    from ssmrec.config import resolve_config
    from ssmrec.data.synthetic import synthetic_interactions
    from ssmrec.evaluate import evaluate_ranking
    from ssmrec.experiment import build_training, schedule_of
    from ssmrec.sampling import TrainingPairs
    from ssmrec.trainer import Trainer, seed_everything

    tick = time.perf_counter()
    data = synthetic_interactions(n_users, n_items, n_interactions, seed=0)
    generate_seconds = time.perf_counter() - tick
    config = resolve_config(flag_values={"preset": "ssm-gowalla", "progress": False})
    rng = seed_everything(config.optim.seed)
    tick = time.perf_counter()
    setup = build_training(config, data)
    build_seconds = time.perf_counter() - tick

    all_pairs = TrainingPairs(data.train)
    epoch_batches = all_pairs.n_batches(config.optim.batch_size)
    sample = data.train
    if 0 < batches < epoch_batches:
        coo = data.train.tocoo()
        keep = np.sort(rng.choice(coo.nnz, batches * config.optim.batch_size, replace=False))
        sample = sp.csr_matrix(
            (coo.data[keep], (coo.row[keep], coo.col[keep])), shape=data.train.shape, dtype=coo.data.dtype
        )
    pairs = TrainingPairs(sample)
    tick = time.perf_counter()
    Trainer(setup, data, schedule_of(config), rng, pairs=pairs).train_epoch("scale")
    train_seconds = time.perf_counter() - tick
    per_batch = train_seconds / pairs.n_batches(config.optim.batch_size)

    test_users = np.flatnonzero(np.diff(data.test.indptr))
    chosen = test_users
    if 0 < eval_users < len(test_users):
        chosen = np.sort(rng.choice(test_users, eval_users, replace=False))
    users, items = setup.model.representations()
    tick = time.perf_counter()
    metrics = evaluate_ranking(
        users[torch.from_numpy(chosen)], items, data.test[chosen], exclude=[data.train[chosen]], ks=(20,)
    )
    eval_seconds = time.perf_counter() - tick
    return {
        "users": n_users,
        "items": n_items,
        "interactions_drawn": n_interactions,
        "train_interactions": int(data.train.nnz),
        "test_interactions": int(data.test.nnz),
        "generate_seconds": generate_seconds,
        "build_seconds": build_seconds,
        "epoch_batches": epoch_batches,
        "timed_batches": pairs.n_batches(config.optim.batch_size),
        "train_seconds_timed": train_seconds,
        "seconds_per_batch": per_batch,
        "epoch_seconds": per_batch * epoch_batches,
        "epoch_projected": pairs.n_batches(config.optim.batch_size) < epoch_batches,
        "eval_users_timed": len(chosen),
        "eval_users_total": len(test_users),
        "eval_seconds_timed": eval_seconds,
        "eval_seconds": eval_seconds / len(chosen) * len(test_users),
        "eval_projected": len(chosen) < len(test_users),
        "recall@20_timed_users": metrics["recall@20"],
        "peak_rss_mb": _peak_mb(),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", default="5000000,10000000,20000000", help="comma-separated draws")
    parser.add_argument("--batches", type=int, default=200, help="batches timed (0: the whole epoch)")
    parser.add_argument("--eval-users", type=int, default=20_000, help="users ranked (0: all test users)")
    parser.add_argument("--name", default="scale", help="results/<name>.json and .md")
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave malloc as it is (the CLI, and this script by default, apply ssmrec.runtime)",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args()
    if args.one is not None:
        from ssmrec.runtime import retain_freed_memory

        retained = False if args.glibc_defaults else retain_freed_memory()
        row = measure(args.users, args.items, args.one, args.batches, args.eval_users)
        print(json.dumps({**row, "retain_freed_memory": retained}))
        return

    from _results import write_results

    from ssmrec.rundir import environment

    rows = []
    for count in (int(text) for text in args.interactions.split(",")):
        command = [sys.executable, __file__, "--one", str(count), "--users", str(args.users),
                   "--items", str(args.items), "--batches", str(args.batches),
                   "--eval-users", str(args.eval_users)]  # fmt: skip
        command += ["--glibc-defaults"] if args.glibc_defaults else []
        print(f"{count:,} interactions ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {"environment": environment(), "command": " ".join(sys.argv), "results": rows}
    lines = [
        f"Synthetic {args.users:,} users × {args.items:,} items, LightGCN-1L + SSM (ssm-gowalla settings). "
        "Projected values (marked *) are measured per-batch / per-user rates × the full counts.",
        "",
        "| drawn | train pairs | generate s | build s | epoch s | s / batch | full eval s | peak RSS GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        epoch = f"{row['epoch_seconds']:.0f}{'*' if row['epoch_projected'] else ''}"
        evaluation = f"{row['eval_seconds']:.0f}{'*' if row['eval_projected'] else ''}"
        lines.append(
            f"| {row['interactions_drawn']:,} | {row['train_interactions']:,} "
            f"| {row['generate_seconds']:.1f} | {row['build_seconds']:.1f} | {epoch} "
            f"| {row['seconds_per_batch']:.3f} | {evaluation} "
            f"| {row['peak_rss_mb'] / 1024:.1f} |"
        )
    base = rows[0]
    for row in rows[1:]:
        lines.append(
            f"\n{row['interactions_drawn']:,} vs {base['interactions_drawn']:,} draws: epoch × "
            f"{row['epoch_seconds'] / base['epoch_seconds']:.2f}, s/batch × "
            f"{row['seconds_per_batch'] / base['seconds_per_batch']:.2f}, evaluation × "
            f"{row['eval_seconds'] / base['eval_seconds']:.2f}"
        )
    retained = rows[0]["retain_freed_memory"]
    lines.append(
        f"\nCommand: `{report['command']}`; torch threads {rows[0]['torch_threads']}; freed memory: "
        + ("kept for reuse (ssmrec.runtime, as the CLI)." if retained else "glibc defaults.")
    )
    markdown = "\n".join(lines) + "\n"
    write_results(args.name, report, markdown)


if __name__ == "__main__":
    main()
