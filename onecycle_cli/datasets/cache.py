"""A folder's decoded images, kept between runs: the second `onecycle data check --config folder` takes a second.

    <cache>/<S>px-<resize>-<rgb|grey>/
        manifest.json         per file: size, modification time, row in the images (or why it was skipped)
        images-<token>.npy    N x C x S x S uint8; the rows of skipped files stay black
        sums-<token>.npy      N x 2 x C float64: each image's per-channel sum and sum of squares
        .lock                 one builder at a time; the others wait, then find the cache fresh

<cache> is `<root>/.onecycle-cache`, or `data.cache` (`ONECYCLE_CACHE`) plus a folder per data root.
The cache is fresh when every listed file is in the manifest with the same size and modification
time; then nothing is decoded and the images are memory-mapped. Otherwise only the files that
changed or are new are decoded, the others copied over from the old images, and the new pair of
.npy files (a new token) is committed by replacing the manifest (temporary file + rename): a reader
sees the old cache or the new, never half of one. A stop (Ctrl-C, SIGTERM) or a crash commits the
files decoded so far, so the next run decodes only the rest.

A data folder may come from someone else, with anything planted in its cache (issue 19):

- The cache never follows a link. The data root and data.cache are the user's to name (a link to
  them is followed); every level below -- `.onecycle-cache` or the folder per root, the settings
  folder -- is opened O_NOFOLLOW through a directory descriptor, and every file in it relative to
  that descriptor (`safe_files.open_dir`, `dir_fd=`). A link or a non-directory at a folder level
  is refused, one line naming it (exit 2): it may be the user's own link to another disk, and
  onecycle removes nothing it did not make; data.cache is how to put the cache elsewhere. Under the
  cache's own file names a link, FIFO or device is never opened or written through: `.lock` is
  replaced in place, manifest.json is replaced by the rename that commits, and the arrays are
  always new names created O_EXCL. The decode workers open the images file O_NOFOLLOW and check it
  is the inode this build created.
- No cache read blocks or runs away: each file is looked at (lstat) before it is opened, opened
  non-blocking, must be a regular file, and is read under a cap (the manifest: 64 MB plus 4 kB a
  listed file; the arrays: exactly the bytes the manifest's shape and their .npy header give).
  Anything else is a bad cache: decoded again, with a note.
- A build deletes only its own generations: regular files (lstat) named exactly
  `images-<12 hex>.npy` / `sums-<12 hex>.npy` in the settings folder, other than the pair it just
  committed; a link or a folder of such a name is left alone, never descended into.
- A write that fails (a full disk, a read-only folder) before the manifest names the new pair
  removes that pair, so a later run, with space back, starts clean. The error (`CacheError`) is
  one line on stderr naming the cache folder, exit 2, from `data check` too: unlike a DataError it
  says nothing about the data, so it is not the check's report on stdout.

Every cache file is read as hostile: .npy headers parsed without unpickling anything, the manifest
validated field by field, dtypes, shapes and sums checked against it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import DataConfig
from ..display import fmt_bytes
from ..errors import DiskFull, Interrupted, UsageError
from ..safe_files import (
    NotDirectory,
    NotRegularFile,
    TooLarge,
    atomic_write_text,
    no_space,
    open_dir,
    open_regular,
    read_regular,
)
from ..safe_text import printable
from .decode import decode_files
from .listing import Listing, file_key

FORMAT = 1
MANIFEST_LIMIT = 64 << 20    # bytes, plus MANIFEST_PER_FILE a listed file: ~100 bytes a file in practice
MANIFEST_PER_FILE = 4 << 10
HEADER_LIMIT = 1 << 16       # an .npy header's bytes: numpy writes 128 for these arrays
GENERATION = re.compile(r"(images|sums)-[0-9a-f]{12}\.npy")  # the only names a build ever deletes
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    size: int
    channels: int
    resize: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal[1]
    settings: Settings
    images: Annotated[str, Field(pattern=r"^images-[0-9a-f]{12}\.npy$")]  # a bare name: nothing outside the folder
    sums: Annotated[str, Field(pattern=r"^sums-[0-9a-f]{12}\.npy$")]
    rows: Annotated[int, Field(ge=0)]
    files: dict[str, tuple[int, int, int, str]]  # file_key(path): (size, mtime_ns, row or -1, why it was skipped)


@dataclass
class Cached:
    images: np.ndarray               # N x C x S x S uint8, memory-mapped
    sums: np.ndarray                 # N x 2 x C float64
    row: dict[str, int]              # decoded files: their row
    skipped: dict[str, str]          # files that could not be decoded: why
    info: dict = field(default_factory=dict)


class BadCache(Exception):
    pass


class CacheError(UsageError):
    """The cache cannot be used where it is (a link at one of its folders, a full disk, a read-only
    folder): exit 2, and not a DataError, which `data check` would report on stdout as the data's fault."""


