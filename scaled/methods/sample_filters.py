"""Sample filters of the GRPO trainer (registry :data:`SAMPLE_FILTERS`, option ``sample_filter``).

Two hooks, both optional, around the advantage estimator:

- ``before_advantage(trainer, rollout) -> metrics``: may replace rows of the
  rollout (batch and rewards) or set ``rollout.keep`` (the rows that enter the
  advantage and the loss);
- ``after_advantage(trainer, rollout, token_adv, loss_mask) -> (token_adv, loss_mask, metrics)``:
  may replace whole groups (batch, advantages and loss mask together).

Filters that keep a replay buffer hold it per rank; ``state_dict`` returns it
and the trainer saves every rank's buffer in the checkpoint. Each filter calls
the core of :mod:`polab.estimators.sample_filters` unchanged:

- ``pf-ppo-best-worst`` / ``pf-ppo-best-random`` (PF-PPO,
  :func:`~polab.estimators.sample_filters.policy_filtration`): only each prompt's
  best and worst (or best and one random) response enter the advantage and the loss;
- ``ssb`` (Skywork R1V2's Selective Sample Buffer): groups whose advantages all
  vanish are replaced by buffered groups drawn with probability proportional
  to their mean |advantage|, and this step's informative groups are buffered;
- ``arpo`` (ARPO): an all-failed group gets one buffered success of the same
  prompt in place of one of its responses, then this step's successes are buffered.

Replayed samples are trained on as the current policy's (the loss's old
log-probabilities are recomputed, as verl recomputes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from polab.estimators.sample_filters import ARPOReplayBuffer, SelectiveSampleBuffer, policy_filtration

from ..rollout import RolloutBatch
from .registry import Method, Registry

__all__ = ["SAMPLE_FILTERS", "SampleFilter"]

#: Metrics every filter except ``none`` reports (summed over ranks).
FILTER_METRICS = ("filtered_rows", "replaced_rows", "buffer_size")


class SampleFilter(Method):
    """Base of the sample filters (see the module docstring for the hooks)."""

    metrics = FILTER_METRICS
    summed_metrics = FILTER_METRICS

    def before_advantage(self, trainer, rollout) -> dict:
        return {}

    def after_advantage(self, trainer, rollout, token_adv, loss_mask):
        return token_adv, loss_mask, {}


SAMPLE_FILTERS = Registry("sample filter", "sample_filter", SampleFilter)


@SAMPLE_FILTERS.register("none")
class NoFilter(SampleFilter):
    """Every sample enters the update."""

    metrics = ()


class _PFPPO(SampleFilter):
    strategy = ""

    def before_advantage(self, trainer, rollout) -> dict:
        gen = torch.Generator().manual_seed(trainer.seed_for(rollout.step, "pf_ppo"))
        keep = policy_filtration(rollout.rewards, rollout.group_ids, strategy=self.strategy, generator=gen).keep
        rollout.keep = keep
        return {"filtered_rows": float((~keep).sum())}


@SAMPLE_FILTERS.register("pf-ppo-best-worst")
class PFPPOBestWorst(_PFPPO):
    """PF-PPO: each prompt's best and worst response."""

    strategy = "best-worst"


@SAMPLE_FILTERS.register("pf-ppo-best-random")
class PFPPOBestRandom(_PFPPO):
    """PF-PPO: each prompt's best response and one random other."""

    strategy = "best-random"


def row_payloads(batch: RolloutBatch) -> list[dict]:
    """Each row's prompt ids (unpadded), response ids (up to its mask), text and truncation flag, on the CPU."""
    P = batch.prompt_length
    out = []
    for i in range(batch.input_ids.shape[0]):
        pm = batch.attention_mask[i, :P].bool()
        rm = batch.response_mask[i].bool()
        out.append(dict(prompt=batch.input_ids[i, :P][pm].cpu(), response=batch.input_ids[i, P:][rm].cpu(),
                        text=batch.texts[i], truncated=bool(batch.truncated[i])))
    return out


def assemble(rows: list[dict], pad_token_id: int, device) -> RolloutBatch:
    """A rollout batch from row payloads: prompts left-padded, responses right-padded (the sampler's layout)."""
    P = max(len(r["prompt"]) for r in rows)
    T = max(1, max(len(r["response"]) for r in rows))
    n = len(rows)
    ids = torch.full((n, P + T), pad_token_id, dtype=torch.long)
    att = torch.zeros((n, P + T), dtype=torch.long)
    for i, r in enumerate(rows):
        p, y = r["prompt"], r["response"]
        ids[i, P - len(p):P] = p
        att[i, P - len(p):P] = 1
        ids[i, P:P + len(y)] = y
        att[i, P:P + len(y)] = 1
    return RolloutBatch(input_ids=ids.to(device), attention_mask=att.to(device), response_mask=att[:, P:].to(device), prompt_length=P,
                        texts=[r["text"] for r in rows], truncated=torch.tensor([r["truncated"] for r in rows]))


