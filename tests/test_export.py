from __future__ import annotations

import numpy as np

from kerasft._compat import tf
from kerasft.export import export_classifier, next_version
from kerasft.models import build_classifier, load_backbone

IDS = {
    "input_ids": tf.constant([[2, 5, 6, 3, 0, 0], [2, 8, 9, 10, 11, 3]]),
    "attention_mask": tf.constant([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]),
    "token_type_ids": tf.zeros((2, 6), tf.int32),
}


def test_export_reloads_with_the_same_probabilities_and_counts_versions(tiny_bert_dir, tmp_path):
    backbone = load_backbone(tiny_bert_dir)
    model = build_classifier(backbone, num_labels=3)
    expected = tf.nn.softmax(model(IDS, training=False)).numpy()
    names = ("neg", "neu", "pos")

    first = export_classifier(model, names, backbone.input_names, tmp_path, "m")
    second = export_classifier(model, names, backbone.input_names, tmp_path, "m")
    assert (first.name, second.name) == ("1", "2")
    assert next_version(tmp_path / "m") == 3
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "1",
        "2",
    ]  # no staging left behind
    assert (first / "assets" / "labels.txt").read_text().split() == list(names)

    loaded = tf.saved_model.load(str(first))
    out = loaded.signatures["serving_default"](**IDS)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)
    assert out["label_id"].numpy().tolist() == expected.argmax(-1).tolist()
    assert [s.decode() for s in out["label"].numpy()] == [names[i] for i in expected.argmax(-1)]
    assert set(loaded.signatures) == {"serving_default", "predict_ids"}
