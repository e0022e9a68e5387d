r"""Mode-seeking versus mode-covering updates of a categorical policy: exact population gradients.

A categorical policy over :math:`K` bins, :math:`p = \mathrm{softmax}(\theta)`,
is fine-tuned toward a reward :math:`R` from a reference policy
:math:`\pi_{ref}`. This module gives the *exact* (population, infinite-sample)
logit gradients of every objective that Tajwar et al. (2024) compare, so that
the speed at which each moves probability mass can be computed without
sampling noise:

1. **Forward KL / maximum likelihood** (mode-covering), toward a target
   :math:`q`: :math:`\nabla_\theta \mathrm{KL}(q\|p) = p - q`. Maximum
   likelihood on samples of :math:`q` (supervised fine-tuning on preferred
   samples) has the same expected gradient, since
   :math:`\nabla_\theta[-\log p_y] = p - e_y`.
2. **Reverse KL** (mode-seeking):
   :math:`\nabla_\theta \mathrm{KL}(p\|q) = p\odot(\log(p/q) - \mathrm{KL}(p\|q))`.
3. **Reward-tilted reverse KL** (on-policy KL-regularised RL). The maximiser
   of :math:`\mathbb{E}_p[R] - \beta\,\mathrm{KL}(p\|\pi_{ref})` is the tilted
   optimum :math:`\pi^*\propto\pi_{ref}\,e^{R/\beta}`, and, with
   :math:`A = R - \mathbb{E}_p[R]` and :math:`L = \log(p/\pi_{ref})`,

   .. math::

       \nabla_\theta \mathrm{KL}(p\|\pi^*) = -\,p\odot A/\beta + p\odot(L - \mathbb{E}_p L)
       = -\tfrac1\beta\nabla_\theta\big(\mathbb{E}_pR - \beta\,\mathrm{KL}(p\|\pi_{ref})\big), \qquad (1)

   the expected on-policy policy gradient (REINFORCE with a mean baseline)
   of the regularised objective, divided by :math:`-\beta`. At
   :math:`p = \pi_{ref}` the KL term vanishes and it is :math:`-p\odot A/\beta`.
   (The project notes, §6.3, state :math:`-p\odot A/\beta` without the
   condition :math:`p=\pi_{ref}`; away from the reference the KL term is
   needed, as :func:`polab.proofs_checks.mode_seeking_checks.check_gradients`
   shows.)
4. **Best-of-N maximum likelihood** ("Pref-FT"), with samples from a
   sampling policy :math:`\mu` (:math:`\mu=\pi_{ref}` offline,
   :math:`\mu=p` on-policy, held fixed when differentiating): the expected
   gradient of :math:`-\log p(y_{best})` is :math:`p - b_N(\mu)`, with
   :math:`b_N(\mu)` the law of the best of :math:`N` i.i.d. draws
   (:func:`best_of_n_distribution`). The **negative gradient** variants add
   :math:`+c\,\log p(y)` for the worst sample (expected gradient
   :math:`c\,(w_N(\mu) - p)`, :math:`w_N` the law of the worst), or for the
   mean / sum over the :math:`N-1` non-best samples, whose expected counts
   are :math:`N\mu - b_N(\mu)`.
5. **Contrastive losses** on pairs :math:`y_1, y_2\sim\mu` i.i.d. with the
   winner decided by the reward (ties carry no preference and are dropped):
   with :math:`h = \log\frac{p_w}{\pi_{ref,w}} - \log\frac{p_l}{\pi_{ref,l}}
   = (\theta_w - \theta_l) - (\log\pi_{ref,w} - \log\pi_{ref,l})`, so that
   :math:`\nabla_\theta h = e_w - e_l`,

   .. math::

       \nabla_\theta\,\mathbb{E}\,\ell(h) = \sum_{w,l:\,R_w>R_l} 2\mu_w\mu_l\,\ell'(h_{wl})\,(e_w - e_l), \qquad (2)

   with :math:`\ell(h) = -\log\sigma(\beta h)` (DPO, Rafailov et al. 2023,
   eq. 7), its label-smoothed form (conservative DPO, Mitchell 2023) or
   :math:`(h - h^*)^2` (IPO, Azar et al. 2024, eq. 17, :math:`h^*=1/(2\tau)`;
   the authors' bandit code uses :math:`h^* = \beta`). The :math:`-\ell'(h)\,e_l`
   term is the *negative gradient*: it pushes down the loser's logit.

Status of each statement
------------------------
- (1)–(5) are derived here from the definitions and checked against
  autograd in :mod:`polab.proofs_checks.mode_seeking_checks` (float64, 1e-10
  relative). Items 1–3 and (1) are also in the project notes
  (``shared/notes/theory_core.md`` §6.3, marked DERIVED there).
- The setting (100 bins, :math:`\pi_{ref}` the histogram of
  :math:`\tanh(\mathrm{Cauchy}(-0.7, 0.4))` on 100 equal bins of [-1, 1],
  rewards :math:`\exp(-((a-c)/10)^2)` with :math:`c=70` or :math:`20`, the
  best-of-N / negative-gradient / DPO / IPO losses) is taken from the
  authors' code (``Asap7772/understanding-rlhf``, ``bandit_experiment/``), as
  read for the notes. :func:`reference_policy` uses the *exact* bin
  probabilities (Cauchy CDF at :math:`\operatorname{artanh}` of the bin
  edges) instead of a 10 000-sample histogram, so the instance is
  deterministic; this is a departure from the code.
- The paper's theorem (that mode-seeking objectives relocate mass faster
  than maximum likelihood) is *not* encoded: its hypotheses were not
  available (notes §6.4, UNCONFIRMED). What this module computes is the
  exact behaviour on the didactic instance, which includes a counterexample
  to the unqualified claim: exact forward-KL descent toward
  :math:`\pi^*` is *faster* than exact reverse-KL descent for the reward
  peaked at bin 70 with :math:`\beta=0.1` (35 versus 52 steps,
  :func:`mass_relocation_race`).

References
----------
Tajwar, Singh, Sharma, Rafailov, Schneider, Xie, Ermon, Finn, Kumar,
"Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data",
ICML 2024, arXiv 2404.14367.
Rafailov et al., "Direct Preference Optimization: Your Language Model is
Secretly a Reward Model", NeurIPS 2023, arXiv 2305.18290.
Azar et al., "A General Theoretical Paradigm to Understand Learning from
Human Preferences", AISTATS 2024, arXiv 2310.12036 (IPO).
Mitchell, "A note on DPO with noisy preferences and relationship to IPO",
2023 (conservative DPO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from scipy.stats import cauchy

__all__ = [
    "NUM_BINS",
    "REWARD_CENTERS",
    "reference_policy",
    "bump_reward",
    "softmax",
    "tilted_optimum",
    "kl_divergence",
    "forward_kl_logit_grad",
    "reverse_kl_logit_grad",
    "tilted_reverse_kl_logit_grad",
    "best_of_n_distribution",
    "worst_of_n_distribution",
    "best_of_n_logit_grad",
    "pair_probabilities",
    "pairwise_logit_grad",
    "mass_in_window",
    "RaceResult",
    "mass_relocation_race",
]

#: Bins of the didactic bandit (authors' ``num_actions = 100``).
NUM_BINS = 100
#: Reward peaks: 70 ("not aligned" with pi_ref, ``reward_4``) and 20 ("aligned", ``reward_5``).
REWARD_CENTERS = {"far": 70, "near": 20}


def _check_prob(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size < 2:
        raise ValueError(f"{name} must be a 1-d probability vector over K >= 2 bins; got shape {p.shape}.")
    if np.any(~np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(f"{name} must be finite, non-negative and sum to 1 (sum {p.sum()!r}); normalise it first.")
    return p


def _check_vec(x, k: int, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (k,):
        raise ValueError(f"{name} must have shape [{k}] (one value per bin); got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has non-finite entries at bins {np.flatnonzero(~np.isfinite(x))[:10].tolist()}.")
    return x


def reference_policy(num_bins: int = NUM_BINS, *, loc: float = -0.7, scale: float = 0.4) -> np.ndarray:
    r"""Exact bin probabilities of :math:`\tanh(X)`, :math:`X\sim\mathrm{Cauchy}(loc, scale)`, on equal bins of [-1, 1].

    :math:`\pi_{ref}(a) = F(\operatorname{artanh} b_{a+1}) - F(\operatorname{artanh} b_a)`
    with :math:`b_a = -1 + 2a/K` and :math:`F` the Cauchy CDF (the outer edges
    map to :math:`\pm\infty`). With the defaults: bin 0 ≈ 0.0781, bin 99 ≈
    0.0422, interior mode at bin 16 ≈ 0.0268 (notes §6.2 give 0.078, 0.042,
    0.027 from a 10 000-sample histogram).

    Returns
    -------
    ndarray, shape [num_bins], float64, sums to 1.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2; got {num_bins}.")
    if scale <= 0:
        raise ValueError(f"scale must be > 0; got {scale}.")
    edges = np.linspace(-1.0, 1.0, num_bins + 1)
    with np.errstate(divide="ignore"):
        z = np.arctanh(edges)
    cdf = cauchy.cdf(z, loc=loc, scale=scale)
    p = np.diff(cdf)
    return p / p.sum()


