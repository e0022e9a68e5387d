r"""Verification of the martingale policy-evaluation core against closed forms.

Checks (each returns a frozen result dataclass; ``python -m polab.proofs_checks.martingale_pe_checks``
prints a report):

(a) :func:`derive_symbolically`: sympy substitutes every closed form of
    :mod:`polab.theory.diffusion_values` into its Feynman–Kac equation, re-derives
    the OU coefficients from the ansatz :math:`ax^2+b`, checks the Euler-chain
    values against their one-step equations, expands the OU bias to first
    order in :math:`\Delta t`, and re-derives the MSTDE limit of
    :mod:`polab.theory.martingale_pe`; the LQ Lyapunov solution is checked by its
    residual in float64.
(b) :func:`check_identities`: float64 identities of the discretisation
    (ML = TD(λ=1); the TD(λ) surrogate's gradient = the linear TD(λ) update;
    offline TD iteration = LSTD).
(c) :func:`check_recovery`: every estimator on every test process (Brownian
    motion, OU, GBM, a 2-d LQ system) against the Euler-chain value (exact
    target of the discretised estimators) and the continuous value, with
    tolerances :math:`z\cdot\mathrm{SE}` (sandwich SE over paths, Bonferroni
    :math:`z` at a stated :math:`\alpha`) plus the known discretisation bias.
(d) :func:`check_mstde_bias`: the MSTDE minimiser keeps a bias that does not
    shrink with the mesh and tends to the quadratic-variation minimiser.
(e) :func:`check_mesh_rate` and :func:`check_paths_rate`: slopes of
    log-error against log-mesh (theory: 1, derived) and against log-paths
    (theory: -1/2) within derived margins.
(f) :func:`check_td_lambda_interpolation`: with misspecified features
    TD(λ) moves from the TD(0) solution (λ=0) to the ML solution (λ=1).
(h) :func:`check_test_weightings`: LSTD(0) with the three TD test weightings
    (the paper's :math:`e^{-\beta t}`, the squared :math:`e^{-2\beta t}`, none)
    on OU and LQ, where the value is in the feature span: all three agree with
    the Euler-chain value within Monte Carlo error, and their spreads over
    independent replications show the variance difference.

References
----------
Y. Jia and X. Y. Zhou, "Policy Evaluation and Temporal-Difference Learning in
Continuous Time and Space: A Martingale Approach", JMLR 23(154), 2022.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy as sp
import torch
from scipy.stats import norm

from polab.estimators.policy_evaluation import (
    PathBatch,
    online_step_sizes,
    fit_value_function,
    gtd_linear,
    gtd_online,
    linear_moments,
    lstd,
    martingale_loss,
    ml_linear,
    mstde_linear,
    td_lambda_offline,
    td_lambda_online,
    td_lambda_surrogate,
    eligibility_trace,
    values_on_paths,
)
from polab.estimators.sde import (
    Diffusion,
    brownian_motion,
    euler_maruyama,
    geometric_brownian_motion,
    linear_diffusion,
    ornstein_uhlenbeck,
    uniform_grid,
)
from polab.theory.diffusion_values import (
    brownian_terminal_value,
    gbm_euler_value,
    gbm_value,
    lq_euler_value,
    lq_value,
    ou_euler_value,
    ou_value_coefficients,
)
from polab.theory.martingale_pe import (
    DERIVED_MESH_ORDER,
    PATHS_ORDER,
    brownian_quadratic_variation,
    mstde_brownian_limit,
    ou_euler_bias_coefficients,
)

__all__ = [
    "FLOAT64_RTOL",
    "PEProblem",
    "make_problem",
    "PROBLEM_NAMES",
    "simulate",
    "SymbolicDerivation",
    "derive_symbolically",
    "IdentityCheck",
    "check_identities",
    "RecoveryRow",
    "RecoveryCheck",
    "check_recovery",
    "MstdeBiasCheck",
    "check_mstde_bias",
    "RateCheck",
    "check_mesh_rate",
    "check_paths_rate",
    "InterpolationCheck",
    "check_td_lambda_interpolation",
    "ModuleFitCheck",
    "check_module_fit",
    "fit_loglog_slope",
    "TestWeightingCheck",
    "check_test_weightings",
    "main",
]

#: float64 relative round-off allowance (STYLE.md).
FLOAT64_RTOL = 1e-10


# ---------------------------------------------------------------------------
# test problems
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PEProblem:
    """A test process with reward, a realisable linear feature family and its closed forms.

    Attributes
    ----------
    name : str
    process : Diffusion
    beta : float
    horizon : float
        Simulated horizon (the true horizon for finite-horizon problems; a
        truncation for infinite-horizon ones).
    finite_horizon : bool
    initial_state : callable ``(n, generator, dtype) -> Tensor[n, d]``
    reward : callable ``(t [paths, time], x [paths, time, d]) -> [paths, time]`` (rate)
    terminal : callable ``(x [paths, d]) -> [paths]`` or None
    features : callable ``(t, x) -> (phi [paths, time, k], offset [paths, time])``
    extra_test : callable ``(t, x) -> [paths, time, 1]``
        An extra test function for the over-identified GTD checks.
    theta_true : ndarray [k]
        Continuous-time value in the feature coordinates.
    theta_euler : callable ``dt -> ndarray [k]``
        Euler-chain value (exact large-sample limit of the discretised estimators).
    param_names : tuple of str
    """

    name: str
    process: Diffusion
    beta: float
    horizon: float
    finite_horizon: bool
    initial_state: Callable
    reward: Callable
    terminal: Callable | None
    features: Callable
    extra_test: Callable
    theta_true: np.ndarray
    theta_euler: Callable[[float], np.ndarray]
    param_names: tuple[str, ...]


def _normal(n, generator, dtype, d=1, scale=1.0):
    return scale * torch.randn((n, d), generator=generator, dtype=dtype)


#: Drift, noise and reward matrices of the 2-d LQ test system (closed loop of a linear feedback).
LQ_A = np.array([[-1.0, 0.5], [-0.3, -0.8]])
LQ_NOISE = np.array([[0.5, 0.0], [0.1, 0.4]])
LQ_Q = -np.eye(2)


def make_problem(name: str) -> PEProblem:
    """One of :data:`PROBLEM_NAMES`: ``"brownian"``, ``"ou"``, ``"gbm"``, ``"lq"``."""
    if name == "brownian":
        sigma, T = 1.0, 1.0

        def feats(t, x):
            x = x[..., 0]
            tau = T - t
            return torch.stack([tau * x**2, tau], dim=-1), x**2

        return PEProblem(
            name="brownian", process=brownian_motion(sigma=sigma), beta=0.0, horizon=T, finite_horizon=True,
            initial_state=lambda n, g, dt: _normal(n, g, dt),
            reward=lambda t, x: torch.zeros_like(x[..., 0]), terminal=lambda x: x[:, 0] ** 2,
            features=feats, extra_test=lambda t, x: ((T - t) * x[..., 0].abs())[..., None],
            theta_true=np.array([0.0, sigma**2]), theta_euler=lambda dt: np.array([0.0, sigma**2]),
            param_names=("theta1 [(T-t)x^2]", "theta2 [(T-t)]"),
        )
    if name == "ou":
        kappa, sigma, beta, T = 1.0, 1.0, 1.0, 8.0

        def feats(t, x):
            x = x[..., 0]
            return torch.stack([x**2, torch.ones_like(x)], dim=-1), torch.zeros_like(x)

        return PEProblem(
            name="ou", process=ornstein_uhlenbeck(kappa=kappa, sigma=sigma), beta=beta, horizon=T, finite_horizon=False,
            initial_state=lambda n, g, dt: _normal(n, g, dt),
            reward=lambda t, x: x[..., 0] ** 2, terminal=None, features=feats,
            extra_test=lambda t, x: x[..., 0].abs()[..., None],
            theta_true=np.array(ou_value_coefficients(kappa=kappa, sigma=sigma, beta=beta)),
            theta_euler=lambda dt: np.array(ou_euler_value(kappa=kappa, sigma=sigma, beta=beta, dt=dt)),
            param_names=("a [x^2]", "b [1]"),
        )
    if name == "gbm":
        mu, sigma, beta, T = 0.2, 0.4, 1.0, 8.0

        def feats(t, x):
            return x, torch.zeros_like(x[..., 0])

        return PEProblem(
            name="gbm", process=geometric_brownian_motion(mu=mu, sigma=sigma), beta=beta, horizon=T, finite_horizon=False,
            initial_state=lambda n, g, dt: torch.exp(_normal(n, g, dt, scale=0.5)),
            reward=lambda t, x: x[..., 0], terminal=None, features=feats,
            extra_test=lambda t, x: torch.ones_like(x),
            theta_true=np.array([float(gbm_value(None, 1.0, mu=mu, sigma=sigma, beta=beta))]),
            theta_euler=lambda dt: np.array([gbm_euler_value(mu=mu, sigma=sigma, beta=beta, dt=dt)]),
            param_names=("v [x]",),
        )
    if name == "lq":
        beta, T = 0.5, 10.0
        true = lq_value(LQ_A, LQ_Q, LQ_NOISE, beta=beta)

        def coords(v):
            return np.array([v.P[0, 0], 2 * v.P[0, 1], v.P[1, 1], v.c])

        def feats(t, x):
            x1, x2 = x[..., 0], x[..., 1]
            return torch.stack([x1**2, x1 * x2, x2**2, torch.ones_like(x1)], dim=-1), torch.zeros_like(x1)

        return PEProblem(
            name="lq", process=linear_diffusion(torch.tensor(LQ_A), torch.tensor(LQ_NOISE)), beta=beta, horizon=T,
            finite_horizon=False, initial_state=lambda n, g, dt: _normal(n, g, dt, d=2),
            reward=lambda t, x: torch.einsum("...i,ij,...j->...", x, torch.as_tensor(LQ_Q, dtype=x.dtype, device=x.device), x),
            terminal=None, features=feats, extra_test=lambda t, x: x[..., :1].abs(),
            theta_true=coords(true),
            theta_euler=lambda dt: coords(lq_euler_value(LQ_A, LQ_Q, LQ_NOISE, beta=beta, dt=dt)),
            param_names=("P11 [x1^2]", "2 P12 [x1 x2]", "P22 [x2^2]", "c [1]"),
        )
    raise ValueError(f"unknown problem {name!r}; choose one of {PROBLEM_NAMES}.")


PROBLEM_NAMES = ("brownian", "ou", "gbm", "lq")


@dataclass(frozen=True)
class SimulatedProblem:
    """Paths of a problem with their features (see :func:`simulate`)."""

    batch: PathBatch
    features: torch.Tensor
    offset: torch.Tensor
    extra_test: torch.Tensor


def simulate(problem: PEProblem, *, num_paths: int, num_steps: int | None = None, times=None,
             generator: torch.Generator, dtype=torch.float64) -> SimulatedProblem:
    """Euler–Maruyama paths of ``problem`` on a uniform grid (``num_steps``) or on ``times``."""
    t = uniform_grid(problem.horizon, num_steps, dtype=dtype) if times is None else torch.as_tensor(times, dtype=dtype)
    x0 = problem.initial_state(num_paths, generator, dtype)
    X = euler_maruyama(problem.process, x0, t, generator=generator)
    tt = t.expand(num_paths, -1)
    r = problem.reward(tt, X)[:, :-1]
    h = problem.terminal(X[:, -1]) if problem.finite_horizon else None
    batch = PathBatch(states=X, times=t, rewards=r, terminal_rewards=h)
    phi, off = problem.features(tt, X)
    return SimulatedProblem(batch=batch, features=phi, offset=off, extra_test=problem.extra_test(tt, X))


def _overidentified_tests(sim: SimulatedProblem, beta: float) -> torch.Tensor:
    """TD(0) test functions of the features plus one extra adapted function, [paths, time-1, k+1]."""
    both = torch.cat([sim.features, sim.extra_test], dim=-1)
    return eligibility_trace(both, sim.batch, beta=beta, lambda_=0.0)


# ---------------------------------------------------------------------------
# (a) symbolic derivations
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SymbolicDerivation:
    """Result of :func:`derive_symbolically`.

    Attributes
    ----------
    pde_residuals : dict[str, str]
        The simplified Feynman–Kac residual of each closed form ("0" when it holds).
    ou_coefficients : tuple[str, str]
        :math:`(a, b)` solved from the ansatz :math:`ax^2+b` by sympy.
    euler_residuals : dict[str, str]
        Residual of each Euler-chain value in its one-step equation.
    ou_bias_series : tuple[str, str]
        First-order coefficients of :math:`\\theta(\\Delta t)-\\theta^*` from a sympy series.
    mstde_limit : str
        The minimiser of the Brownian quadratic variation from sympy.
    lq_lyapunov_residual : float
        max-abs residual of the Lyapunov equation for the 2-d LQ system (float64).
    passed : bool
    """

    pde_residuals: dict
    ou_coefficients: tuple
    euler_residuals: dict
    ou_bias_series: tuple
    mstde_limit: str
    lq_lyapunov_residual: float
    passed: bool


def derive_symbolically() -> SymbolicDerivation:
    """Re-derive the closed forms in sympy (see module docstring, item (a))."""
    t, x, T = sp.symbols("t x T", real=True)
    sigma, kappa, beta, mu, dt = sp.symbols("sigma kappa beta mu Delta_t", positive=True)
    p = sp.Symbol("p", positive=True)
    a_, b_ = sp.symbols("a b")

    def fk(J, drift, vol, r):
        return sp.simplify(sp.diff(J, t) + drift * sp.diff(J, x) + vol**2 / 2 * sp.diff(J, x, 2) - beta * J + r)

    res = {}
    J_bm = sp.exp(-beta * (T - t)) * (x**2 + sigma**2 * (T - t))
    res["brownian"] = fk(J_bm, 0, sigma, 0)
    res["brownian_terminal"] = sp.simplify(J_bm.subs(t, T) - x**2)
    J_ou = x**2 / (beta + 2 * kappa) + sigma**2 / (beta * (beta + 2 * kappa))
    res["ou"] = fk(J_ou, -kappa * x, sigma, x**2)
    c = beta - p * mu - p * (p - 1) * sigma**2 / 2
    A_run, B_term = sp.symbols("A_run B_term")
    J_gbm = x**p * (B_term * sp.exp(-c * (T - t)) + A_run * (1 - sp.exp(-c * (T - t))) / c)
    res["gbm_finite"] = sp.simplify(fk(J_gbm, mu * x, sigma * x, A_run * x**p) / x**p)
    res["gbm_terminal"] = sp.simplify(J_gbm.subs(t, T) - B_term * x**p)
    res["gbm_infinite"] = sp.simplify(fk(A_run * x**p / c, mu * x, sigma * x, A_run * x**p) / x**p)
    # OU coefficients from the ansatz a x^2 + b
    eq = sp.expand(fk(a_ * x**2 + b_, -kappa * x, sigma, x**2))
    sol = sp.solve([eq.coeff(x, 2), eq.coeff(x, 0)], [a_, b_], dict=True)[0]
    ou_ab = (sp.simplify(sol[a_]), sp.simplify(sol[b_]))
    ok_ab = sp.simplify(ou_ab[0] - 1 / (beta + 2 * kappa)) == 0 and sp.simplify(ou_ab[1] - sigma**2 / (beta * (beta + 2 * kappa))) == 0
    # Euler chains: V = r dt + e^{-beta dt} E[V(X_1) | X_0 = x]
    g = sp.exp(-beta * dt)
    th1 = dt / (1 - g * (1 - kappa * dt) ** 2)
    th2 = g * th1 * sigma**2 * dt / (1 - g)
    m2 = ((1 - kappa * dt) * x) ** 2 + sigma**2 * dt  # E[X_1^2 | x]
    eul = {"ou": sp.simplify(th1 * x**2 + th2 - (x**2 * dt + g * (th1 * m2 + th2)))}
    v1 = dt / (1 - g * (1 + mu * dt))
    eul["gbm_p1"] = sp.simplify(v1 * x - (x * dt + g * v1 * x * (1 + mu * dt)))
    # first-order series of the OU bias
    s1 = sp.series(th1, dt, 0, 2).removeO()
    s2 = sp.series(th2, dt, 0, 2).removeO()
    c1 = sp.simplify(s1.coeff(dt, 1))
    c2 = sp.simplify(s2.coeff(dt, 1))
    c1_th, c2_th = ou_euler_bias_coefficients(kappa=0.7, sigma=1.3, beta=1.5)
    vals = {kappa: sp.Rational(7, 10), sigma: sp.Rational(13, 10), beta: sp.Rational(3, 2)}
    ok_series = abs(float(c1.subs(vals)) - float(c1_th)) < 1e-12 and abs(float(c2.subs(vals)) - float(c2_th)) < 1e-12
    ok_series = ok_series and sp.simplify(s1.coeff(dt, 0) - 1 / (beta + 2 * kappa)) == 0
    # MSTDE limit: minimise the quadratic variation over theta_1
    th, m0, s, tt = sp.symbols("theta m0 s tt", real=True)
    qv = 4 * s**2 * sp.integrate((m0 + s**2 * tt) * (1 + th * (T - tt)) ** 2, (tt, 0, T))
    th_star = sp.solve(sp.diff(qv, th), th)[0]
    probe = {m0: sp.Rational(3, 4), s: sp.Rational(6, 5), T: sp.Rational(9, 10)}
    ok_mstde = abs(float(th_star.subs(probe)) - mstde_brownian_limit(sigma=1.2, horizon=0.9, x0_second_moment=0.75)) < 1e-12
    ok_qv = abs(float(qv.subs(probe).subs(th, sp.Rational(-1, 3)))
                - brownian_quadratic_variation(-1 / 3, sigma=1.2, horizon=0.9, x0_second_moment=0.75)) < 1e-12
    # LQ: Lyapunov residual
    v = lq_value(LQ_A, LQ_Q, LQ_NOISE, beta=0.5)
    Sh = LQ_A - 0.25 * np.eye(2)
    lyap = float(np.abs(Sh.T @ v.P + v.P @ Sh + LQ_Q).max())
    ok = all(r == 0 for r in res.values()) and all(r == 0 for r in eul.values()) and ok_ab and ok_series
    ok = ok and ok_mstde and ok_qv and lyap < 1e-12
    return SymbolicDerivation(
        pde_residuals={k: str(r) for k, r in res.items()}, ou_coefficients=(str(ou_ab[0]), str(ou_ab[1])),
        euler_residuals={k: str(r) for k, r in eul.items()}, ou_bias_series=(str(c1), str(c2)),
        mstde_limit=str(sp.simplify(th_star)), lq_lyapunov_residual=lyap, passed=bool(ok),
    )


# ---------------------------------------------------------------------------
# (b) float64 identities
# ---------------------------------------------------------------------------
class _LinearModule(torch.nn.Module):
    """V = offset + phi @ theta as a module on precomputed features (for the identity check)."""

    def __init__(self, phi, offset, theta):
        super().__init__()
        self.phi, self.offset = phi, offset
        self.theta = torch.nn.Parameter(theta.clone())

    def forward(self, times, states):
        return self.offset + self.phi @ self.theta


@dataclass(frozen=True)
class IdentityCheck:
    """Result of :func:`check_identities` (relative errors; tolerance ``FLOAT64_RTOL``).

    Attributes
    ----------
    ml_vs_td1 : float
        ML closed form against LSTD(λ=1), finite horizon, non-uniform grid.
    surrogate_gradient : dict[float, float]
        Per λ: autograd gradient of :func:`td_lambda_surrogate` against
        :math:`-(\\bar c - \\bar C\\theta)` from :func:`linear_moments`.
    ml_gradient : float
        Autograd gradient of :func:`martingale_loss` against the normal equations.
    offline_td_vs_lstd : float
        Offline TD iteration (after enough sweeps to contract by 1e-14) against LSTD.
    passed : bool
    """

    ml_vs_td1: float
    surrogate_gradient: dict
    ml_gradient: float
    offline_td_vs_lstd: float
    passed: bool


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check_identities(*, seed: int = 0) -> IdentityCheck:
    """Float64 identities of the discretisation (see module docstring, item (b))."""
    gen = torch.Generator().manual_seed(seed)
    prob = make_problem("brownian")
    # non-uniform grid: sorted uniform draws plus the end points
    inner = torch.sort(torch.rand(40, generator=gen, dtype=torch.float64)).values * prob.horizon
    times = torch.cat([torch.zeros(1, dtype=torch.float64), inner, torch.full((1,), prob.horizon, dtype=torch.float64)])
    sim = simulate(prob, num_paths=300, times=times, generator=gen)
    b, phi, off = sim.batch, sim.features, sim.offset
    beta = 0.7  # discounting exercised (the closed form is not used here, only algebra)
    ml = ml_linear(phi, b, beta=beta, offset=off).theta
    td1 = lstd(phi, b, beta=beta, lambda_=1.0, offset=off, test_weighting="squared").theta  # ML = TD(1) needs e^(-2 beta t)
    e_ml = _rel(td1, ml)
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    grads = {}
    for lam in (0.0, 0.4, 1.0):
        m = linear_moments(phi, b, beta=beta, method="mo", lambda_=lam, offset=off, covariance=False)
        expected = -(m.c - m.C @ theta) / m.num_paths
        mod = _LinearModule(phi, off, theta)
        td_lambda_surrogate(values_on_paths(mod, b), b, beta=beta, lambda_=lam).backward()
        grads[lam] = _rel(mod.theta.grad, expected)
    m = linear_moments(phi, b, beta=beta, method="ml", offset=off, covariance=False)
    expected = -(m.c - m.C @ theta) / m.num_paths
    mod = _LinearModule(phi, off, theta)
    martingale_loss(values_on_paths(mod, b), b, beta=beta).backward()
    e_mlg = _rel(mod.theta.grad, expected)
    m = linear_moments(phi, b, beta=beta, method="mo", lambda_=0.0, offset=off, covariance=False)
    Cbar = m.C / m.num_paths
    eig = torch.linalg.eigvals(Cbar)
    step = float((eig.real / eig.abs() ** 2).min())  # alpha = min Re mu/|mu|^2 contracts every mode
    rate = float((1 - step * eig).abs().max())
    sweeps = int(math.ceil(math.log(1e-14) / math.log(rate)))
    off_td = td_lambda_offline(phi, b, beta=beta, lambda_=0.0, step_size=step, num_sweeps=sweeps, offset=off)
    e_off = _rel(off_td, lstd(phi, b, beta=beta, offset=off).theta)
    ok = max([e_ml, e_mlg, *grads.values()]) < FLOAT64_RTOL and e_off < 1e-8  # offline: contraction 1e-14 x condition
    return IdentityCheck(ml_vs_td1=e_ml, surrogate_gradient=grads, ml_gradient=e_mlg, offline_td_vs_lstd=e_off, passed=bool(ok))


# ---------------------------------------------------------------------------
# (c) recovery of the closed forms
# ---------------------------------------------------------------------------
#: Estimators of :func:`check_recovery` whose standard error comes from the sandwich.
CLOSED_FORM_ESTIMATORS = ("ml", "lstd0", "lstd_half", "gtd_identity", "gtd_invcov")
#: Stochastic-approximation estimators, checked against the truth with twice the LSTD standard error:
#: Polyak–Ruppert averaging attains the LSTD covariance asymptotically (Polyak & Juditsky 1992); the
#: factor 2 allows for the finite run and is not derived.
ONLINE_ESTIMATORS = ("td0_online", "gtd_identity_online", "gtd_invcov_online")
ONLINE_SE_FACTOR = 2.0

@dataclass(frozen=True)
class RecoveryRow:
    """One (problem, estimator) of :func:`check_recovery`.

    Attributes
    ----------
    problem, estimator : str
    theta, standard_error : tuple of float
        Estimate and the standard error its tolerance uses.
    theta_euler, theta_true : tuple of float
        Euler-chain (discrete target) and continuous values.
    max_z_euler : float
        max_j |theta_j - theta_euler_j| / se_j.
    tolerance_true : tuple of float
        z se_j + |theta_euler_j - theta_true_j| + truncation bound.
    passed_euler, passed_true : bool
    """

    problem: str
    estimator: str
    theta: tuple
    standard_error: tuple
    theta_euler: tuple
    theta_true: tuple
    max_z_euler: float
    tolerance_true: tuple
    passed_euler: bool
    passed_true: bool


@dataclass(frozen=True)
class RecoveryCheck:
    """Result of :func:`check_recovery`.

    Attributes
    ----------
    rows : tuple of RecoveryRow
    z : float
        Bonferroni critical value: every assertion holds with probability at
        least 1 - alpha under any seed when the estimators are unbiased to
        first order and asymptotically normal.
    alpha : float
    num_paths, num_steps : int
    passed : bool
    """

    rows: tuple
    z: float
    alpha: float
    num_paths: int
    num_steps: int
    passed: bool


def _ml_truncation_bound(sim: SimulatedProblem, problem: PEProblem, dt: float) -> np.ndarray:
    r"""Plug-in size of the ML truncation bias for an infinite horizon.

    The truncated return misses :math:`w_N V_{\Delta t}(X_N)` at every
    :math:`t_i`; solving the ML normal equations for that missing target
    gives the bias of the truncated estimator (with the Euler-chain value).
    """
    if problem.finite_horizon:
        return np.zeros(len(problem.theta_true))
    b = sim.batch
    th = torch.as_tensor(problem.theta_euler(dt))
    vN = sim.offset[:, -1] + sim.features[:, -1] @ th
    tail = PathBatch(states=b.states, times=b.times, rewards=torch.zeros_like(b.rewards), terminal_rewards=vN)
    # ML of a zero-reward problem with terminal value v_N: exactly the missing part of the targets
    feats_no_end = sim.features
    fit = ml_linear(feats_no_end, tail, beta=problem.beta, offset=torch.zeros_like(sim.offset), covariance=False)
    return np.abs(fit.theta.numpy())


def check_recovery(problems=PROBLEM_NAMES, *, num_paths: int = 2000, num_steps: int = 200, alpha: float = 0.01,
                   seed: int = 0, online: bool = True) -> RecoveryCheck:
    """Every estimator on every problem against the Euler-chain and the continuous values (item (c))."""
    ests = CLOSED_FORM_ESTIMATORS + (ONLINE_ESTIMATORS if online else ())
    total_k = sum(len(make_problem(p).theta_true) for p in problems) * len(ests) * 2
    z = float(norm.ppf(1 - alpha / (2 * total_k)))
    rows = []
    for pi, name in enumerate(problems):
        prob = make_problem(name)
        gen = torch.Generator().manual_seed(seed * 1000 + pi)
        sim = simulate(prob, num_paths=num_paths, num_steps=num_steps, generator=gen)
        dt = prob.horizon / num_steps
        b, phi, off, beta = sim.batch, sim.features, sim.offset, prob.beta
        th_e, th_t = prob.theta_euler(dt), prob.theta_true
        tests = _overidentified_tests(sim, beta)
        fits = {
            "ml": ml_linear(phi, b, beta=beta, offset=off),
            "lstd0": lstd(phi, b, beta=beta, offset=off),
            "lstd_half": lstd(phi, b, beta=beta, lambda_=0.5, offset=off),
            "gtd_identity": gtd_linear(phi, b, beta=beta, offset=off, test_functions=tests, weighting="identity"),
            "gtd_invcov": gtd_linear(phi, b, beta=beta, offset=off, test_functions=tests, weighting="inverse_covariance"),
        }
        trunc = _ml_truncation_bound(sim, prob, dt)
        est = {k: (f.theta.numpy(), f.standard_error.numpy()) for k, f in fits.items()}
        if online:
            m0 = linear_moments(phi, b, beta=beta, offset=off, covariance=False)
            mt = linear_moments(phi, b, beta=beta, offset=off, test_functions=tests, covariance=False)
            st0 = online_step_sizes(m0.c / num_paths, m0.C / num_paths, m0.K / num_paths, dt=dt)
            stt = online_step_sizes(mt.c / num_paths, mt.C / num_paths, mt.K / num_paths, dt=dt)
            se0 = fits["lstd0"].standard_error.numpy() * ONLINE_SE_FACTOR
            og = torch.Generator().manual_seed(seed * 1000 + pi + 500)
            r = td_lambda_online(phi, b, beta=beta, lambda_=0.0, step_size=st0["td"], paths_per_update=10,
                                 num_epochs=2, offset=off, generator=og)
            est["td0_online"] = (r.theta_average.numpy(), se0)
            for wname, short in (("identity", "gtd_identity"), ("inverse_covariance", "gtd_invcov")):
                r = gtd_online(phi, b, beta=beta, weighting=wname, step_size=stt[short], aux_step_size=stt[short + "_aux"],
                               paths_per_update=20, num_epochs=20, offset=off, test_functions=tests, generator=og)
                est[short + "_online"] = (r.theta_average.numpy(), fits[short].standard_error.numpy() * ONLINE_SE_FACTOR)
        for key in ests:
            th, se = est[key]
            ze = float(np.max(np.abs(th - th_e) / se))
            extra = trunc if key in ("ml",) else 0.0
            tol_t = z * se + np.abs(th_e - th_t) + extra
            rows.append(RecoveryRow(
                problem=name, estimator=key, theta=tuple(map(float, th)), standard_error=tuple(map(float, se)),
                theta_euler=tuple(map(float, th_e)), theta_true=tuple(map(float, th_t)), max_z_euler=ze,
                tolerance_true=tuple(map(float, tol_t)),
                passed_euler=bool(np.all(np.abs(th - th_e) <= z * se + extra)),
                passed_true=bool(np.all(np.abs(th - th_t) <= tol_t)),
            ))
    ok = all(r.passed_euler and r.passed_true for r in rows)
    return RecoveryCheck(rows=tuple(rows), z=z, alpha=alpha, num_paths=num_paths, num_steps=num_steps, passed=bool(ok))


# ---------------------------------------------------------------------------
# (d) MSTDE bias
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MstdeBiasCheck:
    """Result of :func:`check_mstde_bias` on the Brownian problem.

    Attributes
    ----------
    meshes : tuple of float
    mstde_theta1, mstde_se1 : tuple of float
        MSTDE estimate of :math:`\\theta_1` (truth 0) and its standard error.
    ml_theta1, ml_se1 : tuple of float
        ML for comparison.
    limit_theta1 : float
        :func:`polab.theory.martingale_pe.mstde_brownian_limit`.
    z : float
        Bonferroni critical value at ``alpha`` over ``2 * len(meshes)`` assertions.
    alpha : float
    bias_persists : bool
        |mstde_theta1| > z se at every mesh, also at the smallest.
    bias_slope : float
        Fitted slope of log|mstde_theta1| on log mesh (0 when the bias does not
        shrink; asserted below 0.2 in absolute value, against 1 for a bias of order dt).
    ml_ok : bool
        |ml_theta1| <= z se at every mesh.
    extrapolated_theta1, extrapolated_se : float
        Intercept (and its standard error, propagated from the per-mesh SEs) of
        a weighted straight-line fit of the MSTDE theta_1 on the mesh, over the
        meshes <= 0.05: the first-order extrapolation to mesh 0 (assumes the
        O(dt^2) remainder is small there; the data show theta_1 linear in dt).
    limit_ok : bool
        |extrapolated_theta1 - limit| <= z extrapolated_se.
    passed : bool
    """

    meshes: tuple
    mstde_theta1: tuple
    mstde_se1: tuple
    ml_theta1: tuple
    ml_se1: tuple
    limit_theta1: float
    z: float
    alpha: float
    bias_persists: bool
    bias_slope: float
    ml_ok: bool
    extrapolated_theta1: float
    extrapolated_se: float
    limit_ok: bool
    passed: bool


def check_mstde_bias(*, meshes=(0.1, 0.05, 0.02, 0.01, 0.005), num_paths: int = 2000, alpha: float = 0.01, seed: int = 1) -> MstdeBiasCheck:
    """The MSTDE minimiser stays biased as the mesh shrinks; ML does not (item (d))."""
    prob = make_problem("brownian")
    z = float(norm.ppf(1 - alpha / (2 * 2 * len(meshes))))
    ms, mse, ml, mlse = [], [], [], []
    for j, h in enumerate(meshes):
        gen = torch.Generator().manual_seed(seed * 100 + j)
        sim = simulate(prob, num_paths=num_paths, num_steps=int(round(prob.horizon / h)), generator=gen)
        f = mstde_linear(sim.features, sim.batch, beta=0.0, offset=sim.offset)
        g = ml_linear(sim.features, sim.batch, beta=0.0, offset=sim.offset)
        ms.append(float(f.theta[0])); mse.append(float(f.standard_error[0]))
        ml.append(float(g.theta[0])); mlse.append(float(g.standard_error[0]))
    lim = mstde_brownian_limit(sigma=1.0, horizon=prob.horizon, x0_second_moment=1.0)
    persists = all(abs(m) > z * s for m, s in zip(ms, mse))
    ml_ok = all(abs(m) <= z * s for m, s in zip(ml, mlse))
    slope = fit_loglog_slope(meshes, np.abs(ms))
    sel = [j for j, h in enumerate(meshes) if h <= 0.05]
    X = np.stack([np.ones(len(sel)), np.asarray(meshes, dtype=float)[sel]], axis=1)
    W = np.diag(1.0 / np.asarray(mse)[sel] ** 2)
    cov = np.linalg.inv(X.T @ W @ X)
    coef = cov @ X.T @ W @ np.asarray(ms)[sel]
    ex, ex_se = float(coef[0]), float(math.sqrt(cov[0, 0]))
    limit_ok = abs(ex - lim) <= z * ex_se
    return MstdeBiasCheck(
        meshes=tuple(meshes), mstde_theta1=tuple(ms), mstde_se1=tuple(mse), ml_theta1=tuple(ml), ml_se1=tuple(mlse),
        limit_theta1=lim, z=z, alpha=alpha, bias_persists=bool(persists), bias_slope=slope, ml_ok=bool(ml_ok),
        extrapolated_theta1=ex, extrapolated_se=ex_se,
        limit_ok=bool(limit_ok), passed=bool(persists and ml_ok and limit_ok and abs(slope) < 0.2),
    )


# ---------------------------------------------------------------------------
# (e) rates
# ---------------------------------------------------------------------------
def fit_loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


@dataclass(frozen=True)
class RateCheck:
    """A fitted log-log slope against its theoretical value.

    Attributes
    ----------
    name : str
    x : tuple of float
        Meshes or path counts.
    errors : tuple of float
    slope : float
    theory : float
    margin : float
        Allowed |slope - theory| and where it comes from (``margin_source``).
    margin_source : str
    exact_slope : float or None
        Slope of the exact errors from the closed forms (mesh rate only).
    passed : bool
    """

    name: str
    x: tuple
    errors: tuple
    slope: float
    theory: float
    margin: float
    margin_source: str
    exact_slope: float | None
    passed: bool


def _slope_sensitivity(x) -> np.ndarray:
    """Weights c_j with slope = sum_j c_j log y_j (least squares on log x)."""
    lx = np.log(np.asarray(x, dtype=float))
    d = lx - lx.mean()
    return d / (d @ d)


def check_mesh_rate(*, meshes=(0.2, 0.1, 0.05, 0.025), num_paths: int = 20000, horizon: float = 3.0, alpha: float = 0.01,
                    seed: int = 2) -> RateCheck:
    r"""Slope of log|LSTD - truth| on log mesh for OU's :math:`\theta_1` (theory: 1, derived; item (e)).

    Common random numbers: one Brownian path on the finest mesh is summed
    into the coarser meshes, so that Monte Carlo noise is largely shared.
    Margin (derived): a perturbation :math:`\delta_j \le z\,\mathrm{SE}_j` of
    each error moves the slope by at most :math:`\sum_j |c_j|\,\delta_j/e_j`
    (first order in :math:`\delta_j/e_j`), :math:`c_j` the least-squares
    weights, with :math:`z` Bonferroni over the meshes at ``alpha``.
    """
    prob = make_problem("ou")
    kappa, sigma, beta = 1.0, 1.0, prob.beta
    fine = min(meshes)
    n_fine = int(round(horizon / fine))
    gen = torch.Generator().manual_seed(seed)
    x0 = prob.initial_state(num_paths, gen, torch.float64)
    dW = torch.randn((num_paths, n_fine), generator=gen, dtype=torch.float64) * math.sqrt(fine)
    errs, ses, exact = [], [], []
    a_true = prob.theta_true[0]
    for h in meshes:
        m = int(round(h / fine))
        inc = dW.reshape(num_paths, n_fine // m, m).sum(-1)  # Brownian increments on the mesh h
        N = inc.shape[1]
        x = torch.empty((num_paths, N + 1), dtype=torch.float64)
        x[:, 0] = x0[:, 0]
        for i in range(N):
            x[:, i + 1] = x[:, i] - kappa * x[:, i] * h + sigma * inc[:, i]
        t = uniform_grid(horizon, N)
        b = PathBatch(states=x[..., None], times=t, rewards=(x**2)[:, :-1])
        phi, off = prob.features(t.expand(num_paths, -1), x[..., None])
        f = lstd(phi, b, beta=beta, offset=off)
        errs.append(abs(float(f.theta[0]) - a_true)); ses.append(float(f.standard_error[0]))
        exact.append(abs(prob.theta_euler(h)[0] - a_true))
    z = float(norm.ppf(1 - alpha / (2 * len(meshes))))
    c = _slope_sensitivity(meshes)
    margin = float(np.sum(np.abs(c) * z * np.array(ses) / np.array(errs)))
    slope = fit_loglog_slope(meshes, errs)
    exact_slope = fit_loglog_slope(meshes, exact)
    return RateCheck(
        name="OU theta_1 error vs mesh (LSTD)", x=tuple(meshes), errors=tuple(errs), slope=slope, theory=DERIVED_MESH_ORDER,
        margin=margin, margin_source=f"sum_j |c_j| z SE_j / e_j, z={z:.3f} (Bonferroni, alpha={alpha}); plus the curvature of the exact errors",
        exact_slope=exact_slope,
        passed=bool(abs(slope - exact_slope) <= margin and abs(exact_slope - DERIVED_MESH_ORDER) < 0.1),
    )


def check_paths_rate(*, path_counts=(200, 800, 3200), replications: int = 20, num_steps: int = 50, alpha: float = 0.01,
                     seed: int = 3) -> RateCheck:
    r"""Slope of log RMSE of LSTD on log number of paths for Brownian motion (theory: -1/2; item (e)).

    Brownian motion has no discretisation bias, so the error is pure Monte
    Carlo. Margin (derived): with :math:`R` replications the RMSE has
    relative sampling sd about :math:`1/\sqrt{2R}` (chi-square), so the
    fitted slope has sd :math:`\approx (2R)^{-1/2}/\sqrt{\sum_j(\log n_j-\overline{\log n})^2}`;
    the margin is :math:`z_{1-\alpha/2}` times that.
    """
    prob = make_problem("brownian")
    rmse = []
    for j, n in enumerate(path_counts):
        sq = []
        for r in range(replications):
            gen = torch.Generator().manual_seed(seed * 10000 + j * 100 + r)
            sim = simulate(prob, num_paths=n, num_steps=num_steps, generator=gen)
            f = lstd(sim.features, sim.batch, beta=0.0, offset=sim.offset, covariance=False)
            sq.append(float(((f.theta.numpy() - prob.theta_true) ** 2).sum()))
        rmse.append(math.sqrt(np.mean(sq)))
    lx = np.log(np.asarray(path_counts, dtype=float))
    sd = (1 / math.sqrt(2 * replications)) / math.sqrt(((lx - lx.mean()) ** 2).sum())
    margin = float(norm.ppf(1 - alpha / 2) * sd)
    slope = fit_loglog_slope(path_counts, rmse)
    return RateCheck(
        name="Brownian RMSE vs paths (LSTD)", x=tuple(path_counts), errors=tuple(rmse), slope=slope, theory=PATHS_ORDER,
        margin=margin, margin_source=f"z_(1-alpha/2) * (2R)^(-1/2) / sd(log n), R={replications}, alpha={alpha}",
        exact_slope=None, passed=bool(abs(slope - PATHS_ORDER) <= margin),
    )


# ---------------------------------------------------------------------------
# (f) TD(lambda) between TD(0) and ML
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class InterpolationCheck:
    """Result of :func:`check_td_lambda_interpolation`.

    Misspecified family on the Brownian problem: :math:`J^\\theta = x^2 + \\theta(T-t)^2`
    (truth :math:`x^2+\\sigma^2(T-t)`). Derived population limits
    (:math:`\\sigma=T=1`, :math:`\\beta=0`): ML projects :math:`\\tau` on
    :math:`\\tau^2` in :math:`L^2(d\\tau)`, :math:`\\theta=\\int\\tau^3/\\int\\tau^4=5/4`;
    TD(0) solves :math:`\\int\\tau^2(\\sigma^2-2\\theta\\tau)d\\tau=0`, :math:`\\theta=2/3`.

    Attributes
    ----------
    lambdas : tuple of float
    theta : tuple of float
        LSTD(λ) estimate for each λ.
    theta_td0, theta_ml : float
    endpoint_td0_error, endpoint_ml_error : float
        |theta(0) - TD(0)| and relative |theta(1) - ML| (float64 tolerance).
    monotone : bool
        theta(λ) is monotone between the endpoints on the grid.
    gap_z : float
        |theta_ml - theta_td0| in units of the standard error of the
        difference (from the two sandwich SEs, conservative sum): the two
        methods really differ here (asserted > 3).
    z_td0, z_ml : float
        Distance of the TD(0) and ML estimates from their derived population
        limits 2/3 and 5/4, in sandwich standard errors (asserted <= z at
        alpha=0.01, Bonferroni over the two).
    passed : bool
    """

    lambdas: tuple
    theta: tuple
    theta_td0: float
    theta_ml: float
    endpoint_td0_error: float
    endpoint_ml_error: float
    monotone: bool
    gap_z: float
    z_td0: float
    z_ml: float
    passed: bool


def check_td_lambda_interpolation(*, lambdas=(0.0, 1e-6, 1e-3, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0), num_paths: int = 2000,
                                  num_steps: int = 100, seed: int = 4) -> InterpolationCheck:
    """TD(λ) interpolates between TD(0) and ML as λ goes from 0 to 1 (item (f))."""
    prob = make_problem("brownian")
    gen = torch.Generator().manual_seed(seed)
    sim = simulate(prob, num_paths=num_paths, num_steps=num_steps, generator=gen)
    tau = prob.horizon - sim.batch.times
    phi = (tau**2)[..., None]
    th = [float(lstd(phi, sim.batch, beta=0.0, lambda_=lam, offset=sim.offset, covariance=False).theta[0]) for lam in lambdas]
    td0 = lstd(phi, sim.batch, beta=0.0, offset=sim.offset)
    ml = ml_linear(phi, sim.batch, beta=0.0, offset=sim.offset)
    e0 = abs(th[0] - float(td0.theta[0]))
    e1 = abs(th[-1] - float(ml.theta[0])) / abs(float(ml.theta[0]))
    d = np.diff(th)
    mono = bool(np.all(d >= -1e-12) or np.all(d <= 1e-12))
    gap = abs(float(ml.theta[0] - td0.theta[0])) / float(td0.standard_error[0] + ml.standard_error[0])
    z0 = abs(float(td0.theta[0]) - 2 / 3) / float(td0.standard_error[0])
    z1 = abs(float(ml.theta[0]) - 5 / 4) / float(ml.standard_error[0])
    zc = float(norm.ppf(1 - 0.01 / 4))
    return InterpolationCheck(
        lambdas=tuple(lambdas), theta=tuple(th), theta_td0=float(td0.theta[0]), theta_ml=float(ml.theta[0]),
        endpoint_td0_error=e0, endpoint_ml_error=e1, monotone=mono, gap_z=gap, z_td0=z0, z_ml=z1,
        passed=bool(e0 <= FLOAT64_RTOL * max(1.0, abs(th[0])) and e1 <= FLOAT64_RTOL and mono and gap > 3
                    and z0 <= zc and z1 <= zc),
    )


# ---------------------------------------------------------------------------
# a non-linear torch module: GBM with terminal payoff
# ---------------------------------------------------------------------------
class ExponentialGrowthValue(torch.nn.Module):
    r""":math:`J^\theta(t,x) = x^2 e^{\theta (T-t)}`: non-linear in :math:`\theta`, exact for GBM with payoff :math:`x^2`."""

    def __init__(self, horizon: float):
        super().__init__()
        self.horizon = horizon
        self.theta = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, times, states):
        return states[..., 0] ** 2 * torch.exp(self.theta * (self.horizon - times))


@dataclass(frozen=True)
class ModuleFitCheck:
    """Gradient ML and semi-gradient TD(0) on a non-linear module (finite-horizon GBM, payoff x^2).

    Attributes
    ----------
    theta_ml, theta_td : float
        Adam estimates.
    se_ml, se_td : float
        Sandwich standard errors of the two Z-estimators (per-path estimating
        functions by forward-mode differentiation, their mean's derivative by
        a central difference).
    residual_ml, residual_td : float
        Remaining optimisation error |mean psi(theta) / H| (a Newton step's length).
    theta_euler : float
        :math:`\\ln m_2/\\Delta t - \\beta`, :math:`m_2 = (1+\\mu\\Delta t)^2+\\sigma^2\\Delta t`
        (Euler chain; exactly in the family; derived here).
    theta_true : float
        :math:`2\\mu+\\sigma^2-\\beta`.
    z : float
        Bonferroni over the two estimators at alpha = 0.01.
    passed : bool
        |theta - theta_euler| <= z se + residual for both.
    """

    theta_ml: float
    theta_td: float
    se_ml: float
    se_td: float
    residual_ml: float
    residual_td: float
    theta_euler: float
    theta_true: float
    z: float
    passed: bool


def _module_estimating_functions(mod, batch, *, beta, method, theta):
    """Per-path estimating functions psi_p(theta) [paths] of a one-parameter module (ML gradient or TD(0) direction)."""
    from torch.func import functional_call, jvp

    def vals(th):
        return functional_call(mod, {"theta": th}, (batch.times, batch.states))

    v, dv = jvp(vals, (theta,), (torch.ones_like(theta),))
    w = torch.exp(-beta * batch.times)
    dt = batch.dt
    if method == "ml":
        from polab.estimators.policy_evaluation import returns_to_go
        res = returns_to_go(batch, beta=beta) - w[:, :-1] * v[:, :-1]
        return -(dt * res * w[:, :-1] * dv[:, :-1]).sum(1)
    from polab.estimators.policy_evaluation import martingale_increments
    dm = martingale_increments(v, batch, beta=beta)
    return -(w[:, :-1] * dv[:, :-1] * dt * dm).sum(1)


def check_module_fit(*, num_paths: int = 4000, num_steps: int = 25, seed: int = 5, num_steps_opt: int = 300,
                     alpha: float = 0.01) -> ModuleFitCheck:
    """Fit :class:`ExponentialGrowthValue` by gradient ML and by TD(0) with Adam; sandwich tolerances."""
    mu, sigma, beta, T = 0.2, 0.4, 0.5, 1.0
    proc = geometric_brownian_motion(mu=mu, sigma=sigma)
    gen = torch.Generator().manual_seed(seed)
    t = uniform_grid(T, num_steps)
    x0 = torch.exp(0.3 * torch.randn((num_paths, 1), generator=gen, dtype=torch.float64))
    X = euler_maruyama(proc, x0, t, generator=gen)
    b = PathBatch(states=X, times=t, rewards=torch.zeros((num_paths, num_steps), dtype=torch.float64),
                  terminal_rewards=X[:, -1, 0] ** 2)
    dt = T / num_steps
    th_e = math.log((1 + mu * dt) ** 2 + sigma**2 * dt) / dt - beta
    z = float(norm.ppf(1 - alpha / 4))
    out = {}
    for method in ("ml", "td"):
        mod = ExponentialGrowthValue(T)
        fit_value_function(mod, b, beta=beta, method=method, num_steps=num_steps_opt, learning_rate=0.02)
        th = mod.theta.detach().clone()
        with torch.no_grad():
            psi = _module_estimating_functions(mod, b, beta=beta, method=method, theta=th)
            h = 1e-5
            H = (_module_estimating_functions(mod, b, beta=beta, method=method, theta=th + h).mean()
                 - _module_estimating_functions(mod, b, beta=beta, method=method, theta=th - h).mean()) / (2 * h)
        se = float(psi.std() / math.sqrt(num_paths) / H.abs())
        out[method] = (float(th), se, float((psi.mean() / H).abs()))
    ok = all(abs(v[0] - th_e) <= z * v[1] + v[2] for v in out.values())
    return ModuleFitCheck(theta_ml=out["ml"][0], theta_td=out["td"][0], se_ml=out["ml"][1], se_td=out["td"][1],
                          residual_ml=out["ml"][2], residual_td=out["td"][2], theta_euler=th_e,
                          theta_true=2 * mu + sigma**2 - beta, z=z, passed=bool(ok))


# ---------------------------------------------------------------------------
# ---------------------------------------------------------------------------
# (h) TD test weightings: same limit in the feature span, different variance
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TestWeightingCheck:
    r"""LSTD(0) under the three test weightings over independent replications (item (h)).

    Attributes
    ----------
    problems : tuple of str
    weightings : tuple of str
        ``("paper", "squared", "none")``.
    mean : dict[(problem, weighting)] -> ndarray [k]
        Mean estimate over the replications.
    std : dict[(problem, weighting)] -> ndarray [k]
        Standard deviation over the replications (one replication = ``num_paths`` paths).
    theta_euler : dict[problem] -> ndarray [k]
        Euler-chain value at the simulated mesh (exact large-sample limit of every weighting).
    variance_ratio : dict[(problem, weighting)] -> ndarray [k]
        ``std**2`` divided by that of ``"paper"``.
    estimates : dict[(problem, weighting)] -> ndarray [replications, k]
        Every replication's estimate (paired across weightings: same paths).
    max_abs_z : float
        Largest :math:`|\bar\theta - \theta_{Euler}|/(s/\sqrt{R})` over problems, weightings, coordinates.
    z : float
        Bonferroni two-sided critical value at ``alpha`` over all those comparisons.
    replications, num_paths, num_steps : int
    alpha : float
    passed : bool
        ``max_abs_z <= z``.
    """

    __test__ = False  # not a pytest class despite the name

    problems: tuple
    weightings: tuple
    mean: dict
    std: dict
    theta_euler: dict
    variance_ratio: dict
    estimates: dict
    max_abs_z: float
    z: float
    replications: int
    num_paths: int
    num_steps: int
    alpha: float
    passed: bool


def check_test_weightings(problems=("ou", "lq"), *, replications: int = 40, num_paths: int = 200, num_steps: int = 80,
                          alpha: float = 0.01, seed: int = 11) -> TestWeightingCheck:
    r"""LSTD(0) with each test weighting, replicated (item (h)); reference: the Euler-chain value (derived).

    Each replication simulates ``num_paths`` fresh paths; the three weightings
    are applied to the same paths (so their difference is the weighting's,
    not the sample's). The mean over replications is compared with the
    Euler-chain value with a t-free z tolerance (``replications`` >= 30; the
    LSTD ratio bias is :math:`O(1/\text{paths})`, far below the tolerance).
    """
    weightings = ("paper", "squared", "none")
    per = {}
    theta_e = {}
    for pi, name in enumerate(problems):
        prob = make_problem(name)
        dt = prob.horizon / num_steps
        theta_e[name] = np.asarray(prob.theta_euler(dt), dtype=float)
        gen = torch.Generator().manual_seed(seed * 1000 + pi)
        est = {w: [] for w in weightings}
        for _ in range(int(replications)):
            sim = simulate(prob, num_paths=num_paths, num_steps=num_steps, generator=gen)
            for w in weightings:
                f = lstd(sim.features, sim.batch, beta=prob.beta, offset=sim.offset, covariance=False, test_weighting=w)
                est[w].append(f.theta.numpy())
        for w in weightings:
            per[(name, w)] = np.asarray(est[w])
    total = sum(len(theta_e[p]) for p in problems) * len(weightings)
    z = float(norm.ppf(1 - alpha / (2 * total)))
    mean = {k: v.mean(0) for k, v in per.items()}
    std = {k: v.std(0, ddof=1) for k, v in per.items()}
    ratio = {(p, w): std[(p, w)] ** 2 / std[(p, "paper")] ** 2 for p in problems for w in weightings}
    zs = [np.max(np.abs(mean[(p, w)] - theta_e[p]) / (std[(p, w)] / math.sqrt(replications)))
          for p in problems for w in weightings]
    mz = float(max(zs))
    return TestWeightingCheck(problems=tuple(problems), weightings=weightings, mean=mean, std=std, theta_euler=theta_e,
                              variance_ratio=ratio, estimates=per, max_abs_z=mz, z=z, replications=int(replications),
                              num_paths=int(num_paths), num_steps=int(num_steps), alpha=alpha, passed=bool(mz <= z))


def main() -> int:
    torch.set_num_threads(1)
    s = derive_symbolically()
    print(f"(a) symbolic: passed={s.passed}; OU (a, b) = {s.ou_coefficients}; OU bias series = {s.ou_bias_series}; "
          f"MSTDE limit = {s.mstde_limit}; LQ Lyapunov residual = {s.lq_lyapunov_residual:.2e}")
    i = check_identities()
    print(f"(b) identities: passed={i.passed}; ML vs TD(1) {i.ml_vs_td1:.1e}; surrogate grads {i.surrogate_gradient}; "
          f"ML grad {i.ml_gradient:.1e}; offline TD vs LSTD {i.offline_td_vs_lstd:.1e}")
    r = check_recovery()
    print(f"(c) recovery: passed={r.passed} (z={r.z:.2f}, alpha={r.alpha}, paths={r.num_paths}, steps={r.num_steps})")
    for row in r.rows:
        print(f"    {row.problem:8s} {row.estimator:20s} theta={np.round(row.theta, 4)} euler={np.round(row.theta_euler, 4)} "
              f"true={np.round(row.theta_true, 4)} max|z|={row.max_z_euler:.2f} ok={row.passed_euler and row.passed_true}")
    m = check_mstde_bias()
    print(f"(d) MSTDE: passed={m.passed}; theta1 by mesh {np.round(m.mstde_theta1, 3)} (limit {m.limit_theta1:.3f}, truth 0); "
          f"ML {np.round(m.ml_theta1, 3)}; bias slope {m.bias_slope:.3f}")
    for rc in (check_mesh_rate(), check_paths_rate()):
        print(f"(e) {rc.name}: slope {rc.slope:.3f} (theory {rc.theory}, exact-curve {rc.exact_slope}) margin {rc.margin:.3f} "
              f"passed={rc.passed}; errors {np.round(rc.errors, 5)}")
    ic = check_td_lambda_interpolation()
    print(f"(f) TD(lambda): passed={ic.passed}; theta(lambda) {np.round(ic.theta, 4)}; TD(0) {ic.theta_td0:.4f} ML {ic.theta_ml:.4f}")
    mf = check_module_fit()
    print(f"(g) module fit: passed={mf.passed}; ML {mf.theta_ml:.4f} TD {mf.theta_td:.4f} Euler {mf.theta_euler:.4f} true {mf.theta_true:.4f}")
    tw = check_test_weightings()
    print(f"(h) test weightings: passed={tw.passed}; max|z| {tw.max_abs_z:.2f} (z={tw.z:.2f})")
    for (p, w), ratio in tw.variance_ratio.items():
        print(f"    {p:4s} {w:8s} mean {np.round(tw.mean[(p, w)], 4)} (Euler {np.round(tw.theta_euler[p], 4)}) "
              f"variance / paper's {np.round(ratio, 2)}")
    return 0 if all(x.passed for x in (s, i, r, m, ic, mf, tw)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
