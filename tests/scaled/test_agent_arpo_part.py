"""agent-rewards ``--parts arpo`` (ARPO replay on vs off) and the degenerate case of agent-credit's paired tests."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from polab.scaled.experiments.agent_credit import paired_tests, verdict
from polab.scaled.experiments.agent_rewards import PRESETS, AgentRewardsConfig, arpo_statistics, main, run
from polab.scaled.logger import MetricLogger


def test_paired_tests_identical_differences_are_undefined_not_p0():
    # every seed's difference is +0.25: t = 0.25 / 0 is undefined; the exact sign-flip test reaches |mean| only with the two
    # all-equal-sign flips, p = 2 / 2^5 = 2^(1-n)
    r = paired_tests([0.5, 0.75, 1.0, 0.25, 0.5], [0.25, 0.5, 0.75, 0.0, 0.25])
    assert math.isnan(r["t"]) and math.isnan(r["t_p"]) and "undefined" in r["note"]
    assert r["difference"] == pytest.approx(0.25, rel=1e-12) and r["ci95_half_width"] == 0.0
    assert r["sign_flip_p"] == pytest.approx(2.0 ** -4, rel=1e-12) == r["min_possible_sign_flip_p"]
    assert "undefined" in verdict(r, "a", "b")
    # all differences zero: t-test undefined as well, every sign flip ties the observed 0, p = 1
    z = paired_tests([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert math.isnan(z["t_p"]) and z["sign_flip_p"] == 1.0 and "+0" in z["note"]
    # a non-degenerate case keeps the t-test and has no note
    assert "note" not in paired_tests([1.0, 2.0, 4.0], [0.0, 0.0, 0.0])


def test_arpo_statistics_from_a_run_metrics_file(tmp_path):
    log = MetricLogger(tmp_path, config={}, backends=("csv",))
    log.log(0, {"eval_success": 0.0})  # the initial evaluation row has no filter metrics
    for step, (rep, failed) in enumerate([(0.0, 6.0), (2.0, 5.0), (1.0, 3.0), (0.0, 2.0)], start=1):
        log.log(step, {"replaced_trajectories": rep, "all_failed_groups": failed, "buffer_size": 4.0})
    log.close()
    tr = SimpleNamespace(cfg=SimpleNamespace(tasks_per_step=8, group_size=4), task_pool=[0, 3, 5], env_steps=1234)
    s = arpo_statistics(tmp_path, tr)
    # hand counts: 3 injections over 16 all-failed groups, 2 of 4 steps with an injection, 3 of 4 x 8 x 4 = 128 trajectories
    assert s["replaced_trajectories"] == 3.0 and s["all_failed_groups"] == 16.0 and s["groups"] == 32.0
    assert s["replay_rate"] == pytest.approx(3 / 16, rel=1e-12) and s["steps_with_replay"] == 2.0
    assert s["replaced_fraction"] == pytest.approx(3 / 128, rel=1e-12) and s["kept_tasks"] == 3.0 and s["env_steps"] == 1234.0


def test_bad_arpo_options_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="arpo-env"):
        run(AgentRewardsConfig(**{**PRESETS["quick"], "parts": ("arpo",), "arpo_env": "nosuchenv", "out": str(tmp_path / "x")}))
    with pytest.raises(ValueError, match="arpo-steps"):
        run(AgentRewardsConfig(**{**PRESETS["quick"], "parts": ("arpo",), "arpo_steps": 0, "out": str(tmp_path / "y")}))


@pytest.mark.slow
def test_quick_arpo_part_replay_off_equals_replay_when_nothing_is_replayed(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--quick", "--parts", "arpo", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())["parts"]["arpo"]
    on, off = s["arms"]["replay"], s["arms"]["replay-off"]
    assert len(on["eval_success"]["per_seed"]) == 2 and 0.0 <= s["random_policy_success"] <= 1.0
    assert on["replaced_trajectories"]["per_seed"] and all(x >= 0 for x in on["replaced_trajectories"]["per_seed"])
    for k, rep in enumerate(on["replaced_trajectories"]["per_seed"]):
        if rep == 0:  # no injection: the same task draws, weights and sampling streams give the very same run
            for key in ("eval_success", "eval_return", "env_steps"):
                assert on[key]["per_seed"][k] == off[key]["per_seed"][k]
    assert "replay - replay-off|eval_success" in s["tests"]
    assert (out / "figures" / "arpo_success.png").is_file()
    assert "[arpo]" in capsys.readouterr().out
    # --merge of the same folder trains nothing and gives the same summary
    again = tmp_path / "merged"
    assert main(["--quick", "--parts", "arpo", "--merge", str(out), "--out", str(again)]) == 0
    m = json.loads((again / "summary.json").read_text())["parts"]["arpo"]
    assert m["arms"] == s["arms"] and m["random_policy_success"] == s["random_policy_success"]
    assert not (again / "runs").exists()


def test_merged_rows_keep_the_later_folder_of_a_repeated_run(tmp_path):
    from polab.scaled.experiments.agent_rewards import merged_rows

    for name, val in (("a", 0.25), ("b", 0.75)):
        log = MetricLogger(tmp_path / name, config={}, backends=("csv",))
        log.log(0, {"kind": "random", "part": "arpo", "arm": "random", "seed": -1, "eval_success": val})
        log.log(10, {"kind": "eval", "part": "arpo", "arm": "replay", "seed": 0, "eval_success": val})
        log.log(10, {"kind": "eval", "part": "arpo", "arm": "replay", "seed": 1 if name == "a" else 2, "eval_success": val})
        log.close()
    rows = merged_rows([tmp_path / "a", tmp_path / "b"])
    ev = sorted((r["seed"], r["eval_success"]) for r in rows if r["kind"] == "eval")
    assert ev == [(0.0, 0.75), (1.0, 0.25), (2.0, 0.75)]
    assert sorted(r["eval_success"] for r in rows if r["kind"] == "random") == [0.25, 0.75]


def test_agent_credit_textworld_preset_groups_gigpo_by_the_observation_text():
    pytest.importorskip("textworld")
    from polab.scaled.envs.text_protocol import make_text_env
    from polab.scaled.experiments.agent_credit import PRESETS as CREDIT_PRESETS

    (spec,) = CREDIT_PRESETS["textworld"]["envs"]
    env = make_text_env(spec)  # no game is loaded before reset
    assert env.config.anchor == "observation" and CREDIT_PRESETS["textworld"]["held_out_episodes"] == 0
