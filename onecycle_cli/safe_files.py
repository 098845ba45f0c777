"""Files opened the careful way: `onecycle train --resume RUN`, `onecycle runs`, `--config PATH`.

A run directory may come from another machine, another user or an attacker, and a path from a
flag may name anything. So:

- files inside a run are opened without following a symbolic link (O_NOFOLLOW) and must be
  regular files: a link named `.lock` or `steps.csv` never makes onecycle write to what it points
  at, and a PNG link never leaks another file into report.html;
- nothing is read that could block or never end (a FIFO, /dev/zero): opened O_NONBLOCK, then
  refused unless it is a regular file, and never read past a size limit;
- a file is written whole (a temporary file created O_EXCL beside it, fsync, rename), and on any
  failure the temporary file is removed; a full disk is one line, "no space left on <path>";
- a path from outside is checked before use: no NUL, no part longer than the file system allows;
- a tree of onecycle's own folders (the decode cache) is walked one level at a time with directory
  file descriptors (`open_dir`, then `dir_fd=`): a link planted at any level is never followed.

Library code only: errors are `OnecycleError`s (or OSError for the caller to word).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator, TextIO

from .errors import DiskFull
from .faults import fault

NAME_MAX = 255    # bytes in one part of a path: ext4, xfs, btrfs, APFS, NTFS all stop here
PATH_MAX = 4096   # bytes in a whole path (Linux); a longer one fails in every system call

CONFIG_LIMIT = 1 << 20     # a config is a few kB; a megabyte is already a mistake
JSON_LIMIT = 64 << 20      # summary.json and friends: kilobytes in practice
CSV_LIMIT = 2 << 30        # steps.csv of a million-step run is about 100 MB
PNG_LIMIT = 64 << 20       # a plot is a few hundred kB

_FOLLOW = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = _FOLLOW | getattr(os, "O_NOFOLLOW", 0)


class NotRegularFile(OSError):
    """A path that is a link, a FIFO, a device or a directory where a regular file was expected."""


class TooLarge(OSError):
    """A file larger than anything onecycle writes or reads of that kind."""


class NotDirectory(OSError):
    """A path that is a link, a file or anything else where a directory of onecycle's own was expected."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _at(path: Path, dir_fd: int | None) -> str | Path:
    # with a directory descriptor, `path` is still the whole path (for messages) and its last part is opened there
    return path if dir_fd is None else Path(path).name


