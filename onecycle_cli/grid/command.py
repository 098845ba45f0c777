"""What `onecycle grid` does with its flags, once the CLI has parsed them: one function per way of
running a grid (a parent running N members at a time, `--resume`, `--count`, `--index` of a job
array, `--collect`, `--launcher slurm|local` through submitit), and the lines it ends with.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..display import Display, fmt_pct, fmt_time, fmt_value
from ..errors import UsageError
from ..runs.directory import RunDir, to_json
from . import array, launch, spec, warm

# a member is `train` with the grid's flags; these three the range test of --around find does not take
TRAIN_ONLY = ("train.epochs", "schedule.name", "schedule.max_lr")


@dataclass
class Given:
    """A new grid as the command line gave it (every value already checked by spec.plan)."""

    config: str | None
    sets: list[str]
    flags: dict           # config key -> (flag, text) of the named flags
    vary: list[str]
    seeds: list[int]
    around: str | None
    factors: str | None
    argv: list[str] | None

    def plan(self) -> spec.Plan:
        return spec.plan(self.config, self.sets, self.flags, self.vary, self.seeds, self.around, self.factors)

    def common_args(self) -> list[str]:
        return ((["--config", self.config] if self.config else []) + [x for s in self.sets for x in ("--set", s)]
                + [x for key, (flag, value) in self.flags.items() if key not in TRAIN_ONLY for x in (flag, value)])

    def train_args(self) -> list[str]:
        return self.common_args() + [x for key, (flag, value) in self.flags.items() if key in TRAIN_ONLY
                                     for x in (flag, value)]

    def grid_args(self) -> list[str]:
        """The `onecycle grid` arguments that give this grid again (what each array task runs, plus --index)."""
        seeds = ["--seed", str(self.seeds[0])] if len(self.seeds) == 1 else ["--seeds", ",".join(map(str, self.seeds))]
        return self.train_args() + [x for v in self.vary for x in ("--vary", v)] + seeds


def start(given: Given, parallel: int | None, display: Display) -> tuple[dict, int]:
    """A new grid under the runs root, run by this process N members at a time."""
    p = given.plan()
    gpus = launch.visible_gpus(p.resolved.config.train.device)
    parallel = parallel or max(1, len(gpus))
    run = RunDir.create(p.resolved.config.run.root, "grid", p.resolved.name)
    try:
        grid = launch.new_grid(p, run.path, given.train_args(), given.common_args() + ["--seed", str(given.seeds[0])],
                               given.argv, parallel)
        each = f"{launch.cores() // parallel or 1} threads" + (f", one of GPUs {','.join(gpus)}" if gpus else "")
        display.print(f"grid: {p.describe()}, {parallel} at a time ({each} each), in {run.path}", markup=False)
        code = launch.execute(grid, run.path.absolute(), p, parallel, gpus, display)
    finally:
        run.close()
    return grid, code


def resume(path: Path, parallel: int | None, display: Display) -> tuple[dict, int]:
    """--resume GRID_DIR: what it has not completed, interrupted members from their checkpoints."""
    run, grid = launch.open_grid(path)
    try:
        grid["grid_dir"] = str(run.path.absolute())  # where it is now, should it have been moved
        p = launch.plan_of(grid)
        warm.prestart(launch.visible_gpus(p.resolved.config.train.device))
        launch.reconcile_all(grid)  # members a killed parent left behind: what their run directories say
        parallel = parallel or grid["spec"].get("parallel") or 1
        todo = (sum(m["status"] not in ("completed", "diverged") for m in grid["members"]) if grid["members"]
                else p.size)
        display.print(f"grid {path}: {todo} of {p.size} members to run, {parallel} at a time", markup=False)
        code = launch.execute(grid, Path(grid["grid_dir"]), p, parallel,
                              launch.visible_gpus(p.resolved.config.train.device), display)
    finally:
        run.close()
    return grid, code


def count(given: Given) -> int:
    """--count: the number of members, alone on stdout (for sbatch --array=0-$((N-1)))."""
    p = given.plan()
    sys.stdout.write(f"{p.size}\n")
    return 0


def index(given: Given, text: str, grid_dir: Path, display: Display) -> int:
    """--index K --grid-dir DIR: member K alone (a job array's task)."""
    if given.around:
        raise UsageError("--index: a job array's members cannot wait for a range test; run `onecycle find` once, "
                         "then --vary schedule.max_lr=... around its suggestion")
    p = given.plan()
    return array.run_index(p, grid_dir, given.train_args(), given.argv, array.index_of(text, p.size), display)


def say_findings(grid: dict, started: float, display: Display, as_json: bool) -> None:
    """The best point, the suggestion's regret, where everything is; grid.json on stdout with --json."""
    best = grid.get("best")
    if best:
        values = ", ".join(f"{k}={fmt_value(v)}" for k, v in best["values"].items()) or "the one point"
        display.print(f"best: {values}: accuracy {100 * best['mean']:.2f} ± {100 * best['std']:.2f}% "
                      f"(n={best['n']})", markup=False)
    if grid.get("suggestion") and grid.get("regret") is not None:
        display.print(f"the range test's suggestion {grid['suggestion']['lr']:.3g}: accuracy "
                      f"{fmt_pct(grid['suggestion_mean'])}, {grid['regret']:.2f} points below the best (regret)",
                      markup=False)
    display.print(f"grid: {grid['status']} in {fmt_time(time.time() - started)}: {grid['grid_dir']} "
                  f"(grid.json, grid.csv, grid.png, report.html)", markup=False)
    if as_json:
        sys.stdout.write(to_json(grid, indent=None) + "\n")
