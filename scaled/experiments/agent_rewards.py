r"""``polab run agent-rewards``: EPO's process reward vs outcome-only (negotiation), the debate reward's accuracy/justifiability
trade-off (evidence proxy), PoAct vs the plain choice policy.

Every arm is a run of the agent trainer (:mod:`polab.scaled.trainers.agent`) with the small choice
policy trained from scratch, trajectory-level ``grpo`` credit, the same task draws and initial
weights per seed; only the registered reward shaper (:data:`polab.scaled.methods.agent_rewards.AGENT_REWARDS`)
or the policy differs. Comparisons are paired by seed: mean difference with its 95% t interval,
paired t-test and the exact sign-flip test (smallest possible two-sided p with ``n`` seeds:
:math:`2^{1-n}`).

Parts (``--parts``):

- ``epo``: ``negotiation`` (``--epo-env``), ``--reward-shaper none`` vs ``epo-process`` (the privileged
  ask-distance process reward model, combined with the outcome by
  :func:`polab.estimators.reward_shaping.process_reward_returns`). Claim (EPO): process rewards make
  multi-turn strategic RL reach better outcomes. Outcome: the task return (share of the agent's
  pool value) and the optimal-deal rate on ``eval_episodes`` held-out negotiations after training;
  the figure shows the held-out return vs environment steps.
- ``debate``: ``evidence`` (``--debate-env``), ``--reward-shaper debate`` with weights
  :math:`\lambda` in ``--lambdas`` (0 is the task reward). Claim (debate reward): adding the
  judge's preference to the reward yields decisions the judge accepts far more often, at little
  cost in task performance. Outcome per :math:`\lambda` on held-out cases: decision accuracy and
  the rate of justifications the programmatic judge accepts (debate outcome +1 against the
  opposite decision with ``opponent_evidence`` adversarial findings). Figure: accuracy vs
  justified rate, one point per :math:`\lambda` with 95% t intervals over seeds both ways.
- ``poact``: ``--policy poact`` (:mod:`polab.scaled.agents.poact`) vs ``--policy small`` on
  ``--poact-env`` (default the evidence proxy with 5 findings, where the action families
  inspect/decide exist; on Sokoban every action is its own family and PoAct is a mere
  reparametrisation); outcome held-out success (correct decisions) and return.
- ``arpo`` (not in the default ``--parts``): ARPO's per-task success replay on vs off under sparse
  success, ``--arpo-env`` (default Sokoban 6x6 with two boxes, ``--arpo-train-tasks`` 8 levels,
  ``--arpo-max-turns`` 20), arms ``replay-off`` (``--sample-filter none``) and ``replay``
  (``--sample-filter arpo``: an all-failed task group gets one buffered success of the same task,
  :class:`polab.scaled.methods.agent_credit.ARPOAgentFilter`), and with ``--arpo-selection`` a third
  arm ``replay+selection`` (ARPO's task selection, 16 tries per level; its env steps count). The
  replay adds no environment steps, so the arms train for the same number of steps on equal
  budgets (each run's ``env_steps`` is reported). Claim (ARPO): replaying each task's successes
  helps agents whose rewards are sparse. Outcome: the final success on *all* training levels
  (``eval_episodes`` sampled episodes, whatever pool selection kept), paired by seed, and the mean
  over the evaluations (area under the curve); how often the replay triggered (injections, the
  all-failed groups eligible for one, steps with an injection); the uniform random policy's
  success on the same levels. Figure: success vs environment steps per arm.

Measured (``cpu`` preset, 5 seeds, the defaults of commit 4e3e8c2; each part run as its own command in parallel,
``nice -n 10 polab run agent-rewards --parts epo|debate|poact --out ...``, walls 218 s, 236 s, 188 s on a 2-core machine shared
by 8 jobs, load 10-30; the three parts in one command: about 11 min of such wall time. Held-out cases, 96 episodes, sampled
actions; mean over seeds +- 95% t half-width; paired tests by seed, the sign-flip p cannot go below 2^-4 = 0.0625 with 5 seeds):

- EPO, ``negotiation:max_count=2``, 30 steps of 8 levels x 8 episodes: outcome-only return 0.401 +- 0.044, optimal deals
  0.269 +- 0.096; ``epo-process`` (ask-distance) return 0.322 +- 0.070, optimal deals 0.148 +- 0.048 (uniform random policy:
  0.318 and 0.147). Difference -0.079 +- 0.090 (paired t p = 0.071) and -0.121 +- 0.107 (p = 0.035; sign-flip p = 0.0625, every
  seed negative). Verdict: the claim is **not** reproduced; this privileged process reward *hurt* the small policy at this
  budget (it stayed at the random policy's level while outcome-only improved a little). One reason visible in the signal:
  the penalty ``-|a.x - V*|`` punishes the informative "ask for everything" opening as hard as a bad deal.
- Debate reward, ``evidence:n_evidence=3``, 30 steps, opponent evidence 1: lambda = 0 / 0.5 / 1 give decision accuracy
  0.494 +- 0.039 / 0.502 +- 0.067 / 0.535 +- 0.148 and justified rate 0.262 +- 0.065 / 0.306 +- 0.132 / 0.537 +- 0.142, with
  0.13 / 0.39 / 2.94 findings inspected per case. lambda = 1 minus lambda = 0: justified rate +0.275 +- 0.171 (paired t
  p = 0.011, sign-flip p = 0.0625, all 5 seeds positive), accuracy +0.042 +- 0.164 (p = 0.52). Verdict: the judge accepts
  the debate-trained agent's decisions far more often at no measurable cost in accuracy, as the paper claims, but here by a
  simple route: the agent learns to inspect every finding, which leaves the opposing argumentator nothing to reveal; no
  arm learned to decide better than chance (random policy: 0.497) within 30 steps, so the accuracy side of the trade-off is
  not tested by this run. Longer (``--parts debate --debate-steps 80``, 253 s): the same picture, justified rate 0.281 /
  0.265 / 0.548 for lambda 0 / 0.5 / 1 (lambda 1 - 0: +0.267 +- 0.126, paired t p = 0.004), accuracy 0.500 / 0.494 / 0.552
  (+0.052 +- 0.124, p = 0.31); lambda 0 and 0.5 stopped inspecting altogether.
- ARPO replay on vs off (commit 8cb73c9; ``nice -n 10 polab run agent-rewards --parts arpo --seed K --seeds 1 --out DIR_K`` for
  K = 0..4 in parallel, then ``polab run agent-rewards --parts arpo --merge DIR_0 ... DIR_4``; each run 75 s of CPU, 1,700 s
  wall at load 15-21 on 2 cores): ``sokoban:size=6,boxes=2,render=compact``, 8 training levels, 20 turns, 40 steps of 8 levels
  x 8 episodes. Uniform random policy on these levels: 0.032 (1,600 episodes). Final success on all 8 levels (96 sampled
  episodes): replay 0.504 +- 0.277 (per seed 0.21 / 0.68 / 0.77 / 0.44 / 0.43), replay-off 0.140 +- 0.074; difference +0.365
  +- 0.244 (paired t p = 0.014; sign-flip p = 0.0625, the smallest possible with 5 seeds: every seed positive); mean over
  the evaluations +0.128 +- 0.107 (p = 0.029). Environment steps: replay 47,455, replay-off 49,796 (successful episodes end
  early; the replay itself adds none). The replay triggered on 39% +- 12% of the all-failed groups (69 injections per run out
  of 181 eligible groups of 320, on 33 of 40 steps), i.e. 2.7% of the trajectories trained on were replayed successes.
  Verdict: the claim is reproduced at this budget: replay made sparse-success Sokoban learnable within 40 steps, while
  without it the policy stayed near 0.14.
- Task selection (2026-12-04, AMX machine, quiet; ``polab run agent-rewards --parts arpo --arpo-selection --seed K --seeds 1
  --out DIR_K`` for K = 0..4, two at a time, 30 s per arm, then ``--merge``): replay 0.546 +- 0.306 vs replay-off 0.171 +-
  0.106 (+0.375 +- 0.275, paired t p = 0.019; the same seeds as above give slightly different figures on this CPU, whose
  float32 kernels round differently); replay+selection 0.279 +- 0.120, +0.108 +- 0.135 over replay-off (p = 0.090) and
  below replay alone. Selection kept 2.4 +- 1.1 of the 8 levels (those the initial policy solved in 16 tries), so the agent
  trained on fewer levels and its success on all 8 stayed lower; its periodic evaluations are drawn from the kept pool,
  so its curve is not comparable and is not tested. Verdict: at this budget task selection did not add to the replay;
  on this task it narrowed training to the levels it could already solve.
- PoAct vs the plain choice policy, ``evidence:n_evidence=5``, 20 steps: held-out success 0.492 +- 0.028 vs 0.517 +- 0.020,
  difference -0.025 +- 0.035 (p = 0.12). Verdict: no difference; neither policy rose above the random level (0.470) at this
  budget, so the claim (better reasoning paths, fewer tokens) is not tested at CPU scale.

Presets: ``cpu`` (default; sized for a shared 2-core machine, under 20 minutes), ``quick``
(seconds, a smoke run), ``gpu`` (more seeds, steps and a wider policy on ``--device cuda``; not run
here). The agent trainer's ``gpu-llm`` preset documents the language-model setting; with
``polab train agent --policy llm --model ID --reward-shaper debate --env evidence`` the same shapers
apply to a language model's replies.

Run folder: ``config.json``, ``metrics.csv`` (one row per run and evaluation), ``summary.json``,
``figures/epo_return.png``, ``figures/debate_tradeoff.png``, ``figures/poact_success.png``, ``figures/arpo_success.png`` and the
training runs under ``runs/``.
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
from .agent_credit import mean_ci, paired_tests

__all__ = ["AgentRewardsConfig", "PRESETS", "judge_evaluation", "main", "run"]

PARTS = ("epo", "debate", "poact", "arpo")


@dataclass
class AgentRewardsConfig:
    """Options of ``polab run agent-rewards`` (defaults: the ``cpu`` preset)."""

    parts: tuple[str, ...] = field(default=("epo", "debate", "poact"), metadata={"help": "which comparisons: epo, debate, poact, arpo "
                                                                                         "(arpo is not in the default)"})
    seeds: int = field(default=5, metadata={"help": "seeds per arm"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    epo_env: str = field(default="negotiation:max_count=2", metadata={"help": "environment of the EPO comparison"})
    epo_steps: int = field(default=30, metadata={"help": "training steps of each EPO run"})
    debate_env: str = field(default="evidence:n_evidence=3", metadata={"help": "environment of the debate comparison"})
    debate_steps: int = field(default=30, metadata={"help": "training steps of each debate run"})
    lambdas: tuple[float, ...] = field(default=(0.0, 0.5, 1.0), metadata={"help": "debate reward weights"})
    opponent_evidence: int = field(default=1, metadata={"help": "findings the alternative's argumentator may add"})
    poact_env: str = field(default="evidence:n_evidence=5", metadata={"help": "environment of the PoAct comparison (one with action "
                                                                                "families: evidence, negotiation, textworld)"})
    poact_steps: int = field(default=20, metadata={"help": "training steps of each PoAct run"})
    poact_train_tasks: int = field(default=0, metadata={"help": "PoAct part: training levels (0: fresh levels, held-out success)"})
    arpo_env: str = field(default="sokoban:size=6,boxes=2,render=compact", metadata={"help": "environment of the ARPO comparison (sparse "
                                                                                               "success)"})
    arpo_steps: int = field(default=40, metadata={"help": "training steps of each ARPO run"})
    arpo_train_tasks: int = field(default=8, metadata={"help": "ARPO part: training levels (seeds 0..N-1); success is measured on them"})
    arpo_max_turns: int = field(default=20, metadata={"help": "ARPO part: turn limit"})
    arpo_eval_every: int = field(default=10, metadata={"help": "ARPO part: evaluation every this many steps"})
    arpo_selection: bool = field(default=False, metadata={"help": "ARPO part: add a third arm, replay + ARPO's task selection (keep the "
                                                                 "levels the initial policy solves once in 4 tries)"})
    tasks_per_step: int = field(default=8, metadata={"help": "tasks per step"})
    group_size: int = field(default=8, metadata={"help": "episodes per task (G)"})
    max_turns: int = field(default=6, metadata={"help": "turn limit (negotiation/evidence)"})
    eval_episodes: int = field(default=96, metadata={"help": "held-out episodes per evaluation"})
    evals: int = field(default=2, metadata={"help": "evaluations per run after the initial one"})
    lr: float = field(default=3e-3, metadata={"help": "learning rate"})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each batch"})
    mini_batches: int = field(default=2, metadata={"help": "optimizer steps per pass"})
    d_model: int = field(default=32, metadata={"help": "small policy width"})
    layers: int = field(default=1, metadata={"help": "small policy layers"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})
    out: str = field(default="runs/agent-rewards", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})
    merge: tuple[str, ...] = field(default=(), metadata={"help": "no training: combine the metrics.csv rows of earlier agent-rewards run "
                                                                 "folders (e.g. one per --seed, run in parallel; a run repeated in "
                                                                 "several folders counts once, the later folder's) and summarise --parts"})


PRESETS = {
    "cpu": {},
    "quick": {"seeds": 2, "epo_steps": 2, "debate_steps": 2, "poact_steps": 2, "tasks_per_step": 2, "group_size": 3, "eval_episodes": 8,
              "evals": 1, "d_model": 16, "progress": False, "arpo_steps": 2, "arpo_train_tasks": 2, "arpo_max_turns": 6, "arpo_eval_every": 1},
    "gpu": {"seeds": 8, "epo_steps": 100, "debate_steps": 100, "poact_steps": 100, "tasks_per_step": 16, "eval_episodes": 512, "evals": 5,
            "d_model": 128, "layers": 2, "device": "cuda"},
}


def _validate(cfg: AgentRewardsConfig) -> None:
    check_config_values(cfg, positive_ints=("seeds", "epo_steps", "debate_steps", "poact_steps", "tasks_per_step", "group_size", "max_turns",
                                            "eval_episodes", "evals", "ppo_epochs", "mini_batches", "d_model", "layers", "arpo_steps",
                                            "arpo_train_tasks", "arpo_max_turns", "arpo_eval_every"),
                        nonneg_ints=("seed", "opponent_evidence", "poact_train_tasks"), positive_floats=("lr",), nonempty=("parts",))
    bad = [p for p in cfg.parts if p not in PARTS]
    if bad:
        raise ValueError(f"--parts: unknown part(s) {bad}; choose from {', '.join(PARTS)}.")
    if "debate" in cfg.parts and (not cfg.lambdas or any(not 0.0 <= float(x) <= 1.0 for x in cfg.lambdas)):
        raise ValueError(f"--lambdas must be non-empty weights in [0, 1]; got {cfg.lambdas}.")
    if cfg.group_size < 2:
        raise ValueError("--group-size must be >= 2 (grpo credit).")
    for f in cfg.merge:
        if not (Path(f) / "metrics.csv").is_file():
            raise ValueError(f"--merge {f}: no metrics.csv there; give agent-rewards run folders.")
    from ..envs.text_protocol import parse_env_spec

    for name, spec, want in (("epo-env", cfg.epo_env, "negotiation"), ("debate-env", cfg.debate_env, "evidence"), ("poact-env", cfg.poact_env, None),
                             ("arpo-env", cfg.arpo_env, None)):
        try:
            env_name, _ = parse_env_spec(spec)
        except ValueError as exc:
            raise ValueError(f"--{name}: {exc}") from None
        if want and env_name != want:
            raise ValueError(f"--{name} must be a {want} spec; got {spec!r}.")
    check_device(cfg.device)


def _trainer_config(cfg, *, env, steps, seed, out, reward_shaper="none", methods=None, policy="small", train_tasks=0, eval_tasks="held-out",
                    view="anchor", tokenizer="word", max_turns=None, sample_filter="none", overrides=None):
    import dataclasses

    from ..trainers.agent import AgentConfig

    if overrides:
        return dataclasses.replace(_trainer_config(cfg, env=env, steps=steps, seed=seed, out=out, reward_shaper=reward_shaper, methods=methods,
                                                   policy=policy, train_tasks=train_tasks, eval_tasks=eval_tasks, view=view, tokenizer=tokenizer,
                                                   max_turns=max_turns, sample_filter=sample_filter), **overrides)
    return AgentConfig(env=env, method="grpo", sample_filter=sample_filter, reward_shaper=reward_shaper, policy=policy, seed=seed, steps=steps,
                       tasks_per_step=cfg.tasks_per_step, group_size=cfg.group_size, max_turns=max_turns or cfg.max_turns,
                       train_tasks=train_tasks, eval_tasks=eval_tasks, eval_every=max(1, steps // cfg.evals), eval_episodes=cfg.eval_episodes,
                       lr=cfg.lr, ppo_epochs=cfg.ppo_epochs, mini_batches=cfg.mini_batches, d_model=cfg.d_model, layers=cfg.layers, heads=2,
                       view=view, tokenizer=tokenizer, max_len=128 if view == "anchor" else 256, device=cfg.device, out=str(out),
                       progress=False, tensorboard=False, checkpoint_every=steps, keep_checkpoints=1,
                       torch_threads=1 if cfg.device == "cpu" else 0, methods=methods or {})


def judge_evaluation(trainer, episodes: int, *, opponent_evidence: int, first_seed: int = 10_000_000) -> dict:
    """Held-out cases of the evidence proxy: decision accuracy, the judge's acceptance rate, decided rate, inspections.

    One episode (actions sampled) per case ``first_seed + k``; the judge is the ``debate`` shaper's
    (:func:`polab.scaled.methods.agent_rewards.debate_judgement`).
    """
    import torch

    from ..agents.rollout import collect_episodes
    from ..methods.agent_rewards import AGENT_REWARDS

    judge = AGENT_REWARDS.build("debate", {"opponent_evidence": opponent_evidence})
    judge.setup(trainer)
    envs = [trainer._env_factory() for _ in range(min(episodes, 64))]
    gen = torch.Generator().manual_seed(trainer.seed_for(trainer.step, "judge-eval"))
    acc, just, decided, insp, n = 0.0, 0.0, 0.0, 0.0, 0
    trainer.policy.eval()
    try:
        for lo in range(0, episodes, len(envs)):
            seeds = list(range(first_seed + lo, first_seed + min(episodes, lo + len(envs))))
            b = collect_episodes(envs, trainer.agent, seeds, group_size=1, max_turns=trainer.cfg.max_turns, generator=gen)
            m = judge.compute(None, b).metrics
            k = len(b.episodes)
            acc += m["decision_accuracy"] * k
            just += m["debate_justified_rate"] * k
            decided += m["decided_rate"] * k
            insp += m["inspected_mean"] * k
            n += k
    finally:
        trainer.policy.train()
        for e in envs:
            e.close()
    return {"decision_accuracy": acc / n, "justified_rate": just / n, "decided_rate": decided / n, "inspected_mean": insp / n}


def _arms(cfg):
    arms = []
    if "epo" in cfg.parts:
        arms += [("epo", "outcome-only", dict(env=cfg.epo_env, steps=cfg.epo_steps, reward_shaper="none")),
                 ("epo", "epo-process", dict(env=cfg.epo_env, steps=cfg.epo_steps, reward_shaper="epo-process"))]
    if "debate" in cfg.parts:
        for lam in cfg.lambdas:
            arms.append(("debate", f"lambda={float(lam):g}", dict(env=cfg.debate_env, steps=cfg.debate_steps, reward_shaper="debate",
                                                                   methods={"debate": {"weight": float(lam),
                                                                                       "opponent_evidence": cfg.opponent_evidence}})))
    if "poact" in cfg.parts:
        common = dict(env=cfg.poact_env, steps=cfg.poact_steps, train_tasks=cfg.poact_train_tasks,
                      eval_tasks="train" if cfg.poact_train_tasks else "held-out")
        arms += [("poact", "small", dict(common, policy="small")), ("poact", "poact", dict(common, policy="poact"))]
    if "arpo" in cfg.parts:
        # the setting of agent-credit's Sokoban runs (char tokens over the observation, 2 layers, 4 x 4 PPO passes), where the small
        # policy learns within minutes; only the sample filter differs between the arms
        common = dict(env=cfg.arpo_env, steps=cfg.arpo_steps, train_tasks=cfg.arpo_train_tasks, eval_tasks="train", view="observation",
                      tokenizer="char", max_turns=cfg.arpo_max_turns,
                      overrides=dict(lr=1e-3, ppo_epochs=4, mini_batches=4, layers=2, heads=2, max_len=256, eval_every=cfg.arpo_eval_every))
        arms += [("arpo", "replay-off", dict(common)),
                 ("arpo", "replay", dict(common, sample_filter="arpo", methods={"arpo": {"task_selection": False}}))]
        if cfg.arpo_selection:
            # 16 tries per level (ARPO's default is 4): at a random success near 0.04, 4 tries would often keep no level at all
            arms.append(("arpo", "replay+selection", dict(common, sample_filter="arpo", methods={"arpo": {"task_selection": True,
                                                                                                     "selection_episodes": 16}})))
    return arms


def merged_rows(folders) -> list[dict]:
    """``metrics.csv`` rows of several run folders; a (kind, part, arm, seed) run found in several folders keeps the later folder's
    rows (the random-policy rows of every folder are kept: each is its own sample)."""
    keep: dict[tuple, list[dict]] = {}
    for i, f in enumerate(folders):
        by_run: dict[tuple, list[dict]] = {}
        for r in read_metrics(Path(f) / "metrics.csv"):
            key = (r.get("kind"), r.get("part"), r.get("arm"), r.get("seed"), i if r.get("kind") == "random" else None)
            by_run.setdefault(key, []).append(r)
        keep.update(by_run)
    return [r for rows in keep.values() for r in rows]


def arpo_statistics(folder: Path, trainer) -> dict:
    """How often ARPO's replay triggered in one run (from its ``metrics.csv``) and the training pool it kept.

    ``replaced_trajectories``: buffered successes injected over the run; ``all_failed_groups``: task groups in which every
    episode failed (the groups eligible for a replay); ``replay_rate``: injected / eligible; ``steps_with_replay``: training
    steps with at least one injection; ``replaced_fraction``: injected / all trajectories trained on.
    """
    rows = [r for r in read_metrics(folder / "metrics.csv") if isinstance(r.get("replaced_trajectories"), float)
            and math.isfinite(r["replaced_trajectories"])]
    cfg = trainer.cfg
    rep = float(sum(r["replaced_trajectories"] for r in rows))
    failed = float(sum(r["all_failed_groups"] for r in rows))
    return {"replaced_trajectories": rep, "all_failed_groups": failed, "groups": float(len(rows) * cfg.tasks_per_step),
            "replay_rate": rep / failed if failed else math.nan, "steps_with_replay": float(sum(r["replaced_trajectories"] > 0 for r in rows)),
            "replaced_fraction": rep / max(len(rows) * cfg.tasks_per_step * cfg.group_size, 1),
            "kept_tasks": float(len(trainer.task_pool)), "env_steps": float(trainer.env_steps)}


def pool_evaluation(trainer, episodes: int, levels: int) -> dict:
    """Success on *all* ``levels`` training levels (cycled, ``episodes`` sampled episodes), whatever pool task selection kept."""
    trainer.task_pool = list(range(levels))
    return trainer.evaluate(trainer.step)


def run(cfg: AgentRewardsConfig) -> Path:
    _validate(cfg)
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite):
        return _run(cfg)


def _run(cfg: AgentRewardsConfig) -> Path:
    import torch

    from ..trainers.agent import AgentTrainer

    if cfg.device == "cpu":
        torch.set_num_threads(1)
    out = Path(cfg.out)
    config = config_to_dict(cfg)
    config["provenance"] = provenance()
    logger = MetricLogger(out, config=config, backends=("csv",))
    t_start = time.perf_counter()
    if cfg.merge:
        for row in merged_rows(cfg.merge):
            logger.log(int(row["step"]), {k: v for k, v in row.items() if k != "step" and not (isinstance(v, float) and math.isnan(v))})
    if "arpo" in cfg.parts and not cfg.merge:  # the uniform random policy on the same levels and turn limit
        from .agent_credit import random_policy_success

        pool = [k % cfg.arpo_train_tasks for k in range(max(cfg.eval_episodes, 400))]
        logger.log(0, {"kind": "random", "part": "arpo", "arm": "random", "seed": -1,
                       "eval_success": random_policy_success(cfg.arpo_env, pool, max_turns=cfg.arpo_max_turns, seed=cfg.seed),
                       "episodes": float(len(pool))})
    jobs = [] if cfg.merge else [(part, arm, kw, s) for s in range(cfg.seed, cfg.seed + cfg.seeds) for part, arm, kw in _arms(cfg)]
    bar = tqdm(jobs, desc="agent-rewards", disable=not cfg.progress)
    seconds: dict[str, list[float]] = {}
    for part, arm, kw, seed in bar:
        bar.set_postfix(part=part, arm=arm, seed=seed)
        folder = out / "runs" / part / arm.replace("=", "") / f"seed-{seed}"
        t0 = time.perf_counter()
        tr = AgentTrainer(_trainer_config(cfg, seed=seed, out=folder, **kw))
        try:
            tr.train()
            final, arpo = {}, {}
            if part == "debate":
                final = judge_evaluation(tr, cfg.eval_episodes, opponent_evidence=cfg.opponent_evidence)
            if part == "arpo":
                arpo = arpo_statistics(folder, tr) if arm != "replay-off" else {"env_steps": float(tr.env_steps),
                                                                                 "kept_tasks": float(len(tr.task_pool))}
                arpo.update(pool_evaluation(tr, cfg.eval_episodes, cfg.arpo_train_tasks))
        finally:
            tr.close()
        seconds.setdefault(f"{part}|{arm}", []).append(time.perf_counter() - t0)
        rows = [r for r in read_metrics(folder / "metrics.csv") if isinstance(r.get("eval_success"), float) and math.isfinite(r["eval_success"])]
        for r in rows:
            logger.log(int(r["step"]), {"kind": "eval", "part": part, "arm": arm, "seed": seed, "env_steps": r["env_steps"],
                                        **{k: r[k] for k in ("eval_success", "eval_success_low", "eval_success_high", "eval_return", "eval_length")}})
        if final:
            logger.log(int(rows[-1]["step"]), {"kind": "judge", "part": part, "arm": arm, "seed": seed, **final})
        if arpo:
            logger.log(int(rows[-1]["step"]), {"kind": "arpo_final", "part": part, "arm": arm, "seed": seed, **arpo})
    logger.close()
    rows = read_metrics(out / "metrics.csv")
    summary = {"parts": {}, "run_seconds_mean": {k: float(np.mean(v)) for k, v in seconds.items()}}
    if "epo" in cfg.parts:
        summary["parts"]["epo"] = _compare(rows, "epo", ["epo-process", "outcome-only"], ("eval_return", "eval_success"))
    if "debate" in cfg.parts:
        summary["parts"]["debate"] = _debate_summary(rows, [f"lambda={float(x):g}" for x in cfg.lambdas])
    if "poact" in cfg.parts:
        summary["parts"]["poact"] = _compare(rows, "poact", ["poact", "small"], ("eval_success", "eval_return"))
    if "arpo" in cfg.parts:
        summary["parts"]["arpo"] = _arpo_summary(rows, cfg)
    _plots(out, rows, cfg)
    summary["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    return out


def _final(rows, part, arm, key, kind="eval"):
    per = {}
    for r in rows:
        if r.get("kind") == kind and r.get("part") == part and r.get("arm") == arm:
            s = int(r["seed"])
            if s not in per or r["step"] >= per[s][0]:
                per[s] = (r["step"], r[key])
    return [per[s][1] for s in sorted(per)]


def _compare(rows, part, arms, keys) -> dict:
    res = {"arms": {}, "tests": {}}
    for a in arms:
        res["arms"][a] = {k: dict(zip(("mean", "ci95_half_width"), mean_ci(_final(rows, part, a, k))), per_seed=_final(rows, part, a, k)) for k in keys}
    for k in keys:
        res["tests"][f"{arms[0]} - {arms[1]}|{k}"] = paired_tests(_final(rows, part, arms[0], k), _final(rows, part, arms[1], k))
    return res


def _arpo_summary(rows, cfg) -> dict:
    """Final success on all training levels per arm; replay (and replay+selection) minus replay-off, paired by seed;
    mean over the evaluations (area under the curve); how often the replay triggered; the random policy's success."""
    arms = ["replay", "replay-off"] + (["replay+selection"] if cfg.arpo_selection else [])
    keys = ("eval_success", "eval_return", "env_steps", "replaced_trajectories", "all_failed_groups", "replay_rate", "steps_with_replay",
            "replaced_fraction", "kept_tasks")
    res = {"arms": {}, "tests": {}}
    for a in arms:
        res["arms"][a] = {}
        for k in keys:
            v = [x for x in _final(rows, "arpo", a, k, "arpo_final") if isinstance(x, float) and math.isfinite(x)]
            if v:
                res["arms"][a][k] = dict(zip(("mean", "ci95_half_width"), mean_ci(v)), per_seed=v)
        auc = _mean_over_evals(rows, "arpo", a)
        res["arms"][a]["mean_over_evals"] = dict(zip(("mean", "ci95_half_width"), mean_ci(auc)), per_seed=auc)
    for a in [x for x in arms if x != "replay-off"]:
        res["tests"][f"{a} - replay-off|eval_success"] = paired_tests(_final(rows, "arpo", a, "eval_success", "arpo_final"),
                                                                      _final(rows, "arpo", "replay-off", "eval_success", "arpo_final"))
        if a == "replay+selection":
            # the trainer's periodic evaluations draw from the pool that task selection kept (the easier levels), so this
            # arm's area under the curve is not comparable with replay-off's (all levels): only its final success on all
            # levels is tested
            continue
        res["tests"][f"{a} - replay-off|mean_over_evals"] = paired_tests(_mean_over_evals(rows, "arpo", a),
                                                                         _mean_over_evals(rows, "arpo", "replay-off"))
    rnd = [r for r in rows if r.get("kind") == "random" and r.get("part") == "arpo"]
    n = sum(r.get("episodes", 1.0) for r in rnd)
    res["random_policy_success"] = sum(r["eval_success"] * r.get("episodes", 1.0) for r in rnd) / n if rnd else math.nan
    res["random_policy_episodes"] = n
    return res


