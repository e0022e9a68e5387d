"""Offline versus on-policy preference fine-tuning, with and without a negative gradient, at equal sample budgets.

``polab run preference-sampling [--schemes a,b,...] [--seeds 0,1,2] [--preset cpu-demo] [--steps N] [--out DIR]``

Runs :class:`polab.scaled.trainers.preference.PreferenceTrainer` once per (scheme,
seed), each in ``OUT/SCHEME/seed_S`` (same prompts, samples per step and
reward queries per step for every scheme), then draws
``OUT/figures/reward_vs_steps.png``: the policy's reward against steps,
mean ± standard error over seeds, one line per scheme. ``--out`` must be new
or empty; re-run with ``--resume`` to continue a grid (finished runs are
skipped, interrupted ones resumed) or ``--overwrite`` to run it again.

Default grid: offline-best-of-n, offline-dpo, on-policy-best-of-n,
on-policy-dpo (the 2 x 2 of sample source x negative gradient). On 2 CPU cores
each run of the ``cpu-demo`` preset takes minutes; a GPU makes the grid cheap.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

__all__ = ["main", "plot_comparison"]

DEFAULT_SCHEMES = ("offline-best-of-n", "offline-dpo", "on-policy-best-of-n", "on-policy-dpo")


def plot_comparison(out: Path, schemes, seeds) -> Path:
    """Mean ± s.e. over seeds of ``policy_reward`` against steps, one line per scheme."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..run_folder import read_metrics

    out = Path(out)
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for i, sc in enumerate(schemes):
        curves = []
        for s in seeds:
            f = out / sc / f"seed_{s}" / "metrics.csv"
            if f.is_file():
                curves.append([r["policy_reward"] for r in read_metrics(f)])
        if not curves:
            continue
        L = min(len(c) for c in curves)
        Y = np.array([c[:L] for c in curves])
        m = Y.mean(0)
        se = Y.std(0, ddof=1) / math.sqrt(len(Y)) if len(Y) > 1 else np.zeros(L)
        x = np.arange(1, L + 1)
        ax.plot(x, m, label=f"{sc} (n={len(Y)})", color=f"C{i}", ls="-" if sc.startswith("on-policy") else "--")
        ax.fill_between(x, m - se, m + se, color=f"C{i}", alpha=0.2)
    ax.set_xlabel("step (equal samples and reward queries per step)")
    ax.set_ylabel("policy reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out / "figures" / "reward_vs_steps.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    from ..trainers.preference import PRESETS, PreferenceTrainer, config_from_preset

    p = argparse.ArgumentParser(prog="polab run preference-sampling", description=__doc__.splitlines()[0])
    p.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--preset", default="cpu-demo", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int)
    p.add_argument("--model")
    p.add_argument("--out", default="runs/preference-sampling")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--resume", action="store_true", help="continue the grid in --out (finished runs are skipped)")
    p.add_argument("--overwrite", action="store_true", help="run the whole grid again over what --out holds")
    args = p.parse_args(argv)
    from ..run_folder import prepare_run_folder

    schemes = [s for s in args.schemes.split(",") if s]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        raise ValueError(f"--seeds must be integers separated by commas (e.g. 0,1,2); got {args.seeds!r}.") from None
    if not schemes or not seeds:
        raise ValueError("--schemes and --seeds need at least one value each.")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be an integer >= 1; got {args.steps}.")
    out = Path(args.out)
    configs = {(sc, s): config_from_preset(args.preset, scheme=sc, seed=s, steps=args.steps, model=args.model,
                                           out=str(out / sc / f"seed_{s}"), progress=args.progress, tensorboard=False)
               for sc in schemes for s in seeds}  # every configuration checked before anything is written
    with prepare_run_folder(out, resume=args.resume, overwrite=args.overwrite):
        for (sc, s), cfg in configs.items():
            latest = Path(cfg.out) / "checkpoints" / "latest"
            if args.overwrite or not latest.is_file():  # a new run (or one interrupted before its first checkpoint)
                cfg.resume, cfg.overwrite = False, Path(cfg.out).is_dir()
            elif latest.read_text().strip() == f"step_{cfg.steps:08d}":
                continue
            else:
                cfg.resume = True
            PreferenceTrainer(cfg).train()
    fig = plot_comparison(out, schemes, seeds)
    print(f"figure: {fig}")
    return 0
