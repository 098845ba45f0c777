"""Accumulation and the weight EMA, measured: `python benchmarks/accumulate.py --out docs/accumulate.json`.

  accumulation  the same global batch in 1, 2 and 4 micro-batches (`--accum-steps`), --seeds seeds
                each, interleaved (seed by seed): the final accuracy (mean, std, and the largest
                difference from accumulation 1 on the same seed: BatchNorm sees the micro-batch) and
                the training images/s, whose ratio to accumulation 1 is the overhead of accumulating.
                Two BatchNorm nets: the fastai book's simple_cnn on the bundled 3s and 7s (batch 512,
                2 epochs), and ResNet-20 on Fashion-MNIST (the CIFAR preset's SGD 1cycle, batch 512,
                --fashion-epochs, flips and pad-4 crops; needs ../shared/data)
  ema           `--set train.ema=DECAY` against none, --seeds seeds each: ResNet-20 on Fashion-MNIST
                (accumulation 1's runs are the "off" side) and the book's net on full MNIST (batch
                512, 1 epoch): the final accuracy of the average and of the weights themselves
Every run is `onecycle train` in its own process, one at a time, onecycle choosing its threads.
Prints one JSON object.

    python benchmarks/accumulate.py --smoke   # the smallest run of every step: a check, not a measurement
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOK = ["--config", "mnist", "--set", "model.channels=[1,8,16,32,64,2]"]  # the book's BatchNorm simple_cnn


def train(args: list, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PYTHONPATH"] = str(REPO)
    p = subprocess.run([sys.executable, "-m", "onecycle_cli", "train", *map(str, args), "--runs-dir", work / "runs",
                        "--progress", "none", "--json"], cwd=work, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"onecycle train {' '.join(map(str, args))}: exit {p.returncode}\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def accumulation(name: str, args: list, seeds: list[int], work: Path, extra_ema: float | None) -> dict:
    runs: dict[int, list[dict]] = {1: [], 2: [], 4: []}
    ema_runs = []
    for seed in seeds:
        for accum in runs:
            runs[accum].append(train([*args, "--seed", seed, "--accum-steps", accum], work))
        if extra_ema is not None:
            ema_runs.append(train([*args, "--seed", seed, "--set", f"train.ema={extra_ema}"], work))
    ips = {a: statistics.median(r["images_per_s"] for r in rs) for a, rs in runs.items()}
    out = {"task": name, "seeds": seeds,
           "accuracy": {a: spread([r["final"]["accuracy"] for r in rs]) for a, rs in runs.items()},
           "largest_difference_from_accum_1_points": {
               a: max(abs(100 * (r["final"]["accuracy"] - r1["final"]["accuracy"])) for r, r1 in zip(rs, runs[1]))
               for a, rs in runs.items() if a != 1},
           "micro_batch": {a: rs[0]["micro_batch"] for a, rs in runs.items()},
           "batch_size": runs[1][0]["batch_size"], "images_per_s_median": ips,
           "step_time_over_accum_1": {a: ips[1] / ips[a] for a in runs if a != 1}}
    if extra_ema is not None:
        out["ema"] = ema_summary(extra_ema, runs[1], ema_runs)
    return out


def ema_summary(decay: float, off: list[dict], on: list[dict]) -> dict:
    return {"decay": decay, "off_accuracy": spread([r["final"]["accuracy"] for r in off]),
            "weights_accuracy": spread([r["final"]["accuracy"] for r in on]),
            "ema_accuracy": spread([r["ema"]["final"]["accuracy"] for r in on]),
            "ema_minus_off_points": [100 * (a["ema"]["final"]["accuracy"] - b["final"]["accuracy"])
                                     for a, b in zip(on, off)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--fashion-epochs", type=int, default=1)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    seeds = [0] if a.smoke else [int(s) for s in a.seeds.split(",")]
    import torch
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
                          "torch": torch.__version__, "device": "cpu"}, "smoke": a.smoke}
    small = ["--set", "data.train_size=1024", "--set", "data.valid_size=256", "--batch-size", "64"] if a.smoke else []
    with tempfile.TemporaryDirectory(prefix="accumulate-") as tmp:
        work = Path(tmp)
        result["book_3_vs_7"] = accumulation(
            "book simple_cnn (BatchNorm), bundled 3s and 7s, batch 512, 2 epochs",
            [*BOOK, "--dataset", "mnist_sample", "--epochs", 2, "--batch-size", 512, *small], seeds, work, None)
        fashion = a.data / "FashionMNIST" / "raw"
        if fashion.is_dir():
            result["fashion_resnet20"] = accumulation(
                "ResNet-20, Fashion-MNIST, CIFAR preset, batch 512",
                ["--config", "cifar", "--dataset", "fashion_mnist", "--data-dir", a.data, "--model", "resnet20",
                 "--epochs", a.fashion_epochs, *small], seeds, work, a.ema)
        else:
            result["fashion_resnet20"] = f"skipped: no {fashion}"
        if (a.data / "MNIST" / "raw").is_dir():
            args = ["--config", "mnist", "--data-dir", a.data, "--epochs", 1, *small]  # the book's net, 10 classes
            off = [train([*args, "--seed", s], work) for s in seeds]
            on = [train([*args, "--seed", s, "--set", f"train.ema={a.ema}"], work) for s in seeds]
            result["book_mnist_ema"] = {"task": "book simple_cnn (BatchNorm), full MNIST, batch 512, 1 epoch",
                                        **ema_summary(a.ema, off, on)}
        else:
            result["book_mnist_ema"] = f"skipped: no {a.data / 'MNIST' / 'raw'}"
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
