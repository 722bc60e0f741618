"""Shared fixtures: the real datasets beside the checkout, and one torch thread per test worker."""

from __future__ import annotations

import os
from pathlib import Path

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
