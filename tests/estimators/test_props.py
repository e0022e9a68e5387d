"""PROPS behaviour update and sampling-error measures (polab.estimators.props)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from polab.estimators.props import (
    TabularMDP,
    action_counts,
    empirical_policy_kl,
    exact_bandit_sampling_error,
    occupancy_l1,
    props_behaviour_loss,
    ros_behaviour_loss,
    sampling_error,
    simulate_tabular_sampling,
    tabular_props_behaviour,
)

D = torch.float64


def _batched(target, **opts):
    """Batched behaviour map of a one-state bandit for exact_bandit_sampling_error."""
    th = torch.log(torch.as_tensor(target, dtype=D))[None]

    def beh(C):
        C = torch.as_tensor(C, dtype=D)[:, None]
        return tabular_props_behaviour(th.expand(C.shape[0], 1, C.shape[-1]), C, **opts)[:, 0].numpy()

    return beh


def test_loss_value_and_gradient_match_the_written_out_formula():
    g = torch.Generator().manual_seed(0)
    B, A = 50, 3
    tz = torch.randn(B, A, generator=g, dtype=D)
    bz = (tz + 0.5 * torch.randn(B, A, generator=g, dtype=D)).requires_grad_(True)
    a = torch.randint(0, A, (B,), generator=g)
    w = torch.rand(B, generator=g, dtype=D)
    lt = torch.log_softmax(tz, -1).gather(1, a[:, None]).squeeze(1)
    for kl in ("sample", "exact"):
        lb = torch.log_softmax(bz, -1).gather(1, a[:, None]).squeeze(1)
        res = props_behaviour_loss(lb, lt, clip=0.3, kl_coef=0.1, kl=kl, behaviour_logits=bz, target_logits=tz,
                                   weights=w)
        got = torch.autograd.grad(res.loss, bz)[0]
        # reference written out from the authors' props_update (d5d91bd) + fc7fda8's regulariser / the full KL
        lb = torch.log_softmax(bz, -1).gather(1, a[:, None]).squeeze(1)
        r = torch.exp(lb - lt)
        term = torch.max(r, r.clamp(0.7, 1.3))
        if kl == "sample":
            reg = lt.exp() * (lt - lb)
        else:
            pt = torch.softmax(tz, -1)
            reg = (pt * (pt.log() - torch.log_softmax(bz, -1))).sum(-1)
        ref = ((term + 0.1 * reg) * w).sum() / w.sum()
        want = torch.autograd.grad(ref, bz)[0]
        torch.testing.assert_close(res.loss, ref, rtol=1e-12, atol=1e-12)  # float64, same operations
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        assert 0 < float(res.clip_fraction) < 1  # both regimes present, so the test exercises the clip
        k3 = (((r - 1) - (lb - lt)) * w).sum() / w.sum()
        assert float(res.approx_kl) == pytest.approx(float(k3.detach()), rel=1e-12)


def test_clip_stops_the_push_below_one_minus_eps_only():
    # rho = 0.5 (< 0.7: constant term, zero gradient), 1.0 and 2.0 (> 1.3: gradient of rho itself)
    tl = torch.log(torch.tensor([0.4, 0.4, 0.4], dtype=D))
    bl = torch.log(torch.tensor([0.2, 0.4, 0.8], dtype=D)).requires_grad_(True)
    res = props_behaviour_loss(bl, tl, clip=0.3)
    (gr,) = torch.autograd.grad(res.loss, bl)
    # d/d log pi_phi of rho/3 = rho/3
    torch.testing.assert_close(gr, torch.tensor([0.0, 1.0 / 3, 2.0 / 3], dtype=D), rtol=1e-12, atol=1e-15)
    assert float(res.clipped_term) == pytest.approx((0.7 + 1.0 + 2.0) / 3, rel=1e-12)
    assert float(res.clip_fraction) == pytest.approx(2 / 3, rel=1e-12)


def test_gradient_at_the_target_is_the_count_surplus():
    # derived in the module docstring: dL/dz_{s,b} at phi = theta is (n_{s,b} - n_s pi(b|s)) / n for the clipped
    # loss (rho = 1 lies inside the clip), plus nothing from the exact KL (its gradient vanishes at phi = theta) and
    # -lambda (w_{s,b} pi(b|s) - pi(b|s) sum_a w_{s,a} pi(a|s)), w = counts / n, from the authors' sample form
    g = torch.Generator().manual_seed(1)
    S, A = 4, 3
    z = torch.randn(S, A, generator=g, dtype=D)
    counts = torch.randint(0, 6, (S, A), generator=g).to(D)
    pi = torch.softmax(z, -1)
    want = (counts - counts.sum(-1, keepdim=True) * pi) / counts.sum()
    for kl in ("sample", "exact"):
        phi = z.clone().requires_grad_(True)
        lb = torch.log_softmax(phi, -1).reshape(-1)
        zz = dict(behaviour_logits=phi.unsqueeze(-2).expand(S, A, A).reshape(S * A, A),
                  target_logits=z.unsqueeze(-2).expand(S, A, A).reshape(S * A, A))
        loss = props_behaviour_loss(lb, torch.log_softmax(z, -1).reshape(-1), clip=0.3, kl_coef=0.5, kl=kl,
                                    weights=counts.reshape(-1), **zz).loss
        w = counts / counts.sum()
        extra = 0.0 if kl == "exact" else -0.5 * (w * pi - pi * (w * pi).sum(-1, keepdim=True))
        torch.testing.assert_close(torch.autograd.grad(loss, phi)[0], want + extra, rtol=1e-10, atol=1e-14)
    # ROS = one plain gradient step from theta: logits move by -lr * surplus
    ros = tabular_props_behaviour(z, counts, clip=None, kl_coef=0.0, steps=1, optimizer="sgd", learning_rate=0.7)
    torch.testing.assert_close(ros, torch.softmax(z - 0.7 * want, -1), rtol=1e-12, atol=1e-14)
    lb = torch.log_softmax(z, -1).reshape(-1)
    assert float(ros_behaviour_loss(lb, lb, weights=counts.reshape(-1))) == pytest.approx(1.0, rel=1e-12)


def test_behaviour_moves_towards_undersampled_actions_and_stays_put_on_balanced_data():
    z = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]], dtype=D))
    balanced = torch.tensor([[2.0, 1.0, 1.0], [2.0, 3.0, 5.0]], dtype=D)  # empirical = target in each state
    # the clipped term is flat in phi there (sum_a pi_hat(a) rho(a) = sum_a pi_phi(a) = 1) and the KL's gradient
    # vanishes at theta, so gradient descent does not move (float64 rounding of log/softmax only: 1e-15) ...
    out = tabular_props_behaviour(z, balanced, steps=16, learning_rate=0.1, optimizer="sgd")
    torch.testing.assert_close(out, z.exp(), rtol=0, atol=1e-15)
    # ... and Adam's first step is rounding-sized; later Adam steps amplify that rounding on the flat direction
    # (sign-like steps of size ~lr once |grad| >> eps = 1e-5), so only the first step is checked
    out = tabular_props_behaviour(z, balanced, steps=1, learning_rate=0.1)
    torch.testing.assert_close(out, z.exp(), rtol=0, atol=1e-12)
    skew = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=D)  # state 0: only action 0; state 1: no data
    out = tabular_props_behaviour(z, skew, steps=16, learning_rate=0.1)
    assert float(out[0, 0]) < 0.5 and float(out[0, 1]) > 0.25 and float(out[0, 2]) > 0.25
    torch.testing.assert_close(out[1], z[1].exp(), rtol=1e-12, atol=1e-14)
    # the clip bounds the push: the over-sampled action's ratio cannot be driven far below 1 - eps = 0.7
    # (gradient descent: the last step crosses the kink by at most lr * |grad| ~ 0.05 in the logit, < 5% in pi;
    # Adam's momentum would carry on past it, which is why the authors stop early on the approximate KL)
    far = tabular_props_behaviour(z, skew, kl_coef=0.0, steps=400, learning_rate=0.1, optimizer="sgd")
    assert 0.7 * 0.5 * 0.95 < float(far[0, 0]) < 0.7 * 0.5
    assert float(tabular_props_behaviour(z, skew, kl_coef=0.0, steps=400, learning_rate=0.1)[0, 0]) < 0.7 * 0.5 * 0.95
    stopped = tabular_props_behaviour(z, skew, kl_coef=0.0, steps=400, learning_rate=0.1, target_kl=0.01)
    r = stopped[0] / z[0].exp()
    assert float((skew[0] / 4 * ((r - 1) - r.log())).sum()) < 0.05  # early stop right after crossing 0.01


def test_sampling_error_measures_hand_values_and_the_empirical_policy_identity():
    pi = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=D)
    counts = torch.tensor([[3.0, 1.0], [2.0, 0.0]], dtype=D)
    # TV: state 0 (4 visits) 0.5 |0.75-0.5| * 2 = 0.25, state 1 (2 visits) 0.1; weighted (4*0.25 + 2*0.1)/6
    assert float(sampling_error(counts, pi, measure="tv")) == pytest.approx((1.0 + 0.2) / 6, rel=1e-12)
    # KL = mean over the data of log(pi_hat(a|s) / pi(a|s)) (authors' compute_se with the tabular MLE)
    s = torch.tensor([0, 0, 0, 0, 1, 1])
    a = torch.tensor([0, 0, 0, 1, 0, 0])
    assert torch.equal(action_counts(s, a, num_states=2, num_actions=2), counts.long())
    emp = counts / counts.sum(-1, keepdim=True)
    direct = (emp[s, a].log() - pi[s, a].log()).mean()
    assert float(sampling_error(counts, pi, measure="kl")) == pytest.approx(float(direct), rel=1e-12)
    d = torch.tensor([[0.3, 0.3], [0.35, 0.05]], dtype=D)
    assert float(occupancy_l1(counts, d)) == pytest.approx(abs(0.5 - 0.3) + abs(1 / 6 - 0.3) + abs(1 / 3 - 0.35) + 0.05)
    assert float(sampling_error(torch.zeros(2, 2), pi)) == 0.0


def test_empirical_policy_kl_converges_to_the_count_ratio_kl_on_one_hot_features():
    # one-hot state features: the linear head can represent pi_hat = counts / n_s exactly, so the fitted KL
    # converges to sampling_error(kl); 500 Adam steps at lr 0.2 bring it within 1e-8 (measured 1.3e-12)
    g = torch.Generator().manual_seed(2)
    pi = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]], dtype=D)
    s = torch.randint(0, 3, (60,), generator=g)
    a = torch.multinomial(pi[s], 1, generator=g).squeeze(1)
    c = action_counts(s, a, num_states=3, num_actions=2)
    assert bool((c > 0).all())
    f = torch.eye(3, dtype=D)[s]
    got = empirical_policy_kl(f, a, pi.log().T.contiguous(), torch.zeros(2, dtype=D), steps=500, learning_rate=0.2)
    assert got == pytest.approx(float(sampling_error(c, pi, measure="kl")), abs=1e-8)
    assert empirical_policy_kl(f, a, pi.log().T.contiguous(), torch.zeros(2, dtype=D), steps=0) == 0.0


def test_exact_on_policy_sampling_error_matches_the_binomial_sum():
    p = np.array([0.7, 0.3])
    got = exact_bandit_sampling_error(p, 12)
    for t in (1, 5, 12):
        k = np.arange(t + 1)
        want = np.sum(stats.binom.pmf(k, t, 0.7) * np.abs(k / t - 0.7))  # TV of two actions = |p_hat - p|
        assert got[t - 1] == pytest.approx(want, rel=1e-12)


def test_exact_props_law_matches_monte_carlo():
    # the DP's expected SE against 4000 simulated PROPS sequences; 4 standard errors (two-sided ~6e-5 per point)
    p = np.array([0.6, 0.3, 0.1])
    beh = _batched(p, steps=8, learning_rate=0.2)
    exact = exact_bandit_sampling_error(p, 8, behaviour=beh)
    mdp = TabularMDP(torch.ones(1, 3, 1, dtype=D), torch.ones(1, dtype=D), horizon=100)
    steps, counts = simulate_tabular_sampling(mdp, torch.as_tensor(p)[None], num_samples=8, replicates=4000,
                                              generator=torch.Generator().manual_seed(3), behaviour="props",
                                              record_every=1, props_options=dict(steps=8, learning_rate=0.2))
    se = sampling_error(counts, torch.as_tensor(p)[None]).numpy()  # [8, 4000]
    z = (se.mean(1) - exact) / (se.std(1, ddof=1) / np.sqrt(se.shape[1]))
    assert np.all(np.abs(z[1:]) < 4), z  # t = 1 has no behaviour update (std 0 is impossible: 3 outcomes)


@pytest.mark.parametrize("opts", [dict(), dict(kl="sample"), dict(target_kl=0.03)])
def test_props_lowers_the_exact_expected_sampling_error_at_every_sample_size(opts):
    p = np.array([0.7, 0.3])
    on = exact_bandit_sampling_error(p, 20)
    props = exact_bandit_sampling_error(p, 20, behaviour=_batched(p, **opts))
    assert props[0] == pytest.approx(on[0], rel=1e-12)  # first draw: no data yet, behaviour = target
    assert np.all(props[1:] < on[1:])
    assert props[-1] < 0.7 * on[-1]  # measured ratio 0.43-0.48 at n = 20 with these options


def test_props_lowers_sampling_error_on_a_small_mdp_statistically():
    # 3-state, 2-action random MDP, 48 steps (episodes of 12); 300 independent replicates per method.
    g = torch.Generator().manual_seed(4)
    P = torch.distributions.Dirichlet(torch.ones(3, dtype=D)).sample((3, 2))
    mdp = TabularMDP(P, torch.tensor([1.0, 0.0, 0.0], dtype=D), horizon=12)
    pi = torch.tensor([[0.8, 0.2], [0.5, 0.5], [0.3, 0.7]], dtype=D)
    se = {}
    for beh in ("on-policy", "props"):
        _, c = simulate_tabular_sampling(mdp, pi, num_samples=48, replicates=300, generator=g, behaviour=beh,
                                         update_every=2)
        se[beh] = sampling_error(c[-1], pi).numpy()
    # one-sided Mann-Whitney; holds at alpha = 1e-3 (measured p ~ 3e-30, mean SE ratio 0.61)
    assert stats.mannwhitneyu(se["props"], se["on-policy"], alternative="less").pvalue < 1e-3
    assert se["props"].mean() < 0.85 * se["on-policy"].mean()


def test_bad_inputs_name_the_argument():
    x = torch.zeros(3, dtype=D)
    with pytest.raises(ValueError, match="clip"):
        props_behaviour_loss(x, x, clip=1.5)
    with pytest.raises(ValueError, match="kl='exact' needs"):
        props_behaviour_loss(x, x, kl_coef=0.1, kl="exact")
    with pytest.raises(ValueError, match="same shape|share a shape"):
        props_behaviour_loss(x, torch.zeros(4, dtype=D))
    with pytest.raises(ValueError, match="counts"):
        tabular_props_behaviour(torch.zeros(2, 2, dtype=D), -torch.ones(2, 2, dtype=D))
    with pytest.raises(ValueError, match="target_probs"):
        sampling_error(torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="actions must lie"):
        action_counts([0, 1], [0, 5], num_states=2, num_actions=2)
    with pytest.raises(ValueError, match="behaviour must return"):
        exact_bandit_sampling_error([0.5, 0.5], 2, behaviour=lambda c: np.ones((len(c), 3)))
