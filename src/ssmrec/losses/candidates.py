"""The one scoring path of every sampled objective: each row's user against its candidate columns.

Row b of a batch is scored against K columns (see :mod:`ssmrec.batch`): the batch's positives when
negatives are in-batch (row b's own positive is column b), otherwise row b's own positive alone
(column 0), followed by the sampled negatives (shared by the batch or per row). The result holds the
score matrix, the column of each row's positive (``target``), which columns are masked accidental hits
(``exclude``) and the sampler's log expected counts, so that SSM, BPR, BCE, MSE and CCL differ only in
what they do with the same numbers.

``exclude``:

* ``none``: nothing masked (the official SSM code).
* ``duplicates``: columns holding the row's own positive item again (another row with the same item
  in-batch, or the item drawn as a negative).
* ``train``: columns holding any training item of the row's user (the duplicates included). Samplers
  that already reject training items need no mask for their draws.

A masked column is kept in the matrix and ignored by the losses (−inf in a softmax, left out of a
mean), so the batch itself never changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssmrec.batch import Batch
from ssmrec.defaults import EXCLUDE
from ssmrec.device import to_device
from ssmrec.losses.base import Similarity


@dataclass(frozen=True)
class Candidates:
    """Scores of every row against its candidate columns."""

    scores: Tensor
    """(B, K) similarity of row b's user and column k's item."""
    target: Tensor
    """(B,) column of each row's positive."""
    in_batch: bool
    """Columns 0..B−1 are the batch's positives (else column 0 is the row's own positive)."""
    excluded: Tensor | None = None
    """(B, K) masked accidental hits (never a target column); ``None``: nothing masked."""
    log_q: Tensor | None = None
    """Log expected count of every column under the sampler, broadcastable to (B, K)."""

    @property
    def positive(self) -> Tensor:
        """(B,) score of each row's positive."""
        return self.scores.gather(1, self.target.unsqueeze(1)).squeeze(1)

    def target_mask(self) -> Tensor:
        """(B, K) bool: the column of each row's positive."""
        return F.one_hot(self.target, self.scores.shape[1]).bool()

    def negatives(self) -> tuple[Tensor, Tensor | None]:
        """Scores of the negative columns and which of them to use (``None``: all of them)."""
        if not self.in_batch:
            keep = None if self.excluded is None else ~self.excluded[:, 1:]
            return self.scores[:, 1:], keep
        keep = ~self.target_mask()
        if self.excluded is not None:
            keep &= ~self.excluded
        return self.scores, keep

    def broadcast_log_q(self) -> Tensor:
        if self.log_q is None:
            raise ValueError("logQ correction needs the sampler's log q in the batch")
        try:
            return torch.broadcast_to(self.log_q.to(self.scores.dtype), self.scores.shape)
        except RuntimeError as error:
            raise ValueError(
                f"log_q of shape {tuple(self.log_q.shape)} does not fit {tuple(self.scores.shape)}"
            ) from error


def _normalized(tensor: Tensor | None, kind: Similarity) -> Tensor | None:
    if tensor is None or kind == "dot":
        return tensor
    return F.normalize(tensor, dim=-1)


