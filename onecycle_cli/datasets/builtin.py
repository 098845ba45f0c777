"""The built-in datasets as uint8 arrays: `onecycle data check --config cifar`.

Each loader reads one of torchvision's on-disk layouts (or the bundled / generated sets) into
`Arrays`: images N x C x H x W uint8, labels int64, plus the per-channel mean and std of the
training images. Reading is done here, by hand, rather than through torchvision's Dataset classes:
those decode to PIL per image, and their integrity checks turn a truncated file into an opaque
assertion instead of a message naming the file. Nothing here imports torch until a download or the
synthetic set needs it, so `onecycle data check` on files already there starts quickly.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .. import memory, safe_pickle
from ..config import DataConfig
from ..errors import DataError
from ..network import reach
from ..safe_files import TooLarge, not_a_file, open_regular, read_regular
from .arrays import Arrays, Images, channel_stats


def _finish(name: str, xtr, ytr, xva, yva, classes, cfg: DataConfig) -> Arrays:
    if cfg.train_size:
        xtr, ytr = xtr[:cfg.train_size], ytr[:cfg.train_size]
    if cfg.valid_size:
        xva, yva = xva[:cfg.valid_size], yva[:cfg.valid_size]
    xtr, xva = Images(xtr), Images(xva)
    mean, std = channel_stats(xtr)
    return Arrays(name, xtr, ytr.astype(np.int64), xva, yva.astype(np.int64), list(classes), mean, std)


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: the idx files of torchvision's <root>/<Name>/raw layout

IDX_LIMIT = 1 << 30      # MNIST's largest idx file is 47 MB
CIFAR_BATCH_LIMIT = 1 << 28  # a CIFAR-10 batch is 31 MB

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "valid": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path, expect_dims: int) -> np.ndarray:
    """One uint8 idx file (magic 0x0000080N, N big-endian sizes, then the bytes), checked; never a FIFO or
    a device (it could block or never end), never more than IDX_LIMIT bytes."""
    try:
        data = read_regular(path, IDX_LIMIT, follow=True)  # a dataset folder linked from a shared disk is fine
    except TooLarge as e:
        raise DataError(f"{path}: {e.strerror}: not an MNIST idx file; download it again") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check its permissions, or download it again") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] != expect_dims:
        raise DataError(f"{path}: not a uint8 idx file with {expect_dims} dimension(s) "
                        f"(magic {data[:4].hex() or 'missing'}, expected 0000080{expect_dims})")
    if len(data) < 4 + 4 * expect_dims:
        raise DataError(f"{path}: idx header cut short ({len(data)} bytes); the file is truncated, download it again")
    dims = struct.unpack(f">{expect_dims}I", data[4:4 + 4 * expect_dims])
    body = data[4 + 4 * expect_dims:]
    need = math.prod(dims)  # exact: numpy's int64 product wraps (2**31 x 2**31 x 4 is 0)
    if len(body) != need:
        raise DataError(f"{path}: header says {'x'.join(map(str, dims))} = {need} bytes, the file holds "
                        f"{len(body)}: the file is truncated or corrupt; download it again")
    return np.frombuffer(body, np.uint8).reshape(dims)


def _idx_layout(folder: str) -> str:
    files = "\n".join(f"    {name}" for pair in IDX_FILES.values() for name in pair)
    return f"<root>/{folder}/raw/ holding the four uncompressed idx files:\n{files}"


def _load_idx_dataset(folder: str, classes: list[str], download: Callable[[Path], None]):
    def load(cfg: DataConfig) -> Arrays:
        raw = Path(cfg.root).expanduser() / folder / "raw"
        _ensure([raw / f for pair in IDX_FILES.values() for f in pair], cfg, download, _idx_layout(folder))
        parts = {}
        for split, (images, labels) in IDX_FILES.items():
            x, y = read_idx(raw / images, 3), read_idx(raw / labels, 1)
            if len(x) != len(y):
                raise DataError(f"{raw}: {images} holds {len(x)} images but {labels} {len(y)} labels")
            if y.size and y.max() >= len(classes):
                raise DataError(f"{raw / labels}: label {y.max()} out of range for {len(classes)} classes")
            parts[split] = x[:, None], y.astype(np.int64)
        return _finish(folder.lower(), *parts["train"], *parts["valid"], classes, cfg)
    return load


# --------------------------------------------------------------------------------------------
# CIFAR-10: torchvision's <root>/cifar-10-batches-py layout of pickled batches

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_LAYOUT = ("<root>/cifar-10-batches-py/ holding data_batch_1 .. data_batch_5 and test_batch "
                "(pickled dicts with b'data' as N x 3072 uint8, rows R then G then B, and b'labels')")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open_regular(path, CIFAR_BATCH_LIMIT, follow=True) as f:  # never a FIFO, a device or 4 GB
            batch = safe_pickle.load(f)  # a pickle names functions to call: only numpy's own are admitted
    except safe_pickle.Refused as e:
        raise DataError(f"{path}: not a readable CIFAR-10 batch: {e}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check its permissions, or download it again") from None
    except Exception as e:  # truncated, not a pickle, or a pickle of classes that are not here: all unreadable
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({type(e).__name__}: {e}); the file is "
                        f"truncated or corrupt, download it again") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: expected a pickled dict with b'data' and b'labels'")
    # checked before the casts: uint8 would wrap 300 to 44 and truncate 0.5 to 0 without a word
    x, y = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if x.dtype.kind not in "ui" or (x.size and (x.min() < 0 or x.max() > 255)):
        raise DataError(f"{path}: b'data' holds {x.dtype} values, expected uint8 pixels 0..255")
    if y.size and y.dtype.kind not in "ui" or y.ndim != 1:
        raise DataError(f"{path}: b'labels' holds {y.dtype} values of shape {y.shape}, expected a list of integers")
    x, y = x.astype(np.uint8), y.astype(np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise DataError(f"{path}: b'data' is {x.shape} with {len(y)} labels, expected N x 3072 with N labels")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    return x.reshape(-1, 3, 32, 32), y


def load_cifar10(cfg: DataConfig) -> Arrays:
    folder = Path(cfg.root).expanduser() / "cifar-10-batches-py"
    _ensure([folder / b for b in CIFAR_BATCHES + ["test_batch"]], cfg, _download_cifar10, CIFAR_LAYOUT)
    train = [read_cifar_batch(folder / b) for b in CIFAR_BATCHES]
    xva, yva = read_cifar_batch(folder / "test_batch")
    xtr = np.concatenate([x for x, _ in train])
    ytr = np.concatenate([y for _, y in train])
    return _finish("cifar10", xtr, ytr, xva, yva, CIFAR_CLASSES, cfg)


# --------------------------------------------------------------------------------------------
# downloads: torchvision knows the mirrors and checksums; imported only when a file is missing


@contextlib.contextmanager
def _stdout_held_for_stderr() -> Iterator[None]:
    """Third-party chatter goes to stderr, never to stdout, which `--json` keeps for its one object.

    torchvision before 0.20 print()s "Downloading URL", "Failed to download (trying next)" and
    "Extracting ..." to stdout. The lines are held and written to stderr once the download has worked;
    when it fails, the one-line DataError says why instead, and the held lines would break that one line.
    (tqdm's progress bar writes to stderr itself, live.)
    """
    held = io.StringIO()
    with contextlib.redirect_stdout(held):
        yield
    sys.stderr.write(held.getvalue())


PROBE_SECONDS = 2.0  # reaching a dataset's server: a network that works answers well within this
STALL_SECONDS = 60.0  # a download that receives nothing for this long is stalled, not slow


def _reach(url: str) -> str | None:
    """None if `url`'s server takes a connection within PROBE_SECONDS, else why not."""
    return reach(url, PROBE_SECONDS)


def _download_torchvision(cls_name: str) -> Callable[[Path], None]:
    def download(root: Path) -> None:
        import socket

        import torchvision.datasets
        cls = getattr(torchvision.datasets, cls_name)
        urls = list(getattr(cls, "mirrors", None) or [getattr(cls, "url", "")])
        problems = [p for url in urls if url and (p := _reach(url))]
        if len(problems) == len(urls):  # not one server answers: offline, or firewalled; say so in seconds
            raise OSError(f"no network ({problems[0]})")
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(STALL_SECONDS)  # urllib's reads: a stalled transfer ends, never hangs
        try:
            with _stdout_held_for_stderr():
                cls(str(root), train=True, download=True)
        finally:
            socket.setdefaulttimeout(previous)
    return download


@contextlib.contextmanager
def _nothing_left_behind(root: Path) -> Iterator[None]:
    """The folders a failed download made, removed again where they are empty: a failure creates nothing."""
    made = not root.exists()
    try:
        yield
    except BaseException:
        if made and root.is_dir() and not root.is_symlink():
            for folder, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only an empty one
        raise


_download_cifar10 = _download_torchvision("CIFAR10")


def _ensure(paths: list[Path], cfg: DataConfig, download: Callable[[Path], None], layout: str) -> None:
    odd = next(((p, kind) for p in paths if (kind := not_a_file(p))), None)
    if odd is not None:  # there, but a FIFO, a device or a folder: reading it could block or never end
        raise DataError(f"{odd[0]} is {odd[1]}, not a file: expected {layout}")
    missing = [p for p in paths if not p.is_file()]
    if not missing:
        return
    why = "data.download is false"
    if cfg.download:
        root = Path(cfg.root).expanduser()
        try:
            with _nothing_left_behind(root):
                download(root)
        except Exception as e:  # no network, a firewall, a full disk: all the same to the user
            why = f"the download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})"
        missing = [p for p in paths if not p.is_file()]
        if not missing:
            return
    # what to do first, then what was found: the one line is read from its start
    raise DataError(f"give --data-dir DIR (or data.root, ONECYCLE_DATA) where {cfg.dataset} is, or fetch it with "
                    f"`onecycle data download --dataset {cfg.dataset}` where the network allows: dataset "
                    f"{cfg.dataset!r} not found: missing {missing[0]}"
                    f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''} and {why}. Expected {layout}")


# --------------------------------------------------------------------------------------------
# the bundled 3-vs-7 sample and the synthetic set: no files needed

MNIST_SAMPLE = "assets/mnist_sample.npz"
MNIST_SAMPLE_CLASSES = ["3", "7"]


def load_mnist_sample(cfg: DataConfig) -> Arrays:
    """MNIST's 3s and 7s (fastai's MNIST_SAMPLE: 12,396 train, 2,038 test), bundled in the package."""
    with resources.files("onecycle_cli").joinpath(MNIST_SAMPLE).open("rb") as f, np.load(f, allow_pickle=False) as z:
        parts = [z[k] for k in ("x_train", "y_train", "x_valid", "y_valid")]
    return _finish("mnist_sample", parts[0][:, None], parts[1], parts[2][:, None], parts[3], MNIST_SAMPLE_CLASSES, cfg)


def mnist_sample_sizes(cfg: DataConfig) -> tuple[int, int, tuple[int, ...]]:
    """The bundled set's training and test counts (as `cfg` trims them) and image shape, read from its
    members' .npy headers without inflating 11 MB of images: the package's own file, whose presence and
    shapes are all `onecycle data check` has to confirm (and in 0.3 s; loading it costs 0.1 s more)."""
    import zipfile
    shapes = {}
    try:
        with resources.files("onecycle_cli").joinpath(MNIST_SAMPLE).open("rb") as f, zipfile.ZipFile(f) as z:
            for name in ("x_train", "x_valid"):
                with z.open(name + ".npy") as member:
                    major, _ = np.lib.format.read_magic(member)
                    header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shapes[name] = header(member)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"the bundled {MNIST_SAMPLE} cannot be read ({type(e).__name__}: {e}); "
                        f"reinstall onecycle") from None
    n_train, n_valid = shapes["x_train"][0], shapes["x_valid"][0]
    return (min(n_train, cfg.train_size) if cfg.train_size else n_train,
            min(n_valid, cfg.valid_size) if cfg.valid_size else n_valid, (1, *shapes["x_train"][1:]))


