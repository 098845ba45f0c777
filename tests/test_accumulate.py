"""Gradient accumulation keeps the experiment: `onecycle train --accum-steps 2` (train.accum_steps).

On the bundled 3s and 7s with the fastai-v1 simple_cnn, which has no BatchNorm, a batch of 64 in two
micro-batches of 32 must train as the batch of 64 does: the same loss at every step, the same LR and
momentum at every step, the same weights at the end, within float rounding.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import assert_usage_error, onecycle, run_process

# 512 images, batch 64: 8 optimiser steps an epoch, 2 epochs, one thread (the sums in the same order)
ARGS = ["--config", "mnist_sample", "--set", "data.train_size=512", "--set", "data.valid_size=128", "--batch-size",
        "64", "--max-lr", "0.05", "--set", "train.log_every=1", "--set", "train.threads=1", "--progress", "none",
        "--json"]


def train(tmp_path: Path, *args: str, env: dict | None = None) -> dict:
    r = run_process("train", *ARGS, "--epochs", "2", "--runs-dir", tmp_path / "runs", *args, env=env)
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


def steps(run: Path) -> list[dict]:
    with open(run / "steps.csv") as f:
        return list(csv.DictReader(f))


def test_two_micro_batches_train_as_the_whole_batch(tmp_path):
    whole, split = train(tmp_path), train(tmp_path, "--accum-steps", "2")
    assert (whole["accum_steps"], whole["micro_batch"]) == (1, 64)
    assert (split["accum_steps"], split["micro_batch"], split["batch_size"]) == (2, 32, 64)
    assert split["steps"] == whole["steps"] == 16  # one optimiser step, one schedule step, per global batch
    a, b = steps(Path(whole["run_dir"])), steps(Path(split["run_dir"]))
    assert [r["step"] for r in a] == [r["step"] for r in b] == [str(i) for i in range(1, 17)]
    for x, y in zip(a, b):
        assert (x["lr"], x["momentum"]) == (y["lr"], y["momentum"])  # the schedule, step for step
        assert float(x["loss"]) == pytest.approx(float(y["loss"]), rel=1e-4, abs=1e-6)
    w1 = torch.load(Path(whole["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    w2 = torch.load(Path(split["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-4, atol=1e-5)
    assert split["final"]["accuracy"] == pytest.approx(whole["final"]["accuracy"], abs=1 / 128 + 1e-9)


def test_the_range_test_with_accumulation_suggests_the_same(tmp_path):
    def find(*args: str) -> dict:
        r = run_process("find", *[a for a in ARGS if a not in ("--max-lr", "0.05")], "--num-it", "40",
                        "--runs-dir", tmp_path / "runs", *args)
        assert r.code == 0, r.stderr
        return json.loads(r.stdout)
    whole, split = find(), find("--accum-steps", "4")
    assert split["accum_steps"] == 4 and split["micro_batch"] == 16
    c1, c2 = whole["curves"][0], split["curves"][0]
    assert c1["steps"] == c2["steps"]
    assert whole["suggestion"]["name"] == split["suggestion"]["name"]
    assert split["suggestion"]["lr"] == pytest.approx(whole["suggestion"]["lr"], rel=1e-6)


@pytest.mark.parametrize("value, fragment", [
    ("0", "train.accum_steps"),
    ("x", "train.accum_steps"),
    ("3", "train.batch_size = 64 does not split into train.accum_steps = 3 equal micro-batches"),
    ("5000", "train.accum_steps"),
    ("automatic", "train.accum_steps"),
])
def test_bad_accumulation_is_refused_in_one_line(tmp_path, value, fragment):
    for command in ("train", "find"):
        r = run_process(command, "--config", "mnist_sample", "--batch-size", "64", "--accum-steps", value,
                        "--runs-dir", tmp_path / "runs")
        assert_usage_error(r, fragment)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------
# --accum-steps auto: the batch-size finder


def test_the_finder_backs_off_from_out_of_memory_and_leaves_no_trace(tmp_path):
    # every trial of a micro-batch above 48 raises torch's own OutOfMemoryError (the fault hook): 64 does
    # not fit, 32 does, so the batch of 64 is 32 x 2, and the run is the one --accum-steps 2 trains
    found = train(tmp_path, "--accum-steps", "auto", env={"ONECYCLE_FAULT": "oom>48"})
    assert (found["accum_steps"], found["micro_batch"], found["batch_size"]) == (2, 32, 64)
    record = found["batch_finder"]
    assert [(t["micro_batch"], t["fits"]) for t in record["tried"]] == [(64, False), (32, True)]
    assert "out of memory" in record["tried"][0]["why"]
    given = train(tmp_path, "--accum-steps", "2")
    a = torch.load(Path(found["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(Path(given["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the trials' steps were put back, RNG and all
    config = (Path(found["run_dir"]) / "config.yaml").read_text()
    assert "accum_steps: 2" in config  # the run records the number, which --resume reads back


def test_the_finder_on_a_cpu_and_when_nothing_fits(tmp_path):
    r = run_process("train", *ARGS, "--epochs", "1", "--accum-steps", "auto", "--runs-dir", tmp_path / "runs")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["accum_steps"] == 1 and "on cpu, where memory swaps rather than runs out" in r.stderr
    r = run_process("find", "--config", "mnist_sample", "--accum-steps", "auto", "--runs-dir", tmp_path / "runs",
                    env={"ONECYCLE_FAULT": "oom>0"})
    assert_usage_error(r, "not even a micro-batch of 1 image fits")


def test_a_signal_between_micro_batches_resumes_exactly(tmp_path):
    # SIGTERM lands on the last micro-batch of step 11 (the fault point); the step finishes, the checkpoint holds
    # it whole, and the resumed run ends bit-identical to one never stopped
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = onecycle("train", *ARGS, "--epochs", "2", "--accum-steps", "4", cwd=tmp_path / "a")
    assert whole.returncode == 0, whole.stderr
    cut = onecycle("train", *ARGS, "--epochs", "2", "--accum-steps", "4", cwd=tmp_path / "b",
                   ONECYCLE_FAULT="step@11:SIGTERM")
    assert cut.returncode == 143, cut.stderr
    run = next((tmp_path / "b" / "runs").iterdir())
    assert json.loads((run / "summary.json").read_text())["steps"] == 11
    resumed = onecycle("train", "--resume", run, "--progress", "none", "--json", cwd=tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "a" / json.loads(whole.stdout)["run_dir"] / "checkpoints" / "last.pt",
                   weights_only=True)["model"]
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert steps(run) == steps(tmp_path / "a" / json.loads(whole.stdout)["run_dir"])
