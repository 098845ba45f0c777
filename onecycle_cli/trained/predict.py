"""Classifying image files with a run's model: `onecycle predict runs/<id> photos/ extra.jpg > labels.csv`.

Files and folders (walked as a training folder is: hidden entries and links below it are not
followed, only image extensions) are decoded as the run's training data was, by the same code and
with the same refusals (`datasets.decode`: never through a link, never a FIFO, bounded memory), at
the run's channels and size and resize mode, then centre-cropped to the model's input as its
validation images were. They go through in chunks: a pool of decoders (one per core) fills a
temporary .npy, the model takes it in batches (test-time flips batched with the images), and each
chunk's top-k is read to the host once and written as CSV rows (`path,label,probability`, then
`label_2,probability_2`, ...) before the next is decoded, so memory does not grow with the files.
A file that cannot be decoded is skipped and reported on stderr, as a folder's bad files are.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, TextIO

import numpy as np
import torch

from ..datasets.decode import decode_files
from ..errors import DataError
from ..safe_text import plain, printable
from .load import Trained
from .scores import probabilities

CHUNK_BYTES = 256 << 20  # decoded images held at once
CHUNK_FILES = 4096


def list_inputs(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The files to classify, in the order given (a folder's sorted), and those skipped unopened with why."""
    from ..datasets.folder import walk_images
    files, skipped = [], []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():  # the user named it: a link to a folder is followed here, never below it
            for rel, _, _, why in sorted(walk_images(path, path)):
                (skipped.append((str(path / rel), why)) if why else files.append(str(path / rel)))
        elif os.path.lexists(path):
            files.append(str(path))  # decoding refuses a link, a FIFO, a device with its reason
        else:
            raise DataError(f"{given}: no such file or folder")
    return files, skipped


def cell(text: str) -> str:
    """A path or class name as a CSV cell that is safe on a terminal (stdout often is one): bytes that are not
    UTF-8 as \\xNN, control characters (ESC, CR, a newline in a file name) as their escapes."""
    return plain(printable(text)).replace("\n", "\\n")


def columns(k: int) -> list[str]:
    return ["path", "label", "probability"] + [f"{name}_{i}" for i in range(2, k + 1) for name in ("label",
                                                                                                  "probability")]


def decoded_chunks(trained: Trained, files: list[str], workdir: Path
                   ) -> Iterator[tuple[list[int], np.ndarray, dict[int, str]]]:
    """(indices into `files` decoded, their images cropped to the model's size, {index: why not}) a chunk at a time."""
    c, size = trained.shape[0], trained.shape[-1]
    stored, resize = trained.stored, trained.config.data.resize
    per_chunk = max(1, min(CHUNK_FILES, CHUNK_BYTES // (c * stored * stored)))
    target = workdir / "chunk.npy"
    for start in range(0, len(files), per_chunk):
        names = files[start:start + per_chunk]
        target.unlink(missing_ok=True)
        out = np.lib.format.open_memmap(target, "w+", np.uint8, (len(names), c, stored, stored))
        st = os.stat(target)
        errors = {}
        for results in decode_files(target, out.offset, list(enumerate(names)), c, stored, resize,
                                    (st.st_dev, st.st_ino)):
            errors.update({start + row: why for row, why, _ in results if why})
        ok = [i for i in range(len(names)) if start + i not in errors]
        top = (stored - size) // 2
        images = np.ascontiguousarray(out[ok][:, :, top:top + size, top:top + size])
        del out
        yield [start + i for i in ok], images, errors


def top_k(trained: Trained, images: np.ndarray, k: int, tta: bool, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, classes) of each image's k most likely classes, read from the device once."""
    probs, classes = [], []
    step = max(1, batch // 2) if tta else batch
    for start in range(0, len(images), step):
        x = torch.from_numpy(images[start:start + step]).to(trained.device, non_blocking=True)
        p, i = probabilities(trained, x, tta).topk(k, 1)
        probs.append(p)
        classes.append(i)
    return torch.cat(probs).cpu().numpy(), torch.cat(classes).cpu().numpy()


def predict_files(trained: Trained, paths: list[str], out: TextIO, warn: Callable[[str], None], top: int = 3,
                  tta: bool = False, batch: int | None = None, strict: bool = False) -> dict:
    """Write the CSV of every file's prediction to `out`; a summary (files, predicted, skipped) back."""
    files, skipped = list_inputs(paths)
    if not files and not skipped:
        raise DataError(f"{', '.join(map(printable, paths[:3]))}: no image files found (expected "
                        f"{', '.join(_extensions())})")
    k = max(1, min(top, len(trained.classes)))
    batch = batch or trained.config.train.eval_batch_size
    writer = csv.writer(out, lineterminator="\n")
    predicted = 0
    bad = [(printable(p), why) for p, why in skipped]
    if strict and bad:
        raise DataError(f"--strict and {bad[0][0]} is {bad[0][1]}")
    with tempfile.TemporaryDirectory(prefix="onecycle-predict-") as workdir:
        for index, images, errors in decoded_chunks(trained, files, Path(workdir)):
            bad += [(printable(files[i]), why) for i, why in sorted(errors.items())]
            if strict and bad:
                raise DataError(f"--strict and {bad[0][0]} could not be decoded ({bad[0][1]})")
            if not index:
                continue
            probs, classes = top_k(trained, images, k, tta, batch)
            if not predicted:
                writer.writerow(columns(k))  # with the first predictions: none at all is an error, not a header
            for i, p, c in zip(index, probs, classes):
                writer.writerow([cell(files[i])] + [v for j in range(k)
                                                      for v in (cell(trained.classes[c[j]]), f"{p[j]:.6g}")])
            out.flush()
            predicted += len(index)
    if not predicted:
        raise DataError(f"none of the {len(files) + len(skipped)} files could be decoded: {bad[0][0]} ({bad[0][1]})")
    for path, why in bad[:20]:
        warn(f"skipped {path}: {why}")
    if len(bad) > 20:
        warn(f"... and {len(bad) - 20} more files skipped")
    if bad:
        warn(f"{len(bad)} of {len(files) + len(skipped)} files could not be decoded and were skipped (--strict "
             f"refuses them)")
    return {"files": len(files) + len(skipped), "predicted": predicted, "skipped": len(bad)}


def _extensions() -> list[str]:
    from ..datasets.folder import IMAGE_EXTENSIONS
    return list(IMAGE_EXTENSIONS)
