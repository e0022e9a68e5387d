"""Configuration files and command lines generated from dataclasses.

A config dataclass is the single source of truth: each field becomes a
command-line option and a config-file key, with its help text, choices and
visibility taken from the field's metadata::

    @dataclass
    class Config:
        lr: float = field(default=1e-5, metadata={"help": "learning rate"})
        mode: Literal["fast", "exact"] = "fast"          # choices from the Literal
        levels: tuple[int, ...] = (1, 2)                   # --levels 1 2 3 (or 1,2,3)
        tensorboard: bool = True                           # --tensorboard / --no-tensorboard
        secret: str = field(default="x", metadata={"cli": False})  # config files only
        optim: OptimConfig = field(default_factory=OptimConfig)   # --optim.weight-decay ...

Metadata keys: ``"help"`` (str), ``"choices"`` (a sequence of allowed values),
``"cli"`` (``False`` hides the field from the command line; config files can
still set it).

Precedence, lowest first: the field defaults, the preset (``--preset NAME``),
the config file (``--config FILE``), the command-line options. The help
(``--help``) shows each option's default after the preset and the config file
given on the same command line are applied.

Config files are JSON, YAML (``.yaml``/``.yml``; needs PyYAML) or TOML
(``.toml``), holding a mapping of field names to values (nested dataclasses as
nested mappings, tuples as lists). Top-level keys a run writes beside the
config (see :func:`config_record`) are read as follows:

- ``"provenance"``: ignored (it describes the run that wrote the file);
- ``"methods"``: a mapping from a method group's name (its prefix without the
  trailing dot, e.g. ``"spo-chain"``; ``spo_chain`` names the same group) to
  that group's field values. When the dataclass itself has a ``methods``
  field, the mapping is also that field's value, its entries that name no
  group are left to the field, and those that do also set the group;
- ``"task"``: a config key like any other when the dataclass has a ``task``
  field; otherwise informational and ignored;
- any key named in ``parse_config(..., ignore_keys=...)`` (what else the run
  records, e.g. ``"world_size"``): ignored unless it is a field.

Any other unknown key is an error naming it and the closest valid keys.

So ``--config runs/x/config.json`` replays run ``x``; options given after it
still override single values.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``pathlib.Path``,
``Literal[...]``, ``Optional[T]`` / ``T | None`` (``none`` or ``null`` on the
command line), ``tuple[T, ...]``, fixed ``tuple[T1, T2]``, ``list[T]``,
``dict`` (a JSON string on the command line) and nested dataclasses. Fields
of any other type are kept in config files and hidden from the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

__all__ = [
    "ConfigHelpFormatter",
    "RUN_RECORD_KEYS",
    "add_dataclass_arguments",
    "build_parser",
    "config_from_dict",
    "config_record",
    "config_to_dict",
    "dataclass_from_namespace",
    "load_config_file",
    "merge_dicts",
    "parse_config",
    "provenance",
]

#: Top-level keys a run writes into its ``config.json`` beside the config fields
#: (see the module docstring for how :func:`parse_config` reads each).
RUN_RECORD_KEYS = ("provenance", "methods", "task")

_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


# -- types ---------------------------------------------------------------------


def _field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's fields (``from __future__ import annotations`` safe).

    Raises
    ------
    TypeError
        When an annotation names something neither the class's module nor ``typing``
        defines (for example a class local to a function).
    """
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # resolve field by field to name the one that fails
        hints = {}
        module = vars(sys.modules.get(cls.__module__, typing))
        for f in dataclasses.fields(cls):
            if not isinstance(f.type, str):
                hints[f.name] = f.type
                continue
            try:
                hints[f.name] = eval(f.type, {**vars(typing), **module}, {})  # noqa: S307 - the class's own annotation
            except Exception as exc:
                raise TypeError(
                    f"cannot resolve the annotation {f.type!r} of field {f.name!r} of {cls.__name__}: {exc}; "
                    "define the types it names at module level"
                ) from None
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``Optional[T]``; ``(tp, False)`` otherwise (other unions unchanged)."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            if len(args) == 1:
                return args[0], True
            return typing.Union[tuple(args)], True
    return tp, False


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    """Readable name of a field type for error messages."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__name__
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        if origin is tuple and args:
            return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    return str(tp)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _wrong(path: str, tp: Any, value: Any, why: str = "") -> ValueError:
    return ValueError(f"config key {path!r}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}){why}")


def _coerce(value: Any, tp: Any, path: str, *, strict: bool) -> Any:
    """``value`` checked against ``tp`` and converted where lossless (list -> tuple, int -> float, str -> Path)."""
    if tp is Any or isinstance(tp, (str, typing.TypeVar)):
        return value
    origin = typing.get_origin(tp)
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _wrong(path, tp, value)
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1 and (_is_dataclass_type(arms[0]) or typing.get_origin(arms[0]) in (Literal, tuple, list)):
            return _coerce(value, arms[0], path, strict=strict)  # T's own message (a nested key, a choice) says more
        for arm in arms:
            try:
                return _coerce(value, arm, path, strict=strict)
            except ValueError:
                continue
        raise _wrong(path, tp, value)
    if origin is Literal:
        for choice in typing.get_args(tp):
            if value == choice and type(value) is type(choice):
                return choice
        raise ValueError(f"config key {path!r}: {value!r} is not one of {', '.join(repr(a) for a in typing.get_args(tp))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong(path, tp, value)
    if isinstance(tp, type) and issubclass(tp, os.PathLike) or tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _wrong(path, tp, value)
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _wrong(path, tp, value)
        args = typing.get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _wrong(path, tp, value, f": {len(value)} values instead of {len(args)}")
            items = [_coerce(v, a, f"{path}[{i}]", strict=strict) for i, (v, a) in enumerate(zip(value, args))]
        else:
            elem = args[0] if args else Any
            items = [_coerce(v, elem, f"{path}[{i}]", strict=strict) for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else list(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _wrong(path, tp, value)
        return dict(value)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _from_dict(tp, value, strict=strict, path=path + ".")
        raise _wrong(path, tp, value)
    return value  # a type this module does not check (kept as given)


# -- dicts <-> dataclasses --------------------------------------------------------


def _jsonable(value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), f"{path}.{f.name}" if path else f.name) for f in dataclasses.fields(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"config key {path!r}: mapping key {k!r} is not a string; JSON needs string keys")
            out[k] = _jsonable(v, f"{path}.{k}")
        return out
    raise TypeError(
        f"config key {path!r}: a {type(value).__name__} cannot be written to a config file; "
        "store a string naming it (for example a spec such as 'jsonl:PATH') instead"
    )


def config_to_dict(obj: Any) -> dict:
    """A dataclass instance as a JSON-safe nested dict.

    Nested dataclasses become dicts, tuples become lists, paths become strings.

    Raises
    ------
    TypeError
        When a field holds a value JSON cannot store (naming the field).
    """
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise TypeError(f"config_to_dict needs a dataclass instance, got {type(obj).__name__}")
    return {f.name: _jsonable(getattr(obj, f.name), f.name) for f in dataclasses.fields(obj)}


def _unknown_key_error(key: str, valid: Sequence[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    if close:
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
    else:
        hint = f"valid keys: {', '.join(sorted(valid))}" if valid else "there are none"
    return ValueError(f"unknown config key {key!r} for {where}; {hint}")


def _partial(cls: type, d: Mapping[str, Any], *, strict: bool, path: str) -> dict:
    """``d`` checked and converted key by key, without building ``cls``.

    Nested dataclass fields stay partial mappings, so that a layer (a preset, a file)
    need not be complete or valid on its own: only the final combination is built.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"config for {cls.__name__} must be a mapping of field names to values, got {type(d).__name__}")
    tps = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in d.items():
        if key not in fields:
            if strict:
                raise _unknown_key_error(f"{path}{key}", [f"{path}{n}" for n in fields], cls.__name__)
            continue
        f = fields[key]
        tp = tps[key]
        if _is_dataclass_type(tp) and not isinstance(value, tp):
            value = _as_mapping(value)
            if not isinstance(value, Mapping):
                raise _wrong(f"{path}{key}", tp, value)
            out[key] = _partial(tp, value, strict=strict, path=f"{path}{key}.")
            continue
        value = _coerce(value, tp, f"{path}{key}", strict=strict)
        choices = f.metadata.get("choices")
        if choices is not None:
            for item in (value if isinstance(value, (tuple, list)) else (value,)):
                if item is not None and item not in tuple(choices):
                    raise ValueError(f"config key {path + key!r}: {item!r} is not one of {', '.join(repr(c) for c in choices)}")
        out[key] = value
    return out


