"""Parameter groups, discriminative LRs and fastai's fine_tune as one run (issue 11 items 3-5):
`onecycle train --set train.freeze_epochs=1 --set optim.lr_mult=100`."""

import copy
import json
import math
import random

import numpy as np
import pytest
import torch

from conftest import BOOK_SETS, FINE_TUNE_SETS, assert_usage_error, onecycle
from onecycle_cli.config import resolve
from onecycle_cli.display import Display
from onecycle_cli.lr_find import range_test
from onecycle_cli.models import layer_groups
from onecycle_cli.pipeline import build_pipeline
from onecycle_cli.runs.directory import read_csv
from onecycle_cli.signals import StopFlag


def args(sets: list[str]) -> list[str]:
    return ["--config", "mnist"] + [a for s in sets for a in ("--set", s)]


BOOK_CNN, FINE_TUNE = args(BOOK_SETS), args(FINE_TUNE_SETS)


def fastai_fine_tune(base_lr, lr_mult, groups, freeze_steps, steps):
    """The LR of every group at every step of fastai's fine_tune(epochs, base_lr, freeze_epochs, lr_mult),
    written out from fastai's source (callback/schedule.py):
        freeze(); fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99)
        base_lr /= 2; unfreeze(); fit_one_cycle(epochs, slice(base_lr/lr_mult, base_lr), pct_start=0.3, div=5.)
    fit_one_cycle is combined_cos(pct_start, lr/div, lr, lr/div_final) per group, div 25, div_final 1e5;
    slice(b) is [b/10, ..., b/10, b] and slice(a, b) is even_mults(a, b, groups).
    The one thing taken from onecycle rather than fastai is where a step falls on the cycle: onecycle steps
    torch's OneCycleLR, whose warm-up ends at step pct*total - 1 and whose anneal ends on the last step
    (fastai evaluates at i/total and never quite reaches the end); see test_schedules.py for that choice."""
    def even_mults(start, stop, n):
        step = (stop / start) ** (1 / (n - 1))
        return [start * step ** i for i in range(n)]

    def sched_cos(start, end, pos):
        return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2

    def combined_cos(pct, start, middle, end, i, total):
        up = pct * total - 1
        if i <= up:
            return sched_cos(start, middle, i / up)
        return sched_cos(middle, end, (i - up) / (total - 1 - up))

    frozen = [base_lr / 10] * (groups - 1) + [base_lr]
    unfrozen = even_mults(base_lr / 2 / lr_mult, base_lr / 2, groups)
    rows = [[combined_cos(0.99, p / 25, p, p / 1e5, i, freeze_steps) for p in frozen] for i in range(freeze_steps)]
    return rows + [[combined_cos(0.3, p / 5, p, p / 1e5, i, steps) for p in unfrozen] for i in range(steps)]


