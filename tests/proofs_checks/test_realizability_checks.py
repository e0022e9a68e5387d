"""Statistical checks of the realizability bound and of LSTD's behaviour (polab.proofs_checks.realizability_checks).

Alpha budget of this file (each assertion would hold at its level under any seed):
- bound validity: exact binomial test of "violation rate <= delta", level 0.01;
- amplification: Bonferroni over 5 z-tests of MC MSE vs its exact value, family level 1e-3;
  the slope margins (0.1) are ~3 standard errors of the fitted slopes (level ~3e-3 each);
- rate: slope margin 0.1 from the notes (section 5.5), ~3 standard errors (level ~3e-3).
Total below 0.02.
"""

import numpy as np
import pytest
import torch

from polab.proofs_checks.finite_mdp_families import random_instance, sample_transitions, two_state_instance
from polab.proofs_checks.realizability_checks import check_amplification, check_bound_validity, check_sample_rate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bound_holds_in_at_least_one_minus_delta_of_draws():
    inst = random_instance(generator=np.random.default_rng(20230706))
    res = check_bound_validity(inst, num_samples=20000, num_draws=60, delta=0.1,
                               generator=np.random.default_rng(1))
    assert res.pvalue >= 0.01, res.violations  # exact binomial test, level 0.01
    assert res.violations == 0  # fixed seed: the observed count (tightness makes violations very unlikely)
    # informative: the bound is below the data-free bound; tightness reported (median bound/error ~ 10^2-10^3)
    assert np.median(res.bounds) < res.trivial_bound
    print(f"median bound/error {res.median_tightness:.0f}, median bound {np.median(res.bounds):.3f}, "
          f"trivial {res.trivial_bound:.3f}")


def test_error_amplification_as_alpha_approaches_one():
    res = check_amplification(num_draws=400, generator=np.random.default_rng(3))
    assert res.passed, res
    # sample complexity ~ 1/(1 - alpha): MSE slope ~ 1, so the RMS error slope is ~ 1/2, not 1
    assert abs(res.slope_rms_mc - 0.5) <= 0.1


def test_lstd_error_decays_like_root_n():
    inst = random_instance(generator=np.random.default_rng(20230706))
    res = check_sample_rate(inst, sizes=(500, 1000, 2000, 4000), num_draws=150, generator=np.random.default_rng(4))
    assert res.passed, (res.slope, res.rms_errors)
    assert res.bound_slope == pytest.approx(-0.5, abs=1e-12)  # the bound's n^{-1/2}, exactly


def test_fixed_design_counts():
    inst = two_state_instance(mu1=0.3, gamma=0.9)
    d = sample_transitions(inst, 1001, generator=np.random.default_rng(0), design="fixed")
    # floor(1001 * 0.3) = 300, floor(1001 * 0.7) = 700, remainders 0.3 and 0.7: the extra one goes to state 2
    np.testing.assert_array_equal(np.bincount(d.pair), [300, 701])


def test_issue_13_non_realizable_example_is_reproduced_and_refused():
    # formula 0.481, random points of the class reach 0.944 (the issue's brute force reached >= 0.974 on its instance),
    # the TD fixed point reaches exactly 1 (derived); the checked function raises.
    from polab.proofs_checks.realizability_checks import check_non_realizable_reward

    nr = check_non_realizable_reward()
    assert nr.passed, nr
    assert round(nr.alpha_formula, 3) == 0.481 and nr.sampled_max_ratio > 0.9
    assert "not realizable" in nr.message


def test_debiased_alpha_estimator_by_exact_enumeration():
    # Exact (no sampling): every data set of n = 4, 8, 16 double-sampled transitions of a two-state chain with
    # stochastic transitions, weighted by its multinomial probability. References derived in the check: alpha from
    # the theory module; the plug-in limit from the covariance-inflated Gram matrices.
    from polab.proofs_checks.realizability_checks import check_alpha_estimator_bias

    eb = check_alpha_estimator_bias()
    assert eb.passed, eb
    assert eb.plugin_limit - eb.alpha > 0.03  # the plug-in's bias does not vanish
    bias_p = [e - eb.alpha for e in eb.expected_plugin]
    bias_d = [e - eb.alpha for e in eb.expected_debiased]
    assert all(b > 0.015 for b in bias_p)  # and grows towards its limit
    assert abs(bias_d[-1]) < 0.25 * abs(bias_p[-1])  # at n = 16 the debiased bias is under a quarter of it
    assert abs(bias_d[-1]) < abs(bias_d[0]) / 4  # O(1/n): fourfold n, about fourfold smaller (measured 0.050 -> 0.006)
