"""After training, measured: `python benchmarks/after_training.py --out docs/after_training.json`.

  evaluate  `onecycle evaluate` with and without `--tta flip`, on --seeds runs of each task:
            the README's folder example (`examples/write_folder.py`: 1,000 + 500 bundled digits as PNG,
            ResNet-20 at 28 px, batch 32, 3 epochs at the 6.0e-3 its range test suggests), and
            Fashion-MNIST with ResNet-20 (`--config cifar --model resnet20`, flips and pad-4 crops,
            --fashion-epochs epochs; needs ../shared/data or --data-dir)
  predict   `onecycle predict`'s work (`trained.predict.predict_files`, in-process, the model loaded
            once) on a folder of --predict-images RGB JPEGs of mixed sizes (the bundled digits,
            tinted, 60-100 px), against a plain torchvision inference loop over the same files and
            the same model: ImageFolder (Resize + CenterCrop + PILToTensor) through a DataLoader with
            one worker per core, normalise, forward, softmax, top-k. --rounds interleaved rounds,
            medians, the ratio onecycle / torchvision in images per second, and how many labels agree.
Prints one JSON object (and writes it to --out).

    python benchmarks/after_training.py --smoke   # the smallest run of every step: a check, not a measurement
"""

from __future__ import annotations

import argparse
import io
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


