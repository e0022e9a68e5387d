r"""A family of goal-reaching CartPoles with per-episode configurations (goal position, pole length).

Proxy for the robot-dressing setting of Wang et al. (RSS 2023): there, the configuration is the
human's arm pose (and the garment), teachers are trained on ranges of it, and the deployed student
sees a partial point cloud. Here the configuration :math:`c = (g, \ell)` is a goal position
:math:`g` for the cart and the pole's half-length :math:`\ell`; a "region" is a range of goals.

Dynamics: gymnasium's ``CartPoleEnv.step`` (gymnasium 1.4, ``gymnasium/envs/classic_control/cartpole.py``:
Euler integration, force 10 N, tau 0.02 s, termination at |x| > 2.4 or |theta| > 12 degrees,
reset uniform in [-0.05, 0.05]^4) with the half-length :math:`\ell` (and so ``polemass_length``)
set per sub-environment; tested against gymnasium step by step. Reward (new): the cart should
balance the pole *at the goal*,

.. math:: r_t = \exp(-|x_{t+1} - g| / w)\ \text{while the pole is up},\qquad 0 \text{ on the terminating step},

with width :math:`w` (``goal_width``, default 0.5 m); episodes are capped at ``max_steps`` (200).
A policy that only balances at the centre earns :math:`e^{-|g|/w}` per step.

Observations:

- :meth:`CartPoleFamilyVectorEnv.full_observation` (the teachers', privileged):
  :math:`(x, \dot x, \theta, \dot\theta, g, \ell)`;
- :class:`PartialView` (the student's, standing in for the partial point cloud): positions only,
  :math:`(x, \theta)` plus Gaussian noise of scale ``noise``, for the current and the previous step
  (velocities must be inferred from the difference), and the visible configuration :math:`(g, \ell)`
  (as the arm is visible in the point cloud).

The vector environment steps all copies together in numpy and resets a finished sub-environment in
the same call (the returned observation is the new episode's first one; ``info["final_state"]``
holds the last state), drawing its next configuration uniformly from ``configs``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["GRAVITY", "CartPoleFamilyVectorEnv", "PartialView", "sample_configs", "env_steps_per_second"]

GRAVITY, MASSCART, MASSPOLE, FORCE_MAG, TAU = 9.8, 1.0, 0.1, 10.0, 0.02
X_THRESHOLD, THETA_THRESHOLD = 2.4, 12 * 2 * math.pi / 360


def sample_configs(n: int, *, goal_range: tuple[float, float], length_range: tuple[float, float],
                   rng: np.random.Generator) -> np.ndarray:
    """``n`` configurations ``[n, 2]`` = (goal, half-length), uniform on the given ranges."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}.")
    for name, (lo, hi) in (("goal_range", goal_range), ("length_range", length_range)):
        if not lo <= hi:
            raise ValueError(f"{name} must be (low, high) with low <= high; got {(lo, hi)}.")
    if length_range[0] <= 0:
        raise ValueError(f"length_range must be positive; got {length_range}.")
    if max(abs(goal_range[0]), abs(goal_range[1])) >= X_THRESHOLD:
        raise ValueError(f"goal_range must lie inside the track (|g| < {X_THRESHOLD}); got {goal_range}.")
    return np.stack([rng.uniform(*goal_range, size=n), rng.uniform(*length_range, size=n)], axis=1)


