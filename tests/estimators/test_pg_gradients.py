"""Trajectory gradient estimators and the HARPG Hessian-vector estimate against hand values and exact expectations.

The exact checks enumerate every trajectory of a two-step problem with a
Bernoulli policy, so the expectation of an estimator is a finite sum and is
compared with the derivatives of the closed-form objective (float64 round-off,
no Monte Carlo).
"""

import itertools
import math

import pytest
import torch

from polab.estimators.pg_gradients import (
    discounted_reward_to_go,
    gpomdp_weights,
    hessian_vector_estimate,
    leave_one_out_baseline,
    policy_gradient,
    reinforce_weights,
    trajectory_log_prob,
    trajectory_surrogate,
)

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)
F32 = dict(rtol=1e-5, atol=1e-6)  # float32 round-off (STYLE.md)
GAMMA = 0.9


# ---------------------------------------------------------------------------
# hand values
# ---------------------------------------------------------------------------
def test_reward_to_go_hand_values():
    # gamma = 0.5, r = (1, 2, 3): G_2 = 0.25*3 = 0.75, G_1 = 0.5*2 + 0.75 = 1.75, G_0 = 1 + 1.75 = 2.75
    r = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(discounted_reward_to_go(r, gamma=0.5), torch.tensor([[2.75, 1.75, 0.75]], dtype=torch.float64), **F64)
    # mask (1, 1, 0): the third reward never happened -> (2, 1, 0)
    m = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(discounted_reward_to_go(r, m, gamma=0.5), torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64), **F64)


def test_gpomdp_and_reinforce_weights_hand_values():
    r = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, 1.0, 2.0]], dtype=torch.float64)
    # GPOMDP: G_t - gamma^t b_t = (2.75 - 0.5, 1.75 - 0.5, 0.75 - 0.5)
    torch.testing.assert_close(gpomdp_weights(r, gamma=0.5, baseline=b), torch.tensor([[2.25, 1.25, 0.25]], dtype=torch.float64), **F64)
    # REINFORCE: whole return 2.75 minus b_i = 0.75 at every step
    w = reinforce_weights(r, gamma=0.5, baseline=torch.tensor([0.75], dtype=torch.float64))
    torch.testing.assert_close(w, torch.full((1, 3), 2.0, dtype=torch.float64), **F64)


def test_leave_one_out_baseline_hand_values():
    v = torch.tensor([[1.0, 4.0], [2.0, 5.0], [6.0, 9.0]], dtype=torch.float64)
    m = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    # column 0: others' means (2+6)/2, (1+6)/2, (1+2)/2; column 1: rows 0 and 2 alive -> 9, (masked) 0, 4
    expect = torch.tensor([[4.0, 9.0], [3.5, 0.0], [1.5, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(leave_one_out_baseline(v, m), expect, **F64)


def test_surrogate_gradient_is_weighted_score_sum():
    # Phi = sum_t psi_t * log pi_t with log pi_t = t * theta: grad = sum_t psi_t * t = 0*1 + 1*2 = 2 (third step masked)
    th = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    lp = (torch.arange(3, dtype=torch.float64) * th)[None, :]
    w = torch.tensor([[1.0, 2.0, 5.0]], dtype=torch.float64)
    m = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    g = policy_gradient(trajectory_surrogate(lp, w, m), th)
    assert g.item() == pytest.approx(2.0, rel=1e-12)


# ---------------------------------------------------------------------------
# exact expectations on a two-step Bernoulli problem
# ---------------------------------------------------------------------------
TRAJ = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)), dtype=torch.float64)  # [4, 2]: (a_0, a_1)


def two_step_log_probs(theta):
    """P(a_t = 1) = sigmoid(theta_0 + t * theta_1 + theta_0 * theta_1); returns [4, 2] log-probabilities."""
    t = torch.arange(2, dtype=theta.dtype)
    logit = theta[0] + t * theta[1] + theta[0] * theta[1]  # the product term makes the Hessian of log pi non-zero
    return TRAJ * torch.nn.functional.logsigmoid(logit) + (1 - TRAJ) * torch.nn.functional.logsigmoid(-logit)


