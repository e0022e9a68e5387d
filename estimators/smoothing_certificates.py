r"""Certificates on the total reward of a smoothed policy from Monte Carlo episodes.

Given :math:`n` returns :math:`R_1,\dots,R_n` of independent *clean* episodes
of a policy smoothed by Gaussian observation noise of scale :math:`\sigma`
(no adversary), this module gives, for a grid of adversarial budgets
:math:`B` at once,

* lower confidence bounds :math:`\underline p_k` on the clean tails
  :math:`P[R\ge t_k]`, by the Dvoretzky–Kiefer–Wolfowitz inequality (valid
  simultaneously for every threshold, so data-dependent thresholds are
  allowed) or by one-sided Clopper–Pearson bounds with a Bonferroni
  correction over a threshold grid fixed before seeing the data;
* the certified lower bound on the attacked expected total reward,
  :math:`a + \sum_k (t_k-t_{k-1})\Phi(\Phi^{-1}(\underline p_k)-B/\sigma)`,
  eq. (2) of :mod:`polab.theory.policy_smoothing`, which holds against every
  adaptive adversary of total :math:`\ell_2` budget :math:`B` with
  probability at least :math:`1-\alpha` over the :math:`n` episodes;
* certified percentiles, eq. (3) of :mod:`polab.theory.policy_smoothing`.

The per-budget arithmetic is the same formula as
:func:`polab.theory.policy_smoothing.certified_expected_reward`, written here in
torch so that it follows the inputs' device and dtype and runs for
:math:`10^6` returns and 100 budgets in one matrix product
(``benchmarks/smoothing_certificates.py``); the tests check the two against
each other to float64 rounding.

Conventions
-----------
* DKW: :math:`\underline p(t) = \max(\bar F_n(t) - \sqrt{\ln(2/\alpha)/(2n)}, 0)`
  with :math:`\bar F_n(t) = \#\{R_i\ge t\}/n`. The two-sided constant
  :math:`\ln(2/\alpha)` (Massart 1990) is conservative for a one-sided bound;
  it is the constant of the third-party implementation the notes read
  (``mrh996/ReCePS``, ``Freeway/freeway_plot_certs.py::dkw_cohen``), kept so
  that numbers are comparable. The sup over thresholds of
  :math:`|\bar F_n(t)-P[R\ge t]|` equals the sup of the CDF deviation at
  left limits, so the DKW band covers the tails at every :math:`t`.
* Clopper–Pearson: :math:`\underline p_k` is the :math:`\alpha/m` quantile of
  :math:`\mathrm{Beta}(k_k, n-k_k+1)` (0 when :math:`k_k=0`), i.e.
  ``statsmodels.proportion_confint(k, n, alpha=2*alpha/m, method="beta")[0]``,
  the convention of ``locuslab/smoothing`` (``core.py``, commit 78a4d949) and of
  ``mrh996/ReCePS`` (``Cartpole/cartpole_multiframe_plot_certs.py``), tested
  against statsmodels.
* Which of the two the paper used for which environment is unconfirmed
  (notes §3.4); both are provided.
* Precision: every bound is computed in float64 whatever the dtype of
  ``returns`` and cast back to it *rounded toward minus infinity*
  (:func:`round_down_to`), so a float32 certificate never lies above the
  float64 one (before this, float32 arithmetic gave certificates up to about
  1e-5 above the float64 value on 0-200 returns).
* Combining DKW and Clopper–Pearson: each method's certificate holds with
  probability :math:`1-\alpha` on its own; the larger of the two, each at
  level :math:`\alpha`, does not. :func:`certify_returns_bonferroni` computes
  each at :math:`\alpha/2` (Bonferroni), so that the larger holds with
  probability :math:`\ge 1-\alpha`.
* Vacuous certificates: when the sample cannot certify anything at the
  requested confidence (every tail lower bound is 0, e.g. DKW with
  :math:`n < \ln(2/\alpha)/2`), or when the certified value at some budget
  equals the declared minimum reward, the result says so (``vacuous``) and
  the certified value is exactly ``reward_min``, never a number above it.

References
----------
Kumar, Levine, Feizi, "Policy Smoothing for Provably Robust Reinforcement
Learning", ICLR 2022 (arXiv 2106.11420).
Dvoretzky, Kiefer, Wolfowitz, Ann. Math. Statist. 27 (1956); Massart, "The
tight constant in the Dvoretzky–Kiefer–Wolfowitz inequality", Ann. Probab.
18 (1990).
Clopper, Pearson, "The use of confidence or fiducial limits illustrated in
the case of the binomial", Biometrika 26 (1934).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.stats import beta as beta_dist

from .checks import as_tensor, check_finite, check_ndim

__all__ = [
    "SmoothingCertificate",
    "check_certificate_inputs",
    "empirical_tail",
    "dkw_tail_lower_bounds",
    "clopper_pearson_tail_lower_bounds",
    "attacked_tail_lower_bounds",
    "certify_returns",
    "BonferroniCertificate",
    "certify_returns_bonferroni",
    "round_down_to",
]

Method = Literal["dkw", "clopper-pearson"]


@dataclass(frozen=True)
class SmoothingCertificate:
    r"""Certified-reward-versus-budget curve of a smoothed policy.

    Attributes
    ----------
    budgets : Tensor, shape [K]
        Total :math:`\ell_2` budgets :math:`B`.
    expected_reward : Tensor, shape [K]
        Certified lower bound on the attacked expected total reward at each
        budget (``reward_min`` where vacuous).
    percentile_levels : Tensor, shape [L]
    percentiles : Tensor, shape [L, K]
        Certified lower bounds on the attacked quantiles.
    thresholds : Tensor, shape [m]
    tail_lower_bounds : Tensor, shape [m]
        Clean tail lower bounds :math:`\underline p_k` (confidence ``1 - alpha``
        simultaneously).
    empirical_mean : float
        Mean of the clean returns (not certified; for reference).
    vacuous : Tensor of bool, shape [K]
        True where nothing beyond ``reward_min`` is certified.
    alpha : float
        The certificate holds simultaneously for all budgets with probability
        at least ``1 - alpha`` over the episodes.
    n : int
    sigma : float
    method : str
    reward_min, reward_max : float
        The declared reward range.
    reason : str
        Empty, or why the certificate is vacuous.
    """

    budgets: torch.Tensor
    expected_reward: torch.Tensor
    percentile_levels: torch.Tensor
    percentiles: torch.Tensor
    thresholds: torch.Tensor
    tail_lower_bounds: torch.Tensor
    empirical_mean: float
    vacuous: torch.Tensor
    alpha: float
    n: int
    sigma: float
    method: str
    reward_min: float
    reward_max: float
    reason: str = ""

    @property
    def confidence(self) -> float:
        """``1 - alpha``."""
        return 1.0 - self.alpha


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------
def _scalar(value, *, name: str, what: str) -> float:
    """``value`` as a Python float if it is a real number (or a one-element tensor/array), else a clear ValueError."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    elif isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number ({what}); got {value!r} ({type(value).__name__}). "
                         f"Pass a float, e.g. {name}=0.2.")
    return float(value)


