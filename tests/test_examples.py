"""examples/: the scripts a new user copies, run as they are (the real data, the real CLI)."""

from __future__ import annotations

import json
import subprocess

from conftest import REPO, env_running_this_onecycle


def test_mnist_sample_example_compares_1cycle_with_a_constant_lr(tmp_path):
    env = env_running_this_onecycle(tmp_path / "bin")
    root = tmp_path / "runs"
    p = subprocess.run(["bash", str(REPO / "examples" / "mnist_sample.sh"), str(root)], capture_output=True,
                       text=True, env=env, timeout=300, cwd=tmp_path)
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
    assert "schedule.name" in table and f"{one['final_accuracy']:.4f}" in table
    assert f"{const['final_accuracy']:.4f}" in table
