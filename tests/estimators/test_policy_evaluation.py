"""Martingale policy-evaluation estimators: loop references, exact identities, shapes, errors, devices.

Identities are float64 algebra (tolerance 1e-10 relative, STYLE.md); the
data are random paths, not a closed form, so no statistical tolerance is
needed here (statistical recovery is tested in tests/proofs_checks).
"""

import math

import pytest
import torch

from polab.estimators.policy_evaluation import (
    GTDState,
    PathBatch,
    discount_weights,
    eligibility_trace,
    fit_value_function,
    gtd_init,
    gtd_linear,
    gtd_online,
    gtd_update,
    linear_moments,
    lstd,
    martingale_increments,
    martingale_loss,
    mean_square_td_error,
    ml_linear,
    mstde_linear,
    returns_to_go,
    solve_linear,
    td_lambda_offline,
    td_lambda_offline_from_moments,
    td_lambda_online,
    td_lambda_surrogate,
    values_on_paths,
)
from polab.estimators.sde import brownian_motion, euler_maruyama, ornstein_uhlenbeck

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _nonuniform_batch(n=40, T=12, *, finite=True, per_path_grid=False, seed=0, dtype=torch.float64, device="cpu"):
    """OU paths on random non-uniform grids, reward x^2, terminal x^2 (finite) or none."""
    g = torch.Generator().manual_seed(seed)
    if per_path_grid:
        steps = torch.rand((n, T - 1), generator=g, dtype=torch.float64) * 0.2 + 0.01
        times = torch.cat([torch.zeros(n, 1, dtype=torch.float64), steps.cumsum(1)], 1)
        X = torch.empty((n, T, 1), dtype=torch.float64)
        X[:, 0] = torch.randn((n, 1), generator=g, dtype=torch.float64)
        for i in range(T - 1):
            dt = steps[:, i:i + 1]
            X[:, i + 1] = X[:, i] - X[:, i] * dt + 0.5 * dt.sqrt() * torch.randn((n, 1), generator=g, dtype=torch.float64)
    else:
        steps = torch.rand(T - 1, generator=g, dtype=torch.float64) * 0.2 + 0.01
        times = torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])
        X = euler_maruyama(ornstein_uhlenbeck(kappa=1.0, sigma=0.5), torch.randn((n, 1), generator=g, dtype=torch.float64),
                           times, generator=g)
    X = X.to(dtype=dtype, device=device)
    b = PathBatch(states=X, times=times.to(device), rewards=(X[:, :-1, 0] ** 2),
                  terminal_rewards=X[:, -1, 0] ** 2 if finite else None)
    x = b.states[..., 0]
    phi = torch.stack([x**2, torch.ones_like(x), x], -1)
    return b, phi


def _features2(b):
    x = b.states[..., 0]
    return torch.stack([x**2, torch.ones_like(x)], -1)


# ---------------------------------------------------------------------------
# loop references
# ---------------------------------------------------------------------------
def _loop_increments(v, b, beta):
    n, T = v.shape
    out = torch.empty((n, T - 1), dtype=torch.float64)
    for p in range(n):
        for i in range(T - 1):
            ti, tj = float(b.times[p, i]), float(b.times[p, i + 1])
            vj = float(b.terminal_rewards[p]) if (b.finite_horizon and i + 1 == T - 1) else float(v[p, i + 1])
            out[p, i] = math.exp(-beta * tj) * vj - math.exp(-beta * ti) * float(v[p, i]) + \
                math.exp(-beta * ti) * float(b.rewards[p, i]) * (tj - ti)
    return out


POWER = {"paper": 0, "squared": 1, "none": -1}  # power of e^(-beta t_i) in the test function (module docstring)


def _loop_trace(gr, b, beta, lam, weighting="paper"):
    n, T = b.num_paths, b.num_times
    out = torch.zeros((n, T - 1, gr.shape[2]), dtype=torch.float64)
    for p in range(n):
        for k in range(T - 1):
            for i in range(k + 1):
                ti, tk = float(b.times[p, i]), float(b.times[p, k])
                dt = float(b.times[p, i + 1] - b.times[p, i])
                decay = 1.0 if i == k else (lam ** (tk - ti) if lam > 0 else 0.0)
                out[p, k] += decay * math.exp(-POWER[weighting] * beta * ti) * dt * gr[p, i]
    return out


