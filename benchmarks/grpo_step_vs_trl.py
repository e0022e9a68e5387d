"""One GRPO step in polab and in TRL's GRPOTrainer, timed side by side in one process.

Workload (the foundation issue's): the embedded SmolLM2-135M-Instruct in
float32 on the CPU, 8 Knights-and-Knaves prompts x 4 samples, at most 48 new
tokens, temperature 1, no top-k/top-p, no KL term (TRL's default beta = 0),
one optimisation pass per batch, AdamW. Memory: one full-batch step takes
about 9 GB in polab and 17 GB in TRL (peak RSS, measured), too much for both
in one 24 GB process, so by default both accumulate gradients over
micro-batches of ``--micro-batch`` responses (8: two groups): polab through
``micro_batch_size``, TRL through its own mechanism
(``per_device_train_batch_size`` = 8, ``gradient_accumulation_steps`` =
``steps_per_generation`` = 4: it generates all 32 completions at once, then
runs 4 ``training_step`` calls). ``--micro-batch 32`` gives the full-batch
step where there is memory for it. Both frameworks get their own copy of
the same weights, the same 8 puzzles every step and the same reward function
(``polab.scaled.tasks.knights_knaves.kk_reward``).

A "step" is everything from prompts to the optimizer update: sampling,
reward, advantages, loss, backward, ``optimizer.step``. For TRL this is
``Trainer.training_step`` (which runs ``_prepare_inputs``, i.e. generation and
scoring, then ``compute_loss`` and backward) followed by
``optimizer.step()``/``zero_grad()``; the Trainer's outer loop (logging,
callbacks) is not timed, which favours TRL slightly.

Precision: ``--dtype`` lists polab's precisions (``bfloat16-weights``: ``--bf16-mode weights``, a bfloat16
weight copy runs the training forward/backward with float32 master weights, no autocast casts), each its own trainer measured
in every pair (default both: ``float32``, and ``bfloat16`` = float32 master
weights and AdamW, training forward under autocast, rollouts from a bfloat16
copy; ``tests/scaled/test_bf16.py`` bounds its difference from float32);
``--trl-dtype`` sets TRL's (``float32``, the configuration the issue's target
refers to; ``bfloat16`` sets TRL's ``bf16=True``). polab uses the fused AdamW
kernel (``--adamw``).

Each pair runs polab (each precision) then TRL, after one warm-up step each;
each step records the 1-minute load average when it started (other
processes on the machine slow both frameworks; compare ratios within a pair).
Then the rollout alone: polab's sampler and transformers' ``generate`` on the
same batch and model copy, alternating, in tokens/s. The summary prints, per
polab precision, the step's FLOPs (counted from the architecture by
:func:`polab.scaled.models.decoder_forward_flops`: rollout prefill and
decode, training forward and backward), the achieved GFLOP/s, the GEMM rate
measured on this machine at that precision with torch's threads, the FLOP
floor (FLOPs / that rate) and the step's multiple of it, and the peak memory
of one step of each framework (the largest resident set size during the
step minus the size at its start, sampled every 5 ms). The last line is the
median of the per-pair ratios polab/TRL for the faster polab precision.

OpenMP: the benchmark sets ``OMP_WAIT_POLICY=PASSIVE`` before importing torch unless the environment
sets it, as the ``polab`` command does (:mod:`polab.scaled.omp_env`); ``OMP_WAIT_POLICY= python
benchmarks/grpo_step_vs_trl.py`` measures with the OpenMP runtime's default (spin, then sleep), and
``benchmarks/omp_wait_policy.py`` runs the two side by side.

``--background-load N`` starts N busy processes first (each ``python -c
"while True: pass"``, niceness 0: one core's worth of runnable load each,
never sleeping), to measure both frameworks on a loaded machine; they are
killed when the benchmark ends. ``--profile`` adds torch.profiler's top
operators of one polab step.

Memory: with both precisions the process holds three trainers (two polab, one TRL); at the default sizes
it had reached 6.4 GB resident (single-threaded, still in the warm-up steps) when the kernel's OOM killer
ended it on a shared 24 GB machine whose other processes held most of the rest. ``--dtype bfloat16``
alone holds one polab trainer fewer.

``--compile`` runs polab with ``--compile`` (torch.compile of the training log-probability module): the
steady-state ratio, with the compilation (one warm-up step, printed) paid once per run.

Measured loaded vs quiet (2026-12-04, AMX machine, ``--pairs 2 --dtype bfloat16-weights --prompts 4 --samples 4
--max-new-tokens 24 --rollout-reps 2`` with ``--background-load 0`` then ``2``; load1 about 1.3 then 3.2-3.6): polab step
7.2-7.3 s -> 10.4-13.0 s, TRL 31.1-33.6 s -> 52.5-56.2 s (ratios 0.226 -> 0.214); sampler / ``generate`` tokens/s 1.18 ->
0.99. The sampler degrades like ``generate`` and polab's step no more than TRL's.

Run: ``make bench`` or ``python benchmarks/grpo_step_vs_trl.py`` (3 pairs; expected under 10 minutes
on 2 quiet cores, not yet timed on one); loaded: ``--background-load 2``.
"""

