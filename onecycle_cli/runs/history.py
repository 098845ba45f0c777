"""Past runs at a glance: `onecycle runs [DIR] [--json]`.

A run's own summary.json says "running" from its first step to its last, so a run killed with -9
(or by a lost node) keeps saying it forever. The `.lock` it holds with flock for its whole life is
what tells the two apart: the kernel drops the lock when the process dies, whatever killed it.
Nothing here may crash on what it finds: a listing is most needed when something went wrong.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import stat
import time
from pathlib import Path

import yaml

from ..display import fmt_pct, fmt_time
from ..errors import UsageError
from ..safe_files import CONFIG_LIMIT, read_regular
from ..safe_files import read_json as read_json_file
from ..safe_yaml import load as load_yaml

STAMP = re.compile(r"^(\d{8}-\d{6})-")  # RunDir.create's prefix: the start of the run, to the second


def lock_held(path: Path, name: str = ".lock") -> bool | None:
    """Is the run's `.lock` (or another lock file `name` in `path`) held by a live process? None when there is
    no lock file to ask."""
    try:
        # a FIFO named .lock would block a plain open forever; a link is not the run's lock
        fd = os.open(path / name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        # a shared lock conflicts with the run's exclusive one and with nothing else of ours
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


read_json = read_json_file  # a JSON object, {} when absent, None when there but unreadable (safe_files)


def read_config(path: Path) -> dict | None:
    """A run's config.yaml as nested dicts, {} when absent, None when unreadable (or an alias bomb)."""
    try:
        value = load_yaml(read_regular(path / "config.yaml", CONFIG_LIMIT).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def commands_of(summary: dict | None, meta: dict | None = None) -> frozenset[str]:
    """Which commands read a run's config.yaml: find, train, or both (`train --max-lr find` runs the range
    test first). What `config.unread` needs to tell a run's settings from the keys it never read."""
    s, m = summary or {}, meta or {}
    command = s.get("command") or m.get("command")
    if command == "find":
        return frozenset({"find"})
    if command != "train":
        return frozenset({"train", "find"})  # unknown: only the keys no command would read count as unread
    if "max_lr_source" in s:  # the finished record says where max_lr came from
        return frozenset({"train", "find"} if str(s["max_lr_source"]).startswith("find:") else {"train"})
    argv = [str(a) for a in m.get("argv") or []] if isinstance(m.get("argv"), list) else []
    in_run = "--max-lr=find" in argv or any(a == "--max-lr" and b == "find" for a, b in zip(argv, argv[1:]))
    return frozenset({"train", "find"} if in_run else {"train"})


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "summary.json").is_file() or (path / "config.yaml").is_file())


def under_root(arg: str | Path, root: Path) -> Path:
    """A run as given: a path, or else its id under the runs root (what `onecycle runs` prints)."""
    path = Path(arg).expanduser()
    if not path.is_dir() and not path.is_absolute() and (root / path).is_dir():
        return root / path
    return path


def run_dir_of(arg: str | Path, root: Path) -> Path:
    """`under_root`, refused in one line unless it is a run (or comparison, or grid) directory: what `compare`,
    `report` and `plot` take."""
    path = under_root(arg, root)
    if not path.exists():
        raise UsageError(f"{arg}: no such run directory (give a path, or a run id under {root})")
    if not is_run_dir(path):
        raise UsageError(f"{arg}: not a onecycle run directory (no summary.json or config.yaml)")
    return path


def status_of(path: Path, summary: dict | None) -> str:
    """The status a person should see: the summary's, except where the lock says otherwise.

    running     the summary says so and a live process holds the lock
    crashed     the summary says running but nobody holds the lock (killed, lost node, OOM)
    incomplete  a config.yaml and no summary: the run died before its first record
    unreadable  summary.json is there but not JSON
    """
    held = lock_held(path)
    if summary is None:
        return "unreadable"
    status = summary.get("status")
    if not status:
        return "running" if held else "incomplete"
    if status == "running" and not held:
        return "crashed"
    return str(status)


def _number(value) -> float | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number and math.isfinite(value) else None


def _order(path: Path) -> tuple[str, int]:
    """A sort key for "newest first": the name's stamp survives copying between boxes, mtimes do not;
    within one second the lock file, created as the run starts, breaks the tie."""
    m = STAMP.match(path.name)
    try:
        locked = (path / ".lock").lstat().st_mtime_ns
    except OSError:
        locked = 0
    if m:
        return m.group(1), locked
    try:
        return time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime)), locked
    except OSError:
        return "", locked


