"""The BiGRU baseline (`model.backbone: bigru`): what a pretrained transformer is compared with.

Token embeddings → bidirectional GRU layers → one vector per token, trained from
scratch on a transformer's WordPiece vocabulary (`model.rnn.vocabulary`, the
embedded MiniLM by default), with its input embeddings as the starting point or
random ones. It takes the same token-id inputs and returns the same
`(sequence_output,)` as a Hugging Face backbone, so pooling, heads, metrics, export
and the raw-text serving signature (the vocabulary's in-graph tokenizer) are shared.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np

from kerasft._compat import keras, tf
from kerasft.config import RnnConfig
from kerasft.errors import ModelError


class BiGRUEncoder(keras.layers.Layer):
    """Embeddings and stacked bidirectional GRUs over the unpadded tokens.

    Args:
        table: the starting `[vocab, dim]` embeddings.
        units: GRU units per direction.
        num_layers: stacked bidirectional layers.
        dropout: dropout on the embeddings and between layers.
        pad_id: the padding token, for inputs without an attention mask.
    """

    def __init__(self, table: np.ndarray, units: int, num_layers: int, dropout: float, pad_id: int):
        super().__init__(name="bigru")
        self.embeddings = keras.layers.Embedding(
            table.shape[0],
            table.shape[1],
            embeddings_initializer=keras.initializers.Constant(table),
            name="embeddings",
        )
        self.drop = keras.layers.Dropout(dropout)
        self.grus = [
            keras.layers.Bidirectional(
                keras.layers.GRU(units, return_sequences=True), name=f"gru_{i}"
            )
            for i in range(num_layers)
        ]
        self.pad_id = int(pad_id)
        self.units, self.num_layers, self.dropout = int(units), int(num_layers), float(dropout)
        # What the task head reads from a Hugging Face backbone's config.
        self.config = types.SimpleNamespace(
            model_type="bigru", initializer_range=0.02, hidden_size=2 * units
        )

    def call(self, inputs: dict, training=None) -> tuple[tf.Tensor]:
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        mask = tf.not_equal(ids, self.pad_id) if mask is None else tf.cast(mask, tf.bool)
        hidden = self.drop(self.embeddings(ids), training=training)
        for i, gru in enumerate(self.grus):
            if i:
                hidden = self.drop(hidden, training=training)
            hidden = gru(hidden, mask=mask, training=training)
        return (hidden,)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_size": self.embeddings.input_dim,
            "embedding_dim": self.embeddings.output_dim,
            "units": self.units,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "pad_id": self.pad_id,
        }


def build_bigru(cfg: RnnConfig, directory: Path, tokenizer: Any, dropout: float) -> BiGRUEncoder:
    """The encoder for `cfg` on the vocabulary in `directory`.

    Raises:
        ModelError: `embeddings: pretrained` but the directory has no safetensors weights.
    """
    vocab = len(tokenizer)
    if cfg.embeddings == "pretrained":
        table = _word_embeddings(directory)[:vocab]
    else:
        size = _hidden_size(directory)
        table = np.random.default_rng(int(tf.random.uniform((), 0, 2**31 - 1, tf.int64))).normal(
            0.0, 0.05, (vocab, size)
        )
    encoder = BiGRUEncoder(
        table.astype("float32"), cfg.units, cfg.layers, dropout, tokenizer.pad_token_id or 0
    )
    print(
        f"backbone bigru: {cfg.layers} bidirectional GRU layer(s) of {cfg.units} units over "
        f"{table.shape[0]:,} x {table.shape[1]} {cfg.embeddings} embeddings from {directory}"
    )
    return encoder


def _word_embeddings(directory: Path) -> np.ndarray:
    """The `[vocab, hidden]` word-embedding matrix of the transformer in `directory`."""
    from safetensors.numpy import load_file

    files = sorted(directory.glob("*.safetensors"))
    for file in files:
        for key, value in load_file(str(file)).items():
            if key.endswith("word_embeddings.weight") or key.endswith("word_embeddings/weight:0"):
                return value
    raise ModelError(
        f"{directory}: no word embeddings in *.safetensors for `model.rnn.embeddings: pretrained`; "
        "use `embeddings: random` or a vocabulary directory with safetensors weights."
    )


def _hidden_size(directory: Path) -> int:
    import json

    return int(json.loads((directory / "config.json").read_text()).get("hidden_size", 256))
