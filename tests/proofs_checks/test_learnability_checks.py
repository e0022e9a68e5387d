"""Tests of polab.proofs_checks.learnability_checks.

Statistical assertions in this file and their levels (fixed seeds, so CI is
deterministic; each would also hold at the stated level under any seed):

- ``test_monte_carlo``: 40 comparisons at |z| <= 4 (two-sided 6.3e-5 each,
  normal approximation) and 20 exact binomial tests at 1e-4: Bonferroni
  family level 6.5e-3 (``MonteCarloCheck.family_alpha``).
- ``test_stationary_allocation``: 4 window means at |z| <= 4: 2.5e-4.

File total (Bonferroni) below 7e-3. The exact checks use the tolerances
documented in the check functions (epsilon/s for the no-epsilon closed form,
1e-10 relative for float64 otherwise).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

from polab.proofs_checks import learnability_checks as lc
from polab.theory.learnability import mean_abs_group_advantage, mean_abs_rloo_advantage


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Run this module with one intra-op torch thread, restored afterwards.

    The checks call the core estimators on tensors of up to 640k elements,
    above torch's parallel grain size. On a shared 2-core machine a 2-thread
    pool that waits on a descheduled worker made ``check_binomial_expectation``
    about 25 times slower (13 s against 0.5 s, measured with OMP_NUM_THREADS
    2 and 1 under load); results agree to float64 rounding either way.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_enumeration_all_groups_up_to_64():
    res = lc.check_enumeration()
    assert res.passed
    # sum_{G=2}^{64} (G + 1) groups per case
    assert res.num_groups == sum(G + 1 for G in range(2, 65)) == 2142
    assert len(res.cases) == 6  # 2 std conventions x 3 framework epsilons
    for c in res.cases:
        assert c.max_error_over_tolerance <= 1.0  # tolerance eps/s + 1e-10 (derived in check_enumeration)
        assert c.max_rel_error_exact_epsilon <= lc.FLOAT64_RTOL
    assert res.rloo_max_rel_error <= lc.FLOAT64_RTOL


def test_enumeration_tolerance_is_tight():
    # The relative error of the no-epsilon form is exactly eps/(s+eps); for verl's
    # eps = 1e-6 and G <= 64 its maximum is about 1e-6/0.124 = 8e-6 (k = 1, G = 64).
    res = lc.check_enumeration()
    verl = [c for c in res.cases if c.std == "unbiased" and c.epsilon == 1e-6][0]
    assert 7e-6 < verl.max_rel_error_no_epsilon < 9e-6


def test_enumerated_points_match_closed_form():
    for G in (2, 5, 16):
        k = np.arange(G + 1)
        np.testing.assert_allclose(
            lc.enumerated_mean_abs_advantage(G, epsilon=0.1),
            mean_abs_group_advantage(k, G, epsilon=0.1),
            rtol=lc.FLOAT64_RTOL,
            atol=1e-15,
        )
        np.testing.assert_allclose(
            lc.enumerated_mean_abs_advantage(G, estimator="rloo"), mean_abs_rloo_advantage(k, G), rtol=lc.FLOAT64_RTOL
        )
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        lc.enumerated_mean_abs_advantage(1)
    with pytest.raises(ValueError, match="estimator must be"):
        lc.enumerated_mean_abs_advantage(4, estimator="ppo")


def test_monte_carlo():
    res = lc.check_binomial_expectation(generator=np.random.default_rng(12345))
    assert res.alpha_per_comparison == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(4 / math.sqrt(2)))), rel=1e-6)
    assert res.family_alpha < 7e-3
    assert len(res.rows) == 40
    bad = [r for r in res.rows if not r.passed]
    assert not bad, bad
    assert res.passed


def test_monte_carlo_population_convention():
    res = lc.check_binomial_expectation(
        ((4, 0.3), (16, 0.5)), std="population", epsilon=1e-4, generator=np.random.default_rng(7)
    )
    assert res.passed  # 4 comparisons at 6.3e-5 and 2 binomial tests at 1e-4: 4.5e-4


def test_monte_carlo_input_errors():
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        lc.check_binomial_expectation(generator=0)
    with pytest.raises(ValueError, match="0 < p < 1"):
        lc.check_binomial_expectation(((4, 0.0),), generator=np.random.default_rng(0))


def test_symbolic_derivation():
    res = lc.derive_symbolically()
    assert res.passed
    assert all(res.identities.values()), res.identities
    q, p = sp.Symbol("q", positive=True), sp.Symbol("p", positive=True)
    assert sp.simplify(res.mean_abs_deviation - 2 * q * (1 - q)) == 0
    assert sp.simplify(res.expected_rloo - 2 * p * (1 - p)) == 0
    assert res.exact_cases_checked == sum(G + 1 for G in range(2, 9))


def test_stationary_allocation():
    res = lc.check_stationary_allocation(generator=np.random.default_rng(2024))
    assert res.passed
    assert res.counts.sum() == 100_000
    assert np.all(np.abs(res.window_z) <= res.z)
    assert np.all(res.log_ratio <= res.log_ratio_tolerance)
    assert res.arithmetic_max_abs_error <= 1e-12
    # The bonus-corrected prediction is closer than the no-bonus limit (reported, and
    # with these means the remaining bonus is what separates the two).
    assert res.tv_to_predicted < res.tv_to_softmax_of_means
    # allocation order follows the known means
    assert np.all(np.diff(res.probabilities) > 0)


def test_stationary_allocation_input_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="means"):
        lc.check_stationary_allocation((0.5,), generator=rng)
    with pytest.raises(ValueError, match="half_width"):
        lc.check_stationary_allocation(half_width=1.5, generator=rng)
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        lc.check_stationary_allocation(generator=None)


def test_script_report(capsys):
    lc.main()
    out = capsys.readouterr().out
    for tag in ("(a)", "(b)", "(c)", "(d)"):
        assert tag in out
    assert "passed=False" not in out


def test_proofs_checks_do_not_import_scaled():
    import subprocess
    import sys

    code = (
        "import sys, polab.proofs_checks.learnability_checks, polab.proofs_checks.curriculum_benchmark; "
        "bad = [m for m in ('polab.scaled', 'transformers', 'gymnasium') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
