r"""Clipped policy-gradient losses, KL penalties and token aggregation.

Functions of per-token log-probabilities, masks and advantages: no model code.
The trainer in :mod:`scaled` calls :func:`ppo_clip_loss` on the tensors it
produced and backpropagates the returned ``loss`` unchanged.

Aggregation modes (verl's names, ``verl/trainer/ppo/core_algos.py::agg_loss``,
HEAD b178a3c; TRL equivalents in brackets):

- ``"token-mean"``: sum of masked token losses / number of response tokens
  in the batch [TRL ``bnpo``; ``dapo`` is the same with a global count];
- ``"seq-mean-token-mean"``: mean over sequences of each sequence's token
  mean [TRL ``grpo``; the GRPO paper];
- ``"seq-mean-token-sum"``: mean over sequences of each sequence's token sum;
- ``"seq-mean-token-sum-norm"``: sum of masked token losses / (batch *
  ``max_length``) [TRL ``dr_grpo``; Dr.GRPO's constant normaliser].

KL estimators of :math:`\mathrm{KL}(\pi_\theta\|\pi_{ref})` per token, with
:math:`\delta = \log\pi_{ref} - \log\pi_\theta` (Schulman, "Approximating KL
divergence", 2020):

- ``"k1"``: :math:`-\delta`;
- ``"k2"``: :math:`\delta^2/2`;
- ``"k3"``: :math:`e^{\delta} - \delta - 1` (verl's ``low_var_kl``, which
  clamps :math:`\delta` to [-20, 20] and the result to [-10, 10]; TRL's GRPO
  ``beta`` term is unclamped ``k3``; ``clamp=True`` reproduces verl).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .checks import check_finite, check_mask, check_ndim, check_same_shape

__all__ = ["AGGREGATIONS", "PolicyLoss", "aggregate", "kl_penalty", "ppo_clip_loss"]

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: Aggregation = "token-mean", *, max_length: int | None = None) -> torch.Tensor:
    """Reduce per-token values [batch, time] to a scalar under ``mask``.

    Parameters
    ----------
    values, mask : Tensor, shape [batch, time]
    mode : one of ``AGGREGATIONS`` (see module docstring)
    max_length : int, optional
        The constant of ``"seq-mean-token-sum-norm"``; defaults to ``time``.

    Notes
    -----
    In the sequence modes, sequences with an empty mask are left out of the
    denominator (a sequence with no response token carries no loss), as
    verl's ``seq_mask`` does.
    """
    check_ndim(values, 2, name="values", layout="[batch, time]")
    m = check_mask(mask, values)
    if mode == "token-mean":
        return (values * m).sum() / m.sum().clamp_min(1.0)
    if mode in ("seq-mean-token-mean", "seq-mean-token-sum"):
        tok = m.sum(dim=1)
        per_seq = (values * m).sum(dim=1)
        if mode == "seq-mean-token-mean":
            per_seq = per_seq / tok.clamp_min(1.0)
        nonempty = (tok > 0).to(values.dtype)
        return (per_seq * nonempty).sum() / nonempty.sum().clamp_min(1.0)
    if mode == "seq-mean-token-sum-norm":
        L = values.shape[1] if max_length is None else int(max_length)
        if L < 1:
            raise ValueError(f"max_length must be >= 1; got {max_length}.")
        return (values * m).sum() / (values.shape[0] * L)
    raise ValueError(f"unknown aggregation {mode!r}; choose one of {AGGREGATIONS}.")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: Literal["k1", "k2", "k3"] = "k3", *, clamp: bool = True) -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference (see module docstring).

    Shapes: ``logp``, ``ref_logp`` [batch, time] -> [batch, time].
    """
    check_same_shape(logp, ref_logp, names=("logp", "ref_logp"))
    delta = ref_logp - logp
    if estimator == "k1":
        return -delta
    if estimator == "k2":
        return 0.5 * delta * delta
    if estimator == "k3":
        if clamp:
            delta = delta.clamp(-20.0, 20.0)
            return (torch.exp(delta) - delta - 1.0).clamp(-10.0, 10.0)
        return torch.exp(delta) - delta - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; choose 'k1', 'k2' or 'k3'.")


