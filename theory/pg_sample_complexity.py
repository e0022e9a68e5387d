r"""Step-size and momentum schedules and sample complexities of N-PG-IGT, (N)-HARPG and PG baselines.

Result (Fatkhullin, Barakat, Kireeva, He, ICML 2023, abstract): for a
discounted MDP and a policy class with bounded score derivatives and a
*Fisher-non-degenerate* Fisher information, a normalised policy gradient
method with implicit gradient transport (N-PG-IGT) reaches
:math:`J^* - \mathbb{E}J(\theta_T) \le \varepsilon + O(\sqrt{\varepsilon_{bias}}/(1-\gamma))`
with :math:`\tilde O(\varepsilon^{-2.5})` trajectories, and a Hessian-aided
recursive policy gradient ((N)-HARPG) with :math:`\tilde O(\varepsilon^{-2})`
trajectories (at most two per iteration), both with no importance sampling.

Assumptions (``shared/notes/theory_core.md`` section 4.2; exact constants are
*recalled, unconfirmed*):

(i) :math:`\|\nabla\log\pi_\theta\|\le M_g`, :math:`\|\nabla^2\log\pi_\theta\|\le M_h`;
(ii) Fisher non-degeneracy :math:`F(\theta) = \mathbb{E}_{d^{\pi_\theta}}[\nabla\log\pi\,\nabla\log\pi^\top] \succeq \mu_F I`
     (see :mod:`polab.theory.fisher_nondegeneracy` for Gaussian linear and softmax policies);
(iii) compatible function approximation error at most :math:`\varepsilon_{bias}`.

They give the relaxed weak gradient domination inequality
:math:`\varepsilon' + \|\nabla J(\theta)\| \ge \sqrt{2\mu}\,(J^*-J(\theta))`,
:math:`\sqrt{2\mu} = \mu_F/M_g`, :math:`\varepsilon' = \mu_F\sqrt{\varepsilon_{bias}}/(M_g(1-\gamma))`
(:func:`gradient_domination_gap_bound`).

Schedules (iteration counter :math:`t = 0, 1, \dots`; confirmed in the authors'
code, ``aabkn/Stochastic-Policy-Gradient-Methods`` @ c4e9b7a,
``torch/optimizers/{NIGT,STORMHess,SGDM}_optimizer.py``):

==============  ==============================  ================================  ==========
method          step size :math:`\gamma_t`      momentum :math:`\eta_t`           normalised
==============  ==============================  ================================  ==========
vanilla_pg      :math:`\gamma_0 (2/(t+2))^{2/3}`  none (:math:`d_t = g_t`)          no
normalized_pg   :math:`\gamma_0 (2/(t+2))^{2/3}`  none                              yes
momentum_pg     :math:`\gamma_0\, 2/(t+2)`        :math:`\eta_0 (2/(t+2))^{2/3}`    yes
npg_igt         :math:`\gamma_0\, 2/(t+2)`        :math:`\eta_0 (2/(t+2))^{4/5}`    yes
n_harpg         :math:`\gamma_0\, 2/(t+2)`        :math:`\eta_0\, 2/(t+2)`          yes
harpg           :math:`\gamma_0 (2/(t+2))^{1/2}`  :math:`\eta_0\, 2/(t+2)`          no
==============  ==============================  ================================  ==========

Departure: the authors' ``SGDMOptimizer`` (``momentum_pg``, their "NSGDM")
defaults to :math:`\eta_0 = 2`, which gives :math:`\eta_1 = 2(2/3)^{2/3}
\approx 1.53 > 1` (a negative weight on the old momentum). Here
:math:`\eta_0 = 1` is the default and :math:`\eta_t` is clipped to
:math:`[0, 1]` for every method.

Sample-complexity exponents
---------------------------
``global_exponent``: trajectories to :math:`J^*-J\le\varepsilon` up to log
factors and the bias term: 2.5 (N-PG-IGT) and 2 ((N)-HARPG) from the abstract
[TEXT]; 3 for vanilla PG under Fisher non-degeneracy (Liu et al. 2020; Ding
et al. 2022) [RECALL, UNCONFIRMED].

``stationarity_exponent``: trajectories to :math:`\mathbb{E}\|\nabla J\|\le\varepsilon`
for general smooth :math:`J`: 3.5 (N-PG-IGT), 3 ((N)-HARPG), 4 (vanilla and
normalised momentum PG) [RECALL, UNCONFIRMED: read from memory of the
paper's Table 1, not checked against the PDF].

``local_exponent`` [DERIVED here, heuristic; checked numerically in
:mod:`polab.proofs_checks.pg_optimizer_checks`]: near a non-degenerate maximiser
:math:`J` is locally quadratic, :math:`\nabla J(\theta)\approx -H(\theta-\theta^*)`,
and the iterates settle where :math:`\|\nabla J(\theta_t)\|` matches the error
:math:`e_t = d_t - \nabla J(\theta_t)` of the direction:

- N-PG-IGT: on a quadratic the transport is exact (``theory_core.md`` 4.3),
  so :math:`e_t = (1-\eta_t)e_{t-1} + \eta_t\xi_t` and
  :math:`\mathbb{E}\|e_t\|^2 \approx \eta_t\sigma^2/2 \propto t^{-4/5}`.
  A normalised step moves :math:`\theta` along :math:`d_t/\|d_t\|`, i.e. toward
  the point where :math:`\nabla J(\theta) = -e_t`; :math:`e_t` drifts by
  :math:`\|e_t\|` in :math:`1/\eta_t = t^{4/5}` steps, slower than the step
  :math:`\gamma_t \propto t^{-1}` can follow, so
  :math:`\|\nabla J(\theta_t)\| \asymp t^{-2/5}`: :math:`\varepsilon^{-2.5}`.
- (N)-HARPG: :math:`V_t = \mathbb{E}\|e_t\|^2` obeys
  :math:`V_t \approx (1-\eta_t)^2 (V_{t-1} + \sigma_B^2\|\theta_t-\theta_{t-1}\|^2) + \eta_t^2\sigma_g^2`;
  with :math:`\eta_t = 2/(t+2)` and :math:`\|\theta_t-\theta_{t-1}\| = \gamma_{t-1}\propto t^{-1}`,
  :math:`V_t \approx \tfrac43(\gamma_0^2\sigma_B^2 + \sigma_g^2)/t` (solve
  :math:`V' = -4V/t + 4(\gamma_0^2\sigma_B^2+\sigma_g^2)/t^2`), so
  :math:`\|\nabla J(\theta_t)\|\asymp t^{-1/2}` and two trajectories per
  iteration: :math:`\varepsilon^{-2}`.
- vanilla PG: :math:`x_{t+1} = (I-\gamma_t H)x_t + \gamma_t\xi_t` has
  :math:`\mathbb{E}\|x_t\|^2 \propto \gamma_t` when :math:`\gamma_t` decays
  slower than :math:`1/t`, so :math:`\|\nabla J\| \propto t^{-1/3}`: :math:`\varepsilon^{-3}`.
- momentum PG (normalised, :math:`\eta_t\propto t^{-2/3}`): as N-PG-IGT
  without transport: :math:`\|e_t\|\propto t^{-1/3}`, :math:`\varepsilon^{-3}`
  (the transport error is second order on a quadratic only for IGT; for plain
  momentum the lag :math:`\gamma_t/\eta_t` adds a bias of the same order).
- normalised PG without momentum: no exponent is claimed (``None``).

Measured on the entropy-regularised bandit of :mod:`polab.proofs_checks.pg_optimizer_checks`
(256 seeds, 40000 trajectories; see ``ASSERTED_EXPONENTS`` there): (N)-HARPG
2.0-2.1 as derived; N-PG-IGT 2.8, above the derived 2.5 and close to plain
momentum (2.7): the transport argument above is heuristic and its
prediction for N-PG-IGT is not borne out at these budgets; vanilla PG 2.6,
still short of its asymptotic 3 (3.0 over 1e4-6e4 trajectories in a longer run).

These local exponents equal the paper's global ones (2.5, 2, 3) because, under
weak gradient domination, :math:`J^* - J = O(\|\nabla J\|)`. They are *not*
the paper's theorem: they are what the proofs_checks measure, on the gradient
norm, on problems whose maximiser is non-degenerate.

References
----------
Fatkhullin, Barakat, Kireeva, He, "Stochastic Policy Gradient Methods:
Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023,
PMLR 202:9827-9869 (arXiv 2302.01734).
Cutkosky, Mehta, "Momentum Improves Normalized SGD", ICML 2020.
Liu, Zhang, Basar, Yin, "An Improved Analysis of (Variance-Reduced) Policy
Gradient and Natural Policy Gradient Methods", NeurIPS 2020.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "METHODS",
    "MethodInfo",
    "METHOD_INFO",
    "PGSchedule",
    "pg_schedule",
    "DEFAULT_STEP_SIZE0",
    "gradient_domination_gap_bound",
    "predicted_samples",
]

#: Every method name understood by :func:`pg_schedule` and :mod:`polab.estimators.pg_optimizers`.
METHODS: tuple[str, ...] = ("vanilla_pg", "normalized_pg", "momentum_pg", "npg_igt", "harpg", "n_harpg")

#: Step size scale gamma_0 of the README example of the authors' code (theory_core.md 4.5).
DEFAULT_STEP_SIZE0 = 0.1


@dataclass(frozen=True)
class MethodInfo:
    """Static facts about one method.

    Attributes
    ----------
    name : str
    normalized : bool
        Steps :math:`\\gamma_t d_t/\\|d_t\\|` instead of :math:`\\gamma_t d_t`.
    direction : {"gradient", "ema", "igt", "recursive"}
        How :math:`d_t` is formed (see :mod:`polab.estimators.pg_optimizers`).
    trajectory_batches_per_iteration : int
        1, or 2 for (N)-HARPG (gradient batch at :math:`\\theta_t` and Hessian
        batch at the interpolation point) from the second iteration on.
    global_exponent, stationarity_exponent, local_exponent : float or None
        See the module docstring (sources differ: TEXT / RECALL / DERIVED).
    """

    name: str
    normalized: bool
    direction: str
    trajectory_batches_per_iteration: int
    global_exponent: float | None
    stationarity_exponent: float | None
    local_exponent: float | None


METHOD_INFO: dict[str, MethodInfo] = {
    "vanilla_pg": MethodInfo("vanilla_pg", False, "gradient", 1, 3.0, 4.0, 3.0),
    "normalized_pg": MethodInfo("normalized_pg", True, "gradient", 1, None, None, None),
    "momentum_pg": MethodInfo("momentum_pg", True, "ema", 1, None, 4.0, 3.0),
    "npg_igt": MethodInfo("npg_igt", True, "igt", 1, 2.5, 3.5, 2.5),
    "harpg": MethodInfo("harpg", False, "recursive", 2, 2.0, 3.0, 2.0),
    "n_harpg": MethodInfo("n_harpg", True, "recursive", 2, 2.0, 3.0, 2.0),
}


@dataclass(frozen=True)
class PGSchedule:
    """Step size and momentum weight of one iteration.

    Attributes
    ----------
    step : int
        The iteration counter :math:`t` (0 on the first update).
    step_size : float
        :math:`\\gamma_t`.
    gradient_weight : float
        :math:`\\eta_t\\in[0,1]`, the weight of the **new** gradient in
        :math:`d_t = (1-\\eta_t)d_{t-1} + \\eta_t g_t`; 1 for methods without
        momentum (:math:`d_t = g_t`). This is the opposite of torch's
        ``momentum`` (the weight of the old direction, :math:`1-\\eta_t`); the
        field was called ``momentum`` before and that name remains as a
        deprecated read-only alias.
    """

    step: int
    step_size: float
    gradient_weight: float

    @property
    def momentum(self) -> float:
        """Deprecated alias of :attr:`gradient_weight` (the weight of the new gradient, not torch's momentum)."""
        import warnings

        warnings.warn("PGSchedule.momentum is deprecated: it is the weight of the NEW gradient (eta_t); "
                      "use PGSchedule.gradient_weight.", DeprecationWarning, stacklevel=2)
        return self.gradient_weight


def _check_method(method: str) -> None:
    if method not in METHOD_INFO:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}.")


