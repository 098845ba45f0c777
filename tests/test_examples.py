"""examples/: the scripts a new user copies, run as they are (the real data, the real CLI)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, env_running_this_onecycle


def test_mnist_sample_example_compares_1cycle_with_a_constant_lr(tmp_path):
    env = env_running_this_onecycle(tmp_path / "bin")
    root = tmp_path / "runs"
    p = subprocess.run(["bash", str(REPO / "examples" / "mnist_sample.sh"), str(root)], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]

    made = sorted(d.name.split("-")[2] for d in root.iterdir())
    assert made == ["compare", "find", "train", "train"]
    [compare] = [d for d in root.iterdir() if "-compare-" in d.name]
    summary = json.loads((compare / "summary.json").read_text())
    assert summary["differing"] == {"schedule.name": ["onecycle", "constant"]}
    one, const = summary["runs"]
    assert one["label"] == "onecycle" and one["status"] == "completed" and one["epochs_done"] == 2
    assert one["final_accuracy"] > 0.98  # fastai's docs: 99.3% with fit_one_cycle(2, 5e-2)
    # it ends with the comparison table, 1cycle's accuracy in it as printed
    table = p.stderr[p.stderr.rindex("the settings that differ"):]
    assert "schedule.name" in table and f"{100 * one['final_accuracy']:.2f}%" in table  # as the README quotes it
    assert f"{100 * const['final_accuracy']:.2f}%" in table


def test_transfer_example_runs_every_arm_through_the_cli(tmp_path, shared_data):
    # the smoke run of issue 11's transfer experiment: tiny sizes, 2 seeds, every step of the real one
    if not (shared_data / "FashionMNIST" / "raw").is_dir():
        pytest.skip("no Fashion-MNIST in ../shared/data")
    work = tmp_path / "work"
    p = subprocess.run([sys.executable, str(REPO / "examples" / "transfer.py"), "--quick", "--work", str(work),
                        "--data-root", str(shared_data)], capture_output=True, text=True, cwd=tmp_path,
                       env=env_running_this_onecycle(tmp_path / "bin"))
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads(p.stdout)
    assert s == json.loads((work / "summary.json").read_text())
    target = ["ankle_boot", "bag", "sandal", "shirt", "sneaker"]  # sorted, as onecycle orders class folders
    assert sorted(path.name for path in (work / "target" / "train").iterdir()) == target
    assert len(list((work / "target" / "valid" / "bag").iterdir())) == s["sizes"]["target_valid"]

    def summary(run_dir: str) -> dict:
        return json.loads((Path(run_dir) / "summary.json").read_text())

    finds = {k: f["suggestion"]["lr"] for k, f in s["range_tests"].items()}
    lr_from = {"a": "random", "b": "frozen", "c": "fine_tune", "d": "unfrozen", "e": "unfrozen", "f": "fine_tune"}
    assert list(s["arms"]) == list(lr_from)
    for key, arm in s["arms"].items():
        runs = arm["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        accuracies = [r["accuracy"] for r in runs]
        assert arm["accuracy_mean"] == pytest.approx(statistics.fmean(accuracies))
        assert arm["accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
        for r in runs:
            dirs = r["run_dir"] if key == "d" else [r["run_dir"]]
            made = [summary(d) for d in dirs]
            assert all(m["status"] == "completed" and m["max_lr"] == finds[lr_from[key]] for m in made), key
            assert sum(m["epochs"] for m in made) == 4, key  # the same total on the target for every arm
            assert made[-1]["final"]["accuracy"] == r["accuracy"]
            # the source's 5 classes are not the target's: every pretrained arm starts with a new head
            assert r["head"] == (None if key == "a" else "starts afresh: the classes differ (the weights': "
                                 "coat, dress, pullover, t-shirt_top, trouser; this data's: " + ", ".join(target) + ")")
        assert f"({key}) {arm['name']}" in p.stderr  # the table
    # two short cycles: the second continues the first, head included (the same classes)
    assert all(r["second_head"] == "taken: the same 5 classes (" + ", ".join(target) + ")"
               for r in s["arms"]["d"]["runs"])
    # each range test swept as `train --max-lr find` sweeps its arms: (b) the head alone, (c) and (f) the whole
    # network at fine_tune's lr_mult, the arm trained at that curve's lowest point
    swept = {k: summary(f["run_dir"]) for k, f in s["range_tests"].items()}
    assert [(swept[k]["frozen"], swept[k]["fine_tune"]) for k in ("frozen", "fine_tune")] == [(True, False),
                                                                                             (False, True)]
    assert swept["fine_tune"]["group_ratios"][0] < 0.02 < swept["frozen"]["group_ratios"][0]
    # head only: one frozen cycle, and the body's convolutions are the pretrained run's to the end
    run = Path(s["arms"]["b"]["runs"][0]["run_dir"])
    assert [(c["name"], c["frozen"]) for c in summary(run)["cycles"]] == [("frozen", True)]
    end = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    source = torch.load(Path(s["pretrained"]["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    norms = {k.rsplit(".", 1)[0] for k in end if k.endswith("running_mean")}
    convs = [k for k in end if k.rsplit(".", 1)[0] not in norms and not k.startswith("head.")]
    assert len(convs) == 19 and all(torch.equal(end[k], source[k]) for k in convs)  # resnet20: 19 convolutions
    assert not torch.equal(end["head.2.weight"], source["head.2.weight"])
