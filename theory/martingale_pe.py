r"""Policy evaluation by the martingale approach: characterisation, objectives, rates.

Setting (Jia & Zhou 2022, section 2; notes ``theory_core.md`` 2.2): a
diffusion :math:`dX_s = b(s,X_s)ds + \Sigma(s,X_s)dW_s` under a fixed policy,
running reward :math:`r`, terminal reward :math:`h`, discount rate
:math:`\beta\ge0`, value :math:`J(t,x)` as in :mod:`polab.theory.diffusion_values`.

1. Martingale characterisation [paper, TEXT in the notes]
---------------------------------------------------------
For a :math:`C^{1,2}` candidate :math:`\tilde J` with :math:`\tilde J(T,\cdot)=h`,

.. math:: M_s = e^{-\beta s}\tilde J(s,X_s) + \int_0^s e^{-\beta u} r(u,X_u)\,du

is a martingale **iff** :math:`\tilde J = J`. One direction is Itô's formula:
:math:`dM_s = e^{-\beta s}[(\partial_t + \mathcal L - \beta)\tilde J + r]ds
+ e^{-\beta s}\nabla\tilde J^\top\Sigma\,dW_s`, and the drift vanishes
exactly when :math:`\tilde J` solves the Feynman–Kac equation; the other is
:math:`\tilde J(t,x) = e^{\beta t}\mathbb{E}[M_T - \int_0^t\cdots|X_t=x] = J(t,x)`.

2. Martingale loss (ML) [paper]
-------------------------------
.. math::

    \mathrm{ML}(\theta) = \tfrac12\mathbb{E}\int_0^T |M_T - M^\theta_t|^2 dt
    = \tfrac12\mathbb{E}\int_0^T\Big(e^{-\beta T}h(X_T) + \int_t^T e^{-\beta s}r\,ds
      - e^{-\beta t}J^\theta(t,X_t)\Big)^2 dt.

Because :math:`\mathbb{E}[M_T|\mathcal F_t] = e^{-\beta t}J(t,X_t) + \int_0^t\cdots`,
ML equals :math:`\tfrac12\mathbb{E}\int_0^T e^{-2\beta t}(J-J^\theta)^2dt`
plus a constant: its minimiser is the best :math:`e^{-2\beta t}dt`-weighted
mean-square approximation of :math:`J` along the state distribution. It needs
whole trajectories (offline): the continuous-time gradient Monte Carlo.

3. Martingale orthogonality (MO) [paper] and how the TD family arises
---------------------------------------------------------------------
:math:`M^\theta` is a martingale iff :math:`\mathbb{E}\int_0^T\xi_t\,dM^\theta_t = 0`
for every square-integrable adapted test process :math:`\xi`. Choosing
finitely many test functions and a way to solve the resulting equations gives:

- **TD(0)**: :math:`\xi_t = \partial_\theta J^\theta(t,X_t)`, solved by
  stochastic approximation :math:`\theta\leftarrow\theta+\alpha\,\xi_{t_i}\Delta M_i`
  (online) or by iterating the batch update (offline).
- **TD(λ)**: :math:`\xi_t = \int_0^t \lambda^{t-s} e^{-\beta s}\partial_\theta J^\theta(s,X_s)\,ds`,
  an exponentially fading eligibility trace, :math:`\lambda\in[0,1]` per unit
  time. The notes write the kernel as :math:`\lambda^{s-t}` and mark the
  paper's parametrisation as **unconfirmed**; the convention here is chosen so
  that the endpoints are exactly the two named methods:

  * :math:`\lambda\to0`: the normalised trace :math:`\xi_t/|\ln\lambda|`
    tends to :math:`e^{-\beta t}\partial_\theta J^\theta_t` (TD(0));
  * :math:`\lambda=1`: the test function is
    :math:`\xi_t=\int_0^t e^{-\beta s}\partial_\theta J^\theta_s ds` and the MO
    equations *are* the first-order conditions of ML. **Derived here**: by
    Fubini, :math:`\mathbb{E}\int_0^T e^{-\beta t}\partial_\theta J^\theta_t
    (M_T-M_t)dt = \mathbb{E}\int_0^T\big(\int_0^s e^{-\beta t}\partial_\theta
    J^\theta_t dt\big)dM_s`. With the per-step discount used in
    :mod:`polab.estimators.policy_evaluation` the same identity holds *exactly* in
    discrete time (the increments telescope), and
    :mod:`polab.proofs_checks.martingale_pe_checks` checks it in float64.

- **LSTD**: for linear :math:`J^\theta = \theta^\top\phi` the MO equations are
  linear, :math:`\mathbb{E}\sum_i\xi_i(a_i - d_i^\top\theta) = 0`, and are
  solved in closed form.
- **GTD**: with more test functions than parameters (or to get a stable
  stochastic solver), minimise :math:`G(\theta)=g(\theta)^\top A\,g(\theta)`,
  :math:`g(\theta)=\mathbb{E}\int\xi\,dM^\theta`, with :math:`A=I` or
  :math:`A=(\mathbb{E}\int\xi\xi^\top dt)^{-1}` (the GTD2/TDC-type weighting),
  by two-timescale stochastic approximation.

4. Why the mean-square TD error is the wrong objective [claim: paper; limit: derived here]
-------------------------------------------------------------------------------------------
With :math:`\Delta M_i` the martingale increments on a mesh, Itô's formula gives
:math:`\mathbb{E}\sum_i|\Delta M_i|^2 \to \mathbb{E}\int_0^T e^{-2\beta t}
|\Sigma^\top\nabla_x J^\theta|^2dt`, the expected quadratic variation of
:math:`M^\theta`, which does not involve the reward at all. The minimiser of
the mean-square TD error :math:`\sum_i|\Delta M_i|^2/\Delta t_i` therefore
tends to a minimiser of the quadratic variation (it favours flat
:math:`J^\theta`), and its bias does not vanish as the mesh shrinks. For the
Brownian family :math:`J^\theta = x^2 + \theta_1(T-t)x^2 + \theta_2(T-t)`
(truth :math:`\theta=(0,\sigma^2)`), which imposes :math:`J^\theta(T,\cdot)=h`, the quadratic variation is
:math:`4\sigma^2\int_0^T m(t)(1+\theta_1(T-t))^2dt` with
:math:`m(t)=\mathbb{E}X_0^2+\sigma^2 t`, minimised at
:func:`mstde_brownian_limit` (e.g. :math:`\theta_1=-2` for :math:`X_0=0`,
:math:`\sigma=T=1`), not at 0. :math:`\theta_2` does not enter the limit and
is fixed at the next order in :math:`\Delta t`.

**Finite horizon, terminal jump** [derived here; the paper's statement was
not readable]. The discretisation replaces :math:`V_N` by the terminal reward
:math:`h(X_N)` (:mod:`polab.estimators.policy_evaluation`), so when the
candidate does not satisfy :math:`J^\theta(T^-,\cdot) = h` the last increment
carries a jump :math:`e^{-\beta T}(h(X_T) - J^\theta(T^-,X_T))` that does not
shrink with the mesh, and the limit is

.. math:: \mathbb{E}\sum_i|\Delta M_i|^2 \to \mathbb{E}\int_0^T e^{-2\beta t}
          |\Sigma^\top\nabla_x J^\theta|^2dt
          + e^{-2\beta T}\,\mathbb{E}\big(h(X_T) - J^\theta(T^-,X_T)\big)^2 .

The MSTDE minimiser therefore trades flatness against the terminal
mismatch. Example (:func:`mstde_terminal_jump_limit`): Brownian motion,
:math:`h=x^2`, no running reward, the family :math:`J^\theta=\theta x^2`
(truth: not in the family) and :math:`X_0\sim N(0,m_0)`: the limit
objective is :math:`4\theta^2\sigma^2\int_0^Te^{-2\beta t}m(t)dt
+ e^{-2\beta T}(1-\theta)^2\,3m(T)^2`, minimised at
:math:`\theta^\infty = e^{-2\beta T}3m(T)^2/(4\sigma^2\int_0^Te^{-2\beta t}m\,dt + e^{-2\beta T}3m(T)^2)`
(2/3 for :math:`m_0=\sigma=T=1`, :math:`\beta=0`); without the jump term it
would be 0. :func:`mstde_terminal_jump_euler` gives the exact minimiser of
the expected discrete objective on a uniform mesh (:math:`\beta=0`), which
tends to it at rate :math:`O(\Delta t)`.

5. Discretisation rate
----------------------
Taken from the paper (abstract): convergent discretised algorithms converge
to their continuous-time counterparts as :math:`\Delta t\to0` "with a
convergence rate". The paper's exponent is **unconfirmed** (the notes recall
it as plausibly :math:`O(\Delta t^{1/2})` in parameter error) and is not used
as a test threshold.

Derived here, for the discretisation in :mod:`polab.estimators.policy_evaluation`
(uniform mesh, left-point rewards, per-step discount
:math:`e^{-\beta\Delta t}`, Euler–Maruyama paths): as the number of paths
grows, every consistent MO/ML estimator converges to the value of the Euler
chain whenever that value lies in the feature span (the MO conditions hold
exactly for it, for every test function). The Euler-chain values are closed
forms (:mod:`polab.theory.diffusion_values`) and differ from :math:`J` by
:math:`c_1\Delta t + O(\Delta t^2)`; hence the parameter error is
**first order**, :data:`DERIVED_MESH_ORDER` = 1, with e.g. for OU
:math:`\theta_1(\Delta t) - \tfrac1{\beta+2\kappa} = \tfrac{\beta^2/2+2\beta\kappa+\kappa^2}{(\beta+2\kappa)^2}\Delta t + O(\Delta t^2)`
(:func:`ou_euler_bias_coefficients`). For Brownian motion with terminal
payoff :math:`x^2` the bias is exactly zero at every mesh. Monte Carlo error
adds :math:`O(n^{-1/2})` in the number of paths :math:`n`
(:data:`PATHS_ORDER`).

References
----------
Y. Jia and X. Y. Zhou, "Policy Evaluation and Temporal-Difference Learning in
Continuous Time and Space: A Martingale Approach", JMLR 23(154), 2022
(arXiv 2108.06655).
Y. Jia and X. Y. Zhou, "Policy Gradient and Actor-Critic Learning in
Continuous Time and Space", JMLR 23(275), 2022, section 3.1 (restatement).
R. S. Sutton et al., "Fast gradient-descent methods for temporal-difference
learning with linear function approximation", ICML 2009 (GTD2/TDC).
"""

