r"""Checks of :mod:`polab.theory.mode_seeking` and :mod:`polab.estimators.preference_losses` on the paper's didactic bandit.

Five checks, each returning a frozen result dataclass:

(a) :func:`check_gradients`: the closed-form population gradients of
    :mod:`polab.theory.mode_seeking` against autograd, float64. For best-of-N and
    for the pairwise losses the autograd reference is the *estimator's* loss
    (:func:`polab.estimators.preference_losses.best_of_n_loss`,
    :func:`~polab.estimators.preference_losses.dpo_loss`,
    :func:`~polab.estimators.preference_losses.ipo_loss`) averaged exactly over every
    possible sample tuple, so the check ties the estimators to the theory.
(b) :func:`check_reference_policy`: the exact bin probabilities against a
    histogram of :math:`10^6` draws of :math:`\tanh(\mathrm{Cauchy}(-0.7,0.4))`
    (chi-square goodness of fit) and :math:`\mathbb{E}_{ref}R` against the
    notes' values.
(c) :func:`mass_relocation_table`: the notes' deterministic race (exact
    forward- versus reverse-KL descent toward :math:`\pi^*`) and one-step
    log-probability changes.
(d) :func:`population_dynamics`: exact expected-gradient training (Adam on the
    logits) of every sampling scheme, no sampling noise.
(e) :func:`sampled_comparison`: the paper's sample-based comparison at equal
    reward-query budgets over seeds (tabular logits, Adam), using the
    estimators' losses unchanged.

:func:`didactic_claims` turns (c)-(e) into a list of the paper's qualitative
claims and whether each held on this instance.

Run ``python -m polab.proofs_checks.mode_seeking_checks`` for a short report.

References
----------
Tajwar et al., "Preference Fine-Tuning of LLMs Should Leverage Suboptimal,
On-Policy Data", ICML 2024, arXiv 2404.14367 (setting from the authors'
``bandit_experiment/``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import chisquare

from polab.estimators.preference_losses import (
    SAMPLING_SCHEMES,
    best_of_n_loss,
    dpo_loss,
    ipo_loss,
    preference_pairs,
    scheme_loss,
)
from polab.theory.mode_seeking import (
    NUM_BINS,
    REWARD_CENTERS,
    best_of_n_logit_grad,
    bump_reward,
    forward_kl_logit_grad,
    mass_in_window,
    mass_relocation_race,
    pairwise_logit_grad,
    reference_policy,
    reverse_kl_logit_grad,
    softmax,
    tilted_optimum,
    tilted_reverse_kl_logit_grad,
)

__all__ = [
    "FLOAT64_RTOL",
    "NOTES_RACE_STEPS",
    "GradientCheck",
    "check_gradients",
    "ReferenceCheck",
    "check_reference_policy",
    "RaceRow",
    "mass_relocation_table",
    "Dynamics",
    "population_dynamics",
    "SampledComparison",
    "sampled_comparison",
    "Claim",
    "didactic_claims",
    "main",
]

#: Relative rounding allowance for float64 arithmetic (STYLE.md: "float64 about 1e-10 relative").
FLOAT64_RTOL = 1e-10
#: Race steps (forward, reverse) quoted by the notes (theory_core.md §6.3/§6.5), from a *sampled* 10 000-draw histogram.
NOTES_RACE_STEPS = {("far", 0.1): (34, 52), ("far", 0.05): (26, 25), ("near", 0.1): (4, 2), ("near", 0.05): (3, 1)}


# ---------------------------------------------------------------------------
# (a) gradients
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GradientCheck:
    """Result of :func:`check_gradients`: max relative error (by max-norm) of each closed form against autograd.

    Attributes
    ----------
    errors : dict[str, float]
        One entry per case, e.g. ``"forward_kl"``, ``"best_of_n/worst/offline"``, ``"dpo/on-policy"``.
    identity_error : float
        ``max |tilted_reverse_kl_logit_grad - reverse_kl_logit_grad(., tilted_optimum)|`` (relative), at a random theta.
    identity_error_at_reference : float
        The same for the notes' form :math:`-p\\odot A/\\beta` at :math:`p = \\pi_{ref}` (where it holds).
    notes_identity_error_off_reference : float
        The notes' form at the random theta, where it lacks the KL term: O(1), not a rounding error.
    passed : bool
        Every error <= ``FLOAT64_RTOL`` times the case's size allowance (see ``tolerance``).
    tolerance : float
    """

    errors: dict
    identity_error: float
    identity_error_at_reference: float
    notes_identity_error_off_reference: float
    passed: bool
    tolerance: float


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def check_gradients(*, generator: np.random.Generator | None = None, num_bins: int = 5, n: int = 3) -> GradientCheck:
    """Closed forms of :mod:`polab.theory.mode_seeking` against autograd (float64).

    Rewards have ties (two pairs of equal values) so the tie rules are
    exercised. Best-of-N and pairwise expectations are exact sums over all
    :math:`K^N` (resp. :math:`K^2`) sample tuples of the estimators' losses.
    Tolerance: ``FLOAT64_RTOL`` scaled by 100 for the enumerated sums (a few
    hundred float64 terms accumulate rounding; 1e-8 is still far below any
    formula error, which would be O(1)).
    """
    rng = generator if generator is not None else np.random.default_rng(0)
    K = num_bins
    theta = rng.normal(size=K)
    theta_ref = rng.normal(size=K)
    ref = softmax(theta_ref)
    q = softmax(rng.normal(size=K))
    rewards = np.round(rng.uniform(size=K), 3)
    rewards[1] = rewards[0]  # ties
    rewards[3] = rewards[2]
    beta = 0.7
    errors: dict[str, float] = {}

    def autograd(fn) -> np.ndarray:
        t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        fn(t).backward()
        return t.grad.numpy()

    qt = torch.tensor(q, dtype=torch.float64)
    errors["forward_kl"] = _rel(forward_kl_logit_grad(theta, q), autograd(lambda t: (qt * (qt.log() - torch.log_softmax(t, 0))).sum()))
    errors["reverse_kl"] = _rel(reverse_kl_logit_grad(theta, q),
                                autograd(lambda t: (torch.softmax(t, 0) * (torch.log_softmax(t, 0) - qt.log())).sum()))
    pstar = tilted_optimum(ref, rewards, beta=beta)
    ident = _rel(tilted_reverse_kl_logit_grad(theta, ref, rewards, beta=beta), reverse_kl_logit_grad(theta, pstar))
    # at p = pi_ref the KL term vanishes: the notes' -p*A/beta
    p0 = ref
    at_ref = _rel(-p0 * (rewards - p0 @ rewards) / beta, reverse_kl_logit_grad(np.log(ref), pstar))
    # without the KL term, away from the reference (the notes' unconditional statement): how far off
    p1 = softmax(theta)
    notes_off = _rel(-p1 * (rewards - p1 @ rewards) / beta, reverse_kl_logit_grad(theta, pstar))

    # best-of-N: exact expectation of the estimator's loss over all K^N tuples
    tuples = np.array(list(itertools.product(range(K), repeat=n)))  # [K^N, N]
    groups = torch.arange(tuples.shape[0]).repeat_interleave(n)
    flat = torch.as_tensor(tuples.reshape(-1))
    r_flat = torch.as_tensor(rewards, dtype=torch.float64)[flat]
    for src_name, mu_fn in (("offline", lambda p: ref), ("on-policy", lambda p: p)):
        mu = mu_fn(softmax(theta))
        w = torch.as_tensor(np.prod(mu[tuples], axis=1), dtype=torch.float64)
        for ng, c in (("none", 0.0), ("worst", 0.3), ("mean", 0.3), ("sum", 0.3)):
            def loss(t, ng=ng, c=c):
                lp = torch.log_softmax(t, 0)[flat]
                res = best_of_n_loss(lp, r_flat, groups, negative_gradient=ng, negative_coef=c)
                return (w * res.per_group).sum()
            closed = best_of_n_logit_grad(theta, mu, rewards, n, negative_gradient=ng, negative_coef=c)
            errors[f"best_of_n/{ng}/{src_name}"] = _rel(closed, autograd(loss))

    # pairwise: all ordered pairs (y1, y2), each a group of two
    pairs = np.array(list(itertools.product(range(K), repeat=2)))
    pg = torch.arange(pairs.shape[0]).repeat_interleave(2)
    pflat = torch.as_tensor(pairs.reshape(-1))
    pr = torch.as_tensor(rewards, dtype=torch.float64)[pflat]
    pp = preference_pairs(pr, pg)
    ref_lp = torch.as_tensor(np.log(ref), dtype=torch.float64)[pflat]
    for src_name, mu in (("offline", ref), ("on-policy", softmax(theta))):
        wpair = torch.as_tensor(np.prod(mu[pairs], axis=1), dtype=torch.float64)[pp.group]
        for name, kw in (("dpo", dict(loss="dpo", beta=beta)), ("cdpo", dict(loss="dpo", beta=beta, label_smoothing=0.2)),
                         ("ipo", dict(loss="ipo", beta=beta)), ("ipo-margin", dict(loss="ipo", beta=beta, target_margin=2.0))):
            def loss(t, kw=kw):
                lp = torch.log_softmax(t, 0)[pflat]
                args = (lp[pp.chosen], lp[pp.rejected], ref_lp[pp.chosen], ref_lp[pp.rejected])
                if kw["loss"] == "dpo":
                    res = dpo_loss(*args, beta=kw["beta"], label_smoothing=kw.get("label_smoothing", 0.0))
                else:
                    res = ipo_loss(*args, beta=kw["beta"], target_margin=kw.get("target_margin"))
                return (wpair * res.per_pair).sum()
            closed = pairwise_logit_grad(theta, ref, mu, rewards, **kw)
            errors[f"{name}/{src_name}"] = _rel(closed, autograd(loss))
    tol = 100 * FLOAT64_RTOL
    passed = max(errors.values()) <= tol and ident <= FLOAT64_RTOL and at_ref <= FLOAT64_RTOL
    return GradientCheck(errors=errors, identity_error=ident, identity_error_at_reference=at_ref,
                         notes_identity_error_off_reference=notes_off, passed=passed, tolerance=tol)


# ---------------------------------------------------------------------------
# (b) reference policy
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceCheck:
    """Result of :func:`check_reference_policy`.

    Attributes
    ----------
    num_samples : int
    chi2_pvalue : float
        Chi-square goodness-of-fit p-value of the sampled histogram against the exact bin probabilities.
    expected_reward : dict[str, float]
        Exact :math:`\\mathbb{E}_{ref}R` for ``"far"`` (bin 70) and ``"near"`` (bin 20).
    sampled_reward : dict[str, float]
        The same from the samples.
    reward_z : dict[str, float]
        (sampled - exact) / standard error.
    alpha : float
    passed : bool
        p-value >= alpha, |z| <= 4, and the exact values equal to the notes' 0.039 / 0.38 at the
        precision quoted (half a unit of the last digit: 0.0005 / 0.005).
    """

    num_samples: int
    chi2_pvalue: float
    expected_reward: dict
    sampled_reward: dict
    reward_z: dict
    alpha: float
    passed: bool


def check_reference_policy(*, num_samples: int = 1_000_000, generator: np.random.Generator | None = None,
                           alpha: float = 1e-3) -> ReferenceCheck:
    """Exact :func:`polab.theory.mode_seeking.reference_policy` against a sampled histogram (the authors' construction)."""
    rng = generator if generator is not None else np.random.default_rng(0)
    x = np.tanh(-0.7 + 0.4 * rng.standard_cauchy(num_samples))
    counts = np.histogram(x, bins=NUM_BINS, range=(-1.0, 1.0))[0]
    ref = reference_policy()
    pval = float(chisquare(counts, ref * counts.sum()).pvalue)
    bins = np.clip(((x + 1.0) / 2.0 * NUM_BINS).astype(int), 0, NUM_BINS - 1)
    exact, sampled, z = {}, {}, {}
    for key, c in REWARD_CENTERS.items():
        R = bump_reward(center=c)
        exact[key] = float(ref @ R)
        vals = R[bins]
        sampled[key] = float(vals.mean())
        z[key] = float((sampled[key] - exact[key]) / (vals.std(ddof=1) / math.sqrt(num_samples)))
    notes = {"far": (0.039, 0.0005), "near": (0.38, 0.005)}
    ok = pval >= alpha and all(abs(v) <= 4 for v in z.values()) and all(abs(exact[k] - v) <= h for k, (v, h) in notes.items())
    return ReferenceCheck(num_samples, pval, exact, sampled, z, alpha, bool(ok))


# ---------------------------------------------------------------------------
# (c) the deterministic race
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RaceRow:
    """One row of :func:`mass_relocation_table`.

    Attributes
    ----------
    reward : {"far", "near"}
    beta : float
    forward_steps, reverse_steps : int or None
        Exact descent steps (η = 1) until ≥ 50 % mass within ±10 bins of the peak.
    forward_mass, reverse_mass : ndarray
        Window mass per step.
    first_step_logp_change : dict[str, tuple[float, float]]
        Change of log p at bin 0 and at the peak after one step, per direction.
    notes_steps : tuple[int, int]
        The notes' (forward, reverse) values from a sampled histogram.
    """

    reward: str
    beta: float
    forward_steps: int | None
    reverse_steps: int | None
    forward_mass: np.ndarray
    reverse_mass: np.ndarray
    first_step_logp_change: dict
    notes_steps: tuple


def mass_relocation_table(*, betas=(0.1, 0.05), step_size: float = 1.0) -> list[RaceRow]:
    """Exact forward-KL versus reverse-KL descent from :math:`\\pi_{ref}` toward :math:`\\pi^*` (notes §6.5 item 2)."""
    ref = reference_policy()
    theta0 = np.log(ref)
    rows = []
    for key, c in REWARD_CENTERS.items():
        R = bump_reward(center=c)
        for beta in betas:
            target = tilted_optimum(ref, R, beta=beta)
            fwd = mass_relocation_race(theta0, lambda t: forward_kl_logit_grad(t, target), center=c, step_size=step_size)
            rev = mass_relocation_race(theta0, lambda t: reverse_kl_logit_grad(t, target), center=c, step_size=step_size)
            change = {}
            for name, g in (("forward", forward_kl_logit_grad(theta0, target)), ("reverse", reverse_kl_logit_grad(theta0, target))):
                d = np.log(softmax(theta0 - step_size * g)) - theta0
                change[name] = (float(d[0]), float(d[c]))
            rows.append(RaceRow(key, beta, fwd.steps, rev.steps, fwd.window_mass, rev.window_mass, change,
                                NOTES_RACE_STEPS.get((key, beta), (None, None))))
    return rows


# ---------------------------------------------------------------------------
# (d) exact population dynamics
# ---------------------------------------------------------------------------
#: Default hyperparameters of the didactic comparisons (chosen here; see the notes for the paper's).
DIDACTIC = dict(n=10, beta_dpo=0.1, ipo_target_margin=10.0, negative_coef=0.1, lr=0.01)


@dataclass(frozen=True)
class Dynamics:
    """Result of :func:`population_dynamics`.

    Attributes
    ----------
    reward : {"far", "near"}
    expected_reward : dict[str, ndarray [steps + 1]]
        :math:`\\mathbb{E}_p R` per scheme before training and after each step.
    window_mass : dict[str, ndarray [steps + 1]]
    final_policy : dict[str, ndarray [K]]
    """

    reward: str
    expected_reward: dict
    window_mass: dict
    final_policy: dict


def _adam(theta, grad_fn, steps, lr, record):
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    b1, b2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam defaults
    for t in range(1, steps + 1):
        g = grad_fn(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        record(theta)
    return theta


def population_dynamics(reward: str = "far", *, steps: int = 1500, schemes=None, n: int = DIDACTIC["n"],
                        beta_dpo: float = DIDACTIC["beta_dpo"], ipo_target_margin: float = DIDACTIC["ipo_target_margin"],
                        negative_coef: float = DIDACTIC["negative_coef"], lr: float = DIDACTIC["lr"]) -> Dynamics:
    """Adam on the logits with each scheme's *expected* gradient (closed forms of :mod:`polab.theory.mode_seeking`).

    Offline schemes average over samples of :math:`\\pi_{ref}`, on-policy ones
    over samples of the current policy (held fixed within the step).
    Deterministic: the infinite-sample limit of :func:`sampled_comparison`.
    """
    ref = reference_policy()
    c = REWARD_CENTERS[reward]
    R = bump_reward(center=c)
    schemes = list(SAMPLING_SCHEMES) if schemes is None else list(schemes)
    er, wm, fp = {}, {}, {}
    for name in schemes:
        sc = SAMPLING_SCHEMES[name]

        def grad(theta, sc=sc):
            mu = ref if sc.source == "reference" else softmax(theta)
            if sc.loss == "best_of_n":
                return best_of_n_logit_grad(theta, mu, R, n, negative_gradient=sc.negative_gradient,
                                            negative_coef=negative_coef if sc.negative_gradient != "none" else 0.0)
            if sc.loss == "dpo":
                return pairwise_logit_grad(theta, ref, mu, R, loss="dpo", beta=beta_dpo)
            return pairwise_logit_grad(theta, ref, mu, R, loss="ipo", beta=beta_dpo, target_margin=ipo_target_margin)

        rs, ms = [float(ref @ R)], [mass_in_window(ref, center=c)]

        def rec(theta, rs=rs, ms=ms):
            p = softmax(theta)
            rs.append(float(p @ R))
            ms.append(mass_in_window(p, center=c))

        theta = _adam(np.log(ref), grad, steps, lr, rec)
        er[name], wm[name], fp[name] = np.asarray(rs), np.asarray(ms), softmax(theta)
    return Dynamics(reward, er, wm, fp)


# ---------------------------------------------------------------------------
# (e) sample-based comparison at equal budgets
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SampledComparison:
    """Result of :func:`sampled_comparison`.

    Attributes
    ----------
    reward : {"far", "near"}
    seeds : int
    queries_per_round : int
        Reward queries per round (identical for every scheme: the equal budget).
    expected_reward : dict[str, ndarray [seeds, rounds + 1]]
        Exact :math:`\\mathbb{E}_p R` of each seed's policy after each round (before training first).
    final_policy : dict[str, ndarray [seeds, K]]
    """

    reward: str
    seeds: int
    queries_per_round: int
    expected_reward: dict
    final_policy: dict

    def final_mean_and_se(self, scheme: str) -> tuple[float, float]:
        x = self.expected_reward[scheme][:, -1]
        return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def _batch_loss(sc, rewards, ref_lp, group_ids, *, beta, target_margin, negative_coef):
    """The scheme's estimator loss on one fixed batch, as a function of the policy's log-probs.

    Pairs (a function of the rewards only) are formed once per batch with
    :func:`polab.estimators.preference_losses.preference_pairs`; each call then
    applies the estimator loss unchanged. Equal to
    :func:`polab.estimators.preference_losses.scheme_loss` on the same tensors
    (tested), without re-pairing at every inner step.
    """
    if sc.loss == "best_of_n":
        coef = negative_coef if sc.negative_gradient != "none" else 0.0
        return lambda lp: best_of_n_loss(lp, rewards, group_ids, negative_gradient=sc.negative_gradient, negative_coef=coef).loss
    pairs = preference_pairs(rewards, group_ids)
    if pairs.chosen.numel() == 0:
        return None
    c, r = pairs.chosen, pairs.rejected
    if sc.loss == "dpo":
        return lambda lp: dpo_loss(lp[c], lp[r], ref_lp[c], ref_lp[r], beta=beta).loss
    return lambda lp: ipo_loss(lp[c], lp[r], ref_lp[c], ref_lp[r], beta=beta, target_margin=target_margin).loss


def sampled_comparison(reward: str = "far", *, schemes=None, seeds: int = 5, rounds: int = 100, inner_steps: int = 15,
                       groups: int = 10, n: int = DIDACTIC["n"], beta_dpo: float = DIDACTIC["beta_dpo"],
                       ipo_target_margin: float = DIDACTIC["ipo_target_margin"],
                       negative_coef: float = DIDACTIC["negative_coef"], lr: float = DIDACTIC["lr"],
                       generator: np.random.Generator | None = None) -> SampledComparison:
    """The paper's fixed-budget comparison on tabular logits, all seeds at once.

    Each round draws ``groups x n`` actions per seed from the scheme's source
    (``pi_ref`` offline, the current policy on-policy), queries their rewards,
    and takes ``inner_steps`` Adam steps on the estimator loss of those
    samples (:func:`polab.estimators.preference_losses.scheme_loss`). The seeds are
    independent rows of one logit matrix (Adam is element-wise, and each
    seed's loss touches only its row). The authors' 100 rounds x 15 inner
    steps x 10 contexts x N=10 are the defaults; departures: one context (a
    logit vector instead of an MLP of a random context), a fresh
    :math:`\\pi_{ref}` batch each round for offline schemes (equal budgets),
    and exact evaluation of :math:`\\mathbb{E}_pR`.
    """
    rng = generator if generator is not None else np.random.default_rng(0)
    tgen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # [seeds, 100] tensors: intra-op threads only add overhead (x100 on a busy 2-core machine)
    try:
        return _sampled_comparison(reward, schemes, seeds, rounds, inner_steps, groups, n, beta_dpo, ipo_target_margin,
                                   negative_coef, lr, tgen)
    finally:
        torch.set_num_threads(threads)


def _sampled_comparison(reward, schemes, seeds, rounds, inner_steps, groups, n, beta_dpo, ipo_target_margin,
                        negative_coef, lr, tgen) -> SampledComparison:
    ref = torch.as_tensor(reference_policy(), dtype=torch.float64)
    c = REWARD_CENTERS[reward]
    R = torch.as_tensor(bump_reward(center=c), dtype=torch.float64)
    schemes = list(SAMPLING_SCHEMES) if schemes is None else list(schemes)
    S, B = seeds, groups * n
    group_ids = torch.arange(S * groups).repeat_interleave(n)
    rows = torch.arange(S).repeat_interleave(B)
    out_r, out_p = {}, {}
    for name in schemes:
        sc = SAMPLING_SCHEMES[name]
        theta = ref.log().repeat(S, 1).clone().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=lr)
        hist = [(torch.softmax(theta.detach(), 1) @ R).numpy()]
        for _ in range(rounds):
            with torch.no_grad():
                probs = ref.expand(S, -1) if sc.source == "reference" else torch.softmax(theta, 1)
                actions = torch.multinomial(probs, B, replacement=True, generator=tgen).reshape(-1)
                rew = R[actions]
                ref_lp = ref.log()[actions]
            loss_fn = _batch_loss(sc, rew, ref_lp, group_ids, beta=beta_dpo, target_margin=ipo_target_margin,
                                  negative_coef=negative_coef)
            for _ in range(inner_steps if loss_fn is not None else 0):
                opt.zero_grad()
                lp = torch.log_softmax(theta, 1)[rows, actions]
                (loss_fn(lp) * S).backward()  # S x the mean over all groups = each seed's own mean loss
                opt.step()
            hist.append((torch.softmax(theta.detach(), 1) @ R).numpy())
        out_r[name] = np.stack(hist, axis=1)
        out_p[name] = torch.softmax(theta.detach(), 1).numpy()
    return SampledComparison(reward, S, B, out_r, out_p)


# ---------------------------------------------------------------------------
# claims
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """One qualitative claim and whether it held on the didactic instance.

    Attributes
    ----------
    claim : str
    held : bool
    evidence : str
        The numbers behind the verdict.
    """

    claim: str
    held: bool
    evidence: str


def didactic_claims(races: list[RaceRow], dynamics: dict[str, Dynamics], sampled: dict[str, SampledComparison] | None = None) -> list[Claim]:
    """The paper's claims, checked against :func:`mass_relocation_table`, :func:`population_dynamics` and :func:`sampled_comparison`."""
    out = []
    by = {(r.reward, r.beta): r for r in races}
    far = by[("far", 0.1)]
    out.append(Claim("exact reverse-KL descent reaches 50% mass near the far peak (bin 70, beta=0.1) in fewer steps than forward KL",
                     bool(far.reverse_steps is not None and far.forward_steps is not None and far.reverse_steps < far.forward_steps),
                     f"forward {far.forward_steps} steps, reverse {far.reverse_steps} steps"))
    near = by[("near", 0.1)]
    out.append(Claim("exact reverse-KL descent is faster for the near peak (bin 20, beta=0.1)",
                     bool(near.reverse_steps < near.forward_steps), f"forward {near.forward_steps}, reverse {near.reverse_steps}"))
    for key, dyn in dynamics.items():
        er = {k: v[-1] for k, v in dyn.expected_reward.items()}
        for loss in ("best-of-n", "best-of-n-neg", "dpo", "ipo"):
            a, b = er.get(f"on-policy-{loss}"), er.get(f"offline-{loss}")
            if a is not None and b is not None:
                out.append(Claim(f"[{key} peak, exact expected gradients] on-policy {loss} ends with higher reward than offline {loss}",
                                 bool(a > b), f"on-policy {a:.4f} vs offline {b:.4f}"))
        for src in ("offline", "on-policy"):
            a, b = er.get(f"{src}-best-of-n-neg"), er.get(f"{src}-best-of-n")
            if a is not None and b is not None:
                out.append(Claim(f"[{key} peak, exact expected gradients] a negative gradient helps {src} best-of-N",
                                 bool(a > b), f"with {a:.4f} vs without {b:.4f}"))
    for key, cmp in (sampled or {}).items():
        ms = {k: cmp.final_mean_and_se(k) for k in cmp.expected_reward}
        for loss in ("best-of-n", "best-of-n-neg", "dpo", "ipo"):
            a, b = ms.get(f"on-policy-{loss}"), ms.get(f"offline-{loss}")
            if a is not None and b is not None:
                out.append(Claim(f"[{key} peak, {cmp.seeds} seeds, equal budget] on-policy {loss} ends with higher mean reward than offline",
                                 bool(a[0] > b[0]), f"on-policy {a[0]:.4f} ± {a[1]:.4f} vs offline {b[0]:.4f} ± {b[1]:.4f} (mean ± s.e.)"))
        for src in ("offline", "on-policy"):
            a, b = ms.get(f"{src}-best-of-n-neg"), ms.get(f"{src}-best-of-n")
            if a is not None and b is not None:
                out.append(Claim(f"[{key} peak, {cmp.seeds} seeds, equal budget] a negative gradient helps {src} best-of-N",
                                 bool(a[0] > b[0]), f"with {a[0]:.4f} ± {a[1]:.4f} vs without {b[0]:.4f} ± {b[1]:.4f}"))
    return out


def main() -> int:
    g = check_gradients()
    print(f"(a) gradients vs autograd: max rel error {max(g.errors.values()):.2e} (tol {g.tolerance:.0e}); "
          f"tilted identity {g.identity_error:.2e} (at pi_ref without KL term {g.identity_error_at_reference:.2e}; "
          f"notes' form off pi_ref {g.notes_identity_error_off_reference:.2f}); passed={g.passed}")
    r = check_reference_policy()
    print(f"(b) reference policy: chi2 p={r.chi2_pvalue:.3f}; E_ref R far={r.expected_reward['far']:.5f} "
          f"near={r.expected_reward['near']:.5f}; z={ {k: round(v, 2) for k, v in r.reward_z.items()} }; passed={r.passed}")
    races = mass_relocation_table()
    print("(c) race to 50% mass within ±10 bins (exact descent, eta=1): reward beta fwd rev (notes)")
    for row in races:
        print(f"    {row.reward:4s} {row.beta:5.2f} {row.forward_steps:4d} {row.reverse_steps:4d}  {row.notes_steps}  "
              f"one-step dlogp (bin0, peak): {row.first_step_logp_change}")
    dyn = {k: population_dynamics(k) for k in REWARD_CENTERS}
    print("(d) exact expected-gradient Adam, 1500 steps: final E_p R")
    for k, d in dyn.items():
        print("   ", k, {s: round(float(v[-1]), 4) for s, v in d.expected_reward.items()})
    sam = {k: sampled_comparison(k, rounds=40, inner_steps=15) for k in REWARD_CENTERS}
    print("(e) sampled, 5 seeds, 40 rounds x 15 steps, 100 queries/round: final E_p R mean ± s.e.")
    for k, s in sam.items():
        print("   ", k, {n: tuple(round(x, 4) for x in s.final_mean_and_se(n)) for n in s.expected_reward})
    print("claims:")
    for c in didactic_claims(races, dyn, sam):
        print(f"  [{'held' if c.held else 'did not hold'}] {c.claim}: {c.evidence}")
    return 0 if (g.passed and r.passed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
