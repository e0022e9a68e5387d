"""Token GAE, extended GAE (T-PPO), PPO value loss and KL-shaped rewards against hand-derived values."""

import math

import pytest
import torch

from polab.estimators.gae import (
    PPO_RECIPE_DEFAULTS,
    clipped_value_loss,
    extended_gae,
    generalized_advantage_estimation,
    kl_shaped_rewards,
    masked_whiten,
    token_gae,
    truncated_ppo_token_masks,
)

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)
F32 = dict(rtol=1e-5, atol=1e-6)  # float32 round-off (STYLE.md)


def loop_gae(r, v, m, gamma, lam, boot=None):
    """Plain-Python GAE over the masked tokens of each row, by definition (sum of discounted TD errors)."""
    out = []
    for i in range(len(r)):
        idx = [t for t in range(len(r[i])) if m[i][t]]
        vals = [v[i][t] for t in idx] + [0.0 if boot is None else boot[i]]
        deltas = [r[i][t] + gamma * vals[k + 1] - vals[k] for k, t in enumerate(idx)]
        row = [0.0] * len(r[i])
        for k, t in enumerate(idx):
            row[t] = sum((gamma * lam) ** l * deltas[k + l] for l in range(len(idx) - k))
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def test_hand_example_and_closed_forms():
    r = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 0.25, 0.5]], dtype=torch.float64)
    m = torch.ones_like(r)
    # gamma = lambda = 1: deltas (-0.25, 0.25, 0.5); A_t = sum of later deltas = (0.5, 0.75, 0.5) = 1 - V_t
    res = generalized_advantage_estimation(r, v, m, gamma=1.0, lambda_=1.0)
    torch.testing.assert_close(res.deltas, torch.tensor([[-0.25, 0.25, 0.5]], dtype=torch.float64), **F64)
    torch.testing.assert_close(res.advantages, torch.tensor([[0.5, 0.75, 0.5]], dtype=torch.float64), **F64)
    torch.testing.assert_close(res.returns, torch.ones_like(r), **F64)
    # lambda = 0: A_t = delta_t (one-step TD error)
    res0 = generalized_advantage_estimation(r, v, m, gamma=0.9, lambda_=0.0)
    d = torch.tensor([[0.9 * 0.25 - 0.5, 0.9 * 0.5 - 0.25, 1.0 - 0.5]], dtype=torch.float64)
    torch.testing.assert_close(res0.advantages, d, **F64)
    # gamma = 0.5, lambda = 0.5: A_2 = 0.5, A_1 = (0.5*0.5-0.25) + 0.25*0.5 = 0.125, A_0 = (0.125-0.5) + 0.25*0.125
    resh = generalized_advantage_estimation(r, v, m, gamma=0.5, lambda_=0.5)
    torch.testing.assert_close(resh.advantages, torch.tensor([[-0.34375, 0.125, 0.5]], dtype=torch.float64), **F64)


def test_matches_loop_reference_with_skipped_tokens():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(5, 9, generator=g, dtype=torch.float64)
    v = torch.randn(5, 9, generator=g, dtype=torch.float64)
    m = (torch.rand(5, 9, generator=g) > 0.3).double()
    m[:, 0] = 1
    boot = torch.randn(5, generator=g, dtype=torch.float64)
    for gamma, lam in [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0)]:
        got = generalized_advantage_estimation(r, v, m, gamma=gamma, lambda_=lam, bootstrap_values=boot).advantages
        want = loop_gae(r.tolist(), v.tolist(), m.tolist(), gamma, lam, boot.tolist())
        torch.testing.assert_close(got, want, **F64)


def test_verl_gae_convention_hand_values():
    # verl volcengine/verl 012be9d, verl/trainer/ppo/core_algos.py::compute_gae_advantage_return: masked tokens are
    # skipped (value and GAE carried over), returns = raw advantages + values, then masked_whiten with the
    # Bessel-corrected variance and rsqrt(var + 1e-8) (verl/utils/torch_functional.py).
    # Row: rewards (0, 0, 0, 1), values (0.5, 9, 0.25, 0.5), mask (1, 0, 1, 1), gamma = lambda = 1.
    # Token 1 is skipped: A_3 = 1 - 0.5 = 0.5; A_2 = (0 + 0.5 - 0.25) + 0.5 = 0.75; A_0 = (0 + 0.25 - 0.5) + 0.75 = 0.5.
    r = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 9.0, 0.25, 0.5]], dtype=torch.float64)
    m = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    res = token_gae(r, v, m, gamma=1.0, lambda_=1.0, whiten="verl")
    raw = [0.5, 0.75, 0.5]
    mu = sum(raw) / 3  # 7/12
    var = sum((x - mu) ** 2 for x in raw) / 2  # Bessel: divide by n - 1
    expect = [(x - mu) / math.sqrt(var + 1e-8) for x in raw]
    torch.testing.assert_close(res.advantages[0, [0, 2, 3]], torch.tensor(expect, dtype=torch.float64), **F64)
    assert res.advantages[0, 1] == 0.0
    torch.testing.assert_close(res.returns, torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64), **F64)
    # population whitening divides by n instead
    pop = token_gae(r, v, m, gamma=1.0, lambda_=1.0, whiten="population").advantages
    var_p = sum((x - mu) ** 2 for x in raw) / 3
    torch.testing.assert_close(pop[0, 0], torch.tensor((0.5 - mu) / math.sqrt(var_p + 1e-8), dtype=torch.float64), **F64)


