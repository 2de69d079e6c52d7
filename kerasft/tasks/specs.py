"""What differs between tasks, as one frozen `TaskSpec` per task in `TASKS`.

| task | head output | loss | output activation | metrics (validation and test) |
| --- | --- | --- | --- | --- |
| classification | logits [B, C] | softmax cross-entropy | softmax | accuracy, macro_f1, f1 (binary), per class |
| multi_label | logits [B, C] | sigmoid cross-entropy | sigmoid | micro_f1, macro_f1, subset_accuracy, per label |
| regression | score [B] | mean squared error | identity | pearson, spearman, mse |
| token_classification | logits [B, T, C] | cross-entropy on first sub-tokens | softmax | entity precision/recall/f1 |
| seq2seq | next-token logits [B, T, V] | cross-entropy on target tokens (teacher forcing) | - | BLEU, chrF, ROUGE, exact match of generated text |

The config's task name is looked up once (`TASKS[cfg.task]`) and the spec is passed
on: data reading, the head, the loss, evaluation, serving and TFLite all ask it
instead of comparing task names.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasft._compat import keras, tf
from kerasft.config import MONITORS
from kerasft.errors import check_stop, stop_between_steps
from kerasft.tasks.metrics import classification_metrics, multi_label_metrics, regression_metrics
from kerasft.tasks.ner import entity_scores

IGNORE_INDEX = -100  # sub-tokens and special tokens: no loss, no metric (Hugging Face's convention)


@dataclass(frozen=True)
class TaskSpec:
    """One task's behaviour. Fields are plain values and functions; see the module table.

    Attributes:
        name: the config's task name.
        per_token: one target and output per token (tags aligned to first sub-tokens).
        multi_hot: any number of labels per example (multi-hot targets, sigmoid outputs,
            per-label thresholds tuned on validation).
        numeric: a number per example: no label vocabulary, a one-unit head.
        activation: logits (float32) → the probabilities or score people read.
        make_loss: `(num_classes, label_smoothing, focal_gamma or None)` → the training loss.
        fit_metrics: the cheap metrics Keras shows during `fit` (none by default).
        evaluate: `(outputs, targets, names, thresholds, scaling)` → the split's metrics.
        serving_outputs: `(logits, label_names, thresholds, (mean, std))` → the named
            outputs of the exported signatures.
        generative: the target is a text (seq2seq): no label vocabulary; the model is
            scored on the text it generates (`tasks.generation`).
        default_monitor: the validation metric early stopping watches by default.
        monitors: every validation metric the task reports.
    """

    name: str
    activation: Callable[[tf.Tensor], tf.Tensor]
    make_loss: Callable[[int, float, float | None], Any]
    evaluate: Callable[..., dict[str, Any]]
    serving_outputs: Callable[..., dict[str, tf.Tensor]]
    default_monitor: str
    monitors: tuple[str, ...]
    per_token: bool = False
    multi_hot: bool = False
    numeric: bool = False
    generative: bool = False
    fit_metrics: Callable[[], list] = list

    @property
    def single_label(self) -> bool:
        """Exactly one class per example: splits are stratified, class weights apply."""
        return not (self.per_token or self.multi_hot or self.numeric or self.generative)


def monitor_mode(monitor: str) -> str:
    """Whether a validation metric improves downwards (`min`: losses, errors) or upwards (`max`)."""
    return "min" if monitor in ("val_loss", "val_mse", "val_ece", "val_brier") else "max"


@keras.utils.register_keras_serializable(package="kerasft")
def masked_token_loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy over the tokens whose label is not IGNORE_INDEX (-100)."""
    y_true = tf.cast(y_true, tf.int32)
    mask = tf.not_equal(y_true, IGNORE_INDEX)
    safe = tf.where(mask, y_true, 0)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(safe, tf.cast(logits, tf.float32))
    weights = tf.cast(mask, tf.float32)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


