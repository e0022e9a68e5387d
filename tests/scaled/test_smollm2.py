"""The embedded SmolLM2-135M-Instruct: loading, caching, and one real GRPO step on it."""

import time

import pytest
import torch

from polab.estimators.policy_loss import ppo_clip_loss
from polab.scaled.models import EMBEDDED_MODEL, embedded_model_dir, load_model

pytestmark = pytest.mark.llm


def test_embedded_model_loads_dequantized_and_cached():
    path = embedded_model_dir()  # converts once (about 15 s), then cached
    assert (path / "model.safetensors").is_file()
    t0 = time.perf_counter()
    m = load_model(EMBEDDED_MODEL)
    assert time.perf_counter() - t0 < 30  # cached safetensors, no GGUF conversion (~1 s when the machine is idle)
    assert getattr(m.model.config, "quantization_config", None) is None
    assert not getattr(m.model, "is_quantized", False)
    assert all(p.dtype == torch.float32 for p in m.model.parameters())
    n = sum(p.numel() for p in m.model.parameters())
    assert 130e6 < n < 140e6, n  # SmolLM2-135M (tied embeddings counted once)
    ids = m.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = m.model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "5" in m.tokenizer.decode(out[0, ids.shape[1]:])  # greedy answer of the real model


def test_unknown_model_error_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="local Hugging Face folder"):
        load_model(str(tmp_path / "no-such-model"))


def test_one_real_grpo_step_on_smollm2(tmp_path):
    from polab.scaled.trainers.grpo import GRPOTrainer, config_from_preset

    cfg = config_from_preset("cpu-demo", levels=(1,), prompts_per_step=2, samples_per_prompt=4, max_new_tokens=8, steps=1,
                             seed=2, out=str(tmp_path), tensorboard=False, progress=False)
    tr = GRPOTrainer(cfg)
    before = {k: v.detach().clone() for k, v in tr.policy.named_parameters()}
    res = tr.train_step()
    li = res.loss_inputs
    core = ppo_clip_loss(li["logp"], li["old_logp"], li["advantages"], li["mask"], aggregation="token-mean", max_length=8)
    assert torch.equal(core.loss, li["loss"])
    assert torch.isfinite(li["logp"][li["mask"].bool()]).all()
    changed = sum(not torch.equal(v, before[k]) for k, v in tr.policy.named_parameters())
    if li["advantages"].abs().sum() > 0:
        # seed 2 gives at least one mixed group (some right, some wrong one-digit sums) on this model
        assert changed == len(before)
    else:
        assert changed == 0 and res.metrics["zero_variance_groups"] == 2
    assert 0.0 <= res.metrics["accuracy"] <= 1.0
    assert res.metrics["prob:add_1digit"] == 1.0
