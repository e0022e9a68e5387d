r"""Multi-teacher policy distillation into one partially-observing student, DAgger style.

Wang, Sun, Erickson, Held, "One Policy to Dress Them All: Learning to Dress People with Diverse
Poses and Garments", RSS 2023 (arXiv 2306.12372), train one RL teacher per range of human arm poses
and distil them into a single student policy over partial point clouds. This module is the
method-level core of that step, independent of any simulator:

- the distillation losses: the action regression

  .. math:: L_{\mathrm{reg}}(\theta) = \frac{1}{\sum_i m_i} \sum_i m_i \,\lVert \pi_\theta(o_i) - \pi^{*}_{k(i)}(s_i) \rVert_2^2

  (continuous actions; the teacher :math:`k(i)` is the one of the episode's configuration region,
  queried on the state :math:`s_i` behind the student's observation :math:`o_i`), and its
  discrete-action analogue, the forward KL to the teacher's (temperature-softened) action
  distribution,

  .. math:: L_{\mathrm{KL}}(\theta) = \frac{1}{\sum_i m_i} \sum_i m_i\, \mathrm{KL}\big(\mathrm{softmax}(z^{*}_i/\tau)\,\Vert\,\mathrm{softmax}(z^{\theta}_i)\big)

  (Rusu et al., "Policy Distillation", ICLR 2016, eq. 3);
- the closed-form optimum of :math:`L_{\mathrm{reg}}` for a linear student (least squares, the
  known-optimum check of the loss);
- DAgger's data aggregation (Ross, Gordon, Bagnell, AISTATS 2011, Algorithm 3.1): at iteration
  :math:`i` roll out the mixture :math:`\pi_i = \beta_i \pi^{*} + (1-\beta_i)\hat\pi_i` (per step:
  the teacher's action with probability :math:`\beta_i`, else the student's), label every visited
  state with the teacher's action, aggregate :math:`D \leftarrow D \cup D_i`, refit the student on
  :math:`D`; :math:`\beta_0 = 1` makes iteration 0 behaviour cloning. :class:`DAggerBuffer` holds
  that state explicitly; :func:`beta_schedule` gives the schedules;
- an exact (infinite-data) tabular DAgger, :func:`tabular_dagger`, where visitation distributions,
  the fitted student and the cost are computed exactly, so the compounding error of behaviour
  cloning and its removal by DAgger can be checked against closed forms.

What is confirmed and what is reconstructed
-------------------------------------------
The abstract (confirmed) says: several RL policies, each trained on a different range of arm poses,
are combined by policy distillation into one policy over partial point clouds. No code from the
authors was found (``find_repos``/search, December 2026). The use of DAgger, the teacher chosen by
the episode's region, and the squared action error as the loss are **reconstructed** from memory
of the paper (``shared/notes/control_anchors.md`` section 12 marks them UNCONFIRMED); the KL form
for discrete actions is Rusu et al.'s, used here because the control layer's PPO teachers have
discrete actions. The beta schedules are Ross et al.'s (their :math:`\beta_i = p^{i-1}` with
:math:`i` from 1 is :math:`p^{i}` here with :math:`i` from 0; "indicator" is
:math:`\beta_0 = 1,\ \beta_{i>0} = 0`, the variant they report works best in practice).

References
----------
Y. Wang, Z. Sun, Z. Erickson, D. Held. One Policy to Dress Them All: Learning to Dress People with
Diverse Poses and Garments. RSS 2023.
S. Ross, G. Gordon, D. Bagnell. A Reduction of Imitation Learning and Structured Prediction to
No-Regret Online Learning. AISTATS 2011.
A. Rusu et al. Policy Distillation. ICLR 2016.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .checks import as_tensor, check_finite, check_mask, check_ndim, check_same_shape

__all__ = [
    "DistillationLoss",
    "action_regression_loss",
    "policy_kl_loss",
    "linear_distillation_solution",
    "BETA_SCHEDULES",
    "beta_schedule",
    "mix_actions",
    "DAggerBuffer",
    "tabular_state_distributions",
    "tabular_expected_cost",
    "tabular_fit_student",
    "tabular_executed_policy",
    "TabularDAggerResult",
    "tabular_dagger",
]


@dataclass(frozen=True)
class DistillationLoss:
    """Result of a distillation loss.

    Attributes
    ----------
    loss : Tensor, scalar
        The masked mean (what to backpropagate).
    per_sample : Tensor, shape [batch]
        Each sample's loss (0 where masked out).
    agreement : float
        Fraction of (unmasked) samples whose greedy action equals the teacher's (arg-max of the
        logits for :func:`policy_kl_loss`; NaN for :func:`action_regression_loss`).
    """

    loss: torch.Tensor
    per_sample: torch.Tensor
    agreement: float


def _mask(mask, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(like)
    m = check_mask(as_tensor(mask, name="mask").to(like.device), like, name="mask")
    if float(m.sum()) == 0.0:
        raise ValueError("mask selects no sample; pass at least one 1 (or mask=None).")
    return m


def action_regression_loss(student_actions, teacher_actions, *, mask=None) -> DistillationLoss:
    r"""Squared action error to the teacher, :math:`\frac{1}{\sum m_i}\sum_i m_i \lVert a^S_i - a^T_i\rVert_2^2`.

    The reconstructed loss of the paper's distillation (see the module docstring): the student's
    (deterministic or mean) action regressed on the action of the teacher of the sample's
    configuration region.

    Parameters
    ----------
    student_actions : Tensor, shape [batch, action_dim]
        Student outputs (differentiable).
    teacher_actions : Tensor, shape [batch, action_dim]
        Teacher labels (treated as constants: detached).
    mask : Tensor, shape [batch], optional
        1 for samples that count.

    Returns
    -------
    DistillationLoss
        ``agreement`` is NaN (no greedy action for a regression).
    """
    s = as_tensor(student_actions, name="student_actions")
    t = as_tensor(teacher_actions, name="teacher_actions").to(s.device, s.dtype).detach()
    check_ndim(s, 2, name="student_actions", layout="[batch, action_dim]")
    check_same_shape(s, t, names=("student_actions", "teacher_actions"))
    check_finite(s, name="student_actions")
    check_finite(t, name="teacher_actions")
    per = ((s - t) ** 2).sum(dim=1)
    m = _mask(mask, per)
    return DistillationLoss(loss=(per * m).sum() / m.sum(), per_sample=per * m, agreement=float("nan"))


def policy_kl_loss(student_logits, teacher_logits, *, temperature: float = 1.0, mask=None) -> DistillationLoss:
    r"""Forward KL from the teacher's softened action distribution to the student's (Rusu et al. 2016, eq. 3).

    .. math:: \ell_i = \sum_a q_i(a) \big(\log q_i(a) - \log \pi_\theta(a\mid o_i)\big),\qquad
              q_i = \mathrm{softmax}(z^{*}_i / \tau),\quad \pi_\theta = \mathrm{softmax}(z^\theta_i).

    Its gradient in :math:`z^\theta` is :math:`\pi_\theta - q` (the cross-entropy gradient), so the
    minimiser over free student logits is :math:`z^\theta = z^{*}/\tau` up to a constant. With
    ``temperature`` -> 0 the target becomes the teacher's arg-max action (behaviour cloning's
    cross-entropy on greedy labels); Rusu et al. use a small temperature (0.01) for DQN teachers.

    Parameters
    ----------
    student_logits : Tensor, shape [batch, actions]
    teacher_logits : Tensor, shape [batch, actions]
        Treated as constants (detached). Both must be finite (mask impossible actions with a large
        negative number, not ``-inf``).
    temperature : float > 0
    mask : Tensor, shape [batch], optional

    Returns
    -------
    DistillationLoss
        ``agreement`` = fraction of unmasked samples with equal arg-max actions.
    """
    if not (isinstance(temperature, (int, float)) and temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite float > 0; got {temperature!r}.")
    s = as_tensor(student_logits, name="student_logits")
    t = as_tensor(teacher_logits, name="teacher_logits").to(s.device, s.dtype).detach()
    check_ndim(s, 2, name="student_logits", layout="[batch, actions]")
    check_same_shape(s, t, names=("student_logits", "teacher_logits"))
    check_finite(s, name="student_logits")
    check_finite(t, name="teacher_logits")
    log_q = torch.log_softmax(t / temperature, dim=1)
    log_p = torch.log_softmax(s, dim=1)
    per = (log_q.exp() * (log_q - log_p)).sum(dim=1)
    m = _mask(mask, per)
    agree = ((s.argmax(dim=1) == t.argmax(dim=1)).to(per.dtype) * m).sum() / m.sum()
    return DistillationLoss(loss=(per * m).sum() / m.sum(), per_sample=per * m, agreement=float(agree))


def linear_distillation_solution(observations, teacher_actions, *, ridge: float = 0.0) -> torch.Tensor:
    r"""The linear student minimising :func:`action_regression_loss`: :math:`W = A^\top O (O^\top O + n\lambda I)^{-1}`.

    For a student :math:`a = W o` and data :math:`(o_i, a^T_i)`, the squared loss (plus
    :math:`\lambda\lVert W\rVert_F^2`) is minimised where its gradient
    :math:`\tfrac{2}{n}(W O^\top O - A^\top O) + 2\lambda W` vanishes. When the teacher is linear in
    the full state, :math:`a^T = K s`, and the student sees :math:`o = P s` with
    :math:`\mathbb{E}[s s^\top] = \Sigma`, the population optimum is
    :math:`W^{*} = K \Sigma P^\top (P \Sigma P^\top)^{-1}` with residual
    :math:`\mathrm{tr}\,K(\Sigma - \Sigma P^\top (P\Sigma P^\top)^{-1} P \Sigma)K^\top` (the Schur
    complement: what the hidden coordinates explain and the partial view cannot).

    Parameters
    ----------
    observations : Tensor, shape [batch, obs_dim]
    teacher_actions : Tensor, shape [batch, action_dim]
    ridge : float >= 0
        :math:`\lambda` (per-sample scale, so the solution does not depend on the batch size).

    Returns
    -------
    Tensor, shape [action_dim, obs_dim]
    """
    o = as_tensor(observations, name="observations")
    a = as_tensor(teacher_actions, name="teacher_actions").to(o.device, o.dtype)
    check_ndim(o, 2, name="observations", layout="[batch, obs_dim]")
    check_ndim(a, 2, name="teacher_actions", layout="[batch, action_dim]")
    if o.shape[0] != a.shape[0]:
        raise ValueError(f"observations and teacher_actions need the same batch size; got {o.shape[0]} and {a.shape[0]}.")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0; got {ridge!r}.")
    n = o.shape[0]
    gram = o.T @ o + n * ridge * torch.eye(o.shape[1], dtype=o.dtype, device=o.device)
    if ridge == 0 and int(torch.linalg.matrix_rank(gram)) < o.shape[1]:
        raise ValueError("observations are rank deficient (O^T O is singular); pass ridge > 0 or drop collinear features.")
    return torch.linalg.solve(gram, o.T @ a).T


BETA_SCHEDULES = ("exponential", "indicator", "linear", "constant")


def beta_schedule(iteration: int, *, kind: str = "exponential", p: float = 0.5, iterations: int | None = None) -> float:
    r"""DAgger's probability :math:`\beta_i` of executing the teacher's action at iteration ``i`` (from 0).

    - ``exponential``: :math:`\beta_i = p^{i}` (Ross et al.'s :math:`p^{i-1}`, iterations counted from 1);
    - ``indicator``: :math:`\beta_0 = 1`, then 0 (pure student rollouts after the first iteration);
    - ``linear``: :math:`\beta_i = \max(0, 1 - i/(N-1))` over ``iterations`` :math:`= N`;
    - ``constant``: :math:`\beta_i = p` (``p = 1`` for all :math:`i` is behaviour cloning on ever more
      teacher data; ``p = 0`` is pure on-policy data from the start).

    Returns
    -------
    float in [0, 1]
    """
    if not isinstance(iteration, (int, np.integer)) or iteration < 0:
        raise ValueError(f"iteration must be an int >= 0; got {iteration!r}.")
    if kind not in BETA_SCHEDULES:
        raise ValueError(f"kind must be one of {BETA_SCHEDULES}; got {kind!r}.")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1]; got {p!r}.")
    if kind == "exponential":
        return float(p**iteration)
    if kind == "indicator":
        return 1.0 if iteration == 0 else 0.0
    if kind == "constant":
        return float(p)
    if iterations is None or iterations < 1:
        raise ValueError(f"kind='linear' needs iterations >= 1 (the schedule's length); got {iterations!r}.")
    return 1.0 if iterations == 1 else float(max(0.0, 1.0 - iteration / (iterations - 1)))


def mix_actions(student_actions, teacher_actions, *, beta: float, generator: torch.Generator):
    r"""DAgger's executed actions: per sample, the teacher's with probability :math:`\beta`, else the student's.

    Parameters
    ----------
    student_actions, teacher_actions : Tensor, shape [batch, ...]
    beta : float in [0, 1]
    generator : torch.Generator
        Draws the Bernoulli(:math:`\beta`) choices (on the actions' device).

    Returns
    -------
    actions : Tensor, shape [batch, ...]
    from_teacher : Tensor of bool, shape [batch]
    """
    s = torch.as_tensor(student_actions)
    t = torch.as_tensor(teacher_actions).to(s.device)
    if s.shape != t.shape or s.ndim < 1:
        raise ValueError(f"student_actions and teacher_actions need one shape [batch, ...]; got {tuple(s.shape)} and {tuple(t.shape)}.")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1]; got {beta!r}.")
    u = torch.rand(s.shape[0], generator=generator, device=s.device)
    from_teacher = u < beta
    shape = (-1,) + (1,) * (s.ndim - 1)
    return torch.where(from_teacher.reshape(shape), t.to(s.dtype), s), from_teacher


@dataclass
class DAggerBuffer:
    """DAgger's aggregated data set and iteration counter (explicit state).

    Use: ``beta = buf.beta`` -> roll out with :func:`mix_actions` and label the student's observations
    with the teacher's outputs -> ``buf.add(obs, labels)`` (any number of times) ->
    ``buf.next_iteration()`` -> fit the student on ``buf.dataset()``.

    Attributes
    ----------
    schedule : str
        One of :data:`BETA_SCHEDULES`.
    p : float
        Parameter of the schedule.
    iterations : int or None
        Planned number of iterations (needed by ``linear``).
    max_size : int or None
        Keep at most this many samples (the oldest are dropped first); ``None`` keeps all, as DAgger.
    iteration : int
        Current iteration (0 = behaviour-cloning data when :math:`\\beta_0 = 1`).
    observations, labels : list of Tensor
        Aggregated chunks, ``[n_k, ...]`` each.
    chunk_iteration : list of int
        Iteration each chunk was collected in.
    """

    schedule: str = "exponential"
    p: float = 0.5
    iterations: int | None = None
    max_size: int | None = None
    iteration: int = 0
    observations: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    chunk_iteration: list = field(default_factory=list)

    def __post_init__(self):
        beta_schedule(0, kind=self.schedule, p=self.p, iterations=self.iterations)  # validates
        if self.max_size is not None and self.max_size < 1:
            raise ValueError(f"max_size must be >= 1 or None; got {self.max_size!r}.")

    @property
    def beta(self) -> float:
        """:math:`\\beta` of the current iteration."""
        return beta_schedule(self.iteration, kind=self.schedule, p=self.p, iterations=self.iterations)

    def add(self, observations, labels) -> None:
        """Aggregate a chunk of student observations ``[n, ...]`` with their teacher labels ``[n, ...]``."""
        o, y = torch.as_tensor(observations), torch.as_tensor(labels)
        if o.ndim < 1 or y.ndim < 1 or o.shape[0] != y.shape[0]:
            raise ValueError(f"observations and labels need the same first (batch) dimension; got {tuple(o.shape)} and {tuple(y.shape)}.")
        if self.observations and (o.shape[1:] != self.observations[0].shape[1:] or y.shape[1:] != self.labels[0].shape[1:]):
            raise ValueError(f"chunk shapes {tuple(o.shape[1:])}/{tuple(y.shape[1:])} differ from the buffer's "
                             f"{tuple(self.observations[0].shape[1:])}/{tuple(self.labels[0].shape[1:])}.")
        if o.shape[0] == 0:
            return
        self.observations.append(o.detach())
        self.labels.append(y.detach())
        self.chunk_iteration.append(self.iteration)
        if self.max_size is not None:
            excess = len(self) - self.max_size
            while excess > 0:
                n0 = self.observations[0].shape[0]
                if n0 <= excess:
                    self.observations.pop(0), self.labels.pop(0), self.chunk_iteration.pop(0)
                    excess -= n0
                else:
                    self.observations[0], self.labels[0] = self.observations[0][excess:], self.labels[0][excess:]
                    excess = 0

    def next_iteration(self) -> float:
        """Advance the iteration; returns the new :math:`\\beta`."""
        self.iteration += 1
        return self.beta

    def __len__(self) -> int:
        return int(sum(o.shape[0] for o in self.observations))

    def dataset(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All aggregated data: observations ``[n, ...]``, labels ``[n, ...]``, collection iteration ``[n]``."""
        if not self.observations:
            raise ValueError("the DAgger buffer is empty; add() data before asking for the data set.")
        it = torch.cat([torch.full((o.shape[0],), k, dtype=torch.long) for o, k in zip(self.observations, self.chunk_iteration)])
        return torch.cat(self.observations), torch.cat(self.labels), it


# ---------------------------------------------------------------------------------------------
# exact tabular DAgger
# ---------------------------------------------------------------------------------------------
def _check_tabular(transitions, policy, initial):
    P = np.asarray(transitions, dtype=np.float64)
    pi = np.asarray(policy, dtype=np.float64)
    mu = np.asarray(initial, dtype=np.float64)
    if P.ndim != 3 or P.shape[0] != P.shape[2]:
        raise ValueError(f"transitions must have shape [states, actions, states]; got {P.shape}.")
    if pi.shape != P.shape[:2]:
        raise ValueError(f"policy must have shape [states, actions] = {P.shape[:2]}; got {pi.shape}.")
    if mu.shape != (P.shape[0],):
        raise ValueError(f"initial must have shape [states] = ({P.shape[0]},); got {mu.shape}.")
    for name, x, axis in (("transitions", P, 2), ("policy", pi, 1), ("initial", mu, 0)):
        if (x < -1e-12).any() or not np.allclose(x.sum(axis=axis), 1.0, atol=1e-9):
            raise ValueError(f"{name} must hold probability distributions (non-negative, summing to 1 along its last axis).")
    return P, pi, mu


def tabular_state_distributions(transitions, policy, initial, *, horizon: int) -> np.ndarray:
    r"""Exact state marginals :math:`d_t(s) = \Pr_\pi(s_t = s)`, :math:`t = 0..H-1`.

    :math:`d_0 = \mu`, :math:`d_{t+1}(s') = \sum_{s,a} d_t(s)\pi(a\mid s)P(s'\mid s,a)`.

    Parameters
    ----------
    transitions : array, shape [states, actions, states]
    policy : array, shape [states, actions]
    initial : array, shape [states]
    horizon : int >= 1

    Returns
    -------
    array, shape [horizon, states]
    """
    P, pi, mu = _check_tabular(transitions, policy, initial)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1; got {horizon!r}.")
    M = np.einsum("sa,sat->st", pi, P)
    out = np.empty((horizon, mu.size))
    d = mu
    for t in range(horizon):
        out[t] = d
        d = d @ M
    return out


def tabular_expected_cost(transitions, policy, initial, cost, *, horizon: int) -> float:
    r"""Exact :math:`J(\pi) = \sum_{t<H} \mathbb{E}_\pi[c(s_t, a_t)]` (``cost`` of shape [states] or [states, actions])."""
    d = tabular_state_distributions(transitions, policy, initial, horizon=horizon)
    c = np.asarray(cost, dtype=np.float64)
    pi = np.asarray(policy, dtype=np.float64)
    if c.shape == pi.shape[:1]:
        return float(d.sum(axis=0) @ c)
    if c.shape == pi.shape:
        return float(d.sum(axis=0) @ (pi * c).sum(axis=1))
    raise ValueError(f"cost must have shape [states] or [states, actions]; got {c.shape}.")


def tabular_fit_student(state_weights, teacher, observation_of_state, *, num_observations: int, unseen=None) -> np.ndarray:
    r"""The tabular student over observations minimising the weighted KL/cross-entropy to the teacher.

    .. math:: \hat\pi(\cdot\mid o) = \arg\min_{q} \sum_{s:\,\phi(s)=o} w(s)\,\mathrm{KL}(\pi^{*}(\cdot\mid s)\,\Vert\, q)
              = \frac{\sum_{s:\phi(s)=o} w(s)\,\pi^{*}(\cdot\mid s)}{\sum_{s:\phi(s)=o} w(s)}

    (Gibbs' inequality: the cross-entropy :math:`-\sum_a \bar q(a)\log q(a)` is minimised by
    :math:`q = \bar q`). An observation with no weight gets ``unseen`` (default uniform): the
    student's prior where the data say nothing.

    Parameters
    ----------
    state_weights : array, shape [states]
        Non-negative data weights (a visitation distribution, or sums of them).
    teacher : array, shape [states, actions]
    observation_of_state : int array, shape [states]
        :math:`\phi(s)` in ``0..num_observations-1`` (aliasing = partial observation).
    num_observations : int
    unseen : array, shape [actions], optional

    Returns
    -------
    array, shape [num_observations, actions]
    """
    w = np.asarray(state_weights, dtype=np.float64)
    T = np.asarray(teacher, dtype=np.float64)
    phi = np.asarray(observation_of_state)
    if T.ndim != 2 or w.shape != T.shape[:1] or phi.shape != w.shape:
        raise ValueError(f"state_weights [S], teacher [S, A] and observation_of_state [S] must agree; got {w.shape}, {T.shape}, {phi.shape}.")
    if (w < 0).any():
        raise ValueError("state_weights must be non-negative.")
    if not np.issubdtype(phi.dtype, np.integer) or phi.min() < 0 or phi.max() >= num_observations:
        raise ValueError(f"observation_of_state must hold integers in [0, {num_observations}); got {phi}.")
    A = T.shape[1]
    u = np.full(A, 1.0 / A) if unseen is None else np.asarray(unseen, dtype=np.float64)
    if u.shape != (A,) or (u < 0).any() or not np.isclose(u.sum(), 1.0):
        raise ValueError(f"unseen must be a distribution over the {A} actions; got {u}.")
    num = np.zeros((num_observations, A))
    den = np.zeros(num_observations)
    np.add.at(num, phi, w[:, None] * T)
    np.add.at(den, phi, w)
    out = np.tile(u, (num_observations, 1))
    seen = den > 0
    out[seen] = num[seen] / den[seen, None]
    return out


def tabular_executed_policy(student, observation_of_state, *, greedy: bool = False, execution_noise: float = 0.0) -> np.ndarray:
    r"""The state policy the student executes: :math:`(1-\epsilon)\,\hat\pi(\cdot\mid\phi(s)) + \epsilon/|A|`.

    ``greedy`` replaces :math:`\hat\pi(\cdot\mid o)` by the one-hot of its arg-max (lowest index on
    ties: a deterministic classifier). ``execution_noise`` :math:`\epsilon` stands for the student's
    imperfect fit (Ross and Bagnell's per-step error rate). Returns shape [states, actions].
    """
    S = np.asarray(student, dtype=np.float64)
    if not 0.0 <= execution_noise <= 1.0:
        raise ValueError(f"execution_noise must be in [0, 1]; got {execution_noise!r}.")
    if greedy:
        S = np.eye(S.shape[1])[S.argmax(axis=1)]
    pi = S[np.asarray(observation_of_state)]
    return (1.0 - execution_noise) * pi + execution_noise / S.shape[1]


@dataclass(frozen=True)
class TabularDAggerResult:
    """Exact tabular DAgger run.

    Attributes
    ----------
    students : array, shape [iterations, observations, actions]
        ``students[i]`` is fitted on the data aggregated over iterations ``0..i``
        (``students[0]`` = behaviour cloning when :math:`\\beta_0 = 1`).
    costs : array, shape [iterations]
        Exact cost :math:`J` of each executed student.
    betas : array, shape [iterations]
    data_weights : array, shape [iterations, states]
        Aggregated (unnormalised) state weights after each iteration: the sum of the per-iteration
        average visitation distributions :math:`\\bar d_{\\pi_j} = \\frac1H\\sum_t d_{\\pi_j,t}`.
    teacher_cost : float
    """

    students: np.ndarray
    costs: np.ndarray
    betas: np.ndarray
    data_weights: np.ndarray
    teacher_cost: float


def tabular_dagger(transitions, teacher, initial, cost, observation_of_state, *, num_observations: int, horizon: int,
                   iterations: int, schedule: str = "exponential", p: float = 0.5, greedy: bool = False,
                   execution_noise: float = 0.0, unseen=None) -> TabularDAggerResult:
    r"""DAgger with infinite data per iteration, computed exactly on a finite-horizon tabular MDP.

    Iteration :math:`i`: the mixture :math:`\pi_i(a\mid s) = \beta_i\pi^{*}(a\mid s) + (1-\beta_i)\tilde\pi_{i}(a\mid s)`
    (:math:`\tilde\pi_i` = the executed previous student, :func:`tabular_executed_policy`; before
    any fit, the ``unseen`` prior) is rolled out exactly; its average visitation
    :math:`\bar d_{\pi_i}` is added to the data weights; the student is refitted by
    :func:`tabular_fit_student` on the aggregate. With ``iterations = 1`` and :math:`\beta_0 = 1` this
    is behaviour cloning on the teacher's own state distribution.

    Parameters
    ----------
    transitions : array [S, A, S]
    teacher : array [S, A]
    initial : array [S]
    cost : array [S] or [S, A]
    observation_of_state : int array [S]
    num_observations, horizon, iterations : int
    schedule, p : see :func:`beta_schedule`
    greedy, execution_noise : see :func:`tabular_executed_policy`
    unseen : array [A], optional
        The student's action distribution on observations without data.

    Returns
    -------
    TabularDAggerResult
    """
    P, T, mu = _check_tabular(transitions, teacher, initial)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1; got {iterations!r}.")
    A = T.shape[1]
    prior = np.full(A, 1.0 / A) if unseen is None else np.asarray(unseen, dtype=np.float64)
    student = np.tile(prior, (num_observations, 1))
    W = np.zeros(P.shape[0])
    students, costs, betas, weights = [], [], [], []
    for i in range(iterations):
        beta = beta_schedule(i, kind=schedule, p=p, iterations=iterations)
        executed = tabular_executed_policy(student, observation_of_state, greedy=greedy, execution_noise=execution_noise)
        mixture = beta * T + (1.0 - beta) * executed
        W = W + tabular_state_distributions(P, mixture, mu, horizon=horizon).mean(axis=0)
        student = tabular_fit_student(W, T, observation_of_state, num_observations=num_observations, unseen=prior)
        executed = tabular_executed_policy(student, observation_of_state, greedy=greedy, execution_noise=execution_noise)
        students.append(student)
        costs.append(tabular_expected_cost(P, executed, mu, cost, horizon=horizon))
        betas.append(beta)
        weights.append(W.copy())
    return TabularDAggerResult(students=np.stack(students), costs=np.asarray(costs), betas=np.asarray(betas),
                               data_weights=np.stack(weights),
                               teacher_cost=tabular_expected_cost(P, T, mu, cost, horizon=horizon))
