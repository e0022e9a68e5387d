r"""Checks of :mod:`polab.theory.policy_smoothing` and :mod:`polab.estimators.smoothing_certificates`.

Each check returns a frozen result dataclass with a ``passed`` flag:

(a) :func:`check_half_space_identity`: the half-space identity
    :math:`P[\langle u, z+Bu\rangle\le\sigma\Phi^{-1}(p)] = \Phi(\Phi^{-1}(p)-B/\sigma)`
    derived by sympy, and checked in float64 against an independent
    one-dimensional quadrature for random directions in :math:`d=2`; every
    other shift of norm :math:`\le B` gives a larger probability.
(b) :func:`check_linear_worst_case`: a sequential environment whose event is
    a half-space of the whole noise sequence (the agent sums its observations):
    the static attack along :math:`-(1,\dots,1)` attains the bound exactly, and
    a step-by-step simulation of that attack agrees (exact binomial test).
(c) :func:`check_sequential_attacks`: small sequential problems with binary
    actions, where the optimal adaptive attack is computed by dynamic
    programming over (action history, remaining budget). Every strategy the
    DP considers is a valid adaptive attack and the DP value is its exact
    value, so the DP value is an upper bound on the true optimum that
    converges to it as the budget grid is refined; it must never fall below
    the certificate, for the tail probabilities and for the expected reward.
    The best *static* attack (exact value, searched over a grid of the
    sphere) is reported next to it.
(d) :func:`check_naive_static_bound`: the "XOR" problem, in which the agent
    is rewarded when its two actions agree. The best static attack leaves the
    reward probability at :math:`2\Phi(B/\sigma\sqrt2)\Phi(-B/\sigma\sqrt2)`,
    an adaptive attack (push the second observation against the sign of the
    first) brings it down to :math:`\Phi(-B/\sigma) = f_B(1/2)`, the bound. So
    a robustness number computed against non-adaptive adversaries of the
    policy at hand is not a certificate, while (1) of the theory module holds
    and is attained.
(e) :func:`check_coverage`: repeated certification from :math:`n` sampled
    returns of a problem with exactly known return law; the certificate must
    be below the population certificate (hence below every attacked value) in
    at least :math:`1-\alpha` of the repetitions (exact one-sided binomial
    test), and its gap to the exact optimal adaptive attack is reported.

Run ``python -m polab.proofs_checks.smoothing_checks`` for a short report.

References
----------
Kumar, Levine, Feizi, "Policy Smoothing for Provably Robust Reinforcement
Learning", ICLR 2022 (arXiv 2106.11420).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch
from scipy import integrate
from scipy.special import ndtr, ndtri
from scipy.stats import binomtest

from polab.estimators.smoothing_certificates import certify_returns
from polab.theory.policy_smoothing import (
    adaptive_np_bound,
    certified_expected_reward,
    half_space_probability,
)

__all__ = [
    "FLOAT64_RTOL",
    "HalfSpaceCheck",
    "check_half_space_identity",
    "LinearWorstCaseCheck",
    "check_linear_worst_case",
    "BinaryTreeProblem",
    "compounding_errors_problem",
    "xor_problem",
    "return_distribution",
    "optimal_adaptive_attack",
    "best_static_attack",
    "SequentialAttackCheck",
    "check_sequential_attacks",
    "NaiveStaticBoundCheck",
    "check_naive_static_bound",
    "CoverageCheck",
    "check_coverage",
    "main",
]

#: Relative rounding allowance for float64 arithmetic (STYLE.md: "float64 about 1e-10 relative").
FLOAT64_RTOL = 1e-10


# ---------------------------------------------------------------------------
# (a) half-space identity
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HalfSpaceCheck:
    """Result of :func:`check_half_space_identity`.

    Attributes
    ----------
    symbolic_identity : bool
        sympy simplifies the shifted half-space probability minus the bound to 0.
    max_abs_error_quadrature : float
        Largest |quadrature - bound| over the (p, B, direction) grid.
    min_margin_other_shifts : float
        Smallest (probability under a random shift of norm <= B) - bound; >= 0.
    num_cases : int
    passed : bool
    """

    symbolic_identity: bool
    max_abs_error_quadrature: float
    min_margin_other_shifts: float
    num_cases: int
    passed: bool


def _symbolic_half_space() -> bool:
    x, B, c = sp.symbols("x B c", real=True)
    s = sp.Symbol("sigma", positive=True)
    density = sp.exp(-x**2 / (2 * s**2)) / (s * sp.sqrt(2 * sp.pi))
    # P[z + B <= c] for z ~ N(0, sigma^2), with c = sigma * Phi^{-1}(p) kept symbolic as c
    prob = sp.integrate(density, (x, -sp.oo, c - B))
    Phi = lambda v: (1 + sp.erf(v / sp.sqrt(2))) / 2  # noqa: E731
    return sp.simplify(prob - Phi(c / s - B / s)) == 0


def check_half_space_identity(
    *, ps=(0.05, 0.3, 0.5, 0.8, 0.99), budgets=(0.0, 0.1, 0.5, 1.5), sigma: float = 0.4, num_directions: int = 4,
    num_shifts: int = 200, generator: np.random.Generator,
) -> HalfSpaceCheck:
    r"""Half-space identity: sympy, quadrature in :math:`d=2`, and optimality of the shift along :math:`u`.

    For a unit :math:`u=(u_1,u_2)` with :math:`u_2\ne0`, the probability of
    :math:`\{u_1(z_1+\delta_1)+u_2(z_2+\delta_2)\le c\}` is computed as
    :math:`\int\varphi_\sigma(z_1)\,\Phi\big(\pm(c-u_1(z_1+\delta_1)-u_2\delta_2)/(|u_2|\sigma)\big)dz_1`
    by ``scipy.integrate.quad`` (absolute error ~1e-12), independent of the
    closed form.
    """
    errs, margins, cases = [], [], 0
    for _ in range(num_directions):
        u = generator.normal(size=2)
        u /= np.linalg.norm(u)
        for p in ps:
            c = sigma * ndtri(p)
            for B in budgets:
                delta = B * u

                def integrand(z1):
                    # P[u2 (z2 + d2) <= c - u1 (z1 + d1) | z1] = Phi((c - u1 (z1 + d1) - u2 d2) / (|u2| sigma)) for either sign of u2
                    inner = (c - u[0] * (z1 + delta[0]) - u[1] * delta[1]) / (abs(u[1]) * sigma)
                    return math.exp(-z1**2 / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi)) * ndtr(inner)

                quad, _ = integrate.quad(integrand, -12 * sigma, 12 * sigma, epsabs=1e-13, epsrel=1e-12, limit=200)
                bound = float(adaptive_np_bound(p, budget=B, sigma=sigma))
                errs.append(abs(quad - bound))
                # random shifts of norm <= B never do better than B*u
                d = generator.normal(size=(num_shifts, 2))
                d *= (B * generator.uniform(size=(num_shifts, 1)) ** 0.5) / np.linalg.norm(d, axis=1, keepdims=True)
                margins.append(float(np.min(half_space_probability(c, u, d, sigma=sigma)) - bound))
                cases += 1
    sym = _symbolic_half_space()
    max_err, min_margin = float(max(errs)), float(min(margins))
    return HalfSpaceCheck(sym, max_err, min_margin, cases, bool(sym and max_err < 1e-10 and min_margin >= -1e-15))


# ---------------------------------------------------------------------------
# (b) linear worst case in a sequential environment
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearWorstCaseCheck:
    r"""Result of :func:`check_linear_worst_case`.

    Attributes
    ----------
    steps, sigma, budget, p_clean : problem parameters
    bound : float
        :math:`f_B(p)`.
    exact_attacked : float
        Closed form of the static attack along :math:`-(1,\dots,1)/\sqrt T`:
        :math:`\Phi((c - B\sqrt T)/(\sigma\sqrt T))`.
    simulated_hits, num_episodes : int
        Step-by-step simulation of the attacked episodes.
    pvalue : float
        Two-sided exact binomial test of the simulated count against ``bound``.
    passed : bool
        ``|exact - bound| <= 1e-10`` and ``pvalue > test_alpha``.
    """

    steps: int
    sigma: float
    budget: float
    p_clean: float
    bound: float
    exact_attacked: float
    simulated_hits: int
    num_episodes: int
    pvalue: float
    test_alpha: float
    passed: bool


def check_linear_worst_case(
    *, steps: int = 5, sigma: float = 0.5, budget: float = 0.8, p_clean: float = 0.9, num_episodes: int = 20000,
    test_alpha: float = 1e-3, generator: np.random.Generator,
) -> LinearWorstCaseCheck:
    r"""Tightness: the episode event :math:`\{\sum_t y_t \ge -c\}` under a per-step static attack.

    The agent observes :math:`y_t = z_t + \epsilon_t` for :math:`T` steps and
    is rewarded iff :math:`\sum_t y_t \ge \sigma\sqrt T\,\Phi^{-1}(1-p)`,
    which has clean probability :math:`p`. The adversary subtracts
    :math:`B/\sqrt T` at every step (total norm :math:`B`), so
    :math:`\sum_t y_t \sim\mathcal N(-B\sqrt T, T\sigma^2)` and the reward
    probability is :math:`f_B(p)` exactly. The simulation draws every step's
    noise separately (it is the sequential environment, not the closed form).
    """
    T = int(steps)
    thr = sigma * math.sqrt(T) * ndtri(1 - p_clean)
    bound = float(adaptive_np_bound(p_clean, budget=budget, sigma=sigma))
    exact = float(ndtr((-thr - budget * math.sqrt(T)) / (sigma * math.sqrt(T))))
    total = np.zeros(num_episodes)
    spent = np.zeros(num_episodes)
    for _ in range(T):
        eps = -budget / math.sqrt(T)
        spent += eps**2
        total += generator.normal(scale=sigma, size=num_episodes) + eps
    assert np.all(spent <= budget**2 * (1 + 1e-12))
    hits = int(np.sum(total >= thr))
    pv = float(binomtest(hits, num_episodes, bound).pvalue)
    ok = abs(exact - bound) <= FLOAT64_RTOL and pv > test_alpha
    return LinearWorstCaseCheck(T, sigma, budget, p_clean, bound, exact, hits, num_episodes, pv, test_alpha, bool(ok))


# ---------------------------------------------------------------------------
# (c) small sequential problems with binary actions
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BinaryTreeProblem:
    r"""A :math:`T`-step problem with 1-d observations and binary actions.

    At step :math:`t` with action history :math:`h\in\{0,1\}^t` (encoded as
    the integer with the first action as the most significant bit), the agent
    observes :math:`y = o_h + \epsilon + z`, :math:`z\sim\mathcal N(0,\sigma^2)`,
    and takes action 1 iff :math:`y > 0`. The total reward is a function of
    the full history.

    Attributes
    ----------
    observations : tuple of arrays
        ``observations[t]`` has shape ``[2**t]``: the clean observation
        :math:`o_h` at each history of length :math:`t`.
    leaf_returns : array, shape [2**T]
        Total reward of each complete history.
    name : str
    """

    observations: tuple
    leaf_returns: np.ndarray
    name: str = ""

    @property
    def steps(self) -> int:
        return len(self.observations)


def compounding_errors_problem(*, steps: int = 4, margin: float = 0.6, penalty: float = 0.35) -> BinaryTreeProblem:
    r"""A corridor in which mistakes compound: :math:`o_h = \text{margin} - \text{penalty}\times\#\{\text{zeros in } h\}`.

    Action 1 is the correct one and earns reward 1, so the return is the
    number of correct actions, in :math:`\{0,\dots,T\}`. After a mistake the
    clean observation moves towards the decision boundary, which gives an
    adaptive adversary something to react to.
    """
    obs = []
    for t in range(steps):
        h = np.arange(2**t)
        zeros = t - np.array([bin(x).count("1") for x in h])
        obs.append(margin - penalty * zeros)
    leaves = np.array([bin(x).count("1") for x in range(2**steps)], dtype=np.float64)
    return BinaryTreeProblem(tuple(obs), leaves, f"compounding errors (T={steps})")


def xor_problem() -> BinaryTreeProblem:
    """Two steps with clean observation 0; reward 1 iff the two actions agree (clean probability 1/2)."""
    leaves = np.array([1.0, 0.0, 0.0, 1.0])  # histories 00, 01, 10, 11
    return BinaryTreeProblem((np.zeros(1), np.zeros(2)), leaves, "xor")


def _leaf_probabilities(problem: BinaryTreeProblem, shifts: np.ndarray, sigma: float) -> np.ndarray:
    """Probability of each complete history under static per-step shifts; shifts [S, T] -> [S, 2**T]."""
    S = shifts.shape[0]
    probs = np.ones((S, 1))
    for t, o in enumerate(problem.observations):
        q1 = ndtr((o[None, :] + shifts[:, t:t + 1]) / sigma)  # P(action 1) at each node, [S, 2**t]
        probs = np.stack([probs * (1 - q1), probs * q1], axis=-1).reshape(S, -1)
    return probs


def return_distribution(problem: BinaryTreeProblem, *, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact clean law of the total reward: (sorted support values, probabilities)."""
    probs = _leaf_probabilities(problem, np.zeros((1, problem.steps)), sigma)[0]
    values = np.unique(problem.leaf_returns)
    return values, np.array([probs[problem.leaf_returns == v].sum() for v in values])


