r"""A small procedural roguelike whose state is a variable-length list of entities with categorical attributes.

Built for the generalisation claim of Sestini, Kuhnle and Bagdanov (2020): NPC policies over
*entities* (embeddings of categorical attributes, combined by attention) adapt to design changes
(entity mix, stats, map size) better than networks over a fixed-layout observation. The game is
polab's own (the paper's "DeepCrawl" is a Unity game that is not available here); it keeps the
paper's ingredients: a turn-based grid, typed entities with categorical stats, procedural
generation of every level, and design parameters that a designer changes after training.

Game
----
An ``S x S`` grid holds the agent, one exit, and procedurally placed enemies, potions and walls
(counts and stats drawn from the :class:`RoguelikeDesign` at every reset). Actions: ``0`` up,
``1`` right, ``2`` down, ``3`` left. Moving

- onto the exit: reward ``+1``, episode ends (success);
- into an enemy of strength ``s`` with hit points ``hp``: if ``hp > s`` the enemy dies and
  ``hp <- hp - s`` (the agent takes its cell); otherwise the agent dies: reward ``-1``, episode ends;
- onto a potion of power ``h``: ``hp <- min(hp + h, max_hp)``, the potion is used up;
- into a wall or off the map: an *invalid move*; the agent stays where it is, the turn is spent
  (``info["invalid_move"] = True``).

Every turn that does not end the episode costs ``step_penalty``; after ``max_steps`` turns the
episode is truncated (a failure). Every generated level is solvable: the generator redraws a
level until the exit can be reached from the start without touching an enemy within
``max_steps // 2`` turns, so the exact planner :meth:`RoguelikeEnv.solve` always finds a plan.

Invalid actions
---------------
An action outside ``{0, 1, 2, 3}`` (not an integer, or out of range) raises ``ValueError``; the
environment's state is unchanged. Moves into walls or off the map are legal actions that waste
the turn, as above.

Observation (documented layout)
-------------------------------
A dict with two arrays, both of fixed size ``max_entities`` (padding + mask):

``"entities"``: int64 ``[max_entities, 4]``, one row per entity, columns :data:`ATTRIBUTES`:

- ``type``: index into :data:`ENTITY_TYPES` (agent, exit, enemy, potion, wall);
- ``power``: the entity's stat in ``0 .. MAX_POWER`` (agent: current hit points; enemy: strength;
  potion: healing; exit and wall: 0);
- ``dx``, ``dy``: column and row offsets from the agent, clipped to ``[-VIEW_RADIUS, VIEW_RADIUS]``
  and shifted by ``VIEW_RADIUS`` (so ``0 .. 2 VIEW_RADIUS``; the agent's own row has ``dx = dy =
  VIEW_RADIUS``). Clipping keeps the direction of far entities on larger maps.

``"mask"``: int8 ``[max_entities]``, 1 for a real entity and 0 for padding. Padding rows are all
zeros. Real entities come first: the agent, then the exit, then enemies, potions and walls, each
group sorted by distance (``entity_order="sorted"``); ``entity_order="shuffled"`` permutes all rows
after the agent's at every step (from the environment's generator), which a permutation-invariant
policy does not notice.

Design parameters and the held-out designs
------------------------------------------
:data:`DESIGNS` holds the training design and four held-out designs: more enemies (the entity mix
changes), stronger enemies (stat values never seen on an enemy in training), a larger map, and all
three at once. The observation space is the same for every design (``max_entities`` fixed), so
one network runs on all of them.

Determinism and vectorisation
-----------------------------
``reset(seed=s)`` fixes the whole episode (level and any shuffling); the environment has no other
randomness. :func:`make_vector_env` builds a gymnasium ``SyncVectorEnv``; :class:`RoguelikeVectorEnv`
is polab's own batch of the same environments (same-step autoreset, several times faster, used
for training).

References
----------
A. Sestini, A. Kuhnle, A. D. Bagdanov, "Deep Policy Networks for NPC Behaviors that Adapt to
Changing Design Parameters in Roguelike Games", arXiv:2012.03532 (2020).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "ENTITY_TYPES", "ATTRIBUTES", "MAX_POWER", "VIEW_RADIUS", "ATTRIBUTE_CARDINALITIES", "ACTIONS",
    "RoguelikeDesign", "DESIGNS", "RoguelikeEnv", "RoguelikeVectorEnv", "make_vector_env", "random_policy_action",
]

#: Entity types, in the order of their ``type`` index.
ENTITY_TYPES = ("agent", "exit", "enemy", "potion", "wall")
AGENT, EXIT, ENEMY, POTION, WALL = range(5)
#: Attribute columns of the ``entities`` array.
ATTRIBUTES = ("type", "power", "dx", "dy")
#: Largest value of the ``power`` attribute (hit points are capped here too).
MAX_POWER = 7
#: Offsets beyond this many cells are clipped (the direction is kept).
VIEW_RADIUS = 5
#: Number of categories of each attribute (the network's embedding table sizes).
ATTRIBUTE_CARDINALITIES = (len(ENTITY_TYPES), MAX_POWER + 1, 2 * VIEW_RADIUS + 1, 2 * VIEW_RADIUS + 1)
#: Action names, by index: (row change, column change).
ACTIONS = {"up": (-1, 0), "right": (0, 1), "down": (1, 0), "left": (0, -1)}
_MOVES = tuple(ACTIONS.values())


def _check_range(name: str, value) -> tuple[int, int]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
            or value[0] < 0 or value[1] < value[0]):
        raise ValueError(f"RoguelikeDesign.{name} must be a pair (low, high) of integers with 0 <= low <= high; "
                         f"got {value!r}.")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class RoguelikeDesign:
    """The design parameters a game designer changes: map size, entity mix and stats.

    Attributes
    ----------
    map_size : int
        Side of the square map, ``>= 4``.
    enemies, potions, walls : (int, int)
        Inclusive range of the number of each entity, drawn uniformly per level.
    enemy_strengths, potion_heals : tuple of int
        Values of the ``power`` attribute drawn uniformly per enemy / potion, in ``1 .. MAX_POWER``.
    start_hp : int
        Hit points at the start, in ``1 .. max_hp``.
    max_hp : int
        Hit-point cap, ``<= MAX_POWER``.
    max_steps : int or None
        Turns before truncation; ``None`` gives ``4 * map_size``.
    step_penalty : float
        Cost of each turn that does not end the episode, ``>= 0``.
    """

    map_size: int = 7
    enemies: tuple = (2, 3)
    potions: tuple = (1, 2)
    walls: tuple = (2, 4)
    enemy_strengths: tuple = (1, 2)
    potion_heals: tuple = (1, 2, 3)
    start_hp: int = 2
    max_hp: int = MAX_POWER
    max_steps: int | None = None
    step_penalty: float = 0.01

    def __post_init__(self):
        if not isinstance(self.map_size, (int, np.integer)) or self.map_size < 4:
            raise ValueError(f"RoguelikeDesign.map_size must be an integer >= 4; got {self.map_size!r}.")
        ranges = [_check_range(n, getattr(self, n)) for n in ("enemies", "potions", "walls")]
        most = 2 + sum(r[1] for r in ranges)
        if most > self.map_size ** 2 // 2:
            raise ValueError(f"RoguelikeDesign: up to {most} entities on a {self.map_size}x{self.map_size} map leave too few "
                             f"free cells for a solvable level; use fewer entities or a larger map_size.")
        for name in ("enemy_strengths", "potion_heals"):
            v = getattr(self, name)
            if (not isinstance(v, (tuple, list)) or not v
                    or not all(isinstance(x, (int, np.integer)) and 1 <= x <= MAX_POWER for x in v)):
                raise ValueError(f"RoguelikeDesign.{name} must be a non-empty tuple of integers in 1..{MAX_POWER}; got {v!r}.")
        if not (isinstance(self.max_hp, (int, np.integer)) and 1 <= self.max_hp <= MAX_POWER):
            raise ValueError(f"RoguelikeDesign.max_hp must be an integer in 1..{MAX_POWER}; got {self.max_hp!r}.")
        if not (isinstance(self.start_hp, (int, np.integer)) and 1 <= self.start_hp <= self.max_hp):
            raise ValueError(f"RoguelikeDesign.start_hp must be an integer in 1..max_hp={self.max_hp}; got {self.start_hp!r}.")
        if self.max_steps is not None and not (isinstance(self.max_steps, (int, np.integer)) and self.max_steps >= 2):
            raise ValueError(f"RoguelikeDesign.max_steps must be an integer >= 2 or None; got {self.max_steps!r}.")
        if not (isinstance(self.step_penalty, (int, float)) and 0.0 <= self.step_penalty < 1.0):
            raise ValueError(f"RoguelikeDesign.step_penalty must be a number in [0, 1); got {self.step_penalty!r}.")

    @property
    def horizon(self) -> int:
        """Turns before truncation."""
        return int(self.max_steps) if self.max_steps is not None else 4 * int(self.map_size)

    @property
    def max_entities_needed(self) -> int:
        """Most entities a level of this design holds (agent and exit included)."""
        return 2 + self.enemies[1] + self.potions[1] + self.walls[1]

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


#: The training design and the held-out designs of the experiment.
DESIGNS = {
    "train": RoguelikeDesign(),
    # entity mix: twice as many enemies, fewer potions
    "more-enemies": RoguelikeDesign(enemies=(5, 6), potions=(1, 1)),
    # stats: enemy strengths 3 and 4 (seen in training only as potion or hit-point values)
    "strong-enemies": RoguelikeDesign(enemy_strengths=(3, 4), potions=(2, 2)),
    # map size: 10 x 10 (offsets beyond VIEW_RADIUS clipped), more walls
    "big-map": RoguelikeDesign(map_size=10, walls=(4, 6)),
    # all three changes together
    "combined": RoguelikeDesign(map_size=10, enemies=(5, 6), potions=(2, 2), walls=(4, 5), enemy_strengths=(2, 3, 4)),
}


class RoguelikeEnv(gym.Env):
    """The roguelike of the module docstring as a gymnasium environment.

    Parameters
    ----------
    design : RoguelikeDesign
    max_entities : int
        Rows of the padded ``entities`` array (the same for every design a network sees); must be
        ``>= design.max_entities_needed``.
    entity_order : {"sorted", "shuffled"}
        Row order of the real entities after the agent's (module docstring).
    render_mode : {None, "ansi"}
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, design: RoguelikeDesign | None = None, *, max_entities: int = 16, entity_order: str = "sorted",
                 render_mode: str | None = None):
        design = RoguelikeDesign() if design is None else design
        if not isinstance(design, RoguelikeDesign):
            raise ValueError(f"design must be a RoguelikeDesign; got {type(design).__name__}.")
        if not isinstance(max_entities, (int, np.integer)) or max_entities < design.max_entities_needed:
            raise ValueError(f"max_entities must be an integer >= {design.max_entities_needed} (the most entities this "
                             f"design places); got {max_entities!r}.")
        if entity_order not in ("sorted", "shuffled"):
            raise ValueError(f"entity_order must be 'sorted' or 'shuffled'; got {entity_order!r}.")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi'; got {render_mode!r}.")
        self.design, self.max_entities, self.entity_order, self.render_mode = design, int(max_entities), entity_order, render_mode
        nvec = np.tile(np.asarray(ATTRIBUTE_CARDINALITIES, dtype=np.int64), (self.max_entities, 1))
        self.observation_space = spaces.Dict({"entities": spaces.MultiDiscrete(nvec), "mask": spaces.MultiBinary(self.max_entities)})
        self.action_space = spaces.Discrete(len(_MOVES))
        self._ready = False

    # ------------------------------------------------------------------ level generation
    def _grid_path_length(self, start, goal, blocked) -> int | None:
        """Shortest path length from ``start`` to ``goal`` avoiding ``blocked`` cells (None if unreachable)."""
        S = self.design.map_size
        dist = {start: 0}
        q = deque([start])
        while q:
            cell = q.popleft()
            if cell == goal:
                return dist[cell]
            for dr, dc in _MOVES:
                nxt = (cell[0] + dr, cell[1] + dc)
                if 0 <= nxt[0] < S and 0 <= nxt[1] < S and nxt not in blocked and nxt not in dist:
                    dist[nxt] = dist[cell] + 1
                    q.append(nxt)
        return None

    def _generate(self) -> None:
        d, rng, S = self.design, self.np_random, self.design.map_size
        for _ in range(1000):
            n_en = int(rng.integers(d.enemies[0], d.enemies[1] + 1))
            n_po = int(rng.integers(d.potions[0], d.potions[1] + 1))
            n_wa = int(rng.integers(d.walls[0], d.walls[1] + 1))
            cells = rng.permutation(S * S)[:2 + n_en + n_po + n_wa]
            pos = [(int(c) // S, int(c) % S) for c in cells]
            kinds = [ENEMY] * n_en + [POTION] * n_po + [WALL] * n_wa
            powers = ([int(rng.choice(d.enemy_strengths)) for _ in range(n_en)]
                      + [int(rng.choice(d.potion_heals)) for _ in range(n_po)] + [0] * n_wa)
            blocked = {p for p, k in zip(pos[2:], kinds) if k in (ENEMY, WALL)}
            length = self._grid_path_length(pos[0], pos[1], blocked)
            if length is not None and length <= d.horizon // 2:
                break
        else:  # pragma: no cover - the design checks leave enough free cells for this not to happen
            raise RuntimeError(f"could not generate a solvable level for {d} in 1000 draws.")
        self.agent, self.exit, self.hp, self.t = pos[0], pos[1], int(d.start_hp), 0
        self.kinds, self.cells, self.powers = kinds, pos[2:], powers
        self.alive = [True] * len(kinds)
        self._at = {c: i for i, c in enumerate(self.cells)}  # live entities by cell
        self._all = dict(self._at)  # every entity of the level by cell (the planner's layout)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._generate()
        self._ready = True
        return self._observation(), self._info(invalid=False, success=False, died=False)

    def step(self, action):
        if not self._ready:
            raise RuntimeError("call reset() before step().")
        if isinstance(action, np.ndarray) and action.ndim == 0:
            action = action.item()
        if isinstance(action, bool) or not isinstance(action, (int, np.integer)) or not 0 <= action < len(_MOVES):
            raise ValueError(f"action must be an integer in 0..{len(_MOVES) - 1} (up, right, down, left); got {action!r}.")
        d, S = self.design, self.design.map_size
        dr, dc = _MOVES[int(action)]
        target = (self.agent[0] + dr, self.agent[1] + dc)
        self.t += 1
        reward, terminated, success, died, invalid = -float(d.step_penalty), False, False, False, False
        i = self._at.get(target)
        if not (0 <= target[0] < S and 0 <= target[1] < S) or (i is not None and self.kinds[i] == WALL):
            invalid = True
        elif target == self.exit:
            self.agent, reward, terminated, success = target, 1.0, True, True
        elif i is not None and self.kinds[i] == ENEMY:
            if self.hp > self.powers[i]:
                self.hp -= self.powers[i]
                self._remove(i)
                self.agent = target
            else:
                reward, terminated, died = -1.0, True, True
        else:
            if i is not None:  # potion
                self.hp = min(self.hp + self.powers[i], d.max_hp)
                self._remove(i)
            self.agent = target
        truncated = (not terminated) and self.t >= d.horizon
        if terminated or truncated:
            self._ready = False
        return self._observation(), reward, terminated, truncated, self._info(invalid=invalid, success=success, died=died)

    def _remove(self, i: int) -> None:
        self.alive[i] = False
        del self._at[self.cells[i]]

    def _info(self, *, invalid: bool, success: bool, died: bool) -> dict:
        return {"invalid_move": invalid, "success": success, "died": died, "hp": self.hp}

    def _observation(self) -> dict:
        ar, ac = self.agent

        R = VIEW_RADIUS

        def row(kind, cell, power):
            return (kind, power, min(max(cell[1] - ac, -R), R) + R, min(max(cell[0] - ar, -R), R) + R)

        rows = [row(AGENT, self.agent, self.hp), row(EXIT, self.exit, 0)]
        for kind in (ENEMY, POTION, WALL):
            members = [i for i, k in enumerate(self.kinds) if k == kind and self.alive[i]]
            members.sort(key=lambda i: (abs(self.cells[i][0] - ar) + abs(self.cells[i][1] - ac), self.cells[i]))
            rows.extend(row(kind, self.cells[i], self.powers[i]) for i in members)
        ent = np.zeros((self.max_entities, len(ATTRIBUTES)), dtype=np.int64)
        ent[:len(rows)] = rows
        if self.entity_order == "shuffled" and len(rows) > 2:
            ent[1:len(rows)] = ent[1:len(rows)][self.np_random.permutation(len(rows) - 1)]
        mask = np.zeros(self.max_entities, dtype=np.int8)
        mask[:len(rows)] = 1
        return {"entities": ent, "mask": mask}

    # ------------------------------------------------------------------ planner and rendering
    def planner_state(self) -> tuple:
        """The state the planner searches over: ``(agent cell, hit points, bitmask of used/killed entities)``."""
        gone = sum(1 << i for i, alive in enumerate(self.alive) if not alive)
        return (self.agent, self.hp, gone)

    def model_step(self, state: tuple, action: int) -> tuple[tuple, str]:
        """The game's rules as a pure function of a planner state: ``(next state, outcome)``.

        ``outcome`` is ``"exit"`` (success), ``"died"``, ``"invalid"`` (wall or map edge: the state
        is unchanged) or ``"move"``. Uses the current level's layout (walls, exit, entity stats);
        :meth:`step` plays the same rules on the live state (tested to agree step by step).
        """
        cell, hp, gone = state
        S = self.design.map_size
        dr, dc = _MOVES[action]
        tgt = (cell[0] + dr, cell[1] + dc)
        if not (0 <= tgt[0] < S and 0 <= tgt[1] < S):
            return state, "invalid"
        if tgt == self.exit:
            return (tgt, hp, gone), "exit"
        i = self._all.get(tgt)
        if i is None or (gone >> i) & 1:
            return (tgt, hp, gone), "move"
        if self.kinds[i] == WALL:
            return state, "invalid"
        if self.kinds[i] == ENEMY:
            if hp <= self.powers[i]:
                return state, "died"
            return (tgt, hp - self.powers[i], gone | (1 << i)), "move"
        return (tgt, min(hp + self.powers[i], self.design.max_hp), gone | (1 << i)), "move"

    def solve(self) -> list[int] | None:
        """The shortest action sequence from the current state that reaches the exit alive (exact BFS).

        Breadth-first search over :meth:`planner_state` with :meth:`model_step`; invalid moves and
        deadly fights are never part of a shortest plan. Returns ``None`` when no plan finishes
        within the remaining turns.
        """
        if not self._ready:
            raise RuntimeError("call reset() before solve().")
        budget = self.design.horizon - self.t
        start = self.planner_state()
        parent = {start: None}
        frontier, depth = [start], 0
        while frontier and depth < budget:
            nxt_frontier = []
            for state in frontier:
                for a in range(len(_MOVES)):
                    new_state, outcome = self.model_step(state, a)
                    if outcome == "exit":
                        plan = [a]
                        while parent[state] is not None:
                            state, act = parent[state]
                            plan.append(act)
                        return plan[::-1]
                    if outcome == "move" and new_state not in parent:
                        parent[new_state] = (state, a)
                        nxt_frontier.append(new_state)
            frontier, depth = nxt_frontier, depth + 1
        return None

    def render(self) -> str | None:
        """ANSI text of the map: ``@`` agent, ``>`` exit, ``E<s>``/``P<h>`` enemies/potions, ``#`` wall."""
        if self.render_mode != "ansi":
            return None
        S = self.design.map_size
        grid = [[" ." for _ in range(S)] for _ in range(S)]
        for i, c in enumerate(self.cells):
            if self.alive[i]:
                grid[c[0]][c[1]] = {ENEMY: f"E{self.powers[i]}", POTION: f"P{self.powers[i]}", WALL: "##"}[self.kinds[i]]
        grid[self.exit[0]][self.exit[1]] = " >"
        grid[self.agent[0]][self.agent[1]] = f"@{self.hp}"
        return "\n".join("".join(r) for r in grid)


def make_vector_env(design: RoguelikeDesign, num_envs: int, *, max_entities: int = 16, entity_order: str = "sorted",
                    autoreset_mode: str = "SameStep") -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of :class:`RoguelikeEnv` in a gymnasium ``SyncVectorEnv``.

    ``autoreset_mode="SameStep"`` (default): a sub-environment that ends is reset within the same
    ``step`` call; the returned observation is the new episode's first one and the last
    observation is in ``info["final_obs"]`` (gymnasium 1.x). ``"NextStep"`` is gymnasium's default.
    """
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1; got {num_envs!r}.")
    modes = {m.value: m for m in gym.vector.AutoresetMode}
    if autoreset_mode not in modes:
        raise ValueError(f"autoreset_mode must be one of {sorted(modes)}; got {autoreset_mode!r}.")
    RoguelikeEnv(design, max_entities=max_entities, entity_order=entity_order)  # validate before building copies
    fns = [lambda: RoguelikeEnv(design, max_entities=max_entities, entity_order=entity_order) for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=modes[autoreset_mode])


class RoguelikeVectorEnv(gym.vector.VectorEnv):
    """A batch of :class:`RoguelikeEnv` stepped in one loop, without ``SyncVectorEnv``'s generic space handling.

    Same-step autoreset: a sub-environment whose episode ends is reset inside the same ``step``;
    the returned observation is the new episode's first one. ``info`` holds arrays of length
    ``num_envs``: ``success``, ``died``, ``invalid_move``, ``hp`` (of the step just played), and for
    ended episodes ``episode_return`` and ``episode_length`` (NaN / 0 elsewhere). ``reset(seed=s)``
    seeds sub-environment ``i`` with ``s + i`` (gymnasium's convention for vector envs), so row ``i``
    plays exactly what ``RoguelikeEnv`` played after ``reset(seed=s + i)``.

    Parameters
    ----------
    design : RoguelikeDesign or sequence of RoguelikeDesign
        One design for all, or one per sub-environment.
    num_envs : int
    max_entities, entity_order
        As in :class:`RoguelikeEnv`.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, design, num_envs: int, *, max_entities: int = 16, entity_order: str = "sorted"):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1; got {num_envs!r}.")
        designs = list(design) if isinstance(design, (list, tuple)) else [design] * int(num_envs)
        if len(designs) != num_envs:
            raise ValueError(f"design: got {len(designs)} designs for num_envs={num_envs}; give one or num_envs.")
        self.envs = [RoguelikeEnv(d, max_entities=max_entities, entity_order=entity_order) for d in designs]
        self.num_envs = int(num_envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        E, F_ = max_entities, len(ATTRIBUTES)
        self._ent = np.zeros((self.num_envs, E, F_), dtype=np.int64)
        self._mask = np.zeros((self.num_envs, E), dtype=np.int8)
        self._ret = np.zeros(self.num_envs)
        self._len = np.zeros(self.num_envs, dtype=np.int64)

    def _put(self, i: int, obs: dict) -> None:
        self._ent[i] = obs["entities"]
        self._mask[i] = obs["mask"]

    def _obs(self) -> dict:
        return {"entities": self._ent.copy(), "mask": self._mask.copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        for i, env in enumerate(self.envs):
            obs, _ = env.reset(seed=None if seed is None else int(seed) + i)
            self._put(i, obs)
        self._ret[:] = 0.0
        self._len[:] = 0
        return self._obs(), {}

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},); got {actions.shape}.")
        n = self.num_envs
        rew, term, trunc = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        info = {"success": np.zeros(n, dtype=bool), "died": np.zeros(n, dtype=bool), "invalid_move": np.zeros(n, dtype=bool),
                "hp": np.zeros(n, dtype=np.int64), "episode_return": np.full(n, np.nan), "episode_length": np.zeros(n, dtype=np.int64)}
        for i, env in enumerate(self.envs):
            obs, r, te, tr, inf = env.step(actions[i].item())
            rew[i], term[i], trunc[i] = r, te, tr
            for k in ("success", "died", "invalid_move", "hp"):
                info[k][i] = inf[k]
            self._ret[i] += r
            self._len[i] += 1
            if te or tr:
                info["episode_return"][i], info["episode_length"][i] = self._ret[i], self._len[i]
                self._ret[i], self._len[i] = 0.0, 0
                obs, _ = env.reset()
            self._put(i, obs)
        return self._obs(), rew, term, trunc, info


def random_policy_action(rng: np.random.Generator, size: int | None = None):
    """Uniform random actions (the random baseline)."""
    return rng.integers(len(_MOVES), size=size)
