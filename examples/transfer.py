"""A small transfer experiment, offline, through the real CLI: `python examples/transfer.py [--quick]`.

Does pretraining help, and how should a pretrained model be fine-tuned with 1cycle? The claims of the
fastai forum thread behind `fine_tune` (issue 11), tested on a task where pretraining should help:

    source: Fashion-MNIST classes 0-4 (t-shirt_top, trouser, pullover, dress, coat), 1000 images a class
    target: Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle_boot), 300 images a class,
            written as an image folder (train/ and valid/, one folder per class), as a user's photos would be

A ResNet-20 is pretrained on the source once (seed 0), then every arm trains it (or a fresh one) on the
target for the same number of epochs, over 3 seeds:

    (a) scratch     random weights, one 1cycle of the whole network
    (b) head only   the source's body frozen for the whole run, one 1cycle on a new head (train.epochs 0)
    (c) fine_tune   fastai's fine_tune: 1 epoch on the head (pct_start 0.99), then the rest unfrozen with
                    discriminative LRs (optim.lr_mult 100) at max_lr/2
    (d) two short   the unfrozen pretrained network, two 1cycles of half the epochs each (the second run
                    starts from the first with --init, as fit_one_cycle called twice)
    (e) one long    the same, one 1cycle of all the epochs
    (f) head cycle  the forum's other recipe: a full 1cycle on the head (a quarter of the epochs,
                    pct_start 0.25), then the unfrozen network with discriminative LRs (lr_mult 100)

Every arm's max_lr is the default (`floor`) suggestion of a range test on the target, run once per kind of start
(seed 0) and shared by the arms that start alike, as `train --max-lr find` would sweep each: a random network
(a); the pretrained network with its body frozen (b, which trains the head alone); the pretrained network
unfrozen at fine_tune's discriminative LRs (lr_mult 100), as a fine_tune's unfrozen cycle trains it (c, f);
the pretrained network unfrozen (d, e; `--unfrozen-lr X` trains those two at X instead). The head is always
new: the source's 5 classes are not the target's 5 (its checkpoint records their names, and --init keeps a
head only for the same classes).

Everything runs through `onecycle` (`python -m onecycle_cli ... --json`) into `<work>/runs`; the script
prints one line per step on stderr, a table at the end, and one JSON summary on stdout (also written to
`<work>/summary.json`). About 20 minutes on 2 CPU cores with OMP_NUM_THREADS=1; `--quick` is a smoke run
of tiny sizes (about a minute); `--arms` runs some of the arms only.

The data: torchvision's Fashion-MNIST layout, `<data-root>/FashionMNIST/raw/` with the four uncompressed
idx files (train-images-idx3-ubyte, ...). `--data-root` defaults to `../shared/data` beside this checkout;
elsewhere pass the folder that holds `FashionMNIST/` (where the network allows, `onecycle data download
--config mnist --dataset fashion_mnist --data-dir DIR` fetches it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
SOURCE, TARGET = range(0, 5), range(5, 10)
# which range test gives each arm its max_lr: the one that starts as the arm starts
LR_FROM = {"a": "random", "b": "frozen", "c": "fine_tune", "d": "unfrozen", "e": "unfrozen", "f": "fine_tune"}

# full: the experiment; quick: the same steps at sizes that run in seconds (a smoke test, not a result)
SIZES = {
    "full": {"source_train": 1000, "source_valid": 200, "target_train": 300, "target_valid": 300,
             "source_epochs": 6, "source_batch": 128, "epochs": 8, "batch": 64, "num_it": 100, "seeds": 3, "jobs": 1},
    "quick": {"source_train": 48, "source_valid": 16, "target_train": 32, "target_valid": 16,
              "source_epochs": 1, "source_batch": 16, "epochs": 4, "batch": 16, "num_it": 12, "seeds": 2, "jobs": 2},
}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fail(message: str, code: int = 2) -> None:
    """Stop with one line on stderr: exit 2 for what was asked of this script, onecycle's own code for its failures."""
    say(f"transfer.py: {message}")
    raise SystemExit(code)


# ------------------------------------------------------------------------------------------------
# the data: two image folders written from the idx files