@pytest.mark.parametrize("finite", [True, False])
def test_increments_and_returns_against_loops(finite):
    b, phi = _nonuniform_batch(n=6, T=7, finite=finite, per_path_grid=True)
    v = torch.randn((6, 7), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    beta = 0.8
    torch.testing.assert_close(martingale_increments(v, b, beta=beta), _loop_increments(v, b, beta), **F64)
    G = returns_to_go(b, beta=beta)
    for p in range(6):
        for i in range(6):
            want = sum(math.exp(-beta * float(b.times[p, j])) * float(b.rewards[p, j] * b.dt[p, j]) for j in range(i, 6))
            if finite:
                want += math.exp(-beta * float(b.times[p, -1])) * float(b.terminal_rewards[p])
            assert float(G[p, i]) == pytest.approx(want, rel=1e-12)
    # telescoping: sum_i dM_i = w_N V_N - w_0 V_0 + sum_i w_i r_i dt_i
    w = discount_weights(b, beta=beta)
    vN = b.terminal_rewards if finite else v[:, -1]
    total = w[:, -1] * vN - w[:, 0] * v[:, 0] + (w[:, :-1] * b.rewards * b.dt).sum(1)
    torch.testing.assert_close(martingale_increments(v, b, beta=beta).sum(1), total, **F64)


@pytest.mark.parametrize("weighting", ["paper", "squared", "none"])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_eligibility_trace_against_loop(lam, weighting):
    b, phi = _nonuniform_batch(n=4, T=8, per_path_grid=True)
    torch.testing.assert_close(eligibility_trace(phi, b, beta=0.4, lambda_=lam, test_weighting=weighting),
                               _loop_trace(phi, b, 0.4, lam, weighting), **F64)
    if weighting == "paper":  # the default is the paper's form
        torch.testing.assert_close(eligibility_trace(phi, b, beta=0.4, lambda_=lam), _loop_trace(phi, b, 0.4, lam), **F64)
    # a gradient tensor without the last time point gives the same trace
    torch.testing.assert_close(eligibility_trace(phi[:, :-1], b, beta=0.4, lambda_=lam),
                               eligibility_trace(phi, b, beta=0.4, lambda_=lam), **F64)


# ---------------------------------------------------------------------------
# exact identities between estimators
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_td1_equals_ml_on_a_finite_horizon(beta):
    # exact only for the squared test weighting: ML's normal equations weight each residual by e^(-2 beta t)
    b, phi = _nonuniform_batch(n=50, T=15, per_path_grid=True)
    ml = ml_linear(phi, b, beta=beta).theta
    torch.testing.assert_close(lstd(phi, b, beta=beta, lambda_=1.0, test_weighting="squared").theta, ml, **F64)
    if beta > 0:  # the paper's form weights the return-to-go residual by e^(-beta t) instead: a different estimator
        assert float((lstd(phi, b, beta=beta, lambda_=1.0).theta - ml).abs().max()) > 1e-6
    # TD(1) as a torch module: the surrogate's gradient equals the ML gradient at any theta
    theta = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64, requires_grad=True)
    g1, = torch.autograd.grad(td_lambda_surrogate(phi @ theta, b, beta=beta, lambda_=1.0, test_weighting="squared"), theta)
    g2, = torch.autograd.grad(martingale_loss(phi @ theta, b, beta=beta), theta)
    torch.testing.assert_close(g1, g2, **F64)


