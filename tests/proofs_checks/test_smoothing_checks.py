"""polab.proofs_checks.smoothing_checks: each check passes, and its machinery is checked against closed forms."""

import math

import numpy as np
import pytest
from scipy.special import ndtr

from polab.proofs_checks.smoothing_checks import (
    BinaryTreeProblem,
    best_static_attack,
    check_coverage,
    check_half_space_identity,
    check_linear_worst_case,
    check_naive_static_bound,
    check_sequential_attacks,
    compounding_errors_problem,
    optimal_adaptive_attack,
    return_distribution,
    xor_problem,
)
from polab.theory.policy_smoothing import adaptive_np_bound


def test_half_space_identity():
    res = check_half_space_identity(generator=np.random.default_rng(0))
    assert res.symbolic_identity
    assert res.max_abs_error_quadrature < 1e-10  # quad with epsabs 1e-13
    assert res.min_margin_other_shifts >= -1e-15
    assert res.passed


def test_linear_worst_case_is_attained():
    # binomial test at test_alpha = 1e-3 (two-sided), 20 000 simulated attacked episodes
    res = check_linear_worst_case(generator=np.random.default_rng(1))
    assert abs(res.exact_attacked - res.bound) < 1e-10
    assert res.passed, res


def test_one_step_dp_equals_closed_form():
    # one step: the optimal attack pushes the observation by -B, value Phi((o - B)/sigma)
    prob = BinaryTreeProblem((np.array([0.4]),), np.array([0.0, 1.0]), "one step")
    for B in (0.0, 0.3, 1.0):
        v = optimal_adaptive_attack(prob, prob.leaf_returns, budget=B, sigma=0.5, grid=50)
        assert v == pytest.approx(ndtr((0.4 - B) / 0.5), rel=1e-12)
        s, shift = best_static_attack(prob, prob.leaf_returns, budget=B, sigma=0.5)
        assert s == pytest.approx(v, rel=1e-12)


def test_dp_converges_from_above_as_the_grid_is_refined():
    prob = compounding_errors_problem()
    vals = [optimal_adaptive_attack(prob, prob.leaf_returns, budget=1.0, sigma=0.5, grid=J) for J in (25, 100, 400)]
    assert vals[0] >= vals[1] - 1e-12 >= vals[2] - 2e-12  # finer grids contain the coarser strategies
    assert vals[1] - vals[2] < 5e-3


def test_return_distribution_sums_to_one_and_matches_independent_steps():
    # margin-only problem (penalty 0): every step independent with P(correct) = Phi(margin / sigma)
    prob = compounding_errors_problem(steps=4, margin=0.3, penalty=0.0)
    values, probs = return_distribution(prob, sigma=0.5)
    q = ndtr(0.3 / 0.5)
    want = [math.comb(4, k) * q**k * (1 - q) ** (4 - k) for k in range(5)]
    np.testing.assert_allclose(probs, want, rtol=1e-12)


@pytest.mark.parametrize("budget", [0.3, 1.0])
def test_optimal_adaptive_attack_never_beats_the_certificate(budget):
    res = check_sequential_attacks(compounding_errors_problem(), budget=budget, sigma=0.5, grid=200, static_grid=40)
    assert np.all(res.adaptive >= res.bound - 1e-12)
    assert res.expected_adaptive >= res.expected_certificate - 1e-12
    assert np.all(res.tightness_gap >= -1e-12)
    assert res.passed


def test_naive_static_analysis_is_not_a_certificate():
    res = check_naive_static_bound()
    np.testing.assert_allclose(res.adaptive, res.bound, atol=1e-9)
    assert np.all(res.adaptive < res.static_closed_form)
    assert res.passed
    # at B = sigma = 1: best static 2 Phi(1/sqrt 2) Phi(-1/sqrt 2) = 0.3645, adaptive Phi(-1) = 0.1587
    k = list(res.budgets).index(1.0)
    assert res.static_closed_form[k] == pytest.approx(2 * ndtr(1 / math.sqrt(2)) * ndtr(-1 / math.sqrt(2)), rel=1e-12)
    assert res.adaptive[k] == pytest.approx(adaptive_np_bound(0.5, budget=1.0, sigma=1.0), abs=1e-9)


def test_xor_problem_clean_probability_is_one_half():
    values, probs = return_distribution(xor_problem(), sigma=0.7)
    np.testing.assert_allclose(probs, [0.5, 0.5], rtol=1e-12)


@pytest.mark.parametrize("method", ["dkw", "clopper-pearson"])
def test_coverage(method):
    # one-sided exact binomial test of H0: failure rate <= alpha = 0.1 at test_alpha = 0.01
    res = check_coverage(method=method, repetitions=150, generator=np.random.default_rng(7))
    assert res.passed, res
    assert np.all(res.mean_gap_to_attack >= 0)
