"""MLflow: one MLflow run per onecycle run, in an experiment named after the config.

Where: MLFLOW_TRACKING_URI when it is set (a server, `http://127.0.0.1:5000`, or any store MLflow takes);
else a SQLite store beside the runs, `sqlite:///<runs root>/mlflow.db` (MLflow's own default since 3.7;
`./mlruns` is its legacy file store), its artifacts in <runs root>/mlflow-artifacts, so that
`mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` shows them. A grid's members nest under the
grid's run (the `mlflow.parentRunId` tag, as MLflow's own nested runs). MLflow's HTTP retries are cut
to a few seconds unless the user set them, so a server that is gone is a warning soon, not a hang.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..safe_files import check_regular_or_dir
from .params import redact

BATCH = 900  # metrics per log_batch call (MLflow takes 1,000) and parameters per call (100)
PARAMS_BATCH = 100
STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "diverged": "FAILED", "failed": "FAILED"}  # MLflow's


def client_for(runs_root: Path):
    """(MlflowClient, its tracking URI, the artifact location for a new experiment or None)."""
    # a server that is gone: two quick retries, not MLflow's default of minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # MLflow writes "View run ... at: URL" to stdout, which is --json's: the run's own line says it, on stderr
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    from mlflow.tracking import MlflowClient
    for name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables...": not the run's to say
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = None
    if not uri:
        root = runs_root.absolute()
        for name in ("mlflow.db", "mlflow-artifacts"):  # never written through a link planted beside the runs
            if check_regular_or_dir(root / name):
                raise OSError(f"{root / name} is {check_regular_or_dir(root / name)}; not writing through it")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        artifacts = (root / "mlflow-artifacts").as_uri()
    return MlflowClient(tracking_uri=uri), uri, artifacts


KIND_TAG = "mlflow.experimentKind"


def experiment_id(client, name: str, artifacts: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        # MLflow 3's UI opens an experiment of no kind as a GenAI one (traces, judges); this one holds training runs
        return client.create_experiment(name, artifact_location=artifacts, tags={KIND_TAG: "custom_model_development"})
    except Exception:  # another process (a grid's member) created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


class MlflowTracker:
    name, title = "mlflow", "MLflow"

    def __init__(self, context: dict):
        self.context = context
        self.client = self.run_id = self.uri = self.experiment = None

    def open(self, previous: dict | None, params: dict[str, str]) -> dict:
        c = self.context
        self.client, self.uri, artifacts = client_for(c["run"].parent)
        if previous and previous.get("run_id") and previous.get("tracking_uri") == redact(self.uri):
            self.run_id = previous["run_id"]  # --resume: the same MLflow run, running again
            self.experiment = self.client.get_run(self.run_id).info.experiment_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = dict(c["tags"])
            if c.get("parent"):
                tags["mlflow.parentRunId"] = c["parent"]
            if c.get("group"):
                tags["onecycle.grid"] = c["group"]
            self.experiment = experiment_id(self.client, c["experiment"], artifacts)
            run = self.client.create_run(self.experiment, run_name=c["name"], tags=tags)
            self.run_id = run.info.run_id
            from mlflow.entities import Param
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), PARAMS_BATCH):
                self.client.log_batch(self.run_id, params=items[i:i + PARAMS_BATCH], synchronous=True)
        return {"tracking_uri": redact(self.uri), "run_id": self.run_id}

    def metrics(self, points: list[tuple[int, dict]]) -> None:
        import time

        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for step, values in points for k, v in values.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + BATCH], synchronous=True)

    def summary(self, final: dict[str, float], status: str) -> None:
        self.metrics([(0, final)] if final else [])
        self.client.set_tag(self.run_id, "onecycle.status", status)

    def artifacts(self, files: list[Path]) -> None:
        for f in files:
            self.client.log_artifact(self.run_id, str(f))

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))

    def describe(self) -> dict:
        return {"tracking_uri": redact(self.uri), "run_id": self.run_id}

    def lines(self) -> list[str]:
        shown = redact(self.uri)
        if shown.startswith(("http://", "https://")):
            return [f"MLflow: run {self.run_id} at {shown.rstrip('/')}/#/experiments/{self.experiment}/runs/"
                    f"{self.run_id}"]
        return [f"MLflow: run {self.run_id} in {shown} (see it: mlflow ui --backend-store-uri {shown})"]
