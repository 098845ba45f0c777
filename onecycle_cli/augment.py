"""Augmentation of whole batches on the training device: `onecycle train --config cifar`.

Each epoch draws, for every training image at once, a crop offset and a flip bit (`draw_epoch`);
`augment` then builds a batch with two `gather`s whose indices already hold the reflection
padding, the crop window and the mirror. That is the same distribution as torchvision's
`RandomCrop(32, padding=4, padding_mode="reflect")` + `RandomHorizontalFlip` per image, without a
padded copy of the dataset, without PIL and without a Python loop over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EpochDraws:
    """Everything random about one epoch of training data, drawn up front."""

    order: torch.Tensor  # a permutation of the training images
    dy: torch.Tensor     # crop offsets into the padded image, 0 .. 2*pad (pad: no shift)
    dx: torch.Tensor
    flip: torch.Tensor   # bool: mirror this image


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    # one generator per (seed, epoch): an epoch's batches never depend on how many came before,
    # so a run resumed mid-epoch sees exactly the batches the uninterrupted run saw
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def draw_epoch(n: int, pad: int, flip: bool, generator: torch.Generator, device: torch.device) -> EpochDraws:
    order = torch.randperm(n, generator=generator, device=device)
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    else:
        dy = dx = torch.zeros(n, dtype=torch.long, device=device)
    mirror = (torch.rand(n, generator=generator, device=device) < 0.5) if flip else torch.zeros(
        n, dtype=torch.bool, device=device)
    return EpochDraws(order, dy, dx, mirror)


def reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Map indices of a reflect-padded axis (-pad .. n-1+pad) onto the unpadded one: -1 -> 1, n -> n-2."""
    return (n - 1) - ((n - 1) - i.abs()).abs()


def augment(images: torch.Tensor, index: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
            mirror: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """The uint8 batch `images[index]`, each reflect-padded by `pad`, cropped at (dy, dx) and maybe mirrored."""
    batch = images[index]
    if not pad and not flip:
        return batch
    b, c, h, w = batch.shape
    rows = torch.arange(h, device=batch.device)
    cols = torch.arange(w, device=batch.device).expand(b, w)
    if flip:  # mirror the crop window: output column j reads padded column dx + (w-1-j)
        cols = torch.where(mirror[:, None], (w - 1) - cols, cols)
    if pad:
        rows = reflect(dy[:, None] + rows - pad, h)
        batch = batch.gather(2, rows[:, None, :, None].expand(b, c, h, w))
        cols = reflect(dx[:, None] + cols - pad, w)
    return batch.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def normalize(batch: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    """uint8 -> float32; per-channel standardised when mean/std (pixel units) are given, else scaled to 0..1."""
    x = batch.float()
    if mean is None:
        return x.mul_(1 / 255)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
