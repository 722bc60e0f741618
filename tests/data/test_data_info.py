"""describe(): the summary ``ssmrec data info`` prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssmrec.data import DataSpec, describe, load_dataset
from ssmrec.data.info import gini, popularity_stats


def test_describe_counts_and_cleaning(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("10 100 101 100\n20 101 102\n")
    (tmp_path / "test.txt").write_text("10 102 103\n20 100\n30 101\n")
    data = load_dataset(DataSpec(path=str(tmp_path), valid_ratio=0))
    text = describe(data)
    assert f"dataset {tmp_path.name}" in text
    assert "users 2   items 3   interactions 6" in text
    assert "density 100.0000%" in text
    assert "duplicates dropped: train 1, test 0" in text
    assert "held-out pairs dropped (user or item not in train): test 2" in text
    assert "cold held-out users 1   cold held-out items 1" in text
    assert "item popularity (train): min 1  median 1  mean 1.3  max 2" in text
    assert f"file train.txt  sha256 {data.source['train.txt']}" in text
    assert "read as format=lightgcn, valid_ratio=0, split_seed=2024" in text
    assert f"fingerprint {data.options['fingerprint']}" in text


def test_popularity_stats() -> None:
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert abs(gini(np.array([0, 0, 0, 8])) - 0.75) < 1e-12
    assert gini(np.array([])) == 0.0


def test_popularity_stats_on_known_counts(tmp_path: Path) -> None:
    # item 1 seen by 4 users, items 2..5 by one each: top 20% (1 of 5 items) holds 4 of 8 interactions.
    (tmp_path / "train.txt").write_text("0 1 2\n1 1 3\n2 1 4\n3 1 5\n")
    (tmp_path / "test.txt").write_text("0 3\n")
    stats = popularity_stats(load_dataset(DataSpec(path=str(tmp_path), valid_ratio=0)))
    assert stats["item_pop_max"] == 4 and stats["item_pop_min"] == 1 and stats["item_pop_median"] == 1
    assert stats["top20_item_share"] == 0.5
    assert stats["user_act_mean"] == 2
