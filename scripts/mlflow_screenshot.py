"""docs/gallery/mlflow-grid.png: the MLflow UI holding a grid's runs, as the README shows it.

Starts `mlflow server` on 127.0.0.1 (SQLite backend, in a temporary folder), runs
`onecycle grid --config mnist_sample --vary schedule.max_lr=0.01,0.05,0.2 --log mlflow` against it, and
has headless Chromium draw the experiment's page: the grid's run expanded to show its members, and the
charts of their metrics.
Needs `pip install "onecycle[mlflow]"` and a `chromium` binary.

    python scripts/mlflow_screenshot.py [--out docs/gallery/mlflow-grid.png]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages,
    each ended by a NUL, in on fd 3 and out on fd 4): the page needs clicks before it shows the grid's members."""

    def __init__(self, binary: str, profile: Path):
        to_browser, self.to = os.pipe()
        self.back, from_browser = os.pipe()
        self.proc = subprocess.Popen(["sh", "-c", f'exec "$@" 3<&{to_browser} 4>&{from_browser}', "sh", binary,
                                      "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                                      "about:blank"], pass_fds=(to_browser, from_browser),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self.n, self.pending, self.session = 0, b"", None

    def send(self, method: str, **params):
        self.n += 1
        message = {"id": self.n, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self.to, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.pending:
                chunk = os.read(self.back, 1 << 20)
                if not chunk:
                    sys.exit("chromium closed its DevTools pipe")
                self.pending += chunk
            raw, self.pending = self.pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.n:
                if "error" in reply:
                    sys.exit(f"chromium: {method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def draw(binary: str, page: str, profile: Path) -> bytes:
    """The experiment's runs in MLflow's chart view, the grid's run expanded to show its members."""
    c = Chromium(binary, profile)
    try:
        target = c.send("Target.createTarget", url="about:blank")["targetId"]
        c.session = c.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        c.send("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        c.send("Page.navigate", url=page)
        while not c.js("document.body.innerText.includes('matching runs')"):
            time.sleep(0.5)
        time.sleep(2)
        # the assistant's panel closed; MLflow 3's "Model training" side of the UI, not its GenAI side
        c.js("""[...document.querySelectorAll('button')].find(b => b.getAttribute('aria-label') === 'Close')?.click();
                [...document.querySelectorAll('label, button, span')].find(e => e.innerText === 'Model training')
                    ?.click()""")
        time.sleep(2)
        if not c.js("(b => { b?.click(); return !!b; })("
                    "document.querySelector('button[data-component-id*=runnamecellrenderer]'))"):
            sys.exit("the MLflow page has no run to expand: its layout changed")
        time.sleep(1)
        c.js("document.querySelector('input[value=CHART]')?.click()")
        time.sleep(6)  # the charts draw
        return base64.b64decode(c.send("Page.captureScreenshot", format="png")["data"])
    finally:
        c.send("Browser.close")
        c.proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "gallery" / "mlflow-grid.png")
    a = p.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or sys.exit("no chromium binary")
    work = Path(tempfile.mkdtemp(prefix="onecycle-mlflow-shot-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{work / 'server.db'}",
                               "--artifacts-destination", str(work / "artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "wb"), start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                sys.exit(f"mlflow server exited: see {work / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5):
                    break
            except OSError:
                time.sleep(0.3)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
        env.update(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(REPO))
        g = subprocess.run([sys.executable, "-m", "onecycle_cli", "grid", "--config", "mnist_sample",
                            "--vary", "schedule.max_lr=0.01,0.05,0.2", "--log", "mlflow", "--runs-dir",
                            str(work / "runs"), "--json"],
                           cwd=work, env=env, capture_output=True, text=True)
        if g.returncode != 0:
            sys.exit(f"the grid failed ({g.returncode}):\n{g.stderr[-3000:]}")
        from mlflow.tracking import MlflowClient
        experiment = MlflowClient(uri).get_experiment_by_name("mnist_sample").experiment_id
        page = f"{uri}/#/experiments/{experiment}/runs"
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_bytes(draw(browser, page, work / "chromium"))
        print(json.dumps({"screenshot": str(a.out), "page": page, "grid_dir": json.loads(g.stdout)["grid_dir"]}))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


if __name__ == "__main__":
    main()