def test_lstd_solves_the_orthogonality_conditions_and_offline_td_converges_to_it():
    b, phi = _nonuniform_batch(n=200, T=20, finite=False)
    phi = phi[..., :2]
    for lam in (0.0, 0.5):
        f = lstd(phi, b, beta=1.0, lambda_=lam)
        xi = eligibility_trace(phi, b, beta=1.0, lambda_=lam)
        dm = martingale_increments(phi @ f.theta, b, beta=1.0)
        g = torch.einsum("pik,pi->k", xi, dm) / b.num_paths
        assert float(g.abs().max()) <= 1e-12 * float(xi.abs().max() * dm.abs().max() * b.num_times)
        m = linear_moments(phi, b, beta=1.0, lambda_=lam, covariance=False)
        C = m.C / m.num_paths
        eig = torch.linalg.eigvals(C)
        step = float((eig.real / eig.abs() ** 2).min())
        rate = float((1 - step * eig).abs().max())
        sweeps = int(math.ceil(math.log(1e-13) / math.log(rate)))
        th = td_lambda_offline(phi, b, beta=1.0, lambda_=lam, step_size=step, num_sweeps=sweeps)
        # contraction to 1e-13 of the initial distance |theta| (theta0 = 0), times the condition number
        torch.testing.assert_close(th, f.theta, rtol=1e-13 * f.condition_number, atol=1e-13)


def test_gtd_both_weightings_equal_lstd_when_just_identified_and_minimise_their_objectives_otherwise():
    b, phi = _nonuniform_batch(n=100, T=15, finite=False)
    phi = phi[..., :2]
    ls = lstd(phi, b, beta=1.0).theta
    for w in ("identity", "inverse_covariance"):
        torch.testing.assert_close(gtd_linear(phi, b, beta=1.0, weighting=w).theta, ls, **F64)
    both = torch.cat([phi, b.states.abs()], -1)
    tests = eligibility_trace(both, b, beta=1.0, lambda_=0.0)
    m = linear_moments(phi, b, beta=1.0, test_functions=tests, covariance=False)
    c, C, K = m.c / m.num_paths, m.C / m.num_paths, m.K / m.num_paths
    for w, A in (("identity", torch.eye(3, dtype=torch.float64)), ("inverse_covariance", torch.linalg.inv(K))):
        th = gtd_linear(phi, b, beta=1.0, weighting=w, test_functions=tests).theta
        # weighted least squares of c ~ C theta by an independent route (Cholesky whitening + lstsq)
        L = torch.linalg.cholesky(A)
        want = torch.linalg.lstsq(L.T @ C, L.T @ c[:, None]).solution[:, 0]
        torch.testing.assert_close(th, want, rtol=1e-8, atol=1e-12)  # lstsq (QR) vs normal equations: cond ~ 1e2
    th_i = gtd_linear(phi, b, beta=1.0, weighting="identity", test_functions=tests).theta
    th_k = gtd_linear(phi, b, beta=1.0, weighting="inverse_covariance", test_functions=tests).theta
    assert float((th_i - th_k).abs().max()) > 1e-6  # over-identified: the weightings really differ


def test_ml_and_mstde_closed_forms_minimise_their_losses():
    b, phi = _nonuniform_batch(n=60, T=12, per_path_grid=True)
    for fit, loss in ((ml_linear, martingale_loss), (mstde_linear, mean_square_td_error)):
        th = fit(phi, b, beta=0.5).theta.clone().requires_grad_(True)
        g, = torch.autograd.grad(loss(phi @ th, b, beta=0.5), th)
        assert float(g.abs().max()) <= 1e-10 * float(loss(phi @ th, b, beta=0.5).detach().abs() + 1)


@pytest.mark.parametrize("weighting", ["paper", "squared", "none"])
def test_surrogate_gradient_is_the_linear_td_lambda_direction(weighting):
    b, phi = _nonuniform_batch(n=30, T=10, finite=False, per_path_grid=True)
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    for lam in (0.0, 0.6):
        m = linear_moments(phi, b, beta=0.7, lambda_=lam, covariance=False, test_weighting=weighting)
        th = theta.clone().requires_grad_(True)
        g, = torch.autograd.grad(td_lambda_surrogate(phi @ th, b, beta=0.7, lambda_=lam, test_weighting=weighting), th)
        torch.testing.assert_close(g, -(m.c - m.C @ theta) / m.num_paths, **F64)


