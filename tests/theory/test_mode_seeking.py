"""Tests for polab.theory.mode_seeking: exact population gradients on categorical policies.

Reference values: finite differences of the objectives written out here
(central differences, step 1e-6: truncation error O(h^2) ~ 1e-12 times the
third derivative, rounding ~ 1e-16 / 1e-6 = 1e-10, hence the 1e-7 absolute
tolerance), brute-force enumeration, and hand derivations in comments.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from polab.theory.mode_seeking import (
    best_of_n_distribution,
    best_of_n_logit_grad,
    bump_reward,
    forward_kl_logit_grad,
    kl_divergence,
    mass_relocation_race,
    pair_probabilities,
    pairwise_logit_grad,
    reference_policy,
    reverse_kl_logit_grad,
    softmax,
    tilted_optimum,
    tilted_reverse_kl_logit_grad,
    worst_of_n_distribution,
)

FD_ATOL = 1e-7  # central differences, see module docstring


def _fd(f, theta, h=1e-6):
    g = np.zeros_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_kl_gradients_match_finite_differences(rng):
    theta, q = rng.normal(size=6), softmax(rng.normal(size=6))
    np.testing.assert_allclose(forward_kl_logit_grad(theta, q), _fd(lambda t: kl_divergence(q, softmax(t)), theta), atol=FD_ATOL)
    np.testing.assert_allclose(reverse_kl_logit_grad(theta, q), _fd(lambda t: kl_divergence(softmax(t), q), theta), atol=FD_ATOL)


def test_tilted_optimum_maximises_regularised_reward(rng):
    ref, R, beta = softmax(rng.normal(size=5)), rng.uniform(size=5), 0.3
    pstar = tilted_optimum(ref, R, beta=beta)

    def objective(p):
        return p @ R - beta * kl_divergence(p, ref)

    # any perturbation of the optimum inside the simplex lowers the objective (strict concavity)
    for _ in range(20):
        other = softmax(np.log(pstar) + 0.1 * rng.normal(size=5))
        assert objective(other) < objective(pstar)
    # the tilted reverse-KL gradient is the negative regularised objective gradient / beta (finite differences)
    theta = rng.normal(size=5)
    fd = _fd(lambda t: -objective(softmax(t)) / beta, theta)
    np.testing.assert_allclose(tilted_reverse_kl_logit_grad(theta, ref, R, beta=beta), fd, atol=FD_ATOL)
    # and it vanishes at the optimum
    np.testing.assert_allclose(tilted_reverse_kl_logit_grad(np.log(pstar), ref, R, beta=beta), 0.0, atol=1e-14)


def test_notes_identity_holds_only_at_the_reference(rng):
    """Notes 6.3: grad KL(p||pi*) = -p*A/beta. Derived here: true at p = pi_ref, off by the KL gradient elsewhere."""
    ref, R, beta = softmax(rng.normal(size=5)), rng.uniform(size=5), 0.2
    pstar = tilted_optimum(ref, R, beta=beta)
    p0 = ref
    np.testing.assert_allclose(reverse_kl_logit_grad(np.log(ref), pstar), -p0 * (R - p0 @ R) / beta, rtol=1e-10, atol=1e-15)
    theta = rng.normal(size=5)
    p = softmax(theta)
    assert np.max(np.abs(reverse_kl_logit_grad(theta, pstar) - (-p * (R - p @ R) / beta))) > 1e-2


def _enumerate_extremes(mu, R, n):
    """Brute force over all K^n tuples; ties broken by the first index among equals (as the estimators do)."""
    K = mu.size
    best, worst = np.zeros(K), np.zeros(K)
    for tup in itertools.product(range(K), repeat=n):
        w = np.prod(mu[list(tup)])
        rs = [R[a] for a in tup]
        best[tup[int(np.argmax(rs))]] += w
        worst[tup[int(np.argmin(rs))]] += w
    return best, worst


def test_best_and_worst_of_n_laws_match_enumeration(rng):
    mu = softmax(rng.normal(size=4))
    R = np.array([0.2, 0.5, 0.2, 0.9])  # a tie between bins 0 and 2
    for n in (1, 2, 3):
        best, worst = _enumerate_extremes(mu, R, n)
        np.testing.assert_allclose(best_of_n_distribution(mu, R, n), best, rtol=1e-12)
        np.testing.assert_allclose(worst_of_n_distribution(mu, R, n), worst, rtol=1e-12)
    # n = 1: the sampler itself
    np.testing.assert_allclose(best_of_n_distribution(mu, R, 1), mu, rtol=1e-12)


def test_on_policy_mean_negative_gradient_is_parallel_to_best_of_n(rng):
    """Derived: with mu = p, E[non-best counts] = N p - b, so the 'mean' term is c (p - b)/(N-1): a rescaling.

    Hence, in expectation, the on-policy mean-over-non-best negative gradient only rescales the
    best-of-N gradient (Adam, being scale-invariant, follows the same path); the 'worst' variant does not.
    """
    theta = rng.normal(size=6)
    R = rng.uniform(size=6)
    p, n, c = softmax(theta), 5, 0.3
    g0 = best_of_n_logit_grad(theta, p, R, n)
    gm = best_of_n_logit_grad(theta, p, R, n, negative_gradient="mean", negative_coef=c)
    np.testing.assert_allclose(gm, (1 + c / (n - 1)) * g0, rtol=1e-12, atol=1e-16)
    gw = best_of_n_logit_grad(theta, p, R, n, negative_gradient="worst", negative_coef=c)
    cos = gw @ g0 / np.linalg.norm(gw) / np.linalg.norm(g0)
    assert cos < 1 - 1e-6


def test_pair_probabilities_sum_to_probability_of_distinct_rewards(rng):
    mu = softmax(rng.normal(size=5))
    R = np.array([0.1, 0.4, 0.4, 0.7, 0.0])
    P = pair_probabilities(mu, R)
    # P(R(y1) != R(y2)) = 1 - sum over reward levels of (level mass)^2
    levels = {}
    for m, r in zip(mu, R):
        levels[r] = levels.get(r, 0.0) + m
    assert P.sum() == pytest.approx(1 - sum(v * v for v in levels.values()), rel=1e-12)
    assert np.all(P[R[:, None] <= R[None, :]] == 0)


def test_dpo_gradient_at_reference_is_beta_over_two_times_pair_flow(rng):
    """At theta = log pi_ref every margin is 0, so -l'(0) = beta/2 and grad = -(beta/2) sum_l P_wl (e_w - e_l)."""
    ref = softmax(rng.normal(size=4))
    R = np.array([0.3, 0.1, 0.8, 0.5])
    beta = 0.4
    P = pair_probabilities(ref, R)
    expected = -(beta / 2) * (P.sum(1) - P.sum(0))
    np.testing.assert_allclose(pairwise_logit_grad(np.log(ref), ref, ref, R, beta=beta), expected, rtol=1e-12)
    # IPO at h = 0 with target 1/(2 beta): l'(0) = -1/beta
    np.testing.assert_allclose(pairwise_logit_grad(np.log(ref), ref, ref, R, loss="ipo", beta=beta),
                               (-1 / beta) * (P.sum(1) - P.sum(0)), rtol=1e-12)


