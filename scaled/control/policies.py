"""Actor-critic networks and the Gaussian observation-smoothing wrapper.

:class:`SmoothedPolicy` is the smoothed agent of the paper: at each step it
adds fresh noise :math:`\\sigma z_t` to the (possibly attacked) frame
:math:`o_t + \\epsilon_t`, keeps the last ``frame_stack`` *noisy* frames (so a
frame keeps its noise in every stack it appears in, the convention the notes
read in the third-party code), and acts with the base network's arg-max
action on that stack (deterministic base actions, as in the paper's
certification runs).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MLPActorCritic", "CNNActorCritic", "make_actor_critic", "SmoothedPolicy"]


def _layer(m: nn.Linear | nn.Conv2d, gain: float) -> nn.Module:
    nn.init.orthogonal_(m.weight, gain)
    nn.init.zeros_(m.bias)
    return m


class MLPActorCritic(nn.Module):
    """Separate two-layer tanh MLPs for the logits and the value; input [N, k, d] (flattened)."""

    def __init__(self, in_dim: int, num_actions: int, hidden: int = 64):
        super().__init__()
        g = math.sqrt(2)
        self.actor = nn.Sequential(_layer(nn.Linear(in_dim, hidden), g), nn.Tanh(), _layer(nn.Linear(hidden, hidden), g),
                                   nn.Tanh(), _layer(nn.Linear(hidden, num_actions), 0.01))
        self.critic = nn.Sequential(_layer(nn.Linear(in_dim, hidden), g), nn.Tanh(), _layer(nn.Linear(hidden, hidden), g),
                                    nn.Tanh(), _layer(nn.Linear(hidden, 1), 1.0))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.actor(x.flatten(1))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x.flatten(1)).squeeze(-1)


class CNNActorCritic(nn.Module):
    """A small convolutional trunk (Mnih et al. 2015 shapes) shared by the two heads; input [N, k, H, W]."""

    def __init__(self, frame_stack: int, frame_shape: tuple, num_actions: int):
        super().__init__()
        g = math.sqrt(2)
        self.trunk = nn.Sequential(
            _layer(nn.Conv2d(frame_stack, 32, 8, stride=4), g), nn.ReLU(),
            _layer(nn.Conv2d(32, 64, 4, stride=2), g), nn.ReLU(),
            _layer(nn.Conv2d(64, 64, 3, stride=1), g), nn.ReLU(), nn.Flatten(),
        )
        with torch.no_grad():
            n = self.trunk(torch.zeros(1, frame_stack, *frame_shape)).shape[1]
        self.fc = nn.Sequential(_layer(nn.Linear(n, 256), g), nn.ReLU())
        self.pi = _layer(nn.Linear(256, num_actions), 0.01)
        self.v = _layer(nn.Linear(256, 1), 1.0)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.pi(self.fc(self.trunk(x)))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.v(self.fc(self.trunk(x))).squeeze(-1)


def make_actor_critic(spec) -> nn.Module:
    """The network for an :class:`polab.scaled.control.envs.EnvSpec`."""
    if spec.atari:
        return CNNActorCritic(spec.frame_stack, spec.frame_shape, spec.num_actions)
    return MLPActorCritic(spec.frame_stack * int(math.prod(spec.frame_shape)), spec.num_actions)


class SmoothedPolicy:
    """Gaussian observation smoothing around a base actor-critic.

    Parameters
    ----------
    net : nn.Module
        Has ``logits(stack)``.
    sigma : float or Tensor of shape [N]
        Noise scale (0 gives the undefended base policy); a tensor gives each
        sub-environment its own scale (training on several sigmas at once).
    frame_stack : int
    generator : torch.Generator
        Source of the smoothing noise.
    """

    def __init__(self, net: nn.Module, *, sigma: float, frame_stack: int, generator: torch.Generator):
        self.net, self.k, self.generator = net, int(frame_stack), generator
        self.sigma = sigma if isinstance(sigma, torch.Tensor) else float(sigma)
        self.stack: torch.Tensor | None = None

    def reset(self, first_frames: torch.Tensor) -> None:
        """Start every episode: the stack holds ``k`` noisy copies of the first frame (fresh noise each)."""
        noisy = [self.noisy(first_frames) for _ in range(self.k)]
        self.stack = torch.stack(noisy, dim=1)

    def reset_rows(self, rows: torch.Tensor, frames: torch.Tensor) -> None:
        """Restart the stacks of the sub-environments in ``rows`` (bool [N]) from ``frames`` (training)."""
        if bool(rows.any()):
            self.stack[rows] = torch.stack([self.noisy(frames[rows], rows) for _ in range(self.k)], dim=1)

    def noisy(self, frames: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``frames + sigma * z`` with fresh standard normal ``z`` (``rows`` selects per-row sigmas)."""
        s = self.sigma
        if isinstance(s, torch.Tensor):
            s = (s if rows is None else s[rows]).to(frames.dtype).reshape(-1, *([1] * (frames.ndim - 1)))
        elif s == 0.0:
            return frames
        z = torch.randn(frames.shape, generator=self.generator, dtype=frames.dtype, device=frames.device)
        return frames + s * z

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """Add noise to the new (possibly perturbed) frames, push them on the stack, return the stack."""
        self.stack = torch.cat([self.stack[:, 1:], self.noisy(frames).unsqueeze(1)], dim=1)
        return self.stack

    def stack_with(self, frames: torch.Tensor) -> torch.Tensor:
        """The stack the network would see if ``frames`` were pushed without noise (for the attacker)."""
        return torch.cat([self.stack[:, 1:], frames.unsqueeze(1)], dim=1)

    @torch.no_grad()
    def act(self, frames: torch.Tensor) -> torch.Tensor:
        """Deterministic base action on the noisy stack after pushing ``frames``."""
        return self.net.logits(self.push(frames)).argmax(dim=-1)
