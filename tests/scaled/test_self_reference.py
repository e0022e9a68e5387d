"""Self-reference AI feedback (``pair_labels="self-reference"``) in the preference trainer, and the trainer's GEPO defaults.

The tiny random Llama judges (deterministic: every draw is seeded from (seed, step)). The tests rebuild what the
labeller must have done without its code: the exact critique request (the judge's own answer in it, both orders),
the verdict log-probabilities by a plain full forward pass of the frozen reference (no prefix sharing, no padding),
the pooled semantic perplexities by a loop, and then the core functions on them.

Tolerances: log-probabilities from two float32 forward passes of different batch layouts (left-padded prefix-shared
KV cache versus one unpadded row) agree to float32 rounding of logits of magnitude ~10, 1e-4 absolute; everything
after them is float64 (1e-10 relative) applied to those float32 numbers, so the labels' probabilities carry the same
1e-4-scale tolerance.
"""

from __future__ import annotations

import pytest
import torch

from polab.estimators.group_preference import GEPO_PAPER
from polab.estimators.preference_losses import PREFERENCE_SCHEMES, scheme_loss
from polab.estimators.reward_shaping import order_swap_debias, preference_strength
from polab.scaled.methods import PAIR_LABELLERS
from polab.scaled.methods.preference import JUDGE_PRINCIPLE, JUDGE_VERDICTS, PREFERENCE_LOSSES
from polab.scaled.methods.self_reference import SelfReferenceLabels
from polab.scaled.trainers.preference import PreferenceTrainer, config_from_preset

LP_ATOL = 1e-4  # module docstring


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _trainer(tmp_path, **opts):
    o = dict(self_answer_tokens=4, critique_tokens=3, num_self_answers=2)
    o.update({k: v for k, v in opts.items() if k != "samples_per_prompt"})
    cfg = config_from_preset("tiny", pair_labels="self-reference", samples_per_prompt=opts.pop("samples_per_prompt", 3), steps=1, out=str(tmp_path),
                             methods={"self-reference": o})
    return PreferenceTrainer(cfg)


