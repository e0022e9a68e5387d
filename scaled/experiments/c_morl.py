"""C-MORL vs linear scalarisation at equal environment steps, on mo-gymnasium tasks (deep-sea-treasure with its known front).

``polab run c-morl`` trains, for each environment, seed and method, a set of policies and keeps every evaluated
policy in a Pareto archive; it reports the archive's hypervolume (:func:`polab.estimators.morl.hypervolume`,
exact), expected utility over the 0.01 simplex lattice, sparsity, and on deep-sea-treasure (original and
concave) the fraction of the known true front recovered and the hypervolume ratio.

Methods (same network, PPO settings, evaluation rule and training-step budget):

- ``c-morl`` (Liu et al., ICLR 2025): Pareto initialisation: one PPO policy per weight of the simplex lattice
  with step ``init_weight_step`` (authors' ``--delta-weight 0.2``), trained on :math:`w^\\top r` for
  ``init_fraction`` of the budget (authors' 1.5M of 2.5M); then ``ext_rounds`` rounds of Pareto extension: pick
  ``num_select`` archive policies by crowding distance (:func:`polab.estimators.morl.select_by_crowding`, boundary
  first, earlier picks excluded) and for each and each objective :math:`i` run PPO updates of
  :func:`polab.estimators.morl.cmorl_ipo_loss` (maximise :math:`J_i` with a log barrier keeping
  :math:`J_j \\ge \\varepsilon_j` from :func:`polab.estimators.morl.constraint_thresholds`), evaluating after
  every update as the authors' ``Extension_worker`` does.
- ``linear``: linear scalarisation, one PPO policy per weight of a finer lattice (``linear_weight_step``), the
  budget split evenly; every evaluated intermediate policy enters its archive too.

PPO here is a small multi-objective loop (vector critic, GAE once per objective through
:func:`polab.scaled.control.ppo.rollout_advantages` = the core GAE, the core :func:`ppo_clip_loss` and
:func:`clipped_value_loss`); rewards are multiplied by a fixed per-environment ``reward_scale`` for training only
(weights act on scaled rewards; evaluation and all metrics use the environment's own returns).

Presets: ``cpu`` (default; deep-sea-treasure and minecart, 40k training steps per run, 5 seeds; add
``--envs dst dst-concave minecart`` for the concave variant),
``quick`` (a few seconds; ``--quick`` is the same), ``paper`` (mo-hopper-2obj and mo-halfcheetah from
mo-gymnasium, 2.5M steps per run with 1.5M for initialisation as in the authors' MO-Hopper script; GPU/cluster
scale, several hours per seed on one CPU core; not run here).

Example::

    polab run c-morl --out runs/c_morl                      # CPU default
    polab run c-morl --quick --out /tmp/cmorl_quick
    polab run c-morl --preset paper --out runs/c_morl_paper

``hv_half_budget`` is the archive's hypervolume after half of the training steps (an anytime comparison);
``hv_gain_after_init`` the hypervolume gained after the step at which C-MORL's initialisation ends (for C-MORL: what
the constrained extension adds; for the baseline: what its last ``1 - init_fraction`` of training adds).

Run folder: ``config.json``, ``metrics.csv`` (``kind`` = ``curve`` rows: archive hypervolume after each update;
``final`` rows per environment, method and seed), ``figures/fronts.png``, ``figures/hv_curves.png``,
``figures/summary.png``, ``summary.json`` (means, 95% t intervals, exact two-sided permutation test of the
difference in means between methods, environment steps per second).

Measured (CPU default, 5 seeds, 40k training steps per run, ~10 min wall with ``nice -n 15`` on a shared 2-core
machine; bit-identical on rerun). DST: true front found 62% +- 16 (C-MORL) vs 60% +- 18 (linear), HV ratio
0.912 +- 0.082 vs 0.892 +- 0.099, final difference not significant (exact permutation p = 0.71); archive HV at half
the budget 297 vs 17 (p = 0.008; that is still its initialisation: 6 weights with more updates each
than the baseline's 11); the extension phase raised C-MORL's HV in 4 of 5 seeds. Minecart: EU -0.267 vs -0.343
(p = 0.008), HV 263 vs 255 (p = 0.74); policies collect little ore at this budget. ``--envs dst-concave``
(unsupported front points): HV ratio 0.813 +- 0.16 vs 0.389 +- 0.32 (p = 0.016), front found 46% vs 26%
(p = 0.087), the 124-treasure corner in 3 of 5 seeds vs 0 of 5.

Proxies and departures: deep-sea-treasure and minecart stand in for the paper's MuJoCo tasks at CPU scale; on
deep-sea-treasure policies are evaluated greedily (the environment is deterministic, so one episode gives the
exact return, comparable with the known front) and trained with :math:`\\gamma = 1`; :math:`\\beta` is 0.5 there
(the paper's 0.9 leaves a 10% slack, below the gap between neighbouring front points of a time penalty of a few
steps); truncated episodes are not bootstrapped.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from polab.estimators.gae import clipped_value_loss
from polab.estimators.morl import (
    cmorl_ipo_loss,
    constraint_thresholds,
    expected_utility,
    front_recovery,
    hypervolume,
    pareto_front,
    pareto_mask,
    select_by_crowding,
    simplex_weights,
    sparsity,
)
from polab.estimators.policy_loss import ppo_clip_loss

from ..checkpoint import atomic_write_text
from ..config import config_record, parse_config
from ..logger import MetricLogger, read_metrics
from ..run_folder import check_config_values, check_device, prepare_run_folder

__all__ = ["CMORLConfig", "MOEnvSetup", "MO_ENVS", "PRESETS", "MOActorCritic", "run", "main"]


@dataclass(frozen=True)
class MOEnvSetup:
    """What the experiment needs to know about a mo-gymnasium environment.

    ``ref_point``: hypervolume reference (DST: morl-baselines' (0, -25); minecart: morl-baselines' (-1, -1, -200);
    MuJoCo: the authors' (-100, -100) in ``scripts/hopper-2d.py``, there on normalised objectives).
    ``obs``: ``grid`` (one-hot of the (row, col) cell) or ``raw``. ``gamma``: training and evaluation discount.
    """

    gym_id: str
    num_objectives: int
    ref_point: tuple
    obs: str
    continuous: bool
    eval_greedy: bool
    eval_episodes: int
    eval_every: int
    gamma: float
    beta: float
    steps: int
    reward_scale: tuple
    max_episode_steps: int | None = None
    known_front: bool = False


MO_ENVS = {
    "dst": MOEnvSetup("deep-sea-treasure-v0", 2, (0.0, -25.0), "grid", False, True, 1, 1, 1.0, 0.5, 40_000,
                      (0.1, 0.1), known_front=True),
    "dst-concave": MOEnvSetup("deep-sea-treasure-concave-v0", 2, (0.0, -25.0), "grid", False, True, 1, 1, 1.0, 0.5,
                              60_000, (0.02, 0.1), known_front=True),
    "minecart": MOEnvSetup("minecart-deterministic-v0", 3, (-1.0, -1.0, -200.0), "raw", False, False, 2, 4, 0.98, 0.9,
                           40_000, (1.0, 1.0, 1.0)),
    "mo-hopper": MOEnvSetup("mo-hopper-2obj-v5", 2, (-100.0, -100.0), "raw", True, False, 5, 10, 0.99, 0.9,
                            2_500_000, (0.01, 0.01), max_episode_steps=500),
    "mo-halfcheetah": MOEnvSetup("mo-halfcheetah-v5", 2, (-100.0, -100.0), "raw", True, False, 5, 10, 0.99, 0.9,
                                 2_500_000, (0.01, 0.01), max_episode_steps=500),
}
METHODS = ("c-morl", "linear")


@dataclass
class CMORLConfig:
    """Options of ``polab run c-morl`` (defaults: the ``cpu`` preset)."""

    envs: tuple[str, ...] = field(default=("dst", "minecart"),
                                  metadata={"help": "environments", "choices": tuple(MO_ENVS)})
    algorithms: tuple[str, ...] = field(default=METHODS, metadata={"help": "methods compared", "choices": METHODS})
    seeds: int = field(default=5, metadata={"help": "independent seeds per environment and method"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    steps: int = field(default=0, metadata={"help": "training environment steps per run (0: the environment's default)"})
    num_envs: int = field(default=8, metadata={"help": "parallel environment copies per rollout"})
    rollout_steps: int = field(default=64, metadata={"help": "steps per environment copy per PPO update"})
    epochs: int = field(default=4, metadata={"help": "PPO epochs per update"})
    minibatches: int = field(default=2, metadata={"help": "PPO minibatches per epoch"})
    learning_rate: float = field(default=3e-3, metadata={"help": "Adam learning rate"})
    lambda_: float = field(default=0.95, metadata={"help": "GAE lambda"})
    clip: float = field(default=0.2, metadata={"help": "PPO clip range"})
    entropy_coef: float = field(default=0.01, metadata={"help": "entropy bonus"})
    value_coef: float = field(default=0.5, metadata={"help": "value-loss weight"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "gradient-norm clip"})
    hidden: int = field(default=64, metadata={"help": "hidden units of the actor and critic MLPs"})
    init_weight_step: float = field(default=0.0, metadata={
        "help": "C-MORL initialisation weight lattice step (0: 0.2 for 2 objectives, 0.5 for 3; authors 0.2)"})
    init_fraction: float = field(default=0.6, metadata={"help": "share of the budget for C-MORL's initialisation"})
    ext_rounds: int = field(default=2, metadata={"help": "C-MORL extension rounds"})
    num_select: int = field(default=3, metadata={"help": "policies extended per round (authors 5)"})
    beta: float = field(default=0.0, metadata={"help": "constraint relaxation beta (0: the environment's default)"})
    barrier_t: float = field(default=20.0, metadata={"help": "log-barrier temperature t (authors 20)"})
    linear_weight_step: float = field(default=0.0, metadata={
        "help": "linear-scalarisation weight lattice step (0: 0.1 for 2 objectives, 0.25 for 3)"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    out: str = field(default="runs/c_morl", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})


PRESETS = {
    "cpu": {},
    "quick": {"envs": ["dst"], "seeds": 2, "steps": 1024, "num_envs": 4, "rollout_steps": 32, "epochs": 2,
              "minibatches": 2, "ext_rounds": 1, "num_select": 2},
    "paper": {"envs": ["mo-hopper", "mo-halfcheetah"], "seeds": 5, "num_envs": 4, "rollout_steps": 512,
              "epochs": 10, "minibatches": 32, "learning_rate": 3e-4, "entropy_coef": 0.0, "hidden": 64,
              "init_fraction": 0.6, "ext_rounds": 1, "num_select": 5, "beta": 0.9, "device": "auto"},
}


# ---------------------------------------------------------------------------
# network and environments
# ---------------------------------------------------------------------------
def _layer(m: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(m.weight, gain)
    nn.init.zeros_(m.bias)
    return m


class MOActorCritic(nn.Module):
    """Separate two-layer tanh MLPs: a categorical or diagonal-Gaussian actor and a vector critic ``[B, m]``."""

    def __init__(self, in_dim: int, action_dim: int, num_objectives: int, *, hidden: int, continuous: bool):
        super().__init__()
        g = math.sqrt(2)
        self.continuous = continuous
        self.actor = nn.Sequential(_layer(nn.Linear(in_dim, hidden), g), nn.Tanh(), _layer(nn.Linear(hidden, hidden), g),
                                   nn.Tanh(), _layer(nn.Linear(hidden, action_dim), 0.01))
        self.critic = nn.Sequential(_layer(nn.Linear(in_dim, hidden), g), nn.Tanh(), _layer(nn.Linear(hidden, hidden), g),
                                    nn.Tanh(), _layer(nn.Linear(hidden, num_objectives), 1.0))
        if continuous:
            self.log_std = nn.Parameter(torch.full((action_dim,), -0.5))

    def dist(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.distributions.Distribution:
        out = self.actor(x) if out is None else out
        if self.continuous:
            return torch.distributions.Independent(
                torch.distributions.Normal(out, self.log_std.exp(), validate_args=False), 1, validate_args=False)
        return torch.distributions.Categorical(logits=out, validate_args=False)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def sample(self, x: torch.Tensor, generator: torch.Generator, out: torch.Tensor | None = None) -> torch.Tensor:
        out = self.actor(x) if out is None else out
        if self.continuous:
            z = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
            return out + self.log_std.exp() * z
        return torch.multinomial(torch.softmax(out, -1), 1, generator=generator).squeeze(1)

    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        out = self.actor(x)
        return out if self.continuous else out.argmax(-1)


def _make_env(setup: MOEnvSetup):
    import mo_gymnasium

    kw = {} if setup.max_episode_steps is None else {"max_episode_steps": setup.max_episode_steps}
    return mo_gymnasium.make(setup.gym_id, **kw)


class _Encoder:
    """Observation -> float32 network input (one-hot of the grid cell, or the raw vector)."""

    def __init__(self, setup: MOEnvSetup, env):
        self.grid = setup.obs == "grid"
        if self.grid:
            hi = np.asarray(env.observation_space.high, dtype=np.int64)
            self.side = int(hi.max())  # DST: cells 0..10 of an 11 x 11 map, Box(0, 11)
            self.dim = self.side * self.side
        else:
            self.dim = int(np.prod(env.observation_space.shape))

    def __call__(self, obs_list) -> np.ndarray:
        if self.grid:
            o = np.asarray(obs_list, dtype=np.int64).reshape(len(obs_list), -1)
            x = np.zeros((len(obs_list), self.dim), dtype=np.float32)
            x[np.arange(len(obs_list)), o[:, 0] * self.side + o[:, 1]] = 1.0
            return x
        return np.asarray(obs_list, dtype=np.float32).reshape(len(obs_list), -1)


def _to_action(a: torch.Tensor, continuous: bool):
    a = a.cpu().numpy()
    return a.astype(np.float32) if continuous else a.astype(np.int64)


# ---------------------------------------------------------------------------
# multi-objective PPO
# ---------------------------------------------------------------------------
class _Worker:
    """One policy being trained: network, optimiser, its environment copies and their current observations."""

    def __init__(self, net: MOActorCritic, cfg: CMORLConfig, setup: MOEnvSetup, enc: _Encoder, *, seed: int,
                 device: torch.device):
        self.net, self.cfg, self.setup, self.enc, self.dev = net, cfg, setup, enc, device
        self.opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.envs = [_make_env(setup) for _ in range(cfg.num_envs)]
        self.obs = [e.reset(seed=seed * 1000 + i)[0] for i, e in enumerate(self.envs)]
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.cpu_gen = torch.Generator().manual_seed(seed + 1)
        self.scale = torch.tensor(setup.reward_scale, dtype=torch.float32, device=device)

    def close(self):
        for e in self.envs:
            e.close()

    def rollout(self):
        cfg, N, T, m = self.cfg, self.cfg.num_envs, self.cfg.rollout_steps, self.setup.num_objectives
        xs, acts, logps, vals, rews, dones = [], [], [], [], [], []
        for _ in range(T):
            x = torch.as_tensor(self.enc(self.obs), device=self.dev)
            with torch.no_grad():
                out = self.net.actor(x)
                a = self.net.sample(x, self.gen, out)
                lp = self.net.dist(x, out).log_prob(a)
                v = self.net.value(x)
            act = _to_action(a, self.net.continuous)
            r = np.zeros((N, m), dtype=np.float32)
            d = np.zeros(N, dtype=np.float32)
            for k, env in enumerate(self.envs):
                o, rk, te, tr, _ = env.step(act[k])
                r[k] = rk
                if te or tr:
                    d[k] = 1.0
                    o, _ = env.reset()
                self.obs[k] = o
            xs.append(x); acts.append(a); logps.append(lp); vals.append(v)
            rews.append(torch.as_tensor(r, device=self.dev) * self.scale)
            dones.append(torch.as_tensor(d, device=self.dev))
        with torch.no_grad():
            next_v = self.net.value(torch.as_tensor(self.enc(self.obs), device=self.dev))
        from ..control.ppo import rollout_advantages  # the core GAE on [T, N] rollouts

        V, R, D = torch.stack(vals), torch.stack(rews), torch.stack(dones)  # [T, N, m], [T, N, m], [T, N]
        ones = torch.ones_like(D)
        adv, ret = zip(*(rollout_advantages(R[..., j], V[..., j], D, ones, next_v[:, j], gamma=self.setup.gamma,
                                            lambda_=cfg.lambda_) for j in range(m)))
        flat = lambda z: z.reshape((T * N,) + z.shape[2:])  # noqa: E731
        return (flat(torch.stack(xs)), flat(torch.stack(acts)), flat(torch.stack(logps)),
                flat(torch.stack(adv, -1)), flat(torch.stack(ret, -1)))

    def update(self, *, weight=None, objective=None, current_returns=None, thresholds=None) -> dict:
        """One PPO update: linear scalarisation (``weight``) or the C-MORL-IPO constrained loss (``objective``)."""
        cfg = self.cfg
        x, a, old_lp, adv, ret = self.rollout()
        n = x.shape[0]
        mb = max(2, n // cfg.minibatches)
        w = None if weight is None else torch.as_tensor(weight, dtype=adv.dtype, device=self.dev)
        stats = {"barrier_active": 0.0, "clip_fraction": 0.0}
        count = 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=self.cpu_gen).to(self.dev)
            for s in range(0, n, mb):
                j = perm[s:s + mb]
                dist = self.net.dist(x[j])
                lp = dist.log_prob(a[j])[:, None]
                ones = torch.ones_like(lp)
                if w is not None:
                    A = adv[j] @ w
                    A = (A - A.mean()) / (A.std() + 1e-8)
                    pl = ppo_clip_loss(lp, old_lp[j][:, None], A[:, None], ones, clip_low=cfg.clip)
                    loss_pi, clipf = pl.loss, pl.clip_fraction
                else:
                    res = cmorl_ipo_loss(lp, old_lp[j][:, None], adv[j][:, None, :], ones, objective=objective,
                                         current_returns=current_returns, thresholds=thresholds, clip=cfg.clip,
                                         t=cfg.barrier_t)
                    loss_pi, clipf = res.loss, res.objective.clip_fraction
                    stats["barrier_active"] += float(res.barrier.active.float().mean()) if res.barrier.active.numel() else 0.0
                v = self.net.value(x[j])
                vl = clipped_value_loss(v, ret[j], ret[j], torch.ones_like(v), clip_range=None).loss
                loss = loss_pi + cfg.value_coef * vl - cfg.entropy_coef * dist.entropy().mean()
                self.opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.opt.step()
                stats["clip_fraction"] += clipf
                count += 1
        return {k: v / max(1, count) for k, v in stats.items()}


class _Evaluator:
    """Return vector of a policy: greedy (deterministic env: one exact episode) or the mean over sampled episodes."""

    def __init__(self, setup: MOEnvSetup, enc: _Encoder, device: torch.device, seed: int):
        self.setup, self.enc, self.dev = setup, enc, device
        self.env = _make_env(setup)
        self.gen = torch.Generator(device=device).manual_seed(seed + 7)
        self.seed = seed
        self.steps = 0

    @torch.no_grad()
    def __call__(self, net: MOActorCritic) -> np.ndarray:
        s = self.setup
        total = np.zeros(s.num_objectives)
        for ep in range(s.eval_episodes):
            o, _ = self.env.reset(seed=self.seed * 7919 + ep)
            disc, done = 1.0, False
            while not done:
                x = torch.as_tensor(self.enc([o]), device=self.dev)
                a = net.greedy(x) if s.eval_greedy else net.sample(x, self.gen)
                o, r, te, tr, _ = self.env.step(_to_action(a, net.continuous)[0])
                total += disc * np.asarray(r, dtype=np.float64)
                disc *= s.gamma
                done = te or tr
                self.steps += 1
        return total / s.eval_episodes


class _Archive:
    """Every evaluated policy's return vector; networks kept for the non-dominated ones (unique returns)."""

    def __init__(self, m: int):
        self.points = np.zeros((0, m))
        self.nets: list = []

    def add(self, ret: np.ndarray, net: MOActorCritic) -> None:
        if len(self.points) and (np.abs(self.points - ret).max(axis=1) < 1e-9).any():
            return
        pts = np.vstack([self.points, ret[None]])
        keep = pareto_mask(pts)
        if not keep[-1]:
            return
        self.nets = [n for n, k in zip(self.nets + [copy.deepcopy(net.state_dict())], keep) if k]
        self.points = pts[keep]


# ---------------------------------------------------------------------------
# one run = one (environment, method, seed)
# ---------------------------------------------------------------------------
def _weights(m: int, step: float) -> np.ndarray:
    return simplex_weights(m, step=step)


def _run_one(cfg: CMORLConfig, env_name: str, method: str, seed: int, dev: torch.device, log) -> dict:
    setup = MO_ENVS[env_name]
    m = setup.num_objectives
    steps = cfg.steps or setup.steps
    per_update = cfg.num_envs * cfg.rollout_steps
    budget = max(1, steps // per_update)
    probe = _make_env(setup)
    enc = _Encoder(setup, probe)
    act_dim = int(probe.action_space.shape[0]) if setup.continuous else int(probe.action_space.n)
    probe.close()
    torch.manual_seed(seed)  # network initialisation: the one seeding block of a run
    evaluator = _Evaluator(setup, enc, dev, seed)
    archive = _Archive(m)
    beta = cfg.beta or setup.beta
    used = 0
    t0 = time.perf_counter()
    curve = []

    def new_net():
        return MOActorCritic(enc.dim, act_dim, m, hidden=cfg.hidden, continuous=setup.continuous).to(dev)

    def after_update(net, worker_seed, phase):
        nonlocal used
        used += 1
        ret = None
        if used % setup.eval_every == 0 or phase.endswith("last"):
            ret = evaluator(net)
            archive.add(ret, net)
        hv = hypervolume(archive.points, setup.ref_point) if len(archive.points) else 0.0
        curve.append((used * per_update, hv))
        log({"kind": "curve", "env": env_name, "method": method, "seed": seed, "phase": phase.replace("-last", ""),
             "env_steps": used * per_update, "hypervolume": hv, "archive_size": len(archive.points)})
        return ret

    bar = tqdm(total=budget, desc=f"{method} {env_name} seed {seed}", disable=not cfg.progress, leave=False)
    if method == "linear":
        W = _weights(m, cfg.linear_weight_step or (0.1 if m == 2 else 0.25))
        share = [budget // len(W) + (1 if k < budget % len(W) else 0) for k in range(len(W))]
        for k, (w, u) in enumerate(zip(W, share)):
            net = new_net()
            wk = _Worker(net, cfg, setup, enc, seed=seed * 100 + k, device=dev)
            for it in range(u):
                wk.update(weight=w)
                after_update(net, k, "linear" + ("-last" if it == u - 1 else ""))
                bar.update(1)
            wk.close()
    else:
        W = _weights(m, cfg.init_weight_step or (0.2 if m == 2 else 0.5))
        init_budget = int(cfg.init_fraction * budget)
        share = [init_budget // len(W) + (1 if k < init_budget % len(W) else 0) for k in range(len(W))]
        for k, (w, u) in enumerate(zip(W, share)):
            net = new_net()
            wk = _Worker(net, cfg, setup, enc, seed=seed * 100 + k, device=dev)
            for it in range(u):
                wk.update(weight=w)
                after_update(net, k, "init" + ("-last" if it == u - 1 else ""))
                bar.update(1)
            wk.close()
        history: list = []
        remaining = budget - used
        for rnd in range(cfg.ext_rounds):
            round_budget = remaining // (cfg.ext_rounds - rnd)
            sel = select_by_crowding(archive.points, cfg.num_select, exclude=history)
            if len(sel) == 0:  # every archive policy was extended before: extend the most isolated again
                sel = select_by_crowding(archive.points, cfg.num_select)
            history.extend(tuple(archive.points[i].tolist()) for i in sel)
            per = max(1, round_budget // (len(sel) * m))
            parents = [(archive.points[i].copy(), copy.deepcopy(archive.nets[i])) for i in sel]
            for pi, (parent_ret, parent_sd) in enumerate(parents):
                eps = constraint_thresholds(parent_ret, beta=beta) * np.asarray(setup.reward_scale)
                for obj in range(m):
                    if used >= budget:
                        break
                    net = new_net()
                    net.load_state_dict(parent_sd)
                    wk = _Worker(net, cfg, setup, enc, seed=seed * 100 + 50 + rnd * 10 + pi * m + obj, device=dev)
                    current = parent_ret.copy()
                    u = min(per, budget - used)
                    for it in range(u):
                        wk.update(objective=obj, current_returns=current * np.asarray(setup.reward_scale),
                                  thresholds=eps)
                        r = after_update(net, pi, "extend" + ("-last" if it == u - 1 else ""))
                        if r is not None:
                            current = r
                        bar.update(1)
                    wk.close()
            remaining = budget - used
    bar.close()
    wall = time.perf_counter() - t0
    front = pareto_front(archive.points)
    res = {"env": env_name, "method": method, "seed": seed, "train_env_steps": used * per_update,
           "eval_env_steps": evaluator.steps, "wall_s": wall,
           "env_steps_per_s": (used * per_update + evaluator.steps) / wall,
           "hypervolume": hypervolume(front, setup.ref_point),
           "expected_utility": expected_utility(front, simplex_weights(m, step=0.01)),
           "sparsity": sparsity(front), "front_size": len(front), "front": front.tolist(), "curve": curve,
           # anytime view: the archive's hypervolume once half of the budget's training steps are spent
           "hv_half_budget": max([hv for s_, hv in curve if s_ <= budget * per_update / 2], default=0.0),
           # at the end of C-MORL's initialisation (int(init_fraction * budget) updates), for both methods
           "hv_at_init_end": max([hv for s_, hv in curve if s_ <= int(cfg.init_fraction * budget) * per_update],
                                 default=0.0)}
    res["hv_gain_after_init"] = res["hypervolume"] - res["hv_at_init_end"]
    if setup.known_front:
        import mo_gymnasium

        e = mo_gymnasium.make(setup.gym_id)
        true = np.asarray(e.unwrapped.pareto_front(gamma=1.0), dtype=np.float64)
        e.close()
        fr = front_recovery(front, true, setup.ref_point, atol=1e-6)
        res.update({"front_found": fr.found, "front_total": fr.total, "front_fraction": fr.fraction,
                    "hv_ratio": fr.hypervolume_ratio, "true_front": true.tolist(), "matched": fr.matched.tolist()})
    return res


# ---------------------------------------------------------------------------
# statistics, figures
# ---------------------------------------------------------------------------
def _mean_ci(x) -> tuple[float, float]:
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), math.nan
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def permutation_test(a, b) -> float:
    """Exact two-sided permutation p-value of the difference in means (all C(n_a + n_b, n_a) relabellings)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pool = np.concatenate([a, b])
    obs = abs(a.mean() - b.mean())
    n, hits, total = len(a), 0, 0
    for idx in combinations(range(len(pool)), n):
        mask = np.zeros(len(pool), bool)
        mask[list(idx)] = True
        hits += abs(pool[mask].mean() - pool[~mask].mean()) >= obs - 1e-12
        total += 1
    return hits / total


def _figures(out: Path, cfg: CMORLConfig, results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"c-morl": "tab:red", "linear": "tab:blue"}
    envs = list(cfg.envs)
    fig, axes = plt.subplots(1, len(envs), figsize=(5.2 * len(envs), 4.2), squeeze=False)
    for ax, e in zip(axes[0], envs):
        rs = [r for r in results if r["env"] == e]
        setup = MO_ENVS[e]
        for meth in cfg.algorithms:
            pts = [p for r in rs if r["method"] == meth for p in r["front"]]
            if pts:
                p = np.asarray(pts)
                ax.scatter(p[:, 0], p[:, 1], s=28, alpha=0.35, color=colors[meth],
                           label=f"{meth} (fronts of {cfg.seeds} seeds)")
        if rs and "true_front" in rs[0]:
            tf = np.asarray(rs[0]["true_front"])
            ax.scatter(tf[:, 0], tf[:, 1], s=90, facecolors="none", edgecolors="k", label="true Pareto front")
        names = {2: ("objective 1 (treasure / forward)", "objective 2 (time / energy)"),
                 3: ("objective 1 (ore 1)", "objective 2 (ore 2)")}[setup.num_objectives]
        ax.set_xlabel(names[0] if "dst" not in e else "treasure value")
        ax.set_ylabel(names[1] if "dst" not in e else "time penalty (-steps)")
        ax.set_title(f"{e}: found Pareto fronts" + (" (ore 1 vs ore 2 projection)" if setup.num_objectives == 3 else ""))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figures" / "fronts.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(envs), figsize=(5.2 * len(envs), 4.0), squeeze=False)
    for ax, e in zip(axes[0], envs):
        for meth in cfg.algorithms:
            curves = [r["curve"] for r in results if r["env"] == e and r["method"] == meth]
            if not curves:
                continue
            L = min(len(c) for c in curves)
            xs = np.asarray([c[0] for c in curves[0][:L]])
            Y = np.asarray([[c[1] for c in cv[:L]] for cv in curves])
            mu = Y.mean(0)
            if len(Y) > 1:
                from scipy import stats

                h = stats.t.ppf(0.975, len(Y) - 1) * Y.std(0, ddof=1) / math.sqrt(len(Y))
                ax.fill_between(xs, mu - h, mu + h, color=colors[meth], alpha=0.2)
            ax.plot(xs, mu, color=colors[meth], label=f"{meth} (mean, 95% t CI, {len(Y)} seeds)")
        ax.set_xlabel("training environment steps")
        ax.set_ylabel(f"archive hypervolume (ref {MO_ENVS[e].ref_point})")
        ax.set_title(f"{e}: hypervolume during training")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figures" / "hv_curves.png", dpi=100)
    plt.close(fig)

    keys = [("hypervolume", "hypervolume"), ("expected_utility", "expected utility"), ("front_fraction", "true-front fraction")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.0), squeeze=False)
    for ax, (k, label) in zip(axes[0], keys):
        for i, e in enumerate(envs):
            for j, meth in enumerate(cfg.algorithms):
                vals = [r[k] for r in results if r["env"] == e and r["method"] == meth and k in r]
                if not vals:
                    continue
                mu, h = _mean_ci(vals)
                ax.bar(i * (len(cfg.algorithms) + 1) + j, mu, yerr=0 if math.isnan(h) else h, color=colors[meth],
                       capsize=3, label=meth if i == 0 else None)
        ax.set_xticks([i * (len(cfg.algorithms) + 1) + (len(cfg.algorithms) - 1) / 2 for i in range(len(envs))])
        ax.set_xticklabels(envs)
        ax.set_ylabel(label)
        ax.set_title(f"{label} (mean, 95% t CI, {cfg.seeds} seeds)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figures" / "summary.png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------
def _check(cfg: CMORLConfig) -> None:
    check_config_values(cfg, nonempty=("envs", "algorithms"), positive_ints=("seeds", "num_envs", "rollout_steps", "epochs",
                                                                          "minibatches", "hidden", "ext_rounds",
                                                                          "num_select"),
                        nonneg_ints=("steps", "seed"), positive_floats=("learning_rate", "barrier_t"),
                        nonneg_floats=("clip", "entropy_coef", "value_coef", "max_grad_norm", "init_weight_step",
                                       "linear_weight_step", "beta"))
    for e in cfg.envs:
        if e not in MO_ENVS:
            raise ValueError(f"--envs: unknown environment {e!r}; choose from {', '.join(MO_ENVS)}.")
    for meth in cfg.algorithms:
        if meth not in METHODS:
            raise ValueError(f"--algorithms: unknown method {meth!r}; choose from {', '.join(METHODS)}.")
    if not 0.0 < cfg.init_fraction < 1.0:
        raise ValueError(f"--init-fraction must be in (0, 1) (authors 0.6); got {cfg.init_fraction}.")
    if not 0.0 <= cfg.lambda_ <= 1.0:
        raise ValueError(f"--lambda must be in [0, 1]; got {cfg.lambda_}.")
    if cfg.beta > 1.0:
        raise ValueError(f"--beta must be in (0, 1] (0 picks the environment's default); got {cfg.beta}.")
    for name in ("init_weight_step", "linear_weight_step"):
        v = getattr(cfg, name)
        if v and abs(round(1 / v) * v - 1) > 1e-9:
            raise ValueError(f"--{name.replace('_', '-')} must be 1/K for an integer K (e.g. 0.2, 0.1); got {v}.")
    check_device(cfg.device)
    try:
        import mo_gymnasium  # noqa: F401
    except ImportError:
        raise ValueError("polab run c-morl needs mo-gymnasium: pip install 'polab[control]' (or mo-gymnasium).") from None
    for e in cfg.envs:
        per_update = cfg.num_envs * cfg.rollout_steps
        steps = cfg.steps or MO_ENVS[e].steps
        if steps < 2 * per_update:
            raise ValueError(f"--steps {steps} gives fewer than 2 PPO updates of {per_update} steps for {e}; "
                             "raise --steps or lower --num-envs/--rollout-steps.")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: CMORLConfig) -> Path:
    """Run the experiment; returns the run folder (checked options first, then a locked, fresh folder)."""
    _check(cfg)
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite, can_resume=False):
        return _run(cfg)


def _run(cfg: CMORLConfig) -> Path:
    out = Path(cfg.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    dev = _device(cfg.device)
    record = config_record(cfg)
    atomic_write_text(out / "config.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    logger = MetricLogger(out, config=record, backends=("csv",))
    step = [0]

    def log(row):
        logger.log(step[0], row)
        step[0] += 1

    results = []
    jobs = [(e, meth, cfg.seed + s) for e in cfg.envs for s in range(cfg.seeds) for meth in cfg.algorithms]
    for e, meth, s in tqdm(jobs, desc="c-morl runs", disable=not cfg.progress):
        r = _run_one(cfg, e, meth, s, dev, log)
        results.append(r)
        log({"kind": "final", **{k: v for k, v in r.items() if not isinstance(v, list)}})
    logger.close()
    summary = {"runs": len(results), "environments": {}}
    for e in cfg.envs:
        d = {"per_method": {}, "tests": {}}
        rs = [r for r in results if r["env"] == e]
        keys = ["hypervolume", "hv_half_budget", "hv_at_init_end", "hv_gain_after_init", "expected_utility", "sparsity", "front_size", "env_steps_per_s",
                "train_env_steps"]
        if MO_ENVS[e].known_front:
            keys += ["front_fraction", "hv_ratio"]
        for meth in cfg.algorithms:
            mr = [r for r in rs if r["method"] == meth]
            d["per_method"][meth] = {k: dict(zip(("mean", "ci95_half_width"), _mean_ci([r[k] for r in mr])),
                                             per_seed=[r[k] for r in mr]) for k in keys}
            if MO_ENVS[e].known_front:
                hits = np.sum([r["matched"] for r in mr], axis=0)
                d["per_method"][meth]["true_front_point_hits_over_seeds"] = {
                    str(tuple(p)): int(h) for p, h in zip(mr[0]["true_front"], hits)}
        if set(METHODS) <= set(cfg.algorithms):
            for k in (("hypervolume", "hv_half_budget", "hv_gain_after_init", "expected_utility")
                      + (("front_fraction", "hv_ratio") if MO_ENVS[e].known_front else ())):
                a = [r[k] for r in rs if r["method"] == "c-morl"]
                b = [r[k] for r in rs if r["method"] == "linear"]
                d["tests"][k] = {"c_morl_minus_linear": float(np.mean(a) - np.mean(b)),
                                 "permutation_p_two_sided": permutation_test(a, b)}
        summary["environments"][e] = d
    _figures(out, cfg, results)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [x for a in argv for x in (("--preset", "quick") if a == "--quick" else (a,))]  # --quick = --preset quick
    cfg, _ = parse_config(CMORLConfig, argv, prog="polab run c-morl", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    try:
        out = run(cfg)
    except ValueError as exc:
        print(f"polab run c-morl: error: {exc}", file=sys.stderr)
        return 2
    s = json.loads((out / "summary.json").read_text())
    for e, d in s["environments"].items():
        for meth, v in d["per_method"].items():
            line = (f"{e:15s} {meth:7s} HV {v['hypervolume']['mean']:.4g} +- {v['hypervolume']['ci95_half_width']:.3g}  "
                    f"EU {v['expected_utility']['mean']:.4g}  |front| {v['front_size']['mean']:.1f}  "
                    f"steps/s {v['env_steps_per_s']['mean']:.0f}")
            if "front_fraction" in v:
                line += (f"  true front found {100 * v['front_fraction']['mean']:.0f}% "
                         f"+- {100 * v['front_fraction']['ci95_half_width']:.0f}  HV ratio {v['hv_ratio']['mean']:.3f}")
            print(line)
        for k, t in d["tests"].items():
            print(f"{e:15s} {k}: c-morl - linear = {t['c_morl_minus_linear']:+.4g} (exact permutation p = "
                  f"{t['permutation_p_two_sided']:.3f})")
    print(f"run folder: {out}")
    return 0
