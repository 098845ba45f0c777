"""timm's models by name: `onecycle train --model timm:convnext_tiny --set model.pretrained=true`.

An optional extra (`pip install "onecycle[timm]"`). The model is `timm.create_model(name,
num_classes=k, in_chans=c)`, so timm itself sizes the classifier and adapts the stem. Pretrained
weights are read here (offline first, `pretrained.py`) and handed to timm as a state_dict
(`pretrained_cfg_overlay=dict(state_dict=...)`), which then does what it does with its own downloads:
the model's checkpoint filter, the stem's channel adaptation, the classifier dropped when the class
count differs. timm reports the tensors the model missed through its logger; anything but the
classifier missing is an error here, as for torchvision.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re

import torch
from torch import nn

from ..errors import DataError, UsageError
from .pretrained import Built, Loaded, hf_file, hub_file, load_matching, read_weights, require_body

INSTALL = 'pip install "onecycle[timm]"'


def import_timm():
    try:
        import timm
    except ImportError:
        raise UsageError(f"timm models need the timm package: {INSTALL}") from None
    except Exception as e:  # installed, but broken against this torch: say so rather than show its traceback
        raise UsageError(f"timm is installed but fails to import ({type(e).__name__}: {e}); "
                         f"{INSTALL} --upgrade, or a timm release that supports torch {torch.__version__}") from None
    return timm


def check_name(name: str) -> None:
    timm = import_timm()
    if not timm.is_model(name):
        arch = name.split(".", 1)[0]
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.5)
        raise UsageError(f"model.name = 'timm:{name}': timm has no model {arch!r}"
                         + (f" (closest: {', '.join('timm:' + c for c in close)})" if close else "")
                         + "; the names are timm.list_models()")


def pretrained_cfg(name: str) -> dict:
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise UsageError(f"model.pretrained = true but timm publishes no weights for {name!r}: see "
                         f"timm.list_models(pretrained=True), or give a weights file as model.pretrained=PATH")
    return cfg.to_dict()


def head_paths(model: nn.Module) -> tuple[str, ...]:
    """Where timm says the classifier is (`pretrained_cfg["classifier"]`, a name or several)."""
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    return (head,) if isinstance(head, str) else tuple(head)


class _Missing(logging.Handler):
    """timm's own report of the keys its load left out (`_builder.load_pretrained` logs them)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.missing: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.match(r"Missing keys \((.*)\) discovered", record.getMessage())
        if match:
            self.missing += [k for k in match.group(1).split(", ") if k]


@contextlib.contextmanager
def _report_missing():
    # on timm's root logger: its other modules' notes (a stem it could not adapt) stay off stderr too
    logger = logging.getLogger("timm")
    handler, level, propagate = _Missing(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # timm's info and warnings stay off stderr: the run says what was loaded
    # (messages logged under timm.models._builder reach this handler through propagation)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _stats(cfg: dict, source: str) -> dict:
    return {"source": source, "mean": [m * 255 for m in cfg["mean"]], "std": [s * 255 for s in cfg["std"]]}


def build(name: str, in_channels: int, num_classes: int, pretrained: bool | str, download: bool,
          load_weights: bool = True, classes: list[str] | None = None) -> Built:
    timm = import_timm()
    check_name(name)
    args = dict(num_classes=num_classes, in_chans=in_channels)
    weights = None
    if pretrained is not False and load_weights:
        if pretrained is True:
            cfg = pretrained_cfg(name)
            label = f"timm:{name}"
            arch_tag = f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else name
            if cfg.get("hf_hub_id"):
                files = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors",
                                                                                      "pytorch_model.bin"]
                path = hf_file(cfg["hf_hub_id"], files, label, arch_tag, download)
            elif cfg.get("url"):
                path = hub_file(cfg["url"], label, download)
            else:
                raise UsageError(f"model.pretrained = true but timm's {arch_tag} names no file to load")
            weights = read_weights(path, "pretrained")
            weights.source = f"timm {arch_tag} ({path})"
        else:
            weights = read_weights(pretrained)
    if weights is None or weights.kind == "onecycle":
        model = timm.create_model(name, pretrained=False, **args)
        built = Built(model, head=head_paths(model))
        if weights is not None:  # a onecycle run's weights fit the model as built here
            built.loaded = load_matching(model, weights, head_paths(model), classes)
            require_body(built.loaded, model, head_paths(model), f"timm:{name}", "model.pretrained")
            built.normalize = weights.normalize
    else:
        with _report_missing() as report:
            try:
                model = timm.create_model(name, pretrained=True,
                                          pretrained_cfg_overlay=dict(state_dict=weights.tensors),
                                          **args)
            except RuntimeError as e:  # shapes that do not fit: torch's load_state_dict says which, a line each
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                why = next((line for line in lines if "size mismatch" in line or "Missing key" in line),
                           lines[0] if lines else type(e).__name__)
                raise DataError(f"model.pretrained {weights.source}: does not fit timm:{name} ({why[:300]}); "
                                f"expected weights of the same architecture") from None
        built = Built(model, head=head_paths(model), loaded=Loaded(weights.source, missing=report.missing))
        require_body(built.loaded, model, head_paths(model), f"timm:{name}", "model.pretrained")
        built.loaded.taken = [k for k in model.state_dict() if k not in report.missing]
    if pretrained is not False and built.normalize is None and (weights is None or weights.kind != "onecycle"):
        cfg = model.pretrained_cfg
        built.normalize = _stats(cfg, f"timm {name} pretrained_cfg")
    built.notes.append(f"{', '.join(head_paths(model))}: timm's classifier for {num_classes} classes, "
                       f"{in_channels} input channel(s)")
    return built
