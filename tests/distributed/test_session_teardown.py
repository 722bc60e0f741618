"""The process group is freed when :func:`ssmrec.distributed.session` ends (two gloo ranks).

A group that outlives ``destroy_process_group`` is torn down during interpreter finalisation, which
now and then aborted a rank after a finished run (exit -6, "terminate called without an active
exception") and made torchrun report the run as failed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from test_distributed import TORCHRUN, child_env, free_port

WORKER = Path(__file__).with_name("teardown_worker.py")


def test_the_group_is_freed_when_the_session_ends(tmp_path: Path) -> None:
    command = [
        *TORCHRUN,
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        str(WORKER),
        str(tmp_path),
    ]
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["world_size"] == 2
        assert report["sum"] == 2.0  # the group worked while the session lasted
        assert not report["dynamo_imported_before_the_session"]  # the worker starts as ssmrec does
        assert report["group_freed"], f"rank {rank}: the process group outlived the session"
