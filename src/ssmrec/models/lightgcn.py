"""LightGCN (He et al., SIGIR 2020): parameter-free propagation, mean over layer outputs.

``E^{(k+1)} = Â E^{(k)}`` and the final representation is ``(1 / (L+1)) Σ_{k=0..L} E^{(k)}``.
Propagation makes representation magnitudes grow with node degree, which is what lets the
cosine-based SSM loss work well with it (Wu et al., TOIS 2024, Section 5).

The adjacency options of the official SSM code (``side``, ``alpha``; see
:func:`ssmrec.models.graph.normalized_adjacency`):

* ``side="both"``: the bipartite graph, any number of layers, ``Â = D^{-left} A D^{-right}``.
* ``side="user"``: one layer in which only users aggregate:
  ``u = e_u + Σ_{i∈N(u)} d_u^{-left} d_i^{-right} e_i`` and ``i = e_i`` (SSM.py ``_create_SVDpp_embed``:
  a sum, not a mean). With ``alpha=(0.5, 0)`` this is SVD++'s ``|N(u)|^{-1/2}`` normalisation; it is
  the SSM paper's "history" encoder.
* ``side="item"``: the mirror image: items aggregate their users, users keep their ego embedding.
"""

from __future__ import annotations

from typing import Literal

import scipy.sparse as sp
import torch
from torch import Tensor

from ssmrec.models.base import Recommender
from ssmrec.models.graph import SIDES, SparseOperator, normalized_adjacency, sparse_product

Propagation = Literal["auto", "full", "local"]


