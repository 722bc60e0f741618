"""Recommender models: MF and LightGCN, built by name from a training matrix."""

from __future__ import annotations

import scipy.sparse as sp

from ssmrec.models.base import Recommender
from ssmrec.models.lightgcn import LightGCN
from ssmrec.models.mf import MF

MODELS = ("mf", "lightgcn")


def build_model(
    name: str, train: sp.csr_matrix, *, dim: int = 64, n_layers: int = 3, propagation: str = "auto"
) -> Recommender:
    """The model called ``name`` for the interactions in ``train`` (users × items CSR)."""
    n_users, n_items = train.shape
    if name == "mf":
        return MF(n_users, n_items, dim)
    if name == "lightgcn":
        return LightGCN(train, dim=dim, n_layers=n_layers, propagation=propagation)  # type: ignore[arg-type]
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


__all__ = ["MF", "MODELS", "LightGCN", "Recommender", "build_model"]
