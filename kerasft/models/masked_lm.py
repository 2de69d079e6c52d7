"""A backbone with its masked-language-model head, for `kerasft.pretrain` and contextual augmentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from kerasft._compat import keras, tf
from kerasft.errors import ModelError
from kerasft.tasks import IGNORE_INDEX

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

    from kerasft.models.backbones import _backbone_config, load_tokenizer, load_weights

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


IGNORE = IGNORE_INDEX  # label of the tokens the masked-token loss skips, as in every task


@dataclasses.dataclass(frozen=True)
class Masking:
    """How `mask_tokens` picks and corrupts tokens (BERT's recipe).

    Args:
        probability: share of words (or tokens) chosen per text.
        whole_word: choose whole words: every piece of a chosen word is masked.
        mask_id: the tokenizer's mask token.
        vocab_size: random replacements are drawn below this id.
        special_ids: ids never chosen ([CLS], [SEP], padding, ...).
    """

    probability: float
    whole_word: bool
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]


def mask_tokens(ids, attention, words, seed, masking: Masking):
    """(masked ids, labels) of a padded batch, decided by the stateless `seed` alone.

    Chosen tokens (whole words with `whole_word`) become the mask token 80% of the
    time, a random token 10% and stay 10%; labels are the original ids at chosen
    tokens and `IGNORE` elsewhere. Every text with an ordinary token gets at least
    one chosen. `words` holds each token's word index (-1 for special tokens).
    """
    ids, words = tf.cast(ids, tf.int32), tf.cast(words, tf.int32)
    length = tf.shape(ids)[1]
    special = tf.reduce_any(ids[..., None] == tf.constant(masking.special_ids, tf.int32), -1)
    ordinary = (tf.cast(attention, tf.bool) & ~special) & (words >= 0)
    positions = tf.broadcast_to(tf.range(length)[None, :], tf.shape(ids))
    unit = tf.where(ordinary, words if masking.whole_word else positions, 0)
    unit = tf.minimum(unit, length - 1)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    # One draw per word (a word's index is below the text's length), shared by its pieces.
    per_unit = tf.random.stateless_uniform(tf.shape(ids), seeds[0])
    chosen = ordinary & (tf.gather(per_unit, unit, batch_dims=1) < masking.probability)
    # A text with nothing chosen gets one random word.
    pick = tf.argmax(
        tf.where(ordinary, tf.random.stateless_uniform(tf.shape(ids), seeds[1]), -1.0),
        axis=1,
        output_type=tf.int32,
    )
    fallback = ordinary & (unit == tf.gather(unit, pick[:, None], batch_dims=1))
    empty = ~tf.reduce_any(chosen, axis=1, keepdims=True)
    chosen = tf.where(empty, fallback, chosen)
    action = tf.random.stateless_uniform(tf.shape(ids), seeds[2])
    replacements = tf.random.stateless_uniform(
        tf.shape(ids), seeds[3], minval=0, maxval=masking.vocab_size, dtype=tf.int32
    )
    masked = tf.where(chosen & (action < 0.8), masking.mask_id, ids)
    masked = tf.where(chosen & (action >= 0.8) & (action < 0.9), replacements, masked)
    return masked, tf.where(chosen, ids, IGNORE)


def masking_for(tokenizer: Any, probability: float, whole_word: bool) -> Masking:
    """The `Masking` of a Hugging Face tokenizer."""
    return Masking(
        float(probability),
        bool(whole_word),
        int(tokenizer.mask_token_id),
        int(len(tokenizer)),
        tuple(int(i) for i in tokenizer.all_special_ids),
    )


class MaskedLanguageModel(keras.Model):
    """A transformers masked-LM model trained and scored by Keras' `fit` and `evaluate`.

    Batches hold `input_ids`, `attention_mask` and `word_ids` (each token's word, -1
    for special tokens). Every training step masks its batch in-graph with a seed made
    of `seed` and the optimizer's step count, so a run restored from a backup masks as
    an uninterrupted one does; `evaluate` masks each batch with a seed made of `seed`
    and the batch's ids: the same masks every time. The loss is the mean cross-entropy
    over masked tokens; where the model is an encoder plus a head, the vocabulary
    projection runs only at masked positions (~15% of the tokens).

    Args:
        mlm: a `TFAutoModelForMaskedLM` model.
        masking: what to mask.
        seed: the masking seed.
    """

    def __init__(self, mlm: Any, masking: Masking, seed: int, **kwargs):
        super().__init__(name="masked_lm", **kwargs)
        self.mlm, self.masking, self.seed = mlm, masking, int(seed)
        self.encoder, self.head = _encoder_and_head(mlm)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.token_loss = keras.metrics.Sum(name="token_loss")
        self.token_count = keras.metrics.Sum(name="tokens")

    def call(self, inputs, training=False):
        return self.mlm(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            training=training,
        ).logits

    def masked_loss(self, ids, attention, labels, training):
        """(sum of the masked tokens' cross-entropy, their count)."""
        mask = tf.not_equal(labels, IGNORE)
        if self.head is None:
            logits = self.mlm(input_ids=ids, attention_mask=attention, training=training).logits
            targets, weights = tf.where(mask, labels, 0), tf.cast(mask, tf.float32)
        else:
            hidden = self.encoder(input_ids=ids, attention_mask=attention, training=training)[0]
            at = tf.where(mask)
            logits = self.head(tf.gather_nd(hidden, at)[tf.newaxis], training=training)[0]
            targets = tf.gather_nd(labels, at)
            weights = tf.ones_like(targets, tf.float32)
        per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=targets, logits=tf.cast(logits, tf.float32)
        )
        return tf.reduce_sum(per_token * weights), tf.reduce_sum(weights)

    def _masked(self, x, seed):
        return mask_tokens(x["input_ids"], x["attention_mask"], x["word_ids"], seed, self.masking)

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        step = tf.cast(self.optimizer.iterations, tf.int64)
        ids, labels = self._masked(x, tf.stack([tf.constant(self.seed, tf.int64), step]))
        with tf.GradientTape() as tape:
            loss_sum, count = self.masked_loss(ids, x["attention_mask"], labels, True)
            loss = loss_sum / tf.maximum(count, 1.0)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        ids, labels = self._masked(x, _content_seed(self.seed, x["input_ids"]))
        loss_sum, count = self.masked_loss(ids, x["attention_mask"], labels, False)
        self.token_loss.update_state(loss_sum)
        self.token_count.update_state(count)
        return {"loss": self.token_loss.result() / tf.maximum(self.token_count.result(), 1.0)}


def _content_seed(seed: int, ids) -> tf.Tensor:
    """A stateless seed from `seed` and a batch's ids (the same batch, the same seed)."""
    flat = tf.cast(tf.reshape(ids, [-1]), tf.int64)
    weights = tf.range(1, tf.size(flat, out_type=tf.int64) + 1) % 1_000_003
    return tf.stack([tf.constant(seed + 1, tf.int64), tf.reduce_sum(flat * weights) % (2**31)])


def _encoder_and_head(model: Any) -> tuple[Any, Any]:
    """The encoder and the masked-LM head of a two-part transformers model (BERT, RoBERTa, XLM-R,
    ALBERT: `[main layer, head]`), or `(model, None)` where the head is several layers."""
    layers = model.layers
    if len(layers) == 2 and hasattr(layers[0], "embeddings"):
        return layers[0], layers[1]
    return model, None
