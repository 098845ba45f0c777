"""Scoring a run's checkpoint: `onecycle evaluate runs/<id> --checkpoint best --tta flip`.

By default on the run's own validation set (the same images, decoded the same way, as it validated
on); with `--data-dir` or `--dataset`, on another set of the same classes: a built-in set's test
split, or every image of a folder (a train/ + valid/ tree: its valid/). Its classes are matched to
the run's by name: one the run never learned is exit 2 naming it; one the set lacks is a warning.
The results go to RUN_DIR/evaluations/<checkpoint>[-flip][-<set>]/: evaluation.json (what
`--json` prints), per_class.csv, confusion.csv and .png, most_confused.csv, top_losses.csv and .png.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..datasets.arrays import Images
from ..display import Display, fmt_pct
from ..errors import DataError, RunDirError
from ..runs.directory import slug, to_json
from ..runs.plots import confusion_png
from ..safe_files import atomic_write_text, check_regular_or_dir
from ..safe_text import printable
from .interpret import write_interpretation
from .load import Trained, load_trained
from .scores import TTA, Scores, score

SHOWN = 20  # classes in the terminal's table; the files have them all


def _names(names: list[str], most: int = 8) -> str:
    return ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")


def eval_data(trained: Trained, data_dir: str | None, dataset: str | None, progress=None
              ) -> tuple[Images, np.ndarray, str, list[str]]:
    """(images, labels as the run's class indices, what they are, warnings) of the set to score."""
    base = trained.config.data.model_dump()
    other = data_dir is not None or dataset is not None
    try:
        cfg = DataConfig.model_validate({**base, **({"root": data_dir} if data_dir is not None else {}),
                                         **({"dataset": dataset} if dataset is not None else {}), "download": False})
    except Exception as e:
        first = e.errors()[0] if hasattr(e, "errors") else {"msg": str(e)}
        raise DataError(f"--dataset {dataset!r}: {first.get('msg')}") from None
    if cfg.dataset == "folder":
        from ..datasets.folder import read_folder
        arrays = read_folder(cfg, progress, whole=other)
    else:
        from ..datasets.read import read_arrays
        arrays = read_arrays(cfg)
    what = (f"{'every image of ' if other and cfg.dataset == 'folder' else ''}"
            f"{'folder ' + printable(str(Path(cfg.root).expanduser())) if cfg.dataset == 'folder' else cfg.dataset}"
            + ("" if other else " (the run's validation set)"))
    shape = tuple(arrays.x_valid.shape[1:])
    if shape != tuple(trained.shape):
        raise DataError(f"{what}: images of {'x'.join(map(str, shape))} do not fit the run's model, which takes "
                        f"{'x'.join(map(str, trained.shape))}")
    names = [printable(c) for c in arrays.classes]
    index = {c: i for i, c in enumerate(trained.classes)}
    unknown = [c for c in names if c not in index]
    if unknown:
        raise DataError(f"{what} has {len(unknown)} class(es) the run was not trained on: {_names(unknown)}; the "
                        f"run's classes are {_names(trained.classes)}")
    labels = np.array([index[c] for c in names], np.int64)[np.asarray(arrays.y_valid, np.int64)]
    held = set(np.unique(labels).tolist())
    missing = [c for i, c in enumerate(trained.classes) if i not in held]
    warnings = [f"{what} has no images of {len(missing)} of the run's classes: {_names(missing)}"] if missing else []
    return arrays.x_valid, labels, what, warnings


def batches(images: Images, labels: np.ndarray, size: int):
    """(uint8 images, labels) of `size`, gathered from the (maybe memory-mapped) images a batch at a time."""
    for start in range(0, len(images), size):
        yield (torch.from_numpy(images[start:start + size].numpy()),
               torch.from_numpy(labels[start:start + size]))


def out_folder(run: Path, name: str) -> Path:
    """RUN_DIR/evaluations/NAME, made if need be, never reached through a link."""
    folder = run / "evaluations"
    for path in (folder, folder / name):
        problem = check_regular_or_dir(path)
        if problem:
            raise RunDirError(f"{run}: {path.relative_to(run)} is {problem}; not writing through it")
        try:
            path.mkdir(exist_ok=True)
        except OSError as e:  # a run copied read-only, a full disk
            raise RunDirError(f"{run}: {path.relative_to(run)} cannot be made ({e.strerror}); the evaluation "
                              f"needs somewhere to write its files") from None
        if not path.is_dir() or check_regular_or_dir(path):
            raise RunDirError(f"{run}: {path.relative_to(run)} is not a directory; not writing there")
    return folder / name


def show(display: Display, result: dict, scores: Scores) -> None:
    top5 = f", top-5 {fmt_pct(result['top5'])}" if result["top5"] is not None else ""
    display.print(f"{result['checkpoint']} checkpoint on {result['data']}: accuracy {fmt_pct(result['accuracy'])}"
                  f"{top5}, loss {result['loss']:.4f} over {result['images']:,} images"
                  f"{' (each averaged with its mirror)' if scores.tta else ''}", markup=False)
    rows = sorted(scores.per_class(), key=lambda r: (r["accuracy"] is None, r["accuracy"] or 0))
    display.table(f"per class{f' (the {SHOWN} least accurate)' if len(rows) > SHOWN else ''}",
                  ["class", "images", "accuracy"],
                  [[r["class"], r["images"], fmt_pct(r["accuracy"]) if r["accuracy"] is not None else "-"]
                   for r in rows[:SHOWN]])
    if result["most_confused"]:
        display.print("most confused (actual -> predicted, count): " + "; ".join(
            f"{p['actual']} -> {p['predicted']} ({p['count']})" for p in result["most_confused"][:5]), markup=False)


def evaluate_run(run_dir: Path, display: Display, which: str = "last", tta: str = "none", data_dir: str | None = None,
                 dataset: str | None = None, device: str = "auto", batch_size: int | None = None) -> dict:
    """Score the run's checkpoint `which`; write the evaluation's files and return its summary."""
    started = time.time()
    if tta not in TTA:
        raise DataError(f"--tta {tta!r}: expected {' or '.join(TTA)}")
    trained = load_trained(run_dir, which, device)
    with display.counter("decode") as progress:
        images, labels, what, warnings = eval_data(trained, data_dir, dataset, progress)
    for line in warnings:
        display.warn(line)
    flip = tta == "flip"
    size = batch_size or trained.config.train.eval_batch_size
    scores = score(trained, batches(images, labels, max(1, size // 2) if flip else size), flip)
    name = which + ("-flip" if flip else "") + (f"-{slug(dataset or Path(data_dir).expanduser().resolve().name)}"
                                                if data_dir is not None or dataset is not None else "")
    out = out_folder(trained.run, name)
    write_interpretation(out, scores, lambda rows: images[rows].numpy())
    problems = []
    try:
        confusion_png(out)
    except Exception as e:  # a view: the numbers are written
        problems.append(f"confusion.png not written: {e}")
    result = {"command": "evaluate", "run_dir": str(trained.run), "checkpoint": which, "epoch": trained.epoch,
              "data": what, **scores.summary(), "per_class": scores.per_class(),
              "most_confused": [{"actual": scores.classes[a], "predicted": scores.classes[p], "count": n}
                                for a, p, n in scores.pairs()[:20]],
              "device": str(trained.device), "seconds": round(time.time() - started, 3), "out": str(out),
              "warnings": warnings}
    atomic_write_text(out / "evaluation.json", to_json(result) + "\n")
    show(display, result, scores)
    for line in problems:
        display.warn(line)
    display.print(f"written: {out}", markup=False)
    return result