def two_step_rewards():
    a0, a1 = TRAJ[:, 0], TRAJ[:, 1]
    return torch.stack([a0, 2.0 * a0 * a1 - a1], 1)  # r_1 depends on the history


def exact_objective(theta):
    lp = two_step_log_probs(theta)
    ret = (two_step_rewards() * GAMMA ** torch.arange(2, dtype=theta.dtype)).sum(1)
    return (lp.sum(1).exp() * ret).sum()


THETA = torch.tensor([0.3, -0.7], dtype=torch.float64)


def exact_gradient(theta):
    th = theta.clone().requires_grad_(True)
    return torch.autograd.grad(exact_objective(th), th)[0]


def estimator_weights(kind):
    r = two_step_rewards()
    if kind == "gpomdp":
        return gpomdp_weights(r, gamma=GAMMA)
    if kind == "gpomdp_baseline":
        b = torch.stack([torch.full((4,), 0.4, dtype=torch.float64), 0.7 * TRAJ[:, 0]], 1)  # b_1 depends on a_0 only
        return gpomdp_weights(r, gamma=GAMMA, baseline=b)
    if kind == "reinforce":
        return reinforce_weights(r, gamma=GAMMA)
    return reinforce_weights(r, gamma=GAMMA, baseline=torch.full((4,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["gpomdp", "gpomdp_baseline", "reinforce", "reinforce_baseline"])
def test_gradient_estimators_are_exactly_unbiased(kind):
    th = THETA.clone().requires_grad_(True)
    lp = two_step_log_probs(th)
    prob = lp.sum(1).exp().detach()
    phi = trajectory_surrogate(lp, estimator_weights(kind))
    expected = policy_gradient(prob * phi, th, reduction="sum")  # sum_tau p(tau) g(tau), by linearity
    torch.testing.assert_close(expected, exact_gradient(THETA), **F64)


def test_baseline_changes_single_estimates_but_not_the_mean():
    th = THETA.clone().requires_grad_(True)

    def single(kind, i):  # the graph is consumed by each call, so rebuild it
        return policy_gradient(trajectory_surrogate(two_step_log_probs(th)[i:i + 1], estimator_weights(kind)[i:i + 1]), th)

    g_plain = [single("gpomdp", i) for i in range(4)]
    g_base = [single("gpomdp_baseline", i) for i in range(4)]
    assert max((a - b).abs().max().item() for a, b in zip(g_plain, g_base)) > 0.1


def per_trajectory_hvp_reference(theta, weights, v):
    """Loop reference that forms the 2x2 Hessians: u(tau) = Hess(Phi_tau) v + grad(Phi_tau) (grad log p_tau . v)."""
    out = []
    for i in range(4):
        def phi(x, i=i):
            return (weights[i] * two_step_log_probs(x)[i]).sum()

        def logp(x, i=i):
            return two_step_log_probs(x)[i].sum()

        H = torch.autograd.functional.hessian(phi, theta)
        gphi = torch.autograd.functional.jacobian(phi, theta)
        glp = torch.autograd.functional.jacobian(logp, theta)
        out.append(H @ v + gphi * (glp @ v))
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["gpomdp", "gpomdp_baseline", "reinforce_baseline"])
def test_hessian_vector_estimate_matches_loop_reference_and_is_exactly_unbiased(kind):
    v = torch.tensor([0.8, -0.25], dtype=torch.float64)
    w = estimator_weights(kind)
    ref = per_trajectory_hvp_reference(THETA, w, v)
    # per trajectory, against the loop reference
    for i in range(4):
        th = THETA.clone().requires_grad_(True)
        lp = two_step_log_probs(th)[i:i + 1]
        u = hessian_vector_estimate(trajectory_surrogate(lp, w[i:i + 1]), trajectory_log_prob(lp), th, v)
        torch.testing.assert_close(u, ref[i], **F64)
    # exact expectation against the Hessian of the closed-form objective
    th = THETA.clone().requires_grad_(True)
    lp = two_step_log_probs(th)
    prob = lp.sum(1).exp().detach()
    u_mean = hessian_vector_estimate(prob * trajectory_surrogate(lp, w), trajectory_log_prob(lp), th, v, reduction="sum")
    H = torch.autograd.functional.hessian(exact_objective, THETA)
    torch.testing.assert_close(u_mean, H @ v, **F64)


def test_hessian_vector_estimate_is_per_trajectory_mean_not_product_of_batch_means():
    v = torch.tensor([0.8, -0.25], dtype=torch.float64)
    w = estimator_weights("gpomdp")
    ref = per_trajectory_hvp_reference(THETA, w, v)
    th = THETA.clone().requires_grad_(True)
    lp = two_step_log_probs(th)
    u = hessian_vector_estimate(trajectory_surrogate(lp, w), trajectory_log_prob(lp), th, v)
    torch.testing.assert_close(u, ref.mean(0), **F64)
    # the product of batch aggregates (authors' code, see module docstring) differs on this batch
    th2 = THETA.clone().requires_grad_(True)
    lp2 = two_step_log_probs(th2)
    phi_bar = trajectory_surrogate(lp2, w).mean()
    g = torch.autograd.grad(phi_bar, th2, create_graph=True)[0]
    hv = torch.autograd.grad(g @ v, th2, retain_graph=True)[0]
    glp = torch.autograd.grad(trajectory_log_prob(lp2).mean(), th2, retain_graph=True)[0]
    batch_product = hv + g.detach() * (glp @ v)
    assert (batch_product - u).abs().max().item() > 1e-3


@pytest.mark.parametrize("c", [1.0, -0.5])
def test_batch_product_form_matches_its_loop_reference_and_its_exact_bias(c):
    # u_bp = Hess(mean Phi) v + c grad(mean Phi) (grad(mean log p) . v), from 2x2 Hessians formed by autograd.
    v = torch.tensor([0.8, -0.25], dtype=torch.float64)
    w = estimator_weights("gpomdp")

    def fresh():
        th = THETA.clone().requires_grad_(True)
        lp = two_step_log_probs(th)
        return th, lp

    def phibar(x, rows):
        return (w[rows] * two_step_log_probs(x)[rows]).sum(1).mean()

    def lbar(x, rows):
        return two_step_log_probs(x)[rows].sum(1).mean()

    def loop_bp(rows):
        H = torch.autograd.functional.hessian(lambda x: phibar(x, rows), THETA)
        gphi = torch.autograd.functional.jacobian(lambda x: phibar(x, rows), THETA)
        glp = torch.autograd.functional.jacobian(lambda x: lbar(x, rows), THETA)
        return H @ v + c * gphi * (glp @ v)

    pairs = list(itertools.product(range(4), repeat=2))
    bp = {}
    for rows in pairs:
        th, lp = fresh()
        idx = list(rows)
        bp[rows] = hessian_vector_estimate(trajectory_surrogate(lp[idx], w[idx]), trajectory_log_prob(lp[idx]), th, v,
                                           form="batch-product", product_scale=c)
    for rows in [(0, 1), (2, 2), (3, 0)]:
        torch.testing.assert_close(bp[rows], loop_bp(list(rows)), **F64)
    # exact expectation over batches of two independent trajectories: biased unless c = 1 and the batch has one row
    prob = two_step_log_probs(THETA).sum(1).exp()
    mean_bp = sum(prob[i] * prob[j] * bp[(i, j)] for i, j in pairs)
    H = torch.autograd.functional.hessian(exact_objective, THETA)
    bias = (mean_bp - H @ v).abs().max().item()
    assert bias > 1e-3
    # with one trajectory and c = 1 it is the per-trajectory (unbiased) estimate
    th, lp = fresh()
    one = hessian_vector_estimate(trajectory_surrogate(lp[:1], w[:1]), trajectory_log_prob(lp[:1]), th, v, form="batch-product")
    torch.testing.assert_close(one, per_trajectory_hvp_reference(THETA, w, v)[0], **F64)
    with pytest.raises(ValueError, match="needs reduction='mean'"):
        th, lp = fresh()
        hessian_vector_estimate(trajectory_surrogate(lp, w), trajectory_log_prob(lp), th, v, form="batch-product", reduction="sum")


def test_list_parameters_and_float32_follow_inputs():
    lin = torch.nn.Linear(3, 2)  # float32 parameters, a list of two tensors
    x = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    a = torch.tensor([[1], [0]])
    lp = torch.log_softmax(lin(x), -1).gather(1, a).T  # [batch=1, time=2]
    w = torch.tensor([[1.0, -2.0]])
    params = list(lin.parameters())
    g = policy_gradient(trajectory_surrogate(lp, w), params)
    assert [t.shape for t in g] == [p.shape for p in params] and all(t.dtype == torch.float32 for t in g)
    lp = torch.log_softmax(lin(x), -1).gather(1, a).T
    vec = [torch.ones_like(p) for p in params]
    u = hessian_vector_estimate(trajectory_surrogate(lp, w), trajectory_log_prob(lp), params, vec)
    assert all(t.dtype == torch.float32 and t.shape == p.shape for t, p in zip(u, params))
    # float64 copy of the same computation agrees to float32 round-off
    lin64 = torch.nn.Linear(3, 2).double()
    lin64.load_state_dict({k: t.double() for k, t in lin.state_dict().items()})
    lp64 = torch.log_softmax(lin64(x.double()), -1).gather(1, a).T
    u64 = hessian_vector_estimate(trajectory_surrogate(lp64, w.double()), trajectory_log_prob(lp64), list(lin64.parameters()),
                                  [t.double() for t in vec])
    for a32, a64 in zip(u, u64):
        torch.testing.assert_close(a32, a64.float(), **F32)


def test_hessian_is_never_formed_for_a_large_policy():
    # 2 x 10^6 parameters: a dense Hessian would need 4e12 entries (32 TB); the estimate needs O(dim) memory.
    d = 1_000_000
    gen = torch.Generator().manual_seed(0)
    W = torch.zeros(d, 2, requires_grad=True)
    feats = torch.randn(5, d, generator=gen) / math.sqrt(d)
    lp = torch.log_softmax(feats @ W, -1)[:, :1].T  # [batch=1, time=5]
    w = torch.randn(1, 5, generator=gen)
    v = torch.randn(d, 2, generator=gen)
    u = hessian_vector_estimate(trajectory_surrogate(lp, w), trajectory_log_prob(lp), W, v)
    assert u.shape == (d, 2) and torch.isfinite(u).all()


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_bad_inputs_raise_value_errors_naming_the_argument():
    r = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="gamma"):
        discounted_reward_to_go(r, gamma=1.5)
    with pytest.raises(ValueError, match="rewards"):
        discounted_reward_to_go(torch.ones(3), gamma=0.5)
    with pytest.raises(ValueError, match="rewards"):
        discounted_reward_to_go(torch.tensor([[1.0, float("nan")]]), gamma=0.5)
    with pytest.raises(ValueError, match="mask"):
        discounted_reward_to_go(r, torch.ones(2, 2), gamma=0.5)
    with pytest.raises(ValueError, match="baseline"):
        gpomdp_weights(r, gamma=0.5, baseline=torch.ones(2, 2))
    with pytest.raises(ValueError, match="baseline"):
        reinforce_weights(r, gamma=0.5, baseline=torch.ones(3))
    with pytest.raises(ValueError, match="log_probs"):
        trajectory_surrogate([[0.0, 0.0, 0.0]], r[:1])
    with pytest.raises(ValueError, match="weights"):
        trajectory_surrogate(torch.zeros(2, 3), torch.ones(2, 2))
    th = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="surrogate"):
        policy_gradient(th.sum(), th)
    with pytest.raises(ValueError, match="params"):
        policy_gradient((th * 1.0), [])
    with pytest.raises(ValueError, match="reduction"):
        policy_gradient(th * 1.0, th, reduction="max")
    with pytest.raises(ValueError, match="vector"):
        hessian_vector_estimate(th * 1.0, th * 2.0, th, torch.ones(3))
    with pytest.raises(ValueError, match="log_prob"):
        hessian_vector_estimate(th * 1.0, (th * 2.0)[:1], th, torch.ones(2))
