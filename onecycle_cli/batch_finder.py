"""The largest micro-batch the device holds: `onecycle train --accum-steps auto`.

The config's global batch stays (the experiment does not change because a card is smaller); what
is found is how to cut it. Each candidate split of the process's share of the batch, largest
micro-batch first (accumulation 1, 2, ... over the divisors), is tried for real: two training
steps of the model with the run's optimiser (its state allocated), loss and precision on a
micro-batch of the training images, the weights, BatchNorm statistics and random states put back
afterwards. A split whose trial runs out of memory (torch's OutOfMemoryError) is backed off from,
as Lightning's BatchSizeFinder and Hugging Face's auto_find_batch_size do; one whose peak memory
comes within MARGIN of the card's total is refused too, to leave room for what the trial does not
see (the evaluation's batches, the allocator's fragmentation over a long run). The first split that
fits is the run's: micro x accum x processes = the global batch, and both commands say so.

On the CPU an allocation does not fail, it swaps: `auto` is accumulation 1 there, said as such.
For the tests, `ONECYCLE_FAULT=oom>N` makes every trial of a micro-batch above N raise torch's own
OutOfMemoryError, on any device (the back-off logic is exercised on the CPU).
"""

from __future__ import annotations

import os
import re

import torch
import torch.nn.functional as F

from .accumulate import backward
from .errors import DataError

MARGIN = 0.10  # of the device's memory the trial's peak must leave free
TRIAL_STEPS = 2  # the first allocates the optimiser's state, the second runs with it


def injected_limit() -> int | None:
    """N of ONECYCLE_FAULT=oom>N: the largest micro-batch a trial lets through, or None."""
    m = re.search(r"(?:^|,)oom>(\d+)(?:,|$)", os.environ.get("ONECYCLE_FAULT", ""))
    return int(m.group(1)) if m else None


def splits(local: int) -> list[tuple[int, int]]:
    """(micro-batch, accumulation) of every equal split of a process's `local` images, largest micro first."""
    return [(local // accum, accum) for accum in range(1, local + 1) if local % accum == 0]


def trial(pipe, micro: int, limit: int | None) -> int:
    """The peak bytes of TRIAL_STEPS steps on `micro` images (0 off CUDA); OutOfMemoryError when they do not fit."""
    from .optim import build_optimizer
    from .resume import preserved
    if limit is not None and micro > limit:
        raise torch.cuda.OutOfMemoryError(f"injected: a micro-batch of {micro} is above oom>{limit}")
    cfg, cuda = pipe.cfg, pipe.device.type == "cuda"
    x, y = next(iter(pipe.batches.epoch(0)))
    x, y = x[:micro], y[:micro]
    if cuda:
        torch.cuda.synchronize(pipe.device)
        torch.cuda.reset_peak_memory_stats(pipe.device)
    with preserved(pipe.model):
        opt = build_optimizer(cfg.optim, pipe.groups, cfg.schedule.max_lr, fused=pipe.fused)
        try:
            for _ in range(TRIAL_STEPS):
                opt.zero_grad(set_to_none=True)
                # the module itself, not DDP's wrapper: a trial on one rank never waits on the others
                backward(pipe.model, x, y, lambda out, t: F.cross_entropy(out, t), 1, pipe.precision.autocast)
                opt.step()
        finally:
            opt.zero_grad(set_to_none=True)
            opt.state.clear()
            del opt
    if cuda:
        torch.cuda.synchronize(pipe.device)
        return torch.cuda.max_memory_allocated(pipe.device)
    return 0


def resolve_auto(pipe, display):
    """`train.accum_steps: auto` made a number: the config with it (also set on the pipeline), and how it was
    found. Rank 0's choice is every rank's."""
    accum, record = pipe.dist.from_main(choose_accumulation(pipe, display) if pipe.dist.main else None)
    cfg = pipe.cfg.model_copy(update={"train": pipe.cfg.train.model_copy(update={"accum_steps": accum})})
    pipe.cfg = cfg
    return cfg, record


def choose_accumulation(pipe, display) -> tuple[int, dict]:
    """The accumulation for `train.accum_steps: auto`, and the record of how it was found."""
    cfg, world = pipe.cfg, pipe.dist.world
    local = cfg.train.batch_size // world
    limit = injected_limit()
    if pipe.device.type != "cuda" and limit is None:
        display.print(f"--accum-steps auto: on {pipe.device.type}, where memory swaps rather than runs out, no "
                      f"accumulation: micro-batches of {local}", markup=False)
        return 1, {"micro_batch": local, "accum_steps": 1, "tried": [], "reason": f"no search on {pipe.device.type}"}
    total = torch.cuda.get_device_properties(pipe.device).total_memory if pipe.device.type == "cuda" else 0
    tried = []
    for micro, accum in splits(local):
        try:
            peak = trial(pipe, micro, limit)
        except torch.cuda.OutOfMemoryError:
            tried.append({"micro_batch": micro, "fits": False, "why": "out of memory"})
            if pipe.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        if total and peak > (1 - MARGIN) * total:
            tried.append({"micro_batch": micro, "fits": False, "peak_bytes": peak,
                          "why": f"peak {peak / 2**30:.1f} GiB is within {MARGIN:.0%} of the card's "
                                 f"{total / 2**30:.1f}"})
            continue
        tried.append({"micro_batch": micro, "fits": True, "peak_bytes": peak})
        display.print(f"--accum-steps auto: micro-batches of {micro} x {accum} accumulated"
                      f"{f' x {world} processes' if world > 1 else ''} = the batch of {cfg.train.batch_size}"
                      f"{f' (peak {peak / 2**30:.1f} of {total / 2**30:.1f} GiB)' if total else ''}; "
                      f"{len(tried) - 1} larger split(s) did not fit", markup=False)
        return accum, {"micro_batch": micro, "accum_steps": accum, "tried": tried,
                       "reason": f"the largest micro-batch whose trial fit (margin {MARGIN:.0%})"}
    raise DataError(f"--accum-steps auto: not even a micro-batch of 1 image fits {pipe.device}: a smaller model, "
                    f"data.image_size or precision bf16")
