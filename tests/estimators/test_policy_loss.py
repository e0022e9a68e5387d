"""Clipped surrogate, KL estimators and aggregation against loop references and hand values."""

import math

import pytest
import torch

from polab.estimators.policy_loss import AGGREGATIONS, aggregate, aggregation_weight, kl_penalty, ppo_clip_loss, truncated_is_weights

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
    if mode == "token-sum":
        return sum(tok[b][t] * m[b][t] for b in range(B) for t in range(T))
    if mode == "seq-mean-token-sum-norm":
        # verl 0.9.1 agg_loss: divide by the number of NON-EMPTY rows times L
        nonempty = sum(1 for b in range(B) if sum(m[b]) > 0)
        return sum(tok[b][t] * m[b][t] for b in range(B) for t in range(T)) / (nonempty * L)
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


def test_seq_mean_token_sum_norm_counts_nonempty_rows_only():
    # verl 0.9.1 agg_loss: seq-mean over rows with a response token, then / L.
    # Row 0 sums to 1 + 2 = 3, row 1 is empty: 3 / (1 * 4) = 0.75 (dividing by all rows would give 0.375).
    v = torch.tensor([[1.0, 2.0], [5.0, 7.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1], [0, 0]], dtype=torch.float64)
    assert aggregate(v, m, "seq-mean-token-sum-norm", max_length=4).item() == 0.75
    assert aggregate(v, m, "token-sum").item() == 3.0
    # the split weights agree: the empty row's part weighs 0, the other 1
    assert aggregation_weight(m[:1], 2.0, 1.0, "seq-mean-token-sum-norm") == 1.0
    assert aggregation_weight(m[1:], 2.0, 1.0, "seq-mean-token-sum-norm") == 0.0
    assert aggregation_weight(m[1:], 2.0, 1.0, "token-sum") == 1.0


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_nonfinite_values_outside_the_mask_do_not_leak(mode):
    # NaN / -inf at padding (log-probabilities of pad tokens) must change neither loss nor gradient.
    logp, old, adv, mask = make_batch(4)
    pad = mask == 0
    dirty_logp = torch.where(pad, torch.full_like(logp, float("nan")), logp).requires_grad_(True)
    dirty_old = torch.where(pad, torch.full_like(old, float("-inf")), old)
    dirty_adv = torch.where(pad, torch.full_like(adv, float("nan")), adv)
    dirty_ref = torch.where(pad, torch.full_like(old, float("nan")), logp - 0.3)
    clean_logp = logp.clone().requires_grad_(True)
    kw = dict(aggregation=mode, max_length=9, kl_coef=0.1, kl_estimator="k3", dual_clip=3.0)
    r_dirty = ppo_clip_loss(dirty_logp, dirty_old, dirty_adv, mask, ref_logp=dirty_ref, **kw)
    r_clean = ppo_clip_loss(clean_logp, old, adv, mask, ref_logp=logp - 0.3, **kw)
    r_dirty.loss.backward()
    r_clean.loss.backward()
    assert torch.isfinite(dirty_logp.grad).all()
    assert r_dirty.loss.item() == pytest.approx(r_clean.loss.item(), rel=1e-12, abs=1e-14)
    torch.testing.assert_close(dirty_logp.grad, clean_logp.grad, **F64)
    assert torch.isfinite(r_dirty.per_token).all()
    assert r_dirty.ppo_kl == pytest.approx(r_clean.ppo_kl, rel=1e-12, abs=1e-14)


def test_bad_inputs_raise_clear_errors():
    logp, old, adv, mask = make_batch()
    nan_on_mask = logp.clone()
    nan_on_mask[0, 0] = float("nan")  # row 0 has 7 response tokens
    with pytest.raises(ValueError, match="logp .on response tokens. has non-finite"):
        ppo_clip_loss(nan_on_mask, old, adv, mask)
    with pytest.raises(ValueError, match="old_logp .on response tokens. has non-finite"):
        ppo_clip_loss(logp, nan_on_mask, adv, mask)
    with pytest.raises(ValueError, match="ref_logp .on response tokens."):
        ppo_clip_loss(logp, old, adv, mask, ref_logp=nan_on_mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="kl_coef must be a finite number >= 0"):
        ppo_clip_loss(logp, old, adv, mask, ref_logp=logp, kl_coef=-0.1)
    with pytest.raises(ValueError, match="kl_coef"):
        ppo_clip_loss(logp, old, adv, mask, ref_logp=logp, kl_coef=float("nan"))
    with pytest.raises(ValueError, match=r"max_length must be >= the response length of the batch \(7 columns\); got 5"):
        ppo_clip_loss(logp, old, adv, mask, aggregation="seq-mean-token-sum-norm", max_length=5)
    with pytest.raises(ValueError, match="max_length"):
        ppo_clip_loss(logp, old, adv, mask, max_length=3)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(logp, old, "k4")
    with pytest.raises(ValueError, match="is_weights must be >= 0"):
        ppo_clip_loss(logp, old, adv, mask, is_weights=-torch.ones_like(logp))