def optimal_adaptive_attack(problem: BinaryTreeProblem, leaf_values, *, budget: float, sigma: float,
                            grid: int = 400) -> float:
    r"""Minimum over adaptive attacks of :math:`\mathbb E[g(\text{history})]`, by dynamic programming.

    State: (history :math:`h`, remaining budget :math:`r`), with :math:`r` on
    the grid :math:`r_j = B j/J`. At a state with :math:`r_j` the adversary
    picks :math:`\epsilon = \pm\sqrt{r_j^2 - r_i^2}` for some :math:`i\le j`, so
    that the remaining budget is exactly the grid point :math:`r_i`:

    .. math::

        V_t(h, r_j) = \min_{i\le j,\ \pm}\ q\,V_{t+1}(h1, r_i) + (1-q)\,V_{t+1}(h0, r_i),
        \qquad q = \Phi\big((o_h \pm\sqrt{r_j^2-r_i^2})/\sigma\big).

    Every such policy is a valid adaptive attack (its total squared norm
    telescopes to at most :math:`B^2`), and the DP value is its exact value,
    so the result is an upper bound on the optimum over all adaptive attacks
    that tends to it as :math:`J\to\infty`. Knowing the action history and
    the remaining budget is enough: the future depends on the past only
    through them.

    Parameters
    ----------
    problem : BinaryTreeProblem
    leaf_values : array, shape [2**T]
        :math:`g` at each complete history (e.g. an indicator of
        :math:`R\ge\nu`, or :math:`R` itself).
    budget, sigma : float
    grid : int
        :math:`J`.

    Returns
    -------
    float
    """
    r = budget * np.arange(grid + 1) / grid
    step = np.sqrt(np.maximum(r[:, None] ** 2 - r[None, :] ** 2, 0.0))  # [j, i] spend to go from r_j to r_i
    allowed = np.arange(grid + 1)[None, :] <= np.arange(grid + 1)[:, None]
    V = np.repeat(np.asarray(leaf_values, dtype=np.float64)[:, None], grid + 1, axis=1)  # [2**T, J+1]
    for t in reversed(range(problem.steps)):
        o = problem.observations[t]  # [2**t]
        V0, V1 = V[0::2], V[1::2]  # children h0, h1 of each node: [2**t, J+1] over r_i
        best = np.full((o.size, grid + 1), np.inf)
        for sgn in (-1.0, 1.0):
            q = ndtr((o[:, None, None] + sgn * step[None, :, :]) / sigma)  # [node, j, i]
            val = q * V1[:, None, :] + (1 - q) * V0[:, None, :]
            val = np.where(allowed[None], val, np.inf)
            best = np.minimum(best, val.min(axis=2))
        V = best
    return float(V[0, grid])


