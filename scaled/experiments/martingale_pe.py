"""``polab run martingale-pe``: martingale policy evaluation at scale (Jia & Zhou 2022).

The verified estimators of :mod:`polab.estimators.policy_evaluation` are called
unchanged on two problems:

* ``lq``: a ``d``-dimensional linear system :math:`dX = (A_0X + Bu)dt + \\Sigma dW`
  under the fixed linear feedback :math:`u = Kx` (closed loop
  :math:`A = A_0 + BK`), running reward :math:`-(x^\\top x + \\rho u^\\top u) = x^\\top Qx`,
  discount rate :math:`\\beta`. Paths are simulated in batch by
  :func:`polab.estimators.sde.euler_maruyama` (on CUDA when present, the same
  function the checks use on CPU). Ground truth: the continuous Lyapunov
  value :func:`polab.theory.diffusion_values.lq_value`; the Euler-chain value
  :func:`polab.theory.diffusion_values.lq_euler_value` is the exact large-sample
  target of the discretised estimators (reported as ``err_target``).
  Value functions: quadratic features (``d(d+1)/2 + 1`` of them; realisable;
  closed forms ML, LSTD(0), LSTD(1/2), GTD with both weightings, MSTDE, and
  online TD(0)), for ``d <= quadratic_max_dim``; and a neural value function
  (a tanh MLP with a quadratic output head by default, ``neural_head``; see
  :class:`ValueMLP`; the Pendulum part keeps the plain MLP,
  ``pendulum_neural_head``) fitted by gradient ML and semi-gradient TD(0)
  through :func:`polab.estimators.policy_evaluation.fit_value_function`, for any ``d``.
* ``pendulum``: gymnasium ``Pendulum-v1`` under the fixed feedback
  :math:`u = \\mathrm{clip}(-k_p\\vartheta - k_d\\dot\\vartheta + \\sigma_u\\xi, \\pm2)`
  (:math:`\\xi` standard normal, so the closed loop is a Markov chain with
  noise). The env's ``dt`` is the mesh; reward rates are the env's reward
  divided by ``dt``, so :math:`\\sum_i e^{-\\beta t_i}r_i\\Delta t` is the
  env's discounted return with :math:`\\gamma = e^{-\\beta\\,dt}`. Coarser
  meshes observe every ``m``-th state (left-point rewards). Reference: a long
  Monte Carlo average of discounted returns from fixed evaluation states.

Error measure (``err_true``): relative RMS error of the estimated value over
evaluation states, :math:`\\sqrt{\\overline{(\\hat V - V)^2}/\\overline{V^2}}`.
For the linear LQ estimators with a sandwich covariance, ``tol_true`` is a
derived bound that holds with probability at least ``1 - alpha`` under any
seed (Bonferroni over every coefficient of every such fit in the run):
:math:`|\\hat\\theta_j - \\theta^*_j| \\le z\\,\\mathrm{SE}_j + |\\theta^{\\Delta t}_j - \\theta^*_j| + \\tau_j`
(``tau`` the exact ML truncation term, zero for the MO estimators, which
bootstrap), hence :math:`|\\hat V(x) - V(x)| \\le \\sum_j|\\phi_j(x)|(\\cdots)`,
whose RMS over the evaluation states divided by :math:`\\mathrm{RMS}(V)` is
``tol_true``. ``max_z_target`` is :math:`\\max_j|\\hat\\theta_j-\\theta^{\\Delta t}_j|/\\mathrm{SE}_j`.

``seconds`` is the wall time of a fit (for the closed forms, the shared
moment pass divided by the number of closed-form estimators); the neural
fits run ``neural_steps`` Adam steps on ``neural_paths_per_step`` paths each.
Quadratic features are used up to ``quadratic_max_dim`` (their per-path
moment matrices grow like :math:`d^4`); beyond it only the neural value
function runs.

Run folder: ``config.json``, ``metrics.csv`` (one row per part, sweep,
mesh, number of paths and estimator), ``summary.json``,
``figures/error_vs_mesh.png``, ``figures/error_vs_paths.png``,
``figures/errors_per_estimator.png``.

Example::

    polab run martingale-pe --out runs/martingale-pe           # a few minutes on one CPU core
    polab run martingale-pe --quick --out /tmp/mpe             # seconds (smoke test)
    polab run martingale-pe --parts lq --dim 100 --no-quadratic --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm
from tqdm import tqdm

from polab.estimators.policy_evaluation import (
    PathBatch,
    eligibility_trace,
    fit_value_function,
    linear_moments,
    ml_linear,
    online_step_sizes,
    solve_linear,
    td_lambda_online,
)
from polab.estimators.sde import euler_maruyama, linear_diffusion, uniform_grid
from polab.theory.diffusion_values import lq_euler_value, lq_value

from ..checkpoint import atomic_write_text
from ..run_folder import RunLogger, check_config_values, prepare_run_folder, read_metrics

__all__ = ["MartingalePEConfig", "ValueMLP", "lq_system", "quadratic_features", "run", "main"]

#: parts and sweeps of the experiment (columns ``part`` and ``sweep`` of metrics.csv)
PARTS = ("lq", "pendulum")
SWEEPS = ("mesh", "paths")
#: the estimators (column ``estimator`` of metrics.csv), in the order of the figures' legends
ESTIMATORS = ("ml", "lstd0", "lstd_half", "gtd_identity", "gtd_invcov", "mstde", "td0_online", "neural_ml", "neural_td0")
#: linear estimators solved in closed form (with a sandwich covariance when requested)
CLOSED_FORM = ("ml", "lstd0", "lstd_half", "gtd_identity", "gtd_invcov", "mstde")
#: the estimators whose errors carry the derived tolerance (MSTDE is biased by design; online TD has no sandwich SE)
WITH_TOLERANCE = ("ml", "lstd0", "lstd_half", "gtd_identity", "gtd_invcov")

COLUMNS = ["part", "sweep", "mesh", "paths", "estimator", "err_true", "err_target", "tol_true",
           "max_z_target", "seconds"]


@dataclass
class MartingalePEConfig:
    """Hyperparameters (defaults: a few minutes on one CPU core)."""

    parts: list = field(default_factory=lambda: ["lq", "pendulum"])
    seed: int = 0
    alpha: float = 0.01
    device: str = "auto"  # "auto": cuda when available, else cpu
    # --- LQ system
    dim: int = 6
    beta: float = 1.0
    horizon: float = 6.0  # simulated horizon; the ML truncation term e^{-beta T} enters the tolerance exactly
    noise: float = 0.5
    feedback_gain: float = 1.5  # K = -gain * I
    control_cost: float = 0.1  # rho
    open_loop_scale: float = 0.5  # A_0 = scale * G / sqrt(d), G standard normal
    meshes: list = field(default_factory=lambda: [0.2, 0.1, 0.05, 0.025])
    mesh_paths: int = 4000
    path_counts: list = field(default_factory=lambda: [250, 1000, 4000])
    paths_mesh: float = 0.05
    chunk_paths: int = 500
    eval_states: int = 4096
    quadratic: bool = True
    quadratic_max_dim: int = 20
    covariance_max_features: int = 64
    online: bool = True
    # --- neural value function
    neural: bool = True
    hidden: int = 32
    neural_head: str = "quadratic"  # LQ part; "linear": the plain tanh MLP (see ValueMLP)
    neural_steps: int = 1000
    neural_lr: float = 5e-3
    neural_paths_per_step: int = 32
    # --- Pendulum
    pendulum_paths: list = field(default_factory=lambda: [100, 300, 1000])
    pendulum_subsample: list = field(default_factory=lambda: [1, 2, 4, 8])
    pendulum_beta: float = 1.0
    pendulum_neural_head: str = "linear"  # the quadratic head made neural TD(0) worse here (ValueMLP)
    pendulum_steps: int = 160  # 8 s at dt = 0.05: e^{-8} = 3e-4 of the value is beyond
    pendulum_kp: float = 2.0
    pendulum_kd: float = 0.5
    pendulum_action_noise: float = 0.5
    pendulum_eval_states: int = 32
    pendulum_rollouts: int = 64
    quick: bool = False
    out: str = "runs/martingale-pe"
    overwrite: bool = False  # write into a non-empty --out (otherwise refused)


def _apply_quick(cfg: MartingalePEConfig) -> MartingalePEConfig:
    """Small sizes for the smoke test (seconds on CPU)."""
    return dataclasses.replace(
        cfg, meshes=[0.2, 0.1], mesh_paths=600, path_counts=[300, 600], paths_mesh=0.1, chunk_paths=300,
        eval_states=1024, neural_steps=60, pendulum_paths=[40, 80], pendulum_subsample=[1, 4], pendulum_steps=80,
        pendulum_eval_states=8, pendulum_rollouts=16,
    )


# ---------------------------------------------------------------------------
# LQ system
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LQSystem:
    """Closed loop ``A`` [d, d], noise ``Sigma`` [d, d], reward matrix ``Q`` [d, d] and the two ground truths."""

    A: np.ndarray
    noise: np.ndarray
    Q: np.ndarray
    beta: float


def lq_system(cfg: MartingalePEConfig, rng: np.random.Generator) -> LQSystem:
    """The closed loop of ``u = Kx`` on a random open-loop system (see module docstring)."""
    d = cfg.dim
    A0 = cfg.open_loop_scale * rng.normal(size=(d, d)) / math.sqrt(d)
    K = -cfg.feedback_gain * np.eye(d)
    A = A0 + K  # B = I
    Q = -(np.eye(d) + cfg.control_cost * K.T @ K)
    return LQSystem(A=A, noise=cfg.noise * np.eye(d), Q=Q, beta=cfg.beta)


def quadratic_features(x: torch.Tensor) -> torch.Tensor:
    """``[x_i x_j for i <= j] + [1]``: shape [..., d] -> [..., d(d+1)/2 + 1]."""
    d = x.shape[-1]
    iu = torch.triu_indices(d, d, device=x.device)
    quad = x[..., iu[0]] * x[..., iu[1]]
    return torch.cat([quad, torch.ones_like(x[..., :1])], dim=-1)


def _quadratic_coords(P: np.ndarray, c: float) -> np.ndarray:
    """Coefficients of x^T P x + c in :func:`quadratic_features`."""
    d = P.shape[0]
    iu = np.triu_indices(d)
    coef = np.where(iu[0] == iu[1], 1.0, 2.0) * P[iu]
    return np.concatenate([coef, [c]])


class ValueMLP(torch.nn.Module):
    r"""A time-independent value network ``(times [p, t], states [p, t, d]) -> [p, t]``.

    ``head="linear"``: :math:`V(x) = a^\top m(x) + b`, :math:`m` a two-layer
    tanh MLP (width ``hidden``). ``head="quadratic"``: the output layer reads
    :math:`h(x) = (x, m(x))` and adds a learned quadratic form of rank ``d``,

    .. math:: V(x) = a^\top h(x) + b + \sum_{j=1}^{d} s_j\,(u_j^\top h(x))^2 ,

    with :math:`s` initialised to zero (so training starts from a linear
    head on :math:`h`). A tanh network saturates outside the region the paths
    visit, so it extrapolates a value that grows like :math:`|x|^2` poorly;
    the quadratic head extrapolates quadratically. It can represent any
    quadratic value (the LQ value :math:`x^\top Px + c` is realisable through
    the :math:`x` block of :math:`h`); it is a structural prior, stated as such
    wherever its errors are reported.

    Measured (``polab run martingale-pe --parts lq`` with ``--neural-head
    linear`` vs the default): relative error against the Euler-chain value
    10-21% with the plain MLP, 3.5-11% with the quadratic head, over the
    default mesh and path sweeps (gradient ML and semi-gradient TD(0), same
    steps, learning rate and data). On Pendulum (``--pendulum-neural-head``)
    it helped gradient ML slightly and made TD(0) worse, so that part keeps
    the plain MLP.
    """

    def __init__(self, state_dim: int, hidden: int, *, head: str = "linear", dtype=torch.float64):
        super().__init__()
        if head not in ("linear", "quadratic"):
            raise ValueError(f"head must be 'linear' or 'quadratic'; got {head!r}.")
        self.head = head
        if head == "linear":
            self.net = torch.nn.Sequential(
                torch.nn.Linear(state_dim, hidden, dtype=dtype), torch.nn.Tanh(),
                torch.nn.Linear(hidden, hidden, dtype=dtype), torch.nn.Tanh(),
                torch.nn.Linear(hidden, 1, dtype=dtype),
            )
            return
        self.body = torch.nn.Sequential(
            torch.nn.Linear(state_dim, hidden, dtype=dtype), torch.nn.Tanh(),
            torch.nn.Linear(hidden, hidden, dtype=dtype), torch.nn.Tanh(),
        )
        self.linear = torch.nn.Linear(hidden + state_dim, 1, dtype=dtype)
        self.directions = torch.nn.Linear(hidden + state_dim, state_dim, bias=False, dtype=dtype)
        self.signs = torch.nn.Parameter(torch.zeros(state_dim, dtype=dtype))

    def forward(self, times, states):
        if self.head == "linear":
            return self.net(states).squeeze(-1)
        h = torch.cat([states, self.body(states)], dim=-1)
        return self.linear(h).squeeze(-1) + (self.directions(h) ** 2 * self.signs).sum(-1)


def _rel_rms(pred: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.sqrt(((pred - ref) ** 2).mean() / (ref**2).mean()))


# ---------------------------------------------------------------------------
# linear estimators over chunks of paths
# ---------------------------------------------------------------------------
def _linear_fits(chunks, *, beta: float, covariance: bool, tail_values=None, extra_tests=None):
    """Closed-form fits of every linear estimator, with moments summed over chunks (``LinearMoments.__add__``).

    ``chunks`` yields ``(batch, features)``; ``tail_values(batch)`` gives the
    Euler-chain value at the last state (for the exact ML truncation term);
    ``extra_tests(batch)`` gives extra test functions [paths, time, e] for the
    over-identified GTD fits.
    """
    sums: dict = {}
    tail = None
    for b, phi in chunks:
        parts = {
            "ml": linear_moments(phi, b, beta=beta, method="ml", covariance=covariance),
            "lstd0": linear_moments(phi, b, beta=beta, method="mo", lambda_=0.0, covariance=covariance),
            "lstd_half": linear_moments(phi, b, beta=beta, method="mo", lambda_=0.5, covariance=covariance),
            "mstde": linear_moments(phi, b, beta=beta, method="mstde", covariance=covariance),
        }
        both = torch.cat([phi, extra_tests(b)], dim=-1)
        tests = eligibility_trace(both, b, beta=beta, lambda_=0.0)
        parts["gtd"] = linear_moments(phi, b, beta=beta, method="mo", test_functions=tests, covariance=covariance)
        for k, m in parts.items():
            sums[k] = m if k not in sums else sums[k] + m
        if tail_values is not None:
            tb = PathBatch(states=b.states, times=b.times, rewards=torch.zeros_like(b.rewards),
                           terminal_rewards=tail_values(b))
            mt = linear_moments(phi, tb, beta=beta, method="ml", covariance=False)
            tail = mt if tail is None else tail + mt
    fits = {k: solve_linear(sums[k]) for k in ("ml", "lstd0", "lstd_half", "mstde")}
    fits["gtd_identity"] = solve_linear(sums["gtd"], weighting="identity")
    fits["gtd_invcov"] = solve_linear(sums["gtd"], weighting="inverse_covariance")
    trunc = None
    if tail is not None:
        trunc = torch.linalg.solve(tail.C / tail.num_paths, tail.c / tail.num_paths)
    return fits, sums["lstd0"], trunc


# ---------------------------------------------------------------------------
# LQ part
# ---------------------------------------------------------------------------
class _LQ:
    def __init__(self, cfg: MartingalePEConfig, rng: np.random.Generator, device: torch.device, num_fits: int):
        self.cfg, self.device = cfg, device
        self.sys = lq_system(cfg, rng)
        self.truth = lq_value(self.sys.A, self.sys.Q, self.sys.noise, beta=cfg.beta)
        self.process = linear_diffusion(torch.as_tensor(self.sys.A), torch.as_tensor(self.sys.noise))
        self.Q = torch.as_tensor(self.sys.Q, dtype=torch.float64, device=device)
        self.gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**31)))
        self.x_eval = torch.randn((cfg.eval_states, cfg.dim), generator=self.gen, dtype=torch.float64, device=device)
        self.v_eval = self._value(self.truth, self.x_eval)
        self.use_quadratic = cfg.quadratic and cfg.dim <= cfg.quadratic_max_dim
        self.k = cfg.dim * (cfg.dim + 1) // 2 + 1
        self.covariance = self.use_quadratic and self.k <= cfg.covariance_max_features
        # Bonferroni over every coefficient of every fit carrying a tolerance
        self.z = float(norm.ppf(1 - cfg.alpha / (2 * max(num_fits, 1) * len(WITH_TOLERANCE) * self.k)))
        self.theta_true = _quadratic_coords(self.truth.P, self.truth.c)

    def _value(self, v, x):
        P = torch.as_tensor(v.P, dtype=x.dtype, device=x.device)
        return torch.einsum("...i,ij,...j->...", x, P, x) + v.c

    def simulate(self, n: int, dt: float) -> PathBatch:
        steps = int(round(self.cfg.horizon / dt))
        t = uniform_grid(self.cfg.horizon, steps, device=self.device)
        x0 = torch.randn((n, self.cfg.dim), generator=self.gen, dtype=torch.float64, device=self.device)
        X = euler_maruyama(self.process, x0, t, generator=self.gen)
        r = torch.einsum("pti,ij,ptj->pt", X[:, :-1], self.Q, X[:, :-1])
        return PathBatch(states=X, times=t, rewards=r)

    def evaluate(self, n: int, dt: float) -> dict:
        cfg = self.cfg
        batch = self.simulate(n, dt)
        euler = lq_euler_value(self.sys.A, self.sys.Q, self.sys.noise, beta=cfg.beta, dt=dt)
        v_target = self._value(euler, self.x_eval)
        rows = {}
        if self.use_quadratic:
            rows.update(self._linear(batch, dt, euler, v_target))
        if cfg.neural:
            rows.update(self._neural(batch, v_target))
        return rows

    def _chunks(self, batch: PathBatch):
        n = batch.num_paths
        for s in range(0, n, self.cfg.chunk_paths):
            b = batch.select(slice(s, min(n, s + self.cfg.chunk_paths)))
            yield b, quadratic_features(b.states)

    def _linear(self, batch, dt, euler, v_target) -> dict:
        cfg = self.cfg
        th_euler = torch.as_tensor(_quadratic_coords(euler.P, euler.c), device=self.device)
        th_true = torch.as_tensor(self.theta_true, device=self.device)
        P_e = torch.as_tensor(euler.P, device=self.device)

        def tail_values(b):
            xN = b.states[:, -1]
            return torch.einsum("pi,ij,pj->p", xN, P_e, xN) + euler.c

        t0 = time.perf_counter()
        fits, m_lstd, trunc = _linear_fits(self._chunks(batch), beta=cfg.beta, covariance=self.covariance,
                                           tail_values=tail_values, extra_tests=lambda b: b.states.abs())
        sec = (time.perf_counter() - t0) / len(fits)
        phi_eval = quadratic_features(self.x_eval)
        out = {}
        for name, f in fits.items():
            pred = phi_eval @ f.theta
            row = {"err_true": _rel_rms(pred, self.v_eval), "err_target": _rel_rms(pred, v_target), "seconds": sec,
                   "tol_true": math.nan, "max_z_target": math.nan}
            if f.standard_error is not None and name in WITH_TOLERANCE:
                extra = trunc.abs() if name == "ml" else torch.zeros_like(f.theta)
                b = self.z * f.standard_error + (th_euler - th_true).abs() + extra
                bound = phi_eval.abs() @ b
                row["tol_true"] = float(torch.sqrt((bound**2).mean() / (self.v_eval**2).mean()))
                row["max_z_target"] = float(((f.theta - th_euler).abs() - extra).clamp_min(0).div(f.standard_error).max())
            out[name] = row
        if cfg.online:
            out["td0_online"] = self._online(batch, m_lstd, dt, phi_eval, v_target)
        return out

    def _online(self, batch, m_lstd, dt, phi_eval, v_target) -> dict:
        """Online TD(0), streamed chunk by chunk (theta carried over), Polyak average of the later chunks."""
        n = m_lstd.num_paths
        steps = online_step_sizes(m_lstd.c / n, m_lstd.C / n, m_lstd.K / n, dt=dt)
        t0 = time.perf_counter()
        theta, avgs = None, []
        og = torch.Generator(device=self.device).manual_seed(int(self.cfg.seed) + 17)
        for b, phi in self._chunks(batch):
            r = td_lambda_online(phi, b, beta=self.cfg.beta, lambda_=0.0, step_size=steps["td"],
                                 paths_per_update=50, num_epochs=2, theta0=theta, generator=og)
            theta = r.theta
            avgs.append(r.theta_average)
        est = torch.stack(avgs[len(avgs) // 2:]).mean(0)
        pred = phi_eval @ est
        return {"err_true": _rel_rms(pred, self.v_eval), "err_target": _rel_rms(pred, v_target),
                "seconds": time.perf_counter() - t0, "tol_true": math.nan, "max_z_target": math.nan}

    def _neural(self, batch, v_target) -> dict:
        return _neural_fits(batch, self.cfg.dim, self.x_eval, self.v_eval, v_target, beta=self.cfg.beta, cfg=self.cfg,
                            head=self.cfg.neural_head)


def _neural_fits(batch: PathBatch, state_dim: int, x_eval, v_eval, v_target, *, beta: float, cfg, head: str) -> dict:
    """Gradient ML and semi-gradient TD(0) on a :class:`ValueMLP` through the core's ``fit_value_function``.

    The network's output is multiplied by a fixed scale taken from the data
    (the mean absolute discounted return of the paths), so that Adam's step
    suits the value range; no ground truth enters the fit.
    """
    w = torch.exp(-beta * batch.times[:, :-1])
    scale = float((w * batch.rewards * batch.dt).sum(1).abs().mean().clamp_min(1e-12))
    out = {}
    for method, name in (("ml", "neural_ml"), ("td", "neural_td0")):
        torch.manual_seed(cfg.seed)  # initial weights only; the data come from the explicit generators
        mod = _Scaled(ValueMLP(state_dim, cfg.hidden, head=head), scale).to(batch.states.device)
        t0 = time.perf_counter()
        fit_value_function(mod, batch, beta=beta, method=method, num_steps=cfg.neural_steps,
                           learning_rate=cfg.neural_lr, paths_per_step=cfg.neural_paths_per_step,
                           generator=torch.Generator().manual_seed(cfg.seed + 1))
        with torch.no_grad():
            pred = mod(None, x_eval)
        out[name] = {"err_true": _rel_rms(pred, v_eval),
                     "err_target": math.nan if v_target is None else _rel_rms(pred, v_target),
                     "seconds": time.perf_counter() - t0, "tol_true": math.nan, "max_z_target": math.nan}
    return out


# ---------------------------------------------------------------------------
# Pendulum part
# ---------------------------------------------------------------------------
def _angle(obs: np.ndarray) -> np.ndarray:
    return np.arctan2(obs[..., 1], obs[..., 0])


def pendulum_features(obs: torch.Tensor) -> torch.Tensor:
    """Trigonometric-polynomial features of ``(cos th, sin th, thdot)``: [..., 3] -> [..., 10] (not realisable)."""
    c, s, w = obs[..., 0], obs[..., 1], obs[..., 2] / 8.0
    return torch.stack([torch.ones_like(c), c, s, w, w * w, w * c, w * s, c * c - s * s, 2 * s * c, w * w * c], -1)


class _Pendulum:
    def __init__(self, cfg: MartingalePEConfig, rng: np.random.Generator, device: torch.device):
        import gymnasium as gym

        self.cfg, self.rng, self.device = cfg, rng, device
        self._make = lambda: gym.make("Pendulum-v1").unwrapped  # horizon handled here, not by TimeLimit
        self.dt = float(self._make().dt)
        # evaluation states from the reset distribution and their Monte Carlo reference
        env = self._make()
        env.reset(seed=int(rng.integers(2**31)))
        self.eval_states = np.stack([env.np_random.uniform([-np.pi, -1.0], [np.pi, 1.0])
                                     for _ in range(cfg.pendulum_eval_states)])
        starts = np.repeat(self.eval_states, cfg.pendulum_rollouts, axis=0)
        obs, rew = self.rollouts(len(starts), starts=starts, desc="pendulum reference")
        disc = np.exp(-cfg.pendulum_beta * self.dt * np.arange(rew.shape[1]))
        G = (rew * disc).sum(1).reshape(cfg.pendulum_eval_states, cfg.pendulum_rollouts)
        self.v_ref = torch.as_tensor(G.mean(1), device=device)
        self.v_ref_se = G.std(1, ddof=1) / math.sqrt(cfg.pendulum_rollouts)
        th, thd = self.eval_states[:, 0], self.eval_states[:, 1]
        self.obs_eval = torch.as_tensor(np.stack([np.cos(th), np.sin(th), thd], -1), device=device)

    def policy(self, obs: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        u = -cfg.pendulum_kp * _angle(obs) - cfg.pendulum_kd * obs[:, 2]
        u = u + cfg.pendulum_action_noise * self.rng.standard_normal(len(obs))
        return np.clip(u, -2.0, 2.0)

    def rollouts(self, n: int, *, starts=None, desc: str = "pendulum data"):
        """``n`` episodes of ``pendulum_steps`` steps: observations [n, steps+1, 3] and rewards [n, steps]."""
        steps = self.cfg.pendulum_steps
        envs = [self._make() for _ in range(n)]
        obs = np.zeros((n, steps + 1, 3))
        rew = np.zeros((n, steps))
        for i, e in enumerate(envs):
            o, _ = e.reset(seed=int(self.rng.integers(2**31)))
            if starts is not None:
                e.state = np.array(starts[i], dtype=np.float64)
                o = e._get_obs()
            obs[i, 0] = o
        for t in tqdm(range(steps), desc=desc, leave=False):
            u = self.policy(obs[:, t])
            for i, e in enumerate(envs):
                o, r, _, _, _ = e.step(np.array([u[i]]))
                obs[i, t + 1] = o
                rew[i, t] = r
        return obs, rew

    def evaluate(self, obs: np.ndarray, rew: np.ndarray, subsample: int) -> dict:
        cfg = self.cfg
        O = torch.as_tensor(obs[:, ::subsample], device=self.device)
        # left-point reward rates on the coarse mesh (the reward rate of the env is r / dt)
        R = torch.as_tensor(rew[:, ::subsample] / self.dt, device=self.device)[:, : O.shape[1] - 1]
        t = torch.arange(O.shape[1], dtype=torch.float64, device=self.device) * self.dt * subsample
        b = PathBatch(states=O, times=t, rewards=R)
        phi = pendulum_features(O)
        t0 = time.perf_counter()
        fits, m_lstd, _ = _linear_fits([(b, phi)], beta=cfg.pendulum_beta, covariance=False,
                                       extra_tests=lambda bb: bb.states[..., 2:].abs() / 8.0)
        sec = (time.perf_counter() - t0) / len(fits)
        phi_eval = pendulum_features(self.obs_eval)
        out = {}
        nan = {"err_target": math.nan, "tol_true": math.nan, "max_z_target": math.nan}
        for name, f in fits.items():
            out[name] = {"err_true": _rel_rms(phi_eval @ f.theta, self.v_ref), "seconds": sec, **nan}
        if cfg.online:
            n = m_lstd.num_paths
            st = online_step_sizes(m_lstd.c / n, m_lstd.C / n, m_lstd.K / n, dt=self.dt * subsample)
            t0 = time.perf_counter()
            r = td_lambda_online(phi, b, beta=cfg.pendulum_beta, lambda_=0.0, step_size=st["td"], paths_per_update=10,
                                 num_epochs=2, generator=torch.Generator(device=self.device).manual_seed(cfg.seed + 23))
            out["td0_online"] = {"err_true": _rel_rms(phi_eval @ r.theta_average, self.v_ref),
                                 "seconds": time.perf_counter() - t0, **nan}
        if cfg.neural:
            out.update(_neural_fits(b, 3, self.obs_eval, self.v_ref, None, beta=cfg.pendulum_beta, cfg=cfg,
                                    head=cfg.pendulum_neural_head))
        return out


class _Scaled(torch.nn.Module):
    """``scale * inner(times, states)``: a fixed output scale in front of a value network."""

    def __init__(self, inner: torch.nn.Module, scale: float):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, times, states):
        return self.scale * self.inner(times, states)


# ---------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check(cfg: MartingalePEConfig) -> None:
    """Every option checked before anything is computed or written (ValueError naming the option)."""
    if isinstance(cfg.dim, bool) or not isinstance(cfg.dim, int) or not 1 <= cfg.dim <= 1000:
        raise ValueError(f"--dim must be an integer in [1, 1000]; got {cfg.dim!r}.")
    check_config_values(cfg, nonempty=("parts", "meshes", "path_counts", "pendulum_paths", "pendulum_subsample"),
                        positive_ints=("mesh_paths", "path_counts", "chunk_paths", "eval_states", "neural_steps", "hidden",
                                       "neural_paths_per_step", "pendulum_paths", "pendulum_subsample", "pendulum_steps",
                                       "pendulum_eval_states", "pendulum_rollouts", "quadratic_max_dim", "covariance_max_features"),
                        probabilities=("alpha",), devices=("device",),
                        positive_floats=("beta", "horizon", "noise", "meshes", "paths_mesh", "neural_lr", "pendulum_beta"),
                        nonneg_floats=("feedback_gain", "control_cost", "open_loop_scale", "pendulum_kp", "pendulum_kd",
                                       "pendulum_action_noise"))


def run(cfg: MartingalePEConfig) -> Path:
    """Run the experiment; returns the run folder.

    The options are checked first; ``cfg.out`` must be new or empty unless ``cfg.overwrite``, and is locked
    for the run (:func:`polab.scaled.run_folder.prepare_run_folder`).
    """
    _check(cfg)
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite, can_resume=False):
        return _run(cfg)


def _run(cfg: MartingalePEConfig) -> Path:
    if cfg.quick:
        cfg = _apply_quick(cfg)
    for p in cfg.parts:
        if p not in PARTS:
            raise ValueError(f"unknown part {p!r}; choose from {sorted(PARTS)}.")
    out = Path(cfg.out)
    device = _device(cfg.device)
    rng = np.random.default_rng(cfg.seed)  # the one seeding point of the experiment
    logger = RunLogger(out, dataclasses.asdict(cfg), COLUMNS, tensorboard=False)
    summary: dict = {"device": str(device)}
    step = 0

    def log(part, sweep, mesh, n, rows):
        nonlocal step
        for name, row in rows.items():
            logger.log(step, {"part": part, "sweep": sweep, "mesh": mesh, "paths": n, "estimator": name, **row})
            step += 1

    if "lq" in cfg.parts:
        jobs = [("mesh", h, cfg.mesh_paths) for h in cfg.meshes] + [("paths", cfg.paths_mesh, n) for n in cfg.path_counts]
        lq = _LQ(cfg, rng, device, num_fits=len(jobs))
        for sweep, h, n in tqdm(jobs, desc=f"LQ d={cfg.dim}"):
            log("lq", sweep, float(h), int(n), lq.evaluate(int(n), float(h)))
        summary["lq"] = {"dim": cfg.dim, "num_features": lq.k if lq.use_quadratic else None, "z": lq.z,
                         "alpha": cfg.alpha, "closed_loop_max_real_eig": float(np.linalg.eigvals(lq.sys.A).real.max()),
                         "value_trace_P": float(np.trace(lq.truth.P)), "value_c": lq.truth.c,
                         "rms_true_value_eval": float(torch.sqrt((lq.v_eval**2).mean()))}
    if "pendulum" in cfg.parts:
        pend = _Pendulum(cfg, rng, device)
        n_max = max(cfg.pendulum_paths)
        obs, rew = pend.rollouts(n_max)
        jobs = [("mesh", m, n_max) for m in cfg.pendulum_subsample] + [("paths", 1, n) for n in cfg.pendulum_paths]
        for sweep, m, n in tqdm(jobs, desc="Pendulum-v1"):
            log("pendulum", sweep, pend.dt * m, int(n), pend.evaluate(obs[:n], rew[:n], int(m)))
        summary["pendulum"] = {"dt": pend.dt, "reference_rel_se": float(np.sqrt((pend.v_ref_se**2).mean())
                                                                         / float(torch.sqrt((pend.v_ref**2).mean()))),
                               "reference_episodes": cfg.pendulum_eval_states * cfg.pendulum_rollouts,
                               "rms_reference_value": float(torch.sqrt((pend.v_ref**2).mean()))}
    logger.close()
    rows = read_metrics(out / "metrics.csv")
    summary["errors"] = _summary_errors(rows, cfg)
    _figures(out, rows, cfg)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return out


def _summary_errors(rows, cfg) -> dict:
    """err_true per estimator at the finest mesh of each part's mesh sweep (largest paths)."""
    out = {}
    for part in PARTS:
        sel = [r for r in rows if r["part"] == part and r["sweep"] == "mesh"]
        if not sel:
            continue
        h = min(r["mesh"] for r in sel)
        out[part] = {r["estimator"]: {"mesh": h, "paths": int(r["paths"]), "err_true": r["err_true"],
                                                       "err_target": r["err_target"], "tol_true": r["tol_true"]}
                     for r in sel if r["mesh"] == h}
    return out


