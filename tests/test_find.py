"""The LR range test: `onecycle find --config mnist_sample`."""

import copy
import io
import itertools
import math
import random

import numpy as np
import pytest
import torch
from rich.console import Console

from onecycle_cli import suggest as suggest_rules
from onecycle_cli.config import FindConfig, resolve
from onecycle_cli.display import Display
from onecycle_cli.lr_find import lr_at, range_test, sweep
from onecycle_cli.pipeline import build_pipeline
from onecycle_cli.runs.directory import read_csv
from onecycle_cli.signals import StopFlag
from onecycle_cli.suggest import suggest

SMALL = ["--config", "mnist_sample", "--set", "data.train_size=640", "--set", "data.valid_size=256"]


def find(cli, *args):
    r = cli("find", *SMALL, "--json", *args)
    assert r.code == 0, r.stderr
    return r.json()


def test_a_find_run_leaves_its_records_and_prints_only_json_on_stdout(cli, tmp_path):
    s = find(cli, "--num-it", "40")
    run = tmp_path / s["run_dir"]
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "meta.json", "lr_find.csv", "lr_find.png", "summary.json"}
    assert s["status"] == "completed" and set(s["suggestions"]) == set(suggest_rules.RULES)
    assert all(0 < v["lr"] < 10 for v in s["suggestions"].values())
    assert s["max_lr"] == s["suggestions"]["floor"]["lr"]  # the default rule
    assert all(v["reason"] for v in s["suggestions"].values())  # each rule says how it read the curve
    reading = s["curves"][0]["reading"]
    assert 1e-7 <= reading["floor_lr"] <= 10 and reading["region"][1] == reading["floor_lr"]
    assert s["suggestions"]["floor"]["lr"] == pytest.approx(max(reading["floor_lr"] / 3, reading["region"][0]))
    rows = read_csv(run / "lr_find.csv")
    assert len(rows) == s["curves"][0]["steps"] and rows[0]["lr"] == pytest.approx(1e-7)
    # log-linear: a constant ratio between steps, ending at end_lr on the last step
    ratios = {round(b["lr"] / a["lr"], 9) for a, b in zip(rows, rows[1:])}
    assert len(ratios) == 1 and ratios.pop() == pytest.approx((10 / 1e-7) ** (1 / 39))
    assert all(math.isfinite(r["smooth_loss"]) for r in rows)


def test_find_says_why_it_chose_and_warns_when_the_curve_cannot_be_read(cli):
    r = cli("find", *SMALL)
    assert r.code == 0, r.stderr
    assert "floor: a third of" in r.stderr and "where the lag-free loss is lowest" in r.stderr  # its reason, in words
    assert "warning" not in r.stderr
    # 40 steps over 640 images: the loss falls a fifth of its start, a valley too shallow to read, and a longer sweep
    # (the 100 steps above) reads it
    r = cli("find", *SMALL, "--num-it", "40")
    assert r.code == 0, r.stderr
    assert "warning: no clear valley" in r.stderr and "longer sweep (--num-it)" in " ".join(r.stderr.split())
    # LRs up to 1e-6: too small to move this net, so the loss never falls
    r = cli("find", *SMALL, "--num-it", "30", "--end-lr", "1e-6")
    assert r.code == 0, r.stderr
    assert "warning: the loss never fell below its start" in " ".join(r.stderr.split())


def test_linear_mode_and_data_cycled_past_an_epoch(cli, tmp_path):
    # 640 images at batch 64: 10 batches an epoch, so 30 steps go round the data three times
    s = find(cli, "--num-it", "30", "--set", "find.mode=linear", "--start-lr", "1e-4", "--end-lr", "1e-2")
    rows = read_csv(tmp_path / s["run_dir"] / "lr_find.csv")
    steps = {round(b["lr"] - a["lr"], 12) for a, b in zip(rows, rows[1:])}
    assert len(rows) == 30 and len(steps) == 1 and s["stop_reason"].startswith("reached end_lr 0.01 after 30 steps")


