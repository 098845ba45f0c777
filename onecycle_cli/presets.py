"""The shipped presets: `onecycle presets`, `onecycle init cifar`, and `--config cifar.yaml` from any folder.

A preset is a YAML file of the `onecycle_cli.configs` package (`configs/` in a clone). Its header
comment says how to run it and what it reproduces; `init` copies it whole, so the reason for each
value stays beside the value in the user's own copy. Nothing here imports torch: listing and
copying presets is instant.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from importlib import resources
from pathlib import Path

from .errors import UsageError

SUFFIXES = (".yaml", ".yml")


def shipped() -> dict[str, Path]:
    """The presets by name (`cifar`, `mnist`, `mnist_sample`), sorted."""
    folder = resources.files("onecycle_cli.configs")
    found = {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(SUFFIXES)}
    return dict(sorted(found.items()))


def lookup(name: str) -> Path | None:
    """The preset a name means: `cifar`, or `cifar.yaml` / `cifar.yml` typed as if it were a file."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in SUFFIXES else name
    return shipped().get(stem)


def closest(name: str) -> str | None:
    """The preset most like a mistyped name (`cifr.yaml` -> `cifar`), if any is close."""
    stem = Path(name).stem if Path(name).suffix in SUFFIXES else name
    hits = difflib.get_close_matches(stem, list(shipped()), n=1)
    return hits[0] if hits else None


def not_found(what: str) -> str:
    """The end of an error message for a name that is no preset: which presets exist, and the closest."""
    hint = closest(what)
    return (f"presets: {', '.join(shipped())}" + (f" (did you mean {hint!r}?)" if hint else "")
            + "; onecycle presets lists them")


def header(text: str) -> list[str]:
    """The leading comment block of a YAML file, one entry per line, without the '#'."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return lines


def description(path: Path) -> str:
    """The first sentence of the header's first paragraph that is prose, not a command line."""
    paragraphs, current = [], []
    for line in header(path.read_text(encoding="utf-8")) + [""]:
        if line:
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    for lines in paragraphs:
        if all(line.startswith("onecycle ") for line in lines):
            continue
        prose = " ".join(lines)
        return re.split(r"(?<=\.)\s", prose, maxsplit=1)[0]
    return ""


def listing() -> list[dict]:
    """[{name, path, description}] for `onecycle presets` and `onecycle config --list`."""
    return [{"name": name, "path": str(path), "description": description(path)} for name, path in shipped().items()]


def destination(name: str, path: str | None) -> Path:
    """Where `onecycle init NAME [PATH]` writes: ./NAME.yaml, PATH itself, or NAME.yaml inside the folder PATH."""
    if path is None:
        return Path(f"{name}.yaml")
    if not path.strip():
        raise UsageError("init PATH '': expected a file or a folder to write the preset into")
    if path.endswith(("/", os.sep)) and not Path(path).is_dir():
        raise UsageError(f"init {path}: no such folder")
    return Path(path) / f"{name}.yaml" if Path(path).is_dir() else Path(path)


def write_copy(name: str, path: str | None = None, force: bool = False) -> Path:
    """Copy a preset, comments and all, to where `destination` says; returns the file written.

    An existing file is kept unless `force`; a symbolic link there is replaced, never written
    through, so the copy cannot land outside the place named.
    """
    source = lookup(name)
    if source is None:
        raise UsageError(f"init {name}: no shipped preset of that name; {not_found(name)}")
    stem = source.stem
    target = destination(stem, path)
    if os.path.lexists(target):
        if not force:
            kind = "a symbolic link" if target.is_symlink() else "a folder" if target.is_dir() else "a file"
            raise UsageError(f"init: {target} already exists ({kind}): pass --force to replace it, or name another "
                             f"PATH")
        if target.is_dir() and not target.is_symlink():
            raise UsageError(f"init: {target} is a folder, not a file: name a file or a folder to write {stem}.yaml "
                             f"into")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"init: cannot write {target}: the folder {parent} does not exist")
    text = source.read_text(encoding="utf-8")
    # the header's commands say `--config cifar` (or, for cifar, nothing): they would run the preset,
    # not this copy, so they name the copy instead
    lines = text.splitlines(keepends=True)
    quoted = shlex.quote(str(target))
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        new = re.sub(rf"--config {re.escape(stem)}(?=\s|$)", lambda _: f"--config {quoted}", line)
        if "--config" not in new.split("#")[1]:
            new = re.sub(r"^(#\s*onecycle (?:find|train|schedule|config)) ",
                         lambda m: f"{m.group(1)} --config {quoted} ", new)
        # keep a trailing comment in its column where the spaces before it allow
        grown, note = len(new) - len(line), re.search(r"\S( {3,})#", new[1:])
        if grown and note and len(note.group(1)) - grown >= 2:
            new = new[:note.start(1) + 1] + " " * (len(note.group(1)) - grown) + new[note.end(1) + 1:]
        lines[i] = new
    _write_new(target, "".join(lines).encode("utf-8"))
    return target


def _write_new(target: Path, data: bytes) -> None:
    """Write through a fresh temporary file beside `target` and rename it into place.

    O_EXCL | O_NOFOLLOW: the temporary name is never an existing file or a planted link, and the
    rename replaces whatever `target` is (a link included) instead of following it.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise UsageError(f"init: cannot write in {target.parent}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"init: cannot write {target}: {e.strerror}") from None
