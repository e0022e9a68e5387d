"""Prompt tasks from the user's data: a JSONL file or a local Hugging Face ``datasets`` dataset.

Each record holds a prompt (field ``prompt_field``, default ``"prompt"``, a
non-empty string), a reference answer (``answer_field``, default
``"answer"``; needed by the built-in rewards; a list holds several accepted
answers) and optionally a distribution name (``source_field``, default
``"source"``; records without it form the distribution ``"all"``), so the
DUMP curriculum schedules over the user's own sources. Other fields are
kept and handed to ``module:function`` rewards. The reward is chosen by name (:mod:`polab.scaled.tasks.rewards`).

Example ``data.jsonl``::

    {"prompt": "What is 2 + 2?", "answer": "4", "source": "easy"}
    {"prompt": "What is 17 * 23?", "answer": 391, "source": "hard"}

and ``build_task("jsonl:data.jsonl", reward="numeric")``.

Sampling
--------
``sampling="epoch"`` (default): within each distribution, records are drawn
without replacement in a random order; when all have been drawn a new epoch
starts with a fresh order. Each order is one ``rng.permutation(n)`` drawn
with the generator passed to :meth:`PromptDatasetTask.sample` at the moment
the epoch starts, so a run is deterministic given the generators it passes.
The position within each epoch is task state: :meth:`~PromptDatasetTask.state_dict`
/ :meth:`~PromptDatasetTask.load_state_dict` save and restore it (a trainer
that resumes exactly must checkpoint it). ``sampling="uniform"``: each draw is
one uniform index (with replacement) from ``rng``, no state.

Chat-format records (``messages`` lists) are not read: the protocol's
prompt is one string, which the trainer wraps in the chat template.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .protocol import RewardResult
from .registry import register_task
from .rewards import answer_numbers, answer_texts, make_reward

__all__ = [
    "PromptRecord",
    "PromptDatasetTask",
    "read_jsonl",
    "read_hf_dataset",
    "read_records",
    "DEFAULT_SOURCE",
    "SAMPLING",
]

#: Distribution of records without a source field.
DEFAULT_SOURCE = "all"
SAMPLING = ("epoch", "uniform")


@dataclass(frozen=True)
class PromptRecord:
    """One problem of a :class:`PromptDatasetTask`.

    Attributes
    ----------
    index : int
        Position in the data (0-based, over all records).
    source : str
        Its distribution.
    prompt : str
    answer : object
        The answer field's value (None when the record has none).
    data : dict
        The whole record as read (do not modify).
    """

    index: int
    source: str
    prompt: str
    answer: Any
    data: dict = field(compare=False, repr=False)


def read_jsonl(path: str | os.PathLike) -> list[tuple[str, dict]]:
    """Records of a JSONL file as ``(location, record)`` pairs; blank lines skipped.

    ``location`` is ``"<path> line N"`` (1-based), used in error messages.

    Raises
    ------
    ValueError
        The file is missing, a line is not JSON, or a line is not a JSON object.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"JSONL file {str(path)!r} does not exist (or is not a file); give the path of a local "
                         ".jsonl file with one JSON object per line")
    out = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{p} line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: each line must be a JSON object {{...}}, got {type(record).__name__}")
            out.append((where, record))
    if not out:
        raise ValueError(f"JSONL file {str(p)!r} holds no records")
    return out


_DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def read_hf_dataset(path: str | os.PathLike, *, split: str = "train") -> list[tuple[str, dict]]:
    """Records of a local Hugging Face ``datasets`` dataset as ``(location, record)`` pairs.

    Parameters
    ----------
    path : path
        A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
        (read with ``datasets.load_from_disk``), a data file ``.json``,
        ``.jsonl``, ``.parquet``, ``.csv`` or ``.arrow`` (read with
        ``datasets.load_dataset(<format>, data_files=path)``), or a folder of
        such files (``datasets.load_dataset(path)``).
    split : str
        The split of a ``DatasetDict`` (files and folders of files load as
        the split ``"train"``).

    Notes
    -----
    Never downloads: the path must exist locally, and the Hugging Face Hub
    is switched to offline mode (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)
    for the duration of the call. ``location`` is ``"<path> record N"`` (1-based).
    """
    p = Path(path).expanduser()
    if not str(path) or not p.exists():
        raise ValueError(f"dataset path {str(path)!r} does not exist; give a local folder written by "
                         "datasets' save_to_disk, or a local .json/.jsonl/.parquet/.csv file (nothing is downloaded)")
    try:
        import datasets
    except ImportError:
        raise ValueError("reading a Hugging Face dataset needs the 'datasets' package: pip install 'polab[llm]'") from None
    with _offline():
        try:
            if p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file()):
                ds = datasets.load_from_disk(str(p))
            elif p.is_file():
                builder = _DATA_FILE_BUILDERS.get(p.suffix.lower())
                if builder is None:
                    raise ValueError(f"dataset file {str(p)!r}: unknown extension {p.suffix!r}; "
                                     f"use one of {sorted(_DATA_FILE_BUILDERS)}")
                ds = datasets.load_dataset(builder, data_files=str(p))
            else:
                ds = datasets.load_dataset(str(p))
        except ValueError:
            raise
        except Exception as exc:  # datasets raises many types for unreadable input; report it as bad input
            raise ValueError(f"cannot read dataset {str(p)!r}: {type(exc).__name__}: {exc}") from exc
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"dataset {str(p)!r} has splits {sorted(ds)}, not {split!r}; choose one with split=...")
        ds = ds[split]
    if len(ds) == 0:
        raise ValueError(f"dataset {str(p)!r} holds no records")
    return [(f"{p} record {i + 1}", dict(row)) for i, row in enumerate(ds)]


class _offline:
    """Context manager: Hub and datasets offline (environment and datasets.config), progress bars off; restored on exit."""

    _VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")

    def __enter__(self):
        import datasets
        import datasets.config as cfg

        self._bars = not datasets.utils.logging.is_progress_bar_enabled()  # True: already disabled
        datasets.disable_progress_bars()  # a quiet read; restored below

        self._env = {k: os.environ.get(k) for k in self._VARS}
        for k in self._VARS:
            os.environ[k] = "1"
        self._cfg = {k: getattr(cfg, k) for k in self._VARS if hasattr(cfg, k)}
        for k in self._cfg:
            setattr(cfg, k, True)
        return self

    def __exit__(self, *exc):
        import datasets
        import datasets.config as cfg

        if not self._bars:
            datasets.enable_progress_bars()

        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for k, v in self._cfg.items():
            setattr(cfg, k, v)
        return False


def read_records(spec: str) -> list[tuple[str, dict]]:
    """Records for ``"jsonl:PATH"`` or ``"hf-dataset:PATH"`` (``hf-dataset:PATH@SPLIT`` picks a split)."""
    kind, sep, path = spec.partition(":")
    if kind == "jsonl" and sep:
        return read_jsonl(path)
    if kind == "hf-dataset" and sep:
        path, split = _path_and_split(path)
        return read_hf_dataset(path, split=split)
    raise ValueError(f"data spec must be 'jsonl:PATH' or 'hf-dataset:PATH', got {spec!r}")


def _path_and_split(path: str, split: str | None = None) -> tuple[str, str]:
    if "@" in path and not Path(path).expanduser().exists():
        path, _, at_split = path.rpartition("@")
        if split is not None and split != at_split:
            raise ValueError(f"split given twice: {at_split!r} in the spec and split={split!r}")
        split = at_split
    return path, split or "train"


