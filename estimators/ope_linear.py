r"""Off-policy evaluation with linear features: LSTD, fitted Q evaluation and the minimax (MSPBE) estimator.

Data are logged transitions :math:`(s_i, a_i, r_i, s_i')`, given as features
:math:`\phi_i=\phi(s_i,a_i)`, rewards :math:`r_i` and the target policy's next
features :math:`\phi'_i=\phi^\pi(s'_i)=\sum_{a'}\pi(a'|s'_i)\phi(s'_i,a')`
(zero after termination; pass ``terminal``). With optional sample weights
:math:`\rho_i` (normalised to sum to one) all three estimators are functions
of the moments

.. math::

    \hat G=\sum_i\rho_i\phi_i\phi_i^\top,\quad
    \hat C=\sum_i\rho_i\gamma_i\phi_i\phi_i'^\top,\quad
    \hat b=\sum_i\rho_i\phi_i r_i,\quad
    \hat A=\hat G-\hat C,

with :math:`\gamma_i=\gamma(1-\mathrm{terminal}_i)` (:func:`linear_ope_statistics`).

* **LSTD / TD fixed point** (Bradtke & Barto 1996; Lagoudakis & Parr 2003,
  LSTD-Q): :math:`\hat A\hat w=\hat b` (:func:`lstd_q`). The expected TD(0)
  update :math:`\mathbb{E}[\phi_i\delta_i]` vanishes exactly there, so it is
  the point TD converges to when it converges.
* **Fitted Q evaluation** (linear FQE): :math:`w_{k+1}=\arg\min_w\sum_i\rho_i
  (\phi_i^\top w-r_i-\gamma_i\phi_i'^\top w_k)^2=\hat G^{-1}(\hat b+\hat Cw_k)`
  (:func:`fitted_q_evaluation`). Its fixed point is the LSTD solution; it
  converges iff the spectral radius of :math:`\hat G^{-1}\hat C` is below one.
* **Minimax** (Antos, Szepesvári & Munos 2008, modified Bellman residual;
  Zanette 2023): :math:`\hat w\in\arg\min_{\|w\|\le W}[\hat L(w,w)-\min_{w'}
  \hat L(w',w)]`, :math:`\hat L(w',w)=\sum_i\rho_i(\phi_i^\top w'-r_i-
  \gamma_i\phi_i'^\top w)^2`. The bracket equals the empirical MSPBE
  :math:`(\hat Aw-\hat b)^\top\hat G^{-1}(\hat Aw-\hat b)` (Pythagoras in the
  empirical norm), a convex quadratic, so the ball-constrained problem is
  solved by cvxpy (:func:`minimax_pbe`); :func:`minimax_objective` evaluates
  the bracket directly by least squares, for checking. With no radius, or a
  radius containing the LSTD solution, the minimax minimiser is the LSTD
  solution and the objective is 0.

**Exact versions from the MDP.** Calling any of these with one row per
state-action pair, ``weights`` :math:`=\mu`, rewards :math:`r(s,a)` and
``next_phi`` :math:`=(P^\pi\Phi)(s,a)` gives the population quantities
(:func:`expected_transitions` builds that batch from a
:class:`polab.theory.bellman_operators.FiniteMDP`); the conditional variance of the
targets cancels in the minimax objective and never enters :math:`\hat A,\hat b`.

Plug-in estimates of the incompleteness factor and of the Bellman-transfer
concentrability (:func:`incompleteness_factor_estimate`,
:func:`concentrability_estimate`) use :math:`\phi_i'` in place of
:math:`\mathbb{E}[\phi^\pi(s')|s_i,a_i]`. They are consistent for deterministic
transitions and for expected-transition batches; with stochastic transitions
both Gram matrices are inflated by :math:`\gamma^2\mathbb{E}\,\mathrm{Cov}(\phi'|s,a)`
(so the estimates are biased; see :mod:`polab.theory.realizability` for the exact quantities).
The **debiased** estimate (``second_next_phi``) uses two independent next
states per :math:`(s_i,a_i)` (double sampling, or a held-out split of the
logged transitions of each pair, :func:`paired_next_features`): the cross
product :math:`\tfrac12(\phi'_i\phi''^\top_i+\phi''_i\phi'^\top_i)` has expectation
:math:`\mathbb{E}[\phi'|s_i,a_i]\mathbb{E}[\phi'|s_i,a_i]^\top`, which removes the
covariance inflation from both matrices (the remaining bias is the
:math:`O(1/n)` of a smooth function of unbiased moments).

Shapes
------
``phi``, ``next_phi``: [batch, d]; ``reward``, ``terminal``, ``weights``: [batch].
Outputs follow the dtype and device of ``phi``.

References
----------
Bradtke, Barto, "Linear least-squares algorithms for temporal difference
learning", Machine Learning 22, 1996.
Lagoudakis, Parr, "Least-squares policy iteration", JMLR 4, 2003.
Antos, Szepesvári, Munos, "Learning near-optimal policies with
Bellman-residual minimization based fitted policy iteration and a single
sample path", Machine Learning 71, 2008.
Zanette, "When is Realizability Sufficient for Off-Policy Reinforcement
Learning?", ICML 2023, arXiv 2211.05311.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from polab.theory.bellman_operators import FiniteMDP, check_distribution, check_policy, policy_transition_matrix

from .checks import as_tensor, check_finite, check_ndim

__all__ = [
    "LinearOPEStatistics",
    "LinearOPEResult",
    "linear_ope_statistics",
    "lstd_q",
    "fitted_q_evaluation",
    "minimax_pbe",
    "projected_bellman_objective",
    "minimax_objective",
    "linear_policy_value",
    "incompleteness_factor_estimate",
    "paired_next_features",
    "concentrability_estimate",
    "expected_transitions",
]


@dataclass(frozen=True)
class LinearOPEStatistics:
    """Weighted moments of the data (module docstring).

    Attributes
    ----------
    gram : Tensor, shape [d, d]
        :math:`\\hat G`.
    cross : Tensor, shape [d, d]
        :math:`\\hat C` (discount included).
    reward_moment : Tensor, shape [d]
        :math:`\\hat b`.
    td_matrix : Tensor, shape [d, d]
        :math:`\\hat A=\\hat G-\\hat C`.
    next_gram : Tensor, shape [d, d]
        :math:`\\sum_i\\rho_i\\gamma_i^2\\phi_i'\\phi_i'^\\top`.
    num_samples : int
    """

    gram: torch.Tensor
    cross: torch.Tensor
    reward_moment: torch.Tensor
    td_matrix: torch.Tensor
    next_gram: torch.Tensor
    num_samples: int


@dataclass(frozen=True)
class LinearOPEResult:
    """Result of a linear OPE estimator.

    Attributes
    ----------
    weights : Tensor, shape [d]
    method : str
        ``"lstd"``, ``"fqe"`` or ``"minimax"``.
    objective : Tensor, scalar
        Empirical MSPBE at ``weights`` (0 at an exact TD fixed point).
    iterations : int
        FQE iterations (0 for the others).
    converged : bool
    statistics : LinearOPEStatistics
    """

    weights: torch.Tensor
    method: str
    objective: torch.Tensor
    iterations: int
    converged: bool
    statistics: LinearOPEStatistics


def _check_batch(phi, reward, next_phi, terminal, weights):
    phi = as_tensor(phi, name="phi")
    if not phi.is_floating_point():
        phi = phi.to(torch.get_default_dtype())
    check_ndim(phi, 2, name="phi", layout="[batch, d]")
    n, d = phi.shape
    if n == 0:
        raise ValueError("phi is empty: pass at least one transition.")
    reward = as_tensor(reward, name="reward", dtype=phi.dtype).to(phi.device)
    next_phi = as_tensor(next_phi, name="next_phi", dtype=phi.dtype).to(phi.device)
    check_ndim(reward, 1, name="reward", layout="[batch]")
    check_ndim(next_phi, 2, name="next_phi", layout="[batch, d]")
    if reward.shape[0] != n or next_phi.shape != phi.shape:
        raise ValueError(
            f"phi {tuple(phi.shape)}, reward {tuple(reward.shape)} and next_phi {tuple(next_phi.shape)} must share "
            f"the batch size, and next_phi must have phi's shape [batch, d]."
        )
    for x, name in ((phi, "phi"), (reward, "reward"), (next_phi, "next_phi")):
        check_finite(x, name=name)
    if terminal is None:
        cont = torch.ones(n, dtype=phi.dtype, device=phi.device)
    else:
        t = as_tensor(terminal, name="terminal").to(phi.device)
        check_ndim(t, 1, name="terminal", layout="[batch]")
        if t.shape[0] != n:
            raise ValueError(f"terminal must have length {n}; got {t.shape[0]}.")
        if t.dtype != torch.bool and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError("terminal must hold only 0 and 1 (or booleans).")
        cont = 1.0 - t.to(phi.dtype)
    if weights is None:
        rho = torch.full((n,), 1.0 / n, dtype=phi.dtype, device=phi.device)
    else:
        rho = as_tensor(weights, name="weights", dtype=phi.dtype).to(phi.device)
        check_ndim(rho, 1, name="weights", layout="[batch]")
        if rho.shape[0] != n:
            raise ValueError(f"weights must have length {n}; got {rho.shape[0]}.")
        check_finite(rho, name="weights")
        if bool((rho < 0).any()) or not float(rho.sum()) > 0:
            raise ValueError("weights must be non-negative with a positive sum.")
        rho = rho / rho.sum()
    return phi, reward, next_phi, cont, rho


def linear_ope_statistics(phi, reward, next_phi, *, gamma: float, terminal=None, weights=None) -> LinearOPEStatistics:
    """Weighted moments :math:`\\hat G,\\hat C,\\hat b,\\hat A` of logged transitions.

    Parameters
    ----------
    phi : Tensor, shape [batch, d]
        :math:`\\phi(s_i,a_i)`.
    reward : Tensor, shape [batch]
    next_phi : Tensor, shape [batch, d]
        :math:`\\phi^\\pi(s_i')`.
    gamma : float in [0, 1)
    terminal : Tensor, shape [batch], optional
        1 where the episode terminated at :math:`s_i'` (no bootstrap).
    weights : Tensor, shape [batch], optional
        Non-negative sample weights (uniform by default).
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must lie in [0, 1); got {gamma}.")
    phi, reward, next_phi, cont, rho = _check_batch(phi, reward, next_phi, terminal, weights)
    g = gamma * cont
    wphi = rho[:, None] * phi
    G = wphi.T @ phi
    C = wphi.T @ (g[:, None] * next_phi)
    b = wphi.T @ reward
    nG = (rho[:, None] * g[:, None] * next_phi).T @ (g[:, None] * next_phi)
    return LinearOPEStatistics(gram=G, cross=C, reward_moment=b, td_matrix=G - C, next_gram=nG, num_samples=phi.shape[0])


