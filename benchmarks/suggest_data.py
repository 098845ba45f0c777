"""The image folders and the pretrained body that the folder and fine-tuning tasks of
benchmarks/suggest.py train on, written once into its work folder (beside the journal) and reused.

    digits      the README's "Your own images" folder, written by the README's own command:
                `python examples/write_folder.py digits` (the bundled 3s and 7s as 28 px PNGs, 1000 / 500)
    photos      photo-like: Fashion-MNIST's trousers, dresses, sneakers and bags (100 training, 50 validation
                images a class) as RGB JPEGs of mixed sizes (40-120 px a side, aspect 3:4 to 4:3), each object
                tinted, on a tinted, shaded and noisy background of the other brightness, placed off-centre on
                a larger canvas: what random-resized crops are for
    fashion5    the fine-tuning target: Fashion-MNIST classes 5-9 (100 / 100 a class), 28 px grey PNGs
    mnist10     a new domain for a body pretrained on clothes: MNIST's ten digits (50 / 50 a class)
    source      the pretrained body: a ResNet-20 trained by `onecycle train` on Fashion-MNIST classes 0-4
                (400 / 100 a class, 28 px grey, 5 epochs at max_lr 5e-3), its run directory given as
                model.init to the fine-tuning tasks

Each folder has a manifest.json of what it holds; a folder whose manifest matches is left alone (the
onecycle cache inside it stays valid). The smoke size writes a handful of images of each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RAW = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # torchvision's folder of each set's idx files

# what each kind needs from --data besides the bundled set
NEEDS = {"digits": [], "photos": ["fashion_mnist"], "fashion5": ["fashion_mnist"], "mnist10": ["mnist"],
         "source": ["fashion_mnist"]}
# images a class (train, valid) at each size; digits counts images in all (write_folder.py's flags)
COUNTS = {"full": {"digits": (1000, 500), "photos": (100, 50), "fashion5": (100, 100), "mnist10": (50, 50),
                   "source": (400, 100)},
          "smoke": {"digits": (160, 32), "photos": (32, 8), "fashion5": (32, 8), "mnist10": (16, 4), "source": (24, 8)}}
SOURCE_RUN = {"full": {"epochs": 5, "batch": 64}, "smoke": {"epochs": 2, "batch": 16}}
# the fine-tuning tasks read 28 px grey images as the source was trained on them
GREY28 = ["model.name=resnet20", "data.image_size=28", "data.channels=1", "data.augment=pad_crop", "data.flip=false"]


def at_hand(kind: str, data: Path) -> bool:
    return all((data / RAW[name] / "raw").is_dir() for name in NEEDS[kind])


def read_set(data: Path, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A built-in set's train and test splits as (images N x 28 x 28, labels N), through onecycle's checked reader."""
    from onecycle_cli.datasets.builtin import IDX_FILES, read_idx
    raw = data / RAW[name] / "raw"
    return {split: (read_idx(raw / images, 3), read_idx(raw / labels, 1))
            for split, (images, labels) in IDX_FILES.items()}


def as_saved(plan: dict) -> dict:
    """The plan as its JSON reads back (tuples as lists), to compare with a saved one."""
    return json.loads(json.dumps(plan))


def unchanged(folder: Path, plan: dict) -> bool:
    manifest = folder / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text()) == as_saved(plan)


def settle(folder: Path, plan: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(plan))


def photo(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One grey 28 x 28 object as a photo-like RGB image of its own size."""
    w = int(rng.integers(40, 121))
    h = int(np.clip(w * rng.uniform(0.75, 4 / 3), 40, 120))
    side = int(min(w, h) * rng.uniform(0.6, 0.9))  # the object fills 60-90% of the shorter side
    obj = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255
    alpha = np.zeros((h, w), np.float32)
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    alpha[top:top + side, left:left + side] = obj
    # the object stands out: light on dark, or dark on light
    dark, light = rng.uniform(0, 90, 3), rng.uniform(150, 255, 3)
    background, colour = (dark, light) if rng.random() < 0.5 else (light, dark)
    shade = 0.7 + 0.3 * rng.random((h, w, 1))  # texture on the object, a gradient of light across the picture
    lighting = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0), w)[None, :, None]
    pixels = (background * (1 - alpha[..., None]) + colour * shade * alpha[..., None]) * lighting
    pixels += rng.normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_classes(folder: Path, sets: dict, classes: list[int], counts: tuple[int, int], as_photos: bool) -> None:
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "valid"), counts):
        images, labels = sets[split]
        for c in classes:
            out = folder / split / f"class{c}"
            out.mkdir(parents=True, exist_ok=True)
            for old in out.iterdir():
                old.unlink()
            for i in np.flatnonzero(labels == c)[:n]:
                if as_photos:
                    photo(images[i], rng).save(out / f"{i:05d}.jpg", quality=85)
                else:
                    Image.fromarray(images[i]).save(out / f"{i:05d}.png")


def folder(kind: str, data: Path, work: Path, size: str) -> Path:
    """The folder of one kind, written unless already there."""
    target, counts = work / f"{kind}-{size}", COUNTS[size][kind]
    plan = {"kind": kind, "counts": counts}
    if unchanged(target, plan):
        return target
    if kind == "digits":  # exactly the README's command, at the README's sizes in full
        subprocess.run([sys.executable, str(REPO / "examples" / "write_folder.py"), str(target),
                        "--train", str(counts[0]), "--valid", str(counts[1])], check=True, stdout=subprocess.DEVNULL)
    elif kind in ("photos", "fashion5", "source"):
        classes = {"photos": [1, 3, 7, 8], "fashion5": list(range(5, 10)), "source": list(range(5))}[kind]
        write_classes(target, read_set(data, "fashion_mnist"), classes, counts, as_photos=kind == "photos")
    elif kind == "mnist10":
        write_classes(target, read_set(data, "mnist"), list(range(10)), counts, as_photos=False)
    settle(target, plan)
    return target


def pretrained(data: Path, work: Path, size: str) -> Path:
    """The run directory of the source body, trained once by the real CLI."""
    source = folder("source", data, work, size)
    record = work / f"source-{size}.json"
    plan = {"counts": COUNTS[size]["source"], **SOURCE_RUN[size], "max_lr": 5e-3}
    if record.is_file():
        saved = json.loads(record.read_text())
        if saved["plan"] == as_saved(plan) and Path(saved["run_dir"], "checkpoints", "last.pt").is_file():
            return Path(saved["run_dir"])
    args = [sys.executable, "-m", "onecycle_cli", "train", "--config", "folder", "--data-dir", str(source),
            "--epochs", str(plan["epochs"]), "--max-lr", str(plan["max_lr"]), "--batch-size", str(plan["batch"]),
            "--runs-dir", str(work / "runs"), "--json", *[a for s in GREY28 for a in ("--set", s)]]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"pretraining the source body failed ({done.returncode}):\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    record.write_text(json.dumps({"plan": plan, "run_dir": summary["run_dir"], "accuracy": summary.get("final")}))
    return Path(summary["run_dir"])


def prepare(kind: str, data: Path, work: Path, size: str) -> list[str]:
    """The --set overrides that point a task at its data (and, fine-tuning, at its pretrained body)."""
    if kind == "builtin":
        return [f"data.root={data}"]
    sets = [f"data.root={folder(kind, data, work, size)}"]
    if kind in ("fashion5", "mnist10"):
        sets += GREY28 + [f"model.init={pretrained(data, work, size)}"]
    return sets
