r"""``polab run policy-distillation``: per-region RL teachers distilled (DAgger) into one partially-observing student.

Claim tested (Wang, Sun, Erickson, Held, "One Policy to Dress Them All", RSS 2023): policies
trained by RL on separate ranges of a configuration (arm poses) can be combined by policy
distillation into *one* policy over a *partial* observation that works over the whole range,
better than any single range's policy, and (our added comparison, which the brief asks for) better
than one policy trained by RL on all configurations at an equal number of environment steps.

Proxy, stated as such: cloth simulation is out of reach, so the configuration is a CartPole's goal
position and pole length (:mod:`polab.scaled.control.cartpole_family`): the cart must balance the
pole at the goal. Regions split the goal range into ``regions`` equal intervals; each region gets
``train_configs_per_region`` training configurations (goal, half-length) per seed. Teachers see the
privileged full state :math:`(x,\dot x,\theta,\dot\theta,g,\ell)`; the student and the RL-on-all
baseline see the partial view (noisy positions now and one step ago, and the configuration), which
stands in for the partial point cloud.

Methods, per seed (everything paired across methods within a seed):

- ``expert-k``: PPO teacher of region ``k`` (``expert_steps`` environment steps each), evaluated on
  every held-out configuration; ``best-single-expert`` is the best of them *per seed* (chosen on the
  evaluation itself, so favoured);
- ``oracle-ensemble``: each held-out configuration played by its own region's teacher (needs the
  privileged state and the region label: the upper reference distillation aims at);
- ``dagger``: the student distilled by DAgger (:class:`polab.estimators.distillation.DAggerBuffer`,
  beta schedule ``dagger_schedule``) with the loss :func:`polab.estimators.distillation.policy_kl_loss`
  to the teacher of the episode's region (discrete actions: the KL form of the reconstructed
  squared action loss, see the core's docstring);
- ``bc``: the same student, data budget and loss, but every rollout by the teachers (beta = 1):
  behaviour cloning;
- ``rl-all``: one PPO policy on the partial view over all training configurations, with as many
  environment steps as teachers + distillation used together.

PPO is a thin loop (the family environment is not one of :func:`polab.scaled.control.ppo.train_ppo`'s)
that calls :func:`polab.scaled.control.ppo.rollout_advantages` (the core GAE) and
:func:`polab.scaled.control.ppo.ppo_minibatch_loss` (the core PPO clip loss) unchanged; the
sub-environments reset in the same step, so every transition is valid; truncation is treated as an
episode end, as in the control PPO.

Evaluation: ``heldout_configs`` configurations drawn once (seed ``EVAL_SEED``, the same for every
seed and method, disjoint from training draws), ``eval_episodes`` episodes each, greedy actions;
score = return / ``max_steps`` (in [0, 1]). Statistics: per method the mean over seeds with a 95%
Student-t interval; paired comparisons (dagger minus each of best-single-expert, rl-all, bc,
oracle-ensemble) by the paired t-test and the exact Wilcoxon signed-rank test (two-sided; with 5
seeds its smallest attainable p is 0.0625, so the t-test is the primary test).

Measured (``cpu`` preset, 5 seeds, 21 minutes wall on a loaded 2-core machine, ``nice -n 15``,
``OMP_NUM_THREADS=1``): held-out score DAgger 0.468 +- 0.061 (95% t), BC 0.022 +- 0.002, oracle
ensemble 0.523 +- 0.043, best single teacher 0.550 +- 0.072, rl-all 0.586 +- 0.026. DAgger beats
BC (+0.45, paired t p = 3e-5) but is *below* rl-all (-0.12 [-0.17, -0.07], p = 0.003) and the best
single teacher (-0.08, p = 0.02): on this proxy the teachers do not specialise (each is about as
good as the oracle ensemble over the whole range), so the paper's advantage of distillation over
one RL policy is not reproduced here. A stronger student fit (``--distill-epochs 30 --distill-lr 3e-3``)
gives DAgger 0.456 +- 0.061 (teachers and rl-all identical, same seeds): the gap is not optimiser underfitting.

Presets: ``cpu`` (default, 5 seeds, about 10-15 minutes on one core), ``quick`` (``--quick``, a
few seconds), ``gpu`` (paper-scale: 10 seeds, 5 regions, 300k steps per teacher, 20 DAgger
iterations, wider networks, 100 held-out configurations; ``--device cuda``; the environment steps
on the CPU in numpy, the networks on the device).

Example::

    polab run policy-distillation --out runs/policy-distillation
    polab run policy-distillation --quick --out /tmp/pd
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import nn
from tqdm import tqdm

from polab.estimators.distillation import BETA_SCHEDULES, DAggerBuffer, mix_actions, policy_kl_loss

from ..checkpoint import atomic_write_text
from ..config import config_to_dict, parse_config, provenance
from ..control.cartpole_family import CartPoleFamilyVectorEnv, PartialView, env_steps_per_second, sample_configs
from ..control.policies import MLPActorCritic
from ..control.ppo import ppo_minibatch_loss, rollout_advantages
from ..logger import MetricLogger
from ..run_folder import check_config_values, check_device, prepare_run_folder

__all__ = ["PolicyDistillationConfig", "PRESETS", "train_ppo_family", "distil", "evaluate", "run", "main", "EVAL_SEED"]

EVAL_SEED = 10_000_019
FULL_DIM, PARTIAL_DIM = 6, 6


@dataclass
class PolicyDistillationConfig:
    """Options of ``polab run policy-distillation`` (defaults: the ``cpu`` preset)."""

    seeds: int = field(default=5, metadata={"help": "independent seeds (teachers, students and baselines per seed)"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    regions: int = field(default=3, metadata={"help": "configuration regions = teachers (split of the goal range)"})
    goal_low: float = field(default=-1.5, metadata={"help": "lowest goal position (m)"})
    goal_high: float = field(default=1.5, metadata={"help": "highest goal position (m)"})
    length_low: float = field(default=0.3, metadata={"help": "shortest pole half-length (m)"})
    length_high: float = field(default=1.0, metadata={"help": "longest pole half-length (m)"})
    train_configs_per_region: int = field(default=8, metadata={"help": "training configurations per region and seed"})
    heldout_configs: int = field(default=30, metadata={"help": "held-out evaluation configurations (whole range)"})
    eval_episodes: int = field(default=4, metadata={"help": "evaluation episodes per held-out configuration"})
    max_steps: int = field(default=200, metadata={"help": "episode length cap"})
    goal_width: float = field(default=0.5, metadata={"help": "reward width w in exp(-|x - g| / w)"})
    obs_noise: float = field(default=0.002, metadata={"help": "std of the noise on the student's observed positions"})
    expert_steps: int = field(default=80_000, metadata={"help": "PPO environment steps per teacher"})
    rl_all_steps: int = field(default=0, metadata={"help": "PPO steps of rl-all (0: equal budget = teachers + DAgger steps)"})
    num_envs: int = field(default=8, metadata={"help": "parallel environments (PPO and DAgger rollouts)"})
    rollout_steps: int = field(default=128, metadata={"help": "PPO steps per environment per update"})
    epochs: int = field(default=4, metadata={"help": "PPO epochs per update"})
    minibatches: int = field(default=4, metadata={"help": "PPO minibatches per epoch"})
    learning_rate: float = field(default=2.5e-3, metadata={"help": "PPO Adam learning rate (linearly decayed)"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    lambda_: float = field(default=0.95, metadata={"help": "GAE lambda"})
    clip: float = field(default=0.2, metadata={"help": "PPO ratio clip"})
    entropy_coef: float = field(default=0.01, metadata={"help": "PPO entropy bonus"})
    value_coef: float = field(default=0.5, metadata={"help": "PPO value-loss weight"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "gradient-norm clip"})
    hidden: int = field(default=64, metadata={"help": "MLP width (teachers, student, rl-all)"})
    dagger_iterations: int = field(default=8, metadata={"help": "DAgger iterations (iteration 0 = teacher rollouts)"})
    dagger_steps: int = field(default=2048, metadata={"help": "environment steps per DAgger iteration"})
    dagger_schedule: str = field(default="exponential", metadata={"help": "beta schedule", "choices": BETA_SCHEDULES})
    dagger_p: float = field(default=0.5, metadata={"help": "beta schedule parameter (beta_i = p^i for exponential)"})
    distill_epochs: int = field(default=10, metadata={"help": "passes over the aggregated data per DAgger iteration"})
    distill_batch: int = field(default=256, metadata={"help": "distillation minibatch size"})
    distill_lr: float = field(default=1e-3, metadata={"help": "distillation Adam learning rate"})
    temperature: float = field(default=0.05, metadata={"help": "teacher softmax temperature in the KL loss (small: near-greedy labels, as Rusu et al.'s 0.01; the students act greedily)"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto (networks; environments step in numpy)"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})
    out: str = field(default="runs/policy-distillation", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})


PRESETS = {
    "cpu": {},
    "quick": {"seeds": 2, "regions": 2, "train_configs_per_region": 2, "heldout_configs": 4, "eval_episodes": 2,
              "max_steps": 50, "expert_steps": 1024, "num_envs": 8, "rollout_steps": 32, "dagger_iterations": 2,
              "dagger_steps": 256, "distill_epochs": 2},
    "gpu": {"seeds": 10, "regions": 5, "train_configs_per_region": 20, "heldout_configs": 100, "eval_episodes": 10,
            "expert_steps": 300_000, "num_envs": 64, "learning_rate": 1e-3, "hidden": 256, "dagger_iterations": 20,
            "dagger_steps": 8192, "distill_epochs": 20, "distill_batch": 1024, "device": "cuda"},
}


def _validate(cfg: PolicyDistillationConfig) -> None:
    check_config_values(cfg, positive_ints=("seeds", "regions", "train_configs_per_region", "heldout_configs", "eval_episodes",
                                            "max_steps", "expert_steps", "num_envs", "rollout_steps", "epochs", "minibatches",
                                            "hidden", "dagger_iterations", "dagger_steps", "distill_epochs", "distill_batch"),
                        nonneg_ints=("seed", "rl_all_steps"),
                        positive_floats=("learning_rate", "goal_width", "distill_lr", "temperature", "length_low"),
                        nonneg_floats=("obs_noise", "entropy_coef", "value_coef", "max_grad_norm", "clip"))
    if cfg.dagger_schedule not in BETA_SCHEDULES:
        raise ValueError(f"--dagger-schedule must be one of {BETA_SCHEDULES}; got {cfg.dagger_schedule!r}.")
    if not 0.0 <= cfg.dagger_p <= 1.0:
        raise ValueError(f"--dagger-p must be in [0, 1]; got {cfg.dagger_p}.")
    for name in ("gamma", "lambda_"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"--{name.rstrip('_').replace('_', '-')} must be in [0, 1]; got {getattr(cfg, name)}.")
    if not cfg.goal_low < cfg.goal_high or max(abs(cfg.goal_low), abs(cfg.goal_high)) >= 2.4:
        raise ValueError(f"--goal-low < --goal-high inside the track (|g| < 2.4) needed; got {cfg.goal_low}, {cfg.goal_high}.")
    if not cfg.length_low <= cfg.length_high:
        raise ValueError(f"--length-low must be <= --length-high; got {cfg.length_low}, {cfg.length_high}.")
    if cfg.num_envs * cfg.rollout_steps < cfg.minibatches:
        raise ValueError("--num-envs * --rollout-steps must be >= --minibatches.")
    check_device(cfg.device)


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def region_edges(cfg: PolicyDistillationConfig) -> np.ndarray:
    """``regions + 1`` edges of equal goal intervals."""
    return np.linspace(cfg.goal_low, cfg.goal_high, cfg.regions + 1)


def region_of(goals: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the region holding each goal (the last edge belongs to the last region)."""
    return np.clip(np.searchsorted(edges, goals, side="right") - 1, 0, len(edges) - 2)


