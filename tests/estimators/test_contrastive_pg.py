"""CoPG: the optimum pi_ref exp(R/beta) from any sampling distribution, the IPO reduction, hand values."""

import math

import pytest
import torch

from polab.estimators.contrastive_pg import (
    copg_bandit_objective,
    copg_loss,
    copg_optimal_policy,
    copg_pair_loss,
    naive_offpolicy_pg_direction,
    regularised_reward,
    within_group_pairs,
)
from polab.estimators.preference_losses import ipo_loss

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)


def _bandit(seed, k=10):
    g = torch.Generator().manual_seed(seed)
    ref_logp = torch.log_softmax(2.0 * torch.randn(k, generator=g, dtype=torch.float64), dim=0)  # peaked reference
    rewards = torch.rand(k, generator=g, dtype=torch.float64)
    return g, ref_logp, rewards


def _minimise(objective, x0, *, iters=400):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=iters, tolerance_grad=1e-14, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        v = objective(x)
        v.backward()
        return v

    opt.step(closure)
    return x.detach()


def test_hand_values_one_pair():
    # R = (1, 0), beta = 0.5, log-ratios (0.2, -0.4): R_beta = (1 - 0.1, 0 + 0.2) = (0.9, 0.2); loss = 0.49
    res = copg_pair_loss(torch.tensor([0.2], dtype=torch.float64), torch.tensor([-0.4], dtype=torch.float64),
                         torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                         torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64), beta=0.5)
    torch.testing.assert_close(res.loss, torch.tensor(0.49, dtype=torch.float64), **F64)
    torch.testing.assert_close(res.margin, torch.tensor([0.6], dtype=torch.float64), **F64)
    assert res.accuracy == 1.0


def test_within_group_pairs_any_order():
    a, b = within_group_pairs(torch.tensor([7, 3, 7, 3, 7, 9]))
    assert list(zip(a.tolist(), b.tolist())) == [(0, 2), (0, 4), (1, 3), (2, 4)]


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_loss_is_exactly_zero_at_optimum_for_any_batch(beta):
    # R_beta(pi*) = beta log Z for every response, so any sample of pairs has loss 0 (float64 round-off)
    g, ref_logp, rewards = _bandit(0)
    opt = copg_optimal_policy(ref_logp, rewards, beta=beta)
    arms = torch.randint(0, 10, (64,), generator=g)
    groups = torch.randint(0, 5, (64,), generator=g)
    res = copg_loss(opt[arms], ref_logp[arms], rewards[arms], groups, beta=beta)
    assert float(res.loss) < 1e-20
    # and it is not zero at the reference
    res_ref = copg_loss(ref_logp[arms], ref_logp[arms], rewards[arms], groups, beta=beta)
    assert float(res_ref.loss) > 1e-3


@pytest.mark.parametrize("beta", [0.1, 1.0])
@pytest.mark.parametrize("mu_kind", ["uniform", "dirichlet", "reverse-of-reference"])
def test_bandit_converges_to_optimum_from_any_sampling_distribution(beta, mu_kind):
    g, ref_logp, rewards = _bandit(1)
    k = ref_logp.shape[0]
    if mu_kind == "uniform":
        mu = torch.full((k,), 1.0 / k, dtype=torch.float64)
    elif mu_kind == "dirichlet":
        e = -torch.log(torch.rand(k, generator=g, dtype=torch.float64))  # Dirichlet(1, ..., 1) from the seeded generator
        mu = e / e.sum()
    else:  # mass where the reference has little
        mu = torch.softmax(-ref_logp, dim=0)
    target = copg_optimal_policy(ref_logp, rewards, beta=beta).exp()
    theta = _minimise(lambda th: copg_bandit_objective(th, ref_logp, rewards, mu, beta=beta), ref_logp.clone())
    pi = torch.softmax(theta, dim=0)
    # LBFGS stops at a gradient norm ~1e-14; pi is then within ~1e-8 of the unique minimiser
    torch.testing.assert_close(pi, target, rtol=1e-6, atol=1e-8)
    kl = float((pi * (pi.log() - target.log())).sum())
    assert kl < 1e-12


