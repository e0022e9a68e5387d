"""Group-relative advantages against hand-computed values and a loop reference."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from polab.estimators.advantages import (
    GRPO_CONVENTIONS,
    batch_whiten,
    broadcast_to_tokens,
    dr_grpo_advantages,
    group_advantages,
    rloo_advantages,
    sequence_advantages,
)

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)
F32 = dict(rtol=1e-5, atol=1e-6)  # float32 round-off (STYLE.md)


def loop_reference(rewards, ids, *, scale, std, epsilon, singleton="zero"):
    """Plain-Python reference: one group at a time, statistics by definition."""
    r = [float(x) for x in rewards]
    g = [int(x) for x in ids]
    n_all = len(r)
    mu_all = sum(r) / n_all
    ddof = 1 if std == "unbiased" else 0
    bstd = math.sqrt(sum((x - mu_all) ** 2 for x in r) / (n_all - ddof)) if n_all > ddof else 0.0
    out = []
    for i in range(n_all):
        members = [r[j] for j in range(n_all) if g[j] == g[i]]
        n = len(members)
        mu = sum(members) / n
        if n == 1:
            if singleton == "zero":
                out.append(0.0)
            else:
                out.append(r[i] / (1 + epsilon) if scale != "none" else r[i])
            continue
        s = math.sqrt(sum((x - mu) ** 2 for x in members) / (n - ddof))
        if scale == "group":
            out.append((r[i] - mu) / (s + epsilon))
        elif scale == "batch":
            out.append((r[i] - mu) / (bstd + epsilon))
        else:
            out.append(r[i] - mu)
    return torch.tensor(out, dtype=torch.float64)


def test_hand_values_verl_trl_openrlhf():
    # rewards (1, 0): mean 1/2, unbiased std sqrt(1/2) -> A = +-(1/2)/(sqrt(1/2) + eps)
    r = torch.tensor([1.0, 0.0], dtype=torch.float64)
    ids = torch.tensor([0, 0])
    for conv, eps in [("verl", 1e-6), ("trl", 1e-4), ("openrlhf", 1e-9)]:
        a = group_advantages(r, ids, convention=conv).advantages
        expect = 0.5 / (math.sqrt(0.5) + eps)
        torch.testing.assert_close(a, torch.tensor([expect, -expect], dtype=torch.float64), **F64)
    # population std of (1, 0) is 1/2 -> A = +-(1/2)/(1/2 + eps)
    a = group_advantages(r, ids, std="population", epsilon=0.0).advantages
    torch.testing.assert_close(a, torch.tensor([1.0, -1.0], dtype=torch.float64), **F64)


def test_hand_values_binary_group_of_16():
    # 4 successes in 16: mean |A| = 2 sqrt(q(1-q)) sqrt((G-1)/G) = 0.838525... (theory_core.md 1.2);
    # epsilon = 1e-6 perturbs it by a relative ~1e-6/s (s = 0.447), so rtol 1e-5.
    r = torch.tensor([1.0] * 4 + [0.0] * 12, dtype=torch.float64)
    a = group_advantages(r, torch.zeros(16, dtype=torch.long)).advantages
    q = 0.25
    closed = 2 * math.sqrt(q * (1 - q)) * math.sqrt(15 / 16)
    assert a.abs().mean().item() == pytest.approx(closed, rel=1e-5)


def test_rloo_hand_values():
    # (1, 2, 3): baselines (2+3)/2, (1+3)/2, (1+2)/2 -> -1.5, 0, 1.5
    a = rloo_advantages(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([5, 5, 5])).advantages
    torch.testing.assert_close(a, torch.tensor([-1.5, 0.0, 1.5], dtype=torch.float64), **F64)


def test_rloo_singleton_conventions_of_verl():
    # groups {1, 2, 3} (id 5) and the singleton {7} (id 9).
    # verl 0.9.1 rloo_vectorized: (c*r - sum)/(c-1) * (c > 1) -> 0 for the singleton;
    # verl 0.9.1 rloo (loop): id2mean = 0 for a singleton and the score is left as is -> 7.
    r = torch.tensor([1.0, 2.0, 7.0, 3.0], dtype=torch.float64)
    ids = torch.tensor([5, 5, 9, 5])
    zero = rloo_advantages(r, ids)
    raw = rloo_advantages(r, ids, singleton="raw")
    torch.testing.assert_close(zero.advantages, torch.tensor([-1.5, 0.0, 0.0, 1.5], dtype=torch.float64), **F64)
    torch.testing.assert_close(raw.advantages, torch.tensor([-1.5, 0.0, 7.0, 1.5], dtype=torch.float64), **F64)
    assert raw.group_mean[2].item() == 0.0 and zero.group_mean[2].item() == 7.0
    with pytest.raises(ValueError, match="singleton must be"):
        rloo_advantages(r, ids, singleton="mean")


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -1e-3])
def test_group_advantages_rejects_a_non_finite_or_negative_epsilon(eps):
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
        group_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), epsilon=eps)


def test_batch_std_hand_values():
    # groups {1, 0} and {3, 3}: group means 1/2 and 3; batch unbiased std of (1,0,3,3):
    # mean 7/4, sum sq dev = (9+49+25+25)/16 = 108/16, var = 108/48 = 9/4, std = 3/2
    r = torch.tensor([1.0, 0.0, 3.0, 3.0], dtype=torch.float64)
    a = group_advantages(r, torch.tensor([0, 0, 1, 1]), scale="batch", epsilon=0.0).advantages
    torch.testing.assert_close(a, torch.tensor([1 / 3, -1 / 3, 0.0, 0.0], dtype=torch.float64), **F64)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("std", ["unbiased", "population"])
@pytest.mark.parametrize("singleton", ["zero", "raw"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_matches_loop(scale, std, singleton, seed):
    g = torch.Generator().manual_seed(seed)
    n = 40
    ids = torch.randint(0, 12, (n,), generator=g) * 7 - 20  # any integers, unsorted, some singletons likely
    r = torch.randn(n, generator=g, dtype=torch.float64)
    r[ids == ids[0]] = 0.5  # one zero-variance group
    res = group_advantages(r, ids, scale=scale, std=std, epsilon=1e-6, singleton=singleton)
    ref = loop_reference(r, ids, scale=scale, std=std, epsilon=1e-6, singleton=singleton)
    torch.testing.assert_close(res.advantages, ref, **F64)
    sizes = torch.bincount(torch.unique(ids, return_inverse=True)[1])
    assert res.num_groups == len(sizes)
    assert res.num_singleton_groups == int((sizes == 1).sum())


def test_rloo_matches_loop():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 6, (30,), generator=g)
    r = torch.randn(30, generator=g, dtype=torch.float64)
    out = rloo_advantages(r, ids).advantages
    for i in range(30):
        others = [r[j].item() for j in range(30) if ids[j] == ids[i] and j != i]
        expect = r[i].item() - sum(others) / len(others) if others else 0.0
        assert out[i].item() == pytest.approx(expect, rel=1e-10, abs=1e-12)


def test_float32_follows_input_and_matches_float64():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5, (50,), generator=g)
    r = torch.randn(50, generator=g)
    a32 = group_advantages(r, ids).advantages
    a64 = group_advantages(r.double(), ids).advantages
    assert a32.dtype == torch.float32
    torch.testing.assert_close(a32.double(), a64, **F32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5, (50,), generator=g)
    r = torch.randn(50, generator=g, dtype=torch.float64)
    a = group_advantages(r.cuda(), ids.cuda()).advantages
    assert a.device.type == "cuda"
    torch.testing.assert_close(a.cpu(), group_advantages(r, ids).advantages, **F64)


def test_zero_variance_and_singletons_counted_and_zero():
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 7.0])
    ids = torch.tensor([0, 0, 0, 1, 1, 2])
    res = group_advantages(r, ids)
    assert res.num_zero_variance_groups == 1 and res.num_singleton_groups == 1 and res.num_groups == 3
    assert torch.all(res.advantages[:3] == 0) and res.advantages[5] == 0
    raw = group_advantages(r, ids, singleton="raw", epsilon=1e-6)  # verl: mean 0, std 1
    assert raw.advantages[5].item() == pytest.approx(7.0 / (1 + 1e-6), rel=1e-6)


@pytest.mark.parametrize("value", [0.3, 0.1, 1e-7, -2.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("epsilon", [0.0, 1e-6])
def test_constant_groups_are_exactly_zero_whatever_the_rounding(value, dtype, epsilon):
    # mean(0.3 x 10) != 0.3 in floating point; a constant group must still get A = 0, not noise / tiny std
    r = torch.full((10,), value, dtype=dtype)
    ids = torch.zeros(10, dtype=torch.long)
    for scale in ("group", "batch", "none"):
        res = group_advantages(r, ids, scale=scale, epsilon=epsilon)
        assert torch.all(res.advantages == 0) and res.num_zero_variance_groups == 1
    assert torch.all(rloo_advantages(r, ids).advantages == 0)


def test_permutation_invariance():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 8, (64,), generator=g)
    r = torch.randn(64, generator=g, dtype=torch.float64)
    perm = torch.randperm(64, generator=g)
    a = group_advantages(r, ids).advantages
    torch.testing.assert_close(group_advantages(r[perm], ids[perm]).advantages, a[perm], **F64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(-100, 100)), min_size=1, max_size=30))
def test_dr_grpo_and_rloo_centre_each_group(rows):
    ids = torch.tensor([i for i, _ in rows])
    r = torch.tensor([x for _, x in rows], dtype=torch.float64)
    for res in (dr_grpo_advantages(r, ids), rloo_advantages(r, ids)):
        for gid in ids.unique():
            sel = ids == gid
            # within-group sums vanish up to round-off of values of size <= 100 * group size
            assert abs(res.advantages[sel].sum().item()) <= 1e-9 * max(1.0, r[sel].abs().sum().item())


def test_bad_input_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"non-finite values .* rows 1, 3"):
        group_advantages(torch.tensor([0.0, float("nan"), 1.0, float("inf")]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="same length"):
        group_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \[batch\]"):
        group_advantages(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        group_advantages(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="unknown convention"):
        group_advantages(torch.zeros(3), torch.zeros(3, dtype=torch.long), convention="foo")
    with pytest.raises(ValueError, match="non-finite"):
        rloo_advantages(torch.tensor([float("nan")]), torch.tensor([0]))
    assert set(GRPO_CONVENTIONS) == {"verl", "trl", "openrlhf"}


def test_token_helpers():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float64)
    tok = broadcast_to_tokens(torch.tensor([2.0, -1.0], dtype=torch.float64), mask)
    torch.testing.assert_close(tok, torch.tensor([[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(sequence_advantages(tok, mask), torch.tensor([2.0, -1.0], dtype=torch.float64))


def test_batch_whiten_masked_moments():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.float64)
    w = batch_whiten(x, m, epsilon=0.0)
    # entries 1,2,3,4: mean 2.5, population var 1.25
    expect = (torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64) - 2.5) / math.sqrt(1.25)
    torch.testing.assert_close(w[m.bool()], expect, **F64)
    assert torch.all(w[~m.bool()] == 0)
