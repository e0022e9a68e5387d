r"""Reward shaping and feedback estimators: PCPG, EPO process-reward returns, the debate reward, self-reference AI feedback.

Four small families, each a set of pure functions (tensors in, tensors out):

1. **PCPG** (Luo et al. 2020): per-step rewards from the change of edit
   distance (:func:`edit_distance_step_rewards`), and the *pseudo-convolution*
   of the per-step reward and per-step loss sequences with a fixed kernel
   (:func:`pseudo_convolution`, :func:`pcpg_loss`).
2. **EPO** (Liu et al. 2025): discounted returns of per-turn process rewards
   in a multi-turn dialogue, optionally with the final outcome, and their
   broadcast to the tokens of each turn (:func:`process_reward_returns`,
   :func:`turns_to_tokens`).
3. **Debate reward** (Sukovic & Radanovic 2024): the zero-sum debate outcome,
   the judge's Bradley–Terry training loss and the combined reward
   :math:`(1-\lambda)r^e + \lambda r^d` with its discounted return
   (:func:`debate_outcome`, :func:`judge_bradley_terry_loss`,
   :func:`debate_reward`, :func:`justifiable_returns`).
4. **Self-reference AI feedback** (seed abstract: "Aligning Large Language
   Models from Self-Reference AI Feedback with one General Principle"):
   order-swap debiasing of an AI judge (:func:`order_swap_debias`), the
   semantic perplexity of a verdict (:func:`semantic_perplexity`), the
   preference strength from it (:func:`preference_strength`), and the margin
   reward-model loss that consumes it (:func:`margin_reward_model_loss`).

What is confirmed and what is reconstructed
-------------------------------------------
- PCPG: the abstract confirms a pseudo-convolution "on the reward and loss
  dimension" with CER as reward; the edit-distance step reward, the kernel
  (size, fixed weights), zero padding and the order (convolve rewards, then
  returns, then convolve the per-step losses) are from
  ``notes/control_anchors.md`` section 8, marked **unconfirmed** there; the
  kernel is an argument. Verified: the operation equals a banded Toeplitz
  matrix times the sequence; kernel ``[1]`` gives plain REINFORCE.
- EPO: the abstract confirms multi-turn RL with process rewards and
  self-play; the return form :math:`G_t = \sum_{k\ge t}\gamma^{k-t}r_k` (with an
  optional outcome term on the last turn) is the standard discounted return
  and is our **reconstruction** of how the process rewards enter.
- Debate: from the authors' code (notes section 11, repository
  aleksa-sukovic/iclr2024-reward-design-for-justifiable-rl at 565368ec,
  ``argo/datasets/sepsis.py``): :math:`R_J = \sum_t\gamma^t[(1-\lambda)r^e_t +
  \lambda r^d_t]`, :math:`r^d = m\cdot\mathbb 1[\text{judge prefers } a_t]`,
  zero-sum :math:`\pm1/0` debate outcome, Bradley–Terry judge (confirmed by
  code reading in the notes; not re-read here).
- Self-reference feedback: the abstract confirms "a self-consistency method
  to reduce position bias" and "semantic perplexity to calculate the
  preference strength"; the order-swap average, the perplexity definition
  (exp of the mean negative log-probability of a verdict statement, averaged
  over paraphrases) and the strength as the log-perplexity gap between the
  two verdicts are our **reconstruction** (paper text unavailable). The
  authors' repository (rbao2018/self_ref_feedback at
  90edcf6273ea0d6076cf8d48c8daa07a6bd45e19) holds the reward-model and PPO
  training code only; the feedback generation (the judge's own reference
  answer, the self-consistency step, the semantic perplexity) is not in it,
  so those three remain unconfirmed. Confirmed from it: the reward-model loss
  ``RLXF/trainer/rm_trainer.py::LogExpWithLMLoss`` is
  :math:`\log(1+e^{m + r_r - r_c}) = -\log\sigma(r_c - r_r - m)` with the
  per-pair margin :math:`m` read from the data's ``"margin"`` field
  (``RLXF/dataset/reward_dataset.py``; used only with ``--use_margin``, off by
  default in ``RLXF/parse.py``), plus ``lm_loss_coef`` times the language-model
  cross-entropy of the chosen response (``--lm_loss_coef`` default 1.0 in
  ``parse.py``, added only when above 1e-6): :func:`margin_reward_model_loss`
  with ``margin_scale=1`` and ``lm_nll``/``lm_loss_coef``.

References
----------
Luo, Yang, Shan, Chen, "Pseudo-Convolutional Policy Gradient for
Sequence-to-Sequence Lip-Reading", FG 2020, arXiv 2003.03983.
Liu et al., "EPO: Explicit Policy Optimization for Strategic Reasoning in
LLMs via Reinforcement Learning", arXiv 2502.12486, 2025.
Sukovic, Radanovic, "Reward Design for Justifiable Sequential
Decision-Making", ICLR 2024, arXiv 2402.15826.
"Aligning Large Language Models from Self-Reference AI Feedback with one
General Principle", 2024 (seed abstract).
Touvron et al., "Llama 2", arXiv 2307.09288, 2023 (margin ranking loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from .checks import as_tensor, check_finite, check_mask, check_ndim, check_same_shape

__all__ = [
    # PCPG
    "PCPGLoss",
    "edit_distance",
    "edit_distance_step_rewards",
    "pcpg_kernel",
    "pseudo_convolution",
    "pseudo_convolution_matrix",
    "discounted_returns",
    "pcpg_loss",
    # EPO
    "process_reward_returns",
    "turns_to_tokens",
    # debate
    "debate_outcome",
    "judge_bradley_terry_loss",
    "debate_reward",
    "justifiable_returns",
    # self-reference AI feedback
    "SelfReferencePreference",
    "order_swap_debias",
    "semantic_perplexity",
    "preference_strength",
    "margin_reward_model_loss",
]


def _bt(x, name: str) -> torch.Tensor:
    t = as_tensor(x, name=name)
    check_ndim(t, 2, name=name, layout="[batch, time]")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def _prefix(mask: torch.Tensor, name: str) -> torch.Tensor:
    lengths = mask.sum(dim=1).round().long()
    idx = torch.arange(mask.shape[1], device=mask.device)
    if not bool(((idx[None, :] < lengths[:, None]).to(mask.dtype) == mask).all()):
        raise ValueError(f"{name} must be a prefix mask (1 on the first L entries of each row, then 0).")
    return lengths


# -- PCPG ----------------------------------------------------------------------------------


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (unit insert, delete, substitute) between two sequences of hashable tokens."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def edit_distance_step_rewards(hypothesis: Sequence, reference: Sequence, *, normalise: bool = False) -> torch.Tensor:
    r"""Per-step rewards :math:`r_t = -\bigl(ED(\hat y_{1:t}, y) - ED(\hat y_{1:t-1}, y)\bigr)`.

    They telescope: :math:`\sum_t r_t = |y| - ED(\hat y, y)`; with
    ``normalise=True`` each is divided by :math:`|y|` (CER units), so the
    sum is :math:`1 - \mathrm{CER}`. One dynamic-programming pass,
    :math:`O(|\hat y|\,|y|)`.

    Returns
    -------
    Tensor, shape [len(hypothesis)], float64
    """
    m = len(reference)
    if normalise and m == 0:
        raise ValueError("normalise=True needs a non-empty reference (CER divides by its length).")
    prev = list(range(m + 1))  # ED(empty, y_{1:j})
    eds = [prev[-1]]
    for i, x in enumerate(hypothesis, 1):
        cur = [i] + [0] * m
        for j, y in enumerate(reference, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
        eds.append(prev[-1])
    ed = torch.tensor(eds, dtype=torch.float64)
    r = -(ed[1:] - ed[:-1])
    return r / m if normalise else r


def pcpg_kernel(size: int, *, kind: Literal["uniform", "gaussian"] = "uniform", sigma: float | None = None) -> torch.Tensor:
    """A fixed, symmetric kernel of odd ``size`` whose weights sum to 1 (``gaussian``: std ``sigma``, default size/4).

    Returns a float64 tensor of shape [size]. The paper's kernel weights are unconfirmed (module docstring).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer (a centred window); got {size}.")
    if kind == "uniform":
        w = torch.ones(size, dtype=torch.float64)
    elif kind == "gaussian":
        s = size / 4.0 if sigma is None else float(sigma)
        if not s > 0:
            raise ValueError(f"sigma must be > 0; got {sigma}.")
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        w = torch.exp(-0.5 * (x / s) ** 2)
    else:
        raise ValueError(f"kind must be 'uniform' or 'gaussian'; got {kind!r}.")
    return w / w.sum()


