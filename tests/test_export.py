from __future__ import annotations

import numpy as np
import pytest

from kerasft._compat import tf
from kerasft.models import build_classifier, load_backbone
from kerasft.serving import ExportInfo, export_model, next_version

# Trains with `precision: auto`: `make test-bf16` reruns this module in mixed_bfloat16.
pytestmark = pytest.mark.precision

IDS = {
    "input_ids": tf.constant([[2, 5, 6, 3, 0, 0], [2, 8, 9, 10, 11, 3]]),
    "attention_mask": tf.constant([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]),
    "token_type_ids": tf.zeros((2, 6), tf.int32),
}


@pytest.mark.slow
def test_export_reloads_with_the_same_probabilities_and_counts_versions(tiny_bert_dir, tmp_path):
    backbone = load_backbone(tiny_bert_dir)
    model = build_classifier(backbone, num_labels=3)
    expected = tf.nn.softmax(model(IDS, training=False)).numpy()
    names = ("neg", "neu", "pos")

    info = ExportInfo("classification", names)
    first = export_model(model, info, backbone.input_names, tmp_path / "m")
    second = export_model(model, info, backbone.input_names, tmp_path / "m")
    assert (first.name, second.name) == ("1", "2")
    assert next_version(tmp_path / "m") == 3
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "1",
        "2",
    ]  # no staging left behind
    assert (first / "assets" / "labels.txt").read_text().split() == list(names)

    loaded = tf.saved_model.load(str(first))
    out = loaded.signatures["predict_ids"](**IDS)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)
    assert out["label_id"].numpy().tolist() == expected.argmax(-1).tolist()
    assert [s.decode() for s in out["label"].numpy()] == [names[i] for i in expected.argmax(-1)]
    assert set(loaded.signatures) == {"serving_default", "predict_ids"}
    # No rows (a client with nothing to send), with or without columns: empty outputs. As
    # [0, 0] it failed inside the attention's matrix product.
    for width in (0, 5):
        empty = loaded.signatures["predict_ids"](**{k: tf.zeros([0, width], tf.int32) for k in IDS})
        assert empty["probabilities"].shape == (0, len(names)) and empty["label"].shape == (0,)


def test_a_trained_models_export_holds_its_weights_but_not_its_optimizer(tiny_bert_dir, tmp_path):
    from kerasft._compat import keras

    backbone = load_backbone(tiny_bert_dir)
    model = build_classifier(backbone, num_labels=2)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(IDS, tf.constant([0, 1]), epochs=1, verbose=0)  # creates AdamW's two slots per weight
    expected = tf.nn.softmax(model(IDS, training=False)).numpy()
    export = export_model(
        model, ExportInfo("classification", ("a", "b")), backbone.input_names, tmp_path
    )
    weights = sum(w.numpy().nbytes for w in model.weights)
    saved = sum(p.stat().st_size for p in (export / "variables").iterdir())
    assert weights <= saved < 1.2 * weights  # the optimizer's slots would make it about 3x
    out = tf.saved_model.load(str(export)).signatures["predict_ids"](**IDS)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)


@pytest.mark.slow
def test_raw_text_signature_equals_model_on_hugging_face_ids(tiny_bert_dir, tmp_path):
    from kerasft.models import load_tokenizer

    backbone = load_backbone(tiny_bert_dir)
    tokenizer = load_tokenizer(tiny_bert_dir)
    model = build_classifier(backbone, num_labels=2)
    texts = ["good movie", "the plot was very boring .", "", "ÁWFUL film!!", "fun " * 40]
    export = export_model(
        model,
        ExportInfo("classification", ("neg", "pos"), max_length=16),
        backbone.input_names,
        tmp_path / "m",
        tokenizer=tokenizer,
    )
    assert {"vocab.txt", "tokenizer.json", "labels.txt"} <= {
        p.name for p in (export / "assets").iterdir()
    }
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    got = serve(text=tf.constant(texts))["probabilities"].numpy()
    ids = tokenizer(texts, truncation=True, max_length=16, padding=True, return_tensors="np")
    expected = tf.nn.softmax(
        model({k: tf.constant(v) for k, v in ids.items()}, training=False)
    ).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # No texts (a client with nothing to send): empty outputs, not an error inside attention.
    empty = serve(text=tf.constant([], tf.string))
    assert empty["probabilities"].shape == (0, 2) and empty["label"].shape == (0,)


