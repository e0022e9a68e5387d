"""Per-checkpoint diagnostics of one offline run (TD3+BC, PRDC, A2PR): actions, Q values, evaluation episodes.

::

    .venv/bin/python scripts/offline_diagnose.py --dataset hopper-medium --method prdc --grad-steps 4000 --every 500

Trains :class:`polab.scaled.trainers.offline.OfflineTrainer` with the settings of ``polab run offline-mujoco``'s cpu
preset (hidden 64, A2PR VAE 64, the authors' per-task options from ``METHOD_OPTIONS``) and after every ``--every``
gradient steps prints, on a fixed probe of 2,048 dataset states:

- ``pi``: the actor's mean action per dimension and the fraction with ``|pi| > 0.99 max_action`` (saturation), next
  to the dataset's;
- ``mse``: the mean squared gap between the actor's and the dataset's action at the same state;
- ``Q(s,a)``: the first critic on the dataset actions, next to the data's Monte Carlo discounted return-to-go
  (exact where episodes terminate; a lower bound where they were truncated), and ``Q(s,pi)-Q(s,a)``: how much
  better the critic rates the actor's action than the data's (a growing gap with a growing action gap is the
  out-of-distribution overestimation the regularisers are meant to prevent);
- ``eval``: the return and the length of ``--episodes`` deterministic evaluation episodes (seeds ``10**6 + 100 k + i``).

It writes its run folder under ``--out`` (default ``/tmp/polab_offline_diagnose``) and nothing else.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def discounted_return_to_go(rewards: np.ndarray, ends: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = r_t + gamma G_{t+1}`` within each episode (``ends[t]`` true at an episode's last transition)."""
    g = np.zeros(len(rewards))
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        if ends[t]:
            acc = 0.0
        acc = float(rewards[t]) + gamma * acc
        g[t] = acc
    return g


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="hopper-medium")
    p.add_argument("--method", default="prdc", choices=("td3bc", "prdc", "a2pr"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grad-steps", type=int, default=4000)
    p.add_argument("--every", type=int, default=500, help="gradient steps between diagnostics")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--vae-hidden", type=int, default=64)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method option (e.g. mask=1.0); repeatable")
    p.add_argument("--out", default="/tmp/polab_offline_diagnose")
    a = p.parse_args(argv)
    if a.every < 1 or a.grad_steps < a.every or a.grad_steps % a.every:
        raise SystemExit("--grad-steps must be a positive multiple of --every")
    import gymnasium as gym
    import torch

    from polab.scaled.experiments.offline_mujoco import METHOD_OPTIONS
    from polab.scaled.offline.datasets import parse_name
    from polab.scaled.trainers.offline import OfflineConfig, OfflineTrainer

    torch.set_num_threads(1)
    opts = dict(METHOD_OPTIONS.get(parse_name(a.dataset)[0], {}).get(a.method, {}))
    if a.method == "a2pr":
        opts["vae_hidden"] = a.vae_hidden
    for kv in a.option:
        k, _, v = kv.partition("=")
        if not v:
            raise SystemExit(f"--option takes KEY=VALUE, got {kv!r}")
        opts[k] = float(v)
    n = a.grad_steps // a.every
    cfg = OfflineConfig(dataset=a.dataset, method=a.method, methods={a.method: opts}, seed=a.seed, steps=n,
                        grad_steps_per_step=a.every, hidden=a.hidden, eval_every=10**9, eval_episodes=1,
                        checkpoint_every=10**9, keep_checkpoints=1, out=a.out, overwrite=True, progress=False,
                        tensorboard=False, torch_threads=1)
    tr = OfflineTrainer(cfg)
    ds, D, L, ma = tr.dataset, tr.data, tr.learner, tr.max_action
    g = discounted_return_to_go(ds.rewards, (ds.terminals > 0) | (ds.timeouts > 0), cfg.gamma)
    probe = torch.randint(len(ds), (2048,), generator=torch.Generator().manual_seed(123))
    s, a_data = D["states"][probe], D["actions"][probe]
    print(f"{a.dataset} {a.method} seed {a.seed} options {opts} hidden {a.hidden}; data: action mean "
          f"{a_data.mean(0).numpy().round(2)}, saturated {(a_data.abs() > 0.99 * ma).float().mean(0).numpy().round(2)}, "
          f"MC discounted return {g[probe.numpy()].mean():.1f}, episode return {ds.returns.mean():.1f}")
    t0 = time.perf_counter()
    for k in range(n):
        r = tr.train_step()
        with torch.no_grad():
            pi = L.actor(s)
            q_pi, q_a = L.critic.q1(s, pi).reshape(-1), L.critic.q1(s, a_data).reshape(-1)
        env = gym.make(ds.env_id)
        rets, lens = [], []
        for e in range(a.episodes):
            obs, _ = env.reset(seed=10**6 + 100 * k + e)
            tot, T, done = 0.0, 0, False
            while not done:
                obs, rew, term, trunc, _ = env.step(tr.act(obs))
                tot, T, done = tot + float(rew), T + 1, term or trunc
            rets.append(tot)
            lens.append(T)
        env.close()
        extra = {m: round(float(r.metrics[m]), 3) for m in ("dc_distance", "vae_chosen", "positive_advantage") if m in r.metrics}
        print(f"[{(k + 1) * a.every:6d} gs {time.perf_counter() - t0:5.0f}s] pi {pi.mean(0).numpy().round(2)} sat "
              f"{(pi.abs() > 0.99 * ma).float().mean(0).numpy().round(2)} mse {float(((pi - a_data) ** 2).mean()):.3f} | "
              f"Q(s,a) {float(q_a.mean()):6.1f} Q(s,pi)-Q(s,a) {float((q_pi - q_a).mean()):+6.2f} | eval return "
              f"{np.mean(rets):6.1f} (score {float(ds.normalized_score(np.mean(rets))):5.1f}) length {lens} {extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
