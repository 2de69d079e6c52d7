"""Freezing parts of the backbone, and gradual unfreezing as a Keras callback.

Blocks are found by Hugging Face's TF layer names, shared by BERT, RoBERTa,
DistilBERT, ELECTRA, XLM-R and MiniLM: the `embeddings` layer and the encoder
layers `layer_._0` ... `layer_._{L-1}` (bottom to top).
"""

from __future__ import annotations

import re
from typing import Any

from kerasft._compat import keras
from kerasft.errors import ConfigError

_BLOCK = re.compile(r"layer_\._(\d+)")


def layers_in(module: Any) -> list[keras.layers.Layer]:
    """Every Keras layer inside `module`, at any depth (not `module` itself)."""
    return [m for m in module.submodules if isinstance(m, keras.layers.Layer)]


def backbone_blocks(
    model: keras.Model,
) -> tuple[keras.layers.Layer | None, list[keras.layers.Layer]]:
    """The embeddings layer and the encoder layers (bottom first) inside a kerasft model.

    Encoder-decoder models (`task: seq2seq`): the shared token embeddings and the encoder's
    layers, so `freeze_layers` set to the encoder's depth freezes the whole encoder.
    """
    seq2seq = getattr(model, "seq2seq", None)
    if seq2seq is not None:
        encoder = seq2seq.get_encoder()
        blocks = getattr(encoder, "block", None) or getattr(encoder, "layers", None) or []
        return seq2seq.get_input_embeddings(), list(blocks)
    embeddings, layers = None, {}
    for layer in layers_in(model):
        if layer.name == "embeddings" and embeddings is None:
            embeddings = layer
        match = _BLOCK.fullmatch(layer.name)
        if match:
            layers.setdefault(int(match.group(1)), layer)
    return embeddings, [layers[i] for i in sorted(layers)]


def freeze(model: keras.Model, embeddings: bool, bottom_layers: int) -> None:
    """Makes the embeddings and/or the bottom encoder layers non-trainable.

    Raises:
        ConfigError: more layers asked for than the backbone has.
    """
    emb, layers = backbone_blocks(model)
    if bottom_layers > len(layers):
        raise ConfigError(
            f"`training.freeze_layers: {bottom_layers}`: the backbone has {len(layers)} separate encoder layers."
        )
    if embeddings and emb is not None:
        emb.trainable = False
    for layer in layers[:bottom_layers]:
        layer.trainable = False


class GradualUnfreezing(keras.callbacks.Callback):
    """Starts with only the head trainable and unfreezes one more block, top down, every `every` epochs or steps.

    The order is encoder layer L-1, ..., 0, then the embeddings. The optimizer must
    already hold slots for every variable (build it while all are trainable), so
    blocks that were training keep their Adam state; the train function is retraced
    after each change, since Keras would otherwise keep using the old variable list.

    Args:
        every: epochs (or steps) between two unfreezings.
        epochs_done: a variable holding the epochs already trained (a resumed run
            starts with the blocks it had unfrozen). Defaults to none: from scratch.
        unit: `epoch` or `step`. Defaults to `epoch`.
    """

    def __init__(self, every: int, epochs_done=None, unit: str = "epoch"):
        super().__init__()
        if every < 1:
            raise ValueError(
                f"Invalid value for `every`. Received: every={every}. Expected an integer >= 1."
            )
        if unit not in ("epoch", "step"):
            raise ValueError(
                f"Invalid value for `unit`. Received: unit={unit!r}. Expected 'epoch' or 'step'."
            )
        self.every, self.epochs_done, self.unit = every, epochs_done, unit
        if unit == "epoch":
            # Keras syncs the logs to Python after every step for callbacks with a batch hook;
            # restoring the default hook keeps counting epochs off the train step's hot path.
            self.on_train_batch_end = super().on_train_batch_end

    def on_train_begin(self, logs: dict | None = None) -> None:
        emb, layers = backbone_blocks(self.model)
        self._order = [*reversed(layers), *([emb] if emb is not None else [])]
        done = int(self.epochs_done.numpy()) if self.epochs_done is not None else 0
        self._steps = done * (self.params.get("steps") or 0)
        elapsed = done if self.unit == "epoch" else self._steps
        self._unfrozen = min(elapsed // self.every, len(self._order))
        for i, block in enumerate(self._order):
            block.trainable = i < self._unfrozen
        self._retrace()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.unit == "epoch" and (epoch + 1) % self.every == 0:
            self._unfreeze_next()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps += 1
        if self.unit == "step" and self._steps % self.every == 0:
            self._unfreeze_next()

    def _unfreeze_next(self) -> None:
        if self._unfrozen >= len(self._order):
            return
        block = self._order[self._unfrozen]
        block.trainable = True
        self._unfrozen += 1
        self._retrace()
        print(
            f"gradual unfreezing: {block.name} now trains ({self._unfrozen} of {len(self._order)} blocks)"
        )

    def _retrace(self) -> None:
        self.model.train_function = self.model.make_train_function(force=True)
