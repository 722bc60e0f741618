"""Cleaning and indexing: duplicates, cold held-out ids, natural id order, id round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssmrec.data import DataSpec, RawData, RawSplit, load_dataset
from ssmrec.data.build import build_interactions, dedupe


def make_folder(folder: Path, train: str, test: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    return folder


def test_duplicates_and_cold_held_out_pairs(tmp_path: Path) -> None:
    # train: (10,100) twice; test: (20,100) twice, item 103 and user 30 never in train.
    folder = make_folder(tmp_path / "d", "10 100 101 100\n20 101 102\n", "10 102 103\n20 100 100\n30 101\n")
    data = load_dataset(DataSpec(path=str(folder), valid_ratio=0))
    assert data.user_ids.tolist() == [10, 20]
    assert data.item_ids.tolist() == [100, 101, 102]
    np.testing.assert_array_equal(data.train.toarray(), [[1, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(data.test.toarray(), [[0, 0, 1], [1, 0, 0]])
    assert data.valid is None
    report = data.report
    assert report.duplicates_dropped == {"train": 1, "test": 1}
    assert report.dropped_eval_pairs == {"test": 2}
    assert report.cold_test_users == 1 and report.cold_test_items == 1
    assert data.train.dtype == np.float32 and data.train.has_sorted_indices


def test_id_round_trip_and_numeric_order(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d", "10 2\n9 10 1\n100 2\n", "9 2\n")
    data = load_dataset(DataSpec(path=str(folder), valid_ratio=0))
    assert data.user_ids.tolist() == [9, 10, 100]  # numeric, not "10" < "100" < "9"
    assert data.item_ids.tolist() == [1, 2, 10]
    users, items = data.user_index(), data.item_index()
    for original in (9, 10, 100):
        assert data.user_ids[users[original]] == original
    for original in (1, 2, 10):
        assert data.item_ids[items[original]] == original
    rows, cols = data.train.nonzero()
    pairs = {(int(data.user_ids[u]), int(data.item_ids[i])) for u, i in zip(rows, cols, strict=True)}
    assert pairs == {(10, 2), (9, 10), (9, 1), (100, 2)}


def test_string_ids_sort_lexicographically() -> None:
    train = RawSplit(users=np.array(["b", "a", "c10", "c9"]), items=np.array(["x", "y", "x", "y"]))
    test = RawSplit(users=np.array(["a"]), items=np.array(["x"]))
    data = build_interactions("s", RawData("csv", {"train": train, "test": test}), valid_ratio=0)
    assert data.user_ids.tolist() == ["a", "b", "c10", "c9"]
    assert data.user_index()["c9"] == 3
    np.testing.assert_array_equal(data.test.toarray(), [[1, 0], [0, 0], [0, 0], [0, 0]])


def test_test_pairs_also_in_train_are_kept_and_noted(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d", "0 1 2\n1 1\n", "0 1\n1 2\n")
    data = load_dataset(DataSpec(path=str(folder), valid_ratio=0))
    assert data.test.nnz == 2
    assert "1 test pairs also occur in train (kept)" in data.report.notes


def test_dedupe_keeps_latest_timestamp_in_input_order() -> None:
    raw = RawSplit(
        users=np.array([1, 1, 2, 1]),
        items=np.array([5, 6, 5, 5]),
        timestamps=np.array([10.0, 3.0, 1.0, 20.0]),
    )
    kept, dropped = dedupe(raw)
    assert dropped == 1
    assert kept.users.tolist() == [1, 2, 1] and kept.items.tolist() == [6, 5, 5]
    assert kept.timestamps.tolist() == [3.0, 1.0, 20.0]
    plain, dropped = dedupe(RawSplit(users=np.array([1, 1, 1]), items=np.array([5, 6, 5])))
    assert dropped == 1 and plain.items.tolist() == [5, 6]


def test_huge_integer_ids_use_the_sorting_path() -> None:
    big = 10**15
    train = RawSplit(users=np.array([big, 5, big]), items=np.array([3, big + 1, big + 1]))
    test = RawSplit(users=np.array([5, 6]), items=np.array([3, 3]))
    data = build_interactions("big", RawData("pairs", {"train": train, "test": test}), valid_ratio=0)
    assert data.user_ids.tolist() == [5, big] and data.item_ids.tolist() == [3, big + 1]
    np.testing.assert_array_equal(data.train.toarray(), [[0, 1], [1, 1]])
    np.testing.assert_array_equal(data.test.toarray(), [[1, 0], [0, 0]])
    assert data.report.cold_test_users == 1
