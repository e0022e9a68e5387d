r"""TRL's GRPO trainer with a polab curriculum: prompts drawn by DUMP, advantages fed back.

:class:`CurriculumGRPOTrainer` subclasses ``trl.GRPOTrainer`` (tested with
TRL 1.16.0). The training data carries a source column (one distribution name
per row, e.g. ``"kk_3people"``); before every generation step the trainer
draws the generation batch's prompts from a polab scheduler
(:class:`polab.estimators.curriculum.DumpScheduler` by default), and after
TRL has computed the group-normalised advantages of that batch it passes them
to ``scheduler.update(source_ids, advantages)``, gathered across all ranks, so
that every rank holds the same scheduler state and draws the same prompts.

Drawing, as in the DUMP authors' sampler (``shared/notes/theory_core.md``
1.3): for each prompt slot a source :math:`j \sim p` with
:math:`p` = ``scheduler.probabilities()``, then a row of that source uniformly
with replacement; each prompt is repeated ``num_generations`` times and the
global batch is split across ranks in rank order, the layout TRL's
``RepeatSampler`` and accelerate's batch sharding give (trl 1.16.0
``trainer/grpo_trainer.py``, ``GRPOTrainer._get_train_sampler``). The
randomness is a CPU ``torch.Generator`` seeded from ``(curriculum_seed,
generation index)``, so a resumed run draws what the uninterrupted run drew.

Example
-------
>>> from datasets import Dataset
>>> from trl import GRPOConfig
>>> from polab.estimators.curriculum import DumpScheduler
>>> from polab.integrations.trl import CurriculumGRPOTrainer
>>> data = Dataset.from_list([{"prompt": "2+2=", "source": "easy"},
...                           {"prompt": "17*23=", "source": "hard"}])
>>> def my_reward(completions, source, **kwargs):   # TRL passes dataset columns as keyword lists
...     return [float("4" in c) if s == "easy" else float("391" in c) for c, s in zip(completions, source)]
>>> trainer = CurriculumGRPOTrainer(
...     model="path/to/causal-lm", reward_funcs=my_reward,
...     args=GRPOConfig(output_dir="out", num_generations=4, per_device_train_batch_size=8),
...     train_dataset=data, scheduler=DumpScheduler(["easy", "hard"]), source_column="source")
>>> trainer.train()
>>> trainer.scheduler.probabilities()        # the curriculum after training

Notes
-----
Why not a dataset sampler: prompts must be chosen *after* the previous batch's
advantages reached the scheduler, but the data pipeline reads ahead. The
transformers ``Trainer`` fetches all ``gradient_accumulation_steps`` batches
of an optimizer step at once (``Trainer.get_batch_samples``) and accelerate's
``DataLoaderShard.__iter__`` fetches one more batch before yielding the
current one ("We iterate one batch ahead", accelerate 1.16.0
``data_loader.py``), so a sampler would draw batch :math:`k+1` before batch
:math:`k` is scored. This class therefore keeps TRL's dataloader (it sets the
epoch length and the batch shapes) and replaces the rows of each training
generation batch inside ``_generate_and_score_completions``, the hook where
TRL also computes the advantages. Evaluation batches are left unchanged. Only
the dataloader rows' keys are kept, so reward functions receive the same
columns as under plain TRL.

The scheduler state and the generation counter are written to
``polab_curriculum.json`` in every checkpoint folder and read back on
``train(resume_from_checkpoint=...)``, through the hooks TRL itself uses for
its adaptive-entropy state (``GRPOTrainer._save_checkpoint`` /
``_load_optimizer_and_scheduler``, trl 1.16.0).

These are private TRL methods: the class checks at construction that they
exist and names the tested TRL version when they do not.

The scheduler receives exactly the advantages TRL trains on, one per
completion: a completion for which every reward function returned ``None``
gets advantage 0 from TRL and is fed as 0. With TRL's default
``scale_rewards="group"`` the advantages are standardised within each group,
so DUMP's learnability (mean :math:`|A|`) mostly measures the fraction of
groups with non-zero reward variance, as in the authors' verl setting.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from trl import GRPOTrainer

from polab.estimators.curriculum import DumpScheduler
from polab.integrations.curriculum_draw import draw_prompts, generation_seed, source_pools

__all__ = [
    "CurriculumGRPOTrainer",
    "CurriculumStep",
    "CURRICULUM_STATE_FILE",
    "TESTED_TRL_VERSION",
    "draw_prompts",
    "gather_across_ranks",
    "generation_seed",
]

TESTED_TRL_VERSION = "1.16.0"
CURRICULUM_STATE_FILE = "polab_curriculum.json"
_HOOKS = ("_generate_and_score_completions", "_save_checkpoint", "_load_optimizer_and_scheduler")


@dataclass(frozen=True)
class CurriculumStep:
    """What the curriculum did in one training generation step (global over ranks).

    Shapes: ``probabilities`` [K] (in ``scheduler.names`` order, as used for
    the draw); ``prompt_sources`` and ``prompt_rows`` [P] (one per distinct
    prompt); ``sources`` and ``advantages`` [P * num_generations] (one per
    completion, the values passed to ``scheduler.update``).
    """

    generation: int
    probabilities: np.ndarray
    prompt_sources: np.ndarray
    prompt_rows: np.ndarray
    sources: np.ndarray
    advantages: np.ndarray


def gather_across_ranks(local: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor from every rank in rank order (identity without torch.distributed).

    Every rank must pass the same number of elements (TRL gives every rank the
    same share of a generation batch); the result is on ``local``'s device.
    """
    if local.ndim != 1:
        raise ValueError(f"gather_across_ranks expects a 1-D tensor; got shape {tuple(local.shape)}.")
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    world = dist.get_world_size()
    size = torch.tensor([local.numel()], device=local.device, dtype=torch.int64)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    if len({int(s.item()) for s in sizes}) != 1:
        raise ValueError(f"every rank must hold the same number of advantages; got {[int(s.item()) for s in sizes]}.")
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)


