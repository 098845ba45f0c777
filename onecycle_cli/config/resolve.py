"""Resolving a config: `onecycle config --config cifar --set train.seed=1`.

Precedence, lowest first: the defaults (schema.py) < the YAML file < environment (`ONECYCLE_DATA`,
`ONECYCLE_CACHE`, `ONECYCLE_RUNS`, `ONECYCLE_DEVICE`, `ONECYCLE_THREADS`, or `ONECYCLE_<SECTION>__<KEY>`) < flags
(`--set section.key=value` and the named flags such as `--max-lr`). Everything is checked before any
work starts; a bad value becomes one `ConfigError` line naming the key, the value, where it came from
and what was expected.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import presets
from ..errors import ConfigError
from .schema import Config, Section, _clip
from .text import PATH_KEYS, parse_scalar, read_yaml


def locate_config(config: str | None) -> tuple[str, Path, str | None]:
    """`--config` as a path or a shipped name, and a note to show when a name stood in for a file.

    None means the CIFAR-10 / ResNet-56 preset. `cifar.yaml` that is no file here means the preset
    `cifar`: the design card's own command, typed from any folder.
    """

    if config is not None and not config.strip():  # an unset shell variable, not a request for the default
        raise ConfigError(f"--config '': expected a YAML file or a shipped config name "
                          f"({', '.join(presets.shipped())})")
    config = config or "cifar"
    path = Path(config)
    bare = os.sep not in config and (os.altsep is None or os.altsep not in config)
    # a path that exists is that path, even a device or a FIFO: read_yaml says what is wrong with it
    if path.is_file() or (path.exists() and not path.is_dir()) or (
            path.suffix in presets.SUFFIXES and os.path.lexists(path)):
        return path.stem, path, None  # read_yaml says what is wrong with a path that cannot be read
    if not bare and path.suffix in presets.SUFFIXES:
        raise ConfigError(f"config file not found: {config}; {presets.not_found(config)}")
    preset = presets.lookup(config) if bare else None
    if preset is not None:
        note = (None if path.suffix not in presets.SUFFIXES else
                f"--config {config}: no such file here, so using the shipped preset {preset.stem!r} "
                f"(onecycle init {preset.stem} writes an editable copy)")
        return preset.stem, preset, note
    if path.is_dir():
        raise ConfigError(f"--config {config} is a directory, expected a YAML file or a shipped preset; "
                          f"{presets.not_found(config)}")
    raise ConfigError(f"--config {config}: no such file and no shipped preset of that name; "
                      f"{presets.not_found(config)}")


ENV_ALIASES = {"ONECYCLE_DATA": "data.root", "ONECYCLE_RUNS": "run.root", "ONECYCLE_DEVICE": "train.device",
               "ONECYCLE_CACHE": "data.cache", "ONECYCLE_THREADS": "train.threads"}


def env_overrides(environ: dict[str, str]) -> list[tuple[str, str, str]]:
    """(key, text, source) for every ONECYCLE_* variable that sets a config key."""
    out = []
    for name, text in sorted(environ.items()):
        if name in ENV_ALIASES:
            out.append((ENV_ALIASES[name], text, name))
        elif name.startswith("ONECYCLE_") and "__" in name:
            section, _, key = name[len("ONECYCLE_"):].partition("__")
            out.append((f"{section.lower()}.{key.lower()}", text, name))
    return out


def parse_set(item: str) -> tuple[str, str]:
    key, eq, value = item.partition("=")
    if not eq or not key.strip() or key != key.strip() or " " in key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set schedule.max_lr=0.4")
    if "." not in key:
        raise ConfigError(f"--set {item!r}: {key!r} names no section; expected section.key=value "
                          f"(sections: {', '.join(Config.model_fields)})")
    if not all(key.split(".")):  # `.seed`, `train.`, `train..seed`: a name left out between the dots
        raise ConfigError(f"--set {item!r}: {key!r} has an empty name between dots; expected section.key=value, "
                          f"e.g. --set train.seed=1")
    return key, value


def _put(tree: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[:i + 1])} is a value, not a section, so {dotted} "
                              f"(from {source}) cannot be set")
        node = child
    node[parts[-1]] = value


def _leaves(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix]
    return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]


class Resolved(BaseModel):
    """A validated config with its name (for run directories) and the source of each set key."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    config: Config
    name: str
    path: Optional[str] = None
    sources: dict[str, str] = {}
    notes: list[str] = []  # what the CLI should tell the user, e.g. that a preset stood in for a missing file