def _merge_layer(cls: type, base: Mapping[str, Any], over: Mapping[str, Any]) -> dict:
    """``base`` updated by the checked partial ``over``: nested dataclass fields merge key by key;
    every other value (a ``dict`` field too: it is one value) is replaced whole."""
    tps = _field_types(cls)
    out = dict(base)
    for k, v in over.items():
        tp = tps.get(k)
        if _is_dataclass_type(tp) and isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge_layer(tp, out[k], v)
        else:
            out[k] = v
    return out


def _from_dict(cls: type, d: Mapping[str, Any], *, strict: bool, path: str) -> Any:
    part = _partial(cls, d, strict=strict, path=path)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    tps = _field_types(cls)
    kwargs = {}
    for key, value in part.items():
        if not fields[key].init:
            continue
        if _is_dataclass_type(tps[key]) and isinstance(value, Mapping):
            # over the field's own default instance (a default_factory may differ from the class defaults)
            fallback = _field_default(fields[key])
            base = _instance_values(fallback) if isinstance(fallback, tps[key]) else {}
            value = _from_dict(tps[key], merge_dicts(base, value), strict=strict, path=f"{path}{key}.")
        kwargs[key] = value
    missing = [n for n, f in fields.items() if f.init and n not in kwargs and _field_default(f) is dataclasses.MISSING]
    if missing:
        raise ValueError(f"config for {cls.__name__} lacks the required key(s) {', '.join(path + m for m in missing)}")
    return cls(**kwargs)


