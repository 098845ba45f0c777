"""Resume: `onecycle train --resume RUN_DIR` finishes a stopped run exactly as if it had never stopped.

A run interrupted anywhere (SIGINT or SIGTERM from outside, a signal inside a batch, an evaluation or
between a checkpoint's write and its rename, kill -9 mid-write, inside either cycle of a fine-tuning run,
mid-epoch on an image folder) and then resumed ends bit-identical to the uninterrupted run: the same
weights, the same per-epoch metrics, the same per-step losses. A resume that cannot give that run is
refused with exit 2 and one line: another length or schedule, a finished run, a directory that is not a
run, a run another process is already resuming.

The signals are real: sent from outside, or, where no outside timing can hit the moment, sent by the
process to itself through ONECYCLE_FAULT (onecycle_cli/faults.py).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from conftest import FINE_TUNE, assert_usage_error, clean_env, go_on, onecycle, proc_state, reference_run
from onecycle_cli.cli import app
from onecycle_cli.config import DataConfig
from onecycle_cli.datasets import load_dataset
from onecycle_cli.loader import TrainBatches
from onecycle_cli.runs.directory import read_csv

# 640 images at batch 64: 10 steps an epoch, a few milliseconds each
TINY = ["--config", "mnist_sample", "--set", "data.train_size=640", "--set", "data.valid_size=256"]


def train(cli, *args) -> dict:
    r = cli("train", *TINY, "--json", *args)
    assert r.code == 0, r.stderr
    return r.json()


# ------------------------------------------------------------------------------------------------
# the batches: a resumed epoch draws the same order and skips the batches already trained on


def test_resuming_mid_epoch_gives_the_remaining_batches():
    ds = load_dataset(DataConfig(dataset="synthetic", train_size=160, valid_size=16))
    batches = TrainBatches(ds, DataConfig(dataset="synthetic"), 32, seed=5)
    whole = list(batches.epoch(2))
    rest = list(batches.epoch(2, start=3))
    assert len(rest) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(whole[3:], rest))


# ------------------------------------------------------------------------------------------------
# SIGINT and SIGTERM from outside, at whatever step the run has reached

LONG = TINY + ["--epochs", "30", "--set", "train.log_every=1"]


@pytest.fixture(scope="module")
def reference_300_steps(tmp_path_factory):
    """The uninterrupted run that interrupted-and-resumed runs must reproduce bit for bit."""
    root = tmp_path_factory.mktemp("reference")
    clean = {k: None for k in os.environ if k.startswith("ONECYCLE")}
    r = CliRunner().invoke(app, ["train", *LONG, "--json", "--runs-dir", str(root)], env=clean,
                           catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    return root / json.loads(r.stdout)["run_dir"].split("/")[-1]


def start(*args: str, cwd, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onecycle_cli", "train", *args], cwd=cwd, env=clean_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt_at(args: list[str], cwd, step: int, sig: int) -> tuple[int, str]:
    """The run started, held at `step` (it stops itself there), `sig` sent from outside, and once that is
    pending, continued; returns (exit code, stderr)."""
    proc = start(*args, cwd=cwd, ONECYCLE_FAULT=f"step@{step}:SIGSTOP")
    while proc.poll() is None and proc_state(proc.pid) != "T":  # no deadline: a loaded machine is slow, not wrong
        time.sleep(0.005)
    proc.send_signal(sig)
    go_on([proc.pid], [proc.pid], {sig})
    out, err = proc.communicate()
    return proc.returncode, err


def weights(run) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_then_resumed_ends_bit_identical(cli, tmp_path, reference_300_steps, sig, code):
    exit_code, err = interrupt_at([*LONG, "--runs-dir", "cut"], tmp_path, 125, sig)
    assert exit_code == code, err
    run = next((tmp_path / "cut").iterdir())
    cut = json.loads((run / "summary.json").read_text())
    assert cut["status"] == "interrupted" and "--resume" in cut["stop_reason"] and cut["steps"] == 125
    resumed = cli("train", "--resume", run, "--json")
    assert resumed.code == 0, resumed.stderr
    assert resumed.json()["status"] == "completed" and resumed.json()["steps"] == 300
    ref_dir = reference_300_steps
    a, b = weights(ref_dir), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("epoch", "step", "lr", "momentum", "train_loss", "valid_loss", "accuracy")
    ref_rows, rows = read_csv(ref_dir / "metrics.csv"), read_csv(run / "metrics.csv")
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in ref_rows]
    ref_steps, steps = read_csv(ref_dir / "steps.csv"), read_csv(run / "steps.csv")
    assert [(r["step"], r["loss"], r["smooth_loss"]) for r in steps] == \
           [(r["step"], r["loss"], r["smooth_loss"]) for r in ref_steps]


# ------------------------------------------------------------------------------------------------
# a signal at a chosen moment, and kill -9 in the middle of a checkpoint write

FIVE = TINY + ["--epochs", "5", "--set", "train.log_every=1"]  # 10 steps an epoch, 50 in all


@pytest.fixture(scope="module")
def reference_50_steps(tmp_path_factory):
    """The uninterrupted run every interrupted-and-resumed run must reproduce exactly."""
    return reference_run(tmp_path_factory, "reference", *FIVE)


def same_result(run, reference) -> None:
    a = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("epoch", "step", "lr", "train_loss", "valid_loss", "accuracy")
    assert [[r[k] for k in keys] for r in read_csv(run / "metrics.csv")] == \
           [[r[k] for k in keys] for r in read_csv(reference / "metrics.csv")]
    assert [(r["step"], r["loss"]) for r in read_csv(run / "steps.csv")] == \
           [(r["step"], r["loss"]) for r in read_csv(reference / "steps.csv")]


@pytest.mark.parametrize("fault,code,stopped_at", [
    ("step@1:SIGINT", 130, "step 1 of 50"),           # during the very first batch
    ("step@15:SIGTERM", 143, "step 15 of 50"),        # mid-epoch
    ("eval@2:SIGINT", 130, "step 20 of 50"),          # during the second evaluation: that epoch completes
    ("checkpoint@2:SIGTERM", 143, "step 20 of 50"),   # between a checkpoint's write and its rename
], ids=["first-batch", "mid-epoch", "evaluation", "checkpoint-write"])
def test_a_signal_at_any_moment_leaves_a_run_that_resume_finishes_exactly(cli, tmp_path, reference_50_steps,
                                                                          fault, code, stopped_at):
    p = onecycle("train", *FIVE, cwd=tmp_path, ONECYCLE_FAULT=fault)
    assert p.returncode == code, p.stderr
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and stopped_at in summary["stop_reason"]
    assert not list(run.rglob(".*.tmp"))  # the interrupted checkpoint write still finished
    r = cli("train", "--resume", run, "--json")
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    same_result(run, reference_50_steps)


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one(cli, tmp_path, reference_50_steps):
    p = onecycle("train", *FIVE, cwd=tmp_path, ONECYCLE_FAULT="checkpoint@3:SIGKILL")
    assert p.returncode == -signal.SIGKILL
    run = next((tmp_path / "runs").iterdir())
    assert list((run / "checkpoints").glob(".last.pt.*.tmp"))  # it died mid-write ...
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # ... and the previous one loads
    assert ckpt["state"]["epoch"] == 2 and ckpt["state"]["step"] == 20
    # every file a killed run left is readable: whole JSON, CSV lines, a listing that says what happened
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    assert len(read_csv(run / "metrics.csv")) == 3 and len(read_csv(run / "steps.csv")) == 30
    listing = cli("runs", tmp_path / "runs", "--json")
    assert listing.code == 0 and "crashed" in listing.stdout
    r = cli("train", "--resume", run, "--json")
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    assert not list(run.rglob(".*.tmp"))
    same_result(run, reference_50_steps)


# ------------------------------------------------------------------------------------------------
# fine-tuning: a frozen cycle, then an unfrozen one with its own optimiser state

def same_run(run, reference) -> None:
    a = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    keys = ("epoch", "phase", "step", "lr", "train_loss", "valid_loss", "accuracy")
    assert [[r[k] for k in keys] for r in read_csv(run / "metrics.csv")] == \
           [[r[k] for k in keys] for r in read_csv(reference / "metrics.csv")]
    assert [(r["step"], r["phase"], r["lr_0"], r["loss"]) for r in read_csv(run / "steps.csv")] == \
           [(r["step"], r["phase"], r["lr_0"], r["loss"]) for r in read_csv(reference / "steps.csv")]


@pytest.mark.parametrize("fault,code,stopped", [
    ("step@4:SIGTERM", 143, "step 4 of 30"),    # inside the frozen cycle: resumed, it crosses the boundary
    ("eval@1:SIGTERM", 143, "step 10 of 30"),   # at the boundary: the checkpoint still holds the frozen scheduler
    ("step@15:SIGINT", 130, "step 15 of 30"),   # inside the unfrozen cycle
], ids=["frozen", "boundary", "unfrozen"])
def test_resume_across_the_freeze_boundary_is_bit_identical(cli, tmp_path, fine_tune_reference, fault, code,
                                                           stopped):
    p = onecycle("train", *FINE_TUNE, cwd=tmp_path, ONECYCLE_FAULT=fault)
    assert p.returncode == code, p.stderr
    run = next((tmp_path / "runs").iterdir())
    assert stopped in json.loads((run / "summary.json").read_text())["stop_reason"]
    r = cli("train", "--resume", run, "--json")
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    same_run(run, fine_tune_reference)


# ------------------------------------------------------------------------------------------------
# an image folder, stopped mid-epoch


def folder_args(root, *extra: str) -> list[str]:
    """test_folder.py's `args`: the folder preset, shrunk: 16 px crops of 20 px cached images, a 3-conv CNN."""
    return ["--config", "folder", "--data-dir", str(root), "--set", "data.image_size=16", "--set", "data.presize=20",
            "--model", "simple_cnn", "--set", "model.channels=[3,8,16,2]", "--set", "model.kernel_sizes=[3]",
            "--batch-size", "16", "--set", "schedule.max_lr=1e-2", *extra]


