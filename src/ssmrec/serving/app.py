"""``ssmrec serve``: an HTTP API over an export or a run directory (extra ``serve``: FastAPI + uvicorn).

Endpoints: ``GET /recommend?user=ID&k=20``, ``POST /recommend`` (many users, or a new user's items),
``GET /similar?item=ID&k=20``, ``GET /health``, ``GET /metadata``; OpenAPI docs at ``/docs``.

Errors are JSON ``{"error": message}``: unknown user or item 404, invalid parameters (k < 1, k above
``max_k``, too many users) 422, bodies over ``MAX_BODY_BYTES`` 413, a model without a new-user encoder
409; an unexpected failure is logged on the server and answered 500 without a traceback.

Speed: everything that does not depend on the request is done at start. Every user's exact top
``cache_k`` (default 100 when users × items ≤ 2e9, Gowalla-sized) is ranked once, in batches, with the
evaluator's engine, so a GET with ``k <= cache_k`` only slices and formats (the same lists the engine
gives per request: tested); other requests use one engine built at start over all users
(:class:`ssmrec.serving.recommend.Recommender`). Responses are written from precomputed id fragments.
Torch runs one intra-op thread (requests are the parallelism). Bound to 127.0.0.1 unless told
otherwise; SIGTERM and Ctrl-C stop accepting connections and finish the requests in flight.
"""

# no "from __future__ import annotations": FastAPI reads the request models defined in create_app
# from the annotations at run time
import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmrec.errors import SsmrecError
from ssmrec.serving.export import Export, UnknownIdError, open_model
from ssmrec.serving.recommend import MAX_K, FoldInUnsupportedError, Ranked, Recommender

logger = logging.getLogger("ssmrec.serve")

MAX_BODY_BYTES = 1 << 20
"""Largest POST body accepted (1 MiB)."""
MAX_USERS_PER_REQUEST = 1000
AUTO_CACHE_PAIRS = 2e9
"""``cache_k`` defaults to 100 when users × items is at most this (the precompute takes seconds)."""
AUTO_CACHE_K = 100


def _fastapi() -> Any:
    try:
        import fastapi
        import uvicorn
    except ImportError as error:
        raise SsmrecError("ssmrec serve needs FastAPI and uvicorn: pip install 'ssmrec[serve]'") from error
    return fastapi, uvicorn


class ServingState:
    """An export with everything a request can reuse: engines, the top-K cache, id fragments."""

    def __init__(
        self, export: Export, cache_k: int | None = None, max_k: int = MAX_K, index: str | None = None
    ) -> None:
        self.export = export
        self.max_k = max_k
        self.service: Any = Recommender(export)
        if index:
            from ssmrec.serving.ann import AnnRecommender

            self.service = AnnRecommender.for_export(export, index)
        n_users, n_items = len(export.users), len(export.items)
        if cache_k is None:
            cache_k = AUTO_CACHE_K if n_users * n_items <= AUTO_CACHE_PAIRS and not index else 0
        self.cache_k = min(cache_k, n_items)
        started = time.perf_counter()
        self.cache: Ranked | None = None
        if self.cache_k > 0:
            self.cache = self.service.recommend(np.arange(n_users), self.cache_k)
        self.cache_seconds = time.perf_counter() - started
        torch.set_num_threads(1)
        if not index:
            self.service.engine()  # built now, not on the first request
        else:
            import faiss

            faiss.omp_set_num_threads(1)  # requests are the parallelism, as for torch
        self.item_json = export.item_ids.json
        self.user_json = export.user_ids.json
        self.metadata = _public_metadata(export, self.cache_k, max_k, index)

    def body(self, key: str, query_json: str, ranked: Ranked, row: int, k: int) -> str:
        top = ranked.items[row, :k]
        count = int((top >= 0).sum())
        items = ", ".join([self.item_json[i] for i in top[:count]])
        scores = ", ".join(ranked.scores[row, :count].astype(str))
        return f'{{"{key}": {query_json}, "items": [{items}], "scores": [{scores}]}}'

    def recommend_user(self, user_id: str, k: int, include_seen: bool) -> str:
        user = self.export.user_ids.index(user_id)
        if self.cache is not None and k <= self.cache_k and not include_seen:
            return self.body("user", self.user_json[user], self.cache, user, k)
        ranked = self.service.recommend_one(user, k, include_seen)
        return self.body("user", self.user_json[user], ranked, 0, k)

    def recommend_items(self, item_ids: list[Any], k: int, include_seen: bool) -> str:
        items = self.export.item_ids.indices(item_ids)
        ranked = self.service.recommend_new(items, k, include_seen)
        return self.body("user", "null", ranked, 0, k)

    def similar(self, item_id: str, k: int) -> str:
        item = self.export.item_ids.index(item_id)
        return self.body("item", self.item_json[item], self.service.similar(item, k), 0, k)


def _public_metadata(export: Export, cache_k: int, max_k: int, index: str | None) -> dict[str, Any]:
    meta = export.metadata
    model = dict(meta.get("model") or {})
    return {
        "model": {"name": model.get("name"), "loss": model.get("loss"), "config": model.get("config")},
        "ranking_rule": meta.get("ranking_rule"),
        "similarity": meta.get("similarity"),
        "trained_similarity": meta.get("trained_similarity"),
        "warnings": meta.get("warnings", []),
        "counts": meta.get("counts"),
        "fingerprint": meta.get("fingerprint"),
        "metrics": meta.get("metrics"),
        "new_users": meta.get("foldin") is not None,
        "new_users_unsupported": meta.get("foldin_unsupported"),
        "index": index,
        "exact": not index,
        "cache_k": cache_k,
        "max_k": max_k,
        "ssmrec_version": meta.get("ssmrec_version"),
    }


