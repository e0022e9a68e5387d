"""OpenMP's wait policy for polab's entry points: ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it.

torch's CPU kernels run in OpenMP parallel regions (GNU libgomp in the CPU wheels). At the end of each
region the threads wait at a barrier; by default libgomp makes a waiting thread spin for a while
before it sleeps. On a machine whose cores other processes also want, a spinning thread burns a core
that the thread it waits for (descheduled) needs, so a step made of many small regions (the
token-by-token decode) slows by a large factor; with ``PASSIVE`` waiting threads sleep at once
(measured in :func:`polab.scaled.distributed.decode_threads`' docstring and in
``benchmarks/omp_wait_policy.py``).

The OpenMP runtime reads the variable once, when it is loaded, i.e. when ``torch`` is first imported;
so :func:`apply_omp_wait_policy` must run before that, which is why the ``polab`` command
(:mod:`polab.scaled.cli`) and the benchmarks call it first. Importing polab as a library changes
nothing: a program that wants the passive policy sets ``OMP_WAIT_POLICY=PASSIVE`` in its environment
(or calls this function before importing torch).

A user's value wins: ``OMP_WAIT_POLICY=ACTIVE`` (spin), ``PASSIVE``, or an empty
``OMP_WAIT_POLICY=`` for the runtime's own default (the variable is then removed, so libgomp does not
warn about an invalid value).
"""

from __future__ import annotations

import os
import sys

__all__ = ["apply_omp_wait_policy"]


def apply_omp_wait_policy(default: str = "PASSIVE") -> bool:
    """Set ``OMP_WAIT_POLICY`` to ``default`` if unset (an empty value: unset it); True when it takes effect.

    Returns False when torch is already imported (the OpenMP runtime has read its environment).
    """
    value = os.environ.get("OMP_WAIT_POLICY")
    if value is None:
        os.environ["OMP_WAIT_POLICY"] = default
    elif value.strip() == "":
        del os.environ["OMP_WAIT_POLICY"]
    return "torch" not in sys.modules
