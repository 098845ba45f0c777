"""The 1cycle fit: `onecycle train --config mnist_sample --max-lr 5e-2 --epochs 2`.

`fit` is the loop of one cycle: take a batch, step, record, with the schedule stepped where it is
applied. Per-step values stay on the device in a small buffer that is read (one host sync) every
`train.log_every` steps, at the end of each epoch and when a signal asks the run to stop; that read
appends to steps.csv, updates the progress bar and is where a non-finite loss is caught.
`train` wraps the loop into a run: the directory, checkpoints, resume and the summary. A run is one
cycle, or with `train.freeze_epochs` fastai's `fine_tune`: a cycle on the head with the body frozen,
then one on the whole network; `start_cycle` freezes or unfreezes, clears the optimiser's state as
fastai's `freeze_to` does (`opt.clear_state()`) and makes that cycle's scheduler.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import Config, Resolved, to_yaml
from .diagnostics import HIST_COLUMNS, STAT_COLUMNS, ActivationStats, grad_abs_mean
from .display import Display
from .dist import Dist
from .errors import Diverged, OnecycleError, RunDirError
from .faults import fault
from .loader import eval_batches
from .lr_find import find_in_run
from .models import set_frozen, stat_layers
from .optim import build_optimizer, leading_groups
from .pipeline import Pipeline, announce_data, build_pipeline, class_names
from . import checkpoint as ckpt
from .report import write_views
from .rundir import METRIC_COLUMNS, STEP_COLUMNS, NullRunDir, RunDir, argv, group_lr_columns, keep_rows, now_iso
from .schedules import Cycle, build_schedule, check_cycles, cycles, momentum_of
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
    """Per-step records: host values (step, epoch, cycle, each group's lr, momentum) and device scalars (loss, |grad|)."""

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
        rows = [{"step": s, "epoch": e, "phase": self.cycle, "lr": lrs[-1], "momentum": m, "loss": v[0], "grad_abs": v[1],
                 **{f"lr_{i}": lr for i, lr in enumerate(lrs)}}  # lr: the head's, as fastai's recorder reads it
                for (s, e, lrs, m), v in zip(self.meta, values)]
        self.meta = []
        return rows


def evaluate(pipe: Pipeline) -> tuple[float, float]:
    """(valid loss, accuracy) on the test split, summed on the device and read once."""
    model = pipe.model
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


def rng_states() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np_state = states["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


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
        opt: torch.optim.Optimizer, sched, scaler, checkpoint, tensorboard=None, cycle: Cycle | None = None) -> str:
    """Train `cycle` (default: the whole run) from `state` to its end, or until a signal; returns
    'completed' or 'interrupted'."""
    cfg, dist = pipe.cfg, pipe.dist
    epochs, per_epoch = total_epochs(cfg), pipe.batches.steps_per_epoch
    end = cycle.end_epoch if cycle is not None else epochs
    net = pipe.net
    params = [p for p in pipe.model.parameters() if p.requires_grad]
    numel = sum(p.numel() for p in params)
    lead = leading_groups(opt)  # each layer group's LR is read from its first optimiser group; the head's last
    head = opt.param_groups[lead[-1]]
    steps_log = run.log("steps.csv", STEP_COLUMNS + group_lr_columns(len(lead)))
    metrics_log = run.log("metrics.csv", METRIC_COLUMNS)
    # every epoch ends with a flush, so no more than an epoch's steps are ever buffered (log_every 10^9 is fine)
    capacity = min(cfg.train.log_every, per_epoch)
    buffer = StepBuffer(capacity, pipe.device, cycle.name if cycle is not None else "train")
    acts = None
    if cfg.train.activation_stats:
        acts = ActivationStats(stat_layers(pipe.model), capacity, pipe.device)
        stats_log, hist_log = run.log("activation_stats.csv", STAT_COLUMNS), run.log("activation_hist.csv", HIST_COLUMNS)
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
            steps_log.write_many(rows[:rows.index(bad) + 1])
            raise Diverged(f"training diverged: loss became {bad['loss']} at step {bad['step']} "
                           f"(epoch {bad['epoch']}, lr {bad['lr']:.4g}); records up to there are kept")
        steps_log.write_many(rows)
        if acts is not None:
            stats, hists = acts.drain()
            stats_log.write_many(stats)
            hist_log.write_many(hists)
        if tensorboard is not None:
            tensorboard.steps(rows)
        if rows:
            bar.update(state.step, f"epoch {state.epoch}  loss {rows[-1]['smooth_loss']:.4f}  lr {rows[-1]['lr']:.2e}")
        return dist.from_main(stop.requested)

    display.epoch_header()
    with contextlib.ExitStack() as cleanup, display.progress(epochs * per_epoch, "train", completed=state.step) as bar:
        if acts is not None:
            cleanup.callback(acts.remove)  # hooks off on every way out: completed, interrupted, diverged
        while state.epoch < end:
            net.train()
            started = time.perf_counter()
            stopping = False
            for x, y in pipe.batches.epoch(state.epoch, start=state.epoch_step):
                lrs, momentum = [opt.param_groups[i]["lr"] for i in lead], momentum_of(head)
                with pipe.precision.autocast():
                    loss = F.cross_entropy(net(x), y, label_smoothing=cfg.optim.label_smoothing)
                fault("step")
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)  # |grad| is recorded unscaled
                    gabs = grad_abs_mean(params, numel)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    gabs = grad_abs_mean(params, numel)
                    opt.step()
                sched.step()
                loss = loss.detach().float()
                epoch_loss += loss
                state.step += 1
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
            row = {"epoch": state.epoch, "phase": buffer.cycle, "step": state.step, "lr": lrs[-1],  # the epoch's last step
                   "momentum": momentum,
                   "train_loss": dist.mean_(epoch_loss / per_epoch).item(),
                   "valid_loss": valid_loss, "accuracy": accuracy,
                   "seconds": state.epoch_seconds + time.perf_counter() - started,
                   "images_per_s": per_epoch * pipe.batches.batch_size / max(seconds, 1e-9)}
            metrics_log.write(row)
            display.epoch_row(row)
            if tensorboard is not None:
                tensorboard.epoch(row)
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


