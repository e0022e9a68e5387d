"""polab.scaled.config: dataclass -> command line and config files, on small dataclasses of this file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from polab.scaled import config as C


@dataclass
class Optim:
    """Optimiser settings."""

    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled; 1% is 0.01"})


@dataclass
class Schedule:
    """Learning-rate schedule."""

    warmup: int = 0
    kind: Literal["constant", "cosine"] = "constant"


@dataclass
class Outer:
    """Nested twice: outer -> optim, outer -> inner -> schedule."""

    optim: Optim = field(default_factory=Optim)
    schedule: Schedule = field(default_factory=lambda: Schedule(warmup=5))


@dataclass
class Toy:
    """A toy trainer config."""

    name: str = field(default="toy", metadata={"help": "run name"})
    steps: int = field(default=10, metadata={"help": "optimizer steps"})
    temperature: float = 1.0
    mode: Literal["fast", "exact"] = "fast"
    engine: str = field(default="hf", metadata={"choices": ("hf", "vllm"), "help": "sampler"})
    levels: tuple[int, ...] = (3, 4)
    tags: tuple[str, ...] = field(default=(), metadata={"choices": ("x,y", "z", "w")})
    flag: bool = True
    verbose: bool = False
    dual_clip: Optional[float] = None
    max_items: int | None = 7
    out: Path = Path("runs/toy")
    secret: str = field(default="hidden", metadata={"cli": False, "help": "never on the command line"})
    optim: Optim = field(default_factory=Optim)
    maybe: Optional[Schedule] = None  # an optional nested dataclass: config files only


@dataclass
class SpoChain:
    """SPO-chain options."""

    threshold: float = 0.9
    mc_samples: int = 2
    probability_mask: bool = True


@dataclass
class Pcpg:
    """PCPG options."""

    kernel: Literal["uniform", "gaussian"] = "uniform"


PRESETS = {
    "small": {"steps": 3, "levels": [1, 2], "optim": {"lr": 0.5}, "methods": {"spo-chain": {"mc_samples": 4}}},
    "big": {"steps": 300, "temperature": 0.7},
}
GROUPS = {"spo-chain.": SpoChain, "pcpg.": Pcpg}


def parse(argv, **kw):
    kw.setdefault("prog", "toy")
    kw.setdefault("presets", PRESETS)
    kw.setdefault("default_preset", None)
    kw.setdefault("groups", GROUPS)
    return C.parse_config(Toy, argv, **kw)


def usage_error(capsys, argv, **kw) -> str:
    """The stderr of a command line that must exit 2 with a one-line error."""
    with pytest.raises(SystemExit) as exc:
        parse(argv, **kw)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("toy: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def help_text(capsys, argv=(), **kw) -> str:
    with pytest.raises(SystemExit) as exc:
        parse([*argv, "--help"], **kw)
    assert exc.value.code == 0
    return capsys.readouterr().out


# -- command line ----------------------------------------------------------------


def test_defaults_without_arguments():
    cfg, groups = parse([])
    assert cfg == Toy()
    assert groups == {"spo-chain.": SpoChain(), "pcpg.": Pcpg()}


def test_every_field_type_from_the_command_line():
    cfg, groups = parse([
        "--name", "a", "--steps", "5", "--temperature", "0.5", "--mode", "exact", "--engine", "vllm",
        "--levels", "5", "6,7", "--tags", "x,y", "z", "--no-flag", "--verbose", "--dual-clip", "3",
        "--max-items", "none", "--out", "/tmp/o", "--optim.lr", "0.25", "--optim.betas", "0.5", "0.75",
        "--optim.weight-decay", "0.1", "--spo-chain.threshold", "0.3", "--spo-chain.no-probability-mask",
        "--pcpg.kernel", "gaussian",
    ])
    assert cfg == Toy(
        name="a", steps=5, temperature=0.5, mode="exact", engine="vllm", levels=(5, 6, 7), tags=("x,y", "z"),
        flag=False, verbose=True, dual_clip=3.0, max_items=None, out=Path("/tmp/o"),
        optim=Optim(lr=0.25, betas=(0.5, 0.75), weight_decay=0.1),
    )
    assert isinstance(cfg.levels, tuple) and isinstance(cfg.dual_clip, float)
    assert groups == {"spo-chain.": SpoChain(threshold=0.3, probability_mask=False), "pcpg.": Pcpg(kernel="gaussian")}


def test_a_bare_list_option_empties_the_list():
    cfg, _ = parse(["--preset", "small", "--levels"])
    assert cfg.levels == () and PRESETS["small"]["levels"] == [1, 2]


def test_hidden_field_has_no_option_but_keeps_its_value(capsys, tmp_path):
    assert "--secret" not in help_text(capsys)
    assert "--secret" in usage_error(capsys, ["--secret", "x"])  # argparse: unrecognized arguments: --secret x
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"secret": "from-file"}))
    cfg, _ = parse(["--config", str(path)])
    assert cfg.secret == "from-file"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--steps", "1.5"], "argument --steps: expected int, got '1.5'"),
        (["--temperature", "hot"], "argument --temperature: expected float, got 'hot'"),
        (["--mode", "slow"], "argument --mode: invalid choice: 'slow'"),
        (["--engine", "tgi"], "argument --engine: invalid choice: 'tgi'"),
        (["--levels", "1", "x"], "argument --levels: expected int, got 'x'"),
        (["--optim.betas", "0.1"], "argument --optim.betas: expected 2 arguments"),
        (["--dual-clip", "big"], "argument --dual-clip: expected float or none, got 'big'"),
        (["--pcpg.kernel", "box"], "argument --pcpg.kernel: invalid choice: 'box'"),
        (["--tags", "z", "q"], "argument --tags: invalid choice: 'q' (choose from x,y, z, w)"),
        (["--stepz", "3"], "unrecognized arguments: --stepz 3"),
    ],
)
def test_bad_option_values_exit_2_with_one_line(capsys, argv, needle):
    assert needle in usage_error(capsys, argv)


def test_add_dataclass_arguments_on_a_plain_parser_with_prefix():
    parser = argparse.ArgumentParser()
    C.add_dataclass_arguments(parser, Outer, defaults={"schedule": {"kind": "cosine"}}, prefix="run.")
    ns = parser.parse_args(["--run.optim.lr", "0.1"])
    got = C.dataclass_from_namespace(Outer, ns, prefix="run.")
    # the outer field's default_factory (warmup=5) survives a partial defaults mapping
    assert got == Outer(optim=Optim(lr=0.1), schedule=Schedule(warmup=5, kind="cosine"))
    titles = [g.title for g in parser._action_groups]
    assert "run.optim (Optim)" in titles and "run.schedule (Schedule)" in titles


# -- precedence --------------------------------------------------------------------


def test_precedence_field_default_preset_file_command_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"steps": 20, "name": "file", "optim": {"weight_decay": 0.01},
                                "methods": {"spo-chain": {"threshold": 0.5}}}))
    # preset only
    cfg, groups = parse(["--preset", "small"])
    assert (cfg.steps, cfg.name, cfg.levels, cfg.optim.lr, cfg.temperature) == (3, "toy", (1, 2), 0.5, 1.0)
    assert groups["spo-chain."] == SpoChain(mc_samples=4)
    # preset <- file
    cfg, groups = parse(["--preset", "small", "--config", str(path)])
    assert (cfg.steps, cfg.name, cfg.levels, cfg.optim.lr, cfg.optim.weight_decay) == (20, "file", (1, 2), 0.5, 0.01)
    assert groups["spo-chain."] == SpoChain(threshold=0.5, mc_samples=4)
    # preset <- file <- command line (whatever the order of the options)
    cfg, groups = parse(["--steps", "99", "--config", str(path), "--preset", "small", "--spo-chain.mc-samples", "8"])
    assert (cfg.steps, cfg.name, cfg.optim.lr) == (99, "file", 0.5)
    assert groups["spo-chain."] == SpoChain(threshold=0.5, mc_samples=8)
    # the default preset applies when --preset is absent
    cfg, _ = parse([], default_preset="big")
    assert (cfg.steps, cfg.temperature) == (300, 0.7)


def test_a_dict_field_is_replaced_whole_by_a_later_layer(tmp_path):
    """A ``dict`` field is one value (a run record must replay exactly); nested dataclasses merge key by key."""
    presets = {"p": {"model": "m", "extra": {"a": 1}, "pair": [2, "b"]}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"extra": {"b": 2}}))
    cfg, _ = C.parse_config(Misc, ["--preset", "p", "--config", str(path)], prog="toy", presets=presets)
    assert cfg == Misc(model="m", extra={"b": 2}, pair=(2, "b"))


def test_a_layer_need_not_be_valid_alone(tmp_path):
    """Only the final combination is built: a file may set low > high when the command line then raises high."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"low": 2.0}))
    cfg, _ = C.parse_config(Checked, ["--config", str(path), "--high", "3"], prog="toy")
    assert cfg == Checked(low=2.0, high=3.0)


