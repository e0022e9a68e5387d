"""Reward shapers (registry :data:`REWARD_SHAPERS`, option ``reward_shaper``): task rewards -> the scalar the advantage sees.

Compute call: ``shaper.shape(trainer, results) -> Tensor [n]`` (float32), from
the task's per-response reward results (``.total``, ``.correct``,
``.components``; :class:`polab.scaled.tasks.RewardResult`). The task's own
rewards stay the logged metrics (``reward_mean``, ``accuracy``); a shaper only
changes what the advantage estimator and the sample filter see.

- ``none``: the task's total reward (the default; what every earlier polab run used);
- ``binary``: 1 for a correct response, 0 otherwise (outcome-only reward, as in
  the DAPO/verl recipes for verifiable tasks);
- ``scaled``: ``scale * total + shift`` (e.g. rewards in [-1, 1] from ones in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .registry import Method, Registry

__all__ = ["REWARD_SHAPERS", "RewardShaper"]


class RewardShaper(Method):
    """Base of the reward shapers: ``shape(trainer, results) -> Tensor [n]``."""

    def shape(self, trainer, results) -> torch.Tensor:
        raise NotImplementedError


REWARD_SHAPERS = Registry("reward shaper", "reward_shaper", RewardShaper)


@REWARD_SHAPERS.register("none")
class TaskReward(RewardShaper):
    """The task's total reward, unchanged."""

    def shape(self, trainer, results) -> torch.Tensor:
        return torch.tensor([r.total for r in results], dtype=torch.float32)


@REWARD_SHAPERS.register("binary")
class BinaryReward(RewardShaper):
    """1 for a correct response, 0 otherwise."""

    def shape(self, trainer, results) -> torch.Tensor:
        return torch.tensor([1.0 if r.correct else 0.0 for r in results], dtype=torch.float32)


@dataclass
class ScaledOptions:
    scale: float = field(default=1.0, metadata={"help": "multiplies the task's total reward"})
    shift: float = field(default=0.0, metadata={"help": "added after scaling"})


@REWARD_SHAPERS.register("scaled")
class ScaledReward(RewardShaper):
    """scale * total + shift."""

    Options = ScaledOptions

    @classmethod
    def validate(cls, o, config) -> list[str]:
        import math

        return [] if math.isfinite(o.scale) and math.isfinite(o.shift) else ["scaled.scale and scaled.shift must be finite"]

    def shape(self, trainer, results) -> torch.Tensor:
        return torch.tensor([self.options.scale * r.total + self.options.shift for r in results], dtype=torch.float32)
