"""The typed config tree: YAML loading, `--set` overrides and validation.

Every key a user can write is a field below, with a description saying what it
is for; docs/config.md is generated from the same descriptions (`python -m
kerasft.config` prints the table, `--update-docs` rewrites docs/config.md).
Unknown keys, wrong types and values out of range raise `ConfigError` naming the
file and the dotted key.

    base         limits, the monitors per task, the strict section base
    sections     data:, model: (and its PEFT methods), pretrain:
    augment      data.augment: (EDA, masked-LM, back-translation, code-switching, templates)
    training     training:, export:, evaluation:, distill:, tuning:
    validation   the root `Config` and the checks that span sections
    loading      YAML, `--set` overrides, errors that name the file and key
    reference    docs/config.md from the field descriptions
"""

import yaml

from kerasft.config.augment import (
    AugmentConfig,
    BackTranslationConfig,
    CodeSwitchConfig,
    TemplatesConfig,
)
from kerasft.config.base import MAX_BATCH_SIZE, MONITORS, leaf_keys, section_of
from kerasft.config.loading import (
    add_override_argument,
    config_from_dict,
    dump_config,
    load_config,
    load_raw,
    parse_yaml,
    set_dotted,
)
from kerasft.config.reference import reference, update_reference
from kerasft.config.sections import (
    AdapterConfig,
    DataConfig,
    LoraConfig,
    MixConfig,
    ModelConfig,
    PretrainConfig,
    PretrainRun,
    PromptConfig,
    RnnConfig,
)
from kerasft.config.training import (
    SETFIT_DEFAULTS,
    ContrastiveConfig,
    DistillConfig,
    EvaluationConfig,
    ExportConfig,
    GenerationConfig,
    GroupOptimizerConfig,
    SearchDimension,
    TrainingConfig,
    TuningConfig,
)
from kerasft.config.validation import Config

__all__ = [
    "GenerationConfig",
    "CodeSwitchConfig",
    "MixConfig",
    "TemplatesConfig",
    "SETFIT_DEFAULTS",
    "ContrastiveConfig",
    "MAX_BATCH_SIZE",
    "MONITORS",
    "AdapterConfig",
    "AugmentConfig",
    "BackTranslationConfig",
    "Config",
    "DataConfig",
    "DistillConfig",
    "EvaluationConfig",
    "ExportConfig",
    "GroupOptimizerConfig",
    "LoraConfig",
    "ModelConfig",
    "PretrainConfig",
    "PretrainRun",
    "PromptConfig",
    "RnnConfig",
    "SearchDimension",
    "TrainingConfig",
    "TuningConfig",
    "add_override_argument",
    "config_from_dict",
    "dump_config",
    "leaf_keys",
    "load_config",
    "load_raw",
    "parse_yaml",
    "reference",
    "section_of",
    "set_dotted",
    "update_reference",
    "yaml",
]