def test_help_shows_effective_defaults(capsys, tmp_path):
    text = help_text(capsys, ["--preset", "small"])
    assert re.search(r"--steps N\s+optimizer steps \(default: 3\)", text)
    assert re.search(r"--optim\.lr X\s+learning rate \(default: 0\.5\)", text)
    assert "decoupled; 1% is 0.01 (default: 0.0)" in text  # a % in the help is not an argparse format
    assert re.search(r"--spo-chain\.mc-samples N\s+\(default: 4\)", text)
    assert re.search(r"--levels \[N \.\.\.\]\s+\(default: 1 2\)", text)
    path = tmp_path / "c.yaml"
    path.write_text("steps: 42\nflag: false\ndual_clip: 3.0\n")
    text = help_text(capsys, ["--preset", "small", "--config", str(path)])
    assert "(default: 42)" in text
    assert re.search(r"--flag / --no-flag\s+\(default: False\)", text)
    assert re.search(r"--dual-clip X\|none\s+\(default: 3\.0\)", text)
    assert "(default: None)" not in text.replace("--max-items", "")  # only a field whose value is None says None
    for title in ("Toy options:", "optim (Optim):", "spo-chain (SpoChain):", "pcpg (Pcpg):"):
        assert title in text


def test_help_lists_every_field_exactly_once(capsys):
    text = help_text(capsys)
    expected = []
    for f in dataclasses.fields(Toy):
        if f.name == "optim":
            expected += [f"--optim.{g.name.replace('_', '-')}" for g in dataclasses.fields(Optim)]
        elif f.name not in ("secret", "maybe"):  # cli=False, and an Optional nested dataclass (config files only)
            expected.append("--" + f.name.replace("_", "-"))
    for prefix, cls in GROUPS.items():
        expected += [f"--{prefix}{g.name.replace('_', '-')}" for g in dataclasses.fields(cls)]
    # option names as they start a help entry (not in the usage line)
    listed = re.findall(r"^\s{2}(--[\w.-]+)", text, flags=re.M)
    assert sorted(listed) == sorted(expected + ["--preset", "--config"])  # "-h, --help" starts with -h
    assert "Config files only: secret, maybe." in " ".join(text.split())


