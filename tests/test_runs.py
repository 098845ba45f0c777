"""`onecycle runs`: past runs newest first, the crashed and unfinished ones shown as such."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, assert_usage_error


def listing(cli, *args, env=None) -> list[dict]:
    r = cli("runs", *args, "--json", env=env)
    assert r.code == 0, r.stderr
    return r.json()


def test_runs_lists_every_run_newest_first_with_its_numbers(cli, tiny_runs):
    rows = listing(cli, tiny_runs["root"])
    s = tiny_runs["summaries"]
    assert [r["id"] for r in rows] == [tiny_runs[k].name for k in ("constant", "onecycle", "find")]
    by_id = {r["id"]: r for r in rows}
    one, const, find = (by_id[tiny_runs[k].name] for k in ("onecycle", "constant", "find"))
    assert (one["command"], one["config"], one["dataset"], one["model"]) == ("train", "mnist_sample", "mnist_sample",
                                                                             "simple_cnn")
    assert (one["schedule"], one["shape"], const["schedule"], const["shape"]) == ("onecycle", "fastai", "constant",
                                                                                   None)
    assert one["max_lr"] == 0.05 and one["epochs"] == 2 and one["status"] == "completed"
    assert one["best_accuracy"] == s["onecycle"]["best"]["accuracy"] > 0.5
    assert one["final_accuracy"] == s["onecycle"]["final"]["accuracy"]  # --json keeps the fraction, a number
    assert one["wall_seconds"] == s["onecycle"]["wall_seconds"]
    # a range test has no epochs; its max_lr is the suggestion train --max-lr would take
    assert find["command"] == "find" and find["epochs"] is None and find["schedule"] is None
    assert find["max_lr"] == s["find"]["suggestion"]["lr"]

    table = cli("runs", tiny_runs["root"]).stderr
    lines = {r["id"]: next(line for line in table.splitlines() if line.startswith(r["id"] + " ")) for r in rows}
    for r in rows:
        assert r["id"] in table  # whole, not cut to the terminal's width
    # the schedule, and the final accuracy in percent as the README quotes a run (99.36%)
    for key, schedule in (("onecycle", "1cycle (fastai)"), ("constant", "constant")):
        line, final = lines[tiny_runs[key].name], s[key]["final"]["accuracy"]
        assert schedule in line and f" {100 * final:.2f}% " in line and "completed" in line
    assert "range test" in lines[tiny_runs["find"].name] and "%" not in lines[tiny_runs["find"].name]


def on_a_terminal(*args: str, columns: int) -> str:
    """What `onecycle ARGS` shows a person whose terminal is `columns` wide: stderr on a pseudo-terminal."""
    import fcntl
    import pty
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE") and k != "COLUMNS"}
    env.update(PYTHONPATH=str(REPO), TERM="xterm-256color")
    p = subprocess.Popen([sys.executable, "-m", "onecycle_cli", *args], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the command has exited and closed its end
            break
        if not chunk:
            break
        out += chunk
    assert p.wait() == 0, out.decode(errors="replace")
    os.close(master)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode()).replace("\r", "")


def test_runs_on_an_80_column_terminal_shows_whole_ids_schedules_and_accuracies(tiny_runs):
    s = tiny_runs["summaries"]
    shown = on_a_terminal("runs", str(tiny_runs["root"]), columns=80)
    lines = shown.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in shown  # nothing cut to fit
    for key in ("find", "onecycle", "constant"):
        [line] = [line for line in lines if line.startswith(tiny_runs[key].name + " ")]  # the id whole, to copy
        assert "completed" in line
    onecycle = next(line for line in lines if line.startswith(tiny_runs["onecycle"].name))
    assert "1cycle" in onecycle and f"{100 * s['onecycle']['final']['accuracy']:.2f}%" in onecycle
    assert "not shown at 80 columns: command, config, dataset/model" in " ".join(shown.split())
    # a wide terminal has room for every column, and says nothing is missing
    wide = on_a_terminal("runs", str(tiny_runs["root"]), columns=200)
    assert "dataset/model" in wide and "mnist_sample/simple_cnn" in wide and "not shown" not in wide


def test_runs_looks_where_train_writes(cli, tiny_runs, tmp_path):
    ids = [r["id"] for r in listing(cli, tiny_runs["root"])]
    assert [r["id"] for r in listing(cli, "--runs-dir", tiny_runs["root"])] == ids
    assert [r["id"] for r in listing(cli, env={"ONECYCLE_RUNS": str(tiny_runs["root"])})] == ids
    (tmp_path / "runs").mkdir()  # the default root, relative to the working directory
    r = cli("runs", "--json")
    assert r.code == 0 and r.json() == [] and "no runs in runs" in r.stderr


def _copy(run: Path, root: Path, name: str) -> Path:
    dest = root / name
    shutil.copytree(run, dest)
    return dest


def test_a_killed_run_shows_running_while_alive_and_crashed_after_kill_9(cli, tmp_path):
    root = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # long enough never to finish on its own: it is killed as soon as it is under way
    p = subprocess.Popen([sys.executable, "-m", "onecycle_cli", "train", "--config", "mnist_sample", "--epochs", "50",
                          "--runs-dir", str(root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        summaries = []
        while p.poll() is None and not summaries:  # the run writes it within its first seconds; no deadline
            summaries = list(root.glob("*/summary.json"))
            time.sleep(0.2)
        assert summaries, "the run never wrote its summary"
        assert json.loads(summaries[0].read_text())["status"] == "running"
        [row] = listing(cli, root)
        assert row["status"] == "running"
    finally:
        p.kill()
        p.wait()
    assert json.loads(summaries[0].read_text())["status"] == "running"  # what the dead run left says
    [row] = listing(cli, root)
    assert row["status"] == "crashed" and row["command"] == "train"
    assert "crashed" in cli("runs", root).stderr


def test_unfinished_and_unreadable_runs_are_listed_never_hidden(cli, tiny_runs, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    # a run that died before writing any summary: only its config.yaml
    early = root / "20200101-000001-train-early"
    early.mkdir()
    shutil.copy(tiny_runs["onecycle"] / "config.yaml", early)
    # a summary that cannot be parsed (a foreign tool, a full disk)
    broken = _copy(tiny_runs["onecycle"], root, "20200101-000002-train-broken")
    (broken / "summary.json").write_text('{"status": "comp')
    # a summary that says running, with no lock file at all (copied from another box)
    copied = _copy(tiny_runs["onecycle"], root, "20200101-000003-train-copied")
    (copied / ".lock").unlink()
    summary = json.loads((copied / "summary.json").read_text())
    (copied / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    # what is not a run is left out, without complaint
    (root / "notes.txt").write_text("not a run")
    (root / "empty").mkdir()
    (root / ".hidden").mkdir()

    rows = listing(cli, root)
    status = {r["id"]: r["status"] for r in rows}
    assert status == {early.name: "incomplete", broken.name: "unreadable", copied.name: "crashed"}
    assert [r["id"] for r in rows] == [copied.name, broken.name, early.name]
    row = {r["id"]: r for r in rows}[early.name]  # what the config says is still shown
    assert (row["command"], row["dataset"], row["max_lr"], row["epochs"]) == ("train", "mnist_sample", 0.05, 2)


def test_runs_refuses_a_missing_directory(cli, tmp_path):
    assert_usage_error(cli("runs", "nowhere"), "nowhere", "no such directory")
    (tmp_path / "file").write_text("x")
    assert_usage_error(cli("runs", "file"), "not a directory")
    (tmp_path / "runs").mkdir()
    assert_usage_error(cli("runs", "runs", "--runs-dir", "runs"), "give one")
