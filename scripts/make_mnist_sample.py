"""Build the bundled 3-vs-7 set from raw MNIST: `python scripts/make_mnist_sample.py ../shared/data/MNIST/raw [OUT]`.

Writes onecycle_cli/assets/mnist_sample.npz: the 3s and 7s of MNIST's training and test files
(12,396 and 2,038 images, as fastai's MNIST_SAMPLE), labels 0 for "3" and 1 for "7", as uint8
arrays compressed with deflate (about 2.3 MB; decompresses in ~30 ms, faster than lzma's 110 ms).
With OUT it writes there instead: the suite's run (a second or two), which checks that the bundled
file holds what this script makes from the real files.
"""

import sys
from pathlib import Path

import numpy as np

from onecycle_cli.datasets.builtin import IDX_FILES, read_idx

OUT = Path(__file__).resolve().parents[1] / "onecycle_cli" / "assets" / "mnist_sample.npz"


def main(raw: Path, out: Path = OUT) -> None:
    arrays = {}
    for split, (images, labels) in IDX_FILES.items():
        x, y = read_idx(raw / images, 3), read_idx(raw / labels, 1)
        keep = (y == 3) | (y == 7)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[keep], (y[keep] == 7).astype(np.uint8)
    assert len(arrays["x_train"]) == 12396 and len(arrays["x_valid"]) == 2038, "not the standard MNIST files"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB):",
          ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/MNIST/raw"),
         Path(sys.argv[2]) if len(sys.argv) > 2 else OUT)