def test_moments_are_additive_over_chunks():
    b, phi = _nonuniform_batch(n=30, T=10, finite=False)
    whole = linear_moments(phi, b, beta=0.5, lambda_=0.4)
    parts = linear_moments(phi[:11], b.select(slice(0, 11)), beta=0.5, lambda_=0.4) + \
        linear_moments(phi[11:], b.select(slice(11, 30)), beta=0.5, lambda_=0.4)
    assert parts.num_paths == 30
    for name in ("c", "C", "K", "cc", "cC", "CC"):
        torch.testing.assert_close(getattr(parts, name), getattr(whole, name), **F64)
    torch.testing.assert_close(solve_linear(parts).covariance, solve_linear(whole).covariance, **F64)


def test_offline_td_from_chunked_moments_equals_offline_td_on_all_paths():
    b, phi = _nonuniform_batch(n=30, T=10, finite=True)
    kw = dict(beta=0.5, lambda_=0.4)
    whole = td_lambda_offline(phi, b, step_size=0.3, num_sweeps=50, **kw)
    parts = linear_moments(phi[:11], b.select(slice(0, 11)), covariance=False, **kw) + \
        linear_moments(phi[11:], b.select(slice(11, 30)), covariance=False, **kw)
    chunked = td_lambda_offline_from_moments(parts, step_size=0.3, num_sweeps=50)
    torch.testing.assert_close(chunked, whole, **F64)
    assert float((whole - td_lambda_offline_from_moments(parts, step_size=0.3, num_sweeps=49)).abs().max()) > 1e-8
    with pytest.raises(ValueError, match="method 'mo'"):
        td_lambda_offline_from_moments(linear_moments(phi, b, beta=0.5, method="ml"), step_size=0.3, num_sweeps=5)
    with pytest.raises(ValueError, match="step_size"):
        td_lambda_offline_from_moments(parts, step_size=0.0, num_sweeps=5)


def test_sandwich_covariance_against_a_per_path_loop():
    b, phi = _nonuniform_batch(n=25, T=10, finite=False)
    phi = phi[..., :2]
    f = lstd(phi, b, beta=0.5)
    n = b.num_paths
    per = [linear_moments(phi[p:p + 1], b.select(slice(p, p + 1)), beta=0.5, covariance=False) for p in range(n)]
    C = sum(m.C for m in per) / n
    psi = torch.stack([m.c - m.C @ f.theta for m in per])  # per-path estimating functions
    S = torch.cov(psi.T)  # ddof = 1, as the sandwich
    Jinv = torch.linalg.inv(C)
    torch.testing.assert_close(f.covariance, Jinv @ S @ Jinv.T / n, **F64)


# ---------------------------------------------------------------------------
# online solvers
# ---------------------------------------------------------------------------
def _loop_online_td(phi, b, beta, lam, alpha, group, weighting="paper"):
    """Slow reference of td_lambda_online: one path group at a time, step by step."""
    n, T, k = phi.shape
    theta = torch.zeros(k, dtype=torch.float64)
    phi = torch.cat([phi[:, :-1], torch.zeros_like(phi[:, -1:])], 1) if b.finite_horizon else phi
    for s in range(0, n, group):
        idx = range(s, min(n, s + group))
        e = {p: torch.zeros(k, dtype=torch.float64) for p in idx}
        for i in range(T - 1):
            upd = torch.zeros(k, dtype=torch.float64)
            for p in idx:
                ti, dt = float(b.times[p, i]), float(b.dt[p, i])
                decay = (lam ** float(b.dt[p, i - 1]) if lam > 0 else 0.0) if i > 0 else 0.0
                e[p] = decay * e[p] + math.exp(-POWER[weighting] * beta * ti) * phi[p, i] * dt
                vi = float(phi[p, i] @ theta)
                vj = float(b.terminal_rewards[p]) if (b.finite_horizon and i + 1 == T - 1) else float(phi[p, i + 1] @ theta)
                dm = math.exp(-beta * float(b.times[p, i + 1])) * vj - math.exp(-beta * ti) * vi + \
                    math.exp(-beta * ti) * float(b.rewards[p, i]) * dt
                upd += e[p] * dm / dt
            theta = theta + alpha * upd / len(idx)
    return theta