def test_abs_and_straight_through_kl():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, -0.5]], dtype=torch.float64)
    d = (ref - logp).detach()  # [-0.5, 1.0, 0.0]
    torch.testing.assert_close(kl_penalty(logp, ref, "abs"), d.abs(), **F64)
    torch.testing.assert_close(kl_penalty(logp, ref, "low_var_kl"), kl_penalty(logp, ref, "k3"), **F64)
    for est, value in (("k1+", -d), ("abs+", d.abs()), ("k3+", torch.exp(d) - d - 1), ("k2+", 0.5 * d**2)):
        kl = kl_penalty(logp, ref, est)
        torch.testing.assert_close(kl.detach(), value, **F64)  # forward value of the base estimator
        (g,) = torch.autograd.grad(kl.sum(), logp)
        # gradient of k2 = (logp - ref)^2 / 2 with respect to logp: logp - ref = -d
        torch.testing.assert_close(g, -d, **F64)
    (g3,) = torch.autograd.grad(kl_penalty(logp, ref, "k3").sum(), logp)
    torch.testing.assert_close(g3, 1 - torch.exp(d), **F64)  # plain k3: d/dlogp (e^d - d - 1) = 1 - e^d


def test_truncated_is_weights_hand_values():
    # trainer - rollout log-ratios: row 0 [ln 3, ln 0.5, pad], row 1 [ln 1.5, ln 1.2, ln 0.1]
    tr = torch.tensor([[math.log(3.0), math.log(0.5), 0.0], [math.log(1.5), math.log(1.2), math.log(0.1)]], dtype=torch.float64)
    ro = torch.zeros_like(tr)
    ro[0, 2] = float("nan")  # rollout engine's value at padding: ignored
    m = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.float64)
    w = truncated_is_weights(tr, ro, m, upper=2.0)
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.5, 0.0], [1.5, 1.2, 0.1]], dtype=torch.float64), **F64)
    # sequence level: products 3 * 0.5 = 1.5 and 1.5 * 1.2 * 0.1 = 0.18, below the cap 2
    ws = truncated_is_weights(tr, ro, m, level="sequence", upper=2.0)
    torch.testing.assert_close(ws, torch.tensor([[1.5, 1.5, 0.0], [0.18, 0.18, 0.18]], dtype=torch.float64), **F64)
    # IcePop [0.4, 2]: 3 and 0.1 fall outside -> 0
    wi = truncated_is_weights(tr, ro, m, upper=2.0, lower=0.4)
    torch.testing.assert_close(wi, torch.tensor([[0.0, 0.5, 0.0], [1.5, 1.2, 0.0]], dtype=torch.float64), **F64)
    # batch normalisation of the token weights: mean over 5 tokens = (2 + .5 + 1.5 + 1.2 + .1) / 5 = 1.06
    wn = truncated_is_weights(tr, ro, m, upper=2.0, batch_normalize=True)
    torch.testing.assert_close(wn, w / 1.06, **F64)
    with pytest.raises(ValueError, match="upper must be"):
        truncated_is_weights(tr, ro, m, upper=0.0)


def test_is_weights_multiply_the_surrogate_not_the_kl():
    # On-policy (ratio 1) the surrogate per token is -A; with weights w it is -w A.
    logp = torch.zeros(1, 2, dtype=torch.float64)
    adv = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    m = torch.ones(1, 2, dtype=torch.float64)
    w = torch.tensor([[0.5, 2.0]], dtype=torch.float64)
    ref = torch.full((1, 2), -0.2, dtype=torch.float64)  # k2 per token 0.02
    res = ppo_clip_loss(logp, logp, adv, m, is_weights=w, ref_logp=ref, kl_coef=1.0, kl_estimator="k2")
    # token-mean surrogate: (-0.5 * 1 + -2 * -2) / 2 = 1.75; KL 0.02
    assert res.policy_loss.item() == pytest.approx(1.75, rel=1e-12)
    assert res.loss.item() == pytest.approx(1.77, rel=1e-12)
