"""Image files to uint8 arrays, on every core: what the first `onecycle data check --config folder` spends its time on.

`decode_image` opens one file with PIL, turns it upright (EXIF orientation), takes the first frame
of an animation, converts grey, RGB, RGBA and palette images to the configured channels (as
torchvision's ImageFolder does: alpha is dropped) and resizes it to a square:
  crop    shorter side to `size`, then the centre square (torchvision's Resize + CenterCrop)
  squish  both sides to `size`, whatever the aspect ratio
  pad     longer side to `size`, centred on black
JPEGs are decoded at the smallest DCT scale that still covers `size` (PIL's draft mode): a
4000 px photo meant for 224 px is not decoded in full.

`decode_files` runs `decode_image` over many files in a pool of processes (one per core), each
writing its images straight into their rows of the cache's .npy file (opened without following a
link, and checked to be the very file the cache created), and hands back, per file, an error
message or the image's per-channel sums. A file that cannot be decoded (unreadable,
truncated, not an image, or more pixels than PIL's decompression-bomb limit) is an error for that
file only.
"""

from __future__ import annotations

import concurrent.futures as futures
import errno
import math
import multiprocessing
import os
import signal
import stat
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

CHUNK = 32  # files per task: big enough to amortise the hand-over, small enough for a live progress bar
MIN_PER_WORKER = 2 * CHUNK  # fewer files than this per core are decoded in-process: a pool costs ~0.3 s to start


class DecodeError(Exception):
    """This file is not a usable image; the message says why."""


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use, not what the machine has
    except AttributeError:
        return os.cpu_count() or 1


def decode_image(path: str | Path, channels: int, size: int, resize: str) -> np.ndarray:
    """channels x size x size uint8, or a DecodeError saying why not."""
    from PIL import Image, ImageOps
    mode = "L" if channels == 1 else "RGB"
    try:
        with warnings.catch_warnings():
            # PIL's other warnings (a palette's transparency, an odd EXIF block) would reach the user's terminal
            # from every worker: the file is decoded or skipped with a reason, which says enough
            warnings.simplefilter("ignore")
            # above MAX_IMAGE_PIXELS PIL only warns (above twice that it refuses): both are refusals here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > (Image.MAX_IMAGE_PIXELS or math.inf):
                    raise DecodeError(f"{w}x{h} pixels, above PIL's decompression-bomb limit of "
                                      f"{Image.MAX_IMAGE_PIXELS}")
                if im.format == "JPEG":
                    im.draft(mode, (size, size))  # decode at 1/2, 1/4 or 1/8 scale when that still covers size
                im.load()  # the first frame of a GIF or an animated WebP
                try:
                    upright = ImageOps.exif_transpose(im)
                except Exception:  # a malformed EXIF block: keep the pixels as stored
                    upright = im
                if upright.mode == "L" and mode == "RGB":  # grey: resize one channel, then copy it thrice
                    return np.repeat(_square(upright, size, resize), 3, axis=0)
                return _square(_convert(upright, mode), size, resize)
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise DecodeError(f"decompression bomb: {e}") from None
    except Warning as e:
        raise DecodeError(f"decompression bomb: {e}") from None
    except Exception as e:  # truncated, not an image, unreadable, unsupported: all unusable
        raise DecodeError(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'cannot be decoded'}") \
            from None


def _convert(im, mode: str):
    if im.mode == mode:
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit and float greys: scale, do not clip, to 8 bits
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        from PIL import Image
        im = Image.fromarray(np.clip(a * (255.0 / hi), 0, 255).round().astype(np.uint8), "L")
    return im.convert(mode)  # palette, RGBA, CMYK, LA, ...: PIL's conversions, alpha dropped


def _square(im, size: int, resize: str) -> np.ndarray:
    from PIL import Image
    w, h = im.size
    if resize == "squish":
        out = im.resize((size, size), Image.BILINEAR)
    elif resize == "crop":  # the centre square of the shorter side, resized in one step
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        out = im.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
    else:  # pad: fit inside, centred on black
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        out = Image.new(im.mode, (size, size))
        out.paste(im.resize((nw, nh), Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    a = np.asarray(out, dtype=np.uint8)
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def open_target(target: str, identity: tuple[int, int] | None) -> int:
    """The .npy the parent created, opened to write: never through a link planted under its name, and
    (given its (st_dev, st_ino)) that very file, not one put in its place since."""
    fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO: no wait
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (identity is not None and (st.st_dev, st.st_ino) != tuple(identity)):
        os.close(fd)
        raise OSError(errno.ESTALE, "replaced while the images were decoded into it", target)
    os.set_blocking(fd, True)
    return fd


def decode_chunk(target: str, offset: int, jobs: list[tuple[int, str]], channels: int, size: int, resize: str,
                 identity: tuple[int, int] | None = None) -> list[tuple[int, str | None, np.ndarray | None]]:
    """Decode (row, path) jobs into the rows of the .npy at `target` whose data starts at byte `offset`
    (the file whose (st_dev, st_ino) is `identity`); returns (row, error or None, [per-channel sums,
    sums of squares]) for each."""
    fd = open_target(target, identity)  # pwrite into the page cache: cheaper than faulting in a memory map
    out = []
    try:
        for row, path in jobs:
            try:
                a = decode_image(path, channels, size, resize)
            except DecodeError as e:
                out.append((row, str(e), None))
                continue
            os.pwrite(fd, a.data, offset + row * a.nbytes)
            # exact per-channel sums, so any subset's mean and std follow without reading the pixels again
            flat = a.reshape(channels, -1).astype(np.int64)
            out.append((row, None, np.stack([flat.sum(1), np.einsum("ij,ij->i", flat, flat)]).astype(np.float64)))
    finally:
        os.close(fd)  # no fsync here: the parent syncs the file once, before its manifest names it
    return out


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the parent decides what it means (finish and keep what is done)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(workers: int) -> futures.ProcessPoolExecutor:
    # forkserver: the workers are forked from a clean server process, never from this one, whose
    # threads (torch's, a progress bar's) fork() would copy in whatever state they are in
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        # the server imports the main module (as spawn would in each worker) and this one once, for all workers
        ctx.set_forkserver_preload(["__main__", __name__])
    return futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint)


def decode_files(target: Path, offset: int, jobs: list[tuple[int, str]], channels: int, size: int, resize: str,
                 identity: tuple[int, int] | None = None) -> Iterator[list[tuple[int, str | None, np.ndarray | None]]]:
    """Decode every (row, path) job into the .npy at `target` (its data at byte `offset`; the file whose
    (st_dev, st_ino) is `identity`), yielding each chunk's results as it finishes.

    In-process when there are few files, else in a pool of one process per core. A caller that
    stops iterating keeps what it has been given; the rows decoded meanwhile are just not reported.
    """
    chunks = [jobs[i:i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    workers = min(cores(), len(jobs) // MIN_PER_WORKER)
    if workers <= 1:
        for chunk in chunks:
            yield decode_chunk(str(target), offset, chunk, channels, size, resize, identity)
        return
    pool = _pool(workers)
    try:
        pending = [pool.submit(decode_chunk, str(target), offset, chunk, channels, size, resize, identity)
                   for chunk in chunks]
        for f in futures.as_completed(pending):
            yield f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
