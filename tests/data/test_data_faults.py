"""Issue #13, data layer: triples vs LightGCN, streams, huge tokens, int64 ids, bad paths.

Every case is a tiny hand-written folder or file with the expected arrays or message worked out by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ssmrec.data import DataSpec, _text, load_dataset, read_atomic, read_csv, read_pairs_file, registry
from ssmrec.data.readers import read_lightgcn_file, read_triples_file
from ssmrec.data.spec import FORMATS, detect_format
from ssmrec.errors import DataFormatError, DatasetNotFoundError


def folder(root: Path, name: str, **files: str) -> Path:
    path = root / name
    path.mkdir()
    for file_name, content in files.items():
        (path / f"{file_name}.txt").write_text(content)
    return path


def load(path: Path, **options: object) -> object:
    return load_dataset(DataSpec(path=str(path), valid_ratio=0, **options))  # type: ignore[arg-type]


# --- 1. triples ("user item 1" / "user item rating") are not LightGCN lines ------------------------------

# Pairs train (0,1) (0,2) (1,2) (2,0), test (0,0) (1,1) (2,2): the third field is the constant 1.
SELFREC_TRAIN = "0 1 1\n0 2 1\n1 2 1\n2 0 1\n"
SELFREC_TEST = "0 0 1\n1 1 1\n2 2 1\n"
EXPECTED_TRAIN = [[0, 1, 1], [0, 0, 1], [1, 0, 0]]


def test_triples_in_format_list() -> None:
    assert "triples" in FORMATS


def test_selfrec_folder_reads_as_pairs_not_lightgcn(tmp_path: Path) -> None:
    path = folder(tmp_path, "selfrec", train=SELFREC_TRAIN, test=SELFREC_TEST)
    assert detect_format(path) == ("triples", path)
    data = load(path)
    assert data.options["format"] == "triples"  # type: ignore[attr-defined]
    np.testing.assert_array_equal(data.train.toarray(), EXPECTED_TRAIN)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(data.test.toarray(), np.eye(3))  # type: ignore[attr-defined]
    # Read as LightGCN, "1" would be an item every user has: 3 items + item 1 for all.
    misread = load(path, format="lightgcn")
    assert misread.train.toarray()[:, list(misread.item_ids).index(1)].sum() == 3  # type: ignore[attr-defined]
    # user 0's line "0 1 1" and "0 2 1" give items 1, 1, 2, 1: two repeats; test user 1 "1 1 1": one.
    assert misread.report.duplicates_dropped == {"train": 2, "test": 1}  # type: ignore[attr-defined]


def test_triples_with_ratings_and_threshold(tmp_path: Path) -> None:
    path = folder(tmp_path, "rated", train="0 1 4.5\n0 2 2\n1 2 5\n2 0 3\n", test="0 0 4\n1 1 1\n2 2 5\n")
    assert detect_format(path) == ("triples", path)
    raw = read_triples_file(path / "train.txt")
    assert raw.ratings.tolist() == [4.5, 2.0, 5.0, 3.0]  # type: ignore[union-attr]
    data = load(path, rating_threshold=3)
    # kept: train (0,1) (1,2) (2,0); test (0,0) (2,2); (1,1) has rating 1.
    np.testing.assert_array_equal(data.train.toarray(), [[0, 1, 0], [0, 0, 1], [1, 0, 0]])  # type: ignore[attr-defined]
    np.testing.assert_array_equal(data.test.toarray(), [[1, 0, 0], [0, 0, 0], [0, 0, 1]])  # type: ignore[attr-defined]
    assert "train: rating >= 3 kept 3 of 4 rows" in data.report.notes  # type: ignore[attr-defined]
    assert "test: rating >= 3 kept 2 of 3 rows" in data.report.notes  # type: ignore[attr-defined]


def test_ambiguous_three_field_folder_is_refused_naming_both(tmp_path: Path) -> None:
    # A genuine LightGCN folder where every user has 2 items: also valid triples with ratings 2..6.
    path = folder(
        tmp_path,
        "two",
        train="".join(f"{u} {u + 10} {u + 30}\n" for u in range(12)),
        test="".join(f"{u} {u + 50} {u + 70}\n" for u in range(12)),
    )
    with pytest.raises(DataFormatError) as error:
        load(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ambiguous format")
    assert "--format lightgcn" in message and "--format triples" in message
    assert "LightGCN (user item item" in message and "triples (user item rating" in message
    as_lightgcn = load(path, format="lightgcn")
    assert as_lightgcn.train.nnz == 24 and as_lightgcn.n_items == 24  # type: ignore[attr-defined]
    as_triples = load(path, format="triples")
    assert as_triples.train.nnz == 12 and as_triples.n_items == 12  # type: ignore[attr-defined]


def test_three_field_train_with_two_field_test_is_lightgcn(tmp_path: Path) -> None:
    # Test lines of 2 fields cannot be triples, and nothing contradicts LightGCN: read it so.
    path = folder(tmp_path, "lg", train="0 1 2\n1 1 3\n2 1 4\n3 1 5\n", test="0 3\n")
    assert detect_format(path) == ("lightgcn", path)


def test_broken_triple_is_not_silently_read_as_lightgcn(tmp_path: Path) -> None:
    path = folder(tmp_path, "broken", train=SELFREC_TRAIN, test=SELFREC_TEST + "2 1 1 1\n")
    with pytest.raises(DataFormatError) as error:
        load(path)
    message = str(error.value)
    assert "test.txt:4 has 4 fields" in message and "user '0' is on 2 lines of train.txt" in message
    assert "item '1' would be held on 100% of lines" in message
    with pytest.raises(DataFormatError) as error:
        load(path, format="triples")
    assert error.value.path == path / "test.txt" and error.value.line == 4
    assert "expected 3 columns, found 4" in str(error.value)


def test_train_txt_path_follows_folder_detection(tmp_path: Path) -> None:
    path = folder(tmp_path, "selfrec", train=SELFREC_TRAIN, test=SELFREC_TEST)
    assert detect_format(path / "train.txt") == ("triples", path)
    assert detect_format(path / "test.txt", "lightgcn") == ("lightgcn", path)


def test_ml100k_as_selfrec_triples(tmp_path: Path) -> None:
    """The issue's reproduction: ml-100k written as "user item 1" train/test folders."""
    from conftest import shared_dataset

    raw = read_atomic(shared_dataset("ml-100k") / "ml-100k.inter").splits["all"]
    users, items = raw.users.tolist(), raw.items.tolist()
    path = folder(
        tmp_path,
        "ml100k-selfrec",
        train="".join(f"{u} {i} 1\n" for u, i in zip(users[:80_000], items[:80_000], strict=True)),
        test="".join(f"{u} {i} 1\n" for u, i in zip(users[80_000:], items[80_000:], strict=True)),
    )
    data = load(path)
    assert data.options["format"] == "triples"  # type: ignore[attr-defined]
    assert data.train.nnz == 80_000 and data.report.duplicates_dropped == {"train": 0, "test": 0}  # type: ignore[attr-defined]
    assert int(data.item_popularity.max()) < 500  # as LightGCN, item 1 would be held by all 943 users  # type: ignore[attr-defined]


