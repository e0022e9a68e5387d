r"""Multi-objective RL: Pareto sets, hypervolume, expected utility, sparsity, crowding, and C-MORL's constrained step.

Everything is for **maximisation** of a vector return :math:`J(\pi) \in \mathbb{R}^m`.

Metrics (numpy, float64; the sets involved are small):

- :func:`pareto_mask` / :func:`pareto_front`: non-dominated filtering.
- :func:`hypervolume`: exact, by a sweep in 2 objectives and by slabs of 2-D sweeps in 3 objectives
  (:math:`O(n^2 \log n)`); :func:`hypervolume_inclusion_exclusion` is the brute-force reference for any
  :math:`m` and a few points.
- :func:`expected_utility`: :math:`\mathrm{EU}(P) = \frac{1}{|W|}\sum_{w\in W}\max_{J\in P} w^\top J`
  (Zintgraf et al. 2015), with :func:`simplex_weights` the exact lattice :math:`W` on the simplex.
- :func:`sparsity`: PGMORL's :math:`\mathrm{SP}(P) = \frac{1}{|P|-1}\sum_j\sum_i (\tilde P_j(i) - \tilde P_j(i+1))^2`,
  :math:`\tilde P_j` the sorted values of objective :math:`j`.
- :func:`crowding_distance` and :func:`select_by_crowding`: C-MORL's choice of which policies to extend.

The C-MORL step (Liu et al., ICLR 2025, Sec. 4; "C-MORL-IPO"): from a selected policy :math:`\pi_r` and for each
objective :math:`i`, solve

.. math::

    \max_\pi J_i(\pi) \quad \text{s.t.}\quad J_j(\pi) \ge \varepsilon_j := \beta J_j(\pi_r),\ j \ne i,

by the interior-point (log-barrier) method of IPO (Liu, Ding, Liu, AAAI 2020):
:math:`\min_\pi -L_i^{clip}(\pi) - \frac{1}{t}\,\mathrm{mean}_{j\ne i}\log(\hat J_j(\pi) - \varepsilon_j)`
(:func:`cmorl_ipo_loss`, :func:`barrier_penalty`, :func:`constraint_thresholds`).

Sources (read here): RuohLiuq/C-MORL @ 67473b5afbc1be55e2b8c6ae704afc927bf218ee, ``morl/utils.py``
(``get_ep_indices``, ``compute_eu``, ``compute_sparsity``, ``generate_w_batch_test``), ``morl/ep.py``
(``calculate_crowding_distance``, ``filter_by_crowding_distance``), ``morl/arguments.py`` (``--beta 0.9``,
``--t 20``) and ``externals/pytorch-a2c-ppo-acktr-gail/a2c_ppo_acktr/algo/ppo.py::ipo_update``; the metric
definitions agree with morl-baselines 1.3.0 ``common/performance_indicators.py`` (checked side by side in the
tests). The code here is written from the equations, not copied.

References
----------
R. Liu, Y. Pan, L. Xu, L. Song, J. Bian, P. You, Y. Chen, "Efficient Discovery of Pareto Front for Multi-Objective
Reinforcement Learning", ICLR 2025 (arXiv 2410.02236).
Y. Liu, J. Ding, X. Liu, "IPO: Interior-point Policy Optimization under Constraints", AAAI 2020.
J. Xu et al., "Prediction-Guided Multi-Objective Reinforcement Learning for Continuous Robot Control" (PGMORL),
ICML 2020 (sparsity).
L. Zintgraf et al., "Quality Assessment of MORL Algorithms: A Utility-Based Approach", Benelearn 2015 (EU).
S. Boyd, L. Vandenberghe, "Convex Optimization", CUP 2004, Sec. 11.2 (barrier method; gap m/t).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from .checks import as_tensor, check_finite, check_ndim
from .policy_loss import PolicyLoss, ppo_clip_loss

__all__ = [
    "pareto_mask",
    "pareto_front",
    "hypervolume",
    "hypervolume_inclusion_exclusion",
    "simplex_weights",
    "expected_utility",
    "assign_policy",
    "sparsity",
    "crowding_distance",
    "select_by_crowding",
    "constraint_thresholds",
    "barrier_penalty",
    "BarrierResult",
    "cmorl_ipo_loss",
    "CMORLIPOLoss",
    "front_recovery",
    "FrontRecovery",
]


def _points(points, *, name: str = "points", m: int | None = None) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1 and p.size == 0:
        p = p.reshape(0, m if m is not None else 0)
    if p.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [num_points, num_objectives]; got shape {p.shape}. "
                         "Stack the return vectors row by row.")
    if m is not None and p.shape[1] != m:
        raise ValueError(f"{name} has {p.shape[1]} objectives but {m} were expected (shape {p.shape}).")
    if not np.isfinite(p).all():
        bad = np.flatnonzero(~np.isfinite(p).all(axis=1))[:10]
        raise ValueError(f"{name} has non-finite entries in rows {bad.tolist()}; drop or fix them first.")
    return p


def pareto_mask(points) -> np.ndarray:
    r"""Which points are non-dominated (maximisation).

    :math:`J^a` dominates :math:`J^b` when :math:`J^a \ge J^b` in every objective and :math:`>` in one.
    Exact duplicates do not dominate each other: all copies of a non-dominated point are kept
    (use :func:`pareto_front` for the unique set).

    Parameters
    ----------
    points : array, shape [n, m]

    Returns
    -------
    mask : bool array, shape [n]
    """
    p = _points(points)
    n = p.shape[0]
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        ge = (p >= p[i]).all(axis=1)
        gt = (p > p[i]).any(axis=1)
        mask[i] = not bool((ge & gt).any())
    return mask


def pareto_front(points) -> np.ndarray:
    """The unique non-dominated points, sorted by the first objective (then the others), shape [k, m]."""
    p = _points(points)
    if p.shape[0] == 0:
        return p
    front = np.unique(p[pareto_mask(p)], axis=0)
    return front[np.lexsort(front.T[::-1])]


def _hv2(p: np.ndarray, ref: np.ndarray) -> float:
    # Sweep from the largest first objective down; the staircase height is the running max of the second.
    order = np.argsort(-p[:, 0], kind="stable")
    xs, ys = p[order, 0], p[order, 1]
    ymax = np.maximum.accumulate(ys)
    x_next = np.append(xs[1:], ref[0])
    return float(np.sum((xs - x_next) * (ymax - ref[1])))


def _hv3(p: np.ndarray, ref: np.ndarray) -> float:
    # Slabs between consecutive distinct third-objective levels (largest first); each slab's cross-section
    # is the 2-D hypervolume of the points at or above its upper level.
    levels = np.unique(p[:, 2])[::-1]
    total = 0.0
    for k, z in enumerate(levels):
        z_low = levels[k + 1] if k + 1 < len(levels) else ref[2]
        total += _hv2(p[p[:, 2] >= z][:, :2], ref[:2]) * (z - z_low)
    return float(total)


def hypervolume(points, ref_point) -> float:
    r"""Exact hypervolume dominated by ``points`` above ``ref_point`` (maximisation), 2 or 3 objectives.

    .. math:: \mathrm{HV}(P; r) = \lambda\Big(\bigcup_{J\in P} [r_1, J_1]\times\dots\times[r_m, J_m]\Big).

    A point not strictly above ``ref_point`` in every objective adds nothing (its box is empty) and is dropped.
    2 objectives: sort by :math:`J_1` descending and sum the staircase, :math:`O(n\log n)`. 3 objectives: sum
    over slabs between consecutive :math:`J_3` levels of the 2-D hypervolume of the points above the slab,
    :math:`O(n^2\log n)`. Dominated points need no pre-filtering (they change no staircase).

    Parameters
    ----------
    points : array, shape [n, m], m in {2, 3}
    ref_point : array, shape [m]

    Returns
    -------
    float

    Notes
    -----
    pymoo's ``HV`` and morl-baselines' ``hypervolume`` minimise; morl-baselines calls pymoo on negated points and
    reference, which is this quantity (checked in the tests). For m > 3 use
    :func:`hypervolume_inclusion_exclusion` on small sets or a peer library.
    """
    ref = np.asarray(ref_point, dtype=np.float64).reshape(-1)
    if not np.isfinite(ref).all():
        raise ValueError(f"ref_point must be finite; got {ref}.")
    p = _points(points, m=ref.shape[0])
    if ref.shape[0] not in (2, 3):
        raise ValueError(f"hypervolume is exact for 2 or 3 objectives; got {ref.shape[0]}. "
                         "Use hypervolume_inclusion_exclusion (few points) or a peer library (pymoo) for more.")
    p = p[(p > ref).all(axis=1)]
    if p.shape[0] == 0:
        return 0.0
    return _hv2(p, ref) if ref.shape[0] == 2 else _hv3(p, ref)


def hypervolume_inclusion_exclusion(points, ref_point, *, max_points: int = 16) -> float:
    r"""Brute-force hypervolume by inclusion–exclusion, any number of objectives (reference for tests).

    .. math:: \mathrm{HV} = \sum_{\emptyset\ne S\subseteq P} (-1)^{|S|+1}\prod_k \big(\min_{J\in S} J_k - r_k\big)_+ .

    Cost :math:`2^n`; ``max_points`` guards against accidental use on large sets.
    """
    ref = np.asarray(ref_point, dtype=np.float64).reshape(-1)
    p = _points(points, m=ref.shape[0])
    p = p[(p > ref).all(axis=1)]
    n = p.shape[0]
    if n > max_points:
        raise ValueError(f"inclusion-exclusion costs 2^n terms; got n={n} > max_points={max_points}. "
                         "Use hypervolume() for 2-3 objectives.")
    total = 0.0
    for size in range(1, n + 1):
        sign = 1.0 if size % 2 == 1 else -1.0
        for subset in itertools.combinations(range(n), size):
            corner = p[list(subset)].min(axis=0)
            total += sign * float(np.prod(corner - ref))
    return total


def simplex_weights(num_objectives: int, *, step: float) -> np.ndarray:
    r"""All weights on the probability simplex whose coordinates are multiples of ``step``.

    Built exactly from integer compositions of :math:`K = 1/\text{step}` into ``num_objectives`` parts, so there are
    :math:`\binom{K+m-1}{m-1}` weights (101 for m=2, step 0.01; 5151 for m=3, step 0.01).

    Notes
    -----
    The authors' ``generate_w_batch_test`` (``morl/utils.py``) keeps the grid points whose float sum equals 1
    exactly, which drops lattice points through rounding (measured here with numpy 2.4: 5027 of the 5151 points for
    3 objectives at step 0.01; all 101 for 2 objectives); the integer construction has no such loss.
    C-MORL's Pareto initialisation uses the same lattice with step 0.2 (``--delta-weight``), and the expected
    utility uses step 0.01 (``--eval-delta-weight``).

    Returns
    -------
    weights : array, shape [num_weights, num_objectives], rows sum to 1
    """
    if int(num_objectives) != num_objectives or num_objectives < 1:
        raise ValueError(f"num_objectives must be a positive integer; got {num_objectives}.")
    K = round(1.0 / step) if step > 0 else 0
    if step <= 0 or abs(K * step - 1.0) > 1e-9:
        raise ValueError(f"step must be 1/K for a positive integer K (e.g. 0.2, 0.01); got {step}.")
    m = int(num_objectives)
    rows = []
    for bars in itertools.combinations(range(K + m - 1), m - 1):
        parts, prev = [], -1
        for b in bars:
            parts.append(b - prev - 1)
            prev = b
        parts.append(K + m - 2 - prev)
        rows.append(parts)
    return np.asarray(rows, dtype=np.float64).reshape(-1, m) / K


def expected_utility(points, weights) -> float:
    r"""Expected linear utility of a set of return vectors over a weight set.

    .. math:: \mathrm{EU}(P; W) = \frac{1}{|W|}\sum_{w\in W}\max_{J\in P} w^\top J.

    Parameters
    ----------
    points : array, shape [n, m], n >= 1
    weights : array, shape [k, m]
    """
    w = _points(weights, name="weights")
    p = _points(points, m=w.shape[1])
    if p.shape[0] == 0:
        raise ValueError("points is empty: the expected utility of an empty set is undefined.")
    return float(np.mean((w @ p.T).max(axis=1)))


def assign_policy(points, weight) -> int:
    """C-MORL's policy assignment for a preference ``weight`` [m]: the index of :math:`\\arg\\max_J w^\\top J`."""
    w = np.asarray(weight, dtype=np.float64).reshape(-1)
    p = _points(points, m=w.shape[0])
    if p.shape[0] == 0:
        raise ValueError("points is empty: there is no policy to assign.")
    return int(np.argmax(p @ w))


