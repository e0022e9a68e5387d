r"""Knights-and-Knaves logic puzzles as verifiable RL tasks for language models.

On the island every inhabitant is a *knight*, who always tells the truth, or a
*knave*, who always lies. Each of :math:`n` inhabitants makes one statement
about the others (or about themself). An assignment
:math:`a \in \{\text{knight}, \text{knave}\}^n` is *consistent* when every
speaker's role matches the truth of what they said:

.. math:: a_p = [\![ S_p(a) ]\!] \quad\text{for every person } p,

with ``True`` for knight. Speakers refer to everyone, themselves included,
by name ("Zoey says: 'If Zoey is a knight then Ava is a knave.'"). Without
self-reference each of two people could only call the other a knight or a
knave, which never pins down a unique answer, so 2-person puzzles need it.
A puzzle is well posed when exactly one assignment is consistent. The number
of people :math:`n` sets the difficulty, and the puzzles of each size form one
training *distribution* (data source), as in the DUMP curriculum experiments
(3 to 14 people, 12 distributions).

Module contents
---------------
- Statement grammar (frozen dataclasses, person indices are 0-based):
  :class:`IsRole`, :class:`SameRole`, :class:`CountRole` (atoms),
  :class:`And`, :class:`Or`, :class:`Implies`, :class:`Iff` (binary
  connectives) and :class:`Not`.
- :func:`generate_puzzle`: random well-posed puzzle with a given number of
  people; :class:`KKPuzzle` is the frozen result.
- :func:`solve`: brute-force solver over all :math:`2^n` assignments,
  vectorised with numpy.
- :func:`format_prompt`, :func:`format_answer`: the user message and the
  canonical answer text.
- :func:`parse_answer`, :func:`check_format`, :func:`kk_reward`: grading of a
  model response with DUMP's reward shape (:class:`KKReward`).
- :class:`KnightsKnavesTask`: fixed pools of puzzles per size with the
  ``distributions`` / ``sample`` / ``prompt`` / ``reward`` interface used by the
  curriculum experiments.

References
----------
.. [1] R. Smullyan, "What Is the Name of This Book?", Prentice-Hall, 1978.
.. [2] C. Xie et al., "On Memorization of Large Language Models in Logical
   Reasoning", arXiv 2410.23123, 2024 (the K&K dataset).
.. [3] T. Xie et al., "Logic-RL: Unleashing LLM Reasoning with Rule-Based
   Reinforcement Learning", arXiv 2502.14768, 2025.
.. [4] Z. Wang, G. Cui, Li, K. Wan, W. Zhao, "DUMP: Automated
   Distribution-Level Curriculum Learning for RL-based LLM Post-training",
   arXiv 2504.09710, 2025.
"""

from __future__ import annotations

import abc
import functools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .protocol import ScoredReward

__all__ = [
    "NAMES",
    "MIN_PEOPLE",
    "MAX_PEOPLE",
    "Statement",
    "IsRole",
    "SameRole",
    "CountRole",
    "And",
    "Or",
    "Implies",
    "Iff",
    "Not",
    "KKPuzzle",
    "KKReward",
    "generate_puzzle",
    "solve",
    "format_prompt",
    "format_answer",
    "parse_answer",
    "check_format",
    "kk_reward",
    "source_name",
    "KnightsKnavesTask",
]

#: Fixed pool of distinct single-word names; a puzzle draws its cast from it.
NAMES: tuple[str, ...] = (
    "Zoey", "Oliver", "Ava", "Liam", "Mia", "Noah", "Emma", "Lucas",
    "Sofia", "Ethan", "Chloe", "Mason", "Harper", "Logan", "Ella", "Jacob",
    "Aria", "Owen", "Lily", "Henry", "Nora", "Caleb", "Ruby", "Isaac",
    "Hazel", "Wyatt", "Stella", "Felix", "Violet", "Jasper", "Luna", "Elijah",
)

#: Smallest supported number of people (one person alone cannot be well posed).
MIN_PEOPLE: int = 2
#: Largest supported number of people: the solver enumerates 2**16 = 65536 rows.
MAX_PEOPLE: int = 16

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
_RELATIONS = ("exactly", "at least", "at most")


# --------------------------------------------------------------------------
# Statement grammar
# --------------------------------------------------------------------------


def _role_word(knight: bool, plural: bool = False) -> str:
    word = "knight" if knight else "knave"
    return word + "s" if plural else word


def _join_names(names: Sequence[str]) -> str:
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_person(person: object, field: str) -> None:
    if not _is_int(person) or person < 0:
        raise ValueError(f"{field} must be a non-negative person index, got {person!r}")