class CartPoleFamilyVectorEnv:
    """``num_envs`` goal-reaching CartPoles, each episode with a configuration drawn from ``configs``.

    Parameters
    ----------
    configs : array, shape [C, 2]
        (goal, half-length) rows; each reset draws one uniformly (or the fixed ``assignment``).
    num_envs : int
    max_steps : int
    goal_width : float
    seed : int, optional
    assignment : int array, shape [num_envs], optional
        Fix sub-environment ``i`` to configuration ``assignment[i]`` for every episode (evaluation).
    """

    single_action_space_n = 2

    def __init__(self, configs, num_envs: int, *, max_steps: int = 200, goal_width: float = 0.5, seed: int | None = None,
                 assignment=None):
        self.configs = np.asarray(configs, dtype=np.float64)
        if self.configs.ndim != 2 or self.configs.shape[1] != 2 or self.configs.shape[0] < 1:
            raise ValueError(f"configs must have shape [C, 2] (goal, half-length); got {self.configs.shape}.")
        if (self.configs[:, 1] <= 0).any():
            raise ValueError("configs: every half-length must be > 0.")
        if num_envs < 1 or max_steps < 1 or not goal_width > 0:
            raise ValueError(f"num_envs, max_steps must be >= 1 and goal_width > 0; got {num_envs}, {max_steps}, {goal_width}.")
        self.num_envs, self.max_steps, self.goal_width = int(num_envs), int(max_steps), float(goal_width)
        self.assignment = None if assignment is None else np.asarray(assignment, dtype=np.int64)
        if self.assignment is not None and (self.assignment.shape != (self.num_envs,) or self.assignment.min() < 0
                                            or self.assignment.max() >= len(self.configs)):
            raise ValueError(f"assignment must be [num_envs] indices into configs; got {self.assignment}.")
        self.rng = np.random.default_rng(seed)
        self.state = np.zeros((self.num_envs, 4))
        self.config_index = np.zeros(self.num_envs, dtype=np.int64)
        self.steps = np.zeros(self.num_envs, dtype=np.int64)

    @property
    def goal(self) -> np.ndarray:
        return self.configs[self.config_index, 0]

    @property
    def half_length(self) -> np.ndarray:
        return self.configs[self.config_index, 1]

    def _reset_rows(self, rows: np.ndarray) -> None:
        k = int(rows.sum())
        if k == 0:
            return
        self.state[rows] = self.rng.uniform(-0.05, 0.05, size=(k, 4))
        self.config_index[rows] = (self.assignment[rows] if self.assignment is not None
                                   else self.rng.integers(len(self.configs), size=k))
        self.steps[rows] = 0

    def reset(self, *, seed: int | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_rows(np.ones(self.num_envs, dtype=bool))
        return self.state.astype(np.float32), {"config_index": self.config_index.copy()}

    def dynamics(self, state: np.ndarray, action: np.ndarray, half_length: np.ndarray) -> np.ndarray:
        """One Euler step of gymnasium's CartPole equations with per-row half-length; [N, 4] -> [N, 4]."""
        x, x_dot, theta, theta_dot = state.T
        force = np.where(action == 1, FORCE_MAG, -FORCE_MAG)
        cos, sin = np.cos(theta), np.sin(theta)
        total = MASSPOLE + MASSCART
        pml = MASSPOLE * half_length
        temp = (force + pml * theta_dot**2 * sin) / total
        theta_acc = (GRAVITY * sin - cos * temp) / (half_length * (4.0 / 3.0 - MASSPOLE * cos**2 / total))
        x_acc = temp - pml * theta_acc * cos / total
        return np.stack([x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot, theta_dot + TAU * theta_acc], axis=1)

    def step(self, action):
        action = np.asarray(action, dtype=np.int64)
        self.state = self.dynamics(self.state, action, self.half_length)
        self.steps += 1
        x, theta = self.state[:, 0], self.state[:, 2]
        terminated = (np.abs(x) > X_THRESHOLD) | (np.abs(theta) > THETA_THRESHOLD)
        truncated = (self.steps >= self.max_steps) & ~terminated
        reward = np.where(terminated, 0.0, np.exp(-np.abs(x - self.goal) / self.goal_width))
        done = terminated | truncated
        info = {"config_index": self.config_index.copy(), "final_state": self.state.copy()}
        self._reset_rows(done)
        return self.state.astype(np.float32), reward, terminated, truncated, info

    def full_observation(self) -> np.ndarray:
        """The teachers' view, [N, 6]: state, goal, half-length (float32)."""
        return np.concatenate([self.state, self.configs[self.config_index]], axis=1).astype(np.float32)

    def close(self) -> None:
        pass


@dataclass
class PartialView:
    """The student's partial, noisy view: noisy (x, theta) now and one step ago, plus (goal, half-length); [N, 6].

    Call :meth:`reset` after ``env.reset`` and :meth:`update` after every ``env.step`` (with the
    step's ``terminated | truncated``: a restarted sub-environment's previous frame is its first one).
    """

    noise: float
    rng: np.random.Generator
    prev: np.ndarray | None = None
    cur: np.ndarray | None = None

    def _frame(self, env: CartPoleFamilyVectorEnv) -> np.ndarray:
        pos = env.state[:, [0, 2]]
        return pos + self.noise * self.rng.standard_normal(pos.shape) if self.noise > 0 else pos.copy()

    def reset(self, env: CartPoleFamilyVectorEnv) -> np.ndarray:
        self.cur = self._frame(env)
        self.prev = self.cur.copy()
        return self.observe(env)

    def update(self, env: CartPoleFamilyVectorEnv, done: np.ndarray) -> np.ndarray:
        new = self._frame(env)
        self.prev = np.where(done[:, None], new, self.cur)
        self.cur = new
        return self.observe(env)

    def observe(self, env: CartPoleFamilyVectorEnv) -> np.ndarray:
        return np.concatenate([self.cur, self.prev, env.configs[env.config_index]], axis=1).astype(np.float32)


def env_steps_per_second(num_envs: int = 16, steps: int = 2000, *, seed: int = 0) -> float:
    """Random-action throughput of :class:`CartPoleFamilyVectorEnv` (environment steps per second)."""
    rng = np.random.default_rng(seed)
    env = CartPoleFamilyVectorEnv(np.array([[0.0, 0.5], [1.0, 1.0]]), num_envs, seed=seed)
    env.reset()
    acts = rng.integers(2, size=(steps, num_envs))
    t0 = time.perf_counter()
    for a in acts:
        env.step(a)
    return num_envs * steps / (time.perf_counter() - t0)
