"""A dataset as uint8 arrays, before it is placed anywhere: `onecycle data check --config mnist`.

Every reader (the built-in sets, a folder's cache) hands over `Arrays`: its images as `Images`,
its labels, classes and channel statistics, in numpy. `Images` is a gather that has not happened
yet (`source[rows]`, maybe centre-cropped): a folder's cache stays memory-mapped until its images
are copied, a chunk at a time, straight to where training reads them (`tensors.place`), so a
dataset never sits in host memory twice on its way to the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

CHUNK_BYTES = 64 << 20  # bytes per copy: big enough to stream, small enough to stage in pinned memory


@dataclass(frozen=True)
class Images:
    source: np.ndarray              # M x C x H x W uint8 (a memory map for a folder's cache)
    rows: np.ndarray | None = None  # which of them, in this order; None: all
    size: int | None = None         # centre crop to size x size; None: as stored

    def __len__(self) -> int:
        return len(self.source) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        c, h, w = self.source.shape[1:]
        return (len(self), c, self.size or h, self.size or w)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, part: slice) -> "Images":
        """The first N (`images[:n]`), or any slice: still not gathered."""
        rows = np.arange(len(self.source)) if self.rows is None else self.rows
        return replace(self, rows=rows[part])

    @property
    def chunk(self) -> int:
        """Images per copy."""
        return max(1, CHUNK_BYTES // max(1, int(np.prod(self.shape[1:]))))

    def fill(self, out: np.ndarray, start: int = 0) -> None:
        """Write images start .. start+len(out) into `out` (shape len(out) x C x H x W)."""
        n = len(out)
        if self.rows is None:
            part = self.source[start:start + n]
        else:
            part = self.source[self.rows[start:start + n]]
        if self.size is not None:
            h, w = part.shape[2:]
            top, left = (h - self.size) // 2, (w - self.size) // 2
            part = part[:, :, top:top + self.size, left:left + self.size]
        out[...] = part

    def chunks(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), self.chunk):
            out = np.empty((min(self.chunk, len(self) - start), *self.shape[1:]), np.uint8)
            self.fill(out, start)
            yield out

    def numpy(self, out: np.ndarray | None = None) -> np.ndarray:
        """All of them, gathered into `out` (or a new array) a chunk at a time."""
        out = np.empty(self.shape, np.uint8) if out is None else out
        for start in range(0, len(self), self.chunk):
            self.fill(out[start:start + self.chunk], start)
        return out


@dataclass(frozen=True)
class Arrays:
    name: str
    x_train: Images
    y_train: np.ndarray   # N, int64
    x_valid: Images
    y_valid: np.ndarray
    classes: list[str]
    mean: np.ndarray      # C, float32, in pixel units (0..255)
    std: np.ndarray
    report: dict = field(default_factory=dict)  # what data_report.json and `data check` say about the set


def channel_stats(images: Images) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images, from exact integer sums a chunk at a time."""
    c = images.shape[1]
    total = np.zeros(c, np.uint64)
    squares = np.zeros(c, np.uint64)
    for part in images.chunks():
        total += part.sum((0, 2, 3), dtype=np.uint64)
        squares += np.square(part, dtype=np.uint16).sum((0, 2, 3), dtype=np.uint64)  # 255^2 fits in 16 bits
    n = images.nbytes / c or 1  # no images: zeros, and the reader refuses the empty set by name
    return stats_from_sums(total.astype(np.float64), squares.astype(np.float64), n)


def stats_from_sums(total: np.ndarray, squares: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean * mean, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)
