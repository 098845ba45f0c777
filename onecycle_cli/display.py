"""What a person sees, on stderr: progress bars, the fastai-style epoch table, tables and text plots.

stdout is kept for `--json`. When stderr is not a terminal (a log file, a CI job) there is no
colour and no animation: the epoch rows and the final tables are printed as plain lines, and
progress is a plain line every 30 s and at each epoch's end (`--progress auto`, the default;
`rich` forces the bar, `plain` the lines, `none` neither; ONECYCLE_PROGRESS_SECONDS sets the pace).
Everything printed is plain text: strings and table cells pass through `safe_text.plain` and reach
rich as `Text`, never as markup, so a run named `a[/x]` or holding an ESC prints as it is named. A
style is only ever one this module sets on its own constant words (`styled`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from typing import Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .safe_text import plain


def fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60:d}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def fmt_bytes(n: float) -> str:
    """A size for people: gigabytes from 0.1 GB up, megabytes from 0.1 MB, kilobytes below."""
    if n >= 1e8:
        return f"{n / 1e9:,.2f} GB"
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def fmt_num(x: float | None, digits: int = 6) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}f}"


def fmt_pct(x: float | None, digits: int = 2) -> str:
    """An accuracy (a fraction, as the records keep it) in percent, as the README quotes it: 0.993621 -> 99.36%."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
        return "-"
    return f"{100 * x:.{digits}f}%"


