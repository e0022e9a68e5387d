#!/usr/bin/env bash
# Metrics of the pre-refactor trainers (commit fb313ac), for "same numbers as before" checks.
# Set-up: git worktree add /tmp/oldtree fb313ac   (the last commit before the trainer refactor)
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OLD=${OLD_TREE:-/tmp/oldtree}; cd "$OLD"
PY=${PY:-$REPO/.venv/bin/python}
OUT=${OUT:-/tmp/polab-equivalence/old}
mkdir -p $OUT
export PYTHONPATH="$OLD" OMP_NUM_THREADS=1
for a in grpo dr_grpo rloo grpo_batch_std spo_chain ppo_gae pcpg; do
  $PY -m scaled.cli train grpo --preset tiny --steps 3 --advantage $a --out $OUT/grpo-adv-$a > $OUT/grpo-adv-$a.log 2>&1 || echo "FAIL adv $a"
done
for f in pf_ppo_best_worst pf_ppo_best_random ssb arpo; do
  $PY -m scaled.cli train grpo --preset tiny --steps 3 --sample-filter $f --out $OUT/grpo-filter-$f > $OUT/grpo-filter-$f.log 2>&1 || echo "FAIL filter $f"
done
$PY -m scaled.cli train grpo --preset tiny --steps 3 --curriculum uniform --out $OUT/grpo-uniform > $OUT/grpo-uniform.log 2>&1 || echo "FAIL uniform"
for s in on-policy-dpo offline-dpo on-policy-ipo on-policy-copg on-policy-opa-dpo on-policy-gepo on-policy-best-of-n offline-direct-advantage-po; do
  $PY -m scaled.cli train preference --preset tiny --steps 3 --scheme $s --out $OUT/pref-$s > $OUT/pref-$s.log 2>&1 || echo "FAIL scheme $s"
done
$PY -m scaled.cli train preference --preset tiny --steps 3 --pair-labels ai-feedback --out $OUT/pref-aifeedback > $OUT/pref-aifeedback.log 2>&1 || echo "FAIL aifeedback"
# the main job (SmolLM2, 12 steps)
$PY -m scaled.cli train grpo --preset cpu-demo --curriculum dump --out $OUT/main > $OUT/main.log 2>&1 || echo "FAIL main"
echo ALLDONE
