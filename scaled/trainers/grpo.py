r"""GRPO trainer with a distribution-level curriculum (DUMP or uniform).

One training step composes, in order:

1. the curriculum scheduler (:mod:`polab.estimators.curriculum`) draws the
   distribution of each prompt of the global batch;
2. the task draws a puzzle from each distribution;
3. :func:`polab.scaled.rollout.generate_rollouts` samples ``samples_per_prompt``
   responses per prompt;
4. the task scores each response;
5. :mod:`polab.estimators.advantages` turns rewards into group-relative advantages
   (groups = prompts);
6. :func:`polab.estimators.policy_loss.ppo_clip_loss` gives the loss, which is
   backpropagated (micro-batched, weighted by
   :func:`polab.estimators.policy_loss.aggregation_weight` so that micro-batching
   and data parallelism reproduce the full-batch loss exactly);
7. per-response advantages and their sources are gathered from all ranks and
   fed to ``scheduler.update`` so that every rank holds the same state.

Methods beyond GRPO, selected by name (the defaults ``advantage="grpo"``,
``sample_filter="none"`` run exactly the steps above):

- ``advantage="spo_chain"`` (SPO-chain, :mod:`polab.estimators.spo`): step 5 splits
  each response at low-probability cutpoints, estimates the value of every
  segment start by ``spo_mc_samples`` continuations sampled from it (the
  prompt's value is its group's mean reward), gives each segment its value
  gain, and step 6 applies the loss to cutpoint tokens only (probability mask);
- ``advantage="ppo_gae"`` (PPO with GAE, the recipe of "Unpacking DPO and
  PPO"; :mod:`polab.estimators.gae`): a critic (:class:`ValueModel`) gives token
  values, the score sits on the last response token (minus the per-token KL
  penalty when ``kl_coef > 0``), GAE advantages are whitened as verl does,
  and the critic takes one clipped value-loss step per batch; with
  ``gae_truncation="bootstrap"`` responses cut at ``max_new_tokens`` are
  bootstrapped with the critic's value there (T-PPO's extended GAE);
- ``advantage="pcpg"`` (PCPG, :mod:`polab.estimators.reward_shaping`; tasks with a
  reference answer, ``task.reference(item) -> str``, e.g. arithmetic): each
  response token's reward is the drop in character edit distance to the
  reference that the characters it adds to the decoded response cause
  (:func:`~polab.estimators.reward_shaping.edit_distance_step_rewards` on the
  decoded text, normalised by the reference length, so a response's rewards
  sum to 1 - CER exactly); the token advantages are the per-token weights of
  the core :func:`~polab.estimators.reward_shaping.pcpg_loss` (rewards and losses
  pseudo-convolved with :func:`~polab.estimators.reward_shaping.pcpg_kernel`),
  read off by autograd: :math:`A_s = -N\,\partial L_{PCPG}/\partial\log\pi_s`
  with :math:`N` the token count, i.e. :math:`A_s = (T^\top\mathbf 1)_s(G_s - b)`
  for the banded Toeplitz matrix :math:`T` of the kernel. The baseline
  :math:`b_t` of token :math:`t` is the leave-one-out mean of :math:`G_t` over
  the other responses of its group that reach position :math:`t`
  (``pcpg_baseline="loo"``, :func:`~polab.estimators.advantages.rloo_advantages`
  per position; it does not depend on the response's own tokens, so the
  gradient stays unbiased; a response alone at a position gets advantage 0
  there) or their plain group mean (``"group_mean"``), where :math:`G_t` are
  the returns of the convolved rewards (a per-position baseline, because
  :math:`G_t` shrinks along the response; a constant one would push late
  tokens systematically). With one optimisation pass the PPO loss (ratio 1)
  has exactly the core PCPG loss's gradient under ``aggregation="token-mean"``
  (tested). The task reward stays the logged metric; the curriculum sees the
  PCPG advantages;
- ``sample_filter="pf_ppo_best_worst"`` / ``"pf_ppo_best_random"`` (PF-PPO,
  :func:`polab.estimators.sample_filters.policy_filtration`): only each prompt's
  best and worst (or best and one random) response enter the advantage and
  the loss;
- ``sample_filter="ssb"`` (Skywork R1V2's Selective Sample Buffer): groups
  whose advantages all vanish are replaced by buffered groups drawn with
  probability proportional to their mean |advantage|, and this step's
  informative groups are buffered;
- ``sample_filter="arpo"`` (ARPO): an all-failed group gets one buffered
  success of the same prompt in place of one of its responses, then this
  step's successes are buffered.

Replayed samples are trained on as the current policy's (the loss's old
log-probabilities are recomputed, as verl recomputes them), and replay
buffers are per rank and saved in checkpoints. GiGPO and POAD/BAD need
multi-step environments and have core estimators only
(:mod:`polab.estimators.gigpo`, :mod:`polab.estimators.action_decomposition`).

The core functions are called unchanged. Under ``torchrun`` the model is
wrapped in DistributedDataParallel (gloo on CPU, NCCL on GPU).

Randomness: each step's random streams (curriculum draw, puzzle draw, and
the token sampler's generator; torch's global RNG when ``rollout_engine="hf"``,
since ``generate`` reads only that; also before SPO-chain's continuations,
which use ``generate``) are seeded from ``(seed, step, rank)`` at
the start of the step. Hence a step's randomness does not depend
on what ran before it, and a run resumed from a checkpoint continues exactly
as the uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from polab.estimators.advantages import broadcast_to_tokens, group_advantages, rloo_advantages, sequence_advantages
from polab.estimators.curriculum import make_scheduler
from polab.estimators.gae import clipped_value_loss, extended_gae, kl_shaped_rewards, token_gae
from polab.estimators.policy_loss import AGGREGATIONS, aggregation_weight, ppo_clip_loss
from polab.estimators.reward_shaping import edit_distance_step_rewards, pcpg_kernel, pcpg_loss
from polab.estimators.sample_filters import ARPOReplayBuffer, SelectiveSampleBuffer, policy_filtration
from polab.estimators.spo import chain_segment_advantages, cutpoint_mask, cutpoint_segments, segment_starts

from .. import distributed as D
from ..checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ..models import EMBEDDED_MODEL, load_model
from ..rollout import PrefixSharedLogprobs, RolloutBatch, continuation_texts, generate_rollouts, sample_rollouts, token_logprobs
from ..run_folder import RunLogger, add_run_arguments
from ..tasks.arithmetic import ArithmeticTask
from ..tasks.knights_knaves import KnightsKnavesTask

#: Task classes by name; each takes (levels, *, puzzles_per_size, seed).
TASKS = {"kk": KnightsKnavesTask, "arithmetic": ArithmeticTask}

__all__ = ["GRPOConfig", "GRPOTrainer", "PRESETS", "step_seed"]

#: ``--advantage``: group-relative estimators of :mod:`polab.estimators.advantages`, and SPO-chain
#: (:mod:`polab.estimators.spo`: cutpoint segments, Monte Carlo values at segment starts, probability-mask loss).
#: ``ppo_gae``: PPO with a critic and token-level GAE (the recipe of "Unpacking DPO and PPO";
#: :mod:`polab.estimators.gae`), truncated responses bootstrapped with T-PPO's extended GAE when
#: ``gae_truncation="bootstrap"``.
#: ``pcpg``: PCPG's pseudo-convolved edit-distance step rewards (tasks with a reference answer).
ADVANTAGE_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "grpo_batch_std", "spo_chain", "ppo_gae", "pcpg")
#: ``pcpg_baseline``: per position t, the leave-one-out or plain group mean of the returns G_t, or none.
PCPG_BASELINES = ("loo", "group_mean", "none")
#: ``--sample-filter``: which samples the update sees (:mod:`polab.estimators.sample_filters`).
#: PF-PPO's best-worst / best-random filtration per prompt, Skywork R1V2's Selective Sample
#: Buffer (zero-variance groups swapped for buffered groups), ARPO's per-task replay of successes.
SAMPLE_FILTERS = ("none", "pf_ppo_best_worst", "pf_ppo_best_random", "ssb", "arpo")


@dataclass
class GRPOConfig:
    """Hyperparameters of a GRPO run. Batch sizes are global (all ranks together)."""

    # model and task
    model: str = EMBEDDED_MODEL
    task: str = "kk"  # "kk" (Knights-and-Knaves, the DUMP paper's) or "arithmetic"
    levels: tuple[int, ...] = (3, 4, 5, 6)  # people per puzzle (kk) or digits per operand (arithmetic)
    puzzles_per_size: int = 200
    task_seed: int = 1234
    # curriculum
    curriculum: str = "dump"
    dump_window: int = 300
    dump_exploration: float = 1.0
    dump_temperature: float = 0.1
    dump_bonus: str = "code"
    # rollout
    prompts_per_step: int = 8
    samples_per_prompt: int = 4
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    rollout_engine: str = "shared-prefix"  # "shared-prefix" (polab's KV-cache sampler) or "hf" (transformers generate)
    shared_prefix_logprobs: bool = True  # one prompt pass per group in the training forward (exact; see polab.scaled.rollout)
    # advantage and loss
    advantage: str = "grpo"
    std_convention: str = "verl"
    aggregation: str = "token-mean"
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    # SPO-chain (advantage="spo_chain")
    spo_threshold: float = 0.9  # cutpoint: sampling probability below this
    spo_cutpoints_per_segment: int = 2  # the paper's "interval"
    spo_mc_samples: int = 2  # continuations per segment start for its Monte Carlo value
    spo_probability_mask: bool = True  # policy loss on cutpoint tokens only
    # PPO with GAE (advantage="ppo_gae"); gamma 1 and lambda 0.95 as TRL's PPOConfig (polab.estimators.gae.PPO_RECIPE_DEFAULTS)
    gae_gamma: float = 1.0
    gae_lambda: float = 0.95
    gae_truncation: str = "terminal"  # "terminal" (PPO) or "bootstrap" (T-PPO's EGAE at the cut)
    gae_kl_in_reward: bool = True  # kl_coef enters the token rewards (the RLHF PPO recipe), not the loss
    value_lr: float = 1e-5
    value_clip: float = 0.2
    # PCPG (advantage="pcpg"); the kernel size and weights of the paper are unconfirmed (polab.estimators.reward_shaping)
    pcpg_kernel_size: int = 3
    pcpg_kernel: str = "uniform"  # "uniform" or "gaussian" (std size/4)
    pcpg_gamma: float = 1.0
    pcpg_baseline: str = "loo"
    # sample filters
    sample_filter: str = "none"
    ssb_capacity: int = 64  # groups held by the Selective Sample Buffer
    arpo_capacity: int = 8  # successful trajectories kept per task
    arpo_success_threshold: float = 0.1
    # optimisation
    steps: int = 10
    lr: float = 5e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    micro_batch_size: int = 0  # responses per forward/backward on one rank; 0 = all at once
    # run
    seed: int = 0
    out: str = "runs/grpo"
    device: str = "auto"
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    resume: bool = False
    stop_after: int | None = None  # stop (as if interrupted) after this many steps of this invocation
    tensorboard: bool = True
    progress: bool = True

    def validate(self, world_size: int = 1) -> None:
        errs = []
        if self.curriculum not in ("dump", "uniform"):
            errs.append(f"curriculum must be 'dump' or 'uniform', got {self.curriculum!r}")
        if self.advantage not in ADVANTAGE_ESTIMATORS:
            errs.append(f"advantage must be one of {ADVANTAGE_ESTIMATORS}, got {self.advantage!r}")
        if self.sample_filter not in SAMPLE_FILTERS:
            errs.append(f"sample_filter must be one of {SAMPLE_FILTERS}, got {self.sample_filter!r}")
        if self.advantage == "spo_chain":
            if not 0 < self.spo_threshold <= 1:
                errs.append("spo_threshold must lie in (0, 1]")
            if self.spo_cutpoints_per_segment < 1 or self.spo_mc_samples < 1:
                errs.append("spo_cutpoints_per_segment and spo_mc_samples must be >= 1")
        if self.advantage == "ppo_gae":
            if not (0 <= self.gae_gamma <= 1 and 0 <= self.gae_lambda <= 1):
                errs.append("gae_gamma and gae_lambda must lie in [0, 1]")
            if self.gae_truncation not in ("terminal", "bootstrap"):
                errs.append(f"gae_truncation must be 'terminal' or 'bootstrap', got {self.gae_truncation!r}")
        if self.advantage == "pcpg":
            if self.pcpg_kernel_size < 1 or self.pcpg_kernel_size % 2 == 0:
                errs.append(f"pcpg_kernel_size must be a positive odd integer (a centred window), got {self.pcpg_kernel_size}")
            if self.pcpg_kernel not in ("uniform", "gaussian"):
                errs.append(f"pcpg_kernel must be 'uniform' or 'gaussian', got {self.pcpg_kernel!r}")
            if not 0 <= self.pcpg_gamma <= 1:
                errs.append("pcpg_gamma must lie in [0, 1]")
            if self.pcpg_baseline not in PCPG_BASELINES:
                errs.append(f"pcpg_baseline must be one of {PCPG_BASELINES}, got {self.pcpg_baseline!r}")
            if self.task == "kk":
                errs.append("advantage='pcpg' needs a task with a reference answer string: use task='arithmetic' (kk has none)")
        if self.ssb_capacity < 1 or self.arpo_capacity < 1:
            errs.append("ssb_capacity and arpo_capacity must be >= 1")
        if self.aggregation not in AGGREGATIONS:
            errs.append(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.samples_per_prompt < 2:
            errs.append("samples_per_prompt must be >= 2: group-relative advantages need at least two responses per prompt")
        if self.prompts_per_step < 1 or self.prompts_per_step % world_size:
            errs.append(f"prompts_per_step ({self.prompts_per_step}) must be a positive multiple of the number of processes ({world_size})")
        if self.rollout_engine not in ("shared-prefix", "hf"):
            errs.append(f"rollout_engine must be 'shared-prefix' or 'hf', got {self.rollout_engine!r}")
        if self.micro_batch_size and self.micro_batch_size % self.samples_per_prompt:
            errs.append(f"micro_batch_size ({self.micro_batch_size}) must be a multiple of samples_per_prompt ({self.samples_per_prompt}): micro-batches hold whole groups")
        if self.steps < 1:
            errs.append("steps must be >= 1")
        if self.task not in TASKS:
            errs.append(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        if not self.levels:
            errs.append("levels is empty: give the puzzle sizes (kk) or digit counts (arithmetic), one distribution each")
        if self.kl_coef < 0:
            errs.append("kl_coef must be >= 0")
        if errs:
            raise ValueError("invalid GRPO configuration:\n  - " + "\n  - ".join(errs))


#: Named configurations. ``cpu-demo`` is the README's main job.
PRESETS: dict[str, dict] = {
    # The README's main job: the 135M model solves one-digit sums sometimes and longer ones
    # almost never, so DUMP has an easy, learnable distribution to find among hard ones.
    "cpu-demo": dict(model=EMBEDDED_MODEL, task="arithmetic", levels=(1, 2, 3, 4), prompts_per_step=8, samples_per_prompt=4,
                     max_new_tokens=12, steps=12, checkpoint_every=4, lr=1e-5),
    # Knights-and-Knaves on the embedded model (the paper's task; the 135M model rarely earns a non-minimal reward).
    "cpu-kk": dict(model=EMBEDDED_MODEL, task="kk", levels=(3, 4, 5, 6), prompts_per_step=4, samples_per_prompt=4, max_new_tokens=48,
                   steps=8, checkpoint_every=4, lr=5e-6),
    "tiny": dict(model="tiny-llama", task="arithmetic", levels=(1, 2), prompts_per_step=2, samples_per_prompt=4, max_new_tokens=6, steps=2,
                 checkpoint_every=1, lr=1e-3, tensorboard=False, progress=False),
    # DUMP's setting (theory_core.md 1.4): 12 K&K distributions, 128 prompts x 16, KL loss 0.001 low_var_kl; needs GPUs.
    "dump-paper": dict(task="kk", levels=tuple(range(3, 15)), prompts_per_step=128, samples_per_prompt=16, max_new_tokens=4096, steps=300, lr=1e-6, kl_coef=0.001, kl_estimator="k3", checkpoint_every=25),
}


def step_seed(seed: int, step: int, rank: int, stream: str) -> int:
    """A 63-bit seed that is a pure function of (seed, step, rank, stream name)."""
    h = hashlib.sha256(f"{seed}:{step}:{rank}:{stream}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


class _FullLogprobs(torch.nn.Module):
    """Response log-probabilities from one full forward pass per response (no prompt sharing)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, prompt_length: int, group_size: int, temperature: float = 1.0):
        return token_logprobs(self.lm, input_ids, attention_mask, prompt_length, temperature=temperature)


