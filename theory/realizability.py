r"""When realizability suffices for off-policy evaluation: the three factors and a computable bound.

Setting
-------
Finite MDP, target policy :math:`\pi`, discount :math:`\gamma`, data
distribution :math:`\mu` over state-action pairs, linear class
:math:`\mathcal{Q}=\{\Phi w\}` with features :math:`\phi(s,a)\in\mathbb{R}^d`
(notation of :mod:`polab.theory.bellman_operators`). Only **realizability** is
assumed: :math:`Q^\pi = \Phi w^\star`. Bellman completeness
(:math:`T^\pi\mathcal{Q}\subseteq\mathcal{Q}`) is not.

The three factors (Zanette 2023, abstract; definitions reconstructed in
``shared/notes/theory_core.md`` section 5.3)
--------------------------------------------------------------------------
1. **Metric entropy** of the class. For the unit sphere of :math:`\mathbb{R}^m`,
   :math:`\log N(\varepsilon) \le m\log(1+2/\varepsilon)` (volumetric bound,
   Vershynin 2018, Cor. 4.2.13); for a ball of radius :math:`W` of a linear
   class with :math:`\|\phi\|\le L`, in sup-norm,
   :math:`\log N(\varepsilon)\le d\log(1+2WL/\varepsilon)`
   (:func:`metric_entropy_ball`).
2. **Concentrability** of the target occupancy :math:`d^\pi_\nu` with respect to
   :math:`\mu` (:func:`concentrability`): the density ratio
   :math:`C_\infty=\max_{sa} d^\pi_\nu(sa)/\mu(sa)` and the smaller
   Bellman-error transfer coefficient
   :math:`C_{BE}=\sup_u \|(I-\gamma P^\pi)\Phi u\|^2_{d^\pi_\nu} /
   \|(I-\gamma P^\pi)\Phi u\|^2_\mu \le C_\infty`, a generalised eigenvalue.
3. **Incompleteness factor** (:func:`incompleteness_factor`): with the local
   inherent Bellman error :math:`\varepsilon_{loc}(Q)=\min_{Q'\in\mathcal{Q}}
   \|Q'-T^\pi Q\|_\mu`,

   .. math:: \alpha = \sup_{Q\in\mathcal{Q},\,Q\ne T^\pi Q}
             \frac{\varepsilon_{loc}(Q)}{\|Q - T^\pi Q\|_\mu}\in[0,1].

   :math:`\alpha=0` is Bellman completeness; :math:`\alpha\le1` always (take
   :math:`Q'=Q`).

   **Realizability is required, and checked.** If :math:`Q^\pi\notin\mathcal{Q}`
   the ratio equals 1 at the TD fixed point :math:`\bar w` (:math:`\Phi\bar w=\Pi T^\pi\Phi\bar w`,
   so :math:`\Phi\bar w - T^\pi\Phi\bar w = -(I-\Pi)T^\pi\Phi\bar w`, whose norm is
   :math:`\varepsilon_{loc}`; derived here), hence :math:`\alpha=1` and every bound
   below is vacuous. :func:`incompleteness_factor` therefore checks that
   :math:`Q^\pi=(I-\gamma P^\pi)^{-1}r` lies in the span of the features and raises
   otherwise; with ``check_realizability=False`` it returns the generalised-eigenvalue
   value, which does not depend on the reward: the :math:`\alpha` the class would
   have for every *realizable* reward (:func:`incompleteness_ratio` evaluates the
   ratio at any :math:`w` with the actual reward). Under realizability, with :math:`u=w-w^\star`,
   :math:`\Phi w-T\Phi w=(I-\gamma P^\pi)\Phi u` and
   :math:`(I-\Pi)T\Phi w=\gamma(I-\Pi)P^\pi\Phi u`, so :math:`\alpha^2` is the
   largest generalised eigenvalue of :math:`(\mathcal{A},\mathcal{B})` with
   :math:`\mathcal{A}=\gamma^2(P^\pi\Phi)^\top(I-\Pi)^\top D(I-\Pi)P^\pi\Phi` and
   :math:`\mathcal{B}=((I-\gamma P^\pi)\Phi)^\top D(I-\gamma P^\pi)\Phi`.
   For contrast, the classical **inherent Bellman error** of the ball
   :math:`\{\|w\|\le W\}` is :math:`\sup_{\|w\|\le W}\varepsilon_{loc}(\Phi w)`
   (:func:`inherent_bellman_error`, computed exactly as a trust-region
   problem); it grows linearly in :math:`W` unless :math:`\alpha=0`.

The bound (derived here; :func:`realizability_bound`)
------------------------------------------------------
Data: :math:`n` i.i.d. tuples, :math:`(s_i,a_i)\sim\mu`,
:math:`s_i'\sim P(\cdot|s_i,a_i)`, rewards with mean :math:`r(s_i,a_i)` and
:math:`|r_i|\le R(s_i,a_i)`; :math:`\phi_i'=\phi^\pi(s_i')`. Let
:math:`\hat A=\frac1n\sum\phi_i(\phi_i-\gamma\phi_i')^\top`,
:math:`\hat b=\frac1n\sum\phi_i r_i` and :math:`\hat w` any solution of
:math:`\hat A\hat w=\hat b` (the empirical TD/LSTD fixed point; equivalently a
minimiser of the empirical minimax objective with value 0). With
:math:`G=\Phi^\top D\Phi` and

.. math::

    K = \max_{(s,a,s')\in\mathrm{supp}}\|G^{-1/2}\phi(s,a)\|\,
        \sqrt{\|\phi(s,a)-\gamma\phi^\pi(s')\|^2 + R(s,a)^2},\qquad
    t = \frac{K}{1-2\varepsilon}\sqrt{\frac{2\,(H(\varepsilon)+\log(2/\delta))}{n}},
    \qquad H(\varepsilon)=(2d+1)\log(1+2/\varepsilon),

with probability at least :math:`1-\delta`, simultaneously for every such :math:`\hat w`,

.. math::

    \mathrm{MSPBE}(\hat w)\le t^2(1+\|\hat w\|^2),\qquad
    \|\Phi\hat w - T^\pi\Phi\hat w\|_\mu \le \frac{t\sqrt{1+\|\hat w\|^2}}{\sqrt{1-\alpha^2}},\qquad
    |\hat v - v^\pi| \le \frac{\sqrt{C_{BE}}}{1-\gamma}\,
        \frac{t\sqrt{1+\|\hat w\|^2}}{\sqrt{1-\alpha^2}},

where :math:`v = \mathbb{E}_{s\sim\nu,a\sim\pi}Q(s,a)`.

*Proof.* (i) :math:`\mathrm{MSPBE}(w)=\|G^{-1/2}(Aw-b)\|^2` with
:math:`A=\mathbb{E}\hat A`, :math:`b=\mathbb{E}\hat b` (expand
:math:`\Pi T\Phi w-\Phi w=\Phi(G^{-1}(b+\gamma\Phi^\top DP^\pi\Phi w)-w)`).
Put :math:`X_i=G^{-1/2}\phi_i[(\phi_i-\gamma\phi'_i)^\top,\,-r_i]\in
\mathbb{R}^{d\times(d+1)}`; since :math:`\bar X(\hat w,1)=G^{-1/2}(\hat A\hat w-\hat b)=0`,
:math:`G^{-1/2}(A\hat w-b)=(\mathbb{E}X-\bar X)(\hat w,1)`, so
:math:`\sqrt{\mathrm{MSPBE}(\hat w)}\le\|\bar X-\mathbb{E}X\|\sqrt{1+\|\hat w\|^2}`.
(ii) For :math:`\varepsilon`-nets :math:`\mathcal{N},\mathcal{M}` of the unit spheres of
:math:`\mathbb{R}^{d+1}` and :math:`\mathbb{R}^d`,
:math:`\|E\|\le(1-2\varepsilon)^{-1}\max_{x\in\mathcal{N},y\in\mathcal{M}}y^\top Ex`
(Vershynin 2018, Ex. 4.4.3), with :math:`|\mathcal{N}||\mathcal{M}|\le e^{H(\varepsilon)}`.
Each :math:`y^\top X_ix\in[-K,K]`, so Hoeffding and a union bound give
:math:`\|\bar X-\mathbb{E}X\|\le t` with probability :math:`\ge1-\delta`.
(iii) By :math:`\alpha`-incompleteness and Pythagoras,
:math:`\mathrm{MSPBE}=\|\Phi w-T\Phi w\|^2_\mu-\varepsilon_{loc}^2\ge(1-\alpha^2)
\|\Phi w-T\Phi w\|^2_\mu`. (iv) Telescoping and Cauchy-Schwarz:
:math:`|\hat v-v|=\frac{1}{1-\gamma}|\mathbb{E}_{d^\pi_\nu}(\Phi\hat w-T\Phi\hat w)|
\le\frac{1}{1-\gamma}\|\cdot\|_{d^\pi_\nu}\le\frac{\sqrt{C_{BE}}}{1-\gamma}\|\cdot\|_\mu`. ∎

The inherent-Bellman-error analogue from the same steps, without (iii):
:math:`\|\Phi\hat w-T\Phi\hat w\|^2_\mu=\mathrm{MSPBE}+\varepsilon_{loc}^2\le
t^2(1+W^2)+\mathrm{IBE}_W^2` for :math:`\|\hat w\|\le W`
(:func:`inherent_bellman_error_bound`); its :math:`n\to\infty` limit
:math:`\sqrt{C_{BE}}\,\mathrm{IBE}_W/(1-\gamma)` does not vanish.

What is confirmed, reconstructed and derived
--------------------------------------------
* **Confirmed** (paper abstract, per the project notes): only realizability is
  assumed; the guarantee has no inherent-Bellman-error term; it depends on
  metric entropy, a concentrability coefficient and a Bellman-incompleteness
  measure; incompleteness enters as an amplification :math:`1/(1-\alpha)`; it
  applies to the minimax minimiser and to the TD fixed point.
* **Reconstructed, unconfirmed** (notes 5.3, recalled from the paper): the
  definition of :math:`\alpha` through the local inherent Bellman error,
  which this module adopts. The paper's exact constants, the power of
  :math:`1/(1-\alpha)`, the order of its statistical term and its exact
  concentrability definition were not available.
* **Derived here** (and checked in :mod:`polab.proofs_checks.realizability_checks`):
  the generalised-eigenvalue formulas for :math:`\alpha` and :math:`C_{BE}`,
  the whole bound above with its constants, and the form of the amplification.
  **What the code proves**: the amplification :math:`1/\sqrt{1-\alpha^2}`
  (``IncompletenessFactor.amplification``, ``RealizabilityBound.value_error``).
  **The paper's statement** (abstract): :math:`1/(1-\alpha)`
  (``amplification_paper``, ``RealizabilityBound.value_error_paper_form``). Since
  :math:`(1-\alpha)^2\le1-\alpha^2` on :math:`[0,1]`, :math:`1/(1-\alpha)\ge1/\sqrt{1-\alpha^2}`:
  the bound with the paper's factor is implied by the one proved here (it is
  looser by :math:`\sqrt{(1+\alpha)/(1-\alpha)}`), never the other way round.
  In this derivation the error is amplified by :math:`1/\sqrt{1-\alpha^2}`
  (:math:`\approx 1/\sqrt{2(1-\alpha)}` as :math:`\alpha\to1`), so the samples
  needed for a given accuracy grow like :math:`1/(1-\alpha^2)\approx
  1/(2(1-\alpha))`: a :math:`1/(1-\alpha)` amplification of the **sample
  complexity**, consistent with the abstract's wording. The two-state family of
  :mod:`polab.proofs_checks.finite_mdp_families` shows this power is attained by
  LSTD, so the error itself does not grow like :math:`1/(1-\alpha)` there.
  This is not the paper's theorem: it is a fast-rate (:math:`n^{-1/2}`) bound
  specific to linear classes and TD fixed points.

References
----------
Zanette, "When is Realizability Sufficient for Off-Policy Reinforcement
Learning?", ICML 2023, arXiv 2211.05311.
Vershynin, "High-Dimensional Probability", Cambridge University Press, 2018.
Antos, Szepesvári, Munos, "Learning near-optimal policies with
Bellman-residual minimization based fitted policy iteration and a single
sample path", Machine Learning 71, 2008 (minimax / modified Bellman residual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh
from scipy.optimize import brentq

from .bellman_operators import (
    FiniteMDP,
    check_distribution,
    check_policy,
    next_policy_features,
    occupancy,
    policy_transition_matrix,
    q_values,
    weighted_projection,
)

__all__ = [
    "IncompletenessFactor",
    "incompleteness_factor",
    "incompleteness_ratio",
    "realizability_residual",
    "Concentrability",
    "concentrability",
    "metric_entropy_ball",
    "metric_entropy_sphere_pair",
    "feature_scale",
    "operator_deviation",
    "RealizabilityBound",
    "realizability_bound",
    "InherentBellmanError",
    "inherent_bellman_error",
    "inherent_bellman_error_bound",
    "trivial_value_error_bound",
    "projection_radius",
]


@dataclass(frozen=True)
class IncompletenessFactor:
    """Result of :func:`incompleteness_factor`.

    Attributes
    ----------
    alpha : float
        :math:`\\alpha\\in[0,1]`.
    direction : ndarray, shape [d]
        A maximising direction :math:`u` (:math:`w = w^\\star + u` attains :math:`\\alpha`), unit norm.
    eigenvalues : ndarray, shape [d]
        All generalised eigenvalues :math:`\\alpha^2`-candidates, ascending.
    amplification : float
        :math:`1/\\sqrt{1-\\alpha^2}` (inf at :math:`\\alpha=1`), the factor of the derived bound
        (what this module proves).
    amplification_paper : float
        :math:`1/(1-\\alpha)`, the paper's stated amplification (abstract); :math:`\\ge` ``amplification``.
    realizability_residual : float
        :math:`\\max|Q^\\pi-\\Phi\\hat w|/\\max(1,\\max|Q^\\pi|)` for the least-squares :math:`\\hat w`
        (nan when the check was skipped).
    """

    alpha: float
    direction: np.ndarray
    eigenvalues: np.ndarray
    amplification: float
    amplification_paper: float = math.nan
    realizability_residual: float = math.nan


def _features(features, mdp: FiniteMDP) -> np.ndarray:
    phi = np.asarray(features, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] != mdp.num_pairs:
        raise ValueError(f"features must have shape [S*A, d] = [{mdp.num_pairs}, d]; got {phi.shape}.")
    return phi


def _bellman_gram(phi, P, m, gamma) -> np.ndarray:
    psi = phi - gamma * (P @ phi)
    return psi.T @ (m[:, None] * psi)


def realizability_residual(features, mdp: FiniteMDP, policy, *, gamma: float) -> float:
    """Relative sup-norm distance of :math:`Q^\\pi` from the span of the features (0 when realizable).

    :math:`\\max_{sa}|Q^\\pi-\\Phi\\hat w|/\\max(1,\\max|Q^\\pi|)` with :math:`\\hat w` the unweighted
    least-squares fit over all state-action pairs (realizability is a statement about every
    pair, not only those :math:`\\mu` charges). Computed exactly from the MDP.
    """
    phi = _features(features, mdp)
    q = q_values(mdp, policy, gamma=gamma)
    w, *_ = np.linalg.lstsq(phi, q, rcond=None)
    return float(np.max(np.abs(q - phi @ w)) / max(1.0, float(np.max(np.abs(q)))))


def incompleteness_ratio(w, features, mdp: FiniteMDP, policy, mu, *, gamma: float) -> float:
    """The ratio that defines :math:`\\alpha`, at :math:`Q=\\Phi w`, with the MDP's actual reward.

    :math:`\\varepsilon_{loc}(\\Phi w)/\\|\\Phi w-T^\\pi\\Phi w\\|_\\mu` (nan where :math:`\\Phi w=T^\\pi\\Phi w`).
    Needs no realizability; at the TD fixed point of a non-realizable reward it equals 1.
    """
    phi = _features(features, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    q = phi @ np.asarray(w, dtype=np.float64)
    tq = mdp.rewards.reshape(-1) + gamma * (policy_transition_matrix(mdp, policy) @ q)
    loc = tq - weighted_projection(phi, m) @ tq
    den = float(np.sqrt(m @ (q - tq) ** 2))
    return float(np.sqrt(m @ loc**2)) / den if den > 0 else math.nan


def incompleteness_factor(features, mdp: FiniteMDP, policy, mu, *, gamma: float, check_realizability: bool = True,
                          realizability_tolerance: float = 1e-8) -> IncompletenessFactor:
    """Incompleteness factor :math:`\\alpha` of a linear class by a generalised eigenproblem.

    :math:`\\alpha^2=\\lambda_{\\max}(\\mathcal{A},\\mathcal{B})` (module docstring). Valid under
    realizability; then :math:`\\alpha` is the sup over the whole span, so it is also
    a valid (conservative) value for any ball of the class. Realizability is checked
    (:func:`realizability_residual` at most ``realizability_tolerance``): for a
    non-realizable reward the defining ratio reaches 1 at the TD fixed point, so the
    eigenvalue would understate it; such input raises unless
    ``check_realizability=False``, which returns the value the class has for every
    realizable reward (the eigenproblem does not involve the reward).

    Parameters
    ----------
    features : array, shape [S*A, d]
    mdp : FiniteMDP
    policy : array, shape [S, A]
    mu : array, shape [S*A]
        Data distribution; :math:`(I-\\gamma P^\\pi)\\Phi` must have full column rank on its support.
    gamma : float in [0, 1)
    check_realizability : bool
        Raise when :math:`Q^\\pi` is not in the span of the features (default).
    realizability_tolerance : float
        Relative sup-norm tolerance of the check (float64 round-off of the solve is ~1e-14).

    Returns
    -------
    IncompletenessFactor
    """
    phi = _features(features, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    q_resid = math.nan
    if check_realizability:
        q_resid = realizability_residual(phi, mdp, policy, gamma=gamma)
        if not q_resid <= realizability_tolerance:
            raise ValueError(
                f"the reward is not realizable by these features: Q^pi is at relative sup-norm distance {q_resid:.3g} "
                f"from their span (tolerance {realizability_tolerance:g}). The incompleteness factor is defined under "
                "realizability; for this reward the ratio eps_loc(Q)/||Q - T Q|| equals 1 at the TD fixed point, so "
                "alpha = 1 and the bound is vacuous. Use features that represent Q^pi, or pass "
                "check_realizability=False for the alpha the class has for realizable rewards."
            )
    P = policy_transition_matrix(mdp, policy)
    Pphi = P @ phi
    resid = Pphi - weighted_projection(phi, m) @ Pphi
    A_ = gamma**2 * resid.T @ (m[:, None] * resid)
    B_ = _bellman_gram(phi, P, m, gamma)
    _require_pd(B_, "((I - gamma P) Phi)^T D ((I - gamma P) Phi)")
    ev, vec = eigh((A_ + A_.T) / 2, (B_ + B_.T) / 2)
    top = float(np.clip(ev[-1], 0.0, 1.0))
    u = vec[:, -1] / np.linalg.norm(vec[:, -1])
    alpha = math.sqrt(top)
    amp = math.inf if top >= 1.0 else 1.0 / math.sqrt(1.0 - top)
    amp_paper = math.inf if alpha >= 1.0 else 1.0 / (1.0 - alpha)
    return IncompletenessFactor(alpha=alpha, direction=u, eigenvalues=ev, amplification=amp,
                                amplification_paper=amp_paper, realizability_residual=q_resid)


@dataclass(frozen=True)
class Concentrability:
    """Result of :func:`concentrability`.

    Attributes
    ----------
    c_infinity : float
        :math:`\\max_{sa} d^\\pi_\\nu(sa)/\\mu(sa)` (inf when :math:`d^\\pi_\\nu` charges a pair with :math:`\\mu=0`).
    c_bellman : float
        Bellman-error transfer coefficient :math:`C_{BE}\\le C_\\infty`.
    occupancy : ndarray, shape [S*A]
        :math:`d^\\pi_\\nu`.
    """

    c_infinity: float
    c_bellman: float
    occupancy: np.ndarray


def concentrability(features, mdp: FiniteMDP, policy, mu, initial, *, gamma: float) -> Concentrability:
    """Concentrability of the target occupancy with respect to the data distribution.

    :math:`C_{BE}=\\lambda_{\\max}(\\Psi^\\top D_{d^\\pi}\\Psi,\\ \\Psi^\\top D_\\mu\\Psi)`,
    :math:`\\Psi=(I-\\gamma P^\\pi)\\Phi`; it is :math:`\\le C_\\infty` because
    :math:`D_{d^\\pi}\\preceq C_\\infty D_\\mu`.

    Parameters
    ----------
    features : array, shape [S*A, d]
    mdp : FiniteMDP
    policy : array, shape [S, A]
    mu : array, shape [S*A]
    initial : array, shape [S]
        Start-state distribution :math:`\\nu`.
    gamma : float in [0, 1)
    """
    phi = _features(features, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    d = occupancy(mdp, policy, initial, gamma=gamma)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d > 0, d / np.where(m > 0, m, 0.0), 0.0)
    c_inf = float(np.max(ratio))
    P = policy_transition_matrix(mdp, policy)
    B_mu = _bellman_gram(phi, P, m, gamma)
    _require_pd(B_mu, "((I - gamma P) Phi)^T D_mu ((I - gamma P) Phi)")
    B_d = _bellman_gram(phi, P, d, gamma)
    c_be = float(eigh((B_d + B_d.T) / 2, (B_mu + B_mu.T) / 2, eigvals_only=True)[-1])
    return Concentrability(c_infinity=c_inf, c_bellman=max(c_be, 0.0), occupancy=d)


def metric_entropy_ball(epsilon: float, *, dim: int, radius: float = 1.0, feature_norm: float = 1.0) -> float:
    """:math:`d\\log(1+2WL/\\varepsilon)`: log covering number of :math:`\\{\\Phi w:\\|w\\|\\le W\\}`
    in sup-norm when :math:`\\|\\phi\\|\\le L` (volumetric bound; with :math:`W=L=1`, the unit ball
    and sphere of :math:`\\mathbb{R}^d`)."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive; got {epsilon}.")
    return dim * math.log1p(2.0 * radius * feature_norm / epsilon)