class Statement(abc.ABC):
    """A sentence of the puzzle grammar: a Boolean function of the roles.

    Subclasses are frozen dataclasses. An assignment is a sequence of bools,
    ``True`` for knight, indexed by person.
    """

    @abc.abstractmethod
    def evaluate(self, table: np.ndarray) -> np.ndarray:
        """Truth value of the statement under many assignments at once.

        Parameters
        ----------
        table : numpy.ndarray of bool
            One assignment per row, ``True`` = knight.

        Returns
        -------
        numpy.ndarray of bool
            Truth value per row.

        Shapes
        ------
        ``table``: ``[m, n]``; result: ``[m]``.
        """

    @abc.abstractmethod
    def holds(self, assignment: Sequence[bool]) -> bool:
        """Truth value of the statement under one assignment (scalar path)."""

    @abc.abstractmethod
    def people(self) -> frozenset[int]:
        """Indices of the people the statement mentions."""

    @property
    @abc.abstractmethod
    def depth(self) -> int:
        """Nesting depth: 1 for atoms, 1 + the deepest operand otherwise."""

    @abc.abstractmethod
    def render(self, names: Sequence[str]) -> str:
        """Natural-language sentence (lower-case start, no final period)."""


@dataclass(frozen=True)
class IsRole(Statement):
    """"``person`` is a knight" (``knight=True``) or "... is a knave"."""

    person: int
    knight: bool

    def __post_init__(self) -> None:
        _check_person(self.person, "IsRole.person")

    def evaluate(self, table: np.ndarray) -> np.ndarray:
        column = table[:, self.person]
        return column.copy() if self.knight else ~column

    def holds(self, assignment: Sequence[bool]) -> bool:
        return bool(assignment[self.person]) == self.knight

    def people(self) -> frozenset[int]:
        return frozenset({self.person})

    @property
    def depth(self) -> int:
        return 1

    def render(self, names: Sequence[str]) -> str:
        return f"{names[self.person]} is a {_role_word(self.knight)}"


@dataclass(frozen=True)
class SameRole(Statement):
    """"``first`` and ``second`` are of the same kind" (``same=True``) or "of different kinds"."""

    first: int
    second: int
    same: bool

    def __post_init__(self) -> None:
        _check_person(self.first, "SameRole.first")
        _check_person(self.second, "SameRole.second")
        if self.first == self.second:
            raise ValueError(f"SameRole needs two different people, got {self.first} twice")

    def evaluate(self, table: np.ndarray) -> np.ndarray:
        equal = table[:, self.first] == table[:, self.second]
        return equal if self.same else ~equal

    def holds(self, assignment: Sequence[bool]) -> bool:
        return (bool(assignment[self.first]) == bool(assignment[self.second])) == self.same

    def people(self) -> frozenset[int]:
        return frozenset({self.first, self.second})

    @property
    def depth(self) -> int:
        return 1

    def render(self, names: Sequence[str]) -> str:
        kind = "of the same kind" if self.same else "of different kinds"
        return f"{names[self.first]} and {names[self.second]} are {kind}"


@dataclass(frozen=True)
class CountRole(Statement):
    """"``relation`` ``count`` of ``people_`` is/are knights (or knaves)".

    ``relation`` is ``"exactly"``, ``"at least"`` or ``"at most"``; for example
    ``CountRole((0, 1, 2), knight=True, relation="exactly", count=1)`` reads
    "exactly one of Zoey, Oliver and Ava is a knight".
    """

    members: tuple[int, ...]
    knight: bool
    relation: str
    count: int

    def __post_init__(self) -> None:
        if len(self.members) < 2 or len(set(self.members)) != len(self.members):
            raise ValueError(f"CountRole needs at least two distinct people, got {self.members!r}")
        for person in self.members:
            _check_person(person, "CountRole.members")
        if self.relation not in _RELATIONS:
            raise ValueError(f"CountRole.relation must be one of {_RELATIONS}, got {self.relation!r}")
        if not 0 <= self.count <= len(self.members) or self.count >= len(_NUMBER_WORDS):
            raise ValueError(
                f"CountRole.count must lie in [0, {min(len(self.members), len(_NUMBER_WORDS) - 1)}], "
                f"got {self.count}"
            )

    def _compare(self, total):
        if self.relation == "exactly":
            return total == self.count
        if self.relation == "at least":
            return total >= self.count
        return total <= self.count

    def evaluate(self, table: np.ndarray) -> np.ndarray:
        columns = table[:, list(self.members)]
        total = columns.sum(axis=1) if self.knight else (~columns).sum(axis=1)
        return self._compare(total)

    def holds(self, assignment: Sequence[bool]) -> bool:
        total = sum(bool(assignment[p]) == self.knight for p in self.members)
        return bool(self._compare(total))

    def people(self) -> frozenset[int]:
        return frozenset(self.members)

    @property
    def depth(self) -> int:
        return 1

    def render(self, names: Sequence[str]) -> str:
        plural = self.count != 1
        verb = "are" if plural else "is"
        article = "" if plural else "a "
        who = _join_names([names[p] for p in self.members])
        return (
            f"{self.relation} {_NUMBER_WORDS[self.count]} of {who} "
            f"{verb} {article}{_role_word(self.knight, plural)}"
        )


def _render_operand(statement: Statement, names: Sequence[str]) -> str:
    text = statement.render(names)
    # Atoms read unambiguously; a compound operand is bracketed so that nested
    # connectives never depend on English precedence. The generator only
    # builds connectives over atoms, so generated puzzles contain no brackets.
    return text if statement.depth == 1 else f"({text})"


