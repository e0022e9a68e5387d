"""polab: a theory-first library for policy-optimization research.

Installed, the repository's top-level folders live under this one namespace:

- :mod:`polab.theory`: closed forms, bounds and rates (``theory/`` in the repository);
- :mod:`polab.estimators`: the verified core, device-agnostic torch functions (``estimators/``);
- :mod:`polab.proofs_checks`: numerical and symbolic verification (``proofs_checks/``);
- :mod:`polab.scaled`: models, tasks, environments, trainers and the ``polab`` CLI (``scaled/``);
- :mod:`polab.integrations`: adapters for TRL and verl (this folder).

The mapping is setuptools' ``package-dir`` (``pyproject.toml``), for wheels and
editable installs alike. In a source checkout that is not installed (for example
``python -m polab.proofs_checks.NAME`` run from the repository root before
``make setup``) the namespace also looks one folder up, so the same imports work.
"""

from __future__ import annotations

import os as _os

__version__ = "0.2.0"

_here = _os.path.dirname(_os.path.abspath(__file__))
_checkout = _os.path.dirname(_here)
# Source checkout: polab/ sits beside theory/, estimators/, scaled/, proofs_checks/.
# In a wheel those folders are inside polab/ and this adds nothing.
if not _os.path.isdir(_os.path.join(_here, "estimators")) and all(
    _os.path.isfile(_os.path.join(_checkout, name, "__init__.py"))
    for name in ("theory", "estimators", "scaled", "proofs_checks")
):
    __path__.append(_checkout)  # type: ignore[name-defined]  # noqa: F821

__all__ = ["__version__"]
