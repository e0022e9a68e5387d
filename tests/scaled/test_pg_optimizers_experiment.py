"""`polab run pg-optimizers` end to end with tiny settings: run folder, figure, seeds, equal budgets, determinism."""

import json

import numpy as np
import pytest
import torch

from polab.scaled.cli import main as cli_main
from polab.scaled.experiments.pg_optimizers import METHOD_IDS, PGOptimizersConfig, run, step_size0
from polab.scaled.run_folder import read_metrics

pytest.importorskip("gymnasium")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


METHODS = ["vanilla_pg", "npg_igt", "n_harpg"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pg") / "run"
    rc = cli_main(["run", "pg-optimizers", "--envs", "CartPole-v1", "--methods", *METHODS, "--seeds", "2", "--budget", "600",
                   "--episodes-per-batch", "4", "--out", str(out)])
    assert rc == 0
    return out


def test_tiny_run_writes_a_complete_run_folder(tiny_run):
    out = tiny_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["envs"] == ["CartPole-v1"] and cfg["methods"] == METHODS and cfg["seeds"] == 2
    assert (out / "figures" / "learning_curves.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    for m in METHODS:
        v = summary["final_return"]["CartPole-v1"][m]
        assert v["seeds"] == 2 and len(v["per_seed"]) == 2
        assert 1.0 <= v["mean"] <= 200.0  # CartPole pays 1 per step, episodes capped at 200
        assert v["ci95_half_width"] >= 0.0


def test_every_method_and_seed_gets_the_same_budget(tiny_run):
    rows = read_metrics(tiny_run / "metrics.csv")
    for m in METHODS:
        for s in range(2):
            r = [x for x in rows if x["method"] == m and x["seed"] == s and x["env"] == "CartPole-v1"]
            steps = [x["env_steps"] for x in r]
            assert steps == sorted(steps) and len(r) >= 2
            # runs stop at the first batch that reaches the budget: the last batch crosses it, the one before does not
            assert steps[-1] >= 600 and steps[-2] < 600
    # HARPG's Hessian batch is counted: with the same batch size it makes about half as many iterations
    it = {m: max(x["iteration"] for x in rows if x["method"] == m and x["seed"] == 0) for m in METHODS}
    assert it["n_harpg"] < it["npg_igt"]


def test_same_seed_gives_the_same_run(tmp_path):
    cfg = dict(envs=["CartPole-v1"], methods=["n_harpg"], seeds=1, budget=300, episodes_per_batch=3)
    a = read_metrics(run(PGOptimizersConfig(**cfg, out=str(tmp_path / "a"))) / "metrics.csv")
    b = read_metrics(run(PGOptimizersConfig(**cfg, out=str(tmp_path / "b"))) / "metrics.csv")
    c = read_metrics(run(PGOptimizersConfig(**cfg, seed=7, out=str(tmp_path / "c"))) / "metrics.csv")
    assert a == b
    ret = lambda rows: np.array([r["mean_return"] for r in rows])  # noqa: E731
    assert len(a) != len(c) or not np.array_equal(ret(a), ret(c))


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="envs"):
        run(PGOptimizersConfig(envs=["Pong"], out=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="episodes_per_batch"):
        run(PGOptimizersConfig(episodes_per_batch=1, out=str(tmp_path / "y")))
    with pytest.raises(ValueError, match="step_size_n_harpg"):
        run(PGOptimizersConfig(step_size_n_harpg=-0.1, out=str(tmp_path / "w")))
    with pytest.raises(SystemExit):
        cli_main(["run", "pg-optimizers", "--methods", "adam", "--out", str(tmp_path / "z")])


def test_mujoco_configuration_runs_with_a_gaussian_policy(tmp_path):
    pytest.importorskip("mujoco")
    out = run(PGOptimizersConfig(envs=["InvertedPendulum-v5"], methods=["harpg"], seeds=1, budget=60, episodes_per_batch=2,
                                 out=str(tmp_path / "m")))
    rows = read_metrics(out / "metrics.csv")
    assert rows and rows[-1]["env_steps"] >= 60 and all(np.isfinite(r["direction_norm"]) for r in rows)


def test_harpg_step_size_overrides_change_only_their_own_method():
    d = PGOptimizersConfig()
    fam = {m: (d.step_size_normalized if m in ("normalized_pg", "momentum_pg", "npg_igt", "n_harpg") else d.step_size_unnormalized)
           for m in METHOD_IDS}
    assert {m: step_size0(m, d) for m in METHOD_IDS} == fam  # off by default: every method keeps its family scale
    c = PGOptimizersConfig(step_size_n_harpg=0.1, step_size_harpg=0.001)
    assert step_size0("n_harpg", c) == 0.1 and step_size0("harpg", c) == 0.001
    assert all(step_size0(m, c) == fam[m] for m in METHOD_IDS if m not in ("n_harpg", "harpg"))


def test_cli_passes_the_harpg_step_sizes_to_the_run(tmp_path):
    out = tmp_path / "o"
    rc = cli_main(["run", "pg-optimizers", "--envs", "CartPole-v1", "--methods", "n_harpg", "--seeds", "1", "--budget", "50",
                   "--episodes-per-batch", "2", "--step-size-n-harpg", "0.07", "--step-size-harpg", "0.0003", "--out", str(out)])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["step_size_n_harpg"] == 0.07 and cfg["step_size_harpg"] == 0.0003