def _mean_over_evals(rows, part, arm) -> list[float]:
    per: dict[int, list[float]] = {}
    for r in rows:
        if r.get("kind") == "eval" and r.get("part") == part and r.get("arm") == arm:
            per.setdefault(int(r["seed"]), []).append(r["eval_success"])
    return [float(np.mean(per[s])) for s in sorted(per)]


def _debate_summary(rows, arms) -> dict:
    keys = ("decision_accuracy", "justified_rate", "decided_rate", "inspected_mean")
    res = {"arms": {a: {k: dict(zip(("mean", "ci95_half_width"), mean_ci(_final(rows, "debate", a, k, "judge"))),
                            per_seed=_final(rows, "debate", a, k, "judge")) for k in keys} for a in arms}, "tests": {}}
    for a in arms[1:]:
        for k in ("decision_accuracy", "justified_rate"):
            res["tests"][f"{a} - {arms[0]}|{k}"] = paired_tests(_final(rows, "debate", a, k, "judge"), _final(rows, "debate", arms[0], k, "judge"))
    return res


def _plots(out: Path, rows, cfg) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    for part, arms, key, ylabel, fname in (
            ("epo", ["outcome-only", "epo-process"], "eval_return", "held-out task return (share of own pool value)", "epo_return.png"),
            ("poact", ["small", "poact"], "eval_success", "success (sampled actions)", "poact_success.png"),
            ("arpo", ["replay-off", "replay", "replay+selection"], "eval_success", "success on the training levels (sampled actions)",
             "arpo_success.png")):
        if part not in cfg.parts:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for k, a in enumerate(arms):
            ev = [r for r in rows if r.get("kind") == "eval" and r.get("part") == part and r.get("arm") == a]
            steps = sorted({r["step"] for r in ev})
            xs = np.array([np.mean([r["env_steps"] for r in ev if r["step"] == s]) for s in steps])
            mh = np.array([mean_ci([r[key] for r in ev if r["step"] == s]) for s in steps])
            if not len(xs):
                continue
            note = "; curve on the kept levels only" if a == "replay+selection" else ""
            ax.plot(xs, mh[:, 0], marker="o", color=f"C{k}", label=f"{a} (grpo credit, G={cfg.group_size}{note})")
            ax.fill_between(xs, mh[:, 0] - mh[:, 1], mh[:, 0] + mh[:, 1], color=f"C{k}", alpha=0.2)
        env = {"epo": cfg.epo_env, "poact": cfg.poact_env, "arpo": cfg.arpo_env}[part]
        rnd = [r["eval_success"] for r in rows if r.get("kind") == "random" and r.get("part") == part]
        if rnd:
            ax.axhline(float(np.mean(rnd)), color="gray", ls="--", lw=1, label="uniform random policy (same levels)")
        ax.set_xlabel("environment steps (mean over seeds)")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(f"{part}: {env}, {cfg.seeds} seeds, mean and 95% t band", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "figures" / fname, dpi=110)
        plt.close(fig)
    if "debate" in cfg.parts:
        fig, ax = plt.subplots(figsize=(6.5, 4.3))
        for k, lam in enumerate(cfg.lambdas):
            a = f"lambda={float(lam):g}"
            acc, just = _final(rows, "debate", a, "decision_accuracy", "judge"), _final(rows, "debate", a, "justified_rate", "judge")
            if not acc:
                continue
            (ma, ha), (mj, hj) = mean_ci(acc), mean_ci(just)
            ax.errorbar(mj, ma, xerr=hj, yerr=ha, fmt="o", color=f"C{k}", capsize=4,
                        label=f"debate reward, lambda={float(lam):g} (opponent evidence {cfg.opponent_evidence})")
            ax.scatter(just, acc, color=f"C{k}", alpha=0.35, s=14)
        ax.set_xlabel("justified rate (judge prefers the decision, held-out cases)")
        ax.set_ylabel("decision accuracy (held-out cases)")
        ax.set_title(f"debate reward trade-off: {cfg.debate_env}, {cfg.seeds} seeds (dots), mean +- 95% t", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "figures" / "debate_tradeoff.png", dpi=110)
        plt.close(fig)


