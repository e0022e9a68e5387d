"""GEPO and OPA-DPO: reductions to DPO (TRL's convention), loop references, the authors' OPA-DPO convention."""

import math

import pytest
import torch

from polab.estimators.group_preference import GEPO_PAPER, gepo_loss, oorl_loss, opa_dpo_loss, opa_dpo_sequence_loss, split_by_reward
from polab.estimators.preference_losses import dpo_loss

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)


def _logsig(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


# -- GEPO --------------------------------------------------------------------------


def test_gepo_with_one_of_each_kind_is_dpo():
    # lambda = gamma = 0, |E| = |N| = 1: -log sigma(beta h) = DPO (TRL loss_type="sigmoid", see test_preference_losses.py)
    g = torch.Generator().manual_seed(0)
    c, r, rc, rr = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(4))
    lp = torch.stack([c, r], dim=1).reshape(-1)
    ref = torch.stack([rc, rr], dim=1).reshape(-1)
    eq = torch.tensor([True, False] * 5)
    ids = torch.arange(5).repeat_interleave(2)
    res = gepo_loss(lp, ref, eq, ids, beta=0.2, consistency_coef=0.0)
    expect = dpo_loss(c, r, rc, rr, beta=0.2)
    torch.testing.assert_close(res.per_group, expect.per_pair, **F64)
    torch.testing.assert_close(res.margin, expect.margin, **F64)


def test_gepo_hand_values_and_loop_reference():
    # one group: E = {0, 1}, N = {2}; beta = 1; implicit rewards (0.5, -0.1, 0.2)
    lp = torch.tensor([0.5, -0.1, 0.2], dtype=torch.float64)
    res = gepo_loss(lp, torch.zeros(3, dtype=torch.float64), torch.tensor([1, 1, 0]), torch.tensor([4, 4, 4]), beta=1.0,
                    consistency_coef=2.0, margin=0.05)
    z = 0.2 - 0.2 - 0.05  # mean_E = 0.2, mean_N = 0.2
    var = ((0.5 - 0.2) ** 2 + (-0.1 - 0.2) ** 2) / 2  # = 0.09
    assert float(res.loss) == pytest.approx(-_logsig(z) + 2.0 * var, rel=1e-12)
    # random batch against a loop
    g = torch.Generator().manual_seed(1)
    n = 30
    lp = torch.randn(n, generator=g, dtype=torch.float64)
    ref = torch.randn(n, generator=g, dtype=torch.float64)
    eq = torch.rand(n, generator=g) < 0.5
    ids = torch.randint(0, 7, (n,), generator=g) * 3
    beta, lam, gam = 0.3, 0.7, 0.1
    for variance in ("log-ratio", "implicit-reward"):
        out = gepo_loss(lp, ref, eq, ids, beta=beta, consistency_coef=lam, margin=gam, variance=variance)
        terms = []
        for gid in sorted(set(ids.tolist())):
            rows = [i for i in range(n) if ids[i] == gid]
            E = [float(lp[i] - ref[i]) for i in rows if eq[i]]  # log-probability ratios
            N = [float(lp[i] - ref[i]) for i in rows if not eq[i]]
            if not E or not N:
                continue
            me, mn = sum(E) / len(E), sum(N) / len(N)
            scale = 1.0 if variance == "log-ratio" else beta
            var = sum((scale * (x - me)) ** 2 for x in E) / len(E)
            terms.append(-_logsig(beta * (me - mn) - gam) + lam * var)
        assert float(out.loss) == pytest.approx(sum(terms) / len(terms), rel=1e-10)
        assert out.per_group.numel() + out.num_skipped == len(set(ids.tolist()))


