"""`ssmrec analyze` scores every softmax-family run with its own similarity and temperature."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ssmrec.analysis.runs import softmax_scoring
from ssmrec.config import build_config
from ssmrec.losses import build_loss


def _run(values: dict, final: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(config=build_config(values), final=final or {})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"loss": "ssm", "temperature": 0.12}, ("cosine", 0.12)),
        ({"loss": "softmax", "temperature": 0.2, "similarity": "dot"}, ("dot", 0.2)),
        ({"loss": "bsl", "temperature": 0.3, "positive_temperature": 0.05}, ("cosine", 0.3)),  # negatives' τ2
        ({"loss": "adap-tau"}, ("cosine", 0.1)),  # an old run without recorded scoring: the config's τ
        ({"loss": "bpr"}, None),
        ({"loss": "ccl"}, None),
    ],
)
def test_each_loss_is_scored_as_it_was_trained(values: dict, expected: tuple | None) -> None:
    assert softmax_scoring(_run(values)) == expected


def test_what_the_objective_ended_with_wins_over_the_config() -> None:
    learned = build_loss("ssm", temperature=0.5, learn_temperature=True)
    with torch.no_grad():
        learned.log_temperature.fill_(torch.log(torch.tensor(0.07)).item())
    similarity, tau = learned.scoring()
    assert similarity == "cosine" and tau == pytest.approx(0.07, rel=1e-6)
    run = _run({"loss": "ssm", "learn_temperature": True, "temperature": 0.5},
               {"scoring": {"similarity": similarity, "temperature": tau}})  # fmt: skip
    assert softmax_scoring(run) == pytest.approx(("cosine", 0.07))  # type: ignore[arg-type]
    adaptive = build_loss("adap-tau")
    adaptive.user_inverse_temperature = torch.tensor([10.0, 5.0])
    assert adaptive.scoring() == ("cosine", pytest.approx((0.1 + 0.2) / 2))
