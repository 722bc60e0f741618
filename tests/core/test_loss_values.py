"""Every objective against a value computed by hand (math on explicit numbers), regulariser included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ssmrec.batch import Batch
from ssmrec.losses import (
    AdaptiveTemperatureLoss,
    BCELoss,
    BilateralSoftmaxLoss,
    BPRLoss,
    CosineContrastiveLoss,
    EpochContext,
    FullSoftmaxLoss,
    MSELoss,
    SampledSoftmaxLoss,
    build_loss,
    l2_penalty,
)
from ssmrec.models import MF
from ssmrec.sampling import TrainingSet
from ssmrec.trainer import batch_loss, optimizer_step

# Three users, three positives. Dot scores S = U Pᵀ by hand:
#   u1=(1,0): [1, 0, -1]    u2=(0,1): [0, 2, 0]    u3=(1,1): [1, 2, -1]    (diagonal: the positives)
USERS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
POSITIVES = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
S = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [1.0, 2.0, -1.0]]


def lse(values: list[float]) -> float:
    return math.log(sum(math.exp(v) for v in values))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def in_batch(users: torch.Tensor, positives: torch.Tensor, **extra) -> Batch:
    return Batch(users=users, positives=positives, in_batch=True, **extra)


def test_ssm_sl_form_in_batch_by_hand() -> None:
    # D_b = the other positives only: row b = log Σ_{j≠b} exp(S_bj) − S_bb
    expected = sum(lse([S[b][j] for j in range(3) if j != b]) - S[b][b] for b in range(3))
    loss = SampledSoftmaxLoss(temperature=1.0, similarity="dot", positive_in_denominator=False)
    assert loss(USERS, POSITIVES, None).item() == pytest.approx(expected, rel=1e-6)


def test_ssm_shared_negatives_by_hand() -> None:
    # two shared negatives n1=(0,1), n2=(2,0); u1: 0, 2; u2: 1, 0; u3: 1, 2; positives s_p = 1, 2, -1
    shared = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    negatives = [[0.0, 2.0], [1.0, 0.0], [1.0, 2.0]]
    positive = [1.0, 2.0, -1.0]
    tau = 0.5
    expected = sum(
        lse([positive[b] / tau] + [n / tau for n in negatives[b]]) - positive[b] / tau for b in range(3)
    )
    batch = Batch(
        users=torch.arange(3), positives=torch.arange(3), negatives=torch.tensor([7, 8]), in_batch=False
    )
    loss = SampledSoftmaxLoss(temperature=tau, similarity="dot", num_negatives=2)
    assert loss(USERS, POSITIVES, shared, batch).item() == pytest.approx(expected, rel=1e-6)


def test_ssm_mixed_in_batch_plus_shared_by_hand() -> None:
    # candidates of row b: the 3 positives (own one is the target) and one shared item n=(0,1)
    shared = torch.tensor([[0.0, 1.0]])
    extra = [0.0, 1.0, 1.0]  # u·n
    expected = sum(lse([*S[b], extra[b]]) - S[b][b] for b in range(3))
    batch = Batch(
        users=torch.arange(3), positives=torch.arange(3), negatives=torch.tensor([9]), in_batch=True
    )
    loss = SampledSoftmaxLoss(temperature=1.0, similarity="dot")
    assert loss(USERS, POSITIVES, shared, batch).item() == pytest.approx(expected, rel=1e-6)


def _duplicate_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # rows 0 and 2 share positive item 4; item 4 = (1, 0), item 6 = (0, 2)
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    items = {4: [1.0, 0.0], 6: [0.0, 2.0]}
    ids = torch.tensor([4, 6, 4])
    return users, torch.tensor([items[int(i)] for i in ids]), ids


def test_exclude_duplicates_by_hand() -> None:
    users, positives, ids = _duplicate_batch()
    # scores: u1: [1, 0, 1]; u2: [0, 2, 0]; u3: [1, 2, 1]; row 0 masks column 2, row 2 masks column 0
    masked = [lse([1.0, 0.0]) - 1.0, lse([0.0, 2.0, 0.0]) - 2.0, lse([2.0, 1.0]) - 1.0]
    batch = in_batch(torch.tensor([0, 1, 2]), ids)
    loss = SampledSoftmaxLoss(temperature=1.0, similarity="dot", exclude="duplicates")
    assert loss(users, positives, None, batch).item() == pytest.approx(sum(masked), rel=1e-6)
    unmasked = [lse([1.0, 0.0, 1.0]) - 1.0, masked[1], lse([1.0, 2.0, 1.0]) - 1.0]
    plain = SampledSoftmaxLoss(temperature=1.0, similarity="dot")
    assert plain(users, positives, None, batch).item() == pytest.approx(sum(unmasked), rel=1e-6)


def test_exclude_training_items_by_hand() -> None:
    # training: user0 {0, 2}, user1 {1}, user2 {0, 1}; the batch's pairs (0,0), (1,1), (2,1)
    train = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=np.float32))
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    users = torch.tensor([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0]])
    ids = torch.tensor([0, 1, 1])
    # scores: row0 (1,2)·[i0,i1,i1] = [1, 2, 2]; row1 (2,1): [2, 1, 1]; row2 (1,1): [1, 1, 1]
    # row0 masks nothing (item 1 is not user0's); row1 masks column 2 (its own item 1 again);
    # row2 masks columns 0 (item 0 is user2's) and 1 (item 1 = its positive): only the positive is left
    expected = [lse([1.0, 2.0, 2.0]) - 1.0, lse([2.0, 1.0]) - 1.0, 0.0]
    batch = in_batch(torch.tensor([0, 1, 2]), ids, training=TrainingSet(train))
    loss = SampledSoftmaxLoss(temperature=1.0, similarity="dot", exclude="train")
    assert loss(users, table[ids], None, batch).item() == pytest.approx(sum(expected), rel=1e-6)
    # the SL form of row 2 has no candidate left: it contributes 0, not -inf / nan
    sl = SampledSoftmaxLoss(temperature=1.0, similarity="dot", exclude="train", positive_in_denominator=False)
    value = sl(users, table[ids], None, batch)
    # row0: lse(2, 2) − 1; row1: its only negative (column 0, score 2) − 1; row2: 0
    assert value.item() == pytest.approx(lse([2.0, 2.0]) - 1.0 + (2.0 - 1.0) + 0.0, rel=1e-6)


def test_standard_and_corrected_logq_by_hand() -> None:
    log_q = torch.tensor([[math.log(0.5), math.log(2.0), math.log(1.0)]])  # per column, shared by rows
    q = [math.log(0.5), math.log(2.0), 0.0]
    batch = in_batch(torch.arange(3), torch.arange(3), log_q=log_q)
    standard = SampledSoftmaxLoss(temperature=1.0, similarity="dot", logq="standard")
    expected = sum(lse([S[b][j] - q[j] for j in range(3)]) - (S[b][b] - q[b]) for b in range(3))
    assert standard(USERS, POSITIVES, None, batch).item() == pytest.approx(expected, rel=1e-6)

    corrected = SampledSoftmaxLoss(
        temperature=1.0, similarity="dot", logq="corrected", positive_in_denominator=False
    )
    total = 0.0
    for b in range(3):
        negatives = [S[b][j] - q[j] for j in range(3) if j != b]
        p_positive = math.exp(S[b][b]) / (math.exp(S[b][b]) + sum(math.exp(v) for v in negatives))
        total += (1 - p_positive) * (lse(negatives) - S[b][b])
    assert corrected(USERS, POSITIVES, None, batch).item() == pytest.approx(total, rel=1e-6)


def test_corrected_logq_weight_is_detached() -> None:
    users = USERS.clone().requires_grad_(True)
    log_q = torch.zeros(1, 3)
    batch = in_batch(torch.arange(3), torch.arange(3), log_q=log_q)
    loss = SampledSoftmaxLoss(
        temperature=1.0, similarity="dot", logq="corrected", positive_in_denominator=False
    )
    loss(users, POSITIVES, None, batch).backward()
    # row 0 alone: d/du1 of w·(log(e^{u·p2} + e^{u·p3}) − u·p1), w = 1 − p constant
    s = S[0]
    p_positive = math.exp(s[0]) / sum(math.exp(v) for v in s)
    soft = [
        math.exp(s[1]) / (math.exp(s[1]) + math.exp(s[2])),
        math.exp(s[2]) / (math.exp(s[1]) + math.exp(s[2])),
    ]
    p = POSITIVES.numpy()
    expected = (1 - p_positive) * (soft[0] * p[1] + soft[1] * p[2] - p[0])
    np.testing.assert_allclose(users.grad[0].numpy(), expected, rtol=1e-5)


def test_learnable_temperature_value_and_gradient_by_hand() -> None:
    tau = 0.5
    loss = SampledSoftmaxLoss(temperature=tau, similarity="dot", learn_temperature=True)
    value = loss(USERS, POSITIVES, None)
    fixed = SampledSoftmaxLoss(temperature=tau, similarity="dot")(USERS, POSITIVES, None)
    assert value.item() == pytest.approx(fixed.item(), rel=1e-6)
    value.backward()
    # dL/dτ = −(1/τ²) Σ_b (Σ_j softmax_j s_j − s_bb); the parameter is log τ: dL/dlogτ = τ dL/dτ
    d_tau = 0.0
    for b in range(3):
        weights = [math.exp(v / tau) for v in S[b]]
        mean = sum(w * v for w, v in zip(weights, S[b], strict=True)) / sum(weights)
        d_tau += -(mean - S[b][b]) / tau**2
    assert loss.log_temperature.grad.item() == pytest.approx(tau * d_tau, rel=1e-5)
    assert [name for name, _ in loss.named_parameters()] == ["log_temperature"]


def test_bsl_by_hand() -> None:
    users = torch.tensor([[1.0, 0.0]])
    positives = torch.tensor([[2.0, 0.0]])
    negatives = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])  # dot: positive 2, negatives 0 and 1
    tau1, tau2 = 0.5, 0.25
    expected = -2.0 / tau1 + (tau2 / tau1) * lse([0.0 / tau2, 1.0 / tau2])
    loss = BilateralSoftmaxLoss(
        positive_temperature=tau1, temperature=tau2, similarity="dot", num_negatives=2
    )
    assert loss(users, positives, negatives).item() == pytest.approx(expected, rel=1e-6)
    # tau1 = tau2 is the SL loss
    same = BilateralSoftmaxLoss(
        positive_temperature=tau2, temperature=tau2, similarity="dot", num_negatives=2
    )
    sl = SampledSoftmaxLoss(
        temperature=tau2, similarity="dot", num_negatives=2, positive_in_denominator=False
    )
    assert same(users, positives, negatives).item() == pytest.approx(
        sl(users, positives, negatives).item(), rel=1e-6
    )


def test_bsl_authors_form_by_hand() -> None:
    """The authors' code (one τ, free log-sum weight w) is not a rescaled SL loss: w = 0.84 moves the
    loss off SL's line, whereas the default w = τ2/τ1 is exactly (τ2/τ1) × SL(τ2)."""
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    negatives = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[2.0, -1.0], [0.5, 0.5]]])
    # dot scores: row 0 positive 2, negatives 0, 1; row 1 positive 3, negatives -1, 0.5
    tau, weight = 0.25, 0.84
    rows = [-2.0 / tau + weight * lse([0.0, 1.0 / tau]), -3.0 / tau + weight * lse([-1.0 / tau, 0.5 / tau])]
    authors = BilateralSoftmaxLoss(temperature=tau, negative_weight=weight, similarity="dot", num_negatives=2)
    assert authors(users, positives, negatives).item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    tau1 = 0.4
    default = BilateralSoftmaxLoss(
        positive_temperature=tau1, temperature=tau, similarity="dot", num_negatives=2
    )
    sl = SampledSoftmaxLoss(
        temperature=tau, similarity="dot", num_negatives=2, positive_in_denominator=False, reduction="mean"
    )
    assert default(users, positives, negatives).item() == pytest.approx(
        tau / tau1 * sl(users, positives, negatives).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="negative_weight must be > 0"):
        BilateralSoftmaxLoss(temperature=tau, negative_weight=0.0)


