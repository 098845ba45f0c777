"""What a folder holds: its files, their labels and the seeded split (`onecycle data check --config folder`).

`Entry` is one file (its path relative to the root, label, split, size and modification time, which
tell the cache that it changed); `Listing` is a scanned folder (`folder.scan`). `split_key` and
`hold_out` choose the validation files from the seed and the relative paths alone, so the same files
land in valid on every machine; `file_key` names a path in JSON one to one, whatever its bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    path: str      # relative to the root, '/'-separated
    label: int     # index into the sorted class names
    valid: bool
    size: int      # bytes and modification time: what tells the cache that a file changed
    mtime_ns: int


@dataclass(frozen=True)
class Listing:
    root: Path
    layout: str
    classes: list[str]
    entries: list[Entry]  # sorted by path: the files to decode
    skipped: list[tuple[Entry, str]] = field(default_factory=list)  # listed, never opened (links), and why


def split_key(seed: int, path: str) -> int:
    """A file's place in the seeded order: a hash of the seed and its relative path, nothing else."""
    data = f"{seed}\0{path}".encode("utf-8", "surrogateescape")  # a file name's bytes, UTF-8 or not
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def file_key(path: str) -> str:
    """A relative path as JSON text, one to one: itself, or, for a name that is not UTF-8, a NUL (which
    no file name holds) and its bytes in hex."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return "\0" + path.encode("utf-8", "surrogateescape").hex()


def hold_out(paths: list[str], valid_pct: float, seed: int) -> set[str]:
    """round(valid_pct x n) of `paths` for validation, the same set whatever order they come in."""
    k = int(valid_pct * len(paths) + 0.5)
    return set(sorted(paths, key=lambda p: (split_key(seed, p), p))[:k])