def projected_bellman_objective(weights, statistics: LinearOPEStatistics) -> torch.Tensor:
    """Empirical MSPBE :math:`(\\hat Aw-\\hat b)^\\top\\hat G^{-1}(\\hat Aw-\\hat b)`; ``weights`` [d] or [k, d].

    A singular :math:`\\hat G` (features never seen in the data, e.g. unvisited
    state-action pairs of a tabular class) uses the pseudo-inverse: the rows of
    :math:`\\hat A` and :math:`\\hat b` vanish on those directions too, so the
    objective is the MSPBE restricted to the observed feature span.
    """
    w = as_tensor(weights, name="weights", dtype=statistics.gram.dtype).to(statistics.gram.device)
    W = w.reshape(-1, w.shape[-1])
    res = W @ statistics.td_matrix.T - statistics.reward_moment  # [k, d]
    try:
        sol = torch.linalg.solve(statistics.gram, res.T)  # [d, k]
    except torch.linalg.LinAlgError:
        sol = torch.linalg.pinv(statistics.gram, hermitian=True) @ res.T
    out = (res.T * sol).sum(0)
    return out.reshape(w.shape[:-1])


def _result(w, method, stats, iterations=0, converged=True) -> LinearOPEResult:
    return LinearOPEResult(weights=w, method=method, objective=projected_bellman_objective(w, stats),
                           iterations=iterations, converged=converged, statistics=stats)


