"""tf.data pipelines: length-bucketed, dynamically padded training batches; deterministic evaluation batches."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kerasft._compat import tf
from kerasft.data.labels import IGNORE_INDEX
from kerasft.data.tokenize import Encoded


def bucket_boundaries(max_length: int) -> list[int]:
    """Sequence-length bucket edges, about 12% apart from 4 tokens up to `max_length`.

    Within a bucket lengths differ by at most ~12%, so padding stays near 10% of
    the tokens fed (SST-2: 0.98 real tokens against 0.33 with plain per-batch
    padding); each bucket costs at most one partial batch per epoch.
    """
    edges, edge = [], 4
    while edge < max_length:
        edges.append(edge)
        edge = max(edge + 1, int(edge * 1.125))
    return edges


def steps_per_epoch(
    encoded: Encoded,
    batch_size: int,
    bucketing: bool,
    max_length: int,
    drop_remainder: bool = False,
) -> int:
    """Exact number of batches one epoch of `train_dataset` yields."""

    def count(n: int) -> int:
        return n // batch_size if drop_remainder else math.ceil(n / batch_size)

    if not bucketing:
        return count(len(encoded))
    bucket = np.searchsorted(bucket_boundaries(max_length), encoded.lengths, side="right")
    return int(sum(count(c) for c in np.bincount(bucket) if c))


def train_dataset(
    encoded: Encoded,
    batch_size: int,
    pad_id: int,
    *,
    bucketing: bool,
    max_length: int,
    shuffle_buffer: int,
    seed: int,
    epoch: tf.Variable | None = None,
    pad_to_bucket: bool = False,
    drop_remainder: bool = False,
    skip: tf.Variable | None = None,
) -> tf.data.Dataset:
    """Shuffled training batches, padded per batch (or per length bucket) rather than to `max_length`.

    Args:
        epoch: an int64 variable holding the number of finished epochs. When given, each
            epoch's order depends only on `seed` and that number, so a run resumed from a
            backup sees the same batches as an uninterrupted one. Defaults to none
            (a fresh order every pass).
        pad_to_bucket: pad each batch to its bucket's upper edge, so only one width per
            bucket exists (for XLA, which compiles once per shape). Defaults to False.
        skip: an int64 variable: the number of batches to leave out at the start of the
            epoch, read when the epoch's iterator starts (a run resumed mid-epoch). The
            epoch then yields that many fewer batches than its declared cardinality,
            which is what Keras asks for when it resumes at a later step. Defaults to none.
    """
    base = _examples(encoded, np.arange(len(encoded)))
    buffer = max(1, min(shuffle_buffer, len(encoded)))
    if epoch is None:
        ds = base.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    else:

        @tf.autograph.experimental.do_not_convert
        def epoch_order(_):
            # The graph-level half of the shuffle's seed pair: the run's seed. TensorFlow
            # compares the pair with (0, 0) in Python, which fails on a tensor op seed
            # when the graph seed is 0, so seed 0 uses 1 here.
            tf.random.set_seed(seed or 1)
            # Read when the epoch's iterator starts, after a restore has set the counter.
            return base.shuffle(
                buffer, seed=tf.constant(seed, tf.int64) * 1000003 + epoch.read_value()
            )

        ds = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(epoch_order)
    padding = _padding_values(encoded, pad_id)
    if bucketing:
        boundaries = bucket_boundaries(max_length)
        if (
            pad_to_bucket
        ):  # batches are padded to an edge minus one: the last bucket needs an edge too
            boundaries = [*boundaries, max_length + 1]
        ds = ds.bucket_by_sequence_length(
            lambda x, y: tf.shape(x["input_ids"])[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            padding_values=padding,
            pad_to_bucket_boundary=pad_to_bucket,
            drop_remainder=drop_remainder,
        )
    else:
        ds = ds.padded_batch(batch_size, padding_values=padding, drop_remainder=drop_remainder)
    # A known cardinality makes Keras restart the iterator every epoch and show a
    # true progress bar; the assertion also fails loudly if the count were wrong.
    steps = steps_per_epoch(encoded, batch_size, bucketing, max_length, drop_remainder)
    if skip is not None:
        batches = ds

        @tf.autograph.experimental.do_not_convert
        def remaining(_):
            return batches.skip(skip.read_value())

        ds = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(remaining)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_order(encoded: Encoded) -> np.ndarray:
    """The order `eval_dataset` yields examples in: by length, stable (row i of the output is example order[i])."""
    return np.argsort(encoded.lengths, kind="stable")


def eval_dataset(encoded: Encoded, batch_size: int, pad_id: int) -> tf.data.Dataset:
    """Deterministic batches sorted by length (little padding); targets travel with each example."""
    ds = _examples(encoded, eval_order(encoded))
    return ds.padded_batch(batch_size, padding_values=_padding_values(encoded, pad_id)).prefetch(
        tf.data.AUTOTUNE
    )


def _examples(encoded: Encoded, order: np.ndarray) -> tf.data.Dataset:
    # Slicing one flat tensor per feature keeps the pipeline in-graph and avoids
    # materialising a padded matrix (or a Python generator) up front.
    starts = np.concatenate([[0], np.cumsum(encoded.lengths)[:-1]]).astype(np.int64)
    flat = {name: tf.constant(values) for name, values in encoded.features.items()}
    if encoded.token_targets:
        tags = tf.constant(encoded.targets)

        def example(start, length):
            return {n: v[start : start + length] for n, v in flat.items()}, tags[
                start : start + length
            ]

        ds = tf.data.Dataset.from_tensor_slices((starts[order], encoded.lengths[order]))
    else:

        def example(start, length, target):
            return {n: v[start : start + length] for n, v in flat.items()}, target

        ds = tf.data.Dataset.from_tensor_slices(
            (starts[order], encoded.lengths[order], encoded.targets[order])
        )
    return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _padding_values(encoded: Encoded, pad_id: int) -> tuple[dict[str, Any], Any]:
    values = {
        name: tf.constant(pad_id if name == "input_ids" else 0, tf.int32)
        for name in encoded.features
    }
    if encoded.token_targets:
        return values, tf.constant(IGNORE_INDEX, tf.int32)
    dtype = tf.as_dtype(encoded.targets.dtype)
    return values, tf.constant(0, dtype)
