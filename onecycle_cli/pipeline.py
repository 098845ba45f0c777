"""From a config to tensors and a model on the device: what `find` and `train` both stand on.

`build_pipeline` resolves the device and precision, loads the dataset onto the device (or into
pinned host memory when it does not fit: `datasets.tensors`), builds the model from the seed (with
its pretrained weights), checks that it fits the images, splits it into parameter groups and chooses
the inputs' normalisation: the dataset's statistics, or those the weights were trained with. The
CUDA-only choices (bf16 autocast, channels_last, cudnn.benchmark, fused optimisers) are each one line here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .accumulate import check_split
from .config import Config
from .datasets.tensors import Dataset, load_dataset
from .display import Display, fmt_bytes
from .dist import Dist
from .errors import DataError, UsageError
from .loader import TrainBatches
from .models import Built, LayerGroup, build, layer_groups
from .safe_text import printable
from .threads import apply as apply_threads


def resolve_device(name: str, dist: Dist = Dist()) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"train.device = {name!r} but torch {torch.__version__} sees no CUDA device: "
                             f"use --device cpu, or install a CUDA build of torch")
        index = int(name.split(":")[1]) if ":" in name else dist.local_rank
        if index >= torch.cuda.device_count():
            raise UsageError(f"train.device = {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError("train.device = 'mps' but no Apple GPU is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@dataclass
class Precision:
    dtype: torch.dtype | None  # autocast dtype, None: full fp32
    device_type: str

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16  # bf16 has fp32's range and needs no loss scaling

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def resolve_precision(name: str, device: torch.device) -> Precision:
    if name == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UsageError("train.precision = 'fp16' needs a CUDA device; use bf16 or fp32 on the CPU")
    return Precision({"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name], device.type)


def choose_stats(ds: Dataset, cfg: Config, built: Built, saved: dict | None = None) -> tuple[Dataset, dict | None]:
    """The dataset with the mean/std its inputs are normalised with, and a record of whose they are.

    data.stats = weights takes the statistics the weights came with (a resumed run: those its checkpoint
    recorded); RGB statistics on grey images are averaged over the colour axis, to match a stem whose
    filters were summed over it. Weights that carry none leave the dataset's own, and say so.
    """
    if not cfg.data.normalize:
        return ds, None
    own = {"source": f"dataset {ds.name} (training images)", "mean": ds.mean.tolist(), "std": ds.std.tolist()}
    stats = saved or (built.normalize if cfg.data.stats == "weights" else None)
    if cfg.data.stats == "weights" and stats is None:
        return ds, {**own, "note": "the weights carry no statistics: the dataset's are used"}
    if stats is None:
        return ds, own
    mean, std, channels = list(stats["mean"]), list(stats["std"]), ds.shape[0]
    if len(mean) != channels:
        if channels != 1:
            return ds, {**own, "note": f"the weights' statistics are for {len(mean)} channels, the images have "
                                       f"{channels}: the dataset's are used"}
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
        stats = {**stats, "source": f"{stats['source']}, averaged over its {len(stats['mean'])} channels"}
    stats = {**stats, "mean": mean, "std": std}
    tensor = lambda v: torch.tensor(v, dtype=ds.mean.dtype, device=ds.mean.device)  # noqa: E731
    return dataclasses.replace(ds, mean=tensor(mean), std=tensor(std)), stats


def class_names(ds: Dataset) -> list[str]:
    """The classes as runs record them (checkpoints, data_report.json): a folder name that is not UTF-8 as
    \\xNN, so the record is JSON and reads back the same under every torch."""
    return [printable(c) for c in ds.classes]


def check_fit(model: nn.Module, ds: Dataset, cfg: Config) -> None:
    """One forward pass of a blank image: the model must take these images and give one logit per class."""
    c, h, w = ds.shape
    if cfg.model.name == "simple_cnn":
        if cfg.model.channels[0] != c:
            raise DataError(f"model.channels[0] = {cfg.model.channels[0]} but {ds.name} images have {c} channel(s): "
                            f"set model.channels to start with {c}")
        if cfg.model.channels[-1] != len(ds.classes):
            raise DataError(f"model.channels[-1] = {cfg.model.channels[-1]} but {ds.name} has {len(ds.classes)} "
                            f"classes: set model.channels to end with {len(ds.classes)}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, c, h, w))
    except (RuntimeError, ValueError, AssertionError) as e:  # torchvision's ViT asserts its image size
        raise DataError(f"{ds.name} images of {c}x{h}x{w} do not fit model {cfg.model.name!r}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, len(ds.classes)):
        raise DataError(f"model {cfg.model.name!r} gives {tuple(out.shape[1:])} outputs for {c}x{h}x{w} images, "
                        f"expected {len(ds.classes)} (one per class)")


@dataclass
class Pipeline:
    cfg: Config
    dist: Dist
    device: torch.device
    precision: Precision
    memory_format: torch.memory_format
    ds: Dataset
    model: nn.Module       # the module itself: its state_dict is what checkpoints hold
    batches: TrainBatches
    net: nn.Module | None = None  # what forward passes go through: the model, compiled and/or DDP-wrapped
    groups: list[LayerGroup] = dataclasses.field(default_factory=list)  # body to head
    built: Built | None = None     # how the model was made: weights loaded, stem and head adapted
    normalize: dict | None = None  # whose mean/std the inputs are normalised with
    threads: int | None = None     # torch's CPU threads (threads.py); None on a GPU, left to torch
    threads_why: str = ""

    def __post_init__(self) -> None:
        self.net = self.net or self.wrap()

    def wrap(self) -> nn.Module:
        """The model as forward passes see it. DDP registers only the parameters that need gradients when
        it is made, so a run wraps the model again whenever freezing changes them."""
        net = self.model
        if self.dist.active:  # gradients averaged across ranks; rank 0's weights and buffers broadcast at the start
            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.cfg.train.compile:
            net = torch.compile(net)
        self.net = net
        return net

    @property
    def fused(self) -> bool:
        return self.device.type == "cuda"


def build_pipeline(cfg: Config, dist: Dist = Dist(), saved: dict | None = None, *, progress=None, stop=None
                   ) -> Pipeline:
    """`saved`: a checkpoint being resumed; its weights replace any pretrained ones, so those are not read.
    `progress` and `stop` follow and end a folder's first decoding (see `datasets.cache.cached_images`)."""
    device = resolve_device(cfg.train.device, dist)
    precision = resolve_precision(cfg.train.precision, device)
    channels_last = cfg.train.channels_last if cfg.train.channels_last is not None else device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ds = load_dataset(cfg.data, device, progress, stop)
    seed_everything(cfg.train.seed)
    built = build(cfg.model, ds.shape[0], len(ds.classes), load_weights=saved is None, classes=class_names(ds))
    model = built.model
    check_fit(model, ds, cfg)
    # before the first step and before the model moves: its work is counted on the CPU, once
    threads = (apply_threads(cfg.train.threads, model, ds.shape, max(1, cfg.train.batch_size // dist.world))
               if device.type == "cpu" else (None, ""))
    groups = layer_groups(model, cfg.model.name, built.head)
    ds, normalize = choose_stats(ds, cfg, built, (saved or {}).get("normalize"))
    model = model.to(device, memory_format=memory_format)
    check_split(cfg.train.batch_size, dist.world, cfg.train.accum_steps)
    batches = TrainBatches(ds, cfg.data, cfg.train.batch_size, cfg.train.seed, dist.rank, dist.world, memory_format)
    return Pipeline(cfg, dist, device, precision, memory_format, ds, model, batches, groups=groups, built=built,
                    normalize=normalize, threads=threads[0], threads_why=threads[1])


def announce_data(ds: Dataset, display: Display) -> None:
    """Where a folder's images came from and where the images live; one warning line for skipped files."""
    r, m = ds.report, ds.memory
    where = (f"in {m['device']} memory" if m.get("tier") == "device" else
             f"in {'pinned ' if m.get('pinned') else ''}host memory, batches copied to {m.get('device')} "
             f"(more than data.device_budget = {m.get('budget')} of {fmt_bytes(m.get('free_bytes', 0))} free)")
    if "cache" in r:
        c = r["cache"]
        how = (f"decoded {c['decoded']} ({c['images_per_s'] or 0:,.0f} images/s)" if c["decoded"] else "loaded")
        display.print(f"data: {r['images']['train']} training and {r['images']['valid']} validation images of "
                      f"{len(r['classes'])} classes ({r['layout']}); {how} in {c['seconds']:.1f} s from {c['path']}; "
                      f"{fmt_bytes(m.get('bytes', 0))} {where}", markup=False)
    elif m.get("tier") == "host":
        display.print(f"data: {fmt_bytes(m['bytes'])} {where}", markup=False)
    if r.get("skipped"):
        display.warn(f"{len(r['skipped'])} of {r['files']} files could not be decoded and were skipped; "
                     f"data_report.json lists them and why (data.strict: true refuses them)")
    for line in r.get("warnings", []):  # a folder's classes that only validation holds
        display.warn(line)
