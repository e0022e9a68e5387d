"""Control PPO (polab.scaled.control.ppo) on the core: GAE and the clipped loss come from polab.estimators."""

from __future__ import annotations

import math

import pytest
import torch

gym = pytest.importorskip("gymnasium")

from polab.scaled.control.envs import ENV_SPECS  # noqa: E402
from polab.scaled.control.policies import MLPActorCritic, make_actor_critic  # noqa: E402
from polab.scaled.control.ppo import PPOConfig, ppo_minibatch_loss, rollout_advantages, train_ppo  # noqa: E402


def _loop_gae(rews, vals, dones, next_v, gamma, lam):
    """Reference: the per-step recursion over a [T, N] rollout (time-major), episode ends cut the bootstrap."""
    T = rews.shape[0]
    adv = torch.zeros_like(rews)
    last = torch.zeros_like(next_v)
    for t in reversed(range(T)):
        nv = vals[t + 1] if t + 1 < T else next_v
        nonterm = 1.0 - dones[t]
        delta = rews[t] + gamma * nv * nonterm - vals[t]
        last = delta + gamma * lam * nonterm * last
        adv[t] = last
    return adv, adv + vals


def test_rollout_advantages_hand_derived():
    # T = 3, one env, gamma = lambda = 0.5, V = 0, bootstrap 2, episode ends after step 1:
    # A_2 = 1 + 0.5 * 2 = 2; A_1 = 1 (terminal); A_0 = 1 + 0.25 * A_1 = 1.25.
    r = torch.ones(3, 1, dtype=torch.float64)
    v = torch.zeros(3, 1, dtype=torch.float64)
    d = torch.tensor([[0.0], [1.0], [0.0]], dtype=torch.float64)
    adv, ret = rollout_advantages(r, v, d, torch.ones_like(r), torch.tensor([2.0], dtype=torch.float64), gamma=0.5, lambda_=0.5)
    assert adv[:, 0].tolist() == [1.25, 1.0, 2.0] and ret[:, 0].tolist() == [1.25, 1.0, 2.0]


def test_rollout_advantages_match_loop_on_valid_steps_and_skip_autoreset_steps():
    g = torch.Generator().manual_seed(0)
    T, N = 40, 6
    rews = torch.randn(T, N, generator=g, dtype=torch.float64)
    vals = torch.randn(T, N, generator=g, dtype=torch.float64)
    next_v = torch.randn(N, generator=g, dtype=torch.float64)
    ends = torch.rand(T, N, generator=g) < 0.15
    # as in the vector env: the step after an episode end is the autoreset transition (invalid, reward 0, not done)
    valid = torch.ones(T, N, dtype=torch.float64)
    valid[1:][ends[:-1]] = 0.0
    dones = (ends & (valid > 0)).to(torch.float64)
    rews = rews * valid
    adv, ret = rollout_advantages(rews, vals, dones, valid, next_v, gamma=0.99, lambda_=0.95)
    ref_adv, ref_ret = _loop_gae(rews, vals, dones, next_v, 0.99, 0.95)
    on = valid > 0
    assert bool((~on).any()) and bool(dones.any())
    torch.testing.assert_close(adv[on], ref_adv[on], rtol=1e-12, atol=1e-12)  # float64, same recursion
    torch.testing.assert_close(ret[on], ref_ret[on], rtol=1e-12, atol=1e-12)
    assert bool((adv[~on] == 0).all()) and bool((ret[~on] == 0).all())


def test_minibatch_loss_equals_ppo_formula_value_and_gradient():
    torch.manual_seed(0)
    net = MLPActorCritic(4, 3, hidden=8).double()
    g = torch.Generator().manual_seed(1)
    B = 64
    x = torch.randn(B, 1, 4, generator=g, dtype=torch.float64)
    a = torch.randint(0, 3, (B,), generator=g)
    with torch.no_grad():
        logp_now = torch.distributions.Categorical(logits=net.logits(x)).log_prob(a)
    old = logp_now + 0.4 * torch.randn(B, generator=g, dtype=torch.float64)  # ratios far from 1: clipping is active
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    ret = torch.randn(B, generator=g, dtype=torch.float64)
    clip, cv, ce = 0.2, 0.5, 0.01

    loss, pl = ppo_minibatch_loss(net, x, a, old, adv, ret, clip=clip, value_coef=cv, entropy_coef=ce)
    grads = torch.autograd.grad(loss, list(net.parameters()))

    # reference: Schulman et al. 2017, eq. 7 (clipped surrogate) + value MSE - entropy, written out here
    dist = torch.distributions.Categorical(logits=net.logits(x))
    ratio = torch.exp(dist.log_prob(a) - old)
    A = (adv - adv.mean()) / (adv.std() + 1e-8)
    ref = (-torch.min(ratio * A, ratio.clamp(1 - clip, 1 + clip) * A).mean()
           + cv * 0.5 * ((net.value(x) - ret) ** 2).mean() - ce * dist.entropy().mean())
    ref_grads = torch.autograd.grad(ref, list(net.parameters()))
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)  # float64: reduction order only
    for gr, rg in zip(grads, ref_grads):
        torch.testing.assert_close(gr, rg, rtol=1e-10, atol=1e-12)
    clipped = ((ratio > 1 + clip) & (A > 0)) | ((ratio < 1 - clip) & (A < 0))
    assert pl.clip_fraction == pytest.approx(float(clipped.double().mean()), abs=1e-12) and pl.clip_fraction > 0


def test_train_ppo_tiny_is_deterministic_and_learns_something():
    spec = ENV_SPECS["cartpole"]
    cfg = dict(total_steps=512, num_envs=2, rollout_steps=64, epochs=2, minibatches=2, train_sigmas=[0.1, 0.2], seed=3)
    torch.manual_seed(3)
    init = {k: v.clone() for k, v in make_actor_critic(spec).state_dict().items()}  # what train_ppo builds after seeding
    net1, stats1 = train_ppo(spec, PPOConfig(**cfg), progress=False)
    net2, stats2 = train_ppo(spec, PPOConfig(**cfg), progress=False)
    s1, s2 = net1.state_dict(), net2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)  # same seed: bit-identical training
    assert any(not torch.equal(s1[k], init[k]) for k in s1)  # parameters moved from the seeded initialisation
    assert len(stats1) == 4 and len(stats2) == 4  # 512 steps / (2 envs * 64 steps)
    for a, b in zip(stats1, stats2):
        assert a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)
    assert set(stats1[0]) == {"update", "steps", "mean_return", "episodes", "clip_fraction", "ppo_kl"}
    assert all(0.0 <= r["clip_fraction"] <= 1.0 for r in stats1)
