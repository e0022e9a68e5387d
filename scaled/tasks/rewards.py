"""Reward functions for prompt datasets, chosen by name.

:func:`make_reward` turns a reward spec into a callable
``(response: str, record: dict) -> RewardResult``; ``record`` is the data
record (its answer under ``answer_field``):

=====================  ======================================================================
spec                   reward
=====================  ======================================================================
``exact``              1 if the response equals the answer after normalisation, else 0
``numeric``            1 if the *last* number in the response is within tolerance of the answer
``regex:PATTERN``      1 if the pattern's first group (whole match when it has no group) of the
                       pattern's *last* match in the response equals the answer
``module:function``    a user function ``(response, record) -> float | RewardResult``
=====================  ======================================================================

An answer field holding a list gives several accepted answers (any one
counts as correct). The three built-in rewards return ``total`` in {0, 1}, ``correct = total == 1``
and ``components = {"answer_score": total}``; ``numeric`` and ``regex`` add
``format_score`` (+1 when a number / a match was found, -1 otherwise, the
arithmetic task's convention), so a trainer's format-rate metric is
meaningful for them.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from .protocol import RewardResult, as_reward_result

__all__ = ["make_reward", "parse_last_number", "normalize_text", "numeric_answer", "answer_texts", "answer_numbers", "RewardFunction", "REWARD_KINDS"]

RewardFunction = Callable[[str, Mapping[str, Any]], RewardResult]

#: The reward specs :func:`make_reward` knows (besides ``module:function``).
REWARD_KINDS = ("exact", "numeric", "regex:PATTERN")

# A number: optional sign, then digits with optional thousands separators (groups of exactly three) or plain
# digits, an optional decimal part, an optional exponent; or a bare decimal part (".5").
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w])"
)


def parse_last_number(text: str) -> float | None:
    """The last number in ``text`` as a float, or None when there is none.

    Accepts signs, decimals, exponents and thousands separators in groups of
    three (``"1,234.5"`` is 1234.5; ``"1,2"`` is two numbers). A number glued
    to letters (``"x2"``, ``"2nd"``) does not count; a final period ends a
    sentence (``"is 12."`` gives 12). Fractions such as ``"1/2"`` give their
    denominator: return a ``module:function`` reward for those.
    """
    last = None
    for m in _NUMBER.finditer(text):
        last = m.group()
    if last is None:
        return None
    return float(last.replace(",", ""))


def normalize_text(text: str, *, normalize_whitespace: bool = True, ignore_case: bool = False) -> str:
    """``text`` with runs of whitespace collapsed to one space and ends stripped, optionally lower-cased."""
    if normalize_whitespace:
        text = " ".join(text.split())
    if ignore_case:
        text = text.casefold()
    return text


def _accepted(value: Any) -> list:
    """An answer field's accepted answers: the items of a list/tuple (several accepted answers), else the value."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("the answer is an empty list; give at least one accepted answer")
        return list(value)
    return [value]


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 42.0 in a JSON file means the answer 42
    return str(value)


def answer_texts(record: Mapping[str, Any], answer_field: str) -> list[str]:
    """Accepted answers of ``record`` as text (a list-valued answer field lists several)."""
    return [_as_text(v) for v in _accepted(record[answer_field])]


def answer_numbers(record: Mapping[str, Any], answer_field: str, *, where: str = "record") -> list[float]:
    """Accepted answers of ``record`` as floats (see :func:`numeric_answer`)."""
    try:
        values = _accepted(record[answer_field])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return [numeric_answer(v, where=where) for v in values]


def _binary(ok: bool, found: bool | None = None) -> RewardResult:
    total = 1.0 if ok else 0.0
    components = {"answer_score": total}
    if found is not None:
        components["format_score"] = 1.0 if found else -1.0
    return RewardResult(total=total, correct=ok, components=components)


