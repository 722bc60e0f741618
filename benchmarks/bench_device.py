"""Everything issue #11 asks to measure on a GPU, in one call: run it once on the machine with the GPU.

    python benchmarks/bench_device.py --out DIR [--gowalla PATH] [--device cuda] [--budget 450]
    python benchmarks/bench_device.py --smoke --out DIR     # tiny sizes, on the CPU when there is no GPU

Sections, in order of priority, each with its own time cap inside a global budget (``--budget``
seconds, default 450: the whole call stays under 8 minutes on an H200 including start-up); a section
that would not fit is recorded as skipped, and ``DIR/bench_device.json`` is rewritten after every
section, so a call cut short still returns what it measured:

1. ``epochs``: Gowalla epoch time of LightGCN-1L + SSM, LightGCN-3L + BPR, MF + SSM, MF + CCL and
   MF + full softmax (ssm-gowalla / bpr-gowalla settings), the library's own ``Trainer.train_epoch``;
   10 warm-up batches (CUDA context, cuBLAS / cuSPARSE handles), then the rest of the epoch timed,
   synchronised; cut at the section's cap and then marked ``projected`` (rate × batches); peak device
   memory of each workload.
2. ``evaluation``: exact full-ranking evaluation of every Gowalla test user (the library's candidate
   path, default device chunk from free memory) with the LightGCN-1L + SSM embeddings of section 1,
   against a plain fp32 GEMM + ``torch.topk`` with the training items masked (not exact under ties:
   the share of users whose top-20 lists agree is reported); and the CPU evaluator on the same
   embeddings with the same chunks (1024 users) as the device: the metrics must be equal.
3. ``time_to_target``: ``--preset ssm-gowalla --protocol paper`` trained and evaluated on the test
   split every epoch until Recall@20 >= 0.185 (capped), time = training + evaluation seconds.
4. ``scale``: the 1 M users × 1 M items × 20 M draws synthetic set (``ssmrec.data.synthetic``): one
   LightGCN-1L + SSM epoch (projected if cut at the cap) and exact evaluation of 20,000 test users.
5. ``determinism``: two runs with ``--deterministic`` (two epochs each, same seed): equal losses,
   weights and Recall@20 expected; two runs in the default mode: their spread.
6. ``bf16``: the same short ssm-gowalla paper-protocol run in fp32 and in bf16 autocast: Recall@20
   after each epoch and epoch time.

Without a CUDA device the script stops with exit status 2 and says so (``--device cpu`` or ``--smoke``
run it on the CPU, with the CPU's numbers labelled as such). ``--smoke`` uses tiny synthetic data
instead of Gowalla, small caps and a low target, to prove every section runs end to end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmrec.config import TrainConfig, resolve_config
from ssmrec.data import DataSpec, load_dataset
from ssmrec.device import DeviceError, describe_device, deterministic_mode, resolve_device
from ssmrec.evaluate import evaluate_ranking
from ssmrec.evaluate.ranking import DevicePairs, chunk_size_for
from ssmrec.experiment import build_trainer, exclusions
from ssmrec.rundir import atomic_write_bytes, environment
from ssmrec.runtime import retain_freed_memory
from ssmrec.trainer import Trainer

WORKLOADS = {
    "lightgcn1-ssm": {"preset": "ssm-gowalla"},
    "lightgcn3-bpr": {"preset": "bpr-gowalla"},
    "mf-ssm": {"preset": "ssm-gowalla", "model": "mf"},
    "mf-ccl": {"preset": "ssm-gowalla", "model": "mf", "loss": "ccl"},
    "mf-softmax": {"preset": "ssm-gowalla", "model": "mf", "loss": "softmax"},
}
TARGET = 0.185
WARMUP_BATCHES = 10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


class Budget:
    """The global deadline and each section's share of it."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def cap(self, seconds: float) -> float:
        return max(0.0, min(seconds, self.left()))


def stop_at(deadline: float) -> Callable[[], bool]:
    return lambda: time.perf_counter() >= deadline


