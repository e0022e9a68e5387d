r"""N-PG-IGT, (N)-HARPG and PG baselines as explicit-state optimizers on flat parameter vectors.

One interface for six methods (:data:`polab.theory.pg_sample_complexity.METHODS`),
all for *ascent* on :math:`J(\theta)`:

1. ``state = pg_init(params)``;
2. ``q = pg_query(state, method, generator=...)``: where the caller must
   sample trajectories and estimate things this iteration
   (:class:`QueryPoints`);
3. ``state = pg_update(state, method, gradient, hessian_vector=...)``.

Each iteration :math:`t` (schedules :math:`\gamma_t,\eta_t` from
:func:`polab.theory.pg_sample_complexity.pg_schedule`):

- ``vanilla_pg``: :math:`g_t` at :math:`\theta_t`; :math:`\theta_{t+1} = \theta_t + \gamma_t g_t`.
- ``normalized_pg``: :math:`\theta_{t+1} = \theta_t + \gamma_t g_t/\|g_t\|`.
- ``momentum_pg``: :math:`d_t = (1-\eta_t)d_{t-1} + \eta_t g_t`, normalised step.
- ``npg_igt`` (``theory_core.md`` 4.3): :math:`g_t` at the look-ahead point
  :math:`\tilde\theta_t = \theta_t + \frac{1-\eta_t}{\eta_t}(\theta_t-\theta_{t-1})`,
  :math:`d_t = (1-\eta_t)d_{t-1} + \eta_t g_t`, normalised step. With
  ``PGMethod(igt_lookahead="eta_prev")`` the look-ahead uses
  :math:`\eta_{t-1}` instead, as the authors' code does
  (``torch/optimizers/NIGT_optimizer.py`` of aabkn/Stochastic-Policy-Gradient-Methods
  @ 08f8b5c: ``update_model_to_line_point`` runs before ``step`` updates
  :math:`\eta`, and uses no extrapolation on the first iteration). The
  default :math:`\eta_t` is the one for which the transport is exact: if
  :math:`\nabla J` is affine and :math:`d_{t-1} = \nabla J(\theta_{t-1})`, then
  :math:`(1-\eta_t)d_{t-1} + \eta_t\nabla J(\tilde\theta_t) = \nabla J(\theta_t)`
  only when the look-ahead and the average use the same :math:`\eta_t`
  (tested to 1e-12); with :math:`\eta_{t-1}` it is off by
  :math:`(\eta_t/\eta_{t-1} - 1)\nabla^2J\,(\theta_t-\theta_{t-1})`.
- ``harpg`` / ``n_harpg`` (``theory_core.md`` 4.4): :math:`g_t` at
  :math:`\theta_t`; :math:`u_t\approx\nabla^2J(\hat\theta_t)v_t` at
  :math:`\hat\theta_t = q_t\theta_t + (1-q_t)\theta_{t-1}`, :math:`q_t\sim U[0,1]`,
  :math:`v_t = \theta_t-\theta_{t-1}` (from
  :func:`polab.estimators.pg_gradients.hessian_vector_estimate`);
  :math:`d_t = (1-\eta_t)(d_{t-1}+u_t) + \eta_t g_t`; step
  :math:`\gamma_t d_t` (HARPG) or :math:`\gamma_t d_t/\|d_t\|` (N-HARPG).

Optional safeguard for (N)-HARPG, off by default: ``PGMethod(hessian_clip=L)``
shrinks :math:`u_t` to norm at most :math:`L\|v_t\|` (see :class:`PGMethod`;
a departure from the paper, for policies whose Hessian-vector estimate has a
large variance, e.g. Gaussian policies with a learned log standard deviation).

On the first iteration :math:`d_0 = g_0` for every method (:math:`\eta_0 = 1`
with the default :math:`\eta_0`; the look-ahead point is :math:`\theta_0`; no
Hessian batch is needed). A zero direction gives no step (the normalised
step :math:`0/\|0\|` is taken as 0).

Sign: the estimates are of :math:`\nabla J` and the updates ascend
(``maximize=True``, the default of :func:`pg_update` and
:class:`PolicyGradientOptimizer`, which differs from torch's optimizers);
``maximize=False`` takes gradients of a loss and descends, as torch's
optimizers do by default. The schedule's :math:`\eta_t` is
:attr:`PGSchedule.gradient_weight`, the weight of the *new* gradient.

Shapes: parameters are flat vectors ``[dim]`` or ``[problems, dim]``; the
leading dimension holds independent problems (e.g. seeds) updated in one
call, each normalised by its own norm over the last dimension.
:class:`PolicyGradientOptimizer` wraps the functions for any
``torch.nn.Module`` policy by flattening its parameters.

References
----------
Fatkhullin, Barakat, Kireeva, He, "Stochastic Policy Gradient Methods:
Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023.
Cutkosky, Mehta, "Momentum Improves Normalized SGD", ICML 2020 (IGT and
normalised momentum).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from polab.theory.pg_sample_complexity import DEFAULT_STEP_SIZE0, METHOD_INFO, METHODS, PGSchedule, pg_schedule

from .checks import check_finite

__all__ = [
    "PGMethod",
    "PGState",
    "QueryPoints",
    "pg_init",
    "pg_query",
    "pg_update",
    "PolicyGradientOptimizer",
    "METHODS",
]


@dataclass(frozen=True)
class PGMethod:
    """Which optimizer, and its schedule scales.

    Attributes
    ----------
    name : str
        One of :data:`METHODS`.
    step_size0 : float
        :math:`\\gamma_0` (default 0.1, the authors' README example).
    momentum0 : float in (0, 1]
        :math:`\\eta_0`.
    igt_lookahead : {"eta_t", "eta_prev"}
        ``npg_igt`` only: extrapolate with :math:`\\eta_t` (default, exact
        transport on quadratics) or with :math:`\\eta_{t-1}` (the authors' code).
    hessian_clip : float > 0 or None
        (N)-HARPG safeguard, off by default (None, the paper's algorithm).
        With a value :math:`L`, the Hessian-vector estimate is shrunk to
        :math:`u_t \\min(1, L\\|v_t\\|/\\|u_t\\|)`, per problem, before the
        recursive update. Under :math:`L`-smoothness of :math:`J`
        (:math:`\\|\\nabla^2J\\|\\le L`) the quantity it estimates,
        :math:`\\nabla J(\\theta_t)-\\nabla J(\\theta_{t-1})`, lies in that ball, so
        the clip only removes estimation noise beyond it; it makes the estimate
        biased, and it bounds the recursion's gain by
        :math:`(1-\\eta_t)(1+\\gamma_tL)` for HARPG, where the unclipped noisy
        estimate can make :math:`d_t` grow geometrically (a departure from the
        paper; see ``scaled/experiments/pg_optimizers.py``).
    """

    name: str
    step_size0: float = DEFAULT_STEP_SIZE0
    momentum0: float = 1.0
    hessian_clip: float | None = None
    igt_lookahead: str = "eta_t"

    def __post_init__(self):
        if self.igt_lookahead not in ("eta_t", "eta_prev"):
            raise ValueError(f"igt_lookahead must be 'eta_t' (exact IGT transport) or 'eta_prev' (the authors' code); got {self.igt_lookahead!r}.")
        if self.igt_lookahead != "eta_t" and self.name != "npg_igt":
            raise ValueError(f"igt_lookahead applies to npg_igt only; got it for {self.name!r}.")
        if self.hessian_clip is not None:
            if self.name not in ("harpg", "n_harpg"):
                raise ValueError(f"hessian_clip applies to harpg and n_harpg only; got it for {self.name!r} (leave it None).")
            if not (isinstance(self.hessian_clip, (int, float)) and math.isfinite(self.hessian_clip) and self.hessian_clip > 0):
                raise ValueError(f"hessian_clip must be a finite number > 0 (a smoothness constant L) or None; got {self.hessian_clip!r}.")
        if self.name not in METHOD_INFO:
            raise ValueError(f"method name must be one of {list(METHODS)}; got {self.name!r}.")
        pg_schedule(self.name, 0, step_size0=self.step_size0, momentum0=self.momentum0)  # validates scales

    def schedule(self, step: int) -> PGSchedule:
        return pg_schedule(self.name, step, step_size0=self.step_size0, momentum0=self.momentum0)

    @property
    def normalized(self) -> bool:
        return METHOD_INFO[self.name].normalized

    @property
    def direction(self) -> str:
        return METHOD_INFO[self.name].direction


@dataclass
class PGState:
    """Explicit optimizer state.

    Attributes
    ----------
    step : int
        :math:`t`, the number of updates done.
    params : Tensor [..., dim]
        :math:`\\theta_t`.
    prev_params : Tensor [..., dim]
        :math:`\\theta_{t-1}` (equal to ``params`` before the first update).
    direction : Tensor [..., dim]
        :math:`d_{t-1}` (zeros before the first update).
    """

    step: int
    params: torch.Tensor
    prev_params: torch.Tensor
    direction: torch.Tensor

    def state_dict(self) -> dict:
        return {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_state_dict(cls, d: dict) -> "PGState":
        return cls(int(d["step"]), d["params"], d["prev_params"], d["direction"])


@dataclass(frozen=True)
class QueryPoints:
    """Where this iteration's estimates must be taken.

    Attributes
    ----------
    gradient_point : Tensor [..., dim]
        Sample trajectories here and pass their gradient estimate to
        :func:`pg_update` (:math:`\\theta_t`, or :math:`\\tilde\\theta_t` for N-PG-IGT).
    hessian_point : Tensor [..., dim] or None
        (N)-HARPG from :math:`t\\ge1`: sample a second batch here and estimate
        :math:`\\nabla^2J\\,v` with ``vector=displacement``.
    displacement : Tensor [..., dim] or None
        :math:`v_t = \\theta_t-\\theta_{t-1}`.
    interpolation : Tensor [...] or None
        :math:`q_t`.
    schedule : PGSchedule
    """

    gradient_point: torch.Tensor
    hessian_point: torch.Tensor | None
    displacement: torch.Tensor | None
    interpolation: torch.Tensor | None
    schedule: PGSchedule


def _method(method) -> PGMethod:
    if isinstance(method, PGMethod):
        return method
    if isinstance(method, str):
        return PGMethod(method)
    raise ValueError(f"method must be a PGMethod or a method name in {list(METHODS)}; got {type(method).__name__}.")


def _check_vector(x: torch.Tensor, like: torch.Tensor, *, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape {tuple(like.shape)}.")
    if x.shape != like.shape:
        raise ValueError(f"{name} must have the shape of the parameters {tuple(like.shape)}; got {tuple(x.shape)}. "
                         "Flatten per-parameter gradients with torch.cat([g.reshape(-1) for g in grads]).")
    x = x.detach().to(like.device, like.dtype)
    check_finite(x.reshape(1, -1) if x.ndim < 2 else x.reshape(x.shape[0], -1), name=name)
    return x


def pg_init(params: torch.Tensor) -> PGState:
    """Initial state at :math:`\\theta_0` = ``params`` (shape [dim] or [problems, dim], floating)."""
    if not isinstance(params, torch.Tensor) or not params.is_floating_point():
        raise ValueError("params must be a floating tensor of shape [dim] or [problems, dim].")
    if params.ndim not in (1, 2) or params.shape[-1] == 0:
        raise ValueError(f"params must have shape [dim] or [problems, dim]; got {tuple(params.shape)}.")
    check_finite(params.reshape(1, -1) if params.ndim == 1 else params, name="params")
    p = params.detach().clone()
    return PGState(0, p, p.clone(), torch.zeros_like(p))


def pg_query(state: PGState, method, *, generator: torch.Generator | None = None) -> QueryPoints:
    """The points at which iteration ``state.step`` needs estimates.

    ``generator`` (a torch.Generator) is required by ``harpg``/``n_harpg``
    for :math:`q_t\\sim U[0,1]`, one per problem; the other methods draw nothing.
    """
    m = _method(method)
    sch = m.schedule(state.step)
    th, prev = state.params, state.prev_params
    if m.direction == "igt" and state.step > 0:
        eta = sch.gradient_weight if m.igt_lookahead == "eta_t" else m.schedule(state.step - 1).gradient_weight
        look = th + ((1.0 - eta) / eta) * (th - prev)
        return QueryPoints(look, None, None, None, sch)
    if m.direction == "recursive" and state.step > 0:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"{m.name} draws the interpolation point q_t ~ U[0,1]: pass generator=torch.Generator(...).")
        q = torch.rand(th.shape[:-1], generator=generator, dtype=th.dtype, device=generator.device).to(th.device)
        qq = q[..., None]
        return QueryPoints(th, qq * th + (1.0 - qq) * prev, th - prev, q, sch)
    return QueryPoints(th, None, None, None, sch)


def _normalize(d: torch.Tensor) -> torch.Tensor:
    n = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    return torch.where(n > 0, d / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(d))


def pg_update(state: PGState, method, gradient: torch.Tensor, *, hessian_vector: torch.Tensor | None = None,
              maximize: bool = True) -> PGState:
    """One update; returns the new state (the input state is not modified).

    Parameters
    ----------
    state : PGState
    method : PGMethod or str
    gradient : Tensor, shape of ``state.params``
        The estimate of :math:`\\nabla J` at ``pg_query(...).gradient_point``.
    hessian_vector : Tensor, shape of ``state.params``
        (N)-HARPG for ``step >= 1``: the estimate of :math:`\\nabla^2J\\,v_t`
        at ``hessian_point``. Must be None for the other methods.
    maximize : bool
        True (default): ``gradient`` estimates :math:`\nabla J` and the step
        ascends. False: ``gradient`` (and ``hessian_vector``) are of a loss
        :math:`-J` and the step descends (torch's convention); the state's
        ``direction`` is then kept as the ascent direction on :math:`-\text{loss}`.
    """
    m = _method(method)
    if not isinstance(maximize, bool):
        raise ValueError(f"maximize must be True (ascent on J) or False (descent on a loss); got {maximize!r}.")
    g = _check_vector(gradient, state.params, name="gradient")
    if not maximize:
        g = -g
        if hessian_vector is not None:
            hessian_vector = -hessian_vector
    sch = m.schedule(state.step)
    eta = sch.gradient_weight
    if m.direction == "recursive":
        if state.step > 0:
            if hessian_vector is None:
                raise ValueError(f"{m.name} needs hessian_vector (the estimate at QueryPoints.hessian_point) from step 1 on.")
            u = _check_vector(hessian_vector, state.params, name="hessian_vector")
            if m.hessian_clip is not None:
                radius = m.hessian_clip * torch.linalg.vector_norm(state.params - state.prev_params, dim=-1, keepdim=True)
                un = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
                u = u * torch.where(un > radius, radius / torch.where(un > 0, un, torch.ones_like(un)), torch.ones_like(un))
            d = (1.0 - eta) * (state.direction + u) + eta * g
        else:
            d = g
    else:
        if hessian_vector is not None:
            raise ValueError(f"{m.name} takes no hessian_vector; only harpg and n_harpg do.")
        if m.direction in ("ema", "igt") and state.step > 0:
            d = (1.0 - eta) * state.direction + eta * g
        else:
            d = g
    delta = _normalize(d) if m.normalized else d
    new = state.params + sch.step_size * delta
    return PGState(state.step + 1, new, state.params.clone(), d)


class PolicyGradientOptimizer:
    """The functional optimizers for any torch policy (flattens its parameters).

    Usage, one iteration::

        q = opt.query(generator=gen)        # sets the policy to q.gradient_point
        g = ...                              # estimate grad J from trajectories of the policy
        u = None
        if q.hessian_point is not None:
            opt.load(q.hessian_point)        # sample a Hessian batch there
            u = ...                          # hessian_vector_estimate(..., vector=opt.vector_to_list(q.displacement))
        opt.step(g, u)                       # the policy now holds theta_{t+1}

    ``g`` and ``u`` may be flat vectors or lists shaped like the parameters.

    Parameters
    ----------
    params : iterable of Parameter
    method : PGMethod or str
    maximize : bool
        True (default, this class's behaviour so far): ``step`` takes estimates
        of :math:`\nabla J` and ascends. False: gradients of a loss, descent
        (torch's default). Pass it explicitly.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], method, *, maximize: bool = True):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: pass policy.parameters().")
        if not isinstance(maximize, bool):
            raise ValueError(f"maximize must be True (ascent on J) or False (descent on a loss); got {maximize!r}.")
        self.maximize = maximize
        self.method = _method(method)
        self.state = pg_init(parameters_to_vector(self.params).detach())

    def load(self, vector: torch.Tensor) -> None:
        """Write a flat vector into the policy's parameters."""
        with torch.no_grad():
            vector_to_parameters(vector.detach().to(self.state.params.device), self.params)

    def flatten(self, tensors) -> torch.Tensor:
        """A flat vector from a tensor or a list of tensors shaped like the parameters."""
        if isinstance(tensors, torch.Tensor):
            return tensors.reshape(-1)
        return torch.cat([t.reshape(-1) for t in tensors])

    def vector_to_list(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector into tensors shaped like the parameters."""
        out, i = [], 0
        for p in self.params:
            out.append(vector[i:i + p.numel()].view_as(p))
            i += p.numel()
        return out

    def query(self, *, generator: torch.Generator | None = None) -> QueryPoints:
        q = pg_query(self.state, self.method, generator=generator)
        self.load(q.gradient_point)
        return q

    def step(self, gradient, hessian_vector=None) -> None:
        g = self.flatten(gradient)
        u = None if hessian_vector is None else self.flatten(hessian_vector)
        self.state = pg_update(self.state, self.method, g, hessian_vector=u, maximize=self.maximize)
        self.load(self.state.params)

    def state_dict(self) -> dict:
        return {"method": dataclasses.asdict(self.method), "maximize": self.maximize, "state": self.state.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.method = PGMethod(**d["method"])
        self.maximize = bool(d.get("maximize", True))
        self.state = PGState.from_state_dict(d["state"])
        self.load(self.state.params)
