"""PPO epochs and mini-batches in the GRPO trainer (verl's ppo_epochs / ppo_mini_batch_size) on the tiny random Llama."""

import csv

import pytest
import torch

from polab.estimators.policy_loss import ppo_clip_loss
from polab.scaled.rollout import token_logprobs
from polab.scaled.trainers.grpo import GRPOTrainer
from tests.scaled.grpo_fixtures import DistinctCharsTask, tiny_config


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(tmp_path, **kw):
    return GRPOTrainer(tiny_config(tmp_path, **kw), task=DistinctCharsTask((1, 2)))


def _snapshot_before_each_step(tr):
    """Record (parameters, gradients) right before every optimizer step."""
    records = []
    step = tr.optimizer.step

    def wrapped(*a, **k):
        records.append(({n: p.detach().clone() for n, p in tr.policy.named_parameters()},
                        {n: p.grad.detach().clone() for n, p in tr.policy.named_parameters()}))
        return step(*a, **k)

    tr.optimizer.step = wrapped
    return records


def test_one_epoch_one_minibatch_is_on_policy_and_equals_the_default(tmp_path):
    a = make(tmp_path / "a")
    b = make(tmp_path / "b", ppo_epochs=1, mini_batch_size=8)  # the whole batch (2 prompts x 4) as one mini-batch
    ra, rb = a.train_step(), b.train_step()
    for (k, pa), pb in zip(a.policy.named_parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb), k  # bitwise: the same single update
    assert ra.metrics["ratio_mean"] == 1.0 and ra.metrics["clip_fraction"] == 0.0 and ra.metrics["ppo_kl"] == 0.0
    assert ra.metrics["num_updates"] == 1.0
    assert torch.equal(ra.loss_inputs["logp"], ra.loss_inputs["old_logp"])  # old = logp.detach(): ratio identically 1


def test_more_epochs_move_the_ratio_and_the_loss_is_the_core_loss(tmp_path):
    tr = make(tmp_path, ppo_epochs=3, lr=1e-2, max_grad_norm=1e9, shared_prefix_logprobs=False)
    records = _snapshot_before_each_step(tr)
    res = tr.train_step()
    li, m = res.loss_inputs, res.metrics
    assert m["num_updates"] == 3.0 and len(records) == 3
    ratio = torch.exp(li["logp"] - li["old_logp"])[li["mask"] > 0]
    assert float((ratio - 1).abs().max()) > 1e-2  # the last epoch's policy is not the sampling policy
    # the last pass's loss is the core loss on its tensors
    core = ppo_clip_loss(li["logp"], li["old_logp"], li["advantages"], li["mask"], clip_low=0.2, clip_high=0.2, aggregation="token-mean", max_length=6)
    assert torch.equal(core.loss, li["loss"])
    assert core.clip_fraction > 0
    # clip fractions over all passes: low + high = total (each token clipped on one side); reported separately, as verl
    assert m["clip_fraction"] > 0
    # (the core counts each fraction in float32: they add up to float32 round-off, ~1e-7 relative)
    assert m["clip_fraction_low"] + m["clip_fraction_high"] == pytest.approx(m["clip_fraction"], rel=1e-6)
    assert m["ratio_mean"] != 1.0 and m["ppo_kl"] != 0.0


def test_clipping_changes_the_gradient_as_the_core_loss_says(tmp_path):
    tr = make(tmp_path, ppo_epochs=2, lr=1e-2, max_grad_norm=1e9, shared_prefix_logprobs=False)
    records = _snapshot_before_each_step(tr)
    res = tr.train_step()
    li = res.loss_inputs
    params, grads = records[-1]  # the second epoch: its forward parameters and the gradient the trainer applied
    assert res.metrics["clip_fraction"] > 0

    def param_grad(clip_low, clip_high):
        model = tr.policy
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(params[n])
        model.zero_grad(set_to_none=True)
        batch = li["batch"]
        logp = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.prompt_length)
        loss = ppo_clip_loss(logp, li["old_logp"], li["advantages"], li["mask"], clip_low=clip_low, clip_high=clip_high, aggregation="token-mean",
                             max_length=6).loss
        loss.backward()
        return {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    clipped, unclipped = param_grad(0.2, 0.2), param_grad(0.999999, 1e6)  # the latter clips no ratio in (1e-6, 1e6)
    for n in grads:
        # float32, same forward path and reduction order: equal up to round-off (STYLE.md float32 tolerance, atol relative to the entry scale)
        scale = float(grads[n].abs().max())
        torch.testing.assert_close(grads[n], clipped[n], rtol=1e-5, atol=1e-6 * max(scale, 1e-12), msg=n)
    # and the clip matters: without it the gradient is a different one
    diff = max(float((clipped[n] - unclipped[n]).abs().max()) for n in grads)
    assert diff > 1e-3 * max(float(g.abs().max()) for g in clipped.values())


def test_minibatches_are_optimizer_steps_and_microbatches_reproduce_each(tmp_path):
    # 4 prompts x 4 samples = 16 responses; mini-batches of 8 (2 optimizer steps an epoch); micro-batches of 4 inside them
    kw = dict(prompts_per_step=4, ppo_epochs=2, mini_batch_size=8, max_grad_norm=1e9)
    a, b = make(tmp_path / "a", **kw), make(tmp_path / "b", micro_batch_size=4, **kw)
    ra, rb = _snapshot_before_each_step(a), _snapshot_before_each_step(b)
    ma, mb = a.train_step().metrics, b.train_step().metrics
    assert ma["num_updates"] == 4.0 and len(ra) == len(rb) == 4
    # the first optimizer step of each: same parameters, gradient accumulated over two micro-batches equals the whole
    # mini-batch's (float32 summation order; STYLE.md tolerance, atol relative to the largest entry)
    for n, g in ra[0][1].items():
        scale = float(g.abs().max())
        torch.testing.assert_close(rb[0][1][n], g, rtol=1e-5, atol=1e-6 * max(scale, 1e-12), msg=n)
    assert ma["loss"] == pytest.approx(mb["loss"], rel=1e-5)


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in csv.DictReader(f)]


def test_resume_stays_exact_with_epochs_and_minibatches(tmp_path):
    kw = dict(steps=3, ppo_epochs=2, mini_batch_size=4)
    full = make(tmp_path / "full", **kw)
    full.train()
    make(tmp_path / "part", stop_after=2, **kw).train()
    resumed = make(tmp_path / "part", resume=True, **kw)
    resumed.train()
    for (k, pa), pb in zip(full.policy.named_parameters(), resumed.policy.parameters()):
        assert torch.equal(pa, pb), k
    assert _rows(tmp_path / "full" / "metrics.csv") == _rows(tmp_path / "part" / "metrics.csv")


def test_bad_epoch_and_minibatch_options_are_named(tmp_path):
    with pytest.raises(ValueError) as e:
        tiny_config(tmp_path, ppo_epochs=0, mini_batch_size=6).validate()
    assert "ppo_epochs" in str(e.value) and "mini_batch_size (6)" in str(e.value)
