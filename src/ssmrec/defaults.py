"""The one table of per-loss and per-model defaults, each with the source it comes from.

Keys are flat config keys (:data:`ssmrec.config.FLAT_KEYS`). Two uses:

* A loss's row lists **every option that loss has**, with its default: the config resolves the
  options a run leaves unset from it (so ``--loss ccl`` means SimpleX's CCL without further flags),
  and refuses an option that is not in the row (``--margin`` with SSM). A model's row does the same
  for the model options (``layers`` is not in MF's row). Optimisation keys in a loss's row (batch
  size, learning rate, regulariser) are not applied by ``ssmrec train``: the config keeps its own.
* ``ssmrec grid`` applies a loss's whole row (and a model's row) to every cell of that loss (model),
  so each objective runs with the settings its paper used.

Adding a loss option: a field of :class:`ssmrec.config.LossSpec`, an entry in the rows of the losses
that have it, and the keyword of the same name in their classes' ``__init__``.

The module holds data only (no torch import), so the CLI and config can read it cheaply.
"""

from __future__ import annotations

from typing import Any

LOSSES = ("ssm", "softmax", "bpr", "bce", "mse", "ccl", "bsl", "adap-tau")
"""Every objective ``--loss`` accepts."""

SAMPLED_SOFTMAX = ("ssm", "bsl", "adap-tau")
"""The sampled-softmax family: temperature, logQ, positive-in-denominator and every negative source."""

SOFTMAX_FAMILY = (*SAMPLED_SOFTMAX, "softmax")
"""Losses with a temperature (the sampled family plus the full softmax)."""

MODELS = ("mf", "lightgcn", "history", "ngcf")
"""Every encoder ``--model`` accepts."""

NEGATIVES = ("in-batch", "uniform", "popularity", "shared", "mixed")
"""Where a batch's negatives come from (see :mod:`ssmrec.sampling.negatives`)."""

EXCLUDE = ("none", "duplicates", "train")
LOGQ = ("none", "standard", "corrected")

SOFTMAX_CHUNK = 512
"""Columns per chunk of the softmax losses' log-sum-exp (:mod:`ssmrec.losses.logsumexp` has the
measurement behind it)."""

_POINTWISE: dict[str, Any] = {
    "negatives": "uniform",
    "num_negatives": 4,
    "reduction": "mean",
    "exclude": "none",
    "negative_weight": None,
    "reg": 1e-4,
    "batch_size": 2048,
    "lr": 1e-3,
}
"""BCE and MSE share NCF's sampling and LightGCN-PyTorch's optimisation (sources at their entries below)."""

LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    # Official SSM (Wu et al., TOIS 2024; github.com/wujcan/SSM-TensorFlow, conf/SSM.properties and
    # model/general_recommender/SSM.py): neg_dist=0 (in-batch), flag_l2_norm (cosine), temp=0.1,
    # tf.reduce_sum over the batch, the positive inside logsumexp, no masking, no logQ;
    # batch_size=2048, Adam lr=0.001. The per-dataset tau/reg of the ssm-<dataset> presets apply on top.
    "ssm": {
        "negatives": "in-batch",
        "num_negatives": 0,
        "similarity": "cosine",
        "temperature": 0.1,
        "reduction": "sum",
        "positive_in_denominator": True,
        "exclude": "none",
        "logq": "none",
        "learn_temperature": False,
        "batch_size": 2048,
        "lr": 1e-3,
    },
    # Full softmax: the limit of SSM with every item a candidate, so SSM's settings (source as above).
    "softmax": {
        "similarity": "cosine",
        "temperature": 0.1,
        "reduction": "sum",
        "positive_in_denominator": True,
        "exclude": "none",
        "learn_temperature": False,
        "softmax_chunk_size": SOFTMAX_CHUNK,
        "batch_size": 2048,
        "lr": 1e-3,
    },
    # BPR as LightGCN-PyTorch (He et al., SIGIR 2020; github.com/gusye1234/LightGCN-PyTorch, parse.py):
    # one uniform negative outside the user's training items, bpr_batch=2048, lr=0.001,
    # decay=1e-4 on ½‖·‖²/B (mean reduction).
    "bpr": {
        "negatives": "uniform",
        "num_negatives": 1,
        "reduction": "mean",
        "exclude": "none",
        "reg": 1e-4,
        "batch_size": 2048,
        "lr": 1e-3,
    },
    # BCE: NCF's pointwise log loss (He et al., WWW 2017;
    # github.com/hexiangnan/neural_collaborative_filtering, num_neg=4): 4 uniform negatives per positive.
    # Optimisation settings as BPR above (same source).
    "bce": _POINTWISE,
    # MSE with targets 1/0: the same pointwise sampling as BCE (NCF, num_neg=4); optimisation as BPR.
    "mse": _POINTWISE,
    # CCL: SimpleX (Mao et al., CIKM 2021), the authors' MF-CCL Gowalla run (reczoo benchmark
    # MF-CCL_gowalla_x0: num_negs=800, 810128 pairs in 3165 batches = batch 256), margin 0.9,
    # negative weight 150, Adam lr 1e-4, cosine scores, mean over the batch. The L2 weight of that run is
    # not in its log; we use none.
    "ccl": {
        "negatives": "uniform",
        "num_negatives": 800,
        "margin": 0.9,
        "negative_weight": 150.0,
        "reduction": "mean",
        "exclude": "none",
        "reg": 0.0,
        "batch_size": 256,
        "lr": 1e-4,
    },
    # BSL (Wu et al., ICDE 2024; github.com/junkangwu/BSL utils/losses.py, IR-Benchmark's BSLOptimizer):
    # the positive is not in the denominator, cosine, mean over the batch. tau1 (positive_temperature)
    # defaults to tau and the log-sum weight (negative_weight) to tau2/tau1, which makes BSL the plain
    # SL loss. The authors' code keeps tau1 = tau2 and tunes the weight (0.84 Gowalla, 1.12 Yelp2018).
    "bsl": {
        "negatives": "in-batch",
        "num_negatives": 0,
        "similarity": "cosine",
        "temperature": 0.1,
        "reduction": "mean",
        "positive_in_denominator": False,
        "positive_temperature": None,
        "negative_weight": None,
        "exclude": "none",
        "logq": "none",
        "learn_temperature": False,
        "batch_size": 2048,
        "lr": 1e-3,
    },
    # Adap-tau (Chen et al., WWW 2023; github.com/junkangwu/Adap_tau main.py, utils/parser.py,
    # modules/MF_tau.py): SL form (no positive in the denominator), cosine, mean, cnt_lr=10 warm-up epochs,
    # temperature_2=1.0 (Lambert-W scale), tau_mode weight_mean. ``temperature`` is only the fallback
    # 1/w0 of degenerate data (see ssmrec.losses.adaptive).
    "adap-tau": {
        "negatives": "in-batch",
        "num_negatives": 0,
        "similarity": "cosine",
        "temperature": 0.1,
        "reduction": "mean",
        "positive_in_denominator": False,
        "exclude": "none",
        "logq": "none",
        "adaptive_warmup": 10,
        "adaptive_scale": 1.0,
        "batch_size": 2048,
        "lr": 1e-3,
    },
}

MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mf": {},
    # Official SSM code: n_layers=1, side=both (None), alpha=[0.5, 0.5]; "auto" picks the batch-local
    # propagation where it is exact and faster (ssmrec.models.lightgcn).
    "lightgcn": {"layers": 1, "propagation": "auto", "side": None, "alpha": (0.5, 0.5)},
    # The SSM paper's history encoder: side=user with one layer (SSM.py, _create_SVDpp_embed).
    "history": {"layers": 1, "propagation": "auto", "side": None, "alpha": (0.5, 0.5)},
    # NGCF (Wang et al., SIGIR 2019; github.com/huangtinglin/NGCF-PyTorch): 3 layers of 64, mess_dropout 0.1.
    "ngcf": {"layers": 3, "message_dropout": 0.1},
}

BETA_DEFAULTS: dict[str, float] = {
    # The official SSM code draws neg_dist negatives from popularity**beta with beta=1.0 (SSM.properties).
    "popularity": 1.0,
    "shared": 1.0,
    # Mixed negative sampling (Yang et al., WWW 2020) adds uniformly drawn items to the in-batch ones.
    "mixed": 0.0,
}

