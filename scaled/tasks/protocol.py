"""The task protocol every trainer reads: :class:`PromptTask` and :class:`RewardResult`.

A *task* hands out problems from named distributions (the DUMP curriculum
schedules over them), turns a problem into a prompt string, and grades a
response with a :class:`RewardResult`:

.. code-block:: python

    class MyTask:
        name = "my-task"
        distributions = ["easy", "hard"]

        def sample(self, source, *, rng):          # rng: numpy.random.Generator
            ...                                    # -> problem (any object)

        def prompt(self, problem) -> str: ...

        def reward(self, response, problem) -> RewardResult:
            ok = response.strip() == problem.answer
            return RewardResult(total=float(ok), correct=ok, components={"answer_score": float(ok)})

        def reference(self, problem) -> str:      # optional (PCPG's edit-distance rewards)
            ...

Trainers read ``total`` (the scalar the advantage is computed from),
``correct`` (accuracy metrics, success buffers) and ``components`` (extra
per-response metrics, averaged by name). The built-in tasks return
subclasses (:class:`ScoredReward`) whose ``components`` are
``{"format_score": ..., "answer_score": ...}`` and which keep those two
values as attributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

__all__ = ["RewardResult", "ScoredReward", "PromptTask", "as_reward_result", "check_task"]


def _check_real(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{what} must be finite, got {value!r}; return a finite reward (e.g. a large negative one).")
    return value


@dataclass(frozen=True)
class RewardResult:
    """A graded response.

    Attributes
    ----------
    total : float
        The scalar reward the trainer optimises (finite).
    correct : bool
        Whether the response counts as solved (accuracy metrics, success
        buffers such as ARPO's).
    components : dict of str to float
        Named parts of the reward, logged by the trainers as batch means
        (e.g. ``format_score``, ``answer_score``). May be empty.

    Notes
    -----
    Instances compare and hash by value (the hash reads ``components`` as
    sorted items).
    """

    total: float
    correct: bool
    components: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_real(self.total, "RewardResult.total")
        if not isinstance(self.correct, (bool, np.bool_)):
            raise ValueError(f"RewardResult.correct must be a bool, got {type(self.correct).__name__} {self.correct!r}")
        if not isinstance(self.components, Mapping):
            raise ValueError(
                f"RewardResult.components must be a dict of str to float, got {type(self.components).__name__}"
            )
        for key, value in self.components.items():
            if not isinstance(key, str):
                raise ValueError(f"RewardResult.components keys must be str, got {key!r}")
            _check_real(value, f"RewardResult.components[{key!r}]")

    def __hash__(self) -> int:
        return hash((type(self), self.total, self.correct, tuple(sorted(self.components.items()))))


@dataclass(frozen=True, init=False)
class ScoredReward(RewardResult):
    """A reward made of a format part and an answer part (the built-in verifiable tasks).

    Constructed positionally as ``(format_score, answer_score, total, correct)``,
    the order the built-in reward classes always had; ``components`` is
    ``{"format_score": format_score, "answer_score": answer_score}``.
    """

    format_score: float
    answer_score: float

    def __init__(self, format_score: float, answer_score: float, total: float, correct: bool,
                 components: Mapping[str, float] | None = None) -> None:
        expected = {"format_score": format_score, "answer_score": answer_score}
        if components is not None and dict(components) != expected:
            raise ValueError(
                f"components of {type(self).__name__} are derived from format_score and answer_score; "
                f"got {dict(components)!r}, expected {expected!r} (omit components)"
            )
        object.__setattr__(self, "format_score", format_score)
        object.__setattr__(self, "answer_score", answer_score)
        RewardResult.__init__(self, total, correct, expected)

    __hash__ = RewardResult.__hash__  # components determine format_score and answer_score


@runtime_checkable
class PromptTask(Protocol):
    """What a trainer needs from a task (structural: any object with these members conforms).

    Attributes
    ----------
    name : str
        Short name (the registry name for built-in tasks).
    distributions : list of str
        Names of the problem distributions (data sources); the curriculum
        schedules over them. At least one.

    Methods
    -------
    sample(source, *, rng) -> problem
        One problem from distribution ``source``, drawn with the numpy
        ``Generator`` ``rng`` only (same rng state -> same problem).
    prompt(problem) -> str
        The user message.
    reward(response, problem) -> RewardResult
        Grade the decoded completion (without the prompt).
    reference(problem) -> str
        Optional: the reference answer text.
    """

    name: str

    @property
    def distributions(self) -> list[str]: ...

    def sample(self, source: str, *, rng: np.random.Generator) -> Any: ...

    def prompt(self, problem: Any) -> str: ...

    def reward(self, response: str, problem: Any) -> RewardResult: ...


def as_reward_result(value: object, *, where: str = "reward") -> RewardResult:
    """``value`` as a :class:`RewardResult`; a plain real number ``x`` becomes ``RewardResult(x, x > 0)``.

    Parameters
    ----------
    value : RewardResult or real number
        What a reward function returned.
    where : str
        Named in the error message (e.g. ``"mymodule:score"``).

    Raises
    ------
    ValueError
        For any other type (bools included), or a non-finite number.

    Notes
    -----
    ``correct = x > 0`` for a bare number is a convention: a 0/1 reward
    counts as solved at 1. Return a :class:`RewardResult` to decide otherwise.
    """
    if isinstance(value, RewardResult):
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(
            f"{where} returned {type(value).__name__} {value!r}; it must return a float or a "
            "polab.scaled.tasks.RewardResult(total=..., correct=..., components={...})"
        )
    x = float(_check_real(value, f"the number {where} returned"))
    return RewardResult(total=x, correct=x > 0)


def check_task(task: object) -> None:
    """Raise ``ValueError`` naming every member of :class:`PromptTask` that ``task`` lacks.

    Checks presence and basic types only (``name`` a str, ``distributions`` a
    non-empty list of str, the methods callable); it does not call them.
    """
    problems = []
    name = getattr(task, "name", None)
    if not isinstance(name, str):
        problems.append("name (a str)")
    try:
        dists = task.distributions
    except AttributeError:
        dists = None
    if not (isinstance(dists, (list, tuple)) and dists and all(isinstance(d, str) for d in dists)):
        problems.append("distributions (a non-empty list of str)")
    for method in ("sample", "prompt", "reward"):
        if not callable(getattr(task, method, None)):
            problems.append(f"{method}(...) (a method)")
    if problems:
        raise ValueError(
            f"task {type(task).__module__}.{type(task).__qualname__} does not follow the PromptTask protocol: "
            f"it lacks {', '.join(problems)}. See polab.scaled.tasks.protocol."
        )
