r"""Simulation of the test diffusions, batched over paths: Euler–Maruyama, Milstein, exact transitions.

.. math:: X_{i+1} = X_i + b(t_i, X_i)\,\Delta t_i + \Sigma(t_i, X_i)\sqrt{\Delta t_i}\,Z_i,
          \qquad Z_i\sim N(0, I_m)\ \text{i.i.d.}

(:func:`euler_maruyama`, strong order 1/2), its Milstein correction
(:func:`milstein`, strong order 1 for diagonal noise), and exact samplers of
the transition laws of OU (:func:`exact_ou`, Gaussian), GBM
(:func:`exact_gbm`, log-normal) and CIR (:func:`exact_cir`, scaled
noncentral chi-square), so that simulator bias and an estimator's own mesh
bias can be separated: on exact paths every remaining mesh effect is the
estimator's.

on any strictly increasing time grid (uniform or not). Randomness comes only
from the keyword-only ``generator`` (a ``torch.Generator`` on the device of
``x0``), so the same call reproduces the same paths; the scaled layer calls
this very function on GPU.

Processes (frozen :class:`Diffusion` objects; coefficients are converted to
the dtype and device of the state at each call, so one object serves CPU and
GPU):

- :func:`brownian_motion` :math:`dX = \mu\,dt + \sigma\,dW` (``d`` independent coordinates);
- :func:`ornstein_uhlenbeck` :math:`dX = -\kappa X\,dt + \sigma\,dW`;
- :func:`geometric_brownian_motion` :math:`dX = \mu X\,dt + \sigma X\,dW`;
- :func:`linear_diffusion` :math:`dX = AX\,dt + \Sigma\,dW` (the closed loop of
  a linear system under a linear feedback);
- :func:`cox_ingersoll_ross` :math:`dX = \kappa(\theta - X)\,dt + \sigma\sqrt{X}\,dW`
  (Euler/Milstein use :math:`\sqrt{\max(X,0)}`, full truncation).

References
----------
P. E. Kloeden and E. Platen, "Numerical Solution of Stochastic Differential
Equations", Springer, 1992, sections 10.2-10.3.
P. Glasserman, "Monte Carlo Methods in Financial Engineering", Springer, 2003,
section 3.4 (CIR transition: scaled noncentral chi-square, Poisson mixture).
G. Marsaglia and W. W. Tsang, "A simple method for generating gamma
variables", ACM TOMS 26(3), 2000.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import math

import torch

from .checks import as_tensor, check_finite, check_ndim

__all__ = [
    "Diffusion",
    "brownian_motion",
    "ornstein_uhlenbeck",
    "geometric_brownian_motion",
    "linear_diffusion",
    "cox_ingersoll_ross",
    "check_time_grid",
    "uniform_grid",
    "euler_maruyama",
    "milstein",
    "exact_ou",
    "exact_gbm",
    "exact_cir",
    "standard_gamma",
]


@dataclass(frozen=True)
class Diffusion:
    """An SDE :math:`dX = b(t,X)dt + \\Sigma(t,X)dW`.

    Attributes
    ----------
    drift : callable ``(t: float, x: Tensor[paths, d]) -> Tensor[paths, d]``
    diffusion : callable ``(t, x) -> Tensor[paths, d]`` (diagonal noise, ``noise_dim == d``)
        or ``-> Tensor[paths, d, noise_dim]`` (general noise); see ``diagonal``.
    state_dim : int
        ``d``.
    noise_dim : int
        ``m``, the dimension of :math:`W`.
    diagonal : bool
        True when ``diffusion`` returns the diagonal of :math:`\\Sigma` ([paths, d]).
    name : str
    diffusion_derivative : callable ``(t, x) -> Tensor[paths, d]``, optional
        :math:`\\partial\\sigma_j/\\partial x_j` for diagonal noise whose
        :math:`j`-th coefficient depends on :math:`x_j` only (Milstein); when
        None, :func:`milstein` differentiates ``diffusion`` by autograd.
    """

    drift: Callable[[float, torch.Tensor], torch.Tensor]
    diffusion: Callable[[float, torch.Tensor], torch.Tensor]
    state_dim: int
    noise_dim: int
    diagonal: bool
    name: str
    diffusion_derivative: Callable[[float, torch.Tensor], torch.Tensor] | None = None


def brownian_motion(*, sigma: float, mu: float = 0.0, state_dim: int = 1) -> Diffusion:
    r""":math:`dX = \mu\,dt + \sigma\,dW`, coordinates independent."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}.")
    return Diffusion(
        drift=lambda t, x: torch.full_like(x, float(mu)),
        diffusion=lambda t, x: torch.full_like(x, float(sigma)),
        state_dim=state_dim, noise_dim=state_dim, diagonal=True, name=f"BM(mu={mu}, sigma={sigma})",
        diffusion_derivative=lambda t, x: torch.zeros_like(x),
    )