# -- config files ------------------------------------------------------------------


def test_round_trip_through_a_run_record(tmp_path):
    cfg = Toy(name="r", steps=4, levels=(9,), tags=("w", "z"), flag=False, dual_clip=2.5, max_items=None,
              out=Path("x/y"), secret="s2", optim=Optim(lr=0.01, betas=(0.1, 0.2)), maybe=Schedule(warmup=2, kind="cosine"))
    groups = {"spo-chain.": SpoChain(threshold=0.7, probability_mask=False), "pcpg.": Pcpg(kernel="gaussian")}
    record = C.config_record(cfg, groups, extra={"task": "jsonl:data/x.jsonl"})
    assert set(record) >= {"provenance", "methods", "task"}
    path = tmp_path / "run" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(record, indent=2))
    cfg2, groups2 = parse(["--config", str(path)], default_preset="big")  # the file overrides the preset
    assert cfg2 == cfg
    assert groups2 == groups
    assert C.config_to_dict(cfg2) == C.config_to_dict(cfg)
    # a run folder instead of its config.json: a clear error pointing at the file
    with pytest.raises(ValueError, match=r"is a folder; give the config.json inside it: --config .*run/config.json"):
        C.load_config_file(path.parent)


def test_config_folder_error_on_the_command_line(capsys, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    line = usage_error(capsys, ["--config", str(tmp_path)])
    assert "is a folder" in line and str(tmp_path / "config.json") in line


def test_yaml_and_toml_files(tmp_path):
    y = tmp_path / "c.yml"
    y.write_text("steps: 6\ntemperature: 1e-3\nlevels: [1, 2, 3]\noptim:\n  lr: 2e-5\nmethods:\n  pcpg:\n    kernel: gaussian\n")
    cfg, groups = parse(["--config", str(y)])
    # PyYAML (YAML 1.1) alone reads 1e-3 as a string; polab's loader reads it as a float
    assert (cfg.steps, cfg.temperature, cfg.levels, cfg.optim.lr) == (6, 1e-3, (1, 2, 3), 2e-5)
    assert groups["pcpg."] == Pcpg(kernel="gaussian")
    t = tmp_path / "c.toml"
    t.write_text('steps = 8\nmode = "exact"\n[optim]\nbetas = [0.2, 0.3]\n[methods.spo-chain]\nthreshold = 0.25\n')
    cfg, groups = parse(["--config", str(t)])
    assert (cfg.steps, cfg.mode, cfg.optim.betas) == (8, "exact", (0.2, 0.3))
    assert groups["spo-chain."].threshold == 0.25


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        ("bad.json", '{\n  "steps": 3,\n  "name": \n}', r"line 4 column 1: invalid JSON: Expecting value"),
        ("bad.yaml", "steps: 3\nname: [unclosed\n", r"line 3 column 1: invalid YAML"),
        ("bad.toml", "steps = 3\nname = \n", r"invalid TOML: .*line 2"),
        ("list.json", "[1, 2]", r"top level must be a mapping"),
        ("c.ini", "steps=3", r"unsupported suffix '.ini'"),
    ],
)
def test_malformed_files(tmp_path, name, text, pattern):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern) as exc:
        C.load_config_file(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file(capsys, tmp_path):
    assert "not found" in usage_error(capsys, ["--config", str(tmp_path / "nope.json")])


def test_unknown_and_mistyped_keys_in_a_file(capsys, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"stepz": 3}))
    line = usage_error(capsys, ["--config", str(path)])
    assert "unknown config key 'stepz'" in line and "did you mean 'steps'" in line and str(path) in line
    path.write_text(json.dumps({"optim": {"lrr": 3}}))
    assert "unknown config key 'optim.lrr'" in usage_error(capsys, ["--config", str(path)])
    path.write_text(json.dumps({"steps": "ten"}))
    line = usage_error(capsys, ["--config", str(path)])
    assert "config key 'steps': expected int, got 'ten' (str)" in line
    path.write_text(json.dumps({"methods": {"spo-chian": {"threshold": 1}}}))
    line = usage_error(capsys, ["--config", str(path)])
    assert "unknown config key 'methods.spo-chian'" in line and "did you mean 'methods.spo-chain'" in line
    path.write_text(json.dumps({"methods": {"pcpg": {"kernel": "box"}}}))
    assert "'box' is not one of 'uniform', 'gaussian'" in usage_error(capsys, ["--config", str(path)])


