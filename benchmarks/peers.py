"""onecycle beside fastai and the bare hand-written loops, on this machine, in one run:
`python benchmarks/peers.py --fastai-python /tmp/peer/bin/python`

The two experiments of ../shared/peers: P1, the fastai docs' 1cycle experiment (MNIST 3s vs 7s,
fastai-v1 simple_cnn, batch 64, 2 epochs at 5e-2) with its range test, and P2, the fastai book's
MNIST run (BatchNorm simple_cnn, batch 512, 1 epoch at 0.06). Every program runs as its own
process, as a user would run it; times are medians over --repeats. Prints one JSON object.

Times compared, and what each includes:
- find, whole process: `onecycle find` from start to exit against fastai's `peer_fastai.py ... p1find`
  from start to exit (imports, data, the range test, plots);
- find, the sweep alone: our curve's `seconds` against fastai's timer around `learn.lr_find()`;
- fit vs fastai: our epochs' training plus evaluation (metrics.csv `seconds`) against fastai's
  timer around fit_one_cycle + validate;
- fit vs bare: our training loop alone (summary `train_seconds`) against the bare loop's timer,
  which also covers only the training loop.
fastai is optional (it needs its own environment, see ../shared/peers/README.md): without
--fastai-python only the bare loops are measured.

    python benchmarks/peers.py --smoke   # the smallest run of every step: 1 round on MNIST's first 4,096
                                         # training and 512 test images (the bare loops copied unchanged
                                         # beside that copy), mnist_sample cut to 512 + 128, a 30-step range
                                         # test; a check, not a measurement
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path | None = None, threads: int | None = None) -> tuple[str, float]:
    """stdout and wall seconds of one process (at `threads` torch threads where given); a failure stops the
    benchmark with its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PYTHONPATH"] = str(REPO)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p.stdout, wall


def last_json(out: str) -> dict:
    """The last JSON object a program printed (fastai prints an indented one)."""
    start = out.rfind("\n{")
    return json.loads(out[start + 1:] if start >= 0 else out[out.find("{"):])


def onecycle(*args: str, runs: Path) -> tuple[dict, float]:
    out, wall = run([sys.executable, "-m", "onecycle_cli", *args, "--json", "--runs-dir", str(runs)])
    return json.loads(out), wall


def fit_seconds(summary: dict) -> float:
    """Training plus evaluation of every epoch, from the run's metrics.csv."""
    from onecycle_cli.runs.directory import read_csv
    return sum(r["seconds"] for r in read_csv(Path(summary["run_dir"]) / "metrics.csv"))


SMOKE_SIZES = {"train": 4096, "t10k": 512}  # the bare P2 loop's batch of 512: 8 steps, the fewest its 1cycle takes


def smoke_copy(data: Path, peers: Path, work: Path) -> tuple[Path, Path]:
    """(data root, bare loops' folder) for --smoke: MNIST's first images as idx files with their own headers,
    and the bare loops copied unchanged next to it (they read ../data/MNIST/raw from where they are)."""
    raw, small = data / "MNIST" / "raw", work / "data" / "MNIST" / "raw"
    if not (raw / "train-images-idx3-ubyte").is_file():
        sys.exit(f"peers.py: no MNIST idx files in {raw}: pass --data DIR, the folder holding MNIST/raw/")
    small.mkdir(parents=True, exist_ok=True)
    for split, n in SMOKE_SIZES.items():
        images, labels = raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte"
        with images.open("rb") as f:
            (small / images.name).write_bytes(struct.pack(">4I", 0x803, n, 28, 28) + f.read(16 + n * 784)[16:])
        with labels.open("rb") as f:
            (small / labels.name).write_bytes(struct.pack(">2I", 0x801, n) + f.read(8 + n)[8:])
    (work / "peers").mkdir(exist_ok=True)
    for name in ("bare_p1.py", "bare_p2.py"):
        shutil.copyfile(peers / name, work / "peers" / name)
    return work / "data", work / "peers"


