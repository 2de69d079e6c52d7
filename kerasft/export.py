"""SavedModel export in the TensorFlow Serving layout: `<dir>/<name>/<version>/`.

The serving module is a `tf.Module` separate from the training model, so the
export holds only what serving needs: the weights, the signature and the label
names (as an asset and as a constant the signature returns). Versions are
integers counting up; each is written to a temporary folder and renamed into
place, so a reader never sees half an export and no version is overwritten.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kerasft._compat import keras, tf

LABELS_ASSET = "labels.txt"


class ClassifierServingModule(tf.Module):
    """Serving signatures for a text classifier over token ids.

    Args:
        model: the trained Keras model (dict of int32 token-id inputs → logits).
        label_names: class names in id order.
        input_names: the model's input names, e.g. `input_ids`, `attention_mask`.
        labels_file: a text file with one label per line, copied into `assets/`.
    """

    def __init__(
        self,
        model: keras.Model,
        label_names: tuple[str, ...],
        input_names: tuple[str, ...],
        labels_file: Path,
    ):
        super().__init__(name="kerasft_serving")
        self.model = model
        self.labels_asset = tf.saved_model.Asset(str(labels_file))
        self._label_names = tf.constant(list(label_names))
        self.input_names = input_names

    def predict_ids(self, **features: tf.Tensor) -> dict[str, tf.Tensor]:
        features = {k: tf.cast(v, tf.int32) for k, v in features.items()}
        logits = tf.cast(self.model(features, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "label_id": label_id,
            "label": tf.gather(self._label_names, label_id),
        }

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        specs = {
            name: tf.TensorSpec([None, None], tf.int32, name=name) for name in self.input_names
        }
        fn = tf.function(self.predict_ids).get_concrete_function(**specs)
        return {"serving_default": fn, "predict_ids": fn}


def next_version(model_dir: Path) -> int:
    """One more than the highest integer version under `model_dir` (1 for a new model)."""
    versions = (
        [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
    )
    return max(versions, default=0) + 1


def export_classifier(
    model: keras.Model,
    label_names: tuple[str, ...],
    input_names: tuple[str, ...],
    export_root: Path,
    name: str,
) -> Path:
    """Writes a new version of `name` under `export_root` and returns its directory."""
    model_dir = Path(export_root) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=model_dir))
    try:
        (staging / "src").mkdir()
        labels_file = staging / "src" / LABELS_ASSET
        labels_file.write_text("\n".join(label_names) + "\n", encoding="utf-8")
        module = ClassifierServingModule(model, label_names, input_names, labels_file)
        saved = staging / "saved_model"
        tf.saved_model.save(module, str(saved), signatures=module.signatures())
        while True:
            target = model_dir / str(next_version(model_dir))
            try:
                os.rename(saved, target)
                break
            except OSError:
                if not target.exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
