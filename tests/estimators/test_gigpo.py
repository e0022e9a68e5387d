"""GiGPO: hand-derived values (paper and verl-agent conventions), the GRPO invariance, anchor grouping."""

import difflib
import math

import pytest
import torch

from polab.estimators.advantages import group_advantages
from polab.estimators.gigpo import (
    anchor_groups,
    discounted_step_returns,
    gigpo_advantages,
    similarity_anchor_groups,
    trajectory_returns,
)

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)

# One episode group, two trajectories. Rows: (traj 0, step 0, anchor s0, r 0), (traj 1, step 0, anchor s0, r 0),
# (traj 0, step 1, anchor s1, r 1). Rows of different trajectories interleave; each trajectory is in time order.
REW = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
EPI = torch.tensor([7, 7, 7])
TRAJ = torch.tensor([0, 1, 0])
ANCH = ["s0", "s0", "s1"]


def test_hand_values_paper_convention():
    sg = anchor_groups(ANCH, EPI)
    assert sg.tolist() == [0, 0, 1]
    out = gigpo_advantages(REW, EPI, TRAJ, sg, gamma=0.5, omega=1.0, convention="paper")
    # step returns: traj 0 -> (0 + 0.5*1, 1), traj 1 -> (0)
    torch.testing.assert_close(out.step_returns, torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64), **F64)
    # episode returns 1 and 0: mean 1/2, unbiased std sqrt(1/2)
    ae = 0.5 / (math.sqrt(0.5) + 1e-6)
    torch.testing.assert_close(out.episode_advantages, torch.tensor([ae, -ae, ae], dtype=torch.float64), **F64)
    # step group {row 0, row 1}: returns (0.5, 0), mean 1/4, unbiased std sqrt(1/8); row 2 alone -> 0
    as_ = 0.25 / (math.sqrt(0.125) + 1e-6)
    torch.testing.assert_close(out.step_advantages, torch.tensor([as_, -as_, 0.0], dtype=torch.float64), **F64)
    torch.testing.assert_close(out.advantages, out.episode_advantages + out.step_advantages, **F64)
    assert (out.num_step_groups, out.num_singleton_step_groups) == (2, 1)


