"""Shared pieces of the TRL integration tests: a tiny dataset, a source-dependent reward, a recording scheduler."""

from __future__ import annotations

import copy

import numpy as np

from polab.estimators.curriculum import DumpScheduler

SOURCES = ("a", "b", "c")
SOURCE_BONUS = {"a": 10.0, "b": 0.0, "c": -10.0}


def tiny_dataset():
    from datasets import Dataset

    rows = [{"prompt": f"{s} question {i}:", "source": s} for s in SOURCES for i in range(3)]
    return Dataset.from_list(rows)


def source_reward(completions, source, **kwargs):
    """Completion length in characters plus a per-source bonus: a mislabelled source changes the reward."""
    return [float(len(c)) + SOURCE_BONUS[s] for c, s in zip(completions, source)]


class RecordingDump(DumpScheduler):
    """DumpScheduler that records every update: the arguments and the probabilities right after it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[dict] = []

    def update(self, source_ids, advantages) -> None:
        super().update(source_ids, advantages)
        self.calls.append(
            {
                "sources": list(source_ids),
                "advantages": np.asarray(advantages, dtype=np.float64).copy(),
                "probabilities_after": self.probabilities().copy(),
                "state_after": copy.deepcopy(self.state_dict()),
            }
        )


def grpo_args(out, *, max_steps: int, seed: int = 0, **overrides):
    from trl import GRPOConfig

    kwargs = dict(
        output_dir=str(out),
        use_cpu=True,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=max_steps,
        save_steps=1,
        logging_steps=1,
        report_to="none",
        beta=0.0,
        learning_rate=1e-3,
        seed=seed,
        bf16=False,
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)
