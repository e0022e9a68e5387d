"""The core (theory, estimators, proofs_checks) never imports scaled or model/environment libraries."""

import subprocess
import sys

FORBIDDEN = {"transformers", "gymnasium", "vllm", "trl", "mujoco", "scaled"}


def test_core_imports_no_model_or_environment_library():
    code = (
        "import sys, pkgutil, importlib\n"
        "import theory, estimators, proofs_checks\n"
        "for pkg in (theory, estimators, proofs_checks):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print(' '.join(sorted({k.split('.')[0] for k in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "estimators" in out  # the probe really imported the core
    assert FORBIDDEN.isdisjoint(out), sorted(FORBIDDEN.intersection(out))
