"""New users from their items: equal to adding the user to the graph and propagating it fully."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from serving_runs import trained_run

from ssmrec.cli import main
from ssmrec.models import build_model
from ssmrec.serving.export import from_run
from ssmrec.serving.foldin import foldin_from_model
from ssmrec.serving.recommend import FoldInUnsupportedError, Recommender


def _random_graph(n_users: int = 30, n_items: int = 25, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.15
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # no isolated user
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.mark.parametrize(
    ("name", "layers", "alpha"),
    [
        ("lightgcn", 1, (0.5, 0.5)),
        ("lightgcn", 2, (0.5, 0.5)),
        ("lightgcn", 3, (0.5, 0.5)),
        ("lightgcn", 3, (0.7, 0.2)),
        ("lightgcn", 2, (1.0, 0.0)),
        ("history", 1, (0.5, 0.0)),
        ("history", 1, (0.3, 0.6)),
    ],
)
def test_new_user_equals_full_propagation_of_the_augmented_graph(name, layers, alpha) -> None:
    torch.manual_seed(0)
    graph = _random_graph()
    model = build_model(name, graph, n_layers=layers, alpha=alpha, propagation="full")
    foldin = foldin_from_model(model, graph)
    for new_items in ([0], [3, 7, 11], list(range(0, 25, 2))):
        row = np.zeros((1, graph.shape[1]), np.float32)
        row[0, new_items] = 1
        augmented = sp.vstack([graph, sp.csr_matrix(row)]).tocsr()
        bigger = build_model(name, augmented, n_layers=layers, alpha=alpha, propagation="full")
        state = model.state_dict()
        state["user_embedding.weight"] = torch.cat(
            [state["user_embedding.weight"], torch.zeros(1, model.dim)]
        )
        bigger.load_state_dict(state)
        expected = bigger.representations()[0][-1].double().numpy()
        got = foldin.represent(np.array(new_items))
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-7)


def test_models_without_an_encoder_say_so(tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    run = trained_run("mf", tmp_path_factory.getbasetemp())
    with pytest.raises(FoldInUnsupportedError, match="no encoder for new users"):
        Recommender(from_run(run)).recommend_new([0, 1], 5)
    assert main(["recommend", str(run), "--items", "0,1"]) == 2
    assert "model 'mf' has no encoder for new users" in capsys.readouterr().err
    assert foldin_from_model(build_model("lightgcn", _random_graph(), n_layers=0), _random_graph()) is None


def test_cli_new_user_excludes_its_items(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = trained_run("lightgcn", tmp_path_factory.getbasetemp())
    export = from_run(run)
    service = Recommender(export)
    items = export.item_ids.indices([1, 2, 3])
    vector = export.foldin.represent(items)
    # brute force against the exported items, the new user's items masked
    scores = export.items.astype(np.float64) @ vector.astype(np.float64)
    scores[items] = -np.inf
    expected = np.lexsort((np.arange(len(scores)), -scores))[:6]
    np.testing.assert_array_equal(service.recommend_new(items, 6).items[0], expected)
    out = tmp_path / "new.jsonl"
    assert main(["recommend", str(run), "--items", "1,2,3", "-k", "6", "--output", str(out)]) == 0
    assert f'"items": [{", ".join(str(export.item_ids.values[i]) for i in expected)}]' in out.read_text()
