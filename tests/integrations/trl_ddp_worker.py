"""Worker for test_trl.py::test_two_ranks_share_scheduler_state (torchrun, 2 CPU processes, gloo through accelerate)."""

import json
import sys
from pathlib import Path

from transformers import TrainerCallback

from polab.integrations.trl import CurriculumGRPOTrainer
from polab.scaled.models import load_model
from tests.integrations.trl_fixtures import SOURCES, RecordingDump, grpo_args, source_reward, tiny_dataset


class _Record(TrainerCallback):
    def __init__(self):
        self.trainer = None
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        tr = self.trainer
        self.steps.append(
            {
                "sources": tr.last_step.sources.tolist(),
                "advantages": tr.last_step.advantages.tolist(),
                "trl_advantages": list(tr._logs["advantages"]),
                "trl_prompts": list(tr._logs["prompt"]),
                "prompt_rows": tr.last_step.prompt_rows.tolist(),
            }
        )


def main(out: str) -> None:
    lm = load_model("tiny-llama", seed=0)
    record = _Record()
    scheduler = RecordingDump(list(SOURCES), bonus="paper")
    trainer = CurriculumGRPOTrainer(
        model=lm.model,
        reward_funcs=source_reward,
        args=grpo_args(Path(out) / "run", max_steps=2, per_device_train_batch_size=2, save_strategy="no"),
        train_dataset=tiny_dataset(),
        processing_class=lm.tokenizer,
        callbacks=[record],
        scheduler=scheduler,
    )
    record.trainer = trainer
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {
        "world": trainer.accelerator.num_processes,
        "state": scheduler.state_dict(),
        "steps": record.steps,
        "fed": [{"sources": c["sources"], "advantages": c["advantages"].tolist()} for c in scheduler.calls],
    }
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
    # Tear the process group down explicitly, then leave without running C++ static destructors: in one CI run
    # rank 0 aborted at interpreter exit ("terminate called without an active exception", SIGABRT) after both
    # ranks had finished and written their results; the results are what the test checks.
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
