"""``td3bc-pgd``: TD3+BC trained on policy-guided synthetic data mixed with the real data (Jackson et al. 2024).

A registered offline method (:data:`polab.scaled.methods.offline_losses.OFFLINE_LOSSES`) that is also a *data
source*: it supplies the trainer's minibatches (``sample_batch``) and keeps TD3+BC's actor loss unchanged.

- ``setup``: windows of ``horizon`` transitions from the dataset (:func:`polab.scaled.offline.synthetic.build_windows`),
  an EDM denoiser fitted to them (``denoiser_steps``), and a first synthetic set sampled *unguided* (the authors'
  ``SyntheticRolloutGenerator.__init__`` does the same before the agent exists).
- ``begin_step``: every ``refresh_every`` gradient steps, the synthetic set is regenerated with the *current* actor
  as the guidance policy (``train_agent.py``: ``update_synthetic_dataset`` every ``synth_dataset_lifetime`` steps).
- ``sample_batch``: ``round(synth_fraction * batch_size)`` transitions from the synthetic set, the rest from the
  dataset (``MixedRolloutGenerator.batch_rollout``, ``synth_batch_size`` 240 of 256).

Defaults are the authors' where they exist (EmptyJackson/policy-guided-diffusion: ``util/args.py`` @
7a8b375ef904294c84b61cf06d485089da561782 and ``diffusion/rollout_generator.py`` @
1b1fb60cce92a97788cb6cb9c7827a2b39ba1173): ``synth_fraction`` 240/256, ``refresh_every`` 10,000,
``cosine_coeff`` 0.3, ``policy_sigma`` 1 (``det_guidance``), TD3+BC ``alpha`` 2.5. CPU-scale departures, each an
option: ``horizon`` 4 (authors 32), ``sample_steps`` 64 (authors 256), ``num_windows`` 4,096 windows of 4
transitions (authors 32 x 256 rollouts of 128 steps), a 3-layer MLP denoiser of width 256 trained for 5,000 steps
(authors: a U-Net trained for many epochs). ``guidance_coeff``: the authors' command-line default is 0 (unguided) and
the paper's value is not confirmed here; 0.1 is the default, picked in a quick look on InvertedPendulum medium-replay
(a constant target policy; not a tuned value): 0.1 moved synthetic actions part of the way to the policy while the
simulator's one-step error of the synthetic transitions stayed small, 0.3 and more moved them almost onto it at several
times the dynamics error. Both quantities are logged at every refresh: ``synth_policy_gap`` (mean
``|a - pi(s)|`` over the synthetic set, against the actor that guided it; the first, unguided set against the initial
actor) and ``synth_dynamics_error`` (mean ``||s' - f(s, a)||`` over 256 synthetic transitions, ``f`` the MuJoCo
simulator, in units of the dataset's mean ``||s' - s||``).

States are stored normalised as the trainer's (TD3+BC's state normalisation of the real dataset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .offline_losses import OFFLINE_LOSSES, TD3BCLoss, _alpha_ok

__all__ = ["TD3BCPGD"]


@OFFLINE_LOSSES.register("td3bc-pgd", aliases=("pgd",))
class TD3BCPGD(TD3BCLoss):
    """TD3+BC on a mix of policy-guided synthetic and real transitions (see the module docstring)."""

    @dataclass
    class Options:
        alpha: float = field(default=2.5, metadata={"help": "TD3+BC alpha (paper 2.5)"})
        synth_fraction: float = field(default=240 / 256, metadata={
            "help": "fraction of each minibatch drawn from the synthetic set (authors: synth_batch_size 240 of 256)"})
        refresh_every: int = field(default=10_000, metadata={
            "help": "regenerate the synthetic set with the current actor every this many gradient steps "
                    "(authors: synth_dataset_lifetime 10,000); a multiple of --grad-steps-per-step"})
        num_windows: int = field(default=4096, metadata={"help": "synthetic windows per refresh (each horizon transitions)"})
        horizon: int = field(default=4, metadata={"help": "transitions per window (authors: 32-row trajectories)"})
        guidance_coeff: float = field(default=0.1, metadata={
            "help": "policy guidance coefficient c (authors' CLI default 0 = unguided; paper value unconfirmed)"})
        cosine_coeff: float = field(default=0.3, metadata={"help": "cosine term of the guidance schedule (authors 0.3)"})
        policy_sigma: float = field(default=1.0, metadata={
            "help": "std of the Gaussian around the actor's action, x max_action (authors: 1 with det_guidance); the "
                    "normalised guidance step makes its value cancel (an isotropic Gaussian's gradient direction does "
                    "not depend on it)"})
        sample_steps: int = field(default=64, metadata={"help": "EDM noise levels when sampling (authors 256)"})
        denoiser_steps: int = field(default=5000, metadata={"help": "denoiser training steps"})
        denoiser_hidden: int = field(default=256, metadata={"help": "denoiser MLP width"})
        denoiser_lr: float = field(default=1e-3, metadata={"help": "denoiser Adam learning rate (authors 2e-3, cosine)"})

    metrics = ("lambda", "bc_loss", "synth_transitions", "synth_policy_gap", "synth_dynamics_error", "denoiser_loss",
               "synth_refreshes", "pgd_time_s")

    @classmethod
    def validate(cls, options, config) -> list[str]:
        o = options
        errs = _alpha_ok(o.alpha)
        if not (isinstance(o.synth_fraction, (int, float)) and 0 <= o.synth_fraction <= 1):
            errs.append(f"td3bc-pgd.synth_fraction must lie in [0, 1], got {o.synth_fraction!r}")
        for k in ("refresh_every", "num_windows", "horizon", "denoiser_steps", "denoiser_hidden"):
            v = getattr(o, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                errs.append(f"td3bc-pgd.{k} must be a positive integer, got {v!r}")
        if not (isinstance(o.sample_steps, int) and o.sample_steps >= 2):
            errs.append(f"td3bc-pgd.sample_steps must be an integer >= 2, got {o.sample_steps!r}")
        for k in ("guidance_coeff", "cosine_coeff"):
            if not (isinstance(getattr(o, k), (int, float)) and getattr(o, k) >= 0):
                errs.append(f"td3bc-pgd.{k} must be >= 0, got {getattr(o, k)!r}")
        for k in ("policy_sigma", "denoiser_lr"):
            if not (isinstance(getattr(o, k), (int, float)) and getattr(o, k) > 0):
                errs.append(f"td3bc-pgd.{k} must be > 0, got {getattr(o, k)!r}")
        gsps = getattr(config, "grad_steps_per_step", None)
        if isinstance(o.refresh_every, int) and isinstance(gsps, int) and gsps > 0 and o.refresh_every % gsps:
            errs.append(f"td3bc-pgd.refresh_every ({o.refresh_every}) must be a multiple of --grad-steps-per-step ({gsps}), "
                        "since the synthetic set is regenerated between trainer steps")
        return errs

    # -- set-up: windows, denoiser, first (unguided) synthetic set ------------------------------------------
    def setup(self, trainer) -> None:
        from polab.scaled.offline import synthetic as S

        import time

        t0 = time.perf_counter()
        o, ds = self.options, trainer.dataset
        self.max_action = trainer.max_action
        x, self.layout = S.build_windows(ds.observations, ds.actions, ds.rewards, ds.next_observations, ds.terminals,
                                         ds.timeouts, horizon=o.horizon, max_action=self.max_action)
        self.window_normalizer = S.WindowNormalizer.fit(x, self.layout)
        self.denoiser, losses = S.train_denoiser(self.window_normalizer.normalize(x), steps=o.denoiser_steps,
                                                 hidden=o.denoiser_hidden, lr=o.denoiser_lr,
                                                 seed=trainer.seed_for(0, "pgd-denoiser"),
                                                 progress=bool(getattr(trainer.cfg, "progress", False)))
        self.denoiser.to(trainer.device)
        self.denoiser_loss = float(sum(losses[-100:]) / len(losses[-100:]))
        self.real_windows = int(x.shape[0])
        self.real_step = float(np.linalg.norm(ds.next_observations - ds.observations, axis=1).mean())
        self.refreshes = 0
        self.generator = torch.Generator(device=trainer.device)
        self.pgd_time = 0.0
        self._regenerate(trainer, step=0, guided=False)
        self.pgd_time = time.perf_counter() - t0

    def _regenerate(self, trainer, *, step: int, guided: bool) -> None:
        import time

        from polab.scaled.offline import synthetic as S

        t0 = time.perf_counter()
        o = self.options
        self.generator.manual_seed(trainer.seed_for(step, "pgd-sample"))
        actor, norm = trainer.learner.actor, trainer.norm

        def policy(states):  # raw states -> deterministic actions (the actor sees TD3+BC's normalised states)
            s = states.to(trainer.device, torch.float32)
            return actor(norm(s) if norm is not None else s)

        guide = (S.policy_guidance(policy, self.layout, self.window_normalizer, max_action=self.max_action,
                                   policy_sigma=o.policy_sigma) if guided and o.guidance_coeff > 0 else None)
        w = S.sample_windows(self.denoiser, o.num_windows, layout=self.layout, normalizer=self.window_normalizer,
                             guidance=guide, guidance_coeff=o.guidance_coeff, cosine_coeff=o.cosine_coeff,
                             steps=o.sample_steps, generator=self.generator)
        tr = S.windows_to_transitions(w, self.layout, max_action=self.max_action)
        with torch.no_grad():
            self.policy_gap = float((tr["actions"] - policy(tr["states"]).to(tr["actions"])).abs().mean())
        self.dynamics_error = self._dynamics_error(trainer.dataset.env_id, tr)
        f = norm if norm is not None else (lambda z: z)
        dev = trainer.device
        self.synth = {"states": f(tr["states"].to(dev, torch.float32)), "actions": tr["actions"].to(dev, torch.float32),
                      "rewards": tr["rewards"].to(dev, torch.float32), "next_states": f(tr["next_states"].to(dev, torch.float32)),
                      "terminals": tr["terminals"].to(dev, torch.float32)}
        self.refreshes += 1
        self.pgd_time += time.perf_counter() - t0

    def _dynamics_error(self, env_id, tr, n: int = 256) -> float:
        """Mean ``||s'_synthetic - f(s, a)||`` over the first ``n`` synthetic transitions, ``f`` the MuJoCo simulator, in
        units of the dataset's mean ``||s' - s||`` (nan where the observation is not the simulator state)."""
        from polab.scaled.offline.synthetic import simulator_next_states

        try:
            nxt = simulator_next_states(env_id, tr["states"][:n].cpu().numpy(), tr["actions"][:n].cpu().numpy())
        except (ValueError, AttributeError, ImportError):
            return float("nan")
        return float(np.linalg.norm(nxt - tr["next_states"][:n].cpu().numpy(), axis=1).mean() / max(self.real_step, 1e-12))

    # -- the trainer's hooks --------------------------------------------------------------------------------
    def begin_step(self, trainer, step: int) -> None:
        g = step * trainer.cfg.grad_steps_per_step
        if step > 0 and g % self.options.refresh_every == 0 and getattr(self, "_refreshed_at", None) != step:
            self._regenerate(trainer, step=step, guided=True)
            self._refreshed_at = step

    def sample_batch(self, trainer, generator: torch.Generator) -> dict:
        data, syn = trainer.data, self.synth
        bs = trainer.cfg.batch_size
        k = int(round(self.options.synth_fraction * bs))
        dev = data["actions"].device
        i_syn = torch.randint(syn["actions"].shape[0], (k,), generator=generator, device=dev)
        i_real = torch.randint(data["actions"].shape[0], (bs - k,), generator=generator, device=dev)
        return {key: torch.cat([syn[key][i_syn], data[key][i_real]]) for key in data}

    def actor_loss(self, trainer, batch, pi, q_pi):
        out, m = super().actor_loss(trainer, batch, pi, q_pi)
        m.update({"synth_transitions": float(self.synth["actions"].shape[0]), "synth_policy_gap": self.policy_gap,
                  "synth_dynamics_error": self.dynamics_error,
                  "denoiser_loss": self.denoiser_loss, "synth_refreshes": float(self.refreshes),
                  "pgd_time_s": self.pgd_time})
        return out, m

    # -- checkpoints: the denoiser's weights and the current synthetic set (exact resume) ------------------
    def models(self) -> dict:
        return {"pgd_denoiser": self.denoiser}

    def state_dict(self) -> dict:
        return {"synth": {k: v.cpu() for k, v in self.synth.items()}, "refreshes": self.refreshes,
                "policy_gap": self.policy_gap, "dynamics_error": self.dynamics_error}

    def load_state_dict(self, state: dict) -> None:
        dev = self.synth["actions"].device
        self.synth = {k: v.to(dev) for k, v in state["synth"].items()}
        self.refreshes, self.policy_gap = int(state["refreshes"]), float(state["policy_gap"])
        self.dynamics_error = float(state["dynamics_error"])