from __future__ import annotations

from polab.scaled.omp_env import apply_omp_wait_policy

apply_omp_wait_policy()  # OMP_WAIT_POLICY=PASSIVE unless set (OMP_WAIT_POLICY= for the runtime's default): before torch loads OpenMP

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from background_load import start_background_load  # noqa: E402  (benchmarks/ is the script's directory)


class FixedPuzzles:
    """A one-distribution task that serves the same puzzles in a fixed cycle (for equal work in both frameworks)."""

    def __init__(self, puzzles):
        from polab.scaled.tasks.knights_knaves import format_prompt, kk_reward

        self.puzzles = list(puzzles)
        self._i = 0
        self._format_prompt, self._reward = format_prompt, kk_reward

    @property
    def distributions(self):
        return ["kk_bench"]

    def sample(self, source, *, rng):
        p = self.puzzles[self._i % len(self.puzzles)]
        self._i += 1
        return p

    def prompt(self, puzzle):
        return self._format_prompt(puzzle)

    def reward(self, text, puzzle):
        return self._reward(text, puzzle)


def build_polab(puzzles, args, out):
    from polab.scaled.trainers.grpo import GRPOTrainer, config_from_preset

    cfg = config_from_preset(
        "cpu-demo", model=getattr(args, "model", None), task="kk", levels=(3,), prompts_per_step=args.prompts, samples_per_prompt=args.samples,
        max_new_tokens=args.max_new_tokens, lr=1e-6, steps=10**6, out=str(out), tensorboard=False, progress=False,
        checkpoint_every=10**6, temperature=1.0, top_p=1.0, kl_coef=0.0, micro_batch_size=args.micro_batch,
        dtype=args.dtype.removesuffix("-weights"), bf16_mode="weights" if args.dtype.endswith("-weights") else "autocast", adamw_impl=args.adamw,
        compile=getattr(args, "compile", False),
    )
    return GRPOTrainer(cfg, task=FixedPuzzles(puzzles))


def build_trl(puzzles, args, out):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from polab.scaled.models import load_model
    from polab.scaled.tasks.knights_knaves import format_prompt, kk_reward

    loaded = load_model("smollm2-135m-instruct")
    by_prompt = {format_prompt(p): p for p in puzzles}

    def reward(prompts, completions, **kw):
        out = []
        for pr, c in zip(prompts, completions):
            user = pr[-1]["content"] if isinstance(pr, list) else pr
            text = c[0]["content"] if isinstance(c, list) else c
            out.append(kk_reward(text, by_prompt[user]).total)
        return out

    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": k}]} for k in by_prompt])
    accum = args.prompts * args.samples // args.micro_batch
    cfg = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=args.micro_batch, num_generations=args.samples,
        gradient_accumulation_steps=accum, steps_per_generation=accum, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, learning_rate=1e-6, max_steps=10**6, report_to="none", logging_steps=10**6, save_strategy="no",
        use_cpu=True, bf16=args.trl_dtype == "bfloat16", fp16=False, dataloader_num_workers=0, seed=0,
    )
    tr = GRPOTrainer(model=loaded.model, reward_funcs=[reward], args=cfg, train_dataset=ds, processing_class=loaded.tokenizer)
    tr.create_optimizer()
    tr.model.train()
    loader = tr.get_train_dataloader()

    def batches():
        while True:
            yield from loader

    it = batches()
    # Trainer's inner loop sets this before each training_step (transformers 5.x); TRL's loss normaliser reads it.
    tr.current_gradient_accumulation_steps = accum

    def step():
        batch = next(it)  # the whole generation batch; TRL generates on the first call and serves slices after
        for _ in range(accum):
            tr.training_step(tr.model, batch, None)
        tr.optimizer.step()
        tr.optimizer.zero_grad(set_to_none=True)

    return step




class PeakRSS:
    """Largest resident set size of this process while the block runs, minus the size at its start (sampled every 5 ms)."""

    def __init__(self):
        import psutil

        self._proc = psutil.Process()

    def __enter__(self):
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.added_gb = (self.peak - self.start) / 2**30


