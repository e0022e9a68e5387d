"""polab.theory.bellman_operators and polab.theory.realizability against hand-derived values and brute force.

Hand-derived reference: the two-state chain of polab.proofs_checks.finite_mdp_families
(phi = (1, 2), both states move to state 2, w* = 1, start in state 1):
Q^pi = (1, 2); r = Phi w* - gamma P Phi w* = (1 - 2 gamma, 2 - 2 gamma);
d^pi from state 1 = (1 - gamma, gamma); psi = (I - gamma P) phi = (1 - 2 gamma, 2 - 2 gamma);
for d = 1, C_BE = sum d psi^2 / sum mu psi^2 and alpha is the closed form of two_state_alpha.
"""

import math

import numpy as np
import pytest
import torch

from polab.proofs_checks.finite_mdp_families import (
    lumpable_instance,
    random_instance,
    realizability_gap,
    tabular_instance,
    two_state_alpha,
    two_state_critical_mu,
    two_state_instance,
)
from polab.proofs_checks.realizability_checks import (
    check_incompleteness_brute_force,
    check_inherent_bellman_error,
    compare_with_inherent_bellman_error,
    derive_two_state_alpha,
)
from polab.theory.bellman_operators import (
    FiniteMDP,
    occupancy,
    policy_transition_matrix,
    q_values,
    weighted_projection,
)
from polab.theory.realizability import (
    concentrability,
    feature_scale,
    incompleteness_factor,
    inherent_bellman_error,
    metric_entropy_ball,
    metric_entropy_sphere_pair,
    operator_deviation,
    realizability_bound,
)

RTOL = 1e-10  # float64 (CONVENTIONS.md)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the machine is shared: small torch ops are 30x slower with 2 contending threads
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_two_state_chain_hand_values():
    g = 0.9
    inst = two_state_instance(mu1=0.5, gamma=g)
    np.testing.assert_allclose(q_values(inst.mdp, inst.policy, gamma=g), [1.0, 2.0], rtol=RTOL)
    np.testing.assert_allclose(inst.mdp.rewards[:, 0], [1 - 2 * g, 2 - 2 * g], rtol=RTOL)
    np.testing.assert_allclose(occupancy(inst.mdp, inst.policy, inst.initial, gamma=g), [1 - g, g], rtol=RTOL)
    psi = np.array([1 - 2 * g, 2 - 2 * g])
    c = concentrability(inst.features, inst.mdp, inst.policy, inst.mu, inst.initial, gamma=g)
    assert c.c_bellman == pytest.approx(((1 - g) * psi[0] ** 2 + g * psi[1] ** 2) / (0.5 * psi @ psi), rel=RTOL)
    assert c.c_infinity == pytest.approx(max((1 - g) / 0.5, g / 0.5), rel=RTOL)
    a = incompleteness_factor(inst.features, inst.mdp, inst.policy, inst.mu, gamma=g)
    assert a.alpha == pytest.approx(two_state_alpha(0.5, gamma=g), rel=RTOL)
    # K by hand: G = mu1 + 4 mu2; ||G^{-1/2} phi(s)|| sqrt((phi(s) - 2 gamma)^2 + (|r(s)| + sigma)^2), s' = 2 only
    G = 0.5 + 4 * 0.5
    K = max(abs(f) / math.sqrt(G) * math.sqrt((f - 2 * g) ** 2 + (abs(r) + 1.0) ** 2)
            for f, r in [(1.0, 1 - 2 * g), (2.0, 2 - 2 * g)])
    assert feature_scale(inst.features, inst.mdp, inst.policy, inst.mu, gamma=g, reward_noise=1.0) == pytest.approx(K, rel=RTOL)


def test_two_state_alpha_reaches_target_and_limits():
    g = 0.9
    for target in (0.0, 0.3, 0.9, 0.999):
        inst = two_state_instance(alpha=target, gamma=g)
        a = incompleteness_factor(inst.features, inst.mdp, inst.policy, inst.mu, gamma=g).alpha
        assert a == pytest.approx(target, abs=1e-9)  # brentq xtol 1e-15 in mu1; alpha' is finite away from mu_c
    assert two_state_critical_mu(gamma=g) == pytest.approx(1 / 3, rel=RTOL)
    near = two_state_alpha(two_state_critical_mu(gamma=g) + 1e-9, gamma=g)
    assert near > 0.9999


