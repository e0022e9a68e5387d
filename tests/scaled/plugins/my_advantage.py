"""A user's advantage estimator, registered from outside polab (imported with --plugins tests.scaled.plugins.my_advantage)."""

from dataclasses import dataclass

from polab.estimators.advantages import broadcast_to_tokens, group_advantages
from polab.scaled.methods import ADVANTAGES, AdvantageEstimator, AdvantageResult


@dataclass
class CenteredOptions:
    scale: float = 1.0  # multiplies the group-centred reward


@ADVANTAGES.register("scaled-centred")
class ScaledCentred(AdvantageEstimator):
    """scale x (reward - group mean), from the core's group_advantages."""

    Options = CenteredOptions

    def compute(self, trainer, rollout):
        seq = self.options.scale * group_advantages(rollout.rewards, rollout.group_ids, scale="none").advantages
        return AdvantageResult(token=broadcast_to_tokens(seq.to(trainer.device), rollout.response_mask), sequence=seq)
