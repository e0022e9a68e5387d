"""Open registries of trainer methods, and the protocol every registered method follows.

A *method* is one class (advantage estimator, sample filter, reward shaper,
preference loss, pair labeller, ...) registered by name in the registry of its
family. The trainer builds the method the configuration names and calls it;
the trainer's step never compares method names.

The protocol (:class:`Method`):

- ``name``: the registered name (hyphenated: ``dr-grpo``, ``pf-ppo-best-worst``);
- ``Options``: a dataclass of the method's own options (``None`` when it has
  none). Its fields become the command-line group ``--NAME.FIELD`` and the
  ``methods`` entry of ``config.json``; ``legacy_options`` maps the flat
  configuration keys of earlier polab versions (``spo_threshold``) to its fields;
- ``metrics``: the names of the metrics the method reports each step (the run
  folder declares them up front);
- ``state_dict()`` / ``load_state_dict(state)``: what a checkpoint keeps
  (plain containers and tensors), ``models()``: modules the checkpoint saves
  as weights (a critic);
- ``validate(options, config) -> list[str]`` (classmethod): problems with the
  options in the context of the whole trainer configuration, each naming the
  argument, checked before anything is loaded or written;
- the family's compute call (``compute``, ``before_advantage``, ``loss``, ...),
  documented in the family's module.

Names: one style, hyphens (``dr-grpo``); the underscore spellings of earlier
polab versions (``dr_grpo``) are accepted everywhere as aliases.

User code registers a method without editing polab::

    from polab.scaled.methods import ADVANTAGES, AdvantageEstimator, AdvantageResult

    @ADVANTAGES.register("my-adv")
    class MyAdvantage(AdvantageEstimator):
        ...

and selects it with ``--plugins mymodule --advantage my-adv`` (the module is
imported before the command line is parsed and is recorded in ``config.json``,
so ``--config runs/x/config.json`` replays it), or directly with
``--advantage mymodule:MyAdvantage`` (imported and registered on first use).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any, ClassVar

__all__ = ["CriticState", "Method", "Registry", "canonical_name", "import_plugins", "options_from_dict"]


def canonical_name(name: str) -> str:
    """The registry spelling of a method name: stripped, lower case, hyphens for underscores."""
    return str(name).strip().lower().replace("_", "-")


def import_plugins(modules) -> None:
    """Import user modules (their ``@REGISTRY.register`` decorators run); a clear error for a missing one."""
    for mod in modules or ():
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ValueError(f"plugins: cannot import module {mod!r} ({exc}); give an importable module name "
                             "(on PYTHONPATH or installed) whose import registers your methods.") from exc


class Method:
    """Base of every registered method (see the module docstring for the protocol)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type | None] = None
    metrics: ClassVar[tuple[str, ...]] = ()
    legacy_options: ClassVar[dict[str, str]] = {}
    #: metrics summed over ranks (counts); the others are averaged
    summed_metrics: ClassVar[tuple[str, ...]] = ()
    #: True when each rank holds its own state (a replay buffer): checkpoints keep every rank's
    per_rank_state: ClassVar[bool] = False

    def __init__(self, options=None):
        self.options = options if options is not None else (self.Options() if self.Options is not None else None)

    @classmethod
    def validate(cls, options, config) -> list[str]:
        """Problems with ``options`` given the trainer ``config`` (empty when fine)."""
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def models(self) -> dict:
        """Modules saved as weights in checkpoints (name -> nn.Module)."""
        return {}


class CriticState:
    """Mixin of methods that train a critic: ``self.critic`` (a module) and ``self.optimizer`` are their checkpoint state."""

    def models(self) -> dict:
        return {"critic": self.critic}

    def state_dict(self) -> dict:
        return {"critic_optimizer": self.optimizer.state_dict()}  # the weights: models()

    def load_state_dict(self, state: dict) -> None:
        if "critic_optimizer" not in state:
            raise ValueError(f"resume: the checkpoint holds no critic for method {self.name!r}; resume with the method the run started with.")
        if "critic" in state:  # weights may come separately (checkpoint models)
            self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["critic_optimizer"])


