"""``polab run realizability``: linear OPE at scale, with the factors of the realizability bound.

The verified estimators of :mod:`polab.estimators.ope_linear` (LSTD, fitted Q
evaluation, cvxpy minimax) are called unchanged on offline data that polab
collects itself from gymnasium environments, with random-feature classes:

* ``gridworld``: FrozenLake-v1 (4x4, slippery). Its exact model
  (``env.unwrapped.P``) gives the exact target value through
  :mod:`polab.theory.bellman_operators`, and the exact incompleteness factor and
  Bellman-transfer concentrability of the feature class with respect to the
  empirical data distribution through :mod:`polab.theory.realizability`. Feature rows of
  terminal states are zero, so the exact model and the sampled data (no
  bootstrap after termination) describe the same problem.
* ``cartpole``: CartPole-v1 (deterministic dynamics, so the plug-in
  estimates of alpha and concentrability are consistent). The reference value
  is a long Monte Carlo average of discounted target-policy returns from
  ``reset()`` states; the target rollouts, weighted by
  ``(1 - gamma) gamma^t``, also give the concentrability estimate.

Feature classes (``--features``): ``random-fourier`` (cos(Wx + b), Rahimi & Recht 2007)
or ``neural`` (a frozen random two-layer tanh network), one block per action;
``tabular`` (one-hot states, gridworld only: realizable and complete, so the
error falls like n^-1/2 instead of stopping at the approximation error).
Neither makes Q^pi exactly realizable; the run reports how far it is.

Run folder: ``config.json``, ``metrics.csv`` (one row per environment, data
size and seed), ``summary.json``, ``figures/error_vs_n.png``,
``figures/factors.png``.

Example::

    polab run realizability --out runs/realizability            # a few minutes on CPU
    polab run realizability --envs gridworld --sizes 200 400 --seeds 1 --out /tmp/r
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
from tqdm import tqdm

from polab.estimators.ope_linear import (
    concentrability_estimate,
    fitted_q_evaluation,
    incompleteness_factor_estimate,
    linear_policy_value,
    lstd_q,
    minimax_pbe,
)
from polab.theory.bellman_operators import FiniteMDP, policy_value, q_values, weighted_projection
from polab.theory.realizability import concentrability, incompleteness_factor, realizability_residual

from ..checkpoint import atomic_write_text
from ..run_folder import RunLogger, check_config_values, prepare_run_folder, read_metrics

__all__ = ["RealizabilityConfig", "run", "main"]

COLUMNS = [
    "env", "n", "seed", "v_true", "v_lstd", "v_fqe", "v_minimax", "err_lstd", "err_fqe", "err_minimax",
    "fqe_converged", "alpha_exact", "alpha_hat", "c_be_exact", "c_be_hat", "approx_error", "realizability_residual",
]


@dataclass
class RealizabilityConfig:
    """Hyperparameters of the experiment (defaults finish in a few minutes on one CPU core)."""

    envs: list = field(default_factory=lambda: ["gridworld", "cartpole"])
    sizes: list = field(default_factory=lambda: [500, 1000, 2000, 4000, 8000])
    seeds: int = 3
    seed: int = 0
    gamma: float = 0.95
    features: str = "random-fourier"  # or "neural", or "tabular" (gridworld only)
    num_features: int = 16  # per action, CartPole
    grid_features: int = 6  # per action, gridworld (11 non-terminal states: keep d <= supported pairs)
    feature_bandwidth: float = 1.0
    target_epsilon: float = 0.1
    behaviour_epsilon: float = 0.5
    horizon: int = 200  # behaviour episode cap and Monte Carlo horizon (gamma^200 = 3.5e-5 at 0.95)
    mc_episodes: int = 300
    ridge: float = 1e-6
    minimax_radius: float = 100.0
    out: str = "runs/realizability"
    overwrite: bool = False  # write into a non-empty --out (otherwise refused)


# ---------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------
def _feature_map(kind: str, in_dim: int, num_features: int, bandwidth: float, rng: np.random.Generator):
    """A random map R^in_dim -> R^num_features (frozen)."""
    if kind == "random-fourier":
        W = rng.normal(scale=bandwidth, size=(in_dim, num_features))
        b = rng.uniform(0, 2 * math.pi, size=num_features)
        return lambda x: math.sqrt(2.0 / num_features) * np.cos(x @ W + b)
    if kind == "neural":
        h = 32
        W1 = rng.normal(scale=bandwidth, size=(in_dim, h))
        b1 = rng.normal(scale=0.1, size=h)
        W2 = rng.normal(scale=1 / math.sqrt(h), size=(h, num_features))
        return lambda x: np.tanh(np.tanh(x @ W1 + b1) @ W2) / math.sqrt(num_features)
    raise ValueError(f"features must be 'random-fourier' or 'neural'; got {kind!r}.")


def _per_action(base: np.ndarray, action: np.ndarray, num_actions: int) -> np.ndarray:
    """Block features: phi(s, a) = e_a (x) base(s); base [n, m] -> [n, A m]."""
    n, m = base.shape
    out = np.zeros((n, num_actions * m))
    for a in range(num_actions):
        sel = action == a
        out[sel, a * m:(a + 1) * m] = base[sel]
    return out


def _policy_features(base: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """phi^pi(s) = sum_a pi(a|s) phi(s, a) for block features; probs [n, A]."""
    return (probs[:, :, None] * base[:, None, :]).reshape(base.shape[0], -1)


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def _estimate(cfg, phi, reward, next_phi, terminal, start_phi):
    """The three core estimators, unchanged, and their value estimates."""
    kw = dict(gamma=cfg.gamma, terminal=_t(terminal))
    args = (_t(phi), _t(reward), _t(next_phi))
    out = {}
    res = lstd_q(*args, ridge=cfg.ridge, **kw)
    out["v_lstd"] = float(linear_policy_value(res.weights, _t(start_phi)))
    fqe = fitted_q_evaluation(*args, ridge=cfg.ridge, iterations=2000, tolerance=1e-10, **kw)
    out["v_fqe"] = float(linear_policy_value(fqe.weights, _t(start_phi))) if fqe.converged else math.nan
    out["fqe_converged"] = int(fqe.converged)
    try:
        mm = minimax_pbe(*args, radius=cfg.minimax_radius, **kw)
        out["v_minimax"] = float(linear_policy_value(mm.weights, _t(start_phi)))
    except ValueError:
        out["v_minimax"] = math.nan
    return out


# ---------------------------------------------------------------------------
# gridworld (exact model)
# ---------------------------------------------------------------------------
class _Gridworld:
    def __init__(self, cfg: RealizabilityConfig, rng: np.random.Generator):
        import gymnasium as gym

        self.env = gym.make("FrozenLake-v1", map_name="4x4", is_slippery=True)
        P = self.env.unwrapped.P
        S, A = self.env.observation_space.n, self.env.action_space.n
        T = np.zeros((S, A, S))
        R = np.zeros((S, A))
        self.terminal = np.zeros(S, dtype=bool)
        for s in range(S):
            for a in range(A):
                for p, s2, r, done in P[s][a]:
                    T[s, a, s2] += p
                    R[s, a] += p * r
                    if done:
                        self.terminal[s2] = True
        # terminal states: absorbing with reward 0, so Q = 0 there (matches no-bootstrap data)
        for s in np.flatnonzero(self.terminal):
            T[s] = 0.0
            T[s, :, s] = 1.0
            R[s] = 0.0
        self.mdp = FiniteMDP(transitions=T, rewards=R)
        self.S, self.A = S, A
        # target: epsilon-greedy around the optimal policy (policy iteration on the exact model)
        pi = np.full((S, A), 1.0 / A)
        for _ in range(50):
            q = q_values(self.mdp, pi, gamma=cfg.gamma).reshape(S, A)
            greedy = np.eye(A)[q.argmax(1)]
            new = (1 - cfg.target_epsilon) * greedy + cfg.target_epsilon / A
            if np.allclose(new, pi):
                break
            pi = new
        self.target = pi
        side = int(round(math.sqrt(S)))
        x = np.stack([np.arange(S) // side, np.arange(S) % side], 1) / (side - 1)
        if cfg.features == "tabular":  # one-hot states: Q^pi realizable and the class Bellman complete (alpha = 0)
            base = np.eye(S)[:, ~self.terminal]  # terminal states have Q = 0: no column
        else:
            base = _feature_map(cfg.features, 2, cfg.grid_features, cfg.feature_bandwidth * 3.0, rng)(x)
        base[self.terminal] = 0.0
        self.base = base  # [S, m]
        self.table = np.stack([_per_action(base, np.full(S, a), A) for a in range(A)], 1).reshape(S * A, -1)
        self.initial = np.eye(S)[0]
        self.v_true = policy_value(q_values(self.mdp, pi, gamma=cfg.gamma), pi, self.initial, self.mdp)
        self.q_true = q_values(self.mdp, pi, gamma=cfg.gamma)

    def collect(self, n: int, cfg: RealizabilityConfig, rng: np.random.Generator):
        s_, a_, r_, s2_, term_ = [], [], [], [], []
        seed = int(rng.integers(2**31))
        obs, _ = self.env.reset(seed=seed)
        t = 0
        while len(s_) < n:
            a = int(rng.integers(self.A)) if rng.random() < cfg.behaviour_epsilon else int(rng.choice(self.A, p=self.target[obs]))
            obs2, r, term, trunc, _ = self.env.step(a)
            s_.append(obs); a_.append(a); r_.append(r); s2_.append(obs2); term_.append(term)
            obs, t = obs2, t + 1
            if term or trunc or t >= cfg.horizon:
                obs, _ = self.env.reset()
                t = 0
        s, a, s2 = np.array(s_), np.array(a_), np.array(s2_)
        phi = self.table[s * self.A + a]
        next_phi = _policy_features(self.base[s2], self.target[s2])
        return phi, np.array(r_, dtype=np.float64), next_phi, np.array(term_, dtype=np.float64), s * self.A + a

    def row(self, n, cfg, rng):
        phi, r, nphi, term, pairs = self.collect(n, cfg, rng)
        start = _policy_features(self.base[[0]], self.target[[0]])
        est = _estimate(cfg, phi, r, nphi, term, start)
        mu = np.bincount(pairs, minlength=self.S * self.A) / len(pairs)
        out = {"v_true": self.v_true, **est}
        try:
            # the class's alpha for realizable rewards (the eigenproblem ignores the reward); it describes this run
            # only where realizability_residual is ~0 (tabular features): otherwise alpha is 1 (theory.realizability)
            out["alpha_exact"] = incompleteness_factor(self.table, self.mdp, self.target, mu, gamma=cfg.gamma,
                                                       check_realizability=False).alpha
            out["realizability_residual"] = realizability_residual(self.table, self.mdp, self.target, gamma=cfg.gamma)
            out["c_be_exact"] = concentrability(self.table, self.mdp, self.target, mu, self.initial, gamma=cfg.gamma).c_bellman
            Pi = weighted_projection(self.table, mu)
            out["approx_error"] = float(np.sqrt(mu @ (self.q_true - Pi @ self.q_true) ** 2))
        except ValueError:  # features dependent on the support of mu
            out["alpha_exact"] = out["c_be_exact"] = out["approx_error"] = math.nan
        try:
            out["alpha_hat"] = float(incompleteness_factor_estimate(_t(phi), _t(nphi), gamma=cfg.gamma, terminal=_t(term)))
        except ValueError:
            out["alpha_hat"] = math.nan
        out["c_be_hat"] = math.nan  # the exact value is available; the plug-in needs target rollouts (cartpole)
        return out


# ---------------------------------------------------------------------------
# CartPole (Monte Carlo reference)
# ---------------------------------------------------------------------------
_CARTPOLE_SCALE = np.array([2.4, 3.0, 0.21, 3.0])


class _CartPole:
    def __init__(self, cfg: RealizabilityConfig, rng: np.random.Generator):
        import gymnasium as gym

        self.env = gym.make("CartPole-v1")
        self.A = 2
        if cfg.features == "tabular":
            raise ValueError("features='tabular' exists only for the gridworld (CartPole's state is continuous); "
                             "run with --envs gridworld, or choose --features random-fourier or neural.")
        self.fmap = _feature_map(cfg.features, 4, cfg.num_features, cfg.feature_bandwidth, rng)
        self.cfg = cfg
        # Monte Carlo reference and target-occupancy transitions
        returns, start_states = [], []
        tphi, tnphi, tterm, tw = [], [], [], []
        for _ in tqdm(range(cfg.mc_episodes), desc="cartpole reference", leave=False):
            obs, _ = self.env.reset(seed=int(rng.integers(2**31)))
            start_states.append(obs)
            G, disc = 0.0, 1.0
            for t in range(cfg.horizon):
                a = self.act(obs, cfg.target_epsilon, rng)
                obs2, r, term, trunc, _ = self.env.step(a)
                G += disc * r
                tphi.append(self.phi(obs[None], np.array([a]))[0])
                tnphi.append(self.next_phi(obs2[None])[0])
                tterm.append(float(term))
                tw.append((1 - cfg.gamma) * disc)
                disc *= cfg.gamma
                obs = obs2
                if term or trunc:
                    break
            returns.append(G)
        self.v_true = float(np.mean(returns))
        self.v_se = float(np.std(returns, ddof=1) / math.sqrt(len(returns)))
        self.start = self.next_phi(np.array(start_states))
        self.target_batch = tuple(np.array(x) for x in (tphi, tnphi, tterm, tw))

    # target and behaviour follow the pole-angle rule "push towards the lean" (episodes of ~45 steps
    # at epsilon 0.1, so the value is far from its maximum 1/(1 - gamma)), randomised by epsilon
    def target_probs(self, obs):
        right = (obs[:, 2] > 0).astype(float)
        p_right = (1 - self.cfg.target_epsilon) * right + self.cfg.target_epsilon / 2
        return np.stack([1 - p_right, p_right], 1)

    def act(self, obs, epsilon, rng):
        if rng.random() < epsilon:
            return int(rng.integers(2))
        return int(obs[2] > 0)

    def phi(self, obs, action):
        return _per_action(self.fmap(obs / _CARTPOLE_SCALE), action, self.A)

    def next_phi(self, obs):
        return _policy_features(self.fmap(obs / _CARTPOLE_SCALE), self.target_probs(obs))

    def row(self, n, cfg, rng):
        S, A_, R, S2, T = [], [], [], [], []
        obs, _ = self.env.reset(seed=int(rng.integers(2**31)))
        t = 0
        # behaviour: the target's rule with probability 1 - behaviour_epsilon, uniform otherwise
        while len(S) < n:
            a = self.act(obs, cfg.behaviour_epsilon, rng)
            obs2, r, term, trunc, _ = self.env.step(a)
            S.append(obs); A_.append(a); R.append(r); S2.append(obs2); T.append(float(term))
            obs, t = obs2, t + 1
            if term or trunc or t >= cfg.horizon:
                obs, _ = self.env.reset()
                t = 0
        S, A_, S2 = np.array(S), np.array(A_), np.array(S2)
        phi, nphi, term = self.phi(S, A_), self.next_phi(S2), np.array(T)
        est = _estimate(cfg, phi, np.array(R, dtype=np.float64), nphi, term, self.start)
        out = {"v_true": self.v_true, **est, "alpha_exact": math.nan, "c_be_exact": math.nan, "approx_error": math.nan}
        try:
            out["alpha_hat"] = float(incompleteness_factor_estimate(_t(phi), _t(nphi), gamma=cfg.gamma, terminal=_t(term)))
            tp, tn, tt, tw = self.target_batch
            out["c_be_hat"] = float(concentrability_estimate(_t(phi), _t(nphi), _t(tp), _t(tn), gamma=cfg.gamma,
                                                             terminal=_t(term), target_terminal=_t(tt),
                                                             target_weights=_t(tw)))
        except ValueError:
            out["alpha_hat"] = out["c_be_hat"] = math.nan
        return out


ENVIRONMENTS = {"gridworld": _Gridworld, "cartpole": _CartPole}


def _check(cfg: RealizabilityConfig) -> None:
    """Every option checked before anything is computed or written (ValueError naming the option)."""
    check_config_values(cfg, nonempty=("envs", "sizes"), positive_ints=("sizes", "seeds", "num_features", "grid_features",
                                                                        "horizon", "mc_episodes"),
                        probabilities=("gamma",), positive_floats=("feature_bandwidth", "minimax_radius"),
                        nonneg_floats=("ridge", "target_epsilon", "behaviour_epsilon"))
    for name in ("target_epsilon", "behaviour_epsilon"):
        if getattr(cfg, name) > 1:
            raise ValueError(f"--{name.replace('_', '-')} is a probability of acting at random: give a value in [0, 1]; "
                             f"got {getattr(cfg, name)!r}.")
    if cfg.features == "tabular" and "cartpole" in cfg.envs:
        raise ValueError("features='tabular' exists only for the gridworld (CartPole's state is continuous); "
                         "run with --envs gridworld, or choose --features random-fourier or neural.")


def run(cfg: RealizabilityConfig) -> Path:
    """Run the experiment; returns the run folder.

    The options are checked first; ``cfg.out`` must be new or empty unless ``cfg.overwrite``, and is locked
    for the run (:func:`polab.scaled.run_folder.prepare_run_folder`).
    """
    _check(cfg)
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite, can_resume=False):
        return _run(cfg)


def _run(cfg: RealizabilityConfig) -> Path:
    out = Path(cfg.out)
    for e in cfg.envs:
        if e not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {e!r}; choose from {sorted(ENVIRONMENTS)}.")
    rng = np.random.default_rng(cfg.seed)  # the one seeding point of the experiment
    logger = RunLogger(out, dataclasses.asdict(cfg), COLUMNS, tensorboard=False)
    step = 0
    summary = {}
    jobs = [(e, n, s) for e in cfg.envs for n in cfg.sizes for s in range(cfg.seeds)]
    envs = {}
    for e, n, s in tqdm(jobs, desc="realizability"):
        if e not in envs:
            envs[e] = ENVIRONMENTS[e](cfg, rng)
        row = envs[e].row(int(n), cfg, rng)
        for m in ("lstd", "fqe", "minimax"):
            row[f"err_{m}"] = abs(row[f"v_{m}"] - row["v_true"])
        logger.log(step, {"env": e, "n": int(n), "seed": s, **row})
        step += 1
    logger.close()
    if "cartpole" in envs:
        summary["cartpole_reference_se"] = envs["cartpole"].v_se
    rows = read_metrics(out / "metrics.csv")
    _figures(out, rows, cfg)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return out


def _figures(out: Path, rows_numeric: list[dict], cfg: RealizabilityConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_of = [r["env"] for r in rows_numeric]
    fig, axes = plt.subplots(1, len(cfg.envs), figsize=(5 * len(cfg.envs), 4), squeeze=False)
    for ax, e in zip(axes[0], cfg.envs):
        rows = [r for r, name in zip(rows_numeric, env_of) if name == e]
        for m in ("lstd", "fqe", "minimax"):
            ns = sorted({int(r["n"]) for r in rows})
            med = [np.nanmedian([r[f"err_{m}"] for r in rows if int(r["n"]) == n] or [math.nan]) for n in ns]
            ax.loglog(ns, med, "o-", label=m)
        ax.set_title(f"{e}: |v_hat - v| (median over seeds)")
        ax.set_xlabel("transitions n")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "figures" / "error_vs_n.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, e in enumerate(cfg.envs):
        rows = [r for r, name in zip(rows_numeric, env_of) if name == e]
        for j, k in enumerate(("alpha_exact", "alpha_hat", "c_be_exact", "c_be_hat")):
            vals = [r[k] for r in rows if math.isfinite(r[k])]
            if vals:
                ax.bar(i * 5 + j, np.median(vals), label=f"{e}: {k}")
    ax.set_yscale("log")
    ax.set_title("incompleteness factor and concentrability (median)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figures" / "factors.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    d = RealizabilityConfig()
    p = argparse.ArgumentParser(prog="polab run realizability", description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", default=d.envs, choices=sorted(ENVIRONMENTS))
    p.add_argument("--sizes", nargs="+", type=int, default=d.sizes)
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--gamma", type=float, default=d.gamma)
    p.add_argument("--features", choices=["random-fourier", "neural", "tabular"], default=d.features)
    p.add_argument("--num-features", type=int, default=d.num_features)
    p.add_argument("--grid-features", type=int, default=d.grid_features)
    p.add_argument("--feature-bandwidth", type=float, default=d.feature_bandwidth)
    p.add_argument("--target-epsilon", type=float, default=d.target_epsilon)
    p.add_argument("--behaviour-epsilon", type=float, default=d.behaviour_epsilon)
    p.add_argument("--horizon", type=int, default=d.horizon)
    p.add_argument("--mc-episodes", type=int, default=d.mc_episodes)
    p.add_argument("--ridge", type=float, default=d.ridge)
    p.add_argument("--minimax-radius", type=float, default=d.minimax_radius)
    p.add_argument("--out", default=d.out)
    p.add_argument("--overwrite", action="store_true", help="write into --out even though it holds files")
    a = p.parse_args(argv)
    cfg = RealizabilityConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(RealizabilityConfig)})
    out = run(cfg)
    print(f"run folder: {out}")
    return 0
