"""How long the commands that train nothing take to answer: `python benchmarks/startup.py`.

Each command runs as a real subprocess (`python -m onecycle_cli ...`), as a user or a shell's TAB
would run it, in a scratch folder with a runs root holding a few finished runs. Rounds are
interleaved (every command once per round) so a machine whose speed drifts slows them all alike;
the medians are reported beside `python -c pass`, the floor no Python command can beat, and
`python -c "import torch"`, what each of these paid before it stopped importing torch. A separate
run of each command under `-X importtime` says whether torch, torchvision or matplotlib was imported.
Prints one JSON object.

    python benchmarks/startup.py --rounds 9     # as docs/benchmarks.md records it
    python benchmarks/startup.py --smoke        # the smallest run: 1 round, no warm-up round; every command
                                                # still runs, `data check` on --data's MNIST where it is there
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.3  # issue 14: each of these answers in 0.3 s or less on the development machine
HEAVY = ("torch", "torchvision", "matplotlib")

# name: (arguments, extra environment)
COMMANDS: dict[str, tuple[list[str], dict[str, str]]] = {
    "--help": (["--help"], {}),
    "train --help": (["train", "--help"], {}),
    "config": (["config"], {}),
    "config --config mnist_sample": (["config", "--config", "mnist_sample"], {}),
    "runs": (["runs"], {}),
    "presets": (["presets"], {}),
    "init": (["init", "mnist_sample", "copy.yaml", "--force"], {}),
    "complete --set (bash)": ([], {"_ONECYCLE_COMPLETE": "complete_bash", "COMP_WORDS": "onecycle train --set train.ep",
                                   "COMP_CWORD": "3"}),
    "complete compare (zsh)": ([], {"_ONECYCLE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "onecycle compare "}),
    "data check --config mnist_sample": (["data", "check", "--config", "mnist_sample"], {}),
}
# measured for the record, not held to the target: reading and checking 70,000 images of ../shared/data
# (a data set the user brought, not a file of onecycle's own), where that folder exists
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def info_only(data: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    if not (data / "MNIST").is_dir():
        return {}
    where = "../shared/data" if data == SHARED else str(data)
    argv = ["data", "check", "--config", "mnist", "--data-dir", str(data)]
    return {f"data check --config mnist ({where})": (argv, {})}


def scratch() -> Path:
    """A working folder whose runs/ holds a few finished-looking runs for `runs` and completion to read."""
    folder = Path(tempfile.mkdtemp(prefix="onecycle-startup-"))
    for i, (command, config) in enumerate([("find", "mnist_sample"), ("train", "mnist_sample"), ("train", "cifar")]):
        run = folder / "runs" / f"20260101-00000{i}-{command}-{config}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("train:\n  epochs: 2\n")
        (run / "summary.json").write_text(json.dumps({"command": command, "config": config, "status": "completed"}))
    return folder


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def heavy_imports(argv: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    """The heavy top-level packages a command imports, read from `python -X importtime`."""
    p = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True)
    found = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in p.stderr.splitlines() if "|" in line}
    return sorted(found & set(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="interleaved rounds, medians over them (default 7, --smoke 1)")
    parser.add_argument("--data", type=Path, default=SHARED, help="where `data check --config mnist` reads, if there")
    parser.add_argument("--smoke", action="store_true", help="the smallest run of every step: not a measurement")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.smoke else 7)
    info = info_only(args.data)  # measured for the record, not held to the target
    cwd = scratch()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ONECYCLE", "_ONECYCLE", "COMP_", "_TYPER"))}
    repo = str(Path(__file__).resolve().parents[1])
    base["PYTHONPATH"] = os.pathsep.join(p for p in (repo, base.get("PYTHONPATH")) if p)
    py = sys.executable
    cases = {"python -c pass": ([py, "-c", "pass"], {}),
             "python -c 'import torch'": ([py, "-c", "import torch"], {})}
    ours = {name: ([py, "-m", "onecycle_cli", *argv], env) for name, (argv, env) in {**COMMANDS, **info}.items()}
    cases.update(ours)
    times: dict[str, list[float]] = {name: [] for name in cases}
    if not args.smoke:  # one warm-up each: the first run pays for cold file caches
        for name, (argv, env) in cases.items():
            timed(argv, {**base, **env}, cwd)
    for _ in range(args.rounds):
        for name, (argv, env) in cases.items():
            times[name].append(timed(argv, {**base, **env}, cwd))
    floor = statistics.median(times["python -c pass"])
    torch_import = statistics.median(times["python -c 'import torch'"])
    results = {}
    for name, (argv, env) in ours.items():
        median = statistics.median(times[name])
        results[name] = {
            "median_s": round(median, 4), "min_s": round(min(times[name]), 4),
            "over_floor_s": round(median - floor, 4), "x_floor": round(median / floor, 2),
            "x_import_torch": round(median / torch_import, 3),
            "heavy_imports": heavy_imports(argv, {**base, **env}, cwd),
            "target_s": None if name in info else TARGET_S,
            "meets_target": None if name in info else median <= TARGET_S,
        }
    print(json.dumps({
        "benchmark": "startup", **({"smoke": True} if args.smoke else {}), "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(), "rounds": args.rounds,
        "floor_python_pass_s": round(floor, 4), "python_import_torch_s": round(torch_import, 4),
        "commands": results,
        "all_meet_target": all(r["meets_target"] for r in results.values() if r["meets_target"] is not None),
        "none_import_heavy": all(not r["heavy_imports"] for n, r in results.items() if n not in info),
    }, indent=1))


if __name__ == "__main__":
    main()
