r"""Contrastive Policy Gradient (CoPG): off-policy RL on sequence-level rewards without importance sampling.

With the KL-regularised reward of a response :math:`y` to a prompt :math:`x`,

.. math::

    R^\pi_\beta(x, y) = R(x, y) - \beta \ln\frac{\pi(y\mid x)}{\pi_{ref}(y\mid x)},

CoPG minimises, over pairs :math:`(y, y')` of responses to the same prompt
drawn from **any** sampling distribution :math:`\mu` (offline data, the
current policy, a mixture),

.. math::

    \ell_{CoPG}(y, y'; \pi) = \bigl(R^\pi_\beta(x, y) - R^\pi_\beta(x, y')\bigr)^2 .

At the KL-regularised optimum :math:`\pi^*(y\mid x)\propto\pi_{ref}(y\mid x)\,e^{R(x,y)/\beta}`,
:math:`R^{\pi^*}_\beta(x, y) = \beta\ln Z(x)` does not depend on :math:`y`, so
every pair's loss is exactly 0 whatever :math:`\mu` is: the loss is
off-policy without importance weights. Its gradient,

.. math::

    \nabla_\theta \ell = -2\beta\,\bigl(R^\pi_\beta(y) - R^\pi_\beta(y')\bigr)
    \bigl(\nabla_\theta\ln\pi(y) - \nabla_\theta\ln\pi(y')\bigr),

is a policy gradient in which each response's baseline is the other's
regularised reward (Flet-Berliac et al. 2024, the "contrastive" baseline).
With a preference pair whose reward gap is :math:`R(y_w) - R(y_l) = 1/2`,
:math:`\ell = \beta^2 (h - 1/(2\beta))^2` where :math:`h` is DPO's log-ratio
margin: :math:`\beta^2` times IPO with TRL's/OpenRLHF's target margin (tested).

What is confirmed and what is reconstructed
-------------------------------------------
The abstract (seed) confirms: off-policy estimation of the optimal policy, no
importance sampling, a state baseline, generalisation of IPO and of policy
gradient, a toy bandit. The squared-difference form, the regularised reward
and the optimum are from ``notes/control_anchors.md`` section 14 (third-party
restatements, the Command-A report); the paper's **constant factor** (1/2,
1/4 or 1/β in front) is **unconfirmed**: ``scale`` multiplies the loss and
changes neither the minimiser nor the direction of the gradient. For
:math:`k>2` responses per prompt the loss here is the **mean over all
within-prompt pairs** (the notes' :math:`1/(k-1)\sum_{i>j}` differs by a
constant per group size); this is our choice, stated, not the paper's. No
official code exists (notes), so there is no framework convention to copy.

Verified here (``tests/estimators/test_contrastive_pg.py``): the loss is 0 at
:math:`\pi^*` for any batch; minimising the exact population loss on a
10-armed bandit from several sampling distributions :math:`\mu\ne\pi_{ref}`
converges to :math:`\pi^*`, and so does minimising the empirical loss of one
fixed offline sample of pairs that connects all arms; off-policy PG without
importance weights and with a constant baseline converges elsewhere, while
its :math:`\mu`-mean-baseline version is exactly CoPG's gradient (derived in
:func:`naive_offpolicy_pg_direction`); the IPO reduction; invariance to a
per-prompt shift of the rewards.

References
----------
Flet-Berliac, Grinsztajn, Strub, Choi, Cremer, Ahmadian, Chandak, Azar,
Pietquin, Geist, "Contrastive Policy Gradient: Aligning LLMs on
sequence-level scores in a supervised-friendly fashion", EMNLP 2024,
arXiv 2406.19185.
Azar et al., "A General Theoretical Paradigm to Understand Learning from
Human Preferences", AISTATS 2024 (IPO).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import as_tensor, check_finite, check_ndim, check_same_shape

__all__ = [
    "CoPGLoss",
    "regularised_reward",
    "within_group_pairs",
    "copg_pair_loss",
    "copg_loss",
    "copg_optimal_policy",
    "copg_bandit_objective",
    "naive_offpolicy_pg_direction",
]


@dataclass(frozen=True)
class CoPGLoss:
    """Result of :func:`copg_loss` / :func:`copg_pair_loss`.

    Attributes
    ----------
    loss : Tensor, scalar
        Mean of ``per_pair``: what to backpropagate.
    per_pair : Tensor, shape [pairs]
        ``scale`` times the squared difference of regularised rewards.
    first, second : Tensor, shape [pairs], int64
        Rows of the two responses of each pair (``copg_pair_loss``: ``arange``).
    margin : Tensor, shape [pairs]
        DPO-style log-ratio margin :math:`h` of (first, second) oriented so the
        higher-reward response is "chosen" (with grad; for logging and the IPO link).
    regularised_reward : Tensor, shape [batch], detached
        :math:`R^\\pi_\\beta` of every response.
    accuracy : float
        Fraction of pairs with unequal rewards whose log-ratio margin has the sign of the reward gap.
    """

    loss: torch.Tensor
    per_pair: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor
    margin: torch.Tensor
    regularised_reward: torch.Tensor
    accuracy: float


def _vec(x, name: str) -> torch.Tensor:
    t = as_tensor(x, name=name)
    check_ndim(t, 1, name=name, layout="[batch]")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    check_finite(t.detach(), name=name)
    return t


def regularised_reward(logp, ref_logp, rewards, *, beta: float) -> torch.Tensor:
    r""":math:`R^\pi_\beta = R - \beta(\log\pi - \log\pi_{ref})`, elementwise.

    Shapes
    ------
    logp, ref_logp, rewards : [batch] -> [batch] (dtype and device of ``logp``; grad flows through ``logp``)
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (the KL-regularisation strength); got {beta}.")
    lp, ref, r = _vec(logp, "logp"), _vec(ref_logp, "ref_logp"), _vec(rewards, "rewards")
    check_same_shape(lp, ref, names=("logp", "ref_logp"))
    check_same_shape(lp, r, names=("logp", "rewards"))
    ref = ref.to(device=lp.device, dtype=lp.dtype)
    r = r.to(device=lp.device, dtype=lp.dtype)
    return r - beta * (lp - ref)


