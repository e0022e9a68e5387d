r"""``polab run agent-credit``: GiGPO vs trajectory-level GRPO (and RLOO) for a multi-turn agent, equal environment budgets.

Claim tested (GiGPO, Feng et al. 2025, arXiv 2505.10978): adding step-level advantages computed
over *anchor-state groups* (steps taken in the same state by different trajectories of the same
task) to GRPO's episode-level advantage gives better multi-turn agents for the same rollouts,
without a critic. Here the agent is the small choice policy (a 2-layer Transformer over the
observation's characters scoring the admissible actions; :class:`polab.scaled.agents.policies.ChoicePolicy`)
trained from scratch by the agent trainer (:mod:`polab.scaled.trainers.agent`) with the
registered methods ``gigpo``, ``grpo`` and ``rloo`` (:mod:`polab.scaled.methods.agent_credit`,
each calling the verified core unchanged). Every method gets the same tasks at every step (task
draws depend on seed and step only), the same initial weights per seed, the same number of
episodes per step and the same training steps.

Environments: text Sokoban (:mod:`polab.scaled.envs.sokoban`, compact rendering, anchors = the
full state), and others given with ``--envs`` (e.g. a TextWorld spec, word tokenizer).

Setting (why a fixed pool of levels): the small policy is trained from scratch; on freshly drawn
procedural levels it did not improve within the CPU budget (tens of thousands of environment
steps), while on a fixed pool of ``train_tasks`` levels both methods improve within minutes. The
curves therefore measure how fast each credit-assignment method optimises the policy on its
training levels (in-distribution success, ``eval_tasks="train"``: the pool cycled, actions
sampled), which is what GiGPO's claim is about; the success on ``held_out_episodes`` unseen levels
after training is reported beside it (generalisation, not the claim), with the uniform random
policy's success on the same levels.

Outcome: primary, each run's final success on the evaluation levels; the comparison GiGPO minus
GRPO is paired by seed (same levels, task draws and initial weights): paired t-test, two-sided,
and the exact sign-flip permutation test over seeds, whose smallest possible two-sided p with
``n`` seeds is :math:`2^{1-n}`. Secondary: the success at the common environment-step budget (the
smallest total over all runs of the environment; each run's last evaluation at or below it), and
the mean over evaluations (area under the curve). Figure: success vs environment steps, mean over
seeds with a 95% t band, per method (``figures/success_<env>.png``).

Run folder: ``config.json``, ``metrics.csv`` (one ``eval`` row per run and evaluation:
``env``, ``method``, ``seed``, ``step``, ``env_steps``, ``eval_success``...), ``summary.json``,
``figures/``, and each training run's own folder under ``runs/``.

Measured (``cpu`` preset, commit 8c665cc, ``nice -n 10 polab run agent-credit --out runs/agent-credit-h5``: 15 runs,
916 s wall on a 2-core machine shared by 8 jobs (245 s of CPU); Sokoban 6x6 with one box, 8 training levels, 10 turns, 25
steps of 8 levels x 8 episodes, about 12,000 environment steps per run; success on the training levels, 64 sampled
episodes, mean over 5 seeds +- 95% t half-width): GiGPO 0.475 +- 0.123, GRPO 0.450 +- 0.085, RLOO 0.444 +- 0.112 (uniform
random policy 0.297). GiGPO - GRPO: final +0.025 +- 0.125 (paired t p = 0.61, sign-flip p = 0.75); at the common budget of
11,196 environment steps +0.059 +- 0.076 (p = 0.095); mean over evaluations +0.008 (p = 0.73). GiGPO - RLOO: final +0.031
(p = 0.47). Verdict: no significant difference at this budget; every method improves on the random policy. Held-out levels
after training (64): GiGPO 0.097, GRPO 0.113, RLOO 0.125 (random 0.078): the policies memorise their levels, they do not
generalise. GiGPO's step groups averaged 8.6-11.5 steps (13-18% singletons); the mean |step advantage| (0.77) was about
three times the mean |episode advantage| (0.27). Rollout throughput of the agent (policy included): about 1,160
environment steps/s; the environment alone with random actions: about 10,600 steps/s.

Twice the training (commit 3214f87, ``nice -n 10 polab run agent-credit --methods gigpo grpo --steps 50 --eval-every 10
--out runs/agent-credit-h5-long``: 10 runs, 1773 s wall at a load average near 30 on 2 cores, 239 s of user CPU; about
20,000 environment steps per run): GiGPO 0.522 +- 0.106, GRPO 0.494 +- 0.104; GiGPO - GRPO final +0.028 +- 0.125 (paired t
p = 0.57, sign-flip p = 0.63), at the common budget of 19,659 steps +0.059 +- 0.122 (p = 0.25), mean over evaluations
+0.025 (p = 0.45); held-out 0.075 vs 0.072. Again no significant difference: GiGPO's mean is higher at steps 20-50
(lower at step 10), by less than the seed-to-seed spread. With 5 seeds the exact sign-flip test cannot go below p = 0.0625;
a difference of +0.03 would need far more seeds (or longer training) to resolve.

Presets: ``cpu`` (default), ``quick`` (seconds; a smoke run), ``gpu`` (more seeds and steps,
``--device cuda``; with ``--policy llm --model ID`` the same comparison for a language model),
``textworld`` (TextWorld, below).

TextWorld (``--preset textworld``): a fixed pool of 4 games (world size 4, 6 objects, quest length
3; generated offline into the cache, about 8 s per game on this machine, before the runs start),
15 turns, 4 games x 4 episodes per step, 30 steps (evaluation every 10), word tokens, 2 x 2 PPO passes; success on
the 4 training games (16 sampled episodes per evaluation). GiGPO's anchor is the observation text
(``anchor=observation`` in the spec, as verl-agent's ALFWorld anchor): the environment's default
anchor, the full fact list, names rooms and objects the agent has not seen, and groups steps by a
state the agent cannot observe. No held-out games: level seeds ``eval_seed + k`` map onto the same
16-game pool, which holds the training games.

Measured (2026-12-04, quiet 2-core machine beside one other job): ``polab run agent-credit --preset textworld --steps 30
--eval-every 10`` (now the preset's defaults; 537 s wall, about 5,400 environment steps per run, 5 seeds): success on the 4
training games GiGPO 0.700 +- 0.277, GRPO 0.613 +- 0.208, RLOO 0.600 +- 0.386 (uniform random policy 0.125); GiGPO - GRPO
final +0.087 +- 0.237 (paired t p = 0.36, sign-flip p = 0.44), at the common budget +0.113 (p = 0.30); GiGPO - RLOO +0.100
(p = 0.26). Every method learns the games; GiGPO's mean is ahead at every evaluation, by less than the seed spread: no
significant difference. The former 10-step preset (228 s) stayed near the random policy for all three (0.150 / 0.113 /
0.062). Agent rollout 336 environment steps/s (policy included); random actions 558 steps/s.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

from ..checkpoint import atomic_write_text
from ..config import config_to_dict, parse_config, provenance
from ..logger import MetricLogger, read_metrics
from ..run_folder import check_config_values, check_device, prepare_run_folder

__all__ = ["AgentCreditConfig", "PRESETS", "main", "paired_tests", "plot_curves", "run", "run_statistics"]


#: the ``textworld`` preset's environment: GiGPO anchors from the observation text (``anchor=observation``)
TEXTWORLD_SPEC = "textworld:world_size=4,nb_objects=6,quest_length=3,max_steps=40,n_games=16,anchor=observation"


@dataclass
class AgentCreditConfig:
    """Options of ``polab run agent-credit`` (defaults: the ``cpu`` preset)."""

    envs: tuple[str, ...] = field(default=("sokoban:size=6,boxes=1,render=compact",), metadata={"help": "environment specs (make_text_env)"})
    methods: tuple[str, ...] = field(default=("gigpo", "grpo", "rloo"), metadata={"help": "credit-assignment methods (the first is compared with the others)"})
    seeds: int = field(default=5, metadata={"help": "seeds per method"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    steps: int = field(default=25, metadata={"help": "training steps per run"})
    train_tasks: int = field(default=8, metadata={"help": "training levels (seeds 0..N-1; 0: a fresh level each draw)"})
    eval_tasks: str = field(default="train", metadata={"help": "what the curves evaluate: the training levels (in-distribution) or held-out levels",
                                                       "choices": ("train", "held-out")})
    held_out_episodes: int = field(default=64, metadata={"help": "after training, also this many held-out levels (0: none)"})
    tasks_per_step: int = field(default=8, metadata={"help": "tasks per step"})
    group_size: int = field(default=8, metadata={"help": "episodes per task (G)"})
    max_turns: int = field(default=10, metadata={"help": "turn limit of an episode"})
    eval_every: int = field(default=5, metadata={"help": "held-out evaluation every this many steps"})
    eval_episodes: int = field(default=64, metadata={"help": "held-out levels per evaluation"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    ppo_epochs: int = field(default=4, metadata={"help": "passes over each batch"})
    mini_batches: int = field(default=4, metadata={"help": "optimizer steps per pass"})
    d_model: int = field(default=32, metadata={"help": "small policy width"})
    layers: int = field(default=2, metadata={"help": "small policy layers"})
    tokenizer: str = field(default="char", metadata={"help": "small policy tokenizer", "choices": ("char", "word")})
    gigpo_gamma: float = field(default=0.95, metadata={"help": "GiGPO step-return discount"})
    gigpo_omega: float = field(default=1.0, metadata={"help": "GiGPO step-advantage weight"})
    policy: str = field(default="small", metadata={"help": "small or llm", "choices": ("small", "llm")})
    model: str = field(default="smollm2-135m-instruct", metadata={"help": "llm policy: model"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})
    out: str = field(default="runs/agent-credit", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})


PRESETS = {
    "cpu": {},
    "quick": {"seeds": 2, "steps": 2, "tasks_per_step": 2, "group_size": 4, "train_tasks": 2, "max_turns": 4, "eval_every": 1,
              "eval_episodes": 8, "held_out_episodes": 4, "ppo_epochs": 1, "mini_batches": 1, "d_model": 16, "layers": 1, "progress": False},
    "gpu": {"seeds": 10, "steps": 200, "tasks_per_step": 16, "group_size": 8, "eval_every": 10, "eval_episodes": 256, "d_model": 128,
            "layers": 4, "device": "cuda"},
    # TextWorld at CPU scale: a pool of 4 cached games (world size 4, 6 objects, quest length 3), GiGPO's anchor = the observation
    # text (the default fact-list anchor names unvisited rooms); held-out games off (eval seeds would map onto the same 16-game
    # pool, which contains the training games)
    "textworld": {"envs": (TEXTWORLD_SPEC,), "train_tasks": 4, "tasks_per_step": 4, "group_size": 4, "max_turns": 15, "steps": 30,
                  "eval_every": 10, "eval_episodes": 16, "held_out_episodes": 0, "ppo_epochs": 2, "mini_batches": 2, "tokenizer": "word"},
}


def _validate(cfg: AgentCreditConfig) -> None:
    check_config_values(cfg, positive_ints=("seeds", "steps", "tasks_per_step", "group_size", "max_turns", "eval_every", "eval_episodes",
                                            "ppo_epochs", "mini_batches", "d_model", "layers"), nonneg_ints=("seed", "train_tasks", "held_out_episodes"),
                        positive_floats=("lr",), nonneg_floats=("gigpo_omega",), nonempty=("envs", "methods"))
    from ..methods.agent_credit import AGENT_CREDIT

    for m in cfg.methods:
        if m not in AGENT_CREDIT:
            raise ValueError(f"--methods: unknown method {m!r}; choose from {', '.join(AGENT_CREDIT.names())}.")
    if len(set(cfg.methods)) != len(cfg.methods):
        raise ValueError(f"--methods lists a method twice: {cfg.methods}.")
    if cfg.eval_tasks not in ("train", "held-out"):
        raise ValueError(f"--eval-tasks must be 'train' or 'held-out'; got {cfg.eval_tasks!r}.")
    if cfg.eval_tasks == "train" and not cfg.train_tasks:
        raise ValueError("--eval-tasks train evaluates on the training levels: set --train-tasks > 0.")
    if cfg.group_size < 2:
        raise ValueError("--group-size must be >= 2 (group-relative methods).")
    if not 0.0 <= cfg.gigpo_gamma <= 1.0:
        raise ValueError(f"--gigpo-gamma must lie in [0, 1]; got {cfg.gigpo_gamma}.")
    from ..envs.text_protocol import parse_env_spec

    for e in cfg.envs:
        parse_env_spec(e)  # ValueError naming the bad key
    check_device(cfg.device)


def _env_name(spec: str) -> str:
    return spec.replace(":", "_").replace(",", "_").replace("=", "")


def trainer_config(cfg: AgentCreditConfig, env: str, method: str, seed: int, out: Path):
    from ..trainers.agent import AgentConfig

    methods = {"gigpo": {"gamma": cfg.gigpo_gamma, "omega": cfg.gigpo_omega}} if method == "gigpo" else {}
    return AgentConfig(env=env, method=method, policy=cfg.policy, model=cfg.model, seed=seed, steps=cfg.steps, tasks_per_step=cfg.tasks_per_step,
                       group_size=cfg.group_size, max_turns=cfg.max_turns, train_tasks=cfg.train_tasks, eval_tasks=cfg.eval_tasks, eval_every=cfg.eval_every, eval_episodes=cfg.eval_episodes,
                       lr=cfg.lr, ppo_epochs=cfg.ppo_epochs, mini_batches=cfg.mini_batches, d_model=cfg.d_model, layers=cfg.layers,
                       tokenizer=cfg.tokenizer, device=cfg.device, out=str(out), progress=False, tensorboard=False,
                       checkpoint_every=cfg.steps, keep_checkpoints=1, torch_threads=1 if cfg.device == "cpu" else 0, methods=methods)


def random_env_steps_per_second(spec: str, steps: int = 2000, *, seed: int = 0) -> float:
    """Environment steps per second of one environment under uniformly random admissible actions (resets included)."""
    from ..envs.text_protocol import make_text_env

    env = make_text_env(spec)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    t0 = time.perf_counter()
    for k in range(steps):
        adm = info["admissible_actions"]
        obs, r, term, trunc, info = env.step(adm[int(rng.integers(len(adm)))])
        if term or trunc:
            obs, info = env.reset(seed=seed + k + 1)
    env.close()
    return steps / (time.perf_counter() - t0)


def random_policy_success(spec: str, level_seeds, *, max_turns: int, seed: int = 0) -> float:
    """Success rate of uniformly random admissible actions on the given levels (one episode each, ``max_turns`` turns)."""
    from ..envs.text_protocol import make_text_env

    env = make_text_env(spec)
    rng = np.random.default_rng(seed)
    wins = 0
    for s in level_seeds:
        obs, info = env.reset(seed=int(s))
        for _ in range(max_turns):
            adm = info["admissible_actions"]
            obs, r, term, trunc, info = env.step(adm[int(rng.integers(len(adm)))])
            if term or trunc:
                break
        wins += bool(info.get("won", False))
    env.close()
    return wins / len(level_seeds)


# -- statistics ----------------------------------------------------------------------------------------


def mean_ci(x) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (0 for one value)."""
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return (float(x.mean()) if x.size else math.nan), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def sign_flip_p(d) -> float:
    """Exact two-sided permutation p-value of the mean paired difference (all 2^n sign flips)."""
    d = np.asarray(d, dtype=float)
    n = d.size
    obs = abs(d.mean())
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * n)).reshape(n, -1).T
    means = np.abs((signs * d).mean(axis=1))
    return float(np.mean(means >= obs - 1e-12))


