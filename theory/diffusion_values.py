r"""Closed-form value functions of the test diffusions, and of their Euler chains.

For a diffusion :math:`dX_s = b(X_s)\,ds + \Sigma(X_s)\,dW_s` under a fixed
(already folded-in) policy, running reward :math:`r`, terminal reward
:math:`h` and discount rate :math:`\beta\ge 0`, the value

.. math::

    J(t,x) = \mathbb{E}\Big[\int_t^T e^{-\beta(s-t)} r(X_s)\,ds
             + e^{-\beta(T-t)} h(X_T)\,\Big|\, X_t = x\Big]

solves the Feynman–Kac equation
:math:`\partial_t J + b\cdot\nabla J + \tfrac12\operatorname{tr}(\Sigma\Sigma^\top\nabla^2 J) - \beta J + r = 0`,
:math:`J(T,\cdot)=h` (Jia & Zhou 2022, section 2; project notes
``theory_core.md`` 2.2). Each closed form below is obtained by substituting
an ansatz into that equation; :mod:`polab.proofs_checks.martingale_pe_checks`
repeats every substitution in sympy.

Continuous-time values (all **derived here**)
---------------------------------------------
1. Brownian motion, terminal quadratic payoff: :math:`dX=\sigma dW`,
   :math:`r=0`, :math:`h(x)=x^2`:
   :math:`J(t,x) = e^{-\beta(T-t)}\big(x^2 + \sigma^2 (T-t)\big)`
   (the notes' :math:`x^2+\sigma^2(T-t)` at :math:`\beta=0`).
2. Ornstein–Uhlenbeck, :math:`dX = -\kappa X dt + \sigma dW`, :math:`r=x^2`,
   infinite horizon, :math:`\beta>0`:
   :math:`J(x) = \frac{x^2}{\beta+2\kappa} + \frac{\sigma^2}{\beta(\beta+2\kappa)}`
   (the formula of the issue; it needs :math:`\beta+2\kappa>0`).
3. Geometric Brownian motion, :math:`dX=\mu X dt+\sigma X dW`, running reward
   :math:`a x^p`, terminal reward :math:`b x^p`. With
   :math:`c = \beta - p\mu - \tfrac12 p(p-1)\sigma^2`,
   :math:`J(t,x) = x^p\big[b e^{-c(T-t)} + a(1-e^{-c(T-t)})/c\big]`
   (:math:`a(T-t)` in place of the last term when :math:`c=0`); infinite
   horizon (:math:`b=0`, needs :math:`c>0`): :math:`J(x) = a x^p / c`.
4. Linear–quadratic, :math:`dX = A X dt + \Sigma dW` (the closed loop
   :math:`A = A_0 + B K` of a linear feedback :math:`u=Kx`), running reward
   :math:`x^\top Q x` (a cost is a negative-definite :math:`Q`), infinite
   horizon: :math:`J(x) = x^\top P x + c` with

   .. math::

       (A - \tfrac{\beta}{2} I)^\top P + P (A - \tfrac{\beta}{2} I) + Q = 0,
       \qquad c = \operatorname{tr}(\Sigma\Sigma^\top P)/\beta,

   a continuous Lyapunov equation (``scipy.linalg.solve_continuous_lyapunov``),
   uniquely solvable when :math:`A-\tfrac\beta2 I` is Hurwitz. Item 2 is its
   one-dimensional case.

Values of the Euler–Maruyama chains (all **derived here**)
----------------------------------------------------------
The discretised estimators of :mod:`polab.estimators.policy_evaluation` (uniform
mesh :math:`\Delta t`, left-point rewards, per-step discount
:math:`e^{-\beta\Delta t}`) converge, as the number of paths grows, to the
value of the *Euler chain* :math:`X_{i+1} = X_i + b(X_i)\Delta t +
\Sigma(X_i)\sqrt{\Delta t} Z_i`,

.. math:: V_{\Delta t}(x) = \mathbb{E}\Big[\sum_{i\ge 0} e^{-\beta t_i} r(X_i)\Delta t \,\Big|\, X_0=x\Big],

whenever :math:`V_{\Delta t}` lies in the span of the features (it does for
every family used in the checks). The chains' values are again closed forms,
obtained from :math:`V = r\Delta t + e^{-\beta\Delta t}\mathbb{E}[V(X_1)|X_0]`:

- OU: :math:`V_{\Delta t} = \theta_1 x^2 + \theta_2` with
  :math:`\theta_1 = \Delta t / (1 - e^{-\beta\Delta t}(1-\kappa\Delta t)^2)`,
  :math:`\theta_2 = e^{-\beta\Delta t}\theta_1\sigma^2\Delta t/(1-e^{-\beta\Delta t})`.
- GBM (infinite horizon): :math:`V_{\Delta t} = a\Delta t\, x^p/(1 - e^{-\beta\Delta t} m_p)`
  with :math:`m_p = \mathbb{E}(1+\mu\Delta t+\sigma\sqrt{\Delta t}Z)^p`
  (integer :math:`p\ge 0`, computed from the Gaussian moments).
- LQ: :math:`V_{\Delta t} = x^\top P_{\Delta t} x + c_{\Delta t}` with
  :math:`P_{\Delta t} = Q\Delta t + e^{-\beta\Delta t} F^\top P_{\Delta t} F`,
  :math:`F = I + A\Delta t` (discrete Lyapunov equation) and
  :math:`c_{\Delta t} = e^{-\beta\Delta t}\Delta t\operatorname{tr}(\Sigma\Sigma^\top P_{\Delta t})/(1-e^{-\beta\Delta t})`.
- Brownian motion with terminal payoff :math:`x^2`: the Euler chain of
  :math:`dX=\sigma dW` is exact, and :math:`\mathbb{E}[X_T^2|X_t]=x^2+\sigma^2(T-t)`
  holds on any grid, so :math:`V_{\Delta t} = J` at every mesh, uniform or not.

Each of these differs from the continuous value by :math:`O(\Delta t)`
(Taylor expansion of the formulas; see :mod:`polab.theory.martingale_pe` for the
rate statement).

Values of the exactly sampled OU chain (derived here)
-----------------------------------------------------
On paths from the exact transition (:func:`polab.estimators.sde.exact_ou`) the
simulator has no bias, and what remains is the estimator's own mesh bias (left-point
or trapezoid rewards, per-step discount); the target is then
(:func:`ou_exact_chain_value`, :math:`q = e^{-(\beta+2\kappa)\Delta t}`,
:math:`\gamma = e^{-\beta\Delta t}`, :math:`s^2=\sigma^2(1-e^{-2\kappa\Delta t})/(2\kappa)`):

- left-point rates: :math:`\theta_1 = \Delta t/(1-q)`, :math:`\theta_2 = \gamma\theta_1 s^2/(1-\gamma)`,
  so :math:`\theta_1 - \frac{1}{\beta+2\kappa} = \tfrac12\Delta t + O(\Delta t^2)`;
- trapezoid rates (:func:`polab.estimators.policy_evaluation.interval_reward_rates`):
  :math:`\theta_1 = \tfrac{\Delta t}2\frac{1+q}{1-q} = \tfrac{\Delta t}{2}\coth\tfrac{(\beta+2\kappa)\Delta t}2
  = \frac{1}{\beta+2\kappa} + \frac{(\beta+2\kappa)\Delta t^2}{12} + O(\Delta t^4)`,
  :math:`\theta_2 = \gamma s^2(\theta_1 + \Delta t/2)/(1-\gamma)`.

References
----------
Y. Jia and X. Y. Zhou, "Policy Evaluation and Temporal-Difference Learning in
Continuous Time and Space: A Martingale Approach", JMLR 23(154), 2022.
P. E. Kloeden and E. Platen, "Numerical Solution of Stochastic Differential
Equations", Springer, 1992 (Euler–Maruyama).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_continuous_lyapunov, solve_discrete_lyapunov

__all__ = [
    "brownian_terminal_value",
    "ou_value",
    "ou_value_coefficients",
    "ou_euler_value",
    "ou_exact_chain_value",
    "gbm_value",
    "gbm_euler_value",
    "QuadraticValue",
    "lq_value",
    "lq_euler_value",
]


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; got {value}.")
    return value


def brownian_terminal_value(t, x, *, sigma: float, horizon: float, beta: float = 0.0):
    r"""Value of :math:`dX=\sigma dW` with terminal payoff :math:`x^2` and no running reward.

    :math:`J(t,x) = e^{-\beta(T-t)}(x^2 + \sigma^2(T-t))` for :math:`t\le T`.

    Parameters
    ----------
    t, x : array_like, broadcastable
        Times in ``[0, horizon]`` and states.
    sigma : float, > 0
    horizon : float, > 0
    beta : float, >= 0

    Returns
    -------
    ndarray, the broadcast shape of ``t`` and ``x``.
    """
    _positive("sigma", sigma)
    _positive("horizon", horizon)
    _positive("beta", beta, allow_zero=True)
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    tau = horizon - t
    return np.exp(-beta * tau) * (x**2 + sigma**2 * tau)


def ou_value(x, *, kappa: float, sigma: float, beta: float):
    r"""Discounted value of :math:`dX=-\kappa X dt+\sigma dW` with running reward :math:`x^2`.

    :math:`J(x) = x^2/(\beta+2\kappa) + \sigma^2/(\beta(\beta+2\kappa))`.

    Parameters
    ----------
    x : array_like
    kappa : float, with ``beta + 2*kappa > 0``
    sigma : float, > 0
    beta : float, > 0

    Returns
    -------
    ndarray, shape of ``x``.
    """
    a, b = ou_value_coefficients(kappa=kappa, sigma=sigma, beta=beta)
    x = np.asarray(x, dtype=np.float64)
    return a * x**2 + b


def ou_value_coefficients(*, kappa: float, sigma: float, beta: float) -> tuple[float, float]:
    """``(a, b)`` with :math:`J(x) = a x^2 + b` (see :func:`ou_value`)."""
    _positive("sigma", sigma)
    _positive("beta", beta)
    if not beta + 2 * kappa > 0:
        raise ValueError(f"the OU value is finite only when beta + 2*kappa > 0; got beta={beta}, kappa={kappa}.")
    a = 1.0 / (beta + 2.0 * kappa)
    return a, sigma**2 * a / beta


def ou_euler_value(*, kappa: float, sigma: float, beta: float, dt: float) -> tuple[float, float]:
    r"""``(theta_1, theta_2)`` of the Euler chain's value :math:`\theta_1 x^2 + \theta_2` (module docstring).

    Raises if the chain's discounted second moment diverges
    (:math:`e^{-\beta\Delta t}(1-\kappa\Delta t)^2 \ge 1`).
    """
    _positive("sigma", sigma)
    _positive("beta", beta)
    _positive("dt", dt)
    g = math.exp(-beta * dt)
    denom = 1.0 - g * (1.0 - kappa * dt) ** 2
    if not denom > 0:
        raise ValueError(f"the Euler chain's value is infinite at dt={dt}: need exp(-beta dt)(1-kappa dt)^2 < 1.")
    th1 = dt / denom
    th2 = g * th1 * sigma**2 * dt / (1.0 - g)
    return th1, th2


def ou_exact_chain_value(*, kappa: float, sigma: float, beta: float, dt: float, rule: str = "left") -> tuple[float, float]:
    r"""``(theta_1, theta_2)`` of the value :math:`\theta_1x^2+\theta_2` of the exactly sampled OU chain (module docstring).

    The chain :math:`X_{i+1} = e^{-\kappa\Delta t}X_i + sZ_i` with reward :math:`\sum_i e^{-\beta t_i}\tilde r_i\Delta t`,
    :math:`\tilde r_i = X_i^2` (``rule="left"``) or :math:`\tfrac12(X_i^2 + e^{-\beta\Delta t}X_{i+1}^2)`
    (``"trapezoid"``). From :math:`V(x) = \mathbb{E}[\tilde r_0\Delta t] + e^{-\beta\Delta t}\mathbb{E}V(X_1)`.
    """
    _positive("sigma", sigma)
    _positive("beta", beta)
    _positive("dt", dt)
    if not kappa > -beta / 2:
        raise ValueError(f"the value is finite only when beta + 2*kappa > 0; got beta={beta}, kappa={kappa}.")
    g = math.exp(-beta * dt)
    q = math.exp(-(beta + 2 * kappa) * dt)
    s2 = sigma**2 * dt if kappa == 0 else sigma**2 * (-math.expm1(-2 * kappa * dt)) / (2 * kappa)
    if rule == "left":
        th1 = dt / -math.expm1(-(beta + 2 * kappa) * dt)
        return th1, g * th1 * s2 / (1 - g)
    if rule == "trapezoid":
        th1 = 0.5 * dt * (1 + q) / -math.expm1(-(beta + 2 * kappa) * dt)
        return th1, g * s2 * (th1 + 0.5 * dt) / (1 - g)
    raise ValueError(f"rule must be 'left' or 'trapezoid'; got {rule!r}.")


def _gbm_rate(mu: float, sigma: float, beta: float, power: float) -> float:
    return beta - power * mu - 0.5 * power * (power - 1.0) * sigma**2


def gbm_value(t, x, *, mu: float, sigma: float, beta: float, power: float = 1.0,
              running: float = 1.0, terminal: float = 0.0, horizon: float | None = None):
    r"""Value of :math:`dX=\mu X dt+\sigma X dW` with running reward :math:`a x^p` and terminal :math:`b x^p`.

    Finite horizon: :math:`J(t,x) = x^p[b e^{-c(T-t)} + a(1-e^{-c(T-t)})/c]`,
    :math:`c = \beta - p\mu - \frac12 p(p-1)\sigma^2`. Infinite horizon
    (``horizon=None``, needs ``terminal == 0`` and :math:`c>0`): :math:`a x^p/c`.

    Parameters
    ----------
    t : array_like or None
        Times (ignored for the infinite horizon).
    x : array_like, > 0
    mu, sigma, beta : float
    power : float
        :math:`p`.
    running, terminal : float
        :math:`a` and :math:`b`.
    horizon : float or None
    """
    _positive("sigma", sigma)
    _positive("beta", beta, allow_zero=True)
    c = _gbm_rate(mu, sigma, beta, power)
    x = np.asarray(x, dtype=np.float64)
    if horizon is None:
        if terminal != 0:
            raise ValueError("an infinite-horizon GBM value has no terminal reward; pass terminal=0 or a horizon.")
        if not c > 0:
            raise ValueError(f"the infinite-horizon GBM value is finite only when beta - p mu - p(p-1)sigma^2/2 > 0; got {c}.")
        return running * x**power / c
    tau = horizon - np.asarray(t, dtype=np.float64)
    if abs(c) < 1e-12:
        run = running * tau
    else:
        run = running * (-np.expm1(-c * tau)) / c
    return x**power * (terminal * np.exp(-c * tau) + run)


def _gaussian_power_mean(m: float, s: float, power: int) -> float:
    """E (m + s Z)^p for integer p >= 0, Z standard normal (binomial expansion, E Z^k = (k-1)!!)."""
    total = 0.0
    for k in range(0, power + 1, 2):
        double_fact = math.prod(range(k - 1, 0, -2)) if k > 0 else 1
        total += math.comb(power, k) * m ** (power - k) * s**k * double_fact
    return total


def gbm_euler_value(*, mu: float, sigma: float, beta: float, dt: float, power: int = 1, running: float = 1.0) -> float:
    r"""Coefficient :math:`v` of the infinite-horizon Euler chain's value :math:`v x^p` (integer ``power``)."""
    _positive("sigma", sigma)
    _positive("beta", beta)
    _positive("dt", dt)
    if int(power) != power or power < 0:
        raise ValueError(f"power must be a non-negative integer for the Euler-chain value; got {power}.")
    m_p = _gaussian_power_mean(1.0 + mu * dt, sigma * math.sqrt(dt), int(power))
    denom = 1.0 - math.exp(-beta * dt) * m_p
    if not denom > 0:
        raise ValueError(f"the Euler chain's value is infinite at dt={dt}.")
    return running * dt / denom


