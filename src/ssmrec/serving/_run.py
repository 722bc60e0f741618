"""The one place the serving package reads a training config.

The config's layout is being restructured (flat fields becoming nested typed specs), so every field
serving needs is read here and nowhere else: a layout change is adapted in this file only.
"""

from __future__ import annotations

from typing import Any

from ssmrec.defaults import LOSS_DEFAULTS


def _field(config: Any, nested: tuple[str, str], flat: str) -> Any:
    """``config.<section>.<field>`` (nested specs) or ``config.<flat>`` (the older flat config)."""
    section = getattr(config, nested[0], None)
    if section is not None and hasattr(section, nested[1]):
        return getattr(section, nested[1])
    return getattr(config, flat)


def ranking_rule(config: Any) -> str:
    """``"dot"`` or ``"cosine"``: the score evaluation ranks by (``--rank-by``)."""
    return str(_field(config, ("evaluation", "rank_by"), "rank_by"))


def loss_name(config: Any) -> str:
    value = _field(config, ("loss", "name"), "loss")
    return str(value if isinstance(value, str) else value.name)


def model_name(config: Any) -> str:
    value = _field(config, ("model", "name"), "model")
    return str(value if isinstance(value, str) else value.name)


def trained_similarity(config: Any) -> str | None:
    """The similarity the loss trained (``cosine`` / ``dot``), ``None`` for losses without one (BPR...).

    An unset value means the loss's own default (:data:`ssmrec.defaults.LOSS_DEFAULTS`).
    """
    value = _field(config, ("loss", "similarity"), "similarity")
    if value is None:
        value = LOSS_DEFAULTS.get(loss_name(config), {}).get("similarity")
    return None if value is None else str(value)


def cutoffs(config: Any) -> list[int]:
    """The evaluation cut-offs K of the run."""
    return [int(k) for k in _field(config, ("evaluation", "ks"), "ks")]
