from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import keras, tf
from kerasft.optim import WarmupLinearDecay, build_optimizer


def test_schedule_warms_up_then_decays_linearly_to_zero():
    schedule = WarmupLinearDecay(1.0, total_steps=110, warmup_steps=10)
    values = np.array([float(schedule(s)) for s in range(111)])
    np.testing.assert_allclose(values[:10], np.arange(1, 11) / 10, atol=1e-6)
    assert values[10] == pytest.approx(1.0)
    np.testing.assert_allclose(values[10:], (110 - np.arange(10, 111)) / 100, atol=1e-6)
    assert values.max() <= 1.0


def test_schedule_round_trips_through_config():
    schedule = WarmupLinearDecay(3e-5, total_steps=50, warmup_steps=5)
    clone = WarmupLinearDecay.from_config(schedule.get_config())
    assert [float(clone(s)) for s in (0, 4, 5, 30)] == [float(schedule(s)) for s in (0, 4, 5, 30)]


def test_weight_decay_skips_biases_and_layer_norm():
    dense = keras.layers.Dense(3, bias_initializer="ones", name="dense")
    norm = keras.layers.LayerNormalization(name="LayerNorm")
    model = keras.Sequential([keras.Input((4,)), dense, norm])
    optimizer = build_optimizer(0.1, weight_decay=0.5, total_steps=10, warmup_ratio=0.0)
    before = {v.name: v.numpy().copy() for v in model.trainable_variables}
    # A zero gradient leaves Adam's update at zero: only decoupled decay can move a weight.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for v in model.trainable_variables:
        moved = not np.allclose(v.numpy(), before[v.name])
        assert moved == (v.name == "dense/kernel:0"), v.name
    np.testing.assert_allclose(
        dense.kernel.numpy(), before["dense/kernel:0"] * (1 - 0.1 * 0.5), rtol=1e-6
    )