def lstd_q(phi, reward, next_phi, *, gamma: float, terminal=None, weights=None, ridge: float = 0.0) -> LinearOPEResult:
    """LSTD-Q: the TD fixed point :math:`(\\hat A+\\lambda I)\\hat w=\\hat b`.

    Parameters
    ----------
    phi, reward, next_phi, gamma, terminal, weights
        As in :func:`linear_ope_statistics`.
    ridge : float >= 0
        :math:`\\lambda`; 0 gives the exact fixed point (raises if :math:`\\hat A` is singular).

    Returns
    -------
    LinearOPEResult
    """
    stats = linear_ope_statistics(phi, reward, next_phi, gamma=gamma, terminal=terminal, weights=weights)
    A = stats.td_matrix + ridge * torch.eye(_dim(stats), dtype=stats.gram.dtype, device=stats.gram.device)
    try:
        w = torch.linalg.solve(A, stats.reward_moment)
    except RuntimeError as exc:  # torch raises on exactly singular input
        raise ValueError(f"the LSTD matrix A (shape {tuple(A.shape)}) is singular; pass ridge > 0 or more data.") from exc
    return _result(w, "lstd", stats)


def _dim(stats: LinearOPEStatistics) -> int:
    return stats.gram.shape[0]


def fitted_q_evaluation(phi, reward, next_phi, *, gamma: float, terminal=None, weights=None, ridge: float = 0.0,
                        iterations: int = 1000, tolerance: float = 1e-12, initial=None) -> LinearOPEResult:
    """Linear fitted Q evaluation: :math:`w_{k+1}=(\\hat G+\\lambda I)^{-1}(\\hat b+\\hat Cw_k)`.

    Stops when :math:`\\|w_{k+1}-w_k\\|\\le` ``tolerance`` :math:`(1+\\|w_{k+1}\\|)` or after
    ``iterations`` steps (then ``converged=False``).

    Parameters
    ----------
    initial : Tensor, shape [d], optional
        :math:`w_0` (zeros by default).
    """
    stats = linear_ope_statistics(phi, reward, next_phi, gamma=gamma, terminal=terminal, weights=weights)
    d = _dim(stats)
    eye = torch.eye(d, dtype=stats.gram.dtype, device=stats.gram.device)
    chol, info = torch.linalg.cholesky_ex(stats.gram + ridge * eye)
    if int(info) != 0:
        raise ValueError(f"the feature Gram matrix (shape {(d, d)}) is singular; pass ridge > 0 or drop dependent features.")
    M = torch.cholesky_solve(stats.cross, chol)
    c = torch.cholesky_solve(stats.reward_moment[:, None], chol)[:, 0]
    w = torch.zeros(d, dtype=stats.gram.dtype, device=stats.gram.device) if initial is None else \
        as_tensor(initial, name="initial", dtype=stats.gram.dtype).to(stats.gram.device).clone()
    converged = False
    k = 0
    for k in range(1, iterations + 1):
        w_new = c + M @ w
        if not bool(torch.isfinite(w_new).all()):
            w = w_new
            break
        step = float(torch.linalg.vector_norm(w_new - w))
        w = w_new
        if step <= tolerance * (1.0 + float(torch.linalg.vector_norm(w))):
            converged = True
            break
    return _result(w, "fqe", stats, iterations=k, converged=converged)