def test_reference_policy_shape_and_notes_values():
    ref = reference_policy()
    assert ref.shape == (100,) and ref.sum() == pytest.approx(1.0, abs=1e-12)
    # notes 6.2 (from a 10 000-sample histogram): bin 0 ~ 0.078, bin 99 ~ 0.042, interior mode near bin 16 ~ 0.027
    assert ref[0] == pytest.approx(0.078, abs=0.0005)
    assert ref[99] == pytest.approx(0.042, abs=0.0005)
    assert int(np.argmax(ref[1:99])) + 1 == 16 and ref[16] == pytest.approx(0.027, abs=0.0005)
    # notes 6.5 item 4: E_ref[R1] ~ 0.039, E_ref[R2] ~ 0.38 (quoted to 2 significant digits)
    assert ref @ bump_reward(center=70) == pytest.approx(0.039, abs=0.0005)
    assert ref @ bump_reward(center=20) == pytest.approx(0.38, abs=0.005)


def test_race_regression_values_and_counterexample():
    """Exact race (notes 6.5 item 2) on the exact reference: regression values derived here.

    The notes quote (34, 52), (26, 25), (4, 2), (3, 1) from a sampled histogram; with exact bin
    probabilities the values are (35, 52), (26, 25), (4, 2), (4, 1). Either way, forward KL
    wins for the far peak at beta = 0.1: the unqualified 'reverse KL is faster' is false here.
    """
    ref = reference_policy()
    expected = {(70, 0.1): (35, 52), (70, 0.05): (26, 25), (20, 0.1): (4, 2), (20, 0.05): (4, 1)}
    for (c, beta), (f_steps, r_steps) in expected.items():
        target = tilted_optimum(ref, bump_reward(center=c), beta=beta)
        fwd = mass_relocation_race(np.log(ref), lambda t: forward_kl_logit_grad(t, target), center=c)
        rev = mass_relocation_race(np.log(ref), lambda t: reverse_kl_logit_grad(t, target), center=c)
        assert (fwd.steps, rev.steps) == (f_steps, r_steps), (c, beta)
        assert fwd.window_mass[fwd.steps] >= 0.5 > fwd.window_mass[fwd.steps - 1]


def test_input_checks():
    with pytest.raises(ValueError, match="sum to 1"):
        forward_kl_logit_grad(np.zeros(3), np.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        forward_kl_logit_grad(np.zeros(4), np.ones(3) / 3)
    with pytest.raises(ValueError, match="negative gradient needs n >= 2"):
        best_of_n_logit_grad(np.zeros(3), np.ones(3) / 3, np.arange(3.0), 1, negative_gradient="worst")
    with pytest.raises(ValueError, match="beta must be > 0"):
        tilted_optimum(np.ones(3) / 3, np.zeros(3), beta=0.0)
