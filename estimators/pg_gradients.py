r"""Trajectory policy-gradient estimators (REINFORCE, GPOMDP) and the Hessian-vector estimate of (N)-HARPG.

Everything here is built from per-step log-probabilities
:math:`\ell_{i,t} = \log\pi_\theta(a_{i,t}\mid s_{i,t})` (a differentiable
tensor produced by any torch policy), rewards and a mask, and works through
autograd: no Hessian or per-sample Jacobian is ever formed.

Surrogate. For weights :math:`\psi_{i,t}` that do not depend on
:math:`\theta`, the per-trajectory surrogate

.. math:: \Phi_i(\theta) = \sum_t \psi_{i,t}\,\ell_{i,t}(\theta)

has :math:`\nabla\Phi_i = g(\tau_i,\theta)`, the trajectory gradient estimate:

- GPOMDP: :math:`\psi_{i,t} = \sum_{h\ge t}\gamma^h r_{i,h} - \gamma^t b_{i,t}`
  (``theory_core.md`` 4.2; Baxter and Bartlett 2001);
- REINFORCE: :math:`\psi_{i,t} = \sum_h\gamma^h r_{i,h} - b_i` for every :math:`t`
  (Williams 1992).

Both are unbiased for :math:`\nabla J_H(\theta)`, the gradient of the
objective truncated at the trajectories' horizon, when the baseline of
trajectory :math:`i` does not depend on :math:`a_{i,t},\dots` (GPOMDP: on
:math:`a_{i,t}` and later actions; a leave-one-out batch mean qualifies, see
:func:`leave_one_out_baseline`). With a random, geometric horizon
(termination probability :math:`1-\gamma` per step) and ``gamma=1`` they are
unbiased for the infinite-horizon discounted gradient.

Hessian-vector estimate ((N)-HARPG, ``theory_core.md`` 4.4):

.. math:: u = \nabla^2\Phi(\tau,\theta)\,v + \nabla\Phi(\tau,\theta)\,\big(\nabla\log p(\tau\mid\theta)^\top v\big),
          \qquad \log p(\tau\mid\theta) = \sum_t \ell_t ,

an unbiased estimate of :math:`\nabla^2J(\theta)v` whenever
:math:`\mathbb{E}_{\tau\sim p_\theta}[\nabla\Phi(\tau,\theta)] = \nabla J(\theta)`
holds for all :math:`\theta` near the point (differentiate that identity:
:math:`\nabla^2J = \mathbb{E}[\nabla^2\Phi + \nabla\Phi\,\nabla\log p^\top]`).
It is computed per trajectory with three autograd passes:
:math:`c_i = \nabla\log p_i^\top v` by the double-backward trick, then one
backward of :math:`\nabla\bar\Phi^\top v + \mathrm{mean}_i(\mathrm{sg}(c_i)\Phi_i)`.

Departure from the authors' code, and their form as an option
(``form="batch-product"``): ``torch/optimizers/STORMHess_optimizer.py`` and
``torch/algos/STORMHess.py`` (``aabkn/Stochastic-Policy-Gradient-Methods``
@ 08f8b5cc061db66a724a671441675f213bc11c13) multiply the gradient of the
*batch* surrogate by the inner product of :math:`v` with the gradient of the
*batch* log-probability loss, a product of two batch aggregates,

.. math:: u_{bp} = \nabla^2\bar\Phi\,v + c\,\nabla\bar\Phi\,(\nabla\bar\ell^\top v),
          \qquad \bar\Phi = \mathrm{mean}_i\Phi_i,\ \bar\ell = \mathrm{mean}_i\log p_i ;

its expectation differs from :math:`\nabla^2J v` by :math:`c` times a
covariance term (and, for :math:`c\ne1`, by :math:`(c-1)` times the score
term) when the Hessian batch has more than one trajectory, and its variance is
lower. In the authors' code the loss is garage's ``-mean`` over all *steps*
of :math:`\ell\cdot A` and the log-probability term is the gradient of
``-mean`` over steps of :math:`\ell` added with a ``+`` sign
(``hvp + jac * <grad(log_probs_loss), v>``), which at the scale of
:math:`\nabla\bar\Phi` is :math:`c = -1/\bar T` with :math:`\bar T` the mean
number of steps per trajectory: the score term enters with the opposite sign
of the unbiased estimator and shrunk by :math:`\bar T` (our reading of their
code; derivation in :func:`hessian_vector_estimate`). The default here
(``form="per-trajectory"``) takes the product per trajectory and then
averages, which is unbiased for any batch size.

Leading dimensions. Per-trajectory tensors have shape [batch]. To run
independent problems in one call (e.g. seeds, each with its own disjoint
parameters), flatten them into the batch and use ``reduction="sum"`` with
surrogates pre-divided by the per-problem batch size: gradients of disjoint
parameter blocks do not mix.

References
----------
Williams, "Simple statistical gradient-following algorithms for
connectionist reinforcement learning", Machine Learning, 1992.
Baxter, Bartlett, "Infinite-horizon policy-gradient estimation", JAIR, 2001.
Fatkhullin, Barakat, Kireeva, He, "Stochastic Policy Gradient Methods:
Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from .checks import as_tensor, check_finite, check_mask, check_ndim

__all__ = [
    "discounted_reward_to_go",
    "leave_one_out_baseline",
    "gpomdp_weights",
    "reinforce_weights",
    "trajectory_surrogate",
    "trajectory_log_prob",
    "policy_gradient",
    "hessian_vector_estimate",
]

Params = torch.Tensor | Sequence[torch.Tensor]


def _rewards_and_mask(rewards, mask):
    r = as_tensor(rewards, name="rewards")
    check_ndim(r, 2, name="rewards", layout="[batch, time]")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    check_finite(r, name="rewards")
    if mask is None:
        m = torch.ones_like(r)
    else:
        m = check_mask(as_tensor(mask, name="mask").to(r.device), r)
    return r, m


def discounted_reward_to_go(rewards, mask=None, *, gamma: float) -> torch.Tensor:
    r""":math:`G_{i,t} = \sum_{h\ge t}\gamma^h r_{i,h} m_{i,h}` (absolute-time discount, as in the GPOMDP estimator).

    Shapes
    ------
    rewards, mask : [batch, time] -> [batch, time], zero where ``mask`` is 0.

    Parameters
    ----------
    rewards : Tensor [batch, time]
    mask : Tensor [batch, time], optional
        1 on steps that happened.
    gamma : float in [0, 1]
        Use 1 with geometrically terminated trajectories.
    """
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1]; got {gamma}.")
    r, m = _rewards_and_mask(rewards, mask)
    T = r.shape[1]
    disc = gamma ** torch.arange(T, dtype=r.dtype, device=r.device)
    x = r * m * disc
    return torch.flip(torch.cumsum(torch.flip(x, [1]), 1), [1]) * m


def leave_one_out_baseline(values, mask=None) -> torch.Tensor:
    r"""Per-step leave-one-out mean: :math:`b_{i,t} = \frac{1}{n_t-1}\sum_{j\ne i} v_{j,t}m_{j,t}`, :math:`n_t=\sum_j m_{j,t}`.

    It does not depend on trajectory :math:`i`, so subtracting it keeps the
    gradient and Hessian-vector estimates unbiased (the conditional score has
    mean zero). Steps where no other trajectory is alive get 0.

    Shapes: values, mask [batch, time] -> [batch, time].
    """
    v, m = _rewards_and_mask(values, mask)
    tot = (v * m).sum(0, keepdim=True)
    n = m.sum(0, keepdim=True)
    others = n - m
    return torch.where(others > 0, (tot - v * m) / others.clamp_min(1.0), torch.zeros_like(v)) * m


def gpomdp_weights(rewards, mask=None, *, gamma: float, baseline=None) -> torch.Tensor:
    r"""GPOMDP weights :math:`\psi_{i,t} = \sum_{h\ge t}\gamma^h r_{i,h} - \gamma^t b_{i,t}`.

    Shapes: rewards, mask, baseline [batch, time] -> [batch, time].

    ``baseline`` is on the undiscounted scale of a value estimate
    :math:`b(s_t)`; it is multiplied by :math:`\gamma^t` here. It must not
    depend on the trajectory's own action at :math:`t` or later.
    """
    G = discounted_reward_to_go(rewards, mask, gamma=gamma)
    if baseline is None:
        return G
    b = as_tensor(baseline, name="baseline").to(G.device, G.dtype)
    if b.shape != G.shape:
        raise ValueError(f"baseline must have the shape of rewards {tuple(G.shape)}; got {tuple(b.shape)}.")
    check_finite(b, name="baseline")
    m = torch.ones_like(G) if mask is None else as_tensor(mask, name="mask").to(G.device, G.dtype)
    disc = gamma ** torch.arange(G.shape[1], dtype=G.dtype, device=G.device)
    return (G - disc * b) * m


def reinforce_weights(rewards, mask=None, *, gamma: float, baseline=None) -> torch.Tensor:
    r"""REINFORCE weights: the whole discounted return :math:`\sum_h\gamma^hr_{i,h} - b_i` at every step.

    Shapes: rewards, mask [batch, time], baseline [batch] -> [batch, time].
    """
    G = discounted_reward_to_go(rewards, mask, gamma=gamma)
    ret = G[:, :1]
    if baseline is not None:
        b = as_tensor(baseline, name="baseline").to(G.device, G.dtype)
        check_ndim(b, 1, name="baseline", layout="[batch]")
        if b.shape[0] != G.shape[0]:
            raise ValueError(f"baseline has {b.shape[0]} rows but rewards has {G.shape[0]}.")
        ret = ret - b[:, None]
    m = torch.ones_like(G) if mask is None else as_tensor(mask, name="mask").to(G.device, G.dtype)
    return ret * m


def trajectory_surrogate(log_probs: torch.Tensor, weights, mask=None) -> torch.Tensor:
    r""":math:`\Phi_i = \sum_t \mathrm{sg}(\psi_{i,t})\,\ell_{i,t}\,m_{i,t}`, differentiable through ``log_probs`` only.

    Shapes: log_probs, weights, mask [batch, time] -> [batch].
    """
    if not isinstance(log_probs, torch.Tensor):
        raise ValueError("log_probs must be a torch.Tensor carrying the policy's autograd graph.")
    check_ndim(log_probs, 2, name="log_probs", layout="[batch, time]")
    w = as_tensor(weights, name="weights").to(log_probs.device, log_probs.dtype)
    if w.shape != log_probs.shape:
        raise ValueError(f"weights must have the shape of log_probs {tuple(log_probs.shape)}; got {tuple(w.shape)}.")
    check_finite(w, name="weights")
    m = torch.ones_like(w) if mask is None else check_mask(as_tensor(mask, name="mask").to(w.device), w)
    lp = torch.where(m > 0, log_probs, torch.zeros_like(log_probs))  # masked steps may hold garbage
    return (w.detach() * m * lp).sum(1)


def trajectory_log_prob(log_probs: torch.Tensor, mask=None) -> torch.Tensor:
    r""":math:`\log p(\tau_i\mid\theta) = \sum_t \ell_{i,t}m_{i,t}` (policy part; dynamics do not depend on :math:`\theta`).

    Shapes: log_probs, mask [batch, time] -> [batch].
    """
    check_ndim(log_probs, 2, name="log_probs", layout="[batch, time]")
    if mask is None:
        return log_probs.sum(1)
    m = check_mask(as_tensor(mask, name="mask").to(log_probs.device), log_probs)
    return torch.where(m > 0, log_probs, torch.zeros_like(log_probs)).sum(1)


def _as_list(params: Params) -> tuple[list[torch.Tensor], bool]:
    if isinstance(params, torch.Tensor):
        return [params], True
    ps = list(params)
    if not ps or not all(isinstance(p, torch.Tensor) for p in ps):
        raise ValueError("params must be a tensor or a non-empty sequence of tensors (e.g. list(policy.parameters())).")
    return ps, False


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}.")


def _check_per_trajectory(x, name):
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor carrying the autograd graph of the policy.")
    check_ndim(x, 1, name=name, layout="[batch]")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: pass at least one trajectory.")


def _grads(out, ps, **kw):
    gs = torch.autograd.grad(out, ps, allow_unused=True, **kw)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, ps)]


def policy_gradient(surrogate: torch.Tensor, params: Params, *, reduction: Literal["mean", "sum"] = "mean"):
    r"""The gradient estimate :math:`\hat g = \nabla_\theta\,\mathrm{mean}_i\Phi_i` (or the sum).

    Shapes
    ------
    surrogate : [batch] -> same structure as ``params`` (a tensor, or a list of tensors).

    Returns
    -------
    Tensor or list of Tensor
        Detached, on the parameters' devices and dtypes.
    """
    _check_per_trajectory(surrogate, "surrogate")
    ps, single = _as_list(params)
    gs = [g.detach() for g in _grads(_reduce(surrogate, reduction), ps)]
    return gs[0] if single else gs


def hessian_vector_estimate(
    surrogate: torch.Tensor,
    log_prob: torch.Tensor,
    params: Params,
    vector: Params,
    *,
    reduction: Literal["mean", "sum"] = "mean",
    form: Literal["per-trajectory", "batch-product"] = "per-trajectory",
    product_scale: float = 1.0,
):
    r"""HARPG's estimate of :math:`\nabla^2J(\theta)v`: :math:`\mathrm{mean}_i[\nabla^2\Phi_i v + \nabla\Phi_i(\nabla\log p_i^\top v)]`.

    With ``form="batch-product"`` (opt-in; biased, lower variance):
    :math:`\nabla^2\bar\Phi v + c\,\nabla\bar\Phi(\nabla\bar\ell^\top v)` with
    :math:`c` = ``product_scale`` (see the module docstring).

    Parameters
    ----------
    surrogate : Tensor [batch]
        :math:`\Phi_i(\theta)`, e.g. :func:`trajectory_surrogate`; any
        function of :math:`\theta` with :math:`\mathbb{E}[\nabla\Phi] = \nabla J`
        identically near :math:`\theta` (see module docstring).
    log_prob : Tensor [batch]
        :math:`\log p(\tau_i\mid\theta)`, e.g. :func:`trajectory_log_prob`.
    params : Tensor or sequence of Tensor
        The leaves both were computed from.
    vector : same structure as ``params``
        :math:`v` (for HARPG, :math:`\theta_t - \theta_{t-1}`).
    reduction : {"mean", "sum"}
        ``"sum"`` is for the per-trajectory form only (it would mix the
        problems of a flattened multi-problem batch in the batch product).
    form : {"per-trajectory", "batch-product"}
    product_scale : float
        :math:`c` of the batch-product form. 1 keeps the unbiased
        estimator's sign and scale (biased only through the covariance of the
        two batch means); the authors' STORMHess code corresponds to
        :math:`c = -1/\bar T`, :math:`\bar T` the mean number of steps per
        trajectory of the Hessian batch: their loss is :math:`L = -\bar\Phi/\bar T`
        (garage's mean over steps) and they add ``jac * <grad(-mean_steps log pi), v>``
        to :math:`\nabla^2 L\,v`, i.e. :math:`-\nabla^2\bar\Phi v/\bar T +
        \nabla\bar\Phi(\nabla\bar\ell^\top v)/\bar T^2`; negating (the buffer holds
        loss gradients) and multiplying by :math:`\bar T` (the scale of
        :math:`\nabla\bar\Phi`) gives :math:`c=-1/\bar T`. Ignored by the
        per-trajectory form.

    Returns
    -------
    Tensor or list of Tensor
        Same structure as ``params``, detached.

    Notes
    -----
    Three autograd passes (one with ``create_graph``), memory linear in the
    number of parameters; the graphs of ``surrogate`` and ``log_prob`` are
    consumed.
    """
    if form not in ("per-trajectory", "batch-product"):
        raise ValueError(f"form must be 'per-trajectory' (unbiased) or 'batch-product' (the authors'); got {form!r}.")
    if form == "batch-product" and reduction != "mean":
        raise ValueError("form='batch-product' needs reduction='mean' (a sum would mix the problems of a flattened batch).")
    if not (isinstance(product_scale, (int, float)) and abs(product_scale) < float("inf")):
        raise ValueError(f"product_scale must be a finite number; got {product_scale!r}.")
    _check_per_trajectory(surrogate, "surrogate")
    _check_per_trajectory(log_prob, "log_prob")
    if surrogate.shape != log_prob.shape:
        raise ValueError(f"surrogate and log_prob must both have shape [batch]; got {tuple(surrogate.shape)} and {tuple(log_prob.shape)}.")
    ps, single = _as_list(params)
    vs, _ = _as_list(vector)
    if len(vs) != len(ps) or any(v.shape != p.shape for v, p in zip(vs, ps)):
        raise ValueError(
            f"vector must match params tensor by tensor; got shapes {[tuple(v.shape) for v in vs]} "
            f"for params {[tuple(p.shape) for p in ps]}."
        )
    vs = [v.detach().to(p.device, p.dtype) for v, p in zip(vs, ps)]
    if form == "batch-product":
        # grad(mean log p) . v as one scalar, then one backward of grad(mean Phi) . v + sg(scalar) * mean Phi
        lbar_grad = _grads(log_prob.mean(), ps, retain_graph=True)
        scalar = sum((a.detach() * v).sum() for a, v in zip(lbar_grad, vs))
        phibar = surrogate.mean()
        g_phi = _grads(phibar, ps, create_graph=True, retain_graph=True)
        inner = sum((g * v).sum() for g, v in zip(g_phi, vs)) + float(product_scale) * scalar * phibar
        out = [h.detach() for h in _grads(inner, ps)]
        return out[0] if single else out
    # c_i = grad log p_i . v  (double-backward trick: d/du [ (J^T u) . v ] = J v)
    u = torch.zeros_like(log_prob, requires_grad=True)
    jt_u = _grads(log_prob, ps, grad_outputs=u, create_graph=True, retain_graph=True)
    dot = sum((a * v).sum() for a, v in zip(jt_u, vs))
    if dot.requires_grad:
        c = torch.autograd.grad(dot, u, allow_unused=True)[0]
        c = torch.zeros_like(log_prob) if c is None else c.detach()
    else:
        c = torch.zeros_like(log_prob).detach()
    g_phi = _grads(_reduce(surrogate, reduction), ps, create_graph=True, retain_graph=True)
    inner = sum((g * v).sum() for g, v in zip(g_phi, vs)) + _reduce(c * surrogate, reduction)
    out = [h.detach() for h in _grads(inner, ps)]
    return out[0] if single else out