def _levels(cfg: DataConfig, root: Path, size: int) -> tuple[Path, list[str]]:
    """The folder the user named (data.cache, or the data root) and the names below it, down to the settings folder."""
    settings = f"{size}px-{cfg.resize}-{'grey' if cfg.channels == 1 else 'rgb'}"
    if cfg.cache:
        # a shared cache folder: one subfolder per data root, named for people and told apart by a hash
        resolved = os.fsencode(root.resolve())  # the bytes: a folder name need not be UTF-8
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in root.resolve().name)[:40] or "root"
        return Path(cfg.cache).expanduser(), [f"{slug}-{hashlib.sha256(resolved).hexdigest()[:10]}", settings]
    return root, [".onecycle-cache", settings]


def cache_dir(cfg: DataConfig, root: Path, size: int) -> Path:
    base, levels = _levels(cfg, root, size)
    return base.joinpath(*levels)


def _write_error(path: Path, e: BaseException, needed: int = 0) -> CacheError:
    """A failed write as one line naming the cache folder, saying what to do."""
    if isinstance(e, DiskFull) or (isinstance(e, OSError) and no_space(e)):
        return CacheError(f"no space left on {path}{f' for {fmt_bytes(needed)} of decoded images' if needed else ''}: "
                          f"free some space, or set data.cache (or ONECYCLE_CACHE) to another disk")
    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    if isinstance(e, OSError) and e.errno == errno.ESTALE:  # a decode worker found another file under the name
        return CacheError(f"cache {path}: {Path(e.filename or '').name} was {why}: another process is tampering "
                          f"with the cache")
    return CacheError(f"cache {path} is not writable ({why}): set data.cache (or ONECYCLE_CACHE) to a writable folder")


