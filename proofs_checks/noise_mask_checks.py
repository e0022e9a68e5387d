r"""Verification of the noise-mask REINFORCE estimators (:mod:`polab.estimators.noise_mask`).

Checks (each returns a frozen result dataclass):

(a) :func:`check_by_enumeration`: a batch of ``n`` images, each with its own
    Bernoulli cell logits (a conditional policy over ``cells`` binary cells)
    and its own reward table :math:`R_i(m)`. The expectation of each
    estimator is a finite sum over all :math:`2^{n\cdot\text{cells}}` joint
    masks, compared with autograd's gradient of the exact objective
    :math:`J=\frac1n\sum_i\sum_m\pi_i(m)R_i(m)`. Expected ratios
    (derived in the estimator's docstring): leave-one-out and no baseline 1,
    batch-mean baseline :math:`1-1/n`, the authors' objective with summed cell
    log-densities :math:`1/n` (as a descent direction on the cost
    :math:`-R`); with their log-sum-exp no ratio (a different direction).
(b) :func:`check_beta_monte_carlo`: the paper's Beta family, reward
    :math:`R(m)=w^\top m + v^\top m^2 + c`, whose expectation is a closed form in
    the Beta moments; the Monte Carlo mean of the estimator within
    ``z`` standard errors of the exact gradient.

Run ``python -m polab.proofs_checks.noise_mask_checks`` for a short report (seconds).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from polab.estimators.noise_mask import authors_policy_loss, mask_cell_log_prob, reinforce_mask_loss, sample_mask

__all__ = ["EnumerationResult", "BetaMonteCarloResult", "check_by_enumeration", "check_beta_monte_carlo", "main"]

ESTIMATORS = ("leave-one-out", "none", "batch-mean", "authors-sum", "authors-logsumexp")


@dataclass(frozen=True)
class EnumerationResult:
    """Exact expectations of every estimator and their relation to the exact gradient.

    Attributes
    ----------
    exact : ndarray [n, cells]
        :math:`\\nabla J` (rewards) by autograd of the finite sum.
    expected : dict of str to ndarray [n, cells]
        :math:`\\mathbb E[-\\nabla L]` of each estimator's loss (``authors-*``: cost = -reward).
    ratio : dict of str to float
        Least-squares factor c in expected ~ c * exact.
    residual : dict of str to float
        Relative residual ``|expected - c exact| / |expected|`` (0 when parallel).
    cosine : dict of str to float
    """

    exact: np.ndarray
    expected: dict
    ratio: dict
    residual: dict
    cosine: dict
    n: int
    cells: int

    @property
    def passed(self) -> bool:
        n = self.n
        want = {"leave-one-out": 1.0, "none": 1.0, "batch-mean": 1 - 1 / n, "authors-sum": 1 / n}
        ok = all(abs(self.ratio[k] - v) < 1e-9 and self.residual[k] < 1e-9 for k, v in want.items())
        return ok and self.residual["authors-logsumexp"] > 1e-3


def _loss(name: str, masks, th, reward):
    if name in ("leave-one-out", "none", "batch-mean"):
        lp = mask_cell_log_prob(masks, th, family="bernoulli").sum(-1)
        return reinforce_mask_loss(lp, reward, baseline=name)
    reduction = "sum" if name == "authors-sum" else "logsumexp"
    # the authors minimise (batch-mean cost) x rho; cost = -reward, detached (the policy part only)
    return authors_policy_loss(mask_cell_log_prob(masks, th, family="bernoulli"), (-reward).detach(), reduction=reduction)


def check_by_enumeration(*, n: int = 2, cells: int = 3, generator: torch.Generator) -> EnumerationResult:
    """Exact expectation of each estimator on a random conditional Bernoulli instance (float64)."""
    if n < 2 or cells < 1 or (2 ** cells) ** n > 5000:
        raise ValueError(f"need n >= 2, cells >= 1 and at most 5000 joint masks; got n={n}, cells={cells}.")
    masks = torch.tensor(list(itertools.product([0.0, 1.0], repeat=cells)), dtype=torch.float64)
    K = len(masks)
    logits = torch.randn(n, cells, generator=generator, dtype=torch.float64)
    table = torch.randn(n, K, generator=generator, dtype=torch.float64) - 2.0  # negative rewards: a positive cost -R
    th = logits.clone().requires_grad_(True)
    lp = torch.stack([mask_cell_log_prob(masks, th[i].expand(K, cells), family="bernoulli").sum(-1) for i in range(n)])
    (exact,) = torch.autograd.grad((lp.exp() * table).sum(1).mean(), th)
    p = lp.detach().exp()
    expected = {k: torch.zeros_like(logits) for k in ESTIMATORS}
    rows = torch.arange(n)
    for combo in itertools.product(range(K), repeat=n):
        c = list(combo)
        w = torch.prod(p[rows, c])
        for k in ESTIMATORS:
            t = logits.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(_loss(k, masks[c], t, table[rows, c]), t)
            expected[k] -= w * g
    e = exact.flatten()
    ratio, residual, cosine = {}, {}, {}
    for k, v in expected.items():
        f = v.flatten()
        c = float(f @ e / (e @ e))
        ratio[k] = c
        residual[k] = float((f - c * e).norm() / f.norm().clamp_min(1e-300))
        cosine[k] = float(f @ e / (f.norm() * e.norm()))
    return EnumerationResult(exact=exact.numpy(), expected={k: v.numpy() for k, v in expected.items()}, ratio=ratio,
                             residual=residual, cosine=cosine, n=n, cells=cells)


@dataclass(frozen=True)
class BetaMonteCarloResult:
    """Monte Carlo mean of the Beta-family estimator against the closed-form gradient (per coordinate)."""

    exact: np.ndarray
    estimate: np.ndarray
    standard_error: np.ndarray
    num_samples: int
    z: float

    @property
    def max_z(self) -> float:
        return float(np.max(np.abs(self.estimate - self.exact) / self.standard_error))

    @property
    def passed(self) -> bool:
        return self.max_z <= self.z


def check_beta_monte_carlo(*, num_samples: int = 20000, baseline: str = "leave-one-out", z: float = 5.0,
                           generator: torch.Generator) -> BetaMonteCarloResult:
    """Estimator mean vs the exact gradient of E[w.m + v.m^2 + 3] under independent Beta cells (float64).

    Parameters are 3 log-concentration pairs drawn from ``generator``; E m = a/(a+b) and
    E m^2 = a(a+1)/((a+b)(a+b+1)) give the objective in closed form, differentiated by autograd.
    """
    a0 = torch.randn(3, generator=generator, dtype=torch.float64) * 0.5
    b0 = torch.randn(3, generator=generator, dtype=torch.float64) * 0.5
    w = torch.randn(3, generator=generator, dtype=torch.float64)
    v = torch.randn(3, generator=generator, dtype=torch.float64)
    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    al, be = a.exp(), b.exp()
    m1, m2 = al / (al + be), al * (al + 1) / ((al + be) * (al + be + 1))
    exact = torch.cat(torch.autograd.grad((w * m1 + v * m2).sum(), (a, b)))
    A = a0.expand(num_samples, 3).clone().requires_grad_(True)
    B = b0.expand(num_samples, 3).clone().requires_grad_(True)
    s = sample_mask(A, B, family="beta", generator=generator)
    R = (w * s.mask + v * s.mask ** 2).sum(1) + 3.0
    gA, gB = torch.autograd.grad(reinforce_mask_loss(s.log_prob, R, baseline=baseline), (A, B))
    rows = -num_samples * torch.cat([gA, gB], 1)  # each row: one draw's estimate
    return BetaMonteCarloResult(exact=exact.numpy(), estimate=rows.mean(0).numpy(),
                                standard_error=(rows.std(0) / math.sqrt(num_samples)).numpy(), num_samples=num_samples, z=z)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (2, 3):
        r = check_by_enumeration(n=n, generator=g)
        print(f"(a) enumeration, batch {n}, {r.cells} binary cells: passed={r.passed}")
        for k in ESTIMATORS:
            print(f"    {k:18s} E[estimate] = {r.ratio[k]:+.6f} x grad J   (residual {r.residual[k]:.1e}, cosine {r.cosine[k]:+.3f})")
    for baseline in ("none", "leave-one-out"):
        m = check_beta_monte_carlo(baseline=baseline, generator=g)
        print(f"(b) Beta Monte Carlo, baseline {baseline}: max |error|/SE = {m.max_z:.2f} (<= {m.z}): passed={m.passed}; "
              f"mean SE {m.standard_error.mean():.4f}")


if __name__ == "__main__":
    main()
