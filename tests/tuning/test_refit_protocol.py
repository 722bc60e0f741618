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


def test_the_report_says_how_the_refits_data_differs_from_the_trials() -> None:
    """ML-1M's real case (measured: 3,673 items and 200,353 test pairs in the trials' data, 3,686 and
    200,362 in the refit's): the report names exactly the counts that differ, and nothing when none do."""
    from ssmrec.tuning.report import data_difference

    trials = {"users": 6040, "items": 3673, "train_interactions": 720000, "test_interactions": 200353}
    refit = {**trials, "items": 3686, "train_interactions": 800000, "test_interactions": 200362}
    text = data_difference(trials, refit)
    assert text is not None
    assert "3,686 items against 3,673" in text and "200,362 test pairs against 200,353" in text
    assert "users" not in text.split(" in the trials' data")[0]  # equal user counts are not listed
    assert data_difference(trials, {**trials, "train_interactions": 1}) is None  # train always grows
    assert data_difference(None, refit) is None and data_difference(trials, None) is None
