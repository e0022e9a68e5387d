r"""Two policy-optimization problems with a known optimum and a non-degenerate Fisher, with exact and sampled quantities.

- :class:`LQRTask`: the discounted LQR of :mod:`polab.theory.lqr_policy_gradient`
  with a Gaussian linear policy. Exact :math:`J`, :math:`\nabla J`,
  :math:`\nabla^2J\,v` and :math:`K^*` in closed form. Trajectories end with
  probability :math:`1-\gamma` at every step (geometric horizon) and the
  GPOMDP weights use ``gamma=1``, so the sampled gradient and Hessian-vector
  estimates are unbiased for the *infinite-horizon discounted* objective
  (no truncation bias): :math:`\mathbb{E}_T[\mathbf 1\{t<T\}\mathbf 1\{h<T\}] = \gamma^{\max(t,h)}`.
- :class:`SoftmaxBanditTask`: a :math:`K`-armed bandit with Gaussian reward
  noise, softmax policy with the last logit pinned to 0, and entropy
  regularisation :math:`J(\theta) = \sum_a\pi_a(r_a - \tau\log\pi_a)`. The
  maximiser is :math:`\pi^* = \mathrm{softmax}(r/\tau)`, i.e.
  :math:`\theta^*_a = (r_a - r_K)/\tau`, :math:`J^* = \tau\log\sum_a e^{r_a/\tau}`.
  Because the reward :math:`-\tau\log\pi` depends on :math:`\theta`, the
  surrogate is :math:`\Phi = \tilde r\,\ell - \tau\ell^2/2` with
  :math:`\ell = \log\pi_\theta(a)`: :math:`\nabla\Phi = (\tilde r - \tau\ell)\nabla\ell`,
  whose mean is :math:`\nabla J` for every :math:`\theta` (the term
  :math:`-\tau\nabla\ell` of the exact score-function gradient has mean
  zero), as :func:`polab.estimators.pg_gradients.hessian_vector_estimate` requires.
  The optimum is finite and interior because of the entropy term, so the
  pinned-logit Fisher :math:`\mathrm{diag}(p)-pp^\top` is non-degenerate
  on a neighbourhood of the whole optimisation path
  (:mod:`polab.theory.fisher_nondegeneracy`). Sampling subtracts the exact value
  :math:`J(\theta_0)` of the sampling point as a baseline (see
  :meth:`SoftmaxBanditTask.sample`; without it normalised single-trajectory
  steps drift away from the optimum).
  Closed forms [DERIVED here, checked against finite differences in the tests]:
  with :math:`f_a = r_a-\tau\log\pi_a` and full logits :math:`z`,
  :math:`\partial_{z_j}J = \pi_j(f_j - J)` and
  :math:`\partial^2_{z_jz_k}J = \pi_j(\delta_{jk}-\pi_k)(f_j-J) - \tau\pi_j(\delta_{jk}-\pi_k) - \pi_j\pi_k(f_k-J)`.

Both tasks are vectorised over independent problems: parameters have shape
[problems, dim] (one row per seed) and one call samples ``batch`` trajectories
per problem, returning per-trajectory surrogates already divided by
``batch``, for use with ``reduction="sum"`` in :mod:`polab.estimators.pg_gradients`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from polab.estimators.pg_gradients import gpomdp_weights, trajectory_log_prob, trajectory_surrogate
from polab.theory.lqr_policy_gradient import (
    LQRProblem,
    lqr_gradient,
    lqr_hessian_vector,
    lqr_objective,
    lqr_optimal_gain,
    lqr_optimal_value,
    lqr_state_occupancy,
)

__all__ = ["SurrogateBatch", "LQRTask", "SoftmaxBanditTask", "default_lqr_task", "default_bandit_task"]


@dataclass(frozen=True)
class SurrogateBatch:
    """Sampled trajectories reduced to what the core estimators need.

    Attributes
    ----------
    surrogate : Tensor [problems * batch]
        :math:`\\Phi_i/\\text{batch}`, differentiable w.r.t. the parameters.
    log_prob : Tensor [problems * batch]
        :math:`\\log p(\\tau_i\\mid\\theta)`.
    returns : Tensor [problems, batch]
        Sampled returns (diagnostics).
    num_trajectories : int
        Per problem.
    """

    surrogate: torch.Tensor
    log_prob: torch.Tensor
    returns: torch.Tensor
    num_trajectories: int


def _check_params(params: torch.Tensor, dim: int) -> None:
    if not isinstance(params, torch.Tensor) or params.ndim != 2 or params.shape[1] != dim:
        raise ValueError(f"params must be a tensor of shape [problems, {dim}]; got {getattr(params, 'shape', None)}.")


def _psd_factor(M) -> np.ndarray:
    """L with L L^T = M for a symmetric PSD M (eigen-decomposition, so singular M is fine)."""
    w, V = np.linalg.eigh(0.5 * (np.asarray(M, dtype=np.float64) + np.asarray(M, dtype=np.float64).T))
    return V * np.sqrt(np.clip(w, 0.0, None))


class LQRTask:
    """A discounted LQR with a Gaussian linear policy (see module docstring)."""

    def __init__(self, problem: LQRProblem, *, initial_gain=None):
        self.problem = problem
        self.dim = problem.num_params
        self.optimum = lqr_optimal_gain(problem).reshape(-1)
        self.optimal_value = lqr_optimal_value(problem)
        self.initial = np.zeros(self.dim) if initial_gain is None else np.asarray(initial_gain, dtype=np.float64).reshape(-1)
        p = problem
        mats = dict(A=p.A, B=p.B, Q=p.Q, R=p.R, L0=_psd_factor(p.initial_cov), LW=_psd_factor(p.noise_cov))
        self._t = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in mats.items()}

    # exact quantities, rows = problems -----------------------------------
    def stable(self, params) -> np.ndarray:
        """Rows whose gain stabilises the discounted system (elsewhere J = -inf); vectorised over rows."""
        P = np.atleast_2d(np.asarray(params, dtype=np.float64))
        pr = self.problem
        AK = pr.A[None] + pr.B[None] @ P.reshape(-1, pr.action_dim, pr.state_dim)
        with np.errstate(invalid="ignore", over="ignore"):
            ok = np.isfinite(AK).all(axis=(1, 2))
            rho = np.zeros(len(P))
            if ok.any():
                rho[ok] = np.abs(np.linalg.eigvals(AK[ok])).max(-1)
        return ok & (np.sqrt(pr.gamma) * rho < 1)

    def _value_matrices(self, P: np.ndarray) -> np.ndarray:
        r""":math:`P_K` for stable rows, batched: solve :math:`(I - \gamma A_K^\top\otimes A_K^\top)\mathrm{vec}P = \mathrm{vec}M_K`.

        The same Lyapunov equation as :func:`polab.theory.lqr_policy_gradient.lqr_value_matrix`
        (checked against it in the tests), written as one batched linear solve.
        """
        pr = self.problem
        n = pr.state_dim
        K = P.reshape(-1, pr.action_dim, n)
        AK = pr.A[None] + pr.B[None] @ K
        M = pr.Q[None] + K.transpose(0, 2, 1) @ pr.R[None] @ K
        AT = AK.transpose(0, 2, 1)
        L = np.eye(n * n)[None] - pr.gamma * np.einsum("sij,skl->sikjl", AT, AT).reshape(-1, n * n, n * n)
        return np.linalg.solve(L, M.reshape(-1, n * n, 1)).reshape(-1, n, n)

    def objective(self, params) -> np.ndarray:
        """Exact J per row; -inf where the gain does not stabilise."""
        P = np.atleast_2d(np.asarray(params, dtype=np.float64))
        ok = self.stable(P)
        return np.array([lqr_objective(self.problem, k) if o else -np.inf for k, o in zip(P, ok)])

    def gradient(self, params) -> np.ndarray:
        """Exact gradient per row; NaN rows where the gain does not stabilise."""
        P = np.atleast_2d(np.asarray(params, dtype=np.float64))
        ok = self.stable(P)
        return np.stack([lqr_gradient(self.problem, k).reshape(-1) if o else np.full(self.dim, np.nan) for k, o in zip(P, ok)])

    def hessian_vector(self, params, vectors) -> np.ndarray:
        P = np.atleast_2d(np.asarray(params, dtype=np.float64))
        V = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        return np.stack([lqr_hessian_vector(self.problem, k, v).reshape(-1) for k, v in zip(P, V)])

    def state_second_moment(self, params) -> np.ndarray:
        """Normalised discounted occupancy second moment :math:`(1-\\gamma)\\Sigma_K` (for the Fisher)."""
        return (1 - self.problem.gamma) * lqr_state_occupancy(self.problem, np.asarray(params, dtype=np.float64))

    # sampling --------------------------------------------------------------
    def value_baseline(self, params) -> tuple[np.ndarray, np.ndarray]:
        r""":math:`V^K(s) = -s^\top P_Ks - \kappa_K` per row: returns (P [problems, n, n], kappa [problems]).

        :math:`\kappa_K = (\gamma\,\mathrm{tr}(P_KC) + \sigma^2\mathrm{tr}R)/(1-\gamma)`, so that
        :math:`\mathbb{E}V^K(s_0) = J(K)` by (2) of :mod:`polab.theory.lqr_policy_gradient`.
        """
        pr = self.problem
        C = pr.policy_std**2 * pr.B @ pr.B.T + pr.noise_cov
        rows = np.atleast_2d(np.asarray(params, dtype=np.float64))
        ok = self.stable(rows)
        Ps = np.zeros((len(rows), pr.state_dim, pr.state_dim))  # no baseline where unstable
        if ok.any():
            Ps[ok] = self._value_matrices(rows[ok])
        ks = (pr.gamma * np.einsum("sij,ji->s", Ps, C) + pr.policy_std**2 * np.trace(pr.R)) / (1 - pr.gamma)
        return Ps, ks

    def sample(self, params: torch.Tensor, *, batch: int, generator: torch.Generator, value_baseline: bool = True) -> SurrogateBatch:
        """Sample ``batch`` geometric-horizon trajectories per row of ``params`` ([problems, dim]).

        ``value_baseline``: subtract the exact value :math:`V^{K_0}(s_t)` of
        the sampling gain :math:`K_0` (a fixed function of the state, frozen
        at the sampling point), which leaves the gradient and the
        Hessian-vector estimates unbiased and cuts their variance.
        """
        _check_params(params, self.dim)
        pr = self.problem
        S, B, n, m = params.shape[0], int(batch), pr.state_dim, pr.action_dim
        dt = params.dtype
        t = {k: v.to(params.device, dt) for k, v in self._t.items()}
        dev = generator.device

        def randn(*shape):
            return torch.randn(*shape, generator=generator, dtype=dt, device=dev).to(params.device)

        U = torch.rand(S, B, generator=generator, dtype=torch.float64, device=dev).to(params.device).clamp_min(1e-300)
        T = torch.ceil(torch.log(U) / math.log(pr.gamma)).clamp_min(1).to(torch.int64)
        Tmax = int(T.max())
        with torch.no_grad():
            K = params.detach().view(S, m, n)
            s = randn(S, B, n) @ t["L0"].T
            states, actions, rewards = [], [], []
            for _ in range(Tmax):
                a = torch.einsum("smn,sbn->sbm", K, s) + pr.policy_std * randn(S, B, m)
                r = -((s @ t["Q"]) * s).sum(-1) - ((a @ t["R"]) * a).sum(-1)
                states.append(s)
                actions.append(a)
                rewards.append(r)
                s = s @ t["A"].T + a @ t["B"].T + randn(S, B, n) @ t["LW"].T
            st = torch.stack(states, 2)  # [S, B, T, n]
            ac = torch.stack(actions, 2)
            rw = torch.stack(rewards, 2).reshape(S * B, Tmax)
            mask = (torch.arange(Tmax, device=params.device)[None, :] < T.reshape(-1, 1)).to(dt)
        Kp = params.view(S, m, n)
        mean = torch.einsum("smn,sbtn->sbtm", Kp, st)
        lp = (-0.5 * ((ac - mean) / pr.policy_std) ** 2).sum(-1) - m * math.log(pr.policy_std * math.sqrt(2 * math.pi))
        lp = lp.reshape(S * B, Tmax)
        base = None
        if value_baseline:
            Pv, kap = self.value_baseline(params.detach().cpu().numpy())
            Pv = torch.as_tensor(Pv, dtype=dt, device=params.device)
            kap = torch.as_tensor(kap, dtype=dt, device=params.device)
            base = -(torch.einsum("sbti,sij,sbtj->sbt", st, Pv, st) + kap[:, None, None]).reshape(S * B, Tmax)
        w = gpomdp_weights(rw, mask, gamma=1.0, baseline=base)
        phi = trajectory_surrogate(lp, w, mask) / B
        return SurrogateBatch(phi, trajectory_log_prob(lp, mask), (rw * mask).sum(1).view(S, B), B)


class SoftmaxBanditTask:
    """Entropy-regularised softmax bandit (see module docstring)."""

    def __init__(self, means, *, temperature: float, noise_std: float, initial=None):
        self.means = np.asarray(means, dtype=np.float64)
        if self.means.ndim != 1 or self.means.shape[0] < 2:
            raise ValueError(f"means must have shape [K] with K >= 2; got {self.means.shape}.")
        if not temperature > 0 or not noise_std >= 0:
            raise ValueError("temperature must be > 0 and noise_std >= 0.")
        self.temperature = float(temperature)
        self.noise_std = float(noise_std)
        self.dim = self.means.shape[0] - 1
        self.optimum = (self.means[:-1] - self.means[-1]) / self.temperature
        self.optimal_value = float(self.temperature * np.log(np.exp(self.means / self.temperature).sum()))
        self.initial = np.zeros(self.dim) if initial is None else np.asarray(initial, dtype=np.float64)

    def probabilities(self, params) -> np.ndarray:
        P = np.atleast_2d(np.asarray(params, dtype=np.float64))
        z = np.concatenate([P, np.zeros((P.shape[0], 1))], 1)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def _f(self, params):
        pi = self.probabilities(params)
        f = self.means[None, :] - self.temperature * np.log(pi)
        J = (pi * f).sum(1)
        return pi, f, J

    def objective(self, params) -> np.ndarray:
        return self._f(params)[2]

    def gradient(self, params) -> np.ndarray:
        pi, f, J = self._f(params)
        return (pi * (f - J[:, None]))[:, :-1]

    def hessian_vector(self, params, vectors) -> np.ndarray:
        pi, f, J = self._f(params)
        V = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        out = []
        for p, fj, Jv, v in zip(pi, f, J, V):
            D = np.diag(p) - np.outer(p, p)  # d pi_j / d z_k
            c = fj - Jv
            H = D * c[:, None] - self.temperature * D - np.outer(p, p) * c[None, :]
            out.append(H[:-1, :-1] @ v)
        return np.stack(out)

    def sample(self, params: torch.Tensor, *, batch: int, generator: torch.Generator, value_baseline: bool = True) -> SurrogateBatch:
        r"""Pull ``batch`` arms per row of ``params`` ([problems, K-1]).

        ``value_baseline``: subtract the exact value :math:`J(\theta_0)` of
        the sampling point (a constant, frozen: it does not depend on the
        pulled arm, so the gradient and Hessian-vector estimates stay unbiased,
        as for :meth:`LQRTask.sample`). Without it the weight
        :math:`\tilde r - \tau\ell` is positive for most pulls, so a
        *normalised* single-trajectory step :math:`g/\|g\|` ignores the rewards
        and pushes towards whichever arm was pulled; ``normalized_pg`` then
        drifts away from :math:`\theta^*` (observed: gap 0.04 -> 0.38 over
        12000 steps). With it, the weight at :math:`\theta^*` is pure reward
        noise, symmetric about 0, so :math:`\mathbb{E}[g/\|g\|] = 0` there.
        """
        _check_params(params, self.dim)
        S, B = params.shape[0], int(batch)
        z = torch.cat([params, torch.zeros(S, 1, dtype=params.dtype, device=params.device)], 1)
        logp = torch.log_softmax(z, 1)
        dev = generator.device
        a = torch.multinomial(logp.detach().exp().to(dev), B, replacement=True, generator=generator).to(params.device)
        mu = torch.as_tensor(self.means, dtype=params.dtype, device=params.device)
        r = mu[a] + self.noise_std * torch.randn(S, B, generator=generator, dtype=params.dtype, device=dev).to(params.device)
        ell = torch.gather(logp, 1, a)  # [S, B]
        if value_baseline:
            b = torch.as_tensor(self.objective(params.detach().cpu().numpy()), dtype=params.dtype, device=params.device)
            r_c = r - b[:, None]
        else:
            r_c = r
        phi = (r_c * ell - 0.5 * self.temperature * ell**2) / B
        return SurrogateBatch(phi.reshape(-1), ell.reshape(-1), r, B)


def default_lqr_task() -> LQRTask:
    """A 2-state, 1-action LQR (a discretised double integrator with friction), gamma = 0.5, started at K = 0.

    :math:`A = [[1, 0.2],[0, 0.9]]`, :math:`B = [0, 0.5]^\\top`, :math:`Q = I`,
    :math:`R = 0.5`, :math:`\\Sigma_0 = 0.5I`, :math:`W = 0.05I`, :math:`\\sigma = 0.5`.
    K = 0 is stabilising (:math:`\\sqrt{0.5}\\,\\rho(A) < 1`); :math:`\\|\\nabla J(0)\\|\\approx 1.0`.
    gamma = 0.5 keeps the geometric horizons short (mean 2): the return's
    variance from the random horizon grows like :math:`\\gamma/(1-\\gamma)^2`,
    and with gamma = 0.8 the single-trajectory gradient estimates had a
    kurtosis near 700 and unnormalised steps left the stable set.
    """
    pr = LQRProblem(
        A=np.array([[1.0, 0.2], [0.0, 0.9]]), B=np.array([[0.0], [0.5]]), Q=np.eye(2), R=np.array([[0.5]]),
        initial_cov=0.5 * np.eye(2), noise_cov=0.05 * np.eye(2), policy_std=0.5, gamma=0.5,
    )
    return LQRTask(pr)


def default_bandit_task() -> SoftmaxBanditTask:
    """Three arms with means (0.5, 0.25, 0), temperature 0.5, reward noise 0.5, started at uniform logits.

    :math:`\\theta^* = (1, 0.5)`, :math:`\\pi^* = (0.506, 0.307, 0.186)`.
    """
    return SoftmaxBanditTask([0.5, 0.25, 0.0], temperature=0.5, noise_std=0.5)