def bump_reward(num_bins: int = NUM_BINS, *, center: float = 70, width: float = 10.0) -> np.ndarray:
    r"""Reward :math:`R(a) = \exp(-((a - c)/w)^2)` of bin index :math:`a` (authors' ``reward_4``: c=70; ``reward_5``: c=20; w=10)."""
    if width <= 0:
        raise ValueError(f"width must be > 0; got {width}.")
    a = np.arange(num_bins, dtype=np.float64)
    return np.exp(-(((a - center) / width) ** 2))


def softmax(theta) -> np.ndarray:
    """Numerically stable softmax of a logit vector [K]."""
    t = np.asarray(theta, dtype=np.float64)
    e = np.exp(t - t.max())
    return e / e.sum()


def tilted_optimum(reference, rewards, *, beta: float) -> np.ndarray:
    r""":math:`\pi^*(a)\propto\pi_{ref}(a)\,e^{R(a)/\beta}`, the maximiser of :math:`\mathbb{E}_p R - \beta\,\mathrm{KL}(p\|\pi_{ref})`."""
    ref = _check_prob(reference, "reference")
    r = _check_vec(rewards, ref.size, "rewards")
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}.")
    with np.errstate(divide="ignore"):
        return softmax(np.log(ref) + r / beta)


def kl_divergence(p, q) -> float:
    r""":math:`\mathrm{KL}(p\|q) = \sum_a p_a\log(p_a/q_a)` (terms with :math:`p_a=0` are 0)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = p > 0
    return float(np.sum(p[m] * (np.log(p[m]) - np.log(q[m]))))


def forward_kl_logit_grad(theta, target) -> np.ndarray:
    r""":math:`\nabla_\theta\mathrm{KL}(q\|\mathrm{softmax}\,\theta) = p - q` (mode-covering; expected MLE gradient on samples of q)."""
    q = _check_prob(target, "target")
    p = softmax(_check_vec(theta, q.size, "theta"))
    return p - q


def reverse_kl_logit_grad(theta, target) -> np.ndarray:
    r""":math:`\nabla_\theta\mathrm{KL}(\mathrm{softmax}\,\theta\|q) = p\odot(\log(p/q) - \mathrm{KL}(p\|q))` (mode-seeking). Needs q > 0."""
    q = _check_prob(target, "target")
    p = softmax(_check_vec(theta, q.size, "theta"))
    if np.any(q <= 0):
        raise ValueError("target must be > 0 on every bin for the reverse KL to be finite.")
    lr = np.log(p) - np.log(q)
    return p * (lr - p @ lr)


def tilted_reverse_kl_logit_grad(theta, reference, rewards, *, beta: float) -> np.ndarray:
    r"""Equation (1): :math:`-p\odot A/\beta + p\odot(L - \mathbb{E}_pL)`, equal to ``reverse_kl_logit_grad(theta, tilted_optimum(...))``.

    The first term is the expected on-policy policy gradient of
    :math:`\mathbb{E}_pR` divided by :math:`-\beta`; the second, the gradient of
    :math:`\mathrm{KL}(p\|\pi_{ref})`, vanishes at :math:`p=\pi_{ref}`.
    """
    ref = _check_prob(reference, "reference")
    r = _check_vec(rewards, ref.size, "rewards")
    p = softmax(_check_vec(theta, ref.size, "theta"))
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}.")
    if np.any(ref <= 0):
        raise ValueError("reference must be > 0 on every bin for KL(p || reference) to be finite.")
    L = np.log(p) - np.log(ref)
    return -p * (r - p @ r) / beta + p * (L - p @ L)


def _extreme_of_n(mu: np.ndarray, rewards: np.ndarray, n: int, *, best: bool) -> np.ndarray:
    """Law of the best (or worst) of n i.i.d. draws from mu, ties between bins of equal reward split by mass."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}.")
    key = rewards if best else -rewards
    levels, inv = np.unique(key, return_inverse=True)  # ascending "goodness"
    mass = np.bincount(inv, weights=mu, minlength=levels.size)
    cdf = np.cumsum(mass)
    below = cdf - mass
    p_level = np.clip(cdf, 0, 1) ** n - np.clip(below, 0, 1) ** n  # P(best sample lies at this level)
    out = np.zeros_like(mu)
    nz = mass[inv] > 0
    out[nz] = p_level[inv[nz]] * mu[nz] / mass[inv[nz]]
    return out


