"""Claim 2 — representation magnitude: cosine SSM cannot learn norms, graph propagation supplies them.

The paper's explanation of why MF+SSM underperforms while LightGCN+SSM does not (Wu et al., TOIS 2024,
Section 5): the cosine similarity inside SSM is blind to ``‖e‖``, so a model whose final
representation is a free embedding (MF) ends up with norms unrelated to how much a node was seen,
whereas LightGCN's propagation ``Â E`` with ``Â = D^{-1/2} A D^{-1/2}`` makes the norm of a node's final
representation grow with its degree. Ranking by the dot product then favours well-connected items.

Measured on the final representations (``model.representations()``: the ego embedding for MF, the
layer mean for LightGCN), against training degree (``item_popularity`` / ``user_activity``):

- **Spearman correlation** ``ρ = corr(rank(norm), rank(degree))`` (Pearson correlation of average
  ranks, ties sharing their mean rank), over all items and over all users. ``ρ > 0``: popular nodes
  have longer vectors.
- **Elasticity** ``β``: the least-squares slope of ``log ‖e‖`` on ``log degree`` over nodes with
  degree ≥ 1, ``β = cov(log d, log ‖e‖) / var(log d)``: by how much the norm grows, in relative terms, per
  relative growth of the degree (``‖e‖ ∝ d^β``). Spearman's ρ only says *whether* norms rise with degree,
  and rises monotonically even when the effect is tiny; β says *how much*, which is what the
  magnitude argument is about (a norm that grows 10 % over three decades of degree cannot carry
  popularity, one that quadruples can).
- **Binned means**: degrees in power-of-two bins ``[1, 2), [2, 4), [4, 8), …`` (degree 0 on its own),
  the mean norm per bin, and that mean relative to the mean over all nodes (so runs with different
  overall scales compare).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from scipy.stats import rankdata
from torch import Tensor

from ssmrec.analysis.plotting import new_figure, run_colors


def norms(representations: Tensor) -> np.ndarray:
    """L2 norm of every row, float64."""
    return representations.detach().to("cpu").double().norm(dim=1).numpy()


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ with average ranks for ties; NaN when either side is constant or has < 2 values."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be vectors of the same length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def elasticity(degree: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of ``log values`` on ``log degree`` over degree ≥ 1 (NaN if degree is constant)."""
    degree = np.asarray(degree, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    keep = (degree >= 1) & (values > 0)
    if keep.sum() < 2:
        return float("nan")
    x, y = np.log(degree[keep]), np.log(values[keep])
    x = x - x.mean()
    variance = float((x * x).sum())
    return float((x * (y - y.mean())).sum() / variance) if variance > 0 else float("nan")


@dataclass(frozen=True)
class DegreeBins:
    """Mean norm per degree bin ``[lo, hi)``; bins without nodes are left out."""

    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray
    mean_degree: np.ndarray
    mean_norm: np.ndarray
    relative: np.ndarray
    """``mean_norm`` divided by the mean norm over all nodes."""


def degree_bin(degree: np.ndarray) -> np.ndarray:
    """Bin index of every degree: 0 for degree 0, ``b ≥ 1`` for ``2^(b−1) ≤ degree < 2^b``."""
    degree = np.asarray(degree, dtype=np.int64)
    out = np.zeros(len(degree), dtype=np.int64)
    positive = degree > 0
    out[positive] = np.floor(np.log2(degree[positive])).astype(np.int64) + 1
    return out


def binned_means(degree: np.ndarray, values: np.ndarray) -> DegreeBins:
    """Mean of ``values`` per power-of-two degree bin (see :func:`degree_bin`)."""
    bins = degree_bin(degree)
    values = np.asarray(values, dtype=np.float64)
    count = np.bincount(bins)
    total = np.bincount(bins, weights=values)
    degree_total = np.bincount(bins, weights=np.asarray(degree, dtype=np.float64))
    present = np.flatnonzero(count > 0)
    mean = total[present] / count[present]
    lo = np.where(present == 0, 0, 2 ** np.maximum(present - 1, 0))
    hi = np.where(present == 0, 1, 2**present)
    overall = values.mean() if len(values) else float("nan")
    relative = mean / overall if overall else mean * np.nan
    return DegreeBins(lo, hi, count[present], degree_total[present] / count[present], mean, relative)


@dataclass(frozen=True)
class MagnitudeResult:
    """Norm–degree relation of one run's final representations."""

    item_spearman: float
    user_spearman: float
    item_elasticity: float
    user_elasticity: float
    item_bins: DegreeBins
    user_bins: DegreeBins
    item_mean_norm: float
    user_mean_norm: float
    item_norms: np.ndarray
    user_norms: np.ndarray
    item_degree: np.ndarray
    user_degree: np.ndarray


def magnitude_analysis(
    users: Tensor, items: Tensor, user_degree: np.ndarray, item_degree: np.ndarray
) -> MagnitudeResult:
    """Spearman ρ, elasticity and binned means of norm against degree, for items and for users."""
    item_norm, user_norm = norms(items), norms(users)
    return MagnitudeResult(
        item_spearman=spearman(item_norm, item_degree),
        user_spearman=spearman(user_norm, user_degree),
        item_elasticity=elasticity(item_degree, item_norm),
        user_elasticity=elasticity(user_degree, user_norm),
        item_bins=binned_means(item_degree, item_norm),
        user_bins=binned_means(user_degree, user_norm),
        item_mean_norm=float(item_norm.mean()),
        user_mean_norm=float(user_norm.mean()),
        item_norms=item_norm,
        user_norms=user_norm,
        item_degree=np.asarray(item_degree),
        user_degree=np.asarray(user_degree),
    )


SCATTER_POINTS = 4000
"""Nodes drawn per scatter panel (a seeded random subset; the statistics use every node)."""


def plot_magnitude(labels: Sequence[str], results: Sequence[MagnitudeResult], seed: int = 0) -> Figure:
    """Norm against training degree (log scale): items and users, one row per run, with binned means."""
    figure = new_figure(11, 3.3 * max(1, len(results)))
    axes = figure.subplots(max(1, len(results)), 2, squeeze=False)
    rng = np.random.default_rng(seed)
    for row, (label, result, color) in enumerate(zip(labels, results, run_colors(len(results)), strict=True)):
        panels = (
            ("items", result.item_degree, result.item_norms, result.item_bins, result.item_spearman),
            ("users", result.user_degree, result.user_norms, result.user_bins, result.user_spearman),
        )
        for column, (kind, degree, values, bins, rho) in enumerate(panels):
            axis = axes[row, column]
            shown = np.flatnonzero(degree > 0)
            if len(shown) > SCATTER_POINTS:
                shown = rng.choice(shown, SCATTER_POINTS, replace=False)
            axis.scatter(degree[shown], values[shown], s=4, alpha=0.25, color=color, label=f"{kind} (sample)")
            keep = bins.lo > 0
            axis.plot(
                bins.mean_degree[keep], bins.mean_norm[keep], "o-", color="black", label="mean per degree bin"
            )
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.set_title(f"{label}: {kind}, Spearman ρ = {rho:.3f}", fontsize="medium")
            axis.set_xlabel(f"{kind[:-1]} degree (training interactions, log scale)")
            axis.set_ylabel("norm of final representation")
            axis.legend(fontsize="small")
            axis.grid(alpha=0.3)
    return figure
