r"""Clipped policy-gradient losses, KL penalties, token aggregation and rollout importance weights.

Functions of per-token log-probabilities, masks and advantages: no model code.
The trainer in :mod:`scaled` calls :func:`ppo_clip_loss` on the tensors it
produced and backpropagates the returned ``loss`` unchanged.

Aggregation modes (verl's names and behaviour, reproduced from verl 0.9.1
``verl/trainer/ppo/core_algos.py::agg_loss``, which verl 0.8 shares; TRL
equivalents in brackets):

- ``"token-mean"``: sum of masked token losses / number of response tokens
  in the batch [TRL ``bnpo``; ``dapo`` is the same with a global count];
- ``"token-sum"``: sum of masked token losses (no normaliser);
- ``"seq-mean-token-mean"``: mean over non-empty sequences of each sequence's
  token mean [TRL ``grpo``; the GRPO paper];
- ``"seq-mean-token-sum"``: mean over non-empty sequences of each sequence's
  token sum;
- ``"seq-mean-token-sum-norm"``: sum of masked token losses / (number of
  non-empty sequences * ``max_length``) [Dr.GRPO's constant normaliser; TRL
  ``dr_grpo`` divides by all rows instead, which differs only when a row has
  no response token].

Every mode masks by selection (``torch.where``), so NaN or infinities at
padding positions never reach the result or its gradient.

KL estimators of :math:`\mathrm{KL}(\pi_\theta\|\pi_{ref})` per token, with
:math:`\delta = \log\pi_{ref} - \log\pi_\theta` (Schulman, "Approximating KL
divergence", 2020; names and clamps as verl 0.9.1
``core_algos.py::kl_penalty_forward``, whose aliases ``"kl"``, ``"mse"`` and
``"low_var_kl"`` are accepted):

- ``"k1"``: :math:`-\delta`;
- ``"abs"``: :math:`|\delta|`;
- ``"k2"``: :math:`\delta^2/2`;
- ``"k3"``: :math:`e^{\delta} - \delta - 1` (verl's ``low_var_kl``, which
  clamps :math:`\delta` to [-20, 20] and the result to [-10, 10]; TRL's GRPO
  ``beta`` term is unclamped ``k3``; ``clamp=True`` reproduces verl);
- ``"k1+"``, ``"abs+"``, ``"k3+"``: straight-through forms (verl
  ``core_algos.py::kl_penalty``): the value of ``k1``/``abs``/``k3`` and the
  gradient of ``k2``, :math:`\partial/\partial\log\pi_\theta = -\delta`, which is
  an unbiased estimate of the gradient of the KL where the others are not.
  ``"k2+"`` is ``"k2"``.

Rollout importance weights (:func:`truncated_is_weights`): when the engine
that sampled the responses (vLLM, SGLang, or a different precision) gives
log-probabilities that differ from the trainer's, verl multiplies each
token's surrogate by a truncated ratio :math:`\min(\pi_{train}/\pi_{rollout}, C)`
(TIS; "IcePop" zeroes ratios outside [lower, upper] instead); pass the
result as ``is_weights`` to :func:`ppo_clip_loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .checks import check_finite, check_mask, check_ndim, check_same_shape

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "PolicyLoss",
    "aggregate",
    "kl_penalty",
    "ppo_clip_loss",
    "truncated_is_weights",
]

AGGREGATIONS = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
Aggregation = Literal["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
KL_ESTIMATORS = ("k1", "abs", "k2", "k3", "k1+", "abs+", "k2+", "k3+")
KLEstimator = Literal["k1", "abs", "k2", "k3", "k1+", "abs+", "k2+", "k3+"]
_KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}


def _masked(values: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``values`` where ``m`` is 1 and exact zeros elsewhere (selection, so NaN/inf outside never leak)."""
    return torch.where(m > 0, values, torch.zeros((), dtype=values.dtype, device=values.device))


