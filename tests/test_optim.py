from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import keras, tf
from kerasft.training.optimizers import make_optimizer
from kerasft.training.schedules import WarmupDecay


def _two_sentences() -> dict:
    """A batch of two 4-token sentences for the tiny BERT."""
    return {
        "input_ids": tf.constant([[2, 5, 6, 3], [2, 8, 9, 3]]),
        "attention_mask": tf.ones((2, 4), tf.int32),
        "token_type_ids": tf.zeros((2, 4), tf.int32),
    }


def test_schedule_warms_up_then_decays_linearly_to_zero():
    schedule = WarmupDecay(1.0, total_steps=110, warmup_steps=10)
    values = np.array([float(schedule(s)) for s in range(111)])
    np.testing.assert_allclose(values[:10], np.arange(1, 11) / 10, atol=1e-6)
    assert values[10] == pytest.approx(1.0)
    np.testing.assert_allclose(values[10:], (110 - np.arange(10, 111)) / 100, atol=1e-6)
    assert values.max() <= 1.0


def test_schedule_round_trips_through_config():
    schedule = WarmupDecay(3e-5, total_steps=50, warmup_steps=5)
    clone = WarmupDecay.from_config(schedule.get_config())
    assert [float(clone(s)) for s in (0, 4, 5, 30)] == [float(schedule(s)) for s in (0, 4, 5, 30)]


def test_weight_decay_skips_biases_and_layer_norm():
    dense = keras.layers.Dense(3, bias_initializer="ones", name="dense")
    norm = keras.layers.LayerNormalization(name="LayerNorm")
    model = keras.Sequential([keras.Input((4,)), dense, norm])
    optimizer = make_optimizer(0.1, weight_decay=0.5, total_steps=10, warmup_ratio=0.0)
    before = {v.name: v.numpy().copy() for v in model.trainable_variables}
    # A zero gradient leaves Adam's update at zero: only decoupled decay can move a weight.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for v in model.trainable_variables:
        moved = not np.allclose(v.numpy(), before[v.name])
        assert moved == (v.name == "dense/kernel:0"), v.name
    np.testing.assert_allclose(
        dense.kernel.numpy(), before["dense/kernel:0"] * (1 - 0.1 * 0.5), rtol=1e-6
    )


def test_layer_depths_follow_the_backbone_structure(tiny_bert_dir):
    from kerasft.models import build_classifier, load_backbone
    from kerasft.training.layer_groups import layer_depths, layerwise_multipliers

    model = build_classifier(load_backbone(tiny_bert_dir), 2)
    depths = layer_depths(model)
    assert {d for n, d in depths.items() if "embeddings" in n} == {0}
    assert {d for n, d in depths.items() if "layer_._1/" in n} == {2}
    assert depths["head/kernel:0"] == 3
    multipliers = layerwise_multipliers(model, 0.5)
    assert multipliers["head/kernel:0"] == 1.0
    assert {m for n, m in multipliers.items() if "layer_._0/" in n} == {0.25}
    assert {m for n, m in multipliers.items() if "embeddings" in n} == {0.125}


def test_one_step_moves_each_layer_by_its_own_learning_rate(tiny_bert_dir):
    """Adam's first step moves every weight by lr * sign(gradient): here lr * the layer's multiplier."""
    from kerasft.models import build_classifier, load_backbone
    from kerasft.training.layer_groups import layerwise_multipliers
    from kerasft.training.optimizers import AdamW

    model = build_classifier(load_backbone(tiny_bert_dir), 2, dropout=0.0)
    multipliers = layerwise_multipliers(model, 0.5)
    optimizer = AdamW(
        lr_multipliers=multipliers, learning_rate=1e-3, weight_decay=0.0, epsilon=1e-12
    )
    x = _two_sentences()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=False)))
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients(zip(grads, variables, strict=True))
    checked = 0
    for v, g, old in zip(variables, grads, before, strict=True):
        g = tf.convert_to_tensor(g).numpy()
        moved = np.abs(v.numpy() - old)[np.abs(g) > 1e-6]
        if moved.size:
            # float32 weights near 1 resolve steps to ~1.2e-7, hence the absolute tolerance
            np.testing.assert_allclose(
                moved, 1e-3 * multipliers[v.name], rtol=1e-6, atol=2.5e-7, err_msg=v.name
            )
            checked += 1
    assert checked > 10


def test_layerwise_optimizer_round_trips_its_config():
    from kerasft.training.optimizers import AdamW

    opt = make_optimizer(1e-3, 0.01, 10, 0.1, {"a:0": 0.5}, accumulation_steps=2, clipnorm=1.0)
    clone = AdamW.from_config(opt.get_config())
    assert clone.lr_multipliers == {"a:0": 0.5}
    assert (clone.decay_rate, clone.accumulation_steps, clone.clipnorm_value) == (0.01, 2, 1.0)
    assert clone.no_decay == opt.no_decay and clone.epsilon == 1e-6


