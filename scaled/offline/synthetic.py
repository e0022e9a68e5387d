r"""Policy-guided synthetic data for offline RL: an EDM trajectory denoiser trained on the dataset, sampled with policy guidance.

Policy-Guided Diffusion (PGD; Jackson et al. 2024) trains an unconditional diffusion model on the behaviour
dataset's sub-trajectories and, at sampling time, nudges the action channels along the target policy's action
log-likelihood gradient :math:`\nabla_a\log\pi(a\mid s)`, so the generated trajectories drift toward the target
policy while the denoiser keeps them close to the behaviour data's dynamics. The offline agent then trains on a
mix of synthetic and real transitions (:mod:`polab.scaled.methods.offline_pgd`).

What is modelled (CPU scale). A *window* is ``horizon`` consecutive transitions of one episode, laid out as
``horizon`` rows :math:`[s_t, u_t, r_t, d_t]` followed by the last next state :math:`s_{t+H}`, flattened to one
vector of ``horizon * (state_dim + action_dim + 2) + state_dim`` numbers; :math:`u=\operatorname{artanh}(a/a_{\max})`
(clipped at 0.999, the authors' pre-squash parametrisation), :math:`d` the termination flag. Every window gives
``horizon`` transitions, including a terminal one at its end. Why windows and not single transitions: with a single
transition the guidance only tilts the action given a behaviour state; over a window the later states follow the
guided actions, which is what makes the data on-policy-like. Why short windows and an MLP: the CPU datasets are small
(InvertedPendulum medium-replay has 2,980 transitions in 461 episodes, 6.5 steps on average, so long windows would drop
most of it), and an MLP over a flattened 4-step window (Hopper: 75 numbers) fits in a minute on one core; the authors
use 32-row windows (stride 8) and a 1-D U-Net on a GPU.

Pieces: :func:`window_starts` / :func:`build_windows` (layout :class:`WindowLayout`), :class:`WindowNormalizer`
(per-channel standardisation, the authors' ``normalise_traj``), :class:`EDMDenoiser` (EDM preconditioning, Karras et
al. 2022 Table 1), :func:`train_denoiser` (EDM loss), :func:`guidance_schedule` (the authors' per-step coefficient),
:func:`policy_guidance` (the policy treated as :math:`\mathcal N(\mu(s), (\sigma_\pi a_{\max})^2 I)` around its
deterministic action), :func:`sample_windows` (calls the verified core
:func:`polab.estimators.diffusion_guidance.policy_guided_sample` unchanged) and :func:`windows_to_transitions`.

Matched to the authors' JAX code (EmptyJackson/policy-guided-diffusion; read, not copied):

- ``environments/dataset.py`` @ 7a8b375ef904294c84b61cf06d485089da561782: rows ``[obs, arctanh(clip(a, +-0.999)),
  reward, done]``, windows never cross an episode reset, per-channel mean/std normalisation; here windows are taken
  at stride 1 (small datasets) and a window's final next state is appended so its last transition (possibly
  terminal) is kept (the authors' rows give ``L - 1`` transitions from ``L`` rows).
- ``diffusion/edm.py`` @ 7a8b375: EDM preconditioning and loss (``p_mean -1.2``, ``p_std 1.2``, ``sigma_data 1``,
  weight :math:`(\sigma^2+\sigma_d^2)/(\sigma\sigma_d)^2`), guidance applied to the action channels as a shift
  :math:`u\leftarrow u+\lambda_k g/\lVert g\rVert` before each denoising step with
  :math:`\lambda_k=c\,[(1-k/K)+c_{\cos}\sin(\pi(k+1)/K)]`, zero at the last step; the policy is evaluated on the
  unnormalised noisy observations, the log-likelihood on the tanh-squashed unnormalised action, a deterministic actor
  as ``Normal(action, 1)`` (``det_guidance``). Departures: the core's deterministic Euler steps instead of EDM's
  stochastic churn + Heun step (:mod:`polab.estimators.diffusion_guidance`), ``sample_steps`` 64 instead of 256 on
  CPU, an MLP instead of the U-Net, Adam at a constant rate instead of warm-up + cosine, EMA every step.
- ``util/data.py::construct_rollout`` @ 7a8b375: synthetic actions ``tanh`` of the unnormalised channel, done
  thresholded at 0.5.

Shapes
------
Windows ``[batch, dim]`` (flattened, :class:`WindowLayout`); transitions ``states``/``next_states``
``[n, state_dim]``, ``actions`` ``[n, action_dim]``, ``rewards``/``terminals`` ``[n]``.

References
----------
Jackson, Matthews, Lu, Ellis, Whiteson, Foerster, "Policy-Guided Diffusion", RLC 2024, arXiv 2404.06356.
Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS 2022.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from polab.estimators.diffusion_guidance import edm_sigma_schedule, log_prob_gradient, policy_guided_sample

__all__ = ["EDMDenoiser", "WindowLayout", "WindowNormalizer", "build_windows", "guidance_schedule", "policy_guidance",
           "sample_windows", "train_denoiser", "window_starts", "windows_to_transitions"]

ACTION_CLIP = 0.999  # the authors' clip before arctanh (environments/dataset.py @ 7a8b375)


@dataclass(frozen=True)
class WindowLayout:
    """Where each channel sits in a flattened window of ``horizon`` rows ``[s, u, r, d]`` plus the final next state."""

    state_dim: int
    action_dim: int
    horizon: int

    def __post_init__(self):
        for k in ("state_dim", "action_dim", "horizon"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{k} must be a positive integer; got {v!r}.")

    @property
    def row(self) -> int:
        return self.state_dim + self.action_dim + 2

    @property
    def dim(self) -> int:
        return self.horizon * self.row + self.state_dim

    def split(self, x: torch.Tensor):
        """``[batch, dim]`` -> states ``[batch, H + 1, ds]``, u ``[batch, H, da]``, rewards ``[batch, H]``, done ``[batch, H]``."""
        b = x.shape[0]
        rows = x[:, : self.horizon * self.row].reshape(b, self.horizon, self.row)
        ds, da = self.state_dim, self.action_dim
        states = torch.cat([rows[..., :ds], x[:, None, self.horizon * self.row:]], dim=1)
        return states, rows[..., ds:ds + da], rows[..., ds + da], rows[..., ds + da + 1]

    def join(self, states, u, rewards, done) -> torch.Tensor:
        """Inverse of :meth:`split`."""
        rows = torch.cat([states[:, :-1], u, rewards[..., None], done[..., None]], dim=-1)
        return torch.cat([rows.reshape(rows.shape[0], -1), states[:, -1]], dim=1)

    def action_mask(self, *, dtype=torch.float32, device=None) -> torch.Tensor:
        """``[dim]``: 1 on the action channels, 0 elsewhere."""
        m = torch.zeros(self.dim, dtype=dtype, device=device)
        for j in range(self.horizon):
            m[j * self.row + self.state_dim: j * self.row + self.state_dim + self.action_dim] = 1
        return m


def window_starts(observations, next_observations, terminals, timeouts, *, horizon: int, stride: int = 1) -> np.ndarray:
    """Indices ``t`` such that transitions ``t .. t + horizon - 1`` lie in one episode with no reset before the last.

    An episode ends after transition ``i`` when it terminates, times out, is the last one, or the next row does not
    continue it (``next_observations[i] != observations[i + 1]``). Windows are taken every ``stride`` steps within
    an episode, plus the window that ends at the episode's end (so terminal transitions are always represented).
    """
    obs, nxt = np.asarray(observations), np.asarray(next_observations)
    term, tout = np.asarray(terminals).astype(bool), np.asarray(timeouts).astype(bool)
    n = obs.shape[0]
    if not (nxt.shape == obs.shape and term.shape == (n,) and tout.shape == (n,)):
        raise ValueError(f"observations/next_observations must share a shape [n, state_dim] and terminals/timeouts be [n]; got "
                         f"{obs.shape}, {nxt.shape}, {term.shape}, {tout.shape}.")
    if int(horizon) != horizon or horizon < 1 or int(stride) != stride or stride < 1:
        raise ValueError(f"horizon and stride must be positive integers; got {horizon!r}, {stride!r}.")
    end = term | tout
    end[-1] = True
    if n > 1:
        end[:-1] |= np.any(nxt[:-1] != obs[1:], axis=1)
    ends = np.flatnonzero(end)
    starts, begin = [], 0
    for e in ends:  # episode = begin .. e
        length = e - begin + 1
        if length >= horizon:
            s = list(range(begin, e - horizon + 2, stride))
            if s[-1] != e - horizon + 1:
                s.append(e - horizon + 1)
            starts.extend(s)
        begin = e + 1
    return np.asarray(starts, dtype=np.int64)


def build_windows(observations, actions, rewards, next_observations, terminals, timeouts, *, horizon: int,
                  max_action: float, stride: int = 1) -> tuple[torch.Tensor, WindowLayout]:
    """Flattened raw windows ``[num_windows, layout.dim]`` (float32; actions as ``artanh(a / max_action)``) and the layout."""
    if not max_action > 0:
        raise ValueError(f"max_action must be positive; got {max_action!r}.")
    starts = window_starts(observations, next_observations, terminals, timeouts, horizon=horizon, stride=stride)
    obs = np.asarray(observations, np.float32)
    act = np.asarray(actions, np.float32).reshape(obs.shape[0], -1)
    layout = WindowLayout(obs.shape[1], act.shape[1], int(horizon))
    if starts.size == 0:
        raise ValueError(f"no episode has {horizon} transitions; lower the window horizon.")
    idx = starts[:, None] + np.arange(horizon)[None]
    u = np.arctanh(np.clip(act / max_action, -ACTION_CLIP, ACTION_CLIP))
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    states = torch.cat([t(obs[idx]), t(np.asarray(next_observations, np.float32)[idx[:, -1]])[:, None]], dim=1)
    x = layout.join(states, t(u[idx]), t(np.asarray(rewards)[idx]), t(np.asarray(terminals)[idx]))
    return x, layout


@dataclass
class WindowNormalizer:
    """Per-channel standardisation of windows; the state channels of every row (and the final state) share one mean/std."""

    mean: torch.Tensor  # [dim]
    std: torch.Tensor  # [dim]

    @classmethod
    def fit(cls, windows: torch.Tensor, layout: WindowLayout) -> "WindowNormalizer":
        states, u, r, d = layout.split(windows)
        chan = lambda z: (z.reshape(-1, z.shape[-1]).mean(0), z.reshape(-1, z.shape[-1]).std(0, unbiased=False))  # noqa: E731
        (ms, ss), (mu, su), (mr, sr), (md, sd) = chan(states), chan(u), chan(r[..., None]), chan(d[..., None])
        fix = lambda s: torch.where(s > 0, s, torch.ones_like(s))  # noqa: E731  (a constant channel: std 1, as the authors)
        rep = lambda v, k: v[None, None].expand(1, k, -1)  # noqa: E731
        H = layout.horizon
        mean = layout.join(rep(ms, H + 1), rep(mu, H), mr.expand(1, H), md.expand(1, H))[0]
        std = layout.join(rep(fix(ss), H + 1), rep(fix(su), H), fix(sr).expand(1, H), fix(sd).expand(1, H))[0]
        return cls(mean, std)

    def normalize(self, x):
        return (x - self.mean.to(x)) / self.std.to(x)

    def unnormalize(self, z):
        return z * self.std.to(z) + self.mean.to(z)


class EDMDenoiser(nn.Module):
    r"""MLP denoiser with EDM's preconditioning: :math:`D(x,\sigma)=c_{skip}x+c_{out}F([c_{in}x,\phi(c_{noise})])`.

    :math:`c_{skip}=\sigma_d^2/(\sigma^2+\sigma_d^2)`, :math:`c_{out}=\sigma\sigma_d/\sqrt{\sigma^2+\sigma_d^2}`,
    :math:`c_{in}=1/\sqrt{\sigma^2+\sigma_d^2}`, :math:`c_{noise}=\tfrac14\ln\sigma` (EDM Table 1; the authors'
    ``edm.py``); :math:`\phi` is ``c_noise`` with 8 sine/cosine features. ``x`` ``[batch, dim]``, ``sigma`` a float
    or ``[batch]``.
    """

    def __init__(self, dim: int, hidden: int = 256, layers: int = 3, sigma_data: float = 1.0):
        super().__init__()
        self.dim, self.sigma_data = int(dim), float(sigma_data)
        self.register_buffer("freqs", torch.arange(1, 9, dtype=torch.float32) * math.pi / 2)
        mods, w = [], dim + 17
        for _ in range(layers):
            mods += [nn.Linear(w, hidden), nn.SiLU()]
            w = hidden
        mods.append(nn.Linear(w, dim))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        sig = sig.expand(x.shape[0])[:, None]
        sd = self.sigma_data
        c_skip = sd ** 2 / (sig ** 2 + sd ** 2)
        c_out = sig * sd / (sig ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sig ** 2 + sd ** 2).sqrt()
        cn = 0.25 * sig.log()
        emb = torch.cat([cn, torch.sin(cn * self.freqs.to(x)), torch.cos(cn * self.freqs.to(x))], dim=1)
        f = self.net(torch.cat([c_in * x, emb], dim=1))
        return c_skip * x + c_out * f


def train_denoiser(windows: torch.Tensor, *, steps: int, batch_size: int = 256, lr: float = 1e-3, hidden: int = 256,
                   layers: int = 3, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 1.0,
                   ema_decay: float = 0.995, seed: int = 0, progress: bool = False) -> tuple[EDMDenoiser, list[float]]:
    r"""Fit :class:`EDMDenoiser` to (normalised) windows with EDM's loss; returns the EMA model and the loss per step.

    Loss: :math:`\mathbb E\,\lambda(\sigma)\lVert D(x+\sigma\varepsilon,\sigma)-x\rVert^2/\text{dim}` with
    :math:`\ln\sigma\sim\mathcal N(p_{mean},p_{std}^2)` per sample, :math:`\lambda=(\sigma^2+\sigma_d^2)/(\sigma\sigma_d)^2`
    (EDM eq. (8), Table 1; the authors' ``edm.py::train_step`` draws one :math:`\sigma` per sequence as here). The
    weights are initialised and the minibatches and noises drawn from ``seed`` only (the global RNG is left alone).
    """
    x = torch.as_tensor(windows)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"windows must be [num_windows >= 2, dim]; got {tuple(x.shape)}.")
    for k, v in (("steps", steps), ("batch_size", batch_size), ("hidden", hidden), ("layers", layers)):
        if int(v) != v or v < 1:
            raise ValueError(f"{k} must be a positive integer; got {v!r}.")
    if not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = EDMDenoiser(x.shape[1], hidden, layers, sigma_data).to(x.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator(device=x.device).manual_seed(int(seed) + 1)
    losses = []
    from tqdm.auto import tqdm

    for _ in tqdm(range(int(steps)), desc="denoiser", disable=not progress, leave=False):
        idx = torch.randint(x.shape[0], (min(batch_size, x.shape[0]),), generator=g, device=x.device)
        x0 = x[idx]
        sigma = (p_mean + p_std * torch.randn(x0.shape[0], generator=g, device=x.device, dtype=x.dtype)).exp()
        noisy = x0 + sigma[:, None] * torch.randn(x0.shape, generator=g, device=x.device, dtype=x.dtype)
        w = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
        loss = (w[:, None] * (model(noisy, sigma) - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - ema_decay)
        losses.append(float(loss.detach()))
    return ema, losses


def guidance_schedule(num_levels: int, *, cosine_coeff: float = 0.3, delay: int = 0) -> torch.Tensor:
    r"""The authors' per-step multipliers for ``num_levels`` noise levels (``num_levels - 1`` denoising steps).

    Step :math:`k` of :math:`K=` ``num_levels - 1``: :math:`(1-k/K)+c_{\cos}\sin(\pi(k+1)/K)`, zero for :math:`k<`
    ``delay`` and for the last step :math:`k=K-1` (``edm.py::sample_trajectory`` @ 7a8b375, ``denoise_step``); the
    entry for the last level (the core's corrector weight) is 0. Returns ``[num_levels]`` float64.
    """
    if int(num_levels) != num_levels or num_levels < 2:
        raise ValueError(f"num_levels must be an integer >= 2; got {num_levels!r}.")
    K = num_levels - 1
    k = torch.arange(num_levels, dtype=torch.float64)
    w = (1 - k / K) + cosine_coeff * torch.sin(math.pi * (k + 1) / K)
    w[(k < delay) | (k >= K - 1)] = 0.0
    return w


def policy_guidance(policy: Callable[[torch.Tensor], torch.Tensor], layout: WindowLayout, normalizer: WindowNormalizer, *,
                    max_action: float, policy_sigma: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    r""":math:`\nabla_z\sum_t\log\mathcal N(a_{\max}\tanh(u_t);\mu(s_t),(\sigma_\pi a_{\max})^2I)` over normalised windows.

    ``policy`` maps raw states ``[n, state_dim]`` to deterministic actions ``[n, action_dim]`` (in environment
    units); it sees the unnormalised *noisy* states, held fixed (the gradient is taken through the action channels
    only, zero elsewhere), as in the authors' ``_compute_action_guidance`` with ``det_guidance`` (their sigma is 1 in
    actions of range [-1, 1]). Built with the core's :func:`~polab.estimators.diffusion_guidance.log_prob_gradient`.
    The gradient scales as :math:`1/\sigma_\pi^2` with a fixed direction, so under the authors' normalised step
    (:func:`sample_windows`) the value of ``policy_sigma`` cancels; it matters only to unnormalised uses.
    """
    if not policy_sigma > 0:
        raise ValueError(f"policy_sigma must be positive; got {policy_sigma!r}.")
    sd = policy_sigma * max_action
    H, ds = layout.horizon, layout.state_dim

    def log_prob(z: torch.Tensor) -> torch.Tensor:
        x = normalizer.unnormalize(z)
        states, u, _, _ = layout.split(x)
        with torch.no_grad():
            mu = policy(states[:, :H].detach().reshape(-1, ds)).reshape(u.shape).to(u)
        a = max_action * torch.tanh(u)
        return (-0.5 * ((a - mu) / sd) ** 2).sum(dim=(1, 2))

    return log_prob_gradient(log_prob)


def sample_windows(denoiser: EDMDenoiser, num: int, *, layout: WindowLayout, normalizer: WindowNormalizer,
                   guidance: Callable | None = None, guidance_coeff: float = 0.0, cosine_coeff: float = 0.3,
                   delay: int = 0, steps: int = 64, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                   generator: torch.Generator | None = None, batch: int = 4096) -> torch.Tensor:
    r"""Raw windows ``[num, layout.dim]`` from the denoiser, guided when ``guidance`` and ``guidance_coeff > 0``.

    Calls :func:`polab.estimators.diffusion_guidance.policy_guided_sample` with the behaviour score
    :math:`(D(x,\sigma)-x)/\sigma^2`, ``steps`` EDM levels (:func:`edm_sigma_schedule`), ``guidance_mode="shift"``,
    ``normalize_guidance=True`` and :func:`guidance_schedule` (the authors' guidance step); start
    :math:`x=\sigma_{\max}\varepsilon` in normalised coordinates. Deterministic given ``generator``.
    """
    if int(num) != num or num < 1:
        raise ValueError(f"num must be a positive integer; got {num!r}.")
    if guidance_coeff < 0:
        raise ValueError(f"guidance_coeff must be >= 0; got {guidance_coeff!r}.")
    p = next(denoiser.parameters())
    sig = edm_sigma_schedule(steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, dtype=p.dtype, device=p.device)
    w = guidance_schedule(steps, cosine_coeff=cosine_coeff, delay=delay).to(p.dtype)

    @torch.no_grad()
    def score(x, sigma):
        return (denoiser(x, sigma) - x) / sigma ** 2

    guide = guidance if guidance is not None else (lambda x: torch.zeros_like(x))
    lam = float(guidance_coeff) if guidance is not None else 0.0
    out = []
    for b0 in range(0, int(num), batch):
        nb = min(batch, int(num) - b0)
        x0 = sig[0] * torch.randn((nb, layout.dim), generator=generator, dtype=p.dtype, device=p.device)
        z = policy_guided_sample(score, guide, x0, sig, lambda_=lam, guidance_schedule=w, guidance_mode="shift",
                                 normalize_guidance=True)
        out.append(normalizer.unnormalize(z))
    return torch.cat(out)


def windows_to_transitions(windows: torch.Tensor, layout: WindowLayout, *, max_action: float) -> dict[str, torch.Tensor]:
    """Raw windows -> flat transitions ``states, actions, rewards, next_states, terminals`` (+ ``window`` index).

    Actions ``max_action * tanh(u)``; terminal where the done channel exceeds 0.5 (``construct_rollout`` in the
    authors' ``util/data.py``); transitions after a terminal in the same window are dropped (the training windows
    never continue past one).
    """
    states, u, r, d = layout.split(windows)
    term = (d > 0.5).to(windows.dtype)
    after = torch.cumsum(term, dim=1) - term > 0  # a terminal earlier in the window
    keep = ~after
    H = layout.horizon
    win = torch.arange(windows.shape[0], device=windows.device)[:, None].expand(-1, H)
    return {"states": states[:, :H][keep], "actions": (max_action * torch.tanh(u))[keep], "rewards": r[keep],
            "next_states": states[:, 1:][keep], "terminals": term[keep], "window": win[keep]}


def simulator_next_states(env_id: str, states, actions) -> np.ndarray:
    """The MuJoCo simulator's next observation from each (observation, action): a ground truth for synthetic dynamics.

    Works for gymnasium MuJoCo tasks whose observation is ``qpos`` (possibly without its first entry, the x position,
    which no dynamics depend on) followed by ``qvel`` (InvertedPendulum, Hopper, HalfCheetah, Walker2d); the state is
    set with ``set_state`` and one ``env.step`` is taken. ``states`` ``[n, state_dim]``, ``actions`` ``[n, action_dim]``.
    """
    import gymnasium as gym

    env = gym.make(env_id)
    u = env.unwrapped
    nq, nv = u.model.nq, u.model.nv
    S, A = np.asarray(states, np.float64), np.asarray(actions, np.float64)
    drop = nq + nv - S.shape[1]
    if drop not in (0, 1):
        env.close()
        raise ValueError(f"{env_id}: observations of size {S.shape[1]} are not qpos (+/- x) and qvel ({nq} + {nv}).")
    env.reset(seed=0)
    out = np.empty_like(S)
    for i in range(S.shape[0]):
        qpos = np.concatenate([np.zeros(drop), S[i, : nq - drop]])
        u.set_state(qpos, S[i, nq - drop:])
        out[i] = env.step(A[i])[0]
    env.close()
    return out