def stop_after(steps: int) -> Callable[[], bool]:
    count = {"n": 0}

    def should_stop() -> bool:
        count["n"] += 1
        return count["n"] >= steps

    return should_stop


def config_for(overrides: dict[str, Any], data_path: str | None, device: str, **more: Any) -> TrainConfig:
    values: dict[str, Any] = {**overrides, "progress": False, "device": device, "protocol": "paper", **more}
    if data_path is not None:
        values["data"] = {"path": data_path}
    return resolve_config(flag_values=values)


def timed_epoch(trainer: Trainer, device: torch.device, cap: float) -> dict[str, Any]:
    """Warm up ``WARMUP_BATCHES`` batches, then time the rest of the epoch until it ends or ``cap``."""
    total = trainer.pairs.n_batches(trainer.schedule.batch_size)
    trainer.should_stop = stop_after(min(WARMUP_BATCHES, max(1, total - 1)))
    trainer.train_epoch()
    sync(device)
    done_before = trainer.state.step
    trainer.should_stop = stop_at(time.perf_counter() + cap)
    tick = time.perf_counter()
    loss = trainer.train_epoch()
    sync(device)
    seconds = time.perf_counter() - tick
    steps = (total if loss is not None else trainer.state.step) - done_before
    return {
        "batches": total,
        "timed_batches": steps,
        "timed_seconds": seconds,
        "seconds_per_batch": seconds / max(1, steps),
        "epoch_seconds": seconds / max(1, steps) * total,
        "projected": loss is None,
        "epoch_loss": loss,
    }


# ------------------------------------------------------------------------------------------ sections


def section_epochs(ctx: dict[str, Any], cap_each: float) -> dict[str, Any]:
    device, data, out = ctx["device"], ctx["data"], {}
    for name, overrides in WORKLOADS.items():
        cap = ctx["budget"].cap(cap_each)
        if cap < 3:
            out[name] = {"skipped": "out of time"}
            continue
        reset_peak(device)
        config = config_for(overrides, ctx["data_path"], ctx["device_name"], **ctx["small"])
        trainer = build_trainer(config, data, device=device)
        row = timed_epoch(trainer, device, cap)
        row["peak_device_bytes"] = peak_bytes(device)
        local = getattr(trainer.model, "local", None)  # off the CPU LightGCN propagates the whole graph
        on_cpu = device.type == "cpu"
        row["propagation"] = None if local is None else ("local" if local and on_cpu else "full")
        out[name] = row
        print(f"  {name}: epoch {row['epoch_seconds']:.2f} s{' (projected)' if row['projected'] else ''}")
        if name == "lightgcn1-ssm":
            ctx["embeddings"] = trainer.model.representations()
        del trainer
    return out


def _plain_top_k(
    users: torch.Tensor, items: torch.Tensor, exclude: list, k: int, chunk: int
) -> torch.Tensor:
    """fp32 GEMM + torch.topk with excluded items at -inf (the usual GPU evaluator; ties unordered)."""
    sources = [DevicePairs(m, users.device) for m in exclude]
    parts = []
    for start in range(0, users.shape[0], chunk):
        stop = min(users.shape[0], start + chunk)
        scores = users[start:stop] @ items.T
        for source in sources:
            rows, cols = source.pairs(start, stop)
            scores[rows, cols] = -math.inf
        parts.append(torch.topk(scores, k, dim=1).indices)
    return torch.cat(parts)


