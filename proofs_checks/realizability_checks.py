r"""Checks of :mod:`polab.theory.realizability`, :mod:`polab.theory.bellman_operators` and :mod:`polab.estimators.ope_linear`.

Each check returns a frozen result dataclass:

(a) :func:`check_identities`: on exact (population) batches, minimax objective
    = MSPBE, LSTD = FQE = cvxpy minimax = :math:`w^\star`, the telescoping
    identity, the estimators' plug-in :math:`\hat\alpha` = the theory's
    :math:`\alpha`, and on a sample, the empirical minimax objective = the
    empirical MSPBE.
(b) :func:`check_incompleteness_brute_force`: :math:`\alpha` from the
    generalised eigenproblem against the brute-force sup of
    :math:`\varepsilon_{loc}/\|\Phi w - T\Phi w\|` over random directions
    (computed from the definitions, not from the eigenproblem matrices), and
    :math:`C_{BE}` likewise.
(c) :func:`derive_two_state_alpha`: sympy re-derivation of the closed form of
    the two-state chain's :math:`\alpha` from the definitions.
(d) :func:`check_inherent_bellman_error`: the exact trust-region value against
    random points of the ball.
(e) :func:`check_bound_validity`: the realised LSTD value error against the
    bound over independent data sets; exact binomial test of "violation rate
    :math:`\le\delta`" and tightness.
(f) :func:`check_amplification`: on the two-state family with fixed design,
    the Monte Carlo mean squared value error against its exact value
    :math:`\sigma^2 f^\top\hat A^{-1}\hat G\hat A^{-\top}f/n` and the slope of
    log MSE against :math:`\log 1/(1-\alpha)` as :math:`\alpha\to1`.
(g) :func:`check_sample_rate`: the slope of log RMS error against log n (theory: -1/2).
(h) :func:`compare_with_inherent_bellman_error`: a realizable incomplete instance
    where the inherent-Bellman-error bound is vacuous at every n and the
    realizability bound is not, from some n on.
(i) :func:`check_non_realizable_reward`: the issue-13 example. With a
    non-realizable reward the generalised eigenvalue still gives 0.481 while
    the defining ratio reaches 0.94 at random points and exactly 1 at the TD
    fixed point; :func:`polab.theory.realizability.incompleteness_factor` now
    raises there.
(j) :func:`check_alpha_estimator_bias`: plug-in versus double-sampling
    (debiased) :math:`\hat\alpha` on a two-state chain with stochastic
    transitions, by exact enumeration of every data set of size n (no
    sampling): the plug-in converges to a biased limit, the debiased one to
    :math:`\alpha`, with exact expectations at n = 4, 8, 16.

Run ``python -m polab.proofs_checks.realizability_checks`` for a short report.

References
----------
Zanette, "When is Realizability Sufficient for Off-Policy Reinforcement
Learning?", ICML 2023, arXiv 2211.05311.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest

from polab.estimators.ope_linear import (
    expected_transitions,
    fitted_q_evaluation,
    incompleteness_factor_estimate,
    linear_policy_value,
    lstd_q,
    minimax_objective,
    minimax_pbe,
    projected_bellman_objective,
)
from polab.theory.bellman_operators import (
    FiniteMDP,
    next_policy_features,
    bellman_operator,
    minimax_objective as population_minimax_objective,
    occupancy,
    policy_transition_matrix,
    policy_value,
    projected_bellman_error,
    q_values,
    value_error_from_residual,
    weighted_projection,
)
from polab.theory.realizability import (
    concentrability,
    feature_scale,
    incompleteness_factor,
    incompleteness_ratio,
    realizability_residual,
    inherent_bellman_error,
    inherent_bellman_error_bound,
    realizability_bound,
    trivial_value_error_bound,
)

from .finite_mdp_families import (
    RealizableInstance,
    random_instance,
    sample_transitions,
    two_state_alpha,
    two_state_instance,
)

__all__ = [
    "FLOAT64_RTOL",
    "SOLVER_RTOL",
    "IdentityCheck",
    "check_identities",
    "BruteForceCheck",
    "check_incompleteness_brute_force",
    "TwoStateDerivation",
    "derive_two_state_alpha",
    "InherentErrorCheck",
    "check_inherent_bellman_error",
    "instance_factors",
    "BoundValidityCheck",
    "check_bound_validity",
    "AmplificationRow",
    "AmplificationCheck",
    "check_amplification",
    "SampleRateCheck",
    "check_sample_rate",
    "VacuityComparison",
    "compare_with_inherent_bellman_error",
    "NonRealizableExample",
    "check_non_realizable_reward",
    "AlphaEstimatorBias",
    "check_alpha_estimator_bias",
    "main",
]

#: float64 rounding allowance (STYLE.md: "float64 about 1e-10 relative").
FLOAT64_RTOL = 1e-10
#: cvxpy/Clarabel stops at relative gaps of 1e-8 (its default ``tol_gap_rel``); the solution is
#: then accurate to about the square root of that in the worst case, so 1e-6 relative.
SOLVER_RTOL = 1e-6


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


# ---------------------------------------------------------------------------
# (a) identities
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentityCheck:
    """Result of :func:`check_identities` (all errors relative, max over instances and test points).

    Attributes
    ----------
    instances : tuple of str
    minimax_vs_mspbe : float
        Population minimax objective (least squares) vs MSPBE (projection).
    lstd_vs_w_star, fqe_vs_w_star, minimax_vs_w_star : float
        Exact estimators against :math:`w^\\star` (FQE only where it converged).
    fqe_converged : tuple of bool
    telescoping : float
        :math:`\\mathbb{E}_{\\nu,\\pi}[q-Q^\\pi]` vs :math:`\\frac{1}{1-\\gamma}\\mathbb{E}_{d^\\pi}[q-Tq]`.
    alpha_plugin_vs_theory : float
        Absolute difference of :math:`\\alpha^2` (plug-in on the exact batch vs generalised eigenproblem).
    sample_minimax_vs_mspbe : float
        Empirical minimax objective (least squares) vs empirical MSPBE (closed form).
    passed : bool
    """

    instances: tuple
    minimax_vs_mspbe: float
    lstd_vs_w_star: float
    fqe_vs_w_star: float
    minimax_vs_w_star: float
    fqe_converged: tuple
    telescoping: float
    alpha_plugin_vs_theory: float
    sample_minimax_vs_mspbe: float
    passed: bool


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def check_identities(instances, *, num_points: int = 5, generator: np.random.Generator) -> IdentityCheck:
    """Identities 1-2 of :mod:`polab.theory.bellman_operators` and the estimators' exact versions."""
    rng = generator
    mm = ls = fq = mx = tel = al = sm = 0.0
    conv = []
    for inst in instances:
        phi, P, pi, mu, g = inst.features, inst.mdp, inst.policy, inst.mu, inst.gamma
        for _ in range(num_points):
            w = inst.w_star + rng.normal(size=inst.dim)
            a = population_minimax_objective(w, phi, P, pi, mu, gamma=g)
            b = projected_bellman_error(w, phi, P, pi, mu, gamma=g)
            mm = max(mm, abs(a - b) / max(1.0, abs(b)))
            q = phi @ w
            lhs = policy_value(q - q_values(P, pi, gamma=g), pi, inst.initial, P)
            rhs = value_error_from_residual(q, P, pi, inst.initial, gamma=g)
            tel = max(tel, abs(lhs - rhs) / max(1.0, abs(lhs)))
        batch = expected_transitions(P, pi, phi, mu)
        f, r, nf, wts = batch
        ls = max(ls, _rel(lstd_q(f, r, nf, gamma=g, weights=wts).weights.numpy(), inst.w_star))
        res = fitted_q_evaluation(f, r, nf, gamma=g, weights=wts, iterations=20000, tolerance=1e-14)
        conv.append(res.converged)
        if res.converged:
            fq = max(fq, _rel(res.weights.numpy(), inst.w_star))
        mx = max(mx, _rel(minimax_pbe(f, r, nf, gamma=g, weights=wts).weights.numpy(), inst.w_star))
        a_theory = incompleteness_factor(phi, P, pi, mu, gamma=g).alpha
        al = max(al, abs(float(incompleteness_factor_estimate(f, nf, gamma=g, weights=wts)) ** 2 - a_theory**2))
        data = sample_transitions(inst, 200, generator=rng)
        for _ in range(num_points):
            w = _t(inst.w_star + rng.normal(size=inst.dim))
            direct = float(minimax_objective(w, _t(data.phi), _t(data.reward), _t(data.next_phi), gamma=g))
            stats = lstd_q(_t(data.phi), _t(data.reward), _t(data.next_phi), gamma=g).statistics
            closed = float(projected_bellman_objective(w, stats))
            sm = max(sm, abs(direct - closed) / max(1.0, abs(closed)))
    passed = (mm <= FLOAT64_RTOL and ls <= FLOAT64_RTOL and fq <= 1e-9 and mx <= SOLVER_RTOL and tel <= FLOAT64_RTOL
              and al <= FLOAT64_RTOL and sm <= FLOAT64_RTOL)
    # fq: FQE stops at step 1e-14 (1 + |w|); the remaining error is step / (1 - rho), rho < 1, so 1e-9 allows rho up to 0.99999.
    # al compares alpha^2 (the eigenvalue): alpha = sqrt(lambda) turns a 1e-15 eigenvalue error at alpha = 0 into 3e-8.
    return IdentityCheck(instances=tuple(i.name for i in instances), minimax_vs_mspbe=mm, lstd_vs_w_star=ls,
                         fqe_vs_w_star=fq, minimax_vs_w_star=mx, fqe_converged=tuple(conv), telescoping=tel,
                         alpha_plugin_vs_theory=al, sample_minimax_vs_mspbe=sm, passed=passed)


