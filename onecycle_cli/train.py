"""A training run: `onecycle train --config mnist_sample --max-lr find --epochs 2`.

`train_run` is the whole run, in the order it happens:
  the pipeline (data, model)  ->  start_run (a new directory) or restore (resume.py)
  ->  choose_max_lr (the range test of `--max-lr find`, once, before the optimiser exists)
  ->  the cycle plan (once)  ->  run_cycles (fit.py's loop per cycle)  ->  the summary and the views.
A run is one cycle, or with `train.freeze_epochs` fastai's `fine_tune`: a cycle on the head with the
body frozen, then one on the whole network. What the summary records beyond the loop's numbers is one
typed record, `RunRecord`. `max_lr_flag` reads `--max-lr` (a number, `find`, or a finished find run's
suggestion); `train_seeds` runs the same config once per seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .accumulate import batch_split
from .batch_finder import resolve_auto
from .config import Config, FindConfig, Resolved, to_yaml
from .display import Display
from .dist import Dist
from .errors import Diverged, UsageError
from .fit import LoopState, fit, start_cycle
from .lr_find import find_in_run
from .models import body_is_random
from .optim import build_optimizer, leading_groups
from .pipeline import Pipeline, announce_data, build_pipeline
from .resume import checkpoint_state, kept_state, open_for_resume, restore, restore_ema, weights_state
from .runs.directory import NullRunDir, RunDir, TensorboardLog, TrainingLog, keep_rows, now_iso
from .runs.report import write_views
from .schedules import Cycle, check_lengths, cycles
from .signals import StopFlag
from .trackers.records import Tracking, tracked
from .trained.interpret import interpret_run

# the first line of config.yaml while `train --max-lr find` has not chosen: the value below it is the config's
PENDING_MAX_LR = ("# schedule.max_lr is chosen by this run's range test (train --max-lr find); until it ends, the "
                  "value below is unused\n")


# ------------------------------------------------------------------------------------------------
# --max-lr


def max_lr_flag(value: str | None, suggest_key: str | None) -> tuple[object, str, bool]:
    """--max-lr as (value for the config or None, where it came from, run the range test first?)."""
    if value is None:
        return None, "config", False
    if value == "find":
        return None, "find", True
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number):
            raise UsageError(f"--max-lr {value}: expected a finite number > 0, e.g. --max-lr 0.8")
        return value, f"--max-lr {value}", False
    path = Path(value)
    if not value.strip() or not path.is_dir():  # '' would be the current directory
        raise UsageError(f"--max-lr {value!r}: expected a number, 'find', or the directory of a finished find run")
    name, lr = suggestion_from_run(path, suggest_key)
    return lr, f"find run {path}: {name}", False


def suggestion_from_run(path: Path, name: str | None) -> tuple[str, float]:
    """A finished find run's suggestion `name` (default: the one that run chose) as (name, lr)."""
    summary = RunDir(path).read_json("summary.json")
    if summary.get("command") != "find" or summary.get("status") != "completed" or not summary.get("suggestions"):
        state = (f"a {summary.get('command')} run with status {summary.get('status')!r}" if summary
                 else "not a onecycle run (no readable summary.json)")
        raise UsageError(f"--max-lr {path}: expected a finished find run, but it is {state}")
    # a summary is a file from outside: every level is checked for its type before it is used
    chosen, suggestions = summary.get("suggestion"), summary.get("suggestions")
    name = name or (chosen.get("name") if isinstance(chosen, dict) else None) or FindConfig().suggest
    s = suggestions.get(name) if isinstance(suggestions, dict) and isinstance(name, str) else None
    lr = s.get("lr") if isinstance(s, dict) else None
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise UsageError(f"--max-lr {path}: that find run has no usable {name!r} suggestion")
    return name, lr


