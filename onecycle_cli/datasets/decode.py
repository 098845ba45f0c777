"""Image files to uint8 arrays, on every core: what the first `onecycle data check --config folder` spends its time on.

`decode_image` opens one file, takes the first frame of an animation, converts grey, RGB, RGBA and
palette images to the configured channels (as torchvision's ImageFolder does: alpha is dropped),
resizes it to a square and turns it upright (EXIF orientation, applied to the small square):
  crop    shorter side to `size`, then the centre square (torchvision's Resize + CenterCrop)
  squish  both sides to `size`, whatever the aspect ratio
  pad     longer side to `size`, centred on black
JPEGs are decoded at the smallest DCT scale that still covers `size` (PIL's draft mode): a
4000 px photo meant for 224 px is not decoded in full.

A file from someone else is read as hostile:
- it is opened without following a symbolic link, and only if it is a regular file (a FIFO named
  x.jpg would block the read forever);
- only the formats the README lists are parsed (`FORMATS`): PIL's thirty other parsers never see
  the file, so an EPS file named x.png is "not an image (EPS)", not a Ghostscript run;
- memory is bounded in bytes, not pixels: before any pixel is decoded, what the decoding will hold
  (the frame as PIL stores it, its converted copy, libjpeg's coefficient buffer for a progressive
  JPEG, libtiff's strip, libwebp's canvas) is added up from the header, and a file that needs more
  than `BUDGET` (256 MB, one worker per core) is skipped with the number. 16-bit and float images
  are scaled to 8 bits a band of rows at a time, never as a float64 copy of the whole frame.

`decode_files` runs `decode_image` over many files in a pool of processes (one per core), each
writing its images straight into their rows of the cache's .npy file (opened without following a
link, and checked to be the very file the cache created), and hands back, per file, an error
message or the image's per-channel sums. A file that cannot be decoded (a link, unreadable,
truncated, not an image, more memory than the budget or more pixels than PIL's decompression-bomb
limit) is an error for that file only.
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

from ..safe_files import NotRegularFile, TooLarge, open_regular

# What the README lists, and nothing else: each of PIL's other parsers is code that a file named x.png
# could reach (an EPS file makes PIL run Ghostscript). PPM is PPM and PGM, torchvision's extensions.
FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF", "PPM")
# The most one file may take while it is decoded (its frame as PIL stores it, a converted copy, libjpeg's
# coefficients, libtiff's and libwebp's buffers), with one worker per core: 64 MP of RGB (PIL keeps RGB at 4
# bytes a pixel), a 24 MP photo in any listed format but WebP (libwebp and PIL hold 4 copies: 16 MP).
BUDGET = 256 << 20
_WEBP_BYTES = 16  # per pixel: libwebp's canvas and decoding buffers, the frame handed over, PIL's copy
GREY = ("1", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
DEEP = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits: scaled down, a band at a time
BAND = 1 << 18  # pixels converted at once: 2 MB of float64, whatever the image's size

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
    from PIL import Image
    mode = "L" if channels == 1 else "RGB"
    try:
        f = open_regular(Path(path), BUDGET)  # never through a link, never a FIFO or a device
    except NotRegularFile as e:
        raise DecodeError(e.strerror) from None  # "a symbolic link", "a FIFO", ...
    except TooLarge:
        raise DecodeError(f"a file of more than {BUDGET >> 20} MB, the most one image may take to decode") from None
    except OSError as e:
        raise DecodeError(f"{type(e).__name__}: {e.strerror or 'cannot be read'}") from None
    with f:
        head = f.read(32)
        f.seek(0)
        try:
            with warnings.catch_warnings():
                # PIL's other warnings (a palette's transparency, an odd EXIF block) would reach the user's terminal
                # from every worker: the file is decoded or skipped with a reason, which says enough
                warnings.simplefilter("ignore")
                # above MAX_IMAGE_PIXELS PIL only warns (above twice that it refuses): both are refusals here
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                webp = _webp_size(head)  # libwebp allocates its canvas when the file is opened: measured before
                if webp is not None:
                    _afford(*webp, _WEBP_BYTES * webp[0] * webp[1] + os.fstat(f.fileno()).st_size, "WEBP")
                # only the formats the README lists: PIL's other parsers (EPS runs Ghostscript) never see the file
                with Image.open(f, formats=FORMATS) as im:
                    return _decode(im, f, mode, size, resize)
        except DecodeError:
            raise
        except Image.UnidentifiedImageError:
            raise DecodeError(f"not an image ({_sniff(head)})") from None
        except Image.DecompressionBombError as e:
            raise DecodeError(f"decompression bomb: {e}") from None
        except Warning as e:
            raise DecodeError(f"decompression bomb: {e}") from None
        except MemoryError:
            raise DecodeError("more memory than this machine has left") from None
        except Exception as e:  # truncated, unreadable, unsupported: all unusable
            detail = str(e).splitlines()[0][:200] if str(e) else "cannot be decoded"
            raise DecodeError(f"{type(e).__name__}: {detail}") from None


def _decode(im, f, mode: str, size: int, resize: str) -> np.ndarray:
    from PIL import Image, JpegImagePlugin
    w, h = im.size
    if w * h > (Image.MAX_IMAGE_PIXELS or math.inf):
        raise DecodeError(f"{w}x{h} pixels, above PIL's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS}")
    extra = 0  # what the format's decoder holds besides PIL's frame
    if isinstance(im, JpegImagePlugin.JpegImageFile):  # MPO too
        extra = _jpeg_coefficients(im, f)  # at full size: draft mode does not shrink them
        im.draft(mode, (size, size))  # decode at 1/2, 1/4 or 1/8 scale when that still covers size
    elif im.format == "TIFF":
        extra = _tiff_buffer(im)
    sw, sh = im.size  # as decoded: smaller than stored for a JPEG in draft mode
    work = _work_mode(im.mode, mode)
    converted = 0 if work == im.mode else sw * sh * _pixel_bytes(work)
    _afford(w, h, sw * sh * _pixel_bytes(im.mode) + converted + extra, f"{im.format} {im.mode}")
    im.load()  # the first frame of a GIF or an animated WebP
    turn = _orientation(im)
    # the frame and its converted copy, then only size x size: turned upright (EXIF orientation) once small
    a = _square(_convert(im, work), size, resize, turn)
    if a.ndim == 2:
        a = a[None] if mode == "L" else np.repeat(a[None], 3, axis=0)  # grey as RGB: one channel, copied thrice
    else:
        a = a.transpose(2, 0, 1)
    return np.ascontiguousarray(a)


def _afford(w: int, h: int, need: int, what: str) -> None:
    if need > BUDGET:
        raise DecodeError(f"{w}x{h} {what} needs {need / (1 << 20):,.0f} MB to decode, more than the "
                          f"{BUDGET >> 20} MB one image may take")


def _pixel_bytes(mode: str) -> int:
    # how PIL stores a pixel: one byte for 1, L and P, two for 16-bit grey, four for everything else (RGB too)
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _work_mode(have: str, want: str) -> str:
    """The mode decoded images are resized in: grey ones stay one channel even for RGB (copied after)."""
    return "L" if have in GREY else want


def _convert(im, mode: str):
    if im.mode == mode:
        return im
    if im.mode in DEEP:  # 16-bit and float greys: scaled, not clipped, to 8 bits, a band of rows at a time
        from PIL import Image
        w, h = im.size
        hi = 65535.0 if im.mode.startswith("I;16") or im.getextrema()[1] > 255 else 255.0
        out = np.empty((h, w), np.uint8)
        rows = max(1, BAND // max(w, 1))
        for top in range(0, h, rows):
            band = np.asarray(im.crop((0, top, w, min(h, top + rows))), dtype=np.float64)
            band *= 255.0 / hi
            out[top:top + rows] = np.clip(band, 0, 255, out=band).round(out=band)
        return Image.fromarray(out, "L")
    return im.convert(mode)  # palette, RGBA, CMYK, LA, ...: PIL's conversions, alpha dropped


def _square(im, size: int, resize: str, turn: int) -> np.ndarray:
    """size x size (x 3) uint8, turned upright by EXIF orientation `turn` once it is small."""
    from PIL import Image
    w, h = im.size
    if resize == "squish":
        out = im.resize((size, size), Image.BILINEAR)
    elif resize == "crop":  # the centre square of the shorter side, resized in one step
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        out = im.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
    else:  # pad: fit inside, turned, then centred on black
        scale = size / max(w, h)
        fit = _turned(np.asarray(im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR),
                                 dtype=np.uint8), turn)
        out = np.zeros((size, size, *fit.shape[2:]), np.uint8)
        top, left = (size - fit.shape[0]) // 2, (size - fit.shape[1]) // 2
        out[top:top + fit.shape[0], left:left + fit.shape[1]] = fit
        return out
    return _turned(np.asarray(out, dtype=np.uint8), turn)


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))  # EXIF (or XMP) orientation, 1 = as stored
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        return 1


def _turned(a: np.ndarray, turn: int) -> np.ndarray:
    return _TURNS[turn](a) if turn in _TURNS else a


# EXIF orientations 2-8 as PIL's exif_transpose turns them, on an H x W (x C) array
_TURNS = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
          6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """A WebP file's canvas, from its first 30 bytes (as PIL reads it), or None for another file."""
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    kind = head[12:16]
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if kind == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if kind == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_coefficients(im, f) -> int:
    """Bytes libjpeg holds for the whole image's DCT coefficients: a progressive JPEG, or one whose first
    scan does not carry every component, is buffered whole (2 bytes a coefficient, at full size), else 0."""
    if im.info.get("progressive") or _first_scan_components(f) != len(im.layer):
        w, h = im.size
        hmax = max((max(1, layer[1]) for layer in im.layer), default=1)
        vmax = max((max(1, layer[2]) for layer in im.layer), default=1)
        return sum((-(-w * max(1, hs) // (8 * hmax)) + hs) * (-(-h * max(1, vs) // (8 * vmax)) + vs) * 128
                   for _, hs, vs, _ in im.layer)
    return 0


def _tiff_buffer(im) -> int:
    """Bytes libtiff reads one strip or tile into: a strip may be the whole image (at 4 bytes a pixel
    where libtiff hands PIL RGBA: JPEG- or YCbCr-coded TIFFs)."""
    w, h = im.size
    try:
        tags = im.tag_v2
        if 322 in tags or 323 in tags:
            area = int(tags[322]) * int(tags[323])
        else:
            area = w * min(h, int(tags.get(278, h)))  # RowsPerStrip; absent: one strip
        bits = tags.get(258, 8)
        bits = max(bits) if isinstance(bits, tuple) else int(bits)
        return max(0, area) * max(4, int(tags.get(277, 1)) * -(-bits // 8))
    except Exception:  # tags that make no sense: as if the image were one strip of 8 bytes a pixel
        return w * h * 8


def _first_scan_components(f) -> int | None:
    """How many components the first scan of the JPEG in `f` carries (None: not found), read from its
    segment lengths, as libjpeg reads them; `f` is put back where it was."""
    at = f.tell()
    try:
        f.seek(2)  # after SOI
        for _ in range(10_000):
            b = f.read(2)
            if len(b) < 2 or b[0] != 0xFF:
                return None
            if b[1] == 0xFF:  # a fill byte
                f.seek(-1, 1)
                continue
            if b[1] == 0x01 or 0xD0 <= b[1] <= 0xD7:  # markers without a length
                continue
            n = f.read(3)
            if len(n) < 2:
                return None
            if b[1] == 0xDA:  # start of scan: length, then the number of components in it
                return n[2] if len(n) == 3 else None
            f.seek(int.from_bytes(n[:2], "big") - 3, 1)
        return None
    finally:
        f.seek(at)


def _sniff(head: bytes) -> str:
    """The format a file's first bytes claim (by PIL's own signature checks, nothing parsed), for a message."""
    from PIL import Image
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(head) is True:
                return name if name not in FORMATS else f"a damaged {name} header"
        except Exception:
            continue
    return "unknown format"


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