def best_static_attack(problem: BinaryTreeProblem, leaf_values, *, budget: float, sigma: float,
                       grid: int = 60) -> tuple[float, np.ndarray]:
    r"""Best non-adaptive attack :math:`(\epsilon_1,\dots,\epsilon_T)`, :math:`\|\epsilon\|= B`, by grid search.

    The sphere of radius :math:`B` is searched on a grid of hyperspherical
    angles (``grid`` points per angle, every sign included); each candidate's
    value is exact (enumeration of histories). Returns (value, shift).
    """
    T = problem.steps
    if T == 1:
        cands = np.array([[budget], [-budget]])
    else:
        angles = [np.linspace(0, np.pi, grid) for _ in range(T - 2)] + [np.linspace(0, 2 * np.pi, 2 * grid, endpoint=False)]
        mesh = np.stack([m.ravel() for m in np.meshgrid(*angles, indexing="ij")], axis=1)  # [S, T-1]
        cands = np.ones((mesh.shape[0], T))
        for k in range(T - 1):
            cands[:, k] *= np.cos(mesh[:, k])
            cands[:, k + 1:] *= np.sin(mesh[:, k])[:, None]
        cands *= budget
    vals = _leaf_probabilities(problem, cands, sigma) @ np.asarray(leaf_values, dtype=np.float64)
    k = int(np.argmin(vals))
    return float(vals[k]), cands[k]


