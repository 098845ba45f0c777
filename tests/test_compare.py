"""`onecycle compare`: 1cycle against a constant LR, the experiment everyone runs first."""

from __future__ import annotations

import json
import shutil

from conftest import assert_usage_error

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_compare_names_only_the_setting_that_differs_and_reads_the_results(cli, tiny_runs, tmp_path):
    one, const = tiny_runs["onecycle"], tiny_runs["constant"]
    r = cli("compare", one, const, "--runs-dir", tmp_path / "out", "--json")
    assert r.code == 0, r.stderr
    summary = r.json()
    assert summary["command"] == "compare" and summary["status"] == "completed"
    # the two runs differ by --schedule constant alone; everything else is shared and not shown
    assert summary["differing"] == {"schedule.name": ["onecycle", "constant"]}
    assert summary["shared"]["schedule.max_lr"] == 0.05 and summary["shared"]["train.epochs"] == 2
    s = tiny_runs["summaries"]
    for run, key in zip(summary["runs"], ("onecycle", "constant")):
        assert run["path"] == str(tiny_runs[key]) and run["status"] == "completed"
        assert run["final_accuracy"] == s[key]["final"]["accuracy"]
        assert run["best_accuracy"] == s[key]["best"]["accuracy"]
        assert run["final_valid_loss"] == s[key]["final"]["valid_loss"]
        assert run["wall_seconds"] == s[key]["wall_seconds"]
    assert [run["label"] for run in summary["runs"]] == ["onecycle", "constant"]

    # a directory of its own under the runs root, named like the runs
    out = tmp_path / "out"
    [made] = list(out.iterdir())
    assert made.name.endswith("-compare-2runs") and str(made) == summary["run_dir"]
    assert json.loads((made / "summary.json").read_text()) == summary
    png = (made / "compare.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 20_000  # four panels of curves, not an empty figure
    assert (made / "report.html").is_file()

    # the side-by-side table: the differing key, both values, both accuracies as printed
    table = r.stderr
    assert "schedule.name" in table and "onecycle" in table and "constant" in table
    for key in ("onecycle", "constant"):
        assert tiny_runs[key].name in table
        assert f"{100 * s[key]['final']['accuracy']:.2f}%" in table  # in percent, as the README quotes a run
    assert "optim.name" not in table  # shared settings are not repeated


def test_compare_takes_run_ids_from_the_runs_root(cli, tiny_runs, tmp_path):
    root = tmp_path / "runs"
    for key in ("onecycle", "constant"):
        shutil.copytree(tiny_runs[key], root / tiny_runs[key].name)
    r = cli("compare", tiny_runs["onecycle"].name, tiny_runs["constant"].name, "--json",
            env={"ONECYCLE_RUNS": str(root)})
    assert r.code == 0, r.stderr
    assert [run["path"] for run in r.json()["runs"]] == [str(root / tiny_runs[k].name)
                                                         for k in ("onecycle", "constant")]
    assert r.json()["run_dir"].startswith(str(root))
    # the comparison is listed with the runs, and is not itself a run to compare
    assert "compare" in [row["command"] for row in json.loads(cli("runs", root, "--json").stdout)]
    assert_usage_error(cli("compare", r.json()["run_dir"], root / tiny_runs["onecycle"].name),
                       "is a comparison, not a run")


def test_last_n_compares_the_newest_train_runs_oldest_first(cli, tiny_runs, tmp_path):
    root = tmp_path / "runs"
    for key in ("find", "onecycle", "constant"):  # a range test among them is no fit to compare
        shutil.copytree(tiny_runs[key], root / tiny_runs[key].name)
    r = cli("compare", "--last", "2", "--json", env={"ONECYCLE_RUNS": str(root)})
    assert r.code == 0, r.stderr
    assert [run["path"] for run in r.json()["runs"]] == [str(root / tiny_runs[k].name)
                                                         for k in ("onecycle", "constant")]
    assert list(r.json()["differing"]) == ["schedule.name"]
    assert_usage_error(cli("compare", "--last", "3", env={"ONECYCLE_RUNS": str(root)}), "--last 3", "2 train run")
    assert_usage_error(cli("compare", "x", "--last", "2", env={"ONECYCLE_RUNS": str(root)}), "conflicting")


def test_compare_refuses_bad_arguments_before_writing_anything(cli, tiny_runs, tmp_path):
    one = tiny_runs["onecycle"]
    assert_usage_error(cli("compare", one), "at least two runs")
    assert_usage_error(cli("compare"), "at least two runs, got 0", "--last 2")
    assert_usage_error(cli("compare", one, "nowhere"), "nowhere", "no such run directory")
    (tmp_path / "empty").mkdir()
    assert_usage_error(cli("compare", one, "empty"), "empty", "not a onecycle run directory")
    assert_usage_error(cli("compare", one, one), "give each run once")
    assert not (tmp_path / "runs").exists()
