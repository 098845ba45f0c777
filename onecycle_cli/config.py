"""The config schema and how a config is resolved: `onecycle config --config cifar --set train.seed=1`.

Precedence, lowest first: the defaults below < the YAML file < environment (`ONECYCLE_DATA`, `ONECYCLE_CACHE`,
`ONECYCLE_RUNS`, `ONECYCLE_DEVICE`, or `ONECYCLE_<SECTION>__<KEY>`) < flags (`--set section.key=value`
and the named flags such as `--max-lr`). Everything is checked before any work starts; a bad
value becomes one `ConfigError` line naming the key, the value, where it came from and what was
expected.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from . import safe_yaml
from .errors import ConfigError
from .safe_files import CONFIG_LIMIT, NotRegularFile, TooLarge, path_problem, read_regular

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
# the largest learning rate, weight decay or eps: beyond it lr x weight_decay (or lr / a bias correction)
# leaves float32, which torch refuses in the middle of a step instead of letting the run diverge
FLOAT32_SAFE = 1e18
LearningRate = Annotated[float, Field(gt=0, le=FLOAT32_SAFE)]
SEED_MAX = 2**32 - 1  # numpy's generator takes no more, and one seed drives torch, numpy and Python


def _path(value: str) -> str:
    problem = path_problem(value)
    if problem:
        raise PydanticCustomError("path", "a path, but it has {problem}", {"problem": problem})
    return value


PATH_CHECK = AfterValidator(_path)
# a path key: always the text as given (`--runs-dir 2024` is the folder "2024", never the number),
# checked for what no file system takes before any work starts
PathStr = Annotated[str, PATH_CHECK]


class Section(BaseModel):
    # strict: "0.1" in YAML is a string, not a number; unknown keys are typos, not extensions
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)


class DataConfig(Section):
    dataset: Literal["cifar10", "mnist", "fashion_mnist", "mnist_sample", "synthetic", "folder"] = "cifar10"
    # where datasets live (torchvision's layouts), or the image folder itself; ONECYCLE_DATA or --data-dir
    root: PathStr = "data"
    download: bool = True          # fetch a missing dataset when the network allows
    train_size: Optional[PositiveInt] = None  # first N training images only (null: all); synthetic: how many to make
    valid_size: Optional[PositiveInt] = None  # first N test images only (null: all)
    flip: bool = True              # random horizontal mirror per image (wrong for digits)
    crop: bool = True              # a random crop per image, of the kind data.augment names (false: the whole image)
    # the random crop: pad_crop = reflect-pad + crop back to size (He et al.'s CIFAR recipe), rrc = random-resized
    # crop (torchvision's RandomResizedCrop, for photos); null: rrc for folders, pad_crop for the built-in sets
    augment: Optional[Literal["pad_crop", "rrc"]] = None
    pad: Annotated[int, Field(ge=0)] = 4  # pad_crop: reflection padding before the crop (He et al.: 4 px)
    scale: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2)] = [0.08, 1.0]  # rrc: share of the area a crop keeps (torchvision's default)
    ratio: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2)] = [3 / 4, 4 / 3]  # rrc: width/height of a crop (torchvision's default)
    normalize: bool = True         # per-channel standardisation of the inputs (false: pixels scaled to 0..1)
    # whose mean/std: the training images', or the ones the weights were trained with (fastai, timm and
    # torchvision normalise pretrained inputs so); auto: weights when model.pretrained or model.init is set
    stats: Literal["auto", "dataset", "weights"] = "auto"
    # folder only: the user's own images, decoded once into a cache (README: "Your own images")
    csv: Optional[PathStr] = None      # a fname,label[,is_valid] file, relative to root (fastai's from_csv); null: class folders
    valid_pct: Optional[Annotated[float, Field(gt=0, lt=1)]] = None  # share of each class held out when root has no valid/
    split_seed: Annotated[int, Field(ge=0)] = 0  # which files valid_pct holds out; apart from train.seed so --seeds keeps the split
    presize: Optional[Annotated[int, Field(ge=4, le=1024)]] = None  # side the cache stores, for rrc to crop from (fastbook: 460 for 224); null: image_size
    resize: Literal["crop", "squish", "pad"] = "crop"  # to a square: shorter side then centre crop; stretch; fit inside, pad black
    strict: bool = False           # true: any file that cannot be decoded stops the run (exit 2) instead of being skipped
    cache: Optional[PathStr] = None    # where decoded images are kept (ONECYCLE_CACHE); null: <root>/.onecycle-cache
    device_budget: Annotated[float, Field(gt=0, le=1)] = 0.5  # share of the device's free memory the images may fill; beyond it they stay in pinned host memory
    # synthetic and folder: the size of the images the model sees
    image_size: Annotated[int, Field(ge=4, le=512)] = 32
    channels: Annotated[int, Field(ge=1, le=16)] = 3  # folder: 3 (RGB) or 1 (grey); synthetic: any
    classes: Annotated[int, Field(ge=2, le=1000)] = 10  # synthetic only: folders take theirs from the layout

    @model_validator(mode="after")
    def _ranges(self) -> "DataConfig":
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"data.scale = {self.scale}: expected [low, high] with 0 < low <= high <= 1 "
                             f"(shares of the image's area; torchvision's default is [0.08, 1.0])")
        if self.ratio[0] > self.ratio[1]:
            raise ValueError(f"data.ratio = {self.ratio}: expected [low, high] with low <= high "
                             f"(width/height; torchvision's default is [0.75, 1.333])")
        if self.presize is not None and self.presize < self.image_size:
            raise ValueError(f"data.presize = {self.presize} is below data.image_size = {self.image_size}: the cache "
                             f"keeps images at presize for crops of image_size, so expected presize >= image_size or null")
        if self.dataset == "folder" and self.channels not in (1, 3):
            raise ValueError(f"data.channels = {self.channels}: a folder's images become 3 (RGB) or 1 (grey) channels")
        return self

    @property
    def crop_kind(self) -> str:
        """What a training image goes through: rrc, pad_crop, or none (the whole image, or a folder's centre crop)."""
        if not self.crop:
            return "none"
        return self.augment or ("rrc" if self.dataset == "folder" else "pad_crop")


SIMPLE_CNN_MAX_WEIGHTS = 10**9  # 4 GB of float32 weights, before gradients and optimiser state

RESNET_NAMES = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
BUILTIN_MODELS = (*RESNET_NAMES, "simple_cnn")
# where model names come from; the library checks that the name exists when the model is built
MODEL_NAMES_HELP = ("a built-in (" + ", ".join(BUILTIN_MODELS) + "), tv:NAME for any of "
                    "torchvision.models.list_models(), or timm:NAME[.TAG] for any of timm.list_models() "
                    "(pip install \"onecycle[timm]\")")
_LIBRARY_NAME = re.compile(r"(tv|timm):[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class ModelConfig(Section):
    name: str = "resnet56"         # see MODEL_NAMES_HELP: a built-in, tv:resnet34, timm:convnext_tiny, ...
    # true: the library's published weights, from its cache (TORCH_HOME, the Hugging Face cache), fetched only
    # where model.download and the network allow; PATH: a torchvision/timm state_dict, .safetensors or a
    # onecycle checkpoint (checkpoints/last.pt); false: random initialisation
    pretrained: Union[bool, str] = False
    init: Optional[PathStr] = None  # a onecycle run directory whose weights this run starts from (train --init)
    download: bool = True          # fetch missing pretrained weights when the network allows
    # simple_cnn only: channels[0] is the input, channels[-1] the number of classes (fastai's actns)
    channels: list[PositiveInt] = [1, 8, 16, 32, 64, 10]
    kernel_sizes: list[PositiveInt] = [5, 3, 3, 3, 3]  # one per conv (or a single value for all)
    strides: list[PositiveInt] = [2]                   # one per conv (or a single value for all)
    batchnorm: bool = True         # BatchNorm after each conv (the fastai book's net)
    final_relu: bool = False       # fastai v1 also put a ReLU on the last conv, before the pooling

    @field_validator("name")
    @classmethod
    def _name_form(cls, name: str) -> str:
        if name in BUILTIN_MODELS or _LIBRARY_NAME.fullmatch(name):
            return name
        hint = difflib.get_close_matches(name, BUILTIN_MODELS, n=1, cutoff=0.85)  # resnet57, not resnet18
        if not hint and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", name):
            hint = [f"tv:{name}", f"timm:{name}"]
        hint_text = f" (did you mean {' or '.join(repr(h) for h in hint)}?)" if hint else ""
        raise ValueError(f"model.name = {name!r}: expected {MODEL_NAMES_HELP}{hint_text}")

    @field_validator("pretrained", mode="before")
    @classmethod
    def _bool_or_path(cls, value):
        if not isinstance(value, (bool, str)):
            raise ValueError(f"model.pretrained = {value!r}: expected true, false or the path of a weights file")
        return value

    @field_validator("pretrained", "init")
    @classmethod
    def _path_given(cls, value, info):
        if isinstance(value, str) and not value.strip():  # an unset shell variable, not a request for anything
            raise ValueError(f"model.{info.field_name} = '': expected "
                             + ("true, false or the path of a weights file" if info.field_name == "pretrained"
                                else "the directory of a onecycle run"))
        return value

    @model_validator(mode="after")
    def _lists_match(self) -> "ModelConfig":
        n = len(self.channels) - 1
        if n < 1:
            raise ValueError("model.channels needs at least two entries: input channels and classes")
        for key in ("kernel_sizes", "strides"):
            if len(getattr(self, key)) not in (1, n):
                raise ValueError(f"model.{key} has {len(getattr(self, key))} entries: expected 1 or {n} "
                                 f"(one per conv of model.channels)")
        if self.pretrained is not False and self.init is not None:
            raise ValueError("model.init is set and so is model.pretrained: a run starts from one set of weights; "
                             "give one (model.pretrained false with --init)")
        if self.pretrained is True and self.name in BUILTIN_MODELS:
            raise ValueError(f"model.pretrained = true but the built-in {self.name} has no published weights: give the "
                             f"path of a onecycle checkpoint (model.pretrained=PATH), start from a run with "
                             f"--init RUN_DIR, or use tv:NAME / timm:NAME")
        if self.name == "simple_cnn":  # a few numbers in YAML must not ask for terabytes of weights
            ks = self.kernel_sizes * n if len(self.kernel_sizes) == 1 else self.kernel_sizes
            weights = sum(a * b * k * k for a, b, k in zip(self.channels, self.channels[1:], ks))
            if weights > SIMPLE_CNN_MAX_WEIGHTS:
                raise ValueError(f"model.channels = {_clip(str(self.channels))} with model.kernel_sizes = "
                                 f"{_clip(str(self.kernel_sizes))} make {weights:,} conv weights: expected at most "
                                 f"{SIMPLE_CNN_MAX_WEIGHTS:,} (4 GB in float32); use a ResNet for a large model")
        return self

    @property
    def source(self) -> str:
        """builtin, tv or timm: which library builds the model."""
        return self.name.split(":", 1)[0] if ":" in self.name else "builtin"


class OptimConfig(Section):
    name: Literal["sgd", "adamw"] = "sgd"
    momentum: Fraction = 0.9       # SGD momentum when the schedule does not cycle it
    nesterov: bool = False
    betas: Annotated[list[Fraction], Field(min_length=2, max_length=2)] = [0.9, 0.99]  # AdamW; beta1 is cycled by 1cycle
    eps: Annotated[float, Field(gt=0, le=FLOAT32_SAFE)] = 1e-5  # fastai's Adam eps (torch's 1e-8 is touchier at high LR)
    weight_decay: Annotated[float, Field(ge=0, le=FLOAT32_SAFE)] = 1e-4
    wd_bn_bias: bool = True        # false: spare BatchNorm weights and biases from weight decay (fastai's default)
    # discriminative LRs: the first (body) parameter group peaks at max_lr/lr_mult, the head at max_lr, the groups
    # between geometrically (fastai's slice(max_lr/lr_mult, max_lr); its fine_tune uses 100); 1: one LR for all
    lr_mult: Annotated[float, Field(ge=1, le=1e6)] = 1.0
    label_smoothing: Fraction = 0.0


# the three published 1cycle shapes; null keys in the schedule section take these values
SHAPES: dict[str, dict[str, Any]] = {
    # fastai fit_one_cycle: two cosine phases, warm up for a quarter, end at max_lr/1e5
    "fastai": dict(pct_start=0.25, div=25.0, final_div=1e5, anneal="cos", three_phase=False),
    # Smith 2018: linear up, symmetric linear down, then annihilation far below the start
    "smith": dict(pct_start=0.45, div=10.0, final_div=1e3, anneal="linear", three_phase=True),
    # torch.optim.lr_scheduler.OneCycleLR's own defaults (final lr = initial / 1e4)
    "torch": dict(pct_start=0.3, div=25.0, final_div=25.0 * 1e4, anneal="cos", three_phase=False),
}


class ScheduleConfig(Section):
    name: Literal["onecycle", "constant", "step", "cosine"] = "onecycle"
    shape: Literal["fastai", "smith", "torch"] = "fastai"  # which 1cycle (onecycle only)
    max_lr: LearningRate = 0.8    # the peak LR; constant/step/cosine start here
    pct_start: Optional[Annotated[float, Field(gt=0, lt=1)]] = None  # share of steps warming up
    div: Optional[Annotated[float, Field(ge=1)]] = None        # start at max_lr/div
    final_div: Optional[Annotated[float, Field(ge=1)]] = None  # end at max_lr/final_div
    anneal: Optional[Literal["cos", "linear"]] = None
    cycle_momentum: bool = True    # momentum (SGD) or beta1 (AdamW) moves against the LR
    max_momentum: Fraction = 0.95  # at the start and the end of the cycle
    base_momentum: Fraction = 0.85  # at the peak LR
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = [0.5, 0.75]  # step: shares of training
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1  # step: LR factor at each milestone
    # train.freeze_epochs > 0 is fastai's fine_tune: a 1cycle on the head alone, then one on the whole network
    freeze_pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.99  # the frozen cycle warms up almost to its end
    freeze_body_div: Annotated[float, Field(ge=1)] = 10.0  # frozen cycle: body groups (their BatchNorm) at max_lr/10
    unfreeze_lr_div: Annotated[float, Field(ge=1)] = 2.0   # the unfrozen cycle's head peaks at max_lr/2
    unfreeze_pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3  # fine_tune's warm-up share
    unfreeze_div: Annotated[float, Field(ge=1)] = 5.0      # the unfrozen cycle starts at its peak/5

    @model_validator(mode="after")
    def _fill_shape(self) -> "ScheduleConfig":
        for key, value in SHAPES[self.shape].items():
            if key != "three_phase" and getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.base_momentum > self.max_momentum:
            raise ValueError(f"schedule.base_momentum = {self.base_momentum} is above schedule.max_momentum = "
                             f"{self.max_momentum}: expected base_momentum <= max_momentum")
        if self.name == "onecycle" and self.shape == "smith" and self.pct_start >= 0.5:
            raise ValueError(f"schedule.pct_start = {self.pct_start}: the smith shape spends pct_start going up "
                             f"and as long coming down, so expected < 0.5")
        if self.final_div < self.div:
            raise ValueError(f"schedule.final_div = {self.final_div} is below schedule.div = {self.div}: "
                             f"1cycle ends below where it starts, expected final_div >= div")
        if sorted(self.milestones) != self.milestones:
            raise ValueError(f"schedule.milestones = {self.milestones}: expected increasing fractions")
        return self

    @property
    def three_phase(self) -> bool:
        return SHAPES[self.shape]["three_phase"]


class TrainConfig(Section):
    # epochs of the (unfrozen) 1cycle; 0 with freeze_epochs > 0 trains the head alone, the body frozen
    # throughout (fastai's freeze() then fit_one_cycle: the "head only" baseline of transfer learning)
    epochs: Annotated[int, Field(ge=0)] = 95
    batch_size: PositiveInt = 512  # global batch, split across GPUs under torchrun
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] = 0
    device: str = "auto"           # auto: CUDA when present, else CPU; or cpu, cuda, cuda:1
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: Optional[bool] = None  # null: on for CUDA, where convs run faster in NHWC
    compile: bool = False          # torch.compile the model (pays a warm-up for faster steps)
    eval_batch_size: PositiveInt = 1024
    log_every: PositiveInt = 50    # steps between display updates and record flushes (the only host syncs)
    activation_stats: bool = False  # per-layer mean/std/near-zero and histograms every step
    # fastai's fine_tune: first N epochs of 1cycle on the head alone (the body frozen, its BatchNorm still
    # training), then train.epochs on the whole network; 0: no frozen cycle
    freeze_epochs: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _device_name(self) -> "TrainConfig":
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"train.device = {self.device!r}: expected auto, cpu, cuda or cuda:N")
        if self.epochs == 0 and not self.freeze_epochs:
            raise ValueError("train.epochs = 0 trains nothing: expected at least 1 (0 only with train.freeze_epochs "
                             "> 0, which trains the head alone)")
        return self


