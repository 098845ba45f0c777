"""Running a grid's members: `onecycle grid --config mnist_sample --vary train.epochs=1,2 --parallel 2`,
and `onecycle grid --resume runs/<timestamp>-grid-mnist_sample`.

Each member is its own `python -m onecycle_cli train ... --json` process (its values as --set, its
seed as --seed), so it is an ordinary run directory that `train` alone would have made, with the
same numbers. N run at a time: on CUDA each sees one GPU (CUDA_VISIBLE_DEVICES), and the CPU's
cores are shared out (OMP_NUM_THREADS = cores // N). A member's --json summary goes to
members/<k>.json and everything it says for people to members/<k>.log, not the terminal.

SIGINT and SIGTERM to the parent are passed on, once, to every running member, which checkpoints
and stops as `train` does; the parent records their states and exits 130 or 143. The members run
in their own sessions so that a Ctrl-C in the terminal reaches them only through the parent: from
both, a member would see two SIGINTs and stop at once instead of at the end of its step.
`--resume` continues an interrupted member with `train --resume <its run dir>` (bit-identical) and
starts the members never started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import signals
from ..display import Display, fmt_time
from ..errors import EXIT_DIVERGED, EXIT_ERROR, OnecycleError, UsageError
from ..runs.directory import RunDir, now_iso
from ..runs.history import lock_held
from ..safe_files import JSON_LIMIT, atomic_write_bytes, open_regular, read_json, read_regular
from ..safe_text import one_line
from ..trackers import group
from . import record, spec, warm

# a member stopped by a signal, checkpointed (128 + N) or killed by it before its handler was set (-N)
INTERRUPTED = {*signals.EXIT_CODES.values(), *(-s for s in signals.STOPS)}


def cores() -> int:
    """The cores this process may run on (a job scheduler's share, not the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def visible_gpus(device: str) -> list[str]:
    """The GPUs members can be given, without importing torch: CUDA_VISIBLE_DEVICES's list when set,
    else nvidia-smi's. None for a CPU run (train.device cpu) or a machine without them."""
    if device == "cpu":
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [g.strip() for g in listed.split(",") if g.strip()]
        return [] if ids and ids[0].startswith("-") else ids  # "-1" hides every GPU
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def member_env(slot: int, parallel: int, gpus: list[str], grid: dict | None = None) -> dict:
    env = {**os.environ, **group.member_env(grid)}  # the grid's tracker group, its MLflow run
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    # torch's threads: the cores shared out, or N members of cores threads each fight over every core; one
    # member alone (a job array's task) keeps the caller's choice
    if parallel > 1 or "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, cores() // parallel))
    return env


class Forwarder:
    """SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 to the parent, recorded and passed on once to every member running."""

    def __init__(self):
        self.signum: int | None = None
        self.children: dict[int, subprocess.Popen] = {}
        self.sent: set[int] = set()
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int:
        return signals.exit_code_of(self.signum)

    def _handle(self, signum, frame) -> None:
        self.signum = self.signum or signum
        for pid, proc in list(self.children.items()):
            self._send(pid, proc, signum)

    def _send(self, pid: int, proc: subprocess.Popen, signum: int) -> None:
        self.sent.add(pid)
        try:
            proc.send_signal(signum)
        except OSError:  # it has just ended
            pass

    def add(self, proc: subprocess.Popen) -> None:
        self.children[proc.pid] = proc
        if self.signum and proc.pid not in self.sent:  # a signal that came while it was starting
            self._send(proc.pid, proc, self.signum)

    def remove(self, proc: subprocess.Popen) -> None:
        self.children.pop(proc.pid, None)

    def __enter__(self) -> "Forwarder":
        self._previous = signals.install(self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signals.restore(self._previous)
        self._previous = {}


def spawn(argv: list[str], cwd: str, env: dict, out: Path, log: Path, forked: bool = False):
    """`python -m onecycle_cli ARGV` in its own session, stdout to `out`, stderr appended to `log`; with
    `forked`, forked from the warm server where there is one (warm.py: the same, 3 s sooner)."""
    if forked and warm.available():
        return warm.Member(argv, cwd, env, out, log)
    with open(out, "wb") as o, open(log, "ab") as e:
        return subprocess.Popen([sys.executable, "-m", "onecycle_cli", *argv], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=o, stderr=e, start_new_session=True)


def json_line(path: Path) -> dict:
    """The --json summary a child printed (its last line that is a JSON object), {} if none."""
    try:
        text = read_regular(path, JSON_LIMIT).decode("utf-8", "replace")
    except OSError:
        return {}
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def last_line(path: Path) -> str:
    try:
        lines = [s for s in read_regular(path, JSON_LIMIT).decode("utf-8", "replace").splitlines() if s.strip()]
    except OSError:
        return ""
    return one_line(lines[-1])[:300] if lines else ""


def run_of_pid(root: Path, pid: int) -> str | None:
    """The train run a member process made, found by the pid its meta.json records: for a member that
    ended without its summary (killed with -9), or whose parent was."""
    try:
        children = sorted(root.iterdir(), reverse=True)
    except OSError:
        return None
    for path in children:
        meta = read_json(path / "meta.json") if "-train-" in path.name else None
        if meta and meta.get("pid") == pid and meta.get("command") == "train":
            return str(path.absolute())
    return None


# ------------------------------------------------------------------------------------------------
# the grid


def new_grid(p: spec.Plan, grid_dir: Path, train_args: list[str], find_args: list[str], argv: list[str] | None,
             parallel: int) -> dict:
    """grid.json as it starts: the spec (enough for --resume) and the members, all pending."""
    grid = {"command": "grid", "status": "running", "grid_dir": str(grid_dir.absolute()), "config": p.resolved.name,
            "started": now_iso(), "argv": argv, "cwd": os.getcwd(),
            "runs_root": str(Path(p.resolved.config.run.root).expanduser().absolute()),
            "spec": {"config": p.config, "sets": p.sets, "flags": p.flags,
                     "vary": {v.key: v.texts for v in p.varies}, "seeds": p.seeds,
                     "around": {"factors": p.factors} if p.factors else None, "parallel": parallel,
                     "train_args": train_args, "find_args": find_args},
            "keys": [v.key for v in p.varies], "suggestion": None, "members": [], "wall_seconds": 0.0}
    set_members(grid, p.members)
    return grid


def set_members(grid: dict, members: list[spec.Member]) -> None:
    grid["members"] = [{"index": m.index, "values": m.values, "texts": m.texts, "seed": m.seed, "status": "pending",
                        "run_dir": None, "accuracy": None, "exit_code": None, "wall_seconds": None, "attempts": 0,
                        "resumed": 0, "pid": None, "error": None} for m in members]
    if members:
        grid["keys"] = list(members[0].texts)


def plan_of(grid: dict) -> spec.Plan:
    """The plan grid.json keeps, checked again as when it was given (for --resume)."""
    s = grid["spec"]
    flags = {k: tuple(v) for k, v in s["flags"].items()}
    factors = ",".join(repr(f) for f in s["around"]["factors"]) if s.get("around") else None
    return spec.plan(s["config"], s["sets"], flags, [f"{k}={','.join(texts)}" for k, texts in s["vary"].items()],
                     s["seeds"], "find" if factors else None, factors)


def member_argv(grid: dict, m: dict) -> list[str]:
    """What a member runs: its interrupted run continued, or a new run with its values and seed."""
    run = m.get("run_dir")
    if m["status"] in ("interrupted", "running") and run and (Path(run) / "checkpoints" / "last.pt").is_file():
        return ["train", "--resume", run, "--json"]
    sets = [x for k, t in m["texts"].items() for x in ("--set", f"{k}={t}")]
    return ["train", *grid["spec"]["train_args"], *sets, "--seed", str(m["seed"]), "--json"]


def finish(grid: dict, m: dict, rc: int, started: float, members_dir: Path) -> None:
    """A member's outcome from its exit code and its --json summary."""
    k = m["index"]
    summary = json_line(members_dir / f"{k}.json")
    run = summary.get("run_dir") if isinstance(summary.get("run_dir"), str) else None
    if run:
        m["run_dir"] = os.path.join(grid["cwd"], run) if not os.path.isabs(run) else run
    elif m.get("pid"):
        m["run_dir"] = run_of_pid(Path(grid["runs_root"]), m["pid"]) or m.get("run_dir")
    m["exit_code"] = rc
    m["status"] = ("completed" if rc == 0 else "diverged" if rc == EXIT_DIVERGED
                   else "interrupted" if rc in INTERRUPTED else "failed")
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    m["accuracy"] = final.get("accuracy") if m["status"] == "completed" else None
    m["wall_seconds"] = round((m.get("wall_seconds") or 0) + time.time() - started, 3)
    m["error"] = last_line(members_dir / f"{k}.log") if m["status"] == "failed" else None
    keep_output(members_dir / f"{k}.log", m.get("run_dir"))
    # every attempt's outcome kept: a requeued job array task's interruption is not lost to the next attempt
    m["ended"] = [*(m.get("ended") or [])[-(ENDED_LIMIT - 1):],
                  {"attempt": m["attempts"], **{f: m[f] for f in ENDED_FIELDS}}]


ENDED_FIELDS = ("status", "exit_code", "accuracy", "wall_seconds", "error")
ENDED_LIMIT = 100  # the last attempts' outcomes a member keeps (a task preempted again and again)
OUTPUT_LIMIT = 64 << 20  # what a member printed, every attempt: a train run prints a line an epoch


def keep_output(log: Path, run_dir: str | None) -> None:
    """What the member printed (every attempt so far), also in its own run directory as output.log."""
    if not run_dir:
        return
    with contextlib.suppress(OSError):  # a view of the log the grid keeps: never a reason to fail
        atomic_write_bytes(Path(run_dir) / "output.log", read_regular(log, OUTPUT_LIMIT))


def reconcile(grid: dict, m: dict) -> None:
    """A member its parent lost track of (the parent was killed): what its run directory says now."""
    if m["status"] != "running":
        return
    if not m.get("run_dir") and m.get("pid"):
        m["run_dir"] = run_of_pid(Path(grid["runs_root"]), m["pid"])
    if m.get("run_dir") and lock_held(Path(m["run_dir"])):  # a member that outlived its parent, still training
        raise UsageError(f"--resume: member {m['index']} is still running in {m['run_dir']} (pid {m['pid']}): "
                         f"wait for it to end, then resume the grid")
    summary = read_json(Path(m["run_dir"]) / "summary.json") if m.get("run_dir") else None
    if summary and summary.get("status") == "completed":
        final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
        m.update(status="completed", exit_code=0, accuracy=final.get("accuracy"))
    else:
        m["status"] = "interrupted"  # continued from its checkpoint if it has one, else started again


def reconcile_all(grid: dict) -> None:
    for m in grid["members"]:
        reconcile(grid, m)


def label(m: dict) -> str:
    """A member as people name it: its values and seed."""
    return ", ".join([*(f"{k}={t}" for k, t in m["texts"].items()), f"seed {m['seed']}"])


def tail_row(path: Path) -> dict:
    """The last complete row of a CSV log that is still being written, by its header's names ({} if none
    yet): its first and last 4 KB only, however long the run."""
    try:
        with open_regular(path) as f:
            head = f.readline(4096).decode("utf-8", "replace").strip()
            size = os.fstat(f.fileno()).st_size
            f.seek(max(f.tell(), size - 4096))
            lines = f.read(4096).decode("utf-8", "replace").split("\n")
    except OSError:
        return {}
    last = next((line for line in reversed(lines[:-1]) if line.strip()), "")  # the part after the last \n may be half
    names, values = head.split(","), last.split(",")
    return dict(zip(names, values)) if last and len(values) == len(names) else {}


def epochs_of(run_dir: Path) -> int | None:
    """train.epochs as the member's own config.yaml says it."""
    from .. import safe_yaml
    try:
        config = safe_yaml.load(read_regular(run_dir / "config.yaml", JSON_LIMIT).decode("utf-8", "replace"))
        epochs = config["train"]["epochs"]
    except Exception:  # not written yet, or not as expected: the line goes without a total
        return None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None


def progress_text(run_dir: Path | None) -> tuple[int, str]:
    """What a running member has done so far, from its own logs: epochs done, and the step's smoothed loss
    and the last epoch's accuracy."""
    if run_dir is None:
        return 0, "starting"
    step, epoch = tail_row(run_dir / "steps.csv"), tail_row(run_dir / "metrics.csv")
    done, parts = 0, []
    with contextlib.suppress(ValueError, KeyError):
        parts.append(f"step {int(step['step'])}, loss {float(step['smooth_loss']):.4f}")
    with contextlib.suppress(ValueError, KeyError):
        done = int(epoch["epoch"]) + 1
        parts.append(f"accuracy {float(epoch['accuracy']):.4f}")
    return done, ", ".join(parts) or "starting"


class Watch:
    """One live line per running member under the grid's bar (on a terminal): its run directory found by
    the pid its meta.json records, then its epochs and loss read every second or so. Only a view: nothing
    it meets stops the grid."""

    def __init__(self, grid: dict, bar):
        self.grid, self.bar = grid, bar
        self.lines: dict[int, object] = {}
        self.totals: dict[int, int | None] = {}
        self.seen = 0.0

    def start(self, m: dict) -> None:
        self.lines[m["index"]] = self.bar.line(f"  member {m['index']} ({label(m)})")

    def end(self, m: dict) -> None:
        line = self.lines.pop(m["index"], None)
        if line is not None:
            line.remove()

    def tick(self) -> None:
        if self.bar.bar is None or time.time() - self.seen < 1.0:
            return
        self.seen = time.time()
        for k, line in self.lines.items():
            try:
                m = self.grid["members"][k]
                if not m.get("run_dir") and m.get("pid"):
                    m["run_dir"] = run_of_pid(Path(self.grid["runs_root"]), m["pid"])
                run = Path(m["run_dir"]) if m.get("run_dir") else None
                if run is not None and self.totals.get(k) is None:
                    self.totals[k] = epochs_of(run)
                done, info = progress_text(run)
                line.update(done, info, total=self.totals.get(k))
            except Exception:
                continue


OUTCOMES = ("completed", "diverged", "interrupted", "failed")  # how an attempt ends: member_line says each


def member_line(grid: dict, m: dict, done: int) -> str:
    values = label(m)
    result = {"completed": f"accuracy {m['accuracy']:.4f}" if isinstance(m.get("accuracy"), float) else "completed",
              "diverged": "diverged (exit 3)", "interrupted": f"interrupted (exit {m['exit_code']})",
              "failed": f"failed (exit {m['exit_code']}): {m.get('error') or 'see its log'}"}[m["status"]]
    return (f"[{done}/{len(grid['members'])}] member {m['index']} ({values}): {result}  "
            f"{fmt_time(m['wall_seconds'] or 0)}")


def run_members(grid: dict, grid_dir: Path, parallel: int, gpus: list[str], display: Display, stop: Forwarder,
                save) -> None:
    """Every member not done, `parallel` at a time, until all have ended or a signal stops the starting."""
    members_dir = grid_dir / "members"
    members_dir.mkdir(exist_ok=True)
    reconcile_all(grid)
    queue = [m for m in grid["members"] if m["status"] not in record.FINAL]
    free = list(range(parallel))
    running: dict[int, tuple[subprocess.Popen, int, float]] = {}
    done = sum(m["status"] in record.FINAL for m in grid["members"])
    with display.progress(len(grid["members"]), "grid", completed=done, unit="members", steps=False) as bar:
        watch = Watch(grid, bar)
        while (queue and not stop.signum) or running:
            while queue and free and not stop.signum:
                m = queue.pop(0)
                slot = free.pop(0)
                argv = member_argv(grid, m)
                m["resumed"] += argv[1] == "--resume"
                m["attempts"] += 1
                proc = spawn(argv, grid["cwd"], member_env(slot, parallel, gpus, grid),
                             members_dir / f"{m['index']}.json", members_dir / f"{m['index']}.log", forked=not gpus)
                m.update(status="running", pid=proc.pid)
                watch.start(m)
                stop.add(proc)
                running[m["index"]] = (proc, slot, time.time())
                save()
            for k, (proc, slot, started) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                stop.remove(proc)
                del running[k]
                free.append(slot)
                m = grid["members"][k]
                watch.end(m)
                finish(grid, m, rc, started, members_dir)
                done += 1  # ended, whatever its outcome: the count says how far the grid has got
                save()
                display.print(member_line(grid, m, done), markup=False)
                bar.update(done)
            watch.tick()
            time.sleep(0.05)


def run_find(grid: dict, grid_dir: Path, display: Display, stop: Forwarder) -> dict | None:
    """--around find: `onecycle find` once, with the grid's config; its suggestion, or None if a signal
    stopped it. Its output goes to find.json and find.log in the grid directory."""
    display.print("range test: onecycle find (log: find.log)", markup=False)
    proc = spawn(["find", *grid["spec"]["find_args"], "--json"], grid["cwd"], dict(os.environ),
                 grid_dir / "find.json", grid_dir / "find.log")
    stop.add(proc)
    rc = proc.wait()
    stop.remove(proc)
    if stop.signum:
        return None
    if rc in INTERRUPTED:  # stopped from outside, not through us: nothing to vary around
        raise OnecycleError(f"--around find: the range test was stopped (exit {rc}); see {grid_dir / 'find.log'}")
    summary = json_line(grid_dir / "find.json")
    s = summary.get("suggestion") if isinstance(summary.get("suggestion"), dict) else {}
    lr = s.get("lr")
    if rc != 0 or not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        error = OnecycleError if rc != 2 else UsageError
        raise error(f"--around find: the range test ended with exit {rc} and no suggestion: "
                    f"{last_line(grid_dir / 'find.log') or 'see find.log'} ({grid_dir / 'find.log'})")
    run = summary.get("run_dir")
    return {"name": str(s.get("name")), "lr": float(lr),
            "find_run": os.path.join(grid["cwd"], run) if isinstance(run, str) else None}


def execute(grid: dict, grid_dir: Path, p: spec.Plan, parallel: int, gpus: list[str], display: Display) -> int:
    """The grid from where grid.json says it stands to its end; its exit code (see `exit_code`)."""
    started = time.time()
    before = grid.get("wall_seconds") or 0.0

    def save() -> None:
        grid["wall_seconds"] = round(before + time.time() - started, 3)
        record.write_records(grid_dir, grid)

    with Forwarder() as stop:
        grid["status"] = "running"
        if problem := group.open_group(grid, p.resolved.config.run.log):
            display.warn(problem)
        save()
        if p.factors and grid.get("suggestion") is None:
            try:
                grid["suggestion"] = run_find(grid, grid_dir, display, stop)
            except OnecycleError:
                grid["status"] = "failed"
                save()
                raise
            if grid["suggestion"] is not None:
                s = grid["suggestion"]
                display.print(f"range test: {s['name']} suggests max_lr {s['lr']:.3g}; members at "
                              + ", ".join(f"{s['lr'] * f:.3g}" for f in p.factors), markup=False)
                set_members(grid, spec.around_members(p, s["lr"]))
        if not stop.signum:
            run_members(grid, grid_dir, parallel, gpus, display, stop, save)
        grid["status"] = "interrupted" if stop.signum else record.worst(grid)
        save()
        code = stop.exit_code if stop.signum else exit_code(grid)
    for problem in record.write_views(grid_dir, grid):
        display.warn(problem)
    if problem := group.close_group(grid, grid_dir):  # after the views: they go to the grid's run
        display.warn(problem)
    return code


def exit_code(grid: dict) -> int:
    """0 every member completed; 1 one failed (or was stopped from outside); 3 one diverged, none failed."""
    states = {m["status"] for m in grid["members"]}
    if states - {"completed", "diverged"}:
        return EXIT_ERROR
    return EXIT_DIVERGED if "diverged" in states else 0


def open_grid(path: Path) -> tuple[RunDir, dict]:
    """A grid directory for --resume, locked against a second parent."""
    grid = read_json(path / "grid.json") if path.is_dir() else None
    if not record.is_grid(grid):
        raise UsageError(f"--resume {path}: not a grid directory (no grid.json written by onecycle grid)")
    run = RunDir(path)
    run.lock()
    return run, grid