def fmt_value(value) -> str:
    """A config value as YAML writes it (true, null, 1e-05), so it reads like config.yaml."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    return str(value)


def text(value: object) -> Text:
    """Any value as rich `Text`: its control characters escaped, its brackets and colons literal."""
    return value if isinstance(value, Text) else Text(plain(value))


def styled(constant: str, style: str) -> Text:
    """One of our own words in a style (`warning:` in yellow); never for text from outside."""
    return Text(constant, style=style)


PROGRESS = ("auto", "rich", "plain", "none")
PLAIN_EVERY = 30.0  # seconds between plain progress lines: a log that says the run is alive, not a flood


def plain_every() -> float:
    """ONECYCLE_PROGRESS_SECONDS, else 30; 0 prints a line at every update."""
    try:
        seconds = float(os.environ.get("ONECYCLE_PROGRESS_SECONDS", PLAIN_EVERY))
    except ValueError:
        return PLAIN_EVERY
    return seconds if math.isfinite(seconds) and seconds >= 0 else PLAIN_EVERY


class Display:
    def __init__(self, enabled: bool = True, console: Console | None = None, progress: str = "auto"):
        self.enabled = enabled
        # markup and emoji off as a second guard: a string that slips past `text()` is still printed as is
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True,  # paths stay whole
                                          markup=False, emoji=False)
        self._progress: Progress | None = None
        if progress == "auto":
            progress = "rich" if self.console.is_terminal else "plain"
        self.progress_mode = progress if enabled else "none"

    @property
    def live(self) -> bool:
        """A bar drawn in place (a terminal, or --progress rich)."""
        return self.progress_mode == "rich"

    def print(self, *objects, **kwargs) -> None:
        """Strings are printed as plain text; pass a `Text` (see `styled`) for a style of our own."""
        if self.enabled:
            objects = tuple(text(o) if isinstance(o, str) else o for o in objects)
            (self._progress.console if self._progress else self.console).print(*objects, **kwargs)

    def warn(self, message: str) -> None:
        self.print(Text.assemble(styled("warning:", "yellow"), " ", text(message)))

    @contextlib.contextmanager
    def progress(self, total: int, description: str, completed: int = 0, per_step: int = 0,
                 unit: str = "images", steps: bool = True) -> Iterator["ProgressTask"]:
        """A bar with live fields (`loss`, `lr`) on a terminal, removed when done; off one, a plain line every
        30 s or so (`PlainTask`). `per_step` images a step give the rate in images/s; `steps` False counts
        `unit`s (images decoded), not steps."""
        if self.progress_mode == "plain":
            yield PlainTask(self, description, total, completed, per_step, unit, steps)
            return
        if not self.live:
            yield ProgressTask(None, None)
            return
        bar = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}", markup=False), TimeElapsedColumn(), TimeRemainingColumn(),
                       console=self.console, transient=True, refresh_per_second=4)
        with bar:
            self._progress = bar
            try:
                yield ProgressTask(bar, bar.add_task(plain(description), total=total, completed=completed, info=""))
            finally:
                self._progress = None

    @contextlib.contextmanager
    def counter(self, description: str, unit: str = "images") -> Iterator[Callable[[int, int, float], None]]:
        """A progress callback (done, total, per second) for library code: progress from its first call."""
        with contextlib.ExitStack() as stack:
            task = None

            def update(done: int, total: int, per_second: float) -> None:
                nonlocal task
                if task is None:
                    task = stack.enter_context(self.progress(total, description, unit=unit, steps=False))
                task.update(done, f"{per_second:,.0f} {unit}/s", total=total)
            yield update

    # -- the epoch table users know from fastai ---------------------------------------------
    EPOCH_COLUMNS = ("epoch", "train_loss", "valid_loss", "accuracy", "time")

    def epoch_header(self, ema: bool = False) -> None:
        columns = (*self.EPOCH_COLUMNS[:-1], "ema_accuracy", "time") if ema else self.EPOCH_COLUMNS
        self.print(styled("  ".join(f"{c:<11}" for c in columns).rstrip(), "bold"))

    def epoch_row(self, row: dict) -> None:
        cells = [str(int(row["epoch"])), fmt_num(row["train_loss"]), fmt_num(row["valid_loss"]),
                 fmt_num(row["accuracy"]), *([fmt_num(row["ema_accuracy"])] if "ema_accuracy" in row else []),
                 fmt_time(row["seconds"])]
        self.print("  ".join(f"{c:<11}" for c in cells).rstrip())

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], whole: str | None = None,
              narrow_drops: Sequence[str] = ()) -> None:
        """`whole`: a column never cut or wrapped (a run id, to be copied); `narrow_drops`: columns left out, in
        this order, while the table is wider than the terminal (a caption names them)."""
        from rich.measure import Measurement

        def build(shown: list[int]) -> Table:
            t = Table(title=text(title), title_justify="left", show_edge=False, pad_edge=False)
            for i in shown:
                t.add_column(text(columns[i]), no_wrap=columns[i] == whole)
            for r in rows:
                t.add_row(*[text(r[i]) for i in shown])
            return t

        if not self.enabled:
            return
        shown = list(range(len(columns)))
        t = build(shown)
        if self.console.is_terminal:
            # rich fits a table to the terminal by wrapping and then cutting the widest columns ("mnist_sample/si…"),
            # whatever their words: columns go, in the order given, until the table fits at its natural width
            dropped, unbounded = [], self.console.options.update(width=100_000)
            for name in narrow_drops:
                if Measurement.get(self.console, unbounded, t).maximum <= self.console.width:
                    break
                shown.remove(list(columns).index(name))
                dropped.append(name)
                t = build(shown)
            if dropped:
                t.caption, t.caption_justify = text(f"(not shown at {self.console.width} columns: "
                                                    f"{', '.join(dropped)})"), "left"
            self.print(t)
            return
        # a log file or a pipe has no width: rich would cut cells to its default 80 columns
        # ("comple…"), so print the table at its natural width and keep every character
        natural = Measurement.get(self.console, self.console.options.update(width=100_000), t).maximum
        saved = self.console.width
        self.console.width = max(saved, natural)
        try:
            self.print(t)
        finally:
            self.console.width = saved

    def text_plot(self, xs: Sequence[float], series: dict[str, Sequence[float]], title: str, xlog: bool = False,
                  marks: dict[str, float] | None = None, ylabel: str = "") -> None:
        """A curve in characters (plotext), readable over SSH. Best effort: a text plot never costs a run."""
        if not self.enabled:
            return
        try:
            import plotext as plt
            plt.clf()
            width = min(max(self.console.width - 1, 40), 100)
            plt.plotsize(width, 18)
            plt.theme("clear")
            if xlog:
                plt.xscale("log")
                finite = [x for x in xs if isinstance(x, (int, float)) and x > 0 and math.isfinite(x)]
                ticks = log_ticks(min(finite), max(finite), most=max(2, width // 8)) if finite else ([], [])
                if len(set(ticks[0])) >= 2:  # plotext's own would be plain decimals: 0.000010, 0.001000, 10.000000
                    plt.xticks(*ticks)
            for name, ys in series.items():
                pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
                if pts:
                    plt.plot([p[0] for p in pts], [p[1] for p in pts], label=name, marker="braille")
            for x in (marks or {}).values():
                plt.vline(x)
            marked = "  ".join(f"{name} {x:.2e}" for name, x in (marks or {}).items())
            plt.title(plain(f"{title}  (| {marked})" if marked else title))
            plt.xlabel("lr (log scale)" if xlog else "step")
            if ylabel:
                plt.ylabel(ylabel)
            drawn = re.sub(r"\x1b\[[0-9;]*m", "", plt.build())  # plain characters: logs and pipes stay clean
            (self._progress.console if self._progress else self.console).file.write(drawn.rstrip() + "\n")
        except Exception as e:  # missing plotext, a terminal too small: say so and go on
            self.print(f"(no text plot: {type(e).__name__}: {e})")


def log_ticks(lo: float, hi: float, most: int = 10) -> tuple[list[float], list[str]]:
    """Ticks for a log axis from `lo` to `hi` (both > 0), labelled as powers of ten: 1e-4, 1e-3, ... at every
    decade (every second, third ... past `most`), or at 1, 2 and 5 of a decade when the range holds under two."""
    first, last = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
    decades = list(range(first, last + 1))
    if len(decades) >= 2:
        decades = decades[::math.ceil(len(decades) / most)]
        return [10.0 ** k for k in decades], [f"1e{k}" for k in decades]
    marks = [(m, k) for k in range(first - 1, last + 1) for m in (1, 2, 5)
             if lo <= m * 10.0 ** k * (1 + 1e-9) and m * 10.0 ** k <= hi * (1 + 1e-9)]
    if len(marks) < 2:  # within a factor of 2.5: the two ends, in the same notation
        return [lo, hi], [_power_of_ten(lo), _power_of_ten(hi)]
    marks = marks[::math.ceil(len(marks) / most)]
    return [m * 10.0 ** k for m, k in marks], [f"{m}e{k}" for m, k in marks]


def _power_of_ten(x: float) -> str:
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


class ProgressTask:
    def __init__(self, bar: Progress | None, task):
        self.bar, self.task = bar, task
        self.per_step = 0  # images a step, where the caller learns it late (a plain line's images/s)

    def update(self, completed: int, info: str = "", total: int | None = None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, info=plain(info), total=total)

    def line(self, description: str, total: int | None = None) -> "ProgressTask":
        """A second line under this bar (a grid's running member: its epochs); nothing off a terminal."""
        if self.bar is None:
            return ProgressTask(None, None)
        return ProgressTask(self.bar, self.bar.add_task(plain(description), total=total, info=""))

    def remove(self) -> None:
        if self.bar is not None:
            self.bar.remove_task(self.task)

    def say(self) -> None:
        """Where progress is lines, one now (an epoch's end); a bar shows it already."""


class PlainTask(ProgressTask):
    """Progress as lines for a log file: `train: step 120/600 (20%)  epoch 3  loss 0.2345  lr 1.2e-02  1,234
    images/s  elapsed 00:31  ETA 02:04`, every PLAIN_EVERY seconds (at the first update after) and at `say()`."""

    def __init__(self, display: Display, description: str, total: int, completed: int, per_step: int, unit: str,
                 steps: bool = True):
        super().__init__(None, None)
        self.steps = steps
        self.display, self.description, self.total = display, plain(description), total
        self.per_step, self.unit, self.every = per_step, unit, plain_every()
        self.completed, self.info = completed, ""
        self.started, self.first = time.monotonic(), completed
        self.printed = self.started  # the first line after PLAIN_EVERY seconds: a quick refusal stays one line

    def update(self, completed: int, info: str = "", total: int | None = None) -> None:
        self.completed, self.info = completed, info
        self.total = total if total is not None else self.total
        now = time.monotonic()
        if now - self.printed >= self.every:
            self.say()

    def say(self) -> None:
        now = time.monotonic()
        self.printed = now
        elapsed = now - self.started
        count = (f"step {self.completed:,}/{self.total:,}" if self.steps
                 else f"{self.completed:,}/{self.total:,} {self.unit}")
        share = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.description}: {count}{share}"]
        if self.info:
            parts.append(plain(self.info))
        steps_per_s = (self.completed - self.first) / elapsed if elapsed > 0 else 0.0
        if self.per_step and steps_per_s > 0:
            parts.append(f"{steps_per_s * self.per_step:,.0f} {self.unit}/s")
        parts.append(f"elapsed {fmt_time(elapsed)}")
        if steps_per_s > 0 and self.total and self.completed < self.total:
            parts.append(f"ETA {fmt_time((self.total - self.completed) / steps_per_s)}")
        self.display.print("  ".join(parts))

