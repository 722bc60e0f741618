"""Data-parallel training steps that equal the single-process step on the global batch.

Every rank holds the same model, Adam state and random generators (same seed, same draws), builds the
same global batch (the one seeded permutation, ``--batch-size`` rows, the negatives of all its rows from
the one stream) and encodes only its contiguous share of the rows. Gradients are then **summed** over
ranks (:meth:`ssmrec.distributed.Context.sum_gradients`), and Adam takes the same step everywhere, so
the replicas never diverge and a checkpoint of any rank is the single-process checkpoint.

Why the sum is the single-process gradient. Write the batch loss as ``L = Σ_r L_r``, one term per rank,
with ``L_r`` computed on rank r and differentiable in the parameters θ only through what rank r
encoded, plus the gathered rows of the others (:func:`ssmrec.distributed.gather_rows`, whose backward
delivers ``Σ_r ∂L_r/∂x_s`` to the owner s of rows ``x_s``). Then ``∂L/∂θ = Σ_r ∂L_r/∂θ``: summing (not
averaging, as DDP does) the ranks' gradients is exact. Two ways of splitting L are used:

* **own rows** (rows independent of each other: sampled negatives per row or shared, BPR, the full
  softmax): ``L_r`` is the loss of rank r's rows. ``sum`` reduction: as is; ``mean``: scaled by
  ``B_r / B`` so the parts add up to the mean over the global batch ``B``. No gather at all.
* **gathered** (in-batch negatives: every row's columns are the whole batch's positives; or an objective
  whose state follows every row, Adap-τ): users, positives and per-row negatives of all ranks are
  gathered with gradient, the objective runs on the whole batch on every rank, and ``L_r = L/W``; the
  gather's backward sums ``W`` copies of ``(1/W) ∂L/∂X``, which is ``∂L/∂X`` (the world-size factor is
  cancelled exactly; for W a power of two the scaling is even exact in floating point). The exclusion
  masks see the global batch's ids, so ``--exclude`` masks by global item id.

The regulariser is split by rows in both cases: each rank penalises its rows' users, positives and
per-row negatives, rank 0 alone a batch's shared negatives (a single process counts those once); the
``mean`` reduction divides by the global ``B``. The per-step loss value is the float64 sum of the parts.

What is replicated, not split: sampling the global batch's negatives (cheap next to encoding), the
objective of the gathered path (``O(B²d)`` for in-batch, the same on every rank), and the full forward
of the full softmax and of full-graph encoders. LightGCN's batch-local propagation encodes each rank's
own nodes only (a node's representation does not depend on which other nodes are in the batch).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ssmrec.batch import Batch
from ssmrec.distributed import Context, gather_rows
from ssmrec.losses import Objective, l2_penalty
from ssmrec.models import Recommender
from ssmrec.trainer import StepLoss, batch_loss, encode_batch


def rows_of(batch: Batch, start: int, stop: int) -> Batch:
    """Rows ``start:stop`` of ``batch``: per-row negatives and log q follow them, shared ones stay."""
    size = len(batch.users)
    negatives = batch.negatives
    if negatives is not None and negatives.dim() == 2:
        negatives = negatives[start:stop]
    log_q = batch.log_q
    if log_q is not None and log_q.dim() == 2 and log_q.shape[0] == size:
        log_q = log_q[start:stop]
    return dataclasses.replace(
        batch,
        users=batch.users[start:stop],
        positives=batch.positives[start:stop],
        negatives=negatives,
        log_q=log_q,
    )


class DataParallel:
    """:class:`ssmrec.trainer.Replicas` over the ranks of ``context`` (the module docstring's two splits)."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def gathers(self, objective: Objective, batch: Batch) -> bool:
        """Whether this step needs the gathered path (rows not independent, or state that sees every row)."""
        if objective.carries_batch_state:
            return True
        return batch.in_batch and not objective.needs_all_items

    def batch_loss(self, model: Recommender, objective: Objective, batch: Batch, reg: float) -> StepLoss:
        context = self.context
        size = len(batch.users)
        start, stop = context.share(size)
        local = rows_of(batch, start, stop)
        penalty = self._penalty(model, objective, batch, local, reg) if reg > 0 else None
        if not self.gathers(objective, batch):
            if stop == start:  # a last batch with fewer rows than ranks: nothing here
                return StepLoss(torch.zeros((), requires_grad=True), penalty)
            part = batch_loss(model, objective, local, 0.0).objective
            if objective.reduction == "mean":
                part = part * ((stop - start) / size)
            return StepLoss(part, penalty)
        if objective.needs_all_items:  # stateful and needs all items: replicate the whole step
            whole = batch_loss(model, objective, batch, 0.0).objective
            return StepLoss(whole / context.world_size, penalty)
        users, positives, negatives, local = self._encode(model, objective, local)
        sizes = context.shares(size)
        users, positives = gather_rows(users, sizes, context), gather_rows(positives, sizes, context)
        if negatives is not None and negatives.dim() == 3:
            negatives = gather_rows(negatives, sizes, context)
        whole = dataclasses.replace(batch, normalized=local.normalized)
        return StepLoss(objective(users, positives, negatives, whole) / context.world_size, penalty)

    def _encode(
        self, model: Recommender, objective: Objective, local: Batch
    ) -> tuple[Tensor, Tensor, Tensor | None, Batch]:
        shared = local.negatives is not None and local.negatives.dim() == 1
        if len(local.users) or shared:  # shared negatives are every rank's: encoded here too
            return encode_batch(model, objective, local)
        # no rows here (a last batch with fewer rows than ranks): empty leaves that still take part in
        # the gathers' backward, which is a collective
        dim = model.dim
        negatives = None
        if local.negatives is not None:
            negatives = torch.zeros((*local.negatives.shape, dim), requires_grad=True)
        empty = torch.zeros((0, dim), requires_grad=True)
        normalized = objective.similarity == "cosine"
        return empty, empty, negatives, dataclasses.replace(local, normalized=normalized)

    def _penalty(
        self, model: Recommender, objective: Objective, batch: Batch, local: Batch, reg: float
    ) -> Tensor:
        """This rank's part of ``reg/2 Σ‖e‖²`` over the global batch (module docstring)."""
        items = [local.positives]
        if batch.negatives is not None and (batch.negatives.dim() == 2 or self.context.is_main):
            assert local.negatives is not None
            items.append(local.negatives.reshape(-1))
        ego = model.ego(local.users, torch.cat(items))
        return l2_penalty(reg, ego, len(batch.users), objective.reduction)

    def loss_value(self, loss: StepLoss) -> float:
        return float(self.context.sum(loss.total.detach().double().reshape(1)))

    def sum_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.context.sum_gradients(parameters)

    def agree(self, flag: bool) -> bool:
        return self.context.agree(flag)
