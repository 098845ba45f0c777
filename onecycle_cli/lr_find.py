"""The LR range test: `onecycle find --config mnist_sample [--sweep weight_decay=1e-3,1e-4]`.

Train for `num_it` mini-batches while the LR grows from `start_lr` to `end_lr` (log-linearly by
default), record the loss, smooth it (EMA, beta 0.98, bias-corrected) and stop once the smoothed
loss passes `diverge` x the best seen. The sweep trains the model itself, with an optimiser of its
own, and then puts every weight, buffer, trainable flag and random state back: after it, the model
and anything the caller holds are bit for bit as before.

With parameter groups the sweep keeps their ratios and reads the head's LR, as fastai's recorder
does: unfrozen, the body's groups at 1/lr_mult of it and between; frozen (`find --freeze`, and a config
that trains the head alone: train.freeze_epochs with train.epochs 0), the body frozen but for its
normalisation layers, which follow at 1/freeze_body_div of the head's LR as they will in training. A
fine_tune (train.freeze_epochs, then unfrozen epochs) is swept over the whole network, and floor reads that
curve's lowest point itself (suggest.py).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from .accumulate import backward, batch_split, check_split
from .config import Config, FindConfig, Resolved, parse_scalar, to_yaml
from .display import Display
from .dist import Dist
from .errors import UsageError
from .faults import fault
from .loader import TrainBatches, eval_batches
from .models import body_is_random, set_frozen
from .optim import build_optimizer
from .pipeline import Pipeline, Precision, announce_data, build_pipeline
from .resume import preserved
from .runs.directory import NullRunDir, RunDir, now_iso
from .runs.report import write_views
from .schedules import group_ratios
from .signals import StopFlag
from .suggest import Reading, Suggestion, suggest
from .trackers.records import Tracking, tracked

CHECK_EVERY = 8  # steps between reads of the loss on the host: the only syncs of the sweep


@dataclass
class Curve:
    label: str                          # "" for a plain test, "weight_decay=0.0001" in a sweep
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smooth: list[float] = field(default_factory=list)     # causal EMA: what the stop rule reads
    lag_free: list[float] = field(default_factory=list)   # what valley and minimum read (suggest.lag_free)
    stop: str = "end"                   # end | diverged | non-finite | interrupted
    stop_reason: str = ""
    stop_lr: float | None = None
    suggestions: dict[str, Suggestion] = field(default_factory=dict)
    reading: Reading = field(default_factory=Reading)  # the floor, the divergence edge, warnings
    seconds: float = 0.0                # the sweep alone: training steps, reads, restoring the model

    def summary(self) -> dict:
        return {"label": self.label, "steps": len(self.lrs), "stop": self.stop, "stop_reason": self.stop_reason,
                "stop_lr": self.stop_lr, "seconds": round(self.seconds, 3),
                "suggestions": {k: s.as_dict() for k, s in self.suggestions.items()},
                "reading": self.reading.as_dict()}


def lr_at(step: int, cfg) -> float:
    """The LR of sweep step `step` (0-based) of `num_it`."""
    t = step / (cfg.num_it - 1)
    if cfg.mode == "linear":
        return cfg.start_lr + (cfg.end_lr - cfg.start_lr) * t
    return cfg.start_lr * (cfg.end_lr / cfg.start_lr) ** t


def smooth_losses(losses: list[float], beta: float) -> list[float]:
    """Exponential moving average, bias-corrected so the first values are not pulled to zero."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def stopping_point(losses: list[float], smooth: list[float], diverge: float) -> tuple[int, str] | None:
    """(index, kind) of the first step past which the curve only measures divergence, if any."""
    best = math.inf
    for i, (raw, s) in enumerate(zip(losses, smooth)):
        if not math.isfinite(raw):
            return i, "non-finite"
        # stop once the smoothed loss is diverge x the best: past here the curve only measures divergence
        if s > diverge * best:
            return i, "diverged"
        best = min(best, s)
    return None