def _check_operand(operand: object, where: str) -> None:
    if not isinstance(operand, Statement):
        raise ValueError(f"{where} must be a Statement, got {type(operand).__name__}")


def _same_role_pair(left: Statement, right: Statement) -> bool:
    return (
        isinstance(left, IsRole)
        and isinstance(right, IsRole)
        and left.knight == right.knight
        and left.person != right.person
    )


@dataclass(frozen=True)
class And(Statement):
    """"``left`` and ``right``"; over two same-role atoms: "X and Y are both knights"."""

    left: Statement
    right: Statement

    def __post_init__(self) -> None:
        _check_operand(self.left, "And.left")
        _check_operand(self.right, "And.right")

    def evaluate(self, table: np.ndarray) -> np.ndarray:
        return self.left.evaluate(table) & self.right.evaluate(table)

    def holds(self, assignment: Sequence[bool]) -> bool:
        return self.left.holds(assignment) and self.right.holds(assignment)

    def people(self) -> frozenset[int]:
        return self.left.people() | self.right.people()

    @property
    def depth(self) -> int:
        return 1 + max(self.left.depth, self.right.depth)

    def render(self, names: Sequence[str]) -> str:
        if _same_role_pair(self.left, self.right):
            role = _role_word(self.left.knight, plural=True)
            return f"{names[self.left.person]} and {names[self.right.person]} are both {role}"
        return f"{_render_operand(self.left, names)} and {_render_operand(self.right, names)}"


@dataclass(frozen=True)
class Or(Statement):
    """Inclusive "``left`` or ``right``"; over two same-role atoms: "X or Y is a knight"."""

    left: Statement
    right: Statement

    def __post_init__(self) -> None:
        _check_operand(self.left, "Or.left")
        _check_operand(self.right, "Or.right")

    def evaluate(self, table: np.ndarray) -> np.ndarray:
        return self.left.evaluate(table) | self.right.evaluate(table)

    def holds(self, assignment: Sequence[bool]) -> bool:
        return self.left.holds(assignment) or self.right.holds(assignment)

    def people(self) -> frozenset[int]:
        return self.left.people() | self.right.people()

    @property
    def depth(self) -> int:
        return 1 + max(self.left.depth, self.right.depth)

    def render(self, names: Sequence[str]) -> str:
        if _same_role_pair(self.left, self.right):
            role = _role_word(self.left.knight)
            return f"{names[self.left.person]} or {names[self.right.person]} is a {role}"
        return f"{_render_operand(self.left, names)} or {_render_operand(self.right, names)}"


@dataclass(frozen=True)
class Implies(Statement):
    """"if ``antecedent`` then ``consequent``" (material implication)."""

    antecedent: Statement
    consequent: Statement

    def __post_init__(self) -> None:
        _check_operand(self.antecedent, "Implies.antecedent")
        _check_operand(self.consequent, "Implies.consequent")

    def evaluate(self, table: np.ndarray) -> np.ndarray:
        return ~self.antecedent.evaluate(table) | self.consequent.evaluate(table)

    def holds(self, assignment: Sequence[bool]) -> bool:
        return (not self.antecedent.holds(assignment)) or self.consequent.holds(assignment)

    def people(self) -> frozenset[int]:
        return self.antecedent.people() | self.consequent.people()

    @property
    def depth(self) -> int:
        return 1 + max(self.antecedent.depth, self.consequent.depth)

    def render(self, names: Sequence[str]) -> str:
        return (
            f"if {_render_operand(self.antecedent, names)} "
            f"then {_render_operand(self.consequent, names)}"
        )


@dataclass(frozen=True)
class Iff(Statement):
    """"``left`` if and only if ``right``"."""

    left: Statement
    right: Statement

    def __post_init__(self) -> None:
        _check_operand(self.left, "Iff.left")
        _check_operand(self.right, "Iff.right")

    def evaluate(self, table: np.ndarray) -> np.ndarray:
        return self.left.evaluate(table) == self.right.evaluate(table)

    def holds(self, assignment: Sequence[bool]) -> bool:
        return self.left.holds(assignment) == self.right.holds(assignment)

    def people(self) -> frozenset[int]:
        return self.left.people() | self.right.people()

    @property
    def depth(self) -> int:
        return 1 + max(self.left.depth, self.right.depth)

    def render(self, names: Sequence[str]) -> str:
        return (
            f"{_render_operand(self.left, names)} if and only if "
            f"{_render_operand(self.right, names)}"
        )


@dataclass(frozen=True)
class Not(Statement):
    """"it is false that ``operand``"."""

    operand: Statement

    def __post_init__(self) -> None:
        _check_operand(self.operand, "Not.operand")

    def evaluate(self, table: np.ndarray) -> np.ndarray:
        return ~self.operand.evaluate(table)

    def holds(self, assignment: Sequence[bool]) -> bool:
        return not self.operand.holds(assignment)

    def people(self) -> frozenset[int]:
        return self.operand.people()

    @property
    def depth(self) -> int:
        return 1 + self.operand.depth

    def render(self, names: Sequence[str]) -> str:
        return f"it is false that {self.operand.render(names)}"


