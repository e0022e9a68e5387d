"""`polab run realizability` end to end with tiny settings: run folder, metrics, figures, core reuse."""

import json
import math

import pytest
import torch

from polab.scaled.cli import main as cli_main
from polab.scaled.run_folder import read_metrics

pytest.importorskip("gymnasium")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tiny_run_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    rc = cli_main(["run", "realizability", "--sizes", "300", "600", "--seeds", "1", "--mc-episodes", "20",
                   "--horizon", "60", "--out", str(out)])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sizes"] == [300, 600] and cfg["envs"] == ["gridworld", "cartpole"]
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) == 4
    grid = [r for r in rows if r["env"] == "gridworld"]
    cart = [r for r in rows if r["env"] == "cartpole"]
    assert len(grid) == 2 and len(cart) == 2
    for r in grid:
        # exact quantities from theory/: alpha in [0, 1], C_BE >= 0, value error finite
        assert 0.0 <= r["alpha_exact"] <= 1.0 and r["c_be_exact"] >= 0.0
        assert r["realizability_residual"] > 1e-6  # default random-Fourier features: alpha_exact is the realizable-case value
        assert math.isfinite(r["err_lstd"]) and r["v_true"] > 0
        assert r["err_lstd"] == pytest.approx(abs(r["v_lstd"] - r["v_true"]), rel=1e-12)
    for r in cart:
        assert 0.0 <= r["alpha_hat"] <= 1.0 and r["c_be_hat"] > 0.0
        assert 0 < r["v_true"] <= 1 / (1 - cfg["gamma"])  # rewards are 1 per step
    for name in ("error_vs_n.png", "factors.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    assert "cartpole_reference_se" in json.loads((out / "summary.json").read_text())


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["run", "realizability", "--features", "bogus", "--out", str(tmp_path)])


def test_tabular_features_are_gridworld_only_and_realizable(tmp_path):
    """One-hot states on FrozenLake: exact alpha is 0 and the approximation error is 0 (realizable and complete)."""
    import math

    from polab.scaled.experiments.realizability import main
    from polab.scaled.run_folder import read_metrics

    assert main(["--envs", "gridworld", "--features", "tabular", "--sizes", "4000", "--seeds", "1", "--out", str(tmp_path / "t")]) == 0
    (row,) = read_metrics(tmp_path / "t" / "metrics.csv")
    assert row["alpha_exact"] <= 1e-6 and row["approx_error"] <= 1e-10  # exact quantities: float64 round-off
    assert row["realizability_residual"] <= 1e-10  # realizable: alpha_exact applies to this run
    assert math.isfinite(row["err_lstd"])
    with pytest.raises(ValueError, match="gridworld"):
        main(["--envs", "cartpole", "--features", "tabular", "--sizes", "200", "--seeds", "1", "--out", str(tmp_path / "c")])


def test_cli_passes_help_to_the_experiment_and_reports_bad_input(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["run", "realizability", "--help"])
    assert exit_info.value.code == 0
    assert "--features" in capsys.readouterr().out  # the experiment's own options, not the generic `polab run` help
    assert cli_main(["run", "realizability", "--envs", "cartpole", "--features", "tabular", "--sizes", "200", "--seeds", "1",
                     "--out", str(tmp_path / "r")]) == 2
    assert "gridworld" in capsys.readouterr().err