def test_unknown_preset_lists_the_presets(capsys):
    line = usage_error(capsys, ["--preset", "huge"])
    assert "unknown preset 'huge'; choose one of big, small" in line


# -- config_from_dict / config_to_dict / merge_dicts ------------------------------------


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"steps": True}, "'steps': expected int, got True (bool)"),
        ({"steps": 2.0}, "'steps': expected int, got 2.0 (float)"),
        ({"flag": 1}, "'flag': expected bool, got 1 (int)"),
        ({"temperature": "1"}, "'temperature': expected float, got '1' (str)"),
        ({"mode": "slow"}, "'mode': 'slow' is not one of 'fast', 'exact'"),
        ({"engine": "tgi"}, "'engine': 'tgi' is not one of 'hf', 'vllm'"),
        ({"levels": 3}, "'levels': expected a list of int, got 3 (int)"),
        ({"levels": [1, "2"]}, "'levels[1]': expected int, got '2' (str)"),
        ({"optim": {"betas": [1.0]}}, "'optim.betas': expected a list of 2 values"),
        ({"dual_clip": "x"}, "'dual_clip': expected float or None, got 'x' (str)"),
        ({"optim": 3}, "'optim': expected Optim, got 3 (int)"),
        ({"maybe": {"kind": "linear"}}, "config key 'maybe.kind': 'linear' is not one of 'constant', 'cosine'"),
        ({"temprature": 1.0}, "unknown config key 'temprature' for Toy; did you mean 'temperature'?"),
        ({"zzz": 1}, "unknown config key 'zzz' for Toy; valid keys: dual_clip, engine,"),
    ],
)
def test_config_from_dict_errors(d, message):
    with pytest.raises(ValueError) as exc:
        C.config_from_dict(Toy, d)
    assert message in str(exc.value)


