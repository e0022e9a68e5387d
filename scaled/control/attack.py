"""Adaptive gradient attack on the observations of a smoothed policy, with a total l2 budget.

At step :math:`t` the attacker sees the clean frame :math:`o_t`, the noisy
frames the agent has already stacked (past observations, allowed by the
threat model) and its remaining budget :math:`r_t`; it does not see the
current smoothing noise. It linearises the base network's logit margin
:math:`m(x) = \\ell_{a^*}(x) - \\max_{a\\ne a^*}\\ell_a(x)` of the clean action
:math:`a^* = \\arg\\max_a \\ell_a` at the stack ending in :math:`o_t`, and moves
the current frame along :math:`-\\nabla m/\\|\\nabla m\\|`. Step sizes:

- ``"uniform"``: :math:`\\min(r_t, B/\\sqrt{T})` every step (:math:`T` the
  episode cap), an even split of the budget;
- ``"critical"``: only where the linearised distance to the decision
  boundary :math:`d_t = m/\\|\\nabla m\\|` is at most ``reach`` times
  :math:`\\sigma` (a state where the noisy agent can be tipped), with size
  :math:`\\min(r_t, d_t + \\tfrac12\\sigma)`; the budget is kept for such states.

Both are adaptive (they depend on the states reached and on the budget
left). The budget is enforced exactly: :math:`r_{t+1}^2 = r_t^2 - \\|\\epsilon_t\\|^2`,
and ``spent`` records :math:`\\sum_t\\|\\epsilon_t\\|^2` for the run's audit.

Both are one linearised step on the noise-free frame. :class:`SmoothedPGDAttack`
(mode ``"smoothed-pgd"``) is the multi-step attack of the public
policy-smoothing attack code: it averages the base network's logits over
smoothing-noise samples, runs normalised-gradient steps towards each other
action inside the ball of the remaining budget, perturbs only when the
averaged action flips, and carries the unused budget forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AdaptiveGradientAttack", "SmoothedPGDAttack", "ATTACK_MODES", "make_attack"]

ATTACK_MODES = ("uniform", "critical", "smoothed-pgd")


class AdaptiveGradientAttack:
    """Per-episode state (remaining budget) of the attack on a batch of episodes.

    Parameters
    ----------
    net : nn.Module
        The base network (``logits``).
    budget : float
        Total l2 budget B over the episode.
    horizon : int
        Episode cap T (sets the uniform step size).
    sigma : float
        Smoothing noise scale (sets the "critical" reach and overshoot).
    mode : {"uniform", "critical"}
    reach : float
    """

    def __init__(self, net: nn.Module, *, budget: float, horizon: int, sigma: float, mode: str = "uniform", reach: float = 1.0):
        if mode not in ("uniform", "critical"):
            raise ValueError(f"mode must be 'uniform' or 'critical' (use SmoothedPGDAttack for 'smoothed-pgd'); got {mode!r}.")
        if budget < 0:
            raise ValueError(f"budget must be >= 0; got {budget}.")
        self.net, self.budget, self.horizon, self.sigma, self.mode, self.reach = net, float(budget), int(horizon), float(sigma), mode, float(reach)
        self.remaining: torch.Tensor | None = None
        self.spent: torch.Tensor | None = None

    def reset(self, n: int, device: torch.device | str = "cpu") -> None:
        self.remaining = torch.full((n,), self.budget, dtype=torch.float64, device=device)
        self.spent = torch.zeros(n, dtype=torch.float64, device=device)

    def perturb(self, frames: torch.Tensor, policy, alive: torch.Tensor) -> torch.Tensor:
        """Perturbation of the current frames (zero for finished episodes or an exhausted budget)."""
        if self.budget == 0.0:
            return torch.zeros_like(frames)
        f = frames.detach().clone().requires_grad_(True)
        logits = self.net.logits(policy.stack_with(f))
        top2 = logits.topk(2, dim=-1).values
        margin = top2[:, 0] - top2[:, 1]
        (grad,) = torch.autograd.grad(margin.sum(), f)
        g = grad.flatten(1).double()
        gnorm = g.norm(dim=1).clamp_min(1e-12)
        direction = (-g / gnorm[:, None]).reshape(frames.shape)
        if self.mode == "uniform":
            size = torch.full_like(gnorm, self.budget / math.sqrt(self.horizon))
        else:
            dist = margin.detach().double() / gnorm
            rho = self.reach * max(self.sigma, self.budget / 5.0)
            size = torch.where(dist <= rho, dist + 0.5 * self.sigma + 1e-3 * self.budget, torch.zeros_like(dist))
        size = torch.minimum(size, self.remaining) * alive.double()
        self.remaining = torch.sqrt(torch.clamp(self.remaining**2 - size**2, min=0.0))
        self.spent = self.spent + size**2
        return (size.reshape(-1, *([1] * (frames.ndim - 1))) * direction).to(frames.dtype)


class SmoothedPGDAttack:
    r"""Multi-step attack on the noise-averaged logits, with the unused budget carried forward.

    At step :math:`t`, with remaining budget :math:`r_t` (:math:`r_0 = B`), the
    attacker draws ``noise_samples`` smoothing-noise vectors :math:`\sigma z_j`
    of its own (it does not see the agent's current noise) and uses the
    soft-smoothed logits

    .. math:: \bar\ell(x) = \frac1S\sum_{j=1}^S \ell\big([\tilde o_{t-k+1},\dots,\tilde o_{t-1}, x + \sigma z_j]\big),

    where the :math:`\tilde o` are the noisy frames already on the agent's
    stack. With :math:`a^* = \arg\max\bar\ell(o_t)`, for every other action
    :math:`a` whose averaged logit is at most :math:`\bar\ell_{a^*}(o_t) -`
    ``logit_threshold`` it runs up to :math:`\lfloor m\, r_t/\eta\rfloor`
    steps (:math:`m` = ``step_multiplier``, :math:`\eta` = ``step_size``)

    .. math:: x \leftarrow \Pi_{\|x-o_t\|\le r_t}\Big(x + \eta\, \frac{g}{\|g\|}\Big),
        \qquad g = -\nabla_x \mathrm{CE}(\bar\ell(x), a),

    stopping as soon as :math:`\arg\max\bar\ell(x) = a`. Among the actions
    reached it keeps the one with the lowest clean averaged logit (the
    source keeps the lowest Q-value), perturbs the frame by :math:`x - o_t`
    and sets :math:`r_{t+1}^2 = r_t^2 - \|x-o_t\|^2`; when no action is reached
    it does not perturb at all, so the whole remaining budget carries forward
    to later states. The noise samples are drawn once per step and shared by
    the batch and all iterations, as in the source.

    Parameters
    ----------
    net : nn.Module
        The base network (``logits``).
    budget : float, >= 0
        Total l2 budget :math:`B` over the episode.
    sigma : float, >= 0
        Smoothing noise scale (0: the undefended policy, one noise sample).
    generator : torch.Generator
        The attacker's noise source (independent of the agent's).
    noise_samples : int
        :math:`S` (source default 128).
    step_size : float
        :math:`\eta` (source default 0.01).
    step_multiplier : float
        :math:`m` (source default 2).
    logit_threshold : float
        Targets must lie this far below the top averaged logit (source ``q_threshold``, default 0).

    Notes
    -----
    Matched to ``mrh996/ReCePS``, ``Cartpole/cartpole_multiframe_attack_smooth.py``
    (commit 282fd28), functions ``soft_smooth_fun`` and ``attack`` and the
    episode loop's ``carryover`` (found with the search tool; written here
    from the description above, batched over episodes, for a policy network's
    logits where the source attacks a DQN's Q-values). Departures: the
    clean averaged logits use the noisy past frames the agent holds (the
    source uses clean past frames for the target choice and noisy ones in the
    steps); success is also checked after the last step; the step count is
    per episode. The budget audit: the perturbation applied is the float32
    cast of :math:`x-o_t`, scaled down by one float32 step where the cast
    would exceed :math:`r_t`, and ``spent`` sums its float64 squared norms.
    """

    def __init__(self, net: nn.Module, *, budget: float, sigma: float, generator: torch.Generator,
                 noise_samples: int = 128, step_size: float = 0.01, step_multiplier: float = 2.0,
                 logit_threshold: float = 0.0):
        if budget < 0 or not math.isfinite(budget):
            raise ValueError(f"budget must be a finite number >= 0; got {budget}.")
        if sigma < 0 or not math.isfinite(sigma):
            raise ValueError(f"sigma must be a finite number >= 0; got {sigma}.")
        if int(noise_samples) < 1:
            raise ValueError(f"noise_samples must be >= 1; got {noise_samples}.")
        if not (step_size > 0 and math.isfinite(step_size)):
            raise ValueError(f"step_size must be a finite number > 0; got {step_size}.")
        if not (step_multiplier > 0):
            raise ValueError(f"step_multiplier must be > 0; got {step_multiplier}.")
        self.net, self.budget, self.sigma, self.generator = net, float(budget), float(sigma), generator
        self.noise_samples = int(noise_samples) if sigma > 0 else 1
        self.step_size, self.step_multiplier, self.logit_threshold = float(step_size), float(step_multiplier), float(logit_threshold)
        self.remaining: torch.Tensor | None = None
        self.spent: torch.Tensor | None = None
        self.flips: torch.Tensor | None = None

    def reset(self, n: int, device: torch.device | str = "cpu") -> None:
        self.remaining = torch.full((n,), self.budget, dtype=torch.float64, device=device)
        self.spent = torch.zeros(n, dtype=torch.float64, device=device)
        self.flips = torch.zeros(n, dtype=torch.long, device=device)

    def smoothed_logits(self, x: torch.Tensor, past: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise-averaged logits: x [n, *frame], past [n, k-1, *frame], noise [S, *frame] -> [n, A]."""
        n, s = x.shape[0], noise.shape[0]
        big = (x.unsqueeze(1) + noise.unsqueeze(0)).reshape(n * s, *x.shape[1:])
        stack = torch.cat([past.repeat_interleave(s, dim=0), big.unsqueeze(1)], dim=1)
        return self.net.logits(stack).reshape(n, s, -1).mean(dim=1)

    def perturb(self, frames: torch.Tensor, policy, alive: torch.Tensor) -> torch.Tensor:
        """Perturbation of the current frames (zero for finished episodes, exhausted budgets and failed attacks)."""
        out = torch.zeros_like(frames)
        if self.budget == 0.0:
            return out
        rows = (alive & (self.remaining > 0)).nonzero().squeeze(1)
        if rows.numel() == 0:
            return out
        o = frames[rows].detach()
        past = policy.stack[rows, 1:].detach()
        shape = (self.noise_samples, *frames.shape[1:])
        noise = self.sigma * torch.randn(shape, generator=self.generator, dtype=frames.dtype, device=frames.device)
        rem = self.remaining[rows]
        with torch.no_grad():
            clean = self.smoothed_logits(o, past, noise)  # [n, A]
        start = clean.argmax(dim=1)
        start_logit = clean.gather(1, start[:, None]).squeeze(1)
        counts = torch.floor(self.step_multiplier * rem / self.step_size).long()  # steps per row
        best_delta = torch.zeros_like(o)
        best_logit = start_logit.clone()
        radius = rem.to(o.dtype)
        for target in range(clean.shape[1]):
            todo = (start != target) & (clean[:, target] + self.logit_threshold <= start_logit)
            x = o.clone()
            i = 0
            while True:
                act = (todo & (counts >= i)).nonzero().squeeze(1)
                if act.numel() == 0:
                    break
                xa = x[act].requires_grad_(True)
                lg = self.smoothed_logits(xa, past[act], noise)
                hit = lg.argmax(dim=1) == target
                if bool(hit.any()):
                    h = act[hit]
                    better = clean[h, target] < best_logit[h]
                    hb = h[better]
                    best_delta[hb] = (x[hb] - o[hb]).detach()
                    best_logit[hb] = clean[hb, target]
                    todo[h] = False
                step = ~hit & (counts[act] > i)
                if not bool(step.any()):
                    todo[act[~hit]] = False
                    break
                loss = -F.cross_entropy(lg, torch.full((act.numel(),), target, device=lg.device), reduction="sum")
                (g,) = torch.autograd.grad(loss, xa)
                g = g.detach().flatten(1)
                xs = xa.detach().flatten(1) + self.step_size * g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
                d = xs - o[act].flatten(1)
                dn = d.norm(dim=1, keepdim=True)
                d = torch.where(dn > radius[act, None], d * (radius[act, None] / dn.clamp_min(1e-30)), d)
                new = (o[act].flatten(1) + d).reshape(xa.shape)
                x[act] = torch.where(step.reshape(-1, *([1] * (x.ndim - 1))), new, x[act])
                todo[act[~hit & ~step]] = False
                i += 1
        # the applied perturbation never exceeds the remaining budget, in float64
        sq = best_delta.double().flatten(1).pow(2).sum(1)
        over = sq > rem**2
        if bool(over.any()):
            shrink = (rem[over] / sq[over].sqrt() * (1 - 2.0**-20)).to(best_delta.dtype)
            best_delta[over] = best_delta[over] * shrink.reshape(-1, *([1] * (best_delta.ndim - 1)))
            sq = best_delta.double().flatten(1).pow(2).sum(1)
        self.remaining[rows] = torch.sqrt(torch.clamp(rem**2 - sq, min=0.0))
        self.spent[rows] = self.spent[rows] + sq
        self.flips[rows] = self.flips[rows] + (sq > 0).long()
        out[rows] = best_delta.to(frames.dtype)
        return out


def make_attack(net: nn.Module, *, mode: str, budget: float, horizon: int, sigma: float,
                generator: torch.Generator | None = None, **options):
    """The attack named ``mode`` (one of :data:`ATTACK_MODES`); ``options`` go to :class:`SmoothedPGDAttack`."""
    if mode not in ATTACK_MODES:
        raise ValueError(f"attack mode must be one of {ATTACK_MODES}; got {mode!r}.")
    if mode == "smoothed-pgd":
        if generator is None:
            raise ValueError("the smoothed-pgd attack needs a generator for its own noise samples.")
        return SmoothedPGDAttack(net, budget=budget, sigma=sigma, generator=generator, **options)
    return AdaptiveGradientAttack(net, budget=budget, horizon=horizon, sigma=sigma, mode=mode)
