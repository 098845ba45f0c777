"""Pretrained weights, offline first: `onecycle train --model tv:resnet18 --set model.pretrained=true`.

Where weights come from, and how they are read:
- `model.pretrained: true`: torchvision's default weights from `$TORCH_HOME/hub/checkpoints/<file>`
  (the file name is the last part of the weights' URL), timm's from the Hugging Face cache
  (`$HF_HUB_CACHE/models--timm--<name>`) or, for weights published only by URL, the torch hub folder.
  A missing file is fetched only when `model.download` is true and the host answers within seconds;
  otherwise the error names the file, the folder to copy it into and how to get it.
- `model.pretrained: PATH` and `--init RUN_DIR`: a local file, never trusted (onecycle_cli/safe_torch.py): opened
  once, non-blocking, a regular file under a size cap (a FIFO or /dev/zero is refused, never waited on), then
  `torch.load(weights_only=True)` of that open file (no code runs) or safetensors from its bytes; a zip whose
  members inflate far beyond what torch.save writes is refused before it is read. Every tensor must be dense,
  real and hold values (no sparse, meta, quantized or complex tensor), and a checkpoint's recorded
  normalisation must be one sane number per channel; either is refused naming the tensor or the field.
  `--init`'s summary.json only says how the run ended: unreadable, it is "status unknown".
Every tensor is taken by name and shape (`load_matching`); what was taken, skipped and missing is
returned, so the run can say so. A classifier is a map onto named classes, not just a shape: the head
of a onecycle run is kept only for the same classes in the same order (the checkpoint records them).
Fashion-MNIST's classes 0-4 and 5-9 are both 5-way, and a head carried from one to the other would
start the new task confidently wrong, so whenever the names differ, or are not recorded, the head
starts afresh and the record says why.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .. import safe_torch
from ..errors import DataError, RunDirError, UsageError
from ..network import reach
from ..safe_files import NotRegularFile, TooLarge, check_regular_or_dir, read_json
from ..safe_text import one_line

PROBE_SECONDS = 3.0      # no answer from the host within this: treated as offline, said so at once
DOWNLOAD_TIMEOUT = 60.0  # a stalled transfer fails instead of hanging the run
# torch.save writes its members uncompressed: a member that inflates far beyond its stored size is not one
MAX_INFLATION = 4.0


@dataclass
class Weights:
    """Tensors read from a file, and what they are."""

    tensors: dict[str, torch.Tensor]
    kind: str                    # "state_dict" (a library's, or anyone's) or "onecycle" (a run's checkpoint)
    source: str                  # what to call them in messages and records
    normalize: dict | None = None  # the mean/std (pixel units) the weights were trained with, when known
    classes: list[str] | None = None  # the class names its head was trained for (a onecycle checkpoint records them)


@dataclass
class Loaded:
    """What `load_matching` took from a set of weights."""

    source: str
    taken: list[str] = field(default_factory=list)
    skipped: dict[str, tuple] = field(default_factory=dict)  # in both, shaped differently (the file's shape)
    missing: list[str] = field(default_factory=list)   # the model's, not in the weights
    unused: list[str] = field(default_factory=list)    # the weights', not in the model
    fresh: list[str] = field(default_factory=list)     # the head's: their shape fits, but the classes differ
    head: str | None = None                            # whether the head was taken, and why

    def as_dict(self) -> dict:
        return {"source": self.source, "taken": len(self.taken), "skipped": list(self.skipped),
                "missing": self.missing, "unused": len(self.unused), "reinitialised": self.fresh, "head": self.head}


@dataclass
class Built:
    """A model as a family builds it: adapted to the data, its weights loaded, and what that took."""

    model: nn.Module
    head: tuple[str, ...] = ()      # the classifier's module path(s): the last parameter group
    normalize: dict | None = None   # {"source", "mean", "std"} the weights came with (pixel units), when known
    loaded: Loaded | None = None    # what was taken from pretrained weights
    notes: list[str] = field(default_factory=list)  # what was adapted, one line each


# ------------------------------------------------------------------------------------------------
# reading a file


def _check_zip(f, path: Path, what: str) -> None:
    """`f`: the open weights file, read from its start (and left there)."""
    try:
        if not zipfile.is_zipfile(f):
            return  # the legacy (pre-1.6) format: torch.load reads it with the same restricted unpickler
        with zipfile.ZipFile(f) as z:
            stored = sum(i.compress_size for i in z.infolist())
            inflated = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"{what} {path}: a damaged zip archive ({e}); expected a file written by torch.save") from None
    finally:
        f.seek(0)
    if inflated > MAX_INFLATION * stored + (1 << 20):
        raise DataError(f"{what} {path}: its members inflate to {inflated:,} bytes from {stored:,}; torch.save "
                        f"writes them uncompressed, so this is not a weights file")


def _unwrap(obj, path: Path, what: str) -> tuple[dict, str, dict | None, list[str] | None]:
    """The tensor mapping inside a loaded object: a onecycle checkpoint's "model", a training script's
    "state_dict" / "model_state_dict", or the object itself; with a checkpoint's statistics and classes.
    Every tensor is one a model can take, and the statistics are sane (safe_torch), or a DataError says which not."""
    normalize = classes = None
    kind = "state_dict"
    if isinstance(obj, dict) and "format" in obj and isinstance(obj.get("model"), dict):
        kind, normalize, classes, obj = "onecycle", obj.get("normalize"), obj.get("classes"), obj["model"]
    elif isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        held = type(obj).__name__ if not isinstance(obj, dict) else "an empty mapping"
        raise DataError(f"{what} {path}: holds {held}, expected a state_dict (tensor names to tensors) or a onecycle "
                        f"checkpoint")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise DataError(f"{what} {path}: entry {one_line(bad)[:60]!r} is a {type(obj[bad]).__name__}, not "
                        f"a tensor; expected a state_dict (tensor names to tensors) or a onecycle checkpoint")
    for name, tensor in obj.items():
        problem = safe_torch.tensor_problem(tensor)
        if problem:
            raise DataError(f"{what} {path}: tensor {one_line(name)[:80]!r} is {problem}; expected dense "
                            f"tensors of real numbers, as torch.save writes a model's state_dict")
    for prefix in ("module.", "_orig_mod."):  # saved from DDP or a torch.compile'd model
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    problem = safe_torch.stats_problem(normalize)
    if problem:  # used, they would normalise every input wrongly, and the run would be blamed for the file
        raise DataError(f"{what} {path}: its recorded {problem}; the checkpoint is damaged or not onecycle's")
    if normalize is not None:
        normalize = safe_torch.clean_stats(normalize, f"the checkpoint {path}")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        classes = None  # a checkpoint from before they were recorded: its head's classes are unknown
    return obj, kind, normalize, classes


WHAT_IT_TAKES = ("expected a state_dict (.pth, .pt, .bin, .safetensors) or a onecycle checkpoint "
                 "(RUN/checkpoints/last.pt)")


def read_weights(path: str | Path, what: str = "model.pretrained", follow: bool = True) -> Weights:
    """The tensors of a weights file, read without running anything in it; a DataError says what is wrong.
    `follow=False` for a file inside a run directory: a link there is refused, not followed."""
    path = Path(path).expanduser()
    try:
        f = safe_torch.open_weights(path, follow=follow)
    except FileNotFoundError:
        raise DataError(f"{what} {path}: no such file") from None
    except NotRegularFile as e:
        raise DataError(f"{what} {path}: {e.strerror}, not a file; {WHAT_IT_TAKES}") from None
    except TooLarge as e:
        raise DataError(f"{what} {path}: {e.strerror} of a weights file") from None
    except OSError as e:
        raise DataError(f"{what} {path}: cannot be read ({e.strerror or type(e).__name__})") from None
    with f:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load
            except ImportError:
                raise UsageError(f"{what} {path}: reading .safetensors needs the safetensors package "
                                 f"(pip install safetensors, or \"onecycle[timm]\")") from None
            try:
                obj = load(f.read(safe_torch.WEIGHTS_LIMIT))
            except Exception as e:  # a header that lies, a truncated body: safetensors checks both
                raise DataError(f"{what} {path}: not a readable safetensors file ({safe_torch.detail(e)})") from None
        else:
            _check_zip(f, path, what)
            try:
                obj = safe_torch.load(f)
            except Exception as e:
                raise DataError(f"{what} {path}: not a weights file torch reads safely ({safe_torch.detail(e)}); "
                                f"expected a state_dict saved with torch.save, a .safetensors file or a onecycle "
                                f"checkpoint") from None
    tensors, kind, normalize, classes = _unwrap(obj, path, what)
    return Weights(tensors, kind, str(path), normalize, classes)


# a summary's status, as runs/history.py knows them
ENDINGS = ("completed", "interrupted", "diverged", "failed", "running")


def read_run(run_dir: str | Path) -> Weights:
    """A onecycle run's final weights (`--init RUN_DIR`), with the normalisation that run used."""
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise RunDirError(f"--init {run}: no such run directory")
    for inside in ("checkpoints", "checkpoints/last.pt"):  # a link in the run would read a file outside it
        problem = check_regular_or_dir(run / inside)
        if problem:
            raise RunDirError(f"--init {run}: {inside} is {problem}; expected a finished onecycle train run")
    path = run / "checkpoints" / "last.pt"
    if not path.is_file():
        raise RunDirError(f"--init {run}: no checkpoints/last.pt (not a train run, or it stopped before its first "
                          f"epoch ended); expected a finished onecycle train run")
    weights = read_weights(path, "--init", follow=False)
    if weights.kind != "onecycle":
        raise RunDirError(f"--init {run}: checkpoints/last.pt is not a onecycle checkpoint")
    # an interrupted or diverged run's last checkpoint is usable, but the record should say which it was; a
    # summary that cannot be read (a FIFO, a link, nested past the parser, not JSON) leaves that unknown
    summary = read_json(run / "summary.json")
    status = summary.get("status") if summary else None
    status = status if status in ENDINGS else "status unknown"
    weights.source = f"run {run}" + (f" ({status})" if status != "completed" else "")
    return weights