def sparsity(points) -> float:
    r"""PGMORL's sparsity (lower is denser): mean squared gap between neighbours along each objective.

    .. math:: \mathrm{SP}(P) = \frac{1}{|P|-1}\sum_{j=1}^m\sum_{i=1}^{|P|-1}\big(\tilde P_j(i)-\tilde P_j(i+1)\big)^2,

    :math:`\tilde P_j` the values of objective :math:`j` sorted. 0 for fewer than two points (as in the authors'
    ``compute_sparsity`` and morl-baselines); the metric is meaningful only next to the hypervolume.
    """
    p = _points(points)
    if p.shape[0] < 2:
        return 0.0
    s = np.sort(p, axis=0)
    return float(np.sum(np.diff(s, axis=0) ** 2) / (p.shape[0] - 1))


def crowding_distance(points, *, boundary: float = math.inf) -> np.ndarray:
    r"""NSGA-II crowding distance, as C-MORL uses it to pick the policies to extend.

    For each objective :math:`j`, sort the points; an interior point at sorted position :math:`k` gets
    :math:`(J_j^{(k+1)} - J_j^{(k-1)}) / (J_j^{\max} - J_j^{\min})`, the first and last get ``boundary``;
    the distance is the sum over objectives. An objective whose values are all equal adds 0 to the
    interior points (the authors' code divides by zero there). Ties are ordered by index (stable sort).

    Returns
    -------
    distances : array, shape [n]
    """
    p = _points(points)
    n, m = p.shape
    d = np.zeros(n)
    if n == 0:
        return d
    for j in range(m):
        order = np.argsort(p[:, j], kind="stable")
        v = p[order, j]
        span = v[-1] - v[0]
        dj = np.zeros(n)
        if n > 2 and span > 0:
            dj[1:-1] = (v[2:] - v[:-2]) / span
        dj[0] = boundary
        dj[-1] = boundary
        d[order] += dj
    return d


