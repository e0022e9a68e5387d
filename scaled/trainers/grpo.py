r"""GRPO-family trainer with a distribution-level curriculum (DUMP or uniform) and registered methods.

One step is a pipeline (:meth:`GRPOTrainer.train_step`):

1. **rollout**: the curriculum scheduler (:mod:`polab.estimators.curriculum`) draws
   the distribution of each prompt of the global batch, the task draws a
   problem from each, and ``samples_per_prompt`` responses are sampled per
   prompt (:func:`polab.scaled.rollout.sample_rollouts` or transformers' ``generate``);
2. **reward**: the task scores each response; the reward shaper
   (:data:`polab.scaled.methods.REWARD_SHAPERS`) gives the scalar the update sees;
3. **sample filter** (:data:`polab.scaled.methods.SAMPLE_FILTERS`), before the
   advantage (PF-PPO's kept rows, ARPO's injected successes);
4. **advantage** (:data:`polab.scaled.methods.ADVANTAGES`): group-relative
   estimators, SPO-chain, PPO with GAE, PCPG; then the filter's second hook
   (the Selective Sample Buffer swaps vanishing groups);
5. **loss and update**: :func:`polab.estimators.policy_loss.ppo_clip_loss` over
   ``ppo_epochs`` passes of ``mini_batch_size`` mini-batches (one optimizer step
   each, accumulated over micro-batches weighted by
   :func:`polab.estimators.policy_loss.aggregation_weight`, so micro-batching and
   data parallelism reproduce the mini-batch loss exactly), with the old
   log-probabilities computed once per rollout batch, as verl does
   (:mod:`polab.scaled.trainers.schedule`); a method's own update follows (a critic);
6. **curriculum**: per-response advantages and their sources are gathered from
   all ranks and fed to ``scheduler.update`` so that every rank holds the same state.

Under ``torchrun`` the model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on GPU), or, with
``--parallel fsdp``, the policy, the reference model and the critic are sharded with FSDP2.

Randomness: each step's random streams (curriculum draw, problem draw, and
the token sampler's generator; torch's global RNG when ``rollout_engine="hf"``,
since ``generate`` reads only that; also before SPO-chain's continuations)
are seeded from ``(seed, step, rank)`` at the start of the step. Hence a
step's randomness does not depend on what ran before it, and a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from polab.estimators.advantages import dr_grpo_advantages
from polab.estimators.curriculum import make_scheduler
from polab.estimators.policy_loss import AGGREGATIONS, ppo_clip_loss, truncated_is_weights

from .. import distributed as D
from ..methods import ADVANTAGES, REWARD_SHAPERS, SAMPLE_FILTERS
from ..methods.rollout_strategies import ROLLOUT_STRATEGIES
from ..methods.advantages import sequence_of
from ..report import plot_grpo_run
from ..models import EMBEDDED_MODEL, ValueModel, load_model  # noqa: F401  (ValueModel: re-exported for old imports)
from ..rollout import PrefixSharedLogprobs, RolloutBatch, generate_rollouts, sample_rollouts, token_logprobs
from . import base
from ..checkpoint import save_checkpoint
from .base import StageTimer, StepResult, Trainer, TrainerConfig, step_seed
from .schedule import UpdateSchedule

__all__ = ["ADVANTAGE_ESTIMATORS", "GRPOConfig", "GRPOTrainer", "PRESETS", "Rollout", "SAMPLE_FILTER_NAMES", "config_from_preset", "step_seed"]

#: Registered names at import time (the registries are open: see polab.scaled.methods).
ADVANTAGE_ESTIMATORS = ADVANTAGES.names()
SAMPLE_FILTER_NAMES = SAMPLE_FILTERS.names()


@dataclass
class GRPOConfig(TrainerConfig):
    """Hyperparameters of a GRPO run. Batch sizes are global (all ranks together)."""

    # model and task
    model: str = field(default=EMBEDDED_MODEL, metadata={"help": "smollm2-135m-instruct (embedded), tiny-llama, a local HF folder or a hub id"})
    task: str = field(default="kk", metadata={"help": "task spec (polab.scaled.tasks.build_task): kk (Knights-and-Knaves, the DUMP paper's), "
                                                      "arithmetic, jsonl:PATH, hf-dataset:PATH, or a registered task"})
    levels: tuple[int, ...] = field(default=(3, 4, 5, 6), metadata={"help": "kk/arithmetic: one distribution each, people per puzzle (kk) or digits per operand"})
    puzzles_per_size: int = field(default=200, metadata={"help": "kk/arithmetic: problems per distribution"})
    task_seed: int = field(default=1234, metadata={"help": "seed of the task's problem pool"})
    task_reward: str | None = field(default=None, metadata={"help": "jsonl/hf-dataset tasks: exact, numeric, regex:PATTERN or module:function"})
    # curriculum
    curriculum: str = field(default="dump", metadata={"help": "distribution-level curriculum", "choices": ("dump", "uniform")})
    dump_window: int = field(default=300, metadata={"help": "DUMP: advantages kept per distribution"})
    dump_exploration: float = field(default=1.0, metadata={"help": "DUMP: UCB exploration constant"})
    dump_temperature: float = field(default=0.1, metadata={"help": "DUMP: softmax temperature over UCB scores"})
    dump_bonus: str = field(default="code", metadata={"help": "DUMP: exploration bonus of the code or the paper", "choices": ("code", "paper")})
    # rollout
    prompts_per_step: int = field(default=8, metadata={"help": "global number of prompts per step"})
    samples_per_prompt: int = field(default=4, metadata={"help": "group size G"})
    max_new_tokens: int = field(default=48, metadata={"help": "response budget in tokens"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (also of the training log-probabilities)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    rollout_strategy: str = field(default="full", metadata={"help": "full (every response to EOS/max_new_tokens per step) or windowed "
                                                                    "(T-PPO's successive generation: --windowed.window-tokens per step)"})
    rollout_engine: str = field(default="shared-prefix", metadata={"help": "polab's prompt-sharing KV-cache sampler, transformers' generate, "
                                                                           "or vLLM (CUDA; pip install 'polab[gpu]'; weights synced each step, "
                                                                           "truncated importance-sampling correction: polab.scaled.engines.vllm_engine)",
                                                                   "choices": ("shared-prefix", "hf", "vllm")})
    rollout_is_cap: float = field(default=2.0, metadata={"help": "vllm engine: truncation C of the importance weight min(pi_train/pi_vllm, C) "
                                                                 "(verl's rollout_is_threshold)"})
    vllm_gpu_memory: float = field(default=0.3, metadata={"help": "vllm engine: fraction of the GPU memory vLLM may take"})
    dtype: str = field(default="float32", metadata={"help": "compute precision: float32, or bfloat16 (float32 master weights and AdamW, "
                                                            "training forward under torch.autocast, rollouts from a bfloat16 copy synced each step)",
                                                    "choices": ("float32", "bfloat16")})
    bf16_mode: str = field(default="autocast", metadata={"help": "with --dtype bfloat16: autocast (float32 weights; each matrix product casts its "
                                                                 "inputs under torch.autocast) or weights (a bfloat16 copy of the weights runs the "
                                                                 "training forward/backward and the rollouts; its gradients are added into float32 "
                                                                 "master gradients, AdamW steps the float32 master weights, the copy is refreshed after "
                                                                 "each optimizer step: no per-product casts; single process)",
                                                         "choices": ("autocast", "weights")})
    compile: bool = field(default=False, metadata={"help": "torch.compile(dynamic=True) the training log-probability module (inductor). "
                                                        "Pays only on long runs: on SmolLM2 (2 CPU cores, --dtype bfloat16 --bf16-mode weights) "
                                                        "the training forward+backward ran 1.65x faster but the first step compiled for 509 s "
                                                        "(131 s with inductor's on-disk cache warm), so it breaks even after about 30-125 steps "
                                                        "(benchmarks/grpo_step_profile.py --compile); "
                                                        "single process"})
    adamw_impl: str = field(default="default", metadata={"help": "AdamW kernel: default (torch's choice: a per-parameter loop on the CPU), "
                                                                 "foreach (batched over parameters) or fused (one kernel; CPU and CUDA); "
                                                                 "same maths, different rounding", "choices": ("default", "foreach", "fused")})
    parallel: str = field(default="ddp", metadata={"help": "under torchrun: ddp (replicated policy, all-reduced gradients) or fsdp (FSDP2 "
                                                           "fully_shard of the layers of the policy, the reference and the critic; sharded checkpoints through "
                                                           "torch.distributed.checkpoint)",
                                                   "choices": ("ddp", "fsdp")})
    decode_threads: int = field(default=-1, metadata={"help": "CPU threads of the token-by-token rollout: -1 auto (one thread while the load "
                                                              "average exceeds this process's cores, see polab.scaled.distributed.decode_threads), "
                                                              "0 torch's setting, N > 0 that many"})
    shared_prefix_logprobs: bool = field(default=True, metadata={"help": "one prompt pass per group in the training forward (exact; see polab.scaled.rollout)"})
    # methods (registered by name; their options: --NAME.OPTION)
    advantage: str = field(default="grpo", metadata={"help": f"advantage estimator: {', '.join(ADVANTAGES.names())}, or a user's (--plugins MODULE, or module:attr)"})
    sample_filter: str = field(default="none", metadata={"help": f"which samples the update sees: {', '.join(SAMPLE_FILTERS.names())}, or a user's"})
    reward_shaper: str = field(default="none", metadata={"help": f"task reward -> the reward the advantage sees: {', '.join(REWARD_SHAPERS.names())}, or a user's"})
    std_convention: str = field(default="verl", metadata={"help": "group std of grpo advantages", "choices": ("verl", "trl", "openrlhf")})
    # loss
    aggregation: str = field(default="token-mean", metadata={"help": "token aggregation of the loss", "choices": AGGREGATIONS})
    clip_low: float = field(default=0.2, metadata={"help": "PPO clip: ratio floor 1 - clip_low"})
    clip_high: float = field(default=0.2, metadata={"help": "PPO clip: ratio ceiling 1 + clip_high (clip-higher when > clip_low)"})
    dual_clip: float | None = field(default=None, metadata={"help": "dual clip constant c > 1 for negative advantages (off when unset)"})
    kl_coef: float = field(default=0.0, metadata={"help": "KL penalty to the initial policy (0: no reference model)"})
    kl_estimator: str = field(default="k3", metadata={"help": "KL estimator", "choices": ("k1", "k2", "k3")})
    # optimisation
    ppo_epochs: int = field(default=1, metadata={"help": "passes over each rollout batch (verl ppo_epochs)"})
    mini_batch_size: int = field(default=0, metadata={"help": "responses per optimizer step over all ranks (verl ppo_mini_batch_size x n); 0 = the whole batch"})
    micro_batch_size: int = field(default=0, metadata={"help": "responses per forward/backward on one rank; 0 = the whole mini-batch"})
    out: str = field(default="runs/grpo", metadata={"help": "run folder"})

    method_fields: ClassVar[dict] = {"advantage": ADVANTAGES, "sample_filter": SAMPLE_FILTERS, "reward_shaper": REWARD_SHAPERS,
                                     "rollout_strategy": ROLLOUT_STRATEGIES}
    kind: ClassVar[str] = "GRPO"

    def check(self, world_size: int = 1) -> list[str]:
        errs = []
        G = self.samples_per_prompt
        if self.curriculum not in ("dump", "uniform"):
            errs.append(f"curriculum must be 'dump' or 'uniform', got {self.curriculum!r}")
        if self.aggregation not in AGGREGATIONS:
            errs.append(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if not isinstance(G, int) or G < 2:
            errs.append("samples_per_prompt must be >= 2: group-relative advantages need at least two responses per prompt")
            G = 1
        if self.prompts_per_step < 1 or self.prompts_per_step % world_size:
            errs.append(f"prompts_per_step ({self.prompts_per_step}) must be a positive multiple of the number of processes ({world_size})")
        if not isinstance(self.decode_threads, int) or self.decode_threads < -1:
            errs.append(f"decode_threads must be -1 (auto), 0 (torch's setting) or a thread count, got {self.decode_threads!r}")
        if self.adamw_impl not in ("default", "foreach", "fused"):
            errs.append(f"adamw_impl must be 'default', 'foreach' or 'fused', got {self.adamw_impl!r}")
        if self.parallel not in ("ddp", "fsdp"):
            errs.append(f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        if self.parallel == "fsdp" and self.rollout_strategy != "full":
            errs.append("parallel fsdp samples from an unsharded copy gathered once per step; it supports --rollout-strategy full only")
        if self.dtype not in ("float32", "bfloat16"):
            errs.append(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.bf16_mode not in ("autocast", "weights"):
            errs.append(f"bf16_mode must be 'autocast' or 'weights', got {self.bf16_mode!r}")
        elif self.bf16_mode == "weights" and self.dtype != "bfloat16":
            errs.append("bf16_mode weights needs --dtype bfloat16 (it chooses how bfloat16 compute is done)")
        elif self.bf16_mode == "weights" and (world_size > 1 or self.rollout_engine == "vllm"):
            errs.append("bf16_mode weights runs in a single process with polab's or transformers' sampler; use --bf16-mode autocast "
                        "under torchrun or with --rollout-engine vllm")
        if self.compile and world_size > 1:
            errs.append("compile is tested in a single process only (torch.compile under DDP/FSDP is not); drop --compile under torchrun")
        if self.rollout_engine not in ("shared-prefix", "hf", "vllm"):
            errs.append(f"rollout_engine must be 'shared-prefix', 'hf' or 'vllm', got {self.rollout_engine!r}")
        if self.rollout_engine == "vllm":
            from ..engines.vllm_engine import VLLM_INSTALL_HINT, vllm_available

            if not vllm_available():
                errs.append(f"rollout_engine vllm: vllm is not installed; {VLLM_INSTALL_HINT}")
            if str(self.device) == "cpu" or (str(self.device) == "auto" and not torch.cuda.is_available()):
                errs.append("rollout_engine vllm needs a CUDA device (vLLM does not run polab's CPU path); use shared-prefix on the CPU")
            if self.rollout_strategy != "full" or self.sample_filter != "none":
                errs.append("rollout_engine vllm supports --rollout-strategy full and --sample-filter none only")
            if not (base._finite(self.rollout_is_cap) and self.rollout_is_cap > 0):
                errs.append(f"rollout_is_cap must be a finite number > 0, got {self.rollout_is_cap!r}")
            if not (base._finite(self.vllm_gpu_memory) and 0 < self.vllm_gpu_memory < 1):
                errs.append(f"vllm_gpu_memory must lie in (0, 1), got {self.vllm_gpu_memory!r}")
        if self.micro_batch_size < 0 or self.micro_batch_size % G:
            errs.append(f"micro_batch_size ({self.micro_batch_size}) must be 0 (whole mini-batch) or a positive multiple of samples_per_prompt "
                        f"({G}): micro-batches hold whole groups")
        total = self.prompts_per_step * G
        if self.mini_batch_size < 0 or (self.mini_batch_size and (self.mini_batch_size % (G * world_size) or total % self.mini_batch_size)):
            errs.append(f"mini_batch_size ({self.mini_batch_size}) must be 0 (whole batch) or a multiple of samples_per_prompt x processes "
                        f"({G} x {world_size}) that divides the batch of {total} responses")
        if not isinstance(self.ppo_epochs, int) or self.ppo_epochs < 1:
            errs.append(f"ppo_epochs must be an integer >= 1, got {self.ppo_epochs!r}")
        from ..tasks import TASKS as TASK_REGISTRY

        if str(self.task).partition(":")[0] not in TASK_REGISTRY:
            errs.append(f"task: unknown task spec {self.task!r}; choose one of {', '.join(sorted(TASK_REGISTRY))} (NAME or NAME:ARGUMENT)")
        if not self.levels:
            errs.append("levels is empty: give the puzzle sizes (kk) or digit counts (arithmetic), one distribution each")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            errs.append(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not (base._finite(self.temperature) and self.temperature > 0):
            errs.append(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not (base._finite(self.top_p) and 0 < self.top_p <= 1):
            errs.append(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if not (base._finite(self.clip_low) and 0 <= self.clip_low < 1):
            errs.append(f"clip_low must lie in [0, 1), got {self.clip_low!r}")
        if not (base._finite(self.clip_high) and self.clip_high >= 0):
            errs.append(f"clip_high must be a finite number >= 0, got {self.clip_high!r}")
        if self.dual_clip is not None and not (base._finite(self.dual_clip) and self.dual_clip > 1):
            errs.append(f"dual_clip must be > 1 (or unset), got {self.dual_clip!r}")
        if not (base._finite(self.kl_coef) and self.kl_coef >= 0):
            errs.append(f"kl_coef must be a finite number >= 0, got {self.kl_coef!r}")
        return errs


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
    # DUMP's setting (shared/notes/theory_core.md 1.4, from the authors' scripts): Qwen2.5-7B-Instruct-1M (a hub id: must be in the
    # local Hugging Face cache), 12 K&K distributions of 3..14 people with 900 training puzzles each, 128 prompts x 16 responses per
    # step, PPO mini-batch 32 prompts (512 responses), lr 1e-6, KL loss 0.001 low_var_kl (k3), 2 epochs (~170 steps; the paper
    # plots 150). Departure: responses capped at 4096 tokens (the authors allow 20480). Needs GPUs (run with --curriculum dump and
    # --curriculum uniform, same --seed, to reproduce the comparison that `polab run dump-vs-uniform` makes at CPU scale). Not run here.
    "dump-paper": dict(model="Qwen/Qwen2.5-7B-Instruct-1M", task="kk", levels=tuple(range(3, 15)), puzzles_per_size=900, prompts_per_step=128,
                       samples_per_prompt=16, mini_batch_size=512, max_new_tokens=4096, steps=170, lr=1e-6, kl_coef=0.001, kl_estimator="k3",
                       checkpoint_every=25, device="cuda"),
    # The DUMP paper's configuration on GPUs (docs/multi_node.md; scripts/slurm_grpo.sbatch). Global batch sizes as in
    # dump-paper (prompts and mini-batches split over ranks); bfloat16 compute with float32 master weights and fused AdamW,
    # colocated vLLM rollouts (weights synced each step, TIS correction), micro-batches of one group (16 responses).
    # 1 GPU: the 7B model's float32 weights, gradients and AdamW states (16 bytes x 7.6e9 = 122 GB) leave no room on one
    # 80-141 GB GPU, so this preset swaps in Qwen2.5-1.5B-Instruct (a departure; same task, curriculum and schedule).
    # 8 GPUs (one node) and 2 x 8 GPUs (two nodes): the paper's 7B model, FSDP2-sharded (about 15 or 8 GB of state per GPU).
    # Not run here (no GPU cluster); scripts/gpu_check.sh is the single-GPU check that was run.
    "dump-paper-1gpu": dict(model="Qwen/Qwen2.5-1.5B-Instruct", task="kk", levels=tuple(range(3, 15)), puzzles_per_size=900,
                            prompts_per_step=128, samples_per_prompt=16, mini_batch_size=512, micro_batch_size=16, max_new_tokens=4096,
                            steps=170, lr=1e-6, kl_coef=0.001, kl_estimator="k3", checkpoint_every=25, device="cuda", dtype="bfloat16",
                            adamw_impl="fused", rollout_engine="vllm", vllm_gpu_memory=0.3),
    "dump-paper-8gpu": dict(model="Qwen/Qwen2.5-7B-Instruct-1M", task="kk", levels=tuple(range(3, 15)), puzzles_per_size=900,
                            prompts_per_step=128, samples_per_prompt=16, mini_batch_size=512, micro_batch_size=16, max_new_tokens=4096,
                            steps=170, lr=1e-6, kl_coef=0.001, kl_estimator="k3", checkpoint_every=25, device="cuda", dtype="bfloat16",
                            adamw_impl="fused", rollout_engine="vllm", vllm_gpu_memory=0.35, parallel="fsdp"),
    "dump-paper-2x8gpu": dict(model="Qwen/Qwen2.5-7B-Instruct-1M", task="kk", levels=tuple(range(3, 15)), puzzles_per_size=900,
                              prompts_per_step=128, samples_per_prompt=16, mini_batch_size=512, micro_batch_size=16, max_new_tokens=4096,
                              steps=170, lr=1e-6, kl_coef=0.001, kl_estimator="k3", checkpoint_every=25, device="cuda", dtype="bfloat16",
                              adamw_impl="fused", rollout_engine="vllm", vllm_gpu_memory=0.35, parallel="fsdp"),
    # One arm of the README's main job (polab run main-demo): graded arithmetic with a held-out split, full fine-tune at a high lr.
    "main-demo": dict(model=EMBEDDED_MODEL, task="arith-mix", prompts_per_step=4, samples_per_prompt=8, max_new_tokens=32, temperature=0.7,
                      steps=8, lr=5e-5, checkpoint_every=8, micro_batch_size=8, torch_threads=1),
}


def config_from_preset(preset: str | None, **overrides) -> GRPOConfig:
    """A GRPOConfig from a named preset with keyword overrides (None values are ignored; old flat method options accepted)."""
    return base.config_from_preset(GRPOConfig, PRESETS, preset, **overrides)


class _FullLogprobs(torch.nn.Module):
    """Response log-probabilities from one full forward pass per response (no prompt sharing)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, prompt_length: int, group_size: int, temperature: float = 1.0):
        return token_logprobs(self.lm, input_ids, attention_mask, prompt_length, temperature=temperature)