class FindConfig(Section):
    start_lr: LearningRate = 1e-7
    end_lr: LearningRate = 10.0
    # mini-batches; the data is cycled when an epoch is shorter. A range test is about 100: past 100,000
    # it is a training run, and the sweep keeps one loss per batch on the device
    num_it: Annotated[int, Field(ge=10, le=100_000)] = 100
    mode: Literal["exp", "linear"] = "exp"  # log-linear growth by default, as fastai and Smith
    diverge: Annotated[float, Field(gt=1)] = 4.0  # stop once the smoothed loss exceeds this times the best
    beta: Fraction = 0.98          # smoothing of the loss (exponential moving average, bias-corrected)
    momentum: Optional[Fraction] = None  # held during the sweep; null: optim.momentum (SGD) or betas[0] (AdamW)
    val_batches: Annotated[int, Field(ge=0)] = 0  # Smith's variant: score each step on N held-out batches
    # used by train --max-lr find; slide had the lowest mean regret of the four (benchmarks/suggest.py)
    suggest: Literal["valley", "steep", "minimum", "slide"] = "slide"
    freeze: bool = False           # sweep the head alone, body frozen (always so when train.freeze_epochs > 0)

    @model_validator(mode="after")
    def _range(self) -> "FindConfig":
        if self.end_lr <= self.start_lr:
            raise ValueError(f"find.end_lr = {self.end_lr} is not above find.start_lr = {self.start_lr}: "
                             f"expected start_lr < end_lr")
        return self


