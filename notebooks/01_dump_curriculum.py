# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # DUMP: learnability as mean |advantage|, and a synthetic curriculum
#
# DUMP (Wang, Cui, Li, Wan, Zhao, arXiv 2504.09710, 2025) samples training
# distributions by a UCB on their *learnability*, the expected absolute
# advantage. This notebook reproduces, with the library's own code:
#
# 1. the closed form of the mean |GRPO advantage| of a group of binary rewards
#    (`polab.theory.learnability`), against the core estimator
#    `polab.estimators.advantages.group_advantages` on every group (dots);
# 2. its expectation when the number of successes is Binomial(G, p), the
#    large-group limit $2\sqrt{p(1-p)}$, the RLOO analogue $2p(1-p)$ and the
#    chance $p^G + (1-p)^G$ that a group carries no signal;
# 3. the Monte Carlo, symbolic and scheduler checks of
#    `polab.proofs_checks.learnability_checks`;
# 4. the synthetic benchmark of `polab.proofs_checks.curriculum_benchmark`: DUMP
#    against uniform sampling on six Bernoulli "distributions" (two easy, two
#    hard, two unlearnable).
#
# The bound $\|\nabla J_d\| \le \Gamma\,\mathbb{E}|A|$ that motivates DUMP is
# derived in the docstring of `polab.theory.learnability`; the exact wording of the
# paper's Theorem 3.1 is unconfirmed (see that docstring). Nothing is written
# to disk: figures are shown inline.

# %%
import numpy as np
import matplotlib.pyplot as plt

from polab.theory.learnability import (
    expected_mean_abs_group_advantage,
    expected_mean_abs_rloo_advantage,
    mean_abs_advantage_limit,
    mean_abs_group_advantage,
    zero_variance_probability,
)
from polab.proofs_checks.learnability_checks import (
    check_binomial_expectation,
    check_enumeration,
    check_stationary_allocation,
    derive_symbolically,
    enumerated_mean_abs_advantage,
)
from polab.proofs_checks.curriculum_benchmark import BenchmarkConfig, DEFAULT_SEEDS, run_benchmark

rng = np.random.default_rng(20250415)  # the notebook's only seed for numpy-side randomness

# %% [markdown]
# ## 1. Mean |A| of one group against its success rate q = k/G
#
# Lines: the closed form $2\sqrt{q(1-q)}\sqrt{(G-1)/G}$ (unbiased std, as in
# verl/TRL/OpenRLHF) at every $k$. Dots: `group_advantages` (verl's
# $\epsilon = 10^{-6}$) on the explicit rewards. Dashed: the population-std
# form $2\sqrt{q(1-q)}$, which is also the large-group limit.

# %%
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
for G in (2, 4, 8, 16, 64):
    k = np.arange(G + 1)
    q = k / G
    (line,) = ax[0].plot(q, mean_abs_group_advantage(k, G, std="unbiased"), lw=1.2, label=f"G={G}")
    ax[0].plot(q, enumerated_mean_abs_advantage(G, std="unbiased"), "o", ms=3, color=line.get_color())
    ax[1].plot(q, mean_abs_group_advantage(k, G, std="population"), lw=1.2, color=line.get_color(), label=f"G={G}")
    ax[1].plot(q, enumerated_mean_abs_advantage(G, std="population"), "o", ms=3, color=line.get_color())
qq = np.linspace(0, 1, 401)
for a in ax:
    a.plot(qq, mean_abs_advantage_limit(qq), "k--", lw=1, label=r"$2\sqrt{q(1-q)}$")
    a.set_xlabel("q = k / G")
    a.legend(fontsize=8)
ax[0].set_ylabel("mean |A| in the group")
ax[0].set_title("unbiased std (N-1)")
ax[1].set_title("population std (N)")
plt.tight_layout()
plt.show()

