r"""Preference losses on sequence log-probabilities, and the sampling schemes of Tajwar et al. (2024).

Functions of sequence log-probabilities (sums, or means, of token
log-probabilities over the response), so the same code trains a categorical
bandit policy (one "token" per sequence) and a language model. No model code.

Losses, with the DPO margin :math:`h = [\log\pi(y_w) - \log\pi_{ref}(y_w)] - [\log\pi(y_l) - \log\pi_{ref}(y_l)]`:

- :func:`dpo_loss`: :math:`-\log\sigma(\beta h)` (Rafailov et al. 2023, eq. 7);
  with ``label_smoothing`` :math:`\epsilon>0` it is **conservative DPO**
  (:func:`conservative_dpo_loss`, Mitchell 2023):
  :math:`-(1-\epsilon)\log\sigma(\beta h) - \epsilon\log\sigma(-\beta h)`;
- :func:`ipo_loss`: :math:`(h - h^*)^2` (Azar et al. 2024, eq. 17) with the
  target margin :math:`h^* = 1/(2\beta)` by default;
- :func:`best_of_n_loss`: maximum likelihood on the best of each group,
  :math:`-\log\pi(y_{best})`, optionally plus a *negative gradient*
  :math:`+c\log\pi(y)` on the worst or on all non-best responses.

Conventions of the anchor frameworks (``PREFERENCE_CONVENTIONS``):

=====================  ==========================  =======================  ===========================================================
framework              conservative DPO            IPO target, logps        source
=====================  ==========================  =======================  ===========================================================
TRL <= 0.28            ``label_smoothing`` on      1/(2β), token **mean**   ``trl/trainer/dpo_trainer.py`` of trl 0.28.0 (read from the
                       ``loss_type="sigmoid"``                              wheel): "sigmoid" is cDPO with ``label_smoothing``;
                       (as here)                                            IPO averages log-probs over tokens
TRL >= 0.29            none: "sigmoid" ignores     1/(2β), token **mean**   ``trl/trainer/dpo_trainer.py`` of trl 0.29.0: "sigmoid" is
                       ``label_smoothing``, which                           plain DPO; ``label_smoothing`` serves "robust" (rDPO, here
                       serves "robust" and "exo"                            :func:`robust_dpo_loss`), "exo_pair" and "aot"
OpenRLHF               ``label_smoothing`` (as     1/(2β), token sum        ``openrlhf/models/loss.py::DPOLoss`` (read at 09f5ace;
                       here)                                                notes snapshot 3c3be62)
understanding-rlhf     (none)                      β (the target margin     ``bandit_experiment/dpo_utils.py::dpo_loss`` (6af8169)
(the paper's code)                                 itself), token sum
verl                   no DPO loss family (notes: ``docs/advance/dpo_extension.rst`` is a tutorial only)
=====================  ==========================  =======================  ===========================================================

These conventions are reproduced by arguments (``target_margin``,
``average`` in :func:`sequence_logprobs`) and tested with hand-derived
values; no code was copied.

Sampling schemes (:data:`SAMPLING_SCHEMES`) name what the paper compares: the
responses of a step come from the reference policy (``source="reference"``:
offline data, since a fixed dataset drawn from :math:`\pi_{ref}` and consumed
once is distributed exactly like fresh draws from it) or from the current
policy (``source="policy"``: on-policy), and the loss is pairwise (DPO, IPO)
or best-of-N with or without a negative gradient. :func:`scheme_loss` applies
a scheme's loss to a batch; the caller draws the samples from the scheme's
source, so the same code serves the bandit checks and the LLM trainer.

Further sequence-level methods of the LLM-estimators issue are selectable by
name through the same :func:`scheme_loss` (:data:`METHOD_SCHEMES`, kept
apart from the paper's comparison set :data:`SAMPLING_SCHEMES`;
:data:`PREFERENCE_SCHEMES` holds both): CoPG
(:mod:`polab.estimators.contrastive_pg`), OPA-DPO and GEPO
(:mod:`polab.estimators.group_preference`), each from reference (offline) or
policy (on-policy) samples.

References
----------
Tajwar et al., "Preference Fine-Tuning of LLMs Should Leverage Suboptimal,
On-Policy Data", ICML 2024, arXiv 2404.14367.
Rafailov et al., "Direct Preference Optimization", NeurIPS 2023, arXiv 2305.18290.
Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
Preferences", AISTATS 2024, arXiv 2310.12036.
Mitchell, "A note on DPO with noisy preferences and relationship to IPO", 2023.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .checks import as_tensor, check_finite, check_mask, check_ndim, check_same_shape

__all__ = [
    "PREFERENCE_CONVENTIONS",
    "PreferenceLoss",
    "PreferencePairs",
    "BestOfNLoss",
    "SamplingScheme",
    "SAMPLING_SCHEMES",
    "METHOD_SCHEMES",
    "PREFERENCE_SCHEMES",
    "sequence_logprobs",
    "preference_margin",
    "dpo_loss",
    "conservative_dpo_loss",
    "ipo_loss",
    "preference_pairs",
    "robust_dpo_loss",
    "best_of_n_loss",
    "scheme_loss",
]

#: How each framework parameterises the losses (see the module docstring for the files).
PREFERENCE_CONVENTIONS: dict[str, dict] = {
    # trl 0.28.0 dpo_trainer.py: loss_type="sigmoid" applies label_smoothing (cDPO); trl 0.29.0 ignores it there
    # (only "robust", "exo_pair" and "aot" read it). "trl" keeps the <= 0.28 meaning for existing callers.
    "trl": {"ipo_target": "1/(2 beta)", "ipo_logps": "mean", "cdpo": "label_smoothing"},
    "trl<=0.28": {"ipo_target": "1/(2 beta)", "ipo_logps": "mean", "cdpo": "label_smoothing"},
    "trl>=0.29": {"ipo_target": "1/(2 beta)", "ipo_logps": "mean", "cdpo": None, "robust_dpo": "label_smoothing"},
    "openrlhf": {"ipo_target": "1/(2 beta)", "ipo_logps": "sum", "cdpo": "label_smoothing"},
    "understanding-rlhf": {"ipo_target": "beta", "ipo_logps": "sum", "cdpo": None},
}


@dataclass(frozen=True)
class PreferenceLoss:
    """Result of :func:`dpo_loss` / :func:`ipo_loss`.

    Attributes
    ----------
    loss : Tensor, scalar
        Mean of ``per_pair`` over the pairs: what to backpropagate.
    per_pair : Tensor, shape [pairs]
    margin : Tensor, shape [pairs]
        :math:`h` (with grad).
    chosen_reward, rejected_reward : Tensor, shape [pairs], detached
        Implicit rewards :math:`\\beta(\\log\\pi - \\log\\pi_{ref})` of each side (DPO's logging convention).
    accuracy : float
        Fraction of pairs with :math:`h > 0`.
    """

    loss: torch.Tensor
    per_pair: torch.Tensor
    margin: torch.Tensor
    chosen_reward: torch.Tensor
    rejected_reward: torch.Tensor
    accuracy: float


def sequence_logprobs(token_logp: torch.Tensor, mask: torch.Tensor, *, average: bool = False) -> torch.Tensor:
    r"""Sequence log-probability :math:`\sum_t m_t \log\pi(y_t\mid\cdot)` (or its mean over response tokens).

    Shapes
    ------
    token_logp, mask : [batch, time] -> [batch]

    ``average=True`` is TRL's IPO convention (log-probs divided by the number
    of response tokens); an empty response gives 0.
    """
    check_ndim(token_logp, 2, name="token_logp", layout="[batch, time]")
    m = check_mask(mask, token_logp)
    check_finite(token_logp.detach() * m, name="token_logp (on response tokens)")
    s = (token_logp * m).sum(dim=1)
    if average:
        s = s / m.sum(dim=1).clamp_min(1.0)
    return s


def preference_margin(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp) -> torch.Tensor:
    r""":math:`h = (\log\pi(y_w) - \log\pi_{ref}(y_w)) - (\log\pi(y_l) - \log\pi_{ref}(y_l))`; all inputs [pairs] -> [pairs]."""
    names = ("chosen_logp", "rejected_logp", "ref_chosen_logp", "ref_rejected_logp")
    ts = [as_tensor(x, name=n) for x, n in zip((chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp), names)]
    check_ndim(ts[0], 1, name=names[0], layout="[pairs]")
    for t, n in zip(ts[1:], names[1:]):
        check_same_shape(ts[0], t, names=(names[0], n))
    if ts[0].shape[0] == 0:
        raise ValueError("no pairs: chosen_logp is empty. Skip the update when a batch yields no preference pair.")
    for t, n in zip(ts, names):
        check_finite(t.detach(), name=n)
    c, r, rc, rr = ts
    rc, rr = rc.to(c.dtype), rr.to(c.dtype)
    return (c - rc) - (r - rr)


def _result(per_pair, h, chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta) -> PreferenceLoss:
    with torch.no_grad():
        cr = beta * (as_tensor(chosen_logp, name="c") - as_tensor(ref_chosen_logp, name="rc").to(h.dtype))
        rr = beta * (as_tensor(rejected_logp, name="r") - as_tensor(ref_rejected_logp, name="rr").to(h.dtype))
        acc = float((h > 0).to(h.dtype).mean())
    return PreferenceLoss(loss=per_pair.mean(), per_pair=per_pair, margin=h, chosen_reward=cr.detach(),
                          rejected_reward=rr.detach(), accuracy=acc)


def dpo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, *, beta: float = 0.1,
             label_smoothing: float = 0.0) -> PreferenceLoss:
    r"""DPO, and conservative DPO when ``label_smoothing`` > 0.

    .. math::

        \ell(h) = -(1-\epsilon)\log\sigma(\beta h) - \epsilon\log\sigma(-\beta h)

    (DPO: Rafailov et al. 2023, eq. 7, :math:`\epsilon = 0`; cDPO: Mitchell
    2023, the expected DPO loss when each label is flipped with probability
    :math:`\epsilon`). The same formula and argument name as TRL up to
    0.28 (``loss_type="sigmoid"``, ``trl/trainer/dpo_trainer.py`` of trl
    0.28.0) and OpenRLHF (``DPOLoss``). Since trl 0.29.0 ``loss_type="sigmoid"``
    ignores ``label_smoothing`` (plain DPO, this function with 0) and
    ``label_smoothing`` means rDPO's flip rate (:func:`robust_dpo_loss`);
    TRL's ``loss_type="aot"`` keeps the cDPO form.

    Parameters
    ----------
    chosen_logp, rejected_logp : Tensor, shape [pairs]
        Sequence log-probabilities of the preferred and dispreferred response under the policy (with grad).
    ref_chosen_logp, ref_rejected_logp : Tensor, shape [pairs]
        The same under the reference policy (no grad needed).
    beta : float, > 0
        Inverse temperature of the implicit reward; KL-regularisation strength.
    label_smoothing : float in [0, 0.5)

    Returns
    -------
    PreferenceLoss
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}.")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5) (the probability that a label is flipped); got {label_smoothing}.")
    h = preference_margin(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp)
    per = -F.logsigmoid(beta * h)
    if label_smoothing:
        per = (1.0 - label_smoothing) * per - label_smoothing * F.logsigmoid(-beta * h)
    return _result(per, h, chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta)