class RunConfig(Section):
    root: PathStr = "runs"         # where run directories go; ONECYCLE_RUNS or --runs-dir
    tensorboard: bool = False      # also write TensorBoard event files (pip install onecycle[tensorboard])


class Config(Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    find: FindConfig = FindConfig()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _across_sections(self) -> "Config":
        weights = self.model.pretrained is not False or self.model.init is not None
        if self.data.stats == "auto":  # recorded resolved, so config.yaml says whose statistics were used
            object.__setattr__(self, "data", self.data.model_copy(update={"stats": "weights" if weights else "dataset"}))
        elif self.data.stats == "weights" and not weights:
            raise ValueError("data.stats = 'weights' but model.pretrained is false and model.init is null: there are "
                             "no weights to take statistics from; use dataset or auto")
        s = self.schedule
        if self.train.freeze_epochs:
            if s.name != "onecycle":
                raise ValueError(f"train.freeze_epochs = {self.train.freeze_epochs} runs fastai's fine_tune, two 1cycles; "
                                 f"schedule.name = {s.name!r}: expected onecycle (or freeze_epochs 0)")
            for key in ("freeze_pct_start", "unfreeze_pct_start"):
                if s.shape == "smith" and getattr(s, key) >= 0.5:
                    raise ValueError(f"schedule.{key} = {getattr(s, key)}: the smith shape spends pct_start going up "
                                     f"and as long coming down, so expected < 0.5 (or schedule.shape fastai)")
        return self


# ---------------------------------------------------------------------------------------------
# Which keys a run reads. Every config.yaml keeps every key (`train --resume` reads it back), but a
# key that the chosen dataset, model, optimiser, schedule or command never reads is no setting of
# the run: `onecycle config`, config.yaml's comments, report.html and `compare` mark it or leave it
# out. A key that only some choices read gets one line in APPLIES; a key not listed is always read.

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


# ---------------------------------------------------------------------------------------------
# YAML: read by safe_yaml (YAML 1.2 scalars, unique keys, bounded aliases), path keys kept as text


def parse_scalar(text: str, source: str = "") -> Any:
    """A `--set` or environment value, typed as YAML 1.2 would type it (`1e-4` is a float, `010` is 10)."""
    try:
        return safe_yaml.load(text) if text.strip() else None
    except safe_yaml.TooBig as e:  # an alias bomb is refused, not read as a very long string
        raise ConfigError(f"{source or repr(_clip(text))}: {e.problem}") from None
    except yaml.YAMLError:
        return text  # left as a string: the schema says what was expected instead


def read_yaml(path: Path, follow: bool = True) -> dict:
    """The top-level mapping of a config file, or a ConfigError saying what is wrong with it.

    Only a regular file of at most CONFIG_LIMIT bytes is read: `--config /dev/zero` or a FIFO would
    otherwise read (or wait) forever. `follow=False` for a run's own config.yaml (no links).
    """
    try:
        raw = read_regular(path, CONFIG_LIMIT, follow=follow)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except NotRegularFile as e:
        if e.strerror == "a directory":
            raise ConfigError(f"config path is a directory, expected a YAML file: {path}") from None
        raise ConfigError(f"config file {path} is {e.strerror}: expected a YAML file") from None
    except TooLarge as e:
        raise ConfigError(f"config file {path} is {e.strerror} for a config: expected a YAML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8): expected a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"config file {path} is binary: expected a YAML file")
    try:
        data = safe_yaml.load(text, text_keys=PATH_KEYS, nullable=NULLABLE_PATH_KEYS)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if isinstance(e, safe_yaml.TooBig):  # well formed, but more than any config needs
            raise ConfigError(f"config file {path}: refused: {problem}") from None
        if "'\\t'" in problem:  # PyYAML: "found character '\t' that cannot start any token"
            problem = "a tab character; YAML indents with spaces only"
        raise ConfigError(f"config file {path}{where}: malformed YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty: expected sections such as data:, model:, train:")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} holds a {type(data).__name__}: expected a mapping of sections "
                          f"(data:, model:, optim:, schedule:, train:, find:, run:)")
    return data


