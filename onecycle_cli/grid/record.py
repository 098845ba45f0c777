"""The record of a grid: `onecycle grid ... ; ls runs/<timestamp>-grid-<config>/`.

  grid.json     the spec, every member (its values, seed, status, run directory, accuracy, exit code,
                and each attempt's outcome), a summary per grid point (mean ± std over seeds, n), the
                best point and, for --around find, the suggestion and its regret; rewritten whole
                after every member
  summary.json  what `onecycle runs` lists: command grid, status, members done of total
  grid.csv      one row per member: the varied keys, seed, status, final accuracy, wall seconds, run dir
  grid.png      accuracy against each varied key: every seed a dot, the mean a line
  report.html   the tables and the picture, linking each member's own report

Everything here is derived from grid.json, so the views can be redrawn from it at any time.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from html import escape
from pathlib import Path

from ..display import fmt_pct, fmt_time, fmt_value
from ..runs import html
from ..runs.directory import to_json
from ..runs.plots import label, percent_axis, pyplot, save_png
from ..safe_files import atomic_write_text

FINAL = ("completed", "diverged")  # a member in one of these is done: --resume leaves it as it is
# the grid's exit code is its worst member's: an interruption, then a failure, then a divergence
SEVERITY = {"completed": 0, "diverged": 1, "failed": 2, "pending": 3, "running": 3, "interrupted": 3}


def is_grid(obj) -> bool:
    """What `onecycle grid` writes as grid.json: its command, its members and its spec."""
    return (isinstance(obj, dict) and obj.get("command") == "grid" and isinstance(obj.get("members"), list)
            and isinstance(obj.get("spec"), dict))


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def points(grid: dict) -> list[dict]:
    """One entry per grid point (the varied values), in member order: mean ± std of the completed seeds."""
    by_point: dict[str, dict] = {}
    for m in grid["members"]:
        key = to_json(m["values"])
        p = by_point.setdefault(key, {"values": m["values"], "members": [], "accuracies": []})
        p["members"].append(m["index"])
        if m["status"] == "completed" and _number(m.get("accuracy")):
            p["accuracies"].append(m["accuracy"])
    out = []
    for p in by_point.values():
        acc = p["accuracies"]
        out.append({**p, "n": len(acc), "mean": statistics.fmean(acc) if acc else None,
                    "std": statistics.stdev(acc) if len(acc) > 1 else 0.0 if acc else None})
    return out


def _is_suggestion(values: dict, suggestion: dict | None) -> bool:
    lr = values.get("schedule.max_lr")
    # a member's max_lr is the suggestion x factor written to six digits (spec.around_members)
    return bool(suggestion) and _number(lr) and math.isclose(lr, suggestion["lr"], rel_tol=1e-5)


def findings(grid: dict, pts: list[dict]) -> dict:
    """The best point (highest mean accuracy) and, with a suggestion, its mean and the regret in points."""
    scored = [p for p in pts if p["mean"] is not None]
    best = max(scored, key=lambda p: p["mean"]) if scored else None
    out = {"best": {"values": best["values"], "mean": best["mean"], "std": best["std"], "n": best["n"]}
           if best else None}
    suggestion = grid.get("suggestion")
    if suggestion:
        at = [p for p in scored if _is_suggestion(p["values"], suggestion)]
        mean = max(p["mean"] for p in at) if at else None
        out["suggestion_mean"] = mean
        # in percentage points: 0.6 means the best point was 0.6% more accurate than the suggestion
        out["regret"] = round(100 * (best["mean"] - mean), 6) if best and mean is not None else None
    return out


def counts(grid: dict) -> dict:
    out: dict[str, int] = {}
    for m in grid["members"]:
        out[m["status"]] = out.get(m["status"], 0) + 1
    return out


def worst(grid: dict) -> str:
    """The grid's status: completed only when every member is."""
    return max((m["status"] for m in grid["members"]), key=lambda s: SEVERITY.get(s, 2), default="completed")


def write_records(grid_dir: Path, grid: dict) -> None:
    """grid.json (whole, atomically), summary.json for `onecycle runs`, and grid.csv."""
    pts = points(grid)
    grid["points"] = [{k: p[k] for k in ("values", "n", "mean", "std", "members")} for p in pts]
    grid.update(findings(grid, pts))
    grid["counts"] = counts(grid)
    atomic_write_text(grid_dir / "grid.json", to_json(grid) + "\n")
    done = sum(m["status"] in FINAL for m in grid["members"])
    best = grid.get("best") or {}
    atomic_write_text(grid_dir / "summary.json", to_json({
        "command": "grid", "status": grid["status"], "config": grid["config"], "run_dir": str(grid_dir),
        "started": grid["started"], "members_done": done, "members_total": len(grid["members"]),
        "best": {"accuracy": best["mean"]} if best else None, "wall_seconds": grid.get("wall_seconds")}) + "\n")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*grid["keys"], "seed", "status", "accuracy", "wall_seconds", "run_dir"])
    for m in grid["members"]:
        writer.writerow([*(m["texts"].get(k, "") for k in grid["keys"]), m["seed"], m["status"],
                         "" if m.get("accuracy") is None else repr(m["accuracy"]),
                         "" if m.get("wall_seconds") is None else m["wall_seconds"], m.get("run_dir") or ""])
    atomic_write_text(grid_dir / "grid.csv", out.getvalue())


def log_axis(values: list) -> bool:
    """A learning rate or a weight decay: all numbers > 0 spanning more than a decade."""
    return bool(values) and all(_number(v) and v > 0 for v in values) and max(values) / min(values) > 10


