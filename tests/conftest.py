"""Shared test helpers: the real datasets beside the checkout, tiny LightGCN folders, one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SSMREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Parallel workers on a 2-core machine thrash when each runs several intra-op threads.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never let a test read or write the user's real dataset cache."""
    monkeypatch.setenv("SSMREC_CACHE", str(tmp_path_factory.mktemp("ssmrec-cache")))


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/data/<name>``, or skip the test saying why it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(
            f"real dataset {name!r} not available: {path} does not exist (../shared is not beside the repo)"
        )
    return path


def write_lightgcn_folder(folder: Path, train: list[list[int]], test: list[list[int]]) -> Path:
    """A LightGCN split folder: line u of each file is ``u item item ...`` for the u-th list."""
    folder.mkdir(parents=True)
    for name, rows in (("train.txt", train), ("test.txt", test)):
        lines = [" ".join(map(str, [user, *items])) for user, items in enumerate(rows)]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def write_clustered(folder: Path, n_users: int, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Tiny planted data: user u likes cluster ``u % 4`` of 10 items; train and test items come from it."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for user in range(n_users):
        chosen = (user % 4) * 10 + rng.choice(10, n_train + n_test, replace=False)
        train.append(sorted(chosen[:n_train].tolist()))
        test.append(sorted(chosen[n_train:].tolist()))
    return write_lightgcn_folder(folder, train, test)