# --- 9. streams: FIFO, /dev/fd/N (process substitution), /dev/null ---------------------------------------

CSV = "user_id,item_id,rating\n1,10,5\n1,11,4\n2,10,3\n2,12,5\n3,11,1\n3,12,2\n"


@pytest.fixture
def pipe() -> Iterator[object]:
    """``make(bytes) -> Path``: a ``/dev/fd/N`` path whose content a thread writes, like ``<(cat f)``."""
    opened: list[int] = []
    threads: list[threading.Thread] = []

    def make(content: bytes) -> Path:
        read_end, write_end = os.pipe()
        opened.append(read_end)

        def writer() -> None:
            with os.fdopen(write_end, "wb") as handle:
                handle.write(content)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        threads.append(thread)
        return Path(f"/dev/fd/{read_end}")

    yield make
    for thread in threads:
        thread.join(timeout=5)
    for fd in opened:
        with contextlib.suppress(OSError):
            os.close(fd)


def test_process_substitution_csv_equals_the_file(tmp_path: Path, pipe) -> None:  # type: ignore[no-untyped-def]
    regular = tmp_path / "r.csv"
    regular.write_text(CSV)
    expected = load(regular)
    streamed = load(pipe(CSV.encode()))
    np.testing.assert_array_equal(streamed.train.toarray(), expected.train.toarray())  # type: ignore[attr-defined]
    np.testing.assert_array_equal(streamed.test.toarray(), expected.test.toarray())  # type: ignore[attr-defined]
    assert streamed.options["format"] == "csv" and streamed.name == "stream"  # type: ignore[attr-defined]
    assert list(streamed.source.values()) == [hashlib.sha256(CSV.encode()).hexdigest()]  # type: ignore[attr-defined]


