"""`onecycle train --tensorboard` (or `--log tensorboard`, or run.log): event files in the run directory,
with the scalars in them."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY
from onecycle_cli.runs.directory import read_csv


@pytest.mark.parametrize("ask", [["--tensorboard"], ["--log", "tensorboard"], ["--set", "run.log=[tensorboard]"]])
def test_tensorboard_events_hold_every_step_and_epoch_scalar(cli, tmp_path, ask):
    pytest.importorskip("tensorboard", reason="onecycle[tensorboard] is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    r = cli("train", *TINY, "--epochs", "2", "--set", "train.log_every=4", *ask, "--json")
    assert r.code == 0, r.stderr
    run = Path(r.json()["run_dir"])
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {f"step/{k}" for k in ("loss", "smooth_loss", "lr", "momentum", "grad_abs")} | \
                  {f"epoch/{k}" for k in ("train_loss", "valid_loss", "accuracy", "images_per_s")}
    # the same numbers as the run's CSVs, at the same steps
    steps = read_csv(run / "steps.csv")
    lr = events.Scalars("step/lr")
    assert [e.step for e in lr] == [int(s["step"]) for s in steps] == list(range(1, 17))
    assert [e.value for e in lr] == pytest.approx([s["lr"] for s in steps], rel=1e-6)
    summary = r.json()
    accuracy = events.Scalars("epoch/accuracy")
    assert [e.step for e in accuracy] == [8, 16]
    assert accuracy[-1].value == pytest.approx(summary["final"]["accuracy"], rel=1e-6)
    assert events.Scalars("epoch/valid_loss")[-1].value == pytest.approx(summary["final"]["valid_loss"], rel=1e-6)
