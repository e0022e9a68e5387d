r"""Neural PG-Rank: Plackett–Luce ranking policies, Gumbel-sort sampling, and the policy gradient with a baseline.

A scorer (an LLM or bi-encoder in the paper; any differentiable function
here) gives each candidate document :math:`d_j` of a query :math:`q` a score
:math:`s_j = s_\theta(q, d_j)`. The **Plackett–Luce** policy over rankings
:math:`r = (r_1, \dots, r_n)` places documents one position at a time, each
time choosing among the remaining ones with softmax probabilities:

.. math::

    \pi_\theta(r\mid q) = \prod_{k=1}^{n}
        \frac{\exp(s_{r_k}/\tau)}{\sum_{j\ge k}\exp(s_{r_j}/\tau)} .

A top-:math:`K` prefix has the product over :math:`k\le K` (the remaining set
still contains every unplaced document).

**Gumbel-sort sampling**: adding i.i.d. Gumbel(0, 1) noise to
:math:`s/\tau` and sorting in decreasing order gives an exact sample of
:math:`\pi_\theta` (the Gumbel-max trick applied position by position;
tested against exhaustive enumeration with a chi-square test).

**Gradient with a baseline** (Neural PG-Rank, Gao et al. 2023; PG-Rank,
Singh & Joachims 2019): with :math:`N` rankings :math:`r^{(i)}` sampled per
query and a utility :math:`\Delta(r)` (nDCG@K, ...),

.. math::

    \widehat{\nabla J} = \frac1N\sum_{i=1}^N \bigl(\Delta(r^{(i)}) - b_i\bigr)\nabla_\theta\log\pi_\theta(r^{(i)}\mid q),
    \qquad b_i = \frac{1}{N-1}\sum_{j\ne i}\Delta(r^{(j)})

(the leave-one-out baseline keeps the estimator unbiased; ``baseline="mean"``
is the average of all :math:`N`, PG-Rank's original choice, biased by a factor
:math:`(N-1)/N`; ``"none"`` is plain REINFORCE). :func:`pg_rank_loss` returns
:math:`-\frac1N\sum_i(\Delta_i - b_i)\log\pi(r^{(i)})` whose gradient is the
negative of this estimate.

What is confirmed and what is reconstructed
-------------------------------------------
Confirmed by the abstract: an LLM as a Plackett–Luce ranking policy trained
end-to-end by policy gradient on the downstream utility. The Gumbel-sort
sampler and the baseline forms are from ``notes/control_anchors.md`` section 9
(partly **unconfirmed**: which baseline the paper uses, and the possible
per-position credit assignment, are not settled; the official code was not
available). Both baselines are offered and documented; the per-position
variant is not implemented.

References
----------
Gao, Chang, Cardie, Brantley, Joachims, "Policy-Gradient Training of Language
Models for Ranking", arXiv 2310.04407, 2023.
Singh, Joachims, "Policy Learning for Fairness in Ranking", NeurIPS 2019 (PG-Rank).
Plackett, "The Analysis of Permutations", JRSS C 1975; Luce, "Individual Choice Behavior", 1959.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import torch

from .checks import as_tensor, check_finite, check_ndim

__all__ = [
    "PGRankLoss",
    "plackett_luce_logprob",
    "plackett_luce_table",
    "gumbel_sort_rankings",
    "dcg_at_k",
    "ndcg_at_k",
    "leave_one_out_baseline",
    "pg_rank_loss",
]


def _scores(scores, temperature: float) -> torch.Tensor:
    s = as_tensor(scores, name="scores")
    check_ndim(s, 2, name="scores", layout="[queries, items]")
    if not s.is_floating_point():
        s = s.to(torch.get_default_dtype())
    check_finite(s.detach(), name="scores")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    if s.shape[1] == 0:
        raise ValueError("scores has no items (shape [queries, 0]); every query needs at least one candidate.")
    return s / temperature


def _check_rankings(rankings, n_items: int, n_queries: int) -> torch.Tensor:
    r = as_tensor(rankings, name="rankings")
    check_ndim(r, 3, name="rankings", layout="[queries, samples, positions]")
    if r.is_floating_point() or r.dtype == torch.bool:
        raise ValueError(f"rankings must hold integer item indices; got dtype {r.dtype}.")
    if r.shape[0] != n_queries:
        raise ValueError(f"rankings has {r.shape[0]} queries but scores has {n_queries}.")
    k = r.shape[2]
    if not 1 <= k <= n_items:
        raise ValueError(f"rankings must place between 1 and {n_items} items (the number of candidates); got {k}.")
    if bool(((r < 0) | (r >= n_items)).any()):
        raise ValueError(f"rankings must hold item indices in [0, {n_items}); some are out of range.")
    srt = r.sort(dim=-1).values
    if k > 1 and bool((srt[..., 1:] == srt[..., :-1]).any()):
        raise ValueError("every ranking must place distinct items (a permutation or a prefix of one); some repeat an item.")
    return r.long()


def plackett_luce_logprob(scores, rankings, *, temperature: float = 1.0) -> torch.Tensor:
    r"""Log-probability of rankings (or top-K prefixes) under the Plackett–Luce policy of ``scores``.

    Parameters
    ----------
    scores : Tensor, shape [queries, items]
        One real score per candidate (with grad).
    rankings : Tensor, shape [queries, samples, K], integer
        Item indices from the first position to the K-th, distinct within a ranking; ``K <= items``.
    temperature : float, > 0
        Scores are divided by it.

    Returns
    -------
    Tensor, shape [queries, samples]
        :math:`\sum_{k\le K}\bigl[s_{r_k} - \log\sum_{j\notin\{r_1..r_{k-1}\}} e^{s_j}\bigr]`, dtype and device of ``scores``.

    Notes
    -----
    Computed by completing each prefix with the unplaced items (in index
    order) and taking reverse cumulative log-sum-exps, so it is exact for
    prefixes and costs :math:`O(n\log n)` per ranking.
    """
    s = _scores(scores, temperature)
    nq, n = s.shape
    r = _check_rankings(rankings, n, nq).to(s.device)
    _, m, k = r.shape
    if k < n:
        placed = torch.zeros(nq, m, n, dtype=torch.bool, device=s.device)
        placed.scatter_(2, r, True)
        # unplaced items in index order: sort "placed" flags (False first) stably by index
        order = torch.argsort(placed.to(torch.int8), dim=2, stable=True)[..., : n - k]
        full = torch.cat([r, order], dim=2)
    else:
        full = r
    g = torch.gather(s[:, None, :].expand(nq, m, n), 2, full)
    # log sum_{j >= k} exp(g_j): reverse logcumsumexp
    tail = torch.logcumsumexp(g.flip(-1), dim=-1).flip(-1)
    return (g[..., :k] - tail[..., :k]).sum(dim=-1)


def plackett_luce_table(scores, *, temperature: float = 1.0, top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ranking (or top-K prefix) of a small candidate set and its Plackett–Luce probability.

    Parameters
    ----------
    scores : Tensor, shape [items], ``items <= 8``
    top_k : int, optional
        Enumerate ordered K-prefixes instead of full permutations.

    Returns
    -------
    rankings : Tensor, shape [R, K], int64, in lexicographic order
    probs : Tensor, shape [R]
        Sums to 1 (exact enumeration).
    """
    s = as_tensor(scores, name="scores")
    check_ndim(s, 1, name="scores", layout="[items]")
    n = s.shape[0]
    if n > 8:
        raise ValueError(f"exhaustive enumeration is for small candidate sets (items <= 8); got {n}. Sample with gumbel_sort_rankings.")
    k = n if top_k is None else int(top_k)
    rk = torch.tensor(list(itertools.permutations(range(n), k)), dtype=torch.long, device=s.device)
    lp = plackett_luce_logprob(s[None, :], rk[None], temperature=temperature)[0]
    return rk, lp.exp()


