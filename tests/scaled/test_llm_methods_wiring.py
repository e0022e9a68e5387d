"""Issue 8's remaining trainer wiring on the tiny random Llama (CPU smoke runs):

- PCPG in the GRPO trainer (``advantage="pcpg"``): edit-distance step rewards, the core PCPG loss's gradient;
- self-reference AI feedback in the preference trainer (``pair_labels="ai-feedback"``): the reference judges both orders;
- Direct Advantage Policy Optimization in the preference trainer (``scheme="offline-direct-advantage-po"``).

Each test recomputes the core function on the very tensors the trainer used. Tolerances: float64 paths 1e-10
relative; tensors that passed through float32 (log-probabilities, stored advantages) 1e-6 relative (STYLE.md float32).
"""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch

from polab.estimators.advantages import rloo_advantages
from polab.estimators.direct_advantage_po import critic_loss, direct_advantage_po_loss, step_advantages
from polab.estimators.policy_loss import ppo_clip_loss
from polab.estimators.preference_losses import PREFERENCE_SCHEMES, scheme_loss
from polab.estimators.reward_shaping import (edit_distance, order_swap_debias, pcpg_loss, preference_strength,
                                       pseudo_convolution_matrix)
from polab.scaled.tasks.arithmetic import AdditionProblem, ArithmeticTask
from polab.scaled.methods import ADVANTAGES
from polab.scaled.trainers.grpo import GRPOTrainer
from polab.scaled.methods.preference import PREFERENCE_LOSSES
from polab.scaled.trainers.preference import PreferenceTrainer, config_from_preset
from tests.scaled.grpo_fixtures import tiny_config


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; a busy 2-core machine is much slower with 2 intra-op threads
    yield
    torch.set_num_threads(n)


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def moved(model, before):
    return [k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])]


# -- PCPG in the GRPO trainer ---------------------------------------------------------------


def test_arithmetic_reference_is_the_sum():
    assert ArithmeticTask((2,)).reference(AdditionProblem(a=17, b=25, digits=2, source="add_2digit")) == "42"


@pytest.fixture(scope="module")
def pcpg_step(tmp_path_factory):
    tr = GRPOTrainer(tiny_config(tmp_path_factory.mktemp("pcpg"), advantage="pcpg", task="arithmetic", pcpg_kernel_size=3))
    before = params(tr.policy)
    res = tr.train_step()
    return tr, before, res


def test_pcpg_step_rewards_sum_to_one_minus_cer(pcpg_step):
    _, _, res = pcpg_step
    li = res.loss_inputs
    r, m = li["pcpg_step_rewards"], li["mask"].double()
    assert torch.equal(r * m, r)  # nothing outside the response
    for i, (text, ref) in enumerate(zip(li["pcpg_texts"], li["pcpg_references"])):
        # the token rewards telescope: their sum is 1 - ED(response, reference) / |reference| (float64 sums of multiples of 1/|ref|)
        assert float(r[i].sum()) == pytest.approx(1.0 - edit_distance(text, ref) / len(ref), rel=1e-10, abs=1e-12)
    assert res.metrics["pcpg_one_minus_cer"] == pytest.approx(float(r.sum(1).mean()), rel=1e-10)


