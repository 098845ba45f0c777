"""A checkpoint written, read back, checked and restored: `onecycle train --resume RUN`.

`checkpoint_state` is what every epoch's checkpoint holds: the modules, the loop's position, the RNG
states, the config as decided and what the weights mean (normalisation, class names).
`open_for_resume` locks the run and reads its checkpoint; `restore` checks it against this run
(`check_resumable`: a resumed run keeps its config) and loads it into fresh modules (the weight
average too, `restore_ema`). `preserved` is the same restoring in memory: a model's weights and every
random state put back after steps that must leave no trace (the range test's sweeps, the batch
finder's trials).

`torch.load(weights_only=True)` already keeps a checkpoint from running code. But a file that
unpickles can still hold anything: keys missing, a model of other shapes, an optimiser state that
fits no parameter, a loop position past the end of the run. Each of those would pass the load
and fail steps later, with the run rewritten as `failed`. So everything is checked and loaded into
the modules before a single file of the run is written; a checkpoint that does not fit is refused
with one line, and the run's summary is left as it was. `read_checkpoint` opens the file as `--init`
does (safe_torch.py: never a link or a FIFO, never a sparse, meta, quantized or complex tensor, never
statistics that would normalise the inputs wrongly), and its errors never repeat torch's advice to
load the file unrestricted (`detail`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .ema import WeightEma
from .errors import RunDirError
from .fit import LoopState, start_cycle
from .optim import build_optimizer
from .pipeline import Pipeline, class_names
from .runs.directory import RunDir
from .safe_torch import bad_tensor, detail, load, open_weights, stats_problem
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




@contextlib.contextmanager
def preserved(model: torch.nn.Module):
    """Put the model's weights, buffers, mode, trainable flags and every random state back exactly,
    whatever happens inside."""
    weights = copy.deepcopy(model.state_dict())
    mode = model.training
    trainable = [(p, p.requires_grad) for p in model.parameters()]
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        model.load_state_dict(weights)
        model.train(mode)
        for p, flag in trainable:
            p.requires_grad_(flag)
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


def weights_state(pipe: Pipeline, cfg: Config, state: LoopState) -> dict:
    """The model and what its weights mean: `normalize` the inputs' statistics (a run started from these
    weights normalises as this one did), `classes` what the head's outputs mean (a run started from these
    weights keeps the head only for the same classes), `shape` the C x H x W images it takes. This alone is
    checkpoints/best.pt; `onecycle evaluate`, `predict` and `export` read no more."""
    return {"format": 1, "model": pipe.model.state_dict(), "state": asdict(state),
            "config": cfg.model_dump(mode="json"), "normalize": pipe.normalize, "classes": class_names(pipe.ds),
            "shape": list(pipe.ds.shape)}


def checkpoint_state(pipe: Pipeline, cfg: Config, opt, sched, scaler, state: LoopState, ema=None) -> dict:
    """Everything a resume needs (checkpoints/last.pt): the weights and what they mean (`weights_state`), the
    optimiser, `sched` the scheduler of cycle `state.cycle`, the RNGs, the weight average (`ema.py`); `cfg` is the
    run's config as decided (max_lr included)."""
    return {**weights_state(pipe, cfg, state), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_states(),
            "total_steps": cfg.train.total_epochs * pipe.batches.steps_per_epoch,
            "ema": ema.state_dict() if ema is not None else None}


NUMBER = (int, float)
TOP = {"model": dict, "optimizer": dict, "scheduler": dict, "state": dict, "rng": dict, "config": dict,
       "total_steps": int}


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, unpickled without running code, every tensor one a model can take
    (no file: FileNotFoundError; a link, a FIFO: NotRegularFile; anything else wrong: ValueError)."""
    with open_weights(path, follow=False) as f:  # inside the run: a link there is not followed
        saved = load(f)
    if not isinstance(saved, dict):
        raise ValueError(f"holds a {type(saved).__name__}, not onecycle's dict")
    bad = bad_tensor(saved)
    if bad:
        raise ValueError(f"tensor {bad[0][:80]!r} is {bad[1]}, which no onecycle run saves")
    problem = stats_problem(saved.get("normalize"))
    if problem:  # the resumed run would normalise its inputs with them
        raise ValueError(f"its recorded {problem}")
    return saved


def checkpoint_problem(saved: dict, epochs: int, per_epoch: int) -> str | None:
    """What is wrong with a checkpoint's structure for a run of `epochs` x `per_epoch` steps, or None."""
    for key, kind in TOP.items():
        if not isinstance(saved.get(key), kind) or isinstance(saved.get(key), bool):
            return f"its {key!r} is {type(saved.get(key)).__name__}, expected {kind.__name__}"
    if not all(isinstance(keys, dict) for keys in saved["config"].values()):
        return "its config is not a mapping of sections"
    return loop_problem(saved["state"], epochs, per_epoch)


def loop_problem(state: dict, epochs: int, per_epoch: int) -> str | None:
    """What is wrong with a saved loop state (the fields of `LoopState`), or None."""
    fields = {f.name: f for f in dataclasses.fields(LoopState)}
    if set(state) != set(fields):
        return f"its loop state has keys {sorted(state)}, expected {sorted(fields)}"
    for name, f in fields.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = NUMBER if isinstance(default, float) else type(default)
        if isinstance(state[name], bool) or not isinstance(state[name], kind):
            return f"its loop state's {name} is {state[name]!r}, expected {type(default).__name__}"
    epoch, epoch_step, step = state["epoch"], state["epoch_step"], state["step"]
    if not (0 <= epoch <= epochs and 0 <= epoch_step < per_epoch and step == epoch * per_epoch + epoch_step):
        return (f"its loop is at epoch {epoch}, step {epoch_step} of the epoch, {step} in all, which no run of "
                f"{epochs} epochs x {per_epoch} steps reaches")
    return None