from __future__ import annotations

import math

__all__ = [
    "DERIVED_MESH_ORDER",
    "PAPER_MESH_ORDER_CONFIRMED",
    "PATHS_ORDER",
    "mstde_brownian_limit",
    "brownian_quadratic_variation",
    "ou_euler_bias_coefficients",
    "mstde_terminal_jump_limit",
    "mstde_terminal_jump_euler",
]

#: Order in the mesh of the parameter error of the discretised estimators (derived here; module docstring, item 5).
DERIVED_MESH_ORDER = 1.0
#: The paper's own exponent could not be read (notes: RECALL, UNCONFIRMED).
PAPER_MESH_ORDER_CONFIRMED = False
#: Order in the number of paths of the Monte Carlo error (central limit theorem).
PATHS_ORDER = -0.5


def _check(sigma, horizon, x0_second_moment):
    if not (sigma > 0 and horizon > 0 and x0_second_moment >= 0):
        raise ValueError(
            f"need sigma > 0, horizon > 0, x0_second_moment >= 0; got {sigma}, {horizon}, {x0_second_moment}."
        )


def brownian_quadratic_variation(theta1: float, *, sigma: float, horizon: float, x0_second_moment: float) -> float:
    r"""Expected quadratic variation of :math:`M^\theta` for the Brownian family (item 4).

    .. math::

        4\sigma^2\int_0^T (m_0+\sigma^2 t)(1+\theta_1(T-t))^2 dt
        = 4\sigma^2\Big[\alpha\big(T+\theta_1T^2+\tfrac{\theta_1^2T^3}3\big)
          - \sigma^2\big(\tfrac{T^2}2+\tfrac{2\theta_1T^3}3+\tfrac{\theta_1^2T^4}4\big)\Big],

    with :math:`\alpha = m_0+\sigma^2T` (substitute :math:`\tau=T-t`).
    """
    _check(sigma, horizon, x0_second_moment)
    T, s2 = horizon, sigma**2
    alpha = x0_second_moment + s2 * T
    th = theta1
    return 4 * s2 * (alpha * (T + th * T**2 + th**2 * T**3 / 3) - s2 * (T**2 / 2 + 2 * th * T**3 / 3 + th**2 * T**4 / 4))


