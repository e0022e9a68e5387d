"""Shared pieces of the GRPO trainer tests (imported by the tests and by the DDP worker script)."""

from __future__ import annotations

from dataclasses import dataclass

from polab.scaled.tasks.arithmetic import ArithmeticTask


@dataclass(frozen=True)
class _Reward:
    format_score: float
    answer_score: float
    total: float
    correct: bool


class DistinctCharsTask(ArithmeticTask):
    """Arithmetic prompts with a reward a *random* tiny model can vary: distinct characters of the response, mod 3.

    A randomly initialised model never answers a sum, so the real reward is
    constant and every advantage is zero; this test-only reward gives the
    trainer non-zero advantages to propagate. The real reward is exercised by
    the SmolLM2 test.
    """

    def reward(self, response, problem):
        v = float(len(set(response)) % 3)
        return _Reward(format_score=1.0, answer_score=v, total=v, correct=v == 2.0)


def tiny_config(tmp_path, **kw):
    from polab.scaled.trainers.grpo import config_from_preset

    base = dict(out=str(tmp_path), levels=(1, 2), prompts_per_step=2, samples_per_prompt=4, max_new_tokens=6, steps=2,
                lr=1e-3, checkpoint_every=1, tensorboard=False, progress=False)
    base.update(kw)
    return config_from_preset("tiny", **base)
