"""Preference pairs from the user's data: JSONL or a local Hugging Face ``datasets`` dataset.

Each record holds a prompt and two responses, the preferred one and the
other (fields ``prompt``, ``chosen``, ``rejected`` by default: the field
names of TRL's standard, non-conversational preference format), and
optionally a ``source``.

Example ``pairs.jsonl``::

    {"prompt": "Describe a cat.", "chosen": "Small and furry.", "rejected": "A cat is a ..."}
"""

from __future__ import annotations

from pathlib import Path

from .prompt_data import DEFAULT_SOURCE, _path_and_split, read_hf_dataset, read_jsonl

__all__ = ["load_preference_data", "PREFERENCE_FIELDS"]

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


def load_preference_data(
    spec: str,
    *,
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    source_field: str = "source",
    split: str | None = None,
) -> list[dict[str, str]]:
    """Preference records as ``{"prompt", "chosen", "rejected", "source"}`` dicts, in file order.

    Parameters
    ----------
    spec : str
        ``"jsonl:PATH"``, ``"hf-dataset:PATH"`` (``PATH@SPLIT`` picks a
        split; see :func:`~polab.scaled.tasks.prompt_data.read_hf_dataset`),
        or a bare path: ``.jsonl`` files read as JSONL, anything else as a
        Hugging Face dataset. Nothing is downloaded.
    prompt_field, chosen_field, rejected_field, source_field : str
        Field names in the data; the output always uses the standard keys.
        Records without ``source_field`` get the source ``"all"``.
    split : str, optional
        Split of a ``datasets.DatasetDict`` (default ``"train"``).

    Returns
    -------
    list of dict
        One per record, every value a str (``prompt`` non-empty).

    Raises
    ------
    ValueError
        Missing data, or a record missing one of the three fields or holding
        a non-string there (chat-format message lists included); the message
        names the field and the record (JSONL: its line; datasets: its 1-based
        position).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"preference data spec must be 'jsonl:PATH', 'hf-dataset:PATH' or a path; got {spec!r}")
    kind, sep, rest = spec.partition(":")
    if sep and kind == "jsonl":
        if split is not None:
            raise ValueError("split applies to Hugging Face datasets only, not to a JSONL file")
        rows = read_jsonl(rest)
    elif sep and kind == "hf-dataset":
        path, split = _path_and_split(rest, split)
        rows = read_hf_dataset(path, split=split)
    elif Path(spec).suffix.lower() == ".jsonl" and split is None:
        rows = read_jsonl(spec)
    else:
        path, split = _path_and_split(spec, split)
        rows = read_hf_dataset(path, split=split)

    fields = {"prompt": prompt_field, "chosen": chosen_field, "rejected": rejected_field}
    out = []
    for where, rec in rows:
        item = {}
        for key, name in fields.items():
            if name not in rec or rec[name] is None:
                raise ValueError(f"{where}: missing the {key} field {name!r} (fields: {sorted(rec)}); "
                                 f"set {key}_field=... to the field that holds it")
            value = rec[name]
            if not isinstance(value, str):
                raise ValueError(f"{where}: the {key} field {name!r} must be a string, got {type(value).__name__} "
                                 f"(chat-format message lists are not read: store the text)")
            item[key] = value
        if not item["prompt"].strip():
            raise ValueError(f"{where}: the prompt field {prompt_field!r} is empty")
        source = rec.get(source_field)
        if source is not None and (not isinstance(source, str) or not source):
            raise ValueError(f"{where}: the source field {source_field!r} must be a non-empty string, got {source!r}")
        item["source"] = source if source is not None else DEFAULT_SOURCE
        out.append(item)
    return out
