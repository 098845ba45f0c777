"""Pickles that cannot run code: `onecycle data check --config cifar --data-dir D`.

CIFAR-10 ships as pickled dicts (`cifar-10-batches-py/data_batch_1` ...), and a pickle is a
program: `pickle.load` calls whatever functions the file names, `os.system` included. A data file
must never run code, so CIFAR batches are read by `load`, whose unpickler admits only the few
globals a real batch names and refuses everything else before calling it.

What a real batch holds (checked on the files torchvision downloads, written by Python 2's cPickle,
and on batches re-pickled by numpy 1.x and 2.x at protocols 2 to 5): a dict of bytes keys, bytes,
lists of ints and of bytes, and one uint8 ndarray. The ndarray is rebuilt by numpy's own
reconstructors, whose module moved from `numpy.core` (1.x) to `numpy._core` (2.x); protocol 5
uses `_frombuffer`, protocols 0-2 from Python 3 write bytes through `_codecs.encode(str, "latin1")`.
"""

from __future__ import annotations

import codecs
import pickle
from typing import BinaryIO, Callable


class Refused(pickle.UnpicklingError):
    """The pickle names something a data file never holds; nothing it names was called."""


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # how Python 3 pickles bytes at protocols 0-2; only that use of _codecs.encode is admitted
    if codecs.lookup(encoding).name != "iso8859-1":
        raise Refused(f"_codecs.encode with encoding {encoding!r}, which pickled bytes never use")
    return codecs.encode(text, "latin1")


def _numpy(module: str, name: str) -> Callable:
    """numpy's own function, from where this numpy keeps it (numpy 2 moved numpy.core to numpy._core)."""
    import importlib

    import numpy
    core = "numpy._core" if int(numpy.__version__.split(".")[0]) >= 2 else "numpy.core"
    return getattr(importlib.import_module(module.replace("numpy._core", core).replace("numpy.core", core)), name)


# (module, name) -> what the unpickler gets instead of importing it
ALLOWED: dict[tuple[str, str], Callable[[], Callable]] = {
    ("_codecs", "encode"): lambda: _latin1,
    ("numpy", "ndarray"): lambda: _numpy("numpy", "ndarray"),
    ("numpy", "dtype"): lambda: _numpy("numpy", "dtype"),
    **{(module, name): (lambda module=module, name=name: _numpy(module, name))
       for base in ("numpy.core", "numpy._core")
       for module, name in ((f"{base}.multiarray", "_reconstruct"), (f"{base}.multiarray", "scalar"),
                            (f"{base}.numeric", "_frombuffer"))},
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        admitted = ALLOWED.get((module, name))
        if admitted is None:
            raise Refused(f"it asks for {module}.{name}, which a data file never holds: refused without "
                          f"calling it (data files never run code)")
        return admitted()


def load(f: BinaryIO):
    """`pickle.load(f, encoding="bytes")` (Python 2 str as bytes), admitting only `ALLOWED`; raises Refused."""
    return _Unpickler(f, encoding="bytes").load()