def select_by_crowding(points, num_select: int, *, exclude: Iterable[Sequence[float]] = ()) -> np.ndarray:
    """Indices of up to ``num_select`` points with the largest crowding distance, skipping excluded return vectors.

    C-MORL (``morl/ep.py::filter_by_crowding_distance``) ranks the current Pareto set by crowding distance with
    infinite boundary values and skips objective vectors selected in earlier rounds (``exclude``); ties keep the
    lower index first.
    """
    if int(num_select) != num_select or num_select < 0:
        raise ValueError(f"num_select must be a non-negative integer; got {num_select}.")
    p = _points(points)
    d = crowding_distance(p)
    order = np.argsort(-d, kind="stable")
    seen = {tuple(np.asarray(e, dtype=np.float64).tolist()) for e in exclude}
    out = []
    for i in order:
        if len(out) >= num_select:
            break
        key = tuple(p[i].tolist())
        if key in seen:
            continue
        seen.add(key)
        out.append(int(i))
    return np.asarray(out, dtype=np.int64)


def constraint_thresholds(parent_returns, *, beta: float) -> np.ndarray:
    r"""C-MORL's constraint levels :math:`\varepsilon_j = J_j(\pi_r) - (1-\beta)\,|J_j(\pi_r)|`.

    For a non-negative return this is the paper's :math:`\beta J_j(\pi_r)` (``--beta 0.9``); for a negative one
    (a time penalty) the paper's form would demand *more* than the parent achieves, so the slack is taken
    on the magnitude: the parent always satisfies its own constraints with slack :math:`(1-\beta)|J_j|`.
    This extension to negative returns is ours.
    """
    if not (0.0 <= beta <= 1.0):
        raise ValueError(f"beta must be in [0, 1] (the paper uses 0.9); got {beta}.")
    j = np.asarray(parent_returns, dtype=np.float64)
    return j - (1.0 - beta) * np.abs(j)


