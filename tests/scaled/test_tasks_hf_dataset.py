"""Prompt tasks from local Hugging Face ``datasets`` data (hf-dataset:PATH): folders, files, splits, never downloads."""

from __future__ import annotations

import os

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from polab.scaled.tasks import build_task, task_options, task_spec  # noqa: E402
from polab.scaled.tasks.prompt_data import read_hf_dataset  # noqa: E402

ROWS = [{"question": f"q{i}", "answer": str(i), "source": "odd" if i % 2 else "even"} for i in range(6)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    ds = datasets.Dataset.from_list(ROWS)
    datasets.disable_progress_bars()
    ds.save_to_disk(str(root / "single"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(str(root / "dict"))
    ds.to_parquet(str(root / "rows.parquet"))
    ds.to_json(str(root / "rows.jsonl"))
    (root / "files").mkdir()
    ds.to_parquet(str(root / "files" / "train.parquet"))
    datasets.enable_progress_bars()
    return root


@pytest.mark.parametrize("name", ["single", "rows.parquet", "rows.jsonl", "files"])
def test_every_local_form_round_trips(data_dir, name):
    task = build_task(f"hf-dataset:{data_dir / name}", prompt_field="question")
    assert task_spec(task) == f"hf-dataset:{(data_dir / name).resolve()}"
    assert [r.data for r in task.records] == ROWS
    assert task.distributions == ["even", "odd"]
    p = task.sample("odd", rng=np.random.default_rng(0))
    assert task.reward(p.answer, p).correct and not task.reward("no", p).correct


def test_splits(data_dir):
    by_option = build_task(f"hf-dataset:{data_dir / 'dict'}", split="test", prompt_field="question")
    by_spec = build_task(f"hf-dataset:{data_dir / 'dict'}@test", prompt_field="question")
    assert [r.data for r in by_option.records] == [r.data for r in by_spec.records] == ROWS[:2]
    assert task_spec(by_option) == task_spec(by_spec) == f"hf-dataset:{(data_dir / 'dict').resolve()}@test"
    assert task_options(by_option) == {"split": "test", "prompt_field": "question"}
    assert len(build_task(f"hf-dataset:{data_dir / 'dict'}", prompt_field="question")) == 6  # default: train
    with pytest.raises(ValueError, match=r"has splits \['test', 'train'\], not 'validation'"):
        build_task(f"hf-dataset:{data_dir / 'dict'}", split="validation", prompt_field="question")
    with pytest.raises(ValueError, match="split given twice"):
        build_task(f"hf-dataset:{data_dir / 'dict'}@test", split="train", prompt_field="question")


def test_errors_name_the_record_and_the_path(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"single record 1: missing the prompt field 'prompt'"):
        build_task(f"hf-dataset:{data_dir / 'single'}")
    with pytest.raises(ValueError, match="does not exist.*nothing is downloaded"):
        build_task("hf-dataset:some-org/some-dataset")  # a Hub name is not a local path: refused, not downloaded
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(ValueError, match=r"unknown extension '.txt'"):
        read_hf_dataset(tmp_path / "x.txt")


def test_reading_runs_offline_and_restores_the_environment(data_dir, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    seen = {}
    real = datasets.load_from_disk

    def spy(path, *a, **k):
        seen.update({k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")})
        seen["config"] = datasets.config.HF_HUB_OFFLINE
        return real(path, *a, **k)

    monkeypatch.setattr(datasets, "load_from_disk", spy)
    read_hf_dataset(data_dir / "single")
    assert seen == {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "config": True}
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["HF_DATASETS_OFFLINE"] == "0"
