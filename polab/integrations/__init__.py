"""Adapters that run polab's methods inside other frameworks' trainers.

- :mod:`polab.integrations.trl`: :class:`~polab.integrations.trl.CurriculumGRPOTrainer`,
  TRL's ``GRPOTrainer`` drawing its prompts through a polab curriculum
  scheduler (DUMP by default) and feeding TRL's advantages back to it.
  Needs ``pip install polab[integrations]`` (TRL and ``datasets``).
- :mod:`polab.integrations.verl`: ``DumpCurriculumSampler``, a verl
  curriculum sampler (``data.sampler.class_path``) over the same scheduler.

Importing this package imports neither TRL nor verl; each submodule imports
its framework only when it is used.
"""

__all__: list[str] = []
