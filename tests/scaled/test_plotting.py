"""polab plot: overlay of several runs' metrics (panels, lines, labels, smoothing, errors)."""

from __future__ import annotations

import numpy as np
import pytest

from polab.scaled.logger import MetricLogger
from polab.scaled.plotting import main, moving_average, overlay_figure


def _run(path, values: dict[str, list], *, extra: dict | None = None):
    with MetricLogger(path, backends=("csv",)) as log:
        n = len(next(iter(values.values())))
        for s in range(n):
            row = {k: v[s] for k, v in values.items()}
            row.update(extra or {})
            log.log(s, row)
    return path


@pytest.fixture
def two_runs(tmp_path):
    a = _run(tmp_path / "lr-small", {"loss": [3.0, 2.0, 1.0, 0.5], "reward": [0.0, 0.1, None, 0.4]}, extra={"method": "grpo"})
    b = _run(tmp_path / "lr-large", {"loss": [3.0, 1.0, 0.2, 0.1], "reward": [0.0, 0.3, 0.5, 0.9], "only_b": [1, 2, 3, 4]},
             extra={"method": "rloo"})
    return a, b


def test_moving_average_matches_loop():
    v = np.random.default_rng(0).normal(size=23)
    for w in (1, 2, 5, 30):
        ref = np.array([v[max(0, i - w + 1): i + 1].mean() for i in range(v.size)])
        np.testing.assert_allclose(moving_average(v, w), ref, rtol=1e-12, atol=1e-12)  # float64 cumsum vs direct mean
    with pytest.raises(ValueError, match="window"):
        moving_average(v, 0)


def test_overlay_panels_lines_and_labels(two_runs):
    fig = overlay_figure(two_runs)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    # default metrics: numeric columns common to both runs; not 'method' (strings), not 'only_b'
    assert [ax.get_ylabel() for ax in axes] == ["loss", "reward"]
    assert all(ax.get_xlabel() == "step" for ax in axes)
    loss_ax, reward_ax = axes
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["lr-small", "lr-large"]
    lines = {ln.get_label(): ln for ln in reward_ax.get_lines()}
    np.testing.assert_array_equal(lines["lr-small"].get_xdata(), [0, 1, 3])  # the empty cell at step 2 is skipped
    np.testing.assert_array_equal(lines["lr-small"].get_ydata(), [0.0, 0.1, 0.4])
    np.testing.assert_array_equal(lines["lr-large"].get_ydata(), [0.0, 0.3, 0.5, 0.9])


def test_overlay_smoothing_labels_and_x(two_runs):
    fig = overlay_figure(two_runs, metrics=["reward"], x="loss", labels=["small", "large"], smooth=2)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "loss"
    smoothed = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert set(smoothed) == {"small", "large"}
    np.testing.assert_allclose(smoothed["large"].get_ydata(), [0.0, 0.15, 0.4, 0.7], rtol=1e-12)  # hand-computed means


def test_main_writes_png_default_and_explicit(two_runs, tmp_path, capsys):
    assert main([str(p) for p in two_runs]) == 0
    png = two_runs[0] / "figures" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "sub" / "cmp.png"
    assert main([str(p) for p in two_runs] + ["--metrics", "loss", "--smooth", "3", "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


def test_duplicate_folder_names_get_parent_in_label(tmp_path):
    a = _run(tmp_path / "seed0" / "run", {"loss": [1.0, 0.5]})
    b = _run(tmp_path / "seed1" / "run", {"loss": [1.0, 0.7]})
    fig = overlay_figure([a, b])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["seed0/run", "seed1/run"]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--metrics", "loss,nope"], r"unknown metric 'nope'.*common to all runs: loss, reward"),
        (["--metrics", "method"], "holds strings"),
        (["--metrics", "only_b"], "unknown metric 'only_b'"),
        (["--x", "time"], "column 'time' is not in"),
        (["--labels", "one"], "1 labels for 2 runs"),
        (["--smooth", "0"], "--smooth"),
    ],
)
def test_main_bad_input_exit_2(two_runs, capsys, extra, match):
    assert main([str(p) for p in two_runs] + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("polab plot: error:") and err.count("\n") == 1
    import re

    assert re.search(match, err)


def test_main_folder_without_metrics(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "has no metrics.csv" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