def test_stop_reasons_are_truthful(cli):
    s = find(cli, "--num-it", "20", "--end-lr", "1e-3")
    assert s["curves"][0]["stop"] == "end" and "without diverging" in s["stop_reason"]
    # plain SGD without momentum on raw pixels blows up long before lr 1e4
    s = find(cli, "--num-it", "60", "--end-lr", "1e4", "--set", "optim.name=sgd", "--set", "find.momentum=0",
             "--set", "data.normalize=false")
    curve = s["curves"][0]
    assert curve["stop"] in ("diverged", "non-finite") and curve["steps"] < 60 and curve["stop_lr"] < 1e4
    assert ("passed 4 x the best" if curve["stop"] == "diverged" else "loss became") in s["stop_reason"]


def test_suggestions_fall_back_and_say_so():
    lrs = [1e-3 * 10 ** (i / 10) for i in range(40)]
    few, _, _ = suggest(lrs[:4], [1.0, 0.9, 0.8, 0.7], [1.0, 0.95, 0.9, 0.85])
    assert all(s.note and math.isfinite(s.lr) for s in few.values())  # never empty
    assert "untrimmed" in few["valley"].note
    flat, _, flat_reading = suggest(lrs, [1.0] * 40, [1.0] * 40)
    assert "never fell" in flat["valley"].note
    nan, _, _ = suggest(lrs, [math.nan] * 40, [math.nan] * 40)
    assert all("no finite loss" in s.note for s in nan.values())
    short, _, _ = suggest(lrs[:12], [1 - 0.05 * i for i in range(12)], [1 - 0.04 * i for i in range(12)])
    assert "slide" in short and "used valley" in short["slide"].note


def test_valley_is_the_floor_of_the_fall():
    # a loss that falls from 2 to 0.5 between lr 1e-3 and 1e-1, then blows up past 1
    lrs = np.logspace(-6, 1, 100)
    t = np.log10(lrs)
    loss = 0.5 + 1.5 / (1 + np.exp(3 * (t + 2))) + np.where(t > 0, (t * 4) ** 2, 0)
    s, _, reading = suggest(lrs, loss, loss)
    assert 2e-2 < s["valley"].lr < 1e-1  # past 90% of the fall, before the floor's end
    assert 3e-3 < s["steep"].lr < 3e-2  # the steepest part of the fall, around 1e-2


def test_floor_is_a_third_of_the_floor_and_never_in_the_flat_start():
    lrs = np.logspace(-6, 1, 100)
    t = np.log10(lrs)
    wide = 0.5 + 1.5 / (1 + np.exp(3 * (t + 2))) + np.where(t > 0, (t * 4) ** 2, 0)  # falls over two decades
    s, _, r = suggest(lrs, wide, wide, "diverged")
    assert s["floor"].lr == pytest.approx(r.floor_lr / 3) and "a third of" in s["floor"].reason
    # a sweep of the head alone (the body frozen, as fine_tune's first cycle): floor trains at the floor itself;
    # every other rule reads the curve as before
    frozen, _, frozen_reading = suggest(lrs, wide, wide, "diverged", frozen=True)
    assert frozen["floor"].lr == pytest.approx(r.floor_lr) and "the body frozen" in frozen["floor"].reason
    # and it warns that the unfrozen cycle after it is out of its sight
    assert [w for w in frozen_reading.warnings if "sweep of the head alone" in w] and not r.warnings
    assert all(frozen[name] == s[name] for name in s if name not in suggest_rules.KNOWS_SWEEP)
    # a fine_tune's sweep of the whole network: the floor itself too (its unfrozen cycle peaks at half of it),
    # and no warning, the sweep sees what the fine_tune trains
    tuned, _, tuned_reading = suggest(lrs, wide, wide, "diverged", fine_tune=True)
    assert tuned["floor"].lr == pytest.approx(r.floor_lr) and "a fine_tune's sweep" in tuned["floor"].reason
    assert tuned_reading == r and all(tuned[name] == s[name] for name in s if name not in suggest_rules.KNOWS_SWEEP)
    # read off a curve that falls in the last third of a decade before its floor: a third of the floor's LR lies
    # on the flat start, so the rule takes the start of the fall
    lrs = np.logspace(-3, 1, 41)  # 10 points a decade
    sharp = np.concatenate([np.full(30, 2.0), [1.5, 1.0, 0.5], 0.5 + np.arange(1, 9) ** 2 * 0.1])
    lr, reason, note = suggest_rules.floor(lrs, sharp)
    assert lr == pytest.approx(lrs[30]) and lrs[32] / 3 < lrs[30] and "the start of the fall" in reason and not note


