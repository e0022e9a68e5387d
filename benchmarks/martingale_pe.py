r"""Timings of the martingale policy-evaluation estimators on 10^5 paths x 1000 steps (CPU, float64).

Workload (issue 3): a 1-d Ornstein–Uhlenbeck process
:math:`dX = -\kappa X\,dt + \sigma\,dW` (``kappa = sigma = 1``), running reward
:math:`x^2`, discount rate ``beta = 1``, infinite horizon observed on
:math:`[0, 10]` with 1000 Euler–Maruyama steps (:func:`polab.estimators.sde.euler_maruyama`),
:math:`X_0 \sim N(0, 1)`, linear value :math:`V = \phi^\top\theta` with the
polynomial features :math:`\phi(x) = (1, x, x^2)` (realisable: the value is
:math:`a x^2 + b`, :func:`polab.theory.diffusion_values.ou_value`).

Memory: 10^5 x 1001 float64 states alone take 0.8 GB and the per-step
intermediates of a moment pass several times that, so paths are simulated
and processed in chunks of ``--chunk`` paths and every estimator sums
sufficient statistics over the chunks (:class:`polab.estimators.policy_evaluation.LinearMoments`
and its ``+``); nothing of size ``paths x steps`` outlives a chunk. Every
estimator is chunked exactly:

========================  =====================================================================
estimator                 chunked as
========================  =====================================================================
ML, LSTD(0), LSTD(1/2),   moments summed over chunks, then :func:`solve_linear` (with the
GTD (both weightings),    sandwich covariance, as the closed forms compute by default)
MSTDE
TD(0) offline             moments summed, then :func:`td_lambda_offline_from_moments`
TD(0) online              :func:`td_lambda_online` on each chunk, ``theta0`` = the previous
                          chunk's last iterate (identical updates when ``--chunk`` is a
                          multiple of ``--online-group``)
GTD two-timescale         :func:`gtd_update` on the mean moments of each group of paths, as
                          :func:`gtd_online` does (the same updates, streamed)
========================  =====================================================================

The online solvers update once per time step per group of paths running in
parallel (``--online-group``, ``--gtd-group``, default 100, like vectorised
environments); one path per update would mean 10^8 Python-level updates
for TD(0), hours on a CPU. Small chunks are faster than large ones here
(per chunk of 200 paths x 1000 steps the tensors stay in cache; chunks of
5000 were 2-4x slower per path on one thread).

Each row's time is that estimator computed from the paths alone
(moment passes are not shared between rows). Simulation and features are
timed once in their own row. Before the timings, the chunked estimates are
compared with the whole-batch library calls on a small size (``--check-*``);
they agree to float64 round-off (the sums are merely re-associated), and the
script prints the largest relative difference of each estimate.

The ``err`` column is :math:`|\hat\theta - \theta^{\Delta t}|/|\theta^{\Delta t}|`
with :math:`\theta^{\Delta t}` the exact value of the Euler chain
(:func:`polab.theory.diffusion_values.ou_euler_value`), the large-sample limit of the
discretised estimators (MSTDE is biased by design; the ML truncation at
:math:`t_N = 10` adds a relative bias below :math:`e^{-10}`). It is a
sanity check that the timed computation is the real one, not a test.

Run (the issue's size: 92 s wall on one thread of the shared 2-core CI
machine, peak RSS 0.9 GB)::

    OMP_NUM_THREADS=1 python benchmarks/martingale_pe.py
    OMP_NUM_THREADS=1 python benchmarks/martingale_pe.py --paths 10000 --steps 200   # seconds

The torch thread count follows ``OMP_NUM_THREADS`` (or ``--threads``); the
load average is printed because the machine may be shared. The work is
many small tensor operations (per time step of the recursions and online
updates), so extra threads do not help; on a 2-core machine whose other
core is busy, ``OMP_NUM_THREADS=2`` was about 14x slower than one thread.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from polab.estimators.policy_evaluation import (
    PathBatch,
    eligibility_trace,
    gtd_init,
    gtd_linear,
    gtd_online,
    gtd_update,
    linear_moments,
    lstd,
    ml_linear,
    mstde_linear,
    online_step_sizes,
    solve_linear,
    td_lambda_offline,
    td_lambda_offline_from_moments,
    td_lambda_online,
)
from polab.estimators.sde import euler_maruyama, ornstein_uhlenbeck, uniform_grid
from polab.theory.diffusion_values import ou_euler_value

ROUND_OFF = 1e-10  # float64 relative round-off of re-associated sums (CONVENTIONS.md)


@dataclass(frozen=True)
class Problem:
    kappa: float = 1.0
    sigma: float = 1.0
    beta: float = 1.0
    horizon: float = 10.0
    steps: int = 1000

    @property
    def dt(self) -> float:
        return self.horizon / self.steps


def features(x: torch.Tensor) -> torch.Tensor:
    """``(1, x, x^2)`` of the first state coordinate: [paths, time, 1] -> [paths, time, 3]."""
    x = x[..., 0]
    return torch.stack([torch.ones_like(x), x, x * x], dim=-1)


def extra_tests(b: PathBatch, phi: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Over-identifying test functions for GTD: the TD(0) trace of ``(phi, |x|)``, [paths, time-1, 4]."""
    return eligibility_trace(torch.cat([phi, b.states.abs()], dim=-1), b, beta=beta, lambda_=0.0)


