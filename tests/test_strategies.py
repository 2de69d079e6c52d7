"""Freezing, gradual unfreezing, dropout overrides, label smoothing and focal loss, checked numerically."""

from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import keras, tf
from kerasft.config import config_from_dict
from kerasft.errors import ConfigError
from kerasft.models import build_classifier, load_backbone
from kerasft.peft.freezing import GradualUnfreezing, backbone_blocks, freeze
from kerasft.tasks import TASKS, SparseFocalCrossentropy
from kerasft.training.optimizers import make_optimizer

X = {
    "input_ids": tf.constant([[2, 5, 6, 3], [2, 8, 9, 3], [2, 10, 11, 3], [2, 12, 7, 3]]),
    "attention_mask": tf.ones((4, 4), tf.int32),
    "token_type_ids": tf.zeros((4, 4), tf.int32),
}
Y = tf.constant([0, 1, 0, 1])


def snapshot(layer):
    return [w.numpy().copy() for w in layer.weights]


def changed(layer, before):
    return any(not np.array_equal(w.numpy(), b) for w, b in zip(layer.weights, before, strict=True))


def head(model):
    return model.get_layer("head")


def compiled(tiny_bert_dir, **freezing):
    model = build_classifier(load_backbone(tiny_bert_dir), 2, dropout=0.0)
    optimizer = make_optimizer(1e-2, 0.0, 100, 0.0)
    if not freezing:
        optimizer.build(model.trainable_variables)
    else:
        freeze(model, **freezing)
    model.compile(optimizer=optimizer, loss=TASKS["classification"].make_loss(2, 0.0, None))
    return model


def test_blocks_are_found_bottom_up(tiny_bert_dir):
    model = build_classifier(load_backbone(tiny_bert_dir), 2)
    embeddings, layers = backbone_blocks(model)
    assert embeddings.name == "embeddings" and [layer.name for layer in layers] == [
        "layer_._0",
        "layer_._1",
    ]


def test_frozen_blocks_do_not_change(tiny_bert_dir):
    model = compiled(tiny_bert_dir, embeddings=True, bottom_layers=1)
    embeddings, layers = backbone_blocks(model)
    before = {id(b): snapshot(b) for b in (embeddings, *layers, head(model))}
    model.fit(X, Y, epochs=2, batch_size=4, verbose=0)
    assert not changed(embeddings, before[id(embeddings)])
    assert not changed(layers[0], before[id(layers[0])])
    assert changed(layers[1], before[id(layers[1])]) and changed(
        head(model), before[id(head(model))]
    )


def test_too_many_frozen_layers_is_a_config_error(tiny_bert_dir):
    model = build_classifier(load_backbone(tiny_bert_dir), 2)
    with pytest.raises(
        ConfigError,
        match=r"`training.freeze_layers: 5`: the backbone has 2 separate encoder layers",
    ):
        freeze(model, embeddings=False, bottom_layers=5)


