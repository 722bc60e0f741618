"""Training objectives, built by name. Formulas are in each class's module docstring.

All of them score a batch through one path (:func:`ssmrec.losses.candidates.score_candidates`) and
take the same inputs (representations plus an optional :class:`ssmrec.batch.Batch`), so every model
trains with every loss and every negative source.
"""

from __future__ import annotations

from typing import Any

from ssmrec.defaults import LOSSES, SOFTMAX_CHUNK, loss_option
from ssmrec.losses.adaptive import AdaptiveTemperatureLoss
from ssmrec.losses.base import EpochContext, Objective, l2_penalty, similarity
from ssmrec.losses.bpr import BPRLoss
from ssmrec.losses.bsl import BilateralSoftmaxLoss
from ssmrec.losses.candidates import Candidates, score_candidates
from ssmrec.losses.ccl import CosineContrastiveLoss
from ssmrec.losses.pointwise import BCELoss, MSELoss, PointwiseLoss
from ssmrec.losses.softmax import FullSoftmaxLoss
from ssmrec.losses.ssm import SampledSoftmaxLoss


def build_loss(
    name: str,
    *,
    temperature: float = 0.1,
    similarity: str = "cosine",
    num_negatives: int | None = None,
    reduction: str | None = None,
    exclude: str = "none",
    positive_in_denominator: bool | None = None,
    logq: str = "none",
    learn_temperature: bool = False,
    positive_temperature: float | None = None,
    margin: float | None = None,
    negative_weight: float | None = None,
    chunk_size: int | None = SOFTMAX_CHUNK,
    adaptive_warmup: int = 10,
    adaptive_scale: float = 1.0,
) -> Objective:
    """The objective called ``name``; ``None`` options take that loss's default (:mod:`ssmrec.defaults`)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")

    def option(key: str, value: Any) -> Any:
        return loss_option(name, key) if value is None else value

    negatives = option("num_negatives", num_negatives)
    reduce_by = option("reduction", reduction)
    softmax: dict[str, Any] = {
        "temperature": temperature,
        "similarity": similarity,
        "reduction": reduce_by,
        "exclude": exclude,
        "positive_in_denominator": option("positive_in_denominator", positive_in_denominator),
    }
    if name == "ssm":
        return SampledSoftmaxLoss(
            num_negatives=negatives, logq=logq, learn_temperature=learn_temperature, **softmax
        )
    if name == "bsl":
        return BilateralSoftmaxLoss(
            positive_temperature=positive_temperature,
            num_negatives=negatives,
            logq=logq,
            learn_temperature=learn_temperature,
            **softmax,
        )
    if name == "adap-tau":
        return AdaptiveTemperatureLoss(
            num_negatives=negatives, logq=logq, warmup=adaptive_warmup, scale=adaptive_scale, **softmax
        )
    if name == "softmax":
        return FullSoftmaxLoss(learn_temperature=learn_temperature, chunk_size=chunk_size, **softmax)
    if name == "bpr":
        return BPRLoss(num_negatives=negatives, reduction=reduce_by, exclude=exclude)
    weight = option("negative_weight", negative_weight)
    if name == "ccl":
        return CosineContrastiveLoss(
            margin=option("margin", margin),
            negative_weight=weight,
            num_negatives=negatives,
            reduction=reduce_by,
            exclude=exclude,
        )
    kind = BCELoss if name == "bce" else MSELoss
    return kind(num_negatives=negatives, reduction=reduce_by, negative_weight=weight, exclude=exclude)


__all__ = [
    "LOSSES",
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
