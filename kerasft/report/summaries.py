"""TensorBoard pictures of each epoch's validation pass: the confusion matrix and PR curves."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from kerasft._compat import tf
from kerasft.report import plots

PR_THRESHOLDS = 101


def write_epoch_summaries(
    writer: Any, spec: Any, outputs: Any, targets: Any, names: tuple[str, ...], step: int
) -> None:
    """Confusion-matrix image (single-label classification) and one PR curve per class or label.

    Args:
        writer: a `tf.summary` file writer (the run's `logs/validation`).
        outputs, targets: the validation split's probabilities and targets (`collect`'s output).
        step: the epoch number (1-based), TensorBoard's step.
    """
    if spec.per_token or spec.numeric or len(targets) == 0:
        return
    from sklearn.metrics import confusion_matrix
    from tensorboard.plugins.pr_curve import summary as pr_curve

    probs = np.asarray(outputs, dtype=np.float32)
    if spec.multi_hot:
        truth = np.asarray(targets) > 0.5
    else:
        truth = np.eye(len(names), dtype=bool)[np.asarray(targets)]
    with writer.as_default(step=step):
        if not spec.multi_hot:
            matrix = confusion_matrix(targets, probs.argmax(-1), labels=range(len(names)))
            png = io.BytesIO()
            plots.confusion(matrix, list(names), png)
            image = tf.image.decode_png(png.getvalue(), channels=3)
            tf.summary.image(
                "confusion_matrix", image[None], description="rows: true, columns: predicted"
            )
        columns = range(1, 2) if len(names) == 2 and not spec.multi_hot else range(len(names))
        for j in columns:
            proto = pr_curve.pb(
                f"pr_curve/{names[j]}",
                labels=truth[:, j],
                predictions=probs[:, j],
                num_thresholds=PR_THRESHOLDS,
            )
            value = proto.value[0]
            tf.summary.write(value.tag, tf.make_ndarray(value.tensor), metadata=value.metadata)
    writer.flush()
