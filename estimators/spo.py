r"""Segment Policy Optimization (SPO): segment partitions, Monte Carlo segment advantages, probability-mask loss.

SPO splits each response :math:`y = (y_1, \dots, y_T)` into contiguous
segments :math:`y = (\mathrm{seg}_1, \dots, \mathrm{seg}_K)` with boundaries
:math:`0 = t_0 < t_1 < \dots < t_K = T`, estimates the value of every boundary
state :math:`s_{t_k} = (x, y_{\le t_k})` by Monte Carlo (the mean reward of
continuations sampled from it), and gives segment :math:`k` the advantage

.. math::

    A_k = \hat V(s_{t_k}) - \hat V(s_{t_{k-1}}),\qquad \hat V(s_{t_K}) = r(x, y)

(SPO-chain; the segment's value gain). Partitions:

- :func:`cutpoint_segments` (SPO-chain): *cutpoints* are tokens whose
  probability under the sampling policy is below :math:`\rho`; a new
  segment starts just before the 1st, :math:`(1+I)`-th, :math:`(1+2I)`-th, ...
  cutpoint, :math:`I` = ``cutpoints_per_segment`` (the paper's "interval",
  e.g. int5), as the authors' code does; the high-probability tokens before
  the first cutpoint form a lead-in segment;
- :func:`fixed_size_segments` (SPO-tree, and a baseline): every
  ``segment_length`` tokens.

SPO-tree (:func:`tree_segment_advantages`) samples a tree: every node is a
segment, its children are continuations sampled from the end of it, and
leaves are complete responses. A node's value is the mean reward of the leaves
below it, and its advantage is its value minus the mean value of its sibling
group (children of the same parent), optionally divided by that group's std.

The probability-mask policy loss (:func:`spo_policy_loss`) assigns each
segment's advantage only to its cutpoint tokens (probability below
:math:`\rho`), where the paper argues credit concentrates, and runs PPO's
clipped surrogate on those tokens.

Invariances (tested): one segment per response with :math:`\hat V(s_0)` the
group-mean reward gives :math:`A = r - \bar r_g`, i.e. Dr.GRPO
(:func:`polab.estimators.advantages.dr_grpo_advantages`); a depth-one tree is
Dr.GRPO (``scale="none"``) or GRPO (``scale="group"``).

Notes
-----
Source status. SPO-chain's partition, chain advantages and probability mask
are checked against the authors' code, AIFrameResearch/SPO at commit
b9fc6a263dec54e28137fd488a9b9c0e0d026025,
``src/treetune/episode_generators/math_episode_generator_with_mc_advantages.py``
(``_create_value_estimation_requests``: cutpoints are the positions just
before tokens with probability < 0.9, every ``cutpoint_interval``-th of them
from the first, default 5; ``_compute_token_advantages``: each segment gets
the value at its end minus the value at its start, the last one the score
minus the value at the last cut, tokens with probability > 0.9 get 0) and
``src/treetune/trainers/ppo_trainer.py`` (probability mask ``exp(old_logp) <
0.9``); the paper's Monte Carlo sample count is 9
(``configs/episode_generators/9rolls.jsonnet``, used by the SPO-chain
configs). :data:`SPO_CHAIN_PAPER` holds these constants. One difference,
without effect under the probability mask: the authors compute no value at
the prompt unless the first response token is a cutpoint, so their lead-in
segment gets advantage 0; here it gets :math:`\hat V(s_{t_1}) - \hat V(s_0)`,
and its tokens (all of probability >= :math:`\rho`) carry no loss under the
mask either way. SPO-tree's sibling-group scaling (``scale``) remains our
reading of the paper.

References
----------
Guo, Xu, Liu, Ye, Qiu, "Segment Policy Optimization: Effective Segment-Level
Credit Assignment in RL for Large Language Models", arXiv 2505.23564, 2025.
Code: AIFrameResearch/SPO (built on VinePPO's treetune).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .checks import as_tensor, check_finite, check_mask, check_ndim, check_same_shape
from .policy_loss import PolicyLoss, ppo_clip_loss

__all__ = [
    "SPOChainPreset",
    "SPO_CHAIN_PAPER",
    "cutpoint_mask",
    "cutpoint_segments",
    "fixed_size_segments",
    "segment_starts",
    "chain_segment_advantages",
    "TreeAdvantages",
    "tree_segment_advantages",
    "spo_policy_loss",
]


@dataclass(frozen=True)
class SPOChainPreset:
    """Named SPO-chain hyperparameters.

    Attributes
    ----------
    threshold : float
        Cutpoint probability :math:`\rho`.
    cutpoints_per_segment : int
        The interval :math:`I`.
    mc_samples : int
        Monte Carlo continuations per segment start.
    """

    threshold: float
    cutpoints_per_segment: int
    mc_samples: int


#: The authors' defaults (AIFrameResearch/SPO b9fc6a2): rho = 0.9 (hard-coded in
#: ``math_episode_generator_with_mc_advantages.py`` and ``trainers/ppo_trainer.py``),
#: ``cutpoint_interval`` 5 (the generator's default and the README's int5 runs) and
#: 9 Monte Carlo samples (``configs/episode_generators/9rolls.jsonnet``).
SPO_CHAIN_PAPER = SPOChainPreset(threshold=0.9, cutpoints_per_segment=5, mc_samples=9)


def _mask_of(logp_or_mask, mask):
    x = as_tensor(logp_or_mask, name="token_logprobs")
    check_ndim(x, 2, name="token_logprobs", layout="[batch, time]")
    m = check_mask(as_tensor(mask, name="mask").to(x.device), x if x.is_floating_point() else x.double())
    return x, m


def cutpoint_mask(token_logprobs, mask, *, threshold: float) -> torch.Tensor:
    r"""Cutpoints: response tokens with probability :math:`\pi(y_t \mid x, y_{<t}) < \rho`.

    Shapes: ``token_logprobs``, ``mask`` [batch, time] -> bool [batch, time].
    ``threshold`` is :math:`\rho \in (0, 1]`.
    """
    lp, m = _mask_of(token_logprobs, mask)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1]; got {threshold}.")
    check_finite(torch.where(m > 0, lp, torch.zeros_like(lp)), name="token_logprobs (on response tokens)")
    return (lp < math.log(threshold)) & (m > 0)


def _close_segments(closes: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Segment ids from a bool 'segment ends at this token' tensor: id = number of closes strictly before t; -1 off-mask."""
    c = (closes & (m > 0)).long()
    seg = c.cumsum(dim=1) - c
    return torch.where(m > 0, seg, torch.full_like(seg, -1))


