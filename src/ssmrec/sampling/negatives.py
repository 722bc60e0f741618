"""Negative samplers: one interface, vectorised draws from the run's seeded numpy generator.

``sampler.sample(users, positives, rng) -> Negatives`` gives a batch's negative ids and, for every
candidate column, the log of its *expected count* among a row's draws, ``log(K·q(j))`` with K the
number of draws and q the sampler's distribution. With these, ``Σ_{j∈draws} exp(s_j − log K q(j))`` is
an unbiased estimate of ``Σ_{all j} exp(s_j)``, which is what the logQ corrections need; a constant
factor (K) cancels in the standard correction.

Samplers
--------
``in-batch``   the other rows' positives (no draw). An item appears among the B−1 other positives
               ``(B−1)·f(j)`` times on average, ``f(j) = count(j) / #pairs`` (the epoch is a shuffle
               of all pairs).
``uniform``    M items per row, uniform over the items the user has *not* interacted with in
               training (rejection against the training set): ``q_u(j) = 1 / (n_items − |I_u|)``.
``popularity`` M items per row from ``count(j)^β`` (alias table, O(1) per draw), training items of
               the user rejected: ``q_u(j) = count(j)^β / (W − W_u)``, W the total weight, W_u the
               weight of the user's training items.
``shared``     one set of M items for the whole batch from ``count(j)^β``, nothing rejected: the
               official SSM code's ``neg_dist=1``. Accidental hits are masked by the loss
               (``exclude``), not by the sampler, since the set is shared by users.
``mixed``      in-batch plus M shared items from ``count(j)^β`` (β = 0: uniform): mixed negative
               sampling (Yang et al., WWW 2020). A column's expected count is that of both proposals
               together, ``(B−1)·f(j) + M·q(j)`` (the balance heuristic of multiple importance sampling).

Rejection draws everything at once, looks every (user, item) up in the sorted keys
``user · n_items + item`` of the training matrix with ``searchsorted``, and redraws only the hits; the
loop runs over rejection rounds (a handful), never over samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ssmrec.data.training_set import TrainingSet
from ssmrec.defaults import BETA_DEFAULTS, NEGATIVES

MAX_ROUNDS = 1000


@dataclass(frozen=True)
class Negatives:
    """What a negative sampler returns for one batch.

    ``ids``: sampled item ids, (B, M) per row, (M,) shared by the batch, or ``None``.
    ``in_batch``: the batch's positives are candidates of every row too.
    ``log_q``: log of each candidate column's expected number of occurrences among a row's draws
    under the sampler (positive columns included; see :mod:`ssmrec.batch` for the column order),
    broadcastable to (B, K); ``None`` when the sampler has no proposal (full softmax).
    ``rejects_training``: sampled ids are never a training item of their row's user.
    """

    ids: Tensor | None
    in_batch: bool
    log_q: Tensor | None = None
    rejects_training: bool = False


def reject_training_items(
    training: TrainingSet,
    users: np.ndarray,
    items: np.ndarray,
    draw: Callable[[int, np.random.Generator], np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """Redraw (with ``draw``) every ``items[k]`` that is a training item of ``users[k]``, until none is."""
    redraw = np.flatnonzero(training.contains(users, items))
    rounds = 0
    while len(redraw):
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise RuntimeError("negative sampling did not converge; a user has almost every item")
        items[redraw] = draw(len(redraw), rng)
        redraw = redraw[training.contains(users[redraw], items[redraw])]
    return items


class AliasTable:
    """Walker's alias method (Vose's construction): O(1) draws from a fixed discrete distribution."""

    def __init__(self, weights: np.ndarray) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or len(weights) == 0 or np.any(weights < 0) or not np.isfinite(weights).all():
            raise ValueError("alias table weights must be a non-empty vector of finite non-negative numbers")
        total = weights.sum()
        if total <= 0:
            raise ValueError("alias table weights must not all be zero")
        n = len(weights)
        self.probabilities = weights / total
        scaled = self.probabilities * n
        self._accept = np.ones(n, dtype=np.float64)
        self._alias = np.arange(n, dtype=np.int64)
        small = np.flatnonzero(scaled < 1.0).tolist()
        large = np.flatnonzero(scaled >= 1.0).tolist()
        while small and large:  # one pass over the items, at construction only
            lesser, greater = small.pop(), large.pop()
            self._accept[lesser] = scaled[lesser]
            self._alias[lesser] = greater
            scaled[greater] += scaled[lesser] - 1.0
            (small if scaled[greater] < 1.0 else large).append(greater)
        # leftovers are 1 up to rounding: accept them outright (their alias is themselves)

    def __len__(self) -> int:
        return len(self._accept)

    def sample(self, size: int, rng: np.random.Generator) -> np.ndarray:
        column = rng.integers(0, len(self._accept), size=size, dtype=np.int64)
        coin = rng.random(size)
        return np.where(coin < self._accept[column], column, self._alias[column])


class UniformNegativeSampler:
    """Items drawn uniformly from those a user has no training interaction with (ids only)."""

    MAX_ROUNDS = MAX_ROUNDS

    def __init__(self, train: sp.csr_matrix, training: TrainingSet | None = None) -> None:
        self.training = training if training is not None else TrainingSet(train)
        self.n_items = self.training.n_items
        full = np.flatnonzero(self.training.user_counts >= self.n_items)
        if len(full):
            raise ValueError(f"user {int(full[0])} interacted with every item: no negative can be sampled")

    def _draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.n_items, size=size, dtype=np.int64)

    def sample(self, users: Tensor, num: int, rng: np.random.Generator) -> Tensor:
        """``len(users) × num`` negatives (int64), none of them a training item of its row's user."""
        user_array = np.repeat(users.numpy().astype(np.int64), num)
        items = reject_training_items(
            self.training, user_array, self._draw(len(user_array), rng), self._draw, rng
        )
        return torch.from_numpy(items.reshape(len(users), num))


