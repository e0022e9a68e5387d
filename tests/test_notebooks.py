"""Execute every notebook in ``notebooks/`` (jupytext percent-format ``.py`` files).

Each notebook is converted in memory with jupytext and run top to bottom by
``nbclient`` on the ``python3`` kernel, started with this interpreter
(``sys.executable``, the project's virtualenv) so that the notebook imports
the same ``theory``/``estimators``/``proofs_checks`` code as the tests. The
kernel runs in a temporary directory (a notebook that writes files writes
them there, never into the repository) with ``MPLBACKEND=Agg`` (no display)
and one OpenMP/torch thread (the notebooks use small tensors; on a shared
2-core machine a contended thread pool only slows them down). A cell that
raises fails the test with the cell's traceback. Timeout: 600 s per notebook.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel", reason="the python3 kernel needs ipykernel in this environment: pip install ipykernel")

from jupyter_client.manager import KernelManager  # noqa: E402  (after the importorskip guards)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
TIMEOUT_S = 600


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found under {ROOT / 'notebooks'}"


#: Suffixes of the files a notebook could leave behind (figures, data, converted notebooks).
#: Only these are compared before and after a run: source files (.py, .md, ...) may be
#: written concurrently by other work in a shared checkout and are not notebook output.
OUTPUT_SUFFIXES = {".png", ".pdf", ".svg", ".jpg", ".ipynb", ".npz", ".npy", ".pkl", ".pt", ".csv", ".html"}


def _repo_files() -> set[Path]:
    """Output-like files of the repository, without the virtualenv, git data and caches."""
    skip = {".venv", ".git", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
    out = set()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        out.update(Path(dirpath) / f for f in filenames if Path(f).suffix in OUTPUT_SUFFIXES)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the kernel imports the repository's packages even where polab is not pip-installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = jupytext.read(path)
    # jupyter_client replaces the kernelspec's bare "python" by sys.executable; check
    # that, and check inside the kernel (first cell, added in memory only)
    km = KernelManager(kernel_name="python3")
    assert km.format_kernel_cmd()[0] == sys.executable, km.format_kernel_cmd()
    nb.cells.insert(0, nbformat.v4.new_code_cell(f"import sys\nassert sys.executable == {sys.executable!r}, sys.executable"))
    before = _repo_files()
    client = nbclient.NotebookClient(
        nb, km=km, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError with the traceback if a cell fails
    new = sorted(str(p.relative_to(ROOT)) for p in _repo_files() - before)
    assert not new, f"{path.name} wrote into the repository: {new}"
