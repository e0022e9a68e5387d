"""Tests for polab.scaled.tasks.knights_knaves: semantics, generation, parsing, format and reward.

Reference values are hand-derived (the derivations are in comments) or come
from the pure-Python brute-force solver defined here, which interprets the
statement dataclasses by their fields and shares no code with the library's
vectorised evaluation.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
import pytest

from polab.scaled.tasks.knights_knaves import (
    MAX_PEOPLE,
    MIN_PEOPLE,
    NAMES,
    And,
    CountRole,
    Iff,
    Implies,
    IsRole,
    KKPuzzle,
    KKReward,
    KnightsKnavesTask,
    Not,
    Or,
    SameRole,
    check_format,
    format_answer,
    format_prompt,
    generate_puzzle,
    kk_reward,
    parse_answer,
    solve,
    source_name,
)

# ---------------------------------------------------------------------------
# Independent reference: interpret statements by their fields, loop over assignments
# ---------------------------------------------------------------------------


def reference_truth(statement, a) -> bool:
    """Truth of ``statement`` under assignment ``a`` (tuple of bools), written from the grammar's meaning."""
    if isinstance(statement, IsRole):
        return a[statement.person] is statement.knight
    if isinstance(statement, SameRole):
        return (a[statement.first] is a[statement.second]) is statement.same
    if isinstance(statement, CountRole):
        k = len([p for p in statement.members if a[p] is statement.knight])
        if statement.relation == "exactly":
            return k == statement.count
        if statement.relation == "at least":
            return k >= statement.count
        assert statement.relation == "at most"
        return k <= statement.count
    if isinstance(statement, And):
        return reference_truth(statement.left, a) and reference_truth(statement.right, a)
    if isinstance(statement, Or):
        return reference_truth(statement.left, a) or reference_truth(statement.right, a)
    if isinstance(statement, Implies):
        return (not reference_truth(statement.antecedent, a)) or reference_truth(statement.consequent, a)
    if isinstance(statement, Iff):
        return reference_truth(statement.left, a) is reference_truth(statement.right, a)
    if isinstance(statement, Not):
        return not reference_truth(statement.operand, a)
    raise TypeError(type(statement))


def reference_solve(statements, n) -> list[tuple[bool, ...]]:
    """Slow brute force: every assignment in which each speaker's role equals the truth of their statement."""
    out = []
    for bits in itertools.product((False, True), repeat=n):
        a = tuple(reversed(bits))  # person 0 = lowest bit, so the order matches solve()'s
        if all(a[p] is reference_truth(s, a) for p, s in enumerate(statements)):
            out.append(a)
    return sorted(out, key=lambda a: sum(1 << p for p, x in enumerate(a) if x))


def random_statement(n, rng, depth):
    """Random statement of any grammar class, nested up to ``depth`` (for solver-vs-reference tests)."""
    if depth <= 1 or rng.random() < 0.3:
        kind = rng.integers(3)
        if kind == 0:
            return IsRole(int(rng.integers(n)), bool(rng.integers(2)))
        if kind == 1:
            first, second = (int(x) for x in rng.choice(n, 2, replace=False))
            return SameRole(first, second, bool(rng.integers(2)))
        size = int(rng.integers(2, min(n, 4) + 1))
        members = tuple(int(x) for x in rng.choice(n, size, replace=False))
        relation = ("exactly", "at least", "at most")[int(rng.integers(3))]
        return CountRole(members, bool(rng.integers(2)), relation, int(rng.integers(0, size + 1)))
    kind = rng.integers(5)
    if kind == 4:
        return Not(random_statement(n, rng, depth - 1))
    cls = (And, Or, Implies, Iff)[int(kind)]
    return cls(random_statement(n, rng, depth - 1), random_statement(n, rng, depth - 1))


# ---------------------------------------------------------------------------
# Statement semantics, by hand
# ---------------------------------------------------------------------------

T, F = True, False


