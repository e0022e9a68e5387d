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
# # Policy evaluation in continuous time: the martingale approach
#
# Jia & Zhou (JMLR 2022, arXiv 2108.06655): $J$ is the value of a diffusion under a fixed policy iff
# $M_t = e^{-\beta t}J(t,X_t) + \int_0^t e^{-\beta s}r\,ds$ is a martingale. The martingale loss (ML)
# projects onto $J$; the martingale orthogonality conditions $\mathbb{E}\int\xi\,dM = 0$ give TD(0),
# TD($\lambda$), LSTD and GTD by the choice of test functions $\xi$ and of solver; the mean-square TD
# error (MSTDE) tracks the quadratic variation of $M$ instead and stays biased. The statements and
# what is derived here versus taken from the paper are in `theory/martingale_pe.py`; the closed
# forms in `theory/diffusion_values.py`. This notebook reproduces `proofs_checks/martingale_pe_checks.py`
# with figures.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from polab.proofs_checks.martingale_pe_checks import (
    check_identities,
    check_mesh_rate,
    check_mstde_bias,
    check_paths_rate,
    check_recovery,
    check_td_lambda_interpolation,
    check_test_weightings,
    derive_symbolically,
)
from polab.theory.diffusion_values import ou_euler_value, ou_value_coefficients
from polab.theory.martingale_pe import ou_euler_bias_coefficients

torch.set_num_threads(1)

# %% [markdown]
# ## 1. Closed forms, re-derived in sympy
# Each value is substituted into its Feynman–Kac equation; the OU coefficients are solved from the
# ansatz $ax^2+b$; the Euler-chain values (the exact large-sample targets of the discretised
# estimators) are checked against their one-step equations.

# %%
s = derive_symbolically()
print("passed:", s.passed)
print("Feynman-Kac residuals:", s.pde_residuals)
print("OU (a, b) from the ansatz:", s.ou_coefficients)
print("first-order OU Euler bias (c1, c2):", s.ou_bias_series)
print(f"LQ Lyapunov residual: {s.lq_lyapunov_residual:.1e}")
i = check_identities()
print(f"float64 identities: ML = TD(1) to {i.ml_vs_td1:.1e}; offline TD -> LSTD to {i.offline_td_vs_lstd:.1e}")

# %% [markdown]
# ## 2. Every estimator on every test process
# Brownian motion with terminal $x^2$, OU with running $x^2$, GBM, and a 2-d LQ system; closed-form
# estimators with sandwich standard errors (Bonferroni $z$ at $\alpha=0.01$). The estimates sit within
# a few SEs of the Euler-chain value, which differs from $J$ by $O(\Delta t)$.

# %%
r = check_recovery(online=False)
print(f"passed: {r.passed}  (z = {r.z:.2f}, {r.num_paths} paths, {r.num_steps} steps)")
for row in r.rows:
    print(f"{row.problem:8s} {row.estimator:13s} theta={np.round(row.theta, 4)}  euler={np.round(row.theta_euler, 4)}  "
          f"true={np.round(row.theta_true, 4)}  max|z|={row.max_z_euler:.2f}")

# %% [markdown]
# ## 3. Error against the mesh (derived order 1) and against the number of paths (order $-1/2$)

# %%
mr = check_mesh_rate()
pr = check_paths_rate()
kappa = sigma = beta = 1.0
a_true = ou_value_coefficients(kappa=kappa, sigma=sigma, beta=beta)[0]
c1 = ou_euler_bias_coefficients(kappa=kappa, sigma=sigma, beta=beta)[0]
fine = np.geomspace(0.01, 0.3, 30)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].loglog(mr.x, mr.errors, "o", label=f"LSTD, slope {mr.slope:.2f} (margin {mr.margin:.2f})")
axes[0].loglog(fine, [abs(ou_euler_value(kappa=kappa, sigma=sigma, beta=beta, dt=h)[0] - a_true) for h in fine], "-",
               label=f"exact Euler-chain bias, slope {mr.exact_slope:.2f}")
axes[0].loglog(fine, c1 * fine, ":", label=r"first order $c_1\Delta t$")
axes[0].set_xlabel(r"mesh $\Delta t$"); axes[0].set_ylabel(r"$|\hat a - a|$ (OU)")
axes[0].set_title("error vs mesh"); axes[0].legend(fontsize=8)
axes[1].loglog(pr.x, pr.errors, "o-", label=f"LSTD RMSE, slope {pr.slope:.2f} (margin {pr.margin:.2f})")
n = np.asarray(pr.x, dtype=float)
axes[1].loglog(n, pr.errors[0] * (n / n[0]) ** -0.5, ":", label=r"$n^{-1/2}$")
axes[1].set_xlabel("paths"); axes[1].set_ylabel("RMSE (Brownian)"); axes[1].set_title("error vs paths")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()
print("mesh rate passed:", mr.passed, "| paths rate passed:", pr.passed)