@keras.utils.register_keras_serializable(package="kerasft")
class SparseFocalCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with optional label smoothing and focal weighting.

    loss = -sum_c q_c (1 - p_c)^gamma log p_c, where q is the (smoothed) one-hot
    target and p the softmax of the logits; gamma 0 and no smoothing is plain
    cross-entropy.

    Args:
        num_classes: number of classes.
        label_smoothing: share of the target mass spread evenly over all classes. Defaults to 0.
        gamma: focusing parameter. Defaults to 0.
    """

    def __init__(
        self, num_classes: int, label_smoothing: float = 0.0, gamma: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.gamma = float(gamma)

    def call(self, y_true, logits):
        target = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), self.num_classes)
        target = target * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        weight = tf.pow(1.0 - tf.exp(log_p), self.gamma) if self.gamma else 1.0
        return -tf.reduce_sum(target * weight * log_p, axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
            "gamma": self.gamma,
        }


def _classification_loss(num_classes: int, label_smoothing: float, focal_gamma: float | None):
    if label_smoothing or focal_gamma is not None:
        return SparseFocalCrossentropy(num_classes, label_smoothing, focal_gamma or 0.0)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _multi_label_loss(num_classes: int, label_smoothing: float, focal_gamma: float | None):
    if focal_gamma is not None:
        return keras.losses.BinaryFocalCrossentropy(
            gamma=focal_gamma, from_logits=True, label_smoothing=label_smoothing
        )
    return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing)


def _evaluate_classification(outputs, targets, names, thresholds=None, scaling=None) -> dict:
    scores = classification_metrics(outputs, targets, names)
    if len(names) == 2:
        scores["f1"] = scores["per_class"][names[1]]["f1"]
    return scores


def _evaluate_multi_label(outputs, targets, names, thresholds=None, scaling=None) -> dict:
    return multi_label_metrics(outputs, targets, names, thresholds)


def _evaluate_regression(outputs, targets, names, thresholds=None, scaling=None) -> dict:
    return regression_metrics(outputs, targets, scaling)


def _evaluate_tokens(outputs, targets, names, thresholds=None, scaling=None) -> dict:
    true = [[names[i] for i in row] for row in targets]
    pred = [[names[i] for i in row] for row in outputs]
    words = sum(len(r) for r in targets)
    hits = sum(int((p == t).sum()) for p, t in zip(outputs, targets, strict=True))
    return {
        "examples": len(targets),
        "words": words,
        "token_accuracy": hits / max(words, 1),
        **entity_scores(true, pred),
    }


def _serve_labels(logits, label_names, thresholds, scale, id_key="label_id", name_key="label"):
    probabilities = tf.nn.softmax(logits, axis=-1)
    ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return {
        "probabilities": probabilities,
        id_key: ids,
        name_key: tf.gather(label_names, ids),
    }


def _serve_tags(logits, label_names, thresholds, scale) -> dict:
    return _serve_labels(logits, label_names, thresholds, scale, "tag_id", "tag")


def _serve_multi_label(logits, label_names, thresholds, scale) -> dict:
    probabilities = tf.sigmoid(logits)
    return {
        "probabilities": probabilities,
        "predicted": probabilities >= thresholds,
        "thresholds": tf.identity(thresholds),
    }


def _serve_score(logits, label_names, thresholds, scale) -> dict:
    return {"score": logits * scale[1] + scale[0]}


def _accuracy() -> list:
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def _softmax(logits: tf.Tensor) -> tf.Tensor:
    return tf.nn.softmax(logits, axis=-1)


def _identity(logits: tf.Tensor) -> tf.Tensor:
    return logits


def _mse_loss(num_classes: int, label_smoothing: float, focal_gamma: float | None):
    return keras.losses.MeanSquaredError()


def _token_loss(num_classes: int, label_smoothing: float, focal_gamma: float | None):
    return masked_token_loss


@keras.utils.register_keras_serializable(package="kerasft")
class MaskedTokenCrossentropy(keras.losses.Loss):
    """Mean cross-entropy over the target tokens whose label is not IGNORE_INDEX (-100),
    with label smoothing over the vocabulary (the loss of teacher-forced seq2seq training).

    Args:
        label_smoothing: share of each token's target mass spread evenly over the vocabulary.
            Defaults to 0.
    """

    def __init__(self, label_smoothing: float = 0.0, **kwargs):
        kwargs.setdefault("reduction", keras.losses.Reduction.SUM_OVER_BATCH_SIZE)
        super().__init__(**kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, logits):
        y_true = tf.cast(y_true, tf.int32)
        mask = tf.cast(tf.not_equal(y_true, IGNORE_INDEX), tf.float32)
        safe = tf.where(y_true == IGNORE_INDEX, 0, y_true)
        log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        nll = -tf.gather(log_p, safe, batch_dims=2)
        if self.label_smoothing:
            uniform = -tf.reduce_mean(log_p, axis=-1)
            nll = (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform
        # One value per sequence: its token losses summed over the batch's token count, so
        # the batch mean is the mean over every target token (long targets weigh more).
        tokens = tf.maximum(tf.reduce_sum(mask), 1.0)
        batch = tf.cast(tf.shape(y_true)[0], tf.float32)
        return tf.reduce_sum(nll * mask, axis=-1) * batch / tokens

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def _seq2seq_loss(num_classes: int, label_smoothing: float, focal_gamma: float | None):
    return MaskedTokenCrossentropy(label_smoothing)


def _evaluate_text(outputs, targets, names, thresholds=None, scaling=None) -> dict:
    from kerasft.tasks.generation import text_scores

    return text_scores(outputs, targets)


def _serve_text(logits, label_names, thresholds, scale) -> dict:
    raise NotImplementedError("seq2seq exports generate text (serving.seq2seq)")


def _spec(name: str, **behaviour: Any) -> TaskSpec:
    default, allowed = MONITORS[name]  # config validation checks `training.monitor` against these
    return TaskSpec(name=name, default_monitor=default, monitors=allowed, **behaviour)


TASKS: dict[str, TaskSpec] = {
    "classification": _spec(
        "classification",
        activation=_softmax,
        make_loss=_classification_loss,
        evaluate=_evaluate_classification,
        serving_outputs=_serve_labels,
        fit_metrics=_accuracy,
    ),
    "multi_label": _spec(
        "multi_label",
        activation=tf.sigmoid,
        make_loss=_multi_label_loss,
        evaluate=_evaluate_multi_label,
        serving_outputs=_serve_multi_label,
        multi_hot=True,
    ),
    "regression": _spec(
        "regression",
        activation=_identity,
        make_loss=_mse_loss,
        evaluate=_evaluate_regression,
        serving_outputs=_serve_score,
        numeric=True,
    ),
    "token_classification": _spec(
        "token_classification",
        activation=_softmax,
        make_loss=_token_loss,
        evaluate=_evaluate_tokens,
        serving_outputs=_serve_tags,
        per_token=True,
    ),
    "seq2seq": _spec(
        "seq2seq",
        activation=_identity,
        make_loss=_seq2seq_loss,
        evaluate=_evaluate_text,
        serving_outputs=_serve_text,
        generative=True,
    ),
}


def collect(model: keras.Model, dataset: tf.data.Dataset, spec: TaskSpec) -> tuple[Any, Any]:
    """Runs the model over an (x, y) dataset and returns `(outputs, targets)`.

    Outputs are the spec's activation of the logits: probabilities `[N, C]` with ids
    `[N]` (classification) or multi-hot targets `[N, C]` (multi_label); scores and
    targets `[N]` (regression); for per-token tasks, lists of predicted and true tag
    ids per example at the labelled (first sub-token) positions.
    """
    step = _forward(model, spec, dataset.element_spec[0])
    outputs, targets = [], []
    with stop_between_steps():  # Ctrl-C stops between batches
        for features, y in dataset:
            check_stop()
            out, y = step(features).numpy(), y.numpy()
            if spec.per_token:
                pred = out.argmax(-1)
                for row in range(len(y)):
                    keep = y[row] != IGNORE_INDEX
                    outputs.append(pred[row][keep])
                    targets.append(y[row][keep])
            else:
                outputs.append(out)
                targets.append(y)
    if spec.per_token or not outputs:
        return outputs, targets
    return np.concatenate(outputs), np.concatenate(targets)


# model → {input structure → traced forward pass}; entries go with their model.
_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forget_forward(model: keras.Model) -> None:
    """Drops `model`'s traced forward passes (after its layers change, e.g. LoRA merging)."""
    _FORWARD.pop(model, None)


