"""polab.estimators.smoothing_certificates: tail bounds, certificate curves, vacuous cases, input errors, coverage."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest
from statsmodels.stats.proportion import proportion_confint

from polab.estimators.smoothing_certificates import (
    SmoothingCertificate,
    certify_returns,
    clopper_pearson_tail_lower_bounds,
    dkw_tail_lower_bounds,
    empirical_tail,
)
from polab.theory.policy_smoothing import certified_expected_reward, certified_percentile

RTOL = 1e-10  # float64


def _returns(n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.binomial(torch.full((n,), 50.0, dtype=torch.float64), torch.full((n,), 0.8, dtype=torch.float64), generator=g)


def test_empirical_tail_matches_loop():
    r = _returns()
    t = torch.tensor([0.5, 30.0, 40.0, 40.5, 50.0, 51.0], dtype=torch.float64)
    loop = torch.tensor([float((r >= x).double().mean()) for x in t], dtype=torch.float64)
    torch.testing.assert_close(empirical_tail(r, t), loop, rtol=0, atol=0)


def test_dkw_formula():
    r = _returns(500)
    t = torch.arange(1.0, 51.0, dtype=torch.float64)
    eps = math.sqrt(math.log(2 / 0.05) / (2 * 500))
    want = torch.clamp(empirical_tail(r, t) - eps, min=0)
    torch.testing.assert_close(dkw_tail_lower_bounds(r, t, alpha=0.05), want, rtol=RTOL, atol=0)


def test_clopper_pearson_matches_statsmodels():
    # the locuslab/smoothing convention: proportion_confint(k, n, alpha=2 * alpha_each, method="beta")[0]
    r = _returns(300)
    t = torch.tensor([1.0, 35.0, 40.0, 45.0, 49.0, 50.0], dtype=torch.float64)
    got = clopper_pearson_tail_lower_bounds(r, t, alpha=0.05).numpy()
    k = (empirical_tail(r, t).numpy() * 300).round().astype(int)
    want = [proportion_confint(int(kk), 300, alpha=2 * 0.05 / len(t), method="beta")[0] if kk > 0 else 0.0 for kk in k]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)  # statsmodels and scipy share the beta quantile


@pytest.mark.parametrize("method", ["dkw", "clopper-pearson"])
def test_certificate_equals_theory_formula_and_loop(method):
    r = _returns()
    budgets = torch.tensor([0.0, 0.1, 0.3, 0.7, 1.5], dtype=torch.float64)
    thr = torch.arange(1.0, 51.0, dtype=torch.float64)
    c = certify_returns(r, budgets=budgets, sigma=0.5, alpha=0.05, reward_range=(0, 50), method=method, thresholds=thr,
                        percentile_levels=(0.1, 0.5))
    assert isinstance(c, SmoothingCertificate)
    want = certified_expected_reward(thr.numpy(), c.tail_lower_bounds.numpy(), budget=budgets.numpy(), sigma=0.5, reward_min=0.0)
    np.testing.assert_allclose(c.expected_reward.numpy(), want, rtol=RTOL)
    for j, b in enumerate(budgets):  # one budget at a time
        one = certify_returns(r, budgets=[float(b)], sigma=0.5, alpha=0.05, reward_range=(0, 50), method=method, thresholds=thr)
        assert float(one.expected_reward[0]) == pytest.approx(float(c.expected_reward[j]), rel=RTOL)
    pct = certified_percentile(thr.numpy(), c.tail_lower_bounds.numpy(), level=[0.1, 0.5], budget=budgets.numpy(),
                               sigma=0.5, reward_min=0.0)
    np.testing.assert_array_equal(c.percentiles.numpy(), pct)
    assert c.n == 2000 and c.sigma == 0.5 and c.alpha == 0.05 and c.confidence == pytest.approx(0.95)
    assert torch.all(c.expected_reward[1:] <= c.expected_reward[:-1])
    assert float(c.expected_reward[0]) <= c.empirical_mean
    assert not bool(c.vacuous.any()) and c.reason == ""


def test_dkw_default_thresholds_are_the_distinct_returns():
    r = _returns(1000)
    c = certify_returns(r, budgets=[0.0, 0.5], sigma=0.5, reward_range=(0, 50))
    torch.testing.assert_close(c.thresholds, torch.unique(r[r > 0]))
    # with the DKW slack removed (alpha -> 1 is not allowed), B = 0 would give the sample mean; with it, less
    assert float(c.expected_reward[0]) < c.empirical_mean


def test_follows_input_dtype():
    r = _returns(500).float()
    c = certify_returns(r, budgets=[0.0, 0.2], sigma=0.5, reward_range=(0, 50))
    assert c.expected_reward.dtype == torch.float32 and c.tail_lower_bounds.dtype == torch.float32
    c64 = certify_returns(r.double(), budgets=[0.0, 0.2], sigma=0.5, reward_range=(0, 50))
    torch.testing.assert_close(c.expected_reward.double(), c64.expected_reward, rtol=1e-5, atol=1e-4)  # float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_runs_on_cuda():
    r = _returns(500)
    c = certify_returns(r.cuda(), budgets=[0.0, 0.2], sigma=0.5, reward_range=(0, 50))
    assert c.expected_reward.is_cuda
    cpu = certify_returns(r, budgets=[0.0, 0.2], sigma=0.5, reward_range=(0, 50))
    torch.testing.assert_close(c.expected_reward.cpu(), cpu.expected_reward, rtol=1e-10, atol=1e-10)


def test_too_few_episodes_give_an_explicitly_vacuous_certificate():
    # DKW with n = 1: sqrt(ln(2/0.05) / 2) = 1.36 > 1, every tail bound is 0
    c = certify_returns(torch.tensor([40.0]), budgets=[0.0, 1.0], sigma=0.5, reward_range=(0, 50))
    assert bool(c.vacuous.all()) and "cannot certify" in c.reason
    assert torch.all(c.expected_reward == 0.0)  # exactly reward_min, not a number above it
    assert torch.all(c.percentiles == 0.0)
    # every return at the minimum
    c = certify_returns(torch.zeros(100), budgets=[0.0], sigma=0.5, reward_range=(0, 50))
    assert bool(c.vacuous.all()) and float(c.expected_reward[0]) == 0.0
    # a huge budget: the attacked tails underflow, the curve is flagged vacuous there only
    c = certify_returns(_returns(1000), budgets=[0.0, 1e3], sigma=0.5, reward_range=(0, 50),
                        method="clopper-pearson", thresholds=torch.arange(1.0, 51.0))
    assert c.vacuous.tolist() == [False, True] and float(c.expected_reward[1]) == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=-0.5), "sigma"),
        (dict(budgets=[0.1, -0.2]), "budgets"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=1.0), "alpha"),
        (dict(reward_range=(0, 10)), "reward_range"),
        (dict(reward_range=(5, 1)), "reward_range"),
        (dict(method="hoeffding"), "method"),
        (dict(thresholds=[3.0, 2.0]), "strictly increasing"),
        (dict(thresholds=[0.0, 2.0]), "thresholds"),
        (dict(percentile_levels=(0.5, 1.0)), "percentile_levels"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(budgets=[0.0, 0.1], sigma=0.5, alpha=0.05, reward_range=(0, 50)) | kwargs
    with pytest.raises(ValueError, match=match):
        certify_returns(_returns(100), **args)


def test_non_finite_and_misshaped_returns_raise():
    with pytest.raises(ValueError, match="non-finite"):
        certify_returns(torch.tensor([1.0, float("nan")]), budgets=[0.0], sigma=1.0, reward_range=(0, 5))
    with pytest.raises(ValueError, match=r"\[episodes\]"):
        certify_returns(torch.ones(3, 2), budgets=[0.0], sigma=1.0, reward_range=(0, 5))


# --------------------------------------------------------------------------
# coverage (statistical): alpha of the assertion stated in each test
# --------------------------------------------------------------------------
def _population_certificate(budgets, sigma, n_trials=20, q=0.6):
    t = np.arange(1, n_trials + 1, dtype=float)
    return certified_expected_reward(t, binom.sf(t - 1, n_trials, q), budget=budgets, sigma=sigma, reward_min=0.0)


@pytest.mark.parametrize("method", ["dkw", "clopper-pearson"])
def test_coverage_at_least_one_minus_alpha(method):
    # returns ~ Binomial(20, 0.6); a repetition fails if the certificate exceeds the population certificate
    # (built from the exact tails) at some budget. H0: failure rate <= alpha = 0.2; one-sided exact binomial
    # test at level 0.005 (would hold at that level under any seed if the estimator is valid).
    g = torch.Generator().manual_seed(1)
    budgets, sigma, alpha, reps, n = np.array([0.0, 0.2, 0.6]), 0.5, 0.2, 400, 60
    pop = _population_certificate(budgets, sigma)
    thr = torch.arange(1.0, 21.0, dtype=torch.float64)
    fails = 0
    for _ in range(reps):
        r = torch.binomial(torch.full((n,), 20.0, dtype=torch.float64), torch.full((n,), 0.6, dtype=torch.float64), generator=g)
        c = certify_returns(r, budgets=budgets, sigma=sigma, alpha=alpha, reward_range=(0, 20), method=method, thresholds=thr)
        fails += int(np.any(c.expected_reward.numpy() > pop + 1e-9))
    assert binomtest(fails, reps, alpha, alternative="greater").pvalue > 0.005


def test_plug_in_certificate_fails_coverage():
    # negative control: the same formula with the empirical tails (no confidence slack) exceeds the
    # population certificate about half the time; the test above would catch such an estimator.
    g = torch.Generator().manual_seed(2)
    budgets, sigma, reps, n = np.array([0.0, 0.2, 0.6]), 0.5, 200, 60
    pop = _population_certificate(budgets, sigma)
    thr = torch.arange(1.0, 21.0, dtype=torch.float64)
    fails = 0
    for _ in range(reps):
        r = torch.binomial(torch.full((n,), 20.0, dtype=torch.float64), torch.full((n,), 0.6, dtype=torch.float64), generator=g)
        plug = certified_expected_reward(thr.numpy(), empirical_tail(r, thr).numpy(), budget=budgets, sigma=sigma, reward_min=0.0)
        fails += int(np.any(plug > pop + 1e-9))
    assert binomtest(fails, reps, 0.2, alternative="greater").pvalue < 0.005


def test_budget_chunks_agree_with_the_theory_function():
    # 50,000 distinct continuous returns: the [budgets, thresholds] matrix is split into chunks of 83 budgets
    g = torch.Generator().manual_seed(3)
    r = 10.0 * torch.rand(50_000, generator=g, dtype=torch.float64)
    budgets = np.linspace(0, 2, 200)
    c = certify_returns(r, budgets=budgets, sigma=0.5, reward_range=(0, 10), percentile_levels=(0.5,))
    want = certified_expected_reward(c.thresholds.numpy(), c.tail_lower_bounds.numpy(), budget=budgets, sigma=0.5, reward_min=0.0)
    np.testing.assert_allclose(c.expected_reward.numpy(), want, rtol=RTOL)
    pct = certified_percentile(c.thresholds.numpy(), c.tail_lower_bounds.numpy(), level=[0.5], budget=budgets, sigma=0.5,
                               reward_min=0.0)
    np.testing.assert_array_equal(c.percentiles.numpy(), pct)


@pytest.mark.parametrize("method", ["dkw", "clopper-pearson"])
@pytest.mark.parametrize("n", [10, 60, 200])
def test_exact_non_coverage_of_a_single_tail_bound(method, n):
    # exact, no sampling: with returns in {0, 1} and the single threshold 1, the count k ~ Binomial(n, p)
    # and the bound is a function of k, so P[bound > p] = sum_k pmf(k) 1{bound(k) > p} must be <= alpha
    alpha = 0.1
    fn = dkw_tail_lower_bounds if method == "dkw" else clopper_pearson_tail_lower_bounds
    lb = np.array([float(fn(torch.cat([torch.ones(k), torch.zeros(n - k)]).double(), torch.tensor([1.0], dtype=torch.float64),
                            alpha=alpha)[0]) for k in range(n + 1)])
    worst = 0.0
    for p in np.linspace(0.01, 0.99, 99):
        worst = max(worst, float(binom.pmf(np.arange(n + 1), n, p)[lb > p].sum()))
    assert worst <= alpha * (1 + 1e-12)
    if method == "clopper-pearson":
        assert worst > alpha / 4  # and not absurdly conservative: CP is exact-ish for a single threshold


# --------------------------------------------------------------------------
# issue 13/14: float64 arithmetic, clear errors, one alpha-level certificate from two methods
# --------------------------------------------------------------------------
from polab.estimators.smoothing_certificates import (  # noqa: E402
    attacked_tail_lower_bounds,
    certify_returns_bonferroni,
    round_down_to,
)


@pytest.mark.parametrize("method", ["dkw", "clopper-pearson"])
def test_float32_certificate_never_above_float64(method):
    # float32 arithmetic used to give certificates up to ~1e-5 above the float64 value on 0-200 returns
    # (measured 9.9e-6 over these 100 samples before the fix); now computed in float64 and rounded down.
    g = torch.Generator().manual_seed(0)
    budgets = torch.linspace(0, 1, 11, dtype=torch.float64)
    thr = torch.arange(1.0, 201.0) if method == "clopper-pearson" else None
    for _ in range(100):
        r = (torch.rand(50, generator=g) * 200).floor()
        c32 = certify_returns(r, budgets=budgets, sigma=0.4, reward_range=(0, 200), method=method, thresholds=thr)
        c64 = certify_returns(r.double(), budgets=budgets, sigma=0.4, reward_range=(0, 200), method=method, thresholds=thr)
        assert c32.expected_reward.dtype == torch.float32
        assert bool((c32.expected_reward.double() <= c64.expected_reward).all())
        assert bool((c32.tail_lower_bounds.double() <= c64.tail_lower_bounds).all())
        assert bool((c32.percentiles.double() <= c64.percentiles).all())
        # and no more than one float32 step below (relative spacing 2^-23 ~ 1.2e-7, two steps allowed)
        torch.testing.assert_close(c32.expected_reward.double(), c64.expected_reward, rtol=2.5e-7, atol=0)


def test_round_down_to_is_a_lower_bound_within_one_step():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10_000, generator=g, dtype=torch.float64) * 100
    y = round_down_to(x, torch.float32)
    assert y.dtype == torch.float32 and bool((y.double() <= x).all())
    assert bool((torch.nextafter(y, torch.full_like(y, math.inf)).double() > x).all())  # the largest such float32
    assert round_down_to(x, torch.float64) is x


def test_attacked_tails_follow_the_formula_and_refuse_bad_sigma():
    p = torch.tensor([0.0, 0.3, 0.9, 1.0], dtype=torch.float64)
    b = torch.tensor([0.0, 0.5], dtype=torch.float64)
    from scipy.stats import norm
    want = norm.cdf(norm.ppf(p.numpy())[None, :] - b.numpy()[:, None] / 0.25)
    np.testing.assert_allclose(attacked_tail_lower_bounds(p, b, sigma=0.25).numpy(), want, rtol=1e-12)
    # sigma = -1 used to return Phi(Phi^-1(p) + B), a number above the clean tail
    for bad in (-1.0, 0.0, float("nan"), "abc", None):
        with pytest.raises(ValueError, match="sigma"):
            attacked_tail_lower_bounds(p, b, sigma=bad)
    with pytest.raises(ValueError, match="budgets"):
        attacked_tail_lower_bounds(p, torch.tensor([-0.1]), sigma=1.0)
    with pytest.raises(ValueError, match="tail_lower_bounds"):
        attacked_tail_lower_bounds(torch.tensor([1.2]), b, sigma=1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma="abc"), r"sigma must be a number .*'abc' \(str\)"),
        (dict(sigma=None), "sigma must be a number"),
        (dict(sigma=True), "sigma must be a number"),
        (dict(alpha="0.05"), "alpha must be a number"),
        (dict(returns=None), "returns must be a 1-d sequence .*NoneType"),
        (dict(returns="1 2 3"), "returns must be a 1-d sequence"),
        (dict(returns=["a", "b"]), "returns must be a 1-d sequence"),
        (dict(returns=[]), "returns is empty"),
        (dict(percentile_levels="0.5"), "percentile_levels"),
    ],
)
def test_unclear_inputs_now_give_clear_errors(kwargs, match):
    args = dict(returns=[1.0, 2.0, 3.0], budgets=[0.0, 0.1], sigma=0.5, alpha=0.05, reward_range=(0, 5)) | kwargs
    r = args.pop("returns")
    with pytest.raises(ValueError, match=match):
        certify_returns(r, **args)


def test_bonferroni_certificate_is_the_max_of_members_at_alpha_over_two():
    r = _returns(400)
    thr = torch.arange(1.0, 51.0, dtype=torch.float64)
    budgets = [0.0, 0.2, 0.6]
    c = certify_returns_bonferroni(r, budgets=budgets, sigma=0.5, alpha=0.1, reward_range=(0, 50),
                                   thresholds={"clopper-pearson": thr})
    d = certify_returns(r, budgets=budgets, sigma=0.5, alpha=0.05, reward_range=(0, 50), method="dkw")
    cp = certify_returns(r, budgets=budgets, sigma=0.5, alpha=0.05, reward_range=(0, 50), method="clopper-pearson",
                         thresholds=thr)
    torch.testing.assert_close(c.expected_reward, torch.maximum(d.expected_reward, cp.expected_reward), rtol=0, atol=0)
    assert c.members["dkw"].alpha == 0.05 and c.members["clopper-pearson"].alpha == 0.05 and c.alpha == 0.1
    # the naive max at level alpha each is larger (less safe) wherever the best member is not vacuous
    naive = certify_returns(r, budgets=budgets, sigma=0.5, alpha=0.1, reward_range=(0, 50), method="clopper-pearson",
                            thresholds=thr).expected_reward
    assert bool((naive > c.expected_reward).all())
    with pytest.raises(ValueError, match="methods"):
        certify_returns_bonferroni(r, budgets=budgets, sigma=0.5, reward_range=(0, 50), methods=("dkw", "dkw"))


@pytest.mark.parametrize("n", [10, 40, 150])
def test_bonferroni_certificate_exact_non_coverage(n):
    # exact, no sampling: returns in {0, 1}, reward_range (0, 1), one threshold, budget 0.3, sigma 0.5.
    # The certificate is a function of k ~ Binomial(n, p); the attacked tail Phi(Phi^-1(p) - B/sigma) is
    # increasing in p, so P[cert > truth] = sum_k pmf(k) 1{cert(k) > truth(p)} must be <= alpha for every p.
    from scipy.stats import norm
    alpha, B, sigma = 0.1, 0.3, 0.5
    cert = np.array([float(certify_returns_bonferroni(
        torch.cat([torch.ones(k), torch.zeros(n - k)]).double(), budgets=[B], sigma=sigma, alpha=alpha,
        reward_range=(0, 1), thresholds={"clopper-pearson": [1.0]}).expected_reward[0]) for k in range(n + 1)])
    worst = 0.0
    for p in np.linspace(0.005, 0.995, 199):
        truth = norm.cdf(norm.ppf(p) - B / sigma)
        worst = max(worst, float(binom.pmf(np.arange(n + 1), n, p)[cert > truth + 1e-12].sum()))
    assert worst <= alpha * (1 + 1e-12)
