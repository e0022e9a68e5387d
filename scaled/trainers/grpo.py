"""GRPO trainer with a distribution-level curriculum (DUMP or uniform).

One training step composes, in order:

1. the curriculum scheduler (:mod:`estimators.curriculum`) draws the
   distribution of each prompt of the global batch;
2. the task draws a puzzle from each distribution;
3. :func:`scaled.rollout.generate_rollouts` samples ``samples_per_prompt``
   responses per prompt;
4. the task scores each response;
5. :mod:`estimators.advantages` turns rewards into group-relative advantages
   (groups = prompts);
6. :func:`estimators.policy_loss.ppo_clip_loss` gives the loss, which is
   backpropagated (micro-batched, weighted by
   :func:`estimators.policy_loss.aggregation_weight` so that micro-batching
   and data parallelism reproduce the full-batch loss exactly);
7. per-response advantages and their sources are gathered from all ranks and
   fed to ``scheduler.update`` so that every rank holds the same state.

The core functions are called unchanged. Under ``torchrun`` the model is
wrapped in DistributedDataParallel (gloo on CPU, NCCL on GPU).

Randomness: each step's random streams (curriculum draw, puzzle draw, and
the token sampler's generator; torch's global RNG when ``rollout_engine="hf"``,
since ``generate`` reads only that) are seeded from ``(seed, step, rank)`` at
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

from estimators.advantages import broadcast_to_tokens, group_advantages, rloo_advantages
from estimators.curriculum import make_scheduler
from estimators.policy_loss import AGGREGATIONS, aggregation_weight, ppo_clip_loss

from .. import distributed as D
from ..checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ..models import EMBEDDED_MODEL, load_model
from ..rollout import PrefixSharedLogprobs, generate_rollouts, sample_rollouts, token_logprobs
from ..run_folder import RunLogger
from ..tasks.arithmetic import ArithmeticTask
from ..tasks.knights_knaves import KnightsKnavesTask

#: Task classes by name; each takes (levels, *, puzzles_per_size, seed).
TASKS = {"kk": KnightsKnavesTask, "arithmetic": ArithmeticTask}

__all__ = ["GRPOConfig", "GRPOTrainer", "PRESETS", "step_seed"]

ADVANTAGE_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "grpo_batch_std")


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
    shared_prefix_logprobs: bool = True  # one prompt pass per group in the training forward (exact; see scaled.rollout)
    # advantage and loss
    advantage: str = "grpo"
    std_convention: str = "verl"
    aggregation: str = "token-mean"
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
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
    dist_info : scaled.distributed.DistInfo, optional
        Defaults to :func:`scaled.distributed.init_distributed` (single process without torchrun).
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
        return names

    def _state(self) -> dict:
        return {
            "step": self.step,
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": dataclasses.asdict(self.cfg),
            "world_size": self.dist.world_size,
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
        adv = self._advantages(rewards, group_ids)
        resp_mask = batch.response_mask.to(torch.float32)
        token_adv = broadcast_to_tokens(adv.advantages.to(info.device), resp_mask)

        # global normalisers so that micro-batches and ranks reproduce the full-batch aggregate
        n_local = resp_mask.shape[0]
        tot_tokens, tot_seqs = D.all_reduce_sum([float(resp_mask.sum()), float((resp_mask.sum(1) > 0).sum())], info)
        batch_total = n_local * info.world_size
        mb = cfg.micro_batch_size or n_local
        old_logp = None  # one optimisation pass per batch: the sampling policy is the current one
        loss_val = policy_val = kl_val = 0.0
        clip_num = 0.0
        loss_inputs = {}
        self.optimizer.zero_grad(set_to_none=True)
        for lo in range(0, n_local, mb):
            sl = slice(lo, lo + mb)
            ids, att, m = batch.input_ids[sl], batch.attention_mask[sl], resp_mask[sl]
            logp = self.model(ids, att, batch.prompt_length, G, cfg.temperature)
            ref_logp = None
            if self.ref is not None:
                with torch.no_grad():
                    ref_logp = token_logprobs(self.ref, ids, att, batch.prompt_length, temperature=cfg.temperature)
            old = logp.detach() if old_logp is None else old_logp[sl]
            res = ppo_clip_loss(logp, old, token_adv[sl], m, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                                dual_clip=cfg.dual_clip, aggregation=cfg.aggregation, max_length=cfg.max_new_tokens,
                                ref_logp=ref_logp, kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator)
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
        t2 = time.perf_counter()

        # curriculum statistics from every rank, so all ranks hold the same scheduler state
        seq_adv = adv.advantages.tolist()
        src_resp = [s for s in src_local for _ in range(G)]
        local = dict(src=src_resp, adv=seq_adv, total=[r.total for r in rewards_obj], answer=[r.answer_score for r in rewards_obj],
                     fmt=[r.format_score > 0 for r in rewards_obj], correct=[r.correct for r in rewards_obj],
                     length=resp_mask.sum(1).tolist(), trunc=batch.truncated.tolist(), zv=adv.num_zero_variance_groups,
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
        return StepResult(step=step, metrics=metrics, loss_inputs=loss_inputs)

    # ------------------------------------------------------------------
    def save(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out, self.step, self._state(), keep=self.cfg.keep_checkpoints)
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
    p.add_argument("--advantage", choices=ADVANTAGE_ESTIMATORS)
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
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out from its latest checkpoint")
    p.add_argument("--stop-after", type=int, help="stop after this many steps of this invocation (for testing resume)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
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
