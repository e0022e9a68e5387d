r"""Exact Bellman evaluation operators, projections and projected Bellman errors for finite MDPs.

Everything here is exact linear algebra in float64 on a finite MDP with
states :math:`s\in\{0,\dots,S-1\}`, actions :math:`a\in\{0,\dots,A-1\}` and
state-action pairs flattened as ``sa = s * A + a``.

Definitions (standard; see e.g. Sutton & Barto 2018, ch. 9 and 11)
--------------------------------------------------------------------
* Policy transition matrix :math:`P^\pi[(s,a),(s',a')] = P(s'\mid s,a)\,\pi(a'\mid s')`.
* Bellman evaluation operator :math:`T^\pi Q = r + \gamma P^\pi Q`, whose unique
  fixed point is :math:`Q^\pi = (I-\gamma P^\pi)^{-1} r`.
* Discounted occupancy from a start-state distribution :math:`\nu`:
  :math:`d^\pi_\nu = (1-\gamma)\,(\nu\otimes\pi)^\top (I-\gamma P^\pi)^{-1}`, a
  distribution over state-action pairs.
* With data distribution :math:`\mu` over state-action pairs,
  :math:`D=\mathrm{diag}(\mu)` and features :math:`\Phi\in\mathbb{R}^{SA\times d}`,
  the :math:`\mu`-weighted projection onto :math:`\mathrm{span}\,\Phi` is
  :math:`\Pi = \Phi(\Phi^\top D\Phi)^{-1}\Phi^\top D`.
* Mean squared projected Bellman error (MSPBE)
  :math:`\|\Pi T^\pi\Phi w - \Phi w\|_\mu^2` and Bellman error
  :math:`\|\Phi w - T^\pi\Phi w\|_\mu`.

Two identities, derived here and checked numerically in
:mod:`polab.proofs_checks.realizability_checks` (float64, 1e-10 relative):

1. **Minimax objective = MSPBE** (Pythagoras in :math:`L^2(\mu)`):
   :math:`\|\Phi w - T\Phi w\|_\mu^2 - \min_{w'}\|\Phi w' - T\Phi w\|_\mu^2
   = \|\Pi T\Phi w - \Phi w\|_\mu^2`, because :math:`\Phi w - T\Phi w =
   (\Phi w - \Pi T\Phi w) - (I-\Pi)T\Phi w` with the two parts
   :math:`\mu`-orthogonal and the minimum equal to :math:`\|(I-\Pi)T\Phi w\|_\mu^2`.
   :func:`minimax_objective` computes the left side by an independent least
   squares, :func:`projected_bellman_error` the right side.
2. **Telescoping (value error from Bellman residual):** for any :math:`Q`,
   :math:`Q - Q^\pi = (I-\gamma P^\pi)^{-1}(Q - T^\pi Q)`, because
   :math:`Q - T^\pi Q = (I-\gamma P^\pi)Q - r = (I-\gamma P^\pi)(Q-Q^\pi)`.
   Hence :math:`\mathbb{E}_{\nu,\pi}[Q - Q^\pi] = \frac{1}{1-\gamma}\,
   \mathbb{E}_{d^\pi_\nu}[Q - T^\pi Q]` (:func:`value_error_from_residual`).

References
----------
Sutton, Barto, "Reinforcement Learning: An Introduction", 2nd ed., MIT Press, 2018.
Zanette, "When is Realizability Sufficient for Off-Policy Reinforcement
Learning?", ICML 2023, arXiv 2211.05311 (the setting this module serves).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FiniteMDP",
    "check_policy",
    "check_distribution",
    "policy_transition_matrix",
    "next_policy_features",
    "q_values",
    "bellman_operator",
    "occupancy",
    "policy_value",
    "weighted_projection",
    "bellman_residual",
    "bellman_error_norm",
    "projected_bellman_error",
    "local_inherent_bellman_error",
    "minimax_objective",
    "value_error_from_residual",
]


@dataclass(frozen=True)
class FiniteMDP:
    """A finite MDP: transition kernel and expected rewards.

    Attributes
    ----------
    transitions : ndarray, shape [S, A, S]
        ``transitions[s, a, s2] = P(s2 | s, a)``; rows sum to one.
    rewards : ndarray, shape [S, A]
        Expected reward :math:`r(s, a)`.
    """

    transitions: np.ndarray
    rewards: np.ndarray

    def __post_init__(self):
        P = np.asarray(self.transitions, dtype=np.float64)
        r = np.asarray(self.rewards, dtype=np.float64)
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"transitions must have shape [S, A, S]; got {P.shape}.")
        if r.shape != P.shape[:2]:
            raise ValueError(f"rewards must have shape [S, A] = {P.shape[:2]}; got {r.shape}.")
        if not (np.all(np.isfinite(P)) and np.all(np.isfinite(r))):
            raise ValueError("transitions and rewards must be finite.")
        if np.any(P < 0) or not np.allclose(P.sum(axis=2), 1.0, rtol=0, atol=1e-10):
            raise ValueError("transitions[s, a, :] must be a probability vector for every (s, a) (non-negative, sums to 1).")
        object.__setattr__(self, "transitions", P)
        object.__setattr__(self, "rewards", r)

    @property
    def num_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def num_actions(self) -> int:
        return self.transitions.shape[1]

    @property
    def num_pairs(self) -> int:
        return self.num_states * self.num_actions


def check_policy(policy, mdp: FiniteMDP) -> np.ndarray:
    """Return ``policy`` as a float64 [S, A] array of action probabilities, or raise."""
    pi = np.asarray(policy, dtype=np.float64)
    if pi.shape != (mdp.num_states, mdp.num_actions):
        raise ValueError(f"policy must have shape [S, A] = {(mdp.num_states, mdp.num_actions)}; got {pi.shape}.")
    if np.any(pi < 0) or not np.allclose(pi.sum(axis=1), 1.0, rtol=0, atol=1e-10):
        raise ValueError("policy[s, :] must be a probability vector for every state.")
    return pi


def check_distribution(p, size: int, *, name: str) -> np.ndarray:
    """Return ``p`` as a float64 probability vector of length ``size``, or raise."""
    q = np.asarray(p, dtype=np.float64).reshape(-1)
    if q.shape != (size,):
        raise ValueError(f"{name} must have {size} entries; got shape {np.shape(p)}.")
    if np.any(q < 0) or not np.isclose(q.sum(), 1.0, rtol=0, atol=1e-10):
        raise ValueError(f"{name} must be a probability vector (non-negative, sums to 1); it sums to {q.sum()}.")
    return q


def _check_features(features, mdp: FiniteMDP) -> np.ndarray:
    phi = np.asarray(features, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] != mdp.num_pairs:
        raise ValueError(f"features must have shape [S*A, d] = [{mdp.num_pairs}, d]; got {phi.shape}.")
    return phi


def policy_transition_matrix(mdp: FiniteMDP, policy) -> np.ndarray:
    """:math:`P^\\pi` of shape [S*A, S*A]: :math:`P(s'|s,a)\\,\\pi(a'|s')`."""
    pi = check_policy(policy, mdp)
    S, A = mdp.num_states, mdp.num_actions
    return (mdp.transitions[:, :, :, None] * pi[None, None, :, :]).reshape(S * A, S * A)


def next_policy_features(features, policy, mdp: FiniteMDP) -> np.ndarray:
    """Per state, :math:`\\phi^\\pi(s) = \\sum_a \\pi(a|s)\\phi(s,a)`; shape [S, d]."""
    phi = _check_features(features, mdp)
    pi = check_policy(policy, mdp)
    return np.einsum("sa,sad->sd", pi, phi.reshape(mdp.num_states, mdp.num_actions, -1))


def q_values(mdp: FiniteMDP, policy, *, gamma: float) -> np.ndarray:
    """:math:`Q^\\pi = (I - \\gamma P^\\pi)^{-1} r`, shape [S*A]."""
    _check_gamma(gamma)
    P = policy_transition_matrix(mdp, policy)
    return np.linalg.solve(np.eye(mdp.num_pairs) - gamma * P, mdp.rewards.reshape(-1))


def bellman_operator(q, mdp: FiniteMDP, policy, *, gamma: float) -> np.ndarray:
    """:math:`T^\\pi q = r + \\gamma P^\\pi q` for ``q`` of shape [S*A] or [S*A, k]."""
    _check_gamma(gamma)
    q = np.asarray(q, dtype=np.float64)
    P = policy_transition_matrix(mdp, policy)
    r = mdp.rewards.reshape(-1)
    return (r if q.ndim == 1 else r[:, None]) + gamma * (P @ q)


def occupancy(mdp: FiniteMDP, policy, initial, *, gamma: float) -> np.ndarray:
    """Discounted state-action occupancy :math:`d^\\pi_\\nu`, shape [S*A], sums to one."""
    _check_gamma(gamma)
    pi = check_policy(policy, mdp)
    nu = check_distribution(initial, mdp.num_states, name="initial")
    start = (nu[:, None] * pi).reshape(-1)
    P = policy_transition_matrix(mdp, pi)
    return (1.0 - gamma) * np.linalg.solve((np.eye(mdp.num_pairs) - gamma * P).T, start)


def policy_value(q, policy, initial, mdp: FiniteMDP) -> float:
    """:math:`\\mathbb{E}_{s\\sim\\nu, a\\sim\\pi}\\, q(s,a)` for ``q`` of shape [S*A]."""
    pi = check_policy(policy, mdp)
    nu = check_distribution(initial, mdp.num_states, name="initial")
    return float((nu[:, None] * pi).reshape(-1) @ np.asarray(q, dtype=np.float64))


def weighted_projection(features, mu) -> np.ndarray:
    """:math:`\\Pi = \\Phi(\\Phi^\\top D\\Phi)^{-1}\\Phi^\\top D`, shape [S*A, S*A].

    Raises if :math:`\\Phi^\\top D\\Phi` is singular (features linearly dependent on the support of ``mu``).
    """
    phi = np.asarray(features, dtype=np.float64)
    m = check_distribution(mu, phi.shape[0], name="mu")
    G = phi.T @ (m[:, None] * phi)
    _check_pd(G, name="features^T diag(mu) features", fix="drop features that are linearly dependent on the support of mu")
    return phi @ np.linalg.solve(G, phi.T * m[None, :])


def bellman_residual(w, features, mdp: FiniteMDP, policy, *, gamma: float) -> np.ndarray:
    """:math:`\\Phi w - T^\\pi\\Phi w`, shape [S*A]."""
    phi = _check_features(features, mdp)
    q = phi @ np.asarray(w, dtype=np.float64)
    return q - bellman_operator(q, mdp, policy, gamma=gamma)


def bellman_error_norm(w, features, mdp: FiniteMDP, policy, mu, *, gamma: float) -> float:
    """:math:`\\|\\Phi w - T^\\pi\\Phi w\\|_\\mu`."""
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    res = bellman_residual(w, features, mdp, policy, gamma=gamma)
    return float(np.sqrt(m @ res**2))


def projected_bellman_error(w, features, mdp: FiniteMDP, policy, mu, *, gamma: float) -> float:
    """MSPBE :math:`\\|\\Pi T^\\pi\\Phi w - \\Phi w\\|_\\mu^2` (squared, as usual)."""
    phi = _check_features(features, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    q = phi @ np.asarray(w, dtype=np.float64)
    diff = weighted_projection(phi, m) @ bellman_operator(q, mdp, policy, gamma=gamma) - q
    return float(m @ diff**2)


def local_inherent_bellman_error(w, features, mdp: FiniteMDP, policy, mu, *, gamma: float) -> float:
    """:math:`\\varepsilon_{loc}(\\Phi w) = \\min_{w'}\\|\\Phi w' - T^\\pi\\Phi w\\|_\\mu = \\|(I-\\Pi)T^\\pi\\Phi w\\|_\\mu`."""
    phi = _check_features(features, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    t = bellman_operator(phi @ np.asarray(w, dtype=np.float64), mdp, policy, gamma=gamma)
    res = t - weighted_projection(phi, m) @ t
    return float(np.sqrt(m @ res**2))


def minimax_objective(w, features, mdp: FiniteMDP, policy, mu, *, gamma: float) -> float:
    """Population minimax objective :math:`L(w,w) - \\min_{w'} L(w',w)` by an explicit least squares.

    :math:`L(w',w) = \\|\\Phi w' - T^\\pi\\Phi w\\|_\\mu^2` (the conditional-variance
    term of the sampled loss cancels in the difference). Computed without
    :func:`weighted_projection`, so that identity 1 of the module docstring is a
    real check.
    """
    phi = _check_features(features, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    q = phi @ np.asarray(w, dtype=np.float64)
    t = bellman_operator(q, mdp, policy, gamma=gamma)
    sq = np.sqrt(m)
    w_best, *_ = np.linalg.lstsq(sq[:, None] * phi, sq * t, rcond=None)
    return float(m @ (q - t) ** 2 - m @ (phi @ w_best - t) ** 2)


def value_error_from_residual(q, mdp: FiniteMDP, policy, initial, *, gamma: float) -> float:
    """:math:`\\frac{1}{1-\\gamma}\\mathbb{E}_{d^\\pi_\\nu}[q - T^\\pi q]`, which equals
    :math:`\\mathbb{E}_{\\nu,\\pi}[q - Q^\\pi]` (identity 2 of the module docstring)."""
    q = np.asarray(q, dtype=np.float64)
    d = occupancy(mdp, policy, initial, gamma=gamma)
    return float(d @ (q - bellman_operator(q, mdp, policy, gamma=gamma)) / (1.0 - gamma))


def _check_gamma(gamma: float) -> None:
    if not (0.0 <= gamma < 1.0):
        raise ValueError(f"gamma must lie in [0, 1); got {gamma}.")


def _check_pd(M: np.ndarray, *, name: str, fix: str) -> None:
    ev = np.linalg.eigvalsh((M + M.T) / 2)
    if ev[0] <= 1e-12 * max(1.0, ev[-1]):
        raise ValueError(f"{name} (shape {M.shape}) is not positive definite (smallest eigenvalue {ev[0]:.3g}); {fix}.")