def _check_max_length(max_length, time: int) -> int:
    if max_length is None:
        return time
    if isinstance(max_length, bool) or not float(max_length).is_integer():
        raise ValueError(f"max_length must be a positive integer; got {max_length!r}.")
    L = int(max_length)
    if L < 1 or L < time:
        raise ValueError(
            f"max_length must be >= the response length of the batch ({time} columns); got {max_length}. "
            f"Pass the generation limit (max_new_tokens), or None to use the number of columns."
        )
    return L


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: Aggregation = "token-mean", *, max_length: int | None = None) -> torch.Tensor:
    r"""Reduce per-token values [batch, time] to a scalar under ``mask``.

    With :math:`m` the mask, :math:`n_b = \sum_t m_{bt}` and :math:`S` the
    number of rows with :math:`n_b > 0`:

    - token-mean :math:`\sum_{bt} m v / \sum_{bt} m`;
    - token-sum :math:`\sum_{bt} m v`;
    - seq-mean-token-mean :math:`S^{-1}\sum_{b: n_b>0} n_b^{-1}\sum_t m v`;
    - seq-mean-token-sum :math:`S^{-1}\sum_{b} \sum_t m v`;
    - seq-mean-token-sum-norm :math:`(S L)^{-1}\sum_{bt} m v` with
      :math:`L` = ``max_length``.

    Parameters
    ----------
    values, mask : Tensor, shape [batch, time]
    mode : one of ``AGGREGATIONS`` (see module docstring)
    max_length : int, optional
        The constant :math:`L` of ``"seq-mean-token-sum-norm"``; defaults to
        ``time``; must be >= ``time``.

    Notes
    -----
    Sequences with an empty mask are left out of every sequence-mode
    denominator (a sequence with no response token carries no loss), as
    verl 0.9.1 ``agg_loss``'s ``seq_mask`` does, for
    ``"seq-mean-token-sum-norm"`` too. An all-empty mask gives 0.
    """
    check_ndim(values, 2, name="values", layout="[batch, time]")
    m = check_mask(mask, values)
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; choose one of {AGGREGATIONS}.")
    L = _check_max_length(max_length, values.shape[1])
    v = _masked(values, m)
    if mode == "token-mean":
        return v.sum() / m.sum().clamp_min(1.0)
    if mode == "token-sum":
        return v.sum()
    tok = m.sum(dim=1)
    per_seq = v.sum(dim=1)
    nonempty = tok > 0
    n_seq = nonempty.sum().to(values.dtype).clamp_min(1.0)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / tok.clamp_min(1.0)
    total = _masked(per_seq, nonempty.to(values.dtype)).sum() / n_seq
    if mode == "seq-mean-token-sum-norm":
        total = total / L
    return total


def _kl_base(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str, clamp: bool) -> torch.Tensor:
    delta = ref_logp - logp
    if estimator == "k1":
        return -delta
    if estimator == "abs":
        return delta.abs()
    if estimator == "k2":
        return 0.5 * delta * delta
    if clamp:
        delta = delta.clamp(-20.0, 20.0)
        return (torch.exp(delta) - delta - 1.0).clamp(-10.0, 10.0)
    return torch.exp(delta) - delta - 1.0


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "k3", *, clamp: bool = True) -> torch.Tensor:
    r"""Per-token KL estimate between the policy and the reference (see module docstring).

    Parameters
    ----------
    logp, ref_logp : Tensor, shape [batch, time]
        Log-probabilities of the sampled tokens under the policy (with grad)
        and under the reference.
    estimator : one of ``KL_ESTIMATORS`` (or verl's aliases ``"kl"``,
        ``"mse"``, ``"low_var_kl"``, with an optional ``"+"``)
    clamp : bool
        verl's clamps for ``"k3"`` (on by default).

    Returns
    -------
    Tensor, shape [batch, time]
        For a ``"+"`` estimator the value is the base estimator's and the
        gradient with respect to ``logp`` is :math:`\log\pi_\theta - \log\pi_{ref}`
        (the gradient of ``k2``), as verl 0.9.1 ``kl_penalty`` builds it:
        ``k2 - k2.detach() + base.detach()``.
    """
    check_same_shape(logp, ref_logp, names=("logp", "ref_logp"))
    straight_through = estimator.endswith("+")
    base = estimator[:-1] if straight_through else estimator
    base = _KL_ALIASES.get(base, base)
    if base not in ("k1", "abs", "k2", "k3"):
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}.")
    value = _kl_base(logp, ref_logp, base, clamp)
    if not straight_through or base == "k2":
        return value
    k2 = _kl_base(logp, ref_logp, "k2", clamp)
    return k2 - k2.detach() + value.detach()


