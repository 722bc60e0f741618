"""Run under torchrun by ``test_session_teardown.py``: does the process group die with the session?

Builds an Adam optimizer inside :func:`ssmrec.distributed.session` (the first ``torch.optim``
optimizer imports ``torch._dynamo``, which, imported while a group exists, keeps that group alive),
then reports whether the group object is gone once the session has ended.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import weakref
from pathlib import Path

import torch
import torch.distributed as dist

from ssmrec import distributed

out = Path(sys.argv[1])
dynamo_before = "torch._dynamo" in sys.modules
with distributed.session(timeout=30) as context:
    group = weakref.ref(dist.group.WORLD)  # the default group (public name)
    parameter = torch.nn.Parameter(torch.ones(3))
    torch.optim.Adam([parameter], lr=1e-3, fused=True)
    total = context.sum(torch.ones(1, dtype=torch.float64))
gc.collect()
report = {
    "world_size": context.world_size,
    "sum": float(total),
    "dynamo_imported_before_the_session": dynamo_before,
    "group_freed": group() is None,
}
(out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(report))