# ---------------------------------------------------------------------------
# (b) brute force for alpha and C_BE
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BruteForceCheck:
    """Result of :func:`check_incompleteness_brute_force`.

    Attributes
    ----------
    alpha : float
        From the generalised eigenproblem.
    alpha_sampled_max : float
        max over random directions of :math:`\\varepsilon_{loc}/\\|\\Phi w-T\\Phi w\\|`.
    alpha_at_direction : float
        The same ratio at the eigen-direction (should equal ``alpha``).
    c_bellman, c_bellman_sampled_max, c_infinity : float
    num_directions : int
    passed : bool
        sampled max <= eigen value (1 + 1e-10) and the ratio at the eigen-direction equals it (1e-10),
        for both alpha and C_BE; C_BE <= C_inf.
    """

    alpha: float
    alpha_sampled_max: float
    alpha_at_direction: float
    c_bellman: float
    c_bellman_sampled_max: float
    c_infinity: float
    num_directions: int
    passed: bool


def _ratios(instance: RealizableInstance, U: np.ndarray):
    """Brute-force ratios from the definitions for directions U [k, d] (w = w* + u)."""
    phi, mdp, pi, mu, g = instance.features, instance.mdp, instance.policy, instance.mu, instance.gamma
    W = instance.w_star[None, :] + U
    Q = phi @ W.T  # [SA, k]
    TQ = bellman_operator(Q, mdp, pi, gamma=g)
    Pi = weighted_projection(phi, mu)
    loc = np.sqrt(mu @ (TQ - Pi @ TQ) ** 2)
    be2 = mu @ (Q - TQ) ** 2
    d = occupancy(mdp, pi, instance.initial, gamma=g)
    return loc / np.sqrt(be2), (d @ (Q - TQ) ** 2) / be2


