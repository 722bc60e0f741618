"""Tiny trained runs for the serving tests, trained once per test process (a second or two each).

Not a ``conftest.py``: the suite's tests import helpers with ``from conftest import ...``, and a second
conftest module of that name would shadow the top-level one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_RUNS: dict[str, Path] = {}

RUNS: dict[str, dict[str, Any]] = {
    # LightGCN-2L + SSM (trained with cosine, ranks by dot), standard protocol: seen = train + valid
    "lightgcn": {"model": "lightgcn", "layers": 2},
    # MF + BPR ranked by cosine, paper protocol (no validation split)
    "mf": {"model": "mf", "loss": "bpr", "rank_by": "cosine", "protocol": "paper"},
}


def write_planted(folder: Path, n_users: int = 40, seed: int = 0) -> Path:
    """A LightGCN split folder: user u likes cluster ``u % 4`` of 12 items (6 train, 2 test items)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    train, test = [], []
    for user in range(n_users):
        chosen = (user % 4) * 12 + rng.choice(12, 8, replace=False)
        train.append(f"{user} " + " ".join(map(str, sorted(chosen[:6]))))
        test.append(f"{user} " + " ".join(map(str, sorted(chosen[6:]))))
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")
    return folder


def trained_run(kind: str, base: Path) -> Path:
    """The run ``kind`` of :data:`RUNS`, trained on first use under ``base``."""
    if kind not in _RUNS:
        from ssmrec.config import resolve_config
        from ssmrec.experiment import train

        folder = base / f"run-{kind}"
        data = write_planted(folder / "data")
        values = {
            "data": {"path": str(data)},
            "epochs": 2,
            "batch_size": 64,
            "progress": False,
            "output": str(folder / "run"),
            "seed": 3,
            **RUNS[kind],
        }
        _RUNS[kind] = train(resolve_config(flag_values=values)).run_dir
    return _RUNS[kind]