def read_fashion(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST's train and test splits as (images N x 28 x 28, labels N), read by onecycle's own checked
    reader."""
    from onecycle_cli.datasets.builtin import IDX_FILES, read_idx
    from onecycle_cli.errors import DataError
    raw = root / "FashionMNIST" / "raw"
    missing = [name for pair in IDX_FILES.values() for name in pair if not (raw / name).is_file()]
    if missing:
        fail(f"no Fashion-MNIST idx files in {raw} (missing {', '.join(missing)}): pass "
                         f"--data-root DIR, the folder holding FashionMNIST/raw/ (torchvision's layout, uncompressed)")
    try:  # a truncated or foreign file is one line naming it, as onecycle itself says it
        return {split: (read_idx(raw / images, 3), read_idx(raw / labels, 1))
                for split, (images, labels) in IDX_FILES.items()}
    except DataError as e:
        fail(str(e))


def write_folder(folder: Path, data: dict, classes: range, train: int, valid: int) -> dict:
    """`folder/train/<class>/*.png` and `folder/valid/<class>/*.png`: the first `train` images of each class
    from Fashion-MNIST's training split and the first `valid` from its test split. Left as it is when a
    previous call wrote the same (the onecycle cache then stays valid too)."""
    plan = {"classes": [CLASSES[c] for c in classes], "train": train, "valid": valid}
    manifest = folder / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()) == plan:
        return plan
    for split, n in (("train", train), ("valid", valid)):
        images, labels = data[split]
        for c in classes:
            out = folder / split / CLASSES[c]
            out.mkdir(parents=True, exist_ok=True)
            for old in out.glob("*.png"):  # another size before: the folder holds exactly this plan
                old.unlink()
            for i in np.flatnonzero(labels == c)[:n]:
                Image.fromarray(images[i]).save(out / f"{i:05d}.png")
    manifest.write_text(json.dumps(plan))
    return plan


# ------------------------------------------------------------------------------------------------
# the CLI


class Onecycle:
    """Runs `onecycle ARGS --json` as a user would (this interpreter's onecycle) and returns its summary."""

    def __init__(self, log: Path, jobs: int = 1):
        self.log = log
        # commands run side by side share the cores: torch's threads oversubscribed collapse 10-50x (the quick
        # run took 240 s instead of 50 here), so each gets its share unless the user chose
        self.env = dict(os.environ)
        if jobs > 1 and "OMP_NUM_THREADS" not in self.env:
            self.env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
        self.commands: list[str] = []
        self.lock = threading.Lock()  # with --jobs, several commands finish at once

    def __call__(self, *args: str) -> dict:
        shown = "onecycle " + " ".join(shlex.quote(str(a)) for a in args) + " --json"
        with self.lock:
            self.commands.append(shown)
            say(f"$ {shown}")
        p = subprocess.run([sys.executable, "-m", "onecycle_cli", *map(str, args), "--json"], capture_output=True,
                           text=True, env=self.env)
        with self.lock, self.log.open("a") as f:  # every run's human output, for reading afterwards
            f.write(f"$ {shown}\n{p.stderr}\n")
        if p.returncode != 0:
            tail = "\n".join(p.stderr.strip().splitlines()[-5:])
            fail(f"onecycle exited {p.returncode}:\n{tail}\n(the whole output: {self.log})", p.returncode)
        return json.loads(p.stdout)


def accuracies(summary: dict) -> list[dict]:
    """The runs of a `train --seeds` summary (or of a single run), each as seed, accuracy and seconds."""
    runs = summary["runs"] if "runs" in summary else [summary]
    return [{"seed": r["seed"], "accuracy": r["final"]["accuracy"], "train_seconds": r["train_seconds"],
             "wall_seconds": r["wall_seconds"], "max_lr": r["max_lr"], "run_dir": r["run_dir"],
             "head": (r.get("weights") or {}).get("head")} for r in runs]


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# ------------------------------------------------------------------------------------------------
# the experiment


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA,
                   help="the folder holding FashionMNIST/raw/ (default: ../shared/data beside this checkout)")
    p.add_argument("--work", type=Path, default=Path("transfer-experiment"),
                   help="where the image folders, runs and summary go (default: ./transfer-experiment)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every step, not a result")
    p.add_argument("--seeds", type=int, help="seeds per arm (default: 3; 2 with --quick)")
    p.add_argument("--epochs", type=int, help="epochs of every arm on the target (default: 8; 4 with --quick)")
    p.add_argument("--arms", default=",".join(LR_FROM), help="which arms to run (default: all, a,b,c,d,e,f)")
    p.add_argument("--unfrozen-lr", type=float, help="train (d) and (e) at this max_lr instead of the unfrozen "
                   "range test's suggestion (a check of how much the comparison depends on it)")
    p.add_argument("--jobs", type=int, help="commands run at once where they do not depend on each other (default: "
                   "1; 2 with --quick); the seconds measured are comparable only at 1")
    a = p.parse_args()
    size = dict(SIZES["quick" if a.quick else "full"])
    size.update({k: v for k, v in (("seeds", a.seeds), ("epochs", a.epochs), ("jobs", a.jobs)) if v is not None})
    seeds, epochs, jobs = size["seeds"], size["epochs"], size["jobs"]
    if seeds < 1 or epochs < 4 or jobs < 1:
        fail("expected --seeds >= 1, --jobs >= 1 and --epochs >= 4 (two short cycles of "
                         "half each, and a head cycle of a quarter)")
    chosen = [k.strip() for k in a.arms.split(",") if k.strip()]
    if not chosen or any(k not in LR_FROM for k in chosen) or len(set(chosen)) != len(chosen):
        fail(f"--arms {a.arms}: expected some of {','.join(LR_FROM)}, each once")
    if a.unfrozen_lr is not None and not 0 < a.unfrozen_lr < 10:
        fail(f"--unfrozen-lr {a.unfrozen_lr}: expected a learning rate between 0 and 10")
    pool = ThreadPoolExecutor(jobs)
    started = time.time()
    work = a.work
    runs = work / "runs"
    data = read_fashion(a.data_root)
    say(f"writing the image folders under {work} from {a.data_root / 'FashionMNIST' / 'raw'}")
    work.mkdir(parents=True, exist_ok=True)
    source = write_folder(work / "source", data, SOURCE, size["source_train"], size["source_valid"])
    target = write_folder(work / "target", data, TARGET, size["target_train"], size["target_valid"])
    cli = Onecycle(work / "onecycle.log", jobs)

    # the same network, data handling and optimiser for every run: the folder preset (AdamW, fastai's
    # 1cycle shape) at 28 px grey, CIFAR's reflect-pad + crop and flips (clothes mirror well)
    common = ["--config", "folder", "--model", "resnet20", "--set", "data.image_size=28", "--set", "data.channels=1",
              "--set", "data.augment=pad_crop", "--set", "train.eval_batch_size=256", "--runs-dir", runs]
    on_target = common + ["--data-dir", work / "target", "--batch-size", size["batch"]]
    seed_list = ",".join(map(str, range(seeds)))

    say("pretraining on the source classes (seed 0), at the range test's suggestion")
    pre = cli("train", *common, "--data-dir", work / "source", "--batch-size", size["source_batch"],
              "--epochs", size["source_epochs"], "--max-lr", "find", "--set", f"find.num_it={size['num_it']}",
              "--seed", 0)
    pretrained = pre["run_dir"]
    say(f"  source accuracy {pre['final']['accuracy']:.4f} at max_lr {pre['max_lr']:.3g}, {pre['wall_seconds']:.0f} s")

    say("range tests on the target, one per kind of start the arms make (seed 0)")
    num_it = ["--num-it", size["num_it"]]
    starts = {"random": [], "frozen": ["--freeze", "--set", f"model.init={pretrained}"],
              "fine_tune": ["--set", "train.freeze_epochs=1", "--set", "optim.lr_mult=100",
                            "--set", f"model.init={pretrained}"],
              "unfrozen": ["--set", f"model.init={pretrained}"]}
    needed = {LR_FROM[k] for k in chosen} - ({"unfrozen"} if a.unfrozen_lr is not None else set())
    starts = {k: v for k, v in starts.items() if k in needed}
    finds = dict(zip(starts, pool.map(lambda extra: cli("find", *on_target, *num_it, *extra), starts.values())))
    lr = {k: f["run_dir"] for k, f in finds.items()}  # --max-lr FIND_RUN: train at that test's suggestion
    for k, f in finds.items():
        say(f"  {k}: {f['suggestion']['name']} {f['suggestion']['lr']:.3g}")
    if a.unfrozen_lr is not None:
        lr["unfrozen"] = a.unfrozen_lr

    half, head_epochs = epochs // 2, max(1, epochs // 4)
    init = ["--init", pretrained]
    lr = {k: lr.get(LR_FROM[k]) for k in LR_FROM}  # each arm's --max-lr
    arms = {
        "a": ("scratch", "random weights, one 1cycle of the whole network",
              [*on_target, "--epochs", epochs, "--max-lr", lr["a"]]),
        "b": ("head only", "body frozen throughout, one 1cycle on a new head (freeze_epochs all, epochs 0)",
              [*on_target, *init, "--set", f"train.freeze_epochs={epochs}", "--epochs", 0,
               "--set", "schedule.freeze_pct_start=0.25", "--max-lr", lr["b"]]),
        "c": ("fine_tune", "fastai's fine_tune: 1 frozen epoch, then unfrozen, lr_mult 100",
              [*on_target, *init, "--set", "train.freeze_epochs=1", "--epochs", epochs - 1,
               "--set", "optim.lr_mult=100", "--max-lr", lr["c"]]),
        "d": ("two short",
              f"unfrozen, two 1cycles of {half} + {epochs - half} epochs (the second from the first, --init)",
              [*on_target, *init, "--epochs", half, "--max-lr", lr["d"]]),
        "e": ("one long", f"unfrozen, one 1cycle of {epochs} epochs",
              [*on_target, *init, "--epochs", epochs, "--max-lr", lr["e"]]),
        "f": ("head cycle", f"a full 1cycle on the head ({head_epochs} epochs, pct_start 0.25), then unfrozen, "
              f"lr_mult 100",
              [*on_target, *init, "--set", f"train.freeze_epochs={head_epochs}", "--set",
               "schedule.freeze_pct_start=0.25", "--epochs", epochs - head_epochs, "--set", "optim.lr_mult=100",
               "--max-lr", lr["f"]]),
    }

    def arm(key: str) -> dict:
        name, what, args = arms[key]
        runs_of = accuracies(cli("train", *args, "--seeds", seed_list))
        if key == "d":  # the second short cycle of each seed continues that seed's first, head and all
            for r in runs_of:
                second = accuracies(cli("train", *on_target, "--init", r["run_dir"], "--epochs", epochs - half,
                                        "--max-lr", lr["d"], "--seed", r["seed"]))[0]
                r.update(accuracy=second["accuracy"], first_cycle_accuracy=r["accuracy"],
                         train_seconds=r["train_seconds"] + second["train_seconds"],
                         wall_seconds=r["wall_seconds"] + second["wall_seconds"],
                         run_dir=[r["run_dir"], second["run_dir"]], second_head=second["head"])
        mean, std = spread([r["accuracy"] for r in runs_of])
        say(f"arm ({key}) {name}: {mean:.4f} ± {std:.4f} over {len(runs_of)} seeds")
        return {"name": name, "what": what, "epochs": epochs, "max_lr": runs_of[0]["max_lr"],
                "accuracy_mean": mean, "accuracy_std": std,
                "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in runs_of),
                "wall_seconds_mean": statistics.fmean(r["wall_seconds"] for r in runs_of),
                "runs": runs_of}

    say("the arms, each over seeds " + seed_list)
    results = dict(zip(chosen, pool.map(arm, chosen)))
    pool.shutdown()

    summary = {
        "experiment": "Fashion-MNIST 0-4 -> 5-9 transfer, ResNet-20 at 28 px",
        "quick": a.quick, "sizes": size, "unfrozen_lr": a.unfrozen_lr,
        "omp_num_threads": cli.env.get("OMP_NUM_THREADS"), "source": source, "target": target,
        "pretrained": {"run_dir": pretrained, "accuracy": pre["final"]["accuracy"], "max_lr": pre["max_lr"],
                       "wall_seconds": pre["wall_seconds"]},
        "range_tests": {k: {"run_dir": f["run_dir"], "suggestion": f["suggestion"]} for k, f in finds.items()},
        "arms": results, "commands": cli.commands, "wall_seconds": round(time.time() - started, 1)}
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    say("")
    say(f"{'arm':<16} {'max_lr':>9} {'accuracy (mean ± std)':>22} {'train s':>8} {'wall s':>7}")
    for key, r in results.items():
        say(f"({key}) {r['name']:<12} {r['max_lr']:>9.3g} {r['accuracy_mean'] * 100:>13.2f} ± "
            f"{r['accuracy_std'] * 100:4.2f}% "
            f"{r['train_seconds_mean']:>8.1f} {r['wall_seconds_mean']:>7.1f}")
    say(f"{seeds} seeds each, {epochs} epochs on {size['target_train']} images a class; pretrained on "
        f"{size['source_train']} a class for {size['source_epochs']} epochs ({pre['final']['accuracy'] * 100:.2f}%); "
        f"{summary['wall_seconds']:.0f} s in all; {work / 'summary.json'}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
