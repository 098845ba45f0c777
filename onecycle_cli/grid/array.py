"""A grid as a job array, with no parent process: `onecycle grid ... --count` says N; then
`onecycle grid ... --index K --grid-dir DIR` runs member K alone, once for each K in 0..N-1
(`sbatch --array=0-$((N-1))` with `--index slurm`, which reads SLURM_ARRAY_TASK_ID); and
`onecycle grid --collect DIR` rebuilds the table and the picture from whatever members are there.

The grid directory is made by whichever task arrives first. grid.json is read, changed and
rewritten whole under an flock of DIR/.grid-lock, held for the milliseconds that takes (and for
the redraw of grid.png and report.html when a member ends), never while a member trains, so 16
tasks starting in the same second write one consistent grid. Every
task checks that DIR holds the grid it was given (the same spec) before it touches it.

SIGUSR1 (what `sbatch --signal=USR1@90` sends before the time limit) and SIGUSR2 (submitit's) are
passed to the member, which checkpoints and stops; the task exits 138 / 140, and the same command
with the same index continues the member from its checkpoint, bit-identically.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from pathlib import Path
from typing import Iterator

from ..display import Display
from ..errors import EXIT_DIVERGED, UsageError
from ..runs.directory import to_json
from ..runs.history import lock_held
from ..safe_files import read_json
from ..trackers import group
from . import launch, record, spec

LOCK = ".grid-lock"
# what must agree for two tasks to be members of one grid (parallel and argv may differ between them)
SAME = ("config", "sets", "flags", "vary", "seeds", "train_args")


def index_of(text: str, size: int) -> int:
    """`--index K` or `--index slurm` (SLURM_ARRAY_TASK_ID), checked against the grid's size."""
    given = text
    if text == "slurm":
        text = os.environ.get("SLURM_ARRAY_TASK_ID", "")
        if not text:
            raise UsageError("--index slurm: SLURM_ARRAY_TASK_ID is not set (run it in an sbatch --array job, "
                             "or give the index: --index K)")
    try:
        k = int(text)
    except ValueError:
        k = -1
    if not 0 <= k < size:
        source = f"SLURM_ARRAY_TASK_ID={text!r}" if given == "slurm" else f"--index {text!r}"
        raise UsageError(f"{source}: expected a member index from 0 to {size - 1} (this grid has {size} members; "
                         f"--count says so)")
    return k


def make_dir(path: Path) -> Path:
    """DIR made (with its parents) or found, never through a symbolic link: a link planted where the grid
    goes would send every member's record elsewhere."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--grid-dir {path}: exists and is not a directory") from None
    except OSError as e:
        raise UsageError(f"--grid-dir {path}: cannot be created ({e.strerror})") from None
    if not stat.S_ISDIR(os.lstat(path).st_mode):  # the directory itself, not a link to one
        raise UsageError(f"--grid-dir {path}: is a symbolic link; give the directory itself")
    return path


@contextlib.contextmanager
def locked(folder: Path, name: str = LOCK, wait: bool = True) -> Iterator[None]:
    """FOLDER/NAME held exclusively: DIR/.grid-lock around every read-change-write of grid.json by a task
    (held for milliseconds: waited for), members/<k>.task for as long as a task runs member k (not waited
    for: a second task on the same member is refused). The kernel frees either if its holder dies."""
    path = folder / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        what = "a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise UsageError(f"--grid-dir {folder}: {name} cannot be opened ({what})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"--grid-dir {folder}: {name} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UsageError(f"--grid-dir {folder}: {name} is held: another task is running this member "
                             f"now") from None
        yield
    finally:
        os.close(fd)


def task_lock(k: int) -> str:
    return f"{k}.task"


def read_grid(grid_dir: Path, flag: str) -> dict | None:
    """grid.json, or None where there is none yet; anything else there is refused."""
    if not (grid_dir / "grid.json").exists() and not (grid_dir / "grid.json").is_symlink():
        return None
    grid = read_json(grid_dir / "grid.json")
    if not record.is_grid(grid):
        raise UsageError(f"{flag} {grid_dir}: its grid.json is not one onecycle grid wrote")
    return grid


def differences(mine: dict, theirs: dict) -> list[str]:
    """The parts of two specs that differ, compared as grid.json keeps them (tuples read back as lists)."""
    mine = json.loads(to_json(mine))
    return [k for k in SAME if mine.get(k) != theirs.get(k)]


def not_under_a_parent(grid_dir: Path, flag: str) -> None:
    """A grid that a parent (`onecycle grid` without --index) is running is that parent's to write."""
    if (grid_dir / ".lock").is_file() and lock_held(grid_dir):
        raise UsageError(f"{flag} {grid_dir}: an `onecycle grid` parent is running this grid; its records are "
                         f"its own (wait for it, or stop it and use --resume)")


def status_of(grid: dict) -> str:
    """The grid's status from its members: running while one is, incomplete while some never ran, else the
    worst outcome (completed only when every member is)."""
    states = {m["status"] for m in grid["members"]}
    return "running" if "running" in states else "incomplete" if "pending" in states else record.worst(grid)


def save(grid_dir: Path, grid: dict, views: bool = False) -> list[str]:
    """grid.json, summary.json and grid.csv; with `views`, grid.png and report.html redrawn too (a second of
    matplotlib: only when a member has ended, not at every task's start)."""
    grid["status"] = status_of(grid)
    grid["wall_seconds"] = round(time.time() - grid.get("started_unix", time.time()), 3)
    record.write_records(grid_dir, grid)
    return record.write_views(grid_dir, grid) if views else []