def gumbel_sort_rankings(scores, num_samples: int, *, generator: torch.Generator, temperature: float = 1.0,
                         top_k: int | None = None) -> torch.Tensor:
    r"""Exact Plackett–Luce samples by Gumbel-sort: ``argsort(s/tau + G, descending)``, :math:`G\sim` Gumbel(0, 1) i.i.d.

    Parameters
    ----------
    scores : Tensor, shape [queries, items]
    num_samples : int, >= 1
        Rankings per query.
    generator : torch.Generator
        On the device of ``scores``.
    temperature : float, > 0
    top_k : int, optional
        Keep only the first K positions (a sample of the top-K prefix distribution).

    Returns
    -------
    Tensor, shape [queries, num_samples, K], int64 (no grad)
    """
    s = _scores(scores, temperature).detach()
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}.")
    nq, n = s.shape
    k = n if top_k is None else int(top_k)
    if not 1 <= k <= n:
        raise ValueError(f"top_k must lie in [1, {n}]; got {top_k}.")
    u = torch.rand(nq, num_samples, n, generator=generator, dtype=s.dtype, device=s.device)
    tiny = torch.finfo(s.dtype).tiny
    e = (-torch.log(u.clamp_min(tiny))).clamp_min(tiny)  # Exp(1)
    gumbel = -torch.log(e)
    keys = s[:, None, :] + gumbel
    return torch.argsort(keys, dim=-1, descending=True)[..., :k]