@pytest.mark.parametrize(
    "statement, assignment, expected",
    [
        (IsRole(1, knight=False), (T, F, T), True),
        (IsRole(1, knight=True), (T, F, T), False),
        (SameRole(0, 2, same=True), (T, F, T), True),
        (SameRole(0, 1, same=False), (T, F, T), True),
        (SameRole(0, 2, same=False), (T, F, T), False),
        (CountRole((0, 1, 2), True, "exactly", 1), (T, F, F), True),
        (CountRole((0, 1, 2), True, "exactly", 1), (T, T, F), False),
        (CountRole((0, 1, 2), False, "at least", 2), (T, F, F), True),
        (CountRole((0, 1, 2), False, "at least", 2), (T, T, F), False),
        (CountRole((0, 1, 2), True, "at most", 1), (T, T, F), False),
        (CountRole((0, 1, 2), True, "at most", 1), (F, T, F), True),
        (And(IsRole(0, T), IsRole(1, F)), (T, F, F), True),
        (And(IsRole(0, T), IsRole(1, F)), (T, T, F), False),
        (Or(IsRole(0, F), IsRole(1, F)), (T, T, F), False),
        (Or(IsRole(0, F), IsRole(1, F)), (T, F, F), True),
        (Implies(IsRole(0, T), IsRole(1, T)), (F, F, F), True),  # false antecedent
        (Implies(IsRole(0, T), IsRole(1, T)), (T, F, F), False),
        (Implies(IsRole(0, T), IsRole(1, T)), (T, T, F), True),
        (Iff(IsRole(0, T), IsRole(2, F)), (T, F, F), True),
        (Iff(IsRole(0, T), IsRole(2, F)), (T, F, T), False),
        (Not(And(IsRole(0, T), IsRole(1, T))), (T, T, F), False),
        (Not(Or(IsRole(0, T), IsRole(1, T))), (F, F, T), True),
    ],
)
def test_statement_truth_by_hand(statement, assignment, expected):
    assert statement.holds(assignment) is expected
    assert reference_truth(statement, assignment) is expected
    table = np.array([assignment], dtype=bool)
    assert statement.evaluate(table).tolist() == [expected]


def test_rendering_reads_as_the_grammar_says():
    names = ("Zoey", "Oliver", "Ava")
    cases = {
        IsRole(0, True): "Zoey is a knight",
        SameRole(0, 2, True): "Zoey and Ava are of the same kind",
        SameRole(0, 2, False): "Zoey and Ava are of different kinds",
        And(IsRole(0, False), IsRole(1, False)): "Zoey and Oliver are both knaves",
        And(IsRole(0, True), IsRole(1, False)): "Zoey is a knight and Oliver is a knave",
        Or(IsRole(1, True), IsRole(2, True)): "Oliver or Ava is a knight",
        Implies(IsRole(0, True), IsRole(2, False)): "if Zoey is a knight then Ava is a knave",
        Iff(IsRole(0, True), IsRole(2, False)): "Zoey is a knight if and only if Ava is a knave",
        CountRole((0, 1, 2), True, "exactly", 1): "exactly one of Zoey, Oliver and Ava is a knight",
        CountRole((0, 1), False, "at least", 1): "at least one of Zoey and Oliver is a knave",
        CountRole((0, 1, 2), False, "at most", 2): "at most two of Zoey, Oliver and Ava are knaves",
        Not(Or(IsRole(0, True), IsRole(1, True))): "it is false that Zoey or Oliver is a knight",
        # A compound operand is bracketed (the generator never builds one).
        And(Or(IsRole(0, True), IsRole(1, True)), IsRole(2, False)): "(Zoey or Oliver is a knight) and Ava is a knave",
    }
    for statement, text in cases.items():
        assert statement.render(names) == text


