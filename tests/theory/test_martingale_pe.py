"""Closed-form values of the test diffusions (polab.theory.diffusion_values) and the rate statements (polab.theory.martingale_pe).

Reference values are re-derived here in sympy (independently of
proofs_checks) or by hand; tolerances are float64 round-off (1e-10 relative)
unless a comment says otherwise.
"""

import math

import numpy as np
import pytest
import sympy as sp

from polab.theory.diffusion_values import (
    QuadraticValue,
    brownian_terminal_value,
    gbm_euler_value,
    gbm_value,
    lq_euler_value,
    lq_value,
    ou_euler_value,
    ou_value,
    ou_value_coefficients,
)
from polab.theory.martingale_pe import (
    DERIVED_MESH_ORDER,
    PAPER_MESH_ORDER_CONFIRMED,
    PATHS_ORDER,
    brownian_quadratic_variation,
    mstde_brownian_limit,
    ou_euler_bias_coefficients,
)

RTOL = 1e-10  # float64 round-off (STYLE.md)


# ---------------------------------------------------------------------------
# OU: sympy re-derivation of J = x^2/(beta+2kappa) + sigma^2/(beta(beta+2kappa))
# ---------------------------------------------------------------------------
def test_ou_value_rederived_with_sympy():
    x = sp.Symbol("x", real=True)
    kappa, sigma, beta = sp.symbols("kappa sigma beta", positive=True)
    a, b = sp.symbols("a b")
    J = a * x**2 + b
    # Feynman-Kac, time-homogeneous: -kappa x J' + sigma^2/2 J'' - beta J + x^2 = 0
    gen = sp.expand(-kappa * x * sp.diff(J, x) + sigma**2 / 2 * sp.diff(J, x, 2) - beta * J + x**2)
    sol = sp.solve([gen.coeff(x, 2), gen.coeff(x, 0)], [a, b], dict=True)
    assert len(sol) == 1  # the quadratic ansatz has exactly one solution
    a_sym, b_sym = sol[0][a], sol[0][b]
    assert sp.simplify(a_sym - 1 / (beta + 2 * kappa)) == 0
    assert sp.simplify(b_sym - sigma**2 / (beta * (beta + 2 * kappa))) == 0
    for k, s, bt in [(1.0, 1.0, 1.0), (0.3, 2.0, 0.5), (-0.2, 0.7, 1.5)]:  # kappa < 0 allowed if beta + 2 kappa > 0
        got = ou_value_coefficients(kappa=k, sigma=s, beta=bt)
        want = (float(a_sym.subs({kappa: k, sigma: s, beta: bt})) if k > 0 else 1 / (bt + 2 * k),
                float(b_sym.subs({kappa: k, sigma: s, beta: bt})) if k > 0 else s**2 / (bt * (bt + 2 * k)))
        np.testing.assert_allclose(got, want, rtol=RTOL)
    np.testing.assert_allclose(ou_value([0.0, 2.0], kappa=1.0, sigma=1.0, beta=1.0), [1 / 3, 4 / 3 + 1 / 3], rtol=RTOL)


