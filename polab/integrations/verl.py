r"""A verl curriculum sampler over polab's DUMP scheduler (``data.sampler.class_path``).

verl's experimental curriculum interface (verl 0.7.1,
``verl/experimental/dataset/sampler.py``): ``AbstractSampler(Sampler[int])``
with an abstract ``__init__(self, data_source, data_config)``, and
``AbstractCurriculumSampler(AbstractSampler)`` adding an abstract
``update(self, batch: DataProto)``. verl builds the sampler in
``verl/trainer/main_ppo.py`` (``create_rl_sampler``) as
``class_(data_source=dataset, data_config=data_config)`` from
``load_extern_object(data.sampler.class_path, data.sampler.class_name)``,
asserts ``isinstance(sampler, AbstractSampler)`` and
``data.dataloader_num_workers == 0``, and after every training step
``verl/trainer/ppo/ray_trainer.py`` (``RayPPOTrainer.fit``) calls
``sampler.update(batch=batch)`` when the sampler is an
``AbstractCurriculumSampler``. ``sampler.py`` is byte-identical in the
wheels of verl 0.5.0, 0.6.1 and 0.7.1 (0.5.0 and 0.6.1 load the class with
``load_extern_type``, which also accepts ``pkg://``); it is absent from 0.4.x
and was removed in 0.8.0 (0.8.0, 0.9.0 and 0.9.1 have neither the file nor a
``class_path`` setting).

``DumpCurriculumSampler`` (built on first access, so that importing this
module does not import verl) subclasses verl's ``AbstractCurriculumSampler``
and draws every index as the DUMP authors' sampler does
(``shared/notes/theory_core.md`` 1.3): a source :math:`j \sim p`,
:math:`p` = ``scheduler.probabilities()`` read at that draw, then a row of
that source uniformly with replacement. ``update(batch)`` reduces the token
advantages ``batch.batch["advantages"]`` over ``batch.batch["response_mask"]``
to one mean per response and passes them, tagged with
``batch.non_tensor_batch[source_key]``, to
:class:`polab.estimators.curriculum.DumpScheduler`. verl's driver process
holds the whole batch, so no gathering across ranks is needed.

Usage (verl 0.7.1, Hydra overrides; ``+`` adds the polab options)::

    python -m verl.trainer.main_ppo ... \
        data.sampler.class_path=pkg://polab.integrations.verl \
        data.sampler.class_name=DumpCurriculumSampler \
        data.dataloader_num_workers=0 \
        +data.sampler.source_key=data_source +data.sampler.temperature=0.1

Options under ``data.sampler`` (all optional): ``source_key`` (default
``"data_source"``), ``names`` (the distributions, default: the sources in
order of first appearance), ``window`` (300), ``exploration`` (1.0),
``temperature`` (0.1), ``bonus`` (``"code"``), ``seed`` (default
``data.seed``, else 0).

Notes
-----
- Checkpoints: torchdata's ``StatefulDataLoader`` stores the sampler's
  ``state_dict()`` (scheduler, generator) and its iterator's (position in the
  epoch), and restores both on resume, so the draws continue exactly. But
  verl 0.7.1 saves the checkpoint (``ray_trainer.py`` line 1529) *before* it
  calls ``update`` for the same step (line 1600): a resumed run's scheduler
  lacks the last step's advantages (one batch fewer in the counts and
  windows). This sampler cannot see that batch at save time.
- ``__len__`` is ``len(data_source)`` draws per epoch (with replacement), so
  verl's step count per epoch is unchanged.
- A response with no tokens has no mean advantage; it is left out of the
  update (``last_skipped`` counts them).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Sampler

from polab.estimators.curriculum import DumpScheduler
from polab.integrations.curriculum_draw import draw_prompts, per_response_advantages, source_pools

__all__ = ["DumpSamplerCore", "VERL_INTERFACE_VERSION", "verl_sampler_class"]

VERL_INTERFACE_VERSION = "0.7.1"
_VERL_KEYS = ("class_path", "class_name")
_OPTIONS = ("source_key", "names", "window", "exploration", "temperature", "bonus", "seed")


def _get(config: Any, key: str, default: Any = None) -> Any:
    """``config[key]`` for a dict, an OmegaConf DictConfig or an attribute object; ``default`` when absent."""
    if config is None:
        return default
    if isinstance(config, Mapping) or hasattr(config, "keys"):
        return config[key] if key in config.keys() else default
    return getattr(config, key, default)


def _sampler_options(data_config: Any) -> dict:
    section = _get(data_config, "sampler")
    keys = list(section.keys()) if section is not None and hasattr(section, "keys") else []
    unknown = [k for k in keys if k not in _VERL_KEYS + _OPTIONS]
    if unknown:
        raise ValueError(
            f"data.sampler has unknown keys {unknown}; DumpCurriculumSampler reads {list(_OPTIONS)} "
            f"(besides verl's {list(_VERL_KEYS)})."
        )
    opts = {k: _get(section, k) for k in _OPTIONS if k in keys and _get(section, k) is not None}
    if "names" in opts:
        opts["names"] = [str(n) for n in opts["names"]]
    if "seed" not in opts:
        seed = _get(data_config, "seed")
        opts["seed"] = 0 if seed is None else int(seed)
    return opts


def _source_column(data_source: Any, key: str) -> list[str]:
    """The source of every row: verl's RLHFDataset keeps its rows in ``.dataframe`` (a datasets.Dataset)."""
    frame = getattr(data_source, "dataframe", None)
    for table in (frame, data_source):
        names = getattr(table, "column_names", None)
        if names is not None:
            if key not in names:
                raise ValueError(
                    f"data.sampler.source_key {key!r} is not a column of the training data (columns: {list(names)}); "
                    "set +data.sampler.source_key=<the column naming each row's distribution>."
                )
            return [str(v) for v in table[key]]
    rows = [data_source[i] for i in range(len(data_source))]
    if rows and key not in rows[0]:
        raise ValueError(f"rows of the training data have no {key!r}; set +data.sampler.source_key=<its name>.")
    return [str(r[key]) for r in rows]