def paired_tests(a, b) -> dict:
    """Paired comparison of per-seed values ``a`` vs ``b``: mean difference, 95% t interval, paired t-test, exact sign-flip test.

    When every paired difference is the same the t statistic is 0/0 (or d/0): the t-test is undefined and ``t`` and
    ``t_p`` are NaN, with a ``note`` saying so; the sign-flip test is still exact (p = 1 when all differences are 0,
    :math:`2^{1-n}` when they are one non-zero value).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    m, h = mean_ci(d)
    out = {"difference": m, "ci95_half_width": h, "per_seed_difference": d.tolist(), "n": int(d.size)}
    if d.size >= 2:
        if np.ptp(d) == 0:
            out.update(t=math.nan, t_p=math.nan, note=f"paired t-test undefined: every seed's difference is {float(d[0]):+g} (zero variance); "
                                                      "see the sign-flip p")
        else:
            t = stats.ttest_rel(a, b)
            out.update(t=float(t.statistic), t_p=float(t.pvalue))
        out["sign_flip_p"] = sign_flip_p(d)
        out["min_possible_sign_flip_p"] = 2.0 ** (1 - d.size)
    return out


def run_statistics(rows: list[dict], envs, methods) -> dict:
    """Per environment and method: final / budget / mean-over-evaluations success per seed; paired tests of the first method vs the others."""
    res = {}
    for env in envs:
        ev = [r for r in rows if r.get("kind") == "eval" and r["env"] == env]
        if not ev:
            continue
        seeds = sorted({int(r["seed"]) for r in ev})
        totals = [max(r["env_steps"] for r in ev if r["method"] == m and int(r["seed"]) == s) for m in methods for s in seeds
                  if any(r["method"] == m and int(r["seed"]) == s for r in ev)]
        budget = float(min(totals))
        per = {}
        for m in methods:
            fin, bud, auc = [], [], []
            for s in seeds:
                rs = sorted((r for r in ev if r["method"] == m and int(r["seed"]) == s), key=lambda r: r["step"])
                if not rs:
                    continue
                fin.append(rs[-1]["eval_success"])
                bud.append([r for r in rs if r["env_steps"] <= budget][-1]["eval_success"])
                auc.append(float(np.mean([r["eval_success"] for r in rs])))
            per[m] = {"final": fin, "at_budget": bud, "mean_over_evals": auc}
        summary = {m: {k: {"mean": mean_ci(v)[0], "ci95_half_width": mean_ci(v)[1], "per_seed": v} for k, v in d.items()} for m, d in per.items()}
        tests = {}
        first = methods[0]
        for other in methods[1:]:
            tests[f"{first} - {other}"] = {k: paired_tests(per[first][k], per[other][k]) for k in ("final", "at_budget", "mean_over_evals")}
        held = {m: [r["eval_success"] for r in sorted((r for r in rows if r.get("kind") == "held_out" and r["env"] == env and r["method"] == m),
                                                        key=lambda r: int(r["seed"]))] for m in methods}
        held = {m: v for m, v in held.items() if v}
        random = {r["kind"]: r["eval_success"] for r in rows if str(r.get("kind", "")).startswith("random_") and r["env"] == env}
        res[env] = {"success": summary, "tests": tests, "env_step_budget": budget, "seeds": seeds, "random_policy": random,
                    "held_out_final": {m: {"mean": mean_ci(v)[0], "ci95_half_width": mean_ci(v)[1], "per_seed": v} for m, v in held.items()},
                    "held_out_tests": {f"{methods[0]} - {o}": paired_tests(held[methods[0]], held[o]) for o in methods[1:]
                                       if methods[0] in held and o in held}}
    return res


def plot_curves(out: Path, rows: list[dict], envs, methods, cfg: AgentCreditConfig) -> list[Path]:
    """``figures/success_<env>.png``: held-out success vs environment steps, mean over seeds and 95% t band, per method."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    paths = []
    for env in envs:
        ev = [r for r in rows if r.get("kind") == "eval" and r["env"] == env]
        if not ev:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.3))
        for k, m in enumerate(methods):
            steps = sorted({r["step"] for r in ev if r["method"] == m})
            xs, ms, hs = [], [], []
            for st in steps:
                sel = [r for r in ev if r["method"] == m and r["step"] == st]
                xs.append(float(np.mean([r["env_steps"] for r in sel])))
                mu, h = mean_ci([r["eval_success"] for r in sel])
                ms.append(mu)
                hs.append(h)
            xs, ms, hs = map(np.asarray, (xs, ms, hs))
            extra = f", gamma={cfg.gigpo_gamma}, omega={cfg.gigpo_omega}" if m == "gigpo" else ""
            ax.plot(xs, ms, marker="o", color=f"C{k}", label=f"{m} (G={cfg.group_size}{extra})")
            ax.fill_between(xs, ms - hs, ms + hs, color=f"C{k}", alpha=0.2)
        ax.set_xlabel("environment steps (mean over seeds at each evaluation)")
        what = f"success on the {cfg.train_tasks} training levels" if cfg.eval_tasks == "train" else "held-out success"
        ax.set_ylabel(f"{what} ({cfg.eval_episodes} episodes, sampled)", fontsize=8)
        rnd = [r["eval_success"] for r in rows if r.get("kind") == "random_eval" and r["env"] == env]
        if rnd:
            ax.axhline(rnd[0], color="gray", ls="--", lw=1, label="uniform random policy (same levels)")
        ax.set_ylim(-0.02, 1.02)
        import textwrap  # long specs (TextWorld) would run off the figure: wrapped at a comma

        ax.set_title("\n".join(textwrap.wrap(f"{env}: {cfg.policy} policy ({cfg.layers}-layer, d={cfg.d_model}), "
                                              f"{len(set(r['seed'] for r in ev))} seeds; mean and 95% t band", 90)), fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = out / "figures" / f"success_{_env_name(env)}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


# -- entry points ----------------------------------------------------------------------------------------


def run(cfg: AgentCreditConfig) -> Path:
    _validate(cfg)
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite):
        return _run(cfg)