@dataclass(frozen=True)
class BarrierResult:
    """Result of :func:`barrier_penalty`: ``penalty`` (scalar tensor to add to a loss), ``slack`` [k] (detached)
    and ``active`` [k] (bool: the slack was below ``min_slack`` and clamped, so that constraint has no gradient)."""

    penalty: torch.Tensor
    slack: torch.Tensor
    active: torch.Tensor


def barrier_penalty(constraint_values: torch.Tensor, thresholds: torch.Tensor, *, t: float,
                    min_slack: float = 1e-3) -> BarrierResult:
    r"""Log-barrier penalty :math:`-\frac1t\,\mathrm{mean}_j \log\big(\max(g_j - \varepsilon_j, s_{min})\big)`.

    Minimising :math:`-f(x) + \text{penalty}` for a concave :math:`f` and concave :math:`g_j` approximates
    :math:`\max f` s.t. :math:`g_j \ge \varepsilon_j`; at the barrier minimiser the objective is within
    :math:`1/t` of the constrained optimum (Boyd & Vandenberghe eq. 11.6 with :math:`m` constraints and the
    barrier scaled by :math:`1/(tm)`, i.e. the mean over constraints). The clamp at ``min_slack`` follows the
    authors' ``ipo_update`` (``torch.clamp(epsilon - cost, max=-0.001)``): outside the feasible region the
    penalty is flat (no gradient), as in IPO.

    Parameters
    ----------
    constraint_values, thresholds : Tensor, shape [k]
    t : float > 0
        Barrier temperature (authors' ``--t 20``).
    min_slack : float > 0
    """
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"t must be a finite positive number (authors' default 20); got {t}.")
    if not min_slack > 0:
        raise ValueError(f"min_slack must be > 0 (authors: 1e-3); got {min_slack}.")
    g = as_tensor(constraint_values, name="constraint_values")
    eps = as_tensor(thresholds, name="thresholds").to(device=g.device, dtype=g.dtype)
    check_ndim(g, 1, name="constraint_values", layout="[num_constraints]")
    if eps.shape != g.shape:
        raise ValueError(f"thresholds has shape {tuple(eps.shape)} but constraint_values has {tuple(g.shape)}.")
    check_finite(g.detach(), name="constraint_values")
    check_finite(eps, name="thresholds")
    if g.shape[0] == 0:
        zero = g.sum() * 0.0
        return BarrierResult(zero, g.detach(), torch.zeros(0, dtype=torch.bool, device=g.device))
    slack = g - eps
    active = slack.detach() < min_slack
    pen = -torch.log(slack.clamp(min=min_slack)).mean() / t
    return BarrierResult(pen, slack.detach(), active)


