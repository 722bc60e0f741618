"""Property-based fuzzing of every reader (hypothesis).

The only outcomes allowed for any input are a correct parse, or an ``SsmrecError`` whose message starts
with the file (and, when it names one, a line that exists). Valid random datasets written in each format
must read back to exactly the pairs written. Runs are deterministic (``derandomize``) and bounded so the
whole module stays well under 30 s on one core; set ``SSMREC_FUZZ_EXAMPLES`` (and ``SSMREC_FUZZ_RANDOM=1``
for fresh seeds) to fuzz harder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e .[test])")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ssmrec.data import DataSpec, load_dataset  # noqa: E402
from ssmrec.data.readers import (  # noqa: E402
    read_atomic,
    read_csv,
    read_lightgcn_file,
    read_pairs_file,
    read_triples_file,
)
from ssmrec.data.spec import format_of_content  # noqa: E402
from ssmrec.errors import DataFormatError, SsmrecError  # noqa: E402

EXAMPLES = int(os.environ.get("SSMREC_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # wall time is bounded by max_examples; per-example deadlines flake on a busy machine
    derandomize=os.environ.get("SSMREC_FUZZ_RANDOM") != "1",  # reproducible unless asked to explore
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
INT64_MAX = 2**63 - 1

READERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "lightgcn": ("train.txt", read_lightgcn_file),
    "pairs": ("d.train", read_pairs_file),
    "triples": ("t.txt", read_triples_file),
    "atomic": ("d.inter", read_atomic),
    "csv": ("d.csv", read_csv),
    "csv-sniffed": ("d.dat", read_csv),
}


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One folder for the whole module (hypothesis reruns a test body many times per fixture)."""
    with tempfile.TemporaryDirectory(prefix="ssmrec-fuzz-") as folder:
        yield Path(folder)


def allowed(path: Path, content: bytes, call: Callable[[], object]) -> object | None:
    """Run ``call``; a result, or an ``SsmrecError`` naming ``path`` and an existing line, pass."""
    try:
        return call()
    except SsmrecError as error:
        message = str(error)
        assert message.startswith(str(path)) or str(path) in message, message[:300]
        assert len(message) < 2_000, f"message of {len(message)} chars"
        if isinstance(error, DataFormatError) and error.line is not None:
            assert 1 <= error.line <= content.count(b"\n") + 1, (error.line, message[:300])
        return None


# --- random bytes, biased towards what the parsers branch on ---------------------------------------------

PIECES = [
    b"0",
    b"1",
    b"7",
    b"42",
    b"007",
    b" ",
    b"  ",
    b"\t",
    b",",
    b";",
    b"\n",
    b"\r\n",
    b"\r",
    b"-",
    b".",
    b"5",
    b"4.5",
    b'"',
    b":",
    b"x",
    b"e3",
    b"nan",
    b"inf",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"\x0b",
    b"\x1c",
    b"\xef\xbb\xbf",
    "\u0663".encode(),
    "\u00b2".encode(),
    "\u00a0".encode(),
    "\u2028".encode(),
    b"9223372036854775807",
    b"9223372036854775808",
    b"99999999999999999999999",
    b"user_id:token",
    b"item_id:token",
    b"rating:float",
    b"timestamp:float",
    b"user_id",
    b"item_id",
    b"rating",
    b"timestamp",
    b"2020-01-01",
    b"x" * 200,
]
noise = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join),
)


@pytest.mark.parametrize("kind", list(READERS))
@FUZZ
@given(content=noise)
def test_random_bytes_parse_or_fail_cleanly(scratch: Path, kind: str, content: bytes) -> None:
    name, reader = READERS[kind]
    path = scratch / name
    path.write_bytes(content)
    allowed(path, content, lambda: reader(path))


@FUZZ
@given(content=noise, header=st.sampled_from([b"", b"user_id:token\titem_id:token\n", b"user_id,item_id\n"]))
def test_stream_detection_and_load_on_random_bytes(scratch: Path, content: bytes, header: bytes) -> None:
    """What a FIFO's bytes go through: content detection, then the chosen reader and the split."""
    path = scratch / "stream.bin"
    content = header + content
    path.write_bytes(content)
    fmt = allowed(path, content, lambda: format_of_content(path, content))
    if fmt is not None:
        allowed(
            path,
            content,
            lambda: load_dataset(DataSpec(path=str(path), format=str(fmt), valid_ratio=0), use_cache=False),
        )