def _plain_verdict_logp(tr, context: str, phrase: str) -> torch.Tensor:
    """Log-probabilities of ``phrase``'s tokens after ``context``: one unpadded row, one full forward pass."""
    tok = tr.tokenizer
    c = tok(context, add_special_tokens=False)["input_ids"]
    v = tok(phrase, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([c + v])
    with torch.no_grad():
        logits = tr.ref(input_ids=ids, logits_to_keep=len(v) + 1).logits[0, :-1].double()  # positions predicting v
    lsm = torch.log_softmax(logits, -1)
    return torch.stack([lsm[t, v[t]] for t in range(len(v))])


def test_self_reference_is_registered_beside_the_plain_judge():
    assert {"ai-feedback", "self-reference"} <= set(PAIR_LABELLERS.names())
    assert PAIR_LABELLERS.get("self-reference") is SelfReferenceLabels and SelfReferenceLabels.judges_samples
    assert SelfReferenceLabels().state_dict() == {}  # frozen judge, seeded draws: nothing to checkpoint


def test_prompts_verdicts_and_labels_are_the_core_functions_of_the_judges_logprobs(tmp_path):
    tr = _trainer(tmp_path / "run", samples_per_prompt=2)
    drawn = tr.draw(1)  # the seeded draw the step will label (on-policy: drawn before the update)
    res = tr.train_step()
    li, j = res.loss_inputs, res.loss_inputs["judge"]
    G, k, P = 2, 2, 2  # samples per prompt, self-answers, prompts (tiny preset)
    pairs = [(g * G + a, g * G + b) for g in range(P) for a in range(G) for b in range(a + 1, G)]
    K = len(pairs)
    assert j["pairs"].tolist() == [list(p) for p in pairs]
    texts, prompts = drawn.batch.texts, drawn.prompts
    answers = j["self_answers"]
    assert len(answers) == P and all(len(a) == k for a in answers)
    # 1. the critique request, exactly: principle, instruction, the judge's own answer, the two candidates; both orders
    n_ctx = K * 2 * k
    assert len(j["critique_prompts"]) == len(j["contexts"]) == len(j["critiques"]) == n_ctx
    c = 0
    for a, b in pairs:
        for first, second in ((a, b), (b, a)):
            for ref in answers[a // G]:
                expected = (f"{JUDGE_PRINCIPLE}\n\nInstruction: {prompts[a // G]}\n\nYour own answer: {ref}\n\n"
                            f"Answer A: {texts[first]}\n\nAnswer B: {texts[second]}\n\n"
                            "Using your own answer as the reference, critique Answer A and Answer B, then say which answer is better, A or B.")
                assert j["critique_prompts"][c] == expected
                assert f"Your own answer: {ref}\n" in j["contexts"][c]
                # 2. the verdict is read after the chat-formatted request and the judge's own critique
                head = tr.tokenizer.apply_chat_template([{"role": "user", "content": expected}], add_generation_prompt=True, tokenize=False)
                assert j["contexts"][c] == head + j["critiques"][c].strip() + "\n"
                c += 1
    # the self-answers are the judge's (seeded) samples: drawing them again gives the same texts
    assert tr.pair_labeller.self_answers(tr, prompts, step=1) == answers
    # 3. verdict log-probabilities, recomputed by a plain forward pass
    phrases = [ph for group in JUDGE_VERDICTS for ph in group]
    verdict_of = [v for v, group in enumerate(JUDGE_VERDICTS) for _ in group]
    nll = torch.zeros(K, 2, 2, dtype=torch.float64)
    count = torch.zeros(K, 2, 2, dtype=torch.float64)
    for ci, ctx in enumerate(j["contexts"]):
        pair, order = ci // (2 * k), (ci // k) % 2
        for pi, ph in enumerate(phrases):
            lp = _plain_verdict_logp(tr, ctx, ph)
            row = ci * len(phrases) + pi
            got = j["verdict_logp"][row][j["verdict_mask"][row].bool()].double()
            torch.testing.assert_close(got, lp, atol=LP_ATOL, rtol=0)
            nll[pair, order, verdict_of[pi]] += -lp.mean()  # semantic perplexity: mean NLL pooled over paraphrases and self-answers
            count[pair, order, verdict_of[pi]] += 1
    assert bool((count == k * 2).all())  # 2 paraphrases x k self-answers per (pair, order, verdict)
    ppl = torch.exp(nll / count)
    torch.testing.assert_close(j["ppl"], ppl, atol=0, rtol=LP_ATOL)
    p_first = ppl[:, :, 1] / ppl.sum(-1)
    # 4. labels: the core functions on the judge's perplexities (both orders)
    pref = order_swap_debias(p_first[:, 0], p_first[:, 1])
    s = preference_strength(ppl[:, 0, 0], ppl[:, 0, 1], ppl_prefer_a_swapped=ppl[:, 1, 1], ppl_prefer_b_swapped=ppl[:, 1, 0])
    torch.testing.assert_close(j["prob_a"], pref.prob_a, atol=LP_ATOL, rtol=0)
    torch.testing.assert_close(j["strength"], s, atol=LP_ATOL, rtol=0)
    decided = (pref.prob_a - 0.5).abs() > 10 * LP_ATOL  # pairs whose winner the tolerance cannot flip
    assert bool(((j["prob_a"] > 0.5) == (pref.prob_a > 0.5))[decided].all())
    # and exactly the core on the labeller's own stored perplexities
    assert torch.equal(order_swap_debias(j["p_first_ab"], j["p_first_ba"]).prob_a, j["prob_a"])
    # 5. winners first, rewards (P(win), 1 - P(win)), and the trainer's loss is the scheme's core loss
    kept = j["kept"]
    winners = torch.where(j["prob_a"] > 0.5, j["pairs"][:, 0], j["pairs"][:, 1])[kept]
    assert torch.equal(j["rows"][0::2], winners) and res.metrics["judge_pairs"] == float(kept.sum())
    assert torch.equal(li["rewards"][0::2], torch.maximum(j["prob_a"], 1 - j["prob_a"])[kept].float())
    cfg = tr.cfg
    core = scheme_loss(PREFERENCE_SCHEMES[cfg.scheme], li["logp"], li["ref_logp"], li["rewards"], li["group_ids"], beta=cfg.beta,
                       label_smoothing=cfg.label_smoothing, pairing=cfg.pairing, **tr.scheme.method_loss_kwargs())
    assert float(core.loss) == pytest.approx(float(li["loss"]), rel=1e-6)  # float32
    # agreement with the programmatic reward, on the pairs whose rewards differ
    r = torch.tensor([tr.reward_of(t, drawn.items[i // G]) for i, t in enumerate(texts)], dtype=torch.float64)
    A, B = j["pairs"][:, 0], j["pairs"][:, 1]
    d = r[A] != r[B]
    if bool(d.any()):
        assert res.metrics["judge_reward_agreement"] == pytest.approx(float(((r[A] > r[B]) == (j["prob_a"] > 0.5))[d].double().mean()))
    tr.logger.close()


def test_no_generated_critique_and_determinism(tmp_path):
    tr = _trainer(tmp_path / "c0", critique_tokens=0, num_self_answers=1)
    prompts, texts, rewards = ["Describe a cat."], ["A small furry animal.", "Cat.", "Dog."], torch.tensor([0.4, 0.8, 0.1])
    one = tr.pair_labeller.judge_pairs(tr, prompts, texts, rewards, step=3)
    two = tr.pair_labeller.judge_pairs(tr, prompts, texts, rewards, step=3)
    assert one["critiques"] == [""] * 6 and torch.equal(one["prob_a"], two["prob_a"]) and one["self_answers"] == two["self_answers"]
    head = tr.tokenizer.apply_chat_template([{"role": "user", "content": one["critique_prompts"][0]}], add_generation_prompt=True, tokenize=False)
    assert one["contexts"][0] == head
    # the judge's own answer conditions the verdict: another step draws another answer and changes the judgement
    other = tr.pair_labeller.judge_pairs(tr, prompts, texts, rewards, step=4)
    assert other["self_answers"] != one["self_answers"] and not torch.equal(other["ppl"], one["ppl"])
    tr.logger.close()


@pytest.mark.parametrize("opts,match", [
    ({"critique_template": "A: {first} B: {second}"}, "include \\['first', 'reference', 'second'\\]"),
    ({"critique_template": "{reference} {first} {second} {bogus}"}, "critique_template must use only"),
    ({"answer_template": "{instruction"}, "answer_template is not a valid format string"),
    ({"num_self_answers": 0}, "num_self_answers must be an integer >= 1"),
    ({"critique_tokens": -1}, "critique_tokens must be an integer >= 0"),
    ({"judge_temperature": 0.0}, "judge_temperature must be a finite number > 0"),
])
def test_options_are_validated(tmp_path, opts, match):
    cfg = config_from_preset("tiny", pair_labels="self-reference", out=str(tmp_path / "v"), methods={"self-reference": opts})
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_trainer_gepo_defaults_are_the_papers():
    """GEPO in the preference trainer: lambda = 1, no margin, variance of the winners' log-ratios (GEPO_PAPER)."""
    for name in ("on-policy-gepo", "offline-gepo"):
        method = PREFERENCE_LOSSES.build(name)
        kw = method.method_loss_kwargs()
        assert kw["gepo_consistency_coef"] == GEPO_PAPER["consistency_coef"] == 1.0
        assert kw["gepo_margin"] == GEPO_PAPER["margin"] and kw["gepo_variance"] == GEPO_PAPER["variance"]
    cfg = config_from_preset("tiny", scheme="on-policy-gepo", out="unused")
    assert cfg.method_options("scheme").consistency_coef == GEPO_PAPER["consistency_coef"]


@pytest.mark.llm
def test_self_reference_one_real_step_on_smollm2(tmp_path):
    cfg = config_from_preset("cpu-demo", task="arithmetic", pair_labels="self-reference", out=str(tmp_path / "llm"), steps=1,
                             prompts_per_step=1, samples_per_prompt=2, max_new_tokens=8, tensorboard=False, progress=False,
                             methods={"self-reference": {"self_answer_tokens": 8, "critique_tokens": 8}})
    tr = PreferenceTrainer(cfg)
    res = tr.train_step()
    j = res.loss_inputs["judge"]
    assert j["self_answers"][0][0] and f"Your own answer: {j['self_answers'][0][0]}\n" in j["critique_prompts"][0]
    assert torch.equal(order_swap_debias(j["p_first_ab"], j["p_first_ba"]).prob_a, j["prob_a"])
    assert 0.0 <= res.metrics["judge_consistency"] <= 1.0 and 0.0 <= res.metrics["judge_self_answer_reward"] <= 1.0
    tr.logger.close()