class _Buffered(SampleFilter):
    buffer = None
    per_rank_state = True

    def state_dict(self) -> dict:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state)


@dataclass
class SSBOptions:
    capacity: int = field(default=64, metadata={"help": "groups held by the Selective Sample Buffer"})


@SAMPLE_FILTERS.register("ssb")
class SSBFilter(_Buffered):
    """Skywork R1V2's Selective Sample Buffer: vanishing-advantage groups swapped for buffered ones."""

    Options = SSBOptions
    legacy_options = {"ssb_capacity": "capacity"}

    def __init__(self, options=None):
        super().__init__(options)
        self.buffer = SelectiveSampleBuffer(capacity=self.options.capacity)

    @classmethod
    def validate(cls, o, config) -> list[str]:
        return [] if o.capacity >= 1 else [f"ssb.capacity (ssb_capacity) must be >= 1, got {o.capacity}"]

    def after_advantage(self, trainer, rollout, token_adv, loss_mask):
        G, batch = trainer.cfg.samples_per_prompt, rollout.batch
        n = token_adv.shape[0]
        rows = row_payloads(batch)
        for i, r in enumerate(rows):
            L = len(r["response"])
            r["token_adv"] = token_adv[i, :L].detach().cpu()
            r["loss_mask"] = loss_mask[i, :L].detach().cpu()
        groups = [rows[g * G:(g + 1) * G] for g in range(n // G)]
        weight = [float(sum((r["token_adv"].abs() * r["loss_mask"]).sum() for r in grp)) for grp in groups]
        ntok = [float(sum(r["loss_mask"].sum() for r in grp)) for grp in groups]
        vanishing = [g for g in range(len(groups)) if weight[g] == 0.0]
        gen = torch.Generator().manual_seed(trainer.seed_for(rollout.step, "ssb"))
        drawn = self.buffer.sample(len(vanishing), generator=gen)
        informative = [g for g in range(len(groups)) if weight[g] > 0.0]
        self.buffer.add([groups[g] for g in informative], [weight[g] / max(ntok[g], 1.0) for g in informative])
        extra = {"replaced_rows": float(len(drawn) * G), "buffer_size": float(len(self.buffer))}
        if not drawn:
            return token_adv, loss_mask, extra
        for g, grp in zip(vanishing, drawn):
            groups[g] = grp
        rows = [r for grp in groups for r in grp]
        rollout.replace_batch(assemble(rows, trainer.tokenizer.pad_token_id, trainer.device))
        T = rollout.batch.response_mask.shape[1]
        adv = torch.zeros((n, T), dtype=token_adv.dtype)
        lm = torch.zeros((n, T), dtype=loss_mask.dtype)
        for i, r in enumerate(rows):
            L = len(r["response"])
            adv[i, :L] = r["token_adv"]
            lm[i, :L] = r["loss_mask"]
        return adv.to(trainer.device), lm.to(trainer.device), extra


@dataclass
class ARPOOptions:
    capacity: int = field(default=8, metadata={"help": "successful trajectories kept per task"})
    success_threshold: float = field(default=0.1, metadata={"help": "reward above which a trajectory counts as a success"})


@SAMPLE_FILTERS.register("arpo")
class ARPOFilter(_Buffered):
    """ARPO: an all-failed group gets one buffered success of the same prompt."""

    Options = ARPOOptions
    legacy_options = {"arpo_capacity": "capacity", "arpo_success_threshold": "success_threshold"}

    def __init__(self, options=None):
        super().__init__(options)
        self.buffer = ARPOReplayBuffer(capacity_per_task=self.options.capacity, success_threshold=self.options.success_threshold)

    @classmethod
    def validate(cls, o, config) -> list[str]:
        return [] if o.capacity >= 1 else [f"arpo.capacity (arpo_capacity) must be >= 1, got {o.capacity}"]

    def before_advantage(self, trainer, rollout) -> dict:
        new_batch, new_rewards, extra = self.inject(trainer, rollout.step, rollout.batch, rollout.rewards, rollout.group_ids, rollout.prompts)
        if new_batch is not rollout.batch:
            rollout.replace_batch(new_batch)
        rollout.rewards = new_rewards
        return extra

    def inject(self, trainer, step, batch, rewards, group_ids, prompts):
        """Into each all-failed group put one buffered success of the same task; then buffer this step's successes."""
        G = trainer.cfg.samples_per_prompt
        keys = [prompts[i // G] for i in range(rewards.shape[0])]
        gen = torch.Generator().manual_seed(trainer.seed_for(step, "arpo"))
        plan = self.buffer.plan_injections(rewards, group_ids, keys, generator=gen)
        rows = row_payloads(batch)
        self.buffer.update(keys, rewards, rows)
        if plan:
            rewards = rewards.clone()
            for inj in plan:
                rows[inj.row] = inj.payload
                rewards[inj.row] = inj.reward
            batch = assemble(rows, trainer.tokenizer.pad_token_id, trainer.device)
        return batch, rewards, {"replaced_rows": float(len(plan)), "buffer_size": float(len(self.buffer))}
