"""polab.estimators.ope_linear: loop references, exact (population) versions, hand-derived cases, errors.

References: per-sample Python loops written here (sharing no code with the library),
polab.theory.bellman_operators / polab.theory.realizability (exact float64 linear algebra), and
hand derivations given in comments.
"""

import numpy as np
import pytest
import torch

from polab.estimators.ope_linear import (
    concentrability_estimate,
    expected_transitions,
    fitted_q_evaluation,
    incompleteness_factor_estimate,
    linear_ope_statistics,
    linear_policy_value,
    lstd_q,
    minimax_objective,
    minimax_pbe,
    projected_bellman_objective,
)
from polab.proofs_checks.finite_mdp_families import random_instance, sample_transitions, two_state_instance
from polab.proofs_checks.realizability_checks import FLOAT64_RTOL, SOLVER_RTOL, check_identities
from polab.theory.bellman_operators import policy_transition_matrix
from polab.theory.realizability import concentrability, incompleteness_factor

RTOL64 = FLOAT64_RTOL
RTOL32 = 1e-5  # float32 (CONVENTIONS.md)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _t(x, dtype=torch.float64):
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    inst = random_instance(generator=rng)
    d = sample_transitions(inst, n, generator=rng)
    term = (rng.random(n) < 0.1).astype(float)
    w = rng.random(n) + 0.1
    return inst, d, term, w


def test_lstd_matches_loop_reference_with_terminals_and_weights():
    inst, d, term, w = _data()
    g = inst.gamma
    A = np.zeros((inst.dim, inst.dim))
    b = np.zeros(inst.dim)
    for i in range(len(d.reward)):  # per-sample accumulation of the TD(0) normal equations
        disc = 0.0 if term[i] else g
        A += w[i] * np.outer(d.phi[i], d.phi[i] - disc * d.next_phi[i])
        b += w[i] * d.phi[i] * d.reward[i]
    ref = np.linalg.solve(A, b)
    res = lstd_q(_t(d.phi), _t(d.reward), _t(d.next_phi), gamma=g, terminal=_t(term), weights=_t(w))
    np.testing.assert_allclose(res.weights.numpy(), ref, rtol=1e-9)  # solve of a 3x3 system with cond ~1e2
    assert float(res.objective) <= 1e-20


def test_fqe_and_unconstrained_minimax_equal_lstd():
    inst, d, term, _ = _data(1)
    args = (_t(d.phi), _t(d.reward), _t(d.next_phi))
    l = lstd_q(*args, gamma=inst.gamma, terminal=_t(term)).weights.numpy()
    f = fitted_q_evaluation(*args, gamma=inst.gamma, terminal=_t(term), iterations=20000, tolerance=1e-14)
    assert f.converged
    np.testing.assert_allclose(f.weights.numpy(), l, rtol=1e-9)  # FQE stop rule 1e-14 / (1 - rho)
    m = minimax_pbe(*args, gamma=inst.gamma, terminal=_t(term))
    np.testing.assert_allclose(m.weights.numpy(), l, rtol=SOLVER_RTOL)


def test_constrained_minimax_is_the_constrained_optimum():
    inst, d, term, _ = _data(2)
    args = (_t(d.phi), _t(d.reward), _t(d.next_phi))
    l = lstd_q(*args, gamma=inst.gamma).weights
    radius = 0.5 * float(l.norm())
    m = minimax_pbe(*args, gamma=inst.gamma, radius=radius)
    assert float(m.weights.norm()) <= radius * (1 + SOLVER_RTOL)
    stats = m.statistics
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(4000, inst.dim))
    pts *= radius * rng.random((4000, 1)) ** (1 / inst.dim) / np.linalg.norm(pts, axis=1, keepdims=True)
    vals = projected_bellman_objective(_t(pts), stats).numpy()
    assert float(m.objective) <= vals.min() * (1 + SOLVER_RTOL) + 1e-12