def test_gepo_paper_form_hand_values():
    # The paper (Wu et al. 2025, section 3.2): -log sigma(beta (mean_w r - mean_l r)) + lambda Var_w(r),
    # r = log pi - log pi_ref, lambda = 1, no margin. beta = 0.5; winners' ratios (1, 3), losers' (0, -2, 2):
    # means 2 and 0 -> -log sigma(0.5 * 2) = log(1 + e^-1); Var_w = ((1-2)^2 + (3-2)^2)/2 = 1.
    lp = torch.tensor([1.0, 3.0, 0.0, -2.0, 2.0], dtype=torch.float64)
    eq = torch.tensor([1, 1, 0, 0, 0])
    ids = torch.zeros(5, dtype=torch.long)
    res = gepo_loss(lp, torch.zeros(5, dtype=torch.float64), eq, ids, beta=0.5)
    assert float(res.loss) == pytest.approx(math.log1p(math.exp(-1.0)) + 1.0, rel=1e-12)
    assert float(res.consistency_term[0]) == pytest.approx(1.0, rel=1e-12)
    # polab's earlier reading: the variance of beta * r, beta^2 = 1/4 of it, at its earlier weight 0.1
    old = gepo_loss(lp, torch.zeros(5, dtype=torch.float64), eq, ids, beta=0.5, consistency_coef=0.1, variance="implicit-reward")
    assert float(old.consistency_term[0]) == pytest.approx(0.1 * 0.25, rel=1e-12)
    assert (GEPO_PAPER["consistency_coef"], GEPO_PAPER["gepo_weight"], GEPO_PAPER["margin"]) == (1.0, 0.01, 0.0)
    # OORL: w_rl * L_OnP + w_gepo * L_GEPO
    total = oorl_loss(torch.tensor(2.0, dtype=torch.float64), res.loss)
    assert float(total) == pytest.approx(2.0 + 0.01 * float(res.loss), rel=1e-12)
    assert float(oorl_loss(torch.tensor(2.0), None)) == 2.0
    with pytest.raises(ValueError, match="variance must be"):
        gepo_loss(lp, torch.zeros(5, dtype=torch.float64), eq, ids, variance="beta")


def test_gepo_invariances():
    g = torch.Generator().manual_seed(2)
    lp = torch.randn(8, generator=g, dtype=torch.float64)
    ref = torch.randn(8, generator=g, dtype=torch.float64)
    eq = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    base = gepo_loss(lp, ref, eq, ids, beta=0.5)
    # a per-group constant added to the policy's log-probs changes nothing (all terms are differences)
    shift = torch.tensor([0.3] * 4 + [-1.1] * 4, dtype=torch.float64)
    torch.testing.assert_close(gepo_loss(lp + shift, ref, eq, ids, beta=0.5).loss, base.loss, **F64)
    # permuting rows (with their labels) changes nothing
    p = torch.randperm(8, generator=g)
    torch.testing.assert_close(gepo_loss(lp[p], ref[p], eq[p], ids[p], beta=0.5).loss, base.loss, **F64)
    # the consistency gradient vanishes when equivalent candidates share one implicit reward
    x = torch.tensor([0.2, 0.2, -0.4], dtype=torch.float64, requires_grad=True)
    gepo_loss(x, torch.zeros(3, dtype=torch.float64), torch.tensor([1, 1, 0]), torch.zeros(3, dtype=torch.long), beta=1.0,
              consistency_coef=5.0).loss.backward()
    assert float(x.grad[0]) == pytest.approx(float(x.grad[1]), rel=1e-12)


def test_gepo_skips_groups_and_split_by_reward():
    assert gepo_loss(torch.zeros(2), torch.zeros(2), torch.tensor([1, 1]), torch.tensor([0, 0])) is None
    lab = split_by_reward(torch.tensor([0.1, 0.1, 0.1, 0.9, 0.2, 0.5], dtype=torch.float64), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert lab.tolist() == [False, False, False, True, False, False]  # tied group: no equivalent; group 1 mean 0.533
    assert split_by_reward(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), threshold=1.0).tolist() == [True, False]
    with pytest.raises(ValueError, match="0/1"):
        gepo_loss(torch.zeros(2), torch.zeros(2), torch.tensor([2, 0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="consistency_coef"):
        gepo_loss(torch.zeros(2), torch.zeros(2), torch.tensor([1, 0]), torch.tensor([0, 0]), consistency_coef=-1.0)


# -- OPA-DPO -------------------------------------------------------------------------


def test_opa_dpo_sequence_without_extras_is_trl_dpo():
    g = torch.Generator().manual_seed(3)
    c, r, rc, rr = (torch.randn(6, generator=g, dtype=torch.float64) for _ in range(4))
    for eps in (0.0, 0.1):
        res = opa_dpo_sequence_loss(c, r, rc, rr, beta=0.1, label_smoothing=eps)
        expect = dpo_loss(c, r, rc, rr, beta=0.1, label_smoothing=eps)
        torch.testing.assert_close(res.loss, expect.loss, **F64)
        torch.testing.assert_close(res.per_pair, expect.per_pair, **F64)


def test_opa_dpo_kinds_and_anchor_hand_values():
    # two kinds, one pair each; beta = 1; log-ratios chosen (0.4, 0.1), rejected (-0.2, 0.3)
    lc = torch.tensor([0.4, 0.1], dtype=torch.float64)
    lr = torch.tensor([-0.2, 0.3], dtype=torch.float64)
    z0 = torch.zeros(2, dtype=torch.float64)
    res = opa_dpo_sequence_loss(lc, lr, z0, z0, beta=1.0, pair_kind=torch.tensor([0, 1]), kind_coefs=[1.0, 0.5],
                                anchor="sigmoid", anchor_value=0.2, anchor_coef=0.3, anchor_sign=torch.tensor([1.0, -1.0]))
    dpo = -_logsig(0.6) + 0.5 * (-_logsig(-0.2))
    anc = -_logsig(0.4 - 0.2) - _logsig(-(0.1 - 0.2))
    assert float(res.loss) == pytest.approx(dpo + 0.3 * anc, rel=1e-12)
    sq = opa_dpo_sequence_loss(lc, lr, z0, z0, beta=1.0, anchor="squared", anchor_value=0.2, anchor_coef=1.0)
    assert float(sq.loss) == pytest.approx((-_logsig(0.6) - _logsig(-0.2)) / 2 + ((0.2) ** 2 + (0.1) ** 2) / 2, rel=1e-12)


def test_opa_dpo_token_weights_sequence_mode():
    g = torch.Generator().manual_seed(4)
    c, r, rc, rr = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(4))
    mc = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    mr = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    wc = torch.rand(3, 5, generator=g, dtype=torch.float64)
    res = opa_dpo_loss(c, r, rc, rr, mc, mr, beta=0.5, chosen_weights=wc)
    sc = ((c - rc) * mc * wc).sum(1)
    sr = ((r - rr) * mr).sum(1)
    expect = dpo_loss(sc, sr, torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), beta=0.5)
    torch.testing.assert_close(res.loss, expect.loss, **F64)