def test_hand_solved_two_person_puzzle():
    # Ann (0): "Ann and Ben are both knaves."   Ben (1): "Ann is a knave."
    # By hand: if Ann were a knight her statement would be true, making her a
    # knave: impossible. So Ann is a knave and her statement is false: not both
    # are knaves, so Ben is a knight. Ben's "Ann is a knave" is then true, as a
    # knight's must be. Rows: (T,T),(T,F) fail Ann; (F,F) makes Ann's claim
    # true, fails; (F,T) passes both. Unique solution (knave, knight).
    statements = (And(IsRole(0, False), IsRole(1, False)), IsRole(0, False))
    assert solve(statements, 2) == [(False, True)]
    assert reference_solve(statements, 2) == [(False, True)]


def test_hand_solved_three_person_puzzle():
    # A (0): "B is a knave."                       a == not b
    # B (1): "A and C are of different kinds."     b == (a != c)
    # C (2): "If B is a knight then A is a knight." c == (not b or a)
    # By hand: A's constraint leaves (a,b) = (T,F) or (F,T).
    #   (T,F): B's constraint F == (T != c) forces c = T; C's: T == (T or T) holds.  -> (T,F,T)
    #   (F,T): B's constraint T == (F != c) forces c = T; C's: T == (F or F) fails.
    # The other four rows already fail A's constraint. Unique: A knight, B knave, C knight.
    statements = (
        IsRole(1, False),
        SameRole(0, 2, same=False),
        Implies(IsRole(1, True), IsRole(0, True)),
    )
    assert solve(statements, 3) == [(True, False, True)]
    # With C saying "A or B is a knave" instead, (F,T,T) becomes consistent too:
    # C's check there is T == (T or F). Two solutions, so that puzzle is ill posed.
    ambiguous = statements[:2] + (Or(IsRole(0, False), IsRole(1, False)),)
    assert solve(ambiguous, 3) == [(True, False, True), (False, True, True)]


def test_vectorised_solver_matches_loop_reference_on_random_statements():
    rng = np.random.default_rng(123)
    n_solutions_seen = set()
    for trial in range(60):
        n = int(rng.integers(2, 7))
        statements = [random_statement(n, rng, depth=3) for _ in range(n)]
        expected = reference_solve(statements, n)
        assert solve(statements, n) == expected, (trial, statements)
        n_solutions_seen.add(min(len(expected), 2))
        table = np.array(list(itertools.product((False, True), repeat=n)), dtype=bool)
        for s in statements:
            vec = s.evaluate(table)
            assert vec.tolist() == [s.holds(tuple(row)) for row in table.tolist()]
    assert n_solutions_seen == {0, 1, 2}  # the trials cover none, one and several solutions


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------


def _check_generated(puzzle: KKPuzzle, n: int) -> None:
    assert puzzle.n_people == n
    assert puzzle.source == f"kk_{n}people" == source_name(n)
    assert len(puzzle.names) == len(set(puzzle.names)) == n
    assert set(puzzle.names) <= set(NAMES)
    assert len(puzzle.statements) == len(puzzle.solution) == n
    assert all(isinstance(x, bool) for x in puzzle.solution)
    assert all(s.depth <= 3 for s in puzzle.statements)
    # Every speaker's statement has the truth value their role demands.
    for p, s in enumerate(puzzle.statements):
        assert reference_truth(s, puzzle.solution) is puzzle.solution[p]
    # Every statement and name appears in the text.
    for p, s in enumerate(puzzle.statements):
        rendered = s.render(puzzle.names)
        assert f'{puzzle.names[p]} says: "{rendered[0].upper() + rendered[1:]}."' in puzzle.text


@pytest.mark.parametrize("n", range(2, 9))
def test_generated_puzzles_have_exactly_the_drawn_solution(n):
    for seed in range(15):
        puzzle = generate_puzzle(n, rng=np.random.default_rng([seed, n]))
        _check_generated(puzzle, n)
        assert reference_solve(puzzle.statements, n) == [puzzle.solution]
        assert solve(puzzle) == [puzzle.solution]


