r"""Which samples a policy update sees: PF-PPO's policy filtration, Skywork R1V2's Selective Sample Buffer, ARPO's replay.

All three respond to the same weakness of group-relative training: some
samples carry little or misleading signal (responses whose reward-model score
is unreliable; groups whose rewards are all equal, so every advantage is zero).

- **PF-PPO** (Shen and Zhang 2024) filters the responses sampled for a prompt by
  their reward-model score before the PPO update: best-of-N (BoN), best and
  one random (BR), best and worst (BW) (:func:`policy_filtration`). It picks
  the strategy whose filtered samples have the highest coefficient of
  determination :math:`R^2` between reward-model scores and true scores
  (:func:`filtration_r2`, :func:`rank_filtration_strategies`). verl ships a
  batch-level resampling variant (:func:`pf_ppo_resample_weights`).
- **SSB** (Skywork R1V2, Wang et al. 2025) keeps samples with non-zero
  advantage in a buffer and reintroduces them, drawn with probability
  proportional to :math:`|A|`, when fresh batches have vanishing advantages
  (:class:`SelectiveSampleBuffer`).
- **ARPO** (Lu et al. 2025) keeps, per task, the most recent successful
  trajectories and swaps one into any group whose samples all failed
  (:class:`ARPOReplayBuffer`).

The buffers are small explicit-state dataclasses holding opaque payloads
(whatever the trainer needs to rebuild a sample); ``state_dict`` /
``load_state_dict`` make them resumable.

References
----------
Shen, Zhang, "Policy Filtration in RLHF to Fine-Tune LLM for Code
Generation", arXiv 2409.06957, 2024 (PF-PPO). Code:
swtheing/PF-PPO-RLHF; verl ``algorithm.use_pf_ppo``.
Wang, Wei, et al. (Skywork AI), "Skywork R1V2: Multimodal Hybrid Reinforcement
Learning for Reasoning", arXiv 2504.16656, 2025 (SSB).
Lu, Zhong, et al., "ARPO: End-to-End Policy Optimization for GUI Agents with
Experience Replay", arXiv 2505.16282, 2025. Code: dvlab-research/ARPO
(``verl/trainer/replay_buffer.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Literal, Sequence

import torch

from .checks import as_tensor, check_finite, check_ndim

__all__ = [
    "FILTRATION_STRATEGIES",
    "FiltrationResult",
    "policy_filtration",
    "pf_ppo_resample_weights",
    "pf_ppo_resample",
    "R2Result",
    "filtration_r2",
    "rank_filtration_strategies",
    "SelectiveSampleBuffer",
    "ARPOReplayBuffer",
    "Injection",
]

FILTRATION_STRATEGIES = ("best-of-n", "best-random", "best-worst")


def _f64(x, *, name: str) -> torch.Tensor:
    """Python lists straight to float64 (``as_tensor`` would pass through float32 first and round)."""
    if isinstance(x, torch.Tensor):
        return x.double()
    try:
        return torch.as_tensor(x, dtype=torch.float64)
    except Exception as exc:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a float tensor ({exc})") from exc


def _scores_ids(scores, group_ids):
    s = as_tensor(scores, name="scores")
    check_ndim(s, 1, name="scores", layout="[batch]")
    if not s.is_floating_point():
        s = s.to(torch.get_default_dtype())
    check_finite(s, name="scores")
    g = as_tensor(group_ids, name="group_ids")
    check_ndim(g, 1, name="group_ids", layout="[batch]")
    if g.is_floating_point() or g.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor; got dtype {g.dtype}.")
    if g.shape[0] != s.shape[0]:
        raise ValueError(f"scores ({s.shape[0]}) and group_ids ({g.shape[0]}) must have the same length.")
    return s, g.to(s.device)


@dataclass(frozen=True)
class FiltrationResult:
    """Result of :func:`policy_filtration`.

    Attributes
    ----------
    keep : Tensor, shape [batch], bool
        The responses the PPO update uses.
    best, worst : Tensor, shape [groups], int64
        Row index of each group's best and worst response (groups in order of first appearance).
    """

    keep: torch.Tensor
    best: torch.Tensor
    worst: torch.Tensor


def policy_filtration(scores, group_ids, *, strategy: Literal["best-of-n", "best-random", "best-worst"],
                      generator: torch.Generator | None = None) -> FiltrationResult:
    r"""PF-PPO's policy filtration: keep, per prompt, the responses a strategy selects by reward-model score.

    - ``"best-of-n"`` (BoN): the highest-scoring response;
    - ``"best-random"`` (BR): the highest and one other drawn uniformly;
    - ``"best-worst"`` (BW): the highest and the lowest.

    Ties go to the earliest row (so the choice is deterministic). A group of
    one keeps its only response.

    Parameters
    ----------
    scores : Tensor, shape [batch]
        Reward-model scores.
    group_ids : Tensor, shape [batch], integer
        Prompt of each response.
    strategy : {"best-of-n", "best-random", "best-worst"}
    generator : torch.Generator
        Needed for ``"best-random"``.

    Returns
    -------
    FiltrationResult
    """
    s, g = _scores_ids(scores, group_ids)
    if strategy not in FILTRATION_STRATEGIES:
        raise ValueError(f"strategy must be one of {FILTRATION_STRATEGIES}; got {strategy!r}.")
    if strategy == "best-random" and generator is None:
        raise ValueError("strategy 'best-random' draws a response: pass generator=torch.Generator().")
    order: list[int] = []
    rows: dict[int, list[int]] = {}
    for i, k in enumerate(g.tolist()):
        if k not in rows:
            rows[k] = []
            order.append(k)
        rows[k].append(i)
    keep = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)
    best, worst = [], []
    sl = s.tolist()
    for k in order:
        idx = rows[k]
        vals = [sl[i] for i in idx]
        b = idx[vals.index(max(vals))]
        w = idx[vals.index(min(vals))]
        best.append(b)
        worst.append(w)
        keep[b] = True
        if len(idx) == 1 or strategy == "best-of-n":
            continue
        if strategy == "best-worst":
            keep[w] = True
        else:
            others = [i for i in idx if i != b]
            j = int(torch.randint(len(others), (1,), generator=generator))
            keep[others[j]] = True
    return FiltrationResult(keep=keep, best=torch.tensor(best, dtype=torch.int64), worst=torch.tensor(worst, dtype=torch.int64))


def pf_ppo_resample_weights(scores, *, method: Literal["pow", "max_min", "max_random"] = "pow", power: float = 2.0) -> torch.Tensor:
    r"""verl's PF-PPO resampling weights over a whole batch.

    ``"pow"``: :math:`|s_i|^p`; ``"max_min"``: 1 on the batch's highest and
    lowest scores, 0 elsewhere; ``"max_random"``: 0.4 on the highest, 0.1
    elsewhere. Every weight then gets ``+1e-8`` (clamped below at 1e-8) so
    that ``torch.multinomial`` never sees an all-zero vector.

    This is ``compute_pf_ppo_reweight_data``'s ``compute_weights`` in
    ``verl/trainer/ppo/core_algos.py`` (volcengine/verl 012be9d), where
    scores are per-response sums of ``token_level_scores`` over the batch
    (not per prompt, unlike the paper's per-prompt filtration).

    Shapes: ``scores`` [batch] -> [batch].
    """
    s = as_tensor(scores, name="scores")
    check_ndim(s, 1, name="scores", layout="[batch]")
    if not s.is_floating_point():
        s = s.to(torch.get_default_dtype())
    check_finite(s, name="scores")
    if method == "pow":
        w = s.abs() ** power
    elif method == "max_min":
        w = ((s == s.max()) | (s == s.min())).to(s.dtype)
    elif method == "max_random":
        w = torch.where(s == s.max(), torch.full_like(s, 0.4), torch.full_like(s, 0.1))
    else:
        raise ValueError(f"method must be 'pow', 'max_min' or 'max_random'; got {method!r}.")
    return (w + 1e-8).clamp_min(1e-8)


def pf_ppo_resample(weights, num_samples: int | None = None, *, generator: torch.Generator) -> torch.Tensor:
    """Row indices drawn with replacement, probability proportional to ``weights`` (verl's resampling step).

    Shapes: ``weights`` [batch] -> int64 [num_samples] (default: batch).
    """
    w = as_tensor(weights, name="weights")
    check_ndim(w, 1, name="weights", layout="[batch]")
    check_finite(w, name="weights")
    if bool((w < 0).any()) or not bool((w > 0).any()):
        raise ValueError("weights must be non-negative with at least one positive entry.")
    n = w.shape[0] if num_samples is None else int(num_samples)
    return torch.multinomial(w.double(), n, replacement=True, generator=generator)


@dataclass(frozen=True)
class R2Result:
    r"""Coefficient of determination of the least-squares line of true scores on reward-model scores.

    Attributes
    ----------
    r2 : float
        :math:`R^2 = 1 - SS_{res}/SS_{tot}` (= squared Pearson correlation for a fitted line); NaN when undefined.
    slope, intercept : float
    n : int
        Samples used.
    """

    r2: float
    slope: float
    intercept: float
    n: int


def filtration_r2(rm_scores, true_scores, keep=None) -> R2Result:
    r"""PF-PPO's criterion: :math:`R^2` between reward-model scores and true scores on the kept samples.

    Fits :math:`y \approx a + b\,s` by least squares over the samples with
    ``keep`` (all when None) and returns
    :math:`R^2 = 1 - \sum (y - a - b s)^2 / \sum (y - \bar y)^2`. A high
    :math:`R^2` means the reward model ranks the filtered samples reliably,
    which the paper uses to choose a filtration strategy.

    Shapes: ``rm_scores``, ``true_scores``, ``keep`` [batch].

    Notes
    -----
    :math:`R^2` is undefined (NaN) with fewer than 2 samples, constant true
    scores, or constant reward-model scores.
    """
    s = _f64(rm_scores, name="rm_scores")
    y = _f64(true_scores, name="true_scores")
    check_ndim(s, 1, name="rm_scores", layout="[batch]")
    check_ndim(y, 1, name="true_scores", layout="[batch]")
    if s.shape != y.shape:
        raise ValueError(f"rm_scores and true_scores must have the same length; got {s.shape[0]} and {y.shape[0]}.")
    check_finite(s, name="rm_scores")
    check_finite(y, name="true_scores")
    if keep is not None:
        k = as_tensor(keep, name="keep").to(s.device)
        if k.shape != s.shape:
            raise ValueError(f"keep must have one entry per sample ({s.shape[0]}); got {tuple(k.shape)}.")
        s, y = s[k.bool()], y[k.bool()]
    n = int(s.shape[0])
    if n < 2:
        return R2Result(r2=float("nan"), slope=float("nan"), intercept=float("nan"), n=n)
    sm, ym = s.mean(), y.mean()
    sxx = ((s - sm) ** 2).sum()
    syy = ((y - ym) ** 2).sum()
    if float(sxx) == 0.0 or float(syy) == 0.0:
        return R2Result(r2=float("nan"), slope=float("nan"), intercept=float("nan"), n=n)
    b = ((s - sm) * (y - ym)).sum() / sxx
    a = ym - b * sm
    ssr = ((y - a - b * s) ** 2).sum()
    return R2Result(r2=float(1.0 - ssr / syy), slope=float(b), intercept=float(a), n=n)


def rank_filtration_strategies(rm_scores, true_scores, group_ids, *, strategies: Sequence[str] = FILTRATION_STRATEGIES,
                               generator: torch.Generator) -> dict[str, R2Result]:
    """:math:`R^2` of each filtration strategy on one labelled batch (PF-PPO's strategy selection).

    Returns a dict strategy -> :class:`R2Result`, ordered from highest to
    lowest :math:`R^2` (NaN last). ``"none"`` (no filtration) may be listed too.
    """
    out = {}
    for st in strategies:
        if st == "none":
            out[st] = filtration_r2(rm_scores, true_scores)
        else:
            keep = policy_filtration(rm_scores, group_ids, strategy=st, generator=generator).keep
            out[st] = filtration_r2(rm_scores, true_scores, keep)
    return dict(sorted(out.items(), key=lambda kv: (kv[1].r2 != kv[1].r2, -(kv[1].r2 if kv[1].r2 == kv[1].r2 else 0.0))))


@dataclass
class SelectiveSampleBuffer:
    r"""Skywork R1V2's Selective Sample Buffer (SSB).

    Holds up to ``capacity`` entries ``(payload, priority)`` with priority
    :math:`|A| > ` ``min_priority`` (entries with vanishing advantage are not
    stored); the oldest entry leaves first when full. :meth:`sample` draws
    entries without replacement with probability proportional to priority.

    Attributes
    ----------
    capacity : int
    min_priority : float
        Entries with priority <= this are discarded (0: keep any non-zero advantage).
    payloads, priorities : list
        The state (oldest first).
    num_added, num_sampled : int

    Notes
    -----
    The R1V2 report describes SSB as caching high-value samples with
    non-zero advantages and reintroducing them by advantage-weighted
    sampling; no training code was released (see notes), so the eviction
    rule (FIFO) and sampling without replacement are our choices.
    """

    capacity: int = 256
    min_priority: float = 0.0
    payloads: list = field(default_factory=list)
    priorities: list = field(default_factory=list)
    num_added: int = 0
    num_sampled: int = 0

    def __post_init__(self):
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1; got {self.capacity}.")
        if self.min_priority < 0:
            raise ValueError(f"min_priority must be >= 0; got {self.min_priority}.")

    def __len__(self) -> int:
        return len(self.payloads)

    def add(self, payloads: Sequence[Any], priorities) -> int:
        """Store the payloads whose priority (e.g. |advantage|) exceeds ``min_priority``; returns how many were stored."""
        p = _f64(priorities, name="priorities")
        check_ndim(p, 1, name="priorities", layout="[items]")
        check_finite(p, name="priorities")
        if p.shape[0] != len(payloads):
            raise ValueError(f"payloads ({len(payloads)}) and priorities ({p.shape[0]}) must have the same length.")
        if bool((p < 0).any()):
            raise ValueError("priorities must be >= 0 (use |advantage|).")
        stored = 0
        for item, w in zip(payloads, p.tolist()):
            if w > self.min_priority:
                self.payloads.append(item)
                self.priorities.append(float(w))
                stored += 1
        overflow = len(self.payloads) - self.capacity
        if overflow > 0:
            del self.payloads[:overflow]
            del self.priorities[:overflow]
        self.num_added += stored
        return stored

    def sample(self, n: int, *, generator: torch.Generator) -> list[Any]:
        """Up to ``n`` payloads, without replacement, with probability proportional to priority (fewer if the buffer is smaller)."""
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}.")
        k = min(int(n), len(self.payloads))
        if k == 0:
            return []
        idx = torch.multinomial(torch.tensor(self.priorities, dtype=torch.float64), k, replacement=False, generator=generator)
        self.num_sampled += k
        return [self.payloads[i] for i in idx.tolist()]

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "min_priority": self.min_priority, "payloads": list(self.payloads),
                "priorities": list(self.priorities), "num_added": self.num_added, "num_sampled": self.num_sampled}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"state has capacity {state['capacity']} but this buffer {self.capacity}.")
        self.min_priority = float(state["min_priority"])
        self.payloads = list(state["payloads"])
        self.priorities = [float(x) for x in state["priorities"]]
        self.num_added = int(state["num_added"])
        self.num_sampled = int(state["num_sampled"])


@dataclass(frozen=True)
class Injection:
    """One ARPO replacement: put ``payload`` (reward ``reward``) in row ``row`` of group ``group``."""

    row: int
    group: int
    payload: Any
    reward: float


@dataclass
class ARPOReplayBuffer:
    r"""ARPO's per-task replay of successful trajectories.

    For each task key, a FIFO of at most ``capacity_per_task`` trajectories
    whose reward exceeded ``success_threshold``. A group (the samples of one
    task in one step) counts as all-failed when its reward std is below
    ``std_threshold`` and its mean below ``mean_threshold``; one of its rows
    is then replaced by a buffered success of the same task, drawn uniformly.

    Defaults are those of the notes on dvlab-research/ARPO (capacity 8,
    success > 0.1, std < 0.05, mean < 0.2). The std is the population std
    (numpy's default in that code base; unconfirmed), and the replaced row is
    drawn uniformly (the ARPO code's choice of row was not confirmed).

    Attributes
    ----------
    capacity_per_task : int
    success_threshold, std_threshold, mean_threshold : float
    buffers : dict
        task key -> list of (payload, reward), oldest first.
    """

    capacity_per_task: int = 8
    success_threshold: float = 0.1
    std_threshold: float = 0.05
    mean_threshold: float = 0.2
    buffers: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.capacity_per_task < 1:
            raise ValueError(f"capacity_per_task must be >= 1; got {self.capacity_per_task}.")

    def __len__(self) -> int:
        return sum(len(v) for v in self.buffers.values())

    def update(self, task_keys: Sequence[Hashable], rewards, payloads: Sequence[Any]) -> int:
        """Append every trajectory with reward > ``success_threshold`` to its task's FIFO; returns how many."""
        r = _f64(rewards, name="rewards")
        check_ndim(r, 1, name="rewards", layout="[batch]")
        check_finite(r, name="rewards")
        if not (len(task_keys) == len(payloads) == r.shape[0]):
            raise ValueError(f"task_keys ({len(task_keys)}), rewards ({r.shape[0]}) and payloads ({len(payloads)}) must align.")
        added = 0
        for key, rew, item in zip(task_keys, r.tolist(), payloads):
            if rew > self.success_threshold:
                q = self.buffers.setdefault(key, [])
                q.append((item, float(rew)))
                if len(q) > self.capacity_per_task:
                    del q[0]
                added += 1
        return added

    def all_failed(self, rewards, group_ids) -> dict[int, bool]:
        """Group id -> whether the group looks all-failed (population std < std_threshold and mean < mean_threshold)."""
        r = _f64(rewards, name="rewards")
        g = as_tensor(group_ids, name="group_ids")
        check_ndim(r, 1, name="rewards", layout="[batch]")
        check_ndim(g, 1, name="group_ids", layout="[batch]")
        if r.shape[0] != g.shape[0]:
            raise ValueError(f"rewards ({r.shape[0]}) and group_ids ({g.shape[0]}) must have the same length.")
        out = {}
        for k in torch.unique(g).tolist():
            x = r[g == k]
            out[int(k)] = bool(x.std(unbiased=False) < self.std_threshold and x.mean() < self.mean_threshold)
        return out

    def plan_injections(self, rewards, group_ids, task_keys: Sequence[Hashable], *, generator: torch.Generator) -> list[Injection]:
        """One :class:`Injection` per all-failed group whose task has a buffered success.

        ``task_keys[i]`` is the task of row ``i`` (the same within a group).
        Call before :meth:`update` with the step's own trajectories (ARPO
        updates the buffer after injecting).
        """
        g = as_tensor(group_ids, name="group_ids")
        if len(task_keys) != g.shape[0]:
            raise ValueError(f"task_keys has {len(task_keys)} entries but group_ids {g.shape[0]}.")
        failed = self.all_failed(rewards, g)
        out = []
        for k in sorted(failed):
            if not failed[k]:
                continue
            rows = (g == k).nonzero().flatten().tolist()
            key = task_keys[rows[0]]
            q = self.buffers.get(key)
            if not q:
                continue
            item, rew = q[int(torch.randint(len(q), (1,), generator=generator))]
            row = rows[int(torch.randint(len(rows), (1,), generator=generator))]
            out.append(Injection(row=row, group=k, payload=item, reward=rew))
        return out

    def state_dict(self) -> dict:
        return {"capacity_per_task": self.capacity_per_task, "success_threshold": self.success_threshold,
                "std_threshold": self.std_threshold, "mean_threshold": self.mean_threshold,
                "buffers": {k: list(v) for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.capacity_per_task = int(state["capacity_per_task"])
        self.success_threshold = float(state["success_threshold"])
        self.std_threshold = float(state["std_threshold"])
        self.mean_threshold = float(state["mean_threshold"])
        self.buffers = {k: list(v) for k, v in state["buffers"].items()}