@contextlib.contextmanager
def _opened(cfg: DataConfig, root: Path, size: int) -> Iterator[tuple[Path, int]]:
    """The settings folder (its path, for messages, and a descriptor), each level below the data root or
    data.cache opened without following a link and made where missing."""
    base, levels = _levels(cfg, root, size)
    path, fds = base, []
    try:
        try:
            if cfg.cache:
                base.mkdir(parents=True, exist_ok=True)  # the user's own folder, reached through a link if they say so
            fds.append(os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for name in levels:
                path = path / name
                fds.append(open_dir(path, fds[-1], create=True))
        except NotDirectory as e:
            raise CacheError(f"cache {path} is {e.strerror}: the cache never follows a link nor replaces what it did "
                             f"not make; remove it, or set data.cache (or ONECYCLE_CACHE) to a folder for the cache") \
                from None
        except OSError as e:
            if no_space(e):
                raise _write_error(path, e) from None
            raise CacheError(f"cache {path} cannot be created ({e.strerror}): set data.cache (or ONECYCLE_CACHE) to a "
                             f"writable folder") from None
        yield path, fds[-1]
    finally:
        for fd in fds:
            os.close(fd)


def _lock_file(directory: Path, dfd: int) -> int | None:
    """`.lock` opened to write, a regular file of the folder's own; None where the folder is read-only.
    A link, FIFO or device node under that name is removed and the file made anew: never opened."""
    for _ in range(3):
        try:
            mode = os.stat(".lock", dir_fd=dfd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise CacheError(f"cache {directory}/.lock is a directory: remove it (onecycle removes nothing it did "
                                 f"not make)")
            try:
                os.unlink(".lock", dir_fd=dfd)  # the link itself, never what it names
            except FileNotFoundError:
                pass
            except OSError:
                return None
        try:
            fd = os.open(".lock", os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:  # a link planted since it was looked at
                continue
            return None  # a read-only cache: it can be read, and a build says why it cannot write
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return fd
        os.close(fd)
    raise CacheError(f"cache {directory}/.lock is replaced by something other than a file as fast as onecycle "
                     f"makes it: another process is tampering with the cache")


@contextlib.contextmanager
def _locked(directory: Path, dfd: int) -> Iterator[None]:
    fd = _lock_file(directory, dfd)
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks while another process builds this cache
        yield
    finally:
        os.close(fd)


def _read(directory: Path, dfd: int, settings: Settings, files: int) -> tuple[Manifest | None, str]:
    try:
        raw = read_regular(directory / "manifest.json", MANIFEST_LIMIT + MANIFEST_PER_FILE * files, dir_fd=dfd)
    except FileNotFoundError:
        return None, ""
    except (NotRegularFile, TooLarge) as e:
        return None, f"manifest.json is {e.strerror}"
    except OSError as e:
        return None, f"manifest.json unreadable ({e.strerror})"
    try:
        m = Manifest.model_validate_json(raw)
    except (ValidationError, ValueError) as e:
        return None, f"manifest.json unreadable ({type(e).__name__})"
    if m.settings != settings:
        return None, "made with other settings"
    if any(not -1 <= rec[2] < m.rows for rec in m.files.values()):
        return None, "manifest.json names rows the images do not have"
    if m.rows > max(files, len(m.files)):  # a row per file listed when it was built: no more to read than that
        return None, f"manifest.json claims {m.rows:,} rows for {max(files, len(m.files)):,} files"
    return m, ""


def _array(path: Path, dfd: int, dtype, shape: tuple[int, ...], mapped: bool) -> np.ndarray:
    """An .npy of exactly this dtype and shape: memory-mapped, or read. Its header is parsed (a literal,
    never a pickle), and the file must hold exactly the bytes the header and shape give."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    with open_regular(path, HEADER_LIMIT + nbytes, dir_fd=dfd) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise BadCache(f"{path.name} is .npy version {version}")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        got, fortran, got_dtype = read(f, max_header_size=HEADER_LIMIT)
        if got_dtype != dtype or tuple(got) != shape or fortran:
            raise BadCache(f"{path.name} holds {got_dtype} {tuple(got)}, the manifest says {dtype} {shape}")
        offset = f.tell()
        if os.fstat(f.fileno()).st_size != offset + nbytes:
            raise BadCache(f"{path.name} is {os.fstat(f.fileno()).st_size:,} bytes, not the {offset + nbytes:,} "
                           f"its shape gives")
        if not mapped or nbytes == 0:
            buf = bytearray(nbytes)
            if f.readinto(buf) != nbytes:
                raise BadCache(f"{path.name} is shorter than its shape")
            return np.frombuffer(buf, dtype).reshape(shape)
        return np.memmap(f, dtype, "r", offset, shape)


def _open(directory: Path, dfd: int, m: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """The manifest's arrays, checked against it; BadCache if anything differs."""
    s = m.settings
    name = m.images
    try:
        images = _array(directory / m.images, dfd, np.uint8, (m.rows, s.channels, s.size, s.size), mapped=True)
        name = m.sums
        sums = _array(directory / m.sums, dfd, np.float64, (m.rows, 2, s.channels), mapped=False)
    except BadCache:
        raise
    except (NotRegularFile, TooLarge) as e:
        raise BadCache(f"{name} is {e.strerror}") from None
    except Exception as e:  # missing, truncated, a header that lies: all unusable
        raise BadCache(f"{type(e).__name__} reading its arrays") from None
    if not np.isfinite(sums).all() or (sums < 0).any() or (sums[:, 0] > 255 * s.size * s.size).any():
        raise BadCache("channel sums out of range")
    return images, sums


def _create(dfd: int, name: str, made: list[str]):
    """A new file of the build's, never one that was there (O_EXCL), never through a link; recorded in `made`."""
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
    made.append(name)
    return os.fdopen(fd, "r+b")


def _create_images(directory: Path, dfd: int, name: str, shape: tuple[int, ...], made: list[str]):
    """The images .npy, its header written and its bytes claimed up front (a memory map written past a
    full disk dies of SIGBUS, not an error); returns the open file and where the pixels start."""
    f = _create(dfd, name, made)
    pixels = int(np.prod(shape, dtype=np.int64))
    try:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                 "fortran_order": False, "shape": shape})
        f.flush()
        offset = f.tell()
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(f.fileno(), 0, offset + pixels)
        os.ftruncate(f.fileno(), offset + pixels)
        return f, offset
    except BaseException as e:
        with contextlib.suppress(OSError):  # closing flushes what the full disk refused, and fails again
            f.close()
        if isinstance(e, OSError):
            raise _write_error(directory, e, pixels) from None
        raise


def _remove_stale(dfd: int, keep: tuple[str, ...]) -> None:
    """Old generations and crashed builds' files: regular files of exactly the build's names, nothing else."""
    for name in os.listdir(dfd):
        if name in keep or not GENERATION.fullmatch(name):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dfd)  # readers keep their maps


