"""Registered offline actor losses (``--method``) of :mod:`polab.scaled.trainers.offline`: ``td3bc``, ``prdc``, ``a2pr``.

All share TD3's critic step (the trainer's); a method supplies

- ``setup(trainer)``: once, after the data and networks exist (PRDC builds its nearest-neighbour index; A2PR its
  value network and VAE);
- ``before_actor(trainer, batch, critic_out) -> dict``: every gradient step, after the critic step (A2PR's value
  and VAE updates); returns metrics;
- ``actor_loss(trainer, batch, pi, q_pi) -> OfflineActorLoss``: on the delayed actor steps, calling the core
  (:mod:`polab.estimators.offline`) unchanged.
- ``sample_batch(trainer, generator) -> dict``: every gradient step, the minibatch (default: uniform over the
  dataset; ``td3bc-pgd`` in :mod:`polab.scaled.methods.offline_pgd` mixes in synthetic transitions).

A new method is a class registered here (``@OFFLINE_LOSSES.register("name")``) or in a plugin module, never a
branch in the trainer's step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from polab.estimators.offline import (
    DatasetConstraintIndex,
    a2pr_actor_loss,
    a2pr_vae_loss,
    a2pr_value_target,
    prdc_actor_loss,
    td3_critic_target,
    td3bc_actor_loss,
)

from .registry import Method, Registry

__all__ = ["A2PRLoss", "OFFLINE_LOSSES", "OfflineLoss", "PRDCLoss", "TD3BCLoss", "VAE"]


class OfflineLoss(Method):
    """Base of the offline actor losses (protocol in the module docstring)."""

    def setup(self, trainer) -> None:
        return None

    def begin_step(self, trainer, step: int) -> None:
        """Start of trainer step ``step``: reseed the method's own random streams from ``(seed, step)`` (exact resume)."""
        return None

    def before_actor(self, trainer, batch: dict, critic_out: dict) -> dict:
        return {}

    def sample_batch(self, trainer, generator: torch.Generator) -> dict:
        """One minibatch (``batch_size`` rows of ``trainer.data``'s keys): uniform over the dataset by default; a method
        that is also a data source (``td3bc-pgd``: synthetic plus real transitions) overrides it."""
        data = trainer.data
        idx = torch.randint(data["actions"].shape[0], (trainer.cfg.batch_size,), generator=generator,
                            device=data["actions"].device)
        return {k: v[idx] for k, v in data.items()}

    def actor_loss(self, trainer, batch: dict, pi: torch.Tensor, q_pi: torch.Tensor):
        raise NotImplementedError


OFFLINE_LOSSES = Registry("offline actor loss", "method", base=OfflineLoss)


def _alpha_ok(alpha) -> list[str]:
    return [] if isinstance(alpha, (int, float)) and alpha > 0 else [f"alpha must be > 0, got {alpha!r}"]


@OFFLINE_LOSSES.register("td3bc", aliases=("td3+bc",))
class TD3BCLoss(OfflineLoss):
    """TD3+BC (Fujimoto & Gu 2021): -lambda Q + (pi(s) - a)^2, lambda = alpha / mean|Q|."""

    @dataclass
    class Options:
        alpha: float = field(default=2.5, metadata={"help": "TD3+BC alpha (paper 2.5)"})

    metrics = ("lambda", "bc_loss")

    @classmethod
    def validate(cls, options, config) -> list[str]:
        return _alpha_ok(options.alpha)

    def actor_loss(self, trainer, batch, pi, q_pi):
        out = td3bc_actor_loss(q_pi, pi, batch["actions"], alpha=self.options.alpha)
        return out, {"lambda": float(out.lambda_), "bc_loss": float(out.regulariser.detach())}


