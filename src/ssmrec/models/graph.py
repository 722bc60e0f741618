"""The normalised user–item graph and a sparse product with a cheap, exact backward.

The bipartite adjacency over ``n_users + n_items`` nodes (users first) is
``A = [[0, R], [Rᵀ, 0]]`` and LightGCN propagates with ``Â = D^{-1/2} A D^{-1/2}``.
The official SSM code generalises both (``create_adj_mat``): ``side`` picks the graph (``both``: A;
``user``: R, users aggregate their items; ``item``: Rᵀ, items aggregate their users) and
``alpha = (left, right)`` the exponents of ``D_row^{-left} A D_col^{-right}``, D_row / D_col the
row / column sums. Only ``side="both"`` with ``left == right`` is symmetric.
torch's own backward of a CSR product transposes the matrix on every call (about 9× the cost of
the forward on Gowalla); here the transpose is built once, and for a symmetric ``Â`` it is
``Â`` itself.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

SIDES = ("both", "user", "item")


def normalized_adjacency(
    train: sp.csr_matrix, side: str = "both", alpha: tuple[float, float] = (0.5, 0.5)
) -> sp.csr_matrix:
    """``D_row^{-left} A D_col^{-right}`` (float32 CSR) of the graph ``side`` picks (module docstring).

    The default, side ``both`` with ``alpha = (0.5, 0.5)``, is LightGCN's symmetric
    ``D^{-1/2} A D^{-1/2}``. Nodes without edges get a zero row (their degree term is 0, not inf).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    left, right = alpha
    binary = train.astype(np.float32, copy=True)
    binary.data[:] = 1.0
    if side == "both":
        adjacency = sp.bmat([[None, binary], [binary.T, None]], format="csr", dtype=np.float32)
    else:
        adjacency = sp.csr_matrix(binary if side == "user" else binary.T, dtype=np.float32)
    row_degree = np.asarray(adjacency.sum(axis=1), dtype=np.float64).ravel()
    col_degree = np.asarray(adjacency.sum(axis=0), dtype=np.float64).ravel()
    with np.errstate(divide="ignore"):
        row_scale = np.where(row_degree > 0, row_degree**-left, 0.0)
        col_scale = np.where(col_degree > 0, col_degree**-right, 0.0)
    coo = adjacency.tocoo()
    values = (row_scale[coo.row] * col_scale[coo.col]).astype(np.float32)
    normalized = sp.csr_matrix((values, (coo.row, coo.col)), shape=adjacency.shape, dtype=np.float32)
    normalized.sort_indices()
    return normalized


def to_torch_csr(matrix: sp.csr_matrix) -> Tensor:
    """scipy CSR -> torch sparse CSR (float32 values), without copying values twice.

    Indices are int32 when they fit, as MKL's sparse kernels take them: int64 indices are converted
    on every product.
    """
    index = np.int32 if max(matrix.nnz, *matrix.shape) < 2**31 else np.int64
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product we use is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(index)),
            torch.from_numpy(matrix.indices.astype(index)),
            torch.from_numpy(np.ascontiguousarray(matrix.data, dtype=np.float32)),
            size=matrix.shape,
            check_invariants=False,  # scipy already guarantees a valid, sorted CSR
        )


def sparse_product(matrix: Tensor, dense: Tensor, out: Tensor | None = None) -> Tensor:
    """``matrix @ dense`` for a sparse CSR ``matrix``, written straight into ``out`` (new when ``None``).

    ``torch.sparse.mm`` zero-fills a fresh result and copies the kernel's output into it; ``addmm``
    with ``beta=0`` into an uninitialised buffer (``beta=0`` ignores its contents, NaN included) gives
    the same values bit for bit without either pass: 6.3 ms instead of 7.9 ms per Gowalla product
    (71 k × 64, 1.62 M non-zeros, 2 threads; the two floors of ``benchmarks/bench_train.py``).
    ``out`` must not overlap ``dense``.
    """
    if out is None:
        out = dense.new_empty((matrix.shape[0], dense.shape[1]))
    return torch.addmm(out, matrix, dense, beta=0.0, out=out)


