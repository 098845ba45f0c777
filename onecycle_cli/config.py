"""The config schema and how a config is resolved: `onecycle config --config cifar --set train.seed=1`.

Precedence, lowest first: the defaults below < the YAML file < environment (`ONECYCLE_DATA`,
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
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class Section(BaseModel):
    # strict: "0.1" in YAML is a string, not a number; unknown keys are typos, not extensions
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)


class DataConfig(Section):
    dataset: Literal["cifar10", "mnist", "fashion_mnist", "mnist_sample", "synthetic"] = "cifar10"
    root: str = "data"             # where datasets live (torchvision's layouts); ONECYCLE_DATA or --data-dir
    download: bool = True          # fetch a missing dataset when the network allows
    train_size: Optional[PositiveInt] = None  # first N training images only (null: all); synthetic: how many to make
    valid_size: Optional[PositiveInt] = None  # first N test images only (null: all)
    flip: bool = True              # random horizontal mirror per image (wrong for digits)
    crop: bool = True              # random crop back to size from the padded image
    pad: Annotated[int, Field(ge=0)] = 4  # reflection padding before the crop (He et al.: 4 px)
    normalize: bool = True         # per-channel mean/std measured on the training images
    # synthetic only: a generated, learnable set for smoke tests
    image_size: Annotated[int, Field(ge=4, le=512)] = 32
    channels: Annotated[int, Field(ge=1, le=16)] = 3
    classes: Annotated[int, Field(ge=2, le=1000)] = 10


RESNET_NAMES = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


class ModelConfig(Section):
    name: Literal["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "simple_cnn"] = "resnet56"
    # simple_cnn only: channels[0] is the input, channels[-1] the number of classes (fastai's actns)
    channels: list[PositiveInt] = [1, 8, 16, 32, 64, 10]
    kernel_sizes: list[PositiveInt] = [5, 3, 3, 3, 3]  # one per conv (or a single value for all)
    strides: list[PositiveInt] = [2]                   # one per conv (or a single value for all)
    batchnorm: bool = True         # BatchNorm after each conv (the fastai book's net)
    final_relu: bool = False       # fastai v1 also put a ReLU on the last conv, before the pooling

    @model_validator(mode="after")
    def _lists_match(self) -> "ModelConfig":
        n = len(self.channels) - 1
        if n < 1:
            raise ValueError("model.channels needs at least two entries: input channels and classes")
        for key in ("kernel_sizes", "strides"):
            if len(getattr(self, key)) not in (1, n):
                raise ValueError(f"model.{key} has {len(getattr(self, key))} entries: expected 1 or {n} "
                                 f"(one per conv of model.channels)")
        return self


class OptimConfig(Section):
    name: Literal["sgd", "adamw"] = "sgd"
    momentum: Fraction = 0.9       # SGD momentum when the schedule does not cycle it
    nesterov: bool = False
    betas: Annotated[list[Fraction], Field(min_length=2, max_length=2)] = [0.9, 0.99]  # AdamW; beta1 is cycled by 1cycle
    eps: PositiveFloat = 1e-5      # fastai's Adam eps (torch's 1e-8 is touchier at high LR)
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    wd_bn_bias: bool = True        # false: spare BatchNorm weights and biases from weight decay (fastai's default)
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
    max_lr: PositiveFloat = 0.8    # the peak LR; constant/step/cosine start here
    pct_start: Optional[Annotated[float, Field(gt=0, lt=1)]] = None  # share of steps warming up
    div: Optional[Annotated[float, Field(ge=1)]] = None        # start at max_lr/div
    final_div: Optional[Annotated[float, Field(ge=1)]] = None  # end at max_lr/final_div
    anneal: Optional[Literal["cos", "linear"]] = None
    cycle_momentum: bool = True    # momentum (SGD) or beta1 (AdamW) moves against the LR
    max_momentum: Fraction = 0.95  # at the start and the end of the cycle
    base_momentum: Fraction = 0.85  # at the peak LR
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = [0.5, 0.75]  # step: shares of training
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1  # step: LR factor at each milestone

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
    epochs: PositiveInt = 95
    batch_size: PositiveInt = 512  # global batch, split across GPUs under torchrun
    seed: Annotated[int, Field(ge=0)] = 0
    device: str = "auto"           # auto: CUDA when present, else CPU; or cpu, cuda, cuda:1
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: Optional[bool] = None  # null: on for CUDA, where convs run faster in NHWC
    compile: bool = False          # torch.compile the model (pays a warm-up for faster steps)
    eval_batch_size: PositiveInt = 1024
    log_every: PositiveInt = 50    # steps between display updates and record flushes (the only host syncs)
    activation_stats: bool = False  # per-layer mean/std/near-zero and histograms every step

    @model_validator(mode="after")
    def _device_name(self) -> "TrainConfig":
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"train.device = {self.device!r}: expected auto, cpu, cuda or cuda:N")
        return self


class FindConfig(Section):
    start_lr: PositiveFloat = 1e-7
    end_lr: PositiveFloat = 10.0
    num_it: Annotated[int, Field(ge=10)] = 100  # mini-batches; the data is cycled when an epoch is shorter
    mode: Literal["exp", "linear"] = "exp"  # log-linear growth by default, as fastai and Smith
    diverge: Annotated[float, Field(gt=1)] = 4.0  # stop once the smoothed loss exceeds this times the best
    beta: Fraction = 0.98          # smoothing of the loss (exponential moving average, bias-corrected)
    momentum: Optional[Fraction] = None  # held during the sweep; null: optim.momentum (SGD) or betas[0] (AdamW)
    val_batches: Annotated[int, Field(ge=0)] = 0  # Smith's variant: score each step on N held-out batches
    # used by train --max-lr find; slide had the lowest mean regret of the four (benchmarks/suggest.py)
    suggest: Literal["valley", "steep", "minimum", "slide"] = "slide"

    @model_validator(mode="after")
    def _range(self) -> "FindConfig":
        if self.end_lr <= self.start_lr:
            raise ValueError(f"find.end_lr = {self.end_lr} is not above find.start_lr = {self.start_lr}: "
                             f"expected start_lr < end_lr")
        return self


class RunConfig(Section):
    root: str = "runs"             # where run directories go; ONECYCLE_RUNS or --runs-dir
    tensorboard: bool = False      # also write TensorBoard event files (pip install onecycle[tensorboard])


class Config(Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    find: FindConfig = FindConfig()
    run: RunConfig = RunConfig()


# ---------------------------------------------------------------------------------------------
# YAML: floats written as 1e-4 (PyYAML reads those as strings), duplicate keys refused


class _Loader(yaml.SafeLoader):
    pass


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_scalar(text: str) -> Any:
    """A `--set` or environment value, typed as YAML would type it (`1e-4` is a float)."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else None
    except yaml.YAMLError:
        return text  # left as a string: the schema says what was expected instead