@OFFLINE_LOSSES.register("prdc")
class PRDCLoss(OfflineLoss):
    """PRDC (Ran et al. 2023): -lambda Q + (pi(s) - a_hat)^2, a_hat the action of the nearest (beta s, a) pair."""

    @dataclass
    class Options:
        alpha: float = field(default=2.5, metadata={"help": "lambda = alpha / mean|Q| (authors: 2.5; 40 on halfcheetah)"})
        beta: float = field(default=2.0, metadata={"help": "state weight of the search key (authors: 2.0)"})
        backend: str = field(default="kdtree", metadata={"help": "exact nearest-neighbour search",
                                                          "choices": DatasetConstraintIndex.BACKENDS})

    metrics = ("lambda", "dc_loss", "dc_distance", "time_nn_s")

    @classmethod
    def validate(cls, options, config) -> list[str]:
        errs = _alpha_ok(options.alpha)
        if not (isinstance(options.beta, (int, float)) and options.beta >= 0):
            errs.append(f"prdc.beta must be >= 0, got {options.beta!r}")
        if options.backend not in DatasetConstraintIndex.BACKENDS:
            errs.append(f"prdc.backend must be one of {DatasetConstraintIndex.BACKENDS}, got {options.backend!r}")
        return errs

    def setup(self, trainer) -> None:
        # keys over the (normalised) states the policy sees, as PRDC's main.py builds them after normalize_states
        self.index = DatasetConstraintIndex(trainer.data["states"].cpu(), trainer.data["actions"].cpu(),
                                            beta=self.options.beta, backend=self.options.backend)

    def actor_loss(self, trainer, batch, pi, q_pi):
        import time

        t0 = time.perf_counter()
        _, dist, near = self.index.query(batch["states"].detach(), pi.detach())
        dt = time.perf_counter() - t0
        out = prdc_actor_loss(q_pi, pi, near, alpha=self.options.alpha)
        return out, {"lambda": float(out.lambda_), "dc_loss": float(out.regulariser.detach()),
                     "dc_distance": float(dist.mean()), "time_nn_s": dt}


class VAE(nn.Module):
    """A2PR's conditional VAE (``A2PR.py::VAE``, ltlhuuu/A2PR @ 0a42ccfa): encoder and decoder of two ReLU layers,
    log-std clamped to [-4, 15], decoder output ``max_action * tanh``; sampling draws z ~ N(0, I) clipped to [-0.5, 0.5]."""

    def __init__(self, state_dim: int, action_dim: int, latent_dim: int, max_action: float, hidden: int = 750):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(state_dim + action_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent_dim)
        self.log_std = nn.Linear(hidden, latent_dim)
        self.dec = nn.Sequential(nn.Linear(state_dim + latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, action_dim))
        self.max_action, self.latent_dim = float(max_action), latent_dim

    def forward(self, states, actions, generator=None):
        h = self.enc(torch.cat([states, actions], dim=1))
        mean, std = self.mean(h), self.log_std(h).clamp(-4, 15).exp()
        z = mean + std * torch.randn(std.shape, generator=generator, dtype=std.dtype, device=std.device)
        return self.decode(states, z), mean, std

    def decode(self, states, z):
        return self.max_action * torch.tanh(self.dec(torch.cat([states, z], dim=1)))


