"""faiss indexes: seen items never returned, recall against the exact ranking, saved beside the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serving_runs import trained_run

pytest.importorskip("faiss", reason="the ann extra (faiss-cpu) is not installed")

from ssmrec.cli import main
from ssmrec.serving.ann import AnnRecommender, build_index, index_path
from ssmrec.serving.export import from_run, load
from ssmrec.serving.recommend import Recommender


@pytest.mark.parametrize(("kind", "run"), [("hnsw", "lightgcn"), ("ivf", "lightgcn"), ("hnsw", "mf")])
def test_index_filters_seen_and_recalls_the_exact_top_k(kind: str, run: str, tmp_path_factory) -> None:
    export = from_run(trained_run(run, tmp_path_factory.getbasetemp()))
    users = np.arange(len(export.users))
    exact = Recommender(export).recommend(users, 5)
    approx = AnnRecommender(export, build_index(export, kind)).recommend(users, 5)
    for user in users:
        got = approx.items[user][approx.items[user] >= 0]
        assert not set(got) & set(export.seen_items(user)), "a seen item was returned"
        assert len(got) == len(set(got)) == 5
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(approx.items, exact.items, strict=True)])
    assert recall >= 0.9  # a 48-item catalogue: the index is near exact


def test_export_index_is_found_by_recommend(tmp_path_factory, tmp_path: Path, capsys) -> None:
    run = trained_run("lightgcn", tmp_path_factory.getbasetemp())
    out = tmp_path / "e.npz"
    assert main(["export", str(run), "--output", str(out), "--index", "hnsw"]) == 0
    assert index_path(out, "hnsw").is_file()
    capsys.readouterr()
    service = AnnRecommender.for_export(load(out), "hnsw")
    assert service.index.build_seconds == 0.0  # loaded, not rebuilt
    assert main(["recommend", str(out), "--index", "hnsw", "--user", "0", "-k", "3"]) == 0
    line = capsys.readouterr().out
    assert line.startswith('{"user": 0, "items": [')
