"""TD3+BC, PRDC and A2PR on polab's local D4RL-style MuJoCo datasets, several seeds, D4RL-normalised scores.

``polab run offline-mujoco`` trains every (dataset, method, seed) with :class:`polab.scaled.trainers.offline.OfflineTrainer`
(one run folder each under ``runs/``), evaluates the final deterministic actor over ``final_episodes`` episodes, and
reports per dataset and method the mean D4RL-normalised score (the dataset's own random / expert reference returns,
measured from polab's TD3 behaviour policies: :mod:`polab.scaled.offline.datasets`) with a 95% t interval over
seeds, the paired difference of each method against TD3+BC (same seeds, exact sign-flip permutation test), and the
gradient steps per second. Missing datasets are made first (``polab data make``; cached).

Presets: ``cpu`` (default; InvertedPendulum and Hopper, medium and medium-replay, 3 seeds, 2,000 gradient steps
per run, hidden 64, A2PR VAE hidden 64: sized for a shared 2-core machine), ``quick`` (seconds; a smoke test), ``paper`` (the papers' scale: 1M gradient steps,
evaluation over 10 episodes, 5 seeds, Hopper / HalfCheetah / Walker2d x medium / medium-replay / expert; with
D4RL-scale data (``PAPER_SCALE`` in :mod:`polab.scaled.offline.datasets`); GPU, hours per run; not run here).
``--workers N`` runs N trainings in parallel processes (one thread each).

The authors' per-task hyperparameters are used where the task matches (hopper: PRDC alpha 2.5 beta 2; A2PR
alpha 2.5, mask 0.4, vae_weight 1; halfcheetah: alpha 40; walker2d: A2PR vae_weight 1.5); InvertedPendulum takes the
defaults. The budget is tiny next to the papers' 1M steps, so the scores say how far each method gets in a few
thousand steps on weak CPU-budget datasets, not whether the papers' numbers reproduce.

Measured (2026-12-04, cpu preset: hidden 64, A2PR VAE 64, 2,000 gradient steps, final score over 10 episodes; shared
2-core machine at load average 13-19, ``--workers 2``; D4RL-normalised with polab's references, mean +- 95% t
half-width over seeds):

- ``polab run offline-mujoco --datasets invertedpendulum-medium invertedpendulum-medium-replay --workers 2
  --out runs/offline_mujoco_ip`` (3 seeds, 25 min) and ``... --datasets invertedpendulum-medium-replay --seed 3
  --seeds 3 --workers 2 --out runs/offline_mujoco_ip_mr_s345`` (23 min), pooled with :func:`pooled_summary`:
  invertedpendulum-medium (behaviour data 37.6): TD3+BC 49.6 +- 6.3, PRDC 51.0 +- 21.3, A2PR 54.5 +- 23.9 (no
  difference, p >= 0.5); invertedpendulum-medium-replay (behaviour -1.1, 2,980 transitions), 6 seeds: TD3+BC
  10.7 +- 2.4, PRDC 22.7 +- 4.8, A2PR 42.4 +- 26.8; PRDC and A2PR beat TD3+BC in 6 of 6 paired seeds (exact
  sign-flip p = 0.031 each, the smallest p 6 seeds allow).
- ``polab run offline-mujoco --datasets hopper-medium hopper-medium-replay --workers 2 --out
  runs/offline_mujoco_hopper`` (3 seeds, 35 min): hopper-medium (behaviour 79.2): TD3+BC 77.6 +- 0.8, PRDC
  13.7 +- 0.3, A2PR 13.7 +- 0.3; hopper-medium-replay (behaviour 6.3): TD3+BC
  14.4 +- 0.9, PRDC 15.8 +- 8.5, A2PR 13.6 +- 0.7 (no difference). PRDC's exact KD-tree search over the 50k
  hopper-medium keys took 0.3-0.65 s per actor step on the loaded machine (``time_nn_s``), its main cost on CPU.
- Why PRDC and A2PR score the same 13.7 on hopper-medium (``scripts/offline_diagnose.py``, seed 0 unless stated; no
  bug found: the losses, the constraint keys over normalised states, the VAE and value updates and the evaluation
  match the authors' code): every episode of this data is one ~86-step hop (return ~171); a policy that misjudges it
  falls at step 23-24 (return 36-38, score 13.3-13.8), whichever method made it, and TD3+BC's own actor sits in that
  mode at 500, 1,000 and 1,500 gradient steps (returns 39.6, 38.8, 41.6) before it reaches the hop at 2,000 (168.9;
  120.6 at 6,000). At 2,000 steps the critic is far from converged (Q(s,a) ~10 against the data's discounted
  return 71). With the authors' loose settings the actor follows its errors out of the data: PRDC (beta 2; nearest
  pairs come from neighbouring states of the 580 near-identical episodes, distance ~0.6) and A2PR (hopper mask 0.4)
  drive the first action to the tanh bound -1 on 47% / 67% of dataset states (data 1%, TD3+BC 5%) with
  Q(s,pi) - Q(s,a) at +1.8 / +2.0 (TD3+BC +1.1); A2PR continued falls at step 7 from 5,000 steps on, Q(s,a) 108 > 71
  at 7,000 (overestimation). A hyper-parameter x budget effect: at the same 2,000 steps, A2PR with mask 1.0 scores
  78.7 / 77.9 / 78.2 (seeds 0 / 1 / 2; ``--option mask=1.0``) and PRDC with beta 10 (pairs from the state itself)
  77.2 / 78.3 / 77.7 (``--option beta=10``), TD3+BC's level; PRDC at the authors' width (``--hidden 256``) does not
  saturate, scores 77.6 at 500 steps and decays to 25.0 at 2,000. Those figures are 3-5 episodes each (not the
  10-episode final evaluation).
- ``... --datasets walker2d-medium halfcheetah-medium --algorithms td3bc a2pr --workers 2 --out
  runs/offline_mujoco_hc_w2d_medium2`` (32 min, load 13-22) and ``... --datasets walker2d-medium-replay --workers 2
  --out runs/offline_mujoco_w2d_mr`` (30 min): walker2d-medium (behaviour 47.6): TD3+BC 85.3 +- 118.7 (140.4, 56.1,
  59.2), A2PR 50.7 +- 16.1 (lower in 3/3 seeds, p = 0.25); halfcheetah-medium (behaviour 44.7): TD3+BC -9.7 +- 20.2,
  A2PR -29.2 +- 8.9 (3/3 lower, p = 0.25): both far below the data at 2,000 steps with alpha 40 / 2.5;
  walker2d-medium-replay (behaviour 0.6, 7,383 transitions): TD3+BC 100.3 +- 29.8, PRDC 91.9 +- 69.8 (p = 0.75),
  A2PR 48.4 +- 18.8 (3/3 lower, p = 0.25). Walker2d's expert reference (303.8) is a weak CPU-budget policy, hence
  scores above 100. Cut for time: PRDC on the 50k-transition medium sets (its exact search over 23-dimensional keys
  took 2-9 s per actor step at load 15-20, i.e. 0.7 gradient steps/s: about an hour per run) and
  halfcheetah-medium-replay (only TD3+BC seed 0 ran: 19.7).

Verdict at this budget: on the mixed, low-quality replay data of InvertedPendulum, both dataset-aware regularisers
beat plain behaviour cloning consistently (the papers' claim for mixed data, seen here); on Hopper's narrow medium
data TD3+BC is far ahead after 2,000 steps with the authors' Hopper settings, not with A2PR mask 1.0 or PRDC beta 10;
nothing here speaks to the papers' 1M-step numbers.

Policy-guided diffusion (opt-in arm ``td3bc-pgd``, :mod:`polab.scaled.methods.offline_pgd`: TD3+BC on 240/256
synthetic + 16/256 real transitions per minibatch; an EDM MLP denoiser over 4-transition windows, 5,000 steps; 4,096
windows regenerated every ``--pgd-refresh-every`` 500 gradient steps with the current actor as the guide,
``--pgd-guidance-coeff`` 0.1; the first set unguided). Measured 2026-12-04, cpu preset, same seeds as TD3+BC, load
average 11-22 (the runs got ~14% of a core each on average):

- ``polab run offline-mujoco --datasets invertedpendulum-medium-replay hopper-medium-replay --algorithms td3bc td3bc-pgd
  --workers 2 --out runs/offline_mujoco_pgd`` (3 seeds; 36 min wall, 307 CPU s) and ``polab run offline-mujoco
  --datasets invertedpendulum-medium-replay --algorithms td3bc td3bc-pgd --seed 3 --seeds 3 --workers 2 --out
  runs/offline_mujoco_pgd_s345`` (td3bc-pgd alone: 16 min wall, 133 CPU s; TD3+BC's seeds 3-5 are bit-identical to
  ``runs/offline_mujoco_ip_mr_s345``), pooled with :func:`pooled_summary`: invertedpendulum-medium-replay, 6 seeds:
  TD3+BC 10.7 +- 2.4, TD3+BC-PGD 25.1 +- 8.2, better in 6 of 6 paired seeds (+14.4, exact sign-flip p = 0.031);
  hopper-medium-replay, 3 seeds: TD3+BC 14.4 +- 0.9, TD3+BC-PGD 14.0 +- 0.3 (-0.4, lower in 3 of 3, p = 0.25; every
  run of both returns ~39, the hopper falls at once). A PGD run's extra work (denoiser fit, 4 synthetic sets) took
  6-10 min of its wall (``pgd_time_s``) at this load; the gradient-step rates are not comparable across these runs (the
  load rose from 11 to 22 while they ran).
- Synthetic-data fidelity (``synth_dynamics_error``: one-step MuJoCo error of synthetic transitions over the data's
  mean state change): InvertedPendulum 0.06 unguided, 0.12-0.13 guided (seeds 3-5); Hopper 0.65 unguided (``polab
  train offline --dataset hopper-medium-replay --method td3bc-pgd --hidden 64 --steps 1 --grad-steps-per-step 500
  --td3bc-pgd.refresh-every 500``, seed 0's denoiser): at this denoiser budget the Hopper windows are not physically
  consistent, a plausible (untested) reason for no gain there.

Verdict for PGD at this budget: on InvertedPendulum medium-replay TD3+BC on mostly synthetic data beats TD3+BC on the
real data in every paired seed; on Hopper medium-replay no difference. Not separated here: how much of the gain is
the policy guidance rather than the synthetic data itself (which, built from windows of 4, also leaves out the
episodes shorter than 4 steps, i.e. many immediate failures of that replay data); the test is the same arm with
``--pgd-guidance-coeff 0`` (unguided diffusion, the paper's own ablation).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from ..config import config_record, parse_config
from ..logger import MetricLogger
from ..run_folder import check_config_values, check_device, prepare_run_folder

__all__ = ["OfflineMujocoConfig", "PRESETS", "METHOD_OPTIONS", "main", "pooled_summary", "run"]

METHODS = ("td3bc", "prdc", "a2pr", "td3bc-pgd")  # td3bc-pgd: polab.scaled.methods.offline_pgd (opt-in: --algorithms)

#: the authors' per-task settings (PRDC README, A2PR README; see polab.estimators.offline for the commits)
METHOD_OPTIONS = {
    "hopper": {"td3bc": {"alpha": 2.5}, "prdc": {"alpha": 2.5, "beta": 2.0}, "a2pr": {"alpha": 2.5, "mask": 0.4, "vae_weight": 1.0}},
    "halfcheetah": {"td3bc": {"alpha": 2.5}, "prdc": {"alpha": 40.0, "beta": 2.0}, "a2pr": {"alpha": 40.0, "mask": 1.0, "vae_weight": 1.0}},
    "walker2d": {"td3bc": {"alpha": 2.5}, "prdc": {"alpha": 2.5, "beta": 2.0}, "a2pr": {"alpha": 2.5, "mask": 1.0, "vae_weight": 1.5}},
}


@dataclass
class OfflineMujocoConfig:
    """Options of ``polab run offline-mujoco`` (defaults: the ``cpu`` preset)."""

    datasets: tuple[str, ...] = field(default=("invertedpendulum-medium", "invertedpendulum-medium-replay",
                                                "hopper-medium", "hopper-medium-replay"),
                                       metadata={"help": "TASK-QUALITY datasets (made if missing)"})
    algorithms: tuple[str, ...] = field(default=METHODS[:3], metadata={"help": "offline methods", "choices": METHODS})
    seeds: int = field(default=3, metadata={"help": "seeds per dataset and method"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    grad_steps: int = field(default=2000, metadata={"help": "gradient steps per run"})
    grad_steps_per_step: int = field(default=500, metadata={"help": "gradient steps per logged trainer step"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})
    hidden: int = field(default=64, metadata={"help": "actor/critic hidden width (papers: 256)"})
    a2pr_vae_hidden: int = field(default=64, metadata={"help": "A2PR VAE hidden width (authors 750; 64 keeps the CPU preset affordable)"})
    eval_episodes: int = field(default=5, metadata={"help": "episodes of the intermediate evaluations"})
    final_episodes: int = field(default=10, metadata={"help": "episodes of the final evaluation (the reported score)"})
    pgd_synth_fraction: float = field(default=240 / 256, metadata={
        "help": "td3bc-pgd: synthetic fraction of each minibatch (authors: 240 of 256)"})
    pgd_refresh_every: int = field(default=500, metadata={
        "help": "td3bc-pgd: regenerate the synthetic data with the current actor every this many gradient steps "
                "(authors: 10,000 of 1M; cpu preset 500 of 2,000)"})
    pgd_guidance_coeff: float = field(default=0.1, metadata={"help": "td3bc-pgd: policy guidance coefficient"})
    pgd_denoiser_steps: int = field(default=5000, metadata={"help": "td3bc-pgd: denoiser training steps"})
    workers: int = field(default=1, metadata={"help": "parallel training processes"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    out: str = field(default="runs/offline_mujoco", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})


PRESETS = {
    "cpu": {},
    "quick": {"datasets": ["invertedpendulum-medium"], "seeds": 2, "grad_steps": 100, "grad_steps_per_step": 50,
              "hidden": 64, "a2pr_vae_hidden": 64, "eval_episodes": 2, "final_episodes": 2},
    "paper": {"datasets": [f"{t}-{q}" for t in ("hopper", "halfcheetah", "walker2d") for q in ("medium", "medium-replay", "expert")],
              "seeds": 5, "grad_steps": 1_000_000, "grad_steps_per_step": 5000, "eval_episodes": 10, "final_episodes": 10,
              "hidden": 256, "a2pr_vae_hidden": 750, "device": "auto", "pgd_refresh_every": 10_000, "pgd_denoiser_steps": 100_000},
}


def _t_interval(x) -> dict:
    from scipy import stats

    x = np.asarray(x, float)
    n = len(x)
    m = float(x.mean())
    if n < 2:
        return {"mean": m, "ci95_half_width": float("nan"), "n": n, "values": x.tolist()}
    h = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": m, "ci95_half_width": h, "n": n, "values": x.tolist()}


def _sign_flip_p(d) -> float:
    """Exact two-sided sign-flip permutation p-value of the mean paired difference (2^n sign patterns)."""
    d = np.asarray(d, float)
    n = len(d)
    obs = abs(d.mean())
    signs = np.array(list(product((-1.0, 1.0), repeat=n)))
    return float(np.mean(np.abs((signs * d).mean(1)) >= obs - 1e-12))


def _one_run(job: dict) -> dict:
    """Train one (dataset, method, seed) in its own folder; returns the final scores (runs in a worker process)."""
    import os

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ..trainers.offline import OfflineConfig, OfflineTrainer

    cfg = OfflineConfig(**job["config"])
    t0 = time.perf_counter()
    tr = OfflineTrainer(cfg)
    tr.train()
    from ..control.td3 import evaluate_policy

    rets = evaluate_policy(tr.dataset.env_id, tr.act, episodes=job["final_episodes"], seed=2 * 10**6 + 1000 * job["seed"])
    import csv

    with open(Path(cfg.out) / "metrics.csv") as f:
        rate = [float(r["grad_steps_per_s"]) for r in csv.DictReader(f) if r.get("grad_steps_per_s")]
    return {"dataset": job["dataset"], "method": job["method"], "seed": job["seed"],
            "final_return": float(np.mean(rets)), "normalized_score": float(tr.dataset.normalized_score(np.mean(rets))),
            "grad_steps_per_s": float(np.mean(rate)), "wall_s": time.perf_counter() - t0}


def run(cfg: OfflineMujocoConfig) -> Path:
    check_config_values(cfg, nonempty=("datasets", "algorithms"), positive_ints=(
        "seeds", "grad_steps", "grad_steps_per_step", "batch_size", "hidden", "a2pr_vae_hidden", "eval_episodes",
        "final_episodes", "workers"))
    check_device(cfg.device)
    from ..offline.datasets import _resolve_id, make_dataset, minari_root, parse_name

    for d in cfg.datasets:
        _resolve_id(d)
    bad = [m for m in cfg.algorithms if m not in METHODS]
    if bad:
        raise ValueError(f"--algorithms: unknown {bad}; choose from {METHODS}.")
    if "td3bc-pgd" in cfg.algorithms and (not isinstance(cfg.pgd_refresh_every, int) or cfg.pgd_refresh_every < 1
                                          or cfg.pgd_refresh_every % cfg.grad_steps_per_step):
        raise ValueError(f"--pgd-refresh-every ({cfg.pgd_refresh_every}) must be a positive multiple of --grad-steps-per-step "
                         f"({cfg.grad_steps_per_step}).")
    if cfg.grad_steps % cfg.grad_steps_per_step:
        raise ValueError(f"--grad-steps ({cfg.grad_steps}) must be a multiple of --grad-steps-per-step ({cfg.grad_steps_per_step}).")
    import minari

    minari_root()
    have = set(minari.list_local_datasets())
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite, can_resume=False):
        out = Path(cfg.out)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        for d in cfg.datasets:  # make what is missing (cached behaviour policies)
            if "/" not in d and _resolve_id(d) not in have:
                print(f"making dataset {d} ...")
                make_dataset(d, progress=cfg.progress)
        record = config_record(cfg)
        logger = MetricLogger(out, config=record, backends=("csv",))
        jobs = []
        for d, m, s in product(cfg.datasets, cfg.algorithms, range(cfg.seed, cfg.seed + cfg.seeds)):
            task = parse_name(d)[0] if "/" not in d else ""
            opts = METHOD_OPTIONS.get(task, {}).get(m, {})
            if m == "a2pr":
                opts = {**opts, "vae_hidden": cfg.a2pr_vae_hidden}
            if m == "td3bc-pgd":
                opts = {**METHOD_OPTIONS.get(task, {}).get("td3bc", {}), "synth_fraction": cfg.pgd_synth_fraction,
                        "refresh_every": cfg.pgd_refresh_every, "guidance_coeff": cfg.pgd_guidance_coeff,
                        "denoiser_steps": cfg.pgd_denoiser_steps}
            steps = cfg.grad_steps // cfg.grad_steps_per_step
            jobs.append({"dataset": d, "method": m, "seed": s, "final_episodes": cfg.final_episodes, "config": {
                "dataset": d, "method": m, "methods": {m: opts} if opts else {}, "seed": s, "steps": steps,
                "grad_steps_per_step": cfg.grad_steps_per_step, "batch_size": cfg.batch_size, "hidden": cfg.hidden,
                "eval_every": steps, "eval_episodes": cfg.eval_episodes, "checkpoint_every": steps, "keep_checkpoints": 1,
                "device": cfg.device, "out": str(out / "runs" / f"{d}_{m}_s{s}"), "overwrite": True, "progress": False,
                "tensorboard": False, "torch_threads": 1}})
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        results = []
        bar = tqdm(total=len(jobs), desc="offline-mujoco", unit="run", disable=not cfg.progress)
        stream = open(out / "results.jsonl", "w")  # each run's result as it finishes (kept if the sweep is cut short)

        def done(r):
            results.append(r)
            stream.write(json.dumps(r) + "\n")
            stream.flush()
            bar.update(1)

        if cfg.workers == 1:
            for j in jobs:
                done(_one_run(j))
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(cfg.workers) as pool:
                for r in pool.imap_unordered(_one_run, jobs):
                    done(r)
        stream.close()
        bar.close()
        wall = time.perf_counter() - t0
        for i, r in enumerate(sorted(results, key=lambda r: (r["dataset"], r["method"], r["seed"]))):
            logger.log(i, {"kind": "final", **r})
        logger.close()
        summary = {"wall_s": wall, "grad_steps": cfg.grad_steps, "datasets": {}}
        for d in cfg.datasets:
            per = {}
            for m in cfg.algorithms:
                rs = sorted((r for r in results if r["dataset"] == d and r["method"] == m), key=lambda r: r["seed"])
                per[m] = {"normalized_score": _t_interval([r["normalized_score"] for r in rs]),
                          "final_return": _t_interval([r["final_return"] for r in rs]),
                          "grad_steps_per_s": float(np.mean([r["grad_steps_per_s"] for r in rs]))}
            tests = {}
            if "td3bc" in cfg.algorithms:
                base = [v for v in per["td3bc"]["normalized_score"]["values"]]
                for m in cfg.algorithms:
                    if m != "td3bc":
                        diff = np.asarray(per[m]["normalized_score"]["values"]) - np.asarray(base)
                        tests[f"{m}_minus_td3bc"] = {"mean": float(diff.mean()), "permutation_p_two_sided": _sign_flip_p(diff)}
            from ..offline.datasets import load_offline_dataset

            ds = load_offline_dataset(d)
            summary["datasets"][d] = {"per_method": per, "paired_tests": tests, "transitions": len(ds),
                                      "ref_random_return": ds.ref_min_score, "ref_expert_return": ds.ref_max_score,
                                      "dataset_score": float(np.mean(ds.normalized_score(ds.returns)))}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        _plot(summary, cfg, out / "figures" / "scores.png")
    return out


def pooled_summary(paths, *, baseline: str = "td3bc") -> dict:
    """Pool the ``results.jsonl`` of several runs (disjoint seeds, same settings) and print per dataset and method the
    t interval and, against ``baseline``, the paired difference with its exact sign-flip p-value (pairs by seed)."""
    rs = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    out = {}
    for d in sorted({r["dataset"] for r in rs}):
        per = {}
        for m in sorted({r["method"] for r in rs if r["dataset"] == d}):
            seeds = {r["seed"]: r["normalized_score"] for r in rs if r["dataset"] == d and r["method"] == m}
            per[m] = seeds
            t = _t_interval([seeds[k] for k in sorted(seeds)])
            print(f"{d:32s} {m:6s} n={t['n']} score {t['mean']:7.1f} +- {t['ci95_half_width']:.1f}")
        out[d] = per
        if baseline in per:
            for m, seeds in per.items():
                common = sorted(set(seeds) & set(per[baseline]))
                if m == baseline or not common:
                    continue
                diff = np.array([seeds[k] - per[baseline][k] for k in common])
                print(f"{d:32s} {m} - {baseline}: {diff.mean():+.1f} over {len(common)} paired seeds, better in "
                      f"{int((diff > 0).sum())}, exact sign-flip p = {_sign_flip_p(diff):.3f}")
    return out


def _plot(summary: dict, cfg: OfflineMujocoConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = list(summary["datasets"])
    fig, ax = plt.subplots(figsize=(1.8 + 1.9 * len(ds), 3.6))
    w = 0.8 / len(cfg.algorithms)
    for k, m in enumerate(cfg.algorithms):
        mu = [summary["datasets"][d]["per_method"][m]["normalized_score"]["mean"] for d in ds]
        hw = [summary["datasets"][d]["per_method"][m]["normalized_score"]["ci95_half_width"] for d in ds]
        ax.bar(np.arange(len(ds)) + (k - (len(cfg.algorithms) - 1) / 2) * w, mu, w, yerr=np.nan_to_num(hw), capsize=3,
               label=f"{m} ({cfg.grad_steps} grad steps, {cfg.seeds} seeds)")
    ax.scatter(np.arange(len(ds)), [summary["datasets"][d]["dataset_score"] for d in ds], marker="_", s=900, color="r",
               label="behaviour data (mean episode)", zorder=3)
    ax.set_xticks(np.arange(len(ds)))
    ax.set_xticklabels(ds, rotation=15, fontsize=8)
    ax.set_ylabel("D4RL-normalised score (polab references)")
    ax.set_title("offline-mujoco: mean and 95% t interval over seeds")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [x for a in argv for x in (("--preset", "quick") if a == "--quick" else (a,))]
    cfg, _ = parse_config(OfflineMujocoConfig, argv, prog="polab run offline-mujoco", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    out = run(cfg)
    s = json.loads((out / "summary.json").read_text())
    for d, v in s["datasets"].items():
        for m, r in v["per_method"].items():
            ns = r["normalized_score"]
            print(f"{d:32s} {m:6s} score {ns['mean']:7.1f} +- {ns['ci95_half_width']:.1f}  "
                  f"({r['grad_steps_per_s']:.0f} grad steps/s)")
        for k, t in v["paired_tests"].items():
            print(f"{d:32s} {k}: {t['mean']:+.1f} (exact sign-flip p = {t['permutation_p_two_sided']:.3f})")
    print(f"wall {s['wall_s']:.0f} s; run folder: {out}")
    return 0
