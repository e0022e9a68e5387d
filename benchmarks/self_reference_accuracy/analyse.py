"""Accuracy table, Clopper-Pearson intervals and exact McNemar tests of measure.py's results (self-reference vs plain judge)."""
import os

OUT = os.environ.get("SR_OUT", os.path.dirname(os.path.abspath(__file__)))
import glob, json, sys
from scipy.stats import binomtest
res = {}
for f in sorted(glob.glob(os.path.join(OUT, "result_*_64_*.json"))):
    res.update(json.load(open(f)))
variants = sorted({k.split("/")[0] for k in res})
by = {v: {k.split("/")[1]: r for k, r in res.items() if k.startswith(v + "/")} for v in variants}
for v in variants:
    seeds = sorted(by[v])
    right = sum(sum(by[v][s]["right"]) for s in seeds)
    n = sum(len(by[v][s]["right"]) for s in seeds)
    ci = binomtest(right, n).proportion_ci(0.95, method="exact")
    per = ", ".join(f"s{s}: {sum(by[v][s]['right'])}/{len(by[v][s]['right'])}" for s in seeds)
    cons = sum(by[v][s]["consistency"] for s in seeds) / len(seeds)
    sar = [by[v][s]["self_answer_reward"] for s in seeds]
    print(f"{v:20s} acc {right}/{n} = {right/n:.3f}  95% CP [{ci.low:.3f}, {ci.high:.3f}]  ({per})  consistency {cons:.3f}  "
          f"self-answer reward {sar}  sec {[round(by[v][s]['seconds']) for s in seeds]}")
base = "ai-feedback"
for v in variants:
    if v == base:
        continue
    common = sorted(set(by[v]) & set(by[base]))
    b = c = 0
    for s in common:
        for x, y in zip(by[v][s]["right"], by[base][s]["right"]):
            b += x and not y
            c += y and not x
    p = binomtest(b, b + c).pvalue if b + c else 1.0
    print(f"{v} vs {base} on seeds {common}: {v} right & {base} wrong {b}, reverse {c}, exact McNemar p = {p:.3g}")
