"""The config schema: every key, its type, range and default, each with its reason (`onecycle config`).

One pydantic model per section (data, model, optim, schedule, train, find, run); unknown keys are
errors, and a value out of range is refused before any work starts. Which keys a run reads is
`reads.py`; the YAML text is `text.py`; merging a file, the environment and flags is `resolve.py`.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..safe_files import path_problem

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
    # rrc: share of the area a crop keeps (torchvision's default)
    scale: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2)] = [0.08, 1.0]
    # rrc: width/height of a crop (torchvision's default)
    ratio: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2)] = [3 / 4, 4 / 3]
    normalize: bool = True         # per-channel standardisation of the inputs (false: pixels scaled to 0..1)
    # whose mean/std: the training images', or the ones the weights were trained with (fastai, timm and
    # torchvision normalise pretrained inputs so); auto: weights when model.pretrained or model.init is set
    stats: Literal["auto", "dataset", "weights"] = "auto"
    # folder only: the user's own images, decoded once into a cache (README: "Your own images")
    # a fname,label[,is_valid] file, relative to root (fastai's from_csv); null: class folders
    csv: Optional[PathStr] = None
    # share of each class held out when root has no valid/
    valid_pct: Optional[Annotated[float, Field(gt=0, lt=1)]] = None
    # which files valid_pct holds out; apart from train.seed so --seeds keeps the split
    split_seed: Annotated[int, Field(ge=0)] = 0
    # side the cache stores, for rrc to crop from (fastbook: 460 for 224); null: image_size
    presize: Optional[Annotated[int, Field(ge=4, le=1024)]] = None
    # to a square: shorter side then centre crop; stretch; fit inside, pad black
    resize: Literal["crop", "squish", "pad"] = "crop"
    # true: any file that cannot be decoded stops the run (exit 2) instead of being skipped
    strict: bool = False
    cache: Optional[PathStr] = None    # where decoded images are kept (ONECYCLE_CACHE); null: <root>/.onecycle-cache
    # share of the device's free memory the images may fill; beyond it they stay in pinned host memory
    device_budget: Annotated[float, Field(gt=0, le=1)] = 0.5
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
                             f"keeps images at presize for crops of image_size, so expected presize >= image_size or "
                             f"null")
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
    # AdamW; beta1 is cycled by 1cycle
    betas: Annotated[list[Fraction], Field(min_length=2, max_length=2)] = [0.9, 0.99]
    # fastai's Adam eps (torch's 1e-8 is touchier at high LR)
    eps: Annotated[float, Field(gt=0, le=FLOAT32_SAFE)] = 1e-5
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
    # micro-batches a global batch is split into, their gradients summed before one optimiser step: the
    # same experiment on a smaller card (only BatchNorm sees the micro-batch); batch_size must divide.
    # auto: the fewest whose micro-batch fits the GPU, found by trial steps (1 on a CPU)
    accum_steps: Union[int, Literal["auto"]] = 1
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] = 0
    device: str = "auto"           # auto: CUDA when present, else CPU; or cpu, cuda, cuda:1
    # torch's CPU threads (ONECYCLE_THREADS); null: OMP_NUM_THREADS if set, else 1 for a step under 100M
    # multiply-adds, else the CPUs this process may use (affinity and cgroup quota), not the machine's cores
    threads: Optional[PositiveInt] = None
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: Optional[bool] = None  # null: on for CUDA, where convs run faster in NHWC
    compile: bool = False          # torch.compile the model (pays a warm-up for faster steps)
    eval_batch_size: PositiveInt = 1024
    log_every: PositiveInt = 50    # steps between display updates and record flushes (the only host syncs)
    activation_stats: bool = False  # per-layer mean/std/near-zero and histograms every step
    # a moving average of the weights (timm's --model-ema-decay, with its warm-up), scored each epoch and
    # saved beside the model; null: none. 0.999 suits runs of a few thousand steps, 0.9999 longer ones
    ema: Optional[Annotated[float, Field(ge=0, lt=1)]] = None
    # fastai's fine_tune: first N epochs of 1cycle on the head alone (the body frozen, its BatchNorm still
    # training), then train.epochs on the whole network; 0: no frozen cycle
    freeze_epochs: Annotated[int, Field(ge=0)] = 0

    @field_validator("accum_steps", mode="before")
    @classmethod
    def _accum(cls, value):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096):
            return value
        raise ValueError(f"train.accum_steps = {value!r}: expected a whole number from 1 to 4096, or auto")

    @property
    def total_epochs(self) -> int:
        """Every epoch of the run, the frozen cycle's and the unfrozen one's."""
        return self.freeze_epochs + self.epochs

    @model_validator(mode="after")
    def _device_name(self) -> "TrainConfig":
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"train.device = {self.device!r}: expected auto, cpu, cuda or cuda:N")
        if self.accum_steps != "auto" and self.batch_size % self.accum_steps:
            raise ValueError(f"train.batch_size = {self.batch_size} does not split into train.accum_steps = "
                             f"{self.accum_steps} equal micro-batches: expected a multiple of {self.accum_steps}")
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
    # used by train --max-lr find; floor: the least worst-case regret on the development tasks, and basin, tried
    # since, better only where seeds scatter most (benchmarks/suggest.py, docs/benchmarks.md)
    suggest: Literal["floor", "basin", "valley", "steep", "minimum", "slide"] = "floor"
    freeze: bool = False           # sweep the head alone, body frozen (so when train.epochs 0 with freeze_epochs;
    #                                a fine_tune is otherwise swept whole, as its unfrozen cycle trains)

    @model_validator(mode="after")
    def _range(self) -> "FindConfig":
        if self.end_lr <= self.start_lr:
            raise ValueError(f"find.end_lr = {self.end_lr} is not above find.start_lr = {self.start_lr}: "
                             f"expected start_lr < end_lr")
        return self


Tracker = Literal["tensorboard", "mlflow", "wandb"]


class RunConfig(Section):
    root: PathStr = "runs"         # where run directories go; ONECYCLE_RUNS or --runs-dir
    # trackers that get the run's records too (onecycle_cli/trackers): [mlflow], [wandb], [tensorboard, mlflow];
    # each an extra (pip install "onecycle[mlflow]"); --log mlflow,wandb
    log: list[Tracker] = []
    tensorboard: bool = False      # the same as "tensorboard" in run.log (--tensorboard)

    @field_validator("log", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):  # --log mlflow,wandb or --set run.log=mlflow
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            return list(dict.fromkeys(value))  # each once, in the order given
        return value

    @model_validator(mode="after")
    def _tensorboard(self) -> "RunConfig":
        # one setting, two spellings: recorded both ways so config.yaml reads the same whichever was given
        if self.tensorboard and "tensorboard" not in self.log:
            self.log = [*self.log, "tensorboard"]
        self.tensorboard = "tensorboard" in self.log
        return self


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
            stats = "weights" if weights else "dataset"
            object.__setattr__(self, "data", self.data.model_copy(update={"stats": stats}))
        elif self.data.stats == "weights" and not weights:
            raise ValueError("data.stats = 'weights' but model.pretrained is false and model.init is null: there are "
                             "no weights to take statistics from; use dataset or auto")
        s = self.schedule
        if self.train.freeze_epochs:
            if s.name != "onecycle":
                raise ValueError(f"train.freeze_epochs = {self.train.freeze_epochs} runs fastai's fine_tune, two "
                                 f"1cycles; schedule.name = {s.name!r}: expected onecycle (or freeze_epochs 0)")
            for key in ("freeze_pct_start", "unfreeze_pct_start"):
                if s.shape == "smith" and getattr(s, key) >= 0.5:
                    raise ValueError(f"schedule.{key} = {getattr(s, key)}: the smith shape spends pct_start going up "
                                     f"and as long coming down, so expected < 0.5 (or schedule.shape fastai)")
        return self


def _clip(text: str, limit: int = 100) -> str:
    """A value or source short enough for a one-line error: a 300-byte path is named, not repeated."""
    return text if len(text) <= limit else f"{text[:limit - 30]}...({len(text):,} characters)"
