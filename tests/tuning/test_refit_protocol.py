"""The refit protocol of `ssmrec tune --refit`: train + validation, one test evaluation at the end."""

from __future__ import annotations

import pytest

from ssmrec.config import resolve_config
from ssmrec.errors import ConfigError


def test_refit_trains_on_the_whole_train_split_and_evaluates_test() -> None:
    config = resolve_config(flag_values={"data": {"dataset": "ml-100k"}, "protocol": "refit", "epochs": 7,
                                         "eval_every": 7})  # fmt: skip
    assert config.data.valid_ratio == 0.0  # nothing carved
    assert config.evaluated_split == "test"  # evaluated once, after the last epoch
    assert config.selection_split == "valid"  # the epochs come from the trial's validation split


def test_refit_refuses_more_than_one_evaluation() -> None:
    with pytest.raises(ConfigError, match="evaluates the test split once, after the last epoch"):
        resolve_config(flag_values={"protocol": "refit", "epochs": 7, "eval_every": 1})
