"""PCPG, EPO process returns, the debate reward and self-reference AI feedback: hand values, Toeplitz form, invariances."""

import math

import pytest
import torch

from polab.estimators.reward_shaping import (
    debate_outcome,
    debate_reward,
    discounted_returns,
    edit_distance,
    edit_distance_step_rewards,
    judge_bradley_terry_loss,
    justifiable_returns,
    margin_reward_model_loss,
    order_swap_debias,
    pcpg_kernel,
    pcpg_loss,
    preference_strength,
    process_reward_returns,
    pseudo_convolution,
    pseudo_convolution_matrix,
    semantic_perplexity,
    turns_to_tokens,
)

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)


# -- PCPG ------------------------------------------------------------------------------


def test_edit_distance_and_step_rewards_telescope():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    hyp, ref = list("sittn"), list("kitten")
    r = edit_distance_step_rewards(hyp, ref)
    # hand: ED of prefixes "", s, si, sit, sitt, sittn against kitten = 6, 6, 5, 4, 3, 2
    torch.testing.assert_close(r, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64), **F64)
    assert float(r.sum()) == len(ref) - edit_distance(hyp, ref)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        h = torch.randint(0, 4, (int(torch.randint(0, 9, (1,), generator=g)),), generator=g).tolist()
        y = torch.randint(0, 4, (6,), generator=g).tolist()
        rn = edit_distance_step_rewards(h, y, normalise=True)
        assert float(rn.sum()) == pytest.approx(1.0 - edit_distance(h, y) / len(y), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("kernel", [pcpg_kernel(1), pcpg_kernel(3), pcpg_kernel(5, kind="gaussian"),
                                    torch.tensor([0.1, 0.5, 0.2], dtype=torch.float64)])
def test_pseudo_convolution_is_toeplitz_per_row(kernel):
    g = torch.Generator().manual_seed(1)
    v = torch.randn(3, 7, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    out = pseudo_convolution(v, mask, kernel=kernel)
    for b, L in enumerate([7, 4, 2]):
        T = pseudo_convolution_matrix(L, kernel)
        torch.testing.assert_close(out[b, :L], T @ v[b, :L], **F64)
        assert float(out[b, L:].abs().sum()) == 0.0
    # an asymmetric kernel: out_t = 0.1 v_{t-1} + 0.5 v_t + 0.2 v_{t+1}, hand check on one entry
    k = torch.tensor([0.1, 0.5, 0.2], dtype=torch.float64)
    o = pseudo_convolution(v[:1], torch.ones(1, 7), kernel=k)
    assert float(o[0, 3]) == pytest.approx(0.1 * float(v[0, 2]) + 0.5 * float(v[0, 3]) + 0.2 * float(v[0, 4]), rel=1e-12)


def test_pcpg_with_unit_kernel_is_reinforce_and_hand_values():
    lp = torch.tensor([[-0.5, -1.0, -0.2]], dtype=torch.float64)
    r = torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64)
    m = torch.ones(1, 3)
    # gamma = 0.5: G = (1 + 0 + 0.5, 0 + 1, 2) = (1.5, 1, 2); REINFORCE loss = -(1.5*-0.5 + 1*-1 + 2*-0.2)/3
    res = pcpg_loss(lp, r, m, kernel=pcpg_kernel(1), gamma=0.5)
    assert float(res.loss) == pytest.approx((0.75 + 1.0 + 0.4) / 3, rel=1e-12)
    torch.testing.assert_close(res.returns, torch.tensor([[1.5, 1.0, 2.0]], dtype=torch.float64), **F64)
    plain = pcpg_loss(lp, r, m, kernel=pcpg_kernel(3), gamma=0.5, convolve=())
    assert float(plain.loss) == pytest.approx(float(res.loss), rel=1e-12)
    # uniform K = 3 on rewards and losses, by hand: r~ = ((1+0)/3, (1+0+2)/3, (0+2)/3) = (1/3, 1, 2/3)
    full = pcpg_loss(lp, r, m, kernel=pcpg_kernel(3), gamma=1.0)
    G = torch.tensor([2.0, 5 / 3, 2 / 3], dtype=torch.float64)
    ell = -G * lp.detach()[0]
    ell_conv = torch.stack([(ell[0] + ell[1]) / 3, ell.sum() / 3, (ell[1] + ell[2]) / 3])
    assert float(full.loss) == pytest.approx(float(ell_conv.mean()), rel=1e-12)
    with pytest.raises(ValueError, match="odd"):
        pcpg_loss(lp, r, m, kernel=torch.ones(2))
    with pytest.raises(ValueError, match="convolve"):
        pcpg_loss(lp, r, m, kernel=pcpg_kernel(3), convolve=("returns",))


def test_discounted_returns_loop_reference():
    g = torch.Generator().manual_seed(2)
    r = torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] + [0] * 5, [0] * 6])
    out = discounted_returns(r, mask, gamma=0.9)
    for b in range(4):
        L = int(mask[b].sum())
        for t in range(6):
            expect = sum(0.9 ** (k - t) * float(r[b, k]) for k in range(t, L)) if t < L else 0.0
            assert float(out[b, t]) == pytest.approx(expect, rel=1e-12, abs=1e-14)
    with pytest.raises(ValueError, match="prefix"):
        discounted_returns(r, torch.tensor([[1, 0, 1, 0, 0, 0]] * 4), gamma=0.9)


