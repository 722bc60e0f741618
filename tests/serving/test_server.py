"""The HTTP server as a real process on 127.0.0.1, queried with a real HTTP client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_runs import trained_run

httpx = pytest.importorskip("httpx", reason="the serve extra (httpx) is not installed")
pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")

from ssmrec.serving.export import from_run, load, write  # noqa: E402
from ssmrec.serving.recommend import Recommender  # noqa: E402

STARTUP_SECONDS = 60


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)


def start_server(target: Path, folder: Path, *flags: str) -> Server:
    """``python -m ssmrec serve TARGET --port 0``; waits (bounded) until /health answers."""
    port_file, log = folder / "port", folder / "server.log"
    command = [
        sys.executable,
        "-m",
        "ssmrec",
        "serve",
        str(target),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        *flags,
    ]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=_env())
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {log.read_text()}")
        if port_file.is_file() and port_file.read_text().strip():
            server = Server(process, int(port_file.read_text()), log)
            try:
                if server.client.get("/health").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    stop(process)
    raise AssertionError(f"server not healthy after {STARTUP_SECONDS} s: {log.read_text()}")


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    run = trained_run("lightgcn", tmp_path_factory.getbasetemp())
    folder = tmp_path_factory.mktemp("server")
    export_path = write(from_run(run), folder / "export.npz")
    server = start_server(export_path, folder, "--max-k", "30")
    try:
        yield server, export_path
    finally:
        server.client.close()
        stop(server.process)


def test_recommend_get_and_post_equal_the_exact_ranking(served) -> None:
    server, export_path = served
    export = load(export_path)
    service = Recommender(export)
    expected = service.recommend(np.arange(len(export.users)), 10)
    for user in (0, 7, 39):
        body = server.client.get("/recommend", params={"user": export.user_ids.values[user], "k": 10}).json()
        assert body["user"] == export.user_ids.values[user]
        assert body["items"] == [export.item_ids.values[i] for i in expected.items[user]]
        np.testing.assert_array_equal(np.float32(body["scores"]), expected.scores[user])
    seen = service.recommend([3], 10, include_seen=True)  # beyond the cache: the per-request engine
    body = server.client.get("/recommend", params={"user": 3, "k": 10, "include_seen": "true"}).json()
    assert body["items"] == [export.item_ids.values[i] for i in seen.items[0]]
    many = server.client.post("/recommend", json={"users": [0, 7], "k": 10}).json()["results"]
    assert [r["items"] for r in many] == [
        [export.item_ids.values[i] for i in expected.items[u]] for u in (0, 7)
    ]
    new = server.client.post("/recommend", json={"items": [1, 2, 3], "k": 5}).json()
    want = service.recommend_new(export.item_ids.indices([1, 2, 3]), 5)
    assert new["user"] is None and new["items"] == [export.item_ids.values[i] for i in want.items[0]]


def test_similar_metadata_docs(served) -> None:
    server, export_path = served
    export = load(export_path)
    body = server.client.get("/similar", params={"item": 4, "k": 3}).json()
    want = Recommender(export).similar(export.item_ids.index(4), 3)
    assert body["item"] == 4 and body["items"] == [export.item_ids.values[i] for i in want.items[0]]
    meta = server.client.get("/metadata").json()
    assert meta["ranking_rule"] == "dot" and meta["model"]["name"] == "lightgcn"
    assert meta["fingerprint"]["weights_sha256"] == export.metadata["fingerprint"]["weights_sha256"]
    assert meta["metrics"]["test"]["recall@20"] == export.metadata["metrics"]["test"]["recall@20"]
    assert meta["exact"] is True and meta["max_k"] == 30
    paths = server.client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/similar", "/health", "/metadata"} <= set(paths)
    assert server.client.get("/docs").status_code == 200


def test_errors_are_clear_json(served) -> None:
    server, _ = served
    client = server.client
    cases = [
        (client.get("/recommend", params={"user": "nobody"}), 404, "unknown user id 'nobody'"),
        (client.get("/similar", params={"item": "nothing"}), 404, "unknown item id 'nothing'"),
        (client.get("/recommend", params={"user": 0, "k": 0}), 422, "query.k"),
        (client.get("/recommend", params={"user": 0, "k": 31}), 422, "less than or equal to 30"),
        (client.get("/recommend", params={"user": 0, "k": "many"}), 422, "query.k"),
        (client.get("/recommend"), 422, "query.user"),
        (client.post("/recommend", json={"users": [0, "nobody"]}), 404, "unknown user id 'nobody'"),
        (client.post("/recommend", json={"k": 3}), 422, "give either users"),
        (client.post("/recommend", json={"users": [0] * 1001}), 422, "at most 1000"),
        (
            client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}),
            422,
            "",
        ),
        (
            client.post("/recommend", content=b" " * (2 << 20), headers={"content-type": "application/json"}),
            413,
            "limit",
        ),
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert text in body["error"] and "Traceback" not in response.text


def test_sigterm_shuts_down_gracefully(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = trained_run("lightgcn", tmp_path_factory.getbasetemp())
    server = start_server(run, tmp_path, "--cache-k", "0")  # a run directory, no cache: per-request engine
    try:
        assert server.client.get("/recommend", params={"user": 0, "k": 3}).status_code == 200
        log = server.log.read_text()
        assert "http://127.0.0.1:" in log  # loopback by default
    finally:
        server.client.close()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(15) == 0
    assert "Traceback" not in server.log.read_text()
    json.dumps({})  # keep json imported for failure messages
