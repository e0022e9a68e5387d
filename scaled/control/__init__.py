"""Small control agents for the scaled experiments, written for polab.

- :mod:`scaled.control.envs`: vectorised gymnasium environments (CartPole, MountainCar,
  Atari Pong and Freeway through ``ale-py``) with the observation scaling the threat
  model is stated in.
- :mod:`scaled.control.policies`: MLP and CNN actor-critics and :class:`SmoothedPolicy`,
  the Gaussian observation-smoothing wrapper (noise added to each frame before stacking).
- :mod:`scaled.control.ppo`: a compact PPO (clipped surrogate, GAE) on vectorised envs.
- :mod:`scaled.control.attack`: an adaptive gradient attack on the observations with a
  total l2 budget over the episode.
- :mod:`scaled.control.rollout`: batched smoothed episodes, clean or attacked.

Certificates are computed by :mod:`estimators.smoothing_certificates`, unchanged.
"""
