"""Dataset loading: cold (parse + hash + build + cache write) and cached, each in a fresh process.

A fresh process per measurement keeps the in-process hash memo and warm imports out of the cold number;
the import of ssmrec itself (scipy, torch) is reported separately.

    python benchmarks/bench_data.py [--data ../shared/data/gowalla] [--repeats 3]
Writes benchmarks/results/data.json and data.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import write_results

PROBE = """
import json, time
t0 = time.perf_counter()
from ssmrec.data import DataSpec, load_dataset
t1 = time.perf_counter()
data = load_dataset(DataSpec(path={path!r}, valid_ratio={valid_ratio}))
t2 = time.perf_counter()
print(json.dumps({{"import_seconds": t1 - t0, "load_seconds": t2 - t1, "train": int(data.train.nnz)}}))
"""


def measure(path: str, valid_ratio: float, cache: str) -> dict:
    code = PROBE.format(path=path, valid_ratio=valid_ratio)
    env = {**os.environ, "SSMREC_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/gowalla"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for valid_ratio in (0.0, 0.1):
        cold, cached = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                cold.append(measure(args.data, valid_ratio, cache))
                cached.append(measure(args.data, valid_ratio, cache))
        rows.append({
            "valid_ratio": valid_ratio,
            "cold_seconds": min(r["load_seconds"] for r in cold),
            "cached_seconds": min(r["load_seconds"] for r in cached),
            "import_seconds": min(r["import_seconds"] for r in cold + cached),
            "train_interactions": cold[0]["train"],
        })  # fmt: skip
    lines = ["| valid_ratio | cold load s | cached load s | import s |", "|---|---|---|---|"]
    for r in rows:
        cells = [str(r["valid_ratio"]), f"{r['cold_seconds']:.3f}", f"{r['cached_seconds']:.3f}"]
        lines.append("| " + " | ".join([*cells, f"{r['import_seconds']:.2f}"]) + " |")
    markdown = "\n".join(lines) + f"\n\nbest of {args.repeats} fresh processes; data {args.data}\n"
    write_results("data", {"data": args.data, "rows": rows}, markdown)


if __name__ == "__main__":
    main()