def test_config_from_dict_lenient_and_conversions():
    cfg = C.config_from_dict(Toy, {"steps": 2, "temperature": 1, "out": "a/b", "levels": [1], "zzz": 0}, strict=False)
    assert cfg == Toy(steps=2, temperature=1.0, out=Path("a/b"), levels=(1,))
    assert isinstance(cfg.temperature, float) and isinstance(cfg.levels, tuple)


def test_config_to_dict_is_json_safe_and_inverts():
    cfg = Toy(out=Path("p"), levels=(1, 2), optim=Optim(betas=(0.5, 0.6)))
    d = C.config_to_dict(cfg)
    assert d["out"] == "p" and d["levels"] == [1, 2] and d["optim"] == {"lr": 1e-3, "betas": [0.5, 0.6], "weight_decay": 0.0}
    assert C.config_from_dict(Toy, json.loads(json.dumps(d))) == cfg
    with pytest.raises(TypeError, match="config key 'name': a object cannot be written"):
        C.config_to_dict(Toy(name=object()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"config key 'optim\.betas\[1\]': a object cannot be written"):
        C.config_to_dict(Toy(optim=Optim(betas=(0.1, object()))))  # type: ignore[arg-type]


def test_merge_dicts_recurses_and_copies():
    base = {"a": 1, "n": {"x": 1, "y": 2}}
    over = {"n": {"y": 3}, "b": [1]}
    assert C.merge_dicts(base, over) == {"a": 1, "n": {"x": 1, "y": 3}, "b": [1]}
    assert base == {"a": 1, "n": {"x": 1, "y": 2}}


# -- provenance --------------------------------------------------------------------------


def test_provenance_fields():
    import importlib.util
    import platform

    import numpy

    import polab

    p = C.provenance()
    assert p["polab"] == polab.__version__
    assert p["python"] == platform.python_version()
    assert p["numpy"] == numpy.__version__
    # torch's own version.py (read, not imported: importing torch takes seconds) agrees with the metadata read
    spec = importlib.util.find_spec("torch")
    version_py = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    assert f"__version__ = '{p['torch']}'" in version_py
    json.dumps(p)
    checkout = Path(polab.__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True)
    if head.returncode == 0:
        assert p["git_commit"] == head.stdout.strip() and isinstance(p["git_dirty"], bool)
    else:
        assert p["git_commit"] is None and p["git_dirty"] is None


def test_provenance_outside_a_checkout(monkeypatch, tmp_path):
    """With git absent (or failing) provenance still returns, commit and dirty flag None."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable on PATH
    p = C.provenance()
    assert p["git_commit"] is None and p["git_dirty"] is None and p["polab"]


def test_transformers_version_read_without_importing(monkeypatch):
    import importlib.metadata
    import sys

    monkeypatch.delitem(sys.modules, "transformers", raising=False)
    try:
        expected = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        expected = None
    assert C.provenance()["transformers"] == expected
    assert "transformers" not in sys.modules


# -- edge cases of the two-phase parse ------------------------------------------------------


@dataclass
class Checked:
    """A config whose __post_init__ rejects a combination (as trainers' validate() does)."""

    low: float = 0.0
    high: float = 1.0

    def __post_init__(self):
        if self.low > self.high:
            raise ValueError(f"invalid configuration:\n  - low ({self.low}) must not exceed high ({self.high})")


def test_post_init_errors_become_one_line_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        C.parse_config(Checked, ["--low", "2"], prog="toy", presets={}, default_preset=None)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "toy: error: invalid configuration: - low (2.0) must not exceed high (1.0)" in err.splitlines()


def test_config_without_value_and_abbreviations(capsys):
    assert "argument --config: expected one argument" in usage_error(capsys, ["--config"])
    # no prefix matching: --temp is not --temperature, --conf is not --config
    assert "unrecognized arguments: --temp 0.5" in usage_error(capsys, ["--temp", "0.5"])
    assert "unrecognized arguments: --conf x.json" in usage_error(capsys, ["--conf", "x.json"])


def test_preset_may_hold_dataclass_instances(tmp_path):
    presets = {"inst": {"optim": Optim(lr=0.2, weight_decay=0.3), "methods": {"pcpg": Pcpg(kernel="gaussian")}}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"optim": {"lr": 0.4}}))
    cfg, groups = parse(["--preset", "inst", "--config", str(path)], presets=presets)
    assert cfg.optim == Optim(lr=0.4, weight_decay=0.3)  # the file's partial optim merges into the preset's instance
    assert groups["pcpg."] == Pcpg(kernel="gaussian")


