"""A trained model run over labelled images: `onecycle evaluate runs/<id> --tta flip`.

`probabilities` is one batch: the inputs normalised as in validation, the model in eval mode, and
with `tta` each image and its mirror in the same forward pass, their softmax averaged (as timm's and
fastai's flip TTA). `score` runs every batch and keeps, per image and on the device, the label, the
prediction, its probability, the loss and whether the label is in the top 5; they are read to the
host once, at the end. `Scores` derives the rest (accuracy, per-class accuracy, the confusion
counts) in numpy, where a thousand classes cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from .load import Trained

TTA = ("none", "flip")
TOP = 5  # top-5 accuracy, where there are more classes than that


def probabilities(trained: Trained, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """N x K class probabilities of uint8 images `x` (on the device); with `tta`, averaged with the mirror's."""
    with torch.no_grad(), trained.precision.autocast():
        inputs = trained.inputs(x)
        if tta:
            inputs = torch.cat([inputs, inputs.flip(-1)])  # one batch: image and mirror side by side
        p = trained.model(inputs).float().softmax(1)
    return (p[:len(x)] + p[len(x):]) / 2 if tta else p


@dataclass
class Scores:
    classes: list[str]
    labels: np.ndarray      # N, int64: each image's class (an index into `classes`)
    preds: np.ndarray       # N, int64
    prob: np.ndarray        # N, float32: the predicted class's probability
    loss: np.ndarray        # N, float32: cross-entropy of the (averaged) probabilities
    in_top: np.ndarray | None  # N, bool: the label among the top 5 (None with 5 classes or fewer)
    tta: bool

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).mean())

    @property
    def mean_loss(self) -> float:
        return float(self.loss.astype(np.float64).mean())

    @property
    def top5(self) -> float | None:
        return None if self.in_top is None else float(self.in_top.mean())

    def per_class(self) -> list[dict]:
        k = len(self.classes)
        images = np.bincount(self.labels, minlength=k)
        right = np.bincount(self.labels[self.preds == self.labels], minlength=k)
        return [{"class": c, "images": int(n), "correct": int(r), "accuracy": (float(r / n) if n else None)}
                for c, n, r in zip(self.classes, images, right)]

    def pairs(self) -> list[tuple[int, int, int]]:
        """(actual, predicted, count) of every confusion, most frequent first (fastai's most_confused)."""
        wrong = self.preds != self.labels
        keys, counts = np.unique(self.labels[wrong] * len(self.classes) + self.preds[wrong], return_counts=True)
        order = np.lexsort((keys, -counts))
        return [(int(keys[i] // len(self.classes)), int(keys[i] % len(self.classes)), int(counts[i])) for i in order]

    def confusion(self, shown: list[int]) -> np.ndarray:
        """Counts of actual (rows) x predicted (columns), over the classes `shown` only."""
        index = np.full(len(self.classes), -1, np.int64)
        index[shown] = np.arange(len(shown))
        a, p = index[self.labels], index[self.preds]
        keep = (a >= 0) & (p >= 0)
        return np.bincount(a[keep] * len(shown) + p[keep], minlength=len(shown) ** 2).reshape(len(shown), len(shown))

    def top_losses(self, k: int) -> np.ndarray:
        """The images with the highest loss, highest first."""
        k = min(k, len(self))
        part = np.argpartition(-self.loss, k - 1)[:k] if k < len(self) else np.arange(len(self))
        return part[np.lexsort((part, -self.loss[part]))]

    def summary(self) -> dict:
        return {"images": len(self), "accuracy": self.accuracy, "top5": self.top5, "loss": self.mean_loss,
                "tta": "flip" if self.tta else "none"}


def score(trained: Trained, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], tta: bool = False) -> Scores:
    """Every (uint8 images, labels) batch through the model; one read to the host at the end."""
    k = len(trained.classes)
    kept: list[list[torch.Tensor]] = [[], [], [], [], []]
    was_training = trained.model.training
    trained.model.eval()
    try:
        for x, y in batches:
            x = x.to(trained.device, non_blocking=True)
            y = y.to(trained.device, non_blocking=True)
            p = probabilities(trained, x, tta)
            prob, pred = p.max(1)
            loss = -p.gather(1, y[:, None])[:, 0].clamp_min(1e-30).log()
            top = (p.topk(TOP, 1).indices == y[:, None]).any(1) if k > TOP else torch.zeros(0, device=p.device)
            for store, value in zip(kept, (y, pred, prob, loss, top)):
                store.append(value)
    finally:
        trained.model.train(was_training)
    if not kept[0]:
        raise ValueError("no images to score")
    labels, preds, prob, loss, top = (torch.cat(v).cpu().numpy() for v in kept)  # the one host read
    return Scores(trained.classes, labels.astype(np.int64), preds.astype(np.int64), prob.astype(np.float32),
                  loss.astype(np.float32), top.astype(bool) if k > TOP else None, tta)
