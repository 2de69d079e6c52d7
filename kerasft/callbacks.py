"""Keras callbacks kerasft adds to `fit`."""

from __future__ import annotations

import time

from kerasft._compat import keras, tf
from kerasft.metrics import classification_metrics, predict_split


class ValidationMetrics(keras.callbacks.Callback):
    """Scores the validation split once per epoch and adds `val_loss`, `val_accuracy`, `val_macro_f1` to the logs.

    kerasft does not pass `validation_data` to `fit`: this callback's single
    pass gives Keras' numbers and scikit-learn's macro-F1 together. It must come
    before the callbacks that read those keys (early stopping, checkpoints).

    Args:
        dataset: an (x, y) dataset of the validation split.
        label_names: class names in id order.
    """

    def __init__(self, dataset: tf.data.Dataset, label_names: tuple[str, ...]):
        super().__init__()
        self.dataset = dataset
        self.label_names = label_names

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        start = time.perf_counter()
        probs, labels = predict_split(self.model, self.dataset)
        scores = classification_metrics(probs, labels, self.label_names)
        for key in ("loss", "accuracy", "macro_f1"):
            logs[f"val_{key}"] = scores[key]
        print(
            f"epoch {epoch + 1} validation: loss {scores['loss']:.4f}  accuracy {scores['accuracy']:.4f}  "
            f"macro_f1 {scores['macro_f1']:.4f}  ({scores['examples']} examples, {time.perf_counter() - start:.1f}s)",
            flush=True,
        )


class StepProgress(keras.callbacks.Callback):
    """Prints a progress line every ~10% of an epoch, for logs where Keras' progress bar cannot redraw.

    Args:
        steps: batches per epoch.
        batch_size: global batch size, for the examples/s figure.
        every: print every this many steps. Defaults to a tenth of an epoch.
    """

    def __init__(self, steps: int, batch_size: int, every: int | None = None):
        super().__init__()
        self.steps = steps
        self.batch_size = batch_size
        self.every = every or max(1, steps // 10)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        done = batch + 1
        if done % self.every and done != self.steps:
            return
        elapsed = time.perf_counter() - self._start
        rate = done * self.batch_size / max(elapsed, 1e-9)
        eta = (self.steps - done) * elapsed / done
        loss = (logs or {}).get("loss", float("nan"))
        print(
            f"epoch {self._epoch + 1} step {done}/{self.steps}  loss {loss:.4f}  {rate:.1f} examples/s  eta {eta:.0f}s",
            flush=True,
        )
