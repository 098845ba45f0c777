"""Loader + augmentation alone, onecycle's against torchvision's: `python benchmarks/loader.py`.

Both pipelines produce the same thing from the same CIFAR-shaped uint8 images: batches of 512
reflect-padded (4 px), randomly cropped (32), randomly flipped, normalised float32 images with
their labels. torchvision's is the loop users write today: a Dataset whose __getitem__ applies
`transforms.v2` per image, through a DataLoader with one worker per core. Two variants of it are
timed: images handed over as PIL images (what torchvision.datasets.CIFAR10 does) and as uint8
tensors (v2's fast path). Prints one JSON object; the ratio is against the faster variant.

    python benchmarks/loader.py             # 50,000 images, batch 512, 2 epochs of onecycle's loader
    python benchmarks/loader.py --smoke     # the smallest run: 1,024 images, batch 64, 1 epoch, torch's
                                            # threads as OMP_NUM_THREADS says; a check, not a measurement
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def ours(x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, device: str) -> float:
    from onecycle_cli.config import DataConfig
    from onecycle_cli.datasets import Dataset, Images, channel_stats
    from onecycle_cli.loader import TrainBatches
    mean, std = (torch.from_numpy(v) for v in channel_stats(Images(x.numpy())))
    ds = Dataset("bench", x, y, x[:1], y[:1], [str(i) for i in range(10)], mean, std).to(device)
    batches = TrainBatches(ds, DataConfig(dataset="cifar10", flip=True, crop=True, pad=4), batch, seed=0)
    for xb, _ in batches.epoch(0, start=batches.steps_per_epoch - 2):  # warm-up
        pass
    sync(device)
    start, n = time.perf_counter(), 0
    for epoch in range(epochs):
        for xb, yb in batches.epoch(epoch):
            n += len(yb)
    sync(device)
    return n / (time.perf_counter() - start)


def torchvision_loop(x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, as_pil: bool, workers: int) -> float:
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2
    mean = (x.float().mean((0, 2, 3)) / 255).tolist()
    std = (x.float().std((0, 2, 3)) / 255).tolist()
    transform = v2.Compose([v2.RandomCrop(32, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip(),
                            v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    hwc = x.permute(0, 2, 3, 1).contiguous().numpy()

    class Images(Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            if as_pil:
                from PIL import Image
                img = Image.fromarray(hwc[i])  # as torchvision.datasets.CIFAR10 hands them over
            else:
                img = x[i]
            return transform(img), int(y[i])

    loader = DataLoader(Images(), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)  # workers started and warm
    start, n = time.perf_counter(), 0
    for _ in range(min(len(loader) - 1, 8)):  # a few batches of the same epoch suffice at this speed
        xb, yb = next(it)
        n += len(yb)
    rate = n / (time.perf_counter() - start)
    del it, loader
    return rate


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, help="default 50,000, CIFAR-10's training set size (--smoke 1,024)")
    p.add_argument("--batch-size", type=int, help="default 512 (--smoke 64)")
    p.add_argument("--epochs", type=int, help="epochs of onecycle's loader to time (default 2, --smoke 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--smoke", action="store_true", help="the smallest run of every step, in seconds: not a measurement")
    a = p.parse_args()
    for key, full, smoke in (("images", 50_000, 1024), ("batch_size", 512, 64), ("epochs", 2, 1)):
        if getattr(a, key) is None:
            setattr(a, key, smoke if a.smoke else full)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (a.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (a.images,), generator=g)
    if not a.smoke:  # a smoke run shares the machine (the suite runs it): it takes the threads it is given
        torch.set_num_threads(os.cpu_count())
    result = {"benchmark": "loader", **({"smoke": True} if a.smoke else {}), "images": a.images,
              "batch_size": a.batch_size, "device": a.device,
              "cores": os.cpu_count(), "workers": a.workers, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(),
              "onecycle_images_per_s": round(ours(x, y, a.batch_size, a.epochs, a.device)),
              "torchvision_pil_images_per_s": round(torchvision_loop(x, y, a.batch_size, 1, True, a.workers)),
              "torchvision_tensor_images_per_s": round(torchvision_loop(x, y, a.batch_size, 1, False, a.workers))}
    best = max(result["torchvision_pil_images_per_s"], result["torchvision_tensor_images_per_s"])
    result["ratio_vs_faster_torchvision"] = round(result["onecycle_images_per_s"] / best, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