PROGRESS = {"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step"}  # what stepping changes
IMPLEMENTATION = {"fused", "foreach", "capturable", "differentiable"}


def load_into(saved: dict, model: torch.nn.Module, opt: torch.optim.Optimizer, sched, scaler, step: int) -> None:
    """Load the checkpoint's modules, checking what `load_state_dict` lets through unchecked."""
    model.load_state_dict(saved["model"])  # strict: missing keys and other shapes raise here
    fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    opt.load_state_dict(saved["optimizer"])  # checks the number and sizes of the parameter groups
    for group, fresh in zip(opt.param_groups, fresh_groups):
        for key, value in fresh.items():  # a key an older torch did not save: its __setstate__ filled it
            if key in IMPLEMENTATION:  # how this process runs the step (CUDA or not), not the run's state
                group[key] = value
            elif key in ("lr", "momentum"):
                if isinstance(group.get(key), bool) or not isinstance(group.get(key), NUMBER):
                    raise ValueError(f"optimizer {key} is {group.get(key)!r}, expected a number")
            elif key == "betas":
                if not (isinstance(group.get(key), (list, tuple)) and len(group[key]) == 2
                        and all(isinstance(b, NUMBER) and not isinstance(b, bool) for b in group[key])):
                    raise ValueError(f"optimizer betas are {group.get(key)!r}, expected two numbers")
            elif key in group and group[key] != value:  # set by the config (checked equal) or the schedule's start
                raise ValueError(f"optimizer {key} is {group.get(key)!r}, this run's is {value!r}")
    for group in opt.param_groups:  # buffers of another shape would only fail at the next step
        for p in group["params"]:
            for name, value in opt.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != p.shape:
                    raise ValueError(f"optimizer state {name} of shape {tuple(value.shape)} for a parameter of "
                                     f"shape {tuple(p.shape)}")
    # a schedule is its config (checked equal by check_resumable) plus how far it has stepped: every
    # other entry must be what this config builds, and the position must be the loop's
    fresh, given = sched.state_dict(), saved["scheduler"]
    for key, value in fresh.items():
        if key in PROGRESS or key not in given:
            continue  # a key a newer torch added keeps the value this config gives it
        if given[key] != value:
            raise ValueError(f"scheduler state {key!r} is {given[key]!r}, this schedule's is {value!r}")
    last = given.get("_last_lr", fresh.get("_last_lr"))
    if given.get("last_epoch") != step or not isinstance(last, list) or len(last) != len(fresh.get("_last_lr", last)) \
            or not all(isinstance(v, NUMBER) and not isinstance(v, bool) for v in last):
        raise ValueError(f"scheduler is at step {given.get('last_epoch')!r}, the loop at step {step}")
    sched.load_state_dict({k: v for k, v in given.items() if k in fresh})  # nothing else becomes an attribute
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])


def refused(path: Path, e: Exception) -> RunDirError:
    return RunDirError(f"--resume {path}: checkpoint last.pt does not fit this run ({detail(e)}); "
                       f"it is damaged or not this run's, so nothing was changed")


def load_checkpoint(run: RunDir) -> dict:
    path = run.path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise RunDirError(f"--resume {run.path}: no checkpoint to resume from (the run stopped before its first "
                          f"epoch ended or its first checkpoint); start it again instead")
    try:
        return read_checkpoint(path)
    except Exception as e:  # a foreign or damaged file: say so rather than show the unpickler's traceback
        raise RunDirError(f"--resume {run.path}: checkpoint {path.name} cannot be read ({detail(e)}); "
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
             "data.cache", "data.device_budget", "data.strict",  # where data and weights live, not what they are
             "train.accum_steps"}  # how a batch is cut to fit the card: a resume on a smaller one may cut it finer


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
    issue = checkpoint_problem(saved, cfg.train.total_epochs, per_epoch)
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
        load_into(saved, pipe.model, opt, sched, scaler, state.step - cycle.first_epoch * per_epoch)
        ema = restore_ema(saved, pipe, cfg)
        set_rng_states(saved["rng"])
    except Exception as e:
        raise refused(path, e) from None
    return opt, sched, scaler, state, ema


def restore_ema(saved: dict | None, pipe: Pipeline, cfg: Config) -> WeightEma | None:
    """The weight average a run keeps (`train.ema`): a copy of the model's weights, or a resumed run's own."""
    if cfg.train.ema is None:
        return None
    ema = WeightEma(pipe.model, cfg.train.ema)
    if saved is not None:
        if not isinstance(saved.get("ema"), dict):
            raise ValueError("train.ema is set but the checkpoint holds no weight average")
        ema.load_state_dict(saved["ema"])
    return ema


def kept_state(run_path: Path, cfg: Config, per_epoch: int) -> LoopState | None:
    """The loop state of the checkpoint on disk now (what a resume would continue from), if it is one."""
    try:
        state = read_checkpoint(run_path / "checkpoints" / "last.pt").get("state")
    except Exception:
        return None
    ok = isinstance(state, dict) and not loop_problem(state, cfg.train.total_epochs, per_epoch)
    return LoopState(**state) if ok else None
