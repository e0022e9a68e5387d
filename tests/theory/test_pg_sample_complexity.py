"""Schedules of polab.theory.pg_sample_complexity against hand-computed values (theory_core.md 4.3-4.5; authors' code @ c4e9b7a)."""

import math

import pytest

from polab.theory.pg_sample_complexity import METHOD_INFO, METHODS, gradient_domination_gap_bound, pg_schedule


@pytest.mark.parametrize(
    "method, t, gamma, eta",
    [
        ("npg_igt", 0, 0.1, 1.0),
        ("npg_igt", 3, 0.1 * 2 / 5, (2 / 5) ** 0.8),
        ("n_harpg", 8, 0.1 * 0.2, 0.2),
        ("harpg", 8, 0.1 * math.sqrt(0.2), 0.2),
        ("vanilla_pg", 1, 0.1 * (2 / 3) ** (2 / 3), 1.0),
        ("normalized_pg", 6, 0.1 * 0.25 ** (2 / 3), 1.0),
        ("momentum_pg", 2, 0.1 * 0.5, 0.5 ** (2 / 3)),
    ],
)
def test_schedules_match_hand_values(method, t, gamma, eta):
    s = pg_schedule(method, t, step_size0=0.1, momentum0=1.0)
    assert s.step_size == pytest.approx(gamma, rel=1e-12)
    assert s.gradient_weight == pytest.approx(eta, rel=1e-12)


def test_momentum_is_a_convex_weight_and_first_step_uses_the_gradient():
    for m in METHODS:
        for t in range(50):
            assert 0.0 <= pg_schedule(m, t).gradient_weight <= 1.0
        assert pg_schedule(m, 0).gradient_weight == 1.0  # d_0 = g_0


def test_exponents_and_batches():
    assert METHOD_INFO["npg_igt"].global_exponent == 2.5 and METHOD_INFO["n_harpg"].global_exponent == 2.0
    assert METHOD_INFO["harpg"].trajectory_batches_per_iteration == 2
    assert METHOD_INFO["npg_igt"].trajectory_batches_per_iteration == 1


def test_gap_bound_formula():
    # (M_g / mu_F) * (g + mu_F sqrt(b) / (M_g (1 - gamma))) by hand: 2 * (0.5 + 0.5*0.1/(1*0.5)) = 1.2
    assert gradient_domination_gap_bound(0.5, fisher_min_eigenvalue=0.5, score_bound=1.0, bias=0.01, gamma=0.5) == pytest.approx(1.2, rel=1e-12)


def test_invalid_inputs_name_the_argument():
    with pytest.raises(ValueError, match="method"):
        pg_schedule("adam", 0)
    with pytest.raises(ValueError, match="momentum0"):
        pg_schedule("npg_igt", 0, momentum0=2.0)
    with pytest.raises(ValueError, match="step"):
        pg_schedule("npg_igt", -1)


def test_schedule_momentum_is_a_deprecated_alias_of_gradient_weight():
    s = pg_schedule("npg_igt", 3)
    with pytest.warns(DeprecationWarning, match="gradient_weight"):
        assert s.momentum == s.gradient_weight
    # eta_t = (2/5)^0.8 at t = 3: the weight of the NEW gradient (torch's momentum would be 1 - eta_t)
    assert s.gradient_weight == pytest.approx((2 / 5) ** 0.8, rel=1e-12)