def simulate(prob: Problem, n: int, generator: torch.Generator) -> PathBatch:
    t = uniform_grid(prob.horizon, prob.steps)
    x0 = torch.randn((n, 1), generator=generator, dtype=torch.float64)
    X = euler_maruyama(ornstein_uhlenbeck(kappa=prob.kappa, sigma=prob.sigma), x0, t, generator=generator)
    return PathBatch(states=X, times=t, rewards=X[:, :-1, 0] ** 2)


# ---------------------------------------------------------------------------
# chunked estimators: update(batch, phi) per chunk, finish() -> (theta, standard error or None)
# ---------------------------------------------------------------------------
class ClosedForm:
    def __init__(self, beta, method, *, lambda_=0.0, weighting="identity", over_identified=False):
        self.kw = dict(beta=beta, method=method, lambda_=lambda_)
        self.weighting, self.over, self.sum = weighting, over_identified, None

    def update(self, b, phi):
        m = linear_moments(phi, b, test_functions=extra_tests(b, phi, beta=self.kw['beta']) if self.over else None, **self.kw)
        self.sum = m if self.sum is None else self.sum + m

    def finish(self):
        f = solve_linear(self.sum, weighting=self.weighting)
        return f.theta, f.standard_error


class OfflineTD:
    def __init__(self, beta, *, lambda_, step_size, num_sweeps):
        self.kw, self.step, self.sweeps, self.sum = dict(beta=beta, lambda_=lambda_), step_size, num_sweeps, None

    def update(self, b, phi):
        m = linear_moments(phi, b, method="mo", covariance=False, **self.kw)
        self.sum = m if self.sum is None else self.sum + m

    def finish(self):
        return td_lambda_offline_from_moments(self.sum, step_size=self.step, num_sweeps=self.sweeps), None


