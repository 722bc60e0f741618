"""The exact ranking engine: tie-break, exclusion, cosine, chunking, and a naive per-user reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ssmrec.evaluate import canonical_scores, evaluate_ranking, metric_names, top_k


def random_split(rng: np.random.Generator, n_users: int, n_items: int, density: float) -> sp.csr_matrix:
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    return sp.csr_matrix(dense)


def naive_lists(scores: np.ndarray, exclude: list[sp.csr_matrix], k: int) -> list[list[int]]:
    """Per user: indices sorted by (score desc, index asc) with lexsort, excluded items removed."""
    masked = scores.astype(np.float64).copy()
    for m in exclude:
        masked[m.toarray() > 0] = -np.inf
    lists = []
    for row in masked:
        order = np.lexsort((np.arange(len(row)), -row))
        lists.append(order[np.isfinite(row[order])][:k].tolist())
    return lists


def naive_metrics(lists: list[list[int]], truth: sp.csr_matrix, ks: list[int]) -> dict[str, float]:
    """The LightGCN definitions, one user and one position at a time."""
    sums = dict.fromkeys(metric_names(ks), 0.0)
    users = 0
    for u, ranked in enumerate(lists):
        relevant = set(truth[u].indices.tolist())
        if not relevant:
            continue
        users += 1
        for k in ks:
            hits = [1 if (r < len(ranked) and ranked[r] in relevant) else 0 for r in range(k)]
            n_hit = sum(hits)
            sums[f"recall@{k}"] += n_hit / len(relevant)
            sums[f"precision@{k}"] += n_hit / k
            sums[f"hit@{k}"] += 1.0 if n_hit else 0.0
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
            sums[f"ndcg@{k}"] += dcg / idcg
            first = next((r + 1 for r, h in enumerate(hits) if h), None)
            sums[f"mrr@{k}"] += 1 / first if first else 0.0
            ap, found = 0.0, 0
            for r, h in enumerate(hits):
                if h:
                    found += 1
                    ap += found / (r + 1)
            sums[f"map@{k}"] += ap / min(len(relevant), k)
    return {**{name: value / users for name, value in sums.items()}, "users": users}


def test_equal_scores_rank_lower_index_first() -> None:
    items = torch.tensor([[0.0], [2.0], [2.0], [1.0], [2.0], [2.0]])
    assert top_k(torch.ones(1, 1), items, None, 4).tolist() == [[1, 2, 4, 5]]
    assert top_k(torch.ones(1, 1), items, None, 6).tolist() == [[1, 2, 4, 5, 3, 0]]
    all_equal = torch.ones(50, 3)
    assert top_k(torch.ones(2, 3), all_equal, None, 5).tolist() == [[0, 1, 2, 3, 4]] * 2


def test_excluded_items_never_appear_even_with_the_top_score() -> None:
    items = torch.tensor([[9.0], [1.0], [8.0], [2.0]])
    exclude = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    top = top_k(torch.ones(2, 1), items, None, 4, exclude=[exclude])
    assert top.tolist() == [[3, 1, -1, -1], [0, 2, 3, 1]]  # fewer candidates than K: -1 padding
    assert top_k(torch.ones(2, 1), items, [1, 0], 2, exclude=[exclude]).tolist() == [[0, 2], [3, 1]]


def test_cosine_and_dot_rank_differently() -> None:
    user = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[10.0, 10.0], [1.0, 0.0]])  # dot: 10 vs 1; cosine: 0.707 vs 1
    assert top_k(user, items, None, 1, score="dot").tolist() == [[0]]
    assert top_k(user, items, None, 1, score="cosine").tolist() == [[1]]
    truth = sp.csr_matrix(np.array([[0, 1]], dtype=np.float32))
    assert evaluate_ranking(user, items, truth, ks=(1,), score="dot")["hit@1"] == 0.0
    assert evaluate_ranking(user, items, truth, ks=(1,), score="cosine")["hit@1"] == 1.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("n_items", [400, 5000])  # 5000: items are screened by groups of up to 32
def test_matches_naive_reference_with_many_ties(precision: str, n_items: int) -> None:
    """Integer embeddings: exact scores with many ties; compared with a lexsort reference per user."""
    rng = np.random.default_rng(0)
    n_users, d = 60, 4
    users = torch.from_numpy(rng.integers(-2, 3, (n_users, d)).astype(np.float32))
    items = torch.from_numpy(rng.integers(-2, 3, (n_items, d)).astype(np.float32))
    train = random_split(rng, n_users, n_items, 0.05)
    test = random_split(rng, n_users, n_items, 0.03)
    test = sp.csr_matrix(test - test.multiply(train))
    test.eliminate_zeros()
    scores = users.numpy().astype(np.int64) @ items.numpy().astype(np.int64).T
    ks = [1, 5, 20, 50]
    lists = naive_lists(scores, [train], max(ks))
    for k in (10, 50):  # 10 with 5000 items: the group maxima are screened in two levels
        assert top_k(users, items, None, k, exclude=[train], precision=precision).tolist() == [
            row[:k] + [-1] * (k - len(row[:k])) for row in lists
        ]
    out = evaluate_ranking(users, items, test, exclude=[train], ks=ks, precision=precision, chunk_size=7)
    expected = naive_metrics(lists, test, ks)
    assert out["users"] == expected["users"]
    for name in metric_names(ks):
        assert out[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-15), name


@pytest.mark.parametrize("score", ["dot", "cosine"])
def test_matches_float64_reference_on_random_data(score: str) -> None:
    rng = np.random.default_rng(1)
    users = torch.from_numpy(rng.standard_normal((40, 16)).astype(np.float32))
    items = torch.from_numpy(rng.standard_normal((300, 16)).astype(np.float32))
    train = random_split(rng, 40, 300, 0.1)
    u, i = users.numpy().astype(np.float64), items.numpy().astype(np.float64)
    if score == "cosine":
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        i = i / np.linalg.norm(i, axis=1, keepdims=True)
    lists = naive_lists(u @ i.T, [train], 30)
    assert top_k(users, items, None, 30, exclude=[train], score=score).tolist() == lists


def test_chunked_equals_unchunked() -> None:
    rng = np.random.default_rng(2)
    n_users, n_items = 37, 500
    users = torch.randn(n_users, 8, generator=torch.Generator().manual_seed(3))
    items = torch.randn(n_items, 8, generator=torch.Generator().manual_seed(4))
    train = random_split(rng, n_users, n_items, 0.05)
    valid = random_split(rng, n_users, n_items, 0.02)
    test = random_split(rng, n_users, n_items, 0.02)
    test = sp.csr_matrix(test - test.multiply(train) - test.multiply(valid))
    test.eliminate_zeros()
    results, tops = [], []
    for chunk in (1, 3, n_users, None):
        tops.append(top_k(users, items, None, 25, exclude=[train, valid], chunk_size=chunk))
        results.append(
            evaluate_ranking(users, items, test, exclude=[train, valid], ks=(5, 25), chunk_size=chunk)
        )
    for top, out in zip(tops[1:], results[1:], strict=True):
        assert torch.equal(top, tops[0])
        assert out == pytest.approx(results[0], rel=1e-12)


def test_top_k_selected_users_match_full_rows() -> None:
    users = torch.randn(20, 5, generator=torch.Generator().manual_seed(5))
    items = torch.randn(70, 5, generator=torch.Generator().manual_seed(6))
    train = random_split(np.random.default_rng(7), 20, 70, 0.2)
    full = top_k(users, items, None, 10, exclude=[train])
    picked = [19, 3, 3, 0]
    assert torch.equal(top_k(users, items, picked, 10, exclude=[train]), full[picked])
    assert torch.equal(top_k(users, items, torch.tensor(picked), 10, exclude=[train]), full[picked])
    assert top_k(users, items, [], 10).shape == (0, 10)
    with pytest.raises(IndexError):
        top_k(users, items, [20], 10)


def test_canonical_scores_do_not_depend_on_batching_and_are_accurate() -> None:
    g = torch.Generator().manual_seed(8)
    u = torch.randn(64, 37, generator=g) * torch.logspace(-3, 3, 37)
    i = torch.randn(64, 37, generator=g)
    together = canonical_scores(u, i)
    one_by_one = torch.stack([canonical_scores(u[p : p + 1], i[p : p + 1])[0] for p in range(64)])
    assert torch.equal(together, one_by_one)
    exact = (u.double() * i.double()).sum(1)
    t = 1 + math.ceil(math.log2(37))
    bound = t * 2.0**-24 / (1 - t * 2.0**-24) * (u.double() * i.double()).abs().sum(1)
    assert bool(((together.double() - exact).abs() <= bound).all())


def test_inputs_are_validated_and_not_mutated() -> None:
    items = torch.randn(5, 2)
    exclude = sp.csr_matrix(
        (np.ones(2, dtype=np.float32), np.array([3, 1]), np.array([0, 2])), shape=(1, 5)
    )  # unsorted indices
    assert not exclude.has_sorted_indices
    assert -1 not in top_k(torch.ones(1, 2), items, None, 3, exclude=[exclude]).tolist()[0]
    assert exclude.indices.tolist() == [3, 1]
    with pytest.raises(ValueError, match="NaN"):
        top_k(torch.tensor([[math.nan, 0.0]]), items, None, 3)
    with pytest.raises(ValueError, match="score"):
        top_k(torch.ones(1, 2), items, None, 3, score="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same d"):
        top_k(torch.ones(1, 3), items, None, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        top_k(torch.ones(1, 2), items, None, 3, chunk_size=0)


def test_progress_bar_grad_tensors_and_sparse_arrays(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(9)
    users = torch.randn(30, 4, requires_grad=True)
    items = torch.randn(80, 4, requires_grad=True)
    train = random_split(rng, 30, 80, 0.1)
    test = random_split(rng, 30, 80, 0.05)
    test = sp.csr_matrix(test - test.multiply(train))
    test.eliminate_zeros()
    quiet = evaluate_ranking(users, items, test, exclude=[train], ks=(5,), chunk_size=7)
    loud = evaluate_ranking(
        users, items, sp.csr_array(test), exclude=[train.tocoo()], ks=(5,), chunk_size=7, progress=True
    )
    assert loud == quiet
    chunks = -(-quiet["users"] // 7)  # only users with a test item are ranked
    assert f"{chunks}/{chunks}" in capsys.readouterr().err
    assert not top_k(users, items, None, 3).requires_grad