@dataclass(frozen=True)
class PolicyLoss:
    """Result of :func:`ppo_clip_loss`.

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
    kl_estimator: Literal["k1", "k2", "k3"] = "k3",
) -> PolicyLoss:
    r"""PPO clipped surrogate with optional dual clip and KL-to-reference penalty.

    Per token, with :math:`\rho = \exp(\log\pi_\theta - \log\pi_{old})`,

    .. math::

        \ell = \max\big(-A\rho,\; -A\,\mathrm{clip}(\rho, 1-\epsilon_{low}, 1+\epsilon_{high})\big),

    and for :math:`A<0` with dual clip :math:`c>1`, :math:`\ell \leftarrow
    \min(\ell, -cA)` (Ye et al. 2020; verl ``clip_ratio_c``). Schulman et al.,
    "Proximal Policy Optimization Algorithms", arXiv 1707.06347, eq. 7;
    clip-higher (:math:`\epsilon_{high}\ne\epsilon_{low}`) from DAPO, arXiv
    2503.14476. The log-ratio is clamped to [-20, 20] before ``exp`` as in verl.

    Parameters
    ----------
    logp : Tensor, shape [batch, time]
        Log-probabilities of the sampled tokens under the current policy (with grad).
    old_logp : Tensor, shape [batch, time]
        Under the policy that generated them (no grad needed).
    advantages : Tensor, shape [batch, time] or [batch]
        Per-token advantages, or one per sequence (broadcast over tokens).
    mask : Tensor, shape [batch, time]
        1 on response tokens.
    clip_low, clip_high : float
        :math:`\epsilon_{low}` and :math:`\epsilon_{high}` (``clip_high``
        defaults to ``clip_low``).
    dual_clip : float, optional
        :math:`c > 1`; off when None.
    aggregation : str
        See :func:`aggregate`.
    max_length : int, optional
        Constant for ``"seq-mean-token-sum-norm"``.
    ref_logp : Tensor, shape [batch, time], optional
        Reference-policy log-probabilities; needed when ``kl_coef > 0``.
    kl_coef : float
        :math:`\beta` of the KL term added to the loss (GRPO's ``use_kl_loss``).
    kl_estimator : {"k1", "k2", "k3"}

    Returns
    -------
    PolicyLoss
    """
    check_ndim(logp, 2, name="logp", layout="[batch, time]")
    check_same_shape(logp, old_logp, names=("logp", "old_logp"))
    m = check_mask(mask, logp)
    if advantages.ndim == 1:
        if advantages.shape[0] != logp.shape[0]:
            raise ValueError(f"advantages has {advantages.shape[0]} rows but logp has {logp.shape[0]}.")
        advantages = advantages[:, None].expand_as(logp)
    check_same_shape(logp, advantages, names=("logp", "advantages"))
    check_finite(advantages, name="advantages")
    check_finite(old_logp.detach() * m, name="old_logp (on response tokens)")
    clip_high = clip_low if clip_high is None else clip_high
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip ranges must be >= 0; got clip_low={clip_low}, clip_high={clip_high}.")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (verl default 3.0); got {dual_clip}.")
    if kl_coef and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (log-probabilities under the reference model).")

    adv = advantages.to(logp.dtype)
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)
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
    policy_loss = aggregate(per_token, m, aggregation, max_length=max_length)

    if ref_logp is not None:
        check_same_shape(logp, ref_logp, names=("logp", "ref_logp"))
        kl_tok = kl_penalty(logp, ref_logp, kl_estimator)
        kl = aggregate(kl_tok, m, aggregation, max_length=max_length)
    else:
        kl_tok = torch.zeros_like(per_token)
        kl = torch.zeros((), dtype=logp.dtype, device=logp.device)
    total_tok = per_token + kl_coef * kl_tok
    loss = policy_loss + kl_coef * kl
    with torch.no_grad():
        ntok = m.sum().clamp_min(1.0)
        clip_fraction = float((clipped.to(m.dtype) * m).sum() / ntok)
        clip_fraction_low = float(((clipped & (adv < 0)).to(m.dtype) * m).sum() / ntok)
        clip_fraction_high = float(((clipped & (adv > 0)).to(m.dtype) * m).sum() / ntok)
        dual_clip_fraction = float((dual_active.to(m.dtype) * m).sum() / ntok)
        ppo_kl = float((-log_ratio * m).sum() / ntok)
        ratio_mean = float((ratio * m).sum() / ntok)
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
    sequences over all non-empty sequences (sequence modes), or its rows over
    all rows (``"seq-mean-token-sum-norm"``, whose constant ``max_length`` must
    be the same for every part). So gradient accumulation and data-parallel
    averaging reproduce the full-batch loss exactly, which is the
    normalisation verl applies globally across ranks and micro-batches.

    Parameters
    ----------
    mask_part : Tensor, shape [part_batch, time]
    mask_total_tokens : float
        Response tokens in the full batch.
    mask_total_seqs : float
        Non-empty sequences in the full batch.
    mode : aggregation mode
    batch_total : int
        Rows in the full batch (needed for ``"seq-mean-token-sum-norm"``).
    """
    if mode == "token-mean":
        return float(mask_part.sum()) / max(float(mask_total_tokens), 1.0)
    if mode in ("seq-mean-token-mean", "seq-mean-token-sum"):
        return float((mask_part.sum(dim=1) > 0).sum()) / max(float(mask_total_seqs), 1.0)
    if mode == "seq-mean-token-sum-norm":
        if batch_total is None:
            raise ValueError("batch_total is needed for 'seq-mean-token-sum-norm'.")
        return mask_part.shape[0] / float(batch_total)
    raise ValueError(f"unknown aggregation {mode!r}; choose one of {AGGREGATIONS}.")


__all__.append("aggregation_weight")