def resolve(config: str | None = None, sets: list[str] | None = None, flags: dict[str, Any] | None = None,
            environ: dict[str, str] | None = None, from_file: Path | None = None) -> Resolved:
    """Merge defaults < YAML < environment < flags and validate; `flags` maps keys to values or None.

    `from_file` reads an already-resolved config (a run's config.yaml) instead of `config`.
    """
    if from_file is not None:
        name, path, note = from_file.parent.name, from_file, None
    else:
        name, path, note = locate_config(config)
    tree = read_yaml(path, follow=from_file is None)  # a run's own config.yaml is never read through a link
    sources = {leaf: path.name for leaf in _leaves(tree)}
    environ = os.environ if environ is None else environ
    # a path is the text as given, never YAML: --runs-dir 2024 is the folder "2024", --data-dir null "null"
    typed = lambda key, text, source: text if key in PATH_KEYS else parse_scalar(text, source)  # noqa: E731
    for key, text, source in env_overrides(dict(environ)):
        _put(tree, key, typed(key, text, source), source)
        sources[key] = source
    flagged: dict[str, str] = {}
    for item in sets or []:
        key, text = parse_set(item)
        _put(tree, key, typed(key, text, f"--set {_clip(item)}"), f"--set {item}")
        sources[key] = flagged[key] = f"--set {item}"
    for key, (flag, value) in (flags or {}).items():
        if value is None:
            continue
        if key in flagged:
            raise ConfigError(f"conflicting flags: {flag} {value} and {flagged[key]} both set {key}; give one")
        value = typed(key, value, flag) if isinstance(value, str) else value
        _put(tree, key, value, flag)
        sources[key] = flagged[key] = f"{flag} {value}"
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_explain(e, sources)) from None
    return Resolved(config=cfg, name=name, path=str(path), sources=sources, notes=[note] if note else [])


_SECTIONS: dict[str, type[Section]] = {name: f.annotation for name, f in Config.model_fields.items()}


def _explain(error: ValidationError, sources: dict[str, str]) -> str:
    """The first validation error as one line: key, value, source, what was expected."""
    e = error.errors(include_url=False)[0]
    loc = [str(p) for p in e["loc"]]
    key = ".".join(p for p in loc if not p.isdigit()) or "config"
    value = e.get("input")
    if e["type"] == "value_error":  # a check across keys: the message names the key it is about first
        named = re.match(r"[a-z_]+\.[a-z_]+", str(e["msg"]).removeprefix("Value error, "))
        key = named.group(0) if named else key
    # the key itself, its section, or (for a mapping where a value goes) a key under it
    source = next((sources[k] for k in (key, key.rsplit(".", 1)[0]) if k in sources), None) or next(
        (s for k, s in sources.items() if k.startswith(key + ".")), None)
    where = f" (from {_clip(source)})" if source else ""
    kind, ctx = e["type"], e.get("ctx", {})
    if kind == "extra_forbidden":
        if len(loc) == 1:
            known = list(Config.model_fields)
            hint = difflib.get_close_matches(loc[0], known, n=1)
            return (f"unknown section {loc[0]!r}{where}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; sections: {', '.join(known)}")
        known = list(_SECTIONS[loc[0]].model_fields) if loc[0] in _SECTIONS else []
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        return (f"unknown key {key!r}{where}" + (f" (did you mean '{loc[0]}.{hint[0]}'?)" if hint else "")
                + (f"; {loc[0]} takes: {', '.join(known)}" if known else ""))
    expected = {
        "float_type": "a number", "int_type": "an integer", "bool_type": "true or false",
        "string_type": "a string", "list_type": "a list", "finite_number": "a finite number",
        "model_type": "a mapping of keys", "dict_type": "a mapping of keys",
        "int_from_float": "an integer", "none_required": "null",
    }.get(kind)
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        hint = difflib.get_close_matches(str(value), options, n=1)
        expected = "one of " + ", ".join(options) + (f" (did you mean {hint[0]!r}?)" if hint else "")
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        expected = f"a value {op} {bound:g}" if isinstance(bound, float) else f"a value {op} {bound}"
        if isinstance(value, float) and math.isnan(value):
            expected = "a finite number"
    elif kind in ("too_short", "too_long"):
        expected = f"a list of {ctx.get('min_length', ctx.get('max_length'))} items"
    elif kind == "value_error":
        return f"config error{where}: {str(e['msg']).removeprefix('Value error, ')}"
    elif expected is None:
        expected = e["msg"]
    if isinstance(value, dict):  # a nested mapping: name its keys, not the whole tree
        return (f"config error: {key} = {{{', '.join(f'{k}: ...' for k in value)}}}{where}: expected {expected}"
                + ("" if kind in ("model_type", "dict_type") else ", not a mapping"))
    return f"config error: {key} = {_clip(repr(value))}{where}: expected {expected}"
