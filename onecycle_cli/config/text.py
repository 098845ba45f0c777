"""A config as YAML text: read strictly, written with its not-read marks (`onecycle init cifar`, config.yaml).

Read by safe_yaml (YAML 1.2 scalars, unique keys, bounded aliases) from a regular file of bounded
size; the path keys stay text as typed (`--runs-dir 2024` is the folder "2024"). `to_yaml` writes a
resolved config back, every key explicit, the keys a run does not read commented as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml

from .. import safe_yaml
from ..errors import ConfigError
from ..safe_files import CONFIG_LIMIT, NotRegularFile, TooLarge, read_regular
from .reads import flatten, unread
from .schema import PATH_CHECK, Config, _clip


def parse_scalar(text: str, source: str = "") -> Any:
    """A `--set` or environment value, typed as YAML 1.2 would type it (`1e-4` is a float, `010` is 10)."""
    try:
        return safe_yaml.load(text) if text.strip() else None
    except safe_yaml.TooBig as e:  # an alias bomb is refused, not read as a very long string
        raise ConfigError(f"{source or repr(_clip(text))}: {e.problem}") from None
    except yaml.YAMLError:
        return text  # left as a string: the schema says what was expected instead


def read_yaml(path: Path, follow: bool = True) -> dict:
    """The top-level mapping of a config file, or a ConfigError saying what is wrong with it.

    Only a regular file of at most CONFIG_LIMIT bytes is read: `--config /dev/zero` or a FIFO would
    otherwise read (or wait) forever. `follow=False` for a run's own config.yaml (no links).
    """
    try:
        raw = read_regular(path, CONFIG_LIMIT, follow=follow)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except NotRegularFile as e:
        if e.strerror == "a directory":
            raise ConfigError(f"config path is a directory, expected a YAML file: {path}") from None
        raise ConfigError(f"config file {path} is {e.strerror}: expected a YAML file") from None
    except TooLarge as e:
        raise ConfigError(f"config file {path} is {e.strerror} for a config: expected a YAML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8): expected a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"config file {path} is binary: expected a YAML file")
    try:
        data = safe_yaml.load(text, text_keys=PATH_KEYS, nullable=NULLABLE_PATH_KEYS)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if isinstance(e, safe_yaml.TooBig):  # well formed, but more than any config needs
            raise ConfigError(f"config file {path}: refused: {problem}") from None
        if "'\\t'" in problem:  # PyYAML: "found character '\t' that cannot start any token"
            problem = "a tab character; YAML indents with spaces only"
        raise ConfigError(f"config file {path}{where}: malformed YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty: expected sections such as data:, model:, train:")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} holds a {type(data).__name__}: expected a mapping of sections "
                          f"(data:, model:, optim:, schedule:, train:, find:, run:)")
    return data


def _is_path(annotation: Any, metadata: tuple = ()) -> bool:
    return PATH_CHECK in metadata or any(_is_path(a, getattr(a, "__metadata__", ())) for a in get_args(annotation))


# every key typed PathStr, found from the schema, so a key added as a path is one at once
PATH_KEYS = frozenset(f"{section}.{key}" for section, field in Config.model_fields.items()
                      for key, f in field.annotation.model_fields.items() if _is_path(f.annotation, tuple(f.metadata)))

# of those, the ones that may be unset: a plain `null` in a file is no path (`init: null`)
NULLABLE_PATH_KEYS = frozenset(f"{section}.{key}" for section, field in Config.model_fields.items()
                               for key, f in field.annotation.model_fields.items()
                               if f"{section}.{key}" in PATH_KEYS and type(None) in get_args(f.annotation))


def to_yaml(cfg: Config, commands: frozenset[str] | set[str] | None = None) -> str:
    """The resolved config as YAML, every key explicit, in schema order; read back by safe_yaml the same.

    With `commands`, each key that a run of those commands does not read keeps its value (the file
    still loads back) and gets a comment saying when it would be read.
    """
    tree = cfg.model_dump(mode="json")
    if commands is None:
        return safe_yaml.dump(tree, sort_keys=False, default_flow_style=None, width=100)
    why = unread(flatten(tree), commands)
    lines = []
    for section, keys in tree.items():
        lines.append(f"{section}:")
        # block style for the key, flow style inside a list value: `strides: [2]` on one line
        body = [("  " + safe_yaml.dump({k: v}, sort_keys=False, default_flow_style=None if isinstance(v, list)
                                       else False, width=100).rstrip("\n").replace("\n", "\n  "),
                 why.get(f"{section}.{k}")) for k, v in keys.items()]
        width = max((len(text) for text, _ in body if "\n" not in text), default=0)
        for text, reason in body:
            if reason is None:
                lines.append(text)
            elif "\n" in text:  # a value over several lines: the comment goes above it
                lines += [f"  # not read: {reason}", text]
            else:
                lines.append(f"{text:<{width}}  # not read: {reason}")
    return "\n".join(lines) + "\n"
