"""Verified, atomic checkpoints that load without running code.

Layout of a run folder's ``checkpoints/``::

    checkpoints/
        latest                    the name of the newest complete checkpoint ("step_00000012")
        history.json              the checkpoints this run wrote, oldest first (what rotation may delete)
        step_00000012/
            manifest.json         format, step, entries, and the size and sha256 of every other file
            trainer_state.pt      plain containers + tensors; loads with torch.load(weights_only=True)
            policy/               a `pretrained` entry: a Hugging Face folder (save_pretrained weights in
                                  safetensors, config, generation config, tokenizer)
            critic.safetensors    a `models` entry (safetensors.torch.save_model)

Guarantees
----------
- **Atomic.** A checkpoint is written into a temporary folder ``.step_XXXXXXXX.tmp-PID-HEX`` beside the
  others, every file fsynced, then renamed into place; ``latest`` and ``history.json`` are replaced
  atomically after it. A kill at any moment leaves the previous checkpoint intact and ``latest``
  naming a complete one. Temporaries of dead processes are removed by the next save, and all of them by
  :func:`polab.scaled.run_folder.prepare_run_folder` (which holds the folder's lock).
- **Verified.** :func:`load_checkpoint` checks every file against the manifest's sha256 before loading;
  :func:`latest_checkpoint` falls back to the newest intact checkpoint this run wrote, with a
  :class:`CheckpointWarning`, or raises :class:`CheckpointError` when none is intact.
- **No code from files.** The trainer state is read with ``torch.load(weights_only=True)`` and weights
  with safetensors; a state that needs arbitrary unpickling is refused with :class:`CheckpointError`.
  ``save_checkpoint`` refuses, before writing, a state that holds anything but plain containers, numbers,
  strings and tensors.
- **Contained.** ``latest`` must name a ``step_*`` folder inside ``checkpoints/`` (no ``..``, no
  absolute path, no symlink leading outside).
- **Rotation by record.** Only checkpoints listed in ``history.json`` (written by this run folder's
  saves) are deleted, oldest first; folders the history does not list (leftovers of another run, copies
  a user put there) are never touched, and the checkpoint ``latest`` names is never deleted.
- **Permissions** follow the user's umask (no ``mkstemp``/``mkdtemp``, which create owner-only files).

Checkpoints written before this format (a single ``state.pt``, no manifest) still load, with
``weights_only=True`` and a warning that they cannot be verified.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import re
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "apply_umask",
    "atomic_write_text",
    "checkpoint_path",
    "clean_temporaries",
    "current_umask",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
]

FORMAT = "polab-checkpoint"
VERSION = 1
STATE_FILE = "trainer_state.pt"
MANIFEST = "manifest.json"
HISTORY = "history.json"
LEGACY_STATE = "state.pt"
_STEP_RE = re.compile(r"step_\d{8,}")
_TMP_RE = re.compile(r"\.step_\d+\.(?:tmp|old)-(\d+)-[0-9a-f]+")
_CHUNK = 1 << 22


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, unsafe to load, or does not match what the caller asked for."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped, or an old-format checkpoint could not be verified."""


# ----------------------------------------------------------------------------------------------------
# small file helpers
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it races with threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give every file under ``root`` (and ``root``) the mode a plain ``open``/``mkdir`` would have.

    Some writers (safetensors, ``tempfile.mkstemp``) create owner-only files whatever the umask, so a
    group could not read its own checkpoints; this restores ``0o666 & ~umask`` (files) and
    ``0o777 & ~umask`` (folders).
    """
    mask = current_umask()
    root = Path(root)
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for p in paths:
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _tmp_name(prefix: str, kind: str = "tmp") -> str:
    """A unique temporary name carrying this process's pid (so stale ones can be told from live ones)."""
    return f"{prefix}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically: a temporary file in the same folder, fsynced, then renamed.

    The file is created with the process's umask (like ``open``), not owner-only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / _tmp_name(f".{path.name}")
    try:
        with open(tmp, "x") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_temporaries(run_dir: Path, *, only_dead: bool = True) -> list[Path]:
    """Remove interrupted checkpoint writes (``checkpoints/.step_*``) and stale pointer temporaries.

    Parameters
    ----------
    run_dir : Path
        The run folder.
    only_dead : bool
        Remove only temporaries whose writing process no longer exists (safe without a lock).
        ``False`` removes all of them; do that only while holding the run folder's lock.

    Returns
    -------
    list of Path
        What was removed.
    """
    ck = Path(run_dir) / "checkpoints"
    removed: list[Path] = []
    if not ck.is_dir():
        return removed
    for p in ck.iterdir():
        name = p.name
        if not name.startswith("."):
            continue
        m = _TMP_RE.fullmatch(name)
        pointer_tmp = re.fullmatch(r"\.(?:latest|history\.json)\.tmp-(\d+)-[0-9a-f]+", name)
        legacy_tmp = name.startswith(".step_") and m is None  # written by mkdtemp before this format
        if not (m or pointer_tmp or legacy_tmp):
            continue
        pid = int((m or pointer_tmp).group(1)) if (m or pointer_tmp) else None
        if only_dead and pid is not None and _pid_alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