def test_minimax_objective_equals_empirical_mspbe():
    inst, d, term, w = _data(3)
    args = (_t(d.phi), _t(d.reward), _t(d.next_phi))
    stats = linear_ope_statistics(*args, gamma=inst.gamma, terminal=_t(term), weights=_t(w))
    for k in range(5):
        x = _t(np.random.default_rng(k).normal(size=inst.dim))
        direct = float(minimax_objective(x, *args, gamma=inst.gamma, terminal=_t(term), weights_data=_t(w)))
        assert direct == pytest.approx(float(projected_bellman_objective(x, stats)), rel=RTOL64, abs=1e-14)


def test_terminal_transition_hand_value():
    # one feature, two transitions: phi = 1, r = 1, next phi = 1; the second is terminal.
    # A = (1 - gamma) + 1 = 2 - gamma over 2 samples, b = 1, so w = 2 / (2 - gamma).
    phi = torch.ones(2, 1, dtype=torch.float64)
    res = lstd_q(phi, torch.ones(2, dtype=torch.float64), phi, gamma=0.5, terminal=torch.tensor([0, 1]))
    assert float(res.weights[0]) == pytest.approx(2 / 1.5, rel=RTOL64)


def test_exact_versions_recover_population_quantities():
    rng = np.random.default_rng(4)
    insts = [random_instance(generator=rng), two_state_instance(alpha=0.95)]
    res = check_identities(insts, num_points=3, generator=rng)
    assert res.passed, res
    inst = insts[0]
    f, r, nf, mu = expected_transitions(inst.mdp, inst.policy, inst.features, inst.mu)
    a = incompleteness_factor(inst.features, inst.mdp, inst.policy, inst.mu, gamma=inst.gamma).alpha
    assert float(incompleteness_factor_estimate(f, nf, gamma=inst.gamma, weights=mu)) == pytest.approx(a, rel=1e-8)
    c = concentrability(inst.features, inst.mdp, inst.policy, inst.mu, inst.initial, gamma=inst.gamma)
    est = concentrability_estimate(f, nf, f, nf, gamma=inst.gamma, weights=mu, target_weights=_t(c.occupancy))
    assert float(est) == pytest.approx(c.c_bellman, rel=1e-8)  # generalised eigenvalue, two different algorithms
    v = linear_policy_value(_t(inst.w_star), _t(inst.start_features)[None, :])
    assert float(v) == pytest.approx(inst.true_value, rel=RTOL64)


def test_float32_follows_input_dtype():
    inst, d, term, _ = _data(5)
    r64 = lstd_q(_t(d.phi), _t(d.reward), _t(d.next_phi), gamma=inst.gamma).weights
    r32 = lstd_q(_t(d.phi, torch.float32), _t(d.reward, torch.float32), _t(d.next_phi, torch.float32), gamma=inst.gamma)
    assert r32.weights.dtype == torch.float32 and r32.statistics.gram.dtype == torch.float32
    np.testing.assert_allclose(r32.weights.numpy(), r64.numpy(), rtol=1e-4)  # float32 1e-5 times cond(A) ~ 10


def test_fqe_reports_divergence_on_the_two_state_chain():
    # TD's expected matrix is A = mu1 (1 - 2 gamma) + 4 mu2 (1 - gamma); G^{-1} C = gamma (2 mu1 + 4 mu2) / (mu1 + 4 mu2)
    # > 1 for mu1 = 0.8, gamma = 0.9 (= 0.9 * 2.4 / 1.6 = 1.35), so FQE diverges while LSTD is exact.
    inst = two_state_instance(mu1=0.8, gamma=0.9)
    f, r, nf, mu = expected_transitions(inst.mdp, inst.policy, inst.features, inst.mu)
    res = fitted_q_evaluation(f, r, nf, gamma=0.9, weights=mu, iterations=200)
    assert not res.converged
    assert float(lstd_q(f, r, nf, gamma=0.9, weights=mu).weights[0]) == pytest.approx(1.0, rel=RTOL64)