# ------------------------------------------------------------------------------------ search spaces
#
# What ``ssmrec tune`` searches for each loss and model, next to the defaults it searches around. Keys
# are flat config keys; an entry is a range ``{"low", "high", "log"}`` (the key's config type decides
# float or integer), a list ``{"choices": [...]}``, or a fixed ``{"value": x}``; ``"when": {key: [...]}``
# makes an entry apply only when another key of the trial takes one of those values. A ``--space`` TOML
# file of the same shape (one table per key) replaces entries or adds new ones
# (:mod:`ssmrec.tuning.space` validates it).
#
# Sources of the ranges: they bracket the published settings in the rows above rather than reproduce a
# paper's grid. SSM's τ is 0.1 by default and 0.12 / 0.14 / 0.1 in the official Gowalla / Yelp2018 /
# Amazon-Book settings (the ssm-* presets), so τ spans [0.03, 0.5] on a log scale; the official L2
# weights are 1e-5 (Gowalla, Yelp2018) and 1e-1 (Amazon-Book), so reg spans [1e-6, 1e-1] on a log scale.
# The official SSM code has two negative modes (in-batch, and M sampled ones); ssmrec adds mixed
# negatives (Yang et al., WWW 2020: in-batch plus M uniform ones), with M in [16, 1024] log, and the logQ
# correction of Khrylchenko et al. (RecSys 2025; ssmrec.losses.ssm) against its absence.

_TEMPERATURE = {"low": 0.03, "high": 0.5, "log": True}
_SOFTMAX_REG = {"low": 1e-6, "high": 1e-1, "log": True}
_SOFTMAX_NEGATIVES: dict[str, dict[str, Any]] = {
    "negatives": {"choices": ["in-batch", "mixed"]},
    "num_negatives": {"low": 16, "high": 1024, "log": True, "when": {"negatives": ["mixed"]}},
    "logq": {"choices": ["none", "corrected"]},
}

LOSS_SEARCH_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "ssm": {"temperature": _TEMPERATURE, "reg": _SOFTMAX_REG, **_SOFTMAX_NEGATIVES},
    "softmax": {"temperature": _TEMPERATURE, "reg": _SOFTMAX_REG},
    # BSL as its authors tune it (github.com/junkangwu/BSL, BEST/ logs): one τ over the SSM range and the
    # negatives' log-sum weight (their temperature_2, 0.80-1.32 in the published best runs). A separate
    # τ1 with the default weight τ2/τ1 would only rescale the loss, so it is not searched.
    "bsl": {
        "temperature": _TEMPERATURE,
        "negative_weight": {"low": 0.5, "high": 1.5},
        "reg": _SOFTMAX_REG,
        **_SOFTMAX_NEGATIVES,
    },
    # Adap-τ learns each user's τ; what is left is the official code's Lambert-W scale temperature_2 = 1.0
    # (a decade each way; 0.6 and 1.5 in the published Gowalla and Yelp2018 LightGCN logs) and its cnt_lr
    # warm-up epochs: 10 by default, 100 in those logs, whose best epochs (59 on Gowalla) fall inside it.
    "adap-tau": {
        "adaptive_scale": {"low": 0.1, "high": 10.0, "log": True},
        "adaptive_warmup": {"low": 0, "high": 100},
        "reg": _SOFTMAX_REG,
        **_SOFTMAX_NEGATIVES,
    },
    # BPR as LightGCN-PyTorch, with its --decay (1e-4) and --lr (1e-3) flags searched a decade or two
    # around those values.
    "bpr": {"reg": {"low": 1e-6, "high": 1e-2, "log": True}, "lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    # NCF's pointwise losses (He et al., WWW 2017) with 4 negatives per positive; its experiments vary the
    # number of negatives per positive from 1 to 10. L2 weight around LightGCN-PyTorch's 1e-4 as for BPR.
    "bce": {"reg": {"low": 1e-6, "high": 1e-2, "log": True}, "num_negatives": {"low": 1, "high": 10}},
    "mse": {"reg": {"low": 1e-6, "high": 1e-2, "log": True}, "num_negatives": {"low": 1, "high": 10}},
    # SimpleX's CCL: margin 0.9 and negative weight 150 in the authors' Gowalla run; ranges around them.
    "ccl": {
        "margin": {"low": 0.0, "high": 0.95},
        "negative_weight": {"low": 1.0, "high": 500.0, "log": True},
        "reg": {"low": 1e-6, "high": 1e-2, "log": True},
    },
}
"""Per-loss search spaces of ``ssmrec tune`` (sources in the comments above)."""

MODEL_SEARCH_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "mf": {},
    # LightGCN (He et al., SIGIR 2020) reports 1 to 4 layers; the official SSM settings use 1 or 3.
    "lightgcn": {"layers": {"low": 1, "high": 3}},
    "history": {},  # one layer by definition
    # NGCF's 3 layers and message dropout 0.1 (its paper varies both); 1-3 layers, dropout 0-0.5.
    "ngcf": {"layers": {"low": 1, "high": 3}, "message_dropout": {"low": 0.0, "high": 0.5}},
}
"""Per-model search spaces of ``ssmrec tune``."""
