"""Where one polab GRPO step's time goes: rollout prefill and decode, training forward and backward, optimizer, casts.

The workload is ``benchmarks/grpo_step_vs_trl.py``'s (SmolLM2-135M-Instruct, 8 Knights-and-Knaves prompts x 4
samples, 48 new tokens, micro-batches of 8 responses, fused AdamW), for each ``--mode``: ``float32``,
``bfloat16`` (``--bf16-mode autocast``) and ``bfloat16-weights`` (``--bf16-mode weights``). After one warm-up step of each,
``--steps`` steps are timed, alternating between the modes, by wall-clock timers around each phase (forward hooks on the sampling model tell the
prompt pass, ``prefill``, from the one-token ``decode`` passes; hooks on the training log-probability module;
``Tensor.backward``; ``optimizer.step``; the weight-copy refresh), then one more step runs under
``torch.profiler`` for the share of the CPU time spent in dtype conversions and copies (``aten::copy_`` and
``aten::_to_copy``, self time) and in matrix products. Each phase's FLOPs are counted from the architecture
(:func:`polab.scaled.models.decoder_forward_flops`, as the benchmark does; backward = 2 x forward) and divided
by its time, next to the GEMM rate measured on this machine at the mode's precision ([2048 x 576] @ [576 x 1536],
SmolLM2's MLP shape), so each phase's distance from the hardware limit is visible.

``--compile`` also times the training forward under ``torch.compile(dynamic=True)`` (inductor, the default CPU
backend): the first compiled step (compilation included) and the following ones, against eager.

Run: ``python benchmarks/grpo_step_profile.py --mode bfloat16 bfloat16-weights`` (state ``uptime``: the machine's
load changes every figure; compare modes within one run).
"""

from __future__ import annotations

from polab.scaled.omp_env import apply_omp_wait_policy

apply_omp_wait_policy()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_step_vs_trl import build_polab, gemm_rate  # noqa: E402


