r"""Preference fine-tuning of a causal LM with offline or on-policy samples (Tajwar et al., 2024) and registered losses.

One step is a pipeline (:meth:`PreferenceTrainer.train_step`):

1. **prompts**: ``prompts_per_step`` problems drawn from the task (any task of
   :mod:`polab.scaled.tasks`; the default ``length-target`` rewards responses of
   ``target_words`` words), seeded from ``(seed, step)``;
2. **samples**: ``samples_per_prompt`` responses per prompt from the scheme's
   source: the frozen **reference** model (offline data; a dataset drawn from
   the reference and consumed once is distributed exactly like these fresh
   draws, so every scheme spends the same number of samples and reward
   queries per step) or the current **policy** (on-policy), with
   :func:`polab.scaled.rollout.sample_rollouts` and a per-step ``torch.Generator``;
3. **reward**: the task scores each response;
4. **labels and loss**: the scheme (:data:`polab.scaled.methods.preference.PREFERENCE_LOSSES`)
   computes sequence log-probabilities under the policy and the reference, the pair labeller
   (:data:`~polab.scaled.methods.preference.PAIR_LABELLERS`: the reward, or the reference as AI judge)
   ranks the pairs, and the core loss follows;
5. **update**: one AdamW step (gradient clipping at ``max_grad_norm``).

The policy's reward is logged every step: for on-policy schemes it is the
mean reward of the training samples (draws from the current policy); for
offline schemes ``eval_samples_per_prompt`` extra policy samples per prompt
are drawn for evaluation only (not trained on, not counted in the budget).

Randomness: each step's prompt draw and samplers are seeded from ``(seed, step)``
(:func:`polab.scaled.trainers.base.step_seed`), so a step does not depend on
what ran before it and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..methods.preference import JUDGE_PRINCIPLE, PAIR_LABELLERS, PREFERENCE_LOSSES  # noqa: F401  (JUDGE_PRINCIPLE re-exported)
from ..models import EMBEDDED_MODEL, load_model
from ..rollout import RolloutBatch, sample_rollouts
from ..run_folder import read_metrics
from ..tasks.length_target import count_words
from . import base
from .base import StageTimer, StepResult, Trainer, TrainerConfig
from .grpo import _frozen_copy

__all__ = ["PreferenceConfig", "PreferenceSample", "PreferenceTrainer", "PRESETS", "config_from_preset", "plot_preference_run"]


@dataclass
class PreferenceConfig(TrainerConfig):
    """Hyperparameters of one preference fine-tuning run (single process)."""

    # model and task
    model: str = field(default=EMBEDDED_MODEL, metadata={"help": "smollm2-135m-instruct (embedded), tiny-llama, a local HF folder or a hub id"})
    task: str = field(default="length-target", metadata={"help": "task spec (polab.scaled.tasks.build_task): length-target, arithmetic, jsonl:PATH, ..."})
    target_words: int = field(default=3, metadata={"help": "length-target: the reward's peak in words"})
    reward_scale: float = field(default=4.0, metadata={"help": "length-target: reward decay length in words"})
    data: str | None = field(default=None, metadata={"help": "offline preference pairs (prompt/chosen/rejected): jsonl:PATH or hf-dataset:PATH; "
                                                              "offline schemes then train on them instead of reference samples"})
    # scheme and loss
    scheme: str = field(default="on-policy-dpo", metadata={"help": "sample source x loss: " + ", ".join(PREFERENCE_LOSSES.names()) + ", or a user's (--plugins MODULE)"})
    pair_labels: str = field(default="reward", metadata={"help": "who decides the winner of a pair: " + ", ".join(PAIR_LABELLERS.names())})
    beta: float = field(default=0.1, metadata={"help": "KL strength of DPO-type losses"})
    label_smoothing: float = field(default=0.0, metadata={"help": "> 0: conservative DPO"})
    ipo_target_margin: float | None = field(default=None, metadata={"help": "IPO target margin (unset: 1/(2 beta), as the IPO paper, TRL, OpenRLHF)"})
    negative_coef: float = field(default=0.1, metadata={"help": "coefficient of the best-of-N negative gradient"})
    pairing: str = field(default="all", metadata={"help": "within-prompt pairs", "choices": ("all", "best-worst")})
    average_logprobs: bool = field(default=False, metadata={"help": "token-mean sequence log-probabilities (TRL's IPO convention)"})
    # sampling
    prompts_per_step: int = field(default=4, metadata={"help": "prompts per step"})
    samples_per_prompt: int = field(default=4, metadata={"help": "responses per prompt"})
    eval_samples_per_prompt: int = field(default=2, metadata={"help": "offline schemes: policy samples per prompt for the logged reward"})
    max_new_tokens: int = field(default=24, metadata={"help": "response budget in tokens"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    # optimisation and run
    steps: int = field(default=20, metadata={"help": "training steps"})
    lr: float = field(default=1e-5, metadata={"help": "policy learning rate (AdamW)"})
    out: str = field(default="runs/preference", metadata={"help": "run folder"})

    method_fields: ClassVar[dict] = {"scheme": PREFERENCE_LOSSES, "pair_labels": PAIR_LABELLERS}
    kind: ClassVar[str] = "preference"

    def check(self, world_size: int = 1) -> list[str]:
        errs = []
        if world_size != 1:
            errs.append(f"the preference trainer runs in one process; got {world_size} (run it without torchrun)")
        try:
            scheme, labeller = self.method_class("scheme"), self.method_class("pair_labels")
            pairwise, on_policy, judges = scheme.pairwise, scheme.source == "policy", labeller.judges_samples
        except ValueError:  # an unknown name: reported by validate()
            pairwise, on_policy, judges = True, True, False
        if judges and not pairwise:
            errs.append(f"pair_labels={self.pair_labels!r} labels pairs; scheme {self.scheme!r} uses no pairs: choose a pairwise scheme "
                        "or pair_labels='reward'")
        if self.samples_per_prompt < 2:
            errs.append("samples_per_prompt must be >= 2: pairs and best-versus-rest need two responses per prompt")
        for name in ("prompts_per_step", "max_new_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                errs.append(f"{name} must be an integer >= 1, got {v!r}")
        if not (base._finite(self.temperature) and self.temperature > 0):
            errs.append(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not (base._finite(self.beta) and self.beta > 0):
            errs.append(f"beta must be > 0, got {self.beta!r}")
        if not 0 <= self.label_smoothing < 0.5:
            errs.append(f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing!r}")
        if self.pairing not in ("all", "best-worst"):
            errs.append(f"pairing must be 'all' or 'best-worst', got {self.pairing!r}")
        if self.data is not None and (on_policy or not pairwise or judges):
            errs.append(f"data: preference pairs feed an offline pairwise scheme with pair_labels='reward' (e.g. offline-dpo); got scheme "
                        f"{self.scheme!r}, pair_labels {self.pair_labels!r}")
        if self.eval_samples_per_prompt < 1 and not on_policy:
            errs.append("offline schemes need eval_samples_per_prompt >= 1 to measure the policy's reward")
        return errs


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


def config_from_preset(preset: str | None, **overrides) -> PreferenceConfig:
    """A PreferenceConfig from a named preset with keyword overrides (None values are ignored; old flat method options accepted)."""
    return base.config_from_preset(PreferenceConfig, PRESETS, preset, **overrides)


@dataclass
class PreferenceSample:
    """One step's prompts and samples. Shapes: ``rewards``, ``group_ids`` [n] (groups of G consecutive rows)."""

    step: int
    items: list
    prompts: list[str]
    batch: RolloutBatch
    rewards: torch.Tensor
    group_ids: torch.Tensor
    eval_texts: list[str]


