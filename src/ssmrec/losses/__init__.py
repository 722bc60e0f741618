"""Training objectives, built by name. Formulas are in each class's module docstring."""

from __future__ import annotations

from ssmrec.losses.base import Objective, l2_penalty, similarity
from ssmrec.losses.bpr import BPRLoss
from ssmrec.losses.ssm import SampledSoftmaxLoss

LOSSES = ("ssm", "bpr")


def build_loss(
    name: str,
    *,
    temperature: float = 0.1,
    similarity: str = "cosine",
    num_negatives: int | None = None,
    reduction: str | None = None,
) -> Objective:
    """The objective called ``name``; ``None`` options take that loss's own default."""
    if name == "ssm":
        return SampledSoftmaxLoss(
            temperature=temperature,
            similarity=similarity,  # type: ignore[arg-type]
            num_negatives=0 if num_negatives is None else num_negatives,
            reduction=reduction or "sum",  # type: ignore[arg-type]
        )
    if name == "bpr":
        return BPRLoss(num_negatives=num_negatives or 1, reduction=reduction or "mean")  # type: ignore[arg-type]
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


__all__ = ["LOSSES", "BPRLoss", "Objective", "SampledSoftmaxLoss", "build_loss", "l2_penalty", "similarity"]
