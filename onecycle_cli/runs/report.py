"""One HTML page per run: `onecycle report runs/<id>` writes runs/<id>/report.html.

The page is self-contained so it survives being mailed, copied off a GPU box or opened from disk:
the PNGs are embedded as base64 data URIs, the CSS is inline, nothing is fetched. Like the plots it
is derived only from the run's files, and it must be writable for any directory a run can leave
behind (killed before its first epoch, a failed range test), so every part is optional. Only the
PNGs a run writes are embedded, by name, and only when they are regular files holding a PNG: a
link named `curves.png` (or `secret.png`) never carries another file into a page that gets shared.
"""

from __future__ import annotations

import base64
import math
import os
from html import escape
from pathlib import Path

from .display import fmt_num, fmt_time
from .rundir import atomic_write_text, read_csv
from .runs import commands_of, describe, read_config, read_json
from .safe_files import PNG_LIMIT, read_regular

# every PNG a run or a comparison writes, in the order a reader wants them; nothing else is embedded
PNG_ORDER = ("compare.png", "lr_find.png", "schedule.png", "curves.png", "activations.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; word-break: break-all; }
h2 { font-size: 1.1em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f6f6f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; }
.status { display: inline-block; padding: 0 0.5em; border-radius: 3px; color: #fff; background: #888; }
.status.completed { background: #2a7d2a; } .status.running { background: #2a5d9d; }
.status.crashed, .status.failed, .status.diverged, .status.unreadable { background: #b03030; }
.status.interrupted, .status.incomplete { background: #b07a10; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.9em; }
details summary { cursor: pointer; color: #444; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.92em; }
.chosen { font-weight: 600; }
"""

# Sets data-images-loaded on <body> once every image has loaded or failed: the number that did
# load. The browser test reads it from the dumped DOM, so a broken data URI fails a test.
SCRIPT = """
window.addEventListener("load", function () {
  var n = 0;
  for (var i = 0; i < document.images.length; i++) {
    if (document.images[i].complete && document.images[i].naturalWidth > 0) n++;
  }
  document.body.dataset.imagesLoaded = String(n);
});
"""


def _cell(value, num: bool = False) -> str:
    return f'<td class="num">{escape(str(value))}</td>' if num else f"<td>{escape(str(value))}</td>"


def _table(columns: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(v, i in numeric) for i, v in enumerate(row)) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _pairs(rows: list[tuple[str, object]]) -> str:
    """A two-column key/value table, leaving out what the files did not say."""
    kept = [(k, v) for k, v in rows if v not in (None, "")]
    return ("<table>\n" + "".join(f"<tr><th>{escape(k)}</th>{_cell(v)}</tr>\n" for k, v in kept)
            + "</table>\n") if kept else "<p>(nothing recorded)</p>\n"


def _num(x, digits: int = 6) -> str | None:
    return fmt_num(float(x), digits) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def write_views(run: Path) -> list[str]:
    """Redraw a run's PNGs and write its report.html; what could not be written, one line each.

    They are views of the records, so a failure here (a full disk, a name matplotlib cannot draw) is
    a warning for the caller to show: it never changes a run's outcome or its exit code.
    """
    from .plots import plot_run, reason
    _, problems = plot_run(run)
    try:
        write_run_report(run)
    except Exception as e:
        problems.append(f"report.html not written: {reason(e)}")
    return problems


def _seconds(x) -> str | None:
    return f"{fmt_time(x)} ({x:.1f} s)" if isinstance(x, (int, float)) and math.isfinite(x) else None


def _images(run: Path) -> str:
    parts = []
    for name in PNG_ORDER:
        try:
            data = read_regular(run / name, PNG_LIMIT)  # no link followed, no FIFO waited on
        except OSError:
            continue
        if not data.startswith(PNG_MAGIC):
            continue
        parts.append(f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" '
                     f'alt="{escape(name)}"><figcaption>{escape(name)}</figcaption></figure>\n')
    return "".join(parts)


def _page(title: str, subtitle: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n<p class=\"sub\">{subtitle}</p>\n{body}"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")


def _status(status: str) -> str:
    return f'<span class="status {escape(status)}">{escape(status)}</span>'


def _settings(config: dict | None, commands: frozenset[str]) -> str:
    """The keys the run read, by section; the ones its dataset, model, optimiser, schedule or command
    never read folded away below with the reason, so nobody takes them for the run's settings."""
    if config is None:
        return "<p>config.yaml cannot be read.</p>\n"
    if not config:
        return "<p>(no config.yaml)</p>\n"
    from .compare import fmt_value
    from .config import flatten, unread
    ignored = unread(flatten(config), commands)
    parts = []
    for section, keys in config.items():
        if not isinstance(keys, dict):
            parts.append(f"<h3>{escape(str(section))}</h3>\n" + _table(["key", "value"], [["", fmt_value(keys)]]))
            continue
        rows = [[k, fmt_value(v)] for k, v in keys.items() if f"{section}.{k}" not in ignored]
        if rows:
            parts.append(f"<h3>{escape(str(section))}</h3>\n" + _table(["key", "value"], rows))
    if ignored:
        flat = flatten(config)
        parts.append(f"<details><summary>{len(ignored)} settings this run did not read</summary>\n"
                     + _table(["key", "value", "read"], [[k, fmt_value(flat[k]), why] for k, why in ignored.items()])
                     + "</details>\n")
    return "".join(parts)


def _epochs(run: Path) -> str:
    try:
        rows = read_csv(run / "metrics.csv")
    except OSError:  # a link or a FIFO in its place: the page goes without its epoch table
        return ""
    if not rows:
        return ""
    # formatted as the terminal's epoch table, so a number read there can be found here
    table = [[str(int(r["epoch"])) if isinstance(r["epoch"], float) and math.isfinite(r["epoch"]) else r["epoch"],
              fmt_num(r["train_loss"]), fmt_num(r["valid_loss"]), fmt_num(r["accuracy"]),
              fmt_time(r["seconds"]) if isinstance(r["seconds"], float) and math.isfinite(r["seconds"]) else "-"]
             for r in rows]
    return "<h2>Epochs</h2>\n" + _table(["epoch", "train_loss", "valid_loss", "accuracy", "time"], table, {1, 2, 3})


def _suggestions(run: Path, summary: dict) -> str:
    found = summary if summary.get("command") == "find" else read_json(run / "lr_find.json") or {}
    curves = [c for c in found.get("curves") or [] if isinstance(c, dict)] if isinstance(found.get("curves"), list) else []
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
    stops = "".join(f"<li>{escape(str(c.get('label') or 'lr_find'))}: {escape(str(c.get('stop_reason') or c.get('stop')))}"
                    f"</li>" for c in curves)
    return ("<h2>Suggested max_lr</h2>\n" + _table(["curve", "suggestion", "lr", "loss", "note"], rows, {2, 3})
            + (f"<ul>{stops}</ul>\n" if stops else ""))


def _meta(meta: dict) -> str:
    if not meta:
        return ""
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    argv = meta.get("argv")
    return "<h2>Run</h2>\n" + _pairs([
        ("command line", " ".join(map(str, argv)) if isinstance(argv, list) else None),
        ("started", meta.get("started")), ("host", meta.get("host")),
        ("device", f"{meta.get('device')} ({meta.get('device_name')})" if meta.get("device") else None),
        ("world size", meta.get("world_size")), ("git commit", meta.get("git_commit")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v))])


def write_run_report(run_dir: Path) -> Path:
    """Write `<run_dir>/report.html` from whatever the directory holds; returns its path."""
    run = Path(run_dir)
    summary = read_json(run / "summary.json") or {}
    if summary.get("command") == "compare":
        return write_compare_report(run)
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
                 ("final train_loss", _num(final.get("train_loss"))), ("final valid_loss", _num(final.get("valid_loss"))),
                 ("final accuracy", _num(final.get("accuracy"))),
                 ("best accuracy", f"{_num(best.get('accuracy'))} (epoch {best.get('epoch')})"
                  if _num(best.get("accuracy")) else None),
                 ("train time", _seconds(s.get("train_seconds"))), ("wall time", _seconds(s.get("wall_seconds"))),
                 ("images/s", f"{s['images_per_s']:,.0f}" if isinstance(s.get("images_per_s"), (int, float)) else None)]
    images = _images(run)
    body = ("<h2>Summary</h2>\n" + _pairs(facts) + _epochs(run) + _suggestions(run, s)
            + ("<h2>Plots</h2>\n" + images if images else "")
            + "<h2>Settings</h2>\n" + _settings(read_config(run), commands_of(s, read_json(run / "meta.json")))
            + _meta(read_json(run / "meta.json") or {}))
    subtitle = " · ".join(escape(str(x)) for x in (row["command"], row["config"]) if x) + " · " + _status(row["status"])
    out = run / "report.html"
    atomic_write_text(out, _page(run.name, subtitle, body))
    return out


def write_compare_report(compare_dir: Path) -> Path:
    """Write `<compare_dir>/report.html` from the comparison's summary.json and compare.png."""
    from .compare import check_summary, fmt_value, table
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
        links.append(f"<li>{name}: {escape(r['label'])} ({_status(r['status'])})</li>")
    shared = summary.get("shared") or {}
    body = ("<h2>Runs</h2>\n<ul>" + "".join(links) + "</ul>\n"
            "<h2>Settings that differ, and results</h2>\n" + _table(columns, rows, set(range(1, len(columns))))
            + ("<h2>Curves</h2>\n" + _images(out_dir) if (out_dir / "compare.png").is_file() else "")
            + (f"<h2>Settings they share</h2>\n<details><summary>{len(shared)} settings</summary>\n"
               + _table(["key", "value"], [[k, fmt_value(v)] for k, v in shared.items()]) + "</details>\n"
               if shared else ""))
    out = out_dir / "report.html"
    atomic_write_text(out, _page(out_dir.name, f"compare · {len(runs)} runs", body))
    return out
