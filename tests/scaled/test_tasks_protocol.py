"""The task protocol: every built-in task conforms, RewardResult checks its input, the registry and task_spec."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from polab.scaled.tasks import (
    TASKS,
    PromptTask,
    RewardResult,
    ScoredReward,
    accepted_options,
    as_reward_result,
    build_task,
    check_task,
    register_task,
    task_options,
    task_spec,
)
from polab.scaled.tasks.arithmetic import ArithmeticReward, ArithmeticTask
from polab.scaled.tasks.knights_knaves import KKReward, KnightsKnavesTask, format_answer
from polab.scaled.tasks.length_target import LengthReward, LengthTargetTask

BUILT_IN = [
    ("arithmetic", dict(levels=(1, 2))),
    ("kk", dict(levels=(3, 4), puzzles_per_size=3, seed=5)),
    ("length-target", dict(target_words=2)),
]


@pytest.mark.parametrize("spec,options", BUILT_IN)
def test_built_in_tasks_follow_the_protocol(spec, options):
    task = build_task(spec, **options)
    assert isinstance(task, PromptTask)
    check_task(task)
    assert task.name == spec and task_spec(task) == spec
    assert task_options(task) == json.loads(json.dumps(options))  # JSON-safe: tuples become lists
    assert task.distributions and all(isinstance(d, str) for d in task.distributions)
    for source in task.distributions:
        a = task.sample(source, rng=np.random.default_rng(7))
        b = task.sample(source, rng=np.random.default_rng(7))
        assert a == b  # same generator state, same problem
        assert isinstance(task.prompt(a), str) and task.prompt(a)
        for response in ("", "12", "<think>x</think> <answer>Zoey is a knight</answer>", "one two"):
            r = task.reward(response, a)
            assert isinstance(r, RewardResult)
            assert math.isfinite(r.total) and isinstance(r.correct, bool)
            assert all(isinstance(k, str) and math.isfinite(v) for k, v in r.components.items())


def test_built_in_rewards_keep_their_values():
    # Arithmetic: 1/0 for right/wrong sum; format +1 when an integer is found (module docstring).
    task = ArithmeticTask((2,))
    p = task.sample("add_2digit", rng=np.random.default_rng(0))
    right = task.reward(f"The sum is {p.a + p.b}.", p)
    assert right == ArithmeticReward(1.0, 1.0, 1.0, True)
    assert right.components == {"format_score": 1.0, "answer_score": 1.0}
    assert task.reward(str(p.a + p.b + 1), p) == ArithmeticReward(1.0, 0.0, 0.0, False)
    assert task.reward("no idea", p) == ArithmeticReward(-1.0, 0.0, 0.0, False)
    # Knights and Knaves: DUMP's table (kk_reward docstring): 3 / -0.5 / -1 / -3.
    kk = KnightsKnavesTask((3,), puzzles_per_size=2, seed=0)
    puzzle = kk.sample("kk_3people", rng=np.random.default_rng(0))
    answer = format_answer(puzzle.solution, puzzle.names)
    wrong = format_answer(tuple(not r for r in puzzle.solution), puzzle.names)
    assert kk.reward(f"<think>t</think><answer>{answer}</answer>", puzzle) == KKReward(1.0, 2.0, 3.0, True)
    assert kk.reward(f"<think>t</think><answer>{wrong}</answer>", puzzle).total == -0.5
    assert kk.reward("<think>t</think><answer>?</answer>", puzzle).total == -1.0
    assert kk.reward(answer, puzzle).components == {"format_score": -1.0, "answer_score": -2.0}
    # Length target: exp(-|words - target| / scale), and still a float for code that used the float.
    lt = LengthTargetTask(target_words=3, scale=4.0)
    r = lt.reward("one two three four five")
    assert isinstance(r, float) and isinstance(r, RewardResult) and isinstance(r, LengthReward)
    assert r == r.total == pytest.approx(math.exp(-0.5), rel=1e-15)
    assert r.correct is False and r.components == {"words": 5.0}
    assert lt.reward("one two three").correct is True
    assert torch.tensor([r, lt.reward("a")]).tolist() == pytest.approx([math.exp(-0.5), math.exp(-0.5)], rel=1e-7)


def test_length_target_sample_keeps_its_old_call_and_rng_use():
    lt = LengthTargetTask()
    a = lt.sample(rng=np.random.default_rng(3))
    b = lt.sample("topics", rng=np.random.default_rng(3))
    assert a == b
    with pytest.raises(ValueError, match="unknown source 'x'"):
        lt.sample("x", rng=np.random.default_rng(3))


def test_reward_result_checks_its_fields():
    assert RewardResult(0.5, True).components == {}
    with pytest.raises(ValueError, match="total must be finite"):
        RewardResult(math.nan, False)
    with pytest.raises(ValueError, match="total must be a real number"):
        RewardResult(True, False)
    with pytest.raises(ValueError, match="correct must be a bool"):
        RewardResult(1.0, 1)
    with pytest.raises(ValueError, match=r"components\['a'\] must be finite"):
        RewardResult(1.0, True, {"a": math.inf})
    with pytest.raises(ValueError, match="keys must be str"):
        RewardResult(1.0, True, {1: 1.0})
    with pytest.raises(ValueError, match="derived from format_score"):
        ScoredReward(1.0, 2.0, 3.0, True, components={"x": 1.0})
    with pytest.raises(AttributeError):
        RewardResult(1.0, True).total = 2.0  # frozen
    # Hashable by value, as the built-in reward classes were before they held components.
    assert len({KKReward(1.0, 2.0, 3.0, True), KKReward(1.0, 2.0, 3.0, True), KKReward(-1.0, -2.0, -3.0, False)}) == 2
    assert hash(RewardResult(1.0, True, {"a": 1.0, "b": 2.0})) == hash(RewardResult(1.0, True, {"b": 2.0, "a": 1.0}))


def test_as_reward_result():
    assert as_reward_result(0.0) == RewardResult(0.0, False)
    assert as_reward_result(2) == RewardResult(2.0, True)
    r = RewardResult(1.0, False, {"a": 1.0})
    assert as_reward_result(r) is r
    for bad in (True, "1.0", None, [1.0]):
        with pytest.raises(ValueError, match="must return a float or a polab.scaled.tasks.RewardResult"):
            as_reward_result(bad, where="m:f")
    with pytest.raises(ValueError, match="must be finite"):
        as_reward_result(-math.inf)


def test_check_task_names_what_is_missing():
    class Half:
        name = "half"

        def prompt(self, p):
            return ""

    with pytest.raises(ValueError, match=r"lacks distributions \(a non-empty list of str\), sample\(...\).*reward"):
        check_task(Half())


def test_user_registered_task_round_trips_through_its_spec():
    @register_task("test-constant")
    class Constant:
        name = "test-constant"

        def __init__(self, value: float = 1.0):
            self.value = value
            self.distributions = ["only"]

        def sample(self, source, *, rng):
            return int(rng.integers(10))

        def prompt(self, problem):
            return f"Say {problem}."

        def reward(self, response, problem):
            return RewardResult(self.value, True)

    try:
        task = build_task("test-constant", value=2.0)
        assert task_spec(task) == "test-constant" and task.reward("", 0).total == 2.0
        assert task_spec(Constant()) == "test-constant"  # an instance of the registered class itself
        assert accepted_options("test-constant") == ("value",)
        with pytest.raises(ValueError, match="already registered"):
            register_task("test-constant")(lambda: None)
        register_task("test-noarg")(lambda *, x=1: Constant(x))
        with pytest.raises(ValueError, match="takes no argument after ':'"):
            build_task("test-noarg:abc")
        register_task("test-required")(lambda *, x: Constant(x))
        with pytest.raises(ValueError, match=r"'test-required' with options \[\] does not fit the builder.*'x'"):
            build_task("test-required")
    finally:
        TASKS.pop("test-constant", None)
        TASKS.pop("test-noarg", None)
        TASKS.pop("test-required", None)


def test_registry_errors_and_python_placeholder():
    with pytest.raises(ValueError, match=r"unknown task 'nope'.*known: \[.*'arithmetic'"):
        build_task("nope")
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['digits'\]; it accepts \['levels'"):
        build_task("arithmetic", digits=(1,))
    with pytest.raises(ValueError, match="non-empty str"):
        build_task("")
    with pytest.raises(ValueError, match="task 'jsonl' needs an argument: write the spec as 'jsonl:ARGUMENT'"):
        build_task("jsonl")
    with pytest.raises(ValueError, match="task 'kk' takes no argument after ':'"):
        build_task("kk:5")
    for bad in ("", "a:b", " x", "python"):
        with pytest.raises(ValueError, match="task name must be"):
            register_task(bad)
    # None options are dropped: the builder's default applies.
    assert build_task("kk", puzzles_per_size=None, levels=(3,)).puzzles_per_size == 100

    class MyArithmetic(ArithmeticTask):
        pass

    spec = task_spec(MyArithmetic())
    assert spec == f"python:{__name__}.test_registry_errors_and_python_placeholder.<locals>.MyArithmetic"
    with pytest.raises(ValueError, match="records a Python task object.*pass the object itself"):
        build_task(spec)
    assert task_spec(ArithmeticTask()) == "arithmetic" and task_options(ArithmeticTask()) == {}
