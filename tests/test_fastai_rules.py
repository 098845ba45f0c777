"""fastai 2.8's suggestion rules as `benchmarks/suggest.py` re-implements them, on curves whose answer
follows from fastai's code by hand: `python benchmarks/suggest.py --quick`.

The benchmark ranks onecycle's rules against fastai's, so fastai's must be fastai's: these pin the
quirks a tidier rewrite would lose (valley reads the longest decreasing subsequence as if it were a
run, lr_find trims num_it // 10 points at the start and 5 at the end, a NaN ends the curve).
"""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from onecycle_cli.lr_find import smooth_losses

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # as when the script runs: its sibling suggest_data.py is importable
spec = importlib.util.spec_from_file_location("suggest_benchmark", BENCHMARKS / "suggest.py")
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # its dataclasses look their module up there
spec.loader.exec_module(bench)

LRS = torch.tensor(np.geomspace(1e-5, 1, 60), dtype=torch.float32)


def test_valley_is_a_third_plus_a_sixth_along_the_longest_fall():
    # falls over points 0..29, rises after: the decreasing run has 30 points, and fastai's start index
    # (end - length) is one before the run, so it lands at -1 + int(30/3) + int(10/2) = 14
    loss = torch.tensor([float(abs(i - 29)) for i in range(60)])
    assert bench.fastai_valley(LRS, loss) == pytest.approx(LRS[14].item())


def test_valley_counts_a_plateau_that_drifts_down_as_part_of_the_valley():
    # a plateau at 2.0 falling by 1e-4 a point (noise a range test cannot tell from flat), then the
    # real fall over points 20..39, then the blow-up: the subsequence spans 40 points, so fastai's
    # valley sits at -1 + 13 + 6 = 18, on the plateau, before the loss has begun to fall
    loss = torch.tensor([2.0 - 1e-4 * i for i in range(20)] + [1.9 - 0.09 * i for i in range(20)]
                        + [0.2 + 0.5 * i for i in range(20)])
    lr = bench.fastai_valley(LRS, loss)
    assert lr == pytest.approx(LRS[18].item()) and lr < LRS[20].item()


def test_steep_is_the_left_end_of_the_steepest_segment():
    loss = -torch.log(LRS)
    loss[31:] -= 3.0  # one drop between points 30 and 31, steeper than the line's slope of -1
    assert bench.fastai_steep(LRS, loss) == pytest.approx(LRS[30].item())


def test_minimum_is_a_tenth_of_the_lowest_point():
    loss = (torch.log10(LRS) + 2) ** 2  # lowest at lr 1e-2
    i = int(torch.argmin(loss))
    assert bench.fastai_minimum(LRS, loss) == pytest.approx(LRS[i].item() / 10)
    assert bench.fastai_minimum(LRS, loss) == pytest.approx(1e-3, rel=0.15)


def test_slide_stops_one_past_where_the_window_lies_on_a_straight_line():
    # straight (slope -1e-3 a point) up to point 59, then a parabola: np.gradient is -1e-3 up to point
    # 58 and far from it from 59 on, so the 15-point window walks left until its right end is at 58;
    # the last LR it took was its left end one step earlier: point 58 - 15 + 1 = 44
    n = 85
    lrs = torch.tensor(np.geomspace(1e-5, 1, n), dtype=torch.float32)
    loss = torch.tensor([1 - 1e-3 * i + (0.05 * (i - 59) ** 2 if i >= 60 else 0.0) for i in range(n)])
    assert bench.fastai_slide(lrs, loss) == pytest.approx(lrs[44].item())
    straight = torch.tensor([1 - 1e-3 * i for i in range(n)])  # nothing to walk past: the window's first left end
    assert bench.fastai_slide(lrs, straight) == pytest.approx(lrs[n - 16].item())


def test_fastai_smooths_as_its_recorder_does():
    raw = [2.3, 2.1, 2.4, 1.9, 1.5, 1.7, 1.2, 0.9]
    ours = bench.fastai_smooth(raw)
    assert ours.dtype == torch.float32 and ours[0].item() == pytest.approx(2.3)  # bias-corrected from the first step
    assert ours.tolist() == pytest.approx(smooth_losses(raw, 0.98), rel=1e-6)  # the EMA onecycle's stop rule reads
    assert bench.fastai_smooth([0.7] * 30).tolist() == pytest.approx([0.7] * 30, rel=1e-5)  # float32, as fastai


def test_lr_find_view_trims_both_ends_and_cuts_at_the_first_nan():
    lrs = [1e-7 * 1e8 ** (i / 99) for i in range(100)]
    diverged = [1.0 - 0.005 * i for i in range(60)] + [50.0]  # stopped by the 4x rule at step 60: 61 points
    view_lrs, view_losses = bench.fastai_view(lrs[:61], diverged, 100, "diverged")
    assert len(view_lrs) == len(view_losses) == 61 - 10 - 5
    assert view_lrs[0].item() == pytest.approx(lrs[10]) and view_lrs[-1].item() == pytest.approx(lrs[55])
    # a NaN at step 50: fastai would have run on to step 99 recording NaN; the view ends at step 49
    nan = [1.0 - 0.005 * i for i in range(50)] + [math.nan]
    view_lrs, view_losses = bench.fastai_view(lrs[:51], nan, 100, "non-finite")
    assert len(view_lrs) == 40 and view_lrs[-1].item() == pytest.approx(lrs[49])
    assert torch.isfinite(view_losses).all()


def test_a_curve_too_short_for_a_rule_reports_what_fastai_would_raise():
    lrs = [1e-7 * 1e8 ** (i / 99) for i in range(25)]
    s = bench.fastai_suggestions(lrs, [1.0 - 0.01 * i for i in range(24)] + [9.0], 100, "diverged")
    assert s["slide"]["lr"] is None and "IndexError" in s["slide"]["note"]  # 10 points, a 15-point window
    assert s["minimum"]["lr"] == pytest.approx(lrs[19] / 10, rel=1e-6)  # the rules that can still read it do
