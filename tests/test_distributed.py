"""Several processes through torchrun, on CPU with gloo: `torchrun --nproc-per-node 2 -m onecycle_cli train`."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

ARGS = ["--config", "mnist_sample", "--set", "data.train_size=1280", "--set", "data.valid_size=512", "--epochs", "2",
        "--device", "cpu", "--json"]


def torchrun(command: str, *args: str, cwd) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "onecycle_cli", command, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, p.stdout  # rank 0 alone prints the summary
    return json.loads(lines[0])


def test_two_processes_train_like_one(cli, tmp_path):
    # each of the two processes also splits its half of the batch in two (--accum-steps 2): the first
    # micro-batch skips DDP's all-reduce (no_sync), and the sum still comes out as one process's batch
    two = torchrun("train", *ARGS, "--accum-steps", "2", cwd=tmp_path)
    assert two["world_size"] == 2 and two["status"] == "completed"
    assert (two["batch_size"], two["accum_steps"], two["micro_batch"]) == (64, 2, 16)
    assert len(list((tmp_path / "runs").iterdir())) == 1  # rank 0 alone writes the run directory
    one = cli("train", *ARGS, "--runs-dir", "single").json()
    # the global batch is the same, and DDP averages the two halves' gradients: the same fit up to rounding
    assert two["final"]["accuracy"] == pytest.approx(one["final"]["accuracy"], abs=0.005)
    assert two["final"]["train_loss"] == pytest.approx(one["final"]["train_loss"], rel=1e-3)


def test_the_range_test_under_torchrun(tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="onecycle[mlflow] is not installed")
    s = torchrun("find", *ARGS[:-5], "--num-it", "40", "--device", "cpu", "--log-to", "mlflow", "--json", cwd=tmp_path)
    assert s["status"] == "completed" and 10 <= s["curves"][0]["steps"] <= 40 and s["world_size"] == 2
    assert len([d for d in (tmp_path / "runs").iterdir() if "-find-" in d.name]) == 1
    # rank 0 alone reports to the tracker: one MLflow run, not one per process (--log-to: torchrun's own
    # parser would take --log for its --log-dir)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist_sample").experiment_id
    (logged,) = client.search_runs([experiment])
    assert logged.info.run_id == s["trackers"]["mlflow"]["run_id"] and logged.info.status == "FINISHED"


def test_fine_tuning_under_torchrun(tmp_path):
    # DDP only reduces the gradients of the parameters that needed them when it was made: the model is wrapped
    # again when the range test freezes it (find.freeze: a fine_tune is otherwise swept whole), when it is put
    # back, and at each cycle's start
    s = torchrun("train", "--config", "mnist", "--dataset", "mnist_sample", "--set", "model.channels=[1,8,16,32,64,2]",
                 "--set", "data.train_size=1280", "--set", "data.valid_size=256", "--batch-size", "64", "--epochs", "1",
                 "--set", "train.freeze_epochs=1", "--set", "optim.lr_mult=10", "--max-lr", "find",
                 "--set", "find.num_it=20", "--set", "find.freeze=true", "--device", "cpu", "--json", cwd=tmp_path)
    assert s["status"] == "completed" and s["world_size"] == 2 and s["final"]["accuracy"] > 0.9
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "lr_find.json").read_text())["frozen"] is True
    phases = [line.split(",")[-1] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert phases == ["frozen", "unfrozen"]