# ----------------------------------------------------------------------------------------------------
# what a trainer state may hold
_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError naming the first value ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"{where} is a {type(obj).__name__} (a tensor subclass); store a plain tensor (.detach() / torch.Tensor(x)).")
        return
    if type(obj) in _SCALARS:
        return
    if type(obj) in (dict, collections.OrderedDict, collections.Counter):
        for k, v in obj.items():
            if type(k) not in _SCALARS:
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str/int keys.")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple, set):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    hint = ""
    mod = type(obj).__module__
    if mod == "numpy":
        hint = " Convert numpy values with .tolist() or torch.from_numpy()."
    elif hasattr(obj, "state_dict"):
        hint = " Store its .state_dict() instead."
    raise TypeError(
        f"{where} is a {mod}.{type(obj).__qualname__}; a checkpoint's state may hold only dicts, lists, tuples, sets, "
        f"None, bool, int, float, str, bytes and tensors (it must load with torch.load(weights_only=True)).{hint}"
    )


def _unwrap(module):
    return getattr(module, "module", module) if type(module).__name__ in ("DistributedDataParallel", "DataParallel") else module


# ----------------------------------------------------------------------------------------------------
# saving
def _step_name(step: int) -> str:
    return f"step_{step:08d}"


def _read_history(ck: Path) -> list[str]:
    try:
        data = json.loads((ck / HISTORY).read_text())
        names = data["written"] if isinstance(data, dict) else None
        if isinstance(names, list) and all(isinstance(n, str) and _STEP_RE.fullmatch(n) for n in names):
            return list(names)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return []


def _latest_name(ck: Path) -> str | None:
    """The step folder name ``ck/latest`` holds, when it holds a well-formed one."""
    try:
        name = (ck / "latest").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _STEP_RE.fullmatch(name) else None


