"""Several processes on ``torch.distributed``: the process group and the exact collectives training needs.

``ssmrec train`` started by ``torchrun`` (``python -m torch.distributed.run``) finds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` in its environment and joins the
group itself (:func:`session`): gloo on CPUs, NCCL where the rank's device is a GPU. Without those
variables (or with ``WORLD_SIZE=1``) everything here is the identity and no group exists; nor inside
:func:`independent_workers`, for commands whose torchrun processes each do their own work (``ssmrec tune``).

Every collective has a bounded timeout (``--dist-timeout``, seconds): a rank that dies or hangs makes
the others fail with :class:`PeerLostError` within that time instead of waiting forever.

What the rest of ssmrec uses:

* :class:`Context` (``current()``): rank, world size, and each rank's contiguous share of a batch;
* :func:`gather_rows`: an all-gather **with gradient** (see :class:`_GatherRows` for why its backward is
  an all-reduce *sum* and where the world-size factor goes);
* :meth:`Context.sum` (float64 all-reduce), :meth:`Context.agree` (rank 0's decision for all),
  :meth:`Context.sum_gradients`, :meth:`Context.broadcast`, :meth:`Context.together` (a failure on
  one rank is reported on every rank instead of leaving the others waiting).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ssmrec.errors import PeerLostError, SsmrecError

logger = logging.getLogger("ssmrec")

DEFAULT_TIMEOUT = 300.0
"""Seconds a collective may wait for the other ranks before the run fails (``--dist-timeout``)."""

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place in the run; ``world_size == 1`` is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout: float = DEFAULT_TIMEOUT
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Where collectives' tensors must live: the rank's GPU under NCCL, the CPU under gloo."""

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run directory, logs and checkpoints, and decides when to stop."""
        return self.rank == 0

    def shares(self, n: int) -> list[int]:
        """Rows of an ``n``-row batch per rank: contiguous, the first ``n % world_size`` ranks one more."""
        base, extra = divmod(n, self.world_size)
        return [base + (r < extra) for r in range(self.world_size)]

    def share(self, n: int) -> tuple[int, int]:
        """``(start, stop)`` of this rank's rows of an ``n``-row batch."""
        sizes = self.shares(n)
        start = sum(sizes[: self.rank])
        return start, start + sizes[self.rank]

    # ------------------------------------------------------------------------------ collectives

    def _failed(self, what: str, error: BaseException) -> PeerLostError:
        return PeerLostError(
            f"rank {self.rank} of {self.world_size}: {what} failed (collective timeout {self.timeout:g} s): "
            f"another process died or hung, or the connection between them broke ({error})"
        )

    def sum(self, values: Tensor) -> Tensor:
        """Element-wise sum over ranks (a copy; float64 stays float64), identical on every rank."""
        total = values.to(self.device, copy=True)
        if self.active:
            try:
                dist.all_reduce(total, op=dist.ReduceOp.SUM)
                dist.broadcast(total, src=0)  # bit-identical on every rank whatever the reduction order
            except (RuntimeError, dist.DistError) as error:
                raise self._failed("a sum over ranks", error) from error
        return total.to(values.device)

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (stop requests, the time budget: decided once, obeyed by all)."""
        if not self.active:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        try:
            dist.broadcast(value, src=0)
        except (RuntimeError, dist.DistError) as error:
            raise self._failed("a stop decision", error) from error
        return bool(value.item())

    def broadcast(self, value: T) -> T:
        """Rank 0's picklable ``value`` on every rank (a checkpoint, a config)."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        try:
            dist.broadcast_object_list(box, src=0)
        except (RuntimeError, dist.DistError) as error:
            raise self._failed("a broadcast from rank 0", error) from error
        return box[0]  # type: ignore[return-value]

    def together(self, action: Callable[[], T]) -> T:
        """Run ``action`` on every rank; if it raises :class:`SsmrecError` on any rank, raise on all.

        Without this a rank refused at set-up (a missing file, an occupied output folder) would exit
        while the others wait for it in their first collective until the timeout.
        """
        result: T | None = None
        message = None
        try:
            result = action()
        except (SsmrecError, FileExistsError) as error:
            if not self.active:
                raise
            message = str(error)
            own = error
        if not self.active:
            return result  # type: ignore[return-value]
        messages: list[str | None] = [None] * self.world_size
        try:
            dist.all_gather_object(messages, message)
        except (RuntimeError, dist.DistError) as error:
            raise self._failed("the set-up check", error) from error
        if message is not None:
            raise own
        for rank, text in enumerate(messages):
            if text is not None:
                raise SsmrecError(f"rank {rank} stopped the run: {text}")
        return result  # type: ignore[return-value]

    def same_everywhere(self, value: Any, what: str) -> None:
        """Refuse a run whose ranks disagree on ``value`` (e.g. the hashes of the data files they read)."""
        if not self.active:
            return
        values: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(values, value)
        except (RuntimeError, dist.DistError) as error:
            raise self._failed(f"comparing {what}", error) from error
        for rank, other in enumerate(values):
            if other != values[0]:
                raise SsmrecError(f"rank {rank} has other {what} than rank 0: every rank must see the same")

    def sum_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Replace every gradient by its **sum** over ranks (not DDP's mean: see :mod:`ssmrec.parallel`).

        Sparse gradients are densified first. A parameter without a gradient on some rank but with one on
        another (a rank whose share never reached it) gets zeros there, so every rank adds the same
        tensors and Adam then takes the same step everywhere; one left without a gradient on every rank
        stays without (Adam skips it, as a single process would).
        """
        if not self.active:
            return
        try:
            present = torch.tensor(
                [p.grad is not None for p in parameters], dtype=torch.int32, device=self.device
            )
            dist.all_reduce(present, op=dist.ReduceOp.SUM)
            grads = []
            for parameter, count in zip(parameters, present.tolist(), strict=True):
                if not count:
                    continue
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                elif parameter.grad.is_sparse:
                    parameter.grad = parameter.grad.to_dense()
                grads.append(parameter.grad)
            if not grads:
                return
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)  # every rank receives the same sums
        except (RuntimeError, dist.DistError) as error:
            raise self._failed("the gradient sum", error) from error
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


_current = Context()
_independent = False


def current() -> Context:
    """The context of the :func:`session` in progress (a single-process one outside any)."""
    return _current


def environment_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def restart_count() -> int:
    """How many times torchrun has restarted this run's workers (``--max-restarts``; 0 without torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def rank_device(prefer_cuda: bool = True) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is available and wanted, else the CPU.

    The one place that maps ranks to devices (the device setting of a run decides ``prefer_cuda``).
    """
    if prefer_cuda and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0))
    return torch.device("cpu")


def group_device(configured: torch.device, context: Context, run: object) -> torch.device:
    """The device a resumed run computes on: the one its process group was joined on, which must be
    of the kind the run's config names.

    A resume joins the group before rank 0 has read the run's config (the config is handed out over
    the group), so the backend follows ``--device`` or ``auto``. A run trained with ``--device cpu`` on a
    GPU machine and resumed without ``--device`` would otherwise move to the GPUs silently and stop
    reproducing its own results; it is refused instead, before anything is written.
    """
    if context.world_size <= 1:
        return configured
    if configured.type != context.device.type:
        raise SsmrecError(
            f"{run}: the run's config computes on {configured.type}, but this resume joined the process "
            f"group on {context.device} ({'NCCL' if context.device.type == 'cuda' else 'gloo'}, from "
            f"--device or auto); resume it with --device {configured.type} to keep it where it ran, or "
            f"--device {context.device.type} to move it"
        )
    return context.device


@contextlib.contextmanager
def session(timeout: float = DEFAULT_TIMEOUT, prefer_cuda: bool = False) -> Iterator[Context]:
    """Join the process group torchrun described in the environment, for the duration of the block.

    Nested sessions reuse the outer one. ``timeout`` bounds every collective. Ranks other than 0 log
    warnings only (rank 0 reports the run).
    """
    global _current
    if _current.active or _independent or environment_world_size() <= 1:
        yield _current
        return
    if not timeout > 0:
        raise SsmrecError(f"dist_timeout must be > 0 seconds, got {timeout}")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise SsmrecError(f"WORLD_SIZE is set but {name} is not: start several processes with torchrun")
    _load_dynamo_before_the_group()
    device = rank_device(prefer_cuda)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(
            backend,
            store=_attempt_store(timeout),
            rank=int(os.environ["RANK"]),
            world_size=environment_world_size(),
            timeout=timedelta(seconds=timeout),
        )
    except (RuntimeError, ValueError, dist.DistError) as error:
        raise PeerLostError(f"could not join the process group ({backend}): {error}") from error
    context = Context(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0") or 0),
        timeout=float(timeout),
        device=device,
    )
    previous_level = logger.level
    if not context.is_main:
        logger.setLevel(logging.WARNING)
    _current = context
    failed = False
    try:
        yield context
    except PeerLostError:
        failed = True
        raise
    finally:
        _current = Context()
        logger.setLevel(previous_level)
        if not failed:  # after a lost peer the group is unusable; the process is about to exit anyway
            with contextlib.suppress(RuntimeError, dist.DistError):
                dist.destroy_process_group()


@contextlib.contextmanager
def independent_workers() -> Iterator[int | None]:
    """Run the block as one of torchrun's processes doing work of its own: no process group is joined
    (every :func:`session` inside is the single-process one).

    For commands whose processes do different work, as ``ssmrec tune``'s do (each trains its own trials
    of a shared study): joining would make trials with different settings train as the replicas of one
    model, which gives wrong numbers without an error. Under torchrun with CUDA, the process's current
    GPU becomes ``cuda:LOCAL_RANK``, so ``--device auto`` or ``cuda`` (no index) gives each worker its
    own GPU. Yields ``LOCAL_RANK`` under torchrun, ``None`` without it.
    """
    global _independent
    if environment_world_size() <= 1:
        yield None
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)
    previous, _independent = _independent, True
    try:
        yield local_rank
    finally:
        _independent = previous


def _load_dynamo_before_the_group() -> None:
    """Import ``torch._dynamo`` while no process group exists.

    torch imports it lazily (the first ``torch.optim`` optimizer does); imported while a group exists,
    it keeps ten references to that group for the life of the interpreter, so
    :func:`~torch.distributed.destroy_process_group` cannot free it and the gloo group is torn down
    during interpreter finalisation instead, which now and then aborts the process after a finished
    run ("terminate called without an active exception", exit -6: torchrun then reports the run as
    failed; seen in CI on the restart test). ``tests/distributed/test_session_teardown.py`` checks
    that the group is freed when the session ends.
    """
    import torch._dynamo  # noqa: F401  (imported for its side effect on import order)


def _attempt_store(timeout: float) -> dist.Store:
    """The rendezvous store of torchrun's environment, with keys of this attempt only.

    After ``--max-restarts`` restarts the workers, torchrun's agent (static rendezvous) keeps its store,
    which still holds the dead workers' gloo addresses under the same keys: a new worker could read one
    and fail to connect ("Connection refused", seen in this project's restart test). A prefix per
    restart keeps the attempts apart.
    """
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    rank, world_size = int(os.environ["RANK"]), environment_world_size()
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        host,
        port,
        world_size,
        is_master=not agent_hosts and rank == 0,
        timeout=timedelta(seconds=timeout),
        multi_tenant=not agent_hosts,
    )
    return dist.PrefixStore(f"ssmrec/attempt-{restart_count()}", store)


class _GatherRows(torch.autograd.Function):
    """All-gather of each rank's rows, with the gradient of the gathered tensor routed back.

    Forward: rank r holds ``x_r`` (its rows); every rank gets ``X = [x_0; …; x_{W−1}]``.

    Backward: rank s's rows ``x_s`` are used by the loss on *every* rank, so
    ``∂L/∂x_s = Σ_r ∂L_r/∂X[s]``, where ``L_r`` is what rank r back-propagates. Hence: all-reduce the
    incoming gradient with SUM, keep slice s. With ``L_r = L/W`` on every rank (the replicated loss of
    :mod:`ssmrec.parallel`) this gives ``W · (1/W) ∂L/∂X[s] = ∂L/∂x_s``: no world-size factor left over.
    The peers' bug was the other combination — the slice of the local gradient without the sum (off by
    ``1/W`` per missing rank's share) or the sum followed by DDP's mean over ranks.
    """

    @staticmethod
    def forward(ctx, local: Tensor, sizes: list[int], context: Context) -> Tensor:  # type: ignore[override]
        ctx.sizes, ctx.context = sizes, context
        rank = context.rank
        width = max(sizes)
        padded = local.new_zeros((width, *local.shape[1:]))
        padded[: sizes[rank]] = local
        parts = [torch.empty_like(padded) for _ in sizes]
        try:
            dist.all_gather(parts, padded.contiguous())
        except (RuntimeError, dist.DistError) as error:
            raise context._failed("the all-gather of the batch", error) from error
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        sizes, context = ctx.sizes, ctx.context
        total = grad.contiguous().clone()
        try:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        except (RuntimeError, dist.DistError) as error:
            raise context._failed("the all-reduce of the batch's gradient", error) from error
        start = sum(sizes[: context.rank])
        return total[start : start + sizes[context.rank]], None, None


def gather_rows(local: Tensor, sizes: list[int], context: Context) -> Tensor:
    """All ranks' rows in rank order, differentiable (:class:`_GatherRows`); ``sizes``: rows per rank."""
    if not context.active:
        return local
    if local.shape[0] != sizes[context.rank]:
        raise ValueError(f"rank {context.rank} holds {local.shape[0]} rows, expected {sizes[context.rank]}")
    return _GatherRows.apply(local, list(sizes), context)
