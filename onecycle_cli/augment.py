"""Augmentation of whole batches on the training device: `onecycle train --config cifar`.

Each epoch draws, for every training image at once, a crop offset and a flip bit (`draw_epoch`);
`augment` then builds a batch with two `gather`s whose indices already hold the reflection
padding, the crop window and the mirror. That is the same distribution as torchvision's
`RandomCrop(32, padding=4, padding_mode="reflect")` + `RandomHorizontalFlip` per image, without a
padded copy of the dataset, without PIL and without a Python loop over samples.

Photographs get the random-resized crop instead (`onecycle train --config folder`): `draw_boxes`
draws every image's crop box as torchvision's `RandomResizedCrop.get_params` draws one, all at
once, and `resized_crop` cuts and resizes a whole batch of boxes with one `roi_align` (or, when no box
can be larger than the output, the same samples from one `grid_sample`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EpochDraws:
    """Everything random about one epoch of training data, drawn up front."""

    order: torch.Tensor  # a permutation of the training images
    dy: torch.Tensor     # crop offsets into the padded image, 0 .. 2*pad (pad: no shift)
    dx: torch.Tensor
    flip: torch.Tensor   # bool: mirror this image
    boxes: torch.Tensor | None = None  # rrc: x1, y1, x2, y2 of each image's crop, in pixels


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    # one generator per (seed, epoch): an epoch's batches never depend on how many came before,
    # so a run resumed mid-epoch sees exactly the batches the uninterrupted run saw
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def draw_epoch(n: int, pad: int, flip: bool, generator: torch.Generator, device: torch.device,
               rrc: tuple[int, tuple[float, float], tuple[float, float]] | None = None) -> EpochDraws:
    """The epoch's order, crops and flips; `rrc` = (stored image size, scale, ratio) draws random-resized crops."""
    order = torch.randperm(n, generator=generator, device=device)
    boxes = None
    if rrc is not None:
        boxes = draw_boxes(n, *rrc, generator=generator, device=device)
        dy = dx = torch.zeros(n, dtype=torch.long, device=device)
    elif pad:
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    else:
        dy = dx = torch.zeros(n, dtype=torch.long, device=device)
    mirror = (torch.rand(n, generator=generator, device=device) < 0.5) if flip else torch.zeros(
        n, dtype=torch.bool, device=device)
    return EpochDraws(order, dy, dx, mirror, boxes)


def reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Map indices of a reflect-padded axis (-pad .. n-1+pad) onto the unpadded one: -1 -> 1, n -> n-2."""
    return (n - 1) - ((n - 1) - i.abs()).abs()


def augment(images: torch.Tensor, index: torch.Tensor | None, dy: torch.Tensor, dx: torch.Tensor,
            mirror: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """The uint8 batch `images[index]` (index None: `images` is the batch), each reflect-padded by `pad`,
    cropped at (dy, dx) and maybe mirrored."""
    batch = images if index is None else images[index]
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


def draw_boxes(n: int, size: int, scale: tuple[float, float], ratio: tuple[float, float],
               generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n crop boxes (x1, y1, x2, y2) in a size x size image, each drawn as `RandomResizedCrop.get_params` draws one.

    torchvision tries up to 10 (area share, log aspect ratio) pairs and keeps the first whose rounded
    width and height fit, at a uniform integer offset; if none fits, it takes the centre crop of the
    nearest allowed aspect ratio. Here all n x 10 tries are drawn at once and the first fit picked
    per row, in float64 so the rounding is Python's.
    """
    opts = dict(dtype=torch.float64, device=device)
    area = float(size * size)
    shares = torch.empty(n, 10, **opts).uniform_(scale[0], scale[1], generator=generator)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.empty(n, 10, **opts).uniform_(log_lo, log_hi, generator=generator).exp()
    w = (area * shares * aspect).sqrt().round()
    h = (area * shares / aspect).sqrt().round()
    fits = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits (0 when none does)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    found = fits.any(1)
    # none fits: torchvision's fallback, the centre crop at the allowed aspect ratio nearest the square's 1
    if ratio[0] > 1:
        fw, fh = size, round(size / ratio[0])
    elif ratio[1] < 1:
        fw, fh = round(size * ratio[1]), size
    else:
        fw, fh = size, size
    w, h = torch.where(found, w, float(fw)), torch.where(found, h, float(fh))
    u = torch.rand(n, 2, generator=generator, **opts)
    y1 = torch.where(found, (u[:, 0] * (size - h + 1)).floor(), ((size - h) / 2).floor())
    x1 = torch.where(found, (u[:, 1] * (size - w + 1)).floor(), ((size - w) / 2).floor())
    return torch.stack([x1, y1, x1 + w, y1 + h], 1).float()


def resized_crop(batch: torch.Tensor, boxes: torch.Tensor, size: int, mirror: torch.Tensor | None) -> torch.Tensor:
    """Each image's box of the uint8 batch, resized to size x size (float, pixel units) and maybe mirrored.

    `roi_align` with `aligned=True` reads a box as the continuous span of its pixels and, with an
    adaptive sampling ratio, averages ceil(box/size)^2 bilinear samples per output pixel: a large
    crop is shrunk with a box filter rather than aliased, a small one enlarged bilinearly. When the
    stored images are no larger than the output (no presize), no box can exceed it, every ratio is 1,
    and one bilinear sample at each output pixel's centre is the whole computation: `grid_sample`
    gives the same values 4x faster on a CPU (vectorised and on every core, where torchvision's CPU
    roi_align runs one thread). The choice follows the shapes alone, so it costs no host sync.
    """
    x = batch.float()
    if max(x.shape[-2:]) <= size:
        out = _sample_boxes(x, boxes.to(x.dtype), size)
    else:
        from torchvision.ops import roi_align
        index = torch.arange(len(x), device=x.device, dtype=x.dtype)[:, None]
        out = roi_align(x, torch.cat([index, boxes.to(x.dtype)], 1), (size, size), 1.0, -1, True)
    if mirror is not None:
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out


def _sample_boxes(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """roi_align's values at sampling ratio 1: a bilinear sample at the centre of each of the size x size
    bins of every box (x1, y1, x2, y2 in continuous pixel coordinates: pixel k spans [k, k+1])."""
    h, w = x.shape[-2:]
    centres = (torch.arange(size, device=x.device, dtype=x.dtype) + 0.5) / size
    x1, y1, x2, y2 = boxes.unbind(1)
    gx = (x1[:, None] + centres * (x2 - x1)[:, None]) * (2 / w) - 1  # grid_sample's [-1, 1], align_corners=False
    gy = (y1[:, None] + centres * (y2 - y1)[:, None]) * (2 / h) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def normalize(batch: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    """uint8 -> float32; per-channel standardised when mean/std (pixel units) are given, else scaled to 0..1."""
    x = batch.float()
    if mean is None:
        return x.mul_(1 / 255)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
