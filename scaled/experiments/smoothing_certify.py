"""``polab run smoothing-certify``: certified total reward versus attack budget for smoothed control policies.

For each environment (CartPole, MountainCar; Atari Pong and Freeway as
GPU-scale configurations) the run

1. trains a PPO policy under Gaussian observation noise
   (:mod:`polab.scaled.control.ppo`; cached in the run folder's checkpoint, so a
   second run on the same ``--out`` with ``--resume`` and the same training
   settings reuses it);
2. for each smoothing scale sigma, runs ``--certify-episodes`` (default
   10,000) clean smoothed episodes in one vectorised environment and
   certifies the attacked expected return on a grid of total l2 budgets B with
   :func:`polab.estimators.smoothing_certificates.certify_returns`, unchanged, by DKW
   and by Clopper–Pearson (integer thresholds, Bonferroni);
3. attacks the smoothed policy with the attacks of
   :mod:`polab.scaled.control.attack` at each attack budget: the one-step
   linearised attacks (modes ``uniform`` and ``critical``) and the multi-step
   ``smoothed-pgd`` attack (gradients averaged over smoothing-noise samples,
   unused budget carried forward, after the public policy-smoothing attack
   code), and the undefended policy (sigma = 0) too, and records the
   attacked mean returns next to the certificate.

The certificate bounds the attacked *expected* return with probability
``1 - alpha``; the attacked means are Monte Carlo estimates, so the run
reports each one's z-score against the certificate (``summary.json``:
``attacked_below_certificate`` counts means below it by more than 3
standard errors, which should be 0). The z-score is taken against *one*
certificate at level ``alpha``: the larger of DKW and Clopper–Pearson each
at ``alpha / 2`` (Bonferroni,
:func:`polab.estimators.smoothing_certificates.certify_returns_bonferroni`;
column ``certificate_bonferroni``). The larger of the two each at level
``alpha`` (the columns ``certificate_dkw`` and ``certificate_cp``, each valid
on its own) is not an ``alpha``-level certificate.

Run folder: ``config.json``, ``metrics.csv`` (one row per certificate point
or attack), ``summary.json``, ``figures/certified_reward.png``,
``checkpoints/`` (trained policies).

Example::

    polab run smoothing-certify --out runs/smoothing-certify          # a few minutes on CPU
    polab run smoothing-certify --quick --out /tmp/sc                 # smoke test, seconds
    polab run smoothing-certify --envs pong freeway --device cuda \\
        --train-steps 10000000 --sigmas 0.05 0.1 --out runs/atari    # GPU scale (needs ale-py)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from polab.estimators.smoothing_certificates import certify_returns, certify_returns_bonferroni

from ..checkpoint import atomic_write_text, latest_checkpoint, load_checkpoint, save_checkpoint
from ..control.attack import ATTACK_MODES
from ..control.envs import ENV_SPECS, require_ale
from ..control.policies import make_actor_critic
from ..control.ppo import PPOConfig, train_ppo
from ..control.rollout import run_episodes
from ..logger import MetricLogger, read_metrics
from ..run_folder import check_config_values, prepare_run_folder

__all__ = ["SmoothingCertifyConfig", "run", "main"]

#: Certificate methods (column ``method``); ``env``, ``kind`` (certificate, clean, attack) and ``attack`` are names too.
METHODS = ("dkw", "clopper-pearson")

COLUMNS = ["env", "sigma", "budget", "kind", "method", "attack", "value", "stderr", "vacuous", "n",
           "certificate_dkw", "certificate_cp", "z_vs_certificate", "max_spent", "certificate_bonferroni"]

#: Training settings per environment (CPU defaults; the Atari ones are GPU-scale).
TRAIN_DEFAULTS = {
    "cartpole": dict(total_steps=60_000, num_envs=8, rollout_steps=128, learning_rate=2.5e-3),
    "mountaincar": dict(total_steps=200_000, num_envs=16, rollout_steps=128, learning_rate=2.5e-3),
    "pong": dict(total_steps=10_000_000, num_envs=16, rollout_steps=128, learning_rate=2.5e-4),
    "freeway": dict(total_steps=10_000_000, num_envs=16, rollout_steps=128, learning_rate=2.5e-4),
}


#: Smoothing scales and budgets per environment, in the observation units of ``EnvSpec.describe()``.
#: CartPole follows the notes' reading of the paper's settings (sigma 0.2, 0.4; B in [0, 1]). MountainCar
#: observations are scaled to [-1, 1] here; with training noise {0.1, 0.2, 0.4} PPO (200k steps) stayed at
#: return -200 in two of four trials and reached at best -161 at sigma 0.2, while with {0.05, 0.1, 0.2} two
#: seeds reached about -130 and -119 at sigma 0.05, so its scales are halved. Atari: frames in [0, 1], the
#: notes' Freeway scales 0.05 and 0.1 (12.75 and 25.5 on the 0-255 scale) and B up to 0.4.
ENV_DEFAULTS = {
    "cartpole": dict(sigmas=[0.1, 0.2, 0.4], max_budget=1.0, attack_budgets=[0.2, 0.5, 1.0]),
    "mountaincar": dict(sigmas=[0.05, 0.1, 0.2], max_budget=0.5, attack_budgets=[0.1, 0.25, 0.5]),
    "pong": dict(sigmas=[0.05, 0.1], max_budget=0.4, attack_budgets=[0.1, 0.2, 0.4]),
    "freeway": dict(sigmas=[0.05, 0.1], max_budget=0.4, attack_budgets=[0.1, 0.2, 0.4]),
}


@dataclass
class SmoothingCertifyConfig:
    """Hyperparameters of the experiment (defaults: a few minutes on one CPU core).

    ``sigmas``, ``max_budget`` and ``attack_budgets`` default to :data:`ENV_DEFAULTS` per
    environment; a value given here applies to every environment.
    """

    envs: list = field(default_factory=lambda: ["cartpole", "mountaincar"])
    sigmas: list | None = None
    max_budget: float | None = None
    num_budgets: int = 41
    attack_budgets: list | None = None
    attack_modes: list = field(default_factory=lambda: list(ATTACK_MODES))
    certify_episodes: int = 10_000
    attack_episodes: int = 1000
    batch_size: int = 10_000
    alpha: float = 0.05
    train_steps: int | None = None  # None: TRAIN_DEFAULTS per environment
    max_steps: int | None = None  # None: the environment's episode cap (smoke tests shorten it)
    seed: int = 0
    device: str = "cpu"
    pgd_noise_samples: int = 32  # smoothed-pgd attack: noise samples per step (source default 128)
    pgd_step_size: float = 0.02  # smoothed-pgd: normalised step (source default 0.01)
    pgd_step_multiplier: float = 2.0  # smoothed-pgd: steps = multiplier * remaining budget / step size (source 2)
    quick: bool = False
    out: str = "runs/smoothing-certify"
    resume: bool = False  # reuse the trained policies cached in --out's checkpoint (where the settings match)
    overwrite: bool = False  # start over in a non-empty --out (its cached policies are not reused)

    def settings(self, env: str) -> dict:
        """Sigmas, max budget and attack budgets for ``env`` (quick mode: one sigma, one attack budget)."""
        d = dict(ENV_DEFAULTS[env])
        for k in ("sigmas", "max_budget", "attack_budgets"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.quick:
            d["sigmas"], d["attack_budgets"] = list(d["sigmas"][:1]), list(d["attack_budgets"][-1:])
        return d

    def apply_quick(self) -> None:
        """Smoke-test sizes: tiny training, few episodes, short episodes."""
        self.num_budgets = min(self.num_budgets, 5)
        self.certify_episodes = min(self.certify_episodes, 200)
        self.attack_episodes = min(self.attack_episodes, 40)
        self.train_steps = self.train_steps or 2048
        self.max_steps = self.max_steps or 60
        self.pgd_noise_samples = min(self.pgd_noise_samples, 8)
        self.pgd_step_size = max(self.pgd_step_size, 0.05)


def _train_config(cfg: SmoothingCertifyConfig, env: str) -> PPOConfig:
    kw = dict(TRAIN_DEFAULTS[env])
    if cfg.train_steps is not None:
        kw["total_steps"] = int(cfg.train_steps)
    if cfg.quick:
        kw["num_envs"] = min(kw["num_envs"], 4)
        kw["rollout_steps"] = min(kw["rollout_steps"], 64)
    return PPOConfig(**kw, train_sigmas=list(cfg.settings(env)["sigmas"]), seed=cfg.seed, device=cfg.device)


def _policies(cfg: SmoothingCertifyConfig, out: Path) -> dict:
    """Trained networks per environment, from the run folder's checkpoint where the settings match."""
    cached = {}
    ck = latest_checkpoint(out)
    if ck is not None:
        cached = load_checkpoint(ck).get("policies", {})
    nets, changed = {}, False
    for env in cfg.envs:
        spec = ENV_SPECS[env]
        tcfg = _train_config(cfg, env).to_dict()
        net = make_actor_critic(spec)
        entry = cached.get(env)
        same = entry is not None and {k: v for k, v in entry["train_config"].items() if k != "device"} == {
            k: v for k, v in tcfg.items() if k != "device"}
        if same:  # the device does not change the trained policy's settings
            net.load_state_dict(entry["state_dict"])
            net.eval()
        else:
            net, stats = train_ppo(spec, PPOConfig(**tcfg))
            cached[env] = {"train_config": tcfg, "state_dict": net.state_dict(), "train_stats": stats}
            changed = True
        nets[env] = net
    if changed:
        save_checkpoint(out, len(cached), {"policies": cached})
    return nets


