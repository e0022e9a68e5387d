r"""Finite MDP instances for the realizability checks, and a transition sampler.

Every instance is **realizable** by construction: features :math:`\Phi`, a
target policy :math:`\pi` and weights :math:`w^\star` are chosen first and the
reward is set to :math:`r=(I-\gamma P^\pi)\Phi w^\star`, so that
:math:`Q^\pi=\Phi w^\star` exactly. Families:

* :func:`random_instance`: random kernels, policies, features and data
  distributions (generically incomplete, :math:`\alpha` typically close to 1).
* :func:`tabular_instance`: one-hot features, Bellman complete (:math:`\alpha=0`).
* :func:`lumpable_instance`: state-aggregation features for a kernel whose
  block-to-block probabilities depend only on the block, so
  :math:`P^\pi\Phi=\Phi M` and the class is Bellman complete (:math:`\alpha=0`)
  with :math:`d<SA`.
* :func:`two_state_instance`: the two-state chain with :math:`\phi=(1,2)` in
  which both states move to state 2 (Tsitsiklis & Van Roy 1997's divergence
  example). Its incompleteness factor is known in closed form
  (:func:`two_state_alpha`, derived here and re-derived with sympy in
  :mod:`polab.proofs_checks.realizability_checks`):

  .. math::

      \alpha^2=\gamma^2\,\frac{4-(2\mu_1+4\mu_2)^2/(\mu_1+4\mu_2)}
      {\mu_1(1-2\gamma)^2+4\mu_2(1-\gamma)^2},\qquad
      1-\alpha^2=\frac{(\mu_1(1-2\gamma)+4\mu_2(1-\gamma))^2}
      {(\mu_1+4\mu_2)(\mu_1(1-2\gamma)^2+4\mu_2(1-\gamma)^2)},

  so :math:`\alpha\to1` as :math:`\mu_1\to4(1-\gamma)/(3-2\gamma)` (where
  expected TD's matrix :math:`A` is 0) and :math:`\alpha=0` at :math:`\mu_1=1`.
  :func:`two_state_instance` solves for :math:`\mu_1` on :math:`(\mu_c,1]` given
  :math:`\alpha`: an incomplete class that fails by a known amount.

Observed rewards are :math:`r(s,a)+\sigma\varepsilon` with Rademacher
:math:`\varepsilon` (bounded, as the bound of :mod:`polab.theory.realizability` needs).

References
----------
Tsitsiklis, Van Roy, "An analysis of temporal-difference learning with
function approximation", IEEE Trans. Automatic Control 42(5), 1997.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from polab.theory.bellman_operators import FiniteMDP, next_policy_features, q_values

__all__ = [
    "RealizableInstance",
    "Transitions",
    "random_instance",
    "tabular_instance",
    "lumpable_instance",
    "two_state_alpha",
    "two_state_critical_mu",
    "two_state_instance",
    "sample_transitions",
    "realizability_gap",
]


@dataclass(frozen=True)
class RealizableInstance:
    """A realizable OPE problem.

    Attributes
    ----------
    name : str
    mdp : FiniteMDP
    policy : ndarray, shape [S, A]
        Target policy.
    features : ndarray, shape [S*A, d]
    mu : ndarray, shape [S*A]
        Data distribution.
    initial : ndarray, shape [S]
        Start-state distribution of the value to estimate.
    w_star : ndarray, shape [d]
        :math:`Q^\\pi=\\Phi w^\\star`.
    gamma : float
    reward_noise : float
        :math:`\\sigma`, the bound on the reward noise.
    """

    name: str
    mdp: FiniteMDP
    policy: np.ndarray
    features: np.ndarray
    mu: np.ndarray
    initial: np.ndarray
    w_star: np.ndarray
    gamma: float
    reward_noise: float

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    @property
    def true_value(self) -> float:
        """:math:`v^\\pi=\\mathbb{E}_{s\\sim\\nu,a\\sim\\pi}Q^\\pi(s,a)`."""
        return float(self.start_features @ self.w_star)

    @property
    def start_features(self) -> np.ndarray:
        """:math:`\\mathbb{E}_{s\\sim\\nu,a\\sim\\pi}\\phi(s,a)`, shape [d]."""
        return self.initial @ next_policy_features(self.features, self.policy, self.mdp)


def _realizable(name, P, pi, phi, w_star, mu, initial, gamma, reward_noise) -> RealizableInstance:
    S, A = P.shape[:2]
    Ppi = (P[:, :, :, None] * pi[None, None, :, :]).reshape(S * A, S * A)
    r = (phi @ w_star - gamma * Ppi @ phi @ w_star).reshape(S, A)
    mdp = FiniteMDP(transitions=P, rewards=r)
    return RealizableInstance(name=name, mdp=mdp, policy=pi, features=phi, mu=mu, initial=initial,
                              w_star=np.asarray(w_star, dtype=np.float64), gamma=gamma, reward_noise=reward_noise)


def _data_distribution(rng, n, uniform_mix):
    return (1 - uniform_mix) * rng.dirichlet(np.ones(n)) + uniform_mix / n


def random_instance(*, num_states: int = 5, num_actions: int = 2, dim: int = 3, gamma: float = 0.8,
                    reward_noise: float = 0.5, uniform_mix: float = 0.3, generator: np.random.Generator) -> RealizableInstance:
    """Random kernel (Dirichlet(0.5) rows), policy (Dirichlet(1)), Gaussian features and weights,
    data distribution ``uniform_mix`` * uniform + the rest Dirichlet(1); start state 0."""
    rng = generator
    S, A = num_states, num_actions
    P = rng.dirichlet(np.full(S, 0.5), size=(S, A))
    pi = rng.dirichlet(np.ones(A), size=S)
    phi = rng.normal(size=(S * A, dim)) / math.sqrt(dim)
    w_star = rng.normal(size=dim)
    mu = _data_distribution(rng, S * A, uniform_mix)
    initial = np.eye(S)[0]
    return _realizable("random", P, pi, phi, w_star, mu, initial, gamma, reward_noise)


def tabular_instance(*, num_states: int = 4, num_actions: int = 2, gamma: float = 0.8, reward_noise: float = 0.5,
                     generator: np.random.Generator) -> RealizableInstance:
    """One-hot features: Bellman complete."""
    rng = generator
    S, A = num_states, num_actions
    P = rng.dirichlet(np.full(S, 0.5), size=(S, A))
    pi = rng.dirichlet(np.ones(A), size=S)
    phi = np.eye(S * A)
    w_star = rng.normal(size=S * A)
    mu = _data_distribution(rng, S * A, 0.3)
    return _realizable("tabular", P, pi, phi, w_star, mu, np.eye(S)[0], gamma, reward_noise)


def lumpable_instance(*, blocks=(2, 2, 3), num_actions: int = 2, gamma: float = 0.8, reward_noise: float = 0.5,
                      generator: np.random.Generator) -> RealizableInstance:
    """State-aggregation features on a lumpable kernel: :math:`P^\\pi\\Phi=\\Phi M`, so Bellman complete.

    From every (s, a) the probability of entering block B' is M[block(s), B'] (the same for all
    actions and all states of a block), spread over the states of B' at random.
    """
    rng = generator
    K = len(blocks)
    block_of = np.repeat(np.arange(K), blocks)
    S, A = len(block_of), num_actions
    M = rng.dirichlet(np.ones(K), size=K)
    P = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            for B in range(K):
                members = np.flatnonzero(block_of == B)
                P[s, a, members] = M[block_of[s], B] * rng.dirichlet(np.ones(len(members)))
    pi = rng.dirichlet(np.ones(A), size=S)
    phi = np.repeat(np.eye(K)[block_of], A, axis=0)  # action-independent block indicators, [S*A, K]
    w_star = rng.normal(size=K)
    mu = _data_distribution(rng, S * A, 0.3)
    return _realizable("lumpable", P, pi, phi, w_star, mu, np.eye(S)[0], gamma, reward_noise)


def two_state_alpha(mu1: float, *, gamma: float) -> float:
    """Closed-form incompleteness factor of the two-state chain (module docstring)."""
    mu2 = 1.0 - mu1
    num = 4.0 - (2 * mu1 + 4 * mu2) ** 2 / (mu1 + 4 * mu2)
    den = mu1 * (1 - 2 * gamma) ** 2 + 4 * mu2 * (1 - gamma) ** 2
    return math.sqrt(max(gamma**2 * num / den, 0.0))


def two_state_critical_mu(*, gamma: float) -> float:
    """:math:`\\mu_c=4(1-\\gamma)/(3-2\\gamma)`: where :math:`\\alpha=1` (expected TD matrix singular)."""
    return 4 * (1 - gamma) / (3 - 2 * gamma)


def two_state_instance(*, alpha: float | None = None, mu1: float | None = None, gamma: float = 0.9,
                       reward_noise: float = 1.0, w_star: float = 1.0) -> RealizableInstance:
    """The two-state chain with :math:`\\phi=(1,2)`, both states moving to state 2, start in state 1.

    Give either ``mu1`` (data weight of state 1) or ``alpha`` in [0, 1); then :math:`\\mu_1` is the
    root of :func:`two_state_alpha` on :math:`(\\mu_c, 1]`.
    """
    if (alpha is None) == (mu1 is None):
        raise ValueError("give exactly one of alpha and mu1.")
    mc = two_state_critical_mu(gamma=gamma)
    if alpha is not None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must lie in [0, 1); got {alpha}.")
        if alpha == 0.0:
            mu1 = 1.0
        else:
            lo = mc + 1e-15
            mu1 = brentq(lambda m: two_state_alpha(m, gamma=gamma) - alpha, lo, 1.0, xtol=1e-15, rtol=1e-15)
    if not 0.0 < mu1 <= 1.0:
        raise ValueError(f"mu1 must lie in (0, 1]; got {mu1}.")
    P = np.zeros((2, 1, 2))
    P[:, 0, 1] = 1.0
    pi = np.ones((2, 1))
    phi = np.array([[1.0], [2.0]])
    mu = np.array([mu1, 1.0 - mu1])
    return _realizable("two-state", P, pi, phi, np.array([w_star]), mu, np.eye(2)[0], gamma, reward_noise)


@dataclass(frozen=True)
class Transitions:
    """Sampled transitions (numpy float64 / int64).

    Attributes
    ----------
    pair, state, action, next_state : ndarray, shape [n], int
    reward : ndarray, shape [n]
    phi, next_phi : ndarray, shape [n, d]
        :math:`\\phi(s,a)` and :math:`\\phi^\\pi(s')`.
    """

    pair: np.ndarray
    state: np.ndarray
    action: np.ndarray
    next_state: np.ndarray
    reward: np.ndarray
    phi: np.ndarray
    next_phi: np.ndarray


def sample_transitions(instance: RealizableInstance, num_samples: int, *, generator: np.random.Generator,
                       design: str = "iid") -> Transitions:
    """Draw ``num_samples`` transitions with :math:`(s,a)\\sim\\mu`.

    ``design="iid"`` draws pairs i.i.d. from :math:`\\mu` (the bound's assumption);
    ``design="fixed"`` uses the deterministic counts :math:`\\lfloor n\\mu\\rfloor` plus largest
    remainders (only next states and reward noise are random).
    """
    rng = generator
    mdp = instance.mdp
    S, A = mdp.num_states, mdp.num_actions
    n = int(num_samples)
    if design == "iid":
        pair = rng.choice(S * A, size=n, p=instance.mu)
    elif design == "fixed":
        raw = n * instance.mu
        counts = np.floor(raw).astype(np.int64)
        rest = n - counts.sum()
        counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
        pair = np.repeat(np.arange(S * A), counts)
    else:
        raise ValueError(f"design must be 'iid' or 'fixed'; got {design!r}.")
    state, action = pair // A, pair % A
    cdf = np.cumsum(mdp.transitions.reshape(S * A, S)[pair], axis=1)
    u = rng.random(n)[:, None]
    next_state = np.minimum((u > cdf).sum(axis=1), S - 1)
    noise = instance.reward_noise * (2.0 * rng.integers(0, 2, size=n) - 1.0)
    reward = mdp.rewards.reshape(-1)[pair] + noise
    phi_pi = next_policy_features(instance.features, instance.policy, mdp)
    return Transitions(pair=pair, state=state, action=action, next_state=next_state, reward=reward,
                       phi=instance.features[pair], next_phi=phi_pi[next_state])


def realizability_gap(instance: RealizableInstance) -> float:
    """:math:`\\max|Q^\\pi-\\Phi w^\\star|`, computed by an independent linear solve (0 up to rounding)."""
    q = q_values(instance.mdp, instance.policy, gamma=instance.gamma)
    return float(np.max(np.abs(q - instance.features @ instance.w_star)))
