"""`onecycle runs`: past runs newest first, the crashed and unfinished ones shown as such."""

from __future__ import annotations

import json
import os
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
    assert (one["schedule"], const["schedule"]) == ("onecycle", "constant")
    assert one["max_lr"] == 0.05 and one["epochs"] == 2 and one["status"] == "completed"
    assert one["best_accuracy"] == s["onecycle"]["best"]["accuracy"] > 0.5
    assert one["wall_seconds"] == s["onecycle"]["wall_seconds"]
    # a range test has no epochs; its max_lr is the suggestion train --max-lr would take
    assert find["command"] == "find" and find["epochs"] is None
    assert find["max_lr"] == s["find"]["suggestion"]["lr"]

    table = cli("runs", tiny_runs["root"]).stderr
    for r in rows:
        assert r["id"] in table  # whole, not cut to the terminal's width
    assert f"{s['onecycle']['best']['accuracy']:.4f}" in table and "completed" in table


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