def options_from_dict(cls: type[Method], values: dict | None):
    """``cls.Options`` from a dict (unknown keys: ValueError naming them and the valid ones)."""
    if cls.Options is None:
        if values:
            raise ValueError(f"method {cls.name!r} takes no options; got {sorted(values)}.")
        return None
    if isinstance(values, cls.Options):
        return values
    values = dict(values or {})
    names = {f.name: f for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"method {cls.name!r} has no option(s) {unknown}; its options are {sorted(names)}.")
    for k, f in names.items():  # lists from JSON back to tuples where the field is a tuple
        if k in values and isinstance(values[k], list) and str(f.type).startswith("tuple"):
            values[k] = tuple(values[k])
    return cls.Options(**values)


class Registry:
    """Methods of one family by name; open to user code (:meth:`register`), ``module:attr`` resolved on lookup.

    Parameters
    ----------
    family : str
        What the registry holds, for error messages (``"advantage estimator"``).
    option : str
        The configuration field that selects a method of this family (``"advantage"``).
    base : type
        The class every entry derives from (checked at registration).
    """

    def __init__(self, family: str, option: str, base: type = Method):
        self.family, self.option, self.base = family, option, base
        self._entries: dict[str, type] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()):
        """Class decorator: ``@REGISTRY.register("my-name")`` (default: the class's ``name``)."""

        def deco(cls):
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{self.family} {cls!r} must be a subclass of {self.base.__name__}.")
            key = canonical_name(name or cls.name)
            if not key:
                raise ValueError(f"{self.family} {cls.__name__} needs a name: @register('my-name') or a class attribute name.")
            old = self._entries.get(key)
            if old is not None and old.__qualname__ != cls.__qualname__:
                raise ValueError(f"{self.family} name {key!r} is already registered by {old.__module__}.{old.__qualname__}.")
            cls.name = key
            self._entries[key] = cls
            for a in aliases:
                self._aliases[canonical_name(a)] = key
            return cls

        return deco

    @property
    def flag(self) -> str:
        """The command-line spelling of the option (``--sample-filter``)."""
        return "--" + self.option.replace("_", "-")

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self):
        return self._entries.items()

    def __contains__(self, name) -> bool:
        try:
            self.get(name)
        except ValueError:
            return False
        return True

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` (aliases, underscores and ``module:attr`` resolved)."""
        return self.get(name).name

    def get(self, name: str) -> type:
        """The class registered as ``name``; ``module:attr`` imports ``module`` and registers ``attr`` if needed."""
        if ":" in str(name):
            mod, _, attr = str(name).partition(":")
            try:
                obj = getattr(importlib.import_module(mod), attr)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"{self.flag}: cannot load {name!r} ({exc}); give module:attr of a {self.family} class.") from exc
            if not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise ValueError(f"{self.flag}: {name!r} is not a {self.base.__name__} subclass.")
            key = canonical_name(obj.name or attr)
            if key not in self._entries:
                self.register(key)(obj)
            return self._entries[key]
        key = canonical_name(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            close = difflib.get_close_matches(key, list(self._entries), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"{self.flag}: unknown {self.family} {name!r}{hint}; choose one of {', '.join(self._entries)}, "
                             "or register your own (polab.scaled.methods) and pass --plugins MODULE or module:attr.")
        return self._entries[key]

    def build(self, name: str, options: dict | Any = None, **kwargs):
        """An instance of the method ``name`` with its options (a dict or the Options dataclass)."""
        cls = self.get(name)
        return cls(options_from_dict(cls, options), **kwargs)

    def describe(self) -> str:
        """One line per method: name and the first line of its docstring (for --help)."""
        lines = []
        for k, cls in self._entries.items():
            doc = (cls.__doc__ or "").strip().splitlines()
            lines.append(f"{k}: {doc[0] if doc else ''}")
        return "; ".join(lines)