class ValueModel(torch.nn.Module):
    """Critic for ``advantage="ppo_gae"``: a copy of the policy's network with a scalar head on its last hidden state.

    ``forward(input_ids, attention_mask, prompt_length)`` returns [batch, T + 1]:
    column ``t < T`` is the value of the state before response token ``t``
    (read at the position of the token before it), column ``T`` the value
    after the last position (the bootstrap of truncated responses is picked
    per row by the trainer). Initialised from the policy (Ivison et al. 2024
    initialise it from the reward model, which verifiable tasks do not have);
    the head starts at zero.
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = copy.deepcopy(lm)
        self.lm.train()
        hidden = self.lm.config.hidden_size
        self.head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, prompt_length: int):
        from ..rollout import position_ids_from_mask

        # the decoder stack alone (its last hidden state, after the final norm): no vocabulary projection needed
        body = self.lm.get_decoder()
        out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        h = out.last_hidden_state[:, prompt_length - 1:, :].float()
        return self.head(h).squeeze(-1)


@dataclass
class StepResult:
    step: int
    metrics: dict
    loss_inputs: dict = field(repr=False, default_factory=dict)


class GRPOTrainer:
    """Composes task, rollout, reward, core advantage, core loss and curriculum.

    Parameters
    ----------
    config : GRPOConfig
    dist_info : polab.scaled.distributed.DistInfo, optional
        Defaults to :func:`polab.scaled.distributed.init_distributed` (single process without torchrun).
    """

    def __init__(self, config: GRPOConfig, dist_info: D.DistInfo | None = None, *, task=None):
        self.cfg = config
        self.dist = dist_info or D.init_distributed(config.device)
        config.validate(self.dist.world_size)
        self.out = Path(config.out)
        # ``task`` overrides config.task with any object of the same interface
        # (distributions, sample(source, rng=), prompt(item), reward(text, item)).
        self.task = task if task is not None else TASKS[config.task](tuple(config.levels), puzzles_per_size=config.puzzles_per_size, seed=config.task_seed)
        self.sources = list(self.task.distributions)
        if config.advantage == "pcpg" and not callable(getattr(self.task, "reference", None)):
            raise ValueError("advantage='pcpg' needs a task with a reference answer: task.reference(item) -> str "
                             "(polab.scaled.tasks.arithmetic.ArithmeticTask has one); choose another advantage for this task.")
        sched_kwargs = {}
        if config.curriculum == "dump":
            sched_kwargs = dict(window=config.dump_window, exploration=config.dump_exploration, temperature=config.dump_temperature, bonus=config.dump_bonus)
        self.scheduler = make_scheduler(config.curriculum, self.sources, **sched_kwargs)

        loaded = load_model(config.model, seed=config.seed)
        self.tokenizer = loaded.tokenizer
        self.policy = loaded.model.to(self.dist.device)
        self.policy.train()
        self.ref = None
        if config.kl_coef > 0:
            self.ref = copy.deepcopy(self.policy).eval()
            for p in self.ref.parameters():
                p.requires_grad_(False)
        # The module whose forward gives response log-probabilities; DDP wraps it.
        self.logprob_module = PrefixSharedLogprobs(self.policy) if config.shared_prefix_logprobs else _FullLogprobs(self.policy)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.logprob_module, device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None)
        else:
            self.model = self.logprob_module
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.critic = self.critic_model = self.critic_optimizer = None
        if config.advantage == "ppo_gae":
            self.critic = ValueModel(self.policy).to(self.dist.device)
            self.critic_model = self.critic
            if self.dist.enabled:
                from torch.nn.parallel import DistributedDataParallel as DDP

                # the copied output projection takes no part in the value (unless tied to the embedding)
                self.critic_model = DDP(self.critic, device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None,
                                        find_unused_parameters=True)
            self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=config.value_lr, weight_decay=config.weight_decay)
        # per-rank replay state of the sample filters that keep one (each rank replays its own groups)
        self.filter_buffer = None
        if config.sample_filter == "ssb":
            self.filter_buffer = SelectiveSampleBuffer(capacity=config.ssb_capacity)
        elif config.sample_filter == "arpo":
            self.filter_buffer = ARPOReplayBuffer(capacity_per_task=config.arpo_capacity, success_threshold=config.arpo_success_threshold)
        self.step = 0
        resume_step = None
        if config.resume:
            ckpt = latest_checkpoint(self.out)
            if ckpt is None:
                raise FileNotFoundError(f"--resume was given but {self.out}/checkpoints has no checkpoint; drop --resume to start a new run.")
            self._load(load_checkpoint(ckpt))
            resume_step = self.step
        elif self.dist.is_main and (self.out / "checkpoints" / "latest").exists():
            raise FileExistsError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out.")
        self.logger = None
        if self.dist.is_main:
            self.logger = RunLogger(self.out, self._config_dict(), self.metric_names(), resume_step=resume_step, tensorboard=config.tensorboard)

    # ------------------------------------------------------------------
    def _config_dict(self) -> dict:
        d = dataclasses.asdict(self.cfg)
        d["world_size"] = self.dist.world_size
        d["model_source"] = str(getattr(self.policy, "name_or_path", ""))
        return d

    def metric_names(self) -> list[str]:
        names = ["reward_mean", "answer_score_mean", "format_ok_rate", "accuracy", "loss", "policy_loss", "kl",
                 "clip_fraction", "grad_norm", "response_length", "truncated_rate", "zero_variance_groups",
                 "time_rollout_s", "time_train_s", "time_step_s"]
        for s in self.sources:
            names += [f"prob:{s}", f"learnability:{s}", f"answer_score:{s}", f"count:{s}"]
        if self.cfg.advantage == "spo_chain":
            names += ["spo_segments", "spo_cutpoint_fraction"]
        if self.cfg.advantage == "ppo_gae":
            names += ["value_loss", "value_clip_fraction", "value_mean"]
        if self.cfg.advantage == "pcpg":
            names += ["pcpg_one_minus_cer"]
        if self.cfg.sample_filter != "none":
            names += ["filtered_rows", "replaced_rows", "buffer_size"]
        return names

    def _state(self) -> dict:
        return {
            "step": self.step,
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": dataclasses.asdict(self.cfg),
            "world_size": self.dist.world_size,
            **({"critic": self.critic.state_dict(), "critic_optimizer": self.critic_optimizer.state_dict()} if self.critic is not None else {}),
        }

    def _load(self, state: dict) -> None:
        if state.get("world_size", 1) != self.dist.world_size:
            raise ValueError(
                f"checkpoint was written by {state['world_size']} processes but this run has {self.dist.world_size}; "
                "resume with the same number of processes (per-rank random streams depend on it)."
            )
        self.policy.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if self.filter_buffer is not None and "sample_filter" in state:
            self.filter_buffer.load_state_dict(state["sample_filter"][self.dist.rank])
        self.step = int(state["step"])

    # ------------------------------------------------------------------
    def _draw_prompts(self, step: int):
        cfg, info = self.cfg, self.dist
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, 0, "curriculum"))
        src_idx = self.scheduler.sample(cfg.prompts_per_step, generator=gen).tolist()
        rng = np.random.default_rng(step_seed(cfg.seed, step, 0, "puzzles"))
        puzzles = [self.task.sample(self.sources[j], rng=rng) for j in src_idx]
        per = cfg.prompts_per_step // info.world_size
        lo, hi = info.rank * per, (info.rank + 1) * per
        return src_idx[lo:hi], puzzles[lo:hi]

    def _advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor):
        cfg = self.cfg
        if cfg.advantage == "grpo":
            return group_advantages(rewards, group_ids, scale="group", convention=cfg.std_convention)
        if cfg.advantage == "grpo_batch_std":
            return group_advantages(rewards, group_ids, scale="batch", convention=cfg.std_convention)
        if cfg.advantage == "dr_grpo":
            return group_advantages(rewards, group_ids, scale="none")
        return rloo_advantages(rewards, group_ids)

    def train_step(self) -> StepResult:
        """Run one GRPO step (all ranks must call it together)."""
        cfg, info = self.cfg, self.dist
        step = self.step + 1
        t0 = time.perf_counter()
        src_local, puzzles = self._draw_prompts(step)
        prompts = [self.task.prompt(p) for p in puzzles]
        gen_seed = step_seed(cfg.seed, step, info.rank, "generate")
        if cfg.rollout_engine == "hf":
            torch.manual_seed(gen_seed)  # transformers' generate reads only the global RNG
            batch = generate_rollouts(self.policy, self.tokenizer, prompts, samples_per_prompt=cfg.samples_per_prompt,
                                      max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            gen = torch.Generator(device=info.device).manual_seed(gen_seed)
            batch = sample_rollouts(self.policy, self.tokenizer, prompts, samples_per_prompt=cfg.samples_per_prompt,
                                    max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, generator=gen)
        t1 = time.perf_counter()
        G = cfg.samples_per_prompt
        rewards_obj = [self.task.reward(text, puzzles[i // G]) for i, text in enumerate(batch.texts)]
        rewards = torch.tensor([r.total for r in rewards_obj], dtype=torch.float32)
        group_ids = torch.arange(len(puzzles)).repeat_interleave(G)
        extra = {}
        fresh_mask, fresh_truncated = batch.response_mask.to(torch.float32), batch.truncated
        if cfg.sample_filter == "arpo":
            batch, rewards, extra = self._arpo_inject(step, batch, rewards, group_ids, prompts)
        adv = self._advantages(rewards, group_ids)
        resp_mask = batch.response_mask.to(torch.float32)
        loss_mask = resp_mask
        curriculum_adv = adv.advantages
        if cfg.sample_filter in ("pf_ppo_best_worst", "pf_ppo_best_random"):
            curriculum_adv, loss_mask, extra = self._pf_ppo_filter(step, rewards, group_ids, resp_mask)
        gae = pcpg = None
        if cfg.advantage == "ppo_gae":
            gae = self._ppo_gae(batch, rewards, resp_mask)
            token_adv = gae["advantages"] * loss_mask
            curriculum_adv = sequence_advantages(token_adv, resp_mask).to(rewards.dtype).cpu()
        elif cfg.advantage == "spo_chain":
            token_adv, cut_mask, spo_extra = self._spo_chain(step, batch, rewards, group_ids, puzzles, resp_mask)
            extra.update(spo_extra)
            curriculum_adv = sequence_advantages(token_adv, resp_mask).to(rewards.dtype).cpu()
            loss_mask = loss_mask * cut_mask
        elif cfg.advantage == "pcpg":
            pcpg = self._pcpg(batch, puzzles, group_ids, resp_mask)
            token_adv = pcpg["advantages"].to(info.device, torch.float32) * loss_mask
            curriculum_adv = sequence_advantages(token_adv, resp_mask).to(rewards.dtype).cpu()
            extra["pcpg_one_minus_cer"] = float(pcpg["step_rewards"].sum(1).mean())
        else:
            token_adv = broadcast_to_tokens(curriculum_adv.to(info.device), resp_mask)
        if cfg.sample_filter == "ssb":
            batch, token_adv, loss_mask, extra = self._ssb_replace(step, batch, token_adv, loss_mask)
            resp_mask = batch.response_mask.to(torch.float32)

        # global normalisers so that micro-batches and ranks reproduce the full-batch aggregate
        n_local = resp_mask.shape[0]
        tot_tokens, tot_seqs = D.all_reduce_sum([float(loss_mask.sum()), float((loss_mask.sum(1) > 0).sum())], info)
        batch_total = n_local * info.world_size
        mb = cfg.micro_batch_size or n_local
        old_logp = None  # one optimisation pass per batch: the sampling policy is the current one
        loss_val = policy_val = kl_val = 0.0
        clip_num = 0.0
        loss_inputs = {}
        self.optimizer.zero_grad(set_to_none=True)
        for lo in range(0, n_local, mb):
            sl = slice(lo, lo + mb)
            ids, att, m = batch.input_ids[sl], batch.attention_mask[sl], loss_mask[sl]
            logp = self.model(ids, att, batch.prompt_length, G, cfg.temperature)
            ref_logp = None
            if self.ref is not None:
                with torch.no_grad():
                    ref_logp = token_logprobs(self.ref, ids, att, batch.prompt_length, temperature=cfg.temperature)
            old = logp.detach() if old_logp is None else old_logp[sl]
            res = ppo_clip_loss(logp, old, token_adv[sl], m, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                                dual_clip=cfg.dual_clip, aggregation=cfg.aggregation, max_length=cfg.max_new_tokens,
                                ref_logp=ref_logp, kl_coef=self._loss_kl_coef(), kl_estimator=cfg.kl_estimator)
            w = aggregation_weight(m, tot_tokens, tot_seqs, cfg.aggregation, batch_total=batch_total)
            # DDP averages gradients over ranks; multiplying by world_size makes that average a sum of shares.
            (res.loss * (w * info.world_size)).backward()
            loss_val += float(res.loss.detach()) * w
            policy_val += float(res.policy_loss.detach()) * w
            kl_val += float(res.kl.detach()) * w
            clip_num += res.clip_fraction * float(m.sum())
            if lo == 0 and cfg.micro_batch_size in (0, n_local):
                loss_inputs = dict(logp=logp.detach(), old_logp=old.detach(), advantages=token_adv.detach(), mask=m,
                                   ref_logp=None if ref_logp is None else ref_logp.detach(), loss=res.loss.detach())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm))
        self.optimizer.step()
        if gae is not None and loss_inputs:
            loss_inputs.update(token_rewards=gae["token_rewards"], values=gae["values"], returns=gae["returns"], truncated=batch.truncated)
        if pcpg is not None and loss_inputs:
            loss_inputs.update(pcpg_step_rewards=pcpg["step_rewards"], pcpg_baseline=pcpg["baseline"], pcpg_kernel=pcpg["kernel"],
                               pcpg_texts=pcpg["texts"], pcpg_references=pcpg["references"])
        if gae is not None:
            extra.update(self._critic_update(batch, gae, resp_mask, tot_tokens, tot_seqs, batch_total, mb, n_local))
        t2 = time.perf_counter()

        # curriculum statistics from every rank, so all ranks hold the same scheduler state
        seq_adv = curriculum_adv.tolist()
        src_resp = [s for s in src_local for _ in range(G)]
        local = dict(src=src_resp, adv=seq_adv, total=[r.total for r in rewards_obj], answer=[r.answer_score for r in rewards_obj],
                     fmt=[r.format_score > 0 for r in rewards_obj], correct=[r.correct for r in rewards_obj],
                     length=fresh_mask.sum(1).tolist(), trunc=fresh_truncated.tolist(), zv=adv.num_zero_variance_groups,
                     loss=[loss_val, policy_val, kl_val, clip_num])
        parts = D.all_gather_objects(local, info)
        g = {k: [x for p in parts for x in (p[k] if isinstance(p[k], list) else [p[k]])] for k in local if k != "loss"}
        self.scheduler.update(g["src"], np.asarray(g["adv"], dtype=np.float64))
        self.step = step

        loss_sum = np.sum([p["loss"] for p in parts], axis=0)
        metrics = {
            "reward_mean": float(np.mean(g["total"])),
            "answer_score_mean": float(np.mean(g["answer"])),
            "format_ok_rate": float(np.mean(g["fmt"])),
            "accuracy": float(np.mean(g["correct"])),
            "loss": float(loss_sum[0]),
            "policy_loss": float(loss_sum[1]),
            "kl": float(loss_sum[2]),
            "clip_fraction": float(loss_sum[3] / max(tot_tokens, 1.0)),
            "grad_norm": grad_norm,
            "response_length": float(np.mean(g["length"])),
            "truncated_rate": float(np.mean(g["trunc"])),
            "zero_variance_groups": float(np.sum(g["zv"])),
            "time_rollout_s": t1 - t0,
            "time_train_s": t2 - t1,
            "time_step_s": time.perf_counter() - t0,
        }
        snap = self.scheduler.snapshot()
        src_arr = np.asarray(g["src"])
        ans = np.asarray(g["answer"])
        for j, s in enumerate(self.sources):
            metrics[f"prob:{s}"] = float(snap.probabilities[j])
            metrics[f"learnability:{s}"] = float(snap.learnability[j])
            metrics[f"count:{s}"] = float(snap.counts[j])
            sel = src_arr == j
            metrics[f"answer_score:{s}"] = float(ans[sel].mean()) if sel.any() else math.nan
        if extra:
            keys = ("filtered_rows", "replaced_rows", "buffer_size", "spo_segments", "spo_cutpoint_fraction", "value_loss", "value_clip_fraction", "value_mean",
                    "pcpg_one_minus_cer")
            sums = D.all_reduce_sum([float(extra.get(k, 0.0)) for k in keys], info)
            for k, v in zip(("filtered_rows", "replaced_rows", "buffer_size"), sums[:3]):
                if cfg.sample_filter != "none":
                    metrics[k] = v
            if cfg.advantage == "spo_chain":
                metrics["spo_segments"] = sums[3] / info.world_size
                metrics["spo_cutpoint_fraction"] = sums[4] / info.world_size
            if cfg.advantage == "ppo_gae":
                metrics["value_loss"] = sums[5]  # already weighted by each rank's share
                metrics["value_clip_fraction"] = sums[6] / info.world_size
                metrics["value_mean"] = sums[7] / info.world_size
            if cfg.advantage == "pcpg":
                metrics["pcpg_one_minus_cer"] = sums[8] / info.world_size
        return StepResult(step=step, metrics=metrics, loss_inputs=loss_inputs)

    # -- methods beyond GRPO (selected by ``advantage`` and ``sample_filter``) --------------
    def _loss_kl_coef(self) -> float:
        cfg = self.cfg
        return 0.0 if (cfg.advantage == "ppo_gae" and cfg.gae_kl_in_reward) else cfg.kl_coef

    @torch.no_grad()
    def _ppo_gae(self, batch, rewards, resp_mask) -> dict:
        """Token rewards (score on the last token, minus the KL penalty if asked), critic values, GAE (verl whitening)."""
        cfg, G = self.cfg, self.cfg.samples_per_prompt
        dev = self.dist.device
        v_all = self.critic(batch.input_ids, batch.attention_mask, batch.prompt_length)
        T = resp_mask.shape[1]
        values = v_all[:, :T]
        scores = rewards.to(dev, torch.float32)
        if self.ref is not None and cfg.gae_kl_in_reward and cfg.kl_coef > 0:
            logp = self.logprob_module(batch.input_ids, batch.attention_mask, batch.prompt_length, G, cfg.temperature)
            ref = token_logprobs(self.ref, batch.input_ids, batch.attention_mask, batch.prompt_length, temperature=cfg.temperature)
            tok_r = kl_shaped_rewards(scores, logp, ref, resp_mask, kl_coef=cfg.kl_coef)
        else:
            tok_r = kl_shaped_rewards(scores, values, values, resp_mask, kl_coef=0.0)
        if cfg.gae_truncation == "bootstrap":
            # value after the last generated token of each row: column (length) of v_all
            lengths = resp_mask.sum(1).long()
            boot = v_all[torch.arange(v_all.shape[0], device=dev), lengths]
            res = extended_gae(tok_r, values, resp_mask, batch.truncated.to(dev), boot, gamma=cfg.gae_gamma, lambda_=cfg.gae_lambda, whiten="verl")
        else:
            res = token_gae(tok_r, values, resp_mask, gamma=cfg.gae_gamma, lambda_=cfg.gae_lambda, whiten="verl")
        return {"advantages": res.advantages, "returns": res.returns, "values": values, "token_rewards": tok_r}

    def _critic_update(self, batch, gae, resp_mask, tot_tokens, tot_seqs, batch_total, mb, n_local) -> dict:
        """One clipped value-loss pass (polab.estimators.gae.clipped_value_loss), micro-batched like the policy loss."""
        cfg, info = self.cfg, self.dist
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss_val = frac_num = 0.0
        T = resp_mask.shape[1]
        for lo in range(0, n_local, mb):
            sl = slice(lo, lo + mb)
            m = resp_mask[sl]
            vp = self.critic_model(batch.input_ids[sl], batch.attention_mask[sl], batch.prompt_length)[:, :T]
            res = clipped_value_loss(vp, gae["values"][sl], gae["returns"][sl], m, clip_range=cfg.value_clip,
                                     aggregation=cfg.aggregation, max_length=cfg.max_new_tokens)
            w = aggregation_weight(m, tot_tokens, tot_seqs, cfg.aggregation, batch_total=batch_total)
            (res.loss * (w * info.world_size)).backward()
            loss_val += float(res.loss.detach()) * w
            frac_num += res.clip_fraction * float(m.sum())
        torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
        self.critic_optimizer.step()
        vm = float((gae["values"] * resp_mask).sum() / resp_mask.sum().clamp_min(1.0))
        return {"value_loss": loss_val, "value_clip_fraction": frac_num / max(float(resp_mask.sum()), 1.0), "value_mean": vm}

    def _pcpg(self, batch, puzzles, group_ids, resp_mask) -> dict:
        """PCPG: edit-distance step rewards per response token, then token advantages from the core PCPG loss (float64, CPU)."""
        cfg, G = self.cfg, self.cfg.samples_per_prompt
        m = resp_mask.detach().double().cpu()
        n, T = m.shape
        P = batch.prompt_length
        step_r = torch.zeros((n, T), dtype=torch.float64)
        texts, refs = [], []
        for i in range(n):
            L = int(m[i].sum())
            toks = batch.input_ids[i, P:P + L].tolist()
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            texts.append(text)
            refs.append(self.task.reference(puzzles[i // G]))
            char_r = edit_distance_step_rewards(list(text), list(refs[-1]), normalise=True)
            # token t owns the characters it appends to the decoded prefix; all characters are assigned once, so a row
            # sums to 1 - CER whatever the tokenizer does (a prefix that decodes inconsistently passes its characters on)
            start = 0
            for t in range(L):
                end = len(text) if t == L - 1 else max(start, min(len(self.tokenizer.decode(toks[:t + 1], skip_special_tokens=True)), len(text)))
                step_r[i, t] = char_r[start:end].sum()
                start = end
        kernel = pcpg_kernel(cfg.pcpg_kernel_size, kind=cfg.pcpg_kernel)
        g_ids = group_ids.cpu()
        baseline = None
        if cfg.pcpg_baseline != "none":
            # per position t, the group's (leave-one-out) mean of G_t over the responses that reach t
            ret = pcpg_loss(torch.zeros_like(step_r), step_r, m, kernel=kernel, gamma=cfg.pcpg_gamma).returns
            baseline = torch.zeros_like(ret)
            for t in range(T):
                sel = m[:, t] > 0
                if not bool(sel.any()):
                    continue
                col = ret[sel, t]
                centred = rloo_advantages(col, g_ids[sel]) if cfg.pcpg_baseline == "loo" else group_advantages(col, g_ids[sel], scale="none")
                baseline[sel, t] = col - centred.advantages.to(col.dtype)
        lp = torch.zeros_like(step_r, requires_grad=True)
        res = pcpg_loss(lp, step_r, m, kernel=kernel, gamma=cfg.pcpg_gamma, baseline=baseline, aggregation="token-mean")
        (grad,) = torch.autograd.grad(res.loss, lp)
        adv = -grad * m.sum().clamp_min(1.0) * m
        return {"advantages": adv, "step_rewards": step_r, "baseline": baseline, "kernel": kernel, "texts": texts, "references": refs}

    def _pf_ppo_filter(self, step, rewards, group_ids, resp_mask):
        """PF-PPO: keep each prompt's best and worst (or best and a random) response; advantages among the kept."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, self.dist.rank, "pf_ppo"))
        strategy = "best-worst" if cfg.sample_filter == "pf_ppo_best_worst" else "best-random"
        keep = policy_filtration(rewards, group_ids, strategy=strategy, generator=gen).keep
        kept = self._advantages(rewards[keep], group_ids[keep])
        seq = torch.zeros_like(rewards)
        seq[keep] = kept.advantages.to(seq.dtype)
        loss_mask = resp_mask * keep.to(resp_mask.device, resp_mask.dtype)[:, None]
        return seq, loss_mask, {"filtered_rows": float((~keep).sum())}

    def _row_payloads(self, batch: RolloutBatch) -> list[dict]:
        """Each row's prompt ids (unpadded), response ids (up to its mask), text and truncation flag, on the CPU."""
        P = batch.prompt_length
        out = []
        for i in range(batch.input_ids.shape[0]):
            pm = batch.attention_mask[i, :P].bool()
            rm = batch.response_mask[i].bool()
            out.append(dict(prompt=batch.input_ids[i, :P][pm].cpu(), response=batch.input_ids[i, P:][rm].cpu(),
                            text=batch.texts[i], truncated=bool(batch.truncated[i])))
        return out

    def _assemble(self, rows: list[dict]) -> RolloutBatch:
        """A rollout batch from row payloads: prompts left-padded, responses right-padded (the sampler's layout)."""
        pad = self.tokenizer.pad_token_id
        P = max(len(r["prompt"]) for r in rows)
        T = max(1, max(len(r["response"]) for r in rows))
        n = len(rows)
        ids = torch.full((n, P + T), pad, dtype=torch.long)
        att = torch.zeros((n, P + T), dtype=torch.long)
        for i, r in enumerate(rows):
            p, y = r["prompt"], r["response"]
            ids[i, P - len(p):P] = p
            att[i, P - len(p):P] = 1
            ids[i, P:P + len(y)] = y
            att[i, P:P + len(y)] = 1
        dev = self.dist.device
        return RolloutBatch(input_ids=ids.to(dev), attention_mask=att.to(dev), response_mask=att[:, P:].to(dev), prompt_length=P,
                            texts=[r["text"] for r in rows], truncated=torch.tensor([r["truncated"] for r in rows]))

    def _arpo_inject(self, step, batch, rewards, group_ids, prompts):
        """ARPO: into each all-failed group put one buffered success of the same task; then buffer this step's successes."""
        cfg, G = self.cfg, self.cfg.samples_per_prompt
        keys = [prompts[i // G] for i in range(rewards.shape[0])]
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, self.dist.rank, "arpo"))
        plan = self.filter_buffer.plan_injections(rewards, group_ids, keys, generator=gen)
        rows = self._row_payloads(batch)
        self.filter_buffer.update(keys, rewards, rows)
        if plan:
            rewards = rewards.clone()
            for inj in plan:
                rows[inj.row] = inj.payload
                rewards[inj.row] = inj.reward
            batch = self._assemble(rows)
        return batch, rewards, {"replaced_rows": float(len(plan)), "buffer_size": float(len(self.filter_buffer))}

    def _ssb_replace(self, step, batch, token_adv, loss_mask):
        """Selective Sample Buffer: swap groups whose advantages all vanish for buffered groups (drawn by mean |A|)."""
        cfg, G = self.cfg, self.cfg.samples_per_prompt
        n = token_adv.shape[0]
        rows = self._row_payloads(batch)
        for i, r in enumerate(rows):
            L = len(r["response"])
            r["token_adv"] = token_adv[i, :L].detach().cpu()
            r["loss_mask"] = loss_mask[i, :L].detach().cpu()
        groups = [rows[g * G:(g + 1) * G] for g in range(n // G)]
        weight = [float(sum((r["token_adv"].abs() * r["loss_mask"]).sum() for r in grp)) for grp in groups]
        ntok = [float(sum(r["loss_mask"].sum() for r in grp)) for grp in groups]
        vanishing = [g for g in range(len(groups)) if weight[g] == 0.0]
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, self.dist.rank, "ssb"))
        drawn = self.filter_buffer.sample(len(vanishing), generator=gen)
        informative = [g for g in range(len(groups)) if weight[g] > 0.0]
        self.filter_buffer.add([groups[g] for g in informative], [weight[g] / max(ntok[g], 1.0) for g in informative])
        extra = {"replaced_rows": float(len(drawn) * G), "buffer_size": float(len(self.filter_buffer))}
        if not drawn:
            return batch, token_adv, loss_mask, extra
        for g, grp in zip(vanishing, drawn):
            groups[g] = grp
        rows = [r for grp in groups for r in grp]
        batch = self._assemble(rows)
        T = batch.response_mask.shape[1]
        adv = torch.zeros((n, T), dtype=token_adv.dtype)
        lm = torch.zeros((n, T), dtype=loss_mask.dtype)
        for i, r in enumerate(rows):
            L = len(r["response"])
            adv[i, :L] = r["token_adv"]
            lm[i, :L] = r["loss_mask"]
        return batch, adv.to(self.dist.device), lm.to(self.dist.device), extra

    def _spo_chain(self, step, batch, rewards, group_ids, puzzles, resp_mask):
        """SPO-chain: cutpoint segments, Monte Carlo values at segment starts, segment advantages, cutpoint loss mask."""
        cfg, G = self.cfg, self.cfg.samples_per_prompt
        with torch.no_grad():  # probabilities under the sampling policy (the current one, before the update)
            lp = self.logprob_module(batch.input_ids, batch.attention_mask, batch.prompt_length, G, cfg.temperature)
        lp = lp.detach().double().cpu()
        m = resp_mask.detach().double().cpu()
        seg = cutpoint_segments(lp, m, threshold=cfg.spo_threshold, cutpoints_per_segment=cfg.spo_cutpoints_per_segment)
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
            est = self._mc_values(step, batch, jobs, [puzzles[i // G] for i, _, _ in jobs])
            for (i, k, _), v in zip(jobs, est):
                values[i, k] = v
        token_adv = chain_segment_advantages(seg, values, r64).to(torch.float32)
        if cfg.spo_probability_mask:
            cut = cutpoint_mask(lp, m, threshold=cfg.spo_threshold).to(torch.float32)
        else:
            cut = torch.ones_like(token_adv)
        dev = self.dist.device
        extra = {"spo_segments": float(np.mean([len(s) for s in starts])) if starts else 0.0,
                 "spo_cutpoint_fraction": float(cut.mul(m.float()).sum() / m.sum().clamp_min(1.0))}
        return token_adv.to(dev), cut.to(dev), extra

    @torch.no_grad()
    def _mc_values(self, step, batch, jobs, puzzles) -> list[float]:
        """Mean task reward of ``spo_mc_samples`` continuations sampled from each (row, segment start) prefix.

        Continuations come from transformers' ``generate`` (global RNG seeded from (seed, step, rank));
        each is cut to the response budget left after its prefix, which samples exactly as a shorter budget would.
        """
        cfg = self.cfg
        torch.manual_seed(step_seed(cfg.seed, step, self.dist.rank, "spo"))
        texts = continuation_texts(self.policy, self.tokenizer, batch, [(i, t) for i, _, t in jobs], num_samples=cfg.spo_mc_samples,
                                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
        return [sum(float(self.task.reward(x, puzzles[j]).total) for x in row) / len(row) for j, row in enumerate(texts)]

    # ------------------------------------------------------------------
    def save(self) -> None:
        buffers = None
        if self.filter_buffer is not None:  # every rank's replay state, so a resumed run replays exactly
            buffers = D.all_gather_objects(self.filter_buffer.state_dict(), self.dist)
        if self.dist.is_main:
            state = self._state()
            if buffers is not None:
                state["sample_filter"] = buffers
            save_checkpoint(self.out, self.step, state, keep=self.cfg.keep_checkpoints)
        D.barrier(self.dist)

    def train(self) -> Path:
        """Run until ``steps`` (or ``stop_after`` steps of this call); returns the run folder."""
        cfg = self.cfg
        pbar = None
        if cfg.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            pbar = tqdm(total=cfg.steps, initial=self.step, desc=f"GRPO[{cfg.curriculum}]", unit="step")
        done_here = 0
        try:
            while self.step < cfg.steps:
                if cfg.stop_after is not None and done_here >= cfg.stop_after:
                    break
                res = self.train_step()
                done_here += 1
                if self.logger is not None:
                    self.logger.log(res.step, res.metrics)
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(reward=f"{res.metrics['reward_mean']:.2f}", acc=f"{res.metrics['accuracy']:.2f}", s=f"{res.metrics['time_step_s']:.1f}")
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
        finally:
            if pbar is not None:
                pbar.close()
        if self.dist.is_main:
            from ..report import plot_grpo_run

            plot_grpo_run(self.out)
            if self.logger is not None:
                self.logger.close()
        return self.out


def config_from_preset(preset: str | None, **overrides) -> GRPOConfig:
    """A GRPOConfig from a named preset with keyword overrides (None values are ignored)."""
    base = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
        base = dict(PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    unknown = set(base) - fields
    if unknown:
        raise ValueError(f"unknown GRPO options {sorted(unknown)}.")
    if "levels" in base:
        base["levels"] = tuple(int(x) for x in base["levels"])
    return GRPOConfig(**base)


__all__.append("config_from_preset")


# -- command line ----------------------------------------------------------


def add_cli(sub) -> argparse.ArgumentParser:
    """Add ``polab train grpo`` to the CLI's ``train`` sub-commands."""
    p = sub.add_parser("grpo", help="GRPO on verifiable tasks with a distribution-level curriculum (DUMP or uniform)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-demo", help="named configuration; other options override it")
    p.add_argument("--curriculum", choices=["dump", "uniform"])
    p.add_argument("--model", help="smollm2-135m-instruct (embedded), tiny-llama, a local HF folder or a hub id")
    p.add_argument("--task", choices=["kk", "arithmetic"], help="Knights-and-Knaves (the DUMP paper's) or integer addition")
    p.add_argument("--levels", type=lambda s: tuple(int(x) for x in s.split(",")), help="one distribution each: people per puzzle (kk) or digits (arithmetic), e.g. 3,4,5,6")
    p.add_argument("--steps", type=int)
    p.add_argument("--prompts-per-step", type=int, help="global number of prompts per step")
    p.add_argument("--samples-per-prompt", type=int, help="group size G")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--rollout-engine", choices=["shared-prefix", "hf"], help="polab's prompt-sharing KV-cache sampler or transformers' generate")
    p.add_argument("--full-logprobs", dest="shared_prefix_logprobs", action="store_false", default=None, help="one full forward per response in training (no prompt sharing)")
    p.add_argument("--lr", type=float)
    p.add_argument("--advantage", choices=ADVANTAGE_ESTIMATORS, help="group-relative estimator, spo_chain (SPO's segment advantages), ppo_gae, or pcpg (edit-distance step rewards)")
    p.add_argument("--sample-filter", choices=SAMPLE_FILTERS, help="PF-PPO filtration, Skywork R1V2's SSB or ARPO's success replay")
    p.add_argument("--spo-threshold", type=float, help="SPO cutpoint: token probability below this")
    p.add_argument("--spo-cutpoints-per-segment", type=int, help="SPO interval: cutpoints per segment")
    p.add_argument("--spo-mc-samples", type=int, help="SPO continuations per segment start")
    p.add_argument("--no-spo-probability-mask", dest="spo_probability_mask", action="store_false", default=None, help="SPO loss on all tokens, not cutpoints only")
    p.add_argument("--gae-gamma", type=float, help="ppo_gae: discount")
    p.add_argument("--gae-lambda", type=float, help="ppo_gae: GAE lambda")
    p.add_argument("--gae-truncation", choices=["terminal", "bootstrap"], help="ppo_gae: truncated responses terminal (PPO) or bootstrapped (T-PPO's EGAE)")
    p.add_argument("--value-lr", type=float, help="ppo_gae: critic learning rate")
    p.add_argument("--pcpg-kernel-size", type=int, help="pcpg: odd width of the pseudo-convolution kernel")
    p.add_argument("--pcpg-kernel", choices=["uniform", "gaussian"], help="pcpg: kernel weights (sum to 1)")
    p.add_argument("--pcpg-gamma", type=float, help="pcpg: discount of the convolved step rewards")
    p.add_argument("--pcpg-baseline", choices=PCPG_BASELINES, help="pcpg: baseline of the returns (group leave-one-out, group mean, none)")
    p.add_argument("--ssb-capacity", type=int, help="groups held by the Selective Sample Buffer")
    p.add_argument("--arpo-capacity", type=int, help="successful trajectories kept per task by ARPO")
    p.add_argument("--std-convention", choices=["verl", "trl", "openrlhf"])
    p.add_argument("--aggregation", choices=AGGREGATIONS)
    p.add_argument("--kl-coef", type=float)
    p.add_argument("--kl-estimator", choices=["k1", "k2", "k3"])
    p.add_argument("--clip-low", type=float)
    p.add_argument("--clip-high", type=float)
    p.add_argument("--micro-batch-size", type=int, help="responses per forward/backward (0 = all)")
    p.add_argument("--dump-window", type=int)
    p.add_argument("--dump-temperature", type=float)
    p.add_argument("--dump-exploration", type=float)
    p.add_argument("--dump-bonus", choices=["code", "paper"])
    add_run_arguments(p)
    p.set_defaults(func=run_cli)
    return p


def run_cli(args) -> int:
    """Entry of ``polab train grpo`` (also under torchrun)."""
    opts = {k: v for k, v in vars(args).items() if k not in ("command", "algo", "preset", "func")}
    cfg = config_from_preset(args.preset, **opts)
    info = D.init_distributed(cfg.device)
    try:
        trainer = GRPOTrainer(cfg, info)
        out = trainer.train()
        if info.is_main:
            print(f"run folder: {out}\n  metrics: {out / 'metrics.csv'}\n  figure:  {out / 'figures' / 'curriculum.png'}")
    finally:
        D.shutdown(info)
    return 0
