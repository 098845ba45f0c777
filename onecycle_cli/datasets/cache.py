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

Every cache file is read as hostile: `np.load(allow_pickle=False)`, the manifest validated field
by field, dtypes, shapes and sums checked against it. A bad cache is decoded again, with a note.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import DataConfig
from ..errors import DataError, Interrupted
from ..safe_files import atomic_write_text
from .decode import decode_files
from .folder import Listing, file_key, printable

FORMAT = 1


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


def cache_dir(cfg: DataConfig, root: Path, size: int) -> Path:
    if cfg.cache:
        # a shared cache folder: one subfolder per data root, named for people and told apart by a hash
        resolved = os.fsencode(root.resolve())  # the bytes: a folder name need not be UTF-8
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in root.resolve().name)[:40] or "root"
        base = Path(cfg.cache).expanduser() / f"{slug}-{hashlib.sha256(resolved).hexdigest()[:10]}"
    else:
        base = root / ".onecycle-cache"
    return base / f"{size}px-{cfg.resize}-{'grey' if cfg.channels == 1 else 'rgb'}"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    try:
        lock = open(directory / ".lock", "a+")
    except OSError:  # a read-only cache: it can be read, and a build says why it cannot write
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks while another process builds this cache
        yield


def _read(directory: Path, settings: Settings) -> tuple[Manifest | None, str]:
    path = directory / "manifest.json"
    if not path.exists():
        return None, ""
    try:
        m = Manifest.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as e:
        return None, f"manifest.json unreadable ({type(e).__name__})"
    if m.settings != settings:
        return None, "made with other settings"
    if any(not -1 <= rec[2] < m.rows for rec in m.files.values()):
        return None, "manifest.json names rows the images do not have"
    return m, ""


def _open(directory: Path, m: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """The manifest's arrays, checked against it; BadCache if anything differs."""
    s = m.settings
    try:
        images = np.load(directory / m.images, mmap_mode="r", allow_pickle=False)
        sums = np.load(directory / m.sums, allow_pickle=False)
    except Exception as e:  # missing, truncated, a pickle, a header that lies about the size: all unusable
        raise BadCache(f"{type(e).__name__} reading its arrays") from None
    if images.dtype != np.uint8 or images.shape != (m.rows, s.channels, s.size, s.size) or images.ndim != 4:
        raise BadCache(f"images are {images.dtype} {images.shape}, the manifest says uint8 "
                       f"({m.rows}, {s.channels}, {s.size}, {s.size})")
    if sums.dtype != np.float64 or sums.shape != (m.rows, 2, s.channels):
        raise BadCache("channel sums do not match the manifest")
    if not np.isfinite(sums).all() or (sums < 0).any() or (sums[:, 0] > 255 * s.size * s.size).any():
        raise BadCache("channel sums out of range")
    return images, sums


def _reserve(path: Path, nbytes: int, directory: Path) -> None:
    """Claim the disk space up front: a memory map written past a full disk dies of SIGBUS, not an error."""
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)
        finally:
            os.close(fd)
    except OSError as e:
        path.unlink(missing_ok=True)
        raise DataError(f"cache {directory}: cannot reserve {nbytes / 1e9:.2f} GB for the decoded images "
                        f"({e.strerror}); free some space or set data.cache (or ONECYCLE_CACHE) to another disk") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cached_images(listing: Listing, cfg: DataConfig, size: int, progress=None,
                  stop: Callable[[], int] | None = None) -> Cached:
    """The listing's images at size x size, from the cache where fresh, decoding the rest.

    `progress(done, total, images_per_s)` follows the decoding; `stop()` returning an exit code
    (not 0) ends it early: what is decoded is committed, then `Interrupted` is raised.
    """
    directory = cache_dir(cfg, listing.root, size)
    settings = Settings(size=size, channels=cfg.channels, resize=cfg.resize)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cache {directory} cannot be created ({e.strerror}): set data.cache (or ONECYCLE_CACHE) "
                        f"to a writable folder") from None
    started = time.perf_counter()
    with _locked(directory):
        m, note = _read(directory, settings)
        old = None
        if m is not None:
            try:
                old = _open(directory, m)
            except BadCache as e:
                m, note = None, str(e)
        if m is not None and all((rec := m.files.get(file_key(e.path))) is not None and rec[:2] == (e.size, e.mtime_ns)
                                 for e in listing.entries):
            cached = _result(listing, m, *old)
            cached.info = _info(directory, "hit", 0, len(listing.entries), cached, time.perf_counter() - started)
            return cached
        return _build(directory, listing, cfg, settings, m, old, note, progress, stop, started)


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


def _build(directory: Path, listing: Listing, cfg: DataConfig, settings: Settings, m: Manifest | None, old,
           note: str, progress, stop, started: float) -> Cached:
    entries = listing.entries
    n = len(entries)
    token = secrets.token_hex(6)
    images_name, sums_name = f"images-{token}.npy", f"sums-{token}.npy"
    shape = (n, settings.channels, settings.size, settings.size)
    try:
        created = np.lib.format.open_memmap(directory / images_name, "w+", np.uint8, shape)
        offset = created.offset  # where the pixels start, after the .npy header
        del created
    except OSError as e:
        raise DataError(f"cache {directory} is not writable ({e.strerror}): set data.cache (or ONECYCLE_CACHE) "
                        f"to a writable folder") from None
    _reserve(directory / images_name, (directory / images_name).stat().st_size, directory)
    sums = np.zeros((n, 2, settings.channels), np.float64)
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
    stopped = 0
    try:
        if copies:
            images = np.load(directory / images_name, mmap_mode="r+", allow_pickle=False)
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
        done, t0 = 0, time.perf_counter()
        if progress is not None and jobs:
            progress(0, len(jobs), 0.0)
        for results in decode_files(directory / images_name, offset, jobs, settings.channels, settings.size,
                                    settings.resize):
            for row, error, s in results:
                e = entries[row]
                if error is None:
                    sums[row] = s
                files[file_key(e.path)] = (e.size, e.mtime_ns, row if error is None else -1, printable(error or ""))
            done += len(results)
            if progress is not None:
                progress(done, len(jobs), done / max(time.perf_counter() - t0, 1e-9))
            stopped = stop() if stop is not None else 0
            if stopped and done < len(jobs):
                break
    finally:  # whatever happened, what was decoded is kept
        np.save(directory / sums_name, sums, allow_pickle=False)
        for name in (images_name, sums_name):  # on disk before the manifest names them
            _fsync(directory / name)
        manifest = Manifest(format=FORMAT, settings=settings, images=images_name, sums=sums_name, rows=n, files=files)
        atomic_write_text(directory / "manifest.json", manifest.model_dump_json())
        for stale in [*directory.glob("images-*.npy"), *directory.glob("sums-*.npy")]:
            if stale.name not in (images_name, sums_name):
                stale.unlink(missing_ok=True)  # an old generation, or a crashed build's: readers keep their maps
    if stopped and done < len(jobs):
        raise Interrupted(f"interrupted while decoding {listing.root}: {done} of {len(jobs)} images decoded and kept "
                          f"in the cache {directory}; the next run decodes only the rest", stopped)
    cached = _result(listing, manifest, *_open(directory, manifest))
    status = "built" if m is None else "updated"
    cached.info = _info(directory, status, len(jobs), n, cached, time.perf_counter() - started, note)
    return cached
