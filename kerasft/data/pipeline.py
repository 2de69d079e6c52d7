"""tf.data pipelines: length-sorted, dynamically padded training batches; deterministic evaluation batches."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kerasft._compat import tf
from kerasft.data.labels import IGNORE_INDEX
from kerasft.data.packing import pack_batch
from kerasft.data.tokenize import Encoded


def xla_widths(max_length: int) -> list[int]:
    """Batch widths for XLA: about 12% apart from 4 tokens, the last one `max_length`.

    With `fixed_widths`, a batch is padded up to the next of these, so XLA compiles
    one shape per width at most, for at most ~12% extra padding.
    """
    widths, width = [], 4
    while width < max_length:
        widths.append(width)
        width = max(width + 1, int(width * 1.125))
    return [*widths, max_length]


def steps_per_epoch(encoded: Encoded, batch_size: int, drop_remainder: bool = False) -> int:
    """Exact number of batches one epoch of `train_dataset` yields."""
    n = len(encoded)
    return n // batch_size if drop_remainder else math.ceil(n / batch_size)


def train_dataset(
    encoded: Encoded,
    batch_size: int,
    pad_id: int,
    *,
    bucketing: bool,
    max_length: int,
    seed: int,
    window: int = 0,
    epoch: tf.Variable | None = None,
    fixed_widths: bool = False,
    drop_remainder: bool = False,
    skip: tf.Variable | None = None,
    packing: dict | None = None,
) -> tf.data.Dataset:
    """Shuffled training batches, each padded to its own longest example rather than to `max_length`.

    Every epoch is one seeded permutation of all the examples (no shuffle buffer). With
    `bucketing`, the permutation is cut into windows of `window` batches (0: the whole
    epoch), each window is sorted by length and cut into batches, and the batches are
    shuffled across the epoch. So a batch holds examples of similar length (little
    padding), the batches come in random order, and every batch but the epoch's last is
    full: unlike buckets filled from a stream, no run of small, same-length batches ends
    the epoch. Smaller windows mix lengths more and pad more.

    Args:
        window: batches per length-sorting window (0: the whole epoch). Defaults to 0.
        epoch: an int64 variable holding the finished epochs: each epoch's order then
            depends only on `seed` and it, so a run resumed from a backup sees the same
            batches as an uninterrupted one. Defaults to none (a fresh order every pass).
        fixed_widths: pad each batch up to the next of `xla_widths`, so only a bounded
            set of shapes exists (for XLA, which compiles once per shape). Defaults to False.
        skip: an int64 variable: the number of batches to leave out at the start of the
            epoch, read when the epoch's iterator starts (a run resumed mid-epoch). The
            epoch then yields that many fewer batches than its declared cardinality,
            which is what Keras asks for when it resumes at a later step. Defaults to none.
        packing: shuffled batches packed by `pack_batch(**packing)`. Defaults to none.
    """
    sorts = bucketing and packing is None
    order = _epoch_orders(encoded, batch_size, window if sorts else 1, seed, epoch)
    padding = _padding_values(encoded, pad_id)
    ds = _examples(encoded, order)
    if packing is not None:
        ds = _packed_batches(ds, padding, batch_size, drop_remainder, packing)
    else:
        ds = ds.padded_batch(batch_size, padding_values=padding, drop_remainder=drop_remainder)
    if fixed_widths:
        widths = tf.constant(xla_widths(max_length), tf.int32)
        ds = ds.map(
            lambda x, y: _pad_to_width(x, y, padding, widths, encoded.token_targets),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    # A known cardinality makes Keras restart the iterator every epoch and show a
    # true progress bar; the assertion also fails loudly if the count were wrong.
    steps = steps_per_epoch(encoded, batch_size, drop_remainder)
    if skip is not None:
        ds = _skipping(ds, skip)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(tf.data.AUTOTUNE)


def _packed_batches(
    ds: tf.data.Dataset, padding: tuple, batch_size: int, drop_remainder: bool, packing: dict
) -> tf.data.Dataset:
    """Examples batched with their lengths, each batch packed by `pack_batch(**packing)`."""
    ds = ds.map(lambda x, y: ({**x, "length": tf.shape(x["input_ids"])[0]}, y))
    padding = ({**padding[0], "length": tf.constant(0, tf.int32)}, padding[1])
    ds = ds.padded_batch(batch_size, padding_values=padding, drop_remainder=drop_remainder)
    return ds.map(
        lambda x, y: pack_batch(x, y, padding[0], **packing),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _epoch_orders(
    encoded: Encoded, batch_size: int, window: int, seed: int, epoch: tf.Variable | None
) -> tf.data.Dataset:
    """Example indices, one seeded, length-sorted-in-windows permutation per epoch (see
    `train_dataset`); without `epoch`, a counter of its own advances every pass."""
    lengths = tf.constant(encoded.lengths, tf.int64)
    return _seeded_epochs(seed, epoch, lambda key: _epoch_order(lengths, batch_size, window, key))


def _seeded_epochs(seed: int, epoch: tf.Variable | None, order) -> tf.data.Dataset:
    """The indices `order(key)` gives for each epoch, keyed by `(seed, epoch number)`.

    `epoch` holds the finished epochs and is read when the epoch's iterator starts (after a
    restore has set it); without it, a counter of its own advances every pass.
    """
    advance = epoch is None
    if advance:
        epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)

    @tf.autograph.experimental.do_not_convert
    def epoch_order(_):
        number = epoch.assign_add(1) if advance else epoch.read_value()
        return tf.data.Dataset.from_tensor_slices(
            order(tf.stack([tf.constant(seed, tf.int64), number]))
        )

    return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(epoch_order)


def _skipping(batches: tf.data.Dataset, skip: tf.Variable) -> tf.data.Dataset:
    """`batches` without the first `skip` ones, read each time the epoch's iterator starts."""

    @tf.autograph.experimental.do_not_convert
    def remaining(_):
        return batches.skip(skip.read_value())

    return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(remaining)


