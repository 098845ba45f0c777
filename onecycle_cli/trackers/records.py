"""The one adapter between a run's records and the trackers (MLflow, W&B): what is sent, when, and by whom.

    tracking = Tracking.start(run_dir, ["mlflow"], display, resumed=False)
    tracking.ready()                               # before the first step: the trackers' runs are open
    tracking.steps(rows); tracking.epoch(row)     # the rows steps.csv and metrics.csv get, as they are flushed
    tracking.finish()                              # after summary.json, the PNGs and report.html are written

Every call only puts work on a queue; one thread of the adapter's own does the talking, so a slow or
absent server never holds up a training step. That thread opens each tracker's run first and records
its id in <run>/trackers.json, so that `train --resume` continues the same tracker run. Opening is the
costly part (importing MLflow, creating its SQLite tables, starting W&B's service: seconds of CPU), so
the run waits for it before its first step, OPEN_WAIT seconds at most: on a small machine that work
would otherwise be taken from the training steps' cores. A tracker that
raises is dropped with one warning (shown by the main thread at the next flush point or at the end);
the others, the run, its files and its exit code go on. `finish` waits for the queue to empty for
FINISH_WAIT seconds at most, then says what was not sent.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..display import Display
from ..faults import fault
from ..runs.directory import read_csv, to_json
from ..runs.history import read_json
from ..safe_files import atomic_write_text, check_regular_or_dir
from ..safe_text import one_line
from .params import run_params

RECORD = "trackers.json"  # in the run directory: each tracker's run id, for --resume
OPEN_WAIT = 30.0  # seconds a run waits for its trackers' runs to open before its first step; then goes on
FINISH_WAIT = float(os.environ.get("ONECYCLE_TRACKER_WAIT", "120"))  # seconds the end of a run waits on trackers
ARTIFACTS = ("config.yaml", "summary.json", "report.html")  # with every PNG the run drew
GROUP_ENV = "ONECYCLE_TRACKER_GROUP"    # set by `onecycle grid` for its members: the grid's directory name
PARENT_ENV = "ONECYCLE_MLFLOW_PARENT"   # and the grid's own MLflow run, which its members' runs nest under


def metrics_of(row: dict, prefix: str, skip: tuple[str, ...] = ("step", "epoch", "phase", "curve")) -> dict:
    """A CSV row's numbers as {prefix/key: value}; text (the phase) and empty cells are not metrics."""
    return {f"{prefix}/{k}": float(v) for k, v in row.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}


