"""Several processes through torchrun: `torchrun --nproc-per-node 2 -m onecycle_cli train ...`.

One process per GPU (or per CPU share, with gloo). Rank 0 alone writes the run directory; sums
and decisions travel with all_reduce and broadcast. In a single process every helper here is a
no-op, so the training loop reads the same either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place; returns `t` for chaining."""
        if self.active:
            torch_dist.all_reduce(t)
        return t

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            torch_dist.all_reduce(t)
            t.div_(self.world)
        return t

    def from_main(self, obj: Any) -> Any:
        """Rank 0's value of `obj` on every rank (a stop decision, a run directory's path)."""
        if not self.active:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's BatchNorm statistics everywhere: each rank's last forward updated its own."""
        if self.active:
            for buffer in model.buffers():
                torch_dist.broadcast(buffer, src=0)


def init_distributed(device_name: str) -> Dist:
    """Join the process group torchrun describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local)


def shutdown() -> None:
    """Leave the process group once every rank has finished.

    The barrier first: torch 2.4's gloo can deadlock in destroy_process_group, whose thread holds the GIL
    while it joins a worker thread that still needs the GIL to free the last broadcast's tensors (seen
    on a loaded machine: rank 0 completed, then hung for good). Waiting at a barrier releases the GIL
    and lets that worker finish first.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