def _figures(out: Path, rows, cfg) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in PARTS if p in cfg.parts]
    for sweep, xkey, fname in (("mesh", "mesh", "error_vs_mesh.png"), ("paths", "paths", "error_vs_paths.png")):
        # panels: (part, error column); for LQ the error against the Euler-chain value (the exact
        # target of the discretised estimators) separates Monte Carlo error from discretisation bias
        panels = [(p, "err_true") for p in parts]
        if "lq" in parts:
            panels.insert(1, ("lq", "err_target"))
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, (part, col) in zip(axes[0], panels):
            sel = [r for r in rows if r["part"] == part and r["sweep"] == sweep]
            for name in sorted({r["estimator"] for r in sel}, key=ESTIMATORS.index):
                pts = sorted((r[xkey], r[col]) for r in sel if r["estimator"] == name)
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
            ax.set_xlabel("mesh dt" if sweep == "mesh" else "paths")
            ax.set_ylabel("relative RMS value error")
            what = {"err_true": "vs truth" if part == "lq" else "vs MC reference", "err_target": "vs Euler-chain value"}[col]
            ax.set_title(f"{part}{f' d={cfg.dim}' if part == 'lq' else ''}: error {what}", fontsize=10)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "figures" / fname, dpi=100)
        plt.close(fig)
    summ = _summary_errors(rows, cfg)
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4), squeeze=False)
    for ax, part in zip(axes[0], parts):
        errs = summ.get(part, {})
        names = list(errs)
        ax.bar(range(len(names)), [errs[n]["err_true"] for n in names])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"{part}: error per estimator (finest mesh)")
    fig.tight_layout()
    fig.savefig(out / "figures" / "errors_per_estimator.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    d = MartingalePEConfig()
    p = argparse.ArgumentParser(prog="polab run martingale-pe", description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=d.parts, choices=sorted(PARTS))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--alpha", type=float, default=d.alpha)
    p.add_argument("--device", default=d.device)
    p.add_argument("--dim", type=int, default=d.dim)
    p.add_argument("--beta", type=float, default=d.beta)
    p.add_argument("--horizon", type=float, default=d.horizon)
    p.add_argument("--noise", type=float, default=d.noise)
    p.add_argument("--meshes", nargs="+", type=float, default=d.meshes)
    p.add_argument("--mesh-paths", type=int, default=d.mesh_paths)
    p.add_argument("--path-counts", nargs="+", type=int, default=d.path_counts)
    p.add_argument("--paths-mesh", type=float, default=d.paths_mesh)
    p.add_argument("--chunk-paths", type=int, default=d.chunk_paths)
    p.add_argument("--no-quadratic", dest="quadratic", action="store_false")
    p.add_argument("--no-neural", dest="neural", action="store_false")
    p.add_argument("--no-online", dest="online", action="store_false")
    p.add_argument("--neural-steps", type=int, default=d.neural_steps)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--neural-head", choices=["linear", "quadratic"], default=d.neural_head, help="LQ part")
    p.add_argument("--pendulum-neural-head", choices=["linear", "quadratic"], default=d.pendulum_neural_head)
    p.add_argument("--pendulum-paths", nargs="+", type=int, default=d.pendulum_paths)
    p.add_argument("--pendulum-subsample", nargs="+", type=int, default=d.pendulum_subsample)
    p.add_argument("--pendulum-rollouts", type=int, default=d.pendulum_rollouts)
    p.add_argument("--quick", action="store_true", help="small sizes (seconds on CPU) for smoke tests")
    p.add_argument("--out", default=d.out)
    p.add_argument("--overwrite", action="store_true", help="write into --out even though it holds files")
    a = p.parse_args(argv)
    kw = {f.name: getattr(a, f.name) for f in dataclasses.fields(MartingalePEConfig) if hasattr(a, f.name)}
    cfg = MartingalePEConfig(**kw)
    out = run(cfg)
    print(f"run folder: {out}")
    return 0
