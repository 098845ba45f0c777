"""A run's model rebuilt from one of its checkpoints: what `evaluate`, `predict` and `export` start from.

`load_trained(RUN_DIR, "last"|"best"|"ema")` reads `checkpoints/<which>.pt` (ema: the average last.pt
holds) as a resume does (never through a link, never code: `resume.read_checkpoint`), validates the
config it recorded, builds that architecture without downloading or reading any weights file, and
loads the checkpoint's weights strictly: a tensor missing or of another shape is exit 2, not a model
that predicts nonsense. What the inputs were (channels, size, how files were resized, whose mean and
std) is read from the same checkpoint, so a run scores and predicts exactly as it validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..augment import normalize
from ..config import Config
from ..errors import RunDirError
from ..pipeline import Precision, resolve_device, resolve_precision
from ..safe_files import check_regular_or_dir
from ..safe_torch import detail

CHECKPOINTS = ("last", "best", "ema")  # ema: the weight average last.pt holds beside the model (train.ema)
# the images of a built-in set, for a checkpoint written before checkpoints recorded their input shape
BUILTIN_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "mnist_sample": (1, 28, 28),
                  "cifar10": (3, 32, 32)}


@dataclass
class Trained:
    run: Path
    which: str                   # last, best or ema
    config: Config               # the run's, as its checkpoint recorded it
    model: nn.Module             # in eval mode, on `device`
    classes: list[str]           # what each output means
    shape: tuple[int, int, int]  # C x H x W of what the model takes
    stats: dict | None           # the inputs' mean and std (pixel units) and whose they are; None: scaled to 0..1
    epoch: int | None            # the epoch at whose end the weights were saved (0-based), when recorded
    device: torch.device
    precision: Precision

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (N x C x H x W, on the device) as the model took them in validation."""
        if self.stats is None:
            return normalize(x, None, None)
        mean = torch.tensor(self.stats["mean"], dtype=torch.float32, device=x.device)
        std = torch.tensor(self.stats["std"], dtype=torch.float32, device=x.device)
        return normalize(x, mean, std)

    @property
    def stored(self) -> int:
        """The size a folder's files are decoded to before the centre crop to the model's size."""
        return self.config.data.presize or self.shape[-1]

    @property
    def preprocessing(self) -> dict:
        d = self.config.data
        return {"channels": self.shape[0], "image_size": self.shape[-1], "resize": d.resize,
                "decoded_size": self.stored, "normalize": self.stats}


def input_shape(saved: dict, cfg: Config) -> tuple[int, int, int]:
    shape = saved.get("shape")
    if isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and 0 < v <= 4096 for v in shape):
        return tuple(shape)
    d = cfg.data
    return BUILTIN_SHAPES.get(d.dataset, (d.channels, d.image_size, d.image_size))


def checkpoint_path(run: Path, which: str) -> Path:
    if which not in CHECKPOINTS:
        raise RunDirError(f"--checkpoint {which!r}: expected one of {', '.join(CHECKPOINTS)}")
    if not run.is_dir():
        raise RunDirError(f"{run}: no such run directory")
    path = run / "checkpoints" / f"{'last' if which == 'ema' else which}.pt"
    for inside in (run / "checkpoints", path):  # a link in the run would read a file outside it
        problem = check_regular_or_dir(inside)
        if problem:
            raise RunDirError(f"{run}: {inside.relative_to(run)} is {problem}; a run's files are its own")
    if not path.is_file():
        why = ("the run kept no best checkpoint (it was made before best.pt existed, or stopped before its first "
               "epoch ended)" if which == "best" else "not a train run, or it stopped before its first epoch ended")
        raise RunDirError(f"{run}: no {path.relative_to(run)} ({why})")
    return path


def load_trained(run_dir: str | Path, which: str = "last", device: str = "auto", precision: str = "auto") -> Trained:
    """The model of `run_dir`'s checkpoint `which`, on `device`, in eval mode; RunDirError (exit 2) when
    there is none or it is not a onecycle checkpoint of a model onecycle builds."""
    from ..models import build
    from ..resume import read_checkpoint
    run = Path(run_dir).expanduser()
    path = checkpoint_path(run, which)
    try:
        saved = read_checkpoint(path)
    except Exception as e:
        raise RunDirError(f"{run}: {path.relative_to(run)} cannot be read ({detail(e)}); the file is damaged or not "
                          f"onecycle's") from None
    if which == "ema":
        if not isinstance(saved.get("ema"), dict):
            raise RunDirError(f"{run}: checkpoints/last.pt holds no weight average (the run had no train.ema)")
        saved = {**saved, "model": saved["ema"]}
    if not isinstance(saved.get("model"), dict) or not isinstance(saved.get("config"), dict):
        raise RunDirError(f"{run}: {path.relative_to(run)} is not a onecycle checkpoint (no model or config)")
    try:
        cfg = Config.model_validate(saved["config"])
    except Exception as e:
        raise RunDirError(f"{run}: {path.relative_to(run)} records a config this onecycle does not take "
                          f"({detail(e)})") from None
    classes = saved.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise RunDirError(f"{run}: {path.relative_to(run)} records no class names")
    shape = input_shape(saved, cfg)
    dev = resolve_device(device)  # where it runs now, not where it trained: a GPU run scores on a laptop
    # the architecture alone: no pretrained file read, no download (the checkpoint holds every weight)
    model_cfg = cfg.model.model_copy(update={"pretrained": False, "init": None, "download": False})
    try:
        model = build(model_cfg, shape[0], len(classes), load_weights=False).model
        model.load_state_dict(saved["model"])  # strict: a missing tensor or another shape is refused here
    except Exception as e:
        raise RunDirError(f"{run}: {path.relative_to(run)} does not fit model {cfg.model.name!r} "
                          f"({detail(e)})") from None
    model.to(dev).eval()
    state = saved.get("state")
    epoch = state.get("epoch") if isinstance(state, dict) else None
    epoch = epoch - 1 if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 0 else None
    stats = saved.get("normalize") if cfg.data.normalize else None
    return Trained(run, which, cfg, model, list(classes), shape, stats, epoch, dev,
                   resolve_precision(precision, dev))
