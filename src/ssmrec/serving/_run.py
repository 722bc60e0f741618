"""The one place the serving package reads a training config (what it ranks and trained with).

The config is resolved when it is built (:mod:`ssmrec.config`), so every value here is the one that ran.
"""

from __future__ import annotations

from ssmrec.config import TrainConfig


def ranking_rule(config: TrainConfig) -> str:
    """``"dot"`` or ``"cosine"``: the score evaluation ranks by (``--rank-by``)."""
    return config.evaluation.rank_by


def loss_name(config: TrainConfig) -> str:
    return config.loss.name


def model_name(config: TrainConfig) -> str:
    return config.model.name


def trained_similarity(config: TrainConfig) -> str | None:
    """The similarity the loss trained (``cosine`` / ``dot``), ``None`` for losses without one (BPR...)."""
    return config.loss.similarity


def cutoffs(config: TrainConfig) -> list[int]:
    """The evaluation cut-offs K of the run."""
    return list(config.evaluation.ks)
