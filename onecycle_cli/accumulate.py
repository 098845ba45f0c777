"""One optimiser step's gradients from a global batch in micro-batches: `onecycle train --accum-steps 4`.

A global batch that does not fit the device is split into `train.accum_steps` equal micro-batches
(Lightning's `accumulate_grad_batches`, pytorch-lr-finder's `accumulation_steps`). Each one's loss is
scaled by 1/accum_steps before its backward pass, so the gradients add up to those of the whole
batch's mean loss, and the optimiser, the schedule, the range test's LR, the logs and the
checkpoints all advance once per global batch: the experiment is the same, only BatchNorm's
statistics are taken over the micro-batch. Under torchrun the micro-batches before the last skip
DDP's all-reduce (`no_sync`), so the gradients cross the network once a step. With one step, the
step is the plain one, operation for operation.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from .errors import DataError
from .faults import fault


def batch_split(cfg, world: int) -> dict:
    """What a run's summary records of its batch: the micro-batch a forward pass takes on one device, and
    the accumulation (`batch_size` is the global batch: micro_batch x accum_steps x world)."""
    return {"accum_steps": cfg.train.accum_steps,
            "micro_batch": cfg.train.batch_size // (world * cfg.train.accum_steps)}


def check_split(batch_size: int, world: int, accum: int | str) -> None:
    """A global batch that does not split into `world` x `accum` equal micro-batches is refused, by name
    (`auto` is a split batch_finder.py finds)."""
    if accum != "auto" and accum > 1 and batch_size % (world * accum):
        per = f" x {world} processes" if world > 1 else ""
        raise DataError(f"train.batch_size = {batch_size} does not split into train.accum_steps = {accum} equal "
                        f"micro-batches{per}: expected a multiple of {world * accum}")


def backward(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, accum: int, autocast,
             scaler: torch.amp.GradScaler | None = None, distributed: bool = False) -> torch.Tensor:
    """Forward and backward passes of the batch (x, y) in `accum` micro-batches, the gradients summed into
    `.grad` (zeroed by the caller); the batch's mean loss, detached, on the device. `autocast()` is the
    precision's context; `scaler` fp16's loss scaling; `distributed`: `net` is DDP, and only the last
    micro-batch all-reduces."""
    if accum == 1:
        with autocast():
            loss = loss_fn(net(x), y)
        fault("step")
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return loss.detach().float()
    total = torch.zeros((), device=x.device)
    for i, (xs, ys) in enumerate(zip(x.chunk(accum), y.chunk(accum))):
        last = i == accum - 1
        with net.no_sync() if distributed and not last else contextlib.nullcontext():
            with autocast():
                loss = loss_fn(net(xs), ys) / accum
            if last:
                fault("step")
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total += loss.detach().float()
    return total