def config_from_dict(cls: type, d: Mapping[str, Any], *, strict: bool = True) -> Any:
    """Build ``cls`` from a (possibly partial) nested dict, checking every value's type.

    Parameters
    ----------
    cls : dataclass type
    d : mapping
        Field name -> value; nested dataclasses as nested mappings; lists for tuples.
        Missing fields take their defaults.
    strict : bool
        Unknown keys raise (``True``) or are ignored (``False``).

    Raises
    ------
    ValueError
        An unknown key (naming it and the closest valid names), a value of the wrong
        type (naming the key, the expected type and the value), a value outside the
        field's choices, or a missing required field.
    """
    return _from_dict(cls, d, strict=strict, path="")


def merge_dicts(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """``base`` updated by ``override``, recursing into values that are mappings on both sides.

    Neither argument is modified.
    """
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = v
    return out


# -- files ---------------------------------------------------------------------------


def _yaml_loader():
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML is in the llm extra
        raise ValueError("reading YAML config files needs PyYAML: pip install pyyaml (or use a .json or .toml file)") from exc

    class _Loader(yaml.SafeLoader):
        """SafeLoader that also reads ``1e-5`` (no dot) as a float, as YAML 1.2 does."""

    _Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return yaml, _Loader


def load_config_file(path: str | os.PathLike) -> dict:
    """The mapping stored in a JSON (``.json``), YAML (``.yaml``, ``.yml``) or TOML (``.toml``) file.

    Raises
    ------
    ValueError
        A missing file, a folder (say which ``config.json`` to give instead), an
        unsupported suffix, a parse error (with the line where the parser gives
        one), or a file whose top level is not a mapping.
    """
    p = Path(path)
    if p.is_dir():
        inside = p / "config.json"
        hint = f"give the config.json inside it: --config {inside}"
        if not inside.is_file():
            hint += " (that folder holds no config.json: is it a run folder?)"
        raise ValueError(f"config file {str(p)!r} is a folder; {hint}")
    if not p.is_file():
        raise ValueError(f"config file {str(p)!r} not found")
    suffix = p.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml", ".toml"):
        raise ValueError(f"config file {str(p)!r}: unsupported suffix {p.suffix or '(none)'!r}; use .json, .yaml, .yml or .toml")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {str(p)!r} cannot be read: {exc}") from exc
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {str(p)!r}, line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from exc
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10: the same parser as the tomli package
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError as exc:
                raise ValueError("reading TOML config files on Python 3.10 needs tomli: pip install tomli (or use .json)") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:  # its message ends with "(at line L, column C)"
            raise ValueError(f"config file {str(p)!r}: invalid TOML: {exc}") from exc
    else:
        yaml, loader = _yaml_loader()
        try:
            data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"config file {str(p)!r}{where}: invalid YAML: {problem}") from exc
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(p)!r}: the top level must be a mapping of option names to values, got {type(data).__name__}")
    return data


