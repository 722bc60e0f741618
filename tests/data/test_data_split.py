"""Per-user ratio split, leave-last-out, and the validation carve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssmrec.data import DataSpec, load_dataset
from ssmrec.data.split import holdout_count, last_holdout, ratio_holdout, rng_for
from ssmrec.errors import ConfigError

SIZES = [1, 2, 3, 5, 10, 20]


def grouped_users(sizes: list[int], shuffle_seed: int = 0) -> np.ndarray:
    users = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # non-contiguous ids
    return np.random.default_rng(shuffle_seed).permutation(users)


def test_holdout_count_rounds_half_up_and_keeps_one_in_train() -> None:
    # 0.2 * n: 0.2, 0.4, 0.6, 1.0, 2.0, 4.0 -> 0 (n=1 keeps its only one), 0, 1, 1, 2, 4
    assert holdout_count(np.array(SIZES), 0.2).tolist() == [0, 0, 1, 1, 2, 4]
    assert holdout_count(np.array([2, 4, 10]), 0.5).tolist() == [1, 2, 5]
    assert holdout_count(np.array([1, 2, 3]), 0.9).tolist() == [0, 1, 2]


def test_ratio_holdout_per_user_counts_and_seeds() -> None:
    users = grouped_users(SIZES)
    held = ratio_holdout(users, 0.2, rng_for(1, 0))
    per_user = {int(u): int(held[users == u].sum()) for u in np.unique(users)}
    assert list(per_user.values()) == [0, 0, 1, 1, 2, 4]
    again = ratio_holdout(users, 0.2, rng_for(1, 0))
    np.testing.assert_array_equal(held, again)
    others = [ratio_holdout(users, 0.2, rng_for(seed, 0)) for seed in range(2, 6)]
    assert any(not np.array_equal(held, other) for other in others)


def write_csv(path: Path, rows: list[tuple[object, ...]], header: str = "user_id,item_id,timestamp") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def matrix_pairs(data, name: str) -> set[tuple[int, int]]:  # type: ignore[no-untyped-def]
    rows, cols = data.splits()[name].nonzero()
    return {(int(data.user_ids[u]), int(data.item_ids[i])) for u, i in zip(rows, cols, strict=True)}


def test_ratio_split_of_unsplit_file(tmp_path: Path) -> None:
    # 10 users x 10 items, every item seen by every user so nothing can go cold.
    rows = [(u, i, u * 100 + i) for u in range(10) for i in range(10)]
    path = write_csv(tmp_path / "all.csv", rows)
    spec = DataSpec(path=str(path), test_ratio=0.3, valid_ratio=0.0, split_seed=7)
    data = load_dataset(spec)
    train, test = matrix_pairs(data, "train"), matrix_pairs(data, "test")
    assert np.diff(data.test.indptr).tolist() == [3] * 10  # 0.3 * 10 per user
    assert train.isdisjoint(test)
    assert train | test == {(u, i) for u, i, _ in rows}
    again = load_dataset(spec, use_cache=False)
    assert (again.test != data.test).nnz == 0
    other = load_dataset(DataSpec(path=str(path), test_ratio=0.3, valid_ratio=0.0, split_seed=8))
    assert (other.test != data.test).nnz > 0


def test_validation_carve_is_independent_of_test_split(tmp_path: Path) -> None:
    rows = [(u, i, 0) for u in range(6) for i in range(20)] + [(6, 0, 0)]
    path = write_csv(tmp_path / "all.csv", rows)
    no_valid = load_dataset(DataSpec(path=str(path), valid_ratio=0.0))
    with_valid = load_dataset(DataSpec(path=str(path), valid_ratio=0.25))
    assert (no_valid.test != with_valid.test).nnz == 0  # changing valid_ratio never moves test items
    train, valid = matrix_pairs(with_valid, "train"), matrix_pairs(with_valid, "valid")
    assert train.isdisjoint(valid)
    assert train | valid == matrix_pairs(no_valid, "train")
    # users 0-5: 20 items, 4 to test, then round(0.25 * 16) = 4 to valid; user 6 keeps its single item.
    assert np.diff(with_valid.valid.indptr).tolist() == [4] * 6 + [0]
    assert (6, 0) in train


def test_valid_carved_from_prepared_split(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 " + " ".join(map(str, range(10))) + "\n1 3\n")
    (tmp_path / "test.txt").write_text("0 5\n")
    data = load_dataset(DataSpec(path=str(tmp_path), valid_ratio=0.2))
    assert data.valid is not None
    assert np.diff(data.valid.indptr).tolist()[data.user_index()[1]] == 0  # single training item stays
    # user 0 gives round(0.2 * 10) = 2 items to valid; one unique to valid goes cold and is dropped
    carved = data.valid.nnz + data.report.dropped_eval_pairs["valid"]
    assert carved == 2
    assert data.train.nnz + carved == 11


def test_leave_last_out_holds_each_users_latest(tmp_path: Path) -> None:
    rows = [
        ("a", "x", 5),
        ("a", "y", 9),  # a's latest
        ("a", "z", 1),
        ("b", "x", 3),
        ("b", "z", 3),  # tie with the row above: the later row counts as later
        ("c", "y", 4),  # single interaction: stays in train
        ("d", "x", 2),
        ("d", "y", 1),
    ]
    path = write_csv(tmp_path / "log.csv", rows)
    data = load_dataset(DataSpec(path=str(path), split="leave-last-out", valid_ratio=0.0))
    test = {(data.user_ids[u], data.item_ids[i]) for u, i in zip(*data.test.nonzero(), strict=True)}
    assert test == {("a", "y"), ("b", "z"), ("d", "x")}
    with_valid = load_dataset(DataSpec(path=str(path), split="leave-last-out", valid_ratio=0.1))
    valid = {
        (with_valid.user_ids[u], with_valid.item_ids[i])
        for u, i in zip(*with_valid.valid.nonzero(), strict=True)
    }
    assert valid == {("a", "x")}  # second-latest of users that still have two training items


def test_last_holdout_direct() -> None:
    users = np.array([1, 2, 1, 2, 3])
    times = np.array([5.0, 1.0, 5.0, 0.5, 9.0])
    assert last_holdout(users, times).tolist() == [False, True, True, False, False]


def test_leave_last_out_without_timestamps(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "x.csv", [(1, 2), (1, 3)], header="user_id,item_id")
    with pytest.raises(ConfigError, match="needs timestamps"):
        load_dataset(DataSpec(path=str(path), split="leave-last-out"))