def load_synthetic(cfg: DataConfig) -> Arrays:
    """A learnable set of any size: one smooth random template per class, plus noise and a shift.

    The content depends on the shape only (a fixed generator), never on train.seed, so runs with
    different seeds train on the same data.
    """
    import torch  # generated with torch's generator, as it always was: the same images as before
    c, s, k = cfg.channels, cfg.image_size, cfg.classes
    n_train, n_valid = cfg.train_size or 2048, cfg.valid_size or 512
    # measured: generating takes about 18 bytes per pixel at its peak (float temporaries, then uint8)
    memory.check(18 * (n_train + n_valid) * c * s * s, f"a synthetic set of {n_train:,} + {n_valid:,} images of "
                 f"{c}x{s}x{s}", "lower data.image_size, data.train_size or data.valid_size")
    g = torch.Generator().manual_seed(1234)
    coarse = torch.rand(k, c, max(2, s // 4), max(2, s // 4), generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, k, (n,), generator=g)
        shift = torch.randint(-2, 3, (2,), generator=g).tolist()
        x = templates[y].roll(shift, dims=(2, 3)) + 0.35 * torch.randn(n, c, s, s, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    xtr, ytr = make(n_train)
    xva, yva = make(n_valid)
    return _finish("synthetic", xtr.numpy(), ytr.numpy(), xva.numpy(), yva.numpy(), [str(i) for i in range(k)],
                   cfg.model_copy(update={"train_size": None, "valid_size": None}))


LOADERS: dict[str, Callable[[DataConfig], Arrays]] = {
    "cifar10": load_cifar10,
    "mnist": _load_idx_dataset("MNIST", [str(i) for i in range(10)], _download_torchvision("MNIST")),
    "fashion_mnist": _load_idx_dataset(
        "FashionMNIST", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"], _download_torchvision("FashionMNIST")),
    "mnist_sample": load_mnist_sample,
    "synthetic": load_synthetic,
}


def read_builtin(cfg: DataConfig) -> Arrays:
    ds = LOADERS[cfg.dataset](cfg)
    if len(ds.x_train) == 0 or len(ds.x_valid) == 0:
        raise DataError(f"dataset {cfg.dataset!r} has {len(ds.x_train)} training and {len(ds.x_valid)} test "
                        f"images: expected at least one of each")
    if ds.x_train.shape[1:] != ds.x_valid.shape[1:]:  # a model would take both, and score nonsense
        train, test = ("x".join(map(str, x.shape[1:])) for x in (ds.x_train, ds.x_valid))
        raise DataError(f"dataset {cfg.dataset!r} in {Path(cfg.root).expanduser()}: training images are {train} "
                        f"but test images {test}: expected one size; a file is from another dataset, download it again")
    where = "bundled" if cfg.dataset == "mnist_sample" else "generated" if cfg.dataset == "synthetic" else (
        str(Path(cfg.root).expanduser()))
    return replace(ds, report={"dataset": cfg.dataset, "root": where, "classes": ds.classes,
                               "images": {"train": len(ds.x_train), "valid": len(ds.x_valid)}})


# --------------------------------------------------------------------------------------------
# ahead of time: `onecycle data check|download`

TRAIN_SIZES = {"cifar10": 50_000, "mnist": 60_000, "fashion_mnist": 60_000, "mnist_sample": 12_396, "synthetic": 2048}
DOWNLOADERS: dict[str, Callable[[Path], None]] = {
    "cifar10": _download_cifar10, "mnist": _download_torchvision("MNIST"),
    "fashion_mnist": _download_torchvision("FashionMNIST")}


def train_size(cfg: DataConfig) -> int:
    """How many training images a built-in set uses, known without reading them (for `onecycle schedule`)."""
    n = TRAIN_SIZES[cfg.dataset]
    return cfg.train_size if cfg.train_size and (cfg.dataset == "synthetic" or cfg.train_size < n) else n


def download_dataset(cfg: DataConfig) -> None:
    if cfg.dataset not in DOWNLOADERS:
        return  # bundled or generated: nothing to fetch
    root = Path(cfg.root).expanduser()
    try:
        with _nothing_left_behind(root):
            root.mkdir(parents=True, exist_ok=True)
            DOWNLOADERS[cfg.dataset](root)
    except Exception as e:
        raise DataError(f"downloading {cfg.dataset!r} into {root} failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'no detail'}); on a machine with network run "
                        f"`onecycle data download --dataset {cfg.dataset} --data-dir DIR` and copy DIR here") from None