@dataclass(frozen=True)
class SequentialAttackCheck:
    r"""Result of :func:`check_sequential_attacks` for one problem and one budget.

    Attributes
    ----------
    problem : str
    budget, sigma : float
    thresholds : ndarray, shape [m]
        Support values :math:`\nu` of the return above its minimum.
    p_clean : ndarray, shape [m]
        :math:`P_{clean}[R\ge\nu]` (exact).
    bound : ndarray, shape [m]
        :math:`f_B(p_{clean})`.
    adaptive : ndarray, shape [m]
        Optimal adaptive attack (DP) on :math:`P[R\ge\nu]`.
    static : ndarray, shape [m]
        Best static attack (grid search).
    expected_clean, expected_certificate, expected_adaptive, expected_static : float
        Clean mean, certificate (2) with exact tails, DP optimum and best
        static attack on :math:`\mathbb E R`.
    passed : bool
        ``adaptive >= bound`` and ``expected_adaptive >= expected_certificate``
        up to float64 rounding, and ``adaptive <= static`` up to the DP grid.
    """

    problem: str
    budget: float
    sigma: float
    thresholds: np.ndarray
    p_clean: np.ndarray
    bound: np.ndarray
    adaptive: np.ndarray
    static: np.ndarray
    expected_clean: float
    expected_certificate: float
    expected_adaptive: float
    expected_static: float
    passed: bool

    @property
    def tightness_gap(self) -> np.ndarray:
        """Optimal adaptive attack minus the bound, per threshold (>= 0)."""
        return self.adaptive - self.bound