def test_stream_content_detection(pipe, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    atomic = "user_id:token\titem_id:token\n1\t10\n1\t11\n2\t10\n2\t11\n"
    assert load(pipe(atomic.encode())).options["format"] == "atomic"  # type: ignore[attr-defined]
    triples = "1 10 1\n1 11 1\n2 10 1\n2 11 1\n"
    assert load(pipe(triples.encode())).options["format"] == "triples"  # type: ignore[attr-defined]
    pairs = "1,10\n1,11\n2,10\n2,11\n"
    data = load(pipe(pairs.encode()))
    assert data.options["format"] == "pairs" and data.options["split"] == "ratio"  # type: ignore[attr-defined]
    assert data.train.nnz + data.test.nnz == 4  # type: ignore[attr-defined]
    with pytest.raises(DataFormatError) as error:
        load(pipe(b"1 10 11 12\n2 10\n"))  # LightGCN lines: a folder format
    assert error.value.line == 2 and "need a folder with train.txt and test.txt" in str(error.value)
    with pytest.raises(DataFormatError, match="LightGCN data is a folder"):
        load(pipe(b"1 10\n"), format="lightgcn")


def test_fifo_is_read_once_and_cached_by_content(tmp_path: Path) -> None:
    fifo = tmp_path / "ratings"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as handle:
            handle.write(CSV.encode())

    results = []
    for _ in range(2):
        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        results.append(load(fifo))
        thread.join(timeout=5)
    assert results[0].options["fingerprint"] == results[1].options["fingerprint"]  # type: ignore[attr-defined]
    cached = list((Path(os.environ["SSMREC_CACHE"]) / "datasets").glob("ratings-*.npz"))
    assert len(cached) == 1


def test_fifo_without_writer_does_not_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_text, "STREAM_WAIT_S", 0.2)
    fifo = tmp_path / "nobody"
    os.mkfifo(fifo)
    with pytest.raises(DataFormatError, match=r"no process wrote to this FIFO within 0\.2 s"):
        load(fifo)


def test_dev_null_is_empty_and_devices_are_refused() -> None:
    with pytest.raises(DataFormatError, match=r"^/dev/null: file is empty$"):
        load(Path("/dev/null"))
    with pytest.raises(DataFormatError, match="is a device, not a data file"):
        load(Path("/dev/zero"))


# --- 10. huge tokens, int64 ids, local copies that differ from the registry ------------------------------

HUGE = "7" * 30 + "x" * 1_000_000


@pytest.mark.parametrize(
    ("name", "content", "reader", "line"),
    [
        ("train.txt", f"0 1\n1 {HUGE}\n", read_lightgcn_file, 2),
        ("g.train", f"0,1\n1,{HUGE}\n", read_pairs_file, 2),
        ("x.inter", f"user_id:token\titem_id:token\trating:float\n0\t1\t2\n1\t2\t{HUGE}\n", read_atomic, 3),
        ("x.tsv", f"user_id\titem_id\trating\n0\t1\t2\n1\t2\t{HUGE}\n", read_csv, 3),
        ("x.inter", f"user_id:token\t{HUGE}:token\n0\t1\n", read_atomic, 1),
        ("y.inter", f"user_id:token\titem_id:{HUGE}\n0\t1\n", read_atomic, 1),
        ("x.csv", f"user_id,{HUGE}\n0,1\n", read_csv, 1),
    ],
    ids=["lightgcn", "pairs", "atomic-rating", "tsv-rating", "atomic-header", "atomic-type", "csv-header"],
)
def test_error_echoes_at_most_40_chars_of_a_token(
    tmp_path: Path, name: str, content: str, reader: Callable[[Path], object], line: int
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFormatError) as error:
        reader(path)
    message = str(error.value)
    assert len(message) < 400, message[:500]
    assert message.startswith(f"{path}:{line}: ")
    # The cut token's size is given; csv refuses a quoted-format field over its limit before we see it.
    assert ("CSV field limit" if name == "x.csv" else "\u2026 (1,000,0") in message


def test_shown_caps_tokens() -> None:
    assert _text.shown("abc") == "'abc'"
    assert _text.shown("é" * 50) == repr("é" * 40) + "\u2026 (100 bytes)"


INT64_MAX = 9_223_372_036_854_775_807


def test_int64_ids_are_accepted_in_integer_formats(tmp_path: Path) -> None:
    lightgcn = tmp_path / "train.txt"
    lightgcn.write_text(f"{INT64_MAX} 1 {INT64_MAX - 1}\n2 000000000000000000000000003\n")
    raw = read_lightgcn_file(lightgcn)
    assert raw.users.tolist() == [INT64_MAX, INT64_MAX, 2]
    assert raw.items.tolist() == [1, INT64_MAX - 1, 3]
    pairs = tmp_path / "g.train"
    pairs.write_text(f"{INT64_MAX},5\n1,{INT64_MAX}\n")
    raw = read_pairs_file(pairs)
    assert raw.users.tolist() == [INT64_MAX, 1] and raw.items.tolist() == [5, INT64_MAX]
    pairs_with_text = tmp_path / "h.train"
    pairs_with_text.write_text(f"{INT64_MAX},5,x\n1,{INT64_MAX},y\n")  # the table path
    assert read_pairs_file(pairs_with_text).items.tolist() == [5, INT64_MAX]


