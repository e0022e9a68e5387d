"""``polab train offline``: offline actor-critic (TD3+BC, PRDC, A2PR) on a local Minari dataset.

::

    polab data make hopper-medium
    polab train offline --dataset hopper-medium --method td3bc --steps 40 --out runs/hopper_td3bc
    polab train offline --dataset hopper-medium --method prdc --prdc.beta 2.0
    polab train offline --dataset hopper-medium --method a2pr --a2pr.mask 0.4
    polab train offline --dataset invertedpendulum-medium-replay --method td3bc-pgd --td3bc-pgd.guidance-coeff 0.1

The critic is TD3's (:class:`polab.scaled.control.td3.TD3Learner`: twin Q, clipped double-Q target with target
policy smoothing, soft targets, delayed actor), shared by every method; the actor loss is the registered method
``--method`` (:data:`polab.scaled.methods.offline_losses.OFFLINE_LOSSES`), which calls the core
(:mod:`polab.estimators.offline`) unchanged. States are normalised with the dataset's mean and std
(``--normalize-states``, TD3+BC's eq. 4), and the evaluation policy sees the same normalisation.

One trainer *step* is ``--grad-steps-per-step`` gradient steps (default 250, so ``--steps 40`` = 10,000 gradient
steps); metrics are their means, ``grad_steps_per_s`` their rate (evaluation excluded). Every ``--eval-every``
steps (and at the last) the deterministic actor plays ``--eval-episodes`` episodes of the dataset's environment
(seeds ``10**6 + 1000 * step + i``): ``eval_return`` and the D4RL-normalised ``normalized_score`` (the dataset's
own reference returns). Each step's minibatches and noises are seeded from ``(seed, step)``, so ``--resume``
continues exactly. ``--lr`` is the actor's and the critic's Adam rate (3e-4 as the papers); ``--max-grad-norm``
is not used (the papers do not clip).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ..methods.offline_losses import OFFLINE_LOSSES
from .base import StepResult, Trainer, TrainerConfig, cli_main

__all__ = ["OfflineConfig", "OfflineTrainer", "PRESETS", "main"]


@dataclass
class OfflineConfig(TrainerConfig):
    """Options of ``polab train offline``."""

    dataset: str = field(default="invertedpendulum-medium", metadata={
        "help": "TASK-QUALITY made by `polab data make`, or a local Minari id (namespace/name-vN)"})
    method: str = field(default="td3bc", metadata={"help": "offline actor loss: " + ", ".join(OFFLINE_LOSSES.names())})
    steps: int = field(default=40, metadata={"help": "trainer steps (each --grad-steps-per-step gradient steps)"})
    grad_steps_per_step: int = field(default=250, metadata={"help": "gradient steps per trainer step"})
    lr: float = field(default=3e-4, metadata={"help": "actor and critic Adam learning rate"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})
    hidden: int = field(default=256, metadata={"help": "hidden width of actor, critics (and A2PR's value net)"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    tau: float = field(default=0.005, metadata={"help": "target soft-update rate"})
    policy_noise: float = field(default=0.2, metadata={"help": "target smoothing noise std (x max_action)"})
    noise_clip: float = field(default=0.5, metadata={"help": "target smoothing noise clip (x max_action)"})
    policy_freq: int = field(default=2, metadata={"help": "actor and target update every this many critic steps"})
    normalize_states: bool = field(default=True, metadata={"help": "normalise states by the dataset's mean and std"})
    eval_every: int = field(default=10, metadata={"help": "evaluate every this many trainer steps (and at the last)"})
    eval_episodes: int = field(default=5, metadata={"help": "evaluation episodes"})
    checkpoint_every: int = field(default=20, metadata={"help": "save a checkpoint every this many steps (and at the last)"})
    tensorboard: bool = field(default=False, metadata={"help": "also write TensorBoard scalars"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:N or auto"})

    method_fields: ClassVar = {"method": OFFLINE_LOSSES}
    kind: ClassVar[str] = "offline trainer"

    def check(self, world_size: int) -> list[str]:
        errs = []
        if world_size != 1:
            errs.append("the offline trainer runs in one process; drop torchrun")
        for k in ("grad_steps_per_step", "batch_size", "hidden", "policy_freq", "eval_every", "eval_episodes"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                errs.append(f"{k} must be a positive integer, got {v!r}")
        if not 0 <= self.gamma <= 1:
            errs.append(f"gamma must lie in [0, 1], got {self.gamma!r}")
        if not 0 < self.tau <= 1:
            errs.append(f"tau must lie in (0, 1], got {self.tau!r}")
        if self.policy_noise < 0 or self.noise_clip < 0:
            errs.append("policy_noise and noise_clip must be >= 0")
        try:
            from ..offline.datasets import _resolve_id

            _resolve_id(self.dataset)
        except ValueError as exc:
            errs.append(f"dataset: {exc}")
        return errs


PRESETS = {
    "cpu": {},
    "quick": {"steps": 4, "grad_steps_per_step": 50, "eval_every": 2, "eval_episodes": 2, "hidden": 64},
    # the papers' scale: 1M gradient steps, evaluation every 5000 over 10 episodes (GPU)
    "paper": {"steps": 200, "grad_steps_per_step": 5000, "eval_every": 1, "eval_episodes": 10, "device": "auto"},
}


class _ActorFolder(torch.nn.Module):
    """The actor with ``save_pretrained`` (a ``model.safetensors`` folder) so the core checkpoints it as ``policy/``."""

    def __init__(self, actor):
        super().__init__()
        self.actor = actor

    def forward(self, states):
        return self.actor(states)

    def save_pretrained(self, folder) -> None:
        from pathlib import Path

        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(Path(folder) / "model.safetensors"))


class OfflineTrainer(Trainer):
    """TD3 critic + a registered offline actor loss on a fixed dataset (see the module docstring)."""

    label: ClassVar[str] = "offline"
    progress_metrics: ClassVar[dict[str, str]] = {"critic_loss": "Lq", "grad_steps_per_s": "it/s", "normalized_score": "score"}

    def build(self) -> None:
        from ..control.td3 import TD3Learner, TD3Options
        from ..offline.datasets import load_offline_dataset

        cfg = self.cfg
        ds = load_offline_dataset(cfg.dataset)
        if ds.env_id is None:
            raise ValueError(f"dataset {ds.dataset_id} names no environment; the offline trainer evaluates in it.")
        self.dataset = ds
        import gymnasium as gym

        env = gym.make(ds.env_id)
        self.state_dim, self.action_dim = env.observation_space.shape[0], env.action_space.shape[0]
        self.max_action = float(env.action_space.high[0])
        env.close()
        dev = self.device
        S, S2 = torch.as_tensor(ds.observations), torch.as_tensor(ds.next_observations)
        if cfg.normalize_states:
            from polab.estimators.offline import state_normalizer

            self.norm = state_normalizer(S.double())
            self.norm = type(self.norm)(self.norm.mean.float(), self.norm.std.float())
        else:
            self.norm = None
        f = (lambda x: self.norm(x)) if self.norm is not None else (lambda x: x)
        self.data = {"states": f(S).to(dev), "actions": torch.as_tensor(ds.actions).to(dev),
                     "rewards": torch.as_tensor(ds.rewards).to(dev), "next_states": f(S2).to(dev),
                     "terminals": torch.as_tensor(ds.terminals).to(dev)}
        opts = TD3Options(hidden=cfg.hidden, actor_lr=cfg.lr, critic_lr=cfg.lr, gamma=cfg.gamma, tau=cfg.tau,
                          policy_noise=cfg.policy_noise, noise_clip=cfg.noise_clip, policy_freq=cfg.policy_freq,
                          batch_size=cfg.batch_size)
        self.learner = TD3Learner(self.state_dim, self.action_dim, self.max_action, opts, seed=self.seed_for(0, "init"),
                                  device=dev)
        self.policy = _ActorFolder(self.learner.actor)
        self.optimizer = self.learner.actor_optimizer
        self.method = self.methods["method"]
        self.method.setup(self)
        self.batch_generator = torch.Generator(device=dev)
        self.last_eval: dict = {}

    def metric_names(self) -> list[str]:
        return ["critic_loss", "q_data", "actor_loss", "q_pi", "grad_steps", "grad_steps_per_s", "eval_return",
                "normalized_score"]

    # -- checkpoints: the critic, the targets and the critic optimiser besides the policy and its optimiser
    def checkpoint_models(self) -> dict:
        models = super().checkpoint_models()
        L = self.learner
        models.update({"critic": L.critic, "actor_target": L.actor_target, "critic_target": L.critic_target})
        return models

    def extra_state(self) -> dict:
        return {"critic_optimizer": self.learner.critic_optimizer.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.learner.critic_optimizer.load_state_dict(state["critic_optimizer"])

    # -- evaluation ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        s = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)[None]
        if self.norm is not None:
            s = self.norm(s)
        return self.learner.actor(s)[0].cpu().numpy().astype(np.float64)

    def evaluate(self, step: int) -> dict:
        from ..control.td3 import evaluate_policy

        rets = evaluate_policy(self.dataset.env_id, self.act, episodes=self.cfg.eval_episodes, seed=10**6 + 1000 * step)
        out = {"eval_return": float(np.mean(rets))}
        if self.dataset.ref_min_score is not None and self.dataset.ref_max_score is not None:
            out["normalized_score"] = float(self.dataset.normalized_score(np.mean(rets)))
        return out

    # -- one step -----------------------------------------------------------------------------------------
    def train_step(self) -> StepResult:
        cfg, L = self.cfg, self.learner
        step = self.step
        self.batch_generator.manual_seed(self.seed_for(step, "batch"))
        L.generator.manual_seed(self.seed_for(step, "target-noise"))
        self.method.begin_step(self, step)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}

        def add(d):
            for k, v in d.items():
                if isinstance(v, (int, float)):
                    sums[k] = sums.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1

        t0 = time.perf_counter()
        for i in range(cfg.grad_steps_per_step):
            g = step * cfg.grad_steps_per_step + i + 1  # global gradient-step count
            batch = self.method.sample_batch(self, self.batch_generator)  # uniform over the data unless the method is a data source
            c = L.critic_step(batch)
            add({"critic_loss": c["critic_loss"], "q_data": c["q_data"]})
            add(self.method.before_actor(self, batch, c))
            if g % cfg.policy_freq == 0:
                pi = L.actor(batch["states"])
                q_pi = L.critic.q1(batch["states"], pi)
                out, m = self.method.actor_loss(self, batch, pi, q_pi)
                L.actor_step(out.loss)
                L.update_targets()
                add({"actor_loss": float(out.loss.detach()), "q_pi": float(out.q_term.detach()), **m})
        dt = time.perf_counter() - t0
        metrics = {k: sums[k] / counts[k] for k in sums}
        self.step = step + 1
        metrics.update({"grad_steps": self.step * cfg.grad_steps_per_step, "grad_steps_per_s": cfg.grad_steps_per_step / dt})
        if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
            self.last_eval = self.evaluate(self.step)
            metrics.update(self.last_eval)
        return StepResult(self.step, metrics)


def main(argv=None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(OfflineTrainer, OfflineConfig, PRESETS, argv, prog="polab train offline", default_preset="cpu",
                    description=__doc__.split("\n\n")[0])
