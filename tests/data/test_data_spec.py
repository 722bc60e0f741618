"""DataSpec validation, format auto-detection and load_dataset over every format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssmrec.data import DataSpec, load_dataset, load_dataset_path
from ssmrec.data.spec import detect_format
from ssmrec.errors import ConfigError, DatasetNotFoundError


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"dataset": "gowalla", "path": "/x"}, "only one"),
        ({"path": ""}, "non-empty"),
        ({"path": "/x", "format": "parquet"}, "data.format"),
        ({"path": "/x", "split": "random"}, "data.split"),
        ({"path": "/x", "test_ratio": 0}, "0 < x < 1"),
        ({"path": "/x", "test_ratio": 1.0}, "0 < x < 1"),
        ({"path": "/x", "test_ratio": "0.2"}, "must be a number"),
        ({"path": "/x", "valid_ratio": -0.1}, "0 <= x < 1"),
        ({"path": "/x", "valid_ratio": float("nan")}, "must be a number"),
        ({"path": "/x", "split_seed": -1}, "split_seed"),
        ({"path": "/x", "split_seed": 1.5}, "split_seed"),
        ({"path": "/x", "split_seed": True}, "split_seed"),
        ({"path": "/x", "rating_threshold": "4"}, "rating_threshold"),
        ({"path": "/x", "rating_threshold": 4, "rating_col": None}, "needs data.rating_col"),
        ({"path": "/x", "user_col": ""}, "user_col"),
        ({"path": "/x", "split": "leave-last-out", "time_col": None}, "needs data.time_col"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        DataSpec(**kwargs)  # type: ignore[arg-type]


def test_spec_without_data_is_refused_at_load() -> None:
    spec = DataSpec()  # allowed, so configs can be layered
    with pytest.raises(ConfigError, match="no data given"):
        load_dataset(spec)


def test_spec_from_dict_and_defaults() -> None:
    spec = DataSpec.from_dict({"dataset": "gowalla", "valid_ratio": 0})
    assert spec.split_seed == 2024 and spec.test_ratio == 0.2 and spec.format == "auto"
    assert spec.to_dict()["dataset"] == "gowalla"
    with pytest.raises(ConfigError, match=r"unknown data key.*valid_ration"):
        DataSpec.from_dict({"dataset": "gowalla", "valid_ration": 0})
    assert DataSpec(path=Path("/tmp")).path == "/tmp"  # type: ignore[arg-type]


def test_detect_format(tmp_path: Path) -> None:
    lightgcn = tmp_path / "lg"
    lightgcn.mkdir()
    (lightgcn / "train.txt").write_text("0 1\n")
    (lightgcn / "test.txt").write_text("0 1\n")
    assert detect_format(lightgcn) == ("lightgcn", lightgcn)
    assert detect_format(lightgcn / "test.txt") == ("lightgcn", lightgcn)
    atomic = tmp_path / "at"
    atomic.mkdir()
    (atomic / "ml.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    (atomic / "ml.item").write_text("")
    assert detect_format(atomic) == ("atomic", atomic / "ml.inter")
    pairs = tmp_path / "pa"
    pairs.mkdir()
    (pairs / "g.train").write_text("0,1\n")
    (pairs / "g.test").write_text("0,1\n")
    assert detect_format(pairs) == ("pairs", pairs / "g.train")
    assert detect_format(pairs / "g.test") == ("pairs", pairs / "g.train")
    (tmp_path / "x.tsv").touch()
    assert detect_format(tmp_path / "x.tsv") == ("csv", tmp_path / "x.tsv")
    (tmp_path / "notes.dat").write_text("")
    with pytest.raises(ConfigError, match=r"set data\.format"):
        detect_format(tmp_path / "notes.dat")
    assert detect_format(tmp_path / "notes.dat", "csv") == ("csv", tmp_path / "notes.dat")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="no data files"):
        detect_format(empty)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        detect_format(tmp_path / "missing")


def test_load_every_format_gives_the_same_dataset(tmp_path: Path) -> None:
    train_pairs = [(0, 1), (0, 2), (1, 2), (2, 0)]
    test_pairs = [(0, 0), (1, 1), (2, 2)]
    lg = tmp_path / "lg"
    lg.mkdir()
    (lg / "train.txt").write_text("0 1 2\n1 2\n2 0\n")
    (lg / "test.txt").write_text("0 0\n1 1\n2 2\n")
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "d.train").write_text("".join(f"{u},{i}\n" for u, i in train_pairs))
    (pairs / "d.test").write_text("".join(f"{u}\t{i}\n" for u, i in test_pairs))
    expected_train = [[0, 1, 1], [0, 0, 1], [1, 0, 0]]
    for path in (lg, pairs / "d.train"):
        data = load_dataset_path(path, valid_ratio=0)
        np.testing.assert_array_equal(data.train.toarray(), expected_train)
        np.testing.assert_array_equal(data.test.toarray(), np.eye(3))
        assert data.options["format"] == ("lightgcn" if path == lg else "pairs")
        assert all(len(digest) == 64 for digest in data.source.values())  # source: file -> sha256 only
    assert load_dataset_path(lg, valid_ratio=0).name == "lg"
    assert load_dataset_path(pairs / "d.train", valid_ratio=0).name == "d"


def test_atomic_load_with_threshold(tmp_path: Path) -> None:
    rows = [(u, i, 5 if (u + i) % 2 else 1, u * 10 + i) for u in range(4) for i in range(6)]
    path = tmp_path / "r.inter"
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join("\t".join(map(str, row)) + "\n" for row in rows)
    )
    data = load_dataset(DataSpec(path=str(path), rating_threshold=4, valid_ratio=0, test_ratio=0.34))
    total = data.train.nnz + data.test.nnz + data.report.dropped_eval_pairs["test"]
    assert total == 12  # half the rows have rating 5
    assert "rating >= 4 kept 12 of 24 rows" in data.report.notes
    assert data.test.nnz + data.report.dropped_eval_pairs["test"] == 4  # round(0.34 * 3) = 1 per user
    assert data.options["rating_threshold"] == 4 and data.options["test_ratio"] == 0.34
    assert data.options["format"] == "atomic" and data.source == {"r.inter": data.source["r.inter"]}


def test_threshold_on_format_without_ratings(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 1\n")
    (tmp_path / "test.txt").write_text("0 1\n")
    with pytest.raises(ConfigError, match="needs ratings"):
        load_dataset(DataSpec(path=str(tmp_path), rating_threshold=3))


def test_missing_test_file(tmp_path: Path) -> None:
    (tmp_path / "x.train").write_text("0,1\n")
    with pytest.raises(DatasetNotFoundError, match=r"x\.test"):
        load_dataset(DataSpec(path=str(tmp_path / "x.train")))


def test_for_target_path_or_name(tmp_path: Path) -> None:
    assert DataSpec.for_target(tmp_path, valid_ratio=0).path == str(tmp_path)
    assert DataSpec.for_target("ml-1m-full").dataset == "ml-1m-full"
    with pytest.raises(DatasetNotFoundError, match="unknown dataset 'nope'"):
        DataSpec.for_target("nope")
