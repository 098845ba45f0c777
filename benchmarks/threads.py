"""Threads that share the box: `python benchmarks/threads.py`.

Issue 25's measurement: the bundled 3-vs-7 experiment (`onecycle train --config mnist_sample`, 2
epochs) as a user starts it, each run its own process, four ways:

  alone         one run, onecycle's threads as it now chooses them (threads.py)
  alone_torch   one run, torch's own: a thread per core, OpenMP's default waiting (what it did before)
  pair          two runs started together, onecycle's threads
  pair_torch    two runs started together, torch's own threads

Rounds are interleaved (this machine's speed drifts over minutes) and medians reported. Targets: a
pair finishes within 1.6x of one run alone (pair / alone), and one run alone is no slower than with
torch's threads (alone / alone_torch at most 1). A pair's time is the later of its two ends. Prints one
JSON object.

    python benchmarks/threads.py              # 5 rounds, about 3 minutes on 2 cores
    python benchmarks/threads.py --smoke      # 1 round of tiny runs: a check, not a measurement
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


def env_for(torch_default: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONECYCLE", "OMP_", "GOMP_"))}
    env["PYTHONPATH"] = str(REPO)
    if torch_default:  # torch's own count and OpenMP's own waiting: what onecycle did before it chose
        env["ONECYCLE_THREADS"] = str(len(os.sched_getaffinity(0)))
        env["OMP_WAIT_POLICY"] = ""  # set, so onecycle leaves the spinning alone; empty, so OpenMP keeps its own
    return env


def start(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onecycle_cli", "train", *args, "--json"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"exit {proc.returncode}: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def timed(n: int, args: list[str], cwd: Path, torch_default: bool) -> tuple[float, list[dict]]:
    """n runs started together: the seconds until the last ends, and their summaries."""
    env = env_for(torch_default)
    started = time.perf_counter()
    procs = [start(args, cwd, env) for _ in range(n)]
    summaries = [finish(p) for p in procs]
    return time.perf_counter() - started, summaries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="1 round of tiny runs: checks the script runs")
    a = ap.parse_args()
    rounds, epochs = (1, 1) if a.smoke else (a.rounds, a.epochs)
    args = ["--config", "mnist_sample", "--epochs", str(epochs)]
    if a.smoke:  # 640 images: seconds a run
        args += ["--set", "data.train_size=640", "--set", "data.valid_size=256"]
    ways = {"alone": (1, False), "alone_torch": (1, True), "pair": (2, False), "pair_torch": (2, True)}
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    threads: dict[str, set] = {k: set() for k in ways}
    accuracy: dict[str, set] = {k: set() for k in ways}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        args += ["--runs-dir", str(cwd / "runs")]
        for _ in range(rounds):
            for way, (n, torch_default) in ways.items():
                s, summaries = timed(n, args, cwd, torch_default)
                seconds[way].append(round(s, 3))
                threads[way] |= {x["threads"] for x in summaries}
                accuracy[way] |= {x["final"]["accuracy"] for x in summaries}
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(json.dumps({
        "benchmark": "threads", "machine": platform.machine(), "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(), "rounds": rounds, "epochs": epochs, "smoke": a.smoke,
        "seconds": seconds, "median_seconds": med,
        "threads": {k: sorted(v) for k, v in threads.items()},
        "accuracy": {k: sorted(v) for k, v in accuracy.items()},
        "pair_over_alone": round(med["pair"] / med["alone"], 3),
        "pair_torch_over_alone_torch": round(med["pair_torch"] / med["alone_torch"], 3),
        "alone_over_alone_torch": round(med["alone"] / med["alone_torch"], 3),
        "targets": {"pair_over_alone": "<= 1.6", "alone_over_alone_torch": "<= 1.0"},
    }, indent=1))


if __name__ == "__main__":
    main()
