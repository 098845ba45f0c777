"""LR and momentum schedules, stepped once per batch: `onecycle schedule --config cifar`.

All three published 1cycle shapes are `torch.optim.lr_scheduler.OneCycleLR` with different
arguments (see `config.SHAPES`); the baselines are torch's own schedulers too. Nothing here is a
hand-written curve, so the LR a run used is the LR torch would have used.
"""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler

from .config import ScheduleConfig
from .errors import ConfigError

LRScheduler = lr_scheduler.LRScheduler if hasattr(lr_scheduler, "LRScheduler") else lr_scheduler._LRScheduler


def check_length(cfg: ScheduleConfig, total_steps: int) -> None:
    """Refuse a 1cycle too short for its phases (torch's OneCycleLR would divide by zero)."""
    if cfg.name != "onecycle":
        return
    up = cfg.pct_start * total_steps
    down = total_steps - (2 if cfg.three_phase else 1) * up
    if up < 2 or down < 1:
        raise ConfigError(f"a {total_steps}-step 1cycle with schedule.pct_start = {cfg.pct_start} leaves "
                          f"{max(up, 0):.1f} steps to warm up: expected at least 2 (train more epochs, use a "
                          f"smaller train.batch_size, or raise schedule.pct_start)")


def build_schedule(cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
    check_length(cfg, total_steps)
    if cfg.name == "onecycle":
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.max_lr, total_steps=total_steps, pct_start=cfg.pct_start,
            anneal_strategy=cfg.anneal, div_factor=cfg.div,
            final_div_factor=cfg.final_div / cfg.div,  # torch divides the start LR, our final_div the peak
            three_phase=cfg.three_phase, cycle_momentum=cfg.cycle_momentum,
            base_momentum=cfg.base_momentum, max_momentum=cfg.max_momentum)
    for group in optimizer.param_groups:  # the baselines start at max_lr and only ever go down
        group["lr"] = group["initial_lr"] = cfg.max_lr
    if cfg.name == "constant":
        return lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.name == "step":  # He et al.: divide by 10 at half and three quarters of training
        return lr_scheduler.MultiStepLR(optimizer, [round(m * total_steps) for m in cfg.milestones], cfg.gamma)
    if cfg.name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=cfg.max_lr / cfg.final_div)
    raise ValueError(f"unknown schedule {cfg.name!r}")


def momentum_of(group: dict) -> float:
    """SGD's momentum or AdamW's beta1: the value 1cycle cycles."""
    return group["betas"][0] if "betas" in group else group.get("momentum", 0.0)


def preview(cfg: ScheduleConfig, total_steps: int, optimizer: str = "sgd", momentum: float = 0.9
            ) -> tuple[list[float], list[float]]:
    """The LR and momentum of every step, from the real scheduler on a one-parameter optimizer."""
    p = [torch.zeros(1, requires_grad=True)]
    opt = (torch.optim.AdamW(p, lr=cfg.max_lr, betas=(momentum, 0.99)) if optimizer == "adamw"
           else torch.optim.SGD(p, lr=cfg.max_lr, momentum=momentum))
    sched = build_schedule(cfg, opt, total_steps)
    opt.step()  # once, so the scheduler knows the optimizer stepped; the schedule itself needs no more
    lrs, moms = [], []
    group = opt.param_groups[0]
    for _ in range(total_steps):
        lrs.append(group["lr"])
        moms.append(momentum_of(group))
        sched.step()
    return lrs, moms


def phase_changes(cfg: ScheduleConfig, total_steps: int) -> list[tuple[str, int]]:
    """(name, first step) of each phase, for `onecycle schedule` and the schedule plot."""
    if cfg.name == "onecycle":
        up = int(float(cfg.pct_start * total_steps)) - 1  # where OneCycleLR puts the peak
        phases = [("warm-up", 0), ("anneal", max(up, 0))]
        if cfg.three_phase:
            phases = [("warm-up", 0), ("cool-down", max(up, 0)),
                      ("annihilation", int(float(2 * cfg.pct_start * total_steps)) - 2)]
        return phases
    if cfg.name == "step":
        return [("start", 0)] + [(f"lr x{cfg.gamma:g}", round(m * total_steps)) for m in cfg.milestones]
    return [("start", 0)]
