"""Registered methods of the trainers: open registries by family (see :mod:`polab.scaled.methods.registry`).

- :data:`ADVANTAGES` (``advantage``): :mod:`polab.scaled.methods.advantages`;
- :data:`SAMPLE_FILTERS` (``sample_filter``): :mod:`polab.scaled.methods.sample_filters`;
- :data:`REWARD_SHAPERS` (``reward_shaper``): :mod:`polab.scaled.methods.reward_shapers`;
- :data:`PREFERENCE_LOSSES` (``scheme``) and :data:`PAIR_LABELLERS` (``pair_labels``):
  :mod:`polab.scaled.methods.preference`;
- :data:`OFFLINE_LOSSES` (``method`` of ``polab train offline``): :mod:`polab.scaled.methods.offline_losses`.
"""

from .advantages import ADVANTAGES, AdvantageEstimator, AdvantageResult, GroupEstimator
from .registry import Method, Registry, canonical_name, import_plugins
from .reward_shapers import REWARD_SHAPERS, RewardShaper
from .sample_filters import SAMPLE_FILTERS, SampleFilter

__all__ = ["ADVANTAGES", "AdvantageEstimator", "AdvantageResult", "GroupEstimator", "Method", "REWARD_SHAPERS", "Registry",
           "RewardShaper", "SAMPLE_FILTERS", "SampleFilter", "canonical_name", "import_plugins"]
from .preference import PAIR_LABELLERS, PREFERENCE_LOSSES, PairLabeller, PreferenceLossMethod, PreferenceStep  # noqa: E402

__all__ += ["PAIR_LABELLERS", "PREFERENCE_LOSSES", "PairLabeller", "PreferenceLossMethod", "PreferenceStep"]
from . import tppo  # noqa: E402,F401  (registers the t-ppo advantage estimator)
from .self_reference import SelfReferenceLabels  # noqa: E402  (registers pair_labels="self-reference")

__all__ += ["SelfReferenceLabels"]
from .rollout_strategies import ROLLOUT_STRATEGIES, RolloutStrategy  # noqa: E402

__all__ += ["ROLLOUT_STRATEGIES", "RolloutStrategy"]
from .agent_credit import AGENT_CREDIT, AGENT_FILTERS, AgentSampleFilter, CreditAssigner, CreditResult  # noqa: E402  (agent trainer)

__all__ += ["AGENT_CREDIT", "AGENT_FILTERS", "AgentSampleFilter", "CreditAssigner", "CreditResult"]
from .offline_losses import OFFLINE_LOSSES, OfflineLoss  # noqa: E402  (offline trainer: td3bc, prdc, a2pr)
from . import offline_pgd  # noqa: E402,F401  (registers td3bc-pgd: TD3+BC on policy-guided synthetic data)

__all__ += ["OFFLINE_LOSSES", "OfflineLoss"]
from .agent_rewards import AGENT_REWARDS, AgentRewardShaper, ShapedRewards  # noqa: E402  (agent trainer: epo-process, debate)

__all__ += ["AGENT_REWARDS", "AgentRewardShaper", "ShapedRewards"]
