"""Assemble the per-claim analyses of several runs into tables, figures and a Markdown report.

:func:`analyze_runs` computes everything (no figures), :func:`text_report` renders the tables for a
terminal (``ssmrec compare``) and :func:`write_report` writes ``report.md``, one PNG per figure and
``summary.json`` into a folder (``ssmrec analyze``). The folder is first written under a temporary
name beside its destination and renamed at the end, so a crash leaves no half-written report.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmrec import __version__
from ssmrec.analysis.bound import (
    BoundResult,
    LossMetricRelation,
    bound_analysis,
    loss_metric_relation,
    plot_bound,
    plot_loss_metric,
)
from ssmrec.analysis.curves import TrainingCurve, plot_curves, training_curve
from ssmrec.analysis.hardness import HardnessResult, hardness_analysis, plot_hardness, sample_training_pairs
from ssmrec.analysis.magnitude import DegreeBins, MagnitudeResult, magnitude_analysis, plot_magnitude
from ssmrec.analysis.plotting import png_bytes
from ssmrec.analysis.popularity import (
    N_GROUPS,
    GroupSummary,
    PopularityResult,
    equal_mass_groups,
    evaluated_users,
    plot_groups,
    popularity_metrics,
    recommend,
    summarize_groups,
)
from ssmrec.analysis.runs import AnalyzedRun, open_runs, softmax_scoring
from ssmrec.errors import SsmrecError
from ssmrec.experiment import exclusions
from ssmrec.rundir import atomic_write_bytes

K = 20
"""Cut-off of the popularity metrics (the paper reports @20)."""

DEFAULT_SAMPLE = 2000
"""Default number of sampled users (bound) and training pairs (hard negatives)."""

FIGURES = {
    "popularity": "popularity_groups.png",
    "magnitude": "magnitude.png",
    "hardness": "hard_negatives.png",
    "bound": "bound.png",
    "loss_metric": "loss_vs_ndcg.png",
    "curves": "training_curves.png",
}
"""Figure files of a report, by section."""


# ---------------------------------------------------------------------------------------- computing


@dataclass
class RunAnalysis:
    """Every measurement of one run."""

    label: str
    path: Path
    description: str
    config: dict[str, Any]
    popularity: PopularityResult
    magnitude: MagnitudeResult
    hardness: HardnessResult | None
    bound: BoundResult
    relation: LossMetricRelation
    curve: TrainingCurve
    best_epoch: int | None
    seconds: float


@dataclass
class Analysis:
    """The analyses of several runs on one dataset, with what was sampled and evaluated."""

    runs: list[RunAnalysis]
    dataset: str
    counts: dict[str, Any]
    split: str
    k: int
    groups: GroupSummary
    sample_users: int
    sample_pairs: int
    seed: int
    notes: list[str] = field(default_factory=list)


def _bound_scores(run: AnalyzedRun) -> tuple[str, float]:
    """Similarity and temperature of the softmax loss for the bound: the run's own for every softmax
    loss (SSM, full softmax, BSL, Adap-τ; see :func:`ssmrec.analysis.runs.softmax_scoring`), dot/1 else."""
    scoring = softmax_scoring(run)
    return scoring if scoring is not None else ("dot", 1.0)


def analyze_run(
    run: AnalyzedRun,
    split: str = "test",
    k: int = K,
    sample_users: int = DEFAULT_SAMPLE,
    seed: int = 0,
) -> RunAnalysis:
    """All five analyses of one loaded run on ``split`` (samples drawn from ``seed``: equal across runs)."""
    started = time.perf_counter()
    data = run.data
    truth = data.test if split == "test" else data.valid
    if truth is None:
        raise SsmrecError(f"{run.path}: the data has no {split} split")
    users = evaluated_users(truth)
    exclude = exclusions(data, split)
    groups = equal_mass_groups(data.item_popularity)
    top = recommend(run.users, run.items, users, k, exclude, run.config.evaluation.rank_by)
    popularity = popularity_metrics(top, truth[users], data.item_popularity, groups)
    magnitude = magnitude_analysis(run.users, run.items, data.user_activity, data.item_popularity)
    hardness = None
    scoring = softmax_scoring(run)
    if scoring is not None or run.config.loss.name == "bpr":
        similarity, temperature = scoring or ("dot", 1.0)
        pair_rng = np.random.default_rng([seed, 0])
        pair_users, pair_items = sample_training_pairs(data.train, sample_users, pair_rng)
        hardness = hardness_analysis(
            run.users,
            run.items,
            data.train,
            pair_users,
            pair_items,
            "ssm" if scoring is not None else "bpr",
            similarity,
            temperature,
        )
    rng = np.random.default_rng([seed, 1])
    sampled = np.sort(rng.choice(users, size=min(sample_users, len(users)), replace=False))
    similarity, temperature = _bound_scores(run)
    bound = bound_analysis(run.users, run.items, truth, exclude, sampled, similarity, temperature)
    best = run.final.get("best_epoch")
    return RunAnalysis(
        label=run.label,
        path=run.path,
        description=run.description,
        config=run.config.to_dict(),
        popularity=popularity,
        magnitude=magnitude,
        hardness=hardness,
        bound=bound,
        relation=loss_metric_relation(run.history, "ndcg@20"),
        curve=training_curve(run.history),
        best_epoch=int(best) if best is not None else None,
        seconds=time.perf_counter() - started,
    )


def analyze_runs(
    paths: Sequence[str | Path],
    sample_users: int = DEFAULT_SAMPLE,
    seed: int = 0,
    split: str = "test",
    k: int = K,
    progress: Callable[[str], None] | None = None,
    device: torch.device | None = None,
) -> Analysis:
    """Open and analyse every run directory in ``paths`` (they must share a dataset); ``device``
    encodes them (see :func:`ssmrec.analysis.runs.open_runs`)."""
    if sample_users < 1:
        raise SsmrecError(f"--sample-users must be >= 1, got {sample_users}")
    if split not in ("test", "valid"):
        raise SsmrecError(f"unknown split {split!r}; choose test or valid")
    runs = open_runs(list(paths), device)
    results = []
    for run in runs:
        if progress:
            progress(f"analysing {run.label} ...")
        results.append(analyze_run(run, split, k, sample_users, seed))
        if progress:
            progress(f"  done in {results[-1].seconds:.1f} s")
    first = runs[0].data
    truth = first.test if split == "test" else first.valid
    assert truth is not None  # analyze_run raised otherwise
    notes = []
    fingerprints = {json.dumps(run.data.options, sort_keys=True, default=str) for run in runs}
    if len(fingerprints) > 1:
        notes.append(
            "the runs share the data files but not the split options (e.g. a validation split carved "
            "from train by one protocol and not the other), so their training matrices differ slightly; "
            "each run's popularity groups and degrees come from its own training split, the group "
            f"table below from {runs[0].label}'s"
        )
    protocols = {run.config.protocol for run in runs}
    if split == "test" and "paper" in protocols:
        notes.append(
            "runs under the paper protocol chose their best epoch on this same test split, as the paper "
            "does: their test numbers are optimistic"
        )
    return Analysis(
        runs=results,
        dataset=first.name,
        counts=first.counts(),
        split=split,
        k=k,
        groups=summarize_groups(first.item_popularity, equal_mass_groups(first.item_popularity), truth),
        sample_users=sample_users,
        sample_pairs=sample_users,
        seed=seed,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------- tables


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant decimals, ``–`` for missing or NaN."""
    if value is None:
        return "–"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    number = float(value)
    if math.isnan(number):
        return "–"
    if number != 0 and (abs(number) >= 1e5 or abs(number) < 10 ** -(digits - 1)):
        return f"{number:.{max(1, digits - 2)}e}"
    return f"{number:.{digits}f}"


