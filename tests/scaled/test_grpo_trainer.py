"""GRPO trainer on a tiny random Llama: composition of the core, exact resume, micro-batching."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch

from polab.estimators.policy_loss import ppo_clip_loss
from polab.scaled.rollout import PrefixSharedLogprobs, _top_p_filter, sample_rollouts, token_logprobs
from polab.scaled.trainers.grpo import GRPOTrainer
from tests.scaled.grpo_fixtures import DistinctCharsTask, tiny_config


def make(tmp_path, **kw):
    return GRPOTrainer(tiny_config(tmp_path, **kw), task=DistinctCharsTask((1, 2)))


def test_step_changes_parameters_and_loss_is_the_core_loss(tmp_path):
    tr = make(tmp_path)
    before = {k: v.detach().clone() for k, v in tr.policy.named_parameters()}
    res = tr.train_step()
    li = res.loss_inputs
    assert li["advantages"].abs().sum() > 0, "test task must give non-zero advantages"
    # the trainer's loss is exactly the core function on the same tensors
    core = ppo_clip_loss(li["logp"], li["old_logp"], li["advantages"], li["mask"], clip_low=0.2, clip_high=0.2,
                         aggregation="token-mean", max_length=6)
    assert torch.equal(core.loss, li["loss"])
    assert res.metrics["loss"] == pytest.approx(float(core.loss), rel=1e-12)
    unchanged = [k for k, v in tr.policy.named_parameters() if torch.equal(v, before[k])]
    assert unchanged == [], f"parameters not updated: {unchanged}"
    assert tr.scheduler.num_updates == 1 and tr.scheduler.counts.sum() == 8


def test_shared_prefix_logprobs_match_full_forward_with_gradients():
    from polab.scaled.models import load_model

    m = load_model("tiny-llama", seed=3)
    g = torch.Generator().manual_seed(0)
    b = sample_rollouts(m.model, m.tokenizer, ["Compute 1 + 2.", "A longer prompt, so the batch is left-padded."],
                        samples_per_prompt=3, max_new_tokens=7, generator=g)
    mask = b.response_mask.float()
    full = token_logprobs(m.model, b.input_ids, b.attention_mask, b.prompt_length)
    (full * mask).sum().backward()
    g_full = [p.grad.clone() for p in m.model.parameters()]
    m.model.zero_grad()
    shared = PrefixSharedLogprobs(m.model)(b.input_ids, b.attention_mask, b.prompt_length, 3)
    (shared * mask).sum().backward()
    # float32: the two paths sum attention/matmul terms in different orders; values of size ~10
    # agree to a few ulps times the reduction length, well inside 1e-4 absolute.
    torch.testing.assert_close(shared[mask.bool()], full[mask.bool()], rtol=0, atol=1e-4)
    for a, p in zip(g_full, m.model.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-3, atol=1e-5)


def test_sampler_respects_generator_and_masks_after_eos():
    from polab.scaled.models import load_model

    m = load_model("tiny-llama", seed=1)
    kw = dict(samples_per_prompt=2, max_new_tokens=5)
    a = sample_rollouts(m.model, m.tokenizer, ["hi"], generator=torch.Generator().manual_seed(7), **kw)
    b = sample_rollouts(m.model, m.tokenizer, ["hi"], generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a.input_ids, b.input_ids)
    resp = a.input_ids[:, a.prompt_length:]
    assert torch.all(resp[a.response_mask == 0] == m.tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="generator"):
        sample_rollouts(m.model, m.tokenizer, ["hi"], generator=None, **kw)


def test_sampler_records_its_own_logprobs_equal_to_a_full_forward():
    """``sample_logp`` (from the decoder's logits) = token_logprobs of the finished batch, at the sampling temperature and at
    another one (a greedy rollout still reports the policy's log-probabilities); zero off the response mask."""
    from polab.scaled.models import load_model

    m = load_model("tiny-llama", seed=3)
    prompts = ["Compute 1 + 2.", "A longer prompt, so the batch is left-padded."]
    for t_sample, t_lp in ((1.0, 1.0), (0.7, 1.3), (1e-4, 1.0)):
        b = sample_rollouts(m.model, m.tokenizer, prompts, samples_per_prompt=3, max_new_tokens=7,
                            generator=torch.Generator().manual_seed(0), temperature=t_sample, logprob_temperature=t_lp)
        plain = sample_rollouts(m.model, m.tokenizer, prompts, samples_per_prompt=3, max_new_tokens=7,
                                generator=torch.Generator().manual_seed(0), temperature=t_sample)
        assert torch.equal(b.input_ids, plain.input_ids) and plain.sample_logp is None  # recording does not change the draw
        mask = b.response_mask.bool()
        assert b.sample_logp.shape == mask.shape and torch.all(b.sample_logp[~mask] == 0) and torch.all(b.sample_logp[mask] < 0)
        with torch.no_grad():
            full = token_logprobs(m.model, b.input_ids, b.attention_mask, b.prompt_length, temperature=t_lp)
        # float32, the KV-cache decode and the full forward add the same terms in different orders (values ~1-10):
        # a few ulps times the reduction length, inside 1e-4 absolute (as the shared-prefix test above)
        torch.testing.assert_close(b.sample_logp[mask], full[mask], rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="logprob_temperature"):
        sample_rollouts(m.model, m.tokenizer, ["hi"], samples_per_prompt=1, max_new_tokens=2, generator=torch.Generator(),
                        logprob_temperature=0.0)


@pytest.mark.slow  # inductor compiles the tiny model's forward and backward kernels (20-60 s on 2 CPU cores)
def test_compile_gives_the_eager_logprobs_and_gradients(tmp_path):
    """``--compile``: the compiled log-probability module is the eager one up to float32 reordering inside fused kernels."""
    a, b = make(tmp_path / "a"), make(tmp_path / "b", compile=True)
    assert b.model is not b.logprob_module and a.model is a.logprob_module
    g = torch.Generator().manual_seed(0)
    r = sample_rollouts(a.policy, a.tokenizer, ["Compute 1 + 2.", "A longer prompt, so the batch is left-padded."],
                        samples_per_prompt=4, max_new_tokens=6, generator=g)
    mask = r.response_mask.float()
    grads = []
    for tr in (a, b):
        tr.policy.zero_grad()
        lp = tr.model(r.input_ids, r.attention_mask, r.prompt_length, 4, 1.0)
        (lp * mask).sum().backward()
        grads.append((lp.detach(), [p.grad.clone() for p in tr.policy.parameters()]))
        tr.policy.zero_grad()
    # float32 values of size ~1-10 summed in another order inside fused kernels: a few ulps x reduction length, < 1e-4
    torch.testing.assert_close(grads[1][0][mask.bool()], grads[0][0][mask.bool()], rtol=0, atol=1e-4)
    for ga, gb in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(gb, ga, rtol=1e-3, atol=1e-5)
    # (a whole train_step with micro-batches would compile again for each new shape: a minute more, same check)
    with pytest.raises(ValueError, match="compile"):
        tiny_config(tmp_path / "c", compile=True).validate(world_size=2)


def test_top_p_filter_hand_example():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    # nucleus 0.7: 0.5 alone is below 0.7, so 0.5 and 0.3 are kept -> (0.625, 0.375, 0, 0)
    torch.testing.assert_close(_top_p_filter(p, 0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(_top_p_filter(p, 1.0), p)


def test_micro_batches_reproduce_full_batch_update(tmp_path):
    a = make(tmp_path / "a")
    b = make(tmp_path / "b", micro_batch_size=4)
    a.train_step()
    b.train_step()
    # same rollouts, loss split into two groups weighted by aggregation_weight: the accumulated gradients are equal up to
    # float32 summation order. Parameters are not compared: Adam's first step is about lr * sign(g), so an entry at float-noise
    # level can flip sign (measured: 1.4e-6 apart on one thread). Tolerance: u = 2^-24 ~ 6e-8; each entry sums O(10^2)
    # products as large as the largest entry, and the group advantages sum to zero, so the entries are differences of much
    # larger terms: an error of ~n u = 1e-5 of the largest entry is possible (measured up to 4.5e-7 with 1 thread, < 1e-7 with 2).
    for (k, pa), pb in zip(a.policy.named_parameters(), b.policy.parameters()):
        scale = float(pa.grad.abs().max())
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-5 * max(scale, 1e-12), msg=k)


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in csv.DictReader(f)]


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    full = make(tmp_path / "full", steps=3)
    full.train()
    part = make(tmp_path / "part", steps=3, stop_after=2)
    part.train()
    assert part.step == 2
    resumed = make(tmp_path / "part", steps=3, resume=True)
    assert resumed.step == 2
    resumed.train()
    for (k, pa), pb in zip(full.policy.named_parameters(), resumed.policy.parameters()):
        assert torch.equal(pa, pb), k
    assert full.scheduler.state_dict() == resumed.scheduler.state_dict()
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert _rows(tmp_path / "full" / "metrics.csv") == _rows(tmp_path / "part" / "metrics.csv")
    assert (tmp_path / "part" / "figures" / "curriculum.png").stat().st_size > 1000


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path):
    make(tmp_path / "r", steps=1).train()
    with pytest.raises(ValueError, match="--resume"):
        make(tmp_path / "r", steps=1)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        make(tmp_path / "empty", resume=True)


def test_bad_config_is_reported_in_one_message(tmp_path):
    with pytest.raises(ValueError) as e:
        make(tmp_path, samples_per_prompt=1, micro_batch_size=3, curriculum="thompson")
    msg = str(e.value)
    assert "samples_per_prompt" in msg and "curriculum" in msg


def test_hf_generate_engine_and_cli(tmp_path):
    # the transformers-generate path and the command line, with the real (constant) arithmetic reward
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "polab.scaled.cli", "train", "grpo", "--preset", "tiny", "--rollout-engine", "hf",
                        "--curriculum", "uniform", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(x["step"]) for x in rows] == [1, 2]
    assert float(rows[-1]["prob:add_1digit"]) == 0.5  # uniform curriculum
    r2 = subprocess.run([sys.executable, "-m", "polab.scaled.cli", "train", "grpo", "--preset", "tiny", "--out", str(out)],
                        capture_output=True, text=True, timeout=300)
    assert r2.returncode == 2 and "--resume" in r2.stderr


@pytest.mark.parametrize("mode,responses", [("plain", 8), ("ppo", 16)])
def test_ddp_two_processes_keep_identical_state(tmp_path, mode, responses):
    port = {"plain": "29533", "ppo": "29534"}[mode]
    worker = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
              "-m", "tests.scaled.ddp_worker", str(tmp_path), mode]
    r = subprocess.run(worker, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    s1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert s0["scheduler"] == s1["scheduler"]
    assert s0["scheduler"]["counts"] != [0, 0]  # statistics from both ranks were gathered
    assert sum(s0["scheduler"]["counts"]) == 2 * responses  # 2 steps x (prompts x 4 samples), both ranks' responses
    for k in s0["params"]:
        assert torch.equal(s0["params"][k], s1["params"][k]), k
    assert any(not torch.equal(s0["params"][k], s0["init"][k]) for k in s0["params"])
