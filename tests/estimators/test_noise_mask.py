"""Noise-mask policy: REINFORCE estimator checked by exact enumeration and by Monte Carlo against closed forms.

Ground truths:
* enumeration: 3 binary cells (Bernoulli family), a batch of 2-3 images each with its own
  parameters (a conditional policy) and its own reward table; the estimator's expectation is a
  finite sum over every joint mask and is compared with autograd's gradient of the exact
  objective (float64 round-off);
* Monte Carlo (Beta family, the paper's): the reward is a polynomial in the mask, whose expectation
  has a closed form in the Beta moments; tolerance 5 standard errors per coordinate;
* peers: torch.distributions.Beta (log-density), scipy.stats.beta (sampler, KS test), a numpy loop
  (blur with reflect padding).
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from polab.estimators.noise_mask import (
    authors_policy_loss,
    gaussian_kernel1d,
    mask_baseline,
    mask_cell_log_prob,
    mask_log_prob,
    reinforce_mask_loss,
    sample_mask,
    upsample_mask,
)

F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off (STYLE.md)
CELLS = 3
ALL_MASKS = torch.tensor(list(itertools.product([0.0, 1.0], repeat=CELLS)), dtype=torch.float64)  # [8, 3]


def _instance(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, CELLS, generator=g, dtype=torch.float64)  # per-image parameters (conditional policy)
    table = torch.randn(n, len(ALL_MASKS), generator=g, dtype=torch.float64) + 2.0  # R(x_i, m), offset so baselines matter
    return logits, table


def _exact_gradient(logits, table):
    """grad of J = (1/n) sum_i sum_m p_i(m) R_i(m), by autograd of the finite sum."""
    th = logits.clone().requires_grad_(True)
    lp = torch.stack([mask_log_prob(ALL_MASKS, th[i].expand(len(ALL_MASKS), CELLS), family="bernoulli")
                      for i in range(th.shape[0])])  # [n, 8]
    J = (lp.exp() * table).sum(1).mean()
    (g,) = torch.autograd.grad(J, th)
    return g


def _expected_estimate(logits, table, loss_fn):
    """sum over every joint mask (m_1, ..., m_n) of prod_i p_i(m_i) times the estimate -grad(loss)."""
    n = logits.shape[0]
    with torch.no_grad():
        p = torch.stack([mask_log_prob(ALL_MASKS, logits[i].expand(len(ALL_MASKS), CELLS), family="bernoulli").exp()
                         for i in range(n)])  # [n, 8]
    total = torch.zeros_like(logits)
    for combo in itertools.product(range(len(ALL_MASKS)), repeat=n):
        th = logits.clone().requires_grad_(True)
        masks = ALL_MASKS[list(combo)]
        reward = table[torch.arange(n), list(combo)]
        loss = loss_fn(masks, th, reward)
        (g,) = torch.autograd.grad(loss, th)
        total += -g * torch.prod(p[torch.arange(n), list(combo)])
    return total


@pytest.mark.parametrize("n", [2, 3])
def test_reinforce_is_unbiased_by_enumeration_and_batch_mean_is_shrunk(n):
    logits, table = _instance(n, seed=n)
    exact = _exact_gradient(logits, table)
    assert exact.abs().max() > 1e-2  # a non-trivial instance

    def loss(baseline):
        return lambda m, th, r: reinforce_mask_loss(mask_log_prob(m, th, family="bernoulli"), r, baseline=baseline)

    for baseline in ("leave-one-out", "none", 1.7):  # unbiased: b_i does not depend on m_i
        torch.testing.assert_close(_expected_estimate(logits, table, loss(baseline)), exact, **F64)
    # batch mean including R_i: E g = (1 - 1/n) grad J exactly (derived in the module docstring)
    torch.testing.assert_close(_expected_estimate(logits, table, loss("batch-mean")), (1 - 1 / n) * exact, **F64)


def test_authors_objective_by_enumeration():
    """Policy part of the authors' loss (cost detached): with summed cell log-densities its expected
    descent direction is (1/n) grad E[cost]; with their log-sum-exp it is not parallel to it here."""
    n = 2
    logits, table = _instance(n, seed=7)
    cost = table  # a positive cost table (cross-entropy-like: > 0 for this instance)
    assert bool((cost > 0).all())
    exact_cost_grad = _exact_gradient(logits, cost)

    def loss(reduction):
        # -grad(L) is what _expected_estimate accumulates; L = mean cost * mean rho: descent on the cost
        return lambda m, th, c: authors_policy_loss(mask_cell_log_prob(m, th, family="bernoulli"), c.detach(), reduction=reduction)

    summed = _expected_estimate(logits, cost, loss("sum"))
    torch.testing.assert_close(summed, -exact_cost_grad / n, **F64)
    lse = _expected_estimate(logits, cost, loss("logsumexp"))
    cos = torch.nn.functional.cosine_similarity(lse.flatten(), -exact_cost_grad.flatten(), dim=0)
    assert cos < 0.95, float(cos)  # measured 0.52 on this instance: a different direction, not round-off


def _beta_moments(a, b):
    al, be = a.exp(), b.exp()
    m1 = al / (al + be)
    m2 = al * (al + 1) / ((al + be) * (al + be + 1))
    return m1, m2


@pytest.mark.parametrize("baseline", ["none", "leave-one-out"])
def test_beta_reinforce_matches_closed_form_gradient(baseline):
    """R(m) = w.m + v.m^2 + 3; E R from the Beta moments; estimator mean within 5 standard errors."""
    a0 = torch.tensor([0.3, -0.5, 0.9], dtype=torch.float64)
    b0 = torch.tensor([0.1, 0.6, -0.2], dtype=torch.float64)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    v = torch.tensor([-1.5, 1.0, 2.0], dtype=torch.float64)
    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    m1, m2 = _beta_moments(a, b)
    exact = torch.cat(torch.autograd.grad((w * m1 + v * m2).sum() + 3.0, (a, b)))

    N = 20000
    A = a0.expand(N, 3).clone().requires_grad_(True)  # one row per draw: the row gradient is that draw's estimate
    B = b0.expand(N, 3).clone().requires_grad_(True)
    s = sample_mask(A, B, family="beta", generator=torch.Generator().manual_seed(11))
    assert bool(((s.mask > 0) & (s.mask < 1)).all())
    R = (w * s.mask + v * s.mask ** 2).sum(1) + 3.0
    loss = reinforce_mask_loss(s.log_prob, R, baseline=baseline)
    gA, gB = torch.autograd.grad(loss, (A, B))
    rows = -N * torch.cat([gA, gB], 1)  # per-draw estimates [N, 6]
    est, se = rows.mean(0), rows.std(0) / math.sqrt(N)
    # 5 SE: two-sided normal tail 5.7e-7 per coordinate, 12 coordinates over both parametrisations
    assert bool(((est - exact).abs() <= 5 * se).all()), (est, exact, se)
    if baseline == "leave-one-out":  # the baseline removes the +3 offset's variance: smaller SE than without
        assert se.max() < 1.0


def test_baseline_lowers_variance_without_changing_the_mean():
    """Same draws, baselines none vs leave-one-out: per-draw variance drops by a large factor with offset rewards."""
    N = 4000
    A = torch.zeros(N, 2, dtype=torch.float64, requires_grad=True)
    s = sample_mask(A, family="bernoulli", generator=torch.Generator().manual_seed(3))
    R = 10.0 + s.mask[:, 0]
    var = {}
    for baseline in ("none", "leave-one-out"):
        (g,) = torch.autograd.grad(reinforce_mask_loss(s.log_prob, R, baseline=baseline), A, retain_graph=True)
        var[baseline] = float((-N * g).var(0).sum())
    assert var["leave-one-out"] < var["none"] / 50  # reward offset 10 vs spread 0.5: ratio about 400 in expectation


def test_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    m = torch.rand(5, 4, generator=g, dtype=torch.float64) * 0.98 + 0.01
    ref = torch.distributions.Beta(a.exp(), b.exp()).log_prob(m)  # the authors' call
    torch.testing.assert_close(mask_cell_log_prob(m, a, b, family="beta"), ref, **F64)
    torch.testing.assert_close(mask_log_prob(m, a, b), ref.sum(1), **F64)
    mb = (m > 0.5).to(torch.float64)
    refb = torch.distributions.Bernoulli(logits=a).log_prob(mb)
    torch.testing.assert_close(mask_cell_log_prob(mb, a, family="bernoulli"), refb, **F64)


def test_beta_sampler_against_scipy_and_reproducible():
    a, b = math.log(0.7), math.log(2.5)  # one concentration below 1 exercises the U^(1/a) branch
    A = torch.full((5000, 1), a, dtype=torch.float64)
    B = torch.full((5000, 1), b, dtype=torch.float64)
    s = sample_mask(A, B, generator=torch.Generator().manual_seed(5))
    p = stats.kstest(s.mask[:, 0].numpy(), stats.beta(0.7, 2.5).cdf).pvalue
    assert p > 1e-3, p  # fixed seed; a correct sampler fails at rate 1e-3 over seeds
    s2 = sample_mask(A, B, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s.mask, s2.mask)
    assert s.mask.dtype == torch.float64 and not s.mask.requires_grad


def test_bernoulli_sampler_frequency():
    A = torch.full((4000, 1), 0.4, dtype=torch.float64)
    s = sample_mask(A, family="bernoulli", generator=torch.Generator().manual_seed(1))
    k = int(s.mask.sum())
    p = stats.binomtest(k, 4000, 1 / (1 + math.exp(-0.4))).pvalue
    assert p > 1e-3, (k, p)  # exact binomial test, alpha 1e-3


def test_authors_loss_hand_value_and_scaling():
    lp = torch.tensor([[0.0, math.log(2.0)], [math.log(3.0), math.log(5.0)]], dtype=torch.float64)
    # logsumexp rows: log 3, log 8; mean = (log 3 + log 8)/2; cost 2 -> log 3 + log 8 = log 24
    torch.testing.assert_close(authors_policy_loss(lp, torch.tensor(2.0, dtype=torch.float64)),
                               torch.tensor(math.log(24.0), dtype=torch.float64), **F64)
    # sum rows: log 2, log 15; per-sample cost (1, 3) -> mean 2 -> log 2 + log 15 = log 30
    torch.testing.assert_close(authors_policy_loss(lp, torch.tensor([1.0, 3.0], dtype=torch.float64), reduction="sum"),
                               torch.tensor(math.log(30.0), dtype=torch.float64), **F64)


def test_baselines_hand_values():
    r = torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64)
    torch.testing.assert_close(mask_baseline(r), torch.tensor([4.0, 3.5, 1.5], dtype=torch.float64), **F64)
    torch.testing.assert_close(mask_baseline(r, baseline="batch-mean"), torch.full((3,), 3.0, dtype=torch.float64), **F64)
    torch.testing.assert_close(mask_baseline(r, baseline="none"), torch.zeros(3, dtype=torch.float64), **F64)


def test_gradient_reaches_only_the_policy():
    """The mask is data: the loss's gradient flows to the policy parameters only, never through the draw."""
    a = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    s = sample_mask(a, b, generator=torch.Generator().manual_seed(0))
    clf_w = torch.ones(2, dtype=torch.float64, requires_grad=True)
    reward = (s.mask * clf_w).sum(1)  # depends on a "classifier" parameter
    loss = reinforce_mask_loss(s.log_prob, reward)
    ga, gw = torch.autograd.grad(loss, (a, clf_w), allow_unused=True)
    assert gw is None and ga is not None  # the reward is detached inside the loss


