"""Fisher closed forms of polab.theory.fisher_nondegeneracy against Monte Carlo and exact identities."""

import numpy as np
import pytest

from polab.theory.fisher_nondegeneracy import fisher_spectrum, gaussian_linear_fisher, softmax_fisher, softmax_fisher_lower_bound


def test_softmax_fisher_bound_and_determinant():
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = rng.dirichlet(np.ones(rng.integers(2, 7)))
        F = softmax_fisher(p)
        ev = np.linalg.eigvalsh(F)
        assert ev[0] >= softmax_fisher_lower_bound(p) * (1 - 1e-10)
        assert np.linalg.det(F) == pytest.approx(np.prod(p), rel=1e-8)  # float64 det of a <= 5x5 matrix
    full = softmax_fisher(np.array([0.2, 0.3, 0.5]), pinned_last=False)
    assert not fisher_spectrum(full).nondegenerate  # the direction 1 is singular


def test_softmax_fisher_matches_monte_carlo_score_outer_product():
    p = np.array([0.5, 0.3, 0.2])
    rng = np.random.default_rng(2)
    n = 200_000
    a = rng.choice(3, size=n, p=p)
    score = np.eye(3)[a][:, :2] - p[:2]  # d log pi_a / d theta_j = 1{a=j} - pi_j
    F_mc = score.T @ score / n
    # entries are bounded by 1, so the MC standard error is at most 1/sqrt(n) = 2.2e-3; 5 SE
    np.testing.assert_allclose(F_mc, softmax_fisher(p), atol=5 / np.sqrt(n))


def test_gaussian_linear_fisher_matches_monte_carlo():
    rng = np.random.default_rng(3)
    S = np.array([[1.0, 0.3], [0.3, 0.5]])
    sigma, m, n = 0.7, 2, 200_000
    K = rng.normal(size=(m, 2))
    s = rng.multivariate_normal(np.zeros(2), S, size=n)
    a = s @ K.T + sigma * rng.normal(size=(n, m))
    score = ((a - s @ K.T)[:, :, None] * s[:, None, :]).reshape(n, -1) / sigma**2  # row-major vec(K)
    F_mc = score.T @ score / n
    F = gaussian_linear_fisher(S, sigma=sigma, action_dim=m)
    se = np.sqrt(((score[:, :, None] * score[:, None, :]) ** 2).mean(0) / n)
    assert np.all(np.abs(F_mc - F) <= 5 * se + 1e-12)  # 5 standard errors per entry
    assert fisher_spectrum(F).min_eigenvalue == pytest.approx(np.linalg.eigvalsh(S)[0] / sigma**2, rel=1e-10)