# --------------------------------------------------------------------------
# Solver
# --------------------------------------------------------------------------


def _check_n_people(n_people: object, name: str = "n_people") -> int:
    if not _is_int(n_people):
        raise ValueError(f"{name} must be an int in [{MIN_PEOPLE}, {MAX_PEOPLE}], got {n_people!r}")
    if not MIN_PEOPLE <= n_people <= MAX_PEOPLE:
        raise ValueError(
            f"{name}={n_people} is outside the supported range [{MIN_PEOPLE}, {MAX_PEOPLE}]; "
            f"pass a number of people between {MIN_PEOPLE} and {MAX_PEOPLE} (the brute-force "
            f"solver enumerates 2**{name} assignments)"
        )
    return int(n_people)


@functools.lru_cache(maxsize=None)
def _truth_table(n_people: int) -> np.ndarray:
    """All ``2**n`` assignments, read-only.

    Row ``r`` has person ``j`` a knight iff bit ``j`` of ``r`` is set.

    Shapes
    ------
    result: ``[2**n_people, n_people]``, bool.
    """
    rows = np.arange(2**n_people, dtype=np.int64)
    table = ((rows[:, None] >> np.arange(n_people, dtype=np.int64)) & 1).astype(bool)
    table.setflags(write=False)
    return table


def _consistency_column(table: np.ndarray, speaker: int, statement: Statement) -> np.ndarray:
    """Rows where ``speaker``'s role equals the truth of their ``statement``."""
    return table[:, speaker] == statement.evaluate(table)


def solve(
    puzzle_or_statements: "KKPuzzle | Sequence[Statement]",
    n: int | None = None,
) -> list[tuple[bool, ...]]:
    """All assignments consistent with the statements, by brute force.

    Person ``p``'s statement ``S_p`` is consistent with assignment ``a`` iff
    ``a[p] == S_p(a)`` (a knight says something true, a knave something false).
    All ``2**n`` assignments are evaluated at once as a boolean table.

    Parameters
    ----------
    puzzle_or_statements : KKPuzzle or sequence of Statement
        A puzzle, or one statement per person (``statements[p]`` is said by
        person ``p``).
    n : int, optional
        Number of people, in ``[MIN_PEOPLE, MAX_PEOPLE]``. Taken from the puzzle
        when a :class:`KKPuzzle` is given (if passed too, it must agree);
        required with a bare sequence, whose length must equal it.

    Returns
    -------
    list of tuple of bool
        Every consistent assignment (``True`` = knight), ordered by the integer
        whose bit ``p`` is person ``p``'s role. A well-posed puzzle gives
        exactly one.

    Raises
    ------
    ValueError
        If ``n`` is missing or out of range, the number of statements differs
        from ``n``, or a statement mentions a person index ``>= n``.

    Notes
    -----
    Cost is :math:`O(2^n \\cdot \\sum_p |S_p|)` boolean operations; for
    ``n = 14`` (16384 rows) about a millisecond.
    """
    if isinstance(puzzle_or_statements, KKPuzzle):
        statements = puzzle_or_statements.statements
        if n is not None and n != puzzle_or_statements.n_people:
            raise ValueError(
                f"n={n} disagrees with the puzzle's n_people={puzzle_or_statements.n_people}; "
                "leave n out when passing a KKPuzzle"
            )
        n = puzzle_or_statements.n_people
    else:
        statements = tuple(puzzle_or_statements)
        if n is None:
            raise ValueError(
                "n is required when solve() gets a sequence of statements; pass n=len(statements)"
            )
    n = _check_n_people(n, "n")
    if len(statements) != n:
        raise ValueError(f"expected one statement per person ({n}), got {len(statements)}")
    for speaker, statement in enumerate(statements):
        if not isinstance(statement, Statement):
            raise ValueError(f"statement {speaker} must be a Statement, got {type(statement).__name__}")
        outside = sorted(p for p in statement.people() if p >= n)
        if outside:
            raise ValueError(
                f"statement {speaker} ({statement!r}) mentions people {outside} but there are only "
                f"{n} people (indices 0..{n - 1})"
            )
    table = _truth_table(n)
    consistent = np.ones(table.shape[0], dtype=bool)
    for speaker, statement in enumerate(statements):
        consistent &= _consistency_column(table, speaker, statement)
    return [tuple(bool(x) for x in table[row]) for row in np.flatnonzero(consistent)]


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------


def source_name(n_people: int) -> str:
    """Data-source name of the ``n_people`` distribution: ``f"kk_{n_people}people"``."""
    return f"kk_{_check_n_people(n_people)}people"


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _render_text(names: Sequence[str], statements: Sequence[Statement]) -> str:
    n = len(names)
    lines = [
        "On an island, every inhabitant is either a knight, who always tells the truth, "
        "or a knave, who always lies.",
        f"You meet {n} inhabitants: {_join_names(list(names))}.",
    ]
    for speaker, statement in enumerate(statements):
        lines.append(f'{names[speaker]} says: "{_capitalise(statement.render(names))}."')
    if any(_contains(s, Or) for s in statements):
        lines.append('("or" is inclusive.)')
    lines.append("Who is a knight and who is a knave?")
    return "\n".join(lines)


