"""Gymnasium environments written for polab's scaled experiments.

Each module is self-contained (one environment family per module) and registers nothing globally:
build the environments through the module's own constructors.

- :mod:`polab.scaled.envs.roguelike`: a small procedural roguelike whose state is a variable-length
  list of entities with categorical attributes, with design parameters (entity mix, enemy
  strength, map size) that change between training and evaluation (Sestini, Kuhnle, Bagdanov 2020).
"""