def mstde_brownian_limit(*, sigma: float, horizon: float, x0_second_moment: float) -> float:
    r"""Limit as :math:`\Delta t\to0` of the MSTDE minimiser's :math:`\theta_1` for the Brownian family.

    Setting the :math:`\theta_1`-derivative of
    :func:`brownian_quadratic_variation` to zero:

    .. math:: \theta_1^\infty = \frac{2\sigma^2T^3/3 - \alpha T^2}{2\alpha T^3/3 - \sigma^2T^4/2},
              \qquad \alpha = \mathbb{E}X_0^2 + \sigma^2 T.

    The truth is :math:`\theta_1 = 0`; the limit is negative for every
    :math:`\mathbb{E}X_0^2\ge0` (e.g. -2 at :math:`X_0=0`, :math:`\sigma=T=1`).
    """
    _check(sigma, horizon, x0_second_moment)
    T, s2 = horizon, sigma**2
    alpha = x0_second_moment + s2 * T
    return (2 * s2 * T**3 / 3 - alpha * T**2) / (2 * alpha * T**3 / 3 - s2 * T**4 / 2)


def ou_euler_bias_coefficients(*, kappa: float, sigma: float, beta: float) -> tuple[float, float]:
    r"""First-order coefficients :math:`(c_1, c_2)` with :math:`\theta_j(\Delta t) = \theta_j^* + c_j\Delta t + O(\Delta t^2)` for OU.

    :math:`\theta(\Delta t)` is the Euler-chain value
    (:func:`polab.theory.diffusion_values.ou_euler_value`), :math:`\theta^*` the
    continuous one. With :math:`a = 1/(\beta+2\kappa)` and
    :math:`q = \beta^2/2+2\beta\kappa+\kappa^2`: :math:`c_1 = a^2 q`;
    from :math:`\theta_2 = \theta_1\sigma^2\Delta t\,e^{-\beta\Delta t}/(1-e^{-\beta\Delta t})
    = \theta_1\sigma^2(1/\beta - \Delta t/2 + O(\Delta t^2))`,
    :math:`c_2 = \sigma^2(c_1/\beta - a/2)`. Derived here; sympy series in
    :mod:`polab.proofs_checks.martingale_pe_checks`.
    """
    if not (sigma > 0 and beta > 0 and beta + 2 * kappa > 0):
        raise ValueError(f"need sigma > 0, beta > 0, beta + 2 kappa > 0; got {sigma}, {beta}, {kappa}.")
    a = 1.0 / (beta + 2 * kappa)
    q = beta**2 / 2 + 2 * beta * kappa + kappa**2
    c1 = a**2 * q
    c2 = sigma**2 * (c1 / beta - a / 2)
    return c1, c2


