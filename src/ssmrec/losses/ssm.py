"""The sampled softmax (SSM) family: one implementation, orthogonal options.

For row b of a batch (user u_b, positive p_b) with candidate negatives N_b (see
:mod:`ssmrec.losses.candidates`), scores ``s(u, i) = cos(u, i)`` (or ``uᵀi`` with ``similarity="dot"``)
and temperature τ:

    L_SSM = Σ_b ( log Σ_{j ∈ D_b} exp(s(u_b, j)/τ − c_j) − (s(u_b, p_b)/τ − c_{p_b}) )

* ``D_b = {p_b} ∪ N_b`` with ``positive_in_denominator=True`` (the official SSM code), ``D_b = N_b``
  without it (the "SL" form of BSL / IR-Benchmark).
* ``N_b``: the other positives of the batch (in-batch, the default; duplicates of p_b included, as
  the official code does), M sampled items, or both (mixed); ``exclude`` removes accidental hits from
  ``N_b`` (their logits become −inf; the batch is unchanged).
* logQ (``c``): ``none``: c = 0. ``standard``: ``c_j = log q(j)`` on every logit, the positive's too
  (Yi et al., RecSys 2019), q being the sampler's expected count of j among a row's draws.
  ``corrected`` (Khrylchenko et al., "Correcting the LogQ Correction", RecSys 2025): the positive is
  always in the denominator with probability 1, not Monte Carlo sampled, so only negatives are
  corrected (``c_{p_b} = 0``), and the row is weighted by the detached ``1 − p_b``, where
  ``p_b = exp(s_p/τ) / (exp(s_p/τ) + Σ_{j∈N_b} exp(s_j/τ − log q(j)))`` is the model's probability of
  the positive: the gradient of the full softmax is ``(1 − p)`` times (positive pull − expected
  negative push), and the push is estimated by self-normalised importance sampling over ``N_b``.
  The paper's form has the positive outside the log-sum (``positive_in_denominator=False``).
* τ is fixed, or learnable as one scalar (optimised as ``log τ``, so it stays positive).
* ``reduction``: sum (official) or mean over the batch.

The log-sum-exp form is the numerically stable evaluation of ``−log softmax``. Its gradient with
respect to a negative's score is its softmax weight divided by τ (the hard-negative property).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmrec.batch import Batch
from ssmrec.defaults import LOGQ, SOFTMAX_CHUNK
from ssmrec.losses.base import Objective, Reduction, Similarity, masked_logsumexp, reduce
from ssmrec.losses.candidates import (
    EXCLUDE,
    Candidates,
    SharedColumns,
    column_log_q,
    score_candidates,
    shared_columns,
)
from ssmrec.losses.logsumexp import Temperature, chunked_logsumexp


def _column(value: Temperature) -> Temperature:
    """A per-row temperature (B, 1) as (B,) for the positive's logit; scalars unchanged."""
    return value.squeeze(1) if isinstance(value, Tensor) and value.dim() == 2 else value