def test_cosine_and_constant_schedules():
    cosine = WarmupDecay(1.0, total_steps=110, warmup_steps=10, decay="cosine")
    assert float(cosine(10)) == pytest.approx(1.0)
    assert float(cosine(60)) == pytest.approx(0.5, abs=1e-6)  # halfway through the decay
    assert float(cosine(110)) == pytest.approx(0.0, abs=1e-6)
    constant = WarmupDecay(1.0, total_steps=110, warmup_steps=10, decay="constant")
    assert [float(constant(s)) for s in (4, 10, 109)] == pytest.approx([0.5, 1.0, 1.0])


def test_gradient_clipping_by_global_norm():
    # Plain SGD at rate 1 (no warmup), so the applied update is the clipped gradient itself.
    opt = make_optimizer(1.0, 0.0, 10, 0.0, clipnorm=1.0, optimizer="sgd")
    v, w = tf.Variable([0.0, 0.0]), tf.Variable([0.0])
    # Global norm over both: sqrt(30^2 + 40^2 + 0^2) = 50, scaled down to 1.
    opt.apply_gradients([(tf.constant([30.0, 40.0]), v), (tf.constant([0.0]), w)])
    np.testing.assert_allclose(v.numpy(), [-0.6, -0.8], rtol=1e-6)
    # A gradient already inside the norm passes unchanged (the rate is still 0.9 at step 1).
    before = v.numpy().copy()
    opt.apply_gradients([(tf.constant([0.3, 0.4]), v), (tf.constant([0.0]), w)])
    np.testing.assert_allclose(v.numpy(), before - 0.9 * np.array([0.3, 0.4]), rtol=1e-6)


def _one_step_of_32(tiny_bert_dir, make_optimizer_for):
    """The weights after one update on 32 examples: as one batch of 32, and as 4 accumulated
    micro-batches of 8. Plain SGD keeps the update linear in the gradient, so equal gradients
    give equal weights (Adam's first step, lr * sign(g), flips on gradients near 0)."""
    from kerasft.models import build_classifier, load_backbone

    rng = np.random.default_rng(0)
    x = {
        "input_ids": tf.constant(rng.integers(5, 20, (32, 6)), tf.int32),
        "attention_mask": tf.ones((32, 6), tf.int32),
        "token_type_ids": tf.zeros((32, 6), tf.int32),
    }
    y = tf.constant(rng.integers(0, 2, 32))
    no_dropout = {"hidden": 0.0, "attention": 0.0}
    start = None

    def trained(batch_size, accumulation):
        nonlocal start
        model = build_classifier(load_backbone(tiny_bert_dir, dropout=no_dropout), 2, dropout=0.0)
        start = model.get_weights() if start is None else start
        model.set_weights(start)
        optimizer = make_optimizer_for(model, accumulation)
        model.compile(
            optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        assert int(optimizer.iterations) == accumulation  # micro-batches, as in Keras
        return optimizer, model.get_weights()

    (_, big), (optimizer, accumulated) = trained(32, 1), trained(8, 4)
    moved = max(np.abs(b - s).max() for b, s in zip(big, start, strict=True))
    assert moved > 1e-4  # the step did something
    for b, a in zip(big, accumulated, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    return optimizer


def test_four_micro_batches_of_8_equal_one_batch_of_32(tiny_bert_dir):
    from kerasft.training.optimizers import SGD

    optimizer = _one_step_of_32(
        tiny_bert_dir, lambda model, steps: SGD(learning_rate=0.5, accumulation_steps=steps)
    )
    assert int(optimizer.updates_done) == 1  # one update either way


def test_per_group_optimizers_accumulate_like_one_big_batch(tiny_bert_dir):
    """`group_optimizers` with `gradient_accumulation_steps`: each group's optimizer applies the
    mean of 4 micro-batches once, as one batch 4 times larger would."""
    from kerasft.training.optimizers import grouped_optimizer

    def grouped(model, steps):
        default = make_optimizer(0.5, 0.0, 10, 0.0, optimizer="sgd", accumulation_steps=steps)
        groups = {"head": {"optimizer": "sgd", "learning_rate": 0.1}}
        optimizer = grouped_optimizer(model, groups, default, 10, 0.0, steps)
        optimizer.build(model.trainable_variables)
        return optimizer

    optimizer = _one_step_of_32(tiny_bert_dir, grouped)
    assert {g: int(o.updates_done) for g, o in optimizer.optimizers.items()} == {
        "default": 1,
        "head": 1,
    }


def test_adamw_with_accumulation_applies_once_per_four_micro_batches():
    opt = make_optimizer(0.1, 0.0, 10, 0.0, accumulation_steps=4)
    v = tf.Variable([1.0])
    for _ in range(3):
        opt.apply_gradients([(tf.constant([1.0]), v)])
    assert float(v[0]) == 1.0 and int(opt.updates_done) == 0
    opt.apply_gradients([(tf.constant([1.0]), v)])
    assert float(v[0]) < 1.0 and int(opt.updates_done) == 1 and int(opt.iterations) == 4


def test_plain_sgd_step_is_each_groups_rate_times_its_gradient(tiny_bert_dir):
    from kerasft.models import build_classifier, load_backbone
    from kerasft.training.layer_groups import layerwise_multipliers
    from kerasft.training.optimizers import SGD

    model = build_classifier(load_backbone(tiny_bert_dir), 2, dropout=0.0)
    multipliers = layerwise_multipliers(model, 0.5)
    optimizer = SGD(lr_multipliers=multipliers, learning_rate=0.1)
    x = _two_sentences()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=False)))
    variables = model.trainable_variables
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients(zip(grads, variables, strict=True))
    for v, g, old in zip(variables, grads, before, strict=True):
        expected = old - 0.1 * multipliers[v.name] * g.numpy()
        np.testing.assert_allclose(v.numpy(), expected, rtol=0, atol=1e-6, err_msg=v.name)
    factors = sorted({round(m, 6) for m in multipliers.values()})
    assert factors == [0.125, 0.25, 0.5, 1.0]  # embeddings, layer 0, layer 1, head


