"""benchmarks/, examples/ and scripts/: each script's smallest run (`--smoke`), as a real process, on the
real data where ../shared/data is beside this checkout and on the synthetic path where it is not.

A benchmark is run rarely and by hand, so what breaks it (a name that moved out of a module, a renamed
summary key) used to go unnoticed until the next person ran it: `speed.py` died on `read_idx` whenever
real MNIST was at hand. Each case here runs the whole path of one script in seconds and checks the
numbers a reader of its JSON relies on; the numbers themselves are not evidence at these sizes.
examples/mnist_sample.sh and examples/transfer.py run in test_examples.py.
"""

from __future__ import annotations

import ast
import gzip
import importlib
import importlib.util
import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA
from onecycle_cli.suggest import RULES

MNIST = (SHARED_DATA / "MNIST" / "raw").is_dir()
FASHION = (SHARED_DATA / "FashionMNIST" / "raw").is_dir()
# a python with fastai installed (../shared/peers/README.md), for fastai's side of fastai_replay.py and peers.py
FASTAI_PYTHON = os.environ.get("FASTAI_PYTHON")


def run(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    """A script as its user runs it: this checkout's onecycle, one torch thread (the cores are shared), temporary
    files under the test's own folder; exit 0 or the test fails with its stderr. No timeout: a loaded machine is
    slow, not stuck."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", TMPDIR=str(cwd))
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd)
    assert p.returncode == 0, f"{' '.join(map(str, argv))}: exit {p.returncode}\n{p.stderr[-3000:]}"
    return p


def script(path: str, *args, python: str = sys.executable, cwd: Path) -> tuple[dict, str]:
    """(the JSON object a script printed last on stdout, its stderr)."""
    p = run([python, REPO / path, *args], cwd)
    return json.loads(p.stdout[p.stdout.index("{"):]), p.stderr


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def fraction(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1


def data(tmp: Path) -> Path:
    """--data: the real sets where they are, else a folder without them (the scripts' synthetic path)."""
    return SHARED_DATA if MNIST else tmp / "no-data"


# ------------------------------------------------------------------------------------------------
# one check per script: run its smallest mode and read what a reader of its JSON reads


def check_speed(tmp: Path) -> None:
    out, _ = script("benchmarks/speed.py", "--smoke", "--data", data(tmp), "--runs", tmp / "runs", cwd=tmp)
    assert out["smoke"] is True
    [row] = out["results"]
    assert (row["device"], row["model"], row["steps"], row["batch_size"]) == ("cpu", "simple_cnn", 4, 16)
    assert row["data"] == (f"MNIST from {SHARED_DATA}" if MNIST else "random uint8 images")
    for side in ("onecycle", "reference"):
        assert "error" not in row[side], row[side]
        assert positive(row[side]["images_per_s"]) and positive(row[side]["peak_host_mb"]), row[side]
    assert row["onecycle"]["train_images"] == 64
    assert positive(row["ratio"]) and positive(row["onecycle_seconds_per_epoch"])


def check_loader(tmp: Path) -> None:
    out, _ = script("benchmarks/loader.py", "--smoke", cwd=tmp)
    assert (out["smoke"], out["images"], out["batch_size"]) == (True, 1024, 64)
    for key in ("onecycle_images_per_s", "torchvision_pil_images_per_s", "torchvision_tensor_images_per_s",
                "ratio_vs_faster_torchvision"):
        assert positive(out[key]), (key, out[key])


def check_overhead(tmp: Path) -> None:
    out, _ = script("benchmarks/overhead.py", "--smoke", "--data", data(tmp), "--work", tmp / "work", cwd=tmp)
    assert out["smoke"] is True
    assert (out["dataset"], out["device"], out["steps"], out["rounds"]) == ("mnist" if MNIST else "synthetic",
                                                                           "cpu", 8, 1)
    assert positive(out["ratio"]) and positive(out["onecycle_train_seconds"]) and positive(out["bare_seconds"])
    assert positive(out["onecycle_final_train_loss"]) and positive(out["bare_last_batch_loss"])


def check_folder(tmp: Path) -> None:
    if not FASHION:
        pytest.skip(f"no Fashion-MNIST in {SHARED_DATA}: folder.py writes its images from it")
    out, _ = script("benchmarks/folder.py", "--smoke", "--data", SHARED_DATA, "--work", tmp / "work", cwd=tmp)
    assert out["smoke"] is True and "errors" not in out
    assert out["rounds_raw"]["decode"][0]["images"] == out["rounds_raw"]["decode_reference"][0]["images"] == 200
    assert out["rounds_raw"]["decode"][0]["load_status"] == "hit"  # the second run reads the first one's cache
    for part in ("decode", "train"):
        assert positive(out[part]["ratio"]), out[part]
        assert positive(out[part]["onecycle_images_per_s"]) and positive(out[part]["reference_images_per_s"])
    assert out["load_seconds"] >= 0


def check_peers(tmp: Path) -> None:
    if not MNIST:
        pytest.skip(f"no MNIST in {SHARED_DATA}: the peers' programs read it")
    fastai = ["--fastai-python", FASTAI_PYTHON] if FASTAI_PYTHON else []
    out, err = script("benchmarks/peers.py", "--smoke", "--data", SHARED_DATA, "--work", tmp / "work", *fastai,
                      cwd=tmp)
    assert out["smoke"] is True and out["repeats"] == 1
    for key in ("p1_accuracy", "p2_accuracy"):
        assert fraction(out["bare"][key])
    ours = out["onecycle"]
    for key in ("p1_one_cycle_accuracy", "p1_constant_accuracy", "p2_accuracy"):
        assert fraction(ours[key]), (key, ours[key])
    at_default = ours["p1_at_default_suggestion"]  # trained at the range test's suggestion: `--max-lr RUN_DIR`
    assert fraction(at_default["accuracy"]) and positive(at_default["max_lr"])
    for key in ("find_process_seconds", "find_sweep_seconds", "p1_train_seconds", "p2_train_seconds"):
        assert positive(ours[key]), (key, ours[key])
    assert positive(out["ratios"]["p1_train_vs_bare"]) and positive(out["ratios"]["p2_train_vs_bare"])
    if FASTAI_PYTHON:
        assert all(positive(v) for v in out["ratios"].values()), out["ratios"]
        assert fraction(out["fastai"]["p1_one_cycle_accuracy"]) and fraction(out["fastai"]["p2_accuracy"])
    else:
        assert "fastai" not in out and "fastai's side is skipped" in err


def check_startup(tmp: Path) -> None:
    commands = runpy.run_path(str(REPO / "benchmarks" / "startup.py"))["COMMANDS"]
    out, _ = script("benchmarks/startup.py", "--smoke", "--data", data(tmp), cwd=tmp)
    assert out["smoke"] is True and out["rounds"] == 1
    real = "data check --config mnist (../shared/data)"
    assert set(out["commands"]) == set(commands) | ({real} if MNIST else set())
    for name, r in out["commands"].items():
        assert positive(r["median_s"]) and positive(r["x_floor"]), (name, r)
        assert isinstance(r["heavy_imports"], list) and r["meets_target"] in (True, False, None)
    assert positive(out["floor_python_pass_s"]) and positive(out["python_import_torch_s"])
    assert isinstance(out["all_meet_target"], bool) and isinstance(out["none_import_heavy"], bool)


def check_suggest(tmp: Path) -> None:
    out, _ = script("benchmarks/suggest.py", "--smoke", "--data", data(tmp), "--out", tmp / "suggest.jsonl",
                    "--thread-study", "2", cwd=tmp)
    task = "mnist/adamw" if MNIST else "mnist_sample/adamw"
    # the range test again at 2 threads, the default trained at its suggestion there
    study, default = out["thread_study"][task], f"onecycle:{out['default_rule']}"
    assert study["lrs_1_thread"] == out["tasks"][task]["rules"][default]["lrs"]  # the same 1-thread curve's
    assert len(study["lrs_2_threads"]) == 1 and positive(study["lrs_2_threads"][0])
    assert study["largest_ratio"] == pytest.approx(max(study["ratios"][0], 1 / study["ratios"][0]))
    assert out["smoke"] is True and out["complete_tasks"] == [task]
    t = out["tasks"][task]
    assert len(t["grid"]) == 2 and fraction(t["best"]["accuracy"]) and positive(t["best"]["max_lr"])
    for rule, r in t["rules"].items():
        assert r["accuracy"] is None or (fraction(r["accuracy"]) and all(positive(lr) for lr in r["lrs"])), rule
    assert out["mean_regret"] and all(math.isfinite(v) for v in out["mean_regret"].values())
    assert out["default_rule"] in RULES
    journal = [json.loads(line) for line in (tmp / "suggest.jsonl").read_text().splitlines()]
    assert [r.get("threads") for r in journal if r["kind"] == "curve"] == [1, 2]
    # a folder task: suggest_data.py writes the README's folder with the README's command, and every rule
    # (floor, the new one, among them) is read off its curve
    out, _ = script("benchmarks/suggest.py", "--smoke", "--tasks", "folder/digits", "--out", tmp / "f" / "s.jsonl",
                    cwd=tmp)
    t = out["tasks"]["folder/digits"]
    assert t["half"] == "dev" and fraction(t["rules"]["onecycle:floor"]["accuracy"])
    assert len(list((tmp / "f" / "suggest-work" / "digits-smoke" / "train" / "3").glob("*.png"))) > 10
    if FASHION:  # a fine_tune task: a source body pretrained once, two sweeps a seed, each tool's rules on its own
        check_suggest_fine_tune(tmp / "ft")


def suggest_benchmark():
    """benchmarks/suggest.py as a module (as test_fastai_rules.py loads it), to read its journal as it does."""
    if "suggest_benchmark" not in sys.modules:
        if str(REPO / "benchmarks") not in sys.path:
            sys.path.insert(0, str(REPO / "benchmarks"))  # its sibling suggest_data.py
        spec = importlib.util.spec_from_file_location("suggest_benchmark", REPO / "benchmarks" / "suggest.py")
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look their module up there
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules["suggest_benchmark"]


def check_suggest_fine_tune(tmp: Path) -> None:
    task = "finetune/fashion5"
    args = ["--smoke", "--tasks", task, "--data", SHARED_DATA, "--out", tmp / "s.jsonl", "--head-study"]
    out, _ = script("benchmarks/suggest.py", *args, cwd=tmp.parent)
    bench = suggest_benchmark()
    journal = [json.loads(line) for line in (tmp / "s.jsonl").read_text().splitlines()]
    curves = {r.get("sweep"): r for r in journal if r["kind"] == "curve"}
    # the head alone (fastai's lr_find after freeze()), and the whole network at 1/lr_mult, as `find` sweeps it
    assert set(curves) == {None, "unfrozen"} and curves[None]["frozen"] and not curves["unfrozen"]["frozen"]
    ours, theirs = bench.rule_lrs(curves["unfrozen"]), bench.rule_lrs(curves[None])
    rules = out["tasks"][task]["rules"]
    assert rules["onecycle:floor"]["lrs"] == [ours["onecycle:floor"]["lr"]] != [theirs["onecycle:floor"]["lr"]]
    assert rules["fastai:minimum"]["lrs"] == [theirs["fastai:minimum"]["lr"]]
    # floor trains at the whole network's lowest point, and the head study at what the head's sweep read
    assert ours["onecycle:floor"]["lr"] == bench.read_again(curves["unfrozen"])[2].floor_lr
    head = out["head_study"][task]["rules"]["onecycle:floor"]
    assert head["lrs"] == [theirs["onecycle:floor"]["lr"]] and fraction(head["accuracy"])
    assert out["tasks"][task]["half"] == "later" and "rules_all" not in out  # reported apart from the 12
    # the source body is trained once: a second run reuses it, and the folders it wrote
    again, _ = script("benchmarks/suggest.py", *args, cwd=tmp.parent)
    assert again["tasks"] == out["tasks"] and len(list((tmp / "suggest-work" / "runs").iterdir())) == 1


def check_fastai_replay(tmp: Path) -> None:
    out, err = script("benchmarks/fastai_replay.py", "--smoke", python=FASTAI_PYTHON or sys.executable, cwd=tmp)
    assert out["smoke"] is True
    if out["fastai"] is None:  # this python has no fastai: the script says so, and what to run it with
        assert not FASTAI_PYTHON, err
        assert "fastai is not importable" in out["skipped"] and "skipped" in err
        return
    [sweep], [found] = out["sweeps"], out["suggestions"]
    assert set(found) == {"valley", "slide", "minimum", "steep"}
    for rule, lr in found.items():
        assert positive(lr) and sweep["start_lr"] <= lr <= sweep["end_lr"], (rule, lr)


def check_write_folder(tmp: Path) -> None:
    p = run([sys.executable, REPO / "examples" / "write_folder.py", tmp / "digits", "--smoke"], tmp)
    assert "wrote 16 training and 8 validation PNGs" in p.stdout
    # the folder is one onecycle reads: its own check, as the example's docstring tells the user to point at it
    c = json.loads(run([sys.executable, "-m", "onecycle_cli", "data", "check", "--config", "folder", "--data-dir",
                        tmp / "digits", "--json"], tmp).stdout)
    assert c["ok"] and (c["train"], c["valid"], c["classes"], c["class_names"]) == (16, 8, 2, ["3", "7"])


def check_make_mnist_sample(tmp: Path) -> None:
    if not MNIST:
        pytest.skip(f"no MNIST in {SHARED_DATA}: the bundled sample is made from it")
    run([sys.executable, REPO / "scripts" / "make_mnist_sample.py", SHARED_DATA / "MNIST" / "raw", tmp / "s.npz"], tmp)
    with np.load(tmp / "s.npz") as made, np.load(REPO / "onecycle_cli" / "assets" / "mnist_sample.npz") as bundled:
        assert sorted(made.files) == sorted(bundled.files)
        for name in bundled.files:
            assert np.array_equal(made[name], bundled[name]), name


def check_grid(tmp: Path) -> None:
    out, _ = script("benchmarks/grid.py", "--smoke", "--work", tmp / "work", cwd=tmp)
    assert (out["smoke"], out["members"], out["parallel"], out["rounds"]) == (True, 2, 2, 1)
    assert positive(out["serial_median_s"]) and positive(out["grid_median_s"]) and positive(out["ratio"])
    assert out["ratio"] == pytest.approx(out["grid_median_s"] / out["serial_median_s"], abs=0.01)
    # each member's accuracy against the same seed's run alone, both real numbers from the runs' summaries
    assert sorted(out["grid_accuracies"]) == sorted(out["serial_accuracies"]) == ["0", "1"]
    assert all(0.5 < v <= 1 for v in [*out["grid_accuracies"].values(), *out["serial_accuracies"].values()])
    assert out["accuracies_equal_every_round"] == (out["grid_accuracies"] == out["serial_accuracies"])


def check_threads(tmp: Path) -> None:
    out, _ = script("benchmarks/threads.py", "--smoke", cwd=tmp)
    assert (out["smoke"], out["rounds"], out["cpus"]) == (True, 1, len(os.sched_getaffinity(0)))
    # onecycle's choice for the small 3-vs-7 net is one thread, alone or in a pair; torch's own is a thread a CPU
    assert out["threads"]["alone"] == out["threads"]["pair"] == [1]
    assert out["threads"]["alone_torch"] == out["threads"]["pair_torch"] == [out["cpus"]]
    assert all(0.5 < acc <= 1 for accs in out["accuracy"].values() for acc in accs)
    med = out["median_seconds"]
    assert out["pair_over_alone"] == pytest.approx(med["pair"] / med["alone"], abs=0.001)
    assert out["alone_over_alone_torch"] == pytest.approx(med["alone"] / med["alone_torch"], abs=0.001)


def check_after_training(tmp: Path) -> None:
    # without Fashion-MNIST: that task is the same evaluate path with other training flags
    out, _ = script("benchmarks/after_training.py", "--smoke", "--data-dir", tmp / "no-data", cwd=tmp)
    assert out["smoke"] is True and out["fashion_mnist_resnet20"].startswith("skipped")
    task = out["folder_example"]
    assert [r["seed"] for r in task["seeds"]] == [0] and task["seeds"][0]["images"] == 64
    assert all(fraction(r[k]) for r in task["seeds"] for k in ("accuracy", "tta_accuracy"))
    assert task["tta_minus_plain_points"] == [pytest.approx(100 * (r["tta_accuracy"] - r["accuracy"]))
                                              for r in task["seeds"]]
    p = out["predict"]
    assert p["images"] == 64 and fraction(p["labels_agree"]) and p["labels_agree"] > 0.5
    assert p["ratio_onecycle_over_torchvision"] == pytest.approx(
        p["median_seconds"]["torchvision"] / p["median_seconds"]["onecycle"])


def check_accumulate(tmp: Path) -> None:
    # without ../shared/data: the 3-vs-7 task alone (Fashion-MNIST and MNIST run the same code with other flags)
    out, _ = script("benchmarks/accumulate.py", "--smoke", "--data", tmp / "no-data", cwd=tmp)
    assert out["smoke"] is True and out["fashion_resnet20"].startswith("skipped")
    task = out["book_3_vs_7"]
    assert task["micro_batch"] == {"1": 64, "2": 32, "4": 16} and task["batch_size"] == 64
    assert all(fraction(v) for r in task["accuracy"].values() for v in r["values"])
    ips = task["images_per_s_median"]
    assert task["step_time_over_accum_1"] == {k: pytest.approx(ips["1"] / ips[k]) for k in ("2", "4")}


def check_trackers(tmp: Path) -> None:
    for extra in ("mlflow", "wandb"):  # the dev extra installs both; a lean checkout skips
        if importlib.util.find_spec(extra) is None:
            pytest.skip(f"{extra} is not installed (pip install -e '.[dev]')")
    out, _ = script("benchmarks/trackers.py", "--smoke", cwd=tmp)
    assert out["smoke"] is True and out["rounds"] == 1 and out["same_accuracy"] is True
    assert set(out["median"]) == {"none", "mlflow", "wandb"} and out["steps"] == 8  # 512 images, batch 64
    assert all(positive(m["train_seconds"]) and m["wall_seconds"] > m["train_seconds"] for m in out["median"].values())
    assert out["train_ratio"] == {k: pytest.approx(out["median"][k]["train_seconds"]
                                                   / out["median"]["none"]["train_seconds"], abs=1e-3)
                                  for k in ("mlflow", "wandb")}
    assert all(fraction(out["tracker_cpu_share"][k]) for k in ("mlflow", "wandb"))


CASES: dict[str, Callable[[Path], None]] = {
    "benchmarks/trackers.py": check_trackers,
    "benchmarks/accumulate.py": check_accumulate,
    "benchmarks/after_training.py": check_after_training,
    "benchmarks/grid.py": check_grid,
    "benchmarks/threads.py": check_threads,
    "benchmarks/speed.py": check_speed,
    "benchmarks/loader.py": check_loader,
    "benchmarks/overhead.py": check_overhead,
    "benchmarks/folder.py": check_folder,
    "benchmarks/peers.py": check_peers,
    "benchmarks/startup.py": check_startup,
    "benchmarks/suggest.py": check_suggest,
    "benchmarks/fastai_replay.py": check_fastai_replay,
    "examples/write_folder.py": check_write_folder,
    "scripts/make_mnist_sample.py": check_make_mnist_sample,
}
ELSEWHERE = {"examples/mnist_sample.sh", "examples/transfer.py",  # test_examples.py runs them
             "benchmarks/suggest_data.py"}  # suggest.py's folders, written by check_suggest


@pytest.mark.parametrize("path", list(CASES))
def test_smallest_run(path, tmp_path):
    CASES[path](tmp_path)


def test_every_script_has_a_smallest_run_here():
    scripts = {str(p.relative_to(REPO)) for folder in ("benchmarks", "examples") for p in (REPO / folder).iterdir()
               if p.suffix in (".py", ".sh")}
    assert scripts - set(CASES) - ELSEWHERE == set(), "a script the suite never runs: add its smallest run above"


def test_every_name_the_scripts_import_from_onecycle_is_there():
    # a name imported inside a function is only reached on one path (speed.py's read_idx, on real MNIST only):
    # every `from onecycle_cli... import NAME` of every script is resolved here, whichever path a case takes
    missing = []
    for path in sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / "examples").glob("*.py"),
                        *(REPO / "scripts").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("onecycle_cli"):
                module = importlib.import_module(node.module)
                missing += [f"{path.relative_to(REPO)}:{node.lineno}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and not (
                                hasattr(module, "__path__") and importlib.util.find_spec(f"{node.module}.{a.name}"))]
    assert missing == []