def test_gaussian_kernel_hand_value():
    k = gaussian_kernel1d(3, 1.0)
    e = math.exp(-0.5)
    torch.testing.assert_close(k, torch.tensor([e, 1.0, e], dtype=torch.float64) / (1 + 2 * e), **F64)


def test_upsample_nearest_and_blur_against_loop_reference():
    g = torch.Generator().manual_seed(2)
    m = torch.rand(2, 4, generator=g, dtype=torch.float64)  # grid 2
    up = upsample_mask(m, grid=2, size=4)
    assert up.shape == (2, 1, 4, 4)
    # nearest: pixel p takes cell floor(p * 2 / 4): rows/cols 0-1 -> cell 0, 2-3 -> cell 1
    torch.testing.assert_close(up[0, 0, 3, 1], m[0, 2], **F64)
    torch.testing.assert_close(up[1, 0, 0, 3], m[1, 1], **F64)
    k, sigma = 5, 1.3
    blurred = upsample_mask(m, grid=2, size=6, kernel_size=k, sigma=sigma)
    # numpy loop reference: reflect padding then the full 2-d kernel w w^T
    w = gaussian_kernel1d(k, sigma).numpy()
    plain = upsample_mask(m, grid=2, size=6).numpy()[:, 0]
    ref = np.zeros_like(plain)
    for bi in range(2):
        pad = np.pad(plain[bi], k // 2, mode="reflect")
        for i in range(6):
            for j in range(6):
                ref[bi, i, j] = (np.outer(w, w) * pad[i:i + k, j:j + k]).sum()
    np.testing.assert_allclose(blurred.numpy()[:, 0], ref, rtol=1e-10, atol=1e-12)
    assert blurred.min() >= m.min() - 1e-12 and blurred.max() <= m.max() + 1e-12  # convex combination
    const = upsample_mask(torch.full((1, 9), 0.3, dtype=torch.float64), grid=3, size=9, kernel_size=7, sigma=2.0)
    torch.testing.assert_close(const, torch.full_like(const, 0.3), **F64)


def test_float32_follows_input_dtype():
    a = torch.zeros(3, 4, requires_grad=True)
    s = sample_mask(a, a.detach() + 0.5, generator=torch.Generator().manual_seed(0))
    assert s.mask.dtype == torch.float32 and s.log_prob.dtype == torch.float32
    assert upsample_mask(s.mask, grid=2, size=4, kernel_size=3).dtype == torch.float32


@pytest.mark.parametrize("call, match", [
    (lambda: mask_log_prob(torch.zeros(2, 3), torch.zeros(2, 3), family="gauss"), "family"),
    (lambda: mask_log_prob(torch.zeros(2, 3), torch.zeros(2, 3)), "log_beta is required"),
    (lambda: mask_log_prob(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), family="bernoulli"), "log_beta"),
    (lambda: mask_log_prob(torch.full((2, 3), 0.5), torch.zeros(2, 3), family="bernoulli"), r"\{0, 1\}"),
    (lambda: mask_log_prob(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 3)), "shape"),
    (lambda: mask_baseline(torch.zeros(1)), "at least 2"),
    (lambda: mask_baseline(torch.zeros(3), baseline="median"), "baseline must be"),
    (lambda: reinforce_mask_loss(torch.zeros(3), torch.zeros(4)), "shape"),
    (lambda: upsample_mask(torch.zeros(2, 5), grid=2, size=4), "grid"),
    (lambda: upsample_mask(torch.zeros(2, 4), grid=2, size=4, kernel_size=4), "odd"),
    (lambda: authors_policy_loss(torch.zeros(2, 3), torch.zeros(2, 2)), "cost"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