def choose_max_lr(cfg: Config, pipe: Pipeline, run: RunDir, display: Display, stop: StopFlag
                  ) -> tuple[Config, str] | None:
    """`--max-lr find`: the range test in this run, recorded there; the config with its suggestion as max_lr
    and where that came from, or None when a signal cut the test short (a partial curve chooses nothing)."""
    suggestion = find_in_run(pipe, run, display, stop)
    if suggestion is None:
        return None
    cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"max_lr": suggestion.lr})})
    run.write_text("config.yaml", to_yaml(cfg, {"train", "find"}))
    display.print(f"max_lr {suggestion.lr:.3g} from the range test's {suggestion.name} suggestion")
    return cfg, f"find: {suggestion.name} (range test in this run)"


# ------------------------------------------------------------------------------------------------
# the run's record


@dataclass
class RunRecord:
    """What a run's summary.json says beyond the loop's numbers: where it came from and what it trained."""

    config: str                       # the config's name (a preset, a file)
    max_lr_source: str                # "config", "--max-lr 0.8", "find: slide (range test in this run)", ...
    started: str
    groups: list[dict]                # the model's parameter groups, body to head
    weights: dict | None              # what was taken from pretrained weights, and what was adapted
    normalize: dict | None            # the inputs' statistics and whose they are
    max_lr_chosen: bool = True        # False while `--max-lr find` has not chosen: the summary says null
    cycles: list[dict] = field(default_factory=list)
    resumed: int | None = None        # how many times the run was resumed
    batch_finder: dict | None = None  # train.accum_steps auto: the splits tried and the one chosen

    def fields(self) -> dict:
        out = asdict(self)
        del out["max_lr_chosen"]
        if self.resumed is None:
            del out["resumed"]
        if self.batch_finder is None:
            del out["batch_finder"]
        return out


def describe_model(pipe: Pipeline) -> dict:
    """What the summary records about the model: its groups, its weights and the inputs' statistics."""
    built = pipe.built
    return {"groups": [{"name": g.name, "parameters": g.size} for g in pipe.groups],
            "weights": ({**(built.loaded.as_dict() if built.loaded else {}), "adapted": built.notes}
                        if built is not None and (built.loaded or built.notes) else None),
            "normalize": pipe.normalize}


def summary_of(pipe: Pipeline, cfg: Config, run: RunDir, state: LoopState, status: str, reason: str, started: float,
               record: RunRecord) -> dict:
    last = state.last
    return {
        "command": "train", "status": status, "stop_reason": reason, "run_dir": str(run.path),
        "dataset": cfg.data.dataset, "model": cfg.model.name,
        "parameters": sum(p.numel() for p in pipe.model.parameters()),
        "optimizer": cfg.optim.name, "schedule": cfg.schedule.name, "shape": cfg.schedule.shape,
        "max_lr": cfg.schedule.max_lr if record.max_lr_chosen else None, "epochs": cfg.train.total_epochs,
        "freeze_epochs": cfg.train.freeze_epochs, "lr_mult": cfg.optim.lr_mult, "epochs_done": state.epoch,
        "steps": state.step, "batch_size": cfg.train.batch_size, **batch_split(cfg, pipe.dist.world),
        "seed": cfg.train.seed, "device": str(pipe.device),
        "threads": pipe.threads, "precision": pipe.precision.name, "world_size": pipe.dist.world,
        "data": pipe.ds.memory,
        "final": {k: last.get(k) for k in ("train_loss", "valid_loss", "accuracy")} if last else None,
        "ema": ({"decay": cfg.train.ema, "final": {k: last.get(f"ema_{k}") for k in ("valid_loss", "accuracy")}
                 if last else None} if cfg.train.ema is not None else None),
        "best": ({"accuracy": state.best_accuracy, "epoch": state.best_epoch, "checkpoint": "checkpoints/best.pt"}
                 if state.best_epoch >= 0 else None),
        "train_seconds": round(state.train_seconds, 3), "wall_seconds": round(time.time() - started, 3),
        "images_per_s": round(state.images / state.train_seconds, 1) if state.train_seconds and state.images else None,
        **record.fields()}