def conservative_dpo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, *, beta: float = 0.1,
                          label_smoothing: float = 0.1) -> PreferenceLoss:
    r"""Conservative DPO (cDPO, Mitchell 2023): :func:`dpo_loss` with ``label_smoothing`` in (0, 0.5).

    Its per-pair minimiser is finite, :math:`h^* = \frac1\beta\log\frac{1-\epsilon}{\epsilon}`,
    whereas plain DPO drives :math:`h\to\infty`.
    """
    if not 0.0 < label_smoothing < 0.5:
        raise ValueError(f"conservative DPO needs label_smoothing in (0, 0.5); got {label_smoothing}. Use dpo_loss for 0.")
    return dpo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta=beta, label_smoothing=label_smoothing)


def robust_dpo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, *, beta: float = 0.1,
                    label_smoothing: float = 0.1) -> PreferenceLoss:
    r"""Robust DPO (rDPO, Chowdhury et al. 2024): an unbiased DPO loss under label flips with rate :math:`\epsilon`.

    .. math::

        \ell(h) = \frac{-(1-\epsilon)\log\sigma(\beta h) + \epsilon\log\sigma(-\beta h)}{1-2\epsilon}

    (Chowdhury, Kini, Natarajan, "Provably Robust DPO: Aligning Language
    Models with Noisy Feedback", ICML 2024, eq. 8). This is what
    ``label_smoothing`` means in TRL since 0.29 (``loss_type="robust"``,
    ``trl/trainer/dpo_trainer.py`` of trl 0.29.0, and of 0.28.0 too). Unlike
    cDPO (:func:`conservative_dpo_loss`) its expectation over flipped labels
    equals the clean DPO loss, so it does not bound :math:`h`.
    Shapes as :func:`dpo_loss`; ``label_smoothing`` in [0, 0.5).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}.")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5) (the label flip rate); got {label_smoothing}.")
    h = preference_margin(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp)
    eps = label_smoothing
    per = (-(1.0 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1.0 - 2.0 * eps)
    return _result(per, h, chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta)


def ipo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, *, beta: float = 0.1,
             target_margin: float | None = None) -> PreferenceLoss:
    r"""IPO: :math:`\ell(h) = (h - h^*)^2`, :math:`h^* = 1/(2\beta)` unless ``target_margin`` is given.

    Azar et al. 2024, eq. 17 (their :math:`\tau` is ``beta``), as in TRL
    (``loss_type="ipo"``) and OpenRLHF (``DPOLoss(ipo=True)``). The paper's
    bandit code uses the margin :math:`h^*=\beta` itself (β = 10 in its
    scripts): pass ``target_margin=beta``. TRL also averages token
    log-probabilities for IPO: build the inputs with
    ``sequence_logprobs(..., average=True)``.

    Shapes and returns as :func:`dpo_loss` (``chosen_reward`` uses ``beta``).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}.")
    h_star = 1.0 / (2.0 * beta) if target_margin is None else float(target_margin)
    h = preference_margin(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp)
    per = (h - h_star) ** 2
    return _result(per, h, chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta)


