r"""Numerical and symbolic checks of :mod:`polab.theory.learnability` and of DUMP's scheduler.

Four checks, each returning a frozen result dataclass:

(a) :func:`check_enumeration`: the closed forms against
    :func:`polab.estimators.advantages.group_advantages` and
    :func:`polab.estimators.advantages.rloo_advantages` on every group of binary
    rewards with :math:`G = 2,\dots,64` and :math:`k = 0,\dots,G`, in float64.
(b) :func:`check_binomial_expectation`: a Monte Carlo mean of the group mean
    :math:`|A|` over groups with :math:`k\sim\mathrm{Bin}(G,p)` against the
    exact finite-sum expectation, within 4 standard errors; and the count of
    zero-variance groups against :math:`p^G+(1-p)^G` by an exact binomial test.
(c) :func:`derive_symbolically`: a sympy re-derivation of the closed forms
    (general :math:`G` and :math:`q`) and an exact rational check for small
    groups.
(d) :func:`check_stationary_allocation`: DUMP's sampling probabilities on
    fixed arms with known mean :math:`|a|` against the softmax of the known
    means plus the UCB bonus at the realised counts.

Run ``python -m polab.proofs_checks.learnability_checks`` for a short report.

References
----------
Wang, Cui, Li, Wan, Zhao, "DUMP: Automated Distribution-Level Curriculum
Learning for RL-based LLM Post-training", arXiv 2504.09710, 2025.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch
from scipy.stats import binomtest, norm

from polab.estimators.advantages import GRPO_CONVENTIONS, group_advantages, rloo_advantages
from polab.estimators.curriculum import DumpScheduler, dump_ucb_scores, tempered_softmax
from polab.theory.learnability import (
    binary_group_std,
    expected_mean_abs_group_advantage,
    expected_mean_abs_rloo_advantage,
    mean_abs_group_advantage,
    mean_abs_rloo_advantage,
    zero_variance_probability,
)

__all__ = [
    "FLOAT64_RTOL",
    "EnumerationCase",
    "EnumerationCheck",
    "enumerated_mean_abs_advantage",
    "check_enumeration",
    "MonteCarloRow",
    "MonteCarloCheck",
    "check_binomial_expectation",
    "SymbolicDerivation",
    "derive_symbolically",
    "StationaryAllocationCheck",
    "check_stationary_allocation",
    "main",
]

#: Relative rounding allowance for float64 arithmetic (STYLE.md: "float64 about 1e-10 relative").
FLOAT64_RTOL = 1e-10


# ---------------------------------------------------------------------------
# (a) exact enumeration
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EnumerationCase:
    r"""One (std convention, epsilon) case of :func:`check_enumeration`.

    Attributes
    ----------
    std : str
    epsilon : float
    max_rel_error_no_epsilon : float
        max over (G, k) with 0<k<G of :math:`|\bar A_{code} - \bar A_{(3)}| / \bar A_{(3)}`,
        the closed form (3) without epsilon.
    max_error_over_tolerance : float
        The same relative error divided by its tolerance
        :math:`\epsilon/s + 10^{-10}`; at most 1 when the check passes.
    max_rel_error_exact_epsilon : float
        max relative error against the exact-epsilon form (2)
        (tolerance ``FLOAT64_RTOL``), zero-variance groups included.
    passed : bool
    """

    std: str
    epsilon: float
    max_rel_error_no_epsilon: float
    max_error_over_tolerance: float
    max_rel_error_exact_epsilon: float
    passed: bool


@dataclass(frozen=True)
class EnumerationCheck:
    r"""Result of :func:`check_enumeration`.

    Attributes
    ----------
    group_sizes : tuple of int
    num_groups : int
        Groups enumerated per case, :math:`\sum_G (G+1)`.
    cases : tuple of EnumerationCase
    rloo_max_rel_error : float
        Against :func:`polab.theory.learnability.mean_abs_rloo_advantage`
        (tolerance ``FLOAT64_RTOL``, absolute where the value is 0).
    passed : bool
    """

    group_sizes: tuple[int, ...]
    num_groups: int
    cases: tuple[EnumerationCase, ...]
    rloo_max_rel_error: float
    passed: bool


def _enumerated_groups(group_sizes):
    """Every binary group: for each G and k, G rewards with the first k equal to 1."""
    rewards, ids, Gs, ks = [], [], [], []
    gid = 0
    for G in group_sizes:
        for k in range(G + 1):
            r = np.zeros(G)
            r[:k] = 1.0
            rewards.append(r)
            ids.append(np.full(G, gid))
            Gs.append(G)
            ks.append(k)
            gid += 1
    return (
        torch.as_tensor(np.concatenate(rewards), dtype=torch.float64),
        torch.as_tensor(np.concatenate(ids), dtype=torch.int64),
        np.asarray(Gs),
        np.asarray(ks),
    )


def _per_group_mean_abs(adv: torch.Tensor, ids: torch.Tensor, num_groups: int) -> np.ndarray:
    a = adv.abs().to(torch.float64)
    sums = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, ids, a)
    counts = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, ids, torch.ones_like(a))
    return (sums / counts).numpy()


def enumerated_mean_abs_advantage(
    group_size: int,
    *,
    estimator: str = "grpo",
    std: str = "unbiased",
    epsilon: float = GRPO_CONVENTIONS["verl"]["epsilon"],
) -> np.ndarray:
    r"""Group mean |advantage| computed by the core estimator for every k = 0..G.

    The groups are the explicit rewards :math:`(1,\dots,1,0,\dots,0)` with
    :math:`k` ones, passed in one call to
    :func:`polab.estimators.advantages.group_advantages` (``estimator="grpo"``,
    with ``std`` and ``epsilon``) or
    :func:`polab.estimators.advantages.rloo_advantages` (``estimator="rloo"``).
    These are the "exact enumeration" points plotted against the closed forms.

    Parameters
    ----------
    group_size : int, >= 2
    estimator : {"grpo", "rloo"}
    std : {"unbiased", "population"}
    epsilon : float

    Returns
    -------
    ndarray, shape [group_size + 1], float64
        Entry ``k`` is the mean of :math:`|A_i|` over the group with ``k`` successes.
    """
    G = int(group_size)
    if G < 2:
        raise ValueError(f"group_size must be >= 2; got {group_size}.")
    if estimator not in ("grpo", "rloo"):
        raise ValueError(f"estimator must be 'grpo' or 'rloo'; got {estimator!r}.")
    rewards, ids, _, _ = _enumerated_groups((G,))
    if estimator == "grpo":
        adv = group_advantages(rewards, ids, std=std, epsilon=epsilon).advantages
    else:
        adv = rloo_advantages(rewards, ids).advantages
    return _per_group_mean_abs(adv, ids, G + 1)


def check_enumeration(group_sizes=range(2, 65), *, conventions=("verl", "trl", "openrlhf")) -> EnumerationCheck:
    r"""Closed forms against the core estimators on every binary group, float64.

    For each std convention (unbiased, population) and each framework epsilon
    (``GRPO_CONVENTIONS``), every group with :math:`G` in ``group_sizes`` and
    :math:`0\le k\le G` successes is passed through
    :func:`polab.estimators.advantages.group_advantages` in one call, and the group
    mean of :math:`|A_i|` is compared with

    - the closed form without epsilon, (3) of :mod:`polab.theory.learnability`.
      Exactly, :math:`\bar A_{code}/\bar A_{(3)} = s/(s+\epsilon)`, so the
      relative error is :math:`\epsilon/(s+\epsilon)\le\epsilon/s`; the
      tolerance is :math:`\epsilon/s + 10^{-10}` (the second term is float64
      rounding, STYLE.md). With :math:`G\le 64` the smallest std is about
      0.124 (:math:`k=1`, :math:`G=64`), so the verl tolerance is at most
      about :math:`8\times10^{-6}`;
    - the exact-epsilon form (2), tolerance :math:`10^{-10}` relative.

    RLOO (:func:`polab.estimators.advantages.rloo_advantages`) is compared with (4)
    at :math:`10^{-10}` relative.

    Parameters
    ----------
    group_sizes : iterable of int, each >= 2
    conventions : iterable of {"verl", "trl", "openrlhf"}
        Supplies the epsilons.

    Returns
    -------
    EnumerationCheck
    """
    group_sizes = tuple(int(G) for G in group_sizes)
    if not group_sizes or min(group_sizes) < 2:
        raise ValueError(f"group_sizes must be non-empty with every G >= 2; got {group_sizes}.")
    rewards, ids, Gs, ks = _enumerated_groups(group_sizes)
    n = len(Gs)
    interior = (ks > 0) & (ks < Gs)
    cases = []
    for std in ("unbiased", "population"):
        s = np.asarray(binary_group_std(ks, Gs, std=std))
        closed = np.asarray(mean_abs_group_advantage(ks, Gs, std=std))
        for conv in conventions:
            eps = GRPO_CONVENTIONS[conv]["epsilon"]
            got = _per_group_mean_abs(group_advantages(rewards, ids, std=std, epsilon=eps).advantages, ids, n)
            exact = np.asarray(mean_abs_group_advantage(ks, Gs, std=std, epsilon=eps))
            rel = np.abs(got[interior] - closed[interior]) / closed[interior]
            tol = eps / s[interior] + FLOAT64_RTOL
            rel_exact = np.abs(got - exact) / np.maximum(np.abs(exact), 1.0)
            # zero-variance groups must give exactly 0
            zero_ok = bool(np.all(got[~interior] == 0.0))
            ok = bool(np.all(rel <= tol)) and bool(np.all(rel_exact <= FLOAT64_RTOL)) and zero_ok
            cases.append(
                EnumerationCase(
                    std=std,
                    epsilon=float(eps),
                    max_rel_error_no_epsilon=float(rel.max()),
                    max_error_over_tolerance=float((rel / tol).max()),
                    max_rel_error_exact_epsilon=float(rel_exact.max()),
                    passed=ok,
                )
            )
    got_rloo = _per_group_mean_abs(rloo_advantages(rewards, ids).advantages, ids, n)
    want_rloo = np.asarray(mean_abs_rloo_advantage(ks, Gs))
    rloo_rel = float((np.abs(got_rloo - want_rloo) / np.maximum(want_rloo, 1.0)).max())
    passed = all(c.passed for c in cases) and rloo_rel <= FLOAT64_RTOL
    return EnumerationCheck(
        group_sizes=group_sizes, num_groups=n, cases=tuple(cases), rloo_max_rel_error=rloo_rel, passed=passed
    )


# ---------------------------------------------------------------------------
# (b) Monte Carlo over k ~ Binomial(G, p)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MonteCarloRow:
    r"""One (estimator, G, p) setting of :func:`check_binomial_expectation`.

    Attributes
    ----------
    estimator : {"grpo", "rloo"}
    group_size, p : the setting
    exact : float
        The exact expectation (finite binomial sum, or :math:`2p(1-p)` for RLOO).
    mc_mean, standard_error : float
        Monte Carlo mean of the per-group mean |A| and its standard error
        (sample std with ddof=1 over groups, divided by sqrt(n_groups)).
    z : float
        (mc_mean - exact) / standard_error.
    zero_variance_count : int
        Groups with all rewards equal.
    zero_variance_pvalue : float
        Two-sided exact binomial test of that count against
        :math:`p^G+(1-p)^G`.
    passed : bool
        ``|z| <= z_crit`` and ``zero_variance_pvalue >= binomial_alpha``.
    """

    estimator: str
    group_size: int
    p: float
    exact: float
    mc_mean: float
    standard_error: float
    z: float
    zero_variance_count: int
    zero_variance_pvalue: float
    passed: bool


@dataclass(frozen=True)
class MonteCarloCheck:
    r"""Result of :func:`check_binomial_expectation`.

    Attributes
    ----------
    rows : tuple of MonteCarloRow
    n_groups : int
    z_crit : float
    alpha_per_comparison : float
        Two-sided normal level of ``|z| <= z_crit``: :math:`2(1-\Phi(z_{crit}))`.
    binomial_alpha : float
        Level of each exact binomial test.
    family_alpha : float
        Bonferroni bound on the chance that any assertion fails when every
        formula is right: ``len(rows) * (alpha_per_comparison + binomial_alpha)``
        (normal approximation for the means, exact for the counts).
    std, epsilon : the GRPO convention simulated
    passed : bool
    """

    rows: tuple[MonteCarloRow, ...]
    n_groups: int
    z_crit: float
    alpha_per_comparison: float
    binomial_alpha: float
    family_alpha: float
    std: str
    epsilon: float
    passed: bool


DEFAULT_MC_SETTINGS: tuple[tuple[int, float], ...] = tuple(
    (G, p) for G in (2, 4, 8, 16, 64) for p in (0.05, 0.3, 0.5, 0.9)
)


def check_binomial_expectation(
    settings=DEFAULT_MC_SETTINGS,
    *,
    n_groups: int = 10_000,
    std: str = "unbiased",
    epsilon: float = GRPO_CONVENTIONS["verl"]["epsilon"],
    z_crit: float = 4.0,
    binomial_alpha: float = 1e-4,
    generator: np.random.Generator,
) -> MonteCarloCheck:
    r"""Monte Carlo check of the binomial expectation of the mean |advantage|.

    For each :math:`(G, p)`, ``n_groups`` groups of :math:`G` Bernoulli(p)
    rewards are drawn with ``generator``, their GRPO and RLOO advantages are
    computed by the core estimators (one call each), and the mean over groups
    of the within-group mean :math:`|A_i|` is compared with
    :func:`polab.theory.learnability.expected_mean_abs_group_advantage` (same std
    and epsilon, so the expectation is exact) and
    :func:`polab.theory.learnability.expected_mean_abs_rloo_advantage`.

    The per-group values are i.i.d. and bounded, so the mean is
    asymptotically normal: the assertion :math:`|z|\le 4` has two-sided level
    :math:`2(1-\Phi(4))\approx 6.3\times10^{-5}` per comparison. The number
    of zero-variance groups is Binomial(n_groups, :math:`p^G+(1-p)^G`) and is
    tested exactly (``scipy.stats.binomtest``, two-sided, level
    ``binomial_alpha``). ``family_alpha`` is the Bonferroni total.

    Parameters
    ----------
    settings : iterable of (G, p), G >= 2, 0 < p < 1
    n_groups : int
    std : {"unbiased", "population"}
    epsilon : float
    z_crit : float
    binomial_alpha : float
    generator : numpy.random.Generator
        The only source of randomness.

    Returns
    -------
    MonteCarloCheck
    """
    if not isinstance(generator, np.random.Generator):
        raise ValueError("generator must be a numpy.random.Generator (e.g. np.random.default_rng(0)).")
    if int(n_groups) < 2:
        raise ValueError(f"n_groups must be >= 2 for a standard error; got {n_groups}.")
    rows = []
    for G, p in settings:
        G, p = int(G), float(p)
        if G < 2 or not 0.0 < p < 1.0:
            raise ValueError(f"each setting needs G >= 2 and 0 < p < 1; got (G, p) = ({G}, {p}).")
        r = (generator.random((n_groups, G)) < p).astype(np.float64)
        rewards = torch.as_tensor(r.ravel())
        ids = torch.arange(n_groups).repeat_interleave(G)
        zero_var = int(np.sum((r == r[:, :1]).all(axis=1)))
        pz = float(zero_variance_probability(p, G))
        pval = float(binomtest(zero_var, n_groups, pz).pvalue)
        for est in ("grpo", "rloo"):
            if est == "grpo":
                adv = group_advantages(rewards, ids, std=std, epsilon=epsilon).advantages
                exact = float(expected_mean_abs_group_advantage(p, G, std=std, epsilon=epsilon))
            else:
                adv = rloo_advantages(rewards, ids).advantages
                exact = float(expected_mean_abs_rloo_advantage(p, G))
            per_group = adv.abs().reshape(n_groups, G).mean(dim=1).numpy()
            mean = float(per_group.mean())
            se = float(per_group.std(ddof=1) / math.sqrt(n_groups))
            z = (mean - exact) / se if se > 0 else (0.0 if mean == exact else math.inf)
            ok = abs(z) <= z_crit and pval >= binomial_alpha
            rows.append(MonteCarloRow(est, G, p, exact, mean, se, float(z), zero_var, pval, bool(ok)))
    a = float(2.0 * norm.sf(z_crit))
    return MonteCarloCheck(
        rows=tuple(rows),
        n_groups=int(n_groups),
        z_crit=float(z_crit),
        alpha_per_comparison=a,
        binomial_alpha=float(binomial_alpha),
        family_alpha=len(rows) * (a + float(binomial_alpha)),
        std=std,
        epsilon=float(epsilon),
        passed=all(r.passed for r in rows),
    )


# ---------------------------------------------------------------------------
# (c) sympy derivation
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SymbolicDerivation:
    r"""Result of :func:`derive_symbolically` (sympy expressions in ``q``, ``G``, ``p``).

    Attributes
    ----------
    mean_abs_deviation : sympy.Expr
        :math:`\frac1G\sum_i|r_i-\bar r|`, derived: :math:`2q(1-q)`.
    variance_population : sympy.Expr
        Derived: :math:`q(1-q)`.
    mean_abs_unbiased, mean_abs_population, mean_abs_rloo : sympy.Expr
        The derived mean |A| for each convention (epsilon = 0).
    expected_rloo : sympy.Expr
        :math:`\mathbb{E}\,\overline{|A^{rloo}|}` under Bin(G, p), derived from
        the binomial moment generating function: :math:`2p(1-p)`.
    identities : dict[str, bool]
        Each derived expression equals the closed form of
        :mod:`polab.theory.learnability` (sympy ``simplify`` of the difference is 0).
    exact_cases_checked : int
        Small groups (G = 2..8, every k) whose mean |A| was computed in exact
        algebraic arithmetic from explicit 0/1 rewards and matched the closed
        forms exactly.
    passed : bool
    """

    mean_abs_deviation: sp.Expr
    variance_population: sp.Expr
    mean_abs_unbiased: sp.Expr
    mean_abs_population: sp.Expr
    mean_abs_rloo: sp.Expr
    expected_rloo: sp.Expr
    identities: dict
    exact_cases_checked: int
    passed: bool


def derive_symbolically(*, exact_group_sizes=range(2, 9)) -> SymbolicDerivation:
    r"""Re-derive the closed forms of :mod:`polab.theory.learnability` with sympy.

    Symbolic part (general :math:`G`, :math:`0<q<1`): with :math:`k = qG`
    successes (deviation :math:`1-q`) and :math:`G-k` failures (deviation
    :math:`-q`), sympy forms the mean absolute deviation and the variances,
    divides, and checks that the result equals (3) of the theory module. Since
    both sides are positive, equality of the squares (a rational identity,
    which ``simplify`` decides) is equivalent to equality. The RLOO
    expectation is derived from the moment generating function
    :math:`(1-p+pe^t)^G` of :math:`k`.

    Exact part: for each :math:`G` in ``exact_group_sizes`` and each :math:`k`,
    the advantages of the explicit rewards :math:`(1,\dots,1,0,\dots,0)` are
    computed in exact arithmetic (``sympy.Rational`` and ``sympy.sqrt``) and
    compared with the closed forms at that :math:`(k, G)`.

    Returns
    -------
    SymbolicDerivation
    """
    q, G, p, t = sp.symbols("q G p t", positive=True)
    k = q * G
    mad = sp.simplify((k * (1 - q) + (G - k) * q) / G)
    var_pop = sp.simplify((k * (1 - q) ** 2 + (G - k) * q**2) / G)
    var_unb = var_pop * G / (G - 1)
    a_unb = mad / sp.sqrt(var_unb)
    a_pop = mad / sp.sqrt(var_pop)
    a_rloo = G / (G - 1) * mad
    # closed forms claimed by polab.theory.learnability
    c_unb = 2 * sp.sqrt(q * (1 - q)) * sp.sqrt((G - 1) / G)
    c_pop = 2 * sp.sqrt(q * (1 - q))
    c_rloo = G / (G - 1) * 2 * q * (1 - q)
    # RLOO: leave-one-out baseline equals G/(G-1) times the deviation from the mean
    r_i, total = sp.symbols("r_i S")
    loo = sp.simplify((r_i - (total - r_i) / (G - 1)) - G / (G - 1) * (r_i - total / G))
    # binomial moments from the MGF, for symbolic G
    mgf = (1 - p + p * sp.exp(t)) ** G
    m1 = sp.simplify(sp.diff(mgf, t).subs(t, 0))
    m2 = sp.simplify(sp.diff(mgf, t, 2).subs(t, 0))
    e_q1q = sp.simplify(m1 / G - m2 / G**2)
    e_rloo = sp.simplify(G / (G - 1) * 2 * e_q1q)
    identities = {
        "mean_abs_deviation == 2q(1-q)": sp.simplify(mad - 2 * q * (1 - q)) == 0,
        "variance_population == q(1-q)": sp.simplify(var_pop - q * (1 - q)) == 0,
        "unbiased: (mad/s)^2 == closed^2": sp.simplify(a_unb**2 - c_unb**2) == 0,
        "population: (mad/s)^2 == closed^2": sp.simplify(a_pop**2 - c_pop**2) == 0,
        "rloo mean |A| == G/(G-1) 2q(1-q)": sp.simplify(a_rloo - c_rloo) == 0,
        "rloo leave-one-out == G/(G-1)(r - mean)": loo == 0,
        "E[q(1-q)] == p(1-p)(G-1)/G": sp.simplify(e_q1q - p * (1 - p) * (G - 1) / G) == 0,
        "E rloo mean |A| == 2p(1-p)": sp.simplify(e_rloo - 2 * p * (1 - p)) == 0,
    }
    n_exact = 0
    exact_ok = True
    for Gi in exact_group_sizes:
        Gi = int(Gi)
        for ki in range(Gi + 1):
            r = [sp.Integer(1)] * ki + [sp.Integer(0)] * (Gi - ki)
            mean = sp.Rational(ki, Gi)
            dev = [ri - mean for ri in r]
            ss = sum(d**2 for d in dev)
            mad_i = sum(abs(d) for d in dev) / Gi
            qi = sp.Rational(ki, Gi)
            want_unb = 2 * sp.sqrt(qi * (1 - qi)) * sp.sqrt(sp.Rational(Gi - 1, Gi))
            want_pop = 2 * sp.sqrt(qi * (1 - qi))
            if ss == 0:
                got_unb = got_pop = sp.Integer(0)
            else:
                got_unb = mad_i / sp.sqrt(ss / (Gi - 1))
                got_pop = mad_i / sp.sqrt(ss / Gi)
            got_rloo = sum(abs(sp.Rational(Gi, Gi - 1) * d) for d in dev) / Gi
            want_rloo = sp.Rational(Gi, Gi - 1) * 2 * qi * (1 - qi)
            for got, want in ((got_unb, want_unb), (got_pop, want_pop), (got_rloo, want_rloo)):
                exact_ok &= sp.simplify(got - want) == 0
            # the numeric closed forms of the theory module agree with the exact value
            for got, val in (
                (got_unb, mean_abs_group_advantage(ki, Gi, std="unbiased")),
                (got_pop, mean_abs_group_advantage(ki, Gi, std="population")),
                (got_rloo, mean_abs_rloo_advantage(ki, Gi)),
            ):
                exact_ok &= abs(float(got) - float(val)) <= FLOAT64_RTOL * max(1.0, abs(float(got)))
            n_exact += 1
    return SymbolicDerivation(
        mean_abs_deviation=mad,
        variance_population=var_pop,
        mean_abs_unbiased=sp.simplify(a_unb),
        mean_abs_population=sp.simplify(a_pop),
        mean_abs_rloo=sp.simplify(a_rloo),
        expected_rloo=e_rloo,
        identities=identities,
        exact_cases_checked=n_exact,
        passed=all(bool(v) for v in identities.values()) and bool(exact_ok),
    )


# ---------------------------------------------------------------------------
# (d) stationary allocation of DUMP on fixed arms
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StationaryAllocationCheck:
    r"""Result of :func:`check_stationary_allocation` (arrays in arm order).

    Attributes
    ----------
    means : ndarray [K]
        Known :math:`m_j = \mathbb{E}|a|` of each arm's advantage stream.
    counts : ndarray [K]
        Responses fed to each arm.
    window_means : ndarray [K]
        The scheduler's learnability estimates :math:`\hat L_j`.
    window_standard_errors : ndarray [K]
        :math:`\mathrm{sd}(|a_j|)/\sqrt{\min(W, n_j)}`, from the known stream law.
    window_z : ndarray [K]
        :math:`(\hat L_j - m_j)/\mathrm{SE}_j`.
    bonus : ndarray [K]
        UCB bonus at the realised counts.
    probabilities : ndarray [K]
        The scheduler's final probabilities.
    predicted : ndarray [K]
        :math:`\mathrm{softmax}((m + \mathrm{bonus})/\tau)`.
    softmax_of_means : ndarray [K]
        :math:`\mathrm{softmax}(m/\tau)`, the no-bonus limit.
    log_ratio : ndarray [K]
        :math:`|\log(p_j/\mathrm{predicted}_j)|`.
    log_ratio_tolerance : ndarray [K]
        :math:`z(\mathrm{SE}_j + \max_i \mathrm{SE}_i)/\tau` (derivation in
        :func:`check_stationary_allocation`).
    tv_to_predicted, tv_to_softmax_of_means : float
        Total-variation distances :math:`\frac12\sum_j|p_j - \cdot|`.
    arithmetic_max_abs_error : float
        max :math:`|p_j - \mathrm{softmax}((\hat L + \mathrm{bonus})/\tau)_j|`
        (scheduler arithmetic; tolerance 1e-12).
    z : float
    alpha_per_arm : float
        :math:`2(1-\Phi(z))`; ``K * alpha_per_arm`` bounds the family level.
    passed : bool
    """

    means: np.ndarray
    counts: np.ndarray
    window_means: np.ndarray
    window_standard_errors: np.ndarray
    window_z: np.ndarray
    bonus: np.ndarray
    probabilities: np.ndarray
    predicted: np.ndarray
    softmax_of_means: np.ndarray
    log_ratio: np.ndarray
    log_ratio_tolerance: np.ndarray
    tv_to_predicted: float
    tv_to_softmax_of_means: float
    arithmetic_max_abs_error: float
    z: float
    alpha_per_arm: float
    passed: bool


def check_stationary_allocation(
    means=(0.2, 0.4, 0.6, 0.8),
    *,
    n_samples: int = 100_000,
    batch: int = 100,
    half_width: float = 0.25,
    window: int = 300,
    exploration: float = 1.0,
    temperature: float = 0.1,
    z: float = 4.0,
    generator: np.random.Generator,
) -> StationaryAllocationCheck:
    r"""DUMP's allocation on fixed arms with known mean |advantage|.

    Arm :math:`j` emits i.i.d. signed advantages :math:`a = \sigma\,m_j U`
    with a fair random sign :math:`\sigma` and
    :math:`U\sim\mathrm{Uniform}(1-h, 1+h)`, so :math:`\mathbb{E}|a| = m_j`
    and :math:`\mathrm{sd}|a| = m_j h/\sqrt3`. Each step draws ``batch``
    arms from :class:`polab.estimators.curriculum.DumpScheduler`, feeds their
    advantages back, and repeats until ``n_samples`` responses were fed.

    Prediction. The scheduler's probabilities are
    :math:`p = \mathrm{softmax}((\hat L + b)/\tau)` with :math:`b` the UCB
    bonus at the realised counts. Replacing :math:`\hat L` by the known
    :math:`m` gives the prediction
    :math:`p^* = \mathrm{softmax}((m + b)/\tau)`; as :math:`N\to\infty` the
    bonus vanishes and :math:`p^*\to\mathrm{softmax}(m/\tau)`, but at
    :math:`N = 10^5` the bonus (order :math:`\sqrt{2\ln N/n_j}`) is still
    comparable to :math:`\tau`, so the no-bonus distance is only reported.

    Tolerance. With :math:`\Delta_j = \hat L_j - m_j`,
    :math:`\log p_i - \log p^*_i = \Delta_i/\tau - \log\sum_j p^*_j e^{\Delta_j/\tau}`
    and the log-sum-exp term lies in :math:`[\min_j\Delta_j/\tau, \max_j\Delta_j/\tau]`,
    so :math:`|\log(p_i/p^*_i)| \le (|\Delta_i| + \max_j|\Delta_j|)/\tau`.
    The window holds the last :math:`\min(W, n_j)` i.i.d. draws of arm
    :math:`j`, so :math:`|\Delta_j|\le z\,\mathrm{SE}_j` with
    :math:`\mathrm{SE}_j = m_j h/\sqrt{3\min(W,n_j)}` except with probability
    about :math:`2(1-\Phi(z))` per arm (normal approximation of a mean of
    300 bounded uniforms; :math:`z=4` gives :math:`6.3\times10^{-5}` per arm).
    Hence the tolerance :math:`z(\mathrm{SE}_i + \max_j \mathrm{SE}_j)/\tau`
    on :math:`|\log(p_i/p^*_i)|`, which holds whenever the window means do.

    Parameters
    ----------
    means : sequence of float, each > 0
    n_samples, batch : int
    half_width : float in (0, 1)
        :math:`h`.
    window, exploration, temperature : DumpScheduler settings (DUMP defaults).
    z : float
    generator : numpy.random.Generator
        Draws the advantages and seeds the ``torch.Generator`` that the
        scheduler's ``sample`` requires.

    Returns
    -------
    StationaryAllocationCheck
    """
    if not isinstance(generator, np.random.Generator):
        raise ValueError("generator must be a numpy.random.Generator (e.g. np.random.default_rng(0)).")
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 1 or m.size < 2 or np.any(m <= 0) or not np.all(np.isfinite(m)):
        raise ValueError(f"means must be a 1-d sequence of at least 2 finite positive values; got {means}.")
    if not 0.0 < half_width < 1.0:
        raise ValueError(f"half_width must lie in (0, 1); got {half_width}.")
    if int(batch) < 1 or int(n_samples) < int(batch):
        raise ValueError(f"need batch >= 1 and n_samples >= batch; got batch={batch}, n_samples={n_samples}.")
    K = m.size
    sched = DumpScheduler(
        [f"arm{j}" for j in range(K)], window=window, exploration=exploration, temperature=temperature
    )
    tgen = torch.Generator().manual_seed(int(generator.integers(0, 2**62)))
    for _ in range(int(n_samples) // int(batch)):
        arms = sched.sample(int(batch), generator=tgen).numpy()
        mags = m[arms] * generator.uniform(1.0 - half_width, 1.0 + half_width, size=arms.size)
        signs = np.where(generator.random(arms.size) < 0.5, -1.0, 1.0)
        sched.update(arms, signs * mags)

    counts = sched.counts.astype(np.float64)
    L = sched.learnability()
    probs = sched.probabilities()
    scores = sched.scores()
    bonus = scores - L
    se = m * half_width / np.sqrt(3.0 * np.maximum(np.minimum(window, counts), 1.0))
    window_z = (L - m) / se
    predicted = tempered_softmax(m + bonus, temperature=temperature)
    no_bonus = tempered_softmax(m, temperature=temperature)
    log_ratio = np.abs(np.log(probs) - np.log(predicted))
    tol = z * (se + se.max()) / temperature
    arith = float(np.max(np.abs(probs - tempered_softmax(
        dump_ucb_scores(L, counts, exploration=exploration), temperature=temperature))))
    passed = bool(np.all(np.abs(window_z) <= z)) and bool(np.all(log_ratio <= tol)) and arith <= 1e-12
    return StationaryAllocationCheck(
        means=m,
        counts=counts,
        window_means=L,
        window_standard_errors=se,
        window_z=window_z,
        bonus=bonus,
        probabilities=probs,
        predicted=predicted,
        softmax_of_means=no_bonus,
        log_ratio=log_ratio,
        log_ratio_tolerance=tol,
        tv_to_predicted=float(0.5 * np.abs(probs - predicted).sum()),
        tv_to_softmax_of_means=float(0.5 * np.abs(probs - no_bonus).sum()),
        arithmetic_max_abs_error=arith,
        z=float(z),
        alpha_per_arm=float(2.0 * norm.sf(z)),
        passed=passed,
    )


# ---------------------------------------------------------------------------
# script entry
# ---------------------------------------------------------------------------
def main(seed: int = 20250415) -> None:
    """Print a short report of the four checks (one seed for the whole script)."""
    rng = np.random.default_rng(seed)
    np.set_printoptions(precision=4, suppress=True)
    en = check_enumeration()
    print(f"(a) enumeration, G in {en.group_sizes[0]}..{en.group_sizes[-1]} ({en.num_groups} groups): passed={en.passed}")
    for c in en.cases:
        print(
            f"    {c.std:10s} eps={c.epsilon:.0e}: max rel err vs (3) {c.max_rel_error_no_epsilon:.2e} "
            f"(= {c.max_error_over_tolerance:.3f} x tolerance eps/s), vs exact-eps (2) {c.max_rel_error_exact_epsilon:.1e}"
        )
    print(f"    RLOO max rel err {en.rloo_max_rel_error:.1e}")
    mc = check_binomial_expectation(generator=rng)
    worst = max(mc.rows, key=lambda r: abs(r.z))
    print(
        f"(b) Monte Carlo, {len(mc.rows)} comparisons x {mc.n_groups} groups: passed={mc.passed}; "
        f"max |z| = {abs(worst.z):.2f} ({worst.estimator}, G={worst.group_size}, p={worst.p}); "
        f"min zero-variance p-value {min(r.zero_variance_pvalue for r in mc.rows):.3f}; "
        f"alpha per comparison {mc.alpha_per_comparison:.1e}, family {mc.family_alpha:.1e}"
    )
    sy = derive_symbolically()
    print(f"(c) sympy: passed={sy.passed}; mean|A| unbiased = {sy.mean_abs_unbiased}; E|A_rloo| = {sy.expected_rloo}; "
          f"{sy.exact_cases_checked} exact small groups")
    st = check_stationary_allocation(generator=rng)
    print(f"(d) DUMP stationary allocation: passed={st.passed}")
    print(f"    counts              {st.counts.astype(int)}")
    print(f"    window means        {st.window_means}  (known {st.means})")
    print(f"    probabilities       {st.probabilities}")
    print(f"    softmax((m+b)/tau)  {st.predicted}   TV {st.tv_to_predicted:.4f}")
    print(f"    softmax(m/tau)      {st.softmax_of_means}   TV {st.tv_to_softmax_of_means:.4f}")
    print(f"    |log ratio| / tol   {st.log_ratio / st.log_ratio_tolerance}")


if __name__ == "__main__":
    main()
