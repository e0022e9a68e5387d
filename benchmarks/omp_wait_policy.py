"""OpenMP wait policy side by side: ``benchmarks/grpo_step_vs_trl.py`` under ``OMP_WAIT_POLICY=PASSIVE`` and the runtime's default.

The policy is read once by the OpenMP runtime when torch loads it, so each measurement is its own
process: the benchmark runs ``--repeats`` times per policy in ABBA order (PASSIVE, default, default,
PASSIVE, ...; drift in the machine's load then hits both alike), all under the same background load
(``--background-load N`` busy processes, ``python -c "while True: pass"``, started here once for the
whole run, so both policies meet the same competition). Each child runs the benchmark with
``--background-load 0`` and the options after ``--`` (default: a reduced step, bfloat16 polab vs TRL
float32, 2 pairs). The summary gives, per policy, the median and the range over all pairs of every
run of the polab step, its rollout and training parts, TRL's step, and the rollout tokens/s of polab's
sampler and of transformers' ``generate``; the last line is the median of PASSIVE / default for the polab step.

Run: ``python benchmarks/omp_wait_policy.py --repeats 2 --background-load 2``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from background_load import start_background_load  # benchmarks/ is the script's directory

BENCHES = {"trl": Path(__file__).with_name("grpo_step_vs_trl.py"), "profile": Path(__file__).with_name("grpo_step_profile.py")}
DEFAULT_CHILD = {"trl": ["--pairs", "2", "--dtype", "bfloat16", "--prompts", "4", "--samples", "4", "--max-new-tokens", "24", "--micro-batch", "8"],
                 "profile": ["--mode", "bfloat16", "--steps", "2", "--no-profiler"]}
POLICIES = {"PASSIVE": "PASSIVE", "default": ""}  # "" -> polab.scaled.omp_env removes the variable: the runtime's default

PAIR = re.compile(r"polab (\w+)\s+([\d.]+) s \(rollout ([\d.]+), train ([\d.]+).*?\| TRL\s+([\d.]+) s")
ROLL = re.compile(r"rollout \d+ \w+ (polab|generate)\s*: \s*[\d.]+ s,\s*([\d.]+) tokens/s")
PROF_STEP = re.compile(r"^== \S+: step ([\d.]+) s")
PROF_PHASE = re.compile(r"^\s+(rollout prefill|rollout decode|training forward|training backward)\s+([\d.]+) s")


def parse(text: str) -> dict:
    out = {"polab": [], "rollout": [], "train": [], "trl": [], "tps_polab": [], "tps_generate": []}
    phases = {}
    for line in text.splitlines():
        m = PROF_STEP.search(line)
        if m:
            out["polab"].append(float(m.group(1)))
        m = PROF_PHASE.search(line)
        if m:
            phases[m.group(1)] = float(m.group(2))
            if "rollout prefill" in phases and "rollout decode" in phases and m.group(1) == "rollout decode":
                out["rollout"].append(phases["rollout prefill"] + phases["rollout decode"])
            if m.group(1) == "training backward":
                out["train"].append(phases["training forward"] + phases["training backward"])
        m = PAIR.search(line)
        if m and line.startswith("pair"):
            out["polab"].append(float(m.group(2)))
            out["rollout"].append(float(m.group(3)))
            out["train"].append(float(m.group(4)))
            out["trl"].append(float(m.group(5)))
        m = ROLL.search(line)
        if m:
            out[f"tps_{m.group(1)}"].append(float(m.group(2)))
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    child = None
    if "--" in argv:
        i = argv.index("--")
        argv, child = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="benchmark processes per policy")
    ap.add_argument("--background-load", type=int, default=2, metavar="N", help="busy processes for the whole run")
    ap.add_argument("--bench", default="trl", choices=sorted(BENCHES), help="trl: grpo_step_vs_trl.py (polab and TRL); profile: "
                    "grpo_step_profile.py (polab only, per-phase times; takes --model tiny-llama after --)")
    args = ap.parse_args(argv)
    if child is None:  # nothing after "--"
        child = DEFAULT_CHILD[args.bench]
    if args.repeats < 1 or args.background_load < 0:
        ap.error("--repeats must be >= 1 and --background-load >= 0")
    start_background_load(args.background_load)
    order = []
    for r in range(args.repeats):
        order += ["PASSIVE", "default"] if r % 2 == 0 else ["default", "PASSIVE"]
    res = {k: [] for k in POLICIES}
    for i, pol in enumerate(order):
        env = dict(os.environ, OMP_WAIT_POLICY=POLICIES[pol])
        l0, t0 = os.getloadavg()[0], time.perf_counter()
        extra = ["--background-load", "0"] if args.bench == "trl" else []
        r = subprocess.run([sys.executable, str(BENCHES[args.bench]), *extra, *child], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-3000:], r.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"benchmark run {i + 1} ({pol}) failed with exit {r.returncode}")
        p = parse(r.stdout)
        res[pol].append(p)
        print(f"run {i + 1}/{len(order)} OMP_WAIT_POLICY {pol:8s}: polab step {', '.join(f'{x:.1f}' for x in p['polab'])} s "
              f"(rollout {', '.join(f'{x:.1f}' for x in p['rollout'])}), TRL {', '.join(f'{x:.1f}' for x in p['trl'])} s, "
              f"tokens/s sampler {', '.join(f'{x:.0f}' for x in p['tps_polab'])} generate {', '.join(f'{x:.0f}' for x in p['tps_generate'])}; "
              f"{time.perf_counter() - t0:.0f} s wall, load1 at start {l0:.1f}", flush=True)
    med = {}
    for pol, runs in res.items():
        parts = []
        med[pol] = {}
        for k in ("polab", "rollout", "train", "trl", "tps_polab", "tps_generate"):
            xs = [x for run in runs for x in run[k]]
            if not xs:
                continue
            med[pol][k] = statistics.median(xs)
            parts.append(f"{k} {med[pol][k]:.1f} [{min(xs):.1f}-{max(xs):.1f}]")
        print(f"{pol:8s} (median [range] over {len(runs)} runs): " + ", ".join(parts))
    ratios = [statistics.median(a["polab"]) / statistics.median(b["polab"]) for a, b in zip(res["PASSIVE"], res["default"])]
    trl = f"; TRL step PASSIVE/default {med['PASSIVE']['trl'] / med['default']['trl']:.2f}" if "trl" in med["PASSIVE"] else ""
    print(f"per-repeat PASSIVE/default polab step: {', '.join(f'{x:.2f}' for x in ratios)}{trl}; uptime {os.getloadavg()}")
    print(f"median polab step PASSIVE / default (background load {args.background_load}): {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