@OFFLINE_LOSSES.register("a2pr")
class A2PRLoss(OfflineLoss):
    """A2PR (Liu et al. 2024): advantage-filtered VAE proposes actions; regularise towards the higher-advantage one.

    Departure: the actor is the TD3 actor every method shares (two hidden layers of ``--hidden``); the authors'
    ``A2PR_Actor`` (``core/network/actor.py``, ltlhuuu/A2PR @ 0a42ccfa) has three hidden layers of 256.
    """

    @dataclass
    class Options:
        alpha: float = field(default=2.5, metadata={"help": "lambda = alpha / mean|Q| (authors: 2.5; 40 on halfcheetah)"})
        mask: float = field(default=1.0, metadata={"help": "regulariser weight per non-negative-advantage action (authors: 0.4 hopper)"})
        vae_weight: float = field(default=1.0, metadata={"help": "reconstruction weight (authors: 1.0; 1.5 walker2d)"})
        vae_hidden: int = field(default=750, metadata={"help": "VAE hidden width (authors: 750)"})
        vae_lr: float = field(default=1e-3, metadata={"help": "VAE Adam lr (authors: torch's default 1e-3)"})
        value_lr: float = field(default=3e-4, metadata={"help": "value network Adam lr (authors: 3e-4)"})

    metrics = ("lambda", "bc_loss", "value_loss", "vae_loss", "positive_advantage", "vae_chosen")

    @classmethod
    def validate(cls, options, config) -> list[str]:
        errs = _alpha_ok(options.alpha)
        for k in ("mask", "vae_weight"):
            if not (isinstance(getattr(options, k), (int, float)) and getattr(options, k) >= 0):
                errs.append(f"a2pr.{k} must be >= 0, got {getattr(options, k)!r}")
        for k in ("vae_lr", "value_lr"):
            if not (isinstance(getattr(options, k), (int, float)) and getattr(options, k) > 0):
                errs.append(f"a2pr.{k} must be > 0, got {getattr(options, k)!r}")
        if not (isinstance(options.vae_hidden, int) and options.vae_hidden >= 1):
            errs.append(f"a2pr.vae_hidden must be a positive integer, got {options.vae_hidden!r}")
        return errs

    def setup(self, trainer) -> None:
        sd, ad, ma = trainer.state_dim, trainer.action_dim, trainer.max_action
        g = torch.Generator().manual_seed(trainer.seed_for(0, "a2pr-init"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(g.initial_seed()))
            self.value = nn.Sequential(nn.Linear(sd, trainer.cfg.hidden), nn.ReLU(), nn.Linear(trainer.cfg.hidden, trainer.cfg.hidden),
                                       nn.ReLU(), nn.Linear(trainer.cfg.hidden, 1)).to(trainer.device)
            self.vae = VAE(sd, ad, 2 * ad, ma, self.options.vae_hidden).to(trainer.device)  # latent 2 * action_dim (authors)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=self.options.value_lr, foreach=True)
        self.vae_opt = torch.optim.Adam(self.vae.parameters(), lr=self.options.vae_lr, foreach=True)
        self.generator = torch.Generator(device=trainer.device).manual_seed(trainer.seed_for(0, "a2pr-noise"))

    def begin_step(self, trainer, step: int) -> None:
        self.generator.manual_seed(trainer.seed_for(step, "a2pr-noise"))

    def models(self) -> dict:
        return {"a2pr_value": self.value, "a2pr_vae": self.vae}

    def state_dict(self) -> dict:
        return {"value_opt": self.value_opt.state_dict(), "vae_opt": self.vae_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.value_opt.load_state_dict(state["value_opt"])
        self.vae_opt.load_state_dict(state["vae_opt"])

    def before_actor(self, trainer, batch, critic_out):
        L = trainer.learner
        s, a = batch["states"], batch["actions"]
        with torch.no_grad():  # online-critic backup at the same smoothed next action (A2PR.py)
            n1, n2 = L.critic(batch["next_states"], critic_out["next_actions"])
            online = td3_critic_target(batch["rewards"], batch["terminals"], n1, n2, gamma=L.opt.gamma)
            v_target = a2pr_value_target(critic_out["target"], online)
        v = self.value(s)[:, 0]
        value_loss = F.mse_loss(v, v_target)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()
        self._v = v.detach()  # the value before its step, as the authors' actor step uses it
        recon, mean, std = self.vae(s, a, generator=self.generator)
        with torch.no_grad():
            q_data = L.critic.q1(s, a)
        self._q_data = q_data
        loss, _, _, pos = a2pr_vae_loss(recon, a, mean, std, q_data, self._v, vae_weight=self.options.vae_weight)
        self.vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.vae_opt.step()
        return {"value_loss": float(value_loss.detach()), "vae_loss": float(loss.detach()), "positive_advantage": float(pos)}

    def actor_loss(self, trainer, batch, pi, q_pi):
        L = trainer.learner
        s = batch["states"]
        recon_pi, _, _ = self.vae(s, pi, generator=self.generator)  # keeps its gradient through pi (authors' code)
        with torch.no_grad():
            q_vae = L.critic.q1(s, recon_pi)
            q_data = L.critic.q1(s, batch["actions"])  # the critic after this step's update, as in A2PR.py
        out = a2pr_actor_loss(q_pi, pi, batch["actions"], recon_pi, q_vae, q_data, self._v, alpha=self.options.alpha,
                              mask=self.options.mask)
        return out, {"lambda": float(out.lambda_), "bc_loss": float(out.regulariser.detach()),
                     "vae_chosen": float(out.extras["vae_chosen"])}