def _forward(model: keras.Model, spec: TaskSpec, input_spec):
    # One trace per input structure: batches of every length share the [None, None]
    # signature (reduce_retracing would trace two or three times, ~1.5 s each).
    cache = _FORWARD.setdefault(model, {})
    key = repr(input_spec)
    if key not in cache:
        held = weakref.ref(model)  # a strong one in the value would keep the key alive
        cache[key] = tf.function(
            lambda x: spec.activation(tf.cast(held()(x, training=False), tf.float32)),
            input_signature=[input_spec],
        )
    return cache[key]


def evaluate(
    spec: TaskSpec,
    outputs: Any,
    targets: Any,
    names: tuple[str, ...],
    thresholds: np.ndarray | None = None,
    scaling: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The task's metrics for one split (see the module table). `examples` is always present.

    Args:
        thresholds: per-label decision thresholds (multi_label). Defaults to 0.5.
        scaling: `(mean, std)` the regression targets were standardised with; scores and
            targets are brought back to the original scale first. Defaults to none.
    """
    if len(targets) == 0:
        return {"examples": 0}
    return spec.evaluate(outputs, targets, names, thresholds, scaling)


def tune_thresholds(probs: np.ndarray, hot: np.ndarray) -> np.ndarray:
    """Per-label thresholds that maximise each label's F1 on (validation) data; 0.5 where a label never occurs."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    best = np.full(hot.shape[1], 0.5)
    for j in range(hot.shape[1]):
        truth = hot[:, j] > 0.5
        if not truth.any():
            continue
        pred = probs[:, j][None, :] >= grid[:, None]
        tp = (pred & truth).sum(axis=1)
        f1 = 2 * tp / np.maximum(pred.sum(axis=1) + truth.sum(), 1)
        best[j] = grid[int(np.argmax(f1))]
    return best


def class_counts(
    target: np.ndarray | list[np.ndarray], n_classes: int, spec: TaskSpec
) -> np.ndarray:
    """Examples (or words, for tags) per class."""
    if spec.multi_hot:
        return target.sum(axis=0).astype(np.int64)
    if spec.per_token:
        flat = np.concatenate(target) if len(target) else np.zeros(0, np.int32)
        return np.bincount(flat, minlength=n_classes)
    return np.bincount(target, minlength=n_classes)
