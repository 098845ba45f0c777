"""A grid's wall time against the same runs one after another: `python benchmarks/grid.py`.

Issue 20's measurement: 8 members of the bundled 3-vs-7 experiment (`--config mnist_sample`, seeds
0..7), run two ways, each as a user runs it, in its own process:

  serial    `onecycle train --config mnist_sample --seeds 8`: one process, one run after another, torch's
            default threads
  grid      `onecycle grid --config mnist_sample --seeds 8 --parallel 2`: 2 member processes at a time,
            cores // 2 torch threads each

Rounds are interleaved (serial, grid, serial, grid, ...; this machine's speed drifts over minutes) and
medians reported, with the ratio grid / serial (target: at most 0.75 on a 2-core machine). It also
says whether each member's accuracy equals the serial run's of the same seed: to the digit where both
sides used the same number of torch threads (`--serial-threads 1` makes the serial side use one,
as each member of a 2-wide grid on 2 cores does). Prints one JSON object.

    python benchmarks/grid.py                       # 3 rounds of 8 members, about 5 minutes on 2 cores
    python benchmarks/grid.py --serial-threads 1    # the serial side at one thread: the same numbers, to the digit
    python benchmarks/grid.py --epochs 8            # longer members: the processes' start weighs less
    python benchmarks/grid.py --smoke               # 1 round of 2 tiny members: a check, not a measurement
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def onecycle(args: list[str], cwd: Path, threads: int | None) -> tuple[float, dict]:
    """`onecycle ARGS --json` as its own process: its wall seconds and its JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PYTHONPATH"] = str(REPO)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "onecycle_cli", *args, "--json"], cwd=cwd, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"onecycle {' '.join(args)}: exit {done.returncode}: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def serial_accuracies(summary: dict) -> dict[int, float]:
    """Each seed's final accuracy from `train --seeds --json`, which lists every run's summary."""
    return {run["seed"]: run["final"]["accuracy"] for run in summary["runs"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--members", type=int, default=8, help="seeds 0..N-1")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="train.epochs of every member (default: the preset's 2)")
    ap.add_argument("--serial-threads", type=int, default=None,
                    help="torch threads of the serial side (default: torch's own choice)")
    ap.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="1 round of 2 members on 640 images, 1 epoch")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.members = 1, 2
    common = ["--config", "mnist_sample"] + (["--set", "data.train_size=640", "--set", "data.valid_size=256",
                                              "--epochs", "1"] if a.smoke else [])
    if a.epochs and not a.smoke:
        common += ["--epochs", str(a.epochs)]
    work = a.work or Path(tempfile.mkdtemp(prefix="onecycle-grid-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    serial_s, grid_s, same, serial_acc, grid_acc = [], [], [], {}, {}
    for r in range(a.rounds):
        s, summary = onecycle(["train", *common, "--seeds", str(a.members), "--runs-dir", str(work / f"serial-{r}")],
                              work, a.serial_threads)
        serial_s.append(s)
        serial_acc = serial_accuracies(summary)
        g, grid = onecycle(["grid", *common, "--seeds", str(a.members), "--parallel", str(a.parallel),
                            "--runs-dir", str(work / f"grid-{r}")], work, None)
        grid_s.append(g)
        grid_acc = {m["seed"]: m["accuracy"] for m in grid["members"]}
        same.append(grid_acc == serial_acc)
        print(f"round {r + 1}: serial {s:.1f} s, grid {g:.1f} s ({g / s:.2f}x)", file=sys.stderr)
    serial_median, grid_median = statistics.median(serial_s), statistics.median(grid_s)
    print(json.dumps({
        "benchmark": "grid", "date": time.strftime("%Y-%m-%d"), "smoke": a.smoke, "cpu": platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "members": a.members, "parallel": a.parallel, "rounds": a.rounds, "epochs": 1 if a.smoke else a.epochs or 2,
        "serial_threads": a.serial_threads or "torch default",
        "serial_seconds": [round(x, 2) for x in serial_s], "grid_seconds": [round(x, 2) for x in grid_s],
        "serial_median_s": round(serial_median, 2), "grid_median_s": round(grid_median, 2),
        "ratio": round(grid_median / serial_median, 3), "target": 0.75,
        "accuracies_equal_every_round": all(same),
        "serial_accuracies": serial_acc, "grid_accuracies": grid_acc,
    }))


if __name__ == "__main__":
    main()