def describe(path: Path) -> dict:
    """One run as a row of the listing; every field may be None where the files do not say."""
    summary = read_json(path / "summary.json")
    meta = read_json(path / "meta.json") or {}
    cfg = read_config(path) or {}
    s = summary or {}

    def section(name: str) -> dict:
        return cfg.get(name) if isinstance(cfg.get(name), dict) else {}

    parts = path.name.split("-", 3)  # <date>-<time>-<command>-<config>, the fallback for foreign names
    command = s.get("command") or meta.get("command") or (parts[2] if len(parts) == 4 else None)
    best = s.get("best") if isinstance(s.get("best"), dict) else {}
    final = s.get("final") if isinstance(s.get("final"), dict) else {}
    if command == "find":  # a range test has no epochs; its max_lr is the suggestion
        max_lr = _number((s.get("suggestion") or {}).get("lr")) if isinstance(s.get("suggestion"), dict) else None
        epochs = None
    else:
        max_lr = _number(s.get("max_lr", section("schedule").get("max_lr")))
        epochs = s.get("epochs", section("train").get("epochs"))
    schedule = (s.get("schedule") or section("schedule").get("name")) if command != "find" else None
    shape = (s.get("shape") or section("schedule").get("shape")) if schedule == "onecycle" else None  # 1cycle's alone
    freeze = s.get("freeze_epochs", section("train").get("freeze_epochs"))  # fine_tune: a frozen cycle first
    return {
        "id": path.name, "path": str(path), "started": s.get("started") or meta.get("started"),
        "command": command, "config": s.get("config") or meta.get("config") or (parts[3] if len(parts) == 4 else None),
        "dataset": s.get("dataset") or section("data").get("dataset"),
        "model": s.get("model") or section("model").get("name"),
        "schedule": schedule, "shape": shape,
        "freeze_epochs": freeze if isinstance(freeze, int) and not isinstance(freeze, bool) and schedule else None,
        "max_lr": max_lr, "epochs": epochs if isinstance(epochs, int) else None,
        "epochs_done": s.get("epochs_done") if isinstance(s.get("epochs_done"), int) else None,
        "status": status_of(path, summary), "stop_reason": s.get("stop_reason"),
        "best_accuracy": _number(best.get("accuracy")), "best_epoch": best.get("epoch"),
        "final_accuracy": _number(final.get("accuracy")), "final_valid_loss": _number(final.get("valid_loss")),
        "wall_seconds": _number(s.get("wall_seconds")),
        # a grid (onecycle grid): how many of its members are done, of how many
        "members_done": s.get("members_done") if isinstance(s.get("members_done"), int) else None,
        "members_total": s.get("members_total") if isinstance(s.get("members_total"), int) else None,
        "_sort": _order(path),
    }


def list_runs(root: Path) -> list[dict]:
    """Every run directory directly under `root`, newest first, the unfinished ones included."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UsageError(f"{root}: no such directory (no runs yet? runs go to run.root, --runs-dir or ONECYCLE_RUNS)")
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    try:
        children = list(root.iterdir())
    except OSError as e:
        raise UsageError(f"{root} cannot be read: {e.strerror}") from None
    rows = []
    for path in children:
        try:
            if path.name.startswith(".") or not path.is_dir():
                continue
            # a directory whose files are not there yet but whose lock is held is a run starting up
            if not is_run_dir(path) and not lock_held(path):
                continue
            rows.append(describe(path))
        except OSError:  # a directory we may not enter: still a run someone should know about
            rows.append({**dict.fromkeys(FIELDS), "id": path.name, "path": str(path), "status": "unreadable",
                         "_sort": ("", 0)})
    rows.sort(key=lambda r: (*r["_sort"], len(r["id"]), r["id"]), reverse=True)
    for r in rows:
        del r["_sort"]
    return rows


def schedule_label(r: dict) -> str:
    """The schedule as a person names it: 1cycle and its shape (fine_tune: a frozen 1cycle, then one unfrozen),
    or the baseline; a range test's row says what it is."""
    if r.get("command") == "find":
        return "range test"
    name, shape = r.get("schedule"), r.get("shape")
    if name != "onecycle":
        return str(name) if name else "-"
    kind = "fine_tune" if isinstance(r.get("freeze_epochs"), int) and r["freeze_epochs"] > 0 else "1cycle"
    return f"{kind} ({shape})" if shape else kind


def table_rows(rows: list[dict]) -> list[list[str]]:

    def epochs(r):
        if r.get("command") == "grid" and r.get("members_total") is not None:
            return f"{r.get('members_done') or 0}/{r['members_total']} members"
        done, total = r.get("epochs_done"), r.get("epochs")
        if total is None:
            return "-"
        return str(total) if done in (None, total) else f"{done}/{total}"

    def accuracy(r):  # the last epoch's, as the README quotes a run; a grid's best point, said so
        if r.get("command") == "grid":
            return f"best {fmt_pct(r['best_accuracy'])}" if r.get("best_accuracy") is not None else "-"
        return fmt_pct(r.get("final_accuracy"))

    return [[r["id"], r.get("command") or "-", r.get("config") or "-",
             "/".join(x for x in (r.get("dataset"), r.get("model")) if x) or "-", schedule_label(r),
             f"{r['max_lr']:.3g}" if r.get("max_lr") is not None else "-", epochs(r), r["status"], accuracy(r),
             fmt_time(r["wall_seconds"]) if r.get("wall_seconds") is not None else "-"] for r in rows]


FIELDS = ["id", "path", "started", "command", "config", "dataset", "model", "schedule", "shape", "freeze_epochs",
          "max_lr", "epochs", "epochs_done", "status", "stop_reason", "best_accuracy", "best_epoch", "final_accuracy",
          "final_valid_loss", "wall_seconds", "members_done", "members_total"]
COLUMNS = ["id", "command", "config", "dataset/model", "schedule", "max_lr", "epochs", "status", "accuracy", "wall"]
# on a terminal too narrow for the table, these go first, in this order: the id already says the command and
# config, and --json has every field; the id itself is never cut (it is what compare, report and plot take)
NARROW_DROPS = ["command", "config", "dataset/model", "wall", "epochs"]