def _positive_float(value, *, name: str, what: str) -> float:
    """``value`` as a finite float > 0, or a ValueError naming ``name``, the value and the fix."""
    v = _scalar(value, name=name, what=what)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0 ({what}); got {value!r}.")
    return v


def _alpha(alpha) -> float:
    a = _scalar(alpha, name="alpha", what="the failure probability of the certificate, e.g. 0.05")
    if not (0.0 < a < 1.0):
        raise ValueError(f"alpha must lie strictly between 0 and 1 (e.g. 0.05 for 95% confidence); got {alpha}.")
    return a


def _returns_tensor(returns) -> torch.Tensor:
    """``returns`` as a 1-d tensor (float64 for lists, arrays and integer tensors), with a clear error otherwise."""
    if returns is None or isinstance(returns, (str, bytes, dict)):
        raise ValueError(f"returns must be a 1-d sequence of episode returns (numbers), shape [episodes]; "
                         f"got {type(returns).__name__}. Pass e.g. a list, numpy array or tensor of returns.")
    if not isinstance(returns, torch.Tensor):  # lists: float64 directly (see _like)
        try:
            arr = np.asarray(returns, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"returns must be a 1-d sequence of episode returns (numbers); got "
                             f"{type(returns).__name__} that does not convert to numbers ({exc}).") from exc
        returns = torch.from_numpy(arr.copy())
    r = as_tensor(returns, name="returns")
    check_ndim(r, 1, name="returns", layout="[episodes]")
    if r.numel() == 0:
        raise ValueError("returns is empty; run at least one episode.")
    if r.dtype == torch.bool or r.is_complex():
        raise ValueError(f"returns must be real numbers; got dtype {r.dtype}.")
    return r


