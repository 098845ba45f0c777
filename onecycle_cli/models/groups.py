"""Parameter groups from body to head, and freezing:
`onecycle train --set optim.lr_mult=100 --set train.freeze_epochs=1`.

Each family splits its model as fastai's splitters do:
  torchvision ResNets (resnet*, resnext*, wide_resnet*)  stem..layer2 | layer3..layer4 | head   (fastai's _resnet_split)
  CIFAR ResNets (resnet20..110)                           stem..stage1 | stage2..stage3 | head  (the same cut: the
                                                          stem with the first half of the stages, then the rest)
  simple_cnn                                              body | head (the last conv, which gives the classes)
  every other torchvision or timm model                   body | head (the new classifier; fastai's default_split)
Parameters the split does not name (a ViT's class token, a Swin's final norm) go to the body.
Freezing (fastai's `freeze`, `train_bn=True`) stops gradients to every body parameter except those of
normalisation layers, which keep training, as the BatchNorm statistics do with the model in train mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from ..config import RESNET_NAMES

# torchvision's resnet.py builders: the models fastai's _resnet_split is written for
TV_RESNET = re.compile(r"(resnet\d+|resnext\d+_\w+|wide_resnet\d+_\d+)")
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)  # BatchNorm, InstanceNorm and the rest


@dataclass
class LayerGroup:
    name: str
    params: list[nn.Parameter]
    norm: list[bool]  # per parameter: owned by a normalisation layer (trains while the body is frozen)

    @property
    def size(self) -> int:
        return sum(p.numel() for p in self.params)


def group_names(name: str) -> list[str]:
    """The groups of a model name, body first, known without building it (for `onecycle schedule`)."""
    if name in RESNET_NAMES:
        return ["stem..stage1", "stage2..stage3", "head"]
    if name.startswith("tv:") and TV_RESNET.fullmatch(name[3:]):
        return ["stem..layer2", "layer3..layer4", "head"]
    return ["body", "head"]


def _prefixes(model: nn.Module, name: str, head: tuple[str, ...]) -> list[list[str]]:
    """Module-name prefixes of each group but the first (the first takes everything else)."""
    if name in RESNET_NAMES:
        per_stage = len(model.blocks) // 3
        return [[f"blocks.{i}" for i in range(per_stage, len(model.blocks))], ["head"]]
    if name.startswith("tv:") and TV_RESNET.fullmatch(name[3:]):
        return [["layer3", "layer4"], ["fc"]]
    if name == "simple_cnn":
        return [[str(len(model) - 3)]]  # the last conv block, before the pooling and the flatten
    return [list(head)]


def layer_groups(model: nn.Module, name: str, head: tuple[str, ...] = ()) -> list[LayerGroup]:
    """The model's parameters in groups from body to head; `head` names the classifier of library models."""
    labels = group_names(name)
    later = _prefixes(model, name, head)
    owner = {}
    for module_name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            owner[id(p)] = (module_name, isinstance(module, NORM_TYPES))
    groups = [LayerGroup(label, [], []) for label in labels]
    for param_name, p in model.named_parameters():
        module_name, is_norm = owner[id(p)]
        index = next((i + 1 for i in reversed(range(len(later)))
                      if any(module_name == q or module_name.startswith(q + ".") for q in later[i])), 0)
        groups[index].params.append(p)
        groups[index].norm.append(is_norm)
    empty = [g.name for g in groups if not g.params]
    if empty:
        raise ValueError(f"{name}: parameter group(s) {', '.join(empty)} came out empty")
    return groups


def set_frozen(groups: list[LayerGroup], frozen: bool) -> None:
    """Frozen: only the head and the body's normalisation layers get gradients. Unfrozen: everything."""
    for g in groups[:-1]:
        for p, is_norm in zip(g.params, g.norm):
            p.requires_grad_(not frozen or is_norm)
    for p in groups[-1].params:
        p.requires_grad_(True)
