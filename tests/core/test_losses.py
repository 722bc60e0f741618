"""Losses against values computed by hand in the test (math.exp / math.log on explicit numbers)."""

from __future__ import annotations

import math

import pytest
import torch

from ssmrec.losses import BPRLoss, SampledSoftmaxLoss, build_loss, l2_penalty

# Three users and their three positives; the positives of the other rows are each row's negatives.
USERS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
POSITIVES = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])


def _softmax_nll(logits_row: list[float], target: int) -> float:
    return -math.log(math.exp(logits_row[target]) / sum(math.exp(x) for x in logits_row))


def test_ssm_cosine_in_batch_3x3_by_hand() -> None:
    # cosine matrix by hand: u1=(1,0): [1, 0, -1]; u2=(0,1): [0, 1, 0]; u3=(1,1)/√2: [1/√2, 1/√2, -1/√2]
    r = 1 / math.sqrt(2)
    tau = 0.5
    rows = [[1, 0, -1], [0, 1, 0], [r, r, -r]]
    expected = sum(_softmax_nll([x / tau for x in row], b) for b, row in enumerate(rows))
    loss = SampledSoftmaxLoss(temperature=tau, similarity="cosine")(USERS, POSITIVES, None)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ssm_dot_in_batch_3x3_by_hand() -> None:
    # dot products by hand: u1: [1, 0, -1]; u2: [0, 2, 0]; u3: [1, 2, -1]
    rows = [[1, 0, -1], [0, 2, 0], [1, 2, -1]]
    expected = sum(_softmax_nll(row, b) for b, row in enumerate(rows))
    loss = SampledSoftmaxLoss(temperature=1.0, similarity="dot")(USERS, POSITIVES, None)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the mean reduction divides by the batch size
    mean = SampledSoftmaxLoss(temperature=1.0, similarity="dot", reduction="mean")(USERS, POSITIVES, None)
    assert mean.item() == pytest.approx(expected / 3, rel=1e-6)


def test_cosine_ignores_magnitude_dot_does_not() -> None:
    cosine = SampledSoftmaxLoss(temperature=0.2, similarity="cosine")
    dot = SampledSoftmaxLoss(temperature=0.2, similarity="dot")
    scaled = POSITIVES * torch.tensor([[3.0], [0.5], [7.0]])
    assert cosine(USERS, scaled, None).item() == pytest.approx(
        cosine(USERS, POSITIVES, None).item(), rel=1e-6
    )
    assert dot(USERS, scaled, None).item() != pytest.approx(dot(USERS, POSITIVES, None).item(), rel=1e-3)


def test_ssm_is_stable_for_large_logits() -> None:
    tau = 1e-3
    big = SampledSoftmaxLoss(temperature=tau, similarity="cosine")(USERS, POSITIVES, None)
    assert torch.isfinite(big)
    # rows 1 and 2 have a clear winner (loss -> 0); row 3's positive p3 scores -1/√2 while p1 and p2
    # tie at 1/√2, so its loss -> (1/√2 + 1/√2)/τ + log 2
    assert big.item() == pytest.approx(math.sqrt(2) / tau + math.log(2), rel=1e-5)


def test_ssm_with_sampled_negatives_by_hand() -> None:
    users = torch.tensor([[1.0, 0.0]])
    positives = torch.tensor([[2.0, 0.0]])
    negatives = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    # dot logits by hand: positive 2, negatives 0 and 1
    expected = _softmax_nll([2.0, 0.0, 1.0], 0)
    loss = SampledSoftmaxLoss(temperature=1.0, similarity="dot", num_negatives=2)(users, positives, negatives)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bpr_by_hand() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    negatives = torch.tensor([[[0.0, 1.0]], [[0.0, 3.0]]])
    # row 1: pos 2, neg 0 -> log(1 + e^-2); row 2: pos 1, neg 3 -> log(1 + e^2)
    terms = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(2.0))]
    assert BPRLoss(reduction="sum")(users, positives, negatives).item() == pytest.approx(sum(terms), rel=1e-6)
    assert BPRLoss(reduction="mean")(users, positives, negatives).item() == pytest.approx(
        sum(terms) / 2, rel=1e-6
    )


def test_regulariser_by_hand() -> None:
    users = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # squared norms 5 and 1
    items = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 0.5]])  # 9, 2, 0.25
    total = 5 + 1 + 9 + 2 + 0.25
    assert l2_penalty(0.1, (users, items), 2, "sum").item() == pytest.approx(0.1 / 2 * total, rel=1e-6)
    assert l2_penalty(0.1, (users, items), 2, "mean").item() == pytest.approx(0.1 / 2 * total / 2, rel=1e-6)


def test_build_loss_defaults_and_errors() -> None:
    ssm = build_loss("ssm", temperature=0.12)
    assert isinstance(ssm, SampledSoftmaxLoss)
    assert (ssm.num_negatives, ssm.reduction, ssm.similarity, ssm.temperature) == (0, "sum", "cosine", 0.12)
    bpr = build_loss("bpr")
    assert (bpr.num_negatives, bpr.reduction) == (1, "mean")
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge")
    with pytest.raises(ValueError, match="temperature"):
        SampledSoftmaxLoss(temperature=0.0)
    with pytest.raises(ValueError, match="negatives"):
        BPRLoss()(USERS, POSITIVES, None)