def test_adaptive_temperature_loss_and_updates_by_hand() -> None:
    # 5 users with 1..5 training items among 10: the 20 % quantile of (1..5) is 1.8, so U' = users 1..4
    dense = np.zeros((5, 10), dtype=np.float32)
    for user in range(5):
        dense[user, : user + 1] = 1
    train = sp.csr_matrix(dense)
    loss = AdaptiveTemperatureLoss(temperature=0.1, similarity="dot", adaptive_warmup=10, adaptive_scale=0.5)
    loss.begin_epoch(EpochContext(1, MF(5, 10, 2), train))
    w0 = (math.log(0.5) + math.log(4 * 10) - math.log(2 + 3 + 4 + 5)) / 0.7
    assert loss.positive_inverse_temperature == pytest.approx(w0, rel=1e-9)
    assert torch.allclose(loss.user_inverse_temperature, torch.full((5,), w0))

    # one batch: users 0, 1 with in-batch scores S[:2][:2]; every β is w0 before losses are known
    batch = in_batch(torch.tensor([0, 1]), torch.tensor([0, 1]))
    value = loss(USERS[:2], POSITIVES[:2], None, batch)
    rows = [-w0 * S[0][0] + w0 * S[0][1], -w0 * S[1][1] + w0 * S[1][0]]  # one negative each: lse = its logit
    assert value.item() == pytest.approx(sum(rows) / 2, rel=1e-6)

    # recorded unscaled losses ℓ_0 = S01 − S00 = -1, ℓ_1 = S10 − S11 = -2; mean -1.5
    loss.begin_epoch(EpochContext(2, MF(5, 10, 2), train))
    beta = loss.user_inverse_temperature
    for user, ell in ((0, -1.0), (1, -2.0)):
        z = (ell - (-1.5)) / 0.5  # ±1, inside [-1/e, 1000] only for +1; -1 is clipped to -1/e
        z = max(z, -1 / math.e)
        w = -math.log(beta[user].item() / w0)  # β = w0·e^{-W(z)}  =>  W = −log(β / w0)
        assert w * math.exp(w) == pytest.approx(z, rel=1e-4, abs=1e-5)  # W is the Lambert function
    assert beta[2:].tolist() == pytest.approx([w0] * 3)  # users without a recorded loss keep w0


