r"""TextWorld games (Microsoft's procedural text-game engine, the base of ALFWorld) as text environments.

Games are generated offline with TextWorld's own generator (``textworld.generator.make_game`` and
``compile_game``, the Python API behind ``tw-make custom``) from ``GameOptions`` with
``nb_rooms = world_size``, ``nb_objects``, ``quest_length`` and ``seeds = game seed``, and played
through ``textworld.gym`` (``TextworldGymEnv``) with
``EnvInfos(admissible_commands, objective, won, lost, policy_commands, facts)``. The wrapper
follows :mod:`polab.scaled.envs.text_protocol`.

Levels, cache and determinism
-----------------------------
A spec is a finite *pool* of ``n_games`` games: level seed ``s`` plays game ``s mod n_games``,
whose TextWorld seed is ``game_offset + (s mod n_games)``; the task id is
``"<spec>#<s mod n_games>"``. A held-out pool is the same spec with another ``game_offset``
(e.g. ``game_offset=1000000``). Generation is deterministic (same options and seed give
byte-identical ``.json`` and ``.z8`` files; a test checks the ``.json``). Compiled games are cached
outside git under ``$POLAB_CACHE/textworld`` (default ``~/.cache/polab/textworld``) in one folder
per (TextWorld version, world size, objects, quest length, theme), written atomically (a temporary
folder, then ``os.replace``), so concurrent processes may share the cache. A game takes about 2-3
s to generate on one core (most of it Inform 7 compilation); :func:`prepare_games` fills the cache
ahead of training with a progress bar (``python -m polab.scaled.envs.textworld_env SPEC``).

Dynamics
--------
Actions are TextWorld's admissible commands (``info["admissible_actions"]``, in TextWorld's
order). An admissible command is sent to the game; anything else is an invalid action (protocol:
not sent to the game, a no-op with reward ``invalid_action_penalty``). Reward is sparse:
``success_reward`` (default 1) on the step that wins the game (TextWorld's ``won``), 0 otherwise;
a lost game (``lost``) terminates with reward 0. The episode is truncated after ``max_steps``
steps.

Observation: the game's text output with TextWorld's ASCII-art banner, the command prompt and the
status line removed (the first observation starts with the game's introduction, which states the
quest); with ``include_inventory=true`` the inventory is appended. The anchor (``anchor=facts``, the
default) is the sorted list of the game's logical facts (``EnvInfos(facts=True)``: every room,
object, location and open/closed state), which determines the state but names rooms the agent has
not visited; ``anchor=observation`` makes it the observation text instead (what the agent sees,
as verl-agent's ALFWorld anchor). ``info["walkthrough"]`` is TextWorld's ``policy_commands``: a
shortest winning command sequence from the current state (the scripted optimal policy of the tests).

Random-policy baseline (measured)
---------------------------------
Uniform-random admissible commands, 100 episodes per spec over its 16-game pool (level seeds
1,000,000-1,000,099, i.e. each game about 6 times), numpy generator seed 0
(``python benchmarks/text_env_steps.py --env textworld --episodes 100``; two runs gave identical
counts, :data:`RANDOM_BASELINE`), success with its 95% Wilson interval:

=====================================================================  ======================  ===========
spec                                                                   success                 mean length
=====================================================================  ======================  ===========
``textworld:world_size=2,nb_objects=4,quest_length=1,max_steps=20``    0.54 [0.443, 0.634]     12.8
``textworld:world_size=4,nb_objects=6,quest_length=3,max_steps=40``    0.31 [0.228, 0.406]     34.5
``textworld:world_size=6,nb_objects=10,quest_length=5,max_steps=60``   0.08 [0.041, 0.150]     58.2
=====================================================================  ======================  ===========

Throughput (warm cache, resets included): 287, 367 and 273 steps per second of process CPU time
on the three specs (``--episodes 40``); wall-clock 27-41 steps/s on the shared 2-core machine at
load average 17, and 146 / 140 steps/s on the first two specs in an earlier run at lower load.
TextWorld's interpreter and its per-step fact and admissible-command extraction dominate.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, ClassVar

from polab.scaled.envs.text_protocol import TextEnv, TextEnvConfig, make_text_env

__all__ = ["RANDOM_BASELINE", "TextWorldConfig", "TextWorldEnv", "cache_root", "game_path", "prepare_games"]

#: Measured random-policy successes: canonical spec -> (successes, episodes); see the docstring.
RANDOM_BASELINE: dict[str, tuple[int, int]] = {
    "textworld:max_steps=20,world_size=2,nb_objects=4,quest_length=1": (54, 100),
    "textworld": (31, 100),
    "textworld:max_steps=60,world_size=6,nb_objects=10,quest_length=5": (8, 100),
}

_THEMES = ("house", "basic")
_ANCHORS = ("facts", "observation")


@dataclasses.dataclass(frozen=True)
class TextWorldConfig(TextEnvConfig):
    """Options of :class:`TextWorldEnv` (spec keys of ``make_text_env("textworld:...")``).

    Parameters
    ----------
    world_size:
        Number of rooms (TextWorld's ``nb_rooms``), ``1..20``.
    nb_objects:
        Number of objects besides the rooms, ``0..40``.
    quest_length:
        Minimum number of actions of the quest (TextWorld's ``quest_length``), ``1..20``.
    max_steps:
        Step limit.
    n_games:
        Size of the pool of games a spec stands for.
    game_offset:
        TextWorld seed of game 0 (a different offset is a held-out pool).
    theme:
        TextWorld's grammar theme (``"house"`` or ``"basic"``).
    success_reward:
        Reward of the winning step.
    include_inventory:
        Append ``"Inventory: ..."`` to every observation.
    anchor:
        GiGPO's anchor: ``"facts"`` (the sorted fact list, which determines the state but also names
        rooms and objects the agent has not seen) or ``"observation"`` (the observation text the
        agent sees, as verl-agent's ALFWorld anchor; no hidden information, but coarser: two states
        that print the same text share an anchor).
    """

    world_size: int = 4
    nb_objects: int = 6
    quest_length: int = 3
    max_steps: int = 40
    n_games: int = 16
    game_offset: int = 0
    theme: str = "house"
    success_reward: float = 1.0
    include_inventory: bool = False
    anchor: str = "facts"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.world_size <= 20:
            raise ValueError(f"world_size must be in [1, 20], got {self.world_size}")
        if not 0 <= self.nb_objects <= 40:
            raise ValueError(f"nb_objects must be in [0, 40], got {self.nb_objects}")
        if not 1 <= self.quest_length <= 20:
            raise ValueError(f"quest_length must be in [1, 20], got {self.quest_length}")
        if self.n_games < 1:
            raise ValueError(f"n_games must be >= 1, got {self.n_games}")
        if self.game_offset < 0:
            raise ValueError(f"game_offset must be >= 0, got {self.game_offset}")
        if self.theme not in _THEMES:
            raise ValueError(f"theme must be one of {_THEMES}, got {self.theme!r}")
        if self.anchor not in _ANCHORS:
            raise ValueError(f"anchor must be one of {_ANCHORS} (facts: the state's fact list; observation: the text the agent sees), "
                             f"got {self.anchor!r}")


def cache_root() -> Path:
    """``$POLAB_CACHE/textworld`` or ``~/.cache/polab/textworld``."""
    base = os.environ.get("POLAB_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "polab") / "textworld"


def _folder(config: TextWorldConfig) -> Path:
    import textworld

    name = f"tw{textworld.__version__}-ws{config.world_size}-no{config.nb_objects}-ql{config.quest_length}-{config.theme}"
    return cache_root() / name


def game_path(config: TextWorldConfig, game_seed: int) -> Path:
    """The cached ``.z8`` of a game, generated (and compiled) first if it is not there yet."""
    folder = _folder(config)
    target = folder / f"game-{game_seed}.z8"
    if target.exists() and target.with_suffix(".json").exists():
        return target
    import textworld
    from textworld.generator import compile_game, make_game

    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".game-{game_seed}-", dir=folder))
    try:
        options = textworld.GameOptions()
        options.seeds = int(game_seed)
        options.nb_rooms = config.world_size
        options.nb_objects = config.nb_objects
        options.quest_length = config.quest_length
        options.theme = config.theme
        options.path = str(tmp / "game.z8")
        options.force_recompile = True
        game = make_game(options)
        compiled = Path(compile_game(game, options))
        # json first: a reader checks that both exist
        os.replace(compiled.with_suffix(".json"), target.with_suffix(".json"))
        os.replace(compiled, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def prepare_games(spec: str, *, progress: bool = True) -> list[Path]:
    """Generate (or find) every game of a spec's pool; returns their paths."""
    env = make_text_env(spec)
    if not isinstance(env, TextWorldEnv):
        raise ValueError(f"{spec!r} is not a textworld spec")
    cfg = env.config
    seeds = range(cfg.game_offset, cfg.game_offset + cfg.n_games)
    if progress:
        from tqdm.auto import tqdm

        seeds = tqdm(seeds, desc=f"TextWorld games for {env.spec_string}")
    return [game_path(cfg, s) for s in seeds]


_BANNER = re.compile(r"^[\s_$|\\/<>]+$")


def _clean(text: str) -> str:
    lines = []
    for line in text.replace("\r", "").split("\n"):
        stripped = line.strip()
        if stripped.startswith(">") or stripped.startswith("Would you like to RESTART"):
            continue
        if stripped and _BANNER.match(line):
            continue
        lines.append(line.rstrip())
    out = "\n".join(lines)
    out = re.sub(r"\n{3,}", "\n\n", out)
    return out.strip().encode("ascii", "replace").decode("ascii")


class TextWorldEnv(TextEnv):
    """A pool of generated TextWorld games behind the text protocol (see the module docstring)."""

    name: ClassVar[str] = "textworld"
    config_cls: ClassVar[type[TextWorldConfig]] = TextWorldConfig
    max_observation_chars: ClassVar[int] = 16384

    def __init__(self, config: TextWorldConfig | None = None, *, render_mode: str | None = None) -> None:
        super().__init__(config, render_mode=render_mode)
        import textworld

        self._infos = textworld.EnvInfos(
            admissible_commands=True, objective=True, won=True, lost=True, policy_commands=True,
            facts=True, inventory=self.config.include_inventory,
        )
        self._tw = None
        self._tw_game: Path | None = None
        self._obs = ""
        self._state: dict[str, Any] = {}

    def _canonical_level(self, level_seed: int) -> int:
        return level_seed % self.config.n_games

    def _generate(self, level_seed: int) -> None:
        from textworld.gym.envs import TextworldGymEnv

        path = game_path(self.config, self.config.game_offset + level_seed)
        if self._tw is None or self._tw_game != path:
            if self._tw is not None:
                self._tw.close()
            self._tw = TextworldGymEnv([str(path)], request_infos=self._infos, asynchronous=False)
            self._tw_game = path
        with warnings.catch_warnings():
            # jericho flags every TextWorld-compiled game as "not fully supported" (it only lacks
            # jericho's own score/move detection, which TextWorld's EnvInfos replace)
            warnings.filterwarnings("ignore", message=".*is not fully supported.*")
            obs, state = self._tw.reset()
        self._set(obs, state)

    def _set(self, obs: str, state: dict[str, Any]) -> None:
        self._state = state
        text = _clean(obs)
        if self.config.include_inventory:
            text += "\n\nInventory: " + _clean(state.get("inventory") or "")
        self._obs = text

    def _observation(self) -> str:
        return self._obs

    def _admissible(self) -> list[str]:
        return list(self._state.get("admissible_commands") or [])

    def _anchor(self) -> str:
        if self.config.anchor == "observation":
            # verl-agent's ALFWorld anchor is the step's raw text observation (zhangyun04/verl-agent
            # agent_system/environments/env_manager.py @475341a, AlfWorldEnvironmentManager.step: 'anchor': text_obs)
            return self._obs
        return "\n".join(sorted(str(fact) for fact in self._state.get("facts") or []))

    def _objective(self) -> str:
        return _clean(self._state.get("objective") or "")

    def _won(self) -> bool:
        return bool(self._state.get("won"))

    def _extra_info(self) -> dict[str, Any]:
        return {"walkthrough": list(self._state.get("policy_commands") or []), "lost": bool(self._state.get("lost"))}

    def _apply(self, action: str) -> tuple[float, bool, dict[str, Any]]:
        obs, _score, done, state = self._tw.step(action)
        self._set(obs, state)
        won, lost = bool(state.get("won")), bool(state.get("lost"))
        reward = self.config.success_reward if won else 0.0
        return reward, bool(won or lost or done), {}

    def close(self) -> None:
        if self._tw is not None:
            self._tw.close()
            self._tw = None
            self._tw_game = None
        super().close()


if __name__ == "__main__":  # pragma: no cover - cache filler
    import sys

    for spec in sys.argv[1:] or ["textworld"]:
        paths = prepare_games(spec)
        print(f"{spec}: {len(paths)} games in {paths[0].parent}")