# -- EPO -------------------------------------------------------------------------------


def test_process_reward_returns_hand_values_and_tokens():
    r = torch.tensor([[0.2, 0.5, 0.1], [0.4, 0.0, 0.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = process_reward_returns(r, m, gamma=0.5, outcome_rewards=torch.tensor([1.0, -1.0], dtype=torch.float64),
                                 outcome_coef=2.0)
    # row 0: r' = (0.2, 0.5, 2.1) -> G = (0.2 + 0.25 + 0.525, 0.5 + 1.05, 2.1); row 1: r' = 0.4 - 2 = -1.6
    torch.testing.assert_close(out, torch.tensor([[0.975, 1.55, 2.1], [-1.6, 0.0, 0.0]], dtype=torch.float64), **F64)
    no_outcome = process_reward_returns(r, m, gamma=1.0)
    torch.testing.assert_close(no_outcome[:, 0], torch.tensor([0.8, 0.4], dtype=torch.float64), **F64)
    tok = turns_to_tokens(out, torch.tensor([[0, 0, 1, 2, 2], [0, 0, 0, 0, 0]]), torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 0, 0]]))
    torch.testing.assert_close(tok, torch.tensor([[0.975, 0.975, 0.0, 2.1, 2.1], [-1.6, -1.6, -1.6, 0.0, 0.0]],
                                                 dtype=torch.float64), **F64)
    with pytest.raises(ValueError, match="token_turn"):
        turns_to_tokens(out, torch.tensor([[0, 3, 0, 0, 0], [0] * 5]), torch.ones(2, 5))


# -- debate reward ------------------------------------------------------------------------


def test_debate_reward_combination_and_linearity_in_lambda():
    re = torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    pref = torch.tensor([[1, 0, 1], [0, 1, 0]])
    m = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = debate_reward(re, pref, lambda_=0.25, debate_multiplier=2.0)
    torch.testing.assert_close(r, torch.tensor([[0.5, 0.0, 1.25], [0.0, -0.25, 0.0]], dtype=torch.float64), **F64)
    env = discounted_returns(re, m, gamma=0.9)
    deb = discounted_returns(2.0 * pref.to(torch.float64), m, gamma=0.9)
    for lam in (0.0, 0.3, 1.0):
        got = justifiable_returns(re, pref, m, lambda_=lam, gamma=0.9, debate_multiplier=2.0)
        torch.testing.assert_close(got, (1 - lam) * env + lam * deb, **F64)
    # a debate outcome of -1 or 0 is "not preferred"
    torch.testing.assert_close(debate_reward(torch.zeros(3), torch.tensor([1.0, 0.0, -1.0]), lambda_=1.0),
                               torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="lambda_"):
        debate_reward(re, pref, lambda_=1.5)


