"""Tests for polab.estimators.preference_losses.

Hand-derived values are worked out in comments; loop references are written
here independently of the vectorised code. Float64 tolerance 1e-12 relative
(a handful of operations; STYLE.md's 1e-10 with margin), float32 1e-6.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from polab.estimators.preference_losses import (
    PREFERENCE_CONVENTIONS,
    robust_dpo_loss,
    SAMPLING_SCHEMES,
    best_of_n_loss,
    conservative_dpo_loss,
    dpo_loss,
    ipo_loss,
    preference_margin,
    preference_pairs,
    scheme_loss,
    sequence_logprobs,
)

F64 = torch.float64


def t(*x):
    return torch.tensor(x, dtype=F64)


def test_margin_and_dpo_hand_values():
    # pair: policy logps (-1, -3), reference logps (-2, -2) -> h = (-1 + 2) - (-3 + 2) = 2
    h = preference_margin(t(-1.0), t(-3.0), t(-2.0), t(-2.0))
    assert float(h) == 2.0
    # DPO beta = 0.5: -log sigmoid(1) = log(1 + e^-1)
    res = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert float(res.loss) == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-12)
    assert float(res.chosen_reward) == pytest.approx(0.5) and float(res.rejected_reward) == pytest.approx(-0.5)
    assert res.accuracy == 1.0


def test_conservative_dpo_hand_value_and_optimum():
    # TRL loss_type="sigmoid" with label_smoothing and OpenRLHF DPOLoss (trl/trainer/dpo_trainer.py;
    # openrlhf/models/loss.py::DPOLoss): -(1-eps) log s(bh) - eps log s(-bh). beta=1, eps=0.25, h=2:
    eps, h = 0.25, 2.0
    want = -(1 - eps) * math.log(1 / (1 + math.exp(-h))) - eps * math.log(1 / (1 + math.exp(h)))
    res = conservative_dpo_loss(t(h), t(0.0), t(0.0), t(0.0), beta=1.0, label_smoothing=eps)
    assert float(res.loss) == pytest.approx(want, rel=1e-12)
    # finite optimum h* = log((1-eps)/eps)/beta: the gradient in h vanishes there
    beta = 0.5
    hstar = math.log((1 - eps) / eps) / beta
    hh = torch.tensor([hstar], dtype=F64, requires_grad=True)
    conservative_dpo_loss(hh, t(0.0), t(0.0), t(0.0), beta=beta, label_smoothing=eps).loss.backward()
    assert abs(float(hh.grad)) < 1e-12
    with pytest.raises(ValueError, match="conservative DPO needs"):
        conservative_dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), label_smoothing=0.0)


def test_ipo_conventions_hand_values():
    # IPO paper eq. 17 / TRL loss_type="ipo" / OpenRLHF DPOLoss(ipo=True): (h - 1/(2 beta))^2.
    # beta = 0.25 -> target 2; h = 3 -> loss 1.
    assert float(ipo_loss(t(3.0), t(0.0), t(0.0), t(0.0), beta=0.25).loss) == pytest.approx(1.0, rel=1e-12)
    # the paper's bandit code (bandit_experiment/dpo_utils.py::dpo_loss): (h - beta)^2 with beta = 10; h = 3 -> 49.
    assert float(ipo_loss(t(3.0), t(0.0), t(0.0), t(0.0), beta=10.0, target_margin=10.0).loss) == pytest.approx(49.0, rel=1e-12)
    # the minimiser of one pair is the target margin
    hh = torch.tensor([0.7], dtype=F64, requires_grad=True)
    opt = torch.optim.SGD([hh], lr=0.25)
    for _ in range(200):
        opt.zero_grad()
        ipo_loss(hh, t(0.0), t(0.0), t(0.0), beta=0.1).loss.backward()
        opt.step()
    assert float(hh.detach()) == pytest.approx(5.0, rel=1e-10)
    assert PREFERENCE_CONVENTIONS["understanding-rlhf"]["ipo_target"] == "beta"


def test_trl_ipo_uses_token_mean_logps():
    # TRL divides IPO log-probs by the number of response tokens (concatenated_forward). Chosen: tokens
    # (-1, -1, pad), rejected: (-2, -4, -6); reference all zeros. Means: -1 and -4 -> h = 3; beta = 0.5 -> target 1 -> 4.
    tok = t(-1.0, -1.0, 9.0, -2.0, -4.0, -6.0).reshape(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    lp = sequence_logprobs(tok, mask, average=True)
    assert lp.tolist() == [-1.0, -4.0]
    res = ipo_loss(lp[:1], lp[1:], t(0.0), t(0.0), beta=0.5)
    assert float(res.loss) == pytest.approx(4.0, rel=1e-12)
    # sums (OpenRLHF, the paper's code): -2 and -12 -> h = 10 -> (10 - 1)^2 = 81
    s = sequence_logprobs(tok, mask)
    assert float(ipo_loss(s[:1], s[1:], t(0.0), t(0.0), beta=0.5).loss) == pytest.approx(81.0, rel=1e-12)


def _pairs_loop(rewards, groups, min_gap=0.0):
    out = []
    n = len(rewards)
    for i, j in itertools.combinations(range(n), 2):
        if groups[i] != groups[j]:
            continue
        gap = abs(rewards[i] - rewards[j])
        if gap == 0 or gap < min_gap:
            continue
        out.append((i, j) if rewards[i] > rewards[j] else (j, i))
    return sorted(out, key=lambda p: (groups[p[0]], p[0], p[1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_preference_pairs_match_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n = 23
    rewards = torch.randint(0, 4, (n,), generator=g).to(F64) / 3  # many ties
    groups = torch.randint(0, 5, (n,), generator=g) * 7 - 3  # arbitrary ids, any order
    for gap in (0.0, 0.5):
        pp = preference_pairs(rewards, groups, min_reward_gap=gap)
        got = list(zip(pp.chosen.tolist(), pp.rejected.tolist()))
        assert got == _pairs_loop(rewards.tolist(), groups.tolist(), gap)
        assert all(rewards[c] > rewards[r] for c, r in got)


def test_best_worst_pairing_and_best_of_n_loop():
    rewards = t(0.2, 0.9, 0.9, 0.1, 0.5, 0.5, 0.5)
    groups = torch.tensor([4, 4, 4, 4, 1, 1, 1])
    pp = preference_pairs(rewards, groups, pairing="best-worst")
    # group 4: first max at row 1, min at row 3; group 1 all tied -> no pair, one tie counted
    assert pp.chosen.tolist() == [1] and pp.rejected.tolist() == [3] and pp.num_tied == 1
    logp = t(-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0)
    c = 0.5
    # loop: group 4 best=1, worst=3, non-best {0,2,3}; group 1 best=4 (first), worst=4, non-best {5,6}
    none = ((2.0) + (5.0)) / 2
    worst = ((2.0 + c * -4.0) + (5.0 + c * -5.0)) / 2
    summ = ((2.0 + c * (-1 - 3 - 4)) + (5.0 + c * (-6 - 7))) / 2
    mean = ((2.0 + c * (-8) / 3) + (5.0 + c * (-13) / 2)) / 2
    for ng, want in (("none", none), ("worst", worst), ("sum", summ), ("mean", mean)):
        res = best_of_n_loss(logp, rewards, groups, negative_gradient=ng, negative_coef=c)
        assert float(res.loss) == pytest.approx(want, rel=1e-12), ng
    # constrained variant: log pi - log pi_ref (value shifted, gradient unchanged)
    res = best_of_n_loss(logp, rewards, groups, ref_logp=torch.full((7,), -1.0, dtype=F64))
    assert float(res.loss) == pytest.approx(none - 1.0, rel=1e-12)


def test_scheme_loss_dispatch_and_no_pairs():
    rewards = t(0.1, 0.3, 0.2, 0.0)
    groups = torch.tensor([0, 0, 1, 1])
    logp = t(-1.0, -2.0, -3.0, -4.0)
    ref = t(-1.5, -1.5, -2.5, -2.5)
    res = scheme_loss("offline-dpo", logp, ref, rewards, groups, beta=0.3)
    direct = dpo_loss(logp[[1, 2]], logp[[0, 3]], ref[[1, 2]], ref[[0, 3]], beta=0.3)
    assert float(res.loss) == pytest.approx(float(direct.loss), rel=1e-12)
    assert SAMPLING_SCHEMES["on-policy-best-of-n-neg"].has_negative_gradient
    assert not SAMPLING_SCHEMES["offline-best-of-n"].has_negative_gradient
    assert scheme_loss("on-policy-ipo", logp, ref, t(1.0, 1.0, 0.0, 0.0), groups) is None
    with pytest.raises(ValueError, match="unknown scheme"):
        scheme_loss("dpo", logp, ref, rewards, groups)


def test_dtype_and_gradients_follow_inputs():
    lp32 = torch.tensor([-1.0, -2.0], requires_grad=True)
    res = dpo_loss(lp32[:1], lp32[1:], torch.zeros(1), torch.zeros(1), beta=1.0)
    assert res.loss.dtype == torch.float32
    res.loss.backward()
    # d/dh of -log s(h) at h = 1 is -s(-1); chosen gets it, rejected its negative
    s = 1 / (1 + math.exp(1.0))
    assert lp32.grad.tolist() == pytest.approx([-s, s], rel=1e-6)


def test_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="rejected_logp"):
        dpo_loss(t(0.0, 1.0), t(0.0), t(0.0, 0.0), t(0.0, 0.0))
    with pytest.raises(ValueError, match="no pairs"):
        dpo_loss(t(), t(), t(), t())
    with pytest.raises(ValueError, match="non-finite"):
        ipo_loss(t(float("nan")), t(0.0), t(0.0), t(0.0))
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), label_smoothing=0.5)
    with pytest.raises(ValueError, match="group_ids must be an integer"):
        preference_pairs(t(0.0, 1.0), t(0.0, 0.0))
    with pytest.raises(ValueError, match="at least 2 responses"):
        best_of_n_loss(t(-1.0, -2.0), t(0.0, 1.0), torch.tensor([0, 1]), negative_gradient="worst", negative_coef=0.1)
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        sequence_logprobs(t(0.0, 1.0), torch.ones(2))


def test_label_smoothing_conventions_by_trl_version():
    # beta = 1, h = ln 3 (sigma(h) = 3/4, sigma(-h) = 1/4), eps = 0.1.
    # trl <= 0.28 "sigmoid" (cDPO, dpo_loss here): -(0.9 ln .75) - 0.1 ln .25
    # trl >= 0.29 "robust" (rDPO): (-(0.9) ln .75 + 0.1 ln .25) / 0.8
    h = t(math.log(3.0))
    z = t(0.0)
    cdpo = -0.9 * math.log(0.75) - 0.1 * math.log(0.25)
    rdpo = (-0.9 * math.log(0.75) + 0.1 * math.log(0.25)) / 0.8
    assert float(dpo_loss(h, z, z, z, beta=1.0, label_smoothing=0.1).loss) == pytest.approx(cdpo, rel=1e-12)
    assert float(robust_dpo_loss(h, z, z, z, beta=1.0, label_smoothing=0.1).loss) == pytest.approx(rdpo, rel=1e-12)
    # rDPO is unbiased under flips: E over a flip with prob eps of rDPO = clean DPO loss -ln sigma(h)
    flipped = float(robust_dpo_loss(z, h, z, z, beta=1.0, label_smoothing=0.1).loss)
    assert 0.9 * rdpo + 0.1 * flipped == pytest.approx(-math.log(0.75), rel=1e-12)
    assert PREFERENCE_CONVENTIONS["trl<=0.28"]["cdpo"] == "label_smoothing"
    assert PREFERENCE_CONVENTIONS["trl>=0.29"]["cdpo"] is None