def minimax_pbe(phi, reward, next_phi, *, gamma: float, radius: float | None = None, terminal=None,
                weights=None) -> LinearOPEResult:
    """Minimax estimator :math:`\\arg\\min_{\\|w\\|\\le W}[\\hat L(w,w)-\\min_{w'}\\hat L(w',w)]` via cvxpy.

    The objective is the empirical MSPBE
    :math:`\\|\\hat R^{-\\top}(\\hat Aw-\\hat b)\\|^2` with :math:`\\hat G=\\hat R\\hat R^\\top`
    (Cholesky). Solved in float64 on the CPU; the result is returned on ``phi``'s device and dtype.

    Parameters
    ----------
    radius : float, optional
        :math:`W`; ``None`` means unconstrained (then the LSTD solution is a minimiser).
    """
    stats = linear_ope_statistics(phi, reward, next_phi, gamma=gamma, terminal=terminal, weights=weights)
    import cvxpy as cp

    G = stats.gram.detach().cpu().to(torch.float64).numpy()
    A = stats.td_matrix.detach().cpu().to(torch.float64).numpy()
    b = stats.reward_moment.detach().cpu().to(torch.float64).numpy()
    try:
        R = np.linalg.cholesky(G)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"the feature Gram matrix (shape {G.shape}) is singular; drop dependent features.") from exc
    K = np.linalg.solve(R, A)
    k = np.linalg.solve(R, b)
    scale = max(1.0, float(np.abs(K).max()))  # conditioning of the solver's problem
    w = cp.Variable(A.shape[0])
    cons = [] if radius is None else [cp.norm(w, 2) <= radius]
    prob = cp.Problem(cp.Minimize(cp.sum_squares((K @ w - k) / scale)), cons)
    prob.solve(solver=cp.CLARABEL)
    if w.value is None:
        raise ValueError(f"cvxpy could not solve the minimax problem (status {prob.status}).")
    wt = torch.as_tensor(np.asarray(w.value), dtype=stats.gram.dtype, device=stats.gram.device)
    return _result(wt, "minimax", stats, converged=prob.status == cp.OPTIMAL)