@pytest.mark.parametrize("token", [str(INT64_MAX + 1), "99999999999999999999", "1" + "0" * 40])
def test_ids_beyond_int64_are_refused_naming_the_line(tmp_path: Path, token: str) -> None:
    for name, content, reader in (
        ("train.txt", f"0 1\n1 2\n2 {token}\n", read_lightgcn_file),
        ("g.train", f"0,1\n1,2\n{token},2\n", read_pairs_file),
        ("h.train", f"0,1,a\n1,2,b\n{token},2,c\n", read_pairs_file),
    ):
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(DataFormatError) as error:
            reader(path)
        assert error.value.line == 3 and "is too large" in str(error.value)
        assert f"at most {INT64_MAX}" in str(error.value)


def test_header_formats_keep_int64_ids_as_integers(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(f"user_id,item_id\n{INT64_MAX},1\n1,{INT64_MAX + 1}\n")
    part = read_csv(path).splits["all"]
    assert part.users.dtype == np.int64 and part.users.tolist() == [INT64_MAX, 1]
    assert part.items.tolist() == ["1", str(INT64_MAX + 1)]  # too large: kept as string tokens


def test_local_copy_that_differs_from_registry_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    local = tmp_path / "data" / "gowalla"
    local.mkdir(parents=True)
    (local / "train.txt").write_text("0 1 2\n1 2 3\n")
    (local / "test.txt").write_text("0 3\n1 1\n")
    monkeypatch.setenv("SSMREC_DATA", str(tmp_path / "data"))
    with caplog.at_level(logging.WARNING, logger="ssmrec"):
        data = load_dataset(DataSpec(dataset="gowalla", valid_ratio=0))
    expected = registry.REGISTRY["gowalla"].files[0].sha256
    warned = [r.getMessage() for r in caplog.records if r.name == "ssmrec" and r.levelno == logging.WARNING]
    assert len(warned) == 2 and all("differs from the registered gowalla file" in m for m in warned)
    assert any(f"expected {expected}" in note for note in data.report.notes)
    assert sum("differs from the registered" in note for note in data.report.notes) == 2


# --- paths that do not exist, cannot be read, or are folders where a file is expected --------------------


def test_missing_unreadable_and_folder_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load(tmp_path / "nope" / "x.csv")
    with pytest.raises(DatasetNotFoundError, match="cannot access: File name too long"):
        load(tmp_path / ("x" * 300))
    inter_folder = tmp_path / "x.inter"
    inter_folder.mkdir()
    with pytest.raises(DatasetNotFoundError, match="no data files found"):
        load(inter_folder)
    train_folder = folder(tmp_path, "c", test="0 1\n")
    (train_folder / "train.txt").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"it holds: test\.txt, train\.txt/"):
        load(train_folder)
    with pytest.raises(DataFormatError, match="is a directory, expected a file"):
        read_lightgcn_file(train_folder / "train.txt")
    readable = tmp_path / "r.csv"
    readable.write_text(CSV)

    def denied(*args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)  # what an unreadable file does (tests may run as root)
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataFormatError, match=r"r\.csv: cannot read file: Permission denied"):
        load(readable)
    with pytest.raises(DataFormatError, match=r"r\.csv: cannot read file: Permission denied"):
        read_csv(readable)


def test_train_txt_without_test_txt_is_not_swapped_for_a_sibling(tmp_path: Path) -> None:
    path = folder(tmp_path, "half", train=SELFREC_TRAIN)
    (path / "ratings.csv").write_text(CSV)
    with pytest.raises(DatasetNotFoundError, match=r"missing data file\(s\): .*half/test\.txt$"):
        load(path / "train.txt")


def test_single_triples_file_is_split_per_user(tmp_path: Path) -> None:
    path = tmp_path / "ratings.txt"
    path.write_text("".join(f"{u} {i} {1 + (u + i) % 5}\n" for u in range(3) for i in range(5)))
    data = load(path, format="triples", rating_threshold=3)
    # ratings 1 + (u + i) % 5 >= 3 keep 3 of each user's 5 items; round(0.2 * 3) = 1 per user held out.
    held_out = data.test.nnz + data.report.dropped_eval_pairs["test"]  # type: ignore[attr-defined]
    assert data.train.nnz == 6 and held_out == 3  # type: ignore[attr-defined]
    assert data.options["split"] == "ratio" and data.options["format"] == "triples"  # type: ignore[attr-defined]
    assert "rating >= 3 kept 9 of 15 rows" in data.report.notes  # type: ignore[attr-defined]


def test_no_training_interactions_names_the_file(tmp_path: Path) -> None:
    path = folder(tmp_path, "users-only", train="0\n1\n", test="0 1\n")
    with pytest.raises(DataFormatError) as error:
        load(path)
    assert error.value.path == path / "train.txt" and "no training interactions" in str(error.value)