# -- provenance ------------------------------------------------------------------------


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(args: list[str], cwd: Path, timeout: float) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def provenance(*, timeout: float = 5.0) -> dict[str, Any]:
    """What produced a run: polab's version and git state, the versions of its main dependencies, Python and the platform.

    Returns
    -------
    dict
        ``polab`` (version), ``git_commit`` (``None`` outside a git checkout of polab),
        ``git_dirty`` (tracked files modified; ``None`` outside a checkout), ``python``,
        ``platform``, and ``torch``, ``transformers``, ``numpy`` (installed versions, read
        from the package metadata without importing them; ``None`` when not installed).

    Notes
    -----
    The commit is only reported when polab itself is the checkout's package (the
    checkout's ``polab/__init__.py`` is the imported one), so a polab installed into a
    virtual environment inside some other repository does not report that repository's commit.
    """
    import polab

    pkg_init = Path(polab.__file__).resolve()
    commit = dirty = None
    top = _git(["rev-parse", "--show-toplevel"], pkg_init.parent, timeout)
    if top:
        candidate = Path(top) / "polab" / "__init__.py"
        if candidate.is_file() and candidate.resolve() == pkg_init:
            commit = _git(["rev-parse", "HEAD"], Path(top), timeout)
            if commit is not None:
                status = _git(["status", "--porcelain", "--untracked-files=no"], Path(top), timeout)
                dirty = None if status is None else bool(status)
    return {
        "polab": polab.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": _dist_version("torch"),
        "transformers": _dist_version("transformers"),
        "numpy": _dist_version("numpy"),
    }


def config_record(cfg: Any, groups: Mapping[str, Any] | None = None, *, extra: Mapping[str, Any] | None = None) -> dict:
    """What a run writes to its ``config.json``: the config, its method groups and its provenance.

    ``parse_config(cls, ["--config", "config.json"], groups=...)`` reads the record
    back to the same config and group instances.

    Parameters
    ----------
    cfg : dataclass instance
    groups : mapping, optional
        Group prefix (as given to :func:`parse_config`, e.g. ``"spo-chain."``) -> instance;
        written under ``"methods"`` keyed by the prefix without its trailing dot.
    extra : mapping, optional
        Further top-level keys (for example ``"task"``: the task's spec string). A key
        that is also a field replaces the field's value in the record (so a field that
        holds an object, such as a task given as a Python object, can be recorded as
        the string that rebuilds it).
    """
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"config_record needs a dataclass instance, got {type(cfg).__name__}")
    extra = dict(extra or {})
    rec = {f.name: _jsonable(getattr(cfg, f.name), f.name) for f in dataclasses.fields(cfg) if f.name not in extra}
    for key in ("provenance", "methods"):
        if key in rec:
            raise ValueError(f"config field {key!r} collides with a key config_record writes; rename the field")
    if groups:
        rec["methods"] = {_group_name(p): config_to_dict(g) for p, g in groups.items()}
    for k, v in extra.items():
        rec[k] = _jsonable(v, k)
    rec["provenance"] = provenance()
    return rec


# -- command line ----------------------------------------------------------------------


def _dest(prefix: str, name: str) -> str:
    return (prefix + name).replace("-", "_")