def minimax_objective(weights, phi, reward, next_phi, *, gamma: float, terminal=None, weights_data=None) -> torch.Tensor:
    """:math:`\\hat L(w,w)-\\min_{w'}\\hat L(w',w)` computed directly (a least squares per call).

    Independent of :func:`projected_bellman_objective`; used to check that the two agree.
    """
    phi, reward, next_phi, cont, rho = _check_batch(phi, reward, next_phi, terminal, weights_data)
    w = as_tensor(weights, name="weights", dtype=phi.dtype).to(phi.device)
    y = reward + gamma * cont * (next_phi @ w)
    sq = rho.sqrt()
    sol = torch.linalg.lstsq((sq[:, None] * phi), (sq * y)[:, None]).solution[:, 0]
    return (rho * (phi @ w - y) ** 2).sum() - (rho * (phi @ sol - y) ** 2).sum()


def linear_policy_value(weights, start_phi, *, start_weights=None) -> torch.Tensor:
    """:math:`\\hat v=\\sum_j\\nu_j\\,\\phi^\\pi(s_{0,j})^\\top w`.

    Shapes: ``weights`` [d]; ``start_phi`` [batch, d] (target-policy features of start states);
    ``start_weights`` [batch] (uniform by default).
    """
    f = as_tensor(start_phi, name="start_phi")
    check_ndim(f, 2, name="start_phi", layout="[batch, d]")
    w = as_tensor(weights, name="weights", dtype=f.dtype).to(f.device)
    v = f @ w
    if start_weights is None:
        return v.mean()
    nu = as_tensor(start_weights, name="start_weights", dtype=f.dtype).to(f.device)
    return (nu * v).sum() / nu.sum()


def _sym_top_generalized(Amat: torch.Tensor, Bmat: torch.Tensor, *, name: str) -> torch.Tensor:
    """Largest eigenvalue of (Amat, Bmat), Bmat positive definite, by Cholesky reduction."""
    L, info = torch.linalg.cholesky_ex((Bmat + Bmat.T) / 2)
    if int(info) != 0:
        raise ValueError(f"{name} (shape {tuple(Bmat.shape)}) is not positive definite; more data or fewer features.")
    X = torch.linalg.solve_triangular(L, (Amat + Amat.T) / 2, upper=False)
    X = torch.linalg.solve_triangular(L, X.T, upper=False)
    return torch.linalg.eigvalsh((X + X.T) / 2)[-1]


