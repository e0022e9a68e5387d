"""Batched episodes of a smoothed policy, clean or under an adaptive attack."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .attack import make_attack
from .envs import EnvSpec, make_vector_env
from .policies import SmoothedPolicy

__all__ = ["run_episodes"]


def run_episodes(
    net, spec: EnvSpec, *, sigma: float, num_episodes: int, seed: int, batch_size: int = 10_000,
    budget: float = 0.0, attack_mode: str | None = None, max_steps: int | None = None, progress: bool = False,
    device: str = "cpu", attack_options: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns of ``num_episodes`` independent smoothed episodes, and each episode's spent squared budget.

    Episodes run ``batch_size`` at a time in one vectorised environment; each
    sub-environment contributes its first episode (later ones, started by the
    autoreset, are ignored). With ``attack_mode`` set, the attack of that mode
    (:func:`polab.scaled.control.attack.make_attack`; ``attack_options`` go to
    :class:`~polab.scaled.control.attack.SmoothedPGDAttack`) of total budget
    ``budget`` perturbs every frame before the smoothing noise is added; the
    smoothed-pgd attacker draws its own noise from a generator seeded apart
    from the agent's.
    ``max_steps`` (default ``spec.max_steps``) truncates episodes (smoke tests).
    The network and the noise live on ``device``; environments step on the CPU.
    """
    dev = torch.device(device)
    net = net.to(dev)
    cap = int(max_steps or spec.max_steps)
    out_r, out_s = [], []
    done_eps = 0
    k = 0
    bar = tqdm(total=num_episodes, desc=f"{spec.name} sigma={sigma} B={budget} {attack_mode or 'clean'}",
               disable=not progress, leave=False)
    while done_eps < num_episodes:
        n = min(batch_size, num_episodes - done_eps)
        s = seed * 1_000_003 + k
        env = make_vector_env(spec, n, seed=s)
        obs, _ = env.reset(seed=s)
        gen = torch.Generator(device=dev).manual_seed(s)
        pol = SmoothedPolicy(net, sigma=sigma, frame_stack=spec.frame_stack, generator=gen)
        frames = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=dev)
        attack = None
        if attack_mode is not None:
            attack = make_attack(net, mode=attack_mode, budget=budget, horizon=cap, sigma=sigma,
                                 generator=torch.Generator(device=dev).manual_seed(s + 0x5EED), **(attack_options or {}))
            attack.reset(n, dev)
        alive = torch.ones(n, dtype=torch.bool, device=dev)
        ret = np.zeros(n)
        with torch.no_grad():
            pol.reset(frames)
        for _ in range(cap):
            if attack is not None:
                with torch.enable_grad():
                    eps = attack.perturb(frames, pol, alive)
                frames = frames + eps
            a = pol.act(frames)
            obs, r, te, tr, _ = env.step(a.cpu().numpy())
            r = np.asarray(r, dtype=np.float64)
            alive_np = alive.cpu().numpy()
            ret += np.where(alive_np, r, 0.0)
            done = np.asarray(te) | np.asarray(tr)
            if spec.stop_on_reward:
                done = done | (r != 0)
            alive = alive & ~torch.as_tensor(done, device=dev)
            if not bool(alive.any()):
                break
            frames = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=dev)
        env.close()
        out_r.append(ret)
        out_s.append(attack.spent.cpu().numpy() if attack is not None else np.zeros(n))
        done_eps += n
        k += 1
        bar.update(n)
    bar.close()
    return np.concatenate(out_r), np.concatenate(out_s)