def median(values) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fastai-python", help="a python with fastai installed (../shared/peers/README.md)")
    p.add_argument("--peers", type=Path, default=REPO.parent / "shared" / "peers")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "onecycle-peers")
    p.add_argument("--repeats", type=int, help="default 5 (--smoke 1)")
    p.add_argument("--smoke", action="store_true", help="the smallest run of every step, in seconds: not a measurement")
    a = p.parse_args()
    a.repeats = a.repeats or (1 if a.smoke else 5)
    a.work.mkdir(parents=True, exist_ok=True)
    bare = a.peers
    # --smoke: the same programs on less data; P1's bundled set cut by settings, P2's MNIST by a smaller copy
    sample_sets, find_sets = [], []
    if a.smoke:
        a.work = a.work / "smoke"  # its mnist_sample and mnist_png folders are not the full runs' ones
        a.work.mkdir(exist_ok=True)
        a.data, bare = smoke_copy(a.data, a.peers, a.work)
        sample_sets = ["--set", "data.train_size=512", "--set", "data.valid_size=128"]
        find_sets = ["--num-it", "30"]
    if not a.fastai_python:
        print("peers.py: no --fastai-python given, so fastai's side is skipped (../shared/peers/README.md makes "
              "one); the bare loops and onecycle run", file=sys.stderr)
    runs = a.work / "runs"
    n = range(a.repeats)
    result: dict = {"benchmark": "peers", **({"smoke": True, "data": str(a.data)} if a.smoke else {}),
                    "cores": os.cpu_count(), "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine(), "repeats": a.repeats,
                    "date": time.strftime("%Y-%m-%d")}

    # -- interleaved repeats: this machine's speed drifts over minutes, so each round runs every program once
    bare1, bare2, finds, p1, p2, finds_fa = [], [], [], [], [], []
    sample = a.work / "mnist_sample"
    if a.fastai_python and not sample.exists():
        run([a.fastai_python, str(a.peers / "make_mnist_sample.py"), str(a.data / "MNIST" / "raw"), str(sample)])
    for _ in n:
        # each bare loop at the threads onecycle chose for the same experiment: the loops' cost, not the threads'
        p1.append(onecycle("train", "--config", "mnist_sample", *sample_sets, runs=runs)[0])
        bare1.append(last_json(run([sys.executable, str(bare / "bare_p1.py")], threads=p1[-1]["threads"])[0]))
        p2.append(onecycle("train", "--config", "mnist", "--data-dir", str(a.data), runs=runs)[0])
        bare2.append(last_json(run([sys.executable, str(bare / "bare_p2.py")], threads=p2[-1]["threads"])[0]))
        finds.append(onecycle("find", "--config", "mnist_sample", *sample_sets, *find_sets, runs=runs))
        if a.fastai_python:
            finds_fa.append(run([a.fastai_python, str(a.peers / "peer_fastai.py"), str(sample), "-", "p1find"],
                                cwd=a.peers))
    result["bare"] = {"p1_seconds": median(b["seconds"] for b in bare1), "p1_accuracy": bare1[0]["accuracy"],
                      "p2_seconds": median(b["seconds"] for b in bare2), "p2_accuracy": bare2[0]["accuracy"]}

    # -- onecycle -------------------------------------------------------------------------------------
    f0 = finds[0][0]
    const = onecycle("train", "--config", "mnist_sample", *sample_sets, "--schedule", "constant", runs=runs)[0]
    at_default = onecycle("train", "--config", "mnist_sample", *sample_sets, "--max-lr", f0["run_dir"], runs=runs)[0]
    result["onecycle"] = {
        "find_process_seconds": median(w for _, w in finds),
        "find_sweep_seconds": median(s["curves"][0]["seconds"] for s, _ in finds),
        "suggestions": {k: v["lr"] for k, v in f0["suggestions"].items()},
        "p1_one_cycle_accuracy": p1[0]["final"]["accuracy"], "p1_constant_accuracy": const["final"]["accuracy"],
        "p1_train_seconds": median(s["train_seconds"] for s in p1),
        "p1_fit_seconds": median(fit_seconds(s) for s in p1),
        "p1_at_default_suggestion": {"max_lr": at_default["max_lr"], "accuracy": at_default["final"]["accuracy"]},
        "p2_accuracy": p2[0]["final"]["accuracy"], "p2_train_seconds": median(s["train_seconds"] for s in p2),
        "p2_fit_seconds": median(fit_seconds(s) for s in p2), "p1_threads": p1[0]["threads"],
        "p2_threads": p2[0]["threads"]}
    ours = result["onecycle"]
    result["ratios"] = {"p1_train_vs_bare": round(ours["p1_train_seconds"] / result["bare"]["p1_seconds"], 2),
                        "p2_train_vs_bare": round(ours["p2_train_seconds"] / result["bare"]["p2_seconds"], 2)}

    # -- fastai ---------------------------------------------------------------------------------------
    if a.fastai_python:
        png = a.work / "mnist_png"
        if not png.exists():
            run([a.fastai_python, str(a.peers / "make_mnist_png.py"), str(a.data / "MNIST" / "raw"), str(png)])
        fa = last_json(run([a.fastai_python, str(a.peers / "peer_fastai.py"), str(sample), str(png), "all"],
                           cwd=a.peers)[0])
        fa_find = [last_json(out)["p1_lr_find"] for out, _ in finds_fa]
        result["fastai"] = {
            "find_process_seconds": median(w for _, w in finds_fa),
            "find_sweep_seconds": median(f["seconds"] for f in fa_find + [fa["p1_lr_find"]]),
            "suggestions": {k: median(f[k] for f in fa_find + [fa["p1_lr_find"]])
                            for k in ("valley", "steep", "minimum", "slide")},
            "suggestion_ranges": {k: [min(f[k] for f in fa_find + [fa["p1_lr_find"]]),
                                      max(f[k] for f in fa_find + [fa["p1_lr_find"]])]
                                  for k in ("valley", "steep")},
            "p1_one_cycle_accuracy": fa["p1_one_cycle"]["accuracy"], "p1_fit_seconds": fa["p1_one_cycle"]["seconds"],
            "p1_constant_accuracy": fa["p1_constant"]["accuracy"],
            "p2_accuracy": fa["p2_one_cycle"]["accuracy"], "p2_fit_seconds": fa["p2_one_cycle"]["seconds"]}
        theirs = result["fastai"]
        result["ratios"].update({
            "find_process_vs_fastai": round(ours["find_process_seconds"] / theirs["find_process_seconds"], 2),
            "find_sweep_vs_fastai": round(ours["find_sweep_seconds"] / theirs["find_sweep_seconds"], 3),
            "valley_vs_fastai": round(ours["suggestions"]["valley"] / theirs["suggestions"]["valley"], 2),
            "steep_vs_fastai": round(ours["suggestions"]["steep"] / theirs["suggestions"]["steep"], 2),
            "p1_fit_vs_fastai": round(ours["p1_fit_seconds"] / theirs["p1_fit_seconds"], 3),
            "p2_fit_vs_fastai": round(ours["p2_fit_seconds"] / theirs["p2_fit_seconds"], 3)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
