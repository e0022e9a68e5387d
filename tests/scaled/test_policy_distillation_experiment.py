"""``polab run policy-distillation``: smoke run writes the folder; bad options exit 2 before writing; statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

from polab.scaled.cli import main as cli_main  # noqa: E402
from polab.scaled.experiments import policy_distillation as exp  # noqa: E402
from polab.scaled.logger import read_metrics  # noqa: E402


def test_quick_run_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    assert exp.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    for name in ("config.json", "metrics.csv", "summary.json", "figures/heldout_scores.png", "figures/per_config.png",
                 "figures/dagger_agreement.png"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    # equal budget: rl-all gets the teachers' steps plus the distillation rollouts
    assert cfg["rl_all_steps_used"] == cfg["regions"] * cfg["expert_steps"] + cfg["distillation_env_steps"]
    rows = read_metrics(out / "metrics.csv")
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(evals) == 2 * (5 + 2)  # seeds x (oracle, dagger, bc, rl-all, best single, 2 experts)
    distill = [r for r in rows if r["kind"] == "distill"]
    assert [r["beta"] for r in distill if r["method"] == "dagger" and r["seed"] == 0] == [1.0, 0.5]
    assert all(r["beta"] == 1.0 for r in distill if r["method"] == "bc")
    s = json.loads((out / "summary.json").read_text())
    for m, v in s["scores"].items():
        assert len(v["per_seed"]) == 2 and all(0.0 <= x <= 1.0 for x in v["per_seed"]), m
    assert set(s["tests"]["dagger - rl-all"]) >= {"difference", "ci95_low", "ci95_high", "t_p", "wilcoxon_p"}
    assert cli_main(["run", "policy-distillation", "--quick", "--out", str(out)]) == 2  # non-empty folder


@pytest.mark.parametrize("argv, needle", [
    (["--seeds", "0"], "--seeds"),
    (["--dagger-p", "1.5"], "--dagger-p"),
    (["--goal-high", "3.0"], "--goal-low"),
    (["--gamma", "1.5"], "--gamma"),
    (["--length-low", "1.2"], "--length-low"),
])
def test_bad_options_exit_2_before_writing(tmp_path, capsys, argv, needle):
    out = tmp_path / "never"
    try:
        rc = cli_main(["run", "policy-distillation", "--quick", "--out", str(out)] + argv)
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_regions_and_paired_statistics():
    edges = np.linspace(-1.5, 1.5, 4)
    assert exp.region_of(np.array([-1.5, -0.6, 0.0, 1.4999, 1.5]), edges).tolist() == [0, 0, 1, 2, 2]
    res = exp.paired([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])  # differences 2, 3, 4: mean 3, sd 1
    assert res["difference"] == 3.0
    assert res["ci95_high"] - 3.0 == pytest.approx(4.302652729911275 / np.sqrt(3), rel=1e-9)  # t_{0.975,2}
    assert res["wilcoxon_p"] == pytest.approx(0.25)  # exact two-sided, n=3 all positive: 2/8
    t = 3.0 * np.sqrt(3.0)  # mean / (sd / sqrt(n))
    assert res["t_p"] == pytest.approx(1.0 - t / np.sqrt(t * t + 2.0), rel=1e-9)  # two-sided t_2 tail in closed form


class _LinearTeacher(torch.nn.Module):
    """Pushes the cart towards the goal: logit of action 1 (push right) = 10 (g - x). Realizable from the partial view."""

    def logits(self, full):
        return torch.stack([torch.zeros(full.shape[0]), 10.0 * (full[:, 4] - full[:, 0])], dim=1)


def test_dagger_student_learns_a_realizable_teacher():
    cfg = exp.PolicyDistillationConfig(regions=2, max_steps=50, num_envs=8, dagger_iterations=3, dagger_steps=512,
                                       distill_epochs=15, obs_noise=0.0, progress=False)
    configs = np.array([[-1.0, 0.5], [-0.4, 0.8], [0.6, 0.4], [1.2, 0.6]])
    edges = exp.region_edges(cfg)
    teachers = [_LinearTeacher(), _LinearTeacher()]
    student, rows = exp.distil(teachers, configs, edges, cfg, 0, schedule="exponential", p=0.5)
    assert [r["beta"] for r in rows] == [1.0, 0.5, 0.25]
    assert rows[-1]["dataset"] == 3 * 512
    # fresh states of the last iteration: the student (before its last refit) already agrees with the teacher
    assert rows[-1]["agreement"] > 0.9
    x = torch.as_tensor(np.array([[0.0, 0.0, 0.0, 0.0, 1.0, 0.5], [0.5, 0.0, 0.5, 0.0, -1.0, 0.5]], dtype=np.float32))
    assert student.logits(x).argmax(1).tolist() == [1, 0]  # goal to the right -> push right; to the left -> push left
