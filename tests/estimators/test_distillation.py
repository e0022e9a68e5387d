"""Tests of polab.estimators.distillation: losses, the linear known optimum, DAgger state, exact tabular DAgger.

Ground truths: the least-squares optimum K Sigma P^T (P Sigma P^T)^-1 and its Schur-complement residual
(derived in the module docstring; data built so that its empirical second moment is exactly Sigma),
brute-force trajectory enumeration for the tabular visitation, a generic optimiser for the tabular
cross-entropy fit, and closed forms of a two-state "tightrope" chain for the compounding error of
behaviour cloning versus DAgger.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from polab.estimators.distillation import (
    DAggerBuffer,
    action_regression_loss,
    beta_schedule,
    linear_distillation_solution,
    mix_actions,
    policy_kl_loss,
    tabular_dagger,
    tabular_executed_policy,
    tabular_expected_cost,
    tabular_fit_student,
    tabular_state_distributions,
)

F64 = 1e-10  # float64 relative tolerance (CONVENTIONS)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def test_action_regression_loss_matches_hand_values_and_mask():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.0, 2.0], [1.0, 1.0], [3.0, 1.0]], dtype=torch.float64)
    res = action_regression_loss(s, t)
    # per-sample squared errors: 1, 2, 4 -> mean 7/3
    assert torch.allclose(res.per_sample, torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64), rtol=F64)
    assert abs(res.loss.item() - 7.0 / 3.0) < F64
    masked = action_regression_loss(s, t, mask=torch.tensor([1, 0, 1]))
    assert abs(masked.loss.item() - 2.5) < F64  # (1 + 4) / 2
    masked.loss.backward()
    # d/ds of sum_i m_i ||s_i - t_i||^2 / 2 = m_i (s_i - t_i)
    assert torch.allclose(s.grad, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, -2.0]], dtype=torch.float64), rtol=F64)


def test_policy_kl_loss_against_torch_kl_div_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(7, 4, generator=g, dtype=torch.float64)
    for tau in (1.0, 0.5):
        res = policy_kl_loss(s, t, temperature=tau)
        q = torch.softmax(t / tau, dim=1)
        ref = torch.nn.functional.kl_div(torch.log_softmax(s, 1), q, reduction="batchmean")  # KL(q || p_s)
        assert abs(res.loss.item() - ref.item()) < F64
        (grad,) = torch.autograd.grad(res.loss, s)
        # d KL(q||softmax(s)) / ds = (softmax(s) - q) / batch
        assert torch.allclose(grad, (torch.softmax(s, 1) - q).detach() / 7, rtol=1e-9, atol=1e-12)
    zero = policy_kl_loss(t * 2.0, t, temperature=0.5)  # student logits = teacher / tau: the minimiser
    assert abs(zero.loss.item()) < 1e-12 and zero.agreement == 1.0


def test_policy_kl_agreement_and_bad_inputs():
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert policy_kl_loss(s, t).agreement == pytest.approx(2.0 / 3.0)
    assert policy_kl_loss(s, t, mask=torch.tensor([1, 0, 1])).agreement == 1.0
    with pytest.raises(ValueError, match="temperature"):
        policy_kl_loss(s, t, temperature=0.0)
    with pytest.raises(ValueError, match="same shape"):
        policy_kl_loss(s, t[:, :1])
    with pytest.raises(ValueError, match="non-finite"):
        policy_kl_loss(s, torch.tensor([[float("nan"), 0.0]] * 3))
    with pytest.raises(ValueError, match="no sample"):
        action_regression_loss(s, t, mask=torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# linear expert -> linear student over a partial observation: known optimum
# ---------------------------------------------------------------------------------------------
def _states_with_second_moment(n, sigma, g):
    """n states whose empirical second moment S^T S / n equals sigma exactly (up to rounding)."""
    q, _ = torch.linalg.qr(torch.randn(n, sigma.shape[0], generator=g, dtype=torch.float64))
    return (n**0.5) * q @ torch.linalg.cholesky(sigma).T


def test_linear_distillation_reaches_the_closed_form_optimum_and_residual():
    g = torch.Generator().manual_seed(1)
    d, n = 5, 300
    B = torch.randn(d, d, generator=g, dtype=torch.float64)
    sigma = B @ B.T + 0.5 * torch.eye(d, dtype=torch.float64)
    K = torch.randn(2, d, generator=g, dtype=torch.float64)  # linear teacher a = K s
    P = torch.eye(d, dtype=torch.float64)[[0, 2, 4]]  # the student sees coordinates 0, 2, 4
    S = _states_with_second_moment(n, sigma, g)
    assert torch.allclose(S.T @ S / n, sigma, rtol=1e-9, atol=1e-9)
    O, A = S @ P.T, S @ K.T
    W = linear_distillation_solution(O, A)
    W_star = K @ sigma @ P.T @ torch.linalg.inv(P @ sigma @ P.T)
    assert torch.allclose(W, W_star, rtol=1e-8, atol=1e-9)  # float64 through a QR + Cholesky + solve
    residual = torch.trace(K @ (sigma - sigma @ P.T @ torch.linalg.inv(P @ sigma @ P.T) @ P @ sigma) @ K.T)
    Wp = W.clone().requires_grad_(True)
    loss = action_regression_loss(O @ Wp.T, A).loss
    assert abs(loss.item() - residual.item()) < 1e-8 * max(1.0, residual.item())
    (grad,) = torch.autograd.grad(loss, Wp)
    assert grad.abs().max().item() < 1e-9  # stationary point of the distillation loss
    # a generic optimiser on the loss agrees with the closed form
    W_opt = torch.zeros_like(W, requires_grad=True)
    opt = torch.optim.LBFGS([W_opt], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        ls = action_regression_loss(O @ W_opt.T, A).loss
        ls.backward()
        return ls

    opt.step(closure)
    assert torch.allclose(W_opt.detach(), W_star, rtol=1e-6, atol=1e-7)  # LBFGS stopping tolerance
    # full observation: the student recovers the teacher and the residual vanishes
    assert torch.allclose(linear_distillation_solution(S, A), K, rtol=1e-8, atol=1e-9)


def test_linear_distillation_ridge_is_stationary_and_rank_deficiency_is_refused():
    g = torch.Generator().manual_seed(2)
    O = torch.randn(40, 3, generator=g, dtype=torch.float64)
    A = torch.randn(40, 2, generator=g, dtype=torch.float64)
    lam = 0.3
    W = linear_distillation_solution(O, A, ridge=lam).requires_grad_(True)
    obj = action_regression_loss(O @ W.T, A).loss / 2 + lam * (W**2).sum() / 2  # (1/2n) sum ||.||^2 + lam/2 ||W||^2
    (grad,) = torch.autograd.grad(obj, W)
    assert grad.abs().max().item() < 1e-12
    with pytest.raises(ValueError, match="rank deficient"):
        linear_distillation_solution(torch.cat([O, O[:, :1]], dim=1), A)


# ---------------------------------------------------------------------------------------------
# DAgger state
# ---------------------------------------------------------------------------------------------
def test_beta_schedules():
    assert [beta_schedule(i, kind="exponential", p=0.5) for i in range(4)] == [1.0, 0.5, 0.25, 0.125]
    assert [beta_schedule(i, kind="indicator") for i in range(3)] == [1.0, 0.0, 0.0]
    assert [beta_schedule(i, kind="linear", iterations=5) for i in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert beta_schedule(3, kind="constant", p=0.2) == 0.2
    with pytest.raises(ValueError, match="kind"):
        beta_schedule(0, kind="cosine")
    with pytest.raises(ValueError, match="iterations"):
        beta_schedule(0, kind="linear")


def test_mix_actions_frequency_is_binomial():
    g = torch.Generator().manual_seed(3)
    s, t = torch.zeros(20_000, dtype=torch.long), torch.ones(20_000, dtype=torch.long)
    a, from_t = mix_actions(s, t, beta=0.3, generator=g)
    assert torch.equal(a, from_t.long())
    k = int(from_t.sum())
    assert stats.binomtest(k, 20_000, 0.3).pvalue > 1e-3  # exact binomial test, alpha = 1e-3
    assert bool(mix_actions(s, t, beta=1.0, generator=g)[1].all())
    assert not bool(mix_actions(s, t, beta=0.0, generator=g)[1].any())
    a2, m2 = mix_actions(torch.zeros(5, 2), torch.ones(5, 2), beta=0.5, generator=g)  # vector actions pick whole rows
    assert torch.equal(a2, m2[:, None].expand(5, 2).float())


def test_dagger_buffer_aggregates_and_bounds():
    buf = DAggerBuffer(schedule="exponential", p=0.5)
    assert buf.beta == 1.0
    buf.add(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    assert buf.next_iteration() == 0.5
    buf.add(torch.ones(2, 2), torch.ones(2, dtype=torch.long))
    o, y, it = buf.dataset()
    assert o.shape == (5, 2) and y.tolist() == [0, 0, 0, 1, 1] and it.tolist() == [0, 0, 0, 1, 1]
    small = DAggerBuffer(schedule="indicator", max_size=4)
    small.add(torch.arange(3.0)[:, None], torch.arange(3))
    small.next_iteration()
    small.add(torch.arange(3.0, 6.0)[:, None], torch.arange(3, 6))
    o, y, it = small.dataset()
    assert len(small) == 4 and y.tolist() == [2, 3, 4, 5] and it.tolist() == [0, 1, 1, 1]  # oldest dropped first
    with pytest.raises(ValueError, match="batch"):
        buf.add(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="differ"):
        buf.add(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        DAggerBuffer().dataset()


# ---------------------------------------------------------------------------------------------
# exact tabular pieces
# ---------------------------------------------------------------------------------------------
def _random_mdp(rng, S, A):
    P = rng.dirichlet(np.ones(S), size=(S, A))
    pi = rng.dirichlet(np.ones(A), size=S)
    mu = rng.dirichlet(np.ones(S))
    return P, pi, mu


def test_tabular_visitation_and_cost_match_trajectory_enumeration():
    rng = np.random.default_rng(4)
    S, A, H = 3, 2, 4
    P, pi, mu = _random_mdp(rng, S, A)
    c = rng.uniform(size=(S, A))
    d_ref = np.zeros((H, S))
    J_ref = 0.0
    for states in itertools.product(range(S), repeat=H):
        for acts in itertools.product(range(A), repeat=H):
            pr = mu[states[0]]
            for t in range(H):
                pr *= pi[states[t], acts[t]]
                if t + 1 < H:
                    pr *= P[states[t], acts[t], states[t + 1]]
            for t in range(H):
                d_ref[t, states[t]] += pr
                J_ref += pr * c[states[t], acts[t]]
    assert np.allclose(tabular_state_distributions(P, pi, mu, horizon=H), d_ref, rtol=F64, atol=1e-14)
    assert abs(tabular_expected_cost(P, pi, mu, c, horizon=H) - J_ref) < F64


def test_tabular_fit_student_minimises_weighted_cross_entropy():
    rng = np.random.default_rng(5)
    S, A, O = 6, 3, 3
    teacher = rng.dirichlet(np.ones(A), size=S)
    phi = np.array([0, 0, 1, 1, 1, 2])
    w = rng.uniform(size=S)
    w[5] = 0.0  # observation 2 unseen -> prior
    prior = np.array([0.2, 0.3, 0.5])
    fit = tabular_fit_student(w, teacher, phi, num_observations=O, unseen=prior)
    assert np.allclose(fit[2], prior, rtol=F64)
    z = torch.zeros(2, A, dtype=torch.float64, requires_grad=True)  # free logits of observations 0 and 1
    opt = torch.optim.LBFGS([z], max_iter=300, tolerance_grad=1e-13, tolerance_change=1e-16, line_search_fn="strong_wolfe")
    Tt, wt = torch.as_tensor(teacher[:5]), torch.as_tensor(w[:5])
    idx = torch.as_tensor(phi[:5])

    def closure():
        opt.zero_grad()
        ce = -(wt[:, None] * Tt * torch.log_softmax(z, 1)[idx]).sum()
        ce.backward()
        return ce

    opt.step(closure)
    assert np.allclose(torch.softmax(z, 1).detach().numpy(), fit[:2], atol=1e-7)  # LBFGS stopping tolerance


def _tightrope(m):
    """Two states (0 = on the rope, 1 = fallen), m actions. On the rope action 0 stays, any other falls;
    fallen, action 1 climbs back, any other stays. Cost 1 per step fallen. Teacher: 0 on the rope, 1 fallen."""
    P = np.zeros((2, m, 2))
    P[0, 0, 0] = 1.0
    P[0, 1:, 1] = 1.0
    P[1, 1, 0] = 1.0
    P[1, [a for a in range(m) if a != 1], 1] = 1.0
    teacher = np.eye(m)[[0, 1]]
    return P, teacher, np.array([1.0, 0.0]), np.array([0.0, 1.0])


def _two_state_cost(q, r, H):
    """sum_{t<H} Pr(fallen at t) for fall probability q, recovery probability r, start on the rope:
    Pr_t = q/(q+r) (1 - lam^t), lam = 1 - q - r."""
    lam = 1.0 - q - r
    return q / (q + r) * (H - (1.0 - lam**H) / (1.0 - lam))


@pytest.mark.parametrize("H", [10, 40, 160])
def test_behaviour_cloning_compounds_and_dagger_does_not_closed_forms(H):
    m, eps = 4, 0.02
    P, teacher, mu, cost = _tightrope(m)
    phi = np.array([0, 1])
    kw = dict(num_observations=2, horizon=H, greedy=True, execution_noise=eps, unseen=np.eye(m)[0])
    res = tabular_dagger(P, teacher, mu, cost, phi, iterations=3, schedule="exponential", p=0.5, **kw)
    q = eps * (m - 1) / m  # per-step fall probability of the executed student on the rope
    # iteration 0 (beta = 1) is behaviour cloning: the teacher never falls, the fallen state is unseen and the
    # student's default (action 0) keeps it down; only the execution noise recovers (prob eps/m)
    assert res.betas[0] == 1.0 and res.data_weights[0][1] == 0.0
    assert abs(res.costs[0] - _two_state_cost(q, eps / m, H)) < F64 * H
    # iteration 1 rolled out the mixture with the BC student, visited the fallen state and learnt to climb
    assert res.students[1][1].argmax() == 1
    # its data: the beta = 1/2 mixture falls with prob q/2 and climbs back with prob 1/2 + eps/(2m) per step
    fallen_1 = _two_state_cost(q / 2, 0.5 + eps / (2 * m), H) / H
    assert np.allclose(res.data_weights[1], [1.0 + 1.0 - fallen_1, fallen_1], rtol=F64)
    assert abs(res.costs[1] - _two_state_cost(q, 1 - eps + eps / m, H)) < F64 * H
    assert res.teacher_cost == 0.0
    # compounding: BC's excess cost is ~ q H^2 / 2 for q H << 1, DAgger's ~ q H
    bc_ratio = res.costs[0] / (q * H * H / 2)
    dagger_ratio = res.costs[1] / (q * H)
    assert dagger_ratio < 1.0
    if q * H <= 1.0:
        assert bc_ratio > 0.6  # (1 - qH/3 ...) from the series of the closed form
    assert res.costs[0] > res.costs[1]


def test_bc_to_dagger_gap_grows_linearly_with_horizon():
    m, eps = 4, 0.01
    P, teacher, mu, cost = _tightrope(m)
    gaps = []
    for H in (10, 20, 40):
        res = tabular_dagger(P, teacher, mu, cost, np.array([0, 1]), num_observations=2, horizon=H, iterations=2,
                             schedule="indicator", greedy=True, execution_noise=eps, unseen=np.eye(m)[0])
        gaps.append(res.costs[0] / res.costs[1])
    # J_BC / J_DAgger ~ H (r_dagger) / 2 for small q H: doubling H roughly doubles the ratio
    assert 1.7 < gaps[1] / gaps[0] < 2.1 and 1.6 < gaps[2] / gaps[1] < 2.1


def test_tabular_input_checks():
    P, teacher, mu, cost = _tightrope(3)
    with pytest.raises(ValueError, match="probability"):
        tabular_state_distributions(P, teacher * 2, mu, horizon=3)
    with pytest.raises(ValueError, match="observation_of_state"):
        tabular_fit_student(np.ones(2), teacher, np.array([0, 5]), num_observations=2)
    with pytest.raises(ValueError, match="execution_noise"):
        tabular_executed_policy(teacher, np.array([0, 1]), execution_noise=1.5)
