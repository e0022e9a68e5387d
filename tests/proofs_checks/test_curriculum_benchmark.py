"""Tests of polab.proofs_checks.curriculum_benchmark.

Statistical assertions (fixed seeds ``DEFAULT_SEEDS``, so CI is
deterministic; each is a test that would hold at its level under any seeds
if DUMP were no better than uniform):

- ``test_dump_needs_fewer_samples``: one-sided paired Wilcoxon signed-rank
  test, alpha = 0.01 (the benchmark's stated level);
- ``test_unlearnable_probability_ends_below_uniform``: two exact one-sided
  sign tests (one per unlearnable distribution), alpha = 0.001 each;
- ``test_unlearnable_sample_share_below_uniform``: two more, 0.001 each.

File total (Bonferroni): 0.014. The other tests are exact (float64 equality
or a stated rounding tolerance).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from polab.estimators.advantages import group_advantages
from polab.estimators.curriculum import DumpScheduler, UniformScheduler
from polab.proofs_checks.curriculum_benchmark import (
    DEFAULT_SEEDS,
    BenchmarkConfig,
    main,
    run_benchmark,
    simulate,
)
from polab.theory.learnability import mean_abs_group_advantage

CFG = BenchmarkConfig()
UNLEARNABLE = [j for j, ok in enumerate(CFG.learnable) if not ok]
SMALL = dataclasses.replace(CFG, budget_steps=40)


@pytest.fixture(scope="module")
def result():
    return run_benchmark(CFG, seeds=DEFAULT_SEEDS)


# ---------------------------------------------------------------- the statistical claims
def test_dump_needs_fewer_samples(result):
    alpha = 0.01  # one-sided paired Wilcoxon, stated in the module docstring
    assert result.alpha == alpha
    assert result.dump.reached.all() and result.uniform.reached.all()  # no censoring at this budget
    assert result.p_value < alpha, (result.p_value, result.median_ratio)
    assert result.dump_better
    assert result.median_samples_dump < result.median_samples_uniform
    assert result.median_ratio < 1.0


def test_unlearnable_probability_ends_below_uniform(result):
    # Sign test per unlearnable distribution: under "DUMP's final probability is at
    # least 1/K as often as not", the count of seeds ending below 1/K is at most
    # Binomial(S, 1/2); reject at 0.001.
    K = CFG.num_distributions
    final = result.dump.probabilities[:, -1, :]
    for j in UNLEARNABLE:
        below = int((final[:, j] < 1.0 / K).sum())
        assert binomtest(below, len(result.seeds), 0.5, alternative="greater").pvalue < 1e-3, (j, below)
        assert final[:, j].mean() < 1.0 / K


def test_unlearnable_sample_share_below_uniform(result):
    K = CFG.num_distributions
    drawn = result.dump.samples_per_distribution
    share = drawn / drawn.sum(axis=1, keepdims=True)
    for j in UNLEARNABLE:
        below = int((share[:, j] < 1.0 / K).sum())
        assert binomtest(below, len(result.seeds), 0.5, alternative="greater").pvalue < 1e-3, (j, below)


# ---------------------------------------------------------------- exact properties
def test_equal_budget_and_shapes(result):
    S, T, K = len(DEFAULT_SEEDS), CFG.budget_steps, CFG.num_distributions
    for runs in (result.dump, result.uniform):
        assert runs.probabilities.shape == (S, T + 1, K)
        assert runs.success.shape == (S, T + 1)
        assert runs.success_per_distribution.shape == (S, T + 1, K)
        np.testing.assert_array_equal(runs.samples_per_distribution.sum(axis=1), T * CFG.samples_per_step)
        np.testing.assert_allclose(runs.probabilities.sum(axis=2), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(result.uniform.probabilities, 1.0 / K)
    # samples to target are whole steps, and the success curve crosses the target there
    for runs in (result.dump, result.uniform):
        steps = runs.samples_to_target // CFG.samples_per_step
        assert np.all(runs.samples_to_target % CFG.samples_per_step == 0)
        s = np.arange(len(steps))
        assert np.all(runs.success[s, steps] >= CFG.target)
        assert np.all(runs.success[s, steps - 1] < CFG.target)


def test_unlearnable_never_learn_and_success_never_decreases(result):
    for runs in (result.dump, result.uniform):
        assert np.all(runs.success_per_distribution[:, :, UNLEARNABLE] == 0.0)
        # each group's logit step is q(1-q)/(s+eps) >= 0 (module docstring): no decrease,
        # up to float64 rounding of the logistic function
        assert np.all(np.diff(runs.success_per_distribution, axis=1) >= -1e-15)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.93])
def test_step_is_half_mean_abs_advantage(p):
    # sum_i A_i (o_i - p) / G == q(1-q)/(s+eps) == mean|A| / 2 for every k (module docstring).
    # Tolerance 1e-12 absolute: sum_i A_i is 0 up to G roundings of O(1) terms.
    G, eps = 8, 1e-6
    for k in range(G + 1):
        o = torch.zeros(G, dtype=torch.float64)
        o[:k] = 1.0
        A = group_advantages(o, torch.zeros(G, dtype=torch.int64), epsilon=eps).advantages
        step = float((A * (o - p)).sum()) / G
        assert step == pytest.approx(0.5 * float(mean_abs_group_advantage(k, G, epsilon=eps)), abs=1e-12)


def _loop_reference(kind: str, config: BenchmarkConfig, seed: int) -> np.ndarray:
    """Slow single-seed loop of the learning model (module docstring), success per step."""
    names = config.names()
    sched = (
        DumpScheduler(names, window=config.window, exploration=config.exploration, temperature=config.temperature)
        if kind == "dump"
        else UniformScheduler(names)
    )
    rng, tgen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    theta = list(config.initial_logits)
    B, G = config.batch_prompts, config.group_size

    def probs():
        return [1.0 / (1.0 + np.exp(-t)) if ok else 0.0 for t, ok in zip(theta, config.learnable)]

    out = [np.mean([pj for pj, ok in zip(probs(), config.learnable) if ok])]
    for _ in range(config.budget_steps):
        src = sched.sample(B, generator=tgen).tolist()
        p = probs()
        u = rng.random((B, G))
        o = np.array([[1.0 if u[b, i] < p[src[b]] else 0.0 for i in range(G)] for b in range(B)])
        ids = torch.arange(B).repeat_interleave(G)
        A = group_advantages(torch.from_numpy(o.reshape(-1)), ids, epsilon=config.epsilon).advantages.numpy().reshape(B, G)
        sched.update([s for s in src for _ in range(G)], A.reshape(-1))
        total = {}
        count = {}
        for b in range(B):
            for i in range(G):
                total[src[b]] = total.get(src[b], 0.0) + A[b, i] * (o[b, i] - p[src[b]])
                count[src[b]] = count.get(src[b], 0) + 1
        for j in total:
            if config.learnable[j]:
                n = count[j] if config.aggregation == "distribution" else B * G
                theta[j] += config.learning_rate * total[j] / n
        out.append(np.mean([pj for pj, ok in zip(probs(), config.learnable) if ok]))
    return np.array(out)


@pytest.mark.parametrize("kind", ["dump", "uniform"])
@pytest.mark.parametrize("aggregation", ["batch", "distribution"])
def test_vectorised_simulation_matches_loop_reference(kind, aggregation):
    cfg = dataclasses.replace(SMALL, aggregation=aggregation)
    runs = simulate(kind, cfg, seeds=[3, 11])
    for row, seed in enumerate((3, 11)):
        ref = _loop_reference(kind, cfg, seed)
        # float64; the two compute the same sums in different orders and the
        # logistic as tanh vs exp: 1e-12 absolute on probabilities in [0, 1]
        np.testing.assert_allclose(runs.success[row], ref, rtol=0, atol=1e-12)


def test_seed_runs_do_not_depend_on_companions():
    a = simulate("dump", SMALL, seeds=[5])
    b = simulate("dump", SMALL, seeds=[2, 5, 9])
    np.testing.assert_array_equal(a.success[0], b.success[1])
    np.testing.assert_array_equal(a.probabilities[0], b.probabilities[1])


def test_aggregations_coincide_with_one_prompt_per_step():
    one = dataclasses.replace(SMALL, batch_prompts=1)
    a = simulate("dump", dataclasses.replace(one, aggregation="batch"), seeds=[1, 2])
    b = simulate("dump", dataclasses.replace(one, aggregation="distribution"), seeds=[1, 2])
    np.testing.assert_array_equal(a.success, b.success)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"learnable": (True, False)}, "same length"),
        ({"learnable": (False,) * 6}, "at least one distribution must be learnable"),
        ({"group_size": 1}, "group_size >= 2"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"aggregation": "sum"}, "aggregation"),
        ({"target": 1.0}, "target"),
        ({"alpha": 0.0}, "alpha"),
        ({"initial_logits": (0.0, float("nan"), 0.0, 0.0, 0.0, 0.0)}, "finite"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CFG, **kwargs)


def test_input_errors():
    with pytest.raises(ValueError, match="kind"):
        simulate("thompson", SMALL, seeds=[0])
    with pytest.raises(ValueError, match="seeds is empty"):
        simulate("dump", SMALL, seeds=[])
    with pytest.raises(ValueError, match="at least 6 seeds"):
        run_benchmark(SMALL, seeds=range(3))


def test_cli(capsys):
    res = main(["--seeds", "6", "--budget-steps", "30"])
    out = capsys.readouterr().out
    assert "median ratio" in out and "Wilcoxon" in out
    assert len(res.seeds) == 6 and res.config.budget_steps == 30
