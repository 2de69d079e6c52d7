from __future__ import annotations

import json

import numpy as np
import pytest

from kerasft._compat import keras, tf
from kerasft.errors import ModelError
from kerasft.models import build_classifier, load_backbone, resolve_backbone
from tests.conftest import pytorch_state_dict, tiny_bert_config, write_tokenizer

INPUTS = {
    "input_ids": tf.constant([[2, 5, 11, 3, 0], [2, 8, 9, 10, 3]]),
    "attention_mask": tf.constant([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
    "token_type_ids": tf.zeros((2, 5), tf.int32),
}


def hidden(model):
    return model(INPUTS, training=False).last_hidden_state.numpy()


def test_embedded_backbone_resolves_to_packaged_model():
    directory = resolve_backbone("minilm-l6")
    assert (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelError, match=r"has no config.json"):
        resolve_backbone(str(tmp_path))


@pytest.mark.parametrize("spec", ["./not/here", "/abs/missing", "bad name!"])
def test_unknown_backbone_is_rejected(spec):
    with pytest.raises(ModelError, match=r"Unknown model .* in `model.backbone`"):
        resolve_backbone(spec)


def test_hub_name_offline_fails_fast_with_advice():
    with pytest.raises(
        ModelError,
        match=r"Cannot get `model.backbone: some-org/some-model`.*--local-dir DIR.*model.backbone: DIR",
    ):
        resolve_backbone("some-org/some-model")


def test_pytorch_safetensors_load_exactly(tiny_bert_dir):
    from safetensors.numpy import load_file

    backbone = load_backbone(tiny_bert_dir)
    state = load_file(str(tiny_bert_dir / "model.safetensors"))
    assert pytorch_state_dict(backbone.model).keys() == state.keys()
    for name, value in pytorch_state_dict(backbone.model).items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    assert backbone.input_names == ("input_ids", "token_type_ids", "attention_mask")
    assert backbone.loading["missing"] == []


def test_sharded_safetensors_and_h5_give_the_same_model(tiny_bert_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    reference = hidden(load_backbone(tiny_bert_dir).model)
    state = load_file(str(tiny_bert_dir / "model.safetensors"))
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    tiny_bert_config().save_pretrained(str(sharded))
    write_tokenizer(sharded)
    names = sorted(state)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: state[n] for n in part}, str(sharded / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    np.testing.assert_allclose(hidden(load_backbone(sharded).model), reference, atol=1e-6)

    h5_dir = tmp_path / "h5"
    load_backbone(tiny_bert_dir).model.save_pretrained(str(h5_dir))
    write_tokenizer(h5_dir)
    np.testing.assert_allclose(hidden(load_backbone(h5_dir).model), reference, atol=1e-6)


def test_missing_encoder_weight_is_an_error(tiny_bert_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    state = load_file(str(tiny_bert_dir / "model.safetensors"))
    del state["encoder.layer.1.output.dense.weight"]
    broken = tmp_path / "broken"
    broken.mkdir()
    tiny_bert_config().save_pretrained(str(broken))
    write_tokenizer(broken)
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        ModelError, match=r"lacks 1 encoder weights \(e.g. encoder.layer.1.output.dense.weight\)"
    ):
        load_backbone(broken)


def test_old_head_weights_are_reported_and_ignored(tiny_bert_dir, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    state = {f"bert.{k}": v for k, v in load_file(str(tiny_bert_dir / "model.safetensors")).items()}
    state["classifier.weight"] = np.zeros((2, 32), np.float32)
    with_head = tmp_path / "with-head"
    with_head.mkdir()
    tiny_bert_config().save_pretrained(str(with_head))
    write_tokenizer(with_head)
    save_file(state, str(with_head / "model.safetensors"), metadata={"format": "pt"})
    backbone = load_backbone(with_head)
    assert backbone.loading["unexpected"] == ["classifier.weight"]
    assert "1 unexpected weights" in capsys.readouterr().out
    np.testing.assert_allclose(
        hidden(backbone.model), hidden(load_backbone(tiny_bert_dir).model), atol=1e-6
    )


def test_no_weights_is_an_error(tmp_path):
    tiny_bert_config().save_pretrained(str(tmp_path))
    write_tokenizer(tmp_path)
    with pytest.raises(ModelError, match=r"no weights found"):
        load_backbone(tmp_path)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_classifier_outputs_float32_logits_and_ignores_padding(tiny_bert_dir, pooling):
    model = build_classifier(
        load_backbone(tiny_bert_dir), num_labels=3, pooling=pooling, dropout=0.0
    )
    logits = model(INPUTS, training=False)
    assert logits.shape == (2, 3) and logits.dtype == tf.float32
    # Appending more padding must not change the prediction.
    padded = {k: tf.pad(v, [[0, 0], [0, 3]]) for k, v in INPUTS.items()}
    np.testing.assert_allclose(model(padded, training=False).numpy(), logits.numpy(), atol=1e-5)
    pooler_vars = [v for v in model.trainable_variables if "pooler" in v.name]
    assert bool(pooler_vars) == (pooling == "pooler")


def test_a_bfloat16_backbone_gets_its_activations_in_float32():
    from transformers import TFBertModel

    from kerasft.models.precision import activations_in_float32

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = TFBertModel(tiny_bert_config())
        dense = keras.layers.Dense(3, activation="gelu")
    finally:
        keras.mixed_precision.set_global_policy(policy)
    ids = tf.constant([[2, 5, 6, 3]])
    before = model(ids).last_hidden_state
    holder = tf.Module()
    holder.model, holder.dense = model, dense
    assert activations_in_float32(holder) == 2  # one per layer, none of the Keras layer
    assert activations_in_float32(holder) == 0  # already wrapped
    act = model.bert.encoder.layer[0].intermediate.intermediate_act_fn
    x = tf.constant([[-1.3, 0.2, 2.7]], tf.bfloat16)
    assert act(x).dtype == tf.bfloat16
    expected = tf.cast(tf.nn.gelu(tf.cast(x, tf.float32)), tf.bfloat16)
    np.testing.assert_array_equal(act(x).numpy(), expected.numpy())
    after = model(ids).last_hidden_state
    assert after.dtype == before.dtype == tf.bfloat16
    np.testing.assert_allclose(
        tf.cast(after, tf.float32).numpy(), tf.cast(before, tf.float32).numpy(), atol=0.1
    )
    assert dense.activation is keras.activations.gelu  # a Keras layer's own is left alone
