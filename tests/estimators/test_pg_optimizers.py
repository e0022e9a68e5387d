"""N-PG-IGT, (N)-HARPG and the PG baselines: hand-computed steps, transport identities on quadratics, any torch policy, errors.

Schedules are those of polab.theory.pg_sample_complexity (authors' code
aabkn/Stochastic-Policy-Gradient-Methods @ c4e9b7a, theory_core.md 4.3-4.5).
"""

import math

import pytest
import torch

from polab.estimators.pg_optimizers import METHODS, PGMethod, PolicyGradientOptimizer, pg_init, pg_query, pg_update

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)


def vec(*x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------------------
# hand-computed steps
# ---------------------------------------------------------------------------
def test_first_step_of_every_method_uses_the_gradient():
    th0, g = vec(1.0, 2.0), vec(3.0, 4.0)  # |g| = 5
    for name in METHODS:
        m = PGMethod(name, step_size0=0.1)
        q = pg_query(pg_init(th0), m, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(q.gradient_point, th0, **F64)  # look-ahead point = theta_0 on the first step
        assert q.hessian_point is None
        s = pg_update(pg_init(th0), m, g)
        step = g / 5.0 if m.normalized else g
        torch.testing.assert_close(s.params, th0 + 0.1 * step, **F64)  # gamma_0 = 0.1 at t = 0 for every schedule
        torch.testing.assert_close(s.prev_params, th0, **F64)
        assert s.step == 1


def test_second_step_hand_values():
    th0, g0, g1 = vec(0.0, 0.0), vec(3.0, 4.0), vec(0.0, 1.0)
    # momentum_pg: t=1: gamma_1 = 0.1 * 2/3, eta_1 = (2/3)^(2/3); d_1 = (1-eta) g0 + eta g1, normalised
    s = pg_update(pg_init(th0), "momentum_pg", g0)
    s1 = pg_update(s, "momentum_pg", g1)
    eta = (2 / 3) ** (2 / 3)
    d = (1 - eta) * g0 + eta * g1
    torch.testing.assert_close(s1.direction, d, **F64)
    torch.testing.assert_close(s1.params, s.params + 0.1 * (2 / 3) * d / d.norm(), **F64)
    # vanilla_pg: t=1: gamma_1 = 0.1 (2/3)^(2/3), d = g1 (no memory)
    s = pg_update(pg_update(pg_init(th0), "vanilla_pg", g0), "vanilla_pg", g1)
    torch.testing.assert_close(s.params, 0.1 * g0 + 0.1 * (2 / 3) ** (2 / 3) * g1, **F64)
    # harpg: t=1: eta_1 = 2/3, gamma_1 = 0.1 sqrt(2/3); d_1 = (1-eta)(d_0 + u) + eta g1, unnormalised
    u = vec(-1.0, 0.5)
    s = pg_update(pg_init(th0), "harpg", g0)
    s1 = pg_update(s, "harpg", g1, hessian_vector=u)
    d = (1 / 3) * (g0 + u) + (2 / 3) * g1
    torch.testing.assert_close(s1.params, s.params + 0.1 * math.sqrt(2 / 3) * d, **F64)


def test_igt_look_ahead_and_harpg_interpolation_points():
    th0, g0 = vec(1.0, -1.0), vec(0.6, 0.8)
    s = pg_update(pg_init(th0), "npg_igt", g0)  # theta_1 = theta_0 + 0.1 g0 (|g0| = 1)
    q = pg_query(s, "npg_igt")
    eta = (2 / 3) ** 0.8
    torch.testing.assert_close(q.gradient_point, s.params + (1 - eta) / eta * (s.params - th0), **F64)
    s = pg_update(pg_init(th0), "n_harpg", g0)
    gen = torch.Generator().manual_seed(3)
    q = pg_query(s, "n_harpg", generator=gen)
    qt = q.interpolation
    assert 0.0 <= float(qt) <= 1.0
    torch.testing.assert_close(q.hessian_point, qt * s.params + (1 - qt) * th0, **F64)
    torch.testing.assert_close(q.displacement, s.params - th0, **F64)
    torch.testing.assert_close(q.gradient_point, s.params, **F64)
    # the same generator state gives the same q_t
    q2 = pg_query(s, "n_harpg", generator=torch.Generator().manual_seed(3))
    assert float(q2.interpolation) == float(qt)


def test_zero_direction_gives_no_step():
    s = pg_update(pg_init(vec(1.0, 2.0)), "normalized_pg", vec(0.0, 0.0))
    torch.testing.assert_close(s.params, vec(1.0, 2.0), **F64)


def test_rows_are_independent_problems_normalised_separately():
    th = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    g = torch.tensor([[3.0, 4.0], [0.0, -2.0]], dtype=torch.float64)
    s = pg_update(pg_init(th), "npg_igt", g)
    for i in range(2):
        si = pg_update(pg_init(th[i]), "npg_igt", g[i])
        torch.testing.assert_close(s.params[i], si.params, **F64)


# ---------------------------------------------------------------------------
# transport identities on a concave quadratic (theory_core.md 4.6, 2a and 2b)
# ---------------------------------------------------------------------------
HQ = torch.tensor([[-2.0, 0.5], [0.5, -1.0]], dtype=torch.float64)  # negative definite
THETA_STAR = vec(1.0, -2.0)


def quad_grad(th):
    return (th - THETA_STAR) @ HQ.T


@pytest.mark.parametrize("name", ["npg_igt", "harpg", "n_harpg"])
def test_direction_equals_true_gradient_with_exact_oracles_on_a_quadratic(name):
    # IGT: (1-eta) grad(theta_{t-1}) + eta grad(look-ahead) = grad(theta_t) when grad is affine.
    # HARPG: E_q[H] v_t = grad(theta_t) - grad(theta_{t-1}) exactly, so d_t = grad(theta_t).
    state = pg_init(vec(3.0, 3.0))
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        q = pg_query(state, name, generator=gen)
        u = None if q.hessian_point is None else q.displacement @ HQ.T
        state_next = pg_update(state, name, quad_grad(q.gradient_point), hessian_vector=u)
        torch.testing.assert_close(state_next.direction, quad_grad(state.params), **F64)
        state = state_next


def test_plain_momentum_lags_on_the_same_quadratic():
    # negative control for the identity above: the exponential average of past gradients is not grad(theta_t)
    state = pg_init(vec(3.0, 3.0))
    err = []
    for _ in range(10):
        q = pg_query(state, "momentum_pg")
        nxt = pg_update(state, "momentum_pg", quad_grad(q.gradient_point))
        err.append((nxt.direction - quad_grad(state.params)).norm().item())
        state = nxt
    assert max(err) > 1e-2


def test_authors_igt_lookahead_uses_the_previous_eta_and_its_transport_error():
    # eta_prev (aabkn/Stochastic-Policy-Gradient-Methods NIGT_optimizer.py): look-ahead with eta_{t-1}.
    m_prev = PGMethod("npg_igt", igt_lookahead="eta_prev")
    th0, g0 = vec(1.0, -1.0), vec(0.6, 0.8)
    s1 = pg_update(pg_init(th0), m_prev, g0)
    # t = 1: eta_0 = 1 -> (1 - 1)/1 = 0: no extrapolation
    torch.testing.assert_close(pg_query(s1, m_prev).gradient_point, s1.params, **F64)
    s2 = pg_update(s1, m_prev, vec(0.0, 1.0))
    eta1 = (2 / 3) ** 0.8  # eta_{t-1} at t = 2
    torch.testing.assert_close(pg_query(s2, m_prev).gradient_point, s2.params + (1 - eta1) / eta1 * (s2.params - s1.params), **F64)
    # on the quadratic the transport error e_t = d_t - grad(theta_t) obeys (derived in pg_optimizers' docstring)
    # e_t = (1 - eta_t) e_{t-1} + (eta_t/eta_{t-1} - 1) H (theta_t - theta_{t-1}), e_0 = 0; it is not zero
    state = pg_init(vec(3.0, 3.0))
    e = torch.zeros(2, dtype=torch.float64)
    for t in range(12):
        q = pg_query(state, m_prev)
        nxt = pg_update(state, m_prev, quad_grad(q.gradient_point))
        if t >= 1:
            eta_t, eta_p = m_prev.schedule(t).gradient_weight, m_prev.schedule(t - 1).gradient_weight
            e = (1 - eta_t) * e + (eta_t / eta_p - 1) * (state.params - state.prev_params) @ HQ.T
        torch.testing.assert_close(nxt.direction, quad_grad(state.params) + e, **F64)
        state = nxt
    assert e.norm().item() > 1e-4
    with pytest.raises(ValueError, match="igt_lookahead"):
        PGMethod("npg_igt", igt_lookahead="eta_next")
    with pytest.raises(ValueError, match="npg_igt only"):
        PGMethod("n_harpg", igt_lookahead="eta_prev")


@pytest.mark.parametrize("name", ["npg_igt", "harpg", "momentum_pg"])
def test_maximize_false_descends_on_the_loss_exactly_like_ascent_on_its_negative(name):
    # loss(theta) = -J(theta) with J the concave quadratic: gradients of the loss with maximize=False must give
    # the same iterates as gradients of J with maximize=True.
    up = down = pg_init(vec(3.0, 3.0))
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(8):
        qa, qb = pg_query(up, name, generator=gen_a), pg_query(down, name, generator=gen_b)
        ua = None if qa.hessian_point is None else qa.displacement @ HQ.T
        ub = None if qb.hessian_point is None else -(qb.displacement @ HQ.T)
        up = pg_update(up, name, quad_grad(qa.gradient_point), hessian_vector=ua, maximize=True)
        down = pg_update(down, name, -quad_grad(qb.gradient_point), hessian_vector=ub, maximize=False)
        torch.testing.assert_close(down.params, up.params, **F64)
    with pytest.raises(ValueError, match="maximize must be"):
        pg_update(up, name, vec(1.0, 0.0), maximize="yes")


@pytest.mark.parametrize("name", METHODS)
def test_every_method_converges_with_exact_gradients(name):
    # deterministic ascent on the concave quadratic from distance 5.4: step scales chosen so that
    # sum_t gamma_t over 4000 steps exceeds the distance (normalised steps move exactly gamma_t;
    # with gamma_t = 2/(t+2) the sum is 2 ln(2001) = 15.2)
    m = PGMethod(name, step_size0=1.0 if PGMethod(name).normalized else 0.5)
    state = pg_init(vec(3.0, 3.0))
    gen = torch.Generator().manual_seed(0)
    for _ in range(4000):
        q = pg_query(state, m, generator=gen)
        u = None if q.hessian_point is None else q.displacement @ HQ.T
        state = pg_update(state, m, quad_grad(q.gradient_point), hessian_vector=u)
    # the final error is bounded by the last steps' length gamma_t ~ 1e-3..1e-2 (normalised methods oscillate at that scale)
    assert (state.params - THETA_STAR).norm().item() < 0.05


# ---------------------------------------------------------------------------
# any torch policy
# ---------------------------------------------------------------------------
def make_policy(seed=0):
    torch.manual_seed(seed)  # test-only: deterministic initial weights
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def bandit_batch(policy, gen, n=8):
    x = torch.randn(n, 3, generator=gen)
    logp = torch.log_softmax(policy(x), -1)
    a = torch.multinomial(logp.exp().detach(), 1, generator=gen)
    lp = logp.gather(1, a)  # [batch, time=1]
    r = (a.float() * x[:, :1]).detach()  # arm 1 pays x_0
    return lp, r


@pytest.mark.parametrize("name", METHODS)
def test_module_wrapper_runs_any_policy_and_matches_the_functional_update(name):
    from polab.estimators.pg_gradients import gpomdp_weights, hessian_vector_estimate, policy_gradient, trajectory_log_prob, trajectory_surrogate

    policy = make_policy()
    params = list(policy.parameters())
    before = torch.nn.utils.parameters_to_vector(params).detach().clone()
    opt = PolicyGradientOptimizer(params, PGMethod(name, step_size0=0.05))
    gen = torch.Generator().manual_seed(1)
    state = opt.state
    for _ in range(3):
        q = opt.query(generator=gen)
        torch.testing.assert_close(torch.nn.utils.parameters_to_vector(params).detach(), q.gradient_point)
        lp, r = bandit_batch(policy, gen)
        g = policy_gradient(trajectory_surrogate(lp, gpomdp_weights(r, gamma=1.0)), params)
        u = None
        if q.hessian_point is not None:
            opt.load(q.hessian_point)
            lp2, r2 = bandit_batch(policy, gen)
            u = hessian_vector_estimate(trajectory_surrogate(lp2, gpomdp_weights(r2, gamma=1.0)), trajectory_log_prob(lp2), params,
                                        opt.vector_to_list(q.displacement))
        expected = pg_update(state, opt.method, opt.flatten(g), hessian_vector=None if u is None else opt.flatten(u))
        opt.step(g, u)
        torch.testing.assert_close(opt.state.params, expected.params)
        torch.testing.assert_close(torch.nn.utils.parameters_to_vector(params).detach(), expected.params)
        state = opt.state
    assert (torch.nn.utils.parameters_to_vector(params).detach() - before).abs().max() > 0  # parameters actually changed
    # state_dict round trip restores parameters and state
    sd = opt.state_dict()
    other = PolicyGradientOptimizer(make_policy(seed=5).parameters(), "vanilla_pg")
    other.load_state_dict(sd)
    assert other.method == opt.method and other.state.step == opt.state.step
    torch.testing.assert_close(other.state.params, opt.state.params)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_bad_inputs_raise_value_errors_naming_the_argument():
    th = vec(0.0, 0.0)
    with pytest.raises(ValueError, match="method"):
        PGMethod("adam")
    with pytest.raises(ValueError, match="method"):
        pg_update(pg_init(th), 3, th)
    with pytest.raises(ValueError, match="step_size0"):
        PGMethod("npg_igt", step_size0=0.0)
    with pytest.raises(ValueError, match="params"):
        pg_init(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="params"):
        pg_init(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="gradient"):
        pg_update(pg_init(th), "vanilla_pg", vec(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="gradient"):
        pg_update(pg_init(th), "vanilla_pg", vec(1.0, float("inf")))
    s = pg_update(pg_init(th), "harpg", vec(1.0, 0.0))
    with pytest.raises(ValueError, match="generator"):
        pg_query(s, "harpg")
    with pytest.raises(ValueError, match="hessian_vector"):
        pg_update(s, "harpg", vec(1.0, 0.0))
    with pytest.raises(ValueError, match="hessian_vector"):
        pg_update(pg_init(th), "npg_igt", vec(1.0, 0.0), hessian_vector=vec(0.0, 0.0))
    with pytest.raises(ValueError, match="params"):
        PolicyGradientOptimizer([], "npg_igt")


# ---------------------------------------------------------------------------
# (N)-HARPG safeguard (off by default)
# ---------------------------------------------------------------------------
def test_hessian_clip_shrinks_only_large_hessian_vector_estimates_per_problem():
    th0 = torch.zeros(2, 2, dtype=torch.float64)
    g0 = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    g1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    u = torch.tensor([[0.0, 30.0], [0.3, 0.4]], dtype=torch.float64)  # norms 30 and 0.5
    gen = torch.Generator().manual_seed(0)
    for name in ("harpg", "n_harpg"):
        plain, clip = PGMethod(name, step_size0=0.1), PGMethod(name, step_size0=0.1, hessian_clip=10.0)
        s1 = pg_update(pg_init(th0), plain, g0)
        v = s1.params - s1.prev_params
        radius = 10.0 * torch.linalg.vector_norm(v, dim=-1)  # L |v_t|, per problem
        assert radius[0] < 30.0 < 1e3 and radius[1] > 0.5  # row 0 is clipped, row 1 is not
        pg_query(s1, clip, generator=gen)
        eta = clip.schedule(1).gradient_weight
        u_clip = u.clone()
        u_clip[0] = u[0] * radius[0] / 30.0
        want = (1 - eta) * (s1.direction + u_clip) + eta * g1
        torch.testing.assert_close(pg_update(s1, clip, g1, hessian_vector=u).direction, want, **F64)
        # off by default: the paper's update, unchanged
        torch.testing.assert_close(pg_update(s1, plain, g1, hessian_vector=u).direction,
                                   (1 - eta) * (s1.direction + u) + eta * g1, **F64)


def test_hessian_clip_is_validated_and_only_for_harpg():
    with pytest.raises(ValueError, match="hessian_clip"):
        PGMethod("npg_igt", hessian_clip=1.0)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="hessian_clip"):
            PGMethod("harpg", hessian_clip=bad)
