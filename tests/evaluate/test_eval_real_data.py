"""The exact evaluator on a real split (Last.fm, LightGCN format) against a float64 per-user reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import shared_dataset
from test_eval_ranking import naive_lists, naive_metrics

from ssmrec.evaluate import evaluate_ranking, metric_names, top_k


def read_split(path: Path, shape: tuple[int, int]) -> sp.csr_matrix:
    users, items = [], []
    for line in path.read_text().splitlines():
        fields = line.split()
        users += [int(fields[0])] * (len(fields) - 1)
        items += [int(f) for f in fields[1:]]
    matrix = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


@pytest.fixture(scope="module")
def lastfm() -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    folder = shared_dataset("lastfm")
    shape = (1885, 17388)  # SOURCE.md
    return tuple(read_split(folder / f"{name}.txt", shape) for name in ("train", "valid", "test"))  # type: ignore[return-value]


@pytest.mark.parametrize("score", ["dot", "cosine"])
def test_lastfm_matches_float64_reference(
    lastfm: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix], score: str
) -> None:
    train, valid, test = lastfm
    g = torch.Generator().manual_seed(0)
    users = torch.randn(train.shape[0], 32, generator=g)
    items = torch.randn(train.shape[1], 32, generator=g) * torch.rand(train.shape[1], 1, generator=g)
    ks = [10, 20, 50]
    full = evaluate_ranking(users, items, test, exclude=[train, valid], ks=ks, score=score, precision="fp32")
    fast = evaluate_ranking(users, items, test, exclude=[train, valid], ks=ks, score=score, precision="bf16")
    assert fast == full
    assert full["users"] == int((np.diff(test.indptr) > 0).sum())

    # Float64 reference on 150 users (random scores: no fp32 near-tie changes these lists).
    sample = np.arange(150)
    u, i = users[sample].double().numpy(), items.double().numpy()
    if score == "cosine":
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        i = i / np.linalg.norm(i, axis=1, keepdims=True)
    lists = naive_lists(u @ i.T, [train[sample], valid[sample]], 50)
    ours = top_k(users, items, sample, 50, exclude=[train, valid], score=score)
    assert ours.tolist() == [row + [-1] * (50 - len(row)) for row in lists]
    truth = sp.csr_matrix(test[sample])
    subset = evaluate_ranking(
        users[sample], items, truth, exclude=[train[sample], valid[sample]], ks=ks, score=score
    )
    expected = naive_metrics(lists, truth, ks)
    for name in metric_names(ks):
        assert subset[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-15), name