def _check_tolerance(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def numeric_answer(value: Any, *, where: str) -> float:
    """The reference answer ``value`` as a float (a number, or a string holding one number); ValueError naming ``where`` otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        x = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        x = float(value.strip().replace(",", ""))
    else:
        raise ValueError(f"{where}: the answer {value!r} is not a number; the 'numeric' reward needs a number "
                         "or a string holding one (or use reward='exact' or 'regex:...')")
    if not math.isfinite(x):
        raise ValueError(f"{where}: the answer {value!r} is not finite")
    return x


def make_reward(
    spec: str | Callable,
    *,
    answer_field: str = "answer",
    normalize_whitespace: bool = True,
    ignore_case: bool = False,
    rel_tol: float = 1e-9,
    abs_tol: float = 0.0,
) -> RewardFunction:
    """A reward callable ``(response, record) -> RewardResult`` for ``spec``.

    Parameters
    ----------
    spec : str or callable
        ``"exact"``, ``"numeric"``, ``"regex:PATTERN"``, ``"module:function"``
        (``module`` importable, or a path to a ``.py`` file), or a callable
        ``(response, record) -> float | RewardResult`` itself.
    answer_field : str
        Key of the reference answer in each record (built-in rewards only).
    normalize_whitespace, ignore_case : bool
        Text comparison of ``exact`` and ``regex`` (both sides normalised
        with :func:`normalize_text`).
    rel_tol, abs_tol : float
        ``numeric``: correct iff ``|x - a| <= max(rel_tol * max(|x|, |a|), abs_tol)``
        (the rule of Python's ``math.isclose``, whose defaults these are;
        boundaries count as correct).

    Returns
    -------
    callable
        Its return value is always a :class:`RewardResult` (a user function's
        float ``x`` becomes ``RewardResult(x, correct=x > 0)``; any other return
        type raises ``ValueError`` naming the function).

    Notes
    -----
    ``numeric`` compares float64 values: integers beyond 2**53 lose digits
    (use ``exact`` for those).

    ``regex``: the pattern is searched (``re.search`` semantics, flags
    inline, e.g. ``(?i)``); the *last* match counts (final answers come
    last), and its group 1 (the whole match if the pattern has no group)
    is compared with the answer as ``exact`` would. A pattern that does not
    match gives 0 with ``format_score = -1``.
    """
    rel_tol = _check_tolerance("rel_tol", rel_tol)
    abs_tol = _check_tolerance("abs_tol", abs_tol)
    norm = dict(normalize_whitespace=bool(normalize_whitespace), ignore_case=bool(ignore_case))

    if callable(spec) and not isinstance(spec, str):
        return _user_reward(spec, getattr(spec, "__qualname__", repr(spec)))
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"reward must be one of {list(REWARD_KINDS)} or 'module:function'; got {spec!r}")

    if spec == "exact":
        def exact(response: str, record: Mapping[str, Any]) -> RewardResult:
            want = {normalize_text(a, **norm) for a in answer_texts(record, answer_field)}
            return _binary(normalize_text(response, **norm) in want)

        exact.needs_answer = "text"
        return exact

    if spec == "numeric":
        def numeric(response: str, record: Mapping[str, Any]) -> RewardResult:
            wants = answer_numbers(record, answer_field, where=f"record field {answer_field!r}")
            got = parse_last_number(response)
            if got is None:
                return _binary(False, found=False)
            return _binary(any(abs(got - w) <= max(rel_tol * max(abs(got), abs(w)), abs_tol) for w in wants), found=True)

        numeric.needs_answer = "number"
        return numeric

    if spec.startswith("regex:"):
        pattern_text = spec[len("regex:"):]
        if not pattern_text:
            raise ValueError("reward 'regex:' has an empty pattern; write e.g. 'regex:answer is (\\S+)'")
        try:
            pattern = re.compile(pattern_text)
        except re.error as exc:
            raise ValueError(f"reward {spec!r}: invalid regular expression ({exc})") from None
        group = 1 if pattern.groups >= 1 else 0

        def regex(response: str, record: Mapping[str, Any]) -> RewardResult:
            last = None
            for last in pattern.finditer(response):
                pass
            if last is None or last.group(group) is None:
                return _binary(False, found=False)
            want = {normalize_text(a, **norm) for a in answer_texts(record, answer_field)}
            return _binary(normalize_text(last.group(group), **norm) in want, found=True)

        regex.needs_answer = "text"
        return regex

    if ":" in spec:
        return _user_reward(_import_function(spec), spec)
    raise ValueError(f"unknown reward {spec!r}; use one of {list(REWARD_KINDS)} or 'module:function' "
                     "(e.g. 'my_rewards:score' or 'path/to/rewards.py:score')")


def _import_function(spec: str) -> Callable:
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name:
        raise ValueError(f"reward {spec!r}: write 'module:function' (e.g. 'my_rewards:score')")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ValueError(f"reward {spec!r}: the file {module_name!r} does not exist")
        name = f"polab_user_reward_{abs(hash(str(path.resolve())))}"
        try:
            file_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[name] = module
            file_spec.loader.exec_module(module)
        except Exception as exc:  # the user's module failed while loading: report it as an input error
            sys.modules.pop(name, None)
            raise ValueError(f"reward {spec!r}: loading {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ValueError(
                f"reward {spec!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc}); "
                "make it importable (install it or add its folder to PYTHONPATH) or give a path 'file.py:function'"
            ) from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise ValueError(f"reward {spec!r}: module {module_name!r} has no attribute {func_name!r}")
    if not callable(func):
        raise ValueError(f"reward {spec!r}: {func_name!r} is a {type(func).__name__}, not a function")
    return func


def _user_reward(func: Callable, where: str) -> RewardFunction:
    def user(response: str, record: Mapping[str, Any]) -> RewardResult:
        return as_reward_result(func(response, record), where=f"reward function {where!r}")

    user.needs_answer = None
    user.__wrapped__ = func
    return user
