"""PNG plots, derived only from a run's files: `onecycle plot RUN_DIR` redraws any run.

  lr_find.png      every range-test curve (smoothed loss against log lr), each suggestion marked
  schedule.png     LR and momentum against step, as fastai's plot_sched
  curves.png       training and validation loss, accuracy, and the mean |gradient| per step
  activations.png  per-layer mean, std and near-zero share, and each layer's histogram over time
  confusion.png    the confusion matrix of confusion.csv (trained.interpret writes it), counts in each cell
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from ..errors import OnecycleError
from ..safe_files import atomic_write_bytes, read_json
from ..safe_text import plain
from .directory import open_csv, read_csv

MARKERS = {"floor": "*", "basin": "P", "valley": "o", "steep": "v", "minimum": "s", "slide": "D"}


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on a GPU box
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def label(text: object) -> str:
    """Text from outside (a run's name, a config value) as matplotlib shows it literally: control
    characters escaped (no "missing glyph" warnings), `$` escaped (no mathtext, which can fail)."""
    return plain(text).replace("$", r"\$")


def percent_axis(ax) -> None:
    """An accuracy axis in percent, as the reports and `onecycle runs` give it (the records keep fractions)."""
    from matplotlib.ticker import PercentFormatter
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))


def _finite(xs: Sequence[float]) -> list[float]:
    return [x for x in xs if x is not None and math.isfinite(x)]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def lr_find_png(run: Path, curves: list[dict] | None = None) -> Path | None:
    rows = read_csv(run / "lr_find.csv")
    if not rows:
        return None
    if curves is None:
        for name in ("summary.json", "lr_find.json"):
            curves = (read_json(run / name) or {}).get("curves")
            if isinstance(curves, list) and curves:
                break
        curves = [c for c in curves if isinstance(c, dict)] if isinstance(curves, list) else None
    by_curve: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_curve[str(row["curve"])].append(row)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    tops, bottoms = [], []
    for (curve, pts), color in zip(by_curve.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10):
        lrs, smooth = [p["lr"] for p in pts], [p.get("lag_free_loss", math.nan) for p in pts]
        ax.plot(lrs, [p["loss"] for p in pts], ".", color=color, alpha=0.25, markersize=3)
        name = label(curve) + " " if len(by_curve) > 1 else ""
        ax.plot(lrs, [p["smooth_loss"] for p in pts], "--", color=color, alpha=0.6, linewidth=1,
                label=f"{name}EMA 0.98 (stop rule; steep, slide)")
        ax.plot(lrs, smooth, color=color, label=f"{name}lag-free smoothing (valley, minimum)")
        finite = _finite(smooth[: max(1, int(len(smooth) * 0.9))]) + _finite([p["smooth_loss"] for p in pts])
        if finite:
            tops.append(max(finite))
            bottoms.append(min(finite))
        info = next((c for c in curves or [] if (c.get("label") or "lr_find") == curve), None)
        found = (info or {}).get("suggestions")
        reading = (info or {}).get("reading")
        reading = reading if isinstance(reading, dict) else {}
        region, edge = reading.get("region"), reading.get("edge_lr")
        if isinstance(region, list) and len(region) == 2 and all(_number(v) and v > 0 for v in region):
            ax.axvspan(min(region), max(region), color=color, alpha=0.1,
                       label=f"{name}valley: start of the fall {region[0]:.1e} to floor {region[1]:.1e}")
        if _number(edge) and edge > 0:
            ax.axvline(edge, color=color, linestyle=":", linewidth=1.5, label=f"{name}divergence edge {edge:.1e}")
        for rule, s in (found.items() if isinstance(found, dict) else []):
            lr, loss = (s.get("lr"), s.get("loss")) if isinstance(s, dict) else (None, None)
            if _number(lr) and lr > 0 and _number(loss):
                ax.plot([lr], [loss], MARKERS.get(rule, "x"), color=color, markersize=8,
                        markeredgecolor="black", label=f"{name}{label(rule)} {lr:.2e}")
    ax.set_xscale("log")
    if tops:
        span = max(tops) - min(bottoms)
        ax.set_ylim(min(bottoms) - 0.05 * span - 1e-6, max(tops) + 0.1 * span + 1e-6)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    stop = next((c.get("stop_reason") for c in curves or [] if c.get("stop_reason")), "")
    ax.set_title("LR range test" + (f"\n{label(stop)}" if stop else ""), fontsize=10)
    ax.grid(True, alpha=0.3)  # major lines only: minor ones over nine decades cost more to draw than the rest
    ax.legend(fontsize=8)
    return save_png(fig, run / "lr_find.png")


def schedule_figure(steps: Sequence[int], lrs: Sequence[float] | dict[str, Sequence[float]], moms: Sequence[float],
                    path: Path, title: str = "schedule", phases: Sequence[tuple[str, int]] = ()) -> Path:
    """schedule.png (`draw_schedule`), written to `path`."""
    return save_png(draw_schedule(steps, lrs, moms, title, phases), path)


def draw_schedule(steps: Sequence[int], lrs: Sequence[float] | dict[str, Sequence[float]], moms: Sequence[float],
                  title: str = "schedule", phases: Sequence[tuple[str, int]] = ()):
    """LR and momentum against step, a dotted line where each phase begins. `lrs`: one curve, or one per parameter
    group by label (body first); groups a decade or more apart are drawn on a log scale, where each one's 1cycle
    keeps its shape."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    series = lrs if isinstance(lrs, dict) else {"": lrs}
    for name, ys in series.items():
        a.plot(steps, ys, label=label(name) or None)
    peaks = [max(_finite(ys) or [0]) for ys in series.values()]
    if len(series) > 1:
        a.legend(fontsize=7)
        if min(peaks) > 0 and max(peaks) / min(peaks) >= 10:
            a.set_yscale("log")
    a.set_title("learning rate against step", fontsize=10)
    a.set_xlabel("step")
    a.set_ylabel("lr")
    b.plot(steps, moms, color="tab:orange")
    b.set_title("momentum (or beta1) against step", fontsize=10)
    b.set_xlabel("step")
    b.set_ylabel("momentum")
    for name, step in phases[1:]:
        for ax in (a, b):
            ax.axvline(step, color="grey", linestyle=":", linewidth=0.8)
    fig.suptitle(label(title), fontsize=11)
    phase_labels(fig, a, phases[1:])
    return fig


def phase_labels(fig, ax, phases: Sequence[tuple[str, int]]) -> None:
    """Each phase's name up its line, never over another's: beside the line at the top of the panel, else on the
    line's other side, else lower down, below a label already there. A phase a few steps from the last (a 1-epoch
    fine_tune, pct_start 0.05) would otherwise print its name across its neighbour's. A name with no room left in
    the panel joins one line under the figure."""
    from matplotlib.transforms import Bbox
    ax.get_xlim(), ax.get_ylim()  # the limits autoscaling settles on, before anything is measured against them
    renderer = fig.canvas.get_renderer()
    panel = ax.get_window_extent(renderer)
    placed: list[Bbox] = []
    left_over = []
    to_points = 72 / fig.dpi
    for name, step in phases:
        tops = [panel.y1] + sorted((b.y0 for b in placed), reverse=True)  # the panel's top, or under a label
        for top in tops:
            fitted = None
            for side, dx in (("right", -1), ("left", 1)):  # the line's left side first, as fastai's plot_sched
                text = ax.annotate(label(name), (step, 1), xycoords=ax.get_xaxis_transform(),
                                   xytext=(dx, -(panel.y1 - top) * to_points - 2), textcoords="offset points",
                                   fontsize=7, rotation=90, va="top", ha=side, color="grey", annotation_clip=False)
                box = text.get_window_extent(renderer)
                inside = panel.x0 <= box.x0 and box.x1 <= panel.x1 and box.y0 >= panel.y0
                if inside and not any(box.overlaps(other) for other in placed):
                    fitted = box
                    break
                text.remove()
            if fitted is not None:
                placed.append(fitted)
                break
        else:
            left_over.append(f"{name} at step {step}")
    if left_over:
        fig.text(0.5, -0.02, label("phases not labelled above: " + "; ".join(left_over)), ha="center", va="top",
                 fontsize=7, color="grey")


def schedule_png(run: Path) -> Path | None:
    rows = read_csv(run / "steps.csv")
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    groups = sorted((k for k in rows[0] if re.fullmatch(r"lr_\d+", k)), key=lambda k: int(k[3:]))
    names = [g.get("name") for g in _summary(run).get("groups") or [] if isinstance(g, dict)]
    lrs: list[float] | dict[str, list[float]] = [r["lr"] for r in rows]
    if len(groups) > 1 and any(r[groups[0]] != r[groups[-1]] for r in rows):  # one curve when all are equal
        lrs = {f"{k} ({names[i]})" if i < len(names) and names[i] else k: [r[k] for r in rows]
               for i, k in enumerate(groups)}
    # the cycle changes (fine_tune: frozen, then unfrozen) where the phase column does
    changes = [(str(b.get("phase")), int(b["step"]) - 1) for a, b in zip(rows, rows[1:])
               if a.get("phase") != b.get("phase")]
    return schedule_figure(steps, lrs, [r["momentum"] for r in rows], run / "schedule.png", title=run.name,
                           phases=[("start", 0)] + changes)


def _summary(run: Path) -> dict:
    import json
    try:
        data = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def curves_png(run: Path) -> Path | None:
    steps, metrics = read_csv(run / "steps.csv"), read_csv(run / "metrics.csv")
    if not steps and not metrics:
        return None
    plt = pyplot()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.8))
    if steps:
        a.plot([r["step"] for r in steps], [r["loss"] for r in steps], alpha=0.25, linewidth=0.7, label="train (step)")
        a.plot([r["step"] for r in steps], [r["smooth_loss"] for r in steps], label="train (smoothed)")
        c.plot([r["step"] for r in steps], [r["grad_abs"] for r in steps], linewidth=0.8)
        if _finite([r["grad_abs"] for r in steps]) and min(_finite([r["grad_abs"] for r in steps])) > 0:
            c.set_yscale("log")
    if metrics:
        a.plot([r["step"] for r in metrics], [r["valid_loss"] for r in metrics], "o-", label="valid")
        b.plot([r["epoch"] for r in metrics], [r["accuracy"] for r in metrics], "o-", color="tab:green")
        best = max(metrics, key=lambda r: r["accuracy"] if math.isfinite(r["accuracy"]) else -1)
        b.set_title(f"accuracy (best {100 * best['accuracy']:.2f}%, epoch {int(best['epoch'])})", fontsize=10)
        percent_axis(b)
    else:
        b.set_title("accuracy (no epoch finished)", fontsize=10)
    a.set_title("loss", fontsize=10)
    a.set_xlabel("step")
    a.legend(fontsize=8)
    b.set_xlabel("epoch")
    c.set_title("mean |gradient| over all parameters", fontsize=10)
    c.set_xlabel("step")
    fig.suptitle(label(run.name), fontsize=11)
    return save_png(fig, run / "curves.png")