def section_evaluation(ctx: dict[str, Any]) -> dict[str, Any]:
    from ssmrec.evaluate.ranking import top_k

    device, data = ctx["device"], ctx["data"]
    if "embeddings" not in ctx:
        return {"skipped": "no LightGCN-1L + SSM embeddings (section epochs did not run)"}
    users, items = ctx["embeddings"]
    exclude = exclusions(data, "test")
    out: dict[str, Any] = {"chunk_size": chunk_size_for(device, data.n_items)}
    seconds = []
    for _ in range(3):
        sync(device)
        reset_peak(device)
        tick = time.perf_counter()
        metrics = evaluate_ranking(users, items, data.test, exclude=exclude, ks=(20,))
        sync(device)
        seconds.append(time.perf_counter() - tick)
    out.update(exact_seconds=min(seconds), exact_all_seconds=seconds, peak_device_bytes=peak_bytes(device))
    out["metrics"] = metrics
    # plain GEMM + topk against the exact top-20 lists of the same users
    evaluated = np.flatnonzero(np.diff(data.test.indptr))
    rows = torch.from_numpy(evaluated).to(device)
    selected = [m[evaluated] for m in exclude]
    chunk = out["chunk_size"]
    seconds = []
    for _ in range(3):
        sync(device)
        tick = time.perf_counter()
        plain = _plain_top_k(users[rows], items, selected, 20, chunk)
        sync(device)
        seconds.append(time.perf_counter() - tick)
    exact = top_k(users, items, evaluated, 20, exclude=exclude)
    same = (torch.sort(plain, dim=1).values == torch.sort(exact.to(device), dim=1).values).all(1)
    out.update(plain_gemm_topk_seconds=min(seconds), plain_lists_equal_share=float(same.float().mean()))
    # the CPU evaluator on the same embeddings, same chunks
    if device.type != "cpu":
        tick = time.perf_counter()
        same_chunks = {"exclude": exclude, "ks": (20,), "chunk_size": 1024}  # CPU-friendly chunks
        on_cpu = evaluate_ranking(users.cpu(), items.cpu(), data.test, **same_chunks)
        out["cpu_seconds_chunks_of_1024"] = time.perf_counter() - tick
        on_device = evaluate_ranking(users, items, data.test, **same_chunks)
        out["cpu_equals_device"] = on_cpu == on_device
        out["cpu_metrics"] = on_cpu
        out["max_abs_difference_default_chunks"] = max(abs(on_cpu[k] - metrics[k]) for k in metrics)
    return out


def _run_epochs(
    config: TrainConfig, ctx: dict[str, Any], cap: float, epochs: int | None, target: float | None
) -> dict[str, Any]:
    """Train + evaluate on the test split each epoch until ``target``, ``epochs`` or ``cap``."""
    device = ctx["device"]
    trainer = build_trainer(config, ctx["data"], device=device)
    deadline = time.perf_counter() + cap
    trainer.should_stop = stop_at(deadline)
    curve = []
    reached = None
    while (epochs is None or trainer.state.epoch < epochs) and time.perf_counter() < deadline:
        tick = time.perf_counter()
        loss = trainer.train_epoch()
        sync(device)
        train_seconds = time.perf_counter() - tick
        if loss is None:
            break
        metrics = trainer.evaluate()
        curve.append({"epoch": trainer.state.epoch, "loss": loss, "train_seconds": train_seconds,
                      "elapsed_seconds": trainer.state.elapsed_seconds, "recall@20": metrics["recall@20"],
                      "ndcg@20": metrics["ndcg@20"]})  # fmt: skip
        if target is not None and metrics["recall@20"] >= target:
            reached = curve[-1]
            break
    weights = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    return {"curve": curve, "reached": reached, "weights": weights}


def section_time_to_target(ctx: dict[str, Any], cap: float) -> dict[str, Any]:
    reset_peak(ctx["device"])
    config = config_for({"preset": "ssm-gowalla"}, ctx["data_path"], ctx["device_name"], **ctx["small"])
    result = _run_epochs(config, ctx, cap, None, ctx["target"])
    result.pop("weights")
    result.update(target=ctx["target"], cap_seconds=cap, peak_device_bytes=peak_bytes(ctx["device"]))
    reached = result["reached"]
    when = f"{reached['elapsed_seconds']:.1f} s" if reached else "not reached"
    print(f"  time to {ctx['target']}: {when}")
    return result