def test_the_committed_suggestion_journal_still_gives_the_regrets_docs_benchmarks_states(tmp_path):
    # docs/benchmarks.md's suggestion tables come from docs/suggest-journal.jsonl.gz; a config key added since
    # (at the value that trains as before) must not orphan its records. The bundled set's two tasks need no data.
    journal = tmp_path / "suggest.jsonl"
    journal.write_bytes(gzip.decompress((REPO / "docs" / "suggest-journal.jsonl.gz").read_bytes()))
    out, _ = script("benchmarks/suggest.py", "--summary", "--out", journal, "--data", tmp_path / "none",
                    "--tasks", "mnist_sample/adamw", "mnist_sample/sgd", cwd=tmp_path)
    assert out["complete_tasks"] == ["mnist_sample/adamw", "mnist_sample/sgd"]
    # the default's row of the development table, then of the held-out one: the 3-vs-7 task is each one's first
    rows = [line for line in (REPO / "docs" / "benchmarks.md").read_text().splitlines()
            if line.startswith(f"| onecycle `{out['default_rule']}` (default) |")]
    stated = [float(row.split("|")[2]) for row in rows[:2]]
    measured = [out["tasks"][t]["rules"][f"onecycle:{out['default_rule']}"]["regret"] for t in out["complete_tasks"]]
    assert stated == [round(m, 2) for m in measured]
