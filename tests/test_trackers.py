"""run.log / --log: MLflow (a SQLite store under the runs root, and a real `mlflow server` on 127.0.0.1)
and W&B (offline, read back from its own record format with its own protobuf definitions), with no network.

Every tracker is read back by its own client, never through onecycle's code: MlflowClient for MLflow, and
for W&B the records of the offline run's .wandb file parsed with wandb.proto.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import PATIENCE, TINY, assert_usage_error, clean_env, onecycle, proc_state
from onecycle_cli.runs.directory import read_csv
from onecycle_cli.trackers.params import redact

mlflow = pytest.importorskip("mlflow", reason="onecycle[mlflow] is not installed")
wandb = pytest.importorskip("wandb", reason="onecycle[wandb] is not installed")
from mlflow.tracking import MlflowClient  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402

TWO_EPOCHS = [*TINY, "--epochs", "2", "--set", "train.log_every=4"]  # 16 steps, each a row, flushed every 4
SECRET = "sekrit-0123456789"  # in the environment of every tracked run here: it must reach no tracker
OFFLINE = {"WANDB_MODE": "offline", "WANDB_API_KEY": SECRET, "WANDB_SILENT": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend, its artifacts served by itself; waited
    for until /health answers (no deadline beyond the suite's patience: a loaded machine is slow, not wrong)."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                             "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "wb"), start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    while True:
        assert proc.poll() is None, (folder / "server.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            pass
        assert time.monotonic() - started < PATIENCE, "mlflow server never answered /health"
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, uri = start_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    stop_server(proc)


def runs_of(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_points(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """The same steps, the same values to float32 (pytest 8's approx takes no list of pairs)."""
    assert [step for step, _ in got] == [step for step, _ in want]
    assert [value for _, value in got] == pytest.approx([value for _, value in want], rel=1e-6)


def wandb_records(run_dir: Path) -> list:
    """Every record of a W&B offline run's .wandb file: W&B's own append-only log (LevelDB's log format,
    32 KiB blocks of checksummed chunks, after a 7-byte ':W&B' header), each a wandb_internal_pb2.Record."""
    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, records, partial = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):  # full, or last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(partial)
            records.append(record)
    return records


