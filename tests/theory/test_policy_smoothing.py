"""polab.theory.policy_smoothing: the adaptive NP bound and the reward certificates built on it."""

import numpy as np
import pytest
from scipy.stats import binom, norm

from polab.theory.policy_smoothing import (
    adaptive_np_bound,
    certified_expected_reward,
    certified_percentile,
    half_space_probability,
    total_budget,
)

RTOL = 1e-10  # float64


def test_bound_matches_reference_values():
    # reference: scipy.stats.norm (independent of scipy.special.ndtr/ndtri used in the module)
    p = np.array([0.05, 0.5, 0.8, 0.999])
    B = np.array([0.0, 0.3, 1.0])
    got = adaptive_np_bound(p[:, None], budget=B[None, :], sigma=0.4)
    want = norm.cdf(norm.ppf(p[:, None]) - B[None, :] / 0.4)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    # notes 3.7 item 1: p = 0.8, sigma = 0.4, B = 0.3 gives 0.5365 (4 digits quoted there)
    assert adaptive_np_bound(0.8, budget=0.3, sigma=0.4) == pytest.approx(0.5365, abs=5e-5)


def test_bound_edge_cases_and_monotonicity():
    assert adaptive_np_bound(0.0, budget=1.0, sigma=0.5) == 0.0
    assert adaptive_np_bound(1.0, budget=1.0, sigma=0.5) == 1.0
    p = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(adaptive_np_bound(p, budget=0.0, sigma=0.5), p, rtol=RTOL)
    b = np.linspace(0, 3, 40)
    vals = adaptive_np_bound(0.7, budget=b, sigma=0.5)
    assert np.all(np.diff(vals) < 0)


def test_bound_is_convex_in_p_with_the_derived_derivative():
    # module docstring: f_B'(p) = exp(B Phi^{-1}(p)/sigma - B^2 / (2 sigma^2)), increasing in p (convexity)
    sigma, B, h = 0.5, 0.7, 1e-6
    p = np.linspace(0.05, 0.95, 19)
    fd = (adaptive_np_bound(p + h, budget=B, sigma=sigma) - adaptive_np_bound(p - h, budget=B, sigma=sigma)) / (2 * h)
    exact = np.exp(B * norm.ppf(p) / sigma - B**2 / (2 * sigma**2))
    np.testing.assert_allclose(fd, exact, rtol=1e-7)  # central difference error O(h^2) plus rounding eps/h ~ 1e-10
    assert np.all(np.diff(exact) > 0)


def test_half_space_linear_worst_case_is_tight():
    rng = np.random.default_rng(0)
    u = rng.normal(size=6)
    u /= np.linalg.norm(u)
    for p in (0.1, 0.6, 0.95):
        c = 0.3 * norm.ppf(p)
        assert half_space_probability(c, u, np.zeros(6), sigma=0.3) == pytest.approx(p, rel=RTOL)
        assert half_space_probability(c, u, 0.5 * u, sigma=0.3) == pytest.approx(
            adaptive_np_bound(p, budget=0.5, sigma=0.3), rel=RTOL)


def test_total_budget():
    assert total_budget(0.1, 100) == pytest.approx(1.0, rel=RTOL)
    np.testing.assert_allclose(total_budget(0.2, np.array([0, 1, 4])), [0.0, 0.2, 0.4], rtol=RTOL)
    with pytest.raises(ValueError, match="steps"):
        total_budget(0.1, 2.5)


def _binomial_tails(n=200, q=0.9):
    k = np.arange(1, n + 1)
    return k.astype(float), binom.sf(k - 1, n, q)  # P(R >= k)


def test_expected_reward_certificate_exact_tails():
    t, tail = _binomial_tails()
    # B = 0 gives E[R] = 200 * 0.9 exactly (layer-cake sum of exact tails)
    assert certified_expected_reward(t, tail, budget=0.0, sigma=0.4, reward_min=0.0) == pytest.approx(180.0, rel=RTOL)
    B = np.linspace(0, 2, 21)
    got = certified_expected_reward(t, tail, budget=B, sigma=0.4, reward_min=0.0)
    loop = [sum((t[k] - (t[k - 1] if k else 0.0)) * norm.cdf(norm.ppf(tail[k]) - b / 0.4) for k in range(len(t))) for b in B]
    np.testing.assert_allclose(got, loop, rtol=RTOL)
    assert np.all(np.diff(got) <= 0)
    # an event of probability exactly 1 keeps probability 1 under any finite shift (equivalent Gaussian
    # measures), and binom.sf rounds the first 137 tails to 1.0: those layers stay certified at any budget
    assert certified_expected_reward(t, tail, budget=100.0, sigma=0.4, reward_min=0.0) == pytest.approx(
        float(np.sum(tail == 1.0)), abs=1e-12)
    below_one = np.minimum(tail, 0.999)
    assert certified_expected_reward(t, below_one, budget=100.0, sigma=0.4, reward_min=0.0) == pytest.approx(0.0, abs=1e-12)
    # shifting the reward range shifts the certificate
    sh = certified_expected_reward(t - 50, tail, budget=B, sigma=0.4, reward_min=-50.0)
    np.testing.assert_allclose(sh, got - 50, rtol=RTOL, atol=1e-10)


def test_percentile_certificate_at_zero_budget_is_the_quantile():
    t, tail = _binomial_tails()
    levels = np.array([0.013, 0.1, 0.37, 0.5, 0.9])
    got = certified_percentile(t, tail, level=levels, budget=0.0, sigma=0.4, reward_min=0.0)
    np.testing.assert_array_equal(got, binom.ppf(levels, 200, 0.9))
    pct = certified_percentile(t, tail, level=0.5, budget=np.linspace(0, 2, 11), sigma=0.4, reward_min=0.0)
    assert pct.shape == (11,) and np.all(np.diff(pct) <= 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=-1.0), "sigma"),
        (dict(budget=-0.1), "budget"),
        (dict(p=1.2), "probabilities"),
    ],
)
def test_bound_rejects_bad_input(kwargs, match):
    args = dict(p=0.5, budget=0.1, sigma=0.5) | kwargs
    p = args.pop("p")
    with pytest.raises(ValueError, match=match):
        adaptive_np_bound(p, **args)


def test_certificate_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="strictly increasing"):
        certified_expected_reward([2.0, 1.0], [0.5, 0.4], budget=0.1, sigma=1.0, reward_min=0.0)
    with pytest.raises(ValueError, match="reward_min"):
        certified_expected_reward([0.0, 1.0], [0.5, 0.4], budget=0.1, sigma=1.0, reward_min=0.0)
    with pytest.raises(ValueError, match="shape"):
        certified_expected_reward([1.0, 2.0], [0.5], budget=0.1, sigma=1.0, reward_min=0.0)
    with pytest.raises(ValueError, match="level"):
        certified_percentile([1.0], [0.5], level=1.0, budget=0.1, sigma=1.0, reward_min=0.0)
