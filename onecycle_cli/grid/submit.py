"""A grid sent out through submitit: `onecycle grid ... --launcher slurm --slurm partition=gpu --slurm
timeout_min=240 --parallel 8` (the `slurm` extra: pip install "onecycle[slurm]").

The members go out as one job array (`AutoExecutor`, `map_array`, at most --parallel running at
once). Each array task runs `onecycle grid <the same grid> --index K --grid-dir DIR` in a process of
its own, so a member is recorded exactly as a hand-written `sbatch --array` job's would be
(array.py). Before a time limit or a preemption, submitit's signal (SIGUSR2) reaches `checkpoint`
below: the member is told to checkpoint (SIGUSR1), and submitit requeues the task, which then
continues the member from that checkpoint. `--launcher local` is submitit's local executor: real
processes on this machine, the same code path, what the tests run (one job per member there, `--parallel`
at a time: the local executor would start them all at once).

This process waits for the jobs, prints each member's line as it ends (each attempt: grid.json keeps
them), and rebuilds the grid's views at the end (`onecycle grid --collect DIR` does the same from
anywhere, should it be stopped).
SIGINT or SIGTERM cancels the jobs, which checkpoint as a stopped `train` does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..display import Display
from ..errors import OnecycleError, UsageError
from ..runs.directory import RunDir
from . import array, launch, record
from .command import Given

CLUSTERS = ("slurm", "local")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
# AutoExecutor's own names; any other --slurm key is SLURM's (partition, account, ...) and gets its prefix
GENERIC = {"name", "timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node",
           "stderr_to_stdout"}
LOCAL = {"timeout_min", "gpus_per_node", "visible_gpus", "tasks_per_node", "nodes", "signal_delay_s", "setup",
         "stderr_to_stdout"}


def stop_with_parent() -> None:
    """In the member's process before it starts (Linux): SIGTERM should the task that started it die, so that
    a task killed outright (submitit's local controller kills a cancelled task a second after its SIGINT;
    SLURM may too) leaves a member that checkpoints and stops, not one that trains on alone."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl (macOS): the SIGINT passed on in __call__ is all there is
        pass


class Member:
    """What each array task calls: `onecycle grid ... --index K --grid-dir DIR` as a child process."""

    def __init__(self, grid_args: list[str], cwd: str):
        self.grid_args = grid_args
        self.cwd = cwd
        self._proc: subprocess.Popen | None = None

    def __call__(self, k: int) -> int:
        self._proc = subprocess.Popen([sys.executable, "-m", "onecycle_cli", "grid", *self.grid_args,
                                       "--index", str(k)], cwd=self.cwd, stdin=subprocess.DEVNULL,
                                      preexec_fn=stop_with_parent)
        try:
            rc = self._proc.wait()
        except KeyboardInterrupt:  # a cancelled local job (submitit sends its task SIGINT, then SIGKILL)
            self._proc.send_signal(signal.SIGINT)  # the member checkpoints and stops, as in a Ctrl-C'd grid
            raise
        self._proc = None
        return rc

    def checkpoint(self, k: int):
        """submitit's warning before a time limit or preemption: the member checkpoints, then the task requeues."""
        from submitit.helpers import DelayedSubmission
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGUSR1)
            # waited for without reaping and without Popen.wait, whose lock __call__'s wait, interrupted by
            # this very signal handler, still holds (waiting on it here would never return)
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        return DelayedSubmission(Member(self.grid_args, self.cwd), k)

    def __getstate__(self) -> dict:
        return {"grid_args": self.grid_args, "cwd": self.cwd, "_proc": None}


def parameters(items: list[str], cluster: str) -> dict:
    """--slurm KEY=VALUE pairs, values read as YAML scalars (240 an int, true a bool). For SLURM, any key
    that is not one of AutoExecutor's own names is SLURM's and gets its prefix (partition: slurm_partition)."""
    from ..config import parse_scalar
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--slurm {item!r}: expected KEY=VALUE, e.g. --slurm partition=gpu")
        if cluster == "slurm" and key not in GENERIC and not key.startswith("slurm_"):
            key = f"slurm_{key}"
        elif cluster == "local" and key not in LOCAL:  # the local executor ignores what it does not know
            raise UsageError(f"--slurm {item!r}: the local executor takes {', '.join(sorted(LOCAL))}")
        out[key] = parse_scalar(text, f"--slurm {item}")
    return out


def executor(cluster: str, folder: Path, parallel: int, params: dict, name: str):
    """SLURM through AutoExecutor; local through LocalExecutor (whose own names, signal_delay_s among them,
    AutoExecutor does not pass on), with no time limit unless one is given (submitit's default is 2 minutes)."""
    try:
        import submitit
    except ImportError:
        raise UsageError(f"--launcher {cluster} needs submitit: pip install \"onecycle[slurm]\"") from None
    try:
        if cluster == "slurm":
            ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
            ex.update_parameters(name=name, slurm_array_parallelism=parallel, **params)
        else:
            ex = submitit.LocalExecutor(folder=str(folder))
            ex.update_parameters(**{"timeout_min": LOCAL_TIMEOUT_MIN, **params})
    except (NameError, ValueError, TypeError, AssertionError) as e:  # submitit names what it does not take
        raise UsageError(f"--slurm: {' '.join(str(e).split())[:300]}") from None
    except RuntimeError as e:  # no sbatch here
        raise UsageError(f"--launcher {cluster}: {' '.join(str(e).split())[:300]}") from None
    return ex


