"""Bilateral softmax loss (BSL; Wu et al., "BSL: Understanding and Improving Softmax Loss for
Recommendation", ICDE 2024).

A second temperature τ₁ on the positive side, τ₂ (the usual ``temperature``) on the negatives:

    L_BSL = Σ_b ( −s(u_b, p_b)/τ₁ + (τ₂/τ₁) · log Σ_{j ∈ N_b} exp(s(u_b, j)/τ₂) )

which is ``−log [ exp(s_p/τ₁) / (Σ_j exp(s_j/τ₂))^{τ₂/τ₁} ]``, the form of the authors' code
(github.com/junkangwu/BSL, utils/losses.py) and IR-Benchmark's ``BSLOptimizer``. τ₁ = τ₂ gives the
SL loss (SSM without the positive in the denominator). The positive-side log-sum-exp over positives
is what makes it robust to noisy positives; τ₂/τ₁ is the weight of the negative part.
All other options (negatives, exclude, logQ, reduction) are the SSM family's, with the defaults of
the BSL code: no positive in the denominator, mean over the batch.
"""

from __future__ import annotations

from ssmrec.batch import Batch
from ssmrec.losses.base import Reduction, Similarity
from ssmrec.losses.ssm import SampledSoftmaxLoss, Temperature


class BilateralSoftmaxLoss(SampledSoftmaxLoss):
    """BSL: SSM with its own temperature τ₁ on the positive term (formula in the module docstring)."""

    _one_temperature = False

    def __init__(
        self,
        positive_temperature: float | None = None,
        temperature: float = 0.1,
        similarity: Similarity = "cosine",
        num_negatives: int = 0,
        reduction: Reduction = "mean",
        exclude: str = "none",
        positive_in_denominator: bool = False,
        logq: str = "none",
        learn_temperature: bool = False,
    ) -> None:
        super().__init__(
            temperature=temperature,
            similarity=similarity,
            num_negatives=num_negatives,
            reduction=reduction,
            exclude=exclude,
            positive_in_denominator=positive_in_denominator,
            logq=logq,
            learn_temperature=learn_temperature,
        )
        positive_temperature = temperature if positive_temperature is None else positive_temperature
        if not positive_temperature > 0:
            raise ValueError(f"positive_temperature must be > 0, got {positive_temperature}")
        self.positive_temperature = float(positive_temperature)

    def temperatures(self, batch: Batch | None) -> tuple[Temperature, Temperature, Temperature]:
        tau_negative = self.temperature
        return self.positive_temperature, tau_negative, tau_negative / self.positive_temperature

    def extra_repr(self) -> str:
        return f"positive_temperature={self.positive_temperature:g}, {super().extra_repr()}"
