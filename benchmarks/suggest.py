"""How good is each range-test suggestion, measured by training at it:
`OMP_NUM_THREADS=1 python benchmarks/suggest.py --data ../shared/data --workers 2 --out /tmp/suggest.jsonl`

12 tasks (TASKS: presets, image folders and fine-tunes; AdamW, Adam and SGD; batch 32 to 512), split in
two halves fixed before any new task ran: the rules were chosen on "dev" and only measured on "held-out".
For each task and seed one range test is run, exactly as `onecycle find --seed S` runs it, and eleven rules
read its curve:
  onecycle  floor, basin, valley, steep, minimum, slide   (onecycle_cli/suggest.py, read again from the journalled
            losses by the code as it is now, so a new rule applies to every recorded curve)
  fastai    valley, slide, minimum, steep   (fastai 2.8's formulas, re-implemented below, on the
            view of the same losses that fastai's `lr_find` would hand them: see `fastai_view`)
A fine_tune task has two range tests a seed: the head alone, the body frozen (fastai's lr_find after freeze(),
which fastai's rules read, and what onecycle's `find` swept before issue 26), and the whole network as the
unfrozen cycle trains it (what `find` sweeps since, which onecycle's rules read: see `our_sweep`).
Then 1cycle fits, each as `onecycle train --seed S --max-lr X` trains it (every cycle of it: fine_tune's
frozen one, then the unfrozen):
  - at every point of a log grid of max_lr, 3 a decade, for every seed, extended by two points past an end
    that wins: the grid point with the highest mean accuracy over the seeds is the task's best;
  - at the suggestions of the default, basin, slide, onecycle's valley and fastai's minimum (`--train-rules`
    adds others), each seed's own LR exactly; the other rules' accuracies are read off each seed's grid.
A rule's regret on a task = the best grid mean - the mean accuracy at the rule's suggestions, in
percentage points; a negative regret means the rule found a better LR than any grid point. The
best grid mean is a maximum over noisy means, so it sits a little above the true optimum: every
rule's regret carries the same small upward bias, which does not change their order. Its standard error
(`regret_se`, the per-task tables' "± s.e.") is that of the seeds' paired differences from the best grid point:
the same seed draws the same batches and the same new head at every LR.

Every range test and every fit is appended to --out as one JSON line as soon as it ends, and a
rerun of the same command skips what the file already holds: an interrupted benchmark loses at most
the fits under way. The folders and the pretrained body are written beside it (benchmarks/suggest_data.py).
Prints one JSON object (`--markdown`: the tables of docs/benchmarks.md instead).

    python benchmarks/suggest.py --quick       # smoke run: the bundled set, 2,000 images, 1 seed; under a minute
    python benchmarks/suggest.py --smoke       # the smallest run of every step, in seconds: one task (MNIST where
                                               # --data holds it, else the bundled set), 256 images, 1 seed, a
                                               # 30-step range test, 2 grid points; a fresh journal unless --out
    python benchmarks/suggest.py --data ../shared/data --workers 2 --half dev --out J   # then --half held-out:
                                               # 12 tasks x 5 seeds, about 2.5 hours on 2 cores
    python benchmarks/suggest.py --out J --summary --markdown     # the tables; --candidates: the rules tried
    python benchmarks/suggest.py ... --first-seed 5 --tasks T ...  # seeds 5-9: curves no rule or warning was set on
    python benchmarks/suggest.py ... --thread-study 2   # each range test again at 2 threads, the default trained there
    python benchmarks/suggest.py ... --head-study   # fine_tune: onecycle's rules read off the head alone, trained
    python benchmarks/suggest.py ... --summary --fastai-python /tmp/fastai/bin/python  # replay through fastai
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import suggest_data
import torch

from onecycle_cli import suggest as suggest_rules
from onecycle_cli.config import FindConfig, resolve
from onecycle_cli.display import Display
from onecycle_cli.errors import Diverged
from onecycle_cli.fit import LoopState, evaluate, fit, start_cycle
from onecycle_cli.lr_find import range_test, smooth_losses, sweeps_fine_tune, sweeps_frozen
from onecycle_cli.optim import build_optimizer
from onecycle_cli.pipeline import build_pipeline, class_names
from onecycle_cli.runs.directory import NullRunDir
from onecycle_cli.schedules import cycles
from onecycle_cli.signals import StopFlag
from onecycle_cli.suggest import RULES, suggest

REPO = Path(__file__).resolve().parents[1]

# SGD as the CIFAR preset has it: momentum cycled 0.95 -> 0.85 -> 0.95 by 1cycle (held at 0.9 in the
# range test), weight decay 1e-4; BatchNorm and biases spared, as the MNIST presets spare them
SGD = ("optim.name=sgd", "optim.weight_decay=1e-4")
FASHION = ("data.dataset=fashion_mnist",)  # the book's simple_cnn and recipe on Fashion-MNIST
ADAM = ("optim.weight_decay=0",)           # AdamW without weight decay is Adam


@dataclass(frozen=True)
class Task:
    preset: str
    sets: tuple[str, ...]
    grid: tuple[float, float]  # the first grid's ends: 10 points, 3 a decade; extended past an end that wins
    half: str                  # "dev": the rules were chosen on it; "held-out": fixed before, only reported;
    #                            "later": added after the rules were chosen, reported apart from the 12
    data: str = "builtin"      # the built-in set the preset names, or a folder of suggest_data.py
    about: str = ""


# The halves were fixed with the task list, before any of the new tasks had run: each holds a BatchNorm-free
# net, a folder, a fine-tune, a batch-32 task and both optimisers. The six tasks of the first measurement
# (issue 14) are split three and three.
TASKS: dict[str, Task] = {
    "mnist_sample/adamw": Task("mnist_sample", (), (1e-3, 1.0), "dev", about="BatchNorm-free, a sharp edge; batch 64"),
    "mnist/sgd": Task("mnist", SGD, (1e-2, 10.0), "dev", about="batch 512"),
    "fashion_mnist/adamw": Task("mnist", FASHION, (1e-3, 1.0), "dev", about="batch 512"),
    "folder/digits": Task("folder", ("data.image_size=28", "train.batch_size=32", "train.epochs=3"), (1e-4, 0.1),
                          "dev", "digits", "the README's folder example: ResNet-20, 28 px, batch 32, 3 epochs"),
    "finetune/unfrozen": Task("folder", ("train.batch_size=64", "train.epochs=4"), (1e-4, 0.1), "dev", "fashion5",
                              "a new head on a trained body, the whole network in one 1cycle; unfrozen range test"),
    "mnist/adam-b32": Task("mnist", (*ADAM, "train.batch_size=32"), (1e-4, 0.1), "dev", about="Adam, batch 32"),
    "mnist_sample/sgd": Task("mnist_sample", SGD, (1e-2, 10.0), "held-out", about="BatchNorm-free; batch 64"),
    "mnist/adamw": Task("mnist", (), (1e-3, 1.0), "held-out", about="batch 512"),
    "fashion_mnist/sgd": Task("mnist", FASHION + SGD, (1e-2, 10.0), "held-out", about="batch 512"),
    "folder/photos64": Task("folder", ("data.image_size=64", "train.batch_size=32", "train.epochs=4"), (1e-4, 0.1),
                            "held-out", "photos", "photo-like RGB JPEGs of mixed sizes, random-resized crops, 64 px, "
                            "ResNet-20, batch 32"),
    "finetune/frozen": Task("folder", ("train.batch_size=64", "train.freeze_epochs=1", "train.epochs=3",
                                       "optim.lr_mult=100"), (3e-4, 0.3), "held-out", "mnist10",
                            "fastai's fine_tune onto a new domain (a body trained on clothes, digits): the whole "
                            "network's range test (onecycle's rules), the head's (fastai's)"),
    "fashion_mnist/sgd-b32": Task("mnist", (*FASHION, *SGD, "train.batch_size=32"), (3e-3, 3.0), "held-out",
                                  about="SGD, batch 32"),
    # added after every rule and threshold was set, to test the unfrozen sweep found on finetune/frozen
    "finetune/fashion5": Task("folder", ("train.batch_size=64", "train.freeze_epochs=1", "train.epochs=3",
                                         "optim.lr_mult=100"), (1e-3, 1.0), "later", "fashion5",
                              "fastai's fine_tune within the domain (a body trained on clothes 0-4, clothes 5-9): "
                              "the whole network's range test (onecycle's rules), the head's (fastai's)"),
}
QUICK = ("data.train_size=2000", "data.valid_size=500", "train.epochs=1")  # --quick: a smoke run, not evidence
SMOKE = ("data.train_size=256", "data.valid_size=64", "train.epochs=1", "train.batch_size=16", "find.num_it=30")
SIZES = {"full": (), "quick": QUICK, "smoke": SMOKE}  # the overrides of each size of run, journalled apart
PER_DECADE = 3  # grid points a decade: 2.15x apart



# ------------------------------------------------------------------------------------------------
# fastai 2.8.12's suggestion rules (fastai/callback/schedule.py), re-implemented line for line on
# float32 tensors as fastai holds them, and the view of a curve that its `Learner.lr_find` reads


def fastai_smooth(losses: list[float], beta: float = 0.98) -> torch.Tensor:
    """fastai's Recorder.losses: `AvgSmoothLoss(beta=0.98)`, a bias-corrected EMA kept in float32
    (`val = torch.lerp(loss, val, beta)`, value `val / (1 - beta**count)`)."""
    val, out = torch.tensor(0.), []
    for count, loss in enumerate(torch.tensor(losses, dtype=torch.float32), start=1):
        val = torch.lerp(loss, val, beta)
        out.append(val / (1 - beta ** count))
    return torch.stack(out) if out else torch.zeros(0)


def fastai_view(lrs: list[float], losses: list[float], num_it: int, stop: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(lrs, smoothed losses) as fastai's `lr_find` passes them to its suggestion functions.

    `losses` are one sweep's raw losses, up to and including the step where it stopped. fastai
    smooths them itself, drops the first num_it // 10 points and the last 5 (`recorder.lrs[num_it//10:-5]`),
    and cuts the rest at its first NaN. Its stop rule (smoothed loss > 4x the best) is onecycle's,
    so a sweep that stopped on divergence or at num_it holds the points fastai's would; after a
    NaN loss fastai does not stop (NaN > 4 * best is false) but records NaN until num_it, so the
    curve is padded with NaN there (onecycle stops at the NaN). The lrs are where each loss was
    measured (onecycle's sweep: start * (end/start) ** (i / (num_it - 1)); fastai's own sweep puts
    step i at i / num_it, 1% of a decade apart in the middle).
    """
    if stop == "non-finite":
        losses = list(losses) + [math.nan] * (num_it - len(losses))
        lrs = list(lrs) + [math.nan] * (num_it - len(lrs))
    smooth = fastai_smooth(losses)
    lrs_t, losses_t = torch.tensor(lrs[num_it // 10:-5], dtype=torch.float32), smooth[num_it // 10:-5]
    nan_idxs = torch.nonzero(torch.isnan(losses_t.view(-1)))
    if len(nan_idxs) > 0:
        drop_idx = min(nan_idxs)
        lrs_t, losses_t = lrs_t[:drop_idx], losses_t[:drop_idx]
    return lrs_t, losses_t


def fastai_valley(lrs: torch.Tensor, losses: torch.Tensor) -> float:
    """The longest valley: the longest decreasing subsequence of the smoothed loss, read as if it
    were a run of consecutive points; the LR 1/3 + 1/6 of the way along it."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def fastai_slide(lrs: torch.Tensor, losses: torch.Tensor, lr_diff: int = 15, thresh: float = .005,
                 adjust_value: float = 1.) -> float:
    """Walk a window of lr_diff points left from the end until the gradient at its two ends agrees."""
    loss_grad = np.gradient(losses.numpy())
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while (l_idx >= -len(losses)) and (abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh):
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(local_min_lr) * adjust_value


def fastai_minimum(lrs: torch.Tensor, losses: torch.Tensor) -> float:
    """A tenth of the LR at the lowest smoothed loss."""
    return lrs[losses.argmin()].item() / 10


def fastai_steep(lrs: torch.Tensor, losses: torch.Tensor) -> float:
    """The LR where the smoothed loss falls fastest against log(lr)."""
    grads = (losses[1:] - losses[:-1]) / (lrs[1:].log() - lrs[:-1].log())
    return lrs[grads.argmin()].item()


FASTAI = {"valley": fastai_valley, "slide": fastai_slide, "minimum": fastai_minimum, "steep": fastai_steep}


def fastai_suggestions(lrs: list[float], losses: list[float], num_it: int, stop: str) -> dict[str, dict]:
    """Each fastai rule's LR on one sweep, or the error fastai itself would raise on it."""
    view = fastai_view(lrs, losses, num_it, stop)
    out = {}
    for name, rule in FASTAI.items():
        try:
            out[name] = {"lr": rule(*view)}
        except (IndexError, RuntimeError) as e:  # a curve too short for the rule: fastai raises the same
            out[name] = {"lr": None, "note": f"fastai raises {type(e).__name__}: {e}"}
    return out


# ------------------------------------------------------------------------------------------------
# the work: range tests and fits through onecycle's own functions, one JSON line each


QUIET = Display(enabled=False)


def task_config(task: str, seed: int, extra: list[str], size: str, max_lr: float | None = None):
    t = TASKS[task]
    # the threads this worker was given (--threads, --thread-study), not onecycle's own choice for the model
    sets = [*t.sets, *extra, f"train.seed={seed}", "train.device=cpu", f"train.threads={torch.get_num_threads()}",
            *SIZES[size]]
    if max_lr is not None:
        sets.append(f"schedule.max_lr={max_lr!r}")
    return resolve(t.preset, sets, environ={}).config


def data_at_hand(task: str, data: Path) -> bool:
    t = TASKS[task]
    if t.data != "builtin":
        return suggest_data.at_hand(t.data, data)
    dataset = resolve(t.preset, list(t.sets), environ={}).config.data.dataset
    return dataset not in suggest_data.RAW or (data / suggest_data.RAW[dataset] / "raw").is_dir()


def fine_tune(task: str) -> bool:
    """A fine_tune task (a frozen cycle on the head, then the whole network), which `find` sweeps whole."""
    return sweeps_fine_tune(resolve(TASKS[task].preset, list(TASKS[task].sets), environ={}).config)


def our_sweep(task: str) -> str | None:
    """The journalled sweep that onecycle's `find` makes of a task: a fine_tune's whole network ("unfrozen")
    since issue 26, else the task's one sweep."""
    return "unfrozen" if fine_tune(task) else None


def sweeps_of(task: str) -> list[str | None]:
    return list(dict.fromkeys([None, our_sweep(task)]))


def run_range_test(task: str, seed: int, extra: list[str], size: str, unfrozen: bool = False) -> dict:
    """`onecycle find --seed SEED`: the curve and the suggestions that onecycle made of it then. A fine_tune task's
    first sweep is of the head alone (`find --freeze`, as fastai's lr_find after freeze()); `unfrozen`, its sweep
    over the whole network, as its second cycle trains it (as `find` sweeps it; train.freeze_epochs 0 gives the
    same curve, which the journal's first such records were taken with)."""
    sets = ["train.freeze_epochs=0"] if unfrozen else ["find.freeze=true"] if fine_tune(task) else []
    cfg = task_config(task, seed, [*extra, *sets], size)
    pipe = build_pipeline(cfg)
    curve = range_test(pipe, cfg, QUIET, StopFlag())
    return {"kind": "curve", "task": task, "seed": seed, "threads": torch.get_num_threads(), "stop": curve.stop,
            "frozen": sweeps_frozen(cfg), **({"sweep": "unfrozen"} if unfrozen else {}),
            "stop_lr": curve.stop_lr, "num_it": cfg.find.num_it, "start_lr": cfg.find.start_lr,
            "end_lr": cfg.find.end_lr, "beta": cfg.find.beta, "seconds": round(curve.seconds, 3),
            "suggestions": {f"onecycle:{k}": {"lr": s.lr} for k, s in curve.suggestions.items()},
            "lrs": curve.lrs, "losses": curve.losses}


def run_fit(task: str, seed: int, max_lr: float, extra: list[str], size: str) -> dict:
    """`onecycle train --seed SEED --max-lr MAX_LR`, every cycle of it (fine_tune: frozen, then unfrozen),
    without the run directory: its final accuracy."""
    cfg = task_config(task, seed, extra, size, max_lr)
    pipe = build_pipeline(cfg)
    opt = build_optimizer(cfg.optim, pipe.groups, cfg.schedule.max_lr, fused=pipe.fused)
    state = LoopState()
    started = time.perf_counter()
    try:
        for index, cycle in enumerate(cycles(cfg, len(pipe.groups))):
            state.cycle = index
            fit(pipe, NullRunDir(), QUIET, StopFlag(), state, opt, start_cycle(pipe, opt, cycle), None,
                lambda s: None, (), cycle)
        accuracy, diverged = state.last["accuracy"], False
    except Diverged:  # what `onecycle train` leaves behind: a model that predicts nothing useful
        accuracy, diverged = evaluate(pipe)[1], True
    return {"kind": "fit", "task": task, "seed": seed, "max_lr": max_lr, "accuracy": accuracy,
            "diverged": diverged, "classes": len(class_names(pipe.ds)), "threads": torch.get_num_threads(),
            "seconds": round(time.perf_counter() - started, 2)}


def grid_lr(task: str, k: int) -> float:
    """Grid point k: the first grid is k = 0 .. n, and an extension goes on past either end."""
    return TASKS[task].grid[0] * 10 ** (k / PER_DECADE)


def first_grid(task: str, size: str) -> list[int]:
    lo, hi = TASKS[task].grid
    n = round(math.log10(hi / lo) * PER_DECADE)
    return {"full": list(range(n + 1)), "quick": [0, n // 3, 2 * n // 3, n], "smoke": [0, n]}[size]


def same_lr(a: float, b: float) -> bool:
    # fastai holds LRs in float32: its pick of the same recorded point differs from ours in the 8th digit
    return abs(a / b - 1) < 1e-6


# keys that change no loss and no accuracy: a record made before they changed still holds
INERT = {("data", "root"), ("data", "download"), ("data", "cache"), ("find", "suggest"), ("train", "log_every"),
         ("run", "root"), ("model", "init"), ("train", "threads")}  # threads: journalled in each record instead
# keys the config gained after a journal was taken, at the value that trains as the config did before them: dropped
# from the fingerprint at that value, so that the committed journal (docs/benchmarks.md) still reads
AS_BEFORE = {("train", "ema"): None, ("train", "accum_steps"): 1, ("run", "log"): []}


def fingerprint(task: str, size: str) -> str:
    """What a task's records depend on besides seed and max_lr: its resolved config, inert keys aside (the
    folder and the pretrained body are fixed by suggest_data's plan). A record made under other settings, or
    before a preset changed, is not reused."""
    cfg = task_config(task, 0, [], size, 1.0).model_dump(mode="json")
    for section, key in INERT:
        cfg[section].pop(key, None)
    for (section, key), value in AS_BEFORE.items():
        if cfg[section].get(key, value) == value:
            cfg[section].pop(key, None)
    plan = {"data": TASKS[task].data, "counts": suggest_data.COUNTS.get(size, {}).get(TASKS[task].data)}
    return f"{task}@" + hashlib.sha256(json.dumps([cfg, plan], sort_keys=True).encode()).hexdigest()[:12]


class Journal:
    """The JSONL file: every finished range test and fit, one line each, appended and flushed."""

    def __init__(self, path: Path, tasks: list[str], size: str):
        self.path = path
        self.prints = {t: fingerprint(t, size) for t in tasks}
        self.records: list[dict] = []
        if path.exists():
            text = path.read_text()
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill: that work is redone
                    continue
                if record.get("fingerprint") == self.prints.get(record.get("task")):
                    self.records.append(record)
            if text and not text.endswith("\n"):  # start the next record on a line of its own
                with path.open("a") as f:
                    f.write("\n")
        path.parent.mkdir(parents=True, exist_ok=True)

    def curve(self, task: str, seed: int, threads: int = 1, sweep: str | None = None) -> dict | None:
        return next((r for r in self.records if r["kind"] == "curve" and r["task"] == task and r["seed"] == seed
                     and r.get("threads", 1) == threads and r.get("sweep") == sweep), None)

    def curves(self, task: str, seed: int, threads: int = 1) -> tuple[dict | None, dict | None]:
        """(the sweep onecycle's rules read, the head's sweep fastai's read), as `rule_lrs` takes them."""
        return self.curve(task, seed, threads, our_sweep(task)), self.curve(task, seed, threads)

    def fit(self, task: str, seed: int, lr: float) -> dict | None:
        return next((r for r in self.records if r["kind"] == "fit" and r["task"] == task and r["seed"] == seed
                     and same_lr(r["max_lr"], lr)), None)

    def add(self, record: dict) -> dict:
        record["fingerprint"] = self.prints[record["task"]]
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        return record


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# every rule's LR on a recorded curve: onecycle's as the code now reads it, fastai's as fastai would


def read_again(curve: dict):
    """onecycle's suggestions, lag-free curve and reading of one journalled curve, by the code as it is now
    (a new rule applies to every recorded curve): `suggest` on its raw losses, as `find` would call it."""
    ema = smooth_losses(curve["losses"], curve.get("beta", 0.98))
    return suggest(curve["lrs"], curve["losses"], ema, curve["stop"], curve.get("frozen", False),
                   curve.get("sweep") == "unfrozen")


def rule_lrs(ours: dict, head: dict | None = None) -> dict[str, dict]:
    """{rule: {lr, note}}: onecycle's read again off the sweep `find` makes (`ours`), fastai's from fastai's view
    of the head's sweep where a fine_tune has one (`head`, as fastai's users run lr_find before fine_tune)."""
    found, _, _ = read_again(ours)
    out = {f"onecycle:{k}": {"lr": s.lr, "note": s.note} for k, s in found.items()}
    curve = head or ours
    theirs = fastai_suggestions(curve["lrs"], curve["losses"], curve["num_it"], curve["stop"])
    return {**out, **{f"fastai:{k}": v for k, v in theirs.items()}}


def rules_to_train(extra: list[str]) -> list[str]:
    """The rules whose suggestions are trained exactly: the default, basin (the rule tried against it), the default
    before it, the old default and fastai's best; the others are read off each seed's grid (interpolated in log LR,
    which misjudged basin by 4.9 points on the noisiest task before it was trained)."""
    return list(dict.fromkeys([f"onecycle:{FindConfig().suggest}", "onecycle:basin", "onecycle:slide",
                               "onecycle:valley", "fastai:minimum", *extra]))


# ------------------------------------------------------------------------------------------------
# the work, on a pool of processes: range tests and grid fits first, then the rules' suggestions


class Work:
    def __init__(self, journal: Journal, workers: int, threads: int, size: str):
        self.journal, self.size = journal, size
        context = multiprocessing.get_context("spawn")  # torch in a fork of a process that ran torch can hang
        self.pool = ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads,
                                        initargs=(threads,))

    def run(self, jobs: list[tuple]) -> None:
        """Each job (fn, task, seed, [max_lr,] extra) not in the journal yet; each record journalled as it ends."""
        futures = [self.pool.submit(*job) for job in jobs]
        for future in as_completed(futures):
            r = self.journal.add(future.result())
            if r["kind"] == "curve":
                log(f"{r['task']} seed {r['seed']}: range test stopped ({r['stop']}) at {r['stop_lr']:.3g}")
            else:
                log(f"{r['task']} seed {r['seed']}: max_lr {r['max_lr']:.3e} -> {r['accuracy']:.4f}"
                    f"{' (diverged)' if r['diverged'] else ''} in {r['seconds']:.1f} s")

    def fits(self, task: str, todo: set[tuple[int, float]], extra: list[str]) -> None:
        """Fits at each (seed, max_lr) the journal does not hold yet (a rule without an LR skipped)."""
        self.run([(run_fit, task, s, lr, extra, self.size) for s, lr in sorted(todo)
                  if lr and self.journal.fit(task, s, lr) is None])

    def task(self, task: str, seeds: list[int], extra: list[str], trained: list[str]) -> None:
        j, size = self.journal, self.size
        ks = first_grid(task, size)
        jobs = [(run_range_test, task, s, extra, size, sweep == "unfrozen") for sweep in sweeps_of(task)
                for s in seeds if j.curve(task, s, sweep=sweep) is None]
        jobs += [(run_fit, task, s, grid_lr(task, k), extra, size) for k in ks for s in seeds
                 if j.fit(task, s, grid_lr(task, k)) is None]
        self.run(jobs)
        for _ in range(3 if size == "full" else 0):  # the best grid point must be inside the grid
            means = {k: statistics.fmean(j.fit(task, s, grid_lr(task, k))["accuracy"] for s in seeds) for k in ks}
            best = max(means, key=means.get)
            if min(ks) < best < max(ks):
                break
            new = [best - 1, best - 2] if best == min(ks) else [best + 1, best + 2]
            log(f"{task}: the best grid point {grid_lr(task, best):.3g} is at the grid's end: adding "
                + ", ".join(f"{grid_lr(task, k):.3g}" for k in new))
            ks = sorted(ks + new)
            self.run([(run_fit, task, s, grid_lr(task, k), extra, size) for k in new for s in seeds
                      if j.fit(task, s, grid_lr(task, k)) is None])
        todo = {(s, rule_lrs(*j.curves(task, s))[rule]["lr"]) for s in seeds for rule in trained}
        self.fits(task, todo, extra)

    def threads(self, task: str, seeds: list[int], extra: list[str], trained: list[str], threads: int) -> None:
        """The range test again at another thread count (CPU reductions reorder: the curve moves), and fits at
        the rules' suggestions on those curves."""
        j, size = self.journal, self.size
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=torch.set_num_threads, initargs=(threads,))
        sweep = our_sweep(task)  # the sweep `find` makes
        for s in seeds:
            if j.curve(task, s, threads, sweep) is None:
                r = j.add(pool.submit(run_range_test, task, s, extra, size, sweep == "unfrozen").result())
                log(f"{task} seed {s} at {threads} threads: range test stopped ({r['stop']}) at {r['stop_lr']:.3g}")
        pool.shutdown()
        todo = {(s, rule_lrs(j.curve(task, s, threads, sweep))[rule]["lr"]) for s in seeds for rule in trained}
        self.fits(task, todo, extra)

    def head(self, task: str, seeds: list[int], extra: list[str], trained: list[str]) -> None:
        """Fits (the fine_tune itself) at onecycle's rules read off the head's sweep, as `find` read it before."""
        todo = {(s, lr) for s in seeds for lr in head_lrs(self.journal.curve(task, s), trained).values()}
        self.fits(task, todo, extra)


# ------------------------------------------------------------------------------------------------
# the summary: best reachable accuracy per task, each rule's accuracy and regret


def seed_accuracy(journal: Journal, task: str, seed: int, lr: float, rows: list[dict], index: int) -> tuple[float, str]:
    """The accuracy of training at `lr` with `seed`: measured where that fit was run ("trained"), else read off
    that seed's grid, linear in log LR ("grid"; "grid end" past its ends)."""
    if (f := journal.fit(task, seed, lr)) is not None:
        return f["accuracy"], "trained"
    logs = np.log([r["max_lr"] for r in rows])
    accs = [r["accuracies"][index] for r in rows]
    edge = not logs[0] <= math.log(lr) <= logs[-1]
    return float(np.interp(math.log(lr), logs, accs)), "grid end" if edge else "grid"


def summarize_task(journal: Journal, task: str, seeds: list[int], size: str, threads: int = 1) -> dict | None:
    pairs = [journal.curves(task, s, threads) for s in seeds]
    if any(c is None for pair in pairs for c in pair):
        return None
    curves = [ours for ours, _ in pairs]
    rows = []
    for k in range(min(first_grid(task, size)) - 6, max(first_grid(task, size)) + 7):
        fits = [journal.fit(task, s, grid_lr(task, k)) for s in seeds]
        if all(fits):
            rows.append({"max_lr": grid_lr(task, k), "accuracy": statistics.fmean(f["accuracy"] for f in fits),
                         "accuracies": [f["accuracy"] for f in fits], "diverged": sum(f["diverged"] for f in fits)})
    if len(rows) < len(first_grid(task, size)):
        return None
    best = max(rows, key=lambda r: r["accuracy"])
    chance = 1 / journal.fit(task, seeds[0], rows[0]["max_lr"])["classes"]
    trains = [max(r["accuracies"][i] for r in rows) > chance + 0.05 for i in range(len(seeds))]
    rules = {}
    per_seed = [rule_lrs(*pair) for pair in pairs]
    for rule in per_seed[0]:
        lrs = [p[rule]["lr"] for p in per_seed]
        if any(lr is None or not lr > 0 for lr in lrs):
            rules[rule] = {"lrs": lrs, "accuracy": None, "regret": None, "note": "no suggestion on some seeds"}
            continue
        read = [seed_accuracy(journal, task, s, lr, rows, i) for i, (s, lr) in enumerate(zip(seeds, lrs))]
        accs = [a for a, _ in read]
        paired = [100 * (b - a) for a, b in zip(accs, best["accuracies"])]  # each seed against the best point
        rules[rule] = {"lrs": lrs, "accuracies": accs, "how": sorted({h for _, h in read}),
                       "accuracy": statistics.fmean(accs), "regret": 100 * (best["accuracy"] - statistics.fmean(accs)),
                       "regret_se": statistics.stdev(paired) / math.sqrt(len(paired)) if len(paired) > 1 else None,
                       "worst_seed_regret": max(100 * (best["accuracy"] - a) for a in accs),
                       "collapsed": sum(a <= chance + 0.05 and ok for a, ok in zip(accs, trains)),
                       "notes": sorted({p[rule]["note"] for p in per_seed if p[rule].get("note")})}
    minima = [read_again(c)[2].floor_lr for c in curves]
    return {"half": TASKS[task].half, "about": TASKS[task].about, "grid": rows,
            "best": {"max_lr": best["max_lr"], "accuracy": best["accuracy"]},
            "best_at_grid_edge": best is rows[0] or best is rows[-1], "chance": chance,
            "lag_free_minima": minima, "best_over_lag_free_minimum": [best["max_lr"] / m for m in minima],
            "stops": [c["stop"] for c in curves], "rules": rules}


def candidates(curve: dict) -> dict[str, float]:
    """Rules tried while choosing `floor`, each an LR read off one curve's trimmed lag-free loss: fractions of the
    floor's LR, the valley's floor (90% of the fall) scaled, the steepest lag-free fall, their geometric means,
    and fractions of where the loss climbs back above its start (the curve's end where it never does); then,
    while choosing `basin`, fractions of the middle and of the top of the basin around the floor."""
    lrs = np.asarray(curve["lrs"], float)
    _, lag_free, _ = read_again(curve)
    x, loss, _ = suggest_rules.trim(lrs[:len(lag_free)], np.asarray(lag_free))
    shape = suggest_rules.Shape.of(loss)
    m, v = x[shape.floor], x[suggest_rules.valley(x, loss)[0]]
    slopes = np.diff(loss[:shape.floor + 1]) / np.diff(np.log(x[:shape.floor + 1]))
    f = x[int(np.argmin(slopes))] if shape.floor >= 2 else x[0]
    back = np.flatnonzero(loss[shape.floor:] > shape.plateau)
    edge = x[shape.floor + back[0]] if len(back) else x[-1]
    out = {f"floor/{c}": m / c for c in (1, 1.5, 2, 3, 4, 5, 10)}
    out |= {f"valley*{c}": v * c for c in (0.5, 1, 2)} | {f"fall*{c}": f * c for c in (1, 2, 3)}
    out |= {"gm(fall,floor)": math.sqrt(f * m), "gm(valley,floor)": math.sqrt(v * m),
            "gm(fall,valley)": math.sqrt(f * v)}
    out |= {f"back/{c}": edge / c for c in (3, 10, 30)}
    for share in (0.05, 0.1, 0.2, 0.3):  # the basin around the floor, as suggest.basin reads it at BASIN = share
        lo, hi = shape.basin(loss, share)
        out |= {f"basin{share:g}/{c}": math.sqrt(x[lo] * x[hi]) / c for c in (1, 2, 3, 5)}
        out |= {f"basin{share:g}-top/{c}": x[hi] / c for c in (2, 4, 6, 10)}
    return out


def candidate_regrets(journal: Journal, tasks: dict[str, dict], seeds: list[int]) -> dict:
    """Each candidate's regret per task (read off each seed's grid), its mean and its worst, sorted by the worst: on
    each task's first sweep, the curves floor and basin were chosen on (a fine_tune's head, as `find` swept it then)."""
    per: dict[str, dict[str, float]] = {}
    for task, t in tasks.items():
        found = [candidates(journal.curve(task, s)) for s in seeds]
        for name in found[0]:
            accs = [seed_accuracy(journal, task, s, f[name], t["grid"], i)[0]
                    for i, (s, f) in enumerate(zip(seeds, found))]
            per.setdefault(name, {})[task] = 100 * (t["best"]["accuracy"] - statistics.fmean(accs))
    rows = {name: {"tasks": v, "mean": statistics.fmean(v.values()), "worst": max(v.values())}
            for name, v in per.items()}
    return dict(sorted(rows.items(), key=lambda kv: kv[1]["worst"]))


def overall(tasks: dict[str, dict]) -> dict:
    """Per rule over a set of tasks: mean regret, the worst task's, collapsed seeds; sorted by the mean."""
    out = {}
    for rule in next(iter(tasks.values()))["rules"]:
        rs = [t["rules"][rule] for t in tasks.values()]
        if any(r["regret"] is None for r in rs):
            continue
        worst = max(tasks, key=lambda name: tasks[name]["rules"][rule]["regret"])
        out[rule] = {"mean_regret": statistics.fmean(r["regret"] for r in rs),
                     "worst_regret": tasks[worst]["rules"][rule]["regret"],
                     "worst_task": worst, "collapsed_seeds": sum(r["collapsed"] for r in rs),
                     "tasks_over_1_point": sum(r["regret"] > 1 for r in rs),
                     "trained": all(r["how"] == ["trained"] for r in rs)}
    return dict(sorted(out.items(), key=lambda kv: kv[1]["mean_regret"]))


HALVES = ("all", "dev", "held-out", "later")  # "all": the 12 tasks of the two halves, not the later ones


def in_half(task_half: str, half: str) -> bool:
    return task_half == half or (half == "all" and task_half != "later")


def summarize(journal: Journal, tasks: list[str], seeds: list[int], size: str) -> dict:
    out: dict = {"tasks": {}}
    for task in tasks:
        t = summarize_task(journal, task, seeds, size)
        if t is not None:
            out["tasks"][task] = t
    done = out["tasks"]
    out["complete_tasks"] = list(done)
    out["default_rule"] = FindConfig().suggest
    for half in HALVES:
        part = {k: v for k, v in done.items() if in_half(v["half"], half)}
        if part:
            out[f"rules_{half}"] = overall(part)
    if "rules_all" in out:
        mean = {r: v["mean_regret"] for r, v in out["rules_all"].items()}
        out["mean_regret"] = mean
        out["worst_regret"] = {r: v["worst_regret"] for r, v in out["rules_all"].items()}
        ours = {r.split(":")[1]: v for r, v in mean.items() if r.startswith("onecycle:")}
        out["best_onecycle_rule"] = min(ours, key=ours.get) if ours else None
        out["default_is_best_onecycle_rule"] = out["best_onecycle_rule"] == out["default_rule"]
    return out


def points(x: float) -> str:
    return "0.00" if round(x, 2) == 0 else f"{x:+.2f}"


def markdown(summary: dict) -> str:
    """The tables of docs/benchmarks.md: one per task, then every rule over the tasks."""
    lines = []
    for task, t in summary["tasks"].items():
        lines += [f"**{task}** ({t['half']}; {t['about']}): best grid point max_lr {t['best']['max_lr']:.3g}, "
                  f"{100 * t['best']['accuracy']:.2f}% (mean of seeds)"
                  + (" (at the grid's edge)" if t["best_at_grid_edge"] else "")
                  + f"; lag-free minima {', '.join(f'{m:.2g}' for m in t['lag_free_minima'])}", "",
                  "| rule | suggested max_lr (per seed) | accuracy | regret (points) | ± s.e. | worst seed | collapsed "
                  "| read |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for rule, r in t["rules"].items():
            if r["accuracy"] is None:
                lines.append(f"| {rule} | {r['note']} | | | | | | |")
                continue
            lrs = ", ".join(f"{v:.2g}" for v in r["lrs"])
            se = f"{r['regret_se']:.2f}" if r["regret_se"] is not None else ""
            lines.append(f"| {rule} | {lrs} | {100 * r['accuracy']:.2f}% | {points(r['regret'])} | {se} | "
                         f"{points(r['worst_seed_regret'])} | {r['collapsed'] or ''} | {', '.join(r['how'])} |")
        grid_row = ", ".join(f"{g['max_lr']:.2g}: {100 * g['accuracy']:.2f}" for g in t["grid"])
        lines += ["", f"grid (max_lr: mean accuracy %): {grid_row}", ""]
    for half in HALVES:
        rules = summary.get(f"rules_{half}")
        if not rules:
            continue
        tasks = [k for k, v in summary["tasks"].items() if in_half(v["half"], half)]
        lines += [f"**{half}** ({len(tasks)} tasks)", "",
                  "| rule | " + " | ".join(tasks) + " | mean regret | worst | collapsed seeds |",
                  "| --- " * (len(tasks) + 4) + "|"]
        for rule, v in rules.items():
            cells = [points(summary["tasks"][t]["rules"][rule]["regret"]) for t in tasks]
            lines.append(f"| {rule}{'' if v['trained'] else ' (grid)'} | " + " | ".join(cells)
                         + f" | **{points(v['mean_regret'])}** | {points(v['worst_regret'])} | "
                         f"{v['collapsed_seeds']} |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# optional: fastai itself replays every recorded sweep, to check the re-implementation above


def check_against_fastai(fastai_python: str, journal: Journal, tasks: list[str], seeds: list[int]) -> dict:
    """Feed each recorded sweep's raw losses to fastai's own `Learner.lr_find` (benchmarks/fastai_replay.py)
    and compare its four suggestions with `fastai_suggestions` on the same losses and fastai's own LRs."""
    curves = [c for t in tasks for s in seeds if (c := journal.curve(t, s))]
    sweeps = [(c.get("start_lr", 1e-7), c.get("end_lr", 10.0)) for c in curves]  # the presets' range
    payload = [{"losses": c["losses"], "num_it": c["num_it"], "start_lr": lo, "end_lr": hi}
               for c, (lo, hi) in zip(curves, sweeps)]
    p = subprocess.run([fastai_python, str(REPO / "benchmarks" / "fastai_replay.py")], input=json.dumps(payload),
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"fastai replay failed ({p.returncode}):\n{p.stderr[-2000:]}")
    theirs = json.loads(p.stdout.strip().splitlines()[-1])
    worst, disagree = 0.0, []
    for c, (lo, hi), fa in zip(curves, sweeps, theirs["suggestions"]):
        n = c["num_it"]
        lrs = [lo * (hi / lo) ** (i / n) for i in range(len(c["losses"]))]  # fastai's sweep: i / num_it
        ours = fastai_suggestions(lrs, c["losses"], n, c["stop"])
        for rule, lr in fa.items():
            rel = abs(ours[rule]["lr"] / lr - 1)
            worst = max(worst, rel)
            if rel > 1e-5:
                disagree.append({"task": c["task"], "seed": c["seed"], "rule": rule, "fastai": lr,
                                 "ours": ours[rule]["lr"]})
    return {"fastai": theirs["fastai"], "curves": len(curves), "suggestions": 4 * len(curves),
            "max_relative_difference": worst, "disagreements": disagree}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("ONECYCLE_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, help="the JSONL journal: rerun with the same file to continue (default "
                   f"{Path(tempfile.gettempdir()) / 'onecycle-suggest' / 'suggest.jsonl'}; --smoke: a fresh one); "
                   "the folders and the pretrained body are written beside it, in suggest-work/")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), help="default: every task whose data is at hand")
    p.add_argument("--half", choices=["dev", "held-out", "later"], help="only the tasks of one half (or those added "
                                                                       "later)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (from --first-seed)")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed: --first-seed 5 measures seeds no rule "
                                                             "was chosen on")
    p.add_argument("--train-rules", nargs="*", default=[], help="rules to train at exactly, besides "
                   + ", ".join(rules_to_train([])) + " (e.g. onecycle:minimum fastai:valley)")
    p.add_argument("--quick", action="store_true", help="smoke run: the bundled set only, 2,000 images, 1 epoch, "
                                                        "1 seed, 4 grid points (journalled apart from full runs)")
    p.add_argument("--workers", type=int, default=1, help="fits at once, each in its own process")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each worker (this machine's cores are "
                                                          "shared)")
    p.add_argument("--thread-study", type=int, metavar="N", help="also run each range test at N threads, and "
                                                                  "train the rules' suggestions on those curves")
    p.add_argument("--head-study", action="store_true", help="fine_tune tasks: also train at onecycle's rules read "
                                                                 "off the head's sweep (find --freeze), as find read "
                                                                 "them before issue 26")
    p.add_argument("--summary", action="store_true", help="only summarise what --out already holds")
    p.add_argument("--candidates", action="store_true", help="also the rules tried while choosing floor, each read "
                                                             "off the grids (not trained), sorted by the worst task")
    p.add_argument("--markdown", action="store_true", help="print the tables of docs/benchmarks.md, not JSON")
    p.add_argument("--fastai-python", help="a python with fastai 2.8 installed: replay every sweep through it")
    p.add_argument("--smoke", action="store_true", help="the smallest run of every step, in seconds: one task "
                                                        "(MNIST's where --data holds it), 256 images, 1 seed, 2 grid "
                                                        "points (journalled apart): a check, not evidence")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.quick and a.smoke:
        p.error("--quick or --smoke, not both")
    size = "smoke" if a.smoke else "quick" if a.quick else "full"
    if a.quick:
        a.seeds, a.tasks = 1, a.tasks or ["mnist_sample/adamw", "mnist_sample/sgd"]
    if a.smoke:
        a.seeds = 1
        a.tasks = a.tasks or ["mnist/adamw" if data_at_hand("mnist/adamw", a.data) else "mnist_sample/adamw"]
        a.out = a.out or Path(tempfile.mkdtemp(prefix="onecycle-suggest-smoke-")) / "suggest.jsonl"
    a.out = a.out or Path(tempfile.gettempdir()) / "onecycle-suggest" / "suggest.jsonl"
    unknown = [r for r in a.train_rules if r not in rule_names()]
    if unknown:
        p.error(f"--train-rules: no rule {', '.join(unknown)}; rules: {', '.join(rule_names())}")
    tasks = [t for t in (a.tasks or TASKS) if (a.half is None or TASKS[t].half == a.half)]
    tasks = [t for t in tasks if data_at_hand(t, a.data)]
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    trained = rules_to_train(a.train_rules)
    journal = Journal(a.out, tasks, size)
    started = time.time()
    if not a.summary:
        work = Work(journal, a.workers, a.threads, size)
        for task in tasks:
            extra = suggest_data.prepare(TASKS[task].data, a.data, a.out.parent / "suggest-work", size)
            work.task(task, seeds, extra, trained)
        for task in tasks if a.thread_study else ():
            extra = suggest_data.prepare(TASKS[task].data, a.data, a.out.parent / "suggest-work", size)
            work.threads(task, seeds, extra, trained, a.thread_study)
        for task in tasks if a.head_study else ():
            if fine_tune(task):
                extra = suggest_data.prepare(TASKS[task].data, a.data, a.out.parent / "suggest-work", size)
                work.head(task, seeds, extra, trained)
        work.pool.shutdown()
    summary = summarize(journal, tasks, seeds, size)
    if a.candidates:
        summary["candidates"] = candidate_regrets(journal, summary["tasks"], seeds)
    if a.head_study:
        summary["head_study"] = head_study(journal, tasks, seeds, size, trained)
    if a.thread_study:
        summary["thread_study"] = thread_study(journal, tasks, seeds, size, a.thread_study)
    if a.markdown:
        print(markdown(summary))
        return
    result = {"benchmark": "suggest", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": a.threads,
              "workers": a.workers, "quick": a.quick, **({"smoke": True} if a.smoke else {}), "seeds": seeds,
              "trained_rules": trained, "journal": str(a.out), "wall_seconds": round(time.time() - started, 1),
              **summary}
    if a.fastai_python:
        result["fastai_check"] = check_against_fastai(a.fastai_python, journal, tasks, seeds)
    print(json.dumps(result))


def rule_names() -> list[str]:
    return [f"onecycle:{r}" for r in RULES] + [f"fastai:{r}" for r in FASTAI]


def head_lrs(curve: dict, trained: list[str]) -> dict[str, float]:
    """The LRs onecycle's trained rules read off a fine_tune's sweep of the head alone."""
    return {rule: v["lr"] for rule, v in rule_lrs(curve).items() if rule in trained and rule.startswith("onecycle:")}


def head_study(journal: Journal, tasks: list[str], seeds: list[int], size: str, trained: list[str]) -> dict:
    """Per fine_tune task: onecycle's rules read off the head's sweep (`find --freeze`; what `find` read before
    issue 26) instead of the whole network's, each trained, and their regret against the task's best grid point."""
    out = {}
    for task in filter(fine_tune, tasks):
        curves = [journal.curve(task, s) for s in seeds]
        t = summarize_task(journal, task, seeds, size)
        if t is None or any(c is None for c in curves):
            continue
        found = [head_lrs(c, trained) for c in curves]
        rules = {}
        for rule in found[0]:
            fits = [journal.fit(task, s, f[rule]) for s, f in zip(seeds, found)]
            if all(fits):
                accuracy = statistics.fmean(f["accuracy"] for f in fits)
                rules[rule] = {"lrs": [f[rule] for f in found], "accuracy": accuracy,
                               "regret": 100 * (t["best"]["accuracy"] - accuracy)}
        out[task] = {"best": t["best"], "default_regret": t["rules"][f"onecycle:{FindConfig().suggest}"]["regret"],
                     "rules": rules}
    return out


def thread_study(journal: Journal, tasks: list[str], seeds: list[int], size: str, threads: int) -> dict:
    """How far the default's suggestion moves when the range test runs at `threads` threads instead of one, and
    how far that moves the accuracy (each trained)."""
    rule = f"onecycle:{FindConfig().suggest}"
    out = {}
    for task in tasks:
        sweep = our_sweep(task)
        pairs = [(journal.curve(task, s, 1, sweep), journal.curve(task, s, threads, sweep)) for s in seeds]
        if any(a is None or b is None for a, b in pairs):
            continue
        one = [rule_lrs(a)[rule]["lr"] for a, _ in pairs]
        many = [rule_lrs(b)[rule]["lr"] for _, b in pairs]
        fits = [(journal.fit(task, s, x), journal.fit(task, s, y)) for s, x, y in zip(seeds, one, many)]
        ratios = [y / x for x, y in zip(one, many)]
        out[task] = {"lrs_1_thread": one, f"lrs_{threads}_threads": many, "ratios": ratios,
                     "largest_ratio": max(max(ratios), 1 / min(ratios)),
                     "accuracy_change_points": [100 * (fy["accuracy"] - fx["accuracy"]) for fx, fy in fits]
                     if all(fx and fy for fx, fy in fits) else None}
    return out


if __name__ == "__main__":
    main()