def _kernel(kernel, like: torch.Tensor) -> torch.Tensor:
    k = as_tensor(kernel, name="kernel").to(device=like.device, dtype=like.dtype)
    check_ndim(k, 1, name="kernel", layout="[size]")
    if k.shape[0] % 2 == 0:
        raise ValueError(f"kernel must have odd length (centred at the current step); got {k.shape[0]}.")
    check_finite(k, name="kernel")
    return k


def pseudo_convolution(values, mask, *, kernel) -> torch.Tensor:
    r"""Centred, zero-padded window sum :math:`\tilde v_t = \sum_{j=-h}^{h} k_{j+h}\,v_{t+j}` inside each row's length.

    Entries outside ``[0, L_b)`` count as 0 (zero padding at both ends of the
    sequence, not across rows); outputs outside the mask are 0. Equals
    ``pseudo_convolution_matrix(L, kernel) @ v`` row by row (tested).

    Shapes
    ------
    values, mask : [batch, time]; kernel : [K], K odd -> [batch, time]
    """
    v = _bt(values, "values")
    m = check_mask(as_tensor(mask, name="mask").to(v.device), v)
    _prefix(m, "mask")
    check_finite(v.detach() * m, name="values (inside the mask)")
    k = _kernel(kernel, v)
    h = k.shape[0] // 2
    x = (v * m)[:, None, :]
    # conv1d is cross-correlation: out_t = sum_j k_j x_{t + j - h}, exactly the centred window sum
    out = F.conv1d(F.pad(x, (h, h)), k[None, None, :])[:, 0, :]
    return out * m