def _run(cfg: AgentCreditConfig) -> Path:
    import torch

    from ..trainers.agent import AgentTrainer

    if cfg.device == "cpu":
        torch.set_num_threads(1)
    out = Path(cfg.out)
    config = config_to_dict(cfg)
    config["provenance"] = provenance()
    logger = MetricLogger(out, config=config, backends=("csv",))
    t_start = time.perf_counter()
    for e in cfg.envs:  # TextWorld: generate the game pool into the cache first (seconds per game), so timings are warm-cache
        if e.split(":")[0].strip() == "textworld":
            from ..envs.textworld_env import prepare_games

            prepare_games(e, progress=cfg.progress)
    sps = {e: random_env_steps_per_second(e) for e in cfg.envs}
    for e in cfg.envs:  # the uniform random policy on the levels the curves evaluate (and on the held-out ones)
        kinds = [("eval", list(range(cfg.train_tasks)) if cfg.eval_tasks == "train" else None, cfg.eval_episodes)]
        if cfg.held_out_episodes:
            kinds.append(("held_out", None, cfg.held_out_episodes))
        for kind, pool, n in kinds:
            seeds = [pool[k % len(pool)] for k in range(n)] if pool else [10_000_000 + k for k in range(n)]
            logger.log(0, {"kind": f"random_{kind}", "env": e, "method": "random", "seed": -1,
                           "eval_success": random_policy_success(e, seeds, max_turns=cfg.max_turns, seed=cfg.seed)})
    jobs = [(e, s, m) for e in cfg.envs for s in range(cfg.seed, cfg.seed + cfg.seeds) for m in cfg.methods]
    seconds, rollout_sps = {}, {}
    bar = tqdm(jobs, desc="agent-credit", disable=not cfg.progress)
    for env, seed, method in bar:
        bar.set_postfix(env=env.split(":")[0], method=method, seed=seed)
        folder = out / "runs" / _env_name(env) / method / f"seed-{seed}"
        t0 = time.perf_counter()
        tr = AgentTrainer(trainer_config(cfg, env, method, seed, folder))
        tr.train()
        seconds.setdefault(f"{env}|{method}", []).append(time.perf_counter() - t0)
        if cfg.held_out_episodes:
            tr.cfg.eval_tasks, tr.cfg.eval_episodes, tr._eval_envs = "held-out", cfg.held_out_episodes, []
            h = tr.evaluate(tr.step)
            logger.log(tr.step, {"kind": "held_out", "env": env, "method": method, "seed": seed, "env_steps": float(tr.env_steps),
                                 **{k: h[k] for k in ("eval_success", "eval_success_low", "eval_success_high", "eval_return", "eval_length")}})
        for r in read_metrics(folder / "metrics.csv"):
            if isinstance(r.get("env_steps_per_s"), float) and math.isfinite(r["env_steps_per_s"]):
                rollout_sps.setdefault(env, []).append(r["env_steps_per_s"])
            if isinstance(r.get("eval_success"), float) and math.isfinite(r["eval_success"]):
                logger.log(int(r["step"]), {"kind": "eval", "env": env, "method": method, "seed": seed, "env_steps": r["env_steps"],
                                            **{k: r[k] for k in ("eval_success", "eval_success_low", "eval_success_high", "eval_return",
                                                                 "eval_length")}})
    logger.close()
    rows = read_metrics(out / "metrics.csv")
    summary = {"claim": "GiGPO (episode + anchor-state step groups) trains a multi-turn agent to a higher held-out success than "
                        "trajectory-level GRPO/RLOO at the same rollouts",
               "metric": "held-out success rate (sampled actions)", "per_env": run_statistics(rows, cfg.envs, cfg.methods),
               "random_env_steps_per_second": sps,
               "agent_rollout_env_steps_per_second": {e: float(np.mean(v)) for e, v in rollout_sps.items()},
               "run_seconds_mean": {k: float(np.mean(v)) for k, v in seconds.items()}}
    plot_curves(out, rows, cfg.envs, cfg.methods, cfg)
    summary["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    return out


def verdict(test: dict, first: str, other: str, alpha: float = 0.05) -> str:
    d, p = test["difference"], test.get("t_p", math.nan)
    if "note" in test:
        return f"{first} vs {other}: {test['note']} (sign-flip p = {test.get('sign_flip_p', math.nan):.3g})"
    if not math.isfinite(p) or p >= alpha:
        return f"no significant difference between {first} and {other} (paired t p = {p:.3g}, alpha {alpha})"
    return f"{first} {'above' if d > 0 else 'below'} {other} (paired t p = {p:.3g} < {alpha})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fixed = []
    for a in argv:
        fixed.extend(["--preset", "quick"] if a == "--quick" else [a])
    cfg, _ = parse_config(AgentCreditConfig, fixed, prog="polab run agent-credit", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    out = run(cfg)
    s = json.loads((out / "summary.json").read_text())
    for env, res in s["per_env"].items():
        print(f"{env} (env-step budget {res['env_step_budget']:.0f}; random policy {res['random_policy']}):")
        for m, v in res["success"].items():
            print(f"  {m:6s} final {v['final']['mean']:.3f}+-{v['final']['ci95_half_width']:.3f}  at budget {v['at_budget']['mean']:.3f}  "
                  f"mean over evals {v['mean_over_evals']['mean']:.3f}")
        for pair, t in res["tests"].items():
            a, b = pair.split(" - ")
            f = t["final"]
            print(f"  {pair}: final {f['difference']:+.3f}+-{f['ci95_half_width']:.3f}, paired t p = {f.get('t_p', math.nan):.3g}, "
                  f"sign-flip p = {f.get('sign_flip_p', math.nan):.3g}; at budget {t['at_budget']['difference']:+.3f} "
                  f"(p = {t['at_budget'].get('t_p', math.nan):.3g}) -> {verdict(f, a, b)}")
        for m, v in res["held_out_final"].items():
            print(f"  held-out after training: {m} {v['mean']:.3f}+-{v['ci95_half_width']:.3f}")
    print(f"random-action env steps/s: {s['random_env_steps_per_second']}; agent rollout env steps/s: {s['agent_rollout_env_steps_per_second']}")
    print(f"wall {s['wall_seconds']:.0f} s; run folder: {out}")
    return 0
