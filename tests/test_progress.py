"""Progress in a log file: `onecycle train --config mnist_sample > train.log 2>&1` (or under nohup, in CI).

Off a terminal, `find`, `train` (its range test too) and a folder's first decoding print a plain line
every 30 s and at each epoch's end: step / total, loss, images/s, elapsed, ETA. ONECYCLE_PROGRESS_SECONDS=0
makes every update a line, which is how these tests see the lines of a run that lasts seconds.
"""

from __future__ import annotations

import re

from conftest import assert_usage_error, write_photos

# 640 images at batch 64: 10 steps an epoch, 2 epochs
TINY = ["--config", "mnist_sample", "--set", "data.train_size=640", "--set", "data.valid_size=256", "--epochs", "2"]
EVERY_UPDATE = {"ONECYCLE_PROGRESS_SECONDS": "0"}
TRAIN_LINE = re.compile(r"^train: step (\d+)/20 \((\d+)%\)  epoch (\d)  loss [\d.]+  lr [\d.e+-]+  ([\d,]+) images/s  "
                        r"elapsed \d\d:\d\d(  ETA \d\d:\d\d)?$")
EPOCH_ROW = re.compile(r"^\d +[\d.]+ +[\d.]+ +[\d.]+ +\d\d:\d\d$")


def progress_lines(stderr: str, pattern: re.Pattern) -> list[re.Match]:
    return [m for line in stderr.splitlines() if (m := pattern.match(line))]


def test_a_log_gets_a_line_per_update_with_step_loss_rate_and_eta(cli, tmp_path):
    r = cli("train", *TINY, "--set", "train.log_every=1", "--runs-dir", tmp_path, env=EVERY_UPDATE)
    assert r.code == 0, r.stderr
    lines = progress_lines(r.stderr, TRAIN_LINE)
    steps = [int(m.group(1)) for m in lines]
    # every step's flush, and a line again at each epoch's end (after its row)
    assert steps == [*range(1, 11), 10, *range(11, 21), 20], r.stderr
    assert all(int(m.group(2)) == round(100 * int(m.group(1)) / 20) for m in lines)
    assert all(int(m.group(4).replace(",", "")) > 0 for m in lines)
    assert lines[-1].group(5) is None and all(m.group(5) for m in lines[:-2])  # an ETA until the last step
    rows = r.stderr.splitlines()
    for epoch in (0, 1):  # each epoch's row, then its progress line
        row = next(i for i, line in enumerate(rows) if EPOCH_ROW.match(line) and line.startswith(str(epoch)))
        assert TRAIN_LINE.match(rows[row + 1]).group(3) == str(epoch)


def test_the_default_pace_is_the_epochs_ends_for_a_short_run_and_none_prints_nothing(cli, tmp_path):
    paced = cli("train", *TINY, "--runs-dir", tmp_path)
    assert paced.code == 0, paced.stderr
    # a line every 30 s: a run of seconds has only its epochs' ends (a slow machine may add one)
    steps = [int(m.group(1)) for m in progress_lines(paced.stderr, TRAIN_LINE)]
    assert steps[-2:] == [10, 20] and len(steps) <= 4, paced.stderr
    quiet = cli("train", *TINY, "--runs-dir", tmp_path, "--progress", "none", env=EVERY_UPDATE)
    assert quiet.code == 0, quiet.stderr
    assert not progress_lines(quiet.stderr, TRAIN_LINE)
    assert len([line for line in quiet.stderr.splitlines() if EPOCH_ROW.match(line)]) == 2  # the table stays


def test_the_range_test_and_train_max_lr_find_say_how_far_the_sweep_is(cli, tmp_path):
    line = re.compile(r"^range test: step (\d+)/100 \(\d+%\)  lr [\d.e+-]+  loss [\d.]+  [\d,]+ images/s  "
                      r"elapsed \d\d:\d\d")
    found = cli("find", "--config", "mnist_sample", "--runs-dir", tmp_path, "--progress", "plain", env=EVERY_UPDATE)
    assert found.code == 0, found.stderr
    steps = [int(m.group(1)) for m in progress_lines(found.stderr, line)]
    assert steps and steps == sorted(steps) and steps[0] <= 8
    trained = cli("train", *TINY, "--max-lr", "find", "--runs-dir", tmp_path, env=EVERY_UPDATE)
    assert trained.code == 0, trained.stderr
    assert progress_lines(trained.stderr, line) and progress_lines(trained.stderr, TRAIN_LINE)


def test_a_folders_first_decoding_says_how_many_images_are_done(cli, tmp_path):
    write_photos(tmp_path / "photos", bad=False)
    r = cli("data", "check", "--set", "data.dataset=folder", "--data-dir", tmp_path / "photos", "--set",
            "data.cache=" + str(tmp_path / "cache"), env=EVERY_UPDATE)
    assert r.code == 0, r.stderr
    done = [int(m.group(1)) for m in progress_lines(r.stderr, re.compile(r"^decode: (\d+)/82 images \(\d+%\)  "
                                                                           r"[\d,]+ images/s  elapsed"))]
    assert done and done == sorted(done) and done[-1] == 82, r.stderr


def test_an_unknown_progress_mode_is_one_line(cli, tmp_path):
    assert_usage_error(cli("train", *TINY, "--runs-dir", tmp_path, "--progress", "fancy"),
                       "--progress 'fancy'", "auto, rich, plain or none")