# --- valid random datasets round-trip --------------------------------------------------------------------

ids = st.one_of(st.integers(0, 50), st.integers(0, INT64_MAX), st.just(INT64_MAX))
pairs = st.lists(st.tuples(ids, ids), min_size=1, max_size=40)
spaces = st.sampled_from([" ", "\t", "  ", " \t "])
endings = st.sampled_from(["\n", "\r\n"])


@FUZZ
@given(rows=st.lists(st.tuples(ids, st.lists(ids, max_size=6)), min_size=1, max_size=20), data=st.data())
def test_lightgcn_round_trip(scratch: Path, rows: list[tuple[int, list[int]]], data: st.DataObject) -> None:
    if not any(items for _, items in rows):
        rows = [(rows[0][0], [1])]
    sep, end = data.draw(spaces), data.draw(endings)
    text = end.join(sep.join(map(str, [user, *items])) for user, items in rows)
    text += data.draw(st.sampled_from(["", end, end + end]))
    path = scratch / "train.txt"
    path.write_text(text, newline="")
    raw = read_lightgcn_file(path)
    assert raw.users.tolist() == [user for user, items in rows for _ in items]
    assert raw.items.tolist() == [item for _, items in rows for item in items]


@FUZZ
@given(rows=pairs, data=st.data())
def test_pairs_round_trip(scratch: Path, rows: list[tuple[int, int]], data: st.DataObject) -> None:
    sep = data.draw(st.sampled_from([",", "\t", " "]))
    extra = data.draw(st.sampled_from(["", f"{sep}1", f"{sep}4.5{sep}x"]))  # extra columns are ignored
    end = data.draw(endings)
    path = scratch / "d.train"
    path.write_text(end.join(f"{u}{sep}{i}{extra}" for u, i in rows) + end, newline="")
    raw = read_pairs_file(path)
    assert list(zip(raw.users.tolist(), raw.items.tolist(), strict=True)) == rows


@FUZZ
@given(rows=pairs, data=st.data())
def test_triples_round_trip(scratch: Path, rows: list[tuple[int, int]], data: st.DataObject) -> None:
    ratings = data.draw(
        st.lists(st.sampled_from([1, 2, 3.5, 4.5, 5, 0]), min_size=len(rows), max_size=len(rows))
    )
    sep = data.draw(st.sampled_from([",", "\t", " "]))
    path = scratch / "t.txt"
    path.write_text("".join(f"{u}{sep}{i}{sep}{r}\n" for (u, i), r in zip(rows, ratings, strict=True)))
    raw = read_triples_file(path)
    assert list(zip(raw.users.tolist(), raw.items.tolist(), strict=True)) == rows
    assert raw.ratings.tolist() == [float(r) for r in ratings]  # type: ignore[union-attr]


tokens = st.one_of(
    ids.map(str),
    st.integers(INT64_MAX + 1, 10**25).map(str),  # too large for int64: kept as a string token
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=8),
)


def expected_ids(column: list[str]) -> list[object]:
    """What the header formats promise: int64 when every token is a canonical int64, else the tokens."""
    stripped = [token.strip() for token in column]
    canonical = all(
        t.isascii() and t.isdigit() and str(int(t)) == t and int(t) <= INT64_MAX for t in stripped
    )
    return [int(t) for t in stripped] if canonical else stripped


@FUZZ
@given(rows=st.lists(st.tuples(tokens, tokens, st.floats(0, 5)), min_size=1, max_size=25))
def test_atomic_round_trip(scratch: Path, rows: list[tuple[str, str, float]]) -> None:
    rows = [(u, i, r) for u, i, r in rows if u.strip() and i.strip() and not set("\t\n\r") & set(u + i)]
    if not rows:
        return
    path = scratch / "d.inter"
    lines = [f"{u}\t{i}\t{r!r}" for u, i, r in rows]
    path.write_text("user_id:token\titem_id:token\trating:float\n" + "\n".join(lines) + "\n", newline="")
    raw = allowed(path, path.read_bytes(), lambda: read_atomic(path))
    if raw is None:  # only a token that str.split and the file's lines disagree on may fail
        assert any(any(c.isspace() for c in u + i) or "\x85" in u + i for u, i, _ in rows)
        return
    part = raw.splits["all"]  # type: ignore[attr-defined]
    assert part.users.tolist() == expected_ids([u for u, _, _ in rows])
    assert part.items.tolist() == expected_ids([i for _, i, _ in rows])
    np.testing.assert_array_equal(part.ratings, [r for _, _, r in rows])