def best_of_n_distribution(mu, rewards, n: int) -> np.ndarray:
    r"""Law :math:`b_N(\mu)` of the highest-reward of :math:`N` i.i.d. draws from :math:`\mu`.

    With :math:`F(r)=\mu(R\le r)`, a reward level :math:`r` is the best with
    probability :math:`F(r)^N - F(r^-)^N`; bins sharing that level split it in
    proportion to their mass (the best sample, given its level, is a draw
    from :math:`\mu` restricted to the level).
    """
    mu = _check_prob(mu, "mu")
    return _extreme_of_n(mu, _check_vec(rewards, mu.size, "rewards"), int(n), best=True)


def worst_of_n_distribution(mu, rewards, n: int) -> np.ndarray:
    r"""Law :math:`w_N(\mu)` of the lowest-reward of :math:`N` i.i.d. draws from :math:`\mu` (see :func:`best_of_n_distribution`)."""
    mu = _check_prob(mu, "mu")
    return _extreme_of_n(mu, _check_vec(rewards, mu.size, "rewards"), int(n), best=False)


def best_of_n_logit_grad(
    theta,
    sampler,
    rewards,
    n: int,
    *,
    negative_gradient: Literal["none", "worst", "mean", "sum"] = "none",
    negative_coef: float = 0.0,
) -> np.ndarray:
    r"""Expected logit gradient of best-of-N maximum likelihood, optionally with a negative gradient.

    Per group of :math:`N` draws from ``sampler`` (held fixed),
    :math:`\ell = -\log p(y_{best}) + c\,\sum_{y\in S}\log p(y)\,/\,Z`, where
    :math:`S` is empty (``"none"``), the worst draw (``"worst"``, Z=1), or the
    :math:`N-1` non-best draws (``"sum"``: Z=1; ``"mean"``: Z=N-1). As
    :math:`\nabla_\theta\log p_y = e_y - p`,

    .. math::

        \mathbb{E}\nabla\ell = (p - b_N) + c\,(s - |S|\,p)/Z,\quad
        s = 0,\; w_N,\; N\mu - b_N \text{ respectively.}

    Parameters
    ----------
    theta : array [K]
        Logits of the trained policy.
    sampler : array [K]
        The sampling policy :math:`\mu` (``reference_policy()`` offline;
        ``softmax(theta)`` on-policy).
    rewards : array [K]
    n : int
        Samples per group, :math:`N\ge 1` (:math:`N\ge 2` with a negative gradient).
    negative_gradient, negative_coef
        The authors' ``worst_action``, ``average_over_worse_actions``,
        ``sum_over_worse_actions`` with :math:`c` their ``beta``.
    """
    mu = _check_prob(sampler, "sampler")
    r = _check_vec(rewards, mu.size, "rewards")
    p = softmax(_check_vec(theta, mu.size, "theta"))
    b = _extreme_of_n(mu, r, n, best=True)
    g = p - b
    if negative_gradient == "none":
        return g
    if n < 2:
        raise ValueError("a negative gradient needs n >= 2 samples per group.")
    if negative_gradient == "worst":
        return g + negative_coef * (_extreme_of_n(mu, r, n, best=False) - p)
    rest = n * mu - b
    if negative_gradient == "sum":
        return g + negative_coef * (rest - (n - 1) * p)
    if negative_gradient == "mean":
        return g + negative_coef * (rest / (n - 1) - p)
    raise ValueError(f"negative_gradient must be 'none', 'worst', 'mean' or 'sum'; got {negative_gradient!r}.")


