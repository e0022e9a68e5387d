"""Tokens per second of the agent rollout (SmolLM2 ``llm`` policy) vs transformers' ``generate`` on the same prompt batches.

The agent rollout (:func:`polab.scaled.agents.rollout.collect_episodes` with
:class:`polab.scaled.agents.policies.LLMPolicy`, the embedded SmolLM2-135M-Instruct loaded by
:func:`polab.scaled.models.load_model`) plays ``--tasks`` x ``--group-size`` episodes of ``--env``
for ``--turns`` turns; a thin wrapper records each turn's contexts. Then, on exactly those per-turn
prompt batches (the same chat template and left padding, :func:`polab.scaled.rollout.encode_prompts`):

- ``polab sampler``: :func:`polab.scaled.rollout.sample_rollouts` alone (the decoder the rollout uses);
- ``transformers generate``: ``model.generate(do_sample=True, temperature=1, top_k=0, top_p=1,
  max_new_tokens=--max-new-tokens)``, the same sampling distribution.

Tokens are generated reply tokens up to and including the first EOS (pad after it not counted).
The agent rollout's time is the whole ``collect_episodes`` call: sampling, the log-probability pass
over prompt + reply that the trainer's PPO ratio needs (``LLMPolicy.act`` recomputes it), reply
parsing and the environment steps. Timing: wall clock (``time.perf_counter``) and the process's CPU
time, ``--repeats`` rounds alternating the three measurements, one torch thread (``--threads``),
float32 on the CPU; the load average is printed first (on a shared machine the CPU-time figures are
the steadier ones). The last line is the ratio agent-rollout tokens/s over generate tokens/s, by wall clock and by CPU time.

Run: ``python benchmarks/agent_rollout_vs_generate.py`` (about 80 s of CPU; peak memory 1.4 GB).

Measured (commit 150ad6c, defaults: 8 episodes = 2 Sokoban levels x 4, 2 turns, 16 new tokens, 2 rounds; ``OMP_NUM_THREADS=1
nice -n 10 python benchmarks/agent_rollout_vs_generate.py``, 86 s wall, 79 s CPU, load average 3.4 on the shared 2-core
machine): agent rollout 12.6 tokens/s (12.8 per CPU second), polab sampler alone 22.4, transformers ``generate`` 24.0;
sampler / generate 0.935; agent rollout / generate 0.524 (wall), 0.532 (CPU). The two samplers drew the same 468 tokens (same
seed, same distribution). The rollout's gap is mostly ``LLMPolicy.act``'s second forward pass over prompt + reply for the
log-probabilities (the sampler's own logits could supply them). Under load 21 the same command gave 0.303 by wall clock and
0.500 by CPU time (1,297 s wall): compare the CPU figures on a busy machine.

After that second pass was removed (the reply's log-probabilities now come from the sampler's logits,
``sample_rollouts(logprob_temperature=...)``; 2026-12-04, quiet machine, load average 0.8-0.9, 50 s): agent rollout 29.5
tokens/s, polab sampler 28.1, ``generate`` 28.1 (the same 468 tokens); sampler / generate 1.003; **agent rollout /
generate 1.052** (wall), 1.054 (CPU). The agent rollout drew 485 tokens (its prompts differ after the first turn).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch


class _Recorder:
    """An agent policy that forwards to ``policy`` and records every turn's contexts."""

    def __init__(self, policy):
        self.policy, self.turns = policy, []

    def act(self, contexts, *, generator, greedy=False):
        self.turns.append(list(contexts))
        return self.policy.act(contexts, generator=generator, greedy=greedy)


def _tokens_in(resp: torch.Tensor, eos: int) -> int:
    """Reply tokens up to and including the first EOS, summed over rows ([rows, T] generated ids)."""
    is_eos = resp == eos
    after = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    return int((~after).sum())