def metric_entropy_sphere_pair(epsilon: float, *, dim: int) -> float:
    """:math:`H(\\varepsilon)=(2d+1)\\log(1+2/\\varepsilon)`: log size of the product of
    :math:`\\varepsilon`-nets of the unit spheres of :math:`\\mathbb{R}^d` and
    :math:`\\mathbb{R}^{d+1}` used in the bound."""
    return metric_entropy_ball(epsilon, dim=dim) + metric_entropy_ball(epsilon, dim=dim + 1)


def feature_scale(features, mdp: FiniteMDP, policy, mu, *, gamma: float, reward_noise: float = 0.0) -> float:
    """The constant :math:`K` of the bound (module docstring), by enumeration of the support.

    Parameters
    ----------
    reward_noise : float >= 0
        Bound on :math:`|r_i - r(s_i,a_i)|`, so :math:`R(s,a)=|r(s,a)|+` ``reward_noise``.
    """
    phi = _features(features, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    G = phi.T @ (m[:, None] * phi)
    _require_pd(G, "features^T diag(mu) features")
    Ginv = np.linalg.inv(G)
    lev = np.sqrt(np.einsum("id,de,ie->i", phi, Ginv, phi))  # ||G^{-1/2} phi(s,a)||
    phi_pi = next_policy_features(phi, policy, mdp)  # [S, d]
    S, A = mdp.num_states, mdp.num_actions
    R = np.abs(mdp.rewards.reshape(-1)) + reward_noise
    # ||phi(sa) - gamma phi_pi(s')||^2 for every (sa, s')
    diff2 = ((phi[:, None, :] - gamma * phi_pi[None, :, :]) ** 2).sum(-1)  # [SA, S]
    support = (m[:, None] > 0) & (mdp.transitions.reshape(S * A, S) > 0)
    val = lev[:, None] * np.sqrt(diff2 + R[:, None] ** 2)
    return float(np.max(np.where(support, val, 0.0)))


def operator_deviation(num_samples: int, *, dim: int, scale: float, delta: float,
                       epsilons=None) -> tuple[float, float, float]:
    """The deviation :math:`t` of the bound, minimised over a fixed grid of net scales.

    The grid does not depend on the data, so taking the smallest :math:`t` over it is legitimate.

    Returns
    -------
    (t, epsilon, metric_entropy) : tuple of float
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}.")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1); got {delta}.")
    grid = np.linspace(0.02, 0.45, 44) if epsilons is None else np.asarray(epsilons, dtype=np.float64)
    best = (math.inf, math.nan, math.nan)
    for eps in grid:
        H = metric_entropy_sphere_pair(float(eps), dim=dim)
        t = scale / (1.0 - 2.0 * eps) * math.sqrt(2.0 * (H + math.log(2.0 / delta)) / num_samples)
        if t < best[0]:
            best = (t, float(eps), H)
    return best


@dataclass(frozen=True)
class RealizabilityBound:
    """Result of :func:`realizability_bound` (all bounds hold together with probability >= 1 - delta).

    Attributes
    ----------
    value_error : float
        Bound on :math:`|\\hat v - v^\\pi|`.
    bellman_error : float
        Bound on :math:`\\|\\Phi\\hat w - T^\\pi\\Phi\\hat w\\|_\\mu`.
    mspbe : float
        Bound on :math:`\\mathrm{MSPBE}(\\hat w)`.
    deviation : float
        :math:`t`.
    net_scale, metric_entropy : float
        The chosen :math:`\\varepsilon` and :math:`H(\\varepsilon)`.
    amplification : float
        :math:`1/\\sqrt{1-\\alpha^2}` (proved here).
    alpha, concentrability, scale, weight_norm, gamma, delta : float
    num_samples, dim : int
    amplification_paper : float
        :math:`1/(1-\\alpha)`, the paper's stated factor.
    value_error_paper_form : float
        ``value_error`` with the paper's factor in place of the proved one (implied by it, looser).
    """

    value_error: float
    bellman_error: float
    mspbe: float
    deviation: float
    net_scale: float
    metric_entropy: float
    amplification: float
    alpha: float
    concentrability: float
    scale: float
    weight_norm: float
    gamma: float
    delta: float
    num_samples: int
    dim: int
    amplification_paper: float = math.nan
    value_error_paper_form: float = math.nan


def realizability_bound(num_samples: int, *, weight_norm: float, alpha: float, concentrability: float,
                        scale: float, dim: int, gamma: float, delta: float) -> RealizabilityBound:
    """Value-error bound for the empirical TD fixed point under realizability (module docstring).

    Parameters
    ----------
    num_samples : int
        :math:`n`, i.i.d. transitions from :math:`\\mu`.
    weight_norm : float
        :math:`\\|\\hat w\\|` (data-dependent; the bound holds for every fixed point at once),
        or a radius :math:`W` with :math:`\\|\\hat w\\|\\le W`.
    alpha : float in [0, 1]
        From :func:`incompleteness_factor`.
    concentrability : float
        :math:`C_{BE}` (or the larger :math:`C_\\infty`) from :func:`concentrability`.
    scale : float
        :math:`K` from :func:`feature_scale`.
    dim : int
    gamma : float in [0, 1)
    delta : float in (0, 1)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}.")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must lie in [0, 1); got {gamma}.")
    t, eps, H = operator_deviation(num_samples, dim=dim, scale=scale, delta=delta)
    amp = math.inf if alpha >= 1.0 else 1.0 / math.sqrt(1.0 - alpha**2)
    mspbe = t**2 * (1.0 + weight_norm**2)
    be = math.sqrt(mspbe) * amp
    ve = math.sqrt(concentrability) * be / (1.0 - gamma)
    amp_paper = math.inf if alpha >= 1.0 else 1.0 / (1.0 - alpha)
    ve_paper = math.sqrt(concentrability) * math.sqrt(mspbe) * amp_paper / (1.0 - gamma)
    return RealizabilityBound(
        value_error=ve, bellman_error=be, mspbe=mspbe, deviation=t, net_scale=eps, metric_entropy=H,
        amplification=amp, alpha=alpha, concentrability=concentrability, scale=scale,
        weight_norm=weight_norm, gamma=gamma, delta=delta, num_samples=num_samples, dim=dim,
        amplification_paper=amp_paper, value_error_paper_form=ve_paper,
    )


