"""Threads that share the box: `onecycle train --config mnist_sample` on a machine others use too.

onecycle picks torch's CPU threads from the CPUs the process may use (affinity, cgroup quota) and
from a step's work (under 100M multiply-adds, one thread); train.threads / ONECYCLE_THREADS and
OMP_NUM_THREADS are taken as given. Each run's summary says the count it trained with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import assert_usage_error, clean_env
from onecycle_cli.threads import quota

TINY = ["--config", "mnist_sample", "--set", "data.train_size=640", "--set", "data.valid_size=256", "--epochs", "1"]
# a CIFAR ResNet-20 (41M multiply-adds an image) on 64 generated images: 16 steps, seconds on a CPU
BIG = ["--dataset", "synthetic", "--model", "resnet20", "--set", "data.train_size=64", "--set", "data.valid_size=64",
       "--batch-size", "4", "--epochs", "1", "--max-lr", "0.1"]
CPUS = len(os.sched_getaffinity(0))


def threads_of(tmp_path, *args: str, **env: str) -> int:
    """The thread count a real `onecycle train` process says it trained with."""
    base = {k: v for k, v in clean_env().items() if not k.startswith(("OMP_", "GOMP_"))}
    p = subprocess.run([sys.executable, "-m", "onecycle_cli", "train", *args, "--runs-dir", tmp_path, "--json"],
                       cwd=tmp_path, env={**base, **env}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["threads"]


def test_a_small_model_trains_on_one_thread_and_a_big_one_on_every_usable_cpu(tmp_path):
    assert threads_of(tmp_path, *TINY) == 1
    assert threads_of(tmp_path, *BIG) == CPUS


def test_the_threads_given_are_taken_as_they_are(tmp_path):
    assert threads_of(tmp_path, *BIG, "--set", "train.threads=1") == 1
    assert threads_of(tmp_path, *TINY, ONECYCLE_THREADS="2") == 2
    assert threads_of(tmp_path, *BIG, OMP_NUM_THREADS="1") == 1  # a grid's member, or the user's own choice


@pytest.mark.skipif(CPUS < 2, reason="needs two CPUs to take one away")
def test_only_the_cpus_this_process_may_use_count(tmp_path):
    # a job scheduler's share: this process pinned to one CPU of the machine's several
    code = ("import os, sys, runpy; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "sys.argv = ['onecycle', *sys.argv[1:]]; runpy.run_module('onecycle_cli', run_name='__main__')")
    base = {k: v for k, v in clean_env().items() if not k.startswith(("OMP_", "GOMP_"))}
    p = subprocess.run([sys.executable, "-c", code, "train", *BIG, "--runs-dir", tmp_path, "--json"], cwd=tmp_path,
                       env=base, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["threads"] == 1


def test_a_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path):
    # cgroup v2's cpu.max: "quota period" in microseconds, or "max" for none
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()  # v1: cpu.cfs_quota_us / cpu.cfs_period_us, -1 for none
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert quota(tmp_path) == 0.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert quota(tmp_path) is None


def test_a_thread_count_below_one_is_refused_in_one_line(cli, tmp_path):
    assert_usage_error(cli("train", *TINY, "--runs-dir", tmp_path, "--set", "train.threads=0"), "train.threads")
    assert_usage_error(cli("train", *TINY, "--runs-dir", tmp_path, env={"ONECYCLE_THREADS": "two"}),
                       "ONECYCLE_THREADS")
