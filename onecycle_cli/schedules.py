"""LR and momentum schedules, stepped once per batch: `onecycle schedule --config cifar`.

All three published 1cycle shapes are `torch.optim.lr_scheduler.OneCycleLR` with different
arguments (see `config.SHAPES`); the baselines are torch's own schedulers too. Nothing here is a
hand-written curve, so the LR a run used is the LR torch would have used.

A run is one cycle, or with `train.freeze_epochs` two, as fastai's `fine_tune`: a frozen cycle (the
head at max_lr, the body's groups at max_lr/10, pct_start 0.99), then an unfrozen one (the head at
max_lr/2, the groups spread down to max_lr/2/lr_mult, pct_start 0.3, div 5). With `train.epochs: 0`
the frozen cycle is the whole run: the head alone. Each parameter group
follows the same 1cycle shape up to its own peak: OneCycleLR takes one max_lr per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim import lr_scheduler

from .config import Config, ScheduleConfig
from .errors import ConfigError


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """n values from start to stop, evenly spaced on a log scale (fastai's even_mults, what slice(a, b) gives)."""
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step ** i for i in range(n)]


@dataclass(frozen=True)
class Cycle:
    """One 1cycle of a run: its epochs, whether the body is frozen, and each parameter group's peak LR."""

    name: str                 # train (the only cycle), or frozen then unfrozen (fine_tune), or frozen alone
    first_epoch: int
    epochs: int
    frozen: bool
    max_lrs: tuple[float, ...]  # body first, head last
    schedule: ScheduleConfig  # the run's schedule with this cycle's pct_start and div

    @property
    def end_epoch(self) -> int:
        return self.first_epoch + self.epochs


def group_ratios(cfg: Config, groups: int, frozen: bool) -> list[float]:
    """Each group's LR as a share of the head's: frozen, the body's groups at 1/freeze_body_div (fastai's
    slice(lr) = [lr/10, ..., lr]); unfrozen, spread geometrically down to 1/lr_mult (slice(lr/lr_mult, lr))."""
    if frozen:
        return [1 / cfg.schedule.freeze_body_div] * (groups - 1) + [1.0]
    return even_mults(1 / cfg.optim.lr_mult, 1.0, groups)


def _phases(cfg: Config) -> list[tuple[str, int, int, bool, float, ScheduleConfig]]:
    """(name, first epoch, epochs, frozen, head's peak LR, schedule) of each cycle the config asks for."""
    s = cfg.schedule
    if not cfg.train.freeze_epochs:
        return [("train", 0, cfg.train.epochs, False, s.max_lr, s)]
    frozen = ("frozen", 0, cfg.train.freeze_epochs, True, s.max_lr,
              s.model_copy(update={"pct_start": s.freeze_pct_start}))
    if not cfg.train.epochs:  # the head alone: the body stays frozen to the end
        return [frozen]
    return [frozen, ("unfrozen", cfg.train.freeze_epochs, cfg.train.epochs, False, s.max_lr / s.unfreeze_lr_div,
                     s.model_copy(update={"pct_start": s.unfreeze_pct_start, "div": s.unfreeze_div}))]


def cycles(cfg: Config, groups: int) -> list[Cycle]:
    """The cycles of a run whose model has `groups` parameter groups."""
    return [Cycle(name, first, epochs, frozen, tuple(peak * r for r in group_ratios(cfg, groups, frozen)), schedule)
            for name, first, epochs, frozen, peak, schedule in _phases(cfg)]


def check_lengths(cfg: Config, steps_per_epoch: int) -> None:
    """Refuse, before any work, a config whose cycles are too short for their phases (whatever max_lr becomes)."""
    for name, _, epochs, _, _, schedule in _phases(cfg):
        check_length(schedule, epochs * steps_per_epoch, PCT_KEYS[name], "" if name == "train" else name)


LRScheduler = lr_scheduler.LRScheduler if hasattr(lr_scheduler, "LRScheduler") else lr_scheduler._LRScheduler


def check_length(cfg: ScheduleConfig, total_steps: int, key: str = "schedule.pct_start", cycle: str = "") -> None:
    """Refuse a 1cycle too short for its phases (torch's OneCycleLR would divide by zero)."""
    if cfg.name != "onecycle":
        return
    up = cfg.pct_start * total_steps
    down = total_steps - (2 if cfg.three_phase else 1) * up
    # the frozen cycle of fine_tune warms up for 99% of its steps: its drop may be its last step alone
    what = f"a {total_steps}-step {cycle + ' ' if cycle else ''}1cycle with {key} = {cfg.pct_start}"
    if up < 2:
        raise ConfigError(f"{what} leaves {max(up, 0):.2f} steps to warm up: expected at least 2 (train more epochs, "
                          f"use a smaller train.batch_size, or raise {key})")
    if down < (1 if key == "schedule.pct_start" else 1e-9):
        phases = "warm-up and its mirror" if cfg.three_phase else "warm-up"
        raise ConfigError(f"{what} leaves {max(down, 0):.2f} steps after its {phases}: expected at least 1 (train "
                          f"more epochs, use a smaller train.batch_size, or lower {key})")


