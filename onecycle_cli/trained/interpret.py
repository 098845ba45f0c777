"""What a model gets wrong, as files: fastai's ClassificationInterpretation, headless.

`write_interpretation(folder, scores, images)` writes, for a train run (at its end, on its
validation set) or an evaluation:
  per_class.csv      each class's images, correct and accuracy
  confusion.csv      actual (rows) x predicted (columns); with more than 30 classes, the 30 that take
                     part in the most mistakes, sorted by them (the first cell says so)
  most_confused.csv  actual, predicted, count of every confusion, most frequent first
  top_losses.csv     the validation images with the highest loss: their index, label, prediction,
                     its probability and the loss
  top_losses.png     those images, each titled with its label, the prediction, its probability and the loss
confusion.png is drawn from confusion.csv by `runs.plots` (a view, redrawn by `onecycle plot`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

import numpy as np

from ..runs.plots import label, pyplot, save_png
from ..safe_files import atomic_write_text
from .scores import Scores

MOST_SHOWN = 30   # classes in confusion.csv / .png: a readable matrix, not a 1000 x 1000 wall
TOP_LOSSES = 9    # images in top_losses.png (3 x 3, as fastai's default)
NAME_CHARS = 24   # a class name in a title or tick label


def _csv(rows: list[list]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def shown_classes(scores: Scores) -> list[int]:
    """Every class when there are few; else those in the most mistakes (as actual or predicted), most first."""
    k = len(scores.classes)
    if k <= MOST_SHOWN:
        return list(range(k))
    wrong = scores.preds != scores.labels
    errors = np.bincount(scores.labels[wrong], minlength=k) + np.bincount(scores.preds[wrong], minlength=k)
    return [int(i) for i in np.lexsort((np.arange(k), -errors))[:MOST_SHOWN]]


def write_interpretation(folder: Path, scores: Scores, images: Callable[[np.ndarray], np.ndarray]) -> list[Path]:
    """The files above in `folder`; `images(indices)` gives those images as uint8 N x C x H x W."""
    names = scores.classes
    written = []

    def put(name: str, rows: list[list]) -> None:
        atomic_write_text(folder / name, _csv(rows))
        written.append(folder / name)

    put("per_class.csv", [["class", "images", "correct", "accuracy"]]
        + [[r["class"], r["images"], r["correct"], "" if r["accuracy"] is None else f"{r['accuracy']:.6f}"]
           for r in scores.per_class()])
    shown = shown_classes(scores)
    corner = "actual \\ predicted" + ("" if len(shown) == len(names) else
                                       f" (the {len(shown)} classes in the most mistakes, of {len(names)})")
    matrix = scores.confusion(shown)
    put("confusion.csv", [[corner] + [names[i] for i in shown]]
        + [[names[i]] + row.tolist() for i, row in zip(shown, matrix)])
    put("most_confused.csv", [["actual", "predicted", "count"]]
        + [[names[a], names[p], n] for a, p, n in scores.pairs()])
    top = scores.top_losses(TOP_LOSSES)
    put("top_losses.csv", [["index", "actual", "predicted", "probability", "loss"]]
        + [[int(i), names[scores.labels[i]], names[scores.preds[i]], f"{scores.prob[i]:.6f}", f"{scores.loss[i]:.6f}"]
           for i in top])
    if len(top):
        written.append(top_losses_png(folder / "top_losses.png", scores, top, images(top)))
    return written


def _short(name: str) -> str:
    return label(name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 1] + "…")


def top_losses_png(path: Path, scores: Scores, top: np.ndarray, pictures: np.ndarray) -> Path:
    """fastai's plot_top_losses: each image titled actual / predicted (probability) / loss."""
    plt = pyplot()
    cols = min(3, len(top))
    rows = -(-len(top) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, picture in zip(axes.flat, top, pictures):
        c = picture.shape[0]
        shown = picture.transpose(1, 2, 0) if c == 3 else picture[0]  # grey (or many channels: the first)
        ax.imshow(shown, cmap=None if c == 3 else "gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"actual {_short(scores.classes[scores.labels[i]])}\npredicted "
                     f"{_short(scores.classes[scores.preds[i]])} ({scores.prob[i]:.2f})\nloss {scores.loss[i]:.2f}",
                     fontsize=9)
    fig.suptitle("top losses: actual / predicted (probability) / loss", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def interpret_run(pipe, run, display) -> None:
    """At a completed run's end: its validation set through the final model, the files above in the run.
    A view of the model like the plots: if it cannot be written, a warning, and the run's outcome stands."""
    import torch

    from ..pipeline import class_names
    from ..runs.plots import reason
    from .load import Trained
    from .scores import score
    ds, size = pipe.ds, pipe.cfg.train.eval_batch_size
    trained = Trained(run.path, "last", pipe.cfg, pipe.model, class_names(ds), ds.shape, pipe.normalize, None,
                      pipe.device, pipe.precision)
    try:
        scores = score(trained, ((ds.x_valid[i:i + size], ds.y_valid[i:i + size])
                                 for i in range(0, len(ds.x_valid), size)))
        write_interpretation(run.path, scores, lambda rows: ds.x_valid[torch.from_numpy(rows)].cpu().numpy())
    except Exception as e:
        display.warn(f"interpretation (confusion.csv, top_losses.png) not written: {reason(e)}")