def _epoch_order(lengths: tf.Tensor, batch_size: int, window: int, key: tf.Tensor) -> tf.Tensor:
    """Example indices in batch order: windows sorted by length, cut into batches, batches shuffled."""
    n = tf.size(lengths, out_type=tf.int64)
    order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=key)
    if window != 1:
        group = tf.zeros_like(order) if window == 0 else tf.range(n) // (window * batch_size)
        # A stable sort keeps the random order among examples of one length.
        rank = group * (tf.reduce_max(lengths) + 1) + tf.gather(lengths, order)
        order = tf.gather(order, tf.argsort(rank, stable=True))
    full = n // batch_size * batch_size
    batches = tf.reshape(order[:full], [-1, batch_size])
    batches = tf.random.experimental.stateless_shuffle(batches, seed=key + [0, 1])
    # The one partial batch, if any, comes last, so batching the stream keeps the cuts.
    return tf.concat([tf.reshape(batches, [-1]), order[full:]], 0)


def _same_width(a: dict, b: dict, padding: dict) -> dict:
    """Both sides of a pair batch padded to the wider one, so one forward pass takes both."""
    width = tf.maximum(tf.shape(a["input_ids"])[1], tf.shape(b["input_ids"])[1])

    def pad(side):
        return {
            n: tf.pad(t, [[0, 0], [0, width - tf.shape(t)[1]]], constant_values=padding[n])
            for n, t in side.items()
        }

    return {"a": pad(a), "b": pad(b)}


def _pad_to_width(
    x: dict, y: tf.Tensor, padding: tuple, widths: tf.Tensor, token_targets: bool
) -> tuple:
    width = tf.shape(x["input_ids"])[1]
    target = tf.gather(widths, tf.searchsorted(widths, [width], side="left"))[0]

    def pad(t, value):  # along the length axis; targets may carry a trailing axis (distillation)
        extra = [[0, 0]] * (t.shape.rank - 2)
        return tf.pad(t, [[0, 0], [0, target - width], *extra], constant_values=value)

    x = {name: pad(t, padding[0][name]) if name != "labels" else t for name, t in x.items()}
    return x, pad(y, padding[1]) if token_targets else y


def eval_order(encoded: Encoded) -> np.ndarray:
    """The order `eval_dataset` yields examples in: by length, stable (row i of the output is example order[i])."""
    return np.argsort(encoded.lengths, kind="stable")


def eval_dataset(encoded: Encoded, batch_size: int, pad_id: int) -> tf.data.Dataset:
    """Deterministic batches sorted by length (little padding); targets travel with each example."""
    order = tf.data.Dataset.from_tensor_slices(eval_order(encoded).astype(np.int64))
    ds = _examples(encoded, order)
    return ds.padded_batch(batch_size, padding_values=_padding_values(encoded, pad_id)).prefetch(
        tf.data.AUTOTUNE
    )