def grid_png(grid_dir: Path, grid: dict) -> Path | None:
    """Accuracy against each varied key: every completed member a dot, the mean over the rest a line."""
    keys = grid["keys"]
    done = [m for m in grid["members"] if m["status"] == "completed" and _number(m.get("accuracy"))]
    if not keys or not done:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = list(dict.fromkeys(to_json(m["values"][key]) for m in grid["members"]))
        raw = {to_json(m["values"][key]): m["values"][key] for m in grid["members"]}
        numeric = all(_number(raw[v]) for v in values)
        order = sorted(values, key=lambda v: raw[v]) if numeric else values
        x = {v: (raw[v] if numeric else i) for i, v in enumerate(order)}
        ax.plot([x[to_json(m["values"][key])] for m in done], [m["accuracy"] for m in done], "o", alpha=0.5,
                label="each seed")
        means = [(x[v], statistics.fmean(a)) for v in order
                 if (a := [m["accuracy"] for m in done if to_json(m["values"][key]) == v])]
        ax.plot([p[0] for p in means], [p[1] for p in means], "-", color="black", label="mean")
        if numeric and log_axis([raw[v] for v in order]):
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(order)), [label(fmt_value(raw[v])) for v in order])
        suggestion = grid.get("suggestion")
        if suggestion and key == "schedule.max_lr":
            ax.axvline(suggestion["lr"], color="tab:red", linestyle="--",
                       label=f"range test's {label(suggestion['name'])} {suggestion['lr']:.2e}")
        ax.set_xlabel(label(key) + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel("final accuracy")
        percent_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(label(f"{grid['config']}: {len(done)} of {len(grid['members'])} members completed"), fontsize=11)
    fig.tight_layout()
    return save_png(fig, grid_dir / "grid.png")


def _acc(x) -> str:
    return fmt_pct(x) if _number(x) else "-"  # in percent, as the regret is in points


def _spread(mean, std) -> str:
    """A point's mean ± std over its seeds, as the README writes them: 95.29 ± 0.27%."""
    return f"{100 * mean:.2f} ± {100 * std:.2f}%" if _number(mean) and _number(std) else _acc(mean)


def write_report(grid_dir: Path, grid: dict) -> Path:
    """report.html: the findings, the points, the picture, and every member linking to its own report."""
    keys = grid["keys"]
    best, suggestion = grid.get("best"), grid.get("suggestion")
    states = ", ".join(f"{n} {s}" for s, n in counts(grid).items())
    facts = [("status", grid["status"]), ("members", f"{len(grid['members'])} ({states})"),
             ("best point", (", ".join(f"{k}={fmt_value(v)}" for k, v in best["values"].items()) or "(one point)")
              + f": {_spread(best['mean'], best['std'])} (n={best['n']})" if best else None)]
    if suggestion:
        facts += [("range test's suggestion",
                   f"{suggestion['lr']:.3e} ({suggestion['name']}, {suggestion['find_run']})"),
                  ("suggestion's mean accuracy", _acc(grid.get("suggestion_mean"))),
                  ("regret (points of accuracy)", f"{grid['regret']:.2f}" if _number(grid.get("regret")) else None)]
    facts.append(("wall time", fmt_time(grid["wall_seconds"]) if _number(grid.get("wall_seconds")) else None))
    point_rows = [[*(fmt_value(p["values"][k]) for k in keys), p["n"], _acc(p["mean"]),
                   f"{100 * p['std']:.2f}" if _number(p["std"]) else "-"]
                  for p in grid.get("points") or []]
    member_rows = []
    for m in grid["members"]:
        run = m.get("run_dir")
        target = Path(run) / "report.html" if run else None
        name = escape(Path(run).name) if run else "-"
        if target is not None and target.is_file():  # only links that open
            name = f'<a href="{escape(os.path.relpath(target.resolve(), grid_dir.resolve()))}">{name}</a>'
        member_rows.append("<tr>" + "".join(html.cell(m["texts"][k]) for k in keys) + html.cell(m["seed"], True)
                           + f"<td>{html.status(m['status'])}</td>" + html.cell(_acc(m.get("accuracy")), True)
                           + html.cell(m.get("wall_seconds") if m.get("wall_seconds") is not None else "-", True)
                           + f"<td>{name}</td></tr>\n")
    head = "".join(f"<th>{escape(c)}</th>" for c in [*keys, "seed", "status", "accuracy", "wall s", "run"])
    body = ("<h2>Summary</h2>\n" + html.pairs(facts)
            + "<h2>Grid points (mean ± std over seeds)</h2>\n"
            + html.table([*keys, "n", "mean accuracy", "std (points)"], point_rows,
                         set(range(len(keys), len(keys) + 3)))
            + ("<h2>Accuracy against each varied key</h2>\n" + html.images(grid_dir)
               if (grid_dir / "grid.png").is_file() else "")
            + f"<h2>Members</h2>\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(member_rows)}"
              "</tbody>\n</table>\n")
    out = grid_dir / "report.html"
    atomic_write_text(out, html.page(grid_dir.name, f"grid · {len(grid['members'])} members · "
                                     f"{escape(str(grid['config']))}", body))
    return out


def write_views(grid_dir: Path, grid: dict) -> list[str]:
    """grid.png and report.html; what could not be written, one line each (views never change the outcome)."""
    problems = []
    try:
        grid_png(grid_dir, grid)
    except Exception as e:
        problems.append(f"grid.png not written: {type(e).__name__}: {e}")
    try:
        write_report(grid_dir, grid)
    except Exception as e:
        problems.append(f"report.html not written: {type(e).__name__}: {e}")
    return problems