def test_basin_reads_the_middle_of_a_flat_bottom_where_the_floor_wanders():
    # a fall from 2 to 0.5 by lr 1e-3, a bottom flat to lr 1 and a rise past it; a dip of 3% of the fall (a
    # batch's noise) puts the lowest point near either end of the bottom
    lrs = np.logspace(-6, 1, 100)
    t = np.log10(lrs)
    bowl = 0.5 + 1.5 / (1 + np.exp(6 * (t + 3.5))) + np.where(t > 0, 2 * t, 0)
    read = {}
    for where in (-2.2, -0.6):  # the dip at 6e-3 or at 0.25
        loss = bowl - 0.05 * np.exp(-((t - where) / 0.3) ** 2)
        s, _, r = suggest(lrs, loss, loss, "diverged")
        read[where] = s["basin"].lr, s["floor"].lr, r.floor_lr
        assert "the middle (in log) of the basin" in s["basin"].reason and "a third of" in s["basin"].reason
    (basin_a, floor_a, lowest_a), (basin_b, floor_b, lowest_b) = read.values()
    assert lowest_b / lowest_a > 10 and floor_b / floor_a > 10  # the floor rule follows the dip across the bottom
    assert 1 / 1.2 < basin_b / basin_a < 1.2                     # the basin's middle stays where it was
    assert 1e-2 < 3 * basin_a < 1e-1                             # a third of the middle of 1e-3..1 (0.03)
    # a sweep of the head alone trains at the basin's middle itself, as floor at the floor itself
    frozen, _, _ = suggest(lrs, bowl, bowl, "end", frozen=True)
    assert frozen["basin"].lr == pytest.approx(3 * suggest(lrs, bowl, bowl, "end")[0]["basin"].lr)


def test_the_reading_finds_the_edge_and_warns_on_curves_no_rule_reads_well():
    lrs = np.logspace(-6, 1, 100)
    t = np.log10(lrs)
    fall = 0.5 + 1.5 / (1 + np.exp(3 * (t + 2)))  # from 2 to 0.5 between 1e-3 and 1e-1
    # climbs back past 1: half the fall (0.75) is undone at (4t)^2 = 0.75, lr 10^0.217 = 1.65 (the smoothing
    # sees the rise a few points early)
    _, _, r = suggest(lrs, fall + np.where(t > 0, (t * 4) ** 2, 0), fall, "diverged")
    assert 1e-1 < r.floor_lr < 1.5 and 0.8 < r.edge_lr < 2.1 and r.warnings == ()
    # a loss that never climbs back (most BatchNorm nets scored on held-out batches, frozen heads): no edge,
    # and nothing to warn of, the floor is read as well as any
    _, _, r = suggest(lrs, fall, fall, "end")
    assert r.edge_lr is None and r.warnings == () and 1e-1 < r.floor_lr
    cases = {  # curve -> the words of its one warning
        "two minima": 1.2 - np.exp(-((t + 4) / 0.3) ** 2) - 1.05 * np.exp(-((t + 1) / 0.3) ** 2),
        "no clear valley": 1 - 0.05 / (1 + np.exp(-3 * (t + 2))),                # 5% of the loss
        "never fell below its start": np.full(100, 1.0),
    }
    for words, loss in cases.items():
        _, _, r = suggest(lrs, loss, loss, "end")
        assert len(r.warnings) == 1 and words in r.warnings[0], (words, r.warnings)


