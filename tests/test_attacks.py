"""The attack corpus (issue 12): onecycle fed what a hostile user, a hostile file or a full disk gives it.

Each case runs the real CLI, grouped by the issue's classes of fault. A case that is refused must
end as every bad input does (tests/test_bad_inputs.py): exit 2, one line on stderr naming what is
wrong, no traceback, nothing on stdout, no run directory left but a failed one, no existing summary
touched. A case that runs (a runs root named `a[/x]`, a report that cannot be written) must end with
its outcome's exit code, and each case checks what the attack was after (a file written through a
link, a command run from a pickle, an escape sequence on the terminal) did not happen.

    python tests/test_attacks.py      # cases per class, for the README
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import shlex
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from test_bad_inputs import HIDDEN_WARNINGS, MNIST, RAW, Given, assert_nothing_left_behind, mnist, records

from conftest import (
    PATIENCE,
    Result,
    assert_usage_error,
    run_process,
    run_watched,
    write_cifar,
    write_mnist,
    write_photos,
)


@dataclass
class Attack:
    """`onecycle ARGS` after `setup` laid out its files; exit `code`, stderr holding every fragment,
    then `check(given, result, names)` for what the attack was after."""

    args: str
    code: int
    fragments: tuple[str, ...]
    setup: Callable[[Given], dict] | None = None
    env: dict[str, str] = field(default_factory=dict)
    check: Callable | None = None
    process: bool = False  # a real process: signals, or a read that could block (still running after 90 s:
    #                        SIGTERM, and the case fails saying whether that ended it)


def attack(id: str, args: str, code: int, *fragments: str, setup=None, env=None, check=None, process=False,
           marks=()):
    return pytest.param(Attack(args, code, fragments, setup, env or {}, check, process), id=id, marks=marks)


def refused(id: str, args: str, *fragments: str, **kwargs):
    return attack(id, args, 2, *fragments, **kwargs)


FIND_FITS_KB = 60  # a tmpfs where a 10-step range test's records fit but its plot and report do not
MNIST_SAMPLE = "--config mnist_sample --set data.train_size=256 --set data.valid_size=64 --batch-size 32"
CIFAR = ("--config cifar --data-dir data --set data.download=false --set model.name=resnet20 --set train.epochs=1 "
         "--batch-size 8")
BATCHES = "data/cifar-10-batches-py"
CANARY = "PWNED"


# ------------------------------------------------------------------------------------------------
# 1. data files never run code: a CIFAR-10 batch is a pickle, and a pickle can name any function

class Call:
    """Pickles as a call of `fn(*args)`: what a hostile batch holds."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def hostile_batch(batch: str, content: Callable[[Path], bytes]):
    """A tiny CIFAR-10 whose `batch` is replaced by `content(canary path)`."""
    def setup(given: Given) -> dict:
        write_cifar(given.root / "data")
        (given.root / BATCHES / batch).write_bytes(content(given.root / CANARY))
        return {}
    return setup


def ran_nothing(given: Given, result: Result, names: dict) -> None:
    assert not (given.root / CANARY).exists(), "the pickle ran its command"


def touch(canary: Path) -> str:
    return f"touch {shlex.quote(str(canary))}"


CODE_CASES = [
    refused("os.system in a batch", f"train {CIFAR}", f"{BATCHES}/data_batch_1", "posix.system",
            "data files never run code",
            setup=hostile_batch("data_batch_1", lambda c: pickle.dumps(Call(os.system, touch(c)))), check=ran_nothing),
    refused("subprocess.Popen in the test batch", f"find {CIFAR}", f"{BATCHES}/test_batch", "subprocess.Popen",
            setup=hostile_batch("test_batch", lambda c: pickle.dumps(Call(subprocess.Popen, ["touch", str(c)]))),
            check=ran_nothing),
    refused("eval in a batch", f"train {CIFAR}", "data_batch_3", "builtins.eval",
            setup=hostile_batch("data_batch_3", lambda c: pickle.dumps(
                Call(eval, f"__import__('os').system({touch(c)!r})"))), check=ran_nothing),
    refused("protocol-0 pickle calling os.system", f"find {CIFAR}", "data_batch_2", "os.system",
            setup=hostile_batch("data_batch_2", lambda c: f"cos\nsystem\n(S'{touch(c)}'\ntR.".encode()),
            check=ran_nothing),
    refused("Python 2 pickle calling __builtin__.exec", f"train {CIFAR}", "data_batch_4", "__builtin__.exec",
            setup=hostile_batch("data_batch_4", lambda c: (
                f"c__builtin__\nexec\n(S\"__import__('os').system({touch(c)!r})\"\ntR.").encode()),
            check=ran_nothing),
    refused("a numpy function that runs code", f"train {CIFAR}", "numpy.testing._private.utils.runstring",
            setup=hostile_batch("data_batch_5", lambda c: (
                "cnumpy.testing._private.utils\nrunstring\n"
                f"(S\"__import__('os').system({touch(c)!r})\"\n(dtR.").encode()), check=ran_nothing),
    refused("a real batch with a call hidden in its labels", f"find {CIFAR}", "data_batch_1", "posix.system",
            setup=hostile_batch("data_batch_1", lambda c: pickle.dumps(
                {b"data": np.zeros((4, 3072), np.uint8), b"labels": [1, 2, Call(os.system, touch(c)), 3]})),
            check=ran_nothing),
    refused("_codecs.encode with another codec", f"train {CIFAR}", "data_batch_1", "_codecs.encode", "rot13",
            setup=hostile_batch("data_batch_1", lambda c: b"c_codecs\nencode\n(X\x05\x00\x00\x00hello"
                                b"X\x05\x00\x00\x00rot13tR.")),
]


# ------------------------------------------------------------------------------------------------
# 2. nothing outside the run directory is written, and no other file is read into a report

def interrupted_copy(given: Given, name: str = "run") -> Path:
    """A copy of the session's interrupted run (epoch 1 of 2 done), ready to resume."""
    path = given.root / "given" / name
    shutil.copytree(given.request.getfixturevalue("interrupted_run"), path)
    return path


def victim(given: Given) -> Path:
    path = given.root / "victim.txt"
    path.write_text("a file outside the run\n")
    return path