def test_full_softmax_by_hand() -> None:
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    positives = torch.tensor([0, 2])
    # scores: user0 [1, 0, 1, -1]; user1 [0, 2, 2, 0]; positives 1 and 2
    rows = [[1.0, 0.0, 1.0, -1.0], [0.0, 2.0, 2.0, 0.0]]
    batch = Batch(users=torch.tensor([0, 1]), positives=positives, in_batch=False, all_items=lambda: items)
    full = FullSoftmaxLoss(temperature=1.0, similarity="dot", softmax_chunk_size=3)
    expected = lse(rows[0]) - 1.0 + lse(rows[1]) - 2.0
    assert full(users, items[positives], None, batch).item() == pytest.approx(expected, rel=1e-6)

    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=np.float32))
    batch = Batch(
        users=torch.tensor([0, 1]),
        positives=positives,
        in_batch=False,
        training=TrainingSet(train),
        all_items=lambda: items,
    )
    masked = FullSoftmaxLoss(temperature=1.0, similarity="dot", exclude="train", softmax_chunk_size=3)
    # user0 drops item 1 (trained, not the positive); user1 drops items 1 and 3
    expected = lse([1.0, 1.0, -1.0]) - 1.0 + lse([0.0, 2.0]) - 2.0
    assert masked(users, items[positives], None, batch).item() == pytest.approx(expected, rel=1e-6)
    sl = FullSoftmaxLoss(
        temperature=1.0, similarity="dot", positive_in_denominator=False, softmax_chunk_size=3
    )
    expected = lse([0.0, 1.0, -1.0]) - 1.0 + lse([0.0, 2.0, 0.0]) - 2.0
    assert sl(users, items[positives], None, batch).item() == pytest.approx(expected, rel=1e-6)


