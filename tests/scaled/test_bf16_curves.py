"""``polab run bf16-curves`` (scaled/experiments/bf16_curves.py): the paired comparison and one tiny end-to-end run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from polab.scaled.experiments import bf16_curves as B


def _fake(dtype, seed, reward, loss, grad_norm=None):
    n = len(reward)
    return {"dtype": dtype, "seed": seed, "metrics": {"reward_mean": list(reward), "loss": list(loss), "accuracy": list(reward),
                                                       "grad_norm": list(grad_norm or [1.0] * n), "time_step_s": [1.0] * n}}


def test_compare_pairs_by_seed_with_hand_computed_values():
    # seed 0: bf16 mean reward 0.5 vs f32 0.25 (+0.25); seed 1: 0.25 vs 0.5 (-0.25); seed 2: 1.0 vs 0.5 (+0.5)
    runs = [_fake("float32", 0, [0.0, 0.5], [1.0, 1.0]), _fake("bfloat16", 0, [0.5, 0.5], [1.0, 2.0], [1.0, 3.0]),
            _fake("float32", 1, [0.5, 0.5], [0.0, 0.0]), _fake("bfloat16", 1, [0.0, 0.5], [0.0, 0.0]),
            _fake("float32", 2, [0.5, 0.5], [2.0, 2.0]), _fake("bfloat16", 2, [1.0, 1.0], [2.0, 2.0])]
    c = B.compare(runs)
    d = np.array([0.25, -0.25, 0.5])
    r = c["mean_reward"]["bf16_minus_f32"]
    assert r["n"] == 3 and math.isclose(r["mean_difference"], d.mean(), rel_tol=1e-12)
    from scipy import stats

    h = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert math.isclose(r["lo"], d.mean() - h, rel_tol=1e-12) and math.isclose(r["hi"], d.mean() + h, rel_tol=1e-12)
    assert math.isclose(c["mean_loss"]["bf16_minus_f32"]["mean_difference"], 0.5 / 3, rel_tol=1e-12)  # only seed 0 differs, by 0.5
    # gradient norm: every run 1.0 except bf16 seed 0's second step (3.0): mean differences (1, 0, 0)
    g = c["mean_grad_norm"]["bf16_minus_f32"]
    assert math.isclose(g["mean_difference"], 1 / 3, rel_tol=1e-12) and c["mean_grad_norm"]["bfloat16"]["per_seed"] == [2.0, 1.0, 1.0]
    assert c["last_reward"]["bf16_minus_f32"]["wins"] == 1  # seed 2 (+0.5); seeds 0, 1 tie at 0.5
    assert "no difference resolved" in B.verdict(c)


def test_options_are_validated(tmp_path):
    with pytest.raises(ValueError, match="grpo_preset"):
        B.run(B.Bf16CurvesConfig(grpo_preset="nope", out=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="seeds"):
        B.run(B.Bf16CurvesConfig(seeds=0, out=str(tmp_path / "y")))


@pytest.mark.slow
def test_tiny_run_writes_curves_summary_and_figure(tmp_path):
    out = tmp_path / "run"
    assert B.main(["--preset", "tiny", "--steps", "1", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert sorted(s["curves"]) == ["bfloat16/seed0", "bfloat16/seed1", "float32/seed0", "float32/seed1"]
    for k, v in s["curves"].items():
        assert len(v["reward_mean"]) == 1, k
    # the summary's per-seed values are the curves' means
    for dt in B.DTYPES:
        assert s["mean_reward"][dt]["per_seed"] == [float(np.mean(s["curves"][f"{dt}/seed{i}"]["reward_mean"])) for i in (0, 1)]
    assert (out / "figures" / "bf16_curves.png").stat().st_size > 10_000
    assert not (out / "float32_seed0" / "checkpoints").exists()  # removed unless --keep-checkpoints
    # an interrupted invocation: the finished runs are reused, the summary is the same
    before = s["mean_reward"]
    assert B.main(["--preset", "tiny", "--steps", "1", "--out", str(out), "--overwrite", "--reuse-runs"]) == 0
    assert json.loads((out / "summary.json").read_text())["mean_reward"] == before