class OnlineTD:
    """TD(0) online, chunk after chunk; the estimate is the mean of the chunks' Polyak averages over the later half of the chunks."""

    def __init__(self, beta, *, step_size, group):
        self.beta, self.step, self.group, self.theta, self.avgs = beta, step_size, group, None, []

    def update(self, b, phi):
        r = td_lambda_online(phi, b, beta=self.beta, lambda_=0.0, step_size=self.step, paths_per_update=self.group,
                             theta0=self.theta)
        self.theta = r.theta
        self.avgs.append(r.theta_average)

    def finish(self):
        return torch.stack(self.avgs[len(self.avgs) // 2:]).mean(0), None


class OnlineGTD:
    """Two-timescale GTD (:func:`gtd_update` on group means), Polyak-averaged over the second half of all updates.

    Needs the total number of paths up front to know where the second half
    starts (as :func:`gtd_online` does).
    """

    def __init__(self, beta, *, weighting, step_size, aux_step_size, group, num_paths):
        self.beta, self.weighting, self.step, self.aux, self.group = beta, weighting, step_size, aux_step_size, group
        self.start = (-(-num_paths // group)) // 2
        self.state, self.j = None, 0

    def update(self, b, phi):
        tests = extra_tests(b, phi, beta=self.beta)
        for s in range(0, b.num_paths, self.group):
            sl = slice(s, min(b.num_paths, s + self.group))
            bb = b.select(sl)
            m = linear_moments(phi[sl], bb, beta=self.beta, method="mo", test_functions=tests[sl], covariance=False)
            if self.state is None:
                self.state = gtd_init(m.C.shape[1], m.C.shape[0], dtype=m.C.dtype)
            n = m.num_paths
            self.state = gtd_update(self.state, m.c / n, m.C / n, m.K / n, weighting=self.weighting, step_size=self.step,
                                    aux_step_size=self.aux, average=self.j >= self.start)
            self.j += 1

    def finish(self):
        return self.state.theta_average, None


def make_estimators(prob: Problem, steps: dict, *, group: int, gtd_group: int, num_paths: int) -> dict:
    b = prob.beta
    return {
        "ML (closed form)": ClosedForm(b, "ml"),
        "LSTD(0) = TD(0) fixed point": ClosedForm(b, "mo"),
        f"TD(0) offline, {steps['sweeps']} sweeps": OfflineTD(b, lambda_=0.0, step_size=steps["offline"],
                                                                num_sweeps=steps["sweeps"]),
        "LSTD(1/2) = TD(lambda=1/2)": ClosedForm(b, "mo", lambda_=0.5),
        "GTD closed form, identity": ClosedForm(b, "mo", over_identified=True),
        "GTD closed form, inverse cov.": ClosedForm(b, "mo", weighting="inverse_covariance", over_identified=True),
        "MSTDE (closed form)": ClosedForm(b, "mstde"),
        f"TD(0) online, {group} paths/update": OnlineTD(b, step_size=steps["td"], group=group),
        f"GTD 2-timescale identity, {gtd_group}/upd": OnlineGTD(
            b, weighting="identity", step_size=steps["gtd_identity"], aux_step_size=steps["gtd_identity_aux"],
            group=gtd_group, num_paths=num_paths),
        f"GTD 2-timescale inv. cov., {gtd_group}/upd": OnlineGTD(
            b, weighting="inverse_covariance", step_size=steps["gtd_invcov"], aux_step_size=steps["gtd_invcov_aux"],
            group=gtd_group, num_paths=num_paths),
    }


def pilot_step_sizes(prob: Problem, *, seed: int, paths: int = 2000) -> dict:
    """Step sizes of the iterative solvers from a separate pilot sample (not timed).

    Offline TD: :math:`\\alpha = \\min_\\mu \\mathrm{Re}\\,\\mu/|\\mu|^2` over the eigenvalues
    of :math:`\\bar C` and enough sweeps to contract the error by 1e-13 at
    the resulting rate (the recipe of tests/estimators/test_policy_evaluation.py);
    online solvers: :func:`online_step_sizes`.
    """
    b = simulate(prob, paths, torch.Generator().manual_seed(seed + 1))
    phi = features(b.states)
    m = linear_moments(phi, b, beta=prob.beta, method="mo", covariance=False)
    C = m.C / m.num_paths
    eig = torch.linalg.eigvals(C)
    step = float((eig.real / eig.abs() ** 2).min())
    rate = float((1 - step * eig).abs().max())
    mg = linear_moments(phi, b, beta=prob.beta, method="mo", test_functions=extra_tests(b, phi, beta=prob.beta), covariance=False)
    n = mg.num_paths
    out = online_step_sizes(m.c / n, C, m.K / n, dt=prob.dt)
    g = online_step_sizes(mg.c / n, mg.C / n, mg.K / n, dt=prob.dt)
    out.update({k: v for k, v in g.items() if k.startswith("gtd")})
    out.update(offline=step, sweeps=int(math.ceil(math.log(1e-13) / math.log(rate))))
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check_chunking(prob: Problem, steps: dict, *, paths: int, chunk: int, group: int, gtd_group: int, seed: int) -> float:
    """Chunked estimates vs the whole-batch library calls on one small sample; prints and returns the largest relative difference."""
    b = simulate(prob, paths, torch.Generator().manual_seed(seed + 2))
    phi = features(b.states)
    beta = prob.beta
    est = make_estimators(prob, steps, group=group, gtd_group=gtd_group, num_paths=paths)
    for s in range(0, paths, chunk):
        sl = slice(s, min(paths, s + chunk))
        for e in est.values():
            e.update(b.select(sl), phi[sl])
    tests = extra_tests(b, phi, beta=beta)
    td_on = td_lambda_online(phi, b, beta=beta, lambda_=0.0, step_size=steps["td"], paths_per_update=group)
    whole = [
        ml_linear(phi, b, beta=beta), lstd(phi, b, beta=beta),
        td_lambda_offline(phi, b, beta=beta, lambda_=0.0, step_size=steps["offline"], num_sweeps=steps["sweeps"]),
        lstd(phi, b, beta=beta, lambda_=0.5),
        gtd_linear(phi, b, beta=beta, test_functions=tests),
        gtd_linear(phi, b, beta=beta, test_functions=tests, weighting="inverse_covariance"),
        mstde_linear(phi, b, beta=beta),
        td_on.theta,  # the last iterate: the chunked run makes the very same updates
        gtd_online(phi, b, beta=beta, weighting="identity", step_size=steps["gtd_identity"],
                   aux_step_size=steps["gtd_identity_aux"], paths_per_update=gtd_group, test_functions=tests).theta_average,
        gtd_online(phi, b, beta=beta, weighting="inverse_covariance", step_size=steps["gtd_invcov"],
                   aux_step_size=steps["gtd_invcov_aux"], paths_per_update=gtd_group, test_functions=tests).theta_average,
    ]
    print(f"chunking check: {paths} paths x {prob.steps} steps in chunks of {chunk}, chunked vs whole-batch call "
          f"(max relative difference; float64 round-off bound {ROUND_OFF:.0e})")
    worst = 0.0
    for (name, e), w in zip(est.items(), whole):
        if isinstance(e, OnlineTD):
            theta, se = e.theta, None
        else:
            theta, se = e.finish()
        d = _rel(theta, w.theta if hasattr(w, "theta") else w)
        if se is not None:
            d = max(d, _rel(se, w.standard_error))
        worst = max(worst, d)
        what = "theta, SE" if se is not None else ("last theta" if isinstance(e, OnlineTD) else "theta")
        print(f"  {name:42s} {what:10s} {d:9.1e}")
    print(f"  -> {'PASS' if worst <= ROUND_OFF else 'FAIL'} (largest {worst:.1e})")
    return worst


def run(prob: Problem, steps: dict, *, paths: int, chunk: int, group: int, gtd_group: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    est = make_estimators(prob, steps, group=group, gtd_group=gtd_group, num_paths=paths)
    secs = {name: 0.0 for name in est}
    sim = 0.0
    for s in tqdm(range(0, paths, chunk), desc="chunks"):
        t0 = time.perf_counter()
        b = simulate(prob, min(chunk, paths - s), gen)
        phi = features(b.states)
        sim += time.perf_counter() - t0
        for name, e in est.items():
            t0 = time.perf_counter()
            e.update(b, phi)
            secs[name] += time.perf_counter() - t0
        del b, phi
    th1, th2 = ou_euler_value(kappa=prob.kappa, sigma=prob.sigma, beta=prob.beta, dt=prob.dt)
    target = torch.tensor([th2, 0.0, th1], dtype=torch.float64)
    print(f"\n{paths:,} paths x {prob.steps} steps (dt = {prob.dt:g}), chunks of {chunk:,}, float64, "
          f"torch threads = {torch.get_num_threads()}")
    print(f"  {'estimator':42s} {'seconds':>9s} {'paths/s':>10s}   err vs Euler-chain value")
    print(f"  {'simulation + features (once)':42s} {sim:9.2f} {paths / sim:10,.0f}")
    for name, e in est.items():
        t0 = time.perf_counter()
        theta, _ = e.finish()
        secs[name] += time.perf_counter() - t0
        print(f"  {name:42s} {secs[name]:9.2f} {paths / secs[name]:10,.0f}   {_rel(theta, target):.1e}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", type=int, default=100_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--chunk", type=int, default=200,
                   help="paths per chunk; memory ~ chunk x steps, and chunks whose tensors stay in cache are fastest")
    p.add_argument("--online-group", type=int, default=100, help="paths per update of online TD(0)")
    p.add_argument("--gtd-group", type=int, default=100, help="paths per update of two-timescale GTD")
    p.add_argument("--check-paths", type=int, default=3000)
    p.add_argument("--check-steps", type=int, default=200)
    p.add_argument("--check-chunk", type=int, default=700)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, from OMP_NUM_THREADS)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("chunk", "check_chunk"):
        for g in ("online_group", "gtd_group"):
            if getattr(a, name) % getattr(a, g):
                raise SystemExit(f"--{name.replace('_', '-')} ({getattr(a, name)}) must be a multiple of "
                                 f"--{g.replace('_', '-')} ({getattr(a, g)}) so that chunks split into whole update groups.")
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads = {torch.get_num_threads()}, "
          f"load average (1/5/15 min) = {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    prob = Problem(steps=a.steps)
    steps = pilot_step_sizes(prob, seed=a.seed)
    check_chunking(Problem(steps=a.check_steps), pilot_step_sizes(Problem(steps=a.check_steps), seed=a.seed),
                   paths=a.check_paths, chunk=a.check_chunk, group=a.online_group, gtd_group=a.gtd_group, seed=a.seed)
    run(prob, steps, paths=a.paths, chunk=a.chunk, group=a.online_group, gtd_group=a.gtd_group, seed=a.seed)
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB; "
          f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
