"""Closed forms of polab.theory.lqr_policy_gradient against finite differences, torch autograd and the Riccati optimum."""

import numpy as np
import pytest
import torch

from polab.theory.lqr_policy_gradient import (
    LQRProblem,
    lqr_gradient,
    lqr_hessian_vector,
    lqr_objective,
    lqr_optimal_gain,
    lqr_optimal_value,
)

PROB = LQRProblem(
    A=np.array([[1.0, 0.2], [0.0, 0.9]]), B=np.array([[0.0], [0.5]]), Q=np.eye(2), R=np.array([[0.5]]),
    initial_cov=0.5 * np.eye(2), noise_cov=0.05 * np.eye(2), policy_std=0.5, gamma=0.8,
)
K = np.array([[-0.3, -0.5]])
# Central differences: truncation O(h^2) ~ 1e-10 at h = 1e-5, rounding ~ 1e-16 / 1e-5 = 1e-11 (times |J| ~ 5);
# 1e-6 relative leaves a wide margin and still fails for any wrong term (errors would be O(1)).
FD_RTOL = 1e-6


def _torch_objective(k):
    """(2) with the two Lyapunov equations solved by Kronecker products (differentiable)."""
    p = PROB
    A, B, Q, R = (torch.tensor(x) for x in (p.A, p.B, p.Q, p.R))
    n = A.shape[0]
    AK = A + B @ k
    C = p.policy_std**2 * B @ B.T + torch.tensor(p.noise_cov)
    S0 = torch.tensor(p.initial_cov) + p.gamma / (1 - p.gamma) * C
    I = torch.eye(n * n, dtype=torch.float64)
    S = torch.linalg.solve(I - p.gamma * torch.kron(AK, AK), S0.reshape(-1)).reshape(n, n)
    return -torch.trace((Q + k.T @ R @ k) @ S) - p.policy_std**2 * torch.trace(R) / (1 - p.gamma)


def test_objective_matches_kronecker_form():
    assert lqr_objective(PROB, K) == pytest.approx(float(_torch_objective(torch.tensor(K))), rel=1e-10)


def test_gradient_matches_finite_differences_and_autograd():
    g = lqr_gradient(PROB, K)
    h = 1e-5
    fd = np.zeros_like(K)
    for i in range(K.size):
        E = np.zeros_like(K)
        E.flat[i] = h
        fd.flat[i] = (lqr_objective(PROB, K + E) - lqr_objective(PROB, K - E)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=FD_RTOL)
    kt = torch.tensor(K, requires_grad=True)
    (ga,) = torch.autograd.grad(_torch_objective(kt), kt)
    np.testing.assert_allclose(g, ga.numpy(), rtol=1e-10)


def test_hessian_vector_matches_autograd():
    V = np.array([[0.3, -0.7]])
    hv = lqr_hessian_vector(PROB, K, V)
    kt = torch.tensor(K, requires_grad=True)
    (g,) = torch.autograd.grad(_torch_objective(kt), kt, create_graph=True)
    (ha,) = torch.autograd.grad((g * torch.tensor(V)).sum(), kt)
    np.testing.assert_allclose(hv, ha.numpy(), rtol=1e-10)


def test_riccati_gain_is_stationary_and_maximal():
    Ks = lqr_optimal_gain(PROB)
    assert np.abs(lqr_gradient(PROB, Ks)).max() < 1e-10 * abs(lqr_optimal_value(PROB))
    rng = np.random.default_rng(0)
    for _ in range(20):
        Kp = Ks + 0.05 * rng.normal(size=Ks.shape)
        assert lqr_objective(PROB, Kp) < lqr_optimal_value(PROB)
    # negative definite Hessian at the optimum (non-degenerate maximiser)
    H = np.stack([lqr_hessian_vector(PROB, Ks, e.reshape(1, -1)).reshape(-1) for e in np.eye(2)])
    assert np.linalg.eigvalsh(0.5 * (H + H.T)).max() < 0


def test_unstable_gain_raises():
    with pytest.raises(ValueError, match="stabilise"):
        lqr_objective(PROB, np.array([[5.0, 5.0]]))
