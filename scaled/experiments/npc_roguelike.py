r"""``polab run npc-roguelike``: entity-attention vs flat-MLP NPC policies under design changes.

Claim tested (Sestini, Kuhnle, Bagdanov 2020, arXiv 2012.03532): a policy network over
*entities* (embeddings of categorical attributes combined by self-attention, permutation
invariant) adapts to changed design parameters, without retraining, better than a network over a
fixed-layout observation.

Set-up: :mod:`polab.scaled.envs.roguelike` (polab's own procedural roguelike; the paper's Unity
game is not available, so this is a proxy for its "DeepCrawl" tasks). Both networks
(:mod:`polab.scaled.control.entity_policies`: ``entity`` = dense attribute embedding + masked
self-attention + masked pooling; ``flat`` = the same padded entity array one-hot encoded slot by
slot into an MLP) are trained by PPO on the ``train`` design only, then evaluated, frozen, on the
training design and on four held-out designs (:data:`polab.scaled.envs.roguelike.DESIGNS`: more
enemies, stronger enemies, a larger map, all three). Every architecture and seed is evaluated on
the *same* levels (level ``k`` of a design is ``reset(seed=EVAL_SEED + k)``), with actions
sampled from the policy.

PPO is a thin loop here (the observation is an entity array, which
:func:`polab.scaled.control.ppo.train_ppo` does not take); it calls the control layer's public
functions :func:`polab.scaled.control.ppo.rollout_advantages` (the core GAE,
:func:`polab.estimators.gae.generalized_advantage_estimation`) and
:func:`polab.scaled.control.ppo.ppo_minibatch_loss` (the core
:func:`polab.estimators.policy_loss.ppo_clip_loss` and value loss), unchanged. Sub-environments
reset in the same step (:class:`polab.scaled.envs.roguelike.RoguelikeVectorEnv`), so every
transition is used; truncation at the turn limit is treated as an episode end (no bootstrap), as
in the control PPO.

Statistics: per design, the mean success rate over seeds with a 95% Student-t interval. The
primary outcome is each seed's mean success over the held-out designs; entity vs flat is tested
by Welch's t-test and by the exact Mann-Whitney U test (two-sided), and the same per design.

Run folder: ``config.json``, ``metrics.csv`` (``kind`` = ``train`` rows per PPO update, ``eval``
rows per architecture, seed and design; names as string columns), ``summary.json``,
``figures/generalisation.png``, ``figures/training.png``.

Presets (``--preset``): ``cpu`` (default; 5 seeds per architecture, about 10-15 minutes on one
core), ``quick`` (``--quick``: a smoke run of a few seconds), ``gpu`` (paper-scale: longer
training, wider networks, two attention blocks, 10 seeds, 1000 evaluation levels per design;
``--device cuda``).

Measured (``cpu`` preset, commit df82eac, 333 s of CPU on one core; success rate, mean over 5
seeds +- 95% t half-width, 200 levels per design): held-out mean entity 0.821 +- 0.033 vs flat
0.785 +- 0.011 (difference +0.036, Welch p = 0.034, exact Mann-Whitney p = 0.008: all five entity
seeds above all five flat seeds); per design more-enemies +0.050, big-map +0.063, combined +0.045,
strong-enemies -0.012, train +0.018 (not significant). The drop from the training design
(train minus held-out) is 0.090 vs 0.108, a difference that is not significant (Welch p = 0.15).
``flat-id`` (``--architectures flat-id``, same levels): held-out mean 0.792 +- 0.012.

Example::

    polab run npc-roguelike --out runs/npc-roguelike
    polab run npc-roguelike --quick --out /tmp/npc
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

from ..checkpoint import atomic_write_text
from ..config import config_to_dict, parse_config, provenance
from ..control.entity_policies import ARCHITECTURES, FixedOutputs, make_entity_actor_critic, pack_observation
from ..control.ppo import ppo_minibatch_loss, rollout_advantages
from ..envs.roguelike import ACTIONS, ATTRIBUTE_CARDINALITIES, DESIGNS, RoguelikeEnv, RoguelikeVectorEnv
from ..logger import MetricLogger, read_metrics
from ..run_folder import check_config_values, check_device, prepare_run_folder

__all__ = ["NPCRoguelikeConfig", "PRESETS", "train_policy", "evaluate_policy", "success_statistics", "plot_run", "run", "main", "EVAL_SEED"]

#: Level ``k`` of an evaluation design is ``reset(seed=EVAL_SEED + k)`` (disjoint from training seeds).
EVAL_SEED = 10_000_000
HELD_OUT = ("more-enemies", "strong-enemies", "big-map", "combined")


@dataclass
class NPCRoguelikeConfig:
    """Options of ``polab run npc-roguelike`` (defaults: the ``cpu`` preset)."""

    architectures: tuple[str, ...] = field(default=("entity", "flat"), metadata={
        "help": "networks to compare (flat-id: the flat MLP with one joint code per (type, power) pair)", "choices": ARCHITECTURES})
    seeds: int = field(default=5, metadata={"help": "training seeds per architecture"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    total_steps: int = field(default=100_000, metadata={"help": "environment steps of PPO training per run"})
    num_envs: int = field(default=16, metadata={"help": "parallel environments"})
    rollout_steps: int = field(default=64, metadata={"help": "steps per environment per PPO update"})
    epochs: int = field(default=4, metadata={"help": "PPO epochs per update"})
    minibatches: int = field(default=4, metadata={"help": "minibatches per epoch"})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (linearly decayed to 0)"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    lambda_: float = field(default=0.95, metadata={"help": "GAE lambda"})
    clip: float = field(default=0.2, metadata={"help": "PPO ratio clip"})
    entropy_coef: float = field(default=0.01, metadata={"help": "entropy bonus"})
    value_coef: float = field(default=0.5, metadata={"help": "value-loss weight"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "gradient-norm clip"})
    dim: int = field(default=32, metadata={"help": "entity network: embedding width"})
    heads: int = field(default=2, metadata={"help": "entity network: attention heads (the paper's 2)"})
    blocks: int = field(default=1, metadata={"help": "entity network: Transformer blocks"})
    hidden: int = field(default=64, metadata={"help": "width of the MLP layers (both networks)"})
    max_entities: int = field(default=16, metadata={"help": "padded entity slots (fixed for all designs)"})
    entity_order: str = field(default="sorted", metadata={"help": "row order of the entity array", "choices": ("sorted", "shuffled")})
    eval_designs: tuple[str, ...] = field(default=("train",) + HELD_OUT,
                                          metadata={"help": "designs to evaluate on", "choices": tuple(DESIGNS)})
    eval_episodes: int = field(default=200, metadata={"help": "evaluation levels per design"})
    throughput_steps: int = field(default=500, metadata={"help": "vector steps (16 envs, random actions) timed for env steps/s"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})
    out: str = field(default="runs/npc-roguelike", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})


PRESETS = {
    "cpu": {},
    "quick": {"seeds": 2, "total_steps": 512, "num_envs": 8, "rollout_steps": 32, "epochs": 2, "eval_episodes": 8,
              "eval_designs": ["train", "more-enemies"], "throughput_steps": 20, "progress": False},
    "gpu": {"seeds": 10, "total_steps": 2_000_000, "num_envs": 64, "rollout_steps": 128, "learning_rate": 3e-4,
            "dim": 64, "blocks": 2, "hidden": 256, "eval_episodes": 1000, "device": "cuda"},
}


# ---------------------------------------------------------------------------------------------
# training and evaluation
# ---------------------------------------------------------------------------------------------
def _validate(cfg: NPCRoguelikeConfig) -> None:
    check_config_values(cfg, positive_ints=("seeds", "total_steps", "num_envs", "rollout_steps", "epochs", "minibatches", "dim",
                                            "heads", "blocks", "hidden", "max_entities", "eval_episodes", "throughput_steps"),
                        nonneg_ints=("seed",), positive_floats=("learning_rate", "clip", "max_grad_norm"),
                        nonneg_floats=("entropy_coef", "value_coef"), nonempty=("architectures", "eval_designs"))
    for a in cfg.architectures:
        if a not in ARCHITECTURES:
            raise ValueError(f"--architectures: unknown architecture {a!r}; choose from {ARCHITECTURES}.")
    for d in cfg.eval_designs:
        if d not in DESIGNS:
            raise ValueError(f"--eval-designs: unknown design {d!r}; choose from {list(DESIGNS)}.")
    for name in ("gamma", "lambda_"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1]; got {v!r}.")
    if cfg.dim % cfg.heads:
        raise ValueError(f"--dim ({cfg.dim}) must be divisible by --heads ({cfg.heads}).")
    need = max(DESIGNS[d].max_entities_needed for d in set(cfg.eval_designs) | {"train"})
    if cfg.max_entities < need:
        raise ValueError(f"--max-entities must be >= {need} (the most entities the chosen designs place); got {cfg.max_entities}.")
    if cfg.entity_order not in ("sorted", "shuffled"):
        raise ValueError(f"--entity-order must be 'sorted' or 'shuffled'; got {cfg.entity_order!r}.")
    if cfg.num_envs * cfg.rollout_steps < cfg.minibatches:
        raise ValueError("--num-envs * --rollout-steps must be >= --minibatches.")
    check_device(cfg.device)


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def make_network(arch: str, cfg: NPCRoguelikeConfig) -> nn.Module:
    """The ``arch`` network with the widths of ``cfg``."""
    return make_entity_actor_critic(arch, ATTRIBUTE_CARDINALITIES, len(ACTIONS), cfg.max_entities, dim=cfg.dim, heads=cfg.heads,
                                    blocks=cfg.blocks, hidden=cfg.hidden)


def train_policy(arch: str, cfg: NPCRoguelikeConfig, seed: int, *, progress: bool = False, on_update=None) -> tuple[nn.Module, list[dict]]:
    """PPO on the ``train`` design; returns (network on CPU, in eval mode; per-update statistics).

    Each statistics row: ``update``, ``steps``, ``success_rate`` and ``mean_return`` of the episodes
    that ended during that update's rollout (NaN if none), ``episodes``, and the minibatch means of
    the core loss's ``clip_fraction`` and ``ppo_kl``. ``on_update(row)`` is called after each update.
    """
    dev = _device(cfg.device)
    torch.manual_seed(seed)  # network initialisation: the one seeding block of this loop
    net = make_network(arch, cfg).to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed + 1)  # action sampling
    perm_gen = torch.Generator().manual_seed(seed + 2)  # minibatch shuffling
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, eps=1e-5)
    N, T = cfg.num_envs, cfg.rollout_steps
    env = RoguelikeVectorEnv(DESIGNS["train"], N, max_entities=cfg.max_entities, entity_order=cfg.entity_order)
    # first training levels: seeds seed * 1_000_003 + i (i < num_envs), never EVAL_SEED + k for seeds 0..9
    obs, _ = env.reset(seed=seed * 1_000_003)
    x = pack_observation(obs, device=dev)
    updates = max(1, cfg.total_steps // (N * T))
    rows = []
    for update in tqdm(range(updates), desc=f"ppo {arch} seed {seed}", disable=not progress, leave=False):
        for g in opt.param_groups:
            g["lr"] = cfg.learning_rate * (1.0 - update / updates)
        xs = torch.zeros((T, N) + tuple(x.shape[1:]), dtype=torch.long, device=dev)
        acts = torch.zeros((T, N), dtype=torch.long, device=dev)
        logps, vals, rews, dones = (torch.zeros(T, N, device=dev) for _ in range(4))
        ended_success, ended_return = [], []
        for t in range(T):
            with torch.no_grad():
                logits, v = net(x)
                dist = torch.distributions.Categorical(logits=logits)
                a = torch.multinomial(dist.probs, 1, generator=gen).squeeze(1)
                xs[t], acts[t], logps[t], vals[t] = x, a, dist.log_prob(a), v
            obs, r, te, tr, info = env.step(a.cpu().numpy())
            done = te | tr
            rews[t] = torch.as_tensor(r, dtype=torch.float32, device=dev)
            dones[t] = torch.as_tensor(done, dtype=torch.float32, device=dev)
            ended_success.extend(info["success"][done].tolist())
            ended_return.extend(info["episode_return"][done].tolist())
            x = pack_observation(obs, device=dev)
        with torch.no_grad():
            next_v = net.value(x)
        valid = torch.ones(T, N, device=dev)
        adv, ret = rollout_advantages(rews, vals, dones, valid, next_v, gamma=cfg.gamma, lambda_=cfg.lambda_)
        bx, ba, blp, badv, bret = (z.reshape((T * N,) + tuple(z.shape[2:])) for z in (xs, acts, logps, adv, ret))
        mb = max(1, (T * N) // cfg.minibatches)
        clip_fracs, kls = [], []
        for _ in range(cfg.epochs):
            perm = torch.randperm(T * N, generator=perm_gen).to(dev)
            for s in range(0, T * N, mb):
                j = perm[s:s + mb]
                logits, values = net(bx[j])  # one forward pass for both heads
                loss, pl = ppo_minibatch_loss(FixedOutputs(logits, values), bx[j], ba[j], blp[j], badv[j], bret[j], clip=cfg.clip,
                                              value_coef=cfg.value_coef, entropy_coef=cfg.entropy_coef)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
                opt.step()
                clip_fracs.append(float(pl.clip_fraction))
                kls.append(float(pl.ppo_kl))
        row = {"update": update, "steps": (update + 1) * N * T, "episodes": len(ended_success),
               "success_rate": float(np.mean(ended_success)) if ended_success else math.nan,
               "mean_return": float(np.mean(ended_return)) if ended_return else math.nan,
               "clip_fraction": float(np.mean(clip_fracs)), "ppo_kl": float(np.mean(kls))}
        rows.append(row)
        if on_update is not None:
            on_update(row)
    env.close()
    net.eval()
    return net.cpu(), rows


@torch.no_grad()
def evaluate_policy(net: nn.Module, design_name: str, episodes: int, *, max_entities: int = 16, entity_order: str = "sorted",
                    num_envs: int = 32, generator: torch.Generator | None = None, policy: str = "sample") -> dict:
    """Play levels ``EVAL_SEED + k``, ``k < episodes``, of a design; returns rates and the mean return.

    ``policy="sample"`` samples from the network's distribution (with ``generator``); ``"random"``
    plays uniform random actions and ``"scripted"`` the exact planner (``net`` is then ignored).
    Returns ``success``, ``died``, ``timeout`` (fractions of episodes), ``mean_return``,
    ``mean_length`` and ``episodes``.
    """
    if policy not in ("sample", "random", "scripted"):
        raise ValueError(f"policy must be 'sample', 'random' or 'scripted'; got {policy!r}.")
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    design = DESIGNS[design_name]
    envs = [RoguelikeEnv(design, max_entities=max_entities, entity_order=entity_order) for _ in range(min(num_envs, episodes))]
    next_level, outcomes = 0, []
    obs = [None] * len(envs)
    active = [False] * len(envs)
    ret, length = [0.0] * len(envs), [0] * len(envs)
    plans = [[] for _ in envs]
    for i, env in enumerate(envs):
        if next_level < episodes:
            obs[i], _ = env.reset(seed=EVAL_SEED + next_level)
            active[i], next_level = True, next_level + 1
    while any(active):
        idx = [i for i in range(len(envs)) if active[i]]
        if policy == "sample":
            x = pack_observation({"entities": np.stack([obs[i]["entities"] for i in idx]),
                                  "mask": np.stack([obs[i]["mask"] for i in idx])})
            probs = torch.softmax(net.logits(x).float(), dim=-1)
            acts = torch.multinomial(probs, 1, generator=gen).squeeze(1).tolist()
        elif policy == "random":
            acts = torch.randint(len(ACTIONS), (len(idx),), generator=gen).tolist()
        else:  # deterministic game: the exact plan made at a level's start is followed open loop
            for i in idx:
                if not plans[i]:
                    plans[i] = envs[i].solve()
            acts = [plans[i].pop(0) for i in idx]
        for i, a in zip(idx, acts):
            obs[i], r, te, tr, info = envs[i].step(a)
            ret[i] += r
            length[i] += 1
            if te or tr:
                outcomes.append((info["success"], info["died"], tr and not te, ret[i], length[i]))
                ret[i], length[i], plans[i] = 0.0, 0, []
                if next_level < episodes:
                    obs[i], _ = envs[i].reset(seed=EVAL_SEED + next_level)
                    next_level += 1
                else:
                    active[i] = False
    o = np.asarray(outcomes, dtype=float)
    return {"success": float(o[:, 0].mean()), "died": float(o[:, 1].mean()), "timeout": float(o[:, 2].mean()),
            "mean_return": float(o[:, 3].mean()), "mean_length": float(o[:, 4].mean()), "episodes": int(len(o))}


def env_steps_per_second(num_envs: int = 16, steps: int = 500, *, seed: int = 0) -> dict:
    """Random-action throughput of the batched and of gymnasium's ``SyncVectorEnv`` version (steps/s)."""
    from ..envs.roguelike import make_vector_env

    out = {}
    rng = np.random.default_rng(seed)
    for name, env in (("batched", RoguelikeVectorEnv(DESIGNS["train"], num_envs)),
                      ("gymnasium_sync", make_vector_env(DESIGNS["train"], num_envs))):
        env.reset(seed=seed)
        acts = rng.integers(len(ACTIONS), size=(steps, num_envs))
        t0 = time.perf_counter()
        for a in acts:
            env.step(a)
        out[name] = num_envs * steps / (time.perf_counter() - t0)
        env.close()
    return out