def test_ou_value_rejects_infinite_value():
    with pytest.raises(ValueError, match="beta \\+ 2\\*kappa"):
        ou_value_coefficients(kappa=-1.0, sigma=1.0, beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        ou_value(1.0, kappa=1.0, sigma=1.0, beta=0.0)


# ---------------------------------------------------------------------------
# LQ: Lyapunov solution against a sympy solution of the linear equations
# ---------------------------------------------------------------------------
def _sympy_lyapunov(A, Q, S, beta):
    """Solve (A - beta/2 I)^T P + P (A - beta/2 I) + Q = 0 for symmetric P exactly (rationals)."""
    d = A.shape[0]
    syms = sp.symbols(f"p0:{d * d}")
    P = sp.Matrix(d, d, lambda i, j: syms[min(i, j) * d + max(i, j)])
    Ash = A - beta / 2 * sp.eye(d)
    eqs = list(Ash.T * P + P * Ash + Q)
    sol = sp.solve(eqs, sorted(set(P), key=str), dict=True)[0]
    Pn = P.subs(sol)
    c = (S * S.T * Pn).trace() / beta
    return np.array(Pn, dtype=float), float(c)


def test_lq_value_matches_exact_lyapunov_solution_2d():
    R = sp.Rational
    A = sp.Matrix([[-1, R(1, 2)], [R(-3, 10), R(-4, 5)]])
    Q = -sp.eye(2)
    S = sp.Matrix([[R(1, 2), 0], [R(1, 10), R(2, 5)]])
    beta = R(1, 2)
    P_exact, c_exact = _sympy_lyapunov(A, Q, S, beta)
    v = lq_value(np.array(A, dtype=float), np.array(Q, dtype=float), np.array(S, dtype=float), beta=0.5)
    np.testing.assert_allclose(v.P, P_exact, rtol=RTOL)
    assert v.c == pytest.approx(c_exact, rel=RTOL)
    np.testing.assert_allclose(v.P, v.P.T, rtol=0, atol=0)


def test_lq_value_solves_feynman_kac_at_random_states():
    # generator of x^T P x + c: 2 x^T P A x + tr(S S^T P) - beta (x^T P x + c) + x^T Q x = 0
    rng = np.random.default_rng(0)
    d = 5
    A = rng.normal(size=(d, d)) / math.sqrt(d) - 1.5 * np.eye(d)
    S = rng.normal(size=(d, 3))
    M = rng.normal(size=(d, d))
    Q = -(M @ M.T + np.eye(d))
    beta = 0.7
    v = lq_value(A, Q, S, beta=beta)
    x = rng.normal(size=(100, d))
    res = 2 * np.einsum("pi,ij,jk,pk->p", x, v.P, A, x) + np.trace(S @ S.T @ v.P) - beta * v(x) + np.einsum("pi,ij,pj->p", x, Q, x)
    assert np.abs(res).max() <= RTOL * np.abs(v(x)).max() * 10  # sums of ~d^2 terms of the size of V


def test_lq_value_in_one_dimension_is_the_ou_value():
    for kappa, sigma, beta in [(1.0, 1.0, 1.0), (0.4, 1.7, 0.3)]:
        v = lq_value([[-kappa]], [[1.0]], [[sigma]], beta=beta)
        a, b = ou_value_coefficients(kappa=kappa, sigma=sigma, beta=beta)
        assert v.P[0, 0] == pytest.approx(a, rel=RTOL) and v.c == pytest.approx(b, rel=RTOL)
        e = lq_euler_value([[-kappa]], [[1.0]], [[sigma]], beta=beta, dt=0.1)
        th = ou_euler_value(kappa=kappa, sigma=sigma, beta=beta, dt=0.1)
        assert e.P[0, 0] == pytest.approx(th[0], rel=RTOL) and e.c == pytest.approx(th[1], rel=RTOL)


def test_lq_euler_value_solves_its_one_step_equation_and_converges():
    A = np.array([[-1.0, 0.5], [-0.3, -0.8]])
    S = np.array([[0.5, 0.0], [0.1, 0.4]])
    Q = -np.eye(2)
    beta, dt = 0.5, 0.05
    e = lq_euler_value(A, Q, S, beta=beta, dt=dt)
    F = np.eye(2) + A * dt
    g = math.exp(-beta * dt)
    np.testing.assert_allclose(e.P, Q * dt + g * F.T @ e.P @ F, rtol=RTOL)
    # V = r dt + g E V(X_1): constant part c = g (c + dt tr(S S^T P))
    assert e.c == pytest.approx(g * (e.c + dt * np.trace(S @ S.T @ e.P)), rel=RTOL)
    # first order in dt: the error halves with the mesh (ratio 2 +- O(dt))
    true = lq_value(A, Q, S, beta=beta)
    errs = [np.abs(lq_euler_value(A, Q, S, beta=beta, dt=h).P - true.P).max() for h in (0.02, 0.01, 0.005)]
    assert errs[0] / errs[1] == pytest.approx(2.0, abs=0.05) and errs[1] / errs[2] == pytest.approx(2.0, abs=0.05)


def test_lq_errors_name_the_problem():
    with pytest.raises(ValueError, match="Hurwitz"):
        lq_value([[0.5]], [[-1.0]], [[1.0]], beta=0.5)  # A - beta/2 = 0.25 > 0
    with pytest.raises(ValueError, match="symmetric"):
        lq_value(-np.eye(2), [[-1.0, 0.3], [0.0, -1.0]], np.eye(2), beta=1.0)
    with pytest.raises(ValueError, match="Q must have shape"):
        lq_value(-np.eye(2), -np.eye(3), np.eye(2), beta=1.0)
    with pytest.raises(ValueError, match="noise"):
        lq_value(-np.eye(2), -np.eye(2), np.eye(3), beta=1.0)
    with pytest.raises(ValueError, match="smaller dt"):
        lq_euler_value([[-10.0]], [[-1.0]], [[1.0]], beta=0.1, dt=0.5)  # |1 - 10*0.5| = 4 > 1


def test_quadratic_value_evaluates_batches():
    v = QuadraticValue(P=np.array([[1.0, 0.5], [0.5, 2.0]]), c=3.0)
    x = np.array([[1.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(v(x), [1 + 2 * 0.5 * 2 + 2 * 4 + 3, 3.0], rtol=RTOL)


# ---------------------------------------------------------------------------
# Brownian motion and GBM
# ---------------------------------------------------------------------------
def test_brownian_and_gbm_values_solve_feynman_kac_in_sympy():
    t, x, T = sp.symbols("t x T", real=True)
    sigma, beta, mu = sp.symbols("sigma beta mu", positive=True)
    p, a, b = sp.symbols("p a b", positive=True)
    J = sp.exp(-beta * (T - t)) * (x**2 + sigma**2 * (T - t))
    assert sp.simplify(sp.diff(J, t) + sigma**2 / 2 * sp.diff(J, x, 2) - beta * J) == 0
    assert sp.simplify(J.subs(t, T) - x**2) == 0
    c = beta - p * mu - p * (p - 1) * sigma**2 / 2
    Jg = x**p * (b * sp.exp(-c * (T - t)) + a * (1 - sp.exp(-c * (T - t))) / c)
    fk = sp.diff(Jg, t) + mu * x * sp.diff(Jg, x) + (sigma * x) ** 2 / 2 * sp.diff(Jg, x, 2) - beta * Jg + a * x**p
    assert sp.simplify(fk / x**p) == 0
    # numeric agreement with the library at a probe point
    vals = {sigma: 0.4, beta: 1.0, mu: 0.2, p: 2, a: 1.5, b: 0.5, T: 2.0, t: 0.5, x: 1.3}
    got = gbm_value(0.5, 1.3, mu=0.2, sigma=0.4, beta=1.0, power=2, running=1.5, terminal=0.5, horizon=2.0)
    assert float(got) == pytest.approx(float(Jg.subs(vals)), rel=RTOL)
    assert float(brownian_terminal_value(0.25, 1.5, sigma=0.8, horizon=1.0, beta=0.3)) == pytest.approx(
        math.exp(-0.3 * 0.75) * (1.5**2 + 0.64 * 0.75), rel=RTOL)


def test_gbm_limits():
    kw = dict(mu=0.2, sigma=0.4, beta=1.0, power=1.0, running=2.0)
    # c = 1 - 0.2 = 0.8; infinite horizon a x / c; the finite one tends to it as T grows
    assert float(gbm_value(None, 1.5, **kw)) == pytest.approx(2.0 * 1.5 / 0.8, rel=RTOL)
    far = float(gbm_value(0.0, 1.5, horizon=60.0, **kw))
    assert far == pytest.approx(2.0 * 1.5 / 0.8, rel=1e-15 + math.exp(-0.8 * 60) * 10)
    # c = 0: running * tau (continuous in c: compare with c = 1e-7, difference O(c tau^2))
    zero = dict(mu=1.0, sigma=0.4, beta=1.0, power=1.0, running=1.0, terminal=0.0, horizon=2.0)
    assert float(gbm_value(0.0, 1.0, **zero)) == pytest.approx(2.0, rel=RTOL)
    near = dict(zero, beta=1.0 + 1e-7)
    assert float(gbm_value(0.0, 1.0, **near)) == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="terminal"):
        gbm_value(None, 1.0, mu=0.1, sigma=0.2, beta=1.0, terminal=1.0)
    with pytest.raises(ValueError, match="finite only"):
        gbm_value(None, 1.0, mu=2.0, sigma=0.2, beta=1.0)


def test_gbm_euler_value_hand_values():
    mu, sigma, beta, dt = 0.2, 0.4, 1.0, 0.1
    g = math.exp(-beta * dt)
    # p = 1: m_1 = 1 + mu dt;  p = 2: m_2 = (1 + mu dt)^2 + sigma^2 dt (Gaussian moments)
    assert gbm_euler_value(mu=mu, sigma=sigma, beta=beta, dt=dt, power=1) == pytest.approx(dt / (1 - g * (1 + mu * dt)), rel=RTOL)
    m2 = (1 + mu * dt) ** 2 + sigma**2 * dt
    assert gbm_euler_value(mu=mu, sigma=sigma, beta=beta, dt=dt, power=2) == pytest.approx(dt / (1 - g * m2), rel=RTOL)
    # p = 3: E(m + sZ)^3 = m^3 + 3 m s^2
    m, s2, g2 = 1 + mu * dt, sigma**2 * dt, math.exp(-2.0 * dt)  # beta = 2 so that the p = 3 value is finite
    assert gbm_euler_value(mu=mu, sigma=sigma, beta=2.0, dt=dt, power=3) == pytest.approx(dt / (1 - g2 * (m**3 + 3 * m * s2)), rel=RTOL)
    with pytest.raises(ValueError, match="infinite"):
        gbm_euler_value(mu=mu, sigma=sigma, beta=beta, dt=dt, power=3)  # e^{-0.1} * 1.110 > 1
    with pytest.raises(ValueError, match="integer"):
        gbm_euler_value(mu=mu, sigma=sigma, beta=beta, dt=dt, power=1.5)


# ---------------------------------------------------------------------------
# rates and the MSTDE limit (polab.theory.martingale_pe)
# ---------------------------------------------------------------------------
def test_rate_constants_state_what_is_derived():
    assert DERIVED_MESH_ORDER == 1.0
    assert PAPER_MESH_ORDER_CONFIRMED is False  # the paper's exponent is not used as a threshold
    assert PATHS_ORDER == -0.5


def test_ou_euler_bias_is_first_order_with_the_stated_coefficients():
    kappa, sigma, beta = 0.7, 1.3, 1.5
    a, b = ou_value_coefficients(kappa=kappa, sigma=sigma, beta=beta)
    c1, c2 = ou_euler_bias_coefficients(kappa=kappa, sigma=sigma, beta=beta)
    for h in (1e-3, 1e-4):
        t1, t2 = ou_euler_value(kappa=kappa, sigma=sigma, beta=beta, dt=h)
        # (theta(h) - theta*)/h = c + O(h); the O(h) constant is below 10 for these parameters
        assert abs((t1 - a) / h - c1) <= 10 * h
        assert abs((t2 - b) / h - c2) <= 10 * h


def test_mstde_limit_minimises_the_quadratic_variation():
    assert mstde_brownian_limit(sigma=1.0, horizon=1.0, x0_second_moment=0.0) == pytest.approx(-2.0, rel=RTOL)
    assert mstde_brownian_limit(sigma=1.0, horizon=1.0, x0_second_moment=1.0) == pytest.approx(-1.6, rel=RTOL)
    kw = dict(sigma=1.2, horizon=0.9, x0_second_moment=0.75)
    th = mstde_brownian_limit(**kw)
    qv = lambda v: brownian_quadratic_variation(v, **kw)  # noqa: E731
    h = 1e-4
    # a quadratic in theta_1: the central difference is exact up to round-off
    assert abs(qv(th + h) - qv(th - h)) / (2 * h) <= 1e-8
    assert qv(th) < qv(0.0)  # the truth theta_1 = 0 is not the minimiser
    # direct numerical integral of 4 s^2 int (m0 + s^2 t)(1 + th (T - t))^2 dt (Simpson, exact for cubics)
    from scipy.integrate import simpson
    tt = np.linspace(0, 0.9, 101)
    direct = 4 * 1.44 * simpson((0.75 + 1.44 * tt) * (1 - 0.5 * (0.9 - tt)) ** 2, x=tt)
    assert qv(-0.5) == pytest.approx(direct, rel=1e-12)
    with pytest.raises(ValueError):
        mstde_brownian_limit(sigma=0.0, horizon=1.0, x0_second_moment=0.0)


def test_mstde_terminal_jump_limit_and_its_discrete_approach():
    # Derived: J^theta = theta x^2, h = x^2, Brownian motion, X_0 ~ N(0, m0): theta_inf = 3 m(T)^2 e^{-2 beta T} /
    # (4 s^2 int e^{-2 beta t} m + 3 m(T)^2 e^{-2 beta T}); 2/3 for m0 = s = T = 1, beta = 0 (0 without the jump term).
    from scipy.integrate import quad

    from polab.theory.martingale_pe import mstde_terminal_jump_euler, mstde_terminal_jump_limit

    assert mstde_terminal_jump_limit(sigma=1.0, horizon=1.0, x0_second_moment=1.0) == pytest.approx(2 / 3, rel=RTOL)
    for beta in (1e-9, 3e-3, 0.7):  # the series branch, near the switch, the direct branch; quadrature reference
        integral = quad(lambda t: math.exp(-2 * beta * t) * (0.5 + 1.44 * t), 0, 1.3, epsabs=0, epsrel=1e-13)[0]
        jump = math.exp(-2 * beta * 1.3) * 3 * (0.5 + 1.44 * 1.3) ** 2
        want = jump / (4 * 1.44 * integral + jump)
        got = mstde_terminal_jump_limit(sigma=1.2, horizon=1.3, x0_second_moment=0.5, beta=beta)
        assert got == pytest.approx(want, rel=1e-11)  # quadrature at 1e-13 plus the series' 2e-13
    # the exact discrete minimiser approaches the limit at first order: error * N roughly constant
    errs = [mstde_terminal_jump_euler(sigma=1.0, horizon=1.0, x0_second_moment=1.0, num_steps=n) - 2 / 3
            for n in (100, 1000, 10000)]
    assert all(e > 0 for e in errs)
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(9.0 < r < 11.0 for r in ratios), ratios  # first order: a tenfold finer mesh, a tenfold smaller error
    with pytest.raises(ValueError, match="num_steps"):
        mstde_terminal_jump_euler(sigma=1.0, horizon=1.0, x0_second_moment=1.0, num_steps=1)


def test_exact_ou_chain_value_series():
    # Derived (theory.diffusion_values docstring): left-point theta_1 - 1/(beta+2k) = dt/2 + O(dt^2); trapezoid
    # (dt/2) coth(c dt/2) - 1/c = c dt^2/12 + O(dt^4), c = beta + 2 kappa. Checked through the ratios at small dt.
    from polab.theory.diffusion_values import ou_exact_chain_value

    k, s, b = 0.7, 1.3, 0.9
    c = b + 2 * k
    for dt in (1e-2, 1e-3):
        left = ou_exact_chain_value(kappa=k, sigma=s, beta=b, dt=dt)[0]
        trap = ou_exact_chain_value(kappa=k, sigma=s, beta=b, dt=dt, rule="trapezoid")[0]
        assert (left - 1 / c) / dt == pytest.approx(0.5, rel=2 * c * dt)  # next term c dt^2 / 12 relative to dt/2
        assert (trap - 1 / c) / dt**2 == pytest.approx(c / 12, rel=c**2 * dt**2)  # next term O(dt^4)
    # theta_2 follows from theta_1 by the one-step equation; its limit is sigma^2 / (beta c)
    th2 = ou_exact_chain_value(kappa=k, sigma=s, beta=b, dt=1e-4, rule="trapezoid")[1]
    assert th2 == pytest.approx(s**2 / (b * c), rel=1e-3)
    with pytest.raises(ValueError, match="rule"):
        ou_exact_chain_value(kappa=k, sigma=s, beta=b, dt=0.1, rule="simpson")