def truncated_is_weights(
    trainer_logp: torch.Tensor,
    rollout_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    level: Literal["token", "sequence"] = "token",
    upper: float = 2.0,
    lower: float | None = None,
    batch_normalize: bool = False,
) -> torch.Tensor:
    r"""Truncated importance weights :math:`\pi_{train}/\pi_{rollout}` for a rollout engine's log-prob mismatch.

    Token level: :math:`w_t = \min(e^{\ell_t}, C)` with
    :math:`\ell_t = \log\pi_{train}(y_t) - \log\pi_{rollout}(y_t)` clamped to
    [-20, 20]; sequence level: one weight per row,
    :math:`w = \min(e^{\sum_t m_t\ell_t}, C)` (sum clamped to [-20, 20]),
    broadcast over its tokens. With ``lower`` set (verl's ``"lower_upper"``
    threshold, IcePop), weights outside [lower, upper] become 0 instead of
    being truncated. Padding gets weight 0. The weights carry no gradient.

    Parameters
    ----------
    trainer_logp : Tensor, shape [batch, time]
        Log-probabilities of the sampled tokens under the trainer's copy of
        the sampling policy (``old_logp`` in :func:`ppo_clip_loss`).
    rollout_logp : Tensor, shape [batch, time]
        The rollout engine's log-probabilities of the same tokens.
    mask : Tensor, shape [batch, time]
    level : {"token", "sequence"}
    upper : float
        Truncation :math:`C > 0` (verl's ``rollout_is_threshold``, default 2.0).
    lower : float, optional
        IcePop's lower bound, ``0 < lower <= upper``.
    batch_normalize : bool
        Divide by the mean weight over response tokens (token level) or over
        non-empty rows (sequence level) when that mean exceeds 1e-8.

    Returns
    -------
    Tensor, shape [batch, time]
        Pass it as ``is_weights`` to :func:`ppo_clip_loss`.

    Notes
    -----
    Reproduces verl 0.9.1 ``verl/trainer/ppo/rollout_corr_helper.py::
    compute_rollout_correction_weights`` (single-process branch), which
    ``compute_policy_loss_vanilla`` multiplies into the per-token clipped
    surrogate before aggregation (the KL term is not reweighted).

    References
    ----------
    Yao, Liu, Zhang, et al., "Your Efficient RL Framework Secretly Brings You
    Off-Policy RL Training", 2025 (TIS), https://fengyao.notion.site/off-policy-rl.
    """
    check_ndim(trainer_logp, 2, name="trainer_logp", layout="[batch, time]")
    check_same_shape(trainer_logp, rollout_logp, names=("trainer_logp", "rollout_logp"))
    m = check_mask(mask, trainer_logp)
    if level not in ("token", "sequence"):
        raise ValueError(f"level must be 'token' or 'sequence'; got {level!r}.")
    if not (math.isfinite(upper) and upper > 0):
        raise ValueError(f"upper must be a finite number > 0 (verl default 2.0); got {upper}.")
    if lower is not None and not (math.isfinite(lower) and 0 < lower <= upper):
        raise ValueError(f"lower must satisfy 0 < lower <= upper={upper}; got {lower}.")
    tl, rl = _masked(trainer_logp.detach(), m), _masked(rollout_logp.detach(), m)
    check_finite(tl, name="trainer_logp (on response tokens)")
    check_finite(rl, name="rollout_logp (on response tokens)")
    log_ratio = tl - rl
    if level == "token":
        raw = torch.exp(log_ratio.clamp(-20.0, 20.0))
    else:
        raw = torch.exp(log_ratio.sum(dim=1, keepdim=True).clamp(-20.0, 20.0)).expand_as(log_ratio)
    raw = _masked(raw, m)
    if lower is None:
        w = raw.clamp(max=upper)
    else:
        w = torch.where((raw >= lower) & (raw <= upper), raw, torch.zeros_like(raw))
    if batch_normalize:
        if level == "token":
            mean = w.sum() / m.sum().clamp_min(1.0)
        else:
            tok = m.sum(dim=1)
            seq_w = w.sum(dim=1) / tok.clamp_min(1.0)
            nonempty = (tok > 0).to(w.dtype)
            mean = (seq_w * nonempty).sum() / nonempty.sum().clamp_min(1e-8)
        if float(mean) > 1e-8:
            w = w / mean
    return w


