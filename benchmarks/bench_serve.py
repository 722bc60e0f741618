"""Load test of ``ssmrec serve``: single-user GETs at several concurrencies, loopback only, bounded.

Starts ``python -m ssmrec serve TARGET --port 0`` (its own process), waits for ``/health`` (bounded),
then for each concurrency runs a load generator in a *separate* process (so it does not share the
server's GIL) for ``--seconds``: ``C`` keep-alive HTTP/1.1 connections, each sending
``GET /recommend?user=<random known id>&k=K`` and waiting for the answer. The generator is a minimal
asyncio client (raw request bytes, Content-Length framing) so that its own CPU use, on the same 2
cores, stays small. Reports requests/s, p50/p90/p99/max latency, non-200 answers and transport
errors, and the server's resident memory before and after each phase (``/proc/PID/status``).

    python benchmarks/bench_serve.py --target /work/runs/gowalla-3ep/export.npz \
        [--concurrency 1,8,32] [--seconds 20] [--k 20] [--name serve] [-- SERVE FLAGS...]

Writes benchmarks/results/<name>.json and <name>.md. The server is always stopped (SIGTERM, then kill).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STARTUP_SECONDS = 300


# ------------------------------------------------------------------------------- load generator


async def _connection(
    port: int, paths: list[bytes], stop_at: float, latencies: list[float], counts: dict
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rng = random.Random(len(latencies) ^ id(counts))
    try:
        while time.perf_counter() < stop_at:
            path = paths[rng.randrange(len(paths))]
            started = time.perf_counter()
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            counts["ok" if status == 200 else "bad_status"] += 1
    except (OSError, asyncio.IncompleteReadError):
        counts["transport_errors"] += 1
    finally:
        writer.close()


def generate(port: int, ids_file: str, concurrency: int, seconds: float, k: int, out: str) -> None:
    """The load generator process: writes its measurements as JSON to ``out``."""
    ids = json.loads(Path(ids_file).read_text())
    paths = [f"/recommend?user={u}&k={k}".encode() for u in ids]
    latencies: list[float] = []
    counts = {"ok": 0, "bad_status": 0, "transport_errors": 0}

    async def main() -> float:
        stop_at = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(
            *(_connection(port, paths, stop_at, latencies, counts) for _ in range(concurrency))
        )
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    latencies.sort()

    def quantile(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
        )

    Path(out).write_text(
        json.dumps(
            {
                "concurrency": concurrency,
                "seconds": elapsed,
                "requests": len(latencies),
                "requests_per_second": len(latencies) / elapsed,
                "p50_ms": quantile(0.5),
                "p90_ms": quantile(0.9),
                "p99_ms": quantile(0.99),
                "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
                **counts,
            }
        )
    )


# ------------------------------------------------------------------------------------- driver


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait_healthy(process: subprocess.Popen, port_file: Path, log: Path) -> int:
    import urllib.request

    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}:\n{log.read_text()}")
        if port_file.is_file() and port_file.read_text().strip():
            port = int(port_file.read_text())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return port
            except OSError:
                pass
        time.sleep(0.25)
    raise SystemExit(f"server not healthy after {STARTUP_SECONDS} s:\n{log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="export file or run directory")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--name", default="serve")
    parser.add_argument(
        "--generate", nargs=5, metavar=("PORT", "IDS", "C", "SECONDS", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("serve_flags", nargs="*", help="extra flags for ssmrec serve (after --)")
    args = parser.parse_args()
    if args.generate:
        port, ids, c, seconds, out = args.generate
        generate(int(port), ids, int(c), float(seconds), args.k, out)
        return

    from _results import write_results

    from ssmrec.serving.export import open_model

    export = open_model(args.target)
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    ids_file = folder / "ids.json"
    ids_file.write_text(json.dumps(export.user_ids.values))
    n_users, n_items = len(export.users), len(export.items)
    del export
    port_file, log = folder / "port", folder / "server.log"
    command = [
        sys.executable,
        "-m",
        "ssmrec",
        "serve",
        args.target,
        "--port",
        "0",
        "--port-file",
        str(port_file),
        *args.serve_flags,
    ]
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    phases = []
    try:
        port = _wait_healthy(server, port_file, log)
        ready = time.perf_counter() - started
        for c in [int(x) for x in args.concurrency.split(",")]:
            before = _rss_mb(server.pid)
            out = folder / f"c{c}.json"
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--k",
                    str(args.k),
                    "--target",
                    args.target,
                    "--generate",
                    str(port),
                    str(ids_file),
                    str(c),
                    str(args.seconds),
                    str(out),
                ],
                check=True,
                timeout=args.seconds + 120,
            )
            result = json.loads(out.read_text())
            result.update(rss_before_mb=before, rss_after_mb=_rss_mb(server.pid))
            phases.append(result)
            print(json.dumps(result), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    report = {
        "target": args.target,
        "users": n_users,
        "items": n_items,
        "k": args.k,
        "serve_flags": args.serve_flags,
        "ready_seconds": ready,
        "server_exit": server.returncode,
        "cpu_count": os.cpu_count(),
        "server_log": log.read_text()[-2000:],
        "phases": phases,
    }
    lines = [
        f"# ssmrec serve load test: {args.target} ({n_users} users, {n_items} items), k={args.k}",
        "",
        f"server ready after {ready:.1f} s; flags {args.serve_flags or 'default'}",
        "",
        "| concurrency | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | RSS MB before → after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        errors = p["bad_status"] + p["transport_errors"]
        lines.append(
            f"| {p['concurrency']} | {p['requests_per_second']:.0f} | {p['p50_ms']:.2f} | "
            f"{p['p90_ms']:.2f} | {p['p99_ms']:.2f} | {p['max_ms']:.1f} | {errors} | "
            f"{p['rss_before_mb']:.0f} → {p['rss_after_mb']:.0f} |"
        )
    write_results(args.name, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
