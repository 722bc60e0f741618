"""Approximate retrieval with faiss (extra ``ann``): HNSW or IVF over the item representations.

The index searches by inner product; for the cosine ranking rule the items are L2-normalised first
(and so are the queries), so the index ranks by the same rule as exact ranking. Seen items are
filtered by over-fetching: a user with ``s`` seen items is searched for ``k + s`` neighbours (rounded
up to a power of two, so users are searched in batches of equal depth, with HNSW's ``efSearch`` at
least that depth), seen ones are dropped, the first ``k`` kept. Exact ranking stays the default;
``benchmarks/bench_recommend.py`` measures the index's Recall@K against it.

Index files are faiss's own binary format (no pickle), written beside the export as
``<export>.<kind>.faiss`` to a temporary name and renamed.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssmrec.errors import SsmrecError
from ssmrec.serving.export import Export
from ssmrec.serving.recommend import Ranked, Recommender

KINDS = ("hnsw", "ivf")
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 100
HNSW_EF_SEARCH = 128
IVF_PROBE = 32
SEARCH_BATCH = 4096


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise SsmrecError("--index needs faiss: pip install 'ssmrec[ann]' (faiss-cpu)") from error
    return faiss


def _vectors(matrix: np.ndarray, rule: str) -> np.ndarray:
    vectors = np.ascontiguousarray(matrix, dtype=np.float32)
    if rule == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


@dataclass
class Index:
    kind: str
    index: Any
    build_seconds: float = 0.0


def build_index(export: Export, kind: str, seed: int = 0) -> Index:
    """A maximum-inner-product index of ``export``'s items (normalised for the cosine rule)."""
    faiss = _faiss()
    if kind not in KINDS:
        raise SsmrecError(f"unknown index {kind!r}; choose hnsw or ivf")
    items = _vectors(export.items, export.ranking_rule)
    n, d = items.shape
    started = time.perf_counter()
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        nlist = max(1, min(n // 39, int(4 * np.sqrt(n))))  # faiss wants >= 39 training points per list
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = items[rng.choice(n, min(n, 40 * nlist), replace=False)]  # k-means cost bound
        index.train(sample)
        index.nprobe = min(IVF_PROBE, nlist)
    index.add(items)
    return Index(kind, index, time.perf_counter() - started)


def index_path(export_path: str | Path, kind: str) -> Path:
    path = Path(export_path)
    return path.with_name(f"{path.name}.{kind}.faiss")


def save_index(index: Index, path: Path) -> None:
    faiss = _faiss()
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        faiss.write_index(index.index, name)
        os.chmod(name, 0o644)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def load_index(path: Path, kind: str, n_items: int) -> Index:
    faiss = _faiss()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise SsmrecError(f"{path}: not a readable faiss index ({error})") from error
    if index.ntotal != n_items:
        raise SsmrecError(f"{path}: the index holds {index.ntotal} items, the export {n_items}; rebuild it")
    return Index(kind, index)


class AnnRecommender(Recommender):
    """:class:`Recommender` whose user recommendations come from a faiss index (approximate)."""

    def __init__(self, export: Export, index: Index) -> None:
        super().__init__(export)
        self.index = index
        self._queries = _vectors(export.users, export.ranking_rule)

    @classmethod
    def for_export(cls, export: Export, kind: str) -> AnnRecommender:
        """The index saved beside the export (``export --index``), else one built now."""
        source = export.metadata.get("source_path")
        path = index_path(source, kind) if source else None
        if path is not None and path.is_file():
            return cls(export, load_index(path, kind, len(export.items)))
        return cls(export, build_index(export, kind))

    def engine(self) -> Any:
        return None

    def _search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        params = None
        if self.index.kind == "hnsw":  # per call, not on the shared index: requests run concurrently
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, depth))
        scores, labels = self.index.index.search(np.ascontiguousarray(queries), depth, params=params)
        return labels, scores

    def _rank(self, queries: np.ndarray, seen: list[np.ndarray], k: int) -> Ranked:
        n = len(queries)
        out_items = np.full((n, k), -1, dtype=np.int64)
        out_scores = np.full((n, k), np.nan, dtype=np.float32)
        need = np.array([k + len(s) for s in seen], dtype=np.int64)
        depth = np.minimum(
            1 << np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64), len(self.export.items)
        )
        for value in np.unique(depth):
            rows = np.flatnonzero(depth == value)
            for lo in range(0, len(rows), SEARCH_BATCH):
                part = rows[lo : lo + SEARCH_BATCH]
                labels, scores = self._search(queries[part], int(value))
                for j, row in enumerate(part):
                    keep = labels[j] >= 0
                    if len(seen[row]):
                        keep &= ~np.isin(labels[j], seen[row])
                    chosen = np.flatnonzero(keep)[:k]
                    out_items[row, : len(chosen)] = labels[j, chosen]
                    out_scores[row, : len(chosen)] = scores[j, chosen]
        return Ranked(out_items, out_scores)

    def iter_recommend(
        self, users: np.ndarray, k: int, include_seen: bool = False, chunk_size: int | None = None
    ):
        users = np.asarray(users, dtype=np.int64)
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise SsmrecError(f"user index out of range 0..{self.n_users - 1}")
        step = chunk_size or 8 * SEARCH_BATCH
        for start in range(0, len(users), step):
            part = users[start : start + step]
            seen = [np.empty(0, np.int64) if include_seen else self.export.seen_items(u) for u in part]
            yield start, start + len(part), self._rank(self._queries[part], seen, k)

    def recommend_one(self, user: int, k: int, include_seen: bool = False) -> Ranked:
        seen = np.empty(0, np.int64) if include_seen else self.export.seen_items(user)
        return self._rank(self._queries[user : user + 1], [seen], k)

    def recommend_new(self, items: Any, k: int, include_seen: bool = False) -> Ranked:
        foldin = self.export.foldin
        if foldin is None:
            return super().recommend_new(items, k, include_seen)
        chosen = np.unique(np.asarray(items, dtype=np.int64))
        query = _vectors(foldin.represent(chosen)[None, :], self.rule)
        return self._rank(query, [np.empty(0, np.int64) if include_seen else chosen], k)