@dataclass(frozen=True)
class PreferencePairs:
    """Result of :func:`preference_pairs`: row indices of each pair's preferred and dispreferred response.

    Attributes
    ----------
    chosen, rejected : Tensor, shape [pairs], int64
    group : Tensor, shape [pairs], int64
        Group id of each pair.
    num_tied : int
        Within-group pairs (of the selected kind) dropped for a reward gap of 0 or below ``min_reward_gap``.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    group: torch.Tensor
    num_tied: int


def preference_pairs(rewards, group_ids, *, pairing: Literal["all", "best-worst"] = "all",
                     min_reward_gap: float = 0.0) -> PreferencePairs:
    r"""Preference pairs inside each group (responses to the same prompt), the winner decided by reward.

    ``pairing="all"``: every within-group pair :math:`i<j` (the paper's
    bandit DPO/IPO loop, ``dpo_utils.py::dpo_loss``); ``"best-worst"``: one
    pair per group, the highest against the lowest reward (first index among
    equals). Pairs whose reward gap is 0 or smaller than ``min_reward_gap``
    (the authors' IPO ``reward_threshold``) are dropped: they carry no
    preference. (The authors' code keeps exact ties, orienting them by
    sort order; dropping them is a departure.)

    Shapes
    ------
    rewards : [batch] float; group_ids : [batch] int -> pairs [P]
    Pairs come in increasing (group, chosen, rejected) order.
    """
    r = as_tensor(rewards, name="rewards")
    g = as_tensor(group_ids, name="group_ids")
    check_ndim(r, 1, name="rewards", layout="[batch]")
    check_ndim(g, 1, name="group_ids", layout="[batch]")
    if r.shape != g.shape:
        raise ValueError(f"rewards and group_ids must have the same length; got {r.shape[0]} and {g.shape[0]}.")
    if g.is_floating_point() or g.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor; got dtype {g.dtype}.")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    check_finite(r, name="rewards")
    if min_reward_gap < 0:
        raise ValueError(f"min_reward_gap must be >= 0; got {min_reward_gap}.")
    g = g.to(r.device)
    n = r.shape[0]
    extra_ties = 0
    same = g[:, None] == g[None, :]
    if pairing == "all":
        idx = torch.arange(n, device=r.device)
        cand = same & (idx[:, None] < idx[None, :])
    elif pairing == "best-worst":
        uniq, inv = torch.unique(g, return_inverse=True)
        best = _first_extreme_per_group(r, inv, uniq.shape[0], largest=True)
        worst = _first_extreme_per_group(r, inv, uniq.shape[0], largest=False)
        cand = torch.zeros(n, n, dtype=torch.bool, device=r.device)
        cand[best, worst] = True
        cand.fill_diagonal_(False)
        sizes = torch.bincount(inv, minlength=uniq.shape[0])
        extra_ties = int(((best == worst) & (sizes >= 2)).sum())  # all-tied groups: best is worst
    else:
        raise ValueError(f"pairing must be 'all' or 'best-worst'; got {pairing!r}.")
    gap = (r[:, None] - r[None, :]).abs()
    informative = cand & (gap > 0) & (gap >= min_reward_gap)
    a, b = informative.nonzero(as_tuple=True)
    a_wins = r[a] > r[b]
    chosen = torch.where(a_wins, a, b)
    rejected = torch.where(a_wins, b, a)
    num_tied = int((cand & ~informative).sum()) + extra_ties
    order = torch.argsort(g[chosen] * (n * n) + chosen * n + rejected)
    return PreferencePairs(chosen=chosen[order], rejected=rejected[order], group=g[chosen][order], num_tied=num_tied)


def _first_extreme_per_group(r: torch.Tensor, inv: torch.Tensor, k: int, *, largest: bool) -> torch.Tensor:
    """Row index of the first maximiser (or minimiser) of ``r`` in each of ``k`` groups (``inv``: group of each row)."""
    n = r.shape[0]
    ext = torch.full((k,), float("-inf") if largest else float("inf"), dtype=r.dtype, device=r.device)
    ext = ext.scatter_reduce(0, inv, r, reduce="amax" if largest else "amin", include_self=True)
    idx = torch.arange(n, device=r.device)
    cand = torch.where(r == ext[inv], idx, torch.full_like(idx, n))
    return torch.full((k,), n, dtype=torch.long, device=r.device).scatter_reduce(0, inv, cand, reduce="amin", include_self=True)


@dataclass(frozen=True)
class BestOfNLoss:
    """Result of :func:`best_of_n_loss`.

    Attributes
    ----------
    loss : Tensor, scalar
        Mean over groups of the per-group loss.
    per_group : Tensor, shape [groups]
    best_index, worst_index : Tensor, shape [groups], int64
        Rows of each group's best and worst response.
    positive_term, negative_term : Tensor, scalar, detached
        Group means of :math:`-\\log\\pi(y_{best})` and of the negative-gradient term.
    """

    loss: torch.Tensor
    per_group: torch.Tensor
    best_index: torch.Tensor
    worst_index: torch.Tensor
    positive_term: torch.Tensor
    negative_term: torch.Tensor


def best_of_n_loss(logp, rewards, group_ids, *, negative_gradient: Literal["none", "worst", "mean", "sum"] = "none",
                   negative_coef: float = 0.0, ref_logp=None) -> BestOfNLoss:
    r"""Best-of-N maximum likelihood ("Pref-FT"), with an optional negative gradient.

    Per group :math:`g` of responses to one prompt,

    .. math::

        \ell_g = -\log\pi(y_{best}) + \frac{c}{Z}\sum_{y\in S_g}\log\pi(y),

    where :math:`S_g` is empty (``"none"``), the worst response (``"worst"``,
    :math:`Z=1`), or the non-best responses (``"sum"``, :math:`Z=1`;
    ``"mean"``, :math:`Z=|g|-1`); the loss is the mean over groups. These are
    the authors' ``no_negative_gradient``, ``worst_action``,
    ``sum_over_worse_actions`` and ``average_over_worse_actions``
    (``bandit_experiment/bandit_learner.py``, with :math:`c` their ``beta``).
    With ``ref_logp`` every :math:`\log\pi(y)` becomes
    :math:`\log\pi(y) - \log\pi_{ref}(y)` (their ``_constrained`` variants;
    the gradient is unchanged, the value is shifted). Best and worst are the
    first maximiser and first minimiser of the reward in row order.

    Notes
    -----
    The negative term is unbounded below (:math:`\log\pi(y)\to-\infty`), as
    in the paper; keep :math:`c` small or the number of steps finite.

    Parameters
    ----------
    logp : Tensor, shape [batch]
        Sequence log-probabilities under the policy (with grad).
    rewards : Tensor, shape [batch]
    group_ids : Tensor, shape [batch], integer
    negative_gradient : {"none", "worst", "mean", "sum"}
    negative_coef : float, >= 0
    ref_logp : Tensor, shape [batch], optional
    """
    lp = as_tensor(logp, name="logp")
    check_ndim(lp, 1, name="logp", layout="[batch]")
    r = as_tensor(rewards, name="rewards")
    g = as_tensor(group_ids, name="group_ids")
    check_same_shape(lp, r, names=("logp", "rewards"))
    check_same_shape(lp, g, names=("logp", "group_ids"))
    if g.is_floating_point() or g.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor; got dtype {g.dtype}.")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    check_finite(r, name="rewards")
    check_finite(lp.detach(), name="logp")
    if negative_gradient not in ("none", "worst", "mean", "sum"):
        raise ValueError(f"negative_gradient must be 'none', 'worst', 'mean' or 'sum'; got {negative_gradient!r}.")
    if negative_coef < 0:
        raise ValueError(f"negative_coef must be >= 0; got {negative_coef}.")
    if ref_logp is not None:
        ref = as_tensor(ref_logp, name="ref_logp")
        check_same_shape(lp, ref, names=("logp", "ref_logp"))
        check_finite(ref, name="ref_logp")
        lp = lp - ref.to(lp.dtype).to(lp.device)
    r = r.to(lp.device)
    g = g.to(lp.device)
    uniq, inv = torch.unique(g, return_inverse=True)
    k = uniq.shape[0]
    n = lp.shape[0]
    counts = torch.bincount(inv, minlength=k)
    best = _first_extreme_per_group(r, inv, k, largest=True)
    worst = _first_extreme_per_group(r, inv, k, largest=False)
    positive = -lp[best]
    if negative_gradient == "none" or negative_coef == 0.0:
        negative = torch.zeros_like(positive)
    else:
        if bool((counts < 2).any()):
            raise ValueError("a negative gradient needs at least 2 responses in every group; some group has 1.")
        if negative_gradient == "worst":
            negative = lp[worst]
        else:
            not_best = torch.ones(n, dtype=lp.dtype, device=lp.device)
            not_best[best] = 0.0
            negative = torch.zeros(k, dtype=lp.dtype, device=lp.device).index_add(0, inv, lp * not_best)
            if negative_gradient == "mean":
                negative = negative / (counts - 1).to(lp.dtype)
        negative = negative_coef * negative
    per_group = positive + negative
    return BestOfNLoss(loss=per_group.mean(), per_group=per_group, best_index=best, worst_index=worst,
                       positive_term=positive.detach().mean(), negative_term=negative.detach().mean())


@dataclass(frozen=True)
class SamplingScheme:
    """One fine-tuning method of the paper's comparison.

    Attributes
    ----------
    name : str
    source : {"reference", "policy"}
        Draw each step's responses from the reference policy (offline data) or the current policy (on-policy).
    loss : {"dpo", "ipo", "best_of_n", "copg", "opa_dpo", "gepo"}
        The last three are :data:`METHOD_SCHEMES` (see :func:`scheme_loss`).
    negative_gradient : {"none", "worst", "mean", "sum"}
        Only for ``loss="best_of_n"``; pairwise losses always carry one (the loser's term).
    """

    name: str
    source: Literal["reference", "policy"]
    loss: Literal["dpo", "ipo", "best_of_n", "copg", "opa_dpo", "gepo"]
    negative_gradient: Literal["none", "worst", "mean", "sum"] = "none"

    @property
    def on_policy(self) -> bool:
        return self.source == "policy"

    @property
    def has_negative_gradient(self) -> bool:
        return self.loss in ("dpo", "ipo", "copg", "opa_dpo", "gepo") or self.negative_gradient != "none"


def _schemes() -> dict[str, SamplingScheme]:
    out = {}
    for src, tag in (("reference", "offline"), ("policy", "on-policy")):
        out[f"{tag}-best-of-n"] = SamplingScheme(f"{tag}-best-of-n", src, "best_of_n", "none")
        out[f"{tag}-best-of-n-neg"] = SamplingScheme(f"{tag}-best-of-n-neg", src, "best_of_n", "worst")
        out[f"{tag}-best-of-n-neg-mean"] = SamplingScheme(f"{tag}-best-of-n-neg-mean", src, "best_of_n", "mean")
        out[f"{tag}-dpo"] = SamplingScheme(f"{tag}-dpo", src, "dpo")
        out[f"{tag}-ipo"] = SamplingScheme(f"{tag}-ipo", src, "ipo")
    return out


#: The paper's compared methods, by name: {offline, on-policy} x {best-of-n, best-of-n-neg (worst response),
#: best-of-n-neg-mean (mean over non-best responses), dpo, ipo}.
SAMPLING_SCHEMES: dict[str, SamplingScheme] = _schemes()


def _method_schemes() -> dict[str, SamplingScheme]:
    out = {}
    for src, tag in (("reference", "offline"), ("policy", "on-policy")):
        out[f"{tag}-copg"] = SamplingScheme(f"{tag}-copg", src, "copg")
        out[f"{tag}-opa-dpo"] = SamplingScheme(f"{tag}-opa-dpo", src, "opa_dpo")
        out[f"{tag}-gepo"] = SamplingScheme(f"{tag}-gepo", src, "gepo")
    return out


#: Sequence-level preference methods of the seeds beyond the paper's comparison, by name:
#: {offline, on-policy} x {copg, opa-dpo, gepo}. Not in SAMPLING_SCHEMES, whose keys are the
#: methods Tajwar et al. compare (polab.proofs_checks.mode_seeking_checks iterates over them).
METHOD_SCHEMES: dict[str, SamplingScheme] = _method_schemes()

#: Every scheme :func:`scheme_loss` accepts by name.
PREFERENCE_SCHEMES: dict[str, SamplingScheme] = {**SAMPLING_SCHEMES, **METHOD_SCHEMES}


def scheme_loss(scheme: SamplingScheme | str, logp, ref_logp, rewards, group_ids, *, beta: float = 0.1,
                label_smoothing: float = 0.0, target_margin: float | None = None, negative_coef: float = 0.1,
                pairing: Literal["all", "best-worst"] = "all", min_reward_gap: float = 0.0,
                copg_scale: float = 1.0, opa_anchor: Literal["sigmoid", "squared"] | None = "sigmoid",
                opa_anchor_value: float = 0.0, opa_anchor_coef: float = 1.0, gepo_consistency_coef: float = 1.0,
                gepo_margin: float = 0.0, gepo_threshold: float | None = None,
                gepo_variance: Literal["log-ratio", "implicit-reward"] = "log-ratio"):
    """Apply a scheme's loss to one batch of responses (drawn by the caller from ``scheme.source``).

    Parameters
    ----------
    scheme : SamplingScheme or a key of ``PREFERENCE_SCHEMES`` (``SAMPLING_SCHEMES`` or ``METHOD_SCHEMES``)
    logp, ref_logp : Tensor, shape [batch]
        Sequence log-probabilities under the policy (with grad) and the reference.
    rewards : Tensor, shape [batch]
    group_ids : Tensor, shape [batch], integer
    beta, label_smoothing, target_margin
        Passed to :func:`dpo_loss` / :func:`ipo_loss`.
    negative_coef
        :math:`c` of :func:`best_of_n_loss` when the scheme has a negative gradient.
    pairing, min_reward_gap
        Passed to :func:`preference_pairs` (DPO, IPO and OPA-DPO pairs).
    copg_scale
        ``scale`` of :func:`polab.estimators.contrastive_pg.copg_loss` (CoPG uses every
        within-group pair, ties included, and ``beta``).
    opa_anchor, opa_anchor_value, opa_anchor_coef
        Anchor of :func:`polab.estimators.group_preference.opa_dpo_sequence_loss`
        (defaults: the authors' ``run/train_opa_dpo.sh``, mDPO anchor at 0 with
        coefficient 1); OPA-DPO also uses ``beta`` and ``label_smoothing``.
    gepo_consistency_coef, gepo_margin, gepo_threshold, gepo_variance
        :func:`polab.estimators.group_preference.gepo_loss`'s :math:`\\lambda` (1 in
        the paper), :math:`\\gamma` and ``variance``; a response counts as "equivalent" when its reward is
        above its group's mean, or at least ``gepo_threshold`` when given
        (:func:`polab.estimators.group_preference.split_by_reward`).

    Returns
    -------
    PreferenceLoss or BestOfNLoss (or CoPGLoss, OPADPOLoss, GEPOLoss for
    ``METHOD_SCHEMES``), or None when a pairwise scheme finds no informative
    pair in the batch (every group tied): skip the update.
    """
    if isinstance(scheme, str):
        if scheme not in PREFERENCE_SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; choose one of {sorted(PREFERENCE_SCHEMES)}.")
        scheme = PREFERENCE_SCHEMES[scheme]
    if scheme.loss in ("copg", "opa_dpo", "gepo"):
        return _method_scheme_loss(scheme, logp, ref_logp, rewards, group_ids, beta=beta, label_smoothing=label_smoothing,
                                   pairing=pairing, min_reward_gap=min_reward_gap, copg_scale=copg_scale,
                                   opa_anchor=opa_anchor, opa_anchor_value=opa_anchor_value, opa_anchor_coef=opa_anchor_coef,
                                   gepo_consistency_coef=gepo_consistency_coef, gepo_margin=gepo_margin,
                                   gepo_threshold=gepo_threshold, gepo_variance=gepo_variance)
    if scheme.loss == "best_of_n":
        coef = negative_coef if scheme.negative_gradient != "none" else 0.0
        return best_of_n_loss(logp, rewards, group_ids, negative_gradient=scheme.negative_gradient, negative_coef=coef)
    pairs = preference_pairs(rewards, group_ids, pairing=pairing, min_reward_gap=min_reward_gap)
    if pairs.chosen.numel() == 0:
        return None
    lp = as_tensor(logp, name="logp")
    ref = as_tensor(ref_logp, name="ref_logp").to(lp.device)
    check_same_shape(lp, ref, names=("logp", "ref_logp"))
    c, rj = pairs.chosen.to(lp.device), pairs.rejected.to(lp.device)
    args = (lp[c], lp[rj], ref[c], ref[rj])
    if scheme.loss == "dpo":
        return dpo_loss(*args, beta=beta, label_smoothing=label_smoothing)
    return ipo_loss(*args, beta=beta, target_margin=target_margin)


def _method_scheme_loss(scheme: SamplingScheme, logp, ref_logp, rewards, group_ids, *, beta, label_smoothing, pairing,
                        min_reward_gap, copg_scale, opa_anchor, opa_anchor_value, opa_anchor_coef, gepo_consistency_coef,
                        gepo_margin, gepo_threshold, gepo_variance="log-ratio"):
    """The losses of :data:`METHOD_SCHEMES` (imported here: those modules import nothing from this one, but keep it lazy)."""
    if scheme.loss == "copg":
        from .contrastive_pg import copg_loss

        return copg_loss(logp, ref_logp, rewards, group_ids, beta=beta, scale=copg_scale)
    if scheme.loss == "gepo":
        from .group_preference import gepo_loss, split_by_reward

        lp = as_tensor(logp, name="logp")
        r = as_tensor(rewards, name="rewards")
        if not r.is_floating_point():
            r = r.to(torch.get_default_dtype())
        eq = split_by_reward(r.to(lp.device), as_tensor(group_ids, name="group_ids").to(lp.device), threshold=gepo_threshold)
        return gepo_loss(logp, ref_logp, eq, as_tensor(group_ids, name="group_ids").to(lp.device), beta=beta,
                         consistency_coef=gepo_consistency_coef, margin=gepo_margin, variance=gepo_variance)
    from .group_preference import opa_dpo_sequence_loss

    pairs = preference_pairs(rewards, group_ids, pairing=pairing, min_reward_gap=min_reward_gap)
    if pairs.chosen.numel() == 0:
        return None
    lp = as_tensor(logp, name="logp")
    ref = as_tensor(ref_logp, name="ref_logp").to(lp.device)
    check_same_shape(lp, ref, names=("logp", "ref_logp"))
    c, rj = pairs.chosen.to(lp.device), pairs.rejected.to(lp.device)
    return opa_dpo_sequence_loss(lp[c], lp[rj], ref[c], ref[rj], beta=beta, label_smoothing=label_smoothing,
                                 anchor=opa_anchor, anchor_value=opa_anchor_value, anchor_coef=opa_anchor_coef)