def _log(values: np.ndarray) -> Tensor:
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(values).astype(np.float32))


class NegativeSampler:
    """Interface of the negative sources: ``sample(users, positives, rng) -> Negatives``."""

    name = ""
    in_batch = False
    rejects_training = False

    def __init__(self, training: TrainingSet | None, num_negatives: int = 0) -> None:
        self.training = training
        self.num_negatives = num_negatives
        self._frequency = (
            training.item_counts / max(1, training.n_pairs) if training is not None else None
        )  # f(j): share of the training pairs whose item is j

    def sample(self, users: Tensor, positives: Tensor, rng: np.random.Generator) -> Negatives:
        raise NotImplementedError

    def _in_batch_counts(self, items: np.ndarray, batch_size: int) -> np.ndarray:
        """Expected occurrences of ``items`` among the other B−1 positives of a batch."""
        assert self._frequency is not None
        return max(batch_size - 1, 1) * self._frequency[items]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_negatives={self.num_negatives})"


class NoNegatives(NegativeSampler):
    """No negatives: the objective scores all items itself (full softmax)."""

    name = "none"

    def sample(self, users: Tensor, positives: Tensor, rng: np.random.Generator) -> Negatives:
        return Negatives(ids=None, in_batch=False)


class InBatchSampler(NegativeSampler):
    """The batch's other positives are each row's negatives (the official SSM default)."""

    name = "in-batch"
    in_batch = True

    def sample(self, users: Tensor, positives: Tensor, rng: np.random.Generator) -> Negatives:
        if self._frequency is None:
            return Negatives(ids=None, in_batch=True)
        counts = self._in_batch_counts(positives.numpy(), len(positives))
        return Negatives(ids=None, in_batch=True, log_q=_log(counts).unsqueeze(0))


class UniformSampler(NegativeSampler):
    """M uniform negatives per row, never a training item of the row's user."""

    name = "uniform"
    rejects_training = True

    def __init__(self, training: TrainingSet, num_negatives: int) -> None:
        super().__init__(training, num_negatives)
        self._sampler = UniformNegativeSampler(training.matrix, training)

    def sample(self, users: Tensor, positives: Tensor, rng: np.random.Generator) -> Negatives:
        ids = self._sampler.sample(users, self.num_negatives, rng)
        assert self.training is not None
        allowed = self.training.n_items - self.training.user_counts[users.numpy()]
        log_q = _log(self.num_negatives / allowed.astype(np.float64)).unsqueeze(1)  # (B, 1): same per column
        return Negatives(ids=ids, in_batch=False, log_q=log_q, rejects_training=True)


class _WeightedSampler(NegativeSampler):
    """Shared part of the samplers that draw from ``count(j)^β`` with an alias table."""

    def __init__(self, training: TrainingSet, num_negatives: int, beta: float) -> None:
        super().__init__(training, num_negatives)
        self.beta = beta
        # 0**0 is 1: beta = 0 is uniform over all items, unseen ones included
        self.weights = training.item_counts.astype(np.float64) ** beta
        self.total = float(self.weights.sum())
        self.table = AliasTable(self.weights)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_negatives={self.num_negatives}, beta={self.beta})"