# %% [markdown]
# ## 4. The mean-square TD error keeps its bias as the mesh shrinks
# Brownian family $J^\theta = x^2 + \theta_1(T-t)x^2 + \theta_2(T-t)$, truth $\theta_1 = 0$. The MSTDE
# minimiser tends to the minimiser of the quadratic variation, $\theta_1 = -1.6$ here; ML stays at 0.

# %%
m = check_mstde_bias()
fig, ax = plt.subplots(figsize=(6, 4))
ax.errorbar(m.meshes, m.mstde_theta1, yerr=m.z * np.array(m.mstde_se1), fmt="o-", label="MSTDE")
ax.errorbar(m.meshes, m.ml_theta1, yerr=m.z * np.array(m.ml_se1), fmt="s-", label="ML")
ax.axhline(0.0, color="k", lw=0.8, label="truth")
ax.axhline(m.limit_theta1, color="C3", ls="--", label="quadratic-variation minimiser")
ax.set_xscale("log"); ax.set_xlabel(r"mesh $\Delta t$"); ax.set_ylabel(r"$\hat\theta_1$")
ax.set_title(f"MSTDE bias (bars: z={m.z:.2f} SE)"); ax.legend(fontsize=8)
plt.show()
print(f"passed: {m.passed}; bias slope {m.bias_slope:.3f}; extrapolated limit {m.extrapolated_theta1:.3f} "
      f"+- {m.extrapolated_se:.3f} vs {m.limit_theta1:.3f}")

# %% [markdown]
# ## 5. TD($\lambda$) interpolates between TD(0) and ML
# A misspecified family $J^\theta = x^2 + \theta(T-t)^2$: TD(0) tends to $2/3$, ML to $5/4$ (derived);
# LSTD($\lambda$) moves monotonically from one to the other and equals each exactly at the endpoints.

# %%
ic = check_td_lambda_interpolation()
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(ic.lambdas, ic.theta, "o-", label=r"LSTD($\lambda$)")
ax.axhline(ic.theta_td0, color="C1", ls="--", label="TD(0)")
ax.axhline(ic.theta_ml, color="C2", ls="--", label="ML")
ax.set_xlabel(r"$\lambda$ (decay per unit time)"); ax.set_ylabel(r"$\hat\theta$"); ax.legend()
ax.set_title("TD(lambda) between TD(0) and the martingale loss")
plt.show()
print("passed:", ic.passed)

# %% [markdown]
# ## 6. TD test functions: the paper's weight $e^{-\beta t}$, the squared $e^{-2\beta t}$, none
# The martingale orthogonality condition with the paper's test function $\xi_t=\partial_\theta J^\theta(t,X_t)$
# and $dM_t = e^{-\beta t}(dJ + r\,dt - \beta J\,dt)$ weights each TD error by $e^{-\beta t}$ (the default,
# `test_weighting="paper"`); putting $e^{-\beta t}$ into $\xi$ as well gives $e^{-2\beta t}$ (`"squared"`, polab's
# earlier default); the usual discounted TD(0) uses no weight (`"none"`). With the value in the feature span
# (OU: $x^2, 1$; LQ: quadratics) all three have the same limit, the Euler-chain value; their spreads over
# independent replications of LSTD(0) (same paths for the three) differ. Ratios are variances divided by the
# paper form's.

# %%
tw = check_test_weightings(replications=20, num_paths=200, num_steps=80)
print(f"all agree with the Euler-chain value: {tw.passed} (max |z| {tw.max_abs_z:.2f} <= {tw.z:.2f})")
print(f"{'problem':8s} {'weighting':9s} {'mean estimate':36s} {'Euler value':36s} variance / paper's")
for (p, w), ratio in tw.variance_ratio.items():
    print(f"{p:8s} {w:9s} {str(np.round(tw.mean[(p, w)], 3)):36s} {str(np.round(tw.theta_euler[p], 3)):36s} {np.round(ratio, 2)}")

# %% [markdown]
# ## 7. MSTDE with a finite horizon: the terminal jump
# When the family does not impose $J^\theta(T,\cdot)=h$, the last increment carries the jump
# $e^{-\beta T}(h - J^\theta(T^-))$ and the MSTDE limit adds $e^{-2\beta T}\mathbb{E}(h-J^\theta(T^-))^2$ to the
# quadratic variation. Family $J^\theta=\theta x^2$, $h=x^2$, Brownian motion: limit $2/3$ (0 without the jump term);
# the exact discrete minimiser approaches it at first order.

# %%
from polab.theory.martingale_pe import mstde_terminal_jump_euler, mstde_terminal_jump_limit  # noqa: E402

lim = mstde_terminal_jump_limit(sigma=1.0, horizon=1.0, x0_second_moment=1.0)
for N in (10, 100, 1000):
    th = mstde_terminal_jump_euler(sigma=1.0, horizon=1.0, x0_second_moment=1.0, num_steps=N)
    print(f"N={N:5d}: discrete minimiser {th:.5f}, limit {lim:.5f}, N * gap {N * (th - lim):.3f}")