def check_incompleteness_brute_force(instance: RealizableInstance, *, num_directions: int = 20000,
                                     generator: np.random.Generator) -> BruteForceCheck:
    """Eigenproblem values of :math:`\\alpha` and :math:`C_{BE}` against random directions."""
    phi, mdp, pi, mu, g = instance.features, instance.mdp, instance.policy, instance.mu, instance.gamma
    inc = incompleteness_factor(phi, mdp, pi, mu, gamma=g)
    con = concentrability(phi, mdp, pi, mu, instance.initial, gamma=g)
    U = generator.normal(size=(num_directions, instance.dim))
    ra, rc = _ratios(instance, U)
    at_dir, _ = _ratios(instance, inc.direction[None, :])
    # the maximiser of the C_BE ratio, from the same generalised eigenproblem
    from scipy.linalg import eigh

    Ppi = policy_transition_matrix(mdp, pi)
    psi = phi - g * Ppi @ phi
    vec = eigh(psi.T @ (con.occupancy[:, None] * psi), psi.T @ (mu[:, None] * psi))[1][:, -1]
    _, c_dir = _ratios(instance, vec[None, :])
    tol = 1 + FLOAT64_RTOL
    passed = (ra.max() <= inc.alpha * tol + 1e-12 and abs(at_dir[0] - inc.alpha) <= FLOAT64_RTOL * max(1, inc.alpha) + 1e-12
              and rc.max() <= con.c_bellman * tol and abs(c_dir[0] - con.c_bellman) <= FLOAT64_RTOL * max(1, con.c_bellman)
              and con.c_bellman <= con.c_infinity * tol)
    return BruteForceCheck(alpha=inc.alpha, alpha_sampled_max=float(ra.max()), alpha_at_direction=float(at_dir[0]),
                           c_bellman=con.c_bellman, c_bellman_sampled_max=float(rc.max()), c_infinity=con.c_infinity,
                           num_directions=num_directions, passed=passed)


# ---------------------------------------------------------------------------
# (c) sympy derivation for the two-state chain
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TwoStateDerivation:
    """Result of :func:`derive_two_state_alpha`.

    Attributes
    ----------
    alpha_squared : sympy expression
        Derived from the definitions (projection, Bellman operator) in :math:`\\mu_1,\\gamma`.
    one_minus_alpha_squared : sympy expression
        Simplified :math:`1-\\alpha^2`.
    matches_closed_form : bool
        The derivation minus the module's closed form simplifies to 0.
    critical_mu : sympy expression
        Root of :math:`1-\\alpha^2` in :math:`\\mu_1`.
    max_numeric_error : float
        :func:`two_state_alpha` vs :func:`polab.theory.realizability.incompleteness_factor` on a grid.
    passed : bool
    """

    alpha_squared: object
    one_minus_alpha_squared: object
    matches_closed_form: bool
    critical_mu: object
    max_numeric_error: float
    passed: bool


def derive_two_state_alpha(*, gammas=(0.7, 0.8, 0.9, 0.99)) -> TwoStateDerivation:
    """Derive :math:`\\alpha^2` of the two-state chain symbolically from the definitions."""
    m1, g = sp.symbols("mu1 gamma", positive=True)
    m2 = 1 - m1
    phi = sp.Matrix([1, 2])
    P = sp.Matrix([[0, 1], [0, 1]])
    D = sp.diag(m1, m2)
    Pi = phi * (phi.T * D * phi).inv() * phi.T * D
    I2 = sp.eye(2)
    num = ((I2 - Pi) * g * P * phi).T * D * ((I2 - Pi) * g * P * phi)
    den = ((I2 - g * P) * phi).T * D * ((I2 - g * P) * phi)
    a2 = sp.simplify(num[0] / den[0])
    closed = g**2 * (4 - (2 * m1 + 4 * m2) ** 2 / (m1 + 4 * m2)) / (m1 * (1 - 2 * g) ** 2 + 4 * m2 * (1 - g) ** 2)
    matches = sp.simplify(a2 - closed) == 0
    one_minus = sp.factor(sp.simplify(1 - a2))
    crit = sp.solve(sp.numer(sp.together(1 - a2)), m1)
    err = 0.0
    for gv in gammas:
        mc = 4 * (1 - gv) / (3 - 2 * gv)
        for mv in np.linspace(mc + 0.01, 0.99, 9):
            inst = two_state_instance(mu1=float(mv), gamma=gv)
            a = incompleteness_factor(inst.features, inst.mdp, inst.policy, inst.mu, gamma=gv).alpha
            err = max(err, abs(a - two_state_alpha(float(mv), gamma=gv)))
    crit_ok = any(sp.simplify(c - 4 * (1 - g) / (3 - 2 * g)) == 0 for c in crit)
    return TwoStateDerivation(alpha_squared=a2, one_minus_alpha_squared=one_minus, matches_closed_form=bool(matches),
                              critical_mu=crit, max_numeric_error=err,
                              passed=bool(matches) and crit_ok and err <= FLOAT64_RTOL)


# ---------------------------------------------------------------------------
# (d) inherent Bellman error
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class InherentErrorCheck:
    """Result of :func:`check_inherent_bellman_error`.

    Attributes
    ----------
    value : float
        Exact :math:`\\mathrm{IBE}_W`.
    sampled_max : float
        max of :math:`\\varepsilon_{loc}` over random points of the ball (boundary and interior).
    maximiser_norm, radius : float
    passed : bool
        sampled max <= value (1 + 1e-10), value - sampled max <= 1 % of value (random search
        resolution: with 20 000 points in d <= 3 the best point is within a few degrees of the maximiser),
        and the maximiser lies on the sphere.
    """

    value: float
    sampled_max: float
    maximiser_norm: float
    radius: float
    passed: bool