def test_methods_without_groups_and_unresolvable_annotations(capsys, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"methods": {"x": {}}}))
    line = usage_error(capsys, ["--config", str(path)], groups=None)
    assert "unknown config key 'methods.x' for the method groups; there are none" in line

    class Local:
        pass

    @dataclass
    class UsesLocal:
        thing: Local = None  # type: ignore[assignment]

    with pytest.raises(TypeError, match="cannot resolve the annotation 'Local' of field 'thing' of UsesLocal"):
        C.parse_config(UsesLocal, [], prog="toy")


def test_record_extra_replaces_an_object_valued_field(tmp_path):
    """A trainer given a Python object records the string that rebuilds it; the replay reads the string."""
    cfg = Toy(name=object())  # type: ignore[arg-type]
    record = C.config_record(cfg, extra={"name": "spec:rebuilt"})
    assert record["name"] == "spec:rebuilt" and "methods" not in record
    path = tmp_path / "config.json"
    path.write_text(json.dumps(record))
    replay, groups = parse(["--config", str(path)])
    assert replay == Toy(name="spec:rebuilt") and groups == {"spo-chain.": SpoChain(), "pcpg.": Pcpg()}


def test_provenance_ignores_a_foreign_repository(monkeypatch, tmp_path):
    """polab installed inside another project's git repository does not report that project's commit."""
    calls = []

    def fake_git(args, cwd, timeout):
        calls.append(args)
        return str(tmp_path) if args == ["rev-parse", "--show-toplevel"] else "f" * 40

    monkeypatch.setattr(C, "_git", fake_git)
    p = C.provenance()
    assert p["git_commit"] is None and p["git_dirty"] is None
    assert calls == [["rev-parse", "--show-toplevel"]]  # tmp_path holds no polab/__init__.py: HEAD is never asked