def _contains(statement: Statement, kind: type) -> bool:
    if isinstance(statement, kind):
        return True
    children = [getattr(statement, f, None) for f in ("left", "right", "antecedent", "consequent", "operand")]
    return any(isinstance(c, Statement) and _contains(c, kind) for c in children)


@dataclass(frozen=True)
class KKPuzzle:
    """A well-posed Knights-and-Knaves puzzle.

    Attributes
    ----------
    n_people : int
        Number of inhabitants.
    names : tuple of str
        Their names; person ``p`` is ``names[p]``.
    statements : tuple of Statement
        ``statements[p]`` is what person ``p`` says.
    solution : tuple of bool
        The unique consistent assignment, ``True`` = knight.
    text : str
        The puzzle in natural language.
    source : str
        Distribution name, ``f"kk_{n_people}people"``.
    """

    n_people: int
    names: tuple[str, ...]
    statements: tuple[Statement, ...]
    solution: tuple[bool, ...]
    text: str
    source: str

    def __post_init__(self) -> None:
        n = self.n_people
        if not (len(self.names) == len(self.statements) == len(self.solution) == n):
            raise ValueError(
                f"KKPuzzle needs n_people={n} names, statements and solution entries, got "
                f"{len(self.names)}, {len(self.statements)} and {len(self.solution)}"
            )


def _draw_atom_people(n: int, k: int, rng: np.random.Generator) -> list[int]:
    return [int(p) for p in rng.choice(n, size=k, replace=False)]


def _draw_statement(speaker: int, n: int, rng: np.random.Generator) -> Statement:
    """One random statement for ``speaker`` (not yet conditioned on its truth).

    Grammar (probabilities): IsRole about someone else 0.22; SameRole 0.12;
    CountRole over 2..3 people 0.14; And / Or / Implies / Iff over two IsRole
    atoms on different people 0.12 each; Not over And or Or 0.04. People in
    compound statements may include the speaker (needed for 2-person puzzles).
    """
    kinds = ("is", "same", "count", "and", "or", "implies", "iff", "not")
    weights = np.array([0.22, 0.12, 0.14, 0.12, 0.12, 0.12, 0.12, 0.04])
    kind = kinds[int(rng.choice(len(kinds), p=weights))]
    if kind == "is":
        others = [p for p in range(n) if p != speaker]
        return IsRole(others[int(rng.integers(len(others)))], bool(rng.integers(2)))
    if kind == "same":
        first, second = _draw_atom_people(n, 2, rng)
        return SameRole(first, second, bool(rng.integers(2)))
    if kind == "count":
        size = int(rng.integers(2, min(n, 3) + 1))
        members = tuple(sorted(_draw_atom_people(n, size, rng)))
        relation = _RELATIONS[int(rng.choice(3, p=[0.5, 0.35, 0.15]))]
        count = int(rng.integers(1, size))  # never a vacuous 0 or "all"
        return CountRole(members, bool(rng.integers(2)), relation, count)
    first, second = _draw_atom_people(n, 2, rng)
    left = IsRole(first, bool(rng.integers(2)))
    right = IsRole(second, bool(rng.integers(2)))
    if kind == "and":
        return And(left, right)
    if kind == "or":
        return Or(left, right)
    if kind == "implies":
        return Implies(left, right)
    if kind == "iff":
        return Iff(left, right)
    return Not(And(left, right) if rng.integers(2) else Or(left, right))


def _draw_truthful_statement(
    speaker: int, solution: tuple[bool, ...], rng: np.random.Generator
) -> Statement:
    """A random statement whose truth under ``solution`` equals the speaker's role."""
    for _ in range(1000):
        statement = _draw_statement(speaker, len(solution), rng)
        if statement.holds(solution) == solution[speaker]:
            return statement
    # Unreachable in practice: IsRole about another person alone has probability 0.11 of fitting.
    raise RuntimeError(f"could not draw a statement of truth {solution[speaker]} for person {speaker}")