def dcg_at_k(relevance, rankings, *, k: int | None = None, gain: Literal["exp", "linear"] = "exp") -> torch.Tensor:
    r"""Discounted cumulative gain :math:`\sum_{p=1}^{K} g(rel_{r_p})/\log_2(p+1)`.

    ``gain="exp"``: :math:`g = 2^{rel} - 1` (Järvelin & Kekäläinen; TREC/BEIR
    nDCG); ``"linear"``: :math:`g = rel`.

    Shapes
    ------
    relevance : [queries, items]; rankings : [queries, samples, positions] -> [queries, samples]
    """
    rel = as_tensor(relevance, name="relevance")
    check_ndim(rel, 2, name="relevance", layout="[queries, items]")
    if not rel.is_floating_point():
        rel = rel.to(torch.get_default_dtype())
    check_finite(rel, name="relevance")
    r = _check_rankings(rankings, rel.shape[1], rel.shape[0]).to(rel.device)
    kk = r.shape[2] if k is None else min(int(k), r.shape[2])
    if kk < 1:
        raise ValueError(f"k must be >= 1; got {k}.")
    if gain not in ("exp", "linear"):
        raise ValueError(f"gain must be 'exp' or 'linear'; got {gain!r}.")
    g = rel if gain == "linear" else torch.pow(2.0, rel) - 1.0
    gr = torch.gather(g[:, None, :].expand(r.shape[0], r.shape[1], g.shape[1]), 2, r[..., :kk])
    disc = 1.0 / torch.log2(torch.arange(2, kk + 2, dtype=rel.dtype, device=rel.device))
    return (gr * disc).sum(dim=-1)


def ndcg_at_k(relevance, rankings, *, k: int | None = None, gain: Literal["exp", "linear"] = "exp") -> torch.Tensor:
    """nDCG@K: :func:`dcg_at_k` divided by the DCG of the ideal (relevance-sorted) ranking; 0 for a query with no relevant item.

    Shapes
    ------
    relevance : [queries, items]; rankings : [queries, samples, positions] -> [queries, samples]
    """
    rel = as_tensor(relevance, name="relevance")
    if not rel.is_floating_point():
        rel = rel.to(torch.get_default_dtype())
    d = dcg_at_k(rel, rankings, k=k, gain=gain)
    kk = as_tensor(rankings, name="rankings").shape[2] if k is None else min(int(k), as_tensor(rankings, name="rankings").shape[2])
    ideal_r = torch.argsort(rel, dim=1, descending=True)[:, None, :kk]
    ideal = dcg_at_k(rel, ideal_r, k=kk, gain=gain)
    return torch.where(ideal > 0, d / ideal.clamp_min(torch.finfo(rel.dtype).tiny), torch.zeros_like(d))


