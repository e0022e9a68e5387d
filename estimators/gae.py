r"""Token-level generalized advantage estimation, its extended form for truncated responses, and the PPO value loss.

One general function, :func:`generalized_advantage_estimation`, runs the GAE
recursion backwards over the response tokens with a per-token discount and an
optional bootstrap value after the last token. Named special cases:

- PPO's token GAE (``discount = gamma`` everywhere, terminal value 0):
  :func:`token_gae`; with ``whiten="verl"`` it reproduces verl's ``gae`` estimator;
- T-PPO's extended GAE (EGAE) for responses cut off before EOS (bootstrap with
  the critic's value at the cut): :func:`extended_gae`;
- POAD's Bellman backup with action decomposition (discount 1 inside an
  action): :func:`polab.estimators.action_decomposition.bad_gae`.

Also here: the clipped PPO value loss (:func:`clipped_value_loss`), the
KL-shaped token rewards of the PPO recipe of "Unpacking DPO and PPO"
(:func:`kl_shaped_rewards`), and T-PPO's token filters
(:func:`truncated_ppo_token_masks`).

References
----------
Schulman, Moritz, Levine, Jordan, Abbeel, "High-Dimensional Continuous Control
Using Generalized Advantage Estimation", ICLR 2016 (GAE, eqs. 11-16).
Fan et al. (ByteDance Seed), "Truncated Proximal Policy Optimization",
arXiv 2506.15050, 2025 (T-PPO, EGAE).
Ivison, Wang, Liu, Wu, Pyatkin, Lambert, Smith, Choi, Hajishirzi, "Unpacking
DPO and PPO: Disentangling Best Practices for Learning from Preference
Feedback", NeurIPS 2024.
Ziegler et al., "Fine-Tuning Language Models from Human Preferences", arXiv
1909.08593, 2019 (per-token KL penalty in the reward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .advantages import batch_whiten
from .checks import as_tensor, check_finite, check_mask, check_ndim, check_same_shape
from .policy_loss import AGGREGATIONS, aggregate

__all__ = [
    "GAEResult",
    "ValueLoss",
    "generalized_advantage_estimation",
    "token_gae",
    "extended_gae",
    "masked_whiten",
    "clipped_value_loss",
    "kl_shaped_rewards",
    "TruncatedPPOMasks",
    "truncated_ppo_token_masks",
    "PPO_RECIPE_DEFAULTS",
]

#: GAE constants of the PPO recipe used for LLM post-training. gamma = 1 (no
#: discount within a response) and lambda = 0.95 are TRL's ``PPOConfig``
#: defaults (``trl/trainer/ppo_config.py``, HEAD f2cd577) and open-instruct's;
#: Ivison et al. (2024) train PPO in that family of code bases. The exact
#: values of their runs are not confirmed here; pass your own when they matter.
PPO_RECIPE_DEFAULTS: dict[str, float] = {"gamma": 1.0, "lambda_": 0.95}


@dataclass(frozen=True)
class GAEResult:
    r"""Result of a GAE computation.

    Attributes
    ----------
    advantages : Tensor, shape [batch, time]
        GAE advantages (whitened if asked), zero outside the mask.
    returns : Tensor, shape [batch, time]
        Value targets ``advantages_raw + values`` (before whitening), zero outside the mask.
    deltas : Tensor, shape [batch, time]
        TD errors :math:`\delta_t`, zero outside the mask.
    """

    advantages: torch.Tensor
    returns: torch.Tensor
    deltas: torch.Tensor


def _check_btv(rewards, values, mask):
    r = as_tensor(rewards, name="rewards")
    check_ndim(r, 2, name="rewards", layout="[batch, time]")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    v = as_tensor(values, name="values").to(device=r.device, dtype=r.dtype)
    check_same_shape(r, v, names=("rewards", "values"))
    m = check_mask(as_tensor(mask, name="mask").to(r.device), r)
    check_finite(r, name="rewards")
    check_finite(torch.where(m > 0, v, torch.zeros_like(v)), name="values (on response tokens)")
    return r, v, m


def _per_token(x, like: torch.Tensor, *, name: str) -> torch.Tensor:
    """A float or a [batch, time] tensor in [0, 1] as a [batch, time] tensor like ``like``."""
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        t = x.to(device=like.device, dtype=like.dtype)
        check_same_shape(like, t, names=("rewards", name))
        check_finite(t, name=name)
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError(f"{name} must lie in [0, 1] on every token.")
        return t
    f = float(x)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1]; got {x}.")
    return torch.full_like(like, f)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, *, unbiased: bool = True, epsilon: float = 1e-8) -> torch.Tensor:
    r"""Whiten over the masked entries: :math:`(x-\mu)/\sqrt{\sigma^2+\epsilon}`; zero outside the mask.

    ``unbiased=True`` uses the Bessel-corrected variance, as verl's
    ``verl/utils/torch_functional.py::masked_whiten`` (``masked_var(...,
    unbiased=True)``, volcengine/verl 012be9d) and TRL's do; ``False`` the
    population variance (as :func:`polab.estimators.advantages.batch_whiten`).

    Shapes: ``values`` and ``mask`` any shape, the same -> same.
    """
    return batch_whiten(values, mask, unbiased=unbiased, epsilon=epsilon)


def generalized_advantage_estimation(
    rewards,
    values,
    mask,
    *,
    gamma,
    lambda_,
    bootstrap_values=None,
    whiten: Literal["none", "verl", "population"] = "none",
) -> GAEResult:
    r"""GAE over response tokens with a per-token discount and an optional bootstrap value.

    Going backwards over the response tokens :math:`t` of each row,

    .. math::

        \delta_t = r_t + \gamma_t V_{t+1} - V_t,\qquad
        \hat A_t = \delta_t + \gamma_t \lambda_t \hat A_{t+1},

    with :math:`V_{T} = \hat A_T = 0` after the last response token, or
    :math:`V_{T} =` ``bootstrap_values`` (and :math:`\hat A_T = 0`) where
    given (Schulman et al. 2016, eq. 16 with a per-step discount). Tokens
    outside ``mask`` are skipped: the recursion carries :math:`V` and
    :math:`\hat A` across them unchanged, as verl does for observation tokens
    of multi-turn rollouts. Returns are :math:`\hat A_t + V_t`.

    Parameters
    ----------
    rewards : Tensor, shape [batch, time]
        Per-token rewards (for outcome rewards: the score on the last response
        token, minus any per-token KL penalty).
    values : Tensor, shape [batch, time]
        Critic values :math:`V_t` of the state before token :math:`t`.
    mask : Tensor, shape [batch, time]
        1 on tokens the policy generated.
    gamma : float in [0, 1], or Tensor [batch, time]
        Discount :math:`\gamma_t` applied from token :math:`t` to the next
        response token (a tensor gives one per token, as action decomposition needs).
    lambda_ : float in [0, 1], or Tensor [batch, time]
        GAE :math:`\lambda_t` (a tensor gives one per token).
    bootstrap_values : Tensor, shape [batch], optional
        :math:`V` of the state after the last response token (non-terminal
        rows); 0 where not given. Rows whose bootstrap is 0 are terminal.
    whiten : {"none", "verl", "population"}
        Whiten the advantages over all response tokens of the batch: ``"verl"``
        (Bessel-corrected variance, verl's ``masked_whiten``) or
        ``"population"``. Returns are never whitened.

    Returns
    -------
    GAEResult

    Notes
    -----
    With ``gamma=1``, ``lambda_=1`` and no bootstrap, :math:`\hat A_t =
    \sum_{k\ge t} r_k - V_t` (Monte Carlo return minus the baseline); with
    ``lambda_=0``, :math:`\hat A_t = \delta_t`. Both are tested.
    """
    r, v, m = _check_btv(rewards, values, mask)
    B, T = r.shape
    g = _per_token(gamma, r, name="gamma")
    lam = _per_token(lambda_, r, name="lambda_")
    if bootstrap_values is None:
        next_v = torch.zeros(B, dtype=r.dtype, device=r.device)
    else:
        bv = as_tensor(bootstrap_values, name="bootstrap_values").to(device=r.device, dtype=r.dtype)
        check_ndim(bv, 1, name="bootstrap_values", layout="[batch]")
        if bv.shape[0] != B:
            raise ValueError(f"bootstrap_values has {bv.shape[0]} rows but rewards has {B}.")
        check_finite(bv, name="bootstrap_values")
        next_v = bv.clone()
    if whiten not in ("none", "verl", "population"):
        raise ValueError(f"whiten must be 'none', 'verl' or 'population'; got {whiten!r}.")

    last = torch.zeros(B, dtype=r.dtype, device=r.device)
    adv = torch.zeros_like(r)
    deltas = torch.zeros_like(r)
    for t in range(T - 1, -1, -1):
        mt = m[:, t]
        delta = r[:, t] + g[:, t] * next_v - v[:, t]
        a = delta + g[:, t] * lam[:, t] * last
        on = mt > 0
        next_v = torch.where(on, v[:, t], next_v)
        last = torch.where(on, a, last)
        adv[:, t] = torch.where(on, a, torch.zeros_like(a))
        deltas[:, t] = torch.where(on, delta, torch.zeros_like(delta))
    returns = torch.where(m > 0, adv + v, torch.zeros_like(v))
    if whiten != "none":
        adv = masked_whiten(adv, m, unbiased=(whiten == "verl"))
    return GAEResult(advantages=adv, returns=returns, deltas=deltas)


def token_gae(rewards, values, mask, *, gamma: float = 1.0, lambda_: float = 0.95, whiten: Literal["none", "verl", "population"] = "none") -> GAEResult:
    """PPO's token-level GAE for complete responses (terminal after the last response token).

    ``token_gae(r, v, m, gamma=g, lambda_=l, whiten="verl")`` reproduces
    verl's ``compute_gae_advantage_return`` (``verl/trainer/ppo/core_algos.py``,
    volcengine/verl 012be9d): same skipping of masked tokens, the same returns
    (before whitening) and whitened advantages with the Bessel-corrected
    variance and epsilon 1e-8. Shapes as in :func:`generalized_advantage_estimation`.
    """
    return generalized_advantage_estimation(rewards, values, mask, gamma=gamma, lambda_=lambda_, whiten=whiten)


def extended_gae(
    rewards,
    values,
    mask,
    truncated,
    bootstrap_values=None,
    *,
    gamma: float = 1.0,
    lambda_: float = 0.95,
    whiten: Literal["none", "verl", "population"] = "none",
    truncation: Literal["last-value", "bootstrap"] | None = None,
) -> GAEResult:
    r"""T-PPO's extended GAE (EGAE): GAE on responses that may be cut off before EOS.

    For a complete response the recursion is PPO's (terminal value 0). For a
    response truncated after :math:`l` generated tokens (no EOS yet) the GAE
    sum is cut at the truncation point,

    .. math::

        \hat A_t = \sum_{k=0}^{l-t-1} (\gamma\lambda)^k \delta_{t+k},\qquad
        \delta_{l-1} = r_{l-1} + \gamma V(s_l) - V(s_{l-1}),

    and the value of the unseen next state :math:`s_l` is filled in by one of
    two rules (``truncation``):

    - ``"last-value"`` (T-PPO's form): :math:`V(s_l) = V(s_{l-1})`, the last
      value the critic computed, so :math:`\delta_{l-1} = r_{l-1} + (\gamma-1)
      V(s_{l-1})` (just :math:`r_{l-1}` at :math:`\gamma=1`);
      ``bootstrap_values`` is not needed;
    - ``"bootstrap"``: :math:`V(s_l)` = ``bootstrap_values``, the critic's
      value of the state after the last generated token, computed at an
      extra position. Then the full-response GAE satisfies
      :math:`\hat A^{full}_t = \hat A^{EGAE}_t + (\gamma\lambda)^{l-t}\hat A^{full}_l`
      when :math:`V(s_l)` is the value the full response would use (an exact
      identity; tested).

    Parameters
    ----------
    rewards, values, mask : Tensor, shape [batch, time]
        As in :func:`generalized_advantage_estimation`. In T-PPO an unfinished
        response has no task score: its rewards carry at most the per-token KL
        penalty.
    truncated : Tensor, shape [batch], bool
        True where the response has not finished (no EOS within the window).
    bootstrap_values : Tensor, shape [batch], optional
        :math:`V(s_l)` for ``truncation="bootstrap"``; used only on truncated rows.
    gamma, lambda_ : float
    whiten : {"none", "verl", "population"}
    truncation : {"last-value", "bootstrap"}, optional
        When None (the default): ``"bootstrap"`` if ``bootstrap_values`` is
        given (the behaviour of earlier polab versions, kept for existing
        calls), else ``"last-value"`` (T-PPO's form).

    Returns
    -------
    GAEResult

    Notes
    -----
    Source status: the paper body (Fan et al. 2025) was not readable through
    our search tool; the ``"last-value"`` rule, :math:`V(s_l) = V(s_{l-1})` with
    the GAE cut at the truncation point, is the paper's stated assumption as
    reported by its public review discussion and a secondary summary (issue
    13). ``"bootstrap"`` is polab's earlier reading (an extra critic position
    after the cut), a legitimate alternative that is exact for the identity
    above but is not T-PPO's.
    """
    tr = as_tensor(truncated, name="truncated")
    check_ndim(tr, 1, name="truncated", layout="[batch]")
    if tr.dtype != torch.bool:
        if not bool(((tr == 0) | (tr == 1)).all()):
            raise ValueError("truncated must be boolean (or 0/1).")
        tr = tr.bool()
    if truncation is None:
        truncation = "last-value" if bootstrap_values is None else "bootstrap"
    if truncation not in ("last-value", "bootstrap"):
        raise ValueError(f"truncation must be 'last-value' (T-PPO) or 'bootstrap'; got {truncation!r}.")
    # Float dtype of the recursion (as _check_btv picks it): integer rewards run in the default float
    # dtype, so a bootstrap of 0.7 is not truncated to an integer first.
    r_t = as_tensor(rewards, name="rewards")
    r_dtype = r_t.dtype if r_t.is_floating_point() else torch.get_default_dtype()
    if truncation == "bootstrap":
        if bootstrap_values is None:
            raise ValueError("truncation='bootstrap' needs bootstrap_values (the critic's V after the last generated token), shape [batch].")
        bv = as_tensor(bootstrap_values, name="bootstrap_values")
        check_ndim(bv, 1, name="bootstrap_values", layout="[batch]")
        if tr.shape[0] != bv.shape[0]:
            raise ValueError(f"truncated ({tr.shape[0]}) and bootstrap_values ({bv.shape[0]}) must have one entry per row.")
        if not bv.is_floating_point():
            bv = bv.to(torch.get_default_dtype())
        bv = bv.to(r_dtype)
    else:
        if bootstrap_values is not None:
            raise ValueError("bootstrap_values is not used with truncation='last-value'; drop it or pass truncation='bootstrap'.")
        r, v, m = _check_btv(rewards, values, mask)
        if tr.shape[0] != r.shape[0]:
            raise ValueError(f"truncated has {tr.shape[0]} entries but rewards has {r.shape[0]} rows.")
        # V(s_l) := V(s_{l-1}): the value at each row's last response token (0 for an empty row).
        pos = torch.arange(r.shape[1], device=r.device)
        last = torch.where(m > 0, pos[None, :], torch.full_like(pos[None, :], -1)).max(dim=1).values
        bv = torch.where(last >= 0, v.gather(1, last.clamp_min(0)[:, None])[:, 0], torch.zeros(r.shape[0], dtype=v.dtype, device=v.device))
    boot = torch.where(tr.to(bv.device), bv, torch.zeros_like(bv))
    return generalized_advantage_estimation(rewards, values, mask, gamma=gamma, lambda_=lambda_, bootstrap_values=boot, whiten=whiten)


@dataclass(frozen=True)
class TruncatedPPOMasks:
    """Token filters of T-PPO.

    Attributes
    ----------
    policy_mask : Tensor, shape [batch, time]
        Response tokens generated in the current window (the policy loss uses these).
    value_mask : Tensor, shape [batch, time]
        Response tokens of rows that have finished (the value loss uses these:
        their return targets are complete).
    """

    policy_mask: torch.Tensor
    value_mask: torch.Tensor


def truncated_ppo_token_masks(mask, truncated, window_start) -> TruncatedPPOMasks:
    r"""T-PPO's token filtering that decouples the policy and value updates.

    T-PPO generates long responses in windows and updates the policy after
    each window. The policy is trained only on the tokens generated in the
    current window (earlier tokens were trained on already; the prompt never
    is), with EGAE advantages; the value model is trained only on responses
    that have finished, whose return targets contain no bootstrap, so the two
    updates need different tokens and can run independently.

    Parameters
    ----------
    mask : Tensor, shape [batch, time]
        1 on response tokens generated so far.
    truncated : Tensor, shape [batch], bool
        True where the response has not finished.
    window_start : Tensor, shape [batch], integer
        Index of the first response token generated in the current window
        (0 for a response started in this window).

    Returns
    -------
    TruncatedPPOMasks

    Notes
    -----
    Our reading of the T-PPO abstract ("selectively filtering prompt and
    truncated tokens"); the paper's exact filter was not available to us and
    is marked unconfirmed.
    """
    m = as_tensor(mask, name="mask")
    check_ndim(m, 2, name="mask", layout="[batch, time]")
    mf = check_mask(m, m.to(torch.float32) if not m.is_floating_point() else m)
    tr = as_tensor(truncated, name="truncated").to(mf.device)
    ws = as_tensor(window_start, name="window_start").to(mf.device)
    check_ndim(tr, 1, name="truncated", layout="[batch]")
    check_ndim(ws, 1, name="window_start", layout="[batch]")
    if tr.shape[0] != mf.shape[0] or ws.shape[0] != mf.shape[0]:
        raise ValueError(f"truncated and window_start need one entry per row ({mf.shape[0]}); got {tr.shape[0]} and {ws.shape[0]}.")
    if ws.is_floating_point() or bool((ws < 0).any()):
        raise ValueError("window_start must hold non-negative integer token indices.")
    pos = torch.arange(mf.shape[1], device=mf.device)[None, :]
    policy = mf * (pos >= ws[:, None]).to(mf.dtype)
    value = mf * (~tr.bool()).to(mf.dtype)[:, None]
    return TruncatedPPOMasks(policy_mask=policy, value_mask=value)


@dataclass(frozen=True)
class ValueLoss:
    """Result of :func:`clipped_value_loss`: the scalar ``loss`` and the fraction of tokens where the clipped term was larger."""

    loss: torch.Tensor
    clip_fraction: float


def clipped_value_loss(
    predicted_values,
    old_values,
    returns,
    mask,
    *,
    clip_range: float | None = 0.2,
    aggregation: str = "token-mean",
    max_length: int | None = None,
) -> ValueLoss:
    r"""PPO's clipped value loss.

    .. math::

        \ell_t = \tfrac12 \max\big((V_t - R_t)^2,\;
        (\mathrm{clip}(V_t, V^{old}_t - c, V^{old}_t + c) - R_t)^2\big),

    aggregated over response tokens with :func:`polab.estimators.policy_loss.aggregate`.
    ``clip_range=None`` gives the unclipped :math:`\tfrac12 (V_t - R_t)^2`.
    This is verl's ``compute_value_loss`` (``verl/trainer/ppo/core_algos.py``,
    volcengine/verl 012be9d, ``0.5 * agg_loss(max(...))``) and TRL's PPO value loss.

    Parameters
    ----------
    predicted_values : Tensor, shape [batch, time]
        Current critic values (with grad).
    old_values : Tensor, shape [batch, time]
        Values at rollout time.
    returns : Tensor, shape [batch, time]
        Targets (e.g. ``GAEResult.returns``).
    mask : Tensor, shape [batch, time]
    clip_range : float >= 0 or None
    aggregation : str
        One of ``polab.estimators.policy_loss.AGGREGATIONS``.
    max_length : int, optional

    Returns
    -------
    ValueLoss
    """
    vp = as_tensor(predicted_values, name="predicted_values")
    check_ndim(vp, 2, name="predicted_values", layout="[batch, time]")
    vo = as_tensor(old_values, name="old_values").to(device=vp.device, dtype=vp.dtype)
    R = as_tensor(returns, name="returns").to(device=vp.device, dtype=vp.dtype)
    check_same_shape(vp, vo, names=("predicted_values", "old_values"))
    check_same_shape(vp, R, names=("predicted_values", "returns"))
    m = check_mask(as_tensor(mask, name="mask").to(vp.device), vp)
    check_finite(torch.where(m > 0, vo, torch.zeros_like(vo)), name="old_values (on response tokens)")
    check_finite(torch.where(m > 0, R, torch.zeros_like(R)), name="returns (on response tokens)")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}.")
    l1 = (vp - R) ** 2
    if clip_range is None:
        per_tok = l1
        frac = 0.0
    else:
        if clip_range < 0:
            raise ValueError(f"clip_range must be >= 0 (verl default 0.5, TRL 0.2); got {clip_range}.")
        vc = torch.maximum(torch.minimum(vp, vo + clip_range), vo - clip_range)
        l2 = (vc - R) ** 2
        per_tok = torch.maximum(l1, l2)
        with torch.no_grad():
            frac = float(((l2 > l1).to(m.dtype) * m).sum() / m.sum().clamp_min(1.0))
    loss = 0.5 * aggregate(per_tok, m, aggregation, max_length=max_length)
    return ValueLoss(loss=loss, clip_fraction=frac)


def kl_shaped_rewards(scores, logp, ref_logp, mask, *, kl_coef: float) -> torch.Tensor:
    r"""Per-token rewards of the RLHF PPO recipe: a KL penalty on every token plus the score at the end.

    .. math::

        r_t = -\beta\,(\log\pi_{old}(y_t) - \log\pi_{ref}(y_t)) + \mathbb 1[t = T_i]\, s_i,

    where :math:`T_i` is the last response token of row :math:`i` (Ziegler
    et al. 2019, eq. 2; the PPO setting of Ivison et al. 2024, and TRL's /
    verl's ``use_kl_in_reward`` with the ``k1`` estimator).

    Parameters
    ----------
    scores : Tensor, shape [batch]
        Reward-model (or verifier) score of each response.
    logp, ref_logp : Tensor, shape [batch, time]
        Log-probabilities of the sampled tokens under the sampling policy and the reference.
    mask : Tensor, shape [batch, time]
        1 on response tokens; every row needs at least one.
    kl_coef : float >= 0

    Returns
    -------
    Tensor, shape [batch, time], zero outside the mask.
    """
    s = as_tensor(scores, name="scores")
    check_ndim(s, 1, name="scores", layout="[batch]")
    lp = as_tensor(logp, name="logp")
    check_ndim(lp, 2, name="logp", layout="[batch, time]")
    rl = as_tensor(ref_logp, name="ref_logp").to(device=lp.device, dtype=lp.dtype)
    check_same_shape(lp, rl, names=("logp", "ref_logp"))
    m = check_mask(as_tensor(mask, name="mask").to(lp.device), lp)
    if s.shape[0] != lp.shape[0]:
        raise ValueError(f"scores has {s.shape[0]} rows but logp has {lp.shape[0]}.")
    check_finite(s, name="scores")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0; got {kl_coef}.")
    counts = m.sum(dim=1)
    if bool((counts == 0).any()):
        bad = (counts == 0).nonzero().flatten().tolist()[:10]
        raise ValueError(f"rows {bad} have no response token: a score needs a token to sit on.")
    idx = torch.arange(m.shape[1], device=m.device)[None, :].expand_as(m)
    last = torch.where(m > 0, idx, torch.full_like(idx, -1)).amax(dim=1)
    r = torch.where(m > 0, -kl_coef * (lp - rl), torch.zeros_like(lp))
    r[torch.arange(m.shape[0], device=m.device), last] += s.to(r.dtype)
    return r
