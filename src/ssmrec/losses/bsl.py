"""Bilateral softmax loss (BSL; Wu et al., "BSL: Understanding and Improving Softmax Loss for
Recommendation", ICDE 2024).

A temperature τ₁ on the positive, τ₂ (the usual ``temperature``) on the negatives and a weight w on
their log-sum:

    L_BSL = Σ_b ( −s(u_b, p_b)/τ₁ + w · log Σ_{j ∈ N_b} exp(s(u_b, j)/τ₂) )

Two published forms fill in w, and they are not the same loss:

* the paper's pseudo-code and IR-Benchmark's ``BSLOptimizer`` take w = τ₂/τ₁ (the default,
  ``negative_weight=None``). That form is (τ₂/τ₁) times the SL loss at τ₂: τ₁ only rescales the
  loss, which under Adam changes nothing but the regulariser's relative weight;
* the authors' code (github.com/junkangwu/BSL, utils/losses.py ``Pos_DROLoss``, ``pos_mode=reweight``),
  which produced the paper's numbers, uses one τ (τ₁ = τ₂) and a free weight w (its
  ``temperature_2``: 0.84 for Gowalla LightGCN, 1.12 for Yelp2018). Here that is
  ``positive_temperature = temperature`` (the default) with ``negative_weight = w``.

τ₁ = τ₂ and w = 1 give the SL loss (SSM without the positive in the denominator).
All other options (negatives, exclude, logQ, reduction) are the SSM family's, with the defaults of
the BSL code: no positive in the denominator, mean over the batch.
"""

from __future__ import annotations

from ssmrec.batch import Batch
from ssmrec.losses.base import Reduction, Similarity
from ssmrec.losses.ssm import SampledSoftmaxLoss, Temperature


class BilateralSoftmaxLoss(SampledSoftmaxLoss):
    """BSL: SSM with its own temperature τ₁ on the positive term and weight w on the negatives'
    log-sum (formula and the two published choices of w in the module docstring)."""

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
        negative_weight: float | None = None,
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
        if negative_weight is not None and not negative_weight > 0:
            raise ValueError(f"negative_weight must be > 0, got {negative_weight}")
        self.negative_weight = None if negative_weight is None else float(negative_weight)

    def temperatures(self, batch: Batch | None) -> tuple[Temperature, Temperature, Temperature]:
        tau_negative = self.temperature
        weight = self.negative_weight
        if weight is None:
            weight = tau_negative / self.positive_temperature
        return self.positive_temperature, tau_negative, weight

    def extra_repr(self) -> str:
        weight = "τ2/τ1" if self.negative_weight is None else f"{self.negative_weight:g}"
        return (
            f"positive_temperature={self.positive_temperature:g}, negative_weight={weight}, "
            f"{super().extra_repr()}"
        )