PCT_KEYS = {"train": "schedule.pct_start", "frozen": "schedule.freeze_pct_start",
            "unfrozen": "schedule.unfreeze_pct_start"}


def build_schedule(cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int,
                   max_lrs: list[float] | None = None, cycle: str = "train") -> LRScheduler:
    """The schedule over `total_steps`; `max_lrs` gives each optimiser group its own peak (default: max_lr)."""
    check_length(cfg, total_steps, PCT_KEYS[cycle], "" if cycle == "train" else cycle)
    max_lrs = max_lrs or [cfg.max_lr] * len(optimizer.param_groups)
    if cfg.name == "onecycle":
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=total_steps, pct_start=cfg.pct_start,
            anneal_strategy=cfg.anneal, div_factor=cfg.div,
            final_div_factor=cfg.final_div / cfg.div,  # torch divides the start LR, our final_div the peak
            three_phase=cfg.three_phase, cycle_momentum=cfg.cycle_momentum,
            base_momentum=cfg.base_momentum, max_momentum=cfg.max_momentum)
    for group, peak in zip(optimizer.param_groups, max_lrs):  # the baselines start at max_lr and only go down
        group["lr"] = group["initial_lr"] = peak
    if cfg.name == "constant":
        return lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.name == "step":  # He et al.: divide by 10 at half and three quarters of training
        return lr_scheduler.MultiStepLR(optimizer, [round(m * total_steps) for m in cfg.milestones], cfg.gamma)
    if cfg.name == "cosine":  # to max_lr/final_div: one floor for every group, as CosineAnnealingLR has one eta_min
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=min(max_lrs) / cfg.final_div)
    raise ValueError(f"unknown schedule {cfg.name!r}")


def momentum_of(group: dict) -> float:
    """SGD's momentum or AdamW's beta1: the value 1cycle cycles."""
    return group["betas"][0] if "betas" in group else group.get("momentum", 0.0)


def preview(cfg: ScheduleConfig, total_steps: int, optimizer: str = "sgd", momentum: float = 0.9
            ) -> tuple[list[float], list[float]]:
    """The LR and momentum of every step, from the real scheduler on a one-parameter optimizer."""
    lrs, moms = preview_cycles([Cycle("train", 0, 1, False, (cfg.max_lr,), cfg)], total_steps, optimizer, momentum)
    return lrs[0], moms


def preview_cycles(plan: list[Cycle], steps_per_epoch: int, optimizer: str = "sgd", momentum: float = 0.9
                   ) -> tuple[list[list[float]], list[float]]:
    """Every group's LR (body first) and the momentum of every step of a run's cycles, from the real
    schedulers on an optimizer with one one-element parameter per group (as `fit.start_cycle` builds them)."""
    groups = len(plan[0].max_lrs)
    params = [{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(groups)]
    opt = (torch.optim.AdamW(params, lr=plan[0].schedule.max_lr, betas=(momentum, 0.99)) if optimizer == "adamw"
           else torch.optim.SGD(params, lr=plan[0].schedule.max_lr, momentum=momentum))
    lrs: list[list[float]] = [[] for _ in range(groups)]
    moms = []
    for c in plan:
        steps = c.epochs * steps_per_epoch
        sched = build_schedule(c.schedule, opt, steps, list(c.max_lrs), c.name)
        opt.step()  # once a cycle, so its scheduler knows the optimizer stepped (no gradients: nothing moves)
        for _ in range(steps):
            for i, g in enumerate(opt.param_groups):
                lrs[i].append(g["lr"])
            moms.append(momentum_of(opt.param_groups[-1]))
            sched.step()
    return lrs, moms


def cycle_phase_changes(plan: list[Cycle], steps_per_epoch: int) -> list[tuple[str, int]]:
    """(name, first step) of each phase of every cycle; a second cycle's names say which cycle."""
    out = []
    for c in plan:
        start = c.first_epoch * steps_per_epoch
        for name, step in phase_changes(c.schedule, c.epochs * steps_per_epoch):
            out.append((name if len(plan) == 1 else f"{c.name} {name}", start + step))
    return out


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