def pair_probabilities(sampler, rewards, *, min_reward_gap: float = 0.0) -> np.ndarray:
    r"""Matrix :math:`P_{wl} = 2\mu_w\mu_l` for :math:`R_w - R_l > \max(0, \text{gap})`, else 0.

    The probability that two i.i.d. draws from :math:`\mu` form the ordered
    preference pair (winner w, loser l). Ties and pairs closer than
    ``min_reward_gap`` (the authors' IPO ``reward_threshold``) carry no pair.
    Shape [K, K].
    """
    mu = _check_prob(sampler, "sampler")
    r = _check_vec(rewards, mu.size, "rewards")
    diff = r[:, None] - r[None, :]
    keep = (diff > 0) & (diff >= min_reward_gap)
    return np.where(keep, 2.0 * mu[:, None] * mu[None, :], 0.0)


def pairwise_logit_grad(
    theta,
    reference,
    sampler,
    rewards,
    *,
    loss: Literal["dpo", "ipo"] = "dpo",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    target_margin: float | None = None,
    min_reward_gap: float = 0.0,
) -> np.ndarray:
    r"""Equation (2): expected logit gradient of DPO / conservative DPO / IPO over i.i.d. pairs from ``sampler``.

    ``loss="dpo"``: :math:`\ell(h) = -(1-\epsilon)\log\sigma(\beta h) - \epsilon\log\sigma(-\beta h)`,
    :math:`\ell' = -\beta[(1-\epsilon)\sigma(-\beta h) - \epsilon\,\sigma(\beta h)]`.
    ``loss="ipo"``: :math:`\ell(h) = (h - h^*)^2` with :math:`h^* = 1/(2\beta)`
    unless ``target_margin`` is given, :math:`\ell' = 2(h-h^*)`.
    The sum runs over ordered pairs, so it is the gradient of the expected
    per-pair loss (ties count as pairs with zero loss gradient).
    """
    ref = _check_prob(reference, "reference")
    r = _check_vec(rewards, ref.size, "rewards")
    theta = _check_vec(theta, ref.size, "theta")
    P = pair_probabilities(sampler, r, min_reward_gap=min_reward_gap)
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}.")
    with np.errstate(divide="ignore"):
        u = theta - np.log(ref)  # log p - log pi_ref up to a constant that cancels in h
    h = u[:, None] - u[None, :]
    if loss == "dpo":
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must lie in [0, 0.5); got {label_smoothing}.")
        sig_neg = 0.5 * (1.0 - np.tanh(0.5 * beta * h))  # sigma(-beta h), stable
        dl = -beta * ((1.0 - label_smoothing) * sig_neg - label_smoothing * (1.0 - sig_neg))
    elif loss == "ipo":
        h_star = 1.0 / (2.0 * beta) if target_margin is None else float(target_margin)
        dl = 2.0 * (h - h_star)
    else:
        raise ValueError(f"loss must be 'dpo' or 'ipo'; got {loss!r}.")
    W = np.where(P > 0, P * dl, 0.0)
    return W.sum(axis=1) - W.sum(axis=0)