def round_down_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` (float64) cast to ``dtype``, rounded toward minus infinity so that the result never exceeds ``x``.

    A lower bound cast to float32 by round-to-nearest can land above the float64 value; this moves such
    entries one float32 step down. Identity for float64.
    """
    if dtype == x.dtype:
        return x
    y = x.to(dtype)
    up = y.to(x.dtype) > x
    if bool(up.any()):
        y = torch.where(up, torch.nextafter(y, torch.full_like(y, -math.inf)), y)
    return y


def check_certificate_inputs(returns, *, sigma, alpha, reward_range, budgets=None) -> tuple:
    """Validate and convert the shared inputs; returns ``(returns, sigma, alpha, lo, hi, budgets)``.

    ``returns`` and ``budgets`` come back in float64 (on the device of ``returns``): every bound is
    computed in float64 and rounded down to the input dtype at the end (:func:`round_down_to`).
    """
    r = _returns_tensor(returns)
    check_finite(r, name="returns")
    r = r.to(torch.float64)
    s = _positive_float(sigma, name="sigma", what="the smoothing noise scale")
    a = _alpha(alpha)
    try:
        lo, hi = (float(x) for x in reward_range)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"reward_range must be a pair (reward_min, reward_max); got {reward_range!r}.") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"reward_range must be finite with reward_min < reward_max; got {reward_range!r}.")
    rmin, rmax = float(r.min()), float(r.max())
    if rmin < lo or rmax > hi:
        raise ValueError(
            f"returns must lie in the declared reward_range [{lo}, {hi}]; got values in [{rmin}, {rmax}]. "
            "Declare the true range of the episode return (the certificate is only valid inside it)."
        )
    b = None
    if budgets is not None:
        b = _like(budgets, r, name="budgets")
        if b.numel() == 0 or not bool(torch.isfinite(b).all()) or bool((b < 0).any()):
            raise ValueError(f"budgets must be a non-empty list of finite numbers >= 0; got {b.tolist()}.")
    return r, s, a, lo, hi, b


def _out_dtype(returns) -> torch.dtype:
    """The dtype results are returned in: that of a floating tensor ``returns``, else float64."""
    if isinstance(returns, torch.Tensor) and returns.is_floating_point():
        return returns.dtype
    return torch.float64


def _like(x, r: torch.Tensor, *, name: str) -> torch.Tensor:
    """``x`` as a 1-d tensor in ``r``'s dtype and device.

    Python lists and numpy arrays go through float64 numpy first:
    ``torch.as_tensor([0.1])`` (and so ``polab.estimators.checks.as_tensor``) makes a
    float32 tensor, which would round a budget of 0.1 to 0.10000000149.
    """
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.from_numpy(np.asarray(x, dtype=np.float64).copy())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a sequence of numbers; got {x!r}.") from exc
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must be real numbers; got dtype {x.dtype}.")
    return x.to(device=r.device, dtype=r.dtype).reshape(-1)


def _thresholds_tensor(thresholds, r: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    t = _like(thresholds, r, name="thresholds")
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError("thresholds must be a non-empty list of finite numbers.")
    if t.numel() > 1 and bool((t[1:] <= t[:-1]).any()):
        raise ValueError("thresholds must be strictly increasing; sort them and drop duplicates.")
    if float(t[0]) <= lo or float(t[-1]) > hi:
        raise ValueError(f"thresholds must lie in (reward_min, reward_max] = ({lo}, {hi}]; got [{float(t[0])}, {float(t[-1])}].")
    return t


# ---------------------------------------------------------------------------
# tails
# ---------------------------------------------------------------------------
def _tail64(returns, thresholds) -> tuple[torch.Tensor, int, torch.dtype]:
    """Empirical tail in float64, the number of returns, and the dtype to return results in."""
    r = _returns_tensor(returns)
    out = _out_dtype(returns)
    t = _like(thresholds, r, name="thresholds").to(torch.float64)
    rs, _ = torch.sort(r.to(torch.float64))
    below = torch.searchsorted(rs, t, right=False)  # number of returns < t
    return (r.numel() - below).to(torch.float64) / r.numel(), r.numel(), out


def empirical_tail(returns: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    r"""Empirical tail :math:`\bar F_n(t) = \#\{R_i \ge t\}/n` at each threshold.

    Shapes
    ------
    returns [n], thresholds [m] -> [m], in the dtype (float64 for integer
    input) and device of ``returns``; counted in float64. Sorting costs
    :math:`O(n\log n + m\log n)`.
    """
    tail, _, out = _tail64(returns, thresholds)
    return tail.to(out)


def dkw_tail_lower_bounds(returns, thresholds, *, alpha: float) -> torch.Tensor:
    r"""DKW lower bounds :math:`\max(\bar F_n(t) - \sqrt{\ln(2/\alpha)/(2n)}, 0)`, simultaneous over all :math:`t`.

    Computed in float64 and rounded down to the dtype of ``returns``.

    Shapes
    ------
    returns [n], thresholds [m] -> [m].
    """
    a = _alpha(alpha)
    tail, n, out = _tail64(returns, thresholds)
    eps = math.sqrt(math.log(2.0 / a) / (2.0 * n))
    return round_down_to(torch.clamp(tail - eps, min=0.0), out)


def clopper_pearson_tail_lower_bounds(returns, thresholds, *, alpha: float) -> torch.Tensor:
    r"""One-sided Clopper–Pearson lower bounds at level :math:`\alpha/m` each (Bonferroni over the :math:`m` thresholds).

    .. math:: \underline p_k = \mathrm{Beta}^{-1}\big(\alpha/m;\ k_k,\ n-k_k+1\big),
        \quad k_k = \#\{R_i \ge t_k\},\qquad \underline p_k = 0 \text{ if } k_k = 0.

    The thresholds must be fixed before the returns are seen (Bonferroni is
    over a fixed family), e.g. the integers of an integer-valued return.
    Computed in float64 and rounded down to the dtype of ``returns``.

    Shapes
    ------
    returns [n], thresholds [m] -> [m].
    """
    a = _alpha(alpha)
    tail, n, out = _tail64(returns, thresholds)
    m = tail.numel()
    k = np.rint(tail.detach().cpu().numpy() * n)
    with np.errstate(invalid="ignore"):
        lower = np.where(k > 0, beta_dist.ppf(a / m, np.maximum(k, 1), n - k + 1), 0.0)
    return round_down_to(torch.as_tensor(lower, dtype=torch.float64, device=tail.device), out)


def attacked_tail_lower_bounds(tail_lower_bounds: torch.Tensor, budgets: torch.Tensor, *, sigma: float) -> torch.Tensor:
    r""":math:`\Phi(\Phi^{-1}(\underline p_k) - B_j/\sigma)` for every budget and threshold (eq. (1) of the theory module).

    Parameters
    ----------
    tail_lower_bounds : Tensor, shape [m]
        Clean tail lower bounds in :math:`[0, 1]`.
    budgets : Tensor or sequence, shape [K]
        Budgets :math:`B \ge 0`.
    sigma : float, > 0
        Smoothing noise scale. A negative ``sigma`` would turn the bound into
        one *above* the clean tail, so it raises instead.

    Returns
    -------
    Tensor, shape [K, m]
        Computed in float64 and rounded down to the dtype of
        ``tail_lower_bounds`` (float64 for non-tensor input).

    Shapes
    ------
    tail_lower_bounds [m], budgets [K] -> [K, m].
    """
    s = _positive_float(sigma, name="sigma", what="the smoothing noise scale")
    out = _out_dtype(tail_lower_bounds)
    if tail_lower_bounds is None:
        raise ValueError("tail_lower_bounds must be a 1-d sequence of probabilities in [0, 1]; got None.")
    p = _like(tail_lower_bounds, torch.empty(0, dtype=torch.float64, device=tail_lower_bounds.device
                                             if isinstance(tail_lower_bounds, torch.Tensor) else "cpu"),
              name="tail_lower_bounds")
    if p.numel() == 0 or not bool(torch.isfinite(p).all()) or bool(((p < 0) | (p > 1)).any()):
        raise ValueError(f"tail_lower_bounds must be a non-empty list of probabilities in [0, 1]; got {p.tolist()[:8]}.")
    b = _like(budgets, p, name="budgets")
    if b.numel() == 0 or not bool(torch.isfinite(b).all()) or bool((b < 0).any()):
        raise ValueError(f"budgets must be a non-empty list of finite numbers >= 0; got {b.tolist()[:8]}.")
    z = torch.special.ndtri(p)
    return round_down_to(_normal_cdf(z.unsqueeze(0) - b.reshape(-1, 1) / s), out)


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\Phi(x) = \tfrac12\operatorname{erfc}(-x/\sqrt2)`.

    ``torch.special.ndtr`` (torch 2.13, CPU) loses relative accuracy in the
    lower tail (measured: 3% relative error near x = -8, 0 at x = -30 where
    the value is 4.9e-198); the erfc form agrees with ``scipy.special.ndtr``
    to 2e-13 relative on [-30, 8] in float64.
    """
    return 0.5 * torch.special.erfc(-x / math.sqrt(2.0))


