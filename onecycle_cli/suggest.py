"""Where to put max_lr, read off a range-test curve: `onecycle find --config mnist_sample`.

Two smoothings of the same raw losses are read:
- the causal EMA (beta 0.98, bias-corrected) that fastai plots and that decides when the sweep
  stops. It trails the raw loss by about 25 steps in the middle of a 100-step sweep: two decades of
  LR. On the MNIST curves its minimum sits where the raw loss has already blown up.
- a lag-free smoothing: a centred median over 5 points (single-batch spikes vanish), then an
  exponential average run forward and then backward (the two lags cancel).

Six rules, each a small function of (lrs, smoothed losses) that also says, in `reason`, how it read them:
  floor    (lag-free) a third of the LR at the lowest loss, never in the flat start before the fall (the lowest
           LR itself on a sweep of the head alone, and on a fine_tune's sweep of the whole network): the default,
           chosen for its worst case on the development half of `benchmarks/suggest.py`'s tasks and checked on
           the held-out half (docs/benchmarks.md)
  basin    (lag-free) a third of the middle (in log) of the basin around the lowest loss, the points within 20%
           of the fall above it: where the bottom is flat, batch noise moves the lowest point across it and
           the basin's middle stays. Tried against floor on all 12 tasks: better on the noisiest, worse on three
           others, so not the default (docs/benchmarks.md)
  valley   (lag-free) the floor of the loss's fall: the first LR where the loss has done 90% of its
           fall from the starting plateau to its lowest point
  minimum  (lag-free) a tenth of the LR at the lowest loss, as fastai's
  steep    (EMA, as fastai) where the loss falls fastest against log(lr)
  slide    (EMA, as fastai) walk left from the end until the slope stops changing
floor, valley and minimum locate the floor, which the EMA's lag moves by decades (where the fall comes
late and steep, as with SGD, slide reads the EMA and stops 4-5x low); steep and slide are fastai's slope
heuristics, kept on the curve their thresholds were tuned for. fastai's own valley (the middle of the
longest decreasing run of the EMA) also counts the flat start as part of the valley: on the bundled
3-vs-7 curves it lands 2-8x below the LRs that train well.

`read` says what else the curve shows: its floor, its divergence edge (past the floor, where the loss has
climbed back half its fall), the valley the floor rule reads (from the start of the fall to the floor),
and a warning where no rule can read it well: a loss that never falls, a fall under 40% of its start (no
clear valley), a fall under 8 times the batch-to-batch noise (a noisy valley), two minima, or a sweep of the
head alone before a fine_tune (`find --freeze`). On the 12 tasks, every curve of the two where the default
misses by over a point warns (on the fine_tune added after them, finetune/fashion5, it missed by 2.8 unwarned on
seeds 0-4, seed noise: -0.7 on seeds 5-9). A loss
that never climbs back before end_lr (no edge) is no warning: most BatchNorm nets scored on held-out batches,
and heads of frozen bodies, end so, and their floor is read as well as any.

The rules read the finite part of the curve with its first 10% and last 5 points trimmed (the
start is flat noise, the end is the blow-up). A rule never returns nothing: with too few points it
falls back to a simpler one and says so in `note`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

MEDIAN_WINDOW = 5    # points; wider than a spike, narrower than the fall (12 points a decade at num_it 100)
LAG_FREE_BETA = 0.8  # each pass averages ~5 points; forward then backward, so nothing moves
FALL = 0.9           # valley: share of the plateau-to-floor fall already done
START = 0.1          # floor: the fall has started once this share of it is done
THIRD = 3            # floor and basin: train at a third of the LR each reads (the floor, the basin's middle)
BASIN = 0.2          # basin: the points within this share of the fall above the floor
# read's warnings, set on benchmarks/suggest.py's 12 tasks after both halves were measured (docs/benchmarks.md):
# every curve of the three tasks where the default missed by over a point warns, no curve of the nine others gains one
SHALLOW = 0.4  # no clear valley: the loss fell less than this share of its start before it rose
NOISY = 8      # a noisy valley: the fall is less than this many times the batch-to-batch noise
STEADIER = "a larger batch or a longer sweep (--num-it) gives a steadier curve"


@dataclass(frozen=True)
class Suggestion:
    name: str
    lr: float
    loss: float          # the smoothed loss there, to mark it on the plot
    reason: str = ""     # how the rule read the curve to get there, in words
    note: str = ""       # empty, or why a fallback was used

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reading:
    """What the lag-free curve says besides the rules: its floor, its divergence edge, its valley (shaded in
    lr_find.png), and what makes it hard to read."""
    floor_lr: float | None = None        # where the lag-free loss is lowest
    edge_lr: float | None = None         # where it has climbed back half-way to its start past the floor
    region: tuple[float, float] | None = None  # the valley: from the start of the fall to the floor
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"floor_lr": self.floor_lr, "edge_lr": self.edge_lr,
                "region": list(self.region) if self.region else None, "warnings": list(self.warnings)}


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


@dataclass(frozen=True)
class Shape:
    """The landmarks of one (trimmed, lag-free) curve that the rules and the warnings read."""
    plateau: float       # the loss at the start: the median of the first 5 points
    floor: int           # index of the lowest loss
    fall: float          # plateau - the lowest loss
    edge: int | None     # first index past the floor where the loss has climbed back half the fall, if any

    @classmethod
    def of(cls, loss: np.ndarray) -> "Shape":
        floor = int(np.argmin(loss))
        plateau = float(np.median(loss[:5]))
        fall = plateau - float(loss[floor])
        back = np.flatnonzero(loss[floor:] > loss[floor] + 0.5 * max(fall, 0.0))
        return cls(plateau, floor, fall, floor + int(back[0]) if fall > 0 and len(back) else None)

    def start(self, loss: np.ndarray) -> int:
        """The first index where the loss has done START of its fall: before it, the flat start."""
        return int(np.argmax(loss[:self.floor + 1] <= self.plateau - START * self.fall))

    def basin(self, loss: np.ndarray, share: float = BASIN) -> tuple[int, int]:
        """The first and last index of the run of points around the floor within `share` of the fall above it: where
        the bottom is flat, the floor's own index wanders across it from batch noise, the basin's middle does not."""
        near = loss <= loss[self.floor] + share * self.fall
        lo, hi = self.floor, self.floor
        while lo > 0 and near[lo - 1]:
            lo -= 1
        while hi < len(loss) - 1 and near[hi + 1]:
            hi += 1
        return lo, hi

    @property
    def falls(self) -> bool:
        return self.floor > 0 and self.fall > 0.01 * abs(self.plateau)  # under 1% of the loss: noise, not a fall


def valley(lrs: np.ndarray, loss: np.ndarray) -> tuple[int, str, str]:
    shape = Shape.of(loss)
    if not shape.falls:
        return shape.floor, "the lowest point", "the loss never fell below its start: used the lowest point"
    # the first point within 10% of the floor: past it, a higher LR buys no lower loss
    i = int(np.argmax(loss[:shape.floor + 1] <= loss[shape.floor] + (1 - FALL) * shape.fall))
    return i, (f"the first point within {100 * (1 - FALL):.0f}% of the floor: the loss fell from {shape.plateau:.3g} "
               f"to {loss[shape.floor]:.3g} (at {lrs[shape.floor]:.2e}) and had done {100 * FALL:.0f}% of it here"), ""


def steep(lrs: np.ndarray, loss: np.ndarray) -> tuple[int, str, str]:
    if len(loss) < 2:
        return 0, "the only point", "a single point: used it"
    slope = np.diff(loss) / np.diff(np.log(lrs))
    i = int(np.argmin(slope))
    return i, f"the fastest fall of the EMA: {slope[i] * np.log(10):.3g} a decade", ""


def minimum(lrs: np.ndarray, loss: np.ndarray) -> tuple[float, str, str]:
    floor = int(np.argmin(loss))
    return float(lrs[floor] / 10), (f"a tenth of {lrs[floor]:.2e}, where the lag-free loss is lowest "
                                    f"({loss[floor]:.3g})"), ""


def slide(lrs: np.ndarray, loss: np.ndarray, window: int = 15, tolerance: float = 0.005) -> tuple[float, str, str]:
    if len(loss) <= window:
        i, reason, _ = valley(lrs, loss)
        return float(lrs[i]), reason, f"fewer than {window + 1} points for slide: used valley"
    slope = np.gradient(loss)
    right = len(loss) - 1
    left = right - window
    lr = float(lrs[left])
    # move the window left while the slopes at its two ends still differ: the loss is still bending
    while left >= 0 and abs(slope[right] - slope[left]) > tolerance:
        lr = float(lrs[left])
        right -= 1
        left -= 1
    return lr, (f"walking left from the end, the EMA's slope flattened (ends of a {window}-point window within "
                f"{tolerance:g}) at {lr:.2e}"), ""


# why floor and basin train at their anchor itself, not a third of it, on each kind of sweep that does
ITSELF = {"frozen": "a sweep of the head alone, the body frozen, whose loss rarely climbs back",
          "fine_tune": "a fine_tune's sweep of the whole network, whose unfrozen cycle peaks at half of max_lr"}


def _below(lrs: np.ndarray, loss: np.ndarray, shape: Shape, anchor: float, where: str,
           sweep: str = "") -> tuple[float, str, str]:
    """floor's and basin's common step: a third of their anchor LR (`where` says how they found it), never in the
    flat start before the fall. The anchor itself on a sweep of the head alone (`sweep` "frozen": fastai's fine_tune
    trains best at 1-2x its floor, issue 26's outside measurement) and on a fine_tune's sweep of the whole network
    ("fine_tune": there the lowest point trained within 3 points of the best on both of benchmarks/suggest.py's
    fine_tunes, +1.0 over ten seeds of the one added after it was chosen, where a third of it lost 17 points on
    the other). The lowest point where the loss never fell."""
    if not shape.falls:
        return float(lrs[shape.floor]), "the lowest point", "the loss never fell below its start: used the lowest point"
    if sweep in ITSELF:
        return anchor, f"{anchor:.2e} itself, {where}: {ITSELF[sweep]}", ""
    start, lr = float(lrs[shape.start(loss)]), anchor / THIRD
    if lr >= start:
        return lr, f"a third of {anchor:.2e}, {where}", ""
    return start, (f"the start of the fall ({100 * START:.0f}% of it done), since a third of {anchor:.2e}, {where}, "
                   f"lies in the flat start before it"), ""


def floor(lrs: np.ndarray, loss: np.ndarray, sweep: str = "") -> tuple[float, str, str]:
    shape = Shape.of(loss)
    return _below(lrs, loss, shape, float(lrs[shape.floor]),
                  f"where the lag-free loss is lowest ({loss[shape.floor]:.3g})", sweep)


def basin(lrs: np.ndarray, loss: np.ndarray, sweep: str = "") -> tuple[float, str, str]:
    shape = Shape.of(loss)
    lo, hi = shape.basin(loss)
    where = (f"the middle (in log) of the basin {lrs[lo]:.2e}..{lrs[hi]:.2e}, where the lag-free loss stays within "
             f"{100 * BASIN:.0f}% of its fall above the floor ({loss[shape.floor]:.3g} at {lrs[shape.floor]:.2e})")
    return _below(lrs, loss, shape, float(np.sqrt(lrs[lo] * lrs[hi])), where, sweep)


# the rules that read a sweep of the head alone, and a fine_tune's sweep of the whole network, differently
KNOWS_SWEEP = {"floor", "basin"}

# each rule and the smoothing it reads
RULES: dict[str, tuple[Callable, str]] = {"floor": (floor, "lag_free"), "basin": (basin, "lag_free"),
                                          "valley": (valley, "lag_free"),
                                          "steep": (steep, "ema"), "minimum": (minimum, "lag_free"),
                                          "slide": (slide, "ema")}


def read(lrs: np.ndarray, loss: np.ndarray, frozen: bool = False, raw: np.ndarray | None = None) -> Reading:
    """The floor, the divergence edge, the valley and the warnings of one trimmed lag-free curve (`frozen`: a
    sweep of the head alone; `raw`: the raw losses of the same points, to weigh the fall against their noise)."""
    if len(loss) == 0:
        return Reading(warnings=("no finite loss at all: the model cannot train even at start_lr",))
    shape, warnings = Shape.of(loss), []
    edge = float(lrs[shape.edge]) if shape.edge is not None else None
    if not shape.falls:
        warnings.append(f"the loss never fell below its start ({shape.plateau:.3g}): no LR in the sweep trains; check "
                        f"the data and the model, or start the sweep lower (--start-lr)")
    else:
        if shape.fall < SHALLOW * abs(shape.plateau):
            warnings.append(f"no clear valley: the loss fell only {100 * shape.fall / abs(shape.plateau):.0f}% from "
                            f"its start ({shape.plateau:.3g}); the floor may be a dip before the real one, and the "
                            f"suggestion is a weak guess: {STEADIER}")
        elif raw is not None and shape.fall < NOISY * (noise := _noise(raw, loss, shape)):
            warnings.append(f"a noisy valley: the loss fell {shape.fall:.3g}, only {shape.fall / noise:.1f} times its "
                            f"batch-to-batch noise ({noise:.3g}), so the floor's place, and the suggestion with it, "
                            f"is uncertain: {STEADIER}")
        second = _second_minimum(loss, shape)
        if second is not None:
            warnings.append(f"two minima, at {lrs[second]:.2e} and {lrs[shape.floor]:.2e}, with a rise between: the "
                            f"rules read the lower; try both")
        if frozen:
            warnings.append("a sweep of the head alone sees nothing of the unfrozen cycle a fine_tune trains next: "
                            "onto a new domain its best max_lr was 5-10x this curve's floor, beyond every rule "
                            "(docs/benchmarks.md, finetune/frozen); without --freeze, find sweeps a fine_tune's "
                            "whole network, which read it within 3 points")
    region = (float(lrs[shape.start(loss)]), float(lrs[shape.floor])) if shape.falls else None
    return Reading(float(lrs[shape.floor]), edge, region, tuple(warnings))


def _noise(raw: np.ndarray, loss: np.ndarray, shape: Shape) -> float:
    """The batch-to-batch noise of the raw losses up to the floor: the smaller of their median distance from the
    lag-free curve (which a sharp bend of the curve also moves) and their median second difference over sqrt(6) (a
    step's noise, which a smooth bend hardly moves)."""
    raw, loss = raw[:shape.floor + 1], loss[:shape.floor + 1]
    spread = float(np.median(np.abs(raw - loss)))
    if len(raw) < 3:
        return spread
    return min(spread, float(np.median(np.abs(raw[:-2] - 2 * raw[1:-1] + raw[2:]))) / np.sqrt(6))


def _second_minimum(loss: np.ndarray, shape: Shape) -> int | None:
    """A local minimum apart from the floor, nearly as low (within a quarter of the fall), with a rise of at
    least a fifth of the fall between the two: the curve has two valleys."""
    near = loss <= loss[shape.floor] + 0.25 * shape.fall
    for i in np.flatnonzero(near):
        if abs(i - shape.floor) < 3 or not (i == 0 or loss[i] <= loss[i - 1]) or not (
                i == len(loss) - 1 or loss[i] <= loss[i + 1]):
            continue
        a, b = sorted((int(i), shape.floor))
        if loss[a:b + 1].max() - max(loss[a], loss[b]) >= 0.2 * shape.fall:
            return int(i)
    return None


def suggest(lrs, losses, ema, stop: str = "end", frozen: bool = False, fine_tune: bool = False
            ) -> tuple[dict[str, Suggestion], list[float], Reading]:
    """Every rule's suggestion for one curve (lrs ascending, raw losses, their causal EMA; `stop`, how the
    sweep ended; `frozen`, a sweep of the head alone; `fine_tune`, a sweep of the whole network for a fine_tune,
    whose cycles train the head alone and then the whole network at half the max_lr), the lag-free curve, and
    its reading."""
    sweep = "frozen" if frozen else "fine_tune" if fine_tune else ""
    lrs, losses, ema = (np.asarray(v, dtype=float) for v in (lrs, losses, ema))
    finite = np.isfinite(losses) & np.isfinite(ema)
    end = len(losses) if finite.all() else int(np.argmin(finite))  # the curve ends at the first NaN/inf
    if end == 0:
        lr = float(lrs[0]) if len(lrs) else float("nan")
        note = "no finite loss at all: the model cannot train even at start_lr"
        return ({name: Suggestion(name, lr, float("nan"), "", note) for name in RULES}, [],
                read(lrs[:0], losses[:0]))
    curves = {"lag_free": lag_free(losses[:end]), "ema": ema[:end]}
    out = {}
    for name, (rule, which) in RULES.items():
        part_lrs, part, trim_note = trim(lrs[:end], curves[which])
        value, reason, note = rule(part_lrs, part, sweep) if name in KNOWS_SWEEP else rule(part_lrs, part)
        lr = float(part_lrs[value]) if isinstance(value, int) else value
        loss = float(np.interp(np.log(lr), np.log(part_lrs), part))
        out[name] = Suggestion(name, lr, loss, reason, "; ".join(n for n in (trim_note, note) if n))
    reading = read(*trim(lrs[:end], curves["lag_free"])[:2], frozen, trim(lrs[:end], losses[:end])[1])
    if reading.edge_lr is None and stop in ("diverged", "non-finite"):  # it blew up too fast to be seen climbing
        reading = replace(reading, edge_lr=float(lrs[end - 1]))
    return out, curves["lag_free"].tolist(), reading
