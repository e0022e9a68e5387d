"""``polab run bf16-curves``: does bfloat16 training follow the float32 training curves? Paired over seeds.

The same short GRPO run (a GRPO preset, by default ``cpu-demo``: the embedded
SmolLM2-135M-Instruct on graded arithmetic) is trained once with
``--dtype float32`` and once with ``--dtype bfloat16`` (float32 master weights
and AdamW, training forward under ``torch.autocast``, rollouts from a bfloat16
copy refreshed every step) for each seed. Seed ``s`` of both precisions starts
from the same weights with the same random streams; the two runs still draw
different tokens from the first step on (the bfloat16 copy's logits differ from
float32's in their third significant digit, and a sampled token flips when its
uniform draw falls within that difference of a cumulative-probability boundary),
so the curves are compared as two samples of training runs, not as one
trajectory.

Measures (bfloat16 minus float32, paired over seeds): the run's mean training
reward, mean loss and mean gradient norm over all steps, and the last step's
reward. (With one epoch of one mini-batch the update is on-policy, the ratio is
1 in value and the loss equals minus the token-mean advantage: the loss curve
then follows the rewards, and the gradient norm is the curve that shows the
precision.) 95% t
interval and paired t / Wilcoxon tests (:func:`polab.scaled.experiments.main_demo.paired_tests`).
The per-step agreement of one loss and gradient is a separate, exact-input check:
``tests/scaled/test_bf16.py`` bounds the relative error of log-probabilities,
loss and gradient by ``K u`` with ``u = 2**-8`` (bfloat16's unit roundoff) and
``K`` the roundings along a path through the model.

Figure ``figures/bf16_curves.png``: reward and loss per step for both
precisions (mean over seeds with a 95% t band, thin lines per seed), and the
per-seed paired differences with their interval.

Run: ``polab run bf16-curves --out /tmp/bf16-curves`` (3 seeds x 2 precisions x 12 steps of
``cpu-demo``; see the measured figures in the docstring's status below), or ``--preset tiny``
(a random 2-layer model, seconds; what the test runs).

Measured (2026-12-04, ``polab run bf16-curves --grpo-preset main-demo --steps 8 --seeds 3 --out DIR``: the main job's
GRPO configuration, SmolLM2, arith-mix, 4 prompts x 8 samples, 32 new tokens; 764 s wall on 2 cores beside one other
job, peak 4.3 GB): bfloat16 (autocast) minus float32, paired by seed: mean training reward -0.003 [-0.354, +0.348]
(p = 0.98; per seed float32 0.535 / 0.258 / 0.652, bfloat16 0.441 / 0.418 / 0.578), last-step reward +0.177
[-0.368, +0.722], mean loss -0.014 [-0.050, +0.022] (p = 0.24), mean gradient norm -0.07 [-2.72, +2.58] (p = 0.92);
median step 11.8 s vs 17.3 s. The curves overlap within their seed bands: no difference resolved. With 3 seeds the
interval on the mean reward is +-0.35, so this rules out only gross divergence; the exact per-step agreement is the
test's (above).
"""

from __future__ import annotations

import csv
import json
import math
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .main_demo import mean_t_interval, paired_tests

__all__ = ["Bf16CurvesConfig", "PRESETS", "compare", "plot_curves", "run", "main"]

DTYPES = ("float32", "bfloat16")


