r"""``polab run llm-methods``: each wired LLM method against its baseline (GRPO or DPO) at equal budget, on the embedded SmolLM2.

Families (``--family``; ``all`` runs every one, in the order below):

``rl`` (baseline GRPO; task: addition with 1- and 2-digit operands, reward 1 when the *last* integer of the
    response is the sum; the embedded model answers "6 + 8 = 14", which the first-integer parser of
    :class:`~polab.scaled.tasks.arithmetic.ArithmeticTask` scores wrong, so this family scores the last integer)
    - ``spo-chain`` and ``ppo-gae``: same seeds, same prompts per step, same group size, same steps (hence the
      same number of *policy rollout* samples; SPO-chain also samples ``mc_samples`` continuations per segment
      start, counted in the table's ``generated_samples`` column); metric: held-out accuracy after training;
    - ``t-ppo`` (windowed generation, ``--windowed.window-tokens``): trained until it has generated as many
      response tokens as the GRPO arm of the same seed; metrics: training wall-clock (seconds) and held-out accuracy;
    - ``ssb`` (GRPO + Selective Sample Buffer): the fraction of groups in the *update* batch whose advantages all
      vanish (fresh zero-variance groups minus those the buffer replaced), with and without it; and held-out accuracy.

``preference`` (baseline on-policy DPO; task ``length-target``: describe a topic in 3 words, reward
    :math:`\exp(-|w - 3|/4)`): ``on-policy-copg`` and ``on-policy-opa-dpo``, same samples per step and steps;
    metric: mean reward of ``eval_samples`` policy samples on held-out prompts after training.

``filters`` (baseline GRPO)
    - PF-PPO with a noisy reward model. Noise model (documented, not learned): the reward model's score of a
      response is its true correctness plus Gaussian noise, :math:`s = y + \sigma\varepsilon`,
      :math:`\varepsilon\sim N(0,1)` i.i.d. per response (reward shaper ``gaussian-noise-rm`` of this module,
      seeded per step). As the paper does, the strategy is chosen by :math:`R^2` between reward-model and true
      scores on the samples each strategy keeps (:func:`polab.estimators.sample_filters.rank_filtration_strategies`)
      on the GRPO arm's rollouts (all seeds pooled); arms: GRPO on the noisy scores vs the PF-PPO strategy with the
      higher :math:`R^2` (``pf-ppo-best-worst`` or ``pf-ppo-best-random``; ``--pf-ppo-arms both`` runs both) on the
      same noisy scores; metric: held-out *true* accuracy. With no success in the pooled rollouts :math:`R^2` is
      undefined and best-worst is run (recorded as the choice in ``summary.json``).
    - ARPO on a task with sparse success: 2-digit sums from a fixed pool of ``arpo_pool`` training problems (the
      buffer is per prompt, so prompts must recur, as ARPO's 128 training tasks do); arms GRPO vs GRPO + ``arpo``;
      metrics: the fraction of groups with a non-zero advantage in the update and held-out accuracy on the pool.

``ranking`` (Neural PG-Rank; task :class:`polab.scaled.tasks.retrieval.RetrievalTask`, a locally generated proxy
    with known graded relevance): the LLM scores each (query, document) by its next-token logit of " Yes" minus
    " No", the scores define a Plackett-Luce ranking policy; arm ``pg-rank`` trains it with the policy gradient and
    the leave-one-out baseline (:func:`polab.estimators.ranking_pg.pg_rank_loss`, ``rank_samples`` Gumbel-sort
    rankings per query, utility nDCG@k), arm ``listnet`` with a supervised listwise loss (softmax cross-entropy to
    the normalised gains :math:`(2^{rel}-1)/\sum`, ListNet, Cao et al. 2007); only the last ``rank_trainable_layers``
    transformer blocks train. Metric: nDCG@k of the score-sorted ranking on held-out queries (baseline ``listnet``).

``self-reference``: label accuracy of self-reference AI feedback vs plain judging, folded in from the stored
    measurement of ``benchmarks/self_reference_accuracy`` (128 labelled pairs per variant, 2 seeds; regenerate with
    ``python benchmarks/self_reference_accuracy/measure.py``): accuracy with Clopper-Pearson 95% intervals and the
    exact McNemar test on the paired labels. Not re-measured here (the measurement takes ~15 CPU-minutes).

Statistics: every arm runs the same ``seeds`` (same training prompts per step, same held-out set, same evaluation
sampler seed), so the comparison is paired by seed: the table gives the mean per-seed difference method - baseline
with a 95% Student-t interval over seeds (:func:`paired_difference`) and a verdict (:func:`verdict`): *better* /
*worse* when the interval excludes 0, otherwise *not resolved at this budget* (the interval is the statement).

Outputs in ``--out``: ``results.csv`` (one row per family, method, seed), ``table.csv`` and ``table.md`` (the
verdicts), ``figures/<family>.png``, ``summary.json``, ``metrics.csv`` (per arm and step) and ``arms/`` (each trained
arm's trainer run folder: ``config.json`` and its per-step log).

Measured (2026-12-04, ``cpu`` preset, 3 seeds, the embedded SmolLM2 on 2 CPU cores shared with other work, load average
2-20 and one out-of-memory kill; arms were run as one process per seed and family, e.g. ``--family rl --seed 1 --seeds 1``,
and combined with ``--merge``; preference with ``--pref-steps 2``): 23 CPU-minutes in all (rl 11.7, filters 4.8, preference
3.2, ranking 3.0; user time), so ``--family all`` in one process needs about 25 minutes on 2 idle cores. Every
difference is paired by seed, mean and 95% t interval over 3 seeds; none is resolved at this budget:

- rl (held-out accuracy, GRPO 0.370): SPO-chain -0.016 [-0.093, 0.062], PPO-GAE +0.036 [-0.120, 0.193], T-PPO -0.026
  [-0.188, 0.136], SSB -0.005 [-0.028, 0.017]; vanishing-advantage groups in the update: SSB 0.167 vs GRPO 0.333
  (-0.167 [-0.525, 0.192]); T-PPO wall-clock is confounded by the load (GRPO arms of seeds 0 and 2 ran during the
  memory crunch); the one seed whose GRPO and T-PPO arms ran back to back: 142 s vs 125 s;
- preference (held-out reward, DPO 0.217): CoPG -0.004 [-0.063, 0.056], OPA-DPO +0.012 [-0.018, 0.042];
- PF-PPO (sigma 0.5): R^2 best-random 0.604/0.616/0.392, best-worst 0.591/0.476/0.564, none 0.584/0.399/0.468
  (seeds 0/1/2, 32 rollouts each); best-worst vs GRPO on the noisy RM: 0.000 [-0.134, 0.134];
- ARPO (2-digit pool of 6): no buffered success was ever injected in 2 steps (identical arms);
- ranking (held-out nDCG@3, before training 0.43): ListNet 0.768, PG-Rank 0.760, -0.009 [-0.076, 0.059];
- self-reference (stored benchmark): 0.505 [0.432, 0.578] vs plain judge 0.453 [0.381, 0.526], McNemar p = 0.35.

Presets: ``cpu`` (default; 3 seeds, budgets in :data:`PRESETS`, about 25 minutes on 2 idle cores for
``--family all``, far longer when the cores are shared), ``smoke`` (the tiny random Llama, seconds; for tests), ``gpu`` (documented, not run here: the
budgets that would resolve differences of a few accuracy points; see :data:`PRESETS`).
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

from ..checkpoint import atomic_write_text
from ..config import parse_config, provenance
from ..logger import MetricLogger
from ..methods import REWARD_SHAPERS
from ..methods.reward_shapers import RewardShaper
from ..models import EMBEDDED_MODEL
from ..run_folder import check_config_values, prepare_run_folder
from ..tasks.arithmetic import AdditionProblem, ArithmeticReward, ArithmeticTask
from ..tasks.rewards import parse_last_number

__all__ = ["FAMILIES", "LLMMethodsConfig", "PRESETS", "LastNumberArithmetic", "GaussianNoiseRM", "mean_ci", "paired_difference",
           "verdict", "markdown_table", "run", "main"]

FAMILIES = ("rl", "preference", "filters", "ranking", "self-reference")
RL_METHODS = ("grpo", "spo-chain", "ppo-gae", "t-ppo", "ssb")
PREF_METHODS = ("on-policy-dpo", "on-policy-copg", "on-policy-opa-dpo")
FILTER_METHODS = ("grpo-noisy", "pf-ppo-best-worst", "pf-ppo-best-random", "grpo-sparse", "arpo")
RANK_METHODS = ("listnet", "pg-rank")


# -- statistics (pure; tested on synthetic inputs) ----------------------------------------------------------------


def mean_ci(x, *, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two ends of its Student-t interval over the finite entries of ``x`` (NaN ends with < 2 values)."""
    a = np.asarray([v for v in np.asarray(x, dtype=float).ravel() if math.isfinite(v)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    m = float(a.mean())
    if a.size < 2:
        return m, math.nan, math.nan
    h = float(stats.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return m, m - h, m + h


def paired_difference(method, baseline, *, level: float = 0.95) -> dict:
    """Per-seed differences ``method - baseline`` (paired by position): mean, Student-t interval, paired t-test p-value.

    Returns a dict with ``diff``, ``lo``, ``hi``, ``p`` (two-sided paired t test; NaN when undefined) and ``n``.
    """
    a, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"method and baseline need one value per seed each, paired; got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    m, lo, hi = mean_ci(d, level=level)
    p = math.nan
    if d.size >= 2:
        p = 1.0 if np.all(d == d[0]) and d[0] == 0 else float(stats.ttest_1samp(d, 0.0).pvalue)
    return {"diff": m, "lo": lo, "hi": hi, "p": p, "n": int(d.size)}


def verdict(diff: dict, *, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` when the interval excludes 0 (in the metric's good direction), else ``not resolved``."""
    lo, hi = diff["lo"], diff["hi"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not resolved (fewer than 2 seeds)"
    if lo > 0 or hi < 0:
        up = lo > 0
        return "better" if up == higher_is_better else "worse"
    return "not resolved at this budget"


def _fmt(x: float, digits: int = 3) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    """The verdict table as GitHub markdown (columns of :data:`TABLE_COLUMNS`)."""
    head = ["method", "metric", "baseline", "baseline value", "method value", "difference [95% CI]", "seeds", "budget", "verdict"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join([
            r["method"], r["metric"], r["baseline"], _fmt(r["baseline_mean"]), _fmt(r["method_mean"]),
            f"{_fmt(r['diff'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}]", str(r["seeds"]), r["budget"], r["verdict"]]) + " |")
    return "\n".join(out) + "\n"


TABLE_COLUMNS = ("family", "method", "metric", "baseline", "baseline_mean", "method_mean", "diff", "lo", "hi", "p", "seeds", "budget",
                 "verdict", "higher_is_better")


def compare(results: list[dict], family: str, method: str, baseline: str, metric: str, *, budget: str,
            higher_is_better: bool = True, label: str | None = None) -> dict:
    """One verdict row from per-seed result rows (paired by seed)."""
    def per_seed(m):
        return {r["seed"]: r[metric] for r in results if r["family"] == family and r["method"] == m and metric in r}

    a, b = per_seed(method), per_seed(baseline)
    seeds = sorted(set(a) & set(b))
    d = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return {"family": family, "method": label or method, "metric": metric, "baseline": baseline,
            "baseline_mean": mean_ci([b[s] for s in seeds])[0], "method_mean": mean_ci([a[s] for s in seeds])[0],
            **{k: d[k] for k in ("diff", "lo", "hi", "p")}, "seeds": len(seeds), "budget": budget,
            "verdict": verdict(d, higher_is_better=higher_is_better), "higher_is_better": higher_is_better}


# -- tasks and the noisy reward model ------------------------------------------------------------------------------


class LastNumberArithmetic(ArithmeticTask):
    """Addition scored on the response's **last** integer, with a held-out set and an optional training pool.

    ``holdout_per_level`` problems per digit count are drawn once (seed ``split_seed``) and never served by
    :meth:`sample`; with ``pool_size`` the training problems come from a fixed pool of that many per level
    (disjoint from the held-out set), so prompts recur (ARPO's per-prompt buffer needs that).
    """

    name = "arithmetic-last-number"

    def __init__(self, digits=(1, 2), *, holdout_per_level: int = 16, pool_size: int | None = None, split_seed: int = 2026):
        super().__init__(digits)
        rng = np.random.default_rng(split_seed)
        self.holdout: dict[str, list[AdditionProblem]] = {}
        self.pool: dict[str, list[AdditionProblem]] = {}
        for src in self.distributions:
            seen, held = set(), []
            while len(held) < holdout_per_level:
                p = super().sample(src, rng=rng)
                if (p.a, p.b) not in seen:
                    seen.add((p.a, p.b))
                    held.append(p)
            self.holdout[src] = held
            if pool_size:
                pool = []
                while len(pool) < pool_size:
                    p = super().sample(src, rng=rng)
                    if (p.a, p.b) not in seen:
                        seen.add((p.a, p.b))
                        pool.append(p)
                self.pool[src] = pool
        self._held = {(p.a, p.b) for v in self.holdout.values() for p in v}

    def sample(self, source: str, *, rng: np.random.Generator) -> AdditionProblem:
        if source in self.pool:
            return self.pool[source][int(rng.integers(len(self.pool[source])))]
        while True:
            p = super().sample(source, rng=rng)
            if (p.a, p.b) not in self._held:
                return p

    def eval_problems(self, which: str = "holdout") -> list[AdditionProblem]:
        src = self.holdout if which == "holdout" else self.pool
        return [p for s in self.distributions for p in src.get(s, [])]

    def reward(self, response: str, problem: AdditionProblem) -> ArithmeticReward:
        got = parse_last_number(response)
        correct = got is not None and got == problem.answer
        return ArithmeticReward(format_score=1.0 if got is not None else -1.0, answer_score=1.0 if correct else 0.0,
                                total=1.0 if correct else 0.0, correct=correct)


@dataclass
class GaussianNoiseRMOptions:
    sigma: float = field(default=0.5, metadata={"help": "standard deviation of the reward model's Gaussian error"})


@REWARD_SHAPERS.register("gaussian-noise-rm")
class GaussianNoiseRM(RewardShaper):
    r"""A documented noisy reward model: :math:`s = y + \sigma\varepsilon`, :math:`y` the task's reward, :math:`\varepsilon\sim N(0,1)`
    i.i.d. per response, drawn from a generator seeded by (seed, step) (``trainer.seed_for``). Keeps the last batch's
    (scores, true rewards) in ``last`` for the experiment's :math:`R^2`."""

    Options = GaussianNoiseRMOptions

    @classmethod
    def validate(cls, o, config) -> list[str]:
        return [] if math.isfinite(o.sigma) and o.sigma >= 0 else [f"gaussian-noise-rm.sigma must be a finite number >= 0, got {o.sigma}"]

    def shape(self, trainer, results) -> torch.Tensor:
        y = torch.tensor([r.total for r in results], dtype=torch.float64)
        gen = torch.Generator().manual_seed(trainer.seed_for(trainer.step + 1, "noisy-rm"))
        s = y + self.options.sigma * torch.randn(y.shape, generator=gen, dtype=torch.float64)
        self.last = (s.clone(), y.clone())
        return s.to(torch.float32)


# -- configuration -------------------------------------------------------------------------------------------------


@dataclass
class LLMMethodsConfig:
    """Options of ``polab run llm-methods`` (defaults: the ``cpu`` preset)."""

    family: str = field(default="all", metadata={"help": "which comparisons", "choices": ("all",) + FAMILIES})
    seeds: int = field(default=3, metadata={"help": "seeds per arm (paired across arms)"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    model: str = field(default=EMBEDDED_MODEL, metadata={"help": "policy model (smollm2-135m-instruct embedded; tiny-llama for smoke tests)"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    # GRPO-trainer arms (rl, filters)
    steps: int = field(default=2, metadata={"help": "rl/filters: training steps per arm"})
    prompts_per_step: int = field(default=4, metadata={"help": "rl/filters: prompts per step"})
    samples_per_prompt: int = field(default=4, metadata={"help": "rl/filters: group size"})
    max_new_tokens: int = field(default=12, metadata={"help": "rl/filters: response budget in tokens"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of training and evaluation"})
    lr: float = field(default=2e-5, metadata={"help": "rl/filters: policy learning rate"})
    levels: tuple[int, ...] = field(default=(1, 2), metadata={"help": "rl/PF-PPO: digits per operand, one distribution each"})
    holdout_per_level: int = field(default=16, metadata={"help": "held-out problems per digit count"})
    eval_samples: int = field(default=2, metadata={"help": "samples per held-out problem/prompt in the evaluation"})
    rl_methods: tuple[str, ...] = field(default=RL_METHODS, metadata={"help": "rl arms (grpo is the baseline)", "choices": RL_METHODS})
    spo_mc_samples: int = field(default=1, metadata={"help": "spo-chain: continuations per segment start"})
    tppo_window: int = field(default=6, metadata={"help": "t-ppo: window tokens per step"})
    ssb_capacity: int = field(default=64, metadata={"help": "ssb: buffered groups"})
    # preference
    pref_methods: tuple[str, ...] = field(default=PREF_METHODS, metadata={"help": "preference arms (on-policy-dpo is the baseline)",
                                                                         "choices": PREF_METHODS})
    pref_steps: int = field(default=3, metadata={"help": "preference: steps per arm"})
    pref_prompts_per_step: int = field(default=2, metadata={"help": "preference: prompts per step"})
    pref_samples_per_prompt: int = field(default=4, metadata={"help": "preference: responses per prompt"})
    pref_max_new_tokens: int = field(default=12, metadata={"help": "preference: response budget"})
    pref_lr: float = field(default=3e-5, metadata={"help": "preference: policy learning rate"})
    pref_eval_prompts: int = field(default=8, metadata={"help": "preference: held-out prompts"})
    # filters
    filter_methods: tuple[str, ...] = field(default=FILTER_METHODS, metadata={"help": "filters arms", "choices": FILTER_METHODS})
    noise_sigma: float = field(default=0.5, metadata={"help": "PF-PPO: reward-model noise standard deviation"})
    pf_ppo_arms: str = field(default="chosen", metadata={"help": "PF-PPO arms: the strategy with the highest R^2 on the GRPO arm's rollouts "
                                                                 "(the paper's selection) or both", "choices": ("chosen", "both")})
    arpo_level: int = field(default=2, metadata={"help": "ARPO: digits per operand of the sparse-success task"})
    arpo_pool: int = field(default=6, metadata={"help": "ARPO: training problems in the pool"})
    # ranking
    rank_steps: int = field(default=6, metadata={"help": "ranking: steps per arm"})
    rank_queries_per_step: int = field(default=4, metadata={"help": "ranking: queries per step"})
    rank_docs: int = field(default=6, metadata={"help": "ranking: candidate documents per query"})
    rank_k: int = field(default=3, metadata={"help": "ranking: nDCG cut-off k"})
    rank_samples: int = field(default=8, metadata={"help": "pg-rank: sampled rankings per query"})
    rank_eval_queries: int = field(default=16, metadata={"help": "ranking: held-out queries"})
    rank_lr: float = field(default=1e-4, metadata={"help": "ranking: learning rate"})
    rank_trainable_layers: int = field(default=2, metadata={"help": "ranking: last transformer blocks trained (the rest frozen)"})
    merge: tuple[str, ...] = field(default=(), metadata={"help": "no training: combine the results of earlier llm-methods run folders "
                                                                 "(e.g. one per seed, run side by side with --seed S --seeds 1) into one table"})
    out: str = field(default="runs/llm-methods", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})


#: ``cpu``: the default (about 23 CPU-minutes for --family all: ~25 minutes on 2 idle cores). ``smoke``: the tiny random model.
#: ``gpu``: documented, not run here - budgets sized to resolve differences of a few accuracy points (binomial SE of a
#: held-out accuracy over 512 problems x 4 samples is about 0.01; with 5 seeds the paired t interval is then a few points).
PRESETS: dict[str, dict] = {
    "cpu": {},
    "smoke": dict(model="tiny-llama", seeds=2, steps=1, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=4, holdout_per_level=2,
                  eval_samples=1, tppo_window=2, pref_steps=1, pref_prompts_per_step=2, pref_samples_per_prompt=2, pref_max_new_tokens=4,
                  pref_eval_prompts=2, arpo_pool=2, rank_steps=1, rank_queries_per_step=2, rank_docs=4, rank_k=2, rank_samples=3,
                  rank_eval_queries=2, progress=False),
    "gpu": dict(device="cuda", seeds=5, steps=200, prompts_per_step=64, samples_per_prompt=8, max_new_tokens=64, temperature=1.0, lr=1e-6,
                levels=(1, 2, 3), holdout_per_level=256, eval_samples=4, spo_mc_samples=4, tppo_window=16, pref_steps=200,
                pref_prompts_per_step=32, pref_samples_per_prompt=8, pref_max_new_tokens=32, pref_lr=5e-7, pref_eval_prompts=256,
                arpo_pool=128, rank_steps=500, rank_queries_per_step=32, rank_docs=20, rank_k=10, rank_samples=32, rank_eval_queries=1000,
                rank_lr=1e-5, rank_trainable_layers=30),
}


def _validate(cfg: LLMMethodsConfig) -> None:
    check_config_values(cfg, positive_ints=("seeds", "steps", "prompts_per_step", "max_new_tokens", "holdout_per_level", "eval_samples",
                                            "spo_mc_samples", "tppo_window", "ssb_capacity", "pref_steps", "pref_prompts_per_step",
                                            "pref_max_new_tokens", "pref_eval_prompts", "arpo_pool", "rank_steps", "rank_queries_per_step",
                                            "rank_k", "rank_samples", "rank_eval_queries", "rank_trainable_layers"),
                        nonneg_ints=("seed",), positive_floats=("temperature", "lr", "pref_lr", "rank_lr"),
                        nonneg_floats=("noise_sigma",), nonempty=("levels",), devices=("device",))
    if cfg.samples_per_prompt < 2 or cfg.pref_samples_per_prompt < 2:
        raise ValueError("--samples-per-prompt and --pref-samples-per-prompt must be >= 2 (groups and pairs need two responses)")
    if cfg.rank_docs < 3 or not 1 <= cfg.rank_k <= cfg.rank_docs:
        raise ValueError(f"--rank-docs must be >= 3 and --rank-k in [1, rank_docs]; got {cfg.rank_docs}, {cfg.rank_k}")
    if cfg.rank_samples < 2:
        raise ValueError("--rank-samples must be >= 2: the leave-one-out baseline needs two rankings per query")
    if "t-ppo" in cfg.rl_methods and "grpo" not in cfg.rl_methods:
        raise ValueError("--rl-methods with t-ppo must include grpo: t-ppo trains until it has generated GRPO's tokens of the same seed")
    if not 1 <= cfg.arpo_level <= 18 or any(not 1 <= d <= 18 for d in cfg.levels):
        raise ValueError("--levels and --arpo-level are digits per operand in [1, 18]")


def _families(cfg) -> tuple[str, ...]:
    return FAMILIES if cfg.family == "all" else (cfg.family,)


# -- evaluation ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def eval_accuracy(policy, tokenizer, task, problems, *, samples: int, max_new_tokens: int, temperature: float, seed: int, device) -> np.ndarray:
    """Per-problem mean correctness of ``samples`` sampled responses (a fixed generator: paired across arms)."""
    from ..rollout import sample_rollouts

    was = policy.training
    policy.eval()
    batch = sample_rollouts(policy, tokenizer, [task.prompt(p) for p in problems], samples_per_prompt=samples, max_new_tokens=max_new_tokens,
                            generator=torch.Generator(device=device).manual_seed(seed), temperature=temperature)
    policy.train(was)
    ok = [float(task.reward(t, problems[i // samples]).correct) for i, t in enumerate(batch.texts)]
    return np.asarray(ok).reshape(len(problems), samples).mean(axis=1)


def _record(out: Path, rows: list, row: dict) -> None:
    """Keep an arm's result and append it to ``results.jsonl`` at once (a run stopped early keeps its finished arms; ``--merge`` reads them)."""
    rows.append(row)
    with open(out / "results.jsonl", "a") as fh:
        fh.write(json.dumps(row, default=float) + "\n")


# -- GRPO-trainer arms ------------------------------------------------------------------------------------------------


def _grpo_trainer(cfg, out: Path, seed: int, task, **kw):
    from ..trainers.grpo import GRPOTrainer, config_from_preset

    base = dict(model=cfg.model, task="arithmetic", levels=tuple(task.digits), prompts_per_step=cfg.prompts_per_step,
                samples_per_prompt=cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, lr=cfg.lr,
                steps=max(cfg.steps, 1), checkpoint_every=10**9, tensorboard=False, progress=False, curriculum="uniform", seed=seed,
                out=str(out), torch_threads=1, device=cfg.device, overwrite=True)
    base.update(kw)
    return GRPOTrainer(config_from_preset(None, **base), task=task)


def run_grpo_arm(cfg, out: Path, seed: int, task, *, steps: int | None = None, token_budget: int | None = None, max_steps: int | None = None,
                 eval_set: str = "holdout", logger=None, tag: str = "", on_step=None, **kw) -> dict:
    """Train one GRPO-trainer arm (``steps`` steps, or until ``token_budget`` response tokens are generated), then evaluate.

    Returns the arm's summary: held-out accuracy, wall-clock of training, generated samples and tokens, vanishing-group rate.
    """
    tr = _grpo_trainer(cfg, out, seed, task, **kw)
    try:
        G, P = cfg.samples_per_prompt, cfg.prompts_per_step
        n_steps = zv = replaced = samples = tokens = nonzero = 0
        wall = 0.0
        limit = steps if steps is not None else cfg.steps
        while True:
            if token_budget is None and n_steps >= limit:
                break
            if token_budget is not None and (tokens >= token_budget or n_steps >= (max_steps or 10**9)):
                break
            t0 = time.perf_counter()
            res = tr.train_step()
            wall += time.perf_counter() - t0
            if tr.logger is not None:  # the arm's own run folder gets its per-step rows (train() is not what drives it)
                tr.logger.log(res.step, res.metrics)
            m = res.metrics
            n_steps += 1
            if "window_tokens_generated" in m:
                tokens += int(m["window_tokens_generated"])
                samples += int(m.get("rows_finished_now", 0))
            else:
                tokens += int(round(m["response_length"] * P * G))
                samples += P * G
            if "spo_segments" in m:  # SPO-chain's Monte Carlo continuations: (segments - 1) starts per row x mc_samples
                samples += int(round(max(m["spo_segments"] - 1.0, 0.0) * P * G * cfg.spo_mc_samples))
            step_zv = float(m.get("zero_variance_groups", 0.0))
            step_rep = float(m.get("replaced_rows", 0.0)) / G
            vanishing = max(step_zv - step_rep, 0.0) if kw.get("sample_filter") == "ssb" else step_zv
            zv += vanishing
            replaced += step_rep
            nonzero += P - vanishing
            if on_step is not None:
                on_step(tr, res)
            if logger is not None:
                logger.log(logger.row, {"arm": tag, "seed": seed, "arm_step": n_steps, "accuracy": m.get("accuracy", math.nan),
                                        "reward_mean": m.get("reward_mean", math.nan), "vanishing_groups": vanishing,
                                        "replaced_groups": step_rep, "time_step_s": m.get("time_step_s", math.nan), "tokens": tokens})
                logger.row += 1
        acc = eval_accuracy(tr.policy, tr.tokenizer, task, task.eval_problems(eval_set), samples=cfg.eval_samples,
                            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=10_007 + seed, device=tr.device)
        return {"accuracy": float(acc.mean()), "wall_s": wall, "steps": n_steps, "generated_samples": samples, "generated_tokens": tokens,
                "vanishing_group_rate": zv / max(n_steps * P, 1), "nonzero_group_rate": nonzero / max(n_steps * P, 1),
                "replaced_group_rate": replaced / max(n_steps * P, 1)}
    finally:
        tr.close()


def _rl_family(cfg, out: Path, logger, bar) -> list[dict]:
    task = LastNumberArithmetic(cfg.levels, holdout_per_level=cfg.holdout_per_level)
    rows = []
    kw_by = {"grpo": {}, "spo-chain": dict(advantage="spo-chain", methods={"spo-chain": {"mc_samples": cfg.spo_mc_samples}}),
             "ppo-gae": dict(advantage="ppo-gae"), "ssb": dict(sample_filter="ssb", methods={"ssb": {"capacity": cfg.ssb_capacity}}),
             "t-ppo": dict(advantage="t-ppo", rollout_strategy="windowed", methods={"windowed": {"window_tokens": cfg.tppo_window}})}
    for s in range(cfg.seeds):
        seed = cfg.seed + s
        base_tokens = None
        for m in sorted(cfg.rl_methods, key=lambda x: x != "grpo"):  # GRPO first: t-ppo matches its token budget
            bar.set_postfix_str(f"rl {m} seed {seed}")
            extra = {}
            if m == "t-ppo":  # equal generated-token budget with the GRPO arm of this seed
                extra = dict(token_budget=base_tokens, max_steps=8 * cfg.steps)
            r = run_grpo_arm(cfg, out / "arms" / f"rl-{m}-s{seed}", seed, task, logger=logger, tag=f"rl/{m}", **extra, **kw_by[m])
            if m == "grpo":
                base_tokens = r["generated_tokens"]
            _record(out, rows, {"family": "rl", "method": m, "seed": seed, **r})
            bar.update(1)
    return rows


def _filters_family(cfg, out: Path, logger, bar) -> tuple[list[dict], dict]:
    from polab.estimators.sample_filters import rank_filtration_strategies

    rows, r2_rows = [], []
    noisy = LastNumberArithmetic(cfg.levels, holdout_per_level=cfg.holdout_per_level)
    sparse = LastNumberArithmetic((cfg.arpo_level,), holdout_per_level=1, pool_size=cfg.arpo_pool)
    rm = dict(reward_shaper="gaussian-noise-rm", methods={"gaussian-noise-rm": {"sigma": cfg.noise_sigma}})
    G = cfg.samples_per_prompt

    def arm(m, seed, task, **kw):
        bar.set_postfix_str(f"filters {m} seed {seed}")
        r = run_grpo_arm(cfg, out / "arms" / f"filters-{m}-s{seed}", seed, task, logger=logger, tag=f"filters/{m}", **kw)
        _record(out, rows, {"family": "filters", "method": m, "seed": seed, **r})
        bar.update(1)
        return r

    pooled = []
    if "grpo-noisy" in cfg.filter_methods:
        for s in range(cfg.seeds):
            seed, batches = cfg.seed + s, []
            r = arm("grpo-noisy", seed, noisy, on_step=lambda tr, res: batches.append(tr.reward_shaper.last), **rm)
            # PF-PPO's criterion: R^2 of true on RM scores over the samples each strategy keeps, this arm's batches pooled
            sc, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
            gid = torch.arange(sc.shape[0] // G).repeat_interleave(G)
            pooled.append((sc, y))
            ranked = rank_filtration_strategies(sc, y, gid, strategies=("none", "best-worst", "best-random"),
                                                generator=torch.Generator().manual_seed(seed))
            r2_rows.append({"seed": seed, **{f"r2_{k}": v.r2 for k, v in ranked.items()}, "n": int(sc.shape[0]), "true_success_rate": float(y.mean())})
            rows[-1].update({f"r2_{k}": v.r2 for k, v in ranked.items()})
    chosen = None
    if pooled:
        sc, y = torch.cat([p[0] for p in pooled]), torch.cat([p[1] for p in pooled])
        gid = torch.arange(sc.shape[0] // G).repeat_interleave(G)
        ranked = rank_filtration_strategies(sc, y, gid, strategies=("best-worst", "best-random"), generator=torch.Generator().manual_seed(cfg.seed))
        chosen = "pf-ppo-" + next(iter(ranked))  # highest R^2 first (NaN last)
        r2_all = {k: v.r2 for k, v in ranked.items()}
    listed = [m for m in ("pf-ppo-best-worst", "pf-ppo-best-random") if m in cfg.filter_methods]
    pf = [m for m in listed if cfg.pf_ppo_arms == "both" or m == chosen or chosen not in listed]  # one listed strategy: run it
    for s in range(cfg.seeds):
        for m in pf:
            arm(m, cfg.seed + s, noisy, sample_filter=m, **rm)
    for s in range(cfg.seeds):
        if "grpo-sparse" in cfg.filter_methods:
            arm("grpo-sparse", cfg.seed + s, sparse, eval_set="pool")
        if "arpo" in cfg.filter_methods:
            arm("arpo", cfg.seed + s, sparse, eval_set="pool", sample_filter="arpo")
    return rows, {"r2": r2_rows, "chosen": chosen, "r2_pooled": r2_all if pooled else {}}


# -- preference arms ------------------------------------------------------------------------------------------------


def _pref_family(cfg, out: Path, logger, bar) -> list[dict]:
    from ..trainers.preference import PreferenceConfig, PreferenceTrainer
    from ..rollout import sample_rollouts

    rows = []
    for s in range(cfg.seeds):
        seed = cfg.seed + s
        for m in cfg.pref_methods:
            bar.set_postfix_str(f"preference {m} seed {seed}")
            pc = PreferenceConfig(model=cfg.model, scheme=m, prompts_per_step=cfg.pref_prompts_per_step, samples_per_prompt=cfg.pref_samples_per_prompt,
                                  max_new_tokens=cfg.pref_max_new_tokens, temperature=1.0, steps=cfg.pref_steps, lr=cfg.pref_lr, seed=seed,
                                  checkpoint_every=10**9, tensorboard=False, progress=False, torch_threads=1, device=cfg.device,
                                  out=str(out / "arms" / f"pref-{m}-s{seed}"), overwrite=True)
            tr = PreferenceTrainer(pc)
            try:
                wall = 0.0
                for k in range(cfg.pref_steps):
                    t0 = time.perf_counter()
                    res = tr.train_step()
                    wall += time.perf_counter() - t0
                    if tr.logger is not None:  # the arm's own run folder gets its per-step rows
                        tr.logger.log(res.step, res.metrics)
                    logger.log(logger.row, {"arm": f"preference/{m}", "seed": seed, "arm_step": k + 1,
                                            "reward_mean": res.metrics.get("policy_reward", math.nan), "time_step_s": res.metrics.get("time_step_s", math.nan)})
                    logger.row += 1
                rng = np.random.default_rng(20_011 + seed)  # held-out prompts: drawn apart from the trainer's per-step streams
                items = [tr.task.sample(rng=rng) for _ in range(cfg.pref_eval_prompts)]
                tr.policy.eval()
                with torch.no_grad():
                    b = sample_rollouts(tr.policy, tr.tokenizer, [tr.task.prompt(it) for it in items], samples_per_prompt=cfg.eval_samples,
                                        max_new_tokens=cfg.pref_max_new_tokens, generator=torch.Generator(device=tr.device).manual_seed(30_011 + seed),
                                        temperature=1.0)
                reward = float(np.mean([tr.task.reward(t, items[i // cfg.eval_samples]).total for i, t in enumerate(b.texts)]))
            finally:
                tr.close()
                del tr  # free the policy and reference before the next arm loads its own
                gc.collect()
            _record(out, rows, {"family": "preference", "method": m, "seed": seed, "reward": reward, "wall_s": wall,
                         "generated_samples": cfg.pref_steps * cfg.pref_prompts_per_step * cfg.pref_samples_per_prompt})
            bar.update(1)
    return rows


# -- ranking arms (Neural PG-Rank vs a supervised listwise loss) -----------------------------------------------------


class LLMScorer(torch.nn.Module):
    """Pointwise relevance scores from a causal LM: the next-token logit of " Yes" minus that of " No" after
    :meth:`RetrievalTask.pair_text`. Only the last ``trainable_layers`` transformer blocks (and the final norm) train."""

    def __init__(self, lm, tokenizer, *, trainable_layers: int):
        super().__init__()
        self.lm, self.tok = lm, tokenizer
        for p in lm.parameters():
            p.requires_grad_(False)
        layers = lm.model.layers if hasattr(lm, "model") and hasattr(lm.model, "layers") else None
        if layers is None:
            raise ValueError("the ranking scorer needs a decoder with model.layers (Llama-style)")
        for blk in list(layers)[-trainable_layers:]:
            for p in blk.parameters():
                p.requires_grad_(True)
        for p in lm.model.norm.parameters():
            p.requires_grad_(True)
        self.yes = tokenizer(" Yes", add_special_tokens=False)["input_ids"][-1]
        self.no = tokenizer(" No", add_special_tokens=False)["input_ids"][-1]

    def forward(self, texts: list[str]) -> torch.Tensor:
        pad_side = self.tok.padding_side
        self.tok.padding_side = "left"
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        self.tok.padding_side = pad_side
        dev = next(self.lm.parameters()).device
        h = self.lm.model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev)).last_hidden_state[:, -1, :]
        w = self.lm.get_output_embeddings().weight  # only the two rows the score reads (not the whole vocabulary)
        return (h @ (w[self.yes] - w[self.no])).float()


def _score_problems(scorer, task, problems) -> torch.Tensor:
    texts = [task.pair_text(p.query, d) for p in problems for d in p.documents]
    return scorer(texts).view(len(problems), -1)


def _ranking_family(cfg, out: Path, logger, bar) -> tuple[list[dict], dict]:
    from polab.estimators.ranking_pg import gumbel_sort_rankings, ndcg_at_k, pg_rank_loss

    from ..models import load_model
    from ..tasks.retrieval import RetrievalTask

    task = RetrievalTask(cfg.rank_docs, k=cfg.rank_k)
    rows, curves = [], {}
    for s in range(cfg.seeds):
        seed = cfg.seed + s
        erng = np.random.default_rng(40_009 + seed)
        held = [task.sample(rng=erng) for _ in range(cfg.rank_eval_queries)]
        held_rel = torch.tensor([p.relevance for p in held], dtype=torch.float64)
        before = None
        for m in RANK_METHODS:
            bar.set_postfix_str(f"ranking {m} seed {seed}")
            torch.manual_seed(seed)
            loaded = load_model(cfg.model, seed=seed)
            lm = loaded.model.to(cfg.device)
            scorer = LLMScorer(lm, loaded.tokenizer, trainable_layers=cfg.rank_trainable_layers)
            opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=cfg.rank_lr)

            def held_ndcg():
                with torch.no_grad():
                    sc = _score_problems(scorer, task, held).double().cpu()
                rk = torch.argsort(sc, dim=1, descending=True)[:, None, :]
                return ndcg_at_k(held_rel, rk, k=cfg.rank_k)[:, 0].numpy()

            if before is None:
                before = held_ndcg()
            wall, curve = 0.0, []
            for k in range(cfg.rank_steps):
                t0 = time.perf_counter()
                rng = np.random.default_rng([seed, k, 77])  # the same training queries for both arms
                probs = [task.sample(rng=rng) for _ in range(cfg.rank_queries_per_step)]
                rel = torch.tensor([p.relevance for p in probs], dtype=torch.float64)
                sc = _score_problems(scorer, task, probs)
                if m == "pg-rank":
                    gen = torch.Generator(device=sc.device).manual_seed(seed * 100_003 + k)
                    rk = gumbel_sort_rankings(sc.detach(), cfg.rank_samples, generator=gen)
                    util = ndcg_at_k(rel.to(sc.device, sc.dtype), rk, k=cfg.rank_k)
                    res = pg_rank_loss(sc, rk, util, baseline="leave-one-out")
                    loss, train_util = res.loss, res.mean_utility
                else:
                    gains = torch.pow(2.0, rel) - 1.0
                    target = (gains / gains.sum(dim=1, keepdim=True)).to(sc.device, sc.dtype)
                    loss = -(target * torch.log_softmax(sc, dim=1)).sum(dim=1).mean()
                    with torch.no_grad():
                        train_util = float(ndcg_at_k(rel, torch.argsort(sc.detach().double().cpu(), 1, descending=True)[:, None, :],
                                                     k=cfg.rank_k).mean())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in lm.parameters() if p.requires_grad], 1.0)
                opt.step()
                wall += time.perf_counter() - t0
                curve.append(train_util)
                logger.log(logger.row, {"arm": f"ranking/{m}", "seed": seed, "arm_step": k + 1, "train_ndcg": train_util,
                                        "loss": float(loss.detach()), "time_step_s": time.perf_counter() - t0})
                logger.row += 1
            after = held_ndcg()
            curves.setdefault(m, []).append(curve)
            _record(out, rows, {"family": "ranking", "method": m, "seed": seed, "ndcg": float(after.mean()), "ndcg_before": float(before.mean()),
                         "wall_s": wall, "generated_samples": cfg.rank_steps * cfg.rank_queries_per_step * (cfg.rank_samples if m == "pg-rank" else 0)})
            del scorer, lm, opt, loaded
            gc.collect()
            bar.update(1)
    return rows, {"train_curves": curves}


# -- self-reference (folded in from the stored benchmark) ----------------------------------------------------------


def self_reference_summary(results: dict) -> dict:
    """Accuracy (Clopper-Pearson 95%) of each judge variant and the exact McNemar test of ``self-ref`` vs ``ai-feedback``.

    ``results`` maps ``"variant/seed"`` to ``{"right": [0/1 per labelled pair], ...}`` (measure.py's JSON).
    """
    from scipy.stats import binomtest

    by: dict[str, dict[str, list[int]]] = {}
    for key, r in results.items():
        v, _, s = key.partition("/")
        by.setdefault(v, {})[s] = list(r["right"])
    out = {}
    for v, seeds in by.items():
        right = sum(sum(x) for x in seeds.values())
        n = sum(len(x) for x in seeds.values())
        ci = binomtest(right, n).proportion_ci(0.95, method="exact")
        out[v] = {"accuracy": right / n, "lo": ci.low, "hi": ci.high, "n": n, "seeds": sorted(seeds)}
    if "self-ref" in by and "ai-feedback" in by:
        b = c = 0
        common = sorted(set(by["self-ref"]) & set(by["ai-feedback"]))
        for s in common:
            for x, y in zip(by["self-ref"][s], by["ai-feedback"][s]):
                b += bool(x and not y)
                c += bool(y and not x)
        out["mcnemar"] = {"self_ref_only": b, "plain_only": c, "p": float(binomtest(b, b + c).pvalue) if b + c else 1.0, "seeds": common}
    return out


def _self_reference(out: Path) -> tuple[list[dict], dict]:
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "self_reference_accuracy"
    files = sorted(bench.glob("result_*_64_*.json"))
    if not files:
        return [], {"note": f"no stored measurement under {bench} (run benchmarks/self_reference_accuracy/measure.py)"}
    res = {}
    for f in files:
        res.update(json.loads(f.read_text()))
    res = {k: v for k, v in res.items() if k.split("/")[0] in ("ai-feedback", "self-ref")}
    return [], {"summary": self_reference_summary(res), "files": [f.name for f in files]}


# -- tables and figures ------------------------------------------------------------------------------------------------


def _budgets(cfg) -> dict:
    g = f"{cfg.steps} steps x {cfg.prompts_per_step} prompts x {cfg.samples_per_prompt} samples, {cfg.max_new_tokens} tokens"
    return {"rl": g, "filters": g, "arpo": f"{cfg.steps} steps x {cfg.prompts_per_step} x {cfg.samples_per_prompt}, pool {cfg.arpo_pool} "
                                             f"{cfg.arpo_level}-digit sums",
            "tppo": f"GRPO's generated tokens, window {cfg.tppo_window}",
            "preference": f"{cfg.pref_steps} steps x {cfg.pref_prompts_per_step} prompts x {cfg.pref_samples_per_prompt} samples, {cfg.pref_max_new_tokens} tokens",
            "ranking": f"{cfg.rank_steps} steps x {cfg.rank_queries_per_step} queries x {cfg.rank_docs} docs (PG: {cfg.rank_samples} rankings/query)"}


def verdict_rows(cfg, results: list[dict], extras: dict) -> list[dict]:
    b = _budgets(cfg)
    rows = []
    fams = {r["family"] for r in results}
    if "rl" in fams:
        for m in cfg.rl_methods:
            if m == "grpo":
                continue
            rows.append(compare(results, "rl", m, "grpo", "accuracy", budget=b["rl"] if m != "t-ppo" else b["tppo"]))
            if m == "t-ppo":
                rows.append(compare(results, "rl", m, "grpo", "wall_s", budget=b["tppo"], higher_is_better=False))
            if m == "ssb":
                rows.append(compare(results, "rl", m, "grpo", "vanishing_group_rate", budget=b["rl"], higher_is_better=False))
    if "preference" in fams:
        for m in cfg.pref_methods:
            if m != "on-policy-dpo":
                rows.append(compare(results, "preference", m, "on-policy-dpo", "reward", budget=b["preference"]))
    if "filters" in fams:
        for m in ("pf-ppo-best-worst", "pf-ppo-best-random"):
            if any(r["method"] == m for r in results) and "grpo-noisy" in cfg.filter_methods:
                rows.append(compare(results, "filters", m, "grpo-noisy", "accuracy", budget=b["filters"] + f", RM noise sigma {cfg.noise_sigma}"))
        if "arpo" in cfg.filter_methods and "grpo-sparse" in cfg.filter_methods:
            rows.append(compare(results, "filters", "arpo", "grpo-sparse", "nonzero_group_rate", budget=b["arpo"]))
            rows.append(compare(results, "filters", "arpo", "grpo-sparse", "accuracy", budget=b["arpo"]))
    if "ranking" in fams:
        rows.append(compare(results, "ranking", "pg-rank", "listnet", "ndcg", budget=b["ranking"]))
    sr = extras.get("self-reference", {}).get("summary")
    if sr and "self-ref" in sr and "ai-feedback" in sr:
        a, p = sr["self-ref"], sr["ai-feedback"]
        mc = sr.get("mcnemar", {})
        rows.append({"family": "self-reference", "method": "self-reference", "metric": "label accuracy", "baseline": "ai-feedback (plain judge)",
                     "baseline_mean": p["accuracy"], "method_mean": a["accuracy"], "diff": a["accuracy"] - p["accuracy"], "lo": math.nan,
                     "hi": math.nan, "p": mc.get("p", math.nan), "seeds": len(a["seeds"]),
                     "budget": f"stored benchmark, {a['n']} pairs (CP 95%: {a['lo']:.3f}-{a['hi']:.3f} vs {p['lo']:.3f}-{p['hi']:.3f})",
                     "verdict": ("not resolved (exact McNemar p = %.2g)" % mc.get("p", math.nan)) if mc.get("p", 1.0) >= 0.05
                     else ("better" if a["accuracy"] > p["accuracy"] else "worse") + " (exact McNemar p = %.2g)" % mc["p"],
                     "higher_is_better": True})
    return rows


_LABELS = {
    "grpo": "GRPO (group-normalised)", "spo-chain": "SPO-chain (MC values, {mc} cont./cut)", "ppo-gae": "PPO + GAE (critic, lambda 0.95)",
    "t-ppo": "T-PPO (windowed, {w} tok/window)", "ssb": "GRPO + SSB (cap {cap})", "on-policy-dpo": "on-policy DPO (beta 0.1)",
    "on-policy-copg": "on-policy CoPG (beta 0.1)", "on-policy-opa-dpo": "on-policy OPA-DPO (sigmoid anchor)",
    "grpo-noisy": "GRPO, noisy RM (sigma {sig})", "pf-ppo-best-worst": "PF-PPO best-worst, noisy RM", "pf-ppo-best-random": "PF-PPO best-random, noisy RM",
    "grpo-sparse": "GRPO, sparse success", "arpo": "GRPO + ARPO replay", "listnet": "ListNet (supervised listwise)",
    "pg-rank": "PG-Rank (PL policy, LOO baseline, {ns} samples)",
}


def _label(cfg, m):
    return _LABELS.get(m, m).format(mc=cfg.spo_mc_samples, w=cfg.tppo_window, cap=cfg.ssb_capacity, sig=cfg.noise_sigma, ns=cfg.rank_samples)


def _panel(ax, cfg, results, family, methods, metric, ylabel, title):
    """Per-method mean with its 95% t interval over seeds and the per-seed values."""
    colours = [f"C{i}" for i in range(10)]
    for i, m in enumerate(methods):
        v = [r[metric] for r in results if r["family"] == family and r["method"] == m and metric in r]
        if not v:
            continue
        mu, lo, hi = mean_ci(v)
        err = None if not math.isfinite(lo) else [[mu - lo], [hi - mu]]
        ax.errorbar([i], [mu], yerr=err, fmt="o", color=colours[i % 10], capsize=5, label=f"{_label(cfg, m)} (n={len(v)})")
        ax.scatter(np.full(len(v), i) + 0.12, v, s=10, color=colours[i % 10], alpha=0.5)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([m for m in methods], rotation=20, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def figures(cfg, results: list[dict], extras: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fams = {r["family"] for r in results}
    seeds = f"{cfg.seeds} seeds, mean and 95% t interval; dots: seeds"
    if "rl" in fams:
        ms = list(cfg.rl_methods)
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
        _panel(axes[0], cfg, results, "rl", ms, "accuracy", "held-out accuracy (sampled, T=%.1f)" % cfg.temperature,
               f"quality after {cfg.steps} steps\n({seeds})")
        _panel(axes[1], cfg, results, "rl", ms, "wall_s", "training wall-clock (s, 2 shared cores)", "wall-clock (t-ppo: GRPO's token budget)")
        _panel(axes[2], cfg, results, "rl", ms, "vanishing_group_rate", "vanishing-advantage groups in the update (fraction)",
               "zero-variance groups (SSB replaces them)")
        axes[0].legend(fontsize=7, loc="best")
        fig.suptitle(f"RL family vs GRPO on SmolLM2 ({cfg.model}), addition {cfg.levels}-digit, equal budget: {_budgets(cfg)['rl']}", fontsize=10)
        fig.tight_layout()
        made.append(_save(fig, out / "figures" / "rl.png"))
    if "preference" in fams:
        fig, ax = plt.subplots(figsize=(7, 4.4))
        _panel(ax, cfg, results, "preference", list(cfg.pref_methods), "reward", "held-out reward exp(-|words-3|/4)",
               f"preference family: {_budgets(cfg)['preference']}\n({seeds})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        made.append(_save(fig, out / "figures" / "preference.png"))
    if "filters" in fams:
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
        pf = [m for m in ("grpo-noisy", "pf-ppo-best-worst", "pf-ppo-best-random") if m in cfg.filter_methods]
        _panel(axes[0], cfg, results, "filters", pf, "accuracy", "held-out true accuracy", f"PF-PPO with a noisy RM (sigma {cfg.noise_sigma})")
        axes[0].legend(fontsize=7)
        r2 = extras.get("filters", {}).get("r2", [])
        names = ["none", "best-worst", "best-random"]
        for i, n in enumerate(names):
            v = [r.get(f"r2_{n}", math.nan) for r in r2]
            mu, lo, hi = mean_ci(v)
            if math.isfinite(mu):
                axes[1].errorbar([i], [mu], yerr=None if not math.isfinite(lo) else [[mu - lo], [hi - mu]], fmt="s", capsize=5,
                                 label=f"{n} (pooled GRPO rollouts, n={len(v)} seeds)")
        axes[1].set_xticks(range(3))
        axes[1].set_xticklabels(names)
        axes[1].set_ylabel("R^2 of true score on RM score (kept samples)")
        axes[1].set_title(f"PF-PPO strategy choice by R^2 (paper's criterion): {extras.get('filters', {}).get('chosen')}", fontsize=9)
        axes[1].legend(fontsize=7)
        axes[1].grid(alpha=0.3)
        ar = [m for m in ("grpo-sparse", "arpo") if m in cfg.filter_methods]
        _panel(axes[2], cfg, results, "filters", ar, "nonzero_group_rate", "groups with a non-zero advantage (fraction)",
               f"ARPO on sparse success ({cfg.arpo_level}-digit, pool {cfg.arpo_pool})")
        axes[2].legend(fontsize=7)
        fig.tight_layout()
        made.append(_save(fig, out / "figures" / "filters.png"))
    if "ranking" in fams:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
        _panel(axes[0], cfg, results, "ranking", list(RANK_METHODS), "ndcg", f"held-out nDCG@{cfg.rank_k}",
               f"Neural PG-Rank vs ListNet ({cfg.rank_eval_queries} held-out queries)\n({seeds})")
        before = [r["ndcg_before"] for r in results if r["family"] == "ranking"]
        if before:
            axes[0].axhline(float(np.mean(before)), ls="--", color="grey", label="before training")
        axes[0].legend(fontsize=7)
        for i, m in enumerate(RANK_METHODS):
            c = np.asarray(extras.get("ranking", {}).get("train_curves", {}).get(m, []), dtype=float)
            if c.size == 0:
                continue
            mu = c.mean(0)
            x = np.arange(1, c.shape[1] + 1)
            axes[1].plot(x, mu, color=f"C{i}", label=_label(cfg, m))
            if c.shape[0] > 1:
                h = stats.t.ppf(0.975, c.shape[0] - 1) * c.std(0, ddof=1) / math.sqrt(c.shape[0])
                axes[1].fill_between(x, mu - h, mu + h, color=f"C{i}", alpha=0.2)
        axes[1].set_xlabel("training step")
        axes[1].set_ylabel(f"training-batch nDCG@{cfg.rank_k} (PG: mean of sampled rankings)")
        axes[1].set_title("training curves (95% t band over seeds)", fontsize=9)
        axes[1].legend(fontsize=7)
        axes[1].grid(alpha=0.3)
        fig.tight_layout()
        made.append(_save(fig, out / "figures" / "ranking.png"))
    sr = extras.get("self-reference", {}).get("summary")
    if sr:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for i, v in enumerate(k for k in sr if k != "mcnemar"):
            a = sr[v]
            ax.errorbar([i], [a["accuracy"]], yerr=[[a["accuracy"] - a["lo"]], [a["hi"] - a["accuracy"]]], fmt="o", capsize=5,
                        label=f"{v} ({a['n']} pairs, seeds {','.join(a['seeds'])})")
        ax.axhline(0.5, ls="--", color="grey", label="chance")
        ax.set_ylabel("label accuracy vs task reward (Clopper-Pearson 95%)")
        ax.set_xticks(range(len([k for k in sr if k != "mcnemar"])))
        ax.set_xticklabels([k for k in sr if k != "mcnemar"])
        ax.set_title("self-reference AI feedback vs plain judge (stored benchmark)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        made.append(_save(fig, out / "figures" / "self-reference.png"))
    return made


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write_csv(path: Path, rows: list[dict], columns=None) -> None:
    import csv
    import io

    cols = list(columns) if columns else sorted({k for r in rows for k in r}, key=lambda k: (k not in ("family", "method", "seed"), k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in cols})
    atomic_write_text(path, buf.getvalue())


# -- entry points ----------------------------------------------------------------------------------------------------


def _arm_count(cfg) -> int:
    n = 0
    for f in _families(cfg):
        nf = len(cfg.filter_methods) - (cfg.pf_ppo_arms == "chosen" and {"pf-ppo-best-worst", "pf-ppo-best-random"} <= set(cfg.filter_methods))
        n += {"rl": len(cfg.rl_methods), "preference": len(cfg.pref_methods), "filters": nf, "ranking": len(RANK_METHODS),
              "self-reference": 0}[f] * cfg.seeds
    return n


def _number(v: str):
    try:
        x = float(v)
    except ValueError:
        return v
    return int(x) if x.is_integer() and "." not in v and "e" not in v.lower() else x


def read_results(folders) -> tuple[list[dict], dict]:
    """Result rows and extras of earlier run folders, concatenated (``--merge``)."""
    import csv

    rows, extras = [], {}
    for f in folders:
        f = Path(f)
        if (f / "results.csv").is_file() and (f / "summary.json").is_file():
            with open(f / "results.csv", newline="") as fh:
                rows += [{k: _number(v) for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]
            ex = json.loads((f / "summary.json").read_text()).get("extras", {})
        elif (f / "results.jsonl").is_file():  # a run stopped early: its finished arms
            rows += [json.loads(line) for line in (f / "results.jsonl").read_text().splitlines() if line.strip()]
            ex = {}
        else:
            raise ValueError(f"--merge {f}: not an llm-methods run folder (neither results.csv with summary.json nor results.jsonl)")
        if "filters" in ex:
            e = extras.setdefault("filters", {"r2": [], "chosen": ex["filters"].get("chosen"), "r2_pooled": ex["filters"].get("r2_pooled", {})})
            e["r2"] += ex["filters"].get("r2", [])
        if "ranking" in ex:
            c = extras.setdefault("ranking", {"train_curves": {}})["train_curves"]
            for m, v in ex["ranking"].get("train_curves", {}).items():
                c.setdefault(m, []).extend(v)
    last = {(r.get("family"), r.get("method"), r.get("seed")): i for i, r in enumerate(rows)}  # a repeated arm counts once: the later folder's
    return [r for i, r in enumerate(rows) if last[(r.get("family"), r.get("method"), r.get("seed"))] == i], extras


def run(cfg: LLMMethodsConfig) -> Path:
    """Validate, run the selected families into ``cfg.out``, write the table, figures and summary; returns the run folder."""
    _validate(cfg)
    merged = read_results(cfg.merge) if cfg.merge else None
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite, can_resume=False):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        out = Path(cfg.out)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        config = {**asdict(cfg), "provenance": provenance()}
        results, extras, walls = [], {}, {}
        with MetricLogger(out, config=config, backends=("csv",)) as logger:
            logger.row = 0
            with tqdm(total=0 if merged else _arm_count(cfg), desc="llm-methods arms", disable=not cfg.progress) as bar:
                if merged:
                    results, extras = merged
                    if "self-reference" in _families(cfg):
                        extras["self-reference"] = _self_reference(out)[1]
                for fam in () if merged else _families(cfg):
                    t0 = time.perf_counter()
                    if fam == "rl":
                        results += _rl_family(cfg, out, logger, bar)
                    elif fam == "preference":
                        results += _pref_family(cfg, out, logger, bar)
                    elif fam == "filters":
                        rows, extras["filters"] = _filters_family(cfg, out, logger, bar)
                        results += rows
                    elif fam == "ranking":
                        rows, extras["ranking"] = _ranking_family(cfg, out, logger, bar)
                        results += rows
                    else:
                        rows, extras["self-reference"] = _self_reference(out)
                    walls[fam] = time.perf_counter() - t0
        table = verdict_rows(cfg, results, extras)
        _write_csv(out / "results.csv", results)
        _write_csv(out / "table.csv", table, TABLE_COLUMNS)
        atomic_write_text(out / "table.md", markdown_table(table))
        figs = figures(cfg, results, extras, out)
        summary = {"families": list(_families(cfg)), "family_wall_s": walls, "budgets": _budgets(cfg), "table": table, "extras": extras,
                   "figures": [str(p.relative_to(out)) for p in figs]}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
        return out


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_config(LLMMethodsConfig, argv, prog="polab run llm-methods", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    out = run(cfg)
    s = json.loads((out / "summary.json").read_text())
    print((out / "table.md").read_text(), end="")
    print("family wall-clock (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["family_wall_s"].items()))
    print(f"table: {out / 'table.md'}; figures: {', '.join(s['figures'])}")
    return 0