def wandb_history(records: list) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def wandb_summary(records: list) -> dict:
    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for i in r.summary.update:
                out[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return out


def offline_dirs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*"))


# ------------------------------------------------------------------------------------------------


def test_train_logs_to_a_local_mlflow_store_and_w_and_b_offline(cli, tmp_path):
    r = cli("train", *TWO_EPOCHS, "--log", "mlflow,wandb", "--json", env=OFFLINE)
    assert r.code == 0, r.stderr
    summary = r.json()
    run = Path(summary["run_dir"])
    steps, epochs = read_csv(run / "steps.csv"), read_csv(run / "metrics.csv")

    # MLflow: sqlite:///<runs root>/mlflow.db, the experiment named after the config, one run
    store = (tmp_path / "runs" / "mlflow.db").absolute()
    assert summary["trackers"]["mlflow"]["tracking_uri"] == f"sqlite:///{store}"
    client = MlflowClient(f"sqlite:///{store}")
    (logged,) = runs_of(client, "mnist_sample")
    assert logged.info.run_id == summary["trackers"]["mlflow"]["run_id"]
    assert json.loads((run / "trackers.json").read_text())["mlflow"]["run_id"] == logged.info.run_id
    assert logged.info.status == "FINISHED" and logged.data.tags["onecycle.status"] == "completed"
    params = logged.data.params
    assert params["schedule.max_lr"] == "0.05" and params["train.epochs"] == "2" and params["run.log"] == \
        '["mlflow", "wandb"]'
    assert not any(k.startswith("find.") for k in params)  # a train run without --max-lr find reads no find.*
    sent = [s for s in steps if s["step"] % 4 == 0]  # one step in log_every, as Lightning's loggers
    assert len(steps) == 16 and len(sent) == 4
    assert_points(history(client, logged.info.run_id, "step/lr"), [(int(s["step"]), s["lr"]) for s in sent])
    assert [s for s, _ in history(client, logged.info.run_id, "step/loss")] == [4, 8, 12, 16]
    assert_points(history(client, logged.info.run_id, "epoch/accuracy"),
                  [(int(e["step"]), e["accuracy"]) for e in epochs])
    assert logged.data.metrics["final/accuracy"] == pytest.approx(summary["final"]["accuracy"])
    assert logged.data.metrics["best/accuracy"] == pytest.approx(summary["best"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"curves.png", "schedule.png", "report.html", "config.yaml", "summary.json"} <= artifacts
    got = Path(client.download_artifacts(logged.info.run_id, "curves.png", str(tmp_path / "got")))
    assert got.read_bytes() == (run / "curves.png").read_bytes()

    # W&B: offline in the run directory, the summary saying how to upload it
    w = summary["trackers"]["wandb"]
    (offline,) = offline_dirs(run)
    assert w["mode"] == "offline" and w["dir"] == str(offline) and w["sync"] == f"wandb sync {offline}"
    assert "wandb sync" in r.stderr
    # wandb's own CLI finds the offline run to upload, exactly as the summary tells the user to
    dry = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(offline)],
                         capture_output=True, text=True, env=clean_env(**OFFLINE))
    assert dry.returncode == 0 and "Would sync 1 run" in dry.stderr + dry.stdout, dry.stderr
    records = wandb_records(offline)
    (started,) = [x.run for x in records if x.WhichOneof("record_type") == "run"]
    assert started.run_id == w["id"] and started.project == "mnist_sample"
    config = {i.key: json.loads(i.value_json) for i in started.config.update if i.key != "_wandb"}
    assert config == params  # the same parameters, to both trackers
    rows = wandb_history(records)
    assert_points([(x["step"], x["step/lr"]) for x in rows if "step/lr" in x],
                  [(int(s["step"]), s["lr"]) for s in sent])
    assert [x["epoch/accuracy"] for x in rows if "epoch/accuracy" in x] == pytest.approx(
        [e["accuracy"] for e in epochs], rel=1e-6)
    assert wandb_summary(records)["final/accuracy"] == pytest.approx(summary["final"]["accuracy"])
    saved = {f.path for x in records if x.WhichOneof("record_type") == "files" for f in x.files.files}
    assert {"curves.png", "report.html"} <= saved
    assert (Path(offline) / "files" / "curves.png").read_bytes() == (run / "curves.png").read_bytes()
    assert [x.exit.exit_code for x in records if x.WhichOneof("record_type") == "exit"] == [0]

    # nothing of the environment (an API key) went to either tracker, nor the command line (W&B's metadata)
    assert SECRET.encode() not in store.read_bytes()
    assert SECRET.encode() not in (next(offline.glob("*.wandb"))).read_bytes()


def test_find_logs_its_curve_and_suggestions_to_an_mlflow_server(cli, server, tmp_path):
    r = cli("find", *TINY, "--set", "find.num_it=40", "--log", "mlflow", "--json",
            env={"MLFLOW_TRACKING_URI": server, **OFFLINE})
    assert r.code == 0, r.stderr
    summary = r.json()
    client = MlflowClient(server)
    (logged,) = runs_of(client, "mnist_sample")
    assert logged.info.run_id == summary["trackers"]["mlflow"]["run_id"]
    assert logged.data.tags["onecycle.command"] == "find" and logged.info.status == "FINISHED"
    assert logged.data.params["find.num_it"] == "40" and "train.epochs" not in logged.data.params
    for rule, s in summary["suggestions"].items():
        assert logged.data.metrics[f"suggestion/{rule}"] == pytest.approx(s["lr"])
    curve = read_csv(Path(summary["run_dir"]) / "lr_find.csv")
    assert_points(history(client, logged.info.run_id, "find/loss"), [(int(c["step"]), c["loss"]) for c in curve])
    got = Path(client.download_artifacts(logged.info.run_id, "lr_find.png", str(tmp_path / "got")))
    assert got.read_bytes() == (Path(summary["run_dir"]) / "lr_find.png").read_bytes()
    assert (tmp_path / "runs" / "mlflow.db").exists() is False  # the server got it, not a local store


