"""Matplotlib without pyplot: figures drawn on the non-interactive Agg canvas and returned as PNG bytes.

Using :class:`matplotlib.figure.Figure` with an explicit :class:`FigureCanvasAgg` never touches the
global backend or opens a window, so the analysis works on headless machines and inside programs
that use matplotlib interactively themselves.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` × ``height`` inches on an Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure rendered as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def run_colors(n: int) -> list[str]:
    """One distinguishable colour per run (matplotlib's default cycle, repeated past ten runs)."""
    cycle = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    return [cycle[i % len(cycle)] for i in range(n)]
