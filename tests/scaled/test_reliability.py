"""Run folders and checkpoints under failure and misuse (issue 14).

kill -9 during checkpoint writes then resume, damaged checkpoints, crafted pickles, folders that hold
another run, concurrent runs, rotation next to leftovers, a ``latest`` pointer leading outside the run
folder, and the user's umask. The end-to-end misuse cases through ``polab train`` are at the bottom.
"""

import json
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from polab.scaled.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from polab.scaled.run_folder import RunFolderError, prepare_run_folder

# A tiny training loop that checkpoints every step; run in a subprocess that forks workers and kills them.
KILL_SCRIPT = textwrap.dedent(r"""
    import json, os, signal, shutil, sys, time, warnings
    import numpy as np
    import torch
    from polab.scaled import checkpoint as C
    from polab.scaled.run_folder import prepare_run_folder

    torch.set_num_threads(1)
    STEPS, KEEP = 20, 2
    root = sys.argv[1]
    mode = sys.argv[2]

    def data(step):
        return torch.randn(16, 128, generator=torch.Generator().manual_seed(1000 + step))

    def train(run):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.Tanh(), torch.nn.Linear(256, 128))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.StepLR(opt, 5, gamma=0.5)
        step = 0
        with prepare_run_folder(run, resume=True, overwrite=False):
            ck = C.latest_checkpoint(run)
            if ck is not None:
                st = C.load_checkpoint(ck, models={"model": model})
                opt.load_state_dict(st["optimizer"]); sched.load_state_dict(st["scheduler"]); step = st["step"]
            while step < STEPS:
                loss = model(data(step)).pow(2).mean()
                opt.zero_grad(); loss.backward(); opt.step(); sched.step(); step += 1
                C.save_checkpoint(run, step, state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                                     "step": step}, models={"model": model}, keep=KEEP)
        return model, opt

    def inspect(run):
        ckdir = os.path.join(run, "checkpoints")
        names = sorted(os.listdir(ckdir)) if os.path.isdir(ckdir) else []
        info = {"temporaries": [n for n in names if n.startswith(".step_")],
                "step_dirs": [n for n in names if n.startswith("step_")], "warned": False}
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            ck = C.latest_checkpoint(run)
        info["warned"] = any(issubclass(x.category, C.CheckpointWarning) for x in w)
        info["latest"] = None if ck is None else ck.name
        if ck is not None:
            st = C.load_checkpoint(ck)
            info["consistent"] = st["step"] == int(ck.name.split("_")[1])
        return info

    def flat(model, opt):
        return torch.cat([p.detach().flatten() for p in model.parameters()] +
                         [v.flatten() for s in opt.state_dict()["state"].values() for v in s.values() if torch.is_tensor(v)])

    ref_model, ref_opt = train(os.path.join(root, "reference"))
    ref = flat(ref_model, ref_opt)
    run = os.path.join(root, "run")
    report = {"kills": []}
    if mode == "random":
        rng = np.random.default_rng(int(sys.argv[3]))
        t0 = time.perf_counter(); train(os.path.join(root, "timing")); full = time.perf_counter() - t0
        for _ in range(int(sys.argv[4])):
            pid = os.fork()
            if pid == 0:
                try:
                    train(run)
                finally:
                    os._exit(0)
            time.sleep(float(rng.uniform(0.0, full)))
            os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
            report["kills"].append(inspect(run))
    else:  # kill at the k-th file-system operation of one save, for every k
        k = 1
        while True:
            pid = os.fork()
            if pid == 0:
                count = [0]
                def hook(fn):
                    def wrapped(*a, **kw):
                        count[0] += 1
                        if count[0] == k:
                            os.kill(os.getpid(), signal.SIGKILL)
                        return fn(*a, **kw)
                    return wrapped
                # arm the hooks when this worker's first save is done, so the k-th operation lands in its second save
                real_save, saves = C.save_checkpoint, [0]
                originals = (os.replace, os.fsync, os.mkdir, shutil.rmtree, os.chmod)
                def save_then_arm(*a, **kw):
                    out = real_save(*a, **kw)
                    saves[0] += 1
                    if saves[0] == 1:
                        os.replace, os.fsync, os.mkdir, shutil.rmtree, os.chmod = (hook(f) for f in originals)
                    else:  # the second save finished before its k-th operation: k ran past one save
                        os._exit(3)
                    return out
                C.save_checkpoint = save_then_arm
                train(run)
                os._exit(3)  # the save finished before the k-th operation: k ran past one save
            _, status = os.waitpid(pid, 0)
            if os.WIFEXITED(status):
                break
            report["kills"].append(inspect(run))
            k += 1
    model, opt = train(run)
    report["final"] = inspect(run)
    report["bitwise_equal"] = bool(torch.equal(flat(model, opt), ref))
    print(json.dumps(report))
""")