@dataclass(frozen=True)
class InherentBellmanError:
    """Result of :func:`inherent_bellman_error`.

    Attributes
    ----------
    value : float
        :math:`\\mathrm{IBE}_W=\\sup_{\\|w\\|\\le W}\\|(I-\\Pi)T^\\pi\\Phi w\\|_\\mu`.
    maximiser : ndarray, shape [d]
    radius : float
    """

    value: float
    maximiser: np.ndarray
    radius: float


def inherent_bellman_error(features, mdp: FiniteMDP, policy, mu, *, gamma: float, radius: float) -> InherentBellmanError:
    """Classical inherent Bellman error of the ball :math:`\\{\\Phi w:\\|w\\|\\le W\\}`, exactly.

    Maximises the convex quadratic :math:`f(w)=\\|c+Mw\\|^2_\\mu`, :math:`c=(I-\\Pi)r`,
    :math:`M=\\gamma(I-\\Pi)P^\\pi\\Phi`, over the ball: the trust-region problem for
    :math:`-f`. With :math:`H=M^\\top DM=V\\Lambda V^\\top`, :math:`g=M^\\top Dc`, the
    maximiser is :math:`w=(\\lambda I-H)^{-1}g` with :math:`\\lambda>\\lambda_{\\max}(H)` and
    :math:`\\|w\\|=W` (secular equation, solved by Brent's method), or, in the "hard case"
    where :math:`g` is orthogonal to the top eigenspace, :math:`w_0+\\tau v_{\\max}`
    (Moré & Sorensen 1983). Both candidates are evaluated and the larger is kept.
    """
    phi = _features(features, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    if radius < 0:
        raise ValueError(f"radius must be >= 0; got {radius}.")
    P = policy_transition_matrix(mdp, policy)
    Pi = weighted_projection(phi, m)
    r = mdp.rewards.reshape(-1)
    c = r - Pi @ r
    M = gamma * (P @ phi - Pi @ (P @ phi))
    H = M.T @ (m[:, None] * M)
    g = M.T @ (m * c)
    const = float(c @ (m * c))

    def f(w):
        return float(w @ H @ w + 2 * g @ w + const)

    d = phi.shape[1]
    if radius == 0:
        w0 = np.zeros(d)
        return InherentBellmanError(value=math.sqrt(max(f(w0), 0.0)), maximiser=w0, radius=radius)
    lam, V = np.linalg.eigh((H + H.T) / 2)
    gt = V.T @ g
    lmax = lam[-1]
    top = lam >= lmax - 1e-12 * max(1.0, abs(lmax))
    cands = []
    w0 = V[:, ~top] @ (gt[~top] / (lmax - lam[~top])) if np.any(~top) else np.zeros(d)
    n0 = float(np.linalg.norm(w0))
    if n0 <= radius:
        tau = math.sqrt(radius**2 - n0**2)
        cands += [w0 + tau * V[:, -1], w0 - tau * V[:, -1]]
    gtop = float(np.linalg.norm(gt[top]))
    if gtop > 0:
        def norm_gap(lmb):
            return float(np.linalg.norm(gt / (lmb - lam))) - radius

        lo = lmax + gtop / (2 * radius)
        hi = lmax + float(np.linalg.norm(g)) / radius
        if norm_gap(hi) > 0:  # rounding; push until the norm drops below the radius
            hi = lmax + 2 * float(np.linalg.norm(g)) / radius
        lmb = brentq(norm_gap, lo, hi, xtol=1e-15 * max(1.0, hi), rtol=4 * np.finfo(float).eps, maxiter=500)
        cands.append(V @ (gt / (lmb - lam)))
    if not cands:  # g == 0 and hard case impossible cannot happen; keep a safe fallback
        cands.append(radius * V[:, -1])
    vals = [f(w) for w in cands]
    i = int(np.argmax(vals))
    return InherentBellmanError(value=math.sqrt(max(vals[i], 0.0)), maximiser=cands[i], radius=radius)


def inherent_bellman_error_bound(num_samples: int, *, inherent_error: float, radius: float, concentrability: float,
                                 scale: float, dim: int, gamma: float, delta: float) -> float:
    """The inherent-Bellman-error analogue of :func:`realizability_bound` (module docstring):
    :math:`\\frac{\\sqrt{C}}{1-\\gamma}\\sqrt{t^2(1+W^2)+\\mathrm{IBE}_W^2}`, valid for :math:`\\|\\hat w\\|\\le W`
    whatever :math:`\\alpha`; it does not vanish as :math:`n\\to\\infty`."""
    t, _, _ = operator_deviation(num_samples, dim=dim, scale=scale, delta=delta)
    return math.sqrt(concentrability) / (1.0 - gamma) * math.sqrt(t**2 * (1.0 + radius**2) + inherent_error**2)


def trivial_value_error_bound(features, mdp: FiniteMDP, policy, initial, *, gamma: float, radius: float) -> float:
    """The bound that needs no data: :math:`|\\hat v - v^\\pi|\\le W\\,\\|\\mathbb{E}_{\\nu,\\pi}\\phi\\| + \\max|r|/(1-\\gamma)`
    for :math:`\\|\\hat w\\|\\le W`. A bound at or above it is vacuous."""
    phi = _features(features, mdp)
    pi = check_policy(policy, mdp)
    nu = check_distribution(initial, mdp.num_states, name="initial")
    start_feat = (nu[:, None] * pi).reshape(-1) @ phi
    return float(radius * np.linalg.norm(start_feat) + np.max(np.abs(mdp.rewards)) / (1.0 - gamma))


def projection_radius(features, mdp: FiniteMDP, policy, mu, *, gamma: float, radius: float) -> float:
    """:math:`\\|G^{-1}b\\|+\\gamma\\|G^{-1}\\Phi^\\top DP^\\pi\\Phi\\|W`: a radius containing the
    :math:`\\mu`-projection coefficients of :math:`T^\\pi\\Phi w` for every :math:`\\|w\\|\\le W`."""
    phi = _features(features, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    P = policy_transition_matrix(mdp, policy)
    G = phi.T @ (m[:, None] * phi)
    b = phi.T @ (m * mdp.rewards.reshape(-1))
    C = phi.T @ (m[:, None] * (P @ phi))
    return float(np.linalg.norm(np.linalg.solve(G, b)) + gamma * np.linalg.norm(np.linalg.solve(G, C), 2) * radius)


def _require_pd(M: np.ndarray, name: str) -> None:
    ev = np.linalg.eigvalsh((M + M.T) / 2)
    if ev[0] <= 1e-12 * max(1.0, ev[-1]):
        raise ValueError(
            f"{name} (shape {M.shape}) is singular (smallest eigenvalue {ev[0]:.3g}): the features are linearly "
            f"dependent on the support of mu. Drop dependent features or give mu more support."
        )
