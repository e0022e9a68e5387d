"""CurriculumGRPOTrainer: real TRL GRPO steps on the tiny random Llama (CPU), checked against TRL's own logs.

Needs the `integrations` extra (TRL, datasets); the module is skipped without TRL.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("trl", reason="TRL is not installed: pip install -e '.[integrations]'")

from transformers import TrainerCallback  # noqa: E402

from polab.estimators.curriculum import DumpScheduler  # noqa: E402
from polab.integrations.trl import (  # noqa: E402
    CURRICULUM_STATE_FILE,
    CurriculumGRPOTrainer,
    gather_across_ranks,
)
from tests.integrations.trl_fixtures import (  # noqa: E402
    SOURCE_BONUS,
    SOURCES,
    RecordingDump,
    grpo_args,
    source_reward,
    tiny_dataset,
)

STEPS = 3


def test_gather_without_distributed_is_identity():
    x = torch.arange(4.0)
    assert gather_across_ranks(x) is x


# -- real TRL training ----------------------------------------------------------------------------
class _Record(TrainerCallback):
    """After each optimizer step (one generation step here): what the curriculum did and what TRL logged."""

    def __init__(self):
        self.trainer = None
        self.steps: list[dict] = []

    def on_step_end(self, args, state, control, **kwargs):
        tr = self.trainer
        self.steps.append(
            {
                "curriculum": tr.last_step,
                "trl_advantages": list(tr._logs["advantages"]),
                "trl_prompts": list(tr._logs["prompt"]),
                "trl_completions": list(tr._logs["completion"]),
                "trl_rewards": list(tr._logs["rewards"]["source_reward"]),
                "state": json.loads(json.dumps(tr.scheduler.state_dict())),
            }
        )


def _trainer(out, *, max_steps, scheduler=None, dataset=None, **kwargs):
    from polab.scaled.models import load_model

    lm = load_model("tiny-llama", seed=0)
    record = _Record()
    trainer = CurriculumGRPOTrainer(
        model=lm.model,
        reward_funcs=source_reward,
        args=grpo_args(out, max_steps=max_steps),
        train_dataset=tiny_dataset() if dataset is None else dataset,
        processing_class=lm.tokenizer,
        callbacks=[record],
        scheduler=scheduler,
        **kwargs,
    )
    record.trainer = trainer
    return trainer, record


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trl_curriculum")
    # bonus="paper": after an update, distributions never seen have infinite score and take all the
    # mass, so the seen ones have probability exactly 0 (2 prompts per step, 3 sources: some source is
    # unseen after the first step).
    scheduler = RecordingDump(list(SOURCES), bonus="paper")
    trainer, record = _trainer(out, max_steps=STEPS, scheduler=scheduler)
    trainer.train()
    return {"out": out, "trainer": trainer, "scheduler": scheduler, "steps": record.steps}


def test_prompts_drawn_from_scheduler_probabilities_without_lag(run):
    steps, calls = run["steps"], run["scheduler"].calls
    assert len(steps) == STEPS and len(calls) == STEPS  # one generation step (and one update) per optimizer step
    names = list(SOURCES)
    saw_zero_mass = False
    for k, step in enumerate(steps):
        cur = step["curriculum"]
        assert cur.generation == k
        # The draw used the scheduler's probabilities after the previous update (uniform before any).
        expected = np.full(3, 1 / 3) if k == 0 else calls[k - 1]["probabilities_after"]
        np.testing.assert_array_equal(cur.probabilities, expected)
        # Only distributions with positive probability were drawn.
        assert (cur.probabilities[cur.prompt_sources] > 0).all()
        saw_zero_mass |= bool((cur.probabilities == 0).any())
        # TRL generated for exactly the drawn rows, each repeated num_generations = 2 times.
        data = tiny_dataset()
        drawn_prompts = [data[int(r)]["prompt"] for r in cur.prompt_rows for _ in range(2)]
        assert step["trl_prompts"] == drawn_prompts
        assert [data[int(r)]["source"] for r in cur.prompt_rows] == [names[j] for j in cur.prompt_sources]
    assert saw_zero_mass, "the test needs a step in which some distribution had probability 0"


def test_scheduler_received_trls_advantages(run):
    steps, calls = run["steps"], run["scheduler"].calls
    names = list(SOURCES)
    for step, call in zip(steps, calls):
        cur = step["curriculum"]
        # Exactly the advantages TRL logged for this generation batch (same float32 values, widened).
        np.testing.assert_array_equal(call["advantages"], np.asarray(step["trl_advantages"], dtype=np.float64))
        assert call["sources"] == cur.sources.tolist()
        # Independent check of the pairing (source, completion, advantage): recompute each reward from
        # the completion text and the source the scheduler was told, then TRL's group advantage
        # (r - mean_group) / (std_group + 1e-4), std with Bessel's correction (trl 1.16.0
        # grpo_trainer.py, scale_rewards="group"; trainer/utils.py nanstd).
        rewards = np.array(
            [len(c) + SOURCE_BONUS[names[j]] for c, j in zip(step["trl_completions"], call["sources"])], dtype=np.float64
        )
        np.testing.assert_array_equal(rewards, np.asarray(step["trl_rewards"], dtype=np.float64))
        groups = rewards.reshape(-1, 2)
        adv = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, ddof=1, keepdims=True) + 1e-4)
        # float32 arithmetic in TRL on rewards of size ~50: relative error ~1e-6 of the reward scale.
        np.testing.assert_allclose(call["advantages"], adv.reshape(-1), rtol=0, atol=1e-5)
    # The scheduler's windows hold the fed advantages in order.
    window_a = [a for c in calls for s, a in zip(c["sources"], c["advantages"].tolist()) if s == 0]
    assert run["scheduler"].state_dict()["windows"][0] == window_a


def test_checkpoints_hold_scheduler_state(run):
    for k, step in enumerate(run["steps"], start=1):
        saved = json.loads((run["out"] / f"checkpoint-{k}" / CURRICULUM_STATE_FILE).read_text())
        assert saved["scheduler"] == step["state"]
        assert saved["generation_index"] == k


def test_resume_restores_scheduler_and_continues_exactly(run, tmp_path):
    scheduler = RecordingDump(list(SOURCES), bonus="paper")
    trainer, record = _trainer(tmp_path / "resumed", max_steps=STEPS, scheduler=scheduler)
    trainer.train(resume_from_checkpoint=str(run["out"] / "checkpoint-1"))
    # The first update after resume starts from checkpoint-1's state: counts grow by one batch.
    assert scheduler.calls[0]["state_after"]["num_updates"] == 2
    assert len(record.steps) == STEPS - 1
    for resumed, original in zip(record.steps, run["steps"][1:]):
        assert resumed["curriculum"].generation == original["curriculum"].generation
        np.testing.assert_array_equal(resumed["curriculum"].prompt_rows, original["curriculum"].prompt_rows)
        # Same prompts; TRL restores the RNG state, so the same completions and advantages.
        assert resumed["trl_completions"] == original["trl_completions"]
        assert resumed["state"] == original["state"]


def test_resume_from_foreign_checkpoint_is_refused(run, tmp_path):
    ckpt = run["out"] / "checkpoint-1"
    foreign = tmp_path / "foreign"
    import shutil

    shutil.copytree(ckpt, foreign)
    (foreign / CURRICULUM_STATE_FILE).unlink()
    trainer, _ = _trainer(tmp_path / "x", max_steps=STEPS)
    with pytest.raises(ValueError, match=CURRICULUM_STATE_FILE):
        trainer.train(resume_from_checkpoint=str(foreign))


def test_bad_dataset_or_scheduler_is_refused(tmp_path):
    from datasets import Dataset

    no_source = Dataset.from_list([{"prompt": "x"}])
    with pytest.raises(ValueError, match="source_column 'source' is not a column"):
        _trainer(tmp_path, max_steps=1, dataset=no_source)
    with pytest.raises(ValueError, match=r"sources \['c'\]"):
        _trainer(tmp_path, max_steps=1, scheduler=DumpScheduler(["a", "b"]))
    with pytest.raises(ValueError, match=r"\['d'\] have no rows"):
        _trainer(tmp_path, max_steps=1, scheduler=DumpScheduler(["a", "b", "c", "d"]))
    trainer, _ = _trainer(tmp_path, max_steps=1)  # default: DumpScheduler over the sources, first-seen order
    assert trainer.scheduler.names == SOURCES and isinstance(trainer.scheduler, DumpScheduler)
    assert math.isclose(float(trainer.scheduler.probabilities().sum()), 1.0)


@pytest.mark.slow  # two processes each import TRL and transformers: ~50 s on 2 shared CPU cores
def test_two_ranks_share_scheduler_state(tmp_path):
    import subprocess
    import sys

    worker = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "tests.integrations.trl_ddp_worker", str(tmp_path)]
    r = subprocess.run(worker, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [x["world"] for x in ranks] == [2, 2]
    assert ranks[0]["state"] == ranks[1]["state"]  # every rank holds the same scheduler
    # 2 steps x global batch of 4 completions (2 per rank): both ranks' advantages reached the scheduler.
    assert sum(ranks[0]["state"]["counts"]) == 2 * 4
    for x in ranks:
        for step, fed in zip(x["steps"], x["fed"]):
            # The scheduler got TRL's all-process advantages, in TRL's global order ...
            assert fed["advantages"] == step["trl_advantages"] and fed["sources"] == step["sources"]
            # ... and TRL's all-process prompts are the global draw (rank 0 took the first prompt, rank 1 the second).
            data = tiny_dataset()
            assert step["trl_prompts"] == [data[r]["prompt"] for r in step["prompt_rows"] for _ in range(2)]
    assert ranks[0]["steps"] == ranks[1]["steps"]


def test_one_update_per_generation_with_reuse_and_none_in_evaluation(tmp_path):
    # steps_per_generation = gradient_accumulation_steps = 2 and num_iterations = 2: TRL generates once every
    # 4 micro-steps (2 optimizer steps), so 4 optimizer steps hold 2 generation steps.
    from polab.scaled.models import load_model

    lm = load_model("tiny-llama", seed=0)
    scheduler = RecordingDump(list(SOURCES))
    args = grpo_args(tmp_path, max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                     num_iterations=2, save_strategy="no")
    trainer = CurriculumGRPOTrainer(model=lm.model, reward_funcs=source_reward, args=args,
                                    train_dataset=tiny_dataset(), processing_class=lm.tokenizer, scheduler=scheduler)
    trainer.train()
    assert len(scheduler.calls) == 2
    # Global generation batch: 2 per device x 2 steps per generation = 4 completions = 2 prompts x 2 generations.
    assert [len(c["sources"]) for c in scheduler.calls] == [4, 4]
    np.testing.assert_array_equal(scheduler.calls[-1]["advantages"], np.asarray(list(trainer._logs["advantages"])))
    assert trainer.last_step.generation == 1
    trainer.evaluate(eval_dataset=tiny_dataset())  # evaluation batches are not part of the curriculum
    assert len(scheduler.calls) == 2 and trainer.last_step.generation == 1
