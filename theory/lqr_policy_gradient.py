r"""Discounted LQR with a Gaussian linear policy: objective, gradient, Hessian-vector product and optimum in closed form.

Problem: :math:`s_{t+1} = As_t + Ba_t + w_t`, :math:`w_t\sim N(0, W)`,
:math:`s_0\sim N(0,\Sigma_0)`, reward :math:`r_t = -(s_t^\top Qs_t + a_t^\top Ra_t)`,
policy :math:`a_t = Ks_t + \sigma\xi_t`, :math:`\xi_t\sim N(0, I_m)`, and

.. math:: J(K) = \mathbb{E}\Big[\sum_{t\ge0}\gamma^t r_t\Big].

With :math:`A_K = A + BK`, :math:`M_K = Q + K^\top RK`, :math:`C = \sigma^2BB^\top + W`:

.. math::

    P_K = M_K + \gamma A_K^\top P_K A_K,\qquad
    \Sigma_K = \Sigma_0 + \tfrac{\gamma}{1-\gamma}C + \gamma A_K\Sigma_K A_K^\top, \qquad (1)

    J(K) = -\mathrm{tr}(M_K\Sigma_K) - \frac{\sigma^2\,\mathrm{tr}R}{1-\gamma}, \qquad (2)

    \nabla_K J = -2\big[(R + \gamma B^\top P_K B)K + \gamma B^\top P_K A\big]\Sigma_K, \qquad (3)

where :math:`\Sigma_K = \sum_t\gamma^t\mathbb{E}[s_ts_t^\top]` (from
:math:`\mathbb{E}[s_{t+1}s_{t+1}^\top] = A_K\mathbb{E}[s_ts_t^\top]A_K^\top + C`).
(3) is the discounted, noisy form of Fazel et al. (2018), Lemma 1: the
noise enters only through :math:`\Sigma_K`. The Hessian-vector product
:math:`\nabla^2J[V]` is the directional derivative of (3) along
:math:`dK = V`, with :math:`dP` and :math:`d\Sigma` from the differentiated
Lyapunov equations (1) (:func:`lqr_hessian_vector`). The maximiser over
all :math:`K` is the discounted Riccati gain

.. math:: K^* = -\gamma(R + \gamma B^\top PB)^{-1}B^\top PA,\quad
          P = Q + \gamma A^\top PA - \gamma^2A^\top PB(R+\gamma B^\top PB)^{-1}B^\top PA,

whatever :math:`\sigma`, :math:`\Sigma_0` and :math:`W` are, because
:math:`P_{K^*}\preceq P_K` for every stabilising :math:`K` and (2) is
:math:`-\mathrm{tr}(P_K(\Sigma_0 + \gamma C/(1-\gamma)))` minus a constant.

Status: (1)-(3) and the Hessian-vector product are derived here and checked
against central finite differences and against torch autograd in
``tests/theory/test_lqr_policy_gradient.py``. :math:`J` is finite only when
:math:`\sqrt\gamma\,\rho(A_K) < 1`; outside that set the functions raise.

Parameters are the matrix :math:`K` of shape [m, n]; the flat parameter
vector used by the optimizers is its row-major flattening.

References
----------
Fazel, Ge, Kakade, Mesbahi, "Global Convergence of Policy Gradient Methods
for the Linear Quadratic Regulator", ICML 2018.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_discrete_are, solve_discrete_lyapunov

__all__ = [
    "LQRProblem",
    "lqr_value_matrix",
    "lqr_state_occupancy",
    "lqr_objective",
    "lqr_gradient",
    "lqr_hessian_vector",
    "lqr_optimal_gain",
    "lqr_optimal_value",
]


@dataclass(frozen=True)
class LQRProblem:
    """A discounted LQR with a fixed-variance Gaussian linear policy.

    Attributes
    ----------
    A : ndarray [n, n]
    B : ndarray [n, m]
    Q : ndarray [n, n], symmetric PSD
    R : ndarray [m, m], symmetric PD
    initial_cov : ndarray [n, n], :math:`\\Sigma_0`
    noise_cov : ndarray [n, n], :math:`W`
    policy_std : float, :math:`\\sigma > 0`
    gamma : float in (0, 1)
    """

    A: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    initial_cov: np.ndarray
    noise_cov: np.ndarray
    policy_std: float
    gamma: float

    def __post_init__(self):
        n, m = np.shape(self.B)
        for name, M, shp in (("A", self.A, (n, n)), ("Q", self.Q, (n, n)), ("R", self.R, (m, m)),
                             ("initial_cov", self.initial_cov, (n, n)), ("noise_cov", self.noise_cov, (n, n))):
            if np.shape(M) != shp:
                raise ValueError(f"{name} must have shape {shp} (B is {(n, m)}); got {np.shape(M)}.")
        if not 0 < self.gamma < 1:
            raise ValueError(f"gamma must be in (0, 1); got {self.gamma}.")
        if not self.policy_std > 0:
            raise ValueError(f"policy_std must be > 0; got {self.policy_std}.")

    @property
    def state_dim(self) -> int:
        return int(np.shape(self.A)[0])

    @property
    def action_dim(self) -> int:
        return int(np.shape(self.B)[1])

    @property
    def num_params(self) -> int:
        return self.state_dim * self.action_dim


def _gain(problem: LQRProblem, K) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    shp = (problem.action_dim, problem.state_dim)
    if K.shape != shp:
        if K.size == problem.num_params:
            K = K.reshape(shp)
        else:
            raise ValueError(f"K must have shape {shp} (or be its row-major flattening); got {K.shape}.")
    return K


def _closed_loop(problem: LQRProblem, K) -> np.ndarray:
    AK = problem.A + problem.B @ K
    rho = max(abs(np.linalg.eigvals(AK)))
    if np.sqrt(problem.gamma) * rho >= 1:
        raise ValueError(
            f"K does not stabilise the discounted system: sqrt(gamma) * spectral radius of A+BK = "
            f"{np.sqrt(problem.gamma) * rho:.4f} >= 1, so J(K) = -inf. Start from a stabilising gain."
        )
    return AK


def lqr_value_matrix(problem: LQRProblem, K) -> np.ndarray:
    r""":math:`P_K` of (1). Shapes: K [m, n] -> [n, n]."""
    K = _gain(problem, K)
    AK = _closed_loop(problem, K)
    M = problem.Q + K.T @ problem.R @ K
    return solve_discrete_lyapunov(np.sqrt(problem.gamma) * AK.T, M)


def lqr_state_occupancy(problem: LQRProblem, K) -> np.ndarray:
    r""":math:`\Sigma_K = \sum_t\gamma^t\mathbb{E}[s_ts_t^\top]` of (1). Shapes: K [m, n] -> [n, n]."""
    K = _gain(problem, K)
    AK = _closed_loop(problem, K)
    C = problem.policy_std**2 * problem.B @ problem.B.T + problem.noise_cov
    S0 = problem.initial_cov + problem.gamma / (1 - problem.gamma) * C
    return solve_discrete_lyapunov(np.sqrt(problem.gamma) * AK, S0)


def lqr_objective(problem: LQRProblem, K) -> float:
    r""":math:`J(K)` of (2)."""
    K = _gain(problem, K)
    S = lqr_state_occupancy(problem, K)
    M = problem.Q + K.T @ problem.R @ K
    return float(-np.trace(M @ S) - problem.policy_std**2 * np.trace(problem.R) / (1 - problem.gamma))


def lqr_gradient(problem: LQRProblem, K) -> np.ndarray:
    r""":math:`\nabla_KJ` of (3). Shapes: K [m, n] -> [m, n]."""
    K = _gain(problem, K)
    P = lqr_value_matrix(problem, K)
    S = lqr_state_occupancy(problem, K)
    g = problem.gamma
    E = (problem.R + g * problem.B.T @ P @ problem.B) @ K + g * problem.B.T @ P @ problem.A
    return -2.0 * E @ S


def lqr_hessian_vector(problem: LQRProblem, K, V) -> np.ndarray:
    r""":math:`\nabla^2J(K)[V]`, the derivative of (3) along :math:`dK=V`. Shapes: K, V [m, n] -> [m, n].

    .. math::

        dP = V^\top RK + K^\top RV + \gamma(V^\top B^\top PA_K + A_K^\top PBV) + \gamma A_K^\top dP A_K,

        d\Sigma = \gamma(BV\Sigma A_K^\top + A_K\Sigma V^\top B^\top) + \gamma A_K d\Sigma A_K^\top,

        d\nabla J = -2\big[(\gamma B^\top dP B)K + (R+\gamma B^\top PB)V + \gamma B^\top dP A\big]\Sigma
                    -2\big[(R+\gamma B^\top PB)K + \gamma B^\top PA\big]d\Sigma.
    """
    K = _gain(problem, K)
    V = _gain(problem, V)
    A, B, R, g = problem.A, problem.B, problem.R, problem.gamma
    AK = _closed_loop(problem, K)
    P = lqr_value_matrix(problem, K)
    S = lqr_state_occupancy(problem, K)
    dA = B @ V
    dM = V.T @ R @ K + K.T @ R @ V + g * (dA.T @ P @ AK + AK.T @ P @ dA)
    dP = solve_discrete_lyapunov(np.sqrt(g) * AK.T, dM)
    dS0 = g * (dA @ S @ AK.T + AK @ S @ dA.T)
    dS = solve_discrete_lyapunov(np.sqrt(g) * AK, dS0)
    G = R + g * B.T @ P @ B
    E = G @ K + g * B.T @ P @ A
    dE = g * B.T @ dP @ B @ K + G @ V + g * B.T @ dP @ A
    return -2.0 * (dE @ S + E @ dS)


def lqr_optimal_gain(problem: LQRProblem) -> np.ndarray:
    r""":math:`K^*` from the discounted Riccati equation (``scipy.linalg.solve_discrete_are`` on :math:`(\sqrt\gamma A, \sqrt\gamma B)`)."""
    g = problem.gamma
    P = solve_discrete_are(np.sqrt(g) * problem.A, np.sqrt(g) * problem.B, problem.Q, problem.R)
    return -g * np.linalg.solve(problem.R + g * problem.B.T @ P @ problem.B, problem.B.T @ P @ problem.A)


def lqr_optimal_value(problem: LQRProblem) -> float:
    """:math:`J^* = J(K^*)`."""
    return lqr_objective(problem, lqr_optimal_gain(problem))