class PromptDatasetTask:
    """A :class:`~polab.scaled.tasks.protocol.PromptTask` over records (see the module docstring).

    Parameters
    ----------
    records : sequence of dict, or of (location, dict) pairs
        The data; locations (e.g. ``"data.jsonl line 7"``) appear in errors.
    reward : str or callable, default "exact"
        ``"exact"``, ``"numeric"``, ``"regex:PATTERN"``, ``"module:function"``
        or a callable ``(response, record) -> float | RewardResult``.
    prompt_field, answer_field, source_field : str
        Field names. Records without ``source_field`` go to ``"all"``.
    distributions : sequence of str, optional
        Keep only these distributions, in this order (default: all, in order
        of first appearance).
    sampling : {"epoch", "uniform"}
        Without replacement per epoch per distribution, or uniform with replacement.
    normalize_whitespace, ignore_case, rel_tol, abs_tol
        Passed to :func:`~polab.scaled.tasks.rewards.make_reward`.
    spec : str
        What :func:`~polab.scaled.tasks.registry.task_spec` reports.
    name : str, optional
        Defaults to ``spec``.

    Raises
    ------
    ValueError
        A record lacks the prompt field (or the answer field, for a built-in
        reward), a prompt is not a non-empty string, a source is not a string,
        a ``numeric`` answer is not a number; each message names the record.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]] | Sequence[tuple[str, Mapping[str, Any]]],
        *,
        reward: str | Callable = "exact",
        prompt_field: str = "prompt",
        answer_field: str = "answer",
        source_field: str = "source",
        distributions: Sequence[str] | None = None,
        sampling: str = "epoch",
        normalize_whitespace: bool = True,
        ignore_case: bool = False,
        rel_tol: float = 1e-9,
        abs_tol: float = 0.0,
        spec: str = "python:records",
        name: str | None = None,
    ) -> None:
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {list(SAMPLING)}, got {sampling!r}")
        for arg, value in (("prompt_field", prompt_field), ("answer_field", answer_field), ("source_field", source_field)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{arg} must be a non-empty str, got {value!r}")
        self._reward_fn = make_reward(reward, answer_field=answer_field, normalize_whitespace=normalize_whitespace,
                                      ignore_case=ignore_case, rel_tol=rel_tol, abs_tol=abs_tol)
        self.reward_spec = reward if isinstance(reward, str) else f"python:{getattr(reward, '__qualname__', reward)!s}"
        self.prompt_field, self.answer_field, self.source_field = prompt_field, answer_field, source_field
        self.sampling = sampling
        self.spec = spec
        self.name = name if name is not None else spec
        self.records: list[PromptRecord] = self._validate(records)

        by_source: dict[str, list[int]] = {}
        for r in self.records:
            by_source.setdefault(r.source, []).append(r.index)
        if distributions is not None:
            distributions = list(distributions)
            unknown = [d for d in distributions if d not in by_source]
            if unknown or not distributions or len(set(distributions)) != len(distributions):
                raise ValueError(f"distributions must be distinct names among the data's sources {list(by_source)}; "
                                 f"got {distributions}")
            by_source = {d: by_source[d] for d in distributions}
        self._by_source = {s: np.asarray(ix, dtype=np.int64) for s, ix in by_source.items()}
        self._order: dict[str, np.ndarray] = {}
        self._position: dict[str, int] = {}
        self._epoch: dict[str, int] = {s: 0 for s in self._by_source}

    # ------------------------------------------------------------------ data
    def _validate(self, records) -> list[PromptRecord]:
        needs = getattr(self._reward_fn, "needs_answer", None)
        out = []
        for i, item in enumerate(records):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                where, rec = item
            else:
                where, rec = f"record {i + 1}", item
            if not isinstance(rec, Mapping):
                raise ValueError(f"{where}: a record must be a dict, got {type(rec).__name__}")
            rec = dict(rec)
            if self.prompt_field not in rec:
                raise ValueError(f"{where}: missing the prompt field {self.prompt_field!r} (fields: {sorted(rec)}); "
                                 "set prompt_field=... to the field that holds the prompt")
            prompt = rec[self.prompt_field]
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{where}: the prompt field {self.prompt_field!r} must be a non-empty string, "
                                 f"got {type(prompt).__name__} {prompt!r:.60}")
            if needs is not None:
                if self.answer_field not in rec or rec[self.answer_field] is None:
                    raise ValueError(f"{where}: missing the answer field {self.answer_field!r} (fields: {sorted(rec)}), "
                                     f"which the {self.reward_spec!r} reward compares with; set answer_field=...")
                if needs == "number":
                    answer_numbers(rec, self.answer_field, where=where)
                else:
                    try:
                        answer_texts(rec, self.answer_field)
                    except ValueError as exc:
                        raise ValueError(f"{where}: {exc}") from None
            source = rec.get(self.source_field)
            if source is None:
                source = DEFAULT_SOURCE
            elif not isinstance(source, str) or not source:
                raise ValueError(f"{where}: the source field {self.source_field!r} must be a non-empty string, "
                                 f"got {source!r}")
            out.append(PromptRecord(index=i, source=source, prompt=prompt, answer=rec.get(self.answer_field), data=rec))
        if not out:
            raise ValueError("no records: the data is empty")
        return out

    def __len__(self) -> int:
        return len(self.records)

    # -------------------------------------------------------------- protocol
    @property
    def distributions(self) -> list[str]:
        """Source names, in order of first appearance in the data (or as given)."""
        return list(self._by_source)

    def size(self, source: str) -> int:
        """Number of records in ``source``."""
        return len(self._indices(source))

    def _indices(self, source: str) -> np.ndarray:
        if source not in self._by_source:
            raise ValueError(f"unknown source {source!r}; this task has {self.distributions}")
        return self._by_source[source]

    def sample(self, source: str, *, rng: np.random.Generator) -> PromptRecord:
        """The next record of ``source`` (see Sampling in the module docstring)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        ix = self._indices(source)
        if self.sampling == "uniform":
            return self.records[int(ix[int(rng.integers(len(ix)))])]
        pos = self._position.get(source, len(ix))
        if pos >= len(ix):
            self._order[source] = ix[rng.permutation(len(ix))]
            self._epoch[source] += 1
            pos = 0
        self._position[source] = pos + 1
        return self.records[int(self._order[source][pos])]

    def prompt(self, problem: PromptRecord) -> str:
        return problem.prompt

    def reference(self, problem: PromptRecord) -> str:
        """The answer as text: the first accepted one of a list, ``""`` when the record has none."""
        if problem.answer is None or problem.answer == []:
            return ""
        return answer_texts({"answer": problem.answer}, "answer")[0]

    def reward(self, response: str, problem: PromptRecord) -> RewardResult:
        if not isinstance(problem, PromptRecord):
            raise ValueError(f"problem must be a PromptRecord drawn from this task, got {type(problem).__name__}")
        return self._reward_fn(response, problem.data)

    # ----------------------------------------------------------------- state
    def epoch(self, source: str) -> int:
        """Epochs started in ``source`` (0 before the first draw)."""
        self._indices(source)
        return self._epoch[source]

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Sampling state (JSON-safe): per source, the epoch, the current order and the position in it."""
        return {s: {"epoch": self._epoch[s], "position": self._position.get(s, 0),
                    "order": self._order[s].tolist() if s in self._order else None} for s in self._by_source}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Restore :meth:`state_dict` output (of a task over the same data)."""
        if set(state) != set(self._by_source):
            raise ValueError(f"state has sources {sorted(state)}, this task has {sorted(self._by_source)}")
        for s, st in state.items():
            order = st.get("order")
            if order is None:
                self._order.pop(s, None)
                self._position.pop(s, None)
            else:
                order = np.asarray(order, dtype=np.int64)
                if sorted(order.tolist()) != sorted(self._by_source[s].tolist()):
                    raise ValueError(f"state for source {s!r} does not match this data (different records)")
                position = int(st["position"])
                if not 0 <= position <= len(order):
                    raise ValueError(f"state for source {s!r}: position {position} outside [0, {len(order)}]")
                self._order[s], self._position[s] = order, position
            self._epoch[s] = int(st["epoch"])