def check_sequential_attacks(problem: BinaryTreeProblem, *, budget: float, sigma: float, grid: int = 400,
                             static_grid: int = 60) -> SequentialAttackCheck:
    """Exact/grid-search optimal attacks against the certificate in one small sequential problem."""
    values, probs = return_distribution(problem, sigma=sigma)
    lo = float(values[0])
    thr = values[1:]
    tails = np.array([probs[values >= v].sum() for v in thr])
    bound = np.asarray(adaptive_np_bound(tails, budget=budget, sigma=sigma), dtype=np.float64)
    adaptive, static = [], []
    for v in thr:
        g = (problem.leaf_returns >= v).astype(np.float64)
        adaptive.append(optimal_adaptive_attack(problem, g, budget=budget, sigma=sigma, grid=grid))
        static.append(best_static_attack(problem, g, budget=budget, sigma=sigma, grid=static_grid)[0])
    adaptive, static = np.array(adaptive), np.array(static)
    cert = float(certified_expected_reward(thr, tails, budget=budget, sigma=sigma, reward_min=lo))
    e_adapt = optimal_adaptive_attack(problem, problem.leaf_returns, budget=budget, sigma=sigma, grid=grid)
    e_static = best_static_attack(problem, problem.leaf_returns, budget=budget, sigma=sigma, grid=static_grid)[0]
    tol = 1e-12
    ok = (
        np.all(adaptive >= bound - tol)
        and e_adapt >= cert - tol * max(1.0, abs(cert))
        # the DP contains the static attacks whose per-step spends land on its grid; allow the grid's slack
        and np.all(adaptive <= static + 2.0 * budget / grid / sigma)
    )
    return SequentialAttackCheck(
        problem.name, float(budget), float(sigma), thr, tails, bound, adaptive, static,
        float(values @ probs), cert, e_adapt, e_static, bool(ok),
    )


# ---------------------------------------------------------------------------
# (d) a non-adaptive analysis is not a certificate
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NaiveStaticBoundCheck:
    r"""Result of :func:`check_naive_static_bound` (XOR problem).

    Attributes
    ----------
    budgets : ndarray, shape [K]
    sigma : float
    static_closed_form : ndarray, shape [K]
        :math:`2\Phi(b)\Phi(-b)`, :math:`b = B/(\sigma\sqrt2)`: the best static attack.
    static_search : ndarray, shape [K]
        Best static attack by grid search (agrees with the closed form).
    adaptive : ndarray, shape [K]
        Optimal adaptive attack (DP).
    bound : ndarray, shape [K]
        :math:`f_B(1/2) = \Phi(-B/\sigma)`.
    passed : bool
        adaptive equals the bound (to the DP grid), is strictly below the best
        static attack for every B > 0, and static search matches its closed form.
    """

    budgets: np.ndarray
    sigma: float
    static_closed_form: np.ndarray
    static_search: np.ndarray
    adaptive: np.ndarray
    bound: np.ndarray
    passed: bool


