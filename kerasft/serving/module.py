"""The serving module: a `tf.Module` with the export's signatures, separate from the training model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasft._compat import tf
from kerasft.serving.info import ExportInfo
from kerasft.tasks import TaskSpec


class ServingModule(tf.Module):
    """Serving signatures with the task's outputs (`TaskSpec.serving_outputs`).

    | task | outputs |
    | --- | --- |
    | classification | `probabilities` [B, C], `label_id` [B], `label` [B] |
    | multi_label | `probabilities` [B, C], `predicted` [B, C] (bool, per-label thresholds), `thresholds` [C] |
    | regression | `score` [B], on the original scale of the targets |
    | token_classification | `probabilities` [B, T, C], `tag_id` [B, T], `tag` [B, T] (per sub-token) |

    Signatures: `serving_default` takes raw UTF-8 strings `text` (and `text_pair`),
    tokenized in the graph, when there is an in-graph tokenizer, else token ids;
    `predict_ids` always takes int32 token ids.

    Args:
        model: the trained Keras model (dict of int32 token-id inputs → task logits).
        spec: the task's spec.
        info: the export contract (labels, pair, thresholds, target scaling).
        input_names: the model's input names, e.g. `input_ids`, `attention_mask`.
        assets: files to ship in `assets/` (label names, tokenizer files).
        tokenizer: the in-graph tokenizer, or None for an ids-only export. Defaults to None.
        empty_batches: take an empty batch of ids as [0, 0] too (`_at_least_one_column`).
            Off for the ONNX source graph, where that padding keeps onnxruntime from fusing
            attention. Defaults to True.
    """

    def __init__(
        self,
        model: Any,
        spec: TaskSpec,
        info: ExportInfo,
        input_names: tuple[str, ...],
        assets: list[Path],
        tokenizer: tf.Module | None = None,
        empty_batches: bool = True,
    ):
        super().__init__(name="kerasft_serving")
        # Track the model's weights, not the model: a trained model also holds its optimizer,
        # whose slots (twice the weights for AdamW) would otherwise be saved with the export.
        self.weights = list(model.weights)
        self._forward = lambda features: model(features, training=False)
        self.spec = spec
        self.input_names = tuple(input_names)
        self.assets = [tf.saved_model.Asset(str(path)) for path in assets]
        self.tokenizer = tokenizer
        self._empty_batches = empty_batches
        self.pair = info.pair
        self._label_names = tf.constant(list(info.labels) or [""])
        n = max(len(info.labels), 1)
        thresholds = info.thresholds if info.thresholds is not None else [0.5] * n
        self._thresholds = tf.constant([float(t) for t in thresholds])
        mean, std = info.scaling if info.scaling is not None else (0.0, 1.0)
        self._scale = tf.constant([mean, std], tf.float32)

    def predict_ids(self, **features: tf.Tensor) -> dict[str, tf.Tensor]:
        features = {k: tf.cast(v, tf.int32) for k, v in features.items()}
        if self._empty_batches:
            features = _at_least_one_column(features)
        logits = tf.cast(self._forward(features), tf.float32)
        return self.spec.serving_outputs(logits, self._label_names, self._thresholds, self._scale)

    def signatures(self) -> dict[str, Any]:
        specs = {
            name: tf.TensorSpec([None, None], tf.int32, name=name) for name in self.input_names
        }
        ids_fn = tf.function(self.predict_ids, autograph=False).get_concrete_function(**specs)
        if self.tokenizer is None:
            return {"serving_default": ids_fn, "predict_ids": ids_fn}

        def predict_text(text: tf.Tensor, text_pair: tf.Tensor | None = None) -> dict:
            # Calls the ids signature: the model is traced (and stored) once.
            if text_pair is not None:  # else the tokenizer fails with a shape error of its own
                tf.debugging.assert_equal(
                    tf.size(text),
                    tf.size(text_pair),
                    message="kerasft: `text` and `text_pair` must hold as many strings",
                )
            features = self.tokenizer(text, text_pair)
            return ids_fn(**{k: tf.cast(v, tf.int32) for k, v in features.items()})

        text = tf.TensorSpec([None], tf.string, name="text")
        pair = tf.TensorSpec([None], tf.string, name="text_pair")
        inputs = {"text": text, "text_pair": pair} if self.pair else {"text": text}
        text_fn = tf.function(predict_text, autograph=False).get_concrete_function(**inputs)
        return {"serving_default": text_fn, "predict_ids": ids_fn}


def _at_least_one_column(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """`features` with one column of zeros added when they have none (no effect otherwise).

    An empty batch sent as [0, 0] ids (a client with nothing to send) failed in the attention's
    matrix product (`Matrix size-incompatible: In[0]: [0,4,1,0]`), where [0, n] gives empty
    outputs; one column makes it [0, 1]. Rows of no tokens at all are not a real input
    (every row holds at least its tokenizer's special tokens).
    """
    width = tf.shape(next(iter(features.values())))[1]
    extra = tf.maximum(1 - width, 0)
    return {k: tf.pad(v, [[0, 0], [0, extra]]) for k, v in features.items()}