class Jobs:
    """The members' jobs. On SLURM one job array, which SLURM runs at most `parallel` at a time. On this
    machine (submitit's local executor starts every job it is given at once) one job per member, submitted
    as another ends, and torch's threads shared out among the `parallel` running, as a parent grid does."""

    def __init__(self, ex, member: Member, size: int, parallel: int, cluster: str):
        self.ex, self.member = ex, member
        self.parallel = parallel
        self.started: dict = {}
        self.waiting = list(range(size))
        self.cancelled = False
        if cluster == "slurm":
            self.started = dict(enumerate(ex.map_array(member, self.waiting)))
            self.waiting = []
            self.name = f"job array {str(self.started[0].job_id).split('_')[0]}" if self.started else "job array"
        else:
            self.name = "jobs"
            self.top_up()

    def top_up(self) -> None:
        """Jobs submitted for the next members while fewer than `parallel` run."""
        free = self.parallel - sum(not job.done() for job in self.started.values())
        if self.cancelled or free <= 0 or not self.waiting:
            return
        env = launch.member_env(0, min(self.parallel, len(self.started) + len(self.waiting)), [])
        with environ(OMP_NUM_THREADS=env["OMP_NUM_THREADS"]):  # what the local controller passes on
            while free > 0 and self.waiting:
                k = self.waiting.pop(0)
                self.started[k] = self.ex.submit(self.member, k)
                free -= 1

    def running(self) -> set[int]:
        """The members whose jobs have not ended, or not started yet."""
        self.top_up()
        return {k for k, job in self.started.items() if not job.done()} | set(self.waiting if not self.cancelled
                                                                               else [])

    def cancel(self) -> None:
        self.cancelled = True
        for job in self.started.values():
            job.cancel(check=False)

    def first_log(self) -> Path | None:
        return Path(self.started[min(self.started)].paths.stderr) if self.started else None


@contextlib.contextmanager
def environ(**values: str):
    """os.environ with `values` set, as it was afterwards."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launch_array(given: Given, cluster: str, slurm: list[str], parallel: int | None, grid_dir: Path | None,
                 display: Display) -> tuple[dict, int]:
    """Every member as one task of a submitit job array; the grid once they have all ended."""
    if cluster not in CLUSTERS:
        raise UsageError(f"--launcher {cluster!r}: expected slurm (a SLURM cluster) or local (this machine)")
    if given.around:
        raise UsageError("--launcher: a job array's members cannot wait for a range test; run `onecycle find` "
                         "once, then --vary schedule.max_lr=... around its suggestion")
    p = given.plan()
    params = parameters(slurm, cluster)
    if grid_dir is None:
        run = RunDir.create(p.resolved.config.run.root, "grid", p.resolved.name)
        run.close()  # the array tasks share DIR through its .grid-lock, not a parent's lock
        grid_dir = run.path
    grid_dir = array.make_dir(grid_dir).absolute()
    parallel = parallel or p.size
    ex = executor(cluster, grid_dir / "submitit", parallel, params, f"onecycle-grid-{p.resolved.name}")
    member = Member(given.grid_args() + ["--grid-dir", str(grid_dir)], os.getcwd())
    jobs = Jobs(ex, member, p.size, parallel, cluster)
    display.print(f"grid: {p.describe()} as {cluster} {jobs.name}, at most {parallel} at a time, in "
                  f"{grid_dir} (submitit's logs: {grid_dir / 'submitit'})", markup=False)
    with launch.Forwarder() as stop:
        said: set[tuple] = set()
        while True:
            if stop.signum and not jobs.cancelled:
                display.print(f"grid: {signal.Signals(stop.signum).name}: cancelling the jobs (each member "
                              f"checkpoints)", markup=False)
                jobs.cancel()
            waiting = jobs.running()
            if not waiting:  # a task whose job has ended may still be recording its member (after a cancel)
                waiting = {k for k in range(p.size) if array.task_running(grid_dir, k)}
            said |= say_ended(grid_dir, said, display)
            if not waiting:
                break
            time.sleep(0.5)
    if not (grid_dir / "grid.json").is_file():  # every task failed before it could join the grid
        first = jobs.first_log() or grid_dir / "submitit"
        raise OnecycleError(f"--launcher {cluster}: the jobs ended without running a member: "
                            f"{launch.last_line(first) or 'no message'} ({first})")
    grid, code = array.collect(grid_dir, display)
    say_ended(grid_dir, said, display)
    if grid["status"] == "incomplete":
        display.warn(f"some members never ran: see their jobs' logs in {grid_dir / 'submitit'}")
    return grid, (stop.exit_code if stop.signum else code)


def say_ended(grid_dir: Path, said: set[tuple], display: Display) -> set[tuple]:
    """Each attempt's line once it has ended, from the outcomes grid.json keeps: an interrupted attempt that
    submitit requeued is said even where the next attempt is running before this process looks."""
    grid = array.read_grid(grid_dir, "--launcher") if (grid_dir / "grid.json").is_file() else None
    if not grid:
        return set()
    done = sum(m["status"] in record.FINAL for m in grid["members"])
    new = set()
    for m in grid["members"]:
        for e in m.get("ended") or []:
            if not (isinstance(e, dict) and e.get("status") in launch.OUTCOMES and isinstance(e.get("attempt"), int)
                    and isinstance(e.get("wall_seconds"), (int, float))):
                continue
            if (m["index"], e["attempt"]) not in said | new:
                display.print(launch.member_line(grid, {**m, **e}, done), markup=False)
                new.add((m["index"], e["attempt"]))
    return new