def within_group_pairs(group_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs ``(i, j)``, ``i < j``, of rows with the same group id, in increasing (i, j) order.

    Shapes
    ------
    group_ids : [batch] integer -> (first [pairs], second [pairs]) int64
    """
    g = as_tensor(group_ids, name="group_ids")
    check_ndim(g, 1, name="group_ids", layout="[batch]")
    if g.is_floating_point() or g.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor; got dtype {g.dtype}. Map prompts to integer ids first.")
    n = g.shape[0]
    idx = torch.arange(n, device=g.device)
    cand = (g[:, None] == g[None, :]) & (idx[:, None] < idx[None, :])
    a, b = cand.nonzero(as_tuple=True)
    return a, b


def _finish(per_pair, a, b, lp, ref, r, R) -> CoPGLoss:
    with torch.no_grad():
        gap = r[a] - r[b]
        sign = torch.sign(gap)
        lr = lp.detach() - ref
        h_raw = lr[a] - lr[b]
        informative = sign != 0
        acc = float(((torch.sign(h_raw) == sign) & informative).sum()) / max(int(informative.sum()), 1)
    lr_g = lp - ref
    orient = torch.where(gap >= 0, torch.ones_like(gap), -torch.ones_like(gap))
    margin = orient * (lr_g[a] - lr_g[b])
    return CoPGLoss(loss=per_pair.mean(), per_pair=per_pair, first=a, second=b, margin=margin,
                    regularised_reward=R.detach(), accuracy=acc)


def copg_pair_loss(logp_first, logp_second, ref_logp_first, ref_logp_second, reward_first, reward_second, *,
                   beta: float, scale: float = 1.0) -> CoPGLoss:
    r"""CoPG loss of explicit pairs: :math:`s\,(R^\pi_\beta(y) - R^\pi_\beta(y'))^2`, mean over pairs.

    Parameters
    ----------
    logp_first, logp_second : Tensor, shape [pairs]
        Sequence log-probabilities of the two responses under the policy (with grad).
    ref_logp_first, ref_logp_second : Tensor, shape [pairs]
        The same under the reference policy.
    reward_first, reward_second : Tensor, shape [pairs]
        Sequence-level rewards (any real scores: unit tests, a reward model, preferences).
    beta : float, > 0
    scale : float, > 0
        Constant in front of the square (the paper's constant is unconfirmed; see the module docstring).

    Returns
    -------
    CoPGLoss
        ``first``/``second`` index the pairs; ``regularised_reward`` holds
        the first responses' values followed by the second responses'.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0; got {scale}.")
    lp = torch.cat([_vec(logp_first, "logp_first"), _vec(logp_second, "logp_second").to(as_tensor(logp_first, name="x").device)])
    n = as_tensor(logp_first, name="logp_first").shape[0]
    if as_tensor(logp_second, name="logp_second").shape[0] != n:
        raise ValueError("logp_first and logp_second must have the same length (one entry per pair).")
    if n == 0:
        raise ValueError("no pairs: logp_first is empty. Skip the update when a batch yields no pair.")
    ref = torch.cat([_vec(ref_logp_first, "ref_logp_first"), _vec(ref_logp_second, "ref_logp_second")])
    r = torch.cat([_vec(reward_first, "reward_first"), _vec(reward_second, "reward_second")])
    R = regularised_reward(lp, ref, r, beta=beta)
    ref = ref.to(device=lp.device, dtype=lp.dtype)
    r = r.to(device=lp.device, dtype=lp.dtype)
    a = torch.arange(n, device=lp.device)
    b = a + n
    per = scale * (R[a] - R[b]) ** 2
    return _finish(per, a, b, lp, ref, r, R)


def copg_loss(logp, ref_logp, rewards, group_ids, *, beta: float, scale: float = 1.0) -> CoPGLoss | None:
    r"""CoPG loss over all within-group pairs of a batch (responses to the same prompt share a group id).

    .. math::

        L = \frac{1}{|P|}\sum_{(i,j)\in P} s\,\bigl(R^\pi_\beta(y_i) - R^\pi_\beta(y_j)\bigr)^2,
        \qquad P = \{(i,j): i<j,\ g_i = g_j\}.

    Pairs with equal rewards are kept: they still pull the two log-ratios
    together (unlike DPO, CoPG needs no preference).

    Parameters
    ----------
    logp, ref_logp : Tensor, shape [batch]
        Sequence log-probabilities under the policy (with grad) and the reference.
    rewards : Tensor, shape [batch]
    group_ids : Tensor, shape [batch], integer
    beta : float, > 0
    scale : float, > 0

    Returns
    -------
    CoPGLoss, or None when no group has two responses (skip the update).
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0; got {scale}.")
    R = regularised_reward(logp, ref_logp, rewards, beta=beta)
    lp = as_tensor(logp, name="logp")
    g = as_tensor(group_ids, name="group_ids")
    if g.shape != lp.shape:
        raise ValueError(f"group_ids must have the shape of logp, {tuple(lp.shape)}; got {tuple(g.shape)}.")
    a, b = within_group_pairs(g.to(lp.device))
    if a.numel() == 0:
        return None
    ref = as_tensor(ref_logp, name="ref_logp").to(device=lp.device, dtype=lp.dtype)
    r = as_tensor(rewards, name="rewards").to(device=lp.device, dtype=lp.dtype)
    per = scale * (R[a] - R[b]) ** 2
    return _finish(per, a, b, lp, ref, r, R)


def copg_optimal_policy(ref_logp, rewards, *, beta: float) -> torch.Tensor:
    r"""Log-probabilities of :math:`\pi^*\propto\pi_{ref}\,e^{R/\beta}` on a finite action set.

    Shapes
    ------
    ref_logp, rewards : [..., actions] -> [..., actions] (log-softmax of ``ref_logp + rewards/beta``)
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got {beta}.")
    ref = as_tensor(ref_logp, name="ref_logp")
    r = as_tensor(rewards, name="rewards").to(ref.dtype)
    check_same_shape(ref, r, names=("ref_logp", "rewards"))
    return torch.log_softmax(ref + r / beta, dim=-1)


def copg_bandit_objective(logits, ref_logp, rewards, sampling_probs, *, beta: float, scale: float = 1.0) -> torch.Tensor:
    r"""Exact population CoPG loss of a softmax bandit policy, pairs drawn i.i.d. from :math:`\mu`.

    .. math::

        L(\theta) = s\sum_{a,b}\mu(a)\mu(b)\bigl(R^{\pi_\theta}_\beta(a) - R^{\pi_\theta}_\beta(b)\bigr)^2
                  = 2s\,\mathrm{Var}_{a\sim\mu}\bigl[R^{\pi_\theta}_\beta(a)\bigr].

    Zero exactly at :math:`\pi^*` (for every :math:`\mu`); with :math:`\mu`
    of full support :math:`\pi^*` is its unique minimiser over the simplex.

    Shapes
    ------
    logits, ref_logp, rewards, sampling_probs : [actions] -> scalar
    """
    th = as_tensor(logits, name="logits")
    check_ndim(th, 1, name="logits", layout="[actions]")
    mu = as_tensor(sampling_probs, name="sampling_probs").to(th.dtype)
    check_same_shape(th, mu, names=("logits", "sampling_probs"))
    if bool((mu < 0).any()) or abs(float(mu.sum()) - 1.0) > 1e-8:
        raise ValueError("sampling_probs must be a probability vector (non-negative, summing to 1).")
    R = regularised_reward(torch.log_softmax(th, dim=-1), ref_logp, rewards, beta=beta)
    mean = (mu * R).sum()
    return 2.0 * scale * (mu * (R - mean) ** 2).sum()


def naive_offpolicy_pg_direction(logits, ref_logp, rewards, sampling_probs, *, beta: float,
                                 baseline: float | None = 0.0) -> torch.Tensor:
    r"""Ascent direction of off-policy PG **without** importance weights on the regularised reward.

    .. math::

        d_b(\theta) = \sum_a \mu(a)\bigl(R^{\pi_\theta}_\beta(a) - b\bigr)\nabla_\theta\ln\pi_\theta(a)
                    = \mu\odot(R - b) - \pi\,\textstyle\sum_a\mu(a)(R(a) - b)

    for a softmax policy (:math:`\nabla_\theta\ln\pi(a) = e_a - \pi`), with
    :math:`R^\pi_\beta` treated as a fixed reward. With a constant baseline
    ``b`` (default 0) its zero is **not** :math:`\pi^*` when
    :math:`\mu\ne\pi_\theta`: the bias CoPG removes. With ``baseline=None``
    :math:`b = \bar R_\mu = \sum_a\mu(a)R^{\pi}_\beta(a)`, "the right state
    baseline", and then :math:`\nabla_\theta L_{CoPG} = -4s\beta\,d_{\bar R_\mu}`
    (derived here from :func:`copg_bandit_objective`; tested with autograd):
    CoPG is off-policy PG with the regularised reward and the :math:`\mu`-mean baseline.

    Shapes
    ------
    logits, ref_logp, rewards, sampling_probs : [actions] -> [actions] (detached)
    """
    th = as_tensor(logits, name="logits")
    mu = as_tensor(sampling_probs, name="sampling_probs").to(th.dtype)
    check_same_shape(th, mu, names=("logits", "sampling_probs"))
    with torch.no_grad():
        logpi = torch.log_softmax(th, dim=-1)
        R = regularised_reward(logpi, ref_logp, rewards, beta=beta)
        b = (mu * R).sum() if baseline is None else torch.as_tensor(float(baseline), dtype=R.dtype, device=R.device)
        c = R - b
        return mu * c - logpi.exp() * (mu * c).sum()