def test_debate_outcome_and_judge_loss():
    out = debate_outcome(torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.1, 0.0, 2.0]))
    assert out.tolist() == [1.0, -1.0, 0.0]
    # zero-sum: swapping the sides negates the outcome
    assert debate_outcome(torch.tensor([0.1, 0.0, 2.0]), torch.tensor([0.3, -1.0, 2.0])).tolist() == [-1.0, 1.0, 0.0]
    loss = judge_bradley_terry_loss(torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64),
                                    torch.tensor([True, False]))
    assert float(loss) == pytest.approx((math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 2, rel=1e-12)


# -- self-reference AI feedback ---------------------------------------------------------


def test_order_swap_removes_additive_position_bias_exactly():
    p = torch.tensor([0.9, 0.3, 0.5, 0.62], dtype=torch.float64)
    for delta in (0.0, 0.05, -0.08):
        res = order_swap_debias(p + delta, (1 - p) + delta)
        torch.testing.assert_close(res.prob_a, p, **F64)
        torch.testing.assert_close(res.position_bias, torch.full_like(p, delta), **F64)
    # additive bias in logits, removed by the logit-space average
    logit = torch.logit(p[[0, 1, 3]])
    for b in (0.0, 0.7):
        res = order_swap_debias(torch.sigmoid(logit + b), torch.sigmoid(-logit + b), space="logit")
        torch.testing.assert_close(res.prob_a, torch.sigmoid(logit), **F64)
    # consistency: both orders must agree on the winner
    res = order_swap_debias(torch.tensor([0.8, 0.8, 0.3]), torch.tensor([0.3, 0.7, 0.9]))
    assert res.consistent.tolist() == [True, False, True]


def test_semantic_perplexity_and_strength_hand_values():
    lp = torch.log(torch.tensor([[0.5, 0.25, 1.0], [0.5, 0.5, 0.5], [0.1, 1.0, 1.0]], dtype=torch.float64))
    m = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    ppl = semantic_perplexity(lp, m)
    # row 0: exp(-(log .5 + log .25)/2) = sqrt(8); row 1: 2; row 2: 10
    torch.testing.assert_close(ppl, torch.tensor([math.sqrt(8.0), 2.0, 10.0], dtype=torch.float64), **F64)
    pooled = semantic_perplexity(lp, m, paraphrase_ids=torch.tensor([3, 3, 7]))
    torch.testing.assert_close(pooled, torch.tensor([math.exp((math.log(8.0) / 2 + math.log(2.0)) / 2), 10.0],
                                                    dtype=torch.float64), **F64)
    s = preference_strength(torch.tensor([2.0, 8.0], dtype=torch.float64), torch.tensor([8.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(s, torch.tensor([math.log(4.0), -math.log(4.0)], dtype=torch.float64), **F64)
    # antisymmetric: swapping which verdict is "A" negates the strength
    s_sw = preference_strength(torch.tensor([8.0]), torch.tensor([2.0]))
    assert float(s_sw) == pytest.approx(-math.log(4.0), rel=1e-6)
    both = preference_strength(torch.tensor([2.0]), torch.tensor([8.0]), ppl_prefer_a_swapped=torch.tensor([4.0]),
                               ppl_prefer_b_swapped=torch.tensor([4.0]))
    assert float(both) == pytest.approx(math.log(4.0) / 2, rel=1e-6)


def test_margin_reward_model_loss():
    rc = torch.tensor([1.0, 0.5], dtype=torch.float64)
    rr = torch.tensor([0.0, 0.5], dtype=torch.float64)
    assert float(margin_reward_model_loss(rc, rr)) == pytest.approx((math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2, rel=1e-12)
    mg = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert float(margin_reward_model_loss(rc, rr, mg)) == pytest.approx(math.log(2.0), rel=1e-12)
    with pytest.raises(ValueError, match="probabilities"):
        order_swap_debias(torch.tensor([1.2]), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="positive"):
        preference_strength(torch.tensor([0.0]), torch.tensor([1.0]))


def test_margin_loss_matches_the_self_reference_authors_logexp_form_with_lm_term():
    # rbao2018/self_ref_feedback RLXF/trainer/rm_trainer.py::LogExpWithLMLoss: log(1 + exp(m + r_r - r_c)) averaged,
    # + lm_loss_coef * LM cross-entropy. r_c = (2, 0), r_r = (1, 1), m = (0.5, 0), coef 1, nll 0.3:
    # (log(1 + e^{-0.5}) + log(1 + e^{1})) / 2 + 0.3
    rc = torch.tensor([2.0, 0.0], dtype=torch.float64)
    rr = torch.tensor([1.0, 1.0], dtype=torch.float64)
    m = torch.tensor([0.5, 0.0], dtype=torch.float64)
    want = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0))) / 2 + 0.3
    got = margin_reward_model_loss(rc, rr, m, lm_nll=torch.tensor(0.3, dtype=torch.float64), lm_loss_coef=1.0)
    assert float(got) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="lm_loss_coef"):
        margin_reward_model_loss(rc, rr, lm_nll=torch.tensor(0.3), lm_loss_coef=-1.0)
