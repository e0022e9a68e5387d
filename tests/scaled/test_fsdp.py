"""FSDP2 (``--parallel fsdp``) on the CPU with gloo in 2 processes (tests/scaled/fsdp_worker.py under torchrun).

- One sharded update equals the DDP (replicated) update from the same weights and seeds, for the policy
  alone and for policy + reference + critic (``ppo-gae`` with a KL penalty; the worker moves the reference
  off the policy and makes the critic's head non-zero so that both take part in the first step's gradients).
  The two differ only in the order of float32 reductions (reduce-scatter vs all-reduce), which changes
  gradients by a few ulps; Adam's first step moves each weight by ``lr * g / (|g| + eps)``, so the weights may
  differ by rounding to an adjacent float (2 ulps of the weight: rtol ``2**-22``) plus a float32-relative
  ``1e-5`` of the step size ``lr`` (atol; the critic's ``value_lr`` is set to the same ``1e-3``).
- The sharded reference is never trained: after the steps its gathered weights equal its initial weights.
- Exact resume with all three sharded: 2 steps straight == 1 step, a sharded checkpoint
  (torch.distributed.checkpoint: policy, critic and both optimizers), a resumed run, 1 step (bitwise), and
  both ranks hold the same weights and curriculum state.
- The checkpoint's Hugging Face folder holds the full (gathered) policy, ``critic.safetensors`` the gathered critic.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

LR = 1e-3  # tiny_config's learning rate


@pytest.mark.slow
def test_fsdp_update_matches_ddp_and_resumes_exactly(tmp_path):
    worker = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
              "-m", "tests.scaled.fsdp_worker", str(tmp_path)]
    r = subprocess.run(worker, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    s1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert s0["dtensor_fsdp_critic"] == {"policy": True, "ref": True, "critic": True}  # all three sharded
    assert s0["dtensor_ddp_critic"] == {"policy": False, "ref": False, "critic": False}
    for tag, parts in (("", ("policy",)), ("_critic", ("policy", "ref", "critic"))):
        for part in parts:
            init, ddp, fsdp = s0[f"init_ddp{tag}"][part], s0[f"step1_ddp{tag}"][part], s0[f"step1_fsdp{tag}"][part]
            for k in init:
                assert torch.equal(init[k], s0[f"init_fsdp{tag}"][part][k]), (tag, part, k)
            if part == "ref":  # frozen: unchanged by the step, sharded or not
                for k in init:
                    assert torch.equal(ddp[k], init[k]) and torch.equal(fsdp[k], init[k]), k
                continue
            moved = [k for k in init if not torch.equal(ddp[k], init[k])]
            assert moved, (tag, part)  # the update moved the weights
            if part == "critic":  # the network under the head, not only the head, took the step
                assert any(k.startswith("lm.model.layers") for k in moved), moved
            for k in init:
                torch.testing.assert_close(fsdp[k], ddp[k], rtol=2**-22, atol=1e-5 * LR, msg=lambda m, k=k: f"{tag} {part} {k}: {m}")
    for part in ("policy", "ref", "critic"):
        for k in s0["straight"][part]:
            assert torch.equal(s0["resumed"][part][k], s0["straight"][part][k]), (part, k)
            assert torch.equal(s1["resumed"][part][k], s0["resumed"][part][k]), (part, k)
    assert s0["scheduler"] == s1["scheduler"]
    # the sharded files and the exports of the gathered policy and critic
    ck = tmp_path / "straight" / "checkpoints"
    assert sorted(p.name for p in (ck / "sharded" / "step_00000002").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    from safetensors.torch import load_file

    from polab.scaled.models import load_model

    exported = load_model(str(ck / "step_00000002" / "policy")).model.state_dict()
    for k, v in s0["straight"]["policy"].items():
        assert torch.equal(exported[k], v), k
    critic = load_file(str(ck / "step_00000002" / "critic.safetensors"))
    for k, v in critic.items():
        assert torch.equal(v, s0["straight"]["critic"][k]), k
    assert "head.weight" in critic


def test_fsdp_option_is_validated(tmp_path):
    from .grpo_fixtures import tiny_config

    with pytest.raises(ValueError, match="parallel"):
        tiny_config(tmp_path, parallel="zero3").validate()
    with pytest.raises(ValueError, match="rollout-strategy full"):
        tiny_config(tmp_path, parallel="fsdp", rollout_strategy="windowed").validate()
