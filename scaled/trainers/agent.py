r"""Multi-turn agent trainer: text environments, registered credit assignment (GRPO, RLOO, GiGPO, ...), PPO-clip update.

``polab train agent --method gigpo`` (preset ``cpu-sokoban``: the small policy on 8 Sokoban levels, about a minute of CPU);
``polab train agent --preset llm-smoke`` (SmolLM2 replying in text); ``--preset gpu-llm --model ID`` (a Hugging Face model on a GPU).

One step is a pipeline (:meth:`AgentTrainer.train_step`):

1. **tasks**: ``tasks_per_step`` task seeds drawn from the training tasks (seeds below
   ``eval_seed``; a finite pool of ``train_tasks`` seeds when set, after the sample filter's
   task selection);
2. **rollout**: ``group_size`` episodes of every task, all environments stepped together turn by
   turn (:func:`polab.scaled.agents.rollout.collect_episodes`), each step recorded with its
   reward, termination and anchor state;
   then the **reward shaper** (:data:`polab.scaled.methods.agent_rewards.AGENT_REWARDS`, ``--reward-shaper``): ``none``,
   ``epo-process`` (EPO's process rewards), ``debate`` (the debate reward) replace the step rewards the next stages see;
3. **sample filter** (:data:`polab.scaled.methods.agent_credit.AGENT_FILTERS`): ARPO's replay may
   replace trajectories of all-failed groups;
4. **credit assignment** (:data:`polab.scaled.methods.agent_credit.AGENT_CREDIT`): one advantage
   per step row (``grpo``, ``rloo``, ``gigpo``, ...), given to every token of the step's action;
5. **update**: the core clipped surrogate :func:`polab.estimators.policy_loss.ppo_clip_loss`
   over ``ppo_epochs`` x ``mini_batches`` optimizer steps (old log-probabilities recomputed once
   before the update, as verl does), minus ``entropy_coef`` times the mean policy entropy;
6. **evaluation** every ``eval_every`` steps (and before the first): ``eval_episodes`` held-out
   tasks (seeds ``eval_seed + k``), success rate with its Clopper-Pearson 95% interval, mean
   return and episode length.

Policies (``--policy``): ``small``, a 2-4 layer Transformer (or GRU) over the observation's
characters or words that scores the admissible actions (:class:`polab.scaled.agents.policies.ChoicePolicy`,
trains in minutes on a CPU); ``llm``, a causal LM (SmolLM2 by default) that replies in text,
its action parsed with the environment's ``parse_action`` (:class:`polab.scaled.agents.policies.LLMPolicy`);
``tokens``, the small encoder plus a GRU decoder that writes each action word by word with a token-level critic for
``--method bad`` (:class:`polab.scaled.agents.token_policy.TokenActionPolicy`; ``--action-tokens``, ``--action-constraint``).

Randomness: task draws, the policy's sampling and ARPO's draws come from per-step seeds
``(seed, step, rank, stream)``; a resumed run continues exactly. Environment steps are counted
in ``env_steps`` (cumulative), the x axis of the run's figure ``figures/success.png``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from polab.estimators.policy_loss import AGGREGATIONS, ppo_clip_loss

from ..agents.rollout import AgentBatch, collect_episodes
from ..methods.agent_credit import AGENT_CREDIT, AGENT_FILTERS
from ..methods.agent_rewards import AGENT_REWARDS
from ..models import EMBEDDED_MODEL
from ..run_folder import read_metrics
from . import base
from .base import StageTimer, StepResult, Trainer, TrainerConfig, step_seed

__all__ = ["AgentConfig", "AgentTrainer", "PRESETS", "clopper_pearson", "config_from_preset", "plot_agent_run"]


def _build_poact(cfg, device):
    from ..agents.poact import build_poact

    return build_poact(cfg, device)


def _build_tokens(cfg, device):
    from ..agents.token_policy import build_token_policy

    return build_token_policy(cfg, device)


#: policies beyond small/llm: name -> builder(config, device) returning a choice-style policy (act/log_probs, a ``vocab``)
POLICY_BUILDERS: dict = {"poact": _build_poact, "tokens": _build_tokens}


@dataclass
class AgentConfig(TrainerConfig):
    """Options of an agent run (one process)."""

    env: str = field(default="sokoban", metadata={"help": "environment spec for polab.scaled.envs.text_protocol.make_text_env "
                                                          "(e.g. sokoban:size=6,boxes=1, textworld:level=1)"})
    method: str = field(default="gigpo", metadata={"help": f"credit assignment: {', '.join(AGENT_CREDIT.names())}, or a user's (--plugins)"})
    sample_filter: str = field(default="none", metadata={"help": f"trajectory filter/replay: {', '.join(AGENT_FILTERS.names())}"})
    policy: str = field(default="small", metadata={"help": "small (choice policy trained from scratch), llm (a causal LM replying in text), or a registered builder (POLICY_BUILDERS: poact = mode head + mode-restricted action choice; tokens = writes each action word by word, with a token-level critic for bad)",
                                                   "choices": ("small", "llm", *POLICY_BUILDERS)})
    # tasks and rollout
    tasks_per_step: int = field(default=8, metadata={"help": "tasks (episode groups) per step"})
    group_size: int = field(default=8, metadata={"help": "episodes per task (G)"})
    max_turns: int = field(default=20, metadata={"help": "turns after which an episode is cut (the environment may end it earlier)"})
    train_tasks: int = field(default=0, metadata={"help": "size of the training task pool (seeds 0..N-1); 0: a fresh seed each draw"})
    history_turns: int = field(default=0, metadata={"help": "earlier turns shown to the policy (the LLM's history window)"})
    # evaluation
    eval_every: int = field(default=5, metadata={"help": "evaluate every this many steps (0: only at the end)"})
    eval_episodes: int = field(default=64, metadata={"help": "held-out tasks per evaluation (one episode each)"})
    eval_seed: int = field(default=10_000_000, metadata={"help": "held-out task k is seed eval_seed + k; training seeds lie below it"})
    eval_greedy: bool = field(default=False, metadata={"help": "evaluate the most likely action instead of sampling"})
    eval_tasks: str = field(default="held-out", metadata={"help": "held-out (seeds eval_seed + k) or train (the training pool, cycled: "
                                                                  "in-distribution success; needs train_tasks > 0)", "choices": ("held-out", "train")})
    # small policy
    d_model: int = field(default=64, metadata={"help": "small policy: width"})
    layers: int = field(default=2, metadata={"help": "small policy: encoder layers"})
    heads: int = field(default=4, metadata={"help": "small policy: attention heads"})
    encoder: str = field(default="transformer", metadata={"help": "small policy: observation encoder", "choices": ("transformer", "gru")})
    tokenizer: str = field(default="char", metadata={"help": "small policy: characters or words", "choices": ("char", "word")})
    max_vocab: int = field(default=512, metadata={"help": "small policy: vocabulary size"})
    max_len: int = field(default=256, metadata={"help": "small policy: observation tokens kept (the last)"})
    action_tokens: int = field(default=8, metadata={"help": "tokens policy: tokens per generated action at most (<eos> included)"})
    action_constraint: str = field(default="admissible", metadata={"help": "tokens policy: prefix-constrained decoding over the admissible "
                                                                           "actions, or none (free words; invalid replies are invalid actions)",
                                                                   "choices": ("admissible", "none")})
    view: str = field(default="observation", metadata={"help": "small policy reads the observation or the anchor (canonical state text)",
                                                       "choices": ("observation", "anchor")})
    # llm policy
    model: str = field(default=EMBEDDED_MODEL, metadata={"help": "llm policy: smollm2-135m-instruct (embedded), tiny-llama, a local folder or hub id"})
    max_new_tokens: int = field(default=16, metadata={"help": "llm policy: reply budget in tokens"})
    temperature: float = field(default=1.0, metadata={"help": "llm policy: sampling temperature"})
    # update
    ppo_epochs: int = field(default=1, metadata={"help": "passes over each rollout batch"})
    mini_batches: int = field(default=1, metadata={"help": "optimizer steps per pass (step rows split evenly)"})
    clip_low: float = field(default=0.2, metadata={"help": "PPO clip: ratio floor 1 - clip_low"})
    clip_high: float = field(default=0.2, metadata={"help": "PPO clip: ratio ceiling 1 + clip_high"})
    aggregation: str = field(default="token-mean", metadata={"help": "token aggregation of the loss", "choices": AGGREGATIONS})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus weight"})
    lr: float = field(default=1e-3, metadata={"help": "policy learning rate (AdamW)"})
    out: str = field(default="runs/agent", metadata={"help": "run folder"})

    reward_shaper: str = field(default="none", metadata={"help": f"per-step reward shaper before credit assignment: {', '.join(AGENT_REWARDS.names())}"})

    method_fields: ClassVar[dict] = {"method": AGENT_CREDIT, "sample_filter": AGENT_FILTERS, "reward_shaper": AGENT_REWARDS}
    kind: ClassVar[str] = "agent"

    def check(self, world_size: int = 1) -> list[str]:
        errs = []
        if world_size != 1:
            errs.append(f"the agent trainer runs in one process; got {world_size} (drop torchrun)")
        for name, lo in (("tasks_per_step", 1), ("group_size", 1), ("max_turns", 1), ("train_tasks", 0), ("history_turns", 0),
                         ("eval_every", 0), ("eval_episodes", 1), ("eval_seed", 1), ("d_model", 4), ("layers", 1), ("heads", 1),
                         ("max_vocab", 3), ("max_len", 1), ("max_new_tokens", 1), ("ppo_epochs", 1), ("mini_batches", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                errs.append(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.method in ("grpo", "rloo", "gigpo") and isinstance(self.group_size, int) and self.group_size < 2:
            errs.append(f"group_size must be >= 2 for the group-relative method {self.method!r}")
        if self.policy not in ("small", "llm", *POLICY_BUILDERS):
            errs.append(f"policy must be one of small, llm, {', '.join(POLICY_BUILDERS)}; got {self.policy!r}")
        if isinstance(self.d_model, int) and isinstance(self.heads, int) and self.heads > 0 and self.d_model % self.heads:
            errs.append(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.encoder not in ("transformer", "gru"):
            errs.append(f"encoder must be 'transformer' or 'gru', got {self.encoder!r}")
        if self.tokenizer not in ("char", "word"):
            errs.append(f"tokenizer must be 'char' or 'word', got {self.tokenizer!r}")
        if not isinstance(self.action_tokens, int) or isinstance(self.action_tokens, bool) or self.action_tokens < 2:
            errs.append(f"action_tokens must be an integer >= 2 (a word and <eos>), got {self.action_tokens!r}")
        if self.action_constraint not in ("admissible", "none"):
            errs.append(f"action_constraint must be 'admissible' or 'none', got {self.action_constraint!r}")
        if self.view not in ("observation", "anchor"):
            errs.append(f"view must be 'observation' or 'anchor', got {self.view!r}")
        if self.aggregation not in AGGREGATIONS:
            errs.append(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if not (base._finite(self.clip_low) and 0 <= self.clip_low < 1):
            errs.append(f"clip_low must lie in [0, 1), got {self.clip_low!r}")
        if not (base._finite(self.clip_high) and self.clip_high >= 0):
            errs.append(f"clip_high must be a finite number >= 0, got {self.clip_high!r}")
        if not (base._finite(self.entropy_coef) and self.entropy_coef >= 0):
            errs.append(f"entropy_coef must be a finite number >= 0, got {self.entropy_coef!r}")
        if not (base._finite(self.temperature) and self.temperature > 0):
            errs.append(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if self.eval_tasks not in ("held-out", "train"):
            errs.append(f"eval_tasks must be 'held-out' or 'train', got {self.eval_tasks!r}")
        elif self.eval_tasks == "train" and not self.train_tasks:
            errs.append("eval_tasks=train evaluates on the training pool: set train_tasks > 0")
        if not str(self.env).strip():
            errs.append("env is empty: give an environment spec such as sokoban:size=6,boxes=1")
        return errs


PRESETS: dict[str, dict] = {
    # the small choice policy on Sokoban, the agent-credit experiment's setting: 8 training levels, success measured on them
    # (from scratch the policy does not improve on fresh procedural levels within a CPU budget; see polab run agent-credit)
    "cpu-sokoban": dict(env="sokoban:size=6,boxes=1,render=compact", policy="small", train_tasks=8, eval_tasks="train", tasks_per_step=8,
                        group_size=8, max_turns=10, steps=25, eval_every=5, eval_episodes=64, d_model=32, lr=1e-3, ppo_epochs=4,
                        mini_batches=4, checkpoint_every=25, tensorboard=False),
    # SmolLM2 acting in text (a smoke test at CPU scale: 2 environments, 2 turns)
    "llm-smoke": dict(env="sokoban", policy="llm", model=EMBEDDED_MODEL, tasks_per_step=1, group_size=2, max_turns=2, steps=1, eval_every=0,
                      eval_episodes=2, lr=1e-6, max_new_tokens=8, checkpoint_every=1, tensorboard=False, progress=False),
    # a GPU preset for a user-given Hugging Face model (--model ID)
    "gpu-llm": dict(env="sokoban", policy="llm", tasks_per_step=16, group_size=8, max_turns=15, history_turns=2, steps=200, eval_every=10,
                    eval_episodes=128, lr=1e-6, max_new_tokens=32, device="cuda", checkpoint_every=20),
}


def config_from_preset(preset: str | None, **overrides) -> AgentConfig:
    return base.config_from_preset(AgentConfig, PRESETS, preset, **overrides)


def clopper_pearson(successes: int, n: int, *, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided ``1 - alpha`` interval of a binomial proportion."""
    from scipy.stats import beta

    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1; got {successes}, {n}.")
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return lo, hi


