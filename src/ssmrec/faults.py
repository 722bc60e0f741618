"""Injected faults, for the tests that prove a run survives ``kill -9`` at any instant.

``SSMREC_FAULT=NAME:N`` makes the N-th time the code passes ``point(NAME)`` kill the process with
SIGKILL (no handler runs, no buffer is flushed: exactly what an OOM kill or a pre-empted job does);
``NAME:N:stop`` sends SIGSTOP instead (a hung process, for the tests of the collective timeout).
Without the variable, :func:`point` is a dictionary lookup and nothing else. Points:

* ``step``: after a training step (N-th step of the process);
* ``evaluate``: before an evaluation;
* ``checkpoint.between_files``, ``checkpoint.before_rename``, ``checkpoint.before_cleanup``: inside
  a checkpoint write (:mod:`ssmrec.checkpoint`);
* ``weights.write``: before the best weights are saved.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "SSMREC_FAULT"
_counts: dict[str, int] = {}


def point(name: str) -> None:
    """Kill the process here if ``SSMREC_FAULT`` asks for this pass of ``name``."""
    wanted = os.environ.get(VARIABLE)
    if not wanted:
        return
    target, _, rest = wanted.partition(":")
    if target != name:
        return
    count, _, how = rest.partition(":")
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGSTOP if how == "stop" else signal.SIGKILL)