# ---------------------------------------------------------------------------------------------
# resolving: file, environment and flags merged over the defaults, each key remembering its source


def shipped_configs() -> dict[str, Path]:
    """The presets that ship with onecycle, by name (`cifar`, `mnist`, `mnist_sample`)."""
    from .presets import shipped
    return shipped()


def locate_config(config: str | None) -> tuple[str, Path, str | None]:
    """`--config` as a path or a shipped name, and a note to show when a name stood in for a file.

    None means the CIFAR-10 / ResNet-56 preset. `cifar.yaml` that is no file here means the preset
    `cifar`: the design card's own command, typed from any folder.
    """
    from . import presets
    if config is not None and not config.strip():  # an unset shell variable, not a request for the default
        raise ConfigError(f"--config '': expected a YAML file or a shipped config name ({', '.join(presets.shipped())})")
    config = config or "cifar"
    path = Path(config)
    bare = os.sep not in config and (os.altsep is None or os.altsep not in config)
    # a path that exists is that path, even a device or a FIFO: read_yaml says what is wrong with it
    if path.is_file() or (path.exists() and not path.is_dir()) or (path.suffix in presets.SUFFIXES and os.path.lexists(path)):
        return path.stem, path, None  # read_yaml says what is wrong with a path that cannot be read
    if not bare and path.suffix in presets.SUFFIXES:
        raise ConfigError(f"config file not found: {config}; {presets.not_found(config)}")
    preset = presets.lookup(config) if bare else None
    if preset is not None:
        note = (None if path.suffix not in presets.SUFFIXES else
                f"--config {config}: no such file here, so using the shipped preset {preset.stem!r} "
                f"(onecycle init {preset.stem} writes an editable copy)")
        return preset.stem, preset, note
    if path.is_dir():
        raise ConfigError(f"--config {config} is a directory, expected a YAML file or a shipped preset; "
                          f"{presets.not_found(config)}")
    raise ConfigError(f"--config {config}: no such file and no shipped preset of that name; "
                      f"{presets.not_found(config)}")


