"""Image folders, onecycle against torchvision's ImageFolder: `python benchmarks/folder.py`.

Writes --images real images (Fashion-MNIST's, from ../shared/data) once as PNG files in the
train/<class>/ + valid/<class>/ layout (a fifth of them in valid/), then runs, each in its own
process and in --rounds interleaved rounds:
  decode      onecycle: the first run's decoding into a fresh cache (`read_arrays`), every core,
              at --size px; reference: torchvision's ImageFolder (Resize + CenterCrop + PILToTensor)
              through a DataLoader with one worker per core over the same files: images/s of each
  load        onecycle: the second run's load from that cache (scan, check, memory map, placement)
  train       onecycle: `onecycle train` on the folder (random-resized crop + flip per image on the
              device, --size px, the small CNN and AdamW of `configs/folder.yaml`'s kind), images/s of
              its second epoch; reference: ImageFolder + transforms.v2 RandomResizedCrop(same scale
              and ratio) + RandomHorizontalFlip + ToImage + ToDtype + Normalize through a DataLoader with
              one worker per core, the same model, optimiser and schedule, fp32, after a warm-up
Peak host memory: each process's own peak (ru_maxrss) and, for the reference's training, the
proportional set size of the process and its workers together (shared pages counted once). Prints
one JSON object: medians over the rounds and the ratios onecycle / reference.

    python benchmarks/folder.py --images 1000 --batch-size 32 --rounds 1 --steps 8   # a quick try
    python benchmarks/folder.py                                        # 12,000 images, 3 rounds
    python benchmarks/folder.py --smoke   # the smallest run: 200 images at 32 px, batch 16, 4 steps, 1 round;
                                          # a check that every step runs, not a measurement
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the fastai book's net, on RGB
MODEL = ["model.name=simple_cnn", "model.channels=[3,8,16,32,64,10]", "model.kernel_sizes=[5,3,3,3,3]",
         "model.strides=[2]"]


def write_folder(data: Path, root: Path, n: int) -> Path:
    """Fashion-MNIST's first n training images as PNG files, once; a fifth of them in valid/."""
    done = root / ".complete"
    if done.exists():
        return root
    import numpy as np
    from PIL import Image

    from onecycle_cli.datasets.builtin import read_idx
    raw = data / "FashionMNIST" / "raw"
    x = read_idx(raw / "train-images-idx3-ubyte", 3)[:n]
    y = read_idx(raw / "train-labels-idx1-ubyte", 1)[:n]
    if len(x) < n:
        raise SystemExit(f"only {len(x)} images in {raw}")
    for i in range(n):
        folder = root / ("valid" if i % 5 == 4 else "train") / f"class{int(y[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(x[i])).save(folder / f"{i:05d}.png")
    done.write_text("")
    return root


def config(a, cache: str | None = None, extra: tuple[str, ...] = ()):
    from onecycle_cli.config import resolve
    sets = [f"data.root={a.root}", f"data.image_size={a.size}", "train.device=cpu", *MODEL,
            f"train.batch_size={a.batch_size}", "train.epochs=2", f"run.root={a.runs}", *extra]
    if cache:
        sets.append(f"data.cache={cache}")
    return resolve("folder", sets)


def child_decode(a) -> dict:
    from onecycle_cli.datasets import read_arrays
    cache = tempfile.mkdtemp(prefix="cache-", dir=a.runs)  # a fresh cache: every file decoded
    cfg = config(a, cache).config.data
    start = time.perf_counter()
    arrays = read_arrays(cfg)
    seconds = time.perf_counter() - start
    files = arrays.report["files"]
    out = {"images": files, "seconds": round(seconds, 3), "images_per_s": round(files / seconds, 1),
           "skipped": len(arrays.report["skipped"])}
    # the second run: scan, freshness check, memory map, then the placement training uses
    from onecycle_cli.datasets import load_dataset
    start = time.perf_counter()
    ds = load_dataset(cfg, "cpu")
    out["load_seconds"] = round(time.perf_counter() - start, 3)
    out["load_status"] = ds.report["cache"]["status"]
    shutil.rmtree(cache)
    return out


def child_decode_reference(a) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder
    t = transforms.Compose([transforms.Resize(a.size), transforms.CenterCrop(a.size), transforms.PILToTensor()])
    sets = [ImageFolder(str(Path(a.root) / split), transform=t) for split in ("train", "valid")]
    start = time.perf_counter()
    n = 0
    for ds in sets:
        for x, y in DataLoader(ds, batch_size=256, num_workers=os.cpu_count()):
            n += len(y)
    seconds = time.perf_counter() - start
    assert x.dtype == torch.uint8
    return {"images": n, "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 1)}


def child_train(a) -> dict:
    from onecycle_cli.display import Display
    from onecycle_cli.runs.directory import read_csv
    from onecycle_cli.signals import StopFlag
    from onecycle_cli.train import train_run as train
    n = a.steps * a.batch_size
    resolved = config(a, extra=(f"data.train_size={n}", f"train.log_every={a.steps}"))
    run, summary = train(resolved, Display(enabled=False), StopFlag())
    second = read_csv(run.path / "metrics.csv")[1]  # the first epoch pays for the warm-up
    return {"images_per_s": round(second["images_per_s"], 1), "train_images": n, "tier": summary["data"]["tier"],
            "host_pss_mb": pss_mb([os.getpid()])}


def child_train_reference(a) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    from onecycle_cli.models import build_model
    from onecycle_cli.optim import build_optimizer
    from onecycle_cli.schedules import build_schedule
    cfg = config(a).config
    d = cfg.data
    mean, std = stats(a)
    transform = v2.Compose([v2.RandomResizedCrop(a.size, scale=tuple(d.scale), ratio=tuple(d.ratio), antialias=True),
                            v2.RandomHorizontalFlip(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean, std)])
    ds = ImageFolder(str(Path(a.root) / "train"), transform=transform)  # PIL decodes each file, every epoch
    warmup = 3
    loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=os.cpu_count(), drop_last=True,
                        persistent_workers=True)
    model = build_model(cfg.model, 3, len(ds.classes))
    opt = build_optimizer(cfg.optim, model, cfg.schedule.max_lr)
    sched = build_schedule(cfg.schedule, opt, max(len(loader), warmup + a.steps + 1))
    it = iter(loader)
    for i in range(warmup + a.steps):
        if i == warmup:
            start = time.perf_counter()
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(loader)
            xb, yb = next(it)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    rate = a.steps * a.batch_size / (time.perf_counter() - start)
    workers = [w.pid for w in getattr(it, "_workers", [])]
    return {"images_per_s": round(rate, 1), "workers": len(workers), "host_pss_mb": pss_mb([os.getpid(), *workers])}


