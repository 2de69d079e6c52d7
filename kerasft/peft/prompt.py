"""Prompt tuning (Lester et al., 2021): trainable soft-prompt vectors before the input.

`SoftPrompt` looks the token ids up in the backbone's own word-embedding matrix,
puts `tokens` trainable vectors in front of them, and extends the attention mask
(and token types) to match; the backbone then runs on these `inputs_embeds`.
`DropPrompt` removes the prompt positions from the backbone's output, so the
pooling, the `cls` vector and per-token heads see the same positions as without a
prompt. The backbone is frozen: only the prompt and the task head train.

The prompt is a weight of the Keras model, so the exported SavedModel runs it in
its graph and the raw-text signature does not change.
"""

from __future__ import annotations

import numpy as np

from kerasft._compat import keras, tf
from kerasft.errors import ModelError


class SoftPrompt(keras.layers.Layer):
    """Token ids → `inputs_embeds` with `tokens` trainable vectors in front, and the extended mask.

    Args:
        embeddings: the backbone's input-embedding layer (its `weight` is the
            `[vocab, hidden]` word-embedding matrix).
        tokens: the number of prompt vectors.
        init: `vocab` starts them as the embeddings of random vocabulary tokens,
            `random` as random vectors with the embeddings' own spread.
        pad_id: the padding token, for models without an attention-mask input.
    """

    def __init__(self, embeddings, tokens: int, init: str = "vocab", pad_id: int = 0, **kwargs):
        super().__init__(name=kwargs.pop("name", "soft_prompt"), **kwargs)
        if getattr(embeddings, "weight", None) is None:
            raise ModelError(
                f"`model.prompt_tuning`: the backbone's embedding layer {embeddings.name} has no "
                "word-embedding matrix `weight`; use a BERT-family or DistilBERT backbone."
            )
        self.embeddings = embeddings
        self.tokens = int(tokens)
        self.init = init
        self.pad_id = int(pad_id)

    def build(self, input_shape):
        table = keras.backend.get_value(self.embeddings.weight)
        rng = np.random.default_rng(int(tf.random.uniform((), 0, 2**31 - 1, tf.int64)))
        if self.init == "vocab":
            # Lester et al. draw from frequent tokens; skip the first rows (special and unused
            # tokens in BERT-style vocabularies) and draw from the rest.
            low = min(1000, table.shape[0] // 10)
            start = table[rng.integers(low, table.shape[0], self.tokens)]
        else:
            start = rng.normal(0.0, float(table.std()), (self.tokens, table.shape[1]))
        self.prompt = self.add_weight(
            name="prompt",
            shape=(self.tokens, table.shape[1]),
            initializer=keras.initializers.Constant(start.astype("float32")),
        )
        super().build(input_shape)

    def call(self, inputs: dict) -> dict:
        ids = inputs["input_ids"]
        batch = tf.shape(ids)[0]
        words = tf.gather(self.embeddings.weight, ids)
        prompt = tf.tile(tf.cast(self.prompt, words.dtype)[None], [batch, 1, 1])
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = tf.cast(tf.not_equal(ids, self.pad_id), tf.int32)
        ones = tf.ones([batch, self.tokens], mask.dtype)
        out = {
            "inputs_embeds": tf.concat([prompt, words], axis=1),
            "attention_mask": tf.concat([ones, mask], axis=1),
        }
        if "token_type_ids" in inputs:
            types = inputs["token_type_ids"]
            out["token_type_ids"] = tf.concat([tf.zeros_like(ones, types.dtype), types], axis=1)
        return out

    def get_config(self) -> dict:
        return {**super().get_config(), "tokens": self.tokens, "init": self.init}


class DropPrompt(keras.layers.Layer):
    """Drops the first `tokens` positions of a `[batch, length, ...]` tensor."""

    def __init__(self, tokens: int, **kwargs):
        super().__init__(name=kwargs.pop("name", "drop_prompt"), **kwargs)
        self.tokens = int(tokens)

    def call(self, hidden: tf.Tensor) -> tf.Tensor:
        return hidden[:, self.tokens :]

    def get_config(self) -> dict:
        return {**super().get_config(), "tokens": self.tokens}


def check_prompt_length(usable: int | None, tokens: int, max_length: int) -> None:
    """Raises ModelError when the prompt and the longest input do not fit the position table.

    Args:
        usable: the positions the backbone takes (`kerasft.models.usable_positions`), or None
            for no limit.
        tokens: the prompt length.
        max_length: `data.max_length`.
    """
    if usable is not None and tokens + max_length > usable:
        raise ModelError(
            f"`model.prompt_tuning.tokens: {tokens}` plus `data.max_length: {max_length}` is "
            f"{tokens + max_length} positions; the backbone has {usable}. Lower one of them."
        )