def test_sympy_derivation_of_two_state_alpha():
    res = derive_two_state_alpha()
    assert res.matches_closed_form and res.passed, res


@pytest.mark.parametrize("maker", [tabular_instance, lumpable_instance])
def test_complete_classes_have_alpha_zero(maker):
    inst = maker(generator=np.random.default_rng(3))
    assert realizability_gap(inst) <= 1e-12
    a = incompleteness_factor(inst.features, inst.mdp, inst.policy, inst.mu, gamma=inst.gamma)
    assert a.alpha <= 1e-7  # sqrt of a float64 eigenvalue that is 0 up to ~1e-15
    ibe = inherent_bellman_error(inst.features, inst.mdp, inst.policy, inst.mu, gamma=inst.gamma, radius=10.0)
    assert ibe.value <= 1e-10 * 10


def test_alpha_and_concentrability_against_brute_force():
    rng = np.random.default_rng(11)
    for _ in range(3):
        inst = random_instance(generator=rng)
        res = check_incompleteness_brute_force(inst, num_directions=5000, generator=rng)
        assert res.passed, res
        assert 0 < res.alpha < 1
        assert res.alpha - res.alpha_sampled_max <= 0.05 * res.alpha  # random search gets close (reported: ~1e-5)


def test_inherent_bellman_error_against_random_points():
    rng = np.random.default_rng(5)
    for radius in (0.5, 3.0):
        res = check_inherent_bellman_error(random_instance(generator=rng), radius=radius, num_points=20000, generator=rng)
        assert res.passed, res


def test_metric_entropy_and_deviation_hand_values():
    assert metric_entropy_ball(0.25, dim=3) == pytest.approx(3 * math.log(9), rel=RTOL)
    assert metric_entropy_ball(0.1, dim=2, radius=2.0, feature_norm=3.0) == pytest.approx(2 * math.log(121), rel=RTOL)
    assert metric_entropy_sphere_pair(0.25, dim=2) == pytest.approx(5 * math.log(9), rel=RTOL)
    t, eps, H = operator_deviation(1000, dim=2, scale=3.0, delta=0.05, epsilons=[0.25])
    assert t == pytest.approx(3.0 / 0.5 * math.sqrt(2 * (5 * math.log(9) + math.log(40)) / 1000), rel=RTOL)
    t4, _, _ = operator_deviation(4000, dim=2, scale=3.0, delta=0.05, epsilons=[0.25])
    assert t4 == pytest.approx(t / 2, rel=RTOL)


def test_bound_amplification_and_monotonicity():
    kw = dict(weight_norm=1.0, concentrability=2.0, scale=3.0, dim=2, gamma=0.9, delta=0.1)
    b0 = realizability_bound(10000, alpha=0.0, **kw)
    b9 = realizability_bound(10000, alpha=0.9, **kw)
    assert b9.value_error / b0.value_error == pytest.approx(1 / math.sqrt(1 - 0.81), rel=RTOL)
    assert b0.value_error == pytest.approx(math.sqrt(2.0) / 0.1 * b0.deviation * math.sqrt(2.0), rel=RTOL)
    assert math.isinf(realizability_bound(10000, alpha=1.0, **kw).value_error)
    with pytest.raises(ValueError, match="alpha"):
        realizability_bound(100, alpha=1.5, **kw)


def test_inherent_bellman_error_bound_is_vacuous_where_new_bound_is_not():
    res = compare_with_inherent_bellman_error(two_state_instance(alpha=0.9), radius=5.0)
    assert res.ibe_vacuous_everywhere
    assert np.all(res.ibe_bounds >= res.trivial_bound)
    assert res.first_informative_size is not None and res.first_informative_size <= 10**5
    assert res.realizability_bounds[-1] < 0.01 * res.trivial_bound


