"""Training pairs and negative samplers, all drawn from one seeded generator and vectorised."""

from __future__ import annotations

from ssmrec.sampling.negatives import (
    AliasTable,
    InBatchSampler,
    MixedSampler,
    NegativeSampler,
    NoNegatives,
    PopularitySampler,
    SharedSampler,
    TrainingSet,
    UniformNegativeSampler,
    UniformSampler,
    build_sampler,
    reject_training_items,
)
from ssmrec.sampling.pairs import TrainingPairs

__all__ = [
    "AliasTable",
    "InBatchSampler",
    "MixedSampler",
    "NegativeSampler",
    "NoNegatives",
    "PopularitySampler",
    "SharedSampler",
    "TrainingPairs",
    "TrainingSet",
    "UniformNegativeSampler",
    "UniformSampler",
    "build_sampler",
    "reject_training_items",
]
