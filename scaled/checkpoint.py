"""Atomic checkpoints.

A checkpoint is a folder ``checkpoints/step_XXXXXXXX`` holding ``state.pt``.
It is written under a temporary name in the same folder and renamed into
place, and the ``checkpoints/latest`` pointer is replaced atomically after
it, so an interruption at any moment leaves the previous checkpoint intact
and ``latest`` pointing at a complete one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = ["atomic_write_text", "save_checkpoint", "latest_checkpoint", "load_checkpoint"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(root: Path, step: int, state: dict, *, keep: int = 2) -> Path:
    """Save ``state`` (anything ``torch.save`` takes) as checkpoint ``step``; keep the newest ``keep``."""
    root = Path(root) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:08d}.", dir=root))
    try:
        with open(tmp / "state.pt", "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(root / "latest", final.name + "\n")
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The folder named by ``checkpoints/latest``, or None when there is none."""
    ptr = Path(root) / "checkpoints" / "latest"
    if not ptr.is_file():
        return None
    path = ptr.parent / ptr.read_text().strip()
    if not (path / "state.pt").is_file():
        raise FileNotFoundError(f"{ptr} names {path.name}, which has no state.pt; the run folder is damaged.")
    return path


def load_checkpoint(path: Path) -> dict:
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