def show_model(display: Display, pipe: Pipeline, record: RunRecord) -> None:
    """One line each: the weights taken, what was adapted, whose statistics normalise the inputs, the groups."""
    loaded = pipe.built.loaded if pipe.built is not None else None
    if loaded is not None:
        fresh = list(loaded.skipped) + loaded.fresh
        skipped = f", {len(fresh)} re-initialised ({', '.join(fresh[:4])})" if fresh else ""
        head = f"; the head {loaded.head}" if loaded.head else ""
        display.print(f"weights: {len(loaded.taken)} tensors from {loaded.source}{skipped}{head}", markup=False)
    if pipe.cfg.model.source != "builtin":
        display.print(f"{pipe.cfg.model.name}: " + "; ".join(pipe.built.notes), markup=False)
    n = record.normalize
    if n and (n.get("note") or not n["source"].startswith("dataset")):
        display.print(f"inputs normalised with {n['source']}: mean {[round(v, 2) for v in n['mean']]}, std "
                      f"{[round(v, 2) for v in n['std']]} (pixel units){'; ' + n['note'] if n.get('note') else ''}",
                      markup=False)
    if pipe.cfg.optim.lr_mult != 1 or pipe.cfg.train.freeze_epochs:
        display.print("parameter groups, body to head: "
                      + " | ".join(f"{g.name} ({g.size:,} parameters)" for g in pipe.groups), markup=False)


def random_body_warning(pipe: Pipeline) -> str | None:
    """fine_tune's frozen cycle on a body initialised at random: said once, as the run starts (not per cycle)."""
    n = pipe.cfg.train.freeze_epochs
    if not n or pipe.built is None or not body_is_random(pipe.built):
        return None
    return (f"train.freeze_epochs = {n}: the body is frozen for {n} epoch{'s' * (n != 1)}, but its weights are random "
            f"(no model.pretrained, no --init), so the head learns from random features; give pretrained weights "
            f"(model.pretrained: a weights file, or true for a tv: or timm: model; or --init RUN_DIR), or set "
            f"train.freeze_epochs to 0")


def cycle_line(cycle: Cycle) -> str:
    what = ("the head alone, the body frozen (its normalisation layers still training)" if cycle.frozen
            else "the whole network")
    return (f"{cycle.name}: {cycle.epochs} epoch{'s' * (cycle.epochs != 1)} of 1cycle on {what}, peak lr "
            + " | ".join(f"{lr:.3g}" for lr in cycle.max_lrs)
            + f", pct_start {cycle.schedule.pct_start:g}, div {cycle.schedule.div:g}")


# ------------------------------------------------------------------------------------------------
# the run


def start_run(run: RunDir, resolved: Resolved, pipe: Pipeline, record: RunRecord, display: Display,
              find_first: bool, argv: list[str] | None) -> None:
    """A new run's first files: config.yaml (the keys neither command reads marked), meta, data, a running summary."""
    cfg = resolved.config
    show_model(display, pipe, record)
    run.write_text("config.yaml", (PENDING_MAX_LR if find_first else "")
                   + to_yaml(cfg, {"train", "find"} if find_first else {"train"}))
    run.write_meta(argv, pipe.device, cfg.train.seed, pipe.dist.world, command="train", config=resolved.name,
                   data=pipe.ds.memory)
    run.write_json("data_report.json", pipe.ds.report)
    run.write_json("summary.json", {"command": "train", "status": "running", "config": resolved.name,
                                    "run_dir": str(run.path), "started": record.started})


def continue_run(run: RunDir, state: LoopState, record: RunRecord, display: Display, total: int) -> None:
    """A resumed run: its first start's record kept, and the records written after its checkpoint dropped."""
    previous = run.read_json("summary.json")
    # what the first start loaded is its record: a resume takes its weights from the checkpoint
    for key in ("max_lr_source", "started", "config", "weights", "batch_finder"):
        if key in previous:
            setattr(record, key, previous[key])
    resumed = previous.get("resumed", 0)
    record.resumed = (resumed if isinstance(resumed, int) and not isinstance(resumed, bool) else 0) + 1
    # records written after the checkpoint belong to a future that will now be replayed
    keep_rows(run.path / "steps.csv", lambda r: r["step"] <= state.step)
    keep_rows(run.path / "metrics.csv", lambda r: r["epoch"] < state.epoch)
    display.print(f"resuming {run.path} at epoch {state.epoch}, step {state.step} of {total}", markup=False)


