"""Preference fine-tuning of a causal LM with offline or on-policy samples (Tajwar et al., 2024).

One training step composes, in order:

1. draw ``prompts_per_step`` prompts from the task (seeded from ``(seed, step)``);
2. sample ``samples_per_prompt`` responses per prompt from the scheme's
   source: the frozen **reference** model (offline data; a dataset drawn from
   the reference and consumed once is distributed exactly like these fresh
   draws, so every scheme spends the same number of samples and reward
   queries per step) or the current **policy** (on-policy), with
   :func:`scaled.rollout.sample_rollouts` and a per-step ``torch.Generator``;
3. score each response with the task's programmatic reward;
4. sequence log-probabilities under the policy (with grad) and the
   reference: :func:`scaled.rollout.token_logprobs` then
   :func:`estimators.preference_losses.sequence_logprobs`;
5. the loss is :func:`estimators.preference_losses.scheme_loss`, unchanged:
   DPO / conservative DPO / IPO on within-prompt pairs, or best-of-N with or
   without a negative gradient; or one of ``METHOD_SCHEMES``: CoPG (all
   within-prompt pairs), OPA-DPO (DPO pairs plus the anchor; "offline"
   samples come from the reference, which is what OPA-DPO means by data
   on-policy w.r.t. the reference) or GEPO (responses above their prompt's
   mean reward count as "equivalent");
6. one AdamW step (gradient clipping at ``max_grad_norm``).

The policy's reward is logged every step: for on-policy schemes it is the
mean reward of the training samples (draws from the current policy); for
offline schemes ``eval_samples_per_prompt`` extra policy samples per prompt
are drawn for evaluation only (not trained on, not counted in the budget).

Randomness: each step's prompt draw and samplers are seeded from
``(seed, step)`` by :func:`scaled.trainers.grpo.step_seed`, so a step does not
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

from estimators.preference_losses import PREFERENCE_SCHEMES, scheme_loss, sequence_logprobs

from ..checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ..models import EMBEDDED_MODEL, load_model
from ..rollout import sample_rollouts, token_logprobs
from ..run_folder import RunLogger, read_metrics
from ..tasks.length_target import LengthTargetTask, count_words
from .grpo import step_seed

__all__ = ["PreferenceConfig", "PreferenceTrainer", "PRESETS", "config_from_preset", "plot_preference_run"]


@dataclass
class PreferenceConfig:
    """Hyperparameters of one preference fine-tuning run (single process)."""

    # model and task
    model: str = EMBEDDED_MODEL
    target_words: int = 3
    reward_scale: float = 4.0
    # scheme and loss
    scheme: str = "on-policy-dpo"  # a key of estimators.preference_losses.PREFERENCE_SCHEMES
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
        if self.scheme not in PREFERENCE_SCHEMES:
            errs.append(f"scheme must be one of {sorted(PREFERENCE_SCHEMES)}, got {self.scheme!r}")
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
        self.scheme = PREFERENCE_SCHEMES[config.scheme]
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
        self.step = 0
        resume_step = None
        if config.resume:
            ckpt = latest_checkpoint(self.out)
            if ckpt is None:
                raise FileNotFoundError(f"--resume was given but {self.out}/checkpoints has no checkpoint; drop --resume to start a new run.")
            state = load_checkpoint(ckpt)
            self.policy.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            resume_step = self.step
        elif (self.out / "checkpoints" / "latest").exists():
            raise FileExistsError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out.")
        self.logger = RunLogger(self.out, dataclasses.asdict(config), self.metric_names(), resume_step=resume_step,
                                tensorboard=config.tensorboard)

    @staticmethod
    def metric_names() -> list[str]:
        return ["policy_reward", "sample_reward", "policy_words", "sample_words", "loss", "margin", "pair_accuracy", "num_pairs",
                "grad_norm", "truncated_rate", "time_sample_s", "time_train_s", "time_step_s"]

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
        mask = batch.response_mask.to(torch.float32).to(self.device)
        tok = token_logprobs(self.policy, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
        logp = sequence_logprobs(tok, mask, average=cfg.average_logprobs)
        with torch.no_grad():
            ref_tok = token_logprobs(self.ref, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
            ref_logp = sequence_logprobs(ref_tok, mask, average=cfg.average_logprobs)
        res = scheme_loss(self.scheme, logp, ref_logp, rewards.to(self.device), group_ids, beta=cfg.beta,
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
        }
        loss_inputs = dict(logp=logp.detach(), ref_logp=ref_logp, rewards=rewards, group_ids=group_ids,
                           loss=None if res is None else res.loss.detach())
        return StepResult(step, metrics, loss_inputs)

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
    p = sub.add_parser("preference", help="preference fine-tuning (DPO/IPO/cDPO/best-of-N/CoPG/OPA-DPO/GEPO) with offline or on-policy samples",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-demo", help="named configuration; other options override it")
    p.add_argument("--scheme", choices=sorted(PREFERENCE_SCHEMES), help="sample source x loss")
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
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--torch-threads", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", action="store_true", default=None)
    p.add_argument("--stop-after", type=int)
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.set_defaults(func=run_cli)
    return p


def run_cli(args) -> int:
    """Entry of ``polab train preference``."""
    opts = {k: v for k, v in vars(args).items() if k not in ("command", "algo", "preset", "func")}
    cfg = config_from_preset(args.preset, **opts)
    out = PreferenceTrainer(cfg).train()
    print(f"run folder: {out}\n  metrics: {out / 'metrics.csv'}\n  figure:  {out / 'figures' / 'reward.png'}")
    return 0
