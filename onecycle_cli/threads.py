"""How many threads torch computes with on a CPU: `onecycle train --set train.threads=1` (or ONECYCLE_THREADS=1).

torch's default is one thread per core of the machine, each spinning while it waits for the others. On
a box shared with other jobs that collapses: two 3-vs-7 fits started together on 2 cores took 13-17 s
against 6 s at one thread each, and with a little other load 8x one alone. So, unless told:

- the threads are at most the CPUs this process may use: its affinity, capped by its cgroup's CPU
  quota (a container's or a job scheduler's share, not the machine's core count);
- small work gets one thread: under SMALL_STEP_MACS multiply-accumulates a step (the model's per image
  times the batch). Measured on 2 quiet cores, a step at 2 threads against 1: 1.17x as fast for the 3-vs-7
  net at batch 64 (16M a step), 1.32x at 58M, 1.55x for the book's net at batch 512 (127M): below 100M a
  second thread gains a run alone little, and two runs sharing the cores lose 2.5x (docs/benchmarks.md);
- GOMP_SPINCOUNT=10000 (set before torch loads, in `cli.main`, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT
  is set): a waiting thread spins 30x less than OpenMP's default before it sleeps, leaving the core to
  another process, while one step's back-to-back operations still find it awake.

`train.threads` (ONECYCLE_THREADS) or OMP_NUM_THREADS, when given, is taken as it is. A GPU run is left
to torch's default: its CPU threads only feed the device.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

SMALL_STEP_MACS = 100_000_000  # a step's work below which one thread is as fast or faster (see above)


def quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs the cgroup may use (cpu.max in v2, cfs quota / period in v1); None where it sets none."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if q > 0 and period > 0:
            return q / period
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity (where the OS has one), capped by its cgroup's quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS: no affinity
        cpus = os.cpu_count() or 1
    share = quota()
    if share is not None:
        cpus = min(cpus, max(1, math.ceil(share)))
    return max(1, cpus)


def macs_per_image(model, shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one image through the model's convolutions and linear layers (one forward
    pass of a blank image, counted by hooks): the work a step does, image for image."""
    import torch
    from torch import nn
    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.modules.conv._ConvNd):
            k = math.prod(module.kernel_size) * module.in_channels // module.groups
            total += output.numel() * k
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd,
                                                                                         nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def choose(threads: int | None, step_macs: int | None) -> tuple[int, str]:
    """The thread count and why: train.threads, else OMP_NUM_THREADS, else one for small work, else the CPUs."""
    if threads is not None:
        return threads, "train.threads"
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given), "OMP_NUM_THREADS"
    cpus = usable_cpus()
    if step_macs is not None and step_macs < SMALL_STEP_MACS:
        return 1, f"small work ({step_macs / 1e6:.0f}M multiply-adds a step)"
    return cpus, f"the {cpus} CPU{'s' if cpus > 1 else ''} this process may use"


def apply(threads: int | None, model, shape: tuple[int, int, int], batch: int) -> tuple[int, str]:
    """torch's CPU threads set as `choose` says for `batch` images a step; returns (threads, why)."""
    import torch
    macs = macs_per_image(model, shape) * batch if threads is None else None
    n, why = choose(threads, macs)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n, why
