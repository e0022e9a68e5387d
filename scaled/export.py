"""``polab export RUN_FOLDER --out DIR [--step N] [--name policy]``: a checkpoint's model as a Hugging Face folder.

The exported folder holds what ``save_pretrained`` writes (config, generation config, safetensors weights)
and the tokenizer, so ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` and
``AutoTokenizer.from_pretrained(DIR)`` load it, and so do tools that read Hugging Face folders (vLLM,
TGI, ``huggingface-cli upload``). ``polab_export.json`` beside them records the source checkpoint, its
step and the sha256 of every exported file.

Where the checkpoint holds the model as a ``pretrained`` entry (a Hugging Face folder), its files are
copied and checked against the checkpoint's manifest. A checkpoint written before that (weights inside
the trainer state as ``state["model"]``, next to ``state["config"]["model"]``) is exported by loading the
base model the run started from (:func:`polab.scaled.models.load_model`) and its trained weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from .checkpoint import (
    CheckpointError,
    MANIFEST,
    LEGACY_STATE,
    _sha256,
    _tmp_name,
    apply_umask,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    verify_checkpoint,
)

__all__ = ["export_checkpoint", "main"]


def _check_out(out) -> Path:
    if out is None or not str(out).strip():
        raise ValueError("--out is empty; give the folder to export into (e.g. --out exported/my-model).")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: this is a file; give a new or empty folder.")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} is not empty; export into a new or empty folder (nothing there was changed).")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, so the folder cannot be created inside it.")
            break
    return out


def _find_checkpoint(src: Path, step: int | None) -> Path:
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist; give a run folder (or one of its checkpoints/step_* folders).")
    if (src / MANIFEST).is_file() or (src / LEGACY_STATE).is_file():  # a checkpoint folder itself
        if step is not None and src.name != f"step_{step:08d}":
            raise ValueError(f"--step {step} does not match the checkpoint folder {src}; give the run folder with --step.")
        verify_checkpoint(src)
        return src
    if step is not None:
        return checkpoint_path(src, step)
    ck = latest_checkpoint(src)
    if ck is None:
        raise CheckpointError(f"{src} has no checkpoint (no checkpoints/latest); give a run folder that saved one.")
    return ck


def export_checkpoint(src, out, *, name: str = "policy", step: int | None = None) -> Path:
    """Export the model ``name`` of a run's checkpoint as a Hugging Face folder.

    Parameters
    ----------
    src : str or Path
        A run folder (its latest intact checkpoint, or ``step``) or a ``checkpoints/step_*`` folder.
    out : str or Path
        A new or empty folder; written atomically (a temporary folder beside it, renamed at the end).
    name : str
        The checkpoint's ``pretrained`` entry to export (trainers save the policy as ``"policy"``).
    step : int, optional
        Export the checkpoint of this step instead of the latest.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ValueError
        Bad ``out`` (empty, a file, not empty) or ``step``; CheckpointError (a ValueError) when the
        checkpoint is missing, damaged, or holds no model ``name``.
    """
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ValueError(f"--step must be an integer >= 0; got {step!r}.")
    out = _check_out(out)
    ckpt = _find_checkpoint(Path(src), step)
    manifest = verify_checkpoint(ckpt)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / _tmp_name(f".{out.name}")
    os.mkdir(tmp)
    try:
        files = {}
        if manifest is not None and name in manifest.get("pretrained", []):
            prefix = f"{name}/"
            for rel, info in sorted(manifest["files"].items()):
                if not rel.startswith(prefix):
                    continue
                dst = tmp / rel[len(prefix):]
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ckpt / rel, dst)
                if _sha256(dst) != info["sha256"]:
                    raise CheckpointError(f"{ckpt / rel} changed while it was exported; export again.")
                files[rel[len(prefix):]] = info["sha256"]
            source = "pretrained entry"
        else:
            _export_from_state(ckpt, tmp, name, manifest)
            files = {p.relative_to(tmp).as_posix(): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            source = "trainer state (base model + trained weights)"
        record = {"source_checkpoint": str(ckpt.resolve()), "step": manifest["step"] if manifest else int(ckpt.name.split("_")[1]),
                  "entry": name, "from": source, "files": files}
        (tmp / "polab_export.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        apply_umask(tmp)
        os.replace(tmp, out)  # onto a missing or empty folder
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _export_from_state(ckpt: Path, dst: Path, name: str, manifest: dict | None) -> None:
    """Older checkpoints: the base model named in the saved config, with the state's trained weights."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old-format "cannot be verified" warning: reported by the caller's message
        state = load_checkpoint(ckpt)
    held = (manifest or {}).get("pretrained", [])
    weights = state.get("model") if name == "policy" else None
    cfg = state.get("config") if isinstance(state.get("config"), dict) else {}
    if weights is None or "model" not in cfg:
        raise CheckpointError(
            f"{ckpt} holds no model {name!r} to export (pretrained entries: {held or 'none'}; no trainer-state weights "
            "with a recorded base model). Pass --name with one of the entries."
        )
    from .models import load_model

    loaded = load_model(cfg["model"], seed=int(cfg.get("seed", 0)))
    try:
        loaded.model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt}: the saved weights do not fit base model {cfg['model']!r} ({str(exc).splitlines()[0]}).") from None
    loaded.model.save_pretrained(dst)
    loaded.tokenizer.save_pretrained(dst)


def main(argv: list[str] | None = None) -> int:
    """``polab export RUN_FOLDER --out DIR [--step N] [--name NAME]``; exit 0, or 2 with a one-line error."""
    p = argparse.ArgumentParser(prog="polab export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_folder", help="a run folder (or one of its checkpoints/step_* folders)")
    p.add_argument("--out", required=True, help="a new or empty folder for the Hugging Face model")
    p.add_argument("--step", type=int, help="export this step's checkpoint (default: the latest intact one)")
    p.add_argument("--name", default="policy", help="the checkpoint's model entry (default: policy)")
    args = p.parse_args(argv)
    try:
        out = export_checkpoint(args.run_folder, args.out, name=args.name, step=args.step)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        print(f"polab export: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.name} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