def check_naive_static_bound(*, budgets=(0.25, 0.5, 1.0, 2.0), sigma: float = 1.0, grid: int = 400) -> NaiveStaticBoundCheck:
    r"""Adaptive attacks beat the best static attack in the XOR problem, and attain (1).

    Closed forms (derived here): with static shifts :math:`(a, b)`,
    :math:`a^2+b^2\le B^2`, :math:`P[\text{agree}] = \Phi(a/\sigma)\Phi(b/\sigma)
    + \Phi(-a/\sigma)\Phi(-b/\sigma)`, minimised at :math:`a=-b=B/\sqrt2`.
    Adaptive: :math:`\epsilon_1=0`, then :math:`\epsilon_2 = -B\,\mathrm{sign}(y_1)`
    gives :math:`\Phi(-B/\sigma)`, which (1) says no attack can beat.
    """
    prob = xor_problem()
    B = np.asarray(budgets, dtype=np.float64)
    b = B / (sigma * math.sqrt(2))
    closed = 2 * ndtr(b) * ndtr(-b)
    search = np.array([best_static_attack(prob, prob.leaf_returns, budget=x, sigma=sigma, grid=720)[0] for x in B])
    adapt = np.array([optimal_adaptive_attack(prob, prob.leaf_returns, budget=x, sigma=sigma, grid=grid) for x in B])
    bound = np.asarray(adaptive_np_bound(0.5, budget=B, sigma=sigma))
    ok = (
        np.all(np.abs(search - closed) < 1e-4)  # angle grid of 720 points: error O((2 pi / 720)^2)
        and np.all(adapt >= bound - 1e-12)
        and np.all(adapt - bound < 1e-9)  # the optimal strategy is on the DP grid (i = j at step 1, i = 0 at step 2)
        and np.all(adapt < closed - 1e-3)
    )
    return NaiveStaticBoundCheck(B, float(sigma), closed, search, adapt, bound, bool(ok))


# ---------------------------------------------------------------------------
# (e) coverage of the statistical certificates
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CoverageCheck:
    r"""Result of :func:`check_coverage`.

    Attributes
    ----------
    method : str
    n, repetitions : int
    alpha : float
    budgets : ndarray, shape [K]
    population_certificate : ndarray, shape [K]
        Certificate (2) with the exact tails (the limit :math:`n\to\infty`).
    optimal_attack : ndarray, shape [K]
        Exact optimal adaptive attack on the expected reward (DP).
    failures : int
        Repetitions in which the sampled certificate exceeds the population
        certificate at some budget.
    pvalue : float
        One-sided exact binomial test of H0: failure rate <= alpha.
    mean_certificate : ndarray, shape [K]
    mean_gap_to_attack : ndarray, shape [K]
        Mean of (optimal attack - certificate): the tightness gap.
    passed : bool
        ``pvalue > test_alpha``, and no certificate ever above the optimal attack.
    """

    method: str
    n: int
    repetitions: int
    alpha: float
    budgets: np.ndarray
    population_certificate: np.ndarray
    optimal_attack: np.ndarray
    failures: int
    pvalue: float
    mean_certificate: np.ndarray
    mean_gap_to_attack: np.ndarray
    test_alpha: float
    passed: bool


