"""bfloat16's dropout: masks drawn in float32 (kerasft.models.precision)."""

from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import keras, tf
from kerasft.models.precision import float32_dropout_masks


@pytest.fixture
def policy():
    """Sets a global policy for the test (`policy(name)`), the one before restored after it."""
    before = keras.mixed_precision.global_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(before)


def test_bfloat16_dropout_draws_the_masks_float32_draws(policy):
    x = tf.random.stateless_normal((64, 256), seed=[1, 2])
    policy("float32")
    wide = keras.layers.Dropout(0.1)
    policy("mixed_bfloat16")
    narrow, untouched = keras.layers.Dropout(0.1), keras.layers.Dropout(0.1)
    holder = tf.Module()
    holder.narrow, holder.wide = narrow, wide
    assert float32_dropout_masks(holder) == 1  # the bfloat16 layer only
    assert float32_dropout_masks(holder) == 0  # changed already

    low = tf.cast(x, tf.bfloat16)
    tf.random.set_seed(7)
    expected = wide(x, training=True)
    tf.random.set_seed(7)
    dropped = narrow(low, training=True)
    assert dropped.dtype == tf.bfloat16
    kept = expected.numpy() != 0
    np.testing.assert_array_equal(dropped.numpy() != 0, kept)  # float32's mask, seed for seed
    assert 0.89 < kept.mean() < 0.91
    # Each kept activation scaled by 1/0.9 in float32, then rounded once.
    scaled = tf.cast(tf.cast(low, tf.float32) * (1 / 0.9) * kept, tf.bfloat16)
    np.testing.assert_array_equal(dropped.numpy(), scaled.numpy())
    np.testing.assert_array_equal(narrow(low, training=False).numpy(), low.numpy())

    # What it mends: Keras' own bfloat16 dropout keeps fewer and scales by a rounded 1/0.9.
    ones = tf.ones((1000, 1000), tf.bfloat16)
    own = tf.cast(untouched(ones, training=True), tf.float32).numpy()
    assert own.max() == 1.109375 and own.mean() < 0.998
    assert abs(tf.cast(narrow(ones, training=True), tf.float32).numpy().mean() - 0.9984) < 0.002


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "float32"])
def test_every_dropout_of_a_bfloat16_task_model_draws_float32_masks(
    policy, precision, tiny_bert_dir
):
    from kerasft.config import ModelConfig
    from kerasft.models import build_model, load_backbone
    from kerasft.tasks import TASKS

    policy(precision)
    model = build_model(ModelConfig(), TASKS["classification"], load_backbone(tiny_bert_dir), 3)
    dropouts = [m for m in model.submodules if isinstance(m, keras.layers.Dropout)]
    assert len(dropouts) >= 2 * 3 + 2  # three per layer, the embeddings' and the head's
    changed = [getattr(m, "_float32_masks", False) for m in dropouts]
    assert all(changed) if precision == "mixed_bfloat16" else not any(changed)
    ids = {"input_ids": tf.constant([[2, 5, 6, 3]]), "attention_mask": tf.ones((1, 4), tf.int32)}
    ids["token_type_ids"] = tf.zeros((1, 4), tf.int32)
    np.testing.assert_array_equal(model(ids).numpy(), model(ids).numpy())  # inference: no dropout
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(ids, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert sum(g is not None for g in grads) > len(grads) // 2
