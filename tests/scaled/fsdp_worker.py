"""Worker for tests/scaled/test_fsdp.py (torchrun, 2 processes, gloo): FSDP2 vs DDP updates, and FSDP exact resume.

Two configurations: plain GRPO (the policy alone), and PPO with a critic (``ppo-gae``) and a KL penalty to the
reference model in the token rewards, so that the policy, the reference and the critic are all sharded. In the
second, the reference is moved off the initial policy and the critic's zero-initialised value head is made
non-zero (deterministic, the same on every rank and in every arm), so that at the first step the KL term and the
critic's network both receive gradients; otherwise the reference would equal the policy (KL gradient 0) and only
the head would move.
"""

import sys
from pathlib import Path

import torch

from polab.scaled import distributed as D
from polab.scaled.trainers.grpo import GRPOTrainer
from tests.scaled.grpo_fixtures import DistinctCharsTask, tiny_config

CRITIC = dict(advantage="ppo-gae", kl_coef=0.05, methods={"ppo-gae": {"value_lr": 1e-3}})


def _full(module, sharded: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if sharded:
        return {k: v.detach().clone() for k, v in get_model_state_dict(module, options=StateDictOptions(full_state_dict=True)).items()}
    module = getattr(module, "module", module)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _snapshot(tr) -> dict:
    sharded = tr.fsdp and tr._sharded
    out = {"policy": _full(tr.policy, sharded)}
    if tr.ref is not None:
        out["ref"] = _full(tr.ref, sharded)
    if tr.critic is not None:
        out["critic"] = _full(tr.critic, sharded)
    return out


def _perturb(tr, resuming: bool) -> None:
    """Reference off the initial policy, critic head non-zero (before the first step; the same on every rank)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in tr.ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        head = torch.randn(tr.critic.head.weight.shape, generator=g) * 0.1
        if not resuming:  # a resumed critic comes from the checkpoint
            tr.critic.head.weight.copy_(head)


def _trainer(out, info, perturb=False, **kw):
    tr = GRPOTrainer(tiny_config(out, prompts_per_step=2, **kw), info, task=DistinctCharsTask((1, 2)))
    if perturb:
        _perturb(tr, resuming=bool(kw.get("resume")))
    return tr


def main(out: str) -> None:
    info = D.init_distributed("cpu")
    out = Path(out)
    results = {}
    # one step, DDP and FSDP, from the same initial weights and seeds: the policy alone, then policy + reference + critic
    for tag, extra in (("", {}), ("_critic", CRITIC)):
        for par in ("ddp", "fsdp"):
            tr = _trainer(out / f"{par}{tag}", info, perturb=bool(extra), steps=1, parallel=par, **extra)
            results[f"init_{par}{tag}"] = _snapshot(tr)
            tr.train_step()
            results[f"step1_{par}{tag}"] = _snapshot(tr)
            results[f"dtensor_{par}{tag}"] = {name: all(type(p).__name__ == "DTensor" for p in m.parameters())
                                               for name, m in (("policy", tr.policy), ("ref", tr.ref), ("critic", tr.critic)) if m is not None}
            tr.close()
    # FSDP with policy + reference + critic: two steps straight, vs one step + checkpoint + resume + one step
    tr = _trainer(out / "straight", info, perturb=True, steps=2, parallel="fsdp", **CRITIC)
    tr.train()
    results["straight"] = _snapshot(tr)
    tr = _trainer(out / "resumed", info, perturb=True, steps=2, parallel="fsdp", stop_after=1, **CRITIC)
    tr.train()
    tr = _trainer(out / "resumed", info, perturb=True, steps=2, parallel="fsdp", resume=True, **CRITIC)
    tr.train()
    results["resumed"] = _snapshot(tr)
    results["scheduler"] = tr.scheduler.state_dict()
    torch.save(results, out / f"rank{info.rank}.pt")
    D.barrier(info)
    D.shutdown(info)


if __name__ == "__main__":
    main(*sys.argv[1:])
