"""Export, recommend and similar items against independently computed values."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from serving_runs import trained_run

from ssmrec.cli import main
from ssmrec.evaluate.metrics import metric_sums
from ssmrec.experiment import evaluate_split, exclusions, load_run
from ssmrec.export import load
from ssmrec.serving.export import from_run, write
from ssmrec.serving.recommend import Recommender


@pytest.fixture
def lightgcn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run("lightgcn", tmp_path_factory.getbasetemp())


@pytest.fixture
def mf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run("mf", tmp_path_factory.getbasetemp())


def brute_top_k(users: np.ndarray, items: np.ndarray, k: int, mask: np.ndarray | None, rule: str):
    """Top-k by float64 scores, -inf on masked pairs, ties to the lower item index (numpy only)."""
    if rule == "cosine":
        users = users / np.linalg.norm(users, axis=1, keepdims=True)
        items = items / np.linalg.norm(items, axis=1, keepdims=True)
    scores = users.astype(np.float64) @ items.astype(np.float64).T
    if mask is not None:
        scores[mask] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(items.shape[0]), scores.shape), -scores), axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, 1)


def test_export_holds_what_ranking_uses(lightgcn_run: Path, tmp_path: Path) -> None:
    _, data, model = load_run(lightgcn_run)
    users, items = model.representations()
    ids = json.loads((lightgcn_run / "id_maps.json").read_text())
    seen = (data.train + data.valid).toarray() > 0
    for fmt in ("npz", "safetensors", "parquet"):
        path = write(from_run(lightgcn_run), tmp_path / f"export.{fmt}", fmt)
        export = load(path)
        np.testing.assert_array_equal(export.users, users.numpy())
        np.testing.assert_array_equal(export.items, items.numpy())
        assert export.user_ids.values == ids["users"] and export.item_ids.values == ids["items"]
        np.testing.assert_array_equal(export.seen.toarray() > 0, seen)
        assert export.ranking_rule == "dot" and export.similarity == "cosine"
        assert any("cosine" in w and "inner product" in w for w in export.warnings)
        assert (
            export.metadata["fingerprint"]["data"]["source"]
            == json.loads((lightgcn_run / "data.json").read_text())["source"]
        )
        assert export.metadata["metrics"]["test"]["recall@20"] == pytest.approx(
            json.loads((lightgcn_run / "final_metrics.json").read_text())["test"]["recall@20"]
        )
        # the graph (train only) differs from seen (train + valid): it travels for new users
        np.testing.assert_array_equal(export.foldin.graph.toarray() > 0, data.train.toarray() > 0)


def test_recommend_equals_the_evaluator(lightgcn_run: Path, mf_run: Path) -> None:
    """Metrics computed from ``recommend``'s lists equal ``evaluate_split``'s, for both ranking rules."""
    for run in (lightgcn_run, mf_run):
        config, data, model = load_run(run)
        service = Recommender(from_run(run))
        n_relevant = np.diff(data.test.indptr)
        users = np.flatnonzero(n_relevant)
        k = 20
        ranked = service.recommend(users, k)
        truth = data.test.toarray() > 0
        hits = torch.from_numpy(
            np.where(ranked.items >= 0, truth[users[:, None], ranked.items.clip(0)], False)
        )
        sums = metric_sums(hits, torch.from_numpy(n_relevant[users]), [10, 20])
        expected = evaluate_split(model, data, "test", config)
        for name, value in sums.items():
            assert value / len(users) == pytest.approx(expected[name], abs=1e-12), name


def test_recommend_matches_brute_force(lightgcn_run: Path, mf_run: Path) -> None:
    for run in (lightgcn_run, mf_run):
        export = from_run(run)
        service = Recommender(export)
        users = np.arange(len(export.users))
        mask = export.seen.toarray() > 0
        for include_seen in (False, True):
            ranked = service.recommend(users, 7, include_seen)
            order, scores = brute_top_k(
                export.users, export.items, 7, None if include_seen else mask, export.ranking_rule
            )
            np.testing.assert_array_equal(ranked.items, order)
            np.testing.assert_allclose(ranked.scores, scores, rtol=1e-5, atol=1e-6)
            for user in (0, 5, 17):  # the server's per-request engine: the same lists
                one = service.recommend_one(user, 7, include_seen)
                np.testing.assert_array_equal(one.items[0], ranked.items[user])
                np.testing.assert_array_equal(one.scores[0], ranked.scores[user])


def test_short_lists_when_few_items_remain(mf_run: Path) -> None:
    export = from_run(mf_run)
    n_items = len(export.items)
    ranked = Recommender(export).recommend([0], n_items)
    rankable = n_items - len(export.seen_items(0))
    assert (ranked.items[0] >= 0).sum() == rankable and (ranked.items[0, rankable:] == -1).all()
    assert np.isnan(ranked.scores[0, rankable:]).all()


def test_similar_items_by_trained_similarity(lightgcn_run: Path) -> None:
    export = from_run(lightgcn_run)
    items = export.items
    for item in (0, 3, 30):
        ranked = Recommender(export).similar(item, 5)
        mask = np.zeros((1, len(items)), bool)
        mask[0, item] = True
        order, scores = brute_top_k(items[item : item + 1], items, 5, mask, "cosine")
        np.testing.assert_array_equal(ranked.items, order)
        np.testing.assert_allclose(ranked.scores, scores, rtol=1e-5)


def test_cli_recommend_jsonl_and_csv_speak_original_ids(lightgcn_run: Path, tmp_path: Path, capsys) -> None:
    export_path = tmp_path / "e.npz"
    assert main(["export", str(lightgcn_run), "--output", str(export_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bytes"] == export_path.stat().st_size
    export = load(export_path)
    users_file = tmp_path / "users.txt"
    users_file.write_text("3\n0\n\n12\n")
    out = tmp_path / "recs.jsonl"
    assert (
        main(["recommend", str(export_path), "--users", str(users_file), "-k", "4", "--output", str(out)])
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    service = Recommender(export)
    expected = service.recommend(export.user_ids.indices([3, 0, 12]), 4)
    assert [r["user"] for r in rows] == [3, 0, 12]
    for row, items, scores in zip(rows, expected.items, expected.scores, strict=True):
        assert row["items"] == [export.item_ids.values[i] for i in items]
        np.testing.assert_array_equal(np.float32(row["scores"]), scores)  # exact fp32 round trip
    csv_out = tmp_path / "recs.csv"
    assert main(["recommend", str(lightgcn_run), "--user", "3", "-k", "4", "--output", str(csv_out)]) == 0
    lines = csv_out.read_text().splitlines()
    assert lines[0] == "user,rank,item,score" and len(lines) == 5
    assert [int(line.split(",")[2]) for line in lines[1:]] == rows[0]["items"]


def test_cli_bad_input_fails_cleanly(lightgcn_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "recs.jsonl"
    assert main(["recommend", str(lightgcn_run), "--user", "3", "999999", "--output", str(out)]) == 2
    assert "unknown user id '999999'" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written
    assert main(["recommend", str(lightgcn_run), "--user", "3", "-k", "0"]) == 2
    assert "k must be a positive integer" in capsys.readouterr().err
    assert main(["similar", str(lightgcn_run), "--item", "nope"]) == 2
    assert "unknown item id 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["recommend", str(bad), "--user", "3"]) == 2
    assert "not a readable ssmrec export" in capsys.readouterr().err


def test_old_run_without_id_maps_says_how_to_recreate(lightgcn_run: Path, tmp_path: Path, capsys) -> None:
    old = tmp_path / "old-run"
    shutil.copytree(lightgcn_run, old)
    (old / "id_maps.json").unlink()
    assert main(["export", str(old)]) == 2
    err = capsys.readouterr().err
    assert "no id_maps.json" in err and "training it again" in err
    assert not (old / "export.npz").exists()


def test_parquet_without_pyarrow_is_one_clear_error(
    lightgcn_run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name: str, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    assert main(["export", str(lightgcn_run), "--format", "parquet", "--output", str(tmp_path / "p")]) == 2
    assert "needs pyarrow" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_export_is_never_unpickled(lightgcn_run: Path, tmp_path: Path) -> None:
    path = write(from_run(lightgcn_run), tmp_path / "e.npz")
    with np.load(path, allow_pickle=False) as archive:  # every array loads without pickle
        assert {"user_embeddings", "item_embeddings", "seen_indptr", "seen_indices", "metadata"} <= set(
            archive.files
        )
        assert all(archive[name].dtype != object for name in archive.files)


def test_exclusions_are_the_evaluators(lightgcn_run: Path) -> None:
    _, data, _ = load_run(lightgcn_run)
    union = sum(exclusions(data, "test")[1:], exclusions(data, "test")[0])
    assert (from_run(lightgcn_run).seen != sp.csr_matrix(union > 0)).nnz == 0


def test_nan_free_scores(lightgcn_run: Path) -> None:
    ranked = Recommender(from_run(lightgcn_run)).recommend([0, 1], 5)
    assert not any(math.isnan(x) for x in ranked.scores.ravel())