def pct(value: float, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}%"


@dataclass
class Table:
    """A titled table rendered as Markdown (reports) or aligned text (terminal)."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        escape = [h.replace("|", "\\|") for h in self.headers]
        lines = ["| " + " | ".join(escape) + " |", "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def text(self) -> str:
        widths = [max(len(str(c)) for c in column) for column in zip(self.headers, *self.rows, strict=True)]
        line = "  ".join("-" * w for w in widths)
        body = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in self.rows]
        header = "  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True))
        return "\n".join([self.title, line, header, line, *body, line])


def _group_headers(n: int = N_GROUPS) -> list[str]:
    return [f"G{g}" + (" (tail)" if g == 1 else " (head)" if g == n else "") for g in range(1, n + 1)]


def tables(analysis: Analysis) -> list[Table]:
    """Every table of the report, in report order (``key`` says which section it belongs to)."""
    runs, k = analysis.runs, analysis.k
    out = [
        Table(
            "runs",
            "Runs",
            ["run", "model + loss", "protocol", "rank by", "best epoch", f"Recall@{k}", "analysis time"],
            [
                [
                    r.label,
                    r.description,
                    r.config["evaluation"]["protocol"],
                    r.config["evaluation"]["rank_by"],
                    fmt(r.best_epoch),
                    fmt(r.popularity.recall),
                    f"{r.seconds:.1f} s",
                ]
                for r in runs
            ],
        )
    ]
    g = analysis.groups
    out.append(
        Table(
            "popularity",
            f"Popularity groups (equal training interactions; held-out = {analysis.split} interactions)",
            ["group", "items", "training interactions", "popularity min–max", f"{analysis.split} pairs"],
            [
                [
                    header,
                    fmt(int(g.items[n])),
                    fmt(int(g.interactions[n])),
                    f"{g.min_popularity[n]}–{g.max_popularity[n]}" if g.items[n] else "(empty)",
                    fmt(int(g.held_out[n])),
                ]
                for n, header in enumerate(_group_headers(len(g.items)))
            ],
        )
    )
    out.append(
        Table(
            "popularity",
            f"Recall@{k} contributed by each popularity group (rows sum to Recall@{k})",
            ["run", *_group_headers(), f"Recall@{k}"],
            [[r.label, *(fmt(v) for v in r.popularity.group_recall), fmt(r.popularity.recall)] for r in runs],
        )
    )
    out.append(
        Table(
            "popularity",
            "Share of hits in each popularity group (rows sum to 100%)",
            ["run", *_group_headers()],
            [[r.label, *(pct(v, 1) for v in r.popularity.group_share)] for r in runs],
        )
    )
    out.append(
        Table(
            "popularity",
            f"Popularity bias of the top-{k} lists on {analysis.split}",
            ["run", f"Recall@{k}", "tail hit share", "ARP", f"coverage@{k}", "tail share of slots", "Gini"],
            [
                [
                    r.label,
                    fmt(r.popularity.recall),
                    pct(r.popularity.group_share[0]),
                    fmt(r.popularity.arp, 2),
                    pct(r.popularity.coverage),
                    pct(r.popularity.tail_share),
                    fmt(r.popularity.gini),
                ]
                for r in runs
            ],
        )
    )
    out.append(
        Table(
            "magnitude",
            "Norm of final representations against training degree",
            [
                "run",
                "Spearman ρ items",
                "Spearman ρ users",
                "elasticity β items",
                "elasticity β users",
                "mean item norm",
                "mean user norm",
            ],
            [
                [
                    r.label,
                    fmt(r.magnitude.item_spearman, 3),
                    fmt(r.magnitude.user_spearman, 3),
                    fmt(r.magnitude.item_elasticity, 3),
                    fmt(r.magnitude.user_elasticity, 3),
                    fmt(r.magnitude.item_mean_norm),
                    fmt(r.magnitude.user_mean_norm),
                ]
                for r in runs
            ],
        )
    )
    for kind in ("item", "user"):
        out.append(_bins_table(analysis, kind))
    out.append(
        Table(
            "hardness",
            f"Share of negative gradient weight on the top-scored negatives "
            f"({analysis.sample_pairs:,} sampled training pairs, all negatives each)",
            ["run", "weighting", "negatives per pair", "top 1%", "top 10%", "uniform: top 1% / 10%"],
            [
                [
                    r.label,
                    r.hardness.weighting,
                    fmt(r.hardness.mean_negatives, 1),
                    pct(r.hardness.share_at(0.01)),
                    pct(r.hardness.share_at(0.1)),
                    "1.00% / 10.00%",
                ]
                if r.hardness is not None
                else [r.label, f"(no analysis for loss {r.config['loss']['name']})", "–", "–", "–", "–"]
                for r in runs
            ],
        )
    )
    out.append(
        Table(
            "bound",
            f"Softmax loss against −log DCG per user "
            f"({analysis.sample_users:,} sampled {analysis.split} users)",
            [
                "run",
                "scores",
                "users",
                "mean L_u",
                "mean −log DCG_u",
                "−log DCG_u ≤ L_u",
                "−log(DCG_u/|T_u|) ≤ L_u",
                "Spearman(L_u, −log DCG_u)",
            ],
            [
                [
                    r.label,
                    r.bound.scores,
                    fmt(len(r.bound.loss)),
                    fmt(float(np.nanmean(r.bound.loss)) if len(r.bound.loss) else None, 3),
                    fmt(_finite_mean(r.bound.neg_log_dcg), 3),
                    pct(r.bound.holds, 1),
                    pct(r.bound.holds_tight, 1),
                    fmt(r.bound.correlation, 3),
                ]
                for r in runs
            ],
        )
    )
    out.append(
        Table(
            "bound",
            "Training loss against NDCG@20 across the logged evaluations",
            [
                "run",
                "evaluations",
                "split",
                "Spearman(loss, NDCG@20)",
                "first → last loss",
                "first → best NDCG@20",
            ],
            [
                [
                    r.label,
                    fmt(len(r.relation.epochs)),
                    r.relation.split,
                    fmt(r.relation.spearman, 3),
                    f"{fmt(r.relation.loss[0])} → {fmt(r.relation.loss[-1])}"
                    if len(r.relation.loss)
                    else "–",
                    f"{fmt(r.relation.value[0])} → {fmt(np.nanmax(r.relation.value))}"
                    if len(r.relation.value)
                    else "–",
                ]
                for r in runs
            ],
        )
    )
    out.append(
        Table(
            "curves",
            "Training curves (logged evaluations)",
            ["run", "evaluations", "split", "best Recall@20 (epoch)", "best NDCG@20 (epoch)", "last loss"],
            [
                [
                    r.label,
                    fmt(r.curve.evaluations),
                    r.curve.split,
                    _best(r.curve, "recall@20"),
                    _best(r.curve, "ndcg@20"),
                    fmt(r.curve.loss[-1]) if len(r.curve.loss) else "–",
                ]
                for r in runs
            ],
        )
    )
    return out


def _finite_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


def _best(curve: TrainingCurve, metric: str) -> str:
    epoch, value = curve.best(metric)
    return "–" if math.isnan(value) else f"{fmt(value)} ({epoch})"


def _bins_table(analysis: Analysis, kind: str) -> Table:
    """Mean norm per power-of-two degree bin (relative to the run's mean norm in parentheses)."""
    per_run: list[DegreeBins] = [
        r.magnitude.item_bins if kind == "item" else r.magnitude.user_bins for r in analysis.runs
    ]
    edges = sorted({(int(lo), int(hi)) for bins in per_run for lo, hi in zip(bins.lo, bins.hi, strict=True)})
    rows = []
    for lo, hi in edges:
        row = [str(lo) if hi - lo == 1 else f"{lo}–{hi - 1}"]
        counts = []
        for bins in per_run:
            match = np.flatnonzero((bins.lo == lo) & (bins.hi == hi))
            if len(match):
                index = int(match[0])
                counts.append(int(bins.count[index]))
                row.append(f"{fmt(bins.mean_norm[index], 3)} ({fmt(bins.relative[index], 2)})")
            else:
                row.append("–")
        row.insert(1, fmt(max(counts)) if counts else "–")
        rows.append(row)
    return Table(
        "magnitude",
        f"Mean {kind} norm per degree bin (in parentheses: relative to the run's mean {kind} norm)",
        [f"{kind} degree", f"{kind}s", *(r.label for r in analysis.runs)],
        rows,
    )


# ---------------------------------------------------------------------------------------- rendering


def text_report(analysis: Analysis) -> str:
    """The report's tables as aligned plain text (``ssmrec compare``)."""
    lines = [
        f"dataset {analysis.dataset}: {analysis.counts.get('users')} users, {analysis.counts.get('items')} "
        f"items; popularity metrics on {analysis.split} at K={analysis.k}; "
        f"samples: {analysis.sample_pairs} training pairs, {analysis.sample_users} users "
        f"(seed {analysis.seed})",
        *(f"note: {note}" for note in analysis.notes),
    ]
    for table in tables(analysis):
        lines += ["", table.text()]
    return "\n".join(lines) + "\n"


def figures(analysis: Analysis) -> dict[str, bytes]:
    """Every figure as PNG bytes, by file name."""
    labels = [r.label for r in analysis.runs]
    runs = analysis.runs
    with_hardness = [r for r in runs if r.hardness is not None]
    drawn = {
        "popularity": plot_groups(labels, [r.popularity for r in runs]),
        "magnitude": plot_magnitude(labels, [r.magnitude for r in runs], analysis.seed),
        "hardness": plot_hardness([r.label for r in with_hardness], [r.hardness for r in with_hardness]),
        "bound": plot_bound(labels, [r.bound for r in runs]),
        "loss_metric": plot_loss_metric(labels, [r.relation for r in runs]),
        "curves": plot_curves(labels, [r.curve for r in runs]),
    }
    return {FIGURES[key]: png_bytes(figure) for key, figure in drawn.items()}


def _section_tables(all_tables: list[Table], key: str) -> str:
    return "\n\n".join(f"**{t.title}**\n\n{t.markdown()}" for t in all_tables if t.key == key)


def _figure(key: str, caption: str) -> str:
    return f"![{caption}]({FIGURES[key]})\n\n*Figure: {caption}.*"


def markdown_report(analysis: Analysis, command: str | None = None) -> str:
    """The whole report as Markdown; figures are referenced by their file names in the same folder."""
    all_tables = tables(analysis)
    k, split, groups = analysis.k, analysis.split, len(analysis.groups.items)
    counts = analysis.counts
    run_list = "\n".join(f"- `{r.label}`: {r.description} — `{r.path}`" for r in analysis.runs)
    notes = "".join(f"\n> **Note:** {note}\n" for note in analysis.notes)
    ssm_taus = sorted(
        {r.config["loss"]["temperature"] for r in analysis.runs if r.config["loss"]["name"] == "ssm"}
    )
    parts = [
        "# ssmrec analysis: checking the SSM paper's claims",
        f"Generated {datetime.now().strftime('%Y-%m-%d %H:%M:%S')} by ssmrec {__version__}"
        + (f" with `{command}`" if command else "")
        + ". Everything below is computed from the run directories (config, best weights, logged "
        "metrics) and the dataset; nothing was retrained.",
        f"**Dataset** `{analysis.dataset}`: {fmt(counts.get('users'))} users, {fmt(counts.get('items'))} "
        f"items, {fmt(counts.get('train_interactions'))} training interactions. "
        f"**Evaluated split:** `{split}` "
        f"(the paper's protocol evaluates on test), top-{k} lists from the same exact ranking as "
        f"`ssmrec evaluate` (each run's `rank_by`; training items, and validation items when testing, are "
        f"never recommended). **Samples** (seed {analysis.seed}): {analysis.sample_pairs:,} training pairs "
        f"for the hard-negative analysis, {analysis.sample_users:,} {split} users for the bound.",
        run_list,
        notes,
        _section_tables(all_tables, "runs"),
        "## 1. Popularity bias and the long tail",
        "Items are split into "
        f"{groups} groups holding equal shares of the training interactions (the official SSM code's "
        "protocol): sort items by training popularity `pop(i)` ascending (ties by item index), let `c_i` be "
        "the cumulative interactions up to and including item i and `T` their total; item i is in group g "
        f"iff `(g−1)·T/{groups} < c_i ≤ g·T/{groups}`. Group 1 is the tail (many rarely seen items), group "
        f"{groups} the head. An item whose interactions straddle a cut goes to the upper group (where its "
        "cumulative count ends); one ending exactly on a cut stays in the lower group; an item holding more "
        "than a group's worth of interactions leaves the groups it skips empty.\n\n"
        "With `U` the evaluated users (at least one held-out item), `L_u` a user's top-K list and `T_u` "
        "the user's held-out items:\n\n"
        f"- **Recall@{k} per group** (the official decomposition): `recall_g = (1/|U|) Σ_u |L_u ∩ T_u ∩ G_g| "
        f"/ |T_u|`; the groups sum to Recall@{k}.\n"
        "- **Share of hits** of group g: `Σ_u |L_u ∩ T_u ∩ G_g| / Σ_u |L_u ∩ T_u|` (hits pooled over users); "
        "the *tail hit share* is group 1's.\n"
        "- **ARP** (average recommendation popularity): `(1/|U|) Σ_u mean_{i ∈ L_u} pop(i)`.\n"
        f"- **Coverage@{k}**: distinct recommended items / all items.\n"
        "- **Tail share of slots**: fraction of all recommended slots holding a group-1 (tail) item.\n"
        "- **Gini of exposure** over all items, unexposed ones included (`e_i` = lists containing i, "
        "ascending): `Σ_k (2k − n − 1) e_(k) / (n Σ e)`; 0 = equal exposure, (n−1)/n = one item only.\n\n"
        "SSM is expected to shift hits and exposure towards the tail compared with BPR (higher tail hit "
        "share, lower ARP and Gini, higher coverage).",
        _section_tables(all_tables, "popularity"),
        _figure("popularity", f"per-group Recall@{k} and share of hits, one bar per run"),
        "## 2. Representation magnitude",
        "Cosine SSM is blind to vector length, so a model whose final representation is a free embedding "
        "(MF) cannot learn magnitudes from it, whereas LightGCN's propagation with the symmetric normalised "
        "adjacency makes the norm of a node's final representation grow with its degree (the paper's "
        "explanation of why MF+SSM underperforms and LightGCN+SSM does not). Measured on the final "
        "representations (ego embeddings for MF, layer mean for LightGCN) against training degree: "
        "**Spearman ρ** between norm and degree over all items / all users (average ranks for ties), and "
        "the **mean norm per power-of-two degree bin** `[1,2), [2,4), …`. Expected: ρ clearly positive "
        "for LightGCN, near 0 for MF under cosine SSM.",
        _section_tables(all_tables, "magnitude"),
        _figure(
            "magnitude", "norm of final representations against degree (log): sampled nodes and bin means"
        ),
        "## 3. Hard-negative mining",
        "For a training pair (u, p) and the negatives `N_u` (all items u has no training interaction "
        "with), the gradient on a negative's score `s_n` is, for **SSM** (softmax over `{p} ∪ N_u` of "
        f"`s/τ` with the run's similarity and temperature{' τ ∈ ' + str(ssm_taus) if ssm_taus else ''}), "
        "`∂L/∂s_n = w_n/τ` with `w_n = exp(s_n/τ) / (exp(s_p/τ) + Σ_m exp(s_m/τ))` (the full softmax; the "
        "in-batch negatives of training are a sample of these terms), and for **BPR** with one uniformly "
        "drawn negative (dot scores) an expected `σ(s_n − s_p)/|N_u|`: each negative is drawn equally often "
        "and weighs at most 1. For each sampled pair the negatives are sorted by score and "
        "`share(q) = Σ_{top ⌈q·|N_u|⌉} w_n / Σ_{N_u} w_n` is the share of the gradient weight carried "
        "by the top q of them (constant factors cancel); the table gives the mean over pairs. Uniform "
        "weighting gives `share(q) = q`. Each run is measured with the loss it was trained with, on its own "
        "representations.",
        _section_tables(all_tables, "hardness"),
        _figure("hardness", "cumulative share of negative gradient weight against the fraction of negatives"),
        "## 4. Ranking metric: the softmax loss bounds −log DCG",
        "The paper (its ranking-metric property, following Bruch et al., ICTIR 2019) argues that the "
        "softmax loss bounds `−log DCG`, so minimising it maximises the ranking metric. "
        "Checked here per sampled user u with held-out items `T_u`: the softmax loss over **all** items, "
        "`L_u = (1/|T_u|) Σ_{i ∈ T_u} log Σ_{j ∈ I} exp((s_j − s_i)/τ)` "
        "(SSM runs: their similarity and τ; BPR: dot, τ = 1), and the full, "
        "untruncated `DCG_u = Σ_{i ∈ T_u} 1/log2(1 + π(i))`, with `π(i)` the rank of i by the same scores "
        "among the items u may be recommended. Since `π(i) ≤ Σ_j exp((s_j − s_i)/τ)`, `log2(1+x) ≤ x` and "
        "the arithmetic–geometric mean inequality, `−log(DCG_u/|T_u|) ≤ L_u`, hence `−log DCG_u ≤ L_u` "
        "(the paper's form for one held-out item). The scatter shows `−log(DCG_u/|T_u|)`, which is "
        "`−log DCG_u` for a single held-out item (with several, `DCG_u > 1` puts `−log DCG_u` below 0 for "
        "a trivial reason), against `L_u`: every point must lie on or below `y = x`, and the "
        "correlation says how closely the metric follows the loss. The second table relates the "
        "*logged* training loss and NDCG@20 across a run's evaluations (ρ < 0 expected).",
        _section_tables(all_tables, "bound"),
        _figure("bound", "per-user −log(DCG/|T|) against the per-user softmax loss, with the bound y = x"),
        _figure("loss_metric", "logged NDCG@20 against the logged training loss across evaluations"),
        "## 5. Training curves",
        "Loss, Recall@20 and NDCG@20 as logged at every evaluation (metrics on each run's selection "
        "split; SSM's summed and BPR's mean losses differ in scale, hence the log axis).",
        _section_tables(all_tables, "curves"),
        _figure("curves", "training loss, Recall@20 and NDCG@20 per epoch for every run"),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def summary(analysis: Analysis) -> dict[str, Any]:
    """The report's numbers as JSON-ready data (``summary.json``)."""

    def floats(values: np.ndarray) -> list[float | None]:
        return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float64)]

    def number(value: float) -> float | None:
        return None if value is None or not math.isfinite(value) else float(value)

    return {
        "dataset": analysis.dataset,
        "split": analysis.split,
        "k": analysis.k,
        "seed": analysis.seed,
        "sample_users": analysis.sample_users,
        "sample_pairs": analysis.sample_pairs,
        "notes": analysis.notes,
        "groups": {
            "items": analysis.groups.items.tolist(),
            "training_interactions": analysis.groups.interactions.tolist(),
            "held_out_interactions": analysis.groups.held_out.tolist(),
        },
        "runs": [
            {
                "label": r.label,
                "path": str(r.path),
                "description": r.description,
                "seconds": r.seconds,
                "popularity": {
                    "recall": number(r.popularity.recall),
                    "group_recall": floats(r.popularity.group_recall),
                    "group_share": floats(r.popularity.group_share),
                    "tail_hit_share": number(r.popularity.group_share[0]),
                    "arp": number(r.popularity.arp),
                    "coverage": number(r.popularity.coverage),
                    "tail_share": number(r.popularity.tail_share),
                    "gini": number(r.popularity.gini),
                },
                "magnitude": {
                    "item_spearman": number(r.magnitude.item_spearman),
                    "user_spearman": number(r.magnitude.user_spearman),
                    "item_elasticity": number(r.magnitude.item_elasticity),
                    "user_elasticity": number(r.magnitude.user_elasticity),
                },
                "hardness": None
                if r.hardness is None
                else {
                    "weighting": r.hardness.weighting,
                    "top_1pct": number(r.hardness.share_at(0.01)),
                    "top_10pct": number(r.hardness.share_at(0.1)),
                },
                "bound": {
                    "users": len(r.bound.loss),
                    "holds": number(r.bound.holds),
                    "holds_tight": number(r.bound.holds_tight),
                    "spearman": number(r.bound.correlation),
                },
                "loss_vs_ndcg_spearman": number(r.relation.spearman),
            }
            for r in analysis.runs
        ],
    }


def default_output(first_run: str | Path) -> Path:
    """``RUN_DIR/../analysis-<timestamp>`` beside the first run."""
    return Path(first_run).resolve().parent / f"analysis-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def write_report(analysis: Analysis, output: str | Path, command: str | None = None) -> Path:
    """Write ``report.md``, the figures and ``summary.json`` into ``output`` (created; must be empty).

    Everything goes to a temporary folder beside ``output`` that is renamed into place at the end.
    """
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise SsmrecError(f"output {output} already exists and is not empty; choose another")
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        for name, payload in figures(analysis).items():
            atomic_write_bytes(temp / name, payload)
        atomic_write_bytes(temp / "summary.json", (json.dumps(summary(analysis), indent=2) + "\n").encode())
        atomic_write_bytes(temp / "report.md", markdown_report(analysis, command).encode())
        temp.chmod(0o755)  # mkdtemp creates 0700; a report is meant to be read
        if output.exists():
            output.rmdir()
        os.replace(temp, output)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return output


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that produced a report, for its header."""
    return shlex.join(["ssmrec", *(sys.argv[1:] if argv is None else argv)])