class PopularitySampler(_WeightedSampler):
    """M negatives per row from ``count(j)^β``, the row user's training items rejected."""

    name = "popularity"
    rejects_training = True

    def __init__(self, training: TrainingSet, num_negatives: int, beta: float) -> None:
        super().__init__(training, num_negatives, beta)
        user_mass = np.bincount(
            training.pair_users, weights=self.weights[training.matrix.indices], minlength=training.n_users
        )
        self.remaining = self.total - user_mass  # W − W_u
        starved = np.flatnonzero(self.remaining <= self.total * 1e-12)
        if len(starved):
            raise ValueError(
                f"user {int(starved[0])} has no item of positive probability outside its training items "
                f"under popularity^{beta}: no negative can be sampled"
            )

    def sample(self, users: Tensor, positives: Tensor, rng: np.random.Generator) -> Negatives:
        assert self.training is not None
        user_ids = users.numpy().astype(np.int64)
        user_array = np.repeat(user_ids, self.num_negatives)
        items = reject_training_items(
            self.training, user_array, self.table.sample(len(user_array), rng), self.table.sample, rng
        )
        ids = items.reshape(len(users), self.num_negatives)
        columns = np.concatenate([positives.numpy()[:, None], ids], axis=1)
        counts = self.num_negatives * self.weights[columns] / self.remaining[user_ids][:, None]
        return Negatives(ids=torch.from_numpy(ids), in_batch=False, log_q=_log(counts), rejects_training=True)


class SharedSampler(_WeightedSampler):
    """One set of M negatives for the whole batch from ``count(j)^β`` (official SSM ``neg_dist=1``)."""

    name = "shared"

    def sample(self, users: Tensor, positives: Tensor, rng: np.random.Generator) -> Negatives:
        ids = self.table.sample(self.num_negatives, rng)
        positive_counts = self.num_negatives * self.weights[positives.numpy()] / self.total
        shared_counts = self.num_negatives * self.weights[ids] / self.total
        counts = np.concatenate(
            [positive_counts[:, None], np.broadcast_to(shared_counts, (len(positives), len(ids)))], axis=1
        )
        return Negatives(ids=torch.from_numpy(ids), in_batch=False, log_q=_log(counts))


class MixedSampler(_WeightedSampler):
    """In-batch negatives plus M items shared by the batch from ``count(j)^β`` (MNS; β = 0 uniform)."""

    name = "mixed"
    in_batch = True

    def sample(self, users: Tensor, positives: Tensor, rng: np.random.Generator) -> Negatives:
        ids = self.table.sample(self.num_negatives, rng)
        columns = np.concatenate([positives.numpy(), ids])
        counts = (
            self._in_batch_counts(columns, len(positives))
            + self.num_negatives * self.weights[columns] / self.total
        )
        return Negatives(ids=torch.from_numpy(ids), in_batch=True, log_q=_log(counts).unsqueeze(0))


def build_sampler(
    name: str, training: TrainingSet, num_negatives: int = 0, beta: float | None = None
) -> NegativeSampler:
    """The sampler called ``name`` (one of :data:`ssmrec.defaults.NEGATIVES`, or ``none``)."""
    if name == "none":
        return NoNegatives(training)
    if name not in NEGATIVES:
        raise ValueError(f"unknown negatives {name!r}; choose one of {', '.join(NEGATIVES)}")
    if name == "in-batch":
        if num_negatives:
            raise ValueError("in-batch negatives draw nothing: num_negatives must be 0")
        if beta is not None:
            raise ValueError("beta applies to popularity, shared and mixed negatives only")
        return InBatchSampler(training)
    if num_negatives < 1:
        raise ValueError(f"{name} negatives need num_negatives >= 1, got {num_negatives}")
    if name == "uniform":
        if beta is not None:
            raise ValueError("beta applies to popularity, shared and mixed negatives only")
        return UniformSampler(training, num_negatives)
    beta = BETA_DEFAULTS[name] if beta is None else beta
    kinds: dict[str, type[_WeightedSampler]] = {
        "popularity": PopularitySampler,
        "shared": SharedSampler,
        "mixed": MixedSampler,
    }
    return kinds[name](training, num_negatives, beta)
