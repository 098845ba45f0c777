"""Reading the dataset a config names: `onecycle data check --config my.yaml`.

`read_arrays` gives the uint8 arrays of a built-in set or of a folder (decoded into its cache first
if need be), `train_size` counts the training images without decoding any (`onecycle schedule`),
`check_dataset` says what is there or exactly what is missing. No torch here: `data check` on files
already there never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import DataConfig
from ..errors import DataError
from .arrays import Arrays
from .builtin import MNIST_SAMPLE_CLASSES, mnist_sample_sizes, read_builtin
from .builtin import train_size as builtin_train_size

# (images done, images in all, images per second): how decoding reports its progress
Progress = Callable[[int, int, float], None]


def read_arrays(cfg: DataConfig, progress: Progress | None = None, stop: Callable[[], bool] | None = None) -> Arrays:
    """The dataset a config names, as uint8 arrays; a folder is decoded into its cache first if need be."""
    if cfg.dataset == "folder":
        from .folder import read_folder  # the folder side (pydantic, PIL) only for folders
        return read_folder(cfg, progress, stop)
    return read_builtin(cfg)


def train_size(cfg: DataConfig) -> int:
    """How many training images a config uses, known without decoding any (for `onecycle schedule`)."""
    if cfg.dataset == "folder":
        from .folder import scan  # as in read_arrays
        n = sum(not e.valid for e in scan(cfg).entries)
        return min(n, cfg.train_size) if cfg.train_size else n
    return builtin_train_size(cfg)


def check_dataset(cfg: DataConfig, progress: Progress | None = None) -> dict:
    """Read the dataset without downloading: what is there, or exactly what is missing."""
    root = str(Path(cfg.root).expanduser())
    if cfg.dataset == "synthetic":  # generated on demand from the config alone: nothing on disk to check
        n, m, s = cfg.train_size or 2048, cfg.valid_size or 512, cfg.image_size
        return {"ok": True, "dataset": "synthetic", "root": root, "train": n, "valid": m,
                "shape": [cfg.channels, s, s], "classes": cfg.classes,
                "message": f"synthetic: ok, {n} training and {m} test images of {cfg.channels}x{s}x{s}, "
                           f"{cfg.classes} classes, generated"}
    try:
        if cfg.dataset == "mnist_sample":  # the package's own file: its headers say all there is to check
            n, m, shape = mnist_sample_sizes(cfg)
            k = len(MNIST_SAMPLE_CLASSES)
            return {"ok": True, "dataset": cfg.dataset, "root": root, "train": n, "valid": m, "shape": list(shape),
                    "classes": k, "message": f"mnist_sample: ok, {n} training and {m} test images of "
                                             f"{'x'.join(map(str, shape))}, {k} classes, bundled with onecycle"}
        arrays = read_arrays(cfg.model_copy(update={"download": False}), progress)
    except DataError as e:
        return {"ok": False, "dataset": cfg.dataset, "root": root, "message": str(e)}
    c, h, w = arrays.x_valid.shape[1:]
    report = {"ok": True, "dataset": cfg.dataset, "root": root, "train": len(arrays.x_train),
              "valid": len(arrays.x_valid), "shape": [c, h, w], "classes": len(arrays.classes)}
    if cfg.dataset == "folder":
        r = arrays.report
        report.update(r, classes=len(arrays.classes), class_names=r["classes"])
        cache = r["cache"]
        report["message"] = (f"folder: ok, {len(arrays.x_train)} training and {len(arrays.x_valid)} validation images "
                             f"of {c}x{h}x{w}, {len(arrays.classes)} classes ({r['layout']}) in {r['root']}; "
                             f"cache {cache['status']} ({cache['decoded']} decoded): {cache['path']}")
        return report
    where = "bundled with onecycle" if cfg.dataset == "mnist_sample" else f"in {root}"
    report["message"] = (f"{cfg.dataset}: ok, {len(arrays.x_train)} training and {len(arrays.x_valid)} test images of "
                         f"{c}x{h}x{w}, {len(arrays.classes)} classes, {where}")
    return report
