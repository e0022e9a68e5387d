"""polab's TD3+BC vs d3rlpy's TD3+BC on the same local dataset and machine: gradient steps per second (and returns).

::

    .venv/bin/python benchmarks/offline_td3bc_vs_d3rlpy.py --dataset hopper-medium --steps 2000
    .venv/bin/python benchmarks/offline_td3bc_vs_d3rlpy.py --dataset hopper-medium --steps 1000 --repeats 3

Exports the dataset to .npz (:meth:`polab.scaled.offline.datasets.OfflineDataset.export_npz`), trains polab's
TD3+BC (``polab train offline --method td3bc``, one thread) and d3rlpy's ``TD3PlusBC`` (2.8.1, in
``.venv-peers`` through ``benchmarks/d3rlpy_td3bc_peer.py`` in a subprocess, one thread) for the same number of
gradient steps with the same settings (batch 256, 256x256 networks, lr 3e-4, standardised states, alpha 2.5),
one after the other, and prints both rates; the last line is the ratio polab / d3rlpy. ``--repeats N`` runs the
pair N times, alternating which goes first, prints each pair's ratio with the load average (``uptime``'s three
figures) before and after each arm, and the median, minimum, maximum and geometric mean of the ratios; the last
line is then the median. polab's rate is the total gradient steps over the total training time (evaluation
excluded), as d3rlpy's is steps over ``fit`` seconds. Both evaluate their final
policy over ``--episodes`` episodes (seeds differ between the two: d3rlpy's seeds 2,000,000+i, polab's
10**6 + 1000*step + i), so the returns are a sanity check, not a comparison at this budget.
On a shared machine the rate of each depends on the load while it ran: run it on a quiet machine for a clean ratio.

Measured (2026-12-04, shared 2-core machine at load average ~19, one thread each, ``--dataset invertedpendulum-medium
--steps 1000 --episodes 5``, 8.7 min wall): polab 7.7 grad steps/s, d3rlpy 2.8.1 4.5 grad steps/s, ratio 1.71;
final returns 54.6 (polab) and 38.0 (d3rlpy) after 1,000 steps. ``--dataset hopper-medium --steps 2000`` at load
average ~8 (6.1 min wall): polab 16.1 grad steps/s, d3rlpy 11.4, ratio 1.41; final returns 52.5 (polab) and 118.5
(d3rlpy) after 2,000 steps (5 episodes, one seed each: a sanity check, not a comparison). Under such load the ratio
is indicative only.

With ``--repeats 3`` (2026-12-04, same shared machine, never quiet; load average = ``uptime``'s 1/5/15-minute
figures while each arm ran):

- ``--dataset hopper-medium --steps 500 --repeats 3`` at load 17-22 (20 min wall): ratios 4.37, 1.62, 0.73
  (polab 8.3 / 4.3 / 6.1, d3rlpy 1.9 / 2.6 / 8.3 grad steps/s): at that load each arm's rate is set by what the
  other tenants do while it runs, and the ratio means nothing.
- the same at load 3.3-4.4 (under 2 min wall): ratios 1.64, 1.60, 1.52 (median 1.60; polab 135-145, d3rlpy 88-91 grad
  steps/s).
- ``--steps 2000 --repeats 3`` at load 2.3-6.4 (4.4 min wall): ratios 1.81, 1.51, 1.47 (median 1.51; polab 140.5 /
  51.9 / 51.7, d3rlpy 77.6 / 34.4 / 35.3 grad steps/s; the drop after the first pair is the load rising from 2.3
  to ~6).

So polab's TD3+BC step is about 1.5-1.6x d3rlpy 2.8.1's on one CPU thread whenever the load is moderate.
Confirmed on a quiet machine (2026-12-04, another CPU, load 0.8-1.0 = the benchmark itself; ``--dataset
invertedpendulum-medium --steps 2000 --repeats 3``, 110 s): ratios 1.589, 1.531, 1.616 (median 1.589; polab 164-167,
d3rlpy 101-109 grad steps/s). d3rlpy's final return is reported as nan there: the peers' environment has no MuJoCo, and
the benchmark measures speed only.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".venv-peers" / "bin" / "python"


def _load() -> str:
    """The 1/5/15-minute load averages (what ``uptime`` prints), to state with every rate."""
    import os

    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _polab_once(a, tmp: Path, rep: int) -> tuple[float, float]:
    """One polab TD3+BC run; returns (gradient steps per second over the training steps only, final return)."""
    from polab.scaled.trainers.offline import main as train_main

    out = tmp / f"polab{rep}"
    n = a.steps // 100
    rc = train_main(["--dataset", a.dataset, "--method", "td3bc", "--steps", str(n), "--grad-steps-per-step", "100",
                     "--eval-every", str(n), "--eval-episodes", str(a.episodes), "--seed", str(a.seed),
                     "--torch-threads", "1", "--no-progress", "--out", str(out), "--checkpoint-every", str(n)])
    if rc != 0:
        raise SystemExit(f"polab train offline failed (exit {rc})")
    with open(out / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("grad_steps_per_s")]
    # total steps / total training time (the harmonic mean of the per-step rates), as d3rlpy's steps / fit seconds
    rate = a.steps / sum(100.0 / float(r["grad_steps_per_s"]) for r in rows)
    return rate, float(rows[-1]["eval_return"])


def _d3rlpy_once(a, npz: Path, env_id: str) -> dict:
    cmd = [str(PEERS), str(ROOT / "benchmarks" / "d3rlpy_td3bc_peer.py"), "--npz", str(npz), "--steps", str(a.steps),
           "--episodes", str(a.episodes), "--seed", str(a.seed), "--env", env_id]
    res = subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                                                                   "PATH": "/usr/bin:/bin"})
    if res.returncode != 0:
        raise SystemExit(f"d3rlpy peer failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="hopper-medium")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1,
                   help="run the pair this many times, alternating which goes first; one ratio per pair")
    a = p.parse_args(argv)
    if a.steps < 100 or a.steps % 100:
        raise SystemExit("--steps must be a positive multiple of 100")
    if a.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if not PEERS.exists():
        raise SystemExit(f"{PEERS} is missing: d3rlpy lives in .venv-peers (make it with torch + d3rlpy there).")
    from polab.scaled.offline.datasets import load_offline_dataset

    try:
        ds = load_offline_dataset(a.dataset)
    except FileNotFoundError:  # a fresh machine: make it first (behaviour TD3 + collection; minutes on a CPU)
        from polab.scaled.offline.datasets import make_dataset

        print(f"dataset {a.dataset} is not on disk: making it (polab data make {a.dataset}) ...")
        make_dataset(a.dataset)
        ds = load_offline_dataset(a.dataset)
    print(f"dataset {ds.dataset_id}: {len(ds)} transitions, {a.steps} gradient steps each, one thread, "
          f"{a.repeats} repeat(s)")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz = ds.export_npz(tmp / "data.npz")
        for rep in range(a.repeats):
            res = {}
            for arm in (("polab", "d3rlpy") if rep % 2 == 0 else ("d3rlpy", "polab")):
                before = _load()
                t0 = time.perf_counter()
                res[arm] = _polab_once(a, tmp, rep) if arm == "polab" else _d3rlpy_once(a, npz, ds.env_id)
                res[arm + "_wall"], res[arm + "_load"] = time.perf_counter() - t0, f"{before} -> {_load()}"
            polab_rate, polab_ret = res["polab"]
            peer = res["d3rlpy"]
            d3_ret = np.mean(peer["returns"]) if "returns" in peer else float("nan")
            ratios.append(polab_rate / peer["grad_steps_per_s"])
            print(f"[{rep + 1}/{a.repeats}] polab  TD3+BC: {polab_rate:.1f} grad steps/s (run wall {res['polab_wall']:.0f} s, "
                  f"load {res['polab_load']}), final return {polab_ret:.1f}")
            print(f"[{rep + 1}/{a.repeats}] d3rlpy TD3+BC {peer['d3rlpy']}: {peer['grad_steps_per_s']:.1f} grad steps/s "
                  f"(fit {peer['fit_s']:.1f} s, load {res['d3rlpy_load']}), final return {d3_ret:.1f}"
                  f"{' (' + peer['eval_error'] + ')' if 'eval_error' in peer else ''}")
            print(f"[{rep + 1}/{a.repeats}] ratio {ratios[-1]:.3f}", flush=True)
    r = np.asarray(ratios)
    if len(r) > 1:
        print(f"ratios {', '.join(f'{x:.3f}' for x in r)}: median {np.median(r):.3f}, min {r.min():.3f}, max {r.max():.3f}, "
              f"geometric mean {np.exp(np.log(r).mean()):.3f}")
    print(f"ratio polab/d3rlpy gradient steps per second: {np.median(r):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