# Sampled negatives for the pairwise and pointwise losses: two rows, two negatives each.
PU = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
PP = torch.tensor([[2.0, 0.0], [3.0, 4.0]])
PN = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[0.0, -2.0], [1.0, 1.0]]])
# dot: positives 2, 4; negatives row0 [0, -1], row1 [-2, 1]
# cosine: positives 1, 0.8; negatives row0 [0, -1], row1 [-1, 1/√2]


def test_bpr_with_several_negatives_by_hand() -> None:
    rows = [(softplus(0 - 2) + softplus(-1 - 2)) / 2, (softplus(-2 - 4) + softplus(1 - 4)) / 2]
    assert BPRLoss(num_negatives=2, reduction="sum")(PU, PP, PN).item() == pytest.approx(sum(rows), rel=1e-6)


def test_bce_by_hand() -> None:
    rows = [softplus(-2) + softplus(0) + softplus(-1), softplus(-4) + softplus(-2) + softplus(1)]
    assert BCELoss(num_negatives=2)(PU, PP, PN).item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    weighted = [
        softplus(-2) + 3 * (softplus(0) + softplus(-1)) / 2,
        softplus(-4) + 3 * (softplus(-2) + softplus(1)) / 2,
    ]
    assert BCELoss(num_negatives=2, negative_weight=3.0)(PU, PP, PN).item() == pytest.approx(
        sum(weighted) / 2, rel=1e-6
    )