class PreferenceTrainer(Trainer):
    """Composes task, sampler (reference or policy), reward, registered preference loss and optimizer.

    Parameters
    ----------
    config : PreferenceConfig
    dist_info : polab.scaled.distributed.DistInfo, optional
    task : object, optional
        Any task of the protocol of :mod:`polab.scaled.tasks` (``prompt``, ``sample``, ``reward``); overrides ``config.task``.
    """

    progress_metrics = {"policy_reward": "reward", "policy_words": "words", "time_step_s": "s"}

    @staticmethod
    def plot_run(run: Path) -> Path:
        return plot_preference_run(run)

    def build(self) -> None:
        cfg = self.cfg
        self.scheme, self.pair_labeller = self.methods["scheme"], self.methods["pair_labels"]
        self.label = f"preference[{self.scheme.name}]"
        self.task = self._task_override or self._build_task()
        self.pairs = None
        if cfg.data is not None:
            from ..tasks import load_preference_data

            self.pairs = load_preference_data(cfg.data)
        loaded = load_model(cfg.model, seed=cfg.seed)
        self.tokenizer = loaded.tokenizer
        self.policy = loaded.model.to(self.device)
        self.policy.train()
        self.ref = _frozen_copy(self.policy)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheme.setup(self)

    def _build_task(self):
        from ..tasks import accepted_options, build_task

        opts = {"target_words": self.cfg.target_words, "scale": self.cfg.reward_scale}
        allowed = accepted_options(self.cfg.task)
        return build_task(self.cfg.task, **{k: v for k, v in opts.items() if allowed is None or k in allowed})

    @property
    def critic(self):
        """The scheme's critic (Direct Advantage PO), else None."""
        return getattr(self.scheme, "critic", None)

    def metric_names(self) -> list[str]:
        return ["policy_reward", "sample_reward", "policy_words", "sample_words", "loss", "margin", "pair_accuracy", "num_pairs",
                "grad_norm", "truncated_rate", "time_sample_s", "time_train_s", "time_step_s"]

    # -- the step: prompts -> samples -> reward -> labels and loss -> update --------------------------------
    def train_step(self) -> StepResult:
        timer = StageTimer()
        sample = self.draw(self.step + 1)
        timer.lap("sample")
        out = self.scheme.compute(self, sample)
        grad_norm = self.update(out.loss)
        timer.lap("train")
        self.step = sample.step
        metrics = {
            "policy_reward": self._policy_reward(sample),
            "sample_reward": float(sample.rewards.mean()),
            "policy_words": float(np.mean([count_words(t) for t in sample.eval_texts])),
            "sample_words": float(np.mean([count_words(t) for t in sample.batch.texts])),
            "grad_norm": grad_norm,
            "truncated_rate": float(sample.batch.truncated.float().mean()),
            **out.metrics,
            **timer.metrics(),
        }
        return StepResult(sample.step, metrics, out.loss_inputs)

    def _policy_reward(self, sample) -> float:
        """The task's mean reward of the policy's samples (NaN on preference data, which has no reward function)."""
        if self.pairs is not None:
            return math.nan
        per = len(sample.eval_texts) // len(sample.items)
        return float(np.mean([self.reward_of(t, sample.items[i // per]) for i, t in enumerate(sample.eval_texts)]))

    def draw(self, step: int) -> PreferenceSample:
        """Prompts, training samples from the scheme's source, their rewards, and the policy's evaluation samples."""
        if self.pairs is not None:
            return self.draw_pairs(step)
        cfg, G = self.cfg, self.cfg.samples_per_prompt
        rng = np.random.default_rng(self.seed_for(step, "prompts", rank=0))
        sources = list(self.task.distributions)
        items = [self.task.sample(sources[i % len(sources)], rng=rng) for i in range(cfg.prompts_per_step)]
        prompts = [self.task.prompt(it) for it in items]
        source = self.policy if self.scheme.on_policy else self.ref
        batch = self._sample(source, prompts, G, "train", step)
        rewards = torch.tensor([self.reward_of(t, items[i // G]) for i, t in enumerate(batch.texts)], dtype=torch.float32)
        eval_texts = batch.texts if self.scheme.on_policy else self._sample(self.policy, prompts, cfg.eval_samples_per_prompt, "eval", step).texts
        return PreferenceSample(step=step, items=items, prompts=prompts, batch=batch, rewards=rewards,
                                group_ids=torch.arange(len(prompts)).repeat_interleave(G), eval_texts=eval_texts)

    def draw_pairs(self, step: int) -> PreferenceSample:
        """``prompts_per_step`` records of the preference data (each epoch in a fresh order seeded by (seed, epoch)) as
        two-response groups, chosen first: rewards (1, 0)."""
        from ..methods.sample_filters import assemble
        from ..rollout import encode_prompts

        cfg, n = self.cfg, len(self.pairs)
        picks = []
        for k in range((step - 1) * cfg.prompts_per_step, step * cfg.prompts_per_step):
            order = np.random.default_rng(self.seed_for(k // n, "data", rank=0)).permutation(n)
            picks.append(self.pairs[int(order[k % n])])
        prompts = [r["prompt"] for r in picks]
        p_ids, p_mask = encode_prompts(self.tokenizer, prompts)
        rows, eos = [], self.tokenizer.eos_token_id
        for i, r in enumerate(picks):
            for text in (r["chosen"], r["rejected"]):
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: cfg.max_new_tokens - 1] + [eos]
                rows.append(dict(prompt=p_ids[i][p_mask[i].bool()], response=torch.tensor(ids), text=text, truncated=False))
        batch = assemble(rows, self.tokenizer.pad_token_id, self.device)
        eval_texts = self._sample(self.policy, prompts, cfg.eval_samples_per_prompt, "eval", step).texts
        return PreferenceSample(step=step, items=[None] * len(picks), prompts=prompts, batch=batch,
                                rewards=torch.tensor([1.0, 0.0] * len(picks)), group_ids=torch.arange(len(picks)).repeat_interleave(2),
                                eval_texts=eval_texts)

    def _sample(self, model, prompts, n, stream: str, step: int):
        gen = torch.Generator(device=self.device).manual_seed(self.seed_for(step, stream, rank=0))
        return sample_rollouts(model, self.tokenizer, prompts, samples_per_prompt=n, max_new_tokens=self.cfg.max_new_tokens,
                               generator=gen, temperature=self.cfg.temperature)

    def update(self, loss) -> float:
        """One optimizer step on ``loss`` (none when the scheme found nothing to learn from); returns the gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        if loss is None:
            return 0.0
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm))
        self.optimizer.step()
        return grad_norm


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


# -- command line ----------------------------------------------------------


def main(argv=None) -> int:
    """``polab train preference``: options generated from :class:`PreferenceConfig` and the method groups."""
    import sys

    return base.cli_main(PreferenceTrainer, PreferenceConfig, PRESETS, sys.argv[1:] if argv is None else argv, prog="polab train preference",
                         default_preset="cpu-demo",
                         description="Preference fine-tuning (DPO/IPO/cDPO/best-of-N/CoPG/OPA-DPO/GEPO, Direct Advantage PO; "
                                     "reward or AI-feedback labels) with offline or on-policy samples.")