def ornstein_uhlenbeck(*, kappa: float, sigma: float, state_dim: int = 1) -> Diffusion:
    r""":math:`dX = -\kappa X\,dt + \sigma\,dW`, coordinates independent."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}.")
    return Diffusion(
        drift=lambda t, x: -float(kappa) * x,
        diffusion=lambda t, x: torch.full_like(x, float(sigma)),
        state_dim=state_dim, noise_dim=state_dim, diagonal=True, name=f"OU(kappa={kappa}, sigma={sigma})",
        diffusion_derivative=lambda t, x: torch.zeros_like(x),
    )


def geometric_brownian_motion(*, mu: float, sigma: float, state_dim: int = 1) -> Diffusion:
    r""":math:`dX = \mu X\,dt + \sigma X\,dW`, coordinates independent."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}.")
    return Diffusion(
        drift=lambda t, x: float(mu) * x,
        diffusion=lambda t, x: float(sigma) * x,
        state_dim=state_dim, noise_dim=state_dim, diagonal=True, name=f"GBM(mu={mu}, sigma={sigma})",
        diffusion_derivative=lambda t, x: torch.full_like(x, float(sigma)),
    )


def linear_diffusion(A, noise) -> Diffusion:
    r""":math:`dX = AX\,dt + \Sigma\,dW` with constant ``A`` [d, d] and ``noise`` :math:`\Sigma` [d, m].

    The matrices are kept as given and moved to the state's dtype and device
    at each step (a no-op once they match).
    """
    A = as_tensor(A, name="A")
    S = as_tensor(noise, name="noise")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix [d, d]; got shape {tuple(A.shape)}.")
    if S.ndim != 2 or S.shape[0] != A.shape[0]:
        raise ValueError(f"noise must have shape [d, m] with d={A.shape[0]}; got {tuple(S.shape)}.")
    check_finite(A, name="A")
    check_finite(S, name="noise")

    def drift(t, x):
        return x @ A.to(dtype=x.dtype, device=x.device).T

    def diffusion(t, x):
        return S.to(dtype=x.dtype, device=x.device).expand(x.shape[0], *S.shape)

    return Diffusion(drift=drift, diffusion=diffusion, state_dim=int(A.shape[0]), noise_dim=int(S.shape[1]),
                     diagonal=False, name=f"linear(d={A.shape[0]}, m={S.shape[1]})")


def cox_ingersoll_ross(*, kappa: float, theta: float, sigma: float, state_dim: int = 1) -> Diffusion:
    r""":math:`dX = \kappa(\theta - X)\,dt + \sigma\sqrt{X}\,dW`, coordinates independent.

    Needs :math:`\kappa > 0`, :math:`\theta > 0`, :math:`\sigma > 0`. Euler and
    Milstein evaluate :math:`\sqrt{\max(X, 0)}` (full truncation, so a
    discretised path that dips below 0 keeps a finite coefficient); the exact
    transition is :func:`exact_cir`.
    """
    if not (kappa > 0 and theta > 0 and sigma > 0):
        raise ValueError(f"CIR needs kappa > 0, theta > 0, sigma > 0; got {kappa}, {theta}, {sigma}.")
    k, th, s = float(kappa), float(theta), float(sigma)
    return Diffusion(
        drift=lambda t, x: k * (th - x),
        diffusion=lambda t, x: s * x.clamp_min(0.0).sqrt(),
        state_dim=state_dim, noise_dim=state_dim, diagonal=True, name=f"CIR(kappa={kappa}, theta={theta}, sigma={sigma})",
        # d/dx sigma sqrt(x) = sigma / (2 sqrt x); 0 where x <= 0 (truncated)
        diffusion_derivative=lambda t, x: torch.where(x > 0, s / (2 * x.clamp_min(1e-300).sqrt()), torch.zeros_like(x)),
    )


