"""Models against an independent dense computation of the LightGCN propagation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ssmrec.models import MF, LightGCN, build_model
from ssmrec.models.graph import normalized_adjacency


def _train() -> sp.csr_matrix:
    # users 0,1; items 0,1. u0-i0, u0-i1, u1-i1 -> degrees u0=2, u1=1, i0=1, i1=2
    return sp.csr_matrix(np.array([[1, 1], [0, 1]], dtype=np.float32))


def test_normalized_adjacency_by_hand() -> None:
    adjacency = normalized_adjacency(_train()).toarray()
    expected = np.zeros((4, 4))
    expected[0, 2] = expected[2, 0] = 1 / math.sqrt(2 * 1)  # u0-i0
    expected[0, 3] = expected[3, 0] = 1 / math.sqrt(2 * 2)  # u0-i1
    expected[1, 3] = expected[3, 1] = 1 / math.sqrt(1 * 2)  # u1-i1
    np.testing.assert_allclose(adjacency, expected, rtol=1e-6)


def test_isolated_node_has_zero_row() -> None:
    train = sp.csr_matrix(np.array([[1, 0], [0, 0]], dtype=np.float32))  # user 1 and item 1 isolated
    adjacency = normalized_adjacency(train).toarray()
    assert np.isfinite(adjacency).all()
    assert adjacency[1].sum() == 0 and adjacency[3].sum() == 0


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_lightgcn_forward_matches_dense_mean_of_layers(layers: int) -> None:
    torch.manual_seed(0)
    model = LightGCN(_train(), dim=3, n_layers=layers, propagation="full")
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach().double().numpy()
    dense = normalized_adjacency(_train()).toarray().astype(np.float64)
    layer, total = ego, ego.copy()
    for _ in range(layers):
        layer = dense @ layer
        total += layer
    expected = total / (layers + 1)
    users, items = model.representations()
    np.testing.assert_allclose(users.numpy(), expected[:2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(items.numpy(), expected[2:], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_local_encoding_equals_full_values_and_gradients(layers: int) -> None:
    rng = np.random.default_rng(1)
    train = sp.random(40, 30, density=0.15, random_state=2, format="csr", dtype=np.float32)
    train.data[:] = 1
    users = torch.from_numpy(rng.integers(0, 40, 25))
    items = torch.from_numpy(rng.integers(0, 30, 50))  # repeated ids included
    grads = []
    for propagation in ("full", "local"):
        torch.manual_seed(3)
        model = LightGCN(train, dim=8, n_layers=layers, propagation=propagation)
        assert model.local == (propagation == "local")
        u, i = model.encode(users, items)
        weights = torch.linspace(-1, 1, u.numel()).reshape(u.shape)
        ((u * weights).sum() + (i**2).sum()).backward()
        grads.append(
            (u.detach(), i.detach(), model.user_embedding.weight.grad, model.item_embedding.weight.grad)
        )
    for full, local in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(local, full, rtol=1e-5, atol=1e-6)


def test_mf_encode_is_ego_and_build_model() -> None:
    model = build_model("mf", _train(), dim=4)
    assert isinstance(model, MF)
    users, items = torch.tensor([1, 0]), torch.tensor([1])
    u, i = model.encode(users, items)
    torch.testing.assert_close(u, model.user_embedding.weight[users])
    torch.testing.assert_close(i, model.item_embedding.weight[items])
    assert isinstance(build_model("lightgcn", _train(), n_layers=2), LightGCN)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("gru4rec", _train())
    with pytest.raises(ValueError, match="at least one layer"):
        LightGCN(_train(), n_layers=0, propagation="local")


def test_xavier_uniform_init_bounds() -> None:
    torch.manual_seed(0)
    model = MF(1000, 500, 64)
    bound = math.sqrt(6 / (1000 + 64))  # xavier_uniform on a (fan_out=1000, fan_in=64) table
    weights = model.user_embedding.weight
    assert weights.abs().max().item() <= bound
    assert weights.abs().max().item() > 0.95 * bound