def normalized_inputs(
    users: Tensor, positives: Tensor, negatives: Tensor | None, batch: Batch | None, kind: Similarity
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The representations as the similarity compares them: unit length for cosine (unless the batch
    says the trainer normalised them already), unchanged for the dot product."""
    if kind not in ("cosine", "dot"):
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {kind!r}")
    if (batch is not None and batch.normalized) or kind == "dot":
        return users, positives, negatives
    return F.normalize(users, dim=-1), F.normalize(positives, dim=-1), _normalized(negatives, kind)


def score_candidates(
    users: Tensor,
    positives: Tensor,
    negatives: Tensor | None,
    batch: Batch | None,
    kind: Similarity,
    exclude: str = "none",
) -> Candidates:
    """Score each row against its candidates; ``batch=None`` means in-batch iff ``negatives is None``.

    ``negatives`` are representations: (B, M, d) per row or (M, d) shared by the batch.
    """
    in_batch = batch.in_batch if batch is not None else negatives is None
    users, positives, negatives = normalized_inputs(users, positives, negatives, batch, kind)
    size = users.shape[0]
    if in_batch:
        parts = [users @ positives.T]
        target = torch.arange(size, device=users.device)
    else:
        parts = [(users * positives).sum(dim=-1, keepdim=True)]
        target = torch.zeros(size, dtype=torch.long, device=users.device)
    if negatives is not None:
        if negatives.dim() == 2:
            parts.append(users @ negatives.T)
        elif negatives.dim() == 3:
            parts.append((negatives @ users.unsqueeze(2)).squeeze(2))  # no transposed (B, M, d) copy
        else:
            raise ValueError(f"negatives must be (M, d) or (B, M, d), got shape {tuple(negatives.shape)}")
    scores = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    excluded = exclusion_mask(batch, exclude, scores.shape[1])
    return Candidates(
        scores=scores,
        target=target,
        in_batch=in_batch,
        excluded=excluded,
        log_q=batch.log_q if batch is not None else None,
    )


def exclusion_mask(batch: Batch | None, exclude: str, n_columns: int) -> Tensor | None:
    """(B, K) bool of masked columns for ``exclude`` (``None`` when nothing is masked), on the batch's
    device (built on the host from :attr:`Batch.on_host`, then copied without a sync)."""
    mask = host_exclusion_mask(batch, exclude, n_columns)
    if mask is None:
        return None
    assert batch is not None
    return to_device(torch.from_numpy(mask), batch.users.device)


@dataclass(frozen=True)
class SharedColumns:
    """A batch whose rows all share their candidate columns (in-batch positives, then negatives shared
    by the batch), as the chunked log-sum-exp kernel takes it: no (B, K) score matrix is built."""

    users: Tensor
    """(B, d) users as the similarity compares them (unit length for cosine)."""
    positives: Tensor
    """(B, d) each row's positive, compared likewise; column b of ``columns`` is row b's."""
    columns: Tensor
    """(K, d) the shared columns: the B positives, then the shared negatives."""
    excluded_rows: np.ndarray
    """Row of each masked accidental hit (host int64)."""
    excluded_columns: np.ndarray
    """Column of each masked accidental hit, paired with ``excluded_rows``."""
    log_q: Tensor | None = None
    """(K,) the sampler's log expected count of each column (``None``: the batch has none)."""

    def dropped(self, positive: bool) -> tuple[np.ndarray, np.ndarray]:
        """(rows, columns) to leave out of a log-sum: the masked hits, and each row's own positive
        (column b of row b) when ``positive`` is false (the SL form, or a sum over negatives only)."""
        if positive:
            return self.excluded_rows, self.excluded_columns
        diagonal = np.arange(self.users.shape[0], dtype=np.int64)
        return (
            np.concatenate([self.excluded_rows, diagonal]),
            np.concatenate([self.excluded_columns, diagonal]),
        )

    def positive_scores(self) -> Tensor:
        """(B,) similarity of each row's user and positive."""
        return (self.users * self.positives).sum(dim=-1)


def shared_columns(
    users: Tensor,
    positives: Tensor,
    negatives: Tensor | None,
    batch: Batch | None,
    kind: Similarity,
    exclude: str = "none",
) -> SharedColumns:
    """The :class:`SharedColumns` of an in-batch batch (``negatives``: none, or (M, d) shared)."""
    users, positives, negatives = normalized_inputs(users, positives, negatives, batch, kind)
    columns = positives if negatives is None else torch.cat([positives, negatives])
    excluded = host_exclusion_mask(batch, exclude, columns.shape[0])
    rows, cols = (np.empty(0, dtype=np.int64),) * 2 if excluded is None else np.nonzero(excluded)
    return SharedColumns(
        users, positives, columns, rows.astype(np.int64), cols.astype(np.int64), column_log_q(batch)
    )


def column_log_q(batch: Batch | None) -> Tensor | None:
    """The batch's log q as one value per candidate column, (K,), where all rows share it (the in-batch
    samplers give (1, K)); ``None`` where the batch has no log q or one per row."""
    if batch is None or batch.log_q is None:
        return None
    log_q = batch.log_q
    if log_q.dim() == 2 and log_q.shape[0] == 1:
        log_q = log_q[0]
    return log_q if log_q.dim() == 1 else None


def host_exclusion_mask(batch: Batch | None, exclude: str, n_columns: int) -> np.ndarray | None:
    """:func:`exclusion_mask` as a numpy array on the host."""
    if exclude not in EXCLUDE:
        raise ValueError(f"exclude must be one of {', '.join(EXCLUDE)}, got {exclude!r}")
    if exclude == "none":
        return None
    if batch is None:
        raise ValueError(f"exclude={exclude!r} needs the batch's ids (pass a Batch)")
    if exclude == "train" and batch.training is None:
        raise ValueError("exclude='train' needs the training set in the batch")
    batch = batch.on_host
    users = batch.users.numpy()
    positives = batch.positives.numpy()

    def shared(columns: np.ndarray) -> np.ndarray:
        hits = columns[None, :] == positives[:, None]
        if exclude == "train":
            assert batch.training is not None
            hits |= batch.training.hits(users, columns)
        return hits

    parts = [shared(positives) if batch.in_batch else np.zeros((len(users), 1), dtype=bool)]
    if batch.negatives is not None:
        ids = batch.negatives.numpy()
        if ids.ndim == 1:
            parts.append(shared(ids))
        elif batch.rejects_training:  # never a training item of the user, so never its positive either
            parts.append(np.zeros(ids.shape, dtype=bool))
        else:
            hits = ids == positives[:, None]
            if exclude == "train":
                assert batch.training is not None
                hits |= batch.training.contains(np.broadcast_to(users[:, None], ids.shape), ids)
            parts.append(hits)
    mask = np.concatenate(parts, axis=1)
    if mask.shape[1] != n_columns:
        raise ValueError(f"the batch has {mask.shape[1]} candidate columns, the scores {n_columns}")
    if batch.in_batch:
        mask[np.arange(len(users)), np.arange(len(users))] = False  # a row's own positive is never masked
    return mask