def check_inherent_bellman_error(instance: RealizableInstance, *, radius: float, num_points: int = 20000,
                                 generator: np.random.Generator) -> InherentErrorCheck:
    """Exact trust-region IBE against random points of the ball."""
    phi, mdp, pi, mu, g = instance.features, instance.mdp, instance.policy, instance.mu, instance.gamma
    ibe = inherent_bellman_error(phi, mdp, pi, mu, gamma=g, radius=radius)
    X = generator.normal(size=(num_points, instance.dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X *= radius * np.where(np.arange(num_points) % 2 == 0, 1.0, generator.random(num_points) ** (1 / instance.dim))[:, None]
    TQ = bellman_operator(phi @ X.T, mdp, pi, gamma=g)
    loc = np.sqrt(mu @ (TQ - weighted_projection(phi, mu) @ TQ) ** 2)
    nrm = float(np.linalg.norm(ibe.maximiser))
    passed = (loc.max() <= ibe.value * (1 + FLOAT64_RTOL) and ibe.value - loc.max() <= 0.01 * ibe.value
              and abs(nrm - radius) <= 1e-8 * max(1, radius))
    return InherentErrorCheck(value=ibe.value, sampled_max=float(loc.max()), maximiser_norm=nrm, radius=radius,
                              passed=passed)


# ---------------------------------------------------------------------------
# (e) bound validity
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BoundValidityCheck:
    """Result of :func:`check_bound_validity`.

    Attributes
    ----------
    num_draws, num_samples, violations : int
        Violations count draws where the realised error exceeds the bound.
    delta : float
        The bound's failure probability.
    pvalue : float
        Exact binomial test of H0 "violation rate <= delta" (alternative: greater).
    violation_rate_upper : float
        One-sided 95 % Clopper-Pearson upper limit of the violation rate.
    errors, bounds : ndarray, shape [num_draws]
    median_tightness : float
        Median of bound / error.
    trivial_bound : float
        Data-free bound at radius max ||w_hat|| (the bound is informative when below it).
    alpha, concentrability, scale : float
    """

    num_draws: int
    num_samples: int
    violations: int
    delta: float
    pvalue: float
    violation_rate_upper: float
    errors: np.ndarray
    bounds: np.ndarray
    median_tightness: float
    trivial_bound: float
    alpha: float
    concentrability: float
    scale: float


def instance_factors(instance: RealizableInstance):
    """(alpha, C_BE, K) of an instance."""
    phi, mdp, pi, mu, g = instance.features, instance.mdp, instance.policy, instance.mu, instance.gamma
    a = incompleteness_factor(phi, mdp, pi, mu, gamma=g).alpha
    c = concentrability(phi, mdp, pi, mu, instance.initial, gamma=g).c_bellman
    K = feature_scale(phi, mdp, pi, mu, gamma=g, reward_noise=instance.reward_noise)
    return a, c, K


def check_bound_validity(instance: RealizableInstance, *, num_samples: int, num_draws: int, delta: float,
                         generator: np.random.Generator) -> BoundValidityCheck:
    """Realised LSTD value error vs :func:`polab.theory.realizability.realizability_bound` over ``num_draws`` data sets."""
    a, c, K = instance_factors(instance)
    start = _t(instance.start_features)[None, :]
    errs, bnds = np.empty(num_draws), np.empty(num_draws)
    wmax = 0.0
    for k in range(num_draws):
        data = sample_transitions(instance, num_samples, generator=generator)
        res = lstd_q(_t(data.phi), _t(data.reward), _t(data.next_phi), gamma=instance.gamma)
        w = res.weights
        errs[k] = abs(float(linear_policy_value(w, start)) - instance.true_value)
        wn = float(torch.linalg.vector_norm(w))
        wmax = max(wmax, wn)
        bnds[k] = realizability_bound(num_samples, weight_norm=wn, alpha=a, concentrability=c, scale=K,
                                      dim=instance.dim, gamma=instance.gamma, delta=delta).value_error
    v = int(np.sum(errs > bnds))
    p = binomtest(v, num_draws, delta, alternative="greater").pvalue
    upper = float(beta_dist.ppf(0.95, v + 1, num_draws - v)) if v < num_draws else 1.0
    triv = trivial_value_error_bound(instance.features, instance.mdp, instance.policy, instance.initial,
                                     gamma=instance.gamma, radius=wmax)
    return BoundValidityCheck(num_draws=num_draws, num_samples=num_samples, violations=v, delta=delta, pvalue=float(p),
                              violation_rate_upper=upper, errors=errs, bounds=bnds,
                              median_tightness=float(np.median(bnds / np.maximum(errs, 1e-300))), trivial_bound=triv,
                              alpha=a, concentrability=c, scale=K)


# ---------------------------------------------------------------------------
# (f) amplification as alpha -> 1
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AmplificationRow:
    """One alpha of :func:`check_amplification`.

    Attributes
    ----------
    alpha : float
        Of the realised fixed design (counts / n).
    mse_mc, mse_se, mse_exact : float
        Monte Carlo mean squared value error, its standard error, and the exact value.
    z : float
        (mc - exact) / se.
    """

    alpha: float
    mse_mc: float
    mse_se: float
    mse_exact: float
    z: float


@dataclass(frozen=True)
class AmplificationCheck:
    """Result of :func:`check_amplification`.

    Attributes
    ----------
    rows : tuple of AmplificationRow
    slope_mse_exact, slope_mse_mc : float
        Least-squares slope of log MSE on log 1/(1 - alpha). Derived here for d = 1:
        MSE = sigma^2 / (n B (1 - alpha^2)) exactly (B the Bellman Gram scalar of the design),
        so the slope tends to 1 as alpha -> 1; over a finite alpha range B and 1 + alpha still
        vary, which ``slope_mse_exact`` shows.
    slope_normalised_mc : float
        Slope of log(MSE * B) on log 1/(1 - alpha^2): exactly 1 by the formula above.
    slope_rms_mc : float
        Half of ``slope_mse_mc``: the error grows like (1 - alpha)^(-1/2), not (1 - alpha)^(-1);
        the sample size needed for a given error grows like 1/(1 - alpha).
    max_abs_z : float
    z_limit : float
        Bonferroni two-sided normal quantile for ``family_alpha`` over the rows.
    family_alpha : float
    passed : bool
        All |z| <= z_limit; |slope_mse_mc - slope_mse_exact| <= 0.1 and |slope_normalised_mc - 1| <= 0.1
        (0.1 is about 3 standard errors of a slope fitted to 5 points whose log MSE has
        standard error ~0.07 each, se/mse at 400 draws).
    """

    rows: tuple
    slope_mse_exact: float
    slope_mse_mc: float
    slope_normalised_mc: float
    slope_rms_mc: float
    max_abs_z: float
    z_limit: float
    family_alpha: float
    passed: bool


def check_amplification(*, alphas=(0.9, 0.95, 0.98, 0.99, 0.995), gamma: float = 0.9, num_samples: int = 2000,
                        num_draws: int = 400, family_alpha: float = 1e-3,
                        generator: np.random.Generator) -> AmplificationCheck:
    """LSTD on the two-state chain with fixed design as alpha -> 1."""
    from scipy.stats import norm

    rows, bgram = [], []
    zlim = float(norm.ppf(1 - family_alpha / (2 * len(alphas))))
    for a in alphas:
        inst = two_state_instance(alpha=a, gamma=gamma)
        errs = np.empty(num_draws)
        start = _t(inst.start_features)[None, :]
        for k in range(num_draws):
            data = sample_transitions(inst, num_samples, generator=generator, design="fixed")
            res = lstd_q(_t(data.phi), _t(data.reward), _t(data.next_phi), gamma=gamma)
            errs[k] = float(linear_policy_value(res.weights, start)) - inst.true_value
        st = res.statistics  # the fixed design makes A and G identical in every draw
        A, G = st.td_matrix.numpy(), st.gram.numpy()
        f = inst.start_features
        x = np.linalg.solve(A.T, f)
        exact = inst.reward_noise**2 * float(x @ G @ x) / num_samples
        counts_mu = np.bincount(data.pair, minlength=2) / num_samples
        a_real = two_state_alpha(float(counts_mu[0]), gamma=gamma)
        mse = float(np.mean(errs**2))
        se = float(np.std(errs**2, ddof=1) / math.sqrt(num_draws))
        psi = inst.features[:, 0] - gamma * (np.array([2.0, 2.0]))  # (I - gamma P) phi, both states move to state 2
        bgram.append(float(counts_mu @ psi**2))
        rows.append(AmplificationRow(alpha=a_real, mse_mc=mse, mse_se=se, mse_exact=exact, z=(mse - exact) / se))
    lx = np.log([1 / (1 - r.alpha) for r in rows])
    s_ex = float(np.polyfit(lx, np.log([r.mse_exact for r in rows]), 1)[0])
    s_mc = float(np.polyfit(lx, np.log([r.mse_mc for r in rows]), 1)[0])
    lx2 = np.log([1 / (1 - r.alpha**2) for r in rows])
    s_norm = float(np.polyfit(lx2, np.log([r.mse_mc * b for r, b in zip(rows, bgram)]), 1)[0])
    mz = max(abs(r.z) for r in rows)
    passed = mz <= zlim and abs(s_mc - s_ex) <= 0.1 and abs(s_norm - 1) <= 0.1
    return AmplificationCheck(rows=tuple(rows), slope_mse_exact=s_ex, slope_mse_mc=s_mc, slope_normalised_mc=s_norm,
                              slope_rms_mc=s_mc / 2, max_abs_z=mz, z_limit=zlim, family_alpha=family_alpha,
                              passed=passed)


# ---------------------------------------------------------------------------
# (g) n^{-1/2} rate
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleRateCheck:
    """Result of :func:`check_sample_rate`.

    Attributes
    ----------
    sizes : tuple of int
    rms_errors : ndarray
    slope : float
        Of log RMS error on log n (theory -1/2).
    bound_slope : float
        Of log bound on log n (exactly -1/2 by construction, for reference).
    passed : bool
        |slope + 0.5| <= 0.1 (margin from the notes, section 5.5; with 200 draws the RMS has ~5 %
        relative standard error per size, so the slope's standard error is about 0.03).
    """

    sizes: tuple
    rms_errors: np.ndarray
    slope: float
    bound_slope: float
    passed: bool


def check_sample_rate(instance: RealizableInstance, *, sizes=(500, 1000, 2000, 4000, 8000), num_draws: int = 200,
                      generator: np.random.Generator) -> SampleRateCheck:
    """RMS value error of LSTD against n."""
    start = _t(instance.start_features)[None, :]
    rms = []
    for n in sizes:
        e = np.empty(num_draws)
        for k in range(num_draws):
            data = sample_transitions(instance, n, generator=generator)
            w = lstd_q(_t(data.phi), _t(data.reward), _t(data.next_phi), gamma=instance.gamma).weights
            e[k] = float(linear_policy_value(w, start)) - instance.true_value
        rms.append(math.sqrt(np.mean(e**2)))
    slope = float(np.polyfit(np.log(sizes), np.log(rms), 1)[0])
    a, c, K = instance_factors(instance)
    b = [realizability_bound(n, weight_norm=float(np.linalg.norm(instance.w_star)), alpha=a, concentrability=c, scale=K,
                             dim=instance.dim, gamma=instance.gamma, delta=0.1).value_error for n in sizes]
    bslope = float(np.polyfit(np.log(sizes), np.log(b), 1)[0])
    return SampleRateCheck(sizes=tuple(sizes), rms_errors=np.asarray(rms), slope=slope, bound_slope=bslope,
                           passed=abs(slope + 0.5) <= 0.1)


# ---------------------------------------------------------------------------
# (h) vacuous inherent-Bellman-error bound
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VacuityComparison:
    """Result of :func:`compare_with_inherent_bellman_error`.

    Attributes
    ----------
    alpha, inherent_error, radius, trivial_bound : float
    ibe_bound_limit : float
        :math:`\\sqrt{C}\\,\\mathrm{IBE}_W/(1-\\gamma)`, the :math:`n\\to\\infty` limit of the IBE bound.
    sizes : tuple of int
    realizability_bounds, ibe_bounds : ndarray
    first_informative_size : int or None
        Smallest n of ``sizes`` at which the realizability bound is below the trivial bound.
    ibe_vacuous_everywhere : bool
        The IBE bound's limit is at or above the trivial bound.
    """

    alpha: float
    inherent_error: float
    radius: float
    trivial_bound: float
    ibe_bound_limit: float
    sizes: tuple
    realizability_bounds: np.ndarray
    ibe_bounds: np.ndarray
    first_informative_size: int | None
    ibe_vacuous_everywhere: bool


def compare_with_inherent_bellman_error(instance: RealizableInstance, *, radius: float, delta: float = 0.1,
                                        sizes=tuple(10**k for k in range(2, 9))) -> VacuityComparison:
    """Both bounds on one realizable, incomplete instance over a range of n, for :math:`\\|\\hat w\\|\\le W`."""
    phi, mdp, pi, mu, g = instance.features, instance.mdp, instance.policy, instance.mu, instance.gamma
    a, c, K = instance_factors(instance)
    ibe = inherent_bellman_error(phi, mdp, pi, mu, gamma=g, radius=radius).value
    triv = trivial_value_error_bound(phi, mdp, pi, instance.initial, gamma=g, radius=radius)
    rb = np.array([realizability_bound(n, weight_norm=radius, alpha=a, concentrability=c, scale=K, dim=instance.dim,
                                       gamma=g, delta=delta).value_error for n in sizes])
    ib = np.array([inherent_bellman_error_bound(n, inherent_error=ibe, radius=radius, concentrability=c, scale=K,
                                                dim=instance.dim, gamma=g, delta=delta) for n in sizes])
    first = next((n for n, b in zip(sizes, rb) if b < triv), None)
    limit = math.sqrt(c) * ibe / (1 - g)
    return VacuityComparison(alpha=a, inherent_error=ibe, radius=radius, trivial_bound=triv, ibe_bound_limit=limit,
                             sizes=tuple(sizes), realizability_bounds=rb, ibe_bounds=ib, first_informative_size=first,
                             ibe_vacuous_everywhere=limit >= triv)


# ---------------------------------------------------------------------------
# (i) a non-realizable reward: the eigenvalue formula no longer computes the ratio
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NonRealizableExample:
    """Result of :func:`check_non_realizable_reward`.

    Attributes
    ----------
    alpha_formula : float
        The generalised-eigenvalue value (``check_realizability=False``), which ignores the reward.
    sampled_max_ratio : float
        Max of :math:`\\varepsilon_{loc}/\\|\\Phi w - T\\Phi w\\|` with the actual reward over random :math:`w`.
    ratio_at_td_fixed_point : float
        The ratio at the TD fixed point (derived: exactly 1).
    realizability_residual : float
    raised : bool
        Whether the checked :func:`polab.theory.realizability.incompleteness_factor` raised.
    message : str
    passed : bool
        raised, ratio at the TD fixed point = 1 to 1e-10, and the sampled max above the formula.
    """

    alpha_formula: float
    sampled_max_ratio: float
    ratio_at_td_fixed_point: float
    realizability_residual: float
    raised: bool
    message: str
    passed: bool


def check_non_realizable_reward(*, seed: int = 45, bump: float = 1.0, num_points: int = 20000, scale: float = 3.0,
                                generator: np.random.Generator | None = None) -> NonRealizableExample:
    """The issue-13 example: ``random_instance`` (seed 45; formula alpha 0.481) with :math:`r(s_0,a_0)` raised by ``bump``."""
    inst = random_instance(generator=np.random.default_rng(seed))
    r = inst.mdp.rewards.copy()
    r[0, 0] += bump
    mdp = FiniteMDP(transitions=inst.mdp.transitions, rewards=r)
    phi, pi, mu, g = inst.features, inst.policy, inst.mu, inst.gamma
    a_formula = incompleteness_factor(phi, mdp, pi, mu, gamma=g, check_realizability=False).alpha
    resid = realizability_residual(phi, mdp, pi, gamma=g)
    raised, msg = False, ""
    try:
        incompleteness_factor(phi, mdp, pi, mu, gamma=g)
    except ValueError as exc:
        raised, msg = True, str(exc)
    P = policy_transition_matrix(mdp, pi)
    A = phi.T @ (mu[:, None] * (phi - g * P @ phi))
    w_td = np.linalg.solve(A, phi.T @ (mu * r.reshape(-1)))
    at_td = incompleteness_ratio(w_td, phi, mdp, pi, mu, gamma=g)
    rng = generator if generator is not None else np.random.default_rng(0)
    W = scale * rng.normal(size=(num_points, phi.shape[1]))
    Q = phi @ W.T
    TQ = r.reshape(-1)[:, None] + g * (P @ Q)
    loc = np.sqrt(mu @ (TQ - weighted_projection(phi, mu) @ TQ) ** 2)
    sampled = float(np.max(loc / np.sqrt(mu @ (Q - TQ) ** 2)))
    passed = raised and abs(at_td - 1.0) <= FLOAT64_RTOL and sampled > a_formula
    return NonRealizableExample(alpha_formula=a_formula, sampled_max_ratio=sampled, ratio_at_td_fixed_point=at_td,
                                realizability_residual=resid, raised=raised, message=msg, passed=bool(passed))


# ---------------------------------------------------------------------------
# (j) bias of the plug-in and debiased alpha estimators, by exact enumeration
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AlphaEstimatorBias:
    """Result of :func:`check_alpha_estimator_bias`.

    Attributes
    ----------
    alpha : float
        Exact :math:`\\alpha` (:func:`polab.theory.realizability.incompleteness_factor`).
    plugin_limit : float
        Exact large-sample limit of the plug-in (Gram matrices inflated by :math:`\\gamma^2\\mathbb{E}\\,\\mathrm{Cov}`).
    plugin_on_population, debiased_on_population : float
        The library estimators applied to the population batch (weights = outcome probabilities).
    sizes : tuple of int
    expected_plugin, expected_debiased : tuple of float
        Exact :math:`\\mathbb{E}\\hat\\alpha` over all data sets of each size (the plug-in gets both next
        states as two transitions, so both use the same data).
    enumeration_vs_library : float
        Largest difference of :math:`\\hat\\alpha^2` between the enumerated closed form and the library functions
        over every data set of the smallest size.
    passed : bool
    """

    alpha: float
    plugin_limit: float
    plugin_on_population: float
    debiased_on_population: float
    sizes: tuple
    expected_plugin: tuple
    expected_debiased: tuple
    enumeration_vs_library: float
    passed: bool


def _compositions(n: int, k: int) -> np.ndarray:
    """All count vectors of length k summing to n, [C(n+k-1, k-1), k] (stars and bars)."""
    import itertools

    rows = []
    for bars in itertools.combinations(range(n + k - 1), k - 1):
        b = (-1,) + bars + (n + k - 1,)
        rows.append([b[i + 1] - b[i] - 1 for i in range(k)])
    return np.asarray(rows, dtype=np.int64)


def check_alpha_estimator_bias(*, sizes=(4, 8, 16), gamma: float = 0.5) -> AlphaEstimatorBias:
    """Exact bias of the plug-in and double-sampling :math:`\\hat\\alpha` (item (j)); reference values derived here.

    Chain: two states, one action, :math:`P=\\begin{pmatrix}0.3&0.7\\\\0.8&0.2\\end{pmatrix}`,
    :math:`\\phi=(1,1.5)`, :math:`\\mu=(\\tfrac12,\\tfrac12)`, reward making :math:`Q^\\pi=\\phi` (realizable).
    A sample is :math:`(s, s', s'')`, 8 outcomes; a data set of size n is a multinomial count vector.
    With :math:`d=1` the estimators are :math:`\\hat\\alpha^2=\\mathrm{clip}((\\hat N-\\hat C^2/\\hat G)/
    (\\hat G-2\\hat C+\\hat N),0,1)`, evaluated in closed form on every count vector and checked against
    the library (:func:`polab.estimators.ope_linear.incompleteness_factor_estimate`) on every data set of
    the smallest size.
    """
    from scipy.stats import multinomial

    P = np.zeros((2, 1, 2))
    P[0, 0] = [0.3, 0.7]
    P[1, 0] = [0.8, 0.2]
    phi = np.array([[1.0], [1.5]])
    pi = np.ones((2, 1))
    mu = np.array([0.5, 0.5])
    Ppi = P[:, 0, :]
    r = (phi[:, 0] - gamma * Ppi @ phi[:, 0]).reshape(2, 1)
    mdp = FiniteMDP(transitions=P, rewards=r)
    alpha = incompleteness_factor(phi, mdp, pi, mu, gamma=gamma).alpha
    nphi = next_policy_features(phi, pi, mdp)[:, 0]
    types = [(i, a, b) for i in range(2) for a in range(2) for b in range(2)]
    prob = np.array([mu[i] * Ppi[i, a] * Ppi[i, b] for i, a, b in types])
    f = np.array([phi[i, 0] for i, _, _ in types])
    n1 = np.array([nphi[a] for _, a, _ in types])
    n2 = np.array([nphi[b] for _, _, b in types])

    def closed_form(w):  # w [m, 8] -> (plug-in, debiased) [m]
        w = w / w.sum(1, keepdims=True)
        G = w @ f**2
        c1, c2 = w @ (gamma * f * n1), w @ (gamma * f * n2)
        Cp = 0.5 * (c1 + c2)  # plug-in on the 2n transitions (each next state a transition)
        Np = 0.5 * (w @ (gamma**2 * n1**2) + w @ (gamma**2 * n2**2))
        Nd = w @ (gamma**2 * n1 * n2)
        out = []
        for N in (Np, Nd):
            B = G - 2 * Cp + N
            a2 = np.clip((N - Cp**2 / G) / B, 0.0, 1.0)
            out.append(np.sqrt(a2))
        return out

    # exact limits: population weights; plug-in limit from the covariance-inflated Gram matrices (derived)
    cov = np.array([Ppi[i] @ nphi**2 - (Ppi[i] @ nphi) ** 2 for i in range(2)])
    G, C = mu @ phi[:, 0] ** 2, gamma * mu @ (phi[:, 0] * (Ppi @ nphi))
    N = gamma**2 * mu @ (Ppi @ nphi) ** 2
    Ninf = N + gamma**2 * mu @ cov
    plugin_limit = math.sqrt(min(max((Ninf - C**2 / G) / (G - 2 * C + Ninf), 0.0), 1.0))
    tt = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))  # noqa: E731
    F, N1, N2, W = tt(f[:, None]), tt(n1[:, None]), tt(n2[:, None]), tt(prob)
    pop_plug = float(incompleteness_factor_estimate(torch.cat([F, F]), torch.cat([N1, N2]), gamma=gamma,
                                                    weights=torch.cat([W, W])))
    pop_deb = float(incompleteness_factor_estimate(F, N1, gamma=gamma, weights=W, second_next_phi=N2))
    exp_p, exp_d, worst = [], [], 0.0
    for j, n in enumerate(sizes):
        counts = _compositions(int(n), 8)
        pmf = multinomial.pmf(counts, int(n), prob)
        ap, ad = closed_form(counts.astype(np.float64))
        exp_p.append(float(pmf @ ap))
        exp_d.append(float(pmf @ ad))
        if j == 0:
            for c, vp, vd in zip(counts, ap, ad):
                w = tt(c)
                lp = float(incompleteness_factor_estimate(torch.cat([F, F]), torch.cat([N1, N2]), gamma=gamma,
                                                          weights=torch.cat([w, w])))
                ld = float(incompleteness_factor_estimate(F, N1, gamma=gamma, weights=w, second_next_phi=N2))
                worst = max(worst, abs(lp**2 - vp**2), abs(ld**2 - vd**2))  # squares: sqrt amplifies rounding near 0
    bias_p = [e - alpha for e in exp_p]
    bias_d = [e - alpha for e in exp_d]
    passed = (abs(pop_deb - alpha) <= FLOAT64_RTOL and abs(pop_plug - plugin_limit) <= FLOAT64_RTOL
              and worst <= FLOAT64_RTOL and abs(bias_d[-1]) < abs(bias_p[-1])
              and all(abs(bias_d[i + 1]) < abs(bias_d[i]) for i in range(len(sizes) - 1)))
    return AlphaEstimatorBias(alpha=alpha, plugin_limit=plugin_limit, plugin_on_population=pop_plug,
                              debiased_on_population=pop_deb, sizes=tuple(int(n) for n in sizes),
                              expected_plugin=tuple(exp_p), expected_debiased=tuple(exp_d),
                              enumeration_vs_library=worst, passed=bool(passed))