@pytest.mark.parametrize("weighting", ["paper", "squared", "none"])
@pytest.mark.parametrize("finite", [True, False])
def test_online_td_against_a_loop(finite, weighting):
    b, phi = _nonuniform_batch(n=6, T=6, finite=finite, per_path_grid=True)
    r = td_lambda_online(phi, b, beta=0.5, lambda_=0.5, step_size=0.3, paths_per_update=4, test_weighting=weighting)
    torch.testing.assert_close(r.theta, _loop_online_td(phi, b, 0.5, 0.5, 0.3, 4, weighting), **F64)
    assert r.num_updates == 2 * 5


def test_gtd_update_by_hand_and_gtd_online_converges_to_gtd_linear():
    s = gtd_init(2, 3)
    c = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    C = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    K = 2 * torch.eye(3, dtype=torch.float64)
    s1 = gtd_update(s, c, C, K, weighting="identity", step_size=0.1, aux_step_size=0.5)
    # u = 0 + 0.5 (c - 0 - u) = (0.5, 0, 1); theta = 0 + 0.1 C^T u = 0.1 (1.5, 1)
    torch.testing.assert_close(s1.aux, torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64), **F64)
    torch.testing.assert_close(s1.theta, torch.tensor([0.15, 0.1], dtype=torch.float64), **F64)
    s2 = gtd_update(s, c, C, K, weighting="inverse_covariance", step_size=0.1, aux_step_size=0.5)
    torch.testing.assert_close(s2.aux, 0.5 * c, **F64)  # B u = K u = 0 at u = 0
    assert isinstance(s1, GTDState) and s1.num_updates == 1 and s.num_updates == 0  # input not modified
    b, phi = _nonuniform_batch(n=20, T=10, finite=False)
    phi = phi[..., :2]
    tests = eligibility_trace(torch.cat([phi, b.states.abs()], -1), b, beta=1.0, lambda_=0.0)
    m = linear_moments(phi, b, beta=1.0, test_functions=tests, covariance=False)
    for w in ("identity", "inverse_covariance"):
        A = torch.eye(3, dtype=torch.float64) if w == "identity" else torch.linalg.inv(m.K / m.num_paths)
        Cb = m.C / m.num_paths
        lam_max = float(torch.linalg.eigvalsh(Cb.T @ A @ Cb).max())
        aux = 0.5 if w == "identity" else 0.5 / float(torch.linalg.eigvalsh(m.K / m.num_paths).max())
        r = gtd_online(phi, b, beta=1.0, weighting=w, step_size=0.2 / lam_max, aux_step_size=aux,
                       paths_per_update=20, num_epochs=6000, test_functions=tests)
        want = gtd_linear(phi, b, beta=1.0, weighting=w, test_functions=tests).theta
        # deterministic full-batch iteration: converged to 1e-6 relative after 6000 steps (checked: the last
        # iterate, not the average, which still carries the transient of the first half)
        torch.testing.assert_close(r.theta, want, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------
# torch modules
# ---------------------------------------------------------------------------
class _Quad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, times, states):
        x = states[..., 0]
        return self.w[0] * x**2 + self.w[1]


def test_fit_value_function_reaches_the_closed_form_and_is_deterministic():
    b, _ = _nonuniform_batch(n=200, T=15, finite=False)
    phi = _features2(b)
    want = {"ml": ml_linear(phi, b, beta=1.0).theta, "td": lstd(phi, b, beta=1.0).theta}
    for method in ("ml", "td"):
        mod = _Quad()
        hist = fit_value_function(mod, b, beta=1.0, method=method, num_steps=3000, learning_rate=0.01)
        assert hist.method == method and len(hist.objective) == 3000
        # Adam with a constant step ends within a few step sizes of the fixed point
        torch.testing.assert_close(mod.w.detach(), want[method], rtol=0, atol=0.02)
    runs = []
    for _ in range(2):
        mod = _Quad()
        fit_value_function(mod, b, beta=1.0, method="ml", num_steps=20, paths_per_step=50,
                           generator=torch.Generator().manual_seed(3))
        runs.append(mod.w.detach().clone())
    assert torch.equal(runs[0], runs[1])


