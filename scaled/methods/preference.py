r"""Preference losses (registry :data:`PREFERENCE_LOSSES`, option ``scheme``) and pair labellers (:data:`PAIR_LABELLERS`, ``pair_labels``).

**Preference losses.** ``source`` (``"policy"`` for on-policy samples, ``"reference"``
for offline ones) says who samples the training responses; the compute call
``loss.compute(trainer, sample) -> PreferenceStep`` returns the loss to
backpropagate into the policy (``None``: nothing to learn from this batch) and
the step's metrics (``margin``, ``pair_accuracy``, ``num_pairs`` and the
method's own). Every scheme of :data:`polab.estimators.preference_losses.PREFERENCE_SCHEMES`
is registered under its name and calls :func:`~polab.estimators.preference_losses.scheme_loss`
unchanged: DPO / conservative DPO / IPO on within-prompt pairs, best-of-N with
or without a negative gradient, CoPG (all within-prompt pairs), OPA-DPO (DPO
pairs plus the anchor; "offline" samples come from the reference, which is
what OPA-DPO means by data on-policy w.r.t. the reference) and GEPO. The
options shared by these schemes (``beta``, ``label_smoothing``, ...) are trainer
options; CoPG, OPA-DPO and GEPO have their own (``--on-policy-gepo.consistency-coef``).

``offline-direct-advantage-po`` (Direct Advantage Policy Optimization, the
step-level offline method, :mod:`polab.estimators.direct_advantage_po`; not Yu et
al.'s DAPO): responses drawn from the reference are split into steps of
``step_tokens`` tokens (fixed chunks); a separate critic
(:class:`polab.scaled.models.ValueModel`, a copy of the reference with a
zero-initialised scalar head) is regressed by
:func:`~polab.estimators.direct_advantage_po.critic_loss` onto Monte-Carlo targets
(:func:`~polab.estimators.direct_advantage_po.mc_value_targets`: for the prompt
state, the rewards of its group's samples; for a later step boundary,
``mc_samples`` reference continuations from it); then, with the updated
critic frozen, :func:`~polab.estimators.direct_advantage_po.step_advantages` (final
state valued by the response's own reward) feed
:func:`~polab.estimators.direct_advantage_po.direct_advantage_po_loss` on the step
log-probabilities under the policy and the reference. Critic and actor are
trained independently. With ``center_states`` the residuals are centred within
identical states. Departures from the paper: its two stages run one after the
other over a fixed dataset, here each step takes one critic step and then one
actor step on fresh reference draws (distributed as a reference dataset
consumed once); and a task reward in (0, 1] stands in for the binary
correctness that the Monte-Carlo targets average.

**Pair labellers** decide the winner of each within-prompt pair:
``reward`` (the task's reward) or ``ai-feedback`` (self-reference AI feedback,
:mod:`polab.estimators.reward_shaping`): the frozen **reference** judges every
within-prompt pair (A, B) in both orders under one general principle; in each
order its per-token log-likelihoods of two paraphrases of "the first answer is
better" and of "the second answer is better" give their semantic perplexities
(:func:`~polab.estimators.reward_shaping.semantic_perplexity`, paraphrases pooled),
the probability that the first-listed answer is better is
:math:`p = \mathrm{PPL}_2/(\mathrm{PPL}_1 + \mathrm{PPL}_2)` (our reconstruction), the
orders are combined by :func:`~polab.estimators.reward_shaping.order_swap_debias`
and the strength by :func:`~polab.estimators.reward_shaping.preference_strength`.
The judged winner and loser of each pair form a two-response group with
rewards :math:`(P(\text{win}), 1 - P(\text{win}))`, which any pairwise scheme's
core loss consumes unchanged (ties and pairs with :math:`|s|` below
``min_strength`` are dropped); ``judge_reward_agreement`` logs how often the
judge agrees with the task reward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from polab.estimators.direct_advantage_po import critic_loss, direct_advantage_po_loss, mc_value_targets, step_advantages
from polab.estimators.preference_losses import PREFERENCE_SCHEMES, scheme_loss, sequence_logprobs
from polab.estimators.reward_shaping import order_swap_debias, preference_strength, semantic_perplexity

from ..rollout import PrefixSharedLogprobs, continuation_texts, encode_prompts, token_logprobs
from .registry import CriticState, Method, Registry

__all__ = ["JUDGE_PRINCIPLE", "JUDGE_VERDICTS", "PAIR_LABELLERS", "PREFERENCE_LOSSES", "PairLabeller", "PreferenceLossMethod", "PreferenceStep"]

#: The judge's one general principle (self-reference AI feedback).
JUDGE_PRINCIPLE = "A better answer follows the user's instruction more closely."
#: Paraphrases of the two verdicts, "first-listed answer better" and "second-listed answer better" (semantic perplexity pools them).
JUDGE_VERDICTS = (("Answer A is better.", "The better answer is A."), ("Answer B is better.", "The better answer is B."))


@dataclass
class PreferenceStep:
    """What a preference loss returns: the policy loss (None: skip the update), metrics, tensors for tests."""

    loss: torch.Tensor | None
    metrics: dict = field(default_factory=dict)
    loss_inputs: dict = field(default_factory=dict)


class PreferenceLossMethod(Method):
    """Base of the preference losses: ``source``, ``pairwise`` and ``compute(trainer, sample) -> PreferenceStep``."""

    source = "policy"
    pairwise = True

    @property
    def on_policy(self) -> bool:
        return self.source == "policy"

    def setup(self, trainer) -> None:
        return None

    def compute(self, trainer, sample) -> PreferenceStep:
        raise NotImplementedError


PREFERENCE_LOSSES = Registry("preference loss", "scheme", PreferenceLossMethod)


class PairLabeller(Method):
    """Base of the pair labellers: ``label(trainer, sample, logp, ref_logp) -> (logp, ref_logp, rewards, group_ids, metrics, extra)``.

    ``judges_samples``: the labeller ranks the sampled within-prompt pairs itself (so it needs a pairwise scheme on sampled
    responses, not preference data whose labels are given).
    """

    judges_samples = False

    def label(self, trainer, sample, logp, ref_logp):
        raise NotImplementedError


PAIR_LABELLERS = Registry("pair labeller", "pair_labels", PairLabeller)


# -- the core schemes -------------------------------------------------------------------------


@dataclass
class CoPGOptions:
    scale: float = field(default=1.0, metadata={"help": "CoPG: constant in front of the squared difference"})


@dataclass
class OPADPOOptions:
    anchor: str = field(default="sigmoid", metadata={"help": "anchor on the chosen implicit reward (mDPO sigmoid, squared, none)",
                                                     "choices": ("sigmoid", "squared", "none")})
    anchor_value: float = field(default=0.0, metadata={"help": "anchor target"})
    anchor_coef: float = field(default=1.0, metadata={"help": "anchor weight (the authors' run/train_opa_dpo.sh: 1)"})


@dataclass
class GEPOOptions:
    consistency_coef: float = field(default=1.0, metadata={"help": "lambda on the variance of the equivalent group (1 in the paper)"})
    margin: float = field(default=0.0, metadata={"help": "gamma margin (0 in the paper)"})
    threshold: float | None = field(default=None, metadata={"help": "reward at which a response counts as equivalent (default: above its prompt's mean)"})
    variance: str = field(default="log-ratio", metadata={"help": "variance of the winners' log-ratios (the paper) or of their implicit rewards (polab's earlier form)",
                                                         "choices": ("log-ratio", "implicit-reward")})


#: scheme_loss keyword of each option, by core loss family
_OPTIONS = {
    "copg": (CoPGOptions, {"scale": "copg_scale"}),
    "opa_dpo": (OPADPOOptions, {"anchor": "opa_anchor", "anchor_value": "opa_anchor_value", "anchor_coef": "opa_anchor_coef"}),
    "gepo": (GEPOOptions, {"consistency_coef": "gepo_consistency_coef", "margin": "gepo_margin", "threshold": "gepo_threshold",
                           "variance": "gepo_variance"}),
}


class CoreSchemeLoss(PreferenceLossMethod):
    """A scheme of :data:`polab.estimators.preference_losses.PREFERENCE_SCHEMES` through ``scheme_loss``."""

    scheme = None
    loss_kwargs_of: dict = {}

    @classmethod
    def validate(cls, o, config) -> list[str]:
        if isinstance(o, OPADPOOptions) and o.anchor not in ("sigmoid", "squared", "none"):
            return [f"{cls.name}.anchor (opa_anchor) must be 'sigmoid', 'squared' or 'none', got {o.anchor!r}"]
        if isinstance(o, CoPGOptions) and not o.scale > 0:
            return [f"{cls.name}.scale (copg_scale) must be > 0, got {o.scale}"]
        if isinstance(o, OPADPOOptions) and o.anchor_coef < 0:
            return [f"{cls.name}.anchor_coef must be >= 0, got {o.anchor_coef}"]
        if isinstance(o, GEPOOptions) and o.consistency_coef < 0:
            return [f"{cls.name}.consistency_coef must be >= 0, got {o.consistency_coef}"]
        return []

    def method_loss_kwargs(self) -> dict:
        """The ``scheme_loss`` keywords of this scheme's own options (CoPG, OPA-DPO, GEPO)."""
        if self.options is None:
            return {}
        kw = {self.loss_kwargs_of[k]: getattr(self.options, k) for k in self.loss_kwargs_of}
        if kw.get("opa_anchor") == "none":
            kw["opa_anchor"] = None
        return kw

    def compute(self, trainer, sample) -> PreferenceStep:
        cfg, batch, dev = trainer.cfg, sample.batch, trainer.device
        mask = batch.response_mask.to(torch.float32).to(dev)
        tok = token_logprobs(trainer.policy, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
        logp = sequence_logprobs(tok, mask, average=cfg.average_logprobs)
        with torch.no_grad():
            ref_tok = token_logprobs(trainer.ref, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
            ref_logp = sequence_logprobs(ref_tok, mask, average=cfg.average_logprobs)
        logp, ref_logp, rewards, groups, metrics, extra = trainer.pair_labeller.label(trainer, sample, logp, ref_logp)
        res = None
        if groups.numel() > 0:
            res = scheme_loss(self.scheme, logp, ref_logp, rewards, groups, beta=cfg.beta, label_smoothing=cfg.label_smoothing,
                              target_margin=cfg.ipo_target_margin, negative_coef=cfg.negative_coef, pairing=cfg.pairing,
                              **self.method_loss_kwargs())
        pref = res is not None and hasattr(res, "margin")  # pairwise / group results (not best-of-N)
        metrics.update(loss=float(res.loss.detach()) if res is not None else math.nan,
                       margin=float(res.margin.detach().mean()) if pref else math.nan,
                       pair_accuracy=float(res.accuracy) if pref else math.nan,
                       num_pairs=float(res.per_pair.numel()) if pref else 0.0)
        loss_inputs = dict(logp=logp.detach(), ref_logp=ref_logp, rewards=rewards, group_ids=groups, loss=None if res is None else res.loss.detach(),
                           **extra)
        return PreferenceStep(loss=None if res is None else res.loss, metrics=metrics, loss_inputs=loss_inputs)


def _register_core_schemes() -> None:
    for name, scheme in PREFERENCE_SCHEMES.items():
        opts, kw = _OPTIONS.get(scheme.loss, (None, {}))
        prefix = {"copg": "copg_", "opa_dpo": "opa_", "gepo": "gepo_"}.get(scheme.loss, "")
        attrs = dict(scheme=scheme, source=scheme.source, Options=opts, loss_kwargs_of=kw,
                     legacy_options={prefix + k: k for k in (kw if opts else {})},
                     __doc__=f"{scheme.loss} loss on {'policy' if scheme.source == 'policy' else 'reference'} samples"
                             + (f" (negative gradient: {scheme.negative_gradient})" if scheme.negative_gradient != "none" else ""))
        PREFERENCE_LOSSES.register(name)(type(f"Scheme_{name.replace('-', '_')}", (CoreSchemeLoss,), attrs))


_register_core_schemes()


# -- Direct Advantage Policy Optimization ---------------------------------------------------


@dataclass
class DirectAdvantagePOOptions:
    step_tokens: int = field(default=4, metadata={"help": "tokens per step (fixed chunks)"})
    mc_samples: int = field(default=2, metadata={"help": "reference continuations per step boundary for the critic's Monte-Carlo target"})
    critic_loss: str = field(default="mse", metadata={"help": "mse on values, or bce on logits (value = sigmoid)", "choices": ("mse", "bce")})
    value_lr: float = field(default=1e-5, metadata={"help": "critic learning rate"})
    center_states: bool = field(default=False, metadata={"help": "centre residuals within identical states"})


@PREFERENCE_LOSSES.register("offline-direct-advantage-po")
class DirectAdvantagePO(CriticState, PreferenceLossMethod):
    """Direct Advantage Policy Optimization: a Monte-Carlo critic step, then the step-level actor loss (reference samples)."""

    source = "reference"
    pairwise = False
    Options = DirectAdvantagePOOptions
    metrics = ("value_loss", "value_mean", "advantage_abs_mean", "num_steps")
    legacy_options = {"dapo_step_tokens": "step_tokens", "dapo_mc_samples": "mc_samples", "dapo_critic_loss": "critic_loss",
                      "dapo_value_lr": "value_lr", "dapo_center_states": "center_states"}

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if o.step_tokens < 1 or o.mc_samples < 1:
            errs.append("offline-direct-advantage-po.step_tokens and .mc_samples (dapo_step_tokens, dapo_mc_samples) must be >= 1")
        if o.critic_loss not in ("mse", "bce"):
            errs.append(f"offline-direct-advantage-po.critic_loss (dapo_critic_loss) must be 'mse' or 'bce', got {o.critic_loss!r}")
        if not o.value_lr > 0:
            errs.append(f"offline-direct-advantage-po.value_lr must be > 0, got {o.value_lr}")
        return errs

    def setup(self, trainer) -> None:
        from ..models import ValueModel

        self.critic = ValueModel(trainer.ref).to(trainer.device)  # a copy of the reference, trainable, head at zero
        self.critic.lm.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.critic.parameters(), lr=self.options.value_lr, weight_decay=trainer.cfg.weight_decay)

    def step_layout(self, response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-size steps: (step_mask [n, S], boundary columns [S + 1]) for ``step_tokens`` tokens a step."""
        c = self.options.step_tokens
        T = response_mask.shape[1]
        S = -(-T // c)
        nsteps = -(-response_mask.sum(1).long() // c)
        step_mask = (torch.arange(S, device=response_mask.device)[None, :] < nsteps[:, None]).to(torch.float32)
        cols = (torch.arange(S + 1, device=response_mask.device) * c).clamp_max(T)
        return step_mask, cols

    def step_sums(self, token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Step log-probabilities: token log-probabilities (masked) summed over each fixed chunk -> [n, S]."""
        c = self.options.step_tokens
        n, T = token_logp.shape
        S = -(-T // c)
        x = torch.nn.functional.pad(token_logp * mask, (0, S * c - T))
        return x.view(n, S, c).sum(-1)

    def _critic_values(self, batch, cols):
        z = self.critic(batch.input_ids, batch.attention_mask, batch.prompt_length)[:, cols]
        return torch.sigmoid(z) if self.options.critic_loss == "bce" else z, z

    def compute(self, trainer, sample) -> PreferenceStep:
        o, cfg, G, dev = self.options, trainer.cfg, trainer.cfg.samples_per_prompt, trainer.device
        batch, rewards, prompts = sample.batch, sample.rewards, sample.prompts
        mask = batch.response_mask.to(torch.float32).to(dev)
        step_mask, cols = self.step_layout(mask)
        lengths = step_mask.sum(1).long().tolist()
        # Monte-Carlo targets: the prompt state (one per group) from its G samples; each later step boundary from continuations
        states = [(g * G, 0) for g in range(len(prompts))]
        states += [(i, k) for i in range(len(lengths)) for k in range(1, lengths[i])]
        jobs = [(i, k * o.step_tokens) for i, k in states if k > 0]
        cont = self._mc_continuations(trainer, sample, jobs) if jobs else []
        M = max(G, o.mc_samples)
        succ = torch.zeros((len(states), M), dtype=torch.float64)
        smask = torch.zeros_like(succ)
        for s, (i, _) in enumerate(states[:len(prompts)]):
            succ[s, :G] = rewards[i:i + G].double()
            smask[s, :G] = 1
        for s, vals in enumerate(cont, start=len(prompts)):
            succ[s, :len(vals)] = torch.tensor(vals, dtype=torch.float64)
            smask[s, :len(vals)] = 1
        targets = mc_value_targets(succ, smask)
        # critic: one regression step onto the targets (reference data only; the actor's loss never reaches it)
        rows = torch.tensor([i for i, _ in states], device=dev)
        ks = torch.tensor([k for _, k in states], device=dev)
        _, z = self._critic_values(batch, cols)
        pred = z[rows, ks]
        v_loss = critic_loss(pred.double(), targets.value.to(dev), kind=o.critic_loss, weights=targets.num_rollouts.to(dev).double())
        self.optimizer.zero_grad(set_to_none=True)
        v_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        # actor: step advantages from the updated (frozen) critic, the final state valued by the response's reward
        with torch.no_grad():
            values, _ = self._critic_values(batch, cols)
        adv = step_advantages(values.double(), step_mask.double(), final_values=rewards.double().to(dev))
        tok = token_logprobs(trainer.policy, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
        with torch.no_grad():
            ref_tok = token_logprobs(trainer.ref, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
        logp_s, ref_s = self.step_sums(tok, mask), self.step_sums(ref_tok, mask)
        state_ids = self._state_ids(batch, step_mask, dev) if o.center_states else None
        res = direct_advantage_po_loss(logp_s, ref_s, adv.to(logp_s.dtype), step_mask, beta=cfg.beta, state_ids=state_ids)
        sm = step_mask
        metrics = {"loss": float(res.loss.detach()), "margin": math.nan, "pair_accuracy": math.nan, "num_pairs": 0.0,
                   "value_loss": float(v_loss.detach()), "value_mean": float((values[:, :-1] * sm).sum() / sm.sum()),
                   "advantage_abs_mean": float((adv.abs() * sm).sum() / sm.sum()), "num_steps": float(sm.sum())}
        loss_inputs = dict(logp=logp_s.detach(), ref_logp=ref_s, advantages=adv, step_mask=step_mask, state_ids=state_ids, values=values,
                           rewards=rewards, critic_pred=pred.detach(), critic_targets=targets, value_loss=v_loss.detach(), loss=res.loss.detach())
        return PreferenceStep(loss=res.loss, metrics=metrics, loss_inputs=loss_inputs)

    def _state_ids(self, batch, step_mask, device) -> torch.Tensor:
        """Equal ids for steps taken from the same state: same prompt tokens and same response prefix."""
        P, c = batch.prompt_length, self.options.step_tokens
        ids: dict = {}
        out = torch.zeros(step_mask.shape, dtype=torch.long)
        for i in range(step_mask.shape[0]):
            prompt = tuple(batch.input_ids[i, :P][batch.attention_mask[i, :P].bool()].tolist())
            resp = batch.input_ids[i, P:].tolist()
            for k in range(int(step_mask[i].sum())):
                out[i, k] = ids.setdefault((prompt, tuple(resp[:k * c])), len(ids))
        return out.to(device)

    @torch.no_grad()
    def _mc_continuations(self, trainer, sample, jobs) -> list[list[float]]:
        """Rewards of ``mc_samples`` reference continuations from each (row, response-token offset) prefix.

        transformers' ``generate`` (global RNG seeded from (seed, step)); each continuation is cut to the budget
        left after its prefix, which samples exactly as a shorter budget would.
        """
        cfg, G = trainer.cfg, trainer.cfg.samples_per_prompt
        torch.manual_seed(trainer.seed_for(sample.step, "dapo_mc"))
        texts = continuation_texts(trainer.ref, trainer.tokenizer, sample.batch, list(jobs), num_samples=self.options.mc_samples,
                                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=1.0)
        return [[trainer.reward_of(x, sample.items[i // G]) for x in row] for (i, _), row in zip(jobs, texts)]


# -- pair labellers ---------------------------------------------------------------------------


@PAIR_LABELLERS.register("reward")
class RewardLabels(PairLabeller):
    """Pairs ranked by the task's reward."""

    def label(self, trainer, sample, logp, ref_logp):
        return logp, ref_logp, sample.rewards.to(trainer.device), sample.group_ids, {}, {}


@dataclass
class AIFeedbackOptions:
    principle: str = field(default=JUDGE_PRINCIPLE, metadata={"help": "the judge's one general principle"})
    space: str = field(default="probability", metadata={"help": "order-swap average in probability or logit space", "choices": ("probability", "logit")})
    min_strength: float = field(default=0.0, metadata={"help": "drop pairs whose |preference strength| is below this"})


@PAIR_LABELLERS.register("ai-feedback")
class AIFeedbackLabels(PairLabeller):
    """Self-reference AI feedback: the frozen reference judges every within-prompt pair in both orders."""

    Options = AIFeedbackOptions
    judges_samples = True
    metrics = ("judge_pairs", "judge_consistency", "judge_position_bias", "judge_strength", "judge_reward_agreement")
    legacy_options = {"judge_principle": "principle", "judge_space": "space", "min_preference_strength": "min_strength"}

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if o.space not in ("probability", "logit"):
            errs.append(f"ai-feedback.space (judge_space) must be 'probability' or 'logit', got {o.space!r}")
        if not o.min_strength >= 0:
            errs.append(f"ai-feedback.min_strength (min_preference_strength) must be >= 0, got {o.min_strength}")
        return errs

    def label(self, trainer, sample, logp, ref_logp):
        judged = self.judge_pairs(trainer, sample.prompts, sample.batch.texts, sample.rewards)
        metrics = judged.pop("metrics")
        idx = judged["rows"].to(trainer.device)
        return logp[idx], ref_logp[idx], judged["rewards"].to(trainer.device), judged["groups"], metrics, {"judge": judged}

    @torch.no_grad()
    def judge_pairs(self, trainer, prompts: list[str], texts: list[str], rewards: torch.Tensor) -> dict:
        """Label every within-prompt pair with the frozen reference as judge (both orders; module docstring).

        Returns a dict: ``rows`` (winner, loser row indices, flattened), ``groups`` (pair index of each),
        ``rewards`` (P(win), 1 - P(win)), the judge's raw outputs ``pairs`` [K, 2] (A, B rows),
        ``p_first_ab``, ``p_first_ba`` [K], ``ppl`` [K, 2 orders, 2 verdicts] (verdict 0: first-listed better),
        the core results ``prob_a``, ``strength``, ``consistent``, ``position_bias``, ``kept`` [K] bool, and ``metrics``.
        """
        o, G, dev, tok = self.options, trainer.cfg.samples_per_prompt, trainer.device, trainer.tokenizer
        pairs = [(g * G + i, g * G + j) for g in range(len(prompts)) for i in range(G) for j in range(i + 1, G)]
        judge_prompts = []
        for a, b in pairs:
            for first, second in ((a, b), (b, a)):
                judge_prompts.append(f"{o.principle}\n\nInstruction: {prompts[a // G]}\n\nAnswer A: {texts[first]}\n\n"
                                     f"Answer B: {texts[second]}\n\nWhich answer is better, A or B?")
        K = len(pairs)
        phrases = [ph for group in JUDGE_VERDICTS for ph in group]
        verdict_of = [v for v, group in enumerate(JUDGE_VERDICTS) for _ in group]
        nv = len(phrases)
        # one row per (pair, order, phrase); the nv rows of a (pair, order) share its judge prompt, passed once
        p_ids, p_mask = encode_prompts(tok, judge_prompts, device=dev)
        v_enc = [tok(ph, add_special_tokens=False)["input_ids"] for ph in phrases]
        Tv = max(len(x) for x in v_enc)
        v_ids = torch.full((nv, Tv), tok.pad_token_id, dtype=p_ids.dtype)
        v_mask = torch.zeros((nv, Tv), dtype=p_mask.dtype)
        for r, x in enumerate(v_enc):
            v_ids[r, :len(x)] = torch.tensor(x)
            v_mask[r, :len(x)] = 1
        v_ids, v_mask = v_ids.to(dev).repeat(2 * K, 1), v_mask.to(dev).repeat(2 * K, 1)
        ids = torch.cat([p_ids.repeat_interleave(nv, 0), v_ids], 1)
        att = torch.cat([p_mask.repeat_interleave(nv, 0), v_mask], 1)
        lp = PrefixSharedLogprobs(trainer.ref)(ids, att, p_ids.shape[1], nv)
        para_ids = [(r // nv) * 2 + verdict_of[r % nv] for r in range(2 * K * nv)]  # (pair * 2 + order) * 2 + verdict
        ppl = semantic_perplexity(lp.double(), v_mask.double(), paraphrase_ids=torch.tensor(para_ids, device=dev))
        ppl = ppl.view(K, 2, 2).cpu()  # [pair, order (A first, B first), verdict (first better, second better)]
        return labels_from_verdict_perplexities(ppl, pairs, rewards, space=o.space, min_strength=o.min_strength)


def labels_from_verdict_perplexities(ppl: torch.Tensor, pairs: list[tuple[int, int]], rewards: torch.Tensor, *,
                                     space: str, min_strength: float) -> dict:
    """Pair labels from the judge's pooled verdict perplexities, through the core's debiasing and strength.

    Shared by the AI-judge labellers (``ai-feedback`` and ``self-reference``).

    Parameters
    ----------
    ppl : Tensor, shape [K, 2, 2]
        Pooled perplexities per pair, order (A listed first, B listed first) and verdict (first-listed better,
        second-listed better).
    pairs : list of (a, b) row indices, length K
    rewards : Tensor, shape [rows]
        The task's rewards (only for the agreement metric).
    space, min_strength
        :func:`~polab.estimators.reward_shaping.order_swap_debias`'s space; pairs whose |strength| is below
        ``min_strength`` (or whose debiased probability is exactly 1/2) are dropped.

    Returns
    -------
    dict with ``rows`` (winner, loser row indices, flattened), ``groups`` (pair index of each), ``rewards``
    (P(win), 1 - P(win)), ``pairs`` [K, 2], ``p_first_ab``, ``p_first_ba``, ``ppl``, ``prob_a``, ``strength``,
    ``consistent``, ``position_bias``, ``kept`` [K] and ``metrics``.
    """
    K = ppl.shape[0]
    p_first = ppl[:, :, 1] / (ppl[:, :, 0] + ppl[:, :, 1])
    pref = order_swap_debias(p_first[:, 0], p_first[:, 1], space=space)
    strength = preference_strength(ppl[:, 0, 0], ppl[:, 0, 1], ppl_prefer_a_swapped=ppl[:, 1, 1], ppl_prefer_b_swapped=ppl[:, 1, 0])
    kept = (pref.prob_a != 0.5) & (strength.abs() >= min_strength)
    pair_t = torch.tensor(pairs, dtype=torch.long).view(K, 2)
    a_wins = pref.prob_a > 0.5
    winner = torch.where(a_wins, pair_t[:, 0], pair_t[:, 1])[kept]
    loser = torch.where(a_wins, pair_t[:, 1], pair_t[:, 0])[kept]
    p_win = torch.where(a_wins, pref.prob_a, 1.0 - pref.prob_a)[kept]
    n = int(kept.sum())
    r = rewards.double().cpu()
    decided = r[pair_t[:, 0]] != r[pair_t[:, 1]]
    agree = (r[pair_t[:, 0]] > r[pair_t[:, 1]]) == a_wins
    metrics = {
        "judge_pairs": float(n),
        "judge_consistency": float(pref.consistent.double().mean()),
        "judge_position_bias": float(pref.position_bias.mean()),
        "judge_strength": float(strength.abs().mean()),
        "judge_reward_agreement": float(agree[decided].double().mean()) if bool(decided.any()) else math.nan,
    }
    return dict(rows=torch.stack([winner, loser], 1).reshape(-1), groups=torch.arange(n).repeat_interleave(2),
                rewards=torch.stack([p_win, 1.0 - p_win], 1).reshape(-1).to(torch.float32), pairs=pair_t,
                p_first_ab=p_first[:, 0], p_first_ba=p_first[:, 1], ppl=ppl, prob_a=pref.prob_a, strength=strength,
                consistent=pref.consistent, position_bias=pref.position_bias, kept=kept, metrics=metrics)