def run_cycles(pipe: Pipeline, cfg: Config, run: RunDir, display: Display, stop: StopFlag, state: LoopState,
               opt, sched, scaler, plan: list[Cycle], logs: list, summarise, ema=None) -> str:
    """Each cycle of `plan` not yet done, through fit.py's loop; 'completed' or 'interrupted'."""
    def checkpoint(s: LoopState) -> None:
        if s.epoch_step == 0 and s.best_epoch == s.epoch - 1:  # the epoch just ended is the best so far
            run.save_checkpoint(weights_state(pipe, cfg, s), "best.pt")
        run.save_checkpoint(checkpoint_state(pipe, cfg, opt, sched, scaler, s, ema))  # the scheduler of the cycle now
        run.write_json("summary.json", summarise(s, "running", ""))

    status = "completed"
    for index, cycle in enumerate(plan):
        if state.epoch >= cycle.end_epoch:
            continue  # done before a resume (a checkpoint at its last epoch still holds its scheduler)
        if sched is None or index != state.cycle:
            sched = start_cycle(pipe, opt, cycle)
            state.cycle = index
        if len(plan) > 1 or cycle.frozen:
            display.print(cycle_line(cycle))
        status = fit(pipe, run, display, stop, state, opt, sched, scaler, checkpoint, logs, cycle, ema)
        if status != "completed":
            break
    return status