def incompleteness_factor_estimate(phi, next_phi, *, gamma: float, terminal=None, weights=None,
                                   second_next_phi=None) -> torch.Tensor:
    """Plug-in or debiased :math:`\\hat\\alpha`: :math:`\\hat\\alpha^2=\\lambda_{\\max}(\\hat N-\\hat C^\\top\\hat G^{-1}\\hat C,\\
    \\hat G-\\hat C-\\hat C^\\top+\\hat N)` with :math:`\\hat N` the next-feature second moment (discount included).

    Parameters
    ----------
    phi, next_phi : Tensor, shape [batch, d]
    gamma : float in [0, 1)
    terminal, weights : Tensor, shape [batch], optional
        As in :func:`linear_ope_statistics`.
    second_next_phi : Tensor, shape [batch, d], optional
        :math:`\\phi^\\pi(s''_i)` for a second next state drawn independently of :math:`s'_i` from the
        same :math:`(s_i,a_i)` (double sampling; :func:`paired_next_features` builds it from a held-out
        split). Then :math:`\\hat C` uses :math:`\\tfrac12(\\phi'+\\phi'')` and
        :math:`\\hat N=\\sum_i\\rho_i\\gamma_i^2\\tfrac12(\\phi'_i\\phi''^\\top_i+\\phi''_i\\phi'^\\top_i)`, unbiased for
        :math:`\\sum\\mu\\gamma^2\\mathbb{E}[\\phi'|sa]\\mathbb{E}[\\phi'|sa]^\\top` (module docstring). The plug-in
        (``None``) instead estimates the :math:`\\alpha` of a class whose Gram matrices carry
        :math:`\\gamma^2\\mathbb{E}\\,\\mathrm{Cov}(\\phi'|s,a)`: biased for stochastic transitions, exact on
        expected-transition batches.

    Returns
    -------
    Tensor, scalar, in [0, 1]
        Equals :func:`polab.theory.realizability.incompleteness_factor` on an expected-transition batch
        (both forms). The debiased :math:`\\hat\\alpha^2` is clipped to [0, 1] before the square root.
    """
    zeros = torch.zeros(as_tensor(phi, name="phi").shape[0])
    if second_next_phi is None:
        stats = linear_ope_statistics(phi, zeros, next_phi, gamma=gamma, terminal=terminal, weights=weights)
        G, C, N = stats.gram, stats.cross, stats.next_gram
    else:
        p1 = as_tensor(next_phi, name="next_phi")
        p2 = as_tensor(second_next_phi, name="second_next_phi")
        if tuple(p2.shape) != tuple(p1.shape):
            raise ValueError(f"second_next_phi must have next_phi's shape {tuple(p1.shape)}; got {tuple(p2.shape)}.")
        s1 = linear_ope_statistics(phi, zeros, p1, gamma=gamma, terminal=terminal, weights=weights)
        s2 = linear_ope_statistics(phi, zeros, p2.to(dtype=s1.gram.dtype, device=s1.gram.device), gamma=gamma,
                                   terminal=terminal, weights=weights)
        _, _, n1, cont, rho = _check_batch(phi, zeros, p1, terminal, weights)
        n2 = p2.to(dtype=n1.dtype, device=n1.device)
        g = gamma * cont
        cross = (rho[:, None] * g[:, None] * n1).T @ (g[:, None] * n2)
        G, C, N = s1.gram, 0.5 * (s1.cross + s2.cross), 0.5 * (cross + cross.T)
    try:
        Amat = N - C.T @ torch.linalg.solve(G, C)
    except torch.linalg.LinAlgError as exc:
        raise ValueError("phi: the empirical Gram matrix is singular (some feature directions never occur in the data, "
                         "e.g. unvisited state-action pairs); collect more data or drop those features.") from exc
    Bmat = G - C - C.T + N
    top = _sym_top_generalized(Amat, Bmat, name="the empirical Bellman Gram matrix")
    return top.clamp(0.0, 1.0).sqrt()