def sweep(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator, loss_fn: Callable,
          fc: FindConfig, display: Display, stop: StopFlag, *, dist: Dist = Dist(), label: str = "",
          precision: Precision | None = None, score: Callable[[], torch.Tensor] | None = None,
          frozen: bool = False, fine_tune: bool = False, accum: int = 1) -> Curve:
    """The sweep itself: one optimiser step per batch at `lr_at(i)` until the stop rule, num_it or a signal.

    `loss_fn(model(x), y)` is the training loss, over `accum` micro-batches a step (accumulate.py);
    `score()`, when given, replaces what is recorded after each step (Smith's held-out variant). The model
    and every random state come back as they were. `frozen` (the head alone) and `fine_tune` (the whole network
    for a fine_tune) say what the suggestions are for.
    """
    device = next(model.parameters()).device
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    scaler = torch.amp.GradScaler() if precision is not None and precision.needs_scaler else None
    for group in optimizer.param_groups:  # the head at start_lr, the other groups in their ratios to it
        group["lr"] = fc.start_lr * group.get("lr_scale", 1.0)
    sched = LambdaLR(optimizer, lambda i: lr_at(min(i, fc.num_it - 1), fc) / fc.start_lr)
    losses = torch.full((fc.num_it,), math.nan, device=device)
    curve = Curve(label)
    started = time.perf_counter()
    with preserved(model), display.progress(fc.num_it, f"range test{f' {label}' if label else ''}") as bar:
        model.train()
        for i in range(fc.num_it):
            x, y = next(batches)
            bar.per_step = len(x)  # images a step, for a log's images/s (a shape: no device read)
            optimizer.zero_grad(set_to_none=True)
            loss = backward(model, x, y, loss_fn, accum, autocast, scaler, dist.active)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            fault("sweep")
            sched.step()
            losses[i] = (score() if score is not None else loss).detach().float()
            done = i + 1
            if done % CHECK_EVERY and done < fc.num_it and not stop.requested:
                continue
            values = dist.mean_(losses[:done].clone()).tolist()  # the host read: every CHECK_EVERY steps
            smooth = smooth_losses(values, fc.beta)
            found, interrupted = dist.from_main((stopping_point(values, smooth, fc.diverge), stop.requested))
            bar.update(done, f"lr {lr_at(i, fc):.2e}  loss {smooth[-1]:.4f}")
            if found is not None or interrupted:
                break
    curve.seconds = time.perf_counter() - started
    end, kind = found if found is not None else (done - 1, "interrupted" if interrupted else "end")
    curve.lrs = [lr_at(i, fc) for i in range(end + 1)]
    curve.losses, curve.smooth = values[:end + 1], smooth[:end + 1]
    curve.stop, curve.stop_lr = kind, curve.lrs[-1]
    curve.stop_reason = {
        "end": f"reached end_lr {fc.end_lr:g} after {fc.num_it} steps without diverging",
        "diverged": f"smoothed loss {smooth[end]:.4g} passed {fc.diverge:g} x the best "
                    f"{min(smooth[:end] or [math.inf]):.4g} at lr {curve.stop_lr:.3g} (step {end})",
        "non-finite": f"loss became {values[end]} at lr {curve.stop_lr:.3g} (step {end})",
        "interrupted": f"interrupted by {stop.name} at lr {curve.stop_lr:.3g} (step {end})",
    }[kind]
    curve.suggestions, curve.lag_free, curve.reading = suggest(curve.lrs, curve.losses, curve.smooth, kind, frozen,
                                                                 fine_tune)
    return curve


