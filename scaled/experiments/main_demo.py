"""``polab run main-demo``: the README's main job. DUMP-GRPO and uniform GRPO on the embedded SmolLM2, held-out accuracy before and after.

What it shows, in one run folder (``make main`` gives a fresh timestamped one):

1. the base SmolLM2-135M-Instruct's accuracy on **held-out** problems of each
   distribution of a graded arithmetic mixture
   (:class:`polab.scaled.tasks.arithmetic_mix.ArithmeticMixTask`: problems of
   the held-out split never appear in training);
2. GRPO training of two arms from the same model with the same seed, the same
   task and every option equal except the curriculum: DUMP
   (:class:`polab.estimators.curriculum.DumpScheduler`) and uniform sampling
   over the distributions;
3. each arm's held-out accuracy after training, per distribution, with 95%
   intervals, and the change from the base model, paired by problem;
4. one figure, ``figures/main.png``: DUMP's sampling probabilities and
   learnability per distribution against steps, the training reward of both
   arms against steps, and the held-out accuracy before and after;
5. ``summary.json`` and a three-line summary on stdout.

Held-out accuracy is the mean over held-out problems of the share of
``eval_samples`` responses (sampled at the training temperature, with the same
random streams before and after) that are right; its interval is a t interval
over problems (responses to one problem are not independent), and the
before/after change is tested by a paired t test and a Wilcoxon signed-rank test
over problems. The accuracy is sampled (pass@1 at the training temperature),
not greedy: that is the quantity GRPO optimises.

The arms run in parallel processes (``--workers``, one torch thread each), so
the two cores of a small machine are both used; the numbers do not depend on
``--workers`` (each arm's streams are seeded from ``(seed, step, stream)``).

Choice of the mixture. Measured on the base model with this module's evaluation
(T = 0.7, 32 new tokens, 12 held-out problems x 4 responses, mean +- s.e. over
problems; run ``runs/main-h6-2`` of 2026-12-04): ``add1`` 43.8 +- 10.7%, ``mul1``
45.8 +- 8.0%, ``add21`` 6.2 +- 3.3%, ``add2`` 0.0%; truncation at 32 tokens 19-48%
(the answer sits on the first line, which the reward reads). Earlier probes at
T = 1.0 with the first-integer reading gave add1 15.6 +- 6.3%, mul1 4.7 +- 3.7%,
two-digit sums and differences 0-2% (32 problems x 4): the instruct model echoes
``7 + 5 = 12``, which the last-integer-of-the-first-line reading scores right. So two
distributions start inside 10-60%, one just below (add21, learnable: groups with
one right answer appear), and add2 is the "too hard" distribution a curriculum
should learn to sample less.

Cost (2026-12-04, shared 2-core machine under load 6-20 from other jobs; measured, not
extrapolated): a step of 4 prompts x 8 responses took 136-170 s of wall time per arm
(the first step up to 900 s while memory was short); each worker peaks at ~3.6 GB.
Two full 8-step runs were OOM-killed by the machine (other jobs held 15+ GB), so the
measured main-job figure is a 4-step run: ``polab run main-demo --steps 4 --no-checkpoint``
took 577 s of wall time under load 6-10; per arm 27 CPU-s base evaluation (half the
distributions), 25-26 CPU-s per GRPO step, 44-46 CPU-s final evaluation. Extrapolated
from these CPU times, the 8-step default needs ~290 CPU-s per arm, i.e. about 5 minutes on
2 idle cores (the arms run in parallel) plus the checkpoint writes; not measured on an
idle machine. Result of that 4-step run (seed 0): pooled held-out accuracy 24.0% -> DUMP
49.0% (+25.0 points, 95% CI [+11.2, +38.8]) and uniform 45.3% (+21.4, [+9.7, +33.0]);
one seed, so DUMP vs uniform is not resolved by it (``polab run dump-vs-uniform`` is the test).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..models import EMBEDDED_MODEL

__all__ = ["MainDemoConfig", "PRESETS", "arm_config", "evaluate", "run_job", "summarise", "plot_main", "summary_lines", "run", "main",
           "mean_t_interval", "paired_tests"]


@dataclass
class MainDemoConfig:
    """Options of ``polab run main-demo`` (defaults: the ``cpu`` preset, the README's main job)."""

    model: str = field(default=EMBEDDED_MODEL, metadata={"help": "policy model (smollm2-135m-instruct embedded, tiny-llama for tests)"})
    task: str = field(default="arith-mix", metadata={"help": "task spec with held-out problems (arith-mix[:K1,K2,...])"})
    arms: tuple[str, ...] = field(default=("dump", "uniform"), metadata={"help": "curricula compared", "choices": ("dump", "uniform")})
    seed: int = field(default=0, metadata={"help": "training seed (both arms)"})
    steps: int = field(default=8, metadata={"help": "GRPO steps per arm"})
    prompts_per_step: int = field(default=4, metadata={"help": "prompts per step"})
    samples_per_prompt: int = field(default=8, metadata={"help": "group size G"})
    max_new_tokens: int = field(default=32, metadata={"help": "response budget (training and evaluation)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (training and evaluation)"})
    lr: float = field(default=5e-5, metadata={"help": "AdamW learning rate (full fine-tune)"})
    dump_temperature: float = field(default=0.1, metadata={"help": "DUMP softmax temperature"})
    dump_exploration: float = field(default=1.0, metadata={"help": "DUMP UCB exploration constant"})
    eval_problems: int = field(default=12, metadata={"help": "held-out problems per distribution (fewer where the pool is smaller)"})
    eval_samples: int = field(default=4, metadata={"help": "responses per held-out problem"})
    eval_seed: int = field(default=12345, metadata={"help": "seed of the held-out problem choice and of the evaluation sampling"})
    device: str = field(default="cpu", metadata={"help": "cpu (the main job) or cuda (one GPU shared by the workers)"})
    workers: int = field(default=2, metadata={"help": "processes (arms run in parallel; 1 runs everything here)"})
    checkpoint: bool = field(default=True, metadata={"help": "save each arm's final policy (a Hugging Face folder, ~0.5 GB)"})
    out: str = field(default="runs/main-demo", metadata={"help": "run folder (new or empty)"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})


PRESETS = {
    "cpu": {},
    # a seconds-long smoke run on the random tiny model (tests)
    "tiny": {"model": "tiny-llama", "steps": 2, "prompts_per_step": 2, "samples_per_prompt": 2, "max_new_tokens": 4, "eval_problems": 3,
             "eval_samples": 2, "workers": 1, "checkpoint": False, "progress": False, "lr": 1e-3},
}


def _check(cfg: MainDemoConfig) -> None:
    from ..tasks import build_task

    errs = []
    for name in ("steps", "prompts_per_step", "max_new_tokens", "eval_problems", "eval_samples", "workers"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            errs.append(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
    if not isinstance(cfg.samples_per_prompt, int) or cfg.samples_per_prompt < 2:
        errs.append(f"--samples-per-prompt must be an integer >= 2 (group-relative advantages), got {cfg.samples_per_prompt!r}")
    for name in ("temperature", "lr", "dump_temperature"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            errs.append(f"--{name.replace('_', '-')} must be a finite number > 0, got {v!r}")
    if not cfg.arms or len(set(cfg.arms)) != len(cfg.arms) or any(a not in ("dump", "uniform") for a in cfg.arms):
        errs.append(f"--arms must be distinct values of dump, uniform; got {cfg.arms!r}")
    from ..run_folder import check_device

    try:
        check_device(cfg.device)
    except ValueError as exc:
        errs.append(str(exc))
    try:
        task = build_task(cfg.task)
        if not callable(getattr(task, "eval_problems", None)):
            errs.append(f"--task {cfg.task!r} has no held-out split (eval_problems); use arith-mix[:K1,K2,...]")
    except ValueError as exc:
        errs.append(f"--task: {exc}")
    if errs:
        raise ValueError("invalid main-demo configuration:\n  - " + "\n  - ".join(errs))


def arm_config(cfg: MainDemoConfig, arm: str, seed: int, out: str, *, checkpoint: bool | None = None, progress: bool = False):
    """The GRPOConfig of one arm: every option equal across arms except ``curriculum``."""
    from ..trainers.grpo import GRPOConfig

    ckpt = cfg.checkpoint if checkpoint is None else checkpoint
    return GRPOConfig(model=cfg.model, task=cfg.task, curriculum=arm, seed=seed, steps=cfg.steps, prompts_per_step=cfg.prompts_per_step,
                      samples_per_prompt=cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                      lr=cfg.lr, dump_temperature=cfg.dump_temperature, dump_exploration=cfg.dump_exploration, out=out,
                      checkpoint_every=cfg.steps if ckpt else 10**9, keep_checkpoints=1, tensorboard=False, progress=progress,
                      micro_batch_size=cfg.samples_per_prompt,  # one group per forward/backward: same loss, ~3 GB peak instead of ~5
                      torch_threads=1, device=cfg.device)


# -- evaluation ------------------------------------------------------------------------------------


def eval_sets(task, cfg) -> dict[str, list]:
    """Held-out problems per distribution (``eval_problems`` of each, fewer where the pool is smaller)."""
    return {s: task.eval_problems(s, min(cfg.eval_problems, len(task.heldout_pool(s))), seed=cfg.eval_seed) for s in task.distributions}


@torch.no_grad()
def evaluate(policy, tokenizer, task, problems: list, *, samples: int, temperature: float, max_new_tokens: int, seed: int,
             batch_prompts: int = 16) -> dict:
    """Correct responses per problem (out of ``samples``), truncation rate and mean length, from seeded sampling.

    The random stream depends on ``seed`` and the chunk only, so the same
    problems evaluated before and after training see the same uniform draws.
    """
    from ..rollout import sample_rollouts
    from ..trainers.base import step_seed

    correct, trunc, length = [], [], []
    for c in range(0, len(problems), batch_prompts):
        chunk = problems[c:c + batch_prompts]
        gen = torch.Generator(device=next(policy.parameters()).device).manual_seed(step_seed(seed, c, 0, "eval"))
        b = sample_rollouts(policy, tokenizer, [task.prompt(p) for p in chunk], samples_per_prompt=samples, max_new_tokens=max_new_tokens,
                            generator=gen, temperature=temperature)
        ok = [bool(task.reward(t, chunk[i // samples]).correct) for i, t in enumerate(b.texts)]
        correct += [int(sum(ok[i * samples:(i + 1) * samples])) for i in range(len(chunk))]
        trunc += b.truncated.tolist()
        length += b.response_mask.sum(1).tolist()
    return {"correct": correct, "samples": samples, "truncated_rate": float(np.mean(trunc)), "response_length": float(np.mean(length))}


def run_job(job: dict) -> dict:
    """One arm in its own process (or here): evaluate the base model on ``job["base_sources"]``, train, evaluate the result.

    ``job``: ``cfg`` (a MainDemoConfig as a dict), ``arm``, ``seed``, ``out``, ``base_sources``, ``progress``, ``checkpoint``.
    Returns JSON-safe results with wall and CPU seconds per phase.
    """
    from ..tasks import build_task
    from ..trainers.grpo import GRPOTrainer

    torch.set_num_threads(1)
    cfg = MainDemoConfig(**{k: tuple(v) if k == "arms" else v for k, v in job["cfg"].items()})
    task = build_task(cfg.task)
    sets = eval_sets(task, cfg)
    ckpt = cfg.checkpoint if job.get("checkpoint") is None else job["checkpoint"]
    trainer_cls = GRPOTrainer if ckpt else _no_checkpoint_trainer()
    gcfg = arm_config(cfg, job["arm"], job["seed"], job["out"], checkpoint=ckpt, progress=job.get("progress", False))
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = trainer_cls(gcfg)
    ekw = dict(samples=cfg.eval_samples, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    base = {s: evaluate(trainer.policy, trainer.tokenizer, task, sets[s], seed=step_seed_eval(cfg, s), **ekw) for s in job["base_sources"]}
    t1, c1 = time.perf_counter(), time.process_time()
    _write_json(Path(job["out"]) / "eval_base.json", base)
    trainer.train()
    t2, c2 = time.perf_counter(), time.process_time()
    after = {s: evaluate(trainer.policy, trainer.tokenizer, task, sets[s], seed=step_seed_eval(cfg, s), **ekw) for s in task.distributions}
    t3, c3 = time.perf_counter(), time.process_time()
    _write_json(Path(job["out"]) / "eval_after.json", after)
    return {"arm": job["arm"], "seed": job["seed"], "out": job["out"], "base": base, "after": after,
            "wall_s": {"base_eval": t1 - t0, "train": t2 - t1, "eval": t3 - t2}, "cpu_s": {"base_eval": c1 - c0, "train": c2 - c1, "eval": c3 - c2},
            "steps": cfg.steps}


def _write_json(path: Path, obj) -> None:
    from ..checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _no_checkpoint_trainer():
    """GRPOTrainer that writes no checkpoint (the seed grids would otherwise write 0.5 GB per run)."""
    from ..trainers.grpo import GRPOTrainer

    class NoCheckpointGRPOTrainer(GRPOTrainer):
        def save(self) -> None:
            return None

    return NoCheckpointGRPOTrainer


def step_seed_eval(cfg: MainDemoConfig, source: str) -> int:
    """The evaluation seed of one distribution (the same before and after training)."""
    from ..trainers.base import step_seed

    return step_seed(cfg.eval_seed, 0, 0, f"eval:{source}")


def die_with_parent() -> bool:
    """Ask the kernel to send this process SIGTERM when its parent exits (Linux ``prctl(PR_SET_PDEATHSIG)``).

    Used as the worker initializer of :func:`run_jobs`: without it, ``kill PID`` of
    the main process (SIGTERM, which the process pool does not forward) left the
    SmolLM2 workers running on as orphans, ~3.6 GB each. Returns whether the
    request was made (False off Linux, where Ctrl-C still reaches the whole
    process group).
    """
    import sys

    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import os
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
        return False
    # the parent may have exited before prctl ran (then we were re-parented already)
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def run_jobs(jobs: list[dict], workers: int, *, progress: bool = True, desc: str = "arms", fn=None) -> list[dict]:
    """``fn`` (default :func:`run_job`) over ``jobs``, in ``workers`` spawned processes (results in the order of ``jobs``).

    The workers end with the main process (:func:`die_with_parent`), so stopping a
    run with ``kill`` does not leave model-sized orphans behind.
    """
    from tqdm.auto import tqdm

    fn = run_job if fn is None else fn
    if workers <= 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, disable=not progress)]
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out: list = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent) as ex:
        futs = {ex.submit(fn, j): i for i, j in enumerate(jobs)}
        for f in tqdm(as_completed(futs), total=len(jobs), desc=desc, disable=not progress):
            out[futs[f]] = f.result()
    return out


# -- statistics ------------------------------------------------------------------------------------


def mean_t_interval(x, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t interval ``(mean, lo, hi)`` of the values ``x`` (``lo = hi = mean`` for one value or zero spread)."""
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_t_interval needs at least one value.")
    m = float(x.mean())
    if x.size < 2:
        return m, m, m
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    h = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * se)
    return m, m - h, m + h


def paired_tests(after, before) -> dict:
    """Paired comparison of ``after - before`` (same units, e.g. problems or seeds).

    Returns ``mean_difference``, its 95% t interval (``lo``, ``hi``), the paired t
    test p value (``t_p``; 1.0 when every difference is equal), the two-sided
    Wilcoxon signed-rank p value (``wilcoxon_p``; exact for small samples without
    ties, zeros dropped; 1.0 when every difference is 0), and ``wins``/``losses``/``ties``.
    """
    from scipy import stats

    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 1:
        raise ValueError(f"after and before must be 1-D of equal length >= 1; got {a.shape} and {b.shape}.")
    d = a - b
    m, lo, hi = mean_t_interval(d)
    if d.size < 2 or np.all(d == d[0]):
        t_p = 1.0 if np.all(d == 0) or d.size < 2 else 0.0
    else:
        t_p = float(stats.ttest_rel(a, b).pvalue)
    nz = d[d != 0]
    wil = 1.0 if nz.size == 0 else float(stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided").pvalue)
    return {"mean_difference": m, "lo": lo, "hi": hi, "t_p": t_p, "wilcoxon_p": wil, "n": int(d.size),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}


def _accuracy(ev: dict) -> np.ndarray:
    return np.asarray(ev["correct"], dtype=np.float64) / ev["samples"]


def summarise(results: list[dict], sources: list[str]) -> dict:
    """Held-out accuracy per distribution (base and each arm), changes paired by problem, pooled over distributions."""
    base = {}
    for r in results:
        base.update(r["base"])
    out = {"sources": list(sources), "base": {}, "arms": {}}
    for s in sources:
        m, lo, hi = mean_t_interval(_accuracy(base[s]))
        out["base"][s] = {"accuracy": m, "lo": lo, "hi": hi, "n_problems": len(base[s]["correct"]), "truncated_rate": base[s]["truncated_rate"]}
    pooled_base = np.concatenate([_accuracy(base[s]) for s in sources])
    out["base"]["all"] = dict(zip(("accuracy", "lo", "hi"), mean_t_interval(pooled_base)))
    out["base"]["all"]["truncated_rate"] = float(np.mean([base[s]["truncated_rate"] for s in sources]))
    for r in results:
        arm = {}
        for s in sources:
            acc = _accuracy(r["after"][s])
            m, lo, hi = mean_t_interval(acc)
            arm[s] = {"accuracy": m, "lo": lo, "hi": hi, "truncated_rate": r["after"][s]["truncated_rate"],
                      "change": paired_tests(acc, _accuracy(base[s]))}
        pooled = np.concatenate([_accuracy(r["after"][s]) for s in sources])
        m, lo, hi = mean_t_interval(pooled)
        arm["all"] = {"accuracy": m, "lo": lo, "hi": hi, "change": paired_tests(pooled, pooled_base),
                      "truncated_rate": float(np.mean([r["after"][s]["truncated_rate"] for s in sources]))}
        out["arms"][f"{r['arm']}/seed{r['seed']}"] = arm
    return out


# -- figure and summary ----------------------------------------------------------------------------


def plot_main(path: Path, runs: dict[str, Path], summary: dict, *, title: str = "") -> Path:
    """The main figure: DUMP's probabilities and learnability, reward vs step for every arm, held-out accuracy before/after.

    ``runs`` maps an arm label (``dump/seed0``) to its run folder (``metrics.csv``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..logger import read_metrics

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sources = summary["sources"]
    rows = {k: read_metrics(Path(v) / "metrics.csv") for k, v in runs.items()}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    cmap = plt.get_cmap("viridis", max(len(sources), 2))
    dump_key = next((k for k in rows if k.startswith("dump")), None)
    for ax, key, label in ((axes[0, 0], "prob", "DUMP sampling probability"), (axes[0, 1], "learnability", "DUMP learnability: window mean |A|")):
        if dump_key is not None and rows[dump_key]:
            steps = [r["step"] for r in rows[dump_key]]
            for j, s in enumerate(sources):
                ax.plot(steps, [r.get(f"{key}:{s}", math.nan) for r in rows[dump_key]], marker="o", ms=3, color=cmap(j), label=s)
        if key == "prob":
            ax.axhline(1 / len(sources), color="grey", ls="--", lw=1, label="uniform arm (1/K)")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    ax = axes[1, 0]
    for i, (k, rr) in enumerate(rows.items()):
        if not rr:
            continue
        steps = np.array([r["step"] for r in rr])
        acc = np.array([r["accuracy"] for r in rr])
        n = max(1, int(rr[0].get("count_per_step", 0)) or 1)
        ax.plot(steps, acc, marker="o", ms=3, color=f"C{i}", alpha=0.5, lw=1, label=f"GRPO, {k.split('/')[0]} curriculum: batch accuracy")
        w = min(4, len(acc))
        sm = np.convolve(acc, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], sm, color=f"C{i}", lw=2.5, label=f"{k.split('/')[0]}: mean of last {w} steps")
        del n
    ax.set_xlabel("step")
    ax.set_ylabel("training reward = batch accuracy (sampled)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    labels = ["base"] + list(summary["arms"])
    width = 0.8 / len(labels)
    x = np.arange(len(sources) + 1)
    for i, lab in enumerate(labels):
        d = summary["base"] if lab == "base" else summary["arms"][lab]
        ys = [d[s]["accuracy"] for s in sources + ["all"]]
        err = np.array([[d[s]["accuracy"] - d[s]["lo"], d[s]["hi"] - d[s]["accuracy"]] for s in sources + ["all"]]).T
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, ys, width, yerr=err, capsize=3, color="lightgrey" if lab == "base" else f"C{i - 1}",
               edgecolor="black", lw=0.5, label="base SmolLM2-135M-Instruct" if lab == "base" else f"after GRPO, {lab.split('/')[0]} curriculum")
    ax.set_xticks(x, sources + ["all"])
    ax.set_ylabel("held-out accuracy (95% t interval over problems)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_lines(summary: dict, figure: Path, out: Path) -> list[str]:
    """The three lines printed at the end: what improved, by how much, where the figures are."""
    sources = summary["sources"]
    b = summary["base"]["all"]
    parts = []
    for lab, arm in summary["arms"].items():
        c = arm["all"]["change"]
        parts.append(f"{lab.split('/')[0]} {100 * arm['all']['accuracy']:.1f}% ({100 * c['mean_difference']:+.1f} points, 95% CI "
                     f"[{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}], paired t p={c['t_p']:.2g})")
    line1 = f"held-out accuracy (all distributions): base {100 * b['accuracy']:.1f}% -> " + "; ".join(parts)
    per = []
    for s in sources:
        per.append(f"{s} {100 * summary['base'][s]['accuracy']:.0f}->" + "/".join(f"{100 * a[s]['accuracy']:.0f}" for a in summary["arms"].values()))
    arms = "/".join(k.split("/")[0] for k in summary["arms"])
    line2 = f"per distribution, base->{arms} (%): " + ", ".join(per)
    line3 = f"figure: {figure}; summary: {out / 'summary.json'}; per-arm metrics and figures: " + ", ".join(
        str(out / k.split('/')[0]) for k in summary["arms"])
    return [line1, line2, line3]


# -- entry points ----------------------------------------------------------------------------------


def run(cfg: MainDemoConfig) -> tuple[Path, list[str]]:
    """Run the main job; returns the run folder and the three summary lines."""
    from ..checkpoint import atomic_write_text
    from ..config import config_record
    from ..run_folder import prepare_run_folder
    from ..tasks import build_task

    _check(cfg)
    out = Path(cfg.out)
    with prepare_run_folder(out, resume=False, overwrite=cfg.overwrite):
        t0 = time.perf_counter()
        atomic_write_text(out / "config.json", json.dumps(config_record(cfg), indent=2, sort_keys=True, default=str) + "\n")
        sources = build_task(cfg.task).distributions
        n = len(cfg.arms)
        jobs = [{"cfg": asdict(cfg), "arm": a, "seed": cfg.seed, "out": str(out / a), "base_sources": sources[i::n],
                 "progress": cfg.progress and i == 0} for i, a in enumerate(cfg.arms)]  # one arm's bar (both would interleave)
        results = run_jobs(jobs, min(cfg.workers, len(jobs)), progress=cfg.progress, desc="main-demo arms")
        wall = time.perf_counter() - t0
        summary = summarise(results, sources)
        summary["timing"] = {"wall_s_total": wall,
                             "per_arm": {r["arm"]: {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                                                    "cpu_s_per_step": r["cpu_s"]["train"] / r["steps"]} for r in results}}
        summary["config"] = asdict(cfg)
        fig = plot_main(out / "figures" / "main.png", {f"{r['arm']}/seed{r['seed']}": Path(r["out"]) for r in results}, summary,
                        title=f"GRPO on {cfg.model}, task {cfg.task}: DUMP vs uniform curriculum (seed {cfg.seed}, {cfg.steps} steps, "
                              f"{cfg.prompts_per_step}x{cfg.samples_per_prompt} samples/step, lr {cfg.lr:g}, T={cfg.temperature:g})")
        lines = summary_lines(summary, fig, out)
        summary["summary_lines"] = lines
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return out, lines


def main(argv: list[str] | None = None) -> int:
    from ..config import parse_config

    cfg, _ = parse_config(MainDemoConfig, argv, prog="polab run main-demo", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    t0 = time.perf_counter()
    out, lines = run(cfg)
    lines[2] += f"; wall time {time.perf_counter() - t0:.0f} s"
    print("\n".join(lines))
    return 0
