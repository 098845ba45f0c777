"""The first layer follows the data's channels: `onecycle train --dataset mnist --model tv:resnet18`.

Library models are built for RGB. For other channel counts the first convolution is rebuilt with
`in_channels` inputs, as fastai's `vision_learner(n_in=...)` does (`_load_pretrained_weights`): from
pretrained RGB filters, one channel takes their sum over the colour axis (a grey image replicated
into R, G and B gives the same response), two take the first two times 1.5, more keep the three and
start the rest at zero. A randomly initialised stem keeps its own initialisation, cut or tiled to the
new width, so its scale is the library's.
"""

from __future__ import annotations

import torch
from torch import nn


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """(dotted path, module) of the first Conv2d in the model's registration order: the stem."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(model).__name__} has no Conv2d to take the images' channels")


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def adapt_channels(model: nn.Module, in_channels: int, pretrained: bool) -> str | None:
    """Rebuild the stem for `in_channels` inputs; returns what was done (None: nothing to do)."""
    path, old = first_conv(model)
    if old.in_channels == in_channels:
        return None
    if old.groups != 1:
        raise ValueError(f"the stem {path} is a grouped convolution; cannot change its input channels")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    bias=old.bias is not None, padding_mode=old.padding_mode,
                    device=old.weight.device, dtype=old.weight.dtype)
    w, c = old.weight.detach(), old.in_channels
    with torch.no_grad():
        if pretrained and in_channels == 1:
            new.weight.copy_(w.sum(dim=1, keepdim=True))
            how = f"pretrained {c}-channel filters summed"
        elif pretrained and in_channels == 2:
            new.weight.copy_(w[:, :2] * 1.5)
            how = "the first 2 pretrained channels x 1.5"
        elif pretrained:
            new.weight.zero_()
            new.weight[:, :min(c, in_channels)] = w[:, :min(c, in_channels)]
            how = f"pretrained {c} channels kept, the other {in_channels - c} start at zero"
        else:
            new.weight.copy_(w.repeat(1, -(-in_channels // c), 1, 1)[:, :in_channels])
            how = "random initialisation cut to size"
        if old.bias is not None:
            new.bias.copy_(old.bias)
    set_submodule(model, path, new)
    return f"{path}: {c} -> {in_channels} input channels ({how})"