class PhaseTimer:
    """Wall-clock seconds per phase of one GRPO step (hooks and wrappers; removed by :meth:`close`)."""

    def __init__(self, tr):
        self.tr, self.t, self.n = tr, defaultdict(float), defaultdict(int)
        self._handles, self._restore = [], []
        self._start, self.in_rollout = {}, False
        model = tr.rollout_policy if tr.rollout_policy is not None else tr.policy

        def pre(mod, args, kwargs):
            if not self.in_rollout:  # the same module may also run the training forward
                return
            ids = kwargs.get("input_ids", args[0] if args else None)
            self._start["sample"] = ("prefill" if ids is not None and ids.shape[1] > 1 else "decode", time.perf_counter())

        def post(mod, args, kwargs, out):
            if "sample" not in self._start:
                return
            name, t0 = self._start.pop("sample")
            self.t[f"rollout {name}"] += time.perf_counter() - t0
            self.n[f"rollout {name}"] += 1

        self._handles.append(model.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(model.register_forward_hook(post, with_kwargs=True))
        self._wrap(tr.model, "forward", "training forward")
        self._wrap(tr.optimizer, "step", "optimizer step")
        if tr.bf16_weights:
            self._wrap(tr, "_sync_copy", "weight copy refresh")
            self._wrap(tr, "_accumulate_master_grads", "gradient cast+accumulate")
        self._wrap(torch.Tensor, "backward", "training backward")
        self._wrap(tr, "rollout", "rollout (total)")
        self._wrap(tr, "train_step", "step")

    def _wrap(self, obj, attr, name):
        orig = getattr(obj, attr)
        timer = self

        def wrapped(*a, **k):
            t0 = time.perf_counter()
            if name == "rollout (total)":
                timer.in_rollout = True
            try:
                return orig(*a, **k)
            finally:
                timer.in_rollout = False if name == "rollout (total)" else timer.in_rollout
                timer.t[name] += time.perf_counter() - t0
                timer.n[name] += 1

        own = isinstance(obj, type) or attr in vars(obj)  # a class attribute, or an instance attribute set before
        setattr(obj, attr, wrapped)
        self._restore.append((obj, attr, orig, own))

    def close(self):
        for h in self._handles:
            h.remove()
        for obj, attr, orig, own in reversed(self._restore):
            if own:
                setattr(obj, attr, orig)
            else:
                delattr(obj, attr)  # the instance attribute shadowed the class's method


def phase_flops(tr, batch, G):
    """FLOPs of prefill, decode, training forward (backward = 2 x forward) for one step's batch."""
    from polab.scaled.models import decoder_forward_flops as f

    cfg = tr.policy.config
    P = batch.prompt_length
    plens = [int(x) for x in batch.attention_mask[::G, :P].sum(1).tolist()]
    glens = [int(x) for x in batch.response_mask.sum(1).tolist()]
    T = batch.response_mask.shape[1]
    prefill = sum(f(cfg, tokens=p, context_start=0, logit_tokens=1) for p in plens)
    decode = sum(f(cfg, tokens=max(t - 1, 0), context_start=plens[i // G], logit_tokens=max(t - 1, 0)) for i, t in enumerate(glens))
    response = sum(f(cfg, tokens=T - 1, context_start=plens[i // G], logit_tokens=T - 1) for i in range(len(glens)))
    return {"rollout prefill": prefill, "rollout decode": decode, "training forward": prefill + response,
            "training backward": 2 * (prefill + response)}


CAST_OPS = ("aten::copy_", "aten::_to_copy")
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul", "aten::_scaled_dot_product_flash_attention_for_cpu",
            "mkldnn::_linear_pointwise", "aten::mkldnn_linear")


def profile_shares(tr) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tr.train_step()
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    casts = sum(r.self_cpu_time_total for r in rows if r.key in CAST_OPS)
    gemm = sum(r.self_cpu_time_total for r in rows if r.key in GEMM_OPS)
    top = sorted(rows, key=lambda r: -r.self_cpu_time_total)[:10]
    return {"casts": casts / total, "gemm": gemm / total, "top": [(r.key, r.self_cpu_time_total / total, r.count) for r in top]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", nargs="+", default=["bfloat16", "bfloat16-weights"], choices=("float32", "bfloat16", "bfloat16-weights"))
    ap.add_argument("--steps", type=int, default=2, help="timed steps per mode, after one warm-up")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--model", default=None, help="another model than the embedded SmolLM2 (tiny-llama: a quick check of the script)")
    ap.add_argument("--adamw", default="fused", choices=("default", "foreach", "fused"))
    ap.add_argument("--no-profiler", action="store_true", help="skip the torch.profiler step (cast and GEMM shares)")
    ap.add_argument("--compile", action="store_true", help="also time the training forward under torch.compile(dynamic=True)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    from polab.scaled.tasks.knights_knaves import generate_puzzle

    rng = np.random.default_rng(0)
    puzzles = [generate_puzzle(3, rng=rng) for _ in range(args.prompts)]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"{args.prompts} prompts x {args.samples} samples, {args.max_new_tokens} new tokens, micro-batch {args.micro_batch}; "
          f"load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainers, seen, rates = {}, {}, {}
        for mode in args.mode:  # every mode's trainer first, so the timed steps can alternate between them
            ns = argparse.Namespace(prompts=args.prompts, samples=args.samples, max_new_tokens=args.max_new_tokens,
                                    micro_batch=args.micro_batch, dtype=mode, adamw=args.adamw, model=args.model)
            tr = build_polab(puzzles, ns, f"{tmp}/{mode}")

            def capture(step, orig=tr.rollout, mode=mode):
                seen[mode] = orig(step)
                return seen[mode]

            tr.rollout = capture
            trainers[mode] = tr
            rates[mode] = gemm_rate(torch.float32 if mode == "float32" else torch.bfloat16)
        for tr in trainers.values():
            tr.train_step()  # warm-up
        per_step = {m: [] for m in trainers}
        for _ in range(args.steps):  # alternating: load drift hits every mode alike
            for mode, tr in trainers.items():
                pt = PhaseTimer(tr)
                l0 = os.getloadavg()[0]
                try:
                    tr.train_step()
                finally:
                    pt.close()
                per_step[mode].append((dict(pt.t), dict(pt.n), phase_flops(tr, seen[mode].batch, args.samples), l0))
        first = args.mode[0]
        floor_ratio = {}
        for mode, tr in trainers.items():
            rate, steps = rates[mode], per_step[mode]
            t = {k: statistics.median(s[0].get(k, 0.0) for s in steps) for k in steps[0][0]}
            fl = {k: statistics.median(s[2][k] for s in steps) for k in steps[0][2]}
            step = t["step"]
            vs = ""
            if mode != first:
                r = [a[0]["step"] / b[0]["step"] for a, b in zip(steps, per_step[first])]
                vs = f"; step / {first} step per repeat {', '.join(f'{x:.3f}' for x in r)} (median {statistics.median(r):.3f})"
            each = ", ".join(f"{x[0]['step']:.2f}" for x in steps)
            print(f"\n== {mode}: step {step:.2f} s (median of {args.steps}: {each}; load1 at starts "
                  f"{', '.join(f'{s[3]:.1f}' for s in steps)}), GEMM rate {rate:.1f} GFLOP/s, FLOP floor {sum(fl.values()) / rate / 1e9:.2f} s, "
                  f"step = {step / (sum(fl.values()) / rate / 1e9):.2f} x floor{vs}", flush=True)
            floor_ratio[mode] = step / (sum(fl.values()) / rate / 1e9)
            order = ["rollout prefill", "rollout decode", "training forward", "training backward", "gradient cast+accumulate",
                     "optimizer step", "weight copy refresh"]
            accounted = 0.0
            for k in order:
                if k not in t:
                    continue
                accounted += t[k]
                extra = ""
                if k in fl and t[k] > 0:
                    g = fl[k] / t[k] / 1e9
                    extra = f", {fl[k] / 1e12:.3f} TFLOP, {g:.1f} GFLOP/s = {100 * g / rate:.0f}% of the GEMM rate"
                print(f"  {k:26s} {t[k]:7.2f} s ({100 * t[k] / step:4.1f}%), {steps[0][1].get(k, 0)} calls{extra}")
            print(f"  {'other (sampling, reward, loss, bookkeeping)':26s} {step - accounted:7.2f} s ({100 * (step - accounted) / step:4.1f}%)")
            if not args.no_profiler:
                sh = profile_shares(tr)
                print(f"  torch.profiler (one step, self CPU time): dtype conversions and copies {100 * sh['casts']:.1f}%, matrix products "
                      f"{100 * sh['gemm']:.1f}%; top operators: " + "; ".join(f"{k} {100 * v:.1f}% ({c})" for k, v, c in sh["top"]), flush=True)
            if args.compile:
                eager = t["training forward"] + t["training backward"]
                tr.model = torch.compile(tr.logprob_module, dynamic=True)
                for i in range(3):
                    pt = PhaseTimer(tr)
                    try:
                        tr.train_step()
                    finally:
                        pt.close()
                    print(f"  torch.compile step {i + 1}: training forward+backward {pt.t['training forward'] + pt.t['training backward']:.2f} s "
                          f"(eager median {eager:.2f} s); step {pt.t['step']:.2f} s; load1 {os.getloadavg()[0]:.1f}", flush=True)
                tr.model = tr.logprob_module
    print(f"uptime load average {os.getloadavg()}")
    # the last line: the ratio (step time / FLOP floor at the measured GEMM rate), as every benchmark ends
    print("step / FLOP floor: " + ", ".join(f"{m} {r:.2f}" for m, r in floor_ratio.items()))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
