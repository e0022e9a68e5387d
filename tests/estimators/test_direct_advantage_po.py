"""Direct Advantage PO: critic targets, step advantages, the closed-form minimiser and policy improvement."""

import math

import pytest
import torch

from polab.estimators.direct_advantage_po import (
    critic_loss,
    direct_advantage_po_loss,
    direct_advantage_po_optimal_policy,
    mc_value_targets,
    step_advantages,
)

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)


def _lbfgs(objective, x0):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        v = objective(x)
        v.backward()
        return v

    opt.step(closure)
    return x.detach()


def test_mc_targets_hand_values():
    res = mc_value_targets(torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=torch.float64), mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    torch.testing.assert_close(res.value, torch.tensor([0.75, 1 / 3], dtype=torch.float64), **F64)
    torch.testing.assert_close(res.std_error, torch.tensor([math.sqrt(0.75 * 0.25 / 4), math.sqrt(2 / 9 / 3)],
                                                           dtype=torch.float64), **F64)
    assert res.num_rollouts.tolist() == [4, 3]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mc_value_targets(torch.tensor([[2.0]]))


@pytest.mark.parametrize("kind", ["mse", "bce"])
def test_critic_loss_is_minimised_at_mc_targets(kind):
    t = torch.tensor([0.75, 0.2, 0.5], dtype=torch.float64)
    x0 = torch.zeros(3, dtype=torch.float64)
    x = _lbfgs(lambda p: critic_loss(p, t, kind=kind), x0)
    v = x if kind == "mse" else torch.sigmoid(x)
    torch.testing.assert_close(v, t, rtol=1e-8, atol=1e-10)  # optimiser tolerance (gradient norm ~1e-14)
    # hand value: mse of (0, 0, 0) against t = (0.5625 + 0.04 + 0.25) / 3
    assert float(critic_loss(torch.zeros(3, dtype=torch.float64), t)) == pytest.approx(0.8525 / 3, rel=1e-12)


def test_step_advantages_hand_values_and_telescoping():
    v = torch.tensor([[0.5, 0.6, 0.2, 0.9], [0.3, 0.7, 9.0, 9.0]], dtype=torch.float64)  # row 2 has 1 step
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    a = step_advantages(v, mask)
    torch.testing.assert_close(a, torch.tensor([[0.1, -0.4, 0.7], [0.4, 0.0, 0.0]], dtype=torch.float64), **F64)
    a2 = step_advantages(v, mask, final_values=torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(a2.sum(dim=1), torch.tensor([0.5, -0.3], dtype=torch.float64), **F64)  # V(s_L) - V(s_0)
    with pytest.raises(ValueError, match="prefix"):
        step_advantages(v, torch.tensor([[1, 0, 1], [1, 0, 0]]))
    with pytest.raises(ValueError, match=r"\[batch, steps\]"):
        step_advantages(v, torch.ones(2, 4))


def _one_state(seed, k=6, beta=0.5):
    g = torch.Generator().manual_seed(seed)
    ref_logp = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), dim=0)
    adv = 0.5 * torch.randn(k, generator=g, dtype=torch.float64)
    return ref_logp, adv, beta


def _loss_on_all_actions(theta, ref_logp, adv, beta, centred):
    # every action of one state, weighted by pi_ref (the expectation over a ~ pi_ref), as a [1, k] batch of steps
    k = ref_logp.shape[0]
    lp = torch.log_softmax(theta, dim=0)[None]
    return direct_advantage_po_loss(lp, ref_logp[None], adv[None], torch.ones(1, k), beta=beta,
                                    weights=ref_logp.exp()[None],
                                    state_ids=torch.zeros(1, k, dtype=torch.long) if centred else None).loss


@pytest.mark.parametrize("seed", [0, 1])
def test_state_centred_loss_has_the_closed_form_minimiser(seed):
    ref_logp, adv, beta = _one_state(seed)
    target = direct_advantage_po_optimal_policy(ref_logp, adv, beta=beta)
    assert float(_loss_on_all_actions(target, ref_logp, adv, beta, True)) < 1e-24  # exactly 0 at pi*
    theta = _lbfgs(lambda th: _loss_on_all_actions(th, ref_logp, adv, beta, True), ref_logp.clone())
    torch.testing.assert_close(torch.log_softmax(theta, dim=0), target, rtol=1e-7, atol=1e-9)  # optimiser tolerance


def test_uncentred_loss_minimiser_is_pi_star_only_when_log_z_is_zero():
    ref_logp, adv, beta = _one_state(2)
    # shift A so that log Z = log E_ref exp(A / beta) = 0: then pi* is the minimiser
    log_z = torch.logsumexp(ref_logp + adv / beta, dim=0)
    adv0 = adv - beta * log_z
    target = direct_advantage_po_optimal_policy(ref_logp, adv0, beta=beta)
    theta = _lbfgs(lambda th: _loss_on_all_actions(th, ref_logp, adv0, beta, False), ref_logp.clone())
    torch.testing.assert_close(torch.log_softmax(theta, dim=0), target, rtol=1e-7, atol=1e-9)
    # otherwise it is not (the documented reason for the centred option)
    theta = _lbfgs(lambda th: _loss_on_all_actions(th, ref_logp, adv, beta, False), ref_logp.clone())
    gap = (torch.softmax(theta, dim=0) - direct_advantage_po_optimal_policy(ref_logp, adv, beta=beta).exp()).abs().sum()
    assert float(gap) > 1e-3


