"""Shell completion: `onecycle --install-completion`, then TAB after `--config`, `--set`, `--resume`, `compare`.

Typer's own machinery does the work: the shell runs `onecycle` again with `_ONECYCLE_COMPLETE` set,
click parses the words typed so far, and the functions here give the candidates for the parameter
being typed, each with a one-line help that zsh and fish show. They run at every TAB, so they read
names and small JSON files only and never import torch. A function that finds nothing returns
nothing, and the shell falls back to completing file names.

What the shell hands over is checked before Typer reads it (`answer`): a request that is not one of
the scripts' own (`complete_bash`, `source_zsh`, ...) ends with exit 1 and says nothing, and missing or
malformed words (COMP_WORDS unset, COMP_CWORD not an index) complete nothing, exit 0. A
completion runs in the middle of a command line being typed: a traceback or an "unexpected error"
there would be printed into it, and helps nobody. ONECYCLE_DEBUG=1 shows what went wrong.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
import types
import typing
from pathlib import Path
from typing import Any, Callable

Candidates = list[tuple[str, str]]  # (value, help)


def _safe(complete: Callable[..., Candidates]) -> Callable[..., Candidates]:
    """A completion that fails completes nothing: a traceback in the middle of a command line helps nobody."""
    def run(ctx, incomplete: str) -> Candidates:
        try:
            return complete(ctx, incomplete)
        except Exception:
            return []
    run.__name__ = run.__qualname__ = complete.__name__
    run.__doc__ = complete.__doc__
    return run


INSTRUCTIONS = ("complete", "source")
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")  # Typer's completion classes


def _bash_words_ok() -> bool:
    """Whether bash's COMP_WORDS / COMP_CWORD are there and an index (the script always sets both)."""
    index = os.environ.get("COMP_CWORD", "")
    return "COMP_WORDS" in os.environ and index.isascii() and index.isdigit() and len(index) < 10


def answer(complete: Callable[[], None], complete_var: str) -> None:
    """Run `complete` (Typer's answer to the shell's request in `complete_var`, which exits) quietly:
    nothing but the candidates on stdout, nothing on stderr. Returns when there is no request."""
    request = os.environ.get(complete_var)
    if not request:
        return
    instruction, _, shell = request.partition("_")
    if instruction not in INSTRUCTIONS or shell not in SHELLS:
        sys.exit(1)  # not a request the scripts make: Typer would print "Shell ... not supported"
    if request == "complete_bash" and not _bash_words_ok():
        sys.exit(0)  # nothing to complete
    try:
        complete()
    except Exception:
        if os.environ.get("ONECYCLE_DEBUG"):
            traceback.print_exc()
        sys.exit(1)


def _help(text: Any) -> str:
    """Help as zsh and fish show it: one short line, with no rich markup to misread (Typer renders it)."""
    from rich.markup import escape

    from .safe_text import one_line
    text = one_line(text)  # a run's name or config may hold escape codes: zsh and fish print this help
    return escape(text if len(text) <= 70 else text[:69] + "…")


# -- --config -------------------------------------------------------------------------------------
@_safe
def config_names(ctx, incomplete: str) -> Candidates:
    """The shipped presets with their descriptions, then the YAML files in the folder being typed."""
    from .presets import SUFFIXES, listing
    out = [(p["name"], _help(p["description"])) for p in listing() if p["name"].startswith(incomplete)]
    folder = os.path.dirname(incomplete)
    try:
        entries = sorted(Path(os.path.expanduser(folder) or ".").iterdir())
    except OSError:
        return out
    for entry in entries:
        name = os.path.join(folder, entry.name) if folder else entry.name
        if entry.suffix in SUFFIXES and name.startswith(incomplete) and entry.is_file():
            out.append((name, "YAML file"))
    return out


@_safe
def preset_names(ctx, incomplete: str) -> Candidates:
    """The shipped presets with their descriptions (`onecycle init NAME`)."""
    from .presets import listing
    return [(p["name"], _help(p["description"])) for p in listing() if p["name"].startswith(incomplete)]