def test_hand_values_verl_agent_convention():
    # verl-agent gigpo/core_gigpo.py (Elrond1701/verl-agent 7d45a234; same code as langfengQ/verl-agent):
    # mode=mean_norm (the trainer yaml default), compute_mean_std_cross_steps=True: the episode mean runs over
    # step rows, whose episode returns are (1, 0, 1) -> mean 2/3. Step level: (0.5, 0) -> mean 1/4; singleton -> 0.
    out = gigpo_advantages(REW, EPI, TRAJ, anchor_groups(ANCH, EPI), gamma=0.5, omega=2.0, convention="verl-agent")
    torch.testing.assert_close(out.episode_advantages, torch.tensor([1 / 3, -2 / 3, 1 / 3], dtype=torch.float64), **F64)
    torch.testing.assert_close(out.step_advantages, torch.tensor([0.25, -0.25, 0.0], dtype=torch.float64), **F64)
    torch.testing.assert_close(out.advantages, torch.tensor([1 / 3 + 0.5, -2 / 3 - 0.5, 1 / 3], dtype=torch.float64), **F64)
    # a singleton episode group (one trajectory of one step) keeps its raw return under verl-agent (mean 0, std 1)
    # and gets 0 in the paper convention. (With two step rows the verl-agent group has two entries and is constant -> 0.)
    args = (torch.tensor([3.0], dtype=torch.float64), torch.tensor([0]), torch.tensor([5]), torch.tensor([0]))
    torch.testing.assert_close(gigpo_advantages(*args, convention="verl-agent").advantages, torch.tensor([3.0], dtype=torch.float64), **F64)
    assert torch.equal(gigpo_advantages(*args, convention="paper").advantages, torch.zeros(1, dtype=torch.float64))
    two = (torch.tensor([0.0, 3.0], dtype=torch.float64), torch.tensor([0, 0]), torch.tensor([5, 5]), torch.tensor([0, 1]))
    assert torch.equal(gigpo_advantages(*two, convention="verl-agent").episode_advantages, torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_distinct_anchors_is_grpo_on_trajectory_returns(seed):
    g = torch.Generator().manual_seed(seed)
    rows_e, rows_t, rows_r = [], [], []
    for e in range(3):
        for j in range(4):
            for _ in range(int(torch.randint(1, 5, (1,), generator=g))):
                rows_e.append(e)
                rows_t.append(10 * e + j)
                rows_r.append(float(torch.randint(0, 3, (1,), generator=g)))
    perm = torch.randperm(len(rows_e), generator=g)  # interleave trajectories; keep each one's time order
    order = sorted(range(len(rows_e)), key=lambda i: (int(perm[rows_t[i] % len(perm)]), i))
    E = torch.tensor([rows_e[i] for i in order])
    Tr = torch.tensor([rows_t[i] for i in order])
    R = torch.tensor([rows_r[i] for i in order], dtype=torch.float64)
    distinct = torch.arange(len(order))
    out = gigpo_advantages(R, E, Tr, distinct, gamma=0.9, omega=1.0, convention="paper")
    assert torch.equal(out.step_advantages, torch.zeros_like(R))
    # GRPO on one return per trajectory, broadcast back to its rows
    ret = trajectory_returns(R, Tr)
    uniq = sorted(set(Tr.tolist()))
    per = {t: i for i, t in enumerate(uniq)}
    ga = group_advantages(torch.tensor([float(ret[Tr.tolist().index(t)]) for t in uniq], dtype=torch.float64),
                          torch.tensor([rows_e[rows_t.index(t)] for t in uniq]), scale="group", epsilon=1e-6)
    torch.testing.assert_close(out.advantages, ga.advantages[[per[t] for t in Tr.tolist()]], **F64)


def test_discounted_step_returns_loop_reference():
    g = torch.Generator().manual_seed(4)
    tid = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2])
    r = torch.randn(8, generator=g, dtype=torch.float64)
    got = discounted_step_returns(r, tid, gamma=0.8)
    for i in range(8):
        later = [j for j in range(i, 8) if tid[j] == tid[i]]
        want = sum(0.8 ** k * float(r[j]) for k, j in enumerate(later))
        assert abs(float(got[i]) - want) <= 1e-12


def test_anchor_grouping_is_per_episode_group_and_similarity_grouping():
    assert anchor_groups(["a", "a", "b", "a"], torch.tensor([0, 1, 0, 0])).tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="hashable"):
        anchor_groups([[1], [2]], torch.tensor([0, 0]))
    obs = ["you are in the kitchen.", "you are in the kitchen!", "you are in a garden", "you are in the kitchen."]
    ids = similarity_anchor_groups(obs, torch.tensor([0, 0, 0, 1]), threshold=0.9)
    r01 = difflib.SequenceMatcher(None, obs[0], obs[1]).ratio()
    r02 = difflib.SequenceMatcher(None, obs[0], obs[2]).ratio()
    assert r01 >= 0.9 > r02  # the fixture's premise
    assert ids.tolist() == [0, 0, 1, 2]  # row 3 is identical text but another episode group
    with pytest.raises(ValueError, match="threshold"):
        similarity_anchor_groups(obs, torch.tensor([0, 0, 0, 1]), threshold=1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="nested"):
        gigpo_advantages(REW, torch.tensor([0, 1, 1]), TRAJ, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="step_group_ids has 2 rows"):
        gigpo_advantages(REW, EPI, TRAJ, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="omega"):
        gigpo_advantages(REW, EPI, TRAJ, torch.tensor([0, 0, 1]), omega=-1.0)
    with pytest.raises(ValueError, match="integer"):
        gigpo_advantages(REW, EPI, TRAJ.double(), torch.tensor([0, 0, 1]))


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_device_follows_inputs(device):
    out = gigpo_advantages(REW.to(device), EPI.to(device), TRAJ.to(device), anchor_groups(ANCH, EPI).to(device), gamma=0.5)
    assert out.advantages.device.type == device
    cpu = gigpo_advantages(REW, EPI, TRAJ, anchor_groups(ANCH, EPI), gamma=0.5)
    torch.testing.assert_close(out.advantages.cpu(), cpu.advantages, **F64)
