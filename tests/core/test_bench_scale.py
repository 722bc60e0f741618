"""The scale benchmark's measuring function on a tiny synthetic size (its timings are not asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scale.py"


def test_scale_benchmark_times_a_sample_of_batches_and_users_and_projects_honestly() -> None:
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.measure(n_users=300, n_items=400, n_interactions=30_000, batches=2, eval_users=50)
    assert row["timed_batches"] == 2 and row["epoch_batches"] > 2 and row["epoch_projected"] is True
    assert row["epoch_seconds"] == pytest.approx(row["seconds_per_batch"] * row["epoch_batches"])
    assert row["eval_users_timed"] == 50 and row["eval_projected"] is True
    assert row["eval_seconds"] == pytest.approx(row["eval_seconds_timed"] / 50 * row["eval_users_total"])
    full = bench.measure(n_users=300, n_items=400, n_interactions=30_000, batches=0, eval_users=0)
    assert full["epoch_projected"] is False and full["timed_batches"] == full["epoch_batches"]
    assert full["eval_projected"] is False and full["eval_users_timed"] == full["eval_users_total"]
    assert full["train_interactions"] == row["train_interactions"]  # same seed, same data