def mstde_terminal_jump_limit(*, sigma: float, horizon: float, x0_second_moment: float, beta: float = 0.0) -> float:
    r"""Limit of the MSTDE minimiser for :math:`J^\theta=\theta x^2`, :math:`h=x^2`, Brownian motion (item 4, terminal jump).

    .. math::

        \theta^\infty = \frac{e^{-2\beta T}\,3m(T)^2}{4\sigma^2 I + e^{-2\beta T}\,3m(T)^2},\qquad
        I = \int_0^T e^{-2\beta t}(m_0+\sigma^2t)\,dt,\quad m(t) = m_0+\sigma^2t,

    from the limit objective :math:`4\theta^2\sigma^2 I + e^{-2\beta T}(1-\theta)^2\,\mathbb{E}X_T^4`
    with :math:`X_T\sim N(0,m(T))`, :math:`\mathbb{E}X_T^4 = 3m(T)^2` (Gaussian
    :math:`X_0\sim N(0,m_0)`). The first term is the quadratic variation of
    :math:`M^\theta` (:math:`\nabla_xJ^\theta = 2\theta x`), the second the
    terminal-jump penalty :math:`e^{-2\beta T}\mathbb{E}(h-J^\theta(T^-))^2`.
    Derived here.
    """
    _check(sigma, horizon, x0_second_moment)
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0; got {beta}.")
    T, s2, m0 = horizon, sigma**2, x0_second_moment
    if beta == 0:
        integral = m0 * T + s2 * T**2 / 2
    else:
        k = 2 * beta
        x = k * T
        # 1 - e^{-x}(1 + x) = sum_{j>=2} (-1)^j (j-1) x^j / j! cancels for small x: series below x = 0.01
        # (truncation < x^7/840, relative 2e-13 there; the direct form loses ~1e-16/g ~ 2e-12 at x = 0.01)
        g = x**2 / 2 - x**3 / 3 + x**4 / 8 - x**5 / 30 + x**6 / 144 if x < 1e-2 else 1 - math.exp(-x) * (1 + x)
        integral = m0 * (-math.expm1(-x)) / k + s2 * g / k**2
    jump = math.exp(-2 * beta * T) * 3 * (m0 + s2 * T) ** 2
    return jump / (4 * s2 * integral + jump)