def _quiet_save_pretrained(model, folder: Path) -> None:
    """``model.save_pretrained(folder)`` without transformers' per-save "Writing model shards" progress bar."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - a pretrained entry implies transformers
        model.save_pretrained(folder)
        return
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def save_checkpoint(run_dir: Path, step: int, *args, state: Mapping | None = None, models: Mapping | None = None,
                    pretrained: Mapping | None = None, keep: int = 2) -> Path:
    """Write checkpoint ``step`` of a run atomically, point ``latest`` at it, rotate this run's old ones.

    Parameters
    ----------
    run_dir : Path
        The run folder; the checkpoint goes to ``run_dir/checkpoints/step_XXXXXXXX/``.
    step : int
        Training step (>= 0).
    state : dict
        Optimizer/scheduler/RNG states, counters, config: plain containers (dict, list, tuple, set),
        None/bool/int/float/str/bytes and tensors. Written as ``trainer_state.pt``. The old call form
        ``save_checkpoint(run_dir, step, state)`` (state positional) is accepted and means the same.
    models : dict of str to nn.Module
        Each saved as ``<name>.safetensors`` (shared/tied tensors stored once).
    pretrained : dict of str to (model, tokenizer or None)
        Each saved as a Hugging Face folder ``<name>/`` (``save_pretrained``: safetensors weights, config,
        generation config; and the tokenizer) that ``AutoModelForCausalLM.from_pretrained`` loads.
    keep : int
        How many of this run's checkpoints to keep (>= 1; 0 keeps all).

    Returns
    -------
    Path
        The checkpoint folder.

    Raises
    ------
    TypeError
        When ``state`` holds a value that would need code to load (the message names where it is).
    ValueError
        On a negative step or keep, or a bad entry name.
    """
    if args:  # old positional form: save_checkpoint(root, step, state, keep=...)
        if len(args) != 1 or state is not None:
            raise TypeError("save_checkpoint(run_dir, step, *, state=..., models=..., pretrained=..., keep=...) takes state once.")
        state = args[0]
    state = {} if state is None else state
    models = dict(models or {})
    pretrained = dict(pretrained or {})
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}.")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValueError(f"keep must be an integer >= 1 (or 0 to keep every checkpoint), got {keep!r}.")
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict, got {type(state).__name__}.")
    _check_plain(dict(state), "state")
    for kind, entries in (("models", models), ("pretrained", pretrained)):
        for name in entries:
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name.endswith((".pt", ".json")):
                raise ValueError(f"{kind} entry name {name!r} must be a plain file name (letters, digits, _ . -).")
    clash = set(models) & set(pretrained)
    if clash:
        raise ValueError(f"names {sorted(clash)} appear in both models and pretrained; use distinct names.")

    ck = Path(run_dir) / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    clean_temporaries(run_dir, only_dead=True)
    name = _step_name(step)
    final = ck / name
    tmp = ck / _tmp_name(f".{name}")
    os.mkdir(tmp)  # umask applies (mkdtemp would force 0700)
    try:
        with open(tmp / STATE_FILE, "xb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        for mname, module in models.items():
            from safetensors.torch import save_model

            path = tmp / f"{mname}.safetensors"
            save_model(_unwrap(module), str(path))
            _fsync_file(path)
        for pname, entry in pretrained.items():
            model, tokenizer = entry if isinstance(entry, tuple) else (entry, None)
            model = _unwrap(model)
            folder = tmp / pname
            _quiet_save_pretrained(model, folder)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
            if not any(folder.glob("*.safetensors")):
                raise RuntimeError(f"save_pretrained wrote no safetensors file for {pname!r}; cannot checkpoint this model safely.")
            for p in folder.rglob("*"):
                if p.is_file():
                    _fsync_file(p)
            _fsync_dir(folder)
        apply_umask(tmp)
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                rel = p.relative_to(tmp).as_posix()
                files[rel] = {"size": p.stat().st_size, "sha256": _sha256(p)}
        manifest = {"format": FORMAT, "version": VERSION, "step": step, "state": STATE_FILE,
                    "models": sorted(models), "pretrained": sorted(pretrained), "files": files}
        with open(tmp / MANIFEST, "x") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        apply_umask(tmp / MANIFEST)
        _fsync_dir(tmp)
        trash = None
        if final.exists() or final.is_symlink():  # a stale copy of this step (e.g. written before a crash)
            trash = ck / _tmp_name(f".{name}", "old")
            os.replace(final, trash)
        os.replace(tmp, final)
        _fsync_dir(ck)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except OSError as exc:
        raise _write_failure(ck, name, exc) from None
    except RuntimeError as exc:  # torch's zip writer reports a failed write as RuntimeError
        if "PytorchStreamWriter" in str(exc) or "unexpected pos" in str(exc):
            raise _write_failure(ck, name, exc) from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    # Record the new checkpoint as this run's before pointing `latest` at it, so a kill between the two
    # leaves no checkpoint of this run outside the record (a kill before this line leaves `step_N` that the
    # resumed run writes again). The previous `latest` target is this run's too (only saves write `latest`).
    try:
        _record(ck, name, keep)
    except OSError as exc:
        raise _write_failure(ck, name, exc) from None
    return final


def _write_failure(ck: Path, name: str, exc: BaseException) -> CheckpointError:
    # torch's zip writer reports only "unexpected pos ..." when the file system refuses a write
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the file system refused a write"
    return CheckpointError(
        f"could not write checkpoint {name} in {ck} ({reason}; disk full or a file-size limit?). checkpoints/latest "
        "names the last complete checkpoint: free space (or choose another --out) and continue with --resume."
    )


def _record(ck: Path, name: str, keep: int) -> None:
    """Add ``name`` to this run's history, point ``latest`` at it, and rotate the history beyond ``keep``."""
    history = _read_history(ck)
    prev = _latest_name(ck)
    if prev is not None and prev not in history and prev != name and (ck / prev).is_dir():
        history.append(prev)
    history = [h for h in history if h != name] + [name]
    atomic_write_text(ck / HISTORY, json.dumps({"written": history}) + "\n")
    atomic_write_text(ck / "latest", name + "\n")
    if keep > 0 and len(history) > keep:
        for old in history[:-keep]:
            p = ck / old
            if old != name and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
        atomic_write_text(ck / HISTORY, json.dumps({"written": history[-keep:]}) + "\n")


