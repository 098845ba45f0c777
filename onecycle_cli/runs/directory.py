"""A run is a directory: `runs/<timestamp>-<command>-<config>[-<n>]/`.

Every file in it is either written whole (a temporary file in the same directory, fsync, rename)
or appended a line at a time and flushed, so whatever kills a run leaves each file readable: the
previous checkpoint, a CSV missing only its unfinished line, the last summary written. No file of a
run is opened through a symbolic link (`safe_files`), and a run directory that holds one is not
resumed: what a run writes stays inside it.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import fcntl
import io
import json
import math
import os
import platform
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import DiskFull, OnecycleError, RunDirError
from ..safe_files import (
    CSV_LIMIT,
    NotRegularFile,
    atomic_write_bytes,
    atomic_write_text,
    check_regular_or_dir,
    no_space,
    open_append,
    open_regular,
)
from ..safe_files import read_json as read_json_file

if TYPE_CHECKING:
    import torch

# lr is the head's (the last parameter group's); phase the cycle (train, or fine_tune's frozen and unfrozen),
# last so that the columns before it keep their places
STEP_COLUMNS = ["step", "epoch", "lr", "momentum", "loss", "smooth_loss", "grad_abs", "phase"]
METRIC_COLUMNS = ["epoch", "step", "lr", "momentum", "train_loss", "valid_loss", "accuracy", "seconds", "images_per_s",
                  "phase"]
EMA_COLUMNS = ["ema_valid_loss", "ema_accuracy"]  # with train.ema: the weight average, scored each epoch


def group_lr_columns(groups: int) -> list[str]:
    """steps.csv's LR of each parameter group, body (lr_0) to head."""
    return [f"lr_{i}" for i in range(groups)]


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)  # strict JSON has no NaN or inf
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def to_json(obj: Any, indent: int | None = 1) -> str:
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def atomic_save(obj: Any, path: Path, point: str = "checkpoint") -> None:
    """torch.save through a temporary file: a kill mid-write leaves the previous checkpoint intact."""
    import torch  # here, not at the top: `onecycle runs`, `compare` and `report` read run files without torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue(), point=point)


class CsvLog:
    """A CSV appended one flushed line per row; the header is written when the file is new."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        try:
            self.file = open_append(path)
        except NotRegularFile as e:
            raise RunDirError(f"{path} is {e.strerror}: a run's records are its own files; not writing through "
                              f"it") from None
        self.writer = csv.writer(self.file)
        if os.fstat(self.file.fileno()).st_size == 0:
            self._flushed(lambda: self.writer.writerow(columns))

    def _flushed(self, write) -> None:
        try:
            write()
            self.file.flush()
        except OSError as e:
            if no_space(e):
                raise DiskFull(self.path) from None
            raise

    def write(self, row: dict) -> None:
        self._flushed(lambda: self.writer.writerow([_cell(row.get(c)) for c in self.columns]))

    def write_many(self, rows: Iterable[dict]) -> None:
        self._flushed(lambda: self.writer.writerows([_cell(r.get(c)) for c in self.columns] for r in rows))

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:  # the last flush of a full disk: already reported by the write that failed
            pass


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else str(value))
    return "" if value is None else value


def _value(text: str | None):
    if text in ("", None):
        return math.nan
    try:
        return float(text)
    except ValueError:
        return text  # a label (the curve of lr_find.csv, the layer of activation_stats.csv)


def open_csv(path: Path):
    """A run's CSV for reading, as text: never through a link, never a FIFO, never past CSV_LIMIT."""
    return io.TextIOWrapper(open_regular(path, CSV_LIMIT), encoding="utf-8", errors="replace", newline="")


def read_csv(path: Path) -> list[dict]:
    """Rows of a run's CSV, numbers as floats; an unfinished last line (a killed writer) is skipped.
    None there: no rows. A link or a FIFO in its place: an OSError for the caller to report."""
    try:
        f = open_csv(path)
    except FileNotFoundError:
        return []
    with f:
        reader = csv.DictReader(f)
        rows = [{k: _value(v) for k, v in raw.items()} for raw in reader
                if None not in raw and None not in raw.values()]
    return rows


def keep_rows(path: Path, keep) -> None:
    """Rewrite a CSV with only the rows `keep(row)` accepts (resume drops what came after the checkpoint)."""
    try:
        f = open_csv(path)
    except FileNotFoundError:
        return
    with f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = [r for r in reader if None not in r and None not in r.values()
                and keep({k: _value(v) for k, v in r.items()})]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