# ------------------------------------------------------------------------------------------------
# loading by name and shape


def body_is_random(built: Built) -> bool:
    """Nothing was loaded into the model's body (no model.pretrained, no --init): it is as initialised at random,
    and freezing it trains the head on random features."""
    return built.loaded is None or all(in_head(name, built.head) for name in built.loaded.taken)


def in_head(name: str, head: tuple[str, ...]) -> bool:
    """Whether state_dict entry `name` belongs to one of the head's modules."""
    return any(name == h or name.startswith(h + ".") for h in head)


def _names(classes: list[str]) -> str:
    shown = ", ".join(classes[:5]) + (f", ... ({len(classes)} in all)" if len(classes) > 5 else "")
    return shown or "none"


def head_verdict(weights: Weights, classes: list[str] | None) -> tuple[bool, str]:
    """Whether the weights' classifier may be kept for data of these `classes`, and why, in a sentence.

    Only the same names in the same order keep it: a row of the head is a class's weights, so 5 other
    classes (Fashion-MNIST's 0-4 against its 5-9) or the same ones re-ordered would be read as wrong answers.
    Unknown names on either side (a plain state_dict, a checkpoint from before they were recorded) keep
    nothing: a fresh head costs an epoch at worst, a wrong one is silent."""
    if weights.classes is None:
        return False, "starts afresh: the weights record no class names"
    if classes is None:
        return False, "starts afresh: this run's class names are unknown"
    if list(weights.classes) == list(classes):
        return True, f"taken: the same {len(classes)} classes ({_names(classes)})"
    return False, (f"starts afresh: the classes differ (the weights': {_names(weights.classes)}; this data's: "
                   f"{_names(classes)})")


