"""Run folders: one run per folder, locked while it runs, never written over by accident.

Layout of a run folder::

    .polab.lock          held (fcntl.flock) by the process running in the folder; holds its pid
    config.json          the full configuration of the run
    metrics.csv          one row per training step (polab.scaled.logger.MetricLogger)
    tensorboard/         the same metrics as TensorBoard scalars
    figures/*.png        plots drawn from metrics.csv
    checkpoints/         see polab.scaled.checkpoint

:func:`prepare_run_folder` is the one way in: it validates the path, refuses a folder that already holds
files unless the user asked to ``--resume`` the run there or to ``--overwrite`` it, removes interrupted
checkpoint writes, and holds an exclusive OS lock for the life of the run, so a second run on the same
folder stops at once with the first one's pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .checkpoint import HISTORY, atomic_write_text, clean_temporaries  # noqa: F401  (atomic_write_text re-exported)
from .logger import MetricLogger, read_metrics

__all__ = ["LOCK_NAME", "RunFolder", "RunFolderError", "RunLogger", "add_run_arguments", "check_config_values",
           "check_device", "check_run_folder", "prepare_run_folder", "read_metrics"]

LOCK_NAME = ".polab.lock"


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (bad path, holds another run, or is in use)."""


def _contents(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME)


def check_run_folder(out, *, resume: bool, overwrite: bool, can_resume: bool = True) -> Path:
    """Validate a run folder path and the folder's contents without creating or writing anything.

    Parameters
    ----------
    out : str or Path
        The run folder (``--out``).
    resume : bool
        The user continues the run in ``out`` (``--resume``): a non-empty folder is expected.
    overwrite : bool
        The user starts a new run over what ``out`` holds (``--overwrite``).
    can_resume : bool
        Whether the command offers ``--resume`` (only changes the error message's advice).

    Returns
    -------
    Path
        ``out`` as a Path.

    Raises
    ------
    RunFolderError
        ``out`` is empty or names a file; a parent is a file; resume and overwrite are both given; the
        folder holds files and neither resume nor overwrite was given.

    Notes
    -----
    Useful on every rank of a distributed run (it has no side effects); only one process should call
    :func:`prepare_run_folder`.
    """
    if out is None or not str(out).strip():
        raise RunFolderError("--out is empty; give the run folder's path (e.g. --out runs/my-run).")
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: --resume continues the run in --out, "
                             "--overwrite starts a new one over it; give one.")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {out}: this is a file, not a folder; give a folder path.")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunFolderError(f"--out {out}: {parent} is a file, so the run folder cannot be created inside it.")
            break
    if path.is_dir() and not (resume or overwrite):
        held = _contents(path)
        if held:
            shown = ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")
            raise RunFolderError(
                f"--out {out} already holds files ({shown}); "
                + ("pass --resume to continue the run there, --overwrite to start a new run over it, " if can_resume else
                   "pass --overwrite to start a new run over it, ")
                + "or choose another --out."
            )
    return path


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


