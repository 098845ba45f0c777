"""Optimisers: `onecycle train --set optim.name=adamw --set optim.wd_bn_bias=false --set optim.lr_mult=100`.

SGD (momentum, Nesterov) as in the CIFAR-10 papers, and AdamW with fastai's defaults (decoupled
weight decay, beta2 0.99, eps 1e-5) for the fastai experiments. The optimiser holds every parameter
of the model from the start, one optimiser group per layer group (body to head, `models/groups.py`)
and, when weight decay spares BatchNorm weights and biases (fastai's default), two: each group
remembers its layer group (`layer_group`) so a schedule can give it that group's LR. Frozen
parameters stay in the optimiser; they get no gradient, so no update and no decay.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .config import OptimConfig
from .models.groups import LayerGroup


def param_groups(groups: Sequence[LayerGroup] | nn.Module, cfg: OptimConfig) -> list[dict]:
    """Optimiser groups for layer groups (a bare module counts as one layer group)."""
    if isinstance(groups, nn.Module):
        groups = [LayerGroup("all", list(groups.parameters()), [])]
    out = []
    for i, g in enumerate(groups):
        if cfg.wd_bn_bias:
            parts = [(g.params, cfg.weight_decay)]
        else:  # 1-d parameters are exactly the normalisation weights and the biases of these models
            parts = [([p for p in g.params if p.ndim > 1], cfg.weight_decay),
                     ([p for p in g.params if p.ndim <= 1], 0.0)]
        out += [{"params": params, "weight_decay": wd, "layer_group": i} for params, wd in parts if params]
    return out


def build_optimizer(cfg: OptimConfig, groups: Sequence[LayerGroup] | nn.Module, lr: float,
                    momentum: float | None = None, fused: bool = False,
                    lr_scale: Sequence[float] | None = None) -> torch.optim.Optimizer:
    """`momentum` overrides SGD's momentum or AdamW's beta1 (the range test holds it fixed); `lr_scale`
    multiplies `lr` per layer group (the range test keeps the groups' ratios)."""
    opt_groups = param_groups(groups, cfg)
    if lr_scale is not None:
        for g in opt_groups:
            g["lr_scale"] = lr_scale[g["layer_group"]]
            g["lr"] = lr * g["lr_scale"]
    # fused kernels on CUDA: one launch per step instead of one per parameter
    speed = {"fused": True} if fused else {}
    if cfg.name == "sgd":
        m = cfg.momentum if momentum is None else momentum
        return torch.optim.SGD(opt_groups, lr=lr, momentum=m, nesterov=cfg.nesterov and m > 0,
                               weight_decay=cfg.weight_decay, **speed)
    if cfg.name == "adamw":
        b1 = cfg.betas[0] if momentum is None else momentum
        return torch.optim.AdamW(opt_groups, lr=lr, betas=(b1, cfg.betas[1]), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay, **speed)
    raise ValueError(f"unknown optimiser {cfg.name!r}")


def leading_groups(opt: torch.optim.Optimizer) -> list[int]:
    """The index of the first optimiser group of each layer group, body first: where each one's LR is read."""
    first: dict[int, int] = {}
    for i, g in enumerate(opt.param_groups):
        first.setdefault(g.get("layer_group", 0), i)
    return [first[k] for k in sorted(first)]
