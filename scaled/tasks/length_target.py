"""A synthetic preference task whose optimum lies far from a chat model's default: answer in very few words.

The prompts ask for a description of an everyday object; the programmatic
reward peaks at a target number of words (default 3) and decays
exponentially away from it,

    r(y) = exp(-|words(y) - target| / scale),

so it orders every pair of responses of different lengths. An instruct
model's default answers run to dozens of words (and are cut at
``max_new_tokens``), so the reward-maximising responses are rare under the
reference policy: the LLM analogue of the bandit reward peaked at bin 70 in
Tajwar et al. (2024), where the optimum sits where the reference has little
mass.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .protocol import RewardResult

__all__ = ["LengthTargetTask", "LengthPrompt", "LengthReward", "count_words"]

_WORD = re.compile(r"[A-Za-z0-9']+")

TOPICS = (
    "a cat", "the sea", "a bicycle", "bread", "a mountain", "the moon", "a library", "coffee", "a garden", "rain",
    "a violin", "snow", "a train", "an apple", "the desert", "a clock", "a river", "a candle", "a forest", "a bridge",
    "an owl", "a kite", "the wind", "a lighthouse", "honey", "a teapot", "a volcano", "a chess board", "a map", "tea",
)


def count_words(text: str) -> int:
    """Number of alphanumeric words (apostrophes kept inside words)."""
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class LengthPrompt:
    topic: str


class LengthReward(float, RewardResult):
    """The length reward: a :class:`~polab.scaled.tasks.protocol.RewardResult` that is also the float ``total``.

    ``correct`` is ``words == target_words``; ``components`` is ``{"words": words}``.
    Being a float keeps code that used the task's former float return
    (``torch.tensor([task.reward(t) ...])``, ``reward == 1.0``) working unchanged.
    """

    def __new__(cls, total: float, correct: bool, components=None):
        return float.__new__(cls, total)

    def __init__(self, total: float, correct: bool, components=None) -> None:
        RewardResult.__init__(self, total, correct, dict(components or {}))

    def __repr__(self) -> str:
        return f"LengthReward(total={self.total!r}, correct={self.correct!r}, components={self.components!r})"


class LengthTargetTask:
    """Describe a topic; reward ``exp(-|words - target| / scale)``.

    Parameters
    ----------
    target_words : int
        The reward's peak (>= 1).
    scale : float
        Decay length in words (> 0).

    Notes
    -----
    One distribution, ``"topics"``; :meth:`sample` draws a topic uniformly
    (the ``source`` argument may be omitted).
    """

    name = "length-target"

    def __init__(self, *, target_words: int = 3, scale: float = 4.0):
        if target_words < 1 or scale <= 0:
            raise ValueError(f"target_words must be >= 1 and scale > 0; got {target_words}, {scale}.")
        self.target_words = int(target_words)
        self.scale = float(scale)

    @property
    def distributions(self) -> list[str]:
        return ["topics"]

    def sample(self, source: str | None = None, *, rng: np.random.Generator) -> LengthPrompt:
        if source is not None and source not in self.distributions:
            raise ValueError(f"unknown source {source!r}; this task has {self.distributions}.")
        return LengthPrompt(TOPICS[int(rng.integers(len(TOPICS)))])

    def prompt(self, item: LengthPrompt) -> str:
        return f"Describe {item.topic}."

    def reward(self, response: str, item: LengthPrompt | None = None) -> LengthReward:
        words = count_words(response)
        total = math.exp(-abs(words - self.target_words) / self.scale)
        return LengthReward(total, words == self.target_words, {"words": float(words)})
