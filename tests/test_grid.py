"""Many runs at once: `onecycle grid --config mnist_sample --vary schedule.max_lr=0.01,0.05 --seeds 2 --parallel 2`.

Through the real CLI on the bundled 3-vs-7 set made tiny: the grid's record (grid.json, grid.csv,
grid.png, report.html) with real numbers, a member equal to the same `train` run alone, `--around
find` and its regret, a diverging member, SIGINT to the parent then `--resume`, and the bad specs
refused with one line before anything runs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_usage_error, clean_env, go_on, proc_state
from onecycle_cli.cli import app

# 640 images at batch 64: 10 steps an epoch; one epoch, so a member is mostly its process starting
TINY = ["--config", "mnist_sample", "--set", "data.train_size=640", "--set", "data.valid_size=256", "--epochs", "1"]


def invoke(*args: str) -> tuple[int, str, str]:
    """The parent in-process (it only spawns members), with no ONECYCLE_* variable from the caller."""
    clean = {k: None for k in os.environ if k.startswith("ONECYCLE")}
    r = CliRunner().invoke(app, [str(a) for a in args], env=clean, catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def process(*args: str, cwd, **env: str) -> subprocess.Popen:
    """`onecycle ARGS` as a real process (for signals), no fixed timeout: the machine may be slow."""
    return subprocess.Popen([sys.executable, "-m", "onecycle_cli", *map(str, args)], cwd=cwd, env=clean_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid_2x2(tmp_path_factory) -> dict:
    """2 max_lrs x 2 weight decays x 2 seeds, 2 at a time: 8 members."""
    root = tmp_path_factory.mktemp("grid") / "runs"
    started = time.time()
    code, out, err = invoke("grid", *TINY, "--vary", "schedule.max_lr=0.01,0.05", "--vary",
                            "optim.weight_decay=0,0.1", "--seeds", "2", "--parallel", "2", "--runs-dir", root,
                            "--json")
    assert code == 0, err
    grid = json.loads(out)
    return {"root": root, "grid": grid, "dir": Path(grid["grid_dir"]), "stderr": err,
            "seconds": time.time() - started}


def test_a_grid_records_every_member_and_point(grid_2x2):
    grid, folder = grid_2x2["grid"], grid_2x2["dir"]
    assert folder.parent == grid_2x2["root"] and "-grid-mnist_sample" in folder.name
    assert "grid: 8 members (2 schedule.max_lr x 2 optim.weight_decay x 2 seeds), 2 at a time" in grid_2x2["stderr"]
    assert grid["status"] == "completed" and grid["keys"] == ["schedule.max_lr", "optim.weight_decay"]
    members = grid["members"]
    assert [(m["texts"]["schedule.max_lr"], m["texts"]["optim.weight_decay"], m["seed"]) for m in members] == [
        (lr, wd, s) for lr in ("0.01", "0.05") for wd in ("0", "0.1") for s in (0, 1)]
    for m in members:  # every member an ordinary, finished train run with its values
        summary = json.loads((Path(m["run_dir"]) / "summary.json").read_text())
        assert m["status"] == "completed" and m["exit_code"] == 0 and summary["status"] == "completed"
        assert summary["max_lr"] == m["values"]["schedule.max_lr"] and summary["seed"] == m["seed"]
        assert m["accuracy"] == summary["final"]["accuracy"] and 0.5 < m["accuracy"] <= 1
        assert m["wall_seconds"] > 0 and (folder / "members" / f"{m['index']}.log").stat().st_size > 0
        # what it printed is in its own run directory too, never on the terminal
        output = (Path(m["run_dir"]) / "output.log").read_text()
        assert output == (folder / "members" / f"{m['index']}.log").read_text() and "epoch" in output
        assert output.splitlines()[-1] not in grid_2x2["stderr"]
    # a point's mean and std over its two seeds, as grid.json and the terminal say them
    assert len(grid["points"]) == 4
    for p in grid["points"]:
        acc = [members[i]["accuracy"] for i in p["members"]]
        mean = sum(acc) / 2
        assert p["n"] == 2 and p["mean"] == pytest.approx(mean)
        assert p["std"] == pytest.approx((sum((a - mean) ** 2 for a in acc)) ** 0.5)  # ddof=1 of two values
    best = max(grid["points"], key=lambda p: p["mean"])
    assert grid["best"]["mean"] == best["mean"] and grid["best"]["values"] == best["values"]
    assert f"accuracy {100 * best['mean']:.2f} ± {100 * best['std']:.2f}%" in grid_2x2["stderr"]
    assert grid_2x2["stderr"].count("] member ") == 8 and "[8/8]" in grid_2x2["stderr"]
    assert json.loads((folder / "grid.json").read_text()) == grid
    table = rows(folder / "grid.csv")
    assert [r["seed"] for r in table] == ["0", "1"] * 4
    assert list(table[0]) == ["schedule.max_lr", "optim.weight_decay", "seed", "status", "accuracy", "wall_seconds",
                              "run_dir"]
    assert [float(r["accuracy"]) for r in table] == [m["accuracy"] for m in members]
    assert (folder / "grid.png").read_bytes()[:4] == b"\x89PNG" and (folder / "grid.png").stat().st_size > 20_000
    page = (folder / "report.html").read_text()
    assert page.count('href="') == 8 and "data:image/png;base64," in page
    assert f"{100 * best['mean']:.2f} ± {100 * best['std']:.2f}% (n=2)" in page  # percent, as the regret is in points


def test_a_member_equals_the_same_train_run_alone(grid_2x2, cli):
    m = grid_2x2["grid"]["members"][3]  # max_lr 0.01, weight decay 0.1, seed 1
    alone = cli("train", *TINY, "--set", "schedule.max_lr=0.01", "--set", "optim.weight_decay=0.1", "--seed", "1",
                "--json")
    assert alone.code == 0, alone.stderr
    ours = json.loads((Path(m["run_dir"]) / "summary.json").read_text())
    assert alone.json()["final"]["accuracy"] == m["accuracy"]
    assert alone.json()["final"]["valid_loss"] == pytest.approx(ours["final"]["valid_loss"], rel=1e-5)


def test_members_forked_warm_equal_members_started_fresh(grid_2x2, tmp_path, monkeypatch):
    """The grid forks its members from a server that has imported torch once (grid/warm.py); started as fresh
    `python -m onecycle_cli` processes instead, the same members give the same numbers."""
    from onecycle_cli.grid import warm
    assert warm.available(), "grid_2x2's members were not forked: this test compares nothing"
    monkeypatch.setenv("ONECYCLE_GRID_FRESH", "1")
    assert not warm.available()  # what the grid below is given
    fresh = process("grid", *TINY, "--vary", "schedule.max_lr=0.01", "--vary", "optim.weight_decay=0", "--seeds", "2",
                    "--parallel", "2", "--runs-dir", "runs", "--json", cwd=tmp_path, ONECYCLE_GRID_FRESH="1")
    out, err = fresh.communicate()
    assert fresh.returncode == 0, err
    members = json.loads(out)["members"]
    assert [m["accuracy"] for m in members] == [m["accuracy"] for m in grid_2x2["grid"]["members"][:2]]
    forked = grid_2x2["grid"]["members"][0]
    meta = json.loads((Path(forked["run_dir"]) / "meta.json").read_text())
    assert meta["pid"] == forked["pid"] and meta["pid"] != os.getpid()  # its own process all the same


def test_runs_lists_the_grid_and_compare_takes_its_members(grid_2x2, cli):
    listed = cli("runs", grid_2x2["root"], "--json")
    assert listed.code == 0, listed.stderr
    row = next(r for r in listed.json() if r["command"] == "grid")
    assert row["status"] == "completed" and (row["members_done"], row["members_total"]) == (8, 8)
    assert "8/8 members" in listed.stderr
    compared = cli("compare", grid_2x2["dir"], "--runs-dir", grid_2x2["root"], "--json")
    assert compared.code == 0, compared.stderr
    assert [r["path"] for r in compared.json()["runs"]] == [m["run_dir"] for m in grid_2x2["grid"]["members"]]


def test_around_find_trains_at_the_suggestion_times_factors_and_says_the_regret(tmp_path):
    code, out, err = invoke("grid", *TINY, "--set", "find.num_it=30", "--around", "find", "--factors", "0.5,1,2",
                            "--parallel", "2", "--runs-dir", tmp_path / "runs", "--json")
    assert code == 0, err
    grid = json.loads(out)
    s = grid["suggestion"]
    find = json.loads((Path(s["find_run"]) / "summary.json").read_text())
    assert find["command"] == "find" and s["lr"] == find["suggestion"]["lr"] and s["name"] == find["suggestion"]["name"]
    assert [m["values"]["schedule.max_lr"] for m in grid["members"]] == [
        pytest.approx(s["lr"] * f, rel=1e-5) for f in (0.5, 1, 2)]
    assert all(m["status"] == "completed" for m in grid["members"])
    at = grid["members"][1]["accuracy"]
    assert grid["suggestion_mean"] == at and grid["best"]["mean"] == max(m["accuracy"] for m in grid["members"])
    assert grid["regret"] == pytest.approx(100 * (grid["best"]["mean"] - at)) and grid["regret"] >= 0
    assert f"{grid['regret']:.2f} points below the best (regret)" in err
    page = (Path(grid["grid_dir"]) / "report.html").read_text()
    assert "regret" in page and f"{s['lr']:.3e}" in page


def test_a_diverging_member_is_recorded_and_the_rest_go_on(tmp_path):
    code, out, err = invoke("grid", *TINY, "--vary", "schedule.max_lr=1e-3,1e9", "--parallel", "2",
                            "--runs-dir", tmp_path / "runs", "--json")
    assert code == 3, err
    grid = json.loads(out)
    assert grid["status"] == "diverged"
    assert [(m["status"], m["exit_code"]) for m in grid["members"]] == [("completed", 0), ("diverged", 3)]
    assert grid["members"][0]["accuracy"] > 0.5 and grid["members"][1]["accuracy"] is None
    assert json.loads((Path(grid["members"][1]["run_dir"]) / "summary.json").read_text())["status"] == "diverged"
    assert [r["status"] for r in rows(Path(grid["grid_dir"]) / "grid.csv")] == ["completed", "diverged"]
    assert "diverged (exit 3)" in err


# ------------------------------------------------------------------------------------------------
# SIGINT to the parent reaches every member; --resume ends as the uninterrupted grid does

LONG = ["--config", "mnist_sample", "--set", "data.train_size=640", "--set", "data.valid_size=256", "--epochs", "12",
        "--set", "train.log_every=1", "--vary", "schedule.max_lr=0.01,0.02", "--parallel", "2"]


def finals(grid: dict) -> list[dict]:
    return [json.loads((Path(m["run_dir"]) / "summary.json").read_text())["final"] for m in grid["members"]]


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> dict:
    """The uninterrupted grid that interrupted-and-resumed ones must end as."""
    reference = process("grid", *LONG, "--runs-dir", "ref", "--json", cwd=tmp_path_factory.mktemp("reference"))
    out, err = reference.communicate()
    assert reference.returncode == 0, err
    return json.loads(out)


# Each member's train stops itself (SIGSTOP) at the 30th step it takes, until the test lets it go on: a
# signal meant to land mid-training does, on a machine so fast that 120 steps take a second
HOLD = {"ONECYCLE_FAULT": "step@30:SIGSTOP"}
STOPS = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}


def trains(runs: Path) -> list[int]:
    """The pid of every train run under `runs` (its meta.json says it)."""
    return [json.loads(p.read_text())["pid"] for p in sorted(runs.glob("*-train-*/meta.json"))]


def held(proc: subprocess.Popen, runs: Path, members: int) -> list[int]:
    """The trains of `members` members, once every one is held at its 30th step (HOLD)."""
    while proc.poll() is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids = trains(runs)
            if len(pids) == members and all(proc_state(pid) == "T" for pid in pids):
                return pids
        time.sleep(0.02)
    raise AssertionError(f"the grid ended (exit {proc.returncode}) before its members were held at step 30")


def signal_mid_training(proc: subprocess.Popen, runs: Path, sig: int, members: int = 2) -> None:
    """`sig` to `proc` (started with HOLD) while its members are held at step 30 of their 120; they go on
    once it has reached them (at once for a SIGKILL, which passes nothing on)."""
    pids = held(proc, runs, members)
    proc.send_signal(sig)
    if sig == signal.SIGKILL:
        proc.wait()
    go_on(pids, [] if sig == signal.SIGKILL else pids, STOPS)


def test_sigint_to_the_parent_then_resume_ends_as_an_uninterrupted_grid(tmp_path, long_reference):
    ref = long_reference
    cut = process("grid", *LONG, "--runs-dir", "cut", cwd=tmp_path, **HOLD)
    signal_mid_training(cut, tmp_path / "cut", signal.SIGINT)
    _, err = cut.communicate()
    assert cut.returncode == 130, err
    folder = next((tmp_path / "cut").glob("*-grid-*"))
    grid = json.loads((folder / "grid.json").read_text())
    assert grid["status"] == "interrupted"
    assert [(m["status"], m["exit_code"]) for m in grid["members"]] == [("interrupted", 130)] * 2, (
        err, [(folder / "members" / f"{m['index']}.log").read_text()[-1500:] for m in grid["members"]])
    for m in grid["members"]:  # each checkpointed as train does, where the signal found it
        summary = json.loads((Path(m["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["steps"] == 30
    resumed = process("grid", "--resume", folder, "--json", cwd=tmp_path)
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    done = json.loads(out)
    assert done["status"] == "completed"
    assert [m["resumed"] for m in done["members"]] == [1, 1]
    assert [m["run_dir"] for m in done["members"]] == [m["run_dir"] for m in grid["members"]]  # continued, not new
    assert [m["accuracy"] for m in done["members"]] == [m["accuracy"] for m in ref["members"]]
    assert finals(done) == finals(ref)  # bit-identical: the same losses to the last digit


# ------------------------------------------------------------------------------------------------
# refusals: one line, exit 2, nothing run

@pytest.mark.parametrize("args,fragments", [
    (["--vary", "schedule.foo=1,2"], ["member 1 of 2", "unknown key 'schedule.foo'"]),
    (["--vary", "train.batch_size=64,two"], ["member 2 of 2 (train.batch_size=two, seed 0)", "expected an integer"]),
    (["--vary", "train.batch_size=64,32,0"], ["member 3 of 3", "train.batch_size = 0", "expected a value > 0"]),
    (["--vary", "schedule.max_lr="], ["non-empty list"]),
    (["--vary", "schedule.max_lr=0.1,,0.2"], ["non-empty list"]),
    (["--vary", "schedule.max_lr=0.1,1e-1"], ["'1e-1' is the same value as '0.1'"]),
    (["--vary", "max_lr=0.1,0.2"], ["expected section.key=V1,V2,..."]),
    (["--vary", "train.batch_size=" + ",".join(map(str, range(1, 12))), "--seeds", "1000"],
     ["11,000 members", "more than the 10,000"]),
    (["--vary", "train.batch_size=32,64", "--vary", "train.batch_size=16"], ["given twice"]),
    (["--vary", "train.batch_size=32,64", "--set", "train.batch_size=16"], ["conflicting flags"]),
    (["--vary", "train.epochs=1,2"], ["conflicting flags", "--epochs"]),
    (["--vary", "schedule.max_lr=0.1,0.2", "--max-lr", "0.3"], ["conflicting flags"]),
    (["--vary", "train.seed=1,2"], ["--seeds"]),
    (["--seeds", "0,0"], ["--seeds"]),
    (["--around", "find", "--factors", "1,1"], ["--factors"]),
    (["--around", "find", "--vary", "schedule.max_lr=0.1,0.2"], ["--around find varies schedule.max_lr"]),
    (["--around", "valley"], ["--around 'valley'"]),
])
def test_a_bad_spec_is_one_line_and_nothing_runs(cli, tmp_path, args, fragments):
    assert_usage_error(cli("grid", *TINY, *args, "--runs-dir", tmp_path / "runs"), *fragments)
    assert not (tmp_path / "runs").exists()


def test_resume_takes_a_grid_directory_and_nothing_else(cli, tmp_path):
    assert_usage_error(cli("grid", "--resume", tmp_path), "not a grid directory")
    assert_usage_error(cli("grid", "--resume", tmp_path, "--vary", "train.batch_size=32,64"), "takes no --vary")


def alive(pid: int) -> bool:
    """Still running: not gone, and not a zombie that nobody has reaped yet (a container's init may not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_kill_9_of_the_parent_leaves_a_grid_that_resume_completes(tmp_path, long_reference):
    cut = process("grid", *LONG, "--runs-dir", "cut", cwd=tmp_path, **HOLD)
    signal_mid_training(cut, tmp_path / "cut", signal.SIGKILL)
    cut.communicate()
    folder = next((tmp_path / "cut").glob("*-grid-*"))
    grid = json.loads((folder / "grid.json").read_text())
    assert [m["status"] for m in grid["members"]] == ["running", "running"]
    # the members live on in their own sessions and finish their runs; --resume while one still trains
    # is refused, after that it finds them by the pids grid.json recorded
    while any(alive(m["pid"]) for m in grid["members"]):
        time.sleep(0.05)
    resumed = process("grid", "--resume", folder, "--json", cwd=tmp_path)
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    done = json.loads(out)
    assert "0 of 2 members to run" in err and done["status"] == "completed"
    assert [m["accuracy"] for m in done["members"]] == [m["accuracy"] for m in long_reference["members"]]
    assert finals(done) == finals(long_reference)


# ------------------------------------------------------------------------------------------------
# a cluster's job array: --count, --index K --grid-dir DIR from concurrent tasks, SIGUSR1, --collect

SPEC_2X2 = ["--vary", "schedule.max_lr=0.01,0.05", "--vary", "optim.weight_decay=0,0.1", "--seeds", "2"]


def task(*args: str, cwd, **env: str) -> subprocess.Popen:
    """`onecycle grid ARGS` as its own process at one torch thread (as the parent grid gives each of 2 members)."""
    return process("grid", *args, cwd=cwd, **{"OMP_NUM_THREADS": "1", **env})


def test_count_then_eight_concurrent_index_tasks_write_one_grid_equal_to_the_parents(tmp_path, grid_2x2, cli):
    counted = cli("grid", *TINY, *SPEC_2X2, "--count")
    assert counted.code == 0 and counted.stdout == "8\n", counted.stderr
    # all 8 started in the same instant, half by index and half as SLURM gives it: one grid directory, made by
    # whichever came first, every member recorded once
    tasks = [task(*TINY, *SPEC_2X2, "--runs-dir", tmp_path / "runs", "--grid-dir", tmp_path / "g", "--index",
                  "slurm" if k % 2 else k, cwd=tmp_path, SLURM_ARRAY_TASK_ID=str(k)) for k in range(8)]
    ended = [t.communicate() for t in tasks]
    assert [t.returncode for t in tasks] == [0] * 8, [err for _, err in ended]
    grid = json.loads((tmp_path / "g" / "grid.json").read_text())
    assert grid["status"] == "completed" and grid["counts"] == {"completed": 8}
    assert [m["attempts"] for m in grid["members"]] == [1] * 8
    assert len({m["run_dir"] for m in grid["members"]}) == 8
    # the same members, the same numbers as the parent's grid of the same spec
    parent = grid_2x2["grid"]
    assert [(m["texts"], m["seed"]) for m in grid["members"]] == [(m["texts"], m["seed"]) for m in parent["members"]]
    assert [m["accuracy"] for m in grid["members"]] == [m["accuracy"] for m in parent["members"]]
    assert [p["mean"] for p in grid["points"]] == [p["mean"] for p in parent["points"]]
    assert [r["status"] for r in rows(tmp_path / "g" / "grid.csv")] == ["completed"] * 8
    # --collect rebuilds every view from what is there
    for view in ("grid.csv", "grid.png", "report.html", "summary.json"):
        (tmp_path / "g" / view).unlink()
    collected = cli("grid", "--collect", tmp_path / "g", "--json")
    assert collected.code == 0, collected.stderr
    assert collected.json()["points"] == grid["points"]
    assert len(rows(tmp_path / "g" / "grid.csv")) == 8 and (tmp_path / "g" / "grid.png").stat().st_size > 20_000
    assert (tmp_path / "g" / "report.html").read_text().count('href="') == 8
    # a task run again for a member already done does nothing, and says so
    again = cli("grid", *TINY, *SPEC_2X2, "--runs-dir", tmp_path / "runs", "--grid-dir", tmp_path / "g",
                "--index", "3")
    assert again.code == 0 and "already completed, nothing to run" in again.stderr
    # a task of another grid never writes into this one
    assert_usage_error(cli("grid", *TINY, *SPEC_2X2, "--set", "optim.momentum=0.8", "--grid-dir", tmp_path / "g",
                           "--index", "0"), "holds another grid", "sets")


def test_a_grid_whose_tasks_have_not_all_run_collects_as_incomplete(tmp_path, cli):
    one = task(*TINY, "--vary", "schedule.max_lr=0.01,0.05", "--runs-dir", "runs", "--grid-dir", "g", "--index", "1",
               cwd=tmp_path)
    _, err = one.communicate()
    assert one.returncode == 0, err
    collected = cli("grid", "--collect", tmp_path / "g", "--json")
    assert collected.code == 1, collected.stderr
    grid = collected.json()
    assert grid["status"] == "incomplete" and [m["status"] for m in grid["members"]] == ["pending", "completed"]
    assert [r["status"] for r in rows(tmp_path / "g" / "grid.csv")] == ["pending", "completed"]


def test_sigusr1_checkpoints_a_task_and_the_same_command_continues_it_exactly(tmp_path, long_reference):
    # member 0 of the long grid (max_lr 0.01), as an array task; sbatch --signal=USR1@90 before the time limit
    args = [a for a in LONG if a not in ("--parallel", "2")] + ["--runs-dir", "runs", "--grid-dir", "g", "--index", "0"]
    cut = task(*args, cwd=tmp_path, **HOLD)
    signal_mid_training(cut, tmp_path / "runs", signal.SIGUSR1, members=1)
    _, err = cut.communicate()
    assert cut.returncode == 138, err
    m = json.loads((tmp_path / "g" / "grid.json").read_text())["members"][0]
    assert m["status"] == "interrupted" and m["exit_code"] == 138
    assert 30 <= json.loads((Path(m["run_dir"]) / "summary.json").read_text())["steps"] < 120
    again = task(*args, cwd=tmp_path)
    _, err = again.communicate()
    assert again.returncode == 0, err
    grid = json.loads((tmp_path / "g" / "grid.json").read_text())
    done = grid["members"][0]
    assert done["status"] == "completed" and done["resumed"] == 1 and done["run_dir"] == m["run_dir"]
    assert done["accuracy"] == long_reference["members"][0]["accuracy"]
    assert finals({"members": [done]}) == finals(long_reference)[:1]  # bit-identical to the uninterrupted member


def test_the_submitit_local_executor_runs_the_members_and_requeues_a_preempted_one(tmp_path, long_reference):
    """--launcher local: submitit's own local executor, real processes. Its preemption signal (SIGUSR2) to the
    task of member 0 mid-training: the member checkpoints, submitit requeues the task, the member continues."""
    pytest.importorskip("submitit")
    args = [a for a in LONG if a not in ("--parallel", "2")] + ["--runs-dir", "runs", "--launcher", "local",
                                                                "--grid-dir", "g", "--json"]
    parent = task(*args, cwd=tmp_path, **HOLD)
    pids = held(parent, tmp_path / "runs", 2)
    train = json.loads((tmp_path / "g" / "grid.json").read_text())["members"][0]["pid"]
    task_pid = parent_of(parent_of(train))  # train <- grid --index 0 <- submitit's task process
    assert "submitit" in Path(f"/proc/{task_pid}/cmdline").read_text()
    os.kill(task_pid, signal.SIGUSR2)
    go_on(pids, [train], STOPS)
    while parent.poll() is None:  # the requeued member holds at the 30th step it takes: let it go on
        with contextlib.suppress(OSError, ValueError, KeyError):
            grid = json.loads((tmp_path / "g" / "grid.json").read_text())
            go_on([m["pid"] for m in grid["members"] if m.get("pid") and proc_state(m["pid"]) == "T"], [], STOPS)
        time.sleep(0.05)
    out, err = parent.communicate()
    assert parent.returncode == 0, err
    grid = json.loads(out)
    assert "as local jobs, at most 2 at a time" in err, err
    assert "member 0 (schedule.max_lr=0.01, seed 0): interrupted (exit 138)" in err, err
    assert [(m["status"], m["resumed"], m["attempts"]) for m in grid["members"]] == [("completed", 1, 2),
                                                                                      ("completed", 0, 1)]
    assert [m["accuracy"] for m in grid["members"]] == [m["accuracy"] for m in long_reference["members"]]
    assert finals(grid) == finals(long_reference)


def test_sigint_to_a_launcher_parent_cancels_the_jobs_and_the_members_checkpoint(tmp_path):
    pytest.importorskip("submitit")
    args = [a for a in LONG if a not in ("--parallel", "2")]
    parent = task(*args, "--runs-dir", "runs", "--launcher", "local", "--grid-dir", "g", cwd=tmp_path, **HOLD)
    signal_mid_training(parent, tmp_path / "runs", signal.SIGINT)
    _, err = parent.communicate()
    assert parent.returncode == 130, err
    grid = json.loads((tmp_path / "g" / "grid.json").read_text())
    # told by its task's SIGINT (130) or, if the controller killed the task first, by its death (143)
    assert [m["status"] for m in grid["members"]] == ["interrupted"] * 2, err
    assert {m["exit_code"] for m in grid["members"]} <= {130, 143}, err
    for m in grid["members"]:  # each checkpointed mid-run, as a Ctrl-C'd train does
        summary = json.loads((Path(m["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["steps"] == 30
        assert (Path(m["run_dir"]) / "checkpoints" / "last.pt").is_file()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("args,fragments", [
    (["--index", "0"], ["give --grid-dir DIR"]),
    (["--index", "2", "--grid-dir", "{tmp}/g"], ["--index '2'", "from 0 to 1"]),
    (["--index", "x", "--grid-dir", "{tmp}/g"], ["--index 'x'"]),
    (["--index", "slurm", "--grid-dir", "{tmp}/g"], ["SLURM_ARRAY_TASK_ID is not set"]),
    (["--index", "0", "--grid-dir", "{tmp}/g", "--parallel", "2"], ["--parallel"]),
    (["--index", "0", "--count"], ["conflicting flags"]),
    (["--grid-dir", "{tmp}/g"], ["--grid-dir names", "--index"]),
    (["--slurm", "partition=gpu"], ["--launcher slurm"]),
    (["--launcher", "pbs"], ["--launcher 'pbs'"]),
    (["--launcher", "local", "--slurm", "gpus"], ["--slurm 'gpus'", "KEY=VALUE"]),
    (["--launcher", "local", "--slurm", "frobnicate=1"], ["--slurm"]),
])
def test_a_bad_array_or_launcher_flag_is_one_line_and_nothing_runs(cli, tmp_path, args, fragments):
    env = {k: None for k in os.environ if k.startswith(("ONECYCLE", "SLURM"))}
    r = cli("grid", *TINY, "--vary", "schedule.max_lr=0.01,0.05", "--runs-dir", tmp_path / "runs",
            *[a.format(tmp=tmp_path) for a in args], env=env)
    assert_usage_error(r, *fragments)
    assert not (tmp_path / "g").exists() and not list((tmp_path / "runs").glob("*/members"))


def test_a_grid_directory_that_is_a_link_is_refused(cli, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "g").symlink_to(tmp_path / "elsewhere")
    assert_usage_error(cli("grid", *TINY, "--vary", "schedule.max_lr=0.01,0.05", "--grid-dir", tmp_path / "g",
                           "--index", "0"), "symbolic link")
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert_usage_error(cli("grid", "--collect", tmp_path / "g"), "no such grid directory")
    assert_usage_error(cli("grid", "--collect", tmp_path / "elsewhere"), "not a grid directory")


def test_a_running_members_live_line_reads_its_own_logs_and_never_a_half_written_row(grid_2x2, tmp_path):
    from onecycle_cli.grid.launch import epochs_of, progress_text
    run = Path(grid_2x2["grid"]["members"][0]["run_dir"])
    done, info = progress_text(run)
    last = rows(run / "metrics.csv")[-1]
    assert done == 1 == epochs_of(run) and f"accuracy {float(last['accuracy']):.4f}" in info and "step 10" in info
    # a copy mid-write: the step row being appended is cut short, the epoch row not yet there
    (tmp_path / "steps.csv").write_text((run / "steps.csv").read_text() + "11,0,0.01,0.9,0.5")
    (tmp_path / "metrics.csv").write_text((run / "metrics.csv").read_text().splitlines()[0] + "\n")
    assert progress_text(tmp_path) == (0, info.split(", accuracy")[0])
    assert progress_text(tmp_path / "not-yet") == (0, "starting") and epochs_of(tmp_path) is None
