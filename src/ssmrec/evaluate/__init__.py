"""Exact full-ranking evaluation and top-K recommendation.

- :func:`evaluate_ranking`: Recall / NDCG / Precision / HitRate / MRR / MAP at several K over all items.
- :func:`ranking_sums`: the same as sums and a user count, for one shard of the users (several processes).
- :func:`top_k`: the exact top-K item indices for given users (the same ranking engine).
"""

from ssmrec.evaluate.metrics import (
    METRICS,
    evaluate_ranking,
    metric_means,
    metric_names,
    metric_sums,
    ranking_sums,
)
from ssmrec.evaluate.ranking import canonical_scores, default_chunk_size, iter_top_k, top_k

__all__ = [
    "METRICS",
    "canonical_scores",
    "default_chunk_size",
    "evaluate_ranking",
    "iter_top_k",
    "metric_means",
    "metric_names",
    "metric_sums",
    "ranking_sums",
    "top_k",
]