def section_scale(
    ctx: dict[str, Any], cap: float, size: tuple[int, int, int], eval_users: int
) -> dict[str, Any]:
    from ssmrec.data.synthetic import synthetic_interactions

    device = ctx["device"]
    started = time.perf_counter()
    tick = time.perf_counter()
    data = synthetic_interactions(*size, seed=0)
    out: dict[str, Any] = {"users": size[0], "items": size[1], "draws": size[2]}
    out["train_pairs"] = int(data.train.nnz)
    out["generate_seconds"] = time.perf_counter() - tick
    reset_peak(device)
    tick = time.perf_counter()
    config = config_for({"preset": "ssm-gowalla"}, None, ctx["device_name"])
    trainer = build_trainer(config, data, device=device)
    sync(device)
    out["build_seconds"] = time.perf_counter() - tick
    out["epoch"] = timed_epoch(trainer, device, max(3.0, cap - (time.perf_counter() - started) - 20))
    users, items = trainer.model.representations()
    test_users = np.flatnonzero(np.diff(data.test.indptr))
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(test_users, min(eval_users, len(test_users)), replace=False))
    sync(device)
    tick = time.perf_counter()
    selected = users[torch.from_numpy(chosen).to(device)]
    metrics = evaluate_ranking(selected, items, data.test[chosen], exclude=[data.train[chosen]], ks=(20,))
    sync(device)
    seconds = time.perf_counter() - tick
    out.update(eval_users_timed=len(chosen), eval_seconds_timed=seconds,
               eval_seconds_all_projected=seconds / len(chosen) * len(test_users),
               eval_chunk_size=chunk_size_for(device, size[1]), recall_at_20_timed_users=metrics["recall@20"],
               peak_device_bytes=peak_bytes(device))  # fmt: skip
    return out


def section_determinism(ctx: dict[str, Any], cap_each: float) -> dict[str, Any]:
    device = ctx["device"]
    out: dict[str, Any] = {}
    for mode in ("deterministic", "default"):
        runs = []
        for _ in range(2):
            cap = ctx["budget"].cap(cap_each)
            if cap < 3:
                break
            config = config_for({"preset": "ssm-gowalla"}, ctx["data_path"], ctx["device_name"],
                                deterministic=mode == "deterministic", **ctx["small"])  # fmt: skip
            try:
                with deterministic_mode(mode == "deterministic", device):
                    runs.append(_run_epochs(config, ctx, cap, 2, None))
            except RuntimeError as error:  # an operation without a deterministic implementation
                out[mode] = {"error": str(error).splitlines()[0]}
                break
        if mode in out:
            continue
        if len(runs) < 2 or len(runs[0]["curve"]) != len(runs[1]["curve"]) or not runs[0]["curve"]:
            curves = [r["curve"] for r in runs]
            out[mode] = {"skipped": "the cap ended a run before its epochs", "runs": curves}
            continue
        a, b = runs
        pairs = list(zip(a["curve"], b["curve"], strict=True))
        weight_diff = max(float((a["weights"][k] - b["weights"][k]).abs().max()) for k in a["weights"])
        out[mode] = {
            "curves": [a["curve"], b["curve"]],
            "losses_equal": [r["loss"] for r in a["curve"]] == [r["loss"] for r in b["curve"]],
            "recall_equal": [r["recall@20"] for r in a["curve"]] == [r["recall@20"] for r in b["curve"]],
            "max_abs_weight_difference": weight_diff,
            "max_abs_loss_difference": max(abs(x["loss"] - y["loss"]) for x, y in pairs),
            "max_abs_recall_difference": max(abs(x["recall@20"] - y["recall@20"]) for x, y in pairs),
        }
    return out


