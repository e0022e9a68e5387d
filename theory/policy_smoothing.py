r"""Policy smoothing: the adaptive Neyman–Pearson bound and the certificates built on it.

Setting (Kumar, Levine, Feizi, ICLR 2022). At each step :math:`t` of an
episode the agent sees :math:`y_t = o_t + \epsilon_t + z_t`, where
:math:`z_t\sim\mathcal N(0,\sigma^2 I_d)` is fresh smoothing noise and
:math:`\epsilon_t` is the adversary's perturbation. The adversary is
*adaptive*: :math:`\epsilon_t` may depend on everything that happened before
step :math:`t` (states, past observations and noise, past actions, its own
coins), but not on the current noise :math:`z_t`; its budget covers the whole
episode, :math:`\|(\epsilon_1,\dots,\epsilon_T)\|_2 \le B` almost surely.

Adaptive Neyman–Pearson bound (the paper's adaptive NP lemma)
-------------------------------------------------------------
For every event :math:`A` of the episode (more generally every
:math:`[0,1]`-valued function :math:`h` of it) with clean probability
:math:`p = P_{clean}[A]` (smoothing noise, no adversary),

.. math::

    P_{adv}[A] \;\ge\; f_B(p) := \Phi\big(\Phi^{-1}(p) - B/\sigma\big). \qquad (1)

**Status.** The project notes (``shared/notes/theory_core.md`` §3.3) mark the
formal wording as *recalled, unconfirmed*. Statement (1), with the
assumptions listed above, is **derived here**; the proof is short and is the
reason the functions of this module may be trusted:

*Proof (derived here).* Condition on the environment's and the adversary's
own randomness (both can be drawn in advance, independently of the noise),
so that everything is a function of :math:`z = (z_1,\dots,z_T)`. Induction on
:math:`T`. For :math:`T = 1` the perturbation :math:`\epsilon_1` is a fixed
vector and (1) is the classical Neyman–Pearson / Cohen et al. bound for a
Gaussian shift of norm at most :math:`B`. For :math:`T>1`, :math:`\epsilon_1`
is fixed, with :math:`\|\epsilon_1\|\le B`; put
:math:`r = (B^2-\|\epsilon_1\|^2)^{1/2}`. Given :math:`y_1`, the rest of the
episode is an adaptive attack of budget :math:`r` on :math:`T-1` steps, so
by induction :math:`P_{adv}[A\mid y_1] \ge f_r(q(y_1))` with
:math:`q(y_1) = P_{clean}[A\mid y_1]`. Now take an auxiliary
:math:`w\sim\mathcal N(0,\sigma^2)` and the set
:math:`S=\{(y,w): w \le \sigma\Phi^{-1}(q(y))\}\subset\mathbb R^{d+1}`.
Its Gaussian measure is :math:`\mathbb E\,q(z_1)=p`, and its measure after
the shift :math:`(\epsilon_1, r)`, of norm :math:`\le B`, is
:math:`\mathbb E\,f_r(q(z_1+\epsilon_1))`. The static bound in
:math:`d+1` dimensions gives
:math:`P_{adv}[A] \ge \mathbb E f_r(q(z_1+\epsilon_1)) \ge f_B(p)`.
Finally, undo the conditioning: :math:`f_B` is convex in :math:`p`
(:math:`f_B'(p) = \exp(B\Phi^{-1}(p)/\sigma - B^2/2\sigma^2)` increases), so
Jensen's inequality carries (1) from the conditional to the unconditional
probabilities. :math:`\square`

So adaptivity buys the adversary nothing over a *static* shift of norm
:math:`B` of the :math:`(T d)`-dimensional noise vector. (The same statement
is the "fully adaptive composition" of Gaussian differential privacy; the
argument above is self-contained.) The bound is tight: for the half-space
:math:`A = \{\langle u, z\rangle \le \sigma\Phi^{-1}(p)\}`, :math:`\|u\|=1`,
the static shift :math:`B u` gives exactly :math:`f_B(p)`
(:func:`half_space_probability`).

What (1) does **not** say: an attack that is best among *static* ones for a
particular policy need not be best among adaptive ones, so a robustness
analysis restricted to non-adaptive adversaries of the policy at hand is not a
certificate (:mod:`polab.proofs_checks.smoothing_checks` builds an example where an
adaptive adversary drives a probability below the best static attack, down
to :math:`f_B(p)`). The notes record that the paper makes this point; its
exact example is unconfirmed.

Reward certificates (derived here from (1))
-------------------------------------------
Let the total reward satisfy :math:`R \ge a` (the declared lower end of its
range) and take thresholds :math:`a = t_0 < t_1 < \dots < t_m`. With lower
bounds :math:`\underline p_k \le P_{clean}[R\ge t_k]`:

* tail certificate: :math:`P_{adv}[R \ge t_k] \ge f_B(\underline p_k)`
  (monotonicity of :math:`f_B` and (1));
* expected reward (layer cake, :math:`\mathbb E R = a + \int_a^\infty
  P[R\ge v]\,dv`, and :math:`P[R\ge v]\ge P[R\ge t_k]` for
  :math:`v\le t_k`):

  .. math::

      \mathbb E_{adv}[R] \;\ge\; a + \sum_{k=1}^{m}(t_k - t_{k-1})\,
          f_B(\underline p_k). \qquad (2)

  With the exact tails at the sorted distinct values of a discrete
  :math:`R`, (2) at :math:`B=0` is :math:`\mathbb E R` exactly;
* percentiles: with the lower quantile
  :math:`Q(\ell)=\inf\{v: P[R\le v]\ge \ell\}`,
  :math:`f_B(\underline p_k) > 1-\ell` implies :math:`P_{adv}[R<t_k]<\ell`,
  hence

  .. math:: Q_{adv}(\ell) \;\ge\; \max\{t_k : f_B(\underline p_k) > 1-\ell\}
      \quad(\text{or } a \text{ if there is none}). \qquad (3)

Equation numbers (1)–(3) are this module's; the paper's numbering is not
available to the project (notes §3.4 record (2) as it appears in third-party
code, ``mrh996/ReCePS``, ``Freeway/freeway_plot_certs.py``).

References
----------
Kumar, Levine, Feizi, "Policy Smoothing for Provably Robust Reinforcement
Learning", ICLR 2022 (arXiv 2106.11420).
Cohen, Rosenfeld, Kolter, "Certified Adversarial Robustness via Randomized
Smoothing", ICML 2019.
Neyman, Pearson, "On the Problem of the Most Efficient Tests of Statistical
Hypotheses", Phil. Trans. R. Soc. A, 1933.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = [
    "adaptive_np_bound",
    "half_space_probability",
    "total_budget",
    "certified_expected_reward",
    "certified_percentile",
]


# ---------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------
def _scalar_or_array(x: np.ndarray):
    return x[()] if x.ndim == 0 else x


def _sigma(sigma) -> float:
    s = float(sigma)
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"sigma must be a finite number > 0 (the smoothing noise scale); got {sigma}.")
    return s


def _budget(budget) -> np.ndarray:
    b = np.asarray(budget, dtype=np.float64)
    if not np.all(np.isfinite(b)) or np.any(b < 0):
        bad = b[~np.isfinite(b) | (b < 0)].ravel()[:5]
        raise ValueError(f"budget must be finite and >= 0 (a total l2 norm); got {bad.tolist()}.")
    return b


def _probability(p, *, name: str = "p") -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any((a < 0) | (a > 1)):
        bad = a[~np.isfinite(a) | (a < 0) | (a > 1)].ravel()[:5]
        raise ValueError(f"{name} must be probabilities in [0, 1]; got {bad.tolist()}.")
    return a


def _thresholds(thresholds, tail, reward_min: float):
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must have shape [m] with m >= 1; got shape {t.shape}.")
    if not np.all(np.isfinite(t)):
        raise ValueError("thresholds must be finite.")
    if np.any(np.diff(t) <= 0):
        raise ValueError("thresholds must be strictly increasing; sort them and drop duplicates (np.unique).")
    if not np.isfinite(reward_min) or t[0] <= reward_min:
        raise ValueError(
            f"thresholds must all exceed reward_min = {reward_min} (the declared lower end of the reward range); "
            f"got first threshold {t[0]}."
        )
    p = _probability(tail, name="tail_probabilities")
    if p.shape != t.shape:
        raise ValueError(f"tail_probabilities must have the shape of thresholds, {t.shape}; got {p.shape}.")
    return t, p


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
def adaptive_np_bound(p, *, budget, sigma):
    r"""Lower bound on an attacked probability, :math:`\Phi(\Phi^{-1}(p) - B/\sigma)`, eq. (1).

    Parameters
    ----------
    p : float or array
        Probability of the event without attack, in [0, 1] (or a lower bound
        on it: the bound is increasing in ``p``).
    budget : float or array
        Total :math:`\ell_2` budget :math:`B\ge 0` of the adaptive adversary
        over the episode. Broadcast against ``p``.
    sigma : float
        Smoothing noise scale :math:`\sigma>0`.

    Returns
    -------
    float64 scalar or ndarray of the broadcast shape. ``p = 0`` gives 0 and
    ``p = 1`` gives 1 for every finite budget.

    Notes
    -----
    Derived in the module docstring for adaptive adversaries (the notes mark
    the paper's wording unconfirmed; the derivation does not depend on it).
    """
    s = _sigma(sigma)
    b = _budget(budget)
    pp = _probability(p)
    try:
        pb, bb = np.broadcast_arrays(pp, b)
    except ValueError as exc:
        raise ValueError(f"p (shape {pp.shape}) and budget (shape {b.shape}) do not broadcast.") from exc
    return _scalar_or_array(np.asarray(ndtr(ndtri(pb) - bb / s), dtype=np.float64))


def half_space_probability(offset, direction, shift, *, sigma):
    r"""Exact probability of a half-space under a shifted Gaussian.

    .. math::

        P\big[\langle u, z + \delta\rangle \le c\big]
        = \Phi\Big(\frac{c - \langle u,\delta\rangle}{\sigma\|u\|}\Big),
        \qquad z\sim\mathcal N(0,\sigma^2 I_d).

    With :math:`\|u\|=1`, :math:`c=\sigma\Phi^{-1}(p)` and
    :math:`\delta = Bu` this is :math:`f_B(p)`: the linear worst case in
    which (1) holds with equality.

    Parameters
    ----------
    offset : float
        :math:`c`.
    direction : array, shape [d]
        :math:`u \ne 0`.
    shift : array, shape [d] or [n, d]
        :math:`\delta` (one per row).
    sigma : float

    Returns
    -------
    float64 scalar, or ndarray of shape [n].
    """
    s = _sigma(sigma)
    u = np.asarray(direction, dtype=np.float64)
    d = np.asarray(shift, dtype=np.float64)
    if u.ndim != 1 or not np.all(np.isfinite(u)) or np.linalg.norm(u) == 0:
        raise ValueError(f"direction must be a finite non-zero vector of shape [d]; got shape {u.shape}.")
    if d.shape[-1:] != u.shape or d.ndim > 2 or not np.all(np.isfinite(d)):
        raise ValueError(f"shift must be finite with shape [d] or [n, d], d = {u.size}; got shape {d.shape}.")
    c = float(offset)
    return _scalar_or_array(np.asarray(ndtr((c - d @ u) / (s * np.linalg.norm(u))), dtype=np.float64))


def total_budget(per_step, steps):
    r"""Total budget of a per-step budget :math:`\epsilon` over :math:`T` steps: :math:`\epsilon\sqrt{T}`.

    A per-step constraint :math:`\|\epsilon_t\|\le\epsilon` implies the total
    constraint with :math:`B = \epsilon\sqrt T`, so (1) applies with that
    :math:`B` (the per-time-step certificate of notes §3.4, whose presence in
    the paper is unconfirmed, is this bound at :math:`T = t+1`).

    Parameters
    ----------
    per_step : float or array, >= 0
    steps : int or array of int, >= 0

    Returns
    -------
    float64 scalar or ndarray of the broadcast shape.
    """
    e = _budget(per_step)
    t = np.asarray(steps)
    if not np.issubdtype(t.dtype, np.integer) or np.any(t < 0):
        raise ValueError(f"steps must be non-negative integers; got {steps}.")
    return _scalar_or_array(np.asarray(e * np.sqrt(t.astype(np.float64)), dtype=np.float64))


def certified_expected_reward(thresholds, tail_probabilities, *, budget, sigma, reward_min):
    r"""Certified lower bound on the attacked expected total reward, eq. (2).

    .. math::

        \mathbb E_{adv}[R] \ge a + \sum_{k=1}^m (t_k - t_{k-1})\,
            \Phi\big(\Phi^{-1}(\underline p_k) - B/\sigma\big),\qquad t_0 = a.

    Parameters
    ----------
    thresholds : array, shape [m]
        Strictly increasing, all :math:`> a`.
    tail_probabilities : array, shape [m]
        :math:`\underline p_k \le P_{clean}[R \ge t_k]` (exact tails give the
        population certificate; confidence bounds give the statistical one,
        :mod:`polab.estimators.smoothing_certificates`).
    budget : float or array, shape [...]
        Total budget(s) :math:`B \ge 0`.
    sigma : float, > 0
    reward_min : float
        :math:`a`, with :math:`R\ge a` almost surely.

    Returns
    -------
    float64 scalar or ndarray shaped like ``budget``.

    Notes
    -----
    Valid for any thresholds (no monotonicity of ``tail_probabilities`` is
    assumed); the thresholds above the largest possible return add nothing
    when their tail bounds are 0. Non-increasing in ``budget``.
    """
    s = _sigma(sigma)
    b = _budget(budget)
    t, p = _thresholds(thresholds, tail_probabilities, float(reward_min))
    widths = np.diff(np.concatenate([[float(reward_min)], t]))
    tails = ndtr(ndtri(p)[None, :] - b.reshape(-1, 1) / s)  # [budgets, m]
    out = float(reward_min) + tails @ widths
    return _scalar_or_array(np.asarray(out.reshape(b.shape), dtype=np.float64))


def certified_percentile(thresholds, tail_probabilities, *, level, budget, sigma, reward_min):
    r"""Certified lower bound on the attacked :math:`\ell`-quantile of the total reward, eq. (3).

    .. math::

        Q_{adv}(\ell) \ge \max\{t_k : \Phi(\Phi^{-1}(\underline p_k) - B/\sigma) > 1-\ell\},

    and :math:`a` (``reward_min``) when no threshold qualifies.

    Parameters
    ----------
    thresholds, tail_probabilities : arrays, shape [m]
        As in :func:`certified_expected_reward`.
    level : float or array, shape [L]
        Quantile levels :math:`\ell\in(0,1)` (0.5 is the median).
    budget : float or array, shape [K]
    sigma : float, > 0
    reward_min : float

    Returns
    -------
    float64 ndarray of shape ``level.shape + budget.shape`` (a scalar when
    both are scalars).
    """
    s = _sigma(sigma)
    b = _budget(budget)
    lv = np.asarray(level, dtype=np.float64)
    if not np.all(np.isfinite(lv)) or np.any((lv <= 0) | (lv >= 1)):
        raise ValueError(f"level must lie strictly between 0 and 1; got {level}.")
    t, p = _thresholds(thresholds, tail_probabilities, float(reward_min))
    # Phi(z - B/sigma) > 1 - level  <=>  z > Phi^{-1}(1 - level) + B/sigma, Phi being increasing
    ok = ndtri(p)[None, None, :] > (ndtri(1.0 - lv).reshape(-1, 1, 1) + b.reshape(1, -1, 1) / s)  # [L, K, m]
    vals = np.where(ok, t[None, None, :], float(reward_min)).max(axis=-1)
    return _scalar_or_array(np.asarray(vals.reshape(lv.shape + b.shape), dtype=np.float64))