def train_run(resolved: Resolved, display: Display, stop: StopFlag, dist: Dist = Dist(), *,
              max_lr_source: str = "config", find_first: bool = False, resume: Path | None = None,
              started: float | None = None, argv: list[str] | None = None) -> tuple[RunDir, dict]:
    """One training run; returns its directory and summary. Raises Diverged (exit 3) after recording.
    `argv` is the command as typed, for meta.json."""
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
        finder = None
        if cfg.train.accum_steps == "auto":  # a resumed run's config holds the number its first start chose
            cfg, finder = resolve_auto(pipe, display)
            resolved = resolved.model_copy(update={"config": cfg})
        per_epoch = pipe.batches.steps_per_epoch
        total = cfg.train.total_epochs * per_epoch
        check_lengths(cfg, per_epoch)  # before the run directory exists, whatever max_lr the range test gives
        if resume is not None:  # a resumed run's max_lr is in its config: the plan is final
            plan = cycles(cfg, len(pipe.groups))
            opt, sched, scaler, state, ema = restore(saved, pipe, cfg, plan, resume)
    except BaseException:
        run.close()  # a refused resume lets go of the run at once, its files untouched
        raise
    if resume is None and dist.main:
        run = RunDir.create(cfg.run.root, "train", resolved.name)
    record = RunRecord(resolved.name, max_lr_source, now_iso(), **describe_model(pipe), batch_finder=finder)
    if resume is None:
        state = LoopState()

    def summarise(s: LoopState, status: str, reason: str) -> dict:
        return summary_of(pipe, cfg, run, s, status, reason, started, record)

    logs: list = []
    tracking: Tracking | None = None
    summary: dict | None = None
    outcome = False  # completed, interrupted or diverged: what the exit code says, which views never change
    try:
        if resume is None:
            start_run(run, resolved, pipe, record, display, find_first, argv)
            tracking = Tracking.start(run.path, cfg.run.log, display, every=cfg.train.log_every) if dist.main else None
            if warning := random_body_warning(pipe):  # a resumed run said it when it started
                display.warn(warning)
            if find_first:
                # until the range test ends, no max_lr is this run's: a summary written meanwhile says so
                record.max_lr_chosen, record.max_lr_source = False, "find: the range test in this run, not finished"
                chosen = choose_max_lr(cfg, pipe, run, display, stop)
                if chosen is None:
                    record.max_lr_source = "find: none chosen, the range test was interrupted"
                    summary = summarise(state, "interrupted", f"interrupted by {stop.name} during the range test, "
                                        f"before training began: no max_lr was chosen and nothing was trained; start "
                                        f"the run again (a range test is not resumed)")
                    run.write_json("summary.json", summary)
                    outcome = True
                    return run, summary
                cfg, record.max_lr_source = chosen
                record.max_lr_chosen = True
            plan = cycles(cfg, len(pipe.groups))
            opt = build_optimizer(cfg.optim, pipe.groups, cfg.schedule.max_lr, fused=pipe.fused)
            scaler = torch.amp.GradScaler() if pipe.precision.needs_scaler else None
            sched = None  # each cycle starts its own
            ema = restore_ema(None, pipe, cfg)  # after the range test, which puts the weights back
        else:
            continue_run(run, state, record, display, total)
            tracking = Tracking.start(run.path, cfg.run.log, display, resumed=True,
                                      every=cfg.train.log_every) if dist.main else None
        record.cycles = [{"name": c.name, "epochs": c.epochs, "frozen": c.frozen, "max_lrs": list(c.max_lrs),
                          "pct_start": c.schedule.pct_start, "div": c.schedule.div} for c in plan]
        logs.append(TrainingLog(run, len(leading_groups(opt)), ema=ema is not None))
        if cfg.run.tensorboard and dist.main:
            logs.append(TensorboardLog(run.path / "tensorboard"))
        if tracking is not None:
            tracking.ready()  # its runs open before the first step, not on the steps' cores
            logs.append(tracking)
        status = run_cycles(pipe, cfg, run, display, stop, state, opt, sched, scaler, plan, logs, summarise, ema)
        if status == "completed" and dist.main:
            interpret_run(pipe, run, display)
        reason = (f"completed {cfg.train.total_epochs} epochs" if status == "completed" else
                  f"interrupted by {stop.name} at step {state.step} of {total} (epoch {state.epoch}); "
                  f"continue with: onecycle train --resume {run.path}")
        summary = summarise(state, status, reason)
        run.write_json("summary.json", summary)
        outcome = True
        return run, summary
    except Diverged as e:
        e.summary = summary = summarise(state, "diverged", str(e))
        run.write_json("summary.json", e.summary)
        outcome = True
        raise
    except KeyboardInterrupt:
        # the loop may have counted steps, even an epoch, past the checkpoint it could not finish writing:
        # the summary says what the checkpoint on disk holds, which is what a resume continues from
        kept = kept_state(run.path, cfg, per_epoch)
        reason = ("stopped at once by a second SIGINT; " + (
            f"the checkpoint of step {kept.step} (epoch {kept.epoch}) is kept; continue with: onecycle train "
            f"--resume {run.path}" if kept is not None else "no checkpoint had been written; start the run again"))
        run.write_json("summary.json", summarise(kept or LoopState(), "interrupted", reason))
        outcome = True
        raise
    except BaseException as e:
        run.write_json("summary.json", summarise(state, "failed", f"{type(e).__name__}: {e}"))
        raise
    finally:
        for log in logs:
            log.close()
        if dist.main:
            problems = write_views(run.path)
            for problem in problems if outcome else ():  # a failed run has said why; its views are best effort
                display.warn(problem)
        if tracking is not None:  # after the views: report.html and the PNGs go as artifacts
            tracked(run, tracking, summary)
        run.close()


# ------------------------------------------------------------------------------------------------
# --seeds


def train_seeds(resolved: Resolved, seeds: list[int], display: Display, stop: StopFlag, dist: Dist = Dist(), *,
                max_lr_source: str = "config", find_first: bool = False, argv: list[str] | None = None) -> dict:
    """The same config once per seed, each its own run; the mean and spread of the final accuracy."""
    summaries = []
    for seed in seeds:
        cfg = resolved.config
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
        try:
            run, summary = train_run(resolved.model_copy(update={"config": cfg}), display, stop, dist,
                                     max_lr_source=max_lr_source, find_first=find_first, argv=argv)
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