# ---------------------------------------------------------------------------
# devices and dtypes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_outputs_follow_device_and_dtype(device):
    b64, phi64 = _nonuniform_batch(n=30, T=8, finite=False, device=device)
    b32 = PathBatch(states=b64.states.float(), times=b64.times[0].cpu(), rewards=b64.rewards.float())
    assert b32.times.dtype == torch.float32 and b32.rewards.dtype == torch.float32
    assert b32.times.device.type == device
    phi32 = phi64.float()
    f = lstd(phi32, b32, beta=1.0)
    assert f.theta.dtype == torch.float32 and f.theta.device.type == device
    v = martingale_increments(phi32 @ f.theta, b32, beta=1.0)
    assert v.dtype == torch.float32 and v.device.type == device
    # float32 against float64: round-off of the moment sums (condition number times 1e-5)
    f64 = lstd(phi64, b64, beta=1.0)
    torch.testing.assert_close(f.theta.double(), f64.theta, rtol=1e-5 * f64.condition_number, atol=1e-6)
    g = torch.Generator(device=device).manual_seed(0)
    r = td_lambda_online(phi64, b64, beta=1.0, lambda_=0.0, step_size=0.01, paths_per_update=10, generator=g)
    assert r.theta.device.type == device


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_path_batch_errors_are_clear():
    X = torch.zeros(3, 4, 1, dtype=torch.float64)
    t = torch.tensor([0.0, 0.1, 0.2, 0.3])
    r = torch.zeros(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"states must have shape \[paths, time, state_dim\]"):
        PathBatch(states=X[..., 0], times=t, rewards=r)
    with pytest.raises(ValueError, match="strictly increasing"):
        PathBatch(states=X, times=torch.tensor([0.0, 0.2, 0.1, 0.3]), rewards=r)
    with pytest.raises(ValueError, match="strictly increasing"):
        PathBatch(states=X, times=torch.tensor([[0.0, 0.1, 0.2, 0.3], [0.0, 0.1, 0.1, 0.3], [0.0, 1, 2, 3]]), rewards=r)
    with pytest.raises(ValueError, match="times has 3 points"):
        PathBatch(states=X, times=t[:3], rewards=r)
    with pytest.raises(ValueError, match="drop the last column"):
        PathBatch(states=X, times=t, rewards=torch.zeros(3, 4))
    bad = X.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="states has non-finite values .* rows 1"):
        PathBatch(states=bad, times=t, rewards=r)
    with pytest.raises(ValueError, match="rewards has non-finite"):
        PathBatch(states=X, times=t, rewards=torch.full((3, 3), float("inf")))
    with pytest.raises(ValueError, match="terminal_rewards must have shape"):
        PathBatch(states=X, times=t, rewards=r, terminal_rewards=torch.zeros(4))
    with pytest.raises(ValueError, match="floating"):
        PathBatch(states=torch.zeros(3, 4, 1, dtype=torch.int64), times=t, rewards=r)


def test_estimator_errors_are_clear():
    b, phi = _nonuniform_batch(n=10, T=6, finite=False)
    with pytest.raises(ValueError, match=r"features must have shape \[paths, time, k\]"):
        lstd(phi[:5], b, beta=1.0)
    with pytest.raises(ValueError, match="values must have shape"):
        martingale_increments(torch.zeros(10, 5), b, beta=1.0)
    with pytest.raises(ValueError, match="offset must have shape"):
        ml_linear(phi, b, beta=1.0, offset=torch.zeros(10, 5))
    with pytest.raises(ValueError, match="lambda_"):
        lstd(phi, b, beta=1.0, lambda_=1.5)
    with pytest.raises(ValueError, match="beta"):
        lstd(phi, b, beta=-0.1)
    with pytest.raises(ValueError, match="at least as many test functions"):
        lstd(phi, b, beta=1.0, test_functions=torch.zeros(10, 5, 1))
    with pytest.raises(ValueError, match="test_functions must have shape"):
        lstd(phi, b, beta=1.0, test_functions=torch.zeros(10, 6, 3))
    with pytest.raises(ValueError, match="weighting"):
        gtd_linear(phi, b, beta=1.0, weighting="bogus")
    with pytest.raises(ValueError, match="non-finite"):
        lstd(phi * float("nan"), b, beta=1.0)
    with pytest.raises(ValueError, match="method"):
        fit_value_function(_Quad(), b, beta=1.0, method="bogus")
    with pytest.raises(ValueError, match="generator"):
        fit_value_function(_Quad(), b, beta=1.0, method="ml", paths_per_step=5)
    with pytest.raises(ValueError, match="step_size"):
        td_lambda_online(phi, b, beta=1.0, lambda_=0.0, step_size=0.0)
    with pytest.raises(ValueError, match="value_fn output must have shape"):
        values_on_paths(lambda t, x: x[..., 0, 0], b)


