"""SPO: partitions, chain and tree segment advantages, the probability-mask loss; invariances against Dr.GRPO / GRPO."""

import math

import pytest
import torch

from polab.estimators.advantages import dr_grpo_advantages, group_advantages
from polab.estimators.policy_loss import ppo_clip_loss
from polab.estimators.spo import (
    SPO_CHAIN_PAPER,
    chain_segment_advantages,
    cutpoint_mask,
    cutpoint_segments,
    fixed_size_segments,
    segment_starts,
    spo_policy_loss,
    tree_segment_advantages,
)

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)

PROBS = torch.tensor([[0.95, 0.5, 0.99, 0.3, 0.2, 0.97, 0.1]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 0]], dtype=torch.float64)  # the last position is padding


def test_cutpoint_partition_hand_example():
    lp = PROBS.log()
    # cutpoints (p < 0.9) among response tokens: positions 1, 3, 4 (position 6 is padding)
    assert cutpoint_mask(lp, MASK, threshold=0.9).tolist() == [[False, True, False, True, True, False, False]]
    # interval 2, the authors' placement: cuts just before cutpoint #1 (pos 1) and #3 (pos 4);
    # token 0 is the lead-in -> 0 | 1..3 | 4..5
    seg2 = cutpoint_segments(lp, MASK, threshold=0.9, cutpoints_per_segment=2)
    assert seg2.tolist() == [[0, 1, 1, 1, 2, 2, -1]]
    assert segment_starts(seg2) == [[0, 1, 4]]
    # interval 1: cuts before positions 1, 3, 4
    seg1 = cutpoint_segments(lp, MASK, threshold=0.9, cutpoints_per_segment=1)
    assert seg1.tolist() == [[0, 1, 1, 2, 3, 3, -1]]
    assert segment_starts(seg1) == [[0, 1, 3, 4]]
    # interval larger than the number of cutpoints: lead-in + one segment from the first cutpoint
    assert cutpoint_segments(lp, MASK, threshold=0.9, cutpoints_per_segment=5).tolist() == [[0, 1, 1, 1, 1, 1, -1]]
    # first response token is a cutpoint: no lead-in
    lp0 = torch.tensor([[0.5, 0.95, 0.3]], dtype=torch.float64).log()
    assert cutpoint_segments(lp0, torch.ones(1, 3), threshold=0.9, cutpoints_per_segment=1).tolist() == [[0, 0, 1]]
    # polab's earlier placement: a segment closes after every 2nd cutpoint (position 3) -> 0..3 | 4..5
    assert cutpoint_segments(lp, MASK, threshold=0.9, cutpoints_per_segment=2, placement="after").tolist() == [[0, 0, 0, 0, 1, 1, -1]]
    assert cutpoint_segments(lp, MASK, threshold=0.9, cutpoints_per_segment=1, placement="after").tolist() == [[0, 0, 1, 1, 2, 3, -1]]


def authors_rule_advantages(probs, interval, value_of_prefix, score, rho=0.9):
    """The SPO authors' chain advantages for one response, re-derived here from their algorithm
    (AIFrameResearch/SPO b9fc6a2, math_episode_generator_with_mc_advantages.py): cut positions c = j - 1 for
    every interval-th token j with p_j < rho (from the first); the value at c is V(prefix of length c + 1);
    the last token holds the score; each token gets (value at the next marked position) - (value at the
    previous one), 0 before the first; tokens with p > rho get 0."""
    T = len(probs)
    low = [j for j in range(T) if probs[j] < rho]
    cuts = [j - 1 for j in low][::interval]
    marks = {T - 1: score}
    base = None
    for c in cuts:
        if c == -1:
            base = value_of_prefix(0)
        else:
            marks[c] = value_of_prefix(c + 1)
    adv = [None] * T
    for i in range(T):
        if i in marks:
            adv[i] = 0.0 if base is None else marks[i] - base
            base = marks[i]
    for i in range(T - 2, -1, -1):
        if adv[i] is None:
            adv[i] = adv[i + 1]
    return [0.0 if probs[i] > rho else adv[i] for i in range(T)]


@pytest.mark.parametrize("interval", [1, 2, 3, 5])
def test_chain_matches_the_authors_rule_under_the_probability_mask(interval):
    g = torch.Generator().manual_seed(interval)
    for _ in range(40):
        T = int(torch.randint(1, 14, (1,), generator=g))
        # probabilities away from 0.9 itself (the authors' mask uses > 0.9, the cutpoints < 0.9)
        probs = torch.where(torch.rand(T, generator=g) < 0.4, torch.full((T,), 0.3), torch.full((T,), 0.97)).double()
        values = torch.rand(T + 1, generator=g, dtype=torch.float64)  # MC value of each prefix length
        score = float(torch.rand(1, generator=g))
        seg = cutpoint_segments(probs.log()[None], torch.ones(1, T), threshold=0.9, cutpoints_per_segment=interval)
        starts = segment_starts(seg)[0]
        V = values[starts][None]
        ours = chain_segment_advantages(seg, V, torch.tensor([score], dtype=torch.float64))[0]
        ours = torch.where(probs > 0.9, torch.zeros_like(ours), ours)
        ref = authors_rule_advantages(probs.tolist(), interval, lambda n: float(values[n]), score)
        torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float64), **F64)


