"""The bf16-candidate fast path returns exactly the fp32 ranking, and its error bound holds."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ssmrec.evaluate import canonical_scores, evaluate_ranking, top_k
from ssmrec.evaluate import ranking as ranking_module
from ssmrec.evaluate.ranking import Ranker, _ErrorModel, _Screened, resolve_precision


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count rows decided by the bf16 screen, the fp32 screen, and the rescore-everything fallback."""
    counts: Counter[str] = Counter()
    screen, rescore_all = Ranker._screen, Ranker._rescore_all_above

    def spy_screen(self: Ranker, coarse: torch.Tensor, *args: object) -> _Screened:
        result = screen(self, coarse, *args)
        stage = "bf16" if coarse.dtype == torch.bfloat16 else "fp32"
        counts[stage] += int(result.ok.sum())
        return result

    def spy_all(self: Ranker, coarse: torch.Tensor, *args: object) -> torch.Tensor:
        counts["all"] += coarse.shape[0]
        return rescore_all(self, coarse, *args)

    monkeypatch.setattr(Ranker, "_screen", spy_screen)
    monkeypatch.setattr(Ranker, "_rescore_all_above", spy_all)
    yield counts


def naive_top(scores: np.ndarray, k: int) -> list[list[int]]:
    return [[int(i) for i in np.lexsort((np.arange(len(row)), -row))[:k]] for row in scores]


@pytest.mark.parametrize("score", ["dot", "cosine"])
def test_bf16_candidates_give_the_fp32_ranking_on_random_data(score: str, stages: Counter[str]) -> None:
    g = torch.Generator().manual_seed(0)
    n_users, n_items = 64, 3000
    users = torch.randn(n_users, 32, generator=g)
    # Item norms spread over two orders of magnitude, as popular items have in trained models.
    items = torch.randn(n_items, 32, generator=g) * torch.exp(torch.randn(n_items, 1, generator=g))
    train = sp.random(n_users, n_items, density=0.02, format="csr", dtype=np.float32, random_state=1)
    fast = top_k(users, items, None, 50, exclude=[train], score=score, chunk_size=20, precision="bf16")
    exact = top_k(users, items, None, 50, exclude=[train], score=score, precision="fp32")
    assert torch.equal(fast, exact)
    assert stages["bf16"] > n_users // 2  # the bf16 screen really decided most rows


def test_adversarial_near_ties_below_bf16_resolution(stages: Counter[str]) -> None:
    """300 items whose scores differ by 2^-17 (bf16 sees them all as 16.0): fp32 must separate them."""
    d, n_items = 16, 2000
    g = torch.Generator().manual_seed(1)
    items = torch.randn(n_items, d, generator=g) * 0.3
    cluster = torch.randperm(n_items, generator=g)[:300]
    steps = torch.randperm(300, generator=g).float()  # distinct score offsets, in random item order
    items[cluster] = 1.0
    items[cluster, 0] += steps * 2.0**-17  # exact in fp32; rounds to 1.0 in bf16
    users = torch.ones(3, d)
    users[1] *= 0.5  # a power of two: same ranking, exact scores
    users[2] = -users[2]  # the cluster ranks last for this user
    scores = users.double().numpy() @ items.double().numpy().T  # exact: dyadic values
    assert np.unique(items[cluster].bfloat16().float().numpy(), axis=0).shape[0] == 1
    expected = naive_top(scores, 10)
    assert top_k(users, items, None, 10, precision="bf16").tolist() == expected
    assert top_k(users, items, None, 10, precision="fp32").tolist() == expected
    assert stages["fp32"] >= 2  # the cluster rows needed fp32 candidates


def test_random_near_ties_agree_between_precisions() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(8, 24, generator=g)
    items = torch.randn(2500, 24, generator=g) * 0.2
    # 8 clusters of 100 items within ~1e-4 relative of a base vector: far below bf16 resolution.
    members = torch.randperm(2500, generator=g)[:800].view(8, 100)
    for c in range(8):
        items[members[c]] = base[c] + 1e-4 * torch.randn(100, 24, generator=g)
    users = base + 0.01 * torch.randn(8, 24, generator=g)
    for score in ("dot", "cosine"):
        fast = top_k(users, items, None, 20, score=score, precision="bf16")
        assert torch.equal(fast, top_k(users, items, None, 20, score=score, precision="fp32"))


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_exact_ties_beyond_the_candidate_slots(precision: str, stages: Counter[str]) -> None:
    """600 copies of the best item: more tied items than candidate slots, lowest indices must win."""
    g = torch.Generator().manual_seed(3)
    items = torch.randn(3000, 8, generator=g)
    users = torch.randn(4, 8, generator=g)
    copies = torch.randperm(3000, generator=g)[:600]
    items[copies] = users[0] * 3
    train = sp.csr_matrix(
        (np.ones(50, dtype=np.float32), (np.zeros(50, dtype=int), np.sort(copies.numpy())[:50])),
        shape=(4, 3000),
    )
    scores = (users @ items.T).double().numpy()  # copies score identically in any arithmetic
    scores[0, np.sort(copies.numpy())[:50]] = -np.inf
    expected = naive_top(scores, 20)
    assert top_k(users, items, None, 20, exclude=[train], precision=precision).tolist() == expected
    assert stages["all"] >= 1  # the rescore-everything fallback ran
    assert expected[0] == sorted(copies.tolist())[50:70]


