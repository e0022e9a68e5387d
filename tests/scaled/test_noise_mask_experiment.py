"""`polab run noise-mask` end to end (quick preset), the policy actually learns, paired statistics, bad input."""

import json

import numpy as np
import pytest
import torch
from scipy import stats

pytest.importorskip("sklearn")

from polab.scaled.cli import main as cli_main  # noqa: E402
from polab.scaled.config import parse_config  # noqa: E402
from polab.scaled.experiments import noise_mask as nm  # noqa: E402
from polab.scaled.logger import MetricLogger, read_metrics  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_quick_run_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    assert cli_main(["run", "noise-mask", "--preset", "quick", "--no-progress", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seeds"] == 2 and cfg["pretrain_epochs"] == 2 and "provenance" in cfg
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) == 2 * 3 * (2 + 1)  # seeds x arms x (pretrain + finetune epochs)
    for r in rows:
        assert r["arm"] in nm.ARMS and r["stage"] in ("pretrain", "finetune") and 0 <= r["test_acc"] <= 1
        masked = r["stage"] == "pretrain" and r["arm"] != "none"
        assert np.isfinite(r["mask_mean"]) == masked  # only masked epochs report mask statistics
        if masked:
            assert 0 < r["mask_mean"] < 1
    s = json.loads((out / "summary.json").read_text())
    assert set(s["final_test_accuracy"]) == set(nm.ARMS)
    assert "PROXY" in s["data"] and set(s["paired"]) == {"learned-none", "learned-random", "random-none"}
    for k, v in s["paired"].items():
        a, b = k.split("-")
        d = np.subtract(s["final_test_accuracy"][a]["per_seed"], s["final_test_accuracy"][b]["per_seed"])
        np.testing.assert_allclose(v["per_seed"], d, atol=1e-12)
    for name in ("accuracy.png", "curves.png", "masks.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    # the run's config.json replays through --config (polab.scaled.config contract)
    replay, _ = parse_config(nm.NoiseMaskConfig, ["--config", str(out / "config.json")], prog="x", presets=nm.PRESETS,
                             default_preset="cpu")
    assert replay.seeds == 2 and replay.train_size == cfg["train_size"] and replay.arms == tuple(cfg["arms"])


def test_policy_parameters_and_bases_move(tmp_path):
    cfg = nm.NoiseMaskConfig(seeds=1, train_size=64, test_size=32, pretrain_epochs=2, finetune_epochs=1,
                             finetune_warmup_epochs=1, width=4, out=str(tmp_path))
    nm._check(cfg)
    data = nm._data(0, cfg, torch.device("cpu"))
    g = torch.Generator().manual_seed(10_000 + cfg.seed)  # the initial policy of seed 0, rebuilt
    torch.manual_seed(0)
    init = nm.MaskPolicy(cfg.grid ** 2, width=cfg.policy_width, num_modalities=4, condition=cfg.condition, blend=cfg.blend,
                         base_ema=cfg.base_ema, generator=g)
    with MetricLogger(tmp_path / "log", backends=("csv",)) as log:
        res = nm._train_arm("learned", 0, data, cfg, log, [0], torch.device("cpu"))
    pol = res["policy"]
    assert not torch.equal(pol.base_alpha, init.base_alpha)  # the EMA of the heads moved the bases
    w0 = dict(init.named_parameters())
    moved = [n for n, p in pol.named_parameters() if "head" in n and not torch.allclose(p, w0[n])]
    assert moved  # REINFORCE updated the heads
    rows = read_metrics(tmp_path / "log" / "metrics.csv")
    assert [r["stage"] for r in rows] == ["pretrain", "pretrain", "finetune"]


def test_paired_statistics_hand_values():
    a, b = [0.9, 0.8, 0.85, 0.7], [0.8, 0.8, 0.8, 0.75]
    p = nm._paired(a, b)
    d = np.subtract(a, b)
    assert p["mean_difference"] == pytest.approx(d.mean(), abs=1e-12)
    assert (p["wins"], p["losses"], p["ties"]) == (2, 1, 1)
    assert p["t_test_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2.0
    assert p["ci95_half_width"] == pytest.approx(half, rel=1e-12)


@pytest.mark.parametrize("argv, match", [
    (["--train-size", "1500", "--test-size", "600"], "1797"),
    (["--grid", "32"], "grid"),
    (["--kernel-size", "4"], "kernel"),
    (["--batch-size", "1"], "batch"),
    (["--blend", "1.0"], "blend"),
])
def test_bad_input_exits_2_before_writing(argv, match, tmp_path, capsys):
    out = tmp_path / "bad"
    assert cli_main(["run", "noise-mask", "--out", str(out), *argv]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()
