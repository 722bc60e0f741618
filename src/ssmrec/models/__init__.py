"""Recommender models: MF, LightGCN (and its one-sided "history" form) and NGCF, built by name."""

from __future__ import annotations

import scipy.sparse as sp

from ssmrec.defaults import MODELS
from ssmrec.models.base import Recommender
from ssmrec.models.lightgcn import LightGCN
from ssmrec.models.mf import MF
from ssmrec.models.ngcf import NGCF


def build_model(
    name: str,
    train: sp.csr_matrix,
    *,
    dim: int = 64,
    n_layers: int | None = None,
    propagation: str = "auto",
    side: str | None = None,
    alpha: tuple[float, float] = (0.5, 0.5),
    dropout: float = 0.1,
) -> Recommender:
    """The model called ``name`` for the interactions in ``train`` (users × items CSR).

    ``history`` is LightGCN with ``side="user"`` and one layer: user = own embedding + normalised
    sum of its items' embeddings (the SSM paper's history encoder). ``side`` and ``alpha`` apply to
    LightGCN and history, ``dropout`` (message dropout) to NGCF. ``n_layers`` defaults to 3
    (LightGCN, NGCF) and 1 (history).
    """
    n_users, n_items = train.shape
    layers = (1 if name == "history" else 3) if n_layers is None else n_layers
    if side is not None and name not in ("lightgcn", "history"):
        raise ValueError(f"side applies to lightgcn and history, not {name!r}")
    if name == "mf":
        return MF(n_users, n_items, dim)
    if name == "lightgcn":
        return LightGCN(
            train,
            dim=dim,
            n_layers=layers,
            propagation=propagation,
            side=side or "both",
            alpha=alpha,  # type: ignore[arg-type]
        )
    if name == "history":
        if side not in (None, "user"):
            raise ValueError(f"history is the side='user' encoder, got side={side!r}")
        if layers != 1:
            raise ValueError(f"history has one layer, got {layers}")
        return LightGCN(train, dim=dim, n_layers=1, propagation=propagation, side="user", alpha=alpha)  # type: ignore[arg-type]
    if name == "ngcf":
        return NGCF(train, dim=dim, n_layers=layers, dropout=dropout)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


__all__ = ["MF", "MODELS", "NGCF", "LightGCN", "Recommender", "build_model"]