def gemm_rate(dtype: torch.dtype, seconds: float = 1.0) -> float:
    """GFLOP/s of a [2048 x 576] @ [576 x 1536] product (SmolLM2-135M's MLP shape) with torch's current threads."""
    a, w = torch.randn(2048, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
    for _ in range(3):
        torch.nn.functional.linear(a, w)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.nn.functional.linear(a, w)
        n += 1
    return 2 * 2048 * 576 * 1536 * n / (time.perf_counter() - t0) / 1e9


def polab_step_flops(model_config, batch, G: int) -> tuple[float, float]:
    """(rollout, training) FLOPs of one polab step on ``batch``: prompt-shared prefill and decode; one prompt pass per
    group plus the response pass, forward and backward (3 x forward)."""
    from polab.scaled.models import decoder_forward_flops as f

    P = batch.prompt_length
    plens = [int(x) for x in batch.attention_mask[::G, :P].sum(1).tolist()]
    glens = [int(x) for x in batch.response_mask.sum(1).tolist()]
    T = batch.response_mask.shape[1]
    prefill = sum(f(model_config, tokens=p, context_start=0, logit_tokens=1) for p in plens)
    decode = sum(f(model_config, tokens=max(t - 1, 0), context_start=plens[i // G], logit_tokens=max(t - 1, 0)) for i, t in enumerate(glens))
    response = sum(f(model_config, tokens=T - 1, context_start=plens[i // G], logit_tokens=T - 1) for i in range(len(glens)))
    return prefill + decode, 3 * (prefill + response)


def load1() -> float:
    return os.getloadavg()[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="timed (polab, TRL) step pairs after one warm-up each")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--people", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=8, help="responses per forward/backward in both frameworks (a multiple of --samples)")
    ap.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=("float32", "bfloat16", "bfloat16-weights"),
                    help="polab's precisions (GRPOConfig.dtype), each measured in every pair; bfloat16 is --bf16-mode autocast, "
                         "bfloat16-weights --dtype bfloat16 --bf16-mode weights")
    ap.add_argument("--adamw", default="fused", choices=("default", "foreach", "fused"), help="polab's AdamW kernel (GRPOConfig.adamw_impl)")
    ap.add_argument("--trl-dtype", default="float32", choices=("float32", "bfloat16"), help="TRL's precision (bf16=True for bfloat16)")
    ap.add_argument("--rollout-reps", type=int, default=1, help="alternating (polab sampler, generate) rollouts on one batch")
    ap.add_argument("--background-load", type=int, default=0, metavar="N", help="start N busy processes (python -c 'while True: pass') first")
    ap.add_argument("--compile", action="store_true", help="polab's --compile (torch.compile of the training log-probability module); "
                    "the warm-up step, which compiles, is timed and printed, not counted in the ratio")
    ap.add_argument("--profile", action="store_true", help="torch.profiler's top operators of one polab step")
    args = ap.parse_args(argv)
    if args.micro_batch % args.samples or (args.prompts * args.samples) % args.micro_batch:
        ap.error("--micro-batch must be a multiple of --samples and divide --prompts x --samples")
    if args.background_load < 0:
        ap.error("--background-load must be >= 0")

    from polab.scaled.rollout import generate_rollouts, sample_rollouts
    from polab.scaled.tasks.knights_knaves import generate_puzzle

    start_background_load(args.background_load)
    torch.manual_seed(0)  # TRL's generate reads the global RNG; polab seeds its own generator per step
    rng = np.random.default_rng(0)
    puzzles = [generate_puzzle(args.people, rng=rng) for _ in range(args.prompts)]
    dtypes = list(dict.fromkeys(args.dtype))
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bfloat16-weights": torch.bfloat16}
    with tempfile.TemporaryDirectory() as tmp:
        polabs = {dt: build_polab(puzzles, argparse.Namespace(**{**vars(args), "dtype": dt}), f"{tmp}/polab-{dt}") for dt in dtypes}
        trl_step = build_trl(puzzles, args, f"{tmp}/trl")
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()} (cores available {len(os.sched_getaffinity(0))}), "
              f"{args.prompts} prompts x {args.samples} samples, {args.max_new_tokens} new tokens, micro-batch {args.micro_batch}; "
              f"polab {' and '.join(dtypes)} (AdamW {args.adamw}), TRL {args.trl_dtype}; background load {args.background_load} busy processes; "
              f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset (runtime default)')}; load1 {load1():.2f}", flush=True)
        rates = {dt: gemm_rate(torch_dtype[dt]) for dt in dtypes}
        print("measured GEMM rate ([2048x576]@[576x1536], torch's threads): " + ", ".join(f"{dt} {r:.1f} GFLOP/s" for dt, r in rates.items())
              + f" (load1 {load1():.2f})", flush=True)
        seen = {}
        for dt, tr in polabs.items():
            t0 = time.perf_counter()
            tr.train_step()
            if args.compile:  # the warm-up step holds the compilation
                print(f"polab {dt} warm-up step with --compile: {time.perf_counter() - t0:.1f} s", flush=True)

            def capture(step, dt=dt, rollout=tr.rollout):
                seen[dt] = rollout(step)
                return seen[dt]

            tr.rollout = capture
        trl_step()
        rows = {dt: [] for dt in dtypes}
        for i in range(args.pairs):
            parts = []
            for dt, tr in polabs.items():
                l0 = load1()
                with PeakRSS() as mp:
                    t0 = time.perf_counter()
                    res = tr.train_step()
                    t1 = time.perf_counter()
                fr, ft = polab_step_flops(tr.policy.config, seen[dt].batch, args.samples)
                rows[dt].append(dict(polab=t1 - t0, rollout=res.metrics["time_rollout_s"], train=res.metrics["time_train_s"], fr=fr, ft=ft,
                                     mem=mp.added_gb, load=l0, length=res.metrics["response_length"]))
                parts.append(f"polab {dt} {t1 - t0:6.2f} s (rollout {res.metrics['time_rollout_s']:.2f}, train {res.metrics['time_train_s']:.2f}, "
                             f"mean response {res.metrics['response_length']:.1f} tokens, +{mp.added_gb:.2f} GB, load1 {l0:.2f})")
            l0 = load1()
            with PeakRSS() as mt:
                t2 = time.perf_counter()
                trl_step()
                t3 = time.perf_counter()
            for dt in dtypes:
                rows[dt][-1].update(trl=t3 - t2, mem_t=mt.added_gb, load_t=l0, ratio=rows[dt][-1]["polab"] / (t3 - t2))
            print(f"pair {i + 1}: " + " | ".join(parts) + f" | TRL {t3 - t2:6.2f} s (+{mt.added_gb:.2f} GB, load1 {l0:.2f}) | ratios "
                  + ", ".join(f"{dt} {rows[dt][-1]['ratio']:.3f}" for dt in dtypes), flush=True)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                polabs[dtypes[0]].train_step()
            print(f"profile of one polab {dtypes[0]} step:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)

        # the rollout alone: polab's sampler vs transformers' generate on the same prompts and model copy
        tps = {}
        for dt, tr in polabs.items():
            prompts = seen[dt].prompts
            model = tr.sampling_model()
            kw = dict(samples_per_prompt=args.samples, max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0)
            for r in range(args.rollout_reps):
                for eng in ("polab", "generate"):
                    l0, t0 = load1(), time.perf_counter()
                    if eng == "polab":
                        b = sample_rollouts(model, tr.tokenizer, prompts, generator=torch.Generator().manual_seed(r), **kw)
                    else:
                        torch.manual_seed(r)
                        b = generate_rollouts(model, tr.tokenizer, prompts, **kw)
                    dt_s = time.perf_counter() - t0
                    tps.setdefault((dt, eng), []).append(float(b.response_mask.sum()) / dt_s)
                    print(f"rollout {r + 1} {dt} {eng:8s}: {dt_s:6.2f} s, {tps[(dt, eng)][-1]:7.1f} tokens/s (load1 {l0:.2f})", flush=True)
    best, best_ratio = None, math.inf
    for dt in dtypes:
        R = rows[dt]
        med = {k: statistics.median(r[k] for r in R) for k in ("polab", "trl", "rollout", "train", "fr", "ft", "mem", "mem_t", "ratio")}
        floor = (med["fr"] + med["ft"]) / (rates[dt] * 1e9)
        ratios = [r["ratio"] for r in R]
        loads = [x for r in R for x in (r["load"], r["load_t"])]
        p_tps, g_tps = statistics.median(tps[(dt, "polab")]), statistics.median(tps[(dt, "generate")])
        print(f"polab {dt}: step {(med['fr'] + med['ft']) / 1e12:.2f} TFLOP (rollout {med['fr'] / 1e12:.2f}, training {med['ft'] / 1e12:.2f}); "
              f"achieved {(med['fr'] + med['ft']) / med['polab'] / 1e9:.1f} GFLOP/s (rollout {med['fr'] / med['rollout'] / 1e9:.1f}, "
              f"training {med['ft'] / med['train'] / 1e9:.1f}); FLOP floor at the measured {dt} GEMM rate {floor:.2f} s; "
              f"step = {med['polab'] / floor:.2f} x floor")
        print(f"polab {dt}: rollout tokens/s polab sampler {p_tps:.1f}, transformers generate {g_tps:.1f} (ratio {p_tps / g_tps:.2f}); "
              f"peak memory of one step (RSS increase, median) polab {med['mem']:.2f} GB, TRL {med['mem_t']:.2f} GB; "
              f"ratios per pair {', '.join(f'{r:.3f}' for r in ratios)} (spread {min(ratios):.3f}-{max(ratios):.3f}), load1 {min(loads):.2f}-{max(loads):.2f}")
        if med["ratio"] < best_ratio:
            best, best_ratio = dt, med["ratio"]
    print(f"median ratio polab/TRL (polab {best}, the faster of {', '.join(dtypes)}): {best_ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
