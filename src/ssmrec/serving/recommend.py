"""Top-K recommendations and similar items from an :class:`~ssmrec.serving.export.Export`.

Every ranking goes through the evaluator's exact engine (:mod:`ssmrec.evaluate.ranking`): the same
canonical fp32 scores, the same tie rule (lower item index first), and seen items excluded through
the same exclusion matrices evaluation uses (an export's ``seen`` is what evaluation on the test split
excludes), so ``recommend`` returns exactly the evaluator's top K for the same users.

* Many users (``ssmrec recommend --users FILE``): :func:`ssmrec.evaluate.ranking.iter_top_k`, chunk by
  chunk, as evaluation does.
* One user at a time (the server): one engine built once at load time over every user and item
  (:class:`_Engine`), so a request pays for its own row only (a GEMM row, the screen, the rescoring) and
  not for the item-side set-up (padding, norms, error bounds) the one-shot functions redo per call.

Scores are the canonical scores the ranking used (of the L2-normalised representations for cosine).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from ssmrec.errors import SsmrecError
from ssmrec.evaluate.ranking import Ranker, canonical_scores, iter_top_k, top_k
from ssmrec.serving.export import Export

MAX_K = 1000
"""Largest K a request may ask for (a bound on response size and work, not on the engine)."""


@dataclass(frozen=True)
class Ranked:
    """Top-K of some rows: ``items[r]`` item indices (``-1``: no more rankable items), ``scores[r]``."""

    items: np.ndarray  # (n, k) int64
    scores: np.ndarray  # (n, k) float32, NaN where items is -1


def check_k(k: int, limit: int = MAX_K) -> int:
    if not isinstance(k, int) or k < 1:
        raise SsmrecError(f"k must be a positive integer, got {k!r}")
    if k > limit:
        raise SsmrecError(f"k must be at most {limit}, got {k}")
    return k


def _scored(queries: Tensor, table: Tensor, top: Tensor) -> Ranked:
    """Canonical scores of each query row against its top items (``-1`` entries get NaN)."""
    valid = top >= 0
    scores = canonical_scores(queries.unsqueeze(1), table[top.clamp(min=0)])
    scores = scores.masked_fill(~valid, math.nan)
    return Ranked(top.numpy(), scores.numpy())


class Recommender:
    """Recommendations for known users, new users (from their items) and similar items of one export."""

    def __init__(self, export: Export) -> None:
        self.export = export
        self.rule = export.ranking_rule
        self.users = torch.from_numpy(export.users)
        self.items = torch.from_numpy(export.items)
        self.n_users, self.n_items = len(export.users), len(export.items)
        # what the engine scores: the normalised rows for cosine (row-wise, so the same values it uses)
        self._score_users = F.normalize(self.users, dim=1) if self.rule == "cosine" else self.users
        self._score_items = F.normalize(self.items, dim=1) if self.rule == "cosine" else self.items
        sim = export.similarity
        self._sim_items = F.normalize(self.items, dim=1) if sim == "cosine" else self.items
        self._engine: _Engine | None = None
        self._similar_engine: _Engine | None = None

    # --------------------------------------------------------------------------- batches of users

    def iter_recommend(
        self, users: np.ndarray, k: int, include_seen: bool = False, chunk_size: int | None = None
    ) -> Iterator[tuple[int, int, Ranked]]:
        """``(start, stop, ranked)`` per chunk of ``users`` (indices), in order: the evaluator's engine."""
        users = np.asarray(users, dtype=np.int64)
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise SsmrecError(f"user index out of range 0..{self.n_users - 1}")
        exclude = [] if include_seen else [self.export.seen[users]]
        selected = self.users[torch.from_numpy(users)]
        with torch.no_grad():
            for start, stop, top in iter_top_k(selected, self.items, k, exclude, self.rule, chunk_size):
                rows = self._score_users[torch.from_numpy(users[start:stop])]
                yield start, stop, _scored(rows, self._score_items, top)

    def recommend(self, users: Sequence[int] | np.ndarray, k: int, include_seen: bool = False) -> Ranked:
        """Top-``k`` of ``users`` (indices) at once (see :meth:`iter_recommend`)."""
        parts = [ranked for _, _, ranked in self.iter_recommend(np.asarray(users), k, include_seen)]
        if not parts:
            return Ranked(np.empty((0, k), np.int64), np.empty((0, k), np.float32))
        return Ranked(np.concatenate([p.items for p in parts]), np.concatenate([p.scores for p in parts]))

    # -------------------------------------------------------------------------------- one request

    def engine(self) -> _Engine:
        """The persistent engine over all users (built on first use; the server builds it at start)."""
        if self._engine is None:
            self._engine = _Engine(self.users, self.items, self.rule)
        return self._engine

    def recommend_one(self, user: int, k: int, include_seen: bool = False) -> Ranked:
        """Top-``k`` of one known user (index) through the persistent engine: same result as a batch."""
        seen = np.empty(0, np.int64) if include_seen else self.export.seen_items(user)
        top = self.engine().top_k(user, seen, k)
        return _scored(self._score_users[user : user + 1], self._score_items, top)

    def recommend_new(self, items: Sequence[int] | np.ndarray, k: int, include_seen: bool = False) -> Ranked:
        """Top-``k`` of a new user given its item indices (LightGCN / history only; see ``foldin``)."""
        foldin = self.export.foldin
        if foldin is None:
            reason = self.export.metadata.get("foldin_unsupported") or "this export has no new-user encoder"
            raise FoldInUnsupportedError(reason)
        chosen = np.unique(np.asarray(items, dtype=np.int64))
        vector = torch.from_numpy(foldin.represent(chosen)).unsqueeze(0)
        exclude = (
            []
            if include_seen
            else [
                sp.csr_matrix(
                    (np.ones(len(chosen)), (np.zeros(len(chosen)), chosen)), shape=(1, self.n_items)
                )
            ]
        )
        top = top_k(vector, self.items, None, k, exclude, self.rule)
        query = F.normalize(vector, dim=1) if self.rule == "cosine" else vector
        return _scored(query, self._score_items, top)

    def similar(self, item: int, k: int) -> Ranked:
        """The ``k`` items most similar to ``item`` (index) by the export's similarity, itself excluded."""
        if self._similar_engine is None:
            self._similar_engine = _Engine(self.items, self.items, self.export.similarity)
        top = self._similar_engine.top_k(item, np.array([item], dtype=np.int64), k)
        return _scored(self._sim_items[item : item + 1], self._sim_items, top)


class FoldInUnsupportedError(SsmrecError):
    """The model has no encoder for new users."""


class _Engine:
    """The exact ranking engine built once over all rows: per-row top-K without per-call set-up.

    Wraps the engine's per-chunk entry point (``Ranker.top_k``, what ``iter_top_k`` calls for each
    chunk): the same screening, rescoring and tie rule, so a row's top K is the same as in any batch.
    It is thread-safe (per-thread buffers); callers keep torch at one intra-op thread.
    """

    def __init__(self, rows: Tensor, items: Tensor, rule: str) -> None:
        with torch.no_grad():
            self._ranker = Ranker(rows, items, rule, "auto")  # type: ignore[arg-type]

    def top_k(self, row: int, excluded: np.ndarray, k: int) -> Tensor:
        cols = torch.from_numpy(np.asarray(excluded, dtype=np.int64))
        with torch.no_grad():
            return self._ranker.top_k(row, row + 1, torch.zeros_like(cols), cols, k)
