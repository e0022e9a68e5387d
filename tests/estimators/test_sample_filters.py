"""PF-PPO filtration and R^2, verl's PF-PPO resampling convention, the Selective Sample Buffer and ARPO's replay."""

import math

import pytest
import torch
from scipy.stats import binom

from polab.estimators.sample_filters import (
    ARPOReplayBuffer,
    SelectiveSampleBuffer,
    filtration_r2,
    pf_ppo_resample,
    pf_ppo_resample_weights,
    policy_filtration,
    rank_filtration_strategies,
)

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)
SCORES = torch.tensor([0.1, 0.9, 0.5, 0.2, 0.3, 0.3, 0.7], dtype=torch.float64)
GROUPS = torch.tensor([0, 0, 0, 0, 1, 1, 1])
ALPHA = 0.001  # per binomial assertion; at most 6 such assertions in this file -> family-wise alpha <= 0.006 under any seed


def within_binomial(count, n, p, alpha=ALPHA):
    """True when ``count`` lies inside the central (1 - alpha) interval of Binomial(n, p)."""
    lo, hi = binom.ppf(alpha / 2, n, p), binom.ppf(1 - alpha / 2, n, p)
    return lo <= count <= hi


def test_filtration_strategies_hand_example():
    bon = policy_filtration(SCORES, GROUPS, strategy="best-of-n")
    assert bon.keep.tolist() == [False, True, False, False, False, False, True]
    bw = policy_filtration(SCORES, GROUPS, strategy="best-worst")
    # group 1 ties at 0.3 for the worst: the earliest row (4) is taken
    assert bw.keep.tolist() == [True, True, False, False, True, False, True]
    assert bw.best.tolist() == [1, 6] and bw.worst.tolist() == [0, 4]
    g = torch.Generator().manual_seed(0)
    counts = {0: 0, 2: 0, 3: 0}
    n = 900
    for _ in range(n):
        br = policy_filtration(SCORES, GROUPS, strategy="best-random", generator=g).keep
        assert br[1] and br[6] and int(br[:4].sum()) == 2 and int(br[4:].sum()) == 2
        counts[[i for i in (0, 2, 3) if br[i]][0]] += 1
    assert all(within_binomial(c, n, 1 / 3) for c in counts.values()), counts


def test_verl_pf_ppo_weights_hand_values():
    # verl volcengine/verl 012be9d, verl/trainer/ppo/core_algos.py::compute_pf_ppo_reweight_data: weights over the
    # whole batch, then clamp(w + 1e-8, min=1e-8) and multinomial resampling with replacement.
    s = torch.tensor([1.0, -2.0, 0.5, -2.0], dtype=torch.float64)
    torch.testing.assert_close(pf_ppo_resample_weights(s, method="pow", power=2.0),
                               torch.tensor([1.0, 4.0, 0.25, 4.0], dtype=torch.float64) + 1e-8, **F64)
    torch.testing.assert_close(pf_ppo_resample_weights(s, method="max_min"),
                               torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64) + 1e-8, **F64)
    torch.testing.assert_close(pf_ppo_resample_weights(s, method="max_random"),
                               torch.tensor([0.4, 0.1, 0.1, 0.1], dtype=torch.float64) + 1e-8, **F64)


def test_resampling_frequencies():
    g = torch.Generator().manual_seed(1)
    idx = pf_ppo_resample(torch.tensor([0.0, 1.0, 0.0, 3.0]), 2000, generator=g)
    assert set(idx.tolist()) <= {1, 3}
    assert within_binomial(int((idx == 3).sum()), 2000, 0.75)


def test_r2_hand_values():
    # s = (0, 1, 2), y = (0, 2, 1): slope 1/2, intercept 1/2, residuals (-1/2, 1, -1/2): R^2 = 1 - 1.5/2 = 0.25
    out = filtration_r2([0.0, 1.0, 2.0], [0.0, 2.0, 1.0])
    assert abs(out.r2 - 0.25) < 1e-12 and abs(out.slope - 0.5) < 1e-12 and abs(out.intercept - 0.5) < 1e-12 and out.n == 3
    assert abs(filtration_r2([0.0, 1.0, 2.0, 5.0], [1.0, 3.0, 5.0, 11.0]).r2 - 1.0) < 1e-12  # exactly linear
    kept = filtration_r2([0.0, 1.0, 2.0], [0.0, 2.0, 1.0], keep=[True, False, True])
    assert abs(kept.r2 - 1.0) < 1e-12 and kept.n == 2
    assert math.isnan(filtration_r2([1.0, 1.0], [0.0, 1.0]).r2)  # constant reward-model scores: undefined
    assert math.isnan(filtration_r2([1.0], [0.0]).r2)


