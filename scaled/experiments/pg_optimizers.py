"""``polab run pg-optimizers``: N-PG-IGT and (N)-HARPG against PG baselines on gymnasium control tasks.

The optimizers of :mod:`polab.estimators.pg_optimizers` and the estimators of
:mod:`polab.estimators.pg_gradients` are used unchanged (through
:class:`polab.estimators.pg_optimizers.PolicyGradientOptimizer`) to train small MLP
policies:

* ``CartPole-v1`` and ``Acrobot-v1``: softmax policy, MLP (32, 32) tanh, as
  in the authors' ``run_experiment/run_PG.py`` (theory_core.md 4.5), episodes
  capped at 200 steps;
* ``InvertedPendulum-v5`` (MuJoCo, the larger configuration, ``--envs``):
  Gaussian policy with a state-independent log standard deviation, MLP
  (64, 64) tanh, episodes capped at 200 steps.

Each iteration samples a batch of complete episodes from a gymnasium vector
environment at ``QueryPoints.gradient_point``; the gradient is the GPOMDP
estimate (``gamma`` = 0.99) with a leave-one-out, time-indexed baseline
(:func:`polab.estimators.pg_gradients.leave_one_out_baseline` of the per-step
return-to-go, which is unbiased because it does not use the episode's own
actions). (N)-HARPG samples a second batch at ``QueryPoints.hessian_point``
for :func:`polab.estimators.pg_gradients.hessian_vector_estimate`. All methods get
the same budget of environment steps per seed (the Hessian batch counts), so
learning curves are compared at equal samples: the undiscounted return of the
gradient-batch episodes against environment steps, the mean over seeds with a
95% Student-t band. No separate evaluation episodes are spent (they would
break the equal budget), so N-PG-IGT's curve is measured where it samples, at
the look-ahead point, which is within ``gamma_t (1 - eta_t) / eta_t`` of its
iterate.

Departures from the authors' experiments: their linear-feature baseline is
replaced by the leave-one-out baseline (no fitted model), their batch of 5000
steps by a batch of episodes, and the step scale ``gamma_0`` is set per
method family (``--step-size-normalized``, ``--step-size-unnormalized``).

Step sizes of (N)-HARPG (``--step-size-n-harpg``, ``--step-size-harpg``; off by
default, i.e. the family scale). On ``InvertedPendulum-v5`` with the family
scales, (N)-HARPG collapses within a few iterations: the policy is driven
to a region where the pole falls after two steps in every episode, all returns
are equal, the leave-one-out advantages and hence ``g`` and ``u`` are exactly
0, and the iterate never moves again (``direction_norm`` decays to 0). This is
not a feeding bug (interpolation point, displacement, sign, separate Hessian
batch and the update order follow theory_core.md 4.4, and the estimate is
unbiased in the checks); it is the variance of the Hessian-vector estimate.
With 8 episodes per batch, at the initial policy and along a gradient
direction (where the first displacements point, mostly the log standard
deviation), the per-batch standard deviation of ``u/|v|`` is about 190 against
about 17 for ``g`` (``|E u|/|v|`` is about 180: the log-std curvature is large).
The recursive estimate's error obeys, with ``|v_t| = gamma_t`` for N-HARPG,
``E|e_t|^2 <= (1-eta_t)^2 E|e_{t-1}|^2 + 2 eta_t^2 sigma_g^2 + 2 gamma_t^2 sigma_B^2``,
whose steady state is ``O(eta_t (sigma_g^2 + (gamma_0/eta_0)^2 sigma_B^2))`` for the
schedules used here (``gamma_t = gamma_0 2/(t+2)``, ``eta_t = eta_0 2/(t+2)``;
derived here, not the paper's constant). The Hessian term dominates unless
``gamma_0/eta_0 <~ sigma_g/sigma_B``, about 0.1 here: the family scale 0.5 is 5
times too large, the authors' README default 0.1 is at the edge. For HARPG,
``|v_t| = gamma_{t-1} |d_{t-1}|``, so ``d_t ~ (1-eta_t)(I + gamma_t B_t) d_{t-1}``
with a noisy ``B_t``: once ``gamma_t |B_t| > 1`` the direction grows
geometrically; ``sigma_B`` grows with the episode length, so a step size that is
stable early (``gamma_0 = 0.001``) diverges once the policy balances for ~80 steps.

``--hessian-clip L`` (:attr:`polab.estimators.pg_optimizers.PGMethod.hessian_clip`,
off by default) shrinks ``u_t`` to norm ``<= L |v_t|``, the ball that holds
``grad J(theta_t) - grad J(theta_{t-1})`` under L-smoothness; it bounds the HARPG
gain by ``(1-eta_t)(1+gamma_t L)`` and is a biased departure from the paper.
Measured with ``--envs InvertedPendulum-v5 --budget 100000`` (5 seeds, final
return, mean +- 95% t half-width; the other methods: 158-180): without it
HARPG 2.7 +- 1.2, N-HARPG 35.6 +- 90.6; ``--hessian-clip 50`` (chosen among
20, 50, 200 on these seeds) HARPG 124.3 +- 42.2, N-HARPG 146.0 +- 39.3; on fresh
seeds (``--seed 100``) HARPG 2.8 +- 1.4 -> 49.2 +- 59.5 and N-HARPG
39.3 +- 61.9 -> 90.8 +- 69.5. ``--step-size-n-harpg 0.2`` without the clip:
N-HARPG 98.2 +- 23.7 (seeds 0-4), 73.3 +- 16.9 (``--seed 100``).

``--hvp-form authors`` uses the authors' batch-product Hessian-vector form
(``STORMHess``: product of batch means, score term with their sign and scale,
``product_scale = -1/mean episode length``; see
:func:`polab.estimators.pg_gradients.hessian_vector_estimate`). At the initial
policy (v along a gradient estimate, 40 Hessian batches of 8 episodes) its
per-batch spread of ``u/|v|`` (square root of the covariance trace) is 75
against 223 for the unbiased per-trajectory form and 99 for the plain batch
product (``--hvp-form batch-product``), with the gradient's at 23. It does not
rescue (N)-HARPG: ``--envs InvertedPendulum-v5 --methods harpg n_harpg --budget
100000`` (seeds 0-4) gives HARPG 8.8 +- 16.8 and N-HARPG 29.1 +- 33.8 with
``--hvp-form authors`` against 2.7 +- 1.2 and 35.6 +- 90.6 with the default
(rerun, identical to the figures above). A threefold smaller spread still
leaves ``sigma_B`` three times ``sigma_g``, so the step-size condition above
still fails at the family scale; the collapse is not explained by the
per-trajectory form's extra variance alone.

Run folder: ``config.json``, ``metrics.csv`` (one row per env, method, seed
and iteration), ``summary.json`` (final returns per env and method: mean and
95% CI half-width over seeds, over the last 20% of the budget),
``figures/learning_curves.png``.

Example::

    polab run pg-optimizers --out runs/pg                         # about 5 minutes on one CPU core
    polab run pg-optimizers --envs InvertedPendulum-v5 --budget 200000 --seeds 10 --out runs/pg_mujoco
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

from polab.estimators.pg_gradients import (
    discounted_reward_to_go,
    gpomdp_weights,
    hessian_vector_estimate,
    leave_one_out_baseline,
    policy_gradient,
    trajectory_log_prob,
    trajectory_surrogate,
)
from polab.estimators.pg_optimizers import METHODS, PGMethod, PolicyGradientOptimizer
from polab.theory.pg_sample_complexity import METHOD_INFO

from ..checkpoint import atomic_write_text
from ..run_folder import RunLogger, check_config_values, prepare_run_folder, read_metrics

__all__ = ["PGOptimizersConfig", "run", "main", "step_size0", "ENV_IDS", "METHOD_IDS"]

ENV_IDS = {"CartPole-v1": 0, "Acrobot-v1": 1, "InvertedPendulum-v5": 2}
METHOD_IDS = {m: i for i, m in enumerate(METHODS)}
#: Episode caps (``--max-episode-steps`` overrides all): 200 for CartPole as in the authors' run_PG.py;
#: 500 (gymnasium's default) for Acrobot, whose random policy rarely swings up within 200 steps, so that
#: every episode would return -200 and the leave-one-out advantage would be zero; 200 for InvertedPendulum.
EPISODE_CAPS = {"CartPole-v1": 200, "Acrobot-v1": 500, "InvertedPendulum-v5": 200}
COLUMNS = ["env", "method", "seed", "iteration", "env_steps", "mean_return", "direction_norm"]  # env, method: names


@dataclass
class PGOptimizersConfig:
    """Hyperparameters (defaults: CartPole and Acrobot, six methods, 5 seeds, about 5 minutes on one CPU core)."""

    envs: list = field(default_factory=lambda: ["CartPole-v1", "Acrobot-v1"])
    methods: list = field(default_factory=lambda: list(METHODS))
    seeds: int = 5
    seed: int = 0
    budget: int = 20000  # environment steps per seed and method, Hessian batches included
    episodes_per_batch: int = 8
    max_episode_steps: int | None = None  # None: EPISODE_CAPS
    gamma: float = 0.99
    step_size_normalized: float = 0.5  # gamma_0 of normalised methods (moves the parameters by exactly gamma_t)
    step_size_unnormalized: float = 0.005  # gamma_0 of vanilla PG and HARPG (GPOMDP gradients here have norms of 10-100)
    step_size_n_harpg: float | None = None  # gamma_0 of N-HARPG only; None: step_size_normalized (see "Step sizes of (N)-HARPG")
    step_size_harpg: float | None = None  # gamma_0 of HARPG only; None: step_size_unnormalized
    hessian_clip: float | None = None  # (N)-HARPG safeguard PGMethod.hessian_clip (a smoothness constant L); None: off, the paper's method
    hvp_form: str = "per-trajectory"  # (N)-HARPG Hessian-vector estimate: "per-trajectory" (unbiased), "batch-product" (c = 1) or "authors" (c = -1/mean steps)
    igt_lookahead: str = "eta_t"  # N-PG-IGT look-ahead: "eta_t" (exact transport) or "eta_prev" (the authors' code)
    hidden: int = 32
    hidden_mujoco: int = 64
    out: str = "runs/pg_optimizers"
    overwrite: bool = False  # write into a non-empty --out (otherwise refused)


class _Policy(torch.nn.Module):
    """MLP softmax (discrete) or Gaussian (continuous) policy; ``log_prob(obs, act)`` is differentiable."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, discrete: bool):
        super().__init__()
        self.discrete = discrete
        self.net = torch.nn.Sequential(
            torch.nn.Linear(obs_dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
            torch.nn.Linear(hidden, act_dim),
        )
        if not discrete:
            self.log_std = torch.nn.Parameter(torch.full((act_dim,), -0.5))

    def sample(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = self.net(obs)
        if self.discrete:
            return torch.multinomial(torch.softmax(out, -1), 1, generator=generator).squeeze(-1)
        return out + self.log_std.exp() * torch.randn(out.shape, generator=generator)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        if self.discrete:
            return torch.log_softmax(out, -1).gather(-1, act.long().unsqueeze(-1)).squeeze(-1)
        z = (act - out) / self.log_std.exp()
        return (-0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def _make_envs(name: str, n: int, cfg: PGOptimizersConfig):
    import gymnasium as gym

    cap = cfg.max_episode_steps or EPISODE_CAPS[name]
    return gym.vector.SyncVectorEnv([lambda: gym.make(name, max_episode_steps=cap) for _ in range(n)])


def _collect(envs, policy: _Policy, seed: int, generator: torch.Generator, cfg: PGOptimizersConfig):
    """One complete episode per sub-environment. Returns obs [B, T, d], actions, rewards [B, T], mask [B, T], steps."""
    n = envs.num_envs
    obs, _ = envs.reset(seed=[seed + i for i in range(n)])
    done = np.zeros(n, dtype=bool)
    O, A, R, M = [], [], [], []
    steps = 0
    with torch.no_grad():
        while not done.all():
            o = torch.as_tensor(obs, dtype=torch.float32)
            a = policy.sample(o, generator)
            a_env = a.numpy()
            if not policy.discrete:
                a_env = np.clip(a_env, envs.single_action_space.low, envs.single_action_space.high)
            obs, r, term, trunc, _ = envs.step(a_env)
            alive = ~done
            steps += int(alive.sum())
            O.append(o)
            A.append(a)
            R.append(torch.as_tensor(r, dtype=torch.float32) * torch.as_tensor(alive, dtype=torch.float32))
            M.append(torch.as_tensor(alive, dtype=torch.float32))
            done |= term | trunc
    return torch.stack(O, 1), torch.stack(A, 1), torch.stack(R, 1), torch.stack(M, 1), steps


def _surrogate(policy: _Policy, batch, cfg: PGOptimizersConfig):
    """Per-episode GPOMDP surrogate with the leave-one-out return-to-go baseline, and log p(tau)."""
    O, A, R, M, _ = batch
    G = discounted_reward_to_go(R, M, gamma=cfg.gamma)  # sum_{h>=t} gamma^h r_h
    disc = cfg.gamma ** torch.arange(R.shape[1], dtype=R.dtype)
    base = leave_one_out_baseline(G / disc, M)  # undiscounted scale, as gpomdp_weights expects
    w = gpomdp_weights(R, M, gamma=cfg.gamma, baseline=base)
    lp = policy.log_prob(O, A)
    return trajectory_surrogate(lp, w, M), trajectory_log_prob(lp, M)


def step_size0(method: str, cfg: PGOptimizersConfig) -> float:
    """:math:`\\gamma_0` of ``method``: the family scale, unless ``step_size_n_harpg``/``step_size_harpg`` overrides it."""
    own = {"n_harpg": cfg.step_size_n_harpg, "harpg": cfg.step_size_harpg}.get(method)
    if own is not None:
        return own
    return cfg.step_size_normalized if METHOD_INFO[method].normalized else cfg.step_size_unnormalized


def _train_one(env_name: str, method: str, seed: int, cfg: PGOptimizersConfig, logger: RunLogger, step0: int):
    torch.manual_seed(seed)  # scaled experiments seed the global RNG for the policy initialisation (CONVENTIONS.md)
    gen = torch.Generator().manual_seed(10_000 + seed)
    envs = _make_envs(env_name, cfg.episodes_per_batch, cfg)
    discrete = hasattr(envs.single_action_space, "n")
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(envs.single_action_space.n) if discrete else int(np.prod(envs.single_action_space.shape))
    hidden = cfg.hidden if discrete else cfg.hidden_mujoco
    policy = _Policy(obs_dim, act_dim, hidden, discrete)
    pg = PGMethod(method, step_size0=step_size0(method, cfg),
                  hessian_clip=cfg.hessian_clip if METHOD_INFO[method].direction == "recursive" else None,
                  igt_lookahead=cfg.igt_lookahead if method == "npg_igt" else "eta_t")
    opt = PolicyGradientOptimizer(policy.parameters(), pg, maximize=True)  # g and u estimate grad J: ascent
    params = list(policy.parameters())
    used, it, row = 0, 0, step0
    env_seed = 1_000_000 * (seed + 1)
    while used < cfg.budget:
        q = opt.query(generator=gen)
        batch = _collect(envs, policy, env_seed + 100 * it, gen, cfg)
        used += batch[4]
        ret = float((batch[2] * batch[3]).sum(1).mean())
        phi, _ = _surrogate(policy, batch, cfg)
        g = policy_gradient(phi, params)
        u = None
        if q.hessian_point is not None:
            opt.load(q.hessian_point)
            hb = _collect(envs, policy, env_seed + 100 * it + 50, gen, cfg)
            used += hb[4]
            phi2, lp2 = _surrogate(policy, hb, cfg)
            if cfg.hvp_form == "per-trajectory":
                u = hessian_vector_estimate(phi2, lp2, params, opt.vector_to_list(q.displacement))
            else:  # the authors' STORMHess: c = -1/(mean steps per episode of the Hessian batch); see pg_gradients
                c = 1.0 if cfg.hvp_form == "batch-product" else -float(hb[3].shape[0]) / max(float(hb[3].sum()), 1.0)
                u = hessian_vector_estimate(phi2, lp2, params, opt.vector_to_list(q.displacement), form="batch-product",
                                            product_scale=c)
        opt.step(g, u)
        logger.log(row, {"env": env_name, "method": method, "seed": seed, "iteration": it,
                         "env_steps": used, "mean_return": ret, "direction_norm": float(opt.state.direction.norm())})
        row += 1
        it += 1
    envs.close()
    return row


def _curves(rows: list[dict], env: str, method: str, seeds: int, grid: np.ndarray) -> np.ndarray:
    """Per-seed returns interpolated (step function: last value at or before each grid point) -> [seeds, G]."""
    out = np.full((seeds, len(grid)), np.nan)
    for s in range(seeds):
        r = [x for x in rows if x["env"] == env and x["method"] == method and x["seed"] == s]
        if not r:
            continue
        x = np.array([v["env_steps"] for v in r])
        y = np.array([v["mean_return"] for v in r])
        idx = np.searchsorted(x, grid, side="right") - 1
        out[s] = np.where(idx >= 0, y[np.clip(idx, 0, None)], y[0])
    return out


def _mean_ci(x: np.ndarray, axis: int = 0):
    n = np.sum(np.isfinite(x), axis=axis)
    m = np.nanmean(x, axis=axis)
    sd = np.nanstd(x, axis=axis, ddof=1) if x.shape[axis] > 1 else np.zeros_like(m)
    half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    return m, half


def run(cfg: PGOptimizersConfig) -> Path:
    """Run the experiment; returns the run folder."""
    for e in cfg.envs:
        if e not in ENV_IDS:
            raise ValueError(f"envs: unknown environment {e!r}; choose from {sorted(ENV_IDS)}.")
    for m in cfg.methods:
        if m not in METHOD_IDS:
            raise ValueError(f"methods: unknown method {m!r}; choose from {list(METHODS)}.")
    for name in ("step_size_normalized", "step_size_unnormalized", "step_size_n_harpg", "step_size_harpg", "hessian_clip"):
        v = getattr(cfg, name)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0 (or None for the HARPG options); got {v!r}.")
    if cfg.hvp_form not in ("per-trajectory", "batch-product", "authors"):
        raise ValueError(f"hvp_form must be 'per-trajectory', 'batch-product' or 'authors'; got {cfg.hvp_form!r}.")
    if cfg.igt_lookahead not in ("eta_t", "eta_prev"):
        raise ValueError(f"igt_lookahead must be 'eta_t' or 'eta_prev'; got {cfg.igt_lookahead!r}.")
    if cfg.seeds < 1 or cfg.budget < 1 or cfg.episodes_per_batch < 2:
        raise ValueError("seeds and budget must be >= 1 and episodes_per_batch >= 2 (the leave-one-out baseline needs two episodes).")
    check_config_values(cfg, positive_ints=("max_episode_steps", "hidden", "hidden_mujoco"), nonempty=("envs", "methods"))
    if not (isinstance(cfg.gamma, (int, float)) and 0.0 < cfg.gamma <= 1.0):
        raise ValueError(f"--gamma must be in (0, 1]; got {cfg.gamma!r}.")
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite, can_resume=False):
        return _run(cfg)


def _run(cfg: PGOptimizersConfig) -> Path:
    torch.set_num_threads(1)
    out = Path(cfg.out)
    logger = RunLogger(out, dataclasses.asdict(cfg), COLUMNS, tensorboard=False)
    jobs = [(e, m, s) for e in cfg.envs for m in cfg.methods for s in range(cfg.seeds)]
    row = 0
    for e, m, s in tqdm(jobs, desc="pg-optimizers"):
        row = _train_one(e, m, cfg.seed + s, cfg, logger, row)
    logger.close()
    rows = read_metrics(out / "metrics.csv")
    for r in rows:
        r["seed"] -= cfg.seed
    grid = np.linspace(0, cfg.budget, 101)[1:]
    summary = {"budget": cfg.budget, "final_window": "last 20% of the budget",
               "final_return": {}}
    curves = {}
    for e in cfg.envs:
        summary["final_return"][e] = {}
        for m in cfg.methods:
            c = _curves(rows, e, m, cfg.seeds, grid)
            curves[(e, m)] = c
            final = np.nanmean(c[:, grid >= 0.8 * cfg.budget], axis=1)  # per seed
            mean, half = _mean_ci(final)
            summary["final_return"][e][m] = {"mean": float(mean), "ci95_half_width": float(half), "seeds": int(np.isfinite(final).sum()),
                                             "per_seed": [float(x) for x in final]}
    _figure(out, cfg, grid, curves)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return out


def _figure(out: Path, cfg: PGOptimizersConfig, grid: np.ndarray, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cfg.envs), figsize=(5.5 * len(cfg.envs), 4), squeeze=False)
    for ax, e in zip(axes[0], cfg.envs):
        for m in cfg.methods:
            mean, half = _mean_ci(curves[(e, m)])
            ax.plot(grid, mean, label=m)
            ax.fill_between(grid, mean - half, mean + half, alpha=0.2)
        ax.set_title(f"{e} ({cfg.seeds} seeds, 95% t band)")
        ax.set_xlabel("environment steps (equal budget)")
        ax.set_ylabel("mean episode return")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figures" / "learning_curves.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    d = PGOptimizersConfig()
    p = argparse.ArgumentParser(prog="polab run pg-optimizers", description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", default=d.envs, choices=sorted(ENV_IDS))
    p.add_argument("--methods", nargs="+", default=d.methods, choices=list(METHODS))
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--budget", type=int, default=d.budget, help="environment steps per seed and method")
    p.add_argument("--episodes-per-batch", type=int, default=d.episodes_per_batch)
    p.add_argument("--max-episode-steps", type=int, default=d.max_episode_steps, help="default: per environment, see EPISODE_CAPS")
    p.add_argument("--gamma", type=float, default=d.gamma)
    p.add_argument("--step-size-normalized", type=float, default=d.step_size_normalized)
    p.add_argument("--step-size-unnormalized", type=float, default=d.step_size_unnormalized)
    p.add_argument("--step-size-n-harpg", type=float, default=d.step_size_n_harpg,
                   help="gamma_0 of N-HARPG only (default: --step-size-normalized)")
    p.add_argument("--step-size-harpg", type=float, default=d.step_size_harpg,
                   help="gamma_0 of HARPG only (default: --step-size-unnormalized)")
    p.add_argument("--hessian-clip", type=float, default=d.hessian_clip,
                   help="(N)-HARPG only: shrink the Hessian-vector estimate to norm <= L |theta_t - theta_{t-1}| (default: off)")
    p.add_argument("--hvp-form", default=d.hvp_form, choices=["per-trajectory", "batch-product", "authors"],
                   help="(N)-HARPG Hessian-vector estimate: per-trajectory (unbiased, default), batch-product (product of batch "
                        "means), authors (STORMHess: batch product with c = -1/mean episode length)")
    p.add_argument("--igt-lookahead", default=d.igt_lookahead, choices=["eta_t", "eta_prev"],
                   help="N-PG-IGT look-ahead weight: eta_t (default) or eta_{t-1} (the authors' code)")
    p.add_argument("--out", default=d.out)
    p.add_argument("--overwrite", action="store_true", help="write into --out even though it holds files")
    a = p.parse_args(argv)
    cfg = PGOptimizersConfig(envs=a.envs, methods=a.methods, seeds=a.seeds, seed=a.seed, budget=a.budget,
                             episodes_per_batch=a.episodes_per_batch, max_episode_steps=a.max_episode_steps, gamma=a.gamma,
                             step_size_normalized=a.step_size_normalized, step_size_unnormalized=a.step_size_unnormalized,
                             step_size_n_harpg=a.step_size_n_harpg, step_size_harpg=a.step_size_harpg, hessian_clip=a.hessian_clip,
                             hvp_form=a.hvp_form, igt_lookahead=a.igt_lookahead, out=a.out, overwrite=a.overwrite)
    out = run(cfg)
    s = json.loads((out / "summary.json").read_text())
    for e, per in s["final_return"].items():
        for m, v in per.items():
            print(f"{e:20s} {m:14s} final return {v['mean']:8.2f} +- {v['ci95_half_width']:.2f} (95% CI, {v['seeds']} seeds)")
    print(f"run folder: {out}")
    return 0