def section_bf16(ctx: dict[str, Any], cap_each: float, epochs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        cap = ctx["budget"].cap(cap_each)
        if cap < 3:
            out[precision] = {"skipped": "out of time"}
            continue
        config = config_for({"preset": "ssm-gowalla"}, ctx["data_path"], ctx["device_name"],
                            precision=precision, **ctx["small"])  # fmt: skip
        result = _run_epochs(config, ctx, cap, epochs, None)
        out[precision] = {"curve": result["curve"]}
    if all("curve" in out.get(p, {}) for p in ("fp32", "bf16")):
        pairs = list(zip(out["fp32"]["curve"], out["bf16"]["curve"], strict=False))  # may differ in length
        out["recall_difference_by_epoch"] = [b["recall@20"] - a["recall@20"] for a, b in pairs]
    return out


# ---------------------------------------------------------------------------------------------- main


@contextlib.contextmanager
def recorded(report: dict[str, Any], name: str, out: Path) -> Iterator[dict[str, Any]]:
    """Run a section, store its result or its error, and rewrite the JSON file either way."""
    holder: dict[str, Any] = {}
    tick = time.perf_counter()
    print(f"[{name}]", flush=True)
    try:
        yield holder
    except Exception as error:  # one failing section must not cost the others
        holder["result"] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        print(f"  failed: {error}", flush=True)
    report["sections"][name] = {**holder.get("result", {}), "section_seconds": time.perf_counter() - tick}
    write(report, out)


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(report, indent=2, allow_nan=True, default=str) + "\n"
    atomic_write_bytes(out / "bench_device.json", payload.encode())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for bench_device.json (the device tool's $OUT)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (CPU numbers)")
    default_gowalla = Path(__file__).resolve().parents[2] / "shared/data/gowalla"
    parser.add_argument("--gowalla", default=str(default_gowalla), help="Gowalla folder (LightGCN split)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all sections together")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic sizes: every section, quickly")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    retain_freed_memory()
    device_name = "auto" if args.smoke and args.device == "cuda" else args.device
    try:
        device = resolve_device(device_name)
    except DeviceError as error:
        advice = "run it where one is, or pass --device cpu (CPU numbers) or --smoke (a tiny check)"
        print(f"bench_device: {error}. This benchmark measures a GPU: {advice}.", file=sys.stderr)
        return 2
    budget = Budget(args.budget)
    report: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "smoke": args.smoke,
        "device": describe_device(device),
        "environment": environment(),
        "sections": {},
    }
    if args.smoke:
        from ssmrec.data.synthetic import synthetic_interactions

        data = synthetic_interactions(1000, 800, 16000, seed=1)
        data_path, target = None, 0.05
        small = {"epochs": 1000, "batch_size": 1024}
        caps = {"epoch": 8, "target": 20, "scale": 30, "determinism": 10, "bf16": 10}
        scale, eval_users, bf16_epochs = (5000, 5000, 40000), 1000, 2
    else:
        data_path, target, small = args.gowalla, TARGET, {}
        data = load_dataset(DataSpec(path=data_path, valid_ratio=0.0))
        caps = {"epoch": 22, "target": 110, "scale": 110, "determinism": 12, "bf16": 20}
        scale, eval_users, bf16_epochs = (1_000_000, 1_000_000, 20_000_000), 20_000, 10
    report["data"] = {"path": data_path, **data.counts()} if hasattr(data, "counts") else {"path": data_path}
    ctx: dict[str, Any] = {"device": device, "device_name": device_name, "data": data, "data_path": data_path,
                           "budget": budget, "target": target, "small": small}  # fmt: skip
    with recorded(report, "epochs", out) as holder:
        holder["result"] = section_epochs(ctx, caps["epoch"])
    with recorded(report, "evaluation", out) as holder:
        holder["result"] = section_evaluation(ctx)
    ctx.pop("embeddings", None)
    with recorded(report, "time_to_target", out) as holder:
        cap = budget.cap(caps["target"])
        holder["result"] = section_time_to_target(ctx, cap) if cap >= 5 else {"skipped": "out of time"}
    with recorded(report, "scale", out) as holder:
        cap = budget.cap(caps["scale"])
        holder["result"] = section_scale(ctx, cap, scale, eval_users) if cap >= 30 or args.smoke else {
            "skipped": "out of time"
        }
    with recorded(report, "determinism", out) as holder:
        holder["result"] = section_determinism(ctx, caps["determinism"])
    with recorded(report, "bf16", out) as holder:
        holder["result"] = section_bf16(ctx, caps["bf16"], bf16_epochs)
    report["wall_seconds"] = time.perf_counter() - started
    write(report, out)
    print(f"wrote {out / 'bench_device.json'} in {report['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
