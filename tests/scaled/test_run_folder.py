"""polab.scaled.run_folder: path checks, refusing non-empty folders, the OS lock, cleaning, RunLogger."""

import os
import subprocess
import sys
import textwrap

import pytest

from polab.scaled.checkpoint import save_checkpoint
from polab.scaled.run_folder import (
    LOCK_NAME,
    RunFolderError,
    RunLogger,
    add_run_arguments,
    check_run_folder,
    prepare_run_folder,
    read_metrics,
)


def test_new_folder_is_created_locked_and_released(tmp_path):
    out = tmp_path / "a" / "b"
    with prepare_run_folder(out, resume=False, overwrite=False) as rf:
        assert rf.path == out and out.is_dir() and rf.locked
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(RunFolderError, match=f"in use by process {os.getpid()}"):
            prepare_run_folder(out, resume=True, overwrite=False)
    assert not rf.locked and (out / LOCK_NAME).read_text() == ""
    # only the lock file is there: the folder still counts as empty, and the lock is free again
    prepare_run_folder(out, resume=False, overwrite=False).close()


@pytest.mark.parametrize("out, msg", [("", "--out is empty"), ("   ", "--out is empty")])
def test_empty_out_is_refused(out, msg):
    with pytest.raises(RunFolderError, match=msg):
        prepare_run_folder(out, resume=False, overwrite=False)


def test_file_paths_are_refused_with_the_file_named(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(RunFolderError, match="this is a file, not a folder"):
        prepare_run_folder(f, resume=False, overwrite=False)
    with pytest.raises(RunFolderError, match=f"{f} is a file, so the run folder cannot be created inside it"):
        prepare_run_folder(f / "sub" / "deeper", resume=False, overwrite=False)
    assert f.read_text() == "x"


def test_non_empty_folder_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n1,0.5\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"already holds files \(metrics.csv, notes.txt\); pass --resume .* --overwrite"):
        prepare_run_folder(tmp_path, resume=False, overwrite=False)
    assert not (tmp_path / LOCK_NAME).exists()  # refused before writing anything
    with pytest.raises(RunFolderError, match="contradict"):
        check_run_folder(tmp_path, resume=True, overwrite=True)
    prepare_run_folder(tmp_path, resume=True, overwrite=False).close()
    prepare_run_folder(tmp_path, resume=False, overwrite=True).close()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # overwrite replaces as the run writes; it deletes nothing of the user's


def test_overwrite_forgets_the_old_runs_checkpoints_but_keeps_their_files(tmp_path):
    save_checkpoint(tmp_path, 10, state={"v": 10})
    with prepare_run_folder(tmp_path, resume=False, overwrite=True):
        ck = tmp_path / "checkpoints"
        assert not (ck / "latest").exists() and not (ck / "history.json").exists()
        assert (ck / "step_00000010" / "manifest.json").is_file()


def test_interrupted_writes_are_removed_on_start_and_resume(tmp_path):
    ck = tmp_path / "checkpoints"
    for name in (".step_00000004.tmp-999999-ab12", ".step_00000004.old-1-cd34", ".step_00000002.x7k3", ".latest.tmp-5-ee"):
        (ck / name).mkdir(parents=True) if "step" in name else (ck / name).write_text("x")
    (ck / ".step_00000004.tmp-999999-ab12" / "trainer_state.pt").write_bytes(b"\0" * 100)
    (ck / "keep_me.txt").write_text("user file")
    with prepare_run_folder(tmp_path, resume=True, overwrite=False) as rf:
        assert sorted(p.name for p in rf.removed) == [".latest.tmp-5-ee", ".step_00000002.x7k3", ".step_00000004.old-1-cd34",
                                                      ".step_00000004.tmp-999999-ab12"]
    assert sorted(p.name for p in ck.iterdir()) == ["keep_me.txt"]


def test_second_process_is_refused_with_the_holders_pid_and_lock_dies_with_the_process(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        from polab.scaled.run_folder import prepare_run_folder
        rf = prepare_run_folder({str(tmp_path)!r}, resume=False, overwrite=False)
        print("locked", flush=True)
        sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"in use by process {holder.pid}"):
            prepare_run_folder(tmp_path, resume=True, overwrite=False)
    finally:
        holder.kill()
        holder.wait()
    prepare_run_folder(tmp_path, resume=True, overwrite=False).close()  # the kernel released the lock


def test_run_logger_keeps_its_call_form(tmp_path):
    log = RunLogger(tmp_path, {"lr": 0.1}, ["loss", "acc"], tensorboard=False)
    log.log(1, {"loss": 0.5, "acc": 1.0})
    log.log(2, {"loss": 0.25, "acc": 0.0})
    log.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "step,loss,acc"
    log = RunLogger(tmp_path, {"lr": 0.1}, ["loss", "acc"], resume_step=1, tensorboard=False)
    log.close()
    assert read_metrics(tmp_path / "metrics.csv") == [{"step": 1.0, "loss": 0.5, "acc": 1.0}]


def test_add_run_arguments_has_overwrite():
    import argparse

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    assert p.parse_args([]).overwrite is None and p.parse_args(["--overwrite"]).overwrite is True
