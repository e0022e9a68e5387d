"""Timings for policy-smoothing certification.

1. Certificate computation (:func:`polab.estimators.smoothing_certificates.certify_returns`) for
   10^6 returns and 100 budgets: integer returns in [0, 200] (CartPole-like, m = 200
   thresholds) and continuous returns (m = 10^6 distinct thresholds), DKW and
   Clopper–Pearson, against a per-budget loop over :func:`polab.theory.policy_smoothing.certified_expected_reward`.
2. Smoothed evaluation throughput: episodes per second of
   :func:`polab.scaled.control.rollout.run_episodes` for an MLP policy on CartPole (vectorised
   gymnasium env), clean and under the adaptive gradient attack.

Run: ``OMP_NUM_THREADS=1 python benchmarks/smoothing_certificates.py [--run-folder runs/smoothing-certify]``
(one thread, as on the shared CI machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from polab.estimators.smoothing_certificates import certify_returns
from polab.theory.policy_smoothing import certified_expected_reward


def _time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_certificates(n: int = 1_000_000, num_budgets: int = 100, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    budgets = torch.linspace(0.0, 1.0, num_budgets, dtype=torch.float64)
    integer = torch.binomial(torch.full((n,), 200.0, dtype=torch.float64), torch.full((n,), 0.9, dtype=torch.float64), generator=g)
    continuous = 200.0 * torch.rand(n, generator=g, dtype=torch.float64) ** 0.3
    thr = torch.arange(1.0, 201.0, dtype=torch.float64)
    cases = [
        ("integer returns, DKW (m = distinct returns)", integer, dict(method="dkw")),
        ("integer returns, Clopper-Pearson (m = 200)", integer, dict(method="clopper-pearson", thresholds=thr)),
        ("continuous returns, DKW (m = 10^6)", continuous, dict(method="dkw")),
        ("continuous returns, Clopper-Pearson (m = 200 grid)", continuous, dict(method="clopper-pearson")),
    ]
    print(f"certificates: n = {n:,} returns, {num_budgets} budgets, float64, {torch.get_num_threads()} thread(s)")
    for name, r, kw in cases:
        c = certify_returns(r, budgets=budgets, sigma=0.4, reward_range=(0, 200), **kw)
        sec = _time(lambda: certify_returns(r, budgets=budgets, sigma=0.4, reward_range=(0, 200), **kw))
        # reference: the numpy/scipy theory function, one budget at a time
        p, t = c.tail_lower_bounds.numpy(), c.thresholds.numpy()
        ts = time.perf_counter()
        loop = [certified_expected_reward(t, p, budget=float(b), sigma=0.4, reward_min=0.0) for b in budgets]
        loop_s = time.perf_counter() - ts
        err = float(np.max(np.abs(np.array(loop) - c.expected_reward.numpy()) / np.maximum(1.0, np.abs(loop))))
        print(f"  {name:52s} m = {c.thresholds.numel():>9,}  {sec * 1e3:8.1f} ms   "
              f"(per-budget theory loop {loop_s * 1e3:8.1f} ms, max rel diff {err:.1e})")


def bench_episodes(num_episodes: int = 10_000, seed: int = 0, run_folder: str | None = None) -> None:
    from polab.scaled.checkpoint import latest_checkpoint, load_checkpoint
    from polab.scaled.control.envs import ENV_SPECS
    from polab.scaled.control.policies import make_actor_critic
    from polab.scaled.control.rollout import run_episodes

    spec = ENV_SPECS["cartpole"]
    torch.manual_seed(seed)
    policies = [("untrained MLP 2x64", make_actor_critic(spec).eval())]  # short episodes: set-up dominates

    class _LeanRule(torch.nn.Module):  # pushes towards the pole's lean: long episodes, negligible policy cost
        def logits(self, x):
            x = x.flatten(1)
            s = x[:, 2] + 0.5 * x[:, 3]
            return torch.stack([-s, s], dim=1)

    policies.append(("linear lean rule", _LeanRule()))
    if run_folder is not None:  # the PPO policy of a `polab run smoothing-certify` run folder
        net = make_actor_critic(spec)
        net.load_state_dict(load_checkpoint(latest_checkpoint(run_folder))["policies"]["cartpole"]["state_dict"])
        policies.append(("trained MLP 2x64 (PPO)", net.eval()))
    print(f"smoothed evaluation, CartPole (200-step cap), sigma = 0.2, {num_episodes:,} episodes in one vectorised env")
    for label, pol in policies:
        for mode in (None, "uniform"):
            t = time.perf_counter()
            r, _ = run_episodes(pol, spec, sigma=0.2, num_episodes=num_episodes, seed=seed, budget=0.5 if mode else 0.0,
                                attack_mode=mode)
            sec = time.perf_counter() - t
            print(f"  {label:24s} {mode or 'clean':8s}: mean return {r.mean():7.2f}, {r.sum() / sec:12,.0f} env-steps/s, "
                  f"{num_episodes / sec:10,.0f} episodes/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--budgets", type=int, default=100)
    p.add_argument("--episodes", type=int, default=10_000)
    p.add_argument("--run-folder", default=None, help="a smoothing-certify run folder: also time its trained CartPole policy")
    a = p.parse_args()
    torch.set_num_threads(1)
    bench_certificates(a.n, a.budgets)
    bench_episodes(a.episodes, run_folder=a.run_folder)


if __name__ == "__main__":
    main()
