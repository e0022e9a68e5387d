r"""Group and on-policy-aligned preference losses: GEPO (OORL) and OPA-DPO.

Both are functions of sequence (or token) log-probabilities under the policy
and a reference, like :mod:`polab.estimators.preference_losses`; the implicit
reward of a response is :math:`r(y) = \beta(\log\pi(y) - \log\pi_{ref}(y))`.

GEPO: Group Equivalent Preference Optimization (Wu et al. 2025, OORL)
---------------------------------------------------------------------
For a prompt (a source program), a group of candidates (intermediate
representations, IRs) splits into those **equivalent** to the source
(the winners :math:`Y_w`, :math:`n` of them) and the **inequivalent** ones
(the losers :math:`Y_l`, :math:`m`). With the log-probability ratio
:math:`\hat r(y) = \log\pi_\theta(y) - \log\pi_{ref}(y)`, GEPO minimises

.. math::

    \ell_g = -\log\sigma\Bigl(\beta\bigl[\tfrac{1}{n}\sum_{y\in Y_w}\hat r(y) - \tfrac{1}{m}\sum_{y\in Y_l}\hat r(y)\bigr]\Bigr)
             + \lambda\,\mathrm{Var}_{y\in Y_w}\,\hat r(y),

averaged over groups that have both kinds: a DPO-like term on the mean
log-ratios of the two groups in one sigmoid, plus :math:`\lambda` times the
variance of the winners' log-ratios (the Lagrangian of the paper's
constraint :math:`\mathrm{Var}\le\epsilon`), :math:`\lambda = 1`, no margin.
In OORL it is trained on a static (off-policy) set of groups and added to an
on-policy REINFORCE++ loss, :math:`L = w_{rl} L_{OnP} + w_{gepo} L_{GEPO}`
with :math:`w_{rl}=1`, :math:`w_{gepo}=0.01` (:func:`oorl_loss`,
:data:`GEPO_PAPER`). Source: the paper's text (Wu et al. 2025, sections 3.2
and 3.3 and Appendix A, read through the search tool's code corpus; its
equations did not survive extraction, so the form is taken from the prose:
"the first term is analogous to the DPO loss but operates on the average
log-probability ratios of the winner and loser groups", "the second term,
weighted by the hyperparameter :math:`\lambda`, explicitly penalizes the
variance of the log-probability ratios within the winner group",
":math:`\lambda = 1`", ":math:`w_{rl} = 1` and :math:`w_{gepo} = 0.01`").
Not confirmed: whether the variance is the population (used here) or the
Bessel-corrected one; the paper's code was not available.

Options (``gepo_loss``): ``variance="implicit-reward"`` penalises the
variance of :math:`\beta\hat r` instead (polab's earlier reading,
:math:`\beta^2` times weaker at the same :math:`\lambda`), and ``margin``
:math:`\gamma` is subtracted inside the sigmoid; both off in the paper's
form. The population variance equals :math:`\frac{1}{2n^2}\sum_{i,j\in
Y_w}(\hat r_i - \hat r_j)^2` (all pairs of mutually equivalent candidates).
With one winner and one loser, :math:`\lambda=\gamma=0` it is exactly DPO
(tested against :func:`polab.estimators.preference_losses.dpo_loss`, which
reproduces TRL's ``loss_type="sigmoid"``). The "GEPO" of
``notes/llm_rl_anchors.md`` (HeteroRL, "Group Expectation Policy
Optimization") is a different method with the same acronym.

OPA-DPO: On-Policy Alignment DPO (Yang et al. 2025)
---------------------------------------------------
The policy's own responses are corrected by an expert (GPT-4V in the paper);
the ground-truth and the expert-revised responses are first brought
on-policy by a short LoRA-SFT (the "OPA" step, whose result becomes the DPO
reference), then DPO is run on several pair kinds at once: ground truth ≻
original response, revised ≻ original, and (optionally) each chosen
response with the true image ≻ the same response with a masked image. From
the authors' code (``opadpo/dpo_models/dpo_trainer.py``, zhyang2226/OPA-DPO
at commit 6722e198a6942cf5d6cce6fc965302e705fac32b, read only):

.. math::

    z = \sum_t w^c_t\,\delta^c_t - \sum_t w^r_t\,\delta^r_t,\qquad
    \delta_t = \log\pi(y_t\mid\cdot) - \log\pi_{ref}(y_t\mid\cdot),

    \ell = -(1-\epsilon)\log\sigma(\beta z) - \epsilon\log\sigma(-\beta z),

with token weights :math:`w` (expert-marked hallucination severity; 1 by
default), and the total

.. math::

    L = \sum_k c_k\,\mathrm{mean}_{i\in k}\,\ell_i
        + c_{anc}\sum_k \mathrm{mean}_{i\in k}\,a_i ,

over pair kinds :math:`k` with coefficients :math:`c_k`, where the optional
anchor :math:`a_i` is :math:`-\log\sigma(s_i(r^c_i - \delta))` (mDPO's anchor,
``mDPO_anchor``) or :math:`(r^c_i - \delta)^2`, on the chosen implicit reward
:math:`r^c = \beta\sum_t\delta^c_t` with a direction :math:`s_i=\pm 1` per
pair. Two details of the authors' code are reproduced on request and tested
with hand-derived values: (i) ``aggregation="position"``: their log-probs are
per token, so the DPO logit is formed **position by position**,
:math:`z_t = w^c_t\delta^c_t - w^r_t\delta^r_t`, and the loss is averaged over
all ``[pairs, time]`` entries, padding included; (ii) in the mDPO-anchor mode
the anchor term of the revised-response pairs has direction :math:`s=-1`
(``-F.logsigmoid(-chosen_rewards2 + Anchor_value)``). The default here is
the sequence-level DPO of the paper's equations (``aggregation="sequence"``,
:math:`s=+1`).

References
----------
Wu, Ming, Gao, Zhao, Chen, Yang, Zheng, He, Yu, "On-Policy Optimization with
Group Equivalent Preference for Multi-Programming Language Understanding",
NeurIPS 2025, arXiv 2505.12723 (OORL, GEPO).
Yang, Luo, Han, Xu, Li, "Mitigating Hallucinations in Large Vision-Language
Models via DPO: On-Policy Data Hold the Key", CVPR 2025, arXiv 2501.09695 (OPA-DPO).
Wang et al., "mDPO: Conditional Preference Optimization for Multimodal Large
Language Models", EMNLP 2024 (the anchor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from .checks import as_tensor, check_finite, check_mask, check_ndim, check_same_shape

__all__ = [
    "GEPO_PAPER",
    "GEPOLoss",
    "oorl_loss",
    "OPADPOLoss",
    "gepo_loss",
    "split_by_reward",
    "opa_dpo_sequence_loss",
    "opa_dpo_loss",
]


def _vec(x, name: str) -> torch.Tensor:
    t = as_tensor(x, name=name)
    check_ndim(t, 1, name=name, layout="[batch]")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    check_finite(t.detach(), name=name)
    return t


def _ids(x, name: str, like: torch.Tensor) -> torch.Tensor:
    g = as_tensor(x, name=name)
    check_ndim(g, 1, name=name, layout="[batch]")
    if g.is_floating_point() or g.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor; got dtype {g.dtype}.")
    if g.shape != like.shape:
        raise ValueError(f"{name} must have the shape of logp, {tuple(like.shape)}; got {tuple(g.shape)}.")
    return g.to(like.device)


@dataclass(frozen=True)
class GEPOLoss:
    """Result of :func:`gepo_loss`.

    Attributes
    ----------
    loss : Tensor, scalar
        Mean of ``per_group`` over the eligible groups.
    per_group : Tensor, shape [groups]
        Preference term plus consistency term of each eligible group.
    preference_term, consistency_term : Tensor, shape [groups]
    margin : Tensor, shape [groups]
        :math:`(\\bar r_E - \\bar r_N)/\\beta`, the log-ratio margin (with grad).
    group : Tensor, shape [groups], int64
        Id of each eligible group, increasing.
    num_skipped : int
        Groups without both an equivalent and an inequivalent member.
    accuracy : float
        Fraction of eligible groups with positive margin.
    """

    loss: torch.Tensor
    per_group: torch.Tensor
    preference_term: torch.Tensor
    consistency_term: torch.Tensor
    margin: torch.Tensor
    group: torch.Tensor
    num_skipped: int
    accuracy: float

    @property
    def per_pair(self) -> torch.Tensor:
        """Alias of ``per_group`` (the preference trainer logs ``per_pair``)."""
        return self.per_group


#: The paper's GEPO / OORL constants (Wu et al. 2025, sections 3.2-3.3): lambda = 1, no margin, the variance of
#: the winners' log-probability ratios, and the OORL weights w_rl = 1, w_gepo = 0.01. beta is not stated for GEPO.
GEPO_PAPER = {"consistency_coef": 1.0, "margin": 0.0, "variance": "log-ratio", "rl_weight": 1.0, "gepo_weight": 0.01}


def oorl_loss(on_policy_loss: torch.Tensor, gepo: torch.Tensor | None, *, rl_weight: float = 1.0,
              gepo_weight: float = 0.01) -> torch.Tensor:
    r"""OORL's combined objective :math:`w_{rl}L_{OnP} + w_{gepo}L_{GEPO}` (Wu et al. 2025, section 3.3).

    Parameters
    ----------
    on_policy_loss : Tensor, scalar
        The on-policy RL loss (REINFORCE++ in the paper).
    gepo : Tensor, scalar, or None
        :func:`gepo_loss`'s ``loss`` on a batch of static preference groups;
        None (no eligible group) adds nothing.
    rl_weight, gepo_weight : float, >= 0
        1 and 0.01 in the paper.
    """
    for name, w in (("rl_weight", rl_weight), ("gepo_weight", gepo_weight)):
        if not (w >= 0 and w < float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0; got {w}.")
    total = rl_weight * on_policy_loss
    return total if gepo is None else total + gepo_weight * gepo


def gepo_loss(logp, ref_logp, equivalent, group_ids, *, beta: float = 0.1, consistency_coef: float = 1.0,
              margin: float = 0.0, variance: Literal["log-ratio", "implicit-reward"] = "log-ratio") -> GEPOLoss | None:
    r"""GEPO loss of a batch of groups (see the module docstring for the formula and its source).

    Parameters
    ----------
    logp, ref_logp : Tensor, shape [batch]
        Sequence log-probabilities under the policy (with grad) and the reference.
    equivalent : Tensor, shape [batch], bool or 0/1
        True for candidates equivalent to the source (e.g. passing the tests).
    group_ids : Tensor, shape [batch], integer
        Candidates of the same prompt share an id (any order).
    beta : float, > 0
    consistency_coef : float, >= 0
        :math:`\lambda`, weight of the within-equivalent-group variance (1 in the paper).
    margin : float
        :math:`\gamma`, subtracted inside the sigmoid (0 in the paper; an option).
    variance : {"log-ratio", "implicit-reward"}
        Penalise the variance of :math:`\hat r = \log\pi - \log\pi_{ref}` (the
        paper) or of :math:`\beta\hat r` (polab's earlier reading).

    Returns
    -------
    GEPOLoss, or None when no group has both kinds (skip the update).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got {beta}.")
    if not (consistency_coef >= 0 and consistency_coef < float("inf")):
        raise ValueError(f"consistency_coef must be a finite number >= 0 (the paper's lambda is 1); got {consistency_coef}.")
    if variance not in ("log-ratio", "implicit-reward"):
        raise ValueError(f"variance must be 'log-ratio' (the paper) or 'implicit-reward'; got {variance!r}.")
    lp, ref = _vec(logp, "logp"), _vec(ref_logp, "ref_logp")
    check_same_shape(lp, ref, names=("logp", "ref_logp"))
    eq = as_tensor(equivalent, name="equivalent")
    if eq.shape != lp.shape:
        raise ValueError(f"equivalent must have the shape of logp, {tuple(lp.shape)}; got {tuple(eq.shape)}.")
    if eq.dtype != torch.bool:
        if not bool(((eq == 0) | (eq == 1)).all()):
            raise ValueError("equivalent must be boolean or 0/1 (1: the candidate is equivalent to the source).")
        eq = eq == 1
    eq = eq.to(lp.device)
    g = _ids(group_ids, "group_ids", lp)
    ref = ref.to(device=lp.device, dtype=lp.dtype)
    r = beta * (lp - ref)
    uniq, inv = torch.unique(g, return_inverse=True)
    k = uniq.shape[0]
    e = eq.to(lp.dtype)
    ne = 1.0 - e
    n_e = torch.zeros(k, dtype=lp.dtype, device=lp.device).index_add(0, inv, e)
    n_n = torch.zeros(k, dtype=lp.dtype, device=lp.device).index_add(0, inv, ne)
    ok = (n_e > 0) & (n_n > 0)
    if not bool(ok.any()):
        return None
    mean_e = torch.zeros(k, dtype=lp.dtype, device=lp.device).index_add(0, inv, r * e) / n_e.clamp_min(1)
    mean_n = torch.zeros(k, dtype=lp.dtype, device=lp.device).index_add(0, inv, r * ne) / n_n.clamp_min(1)
    dev = (r - mean_e[inv]) * e
    if variance == "log-ratio":
        dev = dev / beta  # variance of log pi - log pi_ref, not of beta times it
    var_e = torch.zeros(k, dtype=lp.dtype, device=lp.device).index_add(0, inv, dev * dev) / n_e.clamp_min(1)
    z = mean_e - mean_n - margin
    pref = -F.logsigmoid(z)
    cons = consistency_coef * var_e
    per = (pref + cons)[ok]
    m = (z + margin)[ok] / beta
    return GEPOLoss(loss=per.mean(), per_group=per, preference_term=pref[ok], consistency_term=cons[ok], margin=m,
                    group=uniq[ok], num_skipped=int((~ok).sum()), accuracy=float((m.detach() > 0).to(lp.dtype).mean()))


def split_by_reward(rewards, group_ids, *, threshold: float | None = None) -> torch.Tensor:
    """Equivalence labels from scalar rewards: ``reward > group mean`` (default) or ``reward >= threshold``.

    The default is a relative rule for continuous rewards (both kinds exist
    in every group whose rewards are not all equal); a threshold suits
    pass/fail rewards (``threshold=1`` with 0/1 rewards).

    Shapes
    ------
    rewards : [batch] float; group_ids : [batch] int -> [batch] bool
    """
    r = _vec(rewards, "rewards")
    g = _ids(group_ids, "group_ids", r)
    if threshold is not None:
        return r >= threshold
    uniq, inv = torch.unique(g, return_inverse=True)
    k = uniq.shape[0]
    n = torch.zeros(k, dtype=r.dtype, device=r.device).index_add(0, inv, torch.ones_like(r))
    mean = torch.zeros(k, dtype=r.dtype, device=r.device).index_add(0, inv, r) / n
    gmax = torch.full((k,), float("-inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, inv, r, "amax")
    gmin = torch.full((k,), float("inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, inv, r, "amin")
    constant = (gmax == gmin)[inv]  # a tied group has no equivalent member, however its mean rounds
    return (r > mean[inv]) & ~constant


@dataclass(frozen=True)
class OPADPOLoss:
    """Result of :func:`opa_dpo_sequence_loss` / :func:`opa_dpo_loss`.

    Attributes
    ----------
    loss : Tensor, scalar
        :math:`\\sum_k c_k\\,\\mathrm{mean}_k\\,\\ell + c_{anc}\\sum_k\\mathrm{mean}_k\\,a`.
    per_pair : Tensor, shape [pairs]
        DPO term of each pair (``aggregation="position"``: its mean over positions).
    anchor_term : Tensor, shape [pairs]
        Anchor of each pair (zeros without an anchor).
    margin : Tensor, shape [pairs]
        Weighted log-ratio margin :math:`z` (position mode: summed over positions), with grad.
    chosen_reward, rejected_reward : Tensor, shape [pairs], detached
        :math:`\\beta\\sum_t w_t\\delta_t` of each side.
    accuracy : float
        Fraction of pairs with :math:`z > 0`.
    """

    loss: torch.Tensor
    per_pair: torch.Tensor
    anchor_term: torch.Tensor
    margin: torch.Tensor
    chosen_reward: torch.Tensor
    rejected_reward: torch.Tensor
    accuracy: float


def _kinds(pair_kind, kind_coefs, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    if pair_kind is None:
        kinds = torch.zeros(n, dtype=torch.long, device=device)
    else:
        kinds = as_tensor(pair_kind, name="pair_kind").to(device)
        check_ndim(kinds, 1, name="pair_kind", layout="[pairs]")
        if kinds.shape[0] != n or kinds.is_floating_point() or kinds.dtype == torch.bool:
            raise ValueError(f"pair_kind must be an integer tensor of shape [pairs] = ({n},).")
        if bool((kinds < 0).any()):
            raise ValueError("pair_kind must hold kind indices >= 0.")
    n_kinds = int(kinds.max()) + 1 if n else 1
    coefs = torch.ones(n_kinds, dtype=torch.float64) if kind_coefs is None else torch.as_tensor(list(kind_coefs), dtype=torch.float64)
    if coefs.ndim != 1 or coefs.shape[0] < n_kinds:
        raise ValueError(f"kind_coefs must give one coefficient per pair kind (at least {n_kinds}); got {list(coefs.shape)}.")
    return kinds, coefs


def _kind_weighted_mean(values: torch.Tensor, kinds: torch.Tensor, coefs: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_k c_k\\,\\mathrm{mean}_{i\\in k} v_i` over the kinds that occur."""
    total = values.new_zeros(())
    for k in torch.unique(kinds).tolist():
        sel = kinds == k
        total = total + float(coefs[k]) * values[sel].mean()
    return total


def _anchor(chosen_reward, anchor, anchor_value, anchor_sign):
    if anchor is None:
        return torch.zeros_like(chosen_reward)
    if anchor == "sigmoid":
        return -F.logsigmoid(anchor_sign * (chosen_reward - anchor_value))
    if anchor == "squared":
        return (chosen_reward - anchor_value) ** 2
    raise ValueError(f"anchor must be None, 'sigmoid' or 'squared'; got {anchor!r}.")


def _check_common(beta, label_smoothing, anchor_coef):
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got {beta}.")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5); got {label_smoothing}.")
    if anchor_coef < 0:
        raise ValueError(f"anchor_coef must be >= 0; got {anchor_coef}.")


def _sign(anchor_sign, n, like):
    if anchor_sign is None:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    s = as_tensor(anchor_sign, name="anchor_sign").to(device=like.device, dtype=like.dtype)
    if s.shape != (n,) or not bool(((s == 1) | (s == -1)).all()):
        raise ValueError(f"anchor_sign must be a [pairs] = ({n},) tensor of +1 / -1.")
    return s


def opa_dpo_sequence_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, *, beta: float = 0.1,
                          label_smoothing: float = 0.0, pair_kind=None, kind_coefs: Sequence[float] | None = None,
                          anchor: Literal["sigmoid", "squared"] | None = None, anchor_value: float = 0.0,
                          anchor_coef: float = 1.0, anchor_sign=None) -> OPADPOLoss:
    r"""OPA-DPO on sequence log-probabilities (weights already applied): several pair kinds plus an anchor.

    Parameters
    ----------
    chosen_logp, rejected_logp : Tensor, shape [pairs]
        (Weighted) sequence log-probabilities under the policy (with grad).
    ref_chosen_logp, ref_rejected_logp : Tensor, shape [pairs]
    beta : float, > 0
    label_smoothing : float in [0, 0.5)
        Conservative DPO's :math:`\epsilon` (the authors' trainer carries it, TRL's name).
    pair_kind : Tensor, shape [pairs], integer, optional
        Kind of each pair (0: ground truth ≻ original, 1: revised ≻ original,
        2, 3: image-masked contrasts, or any labelling); default all 0.
    kind_coefs : sequence of float, optional
        :math:`c_k` per kind (default 1 each).
    anchor : {None, "sigmoid", "squared"}
    anchor_value : float
        :math:`\delta`.
    anchor_coef : float, >= 0
    anchor_sign : Tensor, shape [pairs], optional
        :math:`s_i=\pm1` of the sigmoid anchor (default +1: push the chosen reward above :math:`\delta`).

    Returns
    -------
    OPADPOLoss
    """
    _check_common(beta, label_smoothing, anchor_coef)
    names = ("chosen_logp", "rejected_logp", "ref_chosen_logp", "ref_rejected_logp")
    ts = [_vec(x, n) for x, n in zip((chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp), names)]
    for t, n in zip(ts[1:], names[1:]):
        check_same_shape(ts[0], t, names=(names[0], n))
    c, rj = ts[0], ts[1]
    rc, rr = (t.to(device=c.device, dtype=c.dtype) for t in ts[2:])
    n = c.shape[0]
    if n == 0:
        raise ValueError("no pairs: chosen_logp is empty. Skip the update when a batch yields no preference pair.")
    kinds, coefs = _kinds(pair_kind, kind_coefs, n, c.device)
    lc, lr = c - rc, rj - rr
    z = lc - lr
    per = -(1.0 - label_smoothing) * F.logsigmoid(beta * z)
    if label_smoothing:
        per = per - label_smoothing * F.logsigmoid(-beta * z)
    anc = _anchor(beta * lc, anchor, anchor_value, _sign(anchor_sign, n, c))
    loss = _kind_weighted_mean(per, kinds, coefs) + anchor_coef * _kind_weighted_mean(anc, kinds, torch.ones_like(coefs))
    return OPADPOLoss(loss=loss, per_pair=per, anchor_term=anc, margin=z, chosen_reward=(beta * lc).detach(),
                      rejected_reward=(beta * lr).detach(), accuracy=float((z.detach() > 0).to(z.dtype).mean()))


def opa_dpo_loss(chosen_token_logp, rejected_token_logp, ref_chosen_token_logp, ref_rejected_token_logp, chosen_mask,
                 rejected_mask, *, beta: float = 0.1, chosen_weights=None, rejected_weights=None,
                 label_smoothing: float = 0.0, pair_kind=None, kind_coefs: Sequence[float] | None = None,
                 anchor: Literal["sigmoid", "squared"] | None = None, anchor_value: float = 0.0, anchor_coef: float = 1.0,
                 anchor_sign=None, aggregation: Literal["sequence", "position"] = "sequence") -> OPADPOLoss:
    r"""OPA-DPO on token log-probabilities with expert token weights.

    Parameters
    ----------
    chosen_token_logp, rejected_token_logp : Tensor, shape [pairs, time]
        Per-token log-probabilities of the response tokens under the policy (with grad).
    ref_chosen_token_logp, ref_rejected_token_logp : Tensor, shape [pairs, time]
    chosen_mask, rejected_mask : Tensor, shape [pairs, time]
        1 on response tokens.
    chosen_weights, rejected_weights : Tensor, shape [pairs, time], optional
        Token weights :math:`w_t` (default 1).
    aggregation : {"sequence", "position"}
        ``"sequence"``: :math:`z = \sum_t w^c_t\delta^c_t - \sum_t w^r_t\delta^r_t`
        (the paper's DPO), then :func:`opa_dpo_sequence_loss`. ``"position"``:
        the authors' code (module docstring): per-position logits and losses,
        averaged over all ``pairs * time`` entries (padding included) inside
        each kind; the anchor is also per position.
    Other parameters as :func:`opa_dpo_sequence_loss`.

    Returns
    -------
    OPADPOLoss
    """
    _check_common(beta, label_smoothing, anchor_coef)
    names = ("chosen_token_logp", "rejected_token_logp", "ref_chosen_token_logp", "ref_rejected_token_logp")
    ts = [as_tensor(x, name=n) for x, n in zip((chosen_token_logp, rejected_token_logp, ref_chosen_token_logp,
                                                ref_rejected_token_logp), names)]
    check_ndim(ts[0], 2, name=names[0], layout="[pairs, time]")
    for t, n in zip(ts[1:], names[1:]):
        check_same_shape(ts[0], t, names=(names[0], n))
    c = ts[0]
    rj, rc, rr = (t.to(device=c.device, dtype=c.dtype) for t in ts[1:])
    mc = check_mask(as_tensor(chosen_mask, name="chosen_mask").to(c.device), c, name="chosen_mask")
    mr = check_mask(as_tensor(rejected_mask, name="rejected_mask").to(c.device), c, name="rejected_mask")
    for t, m, n in ((c.detach(), mc, names[0]), (rj.detach(), mr, names[1]), (rc, mc, names[2]), (rr, mr, names[3])):
        check_finite(t * m, name=f"{n} (on response tokens)")
    wc = torch.ones_like(c) if chosen_weights is None else as_tensor(chosen_weights, name="chosen_weights").to(device=c.device, dtype=c.dtype)
    wr = torch.ones_like(c) if rejected_weights is None else as_tensor(rejected_weights, name="rejected_weights").to(device=c.device, dtype=c.dtype)
    check_same_shape(c, wc, names=("chosen_token_logp", "chosen_weights"))
    check_same_shape(c, wr, names=("chosen_token_logp", "rejected_weights"))
    dc = (c - rc) * mc
    dr = (rj - rr) * mr
    if aggregation == "sequence":
        zero = torch.zeros(c.shape[0], dtype=c.dtype, device=c.device)
        return opa_dpo_sequence_loss((wc * dc).sum(dim=1), (wr * dr).sum(dim=1), zero, zero, beta=beta,
                                     label_smoothing=label_smoothing, pair_kind=pair_kind, kind_coefs=kind_coefs,
                                     anchor=anchor, anchor_value=anchor_value, anchor_coef=anchor_coef,
                                     anchor_sign=anchor_sign)
    if aggregation != "position":
        raise ValueError(f"aggregation must be 'sequence' or 'position'; got {aggregation!r}.")
    n = c.shape[0]
    if n == 0:
        raise ValueError("no pairs: chosen_token_logp is empty.")
    kinds, coefs = _kinds(pair_kind, kind_coefs, n, c.device)
    z = wc * dc - wr * dr  # [pairs, time]; the authors' logits (chosen_scores * chosen_logratios - ...)
    per_pos = -(1.0 - label_smoothing) * F.logsigmoid(beta * z)
    if label_smoothing:
        per_pos = per_pos - label_smoothing * F.logsigmoid(-beta * z)
    anc_pos = _anchor(beta * dc, anchor, anchor_value, _sign(anchor_sign, n, c)[:, None])
    per = per_pos.mean(dim=1)  # mean over positions; then the kind mean over pairs = mean over [pairs, time]
    anc = anc_pos.mean(dim=1)
    loss = _kind_weighted_mean(per, kinds, coefs) + anchor_coef * _kind_weighted_mean(anc, kinds, torch.ones_like(coefs))
    zs = z.sum(dim=1)
    return OPADPOLoss(loss=loss, per_pair=per, anchor_term=anc, margin=zs, chosen_reward=(beta * dc.sum(dim=1)).detach(),
                      rejected_reward=(beta * dr.sum(dim=1)).detach(), accuracy=float((zs.detach() > 0).to(c.dtype).mean()))
