"""Training curves: loss, Recall@20 and NDCG@20 per evaluated epoch, read from ``metrics.jsonl``.

Nothing is recomputed: the values are what the run logged at each evaluation (the loss is the mean
training batch loss of that epoch, regulariser included; the metrics are on the run's selection
split, ``valid`` or, under the paper protocol, ``test``). SSM's summed loss and BPR's mean loss live on
different scales, so the loss panel uses a log axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ssmrec.analysis.plotting import new_figure, run_colors

CURVE_METRICS = ("recall@20", "ndcg@20")


@dataclass(frozen=True)
class TrainingCurve:
    """One run's logged evaluations."""

    epochs: np.ndarray
    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    split: str

    @property
    def evaluations(self) -> int:
        return len(self.epochs)

    def best(self, metric: str) -> tuple[int, float]:
        """Epoch and value of the highest logged ``metric`` (first of equal values); ``(0, nan)`` if none."""
        values = self.metrics.get(metric)
        if values is None or not len(values) or np.isnan(values).all():
            return 0, float("nan")
        index = int(np.nanargmax(values))
        return int(self.epochs[index]), float(values[index])


def training_curve(history: list[dict[str, Any]], metrics: Sequence[str] = CURVE_METRICS) -> TrainingCurve:
    """The logged curve of a run; a metric missing from a record is NaN there."""
    epochs = np.array([r.get("epoch", n + 1) for n, r in enumerate(history)], dtype=np.int64)
    loss = np.array([r.get("loss", np.nan) for r in history], dtype=np.float64)
    values = {m: np.array([r.get(m, np.nan) for r in history], dtype=np.float64) for m in metrics}
    split = ",".join(sorted({str(r.get("split", "?")) for r in history})) or "-"
    return TrainingCurve(epochs, loss, values, split)


def plot_curves(labels: Sequence[str], curves: Sequence[TrainingCurve]) -> Figure:
    """Loss, Recall@20 and NDCG@20 against epoch: one panel each, one line per run."""
    figure = new_figure(14, 4.2)
    axes = figure.subplots(1, 1 + len(CURVE_METRICS))
    for label, curve, color in zip(labels, curves, run_colors(len(curves)), strict=True):
        axes[0].plot(curve.epochs, curve.loss, "-", color=color, label=label)
        for axis, metric in zip(axes[1:], CURVE_METRICS, strict=True):
            axis.plot(curve.epochs, curve.metrics[metric], "-", color=color, label=f"{label} ({curve.split})")
    axes[0].set_title("Training loss per epoch")
    axes[0].set_ylabel("mean batch loss (log scale)")
    logged = [c.loss[np.isfinite(c.loss)] for c in curves]
    if any(len(v) for v in logged) and all((v > 0).all() for v in logged):
        axes[0].set_yscale("log")
    for axis, metric in zip(axes[1:], CURVE_METRICS, strict=True):
        axis.set_title(f"{metric} per evaluation")
        axis.set_ylabel(metric)
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    return figure
