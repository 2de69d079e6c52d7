from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.config import config_from_dict
from kerasft.errors import ConfigError
from kerasft.models import build_classifier, load_backbone, resolve_backbone
from kerasft.peft.lora import LoRADense, apply_lora, merge_lora

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision

X = {
    "input_ids": tf.constant([[2, 5, 6, 3, 0], [2, 8, 9, 10, 3]]),
    "attention_mask": tf.constant([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
    "token_type_ids": tf.zeros((2, 5), tf.int32),
}


def lora_model(directory, rank=4):
    model = build_classifier(
        load_backbone(directory, dropout={"hidden": 0.0, "attention": 0.0}), 2, dropout=0.0
    )
    adapted = apply_lora(
        model, rank, 8.0, 0.0, ["query", "value"], {k: v[:1] for k, v in X.items()}
    )
    return model, adapted


def test_only_adapters_and_head_train(tiny_bert_dir):
    model, adapted = lora_model(tiny_bert_dir)
    assert adapted == 4  # 2 layers x (query, value)
    names = {v.name for v in model.trainable_variables}
    assert all("lora_" in n or n.startswith("head/") for n in names)
    assert len([n for n in names if "lora_" in n]) == 8


def test_adapters_start_as_the_identity_and_merge_exactly(tiny_bert_dir):
    plain = build_classifier(
        load_backbone(tiny_bert_dir, dropout={"hidden": 0.0, "attention": 0.0}), 2, dropout=0.0
    )
    model, _ = lora_model(tiny_bert_dir)
    model.get_layer("head").set_weights(plain.get_layer("head").get_weights())
    np.testing.assert_allclose(model(X).numpy(), plain(X).numpy(), atol=1e-6)  # B = 0 at the start
    for v in model.trainable_variables:  # a trained-looking update
        if "lora_b" in v.name:
            v.assign(tf.random.normal(v.shape, stddev=0.1, seed=1))
    adapted = model(X).numpy()
    assert not np.allclose(adapted, plain(X).numpy(), atol=1e-4)
    assert merge_lora(model, ["query", "value"]) == 4
    assert not any(isinstance(layer, LoRADense) for layer in model.submodules)
    np.testing.assert_allclose(model(X).numpy(), adapted, atol=1e-5)


def test_unknown_targets_are_a_config_error(tiny_bert_dir):
    model = build_classifier(load_backbone(tiny_bert_dir), 2)
    with pytest.raises(ConfigError, match=r"`model.lora.targets: \['qkv'\]` names no dense layer"):
        apply_lora(model, 4, 8.0, 0.0, ["qkv"], X)


def test_rank_8_on_minilm_trains_under_2_percent():
    model = build_classifier(load_backbone(resolve_backbone("minilm-l6")), 3)
    apply_lora(model, 8, 16.0, 0.05, ["query", "value"], {k: v[:1] for k, v in X.items()})
    trainable = sum(int(tf.size(v)) for v in model.trainable_variables)
    total = sum(int(tf.size(v)) for v in model.variables)
    assert trainable / total < 0.02, f"{trainable} of {total}"


@pytest.mark.slow
def test_lora_run_exports_a_merged_model_with_the_same_outputs(tiny_config):
    from kerasft.training.exports import rebuild
    from kerasft.training.runner import run

    tiny_config["model"]["lora"] = {"rank": 4, "dropout": 0.0}
    tiny_config["training"]["learning_rate"] = 1e-2
    result = run(config_from_dict(tiny_config), verbose=0)
    loaded = tf.saved_model.load(str(result.export_dir))
    variables = [
        name
        for name, _ in tf.train.list_variables(str(result.export_dir / "variables" / "variables"))
    ]
    assert variables and not any(
        "lora" in n for n in variables
    )  # merged: no adapter weights in the export
    got = loaded.signatures["predict_ids"](**X)["probabilities"].numpy()
    # Against the run's best weights with the adapters unmerged, in float32 as exported
    # (the run itself trained in mixed_bfloat16 on a CPU with native bf16).
    unmerged = rebuild(result.run_dir)[0]
    assert any("lora" in v.name for v in unmerged.variables)
    np.testing.assert_allclose(got, tf.nn.softmax(unmerged(X, training=False)).numpy(), atol=1e-5)