def link_in_run(name: str, target: str = "victim"):
    """An interrupted run whose `name` is a link to a file outside it (or to a folder, `target='dir'`)."""
    def setup(given: Given) -> dict:
        run, outside = interrupted_copy(given), victim(given)
        if target == "dir":
            outside = given.root / "elsewhere"
            shutil.copytree(run / name, outside)
            shutil.rmtree(run / name)
        else:
            (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(outside)
        return {"run": run}
    return setup


def victim_untouched(given: Given, result: Result, names: dict) -> None:
    assert (given.root / "victim.txt").read_text() == "a file outside the run\n"


def fifo_in_run(name: str):
    def setup(given: Given) -> dict:
        run = interrupted_copy(given)
        (run / name).unlink(missing_ok=True)
        os.mkfifo(run / name)
        return {"run": run}
    return setup


SECRET = "SECRET-0123456789"


def finished_with(links: tuple[str, ...] = (), files: dict[str, bytes] | None = None):
    """A copy of a finished run with `links` to a secret file outside it, and `files` replaced."""
    def setup(given: Given) -> dict:
        run = given.run("onecycle", "finished")
        (given.root / "secret.txt").write_text(SECRET)
        for name in links:
            (run / name).unlink(missing_ok=True)
            (run / name).symlink_to(given.root / "secret.txt")
        for name, data in (files or {}).items():
            (run / name).write_bytes(data)
        return {"run": run}
    return setup


def report_leaks_nothing(given: Given, result: Result, names: dict) -> None:
    import base64
    page = (names["run"] / "report.html").read_text()
    assert base64.b64encode(SECRET.encode()).decode()[:16] not in page and SECRET not in page
    assert (given.root / "secret.txt").read_text() == SECRET
    assert 'alt="schedule.png"' in page  # the run's own plots are still embedded


def planted_temporary(given: Given) -> dict:
    run = given.run("onecycle", "planted")
    outside = victim(given)
    (run / f".report.html.{os.getpid()}.tmp").symlink_to(outside)  # the name the in-process writer will use
    return {"run": run}


def png_linked_to_victim(given: Given) -> dict:
    run = given.run("onecycle", "plotted")
    (run / "curves.png").unlink()
    (run / "curves.png").symlink_to(victim(given))
    return {"run": run}


def plot_replaces_the_link(given: Given, result: Result, names: dict) -> None:
    victim_untouched(given, result, names)
    curves = names["run"] / "curves.png"
    assert not curves.is_symlink() and curves.read_bytes()[:4] == b"\x89PNG"


LINK_CASES = [
    refused(".lock linked to a file", "train --resume {run}", ".lock is a symbolic link", "not resumed",
            setup=link_in_run(".lock"), check=victim_untouched),
    refused("steps.csv linked to a file", "train --resume {run}", "steps.csv is a symbolic link",
            setup=link_in_run("steps.csv"), check=victim_untouched),
    refused("metrics.csv linked to a file", "train --resume {run}", "metrics.csv is a symbolic link",
            setup=link_in_run("metrics.csv"), check=victim_untouched),
    refused("summary.json linked to a file", "train --resume {run}", "summary.json is a symbolic link",
            setup=link_in_run("summary.json"), check=victim_untouched),
    refused("checkpoints linked to a folder", "train --resume {run}", "checkpoints is a symbolic link",
            setup=link_in_run("checkpoints", target="dir")),
    refused("the checkpoint linked to a file", "train --resume {run}", "checkpoints/last.pt is a symbolic link",
            setup=link_in_run("checkpoints/last.pt"), check=victim_untouched),
    refused(".lock that is a FIFO", "train --resume {run}", ".lock is a FIFO", setup=fifo_in_run(".lock"),
            process=True),
    attack("report with a PNG linked to a secret", "report {run}", 0, setup=finished_with(links=("secret.png",)),
           check=report_leaks_nothing),
    attack("report with curves.png linked to a secret", "report {run}", 0, setup=finished_with(links=("curves.png",)),
           check=report_leaks_nothing),
    attack("report with a PNG name holding text", "report {run}", 0,
           setup=finished_with(links=("curves.png",), files={"lr_find.png": SECRET.encode()}),
           check=report_leaks_nothing),
    attack("report with its temporary file planted as a link", "report {run}", 0, setup=planted_temporary,
           check=victim_untouched),
    attack("plot over a PNG linked to a file", "plot {run}", 0, setup=png_linked_to_victim,
           check=plot_replaces_the_link),
]


# ------------------------------------------------------------------------------------------------
# 3. text from outside is never markup or control codes

ESC_NAME = "run\x1b[2J\x1b]0;owned\x07\rname"


def no_control_codes(given: Given, result: Result, names: dict) -> None:
    out = result.stdout + result.stderr
    for c in "\x1b\x07\r\x9b\u202e":
        assert c not in out, f"{c!r} reached the terminal"


def a_root(name: str, *runs: str):
    """A runs root `name` holding copies of the session's runs."""
    def setup(given: Given) -> dict:
        root = given.root / name
        root.mkdir(parents=True)
        for kind in runs:
            copy = f"20240101-00000{len(list(root.iterdir()))}-{kind}"
            shutil.copytree(given.request.getfixturevalue("tiny_runs")[kind], root / copy)
        return {"root": root}
    return setup


def escaped_name(given: Given) -> dict:
    root = given.root / "runs"
    root.mkdir()
    shutil.copytree(given.request.getfixturevalue("tiny_runs")["onecycle"], root / ESC_NAME)
    return {}


def json_summary(status: str):
    def check(given: Given, result: Result, names: dict) -> None:
        summary = result.json()
        assert summary["status"] == status and Path(summary["run_dir"]).is_dir()
        no_control_codes(given, result, names)
    return check


def mentions(*texts: str):
    def check(given: Given, result: Result, names: dict) -> None:
        for t in texts:
            assert t in result.stderr + result.stdout, f"{t!r} not shown"
        no_control_codes(given, result, names)
    return check


def make_dir(name: str):
    return lambda given: (given.root / name).mkdir(parents=True) or {}


TEXT_CASES = [
    attack("train --json under a runs root named a[/x]", f"train {MNIST_SAMPLE} --epochs 1 --runs-dir 'a[/x]' --json",
           0, setup=make_dir("a["), check=json_summary("completed")),
    attack("an interrupted run under exp[lr=0.1] prints its whole --resume command",
           f"train {MNIST_SAMPLE} --epochs 2 --runs-dir 'exp[lr=0.1]'", 130, "continue with: onecycle train --resume "
           "exp[lr=0.1]/", setup=make_dir("exp[lr=0.1]"), env={"ONECYCLE_FAULT": "step@3:SIGINT"}, process=True,
           check=no_control_codes),
    attack("runs under a root named a[/x]", "runs 'a[/x]'", 0, "1 run in a[/x]", setup=a_root("a[/x]", "onecycle"),
           check=no_control_codes),
    attack("compare under a root named exp[lr=0.1]", "compare --last 2 --runs-dir 'exp[lr=0.1]'", 0,
           "exp[lr=0.1]/", setup=a_root("exp[lr=0.1]", "onecycle", "constant"), check=no_control_codes),
    attack("runs of a run named with ESC, BEL and CR", "runs", 0, "run\\x1b[2J\\x1b]0;owned\\x07\\x0dname",
           setup=escaped_name, check=no_control_codes),
    attack("compare of a run named with ESC, BEL and CR", f"compare runs/{shlex.quote(ESC_NAME)} {{other}}", 0,
           "run\\x1b[2J",
           setup=lambda g: {**escaped_name(g), "other": g.request.getfixturevalue("tiny_runs")["constant"]},
           check=no_control_codes),
    refused("an error naming a config path with ESC", f"train --config {shlex.quote(ESC_NAME + '.yaml')}",
            "no such file", "run\\x1b[2J\\x1b]0;owned\\x07 name.yaml", check=no_control_codes),
    refused("an error naming a value with a right-to-left override", "train --set 'train.device=cpu\u202egpu'",
            "train.device = 'cpu\\u202egpu'", check=no_control_codes),
    refused("rich markup in a value is shown as written", "train --set 'train.device=[bold red]gpu[/]'",
            "train.device = '[bold red]gpu[/]'"),
    attack("an emoji code in a runs root is shown as written", f"find {MNIST_SAMPLE} --num-it 10 --runs-dir ':fire:'",
           0, setup=make_dir(":fire:"), check=mentions("run: :fire:/")),
    attack("runs under a root that is not UTF-8", "runs", 0, "runs\\xff", setup=lambda g: {
        "moved": shutil.copytree(g.request.getfixturevalue("tiny_runs")["find"], g.root / "runs\udcff" / "a-find")},
           env={"ONECYCLE_RUNS": "runs\udcff"}, check=no_control_codes),
]


# ------------------------------------------------------------------------------------------------
# 4. the exit code is the outcome's: views that cannot be written are warnings

def blocked_views(*names: str, fixture: str = "interrupted_run"):
    """A copy of a run to resume, with `names` made folders so that writing them fails."""
    def setup(given: Given) -> dict:
        run = given.root / "given" / "blocked"
        shutil.copytree(given.request.getfixturevalue(fixture), run)
        for name in names:
            (run / name).unlink(missing_ok=True)
            (run / name).mkdir()
        return {"run": run}
    return setup


def warned(name: str, status: str):
    """A warning names the view not written; the summary (on stdout with --json, and on disk) is the outcome's."""
    def check(given: Given, result: Result, files: dict) -> None:
        assert f"warning: {name} not written" in result.stderr, result.stderr
        assert json.loads((files["run"] / "summary.json").read_text())["status"] == status
        # a diverged run says so as its error line (exit 3), and --json still prints its summary
        assert ("onecycle: error" in result.stderr) == (status == "diverged") and result.json()["status"] == status
    return check


def views_warned_on_a_full_disk(given: Given, result: Result, names: dict) -> None:
    assert result.json()["status"] == "completed"
    assert "warning:" in result.stderr and "no space left on" in result.stderr, result.stderr
    assert not list(Path(names["root"]).rglob("*.tmp")), "a temporary file was left on the full disk"


OUTCOME_CASES = [
    attack("a completed resume whose report.html cannot be written", "train --resume {run} --json", 0,
           setup=blocked_views("report.html"), check=warned("report.html", status="completed")),
    attack("a completed resume whose curves.png cannot be written", "train --resume {run} --json", 0,
           setup=blocked_views("curves.png"), check=warned("curves.png", status="completed")),
    attack("a diverged run whose report cannot be written", "train --resume {run} --json", 3,
           "training diverged", setup=blocked_views("report.html", fixture="diverging_run"),
           check=warned("report.html", status="diverged")),
    attack("a SIGTERM'd run whose report cannot be written", "train --resume {run} --json", 143,
           setup=blocked_views("report.html"), env={"ONECYCLE_FAULT": "step@2:SIGTERM"}, process=True,
           check=warned("report.html", status="interrupted")),
    attack("train --json under a runs root that is not UTF-8", f"train {MNIST_SAMPLE} --epochs 1 --json", 0,
           env={"ONECYCLE_RUNS": "runs\udcff"}, check=json_summary("completed")),
    attack("find --json whose views meet a full disk", f"find {MNIST_SAMPLE} --num-it 10 --json --runs-dir {{root}}",
           0, setup=lambda g: {"root": g.request.getfixturevalue("full_disk")(FIND_FITS_KB)},
           check=views_warned_on_a_full_disk),
]

# ------------------------------------------------------------------------------------------------
# 5. small inputs, bounded work

LAUGHS = ("{a: &a [x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
          "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], "
          "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f], h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g], i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]}")


def a_file(name: str, content: str | bytes):
    return lambda given: given.file(name, content) and {}


def a_fifo(name: str):
    return lambda given: os.mkfifo(given.root / name) or {}


def completed_quickly(given: Given, result: Result, names: dict) -> None:
    assert json.loads(result.stdout)["status"] == "completed"


def run_with(name: str, make: Callable[[Path], None], kind: str = "onecycle"):
    """A copy of a finished run in runs/, `make(path of name)` applied to one of its files."""
    def setup(given: Given) -> dict:
        run = given.root / "runs" / "20240101-000000-train-x"
        shutil.copytree(given.request.getfixturevalue("tiny_runs")[kind], run)
        (run / name).unlink(missing_ok=True)
        make(run / name)
        return {"run": run}
    return setup


def listed(status: str):
    def check(given: Given, result: Result, names: dict) -> None:
        assert f"{status}" in result.stderr + result.stdout, result.stderr
    return check


BOUND_CASES = [
    refused("alias bomb in a config file", "train --config bomb.yaml", "bomb.yaml", "more than 100,000 values",
            setup=a_file("bomb.yaml", f"train:\n  seed: {LAUGHS}\n")),
    refused("alias bomb in --set", f"find --set 'train.seed={LAUGHS}'", "--set train.seed=", "more than 100,000"),
    refused("alias bomb in an ONECYCLE_ variable, read by runs", "runs", "ONECYCLE_TRAIN__SEED", "more than 100,000",
            env={"ONECYCLE_TRAIN__SEED": LAUGHS}),
    refused("alias bomb in an ONECYCLE_ variable, read by config", "config", "ONECYCLE_OPTIM__BETAS", "aliases",
            env={"ONECYCLE_OPTIM__BETAS": "[" + ",".join(["&a [1]"] + ["*a"] * 300) + "]"}),
    refused("an alias inside its own anchor", "train --config loop.yaml", "contains itself",
            setup=a_file("loop.yaml", "train: &a\n  seed: *a\n")),
    refused("nesting a thousand deep in --set", "train --set 'model.channels=" + "[" * 1000 + "]" * 1000 + "'",
            "nested more than 32 levels"),
    refused("a 5000-digit integer", "train --set 'train.seed=" + "9" * 5000 + "'", "train.seed = '99999",
            "an integer"),
    refused("--config /dev/zero", "config --config /dev/zero", "/dev/zero is a device", process=True),
    refused("--config a FIFO", "config --config pipe.yaml", "pipe.yaml is a FIFO", setup=a_fifo("pipe.yaml"),
            process=True),
    refused("--config of two megabytes", "config --config big.yaml", "big.yaml is 2,097,152 bytes",
            setup=a_file("big.yaml", "#" * (2 << 20))),
    attack("train.log_every of a billion", f"train {MNIST_SAMPLE} --epochs 1 --set train.log_every=1000000000 --json",
           0, check=completed_quickly),
    refused("find --num-it of a billion", "find --num-it 1000000000", "find.num_it = 1000000000", "<= 100000"),
    refused("--seeds of two hundred million", "train --seeds 200000000", "--seeds 200000000", "at most 1000"),
    refused("a synthetic set larger than memory", "train --dataset synthetic --set data.image_size=512 "
            "--set data.train_size=10000000", "synthetic set of 10,000,000", "more than the", "GB available"),
    refused("simple_cnn of ninety billion weights",
            "train --config mnist_sample --set model.channels=[1,100000,100000,2] --set model.kernel_sizes=[3]",
            "90,002,700,000 conv weights", "at most 1,000,000,000"),
    refused("schedule --epochs of a billion", "schedule --epochs 1000000000", "steps a preview walks through",
            "--epochs"),
    refused("schedule --steps-per-epoch of a billion", "schedule --steps-per-epoch 1000000000 --epochs 95",
            "95,000,000,000-step schedule"),
    attack("runs with a .lock that is a FIFO", "runs", 0, "1 run in runs", process=True,
           setup=run_with(".lock", os.mkfifo), check=listed("completed")),
    attack("runs with a summary.json that is a FIFO", "runs", 0, process=True,
           setup=run_with("summary.json", os.mkfifo), check=listed("unreadable")),
    refused("--max-lr naming a run whose summary is a FIFO", "train --max-lr {run}", "no readable summary.json",
            setup=run_with("summary.json", os.mkfifo, kind="find"), process=True),
    attack("report of a run whose metrics.csv is a FIFO", "report {run}", 0, process=True,
           setup=run_with("metrics.csv", os.mkfifo)),
    attack("runs with a config.yaml that is an alias bomb", "runs --json", 0,
           setup=run_with("config.yaml", lambda p: p.write_text(f"train:\n  seed: {LAUGHS}\n")),
           check=lambda g, r, f: json.loads(r.stdout)[0]["status"] == "completed" or pytest.fail(r.stdout)),
]


# ------------------------------------------------------------------------------------------------
# 6. what passes validation runs: what would fail later is refused now

LONG = "x" * 300  # one path part over the 255 bytes every common file system takes


def checkpoint_changed(change: Callable[[dict], None]):
    """An interrupted run whose checkpoint unpickles but was changed by `change`."""
    def setup(given: Given) -> dict:
        run = interrupted_copy(given)
        saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
        change(saved)
        torch.save(saved, run / "checkpoints" / "last.pt")
        return {"run": run}
    return setup


def first_tensor(d: dict) -> str:
    return next(k for k, v in d.items() if torch.is_tensor(v) and v.dim())


def a_find_summary(**changes):
    def setup(given: Given) -> dict:
        return {"run": given.run("find", "a-find", **changes)}
    return setup


VALIDATION_CASES = [
    refused("--seed 2**32", "train --seed 4294967296", "train.seed = 4294967296", "<= 4294967295"),
    refused("--seeds crossing 2**32", f"train {MNIST_SAMPLE} --epochs 1 --seeds 4294967295,4294967296",
            "seed 4294967296 is above 4294967295"),
    refused("--seeds counting past 2**32", f"train {MNIST_SAMPLE} --epochs 1 --set train.seed=4294967294 --seeds 3",
            "seed 4294967296 is above"),
    refused("max_lr that overflows float32", "train --max-lr 3.5e38", "schedule.max_lr = 3.5e+38", "<= 1e+18"),
    refused("weight decay that overflows float32 with the LR", "train --set optim.weight_decay=1e30",
            "optim.weight_decay = 1e+30", "<= 1e+18"),
    refused("end_lr that overflows float32", "find --end-lr 1e39", "find.end_lr = 1e+39", "<= 1e+18"),
    refused("--runs-dir with a part over 255 bytes", f"train --runs-dir {LONG}", "run.root", "a part of 300 bytes"),
    refused("--data-dir with a part over 255 bytes", f"find --data-dir data/{LONG}", "data.root",
            "a part of 300 bytes"),
    refused("--config with a part over 255 bytes", f"config --config {LONG}.yaml", "--config", "a part of 305 bytes"),
    refused("--resume with a part over 255 bytes", f"train --resume {LONG}", "--resume", "a part of 300 bytes"),
    refused("--max-lr with a part over 255 bytes", f"train --max-lr runs/{LONG}", "--max-lr", "a part of 300"),
    refused("schedule --out with a part over 255 bytes", f"schedule --out {LONG}.png", "--out", "a part of 304"),
    refused("runs DIR with a part over 255 bytes", f"runs {LONG}", "DIR", "a part of 300 bytes"),
    refused("compare with a part over 255 bytes", f"compare {LONG} {LONG}2", "RUN", "a part of 300 bytes"),
    refused("report with a part over 255 bytes", f"report {LONG}", "RUN_DIR", "a part of 300 bytes"),
    refused("plot with a part over 255 bytes", f"plot {LONG}", "RUN_DIR", "a part of 300 bytes"),
    refused("init PATH with a part over 255 bytes", f"init cifar {LONG}.yaml", "PATH", "a part of 305 bytes"),
    refused("data check --data-dir with a part over 255 bytes", f"data check --data-dir {LONG}", "data.root",
            "a part of 300 bytes"),
    refused("ONECYCLE_RUNS with a part over 255 bytes", "runs", "ONECYCLE_RUNS", "a part of 300 bytes",
            env={"ONECYCLE_RUNS": LONG}),
    refused("a data root holding a NUL", "config --config nul.yaml", "data.root", "a NUL character",
            setup=a_file("nul.yaml", 'data:\n  root: "da\\0ta"\n')),
    refused("a checkpoint without its optimizer", "train --resume {run}", "'optimizer' is NoneType",
            setup=checkpoint_changed(lambda c: c.pop("optimizer"))),
    refused("a checkpoint of another model's shapes", "train --resume {run}", "does not fit this run", "size mismatch",
            setup=checkpoint_changed(lambda c: c["model"].__setitem__(first_tensor(c["model"]), torch.zeros(3)))),
    refused("a checkpoint whose loop step is text", "train --resume {run}", "loop state's step is 'abc'",
            setup=checkpoint_changed(lambda c: c["state"].__setitem__("step", "abc"))),
    refused("a checkpoint past the end of its run", "train --resume {run}", "which no run of",
            setup=checkpoint_changed(lambda c: c["state"].update(step=10**9, epoch=10**6))),
    refused("a checkpoint whose optimizer state fits no parameter", "train --resume {run}", "optimizer state",
            "for a parameter of shape", setup=checkpoint_changed(lambda c: [
                s.__setitem__(k, torch.zeros(7)) for s in c["optimizer"]["state"].values()
                for k in list(s) if torch.is_tensor(s[k]) and s[k].dim()])),
    refused("a checkpoint of another schedule's length", "train --resume {run}", "scheduler state 'total_steps'",
            setup=checkpoint_changed(lambda c: c["scheduler"].__setitem__("total_steps", 5))),
    refused("a find summary whose suggestions are a list", "train --max-lr {run}", "no usable 'floor' suggestion",
            setup=a_find_summary(suggestions=[1, 2])),
    refused("a find summary whose chosen name is a list", "train --max-lr {run}", "no usable",
            setup=a_find_summary(suggestion={"name": ["valley"]})),
    refused("a find summary whose suggestion is text", "train --max-lr {run}", "no usable 'floor' suggestion",
            setup=a_find_summary(suggestions={"valley": "0.01"})),
    refused("a find summary whose lr is true", "train --max-lr {run}", "no usable 'floor' suggestion",
            setup=a_find_summary(suggestions={"valley": {"lr": True}})),
    refused("an idx header whose sizes multiply past 2**64", f"train {MNIST}", "t10k-images-idx3-ubyte",
            "header says 2147483648x2147483648x4 = 18446744073709551616 bytes, the file holds 0",
            setup=mnist(lambda raw: (raw / "t10k-images-idx3-ubyte").write_bytes(
                b"\x00\x00\x08\x03" + struct.pack(">3I", 2**31, 2**31, 4)))),
    refused("report of a comparison whose summary is not one", "report cmp", "cmp/summary.json is not a comparison",
            setup=a_file("cmp/summary.json", '{"command": "compare", "runs": [1, {"id": 2}], "differing": [1]}')),
    attack("report of a find run whose summary fields have the wrong types", "report {run}", 0,
           setup=a_find_summary(curves=[1, {"suggestions": [1]}, {"suggestions": {"valley": 3}}], suggestion=[1],
                                best=5, final="x", wall_seconds="fast", batch_size=[]),
           check=lambda g, r, f: (f["run"] / "report.html").is_file() or pytest.fail("no report")),
    refused("a YAML key that is a list", "train --config keys.yaml", "keys.yaml line 2", "a key that is a list",
            setup=a_file("keys.yaml", "train:\n  ? [seed]\n  : 1\n")),
    refused("a YAML key that is a mapping", "find --config keys.yaml", "a key that is a mapping",
            setup=a_file("keys.yaml", "{train: 1}: 2\n")),
    refused("a --set value with a list key", "train --set 'model.channels={[1]: 2}'", "model.channels = '{[1]: 2}'",
            "a list"),
    refused("schedule --out into a missing folder", "schedule --out nowhere/s.png", "--out nowhere/s.png",
            "the folder nowhere does not exist"),
    refused("schedule --out onto a folder", "schedule --out .", "--out .", "a directory"),
]


# ------------------------------------------------------------------------------------------------
# 7. a path is a path; numbers are read as YAML 1.2 reads them

def resolved(**expected):
    """`onecycle config --json` printed a config with these dotted keys at these values."""
    def check(given: Given, result: Result, names: dict) -> None:
        cfg = result.json()
        for dotted, value in expected.items():
            section, key = dotted.split("__")
            assert cfg[section][key] == value, (dotted, cfg[section][key])
    return check


PATH_CASES = [
    attack("--runs-dir 2024 is the folder 2024", "config --runs-dir 2024 --json", 0, check=resolved(run__root="2024")),
    attack("--runs-dir 1e3 is the folder 1e3", "config --runs-dir 1e3 --json", 0, check=resolved(run__root="1e3")),
    attack("--data-dir null is the folder null", "config --data-dir null --json", 0, check=resolved(data__root="null")),
    attack("ONECYCLE_RUNS=2024 is the folder 2024", "config --json", 0, env={"ONECYCLE_RUNS": "2024"},
           check=resolved(run__root="2024")),
    attack("ONECYCLE_DATA__ROOT=~ is the folder ~", "config --json", 0, env={"ONECYCLE_DATA__ROOT": "~"},
           check=resolved(data__root="~")),
    attack("--set run.root=010 is the folder 010", "config --set run.root=010 --json", 0,
           check=resolved(run__root="010")),
    attack("root: 2024 in a YAML file is the folder 2024", "config --config paths.yaml --json", 0,
           setup=a_file("paths.yaml", "run:\n  root: 2024\ndata:\n  root: yes\n"),
           check=resolved(run__root="2024", data__root="yes")),
    attack("a quoted path keeps its text", "config --config paths.yaml --json", 0,
           setup=a_file("paths.yaml", "run:\n  root: '2024 runs'\n"), check=resolved(run__root="2024 runs")),
    refused("--runs-dir '' (an unset variable)", "config --runs-dir ''", "run.root = ''", "no characters"),
    refused("--seed 1:30 is not sexagesimal 90", "config --seed 1:30", "train.seed = '1:30'", "an integer"),
    attack("--epochs 010 is ten, not octal eight", "config --epochs 010 --json", 0, check=resolved(train__epochs=10)),
    attack("0x10 is sixteen and 0o17 fifteen, as YAML 1.2",
           "config --set train.seed=0x10 --set train.epochs=0o17 --json", 0,
           check=resolved(train__seed=16, train__epochs=15)),
    refused("yes is not a boolean", "config --set data.flip=yes", "data.flip = 'yes'", "true or false"),
    refused("off in a YAML file is not a boolean", "config --config off.yaml", "data.crop = 'off'", "true or false",
            setup=a_file("off.yaml", "data:\n  crop: off\n")),
    refused("1_000 is not a thousand", "config", "train.epochs = '1_000'", "an integer",
            env={"ONECYCLE_TRAIN__EPOCHS": "1_000"}),
    refused("a date is not a timestamp", "config --set train.seed=2024-01-01", "train.seed = '2024-01-01'"),
]


# ------------------------------------------------------------------------------------------------
# 8. an interrupted `--max-lr find` records no LR, and a second Ctrl-C no epoch it did not keep

def no_lr_recorded(given: Given, result: Result, names: dict) -> None:
    run = next((given.root / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["max_lr"] is None, summary
    assert "no max_lr was chosen" in summary["stop_reason"] and "start the run again" in summary["stop_reason"]
    assert (run / "config.yaml").read_text().startswith("# schedule.max_lr is chosen by this run's range test")
    assert json.loads((run / "lr_find.json").read_text())["chosen"] is None


def kept_what_it_claims(given: Given, result: Result, names: dict) -> None:
    run = next((given.root / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    kept = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert summary["status"] == "interrupted" and "second SIGINT" in summary["stop_reason"]
    assert (summary["epochs_done"], summary["steps"]) == (kept["epoch"], kept["step"]) == (1, 8), summary
    assert not list(run.rglob("*.tmp"))


LR_CASES = [
    attack("SIGTERM during the range test of train --max-lr find", f"train {MNIST_SAMPLE} --epochs 2 --max-lr find",
           143, "no max_lr chosen", env={"ONECYCLE_FAULT": "sweep@5:SIGTERM"}, process=True, check=no_lr_recorded),
    attack("a second SIGINT while the epoch's checkpoint is written", f"train {MNIST_SAMPLE} --epochs 3", 130,
           env={"ONECYCLE_FAULT": "eval@2:SIGINT,checkpoint@2:SIGINT"}, process=True, check=kept_what_it_claims),
    refused("--resume of a run whose range test was interrupted", "train --resume {run}",
            "no checkpoint to resume from", "start it again",
            setup=lambda g: {"run": shutil.copytree(g.request.getfixturevalue("find_interrupted_run"),
                                                    g.root / "given" / "find-first")}),
]


# ------------------------------------------------------------------------------------------------
# 9. weights and checkpoints are checked before use: every tensor one a model can take, statistics
#    that normalise sanely, no read that blocks, and never torch's advice to load a file unrestricted

def tiny_checkpoint(given: Given) -> dict:
    return torch.load(given.request.getfixturevalue("tiny_runs")["onecycle"] / "checkpoints" / "last.pt",
                      weights_only=True)


def weights_with(change: Callable[[dict], None], **save):
    """model.pretrained {file}: a finished run's state_dict, as a training script saves it, `change`d."""
    def setup(given: Given) -> dict:
        state = tiny_checkpoint(given)["model"]
        change(state)
        torch.save(state, given.root / "weights.pt", **save)
        return {"file": given.root / "weights.pt"}
    return setup


def init_with(change: Callable[[dict], None] | None = None, **files: Callable[[Path], None]):
    """--init {run}: a copy of a finished run, its checkpoint `change`d and `files` (relative paths) made anew."""
    def setup(given: Given) -> dict:
        run = given.run("onecycle", "source")
        if change:
            path = run / "checkpoints" / "last.pt"
            saved = torch.load(path, weights_only=True)
            change(saved)
            torch.save(saved, path)
        for name, make in files.items():
            (run / name).unlink()
            make(run / name)
        return {"run": run}
    return setup


def first_made(convert: Callable[[torch.Tensor], torch.Tensor], where: str = "model"):
    """A change: the first tensor of the state_dict (`where="model"`: of a checkpoint's model) converted."""
    def change(d: dict) -> None:
        d = d[where] if where else d
        name = first_tensor(d)
        d[name] = convert(d[name])
    return change


def quantized(t: torch.Tensor) -> torch.Tensor:
    import warnings
    with warnings.catch_warnings():  # torch deprecates its own quantized tensors, but still loads them
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(t.float(), 0.01, 0, torch.qint8)


KINDS = {"sparse": (lambda t: t.to_sparse(), "a sparse_coo tensor"), "meta": (lambda t: t.to("meta"), "a meta tensor"),
         "quantized": (quantized, "a quantized tensor (qint8)"),
         "complex": (lambda t: t.to(torch.complex64), "a complex tensor (complex64)")}


def stats(*whole, **changes):
    """A change: the checkpoint's recorded normalisation with `changes`, or replaced by `whole[0]`."""
    def change(saved: dict) -> None:
        saved["normalize"] = whole[0] if whole else {**saved["normalize"], **changes}
    return change


def nothing_trained(given: Given, result: Result, names: dict) -> None:
    assert not list(given.root.glob("runs/*/checkpoints/*.pt")), "a run trained on what was refused"
    assert "diverged" not in result.stderr  # the file's fault, not the run's


def no_unsafe_advice(given: Given, result: Result, names: dict) -> None:
    nothing_trained(given, result, names)
    for advice in ("weights_only", "safe_globals", "trust"):
        assert advice not in result.stderr, f"the error repeats torch's advice: {result.stderr}"


def status_unknown(given: Given, result: Result, names: dict) -> None:
    source = f"run {names['run']} (status unknown)"
    assert result.json()["weights"]["source"] == source and result.json()["weights"]["taken"] > 0, result.stdout
    assert f"from {source}" in result.stderr


def a_training_scripts_args(d: dict) -> None:
    import argparse
    d["args"] = argparse.Namespace(lr=0.1, epochs=90)  # what many training scripts save beside the weights


PRETRAINED = f"train {MNIST_SAMPLE} --epochs 1 --set model.pretrained={{file}}"
INIT = f"train {MNIST_SAMPLE} --epochs 1 --init {{run}}"

WEIGHT_CASES = [
    *[refused(f"a {kind} tensor in model.pretrained", PRETRAINED, "weights.pt: tensor '0.0.weight' is " + what,
              setup=weights_with(first_made(convert, where=None)), check=nothing_trained)
      for kind, (convert, what) in KINDS.items()],
    *[refused(f"a {kind} tensor in an --init run's checkpoint", INIT, "checkpoints/last.pt: tensor '0.0.weight' is "
              + what, setup=init_with(first_made(convert)), check=nothing_trained)
      for kind, (convert, what) in KINDS.items()],
    refused("a sparse tensor in the checkpoint --resume reads", "train --resume {run}", "checkpoint last.pt cannot be "
            "read", "tensor 'model.0.0.weight' is a sparse_coo tensor",
            setup=checkpoint_changed(first_made(lambda t: t.to_sparse())), check=nothing_trained),
    refused("a complex optimizer state in the checkpoint --resume reads", "train --resume {run}", "optimizer.state.",
            "is a complex tensor", check=nothing_trained, setup=checkpoint_changed(lambda c: [
                s.__setitem__(k, s[k].to(torch.complex64)) for s in c["optimizer"]["state"].values()
                for k in list(s) if torch.is_tensor(s[k]) and s[k].dim()])),
    refused("statistics that are strings", INIT, "its recorded normalize.mean[0] is a str",
            setup=init_with(stats(mean=["33.3"])), check=nothing_trained),
    refused("statistics that are a name", INIT, "its recorded normalize is a str",
            setup=init_with(stats("imagenet")), check=nothing_trained),
    refused("statistics of two channels' stds and one mean", INIT, "normalize has 1 means and 2 stds",
            setup=init_with(stats(std=[78.5, 78.5])), check=nothing_trained),
    refused("a std of 0", INIT, "checkpoints/last.pt: its recorded normalize.std[0] is 0.0",
            setup=init_with(stats(std=[0.0])), check=nothing_trained),
    refused("a std of NaN", INIT, "normalize.std[0] is nan", setup=init_with(stats(std=[float("nan")])),
            check=nothing_trained),
    refused("a negative std", INIT, "normalize.std[0] is -78.5", setup=init_with(stats(std=[-78.5])),
            check=nothing_trained),
    refused("a mean past float32", INIT, "normalize.mean[0] is 1e+39", setup=init_with(stats(mean=[1e39])),
            check=nothing_trained),
    refused("a std of 0 in the checkpoint --resume reads", "train --resume {run}", "checkpoint last.pt cannot be read",
            "its recorded normalize.std[0] is 0.0", setup=checkpoint_changed(stats(std=[0.0])), check=nothing_trained),
    attack("--init of a run whose summary.json nests 100,000 deep", INIT + " --json", 0,
           setup=init_with(**{"summary.json": lambda p: p.write_text("[" * 100_000)}), check=status_unknown),
    attack("--init of a run whose summary.json is a FIFO", INIT + " --json", 0, process=True,
           setup=init_with(**{"summary.json": os.mkfifo}), check=status_unknown),
    attack("--init of a run whose summary.json is a link to /dev/zero", INIT + " --json", 0, process=True,
           setup=init_with(**{"summary.json": lambda p: p.symlink_to("/dev/zero")}), check=status_unknown),
    refused("model.pretrained a FIFO", PRETRAINED, "pipe.pt: a FIFO, not a file", process=True,
            setup=lambda g: os.mkfifo(g.root / "pipe.pt") or {"file": g.root / "pipe.pt"}, check=nothing_trained),
    refused("model.pretrained a link to /dev/zero", PRETRAINED, "zero.pt: a device, not a file", process=True,
            setup=lambda g: (g.root / "zero.pt").symlink_to("/dev/zero") or {"file": g.root / "zero.pt"},
            check=nothing_trained),
    refused("--init of a run whose last.pt is a FIFO", INIT, "checkpoints/last.pt is a FIFO", process=True,
            setup=init_with(**{"checkpoints/last.pt": os.mkfifo}), check=nothing_trained),
    refused("--init of a run whose last.pt is a link out of it", INIT, "checkpoints/last.pt is a symbolic link to",
            setup=lambda g: init_with(**{"checkpoints/last.pt": lambda p: p.symlink_to(
                g.request.getfixturevalue("tiny_runs")["constant"] / "checkpoints" / "last.pt")})(g),
            check=nothing_trained),
    refused("model.pretrained naming a global torch does not load", PRETRAINED, "weights.pt: not a weights file torch "
            "reads safely", "Unsupported global", "argparse.Namespace", setup=weights_with(a_training_scripts_args),
            check=no_unsafe_advice),
    refused("a legacy-format model.pretrained naming a global", PRETRAINED, "not a weights file torch reads safely",
            setup=weights_with(a_training_scripts_args, _use_new_zipfile_serialization=False), check=no_unsafe_advice),
    refused("a --resume checkpoint naming a global torch does not load", "train --resume {run}", "last.pt cannot be "
            "read", "argparse.Namespace", setup=checkpoint_changed(a_training_scripts_args), check=no_unsafe_advice),
]


# ------------------------------------------------------------------------------------------------
# 10. completion: what the shell hands over, malformed, completes nothing and says nothing

def quiet(*expected: str):
    """Nothing on stderr; stdout holds the `expected` candidates, or nothing."""
    def check(given: Given, result: Result, names: dict) -> None:
        assert result.stderr == "", result.stderr
        assert result.stdout.split() == list(expected), result.stdout
    return check


def completing(code: int, *expected: str, **env: str):
    return dict(code=code, check=quiet(*expected), process=True, env=env)


def bash_words(words: str, index: str | None = None, **env: str) -> dict:
    return {"_ONECYCLE_COMPLETE": "complete_bash", "COMP_WORDS": words,
            **({"COMP_CWORD": index} if index is not None else {}), **env}


COMPLETION_CASES = [
    attack("bash completion without COMP_WORDS or COMP_CWORD", "", **completing(0, _ONECYCLE_COMPLETE="complete_bash")),
    attack("bash completion without COMP_CWORD", "", **completing(0, **bash_words("onecycle tr"))),
    attack("bash completion with COMP_CWORD=abc", "", **completing(0, **bash_words("onecycle tr", "abc"))),
    attack("bash completion with COMP_CWORD=-1", "", **completing(0, **bash_words("onecycle tr", "-1"))),
    attack("bash completion with a 5000-digit COMP_CWORD", "",
           **completing(0, **bash_words("onecycle tr", "9" * 5000))),
    attack("bash completion with COMP_CWORD past the words", "", **completing(0, "find", "train", "grid", "config",
                                                                              "presets", "init", "schedule", "plot",
                                                                              "runs", "compare", "report",
                                                                              "evaluate", "predict", "export", "data",
                                                                              **bash_words("onecycle tr", "99999"))),
    attack("bash completion with an unbalanced quote", "", **completing(0, "train", **bash_words("onecycle 'tr", "1"))),
    attack("bash completion of bytes that are not UTF-8", "", **completing(
        0, **bash_words("onecycle train --set \udcff\udcfe\x1b[2J", "3"))),
    attack("bash completion of --set under an alias bomb", "", **completing(
        0, "train.epochs=", "train.epochs=95", **bash_words(f"onecycle train --set 'train.seed={LAUGHS}' --set "
                                                             f"train.ep", "5"))),
    attack("bash completion of --set under a --config that is a FIFO", "", **completing(
        0, "train.epochs=", "train.epochs=95", **bash_words("onecycle train --config pipe.yaml --set train.ep", "5")),
        setup=a_fifo("pipe.yaml")),
    attack("an unknown completion instruction", "", **completing(1, _ONECYCLE_COMPLETE="nonsense")),
    attack("click's order of the instruction (bash_complete)", "", **completing(1, _ONECYCLE_COMPLETE="bash_complete")),
    attack("zsh_complete", "", **completing(1, _ONECYCLE_COMPLETE="zsh_complete")),
    attack("fish_complete", "", **completing(1, _ONECYCLE_COMPLETE="fish_complete")),
    attack("a script for an unknown shell", "", **completing(1, _ONECYCLE_COMPLETE="source_tcsh")),
    attack("an unknown instruction for a known shell", "", **completing(1, _ONECYCLE_COMPLETE="install_bash")),
    attack("zsh completion with an unbalanced quote", "", **completing(
        0, "_arguments", "'*:", ':(("train":"1cycle', "fit", "(or", "a", "baseline", "schedule),...\"))'",
        _ONECYCLE_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="onecycle 'tr")),
    attack("fish completion with an unknown action", "", **completing(
        0, _ONECYCLE_COMPLETE="complete_fish", _TYPER_COMPLETE_FISH_ACTION="nonsense",
        _TYPER_COMPLETE_ARGS="onecycle")),
]


# ------------------------------------------------------------------------------------------------
# 9. the decode cache never follows a link or blocks: a data folder received from someone else may
# hold anything in its .onecycle-cache

FOLDER = "--config folder --data-dir photos --set data.image_size=16"
CHECK = f"data check {FOLDER} --json"
TRAIN = (f"train {FOLDER} --model simple_cnn --set model.channels=[3,4,2] --set model.kernel_sizes=[3] "
         "--batch-size 2 --epochs 1 --set schedule.pct_start=0.5 --json")  # 8 images, 4 steps
SETTINGS = "photos/.onecycle-cache/16px-crop-rgb"
OUTSIDE = "outside"  # a folder beside the data, holding a canary, that no case may change
NEEDS_ROOT = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mknod needs root")


def photos_and_canary(given: Given) -> None:
    write_photos(given.root / "photos", train=6, valid=4, bad=False)  # 12 images: 8 to train, 4 to validate
    given.file(f"{OUTSIDE}/canary.txt", CANARY)


def check_folder(given: Given, *extra: str) -> Result:
    r = given.request.getfixturevalue("cli")(*shlex.split(CHECK), *extra)
    assert r.code == 0, r.stderr
    return r


def cache_planted(*plants: Callable[[Path, Given], None], build: bool = True):
    """A tiny image folder with its cache (built by a real `data check` if `build`), then each
    `plant(settings folder, given)` applied: what a folder from someone else may hold."""
    def setup(given: Given) -> dict:
        photos_and_canary(given)
        settings = Path(check_folder(given).json()["cache"]["path"]) if build else given.root / SETTINGS
        for plant in plants:
            plant(settings, given)
        return {}
    return setup


def replaced(name: str, make: Callable[[Path, Given], None]):
    """`make(path, given)` where the cache has `name` (a glob in the settings folder, or a path from the data
    folder's parent when it starts with photos/)."""
    def plant(settings: Path, given: Given) -> None:
        paths = [given.root / name] if name.startswith("photos/") else sorted(settings.glob(name))
        assert paths, name
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            make(path, given)
    return plant


def link(target: str):
    """A symbolic link to `target` (under the case's folder, or absolute)."""
    return lambda path, given: path.symlink_to(given.root / target)


def fifo(path: Path, given: Given) -> None:
    os.mkfifo(path)


def zero_device(path: Path, given: Given) -> None:
    os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's own numbers, under the cache's name


def sparse(nbytes: int, head: bytes = b""):
    def make(path: Path, given: Given) -> None:
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(nbytes)  # no blocks: a huge file that costs nothing to plant
    return make


def planted_generations(settings: Path, given: Given) -> None:
    """Names a build deletes when they are its own old generations, here not its own: a folder (with a file
    in it), a link, and a file of a near name."""
    (settings / "images-0123456789ab.npy").mkdir()
    (settings / "images-0123456789ab.npy" / "keep.txt").write_text("someone's")
    (settings / "sums-0123456789ab.npy").symlink_to(given.root / OUTSIDE / "canary.txt")
    (settings / "images-notatoken.npy").write_text("someone's")
    (settings / "manifest.json").unlink()  # so that the next run builds, and removes what it may


def outside_untouched(given: Given, result: Result, names: dict) -> None:
    outside = given.root / OUTSIDE
    assert sorted(p.name for p in outside.iterdir()) == ["canary.txt"], sorted(outside.iterdir())
    assert (outside / "canary.txt").read_text() == CANARY


def rebuilt(why: str, fresh: tuple[str, ...] = ()):
    """The run ended, the cache was decoded again with a note saying `why`, and `fresh` names in the settings
    folder are now regular files of the cache's own (replaced in place, not written through)."""
    def check(given: Given, result: Result, names: dict) -> None:
        outside_untouched(given, result, names)
        summary = result.json()
        cache = summary["cache"] if "cache" in summary else json.loads(
            (Path(summary["run_dir"]) / "data_report.json").read_text())["cache"]
        assert cache["status"] == "built" and why in cache.get("note", ""), cache
        for name in fresh:
            assert (given.root / SETTINGS / name).is_file() and not (given.root / SETTINGS / name).is_symlink(), name
        again = check_folder(given).json()["cache"]
        assert again["status"] == "hit", again
    return check


def lock_replaced(given: Given, result: Result, names: dict) -> None:
    outside_untouched(given, result, names)
    lock = given.root / SETTINGS / ".lock"
    assert lock.is_file() and not lock.is_symlink() and result.json()["cache"]["status"] == "hit"


def left_alone(given: Given, result: Result, names: dict) -> None:
    outside_untouched(given, result, names)
    settings = given.root / SETTINGS
    assert (settings / "images-0123456789ab.npy" / "keep.txt").read_text() == "someone's"
    assert (settings / "sums-0123456789ab.npy").is_symlink() and (settings / "images-notatoken.npy").is_file()
    ours = sorted(p.name for p in settings.iterdir() if p.is_file() and not p.is_symlink() and "-" in p.name)
    assert len(ours) == 3 and ours[0].startswith("images-") and ours[1] == "images-notatoken.npy", ours  # one pair


def shared_folder_linked(given: Given) -> dict:
    """data.cache whose folder for this data root is a link to a folder outside."""
    photos_and_canary(given)
    check_folder(given, "--set", f"data.cache={given.root / 'shared'}")
    [per_root] = (given.root / "shared").iterdir()
    shutil.rmtree(per_root)
    per_root.symlink_to(given.root / OUTSIDE)
    return {"cache": given.root / "shared"}


def full_cache(room: str):
    """A folder whose cache (data.cache) is on a small real disk, filled but for `room` ("none", or
    "images": the new images fit and their sums do not), and one image changed: the next run writes a
    new generation there and meets ENOSPC."""
    def setup(given: Given) -> dict:
        photos_and_canary(given)
        cache = given.request.getfixturevalue("full_disk")(64).parent / "cache"
        settings = Path(check_folder(given, "--set", f"data.cache={cache}").json()["cache"]["path"])
        changed = sorted((given.root / "photos" / "valid").rglob("*.png"))[0]
        os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
        page = os.statvfs(cache).f_frsize
        images = next(settings.glob("images-*.npy")).stat().st_size
        keep = 0 if room == "none" else -(-images // page) * page
        free = os.statvfs(cache).f_bavail * page
        with open(cache.parent / "filler", "wb") as f:
            f.write(b"\0" * (free - keep))
        assert os.statvfs(cache).f_bavail * page == keep
        return {"cache": cache, "settings": settings, "before": sorted(os.listdir(settings))}
    return setup


def freed_then_works(given: Given, result: Result, names: dict) -> None:
    assert f"no space left on {names['settings']}" in result.stderr, result.stderr
    assert sorted(os.listdir(names["settings"])) == names["before"], "the failed build left files behind"
    os.unlink(names["cache"].parent / "filler")  # space is back: the next run works, decoding only the changed file
    again = check_folder(given, "--set", f"data.cache={names['cache']}").json()["cache"]
    assert again["status"] == "updated" and again["decoded"] == 1, again
    assert len(list(names["settings"].glob("images-*.npy"))) == 1


CACHE_CASES = [
    refused(".onecycle-cache linked to a folder outside", CHECK, "cache photos/.onecycle-cache is a symbolic link",
            "data.cache", setup=cache_planted(replaced("photos/.onecycle-cache", link(OUTSIDE)), build=False),
            check=outside_untouched),
    refused("train with .onecycle-cache linked to a folder outside", TRAIN, ".onecycle-cache is a symbolic link",
            setup=cache_planted(replaced("photos/.onecycle-cache", link(OUTSIDE)), build=False),
            check=outside_untouched),
    refused("the settings folder linked to a folder outside", CHECK, f"cache {SETTINGS} is a symbolic link",
            setup=cache_planted(replaced(SETTINGS, link(OUTSIDE))), check=outside_untouched),
    refused(".onecycle-cache that is a file", CHECK, "cache photos/.onecycle-cache is a file",
            setup=cache_planted(replaced("photos/.onecycle-cache", lambda p, g: p.write_text("x")), build=False)),
    refused("data.cache whose folder for this root is a link", CHECK + " --set data.cache={cache}",
            "is a symbolic link", setup=shared_folder_linked, check=outside_untouched),
    attack("the cache's .lock a dangling link", CHECK, 0,
           setup=cache_planted(replaced(".lock", link(f"{OUTSIDE}/created"))), check=lock_replaced),
    attack("the cache's .lock linked to a canary", CHECK, 0,
           setup=cache_planted(replaced(".lock", link(f"{OUTSIDE}/canary.txt"))), check=lock_replaced),
    attack("the cache's .lock that is a FIFO", CHECK, 0, setup=cache_planted(replaced(".lock", fifo)), process=True,
           check=lock_replaced),
    attack("manifest.json linked to a canary", CHECK, 0,
           setup=cache_planted(replaced("manifest.json", link(f"{OUTSIDE}/canary.txt"))),
           check=rebuilt("manifest.json is a symbolic link", fresh=("manifest.json",))),
    attack("the images linked to a canary", CHECK, 0,
           setup=cache_planted(replaced("images-*.npy", link(f"{OUTSIDE}/canary.txt"))),
           check=rebuilt("is a symbolic link")),
    attack("train with the channel sums linked to a canary", TRAIN, 0,
           setup=cache_planted(replaced("sums-*.npy", link(f"{OUTSIDE}/canary.txt"))),
           check=rebuilt("is a symbolic link")),
    attack("planted generations: a folder, a link, a near name", CHECK, 0, setup=cache_planted(planted_generations),
           check=left_alone),
    attack("manifest.json that is a FIFO", CHECK, 0, setup=cache_planted(replaced("manifest.json", fifo)),
           process=True, check=rebuilt("manifest.json is a FIFO", fresh=("manifest.json",))),
    attack("manifest.json linked to /dev/zero", CHECK, 0,
           setup=cache_planted(replaced("manifest.json", lambda p, g: p.symlink_to("/dev/zero"))), process=True,
           check=rebuilt("manifest.json is a symbolic link", fresh=("manifest.json",))),
    attack("manifest.json that is a device node", CHECK, 0, setup=cache_planted(replaced("manifest.json", zero_device)),
           process=True, check=rebuilt("manifest.json is a device", fresh=("manifest.json",)), marks=NEEDS_ROOT),
    attack("train with the images a FIFO", TRAIN, 0, setup=cache_planted(replaced("images-*.npy", fifo)),
           process=True, check=rebuilt("is a FIFO")),
    attack("a manifest.json of four gigabytes", CHECK, 0,
           setup=cache_planted(replaced("manifest.json", sparse(4 << 30))), process=True,
           check=rebuilt("manifest.json is 4,294,967,296 bytes", fresh=("manifest.json",))),
    attack("images of a terabyte behind a true header", CHECK, 0,
           setup=cache_planted(lambda settings, given: replaced("images-*.npy", sparse(
               1 << 40, next(settings.glob("images-*.npy")).read_bytes()[:128]))(settings, given)),
           process=True, check=rebuilt("bytes, more than the")),
    refused("a full disk under the cache", CHECK + " --set data.cache={cache}", "no space left on", "16px-crop-rgb",
            "for 9.2 kB of decoded images", setup=full_cache("none"), check=freed_then_works),
    refused("a full disk after the images, before their sums", CHECK + " --set data.cache={cache}",
            "no space left on", "16px-crop-rgb", setup=full_cache("images"), check=freed_then_works),
]


# ------------------------------------------------------------------------------------------------
# a FIFO or a device where a built-in dataset's file belongs: never waited on, never read without end

def replaced_by(where: str, name: str, make: Callable[[Path], None]):
    """A tiny MNIST (`where` "mnist") or CIFAR-10 ("cifar") whose file `name` is replaced by `make(path)`."""
    def setup(given: Given) -> dict:
        if where == "mnist":
            write_mnist(given.root / "data")
            folder = given.root / RAW
        else:
            write_cifar(given.root / "data")
            folder = given.root / BATCHES
        (folder / name).unlink()
        make(folder / name)
        return {}
    return setup


def to_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


DATA_READ_CASES = [
    refused("an MNIST idx file that is a FIFO", f"train {MNIST}", "train-images-idx3-ubyte", "is a FIFO, not a file",
            setup=replaced_by("mnist", "train-images-idx3-ubyte", os.mkfifo), process=True),
    refused("an MNIST label file linked to /dev/zero", f"find {MNIST}", "t10k-labels-idx1-ubyte", "a device",
            setup=replaced_by("mnist", "t10k-labels-idx1-ubyte", to_zero), process=True),
    refused("a CIFAR-10 batch that is a FIFO", f"train {CIFAR}", "data_batch_3", "is a FIFO, not a file",
            setup=replaced_by("cifar", "data_batch_3", os.mkfifo), process=True),
    refused("a CIFAR-10 test batch linked to /dev/zero", f"find {CIFAR}", "test_batch", "a device",
            setup=replaced_by("cifar", "test_batch", to_zero), process=True),
    refused("an MNIST idx file that is a folder", f"train {MNIST}", "train-labels-idx1-ubyte",
            "is a directory, not a file",
            setup=replaced_by("mnist", "train-labels-idx1-ubyte", Path.mkdir)),
]


# ------------------------------------------------------------------------------------------------
# 9. only the listed image formats are parsed, in bounded memory: a folder received from someone else

IMAGES_FOLDER = "--config folder --data-dir data --set data.image_size=8"
IMAGES_CHECK = f"data check {IMAGES_FOLDER} --set data.valid_pct=0.25 --json"
FAKE_GS_PATH = {"PATH": f"bin{os.pathsep}{os.environ.get('PATH', '')}"}  # relative: the case's own bin/ first
BUDGET_MB = 256  # onecycle_cli.datasets.decode.BUDGET: what one file may take while it is decoded


def pil_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (8, 8), **kw) -> bytes:
    from PIL import Image
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, fmt, **kw)
    return buf.getvalue()


def two_classes(root: Path, n: int = 4) -> None:
    """root/a/0.png ... root/b/3.png: tiny real PNGs, the smallest folder of two classes."""
    for k, c in enumerate("ab"):
        for i in range(n):
            (root / c).mkdir(parents=True, exist_ok=True)
            (root / c / f"{i}.png").write_bytes(pil_bytes("PNG"))


def folder_with(files: dict[str, Callable[[], bytes]], gs: bool = False, split: bool = False):
    """data/ holding two tiny classes (`split`: in train/ and in valid/) and `files` (path under data/: its bytes);
    `gs`: a fake Ghostscript in bin/, first on the PATH the case runs with, that creates the canary."""
    def setup(given: Given) -> dict:
        for folder in (("train", "valid") if split else ("",)):
            two_classes(given.root / "data" / folder)
        for name, content in files.items():
            given.file(f"data/{name}", content())
        if gs:
            given.file("bin/gs", f"#!/bin/sh\n{touch(given.root / CANARY)}\n").chmod(0o755)
        return {}
    return setup


def skipped_in(result: Result) -> dict[str, str]:
    return {s["file"]: s["reason"] for s in result.json()["skipped"]}


def not_parsed(*files: str, images: int = 8):
    """Each file is skipped as not an image, the real PNGs are all there, and no program ran (the canary that the
    fake `gs` would create is absent)."""
    def check(given: Given, result: Result, names: dict) -> None:
        assert not (given.root / CANARY).exists(), "PIL ran Ghostscript on the file's PostScript"
        skipped = skipped_in(result)
        for file in files:
            assert skipped.get(file, "").startswith("not an image ("), (file, skipped)
        assert sum(result.json()["images"].values()) == images, result.json()["images"]
    return check


def eps() -> bytes:
    return pil_bytes("EPS")  # PIL writes it; reading it back would run `gs` on its PostScript


def _pil_writes(feature: str) -> bool:
    from PIL import features
    return features.check(feature)


FOREIGN = {"PCX": "RGB", "TGA": "RGB", "XBM": "1", "ICO": "RGB", "SGI": "RGB", "ICNS": "RGB", "QOI": "RGB",
           "DDS": "RGBA", "MSP": "1", "BLP": "P", "SPIDER": "F",  # all read by PIL's open(), as is JPEG 2000
           **({"JPEG2000": "RGB"} if _pil_writes("jpg_2000") else {})}
FOREIGN_NAMES = {fmt: f"a/{fmt.lower()}.{('png', 'jpg', 'gif', 'bmp', 'webp', 'tif')[i % 6]}"
                 for i, fmt in enumerate(FOREIGN)}


# Measured from a small launcher: a child's ru_maxrss starts at its parent's peak (exec records the old
# memory's high-water mark), and the parent here is pytest with torch loaded.
MEASURE = ("import resource, subprocess, sys\n"
           "code = subprocess.call(sys.argv[2:])\n"
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
           "sys.exit(code)\n")


def run_measured(args: str, cwd: Path, patience: float = PATIENCE) -> tuple[Result, float]:
    """`onecycle ARGS` in a real process: its result and its peak resident memory in MB (its own or a child's
    worker's), under a watchdog as `run_watched`: still running after `patience` s, SIGTERM, and the case fails."""
    import signal
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECYCLE")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    peak = cwd / "peak-rss-kb"
    p = subprocess.Popen([sys.executable, "-c", MEASURE, str(peak), sys.executable, "-m", "onecycle_cli",
                          *shlex.split(args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=cwd, start_new_session=True)
    try:
        out, err = p.communicate(timeout=patience)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        p.communicate()
        raise AssertionError(f"onecycle {args} was still running after {patience:.0f} s") from None
    kb = int(peak.read_text())
    peak.unlink()
    return Result(p.returncode, out, err), kb / 1024


@functools.lru_cache(maxsize=None)
def tiny_check_mb() -> float:
    """What `data check` of a folder of eight 8x8 PNGs peaks at (imports, the CLI, one decode): about 55 MB."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        two_classes(Path(tmp) / "data")
        result, peak = run_measured(IMAGES_CHECK, Path(tmp))
        assert result.code == 0, result.stderr
        return peak


def bounded(file: str, decoded: bool):
    """`file` decoded, or skipped for the memory it would take; and `data check` decoding the folder afresh peaks
    under what a tiny folder takes plus the budget of one file plus 64 MB (before the budget: up to 2.4 GB)."""
    def check(given: Given, result: Result, names: dict) -> None:
        skipped = skipped_in(result)
        if decoded:
            assert file not in skipped, skipped
        else:
            assert f"more than the {BUDGET_MB} MB one image may take" in skipped.get(file, ""), skipped
        shutil.rmtree(given.root / "data" / ".onecycle-cache")  # decode again, this time measured
        again, peak = run_measured(IMAGES_CHECK, given.root)
        bound = tiny_check_mb() + BUDGET_MB + 64
        assert again.code == 0 and skipped_in(again) == skipped, again.stderr
        assert peak < bound, f"data check peaked at {peak:.0f} MB, above {bound:.0f} MB"
    return check


def png_of_zeros(width: int, height: int, depth: int, colour: int, channels: int, palette: bytes = b"") -> bytes:
    """A valid PNG of width x height black pixels, compressed to next to nothing: every row's bytes are zeros."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z, left, block, idat = zlib.compressobj(1), height * (1 + width * channels * depth // 8), bytes(1 << 24), []
    while left > 0:
        idat.append(z.compress(block[:left]))
        left -= len(block)
    idat.append(z.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + (chunk(b"PLTE", palette) if palette else b"") + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))


@functools.lru_cache(maxsize=None)
def deep_png() -> bytes:
    return png_of_zeros(9400, 9400, 16, 0, 1)  # 16-bit grey, under PIL's pixel limit: 2.4 GB through float64 copies


@functools.lru_cache(maxsize=None)
def palette_png() -> bytes:
    return png_of_zeros(9400, 9400, 8, 3, 1, palette=b"\0\0\0\xff\xff\xff")  # 88 MB of palette, 353 MB as RGB


def screen_gif() -> bytes:
    """43 bytes: a 1x1 GIF whose logical screen is 9400 x 9400 (PIL allocates the screen, then converts it)."""
    data = bytearray(pil_bytes("GIF", "L", (1, 1)))
    data[6:10] = struct.pack("<HH", 9400, 9400)
    return bytes(data)


def canvas_webp() -> bytes:
    """34 bytes: a 1x1 lossless WebP whose header claims 16383 x 5000 (libwebp allocates its canvas on open)."""
    data = bytearray(pil_bytes("WEBP", "RGB", (1, 1), lossless=True))
    bits = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
    data[21:25] = (bits | (16383 - 1) | ((5000 - 1) << 14)).to_bytes(4, "little")
    return bytes(data)


def progressive_jpeg() -> bytes:
    """A 16 x 16 progressive JPEG whose frame header says 9400 x 9400 (libjpeg zeroes 530 MB of coefficients)."""
    data = bytearray(pil_bytes("JPEG", "RGB", (16, 16), progressive=True, subsampling=0))
    at = data.find(b"\xff\xc2")
    data[at + 5:at + 9] = struct.pack(">HH", 9400, 9400)
    return bytes(data)


FORMAT_CASES = [
    attack("an EPS file named .png with a fake gs on PATH", IMAGES_CHECK, 0, "1 of 9 files",
           setup=folder_with({"a/photo.png": eps}, gs=True), env=FAKE_GS_PATH, process=True,
           check=not_parsed("a/photo.png")),
    attack("an EPS file named .jpg in train/ and valid/ folders, fake gs on PATH",
           f"data check {IMAGES_FOLDER} --json", 0,
           setup=folder_with({"valid/b/scan.jpg": eps}, gs=True, split=True), env=FAKE_GS_PATH, process=True,
           check=not_parsed("valid/b/scan.jpg", images=16)),
    attack("other formats PIL reads, named .png, .jpg, .gif, .bmp, .webp and .tif", IMAGES_CHECK, 0,
           f"{len(FOREIGN)} of {8 + len(FOREIGN)} files",
           setup=folder_with({name: functools.partial(pil_bytes, fmt, FOREIGN[fmt])
                              for fmt, name in FOREIGN_NAMES.items()}),
           check=not_parsed(*FOREIGN_NAMES.values())),
    attack("a 9400x9400 16-bit grey PNG of under 1 MB", IMAGES_CHECK, 0, setup=folder_with({"a/deep.png": deep_png}),
           check=bounded("a/deep.png", decoded=True)),
    attack("a 9400x9400 palette PNG", IMAGES_CHECK, 0, "1 of 9 files",
           setup=folder_with({"b/palette.png": palette_png}),
           check=bounded("b/palette.png", decoded=False)),
    attack("a 43-byte GIF with a 9400x9400 screen", IMAGES_CHECK, 0, setup=folder_with({"a/screen.gif": screen_gif}),
           check=bounded("a/screen.gif", decoded=False)),
    attack("a 34-byte WebP claiming 16383x5000", IMAGES_CHECK, 0, setup=folder_with({"b/canvas.webp": canvas_webp}),
           check=bounded("b/canvas.webp", decoded=False)),
    attack("a 500-byte progressive JPEG claiming 9400x9400", IMAGES_CHECK, 0,
           setup=folder_with({"a/progressive.jpg": progressive_jpeg}),
           check=bounded("a/progressive.jpg", decoded=False)),
]


# ------------------------------------------------------------------------------------------------
# 10. one file, one label, read from inside the root

CSV = "--set data.valid_pct=0.25 --set data.csv=labels.csv"
IMAGES_TRAIN = (f"train {IMAGES_FOLDER} --model simple_cnn --set model.channels=[3,4,2] --set model.kernel_sizes=[3] "
         "--batch-size 2 --epochs 1 --set schedule.max_lr=0.01")


def with_links(links: dict[str, str], split: bool = False, csv: str | None = None,
               make: Callable[[Path], None] | None = None):
    """data/ of two tiny classes (`split`: in train/ and valid/), outside/ beside it (a real image, o.png, and two
    class folders of them), then `make(data)` for anything else, `links` (path under data/: the target as the link
    holds it) and data/labels.csv holding `csv`."""
    def setup(given: Given) -> dict:
        folder_with({}, split=split)(given)
        two_classes(given.root / "outside")
        (given.root / "outside" / "o.png").write_bytes(pil_bytes("PNG"))
        if make is not None:
            make(given.root / "data")
        for name, target in links.items():
            (given.root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
            (given.root / "data" / name).symlink_to(target)
        if csv is not None:
            given.file("data/labels.csv", csv)
        return {}
    return setup


def classes_are(*classes: str, images: int):
    """Only the real class folders are classes, each image counted once: nothing read through the link."""
    def check(given: Given, result: Result, names: dict) -> None:
        report = result.json()
        assert report["class_names"] == list(classes), report["class_names"]
        assert sum(report["images"].values()) == report["files"] == images and not report["skipped"], report
    return check


def links_skipped(*files: str, images: int = 8):
    """Each link is listed as skipped, "a symbolic link", and what it points at is not among the images."""
    def check(given: Given, result: Result, names: dict) -> None:
        skipped = skipped_in(result)
        for file in files:
            assert skipped.get(file, "").startswith("a symbolic link"), (file, skipped)
        assert sum(result.json()["images"].values()) == images, result.json()["images"]
    return check


def warned_once(*words: str):
    def check(given: Given, result: Result, names: dict) -> None:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("warning:"), result.stderr
        assert all(w in lines[0] for w in words) and result.json()["warnings"], lines[0]
    return check


def rows(*names: str) -> str:
    """labels.csv naming `names` with labels a and b in turn."""
    return "fname,label\n" + "".join(f"{name},{'ab'[i % 2]}\n" for i, name in enumerate(names))


def hard_link(data: Path) -> None:
    os.link(data / "a" / "0.png", data / "a" / "same.png")


LABEL_CASES = [
    attack("a class folder linked to .", IMAGES_CHECK, 0, setup=with_links({"all": "."}),
           check=classes_are("a", "b", images=8)),
    attack("a class folder linked to a folder outside the root", f"data check {IMAGES_FOLDER} --json", 0,
           setup=with_links({"train/c": "../../outside/a", "valid/c": "../../outside/b"}, split=True),
           check=classes_are("a", "b", images=16)),
    attack("a validation class folder linked to a training class", f"data check {IMAGES_FOLDER} --json", 0,
           setup=with_links({"valid/c": "../train/a"}, split=True), check=classes_are("a", "b", images=16)),
    attack("an image linked to an image outside the root", IMAGES_CHECK, 0, "1 of 9 files",
           setup=with_links({"a/x.png": "../../outside/o.png"}), check=links_skipped("a/x.png")),
    attack("an image of one class linked to an image of the other", IMAGES_CHECK, 0,
           setup=with_links({"b/x.png": "../a/0.png"}), check=links_skipped("b/x.png")),
    attack("a CSV naming a linked image and an image in a linked folder",
           f"{IMAGES_CHECK} --set data.csv=labels.csv", 0,
           setup=with_links({"a/x.png": "../../outside/o.png", "ext": "../outside"},
                            csv=rows("a/0.png", "b/0.png", "a/1.png", "b/1.png", "a/x.png", "ext/o.png")),
           check=links_skipped("a/x.png", "ext/o.png", images=4)),
    refused("one file as ./a/0.png and a//0.png in a CSV", f"{IMAGES_TRAIN} {CSV}", "line 3: 'a//0.png' is the file of "
            "line 2 ('./a/0.png')", setup=with_links({}, csv=rows("./a/0.png", "a//0.png", "a/1.png", "b/1.png"))),
    refused("one file as a/0.png and a/./0.png in a CSV", f"{IMAGES_TRAIN} {CSV}", "line 5: 'a/./0.png' is the file of "
            "line 2", setup=with_links({}, csv=rows("a/0.png", "b/0.png", "a/1.png", "a/./0.png"))),
    refused("one file under two names (a hard link) in a CSV", f"{IMAGES_TRAIN} {CSV}", "line 3: 'a/same.png'",
            "line 2 ('a/0.png') under another name", setup=with_links({}, csv=rows("a/0.png", "a/same.png", "b/0.png"),
                                                                      make=hard_link)),
    refused("a folder of a single class", f"{IMAGES_TRAIN} --set data.valid_pct=0.25", "a single class ('a')",
            setup=with_links({}, make=lambda data: shutil.rmtree(data / "b"))),
    refused("a second class folder that links to the first", f"{IMAGES_TRAIN} --set data.valid_pct=0.25",
            "a single class ('a', b: a symbolic link, not followed)",
            setup=with_links({"b": "a"}, make=lambda d: shutil.rmtree(d / "b"))),
    refused("a CSV of a single label", f"{IMAGES_TRAIN} {CSV}", "a single class ('a')",
            setup=with_links({}, csv="fname,label\na/0.png,a\na/1.png,a\nb/0.png,a\n")),
    attack("a validation class that training never sees", f"data check {IMAGES_FOLDER} --json", 0,
           "have validation images but no training images", setup=with_links(
               {}, split=True, make=lambda data: shutil.copytree(data / "valid" / "b", data / "valid" / "c")),
           check=warned_once("1 class(es)", ": c")),
    refused("a CSV field over the csv module's limit", f"{IMAGES_TRAIN} {CSV}", "line 3", "131,072 characters",
            setup=with_links({}, csv=rows("a/0.png", "b" * 200_000, "a/1.png"))),
    refused("a NUL in a CSV file name", f"{IMAGES_TRAIN} {CSV}", "line 2", "a NUL character in fname",
            setup=with_links({}, csv=rows("a/0.png\0../../etc/passwd", "b/0.png"))),
    refused("data.csv that is a FIFO", f"{IMAGES_TRAIN} {CSV}", "labels.csv is a FIFO", process=True,
            setup=with_links({}, make=lambda data: os.mkfifo(data / "labels.csv"))),
    refused("data.csv linked to /dev/zero", f"{IMAGES_TRAIN} {CSV}", "labels.csv is a symbolic link", process=True,
            setup=with_links({"labels.csv": "/dev/zero"})),
    refused("data.csv of /dev/zero", f"{IMAGES_TRAIN} --set data.valid_pct=0.25 --set data.csv=/dev/zero",
            "/dev/zero is a device", process=True, setup=with_links({})),
    refused("data.csv in a folder linked outside the root", f"{IMAGES_TRAIN} --set data.valid_pct=0.25 "
            "--set data.csv=meta/labels.csv", "a path through a symbolic link (meta)",
            setup=with_links({"meta": "../outside"}, make=lambda data: (data.parent / "outside" / "labels.csv")
                             .write_text(rows("a/0.png", "b/0.png")))),
]


CLASSES = {
    "data files never run code": CODE_CASES,
    "nothing outside the run directory is written or embedded": LINK_CASES,
    "text from outside is never markup or control codes": TEXT_CASES,
    "the exit code is the outcome's": OUTCOME_CASES,
    "small inputs, bounded work": BOUND_CASES,
    "what passes validation runs": VALIDATION_CASES,
    "a path is a path; YAML 1.2 numbers": PATH_CASES,
    "an interrupted --max-lr find records no false LR": LR_CASES,
    "weights and checkpoints are checked before use": WEIGHT_CASES,
    "completion: a malformed request completes nothing, quietly": COMPLETION_CASES,
    "the decode cache never follows a link or blocks": CACHE_CASES,
    "no read of a built-in dataset's file blocks": DATA_READ_CASES,
    "only the listed image formats are parsed, in bounded memory": FORMAT_CASES,
    "one file, one label, from inside the root": LABEL_CASES,
}
ALL = [case for cases in CLASSES.values() for case in cases]


# ------------------------------------------------------------------------------------------------
# the runs these cases start from, made once


def _train(root: Path, *args: str, env: dict | None = None) -> Result:
    return run_process("train", *MNIST_SAMPLE.split(), "--set", "train.log_every=1", *args, env=env, cwd=root)


def _stopped(tmp_path_factory, name: str, fault: str, code: int, *args: str) -> Path:
    """The run directory of a 2-epoch train run that ONECYCLE_FAULT stopped with exit `code`."""
    root = tmp_path_factory.mktemp(name)
    r = _train(root, "--epochs", "2", *args, env={"ONECYCLE_FAULT": fault})
    assert r.code == code, r.stderr
    return next((root / "runs").iterdir())


@pytest.fixture(scope="session")
def interrupted_run(tmp_path_factory) -> Path:
    """A train run stopped by SIGINT in its second epoch (8 steps an epoch, 2 epochs): resumable."""
    return _stopped(tmp_path_factory, "interrupted", "step@11:SIGINT", 130)


@pytest.fixture(scope="session")
def diverging_run(tmp_path_factory) -> Path:
    """A run at max_lr 1e12 stopped after its first step: resumed, it diverges (a NaN by step 3)."""
    return _stopped(tmp_path_factory, "diverging", "step@1:SIGINT", 130, "--max-lr", "1e12")


@pytest.fixture(scope="session")
def find_interrupted_run(tmp_path_factory) -> Path:
    """A train --max-lr find run stopped by SIGTERM in its range test."""
    return _stopped(tmp_path_factory, "find-interrupted", "sweep@3:SIGTERM", 143, "--max-lr", "find")


@pytest.fixture
def full_disk(tmp_path):
    """A real file system of a given size in kB (tmpfs), so ENOSPC comes from the kernel, not a mock."""
    mounted = []

    def make(kb: int) -> Path:
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(path)], capture_output=True)
        if p.returncode:
            pytest.skip("no tmpfs to fill: mounting needs root (or CAP_SYS_ADMIN)")
        mounted.append(path)
        return path / "runs"
    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ------------------------------------------------------------------------------------------------
# the contract


def run_attack(a: Attack, tmp_path: Path, request, cli) -> Result:
    names = a.setup(Given(tmp_path, request)) if a.setup else {}
    before = records(tmp_path)
    args = a.args
    for name, value in names.items():  # not str.format: YAML in an argument has braces of its own
        args = args.replace("{" + name + "}", shlex.quote(str(value)))
    args = shlex.split(args)
    if a.process:
        env = {k: v for k, v in a.env.items()}
        result = run_watched(*args, env=env)
    else:
        import warnings
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            result = cli(*args, env=a.env)
        shown = [w for w in warned if not issubclass(w.category, HIDDEN_WARNINGS)]
        assert not shown, f"a warning reaches stderr in a real process: {shown[0].message}"
    if a.code == 2:
        assert_usage_error(result, *a.fragments)
        assert result.stdout == "", f"stdout is for --json: {result.stdout!r}"
        assert_nothing_left_behind(before, records(tmp_path))
    else:
        assert result.code == a.code, f"exit {result.code}, stderr: {result.stderr}"
        assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr, result.stderr
        for fragment in a.fragments:
            assert fragment in result.stderr + result.stdout, f"{fragment!r} not in {result.stderr}"
    if a.check:
        a.check(Given(tmp_path, request), result, names)
    return result


@pytest.mark.parametrize("a", ALL)
def test_attack(a, cli, tmp_path, request):
    run_attack(a, tmp_path, request, cli)


def test_a_full_disk_mid_run_is_one_line_and_leaves_no_temporary_file(full_disk, cli):
    """ENOSPC from a real file system too small for the run's checkpoints: one line, exit 2, no .tmp left."""
    root = full_disk(40)
    r = cli("train", *MNIST_SAMPLE.split(), "--epochs", "3", "--runs-dir", root, "--json")
    errors = [line for line in r.stderr.splitlines() if "error" in line or "Traceback" in line]
    assert r.code == 2 and r.stdout == "", r.stderr
    assert len(errors) == 1 and errors[0].startswith(f"onecycle: error: no space left on {root}/"), r.stderr
    assert not list(root.rglob("*.tmp"))


def test_real_cifar_batches_still_load(cli, tmp_path):
    """What real batches hold passes the restricted unpickler: numpy 1.x names, every protocol,
    numpy scalars among the labels, bytes written by Python 3 at protocol 2 (_codecs.encode)."""
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": b"training batch", b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                 b"labels": [np.int64(v) if i % 2 else int(v) for v in rng.integers(0, 10, 8)],
                 b"filenames": [b"a.png"] * 8}
        data = pickle.dumps(batch, protocol=[0, 2, 3, 4, 5, 2][i])
        if i == 5:  # as numpy 1.x writes it: numpy.core, not numpy._core
            data = data.replace(b"numpy._core", b"numpy.core")
        (folder / name).write_bytes(data)
    r = cli("data", "check", "--config", "cifar", "--data-dir", "data", "--json")
    assert r.code == 0, r.stdout + r.stderr
    assert r.json()["train"] == 40 and r.json()["valid"] == 8


def counts() -> dict[str, int]:
    return {name: len(cases) for name, cases in CLASSES.items()}


def test_the_corpus_grows_by_at_least_40_cases_with_distinct_names():
    assert sum(counts().values()) >= 40, counts()
    ids = [p.id for p in ALL]
    assert len(set(ids)) == len(ids), "two cases share an id"


if __name__ == "__main__":
    for name, n in counts().items():
        print(f"{name}: {n} cases")
    print(f"total: {sum(counts().values())}")
