"""Weights & Biases: one W&B run per onecycle run, in a project named after the config (or WANDB_PROJECT).

Online only when nothing says otherwise: WANDB_MODE unset (or "online"), an API key at hand (WANDB_API_KEY
or a netrc entry from `wandb login`) and the W&B host (WANDB_BASE_URL, else api.wandb.ai) taking a
connection within PROBE_SECONDS. Else the run is logged offline into <run>/wandb/, and the end of the run
says how to upload it later (`wandb sync DIR`): a box without a network never waits on W&B, and never
asks for a login. WANDB_MODE=disabled is respected: nothing is written.

Metrics go against onecycle's own step (`define_metric("*", step_metric="step")`, as Lightning does), so a
resumed run, which repeats the steps after its last checkpoint, is never refused by W&B's monotonic step.
Nothing of the machine's environment or command line is sent (x_disable_meta): the parameters are the
run's config (params.py), and the artifacts are copied into the W&B run, not linked.
"""

from __future__ import annotations

import netrc
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from ..network import reach

PROBE_SECONDS = 3.0
HOST = "https://api.wandb.ai"


def mode_and_reason() -> tuple[str, str | None]:
    """("online" | "offline" | "disabled", why not online)."""
    asked = os.environ.get("WANDB_MODE", "").strip().lower()
    if asked in ("offline", "dryrun"):
        return "offline", f"WANDB_MODE={asked}"
    if asked == "disabled":
        return "disabled", "WANDB_MODE=disabled"
    base = os.environ.get("WANDB_BASE_URL") or HOST
    if not os.environ.get("WANDB_API_KEY") and not _netrc_key(base):
        return "offline", "no W&B API key (WANDB_API_KEY, or `wandb login`)"
    why = reach(base, PROBE_SECONDS)
    return ("offline", why) if why else ("online", None)


def _netrc_key(base: str) -> bool:
    host = urlsplit(base).hostname or ""
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker:
    name, title = "wandb", "W&B"

    def __init__(self, context: dict):
        self.context = context
        self.run = None
        self.mode, self.why = "offline", None

    def open(self, previous: dict | None, params: dict[str, str]) -> dict:
        import wandb
        c = self.context
        self.mode, self.why = mode_and_reason()
        resume_id = previous.get("id") if previous else None
        # a W&B service handed down by the process that started this one is not this run's: records written
        # through it would live or die with that process. This process's own, once started, wandb keeps itself.
        os.environ.pop("WANDB_SERVICE", None)
        settings = wandb.Settings(x_disable_meta=True, disable_git=True, save_code=False, x_save_requirements=False,
                                  console="off", silent=True, init_timeout=60)
        project = os.environ.get("WANDB_PROJECT") or _project(c["experiment"])
        self.run = wandb.init(project=project, dir=str(c["run"]), id=resume_id, resume="allow" if resume_id else None,
                              name=c["name"], group=c.get("group"), job_type=c["command"],
                              config=params or None, tags=[c["command"]], mode=self.mode, settings=settings,
                              reinit="create_new")
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        return self.describe()

    def metrics(self, points: list[tuple[int, dict]]) -> None:
        for step, values in points:
            self.run.log({"step": step, **values})

    def summary(self, final: dict[str, float], status: str) -> None:
        for k, v in final.items():
            self.run.summary[k] = v
        self.run.summary["status"] = status

    def artifacts(self, files: list[Path]) -> None:
        if self.mode == "disabled":
            return
        folder = Path(self.run.dir)
        for f in files:  # copied, not linked: the W&B run stands alone, wherever the run directory goes
            shutil.copyfile(f, folder / f.name, follow_symlinks=False)
            self.run.save(str(folder / f.name), base_path=str(folder), policy="now")

    def end(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)

    def offline_dir(self) -> str | None:
        if self.mode != "offline" or self.run is None:
            return None
        return str(Path(self.run.dir).parent)

    def describe(self) -> dict:
        out = {"id": self.run.id if self.run else None, "project": self.run.project if self.run else None,
               "mode": self.mode}
        if self.why:
            out["why"] = self.why
        if self.offline_dir():
            out["dir"] = self.offline_dir()
            out["sync"] = f"wandb sync {self.offline_dir()}"
        return out

    def lines(self) -> list[str]:
        if self.mode == "online":
            return [f"W&B: {self.run.url}"]
        if self.mode == "disabled":
            return ["W&B: disabled (WANDB_MODE=disabled), nothing logged"]
        return [f"W&B: offline ({self.why}); upload it later with: wandb sync {self.offline_dir()}"]


def _project(name: str) -> str:
    """A W&B project name: no slashes, backslashes, #, ?, % or colons, 128 characters at most."""
    return "".join("_" if c in "/\\#?%:" else c for c in name)[:128] or "onecycle"
