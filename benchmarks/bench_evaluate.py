"""Benchmark of exact full-ranking evaluation on a Gowalla-sized problem.

Prints, in one run: the fp32 GEMM + ``torch.topk`` floor (what a plain evaluator costs before any
tie-break or exclusion), GEMM-only times in fp32 and bf16, ``evaluate_ranking`` with fp32 and bf16
candidates, ratios, and the peak resident memory each call added. Writes JSON and Markdown to
``benchmarks/results/``.

Data: the real Gowalla split (LightGCN format) from ``../shared/data/gowalla`` when it exists, otherwise a
random split of the same size and density. Embeddings: ``svd`` (a rank-d randomized SVD of the training
matrix: realistic score distributions, with popular items of large norm) and/or ``random`` (Gaussian).

Timings are best-of-``--repeats`` wall clock, run sequentially. Other processes (model training) may share
the CPU: the load average before and after is recorded, and numbers taken under load are noisy.

    python benchmarks/bench_evaluate.py                 # both embeddings, K = 20
    python benchmarks/bench_evaluate.py --ks 10 20 50 --embeddings svd --threads 1
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ssmrec.evaluate import evaluate_ranking, top_k
from ssmrec.evaluate.ranking import default_chunk_size, resolve_precision

REPO = Path(__file__).resolve().parents[1]
GOWALLA = Path(os.environ.get("SSMREC_SHARED_DATA", REPO.parent / "shared" / "data")) / "gowalla"
GOWALLA_SHAPE = (29858, 40981)
GOWALLA_NNZ = (810128, 217242)
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if platform.system() == "Linux" else None


def read_lightgcn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``user item item ...`` lines -> (users, items) pair arrays."""
    users, items = [], []
    with path.open() as handle:
        for line in handle:
            fields = line.split()
            if len(fields) < 2:
                continue
            row = np.asarray(fields[1:], dtype=np.int64)
            users.append(np.full(len(row), int(fields[0]), dtype=np.int64))
            items.append(row)
    return np.concatenate(users), np.concatenate(items)


def binary_csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def load_data(seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix, str]:
    """Gowalla train/test if available, else a random split of the same shape and density."""
    if (GOWALLA / "train.txt").is_file() and (GOWALLA / "test.txt").is_file():
        train_pairs = read_lightgcn(GOWALLA / "train.txt")
        test_pairs = read_lightgcn(GOWALLA / "test.txt")
        shape = (
            int(max(train_pairs[0].max(), test_pairs[0].max())) + 1,
            int(max(train_pairs[1].max(), test_pairs[1].max())) + 1,
        )
        return binary_csr(*train_pairs, shape), binary_csr(*test_pairs, shape), f"gowalla ({GOWALLA})"
    rng = np.random.default_rng(seed)
    n_users, n_items = GOWALLA_SHAPE
    pairs = []
    for nnz in GOWALLA_NNZ:
        pairs.append((rng.integers(0, n_users, nnz), rng.integers(0, n_items, nnz)))
    train = binary_csr(*pairs[0], GOWALLA_SHAPE)
    test = binary_csr(*pairs[1], GOWALLA_SHAPE)
    test = sp.csr_matrix(test - test.multiply(train))
    test.eliminate_zeros()
    return train, test, "random split of Gowalla size"