def mstde_terminal_jump_euler(*, sigma: float, horizon: float, x0_second_moment: float, num_steps: int) -> float:
    r"""Exact minimiser of the expected discrete MSTDE for the example of :func:`mstde_terminal_jump_limit` (:math:`\beta=0`).

    Uniform mesh :math:`\Delta t=T/N`, :math:`v_i = m_0+\sigma^2 i\Delta t`,
    :math:`\Delta M_i = \theta(X_{i+1}^2-X_i^2)` for :math:`i<N-1` and
    :math:`\Delta M_{N-1} = X_N^2 - \theta X_{N-1}^2` (terminal reward in place
    of :math:`V_N`). With :math:`\mathbb{E}(X_{i+1}^2-X_i^2)^2 = 4v_i\sigma^2\Delta t + 3\sigma^4\Delta t^2`
    and :math:`\mathbb{E}X_N^2X_{N-1}^2 = 3v_{N-1}^2 + \sigma^2\Delta t\,v_{N-1}`:

    .. math:: \theta^*(\Delta t) = \frac{3v_{N-1}^2 + \sigma^2\Delta t\,v_{N-1}}
              {\sum_{i<N-1}(4v_i\sigma^2\Delta t + 3\sigma^4\Delta t^2) + 3v_{N-1}^2}.

    Derived here (Gaussian moments); Brownian increments are simulated
    exactly by Euler–Maruyama, so this is the exact large-sample limit of
    :func:`polab.estimators.policy_evaluation.mstde_linear` on that mesh.
    """
    _check(sigma, horizon, x0_second_moment)
    n = int(num_steps)
    if n < 2:
        raise ValueError(f"num_steps must be >= 2; got {num_steps}.")
    dt, s2, m0 = horizon / n, sigma**2, x0_second_moment
    v = [m0 + s2 * i * dt for i in range(n)]
    a = sum(4 * v[i] * s2 * dt + 3 * s2**2 * dt**2 for i in range(n - 1))
    return (3 * v[-1] ** 2 + s2 * dt * v[-1]) / (a + 3 * v[-1] ** 2)