def check_coverage(
    problem: BinaryTreeProblem | None = None, *, method: str = "dkw", n: int = 200, repetitions: int = 300,
    alpha: float = 0.1, budgets=(0.0, 0.2, 0.5, 1.0), sigma: float = 0.5, test_alpha: float = 0.01,
    generator: np.random.Generator,
) -> CoverageCheck:
    r"""Coverage of :func:`polab.estimators.smoothing_certificates.certify_returns` over repeated samples.

    Each repetition draws :math:`n` returns from the exact clean law of
    ``problem`` (default :func:`compounding_errors_problem`), certifies at
    every budget and records a failure if the certificate exceeds the
    population certificate anywhere. A failure-free event implies the
    certificate is below every attacked expected reward (theory module, (2)),
    so the failure rate must be at most :math:`\alpha`. Clopper–Pearson uses
    the support values as its fixed thresholds.
    """
    problem = problem or compounding_errors_problem()
    values, probs = return_distribution(problem, sigma=sigma)
    lo, hi = float(values[0]), float(values[-1])
    thr = values[1:]
    tails = np.array([probs[values >= v].sum() for v in thr])
    B = np.asarray(budgets, dtype=np.float64)
    pop = np.asarray(certified_expected_reward(thr, tails, budget=B, sigma=sigma, reward_min=lo))
    attack = np.array([optimal_adaptive_attack(problem, problem.leaf_returns, budget=b, sigma=sigma, grid=200) for b in B])
    fails, certs = 0, []
    above_attack = False
    for _ in range(repetitions):
        sample = generator.choice(values, size=n, p=probs)
        kw = dict(thresholds=thr) if method == "clopper-pearson" else {}
        c = certify_returns(torch.as_tensor(sample), budgets=B, sigma=sigma, alpha=alpha, reward_range=(lo, hi),
                            method=method, **kw)
        e = c.expected_reward.numpy()
        certs.append(e)
        fails += int(np.any(e > pop + FLOAT64_RTOL * max(1.0, abs(hi))))
        above_attack |= bool(np.any(e > attack + 1e-12))
    certs = np.array(certs)
    pv = float(binomtest(fails, repetitions, alpha, alternative="greater").pvalue)
    return CoverageCheck(
        method, n, repetitions, alpha, B, pop, attack, fails, pv, certs.mean(0), (attack - certs).mean(0), test_alpha,
        bool(pv > test_alpha and not above_attack),
    )


# ---------------------------------------------------------------------------
# script entry
# ---------------------------------------------------------------------------
def main(seed: int = 20220425) -> None:
    """Print a short report of the five checks (one seed for the whole script)."""
    rng = np.random.default_rng(seed)
    np.set_printoptions(precision=4, suppress=True)
    hs = check_half_space_identity(generator=rng)
    print(f"(a) half-space identity: passed={hs.passed}; sympy {hs.symbolic_identity}; "
          f"max |quad - bound| {hs.max_abs_error_quadrature:.1e} over {hs.num_cases} cases; "
          f"min margin of other shifts {hs.min_margin_other_shifts:.2e}")
    lw = check_linear_worst_case(generator=rng)
    print(f"(b) linear worst case (T={lw.steps}, sigma={lw.sigma}, B={lw.budget}, p={lw.p_clean}): passed={lw.passed}; "
          f"bound {lw.bound:.6f}, exact {lw.exact_attacked:.6f}, simulated {lw.simulated_hits / lw.num_episodes:.4f} "
          f"(binomial p-value {lw.pvalue:.3f})")
    for B in (0.3, 1.0):
        sq = check_sequential_attacks(compounding_errors_problem(), budget=B, sigma=0.5)
        print(f"(c) {sq.problem}, B={B}, sigma={sq.sigma}: passed={sq.passed}")
        print(f"    thresholds {sq.thresholds}\n    p_clean    {sq.p_clean}\n    bound      {sq.bound}\n"
              f"    adaptive   {sq.adaptive}\n    static     {sq.static}")
        print(f"    E[R]: clean {sq.expected_clean:.4f}, certificate {sq.expected_certificate:.4f}, "
              f"adaptive {sq.expected_adaptive:.4f}, static {sq.expected_static:.4f}")
    ns = check_naive_static_bound()
    print(f"(d) XOR problem, sigma={ns.sigma}: passed={ns.passed}")
    print(f"    B            {ns.budgets}\n    best static  {ns.static_closed_form}\n    adaptive     {ns.adaptive}\n"
          f"    bound (1)    {ns.bound}")
    for method in ("dkw", "clopper-pearson"):
        cv = check_coverage(method=method, generator=rng)
        print(f"(e) coverage {method}, n={cv.n}, {cv.repetitions} reps, alpha={cv.alpha}: passed={cv.passed}; "
              f"failures {cv.failures} (p-value {cv.pvalue:.3f})")
        print(f"    budgets {cv.budgets}\n    population cert {cv.population_certificate}\n"
              f"    optimal attack  {cv.optimal_attack}\n    mean cert       {cv.mean_certificate}")


if __name__ == "__main__":
    main()
