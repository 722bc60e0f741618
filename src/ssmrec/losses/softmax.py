"""The full softmax over all items, computed exactly in item chunks: the oracle of the sampled versions.

    L = Σ_b ( log Σ_{j=1..n_items} exp(s(u_b, j)/τ) − s(u_b, p_b)/τ )

with the SSM family's similarity, temperature (fixed or learnable), reduction and denominator option
(``positive_in_denominator=False`` removes p_b from the sum) and ``exclude="train"`` (the user's other
training items leave the sum; ``duplicates`` is a no-op here: every item is one column).

The log-sum over items is taken chunk by chunk (``chunk_size`` items at a time) by the shared kernel
:func:`ssmrec.losses.logsumexp.chunked_logsumexp` (hand-written backward, memory of one chunk; the
chunk-size measurement is in that module).
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from ssmrec.batch import Batch
from ssmrec.defaults import SOFTMAX_CHUNK
from ssmrec.losses.base import Reduction, Similarity, reduce
from ssmrec.losses.logsumexp import chunked_logsumexp
from ssmrec.losses.ssm import SampledSoftmaxLoss


class FullSoftmaxLoss(SampledSoftmaxLoss):
    """Softmax cross-entropy over every item (formula in the module docstring); needs all items."""

    needs_all_items = True

    def __init__(
        self,
        temperature: float = 0.1,
        similarity: Similarity = "cosine",
        reduction: Reduction = "sum",
        exclude: str = "none",
        positive_in_denominator: bool = True,
        learn_temperature: bool = False,
        softmax_chunk_size: int | None = SOFTMAX_CHUNK,
    ) -> None:
        super().__init__(
            temperature=temperature,
            similarity=similarity,
            reduction=reduction,
            exclude=exclude,
            positive_in_denominator=positive_in_denominator,
            learn_temperature=learn_temperature,
        )
        if softmax_chunk_size is not None and softmax_chunk_size < 1:
            raise ValueError(f"softmax_chunk_size must be >= 1, got {softmax_chunk_size}")
        self.chunk_size = softmax_chunk_size

    def forward(
        self, users: Tensor, positives: Tensor, negatives: Tensor | None, batch: Batch | None = None
    ) -> Tensor:
        if batch is None or batch.all_items is None:
            raise ValueError("the full softmax needs all item representations (batch.all_items)")
        items = batch.all_items()
        if self.similarity == "cosine":
            users, positives, items = (F.normalize(t, dim=-1) for t in (users, positives, items))
        tau = self.temperature
        positive_logit = (users * positives).sum(dim=-1) / tau
        drop_rows, drop_items = self._dropped(batch)
        log_sum = chunked_logsumexp(users, items, tau, drop_rows, drop_items, self.chunk_size)
        return reduce(log_sum - positive_logit, self.reduction)

    def _dropped(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) pairs left out of the log-sum: other training items, and the positive in SL form."""
        batch = batch.on_host
        positives = batch.positives.numpy().astype(np.int64)
        rows = [np.empty(0, dtype=np.int64)]
        items = [np.empty(0, dtype=np.int64)]
        if self.exclude == "train":
            if batch.training is None:
                raise ValueError("exclude='train' needs the training set in the batch")
            train_rows, train_items = batch.training.entries(batch.users.numpy())
            other = train_items != positives[train_rows]
            rows.append(train_rows[other])
            items.append(train_items[other])
        if not self.positive_in_denominator:
            rows.append(np.arange(len(positives), dtype=np.int64))
            items.append(positives)
        return np.concatenate(rows), np.concatenate(items)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk_size={self.chunk_size}"
