"""A checkpoint read back: what `onecycle train --resume RUN` takes from `checkpoints/last.pt`.

`torch.load(weights_only=True)` already keeps a checkpoint from running code. But a file that
unpickles can still hold anything: keys missing, a model of other shapes, an optimiser state that
fits no parameter, a loop position past the end of the run. Each of those would pass the load
and fail steps later, with the run rewritten as `failed`. So everything is checked and loaded into
the modules before a single file of the run is written; a checkpoint that does not fit is refused
with one line, and the run's summary is left as it was. `read` opens the file as `--init` does
(onecycle_cli/safe_torch.py: never a link or a FIFO, never a sparse, meta, quantized or complex
tensor, never statistics that would normalise the inputs wrongly), and its errors never repeat
torch's advice to load the file unrestricted (`detail`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .errors import RunDirError
from .safe_torch import bad_tensor, detail, load, open_weights, stats_problem

NUMBER = (int, float)
TOP = {"model": dict, "optimizer": dict, "scheduler": dict, "state": dict, "rng": dict, "config": dict,
       "total_steps": int}


def read(path: Path) -> dict:
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


def problem(saved: dict, loop: type, epochs: int, per_epoch: int) -> str | None:
    """What is wrong with a checkpoint's structure for a run of `epochs` x `per_epoch` steps, or None."""
    for key, kind in TOP.items():
        if not isinstance(saved.get(key), kind) or isinstance(saved.get(key), bool):
            return f"its {key!r} is {type(saved.get(key)).__name__}, expected {kind.__name__}"
    if not all(isinstance(keys, dict) for keys in saved["config"].values()):
        return "its config is not a mapping of sections"
    return loop_problem(saved["state"], loop, epochs, per_epoch)


def loop_problem(state: dict, loop: type, epochs: int, per_epoch: int) -> str | None:
    """What is wrong with a saved loop state (the fields of dataclass `loop`), or None."""
    fields = {f.name: f for f in dataclasses.fields(loop)}
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


def kept_state(run_path: Path, loop: type, epochs: int, per_epoch: int) -> dict | None:
    """The loop state of the checkpoint on disk now (what a resume would continue from), if it is one."""
    try:
        state = read(run_path / "checkpoints" / "last.pt").get("state")
    except Exception:
        return None
    return state if isinstance(state, dict) and not loop_problem(state, loop, epochs, per_epoch) else None
