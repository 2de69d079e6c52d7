"""What the in-graph tokenizers share: pair truncation and the padded model inputs."""

from __future__ import annotations

from kerasft._compat import tf


class UnsupportedTokenizer(ValueError):
    """The backbone's tokenizer has no in-graph equivalent here (e.g. byte-level BPE)."""


def longest_first(len_a: tf.Tensor, len_b: tf.Tensor, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
    """How many tokens of each text Hugging Face's `longest_first` truncation keeps.

    Mirrors `tokenizers`' Rust code: the shorter text stays whole if it fits in half
    the budget (the longer one gets the rest); otherwise the first text gets
    floor(budget / 2) and the second the remainder.
    """
    len_a, len_b = tf.cast(len_a, tf.int64), tf.cast(len_b, tf.int64)
    budget = tf.constant(budget, tf.int64)
    fits = len_a + len_b <= budget
    short = tf.minimum(len_a, len_b)
    short_keep = tf.where(short <= budget - short, short, budget // 2)
    long_keep = tf.where(short <= budget - short, budget - short, budget - budget // 2)
    a_longer = len_a > len_b
    keep_a = tf.where(fits, len_a, tf.where(a_longer, long_keep, short_keep))
    keep_b = tf.where(fits, len_b, tf.where(a_longer, short_keep, long_keep))
    return keep_a, keep_b


def truncate_pair(
    first: tf.RaggedTensor, second: tf.RaggedTensor, budget: int
) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """Both texts' tokens cut to `budget` in all, as Hugging Face's `longest_first` does."""
    keep_a, keep_b = longest_first(first.row_lengths(), second.row_lengths(), budget)
    first = tf.ragged.boolean_mask(first, tf.ragged.range(first.row_lengths()) < keep_a[:, None])
    second = tf.ragged.boolean_mask(second, tf.ragged.range(second.row_lengths()) < keep_b[:, None])
    return first, second


def model_inputs(
    ids: tf.RaggedTensor, types: tf.RaggedTensor, pad_id: int, input_names: tuple[str, ...]
) -> dict[str, tf.Tensor]:
    """Padded `[batch, length]` tensors of the inputs the model takes, from ragged ids and type ids.

    At least 2 wide, as every tokenized text is (its special tokens): an empty batch is then
    `[0, 2]`, which the model answers with empty outputs, where `[0, 0]` failed inside
    attention (a client sending no instances got an error, not an empty answer).
    """
    shape = [ids.nrows(), tf.maximum(ids.bounding_shape(axis=1), 2)]
    out = {
        "input_ids": ids.to_tensor(default_value=pad_id, shape=shape),
        "attention_mask": tf.ones_like(ids).to_tensor(default_value=0, shape=shape),
        "token_type_ids": types.to_tensor(default_value=0, shape=shape),
    }
    return {name: out[name] for name in input_names}
