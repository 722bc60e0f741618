"""ssmrec: item recommendation with the sampled softmax loss (Wu et al., TOIS 2024)."""

__version__ = "0.1.0"
