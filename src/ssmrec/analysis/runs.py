"""Open the run directories an analysis compares, and check that they can be compared at all.

An analysis reads only what a run directory holds (config, data fingerprint, metrics, best weights)
plus the dataset; it never retrains. Runs compared together must have seen the same dataset files:
their ``data.json`` source hashes must be equal, otherwise popularity groups, degrees and test items
would not mean the same thing across runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssmrec.config import TrainConfig
from ssmrec.data import Interactions
from ssmrec.defaults import SOFTMAX_FAMILY
from ssmrec.errors import SsmrecError
from ssmrec.experiment import load_run
from ssmrec.models import Recommender
from ssmrec.rundir import CONFIG, DATA, FINAL, WEIGHTS, RunDir


@dataclass
class AnalyzedRun:
    """One run directory, loaded back: config, data, model, final representations and its metrics log."""

    path: Path
    label: str
    config: TrainConfig
    data: Interactions
    model: Recommender
    users: Tensor
    """Final user representations (``model.representations()``), ``(n_users, d)``."""
    items: Tensor
    """Final item representations, ``(n_items, d)``."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """``metrics.jsonl``: one record per evaluation during training."""
    final: dict[str, Any] = field(default_factory=dict)
    """``final_metrics.json`` (empty when the run has none)."""

    @property
    def description(self) -> str:
        """Model and loss in a few words, e.g. ``LightGCN-1 + SSM (cosine, τ=0.12)``."""
        spec = self.config.model
        names = {"mf": "MF", "lightgcn": f"LightGCN-{spec.layers}"}
        model = names.get(spec.name, f"{spec.name.upper()}-{spec.layers}")
        scoring = softmax_scoring(self)
        loss = LOSS_LABELS.get(self.config.loss.name, self.config.loss.name.upper())
        if scoring is not None:
            loss = f"{loss} ({scoring[0]}, τ={scoring[1]:g})"
        return f"{model} + {loss}"


LOSS_LABELS = {"ssm": "SSM", "softmax": "softmax", "bsl": "BSL", "adap-tau": "Adap-τ"}


def softmax_scoring(run: AnalyzedRun) -> tuple[str, float] | None:
    """(similarity, τ) the run's softmax loss scored with, or ``None`` for a loss that is not a softmax.

    A run records what its objective ended with (``final_metrics.json``'s ``scoring``: a learned τ, the
    mean of Adap-τ's per-user temperatures, BSL's negatives' τ); older runs fall back to the config.
    """
    recorded = run.final.get("scoring")
    if recorded:
        return str(recorded["similarity"]), float(recorded["temperature"])
    loss = run.config.loss
    if loss.name in SOFTMAX_FAMILY and loss.similarity is not None and loss.temperature is not None:
        return loss.similarity, loss.temperature
    return None


def _labels(paths: list[Path]) -> list[str]:
    """Directory names, prefixed with the parent folder where two runs share a name."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def check_same_dataset(paths: list[Path]) -> None:
    """Refuse to compare runs whose ``data.json`` source hashes differ (clear message naming both)."""
    first_source: dict[str, str] | None = None
    for path in paths:
        data_json = path / DATA
        if not data_json.is_file():
            raise SsmrecError(f"{path}: not a complete run directory ({DATA} is missing)")
        recorded = json.loads(data_json.read_text())
        source = recorded.get("source")
        if first_source is None:
            first_source = source
            continue
        if source != first_source:
            raise SsmrecError(
                f"runs do not share a dataset: {paths[0]} saw {recorded_name(paths[0])} "
                f"and {path} saw {recorded_name(path)} (data.json source hashes differ); "
                "compare runs trained on the same data files"
            )


def recorded_name(path: Path) -> str:
    """The dataset name and source files a run recorded, for error messages."""
    recorded = json.loads((path / DATA).read_text())
    files = ", ".join(f"{name} {digest[:12]}" for name, digest in sorted(recorded.get("source", {}).items()))
    return f"{recorded.get('name', '?')!r} ({files})"


def open_runs(paths: list[str | Path], device: torch.device | None = None) -> list[AnalyzedRun]:
    """Load every run directory in ``paths`` for analysis; the dataset is loaded once per distinct split.

    ``device`` computes the final representations (the propagation); the analyses read them on the CPU.

    Raises :class:`SsmrecError` for an incomplete run directory or runs on different datasets.
    """
    if not paths:
        raise SsmrecError("no run directories given")
    resolved = [Path(p) for p in paths]
    for path in resolved:
        for needed in (CONFIG, DATA, WEIGHTS):
            if not (path / needed).is_file():
                raise SsmrecError(f"{path}: not a complete run directory ({needed} is missing)")
    if len({p.resolve() for p in resolved}) != len(resolved):
        raise SsmrecError("the same run directory is given twice")
    check_same_dataset(resolved)
    loaded: dict[str, Interactions] = {}  # by data fingerprint: same files and same split options
    runs = []
    for path, label in zip(resolved, _labels(resolved), strict=True):
        fingerprint = json.dumps(json.loads((path / DATA).read_text()).get("options", {}), sort_keys=True)
        config, data, model = load_run(path, loaded.get(fingerprint), device=device)
        loaded.setdefault(fingerprint, data)
        users, items = (tensor.cpu() for tensor in model.representations())
        model = model.cpu()
        run = RunDir(path)
        final = run.read_json(FINAL) if (path / FINAL).is_file() else {}
        runs.append(AnalyzedRun(path, label, config, data, model, users, items, run.read_metrics(), final))
    return runs
