r"""The protocol every polab text environment follows, its registry, and the reply parser.

The multi-turn agent trainer (issue 15) drives every text game through this one interface, so a
credit-assignment method (GiGPO, GRPO, RLOO, POAD/BAD, EPO, ARPO, the debate reward, PoAct) never
knows which game it is playing.

Interface
---------
A text environment is a :class:`gymnasium.Env` whose observation and action spaces are
:class:`gymnasium.spaces.Text` (printable ASCII and one symbol, see :data:`PRINTABLE`):

- ``reset(*, seed=None, options=None) -> (obs: str, info)``. ``seed`` fixes the *level* (the
  procedural room, game, scenario or case): two environments of the same spec reset with the same
  seed are in the same state (GiGPO's group of ``G`` environments shares a reset this way).
  ``seed=None`` draws the next level seed from the environment's own ``np_random`` (seeded by
  gymnasium on the first seeded reset). ``options={"task_id": ID}`` resets exactly the task ``ID``
  returned earlier in ``info["task_id"]`` (ARPO's replay of a task); an ``ID`` of another spec is a
  ``ValueError``.
- ``step(action) -> (obs, reward: float, terminated, truncated, info)``. ``action`` is a ``str``
  or ``None``. It is *valid* when it equals one of ``info["admissible_actions"]`` exactly or after
  :func:`normalize_action` (case folded, whitespace collapsed, surrounding quotes / a final period
  removed). Anything else (including ``None``, which :func:`parse_action` returns for an
  unparseable reply) is an **invalid action**: a no-op on the game state that still counts one
  step towards ``max_steps`` and earns exactly ``invalid_action_penalty`` (an option of every
  environment, default ``0.0``); it never raises. A non-``str``, non-``None`` action is a
  ``ValueError`` (a trainer bug, not a model error). Stepping before ``reset`` or after the
  episode ended is a ``RuntimeError``.
- ``truncated`` is ``True`` when ``max_steps`` steps have been taken without termination.

``info`` always has (reset and step):

``"admissible_actions"``: ``list[str]``
    The valid actions now (the action set of a choice-based policy); empty once the episode ends.
``"task_id"``: ``str``
    ``"<canonical spec>#<level>"``, e.g. ``"sokoban:boxes=2#17"`` (the canonical spec lists the
    options that differ from their defaults; the level is the seed, or ``seed mod n_games`` for
    an environment with a finite pool of levels such as TextWorld; a hand-made Sokoban level has
    ``#layout-<hash>``, which ``reset`` cannot replay); identifies the level for ARPO's per-task
    replay and evaluation. ``info["level"]`` is the canonical spec alone (the *distribution* a
    task was drawn from: DUMP's data source).
``"anchor"``: ``str``
    A canonical text of the environment state, for GiGPO's exact-match anchor groups: within one
    level (a GiGPO group shares the level seed) two steps have equal anchors exactly when their
    states are equal. Hidden parameters that are constant within a level (a negotiation partner's
    values, the evidence task's hidden condition) are left out, so reading the anchor reveals no
    more than the history of observations; TextWorld's anchor is the game's full fact list,
    which does include objects in rooms not yet visited (privileged for a policy that reads it),
    unless the spec sets ``anchor=observation`` (then it is the observation text).
``"won"``: ``bool``
    The episode's success so far (``True`` from the winning step on).
``"objective"``: ``str``
    The task statement to put in the prompt.
``"valid_action"``: ``bool`` (step only)
    Whether the action was admissible (see above).

plus ``"steps"`` (steps taken in the episode) and ``"level"``.

Registry and difficulty levels
------------------------------
:func:`make_text_env` builds an environment from a spec string ``"NAME"`` or
``"NAME:key=value,key=value"`` whose keys are the fields of the environment's config dataclass
(``SokobanEnv.config_cls`` etc.; every config has ``max_steps`` and ``invalid_action_penalty``).
Unknown names, unknown keys and unparseable values are ``ValueError``\ s that list what is
accepted. :data:`TEXT_ENVS` maps each name to its class (imported lazily, so building a Sokoban
room never imports TextWorld). A difficulty curriculum is a list of specs
(:func:`parse_env_specs` splits ``"spec;spec;..."``), each spec a distribution over levels (its
seeds); :data:`DIFFICULTY_LEVELS` holds an easy-to-hard list per environment.

Reply parsing
-------------
:func:`parse_action` maps a model's free-text reply to an admissible action or ``None``:

1. the reply exactly equal to an admissible action;
2. else the text inside the last ``<action>...</action>`` tag (tags case-insensitive) if there is
   one, otherwise the whole reply, stripped: exact match;
3. else the same text after :func:`normalize_action` equal to a normalised admissible action
   (the first such action in the admissible order).

No substring or fuzzy matching: a reply that names two actions, or a sentence around an action
without tags, is invalid (counted as an invalid action, never guessed).

Baselines
---------
:func:`random_policy_baseline` plays the uniform-random admissible-action policy on held-out level
seeds and reports the success rate (95% Wilson interval), mean return and steps per second;
``benchmarks/text_env_steps.py`` prints it for every spec of :data:`DIFFICULTY_LEVELS`.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import string
import typing
from typing import Any, ClassVar, Sequence

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = [
    "DIFFICULTY_LEVELS",
    "PRINTABLE",
    "RandomBaseline",
    "TEXT_ENVS",
    "TextEnv",
    "TextEnvConfig",
    "make_text_env",
    "normalize_action",
    "parse_action",
    "parse_env_spec",
    "parse_env_specs",
    "random_policy_baseline",
    "text_env_class",
    "wilson_interval",
]

#: Characters allowed in observations and actions: printable ASCII (incl. newline and tab) plus
#: "\u221a" (the square-root sign verl-agent's Sokoban uses for a box on a target).
PRINTABLE: frozenset[str] = frozenset(string.printable + "\u221a")

#: Longest action string the action space admits.
MAX_ACTION_CHARS = 256

#: Name -> "module:Class" of every registered text environment (imported on first use).
TEXT_ENVS: dict[str, str] = {
    "sokoban": "polab.scaled.envs.sokoban:SokobanEnv",
    "textworld": "polab.scaled.envs.textworld_env:TextWorldEnv",
    "negotiation": "polab.scaled.envs.negotiation:NegotiationEnv",
    "evidence": "polab.scaled.envs.evidence:EvidenceEnv",
}

#: Easy-to-hard specs per environment (each one a distribution over level seeds), for curricula
#: such as DUMP. Tests check that every spec here builds.
DIFFICULTY_LEVELS: dict[str, list[str]] = {
    "sokoban": [
        "sokoban:size=5,boxes=1,max_steps=20",
        "sokoban:size=6,boxes=1,max_steps=30",
        "sokoban:size=7,boxes=2,max_steps=40",
        "sokoban:size=8,boxes=3,max_steps=60",
    ],
    "textworld": [
        "textworld:world_size=2,nb_objects=4,quest_length=1,max_steps=20",
        "textworld:world_size=4,nb_objects=6,quest_length=3,max_steps=40",
        "textworld:world_size=6,nb_objects=10,quest_length=5,max_steps=60",
    ],
    "negotiation": [
        "negotiation:max_count=2,max_steps=6",
        "negotiation:max_count=3,max_steps=6",
        "negotiation:max_count=4,max_steps=4",
    ],
    "evidence": [
        "evidence:n_evidence=3,inspect_cost=0.02",
        "evidence:n_evidence=5,inspect_cost=0.02",
        "evidence:n_evidence=8,inspect_cost=0.05",
    ],
}


@dataclasses.dataclass(frozen=True)
class TextEnvConfig:
    """Options shared by every text environment (subclassed per environment).

    Parameters
    ----------
    max_steps:
        Steps (valid or invalid) after which the episode is truncated; ``>= 1``.
    invalid_action_penalty:
        Reward of an invalid action (the state does not change). ``0.0`` by default; verl-agent
        uses a penalty coefficient of 0.1 for its invalid-action penalty.
    """

    max_steps: int = 30
    invalid_action_penalty: float = 0.0

    def __post_init__(self) -> None:
        if int(self.max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}; pass max_steps=30 or similar")


# ----------------------------------------------------------------------------------------------
# Reply parsing
# ----------------------------------------------------------------------------------------------

_TAG = re.compile(r"<action>(.*?)</action>", re.IGNORECASE | re.DOTALL)
_WS = re.compile(r"\s+")


def normalize_action(text: str) -> str:
    """Case-fold, collapse whitespace, and strip surrounding quotes/backticks and a final period.

    ``normalize_action('  "Go  North." ') == "go north"``.
    """
    out = _WS.sub(" ", text).strip()
    for _ in range(3):  # peel nested wrappers such as `"go north"`
        stripped = out.strip("\"'`").strip()
        if stripped.endswith("."):
            stripped = stripped[:-1].rstrip()
        if stripped == out:
            break
        out = stripped
    return out.casefold()


def parse_action(reply: str | None, admissible: Sequence[str]) -> str | None:
    """Map a model reply to one of ``admissible`` or ``None`` (an invalid action).

    Rules, in order (see the module docstring): exact match of the whole reply; the last
    ``<action>...</action>`` tag's content (or the whole reply), stripped, matched exactly; the
    same text matched after :func:`normalize_action`. Returns the admissible string itself.
    """
    if reply is None:
        return None
    if not isinstance(reply, str):
        raise ValueError(f"reply must be a str or None, got {type(reply).__name__}")
    admissible = list(admissible)
    if reply in admissible:
        return reply
    tags = _TAG.findall(reply)
    candidate = (tags[-1] if tags else reply).strip()
    if candidate in admissible:
        return candidate
    norm = normalize_action(candidate)
    if not norm:
        return None
    for action in admissible:
        if normalize_action(action) == norm:
            return action
    return None


# ----------------------------------------------------------------------------------------------
# Spec strings and registry
# ----------------------------------------------------------------------------------------------


def text_env_class(name: str) -> type["TextEnv"]:
    """The class registered under ``name`` in :data:`TEXT_ENVS` (imported now)."""
    if name not in TEXT_ENVS:
        raise ValueError(f"unknown text environment {name!r}; choose one of {sorted(TEXT_ENVS)}")
    module_name, _, cls_name = TEXT_ENVS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:  # pragma: no cover - only while a module is being written
        raise ValueError(f"text environment {name!r} is registered but {module_name} cannot be imported: {err}") from err
    return getattr(module, cls_name)


def _convert(value: str, typ: Any, key: str, name: str) -> Any:
    try:
        if typ is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return value
    except ValueError:
        raise ValueError(
            f"option {key}={value!r} of text environment {name!r} is not a valid {typ.__name__}"
        ) from None
    raise ValueError(f"option {key} of {name!r} has unsupported type {typ!r}")  # pragma: no cover


def parse_env_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"NAME:key=value,..."`` into the name and typed keyword options.

    Values are converted with the type of the config field of the same name (int, float, bool,
    str). Raises ``ValueError`` for an unknown name or key, a malformed pair, or a bad value.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an environment spec must be a non-empty string like 'sokoban:size=6,boxes=1', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    cls = text_env_class(name)
    hints = typing.get_type_hints(cls.config_cls)
    fields = [f.name for f in dataclasses.fields(cls.config_cls)]
    kwargs: dict[str, Any] = {}
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"malformed option {pair!r} in spec {spec!r}; write key=value")
        if key not in fields:
            raise ValueError(f"unknown option {key!r} for text environment {name!r}; accepted keys: {fields}")
        if key in kwargs:
            raise ValueError(f"option {key!r} given twice in spec {spec!r}")
        kwargs[key] = _convert(value.strip(), hints[key], key, name)
    return name, kwargs


def parse_env_specs(specs: str | Sequence[str]) -> list[str]:
    """A curriculum / difficulty distribution: ``"spec;spec;..."`` or a list of specs, each validated.

    Returns the canonical spec strings (see :attr:`TextEnv.spec_string`: the name and the options
    that differ from their defaults, in the config's field order).
    """
    items = [s.strip() for s in specs.split(";")] if isinstance(specs, str) else [str(s).strip() for s in specs]
    items = [s for s in items if s]
    if not items:
        raise ValueError("no environment spec given; pass e.g. 'sokoban:size=6,boxes=1;sokoban:size=7,boxes=2'")
    out = []
    for item in items:
        name, kwargs = parse_env_spec(item)
        out.append(_canonical_spec(name, text_env_class(name).config_cls(**kwargs)))
    return out


def _canonical_spec(name: str, config: TextEnvConfig) -> str:
    """``NAME:key=value,...`` with the options that differ from their defaults, in field order."""
    parts = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value == f.default:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        parts.append(f"{f.name}={value}")
    return name + (":" + ",".join(parts) if parts else "")


def make_text_env(spec: str, **overrides: Any) -> "TextEnv":
    """Build a registered text environment from ``"NAME:key=value,..."`` (keyword overrides win)."""
    name, kwargs = parse_env_spec(spec)
    cls = text_env_class(name)
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown option(s) {bad} for text environment {name!r}; accepted keys: {sorted(fields)}")
    kwargs.update(overrides)
    return cls(cls.config_cls(**kwargs))


# ----------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------


class TextEnv(gymnasium.Env):
    """Base class: step limit, invalid actions, seeding, task ids and ``info`` assembly.

    A subclass sets ``name``, ``config_cls`` and ``max_observation_chars`` and implements the
    hooks ``_generate(level_seed)``, ``_observation()``, ``_admissible()``, ``_anchor()``,
    ``_objective()``, ``_apply(action) -> (reward, terminated, extra_info)`` and ``_won()``, and
    may override ``_extra_info()`` (keys added to every ``info``) and ``_canonical_level(seed)``
    (for a finite pool of levels: the level a seed selects, which then names the task).
    ``_apply`` only ever receives an admissible action.
    """

    name: ClassVar[str] = "text"
    config_cls: ClassVar[type[TextEnvConfig]] = TextEnvConfig
    max_observation_chars: ClassVar[int] = 4096
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, config: TextEnvConfig | None = None, *, render_mode: str | None = None) -> None:
        if config is None:
            config = self.config_cls()
        if not isinstance(config, self.config_cls):
            raise ValueError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(config).__name__}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.config = config
        self.render_mode = render_mode
        self.spec_string = _canonical_spec(self.name, config)
        self.observation_space = spaces.Text(self.max_observation_chars, min_length=0, charset=PRINTABLE)
        self.action_space = spaces.Text(MAX_ACTION_CHARS, min_length=0, charset=PRINTABLE)
        self._level_seed: int | None = None
        self._custom_task: str | None = None
        self._steps = 0
        self._done = True
        self._ever_reset = False

    # -- hooks -----------------------------------------------------------------------------
    def _generate(self, level_seed: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _observation(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _admissible(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _anchor(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _objective(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply(self, action: str) -> tuple[float, bool, dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _won(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra_info(self) -> dict[str, Any]:
        return {}

    def _canonical_level(self, level_seed: int) -> int:
        """The level a seed selects (identity; a finite pool of levels maps seeds onto it)."""
        return level_seed

    # -- public API ------------------------------------------------------------------------
    @property
    def task_id(self) -> str:
        if self._custom_task is not None:
            return f"{self.spec_string}#{self._custom_task}"
        if self._level_seed is None:
            raise RuntimeError("call reset() first")
        return f"{self.spec_string}#{self._level_seed}"

    def _start_custom_episode(self, task_key: str) -> tuple[str, dict[str, Any]]:
        """Start an episode from a hand-made state the subclass has just installed.

        Its task id is ``"<spec>#<task_key>"`` (not replayable through ``reset``; for tests and
        hand-made puzzles).
        """
        self._custom_task = str(task_key)
        self._steps = 0
        self._done = False
        self._ever_reset = True
        return self._observation(), self._info()

    @property
    def level_seed(self) -> int | None:
        return self._level_seed

    def admissible_actions(self) -> list[str]:
        """The actions valid now (empty once the episode is over)."""
        return [] if self._done else list(self._admissible())

    def match_action(self, action: str | None) -> str | None:
        """The admissible action ``action`` denotes (exact, then normalised match), else ``None``."""
        if action is None:
            return None
        admissible = self._admissible()
        if action in admissible:
            return action
        norm = normalize_action(action)
        for candidate in admissible:
            if normalize_action(candidate) == norm:
                return candidate
        return None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        options = dict(options or {})
        task_id = options.pop("task_id", None)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; the only option is 'task_id'")
        if task_id is not None:
            spec, sep, level = str(task_id).rpartition("#")
            if not sep or spec != self.spec_string or not level.lstrip("-").isdigit():
                raise ValueError(
                    f"task_id {task_id!r} does not belong to this environment ({self.spec_string!r}); "
                    "pass an info['task_id'] returned by an environment of the same spec"
                )
            super().reset(seed=None)
            level_seed = int(level)
        elif seed is not None:
            if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
                raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
            super().reset(seed=int(seed))
            level_seed = int(seed)
        else:
            super().reset(seed=None)
            level_seed = int(self.np_random.integers(0, 2**31 - 1))
        level_seed = self._canonical_level(level_seed)
        self._level_seed = level_seed
        self._custom_task = None
        self._generate(level_seed)
        self._steps = 0
        self._done = False
        self._ever_reset = True
        return self._observation(), self._info()

    def step(self, action: str | None) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not self._ever_reset:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has ended; call reset() before step()")
        if action is not None and not isinstance(action, str):
            raise ValueError(
                f"action must be a str (or None for an unparseable reply), got {type(action).__name__}; "
                "use parse_action(reply, info['admissible_actions'])"
            )
        matched = self.match_action(action)
        self._steps += 1
        extra: dict[str, Any] = {}
        if matched is None:
            reward, terminated = float(self.config.invalid_action_penalty), False
        else:
            reward, terminated, extra = self._apply(matched)
            reward = float(reward)
        truncated = (not terminated) and self._steps >= self.config.max_steps
        self._done = bool(terminated or truncated)
        info = self._info()
        info["valid_action"] = matched is not None
        info.update(extra)
        return self._observation(), reward, bool(terminated), bool(truncated), info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._observation()
        return None

    def _info(self) -> dict[str, Any]:
        return {
            "admissible_actions": self.admissible_actions(),
            "task_id": self.task_id,
            "level": self.spec_string,
            "anchor": self._anchor(),
            "won": bool(self._won()),
            "objective": self._objective(),
            "steps": self._steps,
            **self._extra_info(),
        }


# ----------------------------------------------------------------------------------------------
# Random-policy baseline and throughput
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RandomBaseline:
    """Success of the uniform-random policy over admissible actions on held-out level seeds.

    ``success_ci`` is the 95% Wilson score interval of the success rate; ``steps_per_second``
    counts ``env.step`` calls per wall-clock second (resets included in the time);
    ``steps_per_cpu_second`` per second of this process's CPU time (less sensitive to other
    processes on a shared machine).
    """

    spec: str
    episodes: int
    successes: int
    success_rate: float
    success_ci: tuple[float, float]
    mean_return: float
    mean_length: float
    steps: int
    seconds: float
    steps_per_second: float
    cpu_seconds: float = float("nan")
    steps_per_cpu_second: float = float("nan")


def wilson_interval(successes: int, n: int, *, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95%)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def random_policy_baseline(
    spec: str, *, episodes: int, first_seed: int = 1_000_000, generator: np.random.Generator, progress: bool = False
) -> RandomBaseline:
    """Run the uniform-random admissible-action policy on levels ``first_seed, first_seed + 1, ...``.

    Level seeds from ``first_seed`` on are the "held-out" seeds (training code draws small seeds).
    """
    import time

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = make_text_env(spec)
    successes, steps, total_return, total_len = 0, 0, 0.0, 0
    iterator = range(episodes)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"random policy on {spec}")
    start, cpu_start = time.perf_counter(), time.process_time()
    for k in iterator:
        _, info = env.reset(seed=first_seed + k)
        done, ep_return, length = False, 0.0, 0
        while not done:
            actions = info["admissible_actions"]
            action = actions[int(generator.integers(len(actions)))]
            _, reward, terminated, truncated, info = env.step(action)
            ep_return += reward
            length += 1
            done = terminated or truncated
        successes += int(info["won"])
        steps += length
        total_return += ep_return
        total_len += length
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    env.close()
    return RandomBaseline(
        spec=env.spec_string,
        episodes=episodes,
        successes=successes,
        success_rate=successes / episodes,
        success_ci=wilson_interval(successes, episodes),
        mean_return=total_return / episodes,
        mean_length=total_len / episodes,
        steps=steps,
        seconds=seconds,
        steps_per_second=steps / seconds if seconds > 0 else float("inf"),
        cpu_seconds=cpu_seconds,
        steps_per_cpu_second=steps / cpu_seconds if cpu_seconds > 0 else float("inf"),
    )