def cutpoint_segments(
    token_logprobs,
    mask,
    *,
    threshold: float,
    cutpoints_per_segment: int,
    placement: Literal["before", "after"] = "before",
) -> torch.Tensor:
    r"""SPO-chain's cutpoint-based partition.

    With cutpoints numbered 1, 2, ... along the response (from
    :func:`cutpoint_mask`) and :math:`I` = ``cutpoints_per_segment``:

    - ``placement="before"`` (the authors' code, default): a segment starts
      at cutpoint number :math:`1, 1+I, 1+2I, \dots`, i.e. the cut is just
      before that token, and runs up to the next such cutpoint or the end of
      the response. Every segment after the lead-in therefore holds between 1
      and :math:`I` cutpoints, and the last one, whose advantage carries the
      final reward, always has a cutpoint token, so under the probability
      mask the outcome always reaches the loss. The tokens before the first
      cutpoint form segment 0 (the lead-in); when the first response token
      is a cutpoint there is no lead-in.
    - ``placement="after"`` (polab's earlier form, kept for reproducibility):
      a segment ends right after every :math:`I`-th cutpoint; trailing tokens
      form the last segment. When the number of cutpoints is a multiple of
      :math:`I` and the response ends with high-probability tokens, that last
      segment holds no cutpoint and the probability mask removes the final
      reward from the loss.

    A response without cutpoints is one segment.

    Parameters
    ----------
    token_logprobs, mask : Tensor, shape [batch, time]
        Log-probabilities of the sampled tokens under the sampling policy.
    threshold : float in (0, 1]
    cutpoints_per_segment : int >= 1
    placement : {"before", "after"}

    Returns
    -------
    Tensor, shape [batch, time], int64
        Segment index of each response token (0, 1, ...), -1 outside the mask.

    References
    ----------
    AIFrameResearch/SPO b9fc6a2,
    ``math_episode_generator_with_mc_advantages.py::_create_value_estimation_requests``
    (``cutpoints = np.where(response_probs < 0.9)[0] - 1``, then
    ``cutpoints[::cutpoint_interval]``).
    """
    if isinstance(cutpoints_per_segment, bool) or int(cutpoints_per_segment) != cutpoints_per_segment or int(cutpoints_per_segment) < 1:
        raise ValueError(f"cutpoints_per_segment must be an integer >= 1 (the paper's interval, 5 in SPO_CHAIN_PAPER); got {cutpoints_per_segment}.")
    if placement not in ("before", "after"):
        raise ValueError(f"placement must be 'before' (the authors' code) or 'after' (polab's earlier form); got {placement!r}.")
    interval = int(cutpoints_per_segment)
    cp = cutpoint_mask(token_logprobs, mask, threshold=threshold)
    _, m = _mask_of(token_logprobs, mask)
    count = cp.long().cumsum(dim=1)
    idx = torch.arange(m.shape[1], device=m.device)[None, :].expand_as(m)
    if placement == "after":
        closes = cp & (count % interval == 0)
        # a close on the row's last response token would open an empty segment: drop it
        last = torch.where(m > 0, idx, torch.full_like(idx, -1)).amax(dim=1, keepdim=True)
        closes = closes & (idx != last)
        return _close_segments(closes, m)
    starts = cp & ((count - 1) % interval == 0)
    # segment id = number of starts at or before t, minus one where the row's first response token is a start
    first = torch.where(m > 0, idx, torch.full_like(idx, m.shape[1])).amin(dim=1, keepdim=True)
    first_is_start = (starts & (idx == first)).any(dim=1, keepdim=True).long()
    seg = starts.long().cumsum(dim=1) - first_is_start
    return torch.where(m > 0, seg, torch.full_like(seg, -1))