def test_final_reward_reaches_the_loss_in_the_issues_failing_case():
    # interval 2, cutpoints at positions 1 and 3 (a multiple of the interval), trailing high-probability tokens.
    probs = torch.tensor([[0.95, 0.5, 0.97, 0.4, 0.99, 0.98]], dtype=torch.float64)
    m = torch.ones(1, 6)
    cut = cutpoint_mask(probs.log(), m, threshold=0.9)
    V = torch.tensor([[0.5, 0.25, 0.75]], dtype=torch.float64)
    score = torch.tensor([1.0], dtype=torch.float64)
    # earlier placement: segments 0..3 | 4..5; the last (reward) segment has no cutpoint: masked away entirely
    old = cutpoint_segments(probs.log(), m, threshold=0.9, cutpoints_per_segment=2, placement="after")
    assert old.tolist() == [[0, 0, 0, 0, 1, 1]]
    adv_old = chain_segment_advantages(old, V[:, :2], score) * cut
    # only V(s_4) - V(s_0) = -0.25 survives on the cutpoints: the score 1 never appears
    torch.testing.assert_close(adv_old, torch.tensor([[0, -0.25, 0, -0.25, 0, 0]], dtype=torch.float64), **F64)
    # the authors' placement: lead-in 0 | 1..5, the reward segment starts at cutpoint #1 -> score - V(s_1) = 0.75
    new = cutpoint_segments(probs.log(), m, threshold=0.9, cutpoints_per_segment=2)
    assert new.tolist() == [[0, 1, 1, 1, 1, 1]] and segment_starts(new) == [[0, 1]]
    adv_new = chain_segment_advantages(new, V[:, :2], score) * cut
    torch.testing.assert_close(adv_new, torch.tensor([[0, 0.75, 0, 0.75, 0, 0]], dtype=torch.float64), **F64)


def test_last_segment_always_holds_a_cutpoint_with_the_authors_placement():
    g = torch.Generator().manual_seed(7)
    B, T = 400, 30
    probs = torch.where(torch.rand(B, T, generator=g) < 0.2, 0.3, 0.97).double()
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    m = (torch.arange(T)[None] < lengths[:, None]).double()
    cut = cutpoint_mask(probs.log(), m, threshold=0.9)
    has_cut = cut.any(dim=1)
    for placement, expect_all in (("before", True), ("after", False)):
        seg = cutpoint_segments(probs.log(), m, threshold=0.9, cutpoints_per_segment=5, placement=placement)
        last = seg.max(dim=1).values
        reached = ((seg == last[:, None]) & cut).any(dim=1)
        frac = float(reached[has_cut].double().mean())
        if expect_all:
            assert frac == 1.0
        else:
            assert frac < 1.0  # the defect of the earlier placement shows on this sample


def test_paper_preset():
    assert (SPO_CHAIN_PAPER.threshold, SPO_CHAIN_PAPER.cutpoints_per_segment, SPO_CHAIN_PAPER.mc_samples) == (0.9, 5, 9)


def test_fixed_size_partition():
    m = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
    assert fixed_size_segments(m, segment_length=2).tolist() == [[0, 0, 1, 1, 2, -1], [0, 0, -1, -1, -1, -1]]


def test_chain_advantages_hand_values_and_telescoping():
    seg = torch.tensor([[0, 0, 1, 1, 2, -1], [0, 0, 0, 0, 0, 0]])
    # row 0: V(s0)=0.5, V(s_t1)=0.75, V(s_t2)=0.25, reward 1 -> A = (0.25, -0.5, 0.75); row 1: one segment, V(s0)=0.25, r=0
    V = torch.tensor([[0.5, 0.75, 0.25], [0.25, float("nan"), float("nan")]], dtype=torch.float64)
    r = torch.tensor([1.0, 0.0], dtype=torch.float64)
    adv = chain_segment_advantages(seg, V, r)
    torch.testing.assert_close(adv, torch.tensor([[0.25, 0.25, -0.5, -0.5, 0.75, 0.0], [-0.25] * 6], dtype=torch.float64), **F64)
    # sum over segments = r - V(s0)
    first = [0, 2, 4]
    torch.testing.assert_close(adv[0, first].sum(), r[0] - V[0, 0], **F64)


def test_one_segment_with_group_mean_value_is_dr_grpo():
    g = torch.Generator().manual_seed(0)
    r = torch.randint(0, 2, (12,), generator=g).double()
    ids = torch.arange(3).repeat_interleave(4)
    m = torch.ones(12, 5, dtype=torch.float64)
    seg = fixed_size_segments(m, segment_length=5)  # one segment per response
    v0 = torch.stack([r[ids == k].mean() for k in range(3)])[ids][:, None]  # MC value of the prompt = group mean
    adv = chain_segment_advantages(seg, v0, r)
    torch.testing.assert_close(adv, dr_grpo_advantages(r, ids).advantages[:, None].expand_as(adv), **F64)


