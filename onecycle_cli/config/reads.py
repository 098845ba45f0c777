"""Which keys a run reads: `onecycle config --config mnist_sample` marks the others "not read".

Every config.yaml keeps every key (`train --resume` reads it back), but a key that the chosen dataset,
model, optimiser, schedule or command never reads is no setting of the run: `onecycle config`,
config.yaml's comments, report.html and `compare` mark it or leave it out. A key that only some
choices read gets one line in APPLIES; a key not listed is always read.
"""

from __future__ import annotations

from typing import Any

COMMANDS = frozenset({"train", "find"})  # `train --max-lr find` is both: it runs the range test first


class When:
    """Read only while another key holds one of these values."""

    def __init__(self, key: str, *values: Any):
        self.key, self.values = key, values

    def holds(self, flat: dict[str, Any], commands: frozenset[str]) -> bool:
        return flat.get(self.key) in self.values

    def __str__(self) -> str:
        words = [_plain(v) for v in self.values]
        return f"with {self.key} " + (", ".join(words[:-1]) + " or " if len(words) > 1 else "") + words[-1]


class By:
    """Read only by these commands."""

    def __init__(self, *commands: str):
        self.commands = frozenset(commands)

    def holds(self, flat: dict[str, Any], commands: frozenset[str]) -> bool:
        return not self.commands.isdisjoint(commands)

    def __str__(self) -> str:
        return "by " + " or ".join("onecycle find (or train --max-lr find)" if c == "find" else f"onecycle {c}"
                                   for c in sorted(self.commands))


class Either:
    """Read when any of these rules holds; `why` says so in fewer words than the rules would."""

    def __init__(self, *rules: When | By | Positive, why: str = ""):
        self.rules, self.why = rules, why

    def holds(self, flat: dict[str, Any], commands: frozenset[str]) -> bool:
        return any(r.holds(flat, commands) for r in self.rules)

    def __str__(self) -> str:
        return self.why or " or ".join(map(str, self.rules))


class Positive:
    """Read only while another key is above zero."""

    def __init__(self, key: str):
        self.key = key

    def holds(self, flat: dict[str, Any], commands: frozenset[str]) -> bool:
        value = flat.get(self.key)
        return isinstance(value, (int, float)) and value > 0

    def __str__(self) -> str:
        return f"with {self.key} > 0"


