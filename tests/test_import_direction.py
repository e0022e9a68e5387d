"""The core (polab.theory, polab.estimators, polab.proofs_checks) never imports polab.scaled
or a model/environment library."""

import subprocess
import sys

FORBIDDEN_TOP = {"transformers", "gymnasium", "vllm", "trl", "mujoco", "textworld", "minari", "datasets"}


def test_core_imports_no_model_or_environment_library():
    code = (
        "import sys, pkgutil, importlib\n"
        "import polab.theory, polab.estimators, polab.proofs_checks\n"
        "for pkg in (polab.theory, polab.estimators, polab.proofs_checks):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "polab.estimators.advantages" in mods  # the probe really imported the core
    tops = {m.split(".")[0] for m in mods}
    assert FORBIDDEN_TOP.isdisjoint(tops), sorted(FORBIDDEN_TOP.intersection(tops))
    scaled = [m for m in mods if m == "polab.scaled" or m.startswith("polab.scaled.") or m.startswith("polab.integrations")]
    assert not scaled, scaled
