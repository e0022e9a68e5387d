"""Tests of polab.theory.learnability: hand-computed values, identities, vectorisation, validation.

Tolerances: 1e-12 absolute/relative for float64 closed forms evaluated at a
handful of operations (STYLE.md: float64 about 1e-10 relative; these values
are O(1) and involve a few roundings, so 1e-12 holds with margin). Each
expected constant says how it was computed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from polab.theory.learnability import (
    binary_group_std,
    expected_mean_abs_group_advantage,
    expected_mean_abs_rloo_advantage,
    mean_abs_advantage_limit,
    mean_abs_group_advantage,
    mean_abs_rloo_advantage,
    zero_variance_probability,
)

TOL = 1e-12  # float64, a few roundings on O(1) values (module docstring)


# ---------------------------------------------------------------- hand-computed values
def test_g2_k1_unbiased_by_hand():
    # rewards (1, 0): mean 0.5, deviations +-0.5, unbiased std sqrt(0.5/1) = sqrt(0.5),
    # |A| = 0.5 / sqrt(0.5) = sqrt(0.5) for both responses.
    assert mean_abs_group_advantage(1, 2) == pytest.approx(math.sqrt(0.5), abs=TOL)
    assert mean_abs_group_advantage(1, 2) == pytest.approx(0.7071067811865476, abs=TOL)


def test_g16_k4_unbiased_matches_notes():
    # theory_core.md 1.2: "for G=16, k=4 the formula gives 0.838525";
    # by hand 2*sqrt(0.25*0.75)*sqrt(15/16) = sqrt(0.75)*sqrt(15/16) = sqrt(45/64) = 3*sqrt(5)/8.
    val = mean_abs_group_advantage(4, 16)
    assert val == pytest.approx(3 * math.sqrt(5) / 8, abs=TOL)
    assert round(float(val), 6) == 0.838525


def test_population_values_by_hand():
    # G=2, k=1: population std 0.5, |A| = 0.5/0.5 = 1.
    assert mean_abs_group_advantage(1, 2, std="population") == pytest.approx(1.0, abs=TOL)
    # G=16, k=4: 2*sqrt(3/16) = sqrt(3)/2.
    assert mean_abs_group_advantage(4, 16, std="population") == pytest.approx(math.sqrt(3) / 2, abs=TOL)
    # G=1 (population only): a singleton has advantage 0, as group_advantages(singleton="zero").
    assert mean_abs_group_advantage(1, 1, std="population") == 0.0


def test_zero_variance_groups_give_zero():
    for G in (2, 5, 64):
        for std in ("unbiased", "population"):
            for eps in (0.0, 1e-6):
                assert mean_abs_group_advantage(0, G, std=std, epsilon=eps) == 0.0
                assert mean_abs_group_advantage(G, G, std=std, epsilon=eps) == 0.0


def test_epsilon_form_by_hand():
    # G=2, k=1, unbiased: mean |r - mean| = 0.5, s = sqrt(0.5): 0.5 / (sqrt(0.5) + eps).
    eps = 1e-4
    assert mean_abs_group_advantage(1, 2, epsilon=eps) == pytest.approx(0.5 / (math.sqrt(0.5) + eps), abs=TOL)
    # epsilon = 0 gives the sqrt form exactly (two algebraically equal expressions)
    k, G = np.arange(1, 16), 16
    a = mean_abs_group_advantage(k, G, epsilon=0.0)
    q = k / G
    b = 2 * q * (1 - q) / binary_group_std(k, G)
    np.testing.assert_allclose(a, b, rtol=TOL)


def test_binary_group_std_by_hand():
    # rewards (1,1,0,0): mean 0.5, sum of squares 1, unbiased var 1/3, population var 1/4.
    assert binary_group_std(2, 4) == pytest.approx(math.sqrt(1 / 3), abs=TOL)
    assert binary_group_std(2, 4, std="population") == pytest.approx(0.5, abs=TOL)


def test_rloo_by_hand():
    # rewards (1, 0): A = 1 - 0 = 1 and 0 - 1 = -1, mean |A| = 1 = 2/1 * 2 * 1/4.
    assert mean_abs_rloo_advantage(1, 2) == pytest.approx(1.0, abs=TOL)
    # rewards (1,0,0,0): A_1 = 1, A_others = 0 - 1/3; mean |A| = (1 + 3/3)/4 = 1/2 = 4/3 * 2 * 3/16.
    assert mean_abs_rloo_advantage(1, 4) == pytest.approx(0.5, abs=TOL)


# ---------------------------------------------------------------- identities
def test_symmetry_and_peak():
    for G in (2, 3, 8, 17, 64):
        k = np.arange(G + 1)
        for std in ("unbiased", "population"):
            a = mean_abs_group_advantage(k, G, std=std)
            np.testing.assert_allclose(a, a[::-1], rtol=TOL, atol=TOL)
        if G % 2 == 0:  # maximum sqrt((G-1)/G) at q = 1/2 (module docstring)
            assert mean_abs_group_advantage(np.arange(G + 1), G).max() == pytest.approx(math.sqrt((G - 1) / G), abs=TOL)


def test_unbiased_equals_population_times_factor():
    k, G = np.arange(0, 33), 32
    np.testing.assert_allclose(
        mean_abs_group_advantage(k, G), mean_abs_group_advantage(k, G, std="population") * math.sqrt(31 / 32), rtol=TOL
    )


def test_expectation_g2_by_hand():
    # G=2: only k=1 (prob 2p(1-p)) has signal, value sqrt(0.5) (unbiased) or 1 (population).
    p = np.array([0.0, 0.1, 0.5, 0.73, 1.0])
    np.testing.assert_allclose(expected_mean_abs_group_advantage(p, 2), 2 * p * (1 - p) * math.sqrt(0.5), atol=TOL)
    np.testing.assert_allclose(expected_mean_abs_group_advantage(p, 2, std="population"), 2 * p * (1 - p), atol=TOL)


@pytest.mark.parametrize("std", ["unbiased", "population"])
@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-2])
def test_expectation_against_loop_reference(std, eps):
    # independent reference: math.comb and a Python loop over k
    for G in (2, 7, 16):
        for p in (0.05, 0.3, 0.5, 0.97):
            ref = sum(
                math.comb(G, k) * p**k * (1 - p) ** (G - k) * float(mean_abs_group_advantage(k, G, std=std, epsilon=eps))
                for k in range(G + 1)
            )
            assert expected_mean_abs_group_advantage(p, G, std=std, epsilon=eps) == pytest.approx(ref, rel=1e-12, abs=TOL)


def test_expectation_vectorised_over_p_and_g_matches_scalar_loop():
    p = np.linspace(0, 1, 11)
    G = np.array([[2], [5], [40]])
    got = expected_mean_abs_group_advantage(p, G)
    assert got.shape == (3, 11)
    for i, g in enumerate(G[:, 0]):
        for j, pj in enumerate(p):
            assert got[i, j] == pytest.approx(float(expected_mean_abs_group_advantage(pj, int(g))), abs=TOL)


def test_limit_is_upper_bound_and_rate():
    p = np.linspace(0.01, 0.99, 99)
    lim = mean_abs_advantage_limit(p)
    for G in (2, 4, 8, 64, 512):
        # Jensen bounds derived in the docstring of expected_mean_abs_group_advantage
        assert np.all(expected_mean_abs_group_advantage(p, G) <= lim * (G - 1) / G + TOL)
        assert np.all(expected_mean_abs_group_advantage(p, G, std="population") <= lim * math.sqrt((G - 1) / G) + TOL)
    # Rate: for fixed p in (0, 1) the delta method gives gap = c/G + O(G^-2), so the
    # log-log slope of the gap against G is -1; margin 0.05 (the O(G^-2) term at G >= 256).
    Gs = np.array([256, 512, 1024, 2048, 4096])
    gap = mean_abs_advantage_limit(0.3) - expected_mean_abs_group_advantage(0.3, Gs)
    slope = np.polyfit(np.log(Gs), np.log(gap), 1)[0]
    assert abs(slope + 1.0) < 0.05


def test_limit_values():
    assert mean_abs_advantage_limit(0.5) == pytest.approx(1.0, abs=TOL)
    assert mean_abs_advantage_limit(0.0) == 0.0 and mean_abs_advantage_limit(1.0) == 0.0


def test_rloo_expectation_is_exact_sum():
    # 2p(1-p) for every G (derived in the docstring) against the finite binomial sum
    for G in (2, 3, 10, 33):
        for p in (0.0, 0.2, 0.5, 0.9):
            ref = sum(
                math.comb(G, k) * p**k * (1 - p) ** (G - k) * float(mean_abs_rloo_advantage(k, G)) for k in range(G + 1)
            )
            assert expected_mean_abs_rloo_advantage(p, G) == pytest.approx(ref, abs=TOL)
            assert expected_mean_abs_rloo_advantage(p, G) == pytest.approx(2 * p * (1 - p), abs=TOL)


def test_zero_variance_probability():
    # by hand: G=2, p=0.5: 0.25 + 0.25; G=1: always all-equal; p=0: always all-fail.
    assert zero_variance_probability(0.5, 2) == pytest.approx(0.5, abs=TOL)
    assert zero_variance_probability(0.3, 1) == pytest.approx(1.0, abs=TOL)
    assert zero_variance_probability(0.0, 16) == 1.0
    assert zero_variance_probability(0.2, 3) == pytest.approx(0.2**3 + 0.8**3, abs=TOL)


def test_vectorised_matches_scalar_loop():
    k = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    G = np.array([7, 8, 9, 10])
    got = mean_abs_group_advantage(k, G, epsilon=1e-6)
    for i in range(2):
        for j in range(4):
            assert got[i, j] == float(mean_abs_group_advantage(int(k[i, j]), int(G[j]), epsilon=1e-6))


def test_scalar_inputs_return_scalars():
    assert np.ndim(mean_abs_group_advantage(1, 2)) == 0
    assert isinstance(float(expected_mean_abs_group_advantage(0.5, 8)), float)
    assert isinstance(mean_abs_group_advantage(1, 2), np.floating)


def test_integer_valued_floats_accepted():
    assert mean_abs_group_advantage(4.0, 16.0) == mean_abs_group_advantage(4, 16)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mean_abs_group_advantage(1, 1), "group_size must be >= 2"),
        (lambda: mean_abs_group_advantage(3, 2), "0 <= k <= group_size"),
        (lambda: mean_abs_group_advantage(-1, 2), "0 <= k <= group_size"),
        (lambda: mean_abs_group_advantage(0.5, 2), "integer-valued"),
        (lambda: mean_abs_group_advantage(1, 2.5), "integer-valued"),
        (lambda: mean_abs_group_advantage(1, 4, std="sample"), "std must be"),
        (lambda: mean_abs_group_advantage(1, 4, epsilon=-1e-6), "epsilon must be"),
        (lambda: mean_abs_group_advantage(1, 4, epsilon=float("nan")), "epsilon must be"),
        (lambda: mean_abs_group_advantage([1, 2], [4, 4, 4]), "do not broadcast"),
        (lambda: mean_abs_group_advantage(True, 4), "integer-valued numbers"),
        (lambda: mean_abs_group_advantage(0, 0, std="population"), "group_size must be >= 1"),
        (lambda: binary_group_std(1, 1), "group_size must be >= 2"),
        (lambda: expected_mean_abs_group_advantage(1.2, 4), r"p must lie in \[0, 1\]"),
        (lambda: expected_mean_abs_group_advantage(-0.1, 4), r"p must lie in \[0, 1\]"),
        (lambda: expected_mean_abs_group_advantage(float("nan"), 4), "p must be finite"),
        (lambda: expected_mean_abs_group_advantage(0.5, 1), "group_size must be >= 2"),
        (lambda: expected_mean_abs_group_advantage([0.1, 0.2], [2, 3, 4]), "do not broadcast"),
        (lambda: mean_abs_advantage_limit(2.0), r"p must lie in \[0, 1\]"),
        (lambda: mean_abs_rloo_advantage(1, 1), "group_size must be >= 2"),
        (lambda: expected_mean_abs_rloo_advantage(0.5, 1), "group_size must be >= 2"),
        (lambda: zero_variance_probability(0.5, 0), "group_size must be >= 1"),
        (lambda: zero_variance_probability(1.5, 3), r"p must lie in \[0, 1\]"),
    ],
)
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_theory_does_not_import_torch_or_scaled():
    import subprocess
    import sys

    code = (
        "import sys, polab.theory.learnability; "
        "bad = [m for m in ('torch', 'polab.scaled', 'transformers', 'gymnasium') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