def check_time_grid(times, *, name: str = "times") -> torch.Tensor:
    """Return ``times`` as a floating tensor after checking it is a finite, strictly increasing 1-d grid.

    Shapes: ``times`` [time] with ``time >= 2``.
    """
    t = as_tensor(times, name=name)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    check_ndim(t, 1, name=name, layout="[time]")
    if t.shape[0] < 2:
        raise ValueError(f"{name} needs at least two grid points; got shape {tuple(t.shape)}.")
    check_finite(t, name=name)
    dt = t[1:] - t[:-1]
    if not bool((dt > 0).all()):
        bad = (dt <= 0).nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"{name} must be strictly increasing; steps {bad} are <= 0 "
            f"(e.g. t[{bad[0]}]={float(t[bad[0]])}, t[{bad[0] + 1}]={float(t[bad[0] + 1])}). Sort the grid and drop repeats."
        )
    return t


def uniform_grid(horizon: float, num_steps: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """``num_steps + 1`` equally spaced times on ``[0, horizon]`` (shape [num_steps + 1])."""
    if not horizon > 0 or int(num_steps) < 1:
        raise ValueError(f"need horizon > 0 and num_steps >= 1; got {horizon}, {num_steps}.")
    return torch.linspace(0.0, float(horizon), int(num_steps) + 1, dtype=dtype, device=device)


def euler_maruyama(process: Diffusion, x0, times, *, generator: torch.Generator) -> torch.Tensor:
    r"""Simulate ``process`` from ``x0`` on the grid ``times`` by Euler–Maruyama.

    .. math:: X_{i+1} = X_i + b(t_i,X_i)\Delta t_i + \Sigma(t_i,X_i)\sqrt{\Delta t_i}\,Z_i

    Parameters
    ----------
    process : Diffusion
    x0 : Tensor, shape [paths, state_dim]
        Initial states (floating; sets dtype and device of the output).
    times : Tensor, shape [time], strictly increasing
        The grid, uniform or not; moved to ``x0``'s device and dtype.
    generator : torch.Generator
        The only source of randomness; must live on ``x0``'s device.

    Returns
    -------
    Tensor, shape [paths, time, state_dim]
        ``out[:, 0] == x0``.

    Notes
    -----
    Weak order 1 and strong order 1/2 for smooth coefficients (Kloeden &
    Platen 1992, Theorems 14.5.1 and 10.2.2); exact in law for Brownian
    motion with constant coefficients. Noise is drawn as one
    ``[paths, noise_dim]`` block per step, so a call's paths are fixed by
    the generator's state; CPU and CUDA generators have different streams,
    so one seed gives different (equally distributed) paths on each device.
    """
    x = as_tensor(x0, name="x0")
    if not x.is_floating_point():
        raise ValueError(f"x0 must be a floating tensor; got dtype {x.dtype}.")
    check_ndim(x, 2, name="x0", layout="[paths, state_dim]")
    if x.shape[1] != process.state_dim:
        raise ValueError(f"x0 has state_dim {x.shape[1]} but the process {process.name} has state_dim {process.state_dim}.")
    check_finite(x, name="x0")
    t = check_time_grid(times).to(dtype=x.dtype, device=x.device)
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator (pass torch.Generator(device).manual_seed(seed)).")
    if generator.device.type != x.device.type:
        raise ValueError(f"generator lives on {generator.device} but x0 on {x.device}; create the generator on x0's device.")
    n, d = x.shape
    out = torch.empty((n, t.shape[0], d), dtype=x.dtype, device=x.device)
    out[:, 0] = x
    dt = t[1:] - t[:-1]
    sqrt_dt = dt.sqrt()
    t_host = t.tolist()  # one device-to-host copy instead of one per step
    for i in range(t.shape[0] - 1):
        ti = t_host[i]
        z = torch.randn((n, process.noise_dim), generator=generator, dtype=x.dtype, device=x.device)
        sig = process.diffusion(ti, x)
        noise = sig * z if process.diagonal else torch.einsum("pdm,pm->pd", sig, z)
        x = x + process.drift(ti, x) * dt[i] + noise * sqrt_dt[i]
        out[:, i + 1] = x
    return out


def _simulation_inputs(x0, times, generator, *, state_dim: int | None, name: str):
    """Checked ``(x0, times)`` in ``x0``'s dtype and device, and the generator check shared by the simulators."""
    x = as_tensor(x0, name="x0")
    if not x.is_floating_point():
        raise ValueError(f"x0 must be a floating tensor; got dtype {x.dtype}.")
    check_ndim(x, 2, name="x0", layout="[paths, state_dim]")
    if state_dim is not None and x.shape[1] != state_dim:
        raise ValueError(f"x0 has state_dim {x.shape[1]} but the process {name} has state_dim {state_dim}.")
    check_finite(x, name="x0")
    t = check_time_grid(times).to(dtype=x.dtype, device=x.device)
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator (pass torch.Generator(device).manual_seed(seed)).")
    if generator.device.type != x.device.type:
        raise ValueError(f"generator lives on {generator.device} but x0 on {x.device}; create the generator on x0's device.")
    return x, t


def milstein(process: Diffusion, x0, times, *, generator: torch.Generator) -> torch.Tensor:
    r"""Simulate ``process`` by the Milstein scheme (diagonal noise).

    .. math:: X_{i+1} = X_i + b\,\Delta t_i + \sigma\,\Delta W_i
              + \tfrac12\,\sigma\,\partial_x\sigma\,(\Delta W_i^2 - \Delta t_i),
              \qquad \Delta W_i = \sqrt{\Delta t_i}\,Z_i,

    coordinate by coordinate (Kloeden & Platen 1992, eq. 10.3.3). Strong
    order 1 for smooth coefficients (Theorem 10.3.5) against Euler–Maruyama's
    1/2; for constant :math:`\sigma` (BM, OU, linear systems) it *is*
    Euler–Maruyama.

    Parameters
    ----------
    process : Diffusion
        With ``diagonal=True`` and each coefficient :math:`\sigma_j` a function
        of :math:`x_j` only; ``process.diffusion_derivative`` gives
        :math:`\partial\sigma_j/\partial x_j`, else autograd does.
    x0 : Tensor, shape [paths, state_dim]
    times : Tensor, shape [time], strictly increasing
    generator : torch.Generator

    Returns
    -------
    Tensor, shape [paths, time, state_dim]

    Notes
    -----
    Draws the same ``[paths, noise_dim]`` standard-normal block per step as
    :func:`euler_maruyama`, so both schemes driven by one seed share their
    Brownian increments (the strong-order tests rely on this). Non-diagonal
    noise needs Lévy areas (not implemented) and raises.
    """
    if not process.diagonal:
        raise ValueError(f"milstein needs diagonal noise (Levy areas are not implemented); {process.name} has "
                         "general noise. Use euler_maruyama, or an exact sampler for a linear system.")
    x, t = _simulation_inputs(x0, times, generator, state_dim=process.state_dim, name=process.name)
    n, d = x.shape
    out = torch.empty((n, t.shape[0], d), dtype=x.dtype, device=x.device)
    out[:, 0] = x
    dt = t[1:] - t[:-1]
    sqrt_dt = dt.sqrt()
    t_host = t.tolist()

    def dsigma(ti, xi):
        if process.diffusion_derivative is not None:
            return process.diffusion_derivative(ti, xi)
        with torch.enable_grad():
            xr = xi.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(process.diffusion(ti, xr).sum(), xr)
        return g

    for i in range(t.shape[0] - 1):
        ti = t_host[i]
        z = torch.randn((n, process.noise_dim), generator=generator, dtype=x.dtype, device=x.device)
        dw = z * sqrt_dt[i]
        sig = process.diffusion(ti, x)
        x = x + process.drift(ti, x) * dt[i] + sig * dw + 0.5 * sig * dsigma(ti, x) * (dw * dw - dt[i])
        out[:, i + 1] = x
    return out


def exact_ou(x0, times, *, kappa: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    r"""Exact OU paths, :math:`dX = -\kappa X\,dt + \sigma\,dW`, on any grid.

    .. math:: X_{i+1} = e^{-\kappa\Delta t_i}X_i + \sigma\sqrt{\tfrac{1-e^{-2\kappa\Delta t_i}}{2\kappa}}\,Z_i

    (:math:`\sigma\sqrt{\Delta t_i}` for :math:`\kappa = 0`). Shapes: ``x0`` [paths, d] -> [paths, time, d].
    One standard-normal block [paths, d] per step from ``generator``.
    """
    if not sigma > 0 or not math.isfinite(kappa):
        raise ValueError(f"need sigma > 0 and a finite kappa; got sigma={sigma}, kappa={kappa}.")
    x, t = _simulation_inputs(x0, times, generator, state_dim=None, name="OU")
    dt = t[1:] - t[:-1]
    decay = torch.exp(-float(kappa) * dt)
    if kappa == 0:
        sd = float(sigma) * dt.sqrt()
    else:  # (1 - e^{-2 k dt}) / (2k) via expm1: no cancellation for small k dt
        sd = float(sigma) * torch.sqrt(-torch.expm1(-2.0 * float(kappa) * dt) / (2.0 * float(kappa)))
    out = torch.empty((x.shape[0], t.shape[0], x.shape[1]), dtype=x.dtype, device=x.device)
    out[:, 0] = x
    for i in range(t.shape[0] - 1):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = decay[i] * x + sd[i] * z
        out[:, i + 1] = x
    return out


def exact_gbm(x0, times, *, mu: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    r"""Exact GBM paths, :math:`dX = \mu X\,dt + \sigma X\,dW`, on any grid.

    .. math:: X_{i+1} = X_i\exp\big((\mu - \tfrac12\sigma^2)\Delta t_i + \sigma\sqrt{\Delta t_i}\,Z_i\big).

    Shapes: ``x0`` [paths, d] -> [paths, time, d]. One standard-normal block
    [paths, d] per step, the same draws :func:`euler_maruyama` and
    :func:`milstein` make for :func:`geometric_brownian_motion` with one seed
    (so the three can be compared path by path).
    """
    if not sigma > 0 or not math.isfinite(mu):
        raise ValueError(f"need sigma > 0 and a finite mu; got sigma={sigma}, mu={mu}.")
    x, t = _simulation_inputs(x0, times, generator, state_dim=None, name="GBM")
    dt = t[1:] - t[:-1]
    out = torch.empty((x.shape[0], t.shape[0], x.shape[1]), dtype=x.dtype, device=x.device)
    out[:, 0] = x
    drift = (float(mu) - 0.5 * float(sigma) ** 2) * dt
    sd = float(sigma) * dt.sqrt()
    for i in range(t.shape[0] - 1):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x * torch.exp(drift[i] + sd[i] * z)
        out[:, i + 1] = x
    return out


def standard_gamma(shape: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    r"""Gamma(``shape``, 1) draws (elementwise ``shape`` > 0) by Marsaglia & Tsang (2000), from ``generator`` only.

    For :math:`a\ge1`: :math:`d=a-\tfrac13`, :math:`c=1/\sqrt{9d}`, propose
    :math:`v=(1+cZ)^3` and accept when :math:`\ln U < Z^2/2 + d - dv + d\ln v`;
    for :math:`a<1`, :math:`G_a = G_{a+1}U^{1/a}`. Rejected entries are
    redrawn in rounds (acceptance above 95%), so the draws depend only on the
    generator's state. Shapes: ``shape`` [...] -> same, in its dtype and device.
    """
    a = as_tensor(shape, name="shape")
    if not a.is_floating_point():
        a = a.to(torch.float64)
    if not bool((a > 0).all()) or not bool(torch.isfinite(a).all()):
        raise ValueError("shape must be finite and > 0 everywhere.")
    small = a < 1
    aa = torch.where(small, a + 1, a)
    d = aa - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(aa)
    todo = torch.ones_like(aa, dtype=torch.bool)
    while bool(todo.any()):
        idx = todo.nonzero(as_tuple=True)
        dd, cc = d[idx], c[idx]
        z = torch.randn(dd.shape, generator=generator, dtype=aa.dtype, device=aa.device)
        u = torch.rand(dd.shape, generator=generator, dtype=aa.dtype, device=aa.device)
        v = (1 + cc * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + dd - dd * v + dd * torch.log(v.clamp_min(1e-300)))
        acc = tuple(i[ok] for i in idx)
        out[acc] = (dd * v)[ok]
        todo[acc] = False
    if bool(small.any()):
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        out = torch.where(small, out * u ** (1.0 / a), out)
    return out


def exact_cir(x0, times, *, kappa: float, theta: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    r"""Exact CIR paths, :math:`dX = \kappa(\theta - X)\,dt + \sigma\sqrt{X}\,dW`, on any grid.

    The transition is a scaled noncentral chi-square (Glasserman 2003, §3.4):

    .. math:: X_{i+1} = c_i\,\chi'^2_{\delta}(\lambda_i),\quad
              c_i = \frac{\sigma^2(1-e^{-\kappa\Delta t_i})}{4\kappa},\quad
              \delta = \frac{4\kappa\theta}{\sigma^2},\quad
              \lambda_i = \frac{X_i e^{-\kappa\Delta t_i}}{c_i},

    sampled as the Poisson mixture :math:`\chi'^2_\delta(\lambda) = \chi^2_{\delta+2N} = 2\,G_{\delta/2+N}`,
    :math:`N\sim\mathrm{Poisson}(\lambda/2)`, :math:`G` from :func:`standard_gamma`.
    Valid for any :math:`\delta > 0` (Feller's condition :math:`\delta\ge2` is
    not needed); paths stay :math:`\ge 0`.

    Parameters
    ----------
    x0 : Tensor, shape [paths, d], entries >= 0
    times : Tensor, shape [time]
    kappa, theta, sigma : float, > 0
    generator : torch.Generator

    Returns
    -------
    Tensor, shape [paths, time, d]
    """
    if not (kappa > 0 and theta > 0 and sigma > 0):
        raise ValueError(f"CIR needs kappa > 0, theta > 0, sigma > 0; got {kappa}, {theta}, {sigma}.")
    x, t = _simulation_inputs(x0, times, generator, state_dim=None, name="CIR")
    if bool((x < 0).any()):
        raise ValueError("x0 must be >= 0 for CIR (the state is a variance or rate).")
    k, s2 = float(kappa), float(sigma) ** 2
    delta = 4.0 * k * float(theta) / s2
    dt = t[1:] - t[:-1]
    out = torch.empty((x.shape[0], t.shape[0], x.shape[1]), dtype=x.dtype, device=x.device)
    out[:, 0] = x
    for i in range(t.shape[0] - 1):
        c = s2 * (-torch.expm1(-k * dt[i])) / (4.0 * k)
        lam = x * torch.exp(-k * dt[i]) / c
        n = torch.poisson(lam / 2.0, generator=generator)
        x = c * 2.0 * standard_gamma(delta / 2.0 + n, generator=generator)
        out[:, i + 1] = x
    return out
