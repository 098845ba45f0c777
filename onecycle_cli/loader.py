"""Batches from a dataset placed for training: `onecycle train`.

No DataLoader, no workers: an epoch is a permutation plus per-image crop offsets (or crop boxes)
and flips drawn at once on the training device (`augment.draw_epoch`), sliced into batches. Under
torchrun every rank draws the same permutation and takes its own slice of each global batch, so
the global batch is the same as a single process would see.

Images in the host tier (`datasets.tensors`) are gathered on the host, into pinned memory when
CUDA is there, and copied with `non_blocking=True`; the epoch's order is read to the host once per
epoch for that. The draws are the same in both tiers, so a run does not depend on where its
images lived.
"""

from __future__ import annotations

from typing import Iterator

import torch

from .augment import augment, draw_epoch, epoch_generator, normalize, resized_crop
from .config import DataConfig
from .datasets.tensors import Dataset
from .errors import DataError


class TrainBatches:
    def __init__(self, ds: Dataset, cfg: DataConfig, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, memory_format: torch.memory_format = torch.contiguous_format):
        n = len(ds.x_train)
        if batch_size > n:
            raise DataError(f"train.batch_size = {batch_size} is larger than the {n} training images of "
                            f"{cfg.dataset!r}: lower the batch size or raise data.train_size")
        kind = cfg.crop_kind
        if kind == "pad_crop" and cfg.pad >= min(ds.shape[1:]):  # reflection cannot mirror more than the image holds
            raise DataError(f"data.pad = {cfg.pad} is not below the {ds.shape[1]}x{ds.shape[2]} images of "
                            f"{cfg.dataset!r}: expected pad < {min(ds.shape[1:])}, or data.crop false")
        if batch_size % world:
            raise DataError(f"train.batch_size = {batch_size} does not split over {world} processes: "
                            f"expected a multiple of {world}")
        self.ds, self.seed, self.rank, self.world = ds, seed, rank, world
        self.batch_size, self.local = batch_size, batch_size // world
        self.pad = cfg.pad if kind == "pad_crop" else 0
        self.flip = cfg.flip
        # rrc crops from the stored image (a folder's presize) and resizes to the model's input size
        self.rrc = (ds.x_train.shape[-1], tuple(cfg.scale), tuple(cfg.ratio)) if kind == "rrc" else None
        self.device = ds.y_train.device  # labels always live where training runs
        self.host = ds.memory.get("tier") == "host"  # on a CPU too: the same path, gathering from the same RAM
        self.mean, self.std = (ds.mean, ds.std) if cfg.normalize else (None, None)
        self.memory_format = memory_format
        self.steps_per_epoch = n // batch_size  # the last partial batch is dropped, as fastai does

    def epoch(self, epoch: int, start: int = 0, seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch` from step `start` on; the same (seed, epoch) always gives the same batches."""
        g = epoch_generator(self.seed if seed is None else seed, epoch, self.device)
        draws = draw_epoch(len(self.ds.x_train), self.pad, self.flip, g, self.device, self.rrc)
        order = draws.order.cpu() if self.host else draws.order  # host tier: one read of the order an epoch
        for step in range(start, self.steps_per_epoch):
            lo = step * self.batch_size + self.rank * self.local
            sl = slice(lo, lo + self.local)
            x = self.gather_host(order[sl]) if self.host else self.ds.x_train[order[sl]]
            if self.rrc is not None:
                x = resized_crop(x, draws.boxes[sl], self.ds.shape[-1], draws.flip[sl] if self.flip else None)
            else:
                x = augment(x, None, draws.dy[sl], draws.dx[sl], draws.flip[sl], self.pad, self.flip)
            yield (normalize(x, self.mean, self.std).contiguous(memory_format=self.memory_format),
                   self.ds.y_train[draws.order[sl]])

    def gather_host(self, index: torch.Tensor) -> torch.Tensor:
        """A batch gathered from host memory, sent to the device without waiting for the copy."""
        x = self.ds.x_train
        batch = torch.empty((len(index), *x.shape[1:]), dtype=x.dtype, pin_memory=x.is_pinned())
        torch.index_select(x, 0, index, out=batch)
        # a pinned batch is not reused until its copy is done: torch's caching host allocator waits for it
        return batch.to(self.device, non_blocking=True)

    def forever(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches without end, epoch after epoch (the range test cycles short datasets this way)."""
        epoch = 0
        while True:
            yield from self.epoch(epoch, seed=seed)
            epoch += 1


def eval_batches(ds: Dataset, cfg: DataConfig, batch_size: int, rank: int = 0, world: int = 1,
                 memory_format: torch.memory_format = torch.contiguous_format
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The test split in order, normalised, never augmented; each rank scores its own share."""
    mean, std = (ds.mean, ds.std) if cfg.normalize else (None, None)
    n = len(ds.x_valid)
    lo, hi = n * rank // world, n * (rank + 1) // world
    for i in range(lo, hi, batch_size):
        j = min(i + batch_size, hi)
        x = ds.x_valid[i:j].to(ds.y_valid.device, non_blocking=True)  # a no-op unless in the host tier
        yield normalize(x, mean, std).contiguous(memory_format=memory_format), ds.y_valid[i:j]
