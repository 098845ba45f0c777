"""One HTML page per run: `onecycle report runs/<id>` writes runs/<id>/report.html.

The page is self-contained so it survives being mailed, copied off a GPU box or opened from disk:
the PNGs are embedded as base64 data URIs, the CSS is inline, nothing is fetched. Like the plots it
is derived only from the run's files, and it must be writable for any directory a run can leave
behind (killed before its first epoch, a failed range test), so every part is optional. Only the
PNGs a run writes are embedded, by name, and only when they are regular files holding a PNG: a
link named `curves.png` (or `secret.png`) never carries another file into a page that gets shared.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from html import escape
from pathlib import Path

from ..config import flatten, unread
from ..display import fmt_num, fmt_pct, fmt_time, fmt_value
from ..safe_files import atomic_write_text, check_regular_or_dir
from . import html
from .directory import open_csv, read_csv
from .history import commands_of, describe, read_config, read_json
from .plots import plot_run, reason


def _num(x, digits: int = 6) -> str | None:
    return fmt_num(float(x), digits) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _pct(x) -> str | None:
    return fmt_pct(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def write_views(run: Path) -> list[str]:
    """Redraw a run's PNGs and write its report.html; what could not be written, one line each.

    They are views of the records, so a failure here (a full disk, a name matplotlib cannot draw) is
    a warning for the caller to show: it never changes a run's outcome or its exit code.
    """
    _, problems = plot_run(run)
    try:
        write_run_report(run)
    except Exception as e:
        problems.append(f"report.html not written: {reason(e)}")
    return problems


def _seconds(x) -> str | None:
    return f"{fmt_time(x)} ({x:.1f} s)" if isinstance(x, (int, float)) and math.isfinite(x) else None


def _settings(config: dict | None, commands: frozenset[str]) -> str:
    """The keys the run read, by section; the ones its dataset, model, optimiser, schedule or command
    never read folded away below with the reason, so nobody takes them for the run's settings."""
    if config is None:
        return "<p>config.yaml cannot be read.</p>\n"
    if not config:
        return "<p>(no config.yaml)</p>\n"
    ignored = unread(flatten(config), commands)
    parts = []
    for section, keys in config.items():
        if not isinstance(keys, dict):
            parts.append(f"<h3>{escape(str(section))}</h3>\n" + html.table(["key", "value"], [["", fmt_value(keys)]]))
            continue
        rows = [[k, fmt_value(v)] for k, v in keys.items() if f"{section}.{k}" not in ignored]
        if rows:
            parts.append(f"<h3>{escape(str(section))}</h3>\n" + html.table(["key", "value"], rows))
    if ignored:
        flat = flatten(config)
        parts.append(f"<details><summary>{len(ignored)} settings this run did not read</summary>\n"
                     + html.table(["key", "value", "read"],
                                  [[k, fmt_value(flat[k]), why] for k, why in ignored.items()])
                     + "</details>\n")
    return "".join(parts)


def _epochs(run: Path) -> str:
    try:
        rows = read_csv(run / "metrics.csv")
    except OSError:  # a link or a FIFO in its place: the page goes without its epoch table
        return ""
    if not rows:
        return ""
    # the terminal's epoch table with the accuracy in percent: the same digits (0.986752 there, 98.6752% here),
    # so a number read there can be found here
    table = [[str(int(r["epoch"])) if isinstance(r["epoch"], float) and math.isfinite(r["epoch"]) else r["epoch"],
              fmt_num(r["train_loss"]), fmt_num(r["valid_loss"]), fmt_pct(r["accuracy"], 4),
              fmt_time(r["seconds"]) if isinstance(r["seconds"], float) and math.isfinite(r["seconds"]) else "-"]
             for r in rows]
    return "<h2>Epochs</h2>\n" + html.table(["epoch", "train_loss", "valid_loss", "accuracy", "time"], table, {1, 2, 3})


