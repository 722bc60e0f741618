"""Claim 3 — SSM mines hard negatives: its gradient concentrates on the negatives the model scores highest.

For a training pair (user u, positive p) and the negatives ``N_u`` (every item u has no training
interaction with), the gradient of each loss with respect to the score ``s_n`` of a negative is:

- **SSM** (softmax over ``{p} ∪ N_u`` of ``s/τ``, ``s`` = the run's similarity, cosine by default, ``τ``
  from the run config): ``∂L/∂s_n = w_n / τ`` with
  ``w_n = exp(s_n/τ) / (exp(s_p/τ) + Σ_{m ∈ N_u} exp(s_m/τ))``. This is the full softmax over all
  negatives; the in-batch SSM of training draws its negatives from the same set (popularity-weighted),
  so it is a sample of exactly these terms.
- **BPR** with one negative drawn uniformly from ``N_u``: the triple (u, p, n) has
  ``∂L/∂s_n = σ(s_n − s_p)`` (``s`` = dot product), and n is drawn with probability ``1/|N_u|``, so the
  *expected* gradient on ``s_n`` is ``σ(s_n − s_p)/|N_u|``: every negative is sampled equally often
  and its weight is capped at 1, whatever its score.

What is compared: for each pair, the negatives are sorted by score, highest first, and the **share of
the total negative gradient weight** carried by the top ``q`` fraction of them is
``share(q) = Σ_{n in top ⌈q·|N_u|⌉} w_n / Σ_{n ∈ N_u} w_n`` (constant factors such as ``1/τ`` and
``1/|N_u|`` cancel). The report gives the mean over sampled pairs of ``share(1%)``, ``share(10%)`` and the
whole curve. Uniform weighting gives ``share(q) = q``; the further above, the harder the mining. Each
run is measured with the loss it was trained with, on its own final representations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy.special import expit
from torch import Tensor

from ssmrec.analysis.plotting import new_figure, run_colors

FRACTIONS: tuple[float, ...] = tuple(sorted({*np.round(np.logspace(-4, 0, 33), 10).tolist(), 0.01, 0.1, 0.5}))
"""Fractions of the negatives (highest scored first) at which the cumulative share is recorded."""

PAIR_CHUNK = 256
"""Training pairs scored at once: ``PAIR_CHUNK × n_items`` scores (42 MB of float32 on Gowalla)."""


def sample_training_pairs(
    train: sp.csr_matrix, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (user, item) training pairs drawn uniformly without replacement (all of them if fewer).

    Uniform over interactions, as the training loop visits them, so active users weigh more.
    """
    train = sp.csr_matrix(train)
    total = int(train.nnz)
    chosen = np.sort(rng.choice(total, size=min(n, total), replace=False)) if total else np.array([], int)
    users = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr))[chosen]
    return users, train.indices[chosen].astype(np.int64)


