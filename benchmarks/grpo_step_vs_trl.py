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

Steps alternate polab, TRL, polab, TRL, ... after one warm-up step each; the
last line printed is the median of the per-pair ratios polab/TRL.

Run: ``make bench`` or ``python benchmarks/grpo_step_vs_trl.py --pairs 5``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch


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
        "cpu-demo", task="kk", levels=(3,), prompts_per_step=args.prompts, samples_per_prompt=args.samples,
        max_new_tokens=args.max_new_tokens, lr=1e-6, steps=10**6, out=str(out), tensorboard=False, progress=False,
        checkpoint_every=10**6, temperature=1.0, top_p=1.0, kl_coef=0.0, micro_batch_size=args.micro_batch,
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
        use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0, seed=0,
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5, help="timed (polab, TRL) step pairs after one warm-up each")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--people", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=8, help="responses per forward/backward in both frameworks (a multiple of --samples)")
    args = ap.parse_args(argv)
    if args.micro_batch % args.samples or (args.prompts * args.samples) % args.micro_batch:
        ap.error("--micro-batch must be a multiple of --samples and divide --prompts x --samples")

    from polab.scaled.tasks.knights_knaves import generate_puzzle

    torch.manual_seed(0)  # TRL's generate reads the global RNG; polab seeds its own generator per step
    rng = np.random.default_rng(0)
    puzzles = [generate_puzzle(args.people, rng=rng) for _ in range(args.prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        polab = build_polab(puzzles, args, f"{tmp}/polab")
        trl_step = build_trl(puzzles, args, f"{tmp}/trl")
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.prompts} prompts x {args.samples} samples, "
              f"{args.max_new_tokens} new tokens, micro-batch {args.micro_batch}, float32 CPU", flush=True)
        polab.train_step()
        trl_step()
        ratios = []
        for i in range(args.pairs):
            t0 = time.perf_counter()
            res = polab.train_step()
            t1 = time.perf_counter()
            trl_step()
            t2 = time.perf_counter()
            ratios.append((t1 - t0) / (t2 - t1))
            print(f"pair {i + 1}: polab {t1 - t0:6.2f} s (rollout {res.metrics['time_rollout_s']:.2f} s, "
                  f"mean response {res.metrics['response_length']:.1f} tokens)  TRL {t2 - t1:6.2f} s  ratio {ratios[-1]:.3f}", flush=True)
    print(f"median ratio polab/TRL: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