def create_app(state: ServingState) -> Any:
    """The FastAPI application over ``state``."""
    _fastapi()
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, Field
    from starlette.concurrency import run_in_threadpool

    max_k = state.max_k

    class Recommendation(BaseModel):
        user: Any = Field(description="the user's id (null for a new user given by its items)")
        items: list[Any] = Field(description="recommended item ids, best first")
        scores: list[float] = Field(description="their scores under the ranking rule")

    class Similar(BaseModel):
        item: Any
        items: list[Any]
        scores: list[float]

    class Batch(BaseModel):
        users: list[int | str] | None = Field(
            None, description="known user ids", max_length=MAX_USERS_PER_REQUEST
        )
        items: list[int | str] | None = Field(
            None, description="a new user's item ids (instead of users)", max_length=10_000
        )
        k: int = Field(20, ge=1, le=max_k)
        include_seen: bool = False

    app = FastAPI(
        title="ssmrec",
        version=str(state.metadata.get("ssmrec_version")),
        description="Recommendations from a trained ssmrec model, in the dataset's own ids. Exact ranking "
        "(the evaluator's) unless served with an index.",
    )

    def json_response(body: str) -> Response:
        return Response(content=body, media_type="application/json")

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message, **extra})

    @app.exception_handler(UnknownIdError)
    async def unknown(_: Request, exc: UnknownIdError) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(FoldInUnsupportedError)
    async def no_encoder(_: Request, exc: FoldInUnsupportedError) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(SsmrecError)
    async def bad_request(_: Request, exc: SsmrecError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        text = "; ".join(f"{p['where']}: {p['message']}" for p in problems)
        return error(422, f"invalid request: {text}", problems=problems)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("request failed")
        return error(500, "internal error (logged on the server)")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return state.metadata

    @app.get("/recommend", response_model=Recommendation, summary="top-K items of one known user")
    async def recommend(
        user: str = Query(..., description="the user's id"),
        k: int = Query(20, ge=1, le=max_k),
        include_seen: bool = Query(False, description="also recommend the user's seen items"),
    ) -> Response:
        return json_response(state.recommend_user(user, k, include_seen))

    @app.post("/recommend", summary="top-K of many users, or of a new user given by its items")
    async def recommend_many(batch: Batch) -> Response:
        if (batch.users is None) == (batch.items is None):
            raise SsmrecError("give either users (known user ids) or items (a new user's item ids)")
        if batch.items is not None:
            return json_response(
                await run_in_threadpool(state.recommend_items, batch.items, batch.k, batch.include_seen)
            )
        for user in batch.users or []:
            state.export.user_ids.index(user)  # 404 before any work

        def many() -> str:
            rows = [state.recommend_user(str(u), batch.k, batch.include_seen) for u in batch.users or []]
            return '{"results": [' + ", ".join(rows) + "]}"

        return json_response(await run_in_threadpool(many))

    @app.get("/similar", response_model=Similar, summary="items most similar to an item")
    async def similar(item: str = Query(...), k: int = Query(20, ge=1, le=max_k)) -> Response:
        return json_response(state.similar(item, k))

    return _BodyLimit(app, MAX_BODY_BYTES)


class _BodyLimit:
    """ASGI middleware: bodies over ``limit`` bytes get 413 before the application reads them."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    def __getattr__(self, name: str) -> Any:  # openapi(), routes, ... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is None or not length.isdigit() or int(length) > self.limit:
            status = 411 if length is None else 413
            message = (
                "a Content-Length header is required"
                if length is None
                else f"request body over the {self.limit} byte limit"
            )
            await _send_json(send, status, {"error": message})
            return
        await self.app(scope, receive, send)


async def _send_json(send: Any, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _no_delay_protocol() -> type:
    """uvicorn's h11 protocol with ``TCP_NODELAY`` on every connection.

    h11 writes a response's headers and body separately; without ``TCP_NODELAY`` the second write
    waits for the client's delayed ACK of the first on a keep-alive connection (measured: 44 ms per
    request after the first, against 0.1 ms of work).
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class NoDelayH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)

    return NoDelayH11Protocol


def serve(
    target: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    index: str | None = None,
    cache_k: int | None = None,
    max_k: int = MAX_K,
    port_file: str | None = None,
) -> int:
    """Load ``target``, precompute, bind ``host:port`` (0: any free port) and serve until stopped."""
    _, uvicorn = _fastapi()
    if max_k < 1:
        raise SsmrecError(f"--max-k must be >= 1, got {max_k}")
    if cache_k is not None and cache_k < 0:
        raise SsmrecError(f"--cache-k must be >= 0, got {cache_k}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    started = time.perf_counter()
    export = open_model(target)
    state = ServingState(export, cache_k, max_k, index)
    for warning in export.warnings:
        logger.warning("warning: %s", warning)
    app = create_app(state)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise SsmrecError(f"cannot listen on {host}:{port}: {err.strerror}") from err
    bound = sock.getsockname()[1]
    logger.info(
        "serving %s on http://%s:%d (%d users, %d items, %s ranking%s; "
        "top-%d cache in %.2f s; ready after %.2f s)",
        target,
        host,
        bound,
        len(export.users),
        len(export.items),
        export.ranking_rule,
        f", {index} index" if index else ", exact",
        state.cache_k,
        state.cache_seconds,
        time.perf_counter() - started,
    )
    if port_file:
        Path(port_file).write_text(f"{bound}\n")
    config = uvicorn.Config(
        app, http=_no_delay_protocol(), log_level="warning", access_log=False, timeout_graceful_shutdown=10
    )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal once its own handler is
    # removed; this handler takes that re-raised signal, so a requested stop exits with status 0
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    logger.info("stopped")
    return 0