def test_input_errors_name_the_argument():
    inst = two_state_instance(mu1=0.5)
    with pytest.raises(ValueError, match="features"):
        incompleteness_factor(np.ones((3, 1)), inst.mdp, inst.policy, inst.mu, gamma=0.9)
    with pytest.raises(ValueError, match="mu"):
        incompleteness_factor(inst.features, inst.mdp, inst.policy, [0.5, 0.6], gamma=0.9)
    with pytest.raises(ValueError, match="transitions"):
        FiniteMDP(transitions=np.ones((2, 1, 2)), rewards=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="gamma"):
        q_values(inst.mdp, inst.policy, gamma=1.0)
    with pytest.raises(ValueError, match="positive definite"):
        weighted_projection(np.array([[1.0], [0.0]]), [0.0, 1.0])


# --------------------------------------------------------------------------
# issue 13: realizability is checked; both amplifications
# --------------------------------------------------------------------------
def test_non_realizable_reward_raises_and_the_ratio_reaches_one_at_the_td_fixed_point():
    # The example: the formula gives 0.481 (it ignores the reward); with the reward bumped at one pair the
    # defining ratio eps_loc / ||Q - TQ|| is exactly 1 at the TD fixed point (derived in the module docstring).
    from polab.theory.bellman_operators import FiniteMDP
    from polab.theory.realizability import incompleteness_ratio, realizability_residual

    inst = random_instance(generator=np.random.default_rng(45))
    ok = incompleteness_factor(inst.features, inst.mdp, inst.policy, inst.mu, gamma=inst.gamma)
    assert ok.realizability_residual <= 1e-12 and round(ok.alpha, 3) == 0.481
    r = inst.mdp.rewards.copy()
    r[0, 0] += 1.0
    mdp = FiniteMDP(transitions=inst.mdp.transitions, rewards=r)
    assert realizability_residual(inst.features, mdp, inst.policy, gamma=inst.gamma) > 0.1
    with pytest.raises(ValueError, match="not realizable.*check_realizability=False"):
        incompleteness_factor(inst.features, mdp, inst.policy, inst.mu, gamma=inst.gamma)
    unchecked = incompleteness_factor(inst.features, mdp, inst.policy, inst.mu, gamma=inst.gamma, check_realizability=False)
    assert unchecked.alpha == pytest.approx(ok.alpha, rel=RTOL)  # the eigenproblem does not see the reward
    phi, mu, g = inst.features, inst.mu, inst.gamma
    P = policy_transition_matrix(mdp, inst.policy)
    w_td = np.linalg.solve(phi.T @ (mu[:, None] * (phi - g * P @ phi)), phi.T @ (mu * r.reshape(-1)))
    assert incompleteness_ratio(w_td, phi, mdp, inst.policy, mu, gamma=g) == pytest.approx(1.0, rel=RTOL)
    # with the realizable reward the ratio at the eigen-direction is the formula's alpha
    w = inst.w_star + ok.direction
    assert incompleteness_ratio(w, phi, inst.mdp, inst.policy, mu, gamma=g) == pytest.approx(ok.alpha, rel=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 0.99])
def test_both_amplifications_and_which_one_is_proved(alpha):
    inst = two_state_instance(alpha=alpha) if alpha > 0 else two_state_instance(mu1=1.0)
    f = incompleteness_factor(inst.features, inst.mdp, inst.policy, inst.mu, gamma=inst.gamma)
    assert f.amplification == pytest.approx(1 / math.sqrt(1 - f.alpha**2), rel=RTOL)  # proved here
    assert f.amplification_paper == pytest.approx(1 / (1 - f.alpha), rel=RTOL)  # the paper's statement
    assert f.amplification_paper >= f.amplification * (1 - RTOL)  # the paper's form is implied by the proved one
    b = realizability_bound(1000, weight_norm=1.0, alpha=f.alpha, concentrability=2.0, scale=3.0, dim=1, gamma=0.9,
                            delta=0.1)
    ratio = math.sqrt((1 + f.alpha) / (1 - f.alpha))  # derived: (1/(1-a)) / (1/sqrt(1-a^2))
    assert b.value_error_paper_form == pytest.approx(b.value_error * ratio, rel=RTOL)
    assert b.amplification_paper == pytest.approx(f.amplification_paper, rel=1e-9)
