"""Tests of polab.estimators.morl: metrics against brute force and peers, crowding, and C-MORL's barrier step.

Tolerances: float64 sums of a few hundred terms, 1e-10 relative (CONVENTIONS); the barrier toy's optimisation
error is bounded separately (see the test).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from polab.estimators.morl import (
    assign_policy,
    barrier_penalty,
    cmorl_ipo_loss,
    constraint_thresholds,
    crowding_distance,
    expected_utility,
    front_recovery,
    hypervolume,
    hypervolume_inclusion_exclusion,
    pareto_front,
    pareto_mask,
    select_by_crowding,
    simplex_weights,
    sparsity,
)

# Deep-sea-treasure's true front (mo-gymnasium 1.3.2 ``pareto_front(gamma=1.0)``; Vamplew et al. 2011 values).
DST_FRONT = np.array([[0.7, -1], [8.2, -3], [11.5, -5], [14.0, -7], [15.1, -8], [16.1, -9], [19.6, -13],
                      [20.3, -14], [22.4, -17], [23.7, -19]])


def _brute_dominated(p):
    n = len(p)
    return np.array([any(all(p[j] >= p[i]) and any(p[j] > p[i]) for j in range(n)) for i in range(n)])


def test_pareto_mask_matches_definition_and_keeps_duplicates():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.integers(0, 4, size=(12, 3)).astype(float)  # small integers: many ties and duplicates
        assert np.array_equal(pareto_mask(p), ~_brute_dominated(p))
    p = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])
    assert pareto_mask(p).tolist() == [True, True, False]
    assert pareto_front(p).tolist() == [[1.0, 2.0]]
    # DST's front is its own front, in first-objective order
    assert np.array_equal(pareto_front(DST_FRONT[::-1]), DST_FRONT)


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_equals_inclusion_exclusion(m):
    rng = np.random.default_rng(m)
    for n in (1, 2, 5, 10):
        p = rng.normal(size=(n, m))
        ref = np.full(m, -1.5)
        a, b = hypervolume(p, ref), hypervolume_inclusion_exclusion(p, ref)
        assert a == pytest.approx(b, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_equals_unit_cell_count_on_integer_points(m):
    # Integer points and reference: the dominated region is a union of unit cells, counted exactly.
    rng = np.random.default_rng(10 + m)
    for _ in range(10):
        p = rng.integers(0, 7, size=(9, m)).astype(float)
        ref = np.zeros(m)
        cells = 0
        for c in itertools.product(range(7), repeat=m):
            upper = np.asarray(c) + 1.0  # cell [c, c+1]^m is dominated iff some point >= c+1
            cells += int((p >= upper).all(axis=1).any())
        assert hypervolume(p, ref) == cells


def test_hypervolume_hand_values():
    # Staircase (1,3),(2,2),(3,1) above (0,0): 3 + 2 + 1 = 6; a dominated or out-of-box point changes nothing.
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]) == 6.0
    assert hypervolume([[1, 3], [2, 2], [3, 1], [1, 1], [5, -1]], [0, 0]) == 6.0
    # One box in 3-D
    assert hypervolume([[1, 2, 3]], [0, 0, 0]) == 6.0
    assert hypervolume(np.zeros((0, 2)), [0, 0]) == 0.0


def test_hypervolume_matches_pymoo_and_morl_baselines():
    pymoo_hv = pytest.importorskip("pymoo.indicators.hv")
    rng = np.random.default_rng(3)
    for m in (2, 3):
        for n in (3, 30, 200):
            p = rng.normal(size=(n, m))
            ref = np.full(m, -3.0)
            # pymoo minimises: the dominated volume of -p below -ref
            peer = pymoo_hv.HV(ref_point=-ref)(-p)
            assert hypervolume(p, ref) == pytest.approx(peer, rel=1e-10)
    pi = pytest.importorskip("morl_baselines.common.performance_indicators")
    ref = np.array([0.0, -25.0])
    assert hypervolume(DST_FRONT, ref) == pytest.approx(pi.hypervolume(ref, list(DST_FRONT)), rel=1e-10)


def test_sparsity_and_eu_hand_values_and_peer():
    # Sparsity: sorted gaps (1,1) in each of 2 objectives -> 4 / (3 - 1) = 2.
    assert sparsity([[0, 2], [1, 1], [2, 0]]) == 2.0
    assert sparsity([[1.0, 1.0]]) == 0.0
    # EU of {(1,0),(0,1)} on w in {(0,1),(.5,.5),(1,0)}: (1 + .5 + 1) / 3
    w = simplex_weights(2, step=0.5)
    assert expected_utility([[1, 0], [0, 1]], w) == pytest.approx(2.5 / 3, rel=1e-12)
    assert assign_policy([[1, 0], [0, 1], [0.6, 0.6]], [0.5, 0.5]) == 2
    pi = pytest.importorskip("morl_baselines.common.performance_indicators")
    rng = np.random.default_rng(4)
    p = rng.normal(size=(15, 3))
    w3 = simplex_weights(3, step=0.05)
    assert sparsity(p) == pytest.approx(pi.sparsity(list(p)), rel=1e-10)
    assert expected_utility(p, w3) == pytest.approx(pi.expected_utility(list(p), list(w3)), rel=1e-10)


def test_simplex_weights_lattice():
    for m, k in ((2, 5), (3, 5), (3, 100), (4, 10)):
        w = simplex_weights(m, step=1.0 / k)
        assert w.shape == (math.comb(k + m - 1, m - 1), m)
        assert np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        assert len(np.unique(np.round(w * k).astype(int), axis=0)) == len(w)
        assert (w >= 0).all()
    with pytest.raises(ValueError, match="step must be 1/K"):
        simplex_weights(2, step=0.3)


def test_crowding_distance_and_selection():
    p = np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
    d = crowding_distance(p)
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[1] == pytest.approx(2 / 3 + 2 / 3) and d[2] == pytest.approx(4 / 3)
    # Uneven spacing: the point with the wider gap around it ranks first among the interior ones
    q = np.array([[0.0, 10.0], [1.0, 9.0], [5.0, 5.0], [10.0, 0.0]])
    dq = crowding_distance(q)
    assert dq[2] > dq[1]
    assert select_by_crowding(q, 3).tolist() == [0, 3, 2]
    # Previously selected return vectors are skipped (authors' obj_hist)
    assert select_by_crowding(q, 2, exclude=[[0.0, 10.0], [10.0, 0.0]]).tolist() == [2, 1]
    # A constant objective adds nothing (no division by zero)
    assert np.isfinite(crowding_distance([[0, 1], [1, 1], [2, 1]])[1])


def test_constraint_thresholds():
    eps = constraint_thresholds([10.0, -10.0, 0.0], beta=0.9)
    assert eps.tolist() == pytest.approx([9.0, -11.0, 0.0])
    with pytest.raises(ValueError, match="beta"):
        constraint_thresholds([1.0], beta=1.5)


def test_barrier_penalty_value_gradient_and_clamp():
    g = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
    res = barrier_penalty(g, torch.tensor([1.0, 1.0], dtype=torch.float64), t=10.0)
    # slack (1, -0.5): second clamped at 1e-3 -> penalty -(log 1 + log 1e-3) / 2 / 10
    assert float(res.penalty.detach()) == pytest.approx(-math.log(1e-3) / 20, rel=1e-12)
    assert res.active.tolist() == [False, True]
    res.penalty.backward()
    # d/dg1 [-(1/(2t)) log(g1 - 1)] = -1/(2 t (g1 - 1)) = -0.05; the clamped one has no gradient
    assert g.grad.tolist() == pytest.approx([-0.05, 0.0], rel=1e-12)
    with pytest.raises(ValueError, match="t must be"):
        barrier_penalty(g, g.detach(), t=0.0)


def _bandit_loss(theta, R, p_old, *, objective, eps, t, min_slack=1e-3):
    """The core loss on a K-armed bandit written as one 'token' per arm with weight K * p_old (exact expectation)."""
    K = R.shape[0]
    logp = torch.log_softmax(theta, 0)[:, None]
    old = torch.log(p_old)[:, None]
    J_old = p_old @ R
    adv = (R - J_old)[:, None, :]
    return cmorl_ipo_loss(logp, old, adv, torch.ones(K, 1, dtype=R.dtype), objective=objective, current_returns=J_old,
                          thresholds=eps, clip=1e6, t=t, min_slack=min_slack, normalize_objective=False,
                          weights=(K * p_old)[:, None])


def test_surrogate_is_exact_on_a_bandit():
    # E_{a~p_old}[rho(a) (R_j(a) - J_j(p_old))] + J_j(p_old) = J_j(p) exactly (no clipping).
    R = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.3]], dtype=torch.float64)
    p_old = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    theta = torch.tensor([0.4, -0.3, 1.1], dtype=torch.float64)
    res = _bandit_loss(theta, R, p_old, objective=0, eps=torch.tensor([0.0, -5.0], dtype=torch.float64), t=1.0)
    p = torch.softmax(theta, 0)
    assert float(res.constraint_estimates[0]) == pytest.approx(float(p @ R[:, 1]), rel=1e-12)
    # objective part: -(J_0(p) - J_0(p_old))
    assert float(res.objective.loss) == pytest.approx(-float(p @ R[:, 0] - p_old @ R[:, 0]), rel=1e-12)


@pytest.mark.parametrize("t", [5.0, 20.0])
def test_barrier_step_reaches_the_central_path_point(t):
    # max J_0(p) s.t. J_1(p) >= 0.6 over the simplex; LP optimum p = (0.4, 0.6, 0), J_0 = 0.4 (scipy linprog).
    # Barrier problem max p_0 + (1/t) log(p_1 - 0.6): with p_2 = 0, d/dp_1 gives p_1 = 0.6 + 1/t, so the barrier
    # optimum is p = (0.4 - 1/t, 0.6 + 1/t, 0) and the gap is exactly 1/t (Boyd & Vandenberghe 11.6 with equality).
    R = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.3]], dtype=torch.float64)
    lp = linprog(-R[:, 0].numpy(), A_ub=-R[:, 1].numpy()[None], b_ub=[-0.6], A_eq=np.ones((1, 3)), b_eq=[1.0],
                 bounds=[(0, 1)] * 3)
    assert -lp.fun == pytest.approx(0.4, abs=1e-9)
    eps = torch.tensor([0.0, 0.6], dtype=torch.float64)
    theta = torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64, requires_grad=True)  # feasible start: J_1 = 0.79
    opt = torch.optim.Adam([theta], lr=0.1)
    for _ in range(300):
        # p_old = current p: PPO-like re-centring every step (the surrogate is exact for any p_old)
        p_old = torch.softmax(theta.detach(), 0)
        loss = _bandit_loss(theta, R, p_old, objective=0, eps=eps, t=t, min_slack=1e-12).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = torch.softmax(theta.detach(), 0)
    j0, j1 = float(p @ R[:, 0]), float(p @ R[:, 1])
    assert j1 > 0.6  # strictly feasible (interior point)
    # 2e-3: Adam's residual after 300 steps (p_2 decays to 0 only asymptotically; measured 2.4e-4 and 9e-4)
    assert np.allclose(p.numpy(), [0.4 - 1 / t, 0.6 + 1 / t, 0.0], atol=2e-3)
    assert -lp.fun - j0 == pytest.approx(1.0 / t, abs=2e-3)


def test_cmorl_ipo_loss_input_errors():
    logp = torch.zeros(4, 1)
    adv = torch.zeros(4, 1, 2)
    with pytest.raises(ValueError, match="objective"):
        cmorl_ipo_loss(logp, logp, adv, torch.ones(4, 1), objective=2, current_returns=[0, 0], thresholds=[0, 0])
    with pytest.raises(ValueError, match="current_returns"):
        cmorl_ipo_loss(logp, logp, adv, torch.ones(4, 1), objective=0, current_returns=[0], thresholds=[0, 0])
    with pytest.raises(ValueError, match="advantages"):
        cmorl_ipo_loss(logp, logp, torch.zeros(4, 2), torch.ones(4, 1), objective=0, current_returns=[0, 0],
                       thresholds=[0, 0])


def test_front_recovery_on_dst():
    ref = np.array([0.0, -25.0])
    full = front_recovery(DST_FRONT, DST_FRONT, ref)
    assert full.found == 10 and full.hypervolume_ratio == pytest.approx(1.0)
    part = front_recovery(np.vstack([DST_FRONT[[0, 9]], [[5.0, -20.0]]]), DST_FRONT, ref)
    assert part.found == 2 and part.fraction == 0.2
    assert 0 < part.hypervolume_ratio < 1


def test_hypervolume_input_errors():
    with pytest.raises(ValueError, match="2 or 3 objectives"):
        hypervolume(np.ones((2, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="objectives but 2"):
        hypervolume(np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        hypervolume([[np.nan, 1.0]], [0, 0])