def load_matching(model: nn.Module, weights: Weights, head: tuple[str, ...] = (),
                  classes: list[str] | None = None) -> Loaded:
    """Copy every tensor whose name and shape match into the model; report the rest. The `head`'s
    tensors are taken only for the same `classes` (`head_verdict`); with no `head` given, shapes decide
    (a library's ImageNet state_dict, loaded before its classifier is replaced)."""
    own = model.state_dict()
    loaded = Loaded(weights.source)
    keep_head = True
    if head:
        keep_head, loaded.head = head_verdict(weights, classes)
    take = {}
    for name, tensor in weights.tensors.items():
        if name not in own:
            loaded.unused.append(name)
        elif own[name].shape != tensor.shape:
            loaded.skipped[name] = tuple(tensor.shape)
        elif not keep_head and in_head(name, head):
            loaded.fresh.append(name)
        else:
            take[name] = tensor
    loaded.missing = [name for name in own if name not in weights.tensors]
    model.load_state_dict(take, strict=False)
    loaded.taken = list(take)
    return loaded


def require_body(loaded: Loaded, model: nn.Module, head: tuple[str, ...], model_name: str, what: str) -> None:
    """Weights given as `model.pretrained` must cover everything but the head: a resnet34 file in a resnet18
    is a mistake to stop on, not a partial initialisation to go on with."""
    own = model.state_dict()
    bad = [n for n in loaded.missing + list(loaded.skipped) if not in_head(n, head)]
    extra = [n for n in loaded.unused if not in_head(n, head)]
    if bad:
        first = bad[0]
        shape = (f": {list(own[first].shape)} in the model, {list(loaded.skipped[first])} in the file"
                 if first in loaded.skipped else ": not in the file")
        raise DataError(f"{what} {loaded.source}: {len(bad)} of the {len(own)} tensors of {model_name} are missing "
                        f"or shaped differently (first: {first}{shape}); expected weights of the same architecture")
    if extra:  # a resnet34's file holds every tensor of a resnet18, and 40 more
        raise DataError(f"{what} {loaded.source}: {len(extra)} tensors in the file are not in {model_name} (first: "
                        f"{extra[0]}); expected weights of the same architecture")


