"""The corpus of bad inputs (issue 7, item 1): `onecycle train` and `onecycle find` fed broken
configs, flags and data, the way a user or a shell script gets them wrong.

Every case runs the real CLI and must end the same way: exit 2, exactly one line on stderr that
names what is wrong (the key, flag or path, the value, what was expected), no traceback, no new run
directory (unless one marked `failed` with its reason), and no existing run's summary changed.
The cases are three module-level lists, so their counts come from here, not from a test report:

    python tests/test_bad_inputs.py      # cases per group, for the README
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import assert_usage_error, run_process, write_cifar, write_idx, write_mnist


@dataclass
class Case:
    """`onecycle ARGS` after `setup` has laid out its files; stderr must hold every fragment."""

    args: str                                   # shlex-split after `{name}` is filled from setup's dict
    fragments: tuple[str, ...]
    setup: Callable[["Given"], dict] | None = None
    env: dict[str, str] = field(default_factory=dict)


def case(id: str, args: str, *fragments: str, setup=None, env=None, marks=()):
    return pytest.param(Case(args, fragments, setup, env or {}), id=id, marks=marks)


class Given:
    """What a case finds on disk before it runs: files under tmp_path, copies of real runs."""

    def __init__(self, root: Path, request):
        self.root, self.request = root, request

    def file(self, name: str, content: str | bytes = "") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def run(self, kind: str, name: str, **summary) -> Path:
        """A copy of a real run (`find`, `onecycle`: see conftest.tiny_runs), its summary.json edited."""
        path = self.root / "given" / name
        shutil.copytree(self.request.getfixturevalue("tiny_runs")[kind], path)
        if summary:
            data = json.loads((path / "summary.json").read_text())
            (path / "summary.json").write_text(json.dumps({**data, **summary}))
        return path


# ------------------------------------------------------------------------------------------------
# configs: `--config bad.yaml` holding what a hand-edited YAML file goes wrong with
# (tests/test_config.py checks `onecycle config`; these go through the commands that would run)

DIRECTORY = object()  # the config path is made a directory instead of a file


def config(id: str, command: str, text: str | bytes | object | None, *fragments: str, path: str = "bad.yaml"):
    """`onecycle COMMAND --config PATH`, where PATH holds `text` (None: nothing is written)."""
    def setup(given: Given) -> dict:
        if text is DIRECTORY:
            (given.root / path).mkdir()
        elif text is not None:
            given.file(path, text)
        return {}
    return case(id, f"{command} --config {shlex.quote(path)}", *fragments, setup=setup)


CONFIG_CASES = [
    # unknown keys, at every level
    config("unknown section", "train", "trian:\n  epochs: 1\n", "unknown section 'trian'", "did you mean 'train'",
           "bad.yaml"),
    config("unknown key in data", "find", "data:\n  datset: mnist\n", "unknown key 'data.datset'",
           "did you mean 'data.dataset'"),
    config("unknown key in model", "train", "model:\n  chanels: [1, 10]\n", "unknown key 'model.chanels'",
           "did you mean 'model.channels'"),
    config("unknown key in optim", "find", "optim:\n  weight_decy: 0.1\n", "unknown key 'optim.weight_decy'",
           "did you mean 'optim.weight_decay'"),
    config("unknown key in schedule", "train", "schedule:\n  maxlr: 1\n", "unknown key 'schedule.maxlr'",
           "did you mean 'schedule.max_lr'"),
    config("unknown key in train", "find", "train:\n  epoch: 5\n", "unknown key 'train.epoch'",
           "did you mean 'train.epochs'"),
    config("unknown key in find", "find", "find:\n  num_iter: 50\n", "unknown key 'find.num_iter'",
           "did you mean 'find.num_it'"),
    config("unknown key in run", "train", "run:\n  dir: out\n", "unknown key 'run.dir'", "run takes: root"),
    config("nested key under a scalar", "train", "train:\n  seed:\n    value: 1\n",
           "train.seed = {value: ...}", "bad.yaml", "an integer, not a mapping"),
    config("scalar where a section goes", "find", "train: 5\n", "train = 5", "a mapping of keys"),
    # wrong types
    config("word for an integer", "train", "train:\n  epochs: ten\n", "train.epochs = 'ten'", "an integer"),
    config("fraction for an integer", "find", "train:\n  batch_size: 2.5\n", "train.batch_size = 2.5", "an integer"),
    config("bool for an integer", "train", "train:\n  epochs: true\n", "train.epochs = True", "an integer"),
    config("word for a bool", "train", "data:\n  flip: maybe\n", "data.flip = 'maybe'", "true or false"),
    config("number for a list", "train", "model:\n  channels: 16\n", "model.channels = 16", "a list"),
    config("number for the betas", "find", "optim:\n  betas: 0.9\n", "optim.betas = 0.9", "a list"),
    config("list for a path", "train", "data:\n  root: [a, b]\n", "data.root = ['a', 'b']", "a string"),
    # zero and negative
    config("zero epochs", "train", "train:\n  epochs: 0\n", "train.epochs = 0", "> 0"),
    config("zero batch size", "find", "train:\n  batch_size: 0\n", "train.batch_size = 0", "> 0"),
    config("zero max_lr", "train", "schedule:\n  max_lr: 0\n", "schedule.max_lr = 0", "> 0"),
    config("zero eps", "find", "optim:\n  eps: 0\n", "optim.eps = 0", "> 0"),
    config("zero train_size", "train", "data:\n  train_size: 0\n", "data.train_size = 0", "> 0"),
    config("negative weight decay", "find", "optim:\n  weight_decay: -1e-4\n", "optim.weight_decay = -0.0001", ">= 0"),
    config("negative max_lr", "train", "schedule:\n  max_lr: -0.1\n", "schedule.max_lr = -0.1", "> 0"),
    config("negative seed", "train", "train:\n  seed: -1\n", "train.seed = -1", ">= 0"),
    config("negative pad", "train", "data:\n  pad: -4\n", "data.pad = -4", ">= 0"),
    config("negative start_lr", "find", "find:\n  start_lr: -1e-7\n", "find.start_lr = -1e-07", "> 0"),
    # NaN and infinities
    config("nan max_lr", "train", "schedule:\n  max_lr: .nan\n", "schedule.max_lr = nan", "a finite number"),
    config("nan weight decay", "find", "optim:\n  weight_decay: .nan\n", "optim.weight_decay = nan", "a finite number"),
    config("nan smoothing beta", "find", "find:\n  beta: .nan\n", "find.beta = nan", "a finite number"),
    config("inf max_lr", "train", "schedule:\n  max_lr: .inf\n", "schedule.max_lr = inf", "a finite number"),
    config("inf end_lr", "find", "find:\n  end_lr: .inf\n", "find.end_lr = inf", "a finite number"),
    config("minus inf weight decay", "train", "optim:\n  weight_decay: -.inf\n", "optim.weight_decay = -inf",
           "a finite number"),
    config("inf div", "train", "schedule:\n  div: .inf\n", "schedule.div = inf", "a finite number"),
    # fractions out of range
    config("pct_start above 1", "train", "schedule:\n  pct_start: 1.5\n", "schedule.pct_start = 1.5", "< 1"),
    config("pct_start zero", "train", "schedule:\n  pct_start: 0\n", "schedule.pct_start = 0", "> 0"),
    config("momentum 1", "find", "optim:\n  momentum: 1.0\n", "optim.momentum = 1.0", "< 1"),
    config("beta2 1", "train", "optim:\n  betas: [0.9, 1.0]\n", "optim.betas = 1.0", "< 1"),
    config("negative beta1", "find", "optim:\n  betas: [-0.1, 0.99]\n", "optim.betas = -0.1", ">= 0"),
    config("label smoothing above 1", "train", "optim:\n  label_smoothing: 1.5\n", "optim.label_smoothing = 1.5",
           "< 1"),
    config("smoothing beta 1", "find", "find:\n  beta: 1\n", "find.beta = 1", "< 1"),
    config("max_momentum above 1", "train", "schedule:\n  max_momentum: 1.2\n", "schedule.max_momentum = 1.2", "< 1"),
    config("negative held momentum", "find", "find:\n  momentum: -0.5\n", "find.momentum = -0.5", ">= 0"),
    config("base above max momentum", "train", "schedule:\n  base_momentum: 0.99\n", "schedule.base_momentum = 0.99",
           "max_momentum = 0.95", "bad.yaml"),
    # strings where numbers go
    config("quoted number", "train", "schedule:\n  max_lr: '0.1'\n", "schedule.max_lr = '0.1'", "a number"),
    config("word for a number", "find", "schedule:\n  max_lr: fast\n", "schedule.max_lr = 'fast'", "a number"),
    config("quoted integer", "train", 'train:\n  batch_size: "512"\n', "train.batch_size = '512'", "an integer"),
    config("words in the betas", "find", "optim:\n  betas: [high, low]\n", "optim.betas = 'high'", "a number"),
    # files that are not a config
    config("empty file", "train", "", "bad.yaml is empty", "data:, model:, train:"),
    config("only comments", "find", "# nothing here yet\n", "is empty"),
    config("binary file", "train", bytes(range(256)), "not text", "expected a YAML file"),
    config("NUL bytes", "find", "train:\n\x00\x00\n", "is binary", "expected a YAML file"),
    config("tab indentation", "train", "train:\n\tseed: 1\n", "line 2", "tab", "spaces"),
    config("duplicate key", "train", "train:\n  seed: 1\n  seed: 2\n", "duplicate key 'seed'", "line 2"),
    config("duplicate section", "find", "train:\n  seed: 1\ntrain:\n  epochs: 2\n", "duplicate key 'train'"),
    config("list at the top", "train", "- train\n- data\n", "holds a list", "expected a mapping of sections"),
    config("list for a section", "find", "data: [mnist, 28]\n", "data = ['mnist', 28]", "a mapping of keys"),
    config("plain words", "train", "use the mnist preset please\n", "holds a str", "expected a mapping"),
    config("unclosed bracket", "find", "train: [1, 2\n", "malformed YAML", "line"),
    # names that do not exist
    config("unknown dataset", "train", "data:\n  dataset: cifar100\n", "data.dataset = 'cifar100'",
           "did you mean 'cifar10'"),
    config("unknown model", "find", "model:\n  name: resnet18\n", "model.name = 'resnet18'", "resnet20", "simple_cnn"),
    config("unknown optimiser", "train", "optim:\n  name: adam\n", "optim.name = 'adam'", "did you mean 'adamw'"),
    config("unknown schedule", "train", "schedule:\n  name: 1cycle\n", "schedule.name = '1cycle'", "onecycle"),
    config("unknown shape", "train", "schedule:\n  shape: fastaii\n", "schedule.shape = 'fastaii'",
           "did you mean 'fastai'"),
    config("unknown anneal", "train", "schedule:\n  anneal: cosine\n", "schedule.anneal = 'cosine'", "cos, linear"),
    config("unknown precision", "find", "train:\n  precision: fp8\n", "train.precision = 'fp8'", "bf16"),
    config("unknown suggestion", "find", "find:\n  suggest: best\n", "find.suggest = 'best'", "valley"),
    config("unknown device", "train", "train:\n  device: gpu\n", "train.device = 'gpu'", "bad.yaml", "cuda:N"),
    # keys that disagree
    config("kernel sizes for other convs", "train", "model:\n  name: simple_cnn\n  channels: [1, 8]\n"
           "  kernel_sizes: [3, 3, 3]\n", "model.kernel_sizes has 3 entries", "expected 1 or 1"),
    config("end_lr below start_lr", "find", "find:\n  start_lr: 1\n  end_lr: 0.1\n", "find.end_lr = 0.1",
           "start_lr < end_lr"),
    config("smith pct_start past half", "train", "schedule:\n  shape: smith\n  pct_start: 0.6\n",
           "schedule.pct_start = 0.6", "< 0.5"),
    config("final_div below div", "train", "schedule:\n  div: 100\n  final_div: 10\n", "schedule.final_div = 10",
           "final_div >= div"),
    config("milestones out of order", "train", "schedule:\n  name: step\n  milestones: [0.75, 0.5]\n",
           "schedule.milestones = [0.75, 0.5]", "increasing"),
    # paths that are not a config file
    config("config path is a directory", "train", DIRECTORY, "is a directory", "expected a YAML file",
           path="conf.yaml"),
    config("missing config file", "find", None, "--config missing.yaml", "no such file", "presets: cifar",
           path="missing.yaml"),
    config("unknown config name", "train", None, "--config mnst", "did you mean 'mnist'", "shipped", path="mnst"),
    config("empty config name", "train", None, "--config ''", "a shipped config name", path=""),
]


# ------------------------------------------------------------------------------------------------
# flags: what a shell script passes wrong

MNIST_SAMPLE = "--config mnist_sample"
NO_CUDA = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")


def a_find_run(given: Given, **summary) -> dict:
    return {"run": given.run("find", "a-find", **summary)}


def a_train_run(given: Given, **summary) -> dict:
    return {"run": given.run("onecycle", "a-train", **summary)}


def a_foreign_dir(given: Given) -> dict:
    given.file("foreign/checkpoints/last.pt", b"not a checkpoint at all")
    return {"run": given.root / "foreign"}


def an_incomplete_run(given: Given) -> dict:
    run = given.run("onecycle", "incomplete", status="interrupted")
    shutil.rmtree(run / "checkpoints")  # a run killed before its first checkpoint: config.yaml, no last.pt
    return {"run": run}


def a_damaged_checkpoint(given: Given) -> dict:
    run = given.run("onecycle", "damaged", status="interrupted")
    (run / "checkpoints" / "last.pt").write_bytes(b"\x80\x04garbage")
    return {"run": run}


FLAG_CASES = [
    # --set
    case("--set without =", f"train {MNIST_SAMPLE} --set train.epochs", "--set 'train.epochs'", "section.key=value"),
    case("--set without a section", f"find {MNIST_SAMPLE} --set seed=1", "--set 'seed=1'", "names no section"),
    case("--set with an empty key", "train --set =1", "--set '=1'", "section.key=value"),
    case("--set a..b=1", "train --set train..epochs=1", "--set 'train..epochs=1'", "empty name between dots"),
    case("--set with nothing after the dot", "find --set train.=1", "--set 'train.=1'", "empty name"),
    case("--set below a value", "find --set train.seed.x=1", "train.seed is a value, not a section",
         "--set train.seed.x=1"),
    case("--set an unknown key", "train --set schedule.maxlr=1", "unknown key 'schedule.maxlr'",
         "--set schedule.maxlr=1", "did you mean 'schedule.max_lr'"),
    # --max-lr
    case("--max-lr abc", "train --max-lr abc", "--max-lr 'abc'",
         "a number, 'find', or the directory of a finished find run"),
    case("--max-lr nan", "train --max-lr nan", "--max-lr nan", "a finite number"),
    case("--max-lr negative", "train --max-lr -1", "schedule.max_lr = -1", "--max-lr -1", "> 0"),
    case("--max-lr empty", "train --max-lr ''", "--max-lr ''", "expected a number"),
    case("--max-lr names a train run", "train --max-lr {run}", "expected a finished find run", "a train run",
         setup=a_train_run),
    case("--max-lr names an interrupted find run", "train --max-lr {run}", "expected a finished find run",
         "status 'interrupted'", setup=lambda g: a_find_run(g, status="interrupted")),
    case("--max-lr names a failed find run", "train --max-lr {run}", "status 'failed'",
         setup=lambda g: a_find_run(g, status="failed")),
    case("--max-lr names a find run without that suggestion", "train --max-lr {run}", "no usable 'floor' suggestion",
         setup=lambda g: a_find_run(g, suggestions={"steep": {"lr": 0.1}})),
    case("--max-lr names an empty dir", "train --max-lr {run}", "not a onecycle run", "no readable summary.json",
         setup=lambda g: {"run": g.file("empty/.keep").parent}),
    case("--max-lr names a dir whose summary is a list", "train --max-lr {run}", "not a onecycle run",
         setup=lambda g: {"run": g.file("listed/summary.json", "[1, 2]").parent}),
    case("--max-lr names no existing path", "train --max-lr given/nowhere", "--max-lr 'given/nowhere'",
         "the directory of a finished find run"),
    # --resume
    case("--resume a missing dir", "train --resume given/nowhere", "--resume given/nowhere", "no such run directory"),
    case("--resume a file", "train --resume {run}", "no such run directory",
         setup=lambda g: {"run": g.file("notes.txt", "x")}),
    case("--resume an incomplete run", "train --resume {run}", "no checkpoint to resume from", "start it again",
         setup=an_incomplete_run),
    case("--resume a foreign dir", "train --resume {run}", "not a onecycle run directory", "no config.yaml",
         setup=a_foreign_dir),
    case("--resume a damaged checkpoint", "train --resume {run}", "checkpoint last.pt cannot be read", "damaged",
         setup=a_damaged_checkpoint),
    case("--resume a find run", "train --resume {run}", "a find run", "--resume takes a train run", setup=a_find_run),
    case("--resume an interrupted find run", "train --resume {run}", "a find run",
         setup=lambda g: a_find_run(g, status="interrupted")),
    case("--resume a completed run", "train --resume {run}", "already completed", "start a new run", setup=a_train_run),
    case("--resume with another length", "train --resume {run} --epochs 3", "cannot change length", "16",
         setup=lambda g: a_train_run(g, status="interrupted")),
    case("--resume with another weight decay", "train --resume {run} --set optim.weight_decay=0.1",
         "optim.weight_decay was 0.01 and would become 0.1", setup=lambda g: a_train_run(g, status="interrupted")),
    # flags that contradict each other
    case("--seed with --seeds", f"train {MNIST_SAMPLE} --seed 1 --seeds 3", "conflicting flags", "--seed and --seeds"),
    case("--max-lr with --set schedule.max_lr", "train --max-lr 1 --set schedule.max_lr=2", "conflicting flags",
         "--max-lr 1", "--set schedule.max_lr=2"),
    case("--epochs with --set train.epochs", "train --epochs 2 --set train.epochs=3", "conflicting flags",
         "--epochs 2"),
    case("--resume with --config", "train --resume {run} --config mnist", "--resume", "takes no --config",
         setup=lambda g: a_train_run(g, status="interrupted")),
    case("--resume with --seeds", "train --resume {run} --seeds 2", "takes no --config, --seeds",
         setup=lambda g: a_train_run(g, status="interrupted")),
    # what click refuses
    case("unknown flag", "train --epoch 3", "No such option: --epoch", "--epochs", "--help"),
    case("flag of the other command", "find --max-lr 1", "No such option: --max-lr"),
    case("flag missing its value", f"train {MNIST_SAMPLE} --max-lr", "'--max-lr' requires an argument"),
    case("value for a switch", "train --json=yes", "'--json' does not take a value"),
    case("stray argument", "train mnist_sample", "unexpected extra argument", "mnist_sample"),
    case("unknown command", "trian", "No such command 'trian'", "Did you mean 'train'"),
    # --sweep and --seeds
    case("--sweep of an unknown key", "find --sweep lr=1e-3,1e-4", "--sweep 'lr=1e-3,1e-4'",
         "weight_decay, momentum, batch_size"),
    case("--sweep without values", "find --sweep weight_decay=", "--sweep 'weight_decay='", "KEY=V1,V2"),
    case("--sweep momentum past 1", "find --sweep momentum=0.9,1.5", "'1.5' is not valid", "[0, 1)"),
    case("--sweep batch size of words", "find --sweep batch_size=64,big", "'big' is not valid", "positive integers"),
    # found once the data is loaded, before the run directory is made
    case("--sweep batch size above the data", f"find {MNIST_SAMPLE} --set data.train_size=256 --num-it 10 "
         "--sweep batch_size=32,1024", "train.batch_size = 1024", "256 training images"),
    case("--seeds abc", "train --seeds abc", "--seeds 'abc'", "--seeds 3", "--seeds 0,1,2"),
    case("--seeds zero", "train --seeds 0", "--seeds '0'"),
    case("--seeds repeated", "train --seeds 1,1", "--seeds '1,1'", "distinct"),
    # devices and precisions this machine lacks, and named flags with impossible values
    case("--device cuda without CUDA", f"train {MNIST_SAMPLE} --device cuda", "train.device = 'cuda'",
         "no CUDA device", "--device cpu", marks=NO_CUDA),
    case("--device cuda:1 without CUDA", f"find {MNIST_SAMPLE} --device cuda:1", "no CUDA device", marks=NO_CUDA),
    case("--device gpu", "train --device gpu", "train.device = 'gpu'", "--device gpu", "cuda:N"),
    case("--precision fp16 on CPU", f"find {MNIST_SAMPLE} --precision fp16", "'fp16' needs a CUDA device",
         "bf16 or fp32", marks=NO_CUDA),
    case("--precision fp8", "train --precision fp8", "train.precision = 'fp8'", "--precision fp8", "bf16"),
    case("--num-it too few", "find --num-it 5", "find.num_it = 5", "--num-it 5", ">= 10"),
    case("--end-lr below --start-lr", "find --start-lr 1 --end-lr 0.1", "find.end_lr = 0.1", "start_lr < end_lr"),
    case("--suggest unknown", "find --suggest best", "find.suggest = 'best'",
         "floor, basin, valley, steep, minimum, slide"),
    case("--schedule unknown", "train --schedule 1cycle", "schedule.name = '1cycle'", "onecycle"),
    case("--batch-size abc", "find --batch-size abc", "train.batch_size = 'abc'", "--batch-size abc", "an integer"),
    # the environment, the flags of the shell
    case("environment value of the wrong type", "train", "train.epochs = 'ten'", "ONECYCLE_TRAIN__EPOCHS", "an integer",
         env={"ONECYCLE_TRAIN__EPOCHS": "ten"}),
    case("environment naming an unknown section", "find", "unknown section 'trian'", "ONECYCLE_TRIAN__SEED",
         env={"ONECYCLE_TRIAN__SEED": "1"}),
    case("environment device unknown", "find", "train.device = 'gpu'", "ONECYCLE_DEVICE",
         env={"ONECYCLE_DEVICE": "gpu"}),
]


# ------------------------------------------------------------------------------------------------
# data: files missing, cut short, from elsewhere, or not fitting the model; run roots that cannot be

MNIST = "--config mnist --data-dir data --set data.download=false --set train.epochs=1 --batch-size 8"
CIFAR = ("--config cifar --data-dir data --set data.download=false --set model.name=resnet20 --set train.epochs=1 "
         "--batch-size 8")
RAW = "data/MNIST/raw"
BATCHES = "data/cifar-10-batches-py"


def both(*setups) -> Callable[[Given], dict]:
    """The setups in turn, their names merged."""
    def setup(given: Given) -> dict:
        names = {}
        for s in setups:
            out = s(given)
            names.update(out if isinstance(out, dict) else {})
        return names
    return setup


def mnist(change: Callable[[Path], None] | None = None):
    """A tiny MNIST in torchvision's layout (64 training, 32 test images), then `change(raw folder)`."""
    def setup(given: Given) -> dict:
        write_mnist(given.root / "data")
        if change is not None:
            change(given.root / RAW)
        return {}
    return setup