def test_every_group_follows_fastai_fine_tune_at_every_step(cli, tmp_path):
    # resnet20: three groups (stem..stage1 | stage2..stage3 | head), so even_mults has a middle to get right
    r = cli("train", "--config", "mnist_sample", "--model", "resnet20", "--set", "data.train_size=320",
            "--set", "data.valid_size=64", "--batch-size", "32", "--epochs", "2", "--max-lr", "0.1",
            "--set", "train.freeze_epochs=1", "--set", "optim.lr_mult=100", "--set", "train.log_every=1", "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    assert [g["name"] for g in s["groups"]] == ["stem..stage1", "stage2..stage3", "head"]
    rows = read_csv(tmp_path / s["run_dir"] / "steps.csv")
    expected = fastai_fine_tune(0.1, 100, 3, 10, 20)
    assert len(rows) == len(expected) == 30
    for row, lrs in zip(rows, expected):
        assert [row[f"lr_{i}"] for i in range(3)] == pytest.approx(lrs, rel=1e-9), row["step"]
        assert row["lr"] == row["lr_2"]  # the lr column is the head's
    assert [r["phase"] for r in rows] == ["frozen"] * 10 + ["unfrozen"] * 20
    metrics = read_csv(tmp_path / s["run_dir"] / "metrics.csv")
    assert [(m["epoch"], m["phase"]) for m in metrics] == [(0, "frozen"), (1, "unfrozen"), (2, "unfrozen")]
    assert s["epochs"] == 3 and s["freeze_epochs"] == 1 and s["status"] == "completed"
    # wd_bn_bias false splits each layer group in two, with and without decay, at the group's LR
    checkpoint = torch.load(tmp_path / s["run_dir"] / "checkpoints" / "last.pt", weights_only=True)
    groups = checkpoint["optimizer"]["param_groups"]
    assert [(g["layer_group"], g["weight_decay"]) for g in groups] == [(0, 0.01), (0, 0.0), (1, 0.01), (1, 0.0),
                                                                       (2, 0.01), (2, 0.0)]
    assert all(a["lr"] == b["lr"] for a, b in zip(groups[::2], groups[1::2]))


def test_lr_mult_alone_spreads_one_cycle_over_the_groups(cli, tmp_path):
    r = cli("train", *BOOK_CNN, "--epochs", "1", "--max-lr", "0.05", "--set", "optim.lr_mult=100", "--json")
    assert r.code == 0, r.stderr
    rows = read_csv(tmp_path / r.json()["run_dir"] / "steps.csv")
    # body | head, the body 100x lower at every step: the same 1cycle shape under its own peak
    assert all(row["lr_0"] == pytest.approx(row["lr_1"] / 100, rel=1e-9) for row in rows)
    assert all(row["lr"] == row["lr_1"] for row in rows) and rows[0]["lr_1"] == pytest.approx(0.05 / 25)
    assert {row["phase"] for row in rows} == {"train"}


def test_frozen_parameters_do_not_move_and_the_optimiser_still_holds_them(tmp_path):
    # stopped by SIGTERM inside the first evaluation: the frozen epoch completes, its checkpoint is the boundary
    p = onecycle("train", *FINE_TUNE, cwd=tmp_path, ONECYCLE_FAULT="eval@1:SIGTERM")
    assert p.returncode == 143, p.stderr
    run = next((tmp_path / "runs").iterdir())
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1 and saved["state"]["cycle"] == 0
    pipe = build_pipeline(resolve("mnist", FINE_TUNE_SETS).config)  # the same seed builds the same starting weights
    start = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    body, head = layer_groups(pipe.model, "simple_cnn")
    names = {id(p): n for n, p in pipe.model.named_parameters()}
    for p, is_norm in zip(body.params, body.norm):
        moved = not torch.equal(saved["model"][names[id(p)]], start[names[id(p)]])
        assert moved == is_norm, names[id(p)]  # convs frozen; BatchNorm weights trained (fastai's train_bn)
    assert all(not torch.equal(saved["model"][names[id(p)]], start[names[id(p)]]) for p in head.params)
    # BatchNorm statistics of the frozen body keep updating: the model trains in train mode
    assert not torch.equal(saved["model"]["0.1.running_mean"], start["0.1.running_mean"])
    # every parameter is in the optimiser; only those that trained have state (momentum)
    held = [i for g in saved["optimizer"]["param_groups"] for i in g["params"]]
    assert sorted(held) == list(range(len(list(pipe.model.parameters()))))
    trained = sum(body.norm) + len(head.params)
    assert len(saved["optimizer"]["state"]) == trained < len(held)


def test_epochs_0_trains_the_head_alone_with_the_body_frozen_to_the_end(cli, tmp_path):
    # transfer learning's "head only" baseline: fastai's freeze() then fit_one_cycle, as one frozen cycle
    sets = BOOK_SETS + ["train.epochs=0", "train.freeze_epochs=2", "schedule.freeze_pct_start=0.25",
                        "schedule.max_lr=0.05"]
    r = cli("train", *args(sets), "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    assert s["status"] == "completed" and s["epochs"] == s["epochs_done"] == 2 and s["steps"] == 20
    assert [(c["name"], c["epochs"], c["frozen"], c["pct_start"]) for c in s["cycles"]] == [("frozen", 2, True, 0.25)]
    assert "frozen: 2 epochs of 1cycle on the head alone, the body frozen" in r.stderr
    run = tmp_path / s["run_dir"]
    rows = read_csv(run / "steps.csv")
    assert {row["phase"] for row in rows} == {"frozen"} and len(rows) == 20
    # one whole 1cycle on the head: up for a quarter of the steps, then down to max_lr / 1e5 at the end
    lrs = [row["lr"] for row in rows]
    assert max(lrs) == pytest.approx(0.05) and lrs.index(max(lrs)) == 4 and lrs[-1] == pytest.approx(0.05 / 1e5)
    assert [m["phase"] for m in read_csv(run / "metrics.csv")] == ["frozen", "frozen"]
    # the body's convolutions end where they started; its BatchNorm and the head trained
    end = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    pipe = build_pipeline(resolve("mnist", sets).config)
    start = pipe.model.state_dict()
    body, head = layer_groups(pipe.model, "simple_cnn")
    names = {id(p): n for n, p in pipe.model.named_parameters()}
    for p, is_norm in zip(body.params, body.norm):
        assert torch.equal(end[names[id(p)]], start[names[id(p)]]) != is_norm, names[id(p)]
    assert all(not torch.equal(end[names[id(p)]], start[names[id(p)]]) for p in head.params)
    # the preview agrees, and the unfrozen cycle's keys are marked as not read
    r = cli("schedule", *args(sets), "--steps-per-epoch", "10", "--out", tmp_path / "s.png", "--json")
    assert r.code == 0, r.stderr
    assert [c["name"] for c in r.json()["cycles"]] == ["frozen"] and r.json()["steps"] == 20
    config = (run / "config.yaml").read_text()
    assert "unfreeze_div: 5.0        # not read: only with train.epochs > 0" in config


def test_the_optimiser_state_starts_again_at_the_unfreeze(fine_tune_reference):
    # fastai's freeze_to clears it (opt.clear_state()): Adam's step count and moments restart, so after
    # 10 frozen steps and 20 unfrozen ones every parameter, head included, has taken 20 steps
    state = torch.load(fine_tune_reference / "checkpoints" / "last.pt", weights_only=True)["optimizer"]["state"]
    assert len(state) == 20 and {int(v["step"]) for v in state.values()} == {20}


def test_schedule_previews_both_cycles_and_every_group(cli, tmp_path):
    r = cli("schedule", "--config", "mnist_sample", "--set", "model.name=tv:resnet50", "--epochs", "3",
            "--set", "train.freeze_epochs=1", "--set", "optim.lr_mult=100", "--max-lr", "2e-3",
            "--steps-per-epoch", "100", "--json", "--out", tmp_path / "s.png")
    assert r.code == 0, r.stderr
    s = r.json()
    assert s["steps"] == 400 and (tmp_path / "s.png").stat().st_size > 0
    assert [p["name"] for p in s["phases"]] == ["frozen warm-up", "frozen anneal", "unfrozen warm-up",
                                                "unfrozen anneal"]
    assert [p["step"] for p in s["phases"]][2] == 100
    # fastai's fine_tune(3, 2e-3): slice(2e-3) frozen, then slice(1e-5, 1e-3) over stem..layer2 | layer3..layer4 | head
    assert [g["name"] for g in s["groups"]] == ["stem..layer2", "layer3..layer4", "head"]
    assert s["cycles"][0]["max_lrs"] == pytest.approx([2e-4, 2e-4, 2e-3])
    assert s["cycles"][1]["max_lrs"] == pytest.approx([1e-5, 1e-4, 1e-3])
    assert [g["peak_lr"] for g in s["groups"]] == pytest.approx([2e-4, 2e-4, 2e-3], rel=1e-3)
    assert s["peak_lr"] == pytest.approx(2e-3, rel=1e-3) and s["final_lr"] == pytest.approx(1e-8, rel=1e-3)


def test_a_frozen_range_test_sweeps_the_head_keeps_the_ratios_and_leaves_no_trace():
    cfg = resolve("mnist", ["data.dataset=mnist_sample", "model.channels=[1,8,16,32,64,2]", "data.train_size=640",
                            "data.valid_size=64", "find.num_it=30", "find.freeze=true", "optim.lr_mult=100"]).config
    pipe = build_pipeline(cfg)
    before = (copy.deepcopy(pipe.model.state_dict()), [p.requires_grad for p in pipe.model.parameters()],
              torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    frozen = range_test(pipe, cfg, Display(enabled=False), StopFlag())
    after = pipe.model.state_dict()
    assert all(torch.equal(before[0][k], after[k]) for k in after)
    assert before[1] == [p.requires_grad for p in pipe.model.parameters()] and all(before[1])
    assert torch.equal(before[2], torch.get_rng_state()) and before[3] == random.getstate()
    assert np.array_equal(before[4], np.random.get_state()[1])
    unfrozen = range_test(pipe, cfg.model_copy(update={"find": cfg.find.model_copy(update={"freeze": False})}),
                          Display(enabled=False), StopFlag())
    # the same batches from the same weights: only what the sweep trains differs
    assert frozen.lrs[:20] == unfrozen.lrs[:20] and frozen.losses[0] == unfrozen.losses[0]
    assert frozen.losses[:20] != unfrozen.losses[:20]


def test_find_freeze_sweeps_the_head_and_a_fine_tune_sweeps_the_whole_network_at_its_lowest_point(cli, tmp_path):
    r = cli("find", *BOOK_CNN, "--num-it", "20", "--freeze", "--set", "optim.lr_mult=100", "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    assert s["frozen"] is True and s["fine_tune"] is False
    assert s["group_ratios"] == pytest.approx([0.1, 1.0]) and s["groups"] == ["body", "head"]
    assert "swept: the head alone" in r.stderr and "the LR axis is the head's" in r.stderr
    # a fine_tune (a frozen epoch, then an unfrozen one): its range test drives what the unfrozen cycle trains,
    # the body at 1/lr_mult, and trains at the lag-free curve's lowest point, not a third of it
    r = cli("train", *BOOK_CNN, "--epochs", "1", "--set", "train.freeze_epochs=1", "--set", "optim.lr_mult=100",
            "--max-lr", "find", "--set", "find.num_it=20", "--json")
    assert r.code == 0, r.stderr
    run = tmp_path / r.json()["run_dir"]
    record = json.loads((run / "lr_find.json").read_text())
    assert record["frozen"] is False and record["fine_tune"] is True
    assert record["group_ratios"] == pytest.approx([0.01, 1.0])
    curve = record["curves"][0]
    assert r.json()["max_lr"] == curve["suggestions"]["floor"]["lr"] == curve["reading"]["floor_lr"]
    assert "a fine_tune's sweep of the whole network" in curve["suggestions"]["floor"]["reason"]
    assert r.json()["cycles"][0]["max_lrs"][-1] == r.json()["max_lr"]  # the frozen cycle's head peaks at it
    assert r.json()["cycles"][1]["max_lrs"][-1] == pytest.approx(r.json()["max_lr"] / 2)  # the unfrozen at half
    # the head alone to the end (train.epochs 0): the sweep is the head's, as that is all the run trains
    r = cli("train", *BOOK_CNN, "--epochs", "0", "--set", "train.freeze_epochs=1", "--max-lr", "find",
            "--set", "find.num_it=20", "--json")
    assert r.code == 0, r.stderr
    record = json.loads((tmp_path / r.json()["run_dir"] / "lr_find.json").read_text())
    assert record["frozen"] is True and record["fine_tune"] is False
    assert r.json()["max_lr"] == record["curves"][0]["suggestions"]["floor"]["lr"]


@pytest.mark.parametrize("sets,fragments", [
    (["train.freeze_epochs=1", "schedule.name=constant"], ["train.freeze_epochs = 1", "expected onecycle"]),
    (["train.freeze_epochs=1", "schedule.shape=smith", "schedule.freeze_pct_start=0.9"],
     ["schedule.freeze_pct_start = 0.9", "expected < 0.5"]),
    (["optim.lr_mult=0.5"], ["optim.lr_mult = 0.5", "expected a value >= 1"]),
    (["train.freeze_epochs=-1"], ["train.freeze_epochs = -1", ">= 0"]),
    (["train.epochs=0"], ["train.epochs = 0 trains nothing", "0 only with train.freeze_epochs > 0"]),
], ids=["freeze-with-constant", "smith-freeze-pct", "lr-mult-below-1", "negative-freeze", "no-epochs"])
def test_bad_fine_tuning_settings_are_refused(cli, sets, fragments):
    r = cli("train", *BOOK_CNN, *[a for s in sets for a in ("--set", s)])
    assert_usage_error(r, *fragments)


def test_a_frozen_cycle_too_short_to_warm_up_is_refused_by_its_key(cli):
    r = cli("train", *BOOK_CNN, "--set", "train.freeze_epochs=1", "--set", "schedule.freeze_pct_start=0.1")
    assert_usage_error(r, "frozen 1cycle", "schedule.freeze_pct_start = 0.1", "1.00 steps to warm up")


def test_freezing_a_random_body_warns_once_per_run_and_a_loaded_body_not_at_all(cli, tmp_path):
    def random_body(stderr: str) -> list[str]:
        return [line for line in stderr.splitlines() if line.startswith("warning:") and "weights are random" in line]

    fine_tune = [*BOOK_CNN, "--epochs", "1", "--set", "train.freeze_epochs=2", "--set", "optim.lr_mult=10"]
    # a frozen range test, then two cycles over three epochs: one warning for the run, not one per sweep, cycle
    # or epoch
    r = cli("train", *fine_tune, "--max-lr", "find", "--set", "find.num_it=20", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["epochs_done"] == 3 and len(r.json()["cycles"]) == 2
    [warning] = random_body(r.stderr)
    assert "train.freeze_epochs = 2: the body is frozen for 2 epochs" in warning
    assert "model.pretrained" in warning and "--init RUN_DIR" in warning and "train.freeze_epochs to 0" in warning
    r = cli("find", *BOOK_CNN, "--num-it", "20", "--freeze")
    assert r.code == 0, r.stderr
    [warning] = random_body(r.stderr)
    assert "the head alone" in warning and "no --freeze" in warning
    # the same with a body that holds trained weights (--init from the run above): nothing to say
    trained = tmp_path / "trained"
    assert cli("train", *BOOK_CNN, "--epochs", "1", "--runs-dir", trained).code == 0
    [run] = trained.iterdir()
    r = cli("train", *fine_tune, "--max-lr", "0.05", "--init", run)
    assert r.code == 0 and "weights: " in r.stderr and random_body(r.stderr) == [], r.stderr
    r = cli("find", *BOOK_CNN, "--num-it", "20", "--freeze", "--set", f"model.init={run}")
    assert r.code == 0 and random_body(r.stderr) == [], r.stderr
    # and an unfrozen run of a random body is what training from scratch is: no warning either
    assert random_body(cli("train", *BOOK_CNN, "--epochs", "1").stderr) == []
