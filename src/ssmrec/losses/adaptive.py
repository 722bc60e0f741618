"""Adap-τ: per-user adaptive temperatures (Chen et al., "Adap-τ: Adaptively Modulating Embedding
Magnitude for Recommendation", WWW 2023), as the authors' code computes them
(github.com/junkangwu/Adap_tau: main.py, modules/MF_tau.py, utils/losses.py, ``tau_mode=weight_mean``).

With cosine scores, an inverse temperature w₀ on the positive and a per-user inverse temperature β_u
on the negatives (the positive is not in the denominator, as in the authors' loss):

    L_b = −w₀ · s(u_b, p_b) + log Σ_{j ∈ N_b} exp(β_{u_b} · s(u_b, j))

Both are set before every epoch, not learned by gradient:

* w₀ = (log ½ + log(|U'|·n_items) − log|Y'|) / g, where U' are the users with more training items
  than the 20 % quantile, Y' their training pairs, and g = 0.7 during the first ``warmup`` epochs,
  afterwards g = (mean cosine of the pairs Y') − (mean over U' of the cosine to the mean item),
  from the current representations: w₀ is the scale at which a positive beats the average item.
* β_u = w₀ · exp(−W(z_u)), z_u = clip((ℓ_u − mean_u ℓ) / t₂, −1/e, 1000), with W the principal
  Lambert W branch, ℓ_u the user's mean unscaled loss ``−s_p + log Σ_j exp(s_j)`` over the previous
  epoch, and t₂ = ``scale``: users the model fits badly get a smaller β (a higher temperature).
  Before any loss is recorded every β_u is w₀.

Guards for degenerate (tiny) data, not in the authors' code: g is floored at 1e-3, and a non-positive
w₀ falls back to 1/τ.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import lambertw
from torch import Tensor

from ssmrec.batch import Batch
from ssmrec.defaults import SOFTMAX_CHUNK
from ssmrec.losses.base import EpochContext, Reduction, Similarity, masked_logsumexp, reduce
from ssmrec.losses.candidates import score_candidates, shared_columns
from ssmrec.losses.logsumexp import chunked_logsumexp
from ssmrec.losses.ssm import SampledSoftmaxLoss, Temperature

logger = logging.getLogger("ssmrec")

WARMUP_GAP = 0.7
"""The assumed positive-vs-average cosine gap during warm-up (``b = -0.7`` in the authors' code)."""


class AdaptiveTemperatureLoss(SampledSoftmaxLoss):
    """Adap-τ (formula and update rules in the module docstring)."""

    _one_temperature = False
    carries_batch_state = True  # forward accumulates each row's loss into its user's sums

    def __init__(
        self,
        temperature: float = 0.1,
        similarity: Similarity = "cosine",
        num_negatives: int = 0,
        reduction: Reduction = "mean",
        exclude: str = "none",
        positive_in_denominator: bool = False,
        logq: str = "none",
        adaptive_warmup: int = 10,
        adaptive_scale: float = 1.0,
    ) -> None:
        super().__init__(
            temperature=temperature,
            similarity=similarity,
            num_negatives=num_negatives,
            reduction=reduction,
            exclude=exclude,
            positive_in_denominator=positive_in_denominator,
            logq=logq,
        )
        if adaptive_warmup < 0:
            raise ValueError(f"adaptive_warmup must be >= 0, got {adaptive_warmup}")
        if not adaptive_scale > 0:
            raise ValueError(f"adaptive_scale must be > 0, got {adaptive_scale}")
        self.warmup = adaptive_warmup
        self.scale = adaptive_scale
        self.positive_inverse_temperature = 1.0 / temperature  # w₀, until the first epoch sets it
        self.user_inverse_temperature: Tensor | None = None  # β_u per user
        self._loss_sum: Tensor | None = None
        self._loss_count: Tensor | None = None

    def temperatures(self, batch: Batch | None) -> tuple[Temperature, Temperature, Temperature]:
        tau_positive = 1.0 / self.positive_inverse_temperature
        if self.user_inverse_temperature is None or batch is None:
            return tau_positive, tau_positive, 1.0
        return tau_positive, 1.0 / self.user_inverse_temperature[batch.users].unsqueeze(1), 1.0

    def forward(
        self, users: Tensor, positives: Tensor, negatives: Tensor | None, batch: Batch | None = None
    ) -> Tensor:
        self._follow(users.device)
        record = batch is not None and self._loss_sum is not None
        if self._shares_columns(negatives, batch):  # in-batch: the chunked kernel, no (B, K) matrix
            shared = shared_columns(users, positives, negatives, batch, self.similarity, self.exclude)
            rows = self.shared_column_rows(shared, batch)
            if record:
                with torch.no_grad():
                    log_sum = chunked_logsumexp(
                        shared.users, shared.columns, 1.0, *shared.dropped(positive=False), SOFTMAX_CHUNK
                    )
                    self._record(batch, log_sum - shared.positive_scores(), torch.isfinite(log_sum))
            return reduce(rows, self.reduction)
        candidates = score_candidates(users, positives, negatives, batch, self.similarity, self.exclude)
        rows = self.row_losses(candidates, batch)
        if record:
            with torch.no_grad():
                negative = ~candidates.target_mask()
                if candidates.excluded is not None:
                    negative &= ~candidates.excluded
                log_sum, nonempty = masked_logsumexp(candidates.scores, negative)
                keep = nonempty if nonempty is not None else torch.ones_like(log_sum, dtype=torch.bool)
                self._record(batch, log_sum - candidates.positive, keep)
        return reduce(rows, self.reduction)

    def _record(self, batch: Batch | None, unscaled: Tensor, keep: Tensor) -> None:
        """Add each kept row's unscaled loss ℓ = −s_p + log Σ_{j ∈ N} exp(s_j), from which next epoch's
        β_u are derived, to its user's sums."""
        assert batch is not None and self._loss_sum is not None and self._loss_count is not None
        unscaled = unscaled.double()
        self._loss_sum.index_add_(0, batch.users[keep], unscaled[keep])
        self._loss_count.index_add_(0, batch.users[keep], torch.ones_like(unscaled[keep]))

    def _follow(self, device: torch.device) -> None:
        """Keep the per-user state on the batch's device (a checkpoint restores it on the CPU)."""
        for name in ("user_inverse_temperature", "_loss_sum", "_loss_count"):
            value = getattr(self, name)
            if value is not None and value.device != device:
                setattr(self, name, value.to(device))

    @torch.no_grad()
    def begin_epoch(self, context: EpochContext) -> None:
        n_users, n_items = context.train.shape
        counts = np.diff(context.train.indptr).astype(np.int64)
        active = counts > np.quantile(counts, 0.2)
        if not active.any():
            active = counts > 0
        n_pairs = int(counts[active].sum())
        log_odds = math.log(0.5) + math.log(int(active.sum()) * n_items) - math.log(max(n_pairs, 1))
        gap = WARMUP_GAP if context.epoch <= self.warmup else self._score_gap(context, counts, active)
        w0 = log_odds / max(gap, 1e-3)
        if not w0 > 0:
            w0 = 1.0 / self._fixed_temperature
        beta = torch.full((n_users,), w0, dtype=torch.float32)
        if (
            self._loss_count is not None
            and self._loss_count.shape[0] == n_users
            and self._loss_count.sum() > 0
        ):
            loss_sum, loss_count = self._loss_sum.cpu(), self._loss_count.cpu()
            seen = loss_count > 0
            user_loss = (loss_sum[seen] / loss_count[seen]).numpy()
            z = np.clip((user_loss - user_loss.mean()) / self.scale, -1.0 / math.e, 1000.0)
            branch = -1.0 / math.e  # W(-1/e) = -1; scipy returns nan exactly at the branch point
            w = np.where(z > branch, lambertw(np.maximum(z, branch + 1e-15)).real, -1.0)
            beta[seen] = torch.from_numpy(w0 * np.exp(-w)).float()
        self.positive_inverse_temperature = w0
        device = context.model.user_embedding.weight.device
        self.user_inverse_temperature = beta.to(device)
        self._loss_sum = torch.zeros(n_users, dtype=torch.float64, device=device)
        self._loss_count = torch.zeros(n_users, dtype=torch.float64, device=device)
        logger.info(
            "adap-tau epoch %d: w0 %.3f (gap %.3f), user beta in [%.3f, %.3f]",
            context.epoch,
            w0,
            gap,
            float(beta.min()),
            float(beta.max()),
        )

    def scoring(self) -> tuple[str, float]:
        """The similarity and the mean per-user temperature 1/β_u of the last epoch (1/w₀ before one)."""
        if self.user_inverse_temperature is None:
            return self.similarity, 1.0 / self.positive_inverse_temperature
        return self.similarity, float((1.0 / self.user_inverse_temperature).mean())

    def checkpoint_tensors(self) -> dict[str, Tensor]:
        tensors = super().checkpoint_tensors()
        for name in ("user_inverse_temperature", "_loss_sum", "_loss_count"):
            value = getattr(self, name)
            if value is not None:
                tensors[f"adaptive.{name}"] = value
        return tensors

    def checkpoint_values(self) -> dict[str, Any]:
        return {"positive_inverse_temperature": self.positive_inverse_temperature}

    def restore_checkpoint(self, tensors: dict[str, Tensor], values: dict[str, Any]) -> None:
        own = {k: v for k, v in tensors.items() if not k.startswith("adaptive.")}
        super().restore_checkpoint(own, values)
        for name in ("user_inverse_temperature", "_loss_sum", "_loss_count"):
            value = tensors.get(f"adaptive.{name}")
            setattr(self, name, None if value is None else value.clone())
        self.positive_inverse_temperature = float(values["positive_inverse_temperature"])

    @staticmethod
    def _score_gap(context: EpochContext, counts: np.ndarray, active: np.ndarray) -> float:
        """Mean cosine of the active users' training pairs minus their mean cosine to the mean item."""
        users, items = context.model.representations()
        users, items = F.normalize(users, dim=1), F.normalize(items, dim=1)
        pair_users = np.repeat(np.arange(len(counts)), counts)
        chosen = active[pair_users]
        pair_users = torch.from_numpy(pair_users[chosen]).to(users.device)
        pair_items = torch.from_numpy(context.train.indices[chosen].astype(np.int64)).to(users.device)
        total = 0.0
        for start in range(0, len(pair_users), 65536):
            rows, cols = pair_users[start : start + 65536], pair_items[start : start + 65536]
            total += float((users[rows] * items[cols]).sum())
        positive = total / max(1, len(pair_users))
        active_users = torch.from_numpy(np.flatnonzero(active)).to(users.device)
        average = float((users[active_users] @ items.mean(dim=0)).mean())
        return positive - average

    def extra_repr(self) -> str:
        return f"warmup={self.warmup}, scale={self.scale:g}, {super().extra_repr()}"