def range_test(pipe: Pipeline, cfg: Config, display: Display, stop: StopFlag, label: str = "",
               weight_decay: float | None = None, momentum: float | None = None,
               batch_size: int | None = None) -> Curve:
    """The range test of a pipeline; `weight_decay`, `momentum` and `batch_size` override the config
    for a sweep over them."""
    fc, oc = cfg.find, cfg.optim
    if weight_decay is not None:
        oc = oc.model_copy(update={"weight_decay": weight_decay})
    batches = pipe.batches
    if batch_size is not None and batch_size != batches.batch_size:
        check_split(batch_size, pipe.dist.world, cfg.train.accum_steps)
        batches = TrainBatches(pipe.ds, cfg.data, batch_size, cfg.train.seed, pipe.dist.rank, pipe.dist.world,
                               pipe.memory_format)
    held_out = list(eval_batches(pipe.ds, cfg.data, batches.local, pipe.dist.rank, pipe.dist.world,
                                 pipe.memory_format))[:fc.val_batches]
    held = momentum if momentum is not None else fc.momentum
    frozen = sweeps_frozen(cfg)
    opt = build_optimizer(oc, pipe.groups, fc.start_lr, momentum=held, fused=pipe.fused,
                          lr_scale=group_ratios(cfg, len(pipe.groups), frozen))
    trainable = [(p, p.requires_grad) for p in pipe.model.parameters()]
    try:
        if frozen:
            set_frozen(pipe.groups, True)
        net = pipe.wrap() if frozen and pipe.dist.active else pipe.net
        return sweep(net, opt, batches.forever(seed=cfg.train.seed + 7919),  # its own stream of batches
                     lambda out, y: F.cross_entropy(out, y, label_smoothing=oc.label_smoothing), fc, display, stop,
                     dist=pipe.dist, label=label, precision=pipe.precision,
                     score=(lambda: _held_out_loss(net, held_out, pipe)) if held_out else None, frozen=frozen,
                     fine_tune=sweeps_fine_tune(cfg), accum=cfg.train.accum_steps)
    finally:  # `sweep` put the weights back; the trainable flags too, before the model is wrapped again
        for p, flag in trainable:
            p.requires_grad_(flag)
        if frozen and pipe.dist.active:
            pipe.wrap()


def sweeps_frozen(cfg: Config) -> bool:
    """The head alone: asked for (as fastai's lr_find after freeze()), or the config trains the head alone
    (train.freeze_epochs with train.epochs 0)."""
    return cfg.find.freeze or (cfg.train.freeze_epochs > 0 and cfg.train.epochs == 0)


def sweeps_fine_tune(cfg: Config) -> bool:
    """The whole network for a fine_tune (train.freeze_epochs, then train.epochs unfrozen): the head's sweep sees
    nothing of the unfrozen cycle, which decided both of benchmarks/suggest.py's fine_tunes (issue 26), so `find`
    sweeps what that cycle trains, the groups at their unfrozen ratios."""
    return cfg.train.freeze_epochs > 0 and not sweeps_frozen(cfg)


def sweep_note(cfg: Config, groups: list) -> str:
    """What the sweep drove, for the record: empty for a one-LR sweep."""
    frozen = sweeps_frozen(cfg)
    ratios = group_ratios(cfg, len(groups), frozen)
    if not frozen and not sweeps_fine_tune(cfg) and len(set(ratios)) == 1:
        return ""
    return (("the head alone, the body frozen (its normalisation layers training); " if frozen else
             "the whole network, as a fine_tune's unfrozen cycle trains it (--freeze: the head alone); "
             if sweeps_fine_tune(cfg) else "")
            + "the LR axis is the head's; the groups " + " | ".join(g.name for g in groups) + " at "
            + " | ".join(f"x{r:.3g}" for r in ratios) + " of it")


def _held_out_loss(model: torch.nn.Module, held_out, pipe: Pipeline) -> torch.Tensor:
    model.eval()
    with torch.no_grad(), pipe.precision.autocast():
        total = sum(F.cross_entropy(model(x).float(), y, reduction="sum") for x, y in held_out)
    model.train()
    return total / sum(len(y) for _, y in held_out)


# ------------------------------------------------------------------------------------------------
# a find run: one curve, or one per value of --sweep, recorded and shown

SWEEPABLE = {"weight_decay": float, "momentum": float, "batch_size": int}


