"""The CartPole configuration family: dynamics equal gymnasium's CartPole, reward, resets, partial view."""

from __future__ import annotations

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from polab.scaled.control.cartpole_family import CartPoleFamilyVectorEnv, PartialView, sample_configs  # noqa: E402


@pytest.mark.parametrize("half_length", [0.5, 0.3, 1.0])
def test_dynamics_match_gymnasium_cartpole_step_by_step(half_length):
    """gymnasium 1.4 CartPoleEnv with its `length` (and `polemass_length`) set to the same half-length."""
    ref = gym.make("CartPole-v1").unwrapped
    ref.length = half_length
    ref.polemass_length = ref.masspole * half_length
    ref.reset(seed=0)
    env = CartPoleFamilyVectorEnv(np.array([[0.0, half_length]]), 1, max_steps=500, seed=1)
    env.reset()
    env.state[0] = np.asarray(ref.state, dtype=np.float64)
    rng = np.random.default_rng(2)
    for t in range(400):
        a = int(rng.integers(2))
        ref_obs, _, ref_term, _, _ = ref.step(a)
        state_before = env.state.copy()
        obs, r, term, trunc, info = env.step(np.array([a]))
        final = info["final_state"][0]
        # float64 Euler steps of the same formulas: agreement to rounding (1e-12 relative)
        assert np.allclose(final, np.asarray(ref.state), rtol=1e-12, atol=1e-12), (t, state_before, final, ref.state)
        assert bool(term[0]) == ref_term
        if ref_term:
            break
    else:
        pytest.fail("the random episode never terminated in 400 steps")


def test_reward_termination_and_same_step_reset():
    env = CartPoleFamilyVectorEnv(np.array([[1.0, 0.5]]), 2, max_steps=3, goal_width=0.5, seed=0)
    env.reset()
    env.state[:] = 0.0
    obs, r, term, trunc, info = env.step(np.array([1, 0]))
    x = info["final_state"][:, 0]
    assert np.allclose(r, np.exp(-np.abs(x - 1.0) / 0.5), rtol=1e-12)
    env.state[0, 2] = 0.5  # pole beyond 12 degrees -> terminates next step with reward 0
    obs, r, term, trunc, info = env.step(np.array([1, 1]))
    assert term[0] and r[0] == 0.0 and not trunc[0]
    assert np.all(np.abs(env.state[0]) <= 0.05) and env.steps[0] == 0  # reset in the same call
    obs, r, term, trunc, info = env.step(np.array([1, 1]))
    assert trunc[1] and not term[1]  # third step of sub-environment 1: truncated at max_steps


def test_configuration_draws_and_assignment():
    configs = np.array([[-1.0, 0.3], [0.0, 0.5], [1.0, 0.9]])
    env = CartPoleFamilyVectorEnv(configs, 3000, seed=0)
    _, info = env.reset()
    counts = np.bincount(info["config_index"], minlength=3)
    assert counts.min() > 850  # 1000 expected each; binomial sd ~26, so 850 is ~6 sd
    fixed = CartPoleFamilyVectorEnv(configs, 4, seed=0, assignment=np.array([2, 2, 0, 1]))
    fixed.reset()
    assert fixed.goal.tolist() == [1.0, 1.0, -1.0, 0.0] and fixed.half_length.tolist() == [0.9, 0.9, 0.3, 0.5]
    assert fixed.full_observation().shape == (4, 6)
    with pytest.raises(ValueError, match="configs"):
        CartPoleFamilyVectorEnv(np.array([[0.0, -0.5]]), 2)
    with pytest.raises(ValueError, match="goal_range"):
        sample_configs(3, goal_range=(-3.0, 0.0), length_range=(0.3, 1.0), rng=np.random.default_rng(0))


def test_partial_view_holds_two_noiseless_frames_and_the_configuration():
    env = CartPoleFamilyVectorEnv(np.array([[0.5, 0.7]]), 2, max_steps=100, seed=3)
    env.reset()
    pv = PartialView(0.0, np.random.default_rng(0))
    o0 = pv.reset(env)
    assert np.allclose(o0[:, :2], env.state[:, [0, 2]]) and np.allclose(o0[:, 2:4], o0[:, :2])
    before = env.state[:, [0, 2]].copy()
    _, _, te, tr, _ = env.step(np.array([0, 1]))
    o1 = pv.update(env, te | tr)
    assert np.allclose(o1[:, :2], env.state[:, [0, 2]], atol=1e-7) and np.allclose(o1[:, 2:4], before, atol=1e-7)
    assert np.allclose(o1[:, 4:], [[0.5, 0.7], [0.5, 0.7]])
    noisy = PartialView(0.1, np.random.default_rng(1)).reset(env)
    assert not np.allclose(noisy[:, :2], env.state[:, [0, 2]])