def test_mse_by_hand() -> None:
    rows = [(2 - 1) ** 2 + 0**2 + (-1) ** 2, (4 - 1) ** 2 + (-2) ** 2 + 1**2]
    assert MSELoss(num_negatives=2, reduction="sum")(PU, PP, PN).item() == pytest.approx(sum(rows), rel=1e-6)


def test_ccl_by_hand() -> None:
    margin, weight = 0.5, 150.0
    r = 1 / math.sqrt(2)
    rows = [(1 - 1.0) + weight * (0 + 0) / 2, (1 - 0.8) + weight * (0 + max(0.0, r - margin)) / 2]
    loss = CosineContrastiveLoss(margin=margin, negative_weight=weight, num_negatives=2)
    assert loss(PU, PP, PN).item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    summed = CosineContrastiveLoss(margin=margin, negative_weight=None, num_negatives=2, reduction="sum")
    assert summed(PU, PP, PN).item() == pytest.approx((1 - 0.8) + (r - margin), rel=1e-6)


def test_masked_negatives_leave_the_mean() -> None:
    # shared negatives (ids 5, 1): item 1 is row 1's own positive, so exclude=duplicates drops it there
    shared = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    batch = Batch(
        users=torch.tensor([0, 1]),
        positives=torch.tensor([0, 1]),
        negatives=torch.tensor([5, 1]),
        in_batch=False,
    )
    # dot: row0 positive 2, negatives [0, 3]; row1 positive 4, negatives [1, (4 masked)]
    rows = [(softplus(0 - 2) + softplus(3 - 2)) / 2, softplus(1 - 4)]
    loss = BPRLoss(num_negatives=2, reduction="sum", exclude="duplicates")
    assert loss(PU, PP, shared, batch).item() == pytest.approx(sum(rows), rel=1e-6)


