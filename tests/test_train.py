"""The 1cycle fit: `onecycle train --config mnist_sample`."""

import json
import math

import pytest
import torch

from conftest import assert_usage_error
from onecycle_cli.config import ScheduleConfig
from onecycle_cli.runs.directory import read_csv
from onecycle_cli.schedules import preview

# 640 images at batch 64: 10 steps an epoch, a few milliseconds each
TINY = ["--config", "mnist_sample", "--set", "data.train_size=640", "--set", "data.valid_size=256"]


def train(cli, *args) -> dict:
    r = cli("train", *TINY, "--json", *args)
    assert r.code == 0, r.stderr
    return r.json()


def test_a_run_records_every_epoch_and_step(cli, tmp_path):
    s = train(cli, "--epochs", "3")
    run = tmp_path / s["run_dir"]
    assert s["status"] == "completed" and s["epochs_done"] == 3 and s["steps"] == 30
    metrics = read_csv(run / "metrics.csv")
    assert [m["epoch"] for m in metrics] == [0, 1, 2] and [m["step"] for m in metrics] == [10, 20, 30]
    assert all(0 <= m["accuracy"] <= 1 and m["images_per_s"] > 0 and m["seconds"] > 0 for m in metrics)
    assert s["final"]["accuracy"] == metrics[-1]["accuracy"]
    assert s["best"]["accuracy"] == max(m["accuracy"] for m in metrics)
    steps = read_csv(run / "steps.csv")
    assert [r["step"] for r in steps] == list(range(1, 31))
    # the LR and momentum recorded are the schedule's, step by step (AdamW: beta1 is the momentum)
    lrs, moms = preview(ScheduleConfig(max_lr=0.05), 30, "adamw", 0.9)
    assert [r["lr"] for r in steps] == pytest.approx(lrs) and [r["momentum"] for r in steps] == pytest.approx(moms)
    assert all(r["grad_abs"] > 0 and math.isfinite(r["loss"]) for r in steps)
    # the smoothed loss is the bias-corrected EMA of the raw losses
    assert steps[0]["smooth_loss"] == pytest.approx(steps[0]["loss"])
    for png in ("schedule.png", "curves.png"):
        assert (run / png).stat().st_size > 10_000
    assert (run / "checkpoints" / "last.pt").is_file()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["versions"]["torch"] == torch.__version__ and meta["seed"] == 0 and meta["argv"][0] == "onecycle"


def test_json_prints_one_object_and_nothing_else_on_stdout(cli):
    r = cli("train", *TINY, "--epochs", "1", "--json")
    assert r.code == 0 and r.stdout.count("\n") == 1 and r.json()["command"] == "train"
    assert "epoch" in r.stderr and "train_loss" in r.stderr  # the table went to stderr


def test_fastai_docs_experiment_1cycle_beats_constant_lr(cli):
    # the bundled 3-vs-7 set, fastai-v1 simple_cnn, batch 64, 2 epochs at 5e-2 (fastai: 99.3% vs 97.7%)
    one = cli("train", "--config", "mnist_sample", "--json").json()
    const = cli("train", "--config", "mnist_sample", "--schedule", "constant", "--json").json()
    assert one["final"]["accuracy"] >= 0.99
    assert const["final"]["accuracy"] < one["final"]["accuracy"]


def test_seeds_report_mean_and_spread_and_keep_every_run(cli, tmp_path):
    s = train(cli, "--epochs", "1", "--seeds", "3")
    accs = [r["final"]["accuracy"] for r in s["runs"]]
    assert s["seeds"] == [0, 1, 2] and len({r["run_dir"] for r in s["runs"]}) == 3
    assert all((tmp_path / r["run_dir"] / "metrics.csv").exists() for r in s["runs"])
    assert s["accuracy_mean"] == pytest.approx(sum(accs) / 3)
    assert s["accuracy_std"] == pytest.approx(torch.tensor(accs, dtype=torch.float64).std().item())
    assert [r["seed"] for r in train(cli, "--epochs", "1", "--seeds", "5,7")["runs"]] == [5, 7]
    assert_usage_error(cli("train", *TINY, "--seeds", "0,0"), "--seeds")
    assert_usage_error(cli("train", *TINY, "--seeds", "2", "--seed", "1"), "conflicting flags")


def test_a_diverging_fit_exits_3_and_keeps_what_came_before(cli, tmp_path):
    # plain SGD whose LR climbs from 1e-4 to 1e3 over most of three epochs: fine at first, then NaN
    r = cli("train", *TINY, "--epochs", "3", "--max-lr", "1e3", "--set", "optim.name=sgd",
            "--set", "schedule.div=1e7", "--set", "schedule.final_div=1e8", "--set", "schedule.pct_start=0.9",
            "--set", "train.log_every=1", "--json")
    assert r.code == 3, r.stderr
    assert "diverged" in r.stderr and "step" in r.stderr and "lr" in r.stderr and "Traceback" not in r.stderr
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert r.json() == summary  # a script reading --json learns the outcome from stdout, as for any other
    assert summary["status"] == "diverged" and "loss became nan" in summary["stop_reason"].lower()
    steps = read_csv(run / "steps.csv")
    assert math.isnan(steps[-1]["loss"]) and all(math.isfinite(s["loss"]) for s in steps[:-1])
    assert len(read_csv(run / "metrics.csv")) >= 1 and summary["epochs_done"] >= 1
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert (run / "curves.png").exists()


def test_seeds_stop_at_a_diverged_seed_and_json_says_which(cli, tmp_path):
    # at 1e3 the bundled set blows up within the first epoch (TINY's 10 steps stay finite)
    r = cli("train", "--config", "mnist_sample", "--set", "data.valid_size=256", "--epochs", "1", "--max-lr", "1e3",
            "--seeds", "0,1", "--json")
    assert r.code == 3 and "diverged" in r.stderr, r.stderr
    s = r.json()  # the seeds run so far: the second never started
    assert s["status"] == "diverged" and s["seeds"] == [0] and s["accuracy_mean"] is None
    assert [run["status"] for run in s["runs"]] == ["diverged"] and len(list((tmp_path / "runs").iterdir())) == 1


def test_activation_stats_per_layer_and_step(cli, tmp_path):
    s = train(cli, "--epochs", "1", "--activation-stats")
    run = tmp_path / s["run_dir"]
    stats = read_csv(run / "activation_stats.csv")
    layers = sorted({r["layer"] for r in stats})
    assert layers == ["conv1", "conv2", "conv3"] and len(stats) == 3 * 10
    assert all(0 <= r["near_zero"] <= 1 and r["std"] >= 0 for r in stats)
    first = next(r for r in stats if r["layer"] == "conv1")
    assert first["near_zero"] > 0.3  # after a ReLU, much of a fresh layer's output is zero
    hists = read_csv(run / "activation_hist.csv")
    # conv1 of a 28x28 batch of 64: 16 channels at 14x14, every value post-ReLU lies in [0, 10]
    counts = [sum(r[f"h{j}"] for j in range(40)) for r in hists if r["layer"] == "conv1"]
    assert counts and all(c == 64 * 16 * 14 * 14 for c in counts)
    assert (run / "activations.png").stat().st_size > 10_000