def activations_png(run: Path) -> Path | None:
    import csv

    import numpy as np
    stats_path, hist_path = run / "activation_stats.csv", run / "activation_hist.csv"
    if not stats_path.exists():
        return None
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open_csv(stats_path) as f:
        for r in csv.DictReader(f):
            if None in r.values():
                continue
            for k in ("step", "mean", "std", "near_zero"):
                series[r["layer"]][k].append(float(r[k]))
    hists: dict[str, list[list[float]]] = defaultdict(list)
    if hist_path.exists():
        with open_csv(hist_path) as f:
            for r in csv.DictReader(f):
                if None in r.values():
                    continue
                hists[r["layer"]].append([float(v) for k, v in r.items() if k.startswith("h")])
    layers = list(series)
    if not layers:
        return None
    plt = pyplot()
    cols = min(len(layers), 6)
    rows_of_hists = math.ceil(len(layers) / cols)
    fig = plt.figure(figsize=(15, 3.6 + 1.9 * rows_of_hists), layout="constrained")
    grid = fig.add_gridspec(1 + rows_of_hists, cols * 2, height_ratios=[2] + [1] * rows_of_hists)
    top = [fig.add_subplot(grid[0, i * (2 * cols // 3):(i + 1) * (2 * cols // 3)]) for i in range(3)]
    for name in layers:
        s = series[name]
        top[0].plot(s["step"], s["mean"], linewidth=0.8, label=label(name))
        top[1].plot(s["step"], s["std"], linewidth=0.8)
        top[2].plot(s["step"], s["near_zero"], linewidth=0.8)
    for ax, title in zip(top, ("mean", "std", "share near zero")):
        ax.set_title(f"activation {title}", fontsize=10)
        ax.set_xlabel("step")
    if len(layers) <= 12:
        top[0].legend(fontsize=6)
    for i, name in enumerate(layers):
        ax = fig.add_subplot(grid[1 + i // cols, (i % cols) * 2:(i % cols) * 2 + 2])
        h = np.array(hists.get(name) or [[0.0]])
        ax.imshow(np.log1p(h).T, origin="lower", aspect="auto", cmap="viridis")
        ax.set_title(f"{label(name)}: histogram over steps", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return save_png(fig, run / "activations.png")


MATRIX_LIMIT = 100  # classes a side drawn from confusion.csv (trained.interpret writes 30 at most)


def confusion_png(folder: Path) -> Path | None:
    """The counts of confusion.csv (actual rows x predicted columns), the diagonal dark, each cell numbered."""
    try:
        f = open_csv(folder / "confusion.csv")
    except FileNotFoundError:
        return None
    with f:
        rows = list(itertools.islice(csv.reader(f), MATRIX_LIMIT + 1))
    if len(rows) < 2 or len(rows[0]) < 2:
        return None
    names = rows[0][1:]
    if len(names) > MATRIX_LIMIT or len(rows) > MATRIX_LIMIT + 1:
        raise OnecycleError(f"confusion.csv has more than {MATRIX_LIMIT} classes a side, more than onecycle writes")
    body = [r for r in rows[1:] if len(r) == len(names) + 1]
    try:
        counts = [[int(v) for v in r[1:]] for r in body]
    except ValueError:
        raise OnecycleError("confusion.csv holds a count that is not an integer") from None
    plt = pyplot()
    n = len(names)
    side = min(16.0, 2.5 + 0.38 * n)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(counts, cmap="Blues", aspect="equal", interpolation="nearest")
    ticks = [label(x if len(x) <= 24 else x[:23] + "…") for x in names]
    ax.set_xticks(range(n), ticks, rotation=90, fontsize=8)
    ax.set_yticks(range(len(body)), [label(r[0] if len(r[0]) <= 24 else r[0][:23] + "…") for r in body], fontsize=8)
    top = max((max(r) for r in counts if r), default=0)
    for i, r in enumerate(counts):
        for j, v in enumerate(r):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7 if n > 12 else 9,
                    color="white" if v > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    corner = rows[0][0]
    ax.set_title(label("confusion matrix" + (corner[corner.find(" ("):] if " (" in corner else "")), fontsize=10)
    return save_png(fig, folder / "confusion.png")


PLOTTERS = (lr_find_png, schedule_png, curves_png, activations_png, confusion_png)


def reason(e: Exception) -> str:
    """An error as the end of a one-line warning: ours say it all, others need their kind."""
    return str(e) if isinstance(e, OnecycleError) else f"{type(e).__name__}: {e}"


def plot_run(run: Path) -> tuple[list[Path], list[str]]:
    """Every plot the run's files allow; a failing plot is reported, never fatal to the run."""
    written, errors = [], []
    for plotter in PLOTTERS:
        try:
            path = plotter(run)
        except Exception as e:  # a plot is a view of the records: losing it must not lose the run
            errors.append(f"{plotter.__name__.replace('_png', '.png')} not written: {reason(e)}")
            continue
        if path is not None:
            written.append(path)
    return written, errors
