"""Datasets: `onecycle data check --config my.yaml`.

The built-in sets (`builtin.py`) and the user's own image folders (`folder.py`: layouts and the
split; `decode.py`: PIL on every core; `cache.py`: the uint8 cache) are read into `Arrays`
(`arrays.py`), in numpy, by `read.py`. `tensors.py` places them where training reads them: one uint8 tensor on
the device, or pinned host memory when the device has no room (`Dataset`, `load_dataset`).
Importing this package does not import torch, so `data check` on files already there never does.
"""

from __future__ import annotations

from .arrays import Arrays, Images, channel_stats
from .builtin import DOWNLOADERS, LOADERS, MNIST_SAMPLE_CLASSES, download_dataset, mnist_sample_sizes, read_builtin
from .read import Progress, check_dataset, read_arrays, train_size

__all__ = ["Arrays", "Images", "channel_stats", "read_arrays", "check_dataset", "train_size", "download_dataset",
           "Dataset", "load_dataset", "DOWNLOADERS", "LOADERS", "MNIST_SAMPLE_CLASSES", "mnist_sample_sizes",
           "read_builtin", "Progress"]


def __getattr__(name: str):
    # the torch side (`Dataset`, `load_dataset`, `place`), imported on first use only
    if name in ("Dataset", "load_dataset", "place"):
        from . import tensors
        return getattr(tensors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
