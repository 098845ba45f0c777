"""Where to put max_lr, read off a range-test curve: `onecycle find --config mnist_sample`.

Two smoothings of the same raw losses are read:
- the causal EMA (beta 0.98, bias-corrected) that fastai plots and that decides when the sweep
  stops. It trails the raw loss by about 25 steps in the middle of a 100-step sweep: two decades of
  LR. On the MNIST curves its minimum sits where the raw loss has already blown up.
- a lag-free smoothing: a centred median over 5 points (single-batch spikes vanish), then an
  exponential average run forward and then backward (the two lags cancel).

Four rules, as fastai names them, each a small function of (lrs, smoothed losses):
  valley   (lag-free) the floor of the loss's fall: the first LR where the loss has done 90% of its
           fall from the starting plateau to its lowest point
  minimum  (lag-free) a tenth of the LR at the lowest loss
  steep    (EMA, as fastai) where the loss falls fastest against log(lr)
  slide    (EMA, as fastai) walk left from the end until the slope stops changing. The default:
           trained at, it cost the least accuracy of the four (`benchmarks/suggest.py`: 0.48 points
           below the best of a max_lr grid, mean of 6 tasks x 5 seeds; minimum 0.49, valley 2.01,
           steep 10.2; docs/benchmarks.md)
valley and minimum locate the floor, which the EMA's lag moves by decades; steep and slide are
fastai's slope heuristics, kept on the curve their thresholds were tuned for. fastai's own valley
(the middle of the longest decreasing run of the EMA) also counts the flat start as part of the
valley: on the bundled 3-vs-7 curves it lands 2-8x below the LRs that train well.

The rules read the finite part of the curve with its first 10% and last 5 points trimmed (the
start is flat noise, the end is the blow-up). A rule never returns nothing: with too few points it
falls back to a simpler one and says so in `note`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

MEDIAN_WINDOW = 5    # points; wider than a spike, narrower than the fall (12 points a decade at num_it 100)
LAG_FREE_BETA = 0.8  # each pass averages ~5 points; forward then backward, so nothing moves
FALL = 0.9           # valley: share of the plateau-to-floor fall already done


@dataclass(frozen=True)
class Suggestion:
    name: str
    lr: float
    loss: float          # the smoothed loss there, to mark it on the plot
    note: str = ""       # empty, or why a fallback was used

    def as_dict(self) -> dict:
        return asdict(self)


def _ema(x: np.ndarray, beta: float) -> np.ndarray:
    out, avg = np.empty_like(x), 0.0
    for i, v in enumerate(x):
        avg = beta * avg + (1 - beta) * v
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def lag_free(losses: np.ndarray) -> np.ndarray:
    """Centred median, then a forward and a backward EMA: smooth, and aligned with the LRs."""
    half = MEDIAN_WINDOW // 2
    padded = np.pad(losses, half, mode="edge")
    median = np.median(np.lib.stride_tricks.sliding_window_view(padded, MEDIAN_WINDOW), axis=1)
    return _ema(_ema(median, LAG_FREE_BETA)[::-1], LAG_FREE_BETA)[::-1]


def trim(lrs: np.ndarray, smooth: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The part of the curve the rules read, and a note when trimming had to be relaxed."""
    lo, hi = len(smooth) // 10, len(smooth) - 5
    if hi - lo >= 5:
        return lrs[lo:hi], smooth[lo:hi], ""
    return lrs, smooth, f"only {len(smooth)} finite points: used the curve untrimmed"


def valley(lrs: np.ndarray, loss: np.ndarray) -> tuple[int, str]:
    floor = int(np.argmin(loss))
    plateau = float(np.median(loss[:5]))
    fall = plateau - loss[floor]
    if floor == 0 or fall <= 0.01 * abs(plateau):  # under 1% of the loss: noise, not a fall
        return floor, "the loss never fell below its start: used the lowest point"
    # the first point within 10% of the floor: past it, a higher LR buys no lower loss
    return int(np.argmax(loss[:floor + 1] <= loss[floor] + (1 - FALL) * fall)), ""


def steep(lrs: np.ndarray, loss: np.ndarray) -> tuple[int, str]:
    if len(loss) < 2:
        return 0, "a single point: used it"
    slope = np.diff(loss) / np.diff(np.log(lrs))
    return int(np.argmin(slope)), ""


def minimum(lrs: np.ndarray, loss: np.ndarray) -> tuple[float, str]:
    return float(lrs[int(np.argmin(loss))] / 10), ""


def slide(lrs: np.ndarray, loss: np.ndarray, window: int = 15, tolerance: float = 0.005) -> tuple[float, str]:
    if len(loss) <= window:
        i, _ = valley(lrs, loss)
        return float(lrs[i]), f"fewer than {window + 1} points for slide: used valley"
    slope = np.gradient(loss)
    right = len(loss) - 1
    left = right - window
    lr = float(lrs[left])
    # move the window left while the slopes at its two ends still differ: the loss is still bending
    while left >= 0 and abs(slope[right] - slope[left]) > tolerance:
        lr = float(lrs[left])
        right -= 1
        left -= 1
    return lr, ""


# each rule and the smoothing it reads
RULES: dict[str, tuple[Callable, str]] = {"valley": (valley, "lag_free"), "steep": (steep, "ema"),
                                          "minimum": (minimum, "lag_free"), "slide": (slide, "ema")}


def suggest(lrs, losses, ema) -> tuple[dict[str, Suggestion], list[float]]:
    """Every rule's suggestion for one curve (lrs ascending, raw losses, their causal EMA), and the
    lag-free curve."""
    lrs, losses, ema = (np.asarray(v, dtype=float) for v in (lrs, losses, ema))
    finite = np.isfinite(losses) & np.isfinite(ema)
    end = len(losses) if finite.all() else int(np.argmin(finite))  # the curve ends at the first NaN/inf
    if end == 0:
        lr = float(lrs[0]) if len(lrs) else float("nan")
        note = "no finite loss at all: the model cannot train even at start_lr"
        return {name: Suggestion(name, lr, float("nan"), note) for name in RULES}, []
    curves = {"lag_free": lag_free(losses[:end]), "ema": ema[:end]}
    out = {}
    for name, (rule, which) in RULES.items():
        part_lrs, part, trim_note = trim(lrs[:end], curves[which])
        value, note = rule(part_lrs, part)
        lr = float(part_lrs[value]) if isinstance(value, int) else value
        loss = float(np.interp(np.log(lr), np.log(part_lrs), part))
        out[name] = Suggestion(name, lr, loss, "; ".join(n for n in (trim_note, note) if n))
    return out, curves["lag_free"].tolist()