@dataclass(frozen=True)
class CMORLIPOLoss:
    """Result of :func:`cmorl_ipo_loss`.

    Attributes
    ----------
    loss : Tensor, scalar
        What to backpropagate (policy part only; add the value loss and entropy bonus outside).
    objective : PolicyLoss
        The core PPO clipped loss on the (normalised) advantage of the objective being maximised.
    constraint_estimates : Tensor, shape [m-1]
        Surrogate :math:`\\hat J_j(\\pi)` of each constrained objective (detached).
    barrier : BarrierResult
    """

    loss: torch.Tensor
    objective: PolicyLoss
    constraint_estimates: torch.Tensor
    barrier: BarrierResult


def cmorl_ipo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                   objective: int, current_returns, thresholds, clip: float = 0.2, t: float = 20.0,
                   min_slack: float = 1e-3, normalize_objective: bool = True, weights: torch.Tensor | None = None,
                   ) -> CMORLIPOLoss:
    r"""C-MORL-IPO policy loss: PPO on objective :math:`i` plus a log barrier keeping the others above thresholds.

    .. math::

        L(\theta) = L^{clip}(\theta; \tilde A_i)
        - \frac{1}{t}\,\mathrm{mean}_{j\ne i}\log\big(\hat J_j(\theta) - \varepsilon_j\big),\qquad
        \hat J_j(\theta) = J_j(\pi_{old}) - L^{clip}(\theta; A_j),

    where :math:`L^{clip}(\theta; A) = \overline{\max(-\rho A, -\mathrm{clip}(\rho,1\pm\epsilon)A)}` is
    :func:`polab.estimators.policy_loss.ppo_clip_loss` (token-mean over the mask), :math:`\tilde A_i` the
    advantage of objective :math:`i` normalised over the batch (as the authors' ``ipo_update`` does) and
    :math:`A_j` the raw advantage of objective :math:`j`. :math:`\hat J_j` is the clipped (pessimistic) first-order
    estimate of :math:`J_j(\pi_\theta)` from data of :math:`\pi_{old}` (the performance-difference surrogate);
    without clipping and with exact advantages it is exact to first order, and exact for a bandit
    (tested). This is IPO's constraint surrogate (Liu, Ding, Liu 2020, eq. 8).

    Parameters
    ----------
    logp, old_logp : Tensor, shape [batch, time]
    advantages : Tensor, shape [batch, time, m]
        Per-objective advantages (e.g. the core GAE run once per objective).
    mask : Tensor, shape [batch, time]
    objective : int
        Index :math:`i` of the objective to maximise.
    current_returns : array or Tensor, shape [m]
        :math:`J(\pi_{old})`, the return estimate of the data-collecting policy (e.g. mean episode return).
    thresholds : array or Tensor, shape [m]
        :math:`\varepsilon` (:func:`constraint_thresholds`); entry ``objective`` is ignored.
    clip, t, min_slack : float
        PPO clip range; barrier temperature (authors' 20); slack floor (authors' 1e-3).
    normalize_objective : bool
        Normalise :math:`A_i` over the masked batch (mean 0, std 1, Bessel, +1e-8) before the PPO loss.
    weights : Tensor, shape [batch, time], optional
        Non-negative per-sample weights of every term (``is_weights`` of the core loss); used for exact
        expectations over a distribution in the bandit toy.

    Returns
    -------
    CMORLIPOLoss

    Notes
    -----
    Departure from the authors' code: ``ipo_update`` builds its constraint term as
    ``clamp(ratio, 1±eps) * return_batch.mean(0)`` against ``beta * return_batch.mean(0)`` (the batch's own mean
    return, not the selected policy's), so the threshold moves with the current policy; and it drops the
    constrained objective with ``torch.cat((hat_cost[:obj], hat_cost[obj+1:]))`` on a ``[batch, m]`` tensor, which
    slices the *batch* axis, so every objective (including :math:`i`) enters the barrier. Here the thresholds are
    fixed from the selected policy's evaluated return, as the paper's problem states, the surrogate is IPO's, and
    only :math:`j\ne i` enter the barrier.

    Shapes
    ------
    logp, old_logp, mask: [B, T]; advantages: [B, T, m]; current_returns, thresholds: [m].
    """
    check_ndim(advantages, 3, name="advantages", layout="[batch, time, num_objectives]")
    if advantages.shape[:2] != logp.shape:
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}; its first two axes must match "
                         f"logp {tuple(logp.shape)}.")
    m = advantages.shape[2]
    if int(objective) != objective or not 0 <= objective < m:
        raise ValueError(f"objective must be an integer index in [0, {m}); got {objective}.")
    cur = as_tensor(current_returns, name="current_returns").to(device=logp.device, dtype=logp.dtype).reshape(-1)
    eps = as_tensor(thresholds, name="thresholds").to(device=logp.device, dtype=logp.dtype).reshape(-1)
    for name, v in (("current_returns", cur), ("thresholds", eps)):
        if v.shape[0] != m:
            raise ValueError(f"{name} has {v.shape[0]} entries but advantages has {m} objectives.")
        check_finite(v, name=name)
    mk = mask.to(logp.dtype)
    a_i = advantages[..., objective].detach()
    if normalize_objective:
        sel = a_i[mk > 0]
        if sel.numel() > 1:
            a_i = (a_i - sel.mean()) / (sel.std() + 1e-8)
    obj = ppo_clip_loss(logp, old_logp, a_i, mask, clip_low=clip, is_weights=weights)
    others = [j for j in range(m) if j != objective]
    est = []
    for j in others:
        lj = ppo_clip_loss(logp, old_logp, advantages[..., j].detach(), mask, clip_low=clip, is_weights=weights)
        est.append(cur[j] - lj.policy_loss)
    g = torch.stack(est) if est else logp.new_zeros(0)
    bar = barrier_penalty(g, eps[others], t=t, min_slack=min_slack)
    return CMORLIPOLoss(loss=obj.loss + bar.penalty, objective=obj, constraint_estimates=g.detach(), barrier=bar)


