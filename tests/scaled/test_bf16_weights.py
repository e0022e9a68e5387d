"""``--dtype bfloat16 --bf16-mode weights``: a bfloat16 copy of the weights runs the training forward/backward.

Gradient tolerance. The autocast bound of tests/scaled/test_bf16.py counts ``K = 57`` roundings of
``u = 2**-8`` along a path through the 2-layer test model (each matrix product rounds its two inputs
and its output). With bfloat16 weights every elementwise result is rounded too: per layer the two
RMSNorms (normalised value, times the weight: 2 each), the rotary embedding of q and k (product and
sum: 2), the softmax (1), the two residual sums (2), SiLU (1) and the gate x up product (1), i.e. 11,
and the final norm (2): ``K' = 57 + 2 * 11 + 2 = 81``. To first order the relative error of the
log-probabilities, the loss and the gradient is at most ``K' u`` (worst case, every rounding the same
way), the same argument as the autocast test's.
"""

from __future__ import annotations

import copy

import pytest
import torch

from polab.scaled.rollout import PrefixSharedLogprobs

from .test_bf16 import K, U, _batch, _tiny_llama

K_WEIGHTS = K + 2 * 11 + 2  # module docstring


def _grads(model, ids, att, P, G):
    model.zero_grad(set_to_none=True)
    logp = PrefixSharedLogprobs(model)(ids, att, P, G)
    adv = torch.linspace(-1, 1, logp.numel()).reshape(logp.shape)
    loss = -(adv * logp).mean()
    loss.backward()
    return logp.detach().float(), loss.detach().float(), torch.cat([p.grad.flatten().float() for p in model.parameters()])


def test_bf16_weight_copy_gradients_match_float32():
    model = _tiny_llama()
    ids, att, P, G = _batch()
    with torch.no_grad():
        zmax = float(model(input_ids=ids, attention_mask=att).logits.abs().max())
    lp32, loss32, g32 = _grads(model, ids, att, P, G)
    lp16, loss16, g16 = _grads(copy.deepcopy(model).to(torch.bfloat16), ids, att, P, G)
    assert zmax > 1.0
    assert 0 < float((lp16 - lp32).abs().max()) <= 2 * K_WEIGHTS * U * zmax
    assert abs(float(loss16 - loss32)) <= K_WEIGHTS * U * float(loss32.abs()) + 2 * K_WEIGHTS * U * zmax / lp32.numel() ** 0.5
    rel = float((g16 - g32).norm() / g32.norm())
    assert rel <= K_WEIGHTS * U, rel


def test_weights_mode_trainer_master_weights_copy_and_exact_resume(tmp_path):
    from polab.scaled.trainers.grpo import GRPOTrainer

    from .grpo_fixtures import DistinctCharsTask, tiny_config

    def make(out, **kw):
        return GRPOTrainer(tiny_config(out, dtype="bfloat16", bf16_mode="weights", **kw), task=DistinctCharsTask((1, 2)))

    tr = make(tmp_path / "straight", steps=2)
    before = [p.detach().clone() for p in tr.policy.parameters()]
    res = tr.train_step()
    assert res.metrics["grad_norm"] > 0
    assert all(p.dtype == torch.float32 for p in tr.policy.parameters())
    assert all(v.dtype == torch.float32 for s in tr.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim)
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.policy.parameters()))
    assert tr.sampling_model() is tr.rollout_policy
    for p16, p32 in zip(tr.rollout_policy.parameters(), tr.policy.parameters()):  # the copy is the rounded master after the step
        assert p16.dtype == torch.bfloat16 and p16.grad is None
        assert torch.equal(p16, p32.to(torch.bfloat16))
    tr.train_step()
    straight = {k: v.clone() for k, v in tr.policy.state_dict().items()}
    tr.close()
    make(tmp_path / "resumed", steps=2, stop_after=1).train()
    tr = make(tmp_path / "resumed", steps=2, resume=True)
    tr.train()
    for k, v in tr.policy.state_dict().items():
        assert torch.equal(v, straight[k]), k


def test_bf16_mode_is_validated(tmp_path):
    from .grpo_fixtures import tiny_config

    with pytest.raises(ValueError, match="bf16_mode weights needs --dtype bfloat16"):
        tiny_config(tmp_path, bf16_mode="weights").validate()
    with pytest.raises(ValueError, match="bf16_mode must be"):
        tiny_config(tmp_path, dtype="bfloat16", bf16_mode="pure").validate()
    with pytest.raises(ValueError, match="single process"):
        tiny_config(tmp_path, dtype="bfloat16", bf16_mode="weights").validate(2)