def pseudo_convolution_matrix(length: int, kernel) -> torch.Tensor:
    """The banded Toeplitz matrix :math:`T_{tj} = k_{j-t+h}` (``|j - t| <= h``) of :func:`pseudo_convolution` on one sequence."""
    k = as_tensor(kernel, name="kernel")
    if not k.is_floating_point():
        k = k.to(torch.float64)
    k = _kernel(k, k)
    h = k.shape[0] // 2
    T = torch.zeros(length, length, dtype=k.dtype)
    for t in range(length):
        for j in range(max(0, t - h), min(length, t + h + 1)):
            T[t, j] = k[j - t + h]
    return T


def discounted_returns(rewards, mask, *, gamma: float) -> torch.Tensor:
    r""":math:`G_t = \sum_{k\ge t}\gamma^{k-t} r_k` within each row's length (prefix mask).

    Shapes
    ------
    rewards, mask : [batch, time] -> [batch, time] (0 outside the mask)
    """
    r = _bt(rewards, "rewards")
    m = check_mask(as_tensor(mask, name="mask").to(r.device), r)
    _prefix(m, "mask")
    check_finite(r * m, name="rewards (inside the mask)")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1]; got {gamma}.")
    rm = r * m
    out = torch.zeros_like(rm)
    acc = torch.zeros(r.shape[0], dtype=r.dtype, device=r.device)
    for t in range(r.shape[1] - 1, -1, -1):
        acc = rm[:, t] + gamma * acc
        out[:, t] = acc
    return out * m


