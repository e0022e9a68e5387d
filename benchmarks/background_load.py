"""Busy processes that load the machine for the benchmarks' loaded-machine modes (``--background-load N``)."""

from __future__ import annotations

import atexit
import subprocess
import sys


def start_background_load(n: int) -> list:
    """``n`` busy processes (``python -c "while True: pass"``): one core's worth of runnable load each, killed at exit."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]

    def stop():
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    atexit.register(stop)
    return procs