@pytest.mark.parametrize("name", ["ssm", "softmax", "bpr", "bce", "mse", "ccl", "bsl", "adap-tau"])
def test_batch_loss_adds_the_regulariser_by_hand(name: str) -> None:
    """Every loss through the trainer's step: objective + reg/2 Σ‖ego‖² (÷ B for mean losses)."""
    torch.manual_seed(0)
    model = MF(3, 5, 2)
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
        model.item_embedding.weight.copy_(
            torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 1.0], [1.0, 2.0], [3.0, 0.0]])
        )
    users, positives = torch.tensor([0, 1]), torch.tensor([1, 2])
    sampled = name in ("bpr", "bce", "mse", "ccl")
    negatives = torch.tensor([[3, 4], [0, 4]]) if sampled else None
    batch = Batch(
        users=users,
        positives=positives,
        negatives=negatives,
        in_batch=name != "softmax" and not sampled,
        all_items=lambda: model.item_embedding.weight,
    )
    objective = build_loss(name, **({"num_negatives": 2} if sampled else {}))
    if isinstance(objective, AdaptiveTemperatureLoss):
        objective.begin_epoch(EpochContext(1, model, sp.csr_matrix(np.eye(3, 5, dtype=np.float32))))
    reg = 0.1
    total = batch_loss(model, objective, batch, reg).total
    items = model.item_embedding.weight.detach()
    user_repr = model.user_embedding.weight.detach()[users]
    negative_repr = items[negatives] if sampled else None
    plain = objective(user_repr, items[positives], negative_repr, batch)
    # ego norms by hand: users 0, 1: 1 + 4; positives 1, 2: 4 + 1; negatives 3, 4, 0, 4: 5 + 9 + 2 + 9
    squares = 1 + 4 + 4 + 1 + ((5 + 9 + 2 + 9) if sampled else 0)
    penalty = reg / 2 * squares / (2 if objective.reduction == "mean" else 1)
    assert total.item() == pytest.approx(plain.item() + penalty, rel=1e-6)


def test_regulariser_gradient_is_reg_times_count_times_row() -> None:
    """The regulariser's sparse gradient: reg · (times the row occurs in the batch) · e, other rows 0."""
    model = MF(3, 4, 2)
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        model.item_embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [7.0, 7.0]]))
    users, items = torch.tensor([0, 0, 2]), torch.tensor([1, 2, 1, 1])
    l2_penalty(0.5, model.ego(users, items), 3, "sum").backward()
    user_grad, item_grad = model.user_embedding.weight.grad, model.item_embedding.weight.grad
    assert user_grad is not None and item_grad is not None and user_grad.is_sparse
    expected_users = 0.5 * torch.tensor([[2.0, 4.0], [0.0, 0.0], [5.0, 6.0]])  # user 0 twice, user 2 once
    expected_items = 0.5 * torch.tensor([[0.0, 0.0], [0.0, 3.0], [2.0, 2.0], [0.0, 0.0]])  # item 1 × 3
    torch.testing.assert_close(user_grad.to_dense(), expected_users)
    torch.testing.assert_close(item_grad.to_dense(), expected_items)


def test_optimizer_step_equals_adam_on_the_dense_gradient() -> None:
    """A table whose only gradient is the regulariser's sparse one still takes the dense Adam step, and
    a table with encoder (dense) plus regulariser (sparse) gradients gets their sum."""
    weights = (torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]]))
    results = []
    for sparse in (True, False):
        model = MF(2, 3, 2)
        with torch.no_grad():
            model.user_embedding.weight.copy_(weights[0])
            model.item_embedding.weight.copy_(weights[1])
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        users, items = torch.tensor([0, 0]), torch.tensor([2])
        ego_users, ego_items = model.ego(users, items)
        if not sparse:  # the same penalty with dense gathers
            ego_users, ego_items = model.user_embedding(users), model.item_embedding(items)
        encoded = model.item_embedding(torch.tensor([1]))  # items get a dense gradient too, users do not
        loss = l2_penalty(0.2, (ego_users, ego_items), 2, "sum") + encoded.sum()
        loss.backward()
        assert model.user_embedding.weight.grad is not None
        assert model.user_embedding.weight.grad.is_sparse == sparse
        optimizer_step(optimizer)
        results.append([p.detach().clone() for p in model.parameters()])
    for with_sparse, dense in zip(*results, strict=True):
        torch.testing.assert_close(with_sparse, dense)
    assert not torch.equal(results[0][0], weights[0])  # the regulariser-only table moved
