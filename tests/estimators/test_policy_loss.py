"""Clipped surrogate, KL estimators and aggregation against loop references and hand values."""

import math

import pytest
import torch

from polab.estimators.policy_loss import AGGREGATIONS, aggregate, aggregation_weight, kl_penalty, ppo_clip_loss

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)


def make_batch(seed=0, B=5, T=7):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 1, 5, 0])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.float64)
    return logp, old, adv, mask


def loop_loss(logp, old, adv, mask, *, eps_lo, eps_hi, dual, mode, L):
    B, T = logp.shape
    tok = [[0.0] * T for _ in range(B)]
    for b in range(B):
        for t in range(T):
            rho = math.exp(logp[b, t].item() - old[b, t].item())
            a = adv[b, t].item()
            v = max(-a * rho, -a * min(max(rho, 1 - eps_lo), 1 + eps_hi))
            if dual is not None and a < 0:
                v = min(v, -a * dual)
            tok[b][t] = v
    m = mask.tolist()
    if mode == "token-mean":
        return sum(tok[b][t] * m[b][t] for b in range(B) for t in range(T)) / sum(map(sum, m))
    if mode == "seq-mean-token-sum-norm":
        return sum(tok[b][t] * m[b][t] for b in range(B) for t in range(T)) / (B * L)
    seqs = []
    for b in range(B):
        n = sum(m[b])
        if n == 0:
            continue
        s = sum(tok[b][t] * m[b][t] for t in range(T))
        seqs.append(s / n if mode == "seq-mean-token-mean" else s)
    return sum(seqs) / len(seqs)


@pytest.mark.parametrize("mode", AGGREGATIONS)
@pytest.mark.parametrize("dual", [None, 3.0])
@pytest.mark.parametrize("clip", [(0.2, 0.2), (0.2, 0.28)])
def test_clip_loss_matches_loop(mode, dual, clip):
    logp, old, adv, mask = make_batch()
    res = ppo_clip_loss(logp, old, adv, mask, clip_low=clip[0], clip_high=clip[1], dual_clip=dual, aggregation=mode, max_length=9)
    ref = loop_loss(logp, old, adv, mask, eps_lo=clip[0], eps_hi=clip[1], dual=dual, mode=mode, L=9)
    assert res.loss.item() == pytest.approx(ref, rel=1e-10, abs=1e-12)
    assert 0.0 <= res.clip_fraction <= 1.0


def test_on_policy_gradient_is_reinforce():
    # At ratio 1 (old = logp detached) clipping is inactive, and the gradient of the
    # token-mean loss w.r.t. logp is -A * mask / (number of tokens).
    logp, _, adv, mask = make_batch(1)
    logp = logp.clone().requires_grad_(True)
    res = ppo_clip_loss(logp, logp.detach(), adv, mask)
    res.loss.backward()
    torch.testing.assert_close(logp.grad, -adv * mask / mask.sum(), **F64)
    assert res.clip_fraction == 0.0 and res.ratio_mean == pytest.approx(1.0)


def test_dual_clip_hand_value():
    # A = -1, ratio = e^2 ~ 7.39: clipped surrogate max(7.39, 1.2) = 7.39; dual clip caps at 3.
    logp = torch.tensor([[2.0]], dtype=torch.float64)
    old = torch.zeros(1, 1, dtype=torch.float64)
    m = torch.ones(1, 1, dtype=torch.float64)
    a = torch.tensor([[-1.0]], dtype=torch.float64)
    assert ppo_clip_loss(logp, old, a, m).loss.item() == pytest.approx(math.exp(2.0), rel=1e-12)
    assert ppo_clip_loss(logp, old, a, m, dual_clip=3.0).loss.item() == pytest.approx(3.0, rel=1e-12)


def test_kl_estimators_hand_values():
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)
    d = ref - logp  # [-0.5, 1.0]
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), -d, **F64)
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), 0.5 * d**2, **F64)
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), torch.exp(d) - d - 1, **F64)
    big = kl_penalty(torch.zeros(1, 1), torch.full((1, 1), 30.0), "k3")
    assert big.item() == 10.0  # verl clamps low_var_kl to [-10, 10]


def test_k3_is_unbiased_for_kl_on_a_categorical():
    # E_{x~p}[k3] = KL(p||q) exactly (Schulman 2020): check by exact enumeration.
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    k3 = kl_penalty(p.log()[None], q.log()[None], "k3", clamp=False)[0]
    assert (p * k3).sum().item() == pytest.approx((p * (p / q).log()).sum().item(), rel=1e-12)


