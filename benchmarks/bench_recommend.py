"""Export sizes and times, exact ``recommend`` throughput, and faiss indexes' Recall@K and speed-up.

Two workloads, each in this process, one after the other:

* ``--run RUN_DIR`` (a trained run, e.g. Gowalla): export to npz, safetensors and parquet (seconds,
  bytes); exact top-``k`` for every user through :class:`ssmrec.serving.recommend.Recommender` (the
  evaluator's engine, seen items excluded); HNSW and IVF: build time, top-``k`` time for the same
  users, Recall@k against the exact lists.
* ``--synthetic N_INTERACTIONS`` (0: skip): ``ssmrec.data.synthetic`` 1 M users × 1 M items, LightGCN-1L
  representations of its graph with the initial (Xavier) weights, *untrained*: the timing of ranking
  1 M items does not depend on training, but the index recall on untrained vectors need not match a
  trained model's. ``--sample-users`` random users (exact ranking of all 1 M users would take hours
  on 2 cores); the same users for the indexes.

    python benchmarks/bench_recommend.py --run /work/runs/gowalla-3ep [--k 20]
        [--synthetic 5000000 --sample-users 2000] [--name recommend]

Writes benchmarks/results/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def _ranking(export, users: np.ndarray, k: int, name: str) -> dict:
    from ssmrec.serving.ann import AnnRecommender, build_index
    from ssmrec.serving.recommend import Recommender

    tick = time.perf_counter()
    exact = Recommender(export).recommend(users, k)
    exact_seconds = time.perf_counter() - tick
    out = {
        "workload": name,
        "users": len(users),
        "items": len(export.items),
        "k": k,
        "exact_seconds": exact_seconds,
        "exact_users_per_second": len(users) / exact_seconds,
        "indexes": [],
    }
    print(f"{name}: exact {len(users)} users in {exact_seconds:.2f} s", flush=True)
    for kind in ("hnsw", "ivf"):
        index = build_index(export, kind)
        service = AnnRecommender(export, index)
        tick = time.perf_counter()
        approx = service.recommend(users, k)
        seconds = time.perf_counter() - tick
        hits = [
            len(set(a[a >= 0]) & set(e[e >= 0])) / max(1, int((e >= 0).sum()))
            for a, e in zip(approx.items, exact.items, strict=True)
        ]
        row = {
            "kind": kind,
            "build_seconds": index.build_seconds,
            "seconds": seconds,
            "users_per_second": len(users) / seconds,
            "recall_at_k": float(np.mean(hits)),
            "speedup": exact_seconds / seconds,
        }
        print(f"{name}: {row}", flush=True)
        out["indexes"].append(row)
    return out


def gowalla(run: str, k: int) -> tuple[dict, list[dict]]:
    from ssmrec.serving.export import from_run, load, write

    tick = time.perf_counter()
    export = from_run(run)
    from_run_seconds = time.perf_counter() - tick
    folder = Path(tempfile.mkdtemp(prefix="bench-export-"))
    formats = []
    try:
        for fmt in ("npz", "safetensors", "parquet"):
            path = folder / f"export.{fmt}"
            tick = time.perf_counter()
            write(export, path, fmt)
            written = time.perf_counter() - tick
            tick = time.perf_counter()
            load(path)
            formats.append(
                {
                    "format": fmt,
                    "bytes": _size(path),
                    "write_seconds": written,
                    "load_seconds": time.perf_counter() - tick,
                }
            )
    finally:
        shutil.rmtree(folder)
    users = np.arange(len(export.users))
    result = _ranking(export, users, k, "run")
    result["from_run_seconds"] = from_run_seconds
    return result, formats


def synthetic(n_interactions: int, sample: int, k: int) -> dict:
    from ssmrec.data.synthetic import synthetic_interactions
    from ssmrec.models import build_model
    from ssmrec.serving.export import make_export, seen_matrix

    tick = time.perf_counter()
    data = synthetic_interactions(1_000_000, 1_000_000, n_interactions, seed=0)
    torch.manual_seed(0)
    model = build_model("lightgcn", data.train, n_layers=1)
    users, items = model.representations()
    export = make_export(
        users.numpy(), items.numpy(), data.user_ids, data.item_ids, seen_matrix(data), {"ranking_rule": "dot"}
    )
    prepare = time.perf_counter() - tick
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(len(export.users), sample, replace=False))
    result = _ranking(export, chosen, k, "synthetic")
    result.update(prepare_seconds=prepare, interactions=n_interactions, train_pairs=int(data.train.nnz))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--synthetic", type=int, default=0, help="draws of the 1M x 1M set (0: skip)")
    parser.add_argument("--sample-users", type=int, default=2000)
    parser.add_argument("--name", default="recommend")
    args = parser.parse_args()
    from _results import write_results

    from ssmrec.runtime import retain_freed_memory

    retain_freed_memory()
    report: dict = {"threads": torch.get_num_threads(), "workloads": []}
    lines = [f"# recommend benchmark (k={args.k}, {torch.get_num_threads()} torch threads)", ""]
    if args.run:
        result, formats = gowalla(args.run, args.k)
        report["run"], report["formats"] = args.run, formats
        report["workloads"].append(result)
        lines += [
            f"Export of {args.run} (from_run {result['from_run_seconds']:.2f} s):",
            "",
            "| format | bytes | write s | load s |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {f['format']} | {f['bytes']:,} | {f['write_seconds']:.2f} | {f['load_seconds']:.2f} |"
            for f in formats
        ]
        lines.append("")
    if args.synthetic:
        report["workloads"].append(synthetic(args.synthetic, args.sample_users, args.k))
    lines += [
        "| workload | users | items | exact s | exact users/s | index | build s | index s | "
        "users/s | Recall@k vs exact | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in report["workloads"]:
        for row in w["indexes"]:
            lines.append(
                f"| {w['workload']} | {w['users']:,} | {w['items']:,} | {w['exact_seconds']:.2f} | "
                f"{w['exact_users_per_second']:,.0f} | {row['kind']} | {row['build_seconds']:.1f} | "
                f"{row['seconds']:.2f} | {row['users_per_second']:,.0f} | {row['recall_at_k']:.4f} | "
                f"{row['speedup']:.2f} |"
            )
    write_results(args.name, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