def test_naive_offpolicy_pg_without_baseline_is_biased_and_copg_gradient_is_pg_with_mu_baseline():
    _, ref_logp, rewards = _bandit(2)
    beta = 0.5
    k = ref_logp.shape[0]
    mu = torch.softmax(-ref_logp, dim=0)
    target = copg_optimal_policy(ref_logp, rewards, beta=beta).exp()
    # identity: grad L_CoPG = -4 beta d_{mu-mean baseline} at an arbitrary point
    th = torch.randn(k, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    copg_bandit_objective(th, ref_logp, rewards, mu, beta=beta).backward()
    d = naive_offpolicy_pg_direction(th.detach(), ref_logp, rewards, mu, beta=beta, baseline=None)
    torch.testing.assert_close(th.grad, -4.0 * beta * d, **F64)
    # naive off-policy PG with no baseline: iterate to its fixed point, which is not pi*
    theta = ref_logp.clone()
    for _ in range(20000):
        theta = theta + 2.0 * naive_offpolicy_pg_direction(theta, ref_logp, rewards, mu, beta=beta)
    d_end = naive_offpolicy_pg_direction(theta, ref_logp, rewards, mu, beta=beta)
    assert float(d_end.abs().max()) < 1e-9  # converged
    pi = torch.softmax(theta, dim=0)
    assert float((pi - target).abs().sum()) > 0.05  # ... to a biased policy


def test_reduces_to_ipo_with_trl_openrlhf_target_margin():
    # reward gap 1/2 on a preference pair: CoPG = beta^2 (h - 1/(2 beta))^2 = beta^2 * IPO, where IPO's target
    # 1/(2 beta) is the convention of TRL (trl/trainer/dpo_trainer.py, loss_type="ipo") and OpenRLHF
    # (openrlhf/models/loss.py::DPOLoss(ipo=True)); ipo_loss reproduces both (tests/estimators/test_preference_losses.py)
    g = torch.Generator().manual_seed(3)
    c, r, rc, rr = (torch.randn(6, generator=g, dtype=torch.float64) for _ in range(4))
    beta = 0.3
    copg = copg_pair_loss(c, r, rc, rr, torch.full((6,), 0.5, dtype=torch.float64), torch.zeros(6, dtype=torch.float64),
                          beta=beta)
    ipo = ipo_loss(c, r, rc, rr, beta=beta)
    torch.testing.assert_close(copg.per_pair, beta**2 * ipo.per_pair, **F64)
    torch.testing.assert_close(copg.margin, ipo.margin, **F64)
    # hand value: beta = 0.5, h = 1 -> (1/2 - 0.5 * 1)^2 = 0
    z = torch.zeros(1, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    assert float(copg_pair_loss(one, z, z, z, 0.5 * one, z, beta=0.5).loss) == 0.0


def test_group_loss_equals_loop_over_pairs_and_ties_are_kept():
    g = torch.Generator().manual_seed(4)
    n = 12
    lp = torch.randn(n, generator=g, dtype=torch.float64)
    ref = torch.randn(n, generator=g, dtype=torch.float64)
    rw = torch.randint(0, 3, (n,), generator=g).to(torch.float64)  # many ties
    ids = torch.randint(0, 3, (n,), generator=g)
    beta = 0.2
    res = copg_loss(lp, ref, rw, ids, beta=beta, scale=0.25)
    terms = []
    for i in range(n):
        for j in range(i + 1, n):
            if ids[i] == ids[j]:
                Ri = rw[i] - beta * (lp[i] - ref[i])
                Rj = rw[j] - beta * (lp[j] - ref[j])
                terms.append(0.25 * (Ri - Rj) ** 2)
    torch.testing.assert_close(res.loss, torch.stack(terms).mean(), **F64)
    assert res.per_pair.numel() == len(terms)


def test_gradient_is_contrastive_policy_gradient():
    # d/dlogp_i of (R_i - R_j)^2 = -2 beta (R_i - R_j): each response's baseline is the other's regularised reward
    lp = torch.tensor([0.1, -0.3], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([0.0, 0.2], dtype=torch.float64)
    rw = torch.tensor([1.0, 0.4], dtype=torch.float64)
    beta = 0.7
    res = copg_loss(lp, ref, rw, torch.tensor([0, 0]), beta=beta)
    res.loss.backward()
    R = regularised_reward(lp.detach(), ref, rw, beta=beta)
    expect = torch.stack([-2 * beta * (R[0] - R[1]), -2 * beta * (R[1] - R[0])])
    torch.testing.assert_close(lp.grad, expect, **F64)


def test_float32_and_singletons_and_errors():
    lp = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float32)
    res = copg_loss(lp, torch.zeros(3), torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0, 0, 1]), beta=0.5)
    assert res.loss.dtype == torch.float32 and res.per_pair.numel() == 1
    assert copg_loss(lp, torch.zeros(3), torch.zeros(3), torch.tensor([0, 1, 2]), beta=0.5) is None
    with pytest.raises(ValueError, match="beta"):
        copg_loss(lp, torch.zeros(3), torch.zeros(3), torch.tensor([0, 0, 1]), beta=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        copg_loss(torch.tensor([0.0, math.nan]), torch.zeros(2), torch.zeros(2), torch.tensor([0, 0]), beta=1.0)
    with pytest.raises(ValueError, match="same shape"):
        copg_loss(lp, torch.zeros(2), torch.zeros(3), torch.tensor([0, 0, 1]), beta=1.0)
    with pytest.raises(ValueError, match="integer"):
        copg_loss(lp, torch.zeros(3), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]), beta=1.0)


