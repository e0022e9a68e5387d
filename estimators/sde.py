r"""Euler–Maruyama simulation of the test diffusions, batched over paths.

.. math:: X_{i+1} = X_i + b(t_i, X_i)\,\Delta t_i + \Sigma(t_i, X_i)\sqrt{\Delta t_i}\,Z_i,
          \qquad Z_i\sim N(0, I_m)\ \text{i.i.d.}

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
  a linear system under a linear feedback).

References
----------
P. E. Kloeden and E. Platen, "Numerical Solution of Stochastic Differential
Equations", Springer, 1992, section 10.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .checks import as_tensor, check_finite, check_ndim

__all__ = [
    "Diffusion",
    "brownian_motion",
    "ornstein_uhlenbeck",
    "geometric_brownian_motion",
    "linear_diffusion",
    "check_time_grid",
    "uniform_grid",
    "euler_maruyama",
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
    """

    drift: Callable[[float, torch.Tensor], torch.Tensor]
    diffusion: Callable[[float, torch.Tensor], torch.Tensor]
    state_dim: int
    noise_dim: int
    diagonal: bool
    name: str


def brownian_motion(*, sigma: float, mu: float = 0.0, state_dim: int = 1) -> Diffusion:
    r""":math:`dX = \mu\,dt + \sigma\,dW`, coordinates independent."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}.")
    return Diffusion(
        drift=lambda t, x: torch.full_like(x, float(mu)),
        diffusion=lambda t, x: torch.full_like(x, float(sigma)),
        state_dim=state_dim, noise_dim=state_dim, diagonal=True, name=f"BM(mu={mu}, sigma={sigma})",
    )


def ornstein_uhlenbeck(*, kappa: float, sigma: float, state_dim: int = 1) -> Diffusion:
    r""":math:`dX = -\kappa X\,dt + \sigma\,dW`, coordinates independent."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}.")
    return Diffusion(
        drift=lambda t, x: -float(kappa) * x,
        diffusion=lambda t, x: torch.full_like(x, float(sigma)),
        state_dim=state_dim, noise_dim=state_dim, diagonal=True, name=f"OU(kappa={kappa}, sigma={sigma})",
    )


def geometric_brownian_motion(*, mu: float, sigma: float, state_dim: int = 1) -> Diffusion:
    r""":math:`dX = \mu X\,dt + \sigma X\,dW`, coordinates independent."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}.")
    return Diffusion(
        drift=lambda t, x: float(mu) * x,
        diffusion=lambda t, x: float(sigma) * x,
        state_dim=state_dim, noise_dim=state_dim, diagonal=True, name=f"GBM(mu={mu}, sigma={sigma})",
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
