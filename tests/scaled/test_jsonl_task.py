"""Prompt tasks from JSONL files: round trips, distributions, deterministic epoch sampling, clear errors."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap

import numpy as np
import pytest

from polab.scaled.tasks import PromptDatasetTask, PromptTask, RewardResult, build_task, check_task, task_options, task_spec


def write_jsonl(path, records, *, blank_lines=False):
    lines = [json.dumps(r) for r in records]
    if blank_lines:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n")
    return path


RECORDS = [{"prompt": f"What is {i} + {i}?", "answer": 2 * i, "source": "easy" if i < 4 else "hard"} for i in range(10)]


def test_jsonl_round_trip_and_protocol(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS, blank_lines=True)
    task = build_task(f"jsonl:{path}", reward="numeric")
    assert isinstance(task, PromptTask)
    check_task(task)
    assert task_spec(task) == f"jsonl:{path.resolve()}" and task_options(task) == {"reward": "numeric"}
    assert task.distributions == ["easy", "hard"] and (task.size("easy"), task.size("hard")) == (4, 6)
    assert [r.data for r in task.records] == RECORDS  # every field kept, file order
    problem = task.sample("hard", rng=np.random.default_rng(0))
    assert problem.prompt == RECORDS[problem.index]["prompt"] and task.prompt(problem) == problem.prompt
    assert task.reference(problem) == str(problem.answer)
    assert task.reward(f"It is {problem.answer}.", problem).correct
    assert task.reward("It is -1.", problem) == RewardResult(0.0, False, {"answer_score": 0.0, "format_score": 1.0})
    # The spec replays: building from task_spec with the recorded options gives the same task.
    again = build_task(task_spec(task), **task_options(task))
    assert [r.data for r in again.records] == RECORDS and again.distributions == task.distributions


def test_records_without_source_form_one_distribution_and_fields_are_configurable(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "a?", "label": "x"}, {"q": "b?", "label": "y", "kind": "k"}])
    task = build_task(f"jsonl:{path}", prompt_field="q", answer_field="label", source_field="kind")
    assert task.distributions == ["all", "k"]
    p = task.sample("all", rng=np.random.default_rng(1))
    assert (p.prompt, p.answer) == ("a?", "x") and task.reward(" x ", p).correct
    subset = build_task(f"jsonl:{path}", prompt_field="q", answer_field="label", source_field="kind", distributions=["k"])
    assert subset.distributions == ["k"]
    with pytest.raises(ValueError, match=r"distributions must be distinct names among the data's sources \['all', 'k'\]"):
        build_task(f"jsonl:{path}", prompt_field="q", answer_field="label", source_field="kind", distributions=["zzz"])


def test_epoch_sampling_is_without_replacement_and_deterministic(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS)

    def draws(task, n, seed):
        rng = np.random.default_rng(seed)
        return [task.sample("hard", rng=rng).index for _ in range(n)]

    a = draws(build_task(f"jsonl:{path}"), 18, seed=3)
    assert a == draws(build_task(f"jsonl:{path}"), 18, seed=3)  # same generator, same sequence
    hard = {i for i, r in enumerate(RECORDS) if r["source"] == "hard"}
    for epoch in range(3):  # each block of 6 draws is one permutation of the 6 hard records
        assert sorted(a[6 * epoch: 6 * epoch + 6]) == sorted(hard)
    # Each epoch's order is rng.permutation(6) drawn when the epoch starts (module docstring).
    rng = np.random.default_rng(3)
    hard_ix = np.array(sorted(hard))
    expected = [int(i) for _ in range(3) for i in hard_ix[rng.permutation(6)]]
    assert a == expected


def test_state_dict_resumes_the_epoch_exactly(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    rng_seq = [np.random.default_rng(s) for s in range(20)]  # a trainer's per-step generators
    full = build_task(f"jsonl:{path}")
    ref = [full.sample(("easy", "hard")[s % 2], rng=rng_seq[s]).index for s in range(20)]

    rng_seq = [np.random.default_rng(s) for s in range(20)]
    first = build_task(f"jsonl:{path}")
    got = [first.sample(("easy", "hard")[s % 2], rng=rng_seq[s]).index for s in range(7)]
    state = json.loads(json.dumps(first.state_dict()))  # JSON-safe
    resumed = build_task(f"jsonl:{path}")
    resumed.load_state_dict(state)
    got += [resumed.sample(("easy", "hard")[s % 2], rng=rng_seq[s]).index for s in range(7, 20)]
    assert got == ref
    assert resumed.epoch("easy") == full.epoch("easy") == 3  # 10 easy draws over 4 records: epochs 1, 2, 3
    other = build_task(f"jsonl:{write_jsonl(tmp_path / 'o.jsonl', RECORDS[:5])}")
    with pytest.raises(ValueError, match="does not match this data"):
        other.load_state_dict(state)


def test_uniform_sampling_is_stateless(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    task = build_task(f"jsonl:{path}", sampling="uniform")
    rng = np.random.default_rng(5)
    got = [task.sample("easy", rng=rng).index for _ in range(50)]
    rng = np.random.default_rng(5)
    assert got == [int(rng.integers(4)) for _ in range(50)]  # easy records are indices 0..3
    with pytest.raises(ValueError, match="sampling must be one of"):
        build_task(f"jsonl:{path}", sampling="shuffle")


@pytest.mark.parametrize(
    "lines,options,match",
    [
        (['{"prompt": "a", "answer": 1}', '{"question": "b", "answer": 2}'], {},
         r"d.jsonl line 2: missing the prompt field 'prompt' \(fields: \['answer', 'question'\]\)"),
        (['{"prompt": "a"}'], {}, r"line 1: missing the answer field 'answer'.*'exact' reward"),
        (['{"prompt": "a", "answer": "one"}'], {"reward": "numeric"}, r"line 1: the answer 'one' is not a number"),
        (['{"prompt": "", "answer": 1}'], {}, r"line 1: the prompt field 'prompt' must be a non-empty string"),
        (['{"prompt": ["a"], "answer": 1}'], {}, r"line 1: the prompt field 'prompt' must be a non-empty string, got list"),
        (['{"prompt": "a", "answer": 1, "source": 3}'], {}, r"line 1: the source field 'source' must be a non-empty string"),
        (['{"prompt": "a", "answer": 1}', "{not json"], {}, r"line 2: not valid JSON"),
        (['["prompt", "a"]'], {}, r"line 1: each line must be a JSON object"),
        ([""], {}, r"holds no records"),
    ],
)
def test_clear_errors(tmp_path, lines, options, match):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=match):
        build_task(f"jsonl:{path}", **options)


def test_missing_file_and_user_reward_without_answers(tmp_path):
    with pytest.raises(ValueError, match=r"JSONL file '.*nope.jsonl' does not exist"):
        build_task(f"jsonl:{tmp_path / 'nope.jsonl'}")
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Say hi", "target_len": 2}])
    (tmp_path / "my_len_reward.py").write_text("def score(response, record):\n"
                                               "    return float(len(response.split()) == record['target_len'])\n")
    task = build_task(f"jsonl:{path}", reward=f"{tmp_path / 'my_len_reward.py'}:score")  # no answer field needed
    p = task.sample("all", rng=np.random.default_rng(0))
    assert task.reward("hi there", p) == RewardResult(1.0, True) and task.reference(p) == ""
    with pytest.raises(ValueError, match="problem must be a PromptRecord"):
        task.reward("x", {"prompt": "Say hi"})
    with pytest.raises(ValueError, match="unknown source 'hard'"):
        task.sample("hard", rng=np.random.default_rng(0))


def test_python_records_and_callable_reward():
    task = PromptDatasetTask([{"prompt": "p", "answer": "a"}], reward=lambda response, record: 0.25)
    assert task_spec(task) == "python:records" and task.reward("", task.records[0]) == RewardResult(0.25, True)
    with pytest.raises(ValueError, match="record 1: a record must be a dict"):
        PromptDatasetTask(["just a string"])


README_EXAMPLE = '''
import numpy as np
from polab.scaled.tasks import build_task

# data.jsonl: {"prompt": "What is 17 * 23?", "answer": 391, "source": "hard"} (one record per line)
task = build_task("jsonl:data.jsonl", reward="numeric")    # or "exact", "regex:PATTERN", "module:function"
problem = task.sample("hard", rng=np.random.default_rng(0))
print(task.prompt(problem))              # What is 17 * 23?
r = task.reward("17 * 23 = 391", problem)
print(r.total, r.correct, r.components)  # 1.0 True {'answer_score': 1.0, 'format_score': 1.0}
'''


def test_readme_example(tmp_path, monkeypatch):
    """The README's JSONL example runs and prints what its comments say."""
    write_jsonl(tmp_path / "data.jsonl", [{"prompt": "What is 17 * 23?", "answer": 391, "source": "hard"},
                                          {"prompt": "What is 2 + 2?", "answer": 4, "source": "easy"}])
    monkeypatch.chdir(tmp_path)
    code = textwrap.dedent(README_EXAMPLE)
    assert len(code.strip().splitlines()) <= 10
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README example", "exec"), {})
    expected = [line.split("# ", 1)[1] for line in code.splitlines() if line.startswith("print(")]
    assert out.getvalue().splitlines() == expected


def test_list_answers_reference_and_recorded_options(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Capital of France?", "answer": ["Paris", "Paris, France"]}])
    task = build_task(f"jsonl:{path}")
    p = task.sample("all", rng=np.random.default_rng(0))
    assert task.reference(p) == "Paris" and task.reward("Paris, France", p).correct
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "a", "answer": 1}, {"prompt": "b", "answer": [2, "two"]}])
    with pytest.raises(ValueError, match=r"line 2: the answer 'two' is not a number"):
        build_task(f"jsonl:{bad}", reward="numeric")
    with pytest.raises(ValueError, match=r"line 1: the answer is an empty list"):
        build_task(f"jsonl:{write_jsonl(tmp_path / 'e.jsonl', [{'prompt': 'a', 'answer': []}])}")

    def my_reward(response, record):
        return 1.0

    opts = task_options(build_task(f"jsonl:{path}", reward=my_reward, distributions=("all",)))
    assert opts == {"reward": f"python:{__name__}.test_list_answers_reference_and_recorded_options.<locals>.my_reward",
                    "distributions": ["all"]}
    json.dumps(opts)  # JSON-safe for config.json