@pytest.fixture
def fast_dir(tmp_path):
    """A folder on tmpfs where there is one: fsync there is free, and kill -9 (unlike power loss) is unaffected."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="polab-test-") as d:
            yield Path(d)
    else:
        yield tmp_path


def _run_kill_script(root, *args):
    script = root / "kill_loop.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(script), str(root), *args], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _check_kills(report):
    for info in report["kills"]:
        assert not info["warned"]  # latest never names a damaged checkpoint
        if info["latest"] is not None:
            assert info["consistent"] and info["latest"] in info["step_dirs"]
        assert len(info["step_dirs"]) <= 3  # keep=2, plus at most the one whose rotation was interrupted
    final = report["final"]
    assert final["temporaries"] == [] and final["latest"] == "step_00000020" and len(final["step_dirs"]) == 2
    assert report["bitwise_equal"]  # model, optimizer and scheduler after resume == the uninterrupted run


def test_kill_9_at_random_moments_then_resume_is_exact(fast_dir):
    report = _run_kill_script(fast_dir, "random", "0", "12")
    _check_kills(report)
    # where the random kills land depends on the machine's timing; the next test kills inside every phase of a save


def test_kill_9_at_every_file_operation_of_a_save_then_resume_is_exact(fast_dir):
    report = _run_kill_script(fast_dir, "points")
    assert len(report["kills"]) >= 10  # every mkdir/fsync/chmod/replace/rmtree of one save
    assert any(k["temporaries"] for k in report["kills"])
    _check_kills(report)


# ---------------------------------------------------------------------------------------------------------
# damaged checkpoints
def _three_checkpoints(run):
    for s in (1, 2, 3):
        save_checkpoint(run, s, state={"step": s, "w": torch.full((1000,), float(s))}, keep=3)
    return run / "checkpoints"


@pytest.mark.parametrize("damage", ["truncate", "empty", "bitflip", "delete", "manifest"])
def test_damaged_latest_falls_back_to_the_newest_intact_checkpoint(tmp_path, damage):
    ck = _three_checkpoints(tmp_path)
    f = ck / "step_00000003" / "trainer_state.pt"
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        f.write_bytes(b"")
    elif damage == "bitflip":  # three bytes inside the tensor data, size unchanged: torch alone would load it
        for i in (len(data) // 2, len(data) // 2 + 7, len(data) // 2 + 100):
            data[i] ^= 0x10
        f.write_bytes(bytes(data))
    elif damage == "delete":
        f.unlink()
    else:
        (ck / "step_00000003" / "manifest.json").write_text("{not json")
    with pytest.warns(CheckpointWarning, match="step_00000003 is damaged; falling back to .*step_00000002"):
        got = latest_checkpoint(tmp_path)
    assert got == ck / "step_00000002"
    assert torch.equal(load_checkpoint(got)["w"], torch.full((1000,), 2.0))
    with pytest.raises(CheckpointError):
        load_checkpoint(ck / "step_00000003")  # asked for directly: refused, never loaded silently


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
    ck = _three_checkpoints(tmp_path)
    for s in (1, 2, 3):
        (ck / f"step_{s:08d}" / "trainer_state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no intact checkpoint in .*Start a new run"):
        latest_checkpoint(tmp_path)


def test_crafted_pickle_in_trainer_state_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ck = save_checkpoint(tmp_path, 1, state={"step": 1})
    # a tampered state whose manifest was updated too (an attacker controls the whole folder)
    evil = pickle.dumps({"step": 1, "x": Payload()}, protocol=2)
    torch.save({"step": 1}, ck / "trainer_state.pt")  # keep a valid zip, then swap in the pickle inside it
    import zipfile

    src = zipfile.ZipFile(ck / "trainer_state.pt")
    items = {i.filename: src.read(i.filename) for i in src.infolist()}
    src.close()
    with zipfile.ZipFile(ck / "trainer_state.pt", "w") as z:
        for name, blob in items.items():
            z.writestr(name, evil if name.endswith("data.pkl") else blob)
    import hashlib

    m = json.loads((ck / "manifest.json").read_text())
    blob = (ck / "trainer_state.pt").read_bytes()
    m["files"]["trainer_state.pt"] = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (ck / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="loading it would run code"):
        load_checkpoint(latest_checkpoint(tmp_path))
    assert not marker.exists()
    # the same through an experiment that loads a cached checkpoint from --out on resume
    from polab.scaled.cli import main as cli_main

    rc = cli_main(["run", "smoothing-certify", "--quick", "--out", str(tmp_path), "--resume", "--envs", "cartpole"])
    assert rc == 2 and not marker.exists()


def test_old_format_crafted_state_pt_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ck = tmp_path / "checkpoints" / "step_00000001"
    ck.mkdir(parents=True)
    torch.save({"x": Payload()}, ck / "state.pt")  # torch.save pickles anything
    (tmp_path / "checkpoints" / "latest").write_text("step_00000001\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        with pytest.raises(CheckpointError, match="loading it would run code"):
            load_checkpoint(latest_checkpoint(tmp_path))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------
# folders and pointers
@pytest.mark.parametrize("pointer", ["../../other_run/checkpoints/step_00000001", "/tmp/step_00000001", "step_1/../../x", "..",
                                     "step_00000001/../../../other"])
def test_latest_pointer_may_not_leave_the_run_folder(tmp_path, pointer):
    other = tmp_path / "other_run"
    save_checkpoint(other, 1, state={"secret": 1})
    run = tmp_path / "a" / "run"
    save_checkpoint(run, 1, state={"mine": 1})
    (run / "checkpoints" / "latest").write_text(pointer + "\n")
    with pytest.raises(CheckpointError, match="not a checkpoint of this run folder"):
        latest_checkpoint(run)


def test_symlinked_step_folder_leading_outside_is_refused(tmp_path):
    save_checkpoint(tmp_path / "other", 1, state={"secret": 1})
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000001").symlink_to(tmp_path / "other" / "checkpoints" / "step_00000001")
    (run / "checkpoints" / "latest").write_text("step_00000001\n")
    with pytest.raises(CheckpointError, match="link leading outside"):
        latest_checkpoint(run)


def test_non_empty_folder_without_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n1,0.5\n")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunFolderError, match="already holds files"):
        prepare_run_folder(tmp_path, resume=False, overwrite=False)
    assert (tmp_path / "metrics.csv").read_text() == "step,loss\n1,0.5\n"


def test_concurrent_runs_second_is_refused_with_the_pid(tmp_path):
    with prepare_run_folder(tmp_path, resume=False, overwrite=False):
        code = f"from polab.scaled.run_folder import prepare_run_folder as p; p({str(tmp_path)!r}, resume=True, overwrite=False)"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and f"is in use by process {os.getpid()}" in res.stderr


def test_rotation_next_to_higher_numbered_leftovers(tmp_path):
    ck = tmp_path / "checkpoints"
    for s in (8, 10):  # an earlier run's checkpoints, not in this run's history
        save_checkpoint(tmp_path, s, state={"old": s}, keep=2)
    with prepare_run_folder(tmp_path, resume=False, overwrite=True):
        for s in (1, 2, 3, 4):
            save_checkpoint(tmp_path, s, state={"new": s}, keep=2)
            assert latest_checkpoint(tmp_path) == ck / f"step_{s:08d}"
    names = sorted(p.name for p in ck.iterdir() if p.name.startswith("step_"))
    assert names == ["step_00000003", "step_00000004", "step_00000008", "step_00000010"]
    assert load_checkpoint(latest_checkpoint(tmp_path))["new"] == 4


def test_restart_of_an_experiment_at_a_lower_step_keeps_latest_valid(tmp_path):
    # the smoothing-certify pattern: the step is the number of cached policies, so it can go down
    save_checkpoint(tmp_path, 2, state={"n": 2})
    save_checkpoint(tmp_path, 1, state={"n": 1})
    save_checkpoint(tmp_path, 1, state={"n": 1.5})
    assert load_checkpoint(latest_checkpoint(tmp_path))["n"] == 1.5


def test_files_follow_the_users_umask(tmp_path, tiny_model):
    old = os.umask(0o027)
    try:
        with prepare_run_folder(tmp_path / "run", resume=False, overwrite=False) as rf:
            ck = save_checkpoint(rf.path, 1, state={"x": torch.ones(2)}, models={"net": torch.nn.Linear(2, 2)},
                                 pretrained={"policy": (tiny_model.model, tiny_model.tokenizer)})
    finally:
        os.umask(old)
    paths = [tmp_path / "run", *(tmp_path / "run").rglob("*")]
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in paths}
    bad = {k: oct(v) for k, v in modes.items() if v != (0o750 if (tmp_path / k).is_dir() else 0o640)}
    assert bad == {}
    assert "run/checkpoints/step_00000001/policy/model.safetensors" in modes and ck.is_dir()


@pytest.fixture(scope="module")
def tiny_model():
    from polab.scaled.models import load_model

    return load_model("tiny-llama", seed=0)


# ---------------------------------------------------------------------------------------------------------
# misuse through the command line (python -m polab.scaled.cli train ...): exit 2, the option named, no traceback
TRAIN = ["train", "grpo", "--preset", "tiny", "--no-progress", "--no-tensorboard"]


def _cli(capsys, argv):
    """Exit code and stderr of the polab CLI run in this process (an uncaught exception fails the test)."""
    from polab.scaled.cli import main as cli_main

    capsys.readouterr()
    rc = cli_main(argv)
    return rc, capsys.readouterr().err


def _assert_clean_refusal(rc, err, option):
    import re

    assert rc == 2, err
    assert "Traceback" not in err
    assert re.search(option, err), f"{option!r} not named in: {err}"


@pytest.mark.parametrize("extra, option", [
    (["--checkpoint-every", "0"], r"checkpoint[-_]every"),
    (["--checkpoint-every", "-1"], r"checkpoint[-_]every"),
    (["--micro-batch-size", "-4"], r"micro[-_]batch[-_]size"),
    (["--device", "junk"], r"device"),
    (["--temperature", "nan"], r"temperature"),
    (["--max-new-tokens", "0"], r"max[-_]new[-_]tokens"),
    (["--clip-low", "-1"], r"clip[-_]low"),
])
def test_cli_bad_option_exits_2_before_anything_is_written(tmp_path, capsys, extra, option):
    out = tmp_path / "run"
    rc, err = _cli(capsys, TRAIN + extra + ["--out", str(out)])
    _assert_clean_refusal(rc, err, option)
    assert not out.exists()  # validated before the model is loaded or the folder is created


def test_cli_torch_threads_negative_exits_2(tmp_path, capsys):
    out = tmp_path / "run"
    rc, err = _cli(capsys, ["train", "preference", "--preset", "tiny", "--no-progress", "--no-tensorboard",
                            "--torch-threads", "-1", "--out", str(out)])
    _assert_clean_refusal(rc, err, r"torch[-_]threads")
    assert not out.exists()


def test_cli_file_in_the_out_path_exits_2(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc, err = _cli(capsys, TRAIN + ["--out", str(tmp_path / "afile" / "sub")])
    _assert_clean_refusal(rc, err, r"afile")


def test_cli_empty_out_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty current directory: nothing else would refuse it
    rc, err = _cli(capsys, TRAIN + ["--out", ""])
    _assert_clean_refusal(rc, err, r"--out is empty")
    assert list(tmp_path.iterdir()) == []


def test_cli_model_config_with_negative_hidden_size_exits_2(tmp_path, capsys, tiny_model):
    bad = tmp_path / "badmodel"
    tiny_model.model.save_pretrained(bad)
    tiny_model.tokenizer.save_pretrained(bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["hidden_size"] = -5
    (bad / "config.json").write_text(json.dumps(cfg))
    rc, err = _cli(capsys, TRAIN + ["--model", str(bad), "--out", str(tmp_path / "run")])
    _assert_clean_refusal(rc, err, r"hidden.size \(-5\)")  # transformers' validator words it "hidden size (-5)"
    assert "local model folder" in err


def test_cli_non_empty_out_without_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("step,loss\n1,0.5\n")
    rc, err = _cli(capsys, TRAIN + ["--out", str(out)])
    _assert_clean_refusal(rc, err, r"--resume|--overwrite")
    assert (out / "metrics.csv").read_text() == "step,loss\n1,0.5\n"


@pytest.fixture(scope="module")
def finished_tiny_run(tmp_path_factory):
    """A finished two-step tiny GRPO run (checkpoints at steps 1 and 2)."""
    from polab.scaled.cli import main as cli_main

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert cli_main(TRAIN + ["--out", str(out)]) == 0
    return out


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".polab.lock"))
    return dst


@pytest.mark.parametrize("extra, option", [
    (["--lr", "0.5"], r"\blr\b"),
    (["--seed", "7"], r"seed"),
    (["--advantage", "ppo_gae"], r"advantage"),
])
def test_cli_resume_with_changed_settings_is_refused(finished_tiny_run, tmp_path, capsys, extra, option):
    run = _copy_run(finished_tiny_run, tmp_path / "run")
    rc, err = _cli(capsys, TRAIN + ["--out", str(run), "--resume", "--steps", "3", *extra])
    _assert_clean_refusal(rc, err, option)


def test_cli_resume_never_runs_a_crafted_pickle(finished_tiny_run, tmp_path, capsys):
    import hashlib
    import zipfile

    run = _copy_run(finished_tiny_run, tmp_path / "run")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ck = latest_checkpoint(run)
    target = ck / "trainer_state.pt"
    with zipfile.ZipFile(target) as src:
        items = {i.filename: src.read(i.filename) for i in src.infolist()}
    with zipfile.ZipFile(target, "w") as z:
        for name, blob in items.items():
            z.writestr(name, pickle.dumps({"step": 2, "x": Payload()}, protocol=2) if name.endswith("data.pkl") else blob)
    m = json.loads((ck / "manifest.json").read_text())
    blob = target.read_bytes()
    m["files"]["trainer_state.pt"] = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (ck / "manifest.json").write_text(json.dumps(m))
    rc, err = _cli(capsys, TRAIN + ["--out", str(run), "--resume", "--steps", "3"])
    _assert_clean_refusal(rc, err, r"run code")
    assert not marker.exists()


def test_cli_resume_falls_back_from_a_bit_flipped_checkpoint(finished_tiny_run, tmp_path, capsys):
    run = _copy_run(finished_tiny_run, tmp_path / "run")
    f = latest_checkpoint(run) / "trainer_state.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    with pytest.warns(CheckpointWarning, match="falling back"):
        rc, err = _cli(capsys, TRAIN + ["--out", str(run), "--resume", "--steps", "3"])
    assert rc == 0, err
    assert latest_checkpoint(run).name == "step_00000003"


def test_cli_latest_pointer_escaping_the_run_folder_exits_2(finished_tiny_run, tmp_path, capsys):
    _copy_run(finished_tiny_run, tmp_path / "other_run")
    run = _copy_run(finished_tiny_run, tmp_path / "a" / "run")
    (run / "checkpoints" / "latest").write_text("../../other_run/checkpoints/step_00000002\n")
    rc, err = _cli(capsys, TRAIN + ["--out", str(run), "--resume", "--steps", "3"])
    _assert_clean_refusal(rc, err, r"not a checkpoint of this run folder")


def test_cli_second_run_on_a_locked_folder_names_the_holder(finished_tiny_run, tmp_path, capsys):
    run = _copy_run(finished_tiny_run, tmp_path / "run")
    with prepare_run_folder(run, resume=True, overwrite=False):
        rc, err = _cli(capsys, TRAIN + ["--out", str(run), "--resume", "--steps", "3"])
    _assert_clean_refusal(rc, err, f"in use by process {os.getpid()}")


def test_cli_run_folder_files_follow_the_umask(finished_tiny_run):
    from polab.scaled.checkpoint import current_umask

    mask = current_umask()
    bad = {p.relative_to(finished_tiny_run).as_posix(): oct(p.stat().st_mode & 0o777)
           for p in [finished_tiny_run, *finished_tiny_run.rglob("*")]
           if p.stat().st_mode & 0o777 != (0o777 if p.is_dir() else 0o666) & ~mask}
    assert bad == {}


# ---------------------------------------------------------------------------------------------------------
# experiments (polab run NAME): inputs checked before any work, run folders never written over by accident
@pytest.mark.parametrize("argv, option", [
    (["martingale-pe", "--quick", "--dim", "0"], r"--dim"),
    (["martingale-pe", "--quick", "--alpha", "2"], r"--alpha"),
    (["martingale-pe", "--quick", "--device", "junk"], r"--device"),
    (["realizability", "--sizes", "0"], r"--sizes"),
    (["realizability", "--seeds", "0"], r"--seeds"),
    (["smoothing-certify", "--quick", "--alpha", "1.5"], r"--alpha"),
    (["smoothing-certify", "--quick", "--sigmas", "0"], r"--sigmas"),
    (["smoothing-certify", "--quick", "--certify-episodes", "0"], r"--certify-episodes"),
    (["pg-optimizers", "--gamma", "0"], r"--gamma"),
    (["preference-sampling", "--seeds", "a"], r"--seeds"),
])
def test_experiment_bad_input_exits_2_before_any_work(tmp_path, capsys, argv, option):
    pytest.importorskip("gymnasium")
    out = tmp_path / "run"
    rc, err = _cli(capsys, ["run", *argv, "--out", str(out)])
    _assert_clean_refusal(rc, err, option)
    assert not out.exists()


@pytest.mark.parametrize("name", ["martingale-pe", "realizability", "pg-optimizers", "smoothing-certify", "preference-sampling"])
def test_experiment_refuses_a_non_empty_out(tmp_path, capsys, name):
    pytest.importorskip("gymnasium")
    (tmp_path / "metrics.csv").write_text("mine\n")
    rc, err = _cli(capsys, ["run", name, "--out", str(tmp_path)])
    _assert_clean_refusal(rc, err, r"already holds files .*--overwrite")
    assert (tmp_path / "metrics.csv").read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_disk_full_during_a_save_is_a_clear_error_and_keeps_the_previous_checkpoint(fast_dir):
    """RLIMIT_FSIZE makes writes past 1 MB fail with EFBIG, as a full disk fails them with ENOSPC."""
    code = textwrap.dedent(f"""
        import resource, torch
        from polab.scaled.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
        run = {str(fast_dir / "run")!r}
        save_checkpoint(run, 1, state={{"w": torch.zeros(1000)}})
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))
        try:
            save_checkpoint(run, 2, state={{"w": torch.zeros(1_000_000)}})  # 4 MB
        except CheckpointError as exc:
            print("ERROR", exc)
        print("LATEST", latest_checkpoint(run).name, float(load_checkpoint(latest_checkpoint(run))["w"].sum()))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ERROR could not write checkpoint step_00000002" in res.stdout and "disk full" in res.stdout
    assert "LATEST step_00000001 0.0" in res.stdout
    assert sorted(p.name for p in (fast_dir / "run" / "checkpoints").iterdir()) == ["history.json", "latest", "step_00000001"]
