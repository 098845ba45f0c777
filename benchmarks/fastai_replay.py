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

    echo '[{"losses": [...], ...}]' | PY benchmarks/fastai_replay.py
    PY benchmarks/fastai_replay.py --smoke    # the smallest run: one made-up 50-step sweep, no stdin; under a
                                              # python without fastai it says so and prints {"fastai": null, ...}
"""

import argparse
import json
import math
import sys
import tempfile

import torch
from torch import nn

MISSING = (f"fastai is not importable in {sys.executable}: run this script with a python that has fastai 2.8 "
           f"(see its docstring; benchmarks/suggest.py --fastai-python PY passes it)")


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x * self.w


def smoke_sweep(num_it: int = 50) -> dict:
    """A sweep as a range test records it: the loss falls to its lowest 60% of the way, then rises, never past
    fastai's stop rule (4x the best smoothed loss), so fastai runs it to num_it as the sweep did."""
    losses = [1 + 3 * (i / (num_it - 1) - 0.6) ** 2 for i in range(num_it)]
    return {"losses": losses, "num_it": num_it, "start_lr": 1e-7, "end_lr": 10.0}


def replay(sweep: dict, path: str) -> dict:
    from fastai.callback.schedule import minimum, slide, steep, valley  # also patches Learner.lr_find
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="replay one made-up sweep instead of reading stdin")
    a = p.parse_args()
    try:
        import fastai
    except ImportError:
        print(f"fastai_replay.py: {MISSING}" + ("; skipped" if a.smoke else ""), file=sys.stderr)
        if a.smoke:  # a check of this script where fastai is not installed: it ran, and says what it skipped
            print(json.dumps({"smoke": True, "fastai": None, "skipped": MISSING}))
            return
        sys.exit(2)
    sweeps = [smoke_sweep()] if a.smoke else json.loads(sys.stdin.read())
    with tempfile.TemporaryDirectory() as path:
        out = [replay(s, path) for s in sweeps]
    print(json.dumps({**({"smoke": True, "sweeps": sweeps} if a.smoke else {}), "fastai": fastai.__version__,
                      "suggestions": out}))


if __name__ == "__main__":
    main()