def _attack_options(cfg: SmoothingCertifyConfig) -> dict:
    """Options of the smoothed-pgd attack (ignored by the one-step attacks)."""
    return dict(noise_samples=cfg.pgd_noise_samples, step_size=cfg.pgd_step_size, step_multiplier=cfg.pgd_step_multiplier)


def _check(cfg: SmoothingCertifyConfig) -> None:
    """Every option checked before any training or writing (ValueError naming the option)."""
    check_config_values(cfg, nonempty=("envs", "sigmas", "attack_budgets", "attack_modes"), devices=("device",),
                        positive_ints=("num_budgets", "certify_episodes", "attack_episodes", "batch_size", "train_steps",
                                       "max_steps", "pgd_noise_samples"),
                        probabilities=("alpha",), positive_floats=("sigmas", "pgd_step_size", "pgd_step_multiplier"),
                        nonneg_floats=("max_budget", "attack_budgets"))
    for e in cfg.envs:
        if e not in ENV_SPECS:
            raise ValueError(f"--envs: unknown environment {e!r}; choose from {sorted(ENV_SPECS)}.")
        lo, hi = ENV_SPECS[e].reward_range
        st = cfg.settings(e)
        for sigma in st["sigmas"]:  # the certificate's own input checks, on two dummy returns, before any training
            certify_returns(torch.tensor([float(lo), float(hi)], dtype=torch.float64), sigma=sigma, alpha=cfg.alpha,
                            budgets=[float(st["max_budget"]), *map(float, st["attack_budgets"])], reward_range=(lo, hi))