def _suggestions(run: Path, summary: dict) -> str:
    found = summary if summary.get("command") == "find" else read_json(run / "lr_find.json") or {}
    listed = found.get("curves")
    curves = [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []
    chosen = (found.get("suggestion") or {}).get("name") if isinstance(found.get("suggestion"), dict) \
        else found.get("chosen")
    rows = []
    for c in curves:
        suggestions = c.get("suggestions") if isinstance(c.get("suggestions"), dict) else {}
        for name, s in suggestions.items():
            s = s if isinstance(s, dict) else {}
            lr, loss = s.get("lr"), s.get("loss")
            rows.append([c.get("label") or "lr_find", name + (" (used)" if name == chosen else ""),
                         f"{lr:.3e}" if _num(lr) else "-", _num(loss, 4) or "-", s.get("note") or ""])
    if not rows:
        return ""
    stops = "".join(f"<li>{escape(str(c.get('label') or 'lr_find'))}: "
                    f"{escape(str(c.get('stop_reason') or c.get('stop')))}"
                    f"</li>" for c in curves)
    return ("<h2>Suggested max_lr</h2>\n" + html.table(["curve", "suggestion", "lr", "loss", "note"], rows, {2, 3})
            + (f"<ul>{stops}</ul>\n" if stops else ""))


SHOWN_ROWS = 30  # rows of a per-class or most-confused table in the page; the CSVs hold them all
EVALUATIONS = 50  # evaluations listed


def _rows(path: Path) -> list[list[str]]:
    """The rows of a CSV the run wrote, the header first; none when it is absent, a link or unreadable."""
    try:
        f = open_csv(path)
    except OSError:
        return []
    with f:
        return list(itertools.islice(csv.reader(f), SHOWN_ROWS * 40 + 1))


def _interpretation(run: Path) -> str:
    """What the final model gets wrong on the validation set (trained.interpret's files)."""
    pictures = html.images(run, html.INTERPRETATION)
    confused, per_class = _rows(run / "most_confused.csv"), _rows(run / "per_class.csv")
    if not (pictures or confused or per_class):
        return ""
    parts = ["<h2>Interpretation: the final model on the validation set</h2>\n", pictures]
    if len(confused) > 1:
        parts.append("<h3>Most confused (top losses and confusion matrix above)</h3>\n"
                     + html.table(confused[0], confused[1:SHOWN_ROWS + 1], {2}))
    if len(per_class) > 1:
        rows = sorted(per_class[1:], key=lambda r: float(r[3]) if len(r) > 3 and r[3] else 2.0)
        table = [[r[0], r[1], r[2], _pct(float(r[3])) if len(r) > 3 and r[3] else "-"] for r in rows if len(r) > 2]
        title = "Per class" + (f" (the {SHOWN_ROWS} least accurate of {len(rows)})" if len(rows) > SHOWN_ROWS else "")
        parts.append(f"<h3>{escape(title)}</h3>\n" + html.table(["class", "images", "correct", "accuracy"],
                                                              table[:SHOWN_ROWS], {1, 2, 3}))
    return "".join(parts)


def _evaluations(run: Path) -> str:
    """`onecycle evaluate`'s results, one row each."""
    folder = run / "evaluations"
    if check_regular_or_dir(folder) or not folder.is_dir():  # a link: nothing outside the run is read through it
        return ""
    try:
        names = sorted(os.listdir(folder))[:EVALUATIONS]
    except OSError:
        return ""
    rows = []
    for name in names:
        if check_regular_or_dir(folder / name):
            continue
        e = read_json(folder / name / "evaluation.json") or {}
        if e.get("command") == "evaluate":
            rows.append([name, e.get("checkpoint"), e.get("data"), e.get("tta"), e.get("images"),
                         _pct(e.get("accuracy")) or "-", _pct(e.get("top5")) or "-", _num(e.get("loss"), 4) or "-"])
    if not rows:
        return ""
    return ("<h2>Evaluations (onecycle evaluate)</h2>\n"
            + html.table(["folder", "checkpoint", "data", "tta", "images", "accuracy", "top-5", "loss"], rows,
                         {4, 5, 6, 7}))


def _meta(meta: dict) -> str:
    if not meta:
        return ""
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    argv = meta.get("argv")
    return "<h2>Run</h2>\n" + html.pairs([
        ("command line", " ".join(map(str, argv)) if isinstance(argv, list) else None),
        ("started", meta.get("started")), ("host", meta.get("host")),
        ("device", f"{meta.get('device')} ({meta.get('device_name')})" if meta.get("device") else None),
        ("world size", meta.get("world_size")), ("git commit", meta.get("git_commit")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v))])