def generate_puzzle(
    n_people: int,
    *,
    rng: np.random.Generator,
    max_resamples: int = 5000,
) -> KKPuzzle:
    """Generate a random Knights-and-Knaves puzzle with a unique solution.

    Steps: draw the solution (each person a knight with probability 1/2) and
    the cast (``n_people`` distinct names from :data:`NAMES`); draw for each
    person a statement whose truth under the solution equals their role, so
    the drawn solution is consistent; then, while the brute-force count of
    consistent assignments exceeds one, redraw one random person's statement,
    keeping the redraw unless it increases the count. The drawn solution
    stays consistent throughout, so the count never drops below one and
    stopping at one means the solution is the unique answer. A final call to
    :func:`solve` confirms it.

    Parameters
    ----------
    n_people : int
        Number of inhabitants, in ``[MIN_PEOPLE, MAX_PEOPLE]`` = [2, 16].
    rng : numpy.random.Generator
        The only source of randomness (the result is a function of its state).
    max_resamples : int, default 5000
        Bound on statement redraws after the initial draw; ``>= 0``.

    Returns
    -------
    KKPuzzle
        ``source`` is ``f"kk_{n_people}people"``.

    Raises
    ------
    ValueError
        If ``n_people`` is outside ``[2, 16]`` or ``max_resamples < 0``.
    TypeError
        If ``rng`` is not a ``numpy.random.Generator``.
    RuntimeError
        If the puzzle is still ambiguous after ``max_resamples`` redraws.

    Notes
    -----
    The greedy acceptance rule (a redraw is kept when it does not add
    consistent assignments) is a local search rather than i.i.d. rejection
    of whole puzzles: whole-puzzle rejection needs many more solver calls at
    12-14 people. It biases puzzles towards statements that pin roles down;
    the grammar and the solution distribution are unchanged. Logic-RL's
    generator is not ported; only the task definition is shared.
    """
    n = _check_n_people(n_people)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}; "
            "use numpy.random.default_rng(seed)"
        )
    if not _is_int(max_resamples) or max_resamples < 0:
        raise ValueError(f"max_resamples must be a non-negative int, got {max_resamples!r}")

    solution = tuple(bool(x) for x in rng.integers(0, 2, size=n))
    names = tuple(NAMES[int(i)] for i in rng.choice(len(NAMES), size=n, replace=False))
    statements = [_draw_truthful_statement(p, solution, rng) for p in range(n)]

    table = _truth_table(n)
    columns = np.stack([_consistency_column(table, p, s) for p, s in enumerate(statements)], axis=1)
    count = int(columns.all(axis=1).sum())
    resamples = 0
    while count > 1:
        if resamples >= max_resamples:
            raise RuntimeError(
                f"generate_puzzle(n_people={n}) still has {count} consistent assignments after "
                f"max_resamples={max_resamples} statement redraws; raise max_resamples or use "
                "another generator state"
            )
        resamples += 1
        speaker = int(rng.integers(n))
        candidate = _draw_truthful_statement(speaker, solution, rng)
        candidate_column = _consistency_column(table, speaker, candidate)
        others = np.delete(columns, speaker, axis=1).all(axis=1)
        candidate_count = int((others & candidate_column).sum())
        if candidate_count <= count:
            statements[speaker] = candidate
            columns[:, speaker] = candidate_column
            count = candidate_count

    statements_t = tuple(statements)
    if solve(statements_t, n) != [solution]:  # independent re-check through the public solver
        raise RuntimeError("internal error: generated puzzle is not uniquely solved by its solution")
    return KKPuzzle(
        n_people=n,
        names=names,
        statements=statements_t,
        solution=solution,
        text=_render_text(names, statements_t),
        source=f"kk_{n}people",
    )


# --------------------------------------------------------------------------
# Prompt, parsing, format check, reward
# --------------------------------------------------------------------------


def format_prompt(puzzle: KKPuzzle) -> str:
    """User message: the puzzle plus the ``<think>``/``<answer>`` instructions.

    Parameters
    ----------
    puzzle : KKPuzzle

    Returns
    -------
    str
        Short on purpose (small models, short generations).
    """
    first = puzzle.names[0]
    return (
        f"{puzzle.text}\n\n"
        "Reason step by step inside <think> </think>, then give the final answer inside "
        "<answer> </answer> with one line per person, e.g. "
        f'"(1) {first} is a knight" or "(1) {first} is a knave".'
    )


def format_answer(assignment: Sequence[bool], names: Sequence[str]) -> str:
    """Canonical answer lines, ``"(1) Zoey is a knight"``, one per person."""
    if len(assignment) != len(names):
        raise ValueError(f"assignment has {len(assignment)} entries but there are {len(names)} names")
    return "\n".join(
        f"({i + 1}) {name} is a {_role_word(bool(role))}"
        for i, (name, role) in enumerate(zip(names, assignment))
    )


_ANSWER_BLOCK = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL | re.IGNORECASE)
_ROLE = r"knights?|knaves?"
# A segment that starts with a role word used as a header: "Knights: Zoey, Ava",
# "**Knaves** - Liam", "The knights are Zoey and Ava".
_HEADER = re.compile(
    rf"^[\W\d_]*(?:the\s+)?({_ROLE})\b[\s*_]*(?::|-|–|—|\bare\b|\bis\b)(.*)$",
    re.DOTALL | re.IGNORECASE,
)
# Segment boundaries: line breaks, semicolons, sentence-final periods (not the
# "1." of a numbered list), and the start of a "Knights:" style header.
_SEGMENT_SPLIT = re.compile(
    rf"\n|;|(?<!\d)\.(?=\s|$)|(?=\b(?:{_ROLE})\b[\s*_]*:)",
    re.IGNORECASE,
)