def fixed_size_segments(mask, *, segment_length: int) -> torch.Tensor:
    """Segments of ``segment_length`` consecutive response tokens (the last may be shorter).

    Shapes: ``mask`` [batch, time] -> int64 [batch, time], -1 outside the mask.
    """
    mk = as_tensor(mask, name="mask")
    check_ndim(mk, 2, name="mask", layout="[batch, time]")
    m = check_mask(mk, mk.double())
    if int(segment_length) < 1:
        raise ValueError(f"segment_length must be >= 1; got {segment_length}.")
    k = (m.cumsum(dim=1) - 1).clamp_min(0).long() // int(segment_length)
    return torch.where(m > 0, k, torch.full_like(k, -1))


def segment_starts(segment_ids) -> list[list[int]]:
    """Token index where each segment of each row starts (the MC-rollout points of SPO-chain).

    Shapes: ``segment_ids`` [batch, time] -> one list per row; entry ``k`` is
    the first token of segment ``k`` (so the prefix ``y[:start]`` is state
    :math:`s_{t_{k}}`; segment 0 starts at the prompt).
    """
    s = as_tensor(segment_ids, name="segment_ids")
    check_ndim(s, 2, name="segment_ids", layout="[batch, time]")
    out = []
    for row in s.tolist():
        starts, seen = [], -1
        for t, k in enumerate(row):
            if k > seen:
                starts.append(t)
                seen = k
        out.append(starts)
    return out