def test_a_resumed_run_is_one_tracker_run_and_its_status_is_mirrored(cli, tmp_path):
    env = {**OFFLINE, "ONECYCLE_FAULT": "step@6:SIGTERM"}
    p = onecycle("train", *TWO_EPOCHS, "--log", "mlflow,wandb", "--runs-dir", "runs", cwd=tmp_path, **env)
    assert p.returncode == 143, p.stderr
    (run,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir() and "train" in d.name]
    client = MlflowClient(f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').absolute()}")
    (cut,) = runs_of(client, "mnist_sample")
    assert cut.info.status == "KILLED" and cut.data.tags["onecycle.status"] == "interrupted"

    r = cli("train", "--resume", run, "--json", env=OFFLINE)
    assert r.code == 0, r.stderr
    (whole,) = runs_of(client, "mnist_sample")  # the same run, continued: not a second one
    assert whole.info.run_id == cut.info.run_id == r.json()["trackers"]["mlflow"]["run_id"]
    assert whole.info.status == "FINISHED" and whole.data.tags["onecycle.status"] == "completed"
    assert {s for s, _ in history(client, whole.info.run_id, "step/loss")} == {4, 8, 12, 16}
    assert [s for s, _ in history(client, whole.info.run_id, "epoch/accuracy")] == [8, 16]
    first, second = offline_dirs(run)  # W&B: two offline pieces of one run id, which `wandb sync` joins
    assert first.name.split("-")[-1] == second.name.split("-")[-1] == r.json()["trackers"]["wandb"]["id"]
    assert [x.exit.exit_code for x in wandb_records(first) if x.WhichOneof("record_type") == "exit"] == [1]


def test_a_diverged_run_is_failed_in_the_tracker(cli, tmp_path):
    r = cli("train", *TINY, "--epochs", "1", "--max-lr", "1e6", "--log", "mlflow", "--json", env=OFFLINE)
    assert r.code == 3, r.stderr
    client = MlflowClient(f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').absolute()}")
    (logged,) = runs_of(client, "mnist_sample")
    assert logged.info.status == "FAILED" and logged.data.tags["onecycle.status"] == "diverged"
    last = read_csv(Path(r.json()["run_dir"]) / "steps.csv")[-1]  # the step that diverged, whatever log_every
    assert not math.isfinite(last["loss"])
    assert history(client, logged.info.run_id, "step/loss")[-1][0] == last["step"]


def test_a_grid_nests_its_members_under_its_own_mlflow_run_and_shares_a_w_and_b_group(cli, tmp_path):
    r = cli("grid", *TINY, "--epochs", "1", "--vary", "schedule.max_lr=0.01,0.05", "--log", "mlflow,wandb",
            "--json", env={**OFFLINE, "OMP_NUM_THREADS": "1"})
    assert r.code == 0, r.stderr
    grid = r.json()
    grid_dir = Path(grid["grid_dir"])
    client = MlflowClient(f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').absolute()}")
    runs = {x.info.run_id: x for x in runs_of(client, "mnist_sample")}
    parent = grid["trackers"]["mlflow"]["run_id"]
    assert runs[parent].info.run_name == grid_dir.name and runs[parent].info.status == "FINISHED"
    children = [x for x in runs.values() if x.data.tags.get("mlflow.parentRunId") == parent]
    assert sorted(x.data.tags["onecycle.run_dir"] for x in children) == sorted(m["run_dir"] for m in grid["members"])
    assert runs[parent].data.metrics["best/accuracy"] == pytest.approx(max(m["accuracy"] for m in grid["members"]))
    assert {"grid.csv", "report.html"} <= {a.path for a in client.list_artifacts(parent)}
    for m in grid["members"]:
        (offline,) = offline_dirs(Path(m["run_dir"]))
        (started,) = [x.run for x in wandb_records(offline) if x.WhichOneof("record_type") == "run"]
        assert started.run_group == grid_dir.name


def test_a_tracker_that_fails_is_a_warning_and_the_run_goes_on(cli, tmp_path):
    """A server gone mid-run (killed while the run is held just after its MLflow run was made, nothing sent
    yet): the run completes with exit 0 and all its files, and one warning says so."""
    proc, uri = start_server(tmp_path / "server")
    args = [*TWO_EPOCHS, "--log", "mlflow", "--runs-dir", "runs", "--json"]
    run = subprocess.Popen([sys.executable, "-m", "onecycle_cli", "train", *args], cwd=tmp_path,
                           env=clean_env(MLFLOW_TRACKING_URI=uri, ONECYCLE_FAULT="tracker:SIGSTOP", **OFFLINE),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while run.poll() is None and proc_state(run.pid) != "T":  # no deadline: a loaded machine is slow, not wrong
        time.sleep(0.005)
    stop_server(proc)
    os.kill(run.pid, signal.SIGCONT)
    out, err = run.communicate()
    assert run.returncode == 0, err
    summary = json.loads(out)
    folder = tmp_path / summary["run_dir"]
    assert summary["status"] == "completed" and len(read_csv(folder / "metrics.csv")) == 2
    assert (folder / "report.html").is_file() and (folder / "checkpoints" / "last.pt").is_file()
    assert "MLflow:" in err and "the run goes on without it" in err
    assert "mlflow" not in summary.get("trackers", {})
    assert json.loads((folder / "trackers.json").read_text())["mlflow"]["tracking_uri"] == uri

    # and a server that was never there: the same, at once
    r = cli("train", *TINY, "--epochs", "1", "--log", "mlflow", "--json",
            env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert r.code == 0 and r.json()["status"] == "completed"
    assert "MLflow:" in r.stderr and "the run goes on without it" in r.stderr


def test_w_and_b_goes_offline_when_its_host_does_not_answer(cli):
    closed = f"http://127.0.0.1:{free_port()}"
    r = cli("train", *TINY, "--epochs", "1", "--log", "wandb", "--json",
            env={"WANDB_MODE": None, "WANDB_API_KEY": SECRET, "WANDB_BASE_URL": closed, "WANDB_SILENT": "true"})
    assert r.code == 0, r.stderr
    w = r.json()["trackers"]["wandb"]
    assert w["mode"] == "offline" and "127.0.0.1 cannot be reached" in w["why"]
    assert w["sync"].startswith("wandb sync ") and Path(w["dir"]).is_dir()
    # with no API key at all: offline too, never a login prompt
    r = cli("train", *TINY, "--epochs", "1", "--log", "wandb", "--json",
            env={"WANDB_MODE": None, "WANDB_API_KEY": None, "WANDB_BASE_URL": closed, "HOME": os.getcwd()})
    assert r.code == 0, r.stderr
    assert r.json()["trackers"]["wandb"]["why"].startswith("no W&B API key")


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_tracker_not_installed_is_exit_2_naming_its_extra_before_any_work(cli, monkeypatch, tmp_path, name):
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises
    r = cli("train", *TINY, "--epochs", "1", "--log", name)
    assert_usage_error(r, f'pip install "onecycle[{name}]"')
    assert not (tmp_path / "runs").exists()
    r = cli("grid", *TINY, "--vary", "schedule.max_lr=0.01,0.05", "--set", f"run.log=[{name}]")
    assert_usage_error(r, f'pip install "onecycle[{name}]"')


def test_unknown_tracker_names_are_refused(cli):
    r = cli("train", *TINY, "--log", "neptune")
    assert_usage_error(r, "run.log")


def test_secrets_in_urls_are_redacted():
    assert redact("https://user:tok3n@host/w.pt?x=1&token=abc&y=2") == \
        "https://[redacted]@host/w.pt?x=1&token=[redacted]&y=2"
    assert redact("s3://bucket/key.pt") == "s3://bucket/key.pt"
