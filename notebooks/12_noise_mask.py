# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Policy-gradient-driven noise masks: which REINFORCE form is the gradient?
#
# Yavuz & Yang (arXiv 2406.14568) pretrain a classifier on images multiplied by a noise mask
# drawn from a conditional policy (per-cell Beta distributions) and train the policy by
# REINFORCE on the classifier's cross-entropy. `estimators/noise_mask.py` holds the mask
# policy's log-density and sampler, the REINFORCE surrogate with a baseline, the authors'
# joint objective (batch-mean cross-entropy times a log-sum-exp of the cell log-densities,
# from their code), and the mask operator (upsampling and blur).
#
# 1. On a tiny conditional Bernoulli policy (3 binary cells, batches of 2 and 3 images) the
#    expectation of every estimator is a finite sum: leave-one-out and no baseline give the
#    gradient exactly, the batch-mean baseline $(1-1/n)$ times it, the authors' form with
#    summed log-densities $1/n$ times it, and with their log-sum-exp a different direction.
# 2. For the paper's Beta family, a Monte Carlo check against a closed form.
# 3. The data proxy (scikit-learn digits with per-"modality" transformations; a stand-in for
#    RadImageNet, which cannot be downloaded) and what a mask does to it.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from polab.estimators.noise_mask import sample_mask, upsample_mask
from polab.proofs_checks.noise_mask_checks import ESTIMATORS, check_beta_monte_carlo, check_by_enumeration

g = torch.Generator().manual_seed(0)

# %% [markdown]
# ## 1. Exact expectations by enumeration

# %%
results = {n: check_by_enumeration(n=n, generator=g) for n in (2, 3)}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for ax, (n, r) in zip(axes, results.items()):
    x = np.arange(len(ESTIMATORS))
    ax.bar(x - 0.2, [r.ratio[k] for k in ESTIMATORS], width=0.4, label="projection ratio c")
    ax.bar(x + 0.2, [r.cosine[k] for k in ESTIMATORS], width=0.4, label="cosine with grad J")
    for want in (1.0, 1 - 1 / n, 1 / n):
        ax.axhline(want, color="grey", lw=0.6, ls=":")
    ax.set_xticks(x, ESTIMATORS, rotation=25, fontsize=8)
    ax.set_ylabel("E[estimate] vs exact gradient")
    ax.set_title(f"batch n = {n}, 3 binary cells (exact, passed={r.passed})", fontsize=9)
    ax.legend(fontsize=8)
    for k in ESTIMATORS:
        print(f"n={n} {k:18s} c={r.ratio[k]:+.6f} residual={r.residual[k]:.1e} cosine={r.cosine[k]:+.3f}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Beta cells: Monte Carlo mean vs the closed-form gradient

# %%
fig, ax = plt.subplots(figsize=(6, 3.6))
for j, baseline in enumerate(("none", "leave-one-out")):
    m = check_beta_monte_carlo(num_samples=8000, baseline=baseline, generator=g)
    x = np.arange(len(m.exact)) + 0.15 * (2 * j - 1)
    ax.errorbar(x, m.estimate, yerr=2 * m.standard_error, fmt="o", capsize=3, label=f"estimate, baseline {baseline} (+-2 SE)")
    print(f"baseline {baseline}: max |error|/SE {m.max_z:.2f}, mean SE {m.standard_error.mean():.4f}, passed={m.passed}")
ax.scatter(np.arange(len(m.exact)), m.exact, marker="_", s=300, color="k", label="exact (closed form)", zorder=3)
ax.set_xlabel("parameter (log alpha_1..3, log beta_1..3)")
ax.set_ylabel("d E[R] / d parameter")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 3. The proxy data and a mask (the authors' initial policy: log-concentrations ~ U(0, 1))

# %%
from polab.scaled.data.digits_modalities import make_digits_modalities

ds = make_digits_modalities(size=16, generator=np.random.default_rng(0))
la = torch.rand(1, 64, generator=g)
lb = torch.rand(1, 64, generator=g)
fig, axes = plt.subplots(3, len(ds.modality_names), figsize=(9, 7))
for k, name in enumerate(ds.modality_names):
    i = int(np.flatnonzero(ds.modality == k)[0])
    img = torch.as_tensor(ds.images[i:i + 1])
    mask = upsample_mask(sample_mask(la, lb, generator=g).mask, grid=8, size=16, kernel_size=5, sigma=2.0)
    for r, (im, what) in enumerate(((img, "image"), (mask, "mask (grid 8, blur)"), (img * mask, "image x mask"))):
        axes[r][k].imshow(im[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r][k].set_title(f"{name}: {what}", fontsize=7)
        axes[r][k].axis("off")
fig.tight_layout()
plt.show()