def test_solver_hyperparameter_errors():
    b, phi = _nonuniform_batch(n=10, T=6, finite=False)
    with pytest.raises(ValueError, match="step_size"):
        td_lambda_offline(phi, b, beta=1.0, lambda_=0.0, step_size=-1.0, num_sweeps=3)
    with pytest.raises(ValueError, match="aux_step_size"):
        gtd_online(phi, b, beta=1.0, weighting="identity", step_size=0.1, aux_step_size=0.0)
    with pytest.raises(ValueError, match="weighting"):
        gtd_update(gtd_init(3, 3), torch.zeros(3), torch.zeros(3, 3), torch.eye(3), weighting="bogus",
                   step_size=0.1, aux_step_size=0.1)


@pytest.mark.parametrize("weighting", ["paper", "squared", "none"])
def test_every_test_weighting_recovers_a_value_in_the_feature_span_exactly(weighting):
    # Reference (derived): the noiseless Euler chain x_{i+1} = (1 - kappa dt) x_i with reward rate x^2 has the value
    # c x^2, c = dt / (1 - e^{-beta dt} (1 - kappa dt)^2): its TD errors vanish on every step of every path, so every
    # weighting of the orthogonality conditions (and the online and offline TD iterations) returns c exactly.
    kappa, beta, dt, T = 1.0, 0.8, 0.05, 40
    times = torch.arange(T + 1, dtype=torch.float64) * dt
    x0 = torch.linspace(-2.0, 2.0, 7, dtype=torch.float64)
    X = x0[:, None] * (1 - kappa * dt) ** torch.arange(T + 1, dtype=torch.float64)
    b = PathBatch(states=X[..., None], times=times, rewards=X[:, :-1] ** 2)
    phi = (X**2)[..., None]
    c = dt / (1 - math.exp(-beta * dt) * (1 - kappa * dt) ** 2)
    for lam in (0.0, 0.5):
        th = lstd(phi, b, beta=beta, lambda_=lam, test_weighting=weighting).theta
        torch.testing.assert_close(th, torch.tensor([c], dtype=torch.float64), **F64)
    r = td_lambda_online(phi, b, beta=beta, lambda_=0.0, step_size=0.5, num_epochs=200, test_weighting=weighting,
                         theta0=torch.tensor([c], dtype=torch.float64))
    torch.testing.assert_close(r.theta, torch.tensor([c], dtype=torch.float64), **F64)  # a fixed point of every weighting
    with pytest.raises(ValueError, match="test_weighting"):
        lstd(phi, b, beta=beta, test_weighting="double")


def test_mstde_with_a_terminal_mismatch_converges_to_the_derived_discrete_minimiser():
    # Reference: polab.theory.martingale_pe.mstde_terminal_jump_euler (exact Gaussian moments; Euler-Maruyama is exact
    # for Brownian motion). J^theta = theta x^2 does not impose J(T) = h = x^2, so the terminal jump enters; the
    # discrete minimiser at N = 20 is 0.674 (limit 2/3), far from the flat 0 that the quadratic variation alone gives.
    # Tolerance: 4 sandwich standard errors (two-sided level 6e-5).
    from polab.estimators.sde import brownian_motion, euler_maruyama, uniform_grid
    from polab.theory.martingale_pe import mstde_terminal_jump_euler

    g = torch.Generator().manual_seed(7)
    n, N = 20000, 20
    t = uniform_grid(1.0, N)
    X = euler_maruyama(brownian_motion(sigma=1.0), torch.randn((n, 1), generator=g, dtype=torch.float64), t, generator=g)
    b = PathBatch(states=X, times=t, rewards=torch.zeros((n, N), dtype=torch.float64), terminal_rewards=X[:, -1, 0] ** 2)
    fit = mstde_linear(X**2, b, beta=0.0)
    want = mstde_terminal_jump_euler(sigma=1.0, horizon=1.0, x0_second_moment=1.0, num_steps=N)
    assert abs(float(fit.theta[0]) - want) <= 4 * float(fit.standard_error[0])
    assert want > 0.6


