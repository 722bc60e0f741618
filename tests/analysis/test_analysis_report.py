"""``ssmrec analyze`` and ``ssmrec compare`` end to end on two tiny runs trained through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_lightgcn_folder

from ssmrec.analysis.report import FIGURES
from ssmrec.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = (
    "## 1. Popularity bias and the long tail",
    "## 2. Representation magnitude",
    "## 3. Hard-negative mining",
    "## 4. Ranking metric",
    "## 5. Training curves",
)
TABLE_TITLES = (
    "Popularity groups",
    "Recall@20 contributed by each popularity group",
    "Share of hits in each popularity group",
    "Popularity bias of the top-20 lists",
    "Norm of final representations against training degree",
    "Mean item norm per degree bin",
    "Mean user norm per degree bin",
    "Share of negative gradient weight",
    "Softmax loss against −log DCG per user",
    "Training loss against NDCG@20",
    "Training curves",
)


def write_skewed(folder: Path, seed: int = 0, n_users: int = 150, n_items: int = 120) -> None:
    """LightGCN-format data with a popularity long tail and 5 taste clusters (12 train + 3 test per user)."""
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.arange(1, n_items + 1) ** 0.9
    cluster_of_item = rng.permutation(n_items) % 5
    train, test = [], []
    for user in range(n_users):
        own = np.flatnonzero(cluster_of_item == user % 5)
        p_own = weight[own] / weight[own].sum()
        picked = set(rng.choice(own, 11, replace=False, p=p_own).tolist())
        picked |= set(rng.choice(n_items, 4, replace=False, p=weight / weight.sum()).tolist())
        items = rng.permutation(sorted(picked))
        train.append(sorted(items[3:].tolist()))
        test.append(sorted(items[:3].tolist()))
    write_lightgcn_folder(folder, train, test)


def train_tiny(data: Path, output: Path, model: str, loss: str, epochs: int = 4) -> dict:
    model_flags = ["--layers", "1"] if model == "lightgcn" else []
    loss_flags = ["--temperature", "0.2"] if loss in ("ssm", "softmax", "bsl", "adap-tau") else []
    argv = ["train", "--data", str(data), "--output", str(output), "--model", model, *model_flags,
            "--loss", loss, *loss_flags, "--batch-size", "256", "--epochs", str(epochs),
            "--lr", "0.01", "--reg", "1e-4", "--protocol", "paper", "--seed", "5", "--threads", "1",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    return json.loads((output / "final_metrics.json").read_text())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("analysis")
    write_skewed(root / "data")
    train_tiny(root / "data", root / "runs" / "lightgcn-ssm", "lightgcn", "ssm")
    train_tiny(root / "data", root / "runs" / "mf-bpr", "mf", "bpr")
    return root / "data", root / "runs" / "lightgcn-ssm", root / "runs" / "mf-bpr"


def test_analyze_writes_every_section_and_figure(two_runs: tuple[Path, Path, Path], capsys) -> None:
    _, ssm, bpr = two_runs
    assert main(["analyze", str(ssm), str(bpr), "--sample-users", "60", "--seed", "3"]) == 0
    reports = sorted(ssm.parent.glob("analysis-*"))
    assert len(reports) == 1, reports  # the default RUN_DIR/../analysis-<timestamp>
    report = reports[0]
    assert str(report / "report.md") in capsys.readouterr().out
    assert {p.name for p in report.iterdir()} == {"report.md", "summary.json", *FIGURES.values()}
    assert not list(ssm.parent.glob(".analysis-*"))  # the temporary folder was renamed, not left behind
    text = (report / "report.md").read_text()
    for heading in (*SECTIONS, *TABLE_TITLES):
        assert heading in text, heading
    for name in FIGURES.values():
        payload = (report / name).read_bytes()
        assert payload.startswith(PNG_SIGNATURE) and len(payload) > 10_000, name
        assert f"]({name})" in text
    assert "60 training pairs" in text and "60 test users" in text and "seed 3" in text
    assert "lightgcn-ssm" in text and "mf-bpr" in text

    summary = json.loads((report / "summary.json").read_text())
    assert summary["split"] == "test" and [r["label"] for r in summary["runs"]] == ["lightgcn-ssm", "mf-bpr"]
    for run, path in zip(summary["runs"], (ssm, bpr), strict=True):
        final = json.loads((path / "final_metrics.json").read_text())
        # The top-20 lists come from the evaluation's own ranking: Recall@20 matches the run's test metric.
        assert run["popularity"]["recall"] == pytest.approx(final["test"]["recall@20"], abs=1e-9)
        assert sum(run["popularity"]["group_recall"]) == pytest.approx(run["popularity"]["recall"])
        assert run["bound"]["holds"] == 1.0 and run["bound"]["users"] == 60
        assert 0.0 < run["hardness"]["top_10pct"] <= 1.0
    assert summary["runs"][0]["hardness"]["weighting"].startswith("softmax of cosine")
    assert summary["runs"][1]["hardness"]["weighting"].startswith("σ(s_n − s_p)")

    # An explicit --output that already holds files is refused before any work.
    assert main(["analyze", str(ssm), "--output", str(report)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_compare_prints_the_same_tables(two_runs: tuple[Path, Path, Path], capsys) -> None:
    _, ssm, bpr = two_runs
    assert main(["compare", str(ssm), str(bpr), "--sample-users", "40"]) == 0
    out = capsys.readouterr().out
    for title in TABLE_TITLES:
        assert title in out, title
    lines = [line for line in out.splitlines() if line.startswith(("lightgcn-ssm", "mf-bpr"))]
    assert len(lines) >= 2 * 8  # both runs in every per-run table


def test_runs_on_different_data_are_refused(
    two_runs: tuple[Path, Path, Path], tmp_path: Path, capsys
) -> None:
    _, ssm, _ = two_runs
    write_skewed(tmp_path / "other", seed=1)
    train_tiny(tmp_path / "other", tmp_path / "other-run", "mf", "ssm", epochs=1)
    assert main(["compare", str(ssm), str(tmp_path / "other-run")]) == 2
    err = capsys.readouterr().err
    assert "do not share a dataset" in err and "source hashes differ" in err
    assert main(["compare", str(ssm), str(tmp_path)]) == 2
    assert "not a complete run directory" in capsys.readouterr().err
