"""The config: `onecycle config --config cifar --set train.seed=1`.

Four rooms, in import order: `schema` (the keys, their types, ranges and defaults), `reads` (which
keys a run reads), `text` (a config as YAML text, read strictly and written back) and `resolve`
(defaults < YAML < environment < flags, validated, each key with its source). The names below are
the ones the rest of onecycle imports.
"""

from ..presets import shipped as shipped_configs  # the name config.py gave the presets before this package
from .reads import APPLIES, COMMANDS, flatten, unread
from .resolve import ENV_ALIASES, Resolved, env_overrides, locate_config, parse_set, resolve
from .schema import (
                     BUILTIN_MODELS,
                     FLOAT32_SAFE,
                     MODEL_NAMES_HELP,
                     RESNET_NAMES,
                     SEED_MAX,
                     SHAPES,
                     Config,
                     DataConfig,
                     FindConfig,
                     ModelConfig,
                     OptimConfig,
                     RunConfig,
                     ScheduleConfig,
                     Section,
                     TrainConfig,
)
from .text import NULLABLE_PATH_KEYS, PATH_KEYS, parse_scalar, read_yaml, to_yaml

__all__ = ["APPLIES", "BUILTIN_MODELS", "COMMANDS", "ENV_ALIASES", "FLOAT32_SAFE", "MODEL_NAMES_HELP",
           "NULLABLE_PATH_KEYS", "PATH_KEYS", "RESNET_NAMES", "SEED_MAX", "SHAPES", "Config", "DataConfig",
           "FindConfig", "ModelConfig", "OptimConfig", "Resolved", "RunConfig", "ScheduleConfig", "Section",
           "TrainConfig", "env_overrides", "flatten", "locate_config", "parse_scalar", "parse_set", "read_yaml",
           "resolve", "shipped_configs", "to_yaml", "unread"]
