"""One metric logger for every run: CSV, TensorBoard and (optionally) Weights & Biases back ends.

:class:`MetricLogger` writes one row per :meth:`MetricLogger.log` call to
``out/metrics.csv`` and, depending on ``backends``, the numeric values to
TensorBoard (``out/tensorboard/``) and to Weights & Biases (``out/wandb/``).

CSV format
----------
- The first column is ``step``; the other columns appear in the order the
  metrics were first logged (or in the order given by ``columns``).
- Values may be numbers, strings, booleans or ``None``. Floats are written with
  ``repr`` (exact round trip), booleans as ``1``/``0``, ``None`` as an empty
  cell. Strings are quoted by the :mod:`csv` module where needed.
- A metric that first appears in a later row adds a column: the file is
  rewritten once, atomically (temporary file + ``os.replace``), with the new
  header and empty cells in the earlier rows.
- On resume (``resume_step`` given) the rows with ``step > resume_step`` (the
  interrupted tail) are dropped from the CSV and TensorBoard purges its events
  after ``resume_step``, so a resumed run's files equal an uninterrupted run's.

:func:`read_metrics` reads the CSV back: a column whose non-empty cells all
parse as numbers becomes floats (empty cells NaN); any other column keeps its
strings (empty cells NaN as well).

Weights & Biases runs offline by default (``wandb_mode="offline"``: nothing is
sent anywhere; ``wandb sync out/wandb/offline-run-*`` uploads it later). It
needs the optional extra ``pip install 'polab[wandb]'``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import secrets
import tempfile
import warnings
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["BACKENDS", "WANDB_MODES", "MetricLogger", "read_metrics"]

#: Back ends :class:`MetricLogger` knows.
BACKENDS = ("csv", "tensorboard", "wandb")
#: Modes of the Weights & Biases back end (``wandb.init(mode=...)``).
WANDB_MODES = ("offline", "online", "disabled")


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600 whatever the umask; give it the mode `open` would (a group reads its own runs)
        from .checkpoint import current_umask

        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cell(value, *, name: str) -> str:
    """One CSV cell: repr for floats (exact), 1/0 for booleans, '' for None, str for strings and integers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if hasattr(value, "item") and hasattr(value, "ndim") and getattr(value, "ndim") == 0:  # 0-d torch/numpy
        value = value.item()
        if isinstance(value, bool):
            return "1" if value else "0"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))  # np.float64's own repr is "np.float64(...)" under numpy 2
    raise ValueError(
        f"metric {name!r} has a value of type {type(value).__name__}; log a number, a string, a bool or None "
        "(convert tensors with .item())."
    )


def _scalar(value) -> float | None:
    """The value as a finite float for the numeric back ends, or None (strings, None, NaN, inf)."""
    if value is None or isinstance(value, str):
        return None
    if hasattr(value, "item") and hasattr(value, "ndim") and getattr(value, "ndim") == 0:
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if math.isfinite(v) else None
    return None