def cached_images(listing: Listing, cfg: DataConfig, size: int, progress=None,
                  stop: Callable[[], int] | None = None) -> Cached:
    """The listing's images at size x size, from the cache where fresh, decoding the rest.

    `progress(done, total, images_per_s)` follows the decoding; `stop()` returning an exit code
    (not 0) ends it early: what is decoded is committed, then `Interrupted` is raised.
    """
    settings = Settings(size=size, channels=cfg.channels, resize=cfg.resize)
    started = time.perf_counter()
    with _opened(cfg, listing.root, size) as (directory, dfd), _locked(directory, dfd):
        m, note = _read(directory, dfd, settings, len(listing.entries))
        old = None
        if m is not None:
            try:
                old = _open(directory, dfd, m)
            except BadCache as e:
                m, note = None, str(e)
        if m is not None and all((rec := m.files.get(file_key(e.path))) is not None and rec[:2] == (e.size, e.mtime_ns)
                                 for e in listing.entries):
            cached = _result(listing, m, *old)
            cached.info = _info(directory, "hit", 0, len(listing.entries), cached, time.perf_counter() - started)
            return cached
        return _build(directory, dfd, listing, settings, m, old, note, progress, stop, started)


def _result(listing: Listing, m: Manifest, images: np.ndarray, sums: np.ndarray) -> Cached:
    row, skipped = {}, {}
    for e in listing.entries:
        _, _, r, why = m.files[file_key(e.path)]
        if r >= 0:
            row[e.path] = r
        else:
            skipped[e.path] = why
    return Cached(images, sums, row, skipped)


def _info(directory: Path, status: str, decoded: int, files: int, cached: Cached, seconds: float,
          note: str = "") -> dict:
    return {"path": printable(str(directory)), "status": status, "decoded": decoded, "reused": files - decoded,
            "seconds": round(seconds, 3), "images_per_s": round(decoded / seconds, 1) if decoded and seconds else None,
            "bytes": int(cached.images.nbytes), **({"note": note} if note else {})}