def write_run_report(run_dir: Path) -> Path:
    """Write `<run_dir>/report.html` from whatever the directory holds; returns its path."""
    run = Path(run_dir)
    summary = read_json(run / "summary.json") or {}
    row = describe(run)
    s = summary
    final = s.get("final") if isinstance(s.get("final"), dict) else {}
    best = s.get("best") if isinstance(s.get("best"), dict) else {}
    epochs = f"{s.get('epochs_done')} of {s['epochs']}" if s.get("epochs") is not None else None
    if row["command"] == "find":
        facts = [("status", row["status"]), ("stop reason", s.get("stop_reason")),
                 ("dataset / model", f"{row['dataset']} / {row['model']}" if row["dataset"] else None),
                 ("optimizer", s.get("optimizer")), ("batch size", s.get("batch_size")), ("seed", s.get("seed")),
                 ("device", s.get("device")),
                 ("suggested max_lr", f"{row['max_lr']:.3e} ({(s.get('suggestion') or {}).get('name')})"
                  if row["max_lr"] is not None else None),
                 ("wall time", _seconds(s.get("wall_seconds")))]
    else:
        facts = [("status", row["status"]), ("stop reason", s.get("stop_reason")),
                 ("dataset / model", f"{row['dataset']} / {row['model']}" if row["dataset"] else None),
                 ("parameters", f"{s['parameters']:,}" if isinstance(s.get("parameters"), int) else None),
                 ("optimizer", s.get("optimizer")),
                 ("schedule", f"{s.get('schedule')} ({s.get('shape')})" if s.get("schedule") == "onecycle"
                  else s.get("schedule") or row["schedule"]),
                 ("max_lr", f"{row['max_lr']:g}" + (f" ({s['max_lr_source']})" if s.get("max_lr_source") else "")
                  if row["max_lr"] is not None else None),
                 ("epochs", epochs), ("steps", s.get("steps")), ("batch size", s.get("batch_size")),
                 ("seed", s.get("seed")), ("device / precision", f"{s.get('device')} / {s.get('precision')}"
                                           if s.get("device") else None),
                 ("final train_loss", _num(final.get("train_loss"))),
                 ("final valid_loss", _num(final.get("valid_loss"))),
                 ("final accuracy", _pct(final.get("accuracy"))),  # as the README and `onecycle runs` quote it
                 ("best accuracy", f"{_pct(best.get('accuracy'))} (epoch {best.get('epoch')})"
                  if _pct(best.get("accuracy")) else None),
                 ("train time", _seconds(s.get("train_seconds"))), ("wall time", _seconds(s.get("wall_seconds"))),
                 ("images/s", f"{s['images_per_s']:,.0f}" if isinstance(s.get("images_per_s"), (int, float)) else None)]
    images = html.images(run)
    body = ("<h2>Summary</h2>\n" + html.pairs(facts) + _epochs(run) + _suggestions(run, s)
            + ("<h2>Plots</h2>\n" + images if images else "") + _interpretation(run) + _evaluations(run)
            + "<h2>Settings</h2>\n" + _settings(read_config(run), commands_of(s, read_json(run / "meta.json")))
            + _meta(read_json(run / "meta.json") or {}))
    subtitle = (" · ".join(escape(str(x)) for x in (row["command"], row["config"]) if x)
                + " · " + html.status(row["status"]))
    out = run / "report.html"
    atomic_write_text(out, html.page(run.name, subtitle, body))
    return out