# ------------------------------------------------------------------------------------------------
# a training run: directory, checkpoints, resume, summary


def total_epochs(cfg: Config) -> int:
    return cfg.train.freeze_epochs + cfg.train.epochs


def checkpoint_state(pipe: Pipeline, opt, sched, scaler, state: LoopState) -> dict:
    """Everything a resume needs; `sched` is the scheduler of cycle `state.cycle`, `normalize` the inputs'
    statistics (a run started from these weights normalises as this one did), `classes` what the head's
    outputs mean (a run started from these weights keeps the head only for the same classes)."""
    return {"format": 1, "model": pipe.model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "state": asdict(state), "rng": rng_states(), "config": pipe.cfg.model_dump(mode="json"),
            "total_steps": total_epochs(pipe.cfg) * pipe.batches.steps_per_epoch, "normalize": pipe.normalize,
            "classes": class_names(pipe.ds)}


def load_checkpoint(run: RunDir) -> dict:
    path = run.path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise RunDirError(f"--resume {run.path}: no checkpoint to resume from (the run stopped before its first "
                          f"epoch ended or its first checkpoint); start it again instead")
    try:
        return ckpt.read(path)
    except Exception as e:  # a foreign or damaged file: say so rather than show the unpickler's traceback
        raise RunDirError(f"--resume {run.path}: checkpoint {path.name} cannot be read ({ckpt.detail(e)}); "
                          f"the file is damaged or not onecycle's") from None


def open_for_resume(path: Path) -> tuple[RunDir, dict]:
    """The run to continue, locked against a second resume, and its checkpoint; if refused, unlocked."""
    run = RunDir.open(path)
    try:
        summary = run.read_json("summary.json")
        if (run.read_json("meta.json").get("command") or summary.get("command")) == "find":
            raise RunDirError(f"--resume {path}: a find run, which has nothing to continue; --resume takes a train run "
                              f"(rerun onecycle find, or take its suggestion with onecycle train --max-lr {path})")
        if summary.get("status") in ("completed", "diverged"):
            raise RunDirError(f"--resume {path}: the run already {summary['status']}; there is nothing to continue "
                              f"(start a new run{' with a lower max_lr' if summary['status'] == 'diverged' else ''})")
        return run, load_checkpoint(run)
    except BaseException:
        run.close()
        raise


