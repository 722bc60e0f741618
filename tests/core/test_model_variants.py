"""LightGCN's adjacency options (side, alpha), the history encoder and NGCF against dense references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ssmrec.models import NGCF, LightGCN, build_model
from ssmrec.models.graph import normalized_adjacency


def _train() -> sp.csr_matrix:
    # users 0,1; items 0,1,2. u0-i0, u0-i1, u1-i1, u1-i2 -> degrees u0=2, u1=2, i0=1, i1=2, i2=1
    return sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))


def _random_train(seed: int = 2) -> sp.csr_matrix:
    train = sp.random(30, 20, density=0.2, random_state=seed, format="csr", dtype=np.float32)
    train.data[:] = 1
    return train


def test_one_sided_and_asymmetric_adjacency_by_hand() -> None:
    user = normalized_adjacency(_train(), side="user", alpha=(0.5, 0.0)).toarray()  # SVD++: |N(u)|^-1/2
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(user, [[r, r, 0], [0, r, r]], rtol=1e-6)
    item = normalized_adjacency(_train(), side="item", alpha=(1.0, 0.0)).toarray()  # mean over users
    np.testing.assert_allclose(item, [[1, 0], [0.5, 0.5], [0, 1]], rtol=1e-6)
    both = normalized_adjacency(_train(), alpha=(1.0, 0.0)).toarray()  # row-normalised: D^-1 A
    np.testing.assert_allclose(both.sum(axis=1), np.ones(5), rtol=1e-6)
    assert both[0, 2] == pytest.approx(0.5) and both[2, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="side"):
        normalized_adjacency(_train(), side="left")


def _dense_adjacency(train: sp.csr_matrix, side: str, alpha: tuple[float, float]) -> np.ndarray:
    """Independent dense D_row^-left A D_col^-right."""
    r = train.toarray().astype(np.float64)
    if side == "both":
        n_users, n_items = r.shape
        a = np.zeros((n_users + n_items, n_users + n_items))
        a[:n_users, n_users:] = r
        a[n_users:, :n_users] = r.T
    else:
        a = r if side == "user" else r.T
    rows, cols = a.sum(1), a.sum(0)
    with np.errstate(divide="ignore"):
        left = np.where(rows > 0, rows ** -alpha[0], 0)
        right = np.where(cols > 0, cols ** -alpha[1], 0)
    return left[:, None] * a * right[None, :]


@pytest.mark.parametrize(
    ("side", "alpha", "layers"),
    [("both", (0.3, 0.7), 2), ("user", (0.5, 0.5), 1), ("user", (0.5, 0.0), 1), ("item", (1.0, 0.2), 1)],
)
def test_lightgcn_options_match_the_dense_formula(side: str, alpha: tuple[float, float], layers: int) -> None:
    train = _random_train()
    torch.manual_seed(0)
    model = LightGCN(train, dim=4, n_layers=layers, propagation="full", side=side, alpha=alpha)
    u = model.user_embedding.weight.detach().double().numpy()
    i = model.item_embedding.weight.detach().double().numpy()
    a = _dense_adjacency(train, side, alpha)
    if side == "both":
        layer = np.concatenate([u, i])
        total = layer.copy()
        for _ in range(layers):
            layer = a @ layer
            total += layer
        expected_users, expected_items = np.split(total / (layers + 1), [30])
    elif side == "user":
        expected_users, expected_items = u + a @ i, i
    else:
        expected_users, expected_items = u, i + a @ u
    users, items = model.representations()
    np.testing.assert_allclose(users.numpy(), expected_users, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(items.numpy(), expected_items, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("alpha", "layers"), [((0.5, 0.5), 0), ((0.5, 0.5), 3), ((0.3, 0.7), 2)])
def test_full_propagation_gradients_match_dense_autograd(alpha: tuple[float, float], layers: int) -> None:
    """The hand-written backward of the layer mean against autograd through a dense float64 Â."""
    train = _random_train(5)
    torch.manual_seed(1)
    model = LightGCN(train, dim=4, n_layers=layers, propagation="full", alpha=alpha)
    users, items = torch.tensor([0, 3, 3, 29]), torch.tensor([1, 1, 19, 7, 0])  # repeats included
    u, i = model.encode(users, items)
    weights_u, weights_i = torch.linspace(-1, 1, u.numel()).reshape(u.shape), torch.rand(i.shape)
    ((u * weights_u).sum() + (i * weights_i).sum()).backward()

    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach().double()
    ego.requires_grad_(True)
    a = torch.from_numpy(normalized_adjacency(train, "both", alpha).toarray()).double()
    layer, total = ego, ego
    for _ in range(layers):
        layer = a @ layer
        total = total + layer
    final = total / (layers + 1)
    ref_u, ref_i = final[users], final[items + 30]
    ((ref_u * weights_u.double()).sum() + (ref_i * weights_i.double()).sum()).backward()
    torch.testing.assert_close(u.detach().double(), ref_u.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(i.detach().double(), ref_i.detach(), rtol=1e-5, atol=1e-6)
    grad = torch.cat([model.user_embedding.weight.grad, model.item_embedding.weight.grad]).double()
    torch.testing.assert_close(grad, ego.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("side", "alpha", "layers"),
    [("both", (0.25, 0.75), 1), ("both", (0.25, 0.75), 3), ("user", (0.5, 0.5), 1), ("item", (0.5, 0.0), 1)],
)
def test_local_encoding_is_exact_without_symmetry(side: str, alpha: tuple[float, float], layers: int) -> None:
    """The batch-local path uses adjacency rows and their own transpose: exact for asymmetric Â too."""
    train = _random_train(4)
    rng = np.random.default_rng(1)
    users = torch.from_numpy(rng.integers(0, 30, 25))
    items = torch.from_numpy(rng.integers(0, 20, 40))
    outputs = []
    for propagation in ("full", "local"):
        torch.manual_seed(3)
        model = LightGCN(train, dim=6, n_layers=layers, propagation=propagation, side=side, alpha=alpha)
        u, i = model.encode(users, items)
        weights = torch.linspace(-1, 1, u.numel()).reshape(u.shape)
        ((u * weights).sum() + (i**2).sum()).backward()
        outputs.append(
            (u.detach(), i.detach(), model.user_embedding.weight.grad, model.item_embedding.weight.grad)
        )
    for full, local in zip(outputs[0], outputs[1], strict=True):
        torch.testing.assert_close(local, full, rtol=1e-5, atol=1e-6)


def test_history_encoder_is_lightgcn_user_side_one_layer() -> None:
    model = build_model("history", _train(), dim=3)
    assert isinstance(model, LightGCN) and (model.side, model.n_layers) == ("user", 1)
    users, items = model.representations()
    u = model.user_embedding.weight.detach()
    i = model.item_embedding.weight.detach()
    r = 1 / 2  # user degree 2 and item degree 2 (item 1), or 1 (items 0, 2): d_u^-1/2 d_i^-1/2
    expected0 = u[0] + i[0] / math.sqrt(2) + i[1] * r
    torch.testing.assert_close(users[0], expected0)
    torch.testing.assert_close(items, i)
    with pytest.raises(ValueError, match="one layer"):
        build_model("history", _train(), n_layers=2)
    with pytest.raises(ValueError, match="side"):
        build_model("mf", _train(), side="user")


def test_ngcf_matches_the_dense_propagation_rule() -> None:
    train = _random_train(5)
    torch.manual_seed(0)
    model = NGCF(train, dim=4, n_layers=2, dropout=0.3)
    with torch.no_grad():
        for layer in (*model.sum_transforms, *model.product_transforms):
            layer.bias.normal_()
    lap = torch.from_numpy(_dense_adjacency(train, "both", (0.5, 0.5))).float()
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    layers, e = [ego], ego
    for w1, w2 in zip(model.sum_transforms, model.product_transforms, strict=True):
        le = lap @ e
        w1_e = (lap + torch.eye(50)) @ e @ w1.weight.detach().T + w1.bias.detach()
        w2_e = (le * e) @ w2.weight.detach().T + w2.bias.detach()
        e = F.leaky_relu(w1_e + w2_e, 0.2)
        layers.append(F.normalize(e, dim=1))
    expected = torch.cat(layers, dim=1)
    users, items = model.representations()  # eval mode: no dropout
    assert users.shape == (30, 12)
    torch.testing.assert_close(torch.cat([users, items]), expected, rtol=1e-5, atol=1e-6)
    model.train()
    first, _ = model()
    second, _ = model()
    assert not torch.equal(first, second)  # message dropout is active in training


def test_build_model_names_every_model() -> None:
    for name, kind in (("lightgcn", LightGCN), ("history", LightGCN), ("ngcf", NGCF)):
        assert isinstance(build_model(name, _train(), n_layers=1), kind)
    with pytest.raises(ValueError, match="one layer"):
        LightGCN(_train(), n_layers=2, side="item")