class SampledSoftmaxLoss(Objective):
    """SSM with any negative source, exclusion, logQ and denominator option (formula in the module)."""

    _one_temperature = True  # positive and negatives share τ and the log-sum weight is 1

    def __init__(
        self,
        temperature: float = 0.1,
        similarity: Similarity = "cosine",
        num_negatives: int = 0,
        reduction: Reduction = "sum",
        exclude: str = "none",
        positive_in_denominator: bool = True,
        logq: str = "none",
        learn_temperature: bool = False,
    ) -> None:
        super().__init__(reduction)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
        if exclude not in EXCLUDE:
            raise ValueError(f"exclude must be one of {', '.join(EXCLUDE)}, got {exclude!r}")
        if logq not in LOGQ:
            raise ValueError(f"logq must be one of {', '.join(LOGQ)}, got {logq!r}")
        self.similarity: Similarity = similarity
        self.num_negatives = num_negatives
        self.exclude = exclude
        self.positive_in_denominator = positive_in_denominator
        self.logq = logq
        self.learn_temperature = learn_temperature
        self._fixed_temperature = float(temperature)
        if learn_temperature:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def temperature(self) -> Temperature:
        """τ: a float, or a 0-d tensor with gradient when learnable."""
        return self.log_temperature.exp() if self.learn_temperature else self._fixed_temperature

    def scoring(self) -> tuple[str, float]:
        """The similarity and the (current, possibly learned) temperature of the negatives' log-sum."""
        return self.similarity, float(torch.as_tensor(self.temperature).detach())

    def temperatures(self, batch: Batch | None) -> tuple[Temperature, Temperature, Temperature]:
        """(τ of the positive term, τ of the log-sum, weight of the log-sum): (τ, τ, 1) for SSM."""
        tau = self.temperature
        return tau, tau, 1.0

    def logits(self, users: Tensor, positives: Tensor, negatives: Tensor | None) -> tuple[Tensor, Tensor]:
        """Logits ``s/τ`` over each row's candidates and the column of each row's positive."""
        candidates = score_candidates(users, positives, negatives, None, self.similarity)
        return candidates.scores / self.temperature, candidates.target

    def forward(
        self, users: Tensor, positives: Tensor, negatives: Tensor | None, batch: Batch | None = None
    ) -> Tensor:
        if self._shares_columns(negatives, batch):
            return reduce(self.shared_column_losses(users, positives, negatives, batch), self.reduction)
        candidates = score_candidates(users, positives, negatives, batch, self.similarity, self.exclude)
        return reduce(self.row_losses(candidates, batch), self.reduction)

    def _shares_columns(self, negatives: Tensor | None, batch: Batch | None) -> bool:
        """Every row has the same candidate columns (in-batch, plus negatives shared by the batch), and
        with logQ also the same log q per column: then the loss is a log-sum-exp over one product,
        whatever :meth:`temperatures` gives (SSM's one τ, BSL's τ₁ and τ₂, Adap-τ's τ per row)."""
        in_batch = batch.in_batch if batch is not None else negatives is None
        return (
            (self.logq == "none" or column_log_q(batch) is not None)
            and in_batch
            and (negatives is None or negatives.dim() == 2)
        )

    def shared_column_losses(
        self, users: Tensor, positives: Tensor, negatives: Tensor | None, batch: Batch | None
    ) -> Tensor:
        """The per-row loss (B,) when all rows share their columns, by the chunked log-sum-exp kernel.

        Same value and gradient as :meth:`row_losses` on the (B, K) score matrix up to float rounding,
        but the logits are never stored whole and τ divides B × d user rows instead of B × K logits:
        one LightGCN-1L + SSM step on Gowalla (B = 2048) went from 39.3 to 30–32 ms per batch
        (``python benchmarks/profile_step.py``, before and after), the 2048 × 2048 log-softmax and its
        backward being the largest part removed. Masked accidental hits and, in the SL form, each row's
        own positive are dropped pairs of the sum. BSL's τ₁ and log-sum weight
        (:meth:`temperatures`) apply to the positive term and the log-sum as in :meth:`row_losses`, and
        so does logQ: the kernel subtracts log q from every column; the corrected form's positive
        enters the sum without it, so it is left out of the kernel and added back.
        """
        shared = shared_columns(users, positives, negatives, batch, self.similarity, self.exclude)
        return self.shared_column_rows(shared, batch)

    def shared_column_rows(self, shared: SharedColumns, batch: Batch | None) -> Tensor:
        """:meth:`shared_column_losses` on prepared columns (Adap-τ reuses them for its unscaled loss)."""
        tau_positive, tau, weight = self.temperatures(batch)
        log_q = None if self.logq == "none" else shared.log_q
        if self.logq != "none" and log_q is None:
            raise ValueError("logQ correction needs the sampler's log q in the batch")
        corrected = self.logq == "corrected"
        drop_rows, drop_columns = shared.dropped(positive=self.positive_in_denominator and not corrected)
        log_sum = chunked_logsumexp(
            shared.users, shared.columns, tau, drop_rows, drop_columns, SOFTMAX_CHUNK, log_q
        )
        scores = shared.positive_scores()
        positive_logit = scores / _column(tau_positive)
        if self.logq == "standard":
            positive_logit = positive_logit - log_q[: scores.shape[0]]
        if corrected:  # the positive's own logit, without log q, in the denominator and in p(positive)
            own = scores / _column(tau)
            everything = torch.logaddexp(log_sum, own)
            if self.positive_in_denominator:
                log_sum = everything
            p_positive = (own - everything).detach().exp()
        # a row whose every column is dropped carries no signal (its log-sum is −inf); it is zeroed
        # before the weight multiplies it, or a learnable weight's gradient would be 0 · (−inf) = NaN
        finite = torch.isfinite(log_sum)
        log_sum = torch.where(finite, log_sum, torch.zeros_like(log_sum))
        rows = weight * log_sum - positive_logit
        if corrected:
            rows = (1.0 - p_positive) * rows
        return torch.where(finite, rows, torch.zeros_like(rows))

    def row_losses(self, candidates: Candidates, batch: Batch | None) -> Tensor:
        """The per-row loss (B,) of the module formula."""
        tau_positive, tau, weight = self.temperatures(batch)
        if (
            self._one_temperature
            and candidates.excluded is None
            and self.positive_in_denominator
            and self.logq == "none"
        ):  # the official SSM computation, as one cross-entropy
            return F.cross_entropy(candidates.scores / tau, candidates.target, reduction="none")
        logits = candidates.scores / tau
        is_target = candidates.target_mask()
        positive_logit = candidates.positive / _column(tau_positive)
        if self.logq == "standard":
            log_q = candidates.broadcast_log_q()
            logits = logits - log_q
            positive_logit = positive_logit - log_q.gather(1, candidates.target.unsqueeze(1)).squeeze(1)
        elif self.logq == "corrected":
            logits = logits - candidates.broadcast_log_q().masked_fill(is_target, 0.0)
        negative = ~is_target if candidates.excluded is None else ~is_target & ~candidates.excluded
        denominator = negative | is_target if self.positive_in_denominator else negative
        log_sum, nonempty = masked_logsumexp(logits, denominator)
        rows = weight * log_sum - positive_logit
        if self.logq == "corrected":
            with torch.no_grad():
                everything, _ = masked_logsumexp(logits, negative | is_target)
                p_positive = (logits.gather(1, candidates.target.unsqueeze(1)).squeeze(1) - everything).exp()
            rows = (1.0 - p_positive) * rows
        if nonempty is not None:  # a row whose every candidate is masked carries no signal
            rows = torch.where(nonempty, rows, torch.zeros_like(rows))
        return rows

    def extra_repr(self) -> str:
        tau = float(torch.as_tensor(self.temperature).detach())
        learn = " (learnable)" if self.learn_temperature else ""
        return (
            f"similarity={self.similarity}, temperature={tau:g}{learn}, exclude={self.exclude}, "
            f"positive_in_denominator={self.positive_in_denominator}, logq={self.logq}, "
            f"reduction={self.reduction}"
        )