@dataclass(frozen=True)
class PolicyLoss:
    r"""Result of :func:`ppo_clip_loss`.

    Attributes
    ----------
    loss : Tensor, scalar
        What to backpropagate: aggregated clipped surrogate + ``kl_coef`` * aggregated KL.
    policy_loss : Tensor, scalar
        The aggregated clipped surrogate alone.
    kl : Tensor, scalar
        The aggregated KL estimate (0 without a reference).
    per_token : Tensor, shape [batch, time]
        Per-token loss before aggregation (surrogate + kl_coef * KL).
    clip_fraction : float
        Fraction of response tokens where clipping was active.
    ratio_mean : float
        Mean importance ratio over response tokens.
    clip_fraction_low : float
        Fraction of response tokens with :math:`A<0` whose ratio is clipped at
        :math:`1-\epsilon_{low}` (:math:`\rho < 1-\epsilon_{low}`).
    clip_fraction_high : float
        Fraction of response tokens with :math:`A>0` whose ratio is clipped at
        :math:`1+\epsilon_{high}` (:math:`\rho > 1+\epsilon_{high}`).
        ``clip_fraction_low + clip_fraction_high == clip_fraction``.
    dual_clip_fraction : float
        Fraction of response tokens with :math:`A<0` where the dual clip is
        active (clipped surrogate above :math:`-cA`); verl's
        ``actor/pg_clipfrac_lower``. 0 when ``dual_clip`` is None.
    ppo_kl : float
        Masked mean of ``old_logp - logp`` (log-ratio clamped to [-20, 20]
        first); verl's ``actor/ppo_kl``.

    Notes
    -----
    The fractions are over all response tokens (verl's ``masked_mean`` over
    ``response_mask``), in verl 0.9.1
    ``verl/trainer/ppo/core_algos.py::compute_policy_loss_vanilla``.
    """

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    per_token: torch.Tensor
    clip_fraction: float
    ratio_mean: float
    clip_fraction_low: float = 0.0
    clip_fraction_high: float = 0.0
    dual_clip_fraction: float = 0.0
    ppo_kl: float = 0.0


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    aggregation: Aggregation = "token-mean",
    max_length: int | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: KLEstimator = "k3",
    is_weights: torch.Tensor | None = None,
) -> PolicyLoss:
    r"""PPO clipped surrogate with optional dual clip, rollout importance weights and KL-to-reference penalty.

    Per token, with :math:`\rho = \exp(\log\pi_\theta - \log\pi_{old})`,

    .. math::

        \ell = \max\big(-A\rho,\; -A\,\mathrm{clip}(\rho, 1-\epsilon_{low}, 1+\epsilon_{high})\big),

    and for :math:`A<0` with dual clip :math:`c>1`, :math:`\ell \leftarrow
    \min(\ell, -cA)` (Ye et al. 2020; verl ``clip_ratio_c``); with rollout
    importance weights :math:`w` (:func:`truncated_is_weights`),
    :math:`\ell \leftarrow w\,\ell`. Schulman et al., "Proximal Policy
    Optimization Algorithms", arXiv 1707.06347, eq. 7; clip-higher
    (:math:`\epsilon_{high}\ne\epsilon_{low}`) from DAPO, arXiv 2503.14476.
    The log-ratio is clamped to [-20, 20] before ``exp`` as in verl 0.9.1
    ``core_algos.py::compute_policy_loss_vanilla``, whose loss and metrics this
    reproduces.

    Parameters
    ----------
    logp : Tensor, shape [batch, time]
        Log-probabilities of the sampled tokens under the current policy (with grad).
    old_logp : Tensor, shape [batch, time]
        Under the policy that generated them (no grad needed).
    advantages : Tensor, shape [batch, time] or [batch]
        Per-token advantages, or one per sequence (broadcast over tokens).
    mask : Tensor, shape [batch, time]
        1 on response tokens. Values outside the mask are ignored by
        selection: NaN or -inf there is allowed and never reaches the loss or
        the gradient.
    clip_low, clip_high : float
        :math:`\epsilon_{low}` and :math:`\epsilon_{high}` (``clip_high``
        defaults to ``clip_low``).
    dual_clip : float, optional
        :math:`c > 1`; off when None.
    aggregation : str
        See :func:`aggregate`.
    max_length : int, optional
        Constant for ``"seq-mean-token-sum-norm"``; must be >= ``time``.
    ref_logp : Tensor, shape [batch, time], optional
        Reference-policy log-probabilities; needed when ``kl_coef > 0``.
    kl_coef : float
        :math:`\beta \ge 0` of the KL term added to the loss (GRPO's ``use_kl_loss``).
    kl_estimator : one of ``KL_ESTIMATORS``
    is_weights : Tensor, shape [batch, time] or [batch], optional
        Per-token (or per-row) weights multiplying the clipped surrogate
        (not the KL term), e.g. from :func:`truncated_is_weights`; detached.

    Returns
    -------
    PolicyLoss

    Raises
    ------
    ValueError
        On a shape mismatch; NaN or infinity on a response token in ``logp``,
        ``old_logp``, ``ref_logp``, ``advantages`` or ``is_weights``; a
        negative or non-finite ``kl_coef``; ``max_length`` below ``time``.
    """
    check_ndim(logp, 2, name="logp", layout="[batch, time]")
    check_same_shape(logp, old_logp, names=("logp", "old_logp"))
    m = check_mask(mask, logp)
    if advantages.ndim == 1:
        if advantages.shape[0] != logp.shape[0]:
            raise ValueError(f"advantages has {advantages.shape[0]} rows but logp has {logp.shape[0]}.")
        advantages = advantages[:, None].expand_as(logp)
    check_same_shape(logp, advantages, names=("logp", "advantages"))
    clip_high = clip_low if clip_high is None else clip_high
    if not (math.isfinite(clip_low) and math.isfinite(clip_high)) or clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip ranges must be finite and >= 0; got clip_low={clip_low}, clip_high={clip_high}.")
    if dual_clip is not None and not (dual_clip > 1.0):
        raise ValueError(f"dual_clip must be > 1 (verl default 3.0) or None; got {dual_clip}.")
    if not math.isfinite(kl_coef) or kl_coef < 0:
        raise ValueError(f"kl_coef must be a finite number >= 0 (0 turns the KL term off); got {kl_coef}.")
    if kl_coef and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (log-probabilities under the reference model).")
    _check_max_length(max_length, logp.shape[1])

    # Masking by selection: every input is replaced by 0 outside the mask before any arithmetic,
    # so NaN/-inf padding gives neither a NaN loss nor a NaN gradient (where's backward selects too).
    logp_s = _masked(logp, m)
    old_s = _masked(old_logp.detach(), m)
    adv = _masked(advantages.detach().to(logp.dtype), m)
    check_finite(logp_s.detach(), name="logp (on response tokens)")
    check_finite(old_s, name="old_logp (on response tokens)")
    check_finite(adv, name="advantages (on response tokens)")
    w = None
    if is_weights is not None:
        if is_weights.ndim == 1:
            if is_weights.shape[0] != logp.shape[0]:
                raise ValueError(f"is_weights has {is_weights.shape[0]} rows but logp has {logp.shape[0]}.")
            is_weights = is_weights[:, None].expand_as(logp)
        check_same_shape(logp, is_weights, names=("logp", "is_weights"))
        w = _masked(is_weights.detach().to(logp.dtype), m)
        check_finite(w, name="is_weights (on response tokens)")
        if bool((w < 0).any()):
            raise ValueError("is_weights must be >= 0 (importance weights); got negative entries.")

    log_ratio = (logp_s - old_s).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    surr1 = -adv * ratio
    surr2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(surr1, surr2)
    clipped = (surr2 > surr1)
    dual_active = torch.zeros_like(clipped)
    if dual_clip is not None:
        dual_active = (per_token > -adv * dual_clip) & (adv < 0)
        capped = torch.minimum(per_token, -adv * dual_clip)
        per_token = torch.where(adv < 0, capped, per_token)
    if w is not None:
        per_token = per_token * w
    policy_loss = aggregate(per_token, m, aggregation, max_length=max_length)

    if ref_logp is not None:
        check_same_shape(logp, ref_logp, names=("logp", "ref_logp"))
        ref_s = _masked(ref_logp.detach(), m)
        check_finite(ref_s, name="ref_logp (on response tokens)")
        kl_tok = _masked(kl_penalty(logp_s, ref_s, kl_estimator), m)
        kl = aggregate(kl_tok, m, aggregation, max_length=max_length)
    else:
        kl_tok = torch.zeros_like(per_token)
        kl = torch.zeros((), dtype=logp.dtype, device=logp.device)
    total_tok = _masked(per_token + kl_coef * kl_tok, m)
    loss = policy_loss + kl_coef * kl
    with torch.no_grad():
        ntok = m.sum().clamp_min(1.0)
        mb = m > 0

        def frac(x: torch.Tensor) -> float:
            return float((x & mb).sum() / ntok)

        clip_fraction = frac(clipped)
        clip_fraction_low = frac(clipped & (adv < 0))
        clip_fraction_high = frac(clipped & (adv > 0))
        dual_clip_fraction = frac(dual_active)
        ppo_kl = float(_masked(-log_ratio, m).sum() / ntok)
        ratio_mean = float(_masked(ratio, m).sum() / ntok)
    return PolicyLoss(
        loss=loss,
        policy_loss=policy_loss,
        kl=kl,
        per_token=total_tok,
        clip_fraction=clip_fraction,
        ratio_mean=ratio_mean,
        clip_fraction_low=clip_fraction_low,
        clip_fraction_high=clip_fraction_high,
        dual_clip_fraction=dual_clip_fraction,
        ppo_kl=ppo_kl,
    )


