"""Reward functions chosen by name (polab.scaled.tasks.rewards) on hand-made cases."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest

from polab.scaled.tasks import RewardResult, make_reward
from polab.scaled.tasks.rewards import normalize_text, numeric_answer, parse_last_number


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The answer is 12.", 12.0),  # a final period ends the sentence
        ("first 3, then 4", 4.0),  # the last number counts
        ("1,234.5", 1234.5),  # thousands separators in groups of three
        ("1,2", 2.0),  # not a separator: two numbers
        ("-3e2", -300.0),
        ("x = .5", 0.5),
        ("+7", 7.0),
        ("(42)", 42.0),
        ("x2 and 2nd", None),  # digits glued to letters are not numbers
        ("no number here", None),
        ("", None),
    ],
)
def test_parse_last_number(text, expected):
    assert parse_last_number(text) == expected


def test_exact_normalises_whitespace_and_optionally_case():
    exact = make_reward("exact")
    rec = {"answer": "Paris  France"}
    assert exact("  Paris\nFrance ", rec) == RewardResult(1.0, True, {"answer_score": 1.0})
    assert exact("paris france", rec).total == 0.0
    assert make_reward("exact", ignore_case=True)("PARIS france", rec).correct
    assert not make_reward("exact", normalize_whitespace=False)("Paris France", rec).correct
    assert make_reward("exact")("42", {"answer": 42.0}).correct  # 42.0 from JSON means 42
    assert make_reward("exact", answer_field="label")("yes", {"label": "yes"}).correct
    assert normalize_text(" a \t b\n", ignore_case=True) == "a b"


def test_numeric_tolerance_boundaries():
    # Default: math.isclose's rel_tol=1e-9, abs_tol=0.
    num = make_reward("numeric")
    assert num("It is 391.", {"answer": 391}) == RewardResult(1.0, True, {"answer_score": 1.0, "format_score": 1.0})
    assert num("It is 391.0000001", {"answer": 391}).total == 1.0  # relative error 2.6e-10 <= 1e-9
    assert num("It is 391.001", {"answer": "391"}).total == 0.0
    assert num("nothing", {"answer": 1}) == RewardResult(0.0, False, {"answer_score": 0.0, "format_score": -1.0})
    # abs_tol: |x - a| <= abs_tol, boundary included (1.0 is exact in binary).
    a = make_reward("numeric", abs_tol=1.0)
    assert a("101", {"answer": 100}).correct and a("99", {"answer": 100}).correct
    assert not a("101.0001", {"answer": 100}).correct
    # rel_tol: |x - a| <= rel_tol * max(|x|, |a|): 101 is within 1% of max(101, 100) = 1.01 ...
    r = make_reward("numeric", rel_tol=0.01)
    assert r("101", {"answer": 100}).correct
    # ... 98.99 is not: |diff| = 1.01 > 0.01 * 100 = 1.0.
    assert not r("98.99", {"answer": 100}).correct
    with pytest.raises(ValueError, match="abs_tol must be a finite number >= 0"):
        make_reward("numeric", abs_tol=-1.0)


def test_numeric_default_tolerance_is_relative_1e_9():
    num = make_reward("numeric")
    # 1e9 + 0.5 vs 1e9: relative difference 5e-10 <= 1e-9 -> correct; 1e9 + 2: 2e-9 -> wrong.
    assert num("1000000000.5", {"answer": 1e9}).correct
    assert not num("1000000002", {"answer": 1e9}).correct


def test_list_answers_accept_any_of_them():
    rec = {"answer": ["Paris", "paris, France"]}
    assert make_reward("exact")("Paris", rec).correct and make_reward("exact")("paris,  France", rec).correct
    assert not make_reward("exact")("Lyon", rec).correct
    assert make_reward(r"regex:is (\w+)")("it is Paris", rec).correct
    num = make_reward("numeric", abs_tol=0.01)
    nums = {"answer": [0.5, "2"]}
    assert num("= 2", nums).correct and num("0.505", nums).correct and not num("1", nums).correct
    with pytest.raises(ValueError, match="empty list"):
        make_reward("exact")("x", {"answer": []})


def test_numeric_answer_must_be_a_number():
    assert numeric_answer(" 1,234 ", where="r") == 1234.0
    for bad in ("abc", "1/2", True, None, [1]):
        with pytest.raises(ValueError, match="is not a number"):
            numeric_answer(bad, where="rec 3")


def test_regex_first_group_of_last_match():
    rx = make_reward(r"regex:answer:\s*(\w+)")
    rec = {"answer": "B"}
    assert rx("answer: A ... final answer: B", rec) == RewardResult(1.0, True, {"answer_score": 1.0, "format_score": 1.0})
    assert rx("answer: B ... answer: A", rec).total == 0.0  # the last match counts
    assert rx("I think B", rec) == RewardResult(0.0, False, {"answer_score": 0.0, "format_score": -1.0})
    # No group: the whole match is compared.
    whole = make_reward(r"regex:\d+")
    assert whole("x 17 y", {"answer": 17}).correct
    assert not whole("x 170 y", {"answer": 17}).correct
    # An optional group that did not take part counts as no match.
    opt = make_reward(r"regex:ans(?:wer=(\d+))?")
    assert opt("ans", {"answer": "1"}).components["format_score"] == -1.0
    assert make_reward(r"regex:(?i)ANSWER=(\w+)", ignore_case=True)("answer=Yes", {"answer": "yes"}).correct
    with pytest.raises(ValueError, match="invalid regular expression"):
        make_reward("regex:(")
    with pytest.raises(ValueError, match="empty pattern"):
        make_reward("regex:")


def test_module_function_rewards(tmp_path, monkeypatch):
    (tmp_path / "user_rewards_mod.py").write_text(textwrap.dedent("""
        from polab.scaled.tasks import RewardResult

        def length(response, record):
            return float(len(response) == record["n"])

        def graded(response, record):
            return RewardResult(0.5, False, {"style": 1.0})

        def bad(response, record):
            return "high"

        NOT_A_FUNCTION = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    f = make_reward("user_rewards_mod:length")
    assert f("abc", {"n": 3}) == RewardResult(1.0, True)
    assert f("ab", {"n": 3}) == RewardResult(0.0, False)
    assert make_reward("user_rewards_mod:graded")("x", {}).components == {"style": 1.0}
    with pytest.raises(ValueError, match="reward function 'user_rewards_mod:bad' returned str 'high'"):
        make_reward("user_rewards_mod:bad")("x", {})
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        make_reward("user_rewards_mod:missing")
    with pytest.raises(ValueError, match="is a int, not a function"):
        make_reward("user_rewards_mod:NOT_A_FUNCTION")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'.*PYTHONPATH"):
        make_reward("no_such_module_xyz:f")
    # A path to a .py file works without sys.path.
    path_f = make_reward(f"{tmp_path / 'user_rewards_mod.py'}:length")
    assert path_f("abcd", {"n": 4}).correct
    with pytest.raises(ValueError, match="does not exist"):
        make_reward(f"{tmp_path / 'nope.py'}:length")
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match="loading .*broken_mod.py' failed: RuntimeError: boom"):
        make_reward(f"{tmp_path / 'broken_mod.py'}:f")
    sys.modules.pop("user_rewards_mod", None)


def test_callable_reward_and_unknown_names():
    f = make_reward(lambda response, record: 2.0)
    assert f("", {}) == RewardResult(2.0, True)
    with pytest.raises(ValueError, match="must be finite"):
        make_reward(lambda response, record: math.nan)("", {})
    with pytest.raises(ValueError, match=r"unknown reward 'fuzzy'; use one of \['exact', 'numeric', 'regex:PATTERN'\]"):
        make_reward("fuzzy")
    with pytest.raises(ValueError, match="write 'module:function'"):
        make_reward("module:")