# ---------------------------------------------------------------------------------------------
# statistics and figures
# ---------------------------------------------------------------------------------------------
def mean_ci(x) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (0 for one value)."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return math.nan, 0.0
    if x.size < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def compare(a, b) -> dict:
    """Welch's t-test and the exact two-sided Mann-Whitney U test of samples ``a`` vs ``b``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    res = {"difference": float(a.mean() - b.mean())}
    if a.size >= 2 and b.size >= 2:
        if np.ptp(np.concatenate([a, b])) == 0:
            res.update(welch_t=0.0, welch_p=1.0, mannwhitney_u=float(a.size * b.size / 2), mannwhitney_p=1.0)
        else:
            t = stats.ttest_ind(a, b, equal_var=False)
            u = stats.mannwhitneyu(a, b, alternative="two-sided", method="exact" if a.size + b.size <= 30 else "auto")
            res.update(welch_t=float(t.statistic), welch_p=float(t.pvalue), mannwhitney_u=float(u.statistic),
                       mannwhitney_p=float(u.pvalue))
    return res


def success_statistics(rows: list[dict], architectures, eval_designs) -> dict:
    """Per-design success (mean, 95% t interval, per seed), held-out mean and generalisation gap, and the tests.

    ``rows`` are a run's ``metrics.csv`` rows (:func:`polab.scaled.logger.read_metrics`); the ``eval`` rows
    are used. ``held_out_mean`` is each seed's mean success over the designs other than ``train``; ``gap``
    is each seed's ``train`` success minus its held-out mean (when ``train`` was evaluated). ``tests``
    holds, for each other architecture ``X``, ``"entity vs X"``: :func:`compare` per design, on the
    held-out mean and on the gap (difference = entity minus ``X``).
    """
    res = {"success": {}, "held_out_mean": {}, "gap": {}, "tests": {}}
    held = [d for d in eval_designs if d != "train"]
    per = {a: {d: [r["success"] for r in sorted((r for r in rows if r["kind"] == "eval" and r["arch"] == a and r["design"] == d),
                                                  key=lambda r: r["seed"])]
               for d in eval_designs} for a in architectures}

    def entry(v):
        m, h = mean_ci(v)
        return {"mean": m, "ci95_half_width": h, "per_seed": [float(x) for x in v]}

    for a in architectures:
        res["success"][a] = {d: entry(v) for d, v in per[a].items()}
        if held:
            n = min(len(per[a][d]) for d in held)
            ho = np.mean([per[a][d][:n] for d in held], axis=0)
            res["held_out_mean"][a] = entry(ho)
            if "train" in eval_designs:
                res["gap"][a] = entry(np.asarray(per[a]["train"][:n]) - ho)
    for other in [a for a in architectures if a != "entity"] if "entity" in architectures else []:
        t = res["tests"][f"entity vs {other}"] = {d: compare(per["entity"][d], per[other][d]) for d in eval_designs}
        for key in ("held_out_mean", "gap"):
            if "entity" in res[key] and other in res[key]:
                t[key] = compare(res[key]["entity"]["per_seed"], res[key][other]["per_seed"])
    return res


def plot_run(out, *, also=(), suffix: str = "") -> list[Path]:
    """Draw ``figures/generalisation{suffix}.png`` and ``figures/training{suffix}.png`` of a run folder from its ``metrics.csv``.

    ``also``: further run folders (same designs, seeds and evaluation levels, other architectures)
    whose ``eval`` and ``train`` rows are drawn beside this run's. Returns the paths written. Used at
    the end of every run; callable on finished run folders.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    cfg = json.loads((out / "config.json").read_text())
    rows = read_metrics(out / "metrics.csv")
    archs = list(cfg["architectures"])
    for other in also:
        extra = [r for r in read_metrics(Path(other) / "metrics.csv") if r["kind"] in ("eval", "train")]
        rows += extra
        archs += [a for a in json.loads((Path(other) / "config.json").read_text())["architectures"] if a not in archs]
    designs = list(cfg["eval_designs"])
    results = {a: {d: [r["success"] for r in rows if r["kind"] == "eval" and r["arch"] == a and r["design"] == d]
                   for d in designs} for a in archs}
    random_rate = {r["design"]: r["success"] for r in rows if r["kind"] == "baseline" and r["arch"] == "random"}
    seeds = sorted({int(r["seed"]) for r in rows if r["kind"] == "train"})
    curves = {}
    for a in archs:
        per_seed = [[(r["step"], r["success_rate"]) for r in rows if r["kind"] == "train" and r["arch"] == a and int(r["seed"]) == s]
                    for s in seeds]
        per_seed = [p for p in per_seed if p]
        if per_seed:
            n = min(len(p) for p in per_seed)
            curves[a] = (np.array([st for st, _ in per_seed[0][:n]]), np.array([[v for _, v in p[:n]] for p in per_seed], dtype=float))
    colors = {"entity": "tab:blue", "flat": "tab:orange", "flat-id": "tab:red"}
    labels = {"entity": f"entity attention (d={cfg['dim']}, {cfg['heads']} heads, {cfg['blocks']} block)",
              "flat": f"flat MLP ({cfg['max_entities']} slots, attributes one-hot, {cfg['hidden']} hidden)",
              "flat-id": f"flat MLP, one code per (type, power) ({cfg['hidden']} hidden)"}
    fig, ax = plt.subplots(figsize=(max(8.0, 1.9 * len(designs) + 3), 4.8))
    w = 0.8 / len(archs)
    for k, arch in enumerate(archs):
        xs = np.arange(len(designs)) + (k - (len(archs) - 1) / 2) * w
        per = [results[arch][d] for d in designs]
        m = [mean_ci(p)[0] for p in per]
        h = [mean_ci(p)[1] for p in per]
        ax.bar(xs, m, w, yerr=h, capsize=3, color=colors.get(arch), alpha=0.75, label=labels.get(arch, arch))
        for x0, p in zip(xs, per):
            ax.scatter(np.full(len(p), x0), p, s=10, color="k", zorder=3)
    if random_rate:
        ax.scatter(np.arange(len(designs)), [random_rate.get(d, np.nan) for d in designs], marker="_", s=900, color="gray",
                   zorder=4, label="uniform random policy (same levels)")
    ax.set_xticks(np.arange(len(designs)), [d + ("\n(trained on)" if d == "train" else "\n(held out)") for d in designs])
    ax.set_ylabel("success rate (frozen policy, sampled actions)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Roguelike NPC, PPO {cfg['total_steps']} steps on 'train' only; {cfg['seeds']} seeds x {cfg['eval_episodes']} "
                 "levels per design\nbar = mean over seeds, whisker = 95% t interval, dot = one seed", fontsize=8)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    fig.tight_layout()
    paths = [out / "figures" / f"generalisation{suffix}.png", out / "figures" / f"training{suffix}.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arch, (steps, ys) in curves.items():
        m = np.nanmean(ys, axis=0)
        n = np.sum(np.isfinite(ys), axis=0)
        sd = np.nanstd(ys, axis=0, ddof=1) if ys.shape[0] > 1 else np.zeros_like(m)
        h = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
        ax.plot(steps, m, color=colors.get(arch), label=labels.get(arch, arch))
        ax.fill_between(steps, m - h, m + h, color=colors.get(arch), alpha=0.2)
    ax.set_xlabel("environment steps (train design)")
    ax.set_ylabel("success rate of episodes ended in the rollout")
    ax.set_title(f"PPO training on the 'train' design, {len(seeds)} seeds (mean, 95% t band)", fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------
def run(cfg: NPCRoguelikeConfig) -> Path:
    """Run the experiment (options checked first); returns the run folder."""
    _validate(cfg)
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite):
        return _run(cfg)


def _run(cfg: NPCRoguelikeConfig) -> Path:
    if cfg.device == "cpu":
        torch.set_num_threads(1)
    out = Path(cfg.out)
    config = config_to_dict(cfg)
    config["provenance"] = provenance()
    config["designs"] = {d: DESIGNS[d].to_dict() for d in ("train",) + tuple(cfg.eval_designs)}
    logger = MetricLogger(out, config=config, backends=("csv",))
    t_start = time.perf_counter()
    sps = env_steps_per_second(steps=cfg.throughput_steps)
    baselines = {}
    for d in cfg.eval_designs:
        for pol in ("random", "scripted"):
            r = evaluate_policy(None, d, cfg.eval_episodes, max_entities=cfg.max_entities, entity_order=cfg.entity_order,
                                generator=torch.Generator().manual_seed(cfg.seed), policy=pol)
            baselines.setdefault(pol, {})[d] = r
            logger.log(0, {"kind": "baseline", "arch": pol, "seed": -1, "design": d, **{k: r[k] for k in
                                                                                        ("success", "died", "timeout", "mean_return", "mean_length")}})
    train_seconds, params = {}, {}
    jobs = [(a, s) for s in range(cfg.seeds) for a in cfg.architectures]
    bar = tqdm(jobs, desc="npc-roguelike", disable=not cfg.progress)
    for arch, s in bar:
        seed = cfg.seed + s
        bar.set_postfix(arch=arch, seed=seed)

        def log_update(row, arch=arch, seed=seed):
            logger.log(row["steps"], {"kind": "train", "arch": arch, "seed": seed, "design": "train",
                                      **{k: row[k] for k in ("success_rate", "mean_return", "episodes", "clip_fraction", "ppo_kl")}})

        t0 = time.perf_counter()
        net, rows = train_policy(arch, cfg, seed, progress=cfg.progress, on_update=log_update)
        train_seconds.setdefault(arch, []).append(time.perf_counter() - t0)
        params[arch] = int(sum(p.numel() for p in net.parameters()))
        steps = np.array([r["steps"] for r in rows])
        for d in cfg.eval_designs:
            r = evaluate_policy(net, d, cfg.eval_episodes, max_entities=cfg.max_entities, entity_order=cfg.entity_order,
                                generator=torch.Generator().manual_seed(seed + 7))
            logger.log(int(steps[-1]), {"kind": "eval", "arch": arch, "seed": seed, "design": d,
                                        **{k: r[k] for k in ("success", "died", "timeout", "mean_return", "mean_length")}})
    logger.close()
    summary = {"claim": "entity network generalises to held-out designs better than the flat MLP",
               "metric": "success rate on held-out designs (frozen policy, sampled actions)",
               "seeds": cfg.seeds, "eval_episodes": cfg.eval_episodes, "total_steps": cfg.total_steps,
               "parameters": params, "train_seconds_mean": {a: float(np.mean(v)) for a, v in train_seconds.items()},
               "env_steps_per_second": sps, "baselines": {p: {d: v["success"] for d, v in r.items()} for p, r in baselines.items()},
               **success_statistics(read_metrics(out / "metrics.csv"), cfg.architectures, cfg.eval_designs)}
    summary["wall_seconds"] = time.perf_counter() - t_start
    plot_run(out)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fixed = []  # `--quick` is `--preset quick`
    for a in argv:
        fixed.extend(["--preset", "quick"] if a == "--quick" else [a])
    cfg, _ = parse_config(NPCRoguelikeConfig, fixed, prog="polab run npc-roguelike", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0], ignore_keys=("designs",))
    out = run(cfg)
    s = json.loads((out / "summary.json").read_text())
    for a, per in s["success"].items():
        print(f"{a:7s} " + "  ".join(f"{d} {v['mean']:.3f}+-{v['ci95_half_width']:.3f}" for d, v in per.items()))
    for pair, t in s["tests"].items():
        for key, what in (("held_out_mean", "held-out mean success"), ("gap", "gap (train - held-out)")):
            if key in t:
                print(f"{pair}, {what}: difference {t[key]['difference']:+.3f} (Welch p = {t[key].get('welch_p', float('nan')):.3g}, "
                      f"Mann-Whitney exact p = {t[key].get('mannwhitney_p', float('nan')):.3g})")
    print(f"env steps/s (random actions, 16 envs): {s['env_steps_per_second']}")
    print(f"run folder: {out}")
    return 0