@dataclass
class Rollout:
    """One step's samples as the pipeline stages see and change them (this rank's rows; groups of G consecutive rows).

    Shapes: ``rewards``, ``group_ids``, ``keep`` [n]; ``response_mask`` [n, T] (float32, on the device).
    ``fresh_mask`` / ``fresh_truncated`` describe the sampled batch before any filter replaced rows (for metrics).
    """

    step: int
    sources: list[int]
    problems: list
    prompts: list[str]
    batch: RolloutBatch
    results: list = field(default_factory=list)
    rewards: torch.Tensor | None = None
    group_ids: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    metrics: dict = field(default_factory=dict)

    def __post_init__(self):
        self.response_mask = self.batch.response_mask.to(torch.float32)
        self.fresh_mask, self.fresh_truncated = self.response_mask, self.batch.truncated

    def replace_batch(self, batch: RolloutBatch) -> None:
        """A filter swapped rows: the new batch's response mask follows it."""
        self.batch = batch
        self.response_mask = batch.response_mask.to(torch.float32)


def _component(r, name: str) -> float:
    """A named reward component (``r.name`` or ``r.components[name]``; NaN when the task has none)."""
    v = getattr(r, name, None)
    if v is None:
        v = getattr(r, "components", {}).get(name, math.nan)
    return float(v)


