r"""Verification of the policy-gradient estimators and of N-PG-IGT / (N)-HARPG on problems with a known optimum.

Checks (each returns a frozen result dataclass):

(a) :func:`check_estimator_unbiasedness`: Monte Carlo means of the core
    gradient estimate and of the Hessian-vector estimate
    (:func:`polab.estimators.pg_gradients.hessian_vector_estimate`) against the
    exact :math:`\nabla J` and :math:`\nabla^2J\,v`, by Hotelling's
    :math:`T^2` test; plus a negative control (the estimate without its
    score term :math:`\nabla\Phi\,\nabla\log p^\top v`, which is biased) that
    the same test must reject, showing that it has power.
(b) :func:`check_convergence`: every optimizer of
    :mod:`polab.estimators.pg_optimizers`, run on many seeds at once, drives the
    exact gap :math:`J^*-J(\theta_t)` down by a fixed factor without
    divergence: on the bandit with single trajectories (all six methods), on
    the LQR with mini-batches of 16 (where single heavy-tailed estimates can
    throw an *unnormalised* step out of the stabilising set; such seeds are
    frozen and counted as diverged).
(c) :func:`fit_sample_complexity`: the number of trajectories :math:`N(\varepsilon)`
    after which the seed mean of the exact :math:`\|\nabla J(\theta_t)\|`
    (eps-stationarity) or of the exact gap stays below :math:`\varepsilon`,
    over a grid of :math:`\varepsilon`; the OLS slope of :math:`\log N` on
    :math:`\log(1/\varepsilon)` with a bootstrap-over-seeds interval.
    What is asserted (:data:`ASSERTED_EXPONENTS`): on the gradient norm,
    2.5 (N-PG-IGT) and 2 ((N)-HARPG) within :data:`SLOPE_MARGIN`, the local
    exponents of :mod:`polab.theory.pg_sample_complexity`, which coincide with the
    paper's exponents; on the gap, only the upper-bound direction
    (slope <= 2.5, <= 2): the paper's rates are worst-case bounds, and on this
    bandit (a non-degenerate maximiser, gap ~ gradient norm squared) the gap
    falls faster. Vanilla and momentum PG are reported, not asserted (their
    local exponent 3 is reached only beyond these budgets).
(d) :func:`compare_at_equal_samples`: at an equal number of trajectories
    (two per HARPG iteration), a one-sided Mann-Whitney test that HARPG's
    exact gradient norm is lower than vanilla PG's. It is an asymptotic
    effect (t^-1/2 against t^-1/3): in longer runs the seed-mean curves
    crossed near 1e4 trajectories, before which vanilla PG was lower.

The problems are those of :mod:`polab.proofs_checks.pg_toy_problems` (LQR with a
Gaussian linear policy, entropy-regularised softmax bandit; both
Fisher-non-degenerate, both with exact value baselines that keep the
estimators unbiased).

Run ``python -m polab.proofs_checks.pg_optimizer_checks`` for a short report
(1 min 40 s on one CPU core: user time 97 s, measured 2026-11-25).
"""

from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from polab.estimators.pg_gradients import hessian_vector_estimate, policy_gradient
from polab.estimators.pg_optimizers import PGMethod, PGState, pg_init, pg_query, pg_update
from polab.theory.pg_sample_complexity import METHOD_INFO

from .pg_toy_problems import default_bandit_task, default_lqr_task

__all__ = [
    "SLOPE_MARGIN",
    "EQUAL_SAMPLES_ALPHA",
    "BANDIT_UNBIASEDNESS_SAMPLES",
    "LQR_UNBIASEDNESS_SAMPLES",
    "ASSERTED_EXPONENTS",
    "PRESET_GAP_EPSILONS",
    "FITTED_METHODS",
    "BANDIT_CONVERGENCE_FRACTION",
    "LQR_BATCH",
    "LQR_ITERATIONS",
    "LQR_SEEDS",
    "LQR_CONVERGENCE_FRACTION",
    "lqr_run",
    "LQR_STEP_SIZE_NORMALIZED",
    "LQR_STEP_SIZE_UNNORMALIZED",
    "UnbiasednessCheck",
    "check_estimator_unbiasedness",
    "OptimizerRun",
    "run_optimizer",
    "ConvergenceRow",
    "check_convergence",
    "SampleComplexityFit",
    "fit_sample_complexity",
    "EqualSamplesComparison",
    "compare_at_equal_samples",
    "hotelling_pvalue",
    "torch_generator",
    "preset_run",
    "PRESET_METHODS",
    "PRESET_TRAJECTORIES",
    "PRESET_SEEDS",
    "PRESET_EPSILONS",
    "main",
]

