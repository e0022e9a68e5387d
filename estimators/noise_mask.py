r"""Policy-gradient-driven noise masks: the mask policy, its REINFORCE estimator, and the mask operator.

Yavuz & Yang (arXiv 2406.14568) pretrain a classifier on images multiplied by a
noise mask :math:`m\in[0,1]^{G\times G}` drawn from a conditional policy
:math:`\pi_\theta(m\mid x)`, and train the policy with REINFORCE on the
classifier's loss. This module holds the pieces that are pure tensor maths:

* the mask distribution per grid cell (:func:`mask_log_prob`, :func:`sample_mask`):

  - ``family="beta"`` (the paper's): :math:`m_c\sim\mathrm{Beta}(e^{a_c}, e^{b_c})`
    independently over the cells, with log-density

    .. math:: \log\pi(m) = \sum_c (e^{a_c}-1)\log m_c + (e^{b_c}-1)\log(1-m_c) - \log B(e^{a_c}, e^{b_c});

  - ``family="bernoulli"`` (a discrete variant, here so that the estimator's
    expectation is a finite sum): :math:`m_c\sim\mathrm{Bernoulli}(\sigma(a_c))`
    (1 keeps the pixel, 0 drops it);

* the REINFORCE surrogate with a baseline (:func:`reinforce_mask_loss`): for a
  batch of images :math:`x_i`, masks :math:`m_i\sim\pi_\theta(\cdot\mid x_i)`
  and rewards :math:`R_i = R(x_i, m_i)`,

  .. math:: \hat g = \frac1n\sum_i (R_i - b_i)\,\nabla_\theta\log\pi_\theta(m_i\mid x_i),

  the gradient of :math:`J(\theta)=\frac1n\sum_i\mathbb E_{m\sim\pi_\theta(\cdot\mid x_i)}R(x_i,m)`
  (Williams 1992). It is unbiased when :math:`b_i` does not depend on
  :math:`m_i`: ``"none"``, a constant, or the leave-one-out mean
  :math:`b_i=\frac1{n-1}\sum_{j\ne i}R_j` (the masks of different images are
  drawn independently). The batch mean including :math:`R_i` itself is biased:
  :math:`\mathbb E\hat g = (1-\frac1n)\nabla J` (derived here: the own-reward
  term :math:`-\frac1n R_i\nabla\log\pi(m_i)` has mean :math:`-\frac1n\nabla
  \mathbb E R_i`); it is offered because it is common, and the tests measure the
  factor exactly;

* the authors' joint objective (:func:`authors_policy_loss`), for comparison;
* the mask operator (:func:`upsample_mask`): cell values upsampled to the image
  (nearest neighbour) and smoothed by a Gaussian blur, as in the authors' code.

The authors' code
-----------------
``ogrenenmakine/Policy-Gradient-Driven-Noise-Mask`` @ ece96ae0880a27ad439f0a77aedf909ba7b4e0dd
(``_policy_gradient/train_one_epoch.py``, ``_policy_gradient/create_model.py``):

* ``_dist = Beta(exp(new_alpha), exp(new_beta))``; ``_mask = _dist.sample()``
  (not ``rsample``: no gradient reaches the policy through the mask);
* the mask grid is resized to the crop with ``F.interpolate`` (its default,
  nearest) and blurred with ``torchvision.transforms.functional.gaussian_blur``
  (kernel 13, sigma 6, reflect padding);
* one loss for both networks:
  ``mean(log(sum(exp(logp), 1)) * CrossEntropyLoss()(model(image * mask), target))``,
  i.e. :math:`L=\bar C\cdot\frac1n\sum_i\log\sum_c\pi_c(m_{i,c})` with :math:`\bar C`
  the *batch-mean* cross-entropy (a cost, not detached) and a log-sum-exp of the
  per-cell log-densities, where the joint log-density is their sum. No baseline.

What the tests establish about that form (by enumeration, this module's
reconstruction): with the per-cell log-densities *summed*, the policy part of
the authors' loss has expectation :math:`\frac1n\nabla\,\mathbb E[\text{cost}]`
(every :math:`j\ne i` cross term has mean zero, so the batch mean is an
unbiased estimator scaled by :math:`1/n`, with extra variance); with the
log-sum-exp, the direction is not the gradient in general. :func:`authors_policy_loss`
offers both reductions. The paper's text is not available here: the reward
(the negative per-sample cross-entropy of the classifier on the masked image,
so that the policy and the classifier cooperate) is reconstructed from the
code's sign and is **[reconstructed]**; that the code's reduction is a quirk
rather than the paper's intent is **[unconfirmed]**.

References
----------
M. C. Yavuz and Y. Yang, "Policy Gradient-Driven Noise Mask", arXiv:2406.14568, 2024.
R. J. Williams, "Simple statistical gradient-following algorithms for
connectionist reinforcement learning", Machine Learning 8, 1992.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .checks import as_tensor, check_finite, check_ndim
from .pg_gradients import leave_one_out_baseline
from .sde import standard_gamma

__all__ = [
    "MASK_FAMILIES",
    "BASELINES",
    "MaskSample",
    "mask_log_prob",
    "mask_cell_log_prob",
    "sample_mask",
    "mask_baseline",
    "reinforce_mask_loss",
    "authors_policy_loss",
    "gaussian_kernel1d",
    "upsample_mask",
]

MASK_FAMILIES = ("beta", "bernoulli")
BASELINES = ("leave-one-out", "batch-mean", "none")

#: Beta draws are kept this far from 0 and 1 before taking logs (float32 sampling can round to 0 or 1
#: when a concentration is small); in float64 the clamp is inactive for the concentrations used here.
_EPS = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 1e-6, torch.float64: 1e-12}


@dataclass(frozen=True)
class MaskSample:
    """A batch of masks and their log-probabilities.

    Attributes
    ----------
    mask : Tensor [batch, cells]
        Values in [0, 1] (``beta``) or {0, 1} (``bernoulli``); no gradient.
    log_prob : Tensor [batch]
        Joint log-density (log-probability) :math:`\\sum_c\\log\\pi_c(m_c)`, differentiable in the parameters.
    cell_log_prob : Tensor [batch, cells]
        The per-cell terms.
    """

    mask: torch.Tensor
    log_prob: torch.Tensor
    cell_log_prob: torch.Tensor


def _check_family(family: str) -> None:
    if family not in MASK_FAMILIES:
        raise ValueError(f"family must be one of {MASK_FAMILIES}; got {family!r}.")


def _params(log_alpha, log_beta, family: str):
    _check_family(family)
    a = as_tensor(log_alpha, name="log_alpha")
    check_ndim(a, 2, name="log_alpha", layout="[batch, cells]")
    check_finite(a, name="log_alpha")
    if not a.is_floating_point():
        raise ValueError(f"log_alpha must be a floating tensor; got dtype {a.dtype}.")
    if family == "bernoulli":
        if log_beta is not None:
            raise ValueError("log_beta: the bernoulli family has one parameter per cell (logits in log_alpha); pass log_beta=None.")
        return a, None
    if log_beta is None:
        raise ValueError("log_beta is required for family='beta' (shape [batch, cells], like log_alpha).")
    b = as_tensor(log_beta, name="log_beta").to(a.dtype)
    if b.shape != a.shape:
        raise ValueError(f"log_alpha and log_beta must have the same shape [batch, cells]; got {tuple(a.shape)} and {tuple(b.shape)}.")
    check_finite(b, name="log_beta")
    return a, b


def mask_cell_log_prob(mask, log_alpha, log_beta=None, *, family: Literal["beta", "bernoulli"] = "beta") -> torch.Tensor:
    r"""Per-cell log-density :math:`\log\pi_c(m_c)` of a mask under the policy's parameters.

    Parameters
    ----------
    mask : Tensor [batch, cells]
        Values in (0, 1) for ``beta`` (clamped to ``[eps, 1 - eps]``, eps 1e-6 in float32,
        1e-12 in float64), in {0, 1} for ``bernoulli``.
    log_alpha : Tensor [batch, cells]
        ``beta``: log of the first concentration :math:`a_c` (:math:`\alpha_c=e^{a_c}`);
        ``bernoulli``: logit of the keep probability.
    log_beta : Tensor [batch, cells] or None
        ``beta``: log of the second concentration; ``bernoulli``: must be ``None``.
    family : {"beta", "bernoulli"}

    Returns
    -------
    Tensor [batch, cells]
        Differentiable in ``log_alpha`` and ``log_beta``; the mask is treated as data.

    Notes
    -----
    ``beta``: :math:`(\alpha-1)\log m + (\beta-1)\log(1-m) - \ln\Gamma(\alpha) - \ln\Gamma(\beta) + \ln\Gamma(\alpha+\beta)`,
    the same value as ``torch.distributions.Beta(exp(a), exp(b)).log_prob(m)`` (the authors' call; tested).
    """
    a, b = _params(log_alpha, log_beta, family)
    m = as_tensor(mask, name="mask").to(a.dtype)
    if m.shape != a.shape:
        raise ValueError(f"mask must have the shape of log_alpha {tuple(a.shape)} ([batch, cells]); got {tuple(m.shape)}.")
    m = m.detach()
    if family == "bernoulli":
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("mask: the bernoulli family takes masks with values in {0, 1}; got other values.")
        # log sigma(a) for m = 1, log(1 - sigma(a)) = log sigma(-a) for m = 0
        return torch.nn.functional.logsigmoid(torch.where(m > 0.5, a, -a))
    if not bool(((m >= 0) & (m <= 1)).all()):
        raise ValueError("mask: the beta family takes masks with values in [0, 1]; got values outside.")
    eps = _EPS.get(a.dtype, 1e-6)
    m = m.clamp(eps, 1 - eps)
    alpha, beta = a.exp(), b.exp()
    return ((alpha - 1) * m.log() + (beta - 1) * torch.log1p(-m)
            - torch.lgamma(alpha) - torch.lgamma(beta) + torch.lgamma(alpha + beta))


def mask_log_prob(mask, log_alpha, log_beta=None, *, family: Literal["beta", "bernoulli"] = "beta") -> torch.Tensor:
    r"""Joint log-density :math:`\log\pi(m)=\sum_c\log\pi_c(m_c)` (cells independent). Shapes: [batch, cells] -> [batch]."""
    return mask_cell_log_prob(mask, log_alpha, log_beta, family=family).sum(-1)


def sample_mask(log_alpha, log_beta=None, *, family: Literal["beta", "bernoulli"] = "beta",
                generator: torch.Generator) -> MaskSample:
    r"""Draw one mask per row from the policy's per-cell distribution, from ``generator`` only.

    ``beta``: :math:`m = G_1/(G_1+G_2)` with :math:`G_1\sim\Gamma(e^{a}, 1)`, :math:`G_2\sim\Gamma(e^{b}, 1)`
    (:func:`polab.estimators.sde.standard_gamma`, Marsaglia & Tsang); ``bernoulli``:
    :math:`m = \mathbb 1[U < \sigma(a)]`. The draw carries no gradient (score-function
    estimator, as the authors' ``Beta.sample()``); ``log_prob`` does.

    Parameters
    ----------
    log_alpha, log_beta : Tensor [batch, cells]
        As in :func:`mask_cell_log_prob`.
    family : {"beta", "bernoulli"}
    generator : torch.Generator
        On the parameters' device.

    Returns
    -------
    MaskSample
    """
    a, b = _params(log_alpha, log_beta, family)
    with torch.no_grad():
        if family == "bernoulli":
            u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
            m = (u < torch.sigmoid(a)).to(a.dtype)
        else:
            g1 = standard_gamma(a.detach().exp(), generator=generator)
            g2 = standard_gamma(b.detach().exp(), generator=generator)
            m = g1 / (g1 + g2)
            m = torch.where(torch.isfinite(m), m, torch.full_like(m, 0.5))  # 0/0 only if both underflow
    cell = mask_cell_log_prob(m, a, b, family=family)
    return MaskSample(mask=m, log_prob=cell.sum(-1), cell_log_prob=cell)


def mask_baseline(reward, *, baseline: str | float | torch.Tensor = "leave-one-out") -> torch.Tensor:
    r"""The baseline :math:`b_i` subtracted from each reward.

    Parameters
    ----------
    reward : Tensor [batch]
    baseline : {"leave-one-out", "batch-mean", "none"}, float or Tensor [batch]
        ``"leave-one-out"``: :math:`\frac1{n-1}\sum_{j\ne i}R_j` (unbiased; needs ``batch >= 2``;
        :func:`polab.estimators.pg_gradients.leave_one_out_baseline`); ``"batch-mean"``: :math:`\frac1n\sum_jR_j`
        (biased by the factor :math:`1-1/n`); ``"none"``: 0; a number or a tensor: used as given (it must not depend on
        the batch's own masks for the estimate to stay unbiased, e.g. an average of earlier batches).

    Returns
    -------
    Tensor [batch]
        Detached.
    """
    r = as_tensor(reward, name="reward")
    check_ndim(r, 1, name="reward", layout="[batch]")
    check_finite(r, name="reward")
    r = r.detach()
    if isinstance(baseline, str):
        if baseline == "none":
            return torch.zeros_like(r)
        if baseline == "batch-mean":
            return r.mean().expand_as(r).clone()
        if baseline == "leave-one-out":
            if r.shape[0] < 2:
                raise ValueError("baseline='leave-one-out' needs a batch of at least 2 rewards; got 1. "
                                 "Use a larger batch or baseline='none'.")
            return leave_one_out_baseline(r[:, None])[:, 0]
        raise ValueError(f"baseline must be one of {BASELINES}, a number or a tensor [batch]; got {baseline!r}.")
    b = as_tensor(baseline, name="baseline").to(r.device, r.dtype).detach()
    if b.ndim == 0:
        b = b.expand_as(r).clone()
    if b.shape != r.shape:
        raise ValueError(f"baseline must be a number or have the shape of reward {tuple(r.shape)}; got {tuple(b.shape)}.")
    check_finite(b, name="baseline")
    return b


def reinforce_mask_loss(log_prob: torch.Tensor, reward, *, baseline: str | float | torch.Tensor = "leave-one-out") -> torch.Tensor:
    r"""REINFORCE surrogate loss :math:`L = -\frac1n\sum_i (R_i-b_i)\log\pi_\theta(m_i\mid x_i)`.

    Minimising :math:`L` by gradient descent ascends the expected reward:
    :math:`-\nabla_\theta L = \hat g` of the module docstring. Rewards and the
    baseline are detached, so only the policy parameters behind ``log_prob`` get a gradient.

    Parameters
    ----------
    log_prob : Tensor [batch]
        Joint log-densities of the drawn masks (:attr:`MaskSample.log_prob`).
    reward : Tensor [batch]
        E.g. minus the classifier's per-sample cross-entropy on the masked image.
    baseline : see :func:`mask_baseline`

    Returns
    -------
    Tensor []
        Scalar loss, in ``log_prob``'s dtype and device.
    """
    lp = as_tensor(log_prob, name="log_prob")
    check_ndim(lp, 1, name="log_prob", layout="[batch]")
    r = as_tensor(reward, name="reward").to(lp.device, lp.dtype)
    if r.shape != lp.shape:
        raise ValueError(f"reward must have the shape of log_prob {tuple(lp.shape)} ([batch]); got {tuple(r.shape)}.")
    b = mask_baseline(r, baseline=baseline)
    return -((r.detach() - b) * lp).mean()


def authors_policy_loss(cell_log_prob: torch.Tensor, cost: torch.Tensor, *,
                        reduction: Literal["logsumexp", "sum"] = "logsumexp") -> torch.Tensor:
    r"""The authors' joint objective :math:`L = \bar C\cdot\frac1n\sum_i \rho(\ell_{i,\cdot})` (minimised).

    :math:`\rho` is ``log(sum(exp(.)))`` over the cells (``"logsumexp"``, the
    authors' code) or their sum, the joint log-density (``"sum"``). ``cost`` is the
    batch-mean cross-entropy :math:`\bar C` (a scalar). As in the authors' code it is
    *not* detached here: when it carries the classifier's graph, the classifier's
    gradient is scaled by :math:`\frac1n\sum_i\rho_i`; detach it to get the policy part only.

    Parameters
    ----------
    cell_log_prob : Tensor [batch, cells]
    cost : Tensor [] or [batch]
        A per-sample cost is averaged over the batch first, as ``CrossEntropyLoss()`` does.
    reduction : {"logsumexp", "sum"}

    Returns
    -------
    Tensor []

    Notes
    -----
    Source: ``_policy_gradient/train_one_epoch.py`` @ ece96ae0880a27ad439f0a77aedf909ba7b4e0dd,
    ``loss = torch.mean(torch.log(torch.sum(logp.exp(), 1)) * criterion(output, target))``.
    With ``"sum"``, :math:`\mathbb E[-\nabla L] = -\frac1n\nabla\,\mathbb E[\text{cost}]` (see the module
    docstring; checked by enumeration in the tests).
    """
    lp = as_tensor(cell_log_prob, name="cell_log_prob")
    check_ndim(lp, 2, name="cell_log_prob", layout="[batch, cells]")
    c = as_tensor(cost, name="cost").to(lp.device, lp.dtype)
    if c.ndim == 1:
        if c.shape[0] != lp.shape[0]:
            raise ValueError(f"cost must be a scalar or have shape [batch] = ({lp.shape[0]},); got {tuple(c.shape)}.")
        c = c.mean()
    elif c.ndim != 0:
        raise ValueError(f"cost must be a scalar (the batch-mean cross-entropy) or [batch]; got shape {tuple(c.shape)}.")
    if reduction == "logsumexp":
        rho = torch.logsumexp(lp, dim=1)
    elif reduction == "sum":
        rho = lp.sum(1)
    else:
        raise ValueError(f"reduction must be 'logsumexp' (the authors' code) or 'sum' (joint log-density); got {reduction!r}.")
    return rho.mean() * c


def gaussian_kernel1d(kernel_size: int, sigma: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    r"""Normalised 1-d Gaussian kernel on the integer offsets :math:`-(k-1)/2,\dots,(k-1)/2`.

    :math:`w_j\propto\exp(-x_j^2/(2\sigma^2))`, :math:`\sum_jw_j=1`; the same weights as
    ``torchvision.transforms.functional.gaussian_blur``'s kernel (torchvision 0.x
    ``_get_gaussian_kernel1d``; written here from the formula). Shapes: -> [kernel_size].
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1; got {kernel_size!r}.")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}.")
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def upsample_mask(mask, *, grid: int, size: int, kernel_size: int = 0, sigma: float = 1.0) -> torch.Tensor:
    r"""Cell values -> an image-sized mask: nearest-neighbour resize, then a separable Gaussian blur.

    Parameters
    ----------
    mask : Tensor [batch, grid * grid]
        Row-major cells (values in [0, 1]).
    grid : int
        Cells per side.
    size : int
        Image side in pixels (``size >= grid``).
    kernel_size : int
        Odd blur width; 0 or 1: no blur. With ``kernel_size // 2 < size`` (reflect padding needs it).
    sigma : float
        Blur standard deviation in pixels.

    Returns
    -------
    Tensor [batch, 1, size, size]
        Values in [0, 1] (a convex combination of the cells); multiply the images by it.

    Notes
    -----
    The authors resize with ``F.interpolate`` (mode ``"nearest"``, pixel ``p`` takes cell
    ``floor(p * grid / size)``) and blur with torchvision's ``gaussian_blur`` (reflect padding);
    both are reproduced here, so a constant mask stays constant.
    """
    m = as_tensor(mask, name="mask")
    check_ndim(m, 2, name="mask", layout="[batch, grid * grid]")
    for name, v in (("grid", grid), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {v!r}.")
    if m.shape[1] != grid * grid:
        raise ValueError(f"mask has {m.shape[1]} cells per row; grid={grid} needs grid * grid = {grid * grid}.")
    if size < grid:
        raise ValueError(f"size ({size}) must be at least grid ({grid}).")
    x = m.reshape(-1, 1, grid, grid)
    idx = (torch.arange(size, device=m.device) * grid) // size  # nearest: floor(p * grid / size)
    x = x[:, :, idx][:, :, :, idx]
    if kernel_size in (0, 1):
        return x
    if kernel_size // 2 >= size:
        raise ValueError(f"kernel_size ({kernel_size}) must satisfy kernel_size // 2 < size ({size}) for reflect padding.")
    w = gaussian_kernel1d(kernel_size, sigma, dtype=x.dtype, device=x.device)
    p = kernel_size // 2
    x = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")
    x = torch.nn.functional.conv2d(x, w.reshape(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(x, w.reshape(1, 1, -1, 1))
    return x
