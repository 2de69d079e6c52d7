"""What every config section shares: strict keys, limits on what a file may hold, the monitors per task."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict

# Per task: the monitor used when `training.monitor` is not set, and every key it may name.
MONITORS = {
    "classification": (
        "val_macro_f1",
        (
            "val_loss",
            "val_accuracy",
            "val_macro_f1",
            "val_f1",
            "val_weighted_f1",
            "val_roc_auc",
            "val_pr_auc",
            "val_ece",
            "val_brier",
        ),
    ),
    "multi_label": (
        "val_micro_f1",
        (
            "val_loss",
            "val_micro_f1",
            "val_macro_f1",
            "val_weighted_f1",
            "val_subset_accuracy",
            "val_roc_auc",
            "val_pr_auc",
            "val_ece",
            "val_brier",
        ),
    ),
    "regression": ("val_pearson", ("val_loss", "val_pearson", "val_spearman", "val_mse")),
    "token_classification": (
        "val_f1",
        ("val_f1", "val_precision", "val_recall", "val_token_accuracy"),
    ),
    # Scored on generated text (XLA `generate`) at every epoch end.
    "seq2seq": (
        "val_bleu",
        (
            "val_loss",
            "val_bleu",
            "val_chrf",
            "val_exact_match",
            "val_rouge1",
            "val_rouge2",
            "val_rougeLsum",
        ),
    ),
}


# Larger global batches than this do not fit any accelerator's memory with a transformer;
# a typo such as 1000000000 would otherwise abort TensorFlow with std::bad_alloc.
MAX_BATCH_SIZE = 65536
# What a config file may hold before it is refused: values once aliases are expanded (a
# "billion laughs" file grows a few lines into gigabytes), nesting, and the length of a value
# echoed back in an error.
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 50
MAX_ECHO = 120


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The config section class an annotation holds (`X` or `X | None`), else None."""
    if typing.get_origin(annotation) is dict:
        return None
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        section = section_of(field.annotation)
        if section is not None:
            keys += leaf_keys(section, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys
