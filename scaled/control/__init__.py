"""Small control agents for the scaled experiments, written for polab.

- :mod:`polab.scaled.control.envs`: vectorised gymnasium environments (CartPole, MountainCar,
  Atari Pong and Freeway through ``ale-py``) with the observation scaling the threat
  model is stated in.
- :mod:`polab.scaled.control.policies`: MLP and CNN actor-critics and :class:`SmoothedPolicy`,
  the Gaussian observation-smoothing wrapper (noise added to each frame before stacking).
- :mod:`polab.scaled.control.ppo`: a compact PPO (clipped surrogate, GAE) on vectorised envs.
- :mod:`polab.scaled.control.attack`: an adaptive gradient attack on the observations with a
  total l2 budget over the episode.
- :mod:`polab.scaled.control.rollout`: batched smoothed episodes, clean or attacked.

Certificates are computed by :mod:`polab.estimators.smoothing_certificates`, unchanged.
"""