def test_centring_equals_loop_reference():
    g = torch.Generator().manual_seed(3)
    lp = torch.randn(4, 5, generator=g, dtype=torch.float64)
    ref = torch.randn(4, 5, generator=g, dtype=torch.float64)
    adv = torch.randn(4, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    sid = torch.randint(0, 4, (4, 5), generator=g)
    w = torch.rand(4, 5, generator=g, dtype=torch.float64)
    beta = 0.3
    res = direct_advantage_po_loss(lp, ref, adv, mask, beta=beta, state_ids=sid, weights=w)
    e = {}
    for b in range(4):
        for t in range(5):
            if mask[b, t]:
                e[(b, t)] = float(lp[b, t] - ref[b, t] - adv[b, t] / beta)
    num, den = 0.0, 0.0
    for (b, t), val in e.items():
        same = [(bb, tt) for (bb, tt) in e if sid[bb, tt] == sid[b, t]]
        mean = sum(float(w[x]) * e[x] for x in same) / sum(float(w[x]) for x in same)
        num += float(w[b, t]) * (val - mean) ** 2
        den += float(w[b, t])
    assert float(res.loss) == pytest.approx(num / den, rel=1e-10)
    plain = direct_advantage_po_loss(lp, ref, adv, mask, beta=beta)
    expect = sum(v**2 for v in e.values()) / len(e)
    assert float(plain.loss) == pytest.approx(expect, rel=1e-10)


def _tree(seed, k=3, depth=2):
    """Deterministic tree MDP: k actions per node, terminal success probabilities at the leaves."""
    g = torch.Generator().manual_seed(seed)
    leaves = torch.rand(k**depth, generator=g, dtype=torch.float64)
    ref = [torch.log_softmax(torch.randn(k ** d, k, generator=g, dtype=torch.float64), dim=1) for d in range(depth)]
    return leaves, ref


def _values(leaves, logps, k=3):
    """V at every level under per-node log-policies (levels from the root)."""
    vals = [leaves]
    for lp in reversed(logps):
        child = vals[0].reshape(-1, k)
        vals.insert(0, (lp.exp() * child).sum(dim=1))
    return vals


@pytest.mark.parametrize("beta", [0.05, 0.5, 5.0])
def test_one_step_improves_the_return_on_a_tree_mdp(beta):
    # exact: A = V_ref(s') - V_ref(s); pi* = pi_ref exp(A / beta) / Z at every node; J(pi*) >= J(pi_ref)
    leaves, ref = _tree(7)
    v_ref = _values(leaves, ref)
    new = []
    for d, lp in enumerate(ref):
        adv = v_ref[d + 1].reshape(-1, 3) - v_ref[d][:, None]
        # E_ref[A] = 0 per state (A is pi_ref's advantage)
        torch.testing.assert_close((lp.exp() * adv).sum(dim=1), torch.zeros(lp.shape[0], dtype=torch.float64), **F64)
        new.append(direct_advantage_po_optimal_policy(lp, adv, beta=beta))
    j_ref = float(v_ref[0][0])
    j_new = float(_values(leaves, new)[0][0])
    assert j_new >= j_ref - 1e-12
    assert j_new > j_ref + 1e-6  # strict: leaves differ, so every non-degenerate step helps


def test_errors():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="beta"):
        direct_advantage_po_loss(z, z, z, torch.ones(2, 3), beta=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        direct_advantage_po_loss(z, z, torch.zeros(2, 2), torch.ones(2, 3), beta=1.0)
    with pytest.raises(ValueError, match="integer"):
        direct_advantage_po_loss(z, z, z, torch.ones(2, 3), beta=1.0, state_ids=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="non-finite"):
        direct_advantage_po_loss(torch.full((2, 3), math.nan), z, z, torch.ones(2, 3), beta=1.0)
    with pytest.raises(ValueError, match="kind"):
        critic_loss(torch.zeros(2), torch.zeros(2), kind="huber")
    out = direct_advantage_po_loss(z.requires_grad_(True), z, z, torch.ones(2, 3), beta=1.0)
    assert out.loss.dtype == torch.float32


def test_centred_loss_is_invariant_to_per_state_advantage_shifts():
    # a per-state constant in A (e.g. a biased critic V(s)) only moves log Z(s): the centred loss ignores it
    g = torch.Generator().manual_seed(8)
    lp = torch.randn(3, 4, generator=g, dtype=torch.float64)
    ref = torch.randn(3, 4, generator=g, dtype=torch.float64)
    adv = torch.randn(3, 4, generator=g, dtype=torch.float64)
    sid = torch.tensor([[0, 0, 1, 1], [0, 2, 1, 2], [3, 3, 3, 0]])
    mask = torch.ones(3, 4)
    base = direct_advantage_po_loss(lp, ref, adv, mask, beta=0.5, state_ids=sid).loss
    shift = torch.tensor([0.3, -1.0, 2.0, 0.7], dtype=torch.float64)[sid]
    torch.testing.assert_close(direct_advantage_po_loss(lp, ref, adv + shift, mask, beta=0.5, state_ids=sid).loss, base, **F64)
    assert float((direct_advantage_po_loss(lp, ref, adv + shift, mask, beta=0.5).loss - direct_advantage_po_loss(
        lp, ref, adv, mask, beta=0.5).loss).abs()) > 1e-3  # the uncentred loss does not ignore it
