"""The ``export``, ``recommend``, ``similar`` and ``serve`` subcommands of ``ssmrec``.

Registered by :func:`add_serving_parsers`; errors are :class:`ssmrec.errors.SsmrecError` (the CLI
prints ``ssmrec: error: ...`` and exits 2). Outputs written to files appear complete or not at all
(temporary name, then rename).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ssmrec.errors import SsmrecError
from ssmrec.serving.export import FORMATS, Export, IdMap, default_output, from_run, open_model, write
from ssmrec.serving.recommend import MAX_K, Ranked, Recommender, check_k

logger = logging.getLogger("ssmrec")

OUTPUT_FORMATS = ("jsonl", "csv")


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _warn(export: Export) -> None:
    for warning in export.warnings:
        _note(f"ssmrec: warning: {warning}")


# ------------------------------------------------------------------------------------------ output


@contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a file that appears only once complete (a temporary file renamed at the end)."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    if target.is_dir():
        raise SsmrecError(f"output {target} is a folder; give a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(name, 0o644)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def output_format(fmt: str | None, path: str | None) -> str:
    if fmt is None:
        fmt = "csv" if path and path.lower().endswith(".csv") else "jsonl"
    if fmt not in OUTPUT_FORMATS:
        raise SsmrecError(f"unknown output format {fmt!r}; choose jsonl or csv")
    return fmt


def _csv_field(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n\r') else text


def format_rows(
    key: str, queries: list[str], ranked: Ranked, items: IdMap, fmt: str, query_values: list[Any]
) -> str:
    """Lines for ranked rows: JSONL ``{key: id, "items": [...], "scores": [...]}`` or CSV rows
    ``id,rank,item,score``. ``queries`` are the query ids as JSON fragments, ``query_values`` as values.

    Built by joining precomputed id fragments: formatting, not ranking, would otherwise dominate.
    """
    item_json = items.json
    lines = []
    score_text = ranked.scores.astype(str)
    for row, (query, value) in enumerate(zip(queries, query_values, strict=True)):
        top = ranked.items[row]
        count = int((top >= 0).sum())
        if fmt == "jsonl":
            listed = ", ".join(item_json[i] for i in top[:count])
            scores = ", ".join(score_text[row, :count])
            lines.append(f'{{"{key}": {query}, "items": [{listed}], "scores": [{scores}]}}\n')
        else:
            who = _csv_field(str(value))
            for rank in range(count):
                item = _csv_field(str(items.values[top[rank]]))
                lines.append(f"{who},{rank + 1},{item},{score_text[row, rank]}\n")
    return "".join(lines)


def _csv_header(key: str) -> str:
    return f"{key},rank,item,score\n"


# ------------------------------------------------------------------------------------------ export


def _export(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    export = from_run(args.run_dir)
    built = time.perf_counter()
    output = Path(args.output) if args.output else default_output(args.run_dir, args.format)
    write(export, output, args.format)
    written = time.perf_counter()
    _warn(export)
    size = _size(output)
    summary: dict[str, Any] = {
        "output": str(output),
        "format": args.format,
        "bytes": size,
        "users": len(export.users),
        "items": len(export.items),
        "ranking_rule": export.ranking_rule,
        "load_seconds": round(built - started, 3),
        "write_seconds": round(written - built, 3),
    }
    if args.index:
        from ssmrec.serving.ann import build_index, index_path, save_index

        index = build_index(export, args.index)
        path = index_path(output, args.index)
        save_index(index, path)
        summary["index"] = {
            "path": str(path),
            "kind": args.index,
            "bytes": _size(path),
            "build_seconds": round(index.build_seconds, 3),
        }
    print(json.dumps(summary, indent=2))
    return 0


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# --------------------------------------------------------------------------------------- recommend


def _read_ids(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SsmrecError(f"{path}: cannot read users file ({error.strerror})") from error
    return [line.strip() for line in text.splitlines() if line.strip()]


def _recommend(args: argparse.Namespace) -> int:
    check_k(args.k, max(MAX_K, args.k))  # the CLI has no response-size limit
    fmt = output_format(args.format, args.output)
    export = open_model(args.target)
    _warn(export)
    service = _service(export, args.index)
    if args.items is not None:
        if args.user or args.users:
            raise SsmrecError("give either --items (a new user) or --user/--users, not both")
        ids = [part.strip() for part in args.items.split(",") if part.strip()]
        if not ids:
            raise SsmrecError("--items needs at least one item id")
        ranked = service.recommend_new(export.item_ids.indices(ids), args.k, args.include_seen)
        with _output(args.output) as stream:
            if fmt == "csv":
                stream.write(_csv_header("user"))
            stream.write(format_rows("user", ["null"], ranked, export.item_ids, fmt, [""]))
        return 0
    ids = list(args.user or [])
    if args.users:
        ids += _read_ids(args.users)
    if not ids:
        raise SsmrecError("give --user ID ..., --users FILE or --items ID,ID,...")
    users = export.user_ids.indices(ids)  # every id checked before anything is written
    started = time.perf_counter()
    with _output(args.output) as stream:
        if fmt == "csv":
            stream.write(_csv_header("user"))
        for start, stop, ranked in service.iter_recommend(users, args.k, args.include_seen):
            rows = users[start:stop]
            queries = [export.user_ids.json[u] for u in rows]
            values = [export.user_ids.values[u] for u in rows]
            stream.write(format_rows("user", queries, ranked, export.item_ids, fmt, values))
    seconds = time.perf_counter() - started
    if args.output:
        _note(
            f"{len(users)} users, k={args.k}: {seconds:.2f} s ({len(users) / max(seconds, 1e-9):.0f} users/s)"
        )
    return 0


def _service(export: Export, index: str | None) -> Any:
    if not index:
        return Recommender(export)
    from ssmrec.serving.ann import AnnRecommender

    return AnnRecommender.for_export(export, index)


def _similar(args: argparse.Namespace) -> int:
    check_k(args.k, max(MAX_K, args.k))
    fmt = output_format(args.format, args.output)
    export = open_model(args.target)
    item = export.item_ids.index(args.item)
    ranked = Recommender(export).similar(item, args.k)
    with _output(args.output) as stream:
        if fmt == "csv":
            stream.write(_csv_header("item"))
        stream.write(
            format_rows(
                "item",
                [export.item_ids.json[item]],
                ranked,
                export.item_ids,
                fmt,
                [export.item_ids.values[item]],
            )
        )
    return 0


# ------------------------------------------------------------------------------------------- serve


def _serve(args: argparse.Namespace) -> int:
    from ssmrec.serving.app import serve

    return serve(
        args.target,
        host=args.host,
        port=args.port,
        index=args.index,
        cache_k=args.cache_k,
        max_k=args.max_k,
        port_file=args.port_file,
    )


# ----------------------------------------------------------------------------------------- parsers


def add_serving_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``export``, ``recommend``, ``similar`` and ``serve`` on the ``ssmrec`` command."""
    export = subparsers.add_parser(
        "export",
        help="write a run's final representations, ids and seen items to one portable file",
        description="Export RUN_DIR: final user/item representations (after propagation), ranking rule, "
        "id maps, seen items, fingerprint and metrics. Read it with ssmrec.export.load().",
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument(
        "--format", choices=FORMATS, default="npz", help="npz (default), parquet, safetensors"
    )
    export.add_argument(
        "--output", help="file (npz, safetensors) or folder (parquet); default RUN_DIR/export.FMT"
    )
    export.add_argument("--index", choices=("hnsw", "ivf"), help="also build a faiss index (extra 'ann')")
    export.set_defaults(handler=_export)

    recommend = subparsers.add_parser(
        "recommend",
        help="top-K items per user, in the dataset's own ids",
        description="Top-K items per user by the run's ranking rule, seen items excluded (the evaluator's "
        "exact ranking). TARGET is a run directory or an export.",
    )
    recommend.add_argument("target", metavar="RUN_DIR|EXPORT")
    recommend.add_argument("--user", nargs="+", action="extend", metavar="ID", help="user ids")
    recommend.add_argument("--users", metavar="FILE", help="file with one user id per line (- for stdin)")
    recommend.add_argument("--items", metavar="ID,ID,...", help="a new user's items (LightGCN, history)")
    recommend.add_argument("-k", type=int, default=20, help="items per user (default 20)")
    recommend.add_argument("--include-seen", action="store_true", help="also recommend seen items")
    recommend.add_argument("--output", metavar="FILE", help="write here (default: stdout)")
    recommend.add_argument(
        "--format", choices=OUTPUT_FORMATS, help="jsonl (default) or csv (default for *.csv)"
    )
    recommend.add_argument("--index", choices=("hnsw", "ivf"), help="approximate: use a faiss index")
    recommend.set_defaults(handler=_recommend)

    similar = subparsers.add_parser(
        "similar",
        help="items most similar to an item by the model's own similarity",
        description="The K items most similar to ITEM by the similarity the model was trained with "
        "(cosine for SSM; the ranking rule for losses without one), the item itself excluded.",
    )
    similar.add_argument("target", metavar="RUN_DIR|EXPORT")
    similar.add_argument("--item", required=True, metavar="ID")
    similar.add_argument("-k", type=int, default=20)
    similar.add_argument("--output", metavar="FILE")
    similar.add_argument("--format", choices=OUTPUT_FORMATS)
    similar.set_defaults(handler=_similar)

    serve = subparsers.add_parser(
        "serve",
        help="serve recommendations over HTTP (extra 'serve': FastAPI + uvicorn)",
        description="HTTP API: GET/POST /recommend, GET /similar, GET /health, GET /metadata, docs at /docs.",
    )
    serve.add_argument("target", metavar="RUN_DIR|EXPORT")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed on start)")
    serve.add_argument("--index", choices=("hnsw", "ivf"), help="approximate: use a faiss index")
    serve.add_argument(
        "--cache-k",
        type=int,
        default=None,
        help="precompute every user's top K at start (default: 100 when users x items <= 2e9)",
    )
    serve.add_argument(
        "--max-k", type=int, default=MAX_K, help=f"largest k a request may ask (default {MAX_K})"
    )
    serve.add_argument("--port-file", help="write the bound port to this file once listening")
    serve.set_defaults(handler=_serve)
