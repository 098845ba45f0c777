"""The weight average: `onecycle train --set train.ema=0.99` (timm's --model-ema-decay with its warm-up)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import BOOK_SETS, assert_usage_error, onecycle, run_process
from onecycle_cli.ema import WeightEma, decay_at

# the book's BatchNorm net on 320 bundled digits, batch 32: 10 steps an epoch, 2 epochs, one thread
ARGS = ["train", "--config", "mnist", *[a for s in BOOK_SETS for a in ("--set", s)], "--epochs", "2",
        "--max-lr", "0.05", "--set", "train.threads=1", "--progress", "none", "--json"]


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_the_average_is_timms_model_ema_with_warmup():
    timm = pytest.importorskip("timm.utils")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    ours, theirs = WeightEma(model, 0.99), timm.ModelEmaV3(model, decay=0.99, use_warmup=True)
    for step in range(1, 60):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        model.train()(torch.randn(8, 1, 8, 8))  # BatchNorm's running statistics and batch count move too
        ours.update(step)
        theirs.update(model, step=step)
        for (name, a), b in zip(ours.module.state_dict().items(), theirs.module.state_dict().values()):
            assert torch.equal(a, b), (step, name)
    assert decay_at(1, 0.99) == 0 and decay_at(2, 0.99) == pytest.approx(1 - 2 ** (-2 / 3))
    assert decay_at(10 ** 6, 0.99) == 0.99  # capped at train.ema


def test_decay_zero_is_the_model_itself(tmp_path):
    p = onecycle(*ARGS, "--set", "train.ema=0", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    run = Path(tmp_path / s["run_dir"])
    for row in metrics(run):
        assert (row["ema_accuracy"], row["ema_valid_loss"]) == (row["accuracy"], row["valid_loss"])
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["ema"].keys() == saved["model"].keys()
    assert all(torch.equal(saved["ema"][k], saved["model"][k]) for k in saved["model"])
    assert s["ema"] == {"decay": 0.0, "final": {"valid_loss": s["final"]["valid_loss"],
                                                 "accuracy": s["final"]["accuracy"]}}
    assert "ema_accuracy" in p.stderr  # the epoch table's column


def test_the_average_is_scored_saved_and_resumed_exactly(tmp_path):
    (tmp_path / "a").mkdir()
    whole = onecycle(*ARGS, "--set", "train.ema=0.9", cwd=tmp_path / "a")
    assert whole.returncode == 0, whole.stderr
    run_a = tmp_path / "a" / json.loads(whole.stdout)["run_dir"]
    (tmp_path / "b").mkdir()
    cut = onecycle(*ARGS, "--set", "train.ema=0.9", cwd=tmp_path / "b", ONECYCLE_FAULT="step@13:SIGTERM")
    assert cut.returncode == 143, cut.stderr
    run_b = next((tmp_path / "b" / "runs").iterdir())
    resumed = onecycle("train", "--resume", run_b, "--progress", "none", "--json", cwd=tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(run_a / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run_b / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert not all(torch.equal(a["ema"][k], a["model"][k]) for k in a["model"])  # an average, not the weights
    assert [r["ema_accuracy"] for r in metrics(run_a)] == [r["ema_accuracy"] for r in metrics(run_b)]
    # evaluate, predict and export take it as --checkpoint ema
    r = run_process("evaluate", run_a, "--checkpoint", "ema", "--json", "--progress", "none")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(float(metrics(run_a)[-1]["ema_accuracy"]), abs=1e-9)


def test_no_average_and_bad_decays_are_refused(tmp_path):
    p = onecycle(*ARGS, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    run = tmp_path / json.loads(p.stdout)["run_dir"]
    assert "ema_accuracy" not in (run / "metrics.csv").read_text() and json.loads(p.stdout)["ema"] is None
    assert_usage_error(run_process("evaluate", run, "--checkpoint", "ema"), "holds no weight average")
    for value in ("1", "-0.1", "x", "1.5"):
        assert_usage_error(run_process("train", "--config", "mnist_sample", "--set", f"train.ema={value}"),
                           "train.ema")
