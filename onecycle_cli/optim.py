"""Optimisers: `onecycle train --set optim.name=adamw --set optim.wd_bn_bias=false`.

SGD (momentum, Nesterov) as in the CIFAR-10 papers, and AdamW with fastai's defaults (decoupled
weight decay, beta2 0.99, eps 1e-5) for the fastai experiments. Weight decay can spare BatchNorm
weights and all biases, which fastai does by default.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import OptimConfig


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    if cfg.wd_bn_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    # 1-d parameters are exactly the BatchNorm weights and the biases of these models
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    spare = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": spare, "weight_decay": 0.0}]


def build_optimizer(cfg: OptimConfig, model: nn.Module, lr: float, momentum: float | None = None,
                    fused: bool = False) -> torch.optim.Optimizer:
    """`momentum` overrides SGD's momentum or AdamW's beta1 (the range test holds it fixed)."""
    groups = param_groups(model, cfg)
    # fused kernels on CUDA: one launch per step instead of one per parameter
    speed = {"fused": True} if fused else {}
    if cfg.name == "sgd":
        m = cfg.momentum if momentum is None else momentum
        return torch.optim.SGD(groups, lr=lr, momentum=m, nesterov=cfg.nesterov and m > 0,
                               weight_decay=cfg.weight_decay, **speed)
    if cfg.name == "adamw":
        b1 = cfg.betas[0] if momentum is None else momentum
        return torch.optim.AdamW(groups, lr=lr, betas=(b1, cfg.betas[1]), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay, **speed)
    raise ValueError(f"unknown optimiser {cfg.name!r}")
