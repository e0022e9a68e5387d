r"""Distribution-level curriculum schedulers: DUMP (UCB on mean |advantage|) and uniform.

A scheduler chooses which training distribution (data source) each prompt is
drawn from. Both schedulers share one interface:

- ``update(source_ids, advantages)``: feed per-response advantages, each
  tagged with the distribution it came from (a name, or its index in
  ``names``);
- ``probabilities()``: the current sampling distribution, float64, in the
  order of ``names``;
- ``sample(n, *, generator)``: ``n`` distribution indices drawn with
  replacement;
- ``state_dict()`` / ``load_state_dict()``: plain Python containers, so a
  resumed run continues exactly.

They are single-process objects. In data-parallel training the caller gathers
``(source_ids, advantages)`` from all ranks before calling ``update`` so that
every rank holds the same state (see ``polab.scaled.distributed``).

DUMP (Wang, Cui, Li, Wan, Zhao, "DUMP: Automated Distribution-Level
Curriculum Learning for RL-based LLM Post-training", arXiv 2504.09710, 2025):
the learnability of distribution :math:`j` is estimated by the mean absolute
advantage over a FIFO window of its most recent responses,

.. math:: \hat L_j = \frac{1}{|W_j|}\sum_{a\in W_j} |a|,

scored by an upper confidence bound and turned into probabilities by a
tempered softmax:

.. math::

    \mathrm{UCB}_j = \hat L_j + c\sqrt{\frac{2\ln(N+1)}{n_j+1}},\qquad
    p_j = \frac{\exp(\mathrm{UCB}_j/\tau)}{\sum_k \exp(\mathrm{UCB}_k/\tau)},

with :math:`n_j` the number of responses seen from :math:`j`, :math:`N =
\max(1, \sum_j n_j)`, window 300, :math:`c = 1`, :math:`\tau = 0.1`. This is
the form in the authors' code (``verl/utils/curriculum_learning.py`` at
commit 235e85d, read for ``shared/notes/theory_core.md`` section 1.3). The
paper's idealised form :math:`\hat L_j + c\sqrt{2\ln N / n_j}` (without the
+1 terms; the notes mark its exact wording as unconfirmed) is available as
``bonus="paper"``: there an unseen distribution has an infinite score, and
the unseen ones share all the probability equally.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

__all__ = ["DumpScheduler", "UniformScheduler", "SchedulerSnapshot", "dump_ucb_scores", "tempered_softmax"]


@dataclass(frozen=True)
class SchedulerSnapshot:
    """Per-distribution diagnostics at one moment (all arrays in ``names`` order)."""

    names: tuple[str, ...]
    probabilities: np.ndarray
    learnability: np.ndarray
    scores: np.ndarray
    counts: np.ndarray


def dump_ucb_scores(
    learnability: np.ndarray,
    counts: np.ndarray,
    *,
    exploration: float = 1.0,
    bonus: Literal["code", "paper"] = "code",
) -> np.ndarray:
    r"""UCB scores of DUMP from learnability estimates and sample counts.

    ``bonus="code"``: :math:`L_j + c\sqrt{2\ln(N+1)/(n_j+1)}`, :math:`N=\max(1,\sum n)`.
    ``bonus="paper"``: :math:`L_j + c\sqrt{2\ln N/n_j}`, :math:`+\infty` where :math:`n_j=0`.

    Shapes: ``learnability`` and ``counts`` [K] -> [K], float64.
    """
    L = np.asarray(learnability, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if L.shape != n.shape or L.ndim != 1:
        raise ValueError(f"learnability and counts must both have shape [K]; got {L.shape} and {n.shape}.")
    if bonus == "code":
        N = max(1.0, float(n.sum()))
        return L + exploration * np.sqrt(2.0 * math.log(N + 1.0) / (n + 1.0))
    if bonus == "paper":
        N = float(n.sum())
        out = np.full_like(L, np.inf)
        seen = n > 0
        if N > 0:
            out[seen] = L[seen] + exploration * np.sqrt(2.0 * math.log(max(N, 1.0)) / n[seen])
        return out
    raise ValueError(f"bonus must be 'code' or 'paper'; got {bonus!r}.")


def tempered_softmax(scores: np.ndarray, *, temperature: float) -> np.ndarray:
    """softmax(scores / temperature) in float64; infinite scores share all the mass equally."""
    s = np.asarray(scores, dtype=np.float64)
    inf = np.isposinf(s)
    if inf.any():
        return inf.astype(np.float64) / inf.sum()
    z = (s - s.max()) / temperature
    e = np.exp(z)
    return e / e.sum()


class _SchedulerBase:
    """Name handling, counting, sampling and state shared by the schedulers."""

    kind = "base"

    def __init__(self, names: Sequence[str]):
        names = tuple(str(n) for n in names)
        if len(names) == 0:
            raise ValueError("names is empty: give the scheduler at least one distribution name.")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"distribution names must be unique; repeated: {dup}.")
        self.names = names
        self._index = {n: i for i, n in enumerate(names)}
        self.counts = np.zeros(len(names), dtype=np.int64)
        self.num_updates = 0

    # -- input handling -------------------------------------------------
    def _indices(self, source_ids) -> np.ndarray:
        if isinstance(source_ids, torch.Tensor):
            source_ids = source_ids.detach().cpu().tolist()
        elif isinstance(source_ids, np.ndarray):
            source_ids = source_ids.tolist()
        out = []
        for s in source_ids:
            if isinstance(s, str):
                if s not in self._index:
                    raise ValueError(
                        f"unknown distribution name {s!r}; the scheduler knows {list(self.names)}. "
                        "Create the scheduler with every source name the data can carry."
                    )
                out.append(self._index[s])
            elif isinstance(s, (int, np.integer)) and not isinstance(s, bool):
                if not 0 <= int(s) < len(self.names):
                    raise ValueError(f"distribution index {s} is out of range [0, {len(self.names)}).")
                out.append(int(s))
            else:
                raise ValueError(f"source ids must be names (str) or indices (int); got {type(s).__name__}.")
        return np.asarray(out, dtype=np.int64)

    @staticmethod
    def _advantages(advantages, n: int) -> np.ndarray:
        if isinstance(advantages, torch.Tensor):
            a = advantages.detach().to("cpu", torch.float64).numpy()
        else:
            a = np.asarray(advantages, dtype=np.float64)
        if a.ndim != 1 or a.shape[0] != n:
            raise ValueError(
                f"advantages must have shape [batch] matching source_ids ({n}); got {a.shape}. "
                "Pass one scalar advantage per response (see polab.estimators.advantages.sequence_advantages)."
            )
        bad = ~np.isfinite(a)
        if bad.any():
            rows = np.flatnonzero(bad)[:10].tolist()
            raise ValueError(f"advantages has non-finite values at rows {rows}; the scheduler state was not changed.")
        return a

    def update(self, source_ids, advantages) -> None:
        idx = self._indices(source_ids)
        adv = self._advantages(advantages, len(idx))
        self._record(idx, adv)
        np.add.at(self.counts, idx, 1)
        self.num_updates += 1

    def _record(self, idx: np.ndarray, adv: np.ndarray) -> None:  # pragma: no cover - overridden
        pass

    # -- outputs --------------------------------------------------------
    def probabilities(self) -> np.ndarray:
        raise NotImplementedError

    def sample(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        """Draw ``n`` distribution indices i.i.d. from ``probabilities()`` (with replacement).

        Returns a CPU int64 tensor of shape [n]. ``generator`` must be a CPU
        ``torch.Generator``; it is the only source of randomness.
        """
        if not isinstance(generator, torch.Generator):
            raise ValueError("sample needs a torch.Generator passed as generator=...; the library never uses global RNG state.")
        if int(n) < 0:
            raise ValueError(f"n must be >= 0; got {n}.")
        p = torch.as_tensor(self.probabilities(), dtype=torch.float64)
        if n == 0:
            return torch.zeros(0, dtype=torch.int64)
        return torch.multinomial(p, int(n), replacement=True, generator=generator)

    def sample_names(self, n: int, *, generator: torch.Generator) -> list[str]:
        return [self.names[i] for i in self.sample(n, generator=generator).tolist()]

    def learnability(self) -> np.ndarray:
        return np.zeros(len(self.names))

    def scores(self) -> np.ndarray:
        return np.zeros(len(self.names))

    def snapshot(self) -> SchedulerSnapshot:
        return SchedulerSnapshot(
            names=self.names,
            probabilities=self.probabilities().copy(),
            learnability=self.learnability().copy(),
            scores=self.scores().copy(),
            counts=self.counts.copy(),
        )

    # -- state ----------------------------------------------------------
    def _config(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "names": list(self.names),
            "config": self._config(),
            "counts": self.counts.tolist(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"state is for a {state.get('kind')!r} scheduler, not {self.kind!r}.")
        if list(state["names"]) != list(self.names):
            raise ValueError(
                f"state names {state['names']} differ from this scheduler's {list(self.names)}; "
                "build the scheduler with the same distributions, in the same order."
            )
        if state["config"] != self._config():
            raise ValueError(f"state config {state['config']} differs from this scheduler's {self._config()}.")
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        self.num_updates = int(state["num_updates"])


class UniformScheduler(_SchedulerBase):
    """Uniform sampling over distributions (the no-curriculum baseline); counts are kept for logging."""

    kind = "uniform"

    def probabilities(self) -> np.ndarray:
        return np.full(len(self.names), 1.0 / len(self.names))


class DumpScheduler(_SchedulerBase):
    r"""DUMP's UCB curriculum over named distributions.

    Parameters
    ----------
    names : sequence of str
        The distributions (data sources), e.g. ``["kk_3people", ...]``.
    window : int, default 300
        FIFO window of signed advantages per distribution.
    exploration : float, default 1.0
        UCB weight :math:`c`.
    temperature : float, default 0.1
        Softmax temperature :math:`\tau`.
    bonus : {"code", "paper"}, default "code"
        The authors' code form (with +1 terms) or the paper's idealised form.

    Notes
    -----
    - Before the first ``update`` the probabilities are uniform (as in the
      authors' code), whatever ``bonus`` is.
    - Learnability of a distribution with an empty window is 0.
    - The authors' validation loop also pushes reward values into the windows
      (quirk (c) in the notes); this class does not: feed it only training
      advantages.
    """

    kind = "dump"

    def __init__(
        self,
        names: Sequence[str],
        *,
        window: int = 300,
        exploration: float = 1.0,
        temperature: float = 0.1,
        bonus: Literal["code", "paper"] = "code",
    ):
        super().__init__(names)
        if int(window) < 1:
            raise ValueError(f"window must be >= 1; got {window}.")
        if not exploration >= 0 or not math.isfinite(exploration):
            raise ValueError(f"exploration must be finite and >= 0; got {exploration}.")
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be finite and > 0; got {temperature}.")
        if bonus not in ("code", "paper"):
            raise ValueError(f"bonus must be 'code' or 'paper'; got {bonus!r}.")
        self.window = int(window)
        self.exploration = float(exploration)
        self.temperature = float(temperature)
        self.bonus = bonus
        self._windows: list[deque] = [deque(maxlen=self.window) for _ in self.names]

    def _record(self, idx: np.ndarray, adv: np.ndarray) -> None:
        for j, a in zip(idx.tolist(), adv.tolist()):
            self._windows[j].append(float(a))

    def learnability(self) -> np.ndarray:
        """Mean |advantage| over each window (0 for an empty window)."""
        return np.array([float(np.mean(np.abs(w))) if len(w) else 0.0 for w in self._windows])

    def scores(self) -> np.ndarray:
        return dump_ucb_scores(self.learnability(), self.counts, exploration=self.exploration, bonus=self.bonus)

    def probabilities(self) -> np.ndarray:
        if self.num_updates == 0:
            return np.full(len(self.names), 1.0 / len(self.names))
        return tempered_softmax(self.scores(), temperature=self.temperature)

    def _config(self) -> dict:
        return {"window": self.window, "exploration": self.exploration, "temperature": self.temperature, "bonus": self.bonus}

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["windows"] = [list(w) for w in self._windows]
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._windows = [deque((float(x) for x in w), maxlen=self.window) for w in state["windows"]]


def make_scheduler(kind: str, names: Sequence[str], **kwargs) -> _SchedulerBase:
    """Build a scheduler by name: ``"dump"`` or ``"uniform"``."""
    if kind == "dump":
        return DumpScheduler(names, **kwargs)
    if kind == "uniform":
        return UniformScheduler(names)
    raise ValueError(f"unknown curriculum {kind!r}; choose 'dump' or 'uniform'.")


__all__.append("make_scheduler")