def test_pcpg_baseline_is_the_per_position_leave_one_out_mean(pcpg_step):
    tr, _, res = pcpg_step
    li = res.loss_inputs
    m = li["mask"].double()
    G = tr.cfg.samples_per_prompt
    ret = pcpg_loss(torch.zeros_like(m), li["pcpg_step_rewards"], m, kernel=li["pcpg_kernel"]).returns
    b = li["pcpg_baseline"]
    for i in range(m.shape[0]):
        for t in range(m.shape[1]):
            if m[i, t] == 0:
                continue
            others = [j for j in range(i // G * G, (i // G + 1) * G) if j != i and m[j, t] > 0]
            want = float(ret[others, t].mean()) if others else float(ret[i, t])  # alone at t: advantage 0 (core rloo)
            assert float(b[i, t]) == pytest.approx(want, rel=1e-10, abs=1e-12)
    # and the trainer's baseline is the core RLOO of each position's returns
    sel = m[:, 0] > 0
    ids = torch.arange(m.shape[0] // G).repeat_interleave(G)
    torch.testing.assert_close(b[sel, 0], ret[sel, 0] - rloo_advantages(ret[sel, 0], ids[sel]).advantages, rtol=1e-10, atol=1e-12)


def test_pcpg_trainer_loss_has_the_core_pcpg_gradient(pcpg_step):
    tr, before, res = pcpg_step
    li = res.loss_inputs
    m = li["mask"]
    # the trainer's loss is the core PPO-clip loss on its tensors ...
    core = ppo_clip_loss(li["logp"], li["old_logp"], li["advantages"], m, clip_low=0.2, clip_high=0.2, aggregation="token-mean", max_length=6)
    assert torch.equal(core.loss, li["loss"])
    # ... whose gradient at ratio 1 is the core PCPG loss's gradient at the same log-probabilities
    lp1 = li["logp"].double().requires_grad_(True)
    ppo = ppo_clip_loss(lp1, lp1.detach(), li["advantages"].double(), m.double(), clip_low=0.2, clip_high=0.2, aggregation="token-mean")
    (g_trainer,) = torch.autograd.grad(ppo.loss, lp1)
    lp2 = li["logp"].double().requires_grad_(True)
    pc = pcpg_loss(lp2, li["pcpg_step_rewards"], m.double(), kernel=li["pcpg_kernel"], baseline=li["pcpg_baseline"])
    (g_core,) = torch.autograd.grad(pc.loss, lp2)
    scale = float(g_core.abs().max())
    torch.testing.assert_close(g_trainer, g_core, rtol=1e-6, atol=1e-6 * scale)  # advantages were stored in float32
    # closed form of the advantages: A = (T^T 1) * (G - b) row by row (T the kernel's banded Toeplitz matrix)
    for i in range(m.shape[0]):
        L = int(m[i].sum())
        T = pseudo_convolution_matrix(L, li["pcpg_kernel"])
        want = (T.T @ torch.ones(L, dtype=torch.float64)) * pc.returns[i, :L]
        torch.testing.assert_close(li["advantages"][i, :L].double(), want, rtol=1e-6, atol=1e-6 * float(want.abs().max()))
    assert li["advantages"].abs().sum() > 0
    assert len(moved(tr.policy, before)) == len(before)


def test_pcpg_config_errors(tmp_path):
    assert "pcpg" in ADVANTAGES
    with pytest.raises(ValueError, match="pcpg_kernel_size must be a positive odd"):
        tiny_config(tmp_path, advantage="pcpg", pcpg_kernel_size=4).validate()
    with pytest.raises(ValueError, match="task='arithmetic'"):
        tiny_config(tmp_path, advantage="pcpg", task="kk").validate()

    class NoReference:
        distributions = ["d"]

    with pytest.raises(ValueError, match="reference answer"):
        GRPOTrainer(tiny_config(tmp_path / "n", advantage="pcpg"), task=NoReference())


# -- self-reference AI feedback in the preference trainer -----------------------------------


def test_ai_feedback_labels_come_from_the_debiased_judge_and_feed_the_core_loss(tmp_path):
    cfg = config_from_preset("tiny", pair_labels="ai-feedback", out=str(tmp_path / "ai"), steps=1)
    tr = PreferenceTrainer(cfg)
    before = params(tr.policy)
    res = tr.train_step()
    li, j = res.loss_inputs, res.loss_inputs["judge"]
    K = 2 * 3  # 2 prompts x C(3, 2) pairs
    assert j["pairs"].shape == (K, 2) and j["ppl"].shape == (K, 2, 2)
    # the judge's first-listed probabilities come from the verdict perplexities; the core combines the two orders
    torch.testing.assert_close(j["p_first_ab"], j["ppl"][:, 0, 1] / j["ppl"][:, 0].sum(1), rtol=1e-12, atol=0)
    pref = order_swap_debias(j["p_first_ab"], j["p_first_ba"])
    assert torch.equal(pref.prob_a, j["prob_a"]) and torch.equal(pref.consistent, j["consistent"])
    s = preference_strength(j["ppl"][:, 0, 0], j["ppl"][:, 0, 1], ppl_prefer_a_swapped=j["ppl"][:, 1, 1], ppl_prefer_b_swapped=j["ppl"][:, 1, 0])
    assert torch.equal(s, j["strength"])
    # each kept pair becomes a two-row group: the judged winner (reward P(win) > 1/2) then the loser
    kept = j["kept"]
    win_a = (j["prob_a"] > 0.5)[kept]
    rows = li["group_ids"].numel()
    assert rows == 2 * int(kept.sum()) and res.metrics["judge_pairs"] == float(kept.sum())
    winners = torch.where(win_a, j["pairs"][kept, 0], j["pairs"][kept, 1])
    assert torch.equal(res.loss_inputs["judge"]["rows"][0::2], winners)
    assert bool((li["rewards"][0::2] > 0.5).all()) and torch.equal(li["rewards"][0::2] + li["rewards"][1::2], torch.ones(rows // 2))
    # the trainer's loss is the scheme's core loss on the judged pairs
    core = scheme_loss(PREFERENCE_SCHEMES[cfg.scheme], li["logp"], li["ref_logp"], li["rewards"], li["group_ids"], beta=cfg.beta,
                       label_smoothing=cfg.label_smoothing, pairing=cfg.pairing, **tr.scheme.method_loss_kwargs())
    assert float(core.loss) == pytest.approx(float(li["loss"]), rel=1e-6)  # float32
    assert res.metrics["num_pairs"] == float(kept.sum())
    assert len(moved(tr.policy, before)) == len(before)
    assert 0 < res.metrics["policy_reward"] <= 1  # the programmatic reward stays the evaluation metric
    tr.logger.close()


def test_ai_feedback_label_does_not_depend_on_which_answer_is_called_a(tmp_path):
    tr = PreferenceTrainer(config_from_preset("tiny", pair_labels="ai-feedback", samples_per_prompt=2, out=str(tmp_path / "j")))
    prompts = ["Describe a cat."]
    texts = ["A small furry animal that purrs.", "Cat."]
    rewards = torch.tensor([0.4, 0.8])
    fwd = tr.pair_labeller.judge_pairs(tr, prompts, texts, rewards)
    rev = tr.pair_labeller.judge_pairs(tr, prompts, texts[::-1], rewards.flip(0))
    # swapping A and B swaps the two orders the judge sees: P(A > B) -> 1 - P(A > B), strength -> -strength
    # (same sequences through the float32 judge, tolerance 1e-6)
    assert float(rev["prob_a"][0]) == pytest.approx(1.0 - float(fwd["prob_a"][0]), abs=1e-6)
    assert float(rev["strength"][0]) == pytest.approx(-float(fwd["strength"][0]), abs=1e-6)
    assert float(rev["position_bias"][0]) == pytest.approx(float(fwd["position_bias"][0]), abs=1e-6)
    tr.logger.close()


# -- Direct Advantage Policy Optimization in the preference trainer ------------------------------


def test_step_sums_partition_the_tokens(tmp_path):
    tr = PreferenceTrainer(config_from_preset("tiny", scheme="offline-direct-advantage-po", dapo_step_tokens=2, out=str(tmp_path / "s")))
    tok = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
    assert torch.equal(tr.scheme.step_sums(tok, mask), torch.tensor([[3.0, 7.0, 5.0], [3.0, 3.0, 0.0]]))
    step_mask, cols = tr.scheme.step_layout(mask)
    assert torch.equal(step_mask, torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])) and cols.tolist() == [0, 2, 4, 5]
    tr.logger.close()


@pytest.mark.parametrize("kw", [dict(), dict(dapo_critic_loss="bce", dapo_center_states=True)])
def test_direct_advantage_po_step_uses_the_core_critic_and_actor_losses(tmp_path, kw):
    cfg = config_from_preset("tiny", scheme="offline-direct-advantage-po", dapo_step_tokens=2, out=str(tmp_path / "d"), steps=1, **kw)
    tr = PreferenceTrainer(cfg)
    before, critic_before = params(tr.policy), params(tr.critic)
    res = tr.train_step()
    li = res.loss_inputs
    G = cfg.samples_per_prompt
    # critic targets: the prompt state's value is its group's mean reward
    t = li["critic_targets"]
    torch.testing.assert_close(t.value[:cfg.prompts_per_step], li["rewards"].double().view(-1, G).mean(1), rtol=1e-6, atol=0)
    assert float(li["value_loss"]) == pytest.approx(float(critic_loss(li["critic_pred"].double(), t.value, kind=tr.scheme.options.critic_loss,
                                                                      weights=t.num_rollouts.double())), rel=1e-10)
    # step advantages from the updated critic, the final state valued by the reward; the loss is the core objective
    adv = step_advantages(li["values"].double(), li["step_mask"].double(), final_values=li["rewards"].double())
    assert torch.equal(adv, li["advantages"])
    core = direct_advantage_po_loss(li["logp"], li["ref_logp"], li["advantages"].to(li["logp"].dtype), li["step_mask"], beta=cfg.beta,
                                    state_ids=li["state_ids"])
    assert torch.equal(core.loss, li["loss"])
    if tr.scheme.options.center_states:  # the first step of every response of a prompt is taken from the same state
        assert bool((li["state_ids"][:, 0].view(-1, G) == li["state_ids"][::G, 0, None]).all())
    assert len(moved(tr.policy, before)) == len(before)
    assert moved(tr.critic, critic_before)  # the critic took its own step
    tr.logger.close()


def test_direct_advantage_po_resumes_exactly(tmp_path):
    kw = dict(scheme="offline-direct-advantage-po", dapo_step_tokens=3, steps=2)
    full = PreferenceTrainer(config_from_preset("tiny", out=str(tmp_path / "f"), **kw))
    full.train()
    PreferenceTrainer(config_from_preset("tiny", out=str(tmp_path / "p"), stop_after=1, **kw)).train()
    res = PreferenceTrainer(config_from_preset("tiny", out=str(tmp_path / "p"), resume=True, **kw))
    res.train()
    for model_a, model_b in ((full.policy, res.policy), (full.critic, res.critic)):
        for (k, a), b in zip(model_a.named_parameters(), model_b.parameters()):
            assert torch.equal(a, b), k


def test_preference_config_errors(tmp_path):
    assert "offline-direct-advantage-po" in PREFERENCE_LOSSES
    with pytest.raises(ValueError, match="--pair-labels: unknown pair labeller 'judge'"):
        config_from_preset("tiny", pair_labels="judge", out=str(tmp_path / "a")).validate()
    with pytest.raises(ValueError, match="uses no pairs"):
        config_from_preset("tiny", pair_labels="ai-feedback", scheme="offline-direct-advantage-po", out=str(tmp_path / "b")).validate()
    with pytest.raises(ValueError, match="dapo_critic_loss"):
        config_from_preset("tiny", scheme="offline-direct-advantage-po", dapo_critic_loss="huber", out=str(tmp_path / "c")).validate()


# -- the CLI selects each method by name --------------------------------------------------------


@pytest.mark.parametrize("argv,metric", [
    (["grpo", "--advantage", "pcpg", "--pcpg-kernel-size", "3"], "pcpg_one_minus_cer"),
    (["preference", "--pair-labels", "ai-feedback"], "judge_consistency"),
    (["preference", "--scheme", "offline-direct-advantage-po", "--dapo-step-tokens", "2"], "value_loss"),
])
def test_cli_selects_each_method(tmp_path, argv, metric):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "polab.scaled.cli", "train", *argv, "--preset", "tiny", "--steps", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    row = list(csv.DictReader(open(out / "metrics.csv")))[0]
    assert row[metric] not in ("", "nan")


# -- one real step on the embedded SmolLM2-135M-Instruct ------------------------------------------


@pytest.mark.llm
def test_ai_feedback_one_real_step_on_smollm2(tmp_path):
    cfg = config_from_preset("cpu-demo", pair_labels="ai-feedback", out=str(tmp_path / "llm"), steps=1, prompts_per_step=1,
                             samples_per_prompt=3, max_new_tokens=8, tensorboard=False, progress=False)
    tr = PreferenceTrainer(cfg)
    w = tr.policy.get_input_embeddings().weight
    before = w.detach().clone()
    res = tr.train_step()
    li, j = res.loss_inputs, res.loss_inputs["judge"]
    assert torch.equal(order_swap_debias(j["p_first_ab"], j["p_first_ba"]).prob_a, j["prob_a"])
    assert 0.0 <= res.metrics["judge_consistency"] <= 1.0 and 0 < res.metrics["policy_reward"] <= 1
    if li["loss"] is not None:
        core = scheme_loss(cfg.scheme, li["logp"], li["ref_logp"], li["rewards"], li["group_ids"], beta=cfg.beta, **tr.scheme.method_loss_kwargs())
        assert float(core.loss) == pytest.approx(float(li["loss"]), rel=1e-6)
        assert not torch.equal(before, w.detach())
    tr.logger.close()


@pytest.mark.llm
def test_direct_advantage_po_one_real_step_on_smollm2(tmp_path):
    cfg = config_from_preset("cpu-demo", scheme="offline-direct-advantage-po", out=str(tmp_path / "llm"), steps=1, prompts_per_step=1,
                             samples_per_prompt=2, max_new_tokens=8, dapo_step_tokens=4, dapo_mc_samples=1, tensorboard=False,
                             progress=False)
    tr = PreferenceTrainer(cfg)
    w = tr.policy.get_input_embeddings().weight
    before = w.detach().clone()
    res = tr.train_step()
    li = res.loss_inputs
    core = direct_advantage_po_loss(li["logp"], li["ref_logp"], li["advantages"].to(li["logp"].dtype), li["step_mask"], beta=cfg.beta)
    assert torch.equal(core.loss, li["loss"])
    assert not torch.equal(before, w.detach()) and res.metrics["value_loss"] >= 0
    tr.logger.close()
