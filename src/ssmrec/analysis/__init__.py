"""Check the SSM paper's claims on trained runs: popularity bias, magnitudes, hard negatives, the bound.

One module per claim (``popularity``, ``magnitude``, ``hardness``, ``bound``, ``curves``), each with its
metrics (formulas in the module docstrings) and its figure; ``report`` assembles them for
``ssmrec analyze`` (Markdown + PNG) and ``ssmrec compare`` (terminal tables); ``runs`` opens run
directories. Only what a run directory holds is read, plus the dataset: nothing is retrained.
"""

from ssmrec.analysis.report import (
    Analysis,
    RunAnalysis,
    analyze_runs,
    default_output,
    markdown_report,
    text_report,
    write_report,
)
from ssmrec.analysis.runs import AnalyzedRun, open_runs

__all__ = [
    "Analysis",
    "AnalyzedRun",
    "RunAnalysis",
    "analyze_runs",
    "default_output",
    "markdown_report",
    "open_runs",
    "text_report",
    "write_report",
]