@dataclass(frozen=True)
class PCPGLoss:
    """Result of :func:`pcpg_loss`.

    Attributes
    ----------
    loss : Tensor, scalar
    per_step : Tensor, shape [batch, time]
        The (convolved) per-step loss :math:`\\tilde\\ell_t`.
    returns : Tensor, shape [batch, time], detached
        :math:`G_t` of the (convolved) rewards.
    """

    loss: torch.Tensor
    per_step: torch.Tensor
    returns: torch.Tensor


def pcpg_loss(token_logp, step_rewards, mask, *, kernel, gamma: float = 1.0,
              convolve: Sequence[str] = ("reward", "loss"), baseline=None,
              aggregation: Literal["token-mean", "seq-sum-mean"] = "token-mean") -> PCPGLoss:
    r"""PCPG loss: REINFORCE on returns of pseudo-convolved rewards, with pseudo-convolved per-step losses.

    .. math::

        \tilde r = k * r,\quad G_t = \sum_{i\ge t}\gamma^{i-t}\tilde r_i,\quad
        \ell_t = -(G_t - b_t)\log\pi(\hat y_t\mid\hat y_{<t}, x),\quad
        \tilde\ell = k * \ell ,

    with :math:`*` the centred, zero-padded :func:`pseudo_convolution`
    (``convolve`` chooses which of the two are convolved; both by default,
    neither gives plain REINFORCE). The paper's total objective adds a
    teacher-forced cross-entropy, :math:`\lambda\,CE + (1-\lambda)\,PCPG`,
    which the caller forms.

    Parameters
    ----------
    token_logp : Tensor, shape [batch, time]
        Log-probabilities of the sampled tokens (with grad).
    step_rewards : Tensor, shape [batch, time]
        E.g. :func:`edit_distance_step_rewards`, padded.
    mask : Tensor, shape [batch, time]
        Prefix mask of the sampled tokens.
    kernel : Tensor, shape [K], K odd
    gamma : float in [0, 1]
    convolve : subset of {"reward", "loss"}
    baseline : Tensor, shape [batch, time] or [batch], optional
        Subtracted from the returns (e.g. the return of the greedy decode, as in self-critical training).
    aggregation : {"token-mean", "seq-sum-mean"}
        Sum of per-step losses over all tokens divided by the token count, or the mean over rows of each row's sum.

    Returns
    -------
    PCPGLoss
    """
    lp = _bt(token_logp, "token_logp")
    r = _bt(step_rewards, "step_rewards").to(device=lp.device, dtype=lp.dtype)
    check_same_shape(lp, r, names=("token_logp", "step_rewards"))
    m = check_mask(as_tensor(mask, name="mask").to(lp.device), lp)
    check_finite(lp.detach() * m, name="token_logp (inside the mask)")
    bad = set(convolve) - {"reward", "loss"}
    if bad:
        raise ValueError(f"convolve must be a subset of {{'reward', 'loss'}}; got {sorted(bad)}.")
    rr = pseudo_convolution(r, m, kernel=kernel) if "reward" in convolve else r * m
    G = discounted_returns(rr, m, gamma=gamma)
    if baseline is not None:
        b = as_tensor(baseline, name="baseline").to(device=lp.device, dtype=lp.dtype)
        if b.ndim == 1:
            b = b[:, None].expand_as(G)
        check_same_shape(G, b, names=("returns", "baseline"))
        G = (G - b) * m
    ell = -(G.detach() * lp) * m
    per = pseudo_convolution(ell, m, kernel=kernel) if "loss" in convolve else ell
    if aggregation == "token-mean":
        loss = per.sum() / m.sum().clamp_min(1.0)
    elif aggregation == "seq-sum-mean":
        loss = per.sum(dim=1).mean()
    else:
        raise ValueError(f"aggregation must be 'token-mean' or 'seq-sum-mean'; got {aggregation!r}.")
    return PCPGLoss(loss=loss, per_step=per, returns=G.detach())


# -- EPO -----------------------------------------------------------------------------------


