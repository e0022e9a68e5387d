r"""Fisher non-degeneracy of Gaussian linear and softmax policies, in closed form.

The sample complexities of N-PG-IGT and (N)-HARPG (Fatkhullin et al. 2023;
:mod:`polab.theory.pg_sample_complexity`) assume

.. math:: F(\theta) = \mathbb{E}_{s\sim d^{\pi_\theta},\,a\sim\pi_\theta}
          [\nabla\log\pi_\theta(a|s)\,\nabla\log\pi_\theta(a|s)^\top] \succeq \mu_F I.

This module gives :math:`F` and :math:`\lambda_{\min}(F)` for the two policy
classes used in :mod:`polab.proofs_checks.pg_optimizer_checks` [DERIVED here;
checked by Monte Carlo in ``tests/theory/test_fisher_nondegeneracy.py``].

Gaussian linear policy
----------------------
:math:`a = Ks + \sigma\xi`, :math:`\xi\sim N(0, I_m)`, :math:`K\in\mathbb{R}^{m\times n}`,
:math:`\sigma` fixed. With :math:`\theta = \mathrm{vec}_{row}(K)` (row-major
flattening, entry :math:`(i,j)` at index :math:`in + j`),
:math:`\partial_{K_{ij}}\log\pi = \sigma^{-2}(a-Ks)_i s_j`, and since
:math:`\mathbb{E}[(a-Ks)(a-Ks)^\top\mid s] = \sigma^2 I`,

.. math:: F = \sigma^{-2}\, I_m \otimes S, \qquad S = \mathbb{E}_{d^{\pi}}[ss^\top],
          \qquad \lambda_{\min}(F) = \lambda_{\min}(S)/\sigma^2 .

So the policy is Fisher-non-degenerate exactly when the state occupancy
second moment :math:`S` is positive definite, which holds uniformly over
stabilising :math:`K` when the initial or process noise covariance is
positive definite (:math:`S \succeq (1-\gamma)\Sigma_0`). Here :math:`d^\pi`
is the normalised discounted occupancy, :math:`S = (1-\gamma)\Sigma_K` with
:math:`\Sigma_K` of :func:`polab.theory.lqr_policy_gradient.lqr_state_occupancy`.

Softmax policy (bandit)
-----------------------
:math:`\pi = \mathrm{softmax}(z)` with :math:`z = (\theta, 0)` (last logit
pinned to 0, which removes the direction :math:`\mathbf 1` along which the
full-logit Fisher :math:`\mathrm{diag}(\pi)-\pi\pi^\top` is singular). Then
:math:`F = \mathrm{diag}(p) - pp^\top` with :math:`p = \pi_{1:K-1}`, and

.. math:: x^\top F x = \mathrm{Var}_{a\sim\pi}(x_a),\ x_K := 0,\qquad
          \mathrm{Var} = \tfrac12\sum_{a,b}\pi_a\pi_b(x_a-x_b)^2
          \ge \pi_K\sum_{a<K}\pi_a x_a^2,

so :math:`\lambda_{\min}(F) \ge \pi_K\min_{a<K}\pi_a \ge (\min_a\pi_a)^2`,
and :math:`\det F = \prod_a \pi_a` (matrix determinant lemma). The Fisher is
non-degenerate on any set where the policy stays away from deterministic;
entropy regularisation keeps the optimum :math:`\mathrm{softmax}(r/\tau)`
interior, which is why the checks use it.

References
----------
Fatkhullin, Barakat, Kireeva, He, "Stochastic Policy Gradient Methods:
Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FisherSpectrum",
    "gaussian_linear_fisher",
    "softmax_fisher",
    "softmax_fisher_lower_bound",
    "fisher_spectrum",
]


@dataclass(frozen=True)
class FisherSpectrum:
    """Eigenvalues of a Fisher matrix and a verdict.

    Attributes
    ----------
    eigenvalues : ndarray, shape [dim], ascending
    min_eigenvalue : float
        :math:`\\mu_F` at this point.
    condition_number : float
    nondegenerate : bool
        ``min_eigenvalue > threshold``.
    threshold : float
    """

    eigenvalues: np.ndarray
    min_eigenvalue: float
    condition_number: float
    nondegenerate: bool
    threshold: float


def gaussian_linear_fisher(state_second_moment, *, sigma: float, action_dim: int) -> np.ndarray:
    r""":math:`F = \sigma^{-2} I_m\otimes S` for :math:`a = Ks + \sigma\xi`, parameters row-major :math:`\mathrm{vec}(K)`.

    Shapes: ``state_second_moment`` [n, n] (symmetric PSD) -> [m*n, m*n].
    """
    S = np.asarray(state_second_moment, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"state_second_moment must have shape [n, n]; got {S.shape}.")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}.")
    if int(action_dim) < 1:
        raise ValueError(f"action_dim must be >= 1; got {action_dim}.")
    return np.kron(np.eye(int(action_dim)), S) / sigma**2


def softmax_fisher(probs, *, pinned_last: bool = True) -> np.ndarray:
    r"""Fisher of a softmax policy: :math:`\mathrm{diag}(p)-pp^\top`.

    Shapes: ``probs`` [K] -> [K-1, K-1] (``pinned_last``) or [K, K].
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] < 2:
        raise ValueError(f"probs must have shape [K] with K >= 2; got {p.shape}.")
    if np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError("probs must be a probability vector (non-negative, summing to 1).")
    q = p[:-1] if pinned_last else p
    return np.diag(q) - np.outer(q, q)


def softmax_fisher_lower_bound(probs) -> float:
    r""":math:`\pi_K\min_{a<K}\pi_a`, a lower bound on :math:`\lambda_{\min}` of the pinned-logit Fisher."""
    p = np.asarray(probs, dtype=np.float64)
    return float(p[-1] * p[:-1].min())


def fisher_spectrum(fisher, *, threshold: float = 1e-10) -> FisherSpectrum:
    """Eigen-decomposition of a symmetric Fisher matrix and the non-degeneracy verdict.

    ``threshold`` defaults to 1e-10, the float64 rounding allowance of the
    conventions (an eigenvalue below it is indistinguishable from 0).
    """
    F = np.asarray(fisher, dtype=np.float64)
    if F.ndim != 2 or F.shape[0] != F.shape[1]:
        raise ValueError(f"fisher must be square; got shape {F.shape}.")
    ev = np.linalg.eigvalsh(0.5 * (F + F.T))
    lo = float(ev[0])
    cond = float(ev[-1] / lo) if lo > 0 else float("inf")
    return FisherSpectrum(ev, lo, cond, lo > threshold, threshold)