def main(seed: int = 20230706) -> None:
    """Print a short report of all checks (one seed for the whole script)."""
    from .finite_mdp_families import lumpable_instance, tabular_instance

    rng = np.random.default_rng(seed)
    insts = [random_instance(generator=rng), tabular_instance(generator=rng), lumpable_instance(generator=rng),
             two_state_instance(alpha=0.9)]
    idc = check_identities(insts, generator=rng)
    print(f"(a) identities on {idc.instances}: passed={idc.passed}")
    print(f"    minimax=MSPBE {idc.minimax_vs_mspbe:.1e}, LSTD=w* {idc.lstd_vs_w_star:.1e}, FQE=w* {idc.fqe_vs_w_star:.1e} "
          f"(converged {idc.fqe_converged}), cvxpy minimax=w* {idc.minimax_vs_w_star:.1e}, telescoping {idc.telescoping:.1e}, "
          f"plug-in alpha^2 {idc.alpha_plugin_vs_theory:.1e}, sample minimax=MSPBE {idc.sample_minimax_vs_mspbe:.1e}")
    for inst in insts[:3]:
        bf = check_incompleteness_brute_force(inst, generator=rng)
        print(f"(b) {inst.name:9s} alpha eig {bf.alpha:.6f}, brute max {bf.alpha_sampled_max:.6f}, at eig direction "
              f"{bf.alpha_at_direction:.6f}; C_BE {bf.c_bellman:.4f} (brute {bf.c_bellman_sampled_max:.4f}) <= C_inf "
              f"{bf.c_infinity:.4f}: passed={bf.passed}")
    sy = derive_two_state_alpha()
    print(f"(c) sympy two-state: 1 - alpha^2 = {sy.one_minus_alpha_squared}; critical mu1 {sy.critical_mu}; "
          f"numeric err {sy.max_numeric_error:.1e}: passed={sy.passed}")
    ie = check_inherent_bellman_error(insts[0], radius=3.0, generator=rng)
    print(f"(d) IBE_3 exact {ie.value:.6f}, random max {ie.sampled_max:.6f}: passed={ie.passed}")
    bv = check_bound_validity(insts[0], num_samples=100000, num_draws=100, delta=0.1, generator=rng)
    print(f"(e) bound validity, n={bv.num_samples}, {bv.num_draws} draws, delta={bv.delta}: violations {bv.violations}, "
          f"binomial p {bv.pvalue:.3f}, 95% upper violation rate {bv.violation_rate_upper:.3f}; median bound/error "
          f"{bv.median_tightness:.0f}; median bound {np.median(bv.bounds):.3f} vs trivial {bv.trivial_bound:.3f}; "
          f"alpha {bv.alpha:.3f}, C_BE {bv.concentrability:.3f}, K {bv.scale:.2f}")
    am = check_amplification(generator=rng)
    print(f"(f) amplification (two-state, fixed design): slope log MSE vs log 1/(1-alpha): exact {am.slope_mse_exact:.3f}, "
          f"MC {am.slope_mse_mc:.3f} (RMS slope {am.slope_rms_mc:.3f}); log(MSE*B) vs log 1/(1-alpha^2) "
          f"{am.slope_normalised_mc:.3f} (theory 1); max |z| {am.max_abs_z:.2f} <= {am.z_limit:.2f}: "
          f"passed={am.passed}")
    for r in am.rows:
        print(f"    alpha {r.alpha:.4f}: MSE MC {r.mse_mc:.4e} +- {r.mse_se:.1e}, exact {r.mse_exact:.4e}")
    sr = check_sample_rate(insts[0], generator=rng)
    print(f"(g) rate: slope {sr.slope:.3f} (theory -0.5), bound slope {sr.bound_slope:.3f}: passed={sr.passed}")
    vc = compare_with_inherent_bellman_error(two_state_instance(alpha=0.9), radius=5.0)
    print(f"(h) two-state alpha={vc.alpha:.2f}, W={vc.radius}: IBE_W {vc.inherent_error:.3f}; IBE-bound limit "
          f"{vc.ibe_bound_limit:.2f} vs trivial {vc.trivial_bound:.2f} (vacuous everywhere: {vc.ibe_vacuous_everywhere}); "
          f"realizability bound informative from n={vc.first_informative_size}")
    for n, a, b in zip(vc.sizes, vc.realizability_bounds, vc.ibe_bounds):
        print(f"    n={n:>10d}: realizability {a:10.4f}   IBE {b:10.4f}")
    nr = check_non_realizable_reward()
    print(f"(i) non-realizable reward: formula alpha {nr.alpha_formula:.3f}, sampled max ratio {nr.sampled_max_ratio:.3f}, "
          f"ratio at the TD fixed point {nr.ratio_at_td_fixed_point:.12f}; checked function raised: {nr.raised}")
    eb = check_alpha_estimator_bias()
    print(f"(j) alpha estimators (exact enumeration): alpha {eb.alpha:.4f}, plug-in limit {eb.plugin_limit:.4f}")
    for n, p_, d_ in zip(eb.sizes, eb.expected_plugin, eb.expected_debiased):
        print(f"    n={n:3d}: E plug-in {p_:.4f} (bias {p_ - eb.alpha:+.4f}), E debiased {d_:.4f} (bias {d_ - eb.alpha:+.4f})")


if __name__ == "__main__":
    main()
