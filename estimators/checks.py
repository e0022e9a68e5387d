"""Input checks shared by the core estimators.

Every public estimator validates its inputs at entry and raises a
``ValueError`` that names the argument, shows the shape or the offending rows,
and says what to do about it. These helpers keep that wording uniform.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = [
    "as_tensor",
    "check_finite",
    "check_ndim",
    "check_same_shape",
    "check_mask",
]


def as_tensor(x, *, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return ``x`` as a tensor (no copy when it already is one).

    Floating inputs keep their dtype and device; Python lists and numpy arrays
    become float64 (or ``dtype``) CPU tensors.
    """
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    try:
        # Through numpy, so Python floats become float64 directly (torch.as_tensor on a list of
        # floats would round them to torch's default float32 first: 0.9 -> 0.8999999761).
        t = torch.as_tensor(np.asarray(x))
    except Exception as exc:  # pragma: no cover - message only
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a tensor ({exc})") from exc
    if dtype is not None:
        return t.to(dtype)
    if t.is_floating_point():
        return t.to(torch.float64)
    return t


def check_ndim(x: torch.Tensor, ndim: int, *, name: str, layout: str) -> None:
    """Raise if ``x`` does not have ``ndim`` dimensions; ``layout`` names them, e.g. ``"[batch]"``."""
    if x.ndim != ndim:
        raise ValueError(
            f"{name} must have shape {layout} ({ndim}-d); got shape {tuple(x.shape)}. "
            f"Reshape it to {layout}."
        )


def check_same_shape(a: torch.Tensor, b: torch.Tensor, *, names: Sequence[str]) -> None:
    """Raise if two tensors do not share a shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}."
        )


def check_finite(x: torch.Tensor, *, name: str, max_rows: int = 10) -> None:
    """Raise if ``x`` has a NaN or an infinity, naming the first offending rows (first dimension)."""
    if not x.is_floating_point():
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().flatten().tolist() if x.ndim else [0]
        shown = ", ".join(str(r) for r in rows[:max_rows])
        more = f" (and {len(rows) - max_rows} more)" if len(rows) > max_rows else ""
        raise ValueError(
            f"{name} has non-finite values (NaN or inf) at rows {shown}{more}. "
            f"Drop or repair these rows before calling (for example give unscorable responses a finite reward)."
        )


def check_mask(mask: torch.Tensor, like: torch.Tensor, *, name: str = "mask") -> torch.Tensor:
    """Check a 0/1 or boolean mask against ``like`` and return it in ``like``'s dtype."""
    if mask.shape != like.shape:
        raise ValueError(f"{name} must have the shape of the values it masks, {tuple(like.shape)}; got {tuple(mask.shape)}.")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must hold only 0 and 1 (or booleans).")
    return mask.to(like.dtype)