class Record(keras.callbacks.Callback):
    """Which blocks changed during each epoch."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks, self.moved = blocks, []

    def on_epoch_begin(self, epoch, logs=None):
        self._before = [snapshot(b) for b in self.blocks]

    def on_epoch_end(self, epoch, logs=None):
        self.moved.append([changed(b, s) for b, s in zip(self.blocks, self._before, strict=True)])


@pytest.mark.slow
def test_gradual_unfreezing_releases_one_block_per_epoch_from_the_top(tiny_bert_dir):
    model = compiled(tiny_bert_dir)
    embeddings, (bottom, top) = backbone_blocks(model)
    # Record first: it sees each epoch's changes before the unfreezing callback acts on them.
    record = Record([head(model), top, bottom, embeddings])
    model.fit(
        X, Y, epochs=4, batch_size=2, verbose=0, callbacks=[record, GradualUnfreezing(every=1)]
    )
    assert record.moved == [
        [True, False, False, False],  # head alone
        [True, True, False, False],  # + top layer; the head keeps training
        [True, True, True, False],  # + bottom layer
        [True, True, True, True],  # + embeddings
    ]


def test_dropout_overrides_reach_the_backbone(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir, dropout={"hidden": 0.3, "attention": 0.2})
    assert backbone.model.config.hidden_dropout_prob == 0.3
    assert backbone.model.config.attention_probs_dropout_prob == 0.2


def test_label_smoothing_and_focal_loss_values():
    logits = tf.constant([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    y = tf.constant([0, 2])
    log_p = tf.nn.log_softmax(logits).numpy()
    plain = SparseFocalCrossentropy(3)(y, logits).numpy()
    assert plain == pytest.approx(-(log_p[0, 0] + log_p[1, 2]) / 2, rel=1e-6)
    assert plain == pytest.approx(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits).numpy()
    )
    smooth = SparseFocalCrossentropy(3, label_smoothing=0.3)(y, logits).numpy()
    q = np.full((2, 3), 0.1)
    q[0, 0] = q[1, 2] = 0.8
    assert smooth == pytest.approx(-(q * log_p).sum(axis=1).mean(), rel=1e-6)
    focal = SparseFocalCrossentropy(3, gamma=2.0)(y, logits).numpy()
    p = np.exp(log_p)
    assert focal == pytest.approx(
        -((1 - p[0, 0]) ** 2 * log_p[0, 0] + (1 - p[1, 2]) ** 2 * log_p[1, 2]) / 2, rel=1e-6
    )


@pytest.mark.slow
def test_strategy_options_train_end_to_end(tiny_config):
    tiny_config["training"].update(
        schedule="cosine",
        warmup_steps=1,
        clipnorm=1.0,
        label_smoothing=0.1,
        loss="focal",
        unfreeze_every_epochs=1,
    )
    tiny_config["model"].update(hidden_dropout=0.0, attention_dropout=0.0)
    tiny_config["export"]["enabled"] = False
    result = run_config(tiny_config)
    model, history = result.model, result.metrics["train"]["history"]
    assert result.metrics["train"]["epochs"] == 2 and np.isfinite(history["loss"]).all()
    schedule = model.optimizer.get_config()["learning_rate"]["config"]
    assert (schedule["decay"], schedule["warmup_steps"]) == ("cosine", 1)
    assert model.optimizer.clipnorm_value == 1.0
    assert isinstance(model.loss, SparseFocalCrossentropy)
    assert (model.loss.label_smoothing, model.loss.gamma) == (0.1, 2.0)
    # One block per finished epoch, from the top: both encoder layers, not yet the embeddings.
    embeddings, layers = backbone_blocks(model)
    assert [layer.trainable for layer in layers] == [True, True] and not embeddings.trainable
    backbone = next(layer for layer in model.layers if hasattr(layer, "config"))
    assert backbone.config.hidden_dropout_prob == backbone.config.attention_probs_dropout_prob == 0


def run_config(raw):
    from kerasft.training.runner import run

    return run(config_from_dict(raw), verbose=0)


def test_conflicting_options_are_rejected(tiny_config):
    tiny_config["training"].update(unfreeze_every_epochs=1, freeze_layers=1)
    with pytest.raises(ConfigError, match=r"drop `freeze_layers`"):
        config_from_dict(tiny_config)


@pytest.mark.slow
def test_bfloat16_run_has_finite_loss_float32_outputs_and_exports(tiny_config):
    from kerasft.training.hardware import cpu_flags, resolve_precision

    tiny_config["training"]["precision"] = "mixed_bfloat16"
    try:
        result = run_config(tiny_config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(result.metrics["train"]["history"]["loss"]))
    assert result.model(X, training=False).dtype == tf.float32
    out = tf.saved_model.load(str(result.export_dir)).signatures["predict_ids"](**X)
    assert out["probabilities"].dtype == tf.float32
    policy, why = resolve_precision("auto")
    if cpu_flags() & {"avx512_bf16", "amx_bf16"} and not tf.config.list_physical_devices("GPU"):
        assert policy == "mixed_bfloat16" and "native bfloat16" in why


def test_auto_precision_keeps_float32_for_a_small_set_on_a_bf16_cpu(bf16_cpu, monkeypatch):
    hardware = bf16_cpu
    below = hardware.FLOAT32_BELOW
    assert hardware.resolve_precision("auto")[0] == "mixed_bfloat16"  # size unknown
    assert hardware.resolve_precision("auto", below)[0] == "mixed_bfloat16"
    policy, why = hardware.resolve_precision("auto", below - 1)
    assert policy == "float32" and f"{below - 1:,} training examples" in why
    assert "640 training pairs" in hardware.resolve_precision("auto", 640, pairs=True)[1]
    assert hardware.resolve_precision("mixed_bfloat16", 10)[0] == "mixed_bfloat16"  # as set
    monkeypatch.setenv(hardware.AUTO_PRECISION_ENV, "mixed_bfloat16")  # `make test-bf16`
    assert hardware.resolve_precision("auto", 10)[0] == "mixed_bfloat16"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    monkeypatch.delenv(hardware.AUTO_PRECISION_ENV)
    assert hardware.resolve_precision("auto", 10**6)[0] == "float32"  # no native bfloat16


@pytest.mark.slow
def test_a_small_run_on_a_bf16_cpu_trains_in_float32_and_says_why(tiny_config, bf16_cpu, capsys):
    tiny_config["training"].update(precision="auto", epochs=1)
    tiny_config["export"]["enabled"] = False
    result = run_config(tiny_config)
    assert result.model.dtype_policy.name == "float32"
    examples = result.metrics["train"]["examples"]
    assert (
        f"precision: float32 (CPU with native bfloat16 (avx512_bf16), but {examples:,} training "
        "examples: under 2,000 mixed_bfloat16 saves little time" in capsys.readouterr().out
    )


@pytest.mark.slow
def test_group_optimizers_train_and_their_state_round_trips_a_checkpoint(tiny_config):
    tiny_config["training"]["group_optimizers"] = {
        "head": {"learning_rate": 1e-2},
        "embeddings": {"optimizer": "sgd", "learning_rate": 1e-3, "momentum": 0.9},
    }
    tiny_config["export"]["enabled"] = False
    result = run_config(tiny_config)
    optimizer = result.model.optimizer
    assert set(optimizer.optimizers) == {"default", "head", "embeddings"}
    checkpoint = tf.train.Checkpoint(optimizer=optimizer)
    names = [
        n for n, _ in tf.train.list_variables(checkpoint.save(str(result.run_dir / "opt" / "ckpt")))
    ]
    assert any("optimizers/head" in n for n in names) and any(
        "optimizers/embeddings" in n for n in names
    )
    # Each group's optimizer stepped and holds state, and a checkpoint restores it exactly.
    slots = {
        g: [v for v in o.variables if v.dtype.is_floating] for g, o in optimizer.optimizers.items()
    }
    for group in ("head", "embeddings"):
        assert int(optimizer.optimizers[group].iterations) > 0
        assert any(np.abs(v.numpy()).sum() > 0 for v in slots[group]), group
    saved = {g: [v.numpy() for v in vs] for g, vs in slots.items()}
    path = checkpoint.save(str(result.run_dir / "opt" / "again"))
    for variables in slots.values():
        for v in variables:
            v.assign(tf.zeros_like(v))
    checkpoint.restore(path).assert_existing_objects_matched()
    for group, variables in slots.items():
        for v, value in zip(variables, saved[group], strict=True):
            np.testing.assert_array_equal(v.numpy(), value)


def test_gradual_unfreezing_by_steps(tiny_bert_dir):
    model = compiled(tiny_bert_dir)
    embeddings, (bottom, top) = backbone_blocks(model)
    record = Record([head(model), top, bottom, embeddings])
    # 2 steps per epoch; one block more every 2 steps: the same schedule as one per epoch.
    model.fit(
        X,
        Y,
        epochs=3,
        batch_size=2,
        verbose=0,
        callbacks=[record, GradualUnfreezing(2, unit="step")],
    )
    assert record.moved == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
    ]


@pytest.mark.slow
def test_an_xla_run_compiles_its_steps_and_trains(tiny_config):
    """Padding to the XLA widths is test_fixed_widths_bound_the_batch_shapes' claim."""
    tiny_config["training"]["jit_compile"] = True
    tiny_config["export"]["enabled"] = False
    result = run_config(tiny_config)
    assert result.model._jit_compile
    assert all(np.isfinite(result.metrics["train"]["history"]["loss"]))
    from kerasft.training.hardware import resolve_jit

    assert resolve_jit("auto") == bool(tf.config.list_physical_devices("GPU"))


def test_fixed_widths_bound_the_batch_shapes(tiny_bert_dir):
    from kerasft.data import Split, encode, train_dataset, xla_widths
    from kerasft.models import load_tokenizer

    texts = [
        "good",
        "good movie",
        "the plot was very boring",
        "the movie was not very fun at all , very bad",
    ] * 4
    encoded = encode(load_tokenizer(tiny_bert_dir), Split(texts, np.zeros(16, np.int32), "mem"), 32)
    ds = train_dataset(encoded, 4, 0, bucketing=True, max_length=32, seed=0, fixed_widths=True)
    widths = set(xla_widths(32))
    seen = {int(x["input_ids"].shape[1]) for x, _ in ds}
    assert seen <= widths and len(seen) > 1


def test_epoch_unfreezing_adds_no_per_step_hook():
    # Keras converts the logs to Python after every step for callbacks with batch hooks.
    assert not GradualUnfreezing(1)._implements_train_batch_hooks()
    assert GradualUnfreezing(1, unit="step")._implements_train_batch_hooks()