def stats(a) -> tuple[list[float], list[float]]:
    """The training images' channel mean and std (0..1), from onecycle's cache: both pipelines normalise alike."""
    from onecycle_cli.datasets import read_arrays
    arrays = read_arrays(config(a).config.data)
    return (arrays.mean / 255).tolist(), (arrays.std / 255).tolist()


def pss_mb(pids: list[int]) -> float | None:
    """benchmarks/speed.py's measure, imported only in the children (speed.py imports torch, they do anyway)."""
    from speed import pss_mb as measure
    return measure(pids)


CHILDREN = {"decode": child_decode, "decode_reference": child_decode_reference, "train": child_train,
            "train_reference": child_train_reference}


def spawn(a, which: str) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--root", str(a.root), "--runs", str(a.runs),
           "--size", str(a.size), "--batch-size", str(a.batch_size), "--steps", str(a.steps)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if p.returncode != 0:  # kept in the round's record, and said at once: the medians will lack it
        error = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
        print(f"folder.py: {which} failed: {error}", file=sys.stderr)
        return {"error": error}
    return json.loads(p.stdout.strip().splitlines()[-1])


def median(rounds: list[dict], key: str):
    values = [r[key] for r in rounds if isinstance(r.get(key), (int, float))]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, help="PNG files to write, a fifth go to valid/ (default 12,000, --smoke 200)")
    p.add_argument("--size", type=int, help="the side images are decoded and trained at (default 64, --smoke 32)")
    p.add_argument("--batch-size", type=int, help="default 256 (--smoke 16)")
    p.add_argument("--steps", type=int, help="timed training steps, onecycle: an epoch of them (default 30, --smoke 4)")
    p.add_argument("--rounds", type=int, help="default 3 (--smoke 1)")
    p.add_argument("--smoke", action="store_true", help="the smallest run of every step, in seconds: not a measurement")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "onecycle-folder-bench")
    p.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--runs", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    for key, full, smoke in (("images", 12_000, 200), ("size", 64, 32), ("batch_size", 256, 16), ("steps", 30, 4),
                             ("rounds", 3, 1)):
        if getattr(a, key) is None:
            setattr(a, key, smoke if a.smoke else full)
    if a.child:
        out = CHILDREN[a.child](a)
        out["peak_host_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(out))
        return
    if not (a.data / "FashionMNIST" / "raw").is_dir():
        a.data = Path("/work/shared/data")  # a worktree's ../shared is one level further up
    a.root = write_folder(a.data, a.work / f"fashion-{a.images}", a.images)
    a.runs = a.work / "runs"
    a.runs.mkdir(parents=True, exist_ok=True)
    from onecycle_cli.datasets import read_arrays
    # the folder's own cache, which the training rounds load; the files now in the page cache
    read_arrays(config(a).config.data)
    rounds = {k: [] for k in CHILDREN}
    for _ in range(a.rounds):  # interleaved: a drift of the machine's speed hits both sides alike
        for which in CHILDREN:
            rounds[which].append(spawn(a, which))
    errors = {k: r["error"] for k, rs in rounds.items() for r in rs if "error" in r}
    result = {
        "benchmark": "folder", **({"smoke": True} if a.smoke else {}), "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "images": a.images, "size": a.size, "batch_size": a.batch_size, "steps": a.steps,
        "rounds": a.rounds, "data": f"Fashion-MNIST as PNG in {a.root}",
        "decode": {"onecycle_images_per_s": median(rounds["decode"], "images_per_s"),
                   "reference_images_per_s": median(rounds["decode_reference"], "images_per_s"),
                   "onecycle_peak_host_mb": median(rounds["decode"], "peak_host_mb"),
                   "reference_peak_host_mb": median(rounds["decode_reference"], "peak_host_mb")},
        "load_seconds": median(rounds["decode"], "load_seconds"),
        "train": {"onecycle_images_per_s": median(rounds["train"], "images_per_s"),
                  "reference_images_per_s": median(rounds["train_reference"], "images_per_s"),
                  "onecycle_peak_host_mb": median(rounds["train"], "peak_host_mb"),
                  "reference_peak_host_mb": median(rounds["train_reference"], "peak_host_mb"),
                  "onecycle_pss_mb": median(rounds["train"], "host_pss_mb"),
                  "reference_pss_mb_with_workers": median(rounds["train_reference"], "host_pss_mb")},
        "rounds_raw": rounds, **({"errors": errors} if errors else {})}
    for part in ("decode", "train"):
        ours, ref = result[part]["onecycle_images_per_s"], result[part]["reference_images_per_s"]
        result[part]["ratio"] = round(ours / ref, 2) if ours and ref else None
    print(json.dumps(result))
    if a.smoke and errors:
        sys.exit(1)  # a check: a pipeline that failed fails it


if __name__ == "__main__":
    main()