class GRPOTrainer(Trainer):
    """Composes task, rollout, reward, registered methods, core loss and curriculum.

    Parameters
    ----------
    config : GRPOConfig
    dist_info : polab.scaled.distributed.DistInfo, optional
        Defaults to :func:`polab.scaled.distributed.init_distributed` (single process without torchrun).
    task : object, optional
        Any task with ``distributions``, ``sample(source, rng=)``, ``prompt(problem)``, ``reward(text, problem)``
        (returning an object with ``total``, ``correct`` and optionally ``components``); overrides ``config.task``.
    """

    label = "GRPO"
    plot_run = staticmethod(plot_grpo_run)
    progress_metrics = {"reward_mean": "reward", "accuracy": "acc", "time_step_s": "s"}

    def build(self) -> None:
        cfg = self.cfg
        self.label = f"GRPO[{cfg.curriculum}]"
        self.advantage, self.sample_filter, self.reward_shaper = (self.methods[k] for k in ("advantage", "sample_filter", "reward_shaper"))
        self.task = self._task_override or self._build_task()
        self.sources = list(self.task.distributions)
        sched_kwargs = {}
        if cfg.curriculum == "dump":
            sched_kwargs = dict(window=cfg.dump_window, exploration=cfg.dump_exploration, temperature=cfg.dump_temperature, bonus=cfg.dump_bonus)
        self.scheduler = make_scheduler(cfg.curriculum, self.sources, **sched_kwargs)
        loaded = load_model(cfg.model, seed=cfg.seed)
        self.tokenizer = loaded.tokenizer
        self.policy = loaded.model.to(self.device)
        self.policy.train()
        # bfloat16: rollouts from a bfloat16 copy (synced from the float32 master weights before each rollout); with
        # bf16_mode "weights" the same copy also runs the training forward and backward (see update)
        self.bf16_weights = cfg.dtype == "bfloat16" and cfg.bf16_mode == "weights"
        self.rollout_policy = None
        if self.bf16_weights:
            self.rollout_policy = _bf16_train_copy(self.policy)
        elif cfg.dtype == "bfloat16":
            self.rollout_policy = _frozen_copy(self.policy).to(torch.bfloat16)
        self._copy_fresh = False  # the bfloat16 copy equals the rounded master weights
        self.ref = None
        if cfg.kl_coef > 0:
            self.ref = _frozen_copy(self.policy)
        # the module whose forward gives response log-probabilities; DDP wraps it
        lm = self.rollout_policy if self.bf16_weights else self.policy
        self.logprob_module = PrefixSharedLogprobs(lm) if cfg.shared_prefix_logprobs else _FullLogprobs(lm)
        self.fsdp = cfg.parallel == "fsdp" and self.dist.enabled
        self._sharded, self._pending_dcp, self._full_copy = False, None, None
        # FSDP: the policy is sharded at the first step (after a resume loaded its weights); DDP wraps the log-prob module now
        self.model = self.logprob_module if self.fsdp else self.wrap_ddp(self.logprob_module)
        if cfg.compile:  # single process (validated): the compiled module shares the parameters of logprob_module
            self.model = torch.compile(self.logprob_module, dynamic=True)
        self.optimizer = self._make_optimizer()
        self.advantage.setup(self)

    def _build_task(self):
        from ..tasks import accepted_options, build_task

        cfg = self.cfg
        opts = dict(levels=tuple(cfg.levels), puzzles_per_size=cfg.puzzles_per_size, seed=cfg.task_seed, reward=cfg.task_reward)
        allowed = accepted_options(cfg.task)
        return build_task(cfg.task, **{k: v for k, v in opts.items() if allowed is None or k in allowed})

    def autocast(self, *, ref: bool = False):
        """The forward's precision context: torch.autocast to bfloat16 when ``dtype="bfloat16"``, else a no-op.

        With ``bf16_mode="weights"`` the policy's forward runs on its bfloat16 copy and needs no autocast; the
        float32 reference model (``ref=True``) still runs under it.
        """
        import contextlib

        if self.cfg.dtype == "bfloat16" and (ref or not self.bf16_weights):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _accumulate_master_grads(self) -> None:
        """bf16_mode weights: add the bfloat16 copy's gradients (float32-converted) into the master gradients; clear the copy's."""
        with torch.no_grad():
            for p32, p16 in zip(self.policy.parameters(), self.rollout_policy.parameters()):
                if p16.grad is None:
                    continue
                if p32.grad is None:
                    p32.grad = p16.grad.to(torch.float32)
                else:
                    p32.grad.add_(p16.grad)
                p16.grad = None

    def _sync_copy(self, src) -> None:
        with torch.no_grad():
            for dst, p in zip(self.rollout_policy.parameters(), src.parameters()):
                dst.copy_(p)
        self._copy_fresh = True

    def _make_optimizer(self):
        impl = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[self.cfg.adamw_impl]
        return torch.optim.AdamW(self.policy.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, **impl)

    def sampling_model(self):
        """The model rollouts sample from: the policy, or its unsharded/bfloat16 copy refreshed from the current weights.

        Under FSDP the full weights are all-gathered into an unsharded float32 copy on every rank (the same
        collective on all ranks, once per rollout), so the token-by-token loop runs no collectives and ranks
        may stop decoding at different lengths.
        """
        src = self.policy
        if self.fsdp:
            self._ensure_sharded()
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full = get_model_state_dict(self.policy, options=StateDictOptions(full_state_dict=True))
            with torch.no_grad():
                for k, v in self._full_copy.state_dict().items():
                    v.copy_(full[k])
            src = self._full_copy
        if self.rollout_policy is None:
            return src
        if not (self.bf16_weights and self._copy_fresh):  # the weights mode refreshes its copy after each optimizer step
            self._sync_copy(src)
        return self.rollout_policy

    def _vllm_rollout(self, model, prompts, seed):
        """vLLM samples from the current weights (synced first); the batch carries vLLM's log-probabilities."""
        from ..engines.vllm_engine import VLLMEngine
        from ..rollout import encode_prompts

        cfg = self.cfg
        if getattr(self, "_vllm", None) is None:
            folder = self.out / "vllm_model"  # the architecture and tokenizer vLLM starts from (weights replaced at once)
            if self.dist.is_main or not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
                model.save_pretrained(folder)
                self.tokenizer.save_pretrained(folder)
            D.barrier(self.dist)
            self._vllm = VLLMEngine(str(folder), dtype="bfloat16", gpu_memory_utilization=cfg.vllm_gpu_memory, seed=cfg.seed)
        self._vllm.sync_weights(model)
        ids, mask = encode_prompts(self.tokenizer, prompts, device=self.device)
        batch, logp = self._vllm.generate(ids, mask, self.tokenizer, samples_per_prompt=cfg.samples_per_prompt,
                                          max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
        batch.rollout_logp = logp
        return batch

    # -- FSDP ------------------------------------------------------------------------------------------
    def _ensure_sharded(self) -> None:
        """Shard the policy, the reference and the critic (FSDP2); rebuild the optimizers over the shards; load a
        resumed run's sharded model and optimizer states."""
        if not self.fsdp or self._sharded:
            return
        self._full_copy = _frozen_copy(self.policy)  # unsharded float32: rollouts and the Hugging Face export
        D.fsdp_shard(self.policy, self.dist)
        self.optimizer = self._make_optimizer()
        if self.ref is not None:  # frozen: its layers are all-gathered for the forward only
            D.fsdp_shard(self.ref, self.dist)
        critic = self.critic
        if critic is not None:
            D.fsdp_shard(critic, self.dist)
            import inspect

            opt = self.advantage.optimizer  # the same optimizer class and hyperparameters, over the shards
            accepted = inspect.signature(type(opt)).parameters
            self.advantage.optimizer = type(opt)(critic.parameters(), **{k: v for k, v in opt.defaults.items() if k in accepted})
        self._sharded = True
        if self._pending_dcp is not None:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import set_state_dict

            sd = self._sharded_state()
            dcp.load(sd, checkpoint_id=str(self._pending_dcp))
            set_state_dict(self.policy, self.optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
            if critic is not None:
                set_state_dict(critic, self.advantage.optimizer, model_state_dict=sd["critic"], optim_state_dict=sd["critic_optim"])
            self._pending_dcp = None

    def _sharded_state(self) -> dict:
        """This rank's shards of the trained modules and their optimizers (torch.distributed.checkpoint's layout)."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        msd, osd = get_state_dict(self.policy, self.optimizer)
        sd = {"model": msd, "optim": osd}
        if self.critic is not None:
            sd["critic"], sd["critic_optim"] = get_state_dict(self.critic, self.advantage.optimizer)
        return sd

    def _dcp_dir(self, step: int) -> Path:
        return self.out / "checkpoints" / "sharded" / f"step_{step:08d}"

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.fsdp:  # the optimizers (and the sharded models) live in the torch.distributed.checkpoint folder
            ref = {"dcp": str(self._dcp_dir(self.step).relative_to(self.out))}
            state["optimizer"] = ref
            if self.critic is not None:
                state["methods"]["advantage"] = dict(state["methods"]["advantage"], critic_optimizer=ref)
        return state

    def load_state(self, state: dict) -> None:
        if self.fsdp:
            ref = state.get("optimizer", {})
            if not isinstance(ref, dict) or "dcp" not in ref:
                raise ValueError("resume: this checkpoint was not written with --parallel fsdp; resume with the --parallel it was written with.")
            self._pending_dcp = self.out / ref["dcp"]
            if not self._pending_dcp.is_dir():
                raise FileNotFoundError(f"resume: the sharded checkpoint {self._pending_dcp} is missing.")
            state = dict(state, optimizer=self.optimizer.state_dict())
            adv_state = state.get("methods", {}).get("advantage")
            if self.critic is not None and isinstance(adv_state, dict) and "critic_optimizer" in adv_state:  # loaded with the shards
                state["methods"] = dict(state["methods"], advantage=dict(adv_state, critic_optimizer=self.advantage.optimizer.state_dict()))
        elif isinstance(state.get("optimizer"), dict) and "dcp" in state["optimizer"]:
            raise ValueError("resume: this checkpoint was written with --parallel fsdp; resume with --parallel fsdp.")
        super().load_state(state)

    def save(self) -> None:
        """DDP/single process: the core's checkpoint. FSDP: every rank writes its shards of the model and optimizer
        (torch.distributed.checkpoint), then rank 0 writes the checkpoint with the gathered full policy as a Hugging Face folder."""
        if not self.fsdp:
            return super().save()
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        self._ensure_sharded()
        dcp.save(self._sharded_state(), checkpoint_id=str(self._dcp_dir(self.step)))
        gather = StateDictOptions(full_state_dict=True, cpu_offload=True)  # rank 0 receives the full tensors
        full = get_model_state_dict(self.policy, options=gather)
        models = self.checkpoint_models()
        if self.critic is not None:  # the gathered critic, as <name>.safetensors like an unsharded run's
            name = next(k for k, m in models.items() if m is self.critic)
            models[name] = _FullStateDict(get_model_state_dict(self.critic, options=gather))
        state = self.state_dict()
        if self.dist.is_main:
            with torch.no_grad():
                for k, v in self._full_copy.state_dict().items():
                    v.copy_(full[k])
            save_checkpoint(self.out, self.step, state=state, models=models,
                            pretrained={"policy": (self._full_copy, self.tokenizer)}, keep=self.cfg.keep_checkpoints)
            import shutil

            from ..checkpoint import list_checkpoints

            kept = {p.name for p in list_checkpoints(self.out)}
            for d in self._dcp_dir(self.step).parent.iterdir():  # shards of rotated-out checkpoints
                if d.name not in kept:
                    shutil.rmtree(d, ignore_errors=True)
        D.barrier(self.dist)

    @property
    def critic(self):
        """The advantage estimator's critic (``ppo-gae``), else None."""
        return getattr(self.advantage, "critic", None)

    @property
    def filter_buffer(self):
        """The sample filter's replay buffer (``ssb``, ``arpo``), else None."""
        return getattr(self.sample_filter, "buffer", None)

    def metric_names(self) -> list[str]:
        names = ["reward_mean", "answer_score_mean", "format_ok_rate", "accuracy", "loss", "policy_loss", "kl",
                 "clip_fraction", "grad_norm", "response_length", "truncated_rate", "zero_variance_groups",
                 "time_rollout_s", "time_train_s", "time_step_s"]
        for s in self.sources:
            names += [f"prob:{s}", f"learnability:{s}", f"answer_score:{s}", f"count:{s}"]
        return names

    def late_metric_names(self) -> list[str]:
        return ["clip_fraction_low", "clip_fraction_high", "dual_clip_fraction", "ppo_kl", "ratio_mean", "num_updates"]

    def extra_state(self) -> dict:
        return {"scheduler": self.scheduler.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])

    # -- the step: rollout -> reward -> sample filter -> advantage -> loss/update -> curriculum --------------
    def train_step(self) -> StepResult:
        """Run one step (all ranks must call it together)."""
        timer = StageTimer()
        self._ensure_sharded()
        roll = self.rollout(self.step + 1)
        timer.lap("rollout")
        self.score(roll)
        roll.metrics.update(self.sample_filter.before_advantage(self, roll))
        adv = self.advantage.compute(self, roll)
        token_adv, loss_mask = self.token_advantages(roll, adv)
        token_adv, loss_mask, filter_metrics = self.sample_filter.after_advantage(self, roll, token_adv, loss_mask)
        roll.metrics.update(filter_metrics)
        schedule = self.schedule(roll.response_mask.shape[0])
        upd = self.update(roll, token_adv, loss_mask, schedule)
        roll.metrics.update(adv.metrics)
        roll.metrics.update(self.advantage.after_update(self, roll, adv, schedule))
        if upd["loss_inputs"]:
            upd["loss_inputs"].update(adv.loss_inputs, rewards=roll.rewards, group_ids=roll.group_ids)
        timer.lap("train")
        metrics = self.curriculum_update(roll, sequence_of(adv, roll.response_mask).to(roll.rewards.dtype).cpu(), upd)
        self.step = roll.step
        metrics.update(timer.metrics())
        return StepResult(step=roll.step, metrics=metrics, loss_inputs=upd["loss_inputs"])

    def rollout(self, step: int) -> Rollout:
        """The step's samples from the selected rollout strategy (:mod:`polab.scaled.methods.rollout_strategies`)."""
        return self.methods["rollout_strategy"].rollout(self, step)

    def full_rollout(self, step: int) -> Rollout:
        """Draw this rank's share of the prompts (curriculum, then task) and sample G responses each."""
        cfg, info = self.cfg, self.dist
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, 0, "curriculum"))
        src_idx = self.scheduler.sample(cfg.prompts_per_step, generator=gen).tolist()
        rng = np.random.default_rng(step_seed(cfg.seed, step, 0, "puzzles"))
        problems = [self.task.sample(self.sources[j], rng=rng) for j in src_idx]
        per = cfg.prompts_per_step // info.world_size
        lo, hi = info.rank * per, (info.rank + 1) * per
        src_idx, problems = src_idx[lo:hi], problems[lo:hi]
        prompts = [self.task.prompt(p) for p in problems]
        seed = self.seed_for(step, "generate")
        kw = dict(samples_per_prompt=cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
        model = self.sampling_model()
        with D.decode_threads(info.device, cfg.decode_threads):
            if cfg.rollout_engine == "vllm":
                batch = self._vllm_rollout(model, prompts, seed)
            elif cfg.rollout_engine == "hf":
                torch.manual_seed(seed)  # transformers' generate reads only the global RNG
                batch = generate_rollouts(model, self.tokenizer, prompts, **kw)
            else:
                batch = sample_rollouts(model, self.tokenizer, prompts, generator=torch.Generator(device=info.device).manual_seed(seed), **kw)
        return Rollout(step=step, sources=src_idx, problems=problems, prompts=prompts, batch=batch)

    def score(self, roll: Rollout) -> None:
        """Task rewards of every response, and the shaped reward the advantage sees."""
        G = self.cfg.samples_per_prompt
        roll.results = [self.task.reward(text, roll.problems[i // G]) for i, text in enumerate(roll.batch.texts)]
        roll.rewards = self.reward_shaper.shape(self, roll.results)
        roll.group_ids = torch.arange(len(roll.problems)).repeat_interleave(G)
        roll.zero_variance_groups = dr_grpo_advantages(roll.rewards, roll.group_ids).num_zero_variance_groups

    def token_advantages(self, roll: Rollout, adv):
        """The estimator's token advantages on the rows that enter the loss, and the loss mask."""
        mask = roll.response_mask
        if roll.keep is not None:
            mask = mask * roll.keep.to(mask.device, mask.dtype)[:, None]
        token = adv.token * mask
        loss_mask = mask if adv.loss_mask is None else mask * adv.loss_mask
        return token, loss_mask

    def schedule(self, rows: int) -> UpdateSchedule:
        cfg, world = self.cfg, self.dist.world_size
        mini = cfg.mini_batch_size // world if cfg.mini_batch_size else rows
        return UpdateSchedule(rows=rows, mini_batch_rows=mini, micro_batch_rows=cfg.micro_batch_size, epochs=cfg.ppo_epochs,
                              aggregation=cfg.aggregation, dist=self.dist)

    @torch.no_grad()
    def _logprob_pass(self, batch, schedule, module):
        """Log-probabilities of the whole batch under ``module`` (micro-batched), before any update."""
        G, parts = self.cfg.samples_per_prompt, []
        for sl in schedule.microbatches(slice(0, schedule.rows)):
            with self.autocast(ref=module is self.ref):
                parts.append(self._logprobs_of(module, batch, sl, G))
        T = max(p.shape[1] for p in parts)
        return torch.cat([torch.nn.functional.pad(p, (0, T - p.shape[1])) for p in parts])

    def _logprobs_of(self, module, batch, sl, G):
        if module is self.ref:
            return token_logprobs(self.ref, batch.input_ids[sl], batch.attention_mask[sl], batch.prompt_length, temperature=self.cfg.temperature)
        return module(batch.input_ids[sl], batch.attention_mask[sl], batch.prompt_length, G, self.cfg.temperature)

    def update(self, roll: Rollout, token_adv, loss_mask, schedule: UpdateSchedule) -> dict:
        """PPO epochs x mini-batches (an optimizer step each) x micro-batches of the core clipped loss."""
        cfg, info, batch = self.cfg, self.dist, roll.batch
        kl_coef = self.advantage.loss_kl_coef(cfg.kl_coef)
        # old log-probabilities once per rollout batch (verl); one epoch of one mini-batch is on-policy: old = logp.detach()
        old_all = None if schedule.on_policy else self._logprob_pass(batch, schedule, self.logprob_module)
        ref_all = None if (schedule.on_policy or self.ref is None) else self._logprob_pass(batch, schedule, self.ref)
        acc = dict(loss=0.0, policy=0.0, kl=0.0, clip=0.0, clip_low=0.0, clip_high=0.0, dual=0.0, ppo_kl=0.0, ratio=0.0)
        grad_norms, loss_inputs, tokens_seen = [], {}, 0.0
        K = schedule.num_updates
        for mini in schedule.minibatches():
            norm = schedule.normalisers(loss_mask, mini)
            tokens_seen += norm.tokens
            self.optimizer.zero_grad(set_to_none=True)
            for sl in schedule.microbatches(mini):
                ids, att, m = batch.input_ids[sl], batch.attention_mask[sl], loss_mask[sl]
                with self.autocast():
                    logp = self.model(ids, att, batch.prompt_length, cfg.samples_per_prompt, cfg.temperature)
                ref_logp = None
                if self.ref is not None:
                    with torch.no_grad(), self.autocast(ref=True):
                        ref_logp = token_logprobs(self.ref, ids, att, batch.prompt_length, temperature=cfg.temperature) if ref_all is None else ref_all[sl]
                old = logp.detach() if old_all is None else old_all[sl]
                is_w = None
                if batch.rollout_logp is not None:  # another engine sampled: TIS weights min(pi_train / pi_rollout, C)
                    is_w = truncated_is_weights(old, batch.rollout_logp[sl, :old.shape[1]], m, upper=cfg.rollout_is_cap)
                res = ppo_clip_loss(logp, old, token_adv[sl], m, clip_low=cfg.clip_low, clip_high=cfg.clip_high, dual_clip=cfg.dual_clip,
                                    aggregation=cfg.aggregation, max_length=cfg.max_new_tokens, ref_logp=ref_logp, kl_coef=kl_coef,
                                    kl_estimator=cfg.kl_estimator, is_weights=is_w)
                w = norm.weight(m)
                # DDP averages gradients over ranks; multiplying by world_size makes that average a sum of shares.
                (res.loss * (w * info.world_size)).backward()
                if self.bf16_weights:
                    self._accumulate_master_grads()
                for key, v in (("loss", res.loss), ("policy", res.policy_loss), ("kl", res.kl)):
                    acc[key] += float(v.detach()) * w / K
                ntok = float(m.sum())
                acc["clip"] += res.clip_fraction * ntok
                # TODO(F1): getattr until the PolicyLoss fields are committed everywhere
                for key, name in (("clip_low", "clip_fraction_low"), ("clip_high", "clip_fraction_high"), ("dual", "dual_clip_fraction"),
                                  ("ppo_kl", "ppo_kl"), ("ratio", "ratio_mean")):
                    acc[key] += float(getattr(res, name, math.nan)) * ntok
                if sl.stop - sl.start == schedule.rows:
                    loss_inputs = dict(logp=logp.detach(), old_logp=old.detach(), advantages=token_adv.detach(), mask=m,
                                       ref_logp=None if ref_logp is None else ref_logp.detach(), loss=res.loss.detach(), batch=batch)
            gn = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            grad_norms.append(float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn))  # a DTensor under FSDP
            self.optimizer.step()
            if self.bf16_weights:
                self._sync_copy(self.policy)
        return dict(acc=acc, grad_norm=sum(grad_norms) / len(grad_norms), loss_inputs=loss_inputs, num_updates=K, tokens=tokens_seen)

    def curriculum_update(self, roll: Rollout, seq_adv: torch.Tensor, upd: dict) -> dict:
        """Gather every rank's statistics, update the curriculum (same state on every rank) and return the step's metrics."""
        G, info, res = self.cfg.samples_per_prompt, self.dist, roll.results
        acc = upd["acc"]
        local = dict(src=[s for s in roll.sources for _ in range(G)], adv=seq_adv.tolist(), total=[r.total for r in res],
                     answer=[_component(r, "answer_score") for r in res], fmt=[_component(r, "format_score") > 0 for r in res],
                     correct=[bool(r.correct) for r in res], length=roll.fresh_mask.sum(1).tolist(), trunc=roll.fresh_truncated.tolist(),
                     zv=roll.zero_variance_groups,
                     loss=[acc[k] for k in ("loss", "policy", "kl", "clip", "clip_low", "clip_high", "dual", "ppo_kl", "ratio")])
        parts = D.all_gather_objects(local, info)
        g = {k: [x for p in parts for x in (p[k] if isinstance(p[k], list) else [p[k]])] for k in local if k != "loss"}
        self.scheduler.update(g["src"], np.asarray(g["adv"], dtype=np.float64))
        s = np.sum([p["loss"] for p in parts], axis=0)
        tok = max(upd["tokens"], 1.0)  # response tokens over all ranks, counted once per epoch
        metrics = {
            "reward_mean": float(np.mean(g["total"])), "answer_score_mean": float(np.mean(g["answer"])),
            "format_ok_rate": float(np.mean(g["fmt"])), "accuracy": float(np.mean(g["correct"])),
            "loss": float(s[0]), "policy_loss": float(s[1]), "kl": float(s[2]), "clip_fraction": float(s[3] / tok),
            "grad_norm": upd["grad_norm"], "response_length": float(np.mean(g["length"])), "truncated_rate": float(np.mean(g["trunc"])),
            "zero_variance_groups": float(np.sum(g["zv"])),
        }
        snap = self.scheduler.snapshot()
        src_arr, ans = np.asarray(g["src"]), np.asarray(g["answer"])
        for j, name in enumerate(self.sources):
            sel = src_arr == j
            metrics.update({f"prob:{name}": float(snap.probabilities[j]), f"learnability:{name}": float(snap.learnability[j]),
                            f"count:{name}": float(snap.counts[j]), f"answer_score:{name}": float(ans[sel].mean()) if sel.any() else math.nan})
        metrics.update(self.reduce_method_metrics(roll.metrics))
        metrics.update(clip_fraction_low=float(s[4] / tok), clip_fraction_high=float(s[5] / tok), dual_clip_fraction=float(s[6] / tok),
                       ppo_kl=float(s[7] / tok), ratio_mean=float(s[8] / tok), num_updates=float(upd["num_updates"]))
        return metrics


class _FullStateDict(torch.nn.Module):
    """A module standing for a gathered state dict (an FSDP-sharded critic's full weights) when a checkpoint saves it."""

    def __init__(self, tensors: dict):
        super().__init__()
        # own storage per tensor (gathered tensors may be views of a larger buffer, which safetensors refuses);
        # a tensor listed under two names (tied weights) stays one tensor, so the file stores it once
        copies: dict[int, torch.Tensor] = {}
        self._tensors = {k: copies.setdefault(id(v), v.detach().clone()) for k, v in tensors.items()}

    def state_dict(self, *args, **kwargs):
        return dict(self._tensors)


def _bf16_train_copy(model):
    """A trainable bfloat16 copy of ``model`` (bf16_mode weights: training forward/backward and rollouts)."""
    import copy

    c = copy.deepcopy(model).to(torch.bfloat16)
    c.train()
    for p in c.parameters():
        p.requires_grad_(True)
    return c


def _frozen_copy(model):
    import copy

    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# -- command line ----------------------------------------------------------


def main(argv=None) -> int:
    """``polab train grpo`` (also under torchrun): options generated from :class:`GRPOConfig` and the method groups."""
    import sys

    return base.cli_main(GRPOTrainer, GRPOConfig, PRESETS, sys.argv[1:] if argv is None else argv, prog="polab train grpo",
                         default_preset="cpu-demo", legacy={"--full-logprobs": ["--no-shared-prefix-logprobs"]},
                         description="GRPO-family training on verifiable tasks with a distribution-level curriculum (DUMP or uniform) "
                                     "and registered advantage estimators, sample filters and reward shapers.")