def _option(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _group_name(prefix: str) -> str:
    return prefix[:-1] if prefix.endswith(".") else prefix


def _show(value: Any) -> str:
    """A default as one would type it on the command line."""
    if value is dataclasses.MISSING:
        return "required"
    if isinstance(value, (tuple, list)):
        return " ".join(_show(v) for v in value) if value else "(empty)"
    if isinstance(value, Mapping):
        return json.dumps(_jsonable(value, ""))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value == "":
        return "''"
    return str(value)


def _scalar_parser(tp: Any):
    """A function str -> value for a scalar type, raising ArgumentTypeError with a one-line message."""
    tp, optional = _strip_optional(tp)
    origin = typing.get_origin(tp)

    def convert(s: str):
        if optional and s.lower() in _NONE_WORDS:
            return None
        try:
            if tp is bool:
                low = s.lower()
                if low in _TRUE_WORDS:
                    return True
                if low in _FALSE_WORDS:
                    return False
                raise ValueError
            if tp is int:
                return int(s)
            if tp is float:
                return float(s)
            if origin is Literal:
                for choice in typing.get_args(tp):
                    if s == str(choice):
                        return choice
                return s  # argparse's choices check names the allowed values
            if origin is dict or tp is dict:
                value = json.loads(s)
                if not isinstance(value, dict):
                    raise ValueError
                return value
            if tp is Path or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
                return Path(s)
            return s
        except ValueError:
            what = "a JSON object" if (origin is dict or tp is dict) else _type_name(tp)
            raise argparse.ArgumentTypeError(f"expected {what}{' or none' if optional else ''}, got {s!r}") from None

    return convert


class _BoolAction(argparse.Action):
    """``--x`` sets True, ``--no-x`` sets False (option_strings is ``[positive, negative]``).

    With a prefix the negation follows it: ``--optim.amsgrad / --optim.no-amsgrad``.
    """

    def __init__(self, option_strings, dest, default=None, required=False, help=None):
        super().__init__(option_strings=option_strings, dest=dest, nargs=0, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string != self.option_strings[1])

    def format_usage(self):
        return " | ".join(self.option_strings)


class _SequenceAction(argparse.Action):
    """Collects a tuple/list option: values are separate words, or comma-separated for numbers."""

    def __init__(self, option_strings, dest, *, item_types, variadic, sequence_type, optional, split_commas,
                 item_choices=None, **kwargs):
        self.item_types = item_types
        self.item_choices = None if item_choices is None else tuple(item_choices)
        self.variadic = variadic
        self.sequence_type = sequence_type
        self.optional = optional
        self.split_commas = split_commas
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        words = list(values)
        if self.optional and len(words) == 1 and words[0].lower() in _NONE_WORDS:
            setattr(namespace, self.dest, None)
            return
        if self.split_commas:
            words = [w for word in words for w in word.split(",") if w != ""]
        if not self.variadic and len(words) != len(self.item_types):
            raise argparse.ArgumentError(self, f"expected {len(self.item_types)} values, got {len(words)}")
        out = []
        for i, w in enumerate(words):
            conv = _scalar_parser(self.item_types[0] if self.variadic else self.item_types[i])
            try:
                out.append(conv(w))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentError(self, str(exc)) from None
            if self.item_choices is not None and out[-1] not in self.item_choices:
                raise argparse.ArgumentError(self, f"invalid choice: {w!r} (choose from {', '.join(map(str, self.item_choices))})")
        setattr(namespace, self.dest, self.sequence_type(out))


def _cli_supported(tp: Any) -> bool:
    tp, _ = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp in (bool, int, float, str, Path, dict) or origin in (Literal, dict):
        return True
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return all(_cli_supported(a) and typing.get_origin(_strip_optional(a)[0]) not in (tuple, list) for a in args)
    return False


def _metavar(tp: Any) -> str:
    tp, optional = _strip_optional(tp)
    names = {int: "N", float: "X", str: "STR", Path: "PATH", bool: "BOOL", dict: "JSON"}
    base = names.get(tp, "JSON" if typing.get_origin(tp) is dict else "VALUE")
    return f"{base}|none" if optional else base


def add_dataclass_arguments(
    parser_or_group: argparse.ArgumentParser | Any,
    cls: type,
    *,
    defaults: Mapping[str, Any] | None = None,
    prefix: str = "",
    _root: argparse.ArgumentParser | None = None,
) -> None:
    """Add one option per field of the dataclass ``cls``.

    Each field becomes ``--{prefix}{name with _ -> -}`` (namespace attribute
    ``{prefix}{name}`` with ``-`` -> ``_``); ``bool`` fields become ``--x / --no-x``;
    ``tuple[T, ...]`` and ``list[T]`` take several values (``--levels 1 2 3`` or
    ``--levels 1,2,3`` for numbers); ``Optional[T]`` also takes ``none``; choices come
    from ``Literal`` types or the ``"choices"`` metadata. Nested dataclass fields
    recurse with prefix ``{prefix}{name}.`` (in their own argument group when given a
    parser). Fields with ``metadata={"cli": False}`` and fields of types the command
    line cannot express get no option but keep their value in the namespace.

    Parameters
    ----------
    parser_or_group : argparse.ArgumentParser or argument group
    cls : dataclass type
    defaults : mapping, optional
        Effective defaults (nested mappings or instances for nested dataclasses),
        shown in the help and used when an option is not given; fields not in it use
        their dataclass defaults.
    prefix : str
        Prepended to every option name, e.g. ``"spo-chain."``.
    """
    if not _is_dataclass_type(cls):
        raise TypeError(f"add_dataclass_arguments needs a dataclass type, got {cls!r}")
    defaults = dict(defaults or {})
    tps = _field_types(cls)
    file_only = []
    for f in dataclasses.fields(cls):
        tp = tps[f.name]
        default = defaults[f.name] if f.name in defaults else _field_default(f)
        inner, optional = _strip_optional(tp)
        if _is_dataclass_type(inner) and not optional:
            fallback = _field_default(f)  # the outer field's own default instance, then the given values over it
            sub_defaults = _instance_values(fallback) if isinstance(fallback, inner) else {}
            if f.name in defaults:
                given = defaults[f.name]
                given = _instance_values(given) if isinstance(given, inner) else given
                if isinstance(given, Mapping):
                    sub_defaults = merge_dicts(sub_defaults, given)
            sub_prefix = prefix + f.name.replace("_", "-") + "."
            root = _root if _root is not None else (parser_or_group if isinstance(parser_or_group, argparse.ArgumentParser) else None)
            target = parser_or_group
            if root is not None:  # argparse groups do not nest: each nested dataclass is a group of the parser
                target = root.add_argument_group(f"{_group_name(sub_prefix)} ({inner.__name__})", _doc_line(inner))
            add_dataclass_arguments(target, inner, defaults=sub_defaults, prefix=sub_prefix, _root=root)
            continue
        dest = _dest(prefix, f.name)
        if not f.metadata.get("cli", True) or not _cli_supported(tp) or not f.init:
            if default is not dataclasses.MISSING:
                parser_or_group.set_defaults(**{dest: default})
            if f.init:
                file_only.append(prefix + f.name)
            continue
        help_text = f.metadata.get("help", "")
        shown = "(default: " + _show(default) + ")" if default is not dataclasses.MISSING else "(required)"
        help_text = (help_text + " " if help_text else "") + shown
        help_text = help_text.replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": dest, "help": help_text}
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        option = _option(prefix, f.name)
        origin = typing.get_origin(inner)
        meta_choices = f.metadata.get("choices")
        if inner is bool:
            parser_or_group.add_argument(option, _option(prefix, "no_" + f.name), action=_BoolAction, **kwargs)
            continue
        if origin in (tuple, list):
            args = typing.get_args(inner)
            variadic = origin is list or not args or (len(args) == 2 and args[1] is Ellipsis)
            item_types = (args[0],) if (variadic and args) else (args or (str,))
            numeric = all(_strip_optional(a)[0] in (int, float) for a in item_types)
            # "*": a bare --x empties a list a preset or file set; a fixed tuple takes exactly its length
            kwargs["nargs"] = "*" if variadic else ("+" if optional else len(item_types))
            fixed = not variadic and not optional
            kwargs["metavar"] = tuple(_metavar(t) for t in item_types) if fixed else _metavar(item_types[0])
            parser_or_group.add_argument(
                option, action=_SequenceAction, item_types=item_types, variadic=variadic, item_choices=meta_choices,
                sequence_type=tuple if origin is tuple else list, optional=optional, split_commas=numeric, **kwargs,
            )
            continue
        kwargs["type"] = _scalar_parser(tp)
        choices = list(meta_choices) if meta_choices is not None else (list(typing.get_args(inner)) if origin is Literal else None)
        if choices is not None:
            if optional:
                choices.append(None)
            kwargs["choices"] = choices
            kwargs["metavar"] = "{" + ",".join("none" if c is None else _show(c) for c in choices) + "}"
        else:
            kwargs["metavar"] = _metavar(tp)
        parser_or_group.add_argument(option, **kwargs)
    if file_only and isinstance(parser_or_group, argparse._ArgumentGroup):
        note = "Config files only: " + ", ".join(file_only) + "."
        parser_or_group.description = f"{parser_or_group.description} {note}" if parser_or_group.description else note


def dataclass_from_namespace(cls: type, namespace: argparse.Namespace, *, prefix: str = "") -> Any:
    """Build ``cls`` from a namespace filled by :func:`add_dataclass_arguments` with the same ``prefix``.

    Fields absent from the namespace take their dataclass defaults.
    """
    kwargs = {}
    tps = _field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        inner, optional = _strip_optional(tps[f.name])
        if _is_dataclass_type(inner) and not optional:
            kwargs[f.name] = dataclass_from_namespace(inner, namespace, prefix=prefix + f.name.replace("_", "-") + ".")
            continue
        dest = _dest(prefix, f.name)
        if hasattr(namespace, dest):
            kwargs[f.name] = getattr(namespace, dest)
    return cls(**kwargs)


class ConfigHelpFormatter(argparse.HelpFormatter):
    """Help formatter that writes a boolean pair as ``--x / --no-x`` and leaves room for long option names."""

    def __init__(self, prog, indent_increment=2, max_help_position=40, width=None):
        super().__init__(prog, indent_increment=indent_increment, max_help_position=max_help_position, width=width)

    def _format_action_invocation(self, action):
        if isinstance(action, _BoolAction):
            return " / ".join(action.option_strings)
        return super()._format_action_invocation(action)


def _doc_line(cls: type) -> str | None:
    """First line of a class's own docstring (not the signature dataclasses generate)."""
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0] if doc and not doc[0].startswith(cls.__name__ + "(") else None