def test_resume_mid_epoch_on_a_folder_is_bit_identical(photos, tmp_path):
    root, _ = photos
    run_args = folder_args(root, "--epochs", "3", "--set", "train.log_every=1", "--json")
    whole = onecycle("train", *run_args, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    reference = tmp_path / json.loads(whole.stdout)["run_dir"]
    cut = onecycle("train", *run_args, cwd=tmp_path, ONECYCLE_FAULT="step@5:SIGINT")  # epoch 1, step 2 of 3
    assert cut.returncode == 130, cut.stderr
    run = tmp_path / json.loads(cut.stdout)["run_dir"]
    resumed = onecycle("train", "--resume", str(run), "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("epoch", "step", "train_loss", "valid_loss", "accuracy")
    assert [[r[k] for k in keys] for r in read_csv(run / "metrics.csv")] == \
           [[r[k] for k in keys] for r in read_csv(reference / "metrics.csv")]


# ------------------------------------------------------------------------------------------------
# refusals: a resume that would change the run, or a run already being resumed


def test_resume_refuses_a_different_schedule_length_and_a_finished_run(cli, tmp_path):
    s = train(cli, "--epochs", "2")
    run = tmp_path / s["run_dir"]
    assert_usage_error(cli("train", "--resume", run), "already completed")
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running"}))  # as kill -9 leaves it
    assert_usage_error(cli("train", "--resume", run, "--epochs", "3"), "cannot change length", "20")
    assert_usage_error(cli("train", "--resume", run, "--set", "schedule.max_lr=0.1"), "schedule.max_lr")
    assert_usage_error(cli("train", "--resume", tmp_path / "nowhere"), "no such run directory")
    assert_usage_error(cli("train", "--resume", tmp_path), "not a onecycle run")
    assert_usage_error(cli("train", "--resume", run, "--config", "mnist"), "--resume")


def test_a_second_resume_of_the_same_run_is_refused(cli, tmp_path):
    long = TINY + ["--epochs", "20", "--set", "train.log_every=1"]
    p = onecycle("train", *long, cwd=tmp_path, ONECYCLE_FAULT="step@3:SIGINT")
    assert p.returncode == 130, p.stderr
    run = next((tmp_path / "runs").iterdir())
    first = subprocess.Popen([sys.executable, "-m", "onecycle_cli", "train", "--resume", str(run)], cwd=tmp_path,
                             env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while f"pid {first.pid}" not in (run / ".lock").read_text() and first.poll() is None:
        time.sleep(0.02)  # until the first resume holds the run
    second = cli("train", "--resume", run)
    still_running = first.poll() is None
    first.communicate()
    assert still_running and first.returncode == 0
    assert_usage_error(second, "in use by", f"pid {first.pid}")
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
