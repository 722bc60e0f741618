"""Readers on small hand-written files: exact arrays on good input, file + line on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssmrec.data import read_atomic, read_csv, read_lightgcn, read_lightgcn_file, read_pairs, read_pairs_file
from ssmrec.errors import DataFormatError, DatasetNotFoundError


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def assert_error_at(
    error: pytest.ExceptionInfo[DataFormatError], path: Path, line: int | None, fragment: str
) -> None:
    message = str(error.value)
    assert error.value.path == path
    assert error.value.line == line
    assert path.name in message
    if line is not None:
        assert f"{path.name}:{line}:" in message
    assert fragment in message


# --- LightGCN ---------------------------------------------------------------------------------------------


def test_lightgcn_file_pairs_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "0 5 3\n2 7\n1\n3 3 9 11\n")
    raw = read_lightgcn_file(path)
    assert raw.users.tolist() == [0, 0, 2, 3, 3, 3]
    assert raw.items.tolist() == [5, 3, 7, 3, 9, 11]
    assert raw.users.dtype == np.int64 and raw.path == path


def test_lightgcn_file_crlf_tabs_blank_lines_no_final_newline(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "7 1\t2\r\n\r\n  \n9 4 4\r\n12 3")
    raw = read_lightgcn_file(path)
    assert raw.users.tolist() == [7, 7, 9, 9, 12]
    assert raw.items.tolist() == [1, 2, 4, 4, 3]


def test_lightgcn_folder_roles(tmp_path: Path) -> None:
    write(tmp_path, "train.txt", "0 1 2\n1 2\n")
    write(tmp_path, "test.txt", "0 3\n")
    write(tmp_path, "valid.txt", "1 1\n")
    raw = read_lightgcn(tmp_path)
    assert set(raw.splits) == {"train", "valid", "test"}
    assert raw.splits["valid"].items.tolist() == [1]
    assert raw.files["test"] == tmp_path / "test.txt"


def test_lightgcn_folder_without_test_file(tmp_path: Path) -> None:
    write(tmp_path, "train.txt", "0 1\n")
    with pytest.raises(DatasetNotFoundError, match=r"test\.txt"):
        read_lightgcn(tmp_path)


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ("0 1 2\n1 x 3\n", 2, "'x' is not a non-negative integer"),
        ("0 1\n1 2\n2 -3\n", 3, "negative id '-3'"),
        ("0 1\n1 2.5\n", 2, "'2.5'"),
        ("0 1\n\n5 123456789012345678901\n", 3, "too large"),
        (b"0 1\n1 2\n2 \xff 3\n", 3, "not valid UTF-8"),
    ],
)
def test_lightgcn_malformed_line(tmp_path: Path, content: str | bytes, line: int, fragment: str) -> None:
    path = write(tmp_path, "train.txt", content)
    with pytest.raises(DataFormatError) as error:
        read_lightgcn_file(path)
    assert_error_at(error, path, line, fragment)


@pytest.mark.parametrize("content", ["", "\n \n"])
def test_lightgcn_empty_file(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "test.txt", content)
    with pytest.raises(DataFormatError) as error:
        read_lightgcn_file(path)
    assert_error_at(error, path, None, "empty")


# --- pair files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "0,1\n0,2\n1,1\n",  # SSM / NeuRec gowalla.train
        "0\t1\t5\t881250949\n0\t2\t3\t881250950\n1\t1\t4\t7\n",  # extra integer columns
        "0,1,3.5,x\n0,2,4.0,y\n1,1,1e3,z\n",  # extra non-integer columns take the table path
        "0 1 1\n0 2 1\n\n1 1 1\n",  # SELFRec "u i 1", with a blank line
    ],
)
def test_pairs_file_variants(tmp_path: Path, content: str) -> None:
    raw = read_pairs_file(write(tmp_path, "x.train", content))
    assert raw.users.tolist() == [0, 0, 1]
    assert raw.items.tolist() == [1, 2, 1]


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ("0,1\n0\n", 2, "expected 2 columns, found 1"),
        ("0,1\n1,a\n", 2, "'a' is not a non-negative integer"),
        ("0,1\n-1,2\n", 2, "negative user id '-1'"),
        ("0,1,x\n0,2\n", 2, "expected 3 columns, found 2"),
        ("0,1\n1,,2\n", 2, "''"),
        ("0\n1\n", 1, "at least 2 columns"),
        (b"0,1\n\xc3\x28,1\n", 2, "not valid UTF-8"),
    ],
)
def test_pairs_malformed_line(tmp_path: Path, content: str | bytes, line: int, fragment: str) -> None:
    path = write(tmp_path, "gowalla.train", content)
    with pytest.raises(DataFormatError) as error:
        read_pairs_file(path)
    assert_error_at(error, path, line, fragment)


def test_read_pairs_finds_siblings_from_any_member(tmp_path: Path) -> None:
    write(tmp_path, "g.train", "0,1\n1,2\n")
    write(tmp_path, "g.test", "0,2\n")
    raw = read_pairs(tmp_path / "g.test")
    assert set(raw.splits) == {"train", "test"}
    assert raw.splits["test"].items.tolist() == [2]
    (tmp_path / "g.test").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"g\.test"):
        read_pairs(tmp_path / "g.train")


# --- RecBole atomic ---------------------------------------------------------------------------------------

ATOMIC = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "u1\ti1\t4\t100\n"
    "u2\ti1\t2.5\t50\n"
    "u1\ti2\t5\t200\n"
)


def test_atomic_string_ids_ratings_times(tmp_path: Path) -> None:
    raw = read_atomic(write(tmp_path, "x.inter", ATOMIC))
    part = raw.splits["all"]
    assert part.users.tolist() == ["u1", "u2", "u1"]
    assert part.items.tolist() == ["i1", "i1", "i2"]
    assert part.ratings.tolist() == [4.0, 2.5, 5.0]
    assert part.timestamps.tolist() == [100.0, 50.0, 200.0]
    assert not raw.is_split


def test_atomic_integer_tokens_become_int64_and_threshold(tmp_path: Path) -> None:
    content = "item_id:token\tuser_id:token\trating:float\n242\t196\t3\n302\t186\t1\n7\t196\t4\n"
    raw = read_atomic(write(tmp_path, "ml.inter", content), rating_threshold=3)
    part = raw.splits["all"]
    assert part.users.dtype == np.int64
    assert part.users.tolist() == [196, 196]
    assert part.items.tolist() == [242, 7]
    assert part.timestamps is None  # no timestamp column: fine unless a temporal split needs it
    assert raw.notes == ("rating >= 3 kept 2 of 3 rows",)


def test_atomic_leading_zero_tokens_stay_strings(tmp_path: Path) -> None:
    content = "user_id:token\titem_id:token\n007\t1\n7\t2\n"
    part = read_atomic(write(tmp_path, "x.inter", content)).splits["all"]
    assert part.users.tolist() == ["007", "7"]  # never merged into one id


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ("user_id\titem_id\nu\ti\n", 1, "lacks a type"),
        ("user_id:token\titem_id:banana\nu\ti\n", 1, "unknown type 'banana'"),
        ("user_id:token\titem:token\nu\ti\n", 1, "no column 'item_id'"),
        ("user_id:token\titem_id:token\trating:float\nu\ti\t1\nu\tj\n", 3, "expected 3 columns, found 2"),
        (
            "user_id:token\titem_id:token\trating:float\nu\ti\t1\nu\tj\t2\nv\tk\tgood\n",
            4,
            "'good' is not a number",
        ),
        ("user_id:token\titem_id:token\trating:float\nu\t\t1\n", 2, "empty item id"),
        (b"user_id:token\titem_id:token\nu\ti\nu\t\xe9t\xe9\n", 3, "not valid UTF-8"),
    ],
)
def test_atomic_malformed(tmp_path: Path, content: str | bytes, line: int, fragment: str) -> None:
    path = write(tmp_path, "bad.inter", content)
    with pytest.raises(DataFormatError) as error:
        read_atomic(path)
    assert_error_at(error, path, line, fragment)


def test_atomic_threshold_needs_rating_column(tmp_path: Path) -> None:
    path = write(tmp_path, "x.inter", "user_id:token\titem_id:token\nu\ti\n")
    with pytest.raises(DataFormatError) as error:
        read_atomic(path, rating_threshold=4)
    assert_error_at(error, path, 1, "no column 'rating' in header, needed by rating_threshold")


@pytest.mark.parametrize(
    ("content", "fragment"), [("", "empty"), ("user_id:token\titem_id:token\n", "no data lines")]
)
def test_atomic_empty(tmp_path: Path, content: str, fragment: str) -> None:
    path = write(tmp_path, "x.inter", content)
    with pytest.raises(DataFormatError) as error:
        read_atomic(path)
    assert_error_at(error, path, None, fragment)


# --- CSV / TSV --------------------------------------------------------------------------------------------


def test_csv_named_columns_quotes_and_iso_times(tmp_path: Path) -> None:
    content = 'ts,who,what,stars\n2020-01-02,"smith, j",book,4\n2020-01-01T00:00:10,ann,"pen",5\n'
    raw = read_csv(
        write(tmp_path, "r.csv", content), user_col="who", item_col="what", rating_col="stars", time_col="ts"
    )
    part = raw.splits["all"]
    assert part.users.tolist() == ["smith, j", "ann"]
    assert part.items.tolist() == ["book", "pen"]
    assert part.ratings.tolist() == [4.0, 5.0]
    assert part.timestamps.tolist() == [1577923200.0, 1577836810.0]


def test_tsv_by_extension_and_semicolon_sniffed(tmp_path: Path) -> None:
    tsv = read_csv(write(tmp_path, "r.tsv", "user_id\titem_id\n1\t2\n3\t4\n")).splits["all"]
    assert tsv.users.tolist() == [1, 3] and tsv.items.tolist() == [2, 4]
    semi = read_csv(write(tmp_path, "r.txt", "user_id;item_id;rating\n1;2;3\n")).splits["all"]
    assert semi.items.tolist() == [2] and semi.ratings.tolist() == [3.0]


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ("user,item_id\n1,2\n", 1, "no column 'user_id'"),
        ("user_id,item_id,rating\n1,2,3\n1,3,4\n\n2,2\n", 5, "expected 3 columns, found 2"),
        ("user_id,item_id,rating\n1,2,3\n1,3,n/a\n", 3, "'n/a' is not a number"),
        ('user_id,item_id\n1,2\n"a"b,3\n', 3, "malformed line"),
    ],
)
def test_csv_malformed(tmp_path: Path, content: str, line: int, fragment: str) -> None:
    path = write(tmp_path, "r.csv", content)
    with pytest.raises(DataFormatError) as error:
        read_csv(path)
    assert_error_at(error, path, line, fragment)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="does not exist"):
        read_lightgcn_file(tmp_path / "nope.txt")