def _token_pattern(names: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(
        rf"\b(?P<name>{alternatives})\b|\b(?P<role>{_ROLE})\b|(?P<neg>\bnot\b|n['’]t\b)",
        re.IGNORECASE,
    )


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(names)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"names must be a non-empty sequence of non-empty strings, got {names!r}")
    if len({n.lower() for n in names}) != len(names):
        raise ValueError(f"names must be distinct (case-insensitively), got {names!r}")
    return names


def parse_answer(text: str, names: Sequence[str]) -> dict[str, bool] | None:
    """Read the role of every person from the last ``<answer>...</answer>`` block.

    Accepted phrasings, case-insensitive, in any mix: "Zoey is a knight",
    "Zoey: knave", "Zoey - Knight", "**Zoey** is a **knave**", numbered
    lists ("(1) ...", "1. ..."), several people per clause ("Zoey and Ava are
    knights"), headers ("Knights: Zoey, Ava"; "The knaves are Liam"),
    negation ("Zoey is not a knight" reads as knave), and plural role words.

    Within each segment (a line, a ``;``-clause or a sentence) every name takes
    the first role word after it; in a header segment every name takes the
    header's role. Names not in ``names`` are ignored.

    Parameters
    ----------
    text : str
        The model response (or any text containing the answer block).
    names : sequence of str
        The puzzle's names, distinct.

    Returns
    -------
    dict of str to bool or None
        ``{name: True if knight}`` in the order of ``names``; ``None`` if there
        is no answer block, a person gets no role, or a person gets both roles.

    Notes
    -----
    More lenient than DUMP's ``kk.py`` (read in the repository file), which requires "<name> is a
    <knight|knave>" for each name and the number of role words in the block to
    equal the number of people; repeated or explanatory role words are
    allowed here as long as they do not contradict.
    """
    names = _check_names(names)
    blocks = _ANSWER_BLOCK.findall(text)
    if not blocks:
        return None
    canonical = {n.lower(): n for n in names}
    tokens = _token_pattern(names)
    found: dict[str, set[bool]] = {n: set() for n in names}

    for segment in _SEGMENT_SPLIT.split(blocks[-1]):
        header = _HEADER.match(segment)
        if header is not None:
            rest = header.group(2)
            role_matches = [m for m in tokens.finditer(rest) if m.group("role")]
            if not role_matches:
                is_knight = header.group(1).lower().startswith("knight")
                for m in tokens.finditer(rest):
                    if m.group("name"):
                        found[canonical[m.group("name").lower()]].add(is_knight)
                continue
            segment = rest
        pending: list[str] = []
        negated = False
        for m in tokens.finditer(segment):
            if m.group("name"):
                pending.append(canonical[m.group("name").lower()])
                negated = False
            elif m.group("neg"):
                negated = True
            else:
                is_knight = m.group("role").lower().startswith("knight") != negated
                for name in pending:
                    found[name].add(is_knight)
                pending = []
                negated = False

    if any(len(roles) != 1 for roles in found.values()):
        return None
    return {name: next(iter(found[name])) for name in names}


_FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)


