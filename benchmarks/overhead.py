"""onecycle's overhead on a torchvision model against a bare hand-written loop: `python benchmarks/overhead.py`.

Issue 11's "Overhead" measurement: `tv:resnet18` trained by `onecycle train` on a built-in set, and by a
bare loop written by hand over the same uint8 tensors, with the same model, optimiser, parameter groups,
schedule, batch size, precision and memory format. Both keep the dataset on the device and normalise
whole batches there; augmentation is off on both sides, so the loop is all that differs: onecycle's
per-step records (loss, |grad|, each group's LR), its periodic log flush, its checkpoints and the
evaluation between epochs (which it does not count as training time, nor does the bare loop have one).

What is compared: onecycle's `train_seconds` (the summary: the training loops of every epoch, without
evaluation or checkpoints) against the bare loop's timer around its training loop. Each side runs as its
own process, as a user runs it; rounds are interleaved (this machine's speed drifts over minutes) and
medians reported, with the ratio onecycle / bare (target: within 1.1x). Prints one JSON object.

    python benchmarks/overhead.py --rounds 3 --train-size 1024 --epochs 1             # quick, CPU, synthetic
    python benchmarks/overhead.py --dataset fashion_mnist --data ../shared/data --device cuda --epochs 2 --rounds 5
    python benchmarks/overhead.py --dataset cifar10 --data DIR --device cuda --batch-size 512 --epochs 2 --rounds 5
    python benchmarks/overhead.py --smoke   # the smallest run: 1 round of 8 steps of 16 images on the CPU, real
                                            # MNIST where --data holds it (else synthetic); a check, not a measurement
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
# the settings both sides use: fastai's AdamW, discriminative LRs over fastai's three ResNet groups, 1cycle
MAX_LR, LR_MULT, WD, BETAS, EPS = 1e-3, 100.0, 0.01, (0.9, 0.99), 1e-5


def onecycle_args(a) -> list[str]:
    sets = {"model.name": "tv:resnet18", "data.dataset": a.dataset, "data.root": str(a.data), "data.flip": "false",
            "data.crop": "false", "data.train_size": str(a.train_size), "data.valid_size": str(a.valid_size),
            "optim.name": "adamw", "optim.weight_decay": str(WD), "optim.betas": f"[{BETAS[0]},{BETAS[1]}]",
            "optim.eps": str(EPS), "optim.wd_bn_bias": "false", "optim.lr_mult": str(LR_MULT),
            "schedule.shape": "fastai", "schedule.max_lr": str(MAX_LR), "train.epochs": str(a.epochs),
            "train.batch_size": str(a.batch_size), "train.device": a.device, "train.seed": "0",
            "train.log_every": "50", "data.download": "false"}
    if a.dataset == "synthetic":  # CIFAR-shaped
        sets.update({"data.channels": "3", "data.image_size": "32", "data.classes": "10"})
    return [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


def child_bare(a) -> dict:
    """The loop a user writes by hand, over the tensors onecycle's own reader gives."""
    import torch
    import torch.nn.functional as F
    import torchvision

    from onecycle_cli.config import DataConfig
    from onecycle_cli.datasets import load_dataset
    cfg = DataConfig(dataset=a.dataset, root=str(a.data), download=False, train_size=a.train_size,
                     valid_size=a.valid_size, **({"channels": 3, "image_size": 32, "classes": 10}
                                                 if a.dataset == "synthetic" else {}))
    ds = load_dataset(cfg)
    device = torch.device("cuda" if a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available()) else "cpu")
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    c = ds.x_train.shape[1]
    model = torchvision.models.resnet18(num_classes=len(ds.classes))
    if c != 3:
        model.conv1 = torch.nn.Conv2d(c, 64, 7, 2, 3, bias=False)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    if cuda:  # as onecycle's pipeline sets them
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    x_train, y_train = ds.x_train.to(device), ds.y_train.to(device)
    mean, std = ds.mean.to(device).view(1, -1, 1, 1), ds.std.to(device).view(1, -1, 1, 1)
    # fastai's _resnet_split, no weight decay on 1-d parameters, LRs spread by lr_mult (even_mults)
    parts = [[model.conv1, model.bn1, model.layer1, model.layer2], [model.layer3, model.layer4], [model.fc]]
    groups, peaks = [], []
    for i, modules in enumerate(parts):
        params = [p for m in modules for p in m.parameters()]
        peak = MAX_LR / LR_MULT * LR_MULT ** (i / (len(parts) - 1))
        groups += [{"params": [p for p in params if p.ndim > 1], "weight_decay": WD},
                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        peaks += [peak, peak]
    opt = torch.optim.AdamW(groups, lr=MAX_LR, betas=BETAS, eps=EPS, weight_decay=WD,
                            **({"fused": True} if cuda else {}))
    per_epoch = len(x_train) // a.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=a.epochs * per_epoch, pct_start=0.25,
                                                div_factor=25, final_div_factor=1e5 / 25)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else None
    seconds = 0.0
    for epoch in range(a.epochs):
        model.train()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(x_train), device=device)
        for i in range(per_epoch):
            idx = order[i * a.batch_size:(i + 1) * a.batch_size]
            x = ((x_train[idx].float() - mean) / std).contiguous(memory_format=fmt)
            if autocast:
                with autocast():
                    loss = F.cross_entropy(model(x), y_train[idx])
            else:
                loss = F.cross_entropy(model(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        final_loss = loss.item()  # the one sync of the epoch, as a user would print it
        seconds += time.perf_counter() - start
    return {"seconds": round(seconds, 4), "final_train_loss": round(final_loss, 4), "steps": a.epochs * per_epoch,
            "device": str(device)}


def run(cmd: list[str], cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PYTHONPATH"] = str(REPO)
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["synthetic", "cifar10", "mnist", "fashion_mnist"],
                   help="default: synthetic (--smoke: mnist where --data holds it)")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--device", help="default: auto (--smoke: cpu)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, help="default 128 (--smoke 16)")
    p.add_argument("--train-size", type=int, help="default 2048 (--smoke 128)")
    p.add_argument("--valid-size", type=int, help="default 256 (--smoke 32)")
    p.add_argument("--rounds", type=int, help="default 3 (--smoke 1)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "onecycle-overhead")
    p.add_argument("--smoke", action="store_true", help="the smallest run of every step, in seconds: not a measurement")
    p.add_argument("--child", choices=["bare"], help=argparse.SUPPRESS)
    a = p.parse_args()
    real = "mnist" if (a.data / "MNIST" / "raw").is_dir() else "synthetic"
    for key, full, smoke in (("dataset", "synthetic", real), ("device", "auto", "cpu"), ("batch_size", 128, 16),
                             ("train_size", 2048, 128), ("valid_size", 256, 32), ("rounds", 3, 1)):
        if getattr(a, key) is None:
            setattr(a, key, smoke if a.smoke else full)
    if a.child == "bare":
        print(json.dumps(child_bare(a)))
        return
    import torch
    a.work.mkdir(parents=True, exist_ok=True)
    runs = a.work / "runs"
    forward = [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
               if k in ("dataset", "data", "device", "epochs", "batch_size", "train_size", "valid_size")]
    ours, bare = [], []
    for _ in range(a.rounds):  # interleaved: each round runs both
        bare.append(run([sys.executable, __file__, "--child", "bare", *forward], a.work))
        ours.append(run([sys.executable, "-m", "onecycle_cli", "train", *onecycle_args(a), "--runs-dir", str(runs),
                         "--json"], a.work))
    o = statistics.median(s["train_seconds"] for s in ours)
    b = statistics.median(s["seconds"] for s in bare)
    print(json.dumps({
        "benchmark": "overhead", **({"smoke": True} if a.smoke else {}), "model": "tv:resnet18", "dataset": a.dataset,
        "device": bare[0]["device"],
        "epochs": a.epochs, "batch_size": a.batch_size, "train_size": a.train_size, "steps": bare[0]["steps"],
        "rounds": a.rounds, "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if bare[0]["device"].startswith("cuda") else None,
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "onecycle_train_seconds": round(o, 3), "bare_seconds": round(b, 3), "ratio": round(o / b, 3),
        "target": "ratio <= 1.1",
        "onecycle_each": [s["train_seconds"] for s in ours], "bare_each": [s["seconds"] for s in bare],
        "onecycle_final_train_loss": ours[0]["final"]["train_loss"],
        "bare_last_batch_loss": bare[0]["final_train_loss"],
        "onecycle_images_per_s": statistics.median(s["images_per_s"] for s in ours)}))


if __name__ == "__main__":
    main()
