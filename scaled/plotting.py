"""``polab plot RUN [RUN ...]``: overlay the metrics of several runs in one figure.

One panel per metric, one line per run (labelled by the run folder's name or
``--labels``), the x axis a column of ``metrics.csv`` (``step`` by default).
Rows where a metric is empty (NaN) are skipped, so metrics logged every k
steps plot as lines too. ``--smooth N`` draws the trailing moving average over
N points (the first N-1 points average what is available) over the raw curve.

Examples::

    polab plot runs/grpo-a runs/grpo-b                       # every numeric metric the runs share
    polab plot runs/a runs/b --metrics reward_mean,kl --smooth 10 --labels "lr 1e-6,lr 3e-6" --out cmp.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .logger import read_metrics

__all__ = ["overlay_figure", "plot_runs", "moving_average", "main"]


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: entry ``i`` is the mean of ``values[max(0, i-window+1) : i+1]``.

    Shapes: ``values`` [n] -> [n]. ``window`` >= 1 (1 returns the values unchanged).
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an integer >= 1; got {window!r}.")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-d; got shape {v.shape}.")
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(1, v.size + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def _numeric_columns(rows: list[dict]) -> list[str]:
    """Columns whose values are all floats (read_metrics gives floats only to all-numeric columns)."""
    if not rows:
        return []
    return [c for c in rows[0] if all(isinstance(r[c], float) for r in rows)]


def _labels_for(runs: list[Path]) -> list[str]:
    names = [r.resolve().name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{r.resolve().parent.name}/{r.resolve().name}" for r in runs]


def overlay_figure(
    runs: Sequence[Path],
    *,
    metrics: Sequence[str] | None = None,
    x: str = "step",
    labels: Sequence[str] | None = None,
    smooth: int | None = None,
):
    """The overlay figure (a ``matplotlib.figure.Figure``): one panel per metric, one line per run.

    Parameters
    ----------
    runs : sequence of Path
        Run folders, each holding a ``metrics.csv``.
    metrics : sequence of str, optional
        Columns to plot, one panel each; default: the numeric columns common to all runs (except ``x``).
    x : str
        Column for the x axis.
    labels : sequence of str, optional
        One legend label per run; default: the run folders' names.
    smooth : int, optional
        Trailing moving-average window (points).

    Raises
    ------
    ValueError
        A folder without ``metrics.csv``, an empty one, an unknown or non-numeric metric or x column,
        a wrong number of labels, a bad smoothing window.
    """
    runs = [Path(r) for r in runs]
    if not runs:
        raise ValueError("runs: give at least one run folder.")
    data = []
    for r in runs:
        if not (r / "metrics.csv").is_file():
            what = "does not exist" if not r.exists() else "has no metrics.csv"
            raise ValueError(f"run folder {r} {what}; give run folders written by polab (they hold metrics.csv).")
        rows = read_metrics(r / "metrics.csv")
        if not rows:
            raise ValueError(f"{r / 'metrics.csv'} has no rows yet; nothing to plot.")
        data.append(rows)
    if labels is None:
        labels = _labels_for(runs)
    elif len(labels) != len(runs):
        raise ValueError(f"--labels: got {len(labels)} labels for {len(runs)} runs; give one label per run.")
    if smooth is not None and (isinstance(smooth, bool) or not isinstance(smooth, (int, np.integer)) or smooth < 1):
        raise ValueError(f"--smooth must be an integer >= 1 (points in the moving average); got {smooth!r}.")

    numeric = [_numeric_columns(rows) for rows in data]
    common = [c for c in numeric[0] if all(c in n for n in numeric[1:])]
    for r, rows, n in zip(runs, data, numeric):
        if x not in rows[0]:
            raise ValueError(f"--x: column {x!r} is not in {r / 'metrics.csv'}; its numeric columns are {n}.")
        if x not in n:
            raise ValueError(f"--x: column {x!r} in {r / 'metrics.csv'} holds strings; choose a numeric column: {n}.")
    available = [c for c in common if c != x]
    if metrics is None:
        metrics = [c for c in available if any(not math.isnan(row[c]) for rows in data for row in rows)]
        if not metrics:
            raise ValueError(f"the runs share no numeric metric besides {x!r}; pass --metrics explicitly.")
    else:
        metrics = list(metrics)
        if not metrics:
            raise ValueError("--metrics: give at least one metric name.")
        for m in metrics:
            if m in available:
                continue
            where = [str(r) for r, rows in zip(runs, data) if m not in rows[0]]
            if where:
                raise ValueError(f"--metrics: unknown metric {m!r} (not in {', '.join(where)}); "
                                 f"metrics common to all runs: {', '.join(available) or '(none)'}.")
            raise ValueError(f"--metrics: {m!r} is not numeric in every run (it holds strings); "
                             f"numeric metrics common to all runs: {', '.join(available) or '(none)'}.")

    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI back end

    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(4.8 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, m in zip(axes, metrics):
        for i, (rows, label) in enumerate(zip(data, labels)):
            pts = np.array([(row[x], row[m]) for row in rows if not (math.isnan(row[x]) or math.isnan(row[m]))])
            if pts.size == 0:
                continue
            xs, ys = pts[:, 0], pts[:, 1]
            color = f"C{i % 10}"
            if smooth is not None and smooth > 1:
                ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(xs, moving_average(ys, smooth), color=color, label=label)
            else:
                ax.plot(xs, ys, color=color, label=label, marker="." if len(xs) < 30 else None)
        ax.set_xlabel(x)
        ax.set_ylabel(m)
        ax.set_title(m + (f" (moving average over {smooth})" if smooth and smooth > 1 else ""), fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    return fig


def plot_runs(
    runs: Sequence[Path],
    *,
    out: Path | None = None,
    metrics: Sequence[str] | None = None,
    x: str = "step",
    labels: Sequence[str] | None = None,
    smooth: int | None = None,
) -> Path:
    """Draw :func:`overlay_figure` and save it as a PNG; returns its path.

    ``out`` defaults to ``<first run>/figures/compare.png``; the other parameters are
    :func:`overlay_figure`'s.
    """
    fig = overlay_figure(runs, metrics=metrics, x=x, labels=labels, smooth=smooth)
    out = Path(out) if out is not None else Path(runs[0]) / "figures" / "compare.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    """``polab plot``: returns 0 on success, 2 (with a one-line message on stderr) on bad input."""
    p = argparse.ArgumentParser(prog="polab plot", description=__doc__.split("\n\n")[0].split(": ", 1)[-1])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (each holds metrics.csv)")
    p.add_argument("--metrics", help="comma-separated metric names (default: the numeric columns common to all runs)")
    p.add_argument("--x", default="step", help="column for the x axis (default: step)")
    p.add_argument("--labels", help="comma-separated legend labels, one per run (default: the run folders' names)")
    p.add_argument("--smooth", type=int, help="trailing moving average over this many points (default: none)")
    p.add_argument("--out", help="PNG file to write (default: <first run>/figures/compare.png)")
    a = p.parse_args(argv)
    try:
        out = plot_runs([Path(r) for r in a.runs], out=a.out, metrics=_split(a.metrics), x=a.x,
                        labels=_split(a.labels), smooth=a.smooth)
    except (ValueError, FileNotFoundError) as exc:
        print(f"polab plot: error: {exc}", file=sys.stderr)
        return 2
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
