"""The loop of one 1cycle: `onecycle train --config mnist_sample --max-lr 5e-2 --epochs 2`.

`fit` is the loop: take a batch, step, record, with the schedule stepped where it is applied.
Per-step values stay on the device in a small buffer that is read (one host sync) every
`train.log_every` steps, at the end of each epoch and when a signal asks the run to stop; that read
hands the rows to the run's logs (steps.csv, TensorBoard), updates the progress bar and is where a
non-finite loss is caught. `start_cycle` freezes or unfreezes for a cycle, clears the optimiser's
state as fastai's `freeze_to` does (`opt.clear_state()`) and makes that cycle's scheduler.
The run around the loop (its directory, the cycles, the summary) is `train.py`; writing and
restoring a checkpoint is `resume.py`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .accumulate import backward
from .diagnostics import HIST_COLUMNS, STAT_COLUMNS, ActivationStats, grad_abs_mean
from .display import Display
from .dist import Dist
from .ema import WeightEma
from .errors import Diverged
from .faults import fault
from .loader import eval_batches
from .models import set_frozen, stat_layers
from .optim import leading_groups
from .pipeline import Pipeline
from .runs.directory import RunDir
from .schedules import Cycle, build_schedule, momentum_of
from .signals import StopFlag

SMOOTH_BETA = 0.98  # the smoothed loss of steps.csv, as fastai's recorder and the range test


@dataclass
class LoopState:
    """Where the loop is and its running totals: everything a checkpoint holds besides the modules."""

    step: int = 0             # optimiser steps taken in the whole run
    epoch: int = 0            # the epoch under way (== epochs once finished), counted over every cycle
    cycle: int = 0            # the cycle whose scheduler the checkpoint holds (fine_tune: 0 frozen, 1 unfrozen)
    epoch_step: int = 0       # steps taken within that epoch
    epoch_loss: float = 0.0   # sum of this epoch's training losses so far (float64, summed step by step)
    epoch_seconds: float = 0.0  # training time already spent in this epoch (before an interruption)
    smooth: float = 0.0       # the smoothed loss's moving average
    train_seconds: float = 0.0
    images: int = 0
    best_accuracy: float = -1.0
    best_epoch: int = -1
    last: dict = field(default_factory=dict)  # the latest metrics row


class StepBuffer:
    """Per-step records: host values (step, epoch, cycle, each group's lr, momentum) and device scalars
    (loss, |grad|)."""

    def __init__(self, capacity: int, device: torch.device, cycle: str = "train"):
        self.values = torch.zeros(capacity, 2, device=device)
        self.meta: list[tuple[int, int, list[float], float]] = []
        self.cycle = cycle

    def add(self, step: int, epoch: int, lrs: list[float], momentum: float, loss: torch.Tensor,
            gabs: torch.Tensor) -> None:
        i = len(self.meta)
        self.values[i, 0] = loss
        self.values[i, 1] = gabs
        self.meta.append((step, epoch, lrs, momentum))

    @property
    def full(self) -> bool:
        return len(self.meta) >= len(self.values)

    def drain(self, dist: Dist) -> list[dict]:
        n = len(self.meta)
        values = dist.mean_(self.values[:n].clone()).tolist() if n else []  # the host sync
        rows = [{"step": s, "epoch": e, "phase": self.cycle, "lr": lrs[-1], "momentum": m, "loss": v[0],
                 "grad_abs": v[1],
                 **{f"lr_{i}": lr for i, lr in enumerate(lrs)}}  # lr: the head's, as fastai's recorder reads it
                for (s, e, lrs, m), v in zip(self.meta, values)]
        self.meta = []
        return rows


def evaluate(pipe: Pipeline, model: torch.nn.Module | None = None) -> tuple[float, float]:
    """(valid loss, accuracy) of `model` (the pipeline's own by default; the weight EMA) on the test split,
    summed on the device and read once."""
    model = model if model is not None else pipe.model
    pipe.dist.sync_buffers(model)
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=pipe.device)
    with torch.no_grad(), pipe.precision.autocast():
        for x, y in eval_batches(pipe.ds, pipe.cfg.data, pipe.cfg.train.eval_batch_size, pipe.dist.rank,
                                 pipe.dist.world, pipe.memory_format):
            out = model(x).float()
            fault("eval")
            totals[0] += F.cross_entropy(out, y, reduction="sum")
            totals[1] += (out.argmax(1) == y).sum()
            totals[2] += len(y)
    model.train(was_training)
    loss_sum, correct, n = pipe.dist.sum_(totals).tolist()
    return loss_sum / n, correct / n


def start_cycle(pipe: Pipeline, opt: torch.optim.Optimizer, cycle: Cycle, fresh: bool = True):
    """Freeze or unfreeze for `cycle` and return its scheduler; `fresh` (not a resume into it) also clears
    the optimiser's state, as fastai's freeze_to does: momentum and Adam's moments start again."""
    set_frozen(pipe.groups, cycle.frozen)
    if fresh:
        opt.state.clear()
    if pipe.dist.active:
        pipe.wrap()
    steps = cycle.epochs * pipe.batches.steps_per_epoch
    return build_schedule(cycle.schedule, opt, steps, [cycle.max_lrs[g["layer_group"]] for g in opt.param_groups],
                          cycle.name)


def fit(pipe: Pipeline, run: RunDir, display: Display, stop: StopFlag, state: LoopState,
        opt: torch.optim.Optimizer, sched, scaler, checkpoint: Callable[[LoopState], None], logs: Sequence,
        cycle: Cycle | None = None, ema: WeightEma | None = None) -> str:
    """Train `cycle` (default: the whole run) from `state` to its end, or until a signal; returns
    'completed' or 'interrupted'. Each of `logs` takes `steps(rows)` at every flush and `epoch(row)`
    at every epoch's end (runs.directory's TrainingLog and TensorboardLog). `ema` follows every step
    and is scored with the model."""
    cfg, dist = pipe.cfg, pipe.dist
    epochs, per_epoch = cfg.train.total_epochs, pipe.batches.steps_per_epoch
    end = cycle.end_epoch if cycle is not None else epochs
    net = pipe.net
    accum = cfg.train.accum_steps

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y, label_smoothing=cfg.optim.label_smoothing)
    params = [p for p in pipe.model.parameters() if p.requires_grad]
    numel = sum(p.numel() for p in params)
    lead = leading_groups(opt)  # each layer group's LR is read from its first optimiser group; the head's last
    head = opt.param_groups[lead[-1]]
    # every epoch ends with a flush, so no more than an epoch's steps are ever buffered (log_every 10^9 is fine)
    capacity = min(cfg.train.log_every, per_epoch)
    buffer = StepBuffer(capacity, pipe.device, cycle.name if cycle is not None else "train")
    acts = None
    if cfg.train.activation_stats:
        acts = ActivationStats(stat_layers(pipe.model), capacity, pipe.device)
        stats_log = run.log("activation_stats.csv", STAT_COLUMNS)
        hist_log = run.log("activation_hist.csv", HIST_COLUMNS)
    # summed step by step in float64 on the device: the same additions in the same order however the
    # run is cut, so a resumed run's train_loss is bit-identical
    epoch_loss = torch.full((), state.epoch_loss, dtype=torch.float64, device=pipe.device)

    def flush() -> bool:
        """Read the buffered steps (the host sync), record them, catch divergence; True: stop now."""
        rows = buffer.drain(dist)
        for r in rows:
            state.smooth = SMOOTH_BETA * state.smooth + (1 - SMOOTH_BETA) * r["loss"]
            r["smooth_loss"] = state.smooth / (1 - SMOOTH_BETA ** r["step"])
        bad = next((r for r in rows if not math.isfinite(r["loss"])), None)
        if bad is not None:
            for log in logs:
                log.steps(rows[:rows.index(bad) + 1])
            raise Diverged(f"training diverged: loss became {bad['loss']} at step {bad['step']} "
                           f"(epoch {bad['epoch']}, lr {bad['lr']:.4g}); records up to there are kept")
        for log in logs:
            log.steps(rows)
        if acts is not None:
            stats, hists = acts.drain()
            stats_log.write_many(stats)
            hist_log.write_many(hists)
        if rows:
            bar.update(state.step, f"epoch {state.epoch}  loss {rows[-1]['smooth_loss']:.4f}  lr {rows[-1]['lr']:.2e}")
        return dist.from_main(stop.requested)

    display.epoch_header(ema is not None)
    with contextlib.ExitStack() as cleanup, display.progress(epochs * per_epoch, "train", completed=state.step,
                                                                  per_step=pipe.batches.batch_size) as bar:
        if acts is not None:
            cleanup.callback(acts.remove)  # hooks off on every way out: completed, interrupted, diverged
        while state.epoch < end:
            net.train()
            started = time.perf_counter()
            stopping = False
            for x, y in pipe.batches.epoch(state.epoch, start=state.epoch_step):
                lrs, momentum = [opt.param_groups[i]["lr"] for i in lead], momentum_of(head)
                opt.zero_grad(set_to_none=True)
                loss = backward(net, x, y, loss_fn, accum, pipe.precision.autocast, scaler, dist.active)
                if scaler is not None:
                    scaler.unscale_(opt)  # |grad| is recorded unscaled
                    gabs = grad_abs_mean(params, numel)
                    scaler.step(opt)
                    scaler.update()
                else:
                    gabs = grad_abs_mean(params, numel)
                    opt.step()
                sched.step()
                epoch_loss += loss
                state.step += 1
                if ema is not None:
                    ema.update(state.step)
                state.epoch_step += 1
                buffer.add(state.step, state.epoch, lrs, momentum, loss, gabs)
                if acts is not None:
                    acts.step_done(state.step)
                # a single process may stop after any step; several agree at the flushes only
                if buffer.full or state.epoch_step == per_epoch or (stop.requested and not dist.active):
                    stopping = flush()
                    if stopping and state.epoch_step < per_epoch:
                        break
            trained = time.perf_counter() - started
            state.train_seconds += trained
            seconds = state.epoch_seconds + trained
            if state.epoch_step < per_epoch:  # interrupted mid-epoch: keep the partial epoch's totals
                state.epoch_seconds = seconds
                state.epoch_loss = float(epoch_loss)
                checkpoint(state)
                return "interrupted"
            state.images += per_epoch * pipe.batches.batch_size
            valid_loss, accuracy = evaluate(pipe)
            averaged = evaluate(pipe, ema.module) if ema is not None else None
            # the epoch's last step
            row = {"epoch": state.epoch, "phase": buffer.cycle, "step": state.step, "lr": lrs[-1],
                   "momentum": momentum,
                   "train_loss": dist.mean_(epoch_loss / per_epoch).item(),
                   "valid_loss": valid_loss, "accuracy": accuracy,
                   "seconds": state.epoch_seconds + time.perf_counter() - started,
                   "images_per_s": per_epoch * pipe.batches.batch_size / max(seconds, 1e-9),
                   **({"ema_valid_loss": averaged[0], "ema_accuracy": averaged[1]} if averaged else {})}
            for log in logs:
                log.epoch(row)
            display.epoch_row(row)
            bar.say()
            if accuracy > state.best_accuracy:
                state.best_accuracy, state.best_epoch = accuracy, state.epoch
            state.last = row
            state.epoch += 1
            state.epoch_step, state.epoch_loss, state.epoch_seconds = 0, 0.0, 0.0
            epoch_loss.zero_()
            checkpoint(state)
            if (stopping or dist.from_main(stop.requested)) and state.epoch < epochs:
                return "interrupted"
    return "completed"