def chain_segment_advantages(segment_ids, boundary_values, final_rewards) -> torch.Tensor:
    r"""SPO-chain segment advantages, one per token: :math:`A_k = \hat V(s_{t_k}) - \hat V(s_{t_{k-1}})`.

    Parameters
    ----------
    segment_ids : Tensor, shape [batch, time], int
        From :func:`cutpoint_segments` / :func:`fixed_size_segments`; -1 off-mask.
    boundary_values : Tensor, shape [batch, K_max]
        :math:`\hat V` at the start of each segment: entry ``k`` is the MC
        value of the state before segment ``k`` (entry 0: the prompt). Entries
        beyond a row's number of segments are ignored (NaN allowed there).
    final_rewards : Tensor, shape [batch]
        :math:`r(x, y)`, the value of the terminal state.

    Returns
    -------
    Tensor, shape [batch, time]
        Each response token carries its segment's advantage; 0 off-mask.

    Notes
    -----
    Summing over segments telescopes: :math:`\sum_k A_k = r - \hat V(s_0)`
    (tested), the trajectory-level advantage with an MC baseline.
    """
    sid = as_tensor(segment_ids, name="segment_ids")
    check_ndim(sid, 2, name="segment_ids", layout="[batch, time]")
    bv = as_tensor(boundary_values, name="boundary_values")
    check_ndim(bv, 2, name="boundary_values", layout="[batch, K_max]")
    fr = as_tensor(final_rewards, name="final_rewards").to(device=bv.device, dtype=bv.dtype)
    check_ndim(fr, 1, name="final_rewards", layout="[batch]")
    sid = sid.to(bv.device)
    B = sid.shape[0]
    if bv.shape[0] != B or fr.shape[0] != B:
        raise ValueError(f"segment_ids, boundary_values and final_rewards need the same rows; got {B}, {bv.shape[0]}, {fr.shape[0]}.")
    check_finite(fr, name="final_rewards")
    nseg = (sid.max(dim=1).values + 1).clamp_min(0)
    if bool((nseg > bv.shape[1]).any()):
        raise ValueError(f"boundary_values has {bv.shape[1]} columns but some row has {int(nseg.max())} segments: give one value per segment start.")
    cols = torch.arange(bv.shape[1], device=bv.device)[None, :]
    used = cols < nseg[:, None]
    if bool((~torch.isfinite(bv) & used).any()):
        raise ValueError("boundary_values has non-finite entries at segment starts; only entries beyond a row's last segment may be NaN.")
    # V at the end of segment k: the start of segment k+1, or the reward after the last segment
    v_start = torch.where(used, bv, torch.zeros_like(bv))
    nxt = torch.cat([v_start[:, 1:], torch.zeros_like(v_start[:, :1])], dim=1)
    is_last = cols == (nseg[:, None] - 1)
    v_end = torch.where(is_last, fr[:, None].expand_as(bv), nxt)
    seg_adv = torch.where(used, v_end - v_start, torch.zeros_like(bv))
    safe = sid.clamp_min(0)
    tok = torch.gather(seg_adv, 1, safe)
    return torch.where(sid >= 0, tok, torch.zeros_like(tok))


@dataclass(frozen=True)
class TreeAdvantages:
    """Result of :func:`tree_segment_advantages` (one entry per node).

    Attributes
    ----------
    values : Tensor, shape [nodes]
        Mean reward of the leaves below each node.
    advantages : Tensor, shape [nodes]
        Value minus the mean value of its sibling group (scaled if asked); 0 for roots.
    num_leaves : Tensor, shape [nodes], int64
    """

    values: torch.Tensor
    advantages: torch.Tensor
    num_leaves: torch.Tensor


