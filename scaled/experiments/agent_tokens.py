r"""``polab run agent-tokens``: POAD/BAD (token-level credit inside multi-token actions) vs action-level PPO, equal environment steps.

Claim tested (POAD, Wen et al., NeurIPS 2024, arXiv 2405.15821): when an action is a sequence of
tokens, backing values up token by token inside the action (BAD: no reward and no discount between
an action's tokens, a token-level critic :math:`V(o, w^{<j})`, GAE over the tokens:
:func:`polab.estimators.action_decomposition.bad_gae`) assigns credit to each token and trains a
better agent for the same interaction than action-level PPO (one critic value :math:`V(o)` per
action, action-level GAE, the action's advantage given to all its tokens).

Setting. The agent writes each action word by word (:class:`polab.scaled.agents.token_policy.TokenActionPolicy`,
``--policy tokens``: the small policy's observation encoder, a GRU decoder over the action words,
prefix-constrained decoding over the admissible actions) in the negotiation game
(:mod:`polab.scaled.envs.negotiation`): a proposal ``propose books=x1 hats=x2 balls=x3`` is five
tokens (four words and ``<eos>``), and each of the three numbers decides part of the deal's value
and whether the partner accepts, so the credit of each token differs; the choice between
``propose`` and ``accept`` (when a counter-offer is on the table) is one more token. Why this task:
the reward of a proposal is a function of all three numbers jointly (the partner's acceptance
threshold couples them), so an action-level advantage blames or rewards every number for the
others' choice, which is the situation token-level credit is meant to fix; Sokoban's actions are
single words. Both methods (``bad`` and ``ppo-action``, :mod:`polab.scaled.methods.agent_credit`)
use the same critic network (:class:`~polab.scaled.agents.token_policy.TokenCritic`; ``ppo-action``
reads its first position only), the same options (discount, GAE :math:`\lambda`, critic learning
rate and epochs, whitening), the same initial weights and the same task draws per seed; only the
advantages differ.

As in ``polab run agent-credit``, the small policy is trained on a fixed pool of ``train_tasks``
levels and the curves evaluate it on them (in-distribution: the pool cycled, actions sampled): the
claim is about how fast credit assignment optimises the policy. Success is an *optimal* deal
(``info["won"]``: the agent's value equals the best the partner accepts); return is the deal's
share of the agent's pool value (0 without a deal). After training, ``held_out_episodes`` unseen
levels are evaluated too (generalisation, not the claim), and the uniform-random admissible policy
is given on the same levels.

Outcome: primary, each run's final success on the training levels; ``bad`` minus ``ppo-action``
paired by seed: mean difference with its 95% t interval, paired t-test (two-sided) and the exact
sign-flip permutation test (smallest possible two-sided p with ``n`` seeds: :math:`2^{1-n}`).
Secondary: final return, and success and return averaged over the evaluations (area under the
curve). Figure ``figures/agent_tokens.png``: success and return vs environment steps, mean over
seeds with 95% t bands.

Measured (``cpu`` preset, commit 913b838, ``nice -n 10 polab run agent-tokens --out runs/agent-tokens``: 10 runs, 779 s wall
at a load average of 14-15 on the shared 2-core machine, 140 s of process CPU; ``negotiation`` (3 item types, counts 1-3,
6 rounds), 8 training levels, 40 steps of 8 levels x 8 episodes, about 5,000 environment steps per run; 5.0 tokens per
action; success on the training levels, 64 sampled episodes, mean over 5 seeds +- 95% t half-width): final success
``bad`` 0.675 +- 0.125, ``ppo-action`` 0.625 +- 0.112 (uniform random admissible actions 0.25; the untrained generator
0.125). ``bad`` - ``ppo-action``: final success +0.050 +- 0.063 (paired t p = 0.094, sign-flip p = 0.25; per seed 0, 0,
+0.094, +0.109, +0.047); at the common budget of 4,983 environment steps +0.078 +- 0.131 (p = 0.17); success averaged over
the 9 evaluations +0.036 +- 0.016 (p = 0.003; sign-flip p = 0.0625, the smallest possible with 5 seeds: every seed
positive). Return (share of own value): final 0.610 vs 0.613, difference -0.003 +- 0.061 (p = 0.88); averaged +0.004
(p = 0.61). Verdict: on the primary outcome (final success) **no significant difference** at alpha 0.05; ``bad``'s
success curve lies above action-level PPO's at every evaluation after the first, a consistent but small effect (the
area-under-curve difference is significant by the paired t-test, a secondary outcome among six, uncorrected), and the
return, which rewards near-optimal deals too, shows no difference at all. The token-level critic explained 45% of the
variance of its targets over the last 5 steps, the action-level critic 18% (different targets: later prefixes of an
action are easier to value). Held-out levels after training: success 0.169 vs 0.178, return 0.397 vs 0.403 (random
0.125 and 0.378): like the choice policy in ``agent-credit``, the small policy learns its training levels, not the game.
A 20-step pilot (the preset first tried; 239 s) gave final success 0.525 vs 0.463 (+0.062 +- 0.100, p = 0.16).

Ten seeds (``nice -n 10 polab run agent-tokens --seeds 10 --out runs/agent-tokens-10``, commit 031f8c4, 955 s wall at load
4-19, 245 s CPU; decided after the 5-seed result above, so read it as a follow-up, not an independent test: seeds 0-4 are
the same runs, reproduced bit for bit): final success ``bad`` 0.683 +- 0.060, ``ppo-action`` 0.645 +- 0.052; difference
+0.037 +- 0.030 (paired t p = 0.020, sign-flip p = 0.031; per seed 0, 0, +.094, +.109, +.047, 0, -.016, +.047, +.047,
+.047); averaged over evaluations +0.020 +- 0.016 (p = 0.017); at the common budget +0.047 +- 0.060 (p = 0.11). Return:
0.615 vs 0.620, difference -0.006 +- 0.024 (p = 0.60). Verdict with 10 seeds: token-level credit (BAD) reaches the
*optimal* deal significantly more often than action-level PPO at equal environment steps, by a small margin (about 4
points of 64%), while the mean return is the same: the token critic helps pick the exactly right numbers, not better
deals on average. Held-out levels: 0.178 vs 0.186 (no generalisation either way).

A larger action space (``polab run agent-tokens --env negotiation:max_count=5 --out runs/agent-tokens-mc5``, counts 1-5,
up to 216 proposals; commit faec429, 904 s wall at load 18-22, 151 s CPU; budget 4,198 environment steps): final success
``bad`` 0.384 +- 0.156, ``ppo-action`` 0.394 +- 0.104 (random 0.094), difference -0.009 +- 0.094 (p = 0.80); averaged over
evaluations +0.006 +- 0.051 (p = 0.78); return 0.570 vs 0.580 (p = 0.75). No difference, and no sign that token-level
credit helps more as the action space grows (the paper's argument) at this budget.

Presets: ``cpu`` (default, sized to finish in about 15 minutes on a loaded 2-core machine),
``quick`` (a smoke run, seconds), ``gpu`` (more seeds and steps, a wider policy, ``--device cuda``;
not run here).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..checkpoint import atomic_write_text
from ..config import config_to_dict, parse_config, provenance
from ..logger import MetricLogger, read_metrics
from ..run_folder import check_config_values, check_device, prepare_run_folder
from .agent_credit import mean_ci, paired_tests, random_policy_success

__all__ = ["AgentTokensConfig", "PRESETS", "main", "run", "statistics"]

METRICS = ("eval_success", "eval_return")


@dataclass
class AgentTokensConfig:
    """Options of ``polab run agent-tokens`` (defaults: the ``cpu`` preset)."""

    env: str = field(default="negotiation", metadata={"help": "environment spec (make_text_env) whose actions are several words"})
    methods: tuple[str, ...] = field(default=("bad", "ppo-action"), metadata={"help": "credit methods; the first is compared with the others"})
    seeds: int = field(default=5, metadata={"help": "seeds per method"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    steps: int = field(default=40, metadata={"help": "training steps per run"})
    train_tasks: int = field(default=8, metadata={"help": "training levels (seeds 0..N-1)"})
    held_out_episodes: int = field(default=64, metadata={"help": "after training, also this many held-out levels (0: none)"})
    tasks_per_step: int = field(default=8, metadata={"help": "tasks per step"})
    group_size: int = field(default=8, metadata={"help": "episodes per task"})
    max_turns: int = field(default=6, metadata={"help": "turn limit of an episode"})
    eval_every: int = field(default=5, metadata={"help": "evaluation every this many steps"})
    eval_episodes: int = field(default=64, metadata={"help": "episodes per evaluation (the training pool cycled)"})
    lr: float = field(default=1e-3, metadata={"help": "policy learning rate"})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each batch"})
    mini_batches: int = field(default=2, metadata={"help": "optimizer steps per pass"})
    d_model: int = field(default=32, metadata={"help": "policy and critic width"})
    layers: int = field(default=2, metadata={"help": "observation encoder layers"})
    tokenizer: str = field(default="word", metadata={"help": "observation tokenizer", "choices": ("char", "word")})
    view: str = field(default="anchor", metadata={"help": "the policy reads the observation or the canonical state text (counts, own "
                                                          "values, round, offer on the table; no hidden information)",
                                                  "choices": ("observation", "anchor")})
    action_tokens: int = field(default=8, metadata={"help": "tokens per action at most"})
    action_constraint: str = field(default="admissible", metadata={"help": "decoding constraint of the token policy",
                                                                   "choices": ("admissible", "none")})
    gamma: float = field(default=0.99, metadata={"help": "discount between actions (both methods)"})
    lambda_: float = field(default=0.95, metadata={"help": "GAE lambda (both methods; BAD uses it inside actions too, as ADRL does)"})
    critic_lr: float = field(default=1e-3, metadata={"help": "critic learning rate (both methods)"})
    value_epochs: int = field(default=4, metadata={"help": "critic passes per batch (both methods)"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})
    out: str = field(default="runs/agent-tokens", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})


PRESETS = {
    "cpu": {},
    "quick": {"seeds": 2, "steps": 2, "tasks_per_step": 2, "group_size": 2, "train_tasks": 2, "max_turns": 3, "eval_every": 1,
              "eval_episodes": 4, "held_out_episodes": 4, "ppo_epochs": 1, "mini_batches": 1, "d_model": 16, "layers": 1,
              "value_epochs": 1, "progress": False},
    "gpu": {"seeds": 10, "steps": 100, "tasks_per_step": 16, "eval_every": 10, "eval_episodes": 256, "d_model": 128, "layers": 4,
            "device": "cuda"},
}


def _validate(cfg: AgentTokensConfig) -> None:
    check_config_values(cfg, positive_ints=("seeds", "steps", "train_tasks", "tasks_per_step", "group_size", "max_turns", "eval_every",
                                            "eval_episodes", "ppo_epochs", "mini_batches", "d_model", "layers", "value_epochs"),
                        nonneg_ints=("seed", "held_out_episodes"), positive_floats=("lr", "critic_lr"), nonempty=("methods",))
    from ..methods.agent_credit import AGENT_CREDIT

    for m in cfg.methods:
        if m not in AGENT_CREDIT:
            raise ValueError(f"--methods: unknown method {m!r}; choose from {', '.join(AGENT_CREDIT.names())}.")
        if m not in ("bad", "poad", "ppo-action", "appo"):
            raise ValueError(f"--methods: {m!r} has no critic options; this experiment compares bad and ppo-action.")
    if len(set(cfg.methods)) != len(cfg.methods):
        raise ValueError(f"--methods lists a method twice: {cfg.methods}.")
    if cfg.action_tokens < 2:
        raise ValueError(f"--action-tokens must be >= 2 (a word and <eos>); got {cfg.action_tokens}.")
    if not 0.0 <= cfg.gamma <= 1.0 or not 0.0 <= cfg.lambda_ <= 1.0:
        raise ValueError(f"--gamma and --lambda must lie in [0, 1]; got {cfg.gamma}, {cfg.lambda_}.")
    from ..envs.text_protocol import parse_env_spec

    parse_env_spec(cfg.env)
    check_device(cfg.device)


def trainer_config(cfg: AgentTokensConfig, method: str, seed: int, out: Path):
    from ..trainers.agent import AgentConfig

    opts = {"gamma": cfg.gamma, "lambda_": cfg.lambda_, "critic_lr": cfg.critic_lr, "value_epochs": cfg.value_epochs}
    return AgentConfig(env=cfg.env, method=method, policy="tokens", seed=seed, steps=cfg.steps, tasks_per_step=cfg.tasks_per_step,
                       group_size=cfg.group_size, max_turns=cfg.max_turns, train_tasks=cfg.train_tasks, eval_tasks="train",
                       eval_every=cfg.eval_every, eval_episodes=cfg.eval_episodes, lr=cfg.lr, ppo_epochs=cfg.ppo_epochs,
                       mini_batches=cfg.mini_batches, d_model=cfg.d_model, layers=cfg.layers, tokenizer=cfg.tokenizer, view=cfg.view,
                       action_tokens=cfg.action_tokens, action_constraint=cfg.action_constraint, device=cfg.device, out=str(out),
                       progress=False, tensorboard=False, checkpoint_every=cfg.steps, keep_checkpoints=1,
                       torch_threads=1 if cfg.device == "cpu" else 0, methods={method: opts}, overwrite=cfg.overwrite)


def statistics(rows: list[dict], methods) -> dict:
    """Per method: final and mean-over-evaluation success and return per seed; paired tests of the first method vs the others."""
    ev = [r for r in rows if r.get("kind") == "eval"]
    seeds = sorted({int(r["seed"]) for r in ev})
    # the common environment-step budget: the smallest total over all runs; each run's last evaluation at or below it
    budget = float(min(max(r["env_steps"] for r in ev if r["method"] == m and int(r["seed"]) == s) for m in methods for s in seeds
                       if any(r["method"] == m and int(r["seed"]) == s for r in ev)))
    per = {}
    for m in methods:
        d = {f"{k}_{w}": [] for k in METRICS for w in ("final", "at_budget", "mean_over_evals")}
        for s in seeds:
            rs = sorted((r for r in ev if r["method"] == m and int(r["seed"]) == s), key=lambda r: r["step"])
            if not rs:
                continue
            for k in METRICS:
                d[f"{k}_final"].append(rs[-1][k])
                d[f"{k}_at_budget"].append([r for r in rs if r["env_steps"] <= budget][-1][k])
                d[f"{k}_mean_over_evals"].append(float(np.mean([r[k] for r in rs])))
        per[m] = d
    summary = {m: {k: {"mean": mean_ci(v)[0], "ci95_half_width": mean_ci(v)[1], "per_seed": v} for k, v in d.items()} for m, d in per.items()}
    tests = {f"{methods[0]} - {o}": {k: paired_tests(per[methods[0]][k], per[o][k]) for k in per[methods[0]]} for o in methods[1:]}
    held = {m: {k: [r[k] for r in sorted((r for r in rows if r.get("kind") == "held_out" and r["method"] == m), key=lambda r: int(r["seed"]))]
                for k in METRICS} for m in methods}
    held_sum = {m: {k: {"mean": mean_ci(v)[0], "ci95_half_width": mean_ci(v)[1], "per_seed": v} for k, v in d.items() if v}
                for m, d in held.items()}
    held_tests = {f"{methods[0]} - {o}": {k: paired_tests(held[methods[0]][k], held[o][k]) for k in METRICS if held[o][k]}
                  for o in methods[1:]}
    return {"seeds": seeds, "env_step_budget": budget, "summary": summary, "tests": tests, "held_out": held_sum, "held_out_tests": held_tests}


def plot(out: Path, rows: list[dict], cfg: AgentTokensConfig) -> Path:
    """``figures/agent_tokens.png``: success and return on the training levels vs environment steps (mean over seeds, 95% t band)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ev = [r for r in rows if r.get("kind") == "eval"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {"bad": "bad (POAD: token-level critic, BAD backup)", "ppo-action": "ppo-action (one value per action)"}
    for ax, k, name in zip(axes, METRICS, ("success (optimal deal)", "return (deal's share of own value)")):
        for c, m in enumerate(cfg.methods):
            steps = sorted({r["step"] for r in ev if r["method"] == m})
            xs, ms, hs = [], [], []
            for st in steps:
                sel = [r for r in ev if r["method"] == m and r["step"] == st]
                xs.append(float(np.mean([r["env_steps"] for r in sel])))
                mu, h = mean_ci([r[k] for r in sel])
                ms.append(mu)
                hs.append(h)
            xs, ms, hs = map(np.asarray, (xs, ms, hs))
            ax.plot(xs, ms, marker="o", color=f"C{c}", label=f"{labels.get(m, m)}, gamma={cfg.gamma}, lambda={cfg.lambda_}")
            ax.fill_between(xs, ms - hs, ms + hs, color=f"C{c}", alpha=0.2)
        rnd = [r[k] for r in rows if r.get("kind") == "random_eval"]
        if rnd:
            ax.axhline(rnd[0], color="gray", ls="--", lw=1, label="uniform random admissible actions (same levels)")
        ax.set_xlabel("environment steps (mean over seeds at each evaluation)")
        ax.set_ylabel(name)
        ax.set_title(f"{cfg.eval_episodes} sampled episodes on the {cfg.train_tasks} training levels", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    n = len({r["seed"] for r in ev})
    fig.suptitle(f"{cfg.env}: actions written word by word, token policy ({cfg.layers}-layer encoder, d={cfg.d_model}, GRU decoder), {n} seeds, mean and 95% t band",
                 fontsize=9)
    fig.tight_layout()
    p = out / "figures" / "agent_tokens.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _random_eval(spec: str, seeds, *, max_turns: int, seed: int) -> dict:
    from ..envs.text_protocol import make_text_env

    env = make_text_env(spec)
    rng = np.random.default_rng(seed)
    wins, ret = 0, 0.0
    for s in seeds:
        obs, info = env.reset(seed=int(s))
        for _ in range(max_turns):
            adm = info["admissible_actions"]
            obs, r, term, trunc, info = env.step(adm[int(rng.integers(len(adm)))])
            ret += r
            if term or trunc:
                break
        wins += bool(info.get("won", False))
    env.close()
    return {"eval_success": wins / len(seeds), "eval_return": ret / len(seeds)}


def run(cfg: AgentTokensConfig) -> Path:
    _validate(cfg)
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite):
        return _run(cfg)


def _run(cfg: AgentTokensConfig) -> Path:
    import torch

    from ..trainers.agent import AgentTrainer

    if cfg.device == "cpu":
        torch.set_num_threads(1)
    out = Path(cfg.out)
    config = config_to_dict(cfg)
    config["provenance"] = provenance()
    logger = MetricLogger(out, config=config, backends=("csv",))
    t_start, c_start = time.perf_counter(), time.process_time()
    pool = [k % cfg.train_tasks for k in range(cfg.eval_episodes)]
    logger.log(0, {"kind": "random_eval", "method": "random", "seed": -1, **_random_eval(cfg.env, pool, max_turns=cfg.max_turns, seed=cfg.seed)})
    if cfg.held_out_episodes:
        held = [10_000_000 + k for k in range(cfg.held_out_episodes)]
        logger.log(0, {"kind": "random_held_out", "method": "random", "seed": -1,
                       **_random_eval(cfg.env, held, max_turns=cfg.max_turns, seed=cfg.seed)})
    jobs = [(s, m) for s in range(cfg.seed, cfg.seed + cfg.seeds) for m in cfg.methods]
    seconds = {}
    tokens_per_action = {}
    bar = tqdm(jobs, desc="agent-tokens", disable=not cfg.progress)
    for seed, method in bar:
        bar.set_postfix(method=method, seed=seed)
        folder = out / "runs" / method / f"seed-{seed}"
        t0 = time.perf_counter()
        tr = AgentTrainer(trainer_config(cfg, method, seed, folder))
        try:
            tr.train()
            seconds.setdefault(method, []).append(time.perf_counter() - t0)
            if cfg.held_out_episodes:
                tr.cfg.eval_tasks, tr.cfg.eval_episodes, tr._eval_envs = "held-out", cfg.held_out_episodes, []
                h = tr.evaluate(tr.step)
                logger.log(tr.step, {"kind": "held_out", "method": method, "seed": seed, "env_steps": float(tr.env_steps),
                                     "eval_success": h["eval_success"], "eval_return": h["eval_return"]})
            b = tr.rollout(tr.step + 1)  # a batch of the trained policy: how many tokens its actions have
            tokens_per_action.setdefault(method, []).append(float(np.mean([len(s.sample.extra["action_ids"]) for s in b.steps])))
        finally:
            tr.close()
        for r in read_metrics(folder / "metrics.csv"):
            if isinstance(r.get("eval_success"), float) and math.isfinite(r["eval_success"]):
                logger.log(int(r["step"]), {"kind": "eval", "method": method, "seed": seed, "env_steps": r["env_steps"],
                                            **{k: r[k] for k in ("eval_success", "eval_success_low", "eval_success_high", "eval_return")}})
    logger.close()
    rows = read_metrics(out / "metrics.csv")
    stats = statistics(rows, cfg.methods)
    summary = {"claim": "POAD/BAD (token-level critic and intra-action backup) trains a multi-token-action agent faster than "
                        "action-level PPO at equal environment steps",
               "metric": "success (optimal deal) and return on the training levels, sampled actions", **stats,
               "random_policy": {r["kind"]: {k: r[k] for k in METRICS} for r in rows if str(r.get("kind", "")).startswith("random_")},
               "tokens_per_action": {m: float(np.mean(v)) for m, v in tokens_per_action.items()},
               "run_seconds_mean": {m: float(np.mean(v)) for m, v in seconds.items()}}
    plot(out, rows, cfg)
    summary["wall_seconds"] = time.perf_counter() - t_start
    summary["cpu_seconds"] = time.process_time() - c_start
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    return out


def verdict(test: dict, first: str, other: str, alpha: float = 0.05) -> str:
    d, p = test["difference"], test.get("t_p", math.nan)
    if not math.isfinite(p) or p >= alpha:
        return f"no significant difference between {first} and {other} (paired t p = {p:.3g}, alpha {alpha})"
    return f"{first} {'above' if d > 0 else 'below'} {other} (paired t p = {p:.3g} < {alpha})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fixed = []
    for a in argv:
        fixed.extend(["--preset", "quick"] if a == "--quick" else [a])
    cfg, _ = parse_config(AgentTokensConfig, fixed, prog="polab run agent-tokens", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    out = run(cfg)
    s = json.loads((out / "summary.json").read_text())
    print(f"{cfg.env}, {len(s['seeds'])} seeds (random policy: {s['random_policy']}); tokens per action: {s['tokens_per_action']}")
    for m, v in s["summary"].items():
        print(f"  {m:10s} " + "  ".join(f"{k} {x['mean']:.3f}+-{x['ci95_half_width']:.3f}" for k, x in v.items()))
    for pair, t in s["tests"].items():
        a, b = pair.split(" - ")
        for k, x in t.items():
            print(f"  {pair} {k}: {x['difference']:+.3f}+-{x['ci95_half_width']:.3f}, paired t p = {x.get('t_p', math.nan):.3g}, "
                  f"sign-flip p = {x.get('sign_flip_p', math.nan):.3g}" + (f" -> {verdict(x, a, b)}" if k == "eval_success_final" else ""))
    for m, v in s["held_out"].items():
        print(f"  held-out after training: {m} " + "  ".join(f"{k} {x['mean']:.3f}+-{x['ci95_half_width']:.3f}" for k, x in v.items()))
    print(f"wall {s['wall_seconds']:.0f} s, process CPU {s['cpu_seconds']:.0f} s; run folder: {out}")
    return 0
