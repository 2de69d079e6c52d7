"""A backbone with its masked-language-model head, for `kerasft.pretrain` and contextual augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasft.errors import ModelError

# Weight names of masked-LM heads (BERT/MiniLM `cls/predictions`, RoBERTa/XLM-R `lm_head`,
# ELECTRA's generator head, DistilBERT's `vocab_*`).
_HEAD_MARKERS = (
    "predictions",
    "lm_head",
    "mlm",
    "generator_lm",
    "vocab_transform",
    "vocab_projector",
    "vocab_layer_norm",
)


def load_masked_lm(
    directory: Path, key: str = "model.backbone", dropout: dict[str, float] | None = None
) -> tuple[Any, Any, bool]:
    """The tokenizer, the TF masked-LM model and whether its head was initialised afresh.

    A checkpoint without a masked-LM head (the embedded MiniLM ships only the
    encoder) gets a new head whose decoder is the input embedding matrix (tied, as
    in pretraining) and a fresh transform and bias.

    Args:
        dropout: `{"hidden": rate, "attention": rate}` overrides of the config. Defaults to none.

    Raises:
        ModelError: no masked-LM architecture for this model type, or encoder weights missing.
    """
    from transformers import TFAutoModelForMaskedLM

    from kerasft.models import _backbone_config, load_tokenizer, load_weights

    tokenizer = load_tokenizer(directory)
    config = _backbone_config(directory, dropout, None)
    try:
        model, info = load_weights(directory, config, TFAutoModelForMaskedLM)
    except ValueError as exc:  # no TF masked-LM class for this config
        raise ModelError(f"`{key}`: {directory}: no masked-LM model ({exc})") from None
    missing = list(info.get("missing_keys", []))
    head = [k for k in missing if any(m in k for m in _HEAD_MARKERS)]
    encoder = [k for k in missing if k not in head and "pooler" not in k]
    if encoder:
        raise ModelError(
            f"`{key}`: {directory} lacks {len(encoder)} encoder weights (e.g. {encoder[0]})."
        )
    return tokenizer, model, bool(head)
