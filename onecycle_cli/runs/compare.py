"""Runs side by side: `onecycle compare runs/<1cycle run> runs/<constant-LR run>`.

The settings shown are only those that differ (the flattened keys of each run's config.yaml), so
the table says at once what the experiment changed. A key counts only for the runs that read it
(`config.unread`): a ResNet run's unused `model.channels` differs from nothing, and where some runs
read a differing key and others do not, the others show "(not read)". The results are read from each run's files,
and the curves are overlaid in one PNG. The comparison is itself a directory under the runs root
(`<timestamp>-compare-<n>runs/`) with compare.png, summary.json and report.html, so it can be
reopened, re-plotted and shared like a run.
"""

from __future__ import annotations

import math
import os
from html import escape
from pathlib import Path

from ..config import flatten, unread
from ..display import fmt_pct, fmt_time, fmt_value
from ..errors import UsageError
from ..safe_files import atomic_write_text
from . import html
from .directory import RunDir, now_iso, read_csv
from .history import commands_of, describe, read_config, read_json, run_dir_of, under_root
from .plots import label as literal
from .plots import percent_axis, pyplot, save_png

NOT_READ = "(not read)"

RESULTS = ("status", "epochs_done", "final_accuracy", "best_accuracy", "final_valid_loss", "wall_seconds")


def locate(arg: str | Path, root: Path) -> Path:
    """A run given as a path, or as its id under the runs root; not a comparison."""
    path = run_dir_of(arg, root)
    if (read_json(path / "summary.json") or {}).get("command") == "compare":
        raise UsageError(f"{arg} is a comparison, not a run: compare the runs it names instead")
    return path


def split_settings(configs: list[dict | None], commands: list[frozenset[str]] | None = None
                   ) -> tuple[dict[str, list], dict[str, object], dict[str, list[bool]]]:
    """(differing {key: value per run}, shared {key: value}, not_read {differing key: [not read by run i]}).

    A key differs when the runs that read it disagree; a key no run reads is left out. An unreadable
    config counts as unknown.
    """
    commands = commands or [frozenset({"train", "find"})] * len(configs)
    flat = [flatten(c) if c else None for c in configs]
    ignored = [unread(f, c) if f is not None else {} for f, c in zip(flat, commands)]
    keys = list(dict.fromkeys(k for f in flat if f is not None for k in f))
    differing, shared, not_read = {}, {}, {}
    for key in keys:
        readers = [f for f, skip in zip(flat, ignored) if f is not None and key in f and key not in skip]
        if not readers:
            continue
        if len({repr(f[key]) for f in readers}) > 1:
            differing[key] = [f.get(key) if f is not None else None for f in flat]
            if any(key in skip for skip in ignored):
                not_read[key] = [key in skip for skip in ignored]
        else:
            shared[key] = readers[0][key]
    return differing, shared, not_read


def label_of(run: dict, differing: dict[str, list], i: int, not_read: dict[str, list[bool]] | None = None) -> str:
    """A short legend label: the run's values of the settings that differ (its id when none do)."""
    # a name reads alone ("constant"); a number or a switch needs its key ("seed=1", "flip=false")
    shown = {k: v[i] for k, v in differing.items()
             if k not in ("run.root", "data.root") and not (not_read or {}).get(k, [False] * len(v))[i]}
    values = [fmt_value(v) if isinstance(v, str) else f"{k.rsplit('.', 1)[-1]}={fmt_value(v)}"
              for k, v in shown.items()][:3]
    return ", ".join(values) if values and len(", ".join(values)) <= 40 else run["id"]


def members_of_grids(args: list[str | Path], root: Path) -> list[str | Path]:
    """A grid directory (`onecycle grid`) given among the runs stands for its members' run directories."""
    out: list[str | Path] = []
    for arg in args:
        path = under_root(arg, root)
        summary = read_json(path / "summary.json") if path.is_dir() else None
        grid = read_json(path / "grid.json") if (summary or {}).get("command") == "grid" else None
        if grid is None:
            out.append(arg)
            continue
        members = grid.get("members") if isinstance(grid.get("members"), list) else []
        runs = [m["run_dir"] for m in members if isinstance(m, dict) and isinstance(m.get("run_dir"), str)]
        if not runs:
            raise UsageError(f"{arg}: a grid none of whose members has a run directory yet")
        out.extend(runs)
    return out


