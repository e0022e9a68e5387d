"""BAD / POAD token-level GAE: hand values and the invariances of the backup."""

import pytest
import torch

from polab.estimators.action_decomposition import action_level_td_errors, bad_discounts, bad_gae, naive_token_gae
from polab.estimators.gae import token_gae

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)


def random_episode(seed, B=3, T=12):
    """Rows of actions of random lengths separated by observation tokens (mask 0); reward on each action's last token."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T, dtype=torch.float64)
    end = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        t = 0
        while t < T:
            n = int(torch.randint(1, 4, (1,), generator=g))
            if t + n > T:
                break
            mask[b, t:t + n] = 1
            end[b, t + n - 1] = 1
            t += n + int(torch.randint(0, 2, (1,), generator=g))  # an observation token sometimes
    r = torch.randn(B, T, generator=g, dtype=torch.float64) * end
    v = torch.randn(B, T, generator=g, dtype=torch.float64)
    return r, v, mask, end


def test_hand_example_bad_versus_naive():
    # one action of three tokens, reward 1 on its last token, V = 0, gamma = 0.5, lambda = 1:
    # BAD does not discount inside the action -> every token gets 1; naive token GAE gets 0.25, 0.5, 1.
    r = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    v = torch.zeros_like(r)
    m = torch.ones_like(r)
    e = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(bad_gae(r, v, e, m, gamma=0.5, lambda_=1.0).advantages, torch.ones_like(r), **F64)
    torch.testing.assert_close(naive_token_gae(r, v, m, gamma=0.5, lambda_=1.0).advantages,
                               torch.tensor([[0.25, 0.5, 1.0]], dtype=torch.float64), **F64)
    torch.testing.assert_close(bad_discounts(e, m, gamma=0.5), torch.tensor([[1.0, 1.0, 0.5]], dtype=torch.float64))


def test_single_token_actions_equal_token_gae():
    g = torch.Generator().manual_seed(2)
    r = torch.randn(4, 7, generator=g, dtype=torch.float64)
    v = torch.randn(4, 7, generator=g, dtype=torch.float64)
    m = torch.ones(4, 7, dtype=torch.float64)
    m[1, 5:] = 0
    for gamma, lam in [(0.9, 0.95), (1.0, 0.5), (0.5, 0.0)]:
        a = bad_gae(r * m, v, m.clone(), m, gamma=gamma, lambda_=lam)
        b = token_gae(r * m, v, m, gamma=gamma, lambda_=lam)
        torch.testing.assert_close(a.advantages, b.advantages, **F64)
        torch.testing.assert_close(a.returns, b.returns, **F64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_action_td_errors_telescope_to_action_level_td(seed):
    r, v, m, e = random_episode(seed)
    gamma = 0.9
    res = bad_gae(r, v, e, m, gamma=gamma, lambda_=0.7)
    sums = action_level_td_errors(res.deltas, e, m)
    for b in range(r.shape[0]):
        starts = [t for t in range(r.shape[1]) if m[b, t] and (t == 0 or e[b, t - 1] or not m[b, t - 1])]
        ends = [t for t in range(r.shape[1]) if e[b, t]]
        for k, (s, t) in enumerate(zip(starts, ends)):
            v_next = v[b, starts[k + 1]] if k + 1 < len(starts) else 0.0
            torch.testing.assert_close(sums[b, t], r[b, t] + gamma * v_next - v[b, s], **F64)


@pytest.mark.parametrize("seed", [3, 4])
def test_first_token_carries_action_level_gae_when_lambda_intra_is_one(seed):
    r, v, m, e = random_episode(seed)
    gamma, lam = 0.95, 0.8
    res = bad_gae(r, v, e, m, gamma=gamma, lambda_=lam, lambda_intra=1.0)
    for b in range(r.shape[0]):
        starts = [t for t in range(r.shape[1]) if m[b, t] and (t == 0 or e[b, t - 1] or not m[b, t - 1])]
        ends = [t for t in range(r.shape[1]) if e[b, t]]
        # action-level GAE by definition on values at action starts
        V = [float(v[b, s]) for s in starts] + [0.0]
        R = [float(r[b, t]) for t in ends]
        d = [R[k] + gamma * V[k + 1] - V[k] for k in range(len(R))]
        for k, s in enumerate(starts):
            want = sum((gamma * lam) ** l * d[k + l] for l in range(len(d) - k))
            assert abs(float(res.advantages[b, s]) - want) <= 1e-10 * max(1.0, abs(want))


def test_bad_inputs_are_rejected_with_the_fix():
    m = torch.ones(1, 3)
    with pytest.raises(ValueError, match="last token"):
        bad_gae(torch.tensor([[1.0, 0.0, 0.0]]), torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]), m, gamma=0.9, lambda_=1.0)
    with pytest.raises(ValueError, match="outside mask"):
        bad_gae(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]), gamma=0.9, lambda_=1.0)
    with pytest.raises(ValueError, match="does not end an action"):
        bad_gae(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]), m, gamma=0.9, lambda_=1.0)
    with pytest.raises(ValueError, match="gamma"):
        bad_discounts(torch.tensor([[0.0, 0.0, 1.0]]), m, gamma=2.0)