class _CurriculumIterator(Iterator[int]):
    """One epoch of ``len(sampler)`` draws; its position is its state (torchdata restores it on resume)."""

    def __init__(self, sampler: "DumpSamplerCore"):
        self.sampler = sampler
        self.yielded = 0

    def __iter__(self) -> "_CurriculumIterator":
        return self

    def __next__(self) -> int:
        if self.yielded >= len(self.sampler):
            raise StopIteration
        self.yielded += 1
        return self.sampler.draw_index()

    def state_dict(self) -> dict:
        return {"yielded": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        self.yielded = int(state["yielded"])


class DumpSamplerCore(Sampler[int]):
    """DUMP curriculum sampler with verl's constructor and ``update(batch)``, free of verl imports.

    ``DumpCurriculumSampler`` is this class with verl's
    ``AbstractCurriculumSampler`` as a second base (see :func:`verl_sampler_class`).

    Parameters
    ----------
    data_source : sized dataset
        verl's ``RLHFDataset`` (sources read from ``.dataframe``), a
        ``datasets.Dataset``, or any indexable dataset of dict rows.
    data_config : DictConfig or dict
        verl's ``data`` config; options are read from ``data.sampler`` (module docstring).

    Attributes
    ----------
    scheduler : DumpScheduler
    generator : torch.Generator
        The only randomness of the draws (seeded from ``seed``).
    last_skipped : int
        Responses without tokens left out of the latest update.
    """

    def __init__(self, data_source: Any, data_config: Any):
        opts = _sampler_options(data_config)
        self.source_key = str(opts.pop("source_key", "data_source"))
        sources = _source_column(data_source, self.source_key)
        if len(sources) == 0:
            raise ValueError("the training data is empty; the curriculum sampler needs at least one row.")
        names = opts.pop("names", None) or list(dict.fromkeys(sources))
        self.seed = int(opts.pop("seed"))
        self.scheduler = DumpScheduler(names, **opts)
        self._pools = source_pools(sources, names, what=f"the training data's {self.source_key!r}")
        self.num_samples = len(sources)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.last_skipped = 0

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> _CurriculumIterator:
        return _CurriculumIterator(self)

    def draw_index(self) -> int:
        """One dataset index from the current probabilities (read at this draw)."""
        _, rows = draw_prompts(self.scheduler.probabilities(), self._pools, 1, generator=self.generator)
        return int(rows[0])

    def update(self, batch: Any) -> None:
        """Feed one training batch's advantages to the scheduler.

        Parameters
        ----------
        batch : verl ``DataProto`` (or any object with the same fields)
            ``batch.batch["advantages"]`` and ``batch.batch["response_mask"]``
            of shape [responses, response_length], and
            ``batch.non_tensor_batch[source_key]`` of shape [responses].
        """
        tensors, extra = batch.batch, batch.non_tensor_batch
        for key in ("advantages", "response_mask"):
            if key not in tensors.keys():
                raise ValueError(f"batch.batch has no {key!r}; call update after verl's compute_advantage.")
        if self.source_key not in extra.keys():
            raise ValueError(
                f"batch.non_tensor_batch has no {self.source_key!r} (keys: {list(extra.keys())}); "
                "set data.sampler.source_key to the dataset column naming each row's distribution."
            )
        values, valid = per_response_advantages(tensors["advantages"], tensors["response_mask"])
        sources = [str(s) for s in np.asarray(extra[self.source_key]).tolist()]
        if len(sources) != values.shape[0]:
            raise ValueError(f"{len(sources)} sources for {values.shape[0]} responses in the batch.")
        keep = valid.tolist()
        self.last_skipped = keep.count(False)
        self.scheduler.update([s for s, k in zip(sources, keep) if k], values[valid])

    def state_dict(self) -> dict:
        """Scheduler and generator state (plain containers); torchdata's StatefulDataLoader saves it."""
        return {
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state().tolist(),
            "source_key": self.source_key,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("source_key") != self.source_key:
            raise ValueError(
                f"sampler state was saved with source_key {state.get('source_key')!r}, not {self.source_key!r}; "
                "resume with the same data.sampler options."
            )
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))


def verl_sampler_class(base: type | None = None) -> type:
    """``DumpSamplerCore`` with verl's ``AbstractCurriculumSampler`` as a second base.

    ``base`` defaults to ``verl.experimental.dataset.sampler.AbstractCurriculumSampler``
    (imported here, which imports verl and its dependencies); tests pass the
    class defined by verl's source without importing the rest of verl.
    """
    if base is None:
        try:
            from verl.experimental.dataset.sampler import AbstractCurriculumSampler as base
        except ModuleNotFoundError as exc:
            raise ImportError(
                f"DumpCurriculumSampler needs verl's curriculum interface (verl.experimental.dataset.sampler, "
                f"in verl 0.5.0 to {VERL_INTERFACE_VERSION}, removed in 0.8.0): {exc}. "
                f"Install `verl=={VERL_INTERFACE_VERSION}`."
            ) from exc
    cls = type(
        "DumpCurriculumSampler",
        (DumpSamplerCore, base),
        {"__module__": __name__, "__qualname__": "DumpCurriculumSampler", "__doc__": DumpSamplerCore.__doc__},
    )
    return cls


def __getattr__(name: str):
    # verl loads the class by name (load_extern_object -> getattr(module, class_name)); build it on first access.
    if name == "DumpCurriculumSampler":
        cls = verl_sampler_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