def compare(args: list[str | Path], root: Path) -> tuple[Path, dict]:
    """Write `<root>/<timestamp>-compare-<n>runs/` and return it with its summary; a grid directory
    stands for its members."""
    args = members_of_grids(args, root)
    if len(args) < 2:
        raise UsageError(f"compare needs at least two runs, got {len(args)}: onecycle compare RUN RUN ... "
                         f"or onecycle compare --last 2")
    paths = [locate(a, root) for a in args]
    seen: dict[Path, str] = {}
    for arg, path in zip(args, paths):
        if path.resolve() in seen:
            raise UsageError(f"{arg}: the same run as {seen[path.resolve()]}; give each run once")
        seen[path.resolve()] = str(arg)
    runs = [describe(p) for p in paths]
    commands = [commands_of(read_json(p / "summary.json"), read_json(p / "meta.json")) for p in paths]
    differing, shared, not_read = split_settings([read_config(p) for p in paths], commands)
    labels = [label_of(r, differing, i, not_read) for i, r in enumerate(runs)]
    if len(set(labels)) < len(labels):  # two runs that differ only beyond the label's three keys
        labels = [f"{label} ({r['id']})" for label, r in zip(labels, runs)]
    out = RunDir.create(root, "compare", f"{len(runs)}runs")
    try:
        try:
            compare_png(paths, labels, out.path / "compare.png")
            png, png_error = "compare.png", None
        except Exception as e:  # the plot is a view: the table is still worth having without it
            png, png_error = None, f"{type(e).__name__}: {e}"
        summary = {"command": "compare", "status": "completed", "run_dir": str(out.path), "started": now_iso(),
                   "runs": [{"id": r["id"], "path": r["path"], "label": label, "command": r["command"],
                             "config": r["config"], **{k: r[k] for k in RESULTS},
                             "best_epoch": r["best_epoch"], "max_lr": r["max_lr"]}
                            for r, label in zip(runs, labels)],
                   "differing": differing, "not_read": not_read, "shared": shared, "png": png, "png_error": png_error,
                   "report": "report.html"}
        out.write_json("summary.json", summary)
        write_compare_report(out.path)
    finally:
        out.close()
    return out.path, summary


def check_summary(summary: dict, path: Path) -> None:
    """A comparison's summary.json read back (`onecycle report DIR`) is a file from outside: refuse one
    whose runs and settings are not what `compare` writes, rather than fail halfway through the page."""
    runs, differing = summary.get("runs"), summary.get("differing", {})
    number = lambda x: x is None or isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    ok = (isinstance(runs, list) and all(
        isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("id", "path", "label", "status"))
        and all(number(r.get(k)) for k in (*RESULTS[1:], "best_epoch")) for r in runs)
        and isinstance(differing, dict) and all(isinstance(v, list) and len(v) == len(runs) for v in differing.values())
        and isinstance(summary.get("shared", {}), dict) and isinstance(summary.get("not_read") or {}, dict)
        and all(isinstance(v, list) and len(v) == len(runs) for v in (summary.get("not_read") or {}).values()))
    if not ok:
        raise UsageError(f"{path}/summary.json is not a comparison as onecycle compare writes it; run compare again")


