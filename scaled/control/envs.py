"""Vectorised environments for the policy-smoothing experiments.

Every environment is a gymnasium vector environment with the ``NEXT_STEP``
autoreset convention of gymnasium 1.x (the step after a termination resets
that sub-environment and returns reward 0; callers mask it). Observations
are returned as float32 *frames* in the scale the threat model is stated in
(``EnvSpec.describe``):

- ``cartpole``: CartPole-v1 capped at 200 steps (the paper's CartPole-v0, reward 1 per step), raw state, through
  gymnasium's own batched ``CartPoleVectorEnv``.
- ``mountaincar``: MountainCar-v0 (200 steps, reward -1 per step), state scaled
  to [-1, 1] per coordinate (position (x + 0.3) / 0.9, velocity v / 0.07), so a
  noise scale means the same for both coordinates. gymnasium has no batched
  MountainCar, so :class:`MountainCarVectorEnv` steps all copies in numpy with
  the dynamics of ``gymnasium/envs/classic_control/mountain_car.py``
  (gymnasium 1.4; tested against it step by step).
- ``pong``, ``freeway``: Atari through ``ale-py`` (ROMs ship with it), grayscale,
  frame skip 4, no sticky actions, 2x2 average-pooled to 105x80 and scaled to
  [0, 1]. Pong is played for one point ("one round", as in the paper): the
  episode ends at the first non-zero reward (``EnvSpec.stop_on_reward``).
  These are GPU-scale configurations; on CPU only smoke tests run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["EnvSpec", "ENV_SPECS", "MountainCarVectorEnv", "make_vector_env", "require_ale"]


@dataclass(frozen=True)
class EnvSpec:
    """What the experiment needs to know about an environment.

    Attributes
    ----------
    name : str
    gym_id : str
    max_steps : int
        Episode length cap (the certificate is on the return of this episode).
    reward_range : (float, float)
        Declared range of the episode return (checked by the certificate).
    integer_returns : bool
        Returns are integers, so Clopper–Pearson can use the integer grid.
    num_actions : int
    frame_shape : tuple
    frame_stack : int
        Frames the policy sees (noise is added to each frame once, before stacking).
    stop_on_reward : bool
        End the episode at the first non-zero reward (Pong, one point).
    potential_scale : float
        Scale of the potential-based shaping used in *training only* (0: none).
    atari : bool
    """

    name: str
    gym_id: str
    max_steps: int
    reward_range: tuple
    integer_returns: bool
    num_actions: int
    frame_shape: tuple
    frame_stack: int = 1
    stop_on_reward: bool = False
    potential_scale: float = 0.0
    atari: bool = False
    notes: str = field(default="", compare=False)

    def describe(self) -> str:
        return self.notes


ENV_SPECS = {
    "cartpole": EnvSpec("cartpole", "CartPole-v1", 200, (0.0, 200.0), True, 2, (4,),
                        notes="CartPole-v1 capped at 200 steps (= CartPole-v0), raw 4-d state; budget and sigma in state units"),
    "mountaincar": EnvSpec("mountaincar", "MountainCar-v0", 200, (-200.0, 0.0), True, 3, (2,), potential_scale=100.0,
                           notes="MountainCar-v0, state scaled to [-1, 1]; budget and sigma in scaled units"),
    "pong": EnvSpec("pong", "ALE/Pong-v5", 2000, (-1.0, 1.0), True, 6, (105, 80), frame_stack=4, stop_on_reward=True,
                    atari=True, notes="Pong, one point, grayscale 105x80 in [0, 1], 4 frames"),
    "freeway": EnvSpec("freeway", "ALE/Freeway-v5", 2100, (0.0, 100.0), True, 3, (105, 80), frame_stack=4, atari=True,
                       notes="Freeway, grayscale 105x80 in [0, 1], 4 frames; return = crossings"),
}


def require_ale():
    """Import ``ale_py`` and register its environments, or raise with the install command."""
    try:
        import ale_py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The Atari configurations (pong, freeway) need ale-py, which ships the ROMs: pip install ale-py"
        ) from exc
    import gymnasium as gym

    gym.register_envs(ale_py)
    return ale_py


# ---------------------------------------------------------------------------
# MountainCar, batched
# ---------------------------------------------------------------------------
_MC_FORCE, _MC_GRAVITY, _MC_MAX_SPEED = 0.001, 0.0025, 0.07
_MC_MIN_POS, _MC_MAX_POS, _MC_GOAL = -1.2, 0.6, 0.5


def _mountaincar_scale(state: np.ndarray) -> np.ndarray:
    """[N, 2] raw (position, velocity) -> [-1, 1] coordinates."""
    return np.stack([(state[:, 0] + 0.3) / 0.9, state[:, 1] / _MC_MAX_SPEED], axis=1).astype(np.float32)


def mountaincar_energy(scaled_obs: np.ndarray) -> np.ndarray:
    """Mechanical energy 0.5 v^2 + (g/3) sin(3x) of scaled observations, divided by its range (~0.0033)."""
    x = scaled_obs[..., 0] * 0.9 - 0.3
    v = scaled_obs[..., 1] * _MC_MAX_SPEED
    return (0.5 * v**2 + _MC_GRAVITY / 3.0 * np.sin(3.0 * x)) / (0.5 * _MC_MAX_SPEED**2 + 2 * _MC_GRAVITY / 3.0)


class MountainCarVectorEnv:
    """``num_envs`` copies of MountainCar-v0 stepped together in numpy (NEXT_STEP autoreset).

    Same dynamics, reset distribution, reward and termination as gymnasium's
    ``MountainCarEnv.step`` (see the module docstring), plus the 200-step
    truncation of the registered ``MountainCar-v0``. Observations are scaled
    (:func:`_mountaincar_scale`).
    """

    def __init__(self, num_envs: int, *, max_steps: int = 200, seed: int | None = None):
        import gymnasium as gym

        self.num_envs = int(num_envs)
        self.max_steps = int(max_steps)
        self.single_action_space = gym.spaces.Discrete(3)
        self.rng = np.random.default_rng(seed)
        self.state = np.zeros((self.num_envs, 2))
        self.steps = np.zeros(self.num_envs, dtype=np.int64)
        self.prev_done = np.zeros(self.num_envs, dtype=bool)

    def _reset_rows(self, rows: np.ndarray) -> None:
        k = int(rows.sum())
        self.state[rows, 0] = self.rng.uniform(-0.6, -0.4, size=k)
        self.state[rows, 1] = 0.0
        self.steps[rows] = 0

    def reset(self, *, seed: int | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_rows(np.ones(self.num_envs, dtype=bool))
        self.prev_done[:] = False
        return _mountaincar_scale(self.state), {}

    def raw_step(self, action: np.ndarray) -> None:
        pos, vel = self.state[:, 0].copy(), self.state[:, 1].copy()
        vel = vel + (action - 1) * _MC_FORCE + np.cos(3 * pos) * (-_MC_GRAVITY)
        vel = np.clip(vel, -_MC_MAX_SPEED, _MC_MAX_SPEED)
        pos = np.clip(pos + vel, _MC_MIN_POS, _MC_MAX_POS)
        vel = np.where((pos == _MC_MIN_POS) & (vel < 0), 0.0, vel)
        self.state = np.stack([pos, vel], axis=1)

    def step(self, action):
        action = np.asarray(action, dtype=np.int64)
        self.raw_step(action)
        self.steps += 1
        terminated = (self.state[:, 0] >= _MC_GOAL) & (self.state[:, 1] >= 0.0)
        truncated = self.steps >= self.max_steps
        reward = np.full(self.num_envs, -1.0)
        # NEXT_STEP autoreset, as gymnasium's CartPoleVectorEnv
        if self.prev_done.any():
            self._reset_rows(self.prev_done)
            reward[self.prev_done] = 0.0
            terminated[self.prev_done] = False
            truncated[self.prev_done] = False
        self.prev_done = terminated | truncated
        return _mountaincar_scale(self.state), reward, terminated, truncated, {}

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------
# Atari frames
# ---------------------------------------------------------------------------
class _AtariFrames:
    """A sync gymnasium vector env of an ALE game returning pooled float32 frames in [0, 1]."""

    def __init__(self, spec: EnvSpec, num_envs: int, seed: int | None):
        import gymnasium as gym

        require_ale()
        self.env = gym.make_vec(spec.gym_id, num_envs=num_envs, vectorization_mode="sync", frameskip=4,
                                obs_type="grayscale", repeat_action_probability=0.0,
                                max_episode_steps=spec.max_steps)
        self.num_envs = num_envs
        self.single_action_space = self.env.single_action_space
        self._seed = seed

    @staticmethod
    def _pool(obs: np.ndarray) -> np.ndarray:
        n, h, w = obs.shape
        return obs.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).astype(np.float32) / 255.0

    def reset(self, *, seed: int | None = None):
        obs, info = self.env.reset(seed=self._seed if seed is None else seed)
        return self._pool(obs), info

    def step(self, action):
        obs, r, te, tr, info = self.env.step(np.asarray(action))
        return self._pool(obs), np.asarray(r, dtype=np.float64), te, tr, info

    def close(self) -> None:
        self.env.close()


def make_vector_env(spec: EnvSpec, num_envs: int, *, seed: int | None = None):
    """A vectorised environment for ``spec`` with ``reset(seed=)``/``step(actions)`` on numpy arrays."""
    if spec.name == "cartpole":
        import gymnasium as gym

        env = gym.make_vec(spec.gym_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                           max_episode_steps=spec.max_steps)
        env.reset(seed=seed)
        return env
    if spec.name == "mountaincar":
        return MountainCarVectorEnv(num_envs, max_steps=spec.max_steps, seed=seed)
    if spec.atari:
        return _AtariFrames(spec, num_envs, seed)
    raise ValueError(f"unknown environment {spec.name!r}; choose from {sorted(ENV_SPECS)}.")