def _examples(encoded: Encoded, indices: tf.data.Dataset) -> tf.data.Dataset:
    """One (features, target) pair per example index."""
    features, targets = _slicer(encoded), tf.constant(encoded.targets)
    starts = tf.constant(np.concatenate([[0], np.cumsum(encoded.lengths)[:-1]]), tf.int64)
    lengths = tf.constant(encoded.lengths, tf.int64)
    if (
        encoded.target_lengths is not None
    ):  # seq2seq: the model reads the labels too (teacher forcing)
        target_starts = np.concatenate([[0], np.cumsum(encoded.target_lengths)[:-1]])
        target_starts = tf.constant(target_starts, tf.int64)
        target_lengths = tf.constant(encoded.target_lengths, tf.int64)

        def sequence(i):
            target = targets[target_starts[i] : target_starts[i] + target_lengths[i]]
            return {**features(i), "labels": target}, target

        return indices.map(sequence, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def example(i):
        if encoded.token_targets:
            return features(i), targets[starts[i] : starts[i] + lengths[i]]
        return features(i), targets[i]

    return indices.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _slicer(encoded: Encoded):
    """A function from an example index to its features (a dict of 1-D token tensors)."""
    # Slicing one flat tensor per feature keeps the pipeline in-graph and avoids
    # materialising a padded matrix (or a Python generator) up front.
    starts = tf.constant(np.concatenate([[0], np.cumsum(encoded.lengths)[:-1]]), tf.int64)
    lengths = tf.constant(encoded.lengths, tf.int64)
    flat = {name: tf.constant(values) for name, values in encoded.features.items()}

    def features(i):
        start, length = starts[i], lengths[i]
        return {n: v[start : start + length] for n, v in flat.items()}

    return features


def pair_dataset(
    encoded: Encoded,
    pairs: np.ndarray,
    batch_size: int,
    pad_id: int,
    *,
    seed: int,
    epoch: tf.Variable | None = None,
    skip: tf.Variable | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of sentence pairs `({"a": features, "b": features}, same)` for contrastive training.

    Every epoch is one seeded permutation of `pairs` (`[i, j, same]` rows of
    `data.pairs.sentence_pairs`), both sides padded to the batch's longest text; `epoch`
    and `skip` make a resumed run see the same batches, as in `train_dataset`.
    """
    table = tf.constant(pairs[:, :2], tf.int64)
    same = tf.constant(pairs[:, 2], tf.float32)
    features = _slicer(encoded)
    everything = tf.range(len(pairs), dtype=tf.int64)
    orders = _seeded_epochs(
        seed, epoch, lambda key: tf.random.experimental.stateless_shuffle(everything, key)
    )

    def pair(p):
        return {"a": features(table[p, 0]), "b": features(table[p, 1])}, same[p]

    padding = _padding_values(encoded, pad_id)[0]
    ds = orders.map(pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).padded_batch(
        batch_size,
        padding_values=({"a": padding, "b": padding}, tf.constant(0.0)),
        drop_remainder=drop_remainder,
    )
    ds = ds.map(
        lambda x, y: (_same_width(x["a"], x["b"], padding), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    steps = len(pairs) // batch_size if drop_remainder else math.ceil(len(pairs) / batch_size)
    if skip is not None:
        ds = _skipping(ds, skip)
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def _padding_values(encoded: Encoded, pad_id: int) -> tuple[dict[str, Any], Any]:
    values = {
        name: tf.constant(pad_id if name == "input_ids" else 0, tf.int32)
        for name in encoded.features
    }
    dtype = tf.as_dtype(encoded.targets.dtype)  # float32 when targets carry a teacher's logits
    if encoded.target_lengths is not None:  # seq2seq: padded target positions carry no loss
        return {**values, "labels": tf.constant(IGNORE_INDEX, dtype)}, tf.constant(
            IGNORE_INDEX, dtype
        )
    if encoded.token_targets:
        return values, tf.constant(IGNORE_INDEX, dtype)
    return values, tf.constant(0, dtype)


def calibration_examples(encoded: Encoded, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Up to `n` seeded single examples as `[1, length]` int32 arrays by input name (no padding).

    For calibrating a quantised model's activation ranges on real inputs.
    """
    chosen = np.random.default_rng(seed).permutation(len(encoded))[:n]
    starts = np.concatenate([[0], np.cumsum(encoded.lengths)[:-1]])
    return [
        {
            name: values[starts[i] : starts[i] + encoded.lengths[i]][None, :].astype(np.int32)
            for name, values in encoded.features.items()
        }
        for i in sorted(chosen)
    ]