@dataclass(frozen=True)
class QuadraticValue:
    """A value function :math:`x^\\top P x + c`.

    Attributes
    ----------
    P : ndarray, shape [d, d], symmetric
    c : float
    """

    P: np.ndarray
    c: float

    def __call__(self, x):
        """Evaluate at states ``x`` of shape ``[..., d]``."""
        x = np.asarray(x, dtype=np.float64)
        return np.einsum("...i,ij,...j->...", x, self.P, x) + self.c


def _lq_inputs(A, Q, noise, beta):
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    Q = np.atleast_2d(np.asarray(Q, dtype=np.float64))
    S = np.atleast_2d(np.asarray(noise, dtype=np.float64))
    d = A.shape[0]
    if A.shape != (d, d):
        raise ValueError(f"A must be square [d, d]; got shape {A.shape}.")
    if Q.shape != (d, d):
        raise ValueError(f"Q must have shape [d, d] = {(d, d)}; got {Q.shape}.")
    if S.ndim != 2 or S.shape[0] != d:
        raise ValueError(f"noise (Sigma) must have shape [d, m] with d={d}; got {S.shape}.")
    if not np.allclose(Q, Q.T, rtol=1e-12, atol=1e-12):
        raise ValueError("Q must be symmetric; pass (Q + Q.T)/2.")
    _positive("beta", beta)
    return A, Q, S


