"""The page kit of report.html: `onecycle report runs/<id>` and `onecycle compare` draw their pages with it.

One self-contained page (inline CSS, PNGs as base64 data URIs, nothing fetched) so it survives being
mailed or copied off a GPU box; every value from a run's files is escaped, never markup. Only the
PNGs a run writes are embedded, by name, and only when they are regular files holding a PNG: a link
named `curves.png` never carries another file into a page that gets shared.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from ..safe_files import PNG_LIMIT, read_regular

# every PNG a run or a comparison writes, in the order a reader wants them; nothing else is embedded
PNG_ORDER = ("grid.png", "compare.png", "lr_find.png", "schedule.png", "curves.png", "activations.png")
INTERPRETATION = ("confusion.png", "top_losses.png")  # trained.interpret's, in the page's own section
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


def cell(value, num: bool = False) -> str:
    return f'<td class="num">{escape(str(value))}</td>' if num else f"<td>{escape(str(value))}</td>"


def table(columns: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell(v, i in numeric) for i, v in enumerate(row)) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def pairs(rows: list[tuple[str, object]]) -> str:
    """A two-column key/value table, leaving out what the files did not say."""
    kept = [(k, v) for k, v in rows if v not in (None, "")]
    return ("<table>\n" + "".join(f"<tr><th>{escape(k)}</th>{cell(v)}</tr>\n" for k, v in kept)
            + "</table>\n") if kept else "<p>(nothing recorded)</p>\n"


def images(run: Path, names: tuple[str, ...] = PNG_ORDER) -> str:
    parts = []
    for name in names:
        try:
            data = read_regular(run / name, PNG_LIMIT)  # no link followed, no FIFO waited on
        except OSError:
            continue
        if not data.startswith(PNG_MAGIC):
            continue
        parts.append(f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" '
                     f'alt="{escape(name)}"><figcaption>{escape(name)}</figcaption></figure>\n')
    return "".join(parts)


def page(title: str, subtitle: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n<p class=\"sub\">{subtitle}</p>\n{body}"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")


def status(name: str) -> str:
    return f'<span class="status {escape(name)}">{escape(name)}</span>'