# --------------------------------------------------------------------------
# Registry entries
# --------------------------------------------------------------------------


def _data_task(kind: str, path: str, records: Iterable, options: dict) -> PromptDatasetTask:
    return PromptDatasetTask(list(records), spec=f"{kind}:{path}", name=kind, **options)


@register_task("jsonl")
def _jsonl(path: str, **options) -> PromptDatasetTask:
    """``jsonl:PATH``: one JSON object per line; options as :class:`PromptDatasetTask`."""
    resolved = str(Path(path).expanduser().resolve()) if path else path
    return _data_task("jsonl", resolved, read_jsonl(path), options)


@register_task("hf-dataset")
def _hf_dataset(path: str, split: str | None = None, **options) -> PromptDatasetTask:
    """``hf-dataset:PATH`` (``PATH@SPLIT`` or ``split=`` picks a split; default ``train``)."""
    path, split = _path_and_split(path, split)
    resolved = str(Path(path).expanduser().resolve()) if path else path
    spec_path = resolved if split == "train" else f"{resolved}@{split}"
    return _data_task("hf-dataset", spec_path, read_hf_dataset(path, split=split), options)


def _builder_signature(*leading: inspect.Parameter) -> inspect.Signature:
    """Leading parameters plus PromptDatasetTask's keyword options (so build_task can name the accepted options)."""
    own = [p for name, p in inspect.signature(PromptDatasetTask.__init__).parameters.items()
           if p.kind is p.KEYWORD_ONLY and name not in ("spec", "name")]
    return inspect.Signature([*leading, *own])


_PATH = inspect.Parameter("path", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)
_jsonl.__signature__ = _builder_signature(_PATH)
_hf_dataset.__signature__ = _builder_signature(
    _PATH, inspect.Parameter("split", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None"))