def cifar(batch: str | None = None, content: bytes | object | None = None, keep: int | None = None):
    """A tiny CIFAR-10 (5 x 16 training, 20 test images) with `batch` replaced (bytes as they are, anything
    else pickled) or cut to its first `keep` bytes."""
    def setup(given: Given) -> dict:
        write_cifar(given.root / "data")
        if keep is not None:
            truncate(batch, keep)(given.root / BATCHES)
        elif batch is not None:
            data = content if isinstance(content, bytes) else pickle.dumps(content)
            (given.root / BATCHES / batch).write_bytes(data)
        return {}
    return setup


def truncate(name: str, keep: int) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        (folder / name).write_bytes((folder / name).read_bytes()[:keep])
    return change


def rewrite(name: str, array: np.ndarray) -> Callable[[Path], None]:
    return lambda folder: write_idx(folder / name, array)


def swap(a: str, b: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        x, y = (folder / a).read_bytes(), (folder / b).read_bytes()
        (folder / a).write_bytes(y)
        (folder / b).write_bytes(x)
    return change


def unreadable(name: str) -> Callable[[Path], None]:
    # a file whose every read fails with EIO, as a dying disk's would (and as chmod 000 cannot be for root)
    def change(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).symlink_to("/proc/self/mem")
    return change


def cifar_batch(n: int = 4, data=None, labels=None, **extra) -> dict:
    rng = np.random.default_rng(1)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8) if data is None else data,
             b"labels": [int(v) for v in rng.integers(0, 10, n)] if labels is None else labels}
    return {**batch, **extra}


