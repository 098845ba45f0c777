"""Training throughput, onecycle against the loop users write today: `python benchmarks/speed.py`.

For each model (resnet56 on CIFAR-shaped images, the fastai book's simple_cnn on MNIST) and each
device (the CPU always, CUDA when present), two pipelines train the same model with the same
optimiser, schedule and augmentation (reflect-pad 4, random crop, random flip) at the same batch
size:
  onecycle   `onecycle train` itself (its loop, records and checkpoints included): the dataset as
             one uint8 tensor on the device, batches augmented there; bf16 autocast and
             channels_last on CUDA
  reference  a torchvision Dataset handing PIL images to transforms.v2 (RandomCrop(padding=4,
             padding_mode="reflect"), RandomHorizontalFlip, ToImage, ToDtype, Normalize), through a
             DataLoader with one worker per core, fp32
Each runs in its own process, so its peak memory is its own; the reference is timed after a
warm-up, onecycle on its second epoch. Prints one JSON object.

    python benchmarks/speed.py --steps 30                      # quick, both models, CPU (+ CUDA)
    python benchmarks/speed.py --model resnet56 --batch-size 512 --device cuda --steps 100
    python benchmarks/speed.py --time-to-accuracy mnist --data ../shared/data   # a whole preset
    python benchmarks/speed.py --smoke    # the smallest run: simple_cnn on the CPU, 4 steps of 16 images,
                                          # real MNIST where --data holds it (else random images); a check
                                          # that every step runs, not a measurement
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PRESETS = {"resnet56": "cifar", "simple_cnn": "mnist"}


def real_mnist(model: str, data: Path) -> bool:
    return model == "simple_cnn" and (data / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def images_for(model: str, data: Path, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(N x C x H x W uint8, labels, where they came from): real MNIST when at hand, else noise of the model's shape."""
    if real_mnist(model, data):
        from onecycle_cli.datasets.builtin import read_idx
        x = read_idx(data / "MNIST" / "raw" / "train-images-idx3-ubyte", 3)[:n, None]
        y = read_idx(data / "MNIST" / "raw" / "train-labels-idx1-ubyte", 1)[:n].astype(np.int64)
        return np.ascontiguousarray(x), y, f"MNIST from {data}"
    shape = (1, 28, 28) if model == "simple_cnn" else (3, 32, 32)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n), "random uint8 images"


def child_onecycle(a) -> dict:
    from onecycle_cli.config import resolve
    from onecycle_cli.display import Display
    from onecycle_cli.runs.directory import read_csv
    from onecycle_cli.signals import StopFlag
    from onecycle_cli.train import train_run as train
    n = a.steps * a.batch_size
    data_sets = [f"data.root={a.data}"]
    if not real_mnist(a.model, a.data):  # images of the model's shape, as the reference's, when the set is not here
        c, size = (1, 28) if a.model == "simple_cnn" else (3, 32)  # CIFAR-10 never is (../shared/data/README.md)
        data_sets = ["data.dataset=synthetic", f"data.image_size={size}", f"data.channels={c}", "data.classes=10",
                     f"data.valid_size={a.batch_size}"]
    sets = [*data_sets, f"data.train_size={n}", f"train.batch_size={a.batch_size}", "train.epochs=2",
            f"train.device={a.device}", "data.flip=true", "data.crop=true", "data.pad=4", f"run.root={a.runs}",
            f"train.log_every={a.steps}", "schedule.shape=fastai"] + (["train.compile=true"] if a.compile else [])
    resolved = resolve(PRESETS[a.model], sets)
    run, summary = train(resolved, Display(enabled=False), StopFlag())
    second = read_csv(run.path / "metrics.csv")[1]  # the first epoch pays for warm-up (and compilation)
    return {"images_per_s": round(second["images_per_s"], 1), "precision": summary["precision"],
            "train_images": n, "host_pss_mb": pss_mb([os.getpid()])}


