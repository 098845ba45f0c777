"""Shared fixtures: the real CLI in-process and as a subprocess, an isolated working directory, and tiny
datasets written in their real on-disk formats (CIFAR-10 pickles, MNIST idx files, image folders)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from onecycle_cli.cli import app

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own directory, with no ONECYCLE_* variables from the caller."""
    for name in list(os.environ):
        if name.startswith("ONECYCLE"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli():
    """Run `onecycle ARGS...` in-process through the real Typer app; stdout and stderr apart."""
    runner = CliRunner()

    def run(*args: str, env: dict | None = None) -> Result:
        r = runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
        return Result(r.exit_code, r.stdout, r.stderr)
    return run


def run_process(*args: str, env: dict | None = None, cwd=None) -> Result:
    """`python -m onecycle_cli ARGS...` as a real subprocess (for signals, tracebacks, exit codes)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.update(env or {})
    p = subprocess.run([sys.executable, "-m", "onecycle_cli", *map(str, args)], capture_output=True, text=True,
                       env=full_env, cwd=cwd)
    return Result(p.returncode, p.stdout, p.stderr)


def clean_env(**extra: str) -> dict:
    """The caller's environment without its ONECYCLE_* variables, this checkout first on the path, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def onecycle(*args, cwd, **env: str) -> subprocess.CompletedProcess:
    """`python -m onecycle_cli ARGS...` in `cwd` as a real subprocess, `env` on top of `clean_env()`: for runs
    stopped by a signal (ONECYCLE_FAULT) and then resumed, where the exit code is the signal's."""
    return subprocess.run([sys.executable, "-m", "onecycle_cli", *map(str, args)], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True)


# the fastai book's BatchNorm simple_cnn on 320 bundled 3s and 7s, batch 32: 10 steps an epoch, seconds a run;
# fine_tune: one frozen epoch then two unfrozen ones, 30 steps in all (test_finetune.py, test_resume.py)
BOOK_SETS = ["data.dataset=mnist_sample", "model.channels=[1,8,16,32,64,2]", "data.train_size=320",
             "data.valid_size=64", "train.batch_size=32", "train.log_every=1"]
FINE_TUNE_SETS = BOOK_SETS + ["train.epochs=2", "train.freeze_epochs=1", "optim.lr_mult=10", "schedule.max_lr=0.05"]
FINE_TUNE = ["--config", "mnist"] + [a for s in FINE_TUNE_SETS for a in ("--set", s)]


def reference_run(tmp_path_factory, name: str, *args: str) -> Path:
    """The directory of an uninterrupted `train ARGS` run, which interrupted-and-resumed ones must reproduce."""
    root = tmp_path_factory.mktemp(name)
    p = onecycle("train", *args, "--json", cwd=root)
    assert p.returncode == 0, p.stderr
    return root / json.loads(p.stdout)["run_dir"]


@pytest.fixture(scope="session")
def fine_tune_reference(tmp_path_factory):
    """The uninterrupted fine-tuning run (30 steps across the freeze boundary): made once."""
    return reference_run(tmp_path_factory, "fine_tune_reference", *FINE_TUNE)


# How long a watchdog waits before it calls a command blocked (a read on a FIFO, a lock never freed): long
# enough that a loaded machine, 10-50x slower, never trips it on the seconds-long commands it watches;
# ONECYCLE_TEST_PATIENCE=SECONDS for a machine slower still. No other subprocess in the suite has a time limit.
PATIENCE = float(os.environ.get("ONECYCLE_TEST_PATIENCE", "600"))


def run_watched(*args: str, env: dict | None = None, patience: float = PATIENCE, cwd=None) -> Result:
    """`run_process`, for a command that must never block: if it is still running after `patience` seconds
    it is sent SIGTERM, as a user's `kill` would, and the test fails, saying whether SIGTERM ended it
    within 10 s (a read blocked on a FIFO whose signal handler only sets a flag does not end)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.update(env or {})
    p = subprocess.Popen([sys.executable, "-m", "onecycle_cli", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd)
    try:
        out, err = p.communicate(timeout=patience)
        return Result(p.returncode, out, err)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=10)
        raise AssertionError(f"onecycle {' '.join(map(str, args))} was still running after {patience:.0f} s "
                             f"(blocked?); SIGTERM ended it with exit {p.returncode}: {err[-500:]}")
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"onecycle {' '.join(map(str, args))} was still running after {patience:.0f} s "
                             f"and SIGTERM did not end it within 10 s: only kill -9 did") from None


def env_running_this_onecycle(bin_dir: Path) -> dict:
    """The environment for a shell script under test: its `onecycle` and `python` are this checkout under this
    interpreter, whatever else is on PATH, so that the script exercises the torch under test (scripts/floor.sh
    runs the suite on the oldest torch supported while a newer one may be installed system-wide)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, command in (("onecycle", f'"{sys.executable}" -m onecycle_cli'), ("python", f'"{sys.executable}"')):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def assert_usage_error(r: Result, *fragments: str) -> None:
    """Exit 2, exactly one line on stderr naming what is wrong, no traceback."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.code == 2, f"exit {r.code}, stderr: {r.stderr}"
    assert len(lines) == 1, f"expected one line, got: {r.stderr}"
    assert "Traceback" not in r.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


# ------------------------------------------------------------------------------------------------
# tiny datasets in their real formats


def write_cifar(root: Path, per_batch: int = 16, test: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py with 5 training batches and a test batch; returns the training images/labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": x, b"labels": y, b"filenames": []}, f)
        if name != "test_batch":
            xs.append(x)
            ys.extend(y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch}, f)
    return np.concatenate(xs), np.array(ys)


def write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", train: int = 64, test: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    out = {}
    for split, n in (("train", train), ("t10k", test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / f"{split}-images-idx3-ubyte", x)
        write_idx(raw / f"{split}-labels-idx1-ubyte", y)
        out[split] = (x, y)
    return out


def digits(n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The first n bundled 3-vs-7 digits of a split (28x28 grey) and their labels (0 for a 3, 1 for a 7)."""
    with resources.files("onecycle_cli").joinpath("assets/mnist_sample.npz").open("rb") as f, np.load(f) as z:
        return z[f"x_{split}"][:n].copy(), z[f"y_{split}"][:n].copy()


def save(img: Image.Image, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def photo(x: np.ndarray, i: int) -> tuple[Image.Image, str, dict]:
    """Digit i in one of six guises: grey PNG, tinted JPEG, wide RGB PNG, BMP, lossless WebP, RGBA PNG."""
    grey = Image.fromarray(x)
    rgb = Image.merge("RGB", (grey, grey.point(lambda v: v // 2), grey.point(lambda v: 255 - v)))
    size = (20 + 7 * (i % 5), 28 + 5 * (i % 4))  # mixed sizes, most of them not square
    return [(grey, "png", {}), (rgb.resize(size), "jpg", {"quality": 95}), (rgb.resize(size), "png", {}),
            (rgb, "bmp", {}), (rgb.resize(size), "webp", {"lossless": True}),
            (Image.merge("RGBA", (*rgb.split(), grey)), "png", {})][i % 6]


def truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])


def write_photos(root: Path, train: int = 60, valid: int = 20, bad: bool = True) -> dict:
    """Layout (a): root/train/<3|7>/..., root/valid/<3|7>/... (train + 2 and valid images, and 2 bad files);
    returns the counts per split and class a user would expect."""
    expected = {"train": {"3": 0, "7": 0}, "valid": {"3": 0, "7": 0}}
    for split, n, source in (("train", train, "train"), ("valid", valid, "valid")):
        x, y = digits(n, source)
        for i in range(n):
            img, ext, kw = photo(x[i], i)
            label = "37"[y[i]]
            save(img, root / split / label / f"{i:03d}.{ext}", **kw)
            expected[split][label] += 1
    x, _ = digits(2)
    save(Image.fromarray(x[0]).convert("P"), root / "train" / "3" / "palette.png")
    frames = [Image.fromarray(x[1]), Image.new("L", (28, 28), 255)]
    frames[0].save(root / "train" / "7" / "anim.gif", save_all=True, append_images=frames[1:])
    expected["train"]["3"] += 1
    expected["train"]["7"] += 1
    (root / "train" / "3" / "README.txt").write_text("not an image, and not named like one: ignored")
    os.mkfifo(root / "train" / "3" / "pipe.png")  # not a file: reading it would wait forever, so it is not listed
    (root / "train" / ".DS_Store").write_bytes(b"\0\1hidden")
    if bad:
        (root / "train" / "3" / "notes.jpg").write_text("a text file named .jpg")
        truncated_jpeg(root / "train" / "7" / "cut.jpg")
    return expected


@pytest.fixture
def photos(tmp_path) -> tuple[Path, dict]:
    """An image folder in layout (a), written by `write_photos`, and the counts it should read as."""
    root = tmp_path / "photos"
    return root, write_photos(root)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


# ------------------------------------------------------------------------------------------------
# real runs, made once: what `runs`, `compare` and `report` read

TINY = ["--config", "mnist_sample", "--set", "data.train_size=512", "--set", "data.valid_size=128",
        "--batch-size", "64"]  # 8 steps an epoch: the fewest the fastai 1cycle shape accepts (pct_start 0.25)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict:
    """A range test, a 1cycle fit and a constant-LR fit (2 epochs each) of the bundled mnist_sample.

    Shared by several tests, so treat the directories as read-only: copy one to change it.
    """
    root = tmp_path_factory.mktemp("tiny_runs") / "runs"
    clean = {name: None for name in os.environ if name.startswith("ONECYCLE")}  # None: unset while invoked
    runner = CliRunner()

    def run(*args: str) -> dict:
        r = runner.invoke(app, [*args, *TINY, "--runs-dir", str(root), "--json"], env=clean, catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)

    find = run("find", "--num-it", "30")
    onecycle = run("train", "--epochs", "2")
    constant = run("train", "--epochs", "2", "--schedule", "constant")
    return {"root": root, "find": Path(find["run_dir"]), "onecycle": Path(onecycle["run_dir"]),
            "constant": Path(constant["run_dir"]),
            "summaries": {"find": find, "onecycle": onecycle, "constant": constant}}


# A process can be held at an exact point of its run: ONECYCLE_FAULT=step@N:SIGSTOP stops it (a real SIGSTOP)
# at the Nth step it takes, until a test sends SIGCONT. A signal meant to land mid-training then does, on a
# machine fast enough to run a whole tiny fit in the time a test takes to notice it started.

def proc_state(pid: int) -> str:
    """R, S, T (stopped), Z...; X where there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def pending(pid: int) -> set[int]:
    """The signals waiting to be delivered to `pid` (to a stopped process, until it is continued)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return set()
    mask = 0
    for line in lines:
        if line.startswith(("SigPnd:", "ShdPnd:")):
            mask |= int(line.split()[1], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def go_on(pids: list[int], told: list[int], signals: set[int]) -> None:
    """Each held process continued, those in `told` once one of `signals` is pending there."""
    for pid in told:
        while proc_state(pid) == "T" and not pending(pid) & signals:
            time.sleep(0.01)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
