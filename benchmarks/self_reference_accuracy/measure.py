"""Label accuracy of the plain AI judge (ai-feedback) vs self-reference feedback against the arithmetic task's reward.

Fixed pairs: for each 1- or 2-digit addition, the correct sum and a wrong one (sum + d, d uniform in +-1..10, >= 0),
listed in a random order. The judge is SmolLM2-135M-Instruct (the trainer's frozen reference). A label is right when
the debiased P(A > B) > 1/2 exactly when A is the correct answer (a tie counts as wrong).
usage: python measure.py SEEDS N_PAIRS VARIANT[,VARIANT...]
"""
import os

# results go here; the two JSON files beside this script are the results reported in the session-3 closing note
OUT = os.environ.get("SR_OUT", os.path.dirname(os.path.abspath(__file__)))

import json, sys, time
import numpy as np
import torch
from polab.scaled.tasks.arithmetic import ArithmeticTask
from polab.scaled.trainers.preference import PreferenceTrainer, config_from_preset

torch.set_num_threads(1)
seeds = [int(s) for s in sys.argv[1].split(",")]
n = int(sys.argv[2])
VARIANTS = {
    "ai-feedback": ("ai-feedback", {}),
    "self-ref": ("self-reference", {}),  # defaults: 1 own answer, 32-token critique, temperature 0.7
    "self-ref-nocrit": ("self-reference", {"critique_tokens": 0}),
    "self-ref-k3-nocrit": ("self-reference", {"critique_tokens": 0, "num_self_answers": 3}),
}
task = ArithmeticTask(digits=(1, 2))
out = {}
for seed in seeds:
    rng = np.random.default_rng(1000 + seed)
    items, texts = [], []
    for i in range(n):
        p = task.sample(task.distributions[i % 2], rng=rng)
        d = 0
        while d == 0 or p.answer + d < 0:
            d = int(rng.integers(-10, 11))
        pair = [str(p.answer), str(p.answer + d)]
        if rng.random() < 0.5:
            pair = pair[::-1]
        items.append(p)
        texts += pair
    prompts = [task.prompt(p) for p in items]
    rewards = torch.tensor([task.reward(t, items[i // 2]).total for i, t in enumerate(texts)])
    a_correct = rewards[0::2] > rewards[1::2]
    for name in sys.argv[3].split(","):
        labels, opts = VARIANTS[name]
        cfg = config_from_preset("cpu-demo", task="arithmetic", pair_labels=labels, samples_per_prompt=2, seed=seed,
                                 out=f"{OUT}/runs/{name}_{seed}", overwrite=True, tensorboard=False, progress=False,
                                 methods={labels: opts} if opts else None)
        tr = PreferenceTrainer(cfg)
        t0 = time.time()
        kw = dict(step=1, items=items) if labels == "self-reference" else {}
        j = tr.pair_labeller.judge_pairs(tr, prompts, texts, rewards, **kw)
        right = ((j["prob_a"] > 0.5) & a_correct) | ((j["prob_a"] < 0.5) & ~a_correct)
        rec = dict(right=right.int().tolist(), accuracy=float(right.double().mean()), consistency=float(j["consistent"].double().mean()),
                   position_bias=float(j["position_bias"].mean()), self_answer_reward=j["metrics"].get("judge_self_answer_reward"),
                   seconds=time.time() - t0)
        if labels == "self-reference":
            rec["example_critique_prompt"] = j["critique_prompts"][0]
            rec["example_critique"] = j["critiques"][0]
        out[f"{name}/{seed}"] = rec
        print(name, seed, {k: v for k, v in rec.items() if k not in ("right",) and not k.startswith("example")}, flush=True)
        tr.logger.close()
        json.dump(out, open(f"{OUT}/result_{sys.argv[1].replace(',', '-')}_{n}_{sys.argv[3].replace(',', '-')}.json", "w"), indent=1)
json.dump(out, open(f"{OUT}/result_{sys.argv[1].replace(',', '-')}_{n}_{sys.argv[3].replace(',', '-')}.json", "w"), indent=1)