def child_reference(a) -> dict:
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    from onecycle_cli.config import resolve
    from onecycle_cli.models import build_model
    from onecycle_cli.optim import build_optimizer
    from onecycle_cli.schedules import build_schedule
    # the shape costs nothing; short runs need two phases
    cfg = resolve(PRESETS[a.model], ["schedule.shape=fastai"]).config
    warmup = 5
    x, y, _ = images_for(a.model, a.data, (a.steps + warmup + 1) * a.batch_size)
    c, h, w = x.shape[1:]
    mean, std = (x.mean((0, 2, 3)) / 255).tolist(), (x.std((0, 2, 3)) / 255).tolist()
    transform = v2.Compose([v2.RandomCrop(h, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip(),
                            v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    hwc = x.transpose(0, 2, 3, 1)

    class Images(Dataset):  # what torchvision.datasets.CIFAR10 and MNIST do: a PIL image per item
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            from PIL import Image
            img = Image.fromarray(hwc[i].squeeze(-1) if c == 1 else hwc[i])
            return transform(img), int(y[i])

    device = torch.device(a.device)
    loader = DataLoader(Images(), batch_size=a.batch_size, shuffle=True, num_workers=os.cpu_count(),
                        drop_last=True, persistent_workers=True, pin_memory=device.type == "cuda")
    model = build_model(cfg.model, c, 10).to(device)
    opt = build_optimizer(cfg.optim, model, cfg.schedule.max_lr)
    sched = build_schedule(cfg.schedule, opt, len(loader))
    it = iter(loader)
    for i in range(warmup + a.steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        xb, yb = next(it)
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync(device)
    rate = a.steps * a.batch_size / (time.perf_counter() - start)
    workers = [w.pid for w in getattr(it, "_workers", [])]
    return {"images_per_s": round(rate, 1), "precision": "fp32", "workers": len(workers),
            "host_pss_mb": pss_mb([os.getpid(), *workers])}


def pss_mb(pids: list[int]) -> float | None:
    """Proportional set size of these processes together: shared pages counted once, split between them."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            return None
    return round(total / 1024)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def child(a) -> None:
    out = child_onecycle(a) if a.child == "onecycle" else child_reference(a)
    # the main process's own peak; forked DataLoader workers are in the reference's host_pss_mb
    # (RUSAGE_CHILDREN would count every page a child shared with its parent at the fork)
    out["peak_host_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if torch.device(a.device).type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(out))


def spawn(a, which: str, model: str, device: str, runs: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--model", model, "--device", device, "--steps", str(a.steps),
           "--batch-size", str(a.batch_size), "--data", str(a.data), "--runs", str(runs)]
    p = subprocess.run(cmd + (["--compile"] if a.compile else []), capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def time_to_accuracy(a) -> dict:
    cmd = [sys.executable, "-m", "onecycle_cli", "train", "--config", a.time_to_accuracy, "--data-dir", str(a.data),
           "--device", a.device, "--json", "--runs-dir", str(a.runs), *sum((["--set", s] for s in a.set), [])]
    start = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    minutes = (time.perf_counter() - start) / 60
    if p.returncode != 0:
        return {"preset": a.time_to_accuracy, "error": p.stderr.strip().splitlines()[-1]}
    s = json.loads(p.stdout)
    return {"preset": a.time_to_accuracy, "device": s["device"], "minutes": round(minutes, 2),
            "train_minutes": round(s["train_seconds"] / 60, 2), "final_accuracy": s["final"]["accuracy"],
            "epochs": s["epochs"], "max_lr": s["max_lr"], "run_dir": s["run_dir"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["resnet56", "simple_cnn", "all"], help="default: all (--smoke: simple_cnn)")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], help="default: all (--smoke: cpu)")
    p.add_argument("--steps", type=int, help="timed training steps per pipeline (default 30, --smoke 4)")
    p.add_argument("--batch-size", type=int, help="default 512 (--smoke 16)")
    p.add_argument("--smoke", action="store_true", help="the smallest run of every step, in seconds: not a measurement")
    p.add_argument("--compile", action="store_true", help="onecycle with torch.compile")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--runs", type=Path, default=Path(tempfile.gettempdir()) / "onecycle-speed")
    p.add_argument("--time-to-accuracy", metavar="PRESET", help="run a whole preset and report minutes and accuracy")
    p.add_argument("--set", action="append", default=[], help="config overrides for --time-to-accuracy")
    p.add_argument("--child", choices=["onecycle", "reference"], help=argparse.SUPPRESS)
    a = p.parse_args()
    for key, full, smoke in (("model", "all", "simple_cnn"), ("device", "all", "cpu"), ("steps", 30, 4),
                             ("batch_size", 512, 16)):
        if getattr(a, key) is None:
            setattr(a, key, smoke if a.smoke else full)
    if a.child:
        return child(a)
    a.runs.mkdir(parents=True, exist_ok=True)
    info = {"benchmark": "speed", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    if a.time_to_accuracy:
        if a.device == "all":
            a.device = "cuda" if torch.cuda.is_available() else "cpu"
        print(json.dumps({**info, **time_to_accuracy(a)}))
        return
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if a.device == "all" else [a.device]
    models = ["resnet56", "simple_cnn"] if a.model == "all" else [a.model]
    results = []
    for device in devices:
        for model in models:
            ours, ref = spawn(a, "onecycle", model, device, a.runs), spawn(a, "reference", model, device, a.runs)
            row = {"device": device, "model": model, "batch_size": a.batch_size, "steps": a.steps,
                   "data": images_for(model, a.data, 1)[2], "onecycle": ours, "reference": ref}
            if "images_per_s" in ours and "images_per_s" in ref:
                row["ratio"] = round(ours["images_per_s"] / ref["images_per_s"], 2)
                epoch = 50_000 if model == "resnet56" else 60_000
                row["onecycle_seconds_per_epoch"] = round(epoch / ours["images_per_s"], 2)
                row["reference_seconds_per_epoch"] = round(epoch / ref["images_per_s"], 2)
            results.append(row)
    print(json.dumps({**info, **({"smoke": True} if a.smoke else {}), "results": results}))
    if a.smoke and any("error" in r["onecycle"] or "error" in r["reference"] for r in results):
        sys.exit(1)  # a check: a pipeline that failed fails it


if __name__ == "__main__":
    main()