AS_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                             reason="root writes into a chmod 0o500 directory; the /proc case covers it")


def read_only_root(given: Given) -> None:
    given.file("locked/.keep")
    (given.root / "locked").chmod(0o500)


DATA_CASES = [
    # missing
    case("missing CIFAR-10", f"train {CIFAR}", "dataset 'cifar10' not found", f"missing {BATCHES}/data_batch_1",
         "data.download is false", "Expected <root>/cifar-10-batches-py/", "--data-dir"),
    case("missing MNIST", f"find {MNIST}", "dataset 'mnist' not found", f"missing {RAW}/train-images-idx3-ubyte",
         "and 3 more", "four uncompressed idx files", "ONECYCLE_DATA"),
    case("one MNIST file missing", f"train {MNIST}", f"missing {RAW}/t10k-labels-idx1-ubyte and data.download",
         setup=mnist(lambda raw: (raw / "t10k-labels-idx1-ubyte").unlink())),
    case("data root is a file", f"find {MNIST}", "dataset 'mnist' not found", "data/MNIST/raw",
         setup=lambda g: {"file": g.file("data", "not a folder")}),
    case("no network to download", "find --config mnist --data-dir data", "the download failed", f"{RAW}/",
         "`onecycle data download --dataset mnist`"),
    # CIFAR-10 batches
    case("truncated CIFAR-10 batch", f"train {CIFAR}", f"{BATCHES}/data_batch_3", "truncated", "download it again",
         setup=cifar("data_batch_3", keep=500)),
    case("CIFAR-10 batch that is not a pickle", f"find {CIFAR}", f"{BATCHES}/data_batch_1",
         "not a readable CIFAR-10 batch", setup=cifar("data_batch_1", b"<html>404 Not Found</html>\n")),
    case("CIFAR-10 batch of classes not here", f"train {CIFAR}", f"{BATCHES}/test_batch", "not a readable",
         setup=cifar("test_batch", b"cno_such_module\nThing\n(tR.")),
    case("CIFAR-10 batch pickling a list", f"train {CIFAR}", f"{BATCHES}/data_batch_2",
         "expected a pickled dict with b'data' and b'labels'", setup=cifar("data_batch_2", [1, 2, 3])),
    case("CIFAR-100 batch in its place", f"find {CIFAR}", "data_batch_4", "b'labels'",
         setup=cifar("data_batch_4", {b"data": np.zeros((4, 3072), np.uint8), b"fine_labels": [1, 2, 3, 4]})),
    case("CIFAR-10 batch of 32x32 grey images", f"train {CIFAR}", "data_batch_5", "(4, 1024)", "N x 3072",
         setup=cifar("data_batch_5", cifar_batch(data=np.zeros((4, 1024), np.uint8)))),
    case("CIFAR-10 pixels above 255", f"train {CIFAR}", "data_batch_1", "uint8 pixels 0..255",
         setup=cifar("data_batch_1", cifar_batch(data=np.full((4, 3072), 300)))),
    case("CIFAR-10 pixels as floats", f"find {CIFAR}", "data_batch_1", "float32", "uint8 pixels",
         setup=cifar("data_batch_1", cifar_batch(data=np.full((4, 3072), 0.5, np.float32)))),
    case("CIFAR-10 labels as words", f"train {CIFAR}", "data_batch_1", "b'labels'", "a list of integers",
         setup=cifar("data_batch_1", cifar_batch(labels=["cat", "dog", "cat", "ship"]))),
    case("CIFAR-10 label out of range", f"train {CIFAR}", "test_batch", "labels outside 0..9",
         setup=cifar("test_batch", cifar_batch(labels=[1, 2, 3, 10]))),
    case("CIFAR-10 labels fewer than images", f"find {CIFAR}", "data_batch_2", "with 3 labels",
         setup=cifar("data_batch_2", cifar_batch(labels=[1, 2, 3]))),
    # MNIST idx files
    case("idx file with the wrong magic", f"train {MNIST}", f"{RAW}/train-images-idx3-ubyte", "magic 00000903",
         "expected 00000803",
         setup=mnist(lambda raw: (raw / "train-images-idx3-ubyte").write_bytes(
             b"\x00\x00\x09\x03" + (raw / "train-images-idx3-ubyte").read_bytes()[4:]))),
    case("idx images and labels swapped", f"find {MNIST}", "train-images-idx3-ubyte", "magic 00000801",
         setup=mnist(swap("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))),
    case("idx file with a short body", f"train {MNIST}", "t10k-images-idx3-ubyte", "header says 32x28x28",
         "truncated", setup=mnist(truncate("t10k-images-idx3-ubyte", 16 + 32 * 784 - 100))),
    case("idx header cut short", f"find {MNIST}", "train-labels-idx1-ubyte", "idx header cut short",
         setup=mnist(truncate("train-labels-idx1-ubyte", 6))),
    case("empty idx file", f"train {MNIST}", "t10k-labels-idx1-ubyte", "magic missing",
         setup=mnist(truncate("t10k-labels-idx1-ubyte", 0))),
    case("unreadable idx file", f"train {MNIST}", "train-images-idx3-ubyte", "cannot be read", "Input/output error",
         setup=mnist(unreadable("train-images-idx3-ubyte"))),
    case("more images than labels", f"find {MNIST}", "train-images-idx3-ubyte holds 64 images",
         "train-labels-idx1-ubyte 60 labels", setup=mnist(rewrite("train-labels-idx1-ubyte", np.zeros(60, np.uint8)))),
    case("MNIST label out of range", f"train {MNIST}", "t10k-labels-idx1-ubyte", "label 12 out of range for 10 classes",
         setup=mnist(rewrite("t10k-labels-idx1-ubyte", np.full(32, 12, np.uint8)))),
    case("no training images", f"train {MNIST}", "0 training and 32 test images",
         setup=mnist(lambda raw: (write_idx(raw / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8)),
                                  write_idx(raw / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))))),
    case("test images of another size", f"train {MNIST}", "training images are 1x28x28 but test images 1x32x32",
         setup=mnist(rewrite("t10k-images-idx3-ubyte", np.zeros((32, 32, 32), np.uint8)))),
    # images that do not fit the model
    case("3-channel net on 1-channel MNIST", f"train {MNIST} --set model.channels=[3,8,16,32,64,10]",
         "model.channels[0] = 3", "1 channel(s)", "start with 1", setup=mnist()),
    case("2-class net on 10-class MNIST", f"find {MNIST} --set model.channels=[1,8,16,32,64,2]",
         "model.channels[-1] = 2", "10 classes", "end with 10", setup=mnist()),
    case("CIFAR-10 through the MNIST net", f"train {MNIST} --dataset cifar10", "model.channels[0] = 1",
         "cifar10 images have 3 channel(s)", setup=cifar()),
    case("train_size below the batch size", f"train {MNIST} --set data.train_size=6", "train.batch_size = 8",
         "6 training images", "data.train_size", setup=mnist()),
    case("pad as wide as the image", f"find {MNIST} --set data.crop=true --set data.pad=28", "data.pad = 28",
         "28x28 images", "pad < 28", setup=mnist()),
    case("too few steps for 1cycle", f"train {MNIST} --set data.train_size=16", "a 2-step 1cycle",
         "schedule.pct_start", setup=mnist()),
    # where runs go
    case("runs root whose parent is missing", f"train {MNIST} --runs-dir nowhere/runs", "runs root nowhere/runs",
         "its parent nowhere does not exist", setup=mnist()),
    case("runs root that is a file", f"find {MNIST} --runs-dir results", "runs root results is not a directory",
         "--runs-dir", setup=both(mnist(), lambda g: g.file("results", "a file"))),
    case("runs root that cannot be made", f"find {MNIST} --runs-dir /proc/onecycle-runs",
         "runs root /proc/onecycle-runs cannot be created", setup=mnist()),
    case("runs root without write permission", f"train {MNIST} --runs-dir locked", "runs root locked",
         "not writable", setup=both(mnist(), read_only_root), marks=AS_ROOT),
]


# ------------------------------------------------------------------------------------------------
# the contract, checked the same way for every case


def records(root: Path) -> dict[Path, bytes | None]:
    """Every run-like directory under `root` (a lock, a config or a summary) and its summary's bytes."""
    found = {}
    for marker in (".lock", "config.yaml", "summary.json", "meta.json"):
        for path in root.rglob(marker):
            summary = path.parent / "summary.json"
            found[path.parent] = summary.read_bytes() if summary.is_file() else None
    return found


def assert_nothing_left_behind(before: dict, after: dict) -> None:
    """No new run directory unless it says `failed` and why; no existing run's summary touched."""
    for path, summary in after.items():
        if path in before:
            assert summary == before[path], f"{path}/summary.json was changed by a refused command"
            continue
        assert summary is not None, f"{path} left behind without a summary: {sorted(os.listdir(path))}"
        data = json.loads(summary)
        assert data["status"] == "failed" and data.get("stop_reason"), f"{path} left behind as {data}"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No case may wait on the network: a download attempt fails at once, as on an offline GPU box."""
    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable (tests run offline)")
    monkeypatch.setattr(socket, "create_connection", refuse)


# what a real process prints, the in-process runner hides: any warning but these (Python's defaults
# hide them outside __main__) would be more lines on stderr
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def run_case(c: Case, tmp_path: Path, request, invoke) -> str:
    """Run one case and check the contract; returns its line of stderr."""
    names = c.setup(Given(tmp_path, request)) if c.setup else {}
    before = records(tmp_path)
    args = shlex.split(c.args.format(**{k: shlex.quote(str(v)) for k, v in names.items()}))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        result = invoke(*args, env=c.env)
    shown = [w for w in warned if not issubclass(w.category, HIDDEN_WARNINGS)]
    assert not shown, f"a warning reaches stderr in a real process: {shown[0].message}"
    assert_usage_error(result, *c.fragments)
    assert result.stdout == "", f"stdout is for --json: {result.stdout!r}"
    assert_nothing_left_behind(before, records(tmp_path))
    return result.stderr.strip()


@pytest.mark.parametrize("c", CONFIG_CASES)
def test_bad_config(c, cli, tmp_path, request):
    run_case(c, tmp_path, request, cli)


@pytest.mark.parametrize("c", FLAG_CASES)
def test_bad_flags(c, cli, tmp_path, request):
    run_case(c, tmp_path, request, cli)


@pytest.mark.parametrize("c", DATA_CASES)
def test_bad_data(c, cli, tmp_path, request):
    run_case(c, tmp_path, request, cli)


# one case of each group again through `python -m onecycle_cli`: the entry point a shell script runs
# prints its one line under the program's own name, whatever the in-process runner does
BY_ID = {p.id: p.values[0] for p in CONFIG_CASES + FLAG_CASES + DATA_CASES}


@pytest.mark.parametrize("id", ["binary file", "unknown flag", "truncated CIFAR-10 batch"])
def test_the_real_process_prints_one_line_and_no_traceback(id, tmp_path, request):
    line = run_case(BY_ID[id], tmp_path, request, lambda *args, env: run_process(*args, env=env))
    assert line.startswith("onecycle"), line


def counts() -> dict[str, int]:
    return {"configs": len(CONFIG_CASES), "flags": len(FLAG_CASES), "data": len(DATA_CASES)}


def test_the_corpus_holds_at_least_40_cases_with_distinct_names():
    assert sum(counts().values()) >= 40 and all(n >= 10 for n in counts().values()), counts()
    assert len(BY_ID) == sum(counts().values()), "two cases share an id"


if __name__ == "__main__":
    for group, n in counts().items():
        print(f"{group}: {n} cases")
    print(f"total: {sum(counts().values())}")
