"""T-PPO's windowed (successive) generation: ``--rollout-strategy windowed`` on the tiny model (CPU, about 1 s per step)."""

import pytest
import torch

from polab.scaled.models import load_model
from polab.scaled.rollout import encode_prompts, sample_rollouts
from polab.scaled.rollout_windowed import continue_sequences
from polab.scaled.trainers.grpo import GRPOTrainer
from tests.scaled.grpo_fixtures import DistinctCharsTask, tiny_config

# A random tiny Llama (vocabulary 49,152) almost never draws EOS. This logit offset gives EOS a probability near
# e^9 / (e^9 + 49152) ~ 0.14 per token, so that windows end some responses and not others.
EOS_LOGIT_OFFSET = 9.0


def eos_bias(model, eos: int):
    def hook(mod, args, out):
        out.logits[..., eos] += EOS_LOGIT_OFFSET
        return out

    return model.register_forward_hook(hook)


def make(tmp_path, **kw):
    base = dict(advantage="t-ppo", rollout_strategy="windowed", methods={"windowed": {"window_tokens": 2}}, max_new_tokens=6, steps=4)
    base.update(kw)
    tr = GRPOTrainer(tiny_config(tmp_path, **base), task=DistinctCharsTask((1, 2)))
    eos_bias(tr.policy, tr.tokenizer.eos_token_id)
    return tr


def test_windows_continue_exactly_where_one_decode_would_go():
    """Three windows of 2 tokens, re-encoding prompt + response so far, draw the same 6 tokens as one uninterrupted decode
    with the same generator (no EOS without the bias: every row stays live, so both paths make the same draws)."""
    lm = load_model("tiny-llama", seed=0)
    model, tok = lm.model, lm.tokenizer
    prompts = ["What is 1 + 2?", "Compute 13 + 4 please."]
    one = sample_rollouts(model, tok, prompts, samples_per_prompt=1, max_new_tokens=6, generator=torch.Generator().manual_seed(5))
    want = one.input_ids[:, one.prompt_length:]
    assert bool(one.truncated.all())  # no EOS: the premise of the comparison
    ids, mask = encode_prompts(tok, prompts)
    ctx = [ids[i][mask[i].bool()] for i in range(2)]
    gen, got = torch.Generator().manual_seed(5), [[], []]
    for _ in range(3):
        new = continue_sequences(model, [torch.cat([c, torch.tensor(g, dtype=torch.long)]) for c, g in zip(ctx, got)], [2, 2],
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, generator=gen)
        for g, t in zip(got, new):
            g.extend(t)
    assert torch.equal(torch.tensor(got), want)


def test_continue_sequences_checks_its_input():
    lm = load_model("tiny-llama", seed=0)
    with pytest.raises(ValueError, match="budgets"):
        continue_sequences(lm.model, [torch.tensor([1, 2])], [0], eos_token_id=2, pad_token_id=0, generator=torch.Generator())


def test_windowed_steps_train_on_window_tokens_and_continue_unfinished(tmp_path):
    tr = make(tmp_path)
    strat = tr.methods["rollout_strategy"]
    seen_unfinished = seen_finished = False
    prev = {}
    for _ in range(4):
        res = tr.train_step()
        li, b = res.loss_inputs, res.loss_inputs["batch"]
        rm = b.response_mask.float()
        pos = torch.arange(rm.shape[1])[None, :]
        want = rm * (pos >= b.window_start[:, None]) * b.trained[:, None]
        assert torch.equal(li["mask"], want)  # the policy loss sees this window's tokens only
        assert torch.equal(li["value_mask"], rm * (b.truncated == 0)[:, None] * b.trained[:, None])
        assert float(want.sum()) == res.metrics["window_tokens_generated"]  # the tokens generated in this window
        assert bool((rm.sum(1) - b.window_start <= 2).all())  # at most window_tokens new tokens per row
        seen_unfinished |= bool(b.truncated.any())
        seen_finished |= bool((~b.truncated).any())
        # an unfinished response continues from where it stopped: its earlier tokens are a prefix of its tokens now
        now = {tuple(g["drawn"]): g["tokens"] for g in strat.state_dict()["pool"]}
        for key, rows in prev.items():
            if key in now:
                assert all(n[:len(p)] == p for p, n in zip(rows, now[key]))
        prev = now
    assert seen_unfinished and seen_finished


def test_windowed_run_resumes_exactly(tmp_path):
    full = make(tmp_path / "f")
    full.train()
    part = make(tmp_path / "p", stop_after=2)
    part.train()
    assert part.methods["rollout_strategy"].pool  # stopped mid-window: responses in flight
    res = make(tmp_path / "p", resume=True)
    res.train()
    for (k, a), b in zip(full.policy.named_parameters(), res.policy.parameters()):
        assert torch.equal(a, b), k
    for (k, a), b in zip(full.critic.named_parameters(), res.critic.parameters()):
        assert torch.equal(a, b), k
    assert full.methods["rollout_strategy"].state_dict() == res.methods["rollout_strategy"].state_dict()


def test_window_tokens_is_checked(tmp_path):
    with pytest.raises(ValueError, match="windowed.window_tokens must be an integer >= 1"):
        tiny_config(tmp_path, advantage="t-ppo", rollout_strategy="windowed", methods={"windowed": {"window_tokens": 0}}).validate()


def test_windowed_needs_a_window_aware_advantage(tmp_path):
    with pytest.raises(ValueError, match="--advantage grpo would retrain"):
        tiny_config(tmp_path, advantage="grpo", rollout_strategy="windowed").validate()
    with pytest.raises(ValueError, match="sample-filter none only"):
        tiny_config(tmp_path, advantage="t-ppo", rollout_strategy="windowed", sample_filter="pf-ppo-best-worst").validate()
    tiny_config(tmp_path, advantage="t-ppo", rollout_strategy="windowed").validate()  # fine