def test_extended_gae_identity_with_full_response():
    # Truncate a response after L tokens and bootstrap with the critic's V(s_L): for every t < L,
    # A_full_t = A_egae_t + (gamma*lambda)^(L-t) * A_full_L (exact; derivation in extended_gae's docstring).
    g = torch.Generator().manual_seed(1)
    T, L = 10, 6
    r = torch.randn(3, T, generator=g, dtype=torch.float64)
    v = torch.randn(3, T, generator=g, dtype=torch.float64)
    m = torch.ones(3, T, dtype=torch.float64)
    gamma, lam = 0.97, 0.9
    full = token_gae(r, v, m, gamma=gamma, lambda_=lam).advantages
    cut = extended_gae(r[:, :L], v[:, :L], m[:, :L], torch.ones(3, dtype=torch.bool), v[:, L], gamma=gamma, lambda_=lam).advantages
    for t in range(L):
        torch.testing.assert_close(cut[:, t] + (gamma * lam) ** (L - t) * full[:, L], full[:, t], **F64)


def test_extended_gae_bootstraps_only_truncated_rows():
    r = torch.zeros(2, 3, dtype=torch.float64)
    v = torch.tensor([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], dtype=torch.float64)
    m = torch.ones_like(r)
    res = extended_gae(r, v, m, torch.tensor([True, False]), torch.tensor([0.8, 0.8], dtype=torch.float64), gamma=1.0, lambda_=1.0)
    # truncated row, gamma = lambda = 1, no reward: A_t = V(s_L) - V_t; finished row: A_t = 0 - V_t
    torch.testing.assert_close(res.advantages[0], 0.8 - v[0], **F64)
    torch.testing.assert_close(res.advantages[1], -v[1], **F64)


def test_extended_gae_integer_rewards_keep_a_fractional_bootstrap():
    # Integer rewards used to cast the bootstrap to int64 first (0.7 -> 0). gamma = lambda = 1, values 0,
    # one truncated row of 2 tokens with rewards (0, 1): A_t = 1 + 0.7 on both tokens.
    r = torch.tensor([[0, 1]])
    v = torch.zeros(1, 2, dtype=torch.float64)
    res = extended_gae(r, v, torch.ones(1, 2), torch.tensor([True]), torch.tensor([0.7], dtype=torch.float64),
                       gamma=1.0, lambda_=1.0, truncation="bootstrap")
    assert res.advantages.dtype == torch.get_default_dtype()
    torch.testing.assert_close(res.advantages, torch.tensor([[1.7, 1.7]]), **F32)


def test_extended_gae_last_value_form_of_t_ppo():
    # T-PPO's rule V(s_l) = V(s_{l-1}): gamma = 0.9, lambda = 0.5, truncated row with values (0.2, 0.4, 0.6),
    # rewards (0, 0, 0.1) (KL only, no task score). By hand:
    #   delta_2 = 0.1 + 0.9*0.6 - 0.6 = 0.04;  delta_1 = 0 + 0.9*0.6 - 0.4 = 0.14;  delta_0 = 0.9*0.4 - 0.2 = 0.16
    #   A_2 = 0.04;  A_1 = 0.14 + 0.45*0.04 = 0.158;  A_0 = 0.16 + 0.45*0.158 = 0.2311
    # The finished row (same numbers) is terminal: delta_2 = 0.1 - 0.6 = -0.5 ...
    r = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, 0.1]], dtype=torch.float64)
    v = torch.tensor([[0.2, 0.4, 0.6], [0.2, 0.4, 0.6]], dtype=torch.float64)
    m = torch.ones_like(r)
    res = extended_gae(r, v, m, torch.tensor([True, False]), gamma=0.9, lambda_=0.5)
    torch.testing.assert_close(res.advantages[0], torch.tensor([0.2311, 0.158, 0.04], dtype=torch.float64), **F64)
    terminal = token_gae(r[1:], v[1:], m[1:], gamma=0.9, lambda_=0.5).advantages[0]
    torch.testing.assert_close(res.advantages[1], terminal, **F64)
    # padding after the cut: the last *response* token's value is used, not the last column's
    m2 = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    v2 = torch.tensor([[0.2, 0.4, 99.0]], dtype=torch.float64)
    res2 = extended_gae(torch.zeros(1, 3, dtype=torch.float64), v2, m2, torch.tensor([True]), gamma=1.0, lambda_=1.0)
    torch.testing.assert_close(res2.advantages, torch.tensor([[0.2, 0.0, 0.0]], dtype=torch.float64), **F64)  # A_0 = V_1 - V_0
    # bootstrap_values selects polab's earlier form; passing one with 'last-value' is an error
    with pytest.raises(ValueError, match="not used with truncation='last-value'"):
        extended_gae(r, v, m, torch.tensor([True, False]), v[:, 2], truncation="last-value")
    with pytest.raises(ValueError, match="needs bootstrap_values"):
        extended_gae(r, v, m, torch.tensor([True, False]), truncation="bootstrap")