#: Margin on a fitted sample-complexity slope. The theory hides log factors
#: (tilde-O); one factor log N changes the local slope of log N(eps) by about
#: 1/ln N, i.e. 0.10-0.15 for N between 1e3 and 1e4 trajectories, so 0.3
#: allows two such factors. Fixed before any slope was fitted.
SLOPE_MARGIN = 0.3
#: Level of the one-sided equal-samples comparison (d). The (a) tests use 1e-3 each.
EQUAL_SAMPLES_ALPHA = 0.01
#: Monte Carlo sizes of (a). The LQR estimates are heavy-tailed (products of up to four Gaussian states
#: times the random-horizon return), so their sample standard error is itself noisy; with 200000 samples
#: the Hotelling p-values of 16 independent repetitions (numpy seeds 100..115) were all >= 0.19 for the
#: Hessian-vector estimate and >= 0.057 for the gradient: the test is, if anything, conservative there.
BANDIT_UNBIASEDNESS_SAMPLES = 40000
LQR_UNBIASEDNESS_SAMPLES = 200000


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU torch.Generator seeded from a numpy Generator (the one source of randomness of these checks)."""
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


def hotelling_pvalue(samples: np.ndarray, mean0: np.ndarray) -> tuple[float, float]:
    r"""Hotelling's one-sample :math:`T^2` test of :math:`\mathbb{E}X = \mu_0`; returns (T^2, p-value).

    :math:`\frac{n-p}{p(n-1)}T^2\sim F(p, n-p)` under normality; for the
    large :math:`n` used here it is the CLT approximation.
    Shapes: samples [n, p], mean0 [p].
    """
    X = np.asarray(samples, dtype=np.float64)
    n, p = X.shape
    d = X.mean(0) - np.asarray(mean0, dtype=np.float64).reshape(-1)
    S = np.cov(X, rowvar=False).reshape(p, p)
    t2 = float(n * d @ np.linalg.solve(S, d))
    f = (n - p) / (p * (n - 1)) * t2
    return t2, float(stats.f.sf(f, p, n - p))


# ---------------------------------------------------------------------------
# (a) unbiasedness
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UnbiasednessCheck:
    """Result of :func:`check_estimator_unbiasedness`.

    Attributes
    ----------
    task : str
    num_samples : int
        Independent single-trajectory estimates.
    gradient_mean, gradient_se, gradient_exact : ndarray [dim]
    gradient_pvalue : float
        Hotelling :math:`T^2` p-value against the exact gradient.
    hvp_mean, hvp_se, hvp_exact : ndarray [dim]
    hvp_pvalue : float
    control_mean : ndarray [dim]
        Mean of :math:`\\nabla^2\\Phi\\,v` alone (score term dropped).
    control_pvalue : float
        Must be below ``alpha`` (the test detects the known bias).
    alpha : float
        Level of each of the three tests.
    passed : bool
        gradient and HVP p-values >= alpha and control p-value < alpha.
    """

    task: str
    num_samples: int
    gradient_mean: np.ndarray
    gradient_se: np.ndarray
    gradient_exact: np.ndarray
    gradient_pvalue: float
    hvp_mean: np.ndarray
    hvp_se: np.ndarray
    hvp_exact: np.ndarray
    hvp_pvalue: float
    control_mean: np.ndarray
    control_pvalue: float
    alpha: float
    passed: bool


def check_estimator_unbiasedness(task, params, vector, *, num_samples: int, generator: np.random.Generator,
                                 alpha: float = 1e-3, name: str = "") -> UnbiasednessCheck:
    r"""Monte Carlo test of the gradient and Hessian-vector estimates at one point.

    ``num_samples`` independent trajectories are drawn at ``params`` (the
    point is replicated as ``num_samples`` independent problems, so each row
    of the estimators' output is one single-trajectory estimate).

    Parameters
    ----------
    task : LQRTask or SoftmaxBanditTask
    params, vector : array [dim]
    num_samples : int
    generator : numpy Generator
    alpha : float
        Level of each test; the probability that a correct estimator fails
        either of the two unbiasedness tests is at most ``2 * alpha``.
    """
    th = np.asarray(params, dtype=np.float64).reshape(1, -1)
    v = np.asarray(vector, dtype=np.float64).reshape(1, -1)
    n = int(num_samples)
    tg = torch_generator(generator)
    P = torch.tensor(np.repeat(th, n, 0), requires_grad=True)
    sb = task.sample(P, batch=1, generator=tg)
    G = policy_gradient(sb.surrogate, P, reduction="sum").numpy()
    P2 = torch.tensor(np.repeat(th, n, 0), requires_grad=True)
    sb2 = task.sample(P2, batch=1, generator=tg)
    V = torch.tensor(np.repeat(v, n, 0))
    U = hessian_vector_estimate(sb2.surrogate, sb2.log_prob, P2, V, reduction="sum").numpy()
    P3 = torch.tensor(np.repeat(th, n, 0), requires_grad=True)
    sb3 = task.sample(P3, batch=1, generator=tg)
    Uc = hessian_vector_estimate(sb3.surrogate, sb3.log_prob.detach() * 0.0 + 0.0 * P3.sum(), P3, V, reduction="sum").numpy()
    g_exact = task.gradient(th)[0]
    h_exact = task.hessian_vector(th, v)[0]
    _, pg = hotelling_pvalue(G, g_exact)
    _, ph = hotelling_pvalue(U, h_exact)
    _, pc = hotelling_pvalue(Uc, h_exact)
    return UnbiasednessCheck(
        name or type(task).__name__, n, G.mean(0), G.std(0, ddof=1) / math.sqrt(n), g_exact, pg,
        U.mean(0), U.std(0, ddof=1) / math.sqrt(n), h_exact, ph, Uc.mean(0), pc, alpha,
        bool(pg >= alpha and ph >= alpha and pc < alpha),
    )


# ---------------------------------------------------------------------------
# optimizer runs, vectorised over seeds
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimizerRun:
    """Exact diagnostics along runs of one optimizer on many seeds.

    Attributes
    ----------
    method : str
    iterations : ndarray [R]
        Recorded iteration counts :math:`t` (the state after :math:`t` updates).
    trajectories : ndarray [R]
        Trajectories sampled per seed before the recorded state.
    gradient_norm : ndarray [seeds, R]
        Exact :math:`\\|\\nabla J(\\theta_t)\\|`.
    gap : ndarray [seeds, R]
        Exact :math:`J^* - J(\\theta_t)`.
    distance : ndarray [seeds, R]
        :math:`\\|\\theta_t - \\theta^*\\|`.
    """

    method: str
    iterations: np.ndarray
    trajectories: np.ndarray
    gradient_norm: np.ndarray
    gap: np.ndarray
    distance: np.ndarray


def _record_points(iterations: int, num: int) -> np.ndarray:
    pts = np.unique(np.round(np.logspace(0, math.log10(iterations), num)).astype(int))
    return np.concatenate([[0], pts])


def run_optimizer(task, method, *, iterations: int, num_seeds: int, generator: np.random.Generator,
                  batch_size: int = 1, hessian_batch_size: int = 1, num_records: int = 60) -> OptimizerRun:
    r"""Run ``method`` from ``task.initial`` on ``num_seeds`` independent seeds at once.

    Every seed draws its own trajectories; the optimizer state has shape
    [seeds, dim]. Gradients are estimated with ``batch_size`` trajectories
    at ``QueryPoints.gradient_point``, Hessian-vector products (HARPG) with
    ``hessian_batch_size`` trajectories at ``QueryPoints.hessian_point``.

    Divergence (LQR): a seed whose parameters, look-ahead or interpolation
    point leave the stabilising set (``task.stable``; there :math:`J=-\infty`
    and trajectories blow up) is frozen from then on and recorded with
    infinite gap and gradient norm; :func:`check_convergence` counts such seeds.
    """
    m = method if isinstance(method, PGMethod) else PGMethod(method)
    tg = torch_generator(generator)
    th0 = torch.tensor(np.repeat(task.initial.reshape(1, -1), num_seeds, 0))
    state = pg_init(th0)
    rec = set(_record_points(iterations, num_records).tolist())
    its, trajs, gn, gap, dist = [], [], [], [], []
    used = 0
    alive = np.ones(num_seeds, dtype=bool)
    check_stable = hasattr(task, "stable")

    def record(t):
        th = state.params.numpy()
        its.append(t)
        trajs.append(used)
        with np.errstate(invalid="ignore"):
            gn.append(np.where(alive, np.linalg.norm(np.where(alive[:, None], task.gradient(np.where(alive[:, None], th, th0.numpy())), 0.0), axis=1), np.inf))
            gap.append(np.where(alive, task.optimal_value - task.objective(np.where(alive[:, None], th, th0.numpy())), np.inf))
        dist.append(np.linalg.norm(th - task.optimum[None, :], axis=1))

    def safe(points: torch.Tensor) -> torch.Tensor:
        """Frozen seeds sample at the initial point (their estimates are discarded)."""
        return torch.where(torch.as_tensor(alive)[:, None], points, th0)

    for t in range(iterations + 1):
        if t in rec:
            record(t)
        if t == iterations:
            break
        q = pg_query(state, m, generator=tg)
        if check_stable:
            for pts in (state.params, q.gradient_point, q.hessian_point):
                if pts is not None:
                    alive &= task.stable(pts.numpy())
        keep = torch.as_tensor(alive, dtype=th0.dtype)[:, None]
        P = safe(q.gradient_point).clone().requires_grad_(True)
        sb = task.sample(P, batch=batch_size, generator=tg)
        g = policy_gradient(sb.surrogate, P, reduction="sum") * keep
        used += batch_size
        u = None
        if q.hessian_point is not None:
            P2 = safe(q.hessian_point).clone().requires_grad_(True)
            sb2 = task.sample(P2, batch=hessian_batch_size, generator=tg)
            u = hessian_vector_estimate(sb2.surrogate, sb2.log_prob, P2, q.displacement * keep, reduction="sum") * keep
            used += hessian_batch_size
        new = pg_update(state, m, g, hessian_vector=u, maximize=True)  # g, u estimate grad J and its Hessian: ascent
        frozen = ~torch.as_tensor(alive)[:, None]
        state = PGState(new.step, torch.where(frozen, state.params, new.params), torch.where(frozen, state.prev_params, new.prev_params),
                        torch.where(frozen, state.direction, new.direction))
    return OptimizerRun(m.name, np.asarray(its), np.asarray(trajs), np.stack(gn, 1), np.stack(gap, 1), np.stack(dist, 1))


# ---------------------------------------------------------------------------
# (b) convergence
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvergenceRow:
    """Convergence of one optimizer: seed means of the exact gap and gradient norm.

    ``passed``: no seed diverged and the final seed-mean gap is at most
    ``fraction`` times the initial one (``fraction`` is the convergence
    criterion, fixed before the runs, not a tolerance). Means are over the
    seeds that did not diverge.
    """

    method: str
    initial_gap: float
    final_gap: float
    initial_gradient_norm: float
    final_gradient_norm: float
    final_distance: float
    diverged: int
    fraction: float
    passed: bool


def check_convergence(run: OptimizerRun, *, fraction: float) -> ConvergenceRow:
    """Seed means at the first and last record; ``diverged`` counts seeds whose final gap is not finite (LQR: unstable gain)."""
    ok_rows = np.isfinite(run.gap[:, -1])
    bad = int((~ok_rows).sum())
    if not ok_rows.any():
        ok_rows[:] = True
    g0, g1 = float(run.gap[ok_rows, 0].mean()), float(run.gap[ok_rows, -1].mean())
    n0, n1 = float(run.gradient_norm[ok_rows, 0].mean()), float(run.gradient_norm[ok_rows, -1].mean())
    d1 = float(run.distance[ok_rows, -1].mean())
    ok = bad == 0 and g1 <= fraction * g0
    return ConvergenceRow(run.method, g0, g1, n0, n1, d1, bad, fraction, bool(ok))


# ---------------------------------------------------------------------------
# (c) sample complexity
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleComplexityFit:
    """Fitted slope of log N(eps) on log(1/eps).

    Attributes
    ----------
    method : str
    quantity : {"gradient_norm", "gap"}
        :math:`\\|\\nabla J(\\theta_t)\\|` (eps-stationarity, as the issue asks) or
        :math:`J^*-J(\\theta_t)` (the quantity of the paper's theorems).
    epsilons : ndarray [E]
    samples : ndarray [E]
        Trajectories after which the seed mean of ``quantity`` stays
        below each epsilon (log-log interpolation between records).
    slope, intercept : float
    slope_ci : (float, float)
        Percentile bootstrap interval over seeds at level ``confidence``.
    reference : float or None
        The exponent compared with (see :data:`ASSERTED_EXPONENTS`).
    mode : {"within", "at_most"} or None
        "within": the bootstrap interval meets ``[reference - margin, reference + margin]``,
        i.e. at level ``1 - confidence`` the data do not reject that the exponent is within
        ``margin`` of the reference (the point estimate alone is not used because its
        seed-to-seed spread, about 0.09, is not small next to the margin);
        "at_most": ``slope <= reference`` (the upper-bound direction); None: reported only.
    margin : float
    passed : bool or None
    """

    method: str
    quantity: str
    epsilons: np.ndarray
    samples: np.ndarray
    slope: float
    intercept: float
    slope_ci: tuple[float, float]
    confidence: float
    reference: float | None
    mode: str | None
    margin: float
    passed: bool | None


def _crossings(trajectories: np.ndarray, curve: np.ndarray, epsilons: np.ndarray) -> np.ndarray:
    """N(eps): the point after which ``curve`` stays below eps (log-log interpolation at the last upward crossing)."""
    out = np.full(len(epsilons), np.nan)
    x = np.log(np.maximum(trajectories, 1))
    y = np.log(curve)
    for k, e in enumerate(np.log(epsilons)):
        above = np.nonzero(y > e)[0]
        if len(above) == 0:
            out[k] = trajectories[0]
            continue
        i = above[-1]
        if i + 1 >= len(y):
            continue  # never settles below eps within the run
        w = (y[i] - e) / (y[i] - y[i + 1])
        out[k] = math.exp(x[i] + w * (x[i + 1] - x[i]))
    return out


def _slope(eps: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    b, a = np.polyfit(np.log(1.0 / eps), np.log(n), 1)
    return float(b), float(a)


#: What the checks assert about each fitted exponent: (reference, mode), see :class:`SampleComplexityFit`.
#: Gradient norm: the local exponents of :mod:`polab.theory.pg_sample_complexity` (2.5 for N-PG-IGT, 2 for
#: (N)-HARPG; they coincide with the paper's global exponents) within :data:`SLOPE_MARGIN`. Gap: the paper's
#: theorems are upper bounds, and on this bandit (non-degenerate maximiser, J* - J ~ |grad J|^2 / (2h))
#: the gap falls faster than the worst case, so only the upper-bound direction slope <= exponent is asserted.
#: Observed at the main seed (``python -m polab.proofs_checks.pg_optimizer_checks``, 256 seeds, 40000 trajectories):
#: gradient-norm slopes N-PG-IGT 2.78 (99% CI 2.57..3.01), N-HARPG 2.12 (1.91..2.36), HARPG 1.99 (1.78..2.20),
#: vanilla 2.60, momentum 2.66; gap slopes 1.35, 1.06, 0.97, 1.08, 1.19. N-PG-IGT's slope is above its
#: heuristic local exponent 2.5 (and close to plain momentum's), inside the margin only at its edge; that is
#: reported as observed, not explained away.
#: vanilla_pg and momentum_pg are reported against their local exponent 3 but not asserted: at these
#: budgets their decay is still pre-asymptotic (in longer runs of 60000 trajectories the local
#: slope of vanilla PG was 2.2, 2.4 and 3.0 over the decades from 1e2 to 6e4 trajectories).
ASSERTED_EXPONENTS: dict[tuple[str, str], tuple[float, str | None]] = {
    ("npg_igt", "gradient_norm"): (2.5, "within"),
    ("n_harpg", "gradient_norm"): (2.0, "within"),
    ("harpg", "gradient_norm"): (2.0, "within"),
    ("vanilla_pg", "gradient_norm"): (3.0, None),
    ("momentum_pg", "gradient_norm"): (3.0, None),
    ("npg_igt", "gap"): (2.5, "at_most"),
    ("n_harpg", "gap"): (2.0, "at_most"),
    ("harpg", "gap"): (2.0, "at_most"),
    ("vanilla_pg", "gap"): (3.0, None),
    ("momentum_pg", "gap"): (3.0, None),
}


def fit_sample_complexity(run: OptimizerRun, epsilons, *, generator: np.random.Generator, quantity: str = "gradient_norm",
                          margin: float = SLOPE_MARGIN, num_bootstrap: int = 1000, confidence: float = 0.99) -> SampleComplexityFit:
    """Fit the sample-complexity exponent of one run (see :class:`SampleComplexityFit`)."""
    if quantity not in ("gradient_norm", "gap"):
        raise ValueError(f"quantity must be 'gradient_norm' or 'gap'; got {quantity!r}.")
    eps = np.asarray(epsilons, dtype=np.float64)
    values = getattr(run, quantity)
    if not np.isfinite(values).all():
        raise ValueError(f"{run.method}: some seeds diverged; the sample complexity is fitted on non-divergent runs only.")
    curve = values.mean(0)
    N = _crossings(run.trajectories, curve, eps)
    if np.isnan(N).any():
        raise ValueError(f"{run.method}: the mean {quantity} never settles below eps = {eps[np.isnan(N)]}; "
                         "run longer or choose larger epsilons.")
    slope, icpt = _slope(eps, N)
    S = values.shape[0]
    boots = []
    for _ in range(num_bootstrap):
        idx = generator.integers(0, S, S)
        Nb = _crossings(run.trajectories, values[idx].mean(0), eps)
        if not np.isnan(Nb).any():
            boots.append(_slope(eps, Nb)[0])
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, (1 + confidence) / 2])
    ref, mode = ASSERTED_EXPONENTS.get((run.method, quantity), (None, None))
    if mode == "within":
        ok = bool(hi >= ref - margin and lo <= ref + margin)
    elif mode == "at_most":
        ok = bool(slope <= ref)
    else:
        ok = None
    return SampleComplexityFit(run.method, quantity, eps, N, slope, icpt, (float(lo), float(hi)), confidence, ref, mode, margin, ok)


# ---------------------------------------------------------------------------
# (d) equal samples
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EqualSamplesComparison:
    """One-sided Mann-Whitney test: method_a's exact gradient norm is stochastically smaller at equal trajectories."""

    method_a: str
    method_b: str
    trajectories: int
    median_a: float
    median_b: float
    pvalue: float
    alpha: float
    passed: bool


def _at_samples(run: OptimizerRun, n: int) -> np.ndarray:
    k = int(np.nonzero(run.trajectories <= n)[0][-1])
    return run.gradient_norm[:, k]


def compare_at_equal_samples(run_a: OptimizerRun, run_b: OptimizerRun, *, alpha: float = EQUAL_SAMPLES_ALPHA) -> EqualSamplesComparison:
    """Compare at the largest trajectory count both runs recorded (the last record of each at or below it)."""
    n = int(min(run_a.trajectories[-1], run_b.trajectories[-1]))
    a, b = _at_samples(run_a, n), _at_samples(run_b, n)
    p = float(stats.mannwhitneyu(a, b, alternative="less").pvalue)
    return EqualSamplesComparison(run_a.method, run_b.method, n, float(np.median(a)), float(np.median(b)), p, alpha, p < alpha)


# ---------------------------------------------------------------------------
# presets (used by main, the tests and the notebook)
# ---------------------------------------------------------------------------
#: Step scales on the bandit, fixed before any run: 0.3 for the normalised methods (the distance 1.1 to the
#: optimum is covered by sum_t 0.6/(t+2) within a few tens of iterations), 1.0 for the unnormalised ones
#: (|grad J| <= 0.1 on this bandit, so the first steps move by at most 0.1).
PRESET_METHODS = {
    "vanilla_pg": PGMethod("vanilla_pg", step_size0=1.0),
    "normalized_pg": PGMethod("normalized_pg", step_size0=0.3),
    "momentum_pg": PGMethod("momentum_pg", step_size0=0.3),
    "npg_igt": PGMethod("npg_igt", step_size0=0.3),
    "harpg": PGMethod("harpg", step_size0=1.0),
    "n_harpg": PGMethod("n_harpg", step_size0=0.3),
}
#: Trajectory budget per seed (HARPG uses two per iteration, so half the iterations) and seeds.
#: HARPG's lower gradient norm than vanilla PG is an asymptotic effect: in runs of 60000 trajectories the
#: seed-mean curves crossed near 1e4 trajectories, so the budget is 40000.
PRESET_TRAJECTORIES = 40000
PRESET_SEEDS = 256
#: Gradient-norm levels: from about the seed-mean gradient norm after 1e3 trajectories down to a level every
#: method's mean settles below within the budget (a factor 3.4; the initial mean is 0.083).
PRESET_EPSILONS = np.geomspace(0.012, 0.0035, 8)
#: Gap levels J* - J over the same stretch of the runs (the initial mean gap is 0.041).
PRESET_GAP_EPSILONS = np.geomspace(1e-3, 6e-5, 8)
#: Methods whose exponents are fitted (normalized_pg has no claimed rate).
FITTED_METHODS = ("vanilla_pg", "momentum_pg", "npg_igt", "n_harpg", "harpg")
#: Convergence criterion on the bandit: the mean gap falls by a factor 20 within the budget.
BANDIT_CONVERGENCE_FRACTION = 0.05

#: LQR convergence settings: mini-batches of 16 trajectories per estimate (single trajectories are too
#: heavy-tailed: unnormalised steps then leave the stabilising set), 400 iterations, 64 seeds, step scales
#: 0.1 (normalised: sum_t gamma_t = 0.2 ln 201 = 1.06 covers the distance 0.53 from K = 0 to K*) and 0.03
#: (unnormalised; |grad J(0)| = 1.0), criterion: the mean gap falls by a factor 4. A first try with scales
#: 0.3 / 0.1 left the stabilising set on 1-25 of 64 seeds depending on the method (vanilla 5, N-PG-IGT 1,
#: N-HARPG 3, HARPG 25). With 0.1 / 0.03, HARPG (unnormalised, gamma_t ~ t^-1/2) still diverged on 2 of
#: 64 seeds at the main seed (4 of 64 with another numpy seed); the other five methods on none.
LQR_BATCH = 16
LQR_ITERATIONS = 400
LQR_SEEDS = 64
LQR_CONVERGENCE_FRACTION = 0.25
LQR_STEP_SIZE_NORMALIZED = 0.1
LQR_STEP_SIZE_UNNORMALIZED = 0.03


def preset_run(name: str, *, generator: np.random.Generator, trajectories: int = PRESET_TRAJECTORIES,
               num_seeds: int = PRESET_SEEDS, igt_lookahead: str = "eta_t") -> OptimizerRun:
    """Run one preset method on the default bandit with the preset trajectory budget.

    ``igt_lookahead="eta_prev"`` (``npg_igt`` only) uses the authors' look-ahead weight
    :math:`\\eta_{t-1}` (:class:`polab.estimators.pg_optimizers.PGMethod`).
    """
    m = PRESET_METHODS[name]
    if igt_lookahead != "eta_t":
        m = dataclasses.replace(m, igt_lookahead=igt_lookahead)
    its = trajectories // METHOD_INFO[name].trajectory_batches_per_iteration
    return run_optimizer(default_bandit_task(), m, iterations=its, num_seeds=num_seeds, generator=generator)


def lqr_run(name: str, *, generator: np.random.Generator, iterations: int = LQR_ITERATIONS, num_seeds: int = LQR_SEEDS) -> OptimizerRun:
    """Run one method on the default LQR with the LQR settings above."""
    m = PGMethod(name, step_size0=LQR_STEP_SIZE_NORMALIZED if METHOD_INFO[name].normalized else LQR_STEP_SIZE_UNNORMALIZED)
    return run_optimizer(default_lqr_task(), m, iterations=iterations, num_seeds=num_seeds, generator=generator,
                         batch_size=LQR_BATCH, hessian_batch_size=LQR_BATCH, num_records=30)


# ---------------------------------------------------------------------------
def main(seed: int = 20230201) -> None:
    """Print a short report (one seed for the whole script)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    np.set_printoptions(precision=4, suppress=True)
    bandit, lqr = default_bandit_task(), default_lqr_task()
    for task, th, v, n in ((bandit, [0.3, -0.2], [0.3, -0.7], BANDIT_UNBIASEDNESS_SAMPLES),
                           (lqr, [-0.2, -0.4], [0.3, -0.7], LQR_UNBIASEDNESS_SAMPLES)):
        u = check_estimator_unbiasedness(task, th, v, num_samples=n, generator=rng)
        print(f"(a) {u.task}: passed={u.passed}")
        print(f"    grad  MC {u.gradient_mean} +- {u.gradient_se}  exact {u.gradient_exact}  p={u.gradient_pvalue:.3f}")
        print(f"    HVP   MC {u.hvp_mean} +- {u.hvp_se}  exact {u.hvp_exact}  p={u.hvp_pvalue:.3f}")
        print(f"    control (no score term) {u.control_mean}  p={u.control_pvalue:.1e}")
    runs = {}
    for name in PRESET_METHODS:
        runs[name] = preset_run(name, generator=rng)
        c = check_convergence(runs[name], fraction=BANDIT_CONVERGENCE_FRACTION)
        print(f"(b) bandit {name:13s}: gap {c.initial_gap:.3e} -> {c.final_gap:.3e}, |grad| {c.initial_gradient_norm:.3e} -> "
              f"{c.final_gradient_norm:.3e}, |theta-theta*| -> {c.final_distance:.3f}; passed={c.passed}")
    for name in PRESET_METHODS:
        c = check_convergence(lqr_run(name, generator=rng), fraction=LQR_CONVERGENCE_FRACTION)
        print(f"(b) LQR    {name:13s}: gap {c.initial_gap:.3e} -> {c.final_gap:.3e}, |K-K*| -> {c.final_distance:.3f}, "
              f"diverged {c.diverged}/{LQR_SEEDS}; passed={c.passed}")
    for quantity, eps in (("gradient_norm", PRESET_EPSILONS), ("gap", PRESET_GAP_EPSILONS)):
        for name in FITTED_METHODS:
            f = fit_sample_complexity(runs[name], eps, generator=rng, quantity=quantity)
            print(f"(c) {quantity:13s} {name:12s}: slope {f.slope:.3f} ({100 * f.confidence:.0f}% bootstrap CI {f.slope_ci[0]:.3f}..{f.slope_ci[1]:.3f}), "
                  f"reference {f.reference} ({f.mode}): passed={f.passed}")
    for a in ("harpg", "n_harpg"):
        cmp = compare_at_equal_samples(runs[a], runs["vanilla_pg"])
        print(f"(d) at {cmp.trajectories} trajectories: median |grad| {a} {cmp.median_a:.3e} vs vanilla {cmp.median_b:.3e}, "
              f"p={cmp.pvalue:.1e}: passed={cmp.passed}")


if __name__ == "__main__":
    main()
