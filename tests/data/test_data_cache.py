"""The parsed-dataset cache: hits, misses on change, corruption, read-only data, unwritable cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ssmrec.data import DataSpec, Interactions, load_dataset, spec
from ssmrec.data.cache import cache_root, datasets_dir


def make_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("0 1 2 3\n1 2 3\n2 1 3\n3 1 2\n")
    (folder / "test.txt").write_text("0 4\n1 1\n")
    return folder


def assert_same(a: Interactions, b: Interactions) -> None:
    for name in ("train", "valid", "test"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None)
        if left is not None:
            assert left.shape == right.shape and (left != right).nnz == 0
            assert right.dtype == np.float32
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    assert a.user_ids.dtype == b.user_ids.dtype
    assert a.report == b.report and a.source == b.source and a.name == b.name
    assert a.options == b.options


def forbid_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed again instead of using the cache")

    monkeypatch.setattr(spec, "_read", fail)


def test_second_load_hits_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_spec = DataSpec(path=str(make_folder(tmp_path / "d")), valid_ratio=0.3)
    first = load_dataset(data_spec)
    assert list(datasets_dir().glob("*.npz"))
    forbid_parsing(monkeypatch)
    assert_same(first, load_dataset(data_spec))


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSMREC_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("SSMREC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "ssmrec"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "ssmrec"


def test_string_ids_survive_the_cache_without_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user_id,item_id\n" + "".join(f"u{u},i{i}\n" for u in range(5) for i in range(5)))
    first = load_dataset(DataSpec(path=str(path)))
    forbid_parsing(monkeypatch)
    second = load_dataset(DataSpec(path=str(path)))
    assert second.user_ids.dtype.kind == "U"
    assert_same(first, second)


def test_changes_to_content_or_options_miss_the_cache(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d")
    first = load_dataset(DataSpec(path=str(folder), valid_ratio=0))
    other_seed = load_dataset(DataSpec(path=str(folder), valid_ratio=0.3, split_seed=1))
    assert other_seed.valid is not None and other_seed.options["fingerprint"] != first.options["fingerprint"]
    (folder / "test.txt").write_text("1 1\n2 2\n")
    changed = load_dataset(DataSpec(path=str(folder), valid_ratio=0))
    assert first.test.nnz == 1 and changed.test.nnz == 2  # first: (0, 4) is cold, only (1, 1) stays
    assert len(list(datasets_dir().glob("*.npz"))) == 3


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    data_spec = DataSpec(path=str(make_folder(tmp_path / "d")), valid_ratio=0)
    first = load_dataset(data_spec)
    (cache_file,) = datasets_dir().glob("*.npz")
    content = cache_file.read_bytes()
    cache_file.write_bytes(b"not a zip file" if damage == "garbage" else content[: len(content) // 2])
    with pytest.warns(UserWarning, match="unreadable dataset cache"):
        rebuilt = load_dataset(data_spec)
    assert_same(first, rebuilt)
    assert cache_file.read_bytes() == content  # rewritten, byte for byte


def test_read_only_data_folder_is_never_written(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d")
    before = sorted(p.name for p in folder.iterdir())
    os.chmod(folder, 0o555)
    try:
        load_dataset(DataSpec(path=str(folder)))
        load_dataset(DataSpec(path=str(folder)))
        assert sorted(p.name for p in folder.iterdir()) == before
    finally:
        os.chmod(folder, 0o755)


def test_unwritable_cache_warns_and_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SSMREC_CACHE", str(blocker / "cache"))  # below a regular file: cannot be created
    with pytest.warns(UserWarning, match="could not write dataset cache"):
        data = load_dataset(DataSpec(path=str(make_folder(tmp_path / "d")), valid_ratio=0))
    assert data.train.nnz == 9


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    load_dataset(DataSpec(path=str(make_folder(tmp_path / "d"))))
    assert [p.suffix for p in datasets_dir().iterdir()] == [".npz"]