def test_truncated_ppo_token_masks_hand_example():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    out = truncated_ppo_token_masks(mask, torch.tensor([False, True, False]), torch.tensor([2, 3, 0]))
    torch.testing.assert_close(out.policy_mask, torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.float32))
    torch.testing.assert_close(out.value_mask, torch.tensor([[1, 1, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.float32))


def test_clipped_value_loss_hand_values():
    vp = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    vo = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    R = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    m = torch.ones(1, 2, dtype=torch.float64)
    # token 0: unclipped (1-2)^2 = 1, clipped V = 0.7 -> (0.7-2)^2 = 1.69 -> max 1.69; token 1: both (0-1)^2 = 1
    out = clipped_value_loss(vp, vo, R, m, clip_range=0.2)
    torch.testing.assert_close(out.loss, torch.tensor(0.5 * (1.69 + 1.0) / 2, dtype=torch.float64), **F64)
    assert out.clip_fraction == 0.5
    out.loss.backward()  # gradient flows only through the larger (clipped, constant) term on token 0
    torch.testing.assert_close(vp.grad, torch.tensor([[0.0, 0.5 * (0.0 - 1.0)]], dtype=torch.float64), **F64)
    free = clipped_value_loss(vp.detach(), vo, R, m, clip_range=None)
    torch.testing.assert_close(free.loss, torch.tensor(0.5 * (1.0 + 1.0) / 2, dtype=torch.float64), **F64)


def test_kl_shaped_rewards_hand_values():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-0.5, -1.0, 0.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float64)
    r = kl_shaped_rewards(torch.tensor([2.0, -1.0], dtype=torch.float64), lp, ref, m, kl_coef=0.1)
    # -0.1*(lp - ref) per token, score on the last response token (index 2, index 1)
    expect = torch.tensor([[-0.05, 0.0, 0.1 + 2.0], [0.05, 0.0 - 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(r, expect, **F64)


def test_recipe_defaults_and_dtype_follow_inputs():
    assert PPO_RECIPE_DEFAULTS == {"gamma": 1.0, "lambda_": 0.95}
    r = torch.zeros(2, 4)
    v = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    res = token_gae(r, v, torch.ones(2, 4), **PPO_RECIPE_DEFAULTS)
    assert res.advantages.dtype == torch.float32
    torch.testing.assert_close(res.returns, res.advantages + v, **F32)


def test_masked_whiten_needs_two_entries_and_zeroes_outside():
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    out = masked_whiten(x, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    assert out[2] == 0
    torch.testing.assert_close(out[:2], torch.tensor([-0.5, 0.5], dtype=torch.float64) / math.sqrt(0.5 + 1e-8), **F64)  # mean 1.5, Bessel var 0.5
    with pytest.raises(ValueError, match="at least 2"):
        masked_whiten(x, torch.tensor([1.0, 0.0, 0.0]))


def test_values_off_the_mask_may_be_anything():
    v = torch.tensor([[0.5, float("nan"), float("-inf")]], dtype=torch.float64)
    res = token_gae(torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64) + torch.tensor([[1.0, 0.0, 0.0]]), v,
                    torch.tensor([[1.0, 0.0, 0.0]]), gamma=1.0, lambda_=1.0)
    torch.testing.assert_close(res.advantages, torch.tensor([[0.5, 0.0, 0.0]], dtype=torch.float64), **F64)


def test_bad_inputs_name_the_argument():
    r = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="rewards and values"):
        token_gae(r, torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="gamma"):
        token_gae(r, r, torch.ones(2, 3), gamma=1.5)
    with pytest.raises(ValueError, match="lambda_"):
        token_gae(r, r, torch.ones(2, 3), lambda_=-0.1)
    with pytest.raises(ValueError, match="mask"):
        token_gae(r, r, torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="non-finite"):
        token_gae(torch.tensor([[float("nan"), 0.0, 0.0]]), torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="bootstrap_values"):
        extended_gae(r, r, torch.ones(2, 3), torch.tensor([True, False]), torch.zeros(3))
    with pytest.raises(ValueError, match="no response token"):
        kl_shaped_rewards(torch.zeros(2), r, r, torch.tensor([[1, 1, 1], [0, 0, 0]]), kl_coef=0.1)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_follow_the_input_device_and_match_the_loop(device):
    g = torch.Generator().manual_seed(5)
    r, v = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    m = torch.ones(3, 6, dtype=torch.float64)
    m[0, 4:] = 0
    res = extended_gae(r.to(device), v.to(device), m.to(device), torch.tensor([True, False, True], device=device),
                       torch.ones(3, dtype=torch.float64, device=device), gamma=0.9, lambda_=0.8)
    assert res.advantages.device.type == device
    boot = [1.0, 0.0, 1.0]
    torch.testing.assert_close(res.advantages.cpu(), loop_gae(r.tolist(), v.tolist(), m.tolist(), 0.9, 0.8, boot), **F64)
