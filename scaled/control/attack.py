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
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["AdaptiveGradientAttack", "ATTACK_MODES"]

ATTACK_MODES = ("uniform", "critical")


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
        if mode not in ATTACK_MODES:
            raise ValueError(f"mode must be one of {ATTACK_MODES}; got {mode!r}.")
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