@pytest.mark.parametrize("n", [12, 13, 14])
def test_generated_large_puzzles_are_unique(n):
    rng = np.random.default_rng(n)
    puzzle = generate_puzzle(n, rng=rng)
    _check_generated(puzzle, n)
    assert reference_solve(puzzle.statements, n) == [puzzle.solution]
    for _ in range(5):  # more seeds through the fast solver
        puzzle = generate_puzzle(n, rng=rng)
        assert solve(puzzle.statements, n) == [puzzle.solution]


def test_solutions_are_not_degenerate():
    # Each role is a fair coin: over 8 * 40 = 320 draws the knight count is
    # Binomial(320, 1/2); the interval [120, 200] holds with probability > 1 - 1e-5.
    rng = np.random.default_rng(7)
    knights = sum(sum(generate_puzzle(8, rng=rng).solution) for _ in range(40))
    assert 120 <= knights <= 200


def test_generation_is_deterministic_in_the_generator_state():
    a = [generate_puzzle(6, rng=np.random.default_rng(42)) for _ in range(2)]
    assert a[0] == a[1]
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    assert [generate_puzzle(4, rng=rng1) for _ in range(5)] == [generate_puzzle(4, rng=rng2) for _ in range(5)]
    distinct = {generate_puzzle(6, rng=np.random.default_rng(s)).text for s in range(5)}
    assert len(distinct) == 5