def minibatches(x, y, size, g):
    while True:
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - size + 1, size):
            yield x[order[i:i + size]], y[order[i:i + size]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_divergence_is_found_where_least_squares_theory_puts_it(seed):
    # SGD on 0.5*mean((Xw - y)^2) diverges once lr > 2 / lambda_max(X^T X / n). The 4x-EMA stop rule
    # notices a blow-up about ten steps after it starts, so the sweep is resolved at 1.064x per step
    # (300 steps over 8 decades); at the default 100 steps (1.2x per step) the same lag is a factor ~6.
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 8, generator=g) * torch.tensor([3.0, 1, 1, 1, 1, 1, 0.5, 0.5])
    y = x @ torch.randn(8, generator=g) + 0.5 * torch.randn(2048, generator=g)
    critical = 2 / torch.linalg.eigvalsh(x.T @ x / len(x)).max().item()
    model = torch.nn.Linear(8, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=1e-7, momentum=0)
    fc = FindConfig(start_lr=1e-5, end_lr=1e3, num_it=300)
    curve = sweep(model, opt, minibatches(x, y, 128, g), lambda out, t: 0.5 * ((out.squeeze(1) - t) ** 2).mean(),
                  fc, Display(enabled=False), StopFlag())
    assert curve.stop == "diverged"
    assert critical < curve.stop_lr < 3 * critical, (curve.stop_lr, critical)


def test_a_range_test_leaves_no_trace():
    cfg = resolve("mnist_sample", ["data.train_size=640", "data.valid_size=128", "find.num_it=30"]).config
    pipe = build_pipeline(cfg)
    opt = torch.optim.AdamW(pipe.model.parameters(), lr=1e-3)
    for x, y in itertools.islice(pipe.batches.epoch(0), 2):  # a trained model with optimiser state
        torch.nn.functional.cross_entropy(pipe.model(x), y).backward()
        opt.step()
    before = (copy.deepcopy(pipe.model.state_dict()), copy.deepcopy(opt.state_dict()), torch.get_rng_state(),
              random.getstate(), np.random.get_state()[1].copy())
    curve = range_test(pipe, cfg, Display(enabled=False), StopFlag())
    assert len(curve.lrs) > 20  # it trained (up to where the loss blew up)
    after = pipe.model.state_dict()
    assert all(torch.equal(before[0][k], after[k]) for k in after)  # weights and BatchNorm buffers, bit for bit
    state = opt.state_dict()["state"]
    assert all(torch.equal(before[1]["state"][i][k], state[i][k]) for i in state for k in state[i])
    assert torch.equal(before[2], torch.get_rng_state()) and before[3] == random.getstate()
    assert np.array_equal(before[4], np.random.get_state()[1])