def test_run_record_extra_keys_and_underscore_group_names(capsys, tmp_path):
    """A run that records more top-level keys replays when it names them in ignore_keys; otherwise a clear error."""
    record = {"steps": 5, "world_size": 2, "model_source": "tiny", "provenance": {"polab": "0"},
              "methods": {"spo_chain": {"threshold": 0.4}}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(record))
    cfg, groups = parse(["--config", str(path)], ignore_keys=("world_size", "model_source"))
    assert cfg == Toy(steps=5) and groups["spo-chain."] == SpoChain(threshold=0.4)
    line = usage_error(capsys, ["--config", str(path)])
    assert "unknown config key 'world_size' for Toy" in line and "ignore_keys" in line


@dataclass
class WithMethods:
    """A config that keeps per-method options in its own ``methods`` field."""

    advantage: str = "grpo"
    methods: dict = field(default_factory=dict, metadata={"cli": False})


def test_config_with_its_own_methods_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"advantage": "spo-chain", "methods": {"spo-chain": {"threshold": 0.3}, "rloo": {}},
                                "provenance": {}}))
    cfg, groups = C.parse_config(WithMethods, ["--config", str(path), "--spo-chain.mc-samples", "5"], prog="toy",
                                 groups={"spo-chain.": SpoChain})
    assert cfg.methods == {"spo-chain": {"threshold": 0.3}, "rloo": {}}  # the field keeps the whole mapping
    assert groups["spo-chain."] == SpoChain(threshold=0.3, mc_samples=5)  # the group reads its entry


@dataclass
class Misc:
    """Field kinds the Toy config does not have."""

    model: str  # required: no default
    extra: dict = field(default_factory=dict, metadata={"help": "JSON object"})
    weights: list[float] = field(default_factory=lambda: [1.0])
    kernel: Optional[Literal["box", "tri"]] = None
    pair: tuple[int, str] = (1, "a")


def test_required_dict_list_optional_literal_and_mixed_tuple(capsys):
    cfg, groups = C.parse_config(Misc, ["--model", "m", "--extra", '{"k": [1, 2]}', "--weights", "0.5,2", "--kernel", "tri",
                                        "--pair", "3", "b"], prog="toy")
    assert cfg == Misc(model="m", extra={"k": [1, 2]}, weights=[0.5, 2.0], kernel="tri", pair=(3, "b")) and groups == {}
    cfg, _ = C.parse_config(Misc, ["--model", "m", "--kernel", "none"], prog="toy")
    assert cfg.kernel is None and cfg.weights == [1.0]
    for argv, needle in [
        ([], "the following arguments are required: --model"),
        (["--model", "m", "--extra", "{bad"], "argument --extra: expected a JSON object, got '{bad'"),
        (["--model", "m", "--kernel", "gauss"], "argument --kernel: invalid choice: 'gauss'"),
        (["--model", "m", "--pair", "x", "b"], "argument --pair: expected int, got 'x'"),
    ]:
        with pytest.raises(SystemExit) as exc:
            C.parse_config(Misc, argv, prog="toy")
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert needle in err and len([x for x in err.splitlines() if "error:" in x]) == 1, err
    # a config file may supply the required field
    assert C.config_from_dict(Misc, {"model": "f"}).model == "f"
    with pytest.raises(ValueError, match="config for Misc lacks the required key"):
        C.config_from_dict(Misc, {})
