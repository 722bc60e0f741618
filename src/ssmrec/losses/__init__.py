"""Training objectives, built by name. Formulas are in each class's module docstring.

All of them score a batch through one path (:func:`ssmrec.losses.candidates.score_candidates`) and
take the same inputs (representations plus an optional :class:`ssmrec.batch.Batch`), so every model
trains with every loss and every negative source.
"""

from __future__ import annotations

from typing import Any

from ssmrec.defaults import LOSSES
from ssmrec.losses.adaptive import AdaptiveTemperatureLoss
from ssmrec.losses.base import EpochContext, Objective, l2_penalty, similarity
from ssmrec.losses.bpr import BPRLoss
from ssmrec.losses.bsl import BilateralSoftmaxLoss
from ssmrec.losses.candidates import Candidates, score_candidates
from ssmrec.losses.ccl import CosineContrastiveLoss
from ssmrec.losses.pointwise import BCELoss, MSELoss, PointwiseLoss
from ssmrec.losses.softmax import FullSoftmaxLoss
from ssmrec.losses.ssm import SampledSoftmaxLoss

LOSS_CLASSES: dict[str, type[Objective]] = {
    "ssm": SampledSoftmaxLoss,
    "softmax": FullSoftmaxLoss,
    "bpr": BPRLoss,
    "bce": BCELoss,
    "mse": MSELoss,
    "ccl": CosineContrastiveLoss,
    "bsl": BilateralSoftmaxLoss,
    "adap-tau": AdaptiveTemperatureLoss,
}
"""The class of every ``--loss`` name; its ``__init__`` keywords are the loss's options."""


def build_loss(name: str, **options: Any) -> Objective:
    """The objective called ``name`` with ``options`` (a resolved
    :meth:`ssmrec.config.LossSpec.objective_options`: every option of that loss, nothing else).

    Defaults are not filled here: the config resolves them once, so what ``config.json`` records is
    what the objective got. Options a class does not take are a ``TypeError``, i.e. a bug in the table.
    """
    if name not in LOSS_CLASSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSS_CLASSES[name](**options)


__all__ = [
    "LOSSES",
    "LOSS_CLASSES",
    "AdaptiveTemperatureLoss",
    "BCELoss",
    "BPRLoss",
    "BilateralSoftmaxLoss",
    "Candidates",
    "CosineContrastiveLoss",
    "EpochContext",
    "FullSoftmaxLoss",
    "MSELoss",
    "Objective",
    "PointwiseLoss",
    "SampledSoftmaxLoss",
    "build_loss",
    "l2_penalty",
    "score_candidates",
    "similarity",
]