def _as_mapping(value: Any) -> Any:
    """A dataclass instance as a nested dict of its field values (leaves unchanged), anything else as is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _as_mapping(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _canonical_group(name: str) -> str:
    """``"spo_chain"``, ``"spo-chain"`` and ``"spo-chain."`` name the same group."""
    return _group_name(name).replace("_", "-")


def _split_record(d: Mapping[str, Any], cls: type, ignore: set[str], groups: Mapping[str, type]) -> tuple[dict, dict]:
    """(config keys, {group prefix: values}) of a preset or config-file mapping (see the module docstring)."""
    names = {f.name for f in dataclasses.fields(cls)}
    d = {k: _as_mapping(v) for k, v in d.items()}
    for key in ignore | {"provenance", "task"}:
        if key not in names:
            d.pop(key, None)
    field_holds_methods = "methods" in names
    methods = d.get("methods", {}) if field_holds_methods else d.pop("methods", {})
    if methods is None and field_holds_methods:
        methods = {}
    if not isinstance(methods, Mapping):
        raise ValueError(f"'methods' must map method-group names to their options, got {type(methods).__name__}")
    by_name = {_canonical_group(p): p for p in groups}
    out: dict[str, Any] = {}
    for name, values in methods.items():
        gprefix = by_name.get(_canonical_group(str(name)))
        if gprefix is None:
            if field_holds_methods:
                continue  # an entry of the config's own ``methods`` field, not an option group
            raise _unknown_key_error(f"methods.{name}", [f"methods.{_group_name(p)}" for p in groups], "the method groups")
        values = _as_mapping(values)
        if not isinstance(values, Mapping):
            raise ValueError(f"'methods.{name}' must be a mapping of option names to values, got {type(values).__name__}")
        out[gprefix] = merge_dicts(out.get(gprefix, {}), values)
    return d, out


def build_parser(
    cls: type,
    *,
    prog: str,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    default_preset: str | None = None,
    description: str = "",
    groups: Mapping[str, type] | None = None,
    defaults: Mapping[str, Any] | None = None,
    group_defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> argparse.ArgumentParser:
    """The full parser of :func:`parse_config` (``--preset``, ``--config``, every field, every group)."""
    presets = dict(presets or {})
    # allow_abbrev=False: phase 1 must read --preset/--config exactly as phase 2 does, and a
    # prefix of one option never silently sets another.
    usage = "%(prog)s [-h]" + (" [--preset NAME]" if presets else "") + " [--config FILE] [OPTION ...]"
    epilog = (
        "Values: options given here override the --config file, which overrides the preset, which overrides "
        "the built-in defaults; the defaults shown above already include the preset and file given. "
        "Lists take several words (--x 1 2 3, or 1,2,3 for numbers); options shown as X|none also take none."
    )
    parser = argparse.ArgumentParser(prog=prog, usage=usage, description=description or None, epilog=epilog,
                                     formatter_class=ConfigHelpFormatter, allow_abbrev=False)
    if presets:
        shown = default_preset if default_preset is not None else "none"
        parser.add_argument("--preset", choices=sorted(presets), default=default_preset,
                            help=f"named configuration applied before --config and the options below (default: {shown})")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="JSON, YAML or TOML file of options (a run's config.json replays the run); "
                             "options given on the command line override it")
    main = parser.add_argument_group(f"{cls.__name__} options", _doc_line(cls))
    add_dataclass_arguments(main, cls, defaults=defaults, _root=parser)
    for gprefix, gcls in (groups or {}).items():
        grp = parser.add_argument_group(f"{_group_name(gprefix)} ({gcls.__name__})", _doc_line(gcls))
        add_dataclass_arguments(grp, gcls, defaults=(group_defaults or {}).get(gprefix), prefix=gprefix, _root=parser)
    return parser


def _instance_values(obj: Any) -> dict:
    """Field values of a dataclass instance, one level deep (nested instances kept)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def parse_config(
    cls: type,
    argv: Sequence[str] | None,
    *,
    prog: str,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    default_preset: str | None = None,
    description: str = "",
    groups: Mapping[str, type] | None = None,
    ignore_keys: Sequence[str] = (),
) -> tuple[Any, dict[str, Any]]:
    """Parse a command line into a config dataclass and its method-group dataclasses.

    Phase 1 reads ``--preset NAME`` and ``--config FILE``; the effective defaults are
    the field defaults, updated by the preset, updated by the file. Phase 2 builds the
    full parser with those defaults (so ``--help`` shows them) and parses ``argv``;
    options given override the defaults.

    Parameters
    ----------
    cls : dataclass type
    argv : sequence of str, optional
        ``sys.argv[1:]`` when ``None``.
    prog : str
        Program name shown in usage and errors (e.g. ``"polab train grpo"``).
    presets : mapping of str to mapping
        Named partial configurations (field -> value; a ``"methods"`` key holds
        per-group values like a config file's).
    default_preset : str, optional
        The preset used when ``--preset`` is not given (``None``: the field defaults).
    description : str
    groups : mapping of str to dataclass type, optional
        Extra option groups keyed by their prefix, e.g. ``{"spo-chain.": SPOChainConfig}``
        gives ``--spo-chain.threshold``; config files set them under
        ``"methods": {"spo-chain": {...}}`` (``spo_chain`` names the same group).
    ignore_keys : sequence of str
        Further top-level keys a run writes into its ``config.json`` beside the options
        (for example ``"world_size"``), ignored on replay unless they are fields.
        ``"provenance"`` and (when not a field) ``"task"`` are always ignored.

    Returns
    -------
    cfg : cls
    group_configs : dict
        Prefix (as in ``groups``) -> instance of its dataclass.

    Notes
    -----
    User errors (unknown preset, unreadable or malformed config file, unknown key,
    wrong type, bad option value) print a one-line message with the usage and exit
    with status 2, as argparse does.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    presets = dict(presets or {})
    groups = dict(groups or {})
    if default_preset is not None and default_preset not in presets:
        raise ValueError(f"default_preset {default_preset!r} is not one of the presets ({', '.join(sorted(presets)) or 'none'})")

    def fail(message: str) -> typing.NoReturn:
        message = " ".join(message.split())  # argparse's one-line error, even for a multi-line exception
        build_parser(cls, prog=prog, presets=presets, default_preset=default_preset, description=description, groups=groups).error(message)

    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    if presets:
        first.add_argument("--preset", default=default_preset)
    first.add_argument("--config", default=None)
    try:
        known, _ = first.parse_known_args(argv)
    except argparse.ArgumentError as exc:  # e.g. `--config` without a value
        fail(str(exc))
    layers: list[tuple[str, Mapping[str, Any]]] = []
    preset = getattr(known, "preset", None)
    if preset is not None:
        if preset not in presets:
            fail(f"argument --preset: unknown preset {preset!r}; choose one of {', '.join(sorted(presets))}")
        layers.append((f"preset {preset!r}", presets[preset]))
    if known.config is not None:
        try:
            layers.append((f"config file {known.config!r}", load_config_file(known.config)))
        except ValueError as exc:
            fail(f"argument --config: {exc}")

    merged: dict[str, Any] = {}
    merged_methods: dict[str, dict] = {}
    ignore = set(ignore_keys)
    for source, layer in layers:
        try:
            keys, methods = _split_record(layer, cls, ignore, groups)
            # each layer's keys and types are checked now, so that an error names its source; the
            # dataclasses are only built from the final combination (a layer need not be complete)
            keys = _partial(cls, keys, strict=True, path="")
            for gprefix, values in methods.items():
                values = _partial(groups[gprefix], values, strict=True, path=f"methods.{_group_name(gprefix)}.")
                merged_methods[gprefix] = _merge_layer(groups[gprefix], merged_methods.get(gprefix, {}), values)
        except (ValueError, TypeError) as exc:
            hint = ""
            if isinstance(layer, Mapping) and "provenance" in layer and "unknown config key" in str(exc):
                hint = " (a run's config.json: top-level keys the run writes beside the options belong in parse_config's ignore_keys)"
            fail(f"{source}: {exc}{hint}")
        merged = _merge_layer(cls, merged, keys)

    parser = build_parser(cls, prog=prog, presets=presets, default_preset=default_preset, description=description,
                          groups=groups, defaults=merged, group_defaults=merged_methods)
    ns = parser.parse_args(argv)
    try:
        cfg = dataclass_from_namespace(cls, ns)
        group_cfgs = {p: dataclass_from_namespace(g, ns, prefix=p) for p, g in groups.items()}
    except (ValueError, TypeError) as exc:  # e.g. a __post_init__ check of the dataclass
        parser.error(" ".join(str(exc).split()) or type(exc).__name__)
    return cfg, group_cfgs