def _is_path(annotation: Any, metadata: tuple = ()) -> bool:
    return PATH_CHECK in metadata or any(_is_path(a, getattr(a, "__metadata__", ())) for a in get_args(annotation))


# every key typed PathStr, found from the schema, so a key added as a path is one at once
PATH_KEYS = frozenset(f"{section}.{key}" for section, field in Config.model_fields.items()
                      for key, f in field.annotation.model_fields.items() if _is_path(f.annotation, tuple(f.metadata)))

# of those, the ones that may be unset: a plain `null` in a file is no path (`init: null`)
NULLABLE_PATH_KEYS = frozenset(f"{section}.{key}" for section, field in Config.model_fields.items()
                               for key, f in field.annotation.model_fields.items()
                               if f"{section}.{key}" in PATH_KEYS and type(None) in get_args(f.annotation))

ENV_ALIASES = {"ONECYCLE_DATA": "data.root", "ONECYCLE_RUNS": "run.root", "ONECYCLE_DEVICE": "train.device",
               "ONECYCLE_CACHE": "data.cache"}


def env_overrides(environ: dict[str, str]) -> list[tuple[str, str, str]]:
    """(key, text, source) for every ONECYCLE_* variable that sets a config key."""
    out = []
    for name, text in sorted(environ.items()):
        if name in ENV_ALIASES:
            out.append((ENV_ALIASES[name], text, name))
        elif name.startswith("ONECYCLE_") and "__" in name:
            section, _, key = name[len("ONECYCLE_"):].partition("__")
            out.append((f"{section.lower()}.{key.lower()}", text, name))
    return out