def table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the side-by-side table: differing settings, then results."""
    runs = summary["runs"]
    columns = [""] + [r["id"] for r in runs]
    not_read = summary.get("not_read") or {}
    rows = [[key] + [NOT_READ if not_read.get(key, [False] * len(values))[i] else fmt_value(v)
                     for i, v in enumerate(values)] for key, values in summary["differing"].items()]
    if not rows:
        rows = [["(no setting differs)"] + [""] * len(runs)]

    def num(x, d: int = 4) -> str:
        return f"{x:.{d}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"

    rows += [
        ["status"] + [r["status"] for r in runs],
        ["epochs done"] + [str(r["epochs_done"]) if r["epochs_done"] is not None else "-" for r in runs],
        ["final accuracy"] + [fmt_pct(r["final_accuracy"]) for r in runs],
        ["best accuracy (epoch)"] + [f"{fmt_pct(r['best_accuracy'])} ({r['best_epoch']})"
                                     if r["best_accuracy"] is not None else "-" for r in runs],
        ["final valid_loss"] + [num(r["final_valid_loss"]) for r in runs],
        ["wall time"] + [fmt_time(r["wall_seconds"]) if r["wall_seconds"] is not None else "-" for r in runs],
    ]
    return columns, rows


def compare_png(paths: list[Path], labels: list[str], out: Path) -> Path:
    """Valid loss and accuracy against epoch, smoothed training loss and LR against step, overlaid."""
    plt = pyplot()
    labels = [literal(name) for name in labels]  # run ids and config values, shown as written
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    (valid, acc), (loss, lr) = axes
    for path, label in zip(paths, labels):
        metrics, steps = read_csv(path / "metrics.csv"), read_csv(path / "steps.csv")
        if metrics:
            valid.plot([r["epoch"] for r in metrics], [r["valid_loss"] for r in metrics], "o-", label=label)
            acc.plot([r["epoch"] for r in metrics], [r["accuracy"] for r in metrics], "o-", label=label)
        else:  # keep the colours of the runs in step across the four panels
            valid.plot([], [], label=label)
            acc.plot([], [], label=label)
        loss.plot([r["step"] for r in steps], [r["smooth_loss"] for r in steps], label=label)
        lr.plot([r["step"] for r in steps], [r["lr"] for r in steps], label=label)
    for ax, title, x in ((valid, "valid_loss", "epoch"), (acc, "accuracy", "epoch"),
                         (loss, "train loss (smoothed)", "step"), (lr, "lr", "step")):
        ax.set_title(f"{title} against {x}", fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        if x == "epoch":  # epochs are whole: no 0.2, 0.4 ... ticks between them
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    percent_axis(acc)
    acc.legend(fontsize=8)
    fig.suptitle(" vs ".join(labels), fontsize=11)
    fig.tight_layout()
    return save_png(fig, out)


def write_compare_report(compare_dir: Path) -> Path:
    """Write `<compare_dir>/report.html` from the comparison's summary.json and compare.png."""
    out_dir = Path(compare_dir)
    summary = read_json(out_dir / "summary.json") or {}
    check_summary(summary, out_dir)
    runs = summary.get("runs") or []
    columns, rows = table(summary)
    links = []
    for r in runs:
        path = Path(r["path"])
        target = path / "report.html"
        name = escape(r["id"])
        if target.is_file():  # only links that open: a report not yet written would be a dead end
            href = escape(os.path.relpath(target.resolve(), out_dir.resolve()))
            name = f'<a href="{href}">{name}</a>'
        links.append(f"<li>{name}: {escape(r['label'])} ({html.status(r['status'])})</li>")
    shared = summary.get("shared") or {}
    body = ("<h2>Runs</h2>\n<ul>" + "".join(links) + "</ul>\n"
            "<h2>Settings that differ, and results</h2>\n" + html.table(columns, rows, set(range(1, len(columns))))
            + ("<h2>Curves</h2>\n" + html.images(out_dir) if (out_dir / "compare.png").is_file() else "")
            + (f"<h2>Settings they share</h2>\n<details><summary>{len(shared)} settings</summary>\n"
               + html.table(["key", "value"], [[k, fmt_value(v)] for k, v in shared.items()]) + "</details>\n"
               if shared else ""))
    out = out_dir / "report.html"
    atomic_write_text(out, html.page(out_dir.name, f"compare · {len(runs)} runs", body))
    return out
