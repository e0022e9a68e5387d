r"""GiGPO: group-in-group relative advantages for multi-step LLM agents.

For a group of :math:`N` trajectories that start from the same task (episode
group), GiGPO combines

- an episode-level advantage (eq. 3): the trajectory return
  :math:`R(\tau_i)` normalised within its episode group,
  :math:`A^E(\tau_i) = (R(\tau_i) - \mathrm{mean}_j R(\tau_j)) / F_{norm}`;
- a step-level advantage (eqs. 5-7): the discounted return from each step
  :math:`R_t^{(i)} = \sum_{k\ge t}\gamma^{k-t} r_k^{(i)}`, normalised within
  the *step group* of all steps (from any trajectory of the episode group)
  taken in the same anchor state :math:`\tilde s`,
  :math:`A^S(a_t^{(i)}) = (R_t^{(i)} - \mathrm{mean}_{G^S(\tilde s)} R) / F_{norm}`;

and uses :math:`A = A^E + \omega A^S` (eq. 8) for every token of step
:math:`t`'s response. :math:`F_{norm}` is the group's std (plus epsilon) or 1.

Inputs are one row per environment step ("step rows"): which episode group
and which trajectory it belongs to, its step group (from :func:`anchor_groups`
or :func:`similarity_anchor_groups`), and its reward. Rows may come in any
order across trajectories, but the rows of one trajectory must be in time
order.

Invariance (tested): when every step has its own anchor state (all step
groups are singletons), :math:`A^S = 0` and GiGPO is GRPO on the trajectory
returns (:func:`polab.estimators.advantages.group_advantages`).

Conventions (``convention=``):

=============  =========  =================  ==========================  =====================
convention     F_norm     episode statistics  singleton episode group     epsilon
=============  =========  =================  ==========================  =====================
"paper"        std + eps  one per trajectory  advantage 0                 1e-6
"verl-agent"   1          one per step row    raw return (mean 0, std 1)  1e-6
=============  =========  =================  ==========================  =====================

"verl-agent" is ``gigpo/core_gigpo.py::compute_gigpo_outcome_advantage`` with
the trainer config's ``mode=mean_norm`` and the default
``compute_mean_std_cross_steps=True`` (read in the Elrond1701/verl-agent fork
at 7d45a234, structurally identical to langfengQ/verl-agent); both scales and
both statistics are available separately.

References
----------
Feng, Xue, Liu, An, "Group-in-Group Policy Optimization for LLM Agent
Training", arXiv 2505.10978, 2025 (eqs. 3, 5-8).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Hashable, Literal, Sequence

import torch

from .advantages import group_advantages
from .checks import as_tensor, check_finite, check_ndim

__all__ = [
    "GIGPO_CONVENTIONS",
    "GiGPOAdvantages",
    "anchor_groups",
    "similarity_anchor_groups",
    "discounted_step_returns",
    "trajectory_returns",
    "gigpo_advantages",
]

GIGPO_CONVENTIONS: dict[str, dict] = {
    "paper": {"scale": "group", "episode_stats": "trajectory", "episode_singleton": "zero", "epsilon": 1e-6},
    "verl-agent": {"scale": "none", "episode_stats": "steps", "episode_singleton": "raw", "epsilon": 1e-6},
}


def _ids(x, *, name: str, n: int | None = None) -> torch.Tensor:
    t = as_tensor(x, name=name)
    check_ndim(t, 1, name=name, layout="[steps]")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor; got dtype {t.dtype}. Map keys to integer ids first.")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} rows but step_rewards has {n}: give one entry per step row.")
    return t


def anchor_groups(anchors: Sequence[Hashable], episode_group_ids) -> torch.Tensor:
    """Step groups by identical anchor state within each episode group (GiGPO eq. 6).

    Parameters
    ----------
    anchors : sequence of hashables, length steps
        The anchor state of each step row (an observation, or a hashable key of it).
    episode_group_ids : Tensor, shape [steps], integer

    Returns
    -------
    Tensor, shape [steps], int64
        Step-group ids, numbered 0, 1, ... in order of first appearance; two
        rows share an id exactly when they share episode group and anchor.
    """
    eg = _ids(episode_group_ids, name="episode_group_ids")
    if len(anchors) != eg.shape[0]:
        raise ValueError(f"anchors has {len(anchors)} entries but episode_group_ids has {eg.shape[0]}.")
    table: dict = {}
    out = []
    for a, e in zip(anchors, eg.tolist()):
        try:
            key = (e, a)
            out.append(table.setdefault(key, len(table)))
        except TypeError as exc:
            raise ValueError(f"anchors must be hashable (use a tuple or string key of the observation); got {type(a).__name__}.") from exc
    return torch.tensor(out, dtype=torch.int64, device=eg.device)


def similarity_anchor_groups(anchors: Sequence[str], episode_group_ids, *, threshold: float,
                             similarity: Callable[[str, str], float] | None = None) -> torch.Tensor:
    r"""Step groups by similar (not only identical) anchor states, greedily.

    Within each episode group, rows are visited in order; a row joins the
    first existing cluster whose *first* member (its representative) has
    similarity >= ``threshold`` with it, else it starts a new cluster. The
    default similarity is ``difflib.SequenceMatcher(None, a, b).ratio()``, as
    in verl-agent's ``build_step_group(enable_similarity=True)``.

    Parameters
    ----------
    anchors : sequence of str, length steps
    episode_group_ids : Tensor, shape [steps], integer
    threshold : float in (0, 1)
    similarity : callable (str, str) -> float, optional

    Returns
    -------
    Tensor, shape [steps], int64
    """
    eg = _ids(episode_group_ids, name="episode_group_ids")
    if len(anchors) != eg.shape[0]:
        raise ValueError(f"anchors has {len(anchors)} entries but episode_group_ids has {eg.shape[0]}.")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1) (1 is exact matching: use anchor_groups); got {threshold}.")
    if any(not isinstance(a, str) for a in anchors):
        raise ValueError("similarity grouping compares text: anchors must be strings.")
    sim = similarity or (lambda a, b: difflib.SequenceMatcher(None, a, b).ratio())
    clusters: dict[int, list[tuple[str, int]]] = {}
    next_id = 0
    out = []
    for a, e in zip(anchors, eg.tolist()):
        reps = clusters.setdefault(e, [])
        for rep, cid in reps:
            if sim(a, rep) >= threshold:
                out.append(cid)
                break
        else:
            reps.append((a, next_id))
            out.append(next_id)
            next_id += 1
    return torch.tensor(out, dtype=torch.int64, device=eg.device)


def discounted_step_returns(step_rewards, trajectory_ids, *, gamma: float) -> torch.Tensor:
    r"""Discounted return from each step to the end of its trajectory (GiGPO eq. 5).

    :math:`R_t = \sum_{k \ge t} \gamma^{k-t} r_k` over the later rows of the
    same trajectory, in row order.

    Shapes: ``step_rewards`` [steps] float, ``trajectory_ids`` [steps] integer -> [steps].
    """
    r = as_tensor(step_rewards, name="step_rewards")
    check_ndim(r, 1, name="step_rewards", layout="[steps]")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    check_finite(r, name="step_rewards")
    tid = _ids(trajectory_ids, name="trajectory_ids", n=r.shape[0]).to(r.device)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1]; got {gamma}.")
    out = torch.zeros_like(r)
    running: dict[int, torch.Tensor] = {}
    for i in range(r.shape[0] - 1, -1, -1):
        k = int(tid[i])
        prev = running.get(k)
        val = r[i] if prev is None else r[i] + gamma * prev
        running[k] = val
        out[i] = val
    return out


def trajectory_returns(step_rewards, trajectory_ids) -> torch.Tensor:
    """Undiscounted return of each row's trajectory, repeated on every row of it (the episode return R(tau)).

    Shapes: [steps], [steps] -> [steps].
    """
    r = as_tensor(step_rewards, name="step_rewards")
    check_ndim(r, 1, name="step_rewards", layout="[steps]")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    tid = _ids(trajectory_ids, name="trajectory_ids", n=r.shape[0]).to(r.device)
    _, inv = torch.unique(tid, return_inverse=True)
    sums = torch.zeros(int(inv.max()) + 1, dtype=r.dtype, device=r.device).index_add_(0, inv, r)
    return sums[inv]


@dataclass(frozen=True)
class GiGPOAdvantages:
    """Result of :func:`gigpo_advantages` (all per step row, shape [steps]).

    Attributes
    ----------
    advantages : Tensor
        :math:`A^E + \\omega A^S`.
    episode_advantages, step_advantages : Tensor
    step_returns : Tensor
        Discounted returns :math:`R_t`.
    num_step_groups, num_singleton_step_groups : int
        Step groups of size one carry no step-level signal (their :math:`A^S = 0`).
    """

    advantages: torch.Tensor
    episode_advantages: torch.Tensor
    step_advantages: torch.Tensor
    step_returns: torch.Tensor
    num_step_groups: int
    num_singleton_step_groups: int


def gigpo_advantages(
    step_rewards,
    episode_group_ids,
    trajectory_ids,
    step_group_ids,
    *,
    gamma: float = 0.95,
    omega: float = 1.0,
    convention: Literal["paper", "verl-agent"] = "paper",
    scale: Literal["group", "none"] | None = None,
    episode_stats: Literal["trajectory", "steps"] | None = None,
    epsilon: float | None = None,
    episode_returns=None,
) -> GiGPOAdvantages:
    r"""GiGPO advantages :math:`A^E(\tau) + \omega A^S(a_t)` for every step row (eqs. 3, 7, 8).

    Parameters
    ----------
    step_rewards : Tensor, shape [steps]
        Environment reward :math:`r_t` of each step.
    episode_group_ids : Tensor, shape [steps], integer
        The task / initial state shared by a group of trajectories.
    trajectory_ids : Tensor, shape [steps], integer
        The trajectory of each row (unique across the batch); rows of one
        trajectory in time order.
    step_group_ids : Tensor, shape [steps], integer
        Anchor-state groups (:func:`anchor_groups`); each must lie inside one episode group.
    gamma : float in [0, 1]
        Discount of the step returns (eq. 5).
    omega : float >= 0
        Weight :math:`\omega` of the step-level advantage (eq. 8).
    convention : {"paper", "verl-agent"}
        Supplies ``scale``, ``episode_stats``, ``epsilon`` and the handling of
        singleton episode groups (module docstring).
    scale : {"group", "none"}, optional
        :math:`F_{norm}` = group std + epsilon (``"group"``) or 1 (``"none"``).
    episode_stats : {"trajectory", "steps"}, optional
        Episode-group mean/std over one return per trajectory, or over every
        step row (so longer trajectories weigh more; verl-agent's default).
    epsilon : float, optional
    episode_returns : Tensor, shape [steps], optional
        :math:`R(\tau)` of each row's trajectory (e.g. a final success flag);
        defaults to the sum of the trajectory's step rewards.

    Returns
    -------
    GiGPOAdvantages
    """
    r = as_tensor(step_rewards, name="step_rewards")
    check_ndim(r, 1, name="step_rewards", layout="[steps]")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    check_finite(r, name="step_rewards")
    n = r.shape[0]
    if n == 0:
        raise ValueError("step_rewards is empty: pass at least one step row.")
    eg = _ids(episode_group_ids, name="episode_group_ids", n=n).to(r.device)
    tid = _ids(trajectory_ids, name="trajectory_ids", n=n).to(r.device)
    sg = _ids(step_group_ids, name="step_group_ids", n=n).to(r.device)
    conv = GIGPO_CONVENTIONS.get(convention)
    if conv is None:
        raise ValueError(f"unknown convention {convention!r}; choose one of {sorted(GIGPO_CONVENTIONS)}.")
    scale = conv["scale"] if scale is None else scale
    episode_stats = conv["episode_stats"] if episode_stats is None else episode_stats
    epsilon = conv["epsilon"] if epsilon is None else float(epsilon)
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none'; got {scale!r}.")
    if episode_stats not in ("trajectory", "steps"):
        raise ValueError(f"episode_stats must be 'trajectory' or 'steps'; got {episode_stats!r}.")
    if omega < 0:
        raise ValueError(f"omega must be >= 0; got {omega}.")
    # every trajectory in one episode group, every step group in one episode group
    for name, ids in (("trajectory_ids", tid), ("step_group_ids", sg)):
        pairs = torch.unique(torch.stack([ids, eg]), dim=1)
        if torch.unique(pairs[0]).shape[0] != pairs.shape[1]:
            raise ValueError(f"{name}: some id spans several episode groups; ids must be nested inside episode_group_ids.")

    if episode_returns is None:
        ret = trajectory_returns(r, tid)
    else:
        ret = as_tensor(episode_returns, name="episode_returns").to(device=r.device, dtype=r.dtype)
        check_ndim(ret, 1, name="episode_returns", layout="[steps]")
        if ret.shape[0] != n:
            raise ValueError(f"episode_returns has {ret.shape[0]} rows but step_rewards has {n}.")
        check_finite(ret, name="episode_returns")
    gscale = "group" if scale == "group" else "none"
    if episode_stats == "steps":
        ea = group_advantages(ret, eg, scale=gscale, std="unbiased", epsilon=epsilon, singleton=conv["episode_singleton"]).advantages
    else:
        uniq, first = _first_rows(tid)
        per_traj = group_advantages(ret[first], eg[first], scale=gscale, std="unbiased", epsilon=epsilon,
                                    singleton=conv["episode_singleton"]).advantages
        ea = per_traj[uniq]
    R = discounted_step_returns(r, tid, gamma=gamma)
    sres = group_advantages(R, sg, scale=gscale, std="unbiased", epsilon=epsilon, singleton="zero")
    return GiGPOAdvantages(
        advantages=ea + omega * sres.advantages,
        episode_advantages=ea,
        step_advantages=sres.advantages,
        step_returns=R,
        num_step_groups=sres.num_groups,
        num_singleton_step_groups=sres.num_singleton_groups,
    )


def _first_rows(ids: torch.Tensor):
    """(inverse index of each row into the unique ids, index of the first row of each unique id)."""
    _, inv = torch.unique(ids, return_inverse=True)
    k = int(inv.max()) + 1
    pos = torch.arange(ids.shape[0], device=ids.device)
    first = torch.full((k,), ids.shape[0], dtype=torch.int64, device=ids.device).scatter_reduce(0, inv, pos, "amin")
    return inv, first
