"""MetricLogger: CSV round trip with string columns, late columns, exact resume truncation, back ends."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import time

import numpy as np
import pytest
import torch

from polab.scaled.logger import MetricLogger, read_metrics


def _raw(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_round_trip_numbers_strings_bools_none(tmp_path):
    with MetricLogger(tmp_path, config={"lr": 0.1}, backends=("csv",)) as log:
        log.log(0, {"loss": 0.1, "method": "grpo", "ok": True, "count": 3, "maybe": None})
        log.log(1, {"loss": np.float64(1 / 3), "method": "dr-grpo, v2", "ok": False, "count": np.int64(4),
                    "maybe": torch.tensor(2.5)})
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == [0.0, 1.0]
    # floats round-trip exactly (repr), including numpy scalars (numpy 2 repr would be 'np.float64(...)')
    assert rows[0]["loss"] == 0.1 and rows[1]["loss"] == 1 / 3
    # strings are kept, including one with a comma (quoted by the csv module)
    assert [r["method"] for r in rows] == ["grpo", "dr-grpo, v2"]
    assert [r["ok"] for r in rows] == [1.0, 0.0]
    assert [r["count"] for r in rows] == [3.0, 4.0]
    assert math.isnan(rows[0]["maybe"]) and rows[1]["maybe"] == 2.5
    assert json.loads((tmp_path / "config.json").read_text()) == {"lr": 0.1}
    assert (tmp_path / "figures").is_dir()


def test_column_appearing_later_rewrites_header(tmp_path):
    with MetricLogger(tmp_path, backends=("csv",), columns=["a"]) as log:
        log.log(0, {"a": 1.0})
        log.log(1, {"a": 2.0, "env": "cartpole"})
        log.log(2, {"env": "pong", "b": 7})
    raw = _raw(tmp_path / "metrics.csv")
    assert raw[0] == ["step", "a", "env", "b"]
    assert raw[1:] == [["0", "1.0", "", ""], ["1", "2.0", "cartpole", ""], ["2", "", "pong", "7"]]
    rows = read_metrics(tmp_path)
    assert rows[2]["env"] == "pong" and math.isnan(rows[0]["env"]) and math.isnan(rows[2]["a"])
    assert not list(tmp_path.glob(".metrics.csv.*.tmp"))  # the atomic rewrite leaves no temporary behind


def test_mixed_column_stays_strings(tmp_path):
    with MetricLogger(tmp_path, backends=("csv",)) as log:
        log.log(0, {"tag": "12"})
        log.log(1, {"tag": "final"})
    assert [r["tag"] for r in read_metrics(tmp_path)] == ["12", "final"]


def test_resume_drops_rows_after_resume_step_exactly(tmp_path):
    a, b = tmp_path / "interrupted", tmp_path / "straight"
    with MetricLogger(a, backends=("csv",)) as log:
        for s in range(6):
            log.log(s, {"x": s * 0.5, "name": f"n{s}"})
    with MetricLogger(a, backends=("csv",), resume_step=3) as log:  # the tail 4, 5 was not checkpointed
        assert [r["step"] for r in read_metrics(a)] == [0, 1, 2, 3]
        for s in range(4, 8):
            log.log(s, {"x": s * 0.5, "name": f"n{s}"})
    with MetricLogger(b, backends=("csv",)) as log:
        for s in range(8):
            log.log(s, {"x": s * 0.5, "name": f"n{s}"})
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()


def test_resume_keeps_late_columns_and_fresh_run_replaces(tmp_path):
    with MetricLogger(tmp_path, backends=("csv",)) as log:
        log.log(0, {"x": 1.0})
        log.log(1, {"x": 2.0, "y": "late"})
    with MetricLogger(tmp_path, backends=("csv",), resume_step=1) as log:
        log.log(2, {"x": 3.0})
    assert _raw(tmp_path / "metrics.csv") == [["step", "x", "y"], ["0", "1.0", ""], ["1", "2.0", "late"], ["2", "3.0", ""]]
    with MetricLogger(tmp_path, backends=("csv",)) as log:  # no resume: a new run
        log.log(0, {"z": 1})
    assert _raw(tmp_path / "metrics.csv") == [["step", "z"], ["0", "1"]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backends": ("csv", "mlflow")}, "unknown back end"),
        ({"wandb_mode": "cloud"}, "wandb_mode"),
        ({"resume_step": 1.5}, "resume_step"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetricLogger(tmp_path, **kwargs)


def test_bad_log_calls(tmp_path):
    log = MetricLogger(tmp_path, backends=("csv",))
    with pytest.raises(ValueError, match="step must be an integer"):
        log.log(1.0, {"x": 1})
    with pytest.raises(ValueError, match="'step'"):
        log.log(1, {"step": 1})
    with pytest.raises(ValueError, match="type list"):
        log.log(1, {"x": [1, 2]})
    log.close()
    with pytest.raises(ValueError, match="after close"):
        log.log(2, {"x": 1})


def test_read_metrics_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        read_metrics(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed (extra llm)")
def test_tensorboard_gets_numeric_values_and_purges_on_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricLogger(tmp_path, backends=("csv", "tensorboard")) as log:
        for s in range(5):
            log.log(s, {"loss": float(s), "method": "grpo", "flag": s % 2 == 0, "part:x": 2.0 * s})
    with MetricLogger(tmp_path, backends=("csv", "tensorboard"), resume_step=2) as log:
        for s in range(3, 5):
            log.log(s, {"loss": 10.0 + s, "method": "grpo", "flag": False, "part:x": 0.0})
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "flag", "part/x"}  # strings are not scalars; ':' becomes '/'
    loss = {e.step: e.value for e in acc.Scalars("loss")}
    assert loss == {0: 0.0, 1: 1.0, 2: 2.0, 3: 13.0, 4: 14.0}  # the first run's steps 3 and 4 were purged


def test_wandb_missing_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb" or name.startswith("wandb."):
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ValueError, match=r"pip install 'polab\[wandb\]'"):
        MetricLogger(tmp_path, backends=("csv", "wandb"))


def test_wandb_offline_writes_locally(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    with MetricLogger(tmp_path, config={"seed": 7}, backends=("csv", "wandb"), run_name="unit") as log:
        log.log(0, {"loss": 0.123456789, "method": "marker-method-xyz"})
        log.log(1, {"loss": 0.5, "method": "marker-method-xyz"})
    run_id = (tmp_path / "wandb_run_id.txt").read_text().strip()
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1
    (data,) = runs[0].glob("run-*.wandb")
    # wandb-core writes the offline record from its own process and may still be flushing when finish() returns
    deadline = time.monotonic() + 30.0
    while b"marker-method-xyz" not in (blob := data.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    # the offline record holds the logged values (protobuf strings are stored verbatim)
    assert b"marker-method-xyz" in blob and b"0.123456789" in blob
    assert [r["method"] for r in read_metrics(tmp_path)] == ["marker-method-xyz"] * 2
    # resuming continues the same wandb run (same id); a fresh run gets a new id
    with MetricLogger(tmp_path, backends=("csv", "wandb"), resume_step=0) as log:
        log.log(1, {"loss": 0.25})
    assert (tmp_path / "wandb_run_id.txt").read_text().strip() == run_id
    assert [r["loss"] for r in read_metrics(tmp_path)] == [0.123456789, 0.25]
    with MetricLogger(tmp_path, backends=("csv", "wandb")):
        pass
    assert (tmp_path / "wandb_run_id.txt").read_text().strip() != run_id
