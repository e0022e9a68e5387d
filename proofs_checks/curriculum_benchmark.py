r"""Synthetic curriculum benchmark: DUMP against uniform sampling, no LLM.

The learning model
------------------
There are :math:`K` training distributions. Distribution :math:`j` is one
Bernoulli "prompt family" whose responses succeed with probability
:math:`p_j = \sigma(\theta_j)` (:math:`\sigma` the logistic function); the
policy's only parameters are the logits :math:`\theta_j`. Some distributions
are *unlearnable*: their success probability is exactly 0 and their logit is
frozen (think of puzzles beyond the model's reach: every rollout fails, every
GRPO advantage is 0). One training step, for each of ``seeds`` independent
runs:

1. the scheduler draws the distributions of ``batch_prompts`` (:math:`B`)
   prompts, ``scheduler.sample(B, generator=...)``;
2. each prompt gets a group of ``group_size`` (:math:`G`) binary rewards
   :math:`o_i\sim\mathrm{Bernoulli}(p_j)`;
3. GRPO advantages :math:`A_i` are computed per group by
   :func:`polab.estimators.advantages.group_advantages` (verl convention: unbiased
   std, :math:`\epsilon = 10^{-6}`);
4. the scheduler is fed ``update(sources, advantages)``, one entry per response;
5. each *sampled learnable* distribution takes a REINFORCE step on its logit,

   .. math::

       \theta_j \leftarrow \theta_j + \eta\,\frac{1}{n_j}\sum_{i:\,src(i)=j}
           A_i\,\frac{\partial\log P_{\theta}(o_i)}{\partial\theta_j},
       \qquad \frac{\partial\log P_\theta(o)}{\partial\theta_j} = o - p_j,

   the exact score of the Bernoulli policy
   (:math:`\log P(o) = o\log p + (1-o)\log(1-p)`, :math:`dp/d\theta = p(1-p)`).
   With ``aggregation="batch"`` (default) :math:`n_j = BG` for every
   :math:`j`: this is the exact gradient of the batch-mean GRPO surrogate
   :math:`\frac{1}{BG}\sum_i A_i\log P_\theta(o_i)` (verl's and TRL's
   sequence-mean aggregation with one token per response), so a
   distribution drawn twice as often moves twice as far. With
   ``aggregation="distribution"`` :math:`n_j` is the number of responses
   from :math:`j` in this step (the mean over that distribution's
   responses). Distributions not drawn do not move.

Why ``"batch"`` is the default. Under ``"distribution"`` a distribution's
expected step no longer grows with the number of its prompts in the batch,
only with the chance :math:`1-(1-w_j)^B` that it is drawn at all, so with
:math:`B` close to :math:`K` any sampler that draws every learnable
distribution about once per step does about as well as any other. Measured
on the default setting with ``aggregation="distribution"`` (``--aggregation
distribution --learning-rate 0.05`` and ``0.1``, 24 seeds): median ratio
DUMP/uniform 1.02 and 1.04, one-sided Wilcoxon p = 0.92 and 0.99, although
DUMP gave the two unlearnable distributions 5% and 15% of its samples
instead of 33%. With ``B = 1`` the two aggregations coincide.

For one group with :math:`k` successes :math:`\sum_i A_i(o_i-p) = \sum_i A_i o_i
= k(1-q)/(s+\epsilon)` because :math:`\sum_i A_i = 0`; per response this is
:math:`q(1-q)/(s+\epsilon) = \frac12\overline{|A|}` of
:mod:`polab.theory.learnability`. So in this model a group's learning progress is
*exactly* half its mean absolute advantage (always :math:`\ge 0`: with binary
rewards GRPO only ever raises the success probability): DUMP's learnability
signal is the step size itself, which is the premise of the DUMP argument
(bound (1) of :mod:`polab.theory.learnability`) made exact.

Target and measurement
----------------------
The aggregate success is the mean of :math:`p_j` over the **learnable**
distributions only (the unlearnable ones stay at 0 whatever the sampler
does). The number of samples to target is :math:`BG` times the first step
after which the aggregate success reaches ``target``. Both schedulers get the
same budget of ``budget_steps`` steps; a run that does not reach the target
within the budget is censored at ``budget + BG`` samples (flagged in
``reached``), which ranks it behind every run that reached the target.

The default setting has six distributions: two easy (:math:`p_0 = 0.5`),
two hard (:math:`p_0 = \sigma(-3)\approx 0.047`, so about 68% of their first
groups of 8 are all-fail) and two unlearnable (success probability exactly 0;
their logit is frozen at -30, which is only a label), with :math:`G = 8`,
:math:`B = 4`, :math:`\eta = 0.2`, target 0.8 and a budget of 800 steps
(25,600 responses), DUMP at the authors' defaults (window 300,
:math:`c = 1`, :math:`\tau = 0.1`). Uniform sampling spends a third of its
samples on the unlearnable distributions; DUMP's UCB moves mass away from
distributions whose window mean |A| is 0 and, within the learnable ones, to
those with the larger signal. Nothing else favours DUMP: both samplers see
the same learning model and budget. Once the learnable distributions
saturate (:math:`p_j\to 1`, most groups all-success) their |A| vanishes too,
and DUMP's exploration bonus sends mass back to the unlearnable ones; the
default budget stops before that reaches 1/K.

The test is a one-sided paired Wilcoxon signed-rank test (pairs are runs
with the same seed) of "DUMP needs fewer samples", at :math:`\alpha = 0.01`.
Measured on the default setting and ``DEFAULT_SEEDS`` (24 seeds;
``python -m polab.proofs_checks.curriculum_benchmark``): median samples to target
9,648 (DUMP) and 13,632 (uniform), median per-seed ratio 0.718, p = 9.1e-6;
DUMP needed fewer samples in every seed.

Run ``python -m polab.proofs_checks.curriculum_benchmark`` for a report.

References
----------
Wang, Cui, Li, Wan, Zhao, "DUMP: Automated Distribution-Level Curriculum
Learning for RL-based LLM Post-training", arXiv 2504.09710, 2025.
Williams, "Simple statistical gradient-following algorithms for
connectionist reinforcement learning", Machine Learning 8, 1992 (REINFORCE).
Wilcoxon, "Individual comparisons by ranking methods", Biometrics Bulletin 1,
1945.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from scipy.stats import wilcoxon

from polab.estimators.advantages import group_advantages
from polab.estimators.curriculum import DumpScheduler, UniformScheduler

__all__ = [
    "BenchmarkConfig",
    "SchedulerRuns",
    "BenchmarkResult",
    "simulate",
    "run_benchmark",
    "main",
    "DEFAULT_SEEDS",
]

#: The seeds of the reported benchmark and of its test.
DEFAULT_SEEDS: tuple[int, ...] = tuple(range(24))


@dataclass(frozen=True)
class BenchmarkConfig:
    r"""Setting of the synthetic curriculum benchmark (see the module docstring).

    Attributes
    ----------
    initial_logits : tuple of float
        :math:`\theta_j` at step 0 for every distribution (unlearnable ones
        included; theirs is ignored since their success probability is 0).
    learnable : tuple of bool
        False marks an unlearnable distribution (success probability exactly 0,
        logit frozen).
    group_size : int
        :math:`G`, responses per prompt.
    batch_prompts : int
        :math:`B`, prompts per step.
    learning_rate : float
        :math:`\eta`.
    aggregation : {"distribution", "batch"}
        Normaliser of the logit step (module docstring, step 5).
    target : float
        Threshold on the mean success probability over learnable distributions.
    budget_steps : int
        Steps run by each scheduler (equal budget: ``budget_steps * B * G``
        samples).
    window, exploration, temperature : DUMP scheduler settings
        The authors' defaults: 300, 1.0, 0.1.
    epsilon : float
        GRPO epsilon (verl's 1e-6).
    alpha : float
        Level of the one-sided Wilcoxon test.
    """

    initial_logits: tuple[float, ...] = (0.0, 0.0, -3.0, -3.0, -30.0, -30.0)
    learnable: tuple[bool, ...] = (True, True, True, True, False, False)
    group_size: int = 8
    batch_prompts: int = 4
    learning_rate: float = 0.2
    aggregation: Literal["distribution", "batch"] = "batch"
    target: float = 0.8
    budget_steps: int = 800
    window: int = 300
    exploration: float = 1.0
    temperature: float = 0.1
    epsilon: float = 1e-6
    alpha: float = 0.01

    def __post_init__(self):
        K = len(self.initial_logits)
        if K < 2 or len(self.learnable) != K:
            raise ValueError(
                f"initial_logits and learnable must have the same length >= 2; got {K} and {len(self.learnable)}."
            )
        if not any(self.learnable):
            raise ValueError("at least one distribution must be learnable: the target is defined over them.")
        if not np.all(np.isfinite(self.initial_logits)):
            raise ValueError(f"initial_logits must be finite; got {self.initial_logits}.")
        if self.group_size < 2 or self.batch_prompts < 1 or self.budget_steps < 1:
            raise ValueError(
                f"need group_size >= 2, batch_prompts >= 1, budget_steps >= 1; got "
                f"{self.group_size}, {self.batch_prompts}, {self.budget_steps}."
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if self.aggregation not in ("distribution", "batch"):
            raise ValueError(f"aggregation must be 'distribution' or 'batch'; got {self.aggregation!r}.")
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target must lie in (0, 1); got {self.target}.")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1); got {self.alpha}.")

    @property
    def num_distributions(self) -> int:
        return len(self.initial_logits)

    @property
    def samples_per_step(self) -> int:
        return self.group_size * self.batch_prompts

    def names(self) -> tuple[str, ...]:
        """Distribution names: ``d<j>`` plus ``-unlearnable`` where it applies."""
        return tuple(f"d{j}" + ("" if ok else "-unlearnable") for j, ok in enumerate(self.learnable))


@dataclass(frozen=True)
class SchedulerRuns:
    """All runs of one scheduler (arrays indexed [seed, step, ...]).

    Attributes
    ----------
    kind : {"dump", "uniform"}
    samples_to_target : ndarray [S], int64
        Responses used until the aggregate success first reached the target
        (censored at ``budget + B*G`` where not reached).
    reached : ndarray [S], bool
    success : ndarray [S, T+1]
        Aggregate success (mean :math:`p_j` over learnable distributions)
        after t steps.
    success_per_distribution : ndarray [S, T+1, K]
    probabilities : ndarray [S, T+1, K]
        The scheduler's sampling probabilities after t updates (those used
        at step t+1).
    samples_per_distribution : ndarray [S, K], int64
        Responses drawn from each distribution over the whole budget.
    """

    kind: str
    samples_to_target: np.ndarray
    reached: np.ndarray
    success: np.ndarray
    success_per_distribution: np.ndarray
    probabilities: np.ndarray
    samples_per_distribution: np.ndarray


@dataclass(frozen=True)
class BenchmarkResult:
    """Result of :func:`run_benchmark`.

    Attributes
    ----------
    config : BenchmarkConfig
    seeds : tuple of int
    dump, uniform : SchedulerRuns
    median_samples_dump, median_samples_uniform : float
    median_ratio : float
        Median over seeds of dump / uniform samples to target.
    wilcoxon_statistic, p_value : float
        One-sided paired Wilcoxon signed-rank test, alternative "DUMP needs
        fewer samples" (``scipy.stats.wilcoxon(dump, uniform, alternative="less")``).
    alpha : float
    dump_better : bool
        ``p_value < alpha``.
    seconds : float
        Wall time of the simulation.
    """

    config: BenchmarkConfig
    seeds: tuple[int, ...]
    dump: SchedulerRuns
    uniform: SchedulerRuns
    median_samples_dump: float
    median_samples_uniform: float
    median_ratio: float
    wilcoxon_statistic: float
    p_value: float
    alpha: float
    dump_better: bool
    seconds: float


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def simulate(kind: Literal["dump", "uniform"], config: BenchmarkConfig, *, seeds: Sequence[int]) -> SchedulerRuns:
    r"""Run the learning model of the module docstring with one scheduler, for every seed.

    The seeds' runs are independent; they are advanced in lock-step so that
    the advantages of all seeds are computed by one
    :func:`~polab.estimators.advantages.group_advantages` call per step. Seed
    ``s`` owns ``numpy.random.default_rng(s)`` (rewards) and
    ``torch.Generator().manual_seed(s)`` (the scheduler's draws); the same
    seed gives the same run whatever other seeds are simulated alongside.

    Parameters
    ----------
    kind : {"dump", "uniform"}
    config : BenchmarkConfig
    seeds : sequence of int

    Returns
    -------
    SchedulerRuns
    """
    if kind not in ("dump", "uniform"):
        raise ValueError(f"kind must be 'dump' or 'uniform'; got {kind!r}.")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed.")
    S, K, B, G, T = len(seeds), config.num_distributions, config.batch_prompts, config.group_size, config.budget_steps
    names = config.names()
    if kind == "dump":
        scheds = [
            DumpScheduler(names, window=config.window, exploration=config.exploration, temperature=config.temperature)
            for _ in seeds
        ]
    else:
        scheds = [UniformScheduler(names) for _ in seeds]
    rngs = [np.random.default_rng(s) for s in seeds]
    tgens = [torch.Generator().manual_seed(s) for s in seeds]
    learn = np.asarray(config.learnable, dtype=bool)
    theta = np.tile(np.asarray(config.initial_logits, dtype=np.float64), (S, 1))

    def success_probs() -> np.ndarray:
        return np.where(learn, _sigmoid(theta), 0.0)

    succ_k = np.empty((S, T + 1, K))
    probs = np.empty((S, T + 1, K))
    drawn = np.zeros((S, K), dtype=np.int64)
    p = success_probs()
    succ_k[:, 0] = p
    probs[:, 0] = [sc.probabilities() for sc in scheds]
    group_ids = torch.arange(S * B).repeat_interleave(G)
    rows = np.repeat(np.arange(S), B)
    for t in range(1, T + 1):
        src = np.stack([sc.sample(B, generator=g).numpy() for sc, g in zip(scheds, tgens)])  # [S, B]
        p_src = np.take_along_axis(p, src, axis=1)  # [S, B]
        u = np.stack([r.random((B, G)) for r in rngs])  # [S, B, G]
        o = (u < p_src[..., None]).astype(np.float64)
        adv = group_advantages(torch.from_numpy(o.reshape(-1)), group_ids, epsilon=config.epsilon).advantages
        A = adv.numpy().reshape(S, B, G)
        for s in range(S):
            scheds[s].update(np.repeat(src[s], G), A[s].reshape(-1))
        # REINFORCE step on each sampled distribution's logit: sum_i A_i (o_i - p_j)
        contrib = (A * (o - p_src[..., None])).sum(axis=2)  # [S, B]
        grad = np.zeros((S, K))
        n_resp = np.zeros((S, K))
        np.add.at(grad, (rows, src.reshape(-1)), contrib.reshape(-1))
        np.add.at(n_resp, (rows, src.reshape(-1)), float(G))
        if config.aggregation == "distribution":
            step = np.divide(grad, n_resp, out=np.zeros_like(grad), where=n_resp > 0)
        else:
            step = grad / float(B * G)
        theta += config.learning_rate * np.where(learn, step, 0.0)
        drawn += n_resp.astype(np.int64)
        p = success_probs()
        succ_k[:, t] = p
        probs[:, t] = [sc.probabilities() for sc in scheds]
    success = succ_k[:, :, learn].mean(axis=2)
    hit = success >= config.target
    reached = hit.any(axis=1)
    first = np.where(reached, hit.argmax(axis=1), T + 1)
    return SchedulerRuns(
        kind=kind,
        samples_to_target=(first * B * G).astype(np.int64),
        reached=reached,
        success=success,
        success_per_distribution=succ_k,
        probabilities=probs,
        samples_per_distribution=drawn,
    )


def run_benchmark(config: BenchmarkConfig | None = None, *, seeds: Sequence[int] = DEFAULT_SEEDS) -> BenchmarkResult:
    r"""Samples to target for DUMP and uniform sampling at equal budget, and a paired test.

    Parameters
    ----------
    config : BenchmarkConfig, optional
        Defaults to ``BenchmarkConfig()`` (the documented setting).
    seeds : sequence of int
        One paired run per seed. Default ``DEFAULT_SEEDS`` (24 seeds).

    Returns
    -------
    BenchmarkResult

    Notes
    -----
    The test is ``scipy.stats.wilcoxon(dump, uniform, alternative="less")``
    on the per-seed samples-to-target (a difference of 0 is dropped, scipy's
    default ``zero_method="wilcox"``). It is valid at level ``config.alpha``
    for any seeds under the null hypothesis that the paired differences are
    symmetric about 0; the seeds are fixed so that the reported numbers are
    reproducible.
    """
    config = BenchmarkConfig() if config is None else config
    seeds = tuple(int(s) for s in seeds)
    if len(seeds) < 6:
        raise ValueError(f"need at least 6 seeds for a one-sided Wilcoxon test to reach p < 0.05; got {len(seeds)}.")
    t0 = time.perf_counter()
    dump = simulate("dump", config, seeds=seeds)
    uni = simulate("uniform", config, seeds=seeds)
    seconds = time.perf_counter() - t0
    d = dump.samples_to_target.astype(np.float64)
    u = uni.samples_to_target.astype(np.float64)
    if np.all(d == u):
        stat, pval = float("nan"), 1.0
    else:
        res = wilcoxon(d, u, alternative="less")
        stat, pval = float(res.statistic), float(res.pvalue)
    return BenchmarkResult(
        config=config,
        seeds=seeds,
        dump=dump,
        uniform=uni,
        median_samples_dump=float(np.median(d)),
        median_samples_uniform=float(np.median(u)),
        median_ratio=float(np.median(d / u)),
        wilcoxon_statistic=stat,
        p_value=pval,
        alpha=config.alpha,
        dump_better=bool(pval < config.alpha),
        seconds=seconds,
    )


def main(argv: Sequence[str] | None = None) -> BenchmarkResult:
    """Command line: run the benchmark and print a short report."""
    ap = argparse.ArgumentParser(prog="python -m polab.proofs_checks.curriculum_benchmark", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=len(DEFAULT_SEEDS), help="number of seeds (0..n-1)")
    ap.add_argument("--aggregation", choices=("distribution", "batch"), default=BenchmarkConfig.aggregation)
    ap.add_argument("--budget-steps", type=int, default=BenchmarkConfig.budget_steps)
    ap.add_argument("--learning-rate", type=float, default=BenchmarkConfig.learning_rate)
    ap.add_argument("--target", type=float, default=BenchmarkConfig.target)
    args = ap.parse_args(argv)
    cfg = BenchmarkConfig(
        aggregation=args.aggregation,
        budget_steps=args.budget_steps,
        learning_rate=args.learning_rate,
        target=args.target,
    )
    res = run_benchmark(cfg, seeds=range(args.seeds))
    names = cfg.names()
    print(f"config: {asdict(cfg)}")
    print(f"{len(res.seeds)} seeds, {res.seconds:.1f} s")
    for runs in (res.dump, res.uniform):
        share = runs.samples_per_distribution.sum(axis=0) / runs.samples_per_distribution.sum()
        print(
            f"  {runs.kind:8s} median samples to target {np.median(runs.samples_to_target):8.0f}  "
            f"reached {int(runs.reached.sum())}/{len(runs.reached)}  final success {runs.success[:, -1].mean():.3f}"
        )
        print("           sample share " + "  ".join(f"{n}={v:.3f}" for n, v in zip(names, share)))
        print("           final probs  " + "  ".join(f"{n}={v:.3f}" for n, v in zip(names, runs.probabilities[:, -1].mean(axis=0))))
    print(
        f"median ratio dump/uniform {res.median_ratio:.3f}; one-sided paired Wilcoxon p = {res.p_value:.2e} "
        f"(alpha {res.alpha}): DUMP better = {res.dump_better}"
    )
    return res


if __name__ == "__main__":
    main()
