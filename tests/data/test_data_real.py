"""Integration on the real shared datasets (skipped, with the reason, when they are absent).

Held-out pairs whose item never occurs in train are dropped by design; the published counts are
checked as ``kept + dropped`` and ``items in train + cold items``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_dataset

from ssmrec.data import DataSpec, load_dataset, read_atomic
from ssmrec.data.spec import detect_format


def test_gowalla_counts_exact() -> None:
    data = load_dataset(DataSpec(path=str(shared_dataset("gowalla")), valid_ratio=0))
    assert (data.n_users, data.n_items) == (29_858, 40_981)
    assert (data.train.nnz, data.test.nnz) == (810_128, 217_242)
    assert data.report.dropped_eval_pairs == {"test": 0}
    assert data.report.duplicates_dropped == {"train": 0, "test": 0}
    assert data.user_ids.tolist() == list(range(29_858))  # contiguous source ids map to themselves
    again = load_dataset(DataSpec(path=str(shared_dataset("gowalla")), valid_ratio=0))
    assert (again.train != data.train).nnz == 0
    assert data.options["format"] == "lightgcn"


def test_ml100k_counts() -> None:
    path = shared_dataset("ml-100k") / "ml-100k.inter"
    raw = read_atomic(path).splits["all"]
    assert len(raw) == 100_000
    assert len(np.unique(raw.users)) == 943 and len(np.unique(raw.items)) == 1_682
    data = load_dataset(DataSpec(path=str(path)))
    dropped = sum(data.report.dropped_eval_pairs.values())
    assert data.counts()["interactions"] + dropped == 100_000
    assert data.n_users == 943 and data.n_items + data.report.cold_test_items == 1_682
    assert data.valid is not None and data.report.duplicates_dropped == {"all": 0}


def test_ml1m_full_counts() -> None:
    data = load_dataset(DataSpec(path=str(shared_dataset("ml-1m-full")), valid_ratio=0))
    assert data.n_users == 6_040
    assert data.n_items + data.report.cold_test_items == 3_706
    assert data.train.nnz == 799_823
    assert data.test.nnz + data.report.dropped_eval_pairs["test"] == 200_386
    assert int(data.item_ids.max()) == 3_951  # original, non-contiguous ids kept


def test_lastfm_counts() -> None:
    data = load_dataset(DataSpec(path=str(shared_dataset("lastfm"))))
    assert data.n_users == 1_885
    assert data.n_items + data.report.cold_test_items == 17_388
    assert data.train.nnz == 64_315
    assert data.valid.nnz + data.report.dropped_eval_pairs["valid"] == 9_143
    assert data.test.nnz + data.report.dropped_eval_pairs["test"] == 18_321


def test_yelp2018_counts_exact() -> None:
    data = load_dataset(DataSpec(path=str(shared_dataset("yelp2018")), valid_ratio=0))
    assert (data.n_users, data.n_items) == (31_668, 38_048)
    assert (data.train.nnz, data.test.nnz) == (1_237_259, 324_147)
    assert data.options["format"] == "lightgcn"


@pytest.mark.parametrize("name", ["gowalla", "yelp2018", "ml-1m-full", "lastfm"])
def test_auto_still_reads_the_lightgcn_folders_as_lightgcn(name: str) -> None:
    """The triples check must not change how real LightGCN folders are read (their lines vary in length)."""
    path = shared_dataset(name)
    assert detect_format(path) == ("lightgcn", path)
    assert detect_format(path / "train.txt") == ("lightgcn", path)
