"""The wheel installs one top-level package, ``polab``, and unrelated PyPI distributions
named ``scaled`` or ``estimators`` cannot collide with it.

PyPI has unrelated distributions called ``scaled`` and ``estimators``; before the
namespace move polab installed top-level packages with those names, so installing
either beside polab merged into polab's folder and uninstalling it deleted polab's
files. The test builds polab's wheel, installs it into an empty target folder, then
installs two locally built stand-in distributions with those top-level names
(built here so that the test needs no network) and checks that polab's files are
untouched, that their RECORDs share no path with polab's (so uninstalling them
cannot delete a polab file), and that ``polab.scaled`` still imports from the target.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pip(*args: str, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"], check=True, cwd=cwd,
                   capture_output=True, text=True)


def _stand_in_wheel(name: str, folder: Path, out: Path) -> Path:
    src = folder / name
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text(f"WHO = 'the unrelated {name} distribution'\n")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "9.9.9"\n[tool.setuptools]\npackages = ["{name}"]\n')
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src))
    return next(out.glob(f"{name}-*.whl"))


def _record(target: Path, dist: str) -> set[str]:
    info = next(target.glob(f"{dist}-*.dist-info"))
    return {line.split(",")[0] for line in (info / "RECORD").read_text().splitlines() if line}


@pytest.mark.slow
def test_wheel_installs_only_polab_and_survives_colliding_names(tmp_path):
    wheels = tmp_path / "wheels"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT))
    wheel = next(wheels.glob("polab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = sorted({n.split("/")[0] for n in names})
    print("wheel top-level entries:", tops)
    assert tops == ["polab", next(t for t in tops if t.endswith(".dist-info"))], tops
    # every package of the source tree is in the wheel (a new subpackage must be listed in pyproject.toml)
    for top in ("theory", "estimators", "scaled", "proofs_checks"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = "polab/" + init.relative_to(ROOT).as_posix()
            assert rel in names, f"{rel} missing from the wheel: add its package to [tool.setuptools] packages"

    target = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(target), str(wheel))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (target / "polab").rglob("*") if p.is_file()}
    for name in ("scaled", "estimators"):
        _pip("install", "--no-deps", "--target", str(target), "--upgrade", str(_stand_in_wheel(name, tmp_path / "src", wheels)))
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (target / "polab").rglob("*") if p.is_file()}
    assert before == after, "installing 'scaled'/'estimators' changed polab's files"
    polab_files = _record(target, "polab")
    for name in ("scaled", "estimators"):
        assert not polab_files & _record(target, name), f"{name} shares files with polab"

    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import polab, polab.scaled.cli, polab.estimators.advantages, scaled, estimators; "
            "print(polab.__file__); print(scaled.WHO); print(estimators.WHO)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0].startswith(str(target / "polab")), out
    assert "unrelated scaled" in out and "unrelated estimators" in out