# ------------------------------------------------------------------------------------------------
# the libraries' caches


def offline_reason(url: str, download: bool, switch: str | None = None) -> str | None:
    """Why nothing can be fetched from `url` now, or None when it is worth trying."""
    if not download:
        return "model.download is false"
    if switch and os.environ.get(switch, "").strip().lower() in ("1", "true", "yes", "on"):
        return f"{switch} is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # through a proxy a direct probe proves nothing: let the download try (with its timeout)
    return reach(url, PROBE_SECONDS)


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    saved = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(saved)


def _one_line(e: Exception) -> str:
    text = str(e).splitlines()[0][:200] if str(e) else "no detail"
    return f"{type(e).__name__}: {text}"


def hub_file(url: str, label: str, download: bool) -> Path:
    """A file of torch hub's cache (`$TORCH_HOME/hub/checkpoints/<name>`), fetched there if allowed."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / Path(urlparse(url).path).name
    if path.is_file():
        return path
    why = offline_reason(url, download)
    if why is None:
        hashed = re.search(r"-([a-f0-9]+)\.", path.name)  # torch hub's own convention: name-<sha256 prefix>.ext
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with _socket_timeout(DOWNLOAD_TIMEOUT):
                torch.hub.download_url_to_file(url, str(path), hash_prefix=hashed.group(1) if hashed else None,
                                               progress=False)
        except Exception as e:  # no route, a firewall, a full disk, a bad hash: all the same to the user
            why = f"the download failed ({_one_line(e)})"
        if path.is_file():
            return path
    torch_home = os.environ.get("TORCH_HOME")
    raise UsageError(f"{label} pretrained weights {path.name} are not in {folder} and {why}: download {url} on a "
                     f"machine with network and copy it into {folder}"
                     f"{f' (TORCH_HOME={torch_home})' if torch_home else ' (or set TORCH_HOME)'}, "
                     f"or set model.pretrained to the file's path")


def hf_file(repo: str, filenames: list[str], label: str, timm_name: str, download: bool) -> Path:
    """A file of the Hugging Face cache (`$HF_HUB_CACHE/models--<org>--<name>`), fetched there if allowed."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    for name in filenames:
        cached = try_to_load_from_cache(repo, name)
        if isinstance(cached, str) and Path(cached).is_file():
            return Path(cached)
    endpoint = getattr(constants, "ENDPOINT", None) or "https://huggingface.co"
    why = offline_reason(endpoint, download, "HF_HUB_OFFLINE")
    if why is None:
        errors = []
        for name in filenames:
            try:
                with _socket_timeout(DOWNLOAD_TIMEOUT):
                    return Path(hf_hub_download(repo, name))
            except Exception as e:  # the first name may not exist for this repo: try the next
                errors.append(_one_line(e))
        why = f"the download failed ({errors[-1]})"
    cache = Path(constants.HF_HUB_CACHE)
    folder = cache / f"models--{repo.replace('/', '--')}"
    raise UsageError(f"{label} pretrained weights ({repo}, {filenames[0]}) are not in the Hugging Face cache {cache} "
                     f"and {why}: on a machine with network run python -c \"import timm; "
                     f"timm.create_model('{timm_name}', pretrained=True)\" and copy its {folder.name} folder into "
                     f"{cache} (HF_HUB_CACHE), or set model.pretrained to the weights file")
