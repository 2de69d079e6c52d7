"""What differs between tasks: the loss, how outputs become predictions, and the metrics people quote.

| task | head output | loss | metrics (validation and test) |
| --- | --- | --- | --- |
| classification | logits [B, C] | softmax cross-entropy | accuracy, macro_f1, f1 (binary), per class |
| multi_label | logits [B, C] | sigmoid cross-entropy | micro_f1, macro_f1, subset_accuracy, per label |
| regression | score [B] | mean squared error | pearson, spearman, mse |
| token_classification | logits [B, T, C] | cross-entropy on first sub-tokens | entity precision/recall/f1 |
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasft._compat import keras, tf
from kerasft.data.labels import IGNORE_INDEX
from kerasft.metrics import classification_metrics
from kerasft.ner_metrics import entity_scores


def monitor_mode(monitor: str) -> str:
    return "min" if monitor in ("val_loss", "val_mse") else "max"


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


def loss_for(
    task: str, num_classes: int = 0, label_smoothing: float = 0.0, focal_gamma: float | None = None
):
    """The training loss of a task.

    Args:
        num_classes: classes (for smoothing and focal weighting). Defaults to 0.
        label_smoothing: classification and multi_label. Defaults to 0.
        focal_gamma: use the focal loss with this gamma (classification, multi_label). Defaults to none.
    """
    if task == "classification":
        if label_smoothing or focal_gamma is not None:
            return SparseFocalCrossentropy(num_classes, label_smoothing, focal_gamma or 0.0)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if task == "multi_label":
        if focal_gamma is not None:
            return keras.losses.BinaryFocalCrossentropy(
                gamma=focal_gamma, from_logits=True, label_smoothing=label_smoothing
            )
        return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing)
    if task == "regression":
        return keras.losses.MeanSquaredError()
    return masked_token_loss


def fit_metrics(task: str) -> list:
    """Cheap metrics Keras shows during `fit` (the full set is computed per epoch on validation)."""
    if task == "classification":
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return []


def collect(model: keras.Model, dataset: tf.data.Dataset, task: str) -> tuple[Any, Any]:
    """Runs the model over an (x, y) dataset.

    Returns:
        (outputs, targets): probabilities [N, C] and ids [N] (classification);
        sigmoid probabilities and multi-hot targets [N, C] (multi_label); scores and
        targets [N] (regression); for token classification, lists of predicted and
        true tag ids per example at the labelled (first sub-token) positions.
    """
    step = _forward(model, task, dataset.element_spec[0])
    outputs, targets = [], []
    for features, y in dataset:
        out, y = step(features).numpy(), y.numpy()
        if task == "token_classification":
            pred = out.argmax(-1)
            for row in range(len(y)):
                keep = y[row] != IGNORE_INDEX
                outputs.append(pred[row][keep])
                targets.append(y[row][keep])
        else:
            outputs.append(out)
            targets.append(y)
    if task == "token_classification" or not outputs:
        return outputs, targets
    return np.concatenate(outputs), np.concatenate(targets)


def _forward(model: keras.Model, task: str, spec):
    # One trace per input structure: batches of every length share the [None, None]
    # signature (reduce_retracing would trace two or three times, ~1.5 s each).
    cache = model.__dict__.setdefault("_kerasft_forward", {})  # LoRA merging resets it
    key = repr(spec)
    if key not in cache:
        activation = {"classification": tf.nn.softmax, "multi_label": tf.sigmoid}.get(
            task, tf.identity
        )
        cache[key] = tf.function(
            lambda x: activation(tf.cast(model(x, training=False), tf.float32)),
            input_signature=[spec],
        )
    return cache[key]


def evaluate(
    task: str,
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
    if task == "classification":
        scores = classification_metrics(outputs, targets, names)
        if len(names) == 2:
            scores["f1"] = scores["per_class"][names[1]]["f1"]
        return scores
    if task == "multi_label":
        return _multi_label(outputs, targets, names, thresholds)
    if task == "regression":
        return _regression(outputs, targets, scaling)
    true = [[names[i] for i in row] for row in targets]
    pred = [[names[i] for i in row] for row in outputs]
    scores = entity_scores(true, pred)
    words = sum(len(r) for r in targets)
    token_accuracy = sum(int((p == t).sum()) for p, t in zip(outputs, targets, strict=True)) / max(
        words, 1
    )
    return {"examples": len(targets), "words": words, "token_accuracy": token_accuracy, **scores}


def _multi_label(
    probs: np.ndarray, hot: np.ndarray, names: tuple[str, ...], thresholds: np.ndarray | None
) -> dict:
    from sklearn.metrics import f1_score

    thresholds = np.full(len(names), 0.5) if thresholds is None else np.asarray(thresholds)
    pred = (probs >= thresholds).astype(np.int32)
    truth = hot.astype(np.int32)
    eps = 1e-7
    loss = -np.mean(truth * np.log(probs + eps) + (1 - truth) * np.log(1 - probs + eps))
    per_label = f1_score(truth, pred, average=None, zero_division=0)
    return {
        "examples": int(len(hot)),
        "loss": float(loss),
        "micro_f1": float(f1_score(truth, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, pred, average="macro", zero_division=0)),
        "subset_accuracy": float((pred == truth).all(axis=1).mean()),
        "per_label": {
            name: {"f1": float(f), "threshold": float(t), "support": int(s)}
            for name, f, t, s in zip(names, per_label, thresholds, truth.sum(axis=0), strict=True)
        },
    }


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


def _regression(
    scores: np.ndarray, target: np.ndarray, scaling: tuple[float, float] | None
) -> dict:
    from scipy.stats import pearsonr, spearmanr

    if scaling is not None:
        mean, std = scaling
        scores, target = scores * std + mean, target * std + mean
    constant = np.ptp(scores) == 0 or np.ptp(target) == 0
    return {
        "examples": int(len(target)),
        "loss": float(np.mean((scores - target) ** 2)),
        "mse": float(np.mean((scores - target) ** 2)),
        "pearson": 0.0 if constant else float(pearsonr(scores, target)[0]),
        "spearman": 0.0 if constant else float(spearmanr(scores, target)[0]),
    }