def _versions() -> dict[str, str | None]:
    from importlib import metadata  # here: only the commands that write meta.json need it

    import torch
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    return {"onecycle": version("onecycle"), "torch": torch.__version__, "torchvision": version("torchvision"),
            "cuda": torch.version.cuda, "python": platform.python_version()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def now_iso() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


class RunDir:
    """One run's directory. Only rank 0 has one; other ranks get `NullRunDir`."""

    def __init__(self, path: Path):
        self.path = path
        self._lock_file = None
        self._logs: dict[str, CsvLog] = {}

    # -- creating and opening ---------------------------------------------------------------
    @staticmethod
    def check_root(root: str | Path) -> None:
        """Fail before any work starts when run directories could not be made under `root`."""
        root = Path(root).expanduser()
        if root.exists():
            if not root.is_dir():
                raise RunDirError(f"runs root {root} is not a directory (set run.root, --runs-dir or ONECYCLE_RUNS)")
            if not os.access(root, os.W_OK | os.X_OK):
                raise RunDirError(f"runs root {root} is not writable (set run.root, --runs-dir or ONECYCLE_RUNS)")
        elif not root.parent.is_dir():
            raise RunDirError(f"runs root {root} cannot be created: its parent {root.parent} does not exist "
                              f"(set run.root, --runs-dir or ONECYCLE_RUNS to an existing place)")
        elif not os.access(root.parent, os.W_OK | os.X_OK):
            raise RunDirError(f"runs root {root} cannot be created: {root.parent} is not writable")

    @classmethod
    def create(cls, root: str | Path, command: str, config_name: str) -> "RunDir":
        cls.check_root(root)
        root = Path(root).expanduser()
        try:
            root.mkdir(exist_ok=True)
        except OSError as e:
            if no_space(e):
                raise DiskFull(root) from None
            raise RunDirError(f"runs root {root} cannot be created: {e.strerror}") from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{command}-{slug(config_name)}"
        for n in range(1, 10_000):
            path = root / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()  # atomic: two runs started in the same second never share a directory
            except FileExistsError:
                continue
            except OSError as e:
                if no_space(e):
                    raise DiskFull(path) from None
                raise RunDirError(f"runs root {root} is not writable: {e.strerror}") from None
            run = cls(path)
            run.lock()
            return run
        raise RunDirError(f"too many runs named {base} in {root}")

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run, locked against a second process resuming it at the same time."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise RunDirError(f"--resume {path}: no such run directory")
        if not (path / "config.yaml").is_file():
            raise RunDirError(f"--resume {path}: not a onecycle run directory (no config.yaml)")
        cls.check_own_files(path)
        run = cls(path)
        run.lock()
        # a writer killed between its temporary file and the rename leaves the temporary file behind
        for stale in [*path.glob(".*.tmp"), *path.glob("checkpoints/.*.tmp")]:
            stale.unlink(missing_ok=True)
        return run

    @staticmethod
    def check_own_files(path: Path) -> None:
        """Refuse a run directory holding a symbolic link (or a FIFO, a device) where its files go:
        resuming appends to its CSVs and rewrites its summary, and must never do so through a link."""
        for folder in (path, path / "checkpoints"):
            try:
                entries = sorted(os.listdir(folder))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise RunDirError(f"--resume {path}: {folder} cannot be read ({e.strerror})") from None
            if folder != path and check_regular_or_dir(folder):
                raise RunDirError(f"--resume {path}: checkpoints is {check_regular_or_dir(folder)}: a run's files "
                                  f"are its own, so it is not resumed (copy the run without links to continue it)")
            for name in entries:
                problem = check_regular_or_dir(folder / name)
                if problem:
                    raise RunDirError(f"--resume {path}: {(folder / name).relative_to(path)} is {problem}: a run's "
                                      f"files are its own, so it is not resumed (copy the run without links to "
                                      f"continue it)")

    def lock(self) -> None:
        path = self.path / ".lock"
        try:
            # no link followed (a .lock pointing at ~/.bashrc would be truncated), no FIFO waited on
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if no_space(e):
                raise DiskFull(path) from None
            what = "a symbolic link" if e.errno == errno.ELOOP else e.strerror
            raise RunDirError(f"run {self.path}: .lock cannot be opened ({what}); not writing through it") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunDirError(f"run {self.path}: .lock is not a regular file; not writing through it")
        os.set_blocking(fd, True)
        self._lock_file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise RunDirError(f"run {self.path} is in use by {holder}: wait for it to finish") from None
        try:
            self._lock_file.seek(0)
            self._lock_file.truncate()
            self._lock_file.write(f"pid {os.getpid()} on {socket.gethostname()}")
            self._lock_file.flush()
        except OSError as e:
            self._lock_file.close()
            self._lock_file = None
            if no_space(e):
                raise DiskFull(path) from None
            raise

    def close(self) -> None:
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- writing ------------------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, to_json(obj) + "\n")

    def log(self, name: str, columns: list[str]) -> CsvLog:
        if name not in self._logs:
            self._logs[name] = CsvLog(self.path / name, columns)
        return self._logs[name]

    def save_checkpoint(self, state: dict, name: str = "last.pt") -> None:
        folder = self.path / "checkpoints"
        try:
            folder.mkdir(exist_ok=True)
        except OSError as e:
            if no_space(e):
                raise DiskFull(folder) from None
            raise
        if check_regular_or_dir(folder):  # a link made since the run began: never write through it
            raise RunDirError(f"{folder} is {check_regular_or_dir(folder)}; not writing a checkpoint through it")
        atomic_save(state, folder / name, "checkpoint" if name == "last.pt" else name.removesuffix(".pt"))

    def write_meta(self, argv: list[str] | None, device: "torch.device", seed: int, world: int = 1, **extra) -> None:
        """meta.json: the command as typed (`argv`, from the CLI; this process's own when None), versions, host."""
        import torch
        argv = list(argv) if argv else [Path(sys.argv[0]).name, *sys.argv[1:]]
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        self.write_json("meta.json", {
            "argv": argv, "versions": _versions(), "git_commit": _git_commit(), "device": str(device),
            "device_name": name, "world_size": world, "seed": seed, "host": socket.gethostname(),
            "pid": os.getpid(), "started": now_iso(), "cwd": os.getcwd(), **extra})

    def read_json(self, name: str) -> dict:
        # a list, a number, a link or a FIFO is no more a summary than garbage
        return read_json_file(self.path / name) or {}