def _env_module():
    from ..envs import text_protocol

    return text_protocol


class AgentTrainer(Trainer):
    """Rollout in text environments, registered credit assignment, core PPO-clip loss (module docstring).

    Parameters
    ----------
    config : AgentConfig
    env_factory : callable () -> environment, optional
        Builds one environment (default: ``make_text_env(config.env)``); any object with the text protocol.
    parse_action : callable (reply, admissible) -> str or None, optional
        The LLM policy's reply parser (default: the environment module's ``parse_action``).
    """

    label = "agent"
    progress_metrics = {"success_rate": "succ", "eval_success": "eval", "env_steps": "env", "time_step_s": "s"}

    def __init__(self, config: AgentConfig, dist_info=None, *, env_factory=None, parse_action=None):
        self._env_factory, self._parse_action = env_factory, parse_action
        super().__init__(config, dist_info)

    # -- set-up ---------------------------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.cfg
        self.label = f"agent[{cfg.method}]"
        self.credit, self.sample_filter = self.methods["method"], self.methods["sample_filter"]
        self.reward_shaper = self.methods["reward_shaper"]
        if self._env_factory is None:
            mod = _env_module()
            self._env_factory = lambda: mod.make_text_env(cfg.env)
            if self._parse_action is None:
                self._parse_action = getattr(mod, "parse_action", None)
        self.envs = [self._env_factory() for _ in range(cfg.tasks_per_step * cfg.group_size)]
        self._eval_envs: list = []
        torch.manual_seed(step_seed(cfg.seed, 0, 0, "init"))  # the LLM head/tiny model init reads the global RNG
        if cfg.policy in POLICY_BUILDERS:
            self.policy = POLICY_BUILDERS[cfg.policy](cfg, self.device)
            self.agent, self.tokenizer = self.policy, None
        elif cfg.policy == "small":
            from ..agents.policies import ChoicePolicy

            self.policy = ChoicePolicy(tokenizer=cfg.tokenizer, max_vocab=cfg.max_vocab, d_model=cfg.d_model, layers=cfg.layers,
                                       heads=cfg.heads, max_len=cfg.max_len, encoder=cfg.encoder, view=cfg.view,
                                       seed=step_seed(cfg.seed, 0, 0, "policy-init")).to(self.device)
            self.agent = self.policy
            self.tokenizer = None
        else:
            from ..agents.policies import LLMPolicy, default_parse_action
            from ..models import load_model

            loaded = load_model(cfg.model, seed=cfg.seed)
            self.tokenizer = loaded.tokenizer
            self.policy = loaded.model.to(self.device)
            self.agent = LLMPolicy(self.policy, self.tokenizer, parse_action=self._parse_action or default_parse_action,
                                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
        self.policy.train()
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.env_steps = 0
        self.task_pool = list(range(cfg.train_tasks)) if cfg.train_tasks else None
        self.credit.setup(self)
        self._selected = False

    def metric_names(self) -> list[str]:
        return ["success_rate", "return_mean", "episode_length", "invalid_action_rate", "env_steps", "env_steps_per_s", "loss",
                "policy_loss", "entropy", "grad_norm", "clip_fraction", "advantage_abs", "eval_success", "eval_success_low",
                "eval_success_high", "eval_return", "eval_length", "eval_episodes", "time_rollout_s", "time_train_s", "time_eval_s",
                "time_step_s"]

    def extra_state(self) -> dict:
        st = {"env_steps": self.env_steps, "task_pool": self.task_pool}
        if self.cfg.policy != "llm":
            st["vocab"] = self.policy.vocab.state_dict()
        return st

    def load_extra_state(self, state: dict) -> None:
        self.env_steps = int(state["env_steps"])
        self.task_pool = state["task_pool"]
        self._selected = True
        if self.cfg.policy != "llm":
            self.policy.vocab.load_state_dict(state["vocab"])

    # -- pieces ---------------------------------------------------------------------------------------
    def generator(self, step: int, stream: str) -> torch.Generator:
        seed = self.seed_for(step, stream)
        torch.manual_seed(seed)  # transformers' generate reads only the global RNG
        return torch.Generator().manual_seed(seed)

    def draw_tasks(self, step: int) -> list[int]:
        cfg = self.cfg
        rng = np.random.default_rng(step_seed(cfg.seed, step, 0, "tasks"))
        if self.task_pool is None:
            return [int(x) for x in rng.integers(0, cfg.eval_seed, size=cfg.tasks_per_step)]
        if not self.task_pool:
            raise ValueError("the training task pool is empty (task selection kept no task); raise train_tasks or disable arpo.task_selection.")
        replace = len(self.task_pool) < cfg.tasks_per_step
        return [int(x) for x in rng.choice(np.asarray(self.task_pool), size=cfg.tasks_per_step, replace=replace)]

    def rollout(self, step: int) -> AgentBatch:
        cfg = self.cfg
        self.policy.eval()
        try:
            return collect_episodes(self.envs, self.agent, self.draw_tasks(step), group_size=cfg.group_size, max_turns=cfg.max_turns,
                                    generator=self.generator(step, "policy"), history_turns=cfg.history_turns)
        finally:
            self.policy.train()

    def solvable_tasks(self, candidates: list[int], episodes: int) -> list[int]:
        """ARPO's task selection: the candidates on which the current policy wins at least once in ``episodes`` tries."""
        kept = []
        envs = [self._env_factory() for _ in range(episodes)]
        gen = self.generator(0, "task-selection")
        self.policy.eval()
        try:
            for seed in candidates:
                b = collect_episodes(envs, self.agent, [seed], group_size=episodes, max_turns=self.cfg.max_turns, generator=gen,
                                     history_turns=self.cfg.history_turns)
                self.env_steps += b.env_steps
                if any(e.won for e in b.episodes):
                    kept.append(int(seed))
        finally:
            self.policy.train()
        return kept

    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        """Success rate (Clopper-Pearson 95%), return and length on the held-out tasks ``eval_seed + k`` (or the training pool)."""
        cfg = self.cfg
        chunk = min(cfg.eval_episodes, max(len(self.envs), 1))
        while len(self._eval_envs) < chunk:
            self._eval_envs.append(self._env_factory())
        gen = self.generator(step, "eval")
        if cfg.eval_tasks == "train":
            pool = sorted(self.task_pool) or list(range(cfg.train_tasks))
            seeds = [pool[k % len(pool)] for k in range(cfg.eval_episodes)]
        else:
            seeds = [cfg.eval_seed + k for k in range(cfg.eval_episodes)]
        eps = []
        self.policy.eval()
        try:
            for lo in range(0, len(seeds), chunk):
                b = collect_episodes(self._eval_envs, self.agent, seeds[lo:lo + chunk], group_size=1, max_turns=cfg.max_turns,
                                     generator=gen, greedy=cfg.eval_greedy, history_turns=cfg.history_turns)
                eps += b.episodes
        finally:
            self.policy.train()
        wins = sum(e.won for e in eps)
        lo, hi = clopper_pearson(wins, len(eps))
        return {"eval_success": wins / len(eps), "eval_success_low": lo, "eval_success_high": hi,
                "eval_return": float(np.mean([e.total_reward for e in eps])), "eval_length": float(np.mean([e.length for e in eps])),
                "eval_episodes": float(len(eps))}

    def token_advantages(self, batch: AgentBatch, credit, T: int, mask: torch.Tensor) -> torch.Tensor:
        if credit.token is not None:
            tok = credit.token.to(device=mask.device, dtype=mask.dtype)
            return torch.nn.functional.pad(tok, (0, T - tok.shape[1]))[:, :T] * mask
        return credit.advantages.to(device=mask.device, dtype=mask.dtype)[:, None] * mask

    def update(self, batch: AgentBatch, credit) -> dict:
        cfg = self.cfg
        steps = batch.steps
        n = len(steps)
        with torch.no_grad():
            old_all, mask_all, _ = self.agent.log_probs(steps) if (cfg.ppo_epochs > 1 or cfg.mini_batches > 1) else (None, None, None)
        acc = dict(loss=0.0, policy=0.0, entropy=0.0, clip=0.0)
        norms, loss_inputs, K = [], {}, 0
        gen = torch.Generator().manual_seed(self.seed_for(self.step + 1, "minibatch"))
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=gen) if cfg.mini_batches > 1 else torch.arange(n)
            for idx in torch.tensor_split(order, min(cfg.mini_batches, n)):
                rows = [steps[i] for i in idx.tolist()]
                logp, mask, ent = self.agent.log_probs(rows)
                if old_all is None:
                    old = logp.detach()
                else:
                    old = old_all[idx][:, :logp.shape[1]]
                adv = self.token_advantages(batch, _sub(credit, idx), logp.shape[1], mask)
                res = ppo_clip_loss(logp, old, adv, mask, clip_low=cfg.clip_low, clip_high=cfg.clip_high, aggregation=cfg.aggregation,
                                    max_length=logp.shape[1])
                loss = res.loss - cfg.entropy_coef * ent.mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norms.append(float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)))
                self.optimizer.step()
                K += 1
                acc["loss"] += float(loss.detach())
                acc["policy"] += float(res.policy_loss.detach())
                acc["entropy"] += float(ent.detach().mean())
                acc["clip"] += float(res.clip_fraction)
                if len(idx) == n and not loss_inputs:
                    loss_inputs = dict(logp=logp.detach(), old_logp=old.detach(), advantages=adv.detach(), mask=mask, loss=res.loss.detach())
        return {"loss": acc["loss"] / K, "policy_loss": acc["policy"] / K, "entropy": acc["entropy"] / K, "clip_fraction": acc["clip"] / K,
                "grad_norm": float(np.mean(norms)), "loss_inputs": loss_inputs}

    # -- the step -------------------------------------------------------------------------------------
    def train_step(self) -> StepResult:
        cfg = self.cfg
        if not self._selected:
            self._selected = True
            if self.task_pool is not None:
                self.task_pool = self.sample_filter.select_tasks(self, self.task_pool)
        if self.step == 0 and cfg.eval_every and self.logger is not None:
            t0 = time.perf_counter()
            ev = self.evaluate(0)
            self.logger.log(0, {**ev, "env_steps": float(self.env_steps), "time_eval_s": time.perf_counter() - t0})
        timer = StageTimer()
        step = self.step + 1
        batch = self.rollout(step)
        self.env_steps += batch.env_steps
        fresh = batch.episodes[:]
        timer.lap("rollout")
        batch, shaping = self.reward_shaper.apply(self, batch)  # rewards shaped per step (epo-process, debate); `fresh` keeps the task's
        metrics = dict(self.sample_filter.before_advantage(self, batch))
        metrics.update(shaping)
        credit = self.credit.compute(self, batch)
        upd = self.update(batch, credit)
        metrics.update(credit.metrics)
        metrics.update(self.credit.after_update(self, batch, credit))
        timer.lap("train")
        self.step = step
        if cfg.eval_every and step % cfg.eval_every == 0 or step == cfg.steps:
            metrics.update(self.evaluate(step))
            timer.lap("eval")
        valid = [s.valid for e in fresh for s in e.steps]
        metrics.update({
            "success_rate": float(np.mean([e.won for e in fresh])), "return_mean": float(np.mean([e.total_reward for e in fresh])),
            "episode_length": float(np.mean([e.length for e in fresh])), "invalid_action_rate": 1.0 - float(np.mean(valid)) if valid else 0.0,
            "env_steps": float(self.env_steps), "env_steps_per_s": batch.env_steps / max(batch.seconds, 1e-9),
            "advantage_abs": float(credit.advantages.abs().mean()),
            **{k: v for k, v in upd.items() if k != "loss_inputs"},
        })
        metrics.update(timer.metrics())
        li = dict(upd["loss_inputs"], credit=credit, batch=batch)
        return StepResult(step=step, metrics=metrics, loss_inputs=li)

    @staticmethod
    def plot_run(out) -> Path:
        return plot_agent_run(out)

    def close(self) -> None:
        for e in list(getattr(self, "envs", [])) + list(getattr(self, "_eval_envs", [])):
            try:
                e.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        super().close()