def parse_set(item: str) -> tuple[str, str]:
    key, eq, value = item.partition("=")
    if not eq or not key.strip() or key != key.strip() or " " in key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set schedule.max_lr=0.4")
    if "." not in key:
        raise ConfigError(f"--set {item!r}: {key!r} names no section; expected section.key=value "
                          f"(sections: {', '.join(Config.model_fields)})")
    if not all(key.split(".")):  # `.seed`, `train.`, `train..seed`: a name left out between the dots
        raise ConfigError(f"--set {item!r}: {key!r} has an empty name between dots; expected section.key=value, "
                          f"e.g. --set train.seed=1")
    return key, value


def _put(tree: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[:i + 1])} is a value, not a section, so {dotted} "
                              f"(from {source}) cannot be set")
        node = child
    node[parts[-1]] = value


def _leaves(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix]
    return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]


class Resolved(BaseModel):
    """A validated config with its name (for run directories) and the source of each set key."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    config: Config
    name: str
    path: Optional[str] = None
    sources: dict[str, str] = {}
    notes: list[str] = []  # what the CLI should tell the user, e.g. that a preset stood in for a missing file


def resolve(config: str | None = None, sets: list[str] | None = None, flags: dict[str, Any] | None = None,
            environ: dict[str, str] | None = None, from_file: Path | None = None) -> Resolved:
    """Merge defaults < YAML < environment < flags and validate; `flags` maps keys to values or None.

    `from_file` reads an already-resolved config (a run's config.yaml) instead of `config`.
    """
    if from_file is not None:
        name, path, note = from_file.parent.name, from_file, None
    else:
        name, path, note = locate_config(config)
    tree = read_yaml(path, follow=from_file is None)  # a run's own config.yaml is never read through a link
    sources = {leaf: path.name for leaf in _leaves(tree)}
    environ = os.environ if environ is None else environ
    # a path is the text as given, never YAML: --runs-dir 2024 is the folder "2024", --data-dir null "null"
    typed = lambda key, text, source: text if key in PATH_KEYS else parse_scalar(text, source)  # noqa: E731
    for key, text, source in env_overrides(dict(environ)):
        _put(tree, key, typed(key, text, source), source)
        sources[key] = source
    flagged: dict[str, str] = {}
    for item in sets or []:
        key, text = parse_set(item)
        _put(tree, key, typed(key, text, f"--set {_clip(item)}"), f"--set {item}")
        sources[key] = flagged[key] = f"--set {item}"
    for key, (flag, value) in (flags or {}).items():
        if value is None:
            continue
        if key in flagged:
            raise ConfigError(f"conflicting flags: {flag} {value} and {flagged[key]} both set {key}; give one")
        value = typed(key, value, flag) if isinstance(value, str) else value
        _put(tree, key, value, flag)
        sources[key] = flagged[key] = f"{flag} {value}"
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_explain(e, sources)) from None
    return Resolved(config=cfg, name=name, path=str(path), sources=sources, notes=[note] if note else [])


_SECTIONS: dict[str, type[Section]] = {name: f.annotation for name, f in Config.model_fields.items()}


def _explain(error: ValidationError, sources: dict[str, str]) -> str:
    """The first validation error as one line: key, value, source, what was expected."""
    e = error.errors(include_url=False)[0]
    loc = [str(p) for p in e["loc"]]
    key = ".".join(p for p in loc if not p.isdigit()) or "config"
    value = e.get("input")
    if e["type"] == "value_error":  # a check across keys: the message names the key it is about first
        named = re.match(r"[a-z_]+\.[a-z_]+", str(e["msg"]).removeprefix("Value error, "))
        key = named.group(0) if named else key
    # the key itself, its section, or (for a mapping where a value goes) a key under it
    source = next((sources[k] for k in (key, key.rsplit(".", 1)[0]) if k in sources), None) or next(
        (s for k, s in sources.items() if k.startswith(key + ".")), None)
    where = f" (from {_clip(source)})" if source else ""
    kind, ctx = e["type"], e.get("ctx", {})
    if kind == "extra_forbidden":
        if len(loc) == 1:
            known = list(Config.model_fields)
            hint = difflib.get_close_matches(loc[0], known, n=1)
            return (f"unknown section {loc[0]!r}{where}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; sections: {', '.join(known)}")
        known = list(_SECTIONS[loc[0]].model_fields) if loc[0] in _SECTIONS else []
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        return (f"unknown key {key!r}{where}" + (f" (did you mean '{loc[0]}.{hint[0]}'?)" if hint else "")
                + (f"; {loc[0]} takes: {', '.join(known)}" if known else ""))
    expected = {
        "float_type": "a number", "int_type": "an integer", "bool_type": "true or false",
        "string_type": "a string", "list_type": "a list", "finite_number": "a finite number",
        "model_type": "a mapping of keys", "dict_type": "a mapping of keys",
        "int_from_float": "an integer", "none_required": "null",
    }.get(kind)
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        hint = difflib.get_close_matches(str(value), options, n=1)
        expected = "one of " + ", ".join(options) + (f" (did you mean {hint[0]!r}?)" if hint else "")
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        expected = f"a value {op} {bound:g}" if isinstance(bound, float) else f"a value {op} {bound}"
        if isinstance(value, float) and math.isnan(value):
            expected = "a finite number"
    elif kind in ("too_short", "too_long"):
        expected = f"a list of {ctx.get('min_length', ctx.get('max_length'))} items"
    elif kind == "value_error":
        return f"config error{where}: {str(e['msg']).removeprefix('Value error, ')}"
    elif expected is None:
        expected = e["msg"]
    if isinstance(value, dict):  # a nested mapping: name its keys, not the whole tree
        return (f"config error: {key} = {{{', '.join(f'{k}: ...' for k in value)}}}{where}: expected {expected}"
                + ("" if kind in ("model_type", "dict_type") else ", not a mapping"))
    return f"config error: {key} = {_clip(repr(value))}{where}: expected {expected}"


def _clip(text: str, limit: int = 100) -> str:
    """A value or source short enough for a one-line error: a 300-byte path is named, not repeated."""
    return text if len(text) <= limit else f"{text[:limit - 30]}...({len(text):,} characters)"


def to_yaml(cfg: Config, commands: frozenset[str] | set[str] | None = None) -> str:
    """The resolved config as YAML, every key explicit, in schema order; read back by safe_yaml the same.

    With `commands`, each key that a run of those commands does not read keeps its value (the file
    still loads back) and gets a comment saying when it would be read.
    """
    tree = cfg.model_dump(mode="json")
    if commands is None:
        return safe_yaml.dump(tree, sort_keys=False, default_flow_style=None, width=100)
    why = unread(flatten(tree), commands)
    lines = []
    for section, keys in tree.items():
        lines.append(f"{section}:")
        # block style for the key, flow style inside a list value: `strides: [2]` on one line
        body = [("  " + safe_yaml.dump({k: v}, sort_keys=False, default_flow_style=None if isinstance(v, list)
                                       else False, width=100).rstrip("\n").replace("\n", "\n  "),
                 why.get(f"{section}.{k}")) for k, v in keys.items()]
        width = max((len(text) for text, _ in body if "\n" not in text), default=0)
        for text, reason in body:
            if reason is None:
                lines.append(text)
            elif "\n" in text:  # a value over several lines: the comment goes above it
                lines += [f"  # not read: {reason}", text]
            else:
                lines.append(f"{text:<{width}}  # not read: {reason}")
    return "\n".join(lines) + "\n"