class MetricLogger:
    """Writes the metrics of one run to CSV, TensorBoard and/or Weights & Biases.

    Only the main process of a distributed run should hold one.

    Parameters
    ----------
    out : Path
        The run folder (created if missing, with a ``figures/`` subfolder).
    config : dict, optional
        Written to ``out/config.json`` (JSON, sorted keys; non-JSON values via ``str``)
        and passed to Weights & Biases as the run config.
    backends : sequence of {"csv", "tensorboard", "wandb"}
        Where the metrics go. ``"tensorboard"`` needs the ``tensorboard`` package (extra
        ``llm``): without it a warning is issued and the back end is skipped.
        ``"wandb"`` needs ``pip install 'polab[wandb]'``: without it a ``ValueError`` says so.
    resume_step : int, optional
        When resuming, the last step whose metrics are kept: rows with
        ``step > resume_step`` are dropped from ``metrics.csv`` and TensorBoard
        purges events after it. Without it an existing ``metrics.csv`` is replaced.
    wandb_project : str, optional
        Weights & Biases project name (default ``"polab"``).
    wandb_mode : {"offline", "online", "disabled"}
        ``"offline"`` (default) never contacts a server.
    run_name : str, optional
        Run name for Weights & Biases (default: the run folder's name).
    columns : sequence of str, optional
        Metric names to put first in the CSV header, in this order (``step`` is always
        the first column). Other metrics are still accepted and add columns when they appear.

    Notes
    -----
    Weights & Biases cannot delete logged history: on resume the run is continued
    under the id stored in ``out/wandb_run_id.txt`` (``resume="allow"``), and
    steps it already holds are ignored by wandb with a warning.

    Examples
    --------
    >>> with MetricLogger(path, config={"lr": 1e-3}, backends=("csv",)) as log:  # doctest: +SKIP
    ...     log.log(0, {"loss": 0.5, "method": "grpo"})
    """

    def __init__(
        self,
        out: Path,
        *,
        config: dict | None = None,
        backends: Sequence[str] = ("csv", "tensorboard"),
        resume_step: int | None = None,
        wandb_project: str | None = None,
        wandb_mode: str = "offline",
        run_name: str | None = None,
        columns: Sequence[str] | None = None,
    ):
        if isinstance(backends, str):
            backends = (backends,)
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise ValueError(f"backends: unknown back end(s) {unknown}; choose from {list(BACKENDS)}.")
        if wandb_mode not in WANDB_MODES:
            raise ValueError(f"wandb_mode must be one of {list(WANDB_MODES)}; got {wandb_mode!r}.")
        if resume_step is not None and (isinstance(resume_step, bool) or not isinstance(resume_step, numbers.Integral)):
            raise ValueError(f"resume_step must be an integer step or None; got {resume_step!r}.")
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {self.out} exists and is not a folder; give a run folder path.")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "figures").mkdir(exist_ok=True)
        self.backends = tuple(dict.fromkeys(backends))
        self.resume_step = None if resume_step is None else int(resume_step)
        self.closed = False
        if config is not None:
            _atomic_write_text(self.out / "config.json", json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")

        self.columns: list[str] = ["step"]
        for c in columns or ():
            self._check_name(c)
            if c not in self.columns:
                self.columns.append(c)
        self.csv_path = self.out / "metrics.csv"
        self._csv = "csv" in self.backends
        if self._csv:
            kept: list[dict] = []
            if self.resume_step is not None and self.csv_path.is_file():
                with open(self.csv_path, newline="") as f:
                    reader = csv.DictReader(f)
                    for c in reader.fieldnames or ():
                        if c not in self.columns:
                            self.columns.append(c)
                    kept = [r for r in reader if r.get("step") not in (None, "") and int(float(r["step"])) <= self.resume_step]
            self._rewrite(kept)

        self._tb = None
        if "tensorboard" in self.backends:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("MetricLogger: the tensorboard package is not installed (extra 'llm'); "
                              "logging without TensorBoard.", stacklevel=2)
            else:
                kw = {"purge_step": self.resume_step + 1} if self.resume_step is not None else {}
                self._tb = SummaryWriter(str(self.out / "tensorboard"), **kw)

        self._wandb = None
        if "wandb" in self.backends:
            self._wandb = self._init_wandb(config, wandb_project, wandb_mode, run_name)

    # -- back ends --------------------------------------------------------------------------------------------------
    def _init_wandb(self, config, project, mode, run_name):
        try:
            import wandb
        except ImportError as exc:
            raise ValueError("backends: 'wandb' needs Weights & Biases, which is not installed; "
                             "install the extra with: pip install 'polab[wandb]' (or drop 'wandb' from backends).") from exc
        id_file = self.out / "wandb_run_id.txt"
        run_id = id_file.read_text().strip() if (self.resume_step is not None and id_file.is_file()) else None
        if run_id is None:
            run_id = secrets.token_hex(4)  # wandb run ids: lowercase letters and digits
            _atomic_write_text(id_file, run_id + "\n")
        return wandb.init(
            project=project or "polab",
            name=run_name or self.out.resolve().name,
            dir=str(self.out),
            mode=mode,
            id=run_id,
            resume="allow",
            config=config,
        )

    @staticmethod
    def _check_name(name) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric names must be non-empty strings; got {name!r}.")

    def _rewrite(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in rows:
            w.writerow([r.get(c, "") or "" for c in self.columns])
        _atomic_write_text(self.csv_path, buf.getvalue())

    # -- public API ----------------------------------------------------------------------------------------------
    def log(self, step: int, metrics: Mapping[str, float | int | str | bool | None]) -> None:
        """Record the metrics of ``step`` (one CSV row; numeric values to TensorBoard / wandb).

        Parameters
        ----------
        step : int
            Training step (or row index) of these metrics.
        metrics : mapping of str to number, str, bool or None
            ``step`` is not allowed as a key (it is the first column). A 0-d tensor
            or numpy scalar is accepted and converted with ``.item()``.
        """
        if self.closed:
            raise ValueError("MetricLogger.log called after close(); open a new logger (resume_step=...) to continue.")
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise ValueError(f"step must be an integer; got {step!r} ({type(step).__name__}).")
        step = int(step)
        if not isinstance(metrics, Mapping):
            raise ValueError(f"metrics must be a mapping of names to values; got {type(metrics).__name__}.")
        for k in metrics:
            self._check_name(k)
        if "step" in metrics:
            raise ValueError("metrics must not contain 'step': pass the step as the first argument of log().")
        cells = {k: _cell(v, name=k) for k, v in metrics.items()}
        if self._csv:
            new = [k for k in metrics if k not in self.columns]
            if new:
                with open(self.csv_path, newline="") as f:
                    old = list(csv.DictReader(f))
                self.columns.extend(new)
                self._rewrite(old)
            row = {"step": str(step), **cells}
            with open(self.csv_path, "a", newline="") as f:
                csv.writer(f, lineterminator="\n").writerow([row.get(c, "") for c in self.columns])
        if self._tb is not None:
            for k, v in metrics.items():
                x = _scalar(v)
                if x is not None:
                    self._tb.add_scalar(k.replace(":", "/"), x, step)
            self._tb.flush()
        if self._wandb is not None:
            payload = {}
            for k, v in metrics.items():
                if isinstance(v, str):
                    payload[k] = v
                else:
                    x = _scalar(v)
                    if x is not None:
                        payload[k] = x
            self._wandb.log(payload, step=step)

    def close(self) -> None:
        """Flush and close the back ends (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def __enter__(self) -> "MetricLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics CSV as dicts.

    A column whose non-empty cells all parse as numbers gives floats; any other
    column keeps its strings. Empty cells are NaN in both kinds of column.

    Parameters
    ----------
    path : Path
        A ``metrics.csv`` (or a run folder holding one).

    Returns
    -------
    list of dict
        One dict per row, keyed by the header's column names.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file here; give a run folder holding metrics.csv or the CSV itself.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    numeric = {c: all(v in ("", None) or _number(v) is not None for v in (r[c] for r in rows)) for c in rows[0]}
    out = []
    for r in rows:
        d = {}
        for k, v in r.items():
            if v in ("", None):
                d[k] = math.nan
            elif numeric[k]:
                d[k] = float(v)
            else:
                d[k] = v
        out.append(d)
    return out
