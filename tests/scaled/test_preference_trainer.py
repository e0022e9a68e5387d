"""Tests for polab.scaled.trainers.preference: the trainer calls the core loss unchanged and really trains.

Tiny-model tests use ``tiny-llama`` (random 2-layer Llama, SmolLM2 tokenizer);
the ``llm`` test takes one real step on the embedded SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import math

import pytest
import torch

from polab.estimators.preference_losses import SAMPLING_SCHEMES, scheme_loss
from polab.scaled.run_folder import read_metrics
from polab.scaled.tasks.length_target import LengthTargetTask, count_words
from polab.scaled.trainers.preference import PreferenceTrainer, config_from_preset


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; a busy 2-core machine is ~100x slower with 2 intra-op threads
    yield
    torch.set_num_threads(n)


def test_length_task_reward_peaks_at_target():
    task = LengthTargetTask(target_words=3, scale=4.0)
    assert count_words("A small, furry cat.") == 4
    assert task.reward("one two three") == 1.0
    assert task.reward("one two three four five seven seven") == pytest.approx(math.exp(-1.0), rel=1e-12)


@pytest.mark.parametrize("scheme", ["on-policy-dpo", "offline-best-of-n-neg"])
def test_tiny_trainer_changes_parameters_and_uses_core_loss(tmp_path, scheme):
    cfg = config_from_preset("tiny", scheme=scheme, out=str(tmp_path / scheme), steps=1)
    tr = PreferenceTrainer(cfg)
    before = {k: v.detach().clone() for k, v in tr.policy.named_parameters()}
    res = tr.train_step()
    li = res.loss_inputs
    assert li["loss"] is not None
    # the trainer's loss equals the core loss recomputed on the very tensors it used
    core = scheme_loss(SAMPLING_SCHEMES[scheme], li["logp"], li["ref_logp"], li["rewards"], li["group_ids"],
                       beta=cfg.beta, label_smoothing=cfg.label_smoothing, target_margin=cfg.ipo_target_margin,
                       negative_coef=cfg.negative_coef, pairing=cfg.pairing)
    assert float(core.loss) == pytest.approx(float(li["loss"]), rel=1e-6)  # float32
    changed = [k for k, v in tr.policy.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert len(changed) == len(before), set(before) - set(changed)
    # the reference stays frozen
    assert all(not p.requires_grad for p in tr.ref.parameters())
    tr.logger.close()


def test_tiny_run_folder_checkpoint_and_exact_resume(tmp_path):
    full = PreferenceTrainer(config_from_preset("tiny", out=str(tmp_path / "full"), steps=2)).train()
    rows = read_metrics(full / "metrics.csv")
    assert [r["step"] for r in rows] == [1.0, 2.0]
    assert (full / "figures" / "reward.png").is_file() and (full / "config.json").is_file()
    assert (full / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    part = tmp_path / "part"
    PreferenceTrainer(config_from_preset("tiny", out=str(part), steps=2, stop_after=1)).train()
    resumed = PreferenceTrainer(config_from_preset("tiny", out=str(part), steps=2, resume=True))
    assert resumed.step == 1
    resumed.train()
    a = read_metrics(full / "metrics.csv")[-1]
    b = read_metrics(part / "metrics.csv")[-1]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["sample_reward"] == b["sample_reward"]
    with pytest.raises(ValueError, match="--resume.*--overwrite"):
        PreferenceTrainer(config_from_preset("tiny", out=str(full)))


def test_cli_registers_preference():
    from polab.scaled.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "preference", "--help"])
    assert exc.value.code == 0


@pytest.mark.llm
def test_one_real_step_on_smollm2(tmp_path):
    cfg = config_from_preset("cpu-demo", out=str(tmp_path / "llm"), steps=1, prompts_per_step=2, samples_per_prompt=2,
                             max_new_tokens=8, tensorboard=False, progress=False)
    tr = PreferenceTrainer(cfg)
    w = tr.policy.get_input_embeddings().weight
    before = w.detach().clone()
    res = tr.train_step()
    assert math.isfinite(res.metrics["policy_reward"]) and 0 < res.metrics["policy_reward"] <= 1
    if res.loss_inputs["loss"] is not None:  # a pair exists unless both groups tie
        assert not torch.equal(before, w.detach())
        core = scheme_loss("on-policy-dpo", res.loss_inputs["logp"], res.loss_inputs["ref_logp"], res.loss_inputs["rewards"],
                           res.loss_inputs["group_ids"], beta=cfg.beta)
        assert float(core.loss) == pytest.approx(float(res.loss_inputs["loss"]), rel=1e-6)
    tr.logger.close()


def test_offline_scheme_trains_on_preference_data(tmp_path):
    import json

    data = tmp_path / "pairs.jsonl"
    recs = [{"prompt": f"Describe item {i}.", "chosen": "Short and clear.", "rejected": f"A much longer answer number {i}, rambling on."}
            for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = config_from_preset("tiny", scheme="offline-dpo", data=f"jsonl:{data}", out=str(tmp_path / "run"), steps=2)
    tr = PreferenceTrainer(cfg)
    res = tr.train_step()
    li = res.loss_inputs
    assert li["rewards"].tolist() == [1.0, 0.0, 1.0, 0.0]  # two records a step (prompts_per_step=2), chosen first
    core = scheme_loss(SAMPLING_SCHEMES["offline-dpo"], li["logp"], li["ref_logp"], li["rewards"], li["group_ids"], beta=cfg.beta)
    assert torch.equal(core.loss, li["loss"]) and res.metrics["num_pairs"] == 2.0
    assert math.isnan(res.metrics["policy_reward"])  # data has no reward function
    with pytest.raises(ValueError, match="data: preference pairs feed an offline pairwise scheme"):
        config_from_preset("tiny", scheme="on-policy-dpo", data=f"jsonl:{data}", out=str(tmp_path / "x")).validate()
