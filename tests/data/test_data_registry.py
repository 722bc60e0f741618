"""Named datasets: local resolution, downloads from a local HTTP server, checksum enforcement."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from ssmrec.data import DataSpec, load_dataset, registry
from ssmrec.data.cache import downloads_dir, file_sha256
from ssmrec.data.registry import REGISTRY, DatasetEntry, RemoteFile, download_file, resolve
from ssmrec.errors import ChecksumError, DatasetNotFoundError

TRAIN = b"0 1 2\n1 2 3\n2 3 1\n"
TEST = b"0 3\n1 1\n"


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """An HTTP server on 127.0.0.1 (ephemeral port) serving a temp folder; yields (base URL, folder, log)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_QuietHandler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def tiny_entry(train_sha: str | None, test_sha: str | None = sha(TEST)) -> DatasetEntry:
    return DatasetEntry(
        name="tiny",
        format="lightgcn",
        files=(
            RemoteFile("train.txt", "http://invalid.example/train.txt", train_sha),
            RemoteFile("test.txt", "http://invalid.example/test.txt", test_sha),
        ),
        description="test fixture",
        provenance="written by the test",
        aliases=("tiny-alias",),
    )


def publish(root: Path, train: bytes = TRAIN) -> None:
    (root / "tiny").mkdir(exist_ok=True)
    (root / "tiny" / "train.txt").write_bytes(train)
    (root / "tiny" / "test.txt").write_bytes(TEST)


def test_download_verifies_and_is_reused(server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    base, root, requests = server
    publish(root)
    monkeypatch.setitem(REGISTRY, "tiny", tiny_entry(sha(TRAIN)))
    monkeypatch.setenv("SSMREC_MIRROR", base)
    monkeypatch.delenv("SSMREC_DATA", raising=False)
    resolved = resolve("tiny")
    assert resolved.origin == "downloaded" and resolved.folder == downloads_dir() / "tiny"
    assert (resolved.folder / "train.txt").read_bytes() == TRAIN
    assert sorted(requests) == ["/tiny/test.txt", "/tiny/train.txt"]
    again = resolve("TINY")
    assert again.origin == "downloads" and len(requests) == 2  # no second download
    data = load_dataset(DataSpec(dataset="tiny", valid_ratio=0))
    assert data.name == "tiny" and data.train.nnz == 6
    assert data.source["train.txt"] == sha(TRAIN)


def test_corrupted_download_is_deleted(server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    base, root, _ = server
    publish(root, train=TRAIN.replace(b"3", b"4"))
    monkeypatch.setitem(REGISTRY, "tiny", tiny_entry(sha(TRAIN)))
    monkeypatch.delenv("SSMREC_DATA", raising=False)
    with pytest.raises(ChecksumError) as error:
        resolve("tiny", mirror=base)
    message = str(error.value)
    assert f"expected {sha(TRAIN)}" in message
    assert f"got {sha(TRAIN.replace(b'3', b'4'))}" in message
    folder = downloads_dir() / "tiny"
    assert not (folder / "train.txt").exists()
    assert not list(folder.glob("*.part"))


def test_download_file_directly(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, root, _ = server
    publish(root)
    dest = tmp_path / "out" / "train.txt"
    assert download_file(f"{base}/tiny/train.txt", dest, sha(TRAIN)) == sha(TRAIN)
    assert dest.read_bytes() == TRAIN
    with pytest.raises(ChecksumError):
        download_file(f"{base}/tiny/test.txt", tmp_path / "out" / "test.txt", sha(TRAIN))
    assert not (tmp_path / "out" / "test.txt").exists()
    with pytest.raises(DatasetNotFoundError, match="404"):
        download_file(f"{base}/tiny/missing.txt", tmp_path / "out" / "missing.txt", None)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train.txt"]


def test_unregistered_checksum_warns_and_records(server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    base, root, _ = server
    publish(root)
    monkeypatch.setitem(REGISTRY, "tiny", tiny_entry(None))
    monkeypatch.delenv("SSMREC_DATA", raising=False)
    with pytest.warns(UserWarning, match="no registered checksum"):
        data = load_dataset(DataSpec(dataset="tiny"), mirror=base)
    expected = f"tiny/train.txt has no registered checksum (unverified); sha256 {sha(TRAIN)}"
    assert expected in data.report.notes
    assert data.source["train.txt"] == sha(TRAIN)


def test_local_data_root_with_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "tiny", tiny_entry(sha(TRAIN)))
    local = tmp_path / "data" / "tiny-alias"
    local.mkdir(parents=True)
    (local / "train.txt").write_bytes(TRAIN + b"3 1\n")  # a user's own variant: used, but noted
    (local / "test.txt").write_bytes(TEST)
    monkeypatch.setenv("SSMREC_DATA", str(tmp_path / "data"))
    resolved = resolve("tiny")
    assert resolved.origin == "local" and resolved.folder == local
    assert any("differs from the registered tiny file" in note for note in resolved.notes)


def test_unknown_name_and_no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetNotFoundError, match="known datasets: amazon-book, gowalla"):
        resolve("netflix")
    monkeypatch.delenv("SSMREC_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match="downloading is disabled"):
        resolve("gowalla", download=False)


def test_mirror_url_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = REGISTRY["gowalla"]
    monkeypatch.delenv("SSMREC_MIRROR", raising=False)
    assert registry.mirror_url(entry, entry.files[0]).startswith(
        "https://raw.githubusercontent.com/kuandeng/"
    )
    assert registry.mirror_url(entry, entry.files[0], "http://m/x/") == "http://m/x/gowalla/train.txt"


def test_registry_checksums_match_shared_copies() -> None:
    """Every recorded sha256 was computed from these copies; catch a typo in the table."""
    checked = 0
    for entry in REGISTRY.values():
        for folder_name in (entry.name, *entry.aliases):
            folder = SHARED_DATA / folder_name
            for remote in entry.files:
                if remote.sha256 is not None and (folder / remote.name).is_file():
                    assert file_sha256(folder / remote.name) == remote.sha256, f"{folder_name}/{remote.name}"
                    checked += 1
    if checked == 0:
        pytest.skip(f"no shared dataset copies under {SHARED_DATA}")
    assert REGISTRY["amazon-book"].files[0].sha256 is None  # never invented