def test_invariances_group_reward_shift_and_joint_scaling():
    g = torch.Generator().manual_seed(6)
    n = 10
    lp = torch.randn(n, generator=g, dtype=torch.float64)
    ref = torch.randn(n, generator=g, dtype=torch.float64)
    rw = torch.randn(n, generator=g, dtype=torch.float64)
    ids = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2, 0])
    base = copg_loss(lp, ref, rw, ids, beta=0.4).loss
    # a per-prompt constant added to the rewards (a state baseline) changes nothing: only differences enter
    shift = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64)[ids]
    torch.testing.assert_close(copg_loss(lp, ref, rw + shift, ids, beta=0.4).loss, base, **F64)
    # so does a per-prompt constant on the policy's log-probs (a normaliser)
    torch.testing.assert_close(copg_loss(lp + shift, ref, rw, ids, beta=0.4).loss, base, **F64)
    # rewards and beta scaled together by c: the loss scales by c^2 (same minimiser)
    torch.testing.assert_close(copg_loss(lp, ref, 3.0 * rw, ids, beta=1.2).loss, 9.0 * base, **F64)


def test_finite_offline_sample_recovers_the_optimum_exactly():
    # a fixed dataset of 40 pairs drawn once from mu != pi_ref (offline data): pi* zeroes every pair's loss, and when
    # the pairs connect all arms no other softmax policy does, so minimising the empirical loss recovers pi* exactly
    g, ref_logp, rewards = _bandit(9, k=6)
    mu = torch.softmax(-ref_logp, dim=0)
    first = torch.multinomial(mu, 40, replacement=True, generator=g)
    second = torch.multinomial(mu, 40, replacement=True, generator=g)
    edges = {(int(a), int(b)) for a, b in zip(first, second)}
    seen, frontier = {0}, [0]
    while frontier:  # the pair graph must be connected over all 6 arms for uniqueness
        a = frontier.pop()
        for x, y in edges:
            for u, v in ((x, y), (y, x)):
                if u == a and v not in seen:
                    seen.add(v)
                    frontier.append(v)
    assert seen == set(range(6))
    beta = 0.25

    def empirical(th):
        lp = torch.log_softmax(th, dim=0)
        return copg_pair_loss(lp[first], lp[second], ref_logp[first], ref_logp[second], rewards[first], rewards[second],
                              beta=beta).loss

    theta = _minimise(empirical, ref_logp.clone())
    torch.testing.assert_close(torch.softmax(theta, dim=0), copg_optimal_policy(ref_logp, rewards, beta=beta).exp(),
                               rtol=1e-6, atol=1e-8)  # optimiser tolerance, as above
