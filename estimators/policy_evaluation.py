r"""Continuous-time policy evaluation by the martingale approach (Jia & Zhou 2022).

Data are sampled paths on a time grid :math:`t_0<\dots<t_N` (uniform or
not): states :math:`X_i`, running reward rates :math:`r_i` on
:math:`[t_i,t_{i+1})` and, for a finite horizon, a terminal reward
:math:`h(X_N)` (:class:`PathBatch`). With :math:`w_i = e^{-\beta t_i}` and a
candidate value :math:`V_i = J^\theta(t_i, X_i)` the discretised martingale
and its increments are

.. math::

    M_i = w_i V_i + \sum_{j<i} w_j r_j \Delta t_j,\qquad
    \Delta M_i = w_{i+1}V_{i+1} - w_i V_i + w_i r_i\Delta t_i ,

where, for a finite horizon, :math:`V_N` is replaced by the terminal reward
(the terminal condition :math:`J(T,\cdot)=h` is known). Every estimator is a
way to make :math:`M` a martingale (theory: :mod:`polab.theory.martingale_pe`):

=====================  ===========================================================  ===========================
estimator              condition solved                                             functions
=====================  ===========================================================  ===========================
ML                     min :math:`\tfrac12\sum_i\Delta t_i (G_i - w_iV_i)^2`         :func:`ml_linear`, :func:`martingale_loss`
TD(λ) / LSTD(λ)        :math:`\sum_i \xi_i \Delta M_i = 0`, :math:`\xi` = trace      :func:`lstd`, :func:`td_lambda_offline`, :func:`td_lambda_online`, :func:`td_lambda_surrogate`
GTD (two weightings)   min :math:`g^\top A g`, :math:`g=\sum_i\xi_i\Delta M_i`       :func:`gtd_linear`, :func:`gtd_online`
MSTDE (cautionary)     min :math:`\sum_i \Delta M_i^2/\Delta t_i`                   :func:`mstde_linear`, :func:`mean_square_td_error`
=====================  ===========================================================  ===========================

with :math:`G_i = w_N h(X_N) + \sum_{j\ge i} w_j r_j\Delta t_j` the discounted
return-to-go (notes ``theory_core.md`` 2.4) and the TD(λ) test function

.. math:: \xi_k = \sum_{i\le k} \lambda^{t_k-t_i}\, w_i^{p}\, \partial_\theta V_i\, \Delta t_i ,\qquad \lambda\in[0,1],

where the power :math:`p` is chosen by ``test_weighting`` (every TD(0),
TD(λ), LSTD, GTD and online-TD function takes it):

==================  =====  ==========================================  =======================================
``test_weighting``  p      weight on the TD error at :math:`t`          source
==================  =====  ==========================================  =======================================
``"paper"``         0      :math:`e^{-\beta t}` (ΔM carries it once)    the paper's form (default)
``"squared"``       1      :math:`e^{-2\beta t}`                        polab's earlier default; TD(1) = ML
``"none"``          -1     1 (usual discounted TD(0)/TD(λ))             Sutton & Barto's discounted TD
==================  =====  ==========================================  =======================================

The paper's form: the martingale orthogonality condition
:math:`\mathbb E\int_0^T\xi_t\,dM_t = 0` with test function
:math:`\xi_t = \partial_\theta J^\theta(t, X_t)` (TD(0)) or
:math:`\int_0^t\lambda^{\cdot}\partial_\theta J^\theta(s, X_s)\,ds` (TD(λ)) and
:math:`M_t = e^{-\beta t}J^\theta(t,X_t) + \int_0^te^{-\beta s}r\,ds` (the
discount inside :math:`M`, none in :math:`\xi`), as restated by the same
authors in "Policy gradient and actor-critic learning in continuous time and
space", JMLR 23(275), 2022, §3.1 (read through the search tool's code corpus:
"common choices of the test functions are ξ_t = ∂J^θ/∂θ(t, X_t) or
ξ_t = ∫_0^t λ^{s−t} ∂J^θ/∂θ(s, X_s) ds"; their displayed equations were not
decoded in that copy, so :math:`M` is taken from the notes, ``theory_core.md``
2.3). All three forms solve the same equations when the value is in the
feature span (they differ by a positive weight on each TD error), but the
squared form has 2-26x the variance on the OU/LQ problems (notebook 03) and
its online TD stops learning about :math:`1/(2\beta)` into each path. Only
the squared form makes the discrete ML exactly TD(λ=1).

Linear value functions :math:`V = o + \phi^\top\theta` (features ``phi``,
known offset ``o``, e.g. to impose :math:`J(T,\cdot)=h`) have closed forms;
any torch module ``value_fn(times, states)`` is fitted by gradient steps
(:func:`fit_value_function`). Everything batches over paths and follows the
device and dtype of the inputs.

Departures from the paper (and why)
-----------------------------------
- Discount: :math:`\Delta M_i` uses :math:`w_{i+1}V_{i+1}` (per-step factor
  :math:`e^{-\beta\Delta t_i}`) where the paper's discretisation
  (notes 2.5) writes :math:`w_i(V_{i+1} - V_i - \beta V_i\Delta t_i)`, its
  first-order expansion. With this choice the increments telescope, so the
  discrete ML is *exactly* TD(λ=1) (checked in float64 by
  :mod:`polab.proofs_checks.martingale_pe_checks`), and the estimators' large-sample
  limit is the value of the Euler chain (:mod:`polab.theory.diffusion_values`).
- TD(λ) trace: the notes mark the paper's parametrisation of λ as
  unconfirmed (the restatement writes :math:`\lambda^{s-t}`); here λ is the
  decay per unit time, λ=0 is TD(0) (test function
  :math:`w_k^p\partial_\theta V_k\Delta t_k`, TD(0) up to the constant
  :math:`\Delta t` on a uniform grid) and λ=1 is ML (exactly with ``"squared"``).
- Infinite horizon (``terminal_rewards=None``): ML truncates the
  return-to-go at :math:`t_N`, a bias of at most
  :math:`e^{-\beta(t_N - t_i)}\,\mathbb{E}|J(X_N)|` at :math:`t_i`; the MO
  estimators bootstrap with :math:`V_N` and have no truncation bias.

References
----------
Y. Jia and X. Y. Zhou, "Policy Evaluation and Temporal-Difference Learning in
Continuous Time and Space: A Martingale Approach", JMLR 23(154), 2022.
R. S. Sutton et al., "Fast gradient-descent methods for temporal-difference
learning with linear function approximation", ICML 2009 (GTD2/TDC weighting).
B. T. Polyak and A. B. Juditsky, "Acceleration of stochastic approximation by
averaging", SIAM J. Control Optim. 30(4), 1992.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from .checks import as_tensor, check_finite, check_ndim
from .sde import check_time_grid

__all__ = [
    "TEST_WEIGHTINGS",
    "PathBatch",
    "interval_reward_rates",
    "discount_weights",
    "returns_to_go",
    "martingale_increments",
    "martingale_loss",
    "mean_square_td_error",
    "eligibility_trace",
    "td_lambda_surrogate",
    "LinearMoments",
    "LinearFit",
    "linear_moments",
    "solve_linear",
    "ml_linear",
    "lstd",
    "gtd_linear",
    "mstde_linear",
    "td_lambda_offline",
    "td_lambda_offline_from_moments",
    "online_step_sizes",
    "OnlineFit",
    "td_lambda_online",
    "GTDState",
    "gtd_init",
    "gtd_update",
    "gtd_online",
    "values_on_paths",
    "FitHistory",
    "fit_value_function",
]

Weighting = Literal["identity", "inverse_covariance"]
TestWeighting = Literal["paper", "squared", "none"]

#: ``test_weighting`` -> power p of :math:`w_i = e^{-\beta t_i}` in the test function (module docstring table).
TEST_WEIGHTINGS = {"paper": 0, "squared": 1, "none": -1}


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PathBatch:
    """Sampled paths with their time grid and rewards, checked at construction.

    Parameters
    ----------
    states : Tensor, shape [paths, time, state_dim]
    times : Tensor, shape [time] (one grid for all paths) or [paths, time]
        Strictly increasing along time; uniform or not. Stored as
        [paths, time] (an expanded view when a single grid is given).
    rewards : Tensor, shape [paths, time - 1]
        Running reward *rate* on :math:`[t_i, t_{i+1})` (left point
        :math:`r(t_i, X_i)` for a diffusion; reward / step length for a
        discrete-time environment).
    terminal_rewards : Tensor, shape [paths], optional
        :math:`h(X_N)`; give it for a finite horizon, leave None for a
        discounted infinite horizon.

    Shapes
    ------
    ``dt`` is [paths, time - 1]. All tensors must share a device and a
    floating dtype (``times`` and ``rewards`` are converted to the dtype of
    ``states``).
    """

    states: torch.Tensor
    times: torch.Tensor
    rewards: torch.Tensor
    terminal_rewards: torch.Tensor | None = None

    def __post_init__(self):
        x = as_tensor(self.states, name="states")
        if not x.is_floating_point():
            raise ValueError(f"states must be floating; got dtype {x.dtype}.")
        check_ndim(x, 3, name="states", layout="[paths, time, state_dim]")
        n, T, _ = x.shape
        if n < 1 or T < 2:
            raise ValueError(f"states needs at least one path and two time points; got shape {tuple(x.shape)}.")
        check_finite(x, name="states")
        t = as_tensor(self.times, name="times").to(dtype=x.dtype, device=x.device)
        if t.ndim == 1:
            t = check_time_grid(t)
            if t.shape[0] != T:
                raise ValueError(f"times has {t.shape[0]} points but states has {T} time steps (shape {tuple(x.shape)}).")
            t = t.expand(n, T)
        elif t.ndim == 2:
            if tuple(t.shape) != (n, T):
                raise ValueError(f"times must have shape [time]={T} or [paths, time]={(n, T)}; got {tuple(t.shape)}.")
            check_finite(t, name="times")
            if not bool((t[:, 1:] > t[:, :-1]).all()):
                rows = (t[:, 1:] <= t[:, :-1]).any(dim=1).nonzero().flatten()[:10].tolist()
                raise ValueError(f"times must be strictly increasing along time; rows {rows} are not. Sort each grid and drop repeats.")
        else:
            raise ValueError(f"times must have shape [time] or [paths, time]; got {tuple(t.shape)}.")
        r = as_tensor(self.rewards, name="rewards").to(dtype=x.dtype, device=x.device)
        if tuple(r.shape) != (n, T - 1):
            hint = " (drop the last column: rewards live on the T-1 intervals)" if tuple(r.shape) == (n, T) else ""
            raise ValueError(f"rewards must have shape [paths, time-1]={(n, T - 1)}; got {tuple(r.shape)}{hint}.")
        check_finite(r, name="rewards")
        h = self.terminal_rewards
        if h is not None:
            h = as_tensor(h, name="terminal_rewards").to(dtype=x.dtype, device=x.device)
            if tuple(h.shape) != (n,):
                raise ValueError(f"terminal_rewards must have shape [paths]=({n},); got {tuple(h.shape)}.")
            check_finite(h, name="terminal_rewards")
        object.__setattr__(self, "states", x)
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "rewards", r)
        object.__setattr__(self, "terminal_rewards", h)

    @property
    def num_paths(self) -> int:
        return int(self.states.shape[0])

    @property
    def num_times(self) -> int:
        return int(self.states.shape[1])

    @property
    def dt(self) -> torch.Tensor:
        """Step lengths, shape [paths, time - 1]."""
        return self.times[:, 1:] - self.times[:, :-1]

    @property
    def finite_horizon(self) -> bool:
        return self.terminal_rewards is not None

    def select(self, index) -> "PathBatch":
        """The paths ``index`` (any tensor index over the first dimension)."""
        return PathBatch(
            states=self.states[index], times=self.times[index], rewards=self.rewards[index],
            terminal_rewards=None if self.terminal_rewards is None else self.terminal_rewards[index],
        )


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not beta >= 0 or beta != beta or beta == float("inf"):
        raise ValueError(f"beta (discount rate) must be finite and >= 0; got {beta}.")
    return beta


def _check_lambda(lambda_: float) -> float:
    lambda_ = float(lambda_)
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must lie in [0, 1] (0: TD(0), 1: martingale loss); got {lambda_}.")
    return lambda_


def interval_reward_rates(point_rates, times, *, rule: Literal["left", "trapezoid"] = "left", beta: float = 0.0) -> torch.Tensor:
    r"""Reward rates on the intervals :math:`[t_i, t_{i+1})` from rates at the grid points, for :class:`PathBatch`.

    The estimators integrate :math:`\int e^{-\beta s}r\,ds` as :math:`\sum_i w_i\tilde r_i\Delta t_i`.

    - ``"left"`` (the paper's discretisation): :math:`\tilde r_i = r(t_i, X_i)`, error :math:`O(\Delta t)`;
    - ``"trapezoid"``: :math:`\tilde r_i = \tfrac12\big(r_i + e^{-\beta\Delta t_i}r_{i+1}\big)`, so that
      :math:`w_i\tilde r_i\Delta t_i` is the trapezoid rule for the *discounted* integrand on the
      interval (error :math:`O(\Delta t^2)` along a smooth path).

    The trapezoid rate uses :math:`r_{i+1}`, known at :math:`t_{i+1}`; :math:`\Delta M_i` is
    :math:`\mathcal F_{t_{i+1}}`-measurable either way, so test functions at :math:`t_i` stay adapted.
    It changes the large-sample target of the discretised estimators (no longer the Euler-chain value of
    :mod:`polab.theory.diffusion_values`, which assumes left-point rewards).

    Parameters
    ----------
    point_rates : Tensor, shape [paths, time]
        :math:`r(t_i, X_i)` at every grid point.
    times : Tensor, shape [time] or [paths, time]
    rule : {"left", "trapezoid"}
    beta : float, >= 0

    Returns
    -------
    Tensor, shape [paths, time - 1], in the dtype and device of ``point_rates``.
    """
    r = as_tensor(point_rates, name="point_rates")
    check_ndim(r, 2, name="point_rates", layout="[paths, time]")
    if not r.is_floating_point():
        r = r.to(torch.float64)
    check_finite(r, name="point_rates")
    t = as_tensor(times, name="times").to(dtype=r.dtype, device=r.device)
    if t.ndim == 1:
        t = check_time_grid(t).expand(r.shape[0], -1)
    if tuple(t.shape) != tuple(r.shape):
        raise ValueError(f"times must have shape [time]={r.shape[1]} or [paths, time]={tuple(r.shape)}; got {tuple(t.shape)}.")
    beta = _check_beta(beta)
    if rule == "left":
        return r[:, :-1]
    if rule == "trapezoid":
        return 0.5 * (r[:, :-1] + torch.exp(-beta * (t[:, 1:] - t[:, :-1])) * r[:, 1:])
    raise ValueError(f"rule must be 'left' or 'trapezoid'; got {rule!r}.")


def _test_weight(batch: PathBatch, *, beta: float, test_weighting: str) -> torch.Tensor:
    """:math:`w_i^p`, shape [paths, time] (p from :data:`TEST_WEIGHTINGS`)."""
    if test_weighting not in TEST_WEIGHTINGS:
        raise ValueError(f"test_weighting must be one of {sorted(TEST_WEIGHTINGS)} ('paper': e^(-beta t) on each TD error, "
                         f"the paper's form; 'squared': e^(-2 beta t); 'none': unweighted); got {test_weighting!r}.")
    p = TEST_WEIGHTINGS[test_weighting]
    beta = _check_beta(beta)
    if p == 0:
        return torch.ones_like(batch.times)
    if p < 0 and beta * float(batch.times.max()) > 600.0:
        raise ValueError(f"test_weighting='none' needs e^(beta t) <= e^600; got beta * max(t) = {beta * float(batch.times.max()):g}. "
                         "Shift the time origin or shorten the paths.")
    return torch.exp(-p * beta * batch.times)


def _check_values(values, batch: PathBatch, *, name: str = "values") -> torch.Tensor:
    v = as_tensor(values, name=name)
    if tuple(v.shape) != (batch.num_paths, batch.num_times):
        raise ValueError(f"{name} must have shape [paths, time]={(batch.num_paths, batch.num_times)}; got {tuple(v.shape)}.")
    check_finite(v.detach(), name=name)
    return v


def discount_weights(batch: PathBatch, *, beta: float) -> torch.Tensor:
    r""":math:`w_i = e^{-\beta t_i}`, shape [paths, time]."""
    return torch.exp(-_check_beta(beta) * batch.times)


def returns_to_go(batch: PathBatch, *, beta: float) -> torch.Tensor:
    r"""Discounted return-to-go :math:`G_i = w_N h + \sum_{j=i}^{N-1} w_j r_j \Delta t_j` for :math:`i<N`.

    Shapes: [paths, time - 1]. With no terminal reward the sum is truncated at :math:`t_N`.
    """
    w = discount_weights(batch, beta=beta)
    inc = w[:, :-1] * batch.rewards * batch.dt
    g = torch.flip(torch.cumsum(torch.flip(inc, [1]), 1), [1])
    if batch.finite_horizon:
        g = g + (w[:, -1] * batch.terminal_rewards)[:, None]
    return g


def _terminal_replaced(values: torch.Tensor, batch: PathBatch) -> torch.Tensor:
    if not batch.finite_horizon:
        return values
    return torch.cat([values[:, :-1], batch.terminal_rewards[:, None].to(values.dtype)], dim=1)


def martingale_increments(values, batch: PathBatch, *, beta: float) -> torch.Tensor:
    r"""Increments :math:`\Delta M_i = w_{i+1}V_{i+1} - w_iV_i + w_i r_i \Delta t_i`.

    Parameters
    ----------
    values : Tensor, shape [paths, time]
        :math:`V_i = J^\theta(t_i, X_i)` (may carry gradients). For a finite
        horizon the last column is replaced by ``batch.terminal_rewards``.
    batch : PathBatch
    beta : float, >= 0

    Returns
    -------
    Tensor, shape [paths, time - 1]
    """
    v = _terminal_replaced(_check_values(values, batch), batch)
    w = discount_weights(batch, beta=beta).to(v.dtype)
    wv = w * v
    return wv[:, 1:] - wv[:, :-1] + w[:, :-1] * batch.rewards * batch.dt


def martingale_loss(values, batch: PathBatch, *, beta: float) -> torch.Tensor:
    r"""Discretised martingale loss :math:`\frac1n\sum_p \tfrac12\sum_{i<N}\Delta t_i (G_i - w_i V_i)^2`.

    Notes 2.4 (paper's ML). ``values`` [paths, time] may carry gradients; the
    last column is not used (the terminal reward enters through :math:`G`).
    Returns a scalar tensor.
    """
    v = _check_values(values, batch)
    g = returns_to_go(batch, beta=beta).to(v.dtype)
    w = discount_weights(batch, beta=beta).to(v.dtype)
    res = g - w[:, :-1] * v[:, :-1]
    return 0.5 * (batch.dt * res * res).sum(dim=1).mean()


def mean_square_td_error(values, batch: PathBatch, *, beta: float) -> torch.Tensor:
    r"""Mean-square TD error :math:`\frac1n\sum_p\sum_i \Delta M_i^2/\Delta t_i` (the cautionary objective).

    Its minimiser tracks the quadratic variation of :math:`M^\theta`, not the
    value (:mod:`polab.theory.martingale_pe`, item 4), plus, for a finite
    horizon, the terminal-jump penalty :math:`e^{-2\beta T}\mathbb{E}(h-J^\theta(T^-))^2`
    (the last increment uses :math:`h` in place of :math:`V_N`). Returns a scalar tensor.
    """
    dm = martingale_increments(values, batch, beta=beta)
    return (dm * dm / batch.dt).sum(dim=1).mean()


def _decay(batch: PathBatch, lambda_: float, dtype) -> torch.Tensor:
    """:math:`\\lambda^{\\Delta t_i}`, shape [paths, time-1] (exactly 0 for lambda 0, 1 for lambda 1)."""
    dt = batch.dt.to(dtype)
    if lambda_ == 0.0:
        return torch.zeros_like(dt)
    if lambda_ == 1.0:
        return torch.ones_like(dt)
    return torch.pow(torch.as_tensor(lambda_, dtype=dtype, device=dt.device), dt)


def eligibility_trace(gradients, batch: PathBatch, *, beta: float, lambda_: float,
                      test_weighting: TestWeighting = "paper") -> torch.Tensor:
    r"""TD(λ) test functions :math:`\xi_k = \sum_{i\le k}\lambda^{t_k-t_i} w_i^p g_i \Delta t_i`.

    Computed by :math:`\xi_k = \lambda^{\Delta t_{k-1}}\xi_{k-1} + w_k^p g_k\Delta t_k`;
    :math:`p = 0` (``"paper"``, default: the paper's test function, the value
    gradient), 1 (``"squared"``) or -1 (``"none"``), see the module docstring.

    Parameters
    ----------
    gradients : Tensor, shape [paths, time, k] or [paths, time - 1, k]
        :math:`g_i = \partial_\theta J^\theta(t_i, X_i)` (the features for a
        linear value function); a last time point is ignored.
    batch : PathBatch
    beta : float, >= 0
    lambda_ : float in [0, 1]
        Decay per unit time; 0 gives TD(0), 1 the martingale-loss test
        function (exactly for ``test_weighting="squared"``).
    test_weighting : {"paper", "squared", "none"}

    Returns
    -------
    Tensor, shape [paths, time - 1, k]
    """
    lambda_ = _check_lambda(lambda_)
    g = as_tensor(gradients, name="gradients")
    check_ndim(g, 3, name="gradients", layout="[paths, time, k]")
    n, T = batch.num_paths, batch.num_times
    if g.shape[0] != n or g.shape[1] not in (T, T - 1):
        raise ValueError(f"gradients must have shape [paths, time or time-1, k] with paths={n}, time={T}; got {tuple(g.shape)}.")
    g = g[:, : T - 1]
    w = _test_weight(batch, beta=beta, test_weighting=test_weighting).to(g.dtype)
    inc = (w[:, :-1] * batch.dt.to(g.dtype))[:, :, None] * g
    if lambda_ == 1.0:
        return torch.cumsum(inc, dim=1)
    if lambda_ == 0.0:
        return inc
    # time-major contiguous copies: the recursion reads one time slice per step
    decay = _decay(batch, lambda_, g.dtype).T.contiguous()
    inc_t = inc.transpose(0, 1).contiguous()
    out = torch.empty_like(inc_t)
    acc = inc_t[0]
    out[0] = acc
    for k in range(1, T - 1):
        acc = decay[k - 1, :, None] * acc + inc_t[k]
        out[k] = acc
    return out.transpose(0, 1)


def _discounted_future_sum(x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """u_i = x_i + decay_i u_{i+1} (reverse recursion), shapes [paths, time-1]."""
    xt, dect = x.T.contiguous(), decay.T.contiguous()
    out = torch.empty_like(xt)
    acc = torch.zeros_like(xt[0])
    for i in range(xt.shape[0] - 1, -1, -1):
        acc = xt[i] + dect[i] * acc
        out[i] = acc
    return out.T


def td_lambda_surrogate(values, batch: PathBatch, *, beta: float, lambda_: float,
                        test_weighting: TestWeighting = "paper") -> torch.Tensor:
    r"""A scalar whose gradient is minus the offline TD(λ) direction :math:`\frac1n\sum_p\sum_k\xi_k\Delta M_k`.

    .. math::

        S(\theta) = -\frac1n\sum_p\sum_{i<N} w_i^p V^\theta_i\Delta t_i\,
                    \mathrm{sg}\Big[\sum_{k\ge i}\lambda^{t_k-t_i}\Delta M_k\Big],

    with :math:`\mathrm{sg}` a stop-gradient; exchanging the sums shows
    :math:`\nabla_\theta S = -\frac1n\sum_p\sum_k \xi_k \Delta M_k` with
    :math:`\xi` from :func:`eligibility_trace` applied to
    :math:`\partial_\theta V`. Minimising :math:`S` with any optimiser is the
    semi-gradient TD(λ) for any torch module (it is not a loss: its value is
    meaningless, only its gradient is used).

    Parameters
    ----------
    values : Tensor, shape [paths, time], carrying gradients
    batch : PathBatch
    beta : float, >= 0
    lambda_ : float in [0, 1]
    test_weighting : {"paper", "squared", "none"}
        Power :math:`p` of :math:`w_i` (module docstring); ``"paper"`` is the paper's form.
    """
    lambda_ = _check_lambda(lambda_)
    v = _check_values(values, batch)
    with torch.no_grad():
        dm = martingale_increments(v.detach(), batch, beta=beta)
        u = dm if lambda_ == 0.0 else _discounted_future_sum(dm, _decay(batch, lambda_, dm.dtype))
    w = _test_weight(batch, beta=beta, test_weighting=test_weighting).to(v.dtype)
    return -(w[:, :-1] * v[:, :-1] * batch.dt * u).sum(dim=1).mean()


# ---------------------------------------------------------------------------
# linear value functions: moments, closed forms, sandwich standard errors
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearMoments:
    r"""Sums over paths of the per-path pieces of a linear estimating equation.

    Each linear estimator solves :math:`\sum_p H^\top(c_p - C_p\theta) = 0`.
    The sums are additive (``a + b``), so paths can be processed in chunks or
    on several devices and combined.

    Attributes
    ----------
    method : str
        ``"mo"`` (MO conditions with test functions), ``"ml"``, ``"mstde"``.
    num_paths : int
    c : Tensor, shape [k_test]
        :math:`\sum_p c_p`.
    C : Tensor, shape [k_test, k]
        :math:`\sum_p C_p`.
    K : Tensor, shape [k_test, k_test]
        :math:`\sum_p\sum_i \xi_i\xi_i^\top/\Delta t_i` (the GTD2-type weighting; ``"mo"`` only, else zeros).
    cc, cC, CC : Tensor or None
        :math:`\sum_p c_pc_p^\top` [k_test, k_test], :math:`\sum_p c_p\otimes C_p`
        [k_test, k_test, k], :math:`\sum_p C_p\otimes C_p` [k_test, k, k_test, k]
        for the sandwich covariance (None when not requested).
    """

    method: str
    num_paths: int
    c: torch.Tensor
    C: torch.Tensor
    K: torch.Tensor
    cc: torch.Tensor | None = None
    cC: torch.Tensor | None = None
    CC: torch.Tensor | None = None

    def __add__(self, other: "LinearMoments") -> "LinearMoments":
        if self.method != other.method or self.C.shape != other.C.shape:
            raise ValueError(f"cannot add moments of {self.method} {tuple(self.C.shape)} and {other.method} {tuple(other.C.shape)}.")
        def s(a, b):
            return None if a is None or b is None else a + b.to(a.device)
        return LinearMoments(self.method, self.num_paths + other.num_paths, self.c + other.c.to(self.c.device),
                             self.C + other.C.to(self.C.device), self.K + other.K.to(self.K.device),
                             s(self.cc, other.cc), s(self.cC, other.cC), s(self.CC, other.CC))


@dataclass(frozen=True)
class LinearFit:
    """A linear value-function estimate with its sandwich (cluster-by-path) covariance.

    Attributes
    ----------
    theta : Tensor, shape [k]
    covariance : Tensor [k, k] or None
        Estimated covariance of ``theta`` over independent paths (M-estimator
        sandwich; None when the moments carried no second moments).
    standard_error : Tensor [k] or None
    num_paths : int
    method : str
    condition_number : float
        Of the matrix solved; large values flag ill-conditioned features.
    """

    theta: torch.Tensor
    covariance: torch.Tensor | None
    standard_error: torch.Tensor | None
    num_paths: int
    method: str
    condition_number: float


def _linear_inputs(features, batch: PathBatch, offset):
    phi = as_tensor(features, name="features")
    check_ndim(phi, 3, name="features", layout="[paths, time, k]")
    if phi.shape[:2] != batch.states.shape[:2]:
        raise ValueError(f"features must have shape [paths, time, k] with [paths, time]={tuple(batch.states.shape[:2])}; got {tuple(phi.shape)}.")
    phi = phi.to(dtype=batch.states.dtype, device=batch.states.device)
    check_finite(phi, name="features")
    if offset is None:
        o = torch.zeros(phi.shape[:2], dtype=phi.dtype, device=phi.device)
    else:
        o = _check_values(as_tensor(offset, name="offset").to(dtype=phi.dtype, device=phi.device), batch, name="offset")
    if batch.finite_horizon:  # V_N = h(X_N): zero features, offset h
        phi = torch.cat([phi[:, :-1], torch.zeros_like(phi[:, -1:])], dim=1)
        o = torch.cat([o[:, :-1], batch.terminal_rewards[:, None]], dim=1)
    return phi, o


def _per_path_pieces(features, batch, *, beta, method, lambda_, offset, test_functions, test_weighting="paper"):
    """Per-path c_p [n, kt], C_p [n, kt, k], K_p [n, kt, kt]."""
    beta = _check_beta(beta)
    phi, o = _linear_inputs(features, batch, offset)
    w = discount_weights(batch, beta=beta)
    dt = batch.dt
    n, _, k = phi.shape
    if method == "ml":
        g = returns_to_go(batch, beta=beta)
        wl = w[:, :-1]
        target = g - wl * o[:, :-1]
        x = wl[:, :, None] * phi[:, :-1]  # [n, N, k]
        c = torch.einsum("pi,pik->pk", dt * target, x)
        C = torch.einsum("pi,pik,pil->pkl", dt, x, x)
        K = torch.zeros((n, k, k), dtype=phi.dtype, device=phi.device)
        return c, C, K
    wo = w * o
    a = wo[:, 1:] - wo[:, :-1] + w[:, :-1] * batch.rewards * dt  # [n, N]
    wphi = w[:, :, None] * phi
    d = wphi[:, :-1] - wphi[:, 1:]  # [n, N, k]
    if method == "mstde":
        c = torch.einsum("pi,pik->pk", a / dt, d)
        C = torch.einsum("pi,pik,pil->pkl", 1.0 / dt, d, d)
        K = torch.zeros((n, k, k), dtype=phi.dtype, device=phi.device)
        return c, C, K
    if method != "mo":
        raise ValueError(f"method must be 'mo', 'ml' or 'mstde'; got {method!r}.")
    if test_functions is None:
        xi = eligibility_trace(phi, batch, beta=beta, lambda_=lambda_, test_weighting=test_weighting)
    else:
        xi = as_tensor(test_functions, name="test_functions").to(dtype=phi.dtype, device=phi.device)
        check_ndim(xi, 3, name="test_functions", layout="[paths, time-1, k_test]")
        if xi.shape[:2] != (n, batch.num_times - 1):
            raise ValueError(f"test_functions must have shape [paths, time-1, k_test] with [paths, time-1]={(n, batch.num_times - 1)}; got {tuple(xi.shape)}.")
        check_finite(xi, name="test_functions")
    c = torch.einsum("pij,pi->pj", xi, a)
    C = torch.einsum("pij,pik->pjk", xi, d)
    K = torch.einsum("pij,pil,pi->pjl", xi, xi, 1.0 / dt)
    return c, C, K


def linear_moments(features, batch: PathBatch, *, beta: float, method: Literal["mo", "ml", "mstde"] = "mo",
                   lambda_: float = 0.0, offset=None, test_functions=None, covariance: bool = True,
                   test_weighting: TestWeighting = "paper") -> LinearMoments:
    r"""Moments of the linear estimating equation of ``method`` over the paths of ``batch``.

    For :math:`V = o + \phi^\top\theta`, :math:`\Delta M_i = a_i - d_i^\top\theta` with
    :math:`a_i = w_{i+1}o_{i+1} - w_io_i + w_ir_i\Delta t_i`, :math:`d_i = w_i\phi_i - w_{i+1}\phi_{i+1}`:

    - ``"mo"``: :math:`c_p=\sum_i\xi_i a_i`, :math:`C_p=\sum_i\xi_i d_i^\top`
      (test functions ``test_functions`` or the TD(λ) trace of the features);
    - ``"ml"``: the normal equations of the martingale loss,
      :math:`c_p=\sum_i\Delta t_i w_i\phi_i(G_i-w_io_i)`, :math:`C_p=\sum_i\Delta t_i w_i^2\phi_i\phi_i^\top`;
    - ``"mstde"``: :math:`c_p=\sum_i d_ia_i/\Delta t_i`, :math:`C_p=\sum_i d_id_i^\top/\Delta t_i`.

    Parameters
    ----------
    features : Tensor, shape [paths, time, k]
        :math:`\phi(t_i, X_i)`. For a finite horizon the last time point is
        replaced by the terminal condition (zero features, offset :math:`h`).
    batch : PathBatch
    beta : float, >= 0
    method : {"mo", "ml", "mstde"}
    lambda_ : float in [0, 1]
        TD(λ) trace (``"mo"`` without ``test_functions``).
    offset : Tensor, shape [paths, time], optional
        Known part :math:`o` of the value.
    test_functions : Tensor, shape [paths, time - 1, k_test], optional
        Any adapted :math:`\xi` (``"mo"`` only); ``k_test >= k``.
    covariance : bool
        Also accumulate the second moments for :func:`solve_linear`'s sandwich
        covariance (cost :math:`O(n k_{test}^2 k^2)`).
    test_weighting : {"paper", "squared", "none"}
        Weight of the TD(λ) trace (``"mo"`` without ``test_functions``);
        ``"paper"`` (default) is the paper's form, see the module docstring.

    Returns
    -------
    LinearMoments
    """
    c, C, K = _per_path_pieces(features, batch, beta=beta, method=method, lambda_=lambda_, offset=offset,
                               test_functions=test_functions, test_weighting=test_weighting)
    cc = cC = CC = None
    if covariance:
        cc = torch.einsum("pa,pb->ab", c, c)
        cC = torch.einsum("pa,pbj->abj", c, C)
        CC = torch.einsum("pai,pbj->aibj", C, C)
    return LinearMoments(method, batch.num_paths, c.sum(0), C.sum(0), K.sum(0), cc, cC, CC)


def solve_linear(moments: LinearMoments, *, weighting: Weighting = "identity") -> LinearFit:
    r"""Solve :math:`\bar C^\top A(\bar c - \bar C\theta) = 0` and attach the sandwich covariance.

    :math:`A = I` (``"identity"``) or :math:`A = \bar K^{-1}` (``"inverse_covariance"``,
    the GTD2/TDC weighting). With as many test functions as parameters the
    solution is :math:`\bar C^{-1}\bar c` for either weighting. The
    covariance treats paths as independent and :math:`A` as fixed:
    :math:`\frac1n J^{-1} S J^{-\top}`, :math:`J = H^\top\bar C`,
    :math:`S = \mathrm{Cov}_p[H^\top(c_p - C_p\hat\theta)]`, :math:`H = A\bar C`.
    """
    if weighting not in ("identity", "inverse_covariance"):
        raise ValueError(f"weighting must be 'identity' or 'inverse_covariance'; got {weighting!r}.")
    n = moments.num_paths
    cbar, Cbar = moments.c / n, moments.C / n
    kt, k = Cbar.shape
    if kt < k:
        raise ValueError(f"need at least as many test functions as parameters; got {kt} test functions for {k} parameters.")
    if kt == k and weighting == "identity":
        H = torch.eye(k, dtype=Cbar.dtype, device=Cbar.device)
    else:
        if weighting == "identity":
            A = torch.eye(kt, dtype=Cbar.dtype, device=Cbar.device)
        else:
            if moments.method != "mo":
                raise ValueError("weighting='inverse_covariance' needs moments of method 'mo'.")
            A = torch.linalg.inv(moments.K / n)
        H = A @ Cbar
    J = H.T @ Cbar
    theta = torch.linalg.solve(J, H.T @ cbar)
    cond = float(torch.linalg.cond(J))
    cov = se = None
    if moments.CC is not None and n > 1:
        cCt = moments.cC @ theta  # [kt, kt]
        CCt = torch.einsum("aibj,i,j->ab", moments.CC, theta, theta)
        S_raw = (moments.cc - cCt - cCt.T + CCt) / n
        gbar = cbar - Cbar @ theta
        S = H.T @ (S_raw - torch.outer(gbar, gbar)) @ H * (n / (n - 1))
        Jinv = torch.linalg.inv(J)
        cov = Jinv @ S @ Jinv.T / n
        cov = 0.5 * (cov + cov.T)
        se = torch.sqrt(torch.clamp(torch.diagonal(cov), min=0.0))
    return LinearFit(theta=theta, covariance=cov, standard_error=se, num_paths=n, method=moments.method, condition_number=cond)


def ml_linear(features, batch: PathBatch, *, beta: float, offset=None, covariance: bool = True) -> LinearFit:
    r"""Martingale-loss minimiser for :math:`V = o + \phi^\top\theta` (closed form, normal equations).

    .. math:: \hat\theta = \Big[\sum_{p,i}\Delta t_i w_i^2\phi_i\phi_i^\top\Big]^{-1}\sum_{p,i}\Delta t_i w_i\phi_i(G_i - w_io_i)

    Shapes: ``features`` [paths, time, k], ``offset`` [paths, time] -> ``theta`` [k].
    Equal to :func:`lstd` with ``lambda_=1`` for a finite horizon (exact identity).
    """
    return solve_linear(linear_moments(features, batch, beta=beta, method="ml", offset=offset, covariance=covariance))


def lstd(features, batch: PathBatch, *, beta: float, lambda_: float = 0.0, offset=None, test_functions=None,
         covariance: bool = True, test_weighting: TestWeighting = "paper") -> LinearFit:
    r"""LSTD(λ): solve the martingale orthogonality conditions :math:`\sum_{p,i}\xi_i\Delta M_i(\theta)=0` exactly.

    .. math:: \hat\theta = \Big[\sum_{p,i}\xi_i d_i^\top\Big]^{-1}\sum_{p,i}\xi_i a_i

    with :math:`\xi` the TD(λ) trace of the features weighted by ``test_weighting``
    (default ``"paper"``: the paper's test function; module docstring) or
    ``test_functions`` with ``k_test == k``. Shapes: ``features`` [paths, time, k] -> ``theta`` [k].
    """
    return solve_linear(linear_moments(features, batch, beta=beta, method="mo", lambda_=lambda_, offset=offset,
                                       test_functions=test_functions, covariance=covariance,
                                       test_weighting=test_weighting))


def gtd_linear(features, batch: PathBatch, *, beta: float, weighting: Weighting = "identity", lambda_: float = 0.0,
               offset=None, test_functions=None, covariance: bool = True,
               test_weighting: TestWeighting = "paper") -> LinearFit:
    r"""Minimiser of the GTD objective :math:`g(\theta)^\top A g(\theta)`, :math:`g = \frac1n\sum_{p,i}\xi_i\Delta M_i(\theta)`.

    Closed form :math:`(\bar C^\top A\bar C)^{-1}\bar C^\top A\bar c`; :math:`A=I`
    or :math:`A=\bar K^{-1}`, :math:`\bar K=\frac1n\sum_{p,i}\xi_i\xi_i^\top/\Delta t_i`
    (the discretised :math:`\mathbb{E}\int\xi\xi^\top dt` for :math:`\lambda=0`).
    The two weightings differ only with more test functions than parameters
    (``test_functions`` [paths, time-1, k_test], ``k_test > k``). The
    stochastic two-timescale solver is :func:`gtd_online`.
    """
    return solve_linear(linear_moments(features, batch, beta=beta, method="mo", lambda_=lambda_, offset=offset,
                                       test_functions=test_functions, covariance=covariance,
                                       test_weighting=test_weighting), weighting=weighting)


def mstde_linear(features, batch: PathBatch, *, beta: float, offset=None, covariance: bool = True) -> LinearFit:
    r"""Minimiser of the mean-square TD error :math:`\sum_{p,i}\Delta M_i(\theta)^2/\Delta t_i` (cautionary baseline).

    Biased for every mesh: the bias does not vanish as :math:`\Delta t\to0`
    (:func:`polab.theory.martingale_pe.mstde_brownian_limit`). With a finite
    horizon and a family that does not impose :math:`J^\theta(T,\cdot)=h`, the
    limit objective also carries the terminal-jump penalty
    :math:`e^{-2\beta T}\mathbb{E}(h(X_T) - J^\theta(T^-,X_T))^2`
    (:func:`polab.theory.martingale_pe.mstde_terminal_jump_limit`).
    """
    return solve_linear(linear_moments(features, batch, beta=beta, method="mstde", offset=offset, covariance=covariance))


# ---------------------------------------------------------------------------
# stochastic-approximation solvers (linear)
# ---------------------------------------------------------------------------
def td_lambda_offline(features, batch: PathBatch, *, beta: float, lambda_: float, step_size: float, num_sweeps: int,
                      offset=None, theta0=None, test_weighting: TestWeighting = "paper") -> torch.Tensor:
    r"""Offline TD(λ): iterate the batch update :math:`\theta \leftarrow \theta + \alpha(\bar c - \bar C\theta)`.

    :math:`\bar c - \bar C\theta = \frac1n\sum_{p,k}\xi_k\Delta M_k(\theta)` is the
    expected TD(λ) update over all paths; the iteration converges to the
    LSTD(λ) solution when :math:`\alpha` is below :math:`2\,\mathrm{Re}\,\mu/|\mu|^2`
    for every eigenvalue :math:`\mu` of :math:`\bar C`. ``test_weighting`` as in
    :func:`linear_moments` (default ``"paper"``, the paper's form).
    Shapes: ``features`` [paths, time, k] -> ``theta`` [k].
    """
    if not step_size > 0 or int(num_sweeps) < 0:
        raise ValueError(f"need step_size > 0 and num_sweeps >= 0; got {step_size}, {num_sweeps}.")
    m = linear_moments(features, batch, beta=beta, method="mo", lambda_=lambda_, offset=offset, covariance=False,
                       test_weighting=test_weighting)
    return td_lambda_offline_from_moments(m, step_size=step_size, num_sweeps=num_sweeps, theta0=theta0)


def td_lambda_offline_from_moments(moments: LinearMoments, *, step_size: float, num_sweeps: int,
                                   theta0=None) -> torch.Tensor:
    r"""Offline TD(λ) iteration :math:`\theta \leftarrow \theta + \alpha(\bar c - \bar C\theta)` on given moments.

    The same iteration as :func:`td_lambda_offline`, for moments summed over
    chunks of paths (``LinearMoments.__add__``), so that data larger than
    memory can be processed chunk by chunk: ``td_lambda_offline(phi, batch, ...)``
    equals ``td_lambda_offline_from_moments(sum of linear_moments(phi_j, batch_j,
    method="mo", ...) over the chunks j, ...)`` up to float round-off.

    Parameters
    ----------
    moments : LinearMoments
        Of method ``"mo"`` with as many test functions as parameters
        (``c`` [k], ``C`` [k, k]).
    step_size : float, > 0
    num_sweeps : int, >= 0
    theta0 : Tensor [k], optional (zeros)

    Returns
    -------
    Tensor, shape [k]
    """
    if not step_size > 0 or int(num_sweeps) < 0:
        raise ValueError(f"need step_size > 0 and num_sweeps >= 0; got {step_size}, {num_sweeps}.")
    if moments.method != "mo" or moments.C.shape[0] != moments.C.shape[1]:
        raise ValueError(f"moments must be of method 'mo' with a square C (one test function per parameter); got "
                         f"method {moments.method!r}, C of shape {tuple(moments.C.shape)}. Use linear_moments(..., method='mo').")
    cbar, Cbar = moments.c / moments.num_paths, moments.C / moments.num_paths
    theta = torch.zeros_like(cbar) if theta0 is None else as_tensor(theta0, name="theta0").to(cbar)
    for _ in range(int(num_sweeps)):
        theta = theta + step_size * (cbar - Cbar @ theta)
    return theta


def online_step_sizes(c, C, K, *, dt: float) -> dict:
    r"""Step sizes of the online solvers from the scale of (pilot) per-path mean moments.

    TD(0): one pass over a path moves :math:`\theta` by about
    :math:`(\alpha/\Delta t)(\bar c-\bar C\theta)`, so
    :math:`\alpha = 0.2\,\Delta t/\rho(\bar C)`. GTD: the slow ODE is
    :math:`\theta' = a\bar C^\top A(\bar c - \bar C\theta)`, so
    :math:`a = 0.2/\lambda_{\max}(\bar C^\top A\bar C)`; the fast variable relaxes at
    rate :math:`b` (identity) or :math:`b\,\lambda(\bar K)`, so :math:`b=0.5` or
    :math:`0.5/\lambda_{\max}(\bar K)`. A heuristic: these set only the speed; the
    fixed points do not depend on them.

    Parameters
    ----------
    c : Tensor [k_test]
        Unused (kept so that a :class:`LinearMoments`' means can be passed as they are).
    C : Tensor [k_test, k]
    K : Tensor [k_test, k_test], positive definite (moments of method ``"mo"``)
    dt : float
        A typical step length.

    Returns
    -------
    dict with keys ``"td"`` (None unless ``k_test == k``), ``"gtd_identity"``,
    ``"gtd_identity_aux"``, ``"gtd_invcov"``, ``"gtd_invcov_aux"``.
    """
    C = as_tensor(C, name="C")
    K = as_tensor(K, name="K")
    if not dt > 0:
        raise ValueError(f"dt must be > 0; got {dt}.")
    square = C.shape[0] == C.shape[1]
    steps = {"td": 0.2 * dt / float(torch.linalg.eigvals(C).abs().max()) if square else None}
    steps["gtd_identity"] = 0.2 / float(torch.linalg.eigvalsh(C.T @ C).max())
    steps["gtd_identity_aux"] = 0.5
    Kinv = torch.linalg.inv(K)
    steps["gtd_invcov"] = 0.2 / float(torch.linalg.eigvalsh(C.T @ Kinv @ C).max())
    steps["gtd_invcov_aux"] = 0.5 / float(torch.linalg.eigvalsh(K).max())
    return steps


@dataclass(frozen=True)
class OnlineFit:
    """Result of an online solver.

    Attributes
    ----------
    theta : Tensor [k]       last iterate
    theta_average : Tensor [k]   Polyak–Ruppert average over the second half of the updates
    num_updates : int
    """

    theta: torch.Tensor
    theta_average: torch.Tensor
    num_updates: int


def _batches(n: int, size: int, generator, device):
    order = torch.randperm(n, generator=generator, device=generator.device if generator is not None else "cpu") \
        if generator is not None else torch.arange(n)
    order = order.to(device)
    return [order[i:i + size] for i in range(0, n, size)]


def td_lambda_online(features, batch: PathBatch, *, beta: float, lambda_: float, step_size: float, paths_per_update: int = 1,
                     num_epochs: int = 1, offset=None, theta0=None, generator: torch.Generator | None = None,
                     test_weighting: TestWeighting = "paper") -> OnlineFit:
    r"""Online TD(λ): update at every time step while the paths unfold.

    Paths are processed in groups of ``paths_per_update`` running in
    parallel (like vectorised environments); at step :math:`k` of a group

    .. math:: e_k = \lambda^{\Delta t_{k-1}} e_{k-1} + w_k^p\phi_k\Delta t_k,\qquad
              \theta \leftarrow \theta + \frac{\alpha}{|B|}\sum_{p\in B}\frac{e_{k,p}\,\Delta M_{k,p}(\theta)}{\Delta t_{k,p}},

    the Euler scheme of :math:`d\theta = \alpha\,\xi_t\,dM^\theta_t` per unit
    time (for λ=0, :math:`\theta \mathrel{+}= \alpha w_k^p\phi_k\Delta M_k`).
    On a uniform grid its mean fixed point is the LSTD(λ) solution of the
    same ``test_weighting``. With ``"squared"`` the effective step decays
    like :math:`e^{-2\beta t}`, so learning stops about :math:`1/(2\beta)`
    into each path; the paper's form (default) decays like :math:`e^{-\beta t}`.

    Parameters
    ----------
    features : Tensor, shape [paths, time, k]
    batch : PathBatch
    beta : float, >= 0
    lambda_ : float in [0, 1]
    step_size : float, > 0
        Constant :math:`\alpha`; the average of the iterates removes most of
        the resulting noise (Polyak & Juditsky 1992).
    paths_per_update : int
    num_epochs : int
        Passes over the paths.
    offset : Tensor [paths, time], optional
    theta0 : Tensor [k], optional (zeros)
    generator : torch.Generator, optional
        Shuffles the order of the paths in each epoch (natural order if None).
    test_weighting : {"paper", "squared", "none"}
        Power :math:`p` (module docstring); ``"paper"`` is the paper's form.
    """
    lambda_ = _check_lambda(lambda_)
    beta = _check_beta(beta)
    wp = _test_weight(batch, beta=beta, test_weighting=test_weighting)
    if not step_size > 0 or int(paths_per_update) < 1:
        raise ValueError(f"need step_size > 0 and paths_per_update >= 1; got {step_size}, {paths_per_update}.")
    phi, o = _linear_inputs(features, batch, offset)
    w = discount_weights(batch, beta=beta)
    dt = batch.dt
    a = (w * o)[:, 1:] - (w * o)[:, :-1] + w[:, :-1] * batch.rewards * dt
    wphi = w[:, :, None] * phi
    d = wphi[:, :-1] - wphi[:, 1:]
    inc = (wp[:, :-1] * dt)[:, :, None] * phi[:, :-1]
    decay = _decay(batch, lambda_, phi.dtype)
    k = phi.shape[2]
    theta = torch.zeros(k, dtype=phi.dtype, device=phi.device) if theta0 is None else as_tensor(theta0, name="theta0").to(phi)
    total = int(num_epochs) * ((batch.num_paths + paths_per_update - 1) // paths_per_update) * (batch.num_times - 1)
    start = total // 2
    avg = torch.zeros_like(theta)
    count = 0
    step = 0
    for _ in range(int(num_epochs)):
        for idx in _batches(batch.num_paths, int(paths_per_update), generator, phi.device):
            e = torch.zeros((idx.shape[0], k), dtype=phi.dtype, device=phi.device)
            # time-major contiguous copies of this group's data
            a_b, dt_b, dec_b = a[idx].T.contiguous(), dt[idx].T.contiguous(), decay[idx].T.contiguous()
            d_b, inc_b = d[idx].transpose(0, 1).contiguous(), inc[idx].transpose(0, 1).contiguous()
            for i in range(batch.num_times - 1):
                e = (dec_b[i - 1, :, None] * e if i > 0 else e) + inc_b[i]
                dm = a_b[i] - d_b[i] @ theta
                theta = theta + step_size * (e * (dm / dt_b[i])[:, None]).mean(0)
                step += 1
                if step > start:
                    avg += theta
                    count += 1
    return OnlineFit(theta=theta, theta_average=avg / max(count, 1), num_updates=step)


@dataclass
class GTDState:
    """State of the two-timescale GTD solver.

    Attributes
    ----------
    theta : Tensor [k]          value parameters (slow timescale)
    aux : Tensor [k_test]       :math:`u`, tracks :math:`A g(\\theta)` (fast timescale)
    theta_sum : Tensor [k]      running sum for the Polyak average
    num_updates : int
    num_averaged : int
    """

    theta: torch.Tensor
    aux: torch.Tensor
    theta_sum: torch.Tensor
    num_updates: int = 0
    num_averaged: int = 0

    @property
    def theta_average(self) -> torch.Tensor:
        return self.theta_sum / max(self.num_averaged, 1)


def gtd_init(num_features: int, num_tests: int, *, dtype=torch.float64, device=None) -> GTDState:
    """Zero state for :func:`gtd_update`."""
    z = torch.zeros(num_features, dtype=dtype, device=device)
    return GTDState(theta=z.clone(), aux=torch.zeros(num_tests, dtype=dtype, device=device), theta_sum=z.clone())


def gtd_update(state: GTDState, c, C, K, *, weighting: Weighting, step_size: float, aux_step_size: float,
               average: bool = True) -> GTDState:
    r"""One two-timescale GTD step from the mean per-path pieces of a group of paths.

    .. math::

        u \leftarrow u + \beta_u\big[(c - C\theta) - B u\big],\qquad
        \theta \leftarrow \theta + \alpha\, C^\top u,

    with :math:`B=I` (``"identity"``: :math:`u\to g`, gradient descent on
    :math:`\tfrac12|g|^2`) or :math:`B=K` (``"inverse_covariance"``:
    :math:`u\to K^{-1}g`, GTD2-type). ``c`` [k_test], ``C`` [k_test, k],
    ``K`` [k_test, k_test] are group means (see :func:`linear_moments`).
    Returns a new state (the input is not modified).
    """
    if weighting not in ("identity", "inverse_covariance"):
        raise ValueError(f"weighting must be 'identity' or 'inverse_covariance'; got {weighting!r}.")
    g = c - C @ state.theta
    Bu = state.aux if weighting == "identity" else K @ state.aux
    aux = state.aux + aux_step_size * (g - Bu)
    theta = state.theta + step_size * (C.T @ aux)
    return GTDState(theta=theta, aux=aux, theta_sum=state.theta_sum + (theta if average else 0.0),
                    num_updates=state.num_updates + 1, num_averaged=state.num_averaged + int(average))


def gtd_online(features, batch: PathBatch, *, beta: float, weighting: Weighting, step_size: float, aux_step_size: float,
               paths_per_update: int = 1, num_epochs: int = 1, lambda_: float = 0.0, offset=None, test_functions=None,
               generator: torch.Generator | None = None, test_weighting: TestWeighting = "paper") -> OnlineFit:
    r"""Two-timescale GTD over paths (one :func:`gtd_update` per group of paths), Polyak-averaged over the second half.

    Each group contributes the means of its per-path :math:`c_p, C_p, K_p`
    (the MO conditions of whole paths, as for an episodic learner). With
    constant steps and fresh paths the mean iterate is stationary exactly at
    the :func:`gtd_linear` solution. Shapes as :func:`gtd_linear`.
    """
    if not (step_size > 0 and aux_step_size > 0) or int(paths_per_update) < 1:
        raise ValueError(f"need step_size > 0, aux_step_size > 0 and paths_per_update >= 1; got {step_size}, "
                         f"{aux_step_size}, {paths_per_update}.")
    c, C, K = _per_path_pieces(features, batch, beta=beta, method="mo", lambda_=lambda_, offset=offset,
                               test_functions=test_functions, test_weighting=test_weighting)
    state = gtd_init(C.shape[2], C.shape[1], dtype=C.dtype, device=C.device)
    groups = [idx for _ in range(int(num_epochs)) for idx in _batches(batch.num_paths, int(paths_per_update), generator, C.device)]
    start = len(groups) // 2
    for j, idx in enumerate(groups):
        state = gtd_update(state, c[idx].mean(0), C[idx].mean(0), K[idx].mean(0), weighting=weighting,
                           step_size=step_size, aux_step_size=aux_step_size, average=j >= start)
    return OnlineFit(theta=state.theta, theta_average=state.theta_average, num_updates=state.num_updates)


# ---------------------------------------------------------------------------
# any torch module
# ---------------------------------------------------------------------------
def values_on_paths(value_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch: PathBatch) -> torch.Tensor:
    """Evaluate ``value_fn(times [paths, time], states [paths, time, d]) -> [paths, time]`` and check the shape."""
    v = value_fn(batch.times, batch.states)
    return _check_values(v, batch, name="value_fn output")


@dataclass(frozen=True)
class FitHistory:
    """Objective value at each step of :func:`fit_value_function` (surrogate values for TD)."""

    method: str
    objective: tuple[float, ...] = field(default_factory=tuple)


def fit_value_function(value_fn: torch.nn.Module, batch: PathBatch, *, beta: float,
                       method: Literal["ml", "td", "mstde"], lambda_: float = 0.0, num_steps: int = 500,
                       learning_rate: float = 1e-2, paths_per_step: int | None = None,
                       generator: torch.Generator | None = None, test_weighting: TestWeighting = "paper") -> FitHistory:
    r"""Fit a torch-module value function in place by Adam on one of the objectives.

    ``"ml"``: :func:`martingale_loss` (gradient ML); ``"td"``: the
    semi-gradient TD(λ) direction through :func:`td_lambda_surrogate`;
    ``"mstde"``: :func:`mean_square_td_error`. Each step uses
    ``paths_per_step`` paths drawn without replacement by ``generator``
    (all paths when None).

    Parameters
    ----------
    value_fn : torch.nn.Module
        ``value_fn(times [paths, time], states [paths, time, d]) -> [paths, time]``,
        on the device of ``batch``.
    batch : PathBatch
    beta : float
    method : {"ml", "td", "mstde"}
    lambda_ : float in [0, 1] (``"td"`` only)
    num_steps : int
    learning_rate : float
    paths_per_step : int, optional
    generator : torch.Generator, optional (CPU generator; needed with ``paths_per_step``)
    test_weighting : {"paper", "squared", "none"} (``"td"`` only; module docstring)

    Returns
    -------
    FitHistory
    """
    if method not in ("ml", "td", "mstde"):
        raise ValueError(f"method must be 'ml', 'td' or 'mstde'; got {method!r}.")
    _check_beta(beta)
    _check_lambda(lambda_)
    if paths_per_step is not None and generator is None:
        raise ValueError("paths_per_step needs a generator to draw the paths of each step.")
    opt = torch.optim.Adam(value_fn.parameters(), lr=learning_rate)
    hist = []
    n = batch.num_paths
    for _ in range(int(num_steps)):
        if paths_per_step is None or paths_per_step >= n:
            sub = batch
        else:
            idx = torch.randperm(n, generator=generator)[:paths_per_step].to(batch.states.device)
            sub = batch.select(idx)
        v = values_on_paths(value_fn, sub)
        if method == "ml":
            obj = martingale_loss(v, sub, beta=beta)
        elif method == "mstde":
            obj = mean_square_td_error(v, sub, beta=beta)
        else:
            obj = td_lambda_surrogate(v, sub, beta=beta, lambda_=lambda_, test_weighting=test_weighting)
        opt.zero_grad(set_to_none=True)
        obj.backward()
        opt.step()
        hist.append(float(obj.detach()))
    return FitHistory(method=method, objective=tuple(hist))