def read_yaml(path: Path) -> dict:
    """The top-level mapping of a config file, or a ConfigError saying what is wrong with it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, expected a YAML file: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8): expected a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"config file {path} is binary: expected a YAML file")
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
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
    folder = resources.files("onecycle_cli.configs")
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml")}


def locate_config(config: str | None) -> tuple[str, Path]:
    """`--config` as a path or a shipped name; none means the CIFAR-10 / ResNet-56 preset."""
    if config is not None and not config.strip():  # an unset shell variable, not a request for the default
        raise ConfigError("--config '': expected a YAML file or a shipped config name (cifar, mnist, mnist_sample)")
    config = config or "cifar"
    path = Path(config)
    presets = shipped_configs()
    if path.suffix in (".yaml", ".yml") or os.sep in config or path.is_file():
        return path.stem, path  # read_yaml says what is wrong with a missing or unreadable path
    if config in presets:
        return config, presets[config]
    if path.is_dir():
        raise ConfigError(f"--config {config} is a directory, expected a YAML file or one of: {', '.join(sorted(presets))}")
    hint = difflib.get_close_matches(config, presets, n=1)
    raise ConfigError(f"--config {config}: no such file and no shipped config of that name"
                      f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; shipped: {', '.join(sorted(presets))}")


ENV_ALIASES = {"ONECYCLE_DATA": "data.root", "ONECYCLE_RUNS": "run.root", "ONECYCLE_DEVICE": "train.device"}


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


def resolve(config: str | None = None, sets: list[str] | None = None, flags: dict[str, Any] | None = None,
            environ: dict[str, str] | None = None, from_file: Path | None = None) -> Resolved:
    """Merge defaults < YAML < environment < flags and validate; `flags` maps keys to values or None.

    `from_file` reads an already-resolved config (a run's config.yaml) instead of `config`.
    """
    if from_file is not None:
        name, path = from_file.parent.name, from_file
    else:
        name, path = locate_config(config)
    tree = read_yaml(path)
    sources = {leaf: path.name for leaf in _leaves(tree)}
    environ = os.environ if environ is None else environ
    for key, text, source in env_overrides(dict(environ)):
        _put(tree, key, parse_scalar(text), source)
        sources[key] = source
    flagged: dict[str, str] = {}
    for item in sets or []:
        key, text = parse_set(item)
        _put(tree, key, parse_scalar(text), f"--set {item}")
        sources[key] = flagged[key] = f"--set {item}"
    for key, (flag, value) in (flags or {}).items():
        if value is None:
            continue
        if key in flagged:
            raise ConfigError(f"conflicting flags: {flag} {value} and {flagged[key]} both set {key}; give one")
        value = parse_scalar(value) if isinstance(value, str) else value
        _put(tree, key, value, flag)
        sources[key] = flagged[key] = f"{flag} {value}"
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_explain(e, sources)) from None
    return Resolved(config=cfg, name=name, path=str(path), sources=sources)


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
    where = f" (from {source})" if source else ""
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
        expected = f"a value {op} {bound:g}" if isinstance(bound, (int, float)) else f"a value {op} {bound}"
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
    return f"config error: {key} = {value!r}{where}: expected {expected}"


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, every key explicit, in schema order."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None, width=100)
