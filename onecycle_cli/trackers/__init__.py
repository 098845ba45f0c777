"""The experiment trackers a run's records also go to: `run.log: [mlflow]`, `[wandb]`, `[tensorboard, mlflow]`.

TensorBoard's event files are written beside the CSVs (runs.directory.TensorboardLog). MLflow and
Weights & Biases get the same records through one adapter (records.Tracking): the rows the run writes
to steps.csv and metrics.csv, handed over at their flush points, and at the end what the run left in its
directory (config.yaml as parameters, summary.json's final and best metrics and suggestions, lr_find.csv,
the PNGs and report.html as artifacts). A thread of its own talks to the trackers, so the training loop
never waits on one, and a tracker that fails is a warning: the run, its files and its exit code go on.

    records.py    the adapter: what is sent when, the thread, trackers.json (the ids a resume continues)
    params.py     the config as parameters: the keys the run read, nothing secret
    to_mlflow.py  MLflow: a SQLite store under the runs root unless MLFLOW_TRACKING_URI names a server
    to_wandb.py   W&B: online only with a key and a host that answers at once, else offline in the run
"""

from __future__ import annotations

import importlib.util

from ..errors import UsageError

# tracker -> (the module it needs, the extra that installs it)
NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def check_installed(names: list[str]) -> None:
    """Exit 2 before any work when a tracker asked for is not installed, naming the extra that installs it."""
    for name in names:
        module, extra = NEEDS[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None, or one without a spec
            found = False
        if not found:
            raise UsageError(f"run.log {name}: the {module} package is not installed; "
                             f"pip install \"onecycle[{extra}]\" (or drop {name} from run.log / --log)")