# ----------------------------------------------------------------------------------------------------
# verifying and finding
def verify_checkpoint(ckpt_dir: Path) -> dict | None:
    """Check every file of a checkpoint against its manifest.

    Returns
    -------
    dict or None
        The manifest; None for an old-format checkpoint (``state.pt`` without manifest), which cannot be
        verified.

    Raises
    ------
    CheckpointError
        Naming the first problem (missing folder or manifest, missing file, size or sha256 mismatch).
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"{ckpt_dir} is not a checkpoint folder (it does not exist).")
    mpath = ckpt_dir / MANIFEST
    if not mpath.is_file():
        if (ckpt_dir / LEGACY_STATE).is_file():
            return None
        raise CheckpointError(f"{ckpt_dir} has no {MANIFEST}; it is not a complete polab checkpoint.")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("not a polab checkpoint manifest")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{mpath} is damaged ({exc}).") from None
    if int(manifest.get("version", 0)) > VERSION:
        raise CheckpointError(f"{ckpt_dir} was written by a newer polab (format version {manifest['version']}); upgrade polab to load it.")
    root = ckpt_dir.resolve()
    for rel, info in files.items():
        p = ckpt_dir / rel
        if root not in p.resolve().parents:
            raise CheckpointError(f"{mpath} lists {rel!r}, which lies outside the checkpoint folder.")
        if not p.is_file():
            raise CheckpointError(f"{ckpt_dir} is missing {rel}.")
        size = p.stat().st_size
        if size != info.get("size"):
            raise CheckpointError(f"{p} has {size} bytes, the manifest says {info.get('size')} (truncated or replaced).")
        if _sha256(p) != info.get("sha256"):
            raise CheckpointError(f"{p} does not match its sha256 in the manifest (the file is corrupted).")
    return manifest


def _step_of(name: str) -> int:
    return int(name.split("_", 1)[1])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Every ``checkpoints/step_*`` folder of a run, by step (unverified; leftovers included)."""
    ck = Path(run_dir) / "checkpoints"
    if not ck.is_dir():
        return []
    return sorted((p for p in ck.iterdir() if _STEP_RE.fullmatch(p.name) and p.is_dir() and not p.is_symlink()),
                  key=lambda p: _step_of(p.name))