def process_reward_returns(turn_rewards, turn_mask, *, gamma: float = 1.0, outcome_rewards=None,
                           outcome_coef: float = 1.0) -> torch.Tensor:
    r"""Returns of per-turn process rewards in a multi-turn dialogue (EPO; reconstructed, module docstring).

    .. math::

        r'_t = r_t + c\,o\,\mathbb 1[t = L-1],\qquad G_t = \sum_{k=t}^{L-1}\gamma^{k-t} r'_k ,

    where :math:`r_t` is the process reward model's score of turn :math:`t`,
    :math:`o` the episode's outcome reward (optional) and :math:`c`
    ``outcome_coef``.

    Shapes
    ------
    turn_rewards, turn_mask : [batch, turns]; outcome_rewards : [batch] -> [batch, turns]
    """
    r = _bt(turn_rewards, "turn_rewards")
    m = check_mask(as_tensor(turn_mask, name="turn_mask").to(r.device), r, name="turn_mask")
    lengths = _prefix(m, "turn_mask")
    check_finite(r * m, name="turn_rewards (on existing turns)")
    r = r * m
    if outcome_rewards is not None:
        o = as_tensor(outcome_rewards, name="outcome_rewards").to(device=r.device, dtype=r.dtype)
        check_ndim(o, 1, name="outcome_rewards", layout="[batch]")
        if o.shape[0] != r.shape[0]:
            raise ValueError(f"outcome_rewards has {o.shape[0]} rows but turn_rewards has {r.shape[0]}.")
        check_finite(o, name="outcome_rewards")
        if bool((lengths < 1).any()):
            raise ValueError("an outcome reward needs at least one turn in every row; some turn_mask rows are empty.")
        r = r.clone()
        rows = torch.arange(r.shape[0], device=r.device)
        r[rows, lengths - 1] = r[rows, lengths - 1] + outcome_coef * o
    return discounted_returns(r, m, gamma=gamma)


def turns_to_tokens(turn_values, token_turn, token_mask) -> torch.Tensor:
    """Give each response token the value of its turn (e.g. the turn's return as the advantage of its tokens).

    Shapes
    ------
    turn_values : [batch, turns]; token_turn : [batch, time] integer turn index of each token;
    token_mask : [batch, time] (1 on the agent's tokens) -> [batch, time], 0 outside the mask
    """
    v = _bt(turn_values, "turn_values")
    idx = as_tensor(token_turn, name="token_turn").to(v.device)
    check_ndim(idx, 2, name="token_turn", layout="[batch, time]")
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"token_turn must hold integer turn indices; got dtype {idx.dtype}.")
    if idx.shape[0] != v.shape[0]:
        raise ValueError(f"token_turn has {idx.shape[0]} rows but turn_values has {v.shape[0]}.")
    m = check_mask(as_tensor(token_mask, name="token_mask").to(v.device), idx.to(v.dtype), name="token_mask")
    inside = m > 0
    if bool(((idx < 0) | (idx >= v.shape[1]))[inside].any()):
        raise ValueError(f"token_turn must lie in [0, {v.shape[1]}) on masked tokens.")
    safe = idx.clamp(0, v.shape[1] - 1).long()
    return torch.gather(v, 1, safe) * m


# -- debate reward -------------------------------------------------------------------------


def debate_outcome(judge_protagonist, judge_alternative) -> torch.Tensor:
    r"""Zero-sum debate outcome for the argumentative agents: +1 if the judge scores the protagonist's decision
    higher given the revealed evidence, -1 if lower, 0 on a tie.

    Shapes
    ------
    judge_protagonist, judge_alternative : [batch] -> [batch] in {-1, 0, 1}
    """
    a = as_tensor(judge_protagonist, name="judge_protagonist")
    b = as_tensor(judge_alternative, name="judge_alternative").to(device=a.device)
    check_same_shape(a, b, names=("judge_protagonist", "judge_alternative"))
    check_finite(a, name="judge_protagonist")
    check_finite(b, name="judge_alternative")
    return torch.sign(a - b.to(a.dtype))


