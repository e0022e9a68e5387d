"""DUMP scheduler against its closed form; interface contract shared with the uniform scheduler."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from polab.estimators.curriculum import DumpScheduler, UniformScheduler, dump_ucb_scores, make_scheduler, tempered_softmax

NAMES = ["kk_3people", "kk_4people", "kk_5people"]


def closed_form_probs(windows, counts, *, c=1.0, tau=0.1):
    """theory_core.md 1.3, written out by hand in float64."""
    N = max(1, sum(counts))
    ucb = [np.mean(np.abs(w)) + c * math.sqrt(2 * math.log(N + 1) / (n + 1)) for w, n in zip(windows, counts)]
    e = [math.exp((u - max(ucb)) / tau) for u in ucb]
    return np.array(e) / sum(e), np.array(ucb)


def test_uniform_before_any_update():
    s = DumpScheduler(NAMES)
    np.testing.assert_array_equal(s.probabilities(), np.full(3, 1 / 3))


def test_scores_and_probabilities_match_closed_form():
    s = DumpScheduler(NAMES)
    s.update(["kk_3people"] * 3 + ["kk_4people"] * 2 + ["kk_5people"], torch.tensor([0.5, -1.0, 0.0, 2.0, -2.0, 0.1], dtype=torch.float64))
    s.update([0, 1], [0.25, -0.75])  # indices work as names do
    windows = [[0.5, -1.0, 0.0, 0.25], [2.0, -2.0, -0.75], [0.1]]
    counts = [4, 3, 1]
    p, ucb = closed_form_probs(windows, counts)
    np.testing.assert_allclose(s.scores(), ucb, rtol=1e-12)
    np.testing.assert_allclose(s.probabilities(), p, rtol=1e-12)
    np.testing.assert_array_equal(s.counts, counts)


def test_fifo_window_keeps_last_300():
    rng = np.random.default_rng(0)
    vals = rng.normal(size=450)
    s = DumpScheduler(NAMES)
    s.update(["kk_3people"] * 450, vals)
    assert s.learnability()[0] == pytest.approx(np.mean(np.abs(vals[-300:])), rel=1e-12)
    assert s.counts[0] == 450  # n_j counts every response, not only the window


def test_paper_bonus_form():
    L = np.array([0.2, 0.5, 0.1])
    n = np.array([4, 0, 6])
    sc = dump_ucb_scores(L, n, bonus="paper")
    assert math.isinf(sc[1])
    assert sc[0] == pytest.approx(0.2 + math.sqrt(2 * math.log(10) / 4), rel=1e-12)
    np.testing.assert_array_equal(tempered_softmax(sc, temperature=0.1), [0.0, 1.0, 0.0])
    s = DumpScheduler(NAMES, bonus="paper")
    s.update(["kk_3people", "kk_5people"], [1.0, 1.0])
    np.testing.assert_array_equal(s.probabilities(), [0.0, 1.0, 0.0])


def test_bad_input_raises_and_leaves_state_unchanged():
    s = DumpScheduler(NAMES)
    s.update(["kk_3people"], [1.0])
    before = s.state_dict()
    with pytest.raises(ValueError, match="unknown distribution name 'kk_9people'"):
        s.update(["kk_9people"], [1.0])
    with pytest.raises(ValueError, match=r"non-finite values at rows \[1\]"):
        s.update(["kk_3people", "kk_4people"], [0.1, float("nan")])
    with pytest.raises(ValueError, match="shape"):
        s.update(["kk_3people", "kk_4people"], [0.1])
    with pytest.raises(ValueError, match="out of range"):
        s.update([7], [0.1])
    assert s.state_dict() == before
    with pytest.raises(ValueError, match="unique"):
        DumpScheduler(["a", "a"])
    with pytest.raises(ValueError, match="temperature"):
        DumpScheduler(NAMES, temperature=0.0)
    with pytest.raises(ValueError, match="torch.Generator"):
        s.sample(3, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown curriculum"):
        make_scheduler("thompson", NAMES)


@pytest.mark.parametrize("kind", ["dump", "uniform"])
def test_state_dict_round_trip_continues_exactly(kind):
    rng = np.random.default_rng(1)
    a = make_scheduler(kind, NAMES)
    for _ in range(5):
        a.update(list(rng.choice(NAMES, size=8)), rng.normal(size=8))
    b = make_scheduler(kind, NAMES)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.probabilities(), b.probabilities())
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(a.sample(50, generator=ga), b.sample(50, generator=gb))
    upd = (list(rng.choice(NAMES, size=8)), rng.normal(size=8))
    a.update(*upd)
    b.update(*upd)
    assert a.state_dict() == b.state_dict()
    with pytest.raises(ValueError, match="names"):
        make_scheduler(kind, NAMES[::-1]).load_state_dict(a.state_dict())


def test_sample_frequencies_follow_probabilities():
    # Chi-square goodness of fit of 20000 draws; fixed seed, alpha = 1e-3.
    s = DumpScheduler(NAMES)
    s.update(NAMES, [0.1, 0.3, 0.2])
    p = s.probabilities()
    draws = s.sample(20000, generator=torch.Generator().manual_seed(0))
    obs = np.bincount(draws.numpy(), minlength=3)
    assert stats.chisquare(obs, 20000 * p).pvalue > 1e-3
    assert s.sample_names(2, generator=torch.Generator().manual_seed(0))[0] in NAMES


def test_uniform_scheduler_counts_but_stays_uniform():
    u = UniformScheduler(NAMES)
    u.update(["kk_3people"] * 5, np.ones(5))
    np.testing.assert_array_equal(u.probabilities(), np.full(3, 1 / 3))
    assert u.counts.tolist() == [5, 0, 0]


def test_dump_moves_mass_away_from_zero_advantage_distribution():
    # Distribution 0 always has |A| = 1, distribution 2 always 0; with equal counts the
    # exploration bonuses are equal, so p_0/p_2 = exp((1 - 0)/0.1) exactly.
    s = DumpScheduler(NAMES)
    s.update(NAMES * 10, np.tile([1.0, 0.5, 0.0], 10))
    p = s.probabilities()
    assert p[0] / p[2] == pytest.approx(math.exp(10.0), rel=1e-10)
