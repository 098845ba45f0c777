"""fastai's own `lr_find` on recorded losses: `python benchmarks/suggest.py --fastai-python PY` runs it
(PY: a python with fastai 2.8 installed, e.g. `python -m venv --system-site-packages /tmp/fastai &&
/tmp/fastai/bin/pip install fastai==2.8.12`).

Reads a JSON list of sweeps (`{"losses": [...], "num_it": 100, "start_lr": 1e-7, "end_lr": 10}`) on
stdin. For each, fastai's `Learner.lr_find` runs on a model whose loss at step i is the sweep's
recorded raw loss i (plus 0 x the model's output, so there is a gradient to step), so fastai's
Recorder (its smoothing), LRFinder (its LR schedule and its stop rule), `lr_find`'s trimming and its
four suggestion functions all run as they run for a user. Prints one JSON line: fastai's version and,
per sweep, its valley, slide, minimum and steep. Asking for a step past the recorded ones means
fastai's stop rule disagrees with the sweep's, and stops this script with that message.
"""

import json
import math
import sys
import tempfile

import torch
from torch import nn

import fastai
from fastai.callback.schedule import minimum, slide, steep, valley  # also patches Learner.lr_find
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x * self.w


def replay(sweep: dict, path: str) -> dict:
    recorded = sweep["losses"]
    ended_on_nan = not math.isfinite(recorded[-1])
    step = iter(range(10 ** 9))

    def loss_func(pred, y):
        i = next(step)
        if i < len(recorded):
            value = recorded[i]
        elif ended_on_nan:  # the model is NaN from here on: every later loss is too
            value = math.nan
        else:
            raise RuntimeError(f"fastai asked for step {i} but the sweep stopped after {len(recorded)}: "
                               f"the stop rules disagree")
        return torch.tensor(value) + 0 * pred.sum()

    items = [(torch.ones(1), torch.zeros(1))] * (sweep["num_it"] + 10)  # one epoch holds every step
    dls = DataLoaders(DataLoader(items, bs=1), DataLoader(items[:1], bs=1))
    learn = Learner(dls, Scalar(), loss_func=loss_func, path=path)
    with learn.no_bar():
        found = learn.lr_find(start_lr=sweep["start_lr"], end_lr=sweep["end_lr"], num_it=sweep["num_it"],
                              show_plot=False, suggest_funcs=(valley, slide, minimum, steep))
    return {"valley": found.valley, "slide": found.slide, "minimum": found.minimum, "steep": found.steep}


def main() -> None:
    sweeps = json.loads(sys.stdin.read())
    with tempfile.TemporaryDirectory() as path:
        out = [replay(s, path) for s in sweeps]
    print(json.dumps({"fastai": fastai.__version__, "suggestions": out}))


if __name__ == "__main__":
    main()
