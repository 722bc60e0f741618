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

from dataclasses import dataclass
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
    ``full`` multiplies the whole graph every step; ``local`` skips the work outside the batch's
    receptive field where that is cheap: the last layer (and the first product of the backward) uses
    just the adjacency rows of the batch's users and items, so one layer never touches the rest of the
    graph and L layers do L−1 whole-graph products each way instead of L — the same values and
    gradients (on Gowalla a batch of 2048 pairs with one negative each touches about 5.7 k of the
    71 k nodes, 16.6 % of Â's non-zeros; in-batch SSM 3.8 k nodes, 14.5 %: ``benchmarks/profile_step.py``
    prints it). ``auto`` picks ``local`` whenever there is a layer. The local path uses rows of ``Â``
    only (and their transpose for the backward), so it is exact for non-symmetric ``alpha`` and
    one-sided graphs too.
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
        if propagation == "local" and n_layers < 1:
            raise ValueError("local propagation needs at least one layer")
        if len(alpha) != 2:
            raise ValueError(f"alpha must be two exponents (left, right), got {alpha!r}")
        self.n_layers = n_layers
        self.side = side
        self.alpha = (float(alpha[0]), float(alpha[1]))
        self.local = n_layers >= 1 and propagation in ("auto", "local")
        self._adjacency = normalized_adjacency(train, side, self.alpha)
        symmetric = side == "both" and self.alpha[0] == self.alpha[1]
        self._operator = SparseOperator.from_scipy(self._adjacency, symmetric=symmetric)
        self._block_cache: _Blocks | None = None

    def _graph(self) -> SparseOperator:
        """``Â`` on the parameters' device (:meth:`SparseOperator.on`)."""
        return self._operator.on(self.user_embedding.weight.device)

    def forward(self) -> tuple[Tensor, Tensor]:
        users, items = self.user_embedding.weight, self.item_embedding.weight
        if self.side == "user":
            return users + self._graph().matmul(items), items
        if self.side == "item":
            return users, items + self._graph().matmul(users)
        final = self._layer_mean()
        return final[: self.n_users], final[self.n_users :]

    def _layer_mean(self) -> Tensor:
        """All nodes' final representations, users first (side ``both``)."""
        users, items = self.user_embedding.weight, self.item_embedding.weight
        return self._graph().mean_of_powers(users, items, self.n_layers)

    def encode(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        # The local path slices Â's rows on the host (scipy); off the CPU that would be a round trip
        # per step, while whole-graph products are cheap there: the full path (same values).
        if not self.local or users.device.type != "cpu":
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
        blocks = self._blocks()
        final = _LocalLayerMean.apply(
            self.user_embedding.weight,
            self.item_embedding.weight,
            user_nodes,
            item_nodes,
            blocks,
            SparseOperator.from_scipy(blocks.user_item_rows[user_nodes.numpy()]),
            SparseOperator.from_scipy(blocks.item_user_rows[item_nodes.numpy()]),
            self.n_layers,
        )
        picked = final.index_select(0, inverse)
        return picked[: len(users)], picked[len(users) :]

    def _blocks(self) -> _Blocks:
        """``Â``'s user→item and item→user blocks (the only non-zero ones of side ``both``), built once."""
        if self._block_cache is None:
            n = self.n_users
            user_item = self._adjacency[:n, n:].tocsr()
            item_user = self._adjacency[n:, :n].tocsr()
            if self._operator.matrix_t is self._operator.matrix:  # symmetric: each block is the other's ᵀ
                user_item_op, item_user_op = SparseOperator.transposed_pair(user_item, item_user)
            else:
                user_item_op = SparseOperator.from_scipy(user_item)
                item_user_op = SparseOperator.from_scipy(item_user)
            self._block_cache = _Blocks(user_item, item_user, user_item_op, item_user_op)
        return self._block_cache

    def _aggregate(self, ids: Tensor, own: Tensor, other: Tensor) -> Tensor:
        """``own[ids] + Â[ids] @ other`` from just the adjacency rows of ``ids`` (one-sided graphs)."""
        nodes, inverse = torch.unique(ids, return_inverse=True)
        rows = SparseOperator.from_scipy(self._adjacency[nodes.numpy()])
        return (own[nodes] + rows.matmul(other))[inverse]


@dataclass(frozen=True)
class _Blocks:
    """The two non-zero blocks of side ``both``'s Â: scipy rows to slice per batch, torch operators."""

    user_item_rows: sp.csr_matrix
    item_user_rows: sp.csr_matrix
    user_item: SparseOperator
    item_user: SparseOperator


class _LocalLayerMean(torch.autograd.Function):
    """LightGCN's layer mean ``(1/(L+1)) Σ_{k=0..L} (Âᵏ E)`` at the batch's nodes only (side ``both``).

    ``Â = [[0, A_ui], [A_iu, 0]]`` is applied block by block, so the user and item tables are never
    concatenated. Layers 1..L−1 are whole-graph products (the batch's receptive field at depth ≥ 2 is
    most of the graph), but the last layer is computed only at the batch's nodes U and I, from their
    adjacency rows: ``out_U += Â_UI E_i^{(L−1)}``, ``out_I += Â_IU E_u^{(L−1)}``. The sum over layers
    gathers just those rows, never adding full-size tables.

    The backward mirrors it: with ``H_0`` the output gradient placed at U and I, the first product
    ``H_1 = Âᵀ H_0`` uses only the batch's rows (their transposes), then ``H_k = Âᵀ H_{k−1}`` are
    L−1 whole-graph products, and each table's gradient ``Σ_k H_k / (L+1)`` is written once. For one
    layer there is no whole-graph product at all. Exact for asymmetric Â (only Â's rows and their own
    transposes are used).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, user_table: Tensor, item_table: Tensor, user_nodes: Tensor, item_nodes: Tensor,
        blocks: _Blocks, user_rows: SparseOperator, item_rows: SparseOperator, n_layers: int,
    ) -> Tensor:  # fmt: skip
        ctx.save_for_backward(user_nodes, item_nodes)
        ctx.blocks, ctx.user_rows, ctx.item_rows, ctx.n_layers = blocks, user_rows, item_rows, n_layers
        out_users, out_items = user_table[user_nodes], item_table[item_nodes]
        users, items = user_table, item_table
        spare: tuple[Tensor, Tensor] | None = None
        for _ in range(n_layers - 1):
            if spare is None:  # two sets of layer buffers, used in turn
                spare = torch.empty_like(user_table), torch.empty_like(item_table)
            next_users = sparse_product(blocks.user_item.matrix, items, out=spare[0])
            next_items = sparse_product(blocks.item_user.matrix, users, out=spare[1])
            spare = None if users is user_table else (users, items)
            users, items = next_users, next_items
            out_users.add_(users[user_nodes])
            out_items.add_(items[item_nodes])
        out_users.add_(sparse_product(user_rows.matrix, items))
        out_items.add_(sparse_product(item_rows.matrix, users))
        return torch.cat([out_users, out_items]).div_(n_layers + 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None, None, None, None]:  # type: ignore[override]
        user_nodes, item_nodes = ctx.saved_tensors
        blocks, n_layers = ctx.blocks, ctx.n_layers
        scaled = grad.contiguous() / (n_layers + 1)
        grad_users, grad_items = scaled[: len(user_nodes)], scaled[len(user_nodes) :]
        # (Âᵀ H)_users = A_iuᵀ H_items and (Âᵀ H)_items = A_uiᵀ H_users
        users = sparse_product(ctx.item_rows.matrix_t, grad_items)
        items = sparse_product(ctx.user_rows.matrix_t, grad_users)
        total_users, total_items = users, items
        spare: tuple[Tensor, Tensor] | None = None
        for layer in range(1, n_layers):
            if layer == 1:
                total_users, total_items = users.clone(), items.clone()
            if spare is None:
                spare = torch.empty_like(users), torch.empty_like(items)
            next_users = sparse_product(blocks.item_user.matrix_t, items, out=spare[0])
            next_items = sparse_product(blocks.user_item.matrix_t, users, out=spare[1])
            spare = users, items
            users, items = next_users, next_items
            total_users.add_(users)
            total_items.add_(items)
        total_users.index_add_(0, user_nodes, grad_users)
        total_items.index_add_(0, item_nodes, grad_items)
        return total_users, total_items, None, None, None, None, None, None
