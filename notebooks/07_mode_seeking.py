# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Mode-seeking versus mode-covering preference fine-tuning
#
# Tajwar et al., "Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data" (ICML 2024),
# on the paper's didactic bandit: 100 bins, a reference policy that is the histogram of
# tanh(Cauchy(-0.7, 0.4)) (exact bin probabilities here), and rewards exp(-((a - c)/10)^2) peaked at
# c = 70 (far from the reference's mass) or c = 20 (near it).
#
# Everything below calls `polab.theory.mode_seeking`, `polab.estimators.preference_losses` and
# `polab.proofs_checks.mode_seeking_checks`; the notebook defines no library logic.

# %%
import matplotlib.pyplot as plt
import numpy as np

from polab.proofs_checks.mode_seeking_checks import (
    check_gradients,
    didactic_claims,
    mass_relocation_table,
    population_dynamics,
    sampled_comparison,
)
from polab.theory.mode_seeking import REWARD_CENTERS, best_of_n_distribution, bump_reward, reference_policy, tilted_optimum

ref = reference_policy()
bins = np.arange(ref.size)
fig, ax = plt.subplots(figsize=(7, 3))
ax.bar(bins, ref, color="0.6", label=r"$\pi_{ref}$")
for key, c in REWARD_CENTERS.items():
    R = bump_reward(center=c)
    ax.plot(bins, R * ref.max(), label=f"reward peaked at {c} (scaled), E_ref R = {ref @ R:.4f}")
ax.set_xlabel("bin")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 1. Exact gradients agree with autograd
# Forward KL, reverse KL, the reward-tilted reverse KL, best-of-N with every negative-gradient variant,
# DPO, conservative DPO and IPO: closed forms of `polab.theory.mode_seeking` against autograd of the
# estimators' losses averaged exactly over all sample tuples (float64).

# %%
g = check_gradients()
print(f"max relative error {max(g.errors.values()):.1e} (tolerance {g.tolerance:.0e}); passed = {g.passed}")
print(f"tilted reverse-KL identity: {g.identity_error:.1e}; the notes' -p*A/beta form holds at pi_ref "
      f"({g.identity_error_at_reference:.1e}) but not elsewhere ({g.notes_identity_error_off_reference:.2f} relative)")

# %% [markdown]
# ## 2. The deterministic race: forward KL is *not* always slower
# Exact gradient descent (step 1) from pi_ref toward pi* ∝ pi_ref exp(R/beta); steps until 50 % of
# the mass lies within ±10 bins of the peak.

# %%
races = mass_relocation_table()
fig, axes = plt.subplots(1, 4, figsize=(14, 3), sharey=True)
for ax, row in zip(axes, races):
    ax.plot(row.forward_mass, label=f"forward KL ({row.forward_steps} steps)")
    ax.plot(row.reverse_mass, label=f"reverse KL ({row.reverse_steps} steps)")
    ax.axhline(0.5, color="k", lw=0.5)
    ax.set_title(f"{row.reward} peak, beta={row.beta}")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
axes[0].set_ylabel("mass within ±10 bins")
plt.show()
for row in races:
    print(f"{row.reward:4s} beta={row.beta}: forward {row.forward_steps}, reverse {row.reverse_steps} "
          f"(notes, sampled histogram: {row.notes_steps})")

# %% [markdown]
# ## 3. Exact expected-gradient training of each scheme (no sampling noise)
# Adam (lr 0.01) on the logits with the expected gradient of each loss, samples drawn from pi_ref
# (offline) or from the current policy (on-policy). Offline best-of-N converges to the law of the best
# of 10 draws from pi_ref, whose reward is bounded by what pi_ref covers.

# %%
dyn = {k: population_dynamics(k, steps=1000) for k in REWARD_CENTERS}
print("reward of the best-of-10 law of pi_ref, far peak:",
      round(float(best_of_n_distribution(ref, bump_reward(center=70), 10) @ bump_reward(center=70)), 4))
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), sharey=True)
for ax, (key, d) in zip(axes, dyn.items()):
    for i, (name, v) in enumerate(d.expected_reward.items()):
        ax.plot(v, label=name, ls="-" if name.startswith("on-policy") else "--", color=f"C{i % 10}")
    ax.set_title(f"{key} peak: exact expected gradients")
    ax.set_xlabel("Adam step")
axes[0].set_ylabel("E_p[R]")
axes[1].legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 4. Sampled comparison at equal reward-query budgets (5 seeds)
# Each round: 10 groups of N = 10 samples (100 reward queries) from the scheme's source, then 15 Adam
# steps on the estimator loss; mean ± s.e. over 5 seeds of the exact policy reward.

# %%
schemes = ["offline-best-of-n", "offline-best-of-n-neg", "offline-dpo", "offline-ipo",
           "on-policy-best-of-n", "on-policy-best-of-n-neg", "on-policy-dpo", "on-policy-ipo"]
sam = {k: sampled_comparison(k, schemes=schemes, rounds=40, inner_steps=15) for k in REWARD_CENTERS}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), sharey=True)
for ax, (key, s) in zip(axes, sam.items()):
    for i, name in enumerate(schemes):
        Y = s.expected_reward[name]
        m, se = Y.mean(0), Y.std(0, ddof=1) / np.sqrt(Y.shape[0])
        x = np.arange(Y.shape[1]) * s.queries_per_round
        ax.plot(x, m, label=name, ls="-" if name.startswith("on-policy") else "--", color=f"C{i}")
        ax.fill_between(x, m - se, m + se, color=f"C{i}", alpha=0.2)
    ax.set_title(f"{key} peak: sampled, 5 seeds")
    ax.set_xlabel("reward queries")
axes[0].set_ylabel("E_p[R]")
axes[1].legend(fontsize=7)
plt.show()

# %% [markdown]
# Learned distributions on the far peak (seed 0):

# %%
fig, ax = plt.subplots(figsize=(8, 3))
ax.bar(bins, ref, color="0.8", label="pi_ref")
for name in ("offline-best-of-n", "on-policy-best-of-n", "offline-dpo", "on-policy-dpo"):
    ax.plot(bins, sam["far"].final_policy[name][0], label=name)
ax.plot(bins, tilted_optimum(ref, bump_reward(center=70), beta=0.1), "k:", label="pi* (beta = 0.1)")
ax.set_yscale("log")
ax.set_ylim(1e-6, 1)
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 5. Which claims held on this instance

# %%
for c in didactic_claims(races, dyn, sam):
    print(f"[{'held' if c.held else 'did not hold'}] {c.claim}: {c.evidence}")