class RunFolder:
    """An open run folder holding its lock; use :func:`prepare_run_folder` to get one.

    Attributes
    ----------
    path : Path
        The run folder.
    resume, overwrite : bool
        What the user asked for.
    removed : list of Path
        Interrupted checkpoint writes removed on opening.
    """

    def __init__(self, path: Path, fd: int, *, resume: bool, overwrite: bool, removed: list[Path]):
        self.path = path
        self.lock_path = path / LOCK_NAME
        self.resume = resume
        self.overwrite = overwrite
        self.removed = removed
        self._fd: int | None = fd

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        """Release the lock (idempotent). The lock file stays; it is ignored by the emptiness check."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # the OS releases the lock on exit anyway; this covers a forgotten close()
        try:
            self.close()
        except Exception:
            pass

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, locked={self.locked})"


def prepare_run_folder(out, *, resume: bool, overwrite: bool, can_resume: bool = True) -> RunFolder:
    """Open a run folder for one run: validate, create, lock, clean.

    Parameters
    ----------
    out : str or Path
        The run folder (``--out``); created with its parents when missing.
    resume : bool
        Continue the run in ``out`` (``--resume``).
    overwrite : bool
        Start a new run over what ``out`` holds (``--overwrite``): files are replaced as the new run writes
        them, and the old run's checkpoints are no longer resumable or rotated (``checkpoints/latest`` and
        ``checkpoints/history.json`` are removed; the ``step_*`` folders themselves are kept).
    can_resume : bool
        Whether the command offers ``--resume`` (only changes the error message's advice).

    Returns
    -------
    RunFolder
        Holds an exclusive ``fcntl.flock`` on ``out/.polab.lock`` until :meth:`RunFolder.close` (or the
        ``with`` block ends, or the process exits). Use it as a context manager.

    Raises
    ------
    RunFolderError
        See :func:`check_run_folder`; also when the folder cannot be created, or another process holds its
        lock (the message names that process's pid).
    """
    path = check_run_folder(out, resume=resume, overwrite=overwrite, can_resume=can_resume)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"--out {out}: cannot create the run folder ({exc.strerror or exc}).") from None
    lock_path = path / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)  # umask applies
    except OSError as exc:
        raise RunFolderError(f"--out {out}: cannot create the lock file {lock_path} ({exc.strerror or exc}).") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunFolderError(
                f"--out {out} is in use by {_holder(lock_path)} (it holds {lock_path}); wait for that run to "
                "finish, stop it, or choose another --out."
            ) from None
        raise RunFolderError(f"--out {out}: cannot lock {lock_path} ({exc.strerror or exc}).") from None
    try:
        # re-check under the lock: the folder may have been filled between the check and the lock
        check_run_folder(path, resume=resume, overwrite=overwrite, can_resume=can_resume)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        if overwrite:
            for name in ("latest", HISTORY):
                (path / "checkpoints" / name).unlink(missing_ok=True)
        removed = clean_temporaries(path, only_dead=False)
    except BaseException:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise
    return RunFolder(path, fd, resume=resume, overwrite=overwrite, removed=removed)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config_values(cfg, *, positive_ints=(), nonneg_ints=(), positive_floats=(), nonneg_floats=(),
                        probabilities=(), nonempty=(), devices=()) -> None:
    """Check an experiment's options before anything is loaded or written; ValueError names the option.

    Each keyword lists field names of ``cfg`` (a dataclass); a list/tuple value is checked element-wise, and
    ``None`` (an option left to its per-case default) passes. ``probabilities`` are open intervals (0, 1);
    ``devices`` accept ``auto``, ``cpu`` and available ``cuda[:N]``/``mps`` devices.
    """
    import math
    import numbers

    def values(name):
        v = getattr(cfg, name)
        return [] if v is None else (list(v) if isinstance(v, (list, tuple)) else [v])

    def bad(name, v, need):
        shown = getattr(cfg, name)
        raise ValueError(f"{_flag(name)} must be {need}; got {shown!r}.")

    for name in nonempty:
        if getattr(cfg, name) is not None and len(getattr(cfg, name)) == 0:
            raise ValueError(f"{_flag(name)} needs at least one value.")
    for name in positive_ints + nonneg_ints:
        for v in values(name):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < (1 if name in positive_ints else 0):
                bad(name, v, "an integer >= 1" if name in positive_ints else "an integer >= 0")
    for name in positive_floats + nonneg_floats + probabilities:
        for v in values(name):
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            if name in probabilities:
                ok = ok and 0.0 < v < 1.0
            elif name in positive_floats:
                ok = ok and v > 0.0
            else:
                ok = ok and v >= 0.0
            if not ok:
                bad(name, v, "in (0, 1)" if name in probabilities else
                    "a finite number > 0" if name in positive_floats else "a finite number >= 0")
    for name in devices:
        check_device(getattr(cfg, name), option=_flag(name))


def check_device(name: str, *, option: str = "--device") -> None:
    """ValueError unless ``name`` is ``auto``, ``cpu``, or a CUDA/MPS device this machine has."""
    import torch

    if name in (None, "auto"):
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{option} {name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name}: this machine has no CUDA device; use --device cpu (or auto).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name}: there are only {torch.cuda.device_count()} CUDA device(s).")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"{option} {name}: MPS is not available here; use --device cpu (or auto).")
    elif dev.type != "cpu":
        raise ValueError(f"{option} {name!r}: polab runs on auto, cpu, cuda or mps.")


class RunLogger(MetricLogger):
    """The earlier run logger's call form, now :class:`polab.scaled.logger.MetricLogger`.

    ``RunLogger(out, config, columns, resume_step=None, tensorboard=True)`` is
    ``MetricLogger(out, config=config, columns=columns, resume_step=resume_step,
    backends=("csv", "tensorboard") if tensorboard else ("csv",))``. ``columns`` fixes the leading CSV
    columns; later metrics add columns (the old logger refused them).
    """

    def __init__(self, out: Path, config: dict, columns: list[str], *, resume_step: int | None = None, tensorboard: bool = True):
        super().__init__(out, config=config, columns=[c for c in columns if c != "step"], resume_step=resume_step,
                         backends=("csv", "tensorboard") if tensorboard else ("csv",))


def add_run_arguments(parser) -> None:
    """The run-folder options every trainer's command line shares (seed, device, folder, checkpoints, resume, logging).

    Each defaults to ``None`` (``--resume``, ``--overwrite``, ``--no-*``: ``None`` too), so that only what the
    user gives overrides the preset's value.
    """
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (default), cpu, cuda")
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--out", help="run folder")
    parser.add_argument("--resume", action="store_true", default=None, help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="start a new run in --out even though it holds files (they are replaced as the run writes)")
    parser.add_argument("--stop-after", type=int, help="stop after this many steps of this invocation (for testing resume)")
    parser.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None)
