"""Bottleneck adapters and BitFit: what trains, what they compute, and that runs with them export."""

from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import keras, tf
from kerasft.config import config_from_dict
from kerasft.errors import ConfigError
from kerasft.models import build_classifier, load_backbone
from kerasft.peft.adapters import AdapterDense, apply_adapters
from kerasft.peft.bitfit import apply_bitfit
from kerasft.training.runner import run
from tests.conftest import assert_trained_and_served, tiny_run_config

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision

X = {
    "input_ids": tf.constant([[2, 5, 6, 3, 0], [2, 8, 9, 10, 3]]),
    "attention_mask": tf.constant([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
    "token_type_ids": tf.zeros((2, 5), tf.int32),
}


def plain_model(directory):
    return build_classifier(
        load_backbone(directory, dropout={"hidden": 0.0, "attention": 0.0}), 2, dropout=0.0
    )


def test_houlsby_adapters_start_as_the_identity_and_only_they_and_layer_norms_train(tiny_bert_dir):
    plain = plain_model(tiny_bert_dir)
    model = plain_model(tiny_bert_dir)
    model.get_layer("head").set_weights(plain.get_layer("head").get_weights())
    assert (
        apply_adapters(model, 8, "houlsby", {k: v[:1] for k, v in X.items()}) == 4
    )  # 2 layers x 2
    np.testing.assert_allclose(model(X).numpy(), plain(X).numpy(), atol=1e-6)  # up = 0

    names = [v.name for v in model.trainable_variables]
    backbone = [n for n in names if not n.startswith("head/")]
    assert len([n for n in backbone if "adapter_" in n]) == 4 * 4
    assert all("adapter_" in n or "LayerNorm" in n for n in backbone)
    assert not any("embeddings" in n for n in backbone)
    # Each layer's two LayerNorms (gamma, beta) train.
    assert len([n for n in backbone if "LayerNorm" in n]) == 2 * 2 * 2

    for layer in model.submodules:  # a trained-looking adapter changes the output
        if isinstance(layer, AdapterDense):
            layer.down.assign(tf.random.normal(layer.down.shape, stddev=1.0, seed=1))
            layer.up.assign(tf.random.normal(layer.up.shape, stddev=1.0, seed=2))
    assert not np.allclose(model(X).numpy(), plain(X).numpy(), atol=1e-4)


def test_pfeiffer_puts_one_adapter_per_layer(tiny_bert_dir):
    model = plain_model(tiny_bert_dir)
    assert apply_adapters(model, 8, "pfeiffer", X) == 2
    wrapped = [m.name for m in model.submodules if isinstance(m, AdapterDense)]
    assert len(wrapped) == 2 and all("attention" not in m for m in wrapped)


def test_bitfit_trains_biases_only_and_leaves_kernels_alone(tiny_bert_dir):
    model = plain_model(tiny_bert_dir)
    count = apply_bitfit(model)
    backbone = [v for v in model.trainable_variables if not v.name.startswith("head/")]
    assert count == len(backbone) > 0
    assert all(v.name.rsplit("/", 1)[-1].startswith(("bias", "beta")) for v in backbone)
    kernels = {
        v.name: v.numpy() for v in model.weights if "kernel" in v.name and "head" not in v.name
    }
    biases = {v.name: v.numpy() for v in backbone}
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(X, np.array([0, 1]), epochs=2, verbose=0)
    for v in model.weights:
        if v.name in kernels:
            np.testing.assert_array_equal(v.numpy(), kernels[v.name])
    assert any(not np.array_equal(v.numpy(), biases[v.name]) for v in backbone)
    assert len(model.weights) == len(plain_model(tiny_bert_dir).weights)  # same checkpoint layout


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"model": {"lora": {"rank": 4}, "adapters": {"size": 8}}}, "choose one of `model.lora`"),
        ({"training": {"bitfit": True, "unfreeze_every_epochs": 1}}, "`training.bitfit` decides"),
        ({"model": {"adapters": {"size": 8, "placement": "sides"}}}, "placement"),
    ],
)
def test_conflicting_settings_are_refused(tiny_config, sections, message):
    raw = dict(tiny_config)
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adapters", "bitfit"])
def test_a_run_with_adapters_or_bitfit_trains_and_serves_raw_text(method, tmp_path, tiny_bert_dir):
    sections = {"training": {"epochs": 4, "batch_size": 8, "learning_rate": 1e-2}}
    if method == "adapters":
        sections["model"] = {"backbone": str(tiny_bert_dir), "adapters": {"size": 8}}
    else:
        sections["training"]["bitfit"] = True
    raw = tiny_run_config(tmp_path, tiny_bert_dir, **sections)
    result = run(config_from_dict(raw), verbose=0)
    # The export holds the trained adapters / biases: same outputs as the model on the same ids.
    assert_trained_and_served(result, {k: v[:2] for k, v in X.items()})
    # Optimizer state only for what trains: a frozen kernel gets no Adam moments.
    trainable = {v.name for v in result.model.trainable_variables}
    slots = [v for v in result.model.optimizer.variables() if v.name.startswith(("m/", "v/"))]
    assert len(slots) == 2 * len(trainable)
