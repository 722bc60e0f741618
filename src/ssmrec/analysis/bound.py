"""Claim 4 — the softmax loss bounds the ranking metric: minimising it pushes DCG up.

The paper (Wu et al., TOIS 2024, its "maximizing the ranking metric" property, following Bruch et al.,
ICTIR 2019) argues that the softmax loss over all items is an upper bound of ``−log DCG``, so lowering
the loss raises DCG. The inequality checked here, for a user u with held-out items ``T_u`` and scores
``s_j`` (the similarity the loss uses: cosine for cosine SSM, the dot product for dot SSM and BPR),
temperature ``τ`` (the run's for SSM; 1 for BPR, which has none):

- per-pair softmax loss over **all** items ``I``: ``ℓ(u, i) = log Σ_{j ∈ I} exp((s_j − s_i)/τ)``;
  per-user loss ``L_u = (1/|T_u|) Σ_{i ∈ T_u} ℓ(u, i)``;
- full (untruncated) ``DCG_u = Σ_{i ∈ T_u} 1/log2(1 + π(i))`` where ``π(i)`` is i's rank among the items
  u may be recommended (training items excluded, and validation items when testing), ranked by the same
  ``s``, ties to the lower item index.

Derivation: ``π(i) = 1 + #{j ≠ i ranked above i} ≤ Σ_{j ∈ I} exp((s_j − s_i)/τ)`` because every j
ranked above i has ``s_j ≥ s_i`` (a term ``≥ 1``), the j = i term is 1 and all terms are positive; so
``log π(i) ≤ ℓ(u, i)``. With ``log2(1 + x) ≤ x`` for ``x ≥ 1``, ``DCG_u ≥ Σ_i 1/π(i)``, and by the
arithmetic–geometric mean inequality ``Σ_i 1/π(i) ≥ |T_u| exp(−(1/|T_u|) Σ_i log π(i))``. Together:

    −log(DCG_u / |T_u|) ≤ L_u,   hence   −log DCG_u ≤ L_u − log|T_u| ≤ L_u.

For a single held-out item this is the paper's ``−log DCG ≤ L_softmax``. The report counts how often
each form holds and plots ``−log(DCG_u/|T_u|)`` (which is ``−log DCG_u`` for one held-out item) against
``L_u`` with the line ``y = x``: every point must lie on or below it. It is computed for a random
sample of evaluated users, since each needs scores against every item. Across the evaluations of a
training run it also relates the logged training loss to the logged NDCG@20 (Spearman ρ; negative
when lower loss goes with higher NDCG).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from ssmrec.analysis.magnitude import spearman
from ssmrec.analysis.plotting import new_figure, run_colors
from ssmrec.evaluate.ranking import as_csr, chunk_pairs

USER_CHUNK = 256
"""Users scored at once (``USER_CHUNK × n_items`` float32 scores)."""

PAIR_BLOCK = 256
"""Tied held-out pairs compared item by item at once (``PAIR_BLOCK × n_items`` comparisons)."""

TOLERANCE = 1e-9
"""Slack for float64 rounding when checking an inequality."""


def rank_positions(
    rankable: Tensor, rows: Tensor, cols: Tensor, values: Tensor, block: int = PAIR_BLOCK
) -> Tensor:
    """Rank (1-based) of score ``values[p]`` of item ``cols[p]`` in row ``rows[p]`` of ``rankable``.

    ``rank = 1 + #{j ≠ i : s_j > s_i} + #{j < i : s_j = s_i}`` over the row's finite entries (excluded
    items are ``-inf`` there): ties go to the lower item index, as in :func:`ssmrec.evaluate.top_k`.
    Each row is sorted once (numpy's sort) and every pair's count of higher scores is a binary search;
    only pairs tied with another item are then compared item by item.
    """
    n_rows, n_items = rankable.shape
    ordered = torch.from_numpy(np.sort(rankable.numpy(), axis=1))
    counts = torch.bincount(rows, minlength=n_rows)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(rows)) - starts[rows]
    width = int(counts.max()) if len(rows) else 0
    padded = torch.full((n_rows, max(1, width)), torch.inf, dtype=rankable.dtype)
    padded[rows, slot] = values
    right = torch.searchsorted(ordered, padded, right=True)[rows, slot]
    left = torch.searchsorted(ordered, padded, right=False)[rows, slot]
    ranks = 1 + (n_items - right)
    itself = torch.isfinite(rankable[rows, cols]).long()  # an excluded item does not tie with itself
    tied = torch.nonzero(right - left - itself > 0).flatten()
    index = torch.arange(n_items)
    for begin in range(0, len(tied), block):
        pick = tied[begin : begin + block]
        candidates = rankable[rows[pick]]
        ranks[pick] += ((candidates == values[pick, None]) & (index < cols[pick, None])).sum(1)
    return ranks


def softmax_dcg(
    scores: Tensor,
    truth: sp.csr_matrix,
    exclude: Sequence[sp.csr_matrix] = (),
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user ``L_u`` and full ``DCG_u`` for dense ``scores`` ``(users, items)`` (see module docstring).

    ``truth`` and ``exclude`` have the same rows as ``scores``. Returns ``(L_u, DCG_u, |T_u|)`` as float64
    arrays; users without held-out items get NaN.
    """
    n_rows, n_items = scores.shape
    truth = as_csr(truth, (n_rows, n_items), "truth")
    logits = scores.detach().cpu().float() / temperature
    log_normaliser = torch.logsumexp(logits.double(), dim=1)
    rows, cols = chunk_pairs(truth, 0, n_rows, logits.device)
    positive = logits[rows, cols]
    pair_loss = log_normaliser[rows] - positive.double()
    rankable = logits.clone()
    for matrix in exclude:
        ex_rows, ex_cols = chunk_pairs(as_csr(matrix, (n_rows, n_items), "exclude"), 0, n_rows, logits.device)
        rankable[ex_rows, ex_cols] = -torch.inf
    ranks = rank_positions(rankable, rows, cols, positive).double()
    ones = torch.ones(len(rows), dtype=torch.float64)
    count = torch.zeros(n_rows, dtype=torch.float64).index_add_(0, rows, ones)
    loss = torch.zeros(n_rows, dtype=torch.float64).index_add_(0, rows, pair_loss) / count
    dcg = torch.zeros(n_rows, dtype=torch.float64).index_add_(0, rows, 1.0 / torch.log2(1.0 + ranks))
    dcg[count == 0] = torch.nan
    return loss.numpy(), dcg.numpy(), count.numpy()


@dataclass(frozen=True)
class BoundResult:
    """``L_u`` against ``−log DCG_u`` on a sample of users, for one run."""

    scores: str
    """Which scores and temperature the loss uses, in words."""
    users: np.ndarray
    loss: np.ndarray
    neg_log_dcg: np.ndarray
    n_test: np.ndarray

    @property
    def holds(self) -> float:
        """Fraction of users with ``−log DCG_u ≤ L_u``."""
        return float(np.mean(self.neg_log_dcg <= self.loss + TOLERANCE)) if len(self.loss) else float("nan")

    @property
    def holds_tight(self) -> float:
        """Fraction of users with ``−log(DCG_u/|T_u|) ≤ L_u``."""
        if not len(self.loss):
            return float("nan")
        return float(np.mean(self.neg_log_dcg + np.log(self.n_test) <= self.loss + TOLERANCE))

    @property
    def correlation(self) -> float:
        """Spearman ρ between ``L_u`` and ``−log DCG_u`` across the sampled users."""
        return spearman(self.loss, self.neg_log_dcg)


def bound_analysis(
    users_repr: Tensor,
    items_repr: Tensor,
    truth: sp.csr_matrix,
    exclude: Sequence[sp.csr_matrix],
    users: np.ndarray,
    similarity: str,
    temperature: float,
    chunk: int = USER_CHUNK,
) -> BoundResult:
    """:func:`softmax_dcg` for ``users`` (rows of the full ``truth``/``exclude``), in chunks of users."""
    if similarity == "cosine":
        u, i = F.normalize(users_repr.float(), dim=1), F.normalize(items_repr.float(), dim=1)
    elif similarity == "dot":
        u, i = users_repr.float(), items_repr.float()
    else:
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    truth = sp.csr_matrix(truth)
    exclude = [sp.csr_matrix(m) for m in exclude]
    losses, dcgs, counts = [], [], []
    with torch.no_grad():
        for start in range(0, len(users), chunk):
            rows = np.asarray(users[start : start + chunk], dtype=np.int64)
            scores = u[torch.from_numpy(rows)] @ i.T
            loss, dcg, count = softmax_dcg(scores, truth[rows], [m[rows] for m in exclude], temperature)
            losses.append(loss)
            dcgs.append(dcg)
            counts.append(count)
    loss = np.concatenate(losses) if losses else np.empty(0)
    dcg = np.concatenate(dcgs) if dcgs else np.empty(0)
    with np.errstate(divide="ignore"):
        neg_log_dcg = -np.log(dcg)
    return BoundResult(
        scores=f"{similarity}/τ, τ={temperature:g}",
        users=np.asarray(users, dtype=np.int64),
        loss=loss,
        neg_log_dcg=neg_log_dcg,
        n_test=np.concatenate(counts) if counts else np.empty(0),
    )


@dataclass(frozen=True)
class LossMetricRelation:
    """Training loss against a ranking metric across the evaluations logged in ``metrics.jsonl``."""

    metric: str
    split: str
    epochs: np.ndarray
    loss: np.ndarray
    value: np.ndarray
    spearman: float


def loss_metric_relation(history: list[dict[str, Any]], metric: str = "ndcg@20") -> LossMetricRelation:
    """Spearman ρ between the logged epoch loss and ``metric`` over the evaluations of a run.

    The loss is the mean training batch loss of the epoch (regulariser included) and the metric is on
    the split the run selected on (``split`` of the records): the paper's claim predicts ρ < 0.
    """
    records = [r for r in history if "loss" in r and metric in r]
    epochs = np.array([r.get("epoch", n + 1) for n, r in enumerate(records)], dtype=np.int64)
    loss = np.array([r["loss"] for r in records], dtype=np.float64)
    value = np.array([r[metric] for r in records], dtype=np.float64)
    split = ",".join(sorted({str(r.get("split", "?")) for r in records})) or "-"
    rho = spearman(loss, value) if len(records) >= 3 else float("nan")
    return LossMetricRelation(metric, split, epochs, loss, value, rho)


def _grid(n: int) -> tuple[int, int]:
    columns = min(3, max(1, n))
    return -(-max(1, n) // columns), columns


def plot_bound(labels: Sequence[str], results: Sequence[BoundResult]) -> Figure:
    """Per-user ``−log(DCG_u/|T_u|)`` against ``L_u``, one panel per run, with the bound line ``y = x``.

    The per-item form is plotted because with several held-out items ``DCG_u > 1`` and ``−log DCG_u < 0``
    would sit far below the line for a trivial reason; for one held-out item both forms coincide.
    """
    rows, columns = _grid(len(results))
    figure = new_figure(4.6 * columns, 4.2 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, label, result, color in zip(axes, labels, results, run_colors(len(results)), strict=False):
        per_item = result.neg_log_dcg + np.log(np.maximum(result.n_test, 1))
        finite = np.isfinite(per_item) & np.isfinite(result.loss)
        x, y = result.loss[finite], per_item[finite]
        axis.scatter(x, y, s=5, alpha=0.3, color=color, label=f"users (n={len(x)})")
        if len(x):
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            axis.plot([lo, hi], [lo, hi], "--", color="black", label="bound: y = x")
        axis.set_title(
            f"{label}\nbound holds for {100 * result.holds_tight:.1f}% of users", fontsize="medium"
        )
        axis.set_xlabel(f"per-user softmax loss L_u ({result.scores})")
        axis.set_ylabel("−log(DCG_u / |T_u|), full ranking")
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    for axis in axes[len(results) :]:
        axis.set_visible(False)
    return figure


def plot_loss_metric(labels: Sequence[str], relations: Sequence[LossMetricRelation]) -> Figure:
    """Logged NDCG@20 against logged training loss across evaluations, one panel per run."""
    rows, columns = _grid(len(relations))
    figure = new_figure(4.6 * columns, 4.2 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, label, relation in zip(axes, labels, relations, strict=False):
        points = axis.scatter(relation.loss, relation.value, c=relation.epochs, cmap="viridis", s=18)
        axis.plot(relation.loss, relation.value, "-", color="lightgray", linewidth=0.8, zorder=0)
        if len(relation.epochs):
            figure.colorbar(points, ax=axis, label="epoch")
        axis.set_title(f"{label}\nSpearman ρ = {relation.spearman:.3f}", fontsize="medium")
        axis.set_xlabel("training loss of the epoch (logged)")
        axis.set_ylabel(f"{relation.metric} on {relation.split} (logged)")
        axis.grid(alpha=0.3)
    for axis in axes[len(relations) :]:
        axis.set_visible(False)
    return figure