def test_tree_hand_values_and_depth_one_invariance():
    # root 0 -> nodes 1, 2; node 1 -> leaves 3 (r=1), 4 (r=0); node 2 -> leaves 5 (r=1), 6 (r=1)
    parents = torch.tensor([-1, 0, 0, 1, 1, 2, 2])
    leaf = torch.tensor([math.nan, math.nan, math.nan, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    out = tree_segment_advantages(parents, leaf)
    torch.testing.assert_close(out.values, torch.tensor([0.75, 0.5, 1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64), **F64)
    torch.testing.assert_close(out.advantages, torch.tensor([0.0, -0.25, 0.25, 0.5, -0.5, 0.0, 0.0], dtype=torch.float64), **F64)
    assert out.num_leaves.tolist() == [4, 2, 2, 1, 1, 1, 1]
    # depth one: root per prompt, G leaves -> Dr.GRPO (scale none) and GRPO (scale group, epsilon 1e-6)
    g = torch.Generator().manual_seed(1)
    r = torch.randn(8, generator=g, dtype=torch.float64)
    par = torch.tensor([-1, 0, 0, 0, 0, -1, 5, 5, 5, 5])
    lr = torch.cat([torch.tensor([math.nan]), r[:4], torch.tensor([math.nan]), r[4:]]).double()
    leaves = [1, 2, 3, 4, 6, 7, 8, 9]
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    torch.testing.assert_close(tree_segment_advantages(par, lr).advantages[leaves], dr_grpo_advantages(r, ids).advantages, **F64)
    torch.testing.assert_close(tree_segment_advantages(par, lr, scale="group").advantages[leaves],
                               group_advantages(r, ids, scale="group", epsilon=1e-6).advantages, **F64)


def test_probability_mask_loss():
    g = torch.Generator().manual_seed(2)
    old = PROBS.log().expand(3, -1).clone()
    logp = (old + 0.05 * torch.randn(3, 7, generator=g, dtype=torch.float64)).requires_grad_(True)
    adv = torch.randn(3, 7, generator=g, dtype=torch.float64)
    m = MASK.expand(3, -1)
    cp = cutpoint_mask(old, m, threshold=0.9).double()
    got = spo_policy_loss(logp, old, adv, m, threshold=0.9)
    ref = ppo_clip_loss(logp, old, adv, m * cp)
    torch.testing.assert_close(got.loss, ref.loss, **F64)
    torch.testing.assert_close(spo_policy_loss(logp, old, adv, m, threshold=None).loss, ppo_clip_loss(logp, old, adv, m).loss, **F64)
    # at ratio 1 the loss is minus the mean advantage over cutpoint tokens (3 per row here)
    at_one = spo_policy_loss(old, old, adv, m, threshold=0.9).loss
    torch.testing.assert_close(at_one, -(adv * cp).sum() / cp.sum(), **F64)
    got.loss.backward()
    assert torch.all(logp.grad[cp == 0] == 0) and torch.any(logp.grad[cp == 1] != 0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="threshold"):
        cutpoint_mask(PROBS.log(), MASK, threshold=0.0)
    with pytest.raises(ValueError, match="cutpoints_per_segment"):
        cutpoint_segments(PROBS.log(), MASK, threshold=0.9, cutpoints_per_segment=0)
    with pytest.raises(ValueError, match="boundary_values has 1 columns"):
        chain_segment_advantages(torch.tensor([[0, 1]]), torch.zeros(1, 1), torch.zeros(1))
    with pytest.raises(ValueError, match="non-finite"):
        chain_segment_advantages(torch.tensor([[0, 1]]), torch.tensor([[0.0, float("nan")]]), torch.zeros(1))
    with pytest.raises(ValueError, match="earlier node"):
        tree_segment_advantages(torch.tensor([1, -1]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="finite on leaves"):
        tree_segment_advantages(torch.tensor([-1, 0]), torch.tensor([0.0, float("nan")]))


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_device_follows_inputs(device):
    seg = cutpoint_segments(PROBS.log().to(device), MASK.to(device), threshold=0.9, cutpoints_per_segment=1)
    V = torch.tensor([[0.5, 0.75, 0.25, 0.5]], dtype=torch.float64, device=device)
    adv = chain_segment_advantages(seg, V, torch.tensor([1.0], dtype=torch.float64, device=device))
    assert adv.device.type == device
    # segments 0 | 1..2 | 3 | 4..5 (authors' placement): A = 0.75-0.5, 0.25-0.75, 0.5-0.25, 1-0.5
    torch.testing.assert_close(adv.cpu(), torch.tensor([[0.25, -0.5, -0.5, 0.25, 0.5, 0.5, 0.0]], dtype=torch.float64), **F64)