class _SparseMatmul(torch.autograd.Function):
    """``S @ X`` for a constant sparse ``S`` whose transpose is supplied, so backward is one product."""

    @staticmethod
    def forward(ctx, matrix: Tensor, matrix_t: Tensor, dense: Tensor) -> Tensor:  # type: ignore[override]
        ctx.matrix_t = matrix_t
        return sparse_product(matrix, dense)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[None, None, Tensor]:  # type: ignore[override]
        return None, None, sparse_product(ctx.matrix_t, grad_output.contiguous())


@dataclass(frozen=True)
class SparseOperator:
    """A constant sparse CSR matrix with its transpose cached, applied with :func:`SparseOperator.matmul`."""

    matrix: Tensor
    matrix_t: Tensor
    _copies: dict[torch.device, SparseOperator] = field(default_factory=dict, compare=False, repr=False)

    def on(self, device: torch.device) -> SparseOperator:
        """This operator on ``device``: itself when it is there, else a copy made once and cached.

        A model keeps its constant graph on the CPU and reads it through this, so the graph follows the
        parameters wherever ``model.to(device)`` put them (a symmetric matrix is copied once).
        """
        if self.matrix.device == device:
            return self
        copy = self._copies.get(device)
        if copy is None:
            matrix = self.matrix.to(device)
            matrix_t = matrix if self.matrix_t is self.matrix else self.matrix_t.to(device)
            copy = self._copies[device] = SparseOperator(matrix, matrix_t)
        return copy

    @classmethod
    def from_scipy(cls, matrix: sp.csr_matrix, symmetric: bool = False) -> SparseOperator:
        """The operator of ``matrix``; a symmetric matrix is its own transpose (stored once)."""
        torch_matrix = to_torch_csr(matrix)
        return cls(torch_matrix, torch_matrix if symmetric else to_torch_csr(matrix.T.tocsr()))

    @classmethod
    def transposed_pair(
        cls, matrix: sp.csr_matrix, transpose: sp.csr_matrix
    ) -> tuple[SparseOperator, SparseOperator]:
        """Operators of ``matrix`` and of ``transpose`` (= matrixᵀ, e.g. the two off-diagonal blocks of
        a symmetric Â), sharing their two CSR tensors."""
        if transpose.shape != (matrix.shape[1], matrix.shape[0]):
            raise ValueError(f"a {transpose.shape} matrix is not the transpose of a {matrix.shape} one")
        forward, backward = to_torch_csr(matrix), to_torch_csr(transpose)
        return cls(forward, backward), cls(backward, forward)

    def matmul(self, dense: Tensor) -> Tensor:
        return _SparseMatmul.apply(self.matrix, self.matrix_t, dense)

    def mean_of_powers(self, users: Tensor, items: Tensor, n_layers: int) -> Tensor:
        """``(1 / (L+1)) Σ_{k=0..L} Sᵏ E`` for ``E = [users; items]``, with a hand-written backward.

        LightGCN's layer mean. Autograd of the plain loop keeps every layer, zero-fills and adds
        full-size gradients per layer and copies the ``cat``; since the map is linear the backward is
        just ``(1 / (L+1)) Σ_k (Sᵀ)ᵏ G``, accumulated in place, and the gradients of ``users`` and
        ``items`` are views of one buffer. Values equal the loop's bit for bit (same order of sums).
        """
        return _MeanOfPowers.apply(users, items, self.matrix, self.matrix_t, n_layers)


def _sum_of_powers(matrix: Tensor, start: Tensor, n_layers: int) -> Tensor:
    """``(start + S start + … + S^L start) / (L + 1)``, the layers written into two reused buffers."""
    layer, total = start, start.clone()
    buffers = [torch.empty_like(start) for _ in range(min(n_layers, 2))]
    for index in range(n_layers):
        layer = sparse_product(matrix, layer, out=buffers[index % 2])
        total.add_(layer)
    return total.div_(n_layers + 1)


class _MeanOfPowers(torch.autograd.Function):
    """See :meth:`SparseOperator.mean_of_powers`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, users: Tensor, items: Tensor, matrix: Tensor, matrix_t: Tensor, n_layers: int
    ) -> Tensor:
        ctx.matrix_t, ctx.n_layers, ctx.n_users = matrix_t, n_layers, users.shape[0]
        return _sum_of_powers(matrix, torch.cat([users, items]), n_layers)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None]:  # type: ignore[override]
        total = _sum_of_powers(ctx.matrix_t, grad.contiguous(), ctx.n_layers)
        return total[: ctx.n_users], total[ctx.n_users :], None, None, None