def negative_weight_shares(
    scores: np.ndarray,
    positive: np.ndarray,
    negative: np.ndarray | None,
    loss: str,
    temperature: float = 1.0,
    fractions: Sequence[float] = FRACTIONS,
) -> np.ndarray:
    """Per pair, the share of negative gradient weight carried by the top ``q`` of negatives, per ``q``.

    ``scores`` is ``(P, n)`` similarities of each pair's user to every candidate item, ``positive``
    ``(P,)`` the positive's score, ``negative`` a ``(P, n)`` bool mask of the pair's negatives
    (``None``: every column is a negative). ``loss`` is ``"ssm"`` (weights ``exp(s/τ)``) or ``"bpr"``
    (weights ``σ(s − s_p)``). Returns ``(P, len(fractions))``; a pair without negatives gives NaN.
    """
    if loss not in ("ssm", "bpr"):
        raise ValueError(f"loss must be 'ssm' or 'bpr', got {loss!r}")
    s = np.asarray(scores)
    if negative is not None:
        s = np.where(negative, s, -np.inf)
    n_negative = np.isfinite(s).sum(axis=1) if negative is not None else np.full(len(s), s.shape[1])
    descending = np.sort(s, axis=1)[:, ::-1].astype(np.float64)  # sorted in the input precision; -inf last
    if loss == "ssm":
        top = descending[:, :1]
        weights = np.exp((descending - np.where(np.isfinite(top), top, 0.0)) / temperature)
    else:
        weights = expit(descending - np.asarray(positive, dtype=np.float64)[:, None])
    weights = np.where(np.isfinite(descending), weights, 0.0)
    cumulative = np.cumsum(weights, axis=1)
    q = np.asarray(fractions, dtype=np.float64)
    counts = np.clip(np.ceil(q[None, :] * n_negative[:, None] - 1e-9).astype(np.int64), 1, None)
    rows = np.arange(len(s))[:, None]
    last = np.clip(n_negative - 1, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = (
            cumulative[rows, np.minimum(counts, s.shape[1]) - 1]
            / cumulative[np.arange(len(s)), last][:, None]
        )
    shares[n_negative == 0] = np.nan
    return shares


@dataclass(frozen=True)
class HardnessResult:
    """Mean share of negative gradient weight on the top fractions of negatives, for one run."""

    loss: str
    weighting: str
    """The weight formula used, in words (e.g. ``softmax of cosine/τ, τ=0.12``)."""
    pairs: int
    mean_negatives: float
    fractions: np.ndarray
    mean_share: np.ndarray
    """Mean over pairs of ``share(q)`` for each fraction ``q`` in ``fractions``."""

    def share_at(self, q: float) -> float:
        index = int(np.argmin(np.abs(self.fractions - q)))
        return float(self.mean_share[index])


def hardness_analysis(
    users: Tensor,
    items: Tensor,
    train: sp.csr_matrix,
    pair_users: np.ndarray,
    pair_items: np.ndarray,
    loss: str,
    similarity: str = "cosine",
    temperature: float = 0.1,
    fractions: Sequence[float] = FRACTIONS,
    chunk: int = PAIR_CHUNK,
) -> HardnessResult:
    """:func:`negative_weight_shares` over sampled training pairs, with all of each user's negatives.

    SSM scores with ``similarity`` and ``temperature`` (the run's); BPR scores by dot product.
    """
    if loss == "ssm" and similarity == "cosine":
        u, i = F.normalize(users.float(), dim=1), F.normalize(items.float(), dim=1)
        weighting = f"softmax of cosine/τ, τ={temperature:g}"
    elif loss == "ssm":
        u, i = users.float(), items.float()
        weighting = f"softmax of dot/τ, τ={temperature:g}"
    elif loss == "bpr":
        u, i = users.float(), items.float()
        weighting = "σ(s_n − s_p), dot, uniform sampling"
    else:
        raise ValueError(f"no hard-negative analysis for loss {loss!r}")
    train = sp.csr_matrix(train)
    parts, n_negatives = [], []
    with torch.no_grad():
        for start in range(0, len(pair_users), chunk):
            rows = pair_users[start : start + chunk]
            positives = pair_items[start : start + chunk]
            scores = (u[torch.from_numpy(rows)] @ i.T).numpy()
            seen = train[rows]
            negative = np.ones(scores.shape, dtype=bool)
            negative[np.repeat(np.arange(len(rows)), np.diff(seen.indptr)), seen.indices] = False
            n_negatives.append(negative.sum(axis=1))
            positive_score = scores[np.arange(len(rows)), positives]
            parts.append(
                negative_weight_shares(scores, positive_score, negative, loss, temperature, fractions)
            )
    shares = np.concatenate(parts) if parts else np.empty((0, len(fractions)))
    return HardnessResult(
        loss=loss,
        weighting=weighting,
        pairs=len(pair_users),
        mean_negatives=float(np.concatenate(n_negatives).mean()) if n_negatives else float("nan"),
        fractions=np.asarray(fractions, dtype=np.float64),
        mean_share=np.nanmean(shares, axis=0) if len(shares) else np.full(len(fractions), np.nan),
    )


def plot_hardness(labels: Sequence[str], results: Sequence[HardnessResult]) -> Figure:
    """Cumulative share of negative gradient weight against the fraction of top-scored negatives."""
    figure = new_figure(7.5, 5)
    axis = figure.subplots()
    for label, result, color in zip(labels, results, run_colors(len(results)), strict=True):
        axis.plot(
            result.fractions, result.mean_share, "-", color=color, label=f"{label} ({result.weighting})"
        )
    grid = np.logspace(-4, 0, 50)
    axis.plot(grid, grid, "--", color="gray", label="uniform weight (share = fraction)")
    for q in (0.01, 0.1):
        axis.axvline(q, color="lightgray", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("fraction of negatives, highest score first (log scale)")
    axis.set_ylabel("cumulative share of negative gradient weight")
    axis.set_title("Where the gradient on negatives goes (mean over sampled training pairs)")
    axis.legend(fontsize="small", loc="upper left")
    axis.grid(alpha=0.3)
    return figure