enum = check_enumeration()
print(f"exact enumeration, G = 2..64, {enum.num_groups} groups per case: passed = {enum.passed}")
for c in enum.cases:
    print(f"  {c.std:10s} eps={c.epsilon:.0e}: max rel. error vs closed form {c.max_rel_error_no_epsilon:.1e} "
          f"(tolerance eps/s; ratio {c.max_error_over_tolerance:.3f}); vs exact-eps form {c.max_rel_error_exact_epsilon:.1e}")

# %% [markdown]
# ## 2. Expected mean |A| when k ~ Binomial(G, p)
#
# The exact finite sum for several $G$, the limit $2\sqrt{p(1-p)}$ (an upper
# bound for every $G$, by Jensen), the RLOO expectation $2p(1-p)$ (exact for
# every $G$), and the probability of a zero-variance group.

# %%
p = np.linspace(0, 1, 201)
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
for G in (2, 4, 8, 16, 64):
    ax[0].plot(p, expected_mean_abs_group_advantage(p, G), label=f"GRPO, G={G}")
    ax[1].plot(p, zero_variance_probability(p, G), label=f"G={G}")
ax[0].plot(p, mean_abs_advantage_limit(p), "k--", label=r"limit $2\sqrt{p(1-p)}$")
ax[0].plot(p, expected_mean_abs_rloo_advantage(p, 8), "k:", label=r"RLOO, any G: $2p(1-p)$")
ax[0].set_xlabel("success probability p")
ax[0].set_ylabel("E mean |A|")
ax[0].legend(fontsize=8)
ax[1].set_xlabel("success probability p")
ax[1].set_ylabel(r"$p^G + (1-p)^G$")
ax[1].set_title("fraction of zero-variance groups")
ax[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Monte Carlo, symbolic and scheduler checks
#
# Monte Carlo: 10,000 groups per $(G, p)$; the assertion $|z| \le 4$ has
# two-sided level $\approx 6.3\times 10^{-5}$ per comparison.

# %%
mc = check_binomial_expectation(generator=rng)
print(f"passed = {mc.passed}; alpha per comparison {mc.alpha_per_comparison:.1e}, family (Bonferroni) {mc.family_alpha:.1e}")
print(f"{'est':5s} {'G':>3s} {'p':>5s} {'exact':>8s} {'MC mean':>8s} {'SE':>8s} {'z':>6s}")
for r in mc.rows:
    print(f"{r.estimator:5s} {r.group_size:3d} {r.p:5.2f} {r.exact:8.5f} {r.mc_mean:8.5f} {r.standard_error:8.5f} {r.z:6.2f}")

fig, ax = plt.subplots(figsize=(7, 3))
z = np.array([r.z for r in mc.rows])
ax.plot(z, "o")
ax.axhline(mc.z_crit, color="r", ls="--")
ax.axhline(-mc.z_crit, color="r", ls="--")
ax.set_xlabel("comparison (estimator, G, p)")
ax.set_ylabel("z = (MC - exact) / SE")
plt.tight_layout()
plt.show()

# %%
sym = derive_symbolically()
print(f"sympy derivation passed = {sym.passed} ({sym.exact_cases_checked} small groups in exact arithmetic)")
print("  mean |r - mean| =", sym.mean_abs_deviation, "  population variance =", sym.variance_population)
print("  mean |A| (unbiased) =", sym.mean_abs_unbiased)
print("  E mean |A_rloo| =", sym.expected_rloo)
for name, ok in sym.identities.items():
    print(f"  {name}: {ok}")

# %%
st = check_stationary_allocation(generator=rng)
print(f"DUMP on 4 fixed arms, 1e5 samples: passed = {st.passed}")
print("  known mean |a|          ", st.means)
print("  window means            ", st.window_means.round(4))
print("  counts                  ", st.counts.astype(int))
print("  probabilities           ", st.probabilities.round(4))
print("  softmax((m + bonus)/tau)", st.predicted.round(4), f" TV {st.tv_to_predicted:.4f}")
print("  softmax(m/tau)          ", st.softmax_of_means.round(4), f" TV {st.tv_to_softmax_of_means:.4f}")

# %% [markdown]
# ## 4. Synthetic curriculum: DUMP against uniform sampling
#
# Six Bernoulli distributions $p_j = \sigma(\theta_j)$: two easy ($p_0=0.5$),
# two hard ($p_0\approx0.047$), two unlearnable ($p=0$). Each step draws 4
# prompts from the scheduler, 8 responses each, computes GRPO advantages, feeds
# the scheduler and takes the exact REINFORCE step on the drawn logits. The
# target is a mean success of 0.8 over the *learnable* distributions. See the
# docstring of `polab.proofs_checks.curriculum_benchmark` for the full model.

# %%
cfg = BenchmarkConfig()
res = run_benchmark(cfg, seeds=DEFAULT_SEEDS)
print(f"{len(res.seeds)} seeds in {res.seconds:.1f} s")
print(f"median samples to target: DUMP {res.median_samples_dump:.0f}, uniform {res.median_samples_uniform:.0f}; "
      f"median ratio {res.median_ratio:.3f}")
print(f"one-sided paired Wilcoxon p = {res.p_value:.2e} (alpha {res.alpha}); DUMP better: {res.dump_better}")

# %%
names = cfg.names()
bg = cfg.samples_per_step
steps = np.arange(cfg.budget_steps + 1)
samples = steps * bg
fig, ax = plt.subplots(1, 3, figsize=(15, 4))
# the default setting's three classes of two distributions each (see BenchmarkConfig)
classes = {"easy (d0+d1)": [0, 1], "hard (d2+d3)": [2, 3], "unlearnable (d4+d5)": [4, 5]}
print("distributions:", names, "initial logits:", cfg.initial_logits)
for label, idx in classes.items():
    ax[0].plot(samples, res.dump.probabilities[:, :, idx].sum(axis=2).mean(axis=0), label=label)
ax[0].axhline(2 / cfg.num_distributions, color="k", lw=0.8, ls=":", label="uniform, 2/K")
ax[0].set_xlabel("samples (responses)")
ax[0].set_ylabel("DUMP probability of the class (mean over seeds)")
ax[0].legend(fontsize=8)

for runs, color in ((res.dump, "C3"), (res.uniform, "C2")):
    lo, med, hi = np.percentile(runs.success, [10, 50, 90], axis=0)
    ax[1].plot(samples, med, color=color, label=f"{runs.kind} (median, 10-90%)")
    ax[1].fill_between(samples, lo, hi, color=color, alpha=0.2)
ax[1].axhline(cfg.target, color="k", lw=0.8, ls=":", label="target")
ax[1].set_xlabel("samples (responses)")
ax[1].set_ylabel("mean success over learnable distributions")
ax[1].legend(fontsize=8)

ax[2].scatter(res.uniform.samples_to_target, res.dump.samples_to_target, s=15)
lim = [0, max(res.uniform.samples_to_target.max(), res.dump.samples_to_target.max()) * 1.05]
ax[2].plot(lim, lim, "k:", lw=0.8)
ax[2].set_xlim(lim)
ax[2].set_ylim(lim)
ax[2].set_xlabel("uniform: samples to target")
ax[2].set_ylabel("DUMP: samples to target")
ax[2].set_title("one dot per seed")
plt.tight_layout()
plt.show()

# %% [markdown]
# DUMP first puts most of its mass on the easy distributions (largest |A|),
# moves it to the hard ones as the easy ones saturate (in each run it tends
# to focus on one hard distribution at a time), and keeps the unlearnable
# ones well below uniform's share while the learnable ones still produce
# signal. Once everything learnable is nearly solved, every |A| is small and
# the exploration bonus slowly sends mass back to the unlearnable
# distributions (the rise at the right of the first panel).