def mass_in_window(p, *, center: int, radius: int = 10) -> float:
    """Probability mass of bins ``center - radius ... center + radius`` (inclusive, clipped to the range)."""
    p = np.asarray(p, dtype=np.float64)
    lo, hi = max(0, center - radius), min(p.size, center + radius + 1)
    return float(p[lo:hi].sum())


@dataclass(frozen=True)
class RaceResult:
    """Result of :func:`mass_relocation_race`.

    Attributes
    ----------
    steps : int or None
        First step after which the window mass reaches ``threshold`` (None if never within ``max_steps``).
    window_mass : ndarray [steps_run + 1]
        Window mass before the first step and after each step.
    final_policy : ndarray [K]
    """

    steps: int | None
    window_mass: np.ndarray
    final_policy: np.ndarray


def mass_relocation_race(
    theta0,
    gradient: Callable[[np.ndarray], np.ndarray],
    *,
    center: int,
    radius: int = 10,
    threshold: float = 0.5,
    step_size: float = 1.0,
    max_steps: int = 1000,
) -> RaceResult:
    r"""Plain gradient descent on logits, :math:`\theta\leftarrow\theta - \eta\,g(\theta)`, until the window holds ``threshold`` mass.

    The notes' race (``theory_core.md`` §6.5 item 2): :math:`\theta_0 = \log\pi_{ref}`,
    :math:`\eta = 1`, window = peak ± 10 bins, threshold 0.5.
    """
    theta = np.asarray(theta0, dtype=np.float64).copy()
    masses = [mass_in_window(softmax(theta), center=center, radius=radius)]
    if masses[0] >= threshold:
        return RaceResult(0, np.asarray(masses), softmax(theta))
    for s in range(1, max_steps + 1):
        theta = theta - step_size * gradient(theta)
        m = mass_in_window(softmax(theta), center=center, radius=radius)
        masses.append(m)
        if m >= threshold:
            return RaceResult(s, np.asarray(masses), softmax(theta))
    return RaceResult(None, np.asarray(masses), softmax(theta))