def test_group_learning_rates(tiny_bert_dir):
    from kerasft.errors import ConfigError
    from kerasft.models import build_classifier, load_backbone
    from kerasft.training.layer_groups import group_multipliers

    model = build_classifier(load_backbone(tiny_bert_dir), 2)
    multipliers = group_multipliers(model, {"embeddings": 1e-5, "head": 1e-3}, base=1e-4)
    assert all(m == pytest.approx(0.1) for n, m in multipliers.items() if "embeddings" in n)
    assert multipliers["head/kernel:0"] == pytest.approx(10.0)
    assert {m for n, m in multipliers.items() if "layer_._0/" in n} == {1.0}
    with pytest.raises(
        ConfigError, match=r"no group `layer_7`.*groups: embeddings, layer_0, layer_1, head"
    ):
        group_multipliers(model, {"layer_7": 1e-5}, base=1e-4)


def test_separate_optimizer_per_group(tiny_bert_dir):
    from kerasft.models import build_classifier, load_backbone
    from kerasft.training.optimizers import grouped_optimizer

    model = build_classifier(load_backbone(tiny_bert_dir), 2, dropout=0.0)
    default = make_optimizer(1e-3, 0.0, 10, 0.0)
    optimizer = grouped_optimizer(
        model,
        {"embeddings": {"optimizer": "sgd", "learning_rate": 0.1}, "head": {"learning_rate": 1e-2}},
        default,
        total_steps=10,
        warmup_ratio=0.0,
    )
    x = _two_sentences()
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, tf.constant([0, 1]), model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    before = {v.name: v.numpy().copy() for v in model.trainable_variables}
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    word = next(v for v in model.trainable_variables if "word_embeddings" in v.name)
    g = tf.convert_to_tensor(
        next(g for g, v in zip(grads, model.trainable_variables, strict=True) if v is word)
    )
    np.testing.assert_allclose(
        word.numpy(), before[word.name] - 0.1 * g.numpy(), atol=1e-6
    )  # plain SGD here
    head = model.get_layer("head").kernel
    moved = np.abs(head.numpy() - before[head.name])
    head_grad = np.abs(
        tf.convert_to_tensor(
            next(g for g, v in zip(grads, model.trainable_variables, strict=True) if v is head)
        ).numpy()
    )
    # Keras' Adam, first step: lr * |g| / (|g| + epsilon / sqrt(1 - beta_2)), with the head's
    # rate 1e-2 (not the default 1e-3) and kerasft's epsilon 1e-6.
    expected = 0.01 * head_grad / (head_grad + 1e-6 / np.sqrt(1 - 0.999))
    np.testing.assert_allclose(moved, expected, rtol=1e-4, atol=1e-8)
    assert (moved > 0.009).mean() > 0.5  # most gradients are far above epsilon: about lr each
    assert int(optimizer.iterations) == 1
    assert {g: int(o.iterations) for g, o in optimizer.optimizers.items()} == {
        "default": 1,
        "embeddings": 1,
        "head": 1,
    }