# -- --set ----------------------------------------------------------------------------------------
def _choices(annotation: Any) -> list[str]:
    """The values a config key can only take (a Literal, a bool, null), as --set spells them; [] if open."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _choices(args[0])
    if origin is typing.Literal:
        return [str(a) for a in args]
    if annotation is bool:
        return ["true", "false"]
    if origin is typing.Union or origin is getattr(types, "UnionType", None):
        parts = [["null"] if a is type(None) else _choices(a) for a in args]
        return [c for p in parts for c in p] if all(parts) else []
    return []


def _spell(value: Any) -> str:
    """A value as `--set key=VALUE` takes it, one shell word: true, null, 1e-05, [1,8,16]."""
    if value is None or isinstance(value, (bool, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    return shlex.quote(str(value))


def _current(ctx) -> dict[str, Any]:
    """Every key's value under the --config and --set typed so far (the defaults if those do not resolve)."""
    from .config import Config, flatten, resolve
    try:
        cfg = resolve(ctx.params.get("config"), ctx.params.get("set_")).config
    except Exception:
        cfg = Config()
    return flatten(cfg.model_dump(mode="json"))


@_safe
def config_keys(ctx, incomplete: str) -> Candidates:
    """`section.key=` for every key; once one key is left, its values (a choice's options, or its value now)."""
    from .config import Config
    current = _current(ctx)

    def choices(key: str) -> list[str]:
        section, _, name = key.partition(".")
        fields = Config.model_fields[section].annotation.model_fields
        return _choices(fields[name].annotation) if name in fields else []

    def values(key: str) -> Candidates:
        now = _spell(current[key])
        return [(f"{key}={v}", "now" if v == now else "") for v in choices(key) or [now]]

    key, eq, _ = incomplete.partition("=")
    if eq:
        return values(key) if key in current else []
    keys = [k for k in current if k.startswith(incomplete)]
    if len(keys) != 1:
        return [(f"{k}=", _help(f"now {_spell(current[k])}")) for k in keys]
    # one key left: its values. Two candidates or more also keep bash from putting a space after the '='.
    offered = values(keys[0])
    return offered if len(offered) > 1 else [(f"{keys[0]}=", "")] + offered


# -- run directories ------------------------------------------------------------------------------
def _root(ctx) -> tuple[str, Path]:
    """The runs root as typed or configured (for the candidates) and as a path (to list)."""
    from .config import resolve
    runs_dir = ctx.params.get("runs_dir")
    try:
        flags = {"run.root": ("--runs-dir", runs_dir)} if runs_dir else {}
        root = resolve(ctx.params.get("config"), None, flags).config.run.root
    except Exception:
        root = runs_dir or os.environ.get("ONECYCLE_RUNS") or "runs"
    return root, Path(root).expanduser()


def _runs(ctx, incomplete: str, keep: Callable[[Path, dict], bool], ids: bool) -> Candidates:
    """Run directories under the runs root, newest first: ids (what `onecycle runs` prints), or paths."""
    from .runs.history import is_run_dir, read_json, status_of
    shown, root = _root(ctx)
    as_path = not ids or os.sep in incomplete
    try:
        names = sorted((p.name for p in root.iterdir() if not p.name.startswith(".")), reverse=True)
    except OSError:
        return []
    out = []
    for name in names:
        value = os.path.join(shown, name) if as_path else name
        if not value.startswith(incomplete) or not is_run_dir(root / name):
            continue
        summary = read_json(root / name / "summary.json") or {}
        if keep(root / name, summary):
            status = status_of(root / name, summary)
            out.append((value, _help(f"{summary.get('command') or '?'}, {summary.get('config') or '?'}, {status}")))
    return out


@_safe
def resumable_runs(ctx, incomplete: str) -> Candidates:
    """Train runs that `--resume` would continue: a checkpoint, and neither finished nor still running."""
    from .runs.history import status_of

    def keep(path: Path, summary: dict) -> bool:
        return (summary.get("command") == "train" and (path / "checkpoints" / "last.pt").is_file()
                and status_of(path, summary) not in ("completed", "diverged", "running"))
    return _runs(ctx, incomplete, keep, ids=False)


@_safe
def comparable_runs(ctx, incomplete: str) -> Candidates:
    """Runs to put side by side (not earlier comparisons), by id."""
    return _runs(ctx, incomplete, lambda path, summary: summary.get("command") != "compare", ids=True)


@_safe
def run_dirs(ctx, incomplete: str) -> Candidates:
    """Any run or comparison directory, by path (`report` and `plot` take a path)."""
    return _runs(ctx, incomplete, lambda path, summary: True, ids=False)