def _clock():
    return time.perf_counter(), time.process_time()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="sokoban:size=6,boxes=1,render=compact", help="text environment spec (make_text_env)")
    parser.add_argument("--tasks", type=int, default=2, help="tasks (levels)")
    parser.add_argument("--group-size", type=int, default=4, help="episodes per task; batch = tasks x group size")
    parser.add_argument("--turns", type=int, default=2, help="turns per episode")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="reply budget")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timing rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model for polab.scaled.models.load_model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("tasks", "group_size", "turns", "max_new_tokens", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    from tqdm import tqdm

    from polab.scaled.agents.policies import LLMPolicy
    from polab.scaled.agents.rollout import collect_episodes
    from polab.scaled.envs.text_protocol import make_text_env, parse_action
    from polab.scaled.models import load_model
    from polab.scaled.rollout import encode_prompts, sample_rollouts

    torch.set_num_threads(args.threads)
    print("load average (1, 5, 15 min):", " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    loaded = load_model(args.model, seed=args.seed)
    model, tok = loaded.model.eval(), loaded.tokenizer
    policy = LLMPolicy(model, tok, parse_action=parse_action, max_new_tokens=args.max_new_tokens, temperature=1.0)
    n = args.tasks * args.group_size
    envs = [make_text_env(args.env) for _ in range(n)]
    seeds = list(range(args.seed, args.seed + args.tasks))
    totals = {k: [0, 0.0, 0.0] for k in ("agent rollout", "polab sampler", "transformers generate")}  # tokens, wall s, cpu s
    turn_batches = 0
    with torch.no_grad():
        for r in tqdm(range(args.repeats), desc="rounds"):
            rec = _Recorder(policy)
            gen = torch.Generator().manual_seed(args.seed + r)
            w0, c0 = _clock()
            batch = collect_episodes(envs, rec, seeds, group_size=args.group_size, max_turns=args.turns, generator=gen)
            w1, c1 = _clock()
            totals["agent rollout"][0] += sum(len(s.sample.extra["reply_ids"]) for s in batch.steps)
            totals["agent rollout"][1] += w1 - w0
            totals["agent rollout"][2] += c1 - c0
            turn_batches += len(rec.turns)
            for ctxs in rec.turns:
                prompts = [policy.prompt(c) for c in ctxs]
                w0, c0 = _clock()
                out = sample_rollouts(model, tok, prompts, samples_per_prompt=1, max_new_tokens=args.max_new_tokens,
                                      generator=torch.Generator().manual_seed(args.seed + r), temperature=1.0, system_prompt=LLMPolicy.SYSTEM)
                w1, c1 = _clock()
                totals["polab sampler"][0] += int(out.response_mask.sum())
                totals["polab sampler"][1] += w1 - w0
                totals["polab sampler"][2] += c1 - c0
                ids, att = encode_prompts(tok, prompts, system_prompt=LLMPolicy.SYSTEM)
                torch.manual_seed(args.seed + r)  # generate reads the global RNG
                w0, c0 = _clock()
                gen_ids = model.generate(input_ids=ids, attention_mask=att, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                         max_new_tokens=args.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                w1, c1 = _clock()
                totals["transformers generate"][0] += _tokens_in(gen_ids[:, ids.shape[1]:], tok.eos_token_id)
                totals["transformers generate"][1] += w1 - w0
                totals["transformers generate"][2] += c1 - c0
    for e in envs:
        e.close()
    print(f"{args.model}, float32, {args.threads} torch thread(s); env {args.env}; batch {n} episodes ({args.tasks} tasks x "
          f"{args.group_size}), {args.turns} turns, max_new_tokens {args.max_new_tokens}, {args.repeats} rounds, "
          f"{turn_batches} turn batches")
    print(f"{'':24s} {'tokens':>7s} {'wall s':>8s} {'cpu s':>8s} {'tokens/s':>9s} {'tokens/cpu-s':>12s}")
    rate = {}
    for k, (t, w, c) in totals.items():
        rate[k] = t / w
        print(f"{k:24s} {t:7d} {w:8.2f} {c:8.2f} {t / w:9.1f} {t / c:12.1f}")
    cpu_ratio = (totals["agent rollout"][0] / totals["agent rollout"][2]) / (totals["transformers generate"][0] / totals["transformers generate"][2])
    print(f"polab sampler / generate tokens/s: {rate['polab sampler'] / rate['transformers generate']:.3f}")
    print(f"ratio agent rollout / transformers generate, tokens per second: {rate['agent rollout'] / rate['transformers generate']:.3f} "
          f"(wall), {cpu_ratio:.3f} (per CPU second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
