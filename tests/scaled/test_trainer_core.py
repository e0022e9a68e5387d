"""The trainer core: open registries (a user's estimator), one naming style, config replay, resume checks, validation."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from polab.estimators.advantages import group_advantages
from polab.scaled.methods import ADVANTAGES, PREFERENCE_LOSSES, REWARD_SHAPERS, SAMPLE_FILTERS
from polab.scaled.trainers.base import translate_legacy_argv
from polab.scaled.trainers.grpo import GRPOConfig, GRPOTrainer
from tests.scaled.grpo_fixtures import DistinctCharsTask, tiny_config


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "polab.scaled.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_one_naming_style_and_old_spellings():
    for reg in (ADVANTAGES, SAMPLE_FILTERS, REWARD_SHAPERS, PREFERENCE_LOSSES):
        assert all("_" not in n for n in reg.names()), reg.names()
    assert ADVANTAGES.canonical("grpo_batch_std") == "grpo-batch-std"
    cfg = tiny_config("unused", advantage="dr_grpo", sample_filter="pf_ppo_best_random")
    assert (cfg.advantage, cfg.sample_filter) == ("dr-grpo", "pf-ppo-best-random")
    # old flat options land in the method's options; old flat flags become the group's flags
    cfg = tiny_config("unused", advantage="spo_chain", spo_mc_samples=3, ssb_capacity=5)
    assert cfg.method_options("advantage").mc_samples == 3 and cfg.methods["ssb"] == {"capacity": 5}
    assert translate_legacy_argv(GRPOConfig, ["--spo-threshold", "0.5", "--no-spo-probability-mask", "--gae-lambda=0.9"]) == [
        "--spo-chain.threshold", "0.5", "--spo-chain.no-probability-mask", "--ppo-gae.gae-lambda=0.9"]


def test_a_user_registered_estimator_runs_through_the_trainer(tmp_path):
    import tests.scaled.plugins.my_advantage  # noqa: F401  (registers "scaled-centred")

    tr = GRPOTrainer(tiny_config(tmp_path, advantage="scaled-centred", methods={"scaled-centred": {"scale": 2.0}}),
                     task=DistinctCharsTask((1, 2)))
    res = tr.train_step()
    li = res.loss_inputs
    want = 2.0 * group_advantages(li["rewards"], li["group_ids"], scale="none").advantages
    torch.testing.assert_close(li["advantages"][:, 0], want.to(li["advantages"].dtype), rtol=0, atol=0)
    assert li["advantages"].abs().sum() > 0


def test_plugins_and_module_attr_on_the_command_line_and_config_replay(tmp_path):
    out = tmp_path / "run"
    r = cli("train", "grpo", "--preset", "tiny", "--steps", "1", "--plugins", "tests.scaled.plugins.my_advantage",
            "--advantage", "scaled-centred", "--scaled-centred.scale", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((out / "config.json").read_text())
    assert rec["advantage"] == "scaled-centred" and rec["methods"]["scaled-centred"] == {"scale": 3.0}
    assert rec["plugins"] == ["tests.scaled.plugins.my_advantage"] and "polab" in rec["provenance"]
    # the recorded config replays the run: same metrics
    again = tmp_path / "again"
    r2 = cli("train", "grpo", "--config", str(out / "config.json"), "--out", str(again))
    assert r2.returncode == 0, r2.stderr[-3000:]
    rows = [[{k: v for k, v in row.items() if not k.startswith("time_")} for row in csv.DictReader(open(p / "metrics.csv"))] for p in (out, again)]
    assert rows[0] == rows[1]
    # module:attr selects a class without --plugins
    r3 = cli("train", "grpo", "--preset", "tiny", "--steps", "1", "--advantage", "tests.scaled.plugins.my_advantage:ScaledCentred",
             "--out", str(tmp_path / "attr"))
    assert r3.returncode == 0, r3.stderr[-3000:]


def test_resume_refuses_changes_that_break_exactness(tmp_path):
    out = tmp_path / "r"
    assert cli("train", "grpo", "--preset", "tiny", "--steps", "1", "--out", str(out)).returncode == 0
    bad = cli("train", "grpo", "--preset", "tiny", "--steps", "2", "--resume", "--lr", "0.5", "--advantage", "ppo_gae", "--out", str(out))
    assert bad.returncode == 2 and "lr: 0.001 -> 0.5" in bad.stderr and "advantage: 'grpo' -> 'ppo-gae'" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    ok = cli("train", "grpo", "--preset", "tiny", "--steps", "2", "--resume", "--out", str(out))  # more steps: allowed
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert [r["step"] for r in csv.DictReader(open(out / "metrics.csv"))] == ["1", "2"]


@pytest.mark.parametrize("args,named", [
    (["--checkpoint-every", "0"], "checkpoint_every"), (["--checkpoint-every", "-1"], "checkpoint_every"),
    (["--micro-batch-size", "-4"], "micro_batch_size"), (["--device", "junk"], "device"), (["--temperature", "nan"], "temperature"),
    (["--torch-threads", "-1"], "torch_threads"), (["--max-new-tokens", "0"], "max_new_tokens"), (["--clip-low", "1.5"], "clip_low"),
    (["--ppo-epochs", "0"], "ppo_epochs"), (["--advantage", "nope"], "--advantage"), (["--spo-chain.threshold", "2"], None),
])
def test_misuse_exits_2_naming_the_argument_before_writing(tmp_path, capsys, args, named):
    from polab.scaled.cli import main

    out = tmp_path / "x"
    try:  # in process (a subprocess per case costs seconds of imports); argparse-level errors raise SystemExit(2)
        code = main(["train", "grpo", "--preset", "tiny", "--out", str(out), *args, *(["--advantage", "spo-chain"] if named is None else [])])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert (named or "spo-chain.threshold") in err
    assert len(err.strip().splitlines()) <= 2  # usage line (argparse errors) and one message
    assert not out.exists()  # nothing written


def test_reward_shaper_changes_what_the_advantage_sees_not_the_logged_reward(tmp_path):
    tr = GRPOTrainer(tiny_config(tmp_path, reward_shaper="binary"), task=DistinctCharsTask((1, 2)))
    res = tr.train_step()
    li = res.loss_inputs
    # DistinctCharsTask: total in {0, 1, 2}, correct iff total == 2; the binary shaper gives 1 for correct, else 0
    assert set(li["rewards"].tolist()) <= {0.0, 1.0}
    assert res.metrics["accuracy"] == pytest.approx(float(li["rewards"].mean()), rel=1e-12)
    assert res.metrics["reward_mean"] >= res.metrics["accuracy"]  # the task's own reward stays the logged metric