def _contained(ck: Path, name: str, origin: str) -> Path:
    """``ck/name`` after checking that ``name`` is a step folder name that stays inside ``ck``."""
    if not _STEP_RE.fullmatch(name):
        raise CheckpointError(
            f"{origin} names {name!r}, which is not a checkpoint of this run folder (expected step_XXXXXXXX); "
            f"polab loads only checkpoints inside {ck}. Fix or delete {origin}."
        )
    path = ck / name
    if path.exists() and path.resolve().parent != ck.resolve():
        raise CheckpointError(f"{path} is a link leading outside {ck}; polab loads only checkpoints inside the run folder.")
    return path


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """The verified checkpoint of ``step`` in a run folder (CheckpointError when absent or damaged)."""
    ck = Path(run_dir) / "checkpoints"
    path = _contained(ck, _step_name(int(step)), f"step {step}")
    if not path.is_dir():
        have = ", ".join(str(_step_of(p.name)) for p in list_checkpoints(run_dir)) or "none"
        raise CheckpointError(f"{run_dir} has no checkpoint of step {step} (steps there: {have}).")
    verify_checkpoint(path)
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest intact checkpoint of a run folder.

    Follows ``checkpoints/latest`` (which must name a ``step_*`` folder inside ``checkpoints/``) and
    verifies it. When it is damaged, falls back to the newest intact checkpoint among those this run
    wrote (``history.json``; without a history, any older ``step_*`` folder), with a
    :class:`CheckpointWarning` naming what was skipped.

    Returns
    -------
    Path or None
        None when the run has no ``latest`` pointer (no checkpoint was completed).

    Raises
    ------
    CheckpointError
        When ``latest`` points outside the run folder, or no checkpoint is intact.
    """
    ck = Path(run_dir) / "checkpoints"
    ptr = ck / "latest"
    if not ptr.is_file():
        return None
    try:
        target_name = ptr.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{ptr} cannot be read ({exc}).") from None
    target = _contained(ck, target_name, str(ptr))
    problems = []
    try:
        verify_checkpoint(target)
        return target
    except CheckpointError as exc:
        problems.append(str(exc))
    history = _read_history(ck)
    if history:
        candidates = [h for h in reversed(history) if h != target_name]
    else:
        candidates = [p.name for p in reversed(list_checkpoints(run_dir)) if _step_of(p.name) < _step_of(target_name)]
    for name in candidates:
        path = ck / name
        if not path.is_dir() or path.is_symlink():
            continue
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        warnings.warn(f"checkpoint {target} is damaged; falling back to {path}. Skipped: " + " | ".join(problems),
                      CheckpointWarning, stacklevel=2)
        return path
    raise CheckpointError(f"no intact checkpoint in {ck}: " + " | ".join(problems)
                          + ". Start a new run (another --out, or --overwrite) or restore the checkpoint files.")


# ----------------------------------------------------------------------------------------------------
# loading
def _safe_torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not plain data: loading it would run code ({str(exc).splitlines()[0]}). polab loads trainer "
            "state only with torch.load(weights_only=True) and refuses this file; it was not written by polab, or was tampered with."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); the file is damaged.") from None


def _load_into(module, tensors: dict, where: str) -> None:
    """Strict in-place load that accepts keys dropped because they alias (tie) a loaded tensor."""
    module = _unwrap(module)
    expected = module.state_dict(keep_vars=True)
    unexpected = sorted(set(tensors) - set(expected))
    missing = [k for k in expected if k not in tensors]
    by_storage = {}
    for k, v in expected.items():
        if k in tensors and isinstance(v, torch.Tensor) and v.numel() > 0:
            by_storage.setdefault((v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)), k)
    really_missing = [k for k in missing if not (isinstance(expected[k], torch.Tensor) and (
        expected[k].untyped_storage().data_ptr(), expected[k].storage_offset(), tuple(expected[k].shape)) in by_storage)]
    if unexpected or really_missing:
        raise CheckpointError(
            f"{where} does not fit the given module: missing {really_missing[:5]}{'...' if len(really_missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} (is it the same architecture?)."
        )
    try:
        module.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{where} does not fit the given module: {str(exc).splitlines()[0]}") from None


def _load_pretrained_into(module, folder: Path) -> None:
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(f), device="cpu"))
    _load_into(module, tensors, str(folder))


def load_checkpoint(ckpt_dir: Path, *, models: Mapping | None = None, pretrained: Mapping | None = None) -> dict:
    """Verify a checkpoint, load its weights into the given modules in place, and return its state.

    Parameters
    ----------
    ckpt_dir : Path
        A checkpoint folder (from :func:`latest_checkpoint` or :func:`checkpoint_path`).
    models : dict of str to nn.Module
        Modules to fill from ``<name>.safetensors`` (strict: same keys and shapes).
    pretrained : dict of str to nn.Module
        Modules to fill from the Hugging Face folder ``<name>/`` (strict; tied weights stored once are fine).

    Returns
    -------
    dict
        The trainer state, loaded with ``torch.load(weights_only=True)`` onto the CPU.

    Raises
    ------
    CheckpointError
        When a file is missing or does not match the manifest, the state would need code to load, or an
        asked-for entry is absent or does not fit its module.
    """
    ckpt_dir = Path(ckpt_dir)
    models = dict(models or {})
    pretrained = dict(pretrained or {})
    manifest = verify_checkpoint(ckpt_dir)
    if manifest is None:  # old format: one state.pt
        if models or pretrained:
            raise CheckpointError(f"{ckpt_dir} is an old-format checkpoint (state.pt only); it holds no separate model files.")
        warnings.warn(f"{ckpt_dir} is an old-format checkpoint without a manifest; it is loaded with "
                      "torch.load(weights_only=True) but cannot be verified.", CheckpointWarning, stacklevel=2)
        return _safe_torch_load(ckpt_dir / LEGACY_STATE)
    for kind, wanted in (("models", models), ("pretrained", pretrained)):
        absent = sorted(set(wanted) - set(manifest.get(kind, [])))
        if absent:
            raise CheckpointError(f"{ckpt_dir} has no {kind} entry {absent}; it holds models {manifest.get('models', [])} "
                                  f"and pretrained {manifest.get('pretrained', [])}.")
    state = _safe_torch_load(ckpt_dir / manifest.get("state", STATE_FILE))
    if not isinstance(state, dict):
        raise CheckpointError(f"{ckpt_dir / STATE_FILE} holds a {type(state).__name__}, not a state dict.")
    for name, module in models.items():
        from safetensors.torch import load_file

        _load_into(module, load_file(str(ckpt_dir / f"{name}.safetensors"), device="cpu"), str(ckpt_dir / f"{name}.safetensors"))
    for name, module in pretrained.items():
        _load_pretrained_into(module, ckpt_dir / name)
    return state