def test_trapezoid_reward_rates_integrate_the_discounted_reward_at_second_order():
    # Reference (closed form): along the deterministic path x(t) = e^{-t}, r = x^2, the discounted reward
    # int_0^T e^{-beta s} e^{-2s} ds = (1 - e^{-(beta+2)T}) / (beta + 2). The left rule errs at O(dt), the
    # trapezoid rule at O(dt^2): error ratios over a halving of the mesh tend to 2 and 4 (checked within 5%).
    from polab.estimators.policy_evaluation import interval_reward_rates

    beta, T = 0.7, 2.0
    want = (1 - math.exp(-(beta + 2) * T)) / (beta + 2)
    errs = {"left": [], "trapezoid": []}
    for N in (20, 40, 80):
        t = torch.linspace(0, T, N + 1, dtype=torch.float64)
        x = torch.exp(-t)[None, :]
        for rule in errs:
            rr = interval_reward_rates(x**2, t, rule=rule, beta=beta)
            b = PathBatch(states=x[..., None], times=t, rewards=rr)
            errs[rule].append(abs(float(returns_to_go(b, beta=beta)[0, 0]) - want))
    for rule, order in (("left", 2.0), ("trapezoid", 4.0)):
        e = errs[rule]
        assert all(abs(e[i] / e[i + 1] / order - 1) < 0.05 for i in range(2)), (rule, e)
    with pytest.raises(ValueError, match="rule"):
        interval_reward_rates(x**2, t, rule="simpson")


def test_exact_paths_and_trapezoid_rewards_separate_simulator_and_estimator_bias():
    # On exact OU paths (no simulator bias) LSTD(0) with trapezoid rates targets the exact-chain value
    # (theory.diffusion_values.ou_exact_chain_value, derived), (dt/2) coth(c dt / 2) = 1/c + c dt^2 / 12, and not the
    # left-point target 1/c + dt/2. Tolerance: 4 sandwich standard errors (two-sided 6e-5 per coordinate).
    from polab.estimators.policy_evaluation import interval_reward_rates
    from polab.estimators.sde import exact_ou, uniform_grid
    from polab.theory.diffusion_values import ou_exact_chain_value

    k, s, beta, T, N, n = 1.0, 1.0, 1.0, 8.0, 40, 4000
    dt = T / N
    g = torch.Generator().manual_seed(11)
    t = uniform_grid(T, N)
    X = exact_ou(torch.randn((n, 1), generator=g, dtype=torch.float64), t, kappa=k, sigma=s, generator=g)
    x2 = X[..., 0] ** 2
    phi = torch.stack([x2, torch.ones_like(x2)], dim=-1)
    want = {rule: ou_exact_chain_value(kappa=k, sigma=s, beta=beta, dt=dt, rule=rule) for rule in ("left", "trapezoid")}
    for rule in ("left", "trapezoid"):
        b = PathBatch(states=X, times=t, rewards=interval_reward_rates(x2, t, rule=rule, beta=beta))
        fit = lstd(phi, b, beta=beta)
        for j in range(2):
            assert abs(float(fit.theta[j]) - want[rule][j]) <= 4 * float(fit.standard_error[j]), (rule, j)
        other = want["left" if rule == "trapezoid" else "trapezoid"][0]
        assert abs(float(fit.theta[0]) - other) > 4 * float(fit.standard_error[0])  # the two targets are resolved
    assert want["left"][0] - want["trapezoid"][0] > 0.09  # the estimator's own mesh bias: dt/2 vs c dt^2/12