RESUMABLE = {"train.device", "train.log_every", "train.eval_batch_size", "run.tensorboard", "run.root", "data.root",
             "data.download", "model.download",
             "data.cache", "data.device_budget", "data.strict"}  # where data and weights live, not what they are


def check_resumable(saved: dict, cfg: Config, total_steps: int, path: Path) -> None:
    """A resumed run keeps its config: anything that would change its result is refused, by name."""
    if saved["total_steps"] != total_steps:
        raise RunDirError(
            f"--resume {path}: this config gives {total_steps} steps ({total_epochs(cfg)} epochs x "
            f"{total_steps // total_epochs(cfg)}) but the run was scheduled for {saved['total_steps']}; a 1cycle "
            f"schedule cannot change length midway: keep train.epochs, train.batch_size and the data, or start a new run")
    now = cfg.model_dump(mode="json")
    for section, keys in saved["config"].items():
        for key, old in keys.items():
            if f"{section}.{key}" not in RESUMABLE and now.get(section, {}).get(key, KeyError) != old:
                became = now.get(section, {}).get(key, "a key this onecycle does not have")
                raise RunDirError(f"--resume {path}: {section}.{key} was {old!r} and would become {became!r}; "
                                  f"a resumed run keeps its config (start a new run to change it)")


def restore(saved: dict, pipe: Pipeline, total: int, path: Path):
    """The optimizer, schedule, scaler and loop state of a resumed run, loaded from its checkpoint.

    Everything is checked and loaded here, before any file of the run is written: a checkpoint that
    does not fit is refused with one line and leaves the run as it was. The scheduler is the one of
    the cycle the checkpoint was taken in (fine_tune: frozen or unfrozen), made before the states it loads.
    """
    cfg = pipe.cfg
    per_epoch = pipe.batches.steps_per_epoch
    issue = ckpt.problem(saved, LoopState, total_epochs(cfg), per_epoch)
    plan = cycles(cfg, len(pipe.groups))
    if not issue and not 0 <= saved["state"]["cycle"] < len(plan):
        issue = f"its loop is in cycle {saved['state']['cycle']}, and this run has {len(plan)}"
    if issue:
        raise RunDirError(f"--resume {path}: checkpoint last.pt is not one this run can continue: {issue}")
    check_resumable(saved, cfg, total, path)
    state = LoopState(**saved["state"])
    cycle = plan[state.cycle]
    opt = build_optimizer(cfg.optim, pipe.groups, cfg.schedule.max_lr, fused=pipe.fused)
    sched = start_cycle(pipe, opt, cycle, fresh=False)
    scaler = torch.amp.GradScaler() if pipe.precision.needs_scaler else None
    try:
        ckpt.load_into(saved, pipe.model, opt, sched, scaler, state.step - cycle.first_epoch * per_epoch)
        set_rng_states(saved["rng"])
    except Exception as e:
        raise ckpt.refused(path, e) from None
    return opt, sched, scaler, state


