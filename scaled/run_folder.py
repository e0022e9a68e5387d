"""Run folders: config, metrics (CSV and TensorBoard), figures.

Layout of a run folder::

    config.json          the full configuration of the run
    metrics.csv          one row per training step
    tensorboard/         the same metrics as TensorBoard scalars
    figures/*.png        plots drawn from metrics.csv
    checkpoints/         see polab.scaled.checkpoint
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .checkpoint import atomic_write_text

__all__ = ["RunLogger", "read_metrics"]


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics CSV as dicts of floats (empty cells become NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({k: (float(v) if v not in ("", None) else math.nan) for k, v in r.items()})
    return out


class RunLogger:
    """Writes metrics of one run; only the main process should hold an enabled logger.

    Parameters
    ----------
    out : Path
        The run folder.
    config : dict
        Written to ``config.json``.
    columns : list of str
        Metric names, fixed for the run (``step`` is added first).
    resume_step : int, optional
        When resuming, rows after this step are dropped from ``metrics.csv``
        (they belong to the interrupted tail) and TensorBoard purges them.
    tensorboard : bool
    """

    def __init__(self, out: Path, config: dict, columns: list[str], *, resume_step: int | None = None, tensorboard: bool = True):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "figures").mkdir(exist_ok=True)
        self.columns = ["step"] + [c for c in columns if c != "step"]
        atomic_write_text(self.out / "config.json", json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        self.csv_path = self.out / "metrics.csv"
        kept: list[dict] = []
        if resume_step is not None and self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
        text_rows = [",".join(self.columns)]
        for r in kept:
            text_rows.append(",".join(str(r.get(c, "")) for c in self.columns))
        atomic_write_text(self.csv_path, "\n".join(text_rows) + "\n")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is in the `llm` extra
                SummaryWriter = None
            if SummaryWriter is not None:
                kw = {"purge_step": resume_step + 1} if resume_step is not None else {}
                self._tb = SummaryWriter(str(self.out / "tensorboard"), **kw)

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": step, **metrics}
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"metrics {sorted(unknown)} were not declared when the run folder was opened.")
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k.replace(":", "/"), v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def add_run_arguments(parser) -> None:
    """The run-folder options every trainer's command line shares (seed, device, folder, checkpoints, resume, logging).

    Each defaults to ``None`` (``--resume``, ``--no-*``: ``None`` too), so that only what the user gives
    overrides the preset's value.
    """
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (default), cpu, cuda")
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--out", help="run folder")
    parser.add_argument("--resume", action="store_true", default=None, help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--stop-after", type=int, help="stop after this many steps of this invocation (for testing resume)")
    parser.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None)