@pytest.mark.slow
def test_pair_model_takes_text_and_text_pair(tiny_bert_dir, tmp_path):
    from kerasft.models import load_tokenizer

    backbone = load_backbone(tiny_bert_dir)
    tokenizer = load_tokenizer(tiny_bert_dir)
    model = build_classifier(backbone, num_labels=2)
    export = export_model(
        model,
        ExportInfo("classification", ("diff", "same"), max_length=12, pair=True),
        backbone.input_names,
        tmp_path / "m",
        tokenizer=tokenizer,
    )
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    a, b = ["good movie", "the plot was fun fun fun fun fun fun"], ["bad film", "boring"]
    got = serve(text=tf.constant(a), text_pair=tf.constant(b))["probabilities"].numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="must hold as many strings"):
        serve(text=tf.constant(a), text_pair=tf.constant(b[:1]))
    ids = tokenizer(a, b, truncation=True, max_length=12, padding=True, return_tensors="np")
    expected = tf.nn.softmax(
        model({k: tf.constant(v) for k, v in ids.items()}, training=False)
    ).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.slow
def test_run_export_has_card_meta_and_warmup_that_replays_like_tf_serving(tiny_config):
    """Loads the export the way TF Serving does (TF1 session, `serve` tag) and replays its warmup requests."""
    from tensorflow_serving.apis import prediction_log_pb2

    from kerasft.config import config_from_dict
    from kerasft.training.runner import run

    result = run(config_from_dict(tiny_config), verbose=0)
    export = result.export_dir
    card = (export.parent / "README.md").read_text()
    assert (
        "# tiny" in card
        and ":predict" in card
        and "| test |" in card
        and "Latest version: **1**" in card
    )
    records = list(
        tf.data.TFRecordDataset(str(export / "assets.extra" / "tf_serving_warmup_requests"))
    )
    assert len(records) == 2
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(export))
        signature = meta.signature_def["serving_default"]
        for record in records:
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = log.predict_log.request
            feed = {signature.inputs[k].name: tf.make_ndarray(v) for k, v in request.inputs.items()}
            out = sess.run({k: v.name for k, v in signature.outputs.items()}, feed_dict=feed)
            n = len(tf.make_ndarray(request.inputs["text"]))
            assert out["probabilities"].shape == (n, 2)
            np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_tflite_exports_report_their_size_and_agree(tiny_config):
    """A tiny model's int8 file is not smaller than its float variables (fixed overheads dominate
    at 17k weights), so size is checked as reported, not as a ratio; the MiniLM's shrinks 4x
    (bench/compression.py)."""
    from kerasft.config import config_from_dict
    from kerasft.training.runner import run

    tiny_config["export"].update(tflite=True, tflite_int8=True)
    result = run(config_from_dict(tiny_config), verbose=0)
    lite = result.export_dir.parent / "tflite" / f"{result.export_dir.name}.tflite"
    full = result.export_dir.parent / "tflite" / f"{result.export_dir.name}.int8.tflite"
    assert lite.is_file() and full.is_file()
    import json

    meta = json.loads((result.export_dir / "assets.extra" / "kerasft.json").read_text())
    dynamic, integer = meta["tflite"], meta["tflite_int8"]
    assert dynamic["mb"] == pytest.approx(lite.stat().st_size / 1e6, rel=1e-6)
    assert integer["mb"] == pytest.approx(full.stat().st_size / 1e6, rel=1e-6)
    assert dynamic["examples"] == 8 and dynamic["agreement"] >= 0.75
    assert dynamic["max_abs_diff"] < 0.1
    # Full integer: int8 activations too, calibrated on the training split; still close.
    assert integer["examples"] == 8 and integer["agreement"] >= 0.75
    assert integer["max_abs_diff"] < 0.2
    card = (result.export_dir.parent / "README.md").read_text()
    assert "## TFLite" in card and f"tflite/{result.export_dir.name}.int8.tflite" in card
