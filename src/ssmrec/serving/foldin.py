"""New users without retraining: the representation LightGCN gives a user added to the graph.

A new user ``n`` with items ``N`` (|N| = m) is a new graph node with no trained ego row, so its ego
row is 0. Adding it changes the graph: the edges ``n - i`` for ``i in N``, and every ``i in N`` gets
degree ``d_i + 1``. With ``Â' = D'^{-left} A' D'^{-right}`` that augmented graph and ``E'`` its ego
table (the trained one plus the zero row), full propagation gives the new user

    side both, L layers:  h_n = 1/(L+1) Σ_{k=0..L} (Â'^k E')_n = 1/(L+1) Σ_{k=1..L} r_k E
    side user (history):  h_n = 0 + Σ_{i∈N} m^{-left} (d_i + 1)^{-right} e_i

where ``r_k = e_n^T Â'^k`` is a row vector over the graph's nodes, computed exactly by ``L`` sparse
vector–matrix products with the raw interactions and the augmented degrees:
``(r Â')_y = d'_y^{-right} Σ_{x~y} r_x d'_x^{-left}`` (only users and ``n`` reach items and back).
Layer 1 is ``r_1 = m^{-left} (d_i + 1)^{-right}`` on ``N``: the normalised sum of the items' ego rows;
from layer 2 on the walk visits the other users (their ego rows and degrees) and returns through the
augmented degrees. The result equals the full propagation of the augmented graph for any ``L`` and
``alpha`` (tested against it). The *other* users' and items' representations are kept as exported: in
the augmented graph they move slightly (the items' degrees grew), which a retrained or re-propagated
model would show; ranking a new user against the exported items is what a recommender without
retraining can do.

MF, NGCF, ``side="item"`` and zero layers have no such encoder (a user *is* its trained row, or the
layers have weights trained only for known nodes): :func:`foldin_unsupported` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ssmrec.errors import SsmrecError


@dataclass(frozen=True)
class FoldIn:
    """What the new-user representation needs: the graph, ego tables and the LightGCN settings."""

    graph: sp.csr_matrix  # users x items, the training interactions the model propagated over
    item_ego: np.ndarray  # (n_items, d) float32
    user_ego: np.ndarray | None  # (n_users, d); needed from 2 layers on (side both)
    side: str
    alpha: tuple[float, float]
    layers: int

    def __post_init__(self) -> None:
        binary = sp.csr_matrix(self.graph, dtype=np.float64, copy=True)
        binary.data[:] = 1.0
        object.__setattr__(self, "_binary", binary)
        object.__setattr__(self, "_binary_t", binary.T.tocsr())
        object.__setattr__(self, "_user_degree", np.diff(binary.indptr).astype(np.float64))
        object.__setattr__(
            self, "_item_degree", np.bincount(binary.indices, minlength=binary.shape[1]).astype(np.float64)
        )

    def settings(self) -> dict[str, Any]:
        return {"side": self.side, "alpha": list(self.alpha), "layers": self.layers}

    def represent(self, items: np.ndarray) -> np.ndarray:
        """The new user's final representation (float32, ``(d,)``) for its item indices ``items``."""
        chosen = np.unique(np.asarray(items, dtype=np.int64))
        if len(chosen) == 0:
            raise SsmrecError("a new user needs at least one item")
        left, right = self.alpha
        m = float(len(chosen))
        item_degree = self._item_degree.copy()  # type: ignore[attr-defined]
        item_degree[chosen] += 1.0
        if self.side == "user":
            weights = m**-left * item_degree[chosen] ** -right
            return (weights @ self.item_ego[chosen].astype(np.float64)).astype(np.float32)
        user_degree = self._user_degree  # type: ignore[attr-defined]
        item_left, item_right = _power(item_degree, left), _power(item_degree, right)
        user_left, user_right = _power(user_degree, left), _power(user_degree, right)
        new_left, new_right = m**-left, m**-right
        # r_1: from the new node to its items
        r_items = np.zeros(len(item_degree))
        r_items[chosen] = new_left * item_right[chosen]
        r_users = np.zeros(len(user_degree))
        r_new = 0.0
        total = r_items @ self.item_ego.astype(np.float64)
        for _ in range(1, self.layers):
            s_items, s_users, s_new = r_items * item_left, r_users * user_left, r_new * new_left
            to_users = self._binary @ s_items  # type: ignore[attr-defined]
            to_new = s_items[chosen].sum()
            to_items = self._binary_t @ s_users  # type: ignore[attr-defined]
            to_items[chosen] += s_new
            r_users, r_new, r_items = to_users * user_right, to_new * new_right, to_items * item_right
            total = total + r_items @ self.item_ego.astype(np.float64)
            if self.user_ego is not None and r_users.any():
                total = total + r_users @ self.user_ego.astype(np.float64)
        return (total / (self.layers + 1)).astype(np.float32)


def _power(degree: np.ndarray, exponent: float) -> np.ndarray:
    """``degree ** -exponent`` with 0 for isolated nodes, as :func:`normalized_adjacency` scales them."""
    with np.errstate(divide="ignore"):
        return np.where(degree > 0, degree**-exponent, 0.0)


def foldin_unsupported(model_kind: str, side: str | None, layers: int | None) -> str | None:
    """Why the model cannot represent a new user from its items, or ``None`` if it can."""
    if model_kind != "lightgcn":
        return (
            f"model {model_kind!r} has no encoder for new users (a user is its trained embedding row); "
            "retrain with the user, or use lightgcn or history"
        )
    if side == "item":
        return "LightGCN with side=item keeps users as their trained rows: it cannot encode a new user"
    if not layers:
        return "LightGCN with 0 layers keeps users as their trained rows: it cannot encode a new user"
    return None


def foldin_from_model(model: Any, graph: sp.csr_matrix) -> FoldIn | None:
    """The :class:`FoldIn` of a trained LightGCN (``None`` for models without a new-user encoder)."""
    from ssmrec.models.lightgcn import LightGCN

    if not isinstance(model, LightGCN) or foldin_unsupported("lightgcn", model.side, model.n_layers):
        return None
    item_ego = model.item_embedding.weight.detach().cpu().numpy().astype(np.float32)
    needs_users = model.side == "both" and model.n_layers >= 2
    user_ego = model.user_embedding.weight.detach().cpu().numpy().astype(np.float32) if needs_users else None
    return FoldIn(sp.csr_matrix(graph), item_ego, user_ego, model.side, model.alpha, model.n_layers)
