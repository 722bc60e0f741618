"""The exactness invariants of the objectives: each must hold up to float tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ssmrec.batch import Batch
from ssmrec.losses import (
    AdaptiveTemperatureLoss,
    BilateralSoftmaxLoss,
    BPRLoss,
    Candidates,
    FullSoftmaxLoss,
    SampledSoftmaxLoss,
    adaptive,
)
from ssmrec.losses.candidates import score_candidates
from ssmrec.losses.logsumexp import chunked_logsumexp
from ssmrec.sampling import SharedSampler, TrainingSet, UniformSampler


def _random(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ssm_with_one_negative_dot_tau1_is_bpr(reduction: str) -> None:
    users, positives, negatives = _random(0, 6, 4), _random(1, 6, 4), _random(2, 6, 1, 4)
    ssm = SampledSoftmaxLoss(temperature=1.0, similarity="dot", num_negatives=1, reduction=reduction)
    bpr = BPRLoss(num_negatives=1, reduction=reduction)
    torch.testing.assert_close(ssm(users, positives, negatives), bpr(users, positives, negatives))


def _full_setup(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    users = _random(seed, 5, 3).requires_grad_(True)
    items = _random(seed + 1, 7, 3).requires_grad_(True)
    positives = torch.tensor([0, 3, 3, 6, 1])
    return users, items, positives


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_ssm_over_all_other_items_is_full_softmax_and_chunking_is_exact(similarity: str) -> None:
    tau = 0.3
    values, grads = [], []
    users, items, positives = _full_setup()
    batch = Batch(users=torch.arange(5), positives=positives, in_batch=False, all_items=lambda: items)
    # 1) SSM whose sampled negatives are every item but the positive
    others = torch.stack([torch.tensor([j for j in range(7) if j != int(p)]) for p in positives])
    ssm = SampledSoftmaxLoss(temperature=tau, similarity=similarity, num_negatives=6)  # type: ignore[arg-type]
    values.append(ssm(users, items[positives], items[others]))
    # 2) the full softmax, unchunked and in chunks of 3 and of 1 item
    for chunk in (None, 3, 1):
        full = FullSoftmaxLoss(temperature=tau, similarity=similarity, softmax_chunk_size=chunk)  # type: ignore[arg-type]
        values.append(full(users, items[positives], None, batch))
    # 3) plain cross-entropy over the full score matrix
    u = F.normalize(users, dim=1) if similarity == "cosine" else users
    i = F.normalize(items, dim=1) if similarity == "cosine" else items
    values.append(F.cross_entropy(u @ i.T / tau, positives, reduction="sum"))
    for value in values:
        users.grad = items.grad = None
        value.backward()
        grads.append((users.grad.clone(), items.grad.clone()))
    for value, (grad_users, grad_items) in zip(values[1:], grads[1:], strict=True):
        torch.testing.assert_close(value, values[0])
        torch.testing.assert_close(grad_users, grads[0][0])
        torch.testing.assert_close(grad_items, grads[0][1])


def test_chunked_full_softmax_with_exclusion_equals_unchunked() -> None:
    users, items, positives = _full_setup(5)
    dense = np.zeros((5, 7), dtype=np.float32)
    dense[[0, 0, 1, 1, 2, 3, 3, 4], [0, 2, 3, 4, 3, 6, 1, 1]] = 1  # positives 0, 3, 3, 6, 1 plus others
    training = TrainingSet(sp.csr_matrix(dense))
    batch = Batch(
        users=torch.arange(5), positives=positives, in_batch=False, training=training, all_items=lambda: items
    )
    # independent reference: the masked log-sum written out on the full score matrix
    logits = users @ items.T / 0.5
    dropped = torch.from_numpy(dense.astype(bool))  # other training items of the user...
    dropped[torch.arange(5), positives] = True  # ...and, in SL form, the positive itself
    reference = (
        torch.logsumexp(logits.masked_fill(dropped, float("-inf")), dim=1)
        - logits[torch.arange(5), positives]
    ).sum()
    reference.backward()
    results = [(reference.detach(), users.grad.clone(), items.grad.clone())]
    for chunk in (None, 2, 1):
        loss = FullSoftmaxLoss(
            temperature=0.5,
            similarity="dot",
            exclude="train",
            positive_in_denominator=False,
            softmax_chunk_size=chunk,
        )
        users.grad = items.grad = None
        value = loss(users, items[positives], None, batch)
        value.backward()
        results.append((value.detach(), users.grad.clone(), items.grad.clone()))
    for result in results[1:]:
        for got, want in zip(result, results[0], strict=True):
            torch.testing.assert_close(got, want)


def test_chunked_logsumexp_gradients_by_gradcheck_with_learnable_temperature() -> None:
    """The hand-written backward against finite differences, a learnable τ and dropped pairs included."""
    users, items = _random(11, 4, 3).requires_grad_(True), _random(12, 9, 3).requires_grad_(True)
    log_tau = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    rows, columns = np.array([0, 0, 2, 3, 3, 3]), np.array([1, 8, 4, 0, 5, 6])

    def log_sums(u: torch.Tensor, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return chunked_logsumexp(u, i, t.exp(), rows, columns, chunk_size=4)

    assert torch.autograd.gradcheck(log_sums, (users, items, log_tau))
    # a row whose every item is dropped sums to −inf and passes no gradient (not NaN) back
    every = np.arange(9)
    value = chunked_logsumexp(users, items, 1.0, np.zeros(9, dtype=np.int64), every, chunk_size=4)
    assert value[0] == float("-inf") and torch.isfinite(value[1:]).all()
    grad_users, grad_items = torch.autograd.grad(value, (users, items), torch.ones(4, dtype=torch.float64))
    assert torch.equal(grad_users[0], torch.zeros(3, dtype=torch.float64))
    assert torch.isfinite(grad_users).all() and torch.isfinite(grad_items).all()


def test_chunked_logsumexp_subtracts_constant_column_offsets() -> None:
    """Offsets (log q) are subtracted from each column's logits in every chunk and take no gradient;
    the reference is the masked log-sum-exp of the whole offset logit matrix."""
    users, items = _random(15, 4, 3).requires_grad_(True), _random(16, 9, 3).requires_grad_(True)
    offsets = _random(17, 9).requires_grad_(True)
    rows, columns = np.array([0, 2, 3]), np.array([8, 4, 0])
    dropped = torch.zeros(4, 9, dtype=torch.bool)
    dropped[rows, columns] = True
    reference = torch.logsumexp((users @ items.T / 0.4 - offsets).masked_fill(dropped, float("-inf")), 1)
    want = torch.autograd.grad(reference.sum(), (users, items))
    for chunk in (None, 4, 1):
        value = chunked_logsumexp(users, items, 0.4, rows, columns, chunk, offsets)
        torch.testing.assert_close(value, reference)
        got = torch.autograd.grad(value.sum(), (users, items))
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
    assert offsets.grad is None
    with pytest.raises(ValueError, match="offsets must have shape"):
        chunked_logsumexp(users, items, 0.4, rows, columns, 4, offsets[:5])


def _duplicate_free_batch() -> tuple[torch.Tensor, torch.Tensor, Batch]:
    users, items = _random(7, 4, 3), _random(8, 6, 3)
    ids = torch.tensor([0, 2, 5, 1])
    return users, items[ids], Batch(users=torch.arange(4), positives=ids, in_batch=True)


def test_excluding_duplicates_without_duplicates_changes_nothing() -> None:
    users, positives, batch = _duplicate_free_batch()
    plain = SampledSoftmaxLoss(temperature=0.2)(users, positives, None, batch)
    masked = SampledSoftmaxLoss(temperature=0.2, exclude="duplicates")(users, positives, None, batch)
    torch.testing.assert_close(masked, plain)


def test_excluding_duplicates_equals_the_masked_value() -> None:
    users, items = _random(9, 4, 3), _random(10, 6, 3)
    ids = torch.tensor([2, 4, 2, 2])  # rows 0, 2, 3 share item 2
    batch = Batch(users=torch.arange(4), positives=ids, in_batch=True)
    value = SampledSoftmaxLoss(temperature=0.5, similarity="dot", exclude="duplicates")(
        users, items[ids], None, batch
    )
    scores = (users @ items[ids].T / 0.5).numpy()
    expected = 0.0
    for b in range(4):
        keep = [j for j in range(4) if j == b or ids[j] != ids[b]]
        expected += np.log(np.exp(scores[b, keep]).sum()) - scores[b, b]
    assert value.item() == pytest.approx(expected, rel=1e-9)


def _row_zero_covered() -> TrainingSet:
    """5 users, 10 items; user 0's training items (0, 1, 2, 7, 8, 9) cover every column of row 0 in
    the batches below (positives 0, 1, 2, 1, 1 and shared negatives 7, 8, 9)."""
    dense = np.zeros((5, 10), dtype=np.float32)
    dense[0, [0, 1, 2, 7, 8, 9]] = 1
    dense[1, [1, 4]] = 1
    dense[2, [2, 9]] = 1
    dense[3, [1, 3]] = 1
    dense[4, [1, 5, 7]] = 1
    return TrainingSet(sp.csr_matrix(dense))


def _column_log_q(n_columns: int) -> torch.Tensor:
    """(1, K) log q of the batches below: one value per column, equal for the duplicated item 1."""
    return torch.tensor([[0.3, 1.5, 0.2, 1.5, 1.5, 0.05, 0.1, 0.4][:n_columns]], dtype=torch.float64).log()


@pytest.mark.parametrize("exclude", ["none", "duplicates", "train"])
@pytest.mark.parametrize("positive_in_denominator", [True, False])
@pytest.mark.parametrize("shared_negatives", [0, 3])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("bilateral", [False, True])
@pytest.mark.parametrize("logq", ["none", "standard", "corrected"])
def test_shared_column_path_equals_the_masked_score_matrix(
    exclude: str,
    positive_in_denominator: bool,
    shared_negatives: int,
    similarity: str,
    bilateral: bool,
    logq: str,
) -> None:
    """In-batch (and shared-negative) SSM and BSL go through the chunked log-sum-exp kernel; it must
    give the masked (B, K) computation's values and gradients, a learnable τ's included, also for a
    row whose every candidate is masked. BSL's τ₁ ≠ τ₂ and weight 0.8 check that the positive term and
    the log-sum weight are applied on that path too, and a log q that differs per column that both
    logQ forms are (the corrected one leaves it off the row's own positive)."""
    training = _row_zero_covered()
    ids = torch.tensor([0, 1, 2, 1, 1])  # item 1 three times: duplicates
    negative_ids = torch.tensor([7, 8, 9])[:shared_negatives] if shared_negatives else None
    batch = Batch(
        users=torch.arange(5),
        positives=ids,
        negatives=negative_ids,
        in_batch=True,
        training=training,
        log_q=_column_log_q(5 + shared_negatives),
    )
    options = {"positive_temperature": 0.7, "negative_weight": 0.8} if bilateral else {}
    loss = (BilateralSoftmaxLoss if bilateral else SampledSoftmaxLoss)(
        temperature=0.3,
        similarity=similarity,  # type: ignore[arg-type]
        num_negatives=shared_negatives,
        exclude=exclude,
        positive_in_denominator=positive_in_denominator,
        logq=logq,
        learn_temperature=True,
        **options,
    ).double()
    user_table, item_table = _random(21, 5, 4), _random(22, 10, 4)

    def run(chunked: bool) -> tuple[torch.Tensor, ...]:
        users = user_table.clone().requires_grad_(True)
        items = item_table.clone().requires_grad_(True)
        negatives = None if negative_ids is None else items[negative_ids]
        loss.zero_grad()
        if chunked:
            rows = loss.shared_column_losses(users, items[ids], negatives, batch)
        else:
            candidates = score_candidates(users, items[ids], negatives, batch, loss.similarity, exclude)
            rows = loss.row_losses(candidates, batch)
        rows.sum().backward()
        assert loss.log_temperature.grad is not None
        return rows.detach(), users.grad, items.grad, loss.log_temperature.grad.clone()

    assert loss._shares_columns(None if negative_ids is None else item_table[negative_ids], batch)
    for chunked, reference in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(chunked, reference)
    if exclude == "train" and not positive_in_denominator:
        assert run(True)[0][0].item() == 0.0  # nothing left in row 0's denominator


def _uniform_training() -> TrainingSet:
    dense = np.zeros((6, 12), dtype=np.float32)
    for user in range(6):
        dense[user, [user, (user + 3) % 12, (2 * user + 1) % 12]] = 1
    return TrainingSet(sp.csr_matrix(dense))


@pytest.mark.parametrize("kind", ["uniform", "shared"])
def test_standard_logq_of_a_uniform_sampler_is_no_correction(kind: str) -> None:
    training = _uniform_training()
    sampler = UniformSampler(training, 5) if kind == "uniform" else SharedSampler(training, 5, beta=0.0)
    users = torch.arange(6)
    positives = torch.from_numpy(training.matrix.indices[training.matrix.indptr[:-1]].astype(np.int64))
    negatives = sampler.sample(users, positives, np.random.default_rng(0))
    batch = Batch.build(users, positives, negatives, training=training)
    item_table = _random(11, 12, 4)
    user_table = _random(12, 6, 4)
    negative_repr = item_table[negatives.ids]
    for denominator in (True, False):
        options = {"temperature": 0.25, "num_negatives": 5, "positive_in_denominator": denominator}
        plain = SampledSoftmaxLoss(**options)(user_table, item_table[positives], negative_repr, batch)
        corrected = SampledSoftmaxLoss(logq="standard", **options)(
            user_table, item_table[positives], negative_repr, batch
        )
        torch.testing.assert_close(corrected, plain)


@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_gradient_of_each_negative_score_is_its_softmax_weight_over_tau(tau: float) -> None:
    scores = _random(13, 4, 6).requires_grad_(True)
    for in_batch, target in ((False, torch.zeros(4, dtype=torch.long)), (True, torch.arange(4))):
        scores.grad = None
        candidates = Candidates(scores=scores, target=target, in_batch=in_batch)
        SampledSoftmaxLoss(temperature=tau).row_losses(candidates, None).sum().backward()
        weights = torch.softmax(scores.detach() / tau, dim=1)
        expected = weights / tau
        expected[torch.arange(4), target] -= 1 / tau  # the positive's: (p − 1)/τ
        torch.testing.assert_close(scores.grad, expected)


def test_gradient_with_masked_columns_is_the_masked_softmax_weight() -> None:
    tau = 0.5
    scores = _random(14, 3, 5).requires_grad_(True)
    excluded = torch.zeros(3, 5, dtype=torch.bool)
    excluded[0, 2] = excluded[1, 4] = excluded[2, 1] = True
    candidates = Candidates(
        scores=scores, target=torch.zeros(3, dtype=torch.long), in_batch=False, excluded=excluded
    )
    SampledSoftmaxLoss(temperature=tau).row_losses(candidates, None).sum().backward()
    logits = (scores.detach() / tau).masked_fill(excluded, float("-inf"))
    expected = torch.softmax(logits, dim=1) / tau
    expected[:, 0] -= 1 / tau
    torch.testing.assert_close(scores.grad, expected)
    assert (scores.grad[excluded] == 0).all()


def _no_score_matrix(*args: object, **kwargs: object) -> None:
    raise AssertionError("the in-batch Adap-τ loss built the (B, K) score matrix")


@pytest.mark.parametrize("exclude", ["none", "duplicates", "train"])
@pytest.mark.parametrize("shared_negatives", [0, 3])
@pytest.mark.parametrize("logq", ["none", "corrected"])
def test_adaptive_tau_in_batch_equals_its_score_matrix_computation(
    exclude: str, shared_negatives: int, logq: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adap-τ in-batch goes through the chunked kernel with one τ per row (its user's 1/β_u), never
    building the (B, K) score matrix; its loss, gradients and the unscaled per-user losses it records
    for the next epoch's β must be those of the masked score matrix."""
    training = _row_zero_covered()
    ids = torch.tensor([0, 1, 2, 1, 1])
    users_ids = torch.tensor([0, 1, 2, 3, 1])  # user 1 twice: its sums add two rows
    negative_ids = torch.tensor([7, 8, 9])[:shared_negatives] if shared_negatives else None
    batch = Batch(
        users=users_ids,
        positives=ids,
        negatives=negative_ids,
        in_batch=True,
        training=training,
        log_q=_column_log_q(5 + shared_negatives),
    )
    user_table, item_table = _random(31, 5, 4), _random(32, 10, 4)

    def run(chunked: bool) -> tuple[torch.Tensor, ...]:
        loss = AdaptiveTemperatureLoss(num_negatives=shared_negatives, exclude=exclude, logq=logq)
        loss.positive_inverse_temperature = 4.0
        loss.user_inverse_temperature = torch.tensor([2.0, 3.5, 5.0, 7.0, 9.0], dtype=torch.float64)
        loss._loss_sum = torch.zeros(5, dtype=torch.float64)
        loss._loss_count = torch.zeros(5, dtype=torch.float64)
        users = user_table.clone().requires_grad_(True)
        items = item_table.clone().requires_grad_(True)
        negatives = None if negative_ids is None else items[negative_ids]
        if chunked:
            with monkeypatch.context() as patch:
                patch.setattr(adaptive, "score_candidates", _no_score_matrix)
                value = loss(users[users_ids], items[ids], negatives, batch)
        else:  # the (B, K) path the module takes for per-row negatives, on the same candidates
            candidates = score_candidates(users[users_ids], items[ids], negatives, batch, "cosine", exclude)
            value = loss.row_losses(candidates, batch).mean()
            negative = ~candidates.target_mask()
            if candidates.excluded is not None:
                negative &= ~candidates.excluded
            log_sum = torch.logsumexp(candidates.scores.detach().masked_fill(~negative, float("-inf")), 1)
            keep = torch.isfinite(log_sum)
            unscaled = (log_sum - candidates.positive.detach())[keep]
            loss._loss_sum.index_add_(0, users_ids[keep], unscaled)
            loss._loss_count.index_add_(0, users_ids[keep], torch.ones_like(unscaled))
        value.backward()
        return value.detach(), users.grad, items.grad, loss._loss_sum, loss._loss_count

    chunked, reference = run(True), run(False)
    for got, expected in zip(chunked, reference, strict=True):
        torch.testing.assert_close(got, expected)
    # rows per user; with exclude=train, user 0's every column is one of its training items
    assert chunked[4].tolist() == ([0.0] if exclude == "train" else [1.0]) + [2.0, 1.0, 1.0, 0.0]