def _verdict(t: dict, alpha: float = 0.05) -> str:
    p = t.get("t_p", math.nan)
    if not math.isfinite(t.get("t", math.nan)):
        return "paired t-test undefined (every seed's difference is the same); see the sign-flip p"
    if p >= alpha:
        return f"no significant difference (paired t p = {p:.3g})"
    return f"{'higher' if t['difference'] > 0 else 'lower'} (paired t p = {p:.3g} < {alpha})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fixed = []
    for a in argv:
        fixed.extend(["--preset", "quick"] if a == "--quick" else [a])
    cfg, _ = parse_config(AgentRewardsConfig, fixed, prog="polab run agent-rewards", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    out = run(cfg)
    s = json.loads((out / "summary.json").read_text())
    for part, res in s["parts"].items():
        print(f"[{part}]")
        for a, v in res["arms"].items():
            print("  " + a + ": " + ", ".join(f"{k} {x['mean']:.3f}+-{x['ci95_half_width']:.3f}" for k, x in v.items()))
        for name, t in res["tests"].items():
            print(f"  {name}: {t['difference']:+.3f}+-{t['ci95_half_width']:.3f}, sign-flip p = {t.get('sign_flip_p', math.nan):.3g} -> "
                  f"{_verdict(t)}")
        if "random_policy_success" in res:
            print(f"  uniform random policy on the same levels: {res['random_policy_success']:.3f}")
    print(f"wall {s['wall_seconds']:.0f} s; run folder: {out}")
    return 0