@dataclass
class Bf16CurvesConfig:
    """Options of ``polab run bf16-curves``."""

    grpo_preset: str = field(default="cpu-demo", metadata={"help": "GRPO preset both precisions train (polab train grpo --preset)"})
    model: str | None = field(default=None, metadata={"help": "override the preset's model (e.g. tiny-llama)"})
    steps: int = field(default=12, metadata={"help": "GRPO steps per run"})
    seeds: int = field(default=3, metadata={"help": "seeds 0..N-1, each trained in both precisions"})
    lr: float | None = field(default=None, metadata={"help": "override the preset's learning rate"})
    prompts_per_step: int | None = field(default=None, metadata={"help": "override the preset's prompts per step"})
    samples_per_prompt: int | None = field(default=None, metadata={"help": "override the preset's group size"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "override the preset's response budget"})
    torch_threads: int = field(default=0, metadata={"help": "> 0: torch.set_num_threads in every run"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep each run's final checkpoint (~0.5 GB each for SmolLM2)"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})
    overwrite: bool = field(default=False, metadata={"help": "reuse a non-empty --out"})
    reuse_runs: bool = field(default=False, metadata={"help": "with --overwrite: keep the runs in --out whose metrics.csv already holds "
                                                              "--steps steps (same options assumed; e.g. after an interrupted invocation)"})
    out: str = field(default="runs/bf16-curves", metadata={"help": "run folder (new or empty)"})


PRESETS = {
    "cpu": {},
    "tiny": {"grpo_preset": "tiny", "steps": 3, "seeds": 2, "progress": False},
}


def _check(cfg: Bf16CurvesConfig) -> None:
    from ..trainers.grpo import PRESETS as GRPO_PRESETS

    if cfg.grpo_preset not in GRPO_PRESETS:
        raise ValueError(f"grpo_preset: unknown GRPO preset {cfg.grpo_preset!r}; choose one of {sorted(GRPO_PRESETS)}.")
    if not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {cfg.steps!r}.")
    if not isinstance(cfg.seeds, int) or cfg.seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1 (2 or more for an interval), got {cfg.seeds!r}.")
    if cfg.lr is not None and not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {cfg.lr!r}.")


def _grpo_config(cfg: Bf16CurvesConfig, dtype: str, seed: int, out: Path):
    from ..trainers.grpo import config_from_preset

    return config_from_preset(cfg.grpo_preset, model=cfg.model, steps=cfg.steps, seed=seed, dtype=dtype, lr=cfg.lr,
                              prompts_per_step=cfg.prompts_per_step, samples_per_prompt=cfg.samples_per_prompt,
                              max_new_tokens=cfg.max_new_tokens, torch_threads=cfg.torch_threads or None, device="cpu",
                              out=str(out), checkpoint_every=cfg.steps, keep_checkpoints=1, tensorboard=False, progress=cfg.progress)


def _read_metrics(path: Path, names: tuple[str, ...]) -> dict[str, list[float]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows.sort(key=lambda r: int(r["step"]))
    return {k: [float(r[k]) if r.get(k) not in (None, "") else math.nan for r in rows] for k in names}


METRICS = ("reward_mean", "accuracy", "loss", "grad_norm", "response_length", "time_step_s", "time_rollout_s", "time_train_s")


def train_one(cfg: Bf16CurvesConfig, dtype: str, seed: int, out: Path) -> dict:
    """One GRPO run; its per-step metrics, wall and CPU seconds."""
    import gc

    from ..trainers.grpo import GRPOTrainer

    t0, c0 = time.perf_counter(), time.process_time()
    tr = GRPOTrainer(_grpo_config(cfg, dtype, seed, out))
    tr.train()
    tr.close()
    del tr
    gc.collect()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return {"dtype": dtype, "seed": seed, "wall_s": wall, "cpu_s": cpu, "metrics": _read_metrics(out / "metrics.csv", METRICS)}


def _completed(folder: Path, steps: int) -> dict | None:
    """A finished run's record from its folder (metrics.csv with ``steps`` steps), else None."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return None
    m = _read_metrics(path, METRICS)
    if len(m["reward_mean"]) != steps:
        return None
    dtype, _, seed = folder.name.partition("_seed")
    return {"dtype": dtype, "seed": int(seed), "wall_s": float("nan"), "cpu_s": float("nan"), "metrics": m, "reused": True}


def compare(runs: list[dict]) -> dict:
    """bfloat16 minus float32, paired over seeds: mean reward and mean loss over steps, last-step reward, step time."""
    by = {(r["dtype"], r["seed"]): r["metrics"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    out = {"seeds": seeds}
    stats = {"mean_reward": lambda m: float(np.nanmean(m["reward_mean"])), "last_reward": lambda m: float(m["reward_mean"][-1]),
             "mean_accuracy": lambda m: float(np.nanmean(m["accuracy"])), "mean_loss": lambda m: float(np.nanmean(m["loss"])),
             "mean_abs_loss": lambda m: float(np.nanmean(np.abs(m["loss"]))),
             "mean_grad_norm": lambda m: float(np.nanmean(m["grad_norm"])), "step_s": lambda m: float(np.nanmedian(m["time_step_s"]))}
    for name, f in stats.items():
        b, a = [f(by[("bfloat16", s)]) for s in seeds], [f(by[("float32", s)]) for s in seeds]
        out[name] = {"bfloat16": dict(zip(("mean", "lo", "hi"), mean_t_interval(b)), per_seed=b),
                     "float32": dict(zip(("mean", "lo", "hi"), mean_t_interval(a)), per_seed=a),
                     "bf16_minus_f32": paired_tests(b, a)}
    return out


def verdict(comp: dict, *, alpha: float = 0.05) -> str:
    r, lo = comp["mean_reward"]["bf16_minus_f32"], comp["mean_loss"]["bf16_minus_f32"]
    n = r["n"]
    s = (f"bfloat16 - float32 over {n} seeds: mean training reward {r['mean_difference']:+.3f} (95% CI [{r['lo']:+.3f}, {r['hi']:+.3f}], "
         f"paired t p={r['t_p']:.2g}), mean loss {lo['mean_difference']:+.4f} (95% CI [{lo['lo']:+.4f}, {lo['hi']:+.4f}], p={lo['t_p']:.2g})")
    if n < 2:
        return s + "; one seed: no interval."
    differ = r["t_p"] < alpha or lo["t_p"] < alpha
    return s + ("; the curves differ at alpha " if differ else "; no difference resolved at alpha ") + f"{alpha}."


def plot_curves(path: Path, runs: list[dict], comp: dict, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from scipy import stats

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seeds = comp["seeds"]
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8), constrained_layout=True)
    for ax, key, ylab in ((axes[0], "reward_mean", "training batch reward (mean over responses)"),
                          (axes[1], "loss", "PPO-clip loss (on-policy: -token-mean advantage)"),
                          (axes[2], "grad_norm", "gradient norm before clipping")):
        for i, dtype in enumerate(DTYPES):
            Y = np.array([r["metrics"][key] for s in seeds for r in runs if r["dtype"] == dtype and r["seed"] == s], dtype=np.float64)
            st = np.arange(1, Y.shape[1] + 1)
            for y in Y:
                ax.plot(st, y, color=f"C{i}", lw=0.7, alpha=0.35)
            m = Y.mean(0)
            ax.plot(st, m, color=f"C{i}", lw=2, label=f"--dtype {dtype} (mean of {len(seeds)} seeds; thin: seeds)")
            if len(seeds) > 1:
                h = stats.t.ppf(0.975, len(seeds) - 1) * Y.std(0, ddof=1) / math.sqrt(len(seeds))
                ax.fill_between(st, m - h, m + h, color=f"C{i}", alpha=0.15, label=f"{dtype}: 95% t band over seeds")
        ax.set_xlabel("GRPO step")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[3]
    names = [("mean_reward", "mean reward"), ("last_reward", "last-step reward"), ("mean_loss", "mean loss"), ("mean_grad_norm", "mean grad norm")]
    for j, (k, lab) in enumerate(names):
        c = comp[k]
        d = np.array(c["bfloat16"]["per_seed"]) - np.array(c["float32"]["per_seed"])
        ax.scatter(np.full(d.size, j) + np.linspace(-0.12, 0.12, d.size), d, color="C2", s=18, label="seeds" if j == 0 else None)
        p = c["bf16_minus_f32"]
        ax.errorbar(j + 0.3, p["mean_difference"], yerr=[[p["mean_difference"] - p["lo"]], [p["hi"] - p["mean_difference"]]], fmt="s",
                    color="black", capsize=3, label="mean, 95% t interval" if j == 0 else None)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(range(len(names)), [n for _, n in names])
    ax.set_ylabel("bfloat16 - float32 (paired by seed)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(cfg: Bf16CurvesConfig) -> tuple[Path, dict]:
    from tqdm.auto import tqdm

    from ..checkpoint import atomic_write_text
    from ..config import config_record
    from ..run_folder import prepare_run_folder

    _check(cfg)
    out = Path(cfg.out)
    with prepare_run_folder(out, resume=False, overwrite=cfg.overwrite):
        t0 = time.perf_counter()
        atomic_write_text(out / "config.json", json.dumps(config_record(cfg), indent=2, sort_keys=True, default=str) + "\n")
        runs = []
        jobs = [(s, d) for s in range(cfg.seeds) for d in DTYPES]  # alternate precisions so machine load hits both alike
        for s, d in tqdm(jobs, desc="bf16-curves runs", disable=not cfg.progress):
            folder = out / f"{d}_seed{s}"
            done = _completed(folder, cfg.steps) if cfg.reuse_runs else None
            runs.append(done if done is not None else train_one(cfg, d, s, folder))
        comp = compare(runs)
        comp["verdict"] = verdict(comp)
        g = _grpo_config(cfg, "float32", 0, out)
        comp["figure"] = str(plot_curves(out / "figures" / "bf16_curves.png", runs, comp,
                                         title=f"GRPO (preset {cfg.grpo_preset}: {g.model}, task {g.task}, {g.prompts_per_step}x{g.samples_per_prompt} "
                                               f"samples/step, {g.max_new_tokens} new tokens, lr {g.lr:g}): bfloat16 autocast vs float32, "
                                               f"{cfg.seeds} seeds"))
        comp["timing"] = {"wall_s_total": time.perf_counter() - t0,
                          "runs": [{k: r[k] for k in ("dtype", "seed", "wall_s", "cpu_s")} for r in runs],
                          "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        comp["config"] = asdict(cfg)
        comp["curves"] = {f"{r['dtype']}/seed{r['seed']}": r["metrics"] for r in runs}
        atomic_write_text(out / "summary.json", json.dumps(comp, indent=2, sort_keys=True, default=float) + "\n")
    return out, comp


def main(argv: list[str] | None = None) -> int:
    from ..config import parse_config

    cfg, _ = parse_config(Bf16CurvesConfig, argv, prog="polab run bf16-curves", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    out, comp = run(cfg)
    for k in ("mean_reward", "last_reward", "mean_loss", "mean_grad_norm", "step_s"):
        c = comp[k]
        print(f"{k:12s} float32 {c['float32']['mean']:.4f}  bfloat16 {c['bfloat16']['mean']:.4f}  difference "
              f"{c['bf16_minus_f32']['mean_difference']:+.4f} [{c['bf16_minus_f32']['lo']:+.4f}, {c['bf16_minus_f32']['hi']:+.4f}]")
    print(comp["verdict"])
    print(f"figure: {comp['figure']}; summary: {out / 'summary.json'}; wall time {comp['timing']['wall_s_total']:.0f} s")
    return 0