class Tensorboard:
    """TensorBoard event files in <run>/tensorboard, when asked for and installed."""

    def __init__(self, path: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise OnecycleError("--tensorboard needs the tensorboard package: pip install 'onecycle[tensorboard]'") from None
        self.writer = SummaryWriter(str(path))

    def steps(self, rows: list[dict]) -> None:
        for r in rows:
            for key in ("loss", "smooth_loss", "lr", "momentum", "grad_abs"):
                self.writer.add_scalar(f"step/{key}", r[key], r["step"])
        self.writer.flush()

    def epoch(self, row: dict) -> None:
        for key in ("train_loss", "valid_loss", "accuracy", "images_per_s"):
            self.writer.add_scalar(f"epoch/{key}", row[key], row["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def summary_of(pipe: Pipeline, run: RunDir, state: LoopState, status: str, reason: str, started: float,
               extra: dict) -> dict:
    cfg = pipe.cfg
    last = state.last
    return {
        "command": "train", "status": status, "stop_reason": reason, "run_dir": str(run.path),
        "dataset": cfg.data.dataset, "model": cfg.model.name, "parameters": sum(p.numel() for p in pipe.model.parameters()),
        "optimizer": cfg.optim.name, "schedule": cfg.schedule.name, "shape": cfg.schedule.shape,
        "max_lr": cfg.schedule.max_lr, "epochs": total_epochs(cfg), "freeze_epochs": cfg.train.freeze_epochs,
        "lr_mult": cfg.optim.lr_mult, "epochs_done": state.epoch, "steps": state.step,
        "batch_size": cfg.train.batch_size, "seed": cfg.train.seed, "device": str(pipe.device),
        "precision": pipe.precision.name, "world_size": pipe.dist.world, "data": pipe.ds.memory,
        "final": {k: last.get(k) for k in ("train_loss", "valid_loss", "accuracy")} if last else None,
        "best": {"accuracy": state.best_accuracy, "epoch": state.best_epoch} if state.best_epoch >= 0 else None,
        "train_seconds": round(state.train_seconds, 3), "wall_seconds": round(time.time() - started, 3),
        "images_per_s": round(state.images / state.train_seconds, 1) if state.train_seconds and state.images else None,
        **extra}


def describe_model(pipe: Pipeline) -> dict:
    """What the summary records about the model: its groups, its weights and the inputs' statistics."""
    built = pipe.built
    return {"groups": [{"name": g.name, "parameters": g.size} for g in pipe.groups],
            "weights": ({**(built.loaded.as_dict() if built.loaded else {}), "adapted": built.notes}
                        if built is not None and (built.loaded or built.notes) else None),
            "normalize": pipe.normalize}


def show_model(display: Display, pipe: Pipeline, extra: dict) -> None:
    """One line each: the weights taken, what was adapted, whose statistics normalise the inputs, the groups."""
    loaded = pipe.built.loaded if pipe.built is not None else None
    if loaded is not None:
        fresh = list(loaded.skipped) + loaded.fresh
        skipped = f", {len(fresh)} re-initialised ({', '.join(fresh[:4])})" if fresh else ""
        head = f"; the head {loaded.head}" if loaded.head else ""
        display.print(f"weights: {len(loaded.taken)} tensors from {loaded.source}{skipped}{head}", markup=False)
    if pipe.cfg.model.source != "builtin":
        display.print(f"{pipe.cfg.model.name}: " + "; ".join(pipe.built.notes), markup=False)
    n = extra.get("normalize")
    if n and (n.get("note") or not n["source"].startswith("dataset")):
        display.print(f"inputs normalised with {n['source']}: mean {[round(v, 2) for v in n['mean']]}, std "
                      f"{[round(v, 2) for v in n['std']]} (pixel units){'; ' + n['note'] if n.get('note') else ''}",
                      markup=False)
    if pipe.cfg.optim.lr_mult != 1 or pipe.cfg.train.freeze_epochs:
        display.print("parameter groups, body to head: "
                      + " | ".join(f"{g.name} ({g.size:,} parameters)" for g in pipe.groups), markup=False)


def cycle_line(cycle: Cycle) -> str:
    what = ("the head alone, the body frozen (its normalisation layers still training)" if cycle.frozen
            else "the whole network")
    return (f"{cycle.name}: {cycle.epochs} epoch{'s' * (cycle.epochs != 1)} of 1cycle on {what}, peak lr "
            + " | ".join(f"{lr:.3g}" for lr in cycle.max_lrs)
            + f", pct_start {cycle.schedule.pct_start:g}, div {cycle.schedule.div:g}")


def train(resolved: Resolved, display: Display, stop: StopFlag, dist: Dist = Dist(), *,
          max_lr_source: str = "config", find_first: bool = False, resume: Path | None = None,
          started: float | None = None) -> tuple[RunDir, dict]:
    """One training run; returns its directory and summary. Raises Diverged (exit 3) after recording."""
    started = started or time.time()
    cfg = resolved.config
    run: RunDir = NullRunDir()
    saved = None
    if resume is not None:
        run, saved = open_for_resume(resume) if dist.main else (run, None)
        saved = dist.from_main(saved)
    elif dist.main:
        RunDir.check_root(cfg.run.root)
    try:
        with display.counter("decode") as progress:
            pipe = build_pipeline(cfg, dist, saved, progress=progress, stop=stop.pending)
        announce_data(pipe.ds, display)
        per_epoch = pipe.batches.steps_per_epoch
        total = total_epochs(cfg) * per_epoch
        check_cycles(cycles(cfg, len(pipe.groups)), per_epoch)
        if resume is not None:
            opt, sched, scaler, state = restore(saved, pipe, total, resume)
    except BaseException:
        run.close()  # a refused resume lets go of the run at once, its files untouched
        raise
    if resume is None and dist.main:
        run = RunDir.create(cfg.run.root, "train", resolved.name)
    extra = {"config": resolved.name, "max_lr_source": max_lr_source, "started": now_iso(),
             **describe_model(pipe)}
    if resume is None:
        state = LoopState()
    tb = None
    outcome = False  # completed, interrupted or diverged: what the exit code says, which views never change
    try:
        if resume is None:
            show_model(display, pipe, extra)
            # the commands that read it: the keys neither reads are marked in the file
            run.write_text("config.yaml", (PENDING_MAX_LR if find_first else "")
                           + to_yaml(cfg, {"train", "find"} if find_first else {"train"}))
            run.write_meta(argv(), pipe.device, cfg.train.seed, dist.world, command="train", config=resolved.name,
                           data=pipe.ds.memory)
            run.write_json("data_report.json", pipe.ds.report)
            run.write_json("summary.json", {"command": "train", "status": "running", "config": resolved.name,
                                            "run_dir": str(run.path), "started": extra["started"]})
            if find_first:
                # until the range test ends, no max_lr is this run's: a summary written meanwhile says so
                extra.update(max_lr=None, max_lr_source="find: the range test in this run, not finished")
                suggestion = find_in_run(pipe, run, display, stop)
                if suggestion is None:  # interrupted: a partial curve's suggestion is no choice at all
                    extra["max_lr_source"] = "find: none chosen, the range test was interrupted"
                    summary = summary_of(pipe, run, state, "interrupted", f"interrupted by {stop.name} during the "
                                         f"range test, before training began: no max_lr was chosen and nothing "
                                         f"was trained; start the run again (a range test is not resumed)",
                                         started, extra)
                    run.write_json("summary.json", summary)
                    outcome = True
                    return run, summary
                del extra["max_lr"]
                cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"max_lr": suggestion.lr})})
                pipe.cfg = cfg
                extra["max_lr_source"] = f"find: {suggestion.name} (range test in this run)"
                run.write_text("config.yaml", to_yaml(cfg, {"train", "find"}))
                display.print(f"max_lr {suggestion.lr:.3g} from the range test's {suggestion.name} suggestion")
            opt = build_optimizer(cfg.optim, pipe.groups, cfg.schedule.max_lr, fused=pipe.fused)
            scaler = torch.amp.GradScaler() if pipe.precision.needs_scaler else None
            sched = None  # each cycle starts its own
        else:
            previous = run.read_json("summary.json")
            # what the first start loaded is its record: a resume takes its weights from the checkpoint
            extra.update({k: previous[k] for k in ("max_lr_source", "started", "config", "weights") if k in previous})
            resumed = previous.get("resumed", 0)
            extra["resumed"] = (resumed if isinstance(resumed, int) and not isinstance(resumed, bool) else 0) + 1
            # records written after the checkpoint belong to a future that will now be replayed
            keep_rows(run.path / "steps.csv", lambda r: r["step"] <= state.step)
            keep_rows(run.path / "metrics.csv", lambda r: r["epoch"] < state.epoch)
            display.print(f"resuming {run.path} at epoch {state.epoch}, step {state.step} of {total}", markup=False)
        plan = cycles(cfg, len(pipe.groups))  # after the range test: max_lr may come from it
        extra["cycles"] = [{"name": c.name, "epochs": c.epochs, "frozen": c.frozen, "max_lrs": list(c.max_lrs),
                            "pct_start": c.schedule.pct_start, "div": c.schedule.div} for c in plan]
        if cfg.run.tensorboard and dist.main:
            tb = Tensorboard(run.path / "tensorboard")

        def checkpoint(s: LoopState) -> None:
            run.save_checkpoint(checkpoint_state(pipe, opt, sched, scaler, s))
            run.write_json("summary.json", summary_of(pipe, run, s, "running", "", started, extra))

        status = "completed"
        for index, cycle in enumerate(plan):
            if state.epoch >= cycle.end_epoch:
                continue  # done before a resume (a checkpoint at its last epoch still holds its scheduler)
            if sched is None or index != state.cycle:
                sched = start_cycle(pipe, opt, cycle)
                state.cycle = index
            if len(plan) > 1 or cycle.frozen:
                display.print(cycle_line(cycle))
            status = fit(pipe, run, display, stop, state, opt, sched, scaler, checkpoint, tb, cycle)
            if status != "completed":
                break
        reason = (f"completed {total_epochs(cfg)} epochs" if status == "completed" else
                  f"interrupted by {stop.name} at step {state.step} of {total} (epoch {state.epoch}); "
                  f"continue with: onecycle train --resume {run.path}")
        summary = summary_of(pipe, run, state, status, reason, started, extra)
        run.write_json("summary.json", summary)
        outcome = True
        return run, summary
    except Diverged as e:
        e.summary = summary_of(pipe, run, state, "diverged", str(e), started, extra)
        run.write_json("summary.json", e.summary)
        outcome = True
        raise
    except KeyboardInterrupt:
        # the loop may have counted steps, even an epoch, past the checkpoint it could not finish writing:
        # the summary says what the checkpoint on disk holds, which is what a resume continues from
        kept = ckpt.kept_state(run.path, LoopState, total_epochs(cfg), pipe.batches.steps_per_epoch)
        kept = LoopState(**kept) if kept is not None else None
        reason = ("stopped at once by a second SIGINT; " + (
            f"the checkpoint of step {kept.step} (epoch {kept.epoch}) is kept; continue with: onecycle train "
            f"--resume {run.path}" if kept is not None else "no checkpoint had been written; start the run again"))
        run.write_json("summary.json", summary_of(pipe, run, kept or LoopState(), "interrupted", reason, started, extra))
        outcome = True
        raise
    except BaseException as e:
        run.write_json("summary.json", summary_of(pipe, run, state, "failed", f"{type(e).__name__}: {e}", started, extra))
        raise
    finally:
        if tb is not None:
            tb.close()
        if dist.main:
            problems = write_views(run.path)
            for problem in problems if outcome else ():  # a failed run has said why; its views are best effort
                display.warn(problem)
        run.close()


