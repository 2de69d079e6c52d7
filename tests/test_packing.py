"""`data.packing`: packed batches compute what padded ones do, without the padding."""

from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import keras, tf
from kerasft.data import packing
from kerasft.tasks import TASKS
from tests.conftest import read_json

PAD = {"input_ids": tf.constant(0), "attention_mask": tf.constant(0)}


def batch(rows: list[list[int]]) -> dict:
    width = max(map(len, rows))
    ids = tf.constant([r + [0] * (width - len(r)) for r in rows])
    return {
        "input_ids": ids,
        "attention_mask": tf.cast(ids > 0, tf.int32),
        "length": tf.constant([len(r) for r in rows]),
    }


def test_texts_are_laid_end_to_end_with_their_own_positions_and_segments(monkeypatch):
    monkeypatch.setattr(packing, "ROW_TOKENS", 8)
    x = batch([[5, 6, 7], [8, 9], [1, 2, 3, 4, 5], [4]])
    packed, target = packing.pack_batch(x, tf.constant([1, 0, 1, 0]), PAD)
    # 11 tokens in rows of about 8: two rows, the longest text dealt first.
    assert packed["input_ids"].numpy().tolist() == [[1, 2, 3, 4, 5, 4], [5, 6, 7, 8, 9, 0]]
    assert packed["positions"].numpy().tolist() == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 1, 0]]
    assert packed["segments"].numpy().tolist() == [[1, 1, 1, 1, 1, 2], [1, 1, 1, 2, 2, 0]]
    assert packed["attention_mask"].numpy().tolist()[1] == [1, 1, 1, 1, 1, 0]
    assert target.numpy().tolist() == [[1, 0], [1, 0]]
    assert packed["weights"].numpy().tolist() == [[1, 1], [1, 1]]


def test_one_row_per_replica_and_class_weights_travel_with_each_text(monkeypatch):
    monkeypatch.setattr(packing, "ROW_TOKENS", 8)
    x = batch([[5, 6, 7], [8, 9], [1, 2, 3, 4, 5], [4]])
    weights = tf.constant([2.0, 0.5])
    packed, target = packing.pack_batch(
        x, tf.constant([1, 0, 1, 0]), PAD, min_rows=3, class_weights=weights
    )
    assert packed["segments"].shape[0] == 3
    # Empty slots weigh 0; every text is in exactly one slot, with its class's weight.
    w, t = packed["weights"].numpy(), target.numpy()
    assert sorted(w[w > 0].tolist()) == [0.5, 0.5, 2.0, 2.0]
    assert np.all(np.where(t[w > 0] == 1, 0.5, 2.0) == w[w > 0])


def tiny_model(tiny_bert_dir, task: str, pooling: str, outputs: int = 2):
    from kerasft.models import load_backbone, load_tokenizer
    from kerasft.models.backbones import task_model
    from kerasft.training.packing import PackedModel

    no_dropout = {"hidden": 0.0, "attention": 0.0}  # training steps comparable to the bit
    backbone = load_backbone(tiny_bert_dir, load_tokenizer(tiny_bert_dir), no_dropout)
    model = task_model(backbone, TASKS[task], outputs, pooling, dropout=0.0)
    return PackedModel.around(model, backbone.model, pooling)


TEXTS = [[2, 5, 6, 7, 3], [2, 8, 3], [2, 9, 10, 11, 12, 5, 6, 3], [2, 4, 3], [2, 7, 7, 3]]


@pytest.mark.parametrize(
    ("task", "pooling", "outputs"),
    [
        ("classification", "mean", 3),
        ("classification", "cls", 2),
        ("classification", "pooler", 2),
        ("regression", "mean", 1),
        ("multi_label", "mean", 4),
    ],
)
def test_packed_outputs_equal_the_task_models_on_padded_texts(
    tiny_bert_dir, monkeypatch, task, pooling, outputs
):
    monkeypatch.setattr(packing, "ROW_TOKENS", 12)  # three rows of up to 12 tokens
    model = tiny_model(tiny_bert_dir, task, pooling, outputs)
    x = batch(TEXTS)
    x["token_type_ids"] = tf.zeros_like(x["input_ids"])
    pad = {**PAD, "token_type_ids": tf.constant(0)}
    packed, index = packing.pack_batch(x, tf.range(len(TEXTS)), pad)
    logits = model.packed_call(packed, training=False).numpy()
    filled = packed["weights"].numpy() > 0
    padded = {k: v for k, v in x.items() if k != "length"}
    expected = model(padded, training=False).numpy()
    np.testing.assert_allclose(logits[filled], expected[index.numpy()[filled]], atol=1e-5)


