"""The models, chosen by name: `onecycle train --set model.name=resnet20`.

One module per family: `cifar_resnet` (He et al.'s CIFAR ResNets) and `simple_cnn` (fastai's).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import ModelConfig
from .cifar_resnet import BasicBlock, CifarResNet
from .simple_cnn import SimpleCNN

__all__ = ["BasicBlock", "CifarResNet", "MODELS", "SimpleCNN", "build_model", "count_parameters"]


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


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    return MODELS[cfg.name](cfg, in_channels, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
