"""``OMP_WAIT_POLICY`` at polab's entry points (polab.scaled.omp_env): read back from the OpenMP runtime itself.

libgomp prints its settings at load when ``OMP_DISPLAY_ENV=VERBOSE``; ``GOMP_SPINCOUNT`` tells the three
policies apart (0 passive, 300000 the runtime's default, 3e10 active).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

CODE = "import polab.scaled.cli, torch; torch.ones(2).sum()"


def _spincount(env_value, code=CODE):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    env.update(OMP_DISPLAY_ENV="VERBOSE", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r"GOMP_SPINCOUNT = '(\d+)'", r.stderr)
    if m is None:
        pytest.skip("this torch build's OpenMP runtime is not libgomp (no OMP_DISPLAY_ENV report)")
    return int(m.group(1)), r.stderr


def test_cli_sets_passive_before_torch_and_the_user_value_wins():
    assert _spincount(None)[0] == 0  # polab's default: passive (no spinning)
    assert _spincount("ACTIVE")[0] > 10**9  # the user's value wins
    default, err = _spincount("")  # empty: the runtime's own default, without libgomp's invalid-value warning
    assert 0 < default < 10**9 and "invalid" not in err.lower()


def test_no_effect_once_torch_is_imported():
    spin, _ = _spincount(None, code="import torch, polab.scaled.omp_env as o; assert not o.apply_omp_wait_policy(); torch.ones(2).sum()")
    assert spin > 0  # torch (and libgomp) loaded first: the runtime's default stays
