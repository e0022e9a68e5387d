"""Procedurally generated integer addition, one distribution per number of digits.

A verifiable task with a binary reward, so its learnability follows the
closed form in :mod:`polab.theory.learnability` exactly: a group of G responses with
k correct has mean |advantage| 2 sqrt(q(1-q)) sqrt((G-1)/G), q = k/G. Small
models solve one-digit sums sometimes and long sums almost never, which makes
it the CPU stand-in for DUMP's easy/hard distributions (the Knights-and-Knaves
task of :mod:`polab.scaled.tasks.knights_knaves` is the paper's own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .protocol import ScoredReward

__all__ = ["AdditionProblem", "ArithmeticReward", "ArithmeticTask", "parse_integer"]

MAX_DIGITS = 18
_INT = re.compile(r"(?<![\d.])-?\d{1,3}(?:,\d{3})+(?![\d])|(?<![\d.])-?\d+")


@dataclass(frozen=True)
class AdditionProblem:
    a: int
    b: int
    digits: int
    source: str

    @property
    def answer(self) -> int:
        return self.a + self.b


class ArithmeticReward(ScoredReward):
    """``total`` is 1 for the right sum and 0 otherwise; ``format_score`` is +1 when an integer was found, -1 otherwise.

    A :class:`~polab.scaled.tasks.protocol.RewardResult`: ``components`` holds
    ``format_score`` and ``answer_score``.
    """


def parse_integer(text: str) -> int | None:
    """The first integer in ``text`` (thousands separators allowed), or None."""
    m = _INT.search(text)
    if m is None:
        return None
    return int(m.group().replace(",", ""))


class ArithmeticTask:
    """Addition of two uniformly drawn ``d``-digit numbers for each ``d`` in ``digits``.

    Parameters
    ----------
    digits : tuple of int
        One distribution per entry, named ``"add_{d}digit"``; 1 <= d <= 18.
    seed : int
        Unused by sampling (problems are drawn from the ``rng`` given to
        :meth:`sample`); kept for interface parity with the puzzle task.
    """

    name = "arithmetic"

    def __init__(self, digits=(1, 2, 3, 4), *, puzzles_per_size: int | None = None, seed: int = 0):
        digits = tuple(int(d) for d in digits)
        if not digits:
            raise ValueError("digits is empty: give at least one number of digits, e.g. (1, 2, 3).")
        bad = [d for d in digits if not 1 <= d <= MAX_DIGITS]
        if bad:
            raise ValueError(f"digits must lie in [1, {MAX_DIGITS}]; got {bad}.")
        if len(set(digits)) != len(digits):
            raise ValueError(f"digits must be distinct; got {digits}.")
        self.digits = digits
        self._by_source = {f"add_{d}digit": d for d in digits}

    @property
    def distributions(self) -> list[str]:
        return list(self._by_source)

    def sample(self, source: str, *, rng: np.random.Generator) -> AdditionProblem:
        if source not in self._by_source:
            raise ValueError(f"unknown source {source!r}; this task has {self.distributions}.")
        d = self._by_source[source]
        lo = 0 if d == 1 else 10 ** (d - 1)
        a, b = (int(x) for x in rng.integers(lo, 10**d, size=2))
        return AdditionProblem(a=a, b=b, digits=d, source=source)

    def prompt(self, problem: AdditionProblem) -> str:
        return f"Compute {problem.a} + {problem.b}. Reply with the number only."

    def reference(self, problem: AdditionProblem) -> str:
        """The reference answer as a string (the target of edit-distance step rewards, e.g. PCPG's)."""
        return str(problem.answer)

    def reward(self, response: str, problem: AdditionProblem) -> ArithmeticReward:
        got = parse_integer(response)
        correct = got is not None and got == problem.answer
        return ArithmeticReward(
            format_score=1.0 if got is not None else -1.0,
            answer_score=1.0 if correct else 0.0,
            total=1.0 if correct else 0.0,
            correct=correct,
        )