def paired_next_features(pair_index, next_phi, *, generator: torch.Generator | None = None) -> tuple:
    """Held-out next-state split: pair up the logged transitions of each state-action pair.

    Within each value of ``pair_index`` (e.g. the tabular index of :math:`(s,a)`) the transitions are
    shuffled by ``generator`` and taken two at a time; the first of each two supplies
    :math:`\\phi'` and the second :math:`\\phi''`, independent given :math:`(s,a)`. An odd one out is dropped.

    Parameters
    ----------
    pair_index : Tensor, shape [batch], integer
    next_phi : Tensor, shape [batch, d]
    generator : torch.Generator, optional (CPU; the natural order when None)

    Returns
    -------
    (rows, next_phi_1, next_phi_2) : tuple of Tensor
        ``rows`` [m] indexes the first transition of each couple (use it to select ``phi``, weights,
        terminal flags); ``next_phi_1``, ``next_phi_2`` [m, d].
    """
    idx = as_tensor(pair_index, name="pair_index")
    if idx.is_floating_point() or idx.ndim != 1:
        raise ValueError(f"pair_index must be a 1-d integer tensor; got dtype {idx.dtype}, shape {tuple(idx.shape)}.")
    nphi = as_tensor(next_phi, name="next_phi")
    check_ndim(nphi, 2, name="next_phi", layout="[batch, d]")
    if nphi.shape[0] != idx.shape[0]:
        raise ValueError(f"pair_index ({idx.shape[0]}) and next_phi ({nphi.shape[0]}) must have the same length.")
    idx_cpu = idx.cpu()
    order = torch.randperm(idx.shape[0], generator=generator) if generator is not None else torch.arange(idx.shape[0])
    first, second = [], []
    for key in torch.unique(idx_cpu).tolist():
        members = order[idx_cpu[order] == key]
        k = members.shape[0] // 2 * 2
        first.append(members[0:k:2])
        second.append(members[1:k:2])
    rows = torch.cat(first) if first else torch.zeros(0, dtype=torch.long)
    rows2 = torch.cat(second) if second else torch.zeros(0, dtype=torch.long)
    if rows.numel() == 0:
        raise ValueError("no state-action pair occurs twice: a held-out split needs repeated pairs (or use double sampling).")
    rows, rows2 = rows.to(nphi.device), rows2.to(nphi.device)
    return rows, nphi[rows], nphi[rows2]


def concentrability_estimate(phi, next_phi, target_phi, target_next_phi, *, gamma: float, terminal=None,
                             target_terminal=None, weights=None, target_weights=None) -> torch.Tensor:
    """Plug-in Bellman-transfer concentrability :math:`\\lambda_{\\max}(\\hat B_{d^\\pi},\\hat B_\\mu)`,
    :math:`\\hat B=\\sum_i\\rho_i\\psi_i\\psi_i^\\top`, :math:`\\psi_i=\\phi_i-\\gamma_i\\phi'_i`.

    ``target_*`` are transitions drawn from the target occupancy :math:`d^\\pi_\\nu` (e.g. target-policy
    rollouts weighted by :math:`(1-\\gamma)\\gamma^t`). Shapes as in :func:`linear_ope_statistics`.
    """
    zeros = torch.zeros(as_tensor(phi, name="phi").shape[0])
    s_mu = linear_ope_statistics(phi, zeros, next_phi, gamma=gamma, terminal=terminal, weights=weights)
    zt = torch.zeros(as_tensor(target_phi, name="target_phi").shape[0])
    s_d = linear_ope_statistics(target_phi, zt, target_next_phi, gamma=gamma, terminal=target_terminal,
                                weights=target_weights)
    B_mu = s_mu.gram - s_mu.cross - s_mu.cross.T + s_mu.next_gram
    B_d = s_d.gram - s_d.cross - s_d.cross.T + s_d.next_gram
    return _sym_top_generalized(B_d.to(B_mu.dtype), B_mu, name="the data Bellman Gram matrix").clamp_min(0.0)


def expected_transitions(mdp: FiniteMDP, policy, features, mu, *, dtype=torch.float64, device=None):
    """The population batch: one row per state-action pair with the expected next features.

    Returns
    -------
    (phi, reward, next_phi, weights) : tuple of Tensor
        Shapes [S*A, d], [S*A], [S*A, d], [S*A]: :math:`\\Phi`, :math:`r`, :math:`P^\\pi\\Phi`, :math:`\\mu`.
        Passing them to the estimators gives the exact (population) estimators.
    """
    pi = check_policy(policy, mdp)
    m = check_distribution(mu, mdp.num_pairs, name="mu")
    phi = np.asarray(features, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] != mdp.num_pairs:
        raise ValueError(f"features must have shape [S*A, d] = [{mdp.num_pairs}, d]; got {phi.shape}.")
    nxt = policy_transition_matrix(mdp, pi) @ phi
    t = lambda x: torch.as_tensor(x, dtype=dtype, device=device)  # noqa: E731
    return t(phi), t(mdp.rewards.reshape(-1)), t(nxt), t(m)