def leave_one_out_baseline(utilities) -> torch.Tensor:
    r""":math:`b_i = \frac{1}{N-1}\sum_{j\ne i}\Delta_j` over the samples of each query.

    Shapes
    ------
    utilities : [queries, samples] with samples >= 2 -> [queries, samples]
    """
    u = as_tensor(utilities, name="utilities")
    check_ndim(u, 2, name="utilities", layout="[queries, samples]")
    n = u.shape[1]
    if n < 2:
        raise ValueError(f"the leave-one-out baseline needs >= 2 samples per query; got {n}. Use baseline='none' or draw more.")
    return (u.sum(dim=1, keepdim=True) - u) / (n - 1)


@dataclass(frozen=True)
class PGRankLoss:
    """Result of :func:`pg_rank_loss`.

    Attributes
    ----------
    loss : Tensor, scalar
        Surrogate whose gradient is minus the policy-gradient estimate (mean over queries and samples).
    logp : Tensor, shape [queries, samples]
        :math:`\\log\\pi(r)` (with grad).
    advantages : Tensor, shape [queries, samples], detached
        :math:`\\Delta_i - b_i`.
    mean_utility : float
    """

    loss: torch.Tensor
    logp: torch.Tensor
    advantages: torch.Tensor
    mean_utility: float


def pg_rank_loss(scores, rankings, utilities, *, baseline: Literal["leave-one-out", "mean", "none"] = "leave-one-out",
                 temperature: float = 1.0) -> PGRankLoss:
    r"""Policy-gradient surrogate of Neural PG-Rank: :math:`-\frac{1}{QN}\sum_{q,i}(\Delta_{qi} - b_{qi})\log\pi(r_{qi})`.

    Parameters
    ----------
    scores : Tensor, shape [queries, items]
        With grad (the scorer's output).
    rankings : Tensor, shape [queries, samples, K], integer
        Sampled from the same policy (:func:`gumbel_sort_rankings`).
    utilities : Tensor, shape [queries, samples]
        :math:`\Delta(r)` of each ranking, e.g. :func:`ndcg_at_k`.
    baseline : {"leave-one-out", "mean", "none"}
    temperature : float, > 0

    Returns
    -------
    PGRankLoss
    """
    u = as_tensor(utilities, name="utilities")
    check_ndim(u, 2, name="utilities", layout="[queries, samples]")
    r = as_tensor(rankings, name="rankings")
    if u.shape != r.shape[:2]:
        raise ValueError(f"utilities must have shape [queries, samples] = {tuple(r.shape[:2])}; got {tuple(u.shape)}.")
    if not u.is_floating_point():
        u = u.to(torch.get_default_dtype())
    check_finite(u, name="utilities")
    lp = plackett_luce_logprob(scores, r, temperature=temperature)
    u = u.to(device=lp.device, dtype=lp.dtype)
    if baseline == "leave-one-out":
        b = leave_one_out_baseline(u)
    elif baseline == "mean":
        b = u.mean(dim=1, keepdim=True).expand_as(u)
    elif baseline == "none":
        b = torch.zeros_like(u)
    else:
        raise ValueError(f"baseline must be 'leave-one-out', 'mean' or 'none'; got {baseline!r}.")
    adv = (u - b).detach()
    loss = -(adv * lp).mean()
    return PGRankLoss(loss=loss, logp=lp, advantages=adv, mean_utility=float(u.mean()))
