"""Concurrency, the disk and non-finite numbers (issue 7 items 3-5): eight range tests started at once,
a runs root that cannot take a run, a fit that diverges, a model that outputs NaN.

Signals at any moment and kill -9 (item 2), each followed by the resume that finishes the run, and two
resumes of the same run at once (item 3) are in test_resume.py."""

import json
import math
import signal
import subprocess
import sys

import torch

from conftest import assert_usage_error, clean_env, run_watched, write_photos
from onecycle_cli.runs.directory import read_csv

TINY = ["--config", "mnist_sample", "--set", "data.train_size=640", "--set", "data.valid_size=256"]


def test_eight_range_tests_started_at_once_get_eight_complete_directories(tmp_path):
    args = [sys.executable, "-m", "onecycle_cli", "find", *TINY, "--num-it", "20", "--json"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=clean_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-500:] for _, e in outs]
    dirs = {json.loads(out)["run_dir"] for out, _ in outs}
    assert len(dirs) == 8 and len(list((tmp_path / "runs").iterdir())) == 8
    for d in dirs:
        summary = json.loads((tmp_path / d / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["run_dir"] == d
        assert len(read_csv(tmp_path / d / "lr_find.csv")) == summary["curves"][0]["steps"]
        assert (tmp_path / d / "lr_find.png").is_file() and (tmp_path / d / "report.html").is_file()


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
    assert summary["status"] == "completed" and \
           summary["stop_reason"].startswith("loss became nan at lr 1e-07 (step 0)")
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


def test_sigterm_at_any_read_of_outside_input_ends_train(tmp_path, tiny_runs):
    """Every file `train` reads from outside (its config, the folder's cache, --init's summary and weights) is
    opened without blocking, so a SIGTERM that comes while any of them is read ends the run: the Nth read
    sends it (ONECYCLE_FAULT=read@N), for every N until a run reads fewer files and completes. A read that
    blocked would hold the process past the watchdog's 90 s, and SIGTERM would have to end it within 10 s."""
    write_photos(tmp_path / "photos", train=6, valid=4, bad=False)
    # grey digits and the 3-vs-7 preset's net, so that --init takes the tiny run's weights
    net = ["model.name=simple_cnn", "model.channels=[1,16,16,2]", "model.kernel_sizes=[3]", "model.strides=[2]",
           "model.batchnorm=false", "model.final_relu=true", "data.channels=1", "data.image_size=16"]
    args = ["train", "--config", "folder", "--data-dir", "photos", *[a for s in net for a in ("--set", s)],
            "--batch-size", "2", "--epochs", "1", "--set", "schedule.pct_start=0.5",
            "--init", str(tiny_runs["onecycle"])]
    first = run_watched(*args, cwd=tmp_path)  # builds the folder's cache, which the runs below read back
    assert first.code == 0, first.stderr
    codes = []
    for n in range(1, 60):
        r = run_watched(*args, env={"ONECYCLE_FAULT": f"read@{n}:SIGTERM"}, cwd=tmp_path)
        codes.append(r.code)
        if r.code == 0:  # fewer than n reads: no signal was sent
            break
        # 143: stopped as a run stops (interrupted, or refused before it began); -15: before its handler existed
        assert r.code in (143, -signal.SIGTERM) and "Traceback" not in r.stderr, (n, r.code, r.stderr[-2000:])
    assert codes[-1] == 0 and len(codes) >= 6, codes  # the config, the cache, --init's summary and weights: all read