def _percentiles(t: torch.Tensor, z: torch.Tensor, shift: torch.Tensor, levels: torch.Tensor, lo: float) -> torch.Tensor:
    r"""Eq. (3) of the theory module for every level and budget without a [levels, budgets, m] array.

    :math:`\Phi(z_k - B/\sigma) > 1-\ell \iff z_k > \Phi^{-1}(1-\ell) + B/\sigma`
    (:math:`\Phi` is increasing), so the certified percentile is the largest
    threshold among those with :math:`z_k` above a cut: a suffix maximum of the
    thresholds sorted by :math:`z`, read off by binary search. Shapes: t, z [m],
    shift [K], levels [L] -> [L, K]. :func:`polab.theory.policy_smoothing.certified_percentile`
    uses the same comparison.
    """
    z_sorted, order = torch.sort(z)
    suffix_max = torch.flip(torch.cummax(torch.flip(t[order], [0]), 0).values, [0])
    cut = torch.special.ndtri(1.0 - levels).reshape(-1, 1) + shift.reshape(1, -1)  # [L, K]
    first = torch.searchsorted(z_sorted, cut.contiguous(), right=True)  # first index with z > cut
    padded = torch.cat([suffix_max, torch.tensor([lo], dtype=t.dtype, device=t.device)])
    return padded[first]


