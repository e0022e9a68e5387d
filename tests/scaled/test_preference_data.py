"""Preference pairs from JSONL and local datasets (polab.scaled.tasks.load_preference_data)."""

from __future__ import annotations

import json

import pytest

from polab.scaled.tasks import load_preference_data

PAIRS = [
    {"prompt": "Describe a cat.", "chosen": "Small, furry.", "rejected": "A cat is a domesticated ...", "source": "pets"},
    {"prompt": "Describe rain.", "chosen": "Wet.", "rejected": "", "id": 7},
]
EXPECTED = [
    {"prompt": "Describe a cat.", "chosen": "Small, furry.", "rejected": "A cat is a domesticated ...", "source": "pets"},
    {"prompt": "Describe rain.", "chosen": "Wet.", "rejected": "", "source": "all"},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_round_trip(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", PAIRS)
    assert load_preference_data(f"jsonl:{path}") == EXPECTED
    assert load_preference_data(str(path)) == EXPECTED  # a bare .jsonl path reads as JSONL


def test_field_names_are_configurable(tmp_path):
    rows = [{"q": p["prompt"], "good": p["chosen"], "bad": p["rejected"]} for p in PAIRS]
    got = load_preference_data(f"jsonl:{_write(tmp_path / 'p.jsonl', rows)}", prompt_field="q", chosen_field="good",
                               rejected_field="bad")
    assert [(g["prompt"], g["chosen"], g["rejected"]) for g in got] == [(e["prompt"], e["chosen"], e["rejected"]) for e in EXPECTED]


@pytest.mark.parametrize(
    "row,match",
    [
        ({"prompt": "p", "chosen": "a"}, r"line 2: missing the rejected field 'rejected' \(fields: \['chosen', 'prompt'\]\)"),
        ({"chosen": "a", "rejected": "b"}, r"line 2: missing the prompt field 'prompt'"),
        ({"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"},
         r"line 2: the chosen field 'chosen' must be a string, got list \(chat-format"),
        ({"prompt": " ", "chosen": "a", "rejected": "b"}, r"line 2: the prompt field 'prompt' is empty"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "source": 1}, r"line 2: the source field 'source' must be"),
    ],
)
def test_errors_name_the_field_and_the_record(tmp_path, row, match):
    path = _write(tmp_path / "p.jsonl", [PAIRS[0], row])
    with pytest.raises(ValueError, match=match):
        load_preference_data(f"jsonl:{path}")


def test_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_preference_data(f"jsonl:{tmp_path / 'none.jsonl'}")
    with pytest.raises(ValueError, match="split applies to Hugging Face datasets only"):
        load_preference_data(f"jsonl:{_write(tmp_path / 'p.jsonl', PAIRS)}", split="test")
    with pytest.raises(ValueError, match="preference data spec must be"):
        load_preference_data("")


def test_local_datasets_folder_and_file(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{k: p.get(k) for k in ("prompt", "chosen", "rejected")} for p in PAIRS])
    datasets.disable_progress_bars()
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "prefs"))
    ds.to_parquet(str(tmp_path / "prefs.parquet"))
    datasets.enable_progress_bars()
    plain = [dict(e, source="all") for e in EXPECTED]
    assert load_preference_data(f"hf-dataset:{tmp_path / 'prefs'}") == plain
    assert load_preference_data(f"hf-dataset:{tmp_path / 'prefs'}@test") == plain[1:]
    assert load_preference_data(str(tmp_path / "prefs"), split="test") == plain[1:]  # a bare folder: datasets
    assert load_preference_data(str(tmp_path / "prefs.parquet")) == plain
    bad = datasets.Dataset.from_list([{"prompt": "p", "chosen": "a"}])
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"bad record 1: missing the rejected field 'rejected'"):
        load_preference_data(f"hf-dataset:{tmp_path / 'bad'}")