def aggregation_weight(mask_part: torch.Tensor, mask_total_tokens: float, mask_total_seqs: float, mode: Aggregation, *, batch_total: int | None = None) -> float:
    r"""Weight that turns a part-batch aggregate into its share of the full-batch aggregate.

    If the full batch is split into parts (micro-batches, or data-parallel
    ranks), then for every mode of :func:`aggregate`

    .. math:: \mathrm{agg}(\text{full}) = \sum_{\text{parts}} w_{\text{part}}\,\mathrm{agg}(\text{part}),

    with :math:`w` the part's share of the full batch's denominator: its
    response tokens over all response tokens (``"token-mean"``), its non-empty
    sequences over all non-empty sequences (every sequence mode, including
    ``"seq-mean-token-sum-norm"``, whose constant ``max_length`` must be the
    same for every part), and 1 for ``"token-sum"``. So gradient accumulation
    and data-parallel averaging reproduce the full-batch loss exactly, which
    is the normalisation verl 0.9.1 ``agg_loss`` applies globally across
    ranks and micro-batches (``batch_num_tokens``, ``global_batch_size``).

    Parameters
    ----------
    mask_part : Tensor, shape [part_batch, time]
    mask_total_tokens : float
        Response tokens in the full batch.
    mask_total_seqs : float
        Non-empty sequences in the full batch.
    mode : aggregation mode
    batch_total : int, optional
        Ignored; kept so that existing calls keep working (it was the row
        count that ``"seq-mean-token-sum-norm"`` used before it followed verl
        0.8/0.9 and counted non-empty rows only).
    """
    if mode == "token-mean":
        return float(mask_part.sum()) / max(float(mask_total_tokens), 1.0)
    if mode == "token-sum":
        return 1.0
    if mode in ("seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        return float((mask_part.sum(dim=1) > 0).sum()) / max(float(mask_total_seqs), 1.0)
    raise ValueError(f"unknown aggregation {mode!r}; choose one of {AGGREGATIONS}.")


__all__.append("aggregation_weight")
