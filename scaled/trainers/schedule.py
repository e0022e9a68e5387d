"""The update schedule of one rollout batch: PPO epochs, mini-batches (one optimizer step each), micro-batches.

verl's convention (``verl/workers/actor/dp_actor.py::update_policy``, verl
0.4-0.5; ``ppo_epochs``, ``ppo_mini_batch_size``, ``ppo_micro_batch_size_per_gpu``):
the old log-probabilities are computed once per rollout batch, then for each
of ``ppo_epochs`` epochs the batch is split, in order, into mini-batches; each
mini-batch is one optimizer step, accumulated over micro-batches. verl's
global ``ppo_mini_batch_size`` counts prompts and is multiplied by the rollout
``n`` and divided by the number of ranks; polab's ``mini_batch_size`` counts
responses over all ranks (``prompts x samples``), so it is verl's value times
``n``. The loss of a mini-batch is normalised over the whole mini-batch across
ranks (:func:`polab.estimators.policy_loss.aggregation_weight`), so micro-batches
and ranks reproduce its full aggregate, as verl normalises globally.

Nothing here knows about language models: rows are whatever the trainer batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from polab.estimators.policy_loss import aggregation_weight

from .. import distributed as D

__all__ = ["Normaliser", "UpdateSchedule"]


@dataclass(frozen=True)
class Normaliser:
    """Global denominators of one mini-batch: response tokens and non-empty rows over all ranks, and rows."""

    tokens: float
    seqs: float
    rows: int
    aggregation: str

    def weight(self, mask_part: torch.Tensor) -> float:
        """The share of a micro-batch (mask [rows, T]) in its mini-batch's aggregate."""
        return aggregation_weight(mask_part, self.tokens, self.seqs, self.aggregation, batch_total=self.rows)


@dataclass(frozen=True)
class UpdateSchedule:
    """Epochs x mini-batches x micro-batches over the ``rows`` rows this rank holds.

    Parameters
    ----------
    rows : int
        Rows on this rank.
    mini_batch_rows : int
        Rows per mini-batch on this rank (``rows`` = one mini-batch).
    micro_batch_rows : int
        Rows per forward/backward (``0``: the whole mini-batch).
    epochs : int
        Passes over the batch.
    aggregation : str
        Loss aggregation mode (:data:`polab.estimators.policy_loss.AGGREGATIONS`).
    dist : polab.scaled.distributed.DistInfo
    """

    rows: int
    mini_batch_rows: int
    micro_batch_rows: int
    epochs: int
    aggregation: str
    dist: D.DistInfo

    @property
    def num_minibatches(self) -> int:
        return -(-self.rows // self.mini_batch_rows)

    @property
    def num_updates(self) -> int:
        return self.epochs * self.num_minibatches

    @property
    def on_policy(self) -> bool:
        """One epoch, one mini-batch: the sampling policy is the one being differentiated (ratio identically 1)."""
        return self.num_updates == 1

    def minibatches(self):
        """Slices of the rows, mini-batch after mini-batch, epoch after epoch (in order, as verl's ``data.split``)."""
        for _ in range(self.epochs):
            for lo in range(0, self.rows, self.mini_batch_rows):
                yield slice(lo, min(lo + self.mini_batch_rows, self.rows))

    def microbatches(self, mini: slice):
        step = self.micro_batch_rows or (mini.stop - mini.start)
        for lo in range(mini.start, mini.stop, step):
            yield slice(lo, min(lo + step, mini.stop))

    def normalisers(self, mask: torch.Tensor, mini: slice) -> Normaliser:
        """All-reduced denominators of mini-batch ``mini`` of ``mask`` [rows, T] (a collective: every rank calls it)."""
        m = mask[mini]
        tokens, seqs = D.all_reduce_sum([float(m.sum()), float((m.sum(1) > 0).sum())], self.dist)
        return Normaliser(tokens=tokens, seqs=seqs, rows=(mini.stop - mini.start) * self.dist.world_size, aggregation=self.aggregation)