@FUZZ
@given(rows=st.lists(st.tuples(tokens, tokens), min_size=1, max_size=25), data=st.data())
def test_csv_round_trip_with_quoting(scratch: Path, rows: list[tuple[str, str]], data: st.DataObject) -> None:
    rows = [(u, i) for u, i in rows if u.strip() and i.strip()]
    if not rows:
        return
    sep = data.draw(st.sampled_from([",", ";", "\t"]))

    def quote(token: str) -> str:
        if any(c in token for c in f'"{sep}\n\r') or token != token.strip():
            return '"' + token.replace('"', '""') + '"'
        return token

    path = scratch / "d.txt"
    lines = [f"user_id{sep}item_id"] + [f"{quote(u)}{sep}{quote(i)}" for u, i in rows]
    path.write_text("\n".join(lines) + "\n", newline="")
    part = read_csv(path).splits["all"]
    assert part.users.tolist() == expected_ids([u for u, _ in rows])
    assert part.items.tolist() == expected_ids([i for _, i in rows])


# --- truncations and injected faults ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lightgcn", "pairs", "triples", "atomic", "csv"])
@FUZZ
@given(rows=pairs, cut=st.integers(0, 2_000))
def test_truncated_valid_files_parse_or_fail_cleanly(scratch: Path, kind: str, rows: list, cut: int) -> None:
    name, reader = READERS[kind]
    body = "".join(f"{u} {i} 1\n" if kind == "triples" else f"{u}\t{i}\n" for u, i in rows)
    header = {"atomic": "user_id:token\titem_id:token\n", "csv": "user_id\titem_id\n"}.get(kind, "")
    content = (header + (body if kind != "lightgcn" else body.replace("\t", " "))).encode()
    content = content[: cut % (len(content) + 1)]
    path = scratch / name
    path.write_bytes(content)
    allowed(path, content, lambda: reader(path))


BAD_TOKENS = ["-5", "x", "2.5", "9223372036854775808", "1e3", "\u0663", "\u00b2", "7" * 30 + "z" * 5_000]


@pytest.mark.parametrize("kind", ["lightgcn", "pairs", "triples"])
@FUZZ
@given(rows=pairs, data=st.data())
def test_bad_token_is_reported_at_its_line(scratch: Path, kind: str, rows: list, data: st.DataObject) -> None:
    name, reader = READERS[kind]
    line = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.integers(0, 1))
    bad = data.draw(st.sampled_from(BAD_TOKENS))
    fields = [[str(u), str(i)] + (["1"] if kind == "triples" else []) for u, i in rows]
    fields[line][column] = bad
    sep = "," if kind == "pairs" else " "
    path = scratch / name
    path.write_text("".join(sep.join(f) + "\n" for f in fields))
    with pytest.raises(DataFormatError) as error:
        reader(path)
    assert error.value.line == line + 1, str(error.value)[:300]
    assert len(str(error.value)) < 400


field = st.one_of(ids.map(str), st.sampled_from(["1", "4.5", "x", "-1", "", "9223372036854775808", "\u0663"]))
line = st.lists(field, min_size=0, max_size=4).map(" ".join)
three_field_file = st.one_of(
    st.lists(st.tuples(ids, ids, st.sampled_from(["1", "2", "4.5", "5"])), min_size=1, max_size=12).map(
        lambda rows: "".join(f"{u} {i} {r}\n" for u, i, r in rows)
    ),
    st.lists(line, min_size=1, max_size=12).map(lambda lines: "\n".join(lines) + "\n"),
)


@FUZZ
@given(train=three_field_file, test=three_field_file)
def test_auto_detection_of_split_folders(scratch: Path, train: str, test: str) -> None:
    """``auto`` on a train.txt/test.txt folder: LightGCN, triples or a refusal, never a crash."""
    folder = scratch / "split"
    folder.mkdir(exist_ok=True)
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    try:
        data = load_dataset(DataSpec(path=str(folder), valid_ratio=0), use_cache=False)
    except SsmrecError as error:
        assert str(folder) in str(error), str(error)[:300]
        return
    if data.options["format"] == "triples":  # then every line had 3 fields and LightGCN was contradicted
        assert all(len(row.split()) == 3 for row in (train + test).splitlines() if row.strip())