@dataclass(frozen=True)
class FrontRecovery:
    """How much of a known Pareto front a found set recovers.

    Attributes
    ----------
    found : int
        True front points matched by some found point (within ``atol`` in every objective).
    total : int
        Size of the true front.
    fraction : float
        ``found / total``.
    hypervolume_ratio : float
        HV(found set) / HV(true front) for the given reference point (<= 1 when the true front is the front).
    matched : bool array, shape [total]
    """

    found: int
    total: int
    fraction: float
    hypervolume_ratio: float
    matched: np.ndarray


def front_recovery(found_points, true_front, ref_point, *, atol: float = 1e-6) -> FrontRecovery:
    """Fraction of true front points found (to ``atol``) and hypervolume ratio of the found set."""
    tf = _points(true_front, name="true_front")
    fp = _points(found_points, name="found_points", m=tf.shape[1])
    if fp.shape[0] == 0:
        matched = np.zeros(tf.shape[0], dtype=bool)
        hv = 0.0
    else:
        matched = np.array([bool((np.abs(fp - q).max(axis=1) <= atol).any()) for q in tf])
        hv = hypervolume(fp, ref_point)
    hv_true = hypervolume(tf, ref_point)
    if hv_true <= 0:
        raise ValueError("the true front has zero hypervolume for this ref_point; choose a reference point below it.")
    k = int(matched.sum())
    return FrontRecovery(found=k, total=tf.shape[0], fraction=k / tf.shape[0], hypervolume_ratio=hv / hv_true,
                         matched=matched)
