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
# # Distilling teachers into one partially-observing student: DAgger versus behaviour cloning
#
# Wang, Sun, Erickson, Held, "One Policy to Dress Them All" (RSS 2023) train one RL teacher per
# range of arm poses and distil them, DAgger style, into one student that sees a partial point cloud.
# The method-level pieces are in `polab.estimators.distillation`; this notebook checks two of its
# claims on toys where the answer is known exactly (the notebook defines no library logic):
#
# 1. **Partial observation**: a linear teacher over the full state, distilled into a linear student
#    over a subset of coordinates, reaches the least-squares optimum $K\Sigma P^\top(P\Sigma P^\top)^{-1}$
#    and leaves exactly the Schur-complement residual (what the hidden coordinates explain).
# 2. **Why DAgger**: on a two-state "tightrope" MDP where the student slips with probability
#    $q$ per step, behaviour cloning (iteration 0) never sees the fallen state and pays a cost
#    that grows like $qH^2/2$; one DAgger iteration on the student's own states brings it to $\approx qH$.
#    Costs are computed exactly (no sampling).
#
# The loss and the use of DAgger are reconstructed (the paper's code was not found); see the module docstring.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from polab.estimators.distillation import action_regression_loss, linear_distillation_solution, tabular_dagger

g = torch.Generator().manual_seed(0)
d, n = 6, 500
B = torch.randn(d, d, generator=g, dtype=torch.float64)
sigma = B @ B.T / d + 0.2 * torch.eye(d, dtype=torch.float64)
K = torch.randn(2, d, generator=g, dtype=torch.float64)  # linear teacher a = K s
q_, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
S = n**0.5 * q_ @ torch.linalg.cholesky(sigma).T  # states with empirical second moment exactly Sigma
rows = []
for k in range(1, d + 1):
    P = torch.eye(d, dtype=torch.float64)[:k]  # the student sees the first k coordinates
    W = linear_distillation_solution(S @ P.T, S @ K.T)
    W_star = K @ sigma @ P.T @ torch.linalg.inv(P @ sigma @ P.T)
    loss = action_regression_loss(S @ P.T @ W.T, S @ K.T).loss.item()
    schur = torch.trace(K @ (sigma - sigma @ P.T @ torch.linalg.inv(P @ sigma @ P.T) @ P @ sigma) @ K.T).item()
    rows.append((k, (W - W_star).abs().max().item(), loss, schur))
print(" k  max|W - W*|   distillation loss   Schur residual")
for k, err, loss, schur in rows:
    print(f"{k:2d}  {err:10.2e}   {loss:17.6f}   {schur:14.6f}")
assert all(err < 1e-8 and abs(loss - schur) < 1e-8 for _, err, loss, schur in rows)

# %% [markdown]
# The residual falls to zero as the view becomes complete: a partial view costs exactly what the
# hidden coordinates predict of the teacher's action beyond the visible ones.

# %%
m, eps = 4, 0.02
P = np.zeros((2, m, 2))
P[0, 0, 0] = 1.0          # on the rope: action 0 stays ...
P[0, 1:, 1] = 1.0         # ... any other falls
P[1, 1, 0] = 1.0          # fallen: action 1 climbs back ...
P[1, [0, 2, 3], 1] = 1.0  # ... any other stays down
teacher = np.eye(m)[[0, 1]]
q, horizons = eps * (m - 1) / m, np.arange(5, 205, 10)
bc, dagger = [], []
for H in horizons:
    res = tabular_dagger(P, teacher, np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0, 1]), num_observations=2,
                         horizon=int(H), iterations=2, schedule="indicator", greedy=True, execution_noise=eps,
                         unseen=np.eye(m)[0])
    bc.append(res.costs[0])
    dagger.append(res.costs[1])
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.plot(horizons, bc, "o-", label="behaviour cloning (DAgger iteration 0, beta=1)")
ax.plot(horizons, dagger, "s-", label="DAgger iteration 1 (indicator schedule)")
ax.plot(horizons, q * horizons**2 / 2, "k:", label=r"$qH^2/2$")
ax.plot(horizons, q * horizons, "k--", label=r"$qH$")
ax.set_xlabel("horizon H")
ax.set_ylabel("expected steps fallen (exact)")
ax.set_title(f"Tightrope MDP, {m} actions, student error eps={eps} (q={q:.3f})", fontsize=9)
ax.set_ylim(0, max(bc) * 1.05)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
print(f"H = {horizons[-1]}: BC {bc[-1]:.2f} vs DAgger {dagger[-1]:.3f} steps fallen (teacher: 0)")
assert bc[-1] > 10 * dagger[-1]
