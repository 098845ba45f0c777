"""Batches from a dataset that already lives on the training device: `onecycle train`.

No DataLoader, no workers: an epoch is a permutation plus per-image crop offsets and flips drawn
at once (`augment.draw_epoch`), sliced into batches. Under torchrun every rank draws the same
permutation and takes its own slice of each global batch, so the global batch is the same as a
single process would see.
"""

from __future__ import annotations

from typing import Iterator

import torch

from .augment import augment, draw_epoch, epoch_generator, normalize
from .config import DataConfig
from .datasets import Dataset
from .errors import DataError


class TrainBatches:
    def __init__(self, ds: Dataset, cfg: DataConfig, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, memory_format: torch.memory_format = torch.contiguous_format):
        n = len(ds.x_train)
        if batch_size > n:
            raise DataError(f"train.batch_size = {batch_size} is larger than the {n} training images of "
                            f"{cfg.dataset!r}: lower the batch size or raise data.train_size")
        if cfg.crop and cfg.pad >= min(ds.shape[1:]):  # reflection cannot mirror more than the image holds
            raise DataError(f"data.pad = {cfg.pad} is not below the {ds.shape[1]}x{ds.shape[2]} images of "
                            f"{cfg.dataset!r}: expected pad < {min(ds.shape[1:])}, or data.crop false")
        if batch_size % world:
            raise DataError(f"train.batch_size = {batch_size} does not split over {world} processes: "
                            f"expected a multiple of {world}")
        self.ds, self.seed, self.rank, self.world = ds, seed, rank, world
        self.batch_size, self.local = batch_size, batch_size // world
        self.pad = cfg.pad if cfg.crop else 0
        self.flip = cfg.flip
        self.mean, self.std = (ds.mean, ds.std) if cfg.normalize else (None, None)
        self.memory_format = memory_format
        self.steps_per_epoch = n // batch_size  # the last partial batch is dropped, as fastai does

    def epoch(self, epoch: int, start: int = 0, seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch` from step `start` on; the same (seed, epoch) always gives the same batches."""
        device = self.ds.x_train.device
        g = epoch_generator(self.seed if seed is None else seed, epoch, device)
        draws = draw_epoch(len(self.ds.x_train), self.pad, self.flip, g, device)
        for step in range(start, self.steps_per_epoch):
            lo = step * self.batch_size + self.rank * self.local
            sl = slice(lo, lo + self.local)
            index = draws.order[sl]
            x = augment(self.ds.x_train, index, draws.dy[sl], draws.dx[sl], draws.flip[sl], self.pad, self.flip)
            yield normalize(x, self.mean, self.std).contiguous(memory_format=self.memory_format), self.ds.y_train[index]

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
        yield normalize(ds.x_valid[i:j], mean, std).contiguous(memory_format=memory_format), ds.y_valid[i:j]