def _build(directory: Path, dfd: int, listing: Listing, settings: Settings, m: Manifest | None, old,
           note: str, progress, stop, started: float) -> Cached:
    entries = listing.entries
    n = len(entries)
    shape = (n, settings.channels, settings.size, settings.size)
    files: dict[str, tuple[int, int, int, str]] = {}
    jobs: list[tuple[int, str]] = []
    copies: list[tuple[int, int]] = []  # (old row, new row)
    for i, e in enumerate(entries):
        rec = m.files.get(file_key(e.path)) if m is not None else None
        if rec is not None and rec[:2] == (e.size, e.mtime_ns):
            if rec[2] >= 0:
                copies.append((rec[2], i))  # recorded once copied
            else:
                files[file_key(e.path)] = rec  # still the same unusable file: not tried again
        else:
            jobs.append((i, str(listing.root / e.path)))
    made: list[str] = []  # the new pair's names, removed on any failure before the manifest names them
    stopped = done = 0
    try:
        for _ in range(3):
            token = secrets.token_hex(6)
            images_name, sums_name = f"images-{token}.npy", f"sums-{token}.npy"
            try:
                images_file, offset = _create_images(directory, dfd, images_name, shape, made)
                break
            except FileExistsError:  # a planted name: another token
                continue
        else:
            raise CacheError(f"cache {directory}: every new images file name is taken: another process is tampering "
                             f"with the cache")
        with images_file:
            info = os.fstat(images_file.fileno())
            sums = np.zeros((n, 2, settings.channels), np.float64)
            try:
                if copies:
                    images = np.memmap(images_file, np.uint8, "r+", offset, shape)
                    copies.sort()
                    step = max(1, (64 << 20) // int(np.prod(shape[1:])))
                    for k in range(0, len(copies), step):
                        src, dst = (np.array(c) for c in zip(*copies[k:k + step]))
                        images[dst] = old[0][src]
                        sums[dst] = old[1][src]
                    images.flush()
                    del images
                    for src_row, i in copies:
                        files[file_key(entries[i].path)] = (entries[i].size, entries[i].mtime_ns, i, "")
                t0 = time.perf_counter()
                if progress is not None and jobs:
                    progress(0, len(jobs), 0.0)
                for results in decode_files(directory / images_name, offset, jobs, settings.channels, settings.size,
                                            settings.resize, (info.st_dev, info.st_ino)):
                    for row, error, s in results:
                        e = entries[row]
                        if error is None:
                            sums[row] = s
                        files[file_key(e.path)] = (e.size, e.mtime_ns, row if error is None else -1,
                                                   printable(error or ""))
                    done += len(results)
                    if progress is not None:
                        progress(done, len(jobs), done / max(time.perf_counter() - t0, 1e-9))
                    stopped = stop() if stop is not None else 0
                    if stopped and done < len(jobs):
                        break
            finally:  # whatever happened, what was decoded is kept: both files on disk before the manifest names them
                os.fsync(images_file.fileno())
                with _create(dfd, sums_name, made) as f:
                    np.save(f, sums, allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
                manifest = Manifest(format=FORMAT, settings=settings, images=images_name, sums=sums_name, rows=n,
                                    files=files)
                atomic_write_text(directory / "manifest.json", manifest.model_dump_json(), dir_fd=dfd)
                made.clear()  # committed: the manifest names them
                _remove_stale(dfd, (images_name, sums_name))
    except (OSError, DiskFull) as e:
        raise _write_error(directory, e) from None
    finally:
        for name in made:  # a failed build leaves nothing that fills the disk for the next one
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)
    if stopped and done < len(jobs):
        raise Interrupted(f"interrupted while decoding {listing.root}: {done} of {len(jobs)} images decoded and kept "
                          f"in the cache {directory}; the next run decodes only the rest", stopped)
    try:
        cached = _result(listing, manifest, *_open(directory, dfd, manifest))
    except BadCache as e:
        raise CacheError(f"cache {directory} changed while it was built ({e}): another process is writing to it") \
            from None
    status = "built" if m is None else "updated"
    cached.info = _info(directory, status, len(jobs), n, cached, time.perf_counter() - started, note)
    return cached
