"""SavedModel export in the TensorFlow Serving layout: `<dir>/<name>/<version>/`.

The serving module is a `tf.Module` separate from the training model, so the
export holds only what serving needs: the weights, the in-graph tokenizer, the
signatures, and the label names and tokenizer files as assets. Versions are
integers counting up; each is written to a temporary folder and renamed into
place, so a reader never sees half an export and no version is overwritten.

Signatures:
- `serving_default`: raw UTF-8 strings `text` (and `text_pair` for pair models),
  tokenized in the graph with tensorflow-text exactly as in training. Backbones
  whose tokenizer has no in-graph equivalent (byte-level BPE, SentencePiece for
  now) get the token-ids signature here instead, and the export says so.
- `predict_ids`: int32 token ids for clients that tokenize themselves.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kerasft._compat import keras, tf
from kerasft.graph_tokenizer import UnsupportedTokenizer, graph_tokenizer_for

LABELS_ASSET = "labels.txt"


class ServingModule(tf.Module):
    """Serving signatures with outputs per task.

    | task | outputs |
    | --- | --- |
    | classification | `probabilities` [B, C], `label_id` [B], `label` [B] |
    | multi_label | `probabilities` [B, C], `predicted` [B, C] (bool, per-label thresholds), `thresholds` [C] |
    | regression | `score` [B], on the original scale of the targets |
    | token_classification | `probabilities` [B, T, C], `tag_id` [B, T], `tag` [B, T] (per sub-token) |

    Args:
        model: the trained Keras model (dict of int32 token-id inputs → task outputs).
        task: the config's task.
        label_names: class, label or tag names in id order (empty for regression).
        input_names: the model's input names, e.g. `input_ids`, `attention_mask`.
        assets: files to ship in `assets/` (label names, tokenizer files).
        tokenizer: the in-graph tokenizer, or None for an ids-only export. Defaults to None.
        pair: whether the model reads text pairs. Defaults to False.
        thresholds: per-label decision thresholds (multi_label). Defaults to 0.5 each.
        scaling: `(mean, std)` of standardised regression targets. Defaults to none.
    """

    def __init__(
        self,
        model,
        task,
        label_names,
        input_names,
        assets,
        tokenizer=None,
        pair=False,
        thresholds=None,
        scaling=None,
    ):
        super().__init__(name="kerasft_serving")
        self.model = model
        self.task = task
        self.input_names = tuple(input_names)
        self.assets = [tf.saved_model.Asset(str(path)) for path in assets]
        self.tokenizer = tokenizer
        self.pair = pair
        self._label_names = tf.constant(list(label_names) or [""])
        n = max(len(label_names), 1)
        self._thresholds = tf.constant(
            [0.5] * n if thresholds is None else [float(t) for t in thresholds]
        )
        mean, std = scaling if scaling is not None else (0.0, 1.0)
        self._scale = tf.constant([mean, std], tf.float32)

    def predict_ids(self, **features: tf.Tensor) -> dict[str, tf.Tensor]:
        features = {k: tf.cast(v, tf.int32) for k, v in features.items()}
        out = tf.cast(self.model(features, training=False), tf.float32)
        if self.task == "regression":
            return {"score": out * self._scale[1] + self._scale[0]}
        if self.task == "multi_label":
            probabilities = tf.sigmoid(out)
            return {
                "probabilities": probabilities,
                "predicted": probabilities >= self._thresholds,
                "thresholds": tf.identity(self._thresholds),
            }
        probabilities = tf.nn.softmax(out, axis=-1)
        ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        if self.task == "token_classification":
            return {
                "probabilities": probabilities,
                "tag_id": ids,
                "tag": tf.gather(self._label_names, ids),
            }
        return {
            "probabilities": probabilities,
            "label_id": ids,
            "label": tf.gather(self._label_names, ids),
        }

    def predict_text(
        self, text: tf.Tensor, text_pair: tf.Tensor | None = None
    ) -> dict[str, tf.Tensor]:
        return self.predict_ids(**self.tokenizer(text, text_pair))

    def signatures(self) -> dict[str, Any]:
        specs = {
            name: tf.TensorSpec([None, None], tf.int32, name=name) for name in self.input_names
        }
        ids_fn = tf.function(self.predict_ids).get_concrete_function(**specs)
        if self.tokenizer is None:
            return {"serving_default": ids_fn, "predict_ids": ids_fn}
        text = tf.TensorSpec([None], tf.string, name="text")
        if self.pair:
            pair = tf.TensorSpec([None], tf.string, name="text_pair")
            text_fn = tf.function(self.predict_text).get_concrete_function(
                text=text, text_pair=pair
            )
        else:
            text_fn = tf.function(lambda text: self.predict_text(text)).get_concrete_function(
                text=text
            )
        return {"serving_default": text_fn, "predict_ids": ids_fn}


def next_version(model_dir: Path) -> int:
    """One more than the highest integer version under `model_dir` (1 for a new model)."""
    versions = (
        [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
    )
    return max(versions, default=0) + 1


def export_model(
    model: keras.Model,
    task: str,
    label_names: tuple[str, ...],
    input_names: tuple[str, ...],
    export_root: Path,
    name: str,
    *,
    tokenizer: Any = None,
    max_length: int = 128,
    pair: bool = False,
    thresholds=None,
    scaling=None,
) -> Path:
    """Writes a new version of `name` under `export_root` and returns its directory.

    Args:
        tokenizer: the Hugging Face tokenizer used in training; with it the export
            takes raw text (when the tokenizer can run in-graph). Defaults to None (ids only).
        max_length: the training max length, for in-graph truncation. Defaults to 128.
        pair: whether the model reads text pairs. Defaults to False.
    """
    model_dir = Path(export_root) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=model_dir))
    try:
        src = staging / "src"
        src.mkdir()
        (src / LABELS_ASSET).write_text("".join(f"{n}\n" for n in label_names), encoding="utf-8")
        assets = [src / LABELS_ASSET]
        graph = None
        if tokenizer is not None:
            tokenizer.save_pretrained(str(src / "tokenizer"))
            assets += sorted((src / "tokenizer").iterdir())
            try:
                graph = graph_tokenizer_for(tokenizer, max_length, input_names)
            except UnsupportedTokenizer as exc:
                print(
                    f"export: the backbone's tokenizer cannot run in the graph ({exc}); "
                    "serving_default takes token ids, tokenize with the files in assets/"
                )
        module = ServingModule(
            model, task, label_names, input_names, assets, graph, pair, thresholds, scaling
        )
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


def export_classifier(model, label_names, input_names, export_root, name, **kwargs) -> Path:
    """`export_model` for single-label classification."""
    return export_model(
        model, "classification", label_names, input_names, export_root, name, **kwargs
    )