def onecycle(*args, cwd: Path) -> dict:
    p = subprocess.run([sys.executable, "-m", "onecycle_cli", *map(str, args), "--json"], cwd=cwd,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if p.returncode != 0:
        raise SystemExit(f"onecycle {' '.join(map(str, args))} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def evaluate_task(name: str, train_args: list, seeds: list[int], work: Path) -> dict:
    rows = []
    for seed in seeds:
        run = onecycle("train", *train_args, "--seed", seed, "--runs-dir", work / "runs", "--progress", "none",
                       cwd=work)
        plain = onecycle("evaluate", run["run_dir"], "--progress", "none", cwd=work)
        flip = onecycle("evaluate", run["run_dir"], "--tta", "flip", "--progress", "none", cwd=work)
        rows.append({"seed": seed, "run": run["run_dir"], "train_seconds": run["train_seconds"],
                     "accuracy": plain["accuracy"], "loss": plain["loss"], "top5": plain["top5"],
                     "tta_accuracy": flip["accuracy"], "tta_loss": flip["loss"], "tta_top5": flip["top5"],
                     "evaluate_seconds": plain["seconds"], "tta_evaluate_seconds": flip["seconds"],
                     "images": plain["images"]})

    def mean_sd(key: str) -> list[float]:
        values = [r[key] for r in rows]
        return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]
    return {"task": name, "seeds": rows, "accuracy": mean_sd("accuracy"), "tta_accuracy": mean_sd("tta_accuracy"),
            "loss": mean_sd("loss"), "tta_loss": mean_sd("tta_loss"),
            "tta_minus_plain_points": [100 * (r["tta_accuracy"] - r["accuracy"]) for r in rows]}


def write_photos(root: Path, n: int) -> Path:
    """n RGB JPEGs of mixed sizes in two class folders (the bundled 3s and 7s, tinted and upscaled)."""
    import numpy as np
    from PIL import Image

    from onecycle_cli.config import DataConfig
    from onecycle_cli.datasets import read_arrays
    a = read_arrays(DataConfig(dataset="mnist_sample"))
    x, y = a.x_train.numpy()[:n], a.y_train[:n]
    rng = np.random.default_rng(0)
    for i in range(n):
        grey = Image.fromarray(x[i, 0])
        rgb = Image.merge("RGB", (grey, grey.point(lambda v: v // 2), grey.point(lambda v: 255 - v)))
        size = tuple(int(v) for v in rng.integers(60, 101, 2))
        folder = root / a.classes[y[i]]
        folder.mkdir(parents=True, exist_ok=True)
        rgb.resize(size).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def torchvision_loop(trained, folder: Path, k: int, batch: int) -> tuple[list[str], float]:
    """Labels of every file of `folder`, sorted by path, and seconds: the plain torchvision way."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms
    size, stored = trained.shape[-1], trained.stored
    mode = "L" if trained.shape[0] == 1 else "RGB"
    tf = transforms.Compose([transforms.Resize(stored), transforms.CenterCrop(size), transforms.PILToTensor()])
    started = time.perf_counter()
    ds = datasets.ImageFolder(str(folder), transform=tf, loader=lambda p: Image.open(p).convert(mode))
    workers = len(os.sched_getaffinity(0))
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, persistent_workers=False)
    mean = torch.tensor(trained.stats["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(trained.stats["std"]).view(1, -1, 1, 1)
    labels = []
    with torch.no_grad():
        for x, _ in loader:
            p = trained.model((x.float() - mean) / std).softmax(1)
            _, top = p.topk(k, 1)
            labels += [trained.classes[i] for i in top[:, 0].tolist()]
    seconds = time.perf_counter() - started
    order = sorted(range(len(ds.samples)), key=lambda i: ds.samples[i][0])
    return [labels[i] for i in order], seconds


def ours(trained, folder: Path, k: int, batch: int) -> tuple[list[str], float]:
    import csv

    from onecycle_cli.trained.predict import predict_files
    out = io.StringIO()
    started = time.perf_counter()
    predict_files(trained, [str(folder)], out, lambda line: None, top=k, batch=batch)
    seconds = time.perf_counter() - started
    rows = sorted(csv.DictReader(io.StringIO(out.getvalue())), key=lambda r: r["path"])
    return [r["label"] for r in rows], seconds


def predict_bench(run_dir: str, work: Path, n: int, rounds: int, batch: int) -> dict:
    from onecycle_cli.trained.load import load_trained
    folder = write_photos(work / "photos", n)
    trained = load_trained(run_dir, "last", "cpu")
    times: dict[str, list[float]] = {"onecycle": [], "torchvision": []}
    labels = {}
    for _ in range(rounds):
        for name, fn in (("onecycle", ours), ("torchvision", torchvision_loop)):
            labels[name], seconds = fn(trained, folder, 2, batch)
            times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    agree = sum(a == b for a, b in zip(labels["onecycle"], labels["torchvision"])) / n
    return {"images": n, "rounds": rounds, "batch": batch, "seconds": times, "median_seconds": median,
            "images_per_s": {name: n / s for name, s in median.items()},
            "ratio_onecycle_over_torchvision": median["torchvision"] / median["onecycle"],
            "labels_agree": agree, "model": trained.config.model.name, "input": list(trained.shape)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fashion-epochs", type=int, default=2)
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--predict-images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.smoke:
        seeds, a.predict_images, a.rounds = [0], 64, 1
    import torch
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
                          "torch": torch.__version__, "device": "cpu"}, "smoke": a.smoke}
    with tempfile.TemporaryDirectory(prefix="after-training-") as tmp:
        work = Path(tmp)
        digits = work / "digits"
        subprocess.run([sys.executable, REPO / "examples" / "write_folder.py", digits,
                        *(["--train", "320", "--valid", "64"] if a.smoke else [])], check=True, capture_output=True)
        folder_args = ["--config", "folder", "--data-dir", digits, "--set", "data.image_size=28", "--batch-size",
                       "32", "--epochs", "1" if a.smoke else "3", "--max-lr", "6e-3"]
        result["folder_example"] = evaluate_task("README folder example", folder_args, seeds, work)
        if (a.data_dir / "FashionMNIST" / "raw").is_dir():
            fashion_args = ["--config", "cifar", "--dataset", "fashion_mnist", "--data-dir", a.data_dir,
                            "--model", "resnet20", "--epochs", a.fashion_epochs]
            if a.smoke:
                fashion_args += ["--set", "data.train_size=1024", "--set", "data.valid_size=256", "--epochs", "1",
                                 "--batch-size", "32"]
            result["fashion_mnist_resnet20"] = evaluate_task("Fashion-MNIST ResNet-20", fashion_args, seeds, work)
        else:
            result["fashion_mnist_resnet20"] = f"skipped: no {a.data_dir / 'FashionMNIST' / 'raw'}"
        run = result["folder_example"]["seeds"][0]["run"]
        result["predict"] = predict_bench(run, work, a.predict_images, a.rounds, 256)
        for task in ("folder_example", "fashion_mnist_resnet20"):
            if isinstance(result[task], dict):
                for r in result[task]["seeds"]:
                    r.pop("run")
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