# ---------------------------------------------------------------------------------------------
# PPO on the family (thin loop over the control layer's public functions)
# ---------------------------------------------------------------------------------------------
def train_ppo_family(configs: np.ndarray, view: str, cfg: PolicyDistillationConfig, seed: int, total_steps: int, *,
                     progress: bool = False, on_update=None, desc: str = "ppo") -> tuple[nn.Module, list[dict]]:
    """PPO on ``configs`` seeing the ``full`` (teacher) or ``partial`` (student) view; returns (net on CPU, rows).

    Rows: ``update``, ``steps``, ``mean_return`` (episodes ended in that update's rollout, NaN if none),
    ``clip_fraction``, ``ppo_kl``.
    """
    dev = _device(cfg.device)
    torch.manual_seed(seed)  # network initialisation: the one seeding block of this loop
    net = MLPActorCritic(FULL_DIM if view == "full" else PARTIAL_DIM, 2, hidden=cfg.hidden).to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed + 1)
    perm_gen = torch.Generator().manual_seed(seed + 2)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, eps=1e-5)
    N, T = cfg.num_envs, cfg.rollout_steps
    env = CartPoleFamilyVectorEnv(configs, N, max_steps=cfg.max_steps, goal_width=cfg.goal_width, seed=seed * 1_000_003)
    env.reset()
    pv = PartialView(cfg.obs_noise, np.random.default_rng(seed + 3))
    obs = env.full_observation() if view == "full" else pv.reset(env)
    ep_ret = np.zeros(N)
    updates = max(1, total_steps // (N * T))
    rows = []
    for update in tqdm(range(updates), desc=desc, disable=not progress, leave=False):
        for g in opt.param_groups:
            g["lr"] = cfg.learning_rate * (1.0 - update / updates)
        xs = torch.zeros((T, N, obs.shape[1]), device=dev)
        acts = torch.zeros((T, N), dtype=torch.long, device=dev)
        logps, vals, rews, dones = (torch.zeros(T, N, device=dev) for _ in range(4))
        ended = []
        for t in range(T):
            x = torch.as_tensor(obs, device=dev)
            with torch.no_grad():
                dist = torch.distributions.Categorical(logits=net.logits(x))
                a = torch.multinomial(dist.probs, 1, generator=gen).squeeze(1)
                xs[t], acts[t], logps[t], vals[t] = x, a, dist.log_prob(a), net.value(x)
            _, r, te, tr, _ = env.step(a.cpu().numpy())
            done = te | tr
            rews[t] = torch.as_tensor(r, dtype=torch.float32, device=dev)
            dones[t] = torch.as_tensor(done, dtype=torch.float32, device=dev)
            ep_ret += r
            ended.extend(ep_ret[done].tolist())
            ep_ret[done] = 0.0
            obs = env.full_observation() if view == "full" else pv.update(env, done)
        with torch.no_grad():
            next_v = net.value(torch.as_tensor(obs, device=dev))
        adv, ret = rollout_advantages(rews, vals, dones, torch.ones(T, N, device=dev), next_v, gamma=cfg.gamma,
                                      lambda_=cfg.lambda_)
        bx, ba, blp, badv, bret = (z.reshape((T * N,) + tuple(z.shape[2:])) for z in (xs, acts, logps, adv, ret))
        mb = max(1, (T * N) // cfg.minibatches)
        cfs, kls = [], []
        for _ in range(cfg.epochs):
            perm = torch.randperm(T * N, generator=perm_gen).to(dev)
            for s in range(0, T * N, mb):
                j = perm[s:s + mb]
                loss, pl = ppo_minibatch_loss(net, bx[j], ba[j], blp[j], badv[j], bret[j], clip=cfg.clip,
                                              value_coef=cfg.value_coef, entropy_coef=cfg.entropy_coef)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
                opt.step()
                cfs.append(float(pl.clip_fraction))
                kls.append(float(pl.ppo_kl))
        row = {"update": update, "steps": (update + 1) * N * T,
               "mean_return": float(np.mean(ended)) if ended else math.nan,
               "clip_fraction": float(np.mean(cfs)), "ppo_kl": float(np.mean(kls))}
        rows.append(row)
        if on_update is not None:
            on_update(row)
    net.eval()
    return net.cpu(), rows


# ---------------------------------------------------------------------------------------------
# DAgger distillation
# ---------------------------------------------------------------------------------------------
def _teacher_logits(teachers: list[nn.Module], full: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Logits of the teacher of each row's region, [N, 2]."""
    out = torch.zeros(full.shape[0], 2, device=full.device)
    for k, net in enumerate(teachers):
        rows = region == k
        if bool(rows.any()):
            out[rows] = net.logits(full[rows])
    return out


def distil(teachers: list[nn.Module], configs: np.ndarray, edges: np.ndarray, cfg: PolicyDistillationConfig, seed: int, *,
           schedule: str, p: float, progress: bool = False, on_iteration=None) -> tuple[nn.Module, list[dict]]:
    """DAgger (or, with ``schedule='constant', p=1``, behaviour cloning) into one partial-view student.

    Each iteration rolls out ``dagger_steps`` environment steps of the mixture (per step the region
    teacher's greedy action with probability beta, else the student's greedy action), labels every
    student observation with the region teacher's logits on the full state, aggregates them
    (:class:`~polab.estimators.distillation.DAggerBuffer`) and trains the student (warm start)
    for ``distill_epochs`` passes of :func:`~polab.estimators.distillation.policy_kl_loss`.
    Rows: ``iteration``, ``beta``, ``env_steps``, ``dataset``, ``loss``, ``agreement`` (student vs
    teacher greedy action on the iteration's fresh data, before refitting), ``teacher_fraction``.
    """
    dev = _device(cfg.device)
    torch.manual_seed(seed + 11)  # student initialisation
    student = MLPActorCritic(PARTIAL_DIM, 2, hidden=cfg.hidden).to(dev)
    teachers = [t.to(dev) for t in teachers]
    opt = torch.optim.Adam(student.actor.parameters(), lr=cfg.distill_lr)
    gen = torch.Generator(device=dev).manual_seed(seed + 12)
    perm_gen = torch.Generator().manual_seed(seed + 13)
    N = cfg.num_envs
    env = CartPoleFamilyVectorEnv(configs, N, max_steps=cfg.max_steps, goal_width=cfg.goal_width, seed=seed * 1_000_003 + 7)
    env.reset()
    pv = PartialView(cfg.obs_noise, np.random.default_rng(seed + 14))
    part = pv.reset(env)
    buf = DAggerBuffer(schedule=schedule, p=p, iterations=cfg.dagger_iterations)
    rows = []
    steps_per_iter = max(1, cfg.dagger_steps // N)
    for it in tqdm(range(cfg.dagger_iterations), desc=f"distil {schedule}", disable=not progress, leave=False):
        beta = buf.beta
        obs_chunk, lab_chunk, agree, from_t = [], [], [], []
        for _ in range(steps_per_iter):
            full = torch.as_tensor(env.full_observation(), device=dev)
            x = torch.as_tensor(part, device=dev)
            region = torch.as_tensor(region_of(env.goal, edges), device=dev)
            with torch.no_grad():
                tl = _teacher_logits(teachers, full, region)
                sa = student.logits(x).argmax(1)
            a, ft = mix_actions(sa, tl.argmax(1), beta=beta, generator=gen)
            obs_chunk.append(x)
            lab_chunk.append(tl)
            agree.append((sa == tl.argmax(1)).float().mean().item())
            from_t.append(ft.float().mean().item())
            _, _, te, tr, _ = env.step(a.cpu().numpy())
            part = pv.update(env, te | tr)
        buf.add(torch.cat(obs_chunk), torch.cat(lab_chunk))
        O, Y, _ = buf.dataset()
        losses = []
        for _ in range(cfg.distill_epochs):
            perm = torch.randperm(O.shape[0], generator=perm_gen).to(dev)
            for s in range(0, O.shape[0], cfg.distill_batch):
                j = perm[s:s + cfg.distill_batch]
                res = policy_kl_loss(student.logits(O[j]), Y[j], temperature=cfg.temperature)
                opt.zero_grad()
                res.loss.backward()
                opt.step()
                losses.append(res.loss.item())
        row = {"iteration": it, "beta": beta, "env_steps": (it + 1) * steps_per_iter * N, "dataset": len(buf),
               "loss": float(np.mean(losses[-max(1, len(losses) // cfg.distill_epochs):])),
               "agreement": float(np.mean(agree)), "teacher_fraction": float(np.mean(from_t))}
        rows.append(row)
        if on_iteration is not None:
            on_iteration(row)
        buf.next_iteration()
    student.eval()
    return student.cpu(), rows


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(act, configs: np.ndarray, cfg: PolicyDistillationConfig, *, seed: int = EVAL_SEED) -> np.ndarray:
    """Mean normalised return (return / max_steps) of each configuration over ``eval_episodes`` greedy episodes.

    ``act(full_obs [N, 6], partial_obs [N, 6], goals [N]) -> actions [N]`` (numpy). Returns shape [C].
    """
    C, E = len(configs), cfg.eval_episodes
    env = CartPoleFamilyVectorEnv(configs, C * E, max_steps=cfg.max_steps, goal_width=cfg.goal_width, seed=seed,
                                  assignment=np.repeat(np.arange(C), E))
    env.reset()
    pv = PartialView(cfg.obs_noise, np.random.default_rng(seed + 1))
    part = pv.reset(env)
    ret, alive = np.zeros(C * E), np.ones(C * E, dtype=bool)
    for _ in range(cfg.max_steps):
        a = act(env.full_observation(), part, env.goal)
        _, r, te, tr, _ = env.step(a)
        ret += np.where(alive, r, 0.0)
        done = te | tr
        alive &= ~done
        if not alive.any():
            break
        part = pv.update(env, done)
    return (ret / cfg.max_steps).reshape(C, E).mean(axis=1)


def greedy_full(net: nn.Module):
    return lambda full, part, goals: net.logits(torch.as_tensor(full)).argmax(1).numpy()


def greedy_partial(net: nn.Module):
    return lambda full, part, goals: net.logits(torch.as_tensor(part)).argmax(1).numpy()


def oracle(teachers: list[nn.Module], edges: np.ndarray):
    def act(full, part, goals):
        return _teacher_logits(teachers, torch.as_tensor(full), torch.as_tensor(region_of(goals, edges))).argmax(1).numpy()
    return act


# ---------------------------------------------------------------------------------------------
# statistics and figures
# ---------------------------------------------------------------------------------------------
def mean_ci(x) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (0 for one value)."""
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def paired(a, b) -> dict:
    """Paired difference a - b over seeds: mean, 95% t interval, paired t-test and exact Wilcoxon (two-sided)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    m, h = mean_ci(d)
    res = {"difference": m, "ci95_low": m - h, "ci95_high": m + h, "n": int(d.size)}
    if d.size >= 2:
        if np.all(d == d[0]):
            res.update(t=math.copysign(math.inf, d[0]) if d[0] else 0.0, t_p=0.0 if d[0] else 1.0)
        else:
            t = stats.ttest_rel(a, b)
            res.update(t=float(t.statistic), t_p=float(t.pvalue))
        if np.any(d != 0):
            w = stats.wilcoxon(d, alternative="two-sided", method="exact" if d.size <= 25 else "auto")
            res.update(wilcoxon_p=float(w.pvalue))
        else:
            res.update(wilcoxon_p=1.0)
    return res


def _figures(out: Path, cfg: PolicyDistillationConfig, per_seed: dict, per_config: dict, heldout: np.ndarray,
             edges: np.ndarray, dagger_curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["oracle-ensemble", "dagger", "bc", "rl-all", "best-single-expert"] + [f"expert-{k}" for k in range(cfg.regions)]
    labels = {"oracle-ensemble": "oracle: own region's teacher\n(full state)", "dagger": "DAgger student\n(partial view)",
              "bc": "BC student\n(partial view)", "rl-all": "PPO on all configs\n(partial view, equal steps)",
              "best-single-expert": "best single teacher\n(per seed)"}
    fig, ax = plt.subplots(figsize=(1.3 * len(methods) + 2, 4.4))
    for i, m in enumerate(methods):
        v = per_seed[m]
        mu, h = mean_ci(v)
        ax.bar(i, mu, 0.7, yerr=h, capsize=3, alpha=0.75, color="tab:blue" if m == "dagger" else "0.6")
        ax.scatter(np.full(len(v), i), v, s=10, color="k", zorder=3)
    ax.set_xticks(range(len(methods)), [labels.get(m, f"teacher {m[-1]}\n(full state)") for m in methods], fontsize=7)
    ax.set_ylabel("held-out score (return / max steps)")
    ax.set_ylim(0, 1.0)
    ax.set_title(f"CartPole goal/length family, {cfg.regions} regions, {cfg.heldout_configs} held-out configs x "
                 f"{cfg.eval_episodes} episodes; {cfg.seeds} seeds: mean, 95% t interval, dots = seeds", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figures" / "heldout_scores.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 4))
    order = np.argsort(heldout[:, 0])
    g = heldout[order, 0]
    for m, style in (("oracle-ensemble", "k--"), ("dagger", "C0-o"), ("rl-all", "C1-s"), ("bc", "C2-^")):
        v = np.asarray(per_config[m])[:, order]
        mu = v.mean(0)
        h = stats.t.ppf(0.975, max(v.shape[0] - 1, 1)) * v.std(0, ddof=1) / np.sqrt(v.shape[0]) if v.shape[0] > 1 else 0 * mu
        ax.plot(g, mu, style, ms=3, label=m)
        ax.fill_between(g, mu - h, mu + h, alpha=0.15, color=style[:2] if style[0] == "C" else "k")
    for k in range(cfg.regions):
        v = np.asarray(per_config[f"expert-{k}"])[:, order].mean(0)
        ax.plot(g, v, ":", lw=1, label=f"teacher {k} alone")
    for e in edges:
        ax.axvline(e, color="0.8", lw=0.8)
    ax.set_xlabel("held-out goal position g (m); grey lines: region edges")
    ax.set_ylabel("score (return / max steps)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Per held-out configuration, mean over {cfg.seeds} seeds (bands: 95% t)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "figures" / "per_config.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, curves in dagger_curves.items():
        arr = np.asarray(curves)
        mu = arr.mean(0)
        ax.plot(np.arange(1, arr.shape[1] + 1), mu, "o-", label=f"{name}: agreement with the region teacher")
    ax.set_xlabel("DAgger iteration (data collected by the previous student)")
    ax.set_ylabel("greedy-action agreement on fresh data")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"schedule {cfg.dagger_schedule}, p={cfg.dagger_p}; mean over {cfg.seeds} seeds", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figures" / "dagger_agreement.png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------
def run(cfg: PolicyDistillationConfig) -> Path:
    """Run the experiment (options checked first); returns the run folder."""
    _validate(cfg)
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite):
        return _run(cfg)


def _run(cfg: PolicyDistillationConfig) -> Path:
    if cfg.device == "cpu":
        torch.set_num_threads(1)
    out = Path(cfg.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    edges = region_edges(cfg)
    heldout = sample_configs(cfg.heldout_configs, goal_range=(cfg.goal_low, cfg.goal_high),
                             length_range=(cfg.length_low, cfg.length_high), rng=np.random.default_rng(EVAL_SEED))
    distil_steps = cfg.dagger_iterations * max(1, cfg.dagger_steps // cfg.num_envs) * cfg.num_envs
    rl_all_steps = cfg.rl_all_steps or cfg.regions * cfg.expert_steps + distil_steps
    config = config_to_dict(cfg)
    config.update(provenance=provenance(), region_edges=edges.tolist(), heldout_configs_used=heldout.tolist(),
                  rl_all_steps_used=rl_all_steps, distillation_env_steps=distil_steps)
    logger = MetricLogger(out, config=config, backends=("csv",))
    t_start = time.perf_counter()
    sps = env_steps_per_second()
    methods = ["oracle-ensemble", "dagger", "bc", "rl-all", "best-single-expert"] + [f"expert-{k}" for k in range(cfg.regions)]
    per_seed = {m: [] for m in methods}
    per_config = {m: [] for m in methods}
    dagger_curves = {"dagger": [], "bc": []}
    times = {}
    bar = tqdm(range(cfg.seeds), desc="policy-distillation", disable=not cfg.progress)
    for s in bar:
        seed = cfg.seed + s
        rng = np.random.default_rng(seed)
        region_cfgs = [sample_configs(cfg.train_configs_per_region, goal_range=(edges[k], edges[k + 1]),
                                      length_range=(cfg.length_low, cfg.length_high), rng=rng) for k in range(cfg.regions)]
        teachers = []
        t0 = time.perf_counter()
        for k in range(cfg.regions):
            bar.set_postfix(seed=seed, stage=f"teacher {k}")

            def log_t(row, k=k, seed=seed):
                logger.log(row["steps"], {"kind": "train", "method": f"expert-{k}", "seed": seed, "mean_return": row["mean_return"],
                                          "clip_fraction": row["clip_fraction"], "ppo_kl": row["ppo_kl"]})

            net, _ = train_ppo_family(region_cfgs[k], "full", cfg, seed * 100 + k, cfg.expert_steps, progress=cfg.progress,
                                      on_update=log_t, desc=f"teacher {k} seed {seed}")
            teachers.append(net)
        times.setdefault("teachers", []).append(time.perf_counter() - t0)
        all_cfgs = np.concatenate(region_cfgs)
        students = {}
        for name, (sched, p) in {"dagger": (cfg.dagger_schedule, cfg.dagger_p), "bc": ("constant", 1.0)}.items():
            bar.set_postfix(seed=seed, stage=name)
            t0 = time.perf_counter()

            def log_d(row, name=name, seed=seed):
                logger.log(row["env_steps"], {"kind": "distill", "method": name, "seed": seed,
                                              **{k: row[k] for k in ("iteration", "beta", "dataset", "loss", "agreement",
                                                                     "teacher_fraction")}})

            students[name], rows = distil(teachers, all_cfgs, edges, cfg, seed, schedule=sched, p=p, progress=cfg.progress,
                                          on_iteration=log_d)
            dagger_curves[name].append([r["agreement"] for r in rows])
            times.setdefault(name, []).append(time.perf_counter() - t0)
        bar.set_postfix(seed=seed, stage="rl-all")
        t0 = time.perf_counter()

        def log_r(row, seed=seed):
            logger.log(row["steps"], {"kind": "train", "method": "rl-all", "seed": seed, "mean_return": row["mean_return"],
                                      "clip_fraction": row["clip_fraction"], "ppo_kl": row["ppo_kl"]})

        rl_all, _ = train_ppo_family(all_cfgs, "partial", cfg, seed * 100 + 99, rl_all_steps, progress=cfg.progress,
                                     on_update=log_r, desc=f"rl-all seed {seed}")
        times.setdefault("rl-all", []).append(time.perf_counter() - t0)
        scores = {"oracle-ensemble": evaluate(oracle(teachers, edges), heldout, cfg),
                  "dagger": evaluate(greedy_partial(students["dagger"]), heldout, cfg),
                  "bc": evaluate(greedy_partial(students["bc"]), heldout, cfg),
                  "rl-all": evaluate(greedy_partial(rl_all), heldout, cfg)}
        for k, t in enumerate(teachers):
            scores[f"expert-{k}"] = evaluate(greedy_full(t), heldout, cfg)
        best = max(range(cfg.regions), key=lambda k: scores[f"expert-{k}"].mean())
        scores["best-single-expert"] = scores[f"expert-{best}"]
        for m in methods:
            per_seed[m].append(float(scores[m].mean()))
            per_config[m].append(scores[m].tolist())
            logger.log(0, {"kind": "eval", "method": m, "seed": seed, "heldout_score": float(scores[m].mean()),
                           **({"best_expert_index": best} if m == "best-single-expert" else {})})
    logger.close()
    summary = {
        "claim": "one DAgger-distilled partial-view student covers all configuration regions: better than any single "
                 "teacher, close to each region's own teacher, compared with RL on all configurations at equal steps",
        "proxy": "CartPole goal-position/pole-length family (stands in for arm pose); partial view = noisy positions of "
                 "two steps + visible configuration (stands in for the partial point cloud)",
        "metric": "mean held-out score, return / max_steps, greedy actions",
        "seeds": cfg.seeds, "rl_all_steps": rl_all_steps, "teacher_steps_total": cfg.regions * cfg.expert_steps,
        "distillation_env_steps": distil_steps, "env_steps_per_second": sps,
        "seconds_mean": {k: float(np.mean(v)) for k, v in times.items()},
        "scores": {m: dict(zip(("mean", "ci95_half_width"), mean_ci(v)), per_seed=v) for m, v in per_seed.items()},
        "tests": {f"dagger - {b}": paired(per_seed["dagger"], per_seed[b])
                  for b in ("best-single-expert", "rl-all", "bc", "oracle-ensemble")},
    }
    summary["wall_seconds"] = time.perf_counter() - t_start
    _figures(out, cfg, per_seed, per_config, heldout, edges, dagger_curves)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fixed = []  # `--quick` is `--preset quick`
    for a in argv:
        fixed.extend(["--preset", "quick"] if a == "--quick" else [a])
    cfg, _ = parse_config(PolicyDistillationConfig, fixed, prog="polab run policy-distillation", presets=PRESETS,
                          default_preset="cpu", description=__doc__.split("\n\n")[0])
    out = run(cfg)
    s = json.loads((out / "summary.json").read_text())
    for m, v in s["scores"].items():
        print(f"{m:20s} {v['mean']:.3f} +- {v['ci95_half_width']:.3f}")
    for name, t in s["tests"].items():
        print(f"{name:32s} {t['difference']:+.3f} [{t['ci95_low']:+.3f}, {t['ci95_high']:+.3f}]  paired t p = "
              f"{t.get('t_p', float('nan')):.3g}, Wilcoxon exact p = {t.get('wilcoxon_p', float('nan')):.3g}")
    print(f"env steps/s (random actions, 16 envs): {s['env_steps_per_second']:.0f}")
    print(f"run folder: {out}")
    return 0