def test_input_errors_name_the_argument():
    phi = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="next_phi"):
        lstd_q(phi, torch.zeros(4), torch.zeros(4, 3), gamma=0.9)
    with pytest.raises(ValueError, match="gamma"):
        lstd_q(phi, torch.zeros(4), phi, gamma=1.0)
    with pytest.raises(ValueError, match="terminal"):
        lstd_q(phi, torch.zeros(4), phi, gamma=0.5, terminal=torch.tensor([0, 2, 0, 0]))
    with pytest.raises(ValueError, match="singular"):
        lstd_q(phi, torch.zeros(4), phi, gamma=0.5)
    bad = phi.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="phi has non-finite"):
        lstd_q(bad, torch.zeros(4), phi, gamma=0.5)
    with pytest.raises(ValueError, match="weights"):
        lstd_q(phi, torch.zeros(4), phi, gamma=0.5, weights=torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_transition_matrix_row_sums():
    inst = random_instance(generator=np.random.default_rng(9))
    P = policy_transition_matrix(inst.mdp, inst.policy)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=RTOL64)


def test_debiased_alpha_estimate_on_a_double_sampled_population_batch_equals_the_theory():
    # Reference: polab.theory.realizability.incompleteness_factor. A "population" double-sampled batch lists every
    # (s, a, s', s'') with weight mu(s,a) P(s'|s,a) P(s''|s,a): the debiased moments are then exact, so the estimate
    # equals alpha to float64 round-off, whereas the plug-in on the same batch does not (stochastic transitions).
    from polab.estimators.ope_linear import incompleteness_factor_estimate
    from polab.theory.bellman_operators import next_policy_features

    inst = random_instance(generator=np.random.default_rng(7))
    S, A = inst.mdp.num_states, inst.mdp.num_actions
    P = inst.mdp.transitions.reshape(S * A, S)
    nphi = next_policy_features(inst.features, inst.policy, inst.mdp)
    rows, n1, n2, w = [], [], [], []
    for sa in range(S * A):
        for s1 in range(S):
            for s2 in range(S):
                rows.append(inst.features[sa])
                n1.append(nphi[s1])
                n2.append(nphi[s2])
                w.append(inst.mu[sa] * P[sa, s1] * P[sa, s2])
    f, a1, a2, wt = (_t(np.asarray(x)) for x in (rows, n1, n2, w))
    alpha = incompleteness_factor(inst.features, inst.mdp, inst.policy, inst.mu, gamma=inst.gamma).alpha
    deb = float(incompleteness_factor_estimate(f, a1, gamma=inst.gamma, weights=wt, second_next_phi=a2))
    plug = float(incompleteness_factor_estimate(f, a1, gamma=inst.gamma, weights=wt))
    assert deb == pytest.approx(alpha, rel=1e-9)  # a generalised eigenvalue by two algorithms (Cholesky vs scipy)
    assert abs(plug - alpha) > 1e-3
    with pytest.raises(ValueError, match="second_next_phi"):
        incompleteness_factor_estimate(f, a1, gamma=inst.gamma, second_next_phi=a2[:, :1])


def test_paired_next_features_pairs_transitions_of_the_same_pair_without_reuse():
    from polab.estimators.ope_linear import paired_next_features

    idx = torch.tensor([0, 1, 0, 2, 1, 0, 0, 1])
    nphi = torch.arange(16, dtype=torch.float64).reshape(8, 2)
    rows, p1, p2 = paired_next_features(idx, nphi, generator=torch.Generator().manual_seed(0))
    # pair 0 has 4 transitions (2 couples), pair 1 has 3 (1 couple, one dropped), pair 2 has 1 (dropped)
    assert rows.numel() == 3
    row_of = {tuple(nphi[i].tolist()): i for i in range(8)}
    used = []
    for a, b in zip(p1, p2):
        i, j = row_of[tuple(a.tolist())], row_of[tuple(b.tolist())]
        assert idx[i] == idx[j] and i != j
        used += [i, j]
    assert len(set(used)) == len(used)  # every transition used at most once
    with pytest.raises(ValueError, match="twice"):
        paired_next_features(torch.tensor([0, 1, 2]), nphi[:3])
