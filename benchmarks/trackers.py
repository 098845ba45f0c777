"""What logging to MLflow or W&B costs a run's training: `python benchmarks/trackers.py`.

Issue 22's "Overhead" measurement: the fastai docs' 3-vs-7 run (`--config mnist_sample`: 12,396 bundled
images, 2 epochs, batch 64, log_every 100) trained with no tracker, with `--log mlflow` (the default
SQLite store under the runs root), with `--log mlflow` against a real `mlflow server` on 127.0.0.1
(MLFLOW_TRACKING_URI), and with `--log wandb` (offline: this benchmark never uploads). Each run is its
own process, as a user runs it; the rounds are interleaved, each in a rotated order (this machine's
speed drifts over minutes), and medians reported.

What is compared: the summary's `train_seconds` (the training loops of every epoch: what the tracker
must not slow) against the untracked run's, as a ratio per tracker of the medians (target: <= 1.03), and
as the median of each round's ratio (`paired_train_ratio`); `untracked_spread` says how much the untracked
run's own time moves between rounds, which a ratio must be read against. `tracker_cpu_share` is the
CPU the tracker's sends took on the run's cores while it trained (each summary's training_cpu_seconds),
as a share of train_seconds: the most they can take from the steps, and a number that does not drift
with the machine (W&B's own service process, outside the run, is not in it). The whole process's
wall time is reported beside it: opening a tracker (importing MLflow, creating its tables, starting
W&B's service) and sending the artifacts at the end take seconds of their own, outside the training
loop, and a reader should see them. The final accuracy of every run must be the same: a tracker reads
the records, it never changes the training. Prints one JSON object.

    python benchmarks/trackers.py                 # 7 rounds of 4 runs, about 5 minutes on 2 cores
    python benchmarks/trackers.py --rounds 15     # what the README reports: about 11 minutes
    python benchmarks/trackers.py --rounds 3 --trackers none,mlflow
    python benchmarks/trackers.py --smoke         # 1 round of 1-epoch runs on 512 images, no server: a check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("none", "mlflow", "mlflow-server", "wandb")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on 127.0.0.1 with a SQLite backend, waited for until /health answers."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                             "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "wb"), start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            sys.exit(f"mlflow server exited {proc.returncode}: see {folder / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            time.sleep(0.3)


def train(kind: str, a, server: str | None) -> dict:
    tracker = kind.split("-")[0]  # mlflow-server is --log mlflow with MLFLOW_TRACKING_URI
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONECYCLE", "WANDB", "MLFLOW"))}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="offline", WANDB_SILENT="true")
    if kind == "mlflow-server":
        env["MLFLOW_TRACKING_URI"] = server
    cmd = [sys.executable, "-m", "onecycle_cli", "train", "--config", "mnist_sample", "--epochs", str(a.epochs),
           "--runs-dir", str(a.work / "runs"), "--progress", "none", "--json",
           *(["--log", tracker] if kind != "none" else []),
           *[arg for s in a.set for arg in ("--set", s)]]
    started = time.perf_counter()
    p = subprocess.run(cmd, cwd=a.work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    s = json.loads(p.stdout.strip().splitlines()[-1])
    said = s.get("trackers", {}).get(tracker)
    if kind != "none" and said is None:
        sys.exit(f"{kind}: the run did not log to its tracker:\n{p.stderr[-3000:]}")
    cpu = said["training_cpu_seconds"] if said is not None else None
    return {"train_seconds": s["train_seconds"], "wall_seconds": round(wall, 3), "cpu_seconds": cpu,
            "accuracy": s["final"]["accuracy"], "steps": s["steps"], "device": s["device"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trackers", help=f"comma-separated, of {', '.join(KINDS)} (default all; --smoke: no server)")
    p.add_argument("--rounds", type=int, help="default 7 (--smoke 1)")
    p.add_argument("--epochs", type=int, help="default 2 (--smoke 1)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "onecycle-trackers")
    p.add_argument("--smoke", action="store_true", help="the smallest run of every step, in seconds: not a measurement")
    a = p.parse_args()
    kinds = (a.trackers or ("none,mlflow,wandb" if a.smoke else ",".join(KINDS))).split(",")
    if "none" not in kinds or not set(kinds) <= set(KINDS):
        p.error(f"--trackers: a comma-separated list of {', '.join(KINDS)}, with none (the reference) among them")
    a.rounds = a.rounds or (1 if a.smoke else 7)
    a.epochs = a.epochs or (1 if a.smoke else 2)
    a.set = ["data.train_size=512", "data.valid_size=128", "train.log_every=4"] if a.smoke else []
    a.work.mkdir(parents=True, exist_ok=True)
    proc, server = start_server(a.work / "server") if "mlflow-server" in kinds else (None, None)
    try:
        each: dict[str, list[dict]] = {k: [] for k in kinds}
        for r in range(a.rounds):
            for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                each[kind].append(train(kind, a, server))
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    import torch
    median = {k: {key: statistics.median(x[key] for x in v) for key in ("train_seconds", "wall_seconds")}
              for k, v in each.items()}
    base = median["none"]
    ratios = {k: round(m["train_seconds"] / base["train_seconds"], 3) for k, m in median.items() if k != "none"}
    # each round's tracked run against the same round's untracked one: the drift between rounds cancels
    paired = {k: round(statistics.median(x["train_seconds"] / n["train_seconds"] for x, n in zip(v, each["none"])), 3)
              for k, v in each.items() if k != "none"}
    spread = [x["train_seconds"] for x in each["none"]]
    print(json.dumps({
        "benchmark": "trackers", **({"smoke": True} if a.smoke else {}), "config": "mnist_sample",
        "epochs": a.epochs, "steps": each["none"][0]["steps"], "rounds": a.rounds, "device": each["none"][0]["device"],
        "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "mlflow": _version("mlflow"), "wandb": _version("wandb"), "date": time.strftime("%Y-%m-%d"),
        "median": median, "train_ratio": ratios, "paired_train_ratio": paired, "target": "train_ratio <= 1.03",
        "meets_target": {k: v <= 1.03 for k, v in ratios.items()},
        # how far the untracked run's own time moves between rounds: a ratio within this is not a measured cost
        "untracked_spread": round((max(spread) - min(spread)) / statistics.median(spread), 3),
        "extra_wall_seconds": {k: round(m["wall_seconds"] - base["wall_seconds"], 3)
                               for k, m in median.items() if k != "none"},
        # the CPU the tracker's sends took while the run trained (the summary's training_cpu_seconds), as a
        # share of the training time: what it can take from the steps at most, free of the machine's drift
        "tracker_cpu_share": {k: round(statistics.median(x["cpu_seconds"] / x["train_seconds"] for x in v), 4)
                              for k, v in each.items() if k != "none"},
        "same_accuracy": len({x["accuracy"] for v in each.values() for x in v}) == 1,
        "each": {k: [x["train_seconds"] for x in v] for k, v in each.items()}}))


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