class NullRunDir(RunDir):
    """What ranks other than 0 write to: nothing."""

    def __init__(self):
        super().__init__(Path(os.devnull))

    def write_text(self, name, text): pass
    def write_json(self, name, obj): pass
    def save_checkpoint(self, state, name="last.pt"): pass
    def write_meta(self, *args, **kwargs): pass
    def read_json(self, name): return {}
    def lock(self): pass

    def log(self, name, columns):
        return _NullLog()


class _NullLog:
    def write(self, row): pass
    def write_many(self, rows): pass
    def close(self): pass


class TrainingLog:
    """A training run's steps.csv and metrics.csv, behind the same two calls as `TensorboardLog`."""

    def __init__(self, run: "RunDir", groups: int, ema: bool = False):
        self.step_rows = run.log("steps.csv", STEP_COLUMNS + group_lr_columns(groups))
        self.epoch_rows = run.log("metrics.csv", METRIC_COLUMNS + (EMA_COLUMNS if ema else []))

    def steps(self, rows: list[dict]) -> None:
        self.step_rows.write_many(rows)

    def epoch(self, row: dict) -> None:
        self.epoch_rows.write(row)

    def close(self) -> None:
        pass  # the run directory closes its CSVs


class TensorboardLog:
    """TensorBoard event files in <run>/tensorboard, when asked for and installed."""

    def __init__(self, path: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise OnecycleError("--tensorboard needs the tensorboard package: "
                                "pip install 'onecycle[tensorboard]'") from None
        self.writer = SummaryWriter(str(path))

    def steps(self, rows: list[dict]) -> None:
        for r in rows:
            for key in ("loss", "smooth_loss", "lr", "momentum", "grad_abs"):
                self.writer.add_scalar(f"step/{key}", r[key], r["step"])
        self.writer.flush()

    def epoch(self, row: dict) -> None:
        for key in ("train_loss", "valid_loss", "accuracy", "images_per_s"):
            self.writer.add_scalar(f"epoch/{key}", row[key], row["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()




def slug(name: str) -> str:
    """A name as one safe path part: a run's directory, an evaluation's folder."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "config"


