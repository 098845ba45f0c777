"""Signals at any moment, kills, concurrency, the disk and non-finite numbers (issue 7 items 2-5).

Signals are real: sent from outside, or, where no outside timing can hit the moment (inside an
evaluation, between a checkpoint's write and its rename), sent by the process to itself through
ONECYCLE_FAULT (onecycle_cli/faults.py)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, assert_usage_error
from onecycle_cli.runs.directory import read_csv

TINY = ["--config", "mnist_sample", "--set", "data.train_size=640", "--set", "data.valid_size=256"]
FIVE = TINY + ["--epochs", "5", "--set", "train.log_every=1"]  # 10 steps an epoch, 50 in all


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    e["PYTHONPATH"] = str(REPO)
    e.update(extra)
    return e


def onecycle(*args, cwd, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onecycle_cli", *map(str, args)], cwd=cwd, env=env(**extra),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every interrupted-and-resumed run must reproduce exactly."""
    root = tmp_path_factory.mktemp("reference")
    p = onecycle("train", *FIVE, "--json", cwd=root)
    assert p.returncode == 0, p.stderr
    return root / json.loads(p.stdout)["run_dir"]


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
def test_a_signal_at_any_moment_leaves_a_run_that_resume_finishes_exactly(cli, tmp_path, reference, fault, code,
                                                                          stopped_at):
    p = onecycle("train", *FIVE, cwd=tmp_path, ONECYCLE_FAULT=fault)
    assert p.returncode == code, p.stderr
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and stopped_at in summary["stop_reason"]
    assert not list(run.rglob(".*.tmp"))  # the interrupted checkpoint write still finished
    r = cli("train", "--resume", run, "--json")
    assert r.code == 0 and r.json()["status"] == "completed", r.stderr
    same_result(run, reference)


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one(cli, tmp_path, reference):
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
    same_result(run, reference)


def test_eight_range_tests_started_at_once_get_eight_complete_directories(tmp_path):
    args = [sys.executable, "-m", "onecycle_cli", "find", *TINY, "--num-it", "20", "--json"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-500:] for _, e in outs]
    dirs = {json.loads(out)["run_dir"] for out, _ in outs}
    assert len(dirs) == 8 and len(list((tmp_path / "runs").iterdir())) == 8
    for d in dirs:
        summary = json.loads((tmp_path / d / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["run_dir"] == d
        assert len(read_csv(tmp_path / d / "lr_find.csv")) == summary["curves"][0]["steps"]
        assert (tmp_path / d / "lr_find.png").is_file() and (tmp_path / d / "report.html").is_file()


def test_a_second_resume_of_the_same_run_is_refused(cli, tmp_path):
    long = TINY + ["--epochs", "20", "--set", "train.log_every=1"]
    p = onecycle("train", *long, cwd=tmp_path, ONECYCLE_FAULT="step@3:SIGINT")
    assert p.returncode == 130, p.stderr
    run = next((tmp_path / "runs").iterdir())
    first = subprocess.Popen([sys.executable, "-m", "onecycle_cli", "train", "--resume", str(run)], cwd=tmp_path,
                             env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while f"pid {first.pid}" not in (run / ".lock").read_text() and time.time() < deadline:
        time.sleep(0.02)  # until the first resume holds the run
    second = cli("train", "--resume", run)
    still_running = first.poll() is None
    first.communicate(timeout=120)
    assert still_running and first.returncode == 0
    assert_usage_error(second, "in use by", f"pid {first.pid}")
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_runs_root_problems_are_caught_before_any_training(cli, tmp_path):
    (tmp_path / "a_file").write_text("")
    assert_usage_error(cli("train", *TINY, "--runs-dir", tmp_path / "a_file"), "not a directory")
    assert_usage_error(cli("find", *TINY, "--runs-dir", tmp_path / "no" / "such" / "runs"), "parent", "does not exist")


def test_max_lr_1e3_on_the_preset_diverges_with_exit_3_and_its_steps_kept(cli, tmp_path):
    r = cli("train", *TINY, "--max-lr", "1e3", "--set", "train.log_every=5")
    assert r.code == 3 and "diverged" in r.stderr and "Traceback" not in r.stderr
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    steps = read_csv(run / "steps.csv")
    assert summary["status"] == "diverged" and f"step {int(steps[-1]['step'])}" in summary["stop_reason"]
    assert math.isnan(steps[-1]["loss"]) and steps[0]["step"] == 1  # every step up to the NaN is on disk
    assert (run / "curves.png").exists() and (run / "report.html").exists()


def test_a_range_test_with_nan_from_the_first_step_ends_with_a_message(tmp_path):
    from onecycle_cli.config import resolve
    from onecycle_cli.display import Display
    from onecycle_cli.lr_find import find_run
    from onecycle_cli.pipeline import build_pipeline
    from onecycle_cli.signals import StopFlag
    resolved = resolve("mnist_sample", ["data.train_size=640", "find.num_it=20"])
    pipe = build_pipeline(resolved.config)
    with torch.no_grad():
        for p in pipe.model.parameters():
            p.fill_(math.nan)  # a model that outputs NaN whatever it is fed
    run, summary = find_run(resolved, Display(enabled=False), StopFlag(), pipe=pipe)
    assert summary["status"] == "completed" and summary["stop_reason"].startswith("loss became nan at lr 1e-07 (step 0)")
    assert all("no finite loss" in s["note"] for s in summary["suggestions"].values())
    assert json.loads((run.path / "summary.json").read_text())["suggestions"]["valley"]["loss"] is None


def test_an_evaluation_of_a_nan_model_reports_nan(tmp_path):
    from onecycle_cli.config import resolve
    from onecycle_cli.fit import evaluate
    from onecycle_cli.pipeline import build_pipeline
    pipe = build_pipeline(resolve("mnist_sample", ["data.train_size=640", "data.valid_size=128"]).config)
    with torch.no_grad():
        for p in pipe.model.parameters():
            p.fill_(math.nan)
    loss, accuracy = evaluate(pipe)
    assert math.isnan(loss) and 0 <= accuracy <= 1
