"""Models: pretrained backbones and task heads, the BiGRU baseline, masked-LM models.

backbones    loading a Hugging Face backbone and its tokenizer (no torch), task heads,
             and `build_model`, which adds a soft prompt, LoRA or adapters (kerasft.peft)
rnn          the BiGRU baseline on a backbone's vocabulary
masked_lm    a backbone with its masked-LM head, trained by `fit` (kerasft.pretrain)
"""

from kerasft.models.backbones import (
    MODEL_INPUTS,
    Backbone,
    backbone_for,
    build_classifier,
    build_model,
    load_backbone,
    load_tokenizer,
    load_weights,
    model_directory,
    model_input_names,
    resolve_backbone,
    task_model,
    usable_positions,
)

__all__ = [
    "MODEL_INPUTS",
    "Backbone",
    "backbone_for",
    "build_classifier",
    "build_model",
    "load_backbone",
    "load_tokenizer",
    "load_weights",
    "model_directory",
    "model_input_names",
    "resolve_backbone",
    "task_model",
    "usable_positions",
]