def parse_sweep(text: str) -> tuple[str, list]:
    """`weight_decay=1e-3,1e-4,1e-5` -> ("weight_decay", [0.001, 0.0001, 1e-05]), or a UsageError."""
    key, eq, values = text.partition("=")
    if not eq or key not in SWEEPABLE or not values.strip():
        raise UsageError(f"--sweep {text!r}: expected KEY=V1,V2,... with KEY one of {', '.join(SWEEPABLE)}, "
                         f"e.g. --sweep weight_decay=1e-3,1e-4,1e-5")
    kind, out = SWEEPABLE[key], []
    for item in values.split(","):
        v = parse_scalar(item.strip())
        ok = (isinstance(v, int) and not isinstance(v, bool)) if kind is int else (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        ok = ok and (v > 0 if key == "batch_size" else 0 <= v < 1 if key == "momentum" else v >= 0)
        if not ok:
            expected = {"batch_size": "positive integers", "momentum": "numbers in [0, 1)",
                        "weight_decay": "numbers >= 0"}[key]
            raise UsageError(f"--sweep {key}: {item.strip()!r} is not valid: expected {expected}")
        out.append(kind(v))
    return key, out


def run_curves(pipe: Pipeline, cfg: Config, display: Display, stop: StopFlag,
               sweep: tuple[str, list] | None = None) -> list[Curve]:
    """Every curve from the same initial weights: `preserved` puts them back after each."""
    if sweep is None:
        return [range_test(pipe, cfg, display, stop)]
    key, values = sweep
    curves = []
    for value in values:
        curves.append(range_test(pipe, cfg, display, stop, label=f"{key}={value:g}", **{key: value}))
        if stop.requested:
            break
    return curves


CURVE_COLUMNS = ["curve", "step", "lr", "loss", "smooth_loss", "lag_free_loss"]


def record_curves(run, curves: list[Curve]) -> None:
    log = run.log("lr_find.csv", CURVE_COLUMNS)
    for c in curves:
        lag_free = c.lag_free + [None] * (len(c.lrs) - len(c.lag_free))  # none past a NaN
        log.write_many({"curve": c.label or "lr_find", "step": i, "lr": lr, "loss": loss, "smooth_loss": s,
                        "lag_free_loss": f}
                       for i, (lr, loss, s, f) in enumerate(zip(c.lrs, c.losses, c.smooth, lag_free)))


def show_curves(display: Display, curves: list[Curve], chosen: str, note: str = "") -> None:
    if note:
        display.print(f"swept: {note}", markup=False)
    for c in curves:
        display.print(f"{c.label + ': ' if c.label else ''}stopped: {c.stop_reason}")
    names = list(curves[0].suggestions)
    rows = [[c.label or "lr_find"] + [f"{c.suggestions[n].lr:.2e}" + (" *" if c.suggestions[n].note else "")
                                      for n in names] for c in curves]
    display.table(f"suggested max_lr ({chosen} is used by train --max-lr find)", ["curve"] + names, rows)
    for c in curves:
        for s in c.suggestions.values():
            if s.note:
                display.print(f"* {c.label + ' ' if c.label else ''}{s.name}: {s.note}")
    main = curves[0]
    display.print(f"{chosen}: {main.suggestions[chosen].reason}", markup=False)
    for c in curves:
        for warning in c.reading.warnings:
            display.warn(f"{c.label + ': ' if c.label else ''}{warning}")
    display.text_plot(main.lrs, {c.label or "loss (lag-free smoothing)": c.lag_free for c in curves}, "range test",
                      xlog=True, marks={chosen: main.suggestions[chosen].lr}, ylabel="loss")


def find_in_run(pipe: Pipeline, run, display: Display, stop: StopFlag) -> Suggestion | None:
    """The range test inside a training run (`train --max-lr find`): recorded there, its suggestion
    returned; None when a signal cut it short, since a partial curve's suggestion is no choice."""
    curves = run_curves(pipe, pipe.cfg, display, stop)
    record_curves(run, curves)
    chosen = None if stop.requested else pipe.cfg.find.suggest
    run.write_json("lr_find.json", {"curves": [c.summary() for c in curves], "chosen": chosen,
                                    "frozen": sweeps_frozen(pipe.cfg), "fine_tune": sweeps_fine_tune(pipe.cfg),
                                    "group_ratios": group_ratios(pipe.cfg, len(pipe.groups), sweeps_frozen(pipe.cfg))})
    if chosen is None:
        display.print(f"range test stopped: {curves[-1].stop_reason}; no max_lr chosen")
        return None
    show_curves(display, curves, chosen, sweep_note(pipe.cfg, pipe.groups))
    return curves[0].suggestions[chosen]


def find_run(resolved: Resolved, display: Display, stop: StopFlag, dist: Dist | None = None,
             sweep_over: tuple[str, list] | None = None, started: float | None = None,
             pipe: Pipeline | None = None, argv: list[str] | None = None) -> tuple[RunDir, dict]:
    """A range-test run: returns its directory and summary. `pipe` replaces the one the config builds;
    `argv` is the command as typed, for meta.json."""
    started = started or time.time()
    dist = dist or Dist()
    cfg = resolved.config
    if dist.main:
        RunDir.check_root(cfg.run.root)
    if pipe is None:
        with display.counter("decode") as progress:
            pipe = build_pipeline(cfg, dist, progress=progress, stop=stop.pending)
        announce_data(pipe.ds, display)
    finder = None
    if cfg.train.accum_steps == "auto":
        from .batch_finder import resolve_auto
        cfg, finder = resolve_auto(pipe, display)
        resolved = resolved.model_copy(update={"config": cfg})
    if sweep_over and sweep_over[0] == "batch_size":
        for size in sweep_over[1]:  # a batch the data cannot fill is refused before the run directory exists
            TrainBatches(pipe.ds, cfg.data, size, cfg.train.seed, dist.rank, dist.world)
    run = RunDir.create(cfg.run.root, "find", resolved.name) if dist.main else NullRunDir()
    if sweeps_frozen(cfg) and pipe.built is not None and body_is_random(pipe.built):
        display.warn("the sweep drives the head alone, the body frozen (find --freeze or train.freeze_epochs), but "
                     "the body's weights are random (no model.pretrained, no --init): its suggestion is for a head on "
                     "random features; give pretrained weights (model.pretrained: a weights file, or true for a tv: "
                     "or timm: model; or --init RUN_DIR), or sweep the whole network (no --freeze, "
                     "train.freeze_epochs 0)")
    base = {"command": "find", "config": resolved.name, "run_dir": str(run.path), "dataset": cfg.data.dataset,
            "model": cfg.model.name, "optimizer": cfg.optim.name, "batch_size": cfg.train.batch_size,
            **batch_split(cfg, pipe.dist.world), **({"batch_finder": finder} if finder else {}),
            "seed": cfg.train.seed, "device": str(pipe.device), "threads": pipe.threads,
            "world_size": dist.world, "data": pipe.ds.memory,
            "started": now_iso(), "frozen": sweeps_frozen(cfg), "fine_tune": sweeps_fine_tune(cfg),
            "group_ratios": group_ratios(cfg, len(pipe.groups), sweeps_frozen(cfg)),
            "groups": [g.name for g in pipe.groups], "normalize": pipe.normalize}
    failed = False
    tracking, summary = None, None
    try:
        run.write_text("config.yaml", to_yaml(cfg, {"find"}))
        run.write_meta(argv, pipe.device, cfg.train.seed, dist.world, command="find", config=resolved.name,
                       data=pipe.ds.memory)
        run.write_json("data_report.json", pipe.ds.report)
        run.write_json("summary.json", {**base, "status": "running"})
        tracking = Tracking.start(run.path, cfg.run.log, display, command="find") if dist.main else None
        if tracking is not None:
            tracking.ready()
        curves = run_curves(pipe, cfg, display, stop, sweep_over)
        record_curves(run, curves)
        chosen = curves[0].suggestions[cfg.find.suggest]
        summary = {**base, "status": "interrupted" if stop.requested else "completed",
                   "stop_reason": curves[-1].stop_reason if stop.requested else curves[0].stop_reason,
                   "suggestion": chosen.as_dict(), "max_lr": chosen.lr,
                   "suggestions": {k: s.as_dict() for k, s in curves[0].suggestions.items()},
                   "sweep": {"key": sweep_over[0], "values": sweep_over[1]} if sweep_over else None,
                   "curves": [c.summary() for c in curves], "wall_seconds": round(time.time() - started, 3)}
        run.write_json("summary.json", summary)
        show_curves(display, curves, cfg.find.suggest, sweep_note(cfg, pipe.groups))
        return run, summary
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        failed = status == "failed"
        run.write_json("summary.json", {**base, "status": status, "stop_reason": f"{type(e).__name__}: {e}",
                                        "wall_seconds": round(time.time() - started, 3)})
        raise
    finally:
        if dist.main:
            problems = write_views(run.path)  # views of the records: a warning at most, never the exit code
            for problem in problems if not failed else ():  # a failed run has said why
                display.warn(problem)
        if tracking is not None:
            tracked(run, tracking, summary)
        run.close()
