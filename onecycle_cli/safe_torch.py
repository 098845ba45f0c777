"""Files torch reads, checked before use: `onecycle train --init RUN`, `--resume RUN`, `model.pretrained: PATH`.

A weights file or a checkpoint may come from anyone. `torch.load(weights_only=True)` keeps it from
running code, but what it lets through still has to be checked before a model takes it:

- the file is opened once, non-blocking, and must be a regular file of at most `WEIGHTS_LIMIT`
  bytes (`safe_files.open_regular`): a FIFO or a link to /dev/zero is refused at once instead of
  hanging, and torch reads the very file that was checked, not whatever the path names a moment later;
- every tensor must be one a model can take: dense (strided), on the CPU, not quantized, of a real
  dtype. A sparse, meta (no values), quantized or complex tensor is refused by name, rather than
  failing inside `load_state_dict` or loading with a warning and nothing in it;
- a checkpoint's recorded normalisation (`normalize`: mean and std per channel, pixel units) must
  have one number per channel, mean and std alike, each finite, the means within what 8-bit pixels
  can average (0..255) and every std in [1e-7, 255]. Anything else is refused naming the file and the
  field: used, a std of 0 or NaN makes every input NaN and the run "diverges", blaming the run for
  the file; a negative std or a short list trains silently on wrong inputs;
- torch's error for a refused file ends with advice to load it with `weights_only=False` (or to
  allowlist what it names): exactly what must not be done with a file from outside, so `detail`
  keeps only what torch found, never that advice.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import BinaryIO

import torch

from .safe_files import open_regular
from .safe_text import one_line

# the largest weights file read: 16 GiB is 4 billion fp32 parameters, several times the largest image
# classifier torchvision or timm publishes (a ViT-G is 1.8 billion); a larger file would fill the memory
WEIGHTS_LIMIT = 16 << 30

REAL_DTYPES = frozenset(getattr(torch, name) for name in (
    "bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")
    if isinstance(getattr(torch, name, None), torch.dtype))

MAX_CHANNELS = 16            # data.channels' upper bound: the most channels onecycle's images have
PIXEL = 255.0                # statistics are in pixel units: an 8-bit channel's mean lies in 0..255
MIN_STD = 1e-7               # onecycle records a constant channel's std as 1e-6 (float32: just under it)


def open_weights(path: Path, follow: bool = True) -> BinaryIO:
    """The weights file, open (see the module docstring); FileNotFoundError, NotRegularFile, TooLarge
    or another OSError for the caller to word. `follow=False` for a file inside a run directory."""
    return open_regular(path, WEIGHTS_LIMIT, follow=follow)


def load(f: BinaryIO):
    """`torch.load` of an open file, without running code in it."""
    with warnings.catch_warnings():  # torch warns about a foreign pickle protocol, or sparse tensors, first
        warnings.simplefilter("ignore")
        return torch.load(f, map_location="cpu", weights_only=True)


# the sentences of torch's errors that advise what must not be done with a file from outside
_ADVICE = re.compile(r"weights_only|safe_globals|add_safe_globals|allowlist|trust|can still be loaded|"
                     r"two options|documentation of torch\.load", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def detail(e: BaseException, limit: int = 200) -> str:
    """`Type: what torch found`, one line, never torch's advice to load the file unrestricted."""
    text = _ANSI.sub("", e.strerror if isinstance(e, OSError) and e.strerror else str(e))
    found = re.search(r"WeightsUnpickler error:\s*(.*)", text, re.DOTALL)  # what the restricted unpickler refused
    if found:
        text = found.group(1)
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    kept = " ".join(s.strip() for s in sentences if s.strip() and not _ADVICE.search(s))
    kept = one_line(kept)
    if len(kept) > limit:
        kept = kept[:limit - 1] + "…"
    return f"{type(e).__name__}: {kept}" if kept else type(e).__name__


def tensor_problem(t: torch.Tensor) -> str | None:
    """What keeps a model from taking tensor `t` as a weight, or None."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        return f"a {type(t).__name__} (a tensor subclass)"
    if t.layout != torch.strided:
        return f"a {str(t.layout).removeprefix('torch.')} tensor (not dense)"
    if t.is_nested:
        return "a nested tensor (not dense)"
    if t.device.type != "cpu":
        return (f"a {t.device.type} tensor (a shape with no values)" if t.device.type == "meta"
                else f"a tensor on {t.device.type}")
    if t.is_quantized:
        return f"a quantized tensor ({str(t.dtype).removeprefix('torch.')})"
    if t.is_complex():
        return f"a complex tensor ({str(t.dtype).removeprefix('torch.')})"
    if t.dtype not in REAL_DTYPES:
        return f"a tensor of dtype {str(t.dtype).removeprefix('torch.')}"
    return None


def bad_tensor(obj, limit: int = 1_000_000) -> tuple[str, str] | None:
    """The first tensor anywhere in `obj` (dicts, lists, tuples: a checkpoint) that a model cannot take,
    as (its name, what it is), or None. Walked without recursion: nesting depth costs nothing."""
    stack = [("", obj)]
    seen = 0
    while stack and seen < limit:
        name, value = stack.pop()
        seen += 1
        if isinstance(value, torch.Tensor):
            problem = tensor_problem(value)
            if problem:
                return name, problem
        elif isinstance(value, dict):
            stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{name}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def stats_problem(stats) -> str | None:
    """What is wrong with a checkpoint's recorded `normalize` ({"source", "mean", "std"}), or None.
    None (no statistics recorded: a run with data.normalize false, an older checkpoint) is fine."""
    if stats is None:
        return None
    if not isinstance(stats, dict):
        return f"normalize is a {type(stats).__name__}, expected a mapping with mean and std"
    if not isinstance(stats.get("source", ""), str):
        return f"normalize.source is a {type(stats['source']).__name__}, expected text"
    for key in ("mean", "std"):
        if not isinstance(stats.get(key), (list, tuple)):
            return f"normalize.{key} is a {type(stats.get(key)).__name__}, expected a list of one number per channel"
    mean, std = stats["mean"], stats["std"]
    if len(mean) != len(std):
        return f"normalize has {len(mean):,} means and {len(std):,} stds, expected one of each per channel"
    if not 1 <= len(mean) <= MAX_CHANNELS:
        return f"normalize has {len(mean):,} values per statistic, expected one per channel (1 to {MAX_CHANNELS})"
    for key, values, low in (("mean", mean, 0.0), ("std", std, MIN_STD)):
        for i, v in enumerate(values):
            if not _number(v):
                return f"normalize.{key}[{i}] is a {type(v).__name__}, expected a number"
            if not (math.isfinite(v) and low <= v <= PIXEL):
                return f"normalize.{key}[{i}] is {v!r}, expected a finite value in [{low:g}, {PIXEL:g}] (pixel units)"
    return None


def clean_stats(stats: dict, source: str) -> dict:
    """Checked statistics (`stats_problem` found nothing) as plain floats, with a printable source."""
    out = {"source": one_line(stats.get("source") or source)[:200],
           "mean": [float(v) for v in stats["mean"]], "std": [float(v) for v in stats["std"]]}
    if isinstance(stats.get("note"), str):
        out["note"] = one_line(stats["note"])[:200]
    return out