def test_lazy_adamw_updates_only_the_embedding_rows_in_the_batch():
    """Rows used every step follow Keras' AdamW; unused rows stay put (no momentum, no decay)."""
    from kerasft.training.optimizers import AdamW

    def train(optimizer, batches):
        table = tf.Variable(tf.reshape(tf.range(12, dtype=tf.float32), (6, 2)) / 10.0)
        for ids in batches:
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(table, ids) ** 2)
            grad = tape.gradient(loss, table)
            assert isinstance(grad, tf.IndexedSlices)
            optimizer.apply_gradients([(grad, table)])
        return table.numpy()

    batches = [tf.constant([1, 3, 3]), tf.constant([3, 4])]
    kwargs = {"learning_rate": 0.1, "weight_decay": 0.01, "epsilon": 1e-6}
    lazy = train(AdamW(**kwargs), batches)
    dense = train(keras.optimizers.AdamW(**kwargs), batches)
    start = np.arange(12, dtype=np.float32).reshape(6, 2) / 10.0
    np.testing.assert_allclose(lazy[3], dense[3], rtol=1e-5)  # in both batches: the same
    # First used at step 2: the same Adam update; dense AdamW also decayed it at step 1.
    decay = 0.1 * 0.01
    np.testing.assert_allclose(lazy[4] - dense[4], start[4] * (1 - decay) * decay, rtol=1e-3)
    assert not np.allclose(lazy[3], start[3])
    np.testing.assert_array_equal(lazy[[0, 2, 5]], start[[0, 2, 5]])  # never used: untouched
    assert not np.allclose(dense[[0, 2, 5]], start[[0, 2, 5]])  # Keras' AdamW decays them
    np.testing.assert_array_equal(lazy[1], train(AdamW(**kwargs), batches[:1])[1])  # not at step 2
    assert not np.allclose(dense[1], train(keras.optimizers.AdamW(**kwargs), batches[:1])[1])
    dense_again = train(AdamW(lazy_sparse=False, **kwargs), batches)
    np.testing.assert_allclose(dense_again, dense, rtol=1e-5)


def test_dense_adamw_step_is_keras_adamw():
    """The fused dense update (TensorFlow's Adam kernel) moves weights exactly as Keras' AdamW."""
    from kerasft.training.optimizers import AdamW

    def train(optimizer):
        weights = tf.Variable(tf.reshape(tf.range(12, dtype=tf.float32), (3, 4)) / 10.0 - 0.5)
        for scale in (1.0, -0.5, 2.0):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(weights * scale) ** 2)
            optimizer.apply_gradients([(tape.gradient(loss, weights), weights)])
        return weights.numpy()

    kwargs = {"learning_rate": 0.1, "weight_decay": 0.01, "epsilon": 1e-6}
    ours = train(AdamW(**kwargs))
    # Not to the bit: the kernel forms 1 - beta_2 in float32 (0.0009999871), Keras in Python.
    np.testing.assert_allclose(ours, train(keras.optimizers.AdamW(**kwargs)), rtol=0, atol=1e-5)
    without_decay = train(AdamW(learning_rate=0.1, epsilon=1e-6))
    assert not np.allclose(ours, without_decay)  # the decay is applied beside the kernel


def test_an_update_passes_over_each_variable_once_and_builds_its_scalars_once():
    # Keras' own weight decay (default 0, not None) once rewrote every variable each step for
    # nothing, and the rate and Adam's scalars were built again for every variable.
    optimizer = make_optimizer(1e-3, weight_decay=0.01, total_steps=10, warmup_ratio=0.0)
    kernels = [tf.Variable(tf.ones((3, 3)), name=f"kernel_{i}") for i in range(4)]
    biases = [tf.Variable(tf.ones((3,)), name=f"bias_{i}") for i in range(4)]
    variables = kernels + biases
    optimizer.build(variables)

    @tf.function
    def update():
        optimizer.apply_gradients([(tf.ones_like(v), v) for v in variables])

    graph = update.get_concrete_function().graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("ResourceApplyAdam") == 8
    assert types.count("AssignSubVariableOp") == 4  # the decay of the kernels, not the biases
    assert types.count("Pow") == 2  # β1ᵗ and β2ᵗ, for every variable together
    update()
    # decoupled decay, then Adam's first step (m̂/√v̂ = 1): 1 − lr·wd − lr (biases: no decay)
    np.testing.assert_allclose(kernels[0].numpy(), 1 - 1e-5 - 1e-3, atol=1e-6)
    np.testing.assert_allclose(biases[0].numpy(), 1 - 1e-3, atol=1e-6)