def test_opa_dpo_reproduces_the_authors_position_convention():
    # zhyang2226/OPA-DPO opadpo/dpo_models/dpo_trainer.py @ 6722e198a6942cf5d6cce6fc965302e705fac32b (read only):
    # logits = chosen_scores * chosen_logratios - rejected_scores * rejected_logratios on [pairs, time] token
    # log-probs, losses = -logsigmoid(beta * logits) averaged over all entries (padding included),
    # anchor (mDPO mode) -logsigmoid(beta * chosen_logratios - Anchor_value) averaged the same way.
    # One pair, time 3; chosen log-ratios (0.2, -0.4, 0), rejected (0.1, 0, 0) (zeros: padding); beta = 1.
    cl = torch.tensor([[0.2, -0.4, 0.0]], dtype=torch.float64)
    rl = torch.tensor([[0.1, 0.0, 0.0]], dtype=torch.float64)
    zero = torch.zeros(1, 3, dtype=torch.float64)
    mc = torch.tensor([[1, 1, 0]])
    mr = torch.tensor([[1, 0, 0]])
    res = opa_dpo_loss(cl, rl, zero, zero, mc, mr, beta=1.0, aggregation="position", anchor="sigmoid", anchor_value=0.1,
                       anchor_coef=1.0)
    # hand: z_t = (0.1, -0.4, 0) -> mean of -log sigma(z_t); anchor -log sigma(beta * (0.2, -0.4, 0) - 0.1)
    dpo = (-_logsig(0.1) - _logsig(-0.4) - _logsig(0.0)) / 3
    anc = (-_logsig(0.1) - _logsig(-0.5) - _logsig(-0.1)) / 3
    assert float(res.loss) == pytest.approx(dpo + anc, rel=1e-12)
    # it differs from the sequence-level DPO (z = -0.2 - 0.1 = -0.3)
    seq = opa_dpo_loss(cl, rl, zero, zero, mc, mr, beta=1.0)
    assert float(seq.loss) == pytest.approx(-_logsig(-0.3), rel=1e-12)


def test_opa_dpo_errors_and_dtype():
    z = torch.zeros(2, 3, dtype=torch.float32)
    m = torch.ones(2, 3)
    out = opa_dpo_loss(z, z, z, z, m, m, beta=0.1)
    assert out.loss.dtype == torch.float32 and float(out.loss) == pytest.approx(math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="aggregation"):
        opa_dpo_loss(z, z, z, z, m, m, aggregation="token")
    with pytest.raises(ValueError, match="anchor"):
        opa_dpo_sequence_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), anchor="hinge")
    with pytest.raises(ValueError, match="kind_coefs"):
        opa_dpo_sequence_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), pair_kind=torch.tensor([0, 2]),
                              kind_coefs=[1.0])
    with pytest.raises(ValueError, match="anchor_sign"):
        opa_dpo_sequence_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), anchor="sigmoid",
                              anchor_sign=torch.tensor([1.0, 0.0]))
