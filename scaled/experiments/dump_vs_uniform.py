"""``polab run dump-vs-uniform``: does DUMP's curriculum beat uniform sampling over distributions? Paired over seeds.

DUMP's claim (Wang et al., arXiv 2504.09710): scheduling the training
distributions by a UCB on their learnability (mean |advantage|) makes GRPO
reach a given per-distribution reward in fewer steps, and gives higher
per-distribution reward at matched steps, than sampling the distributions
uniformly. The paper shows it on Knights-and-Knaves puzzles with 3 to 14 people
(12 distributions) and Qwen2.5-7B-Instruct-1M; here at CPU scale on the
embedded SmolLM2-135M-Instruct and the graded arithmetic mixture of the main
job (:mod:`polab.scaled.tasks.arithmetic_mix`), with the same GRPO options for
both arms and the same seeds (so the comparison is paired: seed ``s`` of both
arms starts from the same model with the same random streams; only the
curriculum differs).

Measures (each DUMP minus uniform, paired over seeds):

- **per-distribution reward at matched steps**: held-out accuracy of each
  distribution after the same number of steps (sampled at the training
  temperature, ``eval_samples`` responses per held-out problem), and pooled
  over distributions;
- **steps to a target**: the first step at which the trailing mean
  (``target_window`` steps) of the training batch accuracy reaches ``target``;
  a run that never reaches it counts as ``steps + 1`` (censored; stated in the
  summary);
- tests: paired t test and Wilcoxon signed-rank test over seeds (two-sided;
  with 5 seeds the smallest possible exact Wilcoxon p value is 2/32 = 0.0625,
  so the t test carries the decision at alpha 0.05, the Wilcoxon test is
  reported as the distribution-free check).

The verdict is printed whichever way it goes.

The paper-scale configuration is the GRPO preset ``dump-paper`` (Knights-and-Knaves 3-14 people, a
7B instruct model, 128 prompts x 16 responses per step, KL loss 0.001; needs
GPUs; ``polab train grpo --preset dump-paper --curriculum dump|uniform``).

Measured (2026-12-04; ``polab run dump-vs-uniform --out runs/dump-vs-uniform``, the defaults:
5 seeds x 2 arms of the main job's configuration, 2 workers; 2,338 s wall on the shared 2-core
machine at load 14-20, 2,071 CPU-s in all, 20.4 CPU-s per GRPO step). Seed 0 reproduces
``make main`` exactly. Pooled held-out accuracy DUMP 52.6% vs uniform 39.7%: **+12.9 points,
95% t interval [+2.1, +23.8], paired t p = 0.03, DUMP better in 5/5 seeds** (exact Wilcoxon
p = 0.062, its floor at n = 5 being 0.0625). Per distribution (DUMP - uniform): add1 +17.5
[-0.9, +35.9], add21 -0.4 [-21.3, +20.5], mul1 +12.1 [-27.1, +51.2], add2 +22.5 [+8.9, +36.1]
(p = 0.01). Steps to a training-batch accuracy of 0.5 (trailing 4 steps): DUMP 4, 9*, 4, 5, 6
vs uniform 9*, 9*, 6, 5, 9* (* = not reached in 8 steps, counted as 9), difference -2.0
[-4.6, +0.6], p = 0.10. Caveats: the batch accuracy is partly a curriculum effect (DUMP
samples the easier add1/mul1 more: 84 and 96 responses per run vs uniform's 58 and 59), so
the held-out measure is the fair one; DUMP sampled add2 less than uniform (50 vs 62 responses
per run, fewer in 4/5 seeds) and still gained most there, so that gain comes through transfer
from the other distributions, not from more add2 practice.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .main_demo import MainDemoConfig, mean_t_interval, paired_tests, run_jobs, summarise

__all__ = ["DumpVsUniformConfig", "PRESETS", "steps_to_target", "compare", "plot_comparison", "run", "main"]


@dataclass
class DumpVsUniformConfig(MainDemoConfig):
    """Options of ``polab run dump-vs-uniform`` (the main job's options plus seeds and the target)."""

    seeds: int = field(default=5, metadata={"help": "seeds (each runs both arms)"})
    target: float = field(default=0.5, metadata={"help": "steps-to-target: training batch accuracy to reach"})
    target_window: int = field(default=4, metadata={"help": "steps-to-target: trailing mean over this many steps"})
    checkpoint: bool = field(default=False, metadata={"help": "save each run's final policy (~0.5 GB each)"})
    out: str = field(default="runs/dump-vs-uniform", metadata={"help": "run folder (new or empty)"})


PRESETS = {
    "cpu": {},
    "tiny": {"model": "tiny-llama", "seeds": 2, "steps": 2, "prompts_per_step": 2, "samples_per_prompt": 2, "max_new_tokens": 4,
             "eval_problems": 3, "eval_samples": 2, "workers": 1, "progress": False, "lr": 1e-3, "target_window": 1},
}


def steps_to_target(values, target: float, *, window: int) -> tuple[int, bool]:
    """First step (1-based) at which the mean of the last ``window`` values reaches ``target``.

    Parameters
    ----------
    values : sequence of float
        One value per step, steps 1..n (NaN values are skipped inside a window;
        a window of only NaN never reaches the target).
    target : float
    window : int
        >= 1; the trailing mean at step t uses steps max(1, t - window + 1)..t.

    Returns
    -------
    (step, reached) : (int, bool)
        ``(n + 1, False)`` when the target is never reached (censored).
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1; got {window!r}.")
    v = np.asarray(values, dtype=np.float64)
    for t in range(1, v.size + 1):
        w = v[max(0, t - window):t]
        w = w[~np.isnan(w)]
        if w.size and w.mean() >= target:
            return t, True
    return int(v.size) + 1, False


def compare(results: list[dict], sources: list[str], curves: dict[tuple[str, int], list[float]], *, seeds: list[int], target: float,
            window: int) -> dict:
    """DUMP minus uniform, paired over seeds: held-out accuracy per distribution and pooled, and steps to target.

    ``results``: :func:`polab.scaled.experiments.main_demo.run_job` outputs; ``curves[(arm, seed)]``: training batch accuracy per step.
    """
    summ = summarise(results, sources)
    acc = {arm: {s: [] for s in sources + ["all"]} for arm in ("dump", "uniform")}
    for arm in acc:
        for seed in seeds:
            a = summ["arms"][f"{arm}/seed{seed}"]
            for s in sources + ["all"]:
                acc[arm][s].append(a[s]["accuracy"])
    out = {"sources": sources, "seeds": seeds, "base": summ["base"], "held_out_accuracy": {}, "steps_to_target": {}}
    for s in sources + ["all"]:
        d, u = acc["dump"][s], acc["uniform"][s]
        out["held_out_accuracy"][s] = {"dump": dict(zip(("mean", "lo", "hi"), mean_t_interval(d)), per_seed=d),
                                       "uniform": dict(zip(("mean", "lo", "hi"), mean_t_interval(u)), per_seed=u),
                                       "dump_minus_uniform": paired_tests(d, u)}
    stt = {arm: [steps_to_target(curves[(arm, seed)], target, window=window) for seed in seeds] for arm in ("dump", "uniform")}
    out["steps_to_target"] = {"target": target, "window": window,
                              "dump": [s for s, _ in stt["dump"]], "uniform": [s for s, _ in stt["uniform"]],
                              "dump_reached": [r for _, r in stt["dump"]], "uniform_reached": [r for _, r in stt["uniform"]],
                              "dump_minus_uniform": paired_tests([s for s, _ in stt["dump"]], [s for s, _ in stt["uniform"]])}
    return out


def verdict(comp: dict, *, alpha: float = 0.05) -> str:
    """One sentence: which arm is better on pooled held-out accuracy, or that the difference is not resolved."""
    c = comp["held_out_accuracy"]["all"]["dump_minus_uniform"]
    s = comp["steps_to_target"]["dump_minus_uniform"]
    n = c["n"]
    head = (f"DUMP - uniform, pooled held-out accuracy: {100 * c['mean_difference']:+.1f} points (95% CI [{100 * c['lo']:+.1f}, "
            f"{100 * c['hi']:+.1f}], {n} seeds, paired t p={c['t_p']:.2g}, Wilcoxon p={c['wilcoxon_p']:.2g}, DUMP better in {c['wins']}/{n})")
    if c["t_p"] < alpha:
        head += "; DUMP is " + ("better" if c["mean_difference"] > 0 else "worse") + f" at alpha {alpha}"
    else:
        head += f"; no difference resolved at alpha {alpha}"
    return head + (f". Steps to batch accuracy {comp['steps_to_target']['target']:g}: DUMP - uniform {s['mean_difference']:+.1f} "
                   f"(paired t p={s['t_p']:.2g}; not reached counts as steps+1).")


def plot_comparison(path: Path, comp: dict, curves: dict, probs: dict, *, title: str = "") -> Path:
    """Held-out accuracy per distribution (mean and 95% t interval over seeds), per-seed differences, reward and DUMP probabilities vs step."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sources, seeds = comp["sources"], comp["seeds"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    ax = axes[0, 0]
    x = np.arange(len(sources) + 1)
    for i, (arm, lab) in enumerate((("base", "base model"), ("dump", "GRPO + DUMP"), ("uniform", "GRPO + uniform"))):
        if arm == "base":
            b = comp["base"]
            ys = [b[s]["accuracy"] for s in sources + ["all"]]
            err = np.array([[b[s]["accuracy"] - b[s]["lo"], b[s]["hi"] - b[s]["accuracy"]] for s in sources + ["all"]]).T
        else:
            h = comp["held_out_accuracy"]
            ys = [h[s][arm]["mean"] for s in sources + ["all"]]
            err = np.array([[h[s][arm]["mean"] - h[s][arm]["lo"], h[s][arm]["hi"] - h[s][arm]["mean"]] for s in sources + ["all"]]).T
        ax.bar(x + (i - 1) * 0.27, ys, 0.27, yerr=err, capsize=3, color=("lightgrey", "C0", "C1")[i], edgecolor="black", lw=0.5, label=lab)
    ax.set_xticks(x, sources + ["all"])
    ax.set_ylabel("held-out accuracy after training\n(mean, 95% t interval over seeds; base: over problems)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax = axes[0, 1]
    for j, s in enumerate(sources + ["all"]):
        d = np.array(comp["held_out_accuracy"][s]["dump"]["per_seed"]) - np.array(comp["held_out_accuracy"][s]["uniform"]["per_seed"])
        ax.scatter(np.full(d.size, j) + np.linspace(-0.15, 0.15, d.size), 100 * d, color="C2", s=18)
        c = comp["held_out_accuracy"][s]["dump_minus_uniform"]
        ax.errorbar(j + 0.3, 100 * c["mean_difference"], yerr=[[100 * (c["mean_difference"] - c["lo"])], [100 * (c["hi"] - c["mean_difference"])]],
                    fmt="s", color="black", capsize=3)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(np.arange(len(sources) + 1), sources + ["all"])
    ax.set_ylabel("DUMP - uniform held-out accuracy (points)\ndots: seeds; square: mean, 95% t interval")
    ax.grid(alpha=0.3)
    ax = axes[1, 0]
    for i, arm in enumerate(("dump", "uniform")):
        Y = np.array([curves[(arm, s)] for s in seeds], dtype=np.float64)
        m = Y.mean(0)
        se = Y.std(0, ddof=1) / math.sqrt(len(seeds)) if len(seeds) > 1 else np.zeros_like(m)
        st = np.arange(1, Y.shape[1] + 1)
        ax.plot(st, m, color=f"C{i}", label=f"GRPO + {arm} curriculum (mean over {len(seeds)} seeds, +- s.e.)")
        ax.fill_between(st, m - se, m + se, color=f"C{i}", alpha=0.2)
    ax.axhline(comp["steps_to_target"]["target"], color="grey", ls="--", lw=1, label="steps-to-target threshold")
    ax.set_xlabel("step")
    ax.set_ylabel("training batch accuracy (sampled)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1, 1]
    cmap = plt.get_cmap("viridis", max(len(sources), 2))
    for j, s in enumerate(sources):
        Y = np.array([probs[(seed, s)] for seed in seeds], dtype=np.float64)
        st = np.arange(1, Y.shape[1] + 1)
        ax.plot(st, Y.mean(0), color=cmap(j), label=s)
        if len(seeds) > 1:
            se = Y.std(0, ddof=1) / math.sqrt(len(seeds))
            ax.fill_between(st, Y.mean(0) - se, Y.mean(0) + se, color=cmap(j), alpha=0.15)
    ax.axhline(1 / len(sources), color="grey", ls="--", lw=1, label="uniform (1/K)")
    ax.set_xlabel("step")
    ax.set_ylabel("DUMP sampling probability (mean +- s.e. over seeds)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _check(cfg: DumpVsUniformConfig) -> None:
    from .main_demo import _check as check_main

    errs = []
    if not isinstance(cfg.seeds, int) or cfg.seeds < 2:
        errs.append(f"--seeds must be an integer >= 2 (a paired test needs at least two), got {cfg.seeds!r}")
    if not isinstance(cfg.target_window, int) or cfg.target_window < 1:
        errs.append(f"--target-window must be an integer >= 1, got {cfg.target_window!r}")
    if not (isinstance(cfg.target, (int, float)) and math.isfinite(cfg.target)):
        errs.append(f"--target must be a finite number, got {cfg.target!r}")
    if tuple(cfg.arms) != ("dump", "uniform"):
        errs.append(f"--arms must be dump uniform for this comparison, got {cfg.arms!r}")
    if errs:
        raise ValueError("invalid dump-vs-uniform configuration:\n  - " + "\n  - ".join(errs))
    check_main(cfg)


def run(cfg: DumpVsUniformConfig) -> tuple[Path, dict]:
    """Run both arms for every seed, compare, draw the figure; returns the run folder and the comparison."""
    from ..checkpoint import atomic_write_text
    from ..config import config_record
    from ..logger import read_metrics
    from ..run_folder import prepare_run_folder
    from ..tasks import build_task

    _check(cfg)
    out = Path(cfg.out)
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    with prepare_run_folder(out, resume=False, overwrite=cfg.overwrite):
        t0 = time.perf_counter()
        atomic_write_text(out / "config.json", json.dumps(config_record(cfg), indent=2, sort_keys=True, default=str) + "\n")
        sources = build_task(cfg.task).distributions
        base_cfg = {k: v for k, v in asdict(cfg).items() if k in MainDemoConfig.__dataclass_fields__}
        jobs = [{"cfg": base_cfg, "arm": arm, "seed": seed, "out": str(out / arm / f"seed_{seed}"), "base_sources": [], "checkpoint": cfg.checkpoint}
                for seed in seeds for arm in ("dump", "uniform")]
        for i, s in enumerate(sources):  # the base model is evaluated once, its distributions spread over the first jobs
            jobs[i % len(jobs)]["base_sources"].append(s)
        results = run_jobs(jobs, min(cfg.workers, len(jobs)), progress=cfg.progress, desc="dump-vs-uniform runs")
        wall = time.perf_counter() - t0
        curves, probs = {}, {}
        for r in results:
            rows = read_metrics(Path(r["out"]) / "metrics.csv")
            curves[(r["arm"], r["seed"])] = [row["accuracy"] for row in rows]
            if r["arm"] == "dump":
                for s in sources:
                    probs[(r["seed"], s)] = [row[f"prob:{s}"] for row in rows]
        comp = compare(results, sources, curves, seeds=seeds, target=cfg.target, window=cfg.target_window)
        comp["verdict"] = verdict(comp)
        comp["timing"] = {"wall_s_total": wall, "cpu_s_train_per_step": float(np.mean([r["cpu_s"]["train"] / r["steps"] for r in results])),
                          "cpu_s_total": float(sum(sum(r["cpu_s"].values()) for r in results))}
        comp["config"] = asdict(cfg)
        fig = plot_comparison(out / "figures" / "dump_vs_uniform.png", comp, curves, probs,
                              title=f"DUMP vs uniform GRPO on {cfg.model}, {cfg.task}: {cfg.seeds} seeds, {cfg.steps} steps of "
                                    f"{cfg.prompts_per_step}x{cfg.samples_per_prompt}, lr {cfg.lr:g}, T={cfg.temperature:g}")
        comp["figure"] = str(fig)
        atomic_write_text(out / "summary.json", json.dumps(comp, indent=2, sort_keys=True) + "\n")
    return out, comp


def main(argv: list[str] | None = None) -> int:
    from ..config import parse_config

    cfg, _ = parse_config(DumpVsUniformConfig, argv, prog="polab run dump-vs-uniform", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    out, comp = run(cfg)
    for s in comp["sources"] + ["all"]:
        h = comp["held_out_accuracy"][s]
        c = h["dump_minus_uniform"]
        print(f"{s:6s} held-out accuracy: DUMP {100 * h['dump']['mean']:.1f}%, uniform {100 * h['uniform']['mean']:.1f}%, "
              f"difference {100 * c['mean_difference']:+.1f} [{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}] (t p={c['t_p']:.2g}, Wilcoxon p={c['wilcoxon_p']:.2g})")
    print(comp["verdict"])
    print(f"figure: {comp['figure']}; summary: {out / 'summary.json'}; wall time {comp['timing']['wall_s_total']:.0f} s")
    return 0
