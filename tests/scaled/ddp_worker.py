"""Worker for test_ddp_two_processes_keep_identical_state (run under torchrun with 2 processes, gloo)."""

import sys
from pathlib import Path

import torch

from polab.scaled import distributed as D
from polab.scaled.trainers.grpo import GRPOTrainer
from tests.scaled.grpo_fixtures import DistinctCharsTask, tiny_config


#: extra options by mode: "ppo" runs 2 PPO epochs of 2 mini-batches (8 responses each, 4 per rank) with micro-batches of one group
MODES = {"plain": {}, "ppo": dict(prompts_per_step=4, ppo_epochs=2, mini_batch_size=8, micro_batch_size=4)}


def main(out: str, mode: str = "plain") -> None:
    info = D.init_distributed("cpu")
    cfg = tiny_config(Path(out) / "run", steps=2, **{"prompts_per_step": 2, **MODES[mode]})
    tr = GRPOTrainer(cfg, info, task=DistinctCharsTask((1, 2)))
    init = {k: v.detach().clone() for k, v in tr.policy.state_dict().items()}
    tr.train()
    state = {"params": tr.policy.state_dict(), "init": init, "scheduler": tr.scheduler.state_dict()}
    torch.save(state, Path(out) / f"rank{info.rank}.pt")
    D.shutdown(info)


if __name__ == "__main__":
    main(*sys.argv[1:])