def _sub(credit, idx: torch.Tensor):
    """The credit result restricted to the step rows ``idx``."""
    from ..methods.agent_credit import CreditResult

    return CreditResult(advantages=credit.advantages[idx], token=None if credit.token is None else credit.token[idx])


def plot_agent_run(run) -> Path:
    """``figures/success.png``: held-out success (Clopper-Pearson 95% band) and training success vs environment steps."""
    import json

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run = Path(run)
    rows = read_metrics(run / "metrics.csv")
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    out = run / "figures" / "success.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ev = [r for r in rows if isinstance(r.get("eval_success"), float) and math.isfinite(r["eval_success"])]
    tr = [r for r in rows if isinstance(r.get("success_rate"), float) and math.isfinite(r["success_rate"])]
    label = f"{cfg.get('method', '?')} ({cfg.get('policy', '?')} policy, G={cfg.get('group_size', '?')})"
    if ev:
        x = [r["env_steps"] for r in ev]
        ax.plot(x, [r["eval_success"] for r in ev], marker="o", color="C0", label=f"held-out success, {label}")
        ax.fill_between(x, [r["eval_success_low"] for r in ev], [r["eval_success_high"] for r in ev], color="C0", alpha=0.2,
                        label=f"Clopper-Pearson 95% ({int(ev[-1]['eval_episodes'])} tasks)")
    if tr:
        ax.plot([r["env_steps"] for r in tr], [r["success_rate"] for r in tr], color="C1", alpha=0.7, label="training episodes' success")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"agent run {run.name}: {cfg.get('env', '?')}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    """``polab train agent``: options generated from :class:`AgentConfig` and the method groups."""
    import sys

    return base.cli_main(AgentTrainer, AgentConfig, PRESETS, sys.argv[1:] if argv is None else argv, prog="polab train agent",
                         default_preset="cpu-sokoban",
                         description="Multi-turn agent training in text environments with registered credit assignment "
                                     "(grpo, rloo, gigpo, ...) and a small choice policy or a language model.")
