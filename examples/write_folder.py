"""Write an image folder to try `--config folder` on, offline: `python examples/write_folder.py digits`.

The bundled 3-vs-7 sample (MNIST's 3s and 7s) as PNG files in fastai's and torchvision's layout:
    digits/train/3/00000.png ... digits/train/7/...    (--train images)
    digits/valid/3/...           digits/valid/7/...    (--valid images)
A stand-in for your own photos: point --data-dir at your folder instead.

    python examples/write_folder.py digits --smoke    # the smallest folder: 16 training and 8 validation images
"""

import argparse
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="the folder to write (created)")
    p.add_argument("--train", type=int, help="training images, of 12,396 (default 1000, --smoke 16)")
    p.add_argument("--valid", type=int, help="validation images, of 2,038 (default 500, --smoke 8)")
    p.add_argument("--smoke", action="store_true", help="the smallest folder that shows every step")
    a = p.parse_args()
    a.train = a.train if a.train is not None else 16 if a.smoke else 1000
    a.valid = a.valid if a.valid is not None else 8 if a.smoke else 500
    with resources.files("onecycle_cli").joinpath("assets/mnist_sample.npz").open("rb") as f, np.load(f) as z:
        splits = (("train", a.train, z["x_train"], z["y_train"]), ("valid", a.valid, z["x_valid"], z["y_valid"]))
        for split, n, x, y in splits:
            for i in range(min(n, len(x))):
                folder = a.root / split / ("3", "7")[y[i]]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x[i]).save(folder / f"{i:05d}.png")
    print(f"wrote {min(a.train, 12396)} training and {min(a.valid, 2038)} validation PNGs under {a.root}")


if __name__ == "__main__":
    main()