def svd_embeddings(train: sp.csr_matrix, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``dim`` randomized SVD (3 power iterations): users U sqrt(S), items V sqrt(S)."""
    rng = np.random.default_rng(seed)
    a = train.astype(np.float64)
    q = rng.standard_normal((a.shape[1], dim + 8))
    for _ in range(3):
        y, _ = np.linalg.qr(a @ q)
        q, _ = np.linalg.qr(a.T @ y)
    y, _ = np.linalg.qr(a @ q)
    u_small, s, vt = np.linalg.svd(np.asarray((a.T @ y).T), full_matrices=False)
    scale = np.sqrt(s[:dim])
    users = (y @ u_small)[:, :dim] * scale
    items = vt[:dim].T * scale
    return torch.from_numpy(users.astype(np.float32)), torch.from_numpy(items.astype(np.float32))


class PeakRss:
    """Peak resident memory above the level at entry, sampled every 2 ms by a thread (Linux /proc).

    On entry, memory the allocator kept from earlier calls is returned to the system (glibc
    ``malloc_trim``), otherwise a call reusing it would show no growth.
    """

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self) -> PeakRss:
        gc.collect()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        self.base = self.rss()
        self.peak = self.base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def added_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    """Best wall and CPU (process) time over ``repeats`` calls, then the peak RSS added by one more call.

    Memory is sampled in a separate call: the sampling thread wakes every 2 ms and takes the GIL, which
    slowed the multi-threaded evaluation by about 10% when it ran during the timed calls (1.54 s against
    1.34–1.38 s timed alone). CPU time is less disturbed than wall time when another process is
    descheduling this one.
    """
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    with PeakRss() as memory:
        fn()
    return {"seconds": wall, "cpu_seconds": cpu, "peak_rss_added_mib": memory.added_mib}, result


def padded(items: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """Items plus zero rows up to a multiple of ``multiple``: aligned GEMM output rows (faster in MKL)."""
    return torch.nn.functional.pad(items, (0, 0, 0, -len(items) % multiple))


def gemm_only(users: torch.Tensor, items: torch.Tensor, chunk: int, dtype: torch.dtype) -> None:
    """Score every user against every item in chunks (into one reused buffer), nothing else."""
    u, i = users.to(dtype), items.to(dtype)
    out = torch.empty((chunk, len(i)), dtype=dtype)
    for start in range(0, len(u), chunk):
        block = u[start : start + chunk]
        torch.matmul(block, i.T, out=out[: len(block)])


def gemm_topk_floor(users: torch.Tensor, items: torch.Tensor, n_items: int, chunk: int, k: int) -> None:
    """fp32 GEMM + torch.topk(k): the floor of a plain evaluator (no exclusion, no tie-break).

    ``items`` may be padded beyond ``n_items``; the padding's scores are set to -inf first.
    """
    out = torch.empty((chunk, len(items)))
    for start in range(0, len(users), chunk):
        block = users[start : start + chunk]
        scores = torch.matmul(block, items.T, out=out[: len(block)])
        scores[:, n_items:] = -torch.inf
        torch.topk(scores, k, dim=1)


def float64_disagreement(
    users: torch.Tensor, items: torch.Tensor, train: sp.csr_matrix, rows: np.ndarray, k: int
) -> int:
    """Users among ``rows`` whose exact top-k differs from a float64 lexsort reference (near-ties only)."""
    ours = top_k(users, items, rows, k, exclude=[train]).numpy()
    differ = 0
    for lo in range(0, len(rows), 200):
        part = rows[lo : lo + 200]
        scores = users[part].double().numpy() @ items.double().numpy().T
        scores[train[part].toarray() > 0] = -np.inf
        order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)
        differ += int((order[:, :k] != ours[lo : lo + 200]).any(axis=1).sum())
    return differ


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    train, test, source = load_data(args.seed)
    users_eval = int((np.diff(test.indptr) > 0).sum())
    k_max = max(args.ks)
    chunk = default_chunk_size(train.shape[1])
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "auto_precision": resolve_precision("auto", torch.device("cpu"), train.shape[1]),
        },
        "data": {
            "source": source,
            "shape": list(train.shape),
            "train": int(train.nnz),
            "test": int(test.nnz),
        },
        "users_evaluated": users_eval,
        "ks": list(args.ks),
        "dim": args.dim,
        "chunk_size": chunk,
        "repeats": args.repeats,
        "runs": {},
    }
    for kind in args.embeddings:
        if kind == "svd":
            users, items = svd_embeddings(train, args.dim, args.seed)
        else:
            g = torch.Generator().manual_seed(args.seed)
            users = torch.randn(train.shape[0], args.dim, generator=g)
            items = torch.randn(train.shape[1], args.dim, generator=g)
        row: dict[str, Any] = {}
        n_items, items_padded = len(items), padded(items)
        timings = {
            "gemm_fp32": lambda u=users, i=items: gemm_only(u, i, chunk, torch.float32),
            "gemm_fp32_padded": lambda u=users, i=items_padded: gemm_only(u, i, chunk, torch.float32),
            "gemm_bf16_padded": lambda u=users, i=items_padded: gemm_only(u, i, chunk, torch.bfloat16),
            "floor_fp32_gemm_topk": lambda u=users, i=items, n=n_items: gemm_topk_floor(
                u, i, n, chunk, k_max
            ),
            "floor_fp32_gemm_topk_padded": lambda u=users, i=items_padded, n=n_items: gemm_topk_floor(
                u, i, n, chunk, k_max
            ),
        }
        metrics = {}
        for precision in ("fp32", "bf16"):
            timings[f"evaluate_{precision}"] = lambda u=users, i=items, p=precision: evaluate_ranking(
                u, i, test, exclude=[train], ks=args.ks, precision=p
            )
        for name, fn in timings.items():
            row[name], result = best_of(args.repeats, fn)
            if name.startswith("evaluate_"):
                metrics[name.removeprefix("evaluate_")] = result
            r = row[name]
            print(
                f"[{kind}] {name:27s} {r['seconds']:7.3f} s wall {r['cpu_seconds']:7.3f} s cpu "
                f"(+{r['peak_rss_added_mib']:.0f} MiB)",
                flush=True,
            )
        floor = min(row["floor_fp32_gemm_topk"]["seconds"], row["floor_fp32_gemm_topk_padded"]["seconds"])
        floor_cpu = min(
            row["floor_fp32_gemm_topk"]["cpu_seconds"], row["floor_fp32_gemm_topk_padded"]["cpu_seconds"]
        )
        row["ratios"] = {
            "gemm_bf16_over_fp32_padded": row["gemm_bf16_padded"]["seconds"]
            / row["gemm_fp32_padded"]["seconds"],
            "evaluate_fp32_over_best_floor": row["evaluate_fp32"]["seconds"] / floor,
            "evaluate_fp32_over_best_floor_cpu": row["evaluate_fp32"]["cpu_seconds"] / floor_cpu,
            "evaluate_bf16_over_best_floor": row["evaluate_bf16"]["seconds"] / floor,
            "evaluate_fp32_over_gemm_fp32_padded": row["evaluate_fp32"]["seconds"]
            / row["gemm_fp32_padded"]["seconds"],
        }
        row["identical_metrics_fp32_bf16"] = metrics["fp32"] == metrics["bf16"]
        sample = np.flatnonzero(np.diff(test.indptr) > 0)[: args.check_users]
        row["float64_check"] = {
            "users": len(sample),
            "differing_top_k": float64_disagreement(users, items, train, sample, k_max),
        }
        print(f"[{kind}] float64 reference check: {row['float64_check']}", flush=True)
        row["metrics"] = {
            key: value for key, value in metrics["fp32"].items() if key.split("@")[0] in ("recall", "ndcg")
        }
        row["metrics"]["users"] = metrics["fp32"]["users"]
        print(f"[{kind}] ratios {json.dumps({k: round(v, 3) for k, v in row['ratios'].items()})}", flush=True)
        print(f"[{kind}] identical metrics fp32 vs bf16: {row['identical_metrics_fp32_bf16']}", flush=True)
        report["runs"][kind] = row
    report["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    return report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# bench_evaluate",
        "",
        f"{report['when']} · {m['cpu']} · {m['cores']} cores · torch {m['torch']} · {m['threads']} threads · "
        f"auto precision here: {m['auto_precision']}",
        "",
        f"Data: {report['data']['source']}, "
        f"{report['data']['shape'][0]} users x {report['data']['shape'][1]} items, "
        f"{report['users_evaluated']} users evaluated, K = {report['ks']}, d = {report['dim']}, "
        f"chunk {report['chunk_size']} users, best of {report['repeats']}.",
        f"Load average before / after: {report['load_average']['before'][0]:.2f} / "
        f"{report['load_average']['after'][0]:.2f} (above ~0.5 means another process shared the CPU).",
        "",
        "| embeddings | what | wall s | CPU s | peak RSS added (MiB) |",
        "|---|---|---:|---:|---:|",
    ]
    for kind, row in report["runs"].items():
        for name, r in row.items():
            if isinstance(r, dict) and "seconds" in r:
                lines.append(
                    f"| {kind} | {name} | {r['seconds']:.3f} | {r['cpu_seconds']:.3f} "
                    f"| {r['peak_rss_added_mib']:.0f} |"
                )
    lines += [
        "",
        "Floor: the faster fp32 GEMM + torch.topk variant (padding the items aligns the GEMM output rows).",
        "",
        "| embeddings | bf16/fp32 GEMM (padded) | evaluate fp32 / floor | (CPU time) | evaluate bf16 / floor "
        "| evaluate fp32 / fp32 GEMM | same metrics fp32 & bf16 |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for kind, row in report["runs"].items():
        r = row["ratios"]
        lines.append(
            f"| {kind} | {r['gemm_bf16_over_fp32_padded']:.2f} | {r['evaluate_fp32_over_best_floor']:.2f} | "
            f"{r['evaluate_fp32_over_best_floor_cpu']:.2f} | {r['evaluate_bf16_over_best_floor']:.2f} | "
            f"{r['evaluate_fp32_over_gemm_fp32_padded']:.2f} | {row['identical_metrics_fp32_bf16']} |"
        )
    lines += ["", "Exact top-K vs a float64 lexsort reference (differences can only be fp32 near-ties):", ""]
    for kind, row in report["runs"].items():
        check = row["float64_check"]
        lines.append(f"- {kind}: {check['differing_top_k']} of {check['users']} users differ")
    lines += ["", "Metrics (fp32 candidates):", ""]
    for kind, row in report["runs"].items():
        lines.append(
            f"- {kind}: "
            + ", ".join(f"{k} {v:.5f}" if k != "users" else f"{k} {v}" for k, v in row["metrics"].items())
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[20])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--embeddings", nargs="+", choices=["svd", "random"], default=["svd", "random"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-users", type=int, default=1000, help="users compared with float64")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default="bench_evaluate", help="file stem of the JSON / Markdown output")
    args = parser.parse_args()
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(report))
    print(f"wrote {args.out / args.name}.json and .md")


if __name__ == "__main__":
    main()
