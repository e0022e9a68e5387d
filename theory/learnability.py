r"""Learnability of a distribution: closed forms for the mean absolute group advantage.

DUMP scores a training distribution :math:`d` by its *learnability*, the
expected absolute advantage of the responses it produces,

.. math:: L(d) = \mathbb{E}_{x\sim d}\,\mathbb{E}_{o\sim\pi_\theta(\cdot\mid x)}\,|\hat A(o)|,

and samples distributions by a UCB on an estimate of it
(:class:`polab.estimators.curriculum.DumpScheduler`). This module gives that
quantity in closed form for binary (0/1) rewards under GRPO and RLOO
advantages, so that the scheduler's input can be checked against exact
values (:mod:`polab.proofs_checks.learnability_checks`).

Why mean |advantage| (the DUMP argument)
-----------------------------------------
Let :math:`x\sim d`, draw a group :math:`o_1,\dots,o_G\sim\pi_\theta(\cdot\mid x)`
and let :math:`A_i` be their group-relative advantages. The policy gradient
of the GRPO surrogate restricted to :math:`d`, normalised per response, is

.. math::

    \nabla J_d(\theta) = \mathbb{E}\Big[\frac{1}{G}\sum_{i=1}^{G}
        A_i\,\nabla_\theta\log\pi_\theta(o_i\mid x)\Big].

With :math:`\Gamma = \sup_{x,o}\|\nabla_\theta\log\pi_\theta(o\mid x)\|`
(written :math:`G_{\max}` in the project notes; it has nothing to do with the
group size :math:`G`), Jensen's inequality for the norm
(:math:`\|\mathbb{E}X\|\le\mathbb{E}\|X\|`) and the triangle inequality give

.. math::

    \|\nabla J_d(\theta)\| \le \mathbb{E}\Big[\frac{1}{G}\sum_i |A_i|\,
        \|\nabla_\theta\log\pi_\theta(o_i\mid x)\|\Big]
    \le \Gamma\,\mathbb{E}\Big[\frac{1}{G}\sum_i |A_i|\Big] = \Gamma\,L(d).
    \qquad (1)

(Without the :math:`1/G` normalisation the right-hand side is multiplied by
:math:`G`.) So a distribution whose advantages are all near zero (every
rollout right, or every rollout wrong) contributes almost no gradient, which
is the reason DUMP prefers distributions with large :math:`L(d)`. The bound
says nothing in the other direction: a large :math:`L(d)` does not guarantee
a large gradient.

**Status of (1).** Bound (1) is derived here, from the definitions above. It
is what the project notes (``shared/notes/theory_core.md`` section 1.2)
reconstruct as the content of Theorem 3.1 of the DUMP paper, but the notes
mark the exact statement of Theorem 3.1 as *recalled and unconfirmed* (the
paper body was not available). Do not cite (1) as the paper's theorem.

Closed forms for binary rewards
-------------------------------
A group of :math:`G` binary rewards with :math:`k` successes has empirical
success rate :math:`q = k/G` and group mean :math:`\bar r = q`. The
deviations :math:`r_i-\bar r` are :math:`1-q` for the :math:`k` successes and
:math:`-q` for the :math:`G-k` failures, so

.. math::

    \frac1G\sum_i |r_i-\bar r| = \frac{k(1-q) + (G-k)q}{G} = 2q(1-q),
    \qquad
    \frac1G\sum_i (r_i-\bar r)^2 = q(1-q)^2 + (1-q)q^2 = q(1-q).

The population std is :math:`s_{pop}=\sqrt{q(1-q)}`, the unbiased
(:math:`G-1`) std used by verl, TRL and OpenRLHF is
:math:`s_{unb}=\sqrt{q(1-q)\,G/(G-1)}`. GRPO's advantage is
:math:`A_i=(r_i-\bar r)/(s+\epsilon)`, hence exactly

.. math::

    \overline{|A|} = \frac{2q(1-q)}{s+\epsilon}, \qquad (2)

and with :math:`\epsilon = 0` and :math:`0<k<G`

.. math::

    \overline{|A|}_{unb} = 2\sqrt{q(1-q)}\sqrt{\frac{G-1}{G}},\qquad
    \overline{|A|}_{pop} = 2\sqrt{q(1-q)}. \qquad (3)

When :math:`k\in\{0, G\}` every deviation is 0 and :math:`\overline{|A|}=0`
(the 0/0 of (3) is resolved by the numerator, which vanishes identically).
The RLOO advantage :math:`A_i = r_i - \frac{1}{G-1}\sum_{j\ne i}r_j =
\frac{G}{G-1}(r_i-\bar r)` gives

.. math:: \overline{|A^{rloo}|} = \frac{G}{G-1}\,2q(1-q). \qquad (4)

For :math:`k\sim\mathrm{Binomial}(G,p)` the expectation of (2) is the finite
sum :math:`\sum_{k=0}^{G}\binom Gk p^k(1-p)^{G-k}\,\overline{|A|}(k)`; as
:math:`G\to\infty`, :math:`q\to p` almost surely and, (3) being bounded by 1,
both conventions tend to :math:`2\sqrt{p(1-p)}`. A group carries no signal
with probability :math:`P(k\in\{0,G\}) = p^G+(1-p)^G`.

References
----------
Wang, Cui, Li, Wan, Zhao, "DUMP: Automated Distribution-Level Curriculum
Learning for RL-based LLM Post-training", arXiv 2504.09710, 2025.
Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in
Open Language Models", arXiv 2402.03300, 2024 (GRPO).
Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization for
Learning from Human Feedback in LLMs", ACL 2024 (RLOO).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.stats import binom

__all__ = [
    "binary_group_std",
    "mean_abs_group_advantage",
    "expected_mean_abs_group_advantage",
    "mean_abs_advantage_limit",
    "mean_abs_rloo_advantage",
    "expected_mean_abs_rloo_advantage",
    "zero_variance_probability",
]

StdConvention = Literal["unbiased", "population"]


# ---------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------
def _scalar_or_array(x: np.ndarray):
    """A 0-d result becomes a numpy float64 scalar; arrays are returned as is."""
    return x[()] if x.ndim == 0 else x


def _check_std(std: str) -> None:
    if std not in ("unbiased", "population"):
        raise ValueError(f"std must be 'unbiased' or 'population'; got {std!r}.")


def _check_epsilon(epsilon: float) -> float:
    eps = float(epsilon)
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"epsilon must be finite and >= 0; got {epsilon}.")
    return eps


def _as_integers(x, *, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must be integer-valued numbers; got dtype {a.dtype}.")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite; got {a}.")
        if not np.all(a == np.round(a)):
            bad = a[a != np.round(a)].ravel()[:5]
            raise ValueError(f"{name} must be integer-valued; got non-integers such as {bad.tolist()}.")
    return a.astype(np.int64)


def _group_size(group_size, *, minimum: int, why: str) -> np.ndarray:
    G = _as_integers(group_size, name="group_size")
    if np.any(G < minimum):
        bad = G[G < minimum].ravel()[:5]
        raise ValueError(f"group_size must be >= {minimum} ({why}); got {bad.tolist()}.")
    return G


def _min_group_size(std: str) -> tuple[int, str]:
    if std == "unbiased":
        return 2, "the unbiased std divides by G-1"
    return 1, "a group needs at least one response"


def _successes(k, G: np.ndarray) -> np.ndarray:
    kk = _as_integers(k, name="k")
    try:
        kb, Gb = np.broadcast_arrays(kk, G)
    except ValueError as exc:
        raise ValueError(f"k (shape {kk.shape}) and group_size (shape {G.shape}) do not broadcast.") from exc
    bad = (kb < 0) | (kb > Gb)
    if np.any(bad):
        pairs = list(zip(kb[bad].ravel()[:5].tolist(), Gb[bad].ravel()[:5].tolist()))
        raise ValueError(f"k must satisfy 0 <= k <= group_size; got (k, group_size) pairs {pairs}.")
    return kk


def _probability(p) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"p must be finite; got {p}.")
    if np.any((a < 0) | (a > 1)):
        bad = a[(a < 0) | (a > 1)].ravel()[:5]
        raise ValueError(f"p must lie in [0, 1]; got {bad.tolist()}.")
    return a


# ---------------------------------------------------------------------------
# unvalidated kernels (inputs already checked and broadcastable)
# ---------------------------------------------------------------------------
def _std_from_q(q: np.ndarray, G: np.ndarray, std: str) -> np.ndarray:
    var_pop = q * (1.0 - q)
    if std == "population":
        return np.sqrt(var_pop)
    return np.sqrt(var_pop * G / np.maximum(G - 1.0, 1.0))


def _mean_abs_from_counts(k: np.ndarray, G: np.ndarray, std: str, eps: float) -> np.ndarray:
    Gf = np.asarray(G, dtype=np.float64)
    q = np.asarray(k, dtype=np.float64) / Gf
    mad = 2.0 * q * (1.0 - q)  # mean |r_i - mean|, exact for binary rewards
    if eps == 0.0:
        root = 2.0 * np.sqrt(q * (1.0 - q))
        if std == "unbiased":
            root = root * np.sqrt((Gf - 1.0) / Gf)
        return np.where(mad > 0, root, 0.0)
    s = _std_from_q(q, Gf, std)
    return np.where(mad > 0, mad / (s + eps), 0.0)


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
def binary_group_std(k, group_size, *, std: StdConvention = "unbiased"):
    r"""Standard deviation of a group of binary rewards with ``k`` successes.

    .. math::

        s_{pop} = \sqrt{q(1-q)},\qquad s_{unb} = \sqrt{q(1-q)\,\frac{G}{G-1}},
        \qquad q = k/G.

    Parameters
    ----------
    k : int or array of int
        Number of successes, :math:`0\le k\le G`.
    group_size : int or array of int
        :math:`G`; at least 2 for ``std="unbiased"``, at least 1 for
        ``"population"``. Broadcast against ``k``.
    std : {"unbiased", "population"}

    Returns
    -------
    float64 scalar or ndarray of the broadcast shape.
    """
    _check_std(std)
    m, why = _min_group_size(std)
    G = _group_size(group_size, minimum=m, why=why)
    k = _successes(k, G)
    q = k / G.astype(np.float64)
    return _scalar_or_array(np.asarray(_std_from_q(q, G.astype(np.float64), std), dtype=np.float64))


def mean_abs_group_advantage(k, group_size, *, std: StdConvention = "unbiased", epsilon: float = 0.0):
    r"""Mean absolute GRPO advantage of a binary-reward group with ``k`` successes.

    .. math::

        \overline{|A|} = \frac1G\sum_{i=1}^G\frac{|r_i-\bar r|}{s+\epsilon}
        = \frac{2q(1-q)}{s+\epsilon},\qquad q=k/G,

    which for :math:`\epsilon=0` is :math:`2\sqrt{q(1-q)}\sqrt{(G-1)/G}`
    (unbiased std, verl/TRL/OpenRLHF) or :math:`2\sqrt{q(1-q)}` (population
    std), eqs. (2)-(3) of the module docstring, and 0 for :math:`k\in\{0,G\}`.

    Parameters
    ----------
    k : int or array of int
        Number of successes (reward 1) in the group, :math:`0\le k\le G`.
    group_size : int or array of int
        :math:`G`, broadcast against ``k``; at least 2 for ``std="unbiased"``
        (its std divides by :math:`G-1`), at least 1 for ``"population"``.
    std : {"unbiased", "population"}
        Std convention of the normalisation.
    epsilon : float, default 0
        Added to the std as in :func:`polab.estimators.advantages.group_advantages`
        (verl 1e-6, TRL 1e-4, OpenRLHF 1e-9). The result is exact for every
        :math:`\epsilon\ge 0`.

    Returns
    -------
    float64 scalar or ndarray of the broadcast shape of ``k`` and ``group_size``.

    Notes
    -----
    Derivation (module docstring): the deviations are :math:`1-q` for the
    :math:`k` successes and :math:`-q` for the :math:`G-k` failures, so their
    mean absolute value is :math:`2q(1-q)` and their mean square
    :math:`q(1-q)`. The maximum over :math:`q` is at :math:`q=1/2`:
    :math:`\sqrt{(G-1)/G}` (unbiased) or 1 (population).
    The unbiased and population results differ by the factor
    :math:`\sqrt{(G-1)/G}` only when :math:`\epsilon=0`.
    """
    _check_std(std)
    eps = _check_epsilon(epsilon)
    m, why = _min_group_size(std)
    G = _group_size(group_size, minimum=m, why=why)
    k = _successes(k, G)
    return _scalar_or_array(np.asarray(_mean_abs_from_counts(k, G, std, eps), dtype=np.float64))


def expected_mean_abs_group_advantage(p, group_size, *, std: StdConvention = "unbiased", epsilon: float = 0.0):
    r"""Expected mean absolute GRPO advantage when :math:`k\sim\mathrm{Binomial}(G, p)`.

    .. math::

        \mathbb{E}\,\overline{|A|} = \sum_{k=0}^{G}\binom{G}{k}p^k(1-p)^{G-k}\,
        \frac{2q_k(1-q_k)}{s_k+\epsilon},\qquad q_k = k/G,

    an exact finite sum (the binomial weights come from
    ``scipy.stats.binom.pmf``). This is :math:`L(d)` of the module docstring
    for a prompt whose responses succeed independently with probability
    :math:`p`.

    Parameters
    ----------
    p : float or array
        Success probability, :math:`0\le p\le 1`.
    group_size : int or array of int
        :math:`G`, broadcast against ``p``; at least 2 for ``"unbiased"``.
    std : {"unbiased", "population"}
    epsilon : float, default 0

    Returns
    -------
    float64 scalar or ndarray of the broadcast shape of ``p`` and ``group_size``.

    Notes
    -----
    For :math:`\epsilon=0` both conventions are bounded by the large-group
    limit: by Jensen (concavity of the square root) and
    :math:`\mathbb{E}[q(1-q)] = p(1-p)(G-1)/G`,

    .. math::

        \mathbb{E}\,\overline{|A|}_{unb}
        \le 2\sqrt{\tfrac{G-1}{G}}\sqrt{p(1-p)\tfrac{G-1}{G}}
        = 2\sqrt{p(1-p)}\,\tfrac{G-1}{G} \le 2\sqrt{p(1-p)},

    and :math:`\mathbb{E}\,\overline{|A|}_{pop} \le 2\sqrt{p(1-p)(G-1)/G}`
    (see :func:`mean_abs_advantage_limit`). Cost: :math:`O(\max G)` per entry.
    """
    _check_std(std)
    eps = _check_epsilon(epsilon)
    m, why = _min_group_size(std)
    G = _group_size(group_size, minimum=m, why=why)
    pp = _probability(p)
    try:
        pb, Gb = np.broadcast_arrays(pp, G)
    except ValueError as exc:
        raise ValueError(f"p (shape {pp.shape}) and group_size (shape {G.shape}) do not broadcast.") from exc
    kgrid = np.arange(int(Gb.max()) + 1 if Gb.size else 1)
    Gx = Gb[..., None]
    kx = np.minimum(kgrid, Gx)  # k > G has zero binomial weight; clip to keep the kernel defined
    weights = np.where(kgrid <= Gx, binom.pmf(kgrid, Gx, pb[..., None]), 0.0)
    vals = _mean_abs_from_counts(kx, Gx, std, eps)
    return _scalar_or_array(np.asarray((weights * vals).sum(axis=-1), dtype=np.float64))


def mean_abs_advantage_limit(p):
    r"""Large-group limit of the expected mean absolute GRPO advantage: :math:`2\sqrt{p(1-p)}`.

    As :math:`G\to\infty`, :math:`q=k/G\to p` almost surely and (3) is
    bounded by 1, so by dominated convergence both std conventions give
    :math:`\mathbb{E}\,\overline{|A|}\to 2\sqrt{p(1-p)}` (with
    :math:`\epsilon=0`). It is also an upper bound for every finite
    :math:`G` (Notes of :func:`expected_mean_abs_group_advantage`).

    Parameters
    ----------
    p : float or array, :math:`0\le p\le 1`

    Returns
    -------
    float64 scalar or ndarray shaped like ``p``.
    """
    pp = _probability(p)
    return _scalar_or_array(np.asarray(2.0 * np.sqrt(pp * (1.0 - pp)), dtype=np.float64))


def mean_abs_rloo_advantage(k, group_size):
    r"""Mean absolute RLOO advantage of a binary-reward group with ``k`` successes.

    .. math::

        A_i = r_i - \frac{1}{G-1}\sum_{j\ne i}r_j = \frac{G}{G-1}(r_i-\bar r)
        \;\Longrightarrow\;
        \overline{|A^{rloo}|} = \frac{G}{G-1}\cdot 2q(1-q),\qquad q=k/G.

    Derivation: :math:`\sum_{j\ne i}r_j = G\bar r - r_i`, so
    :math:`A_i = r_i - (G\bar r - r_i)/(G-1) = G(r_i-\bar r)/(G-1)`; the mean
    absolute deviation of binary rewards is :math:`2q(1-q)` (module
    docstring). No std, no epsilon.

    Parameters
    ----------
    k : int or array of int, :math:`0\le k\le G`
    group_size : int or array of int, :math:`G\ge 2` (a singleton has no baseline)

    Returns
    -------
    float64 scalar or ndarray of the broadcast shape.
    """
    G = _group_size(group_size, minimum=2, why="the leave-one-out baseline needs another response")
    k = _successes(k, G)
    Gf = G.astype(np.float64)
    q = k / Gf
    return _scalar_or_array(np.asarray(Gf / (Gf - 1.0) * 2.0 * q * (1.0 - q), dtype=np.float64))


def expected_mean_abs_rloo_advantage(p, group_size):
    r"""Expected mean absolute RLOO advantage when :math:`k\sim\mathrm{Binomial}(G,p)`: exactly :math:`2p(1-p)`.

    Derivation: :math:`\mathbb{E}q = p` and
    :math:`\mathbb{E}q^2 = p^2 + p(1-p)/G`, so
    :math:`\mathbb{E}[q(1-q)] = p(1-p)(G-1)/G` and

    .. math::

        \mathbb{E}\,\overline{|A^{rloo}|} = \frac{G}{G-1}\,2\,\mathbb{E}[q(1-q)]
        = 2p(1-p),

    for every :math:`G\ge 2` (the leave-one-out factor exactly undoes the
    shrinkage of the empirical variance).

    Parameters
    ----------
    p : float or array, :math:`0\le p\le 1`
    group_size : int or array of int, :math:`G\ge 2` (validated, then only
        broadcast: the result does not depend on it)

    Returns
    -------
    float64 scalar or ndarray of the broadcast shape.
    """
    G = _group_size(group_size, minimum=2, why="the leave-one-out baseline needs another response")
    pp = _probability(p)
    pb, _ = np.broadcast_arrays(pp, G)
    return _scalar_or_array(np.asarray(2.0 * pb * (1.0 - pb), dtype=np.float64))


def zero_variance_probability(p, group_size):
    r"""Probability that a group of :math:`G` binary rewards is all-equal: :math:`p^G + (1-p)^G`.

    Such a group has every advantage equal to 0 (GRPO, Dr.GRPO and RLOO
    alike): it is a "vanishing advantage" group and contributes nothing to
    (1) of the module docstring.

    Parameters
    ----------
    p : float or array, :math:`0\le p\le 1`
    group_size : int or array of int, :math:`G\ge 1`

    Returns
    -------
    float64 scalar or ndarray of the broadcast shape.
    """
    G = _group_size(group_size, minimum=1, why="a group needs at least one response")
    pp = _probability(p)
    Gf = G.astype(np.float64)
    return _scalar_or_array(np.asarray(pp**Gf + (1.0 - pp) ** Gf, dtype=np.float64))
