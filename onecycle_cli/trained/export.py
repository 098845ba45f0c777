"""A run's model as a bundle that needs no onecycle: `onecycle export runs/<id> --out bundle/`.

The bundle is three files:
  model.pt2          a `torch.export` program: uint8 images (N x C x H x W, any N) in, class
                     probabilities out; the run's normalisation and the softmax are inside it.
                     `torch.export.load("model.pt2").module()(x)` is all it takes.
  model.safetensors  the weights (the architecture's own names), for onecycle or anyone rebuilding it
  model.json         the architecture, the classes in output order, and how to make the input: channels,
                     size, how files were resized (`resize`, `decoded_size`), mean and std (pixel units)
The program is checked before it is written: loaded back, it must give the model's own
probabilities on a batch of images.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import RunDirError, UsageError
from ..safe_files import NotDirectory, atomic_write_bytes, atomic_write_text, open_dir
from ..safe_text import printable
from .load import Trained, load_trained

FILES = ("model.pt2", "model.safetensors", "model.json")
MOST_BATCH = 1 << 16


class Bundled(nn.Module):
    """uint8 images -> probabilities: the run's normalisation, its model and a softmax, in one module."""

    def __init__(self, model: nn.Module, mean: list[float] | None, std: list[float] | None, channels: int):
        super().__init__()
        self.model = model
        mean = torch.tensor(mean if mean is not None else [0.0] * channels, dtype=torch.float32)
        std = torch.tensor(std if std is not None else [255.0] * channels, dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images.float() - self.mean) / self.std).softmax(1)


def program_bytes(module: nn.Module, example: torch.Tensor) -> bytes:
    """The module exported for any batch size, as the bytes of a .pt2 file."""
    batch = torch.export.Dim("batch", min=1, max=MOST_BATCH)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def check_program(data: bytes, module: nn.Module, example: torch.Tensor) -> float:
    """The largest difference between the program read back and the module, on `example` and one image."""
    with warnings.catch_warnings():  # torch 2.4's loader warns about its own torch.load of the bytes made above
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.export.load(io.BytesIO(data)).module()
    worst = 0.0
    with torch.no_grad():
        for x in (example, example[:1]):
            worst = max(worst, float((program(x) - module(x)).abs().max()))
    return worst


def export_run(run_dir: Path, out: Path, which: str = "last") -> dict:
    """Write the bundle of the run's checkpoint `which` into `out` (made if missing); its description back."""
    started = time.time()
    trained = load_trained(run_dir, which, "cpu", "fp32")  # a portable program: CPU, float32
    try:  # before the work: a link, a file or a FIFO at --out is refused, never written through
        fd = open_dir(out, create=True)
    except NotDirectory as e:
        raise RunDirError(f"--out {out}: {e.strerror}, not a directory; not writing the bundle there") from None
    except OSError as e:
        raise RunDirError(f"--out {out}: cannot be made ({e.strerror})") from None
    try:
        return _export(trained, out, fd, which, started)
    finally:
        os.close(fd)


def _export(trained: Trained, out: Path, fd: int, which: str, started: float) -> dict:
    c, h, w = trained.shape
    stats = trained.stats
    module = Bundled(trained.model, stats["mean"] if stats else None, stats["std"] if stats else None, c).eval()
    module.requires_grad_(False)  # an inference program: its outputs carry no autograd graph
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (4, c, h, w), dtype=torch.uint8, generator=generator)
    try:
        data = program_bytes(module, example)
    except Exception as e:
        why = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise UsageError(f"{trained.config.model.name} cannot be exported by torch.export under torch "
                         f"{torch.__version__}: {why}") from None
    worst = check_program(data, module, example)
    if not worst < 1e-4:
        raise UsageError(f"the exported program differs from the model by {worst:.3g} in probability; not written")
    from safetensors.torch import save
    weights = save({k: v.detach().clone().contiguous() for k, v in trained.model.state_dict().items()},
                   metadata={"format": "pt"})
    d = trained.config.data
    description = {
        "format": "onecycle-bundle/1",
        "architecture": trained.config.model.name,
        "model": trained.config.model.model_dump(mode="json"),
        "classes": trained.classes,
        "input": {"dtype": "uint8", "layout": "N x C x H x W", "channels": c, "height": h, "width": w,
                  "colour": "grey (L)" if c == 1 else "RGB" if c == 3 else f"{c} channels",
                  "resize": d.resize, "decoded_size": trained.stored,
                  "how": (f"decode the file (first frame, EXIF orientation applied), convert to "
                          f"{'L' if c == 1 else 'RGB'}, resize to {trained.stored} x {trained.stored} ("
                          + {"crop": "shorter side to that size, then the centre square",
                             "squish": "both sides to that size",
                             "pad": "longer side to that size, centred on black"}[d.resize]
                          + (f"), then take the centre {h} x {w}" if trained.stored != h else ")"))},
        "normalize": ({"mean": stats["mean"], "std": stats["std"], "units": "pixels (0-255)",
                       "source": stats.get("source")} if stats else None),
        "output": f"class probabilities, N x {len(trained.classes)} (softmax), in the order of classes",
        "files": {"program": "model.pt2", "weights": "model.safetensors"},
        "load": "torch.export.load('model.pt2').module()(images_uint8)",
        "run": printable(str(trained.run)), "checkpoint": which, "epoch": trained.epoch,
        "torch": torch.__version__, "program_check_max_difference": worst,
    }
    atomic_write_bytes(out / "model.pt2", data, dir_fd=fd)
    atomic_write_bytes(out / "model.safetensors", weights, dir_fd=fd)
    atomic_write_text(out / "model.json", json.dumps(description, indent=1) + "\n", dir_fd=fd)
    return {"command": "export", "run_dir": str(trained.run), "checkpoint": which, "out": str(out),
            "files": list(FILES), "classes": len(trained.classes), "input": [c, h, w],
            "program_check_max_difference": worst, "seconds": round(time.time() - started, 3)}
