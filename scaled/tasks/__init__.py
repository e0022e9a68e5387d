"""Tasks: one protocol (:class:`PromptTask`, :class:`RewardResult`) for every trainer, built by spec.

See :mod:`polab.scaled.tasks.protocol` for the protocol and
:mod:`polab.scaled.tasks.registry` for specs (``arithmetic``, ``kk``,
``length-target``, ``jsonl:PATH``, ``hf-dataset:PATH``); prompt data and
reward functions in :mod:`~polab.scaled.tasks.prompt_data` and
:mod:`~polab.scaled.tasks.rewards`; preference pairs in
:mod:`~polab.scaled.tasks.preference_data`.
"""

from .protocol import PromptTask, RewardResult, ScoredReward, as_reward_result, check_task
from .registry import TASKS, accepted_options, build_task, register_task, task_options, task_spec
from .prompt_data import PromptDatasetTask, PromptRecord
from .rewards import make_reward
from .preference_data import load_preference_data

__all__ = [
    "PromptTask",
    "RewardResult",
    "ScoredReward",
    "as_reward_result",
    "check_task",
    "TASKS",
    "register_task",
    "build_task",
    "task_spec",
    "task_options",
    "accepted_options",
    "PromptDatasetTask",
    "PromptRecord",
    "make_reward",
    "load_preference_data",
]
