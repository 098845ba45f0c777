"""YAML as onecycle reads it: `onecycle config --config my.yaml --set train.seed=1`.

One loader for every piece of YAML onecycle reads: config files, `--set` values, ONECYCLE_*
variables and the config.yaml of past runs (`runs`, `compare`, `--resume`). It is PyYAML's safe
loader (no tag builds an object) with these changes:

- Scalars are typed as YAML 1.2's core schema types them, not as PyYAML's YAML 1.1: `010` is 10
  (not 8), `0o17` is 15, `1:30` is a string (not 90), `yes`/`no`/`on`/`off` are strings (only
  `true`/`false` are booleans), `1e-4` is a float (1.1 wants `1.0e-4`), `1_000` and `2024-01-01` are
  strings. The schema then says what was expected instead of silently taking a surprise.
- A key appears once per mapping and is a scalar: a list or a mapping names no key.
- Bounded: at most MAX_ALIASES aliases, MAX_DEPTH levels of nesting and MAX_NODES nodes once every
  alias is expanded, so a 500-byte alias bomb is one line of error instead of gigabytes.
- `text_keys`: plain scalars under these dotted keys stay the text as written (a path is a path:
  `root: 2024` is the folder "2024"), except a plain `null` under a key of `nullable` (`init: null`).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_ALIASES = 256      # a config needs a handful, if any; an alias bomb needs dozens
MAX_DEPTH = 32         # a config is three levels deep (section, key, list)
MAX_NODES = 100_000    # a full config has about 80 values; a billion laughs has 10^9

STR_TAG = "tag:yaml.org,2002:str"


class TooBig(ComposerError):
    """A document past one of the bounds: refused, whatever the caller would do with malformed YAML."""


class Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader, with YAML 1.2 core scalars, unique scalar keys and bounded aliases and depth."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise TooBig(None, None, f"more than {MAX_ALIASES} aliases (an alias bomb?)",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise TooBig(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), in place of PyYAML's 1.1 rules
Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
    ("float", r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
     list("-+.0123456789")),
):
    Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), _first)


def _int(loader: Loader, node: ScalarNode) -> int:
    text = node.value
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    try:
        if digits.startswith("0o"):
            return int(digits[2:], 8)
        if digits.startswith("0x"):
            return int(digits[2:], 16)
        return sign * int(digits, 10)  # 010 is ten: YAML 1.2 has no bare-zero octal
    except ValueError:  # Python refuses ints of more than 4300 digits
        raise ConstructorError(None, None, f"integer of {len(digits)} digits is too long", node.start_mark) from None


def _float(loader: Loader, node: ScalarNode) -> float:
    text = node.value.lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


def _mapping(loader: Loader, node: MappingNode, deep: bool = False) -> dict:
    """A mapping whose keys are scalars, each once: a repeated key is a typo, not an override."""
    seen: dict = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode):
            kind = "list" if isinstance(key_node, SequenceNode) else "mapping"
            raise ConstructorError(None, None, f"a key that is a {kind}: keys are names", key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConstructorError(None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                                   key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


Loader.add_constructor("tag:yaml.org,2002:int", _int)
Loader.add_constructor("tag:yaml.org,2002:float", _float)
Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class Dumper(yaml.SafeDumper):
    """Writes what `Loader` reads back the same: a string that 1.2 would type otherwise is quoted."""


Dumper.yaml_implicit_resolvers = Loader.yaml_implicit_resolvers


def _expanded(root: Node) -> None:
    """Refuse a document that is too big once its aliases are expanded, or that contains itself.

    Counted on the node graph, each node once (an alias is the same node object as its anchor), so
    the count costs what the document costs, not what it would expand to.
    """
    size: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            open_.discard(key)
            if size[key] > MAX_NODES:
                raise TooBig(None, None, f"more than {MAX_NODES:,} values once its aliases are expanded "
                                    f"(an alias bomb?)", root.start_mark)
            continue
        if key in size:
            continue
        if key in open_:
            raise TooBig(None, None, "an alias inside its own anchor (a structure that contains itself)",
                                node.start_mark)
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


NULLS = {"null", "Null", "NULL", "~", ""}  # YAML 1.2's core schema


def _keep_text(node: Node, text_keys: set[str], nullable: set[str], prefix: str = "") -> None:
    """Retag the plain scalars under `text_keys` as strings, so they keep the text as written."""
    if not isinstance(node, MappingNode):
        return
    for key_node, value in node.value:
        if not isinstance(key_node, ScalarNode):
            continue
        dotted = f"{prefix}.{key_node.value}" if prefix else key_node.value
        if dotted in text_keys and isinstance(value, ScalarNode) and value.style is None:
            if not (dotted in nullable and value.value in NULLS):
                value.tag = STR_TAG
        elif any(k.startswith(dotted + ".") for k in text_keys):
            _keep_text(value, text_keys, nullable, dotted)


def load(text: str, text_keys: set[str] | frozenset[str] = frozenset(),
         nullable: set[str] | frozenset[str] = frozenset()) -> Any:
    """One YAML document, bounded and typed as described above; raises yaml.YAMLError."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node)
        if text_keys:
            _keep_text(node, set(text_keys), set(nullable))
        return loader.construct_document(node)
    finally:
        loader.dispose()


def dump(data: Any, **kwargs) -> str:
    return yaml.dump(data, Dumper=Dumper, **kwargs)