def test_evaluate_is_identical_across_precisions() -> None:
    rng = np.random.default_rng(4)
    g = torch.Generator().manual_seed(4)
    users = torch.randn(120, 16, generator=g)
    items = torch.randn(5000, 16, generator=g)
    train = sp.random(120, 5000, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    test = sp.random(120, 5000, density=0.004, format="csr", dtype=np.float32, random_state=rng)
    train.data[:], test.data[:] = 1.0, 1.0
    test = sp.csr_matrix(test - test.multiply(train))
    test.eliminate_zeros()
    runs = [
        evaluate_ranking(users, items, test, exclude=[train], precision=p, chunk_size=c)
        for p, c in (("fp32", None), ("bf16", None), ("bf16", 17), ("auto", None))
    ]
    for run in runs[1:]:
        assert run == pytest.approx(runs[0], rel=1e-12)


def hard_embeddings(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wide dynamic range, cancellation, tiny and subnormal entries."""
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(40, 64, generator=g) * torch.exp(3 * torch.randn(40, 1, generator=g))
    items = torch.randn(700, 64, generator=g) * torch.exp(2 * torch.randn(700, 64, generator=g))
    # Scores near 0 by cancellation of large terms.
    items[:100] = users[:1].repeat(100, 1) * torch.tensor([1.0, -1.0]).repeat(32)
    items[100:150, :32] = 1e-39  # subnormal in fp32 and bf16
    users[::7, ::3] = 3e-38
    return users, items


@pytest.mark.parametrize("stage", ["bf16", "fp32"])
@pytest.mark.parametrize("seed", [5, 6])
def test_error_bound_holds_for_every_pair(stage: str, seed: int) -> None:
    users, items = hard_embeddings(seed)
    ranker = Ranker(users, items, "dot", "bf16")
    rows = torch.arange(len(users))
    coarse = ranker._coarse(rows, stage).double()
    canon = canonical_scores(ranker.users.unsqueeze(1), ranker.items.unsqueeze(0)).double()
    all_items = torch.arange(len(items)).expand(len(users), -1)
    bound = ranker.models[stage].pair_bound(rows.unsqueeze(1), all_items, coarse)
    assert bool(((coarse - canon).abs() <= bound).all())
    outside = ranker.models[stage].outside_bound(rows)[:, None] + ranker.models[stage].rel * coarse.abs()
    assert bool((bound <= outside * (1 + 1e-12)).all())  # E_max really bounds every item
    # The bound is not vacuous: well below |u| |i| for bf16, ~1e-5 of it for fp32.
    scale = ranker.users.double().norm(dim=1)[:, None] * ranker.items.double().norm(dim=1)[None]
    assert float((bound / scale.clamp(min=1e-30)).median()) < (0.02 if stage == "bf16" else 1e-4)


def test_bound_violation_falls_back_to_fp32_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    init_bf16 = Ranker._init_bf16

    def too_tight(self: Ranker, *args: object) -> None:
        init_bf16(self, *args)
        model = self.models["bf16"]
        self.models["bf16"] = _ErrorModel(
            model.user_factors * 0, model.item_factors * 0, model.item_max * 0, 0.0, 0.0
        )

    g = torch.Generator().manual_seed(7)
    users, items = torch.randn(30, 16, generator=g), torch.randn(4000, 16, generator=g)
    expected = top_k(users, items, None, 10, precision="fp32")
    monkeypatch.setattr(Ranker, "_init_bf16", too_tight)
    with pytest.warns(RuntimeWarning, match="outside the proven bound"):
        assert torch.equal(top_k(users, items, None, 10, precision="bf16", chunk_size=10), expected)


def test_reduced_fp32_matmul_precision_uses_the_wider_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(8)
    users, items = torch.randn(20, 16, generator=g), torch.randn(3000, 16, generator=g)
    expected = top_k(users, items, None, 10, precision="fp32")
    monkeypatch.setattr(ranking_module, "_fp32_matmul_reduced", lambda: True)
    ranker = Ranker(users, items, "dot", "fp32")
    assert ranker.models["fp32"].user_factors.shape[0] == 3
    assert torch.equal(top_k(users, items, None, 10, precision="fp32"), expected)


def test_auto_precision_choice() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, 100) == "fp32"
    assert resolve_precision("fp32", cpu, 10**6) == "fp32"
    assert resolve_precision("auto", torch.device("meta"), 10**6) == "fp32"
    # bf16 candidates by default only where bf16 GEMMs are faster than fp32 (AMX), see ranking.py.
    assert resolve_precision("auto", cpu, 10**6) == (
        "bf16" if ranking_module._bf16_gemm_is_fast() else "fp32"
    )
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", cpu, 10)  # type: ignore[arg-type]


def test_bound_needs_no_more_than_the_documented_dimension_limit() -> None:
    with pytest.raises(ValueError, match="too large"):
        ranking_module._gamma(2**23, 2.0**-23)
    assert math.isclose(ranking_module._gamma(64, 2.0**-24), 64 * 2.0**-24, rel_tol=1e-5)


@pytest.mark.parametrize("case", ["true_winner_rounds_down", "coarse_winner_rounds_up"])
def test_bf16_rounding_that_inverts_the_order_is_caught_by_the_per_pair_bound(case: str) -> None:
    """Cancellation makes bf16 input rounding flip two items; only the bounds keep the canonical order.

    User [1, -1]. Item A = [64.25 - e, 63.125 + e] rounds to [64, 63.25] in bf16 (spacing 0.5 above 64,
    0.25 below): coarse 0.75, exact 1.125 - 2e. Item B = [2, 1] is exact: 1. Item C = [64.25 + e,
    63.375 - e] rounds to [64.5, 63.25]: coarse 1.25, exact 0.875 + 2e.
    """
    e = 2.0**-10
    a, b, c = [64.25 - e, 63.125 + e], [2.0, 1.0], [64.25 + e, 63.375 - e]
    decoys = [[0.0, 5.0 + j / 8] for j in range(60)]  # scores -5 and below
    items = torch.tensor([a, b] if case == "true_winner_rounds_down" else [b, c])
    items = torch.cat([torch.tensor(decoys), items])
    user = torch.tensor([[1.0, -1.0]])
    coarse = (user.bfloat16() @ items.bfloat16().T).float()[0, -2:].tolist()
    exact = (user.double() @ items.double().T)[0, -2:].tolist()
    if case == "true_winner_rounds_down":
        assert coarse == [0.75, 1.0] and exact[0] > exact[1]  # A wins, but its coarse score is lower
        expected = [60, 61]
    else:
        assert coarse == [1.0, 1.25] and exact[0] > exact[1]  # B wins, C's coarse score is higher
        expected = [60, 61]
    for precision in ("bf16", "fp32"):
        assert top_k(user, items, None, 2, precision=precision).tolist() == [expected]
        assert top_k(user, items, None, 1, precision=precision).tolist() == [expected[:1]]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_chunks_ranked_by_parallel_workers_give_the_sequential_result(precision: str) -> None:
    """With two torch threads, chunks run in two worker threads: same top-K and metrics, in order."""
    rng = np.random.default_rng(5)
    users = torch.from_numpy(rng.normal(size=(203, 8)).astype(np.float32))
    items = torch.from_numpy(rng.normal(size=(2600, 8)).astype(np.float32))
    items[100:140] = items[7]  # exact ties across the catalogue
    train = sp.random(203, 2600, density=0.01, random_state=1, format="csr")
    test = sp.random(203, 2600, density=0.005, random_state=2, format="csr")
    test = sp.csr_matrix(test - test.multiply(train > 0))  # held-out items are not training items
    test.eliminate_zeros()
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            top = top_k(users, items, None, 30, exclude=[train], chunk_size=16, precision=precision)
            metrics = evaluate_ranking(
                users, items, test, exclude=[train], chunk_size=16, precision=precision
            )
            results.append((top, metrics))
            assert torch.get_num_threads() == threads  # restored after the parallel section
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]
    scores = (users.double() @ items.double().T).numpy()
    scores[train.nonzero()] = -np.inf
    assert results[1][0][:, 0].tolist() == [int(np.argmax(row)) for row in scores]
