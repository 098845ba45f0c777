"""Instant where nothing is trained (issue 14, item 2): commands that touch no tensor import neither torch
nor torchvision nor matplotlib.

The test process itself has torch loaded, so each command runs in a fresh interpreter, through the
Typer app as `onecycle` runs it, which then lists the heavy packages in sys.modules. How fast they
are is measured by benchmarks/startup.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

PROBE = """
import json, sys
from typer.testing import CliRunner
from onecycle_cli.cli import app
out = []
for args, env in json.loads(sys.argv[1]):
    r = CliRunner().invoke(app, args, env=env)
    # heavy modules only accumulate: the first case that shows one is the case that imported it
    heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'matplotlib'})
    out.append({"args": args, "env": env, "code": r.exit_code, "heavy": heavy, "stdout": r.stdout[-300:],
                "stderr": r.stderr[-300:]})
print(json.dumps(out))
"""


def probe(cases: list[tuple[list[str], dict]], cwd) -> list[dict]:
    """Each case in turn through the Typer app in one fresh interpreter, with what it left in sys.modules."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ONECYCLE", "_ONECYCLE", "COMP_", "_TYPER"))}
    full["PYTHONPATH"] = str(REPO)
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True, env=full,
                       cwd=cwd)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.splitlines()[-1])


HELP = [["--help"], *[[c, "--help"] for c in ("find", "train", "config", "presets", "init", "schedule", "plot", "runs",
                                              "compare", "report", "data", "grid")], ["data", "check", "--help"]]
COMMANDS = [
    ["config"], ["config", "--config", "mnist_sample", "--json"], ["config", "--config", "cifar.yaml"],
    ["config", "--list"], ["presets"], ["presets", "--json"], ["init", "mnist"], ["init", "cifar", "copy.yml"],
    ["runs", "RUNS"], ["runs", "RUNS", "--json"], ["--show-completion", "bash"],
]
COMPLETIONS = [
    {"_ONECYCLE_COMPLETE": "complete_bash", "COMP_WORDS": "onecycle train --set train.ep", "COMP_CWORD": "3"},
    {"_ONECYCLE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "onecycle compare --runs-dir RUNS "},
    {"_ONECYCLE_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
     "_TYPER_COMPLETE_ARGS": "onecycle train --config "},
]


def test_commands_that_touch_no_tensor_import_no_torch(tiny_runs, tmp_path):
    runs = str(tiny_runs["root"])
    cases = [([runs if a == "RUNS" else a for a in args], {}) for args in HELP + COMMANDS]
    cases += [([], {k: v.replace("RUNS", runs) for k, v in env.items()}) for env in COMPLETIONS]
    results = probe(cases, tmp_path)
    assert len(results) == len(cases)
    for r in results:
        assert r["code"] == 0, (r["args"], r["env"], r["stderr"])
        assert r["heavy"] == [], f"{r['args'] or r['env']} imported {r['heavy'][:5]}"
        assert r["stdout"] or r["stderr"]  # each said something: a completion its candidates
    assert (tmp_path / "mnist.yaml").is_file() and (tmp_path / "copy.yml").is_file()  # the commands did run


def test_data_check_of_a_bundled_set_imports_no_torch(tmp_path):
    [result] = probe([(["data", "check", "--config", "mnist_sample"], {})], tmp_path)
    assert result["code"] == 0, result["stderr"]
    assert result["heavy"] == []


def test_the_probe_sees_torch_when_a_command_does_import_it(tmp_path):
    # the check above can fail: a command that trains shows torch in the same probe
    config, schedule = probe([(["config"], {}), (["schedule", "--config", "mnist_sample", "--out", "s.png"], {})],
                             tmp_path)
    assert config["heavy"] == [] and schedule["code"] == 0, schedule["stderr"]
    assert "torch" in schedule["heavy"] and "matplotlib" in schedule["heavy"]
