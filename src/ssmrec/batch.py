"""The context one training step hands to an objective, besides the representations.

Most objectives only need final representations. A few need more, and they get it here instead of
through per-loss branches in the training loop:

* masking accidental hits (``exclude``) needs the batch's user and item ids and the training set;
* logQ correction needs the sampler's log expected counts of every candidate;
* the full softmax needs all item representations;
* Adap-τ needs the user ids (its temperatures are per user).

Candidate columns
-----------------
Every objective scores each row's user against the same columns, in this order:

* ``in_batch``: the B positives of the batch (row b's own positive is column b), then
* the sampled negatives: ``negatives`` of shape (M,) are shared by all rows, (B, M) are per row.

Without ``in_batch`` the first column is row b's own positive, so a row has ``1 + M`` columns.
``log_q`` follows the same column order (positive columns included) and broadcasts to (B, K).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ssmrec.data.training_set import TrainingSet
from ssmrec.device import to_device
from ssmrec.sampling.negatives import Negatives


@dataclass(frozen=True)
class Batch:
    """Ids and side information of one training batch; built by the training loop."""

    users: Tensor
    """(B,) user ids."""
    positives: Tensor
    """(B,) item ids of each row's positive."""
    negatives: Tensor | None = None
    """Sampled item ids: (B, M) per row, (M,) shared, or ``None``."""
    in_batch: bool = True
    """The other rows' positives are negatives of each row."""
    log_q: Tensor | None = None
    """Log expected count of every candidate column under the sampler, broadcastable to (B, K)."""
    rejects_training: bool = False
    """Sampled ids already exclude each user's training items (no need to mask them)."""
    training: TrainingSet | None = None
    """The training interactions, for masking accidental hits."""
    all_items: Callable[[], Tensor] | None = None
    """All items' final representations (n_items × d), for the full softmax."""
    normalized: bool = False
    """The representations handed over with this batch are unit length already: the trainer normalised
    each distinct user and item once, which is far cheaper than normalising B × M gathered negatives
    (CCL's 800 per row). Cosine objectives then skip their own normalisation."""
    host: Batch | None = None
    """This batch on the CPU, when this one was copied to an accelerator (:meth:`to`): objectives that
    mask ids with the host's training set read them here instead of copying them back every step."""

    @classmethod
    def build(
        cls,
        users: Tensor,
        positives: Tensor,
        negatives: Negatives,
        training: TrainingSet | None = None,
        all_items: Callable[[], Tensor] | None = None,
    ) -> Batch:
        return cls(
            users=users,
            positives=positives,
            negatives=negatives.ids,
            in_batch=negatives.in_batch,
            log_q=negatives.log_q,
            rejects_training=negatives.rejects_training,
            training=training,
            all_items=all_items,
        )

    @property
    def on_host(self) -> Batch:
        """The batch with CPU tensors (itself on the CPU)."""
        return self if self.host is None else self.host

    def to(self, device: torch.device) -> Batch:
        """This batch's tensors on ``device`` (copied asynchronously on CUDA), the CPU batch kept as
        :attr:`host`. The CPU path never calls this: there the batch is used as built."""

        def move(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else to_device(tensor, device)

        return dataclasses.replace(
            self,
            users=to_device(self.users, device),
            positives=to_device(self.positives, device),
            negatives=move(self.negatives),
            log_q=move(self.log_q),
            host=self.on_host,
        )

    def items(self) -> Tensor:
        """Ids whose representations the step needs: positives, then the sampled negatives flattened."""
        if self.negatives is None:
            return self.positives
        return torch.cat([self.positives, self.negatives.reshape(-1)])
