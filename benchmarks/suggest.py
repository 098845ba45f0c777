"""How good is each range-test suggestion, measured by training at it:
`OMP_NUM_THREADS=1 python benchmarks/suggest.py --data ../shared/data --out /tmp/suggest.jsonl`

For each task (a preset's dataset, model and epochs, with AdamW as the presets have it or SGD) and
each seed, one range test is run, exactly as `onecycle find --seed S` runs it, and eight rules read
its curve:
  onecycle  valley, steep, minimum, slide   (onecycle_cli/suggest.py, what `onecycle find` prints)
  fastai    valley, slide, minimum, steep   (fastai 2.8's formulas, re-implemented below, on the
            view of the same losses that fastai's `lr_find` would hand them: see `fastai_view`)
Then 1cycle fits, each as `onecycle train --seed S --max-lr X` trains it:
  - at every point of a log-spaced max_lr grid, for every seed: the grid point with the highest mean
    accuracy over the seeds is the best reachable accuracy of the task;
  - at each rule's suggestion of each seed's curve, with that seed (the curve, and so the suggestion,
    varies with the seed: a user runs `onecycle train --max-lr find --seed S`). The exact suggested
    LR is trained, not the nearest grid point.
A rule's regret on a task = the best grid mean - the mean accuracy at the rule's suggestions, in
percentage points; a negative regret means the rule found a better LR than any grid point. The
best grid mean is a maximum over noisy means, so it sits a little above the true optimum: every
rule's regret carries the same small upward bias, which does not change their order.

Every range test and every fit is appended to --out as one JSON line as soon as it ends, and a
rerun of the same command skips what the file already holds: an interrupted benchmark loses at most
the fit under way. Prints one JSON object (`--markdown`: the tables of docs/benchmarks.md instead).

    python benchmarks/suggest.py --quick       # smoke run: the bundled set, 2,000 images, 1 seed; under a minute
    python benchmarks/suggest.py --smoke       # the smallest run of every step, in seconds: one task (MNIST where
                                               # --data holds it, else the bundled set), 256 images, 1 seed, a
                                               # 30-step range test, 2 grid points; a fresh journal unless --out
    python benchmarks/suggest.py --data ../shared/data --out /tmp/suggest.jsonl   # 6 tasks x 5 seeds: 75 min here
    python benchmarks/suggest.py --data ../shared/data --out /tmp/suggest.jsonl --summary --markdown
    python benchmarks/suggest.py ... --summary --fastai-python /tmp/fastai/bin/python  # replay through fastai
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from onecycle_cli.config import FindConfig, resolve
from onecycle_cli.display import Display
from onecycle_cli.errors import Diverged
from onecycle_cli.fit import LoopState, evaluate, fit
from onecycle_cli.lr_find import range_test
from onecycle_cli.optim import build_optimizer
from onecycle_cli.pipeline import build_pipeline
from onecycle_cli.runs.directory import NullRunDir
from onecycle_cli.schedules import build_schedule
from onecycle_cli.signals import StopFlag

REPO = Path(__file__).resolve().parents[1]

# SGD as the CIFAR preset has it: momentum cycled 0.95 -> 0.85 -> 0.95 by 1cycle (held at 0.9 in the
# range test), weight decay 1e-4; BatchNorm and biases spared, as the MNIST presets spare them
SGD = ["optim.name=sgd", "optim.weight_decay=1e-4"]
FASHION = ["data.dataset=fashion_mnist"]  # the book's simple_cnn and recipe on Fashion-MNIST

# name: (preset, --set overrides, the max_lr grid's ends). Each grid spans the LRs that train at all:
# from a decade or more below the presets' values to past where 1cycle diverges or collapses.
TASKS: dict[str, tuple[str, list[str], tuple[float, float]]] = {
    "mnist_sample/adamw": ("mnist_sample", [], (1e-3, 1.0)),
    "mnist_sample/sgd": ("mnist_sample", SGD, (1e-2, 10.0)),
    "mnist/adamw": ("mnist", [], (1e-3, 1.0)),
    "mnist/sgd": ("mnist", SGD, (1e-2, 10.0)),
    "fashion_mnist/adamw": ("mnist", FASHION, (1e-3, 1.0)),
    "fashion_mnist/sgd": ("mnist", FASHION + SGD, (1e-2, 10.0)),
}
RAW = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # torchvision's folder of each set's idx files
QUICK = ["data.train_size=2000", "data.valid_size=500", "train.epochs=1"]  # --quick: a smoke run, not evidence
SMOKE = ["data.train_size=256", "data.valid_size=64", "train.epochs=1", "train.batch_size=32", "find.num_it=30"]
SIZES = {"full": [], "quick": QUICK, "smoke": SMOKE}  # the overrides of each size of run, journalled apart

ONECYCLE_RULES = ["valley", "steep", "minimum", "slide"]
FASTAI_RULES = ["valley", "slide", "minimum", "steep"]
RULES = [f"onecycle:{r}" for r in ONECYCLE_RULES] + [f"fastai:{r}" for r in FASTAI_RULES]


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


def task_config(task: str, seed: int, data: Path, size: str, max_lr: float | None = None):
    preset, sets, _ = TASKS[task]
    sets = [*sets, f"data.root={data}", f"train.seed={seed}", "train.device=cpu", *SIZES[size]]
    if max_lr is not None:
        sets.append(f"schedule.max_lr={max_lr!r}")
    return resolve(preset, sets, environ={}).config


def data_at_hand(task: str, data: Path) -> bool:
    dataset = task_config(task, 0, data, "full").data.dataset
    return dataset not in RAW or (data / RAW[dataset] / "raw").is_dir()


def run_range_test(task: str, seed: int, data: Path, size: str) -> dict:
    """`onecycle find --seed SEED`: the curve, onecycle's suggestions and fastai's on the same losses."""
    cfg = task_config(task, seed, data, size)
    pipe = build_pipeline(cfg)
    curve = range_test(pipe, cfg, QUIET, StopFlag())
    ours = {name: {"lr": s.lr, **({"note": s.note} if s.note else {})} for name, s in curve.suggestions.items()}
    theirs = fastai_suggestions(curve.lrs, curve.losses, cfg.find.num_it, curve.stop)
    return {"kind": "curve", "task": task, "seed": seed, "stop": curve.stop, "stop_lr": curve.stop_lr,
            "num_it": cfg.find.num_it, "start_lr": cfg.find.start_lr, "end_lr": cfg.find.end_lr,
            "seconds": round(curve.seconds, 3),
            "suggestions": {**{f"onecycle:{k}": v for k, v in ours.items()},
                            **{f"fastai:{k}": v for k, v in theirs.items()}},
            "lrs": curve.lrs, "losses": curve.losses}


def run_fit(task: str, seed: int, max_lr: float, data: Path, size: str) -> dict:
    """`onecycle train --seed SEED --max-lr MAX_LR`, without the run directory: its final accuracy."""
    cfg = task_config(task, seed, data, size, max_lr)
    pipe = build_pipeline(cfg)
    total = cfg.train.epochs * pipe.batches.steps_per_epoch
    opt = build_optimizer(cfg.optim, pipe.model, cfg.schedule.max_lr, fused=pipe.fused)
    sched = build_schedule(cfg.schedule, opt, total)
    state = LoopState()
    started = time.perf_counter()
    try:
        fit(pipe, NullRunDir(), QUIET, StopFlag(), state, opt, sched, None, lambda s: None, ())
        accuracy, diverged = state.last["accuracy"], False
    except Diverged:  # what `onecycle train` leaves behind: a model that predicts nothing useful
        accuracy, diverged = evaluate(pipe)[1], True
    return {"kind": "fit", "task": task, "seed": seed, "max_lr": max_lr, "accuracy": accuracy,
            "diverged": diverged, "seconds": round(time.perf_counter() - started, 2)}


def grid(task: str, points: int) -> list[float]:
    lo, hi = TASKS[task][2]
    return [float(v) for v in np.geomspace(lo, hi, points)]


def same_lr(a: float, b: float) -> bool:
    # fastai holds LRs in float32: its pick of the same recorded point differs from ours in the 8th digit
    return abs(a / b - 1) < 1e-6


# keys that change no loss and no accuracy: a record made before they changed still holds
INERT = {("data", "root"), ("data", "download"), ("find", "suggest"), ("train", "log_every"), ("run", "root")}


def fingerprint(task: str, size: str) -> str:
    """What a task's records depend on besides seed and max_lr: its resolved config, inert keys aside.
    A record made under other settings, or before a preset changed, is not reused."""
    cfg = task_config(task, 0, Path("data"), size, 1.0).model_dump(mode="json")
    for section, key in INERT:
        del cfg[section][key]
    return f"{task}@" + hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


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

    def curve(self, task: str, seed: int) -> dict | None:
        return next((r for r in self.records if r["kind"] == "curve" and r["task"] == task and r["seed"] == seed), None)

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


def run_task(task: str, seeds: list[int], points: int, data: Path, size: str, journal: Journal) -> None:
    curves = []
    for seed in seeds:
        record = journal.curve(task, seed)
        if record is None:
            record = journal.add(run_range_test(task, seed, data, size))
            log(f"{task} seed {seed}: range test stopped ({record['stop']}) at {record['stop_lr']:.3g}: "
                + ", ".join(f"{k} {v['lr']:.2e}" for k, v in record["suggestions"].items() if v["lr"]))
        curves.append(record)
    # every LR to train per seed: the grid, then each rule's suggestion on that seed's own curve
    todo = [(seed, lr) for lr in grid(task, points) for seed in seeds]
    todo += [(c["seed"], s["lr"]) for c in curves for s in c["suggestions"].values() if s["lr"]]
    for seed, lr in todo:
        if journal.fit(task, seed, lr) is None:
            record = journal.add(run_fit(task, seed, lr, data, size))
            log(f"{task} seed {seed}: max_lr {lr:.3e} -> {record['accuracy']:.4f}"
                f"{' (diverged)' if record['diverged'] else ''} in {record['seconds']:.1f} s")


# ------------------------------------------------------------------------------------------------
# the summary: best reachable accuracy per task, each rule's accuracy and regret


def summarize(journal: Journal, tasks: list[str], seeds: list[int], points: int) -> dict:
    out: dict = {"tasks": {}}
    regrets: dict[str, list[float]] = {r: [] for r in RULES}
    accuracies: dict[str, dict[str, list[float]]] = {r: {} for r in RULES}  # rule -> task -> one per seed
    for task in tasks:
        curves = [journal.curve(task, s) for s in seeds]
        if any(c is None for c in curves):
            continue
        rows = []
        for lr in grid(task, points):
            fits = [journal.fit(task, s, lr) for s in seeds]
            if all(fits):
                rows.append({"max_lr": lr, "accuracy": statistics.fmean(f["accuracy"] for f in fits),
                             "accuracies": [f["accuracy"] for f in fits], "diverged": sum(f["diverged"] for f in fits)})
        if len(rows) < points:
            continue
        trained = {rule: [journal.fit(task, c["seed"], c["suggestions"][rule]["lr"]) if c["suggestions"][rule]["lr"]
                          else "none" for c in curves] for rule in RULES}
        if any(f is None for fits in trained.values() for f in fits):
            continue  # still under way
        best = max(rows, key=lambda r: r["accuracy"])
        rules = {}
        for rule in RULES:
            lrs, fits = [c["suggestions"][rule]["lr"] for c in curves], trained[rule]
            if "none" in fits:
                rules[rule] = {"lrs": lrs, "accuracy": None, "regret": None, "note": "no suggestion on some seeds"}
                continue
            accuracy = statistics.fmean(f["accuracy"] for f in fits)
            regret = 100 * (best["accuracy"] - accuracy)
            regrets[rule].append(regret)
            accuracies[rule][task] = [f["accuracy"] for f in fits]
            rules[rule] = {"lrs": lrs, "lr_geomean": math.exp(statistics.fmean(math.log(v) for v in lrs)),
                           "accuracies": accuracies[rule][task], "accuracy": accuracy,
                           "diverged": sum(f["diverged"] for f in fits), "regret": regret}
        out["tasks"][task] = {"grid": rows, "best": {"max_lr": best["max_lr"], "accuracy": best["accuracy"]},
                              "best_at_grid_edge": best is rows[0] or best is rows[-1], "rules": rules}
    complete = [t for t in tasks if t in out["tasks"]]
    out["complete_tasks"] = complete
    if complete:
        mean = {r: statistics.fmean(v) for r, v in regrets.items() if len(v) == len(complete)}
        out["mean_regret"] = dict(sorted(mean.items(), key=lambda kv: kv[1]))
        out["worst_regret"] = {r: max(v) for r, v in regrets.items() if len(v) == len(complete)}
        ours = {r.split(":")[1]: v for r, v in mean.items() if r.startswith("onecycle:")}
        out["best_onecycle_rule"] = min(ours, key=ours.get) if ours else None
        out["default_rule"] = FindConfig().suggest
        out["default_is_best_onecycle_rule"] = out["best_onecycle_rule"] == out["default_rule"]
        out["versus_default"] = versus(accuracies, f"onecycle:{out['default_rule']}", complete, list(mean))
    return out


def versus(accuracies: dict, default: str, tasks: list[str], rules: list[str]) -> dict:
    """Each rule's mean regret minus the default's, from differences paired by task and seed (the same
    seed's range test and initial weights), and its standard error: per task the spread of the paired
    differences over the seeds, then the mean over tasks. |difference| under ~2 standard errors is
    within what other seeds could reverse."""
    out = {}
    for rule in rules:
        if rule == default or default not in rules:
            continue
        diffs = {t: [100 * (a - b) for a, b in zip(accuracies[default][t], accuracies[rule][t])] for t in tasks}
        n = len(next(iter(diffs.values())))
        var = sum(statistics.variance(d) / n for d in diffs.values()) if n > 1 else None  # one seed: no spread
        out[rule] = {"regret_minus_default": statistics.fmean(statistics.fmean(d) for d in diffs.values()),
                     "standard_error": math.sqrt(var) / len(tasks) if var is not None else None}
    return out


def points(x: float) -> str:
    return "0.00" if round(x, 2) == 0 else f"{x:+.2f}"


def markdown(summary: dict) -> str:
    """The tables of docs/benchmarks.md: one per task, then the mean regret of every rule."""
    lines = []
    for task, t in summary["tasks"].items():
        lines += [f"**{task}**: best grid point max_lr {t['best']['max_lr']:.3g}, "
                  f"{100 * t['best']['accuracy']:.2f}% (mean of seeds)"
                  + (" (at the grid's edge)" if t["best_at_grid_edge"] else ""), "",
                  "| rule | suggested max_lr (per seed) | accuracy | regret (points) |", "| --- | --- | --- | --- |"]
        for rule, r in t["rules"].items():
            if r["accuracy"] is None:
                lines.append(f"| {rule} | {r['note']} | | |")
                continue
            lrs = ", ".join(f"{v:.2g}" for v in r["lrs"])
            div = f" ({r['diverged']} diverged)" if r["diverged"] else ""
            lines.append(f"| {rule} | {lrs} | {100 * r['accuracy']:.2f}%{div} | {points(r['regret'])} |")
        grid_row = ", ".join(f"{g['max_lr']:.2g}: {100 * g['accuracy']:.2f}" for g in t["grid"])
        lines += ["", f"grid (max_lr: mean accuracy %): {grid_row}", ""]
    if summary.get("mean_regret"):
        tasks = summary["complete_tasks"]
        default = f"onecycle:{summary['default_rule']}"
        lines += ["| rule | " + " | ".join(tasks) + f" | mean regret | worst | minus {default} (± s.e.) |",
                  "| --- " * (len(tasks) + 4) + "|"]
        for rule, mean in summary["mean_regret"].items():
            cells = [points(summary["tasks"][t]["rules"][rule]["regret"]) for t in tasks]
            v = summary["versus_default"].get(rule)
            spread = f" ± {v['standard_error']:.2f}" if v and v["standard_error"] is not None else ""
            paired = f"{points(v['regret_minus_default'])}{spread}" if v else "(the default)"
            lines.append(f"| {rule} | " + " | ".join(cells) + f" | **{points(mean)}** | "
                         f"{points(summary['worst_regret'][rule])} | {paired} |")
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
                   f"{Path(tempfile.gettempdir()) / 'onecycle-suggest' / 'suggest.jsonl'}; --smoke: a fresh one)")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), help="default: every task whose data is at hand")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    p.add_argument("--grid-points", type=int, default=12)
    p.add_argument("--quick", action="store_true", help="smoke run: the bundled set only, 2,000 images, 1 epoch, "
                                                        "1 seed, 4 grid points (journalled apart from full runs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (this machine's cores are shared)")
    p.add_argument("--summary", action="store_true", help="only summarise what --out already holds")
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
        a.seeds, a.grid_points, a.tasks = 1, 4, a.tasks or ["mnist_sample/adamw", "mnist_sample/sgd"]
    if a.smoke:
        a.seeds, a.grid_points = 1, 2
        a.tasks = a.tasks or ["mnist/adamw" if data_at_hand("mnist/adamw", a.data) else "mnist_sample/adamw"]
        a.out = a.out or Path(tempfile.mkdtemp(prefix="onecycle-suggest-smoke-")) / "suggest.jsonl"
    a.out = a.out or Path(tempfile.gettempdir()) / "onecycle-suggest" / "suggest.jsonl"
    tasks = a.tasks or [t for t in TASKS if data_at_hand(t, a.data)]
    seeds = list(range(a.seeds))
    journal = Journal(a.out, tasks, size)
    started = time.time()
    if not a.summary:
        for task in tasks:
            run_task(task, seeds, a.grid_points, a.data, size, journal)
    summary = summarize(journal, tasks, seeds, a.grid_points)
    if a.markdown:
        print(markdown(summary))
        return
    result = {"benchmark": "suggest", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": a.threads,
              "quick": a.quick, **({"smoke": True} if a.smoke else {}), "seeds": seeds, "grid_points": a.grid_points,
              "journal": str(a.out),
              "wall_seconds": round(time.time() - started, 1), **summary}
    if a.fastai_python:
        result["fastai_check"] = check_against_fastai(a.fastai_python, journal, tasks, seeds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
