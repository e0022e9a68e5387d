"""``polab run llm-methods``: statistics and verdicts on synthetic inputs (hand-derived values), the tasks it builds
(last-number addition with a held-out split, the retrieval proxy), the documented noisy reward model, option
validation, a tiny-random-model run of two families, and one SmolLM2 smoke test of the tiniest GRPO arm.

Tolerances: closed forms in float64, 1e-12 relative; 1e-9 where scipy's t quantile (an iterative inverse) enters.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from scipy import stats

from polab.scaled.experiments import llm_methods as L
from polab.scaled.tasks import build_task
from polab.scaled.tasks.retrieval import RetrievalTask, parse_ranking

# Student t with 2 degrees of freedom: F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so the 0.975 quantile solves
# t / sqrt(2 + t^2) = 0.95, i.e. t = sqrt(2 * 0.95^2 / (1 - 0.95^2)) = 4.3027 (scipy's ppf agrees to ~1e-10 relative)
T975_DF2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))


def test_mean_ci_hand_values():
    m, lo, hi = L.mean_ci([1.0, 2.0, 3.0])  # mean 2, sd 1, half width t * 1 / sqrt(3)
    assert m == 2.0
    assert hi - m == pytest.approx(T975_DF2 / math.sqrt(3), rel=1e-9)
    assert m - lo == pytest.approx(T975_DF2 / math.sqrt(3), rel=1e-9)
    assert L.mean_ci([5.0])[0] == 5.0 and math.isnan(L.mean_ci([5.0])[1])
    assert math.isnan(L.mean_ci([])[0])
    assert L.mean_ci([1.0, float("nan"), 3.0])[0] == 2.0  # non-finite values are dropped


def test_paired_difference_hand_values():
    d = L.paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])  # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1
    assert d["diff"] == pytest.approx(0.2, rel=1e-12)
    assert d["hi"] - d["diff"] == pytest.approx(T975_DF2 * 0.1 / math.sqrt(3), rel=1e-9)
    # paired t = 0.2 / (0.1 / sqrt 3) = 2 sqrt 3; df 2 two-sided p = 1 - t / sqrt(2 + t^2) = 1 - sqrt(12/14)
    assert d["p"] == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    assert d["n"] == 3
    with pytest.raises(ValueError, match="one value per seed"):
        L.paired_difference([1.0, 2.0], [1.0])
    zero = L.paired_difference([0.0, 0.0], [0.0, 0.0])
    assert zero["diff"] == 0.0 and zero["p"] == 1.0


def test_verdicts():
    assert L.verdict({"lo": 0.01, "hi": 0.2}) == "better"
    assert L.verdict({"lo": -0.2, "hi": -0.01}) == "worse"
    assert L.verdict({"lo": -0.2, "hi": -0.01}, higher_is_better=False) == "better"  # e.g. wall-clock or a vanishing-group rate
    assert L.verdict({"lo": -0.1, "hi": 0.1}) == "not resolved at this budget"
    assert L.verdict({"lo": math.nan, "hi": math.nan}).startswith("not resolved")


def test_compare_pairs_by_seed_and_table():
    rows = [{"family": "rl", "method": "grpo", "seed": s, "accuracy": a} for s, a in ((0, 0.4), (1, 0.4), (2, 0.4))]
    rows += [{"family": "rl", "method": "ssb", "seed": s, "accuracy": a} for s, a in ((2, 0.62), (0, 0.58), (1, 0.6))]  # order differs
    rows += [{"family": "rl", "method": "ssb", "seed": 9, "accuracy": 1.0}]  # no baseline seed 9: not paired, ignored
    r = L.compare(rows, "rl", "ssb", "grpo", "accuracy", budget="b")
    assert r["diff"] == pytest.approx(0.2, rel=1e-12) and r["seeds"] == 3 and r["verdict"] == "better"  # 0.2 +- 0.0497
    wide = L.compare(rows, "rl", "ssb", "grpo", "accuracy", budget="b", higher_is_better=False)
    assert wide["verdict"] == "worse"
    assert r["method_mean"] == pytest.approx(0.6, rel=1e-12) and r["baseline_mean"] == pytest.approx(0.4, rel=1e-12)
    md = L.markdown_table([r])
    assert md.splitlines()[2] == ("| ssb | accuracy | grpo | 0.400 | 0.600 | 0.200 [%.3f, %.3f] | 3 | b | better |"
                                  % (0.2 - T975_DF2 * 0.02 / math.sqrt(3), 0.2 + T975_DF2 * 0.02 / math.sqrt(3)))


def test_self_reference_summary_hand_values():
    res = {"self-ref/1": {"right": [1, 1, 1, 0]}, "ai-feedback/1": {"right": [1, 0, 0, 0]}}
    s = L.self_reference_summary(res)
    assert s["self-ref"]["accuracy"] == 0.75 and s["ai-feedback"]["accuracy"] == 0.25
    # Clopper-Pearson: lower = Beta(0.025; k, n-k+1), upper = Beta(0.975; k+1, n-k)
    assert s["self-ref"]["lo"] == pytest.approx(stats.beta.ppf(0.025, 3, 2), rel=1e-8)
    assert s["self-ref"]["hi"] == pytest.approx(stats.beta.ppf(0.975, 4, 1), rel=1e-8)
    # McNemar exact: 2 discordant pairs, both for self-ref: two-sided binomial p = 2 * 0.5^2
    assert (s["mcnemar"]["self_ref_only"], s["mcnemar"]["plain_only"]) == (2, 0)
    assert s["mcnemar"]["p"] == pytest.approx(0.5, rel=1e-12)


# -- tasks ----------------------------------------------------------------------------------------


def test_last_number_arithmetic_split_and_reward():
    t = L.LastNumberArithmetic((1, 2), holdout_per_level=5, pool_size=None)
    held = {(p.a, p.b, p.digits) for p in t.eval_problems()}
    assert len(held) == 10
    rng = np.random.default_rng(0)
    for src in t.distributions:
        for _ in range(300):
            p = t.sample(src, rng=rng)
            assert (p.a, p.b, p.digits) not in held
    p = t.eval_problems()[0]
    assert t.reward(f"{p.a} + {p.b} = {p.a + p.b}", p).correct  # the last integer counts
    assert not t.reward(f"{p.a + p.b} is not {p.a + p.b + 1}", p).correct
    pooled = L.LastNumberArithmetic((2,), holdout_per_level=1, pool_size=3)
    pool = {(p.a, p.b) for p in pooled.eval_problems("pool")}
    assert len(pool) == 3 and not pool & {(p.a, p.b) for p in pooled.eval_problems()}
    assert {(q.a, q.b) for q in (pooled.sample("add_2digit", rng=rng) for _ in range(50))} == pool


def test_retrieval_task_relevance_and_reward():
    t = build_task("retrieval", docs_per_query=8, k=5)
    assert isinstance(t, RetrievalTask)
    rng = np.random.default_rng(3)
    from polab.scaled.tasks.retrieval import CATALOGUE

    for _ in range(50):
        p = t.sample(rng=rng)
        assert len(p.documents) == 8 and 2 in p.relevance and 1 in p.relevance
        colour, category = p.query.split()[1:]
        for d, r in zip(p.documents, p.relevance):
            item, c = d[len("The "):-1].split(" is ")
            want = 0 if item not in CATALOGUE[category] else (2 if c == colour else 1)
            assert r == want
            assert category not in d  # the category is not written in the document
        assert len({d.split(" is ")[0] for d in p.documents}) == 8
    # hand value: relevance (0, 0, 1, 0, 1, 2, 0, 0), ranking 1..8, k = 5:
    # DCG = 1/log2(4) + 1/log2(6); ideal DCG = 3 + 1/log2(3) + 1/log2(4)
    from polab.scaled.tasks.retrieval import RetrievalProblem

    prob = RetrievalProblem("a blue tool", tuple(f"d{i}" for i in range(8)), (0, 0, 1, 0, 1, 2, 0, 0))
    want = (0.5 + 1 / math.log2(6)) / (3 + 1 / math.log2(3) + 0.5)
    assert t.reward("1, 2, 3, 4, 5, 6, 7, 8", prob).total == pytest.approx(want, rel=1e-12)
    assert t.reward("6 3 5", prob).total == pytest.approx(1.0, rel=1e-12)
    assert parse_ranking("3, 3, 9, 1", 4) == [2, 0, 1, 3]
    with pytest.raises(ValueError, match="k must be"):
        RetrievalTask(4, k=5)


def test_gaussian_noise_rm_is_the_documented_noise_model():
    from polab.scaled.tasks.protocol import RewardResult

    class FakeTrainer:
        step = 4

        def seed_for(self, step, stream, rank=None):
            return 1000 * step + len(stream)

    results = [RewardResult(float(y), bool(y)) for y in (1, 0, 0, 1, 1)]
    rm = L.GaussianNoiseRM(L.GaussianNoiseRMOptions(sigma=0.5))
    s = rm.shape(FakeTrainer(), results)
    eps = torch.randn(5, generator=torch.Generator().manual_seed(1000 * 5 + len("noisy-rm")), dtype=torch.float64)
    want = torch.tensor([1.0, 0, 0, 1, 1], dtype=torch.float64) + 0.5 * eps
    torch.testing.assert_close(s, want.float(), rtol=0, atol=0)
    torch.testing.assert_close(rm.last[1], torch.tensor([1.0, 0, 0, 1, 1], dtype=torch.float64))
    zero = L.GaussianNoiseRM(L.GaussianNoiseRMOptions(sigma=0.0)).shape(FakeTrainer(), results)
    assert zero.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]


# -- the command ------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, match", [(["--seeds", "0"], "seeds"), (["--rank-samples", "1"], "rank-samples"),
                                         (["--rl-methods", "t-ppo"], "must include grpo")])
def test_bad_options_fail_before_writing(tmp_path, argv, match):
    out = tmp_path / "run"
    cfg, _ = L.parse_config(L.LLMMethodsConfig, ["--out", str(out), *argv], prog="x", presets=L.PRESETS, default_preset="cpu")
    with pytest.raises(ValueError, match=match):
        L.run(cfg)
    assert not out.exists()


def test_self_reference_family_writes_table_and_figure(tmp_path):
    out = tmp_path / "run"
    assert L.main(["--preset", "smoke", "--family", "self-reference", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert [r["method"] for r in rows] == ["self-reference"]
    assert (out / "figures" / "self-reference.png").stat().st_size > 0
    assert "self-reference" in (out / "table.md").read_text()


@pytest.mark.slow
def test_ranking_family_tiny_model_is_paired(tmp_path):
    out = L.run(L.parse_config(L.LLMMethodsConfig, ["--preset", "smoke", "--family", "ranking", "--seeds", "1",
                                                               "--out", str(tmp_path / "r")],
                               prog="x", presets=L.PRESETS, default_preset="cpu")[0])
    res = list(csv.DictReader(open(out / "results.csv")))
    assert sorted(r["method"] for r in res) == ["listnet", "pg-rank"]
    for s in {r["seed"] for r in res}:  # both arms start from the same model and held-out queries
        before = {r["ndcg_before"] for r in res if r["seed"] == s}
        assert len(before) == 1
    assert (out / "figures" / "ranking.png").exists()
    assert [r["method"] for r in csv.DictReader(open(out / "table.csv"))] == ["pg-rank"]


@pytest.mark.llm
def test_smollm2_tiniest_grpo_arm(tmp_path):
    cfg = L.LLMMethodsConfig(steps=1, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=4, holdout_per_level=2, eval_samples=1)
    task = L.LastNumberArithmetic((1,), holdout_per_level=2)
    r = L.run_grpo_arm(cfg, tmp_path / "arm", 0, task, sample_filter="ssb")
    assert r["steps"] == 1 and r["generated_samples"] == 4
    assert 0.0 <= r["accuracy"] <= 1.0 and r["accuracy"] * 2 == round(r["accuracy"] * 2)  # 2 problems x 1 sample
    assert 0.0 <= r["vanishing_group_rate"] <= 1.0
    # the arm's own run folder holds its per-step rows (it was header-only when the experiment drove train_step)
    (mfile,) = (tmp_path / "arm").rglob("metrics.csv")
    rows = list(csv.DictReader(open(mfile)))
    assert [int(float(x["step"])) for x in rows] == [1] and 0.0 <= float(rows[0]["accuracy"]) <= 1.0


def test_merge_combines_per_seed_runs(tmp_path):
    # two finished single-seed folders (written by hand) -> one table; t quantile with 1 df: tan(pi (0.975 - 1/2))
    import json

    cols = ["family", "method", "seed", "accuracy", "wall_s", "vanishing_group_rate"]
    for seed, (g, s) in enumerate(((0.4, 0.5), (0.4, 0.6))):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        if seed == 0:  # a finished run
            lines = [",".join(cols), f"rl,grpo,{seed},{g},10.0,0.5", f"rl,ssb,{seed},{s},12.0,0.25"]
            (d / "results.csv").write_text("\n".join(lines) + "\n")
            (d / "summary.json").write_text(json.dumps({"extras": {}}))
        else:  # a run stopped early: only its finished arms in results.jsonl
            recs = [dict(zip(cols, ["rl", m, seed, a, w, v])) for m, a, w, v in (("grpo", g, 10.0, 0.5), ("ssb", s, 12.0, 0.25))]
            (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "merged"
    assert L.main(["--preset", "smoke", "--family", "rl", "--rl-methods", "grpo", "ssb", "--seeds", "2",
                   "--merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(out)]) == 0
    rows = {(r["method"], r["metric"]): r for r in csv.DictReader(open(out / "table.csv"))}
    acc = rows[("ssb", "accuracy")]
    half = math.tan(math.pi * 0.475) * (0.1 / math.sqrt(2)) / math.sqrt(2)  # differences 0.1, 0.2: sd 0.1/sqrt 2
    assert float(acc["diff"]) == pytest.approx(0.15, rel=1e-12)
    assert float(acc["hi"]) - 0.15 == pytest.approx(half, rel=1e-9)
    assert acc["verdict"] == "not resolved at this budget" and acc["seeds"] == "2"
    vz = rows[("ssb", "vanishing_group_rate")]
    # identical differences -0.25, -0.25: a zero-width interval that excludes 0, and lower is better for this rate
    assert float(vz["diff"]) == float(vz["lo"]) == float(vz["hi"]) == pytest.approx(-0.25, rel=1e-12)
    assert vz["verdict"] == "better"
    assert (out / "figures" / "rl.png").stat().st_size > 0
    with pytest.raises(ValueError, match="not an llm-methods run folder"):
        L.run(L.parse_config(L.LLMMethodsConfig, ["--merge", str(tmp_path), "--out", str(tmp_path / "x")], prog="x",
                             presets=L.PRESETS, default_preset="cpu")[0])
