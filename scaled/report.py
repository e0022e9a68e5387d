"""Figures of a run folder, drawn from its ``metrics.csv``."""

from __future__ import annotations

import math
from pathlib import Path

from .run_folder import read_metrics

__all__ = ["plot_grpo_run"]


def plot_grpo_run(run: Path) -> Path:
    """Per-distribution sampling probabilities, answer scores and learnability over steps.

    Writes ``figures/curriculum.png`` and returns its path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run = Path(run)
    rows = read_metrics(run / "metrics.csv")
    out = run / "figures" / "curriculum.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    if not rows:
        fig.text(0.5, 0.5, "no steps logged yet", ha="center")
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out
    steps = [r["step"] for r in rows]
    sources = [k.split(":", 1)[1] for k in rows[0] if k.startswith("prob:")]
    cmap = plt.get_cmap("viridis", max(len(sources), 2))
    panels = [("prob", "sampling probability"), ("answer_score", "answer score (batch mean)"), ("learnability", "learnability: window mean |A|")]
    for ax, (key, label) in zip([axes[0, 0], axes[0, 1], axes[1, 0]], panels):
        for j, s in enumerate(sources):
            ys = [r.get(f"{key}:{s}", math.nan) for r in rows]
            ax.plot(steps, ys, marker="o", ms=3, color=cmap(j), label=s)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=2)
    ax = axes[1, 1]
    ax.plot(steps, [r["reward_mean"] for r in rows], label="total reward", color="C0")
    ax.plot(steps, [r["answer_score_mean"] for r in rows], label="answer score", color="C1")
    ax.plot(steps, [r["format_ok_rate"] for r in rows], label="format ok rate", color="C2")
    ax.set_xlabel("step")
    ax.set_title("batch means")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(f"GRPO run: {run.name}")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