def pg_schedule(method: str, step: int, *, step_size0: float = DEFAULT_STEP_SIZE0, momentum0: float = 1.0) -> PGSchedule:
    r"""The step size :math:`\gamma_t` and momentum :math:`\eta_t` of ``method`` at iteration ``step``.

    See the table in the module docstring; :math:`\eta_t` is clipped to [0, 1].

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    step : int, >= 0
    step_size0 : float, > 0
        :math:`\gamma_0`.
    momentum0 : float, in (0, 1]
        :math:`\eta_0`. Ignored by ``vanilla_pg`` and ``normalized_pg``.

    Returns
    -------
    PGSchedule
    """
    _check_method(method)
    t = int(step)
    if t < 0:
        raise ValueError(f"step must be >= 0; got {step}.")
    if not step_size0 > 0:
        raise ValueError(f"step_size0 must be > 0; got {step_size0}.")
    if not 0 < momentum0 <= 1:
        raise ValueError(f"momentum0 must be in (0, 1]; got {momentum0} (eta_t is a convex weight).")
    r = 2.0 / (t + 2.0)
    if method in ("vanilla_pg", "normalized_pg"):
        return PGSchedule(t, step_size0 * r ** (2.0 / 3.0), 1.0)
    if method == "momentum_pg":
        eta = momentum0 * r ** (2.0 / 3.0)
        gamma = step_size0 * r
    elif method == "npg_igt":
        eta = momentum0 * r ** 0.8
        gamma = step_size0 * r
    elif method == "n_harpg":
        eta = momentum0 * r
        gamma = step_size0 * r
    else:  # harpg
        eta = momentum0 * r
        gamma = step_size0 * math.sqrt(r)
    return PGSchedule(t, gamma, min(1.0, max(0.0, eta)))


