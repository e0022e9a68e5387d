"""Worker processes of ``run_jobs`` end with the main process (no model-sized orphans after ``kill``)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")

PROBE = textwrap.dedent("""
    import os, sys, time
    from polab.scaled.experiments.main_demo import run_jobs

    def work(job):
        with open(job["pidfile"] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(job["pidfile"] + ".tmp", job["pidfile"])
        time.sleep(120)
        return 0

    if __name__ == "__main__":
        d = sys.argv[1]
        run_jobs([{"pidfile": os.path.join(d, f"w{i}")} for i in range(2)], 2, progress=False, fn=work)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(pid, 0); it has exited, which is what we check
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_die_when_the_main_process_is_killed(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    main = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    pids: list[int] = []
    try:
        deadline = time.time() + 90  # two spawned interpreters importing torch on a loaded 2-core machine
        while time.time() < deadline and len(pids) < 2:
            pids = [int((tmp_path / f"w{i}").read_text()) for i in range(2) if (tmp_path / f"w{i}").exists()]
            time.sleep(0.2)
        assert len(pids) == 2, "the workers did not start within 90 s"
        assert all(_alive(p) for p in pids)
        main.send_signal(signal.SIGTERM)  # what `kill PID` sends; the pool does not forward it
        main.wait(timeout=30)
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "workers outlived the main process"
    finally:
        main.kill()
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_die_with_parent_reports_the_request():
    from polab.scaled.experiments.main_demo import die_with_parent

    # in this (pytest) process the parent is alive, so the request is made and nothing is signalled
    assert die_with_parent() is True
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    sig = ctypes.c_int(0)
    assert libc.prctl(2, ctypes.byref(sig), 0, 0, 0) == 0  # 2 = PR_GET_PDEATHSIG
    assert sig.value == signal.SIGTERM
    libc.prctl(1, 0, 0, 0, 0)  # undo for the rest of the test session