# the first line of config.yaml while `train --max-lr find` has not chosen: the value below it is the config's
PENDING_MAX_LR = "# schedule.max_lr is chosen by this run's range test (train --max-lr find); until it ends, the value below is unused\n"


def train_seeds(resolved: Resolved, seeds: list[int], display: Display, stop: StopFlag, dist: Dist = Dist(), *,
                max_lr_source: str = "config", find_first: bool = False) -> dict:
    """The same config once per seed, each its own run; the mean and spread of the final accuracy."""
    summaries = []
    for seed in seeds:
        cfg = resolved.config
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
        try:
            run, summary = train(resolved.model_copy(update={"config": cfg}), display, stop, dist,
                                 max_lr_source=max_lr_source, find_first=find_first)
        except Diverged as e:  # the seeds so far and this one's record, for --json; exit 3 all the same
            e.summary = seeds_summary(seeds, summaries + [e.summary], display) if e.summary else None
            raise
        summaries.append(summary)
        if find_first:  # one range test serves every seed: the same suggestion, recorded as such
            resolved = resolved.model_copy(update={"config": cfg.model_copy(update={
                "schedule": cfg.schedule.model_copy(update={"max_lr": summary["max_lr"]})})})
            max_lr_source, find_first = f"{summary['max_lr_source']} of {run.path}", False
        if summary["status"] != "completed":
            break
    return seeds_summary(seeds, summaries, display)


def seeds_summary(seeds: list[int], summaries: list[dict], display: Display) -> dict:
    """The runs of `--seeds` so far as one summary, with the mean and spread of the completed ones' accuracy."""
    accuracies = [s["final"]["accuracy"] for s in summaries if s.get("final") and s["status"] == "completed"]
    mean = float(np.mean(accuracies)) if accuracies else None
    std = float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0 if accuracies else None
    display.table(f"{len(summaries)} seeds", ["seed", "run", "status", "accuracy"],
                  [[s["seed"], s["run_dir"], s["status"], f"{s['final']['accuracy']:.4f}" if s.get("final") else "-"]
                   for s in summaries])
    if mean is not None:
        display.print(f"accuracy {mean:.4f} ± {std:.4f} (mean ± std over {len(accuracies)} seeds)")
    status = next((s["status"] for s in summaries if s["status"] != "completed"), "completed")
    return {"command": "train", "status": status, "seeds": seeds[:len(summaries)], "accuracy_mean": mean,
            "accuracy_std": std, "runs": summaries}
