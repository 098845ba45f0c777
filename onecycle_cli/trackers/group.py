"""A grid's members grouped in the trackers: W&B's `group` (the grid directory's name), and in MLflow a run
of the grid's own that its members' runs nest under (the `mlflow.parentRunId` tag MLflow's UI nests by).

The grid's process opens the parent run before the first member starts and records it in grid.json
(`trackers`), so that a resumed grid, or the next task of a job array, nests under the same one; each
member learns it from its environment (records.GROUP_ENV, records.PARENT_ENV). When the grid ends, the
parent gets the grid's status, its best accuracy and its views (grid.csv, grid.png, report.html).
Every failure here is a line for the caller to show: a grid never stops for a tracker.
"""

from __future__ import annotations

from pathlib import Path

from ..safe_files import check_regular_or_dir
from ..safe_text import one_line
from .records import GROUP_ENV, PARENT_ENV

GRID_FILES = ("grid.json", "grid.csv", "grid.png", "report.html")


def member_env(grid: dict | None) -> dict[str, str]:
    """What a member's environment carries for its trackers: the group, the MLflow parent run."""
    if not grid or "mlflow" not in grid.get("log", []) and "wandb" not in grid.get("log", []):
        return {}
    env = {GROUP_ENV: Path(str(grid.get("grid_dir", "grid"))).name}
    parent = (grid.get("trackers") or {}).get("mlflow", {}).get("run_id")
    if parent:
        env[PARENT_ENV] = str(parent)
    return env


def open_group(grid: dict, names: list[str]) -> str | None:
    """The grid's MLflow run, made once (grid["trackers"]); a warning line when it cannot be."""
    grid["log"] = [n for n in names if n in ("mlflow", "wandb")]
    if "mlflow" not in names or (grid.get("trackers") or {}).get("mlflow"):
        return None
    try:
        from .to_mlflow import client_for, experiment_id
        grid_dir = Path(grid["grid_dir"])
        client, uri, artifacts = client_for(Path(grid["runs_root"]))
        run = client.create_run(experiment_id(client, str(grid.get("config") or "onecycle"), artifacts),
                                run_name=grid_dir.name, tags={"onecycle.command": "grid",
                                                              "onecycle.run_dir": str(grid_dir)})
        from .params import redact
        grid["trackers"] = {"mlflow": {"tracking_uri": redact(uri), "run_id": run.info.run_id}}
        keys = [str(k) for k in grid.get("keys") or []]
        if keys:
            client.log_param(run.info.run_id, "vary", ",".join(keys))
    except Exception as e:
        return f"MLflow: the grid's run could not be made ({one_line(f'{type(e).__name__}: {e}')[:300]}); " \
               f"its members are logged ungrouped"
    return None


def close_group(grid: dict, grid_dir: Path) -> str | None:
    """The grid's MLflow run ended with the grid's status, its best member and its views."""
    parent = (grid.get("trackers") or {}).get("mlflow", {}).get("run_id")
    if not parent:
        return None
    try:
        from .to_mlflow import STATUS, client_for
        client, _, _ = client_for(Path(grid["runs_root"]))
        members = grid.get("members") or []
        accuracies = [m["accuracy"] for m in members if isinstance(m.get("accuracy"), (int, float))]
        if accuracies:
            client.log_metric(parent, "best/accuracy", max(accuracies))
        client.log_metric(parent, "members_completed", sum(m.get("status") == "completed" for m in members))
        for name in GRID_FILES:
            if (grid_dir / name).is_file() and not check_regular_or_dir(grid_dir / name):
                client.log_artifact(parent, str(grid_dir / name))
        client.set_tag(parent, "onecycle.status", str(grid.get("status")))
        client.set_terminated(parent, STATUS.get(str(grid.get("status")), "FAILED"))
    except Exception as e:
        return f"MLflow: the grid's run could not be ended ({one_line(f'{type(e).__name__}: {e}')[:300]})"
    return None
