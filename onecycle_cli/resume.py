"""A checkpoint written, read back, checked and restored: `onecycle train --resume RUN`.

`checkpoint_state` is what every epoch's checkpoint holds: the modules, the loop's position, the RNG
states, the config as decided and what the weights mean (normalisation, class names).
`open_for_resume` locks the run and reads its checkpoint; `restore` checks it against this run
(`check_resumable`: a resumed run keeps its config) and loads it into fresh modules before a single
file of the run is written, so a refused resume leaves the run as it was. `checkpoint.py` checks
the file's structure and what `load_state_dict` lets through.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import Config
from .errors import RunDirError
from .fit import LoopState, start_cycle
from .optim import build_optimizer
from .pipeline import Pipeline, class_names
from .runs.directory import RunDir
from .schedules import Cycle


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




def checkpoint_state(pipe: Pipeline, cfg: Config, opt, sched, scaler, state: LoopState) -> dict:
    """Everything a resume needs; `cfg` the run's config as decided (max_lr included), `sched` the scheduler of
    cycle `state.cycle`, `normalize` the inputs' statistics (a run started from these weights normalises as
    this one did), `classes` what the head's outputs mean (a run started from these weights keeps the head
    only for the same classes)."""
    return {"format": 1, "model": pipe.model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "state": asdict(state), "rng": rng_states(), "config": cfg.model_dump(mode="json"),
            "total_steps": cfg.train.total_epochs * pipe.batches.steps_per_epoch, "normalize": pipe.normalize,
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
            f"--resume {path}: this config gives {total_steps} steps ({cfg.train.total_epochs} epochs x "
            f"{total_steps // cfg.train.total_epochs}) but the run was scheduled for {saved['total_steps']}; a 1cycle "
            f"schedule cannot change length midway: keep train.epochs, train.batch_size and the data, or start a new "
            f"run")
    now = cfg.model_dump(mode="json")
    for section, keys in saved["config"].items():
        for key, old in keys.items():
            if f"{section}.{key}" not in RESUMABLE and now.get(section, {}).get(key, KeyError) != old:
                became = now.get(section, {}).get(key, "a key this onecycle does not have")
                raise RunDirError(f"--resume {path}: {section}.{key} was {old!r} and would become {became!r}; "
                                  f"a resumed run keeps its config (start a new run to change it)")


def restore(saved: dict, pipe: Pipeline, cfg: Config, plan: list[Cycle], path: Path):
    """The optimizer, schedule, scaler and loop state of a resumed run, loaded from its checkpoint.

    Everything is checked and loaded here, before any file of the run is written: a checkpoint that
    does not fit is refused with one line and leaves the run as it was. The scheduler is the one of
    the cycle of `plan` the checkpoint was taken in (fine_tune: frozen or unfrozen), made before the states it loads.
    """
    per_epoch = pipe.batches.steps_per_epoch
    issue = ckpt.problem(saved, LoopState, cfg.train.total_epochs, per_epoch)
    if not issue and not 0 <= saved["state"]["cycle"] < len(plan):
        issue = f"its loop is in cycle {saved['state']['cycle']}, and this run has {len(plan)}"
    if issue:
        raise RunDirError(f"--resume {path}: checkpoint last.pt is not one this run can continue: {issue}")
    check_resumable(saved, cfg, cfg.train.total_epochs * per_epoch, path)
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


def kept_state(run_path: Path, cfg: Config, per_epoch: int) -> LoopState | None:
    """The loop state of the checkpoint on disk now (what a resume would continue from), if it is one."""
    kept = ckpt.kept_state(run_path, LoopState, cfg.train.total_epochs, per_epoch)
    return LoopState(**kept) if kept is not None else None
