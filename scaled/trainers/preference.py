r"""Preference fine-tuning of a causal LM with offline or on-policy samples (Tajwar et al., 2024).

One training step composes, in order:

1. draw ``prompts_per_step`` prompts from the task (seeded from ``(seed, step)``);
2. sample ``samples_per_prompt`` responses per prompt from the scheme's
   source: the frozen **reference** model (offline data; a dataset drawn from
   the reference and consumed once is distributed exactly like these fresh
   draws, so every scheme spends the same number of samples and reward
   queries per step) or the current **policy** (on-policy), with
   :func:`polab.scaled.rollout.sample_rollouts` and a per-step ``torch.Generator``;
3. score each response with the task's programmatic reward;
4. sequence log-probabilities under the policy (with grad) and the
   reference: :func:`polab.scaled.rollout.token_logprobs` then
   :func:`polab.estimators.preference_losses.sequence_logprobs`;
5. the loss is :func:`polab.estimators.preference_losses.scheme_loss`, unchanged:
   DPO / conservative DPO / IPO on within-prompt pairs, or best-of-N with or
   without a negative gradient; or one of ``METHOD_SCHEMES``: CoPG (all
   within-prompt pairs), OPA-DPO (DPO pairs plus the anchor; "offline"
   samples come from the reference, which is what OPA-DPO means by data
   on-policy w.r.t. the reference) or GEPO (responses above their prompt's
   mean reward count as "equivalent");
6. one AdamW step (gradient clipping at ``max_grad_norm``).

Two further methods of the seeds, selected by name:

- ``pair_labels="ai-feedback"`` (self-reference AI feedback,
  :mod:`polab.estimators.reward_shaping`): the pairs' labels come from a judge, the
  frozen **reference** model itself (the policy's own initial weights), not
  from the programmatic reward. Every within-prompt pair (A, B) is shown to
  the judge in both orders under one general principle
  (``judge_principle``); in each order the judge's per-token log-likelihoods
  of two paraphrases of "the first answer is better" and of "the second answer
  is better" give their semantic perplexities
  (:func:`~polab.estimators.reward_shaping.semantic_perplexity`, paraphrases
  pooled), the probability that the first-listed answer is better is
  :math:`p = \mathrm{PPL}_2/(\mathrm{PPL}_1 + \mathrm{PPL}_2)` (the two
  verdicts' per-token likelihoods normalised against each other; our
  reconstruction), the two orders are combined by
  :func:`~polab.estimators.reward_shaping.order_swap_debias` and the preference
  strength by :func:`~polab.estimators.reward_shaping.preference_strength` (both
  orders). The judged winner and loser of each pair form a two-response group
  with rewards :math:`(P(\text{win}), 1 - P(\text{win}))`, which any scheme's
  core loss consumes unchanged (DPO-type schemes see exactly the judged pairs;
  ties, :math:`P = 1/2`, and pairs with :math:`|s|` below
  ``min_preference_strength`` are dropped). The programmatic reward stays the
  evaluation metric (``policy_reward``), and ``judge_reward_agreement`` logs
  how often the judge agrees with it.
- ``scheme="offline-direct-advantage-po"`` (Direct Advantage Policy
  Optimization, the step-level offline method, :mod:`polab.estimators.direct_advantage_po`;
  not Yu et al.'s DAPO): responses drawn from the reference are split into
  steps of ``dapo_step_tokens`` tokens (fixed chunks: the length-target task
  has no reasoning lines to split at); a separate critic
  (:class:`polab.scaled.trainers.grpo.ValueModel`, a copy of the reference with a
  zero-initialised scalar head) is regressed by
  :func:`~polab.estimators.direct_advantage_po.critic_loss` onto Monte-Carlo targets
  (:func:`~polab.estimators.direct_advantage_po.mc_value_targets`: for the prompt
  state, the rewards of its group's samples; for a later step boundary,
  ``dapo_mc_samples`` reference continuations from it); then, with the
  updated critic frozen, :func:`~polab.estimators.direct_advantage_po.step_advantages`
  (final state valued by the response's own reward) feed
  :func:`~polab.estimators.direct_advantage_po.direct_advantage_po_loss` on the step
  log-probabilities (token log-probabilities summed over each step) under the
  policy and the reference. Critic and actor are trained independently (the
  critic sees only reference data and never the actor's loss). This lives in
  the preference trainer rather than the GRPO trainer because the method is
  offline with respect to a frozen reference, which this trainer already
  samples from and holds. With ``dapo_center_states`` the residuals are
  centred within identical states (same prompt and same response prefix).
  Departures from the paper: its two stages run one after the other over a
  fixed dataset, here each step takes one critic step and then one actor step
  on fresh reference draws (distributed as a reference dataset consumed
  once); and the length task's reward in (0, 1] stands in for the binary
  correctness that the Monte-Carlo targets average.

The policy's reward is logged every step: for on-policy schemes it is the
mean reward of the training samples (draws from the current policy); for
offline schemes ``eval_samples_per_prompt`` extra policy samples per prompt
are drawn for evaluation only (not trained on, not counted in the budget).

Randomness: each step's prompt draw and samplers are seeded from
``(seed, step)`` by :func:`polab.scaled.trainers.grpo.step_seed`, so a step does not
depend on what ran before it and a resumed run continues exactly.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from polab.estimators.direct_advantage_po import critic_loss, direct_advantage_po_loss, mc_value_targets, step_advantages
from polab.estimators.preference_losses import PREFERENCE_SCHEMES, scheme_loss, sequence_logprobs
from polab.estimators.reward_shaping import order_swap_debias, preference_strength, semantic_perplexity

from ..checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ..models import EMBEDDED_MODEL, load_model
from ..rollout import PrefixSharedLogprobs, continuation_texts, encode_prompts, sample_rollouts, token_logprobs
from ..run_folder import RunLogger, add_run_arguments, read_metrics
from ..tasks.length_target import LengthTargetTask, count_words
from .grpo import ValueModel, step_seed

__all__ = ["PreferenceConfig", "PreferenceTrainer", "PRESETS", "TRAINER_SCHEMES", "PAIR_LABELS", "config_from_preset", "plot_preference_run"]


@dataclass(frozen=True)
class TrainerScheme:
    """A scheme the trainer runs itself (not a :func:`polab.estimators.preference_losses.scheme_loss` scheme)."""

    name: str
    source: str  # "reference" or "policy"

    @property
    def on_policy(self) -> bool:
        return self.source == "policy"


#: Schemes beyond ``PREFERENCE_SCHEMES``: Direct Advantage Policy Optimization on reference samples.
TRAINER_SCHEMES: dict[str, TrainerScheme] = {"offline-direct-advantage-po": TrainerScheme("offline-direct-advantage-po", "reference")}
#: ``pair_labels``: who decides the winner of a pair: the programmatic reward, or the reference model as an AI judge.
PAIR_LABELS = ("reward", "ai-feedback")
#: The judge's one general principle (self-reference AI feedback).
JUDGE_PRINCIPLE = "A better answer follows the user's instruction more closely."
#: Paraphrases of the two verdicts, "first-listed answer better" and "second-listed answer better" (semantic perplexity pools them).
JUDGE_VERDICTS = (("Answer A is better.", "The better answer is A."), ("Answer B is better.", "The better answer is B."))


@dataclass
class PreferenceConfig:
    """Hyperparameters of one preference fine-tuning run (single process)."""

    # model and task
    model: str = EMBEDDED_MODEL
    target_words: int = 3
    reward_scale: float = 4.0
    # scheme and loss
    scheme: str = "on-policy-dpo"  # a key of polab.estimators.preference_losses.PREFERENCE_SCHEMES
    beta: float = 0.1
    label_smoothing: float = 0.0  # > 0: conservative DPO
    ipo_target_margin: float | None = None  # None: 1/(2 beta) (IPO paper, TRL, OpenRLHF)
    negative_coef: float = 0.1
    pairing: str = "all"
    average_logprobs: bool = False  # True: token-mean sequence log-probs (TRL's IPO convention)
    copg_scale: float = 1.0  # CoPG: constant in front of the squared difference
    opa_anchor: str = "sigmoid"  # OPA-DPO anchor: "sigmoid" (mDPO), "squared" or "none"
    opa_anchor_value: float = 0.0
    opa_anchor_coef: float = 1.0
    gepo_consistency_coef: float = 0.1  # GEPO: weight of the within-equivalent-group variance
    gepo_margin: float = 0.0
    gepo_threshold: float | None = None  # None: "equivalent" = reward above the prompt's mean
    # pair labels: "reward" (programmatic) or "ai-feedback" (the frozen reference judges, order-swap debiased)
    pair_labels: str = "reward"
    judge_principle: str = JUDGE_PRINCIPLE
    judge_space: str = "probability"  # order_swap_debias: average in probability or in logit space
    min_preference_strength: float = 0.0  # ai-feedback: drop pairs whose |strength| is below this
    # Direct Advantage Policy Optimization (scheme="offline-direct-advantage-po"); beta is the loss's beta
    dapo_step_tokens: int = 4  # tokens per step (fixed chunks)
    dapo_mc_samples: int = 2  # reference continuations per step boundary for the critic's Monte-Carlo target
    dapo_critic_loss: str = "mse"  # "mse" on values, or "bce" on logits (value = sigmoid)
    dapo_value_lr: float = 1e-5
    dapo_center_states: bool = False  # centre residuals within identical states (module docstring of the core)
    # sampling
    prompts_per_step: int = 4
    samples_per_prompt: int = 4
    eval_samples_per_prompt: int = 2
    max_new_tokens: int = 24
    temperature: float = 1.0
    # optimisation
    steps: int = 20
    lr: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # run
    seed: int = 0
    out: str = "runs/preference"
    device: str = "auto"
    torch_threads: int = 0  # > 0: torch.set_num_threads (1 is fastest on a busy small CPU); 0 leaves torch's default
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    resume: bool = False
    stop_after: int | None = None
    tensorboard: bool = True
    progress: bool = True

    def validate(self) -> None:
        errs = []
        if self.scheme not in PREFERENCE_SCHEMES and self.scheme not in TRAINER_SCHEMES:
            errs.append(f"scheme must be one of {sorted(PREFERENCE_SCHEMES) + sorted(TRAINER_SCHEMES)}, got {self.scheme!r}")
        if self.pair_labels not in PAIR_LABELS:
            errs.append(f"pair_labels must be one of {PAIR_LABELS}, got {self.pair_labels!r}")
        if self.pair_labels == "ai-feedback" and self.scheme in TRAINER_SCHEMES:
            errs.append(f"pair_labels='ai-feedback' labels pairs; scheme {self.scheme!r} uses no pairs: choose a pairwise scheme or pair_labels='reward'")
        if self.judge_space not in ("probability", "logit"):
            errs.append("judge_space must be 'probability' or 'logit'")
        if self.min_preference_strength < 0:
            errs.append("min_preference_strength must be >= 0")
        if self.scheme in TRAINER_SCHEMES:
            if self.dapo_step_tokens < 1 or self.dapo_mc_samples < 1:
                errs.append("dapo_step_tokens and dapo_mc_samples must be >= 1")
            if self.dapo_critic_loss not in ("mse", "bce"):
                errs.append("dapo_critic_loss must be 'mse' or 'bce'")
            if self.eval_samples_per_prompt < 1:
                errs.append("offline schemes need eval_samples_per_prompt >= 1 to measure the policy's reward")
        if self.samples_per_prompt < 2:
            errs.append("samples_per_prompt must be >= 2: pairs and best-versus-rest need two responses per prompt")
        if self.prompts_per_step < 1 or self.steps < 1 or self.max_new_tokens < 1:
            errs.append("prompts_per_step, steps and max_new_tokens must be >= 1")
        if self.beta <= 0:
            errs.append("beta must be > 0")
        if not 0 <= self.label_smoothing < 0.5:
            errs.append("label_smoothing must lie in [0, 0.5)")
        if self.pairing not in ("all", "best-worst"):
            errs.append("pairing must be 'all' or 'best-worst'")
        if self.opa_anchor not in ("sigmoid", "squared", "none"):
            errs.append("opa_anchor must be 'sigmoid', 'squared' or 'none'")
        if self.copg_scale <= 0 or self.opa_anchor_coef < 0 or self.gepo_consistency_coef < 0:
            errs.append("copg_scale must be > 0; opa_anchor_coef and gepo_consistency_coef must be >= 0")
        if self.eval_samples_per_prompt < 1 and PREFERENCE_SCHEMES.get(self.scheme) is not None and not PREFERENCE_SCHEMES[self.scheme].on_policy:
            errs.append("offline schemes need eval_samples_per_prompt >= 1 to measure the policy's reward")
        if errs:
            raise ValueError("invalid preference configuration:\n  - " + "\n  - ".join(errs))


#: Named configurations.
PRESETS: dict[str, dict] = {
    # On-policy DPO on the embedded model, 3-word target: ~10-20 s a step on 2 idle CPU cores (12 steps, 2-4 minutes;
    # 20-45 s a step when the cores are shared).
    "cpu-demo": dict(model=EMBEDDED_MODEL, scheme="on-policy-dpo", prompts_per_step=4, samples_per_prompt=4, max_new_tokens=20,
                     steps=12, lr=3e-5, beta=0.1, checkpoint_every=4, torch_threads=1),
    # For tests: random 2-layer model, two steps.
    "tiny": dict(model="tiny-llama", scheme="on-policy-dpo", prompts_per_step=2, samples_per_prompt=3, eval_samples_per_prompt=1,
                 max_new_tokens=6, steps=2, lr=1e-3, checkpoint_every=1, tensorboard=False, progress=False, torch_threads=1),
}


#: Logged with ``pair_labels="ai-feedback"``.
JUDGE_METRICS = ["judge_pairs", "judge_consistency", "judge_position_bias", "judge_strength", "judge_reward_agreement"]
#: Logged with ``scheme="offline-direct-advantage-po"``.
DAPO_METRICS = ["value_loss", "value_mean", "advantage_abs_mean", "num_steps"]


@dataclass
class StepResult:
    step: int
    metrics: dict
    loss_inputs: dict = field(repr=False, default_factory=dict)


class PreferenceTrainer:
    """Composes task, sampler (reference or policy), reward, core preference loss and optimizer."""

    def __init__(self, config: PreferenceConfig):
        config.validate()
        self.cfg = config
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        self.scheme = PREFERENCE_SCHEMES.get(config.scheme) or TRAINER_SCHEMES[config.scheme]
        self.direct_advantage = config.scheme in TRAINER_SCHEMES
        self.out = Path(config.out)
        self.task = LengthTargetTask(target_words=config.target_words, scale=config.reward_scale)
        dev = config.device
        self.device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else ("cpu" if dev == "auto" else dev))
        loaded = load_model(config.model, seed=config.seed)
        self.tokenizer = loaded.tokenizer
        self.policy = loaded.model.to(self.device)
        self.policy.train()
        self.ref = copy.deepcopy(self.policy).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.critic = self.critic_optimizer = None
        if self.direct_advantage:
            self.critic = ValueModel(self.ref).to(self.device)  # a copy of the reference, trainable, head at zero
            self.critic.lm.requires_grad_(True)
            self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=config.dapo_value_lr, weight_decay=config.weight_decay)
        self.step = 0
        resume_step = None
        if config.resume:
            ckpt = latest_checkpoint(self.out)
            if ckpt is None:
                raise FileNotFoundError(f"--resume was given but {self.out}/checkpoints has no checkpoint; drop --resume to start a new run.")
            state = load_checkpoint(ckpt)
            self.policy.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.critic is not None:
                self.critic.load_state_dict(state["critic"])
                self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            self.step = int(state["step"])
            resume_step = self.step
        elif (self.out / "checkpoints" / "latest").exists():
            raise FileExistsError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out.")
        self.logger = RunLogger(self.out, dataclasses.asdict(config), self.metric_names(), resume_step=resume_step,
                                tensorboard=config.tensorboard)

    def metric_names(self) -> list[str]:
        names = ["policy_reward", "sample_reward", "policy_words", "sample_words", "loss", "margin", "pair_accuracy", "num_pairs",
                 "grad_norm", "truncated_rate", "time_sample_s", "time_train_s", "time_step_s"]
        if self.cfg.pair_labels == "ai-feedback":
            names += JUDGE_METRICS
        if self.direct_advantage:
            names += DAPO_METRICS
        return names

    def _sample(self, model, prompts, n, gen_stream: str, step: int):
        gen = torch.Generator(device=self.device).manual_seed(step_seed(self.cfg.seed, step, 0, gen_stream))
        return sample_rollouts(model, self.tokenizer, prompts, samples_per_prompt=n, max_new_tokens=self.cfg.max_new_tokens,
                               generator=gen, temperature=self.cfg.temperature)

    def train_step(self) -> StepResult:
        cfg = self.cfg
        step = self.step + 1
        t0 = time.perf_counter()
        rng = np.random.default_rng(step_seed(cfg.seed, step, 0, "prompts"))
        items = [self.task.sample(rng=rng) for _ in range(cfg.prompts_per_step)]
        prompts = [self.task.prompt(it) for it in items]
        G = cfg.samples_per_prompt
        source = self.policy if self.scheme.on_policy else self.ref
        batch = self._sample(source, prompts, G, "train", step)
        rewards = torch.tensor([self.task.reward(t) for t in batch.texts], dtype=torch.float32)
        if self.scheme.on_policy:
            eval_texts = batch.texts
        else:
            eval_texts = self._sample(self.policy, prompts, cfg.eval_samples_per_prompt, "eval", step).texts
        t1 = time.perf_counter()

        group_ids = torch.arange(len(prompts)).repeat_interleave(G)
        if self.direct_advantage:
            return self._direct_advantage_step(step, t0, t1, prompts, batch, rewards, eval_texts)
        mask = batch.response_mask.to(torch.float32).to(self.device)
        tok = token_logprobs(self.policy, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
        logp = sequence_logprobs(tok, mask, average=cfg.average_logprobs)
        with torch.no_grad():
            ref_tok = token_logprobs(self.ref, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
            ref_logp = sequence_logprobs(ref_tok, mask, average=cfg.average_logprobs)
        judge_metrics, judged = {}, None
        loss_logp, loss_ref, loss_rewards, loss_groups = logp, ref_logp, rewards.to(self.device), group_ids
        if cfg.pair_labels == "ai-feedback":
            judged = self.judge_pairs(prompts, batch.texts, rewards)
            judge_metrics = judged.pop("metrics")
            idx = judged["rows"].to(self.device)
            loss_logp, loss_ref = logp[idx], ref_logp[idx]
            loss_rewards, loss_groups = judged["rewards"].to(self.device), judged["groups"]
        res = None
        if loss_groups.numel() > 0:
            res = scheme_loss(self.scheme, loss_logp, loss_ref, loss_rewards, loss_groups, beta=cfg.beta,
                              label_smoothing=cfg.label_smoothing, target_margin=cfg.ipo_target_margin,
                              negative_coef=cfg.negative_coef, pairing=cfg.pairing, **self.method_loss_kwargs())
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = 0.0
        if res is not None:
            res.loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm))
            self.optimizer.step()
        t2 = time.perf_counter()
        self.step = step
        pref = res is not None and hasattr(res, "margin")  # pairwise / group results (not best-of-N)
        metrics = {
            "policy_reward": float(np.mean([self.task.reward(t) for t in eval_texts])),
            "sample_reward": float(rewards.mean()),
            "policy_words": float(np.mean([count_words(t) for t in eval_texts])),
            "sample_words": float(np.mean([count_words(t) for t in batch.texts])),
            "loss": float(res.loss.detach()) if res is not None else math.nan,
            "margin": float(res.margin.detach().mean()) if pref else math.nan,
            "pair_accuracy": float(res.accuracy) if pref else math.nan,
            "num_pairs": float(res.per_pair.numel()) if pref else 0.0,
            "grad_norm": grad_norm,
            "truncated_rate": float(batch.truncated.float().mean()),
            "time_sample_s": t1 - t0,
            "time_train_s": t2 - t1,
            "time_step_s": time.perf_counter() - t0,
            **judge_metrics,
        }
        loss_inputs = dict(logp=loss_logp.detach(), ref_logp=loss_ref, rewards=loss_rewards, group_ids=loss_groups,
                           loss=None if res is None else res.loss.detach())
        if judged is not None:
            loss_inputs["judge"] = judged
        return StepResult(step, metrics, loss_inputs)

    # -- self-reference AI feedback ---------------------------------------------------------
    @torch.no_grad()
    def judge_pairs(self, prompts: list[str], texts: list[str], rewards: torch.Tensor) -> dict:
        """Label every within-prompt pair with the frozen reference as judge (both orders; module docstring).

        Returns a dict: ``rows`` (winner, loser row indices, flattened), ``groups`` (pair index of each),
        ``rewards`` (P(win), 1 - P(win)), the judge's raw outputs ``pairs`` [K, 2] (A, B rows),
        ``p_first_ab``, ``p_first_ba`` [K], ``ppl`` [K, 2 orders, 2 verdicts] (verdict 0: first-listed better),
        the core results ``prob_a``, ``strength``, ``consistent``, ``position_bias``, ``kept`` [K] bool, and ``metrics``.
        """
        cfg, G = self.cfg, self.cfg.samples_per_prompt
        pairs = [(g * G + i, g * G + j) for g in range(len(prompts)) for i in range(G) for j in range(i + 1, G)]
        judge_prompts = []
        for a, b in pairs:
            for first, second in ((a, b), (b, a)):
                judge_prompts.append(f"{cfg.judge_principle}\n\nInstruction: {prompts[a // G]}\n\nAnswer A: {texts[first]}\n\n"
                                     f"Answer B: {texts[second]}\n\nWhich answer is better, A or B?")
        K = len(pairs)
        phrases = [ph for group in JUDGE_VERDICTS for ph in group]
        verdict_of = [v for v, group in enumerate(JUDGE_VERDICTS) for _ in group]
        nv = len(phrases)
        # one row per (pair, order, phrase); the nv rows of a (pair, order) share its judge prompt, passed once
        p_ids, p_mask = encode_prompts(self.tokenizer, judge_prompts, device=self.device)
        v_enc = [self.tokenizer(ph, add_special_tokens=False)["input_ids"] for ph in phrases]
        Tv = max(len(x) for x in v_enc)
        v_ids = torch.full((nv, Tv), self.tokenizer.pad_token_id, dtype=p_ids.dtype)
        v_mask = torch.zeros((nv, Tv), dtype=p_mask.dtype)
        for r, x in enumerate(v_enc):
            v_ids[r, :len(x)] = torch.tensor(x)
            v_mask[r, :len(x)] = 1
        v_ids, v_mask = v_ids.to(self.device).repeat(2 * K, 1), v_mask.to(self.device).repeat(2 * K, 1)
        ids = torch.cat([p_ids.repeat_interleave(nv, 0), v_ids], 1)
        att = torch.cat([p_mask.repeat_interleave(nv, 0), v_mask], 1)
        lp = PrefixSharedLogprobs(self.ref)(ids, att, p_ids.shape[1], nv)
        para_ids = [(r // nv) * 2 + verdict_of[r % nv] for r in range(2 * K * nv)]  # (pair * 2 + order) * 2 + verdict
        ppl = semantic_perplexity(lp.double(), v_mask.double(), paraphrase_ids=torch.tensor(para_ids, device=self.device))
        ppl = ppl.view(K, 2, 2).cpu()  # [pair, order (A first, B first), verdict (first better, second better)]
        p_first = ppl[:, :, 1] / (ppl[:, :, 0] + ppl[:, :, 1])
        pref = order_swap_debias(p_first[:, 0], p_first[:, 1], space=cfg.judge_space)
        strength = preference_strength(ppl[:, 0, 0], ppl[:, 0, 1], ppl_prefer_a_swapped=ppl[:, 1, 1], ppl_prefer_b_swapped=ppl[:, 1, 0])
        kept = (pref.prob_a != 0.5) & (strength.abs() >= cfg.min_preference_strength)
        pair_t = torch.tensor(pairs, dtype=torch.long).view(K, 2)
        a_wins = pref.prob_a > 0.5
        winner = torch.where(a_wins, pair_t[:, 0], pair_t[:, 1])[kept]
        loser = torch.where(a_wins, pair_t[:, 1], pair_t[:, 0])[kept]
        p_win = torch.where(a_wins, pref.prob_a, 1.0 - pref.prob_a)[kept]
        n = int(kept.sum())
        r = rewards.double()
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

    # -- Direct Advantage Policy Optimization ----------------------------------------------
    def step_layout(self, response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-size steps: (step_mask [n, S], boundary columns [S + 1]) for ``dapo_step_tokens`` tokens a step."""
        c = self.cfg.dapo_step_tokens
        T = response_mask.shape[1]
        S = -(-T // c)
        lengths = response_mask.sum(1).long()
        nsteps = -(-lengths // c)
        step_mask = (torch.arange(S, device=response_mask.device)[None, :] < nsteps[:, None]).to(torch.float32)
        cols = (torch.arange(S + 1, device=response_mask.device) * c).clamp_max(T)
        return step_mask, cols

    def step_sums(self, token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Step log-probabilities: token log-probabilities (masked) summed over each fixed chunk -> [n, S]."""
        c = self.cfg.dapo_step_tokens
        n, T = token_logp.shape
        S = -(-T // c)
        x = torch.nn.functional.pad(token_logp * mask, (0, S * c - T))
        return x.view(n, S, c).sum(-1)

    def _critic_values(self, batch, cols):
        z = self.critic(batch.input_ids, batch.attention_mask, batch.prompt_length)[:, cols]
        return torch.sigmoid(z) if self.cfg.dapo_critic_loss == "bce" else z, z

    def _direct_advantage_step(self, step, t0, t1, prompts, batch, rewards, eval_texts) -> StepResult:
        cfg, G = self.cfg, self.cfg.samples_per_prompt
        mask = batch.response_mask.to(torch.float32).to(self.device)
        step_mask, cols = self.step_layout(mask)
        lengths = step_mask.sum(1).long().tolist()
        c = cfg.dapo_step_tokens
        # Monte-Carlo targets: the prompt state (one per group) from its G samples; each later step boundary from continuations
        states = [(g * G, 0) for g in range(len(prompts))]
        states += [(i, k) for i in range(len(lengths)) for k in range(1, lengths[i])]
        jobs = [(i, k * c) for i, k in states if k > 0]
        cont = self._mc_continuations(step, batch, jobs, prompts) if jobs else []
        M = max(G, cfg.dapo_mc_samples)
        succ = torch.zeros((len(states), M), dtype=torch.float64)
        smask = torch.zeros_like(succ)
        for s, (i, k) in enumerate(states[:len(prompts)]):
            succ[s, :G] = rewards[i:i + G].double()
            smask[s, :G] = 1
        for s, vals in enumerate(cont, start=len(prompts)):
            succ[s, :len(vals)] = torch.tensor(vals, dtype=torch.float64)
            smask[s, :len(vals)] = 1
        targets = mc_value_targets(succ, smask)
        # critic: one regression step onto the targets (reference data only; the actor's loss never reaches it)
        rows = torch.tensor([i for i, _ in states], device=self.device)
        ks = torch.tensor([k for _, k in states], device=self.device)
        _, z = self._critic_values(batch, cols)
        pred = z[rows, ks]
        v_loss = critic_loss(pred.double(), targets.value.to(self.device), kind=cfg.dapo_critic_loss,
                             weights=targets.num_rollouts.to(self.device).double())
        self.critic_optimizer.zero_grad(set_to_none=True)
        v_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
        self.critic_optimizer.step()
        # actor: step advantages from the updated (frozen) critic, the final state valued by the response's reward
        with torch.no_grad():
            values, _ = self._critic_values(batch, cols)
        adv = step_advantages(values.double(), step_mask.double(), final_values=rewards.double().to(self.device))
        tok = token_logprobs(self.policy, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
        with torch.no_grad():
            ref_tok = token_logprobs(self.ref, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
        logp_s, ref_s = self.step_sums(tok, mask), self.step_sums(ref_tok, mask)
        state_ids = self._state_ids(batch, step_mask) if cfg.dapo_center_states else None
        res = direct_advantage_po_loss(logp_s, ref_s, adv.to(logp_s.dtype), step_mask, beta=cfg.beta, state_ids=state_ids)
        self.optimizer.zero_grad(set_to_none=True)
        res.loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm))
        self.optimizer.step()
        t2 = time.perf_counter()
        self.step = step
        sm = step_mask
        metrics = {
            "policy_reward": float(np.mean([self.task.reward(t) for t in eval_texts])),
            "sample_reward": float(rewards.mean()),
            "policy_words": float(np.mean([count_words(t) for t in eval_texts])),
            "sample_words": float(np.mean([count_words(t) for t in batch.texts])),
            "loss": float(res.loss.detach()),
            "margin": math.nan,
            "pair_accuracy": math.nan,
            "num_pairs": 0.0,
            "grad_norm": grad_norm,
            "truncated_rate": float(batch.truncated.float().mean()),
            "time_sample_s": t1 - t0,
            "time_train_s": t2 - t1,
            "time_step_s": time.perf_counter() - t0,
            "value_loss": float(v_loss.detach()),
            "value_mean": float((values[:, :-1] * sm).sum() / sm.sum()),
            "advantage_abs_mean": float((adv.abs() * sm).sum() / sm.sum()),
            "num_steps": float(sm.sum()),
        }
        loss_inputs = dict(logp=logp_s.detach(), ref_logp=ref_s, advantages=adv, step_mask=step_mask, state_ids=state_ids,
                           values=values, rewards=rewards, critic_pred=pred.detach(), critic_targets=targets, value_loss=v_loss.detach(),
                           loss=res.loss.detach())
        return StepResult(step, metrics, loss_inputs)

    def _state_ids(self, batch, step_mask) -> torch.Tensor:
        """Equal ids for steps taken from the same state: same prompt tokens and same response prefix."""
        P, c = batch.prompt_length, self.cfg.dapo_step_tokens
        ids: dict = {}
        out = torch.zeros(step_mask.shape, dtype=torch.long)
        for i in range(step_mask.shape[0]):
            prompt = tuple(batch.input_ids[i, :P][batch.attention_mask[i, :P].bool()].tolist())
            resp = batch.input_ids[i, P:].tolist()
            for k in range(int(step_mask[i].sum())):
                out[i, k] = ids.setdefault((prompt, tuple(resp[:k * c])), len(ids))
        return out.to(self.device)

    @torch.no_grad()
    def _mc_continuations(self, step, batch, jobs, prompts) -> list[list[float]]:
        """Rewards of ``dapo_mc_samples`` reference continuations from each (row, response-token offset) prefix.

        transformers' ``generate`` (global RNG seeded from (seed, step)); each continuation is cut to the budget
        left after its prefix, which samples exactly as a shorter budget would.
        """
        cfg = self.cfg
        torch.manual_seed(step_seed(cfg.seed, step, 0, "dapo_mc"))
        texts = continuation_texts(self.ref, self.tokenizer, batch, list(jobs), num_samples=cfg.dapo_mc_samples,
                                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=1.0)
        return [[float(self.task.reward(x)) for x in row] for row in texts]

    def method_loss_kwargs(self) -> dict:
        """The ``scheme_loss`` options of ``METHOD_SCHEMES`` (CoPG, OPA-DPO, GEPO); ignored by the other schemes."""
        cfg = self.cfg
        return dict(copg_scale=cfg.copg_scale, opa_anchor=None if cfg.opa_anchor == "none" else cfg.opa_anchor,
                    opa_anchor_value=cfg.opa_anchor_value, opa_anchor_coef=cfg.opa_anchor_coef,
                    gepo_consistency_coef=cfg.gepo_consistency_coef, gepo_margin=cfg.gepo_margin,
                    gepo_threshold=cfg.gepo_threshold)

    def save(self) -> None:
        state = {"step": self.step, "model": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "config": dataclasses.asdict(self.cfg)}
        if self.critic is not None:
            state.update(critic=self.critic.state_dict(), critic_optimizer=self.critic_optimizer.state_dict())
        save_checkpoint(self.out, self.step, state, keep=self.cfg.keep_checkpoints)

    def train(self) -> Path:
        """Run until ``steps`` (or ``stop_after`` steps of this call); returns the run folder."""
        cfg = self.cfg
        pbar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            pbar = tqdm(total=cfg.steps, initial=self.step, desc=f"preference[{cfg.scheme}]", unit="step")
        done = 0
        try:
            while self.step < cfg.steps:
                if cfg.stop_after is not None and done >= cfg.stop_after:
                    break
                res = self.train_step()
                done += 1
                self.logger.log(res.step, res.metrics)
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(reward=f"{res.metrics['policy_reward']:.3f}", words=f"{res.metrics['policy_words']:.1f}",
                                     s=f"{res.metrics['time_step_s']:.1f}")
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
        finally:
            if pbar is not None:
                pbar.close()
            self.logger.close()
        plot_preference_run(self.out)
        return self.out


def plot_preference_run(run: Path) -> Path:
    """Policy reward and response length against steps; writes ``figures/reward.png``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run = Path(run)
    rows = read_metrics(run / "metrics.csv")
    out = run / "figures" / "reward.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    steps = [r["step"] for r in rows]
    axes[0].plot(steps, [r["policy_reward"] for r in rows], marker="o", ms=3, label="policy")
    axes[0].plot(steps, [r["sample_reward"] for r in rows], ls="--", alpha=0.7, label="training samples")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("reward")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, [r["policy_words"] for r in rows], marker="o", ms=3)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("words per response (policy)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"preference run: {run.name}")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def config_from_preset(preset: str | None, **overrides) -> PreferenceConfig:
    """A PreferenceConfig from a named preset with keyword overrides (None values are ignored)."""
    base = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
        base = dict(PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(base) - {f.name for f in dataclasses.fields(PreferenceConfig)}
    if unknown:
        raise ValueError(f"unknown preference options {sorted(unknown)}.")
    return PreferenceConfig(**base)


# -- command line ----------------------------------------------------------


def add_cli(sub) -> argparse.ArgumentParser:
    """Add ``polab train preference`` to the CLI's ``train`` sub-commands."""
    p = sub.add_parser("preference", help="preference fine-tuning (DPO/IPO/cDPO/best-of-N/CoPG/OPA-DPO/GEPO, Direct Advantage PO; reward or AI-feedback labels)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-demo", help="named configuration; other options override it")
    p.add_argument("--scheme", choices=sorted(PREFERENCE_SCHEMES) + sorted(TRAINER_SCHEMES), help="sample source x loss")
    p.add_argument("--pair-labels", choices=PAIR_LABELS, help="pair winners from the programmatic reward or from the reference model as AI judge (self-reference AI feedback)")
    p.add_argument("--judge-principle", help="ai-feedback: the judge's one general principle")
    p.add_argument("--judge-space", choices=["probability", "logit"], help="ai-feedback: order-swap average in probability or logit space")
    p.add_argument("--min-preference-strength", type=float, help="ai-feedback: drop pairs whose |preference strength| is below this")
    p.add_argument("--dapo-step-tokens", type=int, help="offline-direct-advantage-po: tokens per step")
    p.add_argument("--dapo-mc-samples", type=int, help="offline-direct-advantage-po: reference continuations per step boundary (critic targets)")
    p.add_argument("--dapo-critic-loss", choices=["mse", "bce"], help="offline-direct-advantage-po: critic regression loss")
    p.add_argument("--dapo-value-lr", type=float, help="offline-direct-advantage-po: critic learning rate")
    p.add_argument("--dapo-center-states", action="store_true", default=None, help="offline-direct-advantage-po: centre residuals within identical states")
    p.add_argument("--model", help="smollm2-135m-instruct (embedded), tiny-llama, a local HF folder or a hub id")
    p.add_argument("--target-words", type=int, help="reward peak: words per response")
    p.add_argument("--reward-scale", type=float, help="reward decay length in words")
    p.add_argument("--beta", type=float)
    p.add_argument("--label-smoothing", type=float, help="> 0 gives conservative DPO")
    p.add_argument("--ipo-target-margin", type=float, help="IPO target margin (default 1/(2 beta))")
    p.add_argument("--negative-coef", type=float, help="coefficient of the best-of-N negative gradient")
    p.add_argument("--pairing", choices=["all", "best-worst"])
    p.add_argument("--average-logprobs", action="store_true", default=None, help="token-mean sequence log-probs (TRL's IPO)")
    p.add_argument("--copg-scale", type=float, help="CoPG: constant in front of the squared difference")
    p.add_argument("--opa-anchor", choices=["sigmoid", "squared", "none"], help="OPA-DPO anchor on the chosen implicit reward")
    p.add_argument("--opa-anchor-value", type=float)
    p.add_argument("--opa-anchor-coef", type=float)
    p.add_argument("--gepo-consistency-coef", type=float, help="GEPO: weight of the within-equivalent-group variance")
    p.add_argument("--gepo-margin", type=float)
    p.add_argument("--gepo-threshold", type=float, help="GEPO: reward at which a response counts as equivalent (default: above the prompt's mean)")
    p.add_argument("--prompts-per-step", type=int)
    p.add_argument("--samples-per-prompt", type=int)
    p.add_argument("--eval-samples-per-prompt", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    add_run_arguments(p)
    p.add_argument("--torch-threads", type=int)
    p.set_defaults(func=run_cli)
    return p


def run_cli(args) -> int:
    """Entry of ``polab train preference``."""
    opts = {k: v for k, v in vars(args).items() if k not in ("command", "algo", "preset", "func")}
    cfg = config_from_preset(args.preset, **opts)
    out = PreferenceTrainer(cfg).train()
    print(f"run folder: {out}\n  metrics: {out / 'metrics.csv'}\n  figure:  {out / 'figures' / 'reward.png'}")
    return 0
