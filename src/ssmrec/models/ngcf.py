"""NGCF (Wang et al., "Neural Graph Collaborative Filtering", SIGIR 2019).

With ``L = D^{-1/2} A D^{-1/2}`` the normalised bipartite adjacency and ``E^{(0)}`` the ego embeddings,
each layer is (paper, Eq. 7)

    E^{(k+1)} = LeakyReLU( (L + I) E^{(k)} W₁ + ((L E^{(k)}) ⊙ E^{(k)}) W₂ )

with biases on both transforms and slope 0.2, as the authors' code (github.com/huangtinglin/NGCF-PyTorch,
NGCF.py); message dropout (rate ``dropout``, training only) follows each layer, and every propagated
layer is L2-normalised before the final representation concatenates all of them:
``[E^{(0)}, n(E^{(1)}), …, n(E^{(L)})]`` (dimension ``dim · (L + 1)``).
The graph product uses the same cached-transpose sparse operator as LightGCN.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmrec.models.base import Recommender
from ssmrec.models.graph import SparseOperator, normalized_adjacency


class NGCF(Recommender):
    """NGCF with ``n_layers`` layers of width ``dim`` (formula in the module docstring)."""

    def __init__(self, train: sp.csr_matrix, dim: int = 64, n_layers: int = 3, dropout: float = 0.1) -> None:
        n_users, n_items = train.shape
        super().__init__(n_users, n_items, dim)
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_layers = n_layers
        self.dropout = dropout
        self._operator = SparseOperator.from_scipy(normalized_adjacency(train), symmetric=True)
        self.sum_transforms = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))  # W₁
        self.product_transforms = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))  # W₂
        for layer in (*self.sum_transforms, *self.product_transforms):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self) -> tuple[Tensor, Tensor]:
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        layers = [ego]
        for sum_transform, product_transform in zip(
            self.sum_transforms, self.product_transforms, strict=True
        ):
            side = self._operator.on(ego.device).matmul(ego)  # L E
            ego = F.leaky_relu(sum_transform(side + ego) + product_transform(side * ego), negative_slope=0.2)
            ego = F.dropout(ego, p=self.dropout, training=self.training)
            layers.append(F.normalize(ego, dim=1))
        final = torch.cat(layers, dim=1)
        return final[: self.n_users], final[self.n_users :]