def run(cfg: SmoothingCertifyConfig) -> Path:
    """Run the experiment; returns the run folder.

    The options are checked first; ``cfg.out`` must be new or empty unless ``cfg.resume`` (reuse the policies
    cached there) or ``cfg.overwrite``, and is locked for the run
    (:func:`polab.scaled.run_folder.prepare_run_folder`).
    """
    _check(cfg)
    with prepare_run_folder(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite):
        return _run(cfg)


def _run(cfg: SmoothingCertifyConfig) -> Path:
    for e in cfg.envs:
        if e not in ENV_SPECS:
            raise ValueError(f"unknown environment {e!r}; choose from {sorted(ENV_SPECS)}.")
        if ENV_SPECS[e].atari:
            require_ale()
    if cfg.quick:
        cfg.apply_quick()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    nets = _policies(cfg, out)
    config = dataclasses.asdict(cfg) | {"resolved": {e: cfg.settings(e) for e in cfg.envs}}
    logger = MetricLogger(out, config=config, columns=COLUMNS, backends=("csv",))
    curves, step, worst_z, below, total_attacks = {}, 0, math.inf, 0, 0
    for env in cfg.envs:
        spec, net = ENV_SPECS[env], nets[env]
        st = cfg.settings(env)
        budgets = np.linspace(0.0, st["max_budget"], cfg.num_budgets)
        curves[env] = {"budgets": budgets}
        lo, hi = spec.reward_range
        thresholds = torch.arange(lo + 1, hi + 1, dtype=torch.float64)  # integer returns: every possible threshold
        for sigma in tqdm(st["sigmas"], desc=f"{env}: sigmas", leave=False):
            clean, _ = run_episodes(net, spec, sigma=sigma, num_episodes=cfg.certify_episodes, seed=cfg.seed,
                                    batch_size=cfg.batch_size, max_steps=cfg.max_steps, progress=True, device=cfg.device)
            certs = {}
            for method in METHODS:
                kw = dict(thresholds=thresholds) if method == "clopper-pearson" else {}
                c = certify_returns(torch.as_tensor(clean), budgets=np.concatenate([budgets, st["attack_budgets"]]),
                                    sigma=sigma, alpha=cfg.alpha, reward_range=(lo, hi), method=method, **kw)
                certs[method] = c
                for b, v, vac in zip(c.budgets.tolist()[: len(budgets)], c.expected_reward.tolist(), c.vacuous.tolist()):
                    logger.log(step, {"env": env, "sigma": sigma, "budget": b, "kind": "certificate",
                                      "method": method, "value": v, "vacuous": int(vac), "n": c.n})
                    step += 1
            bonf = certify_returns_bonferroni(torch.as_tensor(clean), budgets=st["attack_budgets"], sigma=sigma,
                                              alpha=cfg.alpha, reward_range=(lo, hi), thresholds={"clopper-pearson": thresholds})
            se = float(clean.std(ddof=1) / math.sqrt(len(clean))) if len(clean) > 1 else math.nan
            logger.log(step, {"env": env, "sigma": sigma, "budget": 0.0, "kind": "clean",
                              "value": float(clean.mean()), "stderr": se, "n": len(clean)})
            step += 1
            curves[(env, sigma)] = {m: c.expected_reward[: len(budgets)].numpy() for m, c in certs.items()}
            curves[(env, sigma)]["clean"] = float(clean.mean())
            attacked = []
            for j, B in enumerate(st["attack_budgets"]):
                cert = {m: float(c.expected_reward[len(budgets) + j]) for m, c in certs.items()}
                best = float(bonf.expected_reward[j])  # one certificate at level alpha (Bonferroni over the two)
                for mode in cfg.attack_modes:
                    r, spent = run_episodes(net, spec, sigma=sigma, num_episodes=cfg.attack_episodes, seed=cfg.seed + 1 + j,
                                            batch_size=cfg.batch_size, budget=B, attack_mode=mode, max_steps=cfg.max_steps,
                                            device=cfg.device, attack_options=_attack_options(cfg),
                                            progress=mode == "smoothed-pgd")
                    if np.any(spent > B**2 * (1 + 1e-9)):
                        raise RuntimeError(f"attack exceeded its budget {B}: spent {math.sqrt(spent.max())}")
                    mean = float(r.mean())
                    se = float(r.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else math.nan
                    z = (mean - best) / se if se and se > 0 else (math.inf if mean >= best else -math.inf)
                    worst_z = min(worst_z, z)
                    below += int(z < -3)
                    total_attacks += 1
                    attacked.append((B, mode, mean, se, best))
                    logger.log(step, {"env": env, "sigma": sigma, "budget": B, "kind": "attack",
                                      "attack": mode, "value": mean, "stderr": se, "n": len(r),
                                      "certificate_dkw": cert["dkw"], "certificate_cp": cert["clopper-pearson"],
                                      "certificate_bonferroni": best,
                                      "z_vs_certificate": z, "max_spent": float(math.sqrt(spent.max()))})
                    step += 1
            curves[(env, sigma)]["attacked"] = attacked
        # undefended policy (no smoothing), attacked: no certificate applies
        for j, B in enumerate(st["attack_budgets"]):
            for mode in cfg.attack_modes:
                r, spent = run_episodes(net, spec, sigma=0.0, num_episodes=cfg.attack_episodes, seed=cfg.seed + 1 + j,
                                        batch_size=cfg.batch_size, budget=B, attack_mode=mode, max_steps=cfg.max_steps,
                                        device=cfg.device, attack_options=_attack_options(cfg))
                se = float(r.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else math.nan
                logger.log(step, {"env": env, "sigma": 0.0, "budget": B, "kind": "attack",
                                  "attack": mode, "value": float(r.mean()), "stderr": se, "n": len(r),
                                  "max_spent": float(math.sqrt(spent.max()))})
                step += 1
    logger.close()
    summary = {
        "attacks": total_attacks, "attacked_below_certificate": below, "min_z_vs_certificate": worst_z,
    }
    for key, c in curves.items():
        if isinstance(key, tuple):
            env, sigma = key
            b, att = curves[env]["budgets"], cfg.settings(env)["attack_budgets"]
            summary[f"{env}:sigma={sigma}"] = {
                "clean_mean": c["clean"],
                **{f"certificate_{m}_at_B={x:g}": float(np.interp(x, b, c[m])) for m in METHODS for x in att},
                **{f"attacked_{mode}_at_B={x:g}": mean for x, mode, mean, _, _ in c["attacked"]},
                **{f"attacked_{mode}_minus_certificate_bonferroni_at_B={x:g}": mean - cb
                   for x, mode, mean, _, cb in c["attacked"]},
                **{f"certificate_bonferroni_at_B={x:g}": cb for x, _, _, _, cb in c["attacked"]},
            }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    _figure(out, cfg, curves)
    return out


def _figure(out: Path, cfg: SmoothingCertifyConfig, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(out / "metrics.csv")
    fig, axes = plt.subplots(1, len(cfg.envs), figsize=(5.5 * len(cfg.envs), 4.2), squeeze=False)
    for ax, env in zip(axes[0], cfg.envs):
        budgets = curves[env]["budgets"]
        for i, sigma in enumerate(cfg.settings(env)["sigmas"]):
            c = curves[(env, sigma)]
            ax.plot(budgets, c["dkw"], "-", color=f"C{i}", label=f"certified, DKW, sigma={sigma}")
            ax.plot(budgets, c["clopper-pearson"], "--", color=f"C{i}", label=f"certified, CP, sigma={sigma}")
            for B, mode, mean, se, _ in c["attacked"]:
                ax.errorbar(B, mean, yerr=se, fmt={"uniform": "o", "critical": "^"}.get(mode, "s"), color=f"C{i}", ms=4)
        und = [r for r in rows if r["env"] == env and r["kind"] == "attack" and r["sigma"] == 0.0]
        if und:
            ax.plot([r["budget"] for r in und], [r["value"] for r in und], "kx", label="undefended, attacked")
        ax.set_xlabel("total l2 budget B")
        ax.set_ylabel("episode return")
        ax.set_title(f"{env}: certified vs attacked (o uniform, ^ critical, s smoothed-pgd)", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "figures" / "certified_reward.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    d = SmoothingCertifyConfig()
    p = argparse.ArgumentParser(prog="polab run smoothing-certify", description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", default=d.envs, choices=sorted(ENV_SPECS))
    p.add_argument("--sigmas", nargs="+", type=float, default=d.sigmas, help="default: per environment (ENV_DEFAULTS)")
    p.add_argument("--max-budget", type=float, default=d.max_budget, help="default: per environment")
    p.add_argument("--num-budgets", type=int, default=d.num_budgets)
    p.add_argument("--attack-budgets", nargs="+", type=float, default=d.attack_budgets, help="default: per environment")
    p.add_argument("--attack-modes", nargs="+", default=d.attack_modes, choices=list(ATTACK_MODES))
    p.add_argument("--certify-episodes", type=int, default=d.certify_episodes)
    p.add_argument("--attack-episodes", type=int, default=d.attack_episodes)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--alpha", type=float, default=d.alpha)
    p.add_argument("--train-steps", type=int, default=d.train_steps)
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu or cuda (network and noise; environments step on the CPU)")
    p.add_argument("--pgd-noise-samples", type=int, default=d.pgd_noise_samples,
                   help="smoothed-pgd attack: smoothing-noise samples averaged per step")
    p.add_argument("--pgd-step-size", type=float, default=d.pgd_step_size, help="smoothed-pgd attack: normalised step size")
    p.add_argument("--pgd-step-multiplier", type=float, default=d.pgd_step_multiplier,
                   help="smoothed-pgd attack: steps per state = multiplier * remaining budget / step size")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=d.out)
    p.add_argument("--resume", action="store_true", help="reuse the policies trained and cached in --out (same settings)")
    p.add_argument("--overwrite", action="store_true", help="start over in --out even though it holds a run")
    a = p.parse_args(argv)
    cfg = SmoothingCertifyConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(SmoothingCertifyConfig)})
    out = run(cfg)
    print(f"run folder: {out}")
    return 0