def test_a_packed_training_step_moves_the_weights_as_a_padded_one(tiny_bert_dir, monkeypatch):
    monkeypatch.setattr(packing, "ROW_TOKENS", 12)
    x = batch(TEXTS)
    x["token_type_ids"] = tf.zeros_like(x["input_ids"])
    labels = tf.constant([0, 1, 1, 0, 1])
    pad = {**PAD, "token_type_ids": tf.constant(0)}
    packed, target = packing.pack_batch(x, labels, pad)
    padded = {k: v for k, v in x.items() if k != "length"}
    trained = []
    for data in ((packed, target), (padded, labels)):
        keras.utils.set_random_seed(0)  # the same head for both
        model = tiny_model(tiny_bert_dir, "classification", "mean")
        if "segments" not in data[0]:  # the plain Keras step of the same task model
            model = keras.Model(model.inputs, model.outputs)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
        model.train_on_batch(*data)
        trained.append([w.numpy() for w in model.trainable_weights])
    for packed_weight, padded_weight in zip(*trained, strict=True):
        np.testing.assert_allclose(packed_weight, padded_weight, atol=2e-6)


def test_a_packed_run_trains_evaluates_and_exports(tiny_config):
    from kerasft.config import config_from_dict
    from kerasft.training.runner import run

    tiny_config["data"]["packing"] = True
    tiny_config["data"]["class_weights"] = "balanced"
    result = run(config_from_dict(tiny_config), verbose=0)
    metrics = read_json(result.run_dir / "metrics.json")
    history = metrics["train"]["history"]["loss"]
    assert len(history) == 2 and history[1] < history[0]
    assert metrics["packing"] == {"row_tokens": packing.ROW_TOKENS}  # the run says it packed
    loaded = tf.saved_model.load(str(result.export_dir))
    out = loaded.signatures["serving_default"](text=tf.constant(["good movie", "bad film"]))
    assert out["probabilities"].shape == (2, 2)


def test_auto_packs_where_the_run_can_and_true_elsewhere_is_an_error(tiny_config):
    from kerasft.config import config_from_dict
    from kerasft.errors import ConfigError
    from kerasft.training.packing import packing_for

    def packs(setting, model_type="bert", jit=False, **sections):
        raw = {**tiny_config, "data": {**tiny_config["data"], "packing": setting}}
        for section, values in sections.items():
            raw[section] = {**raw.get(section, {}), **values}
        cfg = config_from_dict(raw)
        return packing_for(cfg, TASKS[cfg.task], model_type, jit)

    assert packs("auto") and packs(True) and not packs(False)
    assert not packs("auto", model_type="distilbert") and not packs("auto", jit=True)
    assert packs("auto", model={"pooling": "pooler"}) and packs("auto", model={"pooling": "cls"})
    assert not packs("auto", training={"method": "contrastive"})
    with pytest.raises(ConfigError, match="a distilbert backbone"):
        packs(True, model_type="distilbert")
    with pytest.raises(ConfigError, match="with XLA"):
        packs(True, jit=True)


@pytest.mark.parametrize("family", ["roberta", "electra"])
def test_other_families_pack_to_the_same_outputs(family, monkeypatch):
    """RoBERTa counts positions from the pad id + 1; ELECTRA projects smaller embeddings."""
    from types import SimpleNamespace

    from transformers import ElectraConfig, RobertaConfig, TFElectraModel, TFRobertaModel

    from kerasft.models.backbones import Backbone, task_model
    from kerasft.training.packing import PackedModel

    sizes = dict(vocab_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    sizes.update(intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0)
    sizes.update(attention_probs_dropout_prob=0.0)
    if family == "roberta":
        model = TFRobertaModel(RobertaConfig(pad_token_id=1, **sizes))
        pad, names = 1, ("input_ids", "attention_mask")
    else:
        model = TFElectraModel(ElectraConfig(embedding_size=16, pad_token_id=0, **sizes))
        pad, names = 0, ("input_ids", "attention_mask", "token_type_ids")
    model(model.dummy_inputs)
    tokenizer = SimpleNamespace(pad_token_id=pad)
    backbone = Backbone(model, tokenizer, None, names, {})
    keras.utils.set_random_seed(0)
    packed_model = PackedModel.around(
        task_model(backbone, TASKS["classification"], 2, "mean", dropout=0.0), model, "mean"
    )
    monkeypatch.setattr(packing, "ROW_TOKENS", 12)
    rows = [[t + 2 for t in text] for text in TEXTS]  # no pad id inside a text
    width = max(map(len, rows))
    ids = tf.constant([r + [pad] * (width - len(r)) for r in rows])
    x = {
        "input_ids": ids,
        "attention_mask": tf.cast(tf.sequence_mask([len(r) for r in rows], width), tf.int32),
    }
    if "token_type_ids" in names:
        x["token_type_ids"] = tf.zeros_like(ids)
    pads = {name: tf.constant(pad if name == "input_ids" else 0) for name in x}
    packed, index = packing.pack_batch(
        {**x, "length": tf.constant([len(r) for r in rows])}, tf.range(len(rows)), pads
    )
    logits = packed_model.packed_call(packed, training=False).numpy()
    filled = packed["weights"].numpy() > 0
    expected = packed_model(x, training=False).numpy()
    np.testing.assert_allclose(logits[filled], expected[index.numpy()[filled]], atol=1e-5)
