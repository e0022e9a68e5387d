r"""Advantage estimators of the GRPO trainer (registry :data:`ADVANTAGES`, option ``advantage``).

Compute call: ``estimator.compute(trainer, rollout) -> AdvantageResult``.
``rollout`` is a :class:`polab.scaled.trainers.pipeline.Rollout` (batch,
rewards, group ids, problems, the response mask and, after a sample filter,
the rows ``keep`` that enter the update); ``trainer`` gives the models
(``policy``, ``logprob_module``, ``ref``, ``tokenizer``), the task, the
configuration and per-step seeds (``trainer.seed_for(step, stream)``).
Optional hooks: ``setup(trainer)`` (after the models are loaded: build a
critic), ``loss_kl_coef(kl_coef)`` (the KL coefficient the policy loss uses),
``after_update(trainer, rollout, result, schedule) -> metrics`` (a critic's
update, on the trainer's epoch/mini-batch schedule).

Each estimator calls the verified core (:mod:`polab.estimators`) unchanged:

- ``grpo``, ``grpo-batch-std``, ``dr-grpo``, ``rloo``: group-relative
  estimators of :mod:`polab.estimators.advantages` (groups = prompts);
- ``spo-chain`` (SPO-chain, :mod:`polab.estimators.spo`): each response is split
  at low-probability cutpoints, the value of every segment start is estimated
  by ``mc_samples`` continuations sampled from it (the prompt's value is its
  group's mean reward), each segment gets its value gain, and the loss applies
  to cutpoint tokens only (probability mask);
- ``ppo-gae`` (PPO with GAE, the recipe of "Unpacking DPO and PPO";
  :mod:`polab.estimators.gae`): a critic (:class:`polab.scaled.models.ValueModel`)
  gives token values, the score sits on the last response token (minus the
  per-token KL penalty when ``kl_coef > 0`` and ``kl_in_reward``), GAE
  advantages are whitened as verl does, and the critic takes clipped
  value-loss steps on the trainer's schedule; with ``truncation="bootstrap"``
  responses cut at ``max_new_tokens`` keep their task score and are also
  bootstrapped with the critic's value at an extra position (polab's earlier
  reading of T-PPO, kept for old runs; it is *not* T-PPO: a truncated response
  then gets score + bootstrap. T-PPO as the paper describes it is the
  ``t-ppo`` method, :mod:`polab.scaled.methods.tppo`);
- ``pcpg`` (PCPG, :mod:`polab.estimators.reward_shaping`; tasks with a reference
  answer, ``task.reference(problem) -> str``): each response token's reward is
  the drop in character edit distance to the reference that the characters it
  adds to the decoded response cause (normalised by the reference length, so a
  response's rewards sum to 1 - CER exactly); the token advantages are the
  per-token weights of the core :func:`~polab.estimators.reward_shaping.pcpg_loss`
  read off by autograd: :math:`A_s = -N\,\partial L_{PCPG}/\partial\log\pi_s`
  with :math:`N` the token count, i.e. :math:`A_s = (T^\top\mathbf 1)_s(G_s - b)`
  for the banded Toeplitz matrix :math:`T` of the kernel. The baseline
  :math:`b_t` of token :math:`t` is the leave-one-out mean of :math:`G_t` over the
  other responses of its group that reach position :math:`t` (``baseline="loo"``;
  it does not depend on the response's own tokens, so the gradient stays
  unbiased; a response alone at a position gets advantage 0 there) or their
  plain group mean (``"group-mean"``). With ratio 1 the PPO loss has exactly the
  core PCPG loss's gradient under ``aggregation="token-mean"`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from polab.estimators.advantages import broadcast_to_tokens, group_advantages, rloo_advantages, sequence_advantages
from polab.estimators.gae import clipped_value_loss, extended_gae, kl_shaped_rewards, token_gae
from polab.estimators.reward_shaping import edit_distance_step_rewards, pcpg_kernel, pcpg_loss
from polab.estimators.spo import chain_segment_advantages, cutpoint_mask, cutpoint_segments, segment_starts

from ..rollout import continuation_texts, token_logprobs
from .registry import CriticState, Method, Registry, canonical_name

__all__ = ["ADVANTAGES", "AdvantageEstimator", "AdvantageResult", "GroupEstimator"]


@dataclass
class AdvantageResult:
    """What an advantage estimator returns.

    Attributes
    ----------
    token : Tensor [n, T]
        Per-token advantages (on the trainer's device).
    sequence : Tensor [n], optional
        Per-response advantages for the curriculum; default: the token mean
        (:func:`polab.estimators.advantages.sequence_advantages`).
    loss_mask : Tensor [n, T], optional
        A factor on the loss mask (SPO's cutpoint tokens); default all ones.
    metrics : dict
        Values of the estimator's declared ``metrics`` (this rank's; averaged over ranks).
    loss_inputs : dict
        Tensors tests read back (``StepResult.loss_inputs``).
    """

    token: torch.Tensor
    sequence: torch.Tensor | None = None
    loss_mask: torch.Tensor | None = None
    metrics: dict = field(default_factory=dict)
    loss_inputs: dict = field(default_factory=dict)


class AdvantageEstimator(Method):
    """Base of the advantage estimators (see the module docstring for the hooks)."""

    def setup(self, trainer) -> None:
        return None

    def compute(self, trainer, rollout) -> AdvantageResult:
        raise NotImplementedError

    def loss_kl_coef(self, kl_coef: float) -> float:
        return kl_coef

    def after_update(self, trainer, rollout, result: AdvantageResult, schedule) -> dict:
        return {}


ADVANTAGES = Registry("advantage estimator", "advantage", AdvantageEstimator)


class GroupEstimator(AdvantageEstimator):
    """Group-relative sequence advantages (groups = prompts), broadcast to the response tokens.

    With a sample filter that keeps only some rows, the advantages are computed
    among the kept rows (PF-PPO) and are zero elsewhere.
    """

    def sequence_advantages(self, trainer, rewards, group_ids):
        raise NotImplementedError

    def compute(self, trainer, rollout) -> AdvantageResult:
        keep = rollout.keep
        if keep is None:
            seq = self.sequence_advantages(trainer, rollout.rewards, rollout.group_ids).advantages
        else:
            kept = self.sequence_advantages(trainer, rollout.rewards[keep], rollout.group_ids[keep])
            seq = torch.zeros_like(rollout.rewards)
            seq[keep] = kept.advantages.to(seq.dtype)
        return AdvantageResult(token=broadcast_to_tokens(seq.to(trainer.device), rollout.response_mask), sequence=seq)


@ADVANTAGES.register("grpo")
class GRPOAdvantage(GroupEstimator):
    """GRPO: (r - group mean) / group std (``std_convention`` picks the framework's std)."""

    def sequence_advantages(self, trainer, rewards, group_ids):
        return group_advantages(rewards, group_ids, scale="group", convention=trainer.cfg.std_convention)


@ADVANTAGES.register("grpo-batch-std")
class GRPOBatchStdAdvantage(GroupEstimator):
    """GRPO centred per group, scaled by the batch std."""

    def sequence_advantages(self, trainer, rewards, group_ids):
        return group_advantages(rewards, group_ids, scale="batch", convention=trainer.cfg.std_convention)


@ADVANTAGES.register("dr-grpo")
class DrGRPOAdvantage(GroupEstimator):
    """Dr.GRPO: group-mean-centred rewards, no std scaling."""

    def sequence_advantages(self, trainer, rewards, group_ids):
        return group_advantages(rewards, group_ids, scale="none")


@ADVANTAGES.register("rloo")
class RLOOAdvantage(GroupEstimator):
    """REINFORCE leave-one-out."""

    def sequence_advantages(self, trainer, rewards, group_ids):
        return rloo_advantages(rewards, group_ids)


# -- SPO-chain -------------------------------------------------------------------------------


@dataclass
class SPOChainOptions:
    threshold: float = field(default=0.9, metadata={"help": "cutpoint: a token whose sampling probability is below this"})
    cutpoints_per_segment: int = field(default=2, metadata={"help": "the paper's interval: cutpoints per segment"})
    mc_samples: int = field(default=2, metadata={"help": "continuations per segment start for its Monte Carlo value"})
    probability_mask: bool = field(default=True, metadata={"help": "policy loss on cutpoint tokens only"})
    placement: str = field(default="before", metadata={"help": "segment boundaries just before cutpoints (the authors' code) or after (polab's earlier form)",
                                                       "choices": ("before", "after")})


@ADVANTAGES.register("spo-chain")
class SPOChainAdvantage(AdvantageEstimator):
    """SPO-chain: cutpoint segments, Monte Carlo values at segment starts, probability-mask loss."""

    Options = SPOChainOptions
    metrics = ("spo_segments", "spo_cutpoint_fraction")
    legacy_options = {"spo_threshold": "threshold", "spo_cutpoints_per_segment": "cutpoints_per_segment",
                      "spo_mc_samples": "mc_samples", "spo_probability_mask": "probability_mask"}

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if not 0 < o.threshold <= 1:
            errs.append(f"spo-chain.threshold must lie in (0, 1], got {o.threshold}")
        if o.cutpoints_per_segment < 1 or o.mc_samples < 1:
            errs.append("spo-chain.cutpoints_per_segment and spo-chain.mc_samples must be >= 1")
        return errs

    def compute(self, trainer, rollout) -> AdvantageResult:
        o, cfg, G = self.options, trainer.cfg, trainer.cfg.samples_per_prompt
        batch, rewards, group_ids = rollout.batch, rollout.rewards, rollout.group_ids
        with torch.no_grad():  # probabilities under the sampling policy (the current one, before the update)
            lp = trainer.logprob_module(batch.input_ids, batch.attention_mask, batch.prompt_length, G, cfg.temperature)
        lp = lp.detach().double().cpu()
        m = rollout.response_mask.detach().double().cpu()
        seg = cutpoint_segments(lp, m, threshold=o.threshold, cutpoints_per_segment=o.cutpoints_per_segment, placement=o.placement)
        starts = segment_starts(seg)
        n = rewards.shape[0]
        K = max(1, max(len(s) for s in starts))
        values = torch.full((n, K), float("nan"), dtype=torch.float64)
        r64 = rewards.double()
        for g in torch.unique(group_ids).tolist():  # V(s_0): the Monte Carlo value of the prompt = its group's mean reward
            sel = group_ids == g
            values[sel, 0] = r64[sel].mean()
        jobs = [(i, k, t) for i, st in enumerate(starts) for k, t in enumerate(st) if k > 0]
        if jobs:
            est = self._mc_values(trainer, rollout, jobs)
            for (i, k, _), v in zip(jobs, est):
                values[i, k] = v
        token = chain_segment_advantages(seg, values, r64).to(torch.float32)
        cut = cutpoint_mask(lp, m, threshold=o.threshold).to(torch.float32) if o.probability_mask else torch.ones_like(token)
        dev = trainer.device
        metrics = {"spo_segments": float(np.mean([len(s) for s in starts])) if starts else 0.0,
                   "spo_cutpoint_fraction": float(cut.mul(m.float()).sum() / m.sum().clamp_min(1.0))}
        return AdvantageResult(token=token.to(dev), loss_mask=cut.to(dev), metrics=metrics)

    @torch.no_grad()
    def _mc_values(self, trainer, rollout, jobs) -> list[float]:
        """Mean task reward of ``mc_samples`` continuations sampled from each (row, segment start) prefix.

        Continuations come from transformers' ``generate`` (global RNG seeded from (seed, step, rank));
        each is cut to the response budget left after its prefix, which samples exactly as a shorter budget would.
        """
        cfg, G = trainer.cfg, trainer.cfg.samples_per_prompt
        torch.manual_seed(trainer.seed_for(rollout.step, "spo"))
        texts = continuation_texts(trainer.policy, trainer.tokenizer, rollout.batch, [(i, t) for i, _, t in jobs],
                                   num_samples=self.options.mc_samples, max_new_tokens=cfg.max_new_tokens,
                                   temperature=cfg.temperature, top_p=cfg.top_p)
        problems = [rollout.problems[i // G] for i, _, _ in jobs]
        return [sum(trainer.reward_of(x, problems[j]) for x in row) / len(row) for j, row in enumerate(texts)]


# -- PPO with GAE ----------------------------------------------------------------------------


@dataclass
class PPOGAEOptions:
    gamma: float = field(default=1.0, metadata={"help": "discount (1.0 as TRL's PPOConfig; polab.estimators.gae.PPO_RECIPE_DEFAULTS)"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda (0.95 as TRL's PPOConfig)"})
    truncation: str = field(default="terminal", metadata={"help": "responses cut at max_new_tokens: terminal (PPO) or bootstrap (score + critic value at an extra position; polab's earlier reading, not T-PPO: use --advantage t-ppo)",
                                                          "choices": ("terminal", "bootstrap")})
    kl_in_reward: bool = field(default=True, metadata={"help": "kl_coef enters the token rewards (the RLHF PPO recipe), not the loss"})
    value_lr: float = field(default=1e-5, metadata={"help": "critic learning rate"})
    value_clip: float = field(default=0.2, metadata={"help": "clip range of the value loss"})


@ADVANTAGES.register("ppo-gae")
class PPOGAEAdvantage(CriticState, AdvantageEstimator):
    """PPO with a critic and token-level GAE (verl whitening); optional bootstrap of truncated responses (not T-PPO; see ``t-ppo``)."""

    Options = PPOGAEOptions
    metrics = ("value_loss", "value_clip_fraction", "value_mean")
    summed_metrics = ("value_loss",)  # each rank's value is already weighted by its share of the batch
    legacy_options = {"gae_gamma": "gamma", "gae_lambda": "gae_lambda", "gae_truncation": "truncation",
                      "gae_kl_in_reward": "kl_in_reward", "value_lr": "value_lr", "value_clip": "value_clip"}

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if not (0 <= o.gamma <= 1 and 0 <= o.gae_lambda <= 1):
            errs.append("ppo-gae.gamma and ppo-gae.gae_lambda must lie in [0, 1]")
        if o.truncation not in ("terminal", "bootstrap"):
            errs.append(f"ppo-gae.truncation must be 'terminal' or 'bootstrap', got {o.truncation!r}")
        if not o.value_lr > 0 or not o.value_clip > 0:
            errs.append("ppo-gae.value_lr and ppo-gae.value_clip must be > 0")
        return errs

    def setup(self, trainer) -> None:
        from ..models import ValueModel

        self.critic = ValueModel(trainer.policy).to(trainer.device)
        # the copied output projection takes no part in the value (unless tied to the embedding)
        # (under --parallel fsdp the trainer shards the critic at its first step instead)
        self.critic_model = self.critic if getattr(trainer, "fsdp", False) else trainer.wrap_ddp(self.critic, find_unused_parameters=True)
        self.optimizer = torch.optim.AdamW(self.critic.parameters(), lr=self.options.value_lr, weight_decay=trainer.cfg.weight_decay)

    def loss_kl_coef(self, kl_coef: float) -> float:
        return 0.0 if self.options.kl_in_reward else kl_coef

    @torch.no_grad()
    def compute(self, trainer, rollout) -> AdvantageResult:
        """Token rewards (score on the last token, minus the KL penalty if asked), critic values, GAE (verl whitening)."""
        o, cfg, G = self.options, trainer.cfg, trainer.cfg.samples_per_prompt
        batch, resp_mask, dev = rollout.batch, rollout.response_mask, trainer.device
        v_all = self.critic(batch.input_ids, batch.attention_mask, batch.prompt_length)
        T = resp_mask.shape[1]
        values = v_all[:, :T]
        scores = rollout.rewards.to(dev, torch.float32)
        if trainer.ref is not None and o.kl_in_reward and cfg.kl_coef > 0:
            logp = trainer.logprob_module(batch.input_ids, batch.attention_mask, batch.prompt_length, G, cfg.temperature)
            ref = token_logprobs(trainer.ref, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
            tok_r = kl_shaped_rewards(scores, logp, ref, resp_mask, kl_coef=cfg.kl_coef)
        else:
            tok_r = kl_shaped_rewards(scores, values, values, resp_mask, kl_coef=0.0)
        if o.truncation == "bootstrap":
            lengths = resp_mask.sum(1).long()  # value after the last generated token of each row: column (length) of v_all
            boot = v_all[torch.arange(v_all.shape[0], device=dev), lengths]
            res = extended_gae(tok_r, values, resp_mask, batch.truncated.to(dev), boot, gamma=o.gamma, lambda_=o.gae_lambda, whiten="verl")
        else:
            res = token_gae(tok_r, values, resp_mask, gamma=o.gamma, lambda_=o.gae_lambda, whiten="verl")
        return AdvantageResult(token=res.advantages, loss_inputs=dict(token_rewards=tok_r, values=values, returns=res.returns,
                                                                       truncated=batch.truncated))

    def after_update(self, trainer, rollout, result: AdvantageResult, schedule) -> dict:
        """Clipped value-loss steps (:func:`polab.estimators.gae.clipped_value_loss`) on the policy's epoch/mini-batch schedule."""
        values, resp_mask = result.loss_inputs["values"], rollout.response_mask
        loss_val, frac_num = self.critic_steps(trainer, rollout, result.loss_inputs["returns"], values, resp_mask, schedule)
        vm = float((values * resp_mask).sum() / resp_mask.sum().clamp_min(1.0))
        return {"value_loss": loss_val, "value_clip_fraction": frac_num / max(float(resp_mask.sum()), 1.0), "value_mean": vm}

    def critic_steps(self, trainer, rollout, returns, values, value_mask, schedule, *, skip_empty: bool = False) -> tuple[float, float]:
        """One clipped value-loss optimizer step per mini-batch of ``schedule`` on the tokens of ``value_mask``.

        Micro-batches accumulate with the schedule's weights (so the update equals the full mini-batch's); with
        ``skip_empty`` a mini-batch without value tokens takes no step (not even weight decay). Returns the
        schedule-averaged value loss and the token-weighted clip-fraction numerator.
        """
        cfg, o, batch = trainer.cfg, self.options, rollout.batch
        T = value_mask.shape[1]
        loss_val = frac_num = 0.0
        for mini in schedule.minibatches():
            norm = schedule.normalisers(value_mask, mini)
            if skip_empty and norm.tokens <= 0:
                continue
            self.optimizer.zero_grad(set_to_none=True)
            for sl in schedule.microbatches(mini):
                m = value_mask[sl]
                vp = self.critic_model(batch.input_ids[sl], batch.attention_mask[sl], batch.prompt_length)[:, :T]
                res = clipped_value_loss(vp, values[sl], returns[sl], m, clip_range=o.value_clip, aggregation=cfg.aggregation,
                                         max_length=cfg.max_new_tokens)
                w = norm.weight(m)
                (res.loss * (w * trainer.dist.world_size)).backward()
                loss_val += float(res.loss.detach()) * w / schedule.num_updates
                frac_num += res.clip_fraction * float(m.sum()) / schedule.epochs
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
        return loss_val, frac_num


# -- PCPG ------------------------------------------------------------------------------------


@dataclass
class PCPGOptions:
    kernel_size: int = field(default=3, metadata={"help": "odd width of the pseudo-convolution kernel (the paper's is unconfirmed)"})
    kernel: str = field(default="uniform", metadata={"help": "kernel weights (sum to 1); gaussian has std size/4", "choices": ("uniform", "gaussian")})
    gamma: float = field(default=1.0, metadata={"help": "discount of the convolved step rewards"})
    baseline: str = field(default="loo", metadata={"help": "per-position baseline of the returns: group leave-one-out, group mean, none",
                                                   "choices": ("loo", "group-mean", "none")})


@ADVANTAGES.register("pcpg")
class PCPGAdvantage(AdvantageEstimator):
    """PCPG: pseudo-convolved edit-distance step rewards (tasks with a reference answer)."""

    Options = PCPGOptions
    metrics = ("pcpg_one_minus_cer",)
    legacy_options = {"pcpg_kernel_size": "kernel_size", "pcpg_kernel": "kernel", "pcpg_gamma": "gamma", "pcpg_baseline": "baseline"}

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if o.kernel_size < 1 or o.kernel_size % 2 == 0:
            errs.append(f"pcpg_kernel_size must be a positive odd integer (a centred window), got {o.kernel_size}")
        if o.kernel not in ("uniform", "gaussian"):
            errs.append(f"pcpg.kernel must be 'uniform' or 'gaussian', got {o.kernel!r}")
        if not 0 <= o.gamma <= 1:
            errs.append("pcpg.gamma must lie in [0, 1]")
        if canonical_name(o.baseline) not in ("loo", "group-mean", "none"):
            errs.append(f"pcpg.baseline must be one of ('loo', 'group-mean', 'none'), got {o.baseline!r}")
        if getattr(config, "task", None) == "kk":
            errs.append("advantage='pcpg' needs a task with a reference answer string: use task='arithmetic' (kk has none)")
        return errs

    def setup(self, trainer) -> None:
        if not callable(getattr(trainer.task, "reference", None)):
            raise ValueError("advantage='pcpg' needs a task with a reference answer: task.reference(problem) -> str "
                             "(polab.scaled.tasks.arithmetic.ArithmeticTask has one); choose another advantage for this task.")

    def compute(self, trainer, rollout) -> AdvantageResult:
        """Edit-distance step rewards per response token, then token advantages from the core PCPG loss (float64, CPU)."""
        o, G = self.options, trainer.cfg.samples_per_prompt
        batch, tok = rollout.batch, trainer.tokenizer
        m = rollout.response_mask.detach().double().cpu()
        n, T = m.shape
        P = batch.prompt_length
        step_r = torch.zeros((n, T), dtype=torch.float64)
        texts, refs = [], []
        for i in range(n):
            L = int(m[i].sum())
            toks = batch.input_ids[i, P:P + L].tolist()
            text = tok.decode(toks, skip_special_tokens=True)
            texts.append(text)
            refs.append(trainer.task.reference(rollout.problems[i // G]))
            char_r = edit_distance_step_rewards(list(text), list(refs[-1]), normalise=True)
            # token t owns the characters it appends to the decoded prefix; all characters are assigned once, so a row
            # sums to 1 - CER whatever the tokenizer does (a prefix that decodes inconsistently passes its characters on)
            start = 0
            for t in range(L):
                end = len(text) if t == L - 1 else max(start, min(len(tok.decode(toks[:t + 1], skip_special_tokens=True)), len(text)))
                step_r[i, t] = char_r[start:end].sum()
                start = end
        kernel = pcpg_kernel(o.kernel_size, kind=o.kernel)
        g_ids = rollout.group_ids.cpu()
        baseline = None
        if canonical_name(o.baseline) != "none":
            # per position t, the group's (leave-one-out) mean of G_t over the responses that reach t
            ret = pcpg_loss(torch.zeros_like(step_r), step_r, m, kernel=kernel, gamma=o.gamma).returns
            baseline = torch.zeros_like(ret)
            for t in range(T):
                sel = m[:, t] > 0
                if not bool(sel.any()):
                    continue
                col = ret[sel, t]
                loo = canonical_name(o.baseline) == "loo"
                centred = rloo_advantages(col, g_ids[sel]) if loo else group_advantages(col, g_ids[sel], scale="none")
                baseline[sel, t] = col - centred.advantages.to(col.dtype)
        lp = torch.zeros_like(step_r, requires_grad=True)
        res = pcpg_loss(lp, step_r, m, kernel=kernel, gamma=o.gamma, baseline=baseline, aggregation="token-mean")
        (grad,) = torch.autograd.grad(res.loss, lp)
        adv = -grad * m.sum().clamp_min(1.0) * m
        return AdvantageResult(token=adv.to(trainer.device, torch.float32),
                               metrics={"pcpg_one_minus_cer": float(step_r.sum(1).mean())},
                               loss_inputs=dict(pcpg_step_rewards=step_r, pcpg_baseline=baseline, pcpg_kernel=kernel,
                                                pcpg_texts=texts, pcpg_references=refs))


def sequence_of(result: AdvantageResult, response_mask: torch.Tensor) -> torch.Tensor:
    """The per-response advantage the curriculum sees: ``result.sequence`` or the token mean."""
    if result.sequence is not None:
        return result.sequence
    return sequence_advantages(result.token, response_mask)