class Tracking:
    """One run's trackers, fed from its records by a thread of their own."""

    def __init__(self, run: Path, trackers: list, display: Display, resumed: bool, every: int = 1):
        self.run, self.trackers, self.display, self.resumed = run, trackers, display, resumed
        self.every = max(1, every)
        self.work: queue.SimpleQueue = queue.SimpleQueue()
        self.problems: queue.SimpleQueue = queue.SimpleQueue()
        self.failed: set[int] = set()
        self.opened = threading.Event()
        self.cpu = [0.0] * len(trackers)  # each tracker's CPU seconds on this thread while the run trained
        self.training = False  # on the thread: between every run's opening and finish()
        self.ids: dict[str, dict] = {}
        self.thread = threading.Thread(target=self._serve, name="onecycle-trackers", daemon=True)
        self.finished = False

    @classmethod
    def start(cls, run: Path, names: list[str], display: Display, resumed: bool = False,
              command: str = "train", every: int = 1) -> "Tracking | None":
        """The trackers of `names` (tensorboard is not one: it has its own writer), started on the thread;
        None when there are none. `run` holds config.yaml and meta.json already. `every`: the run's
        log_every; the trackers get one step in `every` (steps.csv keeps them all)."""
        wanted = [n for n in names if n in ("mlflow", "wandb")]
        if not wanted:
            return None
        previous = read_json(run / RECORD) or {}
        meta = read_json(run / "meta.json") or {}
        config = str(meta.get("config") or "onecycle")
        context = {"run": run, "experiment": config, "name": run.name, "command": command,
                   "group": os.environ.get(GROUP_ENV) or None, "parent": os.environ.get(PARENT_ENV) or None,
                   "tags": {"onecycle.command": command, "onecycle.run_dir": str(run.absolute()),
                            "onecycle.device": str(meta.get("device", "")), "onecycle.config": config}}
        trackers = []
        for name in wanted:
            if name == "mlflow":
                from .to_mlflow import MlflowTracker
                trackers.append(MlflowTracker(context))
            else:
                from .to_wandb import WandbTracker
                trackers.append(WandbTracker(context))
        self = cls(run, trackers, display, resumed, every)
        params = {} if resumed else run_params(run)  # a resumed run's parameters were sent when it began
        for i, t in enumerate(trackers):
            self._put(i, lambda t=t, name=t.name: self._opened(name, t.open(previous.get(name), params)))
        self.work.put((None, lambda: self._training(True)))  # every tracker opened, or dropped
        self.thread.start()
        return self

    # -- the thread ---------------------------------------------------------------------------
    def _put(self, i: int, call: Callable[[], Any]) -> None:
        self.work.put((i, call))

    def _serve(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            i, call = item
            if i is not None and i in self.failed:
                continue
            began = time.thread_time()
            try:
                call()
            except Exception as e:  # any tracker's failure: dropped, said once, the run goes on
                self.failed.add(i)
                self.problems.put(f"{self.trackers[i].title}: {one_line(f'{type(e).__name__}: {e}')[:300]}; "
                                  f"the run goes on without it (its files are complete)")
            finally:
                if i is not None and self.training:
                    self.cpu[i] += time.thread_time() - began

    def _training(self, on: bool) -> None:
        """On the thread, between the work items: the run's steps begin (every tracker open) or have ended."""
        self.training = on
        if on:
            self.opened.set()

    def _opened(self, name: str, ids: dict) -> None:
        self.ids[name] = ids
        previous = read_json(self.run / RECORD) or {}
        if check_regular_or_dir(self.run / RECORD):
            raise OSError(f"{self.run / RECORD} is not a regular file; not writing through it")
        atomic_write_text(self.run / RECORD, to_json({**previous, name: ids}) + "\n")
        fault("tracker")  # the robustness tests stop here, with a tracker run open and nothing yet sent

    def ready(self) -> None:
        """Wait (OPEN_WAIT s at most) until every tracker's run is open or has failed; then the steps begin."""
        if not self.opened.wait(OPEN_WAIT):
            self.problems.put(f"trackers: still opening after {OPEN_WAIT:g} s; training begins, and they catch "
                              f"up from the records when they can")
        self.say_problems()

    def say_problems(self) -> None:
        while True:
            try:
                self.display.warn(self.problems.get_nowait())
            except queue.Empty:
                return

    # -- what the run hands over ------------------------------------------------------------
    def _metrics(self, points: list[tuple[int, dict]]) -> None:
        points = [(step, values) for step, values in points if values]
        if points:
            for i, t in enumerate(self.trackers):
                self._put(i, lambda t=t: t.metrics(points))

    def steps(self, rows: list[dict]) -> None:
        """steps.csv's rows, as they are flushed: loss, LR, momentum of every log_every-th step (as Lightning's
        log_every_n_steps), and a step whose loss is not finite (where a run diverged). Sending every step took a
        local MLflow store 0.35 s of CPU, on the steps' own cores, in a 1.8-s 3-vs-7 training on 2 cores."""
        self._metrics([(int(r["step"]), metrics_of(r, "step")) for r in rows
                       if int(r["step"]) % self.every == 0 or not math.isfinite(r["loss"])])
        self.say_problems()

    def epoch(self, row: dict) -> None:
        """metrics.csv's row of an epoch that ended."""
        self._metrics([(int(row["step"]), {**metrics_of(row, "epoch"), "epoch/epoch": float(row["epoch"])})])
        self.say_problems()

    def close(self) -> None:
        pass  # a training log's close: the tracker runs end in finish(), once the run's views are written

    def curve(self) -> None:
        """The range test's lr_find.csv (a find run's, or train --max-lr find's), one point a step."""
        try:
            rows = read_csv(self.run / "lr_find.csv")
        except OSError:
            return
        points = []
        for r in rows:
            label = r.get("curve") if isinstance(r.get("curve"), str) and r.get("curve") != "lr_find" else None
            prefix = "find" + (f"/{_key(label)}" if label else "")
            if isinstance(r.get("step"), (int, float)):
                points.append((int(r["step"]), metrics_of(r, prefix)))
        self._metrics(points)

    def finish(self) -> dict:
        """The run's end as its records say it (summary.json), its views as artifacts, each tracker's run
        ended with the run's status; waits FINISH_WAIT s at most. What each tracker says of itself."""
        if self.finished:
            return {}
        self.finished = True
        self.work.put((None, lambda: self._training(False)))
        summary = read_json(self.run / "summary.json") or {}
        status = str(summary.get("status") or "failed")
        if not self.resumed:  # a resumed run's range test was sent by the process that ran it
            self.curve()
        final = _final_metrics(summary)
        files = [self.run / n for n in (*sorted(p.name for p in self.run.glob("*.png")), *ARTIFACTS)
                 if not check_regular_or_dir(self.run / n) and (self.run / n).is_file()]
        for i, t in enumerate(self.trackers):
            self._put(i, lambda t=t: t.summary(final, status))
            self._put(i, lambda t=t: t.artifacts(files))
            self._put(i, lambda t=t: t.end(status))
        self.work.put(None)
        deadline = time.monotonic() + FINISH_WAIT
        try:
            while self.thread.is_alive() and time.monotonic() < deadline:
                self.thread.join(0.2)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting on the trackers, the run's files are written
            pass
        if self.thread.is_alive():
            self.problems.put(f"trackers: still sending after {FINISH_WAIT:g} s; stopped waiting (set "
                              f"ONECYCLE_TRACKER_WAIT to wait longer); the run's files are complete")
        self.say_problems()
        said = {}
        for i, t in enumerate(self.trackers):
            if i not in self.failed and t.name in self.ids:
                # the CPU its sends took while the run trained, from the cores the steps ran on (the
                # records' flush points; W&B's own service process is not counted): benchmarks/trackers.py
                said[t.name] = {**t.describe(), "training_cpu_seconds": round(self.cpu[i], 3)}
                for line in t.lines():
                    self.display.print(line, markup=False)
        return said


def _key(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)[:60]


def _final_metrics(summary: dict) -> dict[str, float]:
    """summary.json's numbers a team compares runs by: the final and best metrics, max_lr, the suggestions."""
    out: dict[str, float] = {}

    def put(key: str, value) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    for section in ("final", "best", "ema"):
        values = summary.get(section)
        if isinstance(values, dict):
            for k, v in values.items():
                put(f"{section}/{k}", v)
    for key in ("max_lr", "wall_seconds", "train_seconds", "accuracy_mean"):
        put(key, summary.get(key))
    suggestions = summary.get("suggestions")
    if isinstance(suggestions, dict):
        for rule, s in suggestions.items():
            if isinstance(s, dict):
                put(f"suggestion/{_key(str(rule))}", s.get("lr"))
    return out


def tracked(run, tracking: Tracking, summary: dict | None) -> None:
    """End a run's trackers (after its views are written) and record in summary.json, and in the summary
    the command prints, where each tracker put it: an MLflow run id, a W&B offline folder and its sync line."""
    said = tracking.finish()
    if not said:
        return
    recorded = run.read_json("summary.json")
    if recorded:
        run.write_json("summary.json", {**recorded, "trackers": said})
    if summary is not None:
        summary["trackers"] = said