def test_rank_strategies_prefers_the_reliable_extremes():
    # the reward model is right about the best and worst response of each prompt and swaps the middle two
    rm = torch.tensor([0.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    true = torch.tensor([0.0, 2.0, 1.0, 3.0, 1.0, 3.0, 2.0, 4.0], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    ranked = rank_filtration_strategies(rm, true, ids, strategies=("none", "best-worst"), generator=torch.Generator().manual_seed(0))
    assert list(ranked) == ["best-worst", "none"]
    assert abs(ranked["best-worst"].r2 - 1.0) < 1e-12 and ranked["none"].r2 < 0.9


def test_selective_sample_buffer():
    buf = SelectiveSampleBuffer(capacity=3)
    assert buf.add(["a", "zero", "b"], torch.tensor([1.0, 0.0, 3.0])) == 2  # zero advantage is not stored
    assert buf.payloads == ["a", "b"]
    g = torch.Generator().manual_seed(2)
    n = 2000
    picks = [buf.sample(1, generator=g)[0] for _ in range(n)]
    assert within_binomial(picks.count("b"), n, 0.75)
    assert sorted(buf.sample(5, generator=g)) == ["a", "b"]  # without replacement, at most the buffer
    buf.add(["c", "d"], [0.5, 0.5])  # capacity 3: the oldest ("a") leaves
    assert buf.payloads == ["b", "c", "d"] and buf.priorities == [3.0, 0.5, 0.5]
    other = SelectiveSampleBuffer(capacity=3)
    other.load_state_dict(buf.state_dict())
    assert other.state_dict() == buf.state_dict()
    with pytest.raises(ValueError, match="priorities must be >= 0"):
        buf.add(["x"], [-1.0])


def test_arpo_replay_buffer():
    buf = ARPOReplayBuffer(capacity_per_task=2)
    assert buf.update(["t1", "t1", "t2", "t1", "t1"], [1.0, 0.05, 0.0, 0.5, 0.9], ["s1", "f", "f", "s2", "s3"]) == 3
    assert buf.buffers == {"t1": [("s2", 0.5), ("s3", 0.9)]}  # successes only, FIFO of 2
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    tasks = ["t1"] * 3 + ["t1"] * 3 + ["t3"] * 3
    assert buf.all_failed(rewards, groups) == {0: True, 1: False, 2: True}
    g = torch.Generator().manual_seed(3)
    inj = buf.plan_injections(rewards, groups, tasks, generator=g)
    assert len(inj) == 1  # group 1 has a success; group 2's task has nothing buffered
    assert inj[0].group == 0 and inj[0].row in (0, 1, 2) and inj[0].payload in ("s2", "s3")
    copy = ARPOReplayBuffer(capacity_per_task=2)
    copy.load_state_dict(buf.state_dict())
    assert copy.buffers == buf.buffers


def test_bad_inputs():
    with pytest.raises(ValueError, match="generator"):
        policy_filtration(SCORES, GROUPS, strategy="best-random")
    with pytest.raises(ValueError, match="strategy"):
        policy_filtration(SCORES, GROUPS, strategy="top-2")
    with pytest.raises(ValueError, match="same length"):
        policy_filtration(SCORES, GROUPS[:3], strategy="best-of-n")
    with pytest.raises(ValueError, match="method"):
        pf_ppo_resample_weights(SCORES, method="median")
    with pytest.raises(ValueError, match="positive"):
        pf_ppo_resample(torch.zeros(3), generator=torch.Generator())
    with pytest.raises(ValueError, match="align"):
        ARPOReplayBuffer().update(["a"], [1.0, 0.0], ["x"])