def judge_bradley_terry_loss(score_first, score_second, first_preferred) -> torch.Tensor:
    r"""The judge's training loss: Bradley–Terry cross-entropy :math:`-\log\sigma(\pm(J_1 - J_2))`, mean over pairs.

    Shapes
    ------
    score_first, score_second, first_preferred (bool or 0/1) : [pairs] -> scalar
    """
    s1 = as_tensor(score_first, name="score_first")
    s2 = as_tensor(score_second, name="score_second").to(device=s1.device, dtype=s1.dtype)
    check_same_shape(s1, s2, names=("score_first", "score_second"))
    y = as_tensor(first_preferred, name="first_preferred").to(s1.device)
    if y.shape != s1.shape:
        raise ValueError(f"first_preferred must have the shape of the scores, {tuple(s1.shape)}; got {tuple(y.shape)}.")
    if y.dtype != torch.bool and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("first_preferred must be boolean or 0/1.")
    sign = torch.where(y.to(torch.bool), torch.ones_like(s1), -torch.ones_like(s1))
    return -F.logsigmoid(sign * (s1 - s2)).mean()


def debate_reward(env_rewards, judge_prefers, *, lambda_: float, debate_multiplier: float = 1.0) -> torch.Tensor:
    r"""Combined reward :math:`(1-\lambda)\,r^e + \lambda\,m\,\mathbb 1[\text{judge prefers } a_t]`.

    Parameters
    ----------
    env_rewards : Tensor, any shape
    judge_prefers : Tensor, same shape, bool or 0/1 (or the debate outcome in {-1, 0, 1}: only +1 counts as preferred)
    lambda_ : float in [0, 1]
    debate_multiplier : float
        :math:`m` (``debate_multiplier`` in the authors' code).
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must lie in [0, 1] (the weight of the debate reward); got {lambda_}.")
    re = as_tensor(env_rewards, name="env_rewards")
    if not re.is_floating_point():
        re = re.to(torch.get_default_dtype())
    check_finite(re, name="env_rewards")
    p = as_tensor(judge_prefers, name="judge_prefers").to(re.device)
    if p.shape != re.shape:
        raise ValueError(f"judge_prefers must have the shape of env_rewards, {tuple(re.shape)}; got {tuple(p.shape)}.")
    pref = (p > 0).to(re.dtype) if p.dtype != torch.bool else p.to(re.dtype)
    return (1.0 - lambda_) * re + lambda_ * debate_multiplier * pref


def justifiable_returns(env_rewards, judge_prefers, mask, *, lambda_: float, gamma: float,
                        debate_multiplier: float = 1.0) -> torch.Tensor:
    r"""Discounted returns of the combined reward: :math:`G_t = \sum_{k\ge t}\gamma^{k-t}[(1-\lambda)r^e_k + \lambda r^d_k]`.

    :math:`G_0` is :math:`R_J` of the paper. Linear in :math:`\lambda`: it
    interpolates between the environment return (:math:`\lambda=0`) and the
    debate return (:math:`\lambda=1`).

    Shapes
    ------
    env_rewards, judge_prefers, mask : [batch, time] -> [batch, time]
    """
    r = debate_reward(env_rewards, judge_prefers, lambda_=lambda_, debate_multiplier=debate_multiplier)
    check_ndim(r, 2, name="env_rewards", layout="[batch, time]")
    return discounted_returns(r, mask, gamma=gamma)


# -- self-reference AI feedback ------------------------------------------------------------


@dataclass(frozen=True)
class SelfReferencePreference:
    """Result of :func:`order_swap_debias`.

    Attributes
    ----------
    prob_a : Tensor, shape [batch]
        Debiased probability that answer A is preferred.
    consistent : Tensor, shape [batch], bool
        Both orders prefer the same answer (self-consistency across the swap).
    position_bias : Tensor, shape [batch]
        Half the sum of the first-position preferences minus their complement:
        the judge's tendency to favour whichever answer is shown first (0 for an unbiased judge).
    """

    prob_a: torch.Tensor
    consistent: torch.Tensor
    position_bias: torch.Tensor


def order_swap_debias(p_first_ab, p_first_ba, *, space: Literal["probability", "logit"] = "probability") -> SelfReferencePreference:
    r"""Combine an AI judge's verdicts with the two answers in both orders.

    ``p_first_ab`` is the judge's probability that the **first-listed**
    answer is better when A is listed first; ``p_first_ba`` the same when B
    is listed first. The preference for A is

    .. math::

        P(A\succ B) = \tfrac12\bigl[p_{AB} + (1 - p_{BA})\bigr]

    (``space="probability"``), or
    :math:`\sigma\bigl(\tfrac12[\mathrm{logit}\,p_{AB} - \mathrm{logit}\,p_{BA}]\bigr)`
    (``space="logit"``). The first removes any additive position bias in
    probability exactly (:math:`p_{AB} = p + \delta`, :math:`p_{BA} = 1-p+\delta`);
    the second any additive bias in logits (tested).

    Shapes
    ------
    p_first_ab, p_first_ba : [batch] in (0, 1) -> SelfReferencePreference of [batch] tensors
    """
    a = as_tensor(p_first_ab, name="p_first_ab")
    b = as_tensor(p_first_ba, name="p_first_ba").to(device=a.device, dtype=a.dtype)
    check_ndim(a, 1, name="p_first_ab", layout="[batch]")
    check_same_shape(a, b, names=("p_first_ab", "p_first_ba"))
    check_finite(a, name="p_first_ab")
    check_finite(b, name="p_first_ba")
    if bool(((a < 0) | (a > 1) | (b < 0) | (b > 1)).any()):
        raise ValueError("p_first_ab and p_first_ba must be probabilities in [0, 1].")
    if space == "probability":
        p = 0.5 * (a + 1.0 - b)
    elif space == "logit":
        if bool(((a <= 0) | (a >= 1) | (b <= 0) | (b >= 1)).any()):
            raise ValueError("space='logit' needs probabilities strictly inside (0, 1).")
        p = torch.sigmoid(0.5 * (torch.logit(a) - torch.logit(b)))
    else:
        raise ValueError(f"space must be 'probability' or 'logit'; got {space!r}.")
    consistent = (a > 0.5) == (b < 0.5)
    return SelfReferencePreference(prob_a=p, consistent=consistent & (a != 0.5) & (b != 0.5),
                                   position_bias=0.5 * (a + b) - 0.5)


def semantic_perplexity(token_logp, mask, *, paraphrase_ids=None) -> torch.Tensor:
    r"""Perplexity of a verdict statement, :math:`\exp(-\frac{1}{|y|}\sum_t\log p(y_t\mid\cdot))`, pooled over paraphrases.

    With ``paraphrase_ids`` (rows that state the same verdict in different
    words share an id) the mean negative log-likelihood per token is
    averaged over the rows of an id before exponentiating: the perplexity of
    the *meaning* rather than of one wording (our reading of "semantic
    perplexity"; module docstring).

    Shapes
    ------
    token_logp, mask : [rows, time] -> [rows] (or [ids], in increasing id order, with ``paraphrase_ids`` [rows])
    """
    lp = _bt(token_logp, "token_logp")
    m = check_mask(as_tensor(mask, name="mask").to(lp.device), lp)
    check_finite(lp * m, name="token_logp (on verdict tokens)")
    n = m.sum(dim=1)
    if bool((n < 1).any()):
        raise ValueError("every verdict needs at least one token; some mask rows are all zero.")
    nll = -(lp * m).sum(dim=1) / n
    if paraphrase_ids is None:
        return torch.exp(nll)
    ids = as_tensor(paraphrase_ids, name="paraphrase_ids").to(lp.device)
    if ids.shape != nll.shape or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"paraphrase_ids must be an integer tensor of shape [rows] = {tuple(nll.shape)}.")
    uniq, inv = torch.unique(ids, return_inverse=True)
    k = uniq.shape[0]
    s = torch.zeros(k, dtype=nll.dtype, device=nll.device).index_add(0, inv, nll)
    c = torch.zeros(k, dtype=nll.dtype, device=nll.device).index_add(0, inv, torch.ones_like(nll))
    return torch.exp(s / c)


def preference_strength(ppl_prefer_a, ppl_prefer_b, *, ppl_prefer_a_swapped=None, ppl_prefer_b_swapped=None) -> torch.Tensor:
    r"""Preference strength :math:`s = \log\mathrm{PPL}(\text{"B is better"}) - \log\mathrm{PPL}(\text{"A is better"})`.

    Positive when the annotator finds the verdict "A is better" less
    perplexing. With the swapped-order perplexities the strength is the mean
    of the two orders (order-swap debiasing of the strength too).

    Shapes
    ------
    all inputs : [batch] positive -> [batch]
    """
    pa = as_tensor(ppl_prefer_a, name="ppl_prefer_a")
    pb = as_tensor(ppl_prefer_b, name="ppl_prefer_b").to(device=pa.device, dtype=pa.dtype)
    check_same_shape(pa, pb, names=("ppl_prefer_a", "ppl_prefer_b"))
    for t, nme in ((pa, "ppl_prefer_a"), (pb, "ppl_prefer_b")):
        check_finite(t, name=nme)
        if bool((t <= 0).any()):
            raise ValueError(f"{nme} must be positive (a perplexity).")
    s = torch.log(pb) - torch.log(pa)
    if (ppl_prefer_a_swapped is None) != (ppl_prefer_b_swapped is None):
        raise ValueError("give both swapped-order perplexities or neither.")
    if ppl_prefer_a_swapped is not None:
        s2 = preference_strength(ppl_prefer_a_swapped, ppl_prefer_b_swapped)
        check_same_shape(s, s2, names=("ppl_prefer_a", "ppl_prefer_a_swapped"))
        s = 0.5 * (s + s2.to(s.dtype))
    return s


def margin_reward_model_loss(reward_chosen, reward_rejected, margin=None, *, margin_scale: float = 1.0,
                             lm_nll=None, lm_loss_coef: float = 0.0) -> torch.Tensor:
    r"""Reward-model loss with a preference-strength margin: :math:`-\log\sigma(r_c - r_r - \kappa\,m)`, mean over pairs.

    ``margin=None`` is the plain Bradley–Terry loss; a larger margin for
    strongly preferred pairs is Llama 2's margin loss, here fed by
    :func:`preference_strength`. With ``lm_nll`` (the language-model
    cross-entropy of the chosen responses, a scalar) the loss adds
    ``lm_loss_coef * lm_nll``, as the self-reference-feedback authors'
    ``LogExpWithLMLoss`` does (coefficient 1.0 by default in their
    ``parse.py``; module docstring).

    Shapes
    ------
    reward_chosen, reward_rejected, margin : [pairs] -> scalar; lm_nll : scalar
    """
    if not (lm_loss_coef >= 0 and lm_loss_coef < float("inf")):
        raise ValueError(f"lm_loss_coef must be a finite number >= 0; got {lm_loss_coef}.")
    rc = as_tensor(reward_chosen, name="reward_chosen")
    rr = as_tensor(reward_rejected, name="reward_rejected").to(device=rc.device, dtype=rc.dtype)
    check_same_shape(rc, rr, names=("reward_chosen", "reward_rejected"))
    check_finite(rc.detach(), name="reward_chosen")
    check_finite(rr.detach(), name="reward_rejected")
    z = rc - rr
    if margin is not None:
        mg = as_tensor(margin, name="margin").to(device=rc.device, dtype=rc.dtype)
        check_same_shape(rc, mg, names=("reward_chosen", "margin"))
        check_finite(mg, name="margin")
        z = z - margin_scale * mg
    loss = -F.logsigmoid(z).mean()
    if lm_nll is not None and lm_loss_coef > 0:
        nll = as_tensor(lm_nll, name="lm_nll").to(device=rc.device, dtype=rc.dtype)
        if nll.ndim != 0:
            raise ValueError(f"lm_nll must be a scalar (the mean token cross-entropy); got shape {tuple(nll.shape)}.")
        loss = loss + lm_loss_coef * nll
    return loss
