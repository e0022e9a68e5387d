r"""Group-relative advantage estimators: GRPO, Dr.GRPO, RLOO, batch-std scaling.

All functions take one scalar reward per response and an integer group id per
response (the prompt a response answers). Groups may have any size and appear
in any order: statistics are computed by segment reductions over the ids, not
by assuming a sorted ``[prompts, samples]`` layout. Outputs follow the dtype
and device of ``rewards``.

Conventions of the anchor frameworks (see ``GRPO_CONVENTIONS``):

==========  ==============  =========  ==========================================
framework   std             epsilon    source
==========  ==============  =========  ==========================================
verl        unbiased (N-1)  1e-6       ``verl/trainer/ppo/core_algos.py``, ``compute_grpo_outcome_advantage`` (HEAD b178a3c)
TRL         unbiased (N-1)  1e-4       ``trl/trainer/grpo_trainer.py``, ``scale_rewards="group"`` (HEAD f2cd577)
OpenRLHF    unbiased (N-1)  1e-9       ``openrlhf/trainer/ppo_utils/experience_maker.py``, ``group_norm`` (HEAD 3c3be62)
==========  ==============  =========  ==========================================

References
----------
Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in
Open Language Models", arXiv 2402.03300, 2024 (GRPO).
Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective",
arXiv 2503.20783, 2025 (Dr.GRPO).
Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization for
Learning from Human Feedback in LLMs", ACL 2024 (RLOO).
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Literal

import torch

from .checks import as_tensor, check_finite, check_mask, check_ndim

__all__ = [
    "GRPO_CONVENTIONS",
    "GroupAdvantages",
    "group_advantages",
    "dr_grpo_advantages",
    "rloo_advantages",
    "batch_whiten",
    "broadcast_to_tokens",
    "sequence_advantages",
]

#: std convention and epsilon of each framework's GRPO normalisation (see module docstring).
GRPO_CONVENTIONS: dict[str, dict] = {
    "verl": {"std": "unbiased", "epsilon": 1e-6},
    "trl": {"std": "unbiased", "epsilon": 1e-4},
    "openrlhf": {"std": "unbiased", "epsilon": 1e-9},
}


@dataclass(frozen=True)
class GroupAdvantages:
    """Result of a group-relative advantage computation.

    Attributes
    ----------
    advantages : Tensor, shape [batch]
        One advantage per response.
    group_mean, group_std : Tensor, shape [batch]
        The statistics of each response's group (std is the scale actually
        divided by, before epsilon; ones where no scaling is applied).
    group_size : Tensor, shape [batch], int64
        The size of each response's group.
    num_groups : int
    num_singleton_groups : int
        Groups of size one. Their advantage is zero (see ``singleton``).
    num_zero_variance_groups : int
        Groups of size > 1 whose rewards are all equal (all advantages zero):
        the "vanishing advantage" groups that DUMP, ARPO and SSB target.
    """

    advantages: torch.Tensor
    group_mean: torch.Tensor
    group_std: torch.Tensor
    group_size: torch.Tensor
    num_groups: int
    num_singleton_groups: int
    num_zero_variance_groups: int


def _check_inputs(rewards, group_ids) -> tuple[torch.Tensor, torch.Tensor]:
    r = as_tensor(rewards, name="rewards")
    g = as_tensor(group_ids, name="group_ids")
    check_ndim(r, 1, name="rewards", layout="[batch]")
    check_ndim(g, 1, name="group_ids", layout="[batch]")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    if g.is_floating_point() or g.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor; got dtype {g.dtype}. Map prompts to integer ids first.")
    if r.shape[0] != g.shape[0]:
        raise ValueError(f"rewards and group_ids must have the same length; got {r.shape[0]} and {g.shape[0]}.")
    if r.shape[0] == 0:
        raise ValueError("rewards is empty: pass at least one response.")
    check_finite(r, name="rewards")
    return r, g.to(r.device)


def _segment_stats(r: torch.Tensor, g: torch.Tensor, *, unbiased: bool):
    """Per-group mean, std, size and a constant-group flag by segment reductions.

    Deviations use a two-pass mean. Groups whose rewards are all equal
    (min == max, exactly) get deviation 0 and std 0 however the mean rounds:
    ``mean(0.1, 0.1, 0.1)`` is not exactly 0.1 in floating point, and
    without this a constant group would get a non-zero advantage.
    """
    _, inv, counts = torch.unique(g, return_inverse=True, return_counts=True)
    k = counts.shape[0]
    n = counts.to(r.dtype)
    sums = torch.zeros(k, dtype=r.dtype, device=r.device).index_add_(0, inv, r)
    mean = sums / n
    gmin = torch.full((k,), float("inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, inv, r, "amin")
    gmax = torch.full((k,), float("-inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, inv, r, "amax")
    constant = gmin == gmax
    dev = torch.where(constant[inv], torch.zeros_like(r), r - mean[inv])
    ss = torch.zeros(k, dtype=r.dtype, device=r.device).index_add_(0, inv, dev * dev)
    denom = (n - 1.0).clamp_min(1.0) if unbiased else n
    std = torch.sqrt(ss / denom)
    return inv, counts, mean, std, dev, constant


def group_advantages(
    rewards,
    group_ids,
    *,
    scale: Literal["group", "batch", "none"] = "group",
    std: Literal["unbiased", "population"] | None = None,
    epsilon: float | None = None,
    convention: Literal["verl", "trl", "openrlhf"] = "verl",
    singleton: Literal["zero", "raw"] = "zero",
) -> GroupAdvantages:
    r"""Group-relative advantages (GRPO and its scalings).

    For response :math:`i` in group :math:`g` with :math:`n_g` members,

    .. math::

        A_i = \frac{r_i - \bar r_g}{s + \epsilon},\qquad
        \bar r_g = \frac{1}{n_g}\sum_{j\in g} r_j,

    where :math:`s` is the group std (``scale="group"``, GRPO, DeepSeekMath
    eq. for outcome supervision), the std of all rewards in the batch
    (``scale="batch"``, TRL's ``scale_rewards="batch"``: group mean, batch
    std), or 1 with no epsilon (``scale="none"``, Dr.GRPO). The std is the
    unbiased (``n-1``) or population (``n``) one.

    Parameters
    ----------
    rewards : Tensor, shape [batch]
        One finite scalar reward per response.
    group_ids : Tensor, shape [batch], integer
        Group (prompt) id of each response; any integers, any order.
    scale : {"group", "batch", "none"}
    std : {"unbiased", "population"}, optional
        Defaults to the ``convention``'s (unbiased for all three).
    epsilon : float, optional
        Added to the std. Defaults to the ``convention``'s (verl 1e-6, TRL
        1e-4, OpenRLHF 1e-9).
    convention : {"verl", "trl", "openrlhf"}
        Supplies ``std`` and ``epsilon`` where they are not given.
    singleton : {"zero", "raw"}
        Groups of one response carry no relative information. ``"zero"``
        (default) gives them advantage 0; ``"raw"`` reproduces verl, which
        sets the group mean to 0 and std to 1, so :math:`A = r/(1+\epsilon)`.

    Returns
    -------
    GroupAdvantages

    Notes
    -----
    A group whose rewards are all equal gets advantage exactly 0 for every
    ``scale`` and every ``epsilon`` (including 0), whatever the rounding of
    its mean; it is counted in ``num_zero_variance_groups``.
    """
    r, g = _check_inputs(rewards, group_ids)
    conv = GRPO_CONVENTIONS.get(convention)
    if conv is None:
        raise ValueError(f"unknown convention {convention!r}; choose one of {sorted(GRPO_CONVENTIONS)}.")
    std = conv["std"] if std is None else std
    epsilon = conv["epsilon"] if epsilon is None else float(epsilon)
    if std not in ("unbiased", "population"):
        raise ValueError(f"std must be 'unbiased' or 'population'; got {std!r}.")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none'; got {scale!r}.")
    if singleton not in ("zero", "raw"):
        raise ValueError(f"singleton must be 'zero' or 'raw'; got {singleton!r}.")
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0 (the convention's default is {conv['epsilon']}); got {epsilon}.")

    inv, counts, mean, gstd, centred, constant = _segment_stats(r, g, unbiased=(std == "unbiased"))
    row_mean = mean[inv]
    if scale == "group":
        row_scale = gstd[inv]
        # constant groups: centred is exactly 0; define 0/0 as 0 when epsilon = 0
        adv = torch.where(constant[inv], torch.zeros_like(r), centred / (row_scale + epsilon))
    elif scale == "batch":
        n = r.shape[0]
        bstd = r.std(unbiased=(std == "unbiased")) if n > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
        row_scale = bstd.expand_as(r)
        adv = torch.where(constant[inv], torch.zeros_like(r), centred / (row_scale + epsilon))
    else:
        row_scale = torch.ones_like(r)
        adv = centred

    single = counts[inv] == 1
    if bool(single.any()):
        if singleton == "zero":
            adv = torch.where(single, torch.zeros_like(adv), adv)
        else:  # verl: mean 0, std 1
            raw = r / (1.0 + epsilon) if scale != "none" else r
            adv = torch.where(single, raw, adv)
            row_mean = torch.where(single, torch.zeros_like(row_mean), row_mean)
            row_scale = torch.where(single, torch.ones_like(row_scale), row_scale)

    zero_var = int(((counts > 1) & constant).sum())
    return GroupAdvantages(
        advantages=adv,
        group_mean=row_mean,
        group_std=row_scale,
        group_size=counts[inv],
        num_groups=int(counts.shape[0]),
        num_singleton_groups=int((counts == 1).sum()),
        num_zero_variance_groups=zero_var,
    )


def dr_grpo_advantages(rewards, group_ids) -> GroupAdvantages:
    """Dr.GRPO advantages: group-mean-centred rewards, no std scaling.

    Equivalent to ``group_advantages(rewards, group_ids, scale="none")``
    (Liu et al. 2025, section 3.2). The matching loss aggregation is
    ``"seq-mean-token-sum-norm"`` in :mod:`polab.estimators.policy_loss`.
    """
    return group_advantages(rewards, group_ids, scale="none")


def rloo_advantages(rewards, group_ids, *, singleton: Literal["zero", "raw"] = "zero") -> GroupAdvantages:
    r"""REINFORCE leave-one-out advantages.

    .. math:: A_i = r_i - \frac{1}{n_g - 1}\sum_{j\in g, j\ne i} r_j
              = \frac{n_g}{n_g - 1}\,(r_i - \bar r_g)

    (Ahmadian et al. 2024, eq. 7; verl's ``rloo`` and ``rloo_vectorized`` and
    OpenRLHF's ``rloo`` use the same exact baseline).

    Parameters
    ----------
    rewards : Tensor, shape [batch]
    group_ids : Tensor, shape [batch], integer
    singleton : {"zero", "raw"}
        A group of one response has no leave-one-out baseline. ``"zero"``
        (default) gives it advantage 0, as verl 0.9.1
        ``core_algos.py::compute_rloo_vectorized_outcome_advantage`` does
        (the factor ``(c > 1)``); ``"raw"`` keeps its raw score (baseline 0),
        as verl 0.9.1's loop version ``compute_rloo_outcome_advantage`` does
        (its group mean is set to 0 and the score is left unchanged).

    Returns
    -------
    GroupAdvantages
        ``group_mean`` is the group mean (0 for a singleton under
        ``"raw"``), ``group_std`` ones.
    """
    if singleton not in ("zero", "raw"):
        raise ValueError(f"singleton must be 'zero' (verl rloo_vectorized) or 'raw' (verl rloo); got {singleton!r}.")
    r, g = _check_inputs(rewards, group_ids)
    inv, counts, mean, _, centred, constant = _segment_stats(r, g, unbiased=True)
    n = counts[inv].to(r.dtype)
    lone = torch.zeros_like(r) if singleton == "zero" else r
    adv = torch.where(n > 1, centred * n / (n - 1.0).clamp_min(1.0), lone)
    row_mean = mean[inv] if singleton == "zero" else torch.where(n > 1, mean[inv], torch.zeros_like(r))
    return GroupAdvantages(
        advantages=adv,
        group_mean=row_mean,
        group_std=torch.ones_like(r),
        group_size=counts[inv],
        num_groups=int(counts.shape[0]),
        num_singleton_groups=int((counts == 1).sum()),
        num_zero_variance_groups=int(((counts > 1) & constant).sum()),
    )


def batch_whiten(values, mask=None, *, epsilon: float = 1e-8, shift_mean: bool = True, unbiased: bool = False) -> torch.Tensor:
    r"""Whiten values over a whole batch: :math:`(x - \mu)/ \sqrt{\sigma^2 + \epsilon}`.

    The masked mean and variance run over the entries where ``mask`` is 1;
    entries outside the mask are returned as 0. ``unbiased=False`` (default)
    uses the population variance (OpenRLHF's REINFORCE++ batch
    normalisation); ``unbiased=True`` the Bessel-corrected variance, as verl's
    ``verl/utils/torch_functional.py::masked_whiten`` (``masked_var(...,
    unbiased=True)``, volcengine/verl 012be9d) used for PPO-GAE.

    Parameters
    ----------
    values : Tensor, any shape
    mask : Tensor, same shape, optional
    epsilon : float
    shift_mean : bool
        If False the mean is added back (only the scale changes).
    unbiased : bool
        Bessel's correction ``n / (n - 1)`` on the variance (needs >= 2 entries).
    """
    x = as_tensor(values, name="values")
    check_finite(x, name="values")
    m = torch.ones_like(x) if mask is None else check_mask(as_tensor(mask, name="mask").to(x.device), x)
    count = m.sum()
    need = 2 if unbiased else 1
    if count < need:
        raise ValueError(f"mask selects {int(count)} entries; whitening needs at least {need} (unbiased={unbiased}).")
    mu = torch.where(m > 0, x, torch.zeros_like(x)).sum() / count
    var = torch.where(m > 0, (x - mu) ** 2, torch.zeros_like(x)).sum() / count
    if unbiased:
        var = var * count / (count - 1.0)
    out = (x - mu) * torch.rsqrt(var + epsilon)
    if not shift_mean:
        out = out + mu
    return torch.where(m > 0, out, torch.zeros_like(out))


def broadcast_to_tokens(advantages, mask) -> torch.Tensor:
    """Give every response token its response's scalar advantage.

    Parameters
    ----------
    advantages : Tensor, shape [batch]
    mask : Tensor, shape [batch, time]
        1 on response tokens.

    Returns
    -------
    Tensor, shape [batch, time], zero outside the mask.
    """
    a = as_tensor(advantages, name="advantages")
    check_ndim(a, 1, name="advantages", layout="[batch]")
    mk = as_tensor(mask, name="mask")
    check_ndim(mk, 2, name="mask", layout="[batch, time]")
    if mk.shape[0] != a.shape[0]:
        raise ValueError(f"advantages has {a.shape[0]} rows but mask has {mk.shape[0]}.")
    return a[:, None] * mk.to(a.dtype)


def sequence_advantages(token_advantages, mask) -> torch.Tensor:
    """Scalar advantage of each response: the mean over its response tokens.

    This is the per-response statistic DUMP feeds its scheduler (the DUMP
    code takes ``advantages[i][response_mask[i]].mean()``). Under GRPO every
    token carries the same value, so it returns the sequence advantage.
    Rows with an empty mask get 0.

    Shapes: ``token_advantages`` and ``mask`` [batch, time] -> [batch].
    """
    a = as_tensor(token_advantages, name="token_advantages")
    check_ndim(a, 2, name="token_advantages", layout="[batch, time]")
    mk = check_mask(as_tensor(mask, name="mask").to(a.device), a)
    count = mk.sum(dim=1)
    return (a * mk).sum(dim=1) / count.clamp_min(1.0)