def gradient_domination_gap_bound(
    gradient_norm: float, *, fisher_min_eigenvalue: float, score_bound: float, bias: float = 0.0, gamma: float = 0.0
) -> float:
    r"""Relaxed weak gradient domination: an upper bound on :math:`J^* - J(\theta)`.

    .. math:: J^* - J(\theta) \le \frac{M_g}{\mu_F}\Big(\|\nabla J(\theta)\| + \frac{\mu_F\sqrt{\varepsilon_{bias}}}{M_g(1-\gamma)}\Big)

    Parameters
    ----------
    gradient_norm : float, >= 0
    fisher_min_eigenvalue : float, > 0
        :math:`\mu_F`.
    score_bound : float, > 0
        :math:`M_g`.
    bias : float, >= 0
        :math:`\varepsilon_{bias}`.
    gamma : float, in [0, 1)
        Discount factor.

    Notes
    -----
    The form is the one in ``theory_core.md`` 4.2; its constants are recalled
    and unconfirmed against the paper.
    """
    if not fisher_min_eigenvalue > 0 or not score_bound > 0:
        raise ValueError("fisher_min_eigenvalue and score_bound must be > 0 (Fisher non-degeneracy).")
    if not 0 <= gamma < 1:
        raise ValueError(f"gamma must be in [0, 1); got {gamma}.")
    eps_prime = fisher_min_eigenvalue * math.sqrt(max(bias, 0.0)) / (score_bound * (1.0 - gamma))
    return (score_bound / fisher_min_eigenvalue) * (gradient_norm + eps_prime)


def predicted_samples(epsilon, *, exponent: float, constant: float = 1.0):
    r""":math:`N(\varepsilon) = c\,\varepsilon^{-\text{exponent}}` (log factors dropped); works on arrays."""
    return constant * (epsilon ** (-exponent))