class LightGCN(Recommender):
    """LightGCN over the training graph.

    ``propagation`` chooses how a training batch is encoded:
    ``full`` multiplies the whole graph every step; ``local`` (one layer only) gathers just the
    adjacency rows of the batch's users and items — the same values and gradients, a fraction of
    the work, since a batch of 2048 pairs touches a few thousand of Gowalla's 71 k nodes;
    ``auto`` picks ``local`` when it applies. The local path uses rows of ``Â`` only (and their
    transpose for the backward), so it is exact for non-symmetric ``alpha`` and one-sided graphs too.
    """

    def __init__(
        self,
        train: sp.csr_matrix,
        dim: int = 64,
        n_layers: int = 3,
        propagation: Propagation = "auto",
        side: str = "both",
        alpha: tuple[float, float] = (0.5, 0.5),
    ) -> None:
        n_users, n_items = train.shape
        super().__init__(n_users, n_items, dim)
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        if propagation not in ("auto", "full", "local"):
            raise ValueError(f"propagation must be auto, full or local, got {propagation!r}")
        if side not in SIDES:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
        if side != "both" and n_layers != 1:
            raise ValueError(f"side={side!r} propagates one layer (the official SSM code's SVD++ form)")
        if propagation == "local" and n_layers != 1:
            raise ValueError("local propagation is implemented for one layer only")
        if len(alpha) != 2:
            raise ValueError(f"alpha must be two exponents (left, right), got {alpha!r}")
        self.n_layers = n_layers
        self.side = side
        self.alpha = (float(alpha[0]), float(alpha[1]))
        self.local = n_layers == 1 and propagation in ("auto", "local")
        self._adjacency = normalized_adjacency(train, side, self.alpha)
        symmetric = side == "both" and self.alpha[0] == self.alpha[1]
        self._operator = SparseOperator(self._adjacency, symmetric=symmetric)
        self._user_item: sp.csr_matrix | None = None
        self._item_user: sp.csr_matrix | None = None

    def forward(self) -> tuple[Tensor, Tensor]:
        users, items = self.user_embedding.weight, self.item_embedding.weight
        if self.side == "user":
            return users + self._operator.matmul(items), items
        if self.side == "item":
            return users, items + self._operator.matmul(users)
        final = self._layer_mean()
        return final[: self.n_users], final[self.n_users :]

    def _layer_mean(self) -> Tensor:
        """All nodes' final representations, users first (side ``both``)."""
        return self._operator.mean_of_powers(
            self.user_embedding.weight, self.item_embedding.weight, self.n_layers
        )

    def encode(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        if not self.local:
            if self.side != "both":
                return super().encode(users, items)
            # one gather from the node table: its backward is one index_add, where indexing the user
            # and item halves would zero-fill and add two full-size gradients
            picked = self._layer_mean().index_select(0, torch.cat([users, items + self.n_users]))
            return picked[: len(users)], picked[len(users) :]
        if self.side == "user":
            return self._aggregate(
                users, self.user_embedding.weight, self.item_embedding.weight
            ), self.item_embedding(items)
        if self.side == "item":
            return self.user_embedding(users), self._aggregate(
                items, self.item_embedding.weight, self.user_embedding.weight
            )
        nodes, inverse = torch.unique(torch.cat([users, items + self.n_users]), return_inverse=True)
        split = int(torch.searchsorted(nodes, self.n_users))  # sorted: user nodes first
        user_nodes, item_nodes = nodes[:split], nodes[split:] - self.n_users
        user_rows, item_rows = self._blocks()
        final = _LocalLayerMean.apply(
            self.user_embedding.weight,
            self.item_embedding.weight,
            user_nodes,
            item_nodes,
            SparseOperator(user_rows[user_nodes.numpy()]),
            SparseOperator(item_rows[item_nodes.numpy()]),
        )
        picked = final.index_select(0, inverse)
        return picked[: len(users)], picked[len(users) :]

    def _blocks(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """``Â``'s user→item and item→user blocks (the only non-zero ones of side ``both``), built once."""
        if self._user_item is None:
            n = self.n_users
            self._user_item = self._adjacency[:n, n:].tocsr()
            self._item_user = self._adjacency[n:, :n].tocsr()
        assert self._item_user is not None
        return self._user_item, self._item_user

    def _aggregate(self, ids: Tensor, own: Tensor, other: Tensor) -> Tensor:
        """``own[ids] + Â[ids] @ other`` from just the adjacency rows of ``ids`` (one-sided graphs)."""
        nodes, inverse = torch.unique(ids, return_inverse=True)
        rows = SparseOperator(self._adjacency[nodes.numpy()])
        return (own[nodes] + rows.matmul(other))[inverse]


class _LocalLayerMean(torch.autograd.Function):
    """One LightGCN layer's mean ``(e + Â e) / 2`` for the batch's nodes only (side ``both``).

    User nodes U aggregate items and item nodes I aggregate users:
    ``out_U = (E_u[U] + Â_UI E_i) / 2`` and ``out_I = (E_i[I] + Â_IU E_u) / 2``, rows in U-then-I order.
    The backward writes each table's gradient once: ``∇E_i = Â_UIᵀ G_U / 2`` plus ``G_I / 2`` added at
    I (and the mirror for users). Autograd of the same formula on the concatenated table would copy
    the table, zero-fill and add several full-size gradients per step.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, user_table: Tensor, item_table: Tensor, user_nodes: Tensor, item_nodes: Tensor,
        user_rows: SparseOperator, item_rows: SparseOperator,
    ) -> Tensor:  # fmt: skip
        ctx.save_for_backward(user_nodes, item_nodes)
        ctx.user_rows, ctx.item_rows = user_rows, item_rows
        out_users = sparse_product(user_rows.matrix, item_table).add_(user_table[user_nodes])
        out_items = sparse_product(item_rows.matrix, user_table).add_(item_table[item_nodes])
        return torch.cat([out_users, out_items]).div_(2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None, None]:  # type: ignore[override]
        user_nodes, item_nodes = ctx.saved_tensors
        half = grad.contiguous() / 2
        grad_users, grad_items = half[: len(user_nodes)], half[len(user_nodes) :]
        user_table_grad = sparse_product(ctx.item_rows.matrix_t, grad_items).index_add_(
            0, user_nodes, grad_users
        )
        item_table_grad = sparse_product(ctx.user_rows.matrix_t, grad_users).index_add_(
            0, item_nodes, grad_items
        )
        return user_table_grad, item_table_grad, None, None, None, None