def tree_segment_advantages(parents, leaf_rewards, *, scale: Literal["none", "group"] = "none", epsilon: float = 1e-6) -> TreeAdvantages:
    r"""SPO-tree advantages on a sampled tree of segments.

    .. math::

        V(n) = \frac{1}{|\mathcal L(n)|}\sum_{\ell\in\mathcal L(n)} r_\ell,\qquad
        A(n) = \frac{V(n) - \mathrm{mean}_{m \in \mathrm{sib}(n)} V(m)}{F},

    where :math:`\mathcal L(n)` are the leaves (complete responses) below node
    :math:`n`, :math:`\mathrm{sib}(n)` the children of :math:`n`'s parent
    (including :math:`n`) and :math:`F` = 1 (``scale="none"``) or the
    unbiased std of the sibling values + ``epsilon`` (``"group"``). With equal
    branching, the sibling mean equals the parent's value.

    Parameters
    ----------
    parents : Tensor, shape [nodes], int
        Parent index of each node, -1 for roots (one root per prompt). Parents
        must come before their children.
    leaf_rewards : Tensor, shape [nodes]
        Reward of each leaf; ignored (NaN allowed) on internal nodes.
    scale : {"none", "group"}
    epsilon : float

    Returns
    -------
    TreeAdvantages
        Give every token of a node's segment ``advantages[node]``.
    """
    p = as_tensor(parents, name="parents")
    check_ndim(p, 1, name="parents", layout="[nodes]")
    if p.is_floating_point():
        raise ValueError("parents must be integer node indices (-1 for a root).")
    lr = as_tensor(leaf_rewards, name="leaf_rewards")
    check_ndim(lr, 1, name="leaf_rewards", layout="[nodes]")
    if not lr.is_floating_point():
        lr = lr.to(torch.get_default_dtype())
    n = p.shape[0]
    if lr.shape[0] != n:
        raise ValueError(f"parents has {n} nodes but leaf_rewards has {lr.shape[0]}.")
    if scale not in ("none", "group"):
        raise ValueError(f"scale must be 'none' or 'group'; got {scale!r}.")
    pl = p.tolist()
    for i, q in enumerate(pl):
        if q >= i or q < -1:
            raise ValueError(f"parents[{i}] = {q}: parents must be -1 or an earlier node index (list nodes parent-first).")
    is_leaf = torch.ones(n, dtype=torch.bool)
    for q in pl:
        if q >= 0:
            is_leaf[q] = False
    is_leaf = is_leaf.to(lr.device)
    if bool((~torch.isfinite(lr) & is_leaf).any()):
        raise ValueError("leaf_rewards must be finite on leaves (nodes with no children).")
    sums = torch.where(is_leaf, lr, torch.zeros_like(lr)).clone()
    counts = is_leaf.long().clone()
    for i in range(n - 1, -1, -1):  # children after parents: accumulate bottom-up
        q = pl[i]
        if q >= 0:
            sums[q] = sums[q] + sums[i]
            counts[q] = counts[q] + counts[i]
    values = sums / counts.to(lr.dtype)
    adv = torch.zeros_like(values)
    children: dict[int, list[int]] = {}
    for i, q in enumerate(pl):
        if q >= 0:
            children.setdefault(q, []).append(i)
    for q, kids in children.items():
        v = values[kids]
        centred = v - v.mean()
        if bool((v == v[0]).all()):
            centred = torch.zeros_like(v)
        if scale == "group" and len(kids) > 1:
            centred = centred / (v.std(unbiased=True) + epsilon)
        if len(kids) == 1:
            centred = torch.zeros_like(v)
        adv[kids] = centred
    return TreeAdvantages(values=values, advantages=adv, num_leaves=counts)


def spo_policy_loss(
    logp,
    old_logp,
    token_advantages,
    mask,
    *,
    threshold: float | None = 0.9,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    aggregation: str = "token-mean",
    max_length: int | None = None,
    ref_logp=None,
    kl_coef: float = 0.0,
) -> PolicyLoss:
    r"""SPO's probability-mask policy loss: PPO's clipped surrogate on cutpoint tokens only.

    .. math::

        \mathcal L = -\frac{1}{\sum_{t} M_t}\sum_{t} M_t
        \min\big(\rho_t A_{k(t)},\ \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon) A_{k(t)}\big),
        \qquad M_t = \mathbb 1[\pi_{old}(y_t) < \rho],

    with :math:`A_{k(t)}` the advantage of token :math:`t`'s segment
    (``aggregation="token-mean"``; other modes of
    :func:`polab.estimators.policy_loss.aggregate` apply to the masked tokens).

    Parameters
    ----------
    logp, old_logp : Tensor, shape [batch, time]
    token_advantages : Tensor, shape [batch, time]
    mask : Tensor, shape [batch, time]
    threshold : float in (0, 1] or None
        :math:`\rho` (0.9, the authors' value: ``exp(old_logprobs) < 0.9`` in
        AIFrameResearch/SPO b9fc6a2 ``trainers/ppo_trainer.py``). ``None`` turns the
        probability mask off (every response token carries its segment's advantage).
    clip_low, clip_high, aggregation, max_length, ref_logp, kl_coef
        As in :func:`polab.estimators.policy_loss.ppo_clip_loss`.

    Returns
    -------
    PolicyLoss
    """
    check_ndim(logp, 2, name="logp", layout="[batch, time]")
    check_same_shape(logp, old_logp, names=("logp", "old_logp"))
    m = check_mask(as_tensor(mask, name="mask").to(logp.device), logp)
    if threshold is not None:
        m = m * cutpoint_mask(old_logp.detach(), m, threshold=threshold).to(m.dtype)
    return ppo_clip_loss(logp, old_logp, token_advantages, m, clip_low=clip_low, clip_high=clip_high,
                         aggregation=aggregation, max_length=max_length, ref_logp=ref_logp, kl_coef=kl_coef)
