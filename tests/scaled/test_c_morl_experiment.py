"""`polab run c-morl`: a quick run end to end, and option errors before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("mo_gymnasium")

from polab.scaled.experiments import c_morl  # noqa: E402
from polab.scaled.logger import read_metrics  # noqa: E402


def test_quick_run_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    assert c_morl.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    for name in ("config.json", "metrics.csv", "summary.json", "figures/fronts.png", "figures/hv_curves.png",
                 "figures/summary.png"):
        assert (out / name).is_file(), name
    rows = read_metrics(out / "metrics.csv")
    finals = [r for r in rows if r["kind"] == "final"]
    assert sorted((r["method"], int(r["seed"])) for r in finals) == [("c-morl", 0), ("c-morl", 1), ("linear", 0),
                                                                     ("linear", 1)]
    lin = {int(r["seed"]): r["train_env_steps"] for r in finals if r["method"] == "linear"}
    for r in finals:
        # equal budget: C-MORL never trains on more environment steps than the baseline
        assert r["train_env_steps"] <= lin[int(r["seed"])]
        assert 0 <= r["front_fraction"] <= 1 and 0 <= r["hv_ratio"] <= 1 + 1e-9
    s = json.loads((out / "summary.json").read_text())
    d = s["environments"]["dst"]
    assert set(d["tests"]) == {"hypervolume", "hv_half_budget", "hv_gain_after_init", "expected_utility",
                                "front_fraction", "hv_ratio"}
    # Every greedy return on deterministic DST is achievable, so the true front weakly dominates it
    # (a wrong discount or reward accumulation would break this).
    import mo_gymnasium

    true = np.asarray(mo_gymnasium.make("deep-sea-treasure-v0").unwrapped.pareto_front(gamma=1.0))
    curve_points = [r for r in rows if r["kind"] == "curve"]
    assert curve_points and all(r["env_steps"] > 0 for r in curve_points)
    for meth in ("c-morl", "linear"):
        v = d["per_method"][meth]
        for hv, half, init, gain in zip(*(v[k]["per_seed"] for k in ("hypervolume", "hv_half_budget", "hv_at_init_end",
                                                                       "hv_gain_after_init"))):
            # the archive only grows: its hypervolume is monotone in training steps
            assert half <= init <= hv <= c_morl.hypervolume(true, c_morl.MO_ENVS["dst"].ref_point) + 1e-6
            assert gain == pytest.approx(hv - init)


def test_permutation_test_exact_value():
    # {1,2} vs {3,4}: of the 6 relabellings only the observed split and its mirror reach |diff| = 2.
    assert c_morl.permutation_test([1, 2], [3, 4]) == pytest.approx(2 / 6)
    assert c_morl.permutation_test([1, 2], [1, 2]) == 1.0


@pytest.mark.parametrize("argv, needle", [
    (["--init-fraction", "1.5"], "init-fraction"),
    (["--steps", "100"], "fewer than 2 PPO updates"),
    (["--linear-weight-step", "0.3"], "linear-weight-step"),
])
def test_bad_options_exit_2_before_writing(tmp_path, capsys, argv, needle):
    out = tmp_path / "never"
    assert c_morl.main(argv + ["--out", str(out), "--no-progress"]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()
