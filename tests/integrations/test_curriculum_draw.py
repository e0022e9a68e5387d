"""The shared draw of the TRL and verl adapters (no TRL or verl needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from polab.integrations.curriculum_draw import draw_prompts, generation_seed, per_response_advantages, source_pools


def test_draw_prompts_follows_probabilities():
    probabilities = [0.2, 0.0, 0.8]
    pools = [[0, 1], [2], [3, 4, 5]]
    n = 4000
    sources, rows = draw_prompts(probabilities, pools, n, generator=torch.Generator().manual_seed(0))
    assert sources.shape == rows.shape == (n,)
    assert not (sources == 1).any()  # zero mass: never drawn (exact)
    for j, pool in enumerate(pools):  # every row belongs to the pool of its source (exact)
        assert set(rows[sources == j].tolist()) <= set(pool)
    # Source 0 ~ Binomial(n, 0.2): exact two-sided binomial test at alpha = 1e-3.
    k0 = int((sources == 0).sum())
    assert stats.binomtest(k0, n, 0.2).pvalue > 1e-3
    # Rows within source 2 uniform over 3 rows: chi-square at alpha = 1e-3.
    counts = np.bincount(rows[sources == 2].numpy() - 3, minlength=3)
    assert stats.chisquare(counts).pvalue > 1e-3
    # Same generator seed, same draw.
    again = draw_prompts(probabilities, pools, n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], sources) and torch.equal(again[1], rows)


def test_draw_prompts_rejects_bad_input():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="sum to 1"):
        draw_prompts([0.5, 0.6], [[0], [1]], 3, generator=g)
    with pytest.raises(ValueError, match="no rows"):
        draw_prompts([0.5, 0.5], [[0], []], 3, generator=g)
    with pytest.raises(ValueError, match="generator"):
        draw_prompts([1.0], [[0]], 3, generator=None)
    with pytest.raises(ValueError, match="generation"):
        generation_seed(0, -1)


def test_generation_seed_distinct_and_stable():
    seeds = {generation_seed(0, g) for g in range(1000)} | {generation_seed(1, g) for g in range(1000)}
    assert len(seeds) == 2000  # a collision among 2000 63-bit values has probability ~2e-13
    assert generation_seed(7, 3) == generation_seed(7, 3)


def test_source_pools():
    assert source_pools(["a", "b", "a"], ["a", "b"], what="data") == [[0, 2], [1]]
    with pytest.raises(ValueError, match=r"holds sources \['z'\]"):
        source_pools(["a", "z"], ["a"], what="data")
    with pytest.raises(ValueError, match=r"\['c'\] have no rows in data"):
        source_pools(["a"], ["a", "c"], what="data")


def test_per_response_advantages_against_loop():
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(5, 7, generator=g, dtype=torch.float64)
    mask = (torch.rand(5, 7, generator=g) < 0.6).long()
    mask[2] = 0  # a response without tokens
    values, valid = per_response_advantages(adv, mask)
    for i in range(5):
        tokens = adv[i][mask[i].bool()]
        assert bool(valid[i]) == (tokens.numel() > 0)
        expected = tokens.mean().item() if tokens.numel() else 0.0
        assert values[i].item() == pytest.approx(expected, rel=1e-12, abs=0)  # float64 sum of <= 7 terms
    with pytest.raises(ValueError, match="shape"):
        per_response_advantages(adv, mask[:, :3])
    bad = adv.clone()
    bad[1, 0] = float("nan")
    mask[1, 0] = 1
    with pytest.raises(ValueError, match="non-finite in rows \\[1\\]"):
        per_response_advantages(bad, mask)