def _plain(value: Any) -> str:
    """A value as YAML writes it: true, null, cifar10."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


SYNTHETIC = When("data.dataset", "synthetic")
FOLDER = When("data.dataset", "folder")
GENERATED_OR_FOLDER = When("data.dataset", "synthetic", "folder")
BUILT_IN = ("cifar10", "mnist", "fashion_mnist", "mnist_sample", "synthetic")
SIMPLE_CNN = When("model.name", "simple_cnn")
SGD, ADAMW = When("optim.name", "sgd"), When("optim.name", "adamw")
ONECYCLE = When("schedule.name", "onecycle")
CYCLED = When("schedule.cycle_momentum", True)
FIND, TRAIN = By("find"), By("train")
FINE_TUNE = Positive("train.freeze_epochs")
UNFROZEN = Positive("train.epochs")  # with freeze_epochs, 0 epochs: the head alone, no unfrozen cycle

# {"section.key" or "section.*": rules that must all hold for a run to read the key}
APPLIES: dict[str, tuple[When | By | Either | Positive, ...]] = {
    "data.root": (When("data.dataset", "cifar10", "mnist", "fashion_mnist", "folder"),),  # mnist_sample ships inside
    "data.download": (When("data.dataset", "cifar10", "mnist", "fashion_mnist"),),  # synthetic is generated
    "data.augment": (When("data.crop", True),),  # which random crop: none without one
    # the padding only feeds CIFAR's crop: data.augment pad_crop, or null for a built-in set
    "data.pad": (When("data.crop", True), Either(When("data.augment", "pad_crop"), When("data.dataset", *BUILT_IN),
                                                 why="with data.augment pad_crop (null: for the built-in sets)"),
                 When("data.augment", "pad_crop", None)),
    # the random-resized crop's ranges: data.augment rrc, or null for a folder
    "data.scale": (When("data.crop", True), Either(When("data.augment", "rrc"), FOLDER,
                                                   why="with data.augment rrc (null: for a folder)"),
                   When("data.augment", "rrc", None)),
    "data.ratio": (When("data.crop", True), Either(When("data.augment", "rrc"), FOLDER,
                                                   why="with data.augment rrc (null: for a folder)"),
                   When("data.augment", "rrc", None)),
    "data.image_size": (GENERATED_OR_FOLDER,),  # a built-in dataset has its own image size,
    "data.channels": (GENERATED_OR_FOLDER,),    # channels
    "data.classes": (SYNTHETIC,),               # and classes (a folder's are its class folders)
    "data.csv": (FOLDER,),                       # the user's own images only: their layout,
    "data.valid_pct": (FOLDER,),                 # split,
    "data.split_seed": (FOLDER,),
    "data.presize": (FOLDER,),                   # decoding
    "data.resize": (FOLDER,),
    "data.strict": (FOLDER,),                    # bad files
    "data.cache": (FOLDER,),                     # and cache
    "model.channels": (SIMPLE_CNN,),          # a ResNet's layers follow from its depth and the data
    "model.kernel_sizes": (SIMPLE_CNN,),
    "model.strides": (SIMPLE_CNN,),
    "model.batchnorm": (SIMPLE_CNN,),
    "model.final_relu": (SIMPLE_CNN,),
    "model.download": (When("model.pretrained", True),),  # a path or false fetches nothing
    "data.stats": (When("data.normalize", True),),
    # 1cycle sets SGD's momentum itself when it cycles it; the range test holds it (find.momentum: null)
    "optim.momentum": (SGD, Either(FIND, When("schedule.name", "constant", "step", "cosine"),
                                   When("schedule.cycle_momentum", False),
                                   why="by the range test and by schedules that do not cycle momentum")),
    "optim.nesterov": (SGD,),
    "optim.betas": (ADAMW,),
    "optim.eps": (ADAMW,),
    "schedule.*": (TRAIN,),                   # the range test sweeps its own LR
    "schedule.shape": (ONECYCLE,),
    "schedule.pct_start": (ONECYCLE,),
    "schedule.div": (ONECYCLE,),
    "schedule.final_div": (When("schedule.name", "onecycle", "cosine"),),  # cosine ends at max_lr / final_div
    "schedule.anneal": (ONECYCLE,),
    "schedule.cycle_momentum": (ONECYCLE,),
    "schedule.max_momentum": (ONECYCLE, CYCLED),
    "schedule.base_momentum": (ONECYCLE, CYCLED),
    "schedule.milestones": (When("schedule.name", "step"),),
    "schedule.gamma": (When("schedule.name", "step"),),
    "schedule.freeze_pct_start": (FINE_TUNE,),  # the two cycles of fastai's fine_tune
    "schedule.freeze_body_div": (FINE_TUNE,),
    "schedule.unfreeze_lr_div": (FINE_TUNE, UNFROZEN),
    "schedule.unfreeze_pct_start": (FINE_TUNE, UNFROZEN),
    "schedule.unfreeze_div": (FINE_TUNE, UNFROZEN),
    "train.freeze_epochs": (TRAIN,),
    "train.epochs": (TRAIN,),
    "train.eval_batch_size": (TRAIN,),
    "train.log_every": (TRAIN,),
    "train.activation_stats": (TRAIN,),
    "run.tensorboard": (TRAIN,),
    "find.*": (FIND,),
}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"schedule.max_lr": 0.05, ...}: the names `--set` takes, one per leaf."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def unread(flat: dict[str, Any], commands: frozenset[str] | set[str] = COMMANDS) -> dict[str, str]:
    """{key: why it is not read} for the keys of a flattened config that a run of `commands` ignores."""
    commands = frozenset(commands)
    out = {}
    for key in flat:
        rules = APPLIES.get(key.split(".", 1)[0] + ".*", ()) + APPLIES.get(key, ())
        failing = next((r for r in rules if not r.holds(flat, commands)), None)
        if failing is not None:  # the first rule that fails says enough: "only with model.name simple_cnn"
            out[key] = f"only {failing}"
    return out