def lq_value(A, Q, noise, *, beta: float) -> QuadraticValue:
    r"""Discounted value of :math:`dX = AX dt + \Sigma dW` with running reward :math:`x^\top Q x`.

    Solves :math:`(A-\tfrac\beta2 I)^\top P + P(A-\tfrac\beta2 I) + Q = 0` with
    ``scipy.linalg.solve_continuous_lyapunov`` and sets
    :math:`c = \operatorname{tr}(\Sigma\Sigma^\top P)/\beta`.

    Parameters
    ----------
    A : array_like, shape [d, d]
        Closed-loop drift matrix :math:`A_0 + BK`.
    Q : array_like, shape [d, d], symmetric
        Reward matrix (negative definite for a cost).
    noise : array_like, shape [d, m]
        :math:`\Sigma`.
    beta : float, > 0

    Returns
    -------
    QuadraticValue

    Raises
    ------
    ValueError
        If :math:`A - \tfrac\beta2 I` is not Hurwitz (the value is infinite or
        the equation is not uniquely solvable).
    """
    A, Q, S = _lq_inputs(A, Q, noise, beta)
    d = A.shape[0]
    shifted = A - 0.5 * beta * np.eye(d)
    eig = np.linalg.eigvals(shifted)
    if not np.all(eig.real < 0):
        raise ValueError(
            f"A - (beta/2) I must be Hurwitz for a finite discounted value; its eigenvalues have max real part {eig.real.max():.4g}. "
            "Use a stabilising feedback or a larger beta."
        )
    # solve_continuous_lyapunov(a, q) solves a X + X a^H = q; a = shifted^T gives shifted^T P + P shifted = -Q.
    P = solve_continuous_lyapunov(shifted.T, -Q)
    P = 0.5 * (P + P.T)
    c = float(np.trace(S @ S.T @ P) / beta)
    return QuadraticValue(P=P, c=c)


def lq_euler_value(A, Q, noise, *, beta: float, dt: float) -> QuadraticValue:
    r"""Value of the Euler chain of the LQ system (module docstring), by ``solve_discrete_lyapunov``.

    Raises if :math:`e^{-\beta\Delta t/2}(I + A\Delta t)` is not Schur stable.
    """
    A, Q, S = _lq_inputs(A, Q, noise, beta)
    _positive("dt", dt)
    d = A.shape[0]
    g = math.exp(-beta * dt)
    F = np.eye(d) + A * dt
    a = math.sqrt(g) * F.T
    rho = np.abs(np.linalg.eigvals(a)).max()
    if not rho < 1:
        raise ValueError(f"the Euler chain's value is infinite at dt={dt} (spectral radius {rho:.4g} >= 1); use a smaller dt.")
    # solve_discrete_lyapunov(a, q) solves a X a^H - X + q = 0, i.e. X = g F^T X F + Q dt.
    P = solve_discrete_lyapunov(a, Q * dt)
    P = 0.5 * (P + P.T)
    c = float(g * dt * np.trace(S @ S.T @ P) / (1.0 - g))
    return QuadraticValue(P=P, c=c)
