"""Euler–Maruyama simulator: shapes, dtype/device following, generator determinism, the scheme itself, errors."""

import math

import pytest
import torch
from scipy.stats import chi2, norm

from polab.estimators.sde import (
    brownian_motion,
    check_time_grid,
    euler_maruyama,
    geometric_brownian_motion,
    linear_diffusion,
    ornstein_uhlenbeck,
    uniform_grid,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtype_device_and_initial_state(device, dtype):
    proc = linear_diffusion(torch.tensor([[-1.0, 0.2], [0.0, -0.5]]), torch.tensor([[0.3, 0.0, 0.1], [0.0, 0.2, 0.0]]))
    x0 = torch.randn(7, 2, dtype=dtype, device=device)
    t = torch.tensor([0.0, 0.1, 0.25, 0.3, 1.0])  # non-uniform, float32 on CPU: moved to x0's dtype/device
    X = euler_maruyama(proc, x0, t, generator=_gen(0, device))
    assert X.shape == (7, 5, 2) and X.dtype == dtype and X.device.type == device
    assert torch.equal(X[:, 0], x0)


def test_generator_determinism():
    proc = ornstein_uhlenbeck(kappa=1.0, sigma=0.5, state_dim=3)
    x0 = torch.zeros(4, 3, dtype=torch.float64)
    t = uniform_grid(1.0, 20)
    a = euler_maruyama(proc, x0, t, generator=_gen(3))
    b = euler_maruyama(proc, x0, t, generator=_gen(3))
    c = euler_maruyama(proc, x0, t, generator=_gen(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("device", DEVICES)
def test_scheme_matches_a_hand_loop(device):
    # the same stream of normals, replayed by hand: X_{i+1} = X_i + A X_i dt_i + S z_i sqrt(dt_i)
    A = torch.tensor([[-1.0, 0.5], [-0.3, -0.8]], dtype=torch.float64)
    S = torch.tensor([[0.5, 0.0], [0.1, 0.4]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.05, 0.2, 0.21, 0.5], dtype=torch.float64, device=device)
    x0 = torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.0, 0.0]], dtype=torch.float64, device=device)
    X = euler_maruyama(linear_diffusion(A, S), x0, t, generator=_gen(5, device))
    g = _gen(5, device)
    x = x0.clone()
    A_, S_ = A.to(device), S.to(device)
    for i in range(4):
        dt = float(t[i + 1] - t[i])
        z = torch.randn((3, 2), generator=g, dtype=torch.float64, device=device)
        x = x + x @ A_.T * dt + z @ S_.T * math.sqrt(dt)
        torch.testing.assert_close(X[:, i + 1], x, rtol=1e-12, atol=1e-14)  # float64 round-off
    # diagonal processes: GBM step by hand
    g1, g2 = _gen(6), _gen(6)
    x0 = torch.full((2, 1), 2.0, dtype=torch.float64)
    X = euler_maruyama(geometric_brownian_motion(mu=0.1, sigma=0.3), x0, torch.tensor([0.0, 0.5]), generator=g1)
    z = torch.randn((2, 1), generator=g2, dtype=torch.float64)
    torch.testing.assert_close(X[:, 1], x0 + 0.1 * x0 * 0.5 + 0.3 * x0 * z * math.sqrt(0.5), rtol=1e-12, atol=0)


def test_brownian_endpoint_law_on_a_non_uniform_grid():
    # Euler is exact in law for BM: X_T - X_0 ~ N(mu T, sigma^2 T) on any grid.
    # Exact tests at alpha = 1e-3 each (two-sided z for the mean, chi-square for the variance).
    n, mu, sigma = 20000, 0.3, 1.5
    t = torch.tensor([0.0, 0.01, 0.3, 0.31, 0.9, 2.0], dtype=torch.float64)
    X = euler_maruyama(brownian_motion(sigma=sigma, mu=mu), torch.zeros(n, 1, dtype=torch.float64), t, generator=_gen(7))
    y = (X[:, -1, 0] - mu * 2.0) / (sigma * math.sqrt(2.0))
    assert abs(float(y.mean())) * math.sqrt(n) <= norm.ppf(1 - 1e-3 / 2)
    ss = float((y**2).sum())
    assert chi2.ppf(1e-3 / 2, n) <= ss <= chi2.ppf(1 - 1e-3 / 2, n)


def test_ou_chain_second_moment_recursion():
    # Euler chain: E X_{i+1}^2 = (1 - kappa dt)^2 E X_i^2 + sigma^2 dt (exact); z-test at alpha = 1e-3
    n, kappa, sigma, dt, steps = 40000, 2.0, 0.7, 0.1, 10
    X = euler_maruyama(ornstein_uhlenbeck(kappa=kappa, sigma=sigma), torch.ones(n, 1, dtype=torch.float64),
                       uniform_grid(dt * steps, steps), generator=_gen(8))
    m = 1.0
    for _ in range(steps):
        m = (1 - kappa * dt) ** 2 * m + sigma**2 * dt
    x2 = X[:, -1, 0] ** 2
    z = abs(float(x2.mean()) - m) / (float(x2.std()) / math.sqrt(n))
    assert z <= norm.ppf(1 - 1e-3 / 2)


def test_errors_are_clear():
    proc = brownian_motion(sigma=1.0)
    x0 = torch.zeros(3, 1, dtype=torch.float64)
    g = _gen(0)
    with pytest.raises(ValueError, match="strictly increasing"):
        euler_maruyama(proc, x0, torch.tensor([0.0, 0.5, 0.5, 1.0]), generator=g)
    with pytest.raises(ValueError, match="strictly increasing"):
        check_time_grid(torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="at least two"):
        euler_maruyama(proc, x0, torch.tensor([0.0]), generator=g)
    with pytest.raises(ValueError, match="non-finite"):
        euler_maruyama(proc, x0, torch.tensor([0.0, float("nan")]), generator=g)
    with pytest.raises(ValueError, match="non-finite"):
        euler_maruyama(proc, torch.tensor([[0.0], [float("inf")], [1.0]]), torch.tensor([0.0, 1.0]), generator=g)
    with pytest.raises(ValueError, match=r"x0 must have shape \[paths, state_dim\]"):
        euler_maruyama(proc, torch.zeros(3), torch.tensor([0.0, 1.0]), generator=g)
    with pytest.raises(ValueError, match="state_dim"):
        euler_maruyama(proc, torch.zeros(3, 2, dtype=torch.float64), torch.tensor([0.0, 1.0]), generator=g)
    with pytest.raises(ValueError, match="floating"):
        euler_maruyama(proc, torch.zeros(3, 1, dtype=torch.int64), torch.tensor([0.0, 1.0]), generator=g)
    with pytest.raises(ValueError, match="torch.Generator"):
        euler_maruyama(proc, x0, torch.tensor([0.0, 1.0]), generator=0)
    with pytest.raises(ValueError, match="sigma"):
        brownian_motion(sigma=0.0)
    with pytest.raises(ValueError, match="square"):
        linear_diffusion(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="noise"):
        linear_diffusion(torch.zeros(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="horizon"):
        uniform_grid(0.0, 10)


def test_uniform_grid():
    t = uniform_grid(2.0, 4, dtype=torch.float32)
    assert t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0]), rtol=0, atol=0)
    assert check_time_grid([0, 1, 3]).dtype == torch.float64  # integers become float64