def join(p: spec.Plan, grid_dir: Path, train_args: list[str], argv: list[str] | None, k: int,
         display: Display) -> tuple[dict, dict]:
    """Under the lock: the grid in DIR (made now if this task is the first), member k marked running."""
    mine = launch.new_grid(p, grid_dir, train_args, [], argv, 1)
    mine["started_unix"] = time.time()
    mine["launcher"] = "array"
    with locked(grid_dir):
        grid = read_grid(grid_dir, "--grid-dir")
        if grid is None:
            grid = mine
        else:
            differ = differences(mine["spec"], grid["spec"])
            if differ or len(grid["members"]) != p.size:
                raise UsageError(f"--grid-dir {grid_dir}: it holds another grid (its {', '.join(differ) or 'size'} "
                                 f"differ from this command's); give each grid its own directory")
        problem = group.open_group(grid, p.resolved.config.run.log)  # the first task makes the grid's run
        m = grid["members"][k]
        if m["status"] == "running":
            launch.reconcile(grid, m)  # a task killed outright leaves its member running: refused if still alive
        if m["status"] not in record.FINAL:
            m["attempts"] += 1
            m["status"] = "running"
        save(grid_dir, grid)
    if problem:
        display.warn(problem)
    return grid, m


def run_index(p: spec.Plan, grid_dir: Path, train_args: list[str], argv: list[str] | None, k: int,
              display: Display) -> int:
    """Member k alone, into the shared grid directory; its exit code (0, 3, 1, or 130/143/138/140 when a
    signal stopped it: run the same command again to continue it)."""
    grid_dir = make_dir(grid_dir).absolute()
    not_under_a_parent(grid_dir, "--grid-dir")
    members_dir = grid_dir / "members"
    members_dir.mkdir(exist_ok=True)
    if members_dir.is_symlink():
        raise UsageError(f"--grid-dir {grid_dir}: members is a symbolic link; not writing through it")
    with locked(members_dir, task_lock(k), wait=False):  # until its outcome is recorded: --collect waits on it
        grid, m = join(p, grid_dir, train_args, argv, k, display)
        if m["status"] in record.FINAL:
            display.print(f"member {k} of {grid_dir}: already {m['status']}, nothing to run", markup=False)
            return EXIT_DIVERGED if m["status"] == "diverged" else 0
        return run_member(grid, grid_dir, m, display)


def run_member(grid: dict, grid_dir: Path, m: dict, display: Display) -> int:
    k, members_dir = m["index"], grid_dir / "members"
    member_args = launch.member_argv(grid, m)
    resumed = member_args[1] == "--resume"
    display.print(f"member {k} ({launch.label(m)}): {'continuing ' + m['run_dir'] if resumed else 'starting'}; "
                  f"log: {members_dir / f'{k}.log'}", markup=False)
    started = time.time()
    with launch.Forwarder() as stop:
        proc = launch.spawn(member_args, grid["cwd"], launch.member_env(0, 1, [], grid), members_dir / f"{k}.json",
                            members_dir / f"{k}.log")
        stop.add(proc)
        with locked(grid_dir):  # the pid, for a later task to find its run directory should this one be killed
            grid = read_grid(grid_dir, "--grid-dir")
            grid["members"][k].update(pid=proc.pid, resumed=grid["members"][k]["resumed"] + resumed)
            save(grid_dir, grid)
        rc = proc.wait()
        stop.remove(proc)
    with locked(grid_dir):
        grid = read_grid(grid_dir, "--grid-dir")
        m = grid["members"][k]
        launch.finish(grid, m, rc, started, members_dir)
        for problem in save(grid_dir, grid, views=True):
            display.warn(problem)
        if grid["status"] not in ("running", "incomplete"):  # this task ended the grid's last member
            if problem := group.close_group(grid, grid_dir):
                display.warn(problem)
    done = sum(x["status"] in record.FINAL for x in grid["members"])
    display.print(launch.member_line(grid, m, done), markup=False)
    if m["status"] == "interrupted":
        display.print(f"member {k}: checkpointed; the same command continues it", markup=False)
    if stop.signum:
        return stop.exit_code
    return rc if m["status"] == "interrupted" else launch.exit_code({"members": [m]})


def task_running(grid_dir: Path, k: int) -> bool:
    """A task is on member k now (it holds members/<k>.task): its outcome is not recorded yet."""
    return bool(lock_held(grid_dir / "members", task_lock(k)))


def collect(grid_dir: Path, display: Display) -> tuple[dict, int]:
    """--collect DIR: each member's state from its run directory where grid.json lost track of it, then every
    view rebuilt; the grid and its exit code (0 / 3 / 1 as a grid's, 1 while members are missing)."""
    if not grid_dir.is_dir() or grid_dir.is_symlink():
        raise UsageError(f"--collect {grid_dir}: no such grid directory")
    grid_dir = grid_dir.absolute()
    not_under_a_parent(grid_dir, "--collect")
    with locked(grid_dir):
        grid = read_grid(grid_dir, "--collect")
        if grid is None:
            raise UsageError(f"--collect {grid_dir}: not a grid directory (no grid.json written by onecycle grid)")
        for m in grid["members"]:
            if m["status"] == "running" and not task_running(grid_dir, m["index"]):
                with contextlib.suppress(UsageError):  # still training: left as running
                    launch.reconcile(grid, m)
        problems = save(grid_dir, grid, views=True)
    for problem in problems:
        display.warn(problem)
    return grid, launch.exit_code(grid)  # 1 while any member is not done, as for any unfinished member
