"""The models, chosen by name: `onecycle train --model resnet20`, `--model tv:resnet34`, `--model timm:convnext_tiny`.

One module per family: `cifar_resnet` (He et al.'s CIFAR ResNets) and `simple_cnn` (fastai's) are
built here; `tv` builds any torchvision classification model and `timm_models` any timm model, each
adapted to the data's channels (`stem`) and classes. `pretrained` finds and reads weights (library
caches, local files, onecycle runs), `groups` splits a model from body to head and freezes it.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import ModelConfig
from ..errors import RunDirError
from .cifar_resnet import BasicBlock, CifarResNet
from .groups import LayerGroup, group_names, layer_groups, set_frozen
from .pretrained import Built, body_is_random, load_matching, read_run, read_weights, require_body
from .simple_cnn import SimpleCNN

__all__ = ["BasicBlock", "Built", "CifarResNet", "LayerGroup", "MODELS", "SimpleCNN", "body_is_random", "build",
           "build_model", "count_parameters", "group_names", "layer_groups", "set_frozen", "stat_layers"]


def _resnet(depth: int) -> Callable[[ModelConfig, int, int], nn.Module]:
    return lambda cfg, in_channels, num_classes: CifarResNet(depth, in_channels, num_classes)


def _simple_cnn(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    return SimpleCNN(cfg)


MODELS: dict[str, Callable[[ModelConfig, int, int], nn.Module]] = {
    "resnet20": _resnet(20),
    "resnet32": _resnet(32),
    "resnet44": _resnet(44),
    "resnet56": _resnet(56),
    "resnet110": _resnet(110),
    "simple_cnn": _simple_cnn,
}


def build(cfg: ModelConfig, in_channels: int, num_classes: int, load_weights: bool = True,
          classes: list[str] | None = None) -> Built:
    """The model of `cfg` for images of `in_channels` and `num_classes` classes, with its weights when
    `load_weights` (a resumed run takes them from its checkpoint instead). A onecycle run's head is kept
    only when it was trained for these `classes` (names, in order); unknown classes keep none."""
    if cfg.source == "tv":
        from . import tv  # torchvision, only for its models
        built = tv.build(cfg.name[3:], in_channels, num_classes, cfg.pretrained, cfg.download, load_weights, classes)
    elif cfg.source == "timm":
        from . import timm_models  # timm, an optional extra
        built = timm_models.build(cfg.name[5:], in_channels, num_classes, cfg.pretrained, cfg.download, load_weights,
                                  classes)
    else:
        model = MODELS[cfg.name](cfg, in_channels, num_classes)
        built = Built(model, head=("head",) if cfg.name != "simple_cnn" else (str(len(model) - 3),))
        if cfg.pretrained is not False and load_weights:  # a path: the schema refuses `true` for a built-in
            weights = read_weights(cfg.pretrained)
            built.loaded = load_matching(model, weights, built.head, classes)
            require_body(built.loaded, model, built.head, cfg.name, "model.pretrained")
            built.normalize = weights.normalize
    if cfg.init is not None and load_weights:
        weights = read_run(cfg.init)
        built.loaded = load_matching(built.model, weights, built.head, classes)
        if not built.loaded.taken:
            raise RunDirError(f"--init {cfg.init}: none of its {len(weights.tensors)} tensors fits {cfg.name} "
                              f"(expected a run of the same architecture)")
        built.normalize = weights.normalize
    return built


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    return build(cfg, in_channels, num_classes).model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stat_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose outputs `--activation-stats` follows: the model's own choice, else its top-level children."""
    if hasattr(model, "stat_layers"):
        return model.stat_layers()
    return [(name, m) for name, m in model.named_children() if any(True for _ in m.parameters())]