def _column(dataset, name: str) -> list:
    if hasattr(dataset, "column_names"):
        if name not in dataset.column_names:
            raise ValueError(
                f"source_column {name!r} is not a column of train_dataset (columns: {list(dataset.column_names)}); "
                "add a column naming each row's distribution, or pass source_column=<its name>."
            )
        return list(dataset[name])
    rows = [dataset[i] for i in range(len(dataset))]
    if rows and name not in rows[0]:
        raise ValueError(f"source_column {name!r} is missing from the rows of train_dataset; add it or pass source_column=.")
    return [r[name] for r in rows]


class CurriculumGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` whose training prompts are drawn by a polab curriculum scheduler.

    Parameters
    ----------
    *args, **kwargs
        As for ``trl.GRPOTrainer`` (``model``, ``reward_funcs``, ``args``,
        ``train_dataset``, ...). ``train_dataset`` must be indexable (a
        ``datasets.Dataset``, not an ``IterableDataset``).
    scheduler : object, optional
        Anything with polab's scheduler interface (``names``,
        ``probabilities()``, ``update(source_ids, advantages)``,
        ``state_dict()``, ``load_state_dict()``). Default:
        ``DumpScheduler(sources in order of first appearance)``.
    source_column : str, default "source"
        Column of ``train_dataset`` naming each row's distribution; values are
        matched to ``scheduler.names`` as strings.
    curriculum_seed : int, optional
        Seed of the prompt draws (default: ``args.seed``); the same on every rank.

    Attributes
    ----------
    scheduler
        The scheduler (same state on every rank).
    last_step : CurriculumStep or None
        The latest training generation step.
    """

    def __init__(
        self,
        *args: Any,
        scheduler: Any | None = None,
        source_column: str = "source",
        curriculum_seed: int | None = None,
        **kwargs: Any,
    ):
        missing = [h for h in _HOOKS if not hasattr(GRPOTrainer, h)]
        if missing:
            import trl

            raise ImportError(
                f"trl {trl.__version__} has no GRPOTrainer.{', '.join(missing)}; CurriculumGRPOTrainer was written "
                f"against trl {TESTED_TRL_VERSION}: install `trl=={TESTED_TRL_VERSION}`."
            )
        super().__init__(*args, **kwargs)
        dataset = self.train_dataset
        if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ValueError(
                "CurriculumGRPOTrainer needs an indexable train_dataset (a datasets.Dataset, not an IterableDataset): "
                "the curriculum picks rows by index."
            )
        sources = [str(s) for s in _column(dataset, source_column)]
        if scheduler is None:
            scheduler = DumpScheduler(list(dict.fromkeys(sources)))
        for attr in ("names", "probabilities", "update", "state_dict", "load_state_dict"):
            if not hasattr(scheduler, attr):
                raise ValueError(
                    f"scheduler has no {attr!r}; pass a polab scheduler (polab.estimators.curriculum.DumpScheduler "
                    "or UniformScheduler) or an object with the same interface."
                )
        pools = source_pools(sources, scheduler.names, what=f"train_dataset column {source_column!r}")
        self.scheduler = scheduler
        self.source_column = source_column
        self.curriculum_seed = int(self.args.seed if curriculum_seed is None else curriculum_seed)
        self.last_step: CurriculumStep | None = None
        self._pools = pools
        self._generation_index = 0

    # -- the draw and the feedback ---------------------------------------
    def _draw_generation_batch(self, local_rows: list[dict]) -> tuple[list[dict], dict]:
        world = self.accelerator.num_processes
        rank = self.accelerator.process_index
        local_n = len(local_rows)
        total = local_n * world
        group = self.num_generations
        if total % group:
            raise ValueError(
                f"the global generation batch ({total}) is not a multiple of num_generations ({group}); "
                "choose per_device_train_batch_size * steps_per_generation * world_size divisible by num_generations."
            )
        probabilities = np.asarray(self.scheduler.probabilities(), dtype=np.float64)
        generator = torch.Generator().manual_seed(generation_seed(self.curriculum_seed, self._generation_index))
        prompt_sources, prompt_rows = draw_prompts(probabilities, self._pools, total // group, generator=generator)
        sources = prompt_sources.repeat_interleave(group)
        rows = prompt_rows.repeat_interleave(group)
        keys = list(local_rows[0].keys()) if local_rows else []
        mine = rows[rank * local_n : (rank + 1) * local_n].tolist()
        drawn = []
        for r in mine:
            full = self.train_dataset[int(r)]
            drawn.append({k: full[k] for k in keys if k in full})
        info = {
            "probabilities": probabilities,
            "prompt_sources": prompt_sources.numpy(),
            "prompt_rows": prompt_rows.numpy(),
            "sources": sources.numpy(),
        }
        return drawn, info

    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        if not self.model.training:  # evaluation batches are not part of the curriculum
            return super()._generate_and_score_completions(inputs)
        drawn, info = self._draw_generation_batch(inputs)
        output = super()._generate_and_score_completions(drawn)
        local_adv = output["advantages"].detach()
        global_adv = gather_across_ranks(local_adv).to("cpu", torch.float64).numpy()
        if global_adv.shape[0] != info["sources"].shape[0]:
            raise RuntimeError(
                f"TRL returned {global_adv.shape[0]} advantages for {info['sources'].shape[0]} completions; "
                f"this TRL version behaves differently from the tested {TESTED_TRL_VERSION}."
            )
        self.scheduler.update(info["sources"].tolist(), global_adv)
        self.last_step = CurriculumStep(generation=self._generation_index, advantages=global_adv, **info)
        for name, p in zip(self.scheduler.names, info["probabilities"].tolist()):
            self._metrics["train"][f"curriculum/p/{name}"].append(p)
        self._generation_index += 1
        return output

    # -- checkpoints ------------------------------------------------------
    def _curriculum_state(self) -> dict:
        return {
            "scheduler": self.scheduler.state_dict(),
            "generation_index": self._generation_index,
            "curriculum_seed": self.curriculum_seed,
            "source_column": self.source_column,
        }

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            with open(os.path.join(folder, CURRICULUM_STATE_FILE), "w") as f:
                json.dump(self._curriculum_state(), f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, CURRICULUM_STATE_FILE)
        if not os.path.isfile(path):
            raise ValueError(
                f"resume_from_checkpoint={checkpoint!r} has no {CURRICULUM_STATE_FILE}: it was not written by "
                "CurriculumGRPOTrainer, so the curriculum state cannot be restored. Resume from one of its "
                "checkpoints, or start without resume_from_checkpoint."
            )
        with open(path) as f:
            state = json.load(f)
        if state["curriculum_seed"] != self.curriculum_seed:
            raise ValueError(
                f"the checkpoint's curriculum_seed {state['curriculum_seed']} differs from this trainer's "
                f"{self.curriculum_seed}; pass curriculum_seed={state['curriculum_seed']} to resume exactly."
            )
        self.scheduler.load_state_dict(state["scheduler"])
        self._generation_index = int(state["generation_index"])
