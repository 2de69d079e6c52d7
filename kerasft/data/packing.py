"""Packed training batches: a shuffled batch's texts laid end to end in a few rows.

Length-sorted batches (`data.bucketing`) pad almost nothing, but every batch holds texts of
one length; shuffled batches mix lengths and pad about two thirds of what they compute.
Packing keeps the shuffled batch and drops the padding: the batch's texts are laid end to
end in a few rows, each text keeping its own positions (0, 1, ...) and a segment number
(1, 2, ... within its row; 0 is padding), so the model (`training.packing.PackedModel`)
lets each token attend only to its own text and pools each text on its own.

One packed batch, for `B` texts in `R` rows of width `W` holding at most `K` texts each:

    features    every token feature (`input_ids`, `token_type_ids`, ...), `[R, W]`
    positions   each token's position in its own text, `[R, W]`
    segments    each token's text number in its row, 1..K, 0 for padding, `[R, W]`
    weights     1 (or the text's class weight) for each text, 0 for an empty slot, `[R, K]`
    target      each text's target, `[R, K]` (or `[R, K, C]` for label sets)

Rows are split across replicas like any batch dimension, and every replica gets whole texts.
"""

from __future__ import annotations

from kerasft._compat import tf

# Texts are laid into rows of about this many tokens (longer texts take a row each): wider
# rows pad less and attend over more positions (attention costs rows * width^2).
ROW_TOKENS = 64


def pack_batch(
    x: dict,
    y: tf.Tensor,
    padding: dict,
    *,
    min_rows: int = 1,
    class_weights: tf.Tensor | None = None,
) -> tuple[dict, tf.Tensor]:
    """One padded batch (`x` with a `length` per text, targets `y`) as a packed batch.

    Rows are about `ROW_TOKENS` long (or the longest text, if longer); texts are dealt
    longest first to the emptiest row, so the rows fill evenly; within a row they keep the
    batch's (shuffled) order.

    Args:
        padding: the pad value of each feature in `x`.
        min_rows: at least this many rows (one per replica), when the batch has that many texts.
        class_weights: a weight per class, for single-label targets. Defaults to none (1 each).
    """
    x = dict(x)
    lengths = tf.cast(x.pop("length"), tf.int32)
    texts = tf.shape(lengths)[0]
    total = tf.reduce_sum(lengths)
    row_tokens = tf.maximum(tf.reduce_max(lengths), ROW_TOKENS)
    wanted = tf.maximum((total + row_tokens - 1) // row_tokens, min_rows)
    rows = tf.minimum(wanted, texts)
    row = _deal(lengths, rows)
    offset, slot = _places(lengths, row, rows)
    width = tf.reduce_max(tf.math.unsorted_segment_sum(lengths, row, rows))
    slots = tf.reduce_max(slot) + 1
    # Every real token: (text, position in it) → (row, column) in the packed batch.
    tokens = tf.where(tf.sequence_mask(lengths, tf.shape(x["input_ids"])[1]))
    text, position = tf.cast(tokens[:, 0], tf.int32), tf.cast(tokens[:, 1], tf.int32)
    to = tf.stack([tf.gather(row, text), tf.gather(offset, text) + position], 1)

    def lay(values, fill, dtype=tf.int32):
        return tf.tensor_scatter_nd_update(tf.fill([rows, width], tf.cast(fill, dtype)), to, values)

    packed = {name: lay(tf.gather_nd(t, tokens), padding[name], t.dtype) for name, t in x.items()}
    packed["positions"] = lay(position, 0)
    packed["segments"] = lay(tf.gather(slot, text) + 1, 0)
    where = tf.stack([row, slot], 1)
    weights = tf.ones([texts], tf.float32)
    if class_weights is not None:
        weights = tf.gather(class_weights, tf.cast(y, tf.int32))
    packed["weights"] = tf.scatter_nd(where, weights, [rows, slots])
    target_shape = tf.concat([[rows, slots], tf.shape(y)[1:]], 0)
    return packed, tf.scatter_nd(where, y, target_shape)


def _deal(lengths: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """The row of each text: longest first, each to the row that holds the fewest tokens so far
    (rows then differ by little more than the shortest text, so little padding is left)."""
    texts = tf.shape(lengths)[0]
    longest_first = tf.argsort(lengths, direction="DESCENDING", stable=True)

    def place(i, fills, row):
        text = longest_first[i]
        emptiest = tf.argmin(fills, output_type=tf.int32)
        fills = tf.tensor_scatter_nd_add(fills, [[emptiest]], [lengths[text]])
        return i + 1, fills, row.write(text, emptiest)

    _, _, row = tf.while_loop(
        lambda i, *_: i < texts,
        place,
        (tf.constant(0), tf.zeros([rows], tf.int32), tf.TensorArray(tf.int32, size=texts)),
    )
    return row.stack()


def _places(lengths: tf.Tensor, row: tf.Tensor, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Each text's first column in its row and its slot (0, 1, ...) there, in batch order."""
    texts = tf.shape(lengths)[0]
    index = tf.range(texts)
    grouped = tf.argsort(row * texts + index)  # by row, then batch order
    in_row = tf.gather(row, grouped)
    starts = tf.cumsum(tf.gather(lengths, grouped), exclusive=True)
    row_start = tf.math.unsorted_segment_min(starts, in_row, rows)
    row_first = tf.math.unsorted_segment_min(index, in_row, rows)
    offset = starts - tf.gather(row_start, in_row)
    slot = index - tf.gather(row_first, in_row)
    back = grouped[:, None]
    return tf.scatter_nd(back, offset, [texts]), tf.scatter_nd(back, slot, [texts])