def test_puzzle_is_frozen():
    puzzle = generate_puzzle(3, rng=np.random.default_rng(0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        puzzle.solution = (True, True, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        puzzle.statements[0].knight = True


def test_retry_bound_raises_runtime_error():
    # With no redraws allowed, a 14-person first draw is usually ambiguous;
    # over 20 generator states at least one must hit the bound.
    messages = []
    for seed in range(20):
        try:
            generate_puzzle(14, rng=np.random.default_rng(seed), max_resamples=0)
        except RuntimeError as err:
            messages.append(str(err))
    assert messages
    assert "max_resamples=0" in messages[0] and "consistent assignments" in messages[0]


@pytest.mark.parametrize("bad", [0, 1, MAX_PEOPLE + 1, -3, 2.0, True, "5"])
def test_bad_number_of_people_is_rejected(bad):
    with pytest.raises(ValueError, match=r"n_people"):
        generate_puzzle(bad, rng=np.random.default_rng(0))


def test_out_of_range_message_names_the_fix():
    with pytest.raises(ValueError, match=rf"outside the supported range \[{MIN_PEOPLE}, {MAX_PEOPLE}\].*pass a number"):
        generate_puzzle(1, rng=np.random.default_rng(0))


def test_other_bad_generation_inputs():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        generate_puzzle(3, rng=0)
    with pytest.raises(ValueError, match="max_resamples"):
        generate_puzzle(3, rng=np.random.default_rng(0), max_resamples=-1)


def test_bad_solver_inputs():
    with pytest.raises(ValueError, match="n is required"):
        solve([IsRole(1, True), IsRole(0, True)])
    with pytest.raises(ValueError, match="one statement per person"):
        solve([IsRole(1, True)], 2)
    with pytest.raises(ValueError, match=r"mentions people \[5\]"):
        solve([IsRole(5, True), IsRole(0, True)], 2)
    with pytest.raises(ValueError, match="SameRole needs two different people"):
        SameRole(1, 1, True)
    with pytest.raises(ValueError, match="relation"):
        CountRole((0, 1), True, "more than", 1)


def test_names_pool():
    assert len(NAMES) >= 20 and len(NAMES) >= MAX_PEOPLE
    assert len({n.lower() for n in NAMES}) == len(NAMES)
    assert all(n.isalpha() and n[0].isupper() for n in NAMES)


def test_solver_and_generation_are_fast():
    # Solver: 16384 rows at n=14, budget 50 ms (measured ~0.3 ms on a laptop core).
    puzzle = generate_puzzle(14, rng=np.random.default_rng(0))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        solve(puzzle)
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.05
    # Generation: 100 puzzles of 7 people under 2 s (measured ~0.05 s).
    start = time.perf_counter()
    rng = np.random.default_rng(1)
    for _ in range(100):
        generate_puzzle(7, rng=rng)
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------------------
# Prompt and answer parsing
# ---------------------------------------------------------------------------


def test_prompt_contains_puzzle_and_instructions():
    puzzle = generate_puzzle(5, rng=np.random.default_rng(3))
    prompt = format_prompt(puzzle)
    assert prompt.startswith(puzzle.text)
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        assert tag in prompt
    assert f"(1) {puzzle.names[0]} is a knight" in prompt
    assert len(prompt) < len(puzzle.text) + 300


NAMES3 = ("Zoey", "Oliver", "Ava")
TRUTH3 = {"Zoey": True, "Oliver": False, "Ava": True}


@pytest.mark.parametrize(
    "answer",
    [
        "(1) Zoey is a knight\n(2) Oliver is a knave\n(3) Ava is a knight",
        "Zoey: Knight\nOliver: Knave\nAva: Knight",
        "Zoey - Knight, Oliver - Knave, Ava - Knight",
        "1. **Zoey** is a **knight**\n2. **Oliver** is a **knave**\n3. **Ava** is a **knight**",
        "ZOEY IS A KNIGHT. oliver is a knave. Ava is a Knight.",
        "Zoey and Ava are knights, and Oliver is a knave.",
        "Knights: Zoey, Ava\nKnaves: Oliver",
        "**Knights**: Zoey and Ava; **Knaves**: Oliver",
        "Knights: Zoey, Ava. Knaves: Oliver.",
        "Knights: Zoey, Ava Knaves: Oliver",
        "The knights are Zoey and Ava. The knave is Oliver.",
        "Zoey is a knight, Oliver is not a knight, Ava is a knight.",
        "Oliver isn't a knight; Zoey and Ava are knights",
        "- Zoey → knight\n- Oliver → knave\n- Ava → knight",
        "| Zoey | Knight |\n| Oliver | Knave |\n| Ava | Knight |",
        "Zoey is a knight (not a knave)\nOliver is a knave\nAva is a knight\nBob is a knave",
        "\n  (1) Zoey is a knight\n  (2) Oliver is a knave\n  (3) Ava is a knight\n",
    ],
)
def test_parser_accepts_varied_phrasing(answer):
    text = f"<think>reasoning about Zoey, who may be a knave</think>\n<answer>{answer}</answer>"
    assert parse_answer(text, NAMES3) == TRUTH3


def test_parser_returns_wrong_assignments_as_parsed():
    text = "<answer>Zoey is a knave\nOliver is a knave\nAva is a knight</answer>"
    assert parse_answer(text, NAMES3) == {"Zoey": False, "Oliver": False, "Ava": True}


@pytest.mark.parametrize(
    "text",
    [
        "no tags at all: Zoey is a knight, Oliver is a knave, Ava is a knight",
        "<answer>Zoey is a knight\nOliver is a knave</answer>",  # Ava missing
        "<answer>Zoey is a knight\nZoey is a knave\nOliver is a knave\nAva is a knight</answer>",  # contradictory
        "<answer>Zoey and Oliver are knights. Oliver is a knave. Ava is a knight.</answer>",  # contradictory
        "<answer>Zoey, Oliver and Ava</answer>",  # no roles
        "<answer>knight, knave, knight</answer>",  # no names
        "<answer></answer>",
        "<answer>Zoey is a knight\nOliver is a knave\nAva is a knight",  # unclosed
        # Multiple blocks: the last one is used, and it misses Ava.
        "<answer>Zoey is a knight\nOliver is a knave\nAva is a knight</answer> <answer>Zoey is a knight</answer>",
    ],
)
def test_parser_rejects_missing_or_contradictory(text):
    assert parse_answer(text, NAMES3) is None


def test_parser_uses_the_last_answer_block():
    text = (
        "<answer>Zoey is a knave\nOliver is a knave\nAva is a knave</answer>\n"
        "Wait, let me fix that.\n<answer>Zoey is a knight\nOliver is a knave\nAva is a knight</answer>"
    )
    assert parse_answer(text, NAMES3) == TRUTH3


def test_parser_respects_word_boundaries_between_names():
    names = ("Ella", "Stella", "Liam")
    text = "<answer>Stella is a knight\nElla is a knave\nLiam is a knight</answer>"
    assert parse_answer(text, names) == {"Ella": False, "Stella": True, "Liam": True}


def test_parser_round_trips_canonical_answers():
    rng = np.random.default_rng(11)
    for n in (2, 5, 9, 14):
        puzzle = generate_puzzle(n, rng=rng)
        text = f"<think>...</think><answer>{format_answer(puzzle.solution, puzzle.names)}</answer>"
        parsed = parse_answer(text, puzzle.names)
        assert tuple(parsed[name] for name in puzzle.names) == puzzle.solution


def test_parser_rejects_bad_names():
    with pytest.raises(ValueError, match="distinct"):
        parse_answer("<answer></answer>", ("Zoey", "zoey"))
    with pytest.raises(ValueError, match="non-empty"):
        parse_answer("<answer></answer>", ())


# ---------------------------------------------------------------------------
# Format check and reward
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>x</think><answer>y</answer>", True),
        ("  \n<think>\nx\n</think>\n\n<answer>\ny\n</answer>\n", True),
        ("<think></think><answer></answer>", True),
        ("<answer>y</answer>", False),  # no think
        ("<think>x</think>", False),  # no answer
        ("<answer>y</answer><think>x</think>", False),  # wrong order
        ("<think>a</think><think>b</think><answer>y</answer>", False),  # two thinks
        ("<think>x</think><answer>y</answer><answer>z</answer>", False),  # two answers
        ("Sure! <think>x</think><answer>y</answer>", False),  # text before <think>
        ("<think>x</think> so <answer>y</answer>", False),  # text between the blocks
        ("<think>x</think><answer>y</answer> done", False),  # text after </answer>
        ("<think>x <answer>y</answer> </think>", False),  # answer nested in think
        ("<think>x</think><answer>y", False),  # unclosed answer
        ("<THINK>x</THINK><ANSWER>y</ANSWER>", False),  # tags are case-sensitive
        ("", False),
    ],
)
def test_check_format(text, expected):
    assert check_format(text) is expected


def _hand_puzzle() -> KKPuzzle:
    # The three-person puzzle solved by hand above: A knight, B knave, C knight.
    names = ("Zoey", "Oliver", "Ava")
    statements = (IsRole(1, False), SameRole(0, 2, False), Implies(IsRole(1, True), IsRole(0, True)))
    return KKPuzzle(3, names, statements, (True, False, True), "hand-written", "kk_3people")


@pytest.mark.parametrize(
    "response, expected",
    [
        # format ok, fully correct: +1 + 2
        ("<think>A says B lies.</think>\n<answer>(1) Zoey is a knight\n(2) Oliver is a knave\n(3) Ava is a knight</answer>",
         KKReward(1.0, 2.0, 3.0, True)),
        # format ok, parsed but wrong: +1 - 1.5
        ("<think>guess</think><answer>(1) Zoey is a knave\n(2) Oliver is a knight\n(3) Ava is a knight</answer>",
         KKReward(1.0, -1.5, -0.5, False)),
        # format ok, unparseable (Ava missing): +1 - 2
        ("<think>hmm</think><answer>(1) Zoey is a knight\n(2) Oliver is a knave</answer>",
         KKReward(1.0, -2.0, -1.0, False)),
        # format ok, contradictory: +1 - 2
        ("<think>hmm</think><answer>Zoey is a knight. Zoey is a knave. Oliver is a knave. Ava is a knight.</answer>",
         KKReward(1.0, -2.0, -1.0, False)),
        # format failed (no think), answer correct but not graded: -1 - 2
        ("<answer>(1) Zoey is a knight\n(2) Oliver is a knave\n(3) Ava is a knight</answer>",
         KKReward(-1.0, -2.0, -3.0, False)),
        # format failed (nothing at all): -1 - 2
        ("I don't know.", KKReward(-1.0, -2.0, -3.0, False)),
    ],
)
def test_reward_table(response, expected):
    assert kk_reward(response, _hand_puzzle()) == expected


def test_reward_on_generated_puzzle():
    puzzle = generate_puzzle(7, rng=np.random.default_rng(2))
    right = f"<think>ok</think><answer>{format_answer(puzzle.solution, puzzle.names)}</answer>"
    flipped = (not puzzle.solution[0],) + puzzle.solution[1:]
    wrong = f"<think>ok</think><answer>{format_answer(flipped, puzzle.names)}</answer>"
    assert kk_reward(right, puzzle).total == 3.0
    assert kk_reward(wrong, puzzle).total == -0.5


# ---------------------------------------------------------------------------
# Task
# ---------------------------------------------------------------------------


def test_task_interface_and_determinism():
    task = KnightsKnavesTask((3, 5, 4), puzzles_per_size=8, seed=1)
    assert task.distributions == ["kk_3people", "kk_5people", "kk_4people"]
    rng = np.random.default_rng(0)
    for source in task.distributions:
        puzzle = task.sample(source, rng=rng)
        assert puzzle.source == source
        assert puzzle in task.pool(source)
        assert task.prompt(puzzle) == format_prompt(puzzle)
        answer = f"<think>x</think><answer>{format_answer(puzzle.solution, puzzle.names)}</answer>"
        assert task.reward(answer, puzzle) == KKReward(1.0, 2.0, 3.0, True)
    # Same seed: same pools and same samples; a pool does not depend on the other sizes.
    other = KnightsKnavesTask((5,), puzzles_per_size=8, seed=1)
    assert other.pool("kk_5people") == task.pool("kk_5people")
    assert len(task.pool("kk_5people")) == 8
    fresh = KnightsKnavesTask((3,), puzzles_per_size=8, seed=1)
    draws_a = [fresh.sample("kk_3people", rng=np.random.default_rng(9)) for _ in range(3)]
    draws_b = [task.sample("kk_3people", rng=np.random.default_rng(9)) for _ in range(3)]
    assert draws_a == draws_b
    assert KnightsKnavesTask((5,), puzzles_per_size=8, seed=2).pool("kk_5people") != task.pool("kk_5people")


def test_task_default_sizes():
    task = KnightsKnavesTask(puzzles_per_size=3)
    assert task.distributions == [f"kk_{n}people" for n in (3, 4, 5, 6, 7)]


def test_task_bad_inputs():
    task = KnightsKnavesTask((3, 4), puzzles_per_size=2)
    with pytest.raises(ValueError, match=r"unknown source 'kk_9people'.*people="):
        task.sample("kk_9people", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="outside the supported range"):
        KnightsKnavesTask((1, 3))
    with pytest.raises(ValueError, match="outside the supported range"):
        KnightsKnavesTask((3, MAX_PEOPLE + 1))
    with pytest.raises(ValueError, match="distinct"):
        KnightsKnavesTask((3, 3))
    with pytest.raises(ValueError, match="at least one size"):
        KnightsKnavesTask(())
    with pytest.raises(ValueError, match="puzzles_per_size"):
        KnightsKnavesTask((3,), puzzles_per_size=0)
    with pytest.raises(ValueError, match="seed"):
        KnightsKnavesTask((3,), seed=-1)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        task.sample("kk_3people", rng=3)