def check_format(text: str) -> bool:
    """DUMP / Logic-RL format check: ``<think>...</think>`` then ``<answer>...</answer>``.

    True iff each of the four tags occurs exactly once, in the order
    ``<think>``, ``</think>``, ``<answer>``, ``</answer>``, with only whitespace
    before ``<think>``, between ``</think>`` and ``<answer>``, and after
    ``</answer>``. Tags are case-sensitive.

    Notes
    -----
    DUMP's check (``validate_response_structure`` in ``kk.py``, read in the
    repository file, not in the notes) counts the four tags and checks their
    order and that nothing but ``<|im_end|>`` follows ``</answer>``; it
    tolerates text before ``<think>`` and between ``</think>`` and
    ``<answer>``. This version is stricter there, because the response here is
    the decoded completion alone (no chat header, special tokens stripped).
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        if text.count(tag) != 1:
            return False
    return _FORMAT.fullmatch(text) is not None


class KKReward(ScoredReward):
    """Graded response (a :class:`~polab.scaled.tasks.protocol.RewardResult`; ``components`` holds the two scores).

    Attributes
    ----------
    format_score : float
        +1 if :func:`check_format` passes, else -1.
    answer_score : float
        +2 fully correct, -1.5 parsed but wrong, -2 unparseable or format failed.
    total : float
        ``format_score + answer_score``; one of 3, -0.5, -1, -3.
    correct : bool
        True iff ``answer_score == 2``.
    """


def kk_reward(response_text: str, puzzle: KKPuzzle) -> KKReward:
    """DUMP's Knights-and-Knaves reward: format part plus answer part.

    ==================================  ======  ======  =====
    case                                format  answer  total
    ==================================  ======  ======  =====
    format ok, all roles correct        +1      +2      3
    format ok, parsed, some role wrong  +1      -1.5    -0.5
    format ok, answer unparseable       +1      -2      -1
    format failed (answer not graded)   -1      -2      -3
    ==================================  ======  ======  =====

    Parameters
    ----------
    response_text : str
        The model's completion (without the prompt).
    puzzle : KKPuzzle

    Returns
    -------
    KKReward

    Notes
    -----
    A port of the reward's *shape*, not of its code. From the notes
    (``shared/notes/theory_core.md`` section 1.4, describing
    ``verl/utils/reward_score/kk.py`` of ZhentingWang/DUMP at commit 235e85d):
    the four values (+1/-1 format; +2/-1.5/-2 answer), "-2 if unparseable or
    the format failed", and total = format + answer. Checked against that
    file as indexed at commit 92a2997 (not in the notes): a failed format
    check skips answer grading, and an empty answer block counts as
    unparseable. Departures in the pieces, not in the shape:
    :func:`check_format` is stricter about stray text around the tags and
    :func:`parse_answer` accepts more phrasings (see their Notes); the input
    is the completion alone, where DUMP splits the full transcript at the
    "Assistant:" / ``<|im_start|>assistant`` header.

    References
    ----------
    .. [1] Wang, Cui, Li, Wan, Zhao, "DUMP: Automated Distribution-Level
       Curriculum Learning for RL-based LLM Post-training", arXiv 2504.09710,
       2025.
    """
    if not isinstance(puzzle, KKPuzzle):
        raise ValueError(f"puzzle must be a KKPuzzle, got {type(puzzle).__name__}")
    format_ok = check_format(response_text)
    format_score = 1.0 if format_ok else -1.0
    if not format_ok:
        answer_score = -2.0
    else:
        parsed = parse_answer(response_text, puzzle.names)
        if parsed is None:
            answer_score = -2.0
        elif tuple(parsed[name] for name in puzzle.names) == puzzle.solution:
            answer_score = 2.0
        else:
            answer_score = -1.5
    return KKReward(
        format_score=format_score,
        answer_score=answer_score,
        total=format_score + answer_score,
        correct=answer_score == 2.0,
    )


# --------------------------------------------------------------------------
# Task: pools of puzzles per size
# --------------------------------------------------------------------------


class KnightsKnavesTask:
    """Fixed pools of puzzles, one distribution per number of people.

    Parameters
    ----------
    people : sequence of int, default (3, 4, 5, 6, 7)
        Sizes, each in ``[MIN_PEOPLE, MAX_PEOPLE]``, distinct; their order is
        the order of :attr:`distributions`.
    puzzles_per_size : int, default 100
        Pool size per distribution, ``>= 1``.
    seed : int, default 0
        Non-negative. The pool of size ``n`` is generated from
        ``numpy.random.default_rng([seed, n])``, so it depends only on
        ``(seed, n, puzzles_per_size)`` and not on the other sizes or on the
        access order. Pools are built lazily on first use.

    Notes
    -----
    DUMP names its sources ``kk_logic_<n>`` and uses 900 training puzzles per
    size; here the name is ``kk_<n>people`` and the pool size is a parameter.
    """

    name = "kk"

    def __init__(
        self,
        people: Sequence[int] = (3, 4, 5, 6, 7),
        *,
        puzzles_per_size: int = 100,
        seed: int = 0,
    ) -> None:
        people = tuple(people)
        if not people:
            raise ValueError("people must name at least one size, e.g. people=(3, 4, 5)")
        for n in people:
            _check_n_people(n, "people entry")
        if len(set(people)) != len(people):
            raise ValueError(f"people must be distinct sizes, got {people}")
        if not _is_int(puzzles_per_size) or puzzles_per_size < 1:
            raise ValueError(f"puzzles_per_size must be a positive int, got {puzzles_per_size!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.people: tuple[int, ...] = tuple(int(n) for n in people)
        self.puzzles_per_size = int(puzzles_per_size)
        self.seed = int(seed)
        self._size_of = {f"kk_{n}people": n for n in self.people}
        self._pools: dict[str, tuple[KKPuzzle, ...]] = {}

    @property
    def distributions(self) -> list[str]:
        """Source names, ``kk_<n>people``, in the order of ``people``."""
        return [f"kk_{n}people" for n in self.people]

    def _check_source(self, source: str) -> int:
        if source not in self._size_of:
            raise ValueError(
                f"unknown source {source!r}; this task has {self.distributions}. "
                "Use one of those, or build the task with people=(...) including that size"
            )
        return self._size_of[source]

    def pool(self, source: str) -> tuple[KKPuzzle, ...]:
        """The fixed puzzles of ``source`` (generated on first call)."""
        n = self._check_source(source)
        if source not in self._pools:
            rng = np.random.default_rng([self.seed, n])
            self._pools[source] = tuple(generate_puzzle(n, rng=rng) for _ in range(self.puzzles_per_size))
        return self._pools[source]

    def sample(self, source: str, *, rng: np.random.Generator) -> KKPuzzle:
        """A puzzle drawn uniformly from the pool of ``source``."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        pool = self.pool(source)
        return pool[int(rng.integers(len(pool)))]

    def prompt(self, puzzle: KKPuzzle) -> str:
        """User message for ``puzzle`` (see :func:`format_prompt`)."""
        return format_prompt(puzzle)

    def reward(self, response: str, puzzle: KKPuzzle) -> KKReward:
        """Reward of ``response`` for ``puzzle`` (see :func:`kk_reward`)."""
        return kk_reward(response, puzzle)