def test_train_after_find_starts_from_the_same_weights(cli, tmp_path):
    args = [*SMALL, "--epochs", "1", "--set", "find.num_it=30", "--json"]
    found = cli("train", *args, "--max-lr", "find")
    assert found.code == 0, found.stderr
    s = found.json()
    assert s["max_lr_source"].startswith("find: floor") and (tmp_path / s["run_dir"] / "lr_find.png").exists()
    plain = cli("train", *args, "--max-lr", repr(s["max_lr"])).json()
    a = torch.load(tmp_path / s["run_dir"] / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / plain["run_dir"] / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert s["final"] == plain["final"]


def test_max_lr_from_a_finished_find_run(cli, tmp_path):
    f = find(cli, "--num-it", "30")
    s = cli("train", *SMALL, "--epochs", "1", "--json", "--max-lr", f["run_dir"], "--suggest", "steep").json()
    assert s["max_lr"] == f["suggestions"]["steep"]["lr"] and s["max_lr_source"] == f"find run {f['run_dir']}: steep"
    t = cli("train", *SMALL, "--epochs", "1", "--json", "--max-lr", f["run_dir"]).json()
    assert t["max_lr"] == f["suggestions"]["floor"]["lr"]  # the one the find run used: the default


def test_sweep_over_weight_decay_draws_every_curve_from_the_same_start(cli, tmp_path):
    s = find(cli, "--num-it", "20", "--sweep", "weight_decay=1e-2,1e-4,0")
    labels = [c["label"] for c in s["curves"]]
    assert labels == ["weight_decay=0.01", "weight_decay=0.0001", "weight_decay=0"]
    rows = read_csv(tmp_path / s["run_dir"] / "lr_find.csv")
    firsts = {r["curve"]: r["loss"] for r in rows if r["step"] == 0}
    assert set(firsts) == set(labels) and len(set(firsts.values())) == 1  # same weights, same first batch
    assert all(set(c["suggestions"]) == set(suggest_rules.RULES) for c in s["curves"])
    b = find(cli, "--num-it", "12", "--sweep", "batch_size=32,128")
    assert [c["label"] for c in b["curves"]] == ["batch_size=32", "batch_size=128"]


@pytest.mark.parametrize("bad", ["weight_decay", "lr=1,2", "weight_decay=a,b", "momentum=1.5", "batch_size=0"])
def test_bad_sweeps_are_refused(cli, bad):
    r = cli("find", *SMALL, "--sweep", bad)
    assert r.code == 2 and "--sweep" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_held_out_variant_scores_fixed_batches(cli, tmp_path):
    plain = read_csv(tmp_path / find(cli, "--num-it", "30")["run_dir"] / "lr_find.csv")
    held = read_csv(tmp_path / find(cli, "--num-it", "30", "--val-batches", "2")["run_dir"] / "lr_find.csv")
    # at lr < 1e-5 the weights barely move: the same held-out batches give nearly the same loss every step,
    # while each training batch gives its own
    jumps = lambda rows: max(abs(b["loss"] - a["loss"]) for a, b in zip(rows[:15], rows[1:15]))  # noqa: E731
    assert jumps(held) < 1e-3 < jumps(plain)


def test_lr_at_spans_start_to_end():
    fc = FindConfig(start_lr=1e-6, end_lr=1.0, num_it=13)
    assert [round(math.log10(lr_at(i, fc)), 9) for i in range(0, 13, 2)] == [-6, -5, -4, -3, -2, -1, 0]


def text_plot_axis(lo: float, hi: float, width: int) -> list[str]:
    """The x-axis labels of a range test's text plot from `lo` to `hi`, on a console `width` columns wide."""
    out = io.StringIO()
    lrs = [lo * (hi / lo) ** (i / 99) for i in range(100)]
    Display(console=Console(file=out, width=width)).text_plot(
        lrs, {"loss": [2 - math.log10(lr) / 10 for lr in lrs]}, "range test", xlog=True, marks={"floor": lrs[60]})
    lines = out.getvalue().splitlines()
    return lines[lines.index(next(line for line in lines if "└" in line)) + 1].split()


def test_the_range_tests_text_plot_labels_its_log_axis_in_powers_of_ten():
    # find's default sweep, 1e-7 to 10: every decade, where plotext wrote 0.000000 0.000010 0.001000 ...
    assert text_plot_axis(1e-7, 10, 100) == ["1e-7", "1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "1e0", "1e1"]
    # a narrow terminal gets every other decade rather than labels run together
    assert text_plot_axis(1e-7, 10, 40) == ["1e-7", "1e-5", "1e-3", "1e-1", "1e1"]
    # under two decades: 1, 2 and 5 of each
    assert text_plot_axis(3e-4, 8e-3, 80) == ["5e-4", "1e-3", "2e-3", "5e-3"]
