"""The dataset as tensors where training reads them: `onecycle train --config folder --set data.device_budget=0.3`.

`load_dataset` reads a config's `Arrays` and places the uint8 images by tier. When images and
labels fit within `data.device_budget` x the device's free memory (`torch.cuda.mem_get_info` on
CUDA; the available RAM on a CPU), they live on the device ("device" tier). Otherwise they stay in
host memory, pinned when CUDA is there ("host" tier); each batch is then gathered on the host and
copied with `non_blocking=True` (`loader.py`). Labels and channel statistics always live on the
device: `ds.y_train.device` is where training runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .. import memory
from ..config import DataConfig
from ..display import fmt_bytes
from ..errors import DataError
from .arrays import Images
from .read import Progress, read_arrays


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # N x C x H x W, uint8 (a folder's may be stored larger than the model's input: rrc crops it)
    y_train: torch.Tensor  # N, int64
    x_valid: torch.Tensor  # M x C x H x W, uint8, the model's input size
    y_valid: torch.Tensor
    classes: list[str]
    mean: torch.Tensor     # C, in pixel units (0..255)
    std: torch.Tensor
    report: dict = field(default_factory=dict)  # data_report.json: layout, counts, skipped files, cache
    memory: dict = field(default_factory=dict)  # the tier and its bytes, for the summary and meta.json

    @property
    def shape(self) -> tuple[int, int, int]:
        """C x H x W of what the model sees."""
        return tuple(self.x_valid.shape[1:])

    def to(self, device: torch.device | str) -> "Dataset":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return replace(self, x_train=move(self.x_train), y_train=move(self.y_train),
                       x_valid=move(self.x_valid), y_valid=move(self.y_valid),
                       mean=move(self.mean), std=move(self.std))


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return memory.available() or 0  # the CPU, and Apple's unified memory


def choose_tier(nbytes: int, device: torch.device, budget: float) -> dict:
    free = free_bytes(device)
    allowed = int(budget * free)
    tier = "device" if nbytes <= allowed else "host"
    ram = (memory.available() or 0) if tier == "host" or device.type == "cpu" else None
    if ram is not None and nbytes > ram:
        raise DataError(f"the dataset's uint8 images take {fmt_bytes(nbytes)} but {device} allows {fmt_bytes(allowed)} "
                        f"(data.device_budget = {budget} of {fmt_bytes(free)} free) and the host has "
                        f"{fmt_bytes(ram)} available: "
                        f"lower data.image_size (3 x size^2 bytes an image), data.presize or data.train_size")
    return {"tier": tier, "device": str(device), "bytes": nbytes, "free_bytes": free, "budget": budget,
            "budget_bytes": allowed, "pinned": tier == "host" and device.type == "cuda"}


def place(images: Images, device: torch.device, pin: bool = False) -> torch.Tensor:
    """Gather `images` straight into a uint8 tensor on `device` (pinned host memory with `pin`), a chunk at a time."""
    if device.type == "cpu":
        out = torch.empty(images.shape, dtype=torch.uint8, pin_memory=pin)
        images.numpy(out.numpy())
        return out
    out = torch.empty(images.shape, dtype=torch.uint8, device=device)
    stage = torch.empty((images.chunk, *images.shape[1:]), dtype=torch.uint8, pin_memory=torch.cuda.is_available())
    for start in range(0, len(images), images.chunk):
        n = min(images.chunk, len(images) - start)
        images.fill(stage.numpy()[:n], start)
        out[start:start + n].copy_(stage[:n])  # a blocking copy: the stage is refilled next
    return out


def load_dataset(cfg: DataConfig, device: torch.device | str = "cpu", progress: Progress | None = None,
                 stop=None) -> Dataset:
    """The dataset of a config, its images placed by tier for training on `device`."""
    device = torch.device(device)
    a = read_arrays(cfg, progress, stop)
    nbytes = a.x_train.nbytes + a.x_valid.nbytes + 8 * (len(a.y_train) + len(a.y_valid))
    memory = choose_tier(nbytes, device, cfg.device_budget)
    home = device if memory["tier"] == "device" else torch.device("cpu")
    labels = lambda y: torch.from_numpy(np.ascontiguousarray(y, np.int64)).to(device)  # noqa: E731
    stats = lambda v: torch.from_numpy(np.asarray(v, np.float32)).to(device)  # noqa: E731
    return Dataset(a.name, place(a.x_train, home, memory["pinned"]), labels(a.y_train),
                   place(a.x_valid, home, memory["pinned"]), labels(a.y_valid), list(a.classes),
                   stats(a.mean), stats(a.std), {**a.report, "memory": memory}, memory)
