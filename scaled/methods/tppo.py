r"""T-PPO (Truncated PPO) as a registered advantage estimator ``t-ppo`` of the GRPO trainer.

T-PPO (Fan et al. 2025) trains a policy and a critic on responses that may be
unfinished, so that long generations need not complete before an update:

- a response that has not produced EOS is *unfinished*: it receives **no task
  score** (T-PPO scores only finished responses) and its advantages come from
  the extended GAE of :func:`polab.estimators.gae.extended_gae` with the paper's
  last-value rule :math:`V(s_l) = V(s_{l-1})` (``truncation="last-value"``): the
  GAE sum is cut at the truncation point and no critic value is read at an extra
  position after the last generated token;
- a finished response gets its score on its last token and PPO's token GAE
  (terminal value 0);
- token filtering (:func:`polab.estimators.gae.truncated_ppo_token_masks`): the
  policy loss uses only the tokens generated in the current window (all
  response tokens for a full-length rollout), the value loss only the tokens of
  responses that have finished (their returns hold no bootstrap) - and, with
  windowed rollouts, only of those that finished in this window, so each
  finished response trains the critic once.

Why a method of its own rather than an option set of ``ppo-gae``: the score
rule (none for unfinished rows), the policy mask and the critic's token set all
differ from ``ppo-gae``'s, and ``ppo-gae`` keeps its own ``truncation``
(``terminal`` / ``bootstrap``) semantics for existing runs and configs. The
critic, its optimizer, KL-in-reward and checkpointing are inherited.

Combine with ``--rollout windowed`` (:mod:`polab.scaled.methods.rollout_strategies`)
for T-PPO's successive (windowed) generation; with the default full-length
rollout each response is generated to EOS or ``max_new_tokens`` and the
responses cut at ``max_new_tokens`` are the unfinished ones.

The rollout batch may carry ``window_start`` ([n] long: index of the first
response token generated in the current window) and ``trained`` ([n] bool:
rows that generated tokens in this window); without them (full-length
rollouts) every row starts at 0 and every row is new.

References
----------
Fan et al. (ByteDance Seed), "Truncated Proximal Policy Optimization", arXiv 2506.15050, 2025.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from polab.estimators.gae import extended_gae, kl_shaped_rewards, masked_whiten, truncated_ppo_token_masks

from ..rollout import token_logprobs
from .advantages import ADVANTAGES, AdvantageResult, PPOGAEAdvantage

__all__ = ["TPPOAdvantage", "TPPOOptions", "tppo_window_info"]


@dataclass
class TPPOOptions:
    gamma: float = field(default=1.0, metadata={"help": "discount (1.0 as TRL's PPOConfig; polab.estimators.gae.PPO_RECIPE_DEFAULTS)"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda (0.95 as TRL's PPOConfig)"})
    kl_in_reward: bool = field(default=True, metadata={"help": "kl_coef enters the token rewards (the RLHF PPO recipe), not the loss"})
    value_lr: float = field(default=1e-5, metadata={"help": "critic learning rate"})
    value_clip: float = field(default=0.2, metadata={"help": "clip range of the value loss"})


def tppo_window_info(batch, n: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(unfinished [n] bool, window_start [n] long, trained [n] bool)`` of a rollout batch (defaults for full-length rollouts)."""
    unfinished = batch.truncated.to(device=device, dtype=torch.bool)
    ws = getattr(batch, "window_start", None)
    ws = torch.zeros(n, dtype=torch.long, device=device) if ws is None else ws.to(device=device, dtype=torch.long)
    trained = getattr(batch, "trained", None)
    trained = torch.ones(n, dtype=torch.bool, device=device) if trained is None else trained.to(device=device, dtype=torch.bool)
    return unfinished, ws, trained