# ---------------------------------------------------------------------------
# certificate
# ---------------------------------------------------------------------------
def certify_returns(
    returns,
    *,
    budgets,
    sigma: float,
    alpha: float = 0.05,
    reward_range: tuple[float, float],
    method: Method = "dkw",
    thresholds=None,
    num_thresholds: int = 200,
    percentile_levels=(0.1, 0.25, 0.5),
) -> SmoothingCertificate:
    r"""Certified attacked expected reward and percentiles versus budget, from clean smoothed returns.

    .. math::

        \mathbb E_{adv}[R] \ge a + \sum_{k=1}^m (t_k-t_{k-1})\,
        \Phi\big(\Phi^{-1}(\underline p_k) - B/\sigma\big)

    holds for every budget :math:`B` in ``budgets`` and every adaptive
    adversary of total :math:`\ell_2` budget :math:`B`, simultaneously, with
    probability at least :math:`1-\alpha` over the episodes.

    Parameters
    ----------
    returns : Tensor or array, shape [n]
        Total rewards of :math:`n` independent clean smoothed episodes, inside
        ``reward_range``.
    budgets : sequence or Tensor, shape [K]
        Budgets :math:`B\ge 0` (same units as the observations and ``sigma``).
    sigma : float, > 0
        Scale of the smoothing noise the episodes were run with.
    alpha : float in (0, 1)
        Failure probability of the certificate.
    reward_range : (float, float)
        Declared range :math:`[a, b]` of the return; :math:`a` enters the
        bound, returns outside the range raise.
    method : {"dkw", "clopper-pearson"}
    thresholds : sequence, shape [m], optional
        Strictly increasing thresholds in :math:`(a, b]`. Default: for DKW the
        sorted distinct returns above :math:`a` (allowed because the DKW band
        is uniform); for Clopper–Pearson ``num_thresholds`` equally spaced
        points of :math:`(a, b]` (fixed before the data, as Bonferroni
        requires).
    num_thresholds : int
        Size of the default Clopper–Pearson grid.
    percentile_levels : sequence of float in (0, 1), shape [L]

    Returns
    -------
    SmoothingCertificate
        Tensors in the dtype and device of ``returns`` (float64 for integer
        input). Everything is computed in float64; for a float32 or float16
        ``returns`` the bounds (``expected_reward``, ``percentiles``,
        ``tail_lower_bounds``) are rounded toward minus infinity, so they never
        exceed the float64 certificate.

    Shapes
    ------
    returns [n], budgets [K] -> expected_reward [K], percentiles [L, K].

    Notes
    -----
    Validity: with probability :math:`\ge 1-\alpha` every
    :math:`\underline p_k \le P_{clean}[R\ge t_k]`; then (2) of
    :mod:`polab.theory.policy_smoothing` applies at every budget. Cost
    :math:`O(n\log n + K m + L K\log m)`, memory :math:`O(m + 2^{22})` (budgets in
    chunks); ``benchmarks/smoothing_certificates.py`` times it.
    """
    if method not in ("dkw", "clopper-pearson"):
        raise ValueError(f"method must be 'dkw' or 'clopper-pearson'; got {method!r}.")
    if isinstance(percentile_levels, (str, bytes)) or percentile_levels is None:
        raise ValueError(f"percentile_levels must be a sequence of numbers in (0, 1); got {percentile_levels!r}.")
    r, s, a, lo, hi, b = check_certificate_inputs(returns, sigma=sigma, alpha=alpha, reward_range=reward_range, budgets=budgets)
    lv = torch.as_tensor(list(np.atleast_1d(np.asarray(percentile_levels, dtype=np.float64))), dtype=r.dtype, device=r.device)
    if lv.numel() == 0 or bool(((lv <= 0) | (lv >= 1)).any()):
        raise ValueError(f"percentile_levels must lie strictly between 0 and 1; got {list(percentile_levels)}.")
    if thresholds is None:
        if method == "dkw":
            t = torch.unique(r)
            t = t[t > lo]
        else:
            if int(num_thresholds) < 1:
                raise ValueError(f"num_thresholds must be >= 1; got {num_thresholds}.")
            t = torch.linspace(lo, hi, int(num_thresholds) + 1, dtype=r.dtype, device=r.device)[1:]
    else:
        t = _thresholds_tensor(thresholds, r, lo, hi)
    n = r.numel()
    reason = ""
    if t.numel() == 0:  # every return equals reward_min: nothing to certify above it
        t = torch.tensor([hi], dtype=r.dtype, device=r.device)
        p = torch.zeros(1, dtype=r.dtype, device=r.device)
        reason = "every return equals reward_min"
    elif method == "dkw":
        p = dkw_tail_lower_bounds(r, t, alpha=a)
    else:
        p = clopper_pearson_tail_lower_bounds(r, t, alpha=a)
    if not reason and not bool((p > 0).any()):
        reason = (
            f"n = {n} episodes cannot certify anything at confidence {1 - a:g} with method {method!r} "
            f"(every tail lower bound is 0); run more episodes or lower the confidence"
        )
    widths = torch.diff(t, prepend=torch.tensor([lo], dtype=t.dtype, device=t.device))
    # expected reward: budgets in chunks so that the [chunk, m] matrix stays near 2^22 entries
    # (10^6 thresholds x 100 budgets would otherwise be 800 MB in float64)
    # Phi(z - B/sigma) = erfc((B/sigma - z)/sqrt 2)/2 as in attacked_tail_lower_bounds, with z computed once
    chunk = max(1, (1 << 22) // t.numel())
    z = torch.special.ndtri(p.clamp(0.0, 1.0))  # [m]; -inf where p = 0
    zs = z / math.sqrt(2.0)
    expected = []
    for j in range(0, b.numel(), chunk):
        x = (b[j:j + chunk] / (s * math.sqrt(2.0))).reshape(-1, 1) - zs  # [chunk, m]
        expected.append(lo + 0.5 * (torch.special.erfc(x) @ widths))
    expected = torch.cat(expected)
    # vacuous: every attacked tail is 0, i.e. the largest one (Phi is increasing) is 0
    vacuous = _normal_cdf(z.max() - b / s) <= 0
    expected = torch.where(vacuous, torch.full_like(expected, lo), expected)
    if not reason and bool(vacuous.any()):
        reason = "some budgets certify nothing above reward_min (the attacked tail bounds underflow to 0)"
    pct = _percentiles(t, z, b / s, lv, lo)
    out = _out_dtype(returns)  # computed in float64; lower bounds rounded down to the input dtype
    return SmoothingCertificate(
        budgets=b.to(out),
        expected_reward=round_down_to(expected, out),
        percentile_levels=lv.to(out),
        percentiles=round_down_to(pct, out),
        thresholds=t.to(out),
        tail_lower_bounds=round_down_to(p, out),
        empirical_mean=float(r.mean()),
        vacuous=vacuous,
        alpha=a,
        n=n,
        sigma=s,
        method=method,
        reward_min=lo,
        reward_max=hi,
        reason=reason,
    )


@dataclass(frozen=True)
class BonferroniCertificate:
    r"""The larger of several certificates, each at level :math:`\alpha/J` (Bonferroni), valid at level :math:`\alpha`.

    Attributes
    ----------
    budgets : Tensor, shape [K]
    expected_reward : Tensor, shape [K]
        :math:`\max_j` of the members' certified attacked expected rewards.
    best_method : tuple of str, length K
        Which member gives the maximum at each budget.
    members : dict[str, SmoothingCertificate]
        Each method's certificate, computed at level ``alpha / len(members)``.
    alpha : float
        Overall failure probability: with probability at least ``1 - alpha``
        every member holds, so their maximum holds.
    """

    budgets: torch.Tensor
    expected_reward: torch.Tensor
    best_method: tuple
    members: dict
    alpha: float

    @property
    def confidence(self) -> float:
        """``1 - alpha``."""
        return 1.0 - self.alpha


def certify_returns_bonferroni(
    returns,
    *,
    budgets,
    sigma: float,
    alpha: float = 0.05,
    reward_range: tuple[float, float],
    methods: tuple = ("dkw", "clopper-pearson"),
    thresholds: dict | None = None,
    **kwargs,
) -> BonferroniCertificate:
    r"""One certificate at level :math:`\alpha` from several methods: each at :math:`\alpha/J`, then the maximum.

    Each of the :math:`J` methods' certificates fails with probability at most
    :math:`\alpha/J`; by the union bound all hold together with probability
    at least :math:`1-\alpha`, and then so does their maximum. Taking the
    maximum of certificates each at level :math:`\alpha` would only be a
    :math:`J\alpha`-level statement.

    Parameters
    ----------
    returns, budgets, sigma, reward_range
        As in :func:`certify_returns`.
    alpha : float in (0, 1)
        Overall failure probability.
    methods : tuple of {"dkw", "clopper-pearson"}
        Distinct methods to combine.
    thresholds : dict, optional
        Per-method thresholds (e.g. ``{"clopper-pearson": integers}``); each
        must be fixed before seeing the returns where the method requires it.
    **kwargs
        Passed to :func:`certify_returns` (``num_thresholds``, ``percentile_levels``).

    Returns
    -------
    BonferroniCertificate

    Shapes
    ------
    returns [n], budgets [K] -> expected_reward [K].
    """
    a = _alpha(alpha)
    if isinstance(methods, str) or len(methods) == 0 or len(set(methods)) != len(methods):
        raise ValueError(f"methods must be a non-empty tuple of distinct method names; got {methods!r}.")
    thresholds = dict(thresholds or {})
    unknown = set(thresholds) - set(methods)
    if unknown:
        raise ValueError(f"thresholds has keys {sorted(unknown)} that are not in methods {list(methods)}.")
    members = {
        m: certify_returns(returns, budgets=budgets, sigma=sigma, alpha=a / len(methods), reward_range=reward_range,
                           method=m, thresholds=thresholds.get(m), **kwargs)
        for m in methods
    }
    stacked = torch.stack([c.expected_reward for c in members.values()])  # [J, K]
    best, idx = stacked.max(dim=0)
    names = list(members)
    return BonferroniCertificate(
        budgets=next(iter(members.values())).budgets,
        expected_reward=best,
        best_method=tuple(names[i] for i in idx.tolist()),
        members=members,
        alpha=a,
    )
