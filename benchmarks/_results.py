"""Where every benchmark script writes what it measured: ``results/<name>.json`` and ``<name>.md``.

Both files are written atomically, so an interrupted benchmark never leaves a half-written result next to
the numbers the README quotes. The Markdown is also printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssmrec.rundir import atomic_write_bytes

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, report: dict[str, Any], markdown: str) -> None:
    """Print ``markdown`` and write it with ``report`` (as JSON) under ``benchmarks/results/``."""
    print(markdown)
    RESULTS.mkdir(exist_ok=True)
    atomic_write_bytes(RESULTS / f"{name}.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write_bytes(RESULTS / f"{name}.md", markdown.encode())