@ADVANTAGES.register("t-ppo", aliases=("tppo",))
class TPPOAdvantage(PPOGAEAdvantage):
    """T-PPO: extended GAE (last-value rule), no score for unfinished responses, critic trained on finished ones only."""

    Options = TPPOOptions
    metrics = ("value_loss", "value_clip_fraction", "value_mean", "unfinished_rate", "policy_token_fraction")
    legacy_options = {}
    #: trains on the current window's tokens only (``batch.window_start``): usable with ``--rollout-strategy windowed``
    handles_windows = True

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if not (0 <= o.gamma <= 1 and 0 <= o.gae_lambda <= 1):
            errs.append("t-ppo.gamma and t-ppo.gae_lambda must lie in [0, 1]")
        if not o.value_lr > 0 or not o.value_clip > 0:
            errs.append("t-ppo.value_lr and t-ppo.value_clip must be > 0")
        return errs

    @torch.no_grad()
    def compute(self, trainer, rollout) -> AdvantageResult:
        """Token rewards (score only on finished rows), critic values, EGAE, T-PPO's token masks; whitened over the policy tokens."""
        o, cfg, G = self.options, trainer.cfg, trainer.cfg.samples_per_prompt
        batch, resp_mask, dev = rollout.batch, rollout.response_mask, trainer.device
        n, T = resp_mask.shape
        unfinished, ws, trained = tppo_window_info(batch, n, dev)
        values = self.critic(batch.input_ids, batch.attention_mask, batch.prompt_length)[:, :T]
        # T-PPO: an unfinished response has no task score (whatever the task would say about its partial text)
        scores = torch.where(unfinished, torch.zeros((), device=dev), rollout.rewards.to(dev, torch.float32))
        if trainer.ref is not None and o.kl_in_reward and cfg.kl_coef > 0:
            logp = trainer.logprob_module(batch.input_ids, batch.attention_mask, batch.prompt_length, G, cfg.temperature)
            ref = token_logprobs(trainer.ref, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
            tok_r = kl_shaped_rewards(scores, logp, ref, resp_mask, kl_coef=cfg.kl_coef)
        else:
            tok_r = kl_shaped_rewards(scores, values, values, resp_mask, kl_coef=0.0)
        res = extended_gae(tok_r, values, resp_mask, unfinished, gamma=o.gamma, lambda_=o.gae_lambda, whiten="none", truncation="last-value")
        masks = truncated_ppo_token_masks(resp_mask, unfinished, ws)
        policy_mask = masks.policy_mask * trained.to(resp_mask.dtype)[:, None]
        value_mask = masks.value_mask * trained.to(resp_mask.dtype)[:, None]
        # verl whitening (Bessel-corrected), over the tokens the policy loss sees
        adv = masked_whiten(res.advantages, policy_mask, unbiased=True) if float(policy_mask.sum()) > 1 else res.advantages * policy_mask
        metrics = {"unfinished_rate": float(unfinished.float().mean()),
                   "policy_token_fraction": float(policy_mask.sum() / resp_mask.sum().clamp_min(1.0))}
        return AdvantageResult(token=adv, loss_mask=policy_mask, metrics=metrics,
                               loss_inputs=dict(token_rewards=tok_r, values=values, returns=res.returns, truncated=unfinished.cpu(),
                                                raw_advantages=res.advantages, policy_mask=policy_mask, value_mask=value_mask))

    def after_update(self, trainer, rollout, result: AdvantageResult, schedule) -> dict:
        """Clipped value-loss steps on the finished responses' tokens only (T-PPO's value filter), on the policy's schedule."""
        values, returns, vmask = (result.loss_inputs[k] for k in ("values", "returns", "value_mask"))
        loss_val = frac_num = 0.0
        if float(vmask.sum()) > 0:  # no finished response in this window: the critic does not step (not even weight decay)
            loss_val, frac_num = self.critic_steps(trainer, rollout, returns, values, vmask, schedule, skip_empty=True)
        rm = rollout.response_mask
        vm = float((values * rm).sum() / rm.sum().clamp_min(1.0))
        return {"value_loss": loss_val, "value_clip_fraction": frac_num / max(float(vmask.sum()), 1.0), "value_mean": vm}