def open_regular(path: Path, limit: int | None = None, follow: bool = False, dir_fd: int | None = None) -> BinaryIO:
    """An existing regular file, opened for reading; never blocks on a FIFO, never reads a device.

    `follow=False` (for files inside a run) refuses a symbolic link; `follow=True` is for a path the user
    named (a --config that is a link to the version in use is fine). Either way the path is looked at
    (stat) before it is opened, so a device node is never opened. With `dir_fd`, the last part of `path`
    is opened in that directory (the rest of `path` only names it in messages).
    Raises FileNotFoundError, NotRegularFile, TooLarge or another OSError.
    """
    fault("read")
    name = _at(path, dir_fd)
    # looked at before it is opened: opening a device can do something (a tape rewinds, a watchdog arms)
    mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=follow).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(errno.ELOOP if stat.S_ISLNK(mode) else errno.EINVAL, _kind(mode), str(path))
    try:
        fd = os.open(name, os.O_RDONLY | (_FOLLOW if follow else _NOFOLLOW), dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise NotRegularFile(errno.ELOOP, "a symbolic link", str(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(errno.EINVAL, _kind(info.st_mode), str(path))
        if limit is not None and info.st_size > limit:
            raise TooLarge(errno.EFBIG, f"{info.st_size:,} bytes, more than the {limit:,} expected", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int, follow: bool = False, dir_fd: int | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see `open_regular`)."""
    with open_regular(path, limit, follow, dir_fd) as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew since it was measured
        raise TooLarge(errno.EFBIG, f"more than the {limit:,} bytes expected", str(path))
    return data


def read_json(path: Path, limit: int = JSON_LIMIT) -> dict | None:
    """A JSON object from a run's file: {} when absent, None when it is there but unreadable
    (a link, not a regular file, too large, not UTF-8 JSON, too deeply nested, not an object)."""
    try:
        value = json.loads(read_regular(path, limit))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def not_a_file(path: Path) -> str | None:
    """What `path` is when it is there (links followed) but is no regular file ("a FIFO", "a device", ...),
    else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _kind(mode)


def check_regular_or_dir(path: Path) -> str | None:
    """What is wrong with an entry of a run directory, or None: a run holds regular files and
    directories of its own, never a link (which a write could follow out of the run) or a FIFO."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode):
        try:
            return f"a symbolic link to {os.readlink(path)}"
        except OSError:
            return "a symbolic link"
    return _kind(mode)


def open_dir(path: Path, dir_fd: int | None = None, create: bool = False) -> int:
    """A descriptor of the directory `path` (with `dir_fd`: its last part, in that directory), made if
    `create` and missing, never reached through a symbolic link: a link, a file or a FIFO there is
    NotDirectory, saying which. The caller closes it."""
    name = _at(path, dir_fd)
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)  # mkdir never follows a link either: a planted one is EEXIST
        except FileExistsError:
            pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=dir_fd)
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            what = "a file" if stat.S_ISREG(mode) else _kind(mode)
        except OSError:
            what = "not a directory"
        raise NotDirectory(e.errno, what, str(path)) from None


# -- writing ----------------------------------------------------------------------------------------

def _create(path: Path, dir_fd: int | None = None) -> int:
    """A new file that no one else made: O_EXCL never opens a planted file or follows a planted link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
    name = _at(path, dir_fd)
    try:
        return os.open(name, flags, 0o644, dir_fd=dir_fd)
    except FileExistsError:  # left by a process of the same pid that was killed mid-write
        os.unlink(name, dir_fd=dir_fd)  # removes a link itself, never what it points at
        return os.open(name, flags, 0o644, dir_fd=dir_fd)


def no_space(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def atomic_write_bytes(path: Path, data: bytes, point: str = "", dir_fd: int | None = None) -> None:
    """Write `path` whole: readers see the old file or the new one, never half of one, and on any
    failure nothing is left behind but the old file. With `dir_fd`, `path`'s last part is written in
    that directory (a link, a FIFO or a device under that name is replaced, never opened)."""
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    try:
        fd = _create(tmp, dir_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if point:
            fault(point)
        # a link at `path` is replaced, never written through
        os.replace(_at(tmp, dir_fd), _at(path, dir_fd), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as e:
        try:
            os.unlink(_at(tmp, dir_fd), dir_fd=dir_fd)
        except OSError:
            pass
        if isinstance(e, OSError) and no_space(e):
            raise DiskFull(path) from None
        raise


def atomic_write_text(path: Path, text: str, dir_fd: int | None = None) -> None:
    # a name that is not UTF-8 (surrogateescape) is written as its escapes rather than failing the write
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"), dir_fd=dir_fd)


@contextlib.contextmanager
def atomic_text_file(path: Path) -> Iterator[TextIO]:
    """A text file written as a stream and put in place whole when the block ends (`predict --out`): readers
    see the old file or the new one; on an error or a signal, the old file stays and nothing else is left."""
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(_create(tmp), "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a link at `path` is replaced, never written through
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and no_space(e):
            raise DiskFull(path) from None
        raise


def open_append(path: Path):
    """A text file opened to append lines (a run's CSVs), never through a link, never a FIFO."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(errno.EINVAL, _kind(info.st_mode), str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", newline="", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


# -- paths from outside -----------------------------------------------------------------------------

def path_problem(text: str) -> str | None:
    """What `text` has that no path on this system can have, or None (read as "the path has ..."):
    checked before any work, so a bad path is one line naming its flag or key, not an OSError from
    deep inside a run."""
    if not text:
        return "no characters (an unset shell variable?)"
    if "\x00" in text:
        return "a NUL character"
    try:
        raw = os.fsencode(text)
    except UnicodeError:
        return "characters this file system cannot encode"
    if len(raw) >= PATH_MAX:
        return f"{len(raw):,} bytes: file systems take at most {PATH_MAX - 1:,}"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return (f"a part of {len(longest):,} bytes ({os.fsdecode(longest[:24])}...): file systems take at most "
                f"{NAME_MAX} per part")
    return None