def test_kl_term_added_to_loss():
    logp, old, adv, mask = make_batch(2)
    ref = logp - 0.1
    base = ppo_clip_loss(logp, old, adv, mask)
    with_kl = ppo_clip_loss(logp, old, adv, mask, ref_logp=ref, kl_coef=0.5, kl_estimator="k2")
    # k2 with delta = -0.1 everywhere is 0.005 per token
    assert with_kl.kl.item() == pytest.approx(0.005, rel=1e-10)
    assert with_kl.loss.item() == pytest.approx(base.loss.item() + 0.5 * 0.005, rel=1e-10)
    with pytest.raises(ValueError, match="ref_logp"):
        ppo_clip_loss(logp, old, adv, mask, kl_coef=0.1)


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_weighted_parts_reproduce_full_batch(mode):
    # Splitting a batch into micro-batches / ranks and weighting by aggregation_weight
    # gives exactly the full-batch aggregate (this is what the trainer relies on).
    logp, old, adv, mask = make_batch(3, B=5, T=7)
    per_tok = (logp - old) * adv
    full = aggregate(per_tok, mask, mode, max_length=9)
    tot_tok, tot_seq = mask.sum().item(), (mask.sum(1) > 0).sum().item()
    parts = [slice(0, 2), slice(2, 3), slice(3, 5)]
    total = sum(
        aggregation_weight(mask[s], tot_tok, tot_seq, mode, batch_total=5) * aggregate(per_tok[s], mask[s], mode, max_length=9)
        for s in parts
    )
    assert total.item() == pytest.approx(full.item(), rel=1e-10, abs=1e-12)


def test_shape_errors():
    logp, old, adv, mask = make_batch()
    with pytest.raises(ValueError, match="same shape"):
        ppo_clip_loss(logp, old[:, :3], adv, mask)
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_clip_loss(logp, old, adv, mask, dual_clip=0.5)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(logp, mask, "sum")
    with pytest.raises(ValueError, match="non-finite"):
        ppo_clip_loss(logp, old, adv * float("nan"), mask)


def test_clip_fraction_split_dual_fraction_and_ppo_kl_hand_values():
    # Five response tokens + one padding token, eps_low = 0.2, eps_high = 0.28, dual clip c = 3.
    # token  log-ratio  ratio   A    state (derived by hand from the PPO surrogate):
    #  0      -0.5      0.607  -1    A<0, ratio < 0.8: clipped low; surrogate max(0.607, 0.8) = 0.8 < 3: no dual
    #  1       2.0      7.389  -1    A<0, ratio > 1.2 side: not clipped; surrogate 7.389 > 3: dual clip active
    #  2       0.5      1.649   2    A>0, ratio > 1.28: clipped high
    #  3       0.1      1.105   2    A>0 inside the range: nothing
    #  4       0.0      1.000   0    A = 0: nothing (surr1 == surr2)
    #  5 (pad) 5.0      -      -1    masked out: counts nowhere
    lr = torch.tensor([[-0.5, 2.0, 0.5, 0.1, 0.0, 5.0]], dtype=torch.float64)
    old = torch.zeros_like(lr)
    adv = torch.tensor([[-1.0, -1.0, 2.0, 2.0, 0.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.float64)
    res = ppo_clip_loss(lr, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    assert res.clip_fraction_low == pytest.approx(1 / 5, rel=1e-12)
    assert res.clip_fraction_high == pytest.approx(1 / 5, rel=1e-12)
    assert res.clip_fraction == pytest.approx(2 / 5, rel=1e-12)
    assert res.dual_clip_fraction == pytest.approx(1 / 5, rel=1e-12)
    # ppo_kl = mean(old - logp) over the 5 response tokens = -(-0.5 + 2 + 0.5 + 0.1 + 0) / 5 = -0.42
    assert res.ppo_kl == pytest.approx(-0.42, rel=1e-12)
    # Without dual clip the dual fraction is 0 and the rest is unchanged.
    res0 = ppo_clip_loss(lr, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert res0.dual_clip_fraction == 0.0
    assert (res0.clip_fraction_low, res0.clip_fraction_high) == (res.clip_fraction_low, res.clip_fraction_high)
